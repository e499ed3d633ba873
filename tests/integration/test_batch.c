/* SPDX-License-Identifier: MIT */
/*
 * Integration tests of mb_batch against a real nats-server (tests/support
 * natsrv): flushes on size, bytes, delay (system and manual clock) and on
 * request; per-subject order; the total bounds ("would block") and their
 * release; refusal of invalid messages at add; flush on destroy; failed
 * publishes dead-lettered by the client; and many threads adding while
 * flushes run, every message delivered exactly once. Every wait polls a
 * condition with a deadline; the only fixed sleeps check that something
 * does NOT happen early.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <nats/nats.h>

#include "mudbus/batch.h"
#include "mudbus/client.h"
#include "natsrv.h"
#include "testutil.h"

/* ---- helpers ---- */

/* An event message whose event_data carries the adding thread and a
 * sequence number; the message_id is unique per (thread, sequence). */
static size_t event_json(char *buf, size_t cap, int t, int n)
{
    int k = snprintf(buf, cap,
                     "{\"message_id\":\"t%d_%d\",\"timestamp\":\"2026-01-13T10:00:00Z\","
                     "\"event_type\":\"tick\",\"event_data\":{\"t\":%d,\"n\":%d}}",
                     t, n, t, n);
    return (size_t)k;
}

static int field(const char *data, const char *key)
{
    const char *p = strstr(data, key);
    return p ? atoi(p + strlen(key)) : -1;
}

#define MAXSEQ 4096
/* Records one subscription's deliveries in arrival order. */
typedef struct rec {
    _Atomic int count;
    int seq[MAXSEQ];
} rec;

static mb_handled rec_handler(void *ctx, const mb_msg *m)
{
    rec *r = ctx;
    int n = atomic_load(&r->count);
    if (n < MAXSEQ)
        r->seq[n] = field(m->data, "\"n\":");
    atomic_store(&r->count, n + 1); /* one subscription: one handler thread */
    return MB_HANDLED_OK;
}

typedef struct fixture {
    natsrv *srv;
    mb_client *c;
    mb_dlq *dlq;
    mb_batch *b;
    mb_metrics *metrics;
    mb_manual_clock *mclock;
    char dlqdir[64];
} fixture;

static fixture F;

static int setup(void **state)
{
    (void)state;
    memset(&F, 0, sizeof F);
    snprintf(F.dlqdir, sizeof F.dlqdir, "/tmp/mbbatch-dlq-XXXXXX");
    if (!mkdtemp(F.dlqdir))
        return -1;
    mb_dlq_opts dopts = {.create = true};
    if (mb_dlq_open(F.dlqdir, &dopts, &F.dlq, NULL) != MB_OK)
        return -1;
    if (mb_metrics_create(&F.metrics, NULL) != MB_OK)
        return -1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    mb_batch_destroy(F.b);
    F.b = NULL;
    mb_client_destroy(F.c);
    F.c = NULL;
    mb_dlq_close(F.dlq, NULL);
    mb_metrics_destroy(F.metrics);
    mb_manual_clock_destroy(F.mclock);
    natsrv_destroy(F.srv);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", F.dlqdir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", F.dlqdir);
    return 0;
}

static void start_client(void (*tweak)(mb_client_opts *))
{
    assert_int_equal(natsrv_start(NULL, &F.srv), 0);
    mb_client_opts o;
    mb_client_opts_default(&o);
    o.servers[0] = natsrv_url(F.srv);
    o.name = "batchtest";
    o.reconnect_wait_ms = 100;
    o.reconnect_jitter_ms = 20;
    o.connect_timeout_ms = 1000;
    o.dlq = F.dlq;
    if (tweak)
        tweak(&o);
    mb_err err = {0};
    mb_status st = mb_client_create(&o, &F.c, &err);
    if (st != MB_OK)
        fail_msg("mb_client_create: %s: %s", mb_status_name(st), err.msg);
}

static void create_batch(mb_batch_opts *o)
{
    o->metrics = F.metrics;
    mb_err err = {0};
    mb_status st = mb_batch_create(F.c, o, &F.b, &err);
    if (st != MB_OK)
        fail_msg("mb_batch_create: %s: %s", mb_status_name(st), err.msg);
}

static void subscribe(const char *subject, rec *r)
{
    memset(r, 0, sizeof *r);
    assert_int_equal(mb_client_subscribe(F.c, subject, NULL, rec_handler, r, NULL, NULL), MB_OK);
    assert_int_equal(mb_client_flush(F.c, 2000, NULL), MB_OK);
}

static mb_status add_event(const char *subject, int t, int n, mb_err *err)
{
    char buf[256];
    size_t len = event_json(buf, sizeof buf, t, n);
    return mb_batch_add(F.b, subject, buf, len, err);
}

/* Adds, and on MB_EAGAIN (the caller's decision) tries again shortly. */
static void add_event_patient(const char *subject, int t, int n)
{
    uint64_t end = now_ms() + 10000;
    for (;;) {
        mb_err err = {0};
        mb_status st = add_event(subject, t, n, &err);
        if (st == MB_OK)
            return;
        if (st != MB_EAGAIN || now_ms() > end)
            fail_msg("mb_batch_add: %s: %s", mb_status_name(st), err.msg);
        struct timespec ts = {0, 200000};
        nanosleep(&ts, NULL);
    }
}

static bool metric_find(const char *needle, bool want)
{
    char *text = NULL;
    assert_int_equal(mb_metrics_format(F.metrics, &text, NULL, NULL), MB_OK);
    bool found = strstr(text, needle) != NULL;
    if (found != want)
        fprintf(stderr, "metric %s: %s\n%s", want ? "not found" : "found", needle, text);
    free(text);
    return found == want;
}

static bool metric_has(const char *needle)
{
    return metric_find(needle, true);
}

static bool metric_lacks(const char *needle)
{
    return metric_find(needle, false);
}

/* ---- tests ---- */

static void test_flush_on_size(void **state)
{
    (void)state;
    start_client(NULL);
    rec r;
    subscribe("events.game_tick", &r);
    mb_batch_opts o;
    mb_batch_opts_default(&o);
    o.max_messages = 10;
    o.max_delay_ms = 600000; /* the delay never triggers here */
    create_batch(&o);
    for (int i = 0; i < 9; i++)
        assert_int_equal(add_event("events.game_tick", 0, i, NULL), MB_OK);
    sleep_ms(100); /* negative check: 9 < max_messages stay held */
    assert_int_equal(atomic_load(&r.count), 0);
    mb_batch_stats s;
    mb_batch_stats_get(F.b, &s);
    assert_int_equal(s.pending_messages, 9);
    assert_int_equal(s.flushes, 0);
    assert_int_equal(add_event("events.game_tick", 0, 9, NULL), MB_OK);
    assert_true(wait_count(&r.count, 10, 10000));
    for (int i = 0; i < 10; i++)
        assert_int_equal(r.seq[i], i);
    mb_batch_stats_get(F.b, &s);
    assert_int_equal(s.flushes, 1);
    assert_int_equal(s.sent, 10);
    assert_int_equal(s.pending_messages, 0);
    assert_true(metric_has("mudbus_batch_flushes_total{reason=\"size\"} 1\n"));
    assert_true(metric_has("mudbus_batch_messages_total{disposition=\"sent\"} 10\n"));
    assert_true(metric_has("mudbus_batch_flush_seconds_count 1\n"));
    /* A burst is flushed in batches of exactly max_messages: a size-triggered
     * flush takes max_messages and leaves the rest for the next trigger, so
     * 40 messages need 4 flushes, all by the flusher thread (with 35, the
     * last 5 would rightly wait for the delay). */
    for (int i = 10; i < 50; i++)
        assert_int_equal(add_event("events.game_tick", 0, i, NULL), MB_OK);
    assert_true(wait_count(&r.count, 50, 10000));
    for (int i = 10; i < 50; i++)
        assert_int_equal(r.seq[i], i);
    mb_batch_stats_get(F.b, &s);
    assert_true(s.flushes >= 1 + 4);
    assert_true(metric_has("mudbus_batch_flushes_total{reason=\"explicit\"} 0\n"));
}

static void test_flush_on_bytes(void **state)
{
    (void)state;
    start_client(NULL);
    rec r;
    subscribe("events.player_entered.hall", &r);
    char buf[256];
    size_t len = event_json(buf, sizeof buf, 0, 0);
    mb_batch_opts o;
    mb_batch_opts_default(&o);
    o.max_messages = 1000;
    o.max_bytes = 3 * len - 5; /* the third message reaches it */
    o.max_delay_ms = 600000;
    create_batch(&o);
    assert_int_equal(add_event("events.player_entered.hall", 0, 0, NULL), MB_OK);
    assert_int_equal(add_event("events.player_entered.hall", 0, 1, NULL), MB_OK);
    sleep_ms(100); /* negative check */
    assert_int_equal(atomic_load(&r.count), 0);
    assert_int_equal(add_event("events.player_entered.hall", 0, 2, NULL), MB_OK);
    assert_true(wait_count(&r.count, 3, 10000));
    mb_batch_stats s;
    mb_batch_stats_get(F.b, &s);
    assert_int_equal(s.flushes, 1);
    assert_true(s.flushed_bytes >= 3 * len - 5);
    assert_true(metric_has("mudbus_batch_flushes_total{reason=\"size\"} 1\n"));
}

static void test_flush_on_delay(void **state)
{
    (void)state;
    start_client(NULL);
    rec r;
    subscribe("events.game_tick", &r);
    mb_batch_opts o;
    mb_batch_opts_default(&o);
    o.max_delay_ms = 20;
    create_batch(&o);
    uint64_t t0 = now_ms();
    assert_int_equal(add_event("events.game_tick", 0, 1, NULL), MB_OK);
    assert_true(wait_count(&r.count, 1, 10000));
    uint64_t took = now_ms() - t0;
    assert_true(took >= 20);  /* not before its delay */
    assert_true(took < 3000); /* max_delay plus a margin for a loaded machine */
    assert_true(metric_has("mudbus_batch_flushes_total{reason=\"delay\"} 1\n"));
    /* Twice more: the flusher sleeps untimed in between and is woken. */
    for (int k = 2; k <= 3; k++) {
        sleep_ms(30);
        t0 = now_ms();
        assert_int_equal(add_event("events.game_tick", 0, k, NULL), MB_OK);
        assert_true(wait_count(&r.count, k, 10000));
        assert_true(now_ms() - t0 < 3000);
    }
}

static void test_flush_on_delay_manual_clock(void **state)
{
    (void)state;
    start_client(NULL);
    rec r;
    subscribe("events.game_tick", &r);
    assert_int_equal(mb_manual_clock_create(1000000000u, 1000000000u, &F.mclock, NULL), MB_OK);
    mb_batch_opts o;
    mb_batch_opts_default(&o);
    o.max_delay_ms = 30;
    o.clock = mb_manual_clock_get(F.mclock);
    create_batch(&o);
    assert_int_equal(add_event("events.game_tick", 0, 1, NULL), MB_OK);
    sleep_ms(150); /* real time passes, the batch's clock does not */
    assert_int_equal(atomic_load(&r.count), 0);
    mb_manual_clock_advance(F.mclock, 29u * 1000000u);
    sleep_ms(100);
    assert_int_equal(atomic_load(&r.count), 0);
    mb_manual_clock_advance(F.mclock, 1u * 1000000u);
    assert_true(wait_count(&r.count, 1, 10000));
}

static void test_explicit_flush(void **state)
{
    (void)state;
    start_client(NULL);
    rec a, c;
    subscribe("events.player_entered.a", &a);
    subscribe("events.player_left.c", &c);
    mb_batch_opts o;
    mb_batch_opts_default(&o);
    o.max_delay_ms = 600000;
    create_batch(&o);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(add_event("events.player_entered.a", 0, i, NULL), MB_OK);
        assert_int_equal(add_event("events.player_left.c", 0, i, NULL), MB_OK);
    }
    assert_int_equal(mb_batch_flush(F.b, 3000, NULL), MB_OK);
    mb_batch_stats s;
    mb_batch_stats_get(F.b, &s);
    assert_int_equal(s.pending_messages, 0);
    assert_int_equal(s.pending_bytes, 0);
    assert_int_equal(s.flushes, 2);
    assert_int_equal(s.sent, 10);
    assert_true(wait_count(&a.count, 5, 10000));
    assert_true(wait_count(&c.count, 5, 10000));
    assert_true(metric_has("mudbus_batch_flushes_total{reason=\"explicit\"} 2\n"));
    /* Flushing with nothing pending is fine. */
    assert_int_equal(mb_batch_flush(F.b, 1000, NULL), MB_OK);
}

static void test_order_per_subject(void **state)
{
    (void)state;
    start_client(NULL);
    static const char *subjects[4] = {"events.player_entered.a", "events.player_entered.b",
                                      "events.player_left.c", "events.game_tick"};
    static rec r[4];
    for (int s = 0; s < 4; s++)
        subscribe(subjects[s], &r[s]);
    mb_batch_opts o;
    mb_batch_opts_default(&o);
    o.max_messages = 37; /* flushes of all kinds: size, delay */
    create_batch(&o);
    const int N = 1000;
    for (int i = 0; i < N; i++) {
        for (int s = 0; s < 4; s++)
            add_event_patient(subjects[s], 0, i);
        if (i == N / 2) /* at least two batches per subject, whatever the scheduler does */
            assert_int_equal(mb_batch_flush(F.b, 5000, NULL), MB_OK);
    }
    assert_int_equal(mb_batch_flush(F.b, 5000, NULL), MB_OK);
    for (int s = 0; s < 4; s++) {
        assert_true(wait_count(&r[s].count, N, 5000));
        for (int i = 0; i < N; i++)
            assert_int_equal(r[s].seq[i], i);
    }
    mb_batch_stats s;
    mb_batch_stats_get(F.b, &s);
    assert_int_equal(s.sent, 4 * N);
    assert_true(s.flushes >= 8); /* several batches per subject */
}

static void test_would_block(void **state)
{
    (void)state;
    start_client(NULL);
    rec r;
    subscribe("events.game_tick", &r);
    char buf[256];
    size_t len = event_json(buf, sizeof buf, 0, 0);
    mb_batch_opts o;
    mb_batch_opts_default(&o);
    o.total_max_messages = 20;
    o.max_delay_ms = 600000;
    create_batch(&o);
    for (int i = 0; i < 20; i++)
        assert_int_equal(add_event("events.game_tick", 0, i, NULL), MB_OK);
    mb_err err = {0};
    assert_int_equal(add_event("events.game_tick", 0, 20, &err), MB_EAGAIN);
    assert_non_null(strstr(err.msg, "batch full"));
    mb_batch_stats s;
    mb_batch_stats_get(F.b, &s);
    assert_int_equal(s.would_block, 1);
    assert_int_equal(s.added, 20);
    /* The caller decides: here, flush and add again. */
    assert_int_equal(mb_batch_flush(F.b, 3000, NULL), MB_OK);
    mb_batch_stats_get(F.b, &s);
    assert_int_equal(s.pending_messages, 0);
    assert_int_equal(add_event("events.game_tick", 0, 20, NULL), MB_OK);
    assert_int_equal(mb_batch_flush(F.b, 3000, NULL), MB_OK);
    assert_true(wait_count(&r.count, 21, 10000));
    for (int i = 0; i < 21; i++)
        assert_int_equal(r.seq[i], i); /* the refused one was not kept */
    assert_true(metric_has("mudbus_batch_would_block_total 1\n"));

    /* The byte bound likewise, in a second batch (labelled metrics). */
    mb_batch *b2 = NULL;
    mb_batch_opts_default(&o);
    o.total_max_bytes = 2 * len + len / 2;
    o.max_delay_ms = 600000;
    o.metrics = F.metrics;
    o.labels = "batch=\"second\"";
    assert_int_equal(mb_batch_create(F.c, &o, &b2, NULL), MB_OK);
    assert_int_equal(mb_batch_add(b2, "events.game_tick", buf, len, NULL), MB_OK);
    assert_int_equal(mb_batch_add(b2, "events.game_tick", buf, len, NULL), MB_OK);
    assert_int_equal(mb_batch_add(b2, "events.game_tick", buf, len, NULL), MB_EAGAIN);
    /* The flusher was asked to make room: adding works again soon. */
    uint64_t end = now_ms() + 3000;
    mb_status st;
    while ((st = mb_batch_add(b2, "events.game_tick", buf, len, NULL)) == MB_EAGAIN &&
           now_ms() < end)
        sleep_ms(2);
    assert_int_equal(st, MB_OK);
    /* A message that could never fit is not "would block". */
    char *big = malloc(o.total_max_bytes + 1);
    assert_non_null(big);
    memset(big, ' ', o.total_max_bytes + 1);
    assert_int_equal(mb_batch_add(b2, "events.game_tick", big, o.total_max_bytes + 1, NULL),
                     MB_ETOOBIG);
    free(big);
    /* At least one "full" flush made the room (more "would block" may have
     * happened before it ended). */
    assert_true(metric_lacks("mudbus_batch_would_block_total{batch=\"second\"} 0\n"));
    assert_true(metric_lacks("mudbus_batch_flushes_total{batch=\"second\",reason=\"full\"} 0\n"));
    mb_batch_destroy(b2);
    assert_true(wait_count(&r.count, 24, 10000));
    /* A second batch with the same (no) labels in one registry is refused. */
    mb_batch_opts_default(&o);
    o.metrics = F.metrics;
    assert_int_equal(mb_batch_create(F.c, &o, &b2, NULL), MB_EEXIST);
    assert_null(b2);
}

#define CT_THREADS    4
#define CT_PER_THREAD 5000
static const char *ct_subjects[4] = {"events.player_entered.a", "events.player_entered.b",
                                     "events.player_left.c", "events.game_tick"};

typedef struct ct_state {
    pthread_mutex_t lock;
    unsigned char seen[CT_THREADS][CT_PER_THREAD];
    int last[CT_THREADS][4]; /* last n per (thread, subject) */
    int order_violations;
    int bad;
    _Atomic int thread_errors; /* cmocka asserts only on the test's thread */
    _Atomic int delivered;
    _Atomic int adders_done;
} ct_state;

static ct_state CT;

static mb_handled ct_handler(void *ctx, const mb_msg *m)
{
    int s = (int)(intptr_t)ctx;
    int t = field(m->data, "\"t\":"), n = field(m->data, "\"n\":");
    int idt = -1, idn = -1;
    if (sscanf(m->data, "{\"message_id\":\"t%d_%d\"", &idt, &idn) != 2 || idt != t || idn != n)
        idt = -1;
    pthread_mutex_lock(&CT.lock);
    if (idt < 0 || t < 0 || t >= CT_THREADS || n < 0 || n >= CT_PER_THREAD || n % 4 != s) {
        CT.bad++;
    } else {
        if (CT.seen[t][n] < 255)
            CT.seen[t][n]++;
        if (n <= CT.last[t][s])
            CT.order_violations++;
        CT.last[t][s] = n;
    }
    pthread_mutex_unlock(&CT.lock);
    atomic_fetch_add(&CT.delivered, 1);
    return MB_HANDLED_OK;
}

static void *ct_adder(void *arg)
{
    int t = (int)(intptr_t)arg;
    uint64_t end = now_ms() + 30000;
    for (int i = 0; i < CT_PER_THREAD; i++) {
        mb_status st;
        /* On "would block" this caller's decision is to try again soon. */
        while ((st = add_event(ct_subjects[i % 4], t, i, NULL)) == MB_EAGAIN && now_ms() < end) {
            struct timespec ts = {0, 100000};
            nanosleep(&ts, NULL);
        }
        if (st != MB_OK)
            atomic_fetch_add(&CT.thread_errors, 1);
    }
    atomic_fetch_add(&CT.adders_done, 1);
    return NULL;
}

static void *ct_flusher(void *arg)
{
    (void)arg;
    while (atomic_load(&CT.adders_done) < CT_THREADS) {
        if (mb_batch_flush(F.b, 2000, NULL) != MB_OK)
            atomic_fetch_add(&CT.thread_errors, 1);
        struct timespec ts = {0, 500000};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

static void test_concurrent_adds_during_flushes(void **state)
{
    (void)state;
    start_client(NULL);
    memset(&CT, 0, sizeof CT);
    pthread_mutex_init(&CT.lock, NULL);
    for (int t = 0; t < CT_THREADS; t++)
        for (int s = 0; s < 4; s++)
            CT.last[t][s] = -1;
    for (int s = 0; s < 4; s++)
        assert_int_equal(mb_client_subscribe(F.c, ct_subjects[s], NULL, ct_handler,
                                             (void *)(intptr_t)s, NULL, NULL),
                         MB_OK);
    assert_int_equal(mb_client_flush(F.c, 2000, NULL), MB_OK);
    mb_batch_opts o;
    mb_batch_opts_default(&o);
    o.max_messages = 7; /* many small flushes */
    o.max_delay_ms = 1;
    o.total_max_messages = 300; /* and some "would block" */
    create_batch(&o);
    pthread_t adders[CT_THREADS], flusher;
    for (int t = 0; t < CT_THREADS; t++)
        assert_int_equal(pthread_create(&adders[t], NULL, ct_adder, (void *)(intptr_t)t), 0);
    assert_int_equal(pthread_create(&flusher, NULL, ct_flusher, NULL), 0);
    for (int t = 0; t < CT_THREADS; t++)
        pthread_join(adders[t], NULL);
    pthread_join(flusher, NULL);
    assert_int_equal(atomic_load(&CT.thread_errors), 0);
    assert_int_equal(mb_batch_flush(F.b, 10000, NULL), MB_OK);
    const int total = CT_THREADS * CT_PER_THREAD;
    assert_true(wait_count(&CT.delivered, total, 20000));
    sleep_ms(100); /* negative check: no duplicate arrives late */
    assert_int_equal(atomic_load(&CT.delivered), total);
    pthread_mutex_lock(&CT.lock);
    int missing = 0, dup = 0;
    for (int t = 0; t < CT_THREADS; t++)
        for (int i = 0; i < CT_PER_THREAD; i++) {
            missing += CT.seen[t][i] == 0;
            dup += CT.seen[t][i] > 1;
        }
    int violations = CT.order_violations, bad = CT.bad;
    pthread_mutex_unlock(&CT.lock);
    assert_int_equal(missing, 0);
    assert_int_equal(dup, 0);
    assert_int_equal(bad, 0);
    assert_int_equal(violations, 0);
    mb_batch_stats s;
    mb_batch_stats_get(F.b, &s);
    assert_int_equal(s.added, total);
    assert_int_equal(s.sent, total);
    assert_int_equal(s.pending_messages, 0);
    assert_true(s.flushes >= 1000); /* many flushes ran while threads added */
    if (getenv("MB_TEST_VERBOSE"))
        fprintf(stderr, "  concurrent: %llu flushes, %llu would-block\n",
                (unsigned long long)s.flushes, (unsigned long long)s.would_block);
    pthread_mutex_destroy(&CT.lock);
}

static void test_invalid_refused_at_add(void **state)
{
    (void)state;
    start_client(NULL);
    rec r;
    subscribe("chat.say.room.*", &r);
    mb_batch_opts o;
    mb_batch_opts_default(&o);
    o.max_delay_ms = 600000;
    o.max_payload = 1024;
    create_batch(&o);
    mb_err err = {0};
    const char *bad = "{\"message_id\":\"x\",\"content\":\"no sender\"}";
    assert_int_equal(mb_batch_add(F.b, "chat.say.room.r1", bad, strlen(bad), &err), MB_ESCHEMA);
    assert_true(err.msg[0] != '\0');
    assert_int_equal(mb_batch_add(F.b, "chat.say.room.r1", "not json", 8, NULL), MB_EJSON);
    assert_int_equal(mb_batch_add(F.b, "chat.nope", "{}", 2, NULL), MB_ESUBJECT);
    assert_int_equal(mb_batch_add(F.b, "chat.say.room.*", "{}", 2, NULL), MB_ESUBJECT);
    char *big = malloc(2000);
    assert_non_null(big);
    memset(big, ' ', 2000);
    assert_int_equal(mb_batch_add(F.b, "chat.say.room.r1", big, 2000, NULL), MB_ETOOBIG);
    free(big);
    assert_int_equal(mb_batch_add(F.b, "chat.say.room.r1", NULL, 3, NULL), MB_EINVAL);
    mb_batch_stats s;
    mb_batch_stats_get(F.b, &s);
    assert_int_equal(s.add_refused, 5);
    assert_int_equal(s.pending_messages, 0);
    const char *good = "{\"message_id\":\"g1\",\"timestamp\":\"2026-01-13T10:00:00Z\","
                       "\"sender_id\":\"p1\",\"sender_name\":\"Armitage\",\"channel\":\"say\","
                       "\"content\":\"hello\",\"room_id\":\"r1\"}";
    assert_int_equal(mb_batch_add(F.b, "chat.say.room.r1", good, strlen(good), &err), MB_OK);
    assert_int_equal(mb_batch_flush(F.b, 3000, NULL), MB_OK);
    assert_true(wait_count(&r.count, 1, 10000));
    sleep_ms(50); /* negative check: nothing else arrives */
    assert_int_equal(atomic_load(&r.count), 1);
    mb_batch_stats_get(F.b, &s);
    assert_int_equal(s.sent, 1);
    assert_int_equal(s.refused, 0);
    assert_true(metric_has("mudbus_batch_add_refused_total 5\n"));
}

static void test_destroy_flushes_pending(void **state)
{
    (void)state;
    start_client(NULL);
    rec a, b;
    subscribe("events.player_entered.a", &a);
    subscribe("events.player_entered.b", &b);
    mb_batch_opts o;
    mb_batch_opts_default(&o);
    o.max_delay_ms = 600000;
    create_batch(&o);
    for (int i = 0; i < 30; i++)
        assert_int_equal(add_event("events.player_entered.a", 0, i, NULL), MB_OK);
    for (int i = 0; i < 20; i++)
        assert_int_equal(add_event("events.player_entered.b", 0, i, NULL), MB_OK);
    assert_int_equal(atomic_load(&a.count), 0);
    mb_batch_destroy(F.b);
    F.b = NULL;
    assert_true(wait_count(&a.count, 30, 10000));
    assert_true(wait_count(&b.count, 20, 10000));
    for (int i = 0; i < 30; i++)
        assert_int_equal(a.seq[i], i);
    mb_batch_destroy(NULL);
}

static void patient_off(mb_client_opts *o)
{
    o->pool_size = 1;
    o->retry.max_attempts = 3;
    o->retry.base_delay_ms = 10;
    o->retry.max_delay_ms = 20;
}

static bool state_is(mb_conn_state want)
{
    mb_client_health h;
    mb_client_health_get(F.c, &h);
    return h.state == want;
}

static void test_failed_publishes_dead_lettered(void **state)
{
    (void)state;
    start_client(patient_off);
    mb_batch_opts o;
    mb_batch_opts_default(&o);
    o.max_delay_ms = 600000;
    create_batch(&o);
    assert_int_equal(natsrv_stop(F.srv), 0);
    uint64_t end = now_ms() + 5000;
    while (!state_is(MB_CONN_RECONNECTING) && now_ms() < end)
        sleep_ms(5);
    assert_true(state_is(MB_CONN_RECONNECTING));
    for (int i = 0; i < 5; i++)
        assert_int_equal(add_event("events.game_tick", 0, i, NULL), MB_OK);
    /* The messages are handed to the client, which cannot send them now
     * (whatever mb_client_flush says with no live connection). */
    (void)mb_batch_flush(F.b, 500, NULL);
    mb_batch_stats s;
    mb_batch_stats_get(F.b, &s);
    assert_int_equal(s.pending_messages, 0);
    assert_int_equal(s.retrying + s.dead_lettered + s.dropped, 5);
    assert_int_equal(s.sent, 0);
    assert_int_equal(s.last_error, MB_ENOCONN);
    assert_non_null(strstr(s.last_error_msg, "events.game_tick"));
    /* The client's retries run out: every message ends in the DLQ. */
    end = now_ms() + 5000;
    mb_dlq_stats ds;
    do {
        mb_dlq_flush(F.dlq, NULL);
        mb_dlq_stats_get(F.dlq, &ds);
        if (ds.depth >= 5)
            break;
        sleep_ms(10);
    } while (now_ms() < end);
    assert_int_equal(ds.depth, 5);
}

static void test_bad_options(void **state)
{
    (void)state;
    start_client(NULL);
    mb_batch_opts o;
    mb_batch *b = NULL;
    mb_batch_opts_default(&o);
    assert_int_equal(mb_batch_create(NULL, &o, &b, NULL), MB_EINVAL);
    assert_int_equal(mb_batch_create(F.c, &o, NULL, NULL), MB_EINVAL);
    o.total_max_bytes = (size_t)MB_BATCH_MAX_TOTAL_BYTES + 1;
    assert_int_equal(mb_batch_create(F.c, &o, &b, NULL), MB_EINVAL);
    mb_batch_opts_default(&o);
    o.max_delay_ms = MB_BATCH_MAX_DELAY_MS + 1;
    assert_int_equal(mb_batch_create(F.c, &o, &b, NULL), MB_EINVAL);
    assert_null(b);
    /* NULL opts: defaults, private metrics. */
    assert_int_equal(mb_batch_create(F.c, NULL, &b, NULL), MB_OK);
    assert_int_equal(mb_batch_add(NULL, "events.game_tick", "{}", 2, NULL), MB_EINVAL);
    assert_int_equal(mb_batch_flush(NULL, 10, NULL), MB_EINVAL);
    mb_batch_destroy(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_bad_options, setup, teardown),
        cmocka_unit_test_setup_teardown(test_flush_on_size, setup, teardown),
        cmocka_unit_test_setup_teardown(test_flush_on_bytes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_flush_on_delay, setup, teardown),
        cmocka_unit_test_setup_teardown(test_flush_on_delay_manual_clock, setup, teardown),
        cmocka_unit_test_setup_teardown(test_explicit_flush, setup, teardown),
        cmocka_unit_test_setup_teardown(test_order_per_subject, setup, teardown),
        cmocka_unit_test_setup_teardown(test_would_block, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_adds_during_flushes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invalid_refused_at_add, setup, teardown),
        cmocka_unit_test_setup_teardown(test_destroy_flushes_pending, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_publishes_dead_lettered, setup, teardown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    nats_Close();
    return rc;
}
