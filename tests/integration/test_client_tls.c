/* SPDX-License-Identifier: MIT */
/*
 * Integration tests of mb_client security against a real nats-server
 * (tests/support natsrv): TLS with certificates the harness generates (a
 * round trip with the right CA; refusal of a wrong CA, of the system CAs and
 * of a hostname mismatch; mutual TLS with and without a client certificate),
 * token auth and user/password auth, good and bad. Every refusal must come
 * back at once from mb_client_create with the right status and a message that
 * names the server; no client is left behind. Every wait polls a condition
 * with a deadline; no sleep decides an outcome.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <nats/nats.h>

#include "mudbus/client.h"
#include "natsrv.h"
#include "testutil.h"

/* ---- helpers ---- */

static void log_line(void *ctx, const char *line)
{
    (void)ctx;
    if (getenv("MB_TEST_VERBOSE"))
        fprintf(stderr, "  [client] %s\n", line);
}

typedef struct fixture {
    natsrv *srv;   /* the server under test */
    natsrv *other; /* a second TLS server, for its (foreign) CA */
    mb_client *c;
} fixture;

static fixture F;

static int setup(void **state)
{
    (void)state;
    memset(&F, 0, sizeof F);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    mb_client_destroy(F.c);
    F.c = NULL;
    natsrv_destroy(F.srv);
    natsrv_destroy(F.other);
    F.srv = F.other = NULL;
    return 0;
}

static void start_server(const natsrv_opts *o, natsrv **out)
{
    assert_int_equal(natsrv_start(o, out), 0);
}

static void base_opts(mb_client_opts *o, const char *url)
{
    mb_client_opts_default(o);
    o->servers[0] = url;
    o->nservers = 1;
    o->name = "tlstest";
    o->pool_size = 1;
    o->reconnect_wait_ms = 100;
    o->reconnect_jitter_ms = 20;
    o->connect_timeout_ms = 1000;
    o->log = log_line;
}

static void create_client(const mb_client_opts *o)
{
    mb_err err = {0};
    mb_status st = mb_client_create(o, &F.c, &err);
    if (st != MB_OK)
        fail_msg("mb_client_create: %s: %s", mb_status_name(st), err.msg);
}

/* Creating a client with `o` must fail at once with `want` (or `also`, when
 * not MB_OK), leave no client, and explain itself: the message names the
 * server URL and contains `needle` (NULL: any text). MB_TEST_VERBOSE=1
 * prints each refusal. */
static void expect_refused2(const mb_client_opts *o, mb_status want, mb_status also,
                            const char *needle)
{
    mb_client *c = NULL;
    mb_err err = {0};
    uint64_t t0 = now_ms();
    mb_status st = mb_client_create(o, &c, &err);
    uint64_t took = now_ms() - t0;
    if (getenv("MB_TEST_VERBOSE"))
        fprintf(stderr, "  refused in %llu ms: %s: %s\n", (unsigned long long)took,
                mb_status_name(st), err.msg);
    if (st != want && (also == MB_OK || st != also)) {
        mb_client_destroy(c);
        fail_msg("want %s, got %s: %s", mb_status_name(want), mb_status_name(st), err.msg);
    }
    assert_null(c);
    assert_int_equal(err.code, st);
    if (strstr(err.msg, o->servers[0]) == NULL)
        fail_msg("the message does not name the server %s: %s", o->servers[0], err.msg);
    if (needle && strstr(err.msg, needle) == NULL)
        fail_msg("the message does not say \"%s\": %s", needle, err.msg);
    /* Refusals are decided by the handshake, not by a timeout. */
    assert_true(took < 3000);
}

static void expect_refused(const mb_client_opts *o, mb_status want, const char *needle)
{
    expect_refused2(o, want, MB_OK, needle);
}

/* ---- a round trip through a working client ---- */

typedef struct rec {
    _Atomic int count;
    char last[512];
} rec;

static mb_handled rec_handler(void *ctx, const mb_msg *m)
{
    rec *r = ctx;
    if (atomic_load(&r->count) == 0)
        snprintf(r->last, sizeof r->last, "%s", m->data);
    atomic_fetch_add(&r->count, 1);
    return MB_HANDLED_OK;
}

/* Subscribe, publish one typed chat message and see it delivered. */
static void roundtrip(const char *content)
{
    rec r;
    memset(&r, 0, sizeof r);
    mb_sub_id id = 0;
    mb_err err = {0};
    assert_int_equal(mb_client_subscribe(F.c, "chat.say.room.*", NULL, rec_handler, &r, &id, &err),
                     MB_OK);
    assert_int_equal(mb_client_flush(F.c, 2000, NULL), MB_OK);
    mb_chat_msg m = {.sender_id = "p1",
                     .sender_name = "Armitage",
                     .channel = MB_CHANNEL_SAY,
                     .content = content,
                     .room_id = "earth_arkham_city_library"};
    mb_publish_disposition d = MB_PUB_DROPPED;
    assert_int_equal(
        mb_client_publish_chat(F.c, "chat.say.room.earth_arkham_city_library", &m, NULL, &d, &err),
        MB_OK);
    assert_int_equal(d, MB_PUB_SENT);
    assert_int_equal(mb_client_flush(F.c, 2000, NULL), MB_OK);
    assert_true(wait_count(&r.count, 1, 5000));
    assert_non_null(strstr(r.last, content));
    assert_int_equal(mb_client_unsubscribe(F.c, id, NULL), MB_OK);
    mb_client_health h;
    mb_client_health_get(F.c, &h);
    assert_int_equal(h.state, MB_CONN_CONNECTED);
    assert_int_equal(h.live, h.pool_size);
}

/* ---- TLS ---- */

static void test_tls_roundtrip(void **state)
{
    (void)state;
    natsrv_opts so = {.tls = true};
    start_server(&so, &F.srv);
    const char *url = natsrv_url(F.srv);
    assert_int_equal(strncmp(url, "tls://", 6), 0);
    mb_client_opts o;
    base_opts(&o, url);
    o.pool_size = 2;
    o.tls.ca_file = natsrv_ca_file(F.srv);
    create_client(&o);
    roundtrip("hello over TLS");
    mb_client_destroy(F.c);
    F.c = NULL;

    /* The same server by a nats:// URL with tls.enabled, and with the
     * certificate's other name (localhost) as the expected hostname. */
    char plain[64];
    snprintf(plain, sizeof plain, "nats://127.0.0.1:%d", natsrv_port(F.srv));
    base_opts(&o, plain);
    o.tls.enabled = true;
    o.tls.ca_file = natsrv_ca_file(F.srv);
    o.tls.hostname = "localhost";
    create_client(&o);
    roundtrip("hello again");
}

static void test_tls_wrong_ca(void **state)
{
    (void)state;
    natsrv_opts so = {.tls = true};
    start_server(&so, &F.srv);
    start_server(&so, &F.other);
    mb_client_opts o;
    base_opts(&o, natsrv_url(F.srv));
    o.tls.ca_file = natsrv_ca_file(F.other); /* another server's CA */
    expect_refused(&o, MB_ETLS, "certificate");
    /* Nor is it trusted by the system's CAs. */
    o.tls.ca_file = NULL;
    expect_refused(&o, MB_ETLS, "certificate");
    /* A nats:// URL at a TLS-only server: nats.c upgrades to TLS when the
     * server requires it, and with the system's CAs the server is refused. */
    char plain[64];
    snprintf(plain, sizeof plain, "nats://127.0.0.1:%d", natsrv_port(F.srv));
    base_opts(&o, plain);
    expect_refused(&o, MB_ETLS, NULL);
    /* With the right CA the same options work. */
    base_opts(&o, natsrv_url(F.srv));
    o.tls.ca_file = natsrv_ca_file(F.srv);
    create_client(&o);
    roundtrip("right CA");
}

static void test_tls_hostname_mismatch(void **state)
{
    (void)state;
    natsrv_opts so = {.tls = true};
    start_server(&so, &F.srv);
    mb_client_opts o;
    base_opts(&o, natsrv_url(F.srv));
    o.tls.ca_file = natsrv_ca_file(F.srv);
    o.tls.hostname = "wrong.example";
    expect_refused(&o, MB_ETLS, "hostname");
    /* skip_verify turns every check off (dangerous, but it must work). */
    o.tls.ca_file = NULL;
    o.tls.skip_verify = true;
    create_client(&o);
    roundtrip("unverified");
}

static void test_tls_mutual(void **state)
{
    (void)state;
    natsrv_opts so = {.tls = true, .tls_verify_clients = true};
    start_server(&so, &F.srv);
    assert_non_null(natsrv_client_cert_file(F.srv));
    assert_non_null(natsrv_client_key_file(F.srv));
    mb_client_opts o;
    base_opts(&o, natsrv_url(F.srv));
    o.tls.ca_file = natsrv_ca_file(F.srv);
    /* No client certificate: the server refuses it. With TLS 1.3 the client
     * finishes its side of the handshake before the server checks the
     * certificate, so nats.c only sees the connection closed before the first
     * PONG; the library reports it as the TLS configuration error it is. */
    expect_refused(&o, MB_ETLS, "client certificate");
    /* A certificate without its key is a bad option. */
    o.tls.cert_file = natsrv_client_cert_file(F.srv);
    mb_client *c = NULL;
    assert_int_equal(mb_client_create(&o, &c, NULL), MB_EINVAL);
    assert_null(c);
    /* With the certificate and key the pool comes up and messages flow. */
    o.tls.key_file = natsrv_client_key_file(F.srv);
    o.pool_size = 2;
    create_client(&o);
    roundtrip("mutual TLS");
}

/* ---- auth ---- */

static void test_token_auth(void **state)
{
    (void)state;
    natsrv_opts so = {.token = "s3cr3t-t0ken"};
    start_server(&so, &F.srv);
    const char *url = natsrv_url(F.srv);
    mb_client_opts o;
    base_opts(&o, url);
    o.auth.token = "wrong-token";
    expect_refused(&o, MB_EAUTH, "Authorization");
    o.auth.token = NULL; /* no credentials at all */
    expect_refused(&o, MB_EAUTH, "Authorization");
    o.auth.token = "s3cr3t-t0ken";
    o.pool_size = 2;
    create_client(&o);
    roundtrip("token accepted");
}

static void test_user_password_auth(void **state)
{
    (void)state;
    natsrv_opts so = {.user = "alice", .password = "secret"};
    start_server(&so, &F.srv);
    mb_client_opts o;
    base_opts(&o, natsrv_url(F.srv));
    o.auth.user = "alice";
    o.auth.password = "wrong";
    expect_refused(&o, MB_EAUTH, "Authorization");
    o.auth.user = "mallory";
    o.auth.password = "secret";
    expect_refused(&o, MB_EAUTH, "Authorization");
    o.auth.user = o.auth.password = NULL;
    expect_refused(&o, MB_EAUTH, "Authorization");
    /* The password is never echoed in the error text. */
    o.auth.user = "alice";
    o.auth.password = "hunter2-not-it";
    mb_client *c = NULL;
    mb_err err = {0};
    assert_int_equal(mb_client_create(&o, &c, &err), MB_EAUTH);
    assert_null(strstr(err.msg, "hunter2-not-it"));
    o.auth.password = "secret";
    create_client(&o);
    roundtrip("user accepted");
}

/* TLS and user/password together: the auth failure is reported as auth, not
 * as TLS, and the right pair works. */
static void test_tls_with_auth(void **state)
{
    (void)state;
    natsrv_opts so = {.tls = true, .user = "bob", .password = "pw"};
    start_server(&so, &F.srv);
    mb_client_opts o;
    base_opts(&o, natsrv_url(F.srv));
    o.tls.ca_file = natsrv_ca_file(F.srv);
    o.auth.user = "bob";
    o.auth.password = "nope";
    expect_refused(&o, MB_EAUTH, "Authorization");
    o.auth.password = "pw";
    create_client(&o);
    roundtrip("TLS and auth");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_tls_roundtrip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tls_wrong_ca, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tls_hostname_mismatch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tls_mutual, setup, teardown),
        cmocka_unit_test_setup_teardown(test_token_auth, setup, teardown),
        cmocka_unit_test_setup_teardown(test_user_password_auth, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tls_with_auth, setup, teardown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    /* Let nats.c's library threads end, so a leak checker sees a clean exit. */
    nats_CloseAndWait(5000);
    return rc;
}
