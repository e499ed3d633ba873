/* SPDX-License-Identifier: MIT */
/*
 * natsrv: start and control a real nats-server for integration tests (the
 * contract is natsrv.h).
 *
 * Each server gets a fresh directory from mkdtemp under $TMPDIR (or /tmp)
 * holding the generated config (nats.conf), the server's stdout and stderr
 * (server.log), the JetStream store (js/), and with TLS the certificates made
 * by the openssl command-line tool (EC P-256: a CA, a server certificate for
 * IP 127.0.0.1 and DNS localhost, a client certificate; openssl.log keeps the
 * tool's output). The server is told to listen with `-a 127.0.0.1 -p -1
 * --ports_file_dir DIR` and writes the port it picked into
 * DIR/nats-server_<pid>.ports; a restart passes `-p PORT` so clients find the
 * server where they left it, and reuses the same config and store.
 *
 * Processes. The server is a child of the calling thread (fork and exec, by
 * srvproc.c). In the child, before exec, PR_SET_PDEATHSIG makes the kernel
 * SIGKILL the server when that thread dies, so a crashed or aborted test never
 * leaves a server behind; the price is that the thread that starts or
 * restarts a server must outlive it (cmocka runs tests on the main thread,
 * which does). The child also closes every inherited descriptor, so it never
 * holds a test's client sockets open. Only the pid this module forked is
 * ever signalled, and only until it has been reaped (after which pid is 0),
 * so a reused pid is never hit. Stopping sends SIGTERM (and SIGCONT, since a
 * frozen server would not act on it), waits up to 5 s, then SIGKILL.
 *
 * Errors go to stderr with a "natsrv:" prefix, with the tail of server.log
 * when the server failed to come up; functions then return -1.
 *
 * Threads: a natsrv is used by one thread (see above for which one).
 */
#include "natsrv.h"
#include "srvproc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#define START_TIMEOUT_MS  10000
#define STOP_TIMEOUT_MS   5000
#define SIGNAL_TIMEOUT_MS 2000
#define POLL_MS           10

/* The prefix of this module's messages, and fail() to print one (srvproc.h). */
#define WHO       "natsrv"
#define fail(...) srvproc_fail(WHO, __VA_ARGS__)

struct natsrv {
    pid_t pid; /* 0 when not running (never started, stopped, or reaped) */
    int port;  /* 0 until the first start has read it */
    bool tls;
    bool frozen;
    char dir[PATH_MAX];
    char conf[PATH_MAX];
    char log[PATH_MAX];
    char ca[PATH_MAX];
    char ca_key[PATH_MAX];
    char cert[PATH_MAX];
    char key[PATH_MAX];
    char server_cert[PATH_MAX];
    char server_key[PATH_MAX];
    char bin[PATH_MAX];
    char url[64];
};

/* Find an executable named name in $PATH, else use fallback. Done before
 * fork, because searching allocates and the child may only call
 * async-signal-safe functions. */
static void find_program(const char *name, const char *fallback, char out[PATH_MAX])
{
    const char *path = getenv("PATH");
    while (path && *path) {
        const char *colon = strchr(path, ':');
        size_t len = colon ? (size_t)(colon - path) : strlen(path);
        if (len > 0) {
            int n = snprintf(out, PATH_MAX, "%.*s/%s", (int)len, path, name);
            if (n > 0 && n < PATH_MAX && access(out, X_OK) == 0)
                return;
        }
        path = colon ? colon + 1 : NULL;
    }
    snprintf(out, PATH_MAX, "%s", fallback);
}

static int write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f) {
        fail("cannot write %s: %s", path, strerror(errno));
        return -1;
    }
    int ok = fputs(text, f) >= 0;
    if (fclose(f) != 0)
        ok = 0;
    if (!ok) {
        fail("cannot write %s", path);
        return -1;
    }
    return 0;
}

/* openssl configuration: one section per certificate's extensions. */
static const char openssl_cnf[] = "[req]\n"
                                  "distinguished_name = dn\n"
                                  "prompt = no\n"
                                  "[dn]\n"
                                  "CN = natsrv\n"
                                  "[v3_ca]\n"
                                  "basicConstraints = critical, CA:TRUE\n"
                                  "keyUsage = critical, keyCertSign, cRLSign\n"
                                  "subjectKeyIdentifier = hash\n"
                                  "[v3_server]\n"
                                  "basicConstraints = critical, CA:FALSE\n"
                                  "keyUsage = critical, digitalSignature, keyEncipherment\n"
                                  "extendedKeyUsage = serverAuth\n"
                                  "subjectAltName = IP:127.0.0.1, DNS:localhost\n"
                                  "authorityKeyIdentifier = keyid\n"
                                  "[v3_client]\n"
                                  "basicConstraints = critical, CA:FALSE\n"
                                  "keyUsage = critical, digitalSignature, keyEncipherment\n"
                                  "extendedKeyUsage = clientAuth\n"
                                  "authorityKeyIdentifier = keyid\n";

/* Make an EC P-256 key at key_path. */
static int gen_key(const char *openssl, const char *key_path, const char *log)
{
    char *argv[] = {(char *)openssl,           "genpkey", "-algorithm",     "EC", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-out",    (char *)key_path, NULL};
    return srvproc_run_tool(WHO, NULL, argv, log);
}

/* Make a key and a certificate signed by the CA in s, with the extensions of
 * section ext and serial serial. */
static int gen_leaf(const struct natsrv *s, const char *openssl, const char *cnf, const char *log,
                    const char *cn, const char *ext, const char *serial, const char *key_path,
                    const char *cert_path)
{
    char csr[PATH_MAX], subj[128];
    if (srvproc_path_join(WHO, csr, s->dir, "leaf.csr") == -1)
        return -1;
    snprintf(subj, sizeof subj, "/CN=%s", cn);
    if (gen_key(openssl, key_path, log) == -1)
        return -1;
    char *req[] = {(char *)openssl,  "req",   "-new", "-config", (char *)cnf, "-key",
                   (char *)key_path, "-subj", subj,   "-out",    csr,         NULL};
    if (srvproc_run_tool(WHO, NULL, req, log) == -1)
        return -1;
    char *sign[] = {(char *)openssl,
                    "x509",
                    "-req",
                    "-in",
                    csr,
                    "-CA",
                    (char *)s->ca,
                    "-CAkey",
                    (char *)s->ca_key,
                    "-set_serial",
                    (char *)serial,
                    "-days",
                    "2",
                    "-sha256",
                    "-extfile",
                    (char *)cnf,
                    "-extensions",
                    (char *)ext,
                    "-out",
                    (char *)cert_path,
                    NULL};
    int rc = srvproc_run_tool(WHO, NULL, sign, log);
    unlink(csr);
    return rc;
}

/* Generate the CA, server and client certificates into s->dir. */
static int gen_certs(struct natsrv *s)
{
    char openssl[PATH_MAX], cnf[PATH_MAX], log[PATH_MAX];
    find_program("openssl", "/usr/bin/openssl", openssl);
    if (access(openssl, X_OK) != 0) {
        fail("the openssl command-line tool is needed for TLS (apt-get install openssl)");
        return -1;
    }
    if (srvproc_path_join(WHO, cnf, s->dir, "openssl.cnf") == -1 ||
        srvproc_path_join(WHO, log, s->dir, "openssl.log") == -1 ||
        write_file(cnf, openssl_cnf) == -1)
        return -1;
    if (gen_key(openssl, s->ca_key, log) == -1)
        return -1;
    char *ca[] = {openssl,       "req",   "-x509",   "-new",    "-config", cnf,
                  "-extensions", "v3_ca", "-key",    s->ca_key, "-subj",   "/CN=natsrv test CA",
                  "-days",       "2",     "-sha256", "-out",    s->ca,     NULL};
    if (srvproc_run_tool(WHO, NULL, ca, log) == -1)
        return -1;
    if (gen_leaf(s, openssl, cnf, log, "localhost", "v3_server", "2", s->server_key,
                 s->server_cert) == -1)
        return -1;
    return gen_leaf(s, openssl, cnf, log, "natsrv client", "v3_client", "3", s->key, s->cert);
}

/* A value safe to put between double quotes in a nats-server config. */
static int check_value(const char *what, const char *v)
{
    if (*v == '\0') {
        fail("%s is empty", what);
        return -1;
    }
    for (const char *p = v; *p; p++) {
        if (*p == '"' || *p == '\\' || (unsigned char)*p < 0x20) {
            fail("%s contains a quote, backslash or control character", what);
            return -1;
        }
    }
    return 0;
}

static int check_opts(const natsrv_opts *o)
{
    if ((o->user == NULL) != (o->password == NULL)) {
        fail("user and password go together");
        return -1;
    }
    if (o->user && o->token) {
        fail("user/password and token cannot both be required");
        return -1;
    }
    if (o->tls_verify_clients && !o->tls) {
        fail("tls_verify_clients needs tls");
        return -1;
    }
    if (o->max_payload < 0) {
        fail("max_payload is negative");
        return -1;
    }
    if ((o->user && check_value("user", o->user) == -1) ||
        (o->password && check_value("password", o->password) == -1) ||
        (o->token && check_value("token", o->token) == -1))
        return -1;
    return 0;
}

static int write_config(const struct natsrv *s, const natsrv_opts *o)
{
    FILE *f = fopen(s->conf, "w");
    if (!f) {
        fail("cannot write %s: %s", s->conf, strerror(errno));
        return -1;
    }
    /* The listen address and port are given on the command line. */
    fprintf(f, "# generated by natsrv\n");
    if (o->max_payload > 0)
        fprintf(f, "max_payload: %d\n", o->max_payload);
    if (o->jetstream)
        fprintf(f, "jetstream {\n  store_dir: \"%s/js\"\n}\n", s->dir);
    if (o->tls)
        fprintf(f,
                "tls {\n  cert_file: \"%s\"\n  key_file: \"%s\"\n  ca_file: \"%s\"\n"
                "  verify: %s\n  timeout: 2\n}\n",
                s->server_cert, s->server_key, s->ca, o->tls_verify_clients ? "true" : "false");
    if (o->user)
        fprintf(f, "authorization {\n  user: \"%s\"\n  password: \"%s\"\n}\n", o->user,
                o->password);
    if (o->token)
        fprintf(f, "authorization {\n  token: \"%s\"\n}\n", o->token);
    if (o->extra_conf)
        fprintf(f, "%s\n", o->extra_conf);
    int bad = ferror(f);
    if (fclose(f) != 0 || bad) {
        fail("cannot write %s", s->conf);
        return -1;
    }
    return 0;
}

/* Read the port from DIR/nats-server_<pid>.ports, which holds e.g.
 * {"nats":["nats://127.0.0.1:PORT"]}. Returns the port, 0 if the file is
 * not there (yet) or incomplete, -1 if it is there and makes no sense. */
static int read_ports_file(const struct natsrv *s, pid_t pid)
{
    char path[PATH_MAX], name[64], buf[1024];
    snprintf(name, sizeof name, "nats-server_%ld.ports", (long)pid);
    if (srvproc_path_join(WHO, path, s->dir, name) == -1)
        return -1;
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    if (strchr(buf, '}') == NULL)
        return 0; /* still being written */
    const char *p = strstr(buf, "\"nats\"");
    if (p)
        p = strstr(p, "://");
    if (p)
        p = strchr(p + 3, ':');
    if (!p) {
        fail("no client port in %s: %s", path, buf);
        return -1;
    }
    char *end;
    long port = strtol(p + 1, &end, 10);
    if (end == p + 1 || port <= 0 || port > 65535) {
        fail("bad client port in %s: %s", path, buf);
        return -1;
    }
    return (int)port;
}

/* Does a TCP connect to 127.0.0.1:port succeed? */
static bool tcp_ok(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd == -1)
        return false;
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bool ok = connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    close(fd);
    return ok;
}

/* Kill and reap s->pid (SIGTERM, SIGKILL after timeout_ms). The process is
 * gone afterwards and s->pid is 0. */
static void kill_and_reap(struct natsrv *s, int timeout_ms)
{
    if (s->pid <= 0)
        return;
    int status;
    kill(s->pid, SIGTERM);
    /* A stopped (frozen) process acts on nothing but SIGKILL until it is
     * continued; SIGCONT does no harm to a running one. */
    kill(s->pid, SIGCONT);
    long long deadline = srvproc_now_ms() + timeout_ms;
    pid_t r;
    while ((r = srvproc_wait(s->pid, &status, WNOHANG)) == 0 && srvproc_now_ms() < deadline)
        srvproc_sleep_ms(POLL_MS);
    if (r == 0) {
        fail("nats-server %ld ignored SIGTERM for %d ms: SIGKILL", (long)s->pid, timeout_ms);
        kill(s->pid, SIGKILL);
        r = srvproc_wait(s->pid, &status, 0);
    }
    if (r == -1)
        fail("waitpid %ld: %s", (long)s->pid, strerror(errno));
    s->pid = 0;
    s->frozen = false;
}

/* Launch nats-server on port (-1: any free port) and wait until it accepts
 * connections. On error nothing is left running. */
static int launch(struct natsrv *s, int port)
{
    char port_arg[16];
    snprintf(port_arg, sizeof port_arg, "%d", port);
    char *argv[] = {s->bin, "-c", s->conf, "-a", "127.0.0.1", "-p", port_arg, "--ports_file_dir",
                    s->dir, NULL};
    s->frozen = false;
    s->pid = srvproc_spawn(WHO, NULL, argv, s->log);
    if (s->pid == -1) {
        s->pid = 0;
        return -1;
    }
    long long deadline = srvproc_now_ms() + START_TIMEOUT_MS;
    int got = 0;
    for (;;) {
        int status;
        pid_t r = srvproc_wait(s->pid, &status, WNOHANG);
        if (r == s->pid) {
            char why[64];
            srvproc_describe_exit(status, why, sizeof why);
            fail("nats-server (%s) %s before it accepted connections", s->bin, why);
            s->pid = 0;
            srvproc_print_tail(WHO, s->log);
            return -1;
        }
        if (got == 0)
            got = read_ports_file(s, s->pid);
        if (got == -1)
            break;
        if (got > 0 && port > 0 && got != port) {
            fail("nats-server listens on port %d, not on %d as asked", got, port);
            break;
        }
        if (got > 0 && tcp_ok(got)) {
            s->port = got;
            snprintf(s->url, sizeof s->url, "%s://127.0.0.1:%d", s->tls ? "tls" : "nats", got);
            return 0;
        }
        if (srvproc_now_ms() >= deadline) {
            fail("nats-server did not accept connections within %d ms (%s)", START_TIMEOUT_MS,
                 got > 0 ? "port known, connect fails" : "no ports file");
            break;
        }
        srvproc_sleep_ms(POLL_MS);
    }
    kill_and_reap(s, STOP_TIMEOUT_MS);
    srvproc_print_tail(WHO, s->log);
    return -1;
}

int natsrv_start(const natsrv_opts *opts, natsrv **out)
{
    static const natsrv_opts plain;
    const natsrv_opts *o = opts ? opts : &plain;
    *out = NULL;
    if (check_opts(o) == -1)
        return -1;
    struct natsrv *s = calloc(1, sizeof *s);
    if (!s) {
        fail("out of memory");
        return -1;
    }
    s->tls = o->tls;
    const char *tmp = getenv("TMPDIR");
    if (!tmp || !*tmp)
        tmp = "/tmp";
    int n = snprintf(s->dir, sizeof s->dir, "%s/natsrv.XXXXXX", tmp);
    if (n < 0 || (size_t)n >= sizeof s->dir) {
        fail("TMPDIR is too long");
        free(s);
        return -1;
    }
    if (!mkdtemp(s->dir)) {
        fail("mkdtemp %s: %s", s->dir, strerror(errno));
        free(s);
        return -1;
    }
    if (check_value("the temporary directory's path", s->dir) == -1 ||
        srvproc_path_join(WHO, s->conf, s->dir, "nats.conf") == -1 ||
        srvproc_path_join(WHO, s->log, s->dir, "server.log") == -1 ||
        srvproc_path_join(WHO, s->ca, s->dir, "ca.pem") == -1 ||
        srvproc_path_join(WHO, s->ca_key, s->dir, "ca-key.pem") == -1 ||
        srvproc_path_join(WHO, s->cert, s->dir, "client.pem") == -1 ||
        srvproc_path_join(WHO, s->key, s->dir, "client-key.pem") == -1 ||
        srvproc_path_join(WHO, s->server_cert, s->dir, "server.pem") == -1 ||
        srvproc_path_join(WHO, s->server_key, s->dir, "server-key.pem") == -1)
        goto error;
    find_program("nats-server", "/usr/bin/nats-server", s->bin);
    if (access(s->bin, X_OK) != 0) {
        fail("nats-server not found in PATH (apt-get install nats-server)");
        goto error;
    }
    if (o->tls && gen_certs(s) == -1)
        goto error;
    if (write_config(s, o) == -1 || launch(s, -1) == -1)
        goto error;
    *out = s;
    return 0;
error:
    fprintf(stderr, "natsrv: start failed; config was %s\n", s->conf);
    srvproc_remove_dir(WHO, s->dir);
    free(s);
    return -1;
}

void natsrv_destroy(natsrv *s)
{
    if (!s)
        return;
    kill_and_reap(s, STOP_TIMEOUT_MS);
    srvproc_remove_dir(WHO, s->dir);
    free(s);
}

const char *natsrv_url(const natsrv *s)
{
    return s->url;
}

int natsrv_port(const natsrv *s)
{
    return s->port;
}

/* 0 while the server is not running: never pass it to kill() unchecked, as
 * kill(0, ...) signals the caller's whole process group. */
int natsrv_pid(const natsrv *s)
{
    return (int)s->pid;
}

const char *natsrv_dir(const natsrv *s)
{
    return s->dir;
}

const char *natsrv_ca_file(const natsrv *s)
{
    return s->tls ? s->ca : NULL;
}

const char *natsrv_client_cert_file(const natsrv *s)
{
    return s->tls ? s->cert : NULL;
}

const char *natsrv_client_key_file(const natsrv *s)
{
    return s->tls ? s->key : NULL;
}

/* Stopping a stopped server succeeds and does nothing. A server that had
 * died on its own is reported and reaped; that is still a success, since it
 * is stopped now. */
int natsrv_stop(natsrv *s)
{
    if (s->pid > 0) {
        int status;
        if (srvproc_wait(s->pid, &status, WNOHANG) == s->pid) {
            char why[64];
            srvproc_describe_exit(status, why, sizeof why);
            fail("nats-server %ld had already %s", (long)s->pid, why);
            srvproc_print_tail(WHO, s->log);
            s->pid = 0;
            s->frozen = false;
        }
    }
    kill_and_reap(s, STOP_TIMEOUT_MS);
    return 0;
}

/* A running server is stopped first. On error the server is not running. */
int natsrv_restart(natsrv *s)
{
    natsrv_stop(s);
    if (launch(s, s->port) == -1) {
        fail("restart on port %d failed", s->port);
        return -1;
    }
    return 0;
}

/* Send sig and wait (at most SIGNAL_TIMEOUT_MS) until waitpid reports the
 * state change it causes (stopped or continued), so that on return the
 * server really is frozen or running. */
static int signal_and_confirm(natsrv *s, int sig)
{
    if (s->pid <= 0) {
        fail("%s: the server is not running", sig == SIGSTOP ? "freeze" : "thaw");
        return -1;
    }
    if (kill(s->pid, sig) == -1) {
        fail("kill %ld: %s", (long)s->pid, strerror(errno));
        return -1;
    }
    int flags = WNOHANG | (sig == SIGSTOP ? WUNTRACED : WCONTINUED);
    long long deadline = srvproc_now_ms() + SIGNAL_TIMEOUT_MS;
    for (;;) {
        int status;
        pid_t r = srvproc_wait(s->pid, &status, flags);
        if (r == s->pid) {
            if (sig == SIGSTOP ? WIFSTOPPED(status) : WIFCONTINUED(status))
                return 0;
            if (WIFEXITED(status) || WIFSIGNALED(status)) {
                char why[64];
                srvproc_describe_exit(status, why, sizeof why);
                fail("nats-server %ld %s", (long)s->pid, why);
                srvproc_print_tail(WHO, s->log);
                s->pid = 0;
                s->frozen = false;
                return -1;
            }
        } else if (r == -1) {
            fail("waitpid %ld: %s", (long)s->pid, strerror(errno));
            return -1;
        }
        if (srvproc_now_ms() >= deadline) {
            fail("nats-server %ld did not report %s within %d ms", (long)s->pid,
                 sig == SIGSTOP ? "stopped" : "continued", SIGNAL_TIMEOUT_MS);
            return -1;
        }
        srvproc_sleep_ms(1);
    }
}

int natsrv_freeze(natsrv *s)
{
    if (s->frozen)
        return 0;
    int rc = signal_and_confirm(s, SIGSTOP);
    s->frozen = s->pid > 0; /* SIGSTOP was sent even if not confirmed */
    return rc;
}

int natsrv_thaw(natsrv *s)
{
    if (!s->frozen)
        return 0;
    if (signal_and_confirm(s, SIGCONT) == -1)
        return -1;
    s->frozen = false;
    return 0;
}
