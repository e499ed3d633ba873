/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for timerq: due-time order with FIFO ties, run limits, cancel
 * (including stale ids after slot reuse), the hard capacity, destroy
 * cancelling what is pending exactly once, callbacks that add or cancel
 * timers while the queue runs them, poll() timeouts rounded up, the wake
 * function, metrics, a threaded test (4 producers adding and cancelling
 * 10,000 timers each while a driver runs them) and a randomized comparison
 * against a sorted-array model. Time comes from a manual clock; nothing
 * sleeps.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>

#include <cmocka.h>

#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mudbus/clock.h"
#include "mudbus/metrics.h"
#include "mudbus/timerq.h"

#define MS         UINT64_C(1000000)
#define CLOCK_BASE (UINT64_C(1000) * 1000000000u) /* an arbitrary origin */

/* ---- helpers ---- */

static uint64_t test_rand(uint64_t *s)
{
    /* xorshift64*: the tests' own generator, independent of the library. */
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * UINT64_C(2685821657736338717);
}

static mb_manual_clock *new_clock(void)
{
    mb_manual_clock *mc = NULL;
    assert_int_equal(mb_manual_clock_create(CLOCK_BASE, 0, &mc, NULL), MB_OK);
    return mc;
}

static mb_timerq *new_queue(mb_manual_clock *mc, size_t capacity, mb_metrics *m)
{
    mb_timerq_opts o = {.capacity = capacity, .clock = mb_manual_clock_get(mc), .metrics = m};
    mb_timerq *q = NULL;
    mb_err err = {0};
    assert_int_equal(mb_timerq_create(&o, &q, &err), MB_OK);
    assert_int_equal(err.code, MB_OK);
    assert_non_null(q);
    return q;
}

/* A log of callback invocations, in order. */
#define LOG_MAX 1024

typedef struct rec {
    int tag;
    mb_timer_event ev;
} rec;

typedef struct tlog {
    rec r[LOG_MAX];
    size_t n;
} tlog;

typedef struct ent {
    tlog *log;
    int tag;
} ent;

static void log_cb(void *arg, mb_timer_event ev)
{
    ent *e = arg;
    assert_true(e->log->n < LOG_MAX);
    e->log->r[e->log->n++] = (rec){e->tag, ev};
}

static mb_timer_id add_ok(mb_timerq *q, uint64_t delay_ns, ent *e)
{
    mb_timer_id id = 0;
    assert_int_equal(mb_timerq_add(q, delay_ns, log_cb, e, &id), MB_OK);
    assert_true(id != 0);
    return id;
}

static void expect_log(const tlog *l, const int *tags, size_t n, mb_timer_event ev)
{
    if (l->n != n)
        fail_msg("%zu callbacks ran, expected %zu", l->n, n);
    for (size_t i = 0; i < n; i++) {
        if (l->r[i].tag != tags[i] || l->r[i].ev != ev)
            fail_msg("callback %zu: tag %d event %d, expected tag %d event %d", i, l->r[i].tag,
                     (int)l->r[i].ev, tags[i], (int)ev);
    }
}

static char *expose(mb_metrics *m)
{
    char *text = NULL;
    size_t len = 0;
    assert_int_equal(mb_metrics_format(m, &text, &len, NULL), MB_OK);
    return text;
}

static int has_line(const char *text, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = text; (p = strstr(p, line)) != NULL; p++) {
        if ((p == text || p[-1] == '\n') && (p[n] == '\n' || p[n] == '\0'))
            return 1;
    }
    return 0;
}

/* ---- creation ---- */

static void test_create_and_refusals(void **state)
{
    (void)state;
    mb_timerq *q = NULL;
    mb_err err = {0};
    assert_int_equal(mb_timerq_create(NULL, &q, &err), MB_OK); /* all defaults */
    assert_int_equal(mb_timerq_size(q), 0);
    assert_int_equal(mb_timerq_timeout_ms(q), -1);
    assert_int_equal(mb_timerq_next_due(q), UINT64_MAX);
    mb_timerq_destroy(q);

    assert_int_equal(mb_timerq_create(NULL, NULL, &err), MB_EINVAL);
    mb_err_clear(&err);
    mb_timerq_opts o = {.capacity = ((size_t)1 << 24) + 1};
    q = NULL;
    assert_int_equal(mb_timerq_create(&o, &q, &err), MB_EINVAL);
    assert_int_equal(err.code, MB_EINVAL);
    assert_non_null(strstr(err.msg, "capacity"));
    assert_null(q);
    /* The largest capacity is accepted and costs nothing until used. */
    o.capacity = (size_t)1 << 24;
    assert_int_equal(mb_timerq_create(&o, &q, NULL), MB_OK);
    mb_timerq_destroy(q);
    mb_timerq_destroy(NULL);
}

static void test_add_invalid_arguments(void **state)
{
    (void)state;
    mb_manual_clock *mc = new_clock();
    mb_timerq *q = new_queue(mc, 8, NULL);
    mb_timer_id id = 77;
    assert_int_equal(mb_timerq_add(q, 0, NULL, NULL, &id), MB_EINVAL);
    assert_int_equal(mb_timerq_add(NULL, 0, log_cb, NULL, &id), MB_EINVAL);
    assert_int_equal(id, 77);
    assert_int_equal(mb_timerq_size(q), 0);
    /* id may be NULL. */
    tlog l = {0};
    ent e = {&l, 1};
    assert_int_equal(mb_timerq_add(q, 0, log_cb, &e, NULL), MB_OK);
    assert_int_equal(mb_timerq_run(q, 0), 1);
    assert_int_equal(l.n, 1);
    mb_timerq_destroy(q);
    mb_manual_clock_destroy(mc);
}

/* ---- order ---- */

static void test_order_by_due_time(void **state)
{
    (void)state;
    mb_manual_clock *mc = new_clock();
    mb_timerq *q = new_queue(mc, 64, NULL);
    tlog l = {0};
    ent e[6];
    static const uint64_t delays[6] = {30 * MS, 10 * MS, 50 * MS, 20 * MS, 40 * MS, 1};
    for (int i = 0; i < 6; i++) {
        e[i] = (ent){&l, i};
        add_ok(q, delays[i], &e[i]);
    }
    assert_int_equal(mb_timerq_size(q), 6);
    assert_int_equal(mb_timerq_next_due(q), CLOCK_BASE + 1);
    /* Nothing is due yet. */
    assert_int_equal(mb_timerq_run(q, 0), 0);
    assert_int_equal(l.n, 0);

    mb_manual_clock_advance(mc, 1);
    assert_int_equal(mb_timerq_run(q, 0), 1);
    mb_manual_clock_advance(mc, 25 * MS);
    assert_int_equal(mb_timerq_run(q, 0), 2);
    assert_int_equal(mb_timerq_next_due(q), CLOCK_BASE + 30 * MS);
    mb_manual_clock_advance(mc, 100 * MS);
    assert_int_equal(mb_timerq_run(q, 0), 3);
    static const int want[6] = {5, 1, 3, 0, 4, 2};
    expect_log(&l, want, 6, MB_TIMER_FIRED);
    assert_int_equal(mb_timerq_size(q), 0);
    assert_int_equal(mb_timerq_next_due(q), UINT64_MAX);
    mb_timerq_destroy(q);
    mb_manual_clock_destroy(mc);
}

static void test_fifo_ties(void **state)
{
    (void)state;
    mb_manual_clock *mc = new_clock();
    mb_timerq *q = new_queue(mc, 512, NULL);
    tlog l = {0};
    static ent e[300];
    /* Three groups with identical due times, added interleaved. */
    for (int i = 0; i < 300; i++) {
        e[i] = (ent){&l, i};
        add_ok(q, (uint64_t)(2 - i % 3) * MS, &e[i]);
    }
    mb_manual_clock_advance(mc, 2 * MS);
    assert_int_equal(mb_timerq_run(q, 0), 300);
    int want[300], k = 0;
    for (int g = 2; g >= 0; g--)
        for (int i = g; i < 300; i += 3)
            want[k++] = i;
    expect_log(&l, want, 300, MB_TIMER_FIRED);
    mb_timerq_destroy(q);
    mb_manual_clock_destroy(mc);
}

static void test_run_with_max(void **state)
{
    (void)state;
    mb_manual_clock *mc = new_clock();
    mb_timerq *q = new_queue(mc, 64, NULL);
    tlog l = {0};
    ent e[10];
    for (int i = 0; i < 10; i++) {
        e[i] = (ent){&l, i};
        add_ok(q, (uint64_t)(10 - i), &e[i]);
    }
    mb_manual_clock_advance(mc, 10);
    assert_int_equal(mb_timerq_run(q, 3), 3);
    assert_int_equal(mb_timerq_size(q), 7);
    assert_int_equal(mb_timerq_run(q, 1), 1);
    assert_int_equal(mb_timerq_run(q, 0), 6);
    assert_int_equal(mb_timerq_run(q, 5), 0);
    int want[10];
    for (int i = 0; i < 10; i++)
        want[i] = 9 - i;
    expect_log(&l, want, 10, MB_TIMER_FIRED);
    mb_timerq_destroy(q);
    mb_manual_clock_destroy(mc);
}

/* ---- cancel ---- */

static void test_cancel(void **state)
{
    (void)state;
    mb_manual_clock *mc = new_clock();
    mb_timerq *q = new_queue(mc, 64, NULL);
    tlog l = {0};
    ent e[8];
    mb_timer_id id[8];
    for (int i = 0; i < 8; i++) {
        e[i] = (ent){&l, i};
        id[i] = add_ok(q, (uint64_t)(i + 1) * MS, &e[i]);
    }
    /* Cancelling runs the callback at once, on this thread. */
    assert_int_equal(mb_timerq_cancel(q, id[3]), MB_OK);
    assert_int_equal(l.n, 1);
    assert_int_equal(l.r[0].tag, 3);
    assert_int_equal(l.r[0].ev, MB_TIMER_CANCELLED);
    assert_int_equal(mb_timerq_size(q), 7);
    /* A second cancel finds nothing and calls nothing. */
    assert_int_equal(mb_timerq_cancel(q, id[3]), MB_ENOTFOUND);
    assert_int_equal(l.n, 1);
    /* Cancelling the earliest and the last: the rest keeps its order. */
    assert_int_equal(mb_timerq_cancel(q, id[0]), MB_OK);
    assert_int_equal(mb_timerq_cancel(q, id[7]), MB_OK);
    assert_int_equal(mb_timerq_next_due(q), CLOCK_BASE + 2 * MS);

    mb_manual_clock_advance(mc, 5 * MS);
    assert_int_equal(mb_timerq_run(q, 0), 3); /* 1, 2, 4 */
    /* After it fired, a timer cannot be cancelled. */
    assert_int_equal(mb_timerq_cancel(q, id[1]), MB_ENOTFOUND);
    assert_int_equal(mb_timerq_cancel(q, id[4]), MB_ENOTFOUND);
    /* Ids that were never issued. */
    assert_int_equal(mb_timerq_cancel(q, 0), MB_ENOTFOUND);
    assert_int_equal(mb_timerq_cancel(q, UINT64_MAX), MB_ENOTFOUND);
    assert_int_equal(mb_timerq_cancel(q, (UINT64_C(1) << 24) | 63), MB_ENOTFOUND);
    assert_int_equal(mb_timerq_cancel(q, id[5] ^ (UINT64_C(1) << 40)), MB_ENOTFOUND);
    assert_int_equal(mb_timerq_cancel(NULL, id[5]), MB_EINVAL);

    mb_manual_clock_advance(mc, 5 * MS);
    assert_int_equal(mb_timerq_run(q, 0), 2);
    static const rec want[] = {{3, MB_TIMER_CANCELLED}, {0, MB_TIMER_CANCELLED},
                               {7, MB_TIMER_CANCELLED}, {1, MB_TIMER_FIRED},
                               {2, MB_TIMER_FIRED},     {4, MB_TIMER_FIRED},
                               {5, MB_TIMER_FIRED},     {6, MB_TIMER_FIRED}};
    assert_int_equal(l.n, 8);
    for (int i = 0; i < 8; i++) {
        assert_int_equal(l.r[i].tag, want[i].tag);
        assert_int_equal(l.r[i].ev, want[i].ev);
    }
    mb_timerq_destroy(q);
    mb_manual_clock_destroy(mc);
}

static void test_stale_id_after_slot_reuse(void **state)
{
    (void)state;
    mb_manual_clock *mc = new_clock();
    mb_timerq *q = new_queue(mc, 1, NULL); /* one slot: every add reuses it */
    tlog l = {0};
    ent a = {&l, 1}, b = {&l, 2}, c = {&l, 3};
    mb_timer_id ia = add_ok(q, MS, &a);
    assert_int_equal(mb_timerq_cancel(q, ia), MB_OK);
    mb_timer_id ib = add_ok(q, MS, &b);
    assert_true(ib != ia);
    /* The old id names the same slot but an older timer. */
    assert_int_equal(mb_timerq_cancel(q, ia), MB_ENOTFOUND);
    assert_int_equal(mb_timerq_size(q), 1);
    mb_manual_clock_advance(mc, MS);
    assert_int_equal(mb_timerq_run(q, 0), 1);
    mb_timer_id ic = add_ok(q, MS, &c);
    assert_true(ic != ib && ic != ia);
    assert_int_equal(mb_timerq_cancel(q, ib), MB_ENOTFOUND); /* fired, then reused */
    assert_int_equal(mb_timerq_cancel(q, ia), MB_ENOTFOUND);
    assert_int_equal(mb_timerq_cancel(q, ic), MB_OK);
    static const rec want[] = {
        {1, MB_TIMER_CANCELLED}, {2, MB_TIMER_FIRED}, {3, MB_TIMER_CANCELLED}};
    assert_int_equal(l.n, 3);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(l.r[i].tag, want[i].tag);
        assert_int_equal(l.r[i].ev, want[i].ev);
    }
    /* Many reuses of one slot never repeat an id. */
    mb_timer_id prev = ic;
    for (int i = 0; i < 1000; i++) {
        ent *e = &a;
        l.n = 0;
        mb_timer_id id = add_ok(q, 0, e);
        assert_true(id != prev);
        assert_int_equal(mb_timerq_cancel(q, prev), MB_ENOTFOUND);
        assert_int_equal(mb_timerq_cancel(q, id), MB_OK);
        prev = id;
    }
    mb_timerq_destroy(q);
    mb_manual_clock_destroy(mc);
}

/* ---- capacity ---- */

static void test_capacity_full(void **state)
{
    (void)state;
    mb_metrics *m = NULL;
    assert_int_equal(mb_metrics_create(&m, NULL), MB_OK);
    mb_manual_clock *mc = new_clock();
    mb_timerq *q = new_queue(mc, 4, m);
    tlog l = {0};
    ent e[6];
    for (int i = 0; i < 6; i++)
        e[i] = (ent){&l, i};
    for (int i = 0; i < 4; i++)
        add_ok(q, (uint64_t)i, &e[i]);
    mb_timer_id id = 99;
    assert_int_equal(mb_timerq_add(q, 0, log_cb, &e[4], &id), MB_EAGAIN);
    assert_int_equal(mb_timerq_add(q, 0, log_cb, &e[4], &id), MB_EAGAIN);
    assert_int_equal(id, 99);
    assert_int_equal(l.n, 0); /* the refused callback is never called */
    assert_int_equal(mb_timerq_size(q), 4);
    char *text = expose(m);
    assert_true(has_line(text, "mudbus_timerq_full_total 2"));
    assert_true(has_line(text, "mudbus_timerq_pending 4"));
    free(text);
    /* Room again once one has run. */
    assert_int_equal(mb_timerq_run(q, 1), 1);
    add_ok(q, 0, &e[5]);
    assert_int_equal(mb_timerq_add(q, 0, log_cb, &e[4], NULL), MB_EAGAIN);
    mb_timerq_destroy(q);
    mb_manual_clock_destroy(mc);
    mb_metrics_destroy(m);
}

/* ---- destroy ---- */

typedef struct destroy_ctx {
    mb_timerq *q;
    int calls[8];
    int cancelled[8];
    mb_timer_id ids[8];
    mb_status add_status;
} destroy_ctx;

typedef struct dent {
    destroy_ctx *c;
    int tag;
} dent;

static void noop_cb(void *arg, mb_timer_event ev)
{
    (void)arg;
    (void)ev;
}

static void destroy_cb(void *arg, mb_timer_event ev)
{
    dent *d = arg;
    destroy_ctx *c = d->c;
    c->calls[d->tag]++;
    c->cancelled[d->tag] += ev == MB_TIMER_CANCELLED;
    if (ev != MB_TIMER_CANCELLED)
        return;
    if (d->tag == 2) {
        /* Adding during destroy is refused, and nothing is kept. */
        c->add_status = mb_timerq_add(c->q, 0, noop_cb, NULL, NULL);
        /* Cancelling another pending timer runs it once, from here. */
        assert_int_equal(mb_timerq_cancel(c->q, c->ids[6]), MB_OK);
    }
}

static void test_destroy_cancels_pending_once(void **state)
{
    (void)state;
    mb_manual_clock *mc = new_clock();
    destroy_ctx c = {0};
    c.q = new_queue(mc, 16, NULL);
    dent d[8];
    for (int i = 0; i < 8; i++) {
        d[i] = (dent){&c, i};
        assert_int_equal(mb_timerq_add(c.q, (uint64_t)i * MS, destroy_cb, &d[i], &c.ids[i]), MB_OK);
    }
    mb_manual_clock_advance(mc, MS);
    assert_int_equal(mb_timerq_run(c.q, 0), 2); /* 0 and 1 fire */
    mb_timerq_destroy(c.q);
    for (int i = 0; i < 8; i++) {
        assert_int_equal(c.calls[i], 1);
        assert_int_equal(c.cancelled[i], i >= 2);
    }
    assert_int_equal(c.add_status, MB_ECLOSED);
    mb_manual_clock_destroy(mc);
}

/* ---- callbacks that use the queue ---- */

typedef struct chain {
    mb_timerq *q;
    int fired;
    int cancelled;
    int victim_events[2];
    mb_timer_id victim;
    int readds_left;
} chain;

static void chain_cb(void *arg, mb_timer_event ev)
{
    chain *c = arg;
    if (ev == MB_TIMER_CANCELLED) {
        c->cancelled++;
        return;
    }
    c->fired++;
    if (c->readds_left > 0) {
        c->readds_left--;
        assert_int_equal(mb_timerq_add(c->q, 0, chain_cb, c, NULL), MB_OK);
    }
}

static void victim_cb(void *arg, mb_timer_event ev)
{
    chain *c = arg;
    c->victim_events[ev]++;
}

static void killer_cb(void *arg, mb_timer_event ev)
{
    chain *c = arg;
    assert_int_equal(ev, MB_TIMER_FIRED);
    assert_int_equal(mb_timerq_cancel(c->q, c->victim), MB_OK);
}

static void test_callbacks_add_and_cancel_while_running(void **state)
{
    (void)state;
    mb_manual_clock *mc = new_clock();
    mb_timerq *q = new_queue(mc, 16, NULL);

    /* A callback that re-adds itself with no delay: each run runs it once,
     * and run returns although the new timer is due at once. */
    chain c = {.q = q, .readds_left = 3};
    assert_int_equal(mb_timerq_add(q, 0, chain_cb, &c, NULL), MB_OK);
    for (int i = 1; i <= 4; i++) {
        assert_int_equal(mb_timerq_run(q, 0), 1);
        assert_int_equal(c.fired, i);
        assert_int_equal(mb_timerq_timeout_ms(q), i < 4 ? 0 : -1);
    }
    assert_int_equal(mb_timerq_run(q, 0), 0);
    assert_int_equal(mb_timerq_size(q), 0);

    /* A callback that cancels a timer which is due in the same run: the
     * victim is cancelled, not fired. */
    chain k = {.q = q};
    assert_int_equal(mb_timerq_add(q, 1, killer_cb, &k, NULL), MB_OK);
    assert_int_equal(mb_timerq_add(q, 2, victim_cb, &k, &k.victim), MB_OK);
    mb_manual_clock_advance(mc, 5);
    assert_int_equal(mb_timerq_run(q, 0), 1);
    assert_int_equal(k.victim_events[MB_TIMER_FIRED], 0);
    assert_int_equal(k.victim_events[MB_TIMER_CANCELLED], 1);

    /* A callback that adds a timer due in the future, then a destroy with
     * it pending: it gets exactly one CANCELLED. */
    chain f = {.q = q, .readds_left = 1};
    assert_int_equal(mb_timerq_add(q, 0, chain_cb, &f, NULL), MB_OK);
    assert_int_equal(mb_timerq_run(q, 0), 1);
    assert_int_equal(mb_timerq_size(q), 1);
    mb_timerq_destroy(q);
    assert_int_equal(f.fired, 1);
    assert_int_equal(f.cancelled, 1);
    mb_manual_clock_destroy(mc);
}

/* ---- timeouts ---- */

static void test_timeout_ms_rounding(void **state)
{
    (void)state;
    mb_manual_clock *mc = new_clock();
    mb_timerq *q = new_queue(mc, 16, NULL);
    tlog l = {0};
    ent e = {&l, 0};
    assert_int_equal(mb_timerq_timeout_ms(q), -1);
    mb_timer_id id = add_ok(q, 1, &e);
    assert_int_equal(mb_timerq_timeout_ms(q), 1); /* 1 ns left rounds up */
    mb_manual_clock_advance(mc, 1);
    assert_int_equal(mb_timerq_timeout_ms(q), 0); /* due now */
    mb_manual_clock_advance(mc, 1000 * MS);
    assert_int_equal(mb_timerq_timeout_ms(q), 0); /* overdue */
    assert_int_equal(mb_timerq_cancel(q, id), MB_OK);
    assert_int_equal(mb_timerq_timeout_ms(q), -1);

    static const struct {
        uint64_t delay;
        int want;
    } cases[] = {
        {0, 0},
        {MS - 1, 1},
        {MS, 1},
        {MS + 1, 2},
        {1500 * MS, 1500},
        {(uint64_t)INT_MAX * MS, INT_MAX},
        {(uint64_t)INT_MAX * MS + 1, INT_MAX},
        {UINT64_MAX, INT_MAX},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        id = add_ok(q, cases[i].delay, &e);
        assert_int_equal(mb_timerq_timeout_ms(q), cases[i].want);
        assert_int_equal(mb_timerq_cancel(q, id), MB_OK);
    }
    /* A delay past the clock's range saturates below the "empty" value. */
    id = add_ok(q, UINT64_MAX, &e);
    assert_int_equal(mb_timerq_next_due(q), UINT64_MAX - 1);
    assert_int_equal(mb_timerq_cancel(q, id), MB_OK);
    mb_timerq_destroy(q);
    mb_manual_clock_destroy(mc);
}

/* ---- wake ---- */

static void count_wake(void *ctx)
{
    atomic_fetch_add((atomic_int *)ctx, 1);
}

static void test_wake_only_when_earliest_changes(void **state)
{
    (void)state;
    mb_manual_clock *mc = new_clock();
    atomic_int wakes = 0;
    mb_timerq_opts o = {
        .capacity = 16, .clock = mb_manual_clock_get(mc), .wake = count_wake, .wake_ctx = &wakes};
    mb_timerq *q = NULL;
    assert_int_equal(mb_timerq_create(&o, &q, NULL), MB_OK);
    tlog l = {0};
    ent e = {&l, 0};
    add_ok(q, 100, &e); /* first timer: the earliest */
    assert_int_equal(atomic_load(&wakes), 1);
    add_ok(q, 200, &e); /* later */
    assert_int_equal(atomic_load(&wakes), 1);
    add_ok(q, 100, &e); /* a tie runs after the first: not the earliest */
    assert_int_equal(atomic_load(&wakes), 1);
    add_ok(q, 50, &e); /* earlier */
    assert_int_equal(atomic_load(&wakes), 2);
    mb_timer_id id = add_ok(q, 10, &e);
    assert_int_equal(atomic_load(&wakes), 3);
    /* Cancelling or running never wakes. */
    assert_int_equal(mb_timerq_cancel(q, id), MB_OK);
    mb_manual_clock_advance(mc, 1000);
    assert_int_equal(mb_timerq_run(q, 0), 4);
    assert_int_equal(atomic_load(&wakes), 3);
    /* Empty again: the next add is the earliest. */
    add_ok(q, 1000, &e);
    assert_int_equal(atomic_load(&wakes), 4);
    /* A refused add does not wake. */
    o.capacity = 1;
    mb_timerq *q1 = NULL;
    assert_int_equal(mb_timerq_create(&o, &q1, NULL), MB_OK);
    add_ok(q1, 5, &e);
    assert_int_equal(atomic_load(&wakes), 5);
    assert_int_equal(mb_timerq_add(q1, 1, log_cb, &e, NULL), MB_EAGAIN);
    assert_int_equal(atomic_load(&wakes), 5);
    mb_timerq_destroy(q1);
    mb_timerq_destroy(q);
    mb_manual_clock_destroy(mc);
}

/* ---- metrics ---- */

static void test_metrics_text(void **state)
{
    (void)state;
    mb_metrics *m = NULL;
    assert_int_equal(mb_metrics_create(&m, NULL), MB_OK);
    mb_manual_clock *mc = new_clock();
    mb_timerq_opts o = {
        .capacity = 3, .clock = mb_manual_clock_get(mc), .metrics = m, .labels = "queue=\"retry\""};
    mb_timerq *q = NULL;
    assert_int_equal(mb_timerq_create(&o, &q, NULL), MB_OK);
    char *text = expose(m);
    assert_true(has_line(text, "# TYPE mudbus_timerq_pending gauge"));
    assert_true(has_line(text, "mudbus_timerq_pending{queue=\"retry\"} 0"));
    assert_true(has_line(text, "# TYPE mudbus_timerq_fired_total counter"));
    assert_true(has_line(text, "mudbus_timerq_fired_total{queue=\"retry\"} 0"));
    assert_true(has_line(text, "# TYPE mudbus_timerq_full_total counter"));
    assert_true(has_line(text, "mudbus_timerq_full_total{queue=\"retry\"} 0"));
    free(text);

    tlog l = {0};
    ent e = {&l, 0};
    add_ok(q, 0, &e);
    add_ok(q, 0, &e);
    mb_timer_id id = add_ok(q, 10, &e);
    assert_int_equal(mb_timerq_add(q, 0, log_cb, &e, NULL), MB_EAGAIN);
    assert_int_equal(mb_timerq_run(q, 0), 2);
    text = expose(m);
    assert_true(has_line(text, "mudbus_timerq_pending{queue=\"retry\"} 1"));
    assert_true(has_line(text, "mudbus_timerq_fired_total{queue=\"retry\"} 2"));
    assert_true(has_line(text, "mudbus_timerq_full_total{queue=\"retry\"} 1"));
    free(text);
    /* A cancel is not a firing. */
    assert_int_equal(mb_timerq_cancel(q, id), MB_OK);
    text = expose(m);
    assert_true(has_line(text, "mudbus_timerq_pending{queue=\"retry\"} 0"));
    assert_true(has_line(text, "mudbus_timerq_fired_total{queue=\"retry\"} 2"));
    free(text);

    /* The same labels twice: the registry refuses the second queue. */
    mb_timerq *dup = NULL;
    assert_int_equal(mb_timerq_create(&o, &dup, NULL), MB_EEXIST);
    assert_null(dup);

    /* Destroy cancels what is pending; the gauge follows. */
    add_ok(q, 10, &e);
    add_ok(q, 10, &e);
    mb_timerq_destroy(q);
    text = expose(m);
    assert_true(has_line(text, "mudbus_timerq_pending{queue=\"retry\"} 0"));
    free(text);
    mb_manual_clock_destroy(mc);
    mb_metrics_destroy(m);
}

/* ---- threads ---- */

#define PRODUCERS    4
#define PER_PRODUCER 10000
#define NTIMERS      (PRODUCERS * PER_PRODUCER)

typedef struct shared {
    mb_timerq *q;
    mb_manual_clock *mc;
    pthread_t driver;
    _Atomic int calls[NTIMERS];
    _Atomic int fired[NTIMERS];
    atomic_uint wrong_thread;
    atomic_uint fired_total;
    atomic_uint cancelled_total;
    atomic_int producers_done;
    atomic_int wakes;
} shared;

typedef struct tent {
    shared *sh;
    int index;
} tent;

typedef struct producer {
    shared *sh;
    tent *ents;
    int id;
    unsigned cancels_ok;
    unsigned cancels_missed;
    unsigned full_seen;
    unsigned add_errors;
    pthread_t self;
} producer;

static void threaded_cb(void *arg, mb_timer_event ev)
{
    tent *t = arg;
    shared *sh = t->sh;
    atomic_fetch_add(&sh->calls[t->index], 1);
    if (ev == MB_TIMER_FIRED) {
        atomic_fetch_add(&sh->fired[t->index], 1);
        atomic_fetch_add(&sh->fired_total, 1);
        if (!pthread_equal(pthread_self(), sh->driver))
            atomic_fetch_add(&sh->wrong_thread, 1);
    } else {
        atomic_fetch_add(&sh->cancelled_total, 1);
        if (pthread_equal(pthread_self(), sh->driver))
            atomic_fetch_add(&sh->wrong_thread, 1);
    }
}

static void threaded_wake(void *ctx)
{
    atomic_fetch_add((atomic_int *)ctx, 1);
}

static void *producer_main(void *arg)
{
    producer *p = arg;
    uint64_t rs = UINT64_C(0x9e3779b97f4a7c15) * (uint64_t)(p->id + 1);
    mb_timer_id recent[16] = {0};
    for (int i = 0; i < PER_PRODUCER; i++) {
        tent *t = &p->ents[i];
        t->sh = p->sh;
        t->index = p->id * PER_PRODUCER + i;
        uint64_t delay = test_rand(&rs) % (5 * MS);
        mb_timer_id id = 0;
        mb_status st;
        /* A full queue is a normal outcome: wait for the driver to drain. */
        while ((st = mb_timerq_add(p->sh->q, delay, threaded_cb, t, &id)) == MB_EAGAIN) {
            p->full_seen++;
            sched_yield();
        }
        if (st != MB_OK) {
            p->add_errors++;
            continue;
        }
        recent[i % 16] = id;
        /* Now and then cancel a recent timer, which may have fired already:
         * either way its callback runs exactly once. */
        if (test_rand(&rs) % 4 == 0) {
            mb_timer_id victim = recent[test_rand(&rs) % 16];
            if (victim != 0) {
                mb_status cs = mb_timerq_cancel(p->sh->q, victim);
                if (cs == MB_OK)
                    p->cancels_ok++;
                else if (cs == MB_ENOTFOUND)
                    p->cancels_missed++;
                else
                    p->add_errors++;
            }
        }
    }
    atomic_fetch_add(&p->sh->producers_done, 1);
    return NULL;
}

static void test_threaded_producers_and_driver(void **state)
{
    (void)state;
    mb_metrics *m = NULL;
    assert_int_equal(mb_metrics_create(&m, NULL), MB_OK);
    shared *sh = calloc(1, sizeof *sh);
    assert_non_null(sh);
    sh->mc = new_clock();
    sh->driver = pthread_self();
    mb_timerq_opts o = {.capacity = 4096,
                        .clock = mb_manual_clock_get(sh->mc),
                        .wake = threaded_wake,
                        .wake_ctx = &sh->wakes,
                        .metrics = m};
    assert_int_equal(mb_timerq_create(&o, &sh->q, NULL), MB_OK);

    static tent ents[PRODUCERS][PER_PRODUCER];
    producer p[PRODUCERS];
    for (int i = 0; i < PRODUCERS; i++) {
        p[i] = (producer){.sh = sh, .ents = ents[i], .id = i};
        assert_int_equal(pthread_create(&p[i].self, NULL, producer_main, &p[i]), 0);
    }
    /* The driver: advance time, run what is due, until everyone is done. */
    size_t ran = 0;
    for (;;) {
        int done = atomic_load(&sh->producers_done) == PRODUCERS;
        mb_manual_clock_advance(sh->mc, 50000);
        ran += mb_timerq_run(sh->q, 0);
        if (done && mb_timerq_size(sh->q) == 0)
            break;
        if (mb_timerq_timeout_ms(sh->q) != 0)
            sched_yield();
    }
    unsigned cancels_ok = 0, missed = 0, full_seen = 0;
    for (int i = 0; i < PRODUCERS; i++) {
        assert_int_equal(pthread_join(p[i].self, NULL), 0);
        assert_int_equal(p[i].add_errors, 0);
        cancels_ok += p[i].cancels_ok;
        missed += p[i].cancels_missed;
        full_seen += p[i].full_seen;
    }
    for (int i = 0; i < NTIMERS; i++) {
        if (atomic_load(&sh->calls[i]) != 1)
            fail_msg("timer %d: %d callbacks", i, atomic_load(&sh->calls[i]));
    }
    assert_int_equal(atomic_load(&sh->wrong_thread), 0);
    assert_int_equal(atomic_load(&sh->fired_total), ran);
    assert_int_equal(atomic_load(&sh->cancelled_total), cancels_ok);
    assert_int_equal(ran + cancels_ok, NTIMERS);
    assert_true(cancels_ok > 0);
    assert_true(atomic_load(&sh->wakes) > 0);
    (void)missed;

    char *text = expose(m);
    char line[96];
    snprintf(line, sizeof line, "mudbus_timerq_fired_total %zu", ran);
    assert_true(has_line(text, line));
    snprintf(line, sizeof line, "mudbus_timerq_full_total %u", full_seen);
    assert_true(has_line(text, line));
    assert_true(has_line(text, "mudbus_timerq_pending 0"));
    free(text);

    mb_timerq_destroy(sh->q);
    mb_manual_clock_destroy(sh->mc);
    free(sh);
    mb_metrics_destroy(m);
}

/* ---- randomized model check ---- */

#define MODEL_CAP 200

typedef struct mtimer {
    uint64_t due;
    uint64_t seq;
    int tag;
    mb_timer_id id;
    int pending;
} mtimer;

#define MODEL_MAX 30000

/* Every timer ever added (so that cancels also try finished ones), and the
 * indices of the pending ones in no particular order. */
typedef struct model {
    mtimer t[MODEL_MAX];
    int n;
    int pidx[MODEL_CAP];
    int pending;
    uint64_t seq;
} model;

/* The pending model timer that should run next, or -1: the sorted order of
 * the model is "smallest (due, seq) first", found by a plain scan. */
static int model_first(const model *md)
{
    int best = -1;
    for (int k = 0; k < md->pending; k++) {
        int i = md->pidx[k];
        const mtimer *t = &md->t[i];
        if (best < 0 || t->due < md->t[best].due ||
            (t->due == md->t[best].due && t->seq < md->t[best].seq))
            best = i;
    }
    return best;
}

static void model_done(model *md, int i)
{
    assert_true(md->t[i].pending);
    md->t[i].pending = 0;
    for (int k = 0; k < md->pending; k++) {
        if (md->pidx[k] == i) {
            md->pidx[k] = md->pidx[--md->pending];
            return;
        }
    }
    fail_msg("timer %d missing from the model's pending list", i);
}

static void test_heap_against_model(void **state)
{
    (void)state;
    mb_manual_clock *mc = new_clock();
    mb_timerq *q = new_queue(mc, MODEL_CAP, NULL);
    static model md;
    static tlog l;
    static ent ents[MODEL_MAX];
    memset(&md, 0, sizeof md);
    memset(&l, 0, sizeof l);
    uint64_t rs = 12345;
    uint64_t now = CLOCK_BASE;
    int full_refusals = 0;

    for (int step = 0; step < 100000 && md.n < MODEL_MAX; step++) {
        uint64_t r = test_rand(&rs) % 100;
        /* Every third block of steps only adds and cancels, so the queue
         * fills up to its capacity; the others keep it small and busy. */
        if ((step / 1500) % 3 == 2)
            r = r * 75 / 100;
        if (r < 55) {
            /* Add, with small delays so that ties are common. */
            uint64_t delay = test_rand(&rs) % 64;
            int tag = md.n;
            ents[tag] = (ent){&l, tag};
            mb_timer_id id = 0;
            mb_status st = mb_timerq_add(q, delay, log_cb, &ents[tag], &id);
            if (md.pending == MODEL_CAP) {
                assert_int_equal(st, MB_EAGAIN);
                full_refusals++;
                continue;
            }
            assert_int_equal(st, MB_OK);
            md.pidx[md.pending++] = md.n;
            md.t[md.n++] = (mtimer){now + delay, md.seq++, tag, id, 1};
        } else if (r < 75 && md.n > 0) {
            /* Cancel a random timer, pending or not. */
            int i = (int)(test_rand(&rs) % (uint64_t)md.n);
            mtimer *t = &md.t[i];
            l.n = 0;
            mb_status st = mb_timerq_cancel(q, t->id);
            if (t->pending) {
                assert_int_equal(st, MB_OK);
                assert_int_equal(l.n, 1);
                assert_int_equal(l.r[0].tag, t->tag);
                assert_int_equal(l.r[0].ev, MB_TIMER_CANCELLED);
                model_done(&md, i);
            } else {
                assert_int_equal(st, MB_ENOTFOUND);
                assert_int_equal(l.n, 0);
            }
        } else if (r < 88) {
            uint64_t d = test_rand(&rs) % 40;
            mb_manual_clock_advance(mc, d);
            now += d;
        } else {
            /* Run with a random limit; the model says exactly what runs. */
            size_t max = (size_t)(test_rand(&rs) % 6);
            l.n = 0;
            size_t ran = mb_timerq_run(q, max);
            size_t want = 0;
            for (;;) {
                if (max != 0 && want == max)
                    break;
                int f = model_first(&md);
                if (f < 0 || md.t[f].due > now)
                    break;
                assert_true(want < l.n);
                assert_int_equal(l.r[want].tag, md.t[f].tag);
                assert_int_equal(l.r[want].ev, MB_TIMER_FIRED);
                model_done(&md, f);
                want++;
            }
            assert_int_equal(ran, want);
            assert_int_equal(l.n, want);
        }
        /* After every step: size, earliest due time and timeout agree. */
        assert_int_equal(mb_timerq_size(q), (size_t)md.pending);
        int f = model_first(&md);
        uint64_t due = f < 0 ? UINT64_MAX : md.t[f].due;
        assert_int_equal(mb_timerq_next_due(q), due);
        int tmo = mb_timerq_timeout_ms(q);
        assert_int_equal(tmo, f < 0 ? -1 : (due <= now ? 0 : 1));
    }
    assert_true(full_refusals > 0);
    assert_true(md.n > 20000);

    /* Destroy: the rest is cancelled, earliest first. */
    l.n = 0;
    int left = md.pending;
    int order[MODEL_CAP];
    for (int i = 0; i < left; i++) {
        int f = model_first(&md);
        order[i] = md.t[f].tag;
        model_done(&md, f);
    }
    mb_timerq_destroy(q);
    expect_log(&l, order, (size_t)left, MB_TIMER_CANCELLED);
    mb_manual_clock_destroy(mc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create_and_refusals),
        cmocka_unit_test(test_add_invalid_arguments),
        cmocka_unit_test(test_order_by_due_time),
        cmocka_unit_test(test_fifo_ties),
        cmocka_unit_test(test_run_with_max),
        cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_stale_id_after_slot_reuse),
        cmocka_unit_test(test_capacity_full),
        cmocka_unit_test(test_destroy_cancels_pending_once),
        cmocka_unit_test(test_callbacks_add_and_cancel_while_running),
        cmocka_unit_test(test_timeout_ms_rounding),
        cmocka_unit_test(test_wake_only_when_earliest_changes),
        cmocka_unit_test(test_metrics_text),
        cmocka_unit_test(test_threaded_producers_and_driver),
        cmocka_unit_test(test_heap_against_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
