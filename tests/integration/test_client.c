/* SPDX-License-Identifier: MIT */
/*
 * Integration tests of mb_client against a real nats-server (tests/support
 * natsrv): publish/subscribe with validation and the DLQ, ordering across a
 * pool, request/reply, unsubscribe, queue groups, poll mode, partial pool
 * and repair, server restart with retries, SIGSTOP degradation, slow
 * consumers, connection failures. Every wait polls a condition with a
 * deadline; no sleep decides an outcome.
 */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <nats/nats.h>

#include "alloc.h"
#include "mudbus/client.h"
#include "natsrv.h"
#include "testutil.h"

/* ---- helpers ---- */

#define MAXREC 4096
typedef struct rec {
    pthread_mutex_t lock;
    _Atomic int count;
    int seq[MAXREC]; /* event_data.n of each message, in arrival order */
    char last[512];
    unsigned delay_ms; /* slow handler */
    pthread_t thread;
} rec;

static void rec_init(rec *r)
{
    memset(r, 0, sizeof *r);
    pthread_mutex_init(&r->lock, NULL);
}

static mb_handled rec_handler(void *ctx, const mb_msg *m)
{
    rec *r = ctx;
    pthread_mutex_lock(&r->lock);
    int n = atomic_load(&r->count);
    const char *p = strstr(m->data, "\"n\":");
    if (n < MAXREC)
        r->seq[n] = p ? atoi(p + 4) : -1;
    snprintf(r->last, sizeof r->last, "%s", m->data);
    r->thread = pthread_self();
    assert_int_equal(m->data[m->len], '\0');
    atomic_store(&r->count, n + 1);
    pthread_mutex_unlock(&r->lock);
    if (r->delay_ms)
        sleep_ms(r->delay_ms);
    return MB_HANDLED_OK;
}

typedef struct evrec {
    pthread_mutex_t lock;
    int by_type[16];
    mb_conn_state last_state;
    int states_seen[MB_CONN_STATE_COUNT];
    char last_text[16][256];
    pthread_t thread;
} evrec;

static evrec EV;

static void ev_listener(void *ctx, const mb_client_event *ev)
{
    evrec *e = ctx;
    pthread_mutex_lock(&e->lock);
    e->by_type[ev->type]++;
    snprintf(e->last_text[ev->type], sizeof e->last_text[ev->type], "%s", ev->text);
    if (ev->type == MB_CLIENT_EV_STATE) {
        e->last_state = ev->to;
        e->states_seen[ev->to]++;
    }
    e->thread = pthread_self();
    pthread_mutex_unlock(&e->lock);
}

static int ev_count(mb_client_event_type t)
{
    pthread_mutex_lock(&EV.lock);
    int n = EV.by_type[t];
    pthread_mutex_unlock(&EV.lock);
    return n;
}

static void log_line(void *ctx, const char *line)
{
    (void)ctx;
    if (getenv("MB_TEST_VERBOSE"))
        fprintf(stderr, "  [client] %s\n", line);
}

typedef struct fixture {
    natsrv *srv;
    mb_client *c;
    mb_dlq *dlq;
    char dlqdir[64];
} fixture;

static fixture F;

static void base_opts(mb_client_opts *o, const char *url)
{
    mb_client_opts_default(o);
    o->servers[0] = url;
    o->name = "test";
    o->reconnect_wait_ms = 100;
    o->reconnect_jitter_ms = 20;
    o->connect_timeout_ms = 1000;
    o->dlq = F.dlq;
    o->log = log_line;
}

static int setup(void **state)
{
    (void)state;
    memset(&F, 0, sizeof F);
    memset(&EV, 0, sizeof EV);
    pthread_mutex_init(&EV.lock, NULL);
    snprintf(F.dlqdir, sizeof F.dlqdir, "/tmp/mbclient-dlq-XXXXXX");
    if (!mkdtemp(F.dlqdir))
        return -1;
    mb_dlq_opts dopts = {.create = true};
    if (mb_dlq_open(F.dlqdir, &dopts, &F.dlq, NULL) != MB_OK)
        return -1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    mb_client_destroy(F.c);
    F.c = NULL;
    mb_dlq_close(F.dlq, NULL);
    natsrv_destroy(F.srv);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", F.dlqdir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", F.dlqdir);
    return 0;
}

static void start_server(const natsrv_opts *o)
{
    assert_int_equal(natsrv_start(o, &F.srv), 0);
}

static void create_client(mb_client_opts *o)
{
    mb_err err = {0};
    mb_status st = mb_client_create(o, &F.c, &err);
    if (st != MB_OK)
        fail_msg("mb_client_create: %s: %s", mb_status_name(st), err.msg);
    assert_int_equal(mb_client_listen(F.c, ev_listener, &EV, NULL), MB_OK);
}

static size_t dlq_depth(void)
{
    mb_dlq_flush(F.dlq, NULL);
    mb_dlq_stats s;
    mb_dlq_stats_get(F.dlq, &s);
    return (size_t)s.depth;
}

static const char *event_json(char *buf, size_t cap, int n)
{
    snprintf(buf, cap,
             "{\"message_id\":\"m%d\",\"timestamp\":\"2026-01-13T10:00:00Z\","
             "\"event_type\":\"tick\",\"event_data\":{\"n\":%d}}",
             n, n);
    return buf;
}

static mb_status pub_event(const char *subject, int n, mb_publish_disposition *d, mb_err *err)
{
    char buf[256];
    event_json(buf, sizeof buf, n);
    return mb_client_publish(F.c, subject, buf, strlen(buf), NULL, d, err);
}

static bool cond_ev(void *arg)
{
    const int *want = arg; /* {type, count} */
    return ev_count((mb_client_event_type)want[0]) >= want[1];
}

static bool wait_event(mb_client_event_type t, int n, unsigned ms)
{
    int want[2] = {(int)t, n};
    return wait_for(cond_ev, want, ms);
}

static bool cond_state(void *arg)
{
    mb_client_health h;
    mb_client_health_get(F.c, &h);
    return h.state == *(mb_conn_state *)arg;
}

static bool wait_state(mb_conn_state s, unsigned ms)
{
    return wait_for(cond_state, &s, ms);
}

/* ---- tests ---- */

static void test_roundtrip_validation_dlq(void **state)
{
    (void)state;
    start_server(NULL);
    mb_client_opts o;
    base_opts(&o, natsrv_url(F.srv));
    create_client(&o);

    rec r;
    rec_init(&r);
    mb_sub_id id = 0;
    assert_int_equal(mb_client_subscribe(F.c, "chat.say.room.*", NULL, rec_handler, &r, &id, NULL),
                     MB_OK);
    assert_true(id != 0);
    assert_int_equal(mb_client_flush(F.c, 2000, NULL), MB_OK);

    /* A typed chat message arrives. */
    mb_chat_msg m = {.sender_id = "p1",
                     .sender_name = "Armitage",
                     .channel = MB_CHANNEL_SAY,
                     .content = "hello library",
                     .room_id = "earth_arkham_city_library"};
    mb_publish_disposition d = MB_PUB_DROPPED;
    mb_err err = {0};
    assert_int_equal(
        mb_client_publish_chat(F.c, "chat.say.room.earth_arkham_city_library", &m, NULL, &d, &err),
        MB_OK);
    assert_int_equal(d, MB_PUB_SENT);
    assert_true(wait_count(&r.count, 1, 5000));
    assert_non_null(strstr(r.last, "hello library"));

    /* An invalid payload is refused at publish and never sent. */
    const char *bad = "{\"message_id\":\"x\",\"content\":\"no sender\"}";
    mb_err_clear(&err);
    assert_int_equal(mb_client_publish(F.c, "chat.say.room.r1", bad, strlen(bad), NULL, &d, &err),
                     MB_ESCHEMA);
    assert_int_equal(d, MB_PUB_REFUSED);
    assert_true(err.msg[0] != '\0');
    /* So is an unknown subject and a subject with an injected token. */
    mb_err_clear(&err);
    assert_int_equal(mb_client_publish(F.c, "chat.nope", "{}", 2, NULL, &d, &err), MB_ESUBJECT);
    assert_int_equal(mb_client_publish(F.c, "chat.say.room.*", "{}", 2, NULL, &d, NULL),
                     MB_ESUBJECT);

    /* A raw invalid message published with plain nats.c goes to the DLQ and
     * the handler never sees it; a valid message after it still arrives. */
    natsConnection *raw = NULL;
    assert_int_equal(natsConnection_ConnectTo(&raw, natsrv_url(F.srv)), NATS_OK);
    assert_int_equal(natsConnection_PublishString(raw, "chat.say.room.r1", bad), NATS_OK);
    assert_int_equal(natsConnection_PublishString(raw, "chat.say.room.r1", "not json"), NATS_OK);
    assert_int_equal(natsConnection_Flush(raw), NATS_OK);
    natsConnection_Destroy(raw);
    assert_int_equal(
        mb_client_publish_chat(F.c, "chat.say.room.earth_arkham_city_library", &m, NULL, &d, NULL),
        MB_OK);
    assert_true(wait_count(&r.count, 2, 5000));
    assert_true(wait_event(MB_CLIENT_EV_DEAD_LETTERED, 2, 5000));
    assert_int_equal(atomic_load(&r.count), 2);
    assert_int_equal(dlq_depth(), 2);

    char *text = NULL;
    size_t len = 0;
    assert_int_equal(mb_client_metrics(F.c, &text, &len, NULL), MB_OK);
    assert_non_null(strstr(text, "mudbus_client_invalid_total{client=\"test\"} 2"));
    assert_non_null(strstr(text, "mudbus_client_publish_refused_total{client=\"test\"} 3"));
    assert_non_null(strstr(text, "mudbus_client_pool_size{client=\"test\"} 2"));
    assert_non_null(strstr(text, "mudbus_client_published_total{client=\"test\",conn=\""));
    free(text);
}

typedef struct order_ctx {
    rec r[4];
} order_ctx;

static void test_ordering_pool4(void **state)
{
    (void)state;
    start_server(NULL);
    mb_client_opts o;
    base_opts(&o, natsrv_url(F.srv));
    o.pool_size = 4;
    create_client(&o);
    static order_ctx oc;
    const char *subjects[4] = {"events.player_entered.a", "events.player_entered.b",
                               "events.player_left.c", "events.game_tick"};
    for (int s = 0; s < 4; s++) {
        rec_init(&oc.r[s]);
        assert_int_equal(
            mb_client_subscribe(F.c, subjects[s], NULL, rec_handler, &oc.r[s], NULL, NULL), MB_OK);
    }
    assert_int_equal(mb_client_flush(F.c, 2000, NULL), MB_OK);
    const int N = 1000;
    for (int i = 0; i < N; i++)
        for (int s = 0; s < 4; s++)
            assert_int_equal(pub_event(subjects[s], i, NULL, NULL), MB_OK);
    assert_int_equal(mb_client_flush(F.c, 5000, NULL), MB_OK);
    for (int s = 0; s < 4; s++) {
        assert_true(wait_count(&oc.r[s].count, N, 5000));
        for (int i = 0; i < N; i++)
            assert_int_equal(oc.r[s].seq[i], i);
    }
    /* The load was spread over the pool. */
    char *text = NULL;
    assert_int_equal(mb_client_metrics(F.c, &text, NULL, NULL), MB_OK);
    int used = 0;
    for (int k = 0; k < 4; k++) {
        char key[128];
        snprintf(key, sizeof key, "mudbus_client_published_total{client=\"test\",conn=\"%d\"} 0\n",
                 k);
        used += strstr(text, key) == NULL;
    }
    free(text);
    assert_true(used >= 2);
}

static mb_handled responder(void *ctx, const mb_msg *m)
{
    mb_client *c = ctx;
    assert_int_equal(mb_client_respond(c, m, "{\"pong\":1}", 10, NULL), MB_OK);
    return MB_HANDLED_OK;
}

static mb_handled silent(void *ctx, const mb_msg *m)
{
    (void)m;
    atomic_fetch_add((_Atomic int *)ctx, 1);
    return MB_HANDLED_OK;
}

static void test_request_reply(void **state)
{
    (void)state;
    start_server(NULL);
    mb_client_opts o;
    base_opts(&o, natsrv_url(F.srv));
    create_client(&o);
    static _Atomic int silent_calls;
    atomic_store(&silent_calls, 0);
    assert_int_equal(
        mb_client_subscribe(F.c, "events.domain.ping", NULL, responder, F.c, NULL, NULL), MB_OK);
    assert_int_equal(
        mb_client_subscribe(F.c, "events.domain.sleepy", NULL, silent, &silent_calls, NULL, NULL),
        MB_OK);
    assert_int_equal(mb_client_flush(F.c, 2000, NULL), MB_OK);
    char buf[256];
    event_json(buf, sizeof buf, 1);
    mb_reply *rep = NULL;
    mb_err err = {0};
    assert_int_equal(
        mb_client_request(F.c, "events.domain.ping", buf, strlen(buf), 2000, &rep, &err), MB_OK);
    assert_string_equal(rep->data, "{\"pong\":1}");
    assert_int_equal(rep->len, 10);
    mb_client_reply_free(rep);

    uint64_t t0 = now_ms();
    mb_err_clear(&err);
    assert_int_equal(
        mb_client_request(F.c, "events.domain.sleepy", buf, strlen(buf), 300, &rep, &err),
        MB_ETIMEOUT);
    assert_true(now_ms() - t0 >= 250);
    assert_null(rep);
    assert_int_equal(atomic_load(&silent_calls), 1);

    mb_err_clear(&err);
    assert_int_equal(
        mb_client_request(F.c, "events.domain.nobody", buf, strlen(buf), 2000, &rep, &err),
        MB_ENORESPONDERS);
    assert_non_null(strstr(err.msg, "no responders"));
    /* Requests are validated like publishes. */
    assert_int_equal(mb_client_request(F.c, "events.domain.ping", "{}", 2, 2000, &rep, NULL),
                     MB_ESCHEMA);
    /* A message without a reply subject cannot be answered. */
    mb_msg m = {.subject = "events.game_tick", .reply = NULL, .data = "{}", .len = 2};
    assert_int_equal(mb_client_respond(F.c, &m, "x", 1, NULL), MB_EINVAL);
}

/* no_echo with one connection: the client's own publishes do not come back
 * to its own subscriptions, another client's do, and the other client gets
 * everything. Without no_echo the same client hears itself. */
static void test_no_echo(void **state)
{
    (void)state;
    start_server(NULL);
    mb_client_opts o;
    base_opts(&o, natsrv_url(F.srv));
    o.pool_size = 1;
    o.no_echo = true;
    create_client(&o);
    mb_client_opts o2;
    base_opts(&o2, natsrv_url(F.srv));
    o2.name = "other";
    mb_client *other = NULL;
    assert_int_equal(mb_client_create(&o2, &other, NULL), MB_OK);
    rec self, peer;
    rec_init(&self);
    rec_init(&peer);
    assert_int_equal(
        mb_client_subscribe(F.c, "events.game_tick", NULL, rec_handler, &self, NULL, NULL), MB_OK);
    assert_int_equal(
        mb_client_subscribe(other, "events.game_tick", NULL, rec_handler, &peer, NULL, NULL),
        MB_OK);
    assert_int_equal(mb_client_flush(F.c, 2000, NULL), MB_OK);
    assert_int_equal(mb_client_flush(other, 2000, NULL), MB_OK);
    for (int i = 1; i <= 10; i++)
        assert_int_equal(pub_event("events.game_tick", i, NULL, NULL), MB_OK);
    assert_true(wait_count(&peer.count, 10, 5000));
    char buf[256];
    event_json(buf, sizeof buf, 11);
    assert_int_equal(
        mb_client_publish(other, "events.game_tick", buf, strlen(buf), NULL, NULL, NULL), MB_OK);
    /* The other client's message is the barrier: it was published after
     * ours on a connection of its own, so ours would have arrived first. */
    assert_true(wait_count(&self.count, 1, 5000));
    assert_true(wait_count(&peer.count, 11, 5000));
    sleep_ms(50);
    assert_int_equal(atomic_load(&self.count), 1);
    assert_int_equal(self.seq[0], 11);
    mb_client_destroy(other);

    /* The control: the same with no_echo off hears itself. */
    mb_client_destroy(F.c);
    F.c = NULL;
    o.no_echo = false;
    create_client(&o);
    rec_init(&self);
    assert_int_equal(
        mb_client_subscribe(F.c, "events.game_tick", NULL, rec_handler, &self, NULL, NULL), MB_OK);
    assert_int_equal(mb_client_flush(F.c, 2000, NULL), MB_OK);
    assert_int_equal(pub_event("events.game_tick", 12, NULL, NULL), MB_OK);
    assert_true(wait_count(&self.count, 1, 5000));
    assert_int_equal(self.seq[0], 12);
}

static void test_unsubscribe(void **state)
{
    (void)state;
    start_server(NULL);
    mb_client_opts o;
    base_opts(&o, natsrv_url(F.srv));
    create_client(&o);
    rec a, b;
    rec_init(&a);
    rec_init(&b);
    mb_sub_id ida = 0, idb = 0;
    assert_int_equal(
        mb_client_subscribe(F.c, "events.game_tick", NULL, rec_handler, &a, &ida, NULL), MB_OK);
    assert_int_equal(
        mb_client_subscribe(F.c, "events.game_tick", NULL, rec_handler, &b, &idb, NULL), MB_OK);
    assert_true(ida != idb);
    assert_int_equal(mb_client_flush(F.c, 2000, NULL), MB_OK);
    assert_int_equal(pub_event("events.game_tick", 1, NULL, NULL), MB_OK);
    assert_true(wait_count(&a.count, 1, 5000));
    assert_true(wait_count(&b.count, 1, 5000));
    assert_int_equal(mb_client_unsubscribe(F.c, ida, NULL), MB_OK);
    mb_err err = {0};
    assert_int_equal(mb_client_unsubscribe(F.c, ida, &err), MB_ENOTFOUND);
    assert_int_equal(mb_client_unsubscribe(F.c, 987654, NULL), MB_ENOTFOUND);
    for (int i = 2; i <= 20; i++)
        assert_int_equal(pub_event("events.game_tick", i, NULL, NULL), MB_OK);
    /* b is the barrier: once it has everything, a would have had it too. */
    assert_true(wait_count(&b.count, 20, 5000));
    assert_int_equal(atomic_load(&a.count), 1);
    /* Many subscriptions, removed in another order than made: each id finds
     * its own; a removed id stays unknown after its slot is reused. */
    enum { MANY = 300 };
    static mb_sub_id many[MANY];
    for (int i = 0; i < MANY; i++)
        assert_int_equal(
            mb_client_subscribe(F.c, "events.game_tick", NULL, rec_handler, &a, &many[i], NULL),
            MB_OK);
    for (int i = 0; i < MANY; i += 2) /* the even ones */
        assert_int_equal(mb_client_unsubscribe(F.c, many[i], NULL), MB_OK);
    mb_sub_id again[MANY / 2];
    for (int i = 0; i < MANY / 2; i++) {
        assert_int_equal(
            mb_client_subscribe(F.c, "events.game_tick", NULL, rec_handler, &a, &again[i], NULL),
            MB_OK);
        for (int k = 0; k < MANY; k += 2)
            assert_true(again[i] != many[k]);
    }
    for (int i = 0; i < MANY; i += 2)
        assert_int_equal(mb_client_unsubscribe(F.c, many[i], NULL), MB_ENOTFOUND);
    for (int i = MANY - 1; i > 0; i -= 2) /* the odd ones, newest first */
        assert_int_equal(mb_client_unsubscribe(F.c, many[i], NULL), MB_OK);
    for (int i = 0; i < MANY / 2; i++)
        assert_int_equal(mb_client_unsubscribe(F.c, again[i], NULL), MB_OK);
    for (int i = 0; i < MANY / 2; i++)
        assert_int_equal(mb_client_unsubscribe(F.c, again[i], NULL), MB_ENOTFOUND);
    /* idb is still listed and still delivers. */
    assert_int_equal(pub_event("events.game_tick", 21, NULL, NULL), MB_OK);
    assert_true(wait_count(&b.count, 21, 5000));
    assert_int_equal(atomic_load(&a.count), 1);
    assert_int_equal(mb_client_unsubscribe(F.c, idb, NULL), MB_OK);
    /* Refused patterns. */
    assert_int_equal(mb_client_subscribe(F.c, ">", NULL, rec_handler, &a, NULL, NULL), MB_ESUBJECT);
    assert_int_equal(mb_client_subscribe(F.c, "chat.*.*.*", NULL, rec_handler, &a, NULL, NULL),
                     MB_ESUBJECT);
}

static void test_queue_group(void **state)
{
    (void)state;
    start_server(NULL);
    mb_client_opts o;
    base_opts(&o, natsrv_url(F.srv));
    o.pool_size = 1;
    create_client(&o);
    rec a, b;
    rec_init(&a);
    rec_init(&b);
    assert_int_equal(
        mb_client_subscribe(F.c, "events.domain.*", "workers", rec_handler, &a, NULL, NULL), MB_OK);
    assert_int_equal(
        mb_client_subscribe(F.c, "events.domain.*", "workers", rec_handler, &b, NULL, NULL), MB_OK);
    assert_int_equal(mb_client_flush(F.c, 2000, NULL), MB_OK);
    const int N = 400;
    for (int i = 0; i < N; i++)
        assert_int_equal(pub_event("events.domain.job", i, NULL, NULL), MB_OK);
    _Atomic int total;
    uint64_t end = now_ms() + 5000;
    do {
        atomic_store(&total, atomic_load(&a.count) + atomic_load(&b.count));
        if (atomic_load(&total) >= N)
            break;
        sleep_ms(5);
    } while (now_ms() < end);
    assert_int_equal(atomic_load(&total), N);
    assert_true(atomic_load(&a.count) > 0 && atomic_load(&b.count) > 0);
    /* Each message once: no duplicates across the two members. */
    static char seen[400];
    memset(seen, 0, sizeof seen);
    for (int i = 0; i < atomic_load(&a.count); i++)
        seen[a.seq[i]]++;
    for (int i = 0; i < atomic_load(&b.count); i++)
        seen[b.seq[i]]++;
    for (int i = 0; i < N; i++)
        assert_int_equal(seen[i], 1);
    sleep_ms(100); /* nothing more arrives (no redelivery) */
    assert_int_equal(atomic_load(&a.count) + atomic_load(&b.count), N);
}

/* The value of series `key` (name and labels) in the client's metrics. */
static double metric_value(const char *key)
{
    char *text = NULL;
    assert_int_equal(mb_client_metrics(F.c, &text, NULL, NULL), MB_OK);
    const char *at = strstr(text, key);
    assert_non_null(at);
    double v = strtod(at + strlen(key), NULL);
    free(text);
    return v;
}

static void test_poll_mode(void **state)
{
    (void)state;
    start_server(NULL);
    mb_client_opts o;
    base_opts(&o, natsrv_url(F.srv));
    o.poll_mode = true;
    create_client(&o);
    int fd = mb_client_fd(F.c);
    assert_true(fd >= 0);
    rec r;
    rec_init(&r);
    assert_int_equal(
        mb_client_subscribe(F.c, "events.game_tick", NULL, rec_handler, &r, NULL, NULL), MB_OK);
    assert_int_equal(mb_client_flush(F.c, 2000, NULL), MB_OK);
    const int N = 300;
    for (int i = 0; i < N; i++)
        assert_int_equal(pub_event("events.game_tick", i, NULL, NULL), MB_OK);
    /* Nothing runs until we dispatch. */
    sleep_ms(50);
    assert_int_equal(atomic_load(&r.count), 0);
    uint64_t end = now_ms() + 5000;
    size_t bounded_ran = 0;
    assert_int_equal(mb_client_dispatch(F.c, 7, &bounded_ran), MB_OK);
    assert_true(bounded_ran <= 7);
    while (atomic_load(&r.count) < N && now_ms() < end) {
        int t = mb_client_timeout_ms(F.c);
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int rc = poll(&p, 1, t < 0 || t > 100 ? 100 : t);
        assert_true(rc >= 0);
        size_t ran = 0;
        assert_int_equal(mb_client_dispatch(F.c, 0, &ran), MB_OK);
    }
    assert_int_equal(atomic_load(&r.count), N);
    for (int i = 0; i < N; i++)
        assert_int_equal(r.seq[i], i);
    /* Every delivery's wait in the queue is measured. One more message is
     * queued once the fd is readable; dispatched 30 ms later, it adds at
     * least that to the sum. */
    static const char count_key[] = "mudbus_client_dispatch_wait_seconds_count{client=\"test\"} ";
    static const char sum_key[] = "mudbus_client_dispatch_wait_seconds_sum{client=\"test\"} ";
    assert_int_equal((int)metric_value(count_key), N);
    double sum0 = metric_value(sum_key);
    assert_int_equal(pub_event("events.game_tick", N, NULL, NULL), MB_OK);
    struct pollfd p = {.fd = fd, .events = POLLIN};
    assert_int_equal(poll(&p, 1, 5000), 1);
    sleep_ms(30);
    assert_int_equal(mb_client_dispatch(F.c, 0, NULL), MB_OK);
    assert_int_equal(atomic_load(&r.count), N + 1);
    assert_int_equal((int)metric_value(count_key), N + 1);
    assert_true(metric_value(sum_key) - sum0 >= 0.030);
    /* Handlers and listeners ran on this thread. */
    assert_true(pthread_equal(r.thread, pthread_self()));
    pthread_mutex_lock(&EV.lock);
    int states = EV.by_type[MB_CLIENT_EV_STATE];
    pthread_t evt = EV.thread;
    pthread_mutex_unlock(&EV.lock);
    if (states > 0)
        assert_true(pthread_equal(evt, pthread_self()));
    /* Not in poll mode: dispatch refuses. */
    mb_client *c2 = NULL;
    base_opts(&o, natsrv_url(F.srv));
    o.name = "other";
    assert_int_equal(mb_client_create(&o, &c2, NULL), MB_OK);
    assert_int_equal(mb_client_fd(c2), -1);
    assert_int_equal(mb_client_dispatch(c2, 0, NULL), MB_ESTATE);
    mb_client_destroy(c2);
}

/* A second connection that floods events.game_tick until told to stop. */
typedef struct flood {
    const char *url;
    atomic_bool stop;
    long sent;
} flood;

static void *flood_main(void *arg)
{
    flood *f = arg;
    natsConnection *nc = NULL;
    if (natsConnection_ConnectTo(&nc, f->url) != NATS_OK)
        return NULL;
    char buf[256];
    event_json(buf, sizeof buf, 1);
    while (!atomic_load(&f->stop)) {
        for (int i = 0; i < 64; i++)
            if (natsConnection_PublishString(nc, "events.game_tick", buf) == NATS_OK)
                f->sent++;
        natsConnection_FlushTimeout(nc, 1000);
    }
    natsConnection_Destroy(nc);
    return NULL;
}

/* Subscriptions made and dropped while messages for them keep arriving, as a
 * gateway's players come and go (poll mode, shared delivery thread). nats.c
 * 3.4 may still be using an unsubscribed subscription on its read loop
 * (nats.c issue 637); one destroyed at once was freed under it and the heap
 * was corrupted, which valgrind showed and which crashed a gateway about one
 * run in five. The client keeps them until a later round trip (a few health
 * checks here). Without the fix this test corrupts the heap (an abort, or
 * errors under valgrind); it cannot prove the absence of a race, but it
 * drives the path hard: 2,000 subscriptions, each unsubscribed while the
 * flood runs, then health checks free the kept ones (the sanitizer build's
 * leak check sees any that are not); one unsubscribe in 100 runs out of
 * memory, and then waits for the round trip itself. */
static void test_unsubscribe_under_flow(void **state)
{
    (void)state;
    start_server(NULL);
    mb_client_opts o;
    base_opts(&o, natsrv_url(F.srv));
    o.poll_mode = true;
    o.shared_delivery = true;
    o.health_interval_ms = 50;
    o.health_timeout_ms = 40;
    create_client(&o);
    flood f = {.url = natsrv_url(F.srv)};
    atomic_store(&f.stop, false);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, flood_main, &f), 0);
    rec r;
    rec_init(&r);
    for (int i = 0; i < 2000; i++) {
        mb_sub_id id = 0;
        assert_int_equal(
            mb_client_subscribe(F.c, "events.game_tick", NULL, rec_handler, &r, &id, NULL), MB_OK);
        if (i % 8 == 0)
            assert_int_equal(mb_client_flush(F.c, 2000, NULL), MB_OK); /* messages arrive */
        size_t ran = 0;
        assert_int_equal(mb_client_dispatch(F.c, 64, &ran), MB_OK);
        /* One in 100 while allocations fail: the subscription cannot be
         * kept, so unsubscribe waits for the round trip itself. */
        if (i % 100 == 99)
            mb__alloc_fail_after(0);
        assert_int_equal(mb_client_unsubscribe(F.c, id, NULL), MB_OK);
        mb__alloc_fail_after(-1);
    }
    atomic_store(&f.stop, true);
    pthread_join(t, NULL);
    assert_true(f.sent > 0);
    assert_true(atomic_load(&r.count) > 0); /* messages did reach subscriptions */
    sleep_ms(300);                          /* health checks free what was kept */
    size_t ran = 0;
    assert_int_equal(mb_client_dispatch(F.c, 0, &ran), MB_OK);
}

static bool cond_live3(void *arg)
{
    (void)arg;
    mb_client_health h;
    mb_client_health_get(F.c, &h);
    return h.live == 3;
}

static void test_partial_pool_repair(void **state)
{
    (void)state;
    natsrv_opts so = {.extra_conf = "max_connections: 3"};
    start_server(&so);
    natsConnection *blocker = NULL;
    assert_int_equal(natsConnection_ConnectTo(&blocker, natsrv_url(F.srv)), NATS_OK);
    mb_client_opts o;
    base_opts(&o, natsrv_url(F.srv));
    o.pool_size = 3;
    o.reconnect_wait_ms = 100;
    create_client(&o);
    mb_client_health h;
    mb_client_health_get(F.c, &h);
    assert_int_equal(h.pool_size, 3);
    assert_int_equal(h.live, 2);
    assert_int_equal(h.state, MB_CONN_CONNECTED);
    /* Publishing works on the live ones meanwhile. */
    for (int i = 0; i < 20; i++)
        assert_int_equal(pub_event("events.game_tick", i, NULL, NULL), MB_OK);
    natsConnection_Destroy(blocker);
    assert_true(wait_for(cond_live3, NULL, 5000));
    assert_true(wait_event(MB_CLIENT_EV_POOL, 1, 5000));
    char *text = NULL;
    assert_int_equal(mb_client_metrics(F.c, &text, NULL, NULL), MB_OK);
    assert_non_null(strstr(text, "mudbus_client_pool_live{client=\"test\"} 3"));
    assert_non_null(strstr(text, "mudbus_client_repairs_total{client=\"test\"} 1"));
    free(text);
}

static void test_restart_retries_accounted(void **state)
{
    (void)state;
    start_server(NULL);
    mb_client_opts o;
    base_opts(&o, natsrv_url(F.srv));
    /* One connection: nats.c resubscribes before it reports the connection
     * as connected again, so retries cannot overtake the resubscription. */
    o.pool_size = 1;
    o.retry.max_attempts = 100;
    o.retry.base_delay_ms = 20;
    o.retry.max_delay_ms = 200;
    o.retry.deadline_ms = 20000;
    o.breaker.failure_rate_pct = MB_BREAKER_OFF;
    /* The default budget (500 tokens) rightly stops retrying 40 messages
     * every few ms during an outage; this test wants them all through. */
    o.budget.max_tokens = 1000000;
    create_client(&o);
    rec r;
    rec_init(&r);
    assert_int_equal(
        mb_client_subscribe(F.c, "events.game_tick", NULL, rec_handler, &r, NULL, NULL), MB_OK);
    assert_int_equal(mb_client_flush(F.c, 2000, NULL), MB_OK);
    const int N = 60;
    int sent = 0, retrying = 0, dead = 0, refused = 0;
    for (int i = 0; i < 20; i++) {
        assert_int_equal(pub_event("events.game_tick", i, NULL, NULL), MB_OK);
        sent++;
    }
    assert_true(wait_count(&r.count, 20, 5000));

    assert_int_equal(natsrv_stop(F.srv), 0);
    assert_true(wait_event(MB_CLIENT_EV_DISCONNECTED, 1, 5000));
    assert_true(wait_state(MB_CONN_RECONNECTING, 5000));
    for (int i = 20; i < N; i++) {
        mb_publish_disposition d;
        mb_err err = {0};
        mb_status st = pub_event("events.game_tick", i, &d, &err);
        if (st == MB_OK) {
            sent++;
            continue;
        }
        assert_true(mb_status_retryable(st));
        if (d == MB_PUB_RETRYING)
            retrying++;
        else if (d == MB_PUB_DEAD_LETTERED)
            dead++;
        else
            refused++;
    }
    assert_true(retrying > 0);
    mb_client_health h;
    mb_client_health_get(F.c, &h);
    assert_true(h.retry_pending > 0);
    assert_int_equal(h.live, 0);

    assert_int_equal(natsrv_restart(F.srv), 0);
    assert_true(wait_event(MB_CLIENT_EV_RECONNECTED, 1, 5000));
    assert_true(wait_state(MB_CONN_CONNECTED, 5000));
    /* Every message is delivered, or dead-lettered with a status. */
    uint64_t end = now_ms() + 8000;
    while (now_ms() < end && (size_t)atomic_load(&r.count) + dlq_depth() < (size_t)N)
        sleep_ms(10);
    assert_int_equal(refused, 0);
    if ((size_t)atomic_load(&r.count) + dlq_depth() != (size_t)N) {
        char *dbg = NULL;
        mb_client_metrics(F.c, &dbg, NULL, NULL);
        fprintf(stderr, "sent %d retrying %d dead %d delivered %d dlq %zu\n%s\n", sent, retrying,
                dead, atomic_load(&r.count), dlq_depth(), dbg);
        free(dbg);
    }
    assert_int_equal((size_t)atomic_load(&r.count) + dlq_depth(), N);
    mb_client_health_get(F.c, &h);
    assert_int_equal(h.retry_pending, 0);
    /* With this policy, all of them got through. */
    if (atomic_load(&r.count) != N) {
        mb_dlq_entry *e = NULL;
        mb_dlq_stats ds;
        mb_dlq_stats_get(F.dlq, &ds);
        if (mb_dlq_show(F.dlq, ds.next_id - 1, &e, NULL) == MB_OK) {
            fprintf(stderr, "last DLQ entry: %s: %s\n", mb_status_name(e->error), e->error_message);
            mb_dlq_entry_free(e);
        }
    }
    assert_int_equal(atomic_load(&r.count), N);
    pthread_mutex_lock(&EV.lock);
    assert_true(EV.states_seen[MB_CONN_RECONNECTING] >= 1);
    pthread_mutex_unlock(&EV.lock);
}

static void test_exhausted_to_dlq(void **state)
{
    (void)state;
    start_server(NULL);
    mb_client_opts o;
    base_opts(&o, natsrv_url(F.srv));
    o.pool_size = 1;
    o.retry.max_attempts = 3;
    o.retry.base_delay_ms = 10;
    o.retry.max_delay_ms = 20;
    create_client(&o);
    assert_int_equal(natsrv_stop(F.srv), 0);
    assert_true(wait_state(MB_CONN_RECONNECTING, 5000));
    mb_publish_disposition d;
    assert_int_equal(pub_event("events.game_tick", 1, &d, NULL), MB_ENOCONN);
    assert_int_equal(d, MB_PUB_RETRYING);
    /* no_retry: the caller is told, nothing is kept. */
    mb_publish_opts po = {.no_retry = true};
    char buf[256];
    event_json(buf, sizeof buf, 2);
    assert_int_equal(mb_client_publish(F.c, "events.game_tick", buf, strlen(buf), &po, &d, NULL),
                     MB_ENOCONN);
    assert_int_equal(d, MB_PUB_DROPPED);
    assert_true(wait_event(MB_CLIENT_EV_DEAD_LETTERED, 1, 5000));
    assert_int_equal(dlq_depth(), 1);
    /* The entry says what happened. */
    mb_dlq_entry *e = NULL;
    mb_dlq_stats ds;
    mb_dlq_stats_get(F.dlq, &ds);
    assert_int_equal(mb_dlq_show(F.dlq, ds.next_id - 1, &e, NULL), MB_OK);
    assert_string_equal(e->origin, "publish");
    assert_int_equal(e->attempts, 3);
    assert_int_equal(e->error, MB_ENOCONN);
    assert_string_equal(e->subject, "events.game_tick");
    mb_dlq_entry_free(e);
}

static void test_freeze_degraded(void **state)
{
    (void)state;
    start_server(NULL);
    mb_client_opts o;
    base_opts(&o, natsrv_url(F.srv));
    o.health_interval_ms = 200;
    o.health_timeout_ms = 100;
    o.health_failures = 2;
    create_client(&o);
    assert_true(wait_state(MB_CONN_CONNECTED, 2000));
    /* A health round trip was measured. */
    uint64_t end = now_ms() + 2000;
    mb_client_health h;
    do {
        mb_client_health_get(F.c, &h);
        if (h.last_rtt_us)
            break;
        sleep_ms(10);
    } while (now_ms() < end);
    assert_true(h.last_rtt_us > 0);
    assert_int_equal(natsrv_freeze(F.srv), 0);
    uint64_t t0 = now_ms();
    bool degraded = wait_state(MB_CONN_DEGRADED, 3000);
    uint64_t took = now_ms() - t0;
    assert_int_equal(natsrv_thaw(F.srv), 0);
    assert_true(degraded);
    /* interval * failures plus the timeouts, with slack for a loaded box. */
    assert_true(took < 2000);
    mb_client_health_get(F.c, &h);
    assert_int_equal(h.last_error, MB_ETIMEOUT);
    assert_true(wait_state(MB_CONN_CONNECTED, 3000));
    pthread_mutex_lock(&EV.lock);
    assert_true(EV.states_seen[MB_CONN_DEGRADED] >= 1);
    pthread_mutex_unlock(&EV.lock);
    char *text = NULL;
    assert_int_equal(mb_client_metrics(F.c, &text, NULL, NULL), MB_OK);
    assert_non_null(strstr(text, "mudbus_client_health_rtt_seconds_count{client=\"test\"}"));
    free(text);
}

/* Lame duck: the server announces a graceful shutdown (SIGUSR2); nats.c's
 * lame-duck callback only enqueues, and the listener gets the event on the
 * client thread. */
static void test_event_lame_duck(void **state)
{
    (void)state;
    natsrv_opts so = {.extra_conf =
                          "lame_duck_duration: \"30s\"\nlame_duck_grace_period: \"1s\"\n"};
    start_server(&so);
    mb_client_opts o;
    base_opts(&o, natsrv_url(F.srv));
    o.pool_size = 1;
    create_client(&o);
    assert_int_equal(kill(natsrv_pid(F.srv), SIGUSR2), 0);
    assert_true(wait_event(MB_CLIENT_EV_LAME_DUCK, 1, 10000));
    pthread_mutex_lock(&EV.lock);
    bool on_client_thread = !pthread_equal(EV.thread, pthread_self());
    pthread_mutex_unlock(&EV.lock);
    assert_true(on_client_thread);
}

/* Closed: with no reconnects allowed, a stopped server closes the connection
 * for good: disconnected, then closed. */
static void test_event_closed(void **state)
{
    (void)state;
    start_server(NULL);
    mb_client_opts o;
    base_opts(&o, natsrv_url(F.srv));
    o.pool_size = 1;
    o.max_reconnect = 0;
    create_client(&o);
    assert_int_equal(natsrv_stop(F.srv), 0);
    assert_true(wait_event(MB_CLIENT_EV_DISCONNECTED, 1, 10000));
    assert_true(wait_event(MB_CLIENT_EV_CLOSED, 1, 10000));
    mb_client_health h;
    mb_client_health_get(F.c, &h);
    assert_int_equal(h.live, 0);
}

/* Error: the server refuses a publish the account may not make (an
 * asynchronous -ERR); nats.c's error handler only enqueues it and the
 * listener sees it with the server's reason. */
static void test_event_error(void **state)
{
    (void)state;
    natsrv_opts so = {
        .extra_conf = "authorization {\n  users = [ { user: \"game\", password: \"pw\",\n"
                      "    permissions: { publish: { deny: [\"events.game_tick\"] } } } ]\n}\n"};
    start_server(&so);
    mb_client_opts o;
    base_opts(&o, natsrv_url(F.srv));
    o.pool_size = 1;
    o.auth.user = "game";
    o.auth.password = "pw";
    create_client(&o);
    mb_publish_disposition d;
    mb_err err = {0};
    /* Valid for mudbus, so it reaches the server, which refuses it. */
    assert_int_equal(pub_event("events.game_tick", 1, &d, &err), MB_OK);
    assert_true(wait_event(MB_CLIENT_EV_ERROR, 1, 10000));
    pthread_mutex_lock(&EV.lock);
    char text[256];
    snprintf(text, sizeof text, "%s", EV.last_text[MB_CLIENT_EV_ERROR]);
    pthread_mutex_unlock(&EV.lock);
    if (strstr(text, "ermission") == NULL)
        fail_msg("error event does not give the server's reason: %s", text);
}

static void test_slow_consumer(void **state)
{
    (void)state;
    start_server(NULL);
    mb_client_opts o;
    base_opts(&o, natsrv_url(F.srv));
    o.pool_size = 1;
    o.sub_pending_msgs = 5;
    create_client(&o);
    rec r;
    rec_init(&r);
    r.delay_ms = 20;
    assert_int_equal(
        mb_client_subscribe(F.c, "events.game_tick", NULL, rec_handler, &r, NULL, NULL), MB_OK);
    assert_int_equal(mb_client_flush(F.c, 2000, NULL), MB_OK);
    for (int i = 0; i < 200; i++)
        assert_int_equal(pub_event("events.game_tick", i, NULL, NULL), MB_OK);
    assert_int_equal(mb_client_flush(F.c, 2000, NULL), MB_OK);
    assert_true(wait_event(MB_CLIENT_EV_SLOW_CONSUMER, 1, 5000));
    pthread_mutex_lock(&EV.lock);
    assert_non_null(strstr(EV.last_text[MB_CLIENT_EV_SLOW_CONSUMER], "events.game_tick"));
    pthread_mutex_unlock(&EV.lock);
    r.delay_ms = 0;
    char *text = NULL;
    assert_int_equal(mb_client_metrics(F.c, &text, NULL, NULL), MB_OK);
    assert_null(strstr(text, "mudbus_client_slow_consumer_total{client=\"test\"} 0\n"));
    free(text);
}

static void test_no_server(void **state)
{
    (void)state;
    /* A port where nothing listens: start and stop a server to find one. */
    start_server(NULL);
    char url[64];
    snprintf(url, sizeof url, "%s", natsrv_url(F.srv));
    assert_int_equal(natsrv_stop(F.srv), 0);
    mb_client_opts o;
    base_opts(&o, url);
    o.connect_timeout_ms = 300;
    mb_client *c = NULL;
    mb_err err = {0};
    assert_int_equal(mb_client_create(&o, &c, &err), MB_ENOCONN);
    assert_null(c);
    assert_non_null(strstr(err.msg, url));
    /* start_disconnected: created, publishes wait for a connection (a
     * patient retry policy, so that the retry outlasts the restart). */
    o.start_disconnected = true;
    o.retry.max_attempts = 100;
    o.retry.base_delay_ms = 20;
    o.retry.max_delay_ms = 100;
    create_client(&o);
    mb_client_health h;
    mb_client_health_get(F.c, &h);
    assert_int_equal(h.live, 0);
    assert_int_equal(h.state, MB_CONN_CONNECTING);
    mb_publish_disposition d;
    mb_err_clear(&err);
    assert_int_equal(pub_event("events.game_tick", 1, &d, &err), MB_ENOCONN);
    assert_non_null(strstr(err.msg, "not yet connected"));
    assert_int_equal(d, MB_PUB_RETRYING);
    /* The server comes: the pool is repaired and the retry goes out. */
    assert_int_equal(natsrv_restart(F.srv), 0);
    assert_true(wait_state(MB_CONN_CONNECTED, 5000));
    assert_true(wait_event(MB_CLIENT_EV_POOL, 1, 5000));
    uint64_t end = now_ms() + 5000;
    do {
        mb_client_health_get(F.c, &h);
        if (h.retry_pending == 0)
            break;
        sleep_ms(10);
    } while (now_ms() < end);
    assert_int_equal(h.retry_pending, 0);
    assert_int_equal(dlq_depth(), 0);
}

/* A retry that cannot be queued (the retry queue is full) gives back the
 * budget tokens it took: only retries that take place are paid for. */
static void test_retry_queue_full_refunds_budget(void **state)
{
    (void)state;
    start_server(NULL);
    char url[64];
    snprintf(url, sizeof url, "%s", natsrv_url(F.srv));
    assert_int_equal(natsrv_stop(F.srv), 0);
    mb_client_opts o;
    base_opts(&o, url);
    o.connect_timeout_ms = 300;
    o.start_disconnected = true;
    o.retry_queue_max = 1;
    o.retry.max_attempts = 10;
    o.retry.base_delay_ms = 60000; /* the first retry holds the queue's one place */
    o.retry.max_delay_ms = 60000;
    o.retry.deadline_ms = 0;
    o.retry.jitter = MB_JITTER_NONE;
    create_client(&o);
    mb_publish_disposition d;
    assert_int_equal(pub_event("events.game_tick", 1, &d, NULL), MB_ENOCONN);
    assert_int_equal(d, MB_PUB_RETRYING);
    assert_int_equal(pub_event("events.game_tick", 2, &d, NULL), MB_ENOCONN);
    assert_int_equal(d, MB_PUB_DEAD_LETTERED);
    assert_int_equal(dlq_depth(), 1);
    /* 500 tokens, 5 per retry: the queued retry took 5, the refused one
     * took 5 and gave them back. */
    char *text = NULL;
    assert_int_equal(mb_client_metrics(F.c, &text, NULL, NULL), MB_OK);
    assert_non_null(strstr(text, "mudbus_retry_budget_tokens{client=\"test\"} 495\n"));
    assert_non_null(strstr(text, "mudbus_retry_budget_granted_total{client=\"test\"} 2\n"));
    free(text);
}

static void test_bad_options(void **state)
{
    (void)state;
    mb_client_opts o;
    mb_client *c = NULL;
    mb_err err = {0};
    /* Each refusal names its reason (the defaults themselves are valid). */
    mb_client_opts_default(&o);
    o.pool_size = 0;
    mb_err_clear(&err);
    assert_int_equal(mb_client_create(&o, &c, &err), MB_EINVAL);
    assert_non_null(strstr(err.msg, "pool_size"));
    mb_client_opts_default(&o);
    o.name = "bad name";
    mb_err_clear(&err);
    assert_int_equal(mb_client_create(&o, &c, &err), MB_EINVAL);
    assert_non_null(strstr(err.msg, "name"));
    mb_client_opts_default(&o);
    o.io_buf_bytes = 100;
    mb_err_clear(&err);
    assert_int_equal(mb_client_create(&o, &c, &err), MB_EINVAL);
    assert_non_null(strstr(err.msg, "io_buf_bytes"));
    o.io_buf_bytes = (size_t)32 << 20;
    mb_err_clear(&err);
    assert_int_equal(mb_client_create(&o, &c, &err), MB_EINVAL);
    assert_non_null(strstr(err.msg, "io_buf_bytes"));
    mb_client_opts_default(&o);
    o.auth.user = "u";
    mb_err_clear(&err);
    assert_int_equal(mb_client_create(&o, &c, &err), MB_EINVAL);
    assert_non_null(strstr(err.msg, "password"));
    assert_null(c);
    mb_client_destroy(NULL);
}

static void test_auth_failure(void **state)
{
    (void)state;
    natsrv_opts so = {.user = "alice", .password = "secret"};
    start_server(&so);
    mb_client_opts o;
    base_opts(&o, natsrv_url(F.srv));
    o.auth.user = "alice";
    o.auth.password = "wrong";
    mb_client *c = NULL;
    mb_err err = {0};
    assert_int_equal(mb_client_create(&o, &c, &err), MB_EAUTH);
    assert_null(c);
    o.auth.password = "secret";
    create_client(&o);
    assert_int_equal(pub_event("events.game_tick", 1, NULL, NULL), MB_OK);
}

/* ---- allocation-failure torture ---- */

/*
 * The client's whole life under the allocator hook of src/lib/alloc.h (the
 * driver of tests/unit/test_alloc.c): for fail_after = 0, 1, 2, ... the n-th
 * allocation of the library and every later one fail while one scenario runs
 * against one nats-server: create (pool of 2), subscribe, publish one valid
 * message, wait (bounded) for its delivery, unsubscribe, destroy. Every step
 * returns MB_OK or MB_ENOMEM, never crashes; a step that fails leaves nothing
 * behind (the out argument stays NULL, LeakSanitizer finds no leak in the
 * sanitizer build) and the very same step succeeds when retried with the hook
 * disarmed. A received message whose validation runs out of memory must not
 * vanish silently: it is dropped with an MB_CLIENT_EV_DROPPED event (the
 * scenario has no DLQ). The loop ends when a run makes no more than n
 * allocations, i.e. completes without meeting the failure.
 *
 * Only the library's own allocations are hooked: nats.c (connections,
 * subscriptions, messages, options) uses its own allocator and never fails
 * here. Allocations after create are made by several threads (the client
 * thread's health timer, nats.c's delivery thread validating the message), so
 * their numbering could vary from run to run; create's is deterministic.
 * Every point is tested, with no stride: there are about 380 of them, nearly
 * all in create (metrics registration, subject registry, schema, breaker,
 * connstate, timer queues), and a create that fails there has not connected
 * yet, so the whole loop takes well under a second (a stride would be needed
 * only if the count grew into the thousands; the test prints it). Publish
 * and delivery of a valid message allocate nothing of the library's, so the
 * publish-retry record (allocated only when an attempt fails) is not reached
 * by this scenario.
 */

typedef struct torture_stats {
    long create_points; /* allocations of a successful create */
    long points;        /* allocations of a whole successful run */
    long runs;          /* scenarios run under the hook */
    long enomem[4];     /* create, subscribe, publish, delivery dropped */
} torture_stats;

static void torture_opts(mb_client_opts *o, const char *url)
{
    base_opts(o, url);
    o->pool_size = 2;
    o->dlq = NULL;
    o->name = "torture";
}

/* One scenario with the hook armed at n (n < 0: disarmed, counting with
 * LONG_MAX). Returns the number of allocations it made. */
static long torture_run(long n, torture_stats *ts, long *create_allocs)
{
    mb_client_opts o;
    torture_opts(&o, natsrv_url(F.srv));
    pthread_mutex_lock(&EV.lock);
    memset(EV.by_type, 0, sizeof EV.by_type);
    pthread_mutex_unlock(&EV.lock);
    rec r;
    rec_init(&r);
    mb__alloc_fail_after(n >= 0 ? n : LONG_MAX);

    mb_client *c = NULL;
    mb_err err = {0};
    mb_status st = mb_client_create(&o, &c, &err);
    if (create_allocs)
        *create_allocs = mb__alloc_count();
    if (st != MB_OK) {
        long used = mb__alloc_count();
        mb__alloc_fail_after(-1);
        if (st != MB_ENOMEM)
            fail_msg("fail_after %ld: create: %s: %s", n, mb_status_name(st), err.msg);
        assert_null(c);
        ts->enomem[0]++;
        /* Nothing half-built: the same create succeeds now. */
        assert_int_equal(mb_client_create(&o, &c, NULL), MB_OK);
        mb_client_destroy(c);
        return used;
    }
    assert_non_null(c);
    assert_int_equal(mb_client_listen(c, ev_listener, &EV, NULL), MB_OK);

    mb_sub_id id = 0;
    mb_err_clear(&err);
    st = mb_client_subscribe(c, "events.game_tick", NULL, rec_handler, &r, &id, &err);
    if (st != MB_OK) {
        long used = mb__alloc_count();
        mb__alloc_fail_after(-1);
        if (st != MB_ENOMEM)
            fail_msg("fail_after %ld: subscribe: %s: %s", n, mb_status_name(st), err.msg);
        assert_int_equal(id, 0);
        ts->enomem[1]++;
        assert_int_equal(
            mb_client_subscribe(c, "events.game_tick", NULL, rec_handler, &r, &id, NULL), MB_OK);
        assert_int_equal(mb_client_unsubscribe(c, id, NULL), MB_OK);
        mb_client_destroy(c);
        return used;
    }
    /* The subscription reaches the server before the publish (both pool
     * connections are flushed, whichever each one went through). */
    assert_int_equal(mb_client_flush(c, 2000, NULL), MB_OK);

    char buf[256];
    event_json(buf, sizeof buf, 1);
    mb_publish_disposition d = MB_PUB_DROPPED;
    long before = 0; /* allocations counted before a re-arm */
    mb_err_clear(&err);
    st = mb_client_publish(c, "events.game_tick", buf, strlen(buf), NULL, &d, &err);
    if (st == MB_ENOMEM) { /* validation ran out of memory: refused, nothing sent */
        assert_int_equal(d, MB_PUB_REFUSED);
        ts->enomem[2]++;
        before += mb__alloc_count();
        mb__alloc_fail_after(-1);
        assert_int_equal(mb_client_publish(c, "events.game_tick", buf, strlen(buf), NULL, &d, NULL),
                         MB_OK);
        mb__alloc_fail_after(0); /* past the failure point: every allocation fails again */
    } else if (st != MB_OK) {
        fail_msg("fail_after %ld: publish: %s: %s", n, mb_status_name(st), err.msg);
    } else {
        assert_int_equal(d, MB_PUB_SENT);
    }
    /* Delivered, or (its validation out of memory) dropped with an event. */
    uint64_t end = now_ms() + 5000;
    while (atomic_load(&r.count) < 1 && ev_count(MB_CLIENT_EV_DROPPED) < 1 && now_ms() < end)
        sleep_ms(2);
    if (atomic_load(&r.count) < 1) {
        if (ev_count(MB_CLIENT_EV_DROPPED) < 1)
            fail_msg("fail_after %ld: the message was neither delivered nor dropped", n);
        ts->enomem[3]++;
    }
    mb_err_clear(&err);
    st = mb_client_unsubscribe(c, id, &err);
    if (st != MB_OK)
        fail_msg("fail_after %ld: unsubscribe: %s: %s", n, mb_status_name(st), err.msg);
    mb_client_destroy(c);
    long used = before + mb__alloc_count();
    mb__alloc_fail_after(-1);
    return used;
}

static int torture_teardown(void **state)
{
    mb__alloc_fail_after(-1);
    return teardown(state);
}

static void test_alloc_torture(void **state)
{
    (void)state;
    start_server(NULL);
    torture_stats ts = {0};
    /* A clean run first: how many allocations create and the whole run make. */
    long create_allocs = 0;
    long total = torture_run(-1, &ts, &create_allocs);
    ts.create_points = create_allocs;
    assert_true(create_allocs > 0);
    assert_int_equal(ts.enomem[0] + ts.enomem[1] + ts.enomem[2] + ts.enomem[3], 0);
    uint64_t t0 = now_ms();
    long n = 0;
    for (;;) {
        long used = torture_run(n, &ts, NULL);
        ts.runs++;
        if (used <= n)
            break; /* completed without meeting the failure */
        assert_true(n < 100000);
        n++;
    }
    ts.points = n;
    fprintf(stderr,
            "  alloc torture: %ld failure points (%ld in create, clean run %ld), %ld runs "
            "in %llu ms; MB_ENOMEM from create %ld, subscribe %ld, publish %ld; "
            "deliveries dropped %ld\n",
            ts.points, ts.create_points, total, ts.runs, (unsigned long long)(now_ms() - t0),
            ts.enomem[0], ts.enomem[1], ts.enomem[2], ts.enomem[3]);
    assert_true(ts.enomem[0] >= 1);
}

/* The publish-retry path under the hook: a client with no server
 * (start_disconnected) is created with the hook disarmed, then, with the n-th
 * allocation failing, one publish fails its first attempt (MB_ENOCONN) and is
 * copied into a retry record (MB_PUB_RETRYING) or, when that copy cannot be
 * made, dropped at once (MB_PUB_DROPPED: no DLQ here); either way exactly
 * that message ends up reported by one MB_CLIENT_EV_DROPPED event (its
 * retries run out quickly), and destroy frees everything. */
static void test_alloc_torture_retry(void **state)
{
    (void)state;
    start_server(NULL);
    char url[64];
    snprintf(url, sizeof url, "%s", natsrv_url(F.srv));
    assert_int_equal(natsrv_stop(F.srv), 0);
    mb_client_opts o;
    torture_opts(&o, url);
    o.connect_timeout_ms = 300;
    o.start_disconnected = true;
    o.retry.max_attempts = 3;
    o.retry.base_delay_ms = 5;
    o.retry.max_delay_ms = 20;
    char buf[256];
    event_json(buf, sizeof buf, 1);
    long n = 0, retrying = 0, dropped_at_once = 0;
    for (;; n++) {
        assert_true(n < 1000);
        pthread_mutex_lock(&EV.lock);
        memset(EV.by_type, 0, sizeof EV.by_type);
        pthread_mutex_unlock(&EV.lock);
        mb_client *c = NULL;
        assert_int_equal(mb_client_create(&o, &c, NULL), MB_OK);
        assert_int_equal(mb_client_listen(c, ev_listener, &EV, NULL), MB_OK);
        mb__alloc_fail_after(n);
        mb_publish_disposition d = MB_PUB_SENT;
        mb_err err = {0};
        mb_status st = mb_client_publish(c, "events.game_tick", buf, strlen(buf), NULL, &d, &err);
        if (st != MB_ENOCONN)
            fail_msg("fail_after %ld: publish: %s: %s", n, mb_status_name(st), err.msg);
        if (d == MB_PUB_RETRYING)
            retrying++;
        else if (d == MB_PUB_DROPPED)
            dropped_at_once++;
        else
            fail_msg("fail_after %ld: publish disposition %d", n, (int)d);
        assert_true(wait_event(MB_CLIENT_EV_DROPPED, 1, 5000));
        mb_client_destroy(c);
        long used = mb__alloc_count();
        mb__alloc_fail_after(-1);
        assert_int_equal(ev_count(MB_CLIENT_EV_DROPPED), 1);
        if (used <= n)
            break;
    }
    fprintf(stderr,
            "  alloc torture (publish retry): %ld failure points; dropped at once %ld, "
            "retried %ld\n",
            n, dropped_at_once, retrying);
    assert_true(dropped_at_once >= 1);
    assert_true(retrying >= 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_options),
        cmocka_unit_test_setup_teardown(test_roundtrip_validation_dlq, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ordering_pool4, setup, teardown),
        cmocka_unit_test_setup_teardown(test_request_reply, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_echo, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unsubscribe, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unsubscribe_under_flow, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_group, setup, teardown),
        cmocka_unit_test_setup_teardown(test_poll_mode, setup, teardown),
        cmocka_unit_test_setup_teardown(test_partial_pool_repair, setup, teardown),
        cmocka_unit_test_setup_teardown(test_restart_retries_accounted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exhausted_to_dlq, setup, teardown),
        cmocka_unit_test_setup_teardown(test_freeze_degraded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_slow_consumer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_event_lame_duck, setup, teardown),
        cmocka_unit_test_setup_teardown(test_event_closed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_event_error, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_server, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retry_queue_full_refunds_budget, setup, teardown),
        cmocka_unit_test_setup_teardown(test_auth_failure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_alloc_torture, setup, torture_teardown),
        cmocka_unit_test_setup_teardown(test_alloc_torture_retry, setup, torture_teardown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    nats_Close();
    return rc;
}
