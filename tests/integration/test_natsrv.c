/* SPDX-License-Identifier: MIT */
/*
 * test_natsrv: tests of the nats-server test harness (tests/support/natsrv.c)
 * against the real nats-server, with nats.c as the client: start on a free
 * port, JetStream, stop and restart on the same port with the same store,
 * freeze and thaw, TLS with generated certificates (and refusal of a missing
 * or wrong CA, and of a missing client certificate), user/password and token
 * auth, max_payload and extra_conf, failed starts that leave nothing behind,
 * and destroy removing both process and directory.
 *
 * Every test keeps what it creates in a fixture that the teardown destroys,
 * so a failing assertion leaves no server running. An optional argument
 * selects tests by cmocka's glob filter (e.g. `test_natsrv '*tls*'`).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <nats/nats.h>

#include "natsrv.h"

#define MAX_SERVERS 2

typedef struct fixture {
    natsrv *srv[MAX_SERVERS];
    natsOptions *opts;
    natsConnection *nc;
    jsCtx *js;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    *state = f;
    return 0;
}

static void close_client(fixture *f)
{
    jsCtx_Destroy(f->js);
    f->js = NULL;
    natsConnection_Destroy(f->nc);
    f->nc = NULL;
    natsOptions_Destroy(f->opts);
    f->opts = NULL;
}

static int teardown(void **state)
{
    fixture *f = *state;
    close_client(f);
    for (int i = 0; i < MAX_SERVERS; i++)
        natsrv_destroy(f->srv[i]);
    free(f);
    return 0;
}

/* Fresh client options for url: no reconnect, a 2 s connect timeout. */
static natsOptions *client_opts(fixture *f, const char *url)
{
    natsOptions_Destroy(f->opts);
    f->opts = NULL;
    assert_int_equal(natsOptions_Create(&f->opts), NATS_OK);
    assert_int_equal(natsOptions_SetURL(f->opts, url), NATS_OK);
    assert_int_equal(natsOptions_SetTimeout(f->opts, 2000), NATS_OK);
    assert_int_equal(natsOptions_SetAllowReconnect(f->opts, false), NATS_OK);
    return f->opts;
}

/* Connect with f->opts into f->nc (closing any previous connection first). */
static natsStatus client_connect(fixture *f)
{
    natsConnection_Destroy(f->nc);
    f->nc = NULL;
    return natsConnection_Connect(&f->nc, f->opts);
}

/* Connect and prove the connection works with a round trip. */
static void connect_ok(fixture *f)
{
    natsStatus st = client_connect(f);
    if (st != NATS_OK)
        print_error("connect: %s\n", nats_GetLastError(NULL));
    assert_int_equal(st, NATS_OK);
    assert_int_equal(natsConnection_FlushTimeout(f->nc, 2000), NATS_OK);
}

/* Connect must fail; print the status so the report shows what nats.c says. */
static natsStatus connect_fails(fixture *f, const char *what)
{
    natsStatus st = client_connect(f);
    fprintf(stderr, "  %s: %s (%d)\n", what, natsStatus_GetText(st), (int)st);
    assert_int_not_equal(st, NATS_OK);
    return st;
}

/* Open a TCP connection to 127.0.0.1:port; the fd, or -1 with errno. */
static int tcp_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == -1) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

static bool file_exists(const char *dir, const char *name)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    struct stat st;
    return stat(path, &st) == 0;
}

/* Does the file hold needle somewhere in its first 64 KiB? */
static bool file_contains(const char *path, const char *needle)
{
    static char buf[65536];
    FILE *fp = fopen(path, "r");
    if (!fp)
        return false;
    size_t n = fread(buf, 1, sizeof buf - 1, fp);
    fclose(fp);
    buf[n] = '\0';
    return strstr(buf, needle) != NULL;
}

static void test_plain_start(void **state)
{
    fixture *f = *state;
    assert_int_equal(natsrv_start(NULL, &f->srv[0]), 0);
    natsrv *s = f->srv[0];

    int port = natsrv_port(s);
    assert_true(port > 0 && port <= 65535);
    char want[64];
    snprintf(want, sizeof want, "nats://127.0.0.1:%d", port);
    assert_string_equal(natsrv_url(s), want);
    int pid = natsrv_pid(s);
    assert_true(pid > 0 && pid != getpid());
    assert_int_equal(kill(pid, 0), 0);
    assert_true(file_exists(natsrv_dir(s), "nats.conf"));
    assert_true(file_exists(natsrv_dir(s), "server.log"));
    assert_null(natsrv_ca_file(s));
    assert_null(natsrv_client_cert_file(s));
    assert_null(natsrv_client_key_file(s));

    /* A raw TCP client is greeted with the server's INFO line. */
    int fd = tcp_connect(port);
    assert_true(fd >= 0);
    char buf[6] = {0};
    assert_int_equal(recv(fd, buf, 5, MSG_WAITALL), 5);
    assert_string_equal(buf, "INFO ");
    close(fd);

    client_opts(f, natsrv_url(s));
    connect_ok(f);
}

static void test_jetstream(void **state)
{
    fixture *f = *state;
    natsrv_opts o = {.jetstream = true};
    assert_int_equal(natsrv_start(&o, &f->srv[0]), 0);
    assert_true(file_exists(natsrv_dir(f->srv[0]), "js"));
    client_opts(f, natsrv_url(f->srv[0]));
    connect_ok(f);
    assert_int_equal(natsConnection_JetStream(&f->js, f->nc, NULL), NATS_OK);
    jsAccountInfo *ai = NULL;
    jsErrCode jerr = 0;
    assert_int_equal(js_GetAccountInfo(&ai, f->js, NULL, &jerr), NATS_OK);
    assert_non_null(ai);
    jsAccountInfo_Destroy(ai);
    close_client(f);

    /* Without the option the same call fails, so the check above means it. */
    assert_int_equal(natsrv_start(NULL, &f->srv[1]), 0);
    client_opts(f, natsrv_url(f->srv[1]));
    connect_ok(f);
    assert_int_equal(natsConnection_JetStream(&f->js, f->nc, NULL), NATS_OK);
    ai = NULL;
    natsStatus st = js_GetAccountInfo(&ai, f->js, NULL, &jerr);
    fprintf(stderr, "  account info without JetStream: %s (%d)\n", natsStatus_GetText(st), (int)st);
    assert_int_not_equal(st, NATS_OK);
    assert_null(ai);
}

/* Create a one-subject file stream named name. */
static void add_stream(fixture *f, const char *name, const char *subject)
{
    jsStreamConfig cfg;
    assert_int_equal(jsStreamConfig_Init(&cfg), NATS_OK);
    const char *subjects[] = {subject};
    cfg.Name = name;
    cfg.Subjects = subjects;
    cfg.SubjectsLen = 1;
    cfg.Storage = js_FileStorage;
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    assert_int_equal(js_AddStream(&si, f->js, &cfg, NULL, &jerr), NATS_OK);
    jsStreamInfo_Destroy(si);
}

static void test_stop_restart(void **state)
{
    fixture *f = *state;
    natsrv_opts o = {.jetstream = true};
    assert_int_equal(natsrv_start(&o, &f->srv[0]), 0);
    natsrv *s = f->srv[0];
    int port = natsrv_port(s);
    int pid = natsrv_pid(s);
    client_opts(f, natsrv_url(s));
    connect_ok(f);
    assert_int_equal(natsConnection_JetStream(&f->js, f->nc, NULL), NATS_OK);
    add_stream(f, "KEEP", "keep.>");
    jsCtx_Destroy(f->js);
    f->js = NULL;
    natsConnection_Destroy(f->nc);
    f->nc = NULL;

    assert_int_equal(natsrv_stop(s), 0);
    assert_int_equal(natsrv_pid(s), 0);
    assert_int_equal(kill(pid, 0), -1);
    assert_int_equal(errno, ESRCH);
    assert_int_equal(tcp_connect(port), -1);
    assert_int_equal(errno, ECONNREFUSED);
    assert_int_equal(connect_fails(f, "connect to a stopped server"), NATS_NO_SERVER);
    assert_int_equal(natsrv_stop(s), 0); /* stopping twice is harmless */
    assert_true(file_exists(natsrv_dir(s), "nats.conf"));

    assert_int_equal(natsrv_restart(s), 0);
    assert_int_equal(natsrv_port(s), port);
    assert_true(natsrv_pid(s) > 0);
    assert_int_not_equal(natsrv_pid(s), pid);
    int fd = tcp_connect(port);
    assert_true(fd >= 0);
    close(fd);
    connect_ok(f);

    /* Same store: the stream made before the restart is still there. */
    assert_int_equal(natsConnection_JetStream(&f->js, f->nc, NULL), NATS_OK);
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    assert_int_equal(js_GetStreamInfo(&si, f->js, "KEEP", NULL, &jerr), NATS_OK);
    assert_string_equal(si->Config->Name, "KEEP");
    jsStreamInfo_Destroy(si);

    /* Restarting a running server stops it first. */
    jsCtx_Destroy(f->js);
    f->js = NULL;
    natsConnection_Destroy(f->nc);
    f->nc = NULL;
    pid = natsrv_pid(s);
    assert_int_equal(natsrv_restart(s), 0);
    assert_int_not_equal(natsrv_pid(s), pid);
    assert_int_equal(natsrv_port(s), port);
    connect_ok(f);
}

static void test_freeze_thaw(void **state)
{
    fixture *f = *state;
    assert_int_equal(natsrv_start(NULL, &f->srv[0]), 0);
    natsrv *s = f->srv[0];
    client_opts(f, natsrv_url(s));
    connect_ok(f);

    assert_int_equal(natsrv_freeze(s), 0);
    assert_int_equal(natsrv_freeze(s), 0); /* idempotent */
    assert_int_equal(natsConnection_FlushTimeout(f->nc, 300), NATS_TIMEOUT);
    /* A frozen server still accepts TCP connections (the kernel does). */
    int fd = tcp_connect(natsrv_port(s));
    assert_true(fd >= 0);
    close(fd);

    assert_int_equal(natsrv_thaw(s), 0);
    assert_int_equal(natsrv_thaw(s), 0);
    assert_int_equal(natsConnection_FlushTimeout(f->nc, 2000), NATS_OK);

    /* A frozen server can be stopped (destroy relies on it). */
    assert_int_equal(natsrv_freeze(s), 0);
    assert_int_equal(natsrv_stop(s), 0);
    assert_int_equal(natsrv_freeze(s), -1); /* not running */
}

static void test_tls(void **state)
{
    fixture *f = *state;
    natsrv_opts o = {.tls = true};
    assert_int_equal(natsrv_start(&o, &f->srv[0]), 0);
    assert_int_equal(natsrv_start(&o, &f->srv[1]), 0); /* its CA is the wrong one */
    natsrv *s = f->srv[0];
    char want[64];
    snprintf(want, sizeof want, "tls://127.0.0.1:%d", natsrv_port(s));
    assert_string_equal(natsrv_url(s), want);
    assert_non_null(natsrv_ca_file(s));
    assert_true(file_contains(natsrv_ca_file(s), "BEGIN CERTIFICATE"));
    assert_true(file_contains(natsrv_client_cert_file(s), "BEGIN CERTIFICATE"));
    assert_true(file_contains(natsrv_client_key_file(s), "PRIVATE KEY"));
    assert_string_not_equal(natsrv_ca_file(s), natsrv_ca_file(f->srv[1]));

    client_opts(f, natsrv_url(s));
    assert_int_equal(natsOptions_SetSecure(f->opts, true), NATS_OK);
    assert_int_equal(natsOptions_LoadCATrustedCertificates(f->opts, natsrv_ca_file(s)), NATS_OK);
    connect_ok(f);

    /* The certificate names localhost as well as 127.0.0.1. (Fresh options:
     * a TLS setter called while a connection made from the options is alive
     * gives them a new, empty SSL context, dropping the CA.) */
    client_opts(f, natsrv_url(s));
    assert_int_equal(natsOptions_LoadCATrustedCertificates(f->opts, natsrv_ca_file(s)), NATS_OK);
    assert_int_equal(natsOptions_SetExpectedHostname(f->opts, "localhost"), NATS_OK);
    connect_ok(f);
    client_opts(f, natsrv_url(s));
    assert_int_equal(natsOptions_LoadCATrustedCertificates(f->opts, natsrv_ca_file(s)), NATS_OK);
    assert_int_equal(natsOptions_SetExpectedHostname(f->opts, "mud.example"), NATS_OK);
    connect_fails(f, "TLS expecting a host name the certificate lacks");

    client_opts(f, natsrv_url(s));
    assert_int_equal(natsOptions_SetSecure(f->opts, true), NATS_OK);
    connect_fails(f, "TLS without the CA");

    client_opts(f, natsrv_url(s));
    assert_int_equal(natsOptions_SetSecure(f->opts, true), NATS_OK);
    assert_int_equal(natsOptions_LoadCATrustedCertificates(f->opts, natsrv_ca_file(f->srv[1])),
                     NATS_OK);
    assert_int_equal(connect_fails(f, "TLS with the wrong CA"), NATS_SSL_ERROR);

    char plain[64];
    snprintf(plain, sizeof plain, "nats://127.0.0.1:%d", natsrv_port(s));
    client_opts(f, plain);
    connect_fails(f, "plain client to a TLS server");
}

static void test_tls_verify_clients(void **state)
{
    fixture *f = *state;
    natsrv_opts o = {.tls = true, .tls_verify_clients = true};
    assert_int_equal(natsrv_start(&o, &f->srv[0]), 0);
    natsrv *s = f->srv[0];

    client_opts(f, natsrv_url(s));
    assert_int_equal(natsOptions_SetSecure(f->opts, true), NATS_OK);
    assert_int_equal(natsOptions_LoadCATrustedCertificates(f->opts, natsrv_ca_file(s)), NATS_OK);
    connect_fails(f, "TLS without a client certificate");

    assert_int_equal(natsOptions_LoadCertificatesChain(f->opts, natsrv_client_cert_file(s),
                                                       natsrv_client_key_file(s)),
                     NATS_OK);
    connect_ok(f);
}

static void test_user_password(void **state)
{
    fixture *f = *state;
    natsrv_opts o = {.user = "wizard", .password = "xyzzy"};
    assert_int_equal(natsrv_start(&o, &f->srv[0]), 0);
    const char *url = natsrv_url(f->srv[0]);

    client_opts(f, url);
    assert_int_equal(natsOptions_SetUserInfo(f->opts, "wizard", "xyzzy"), NATS_OK);
    connect_ok(f);

    client_opts(f, url);
    assert_int_equal(natsOptions_SetUserInfo(f->opts, "wizard", "plugh"), NATS_OK);
    natsStatus st = connect_fails(f, "wrong password");
    assert_int_equal(st, NATS_CONNECTION_AUTH_FAILED);

    client_opts(f, url);
    connect_fails(f, "no credentials");
}

static void test_token(void **state)
{
    fixture *f = *state;
    natsrv_opts o = {.token = "s3cret-token"};
    assert_int_equal(natsrv_start(&o, &f->srv[0]), 0);
    const char *url = natsrv_url(f->srv[0]);

    client_opts(f, url);
    assert_int_equal(natsOptions_SetToken(f->opts, "s3cret-token"), NATS_OK);
    connect_ok(f);

    client_opts(f, url);
    assert_int_equal(natsOptions_SetToken(f->opts, "guess"), NATS_OK);
    natsStatus st = connect_fails(f, "wrong token");
    assert_int_equal(st, NATS_CONNECTION_AUTH_FAILED);
}

static void test_max_payload_and_extra_conf(void **state)
{
    fixture *f = *state;
    natsrv_opts o = {.max_payload = 4096, .extra_conf = "server_name: natsrv_extra_test"};
    assert_int_equal(natsrv_start(&o, &f->srv[0]), 0);
    client_opts(f, natsrv_url(f->srv[0]));
    connect_ok(f);
    assert_int_equal(natsConnection_GetMaxPayload(f->nc), 4096);
    char big[4097];
    memset(big, 'x', sizeof big);
    assert_int_equal(natsConnection_Publish(f->nc, "big", big, (int)sizeof big), NATS_MAX_PAYLOAD);

    char log[4096];
    snprintf(log, sizeof log, "%s/server.log", natsrv_dir(f->srv[0]));
    assert_true(file_contains(log, "natsrv_extra_test"));
}

/* Are there no entries in dir? */
static bool dir_empty(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            n++;
    closedir(d);
    return n == 0;
}

/* A start that fails leaves no process and no directory behind. */
static void test_failed_start(void **state)
{
    fixture *f = *state;
    char tmp[] = "/tmp/test_natsrv.XXXXXX";
    assert_non_null(mkdtemp(tmp));
    const char *old = getenv("TMPDIR");
    char *saved = old ? strdup(old) : NULL;
    assert_int_equal(setenv("TMPDIR", tmp, 1), 0);

    /* An option the server rejects: it exits, and start says why. */
    natsrv_opts bad = {.extra_conf = "this is not { valid"};
    int rc = natsrv_start(&bad, &f->srv[0]);
    /* Options the harness rejects before starting anything. */
    natsrv_opts half = {.user = "only"};
    int rc2 = natsrv_start(&half, &f->srv[1]);
    natsrv_opts both = {.user = "u", .password = "p", .token = "t"};
    int rc3 = natsrv_start(&both, &f->srv[1]);
    bool empty = dir_empty(tmp);

    if (saved) {
        setenv("TMPDIR", saved, 1);
        free(saved);
    } else {
        unsetenv("TMPDIR");
    }
    rmdir(tmp);
    assert_int_equal(rc, -1);
    assert_null(f->srv[0]);
    assert_int_equal(rc2, -1);
    assert_int_equal(rc3, -1);
    assert_null(f->srv[1]);
    assert_true(empty);
    /* No child of ours is left, not even a zombie. */
    int status;
    assert_int_equal(waitpid(-1, &status, WNOHANG), -1);
    assert_int_equal(errno, ECHILD);
}

static void test_destroy(void **state)
{
    fixture *f = *state;
    natsrv_opts o = {.jetstream = true, .tls = true};
    assert_int_equal(natsrv_start(&o, &f->srv[0]), 0);
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", natsrv_dir(f->srv[0]));
    int pid = natsrv_pid(f->srv[0]);
    assert_true(pid > 0);
    struct stat st;
    assert_int_equal(stat(dir, &st), 0);

    /* Destroy a frozen server: the hardest case. */
    assert_int_equal(natsrv_freeze(f->srv[0]), 0);
    natsrv_destroy(f->srv[0]);
    f->srv[0] = NULL;
    assert_int_equal(kill(pid, 0), -1);
    assert_int_equal(errno, ESRCH);
    assert_int_equal(stat(dir, &st), -1);
    assert_int_equal(errno, ENOENT);

    natsrv_destroy(NULL);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_plain_start, setup, teardown),
        cmocka_unit_test_setup_teardown(test_jetstream, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_restart, setup, teardown),
        cmocka_unit_test_setup_teardown(test_freeze_thaw, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tls, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tls_verify_clients, setup, teardown),
        cmocka_unit_test_setup_teardown(test_user_password, setup, teardown),
        cmocka_unit_test_setup_teardown(test_token, setup, teardown),
        cmocka_unit_test_setup_teardown(test_max_payload_and_extra_conf, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_start, setup, teardown),
        cmocka_unit_test_setup_teardown(test_destroy, setup, teardown),
    };
    if (argc > 1)
        cmocka_set_test_filter(argv[1]);
    /* Bring nats.c up once, so its global threads exist before any test. */
    if (nats_Open(-1) != NATS_OK)
        return 1;
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    /* Free nats.c's globals and join its threads, so LSan sees no leak. */
    nats_CloseAndWait(5000);
    return failed;
}
