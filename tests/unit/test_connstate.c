/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for the connection state machine: every one of the 49 from/to
 * pairs against an independently written table (allowed ones succeed,
 * refused ones return MB_ESTATE and change neither state nor stats), the
 * circuit-open cool-down (refused before, allowed after, driven by poll,
 * growing with the backoff), a full reconnect story with exact statistics on
 * a manual clock, the last error, listeners (order, sequence numbers,
 * removal, re-entrant transitions, the limit), closed being terminal, metrics,
 * and threads transitioning concurrently with the statistics staying
 * consistent.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mudbus/clock.h"
#include "mudbus/connstate.h"
#include "mudbus/metrics.h"

#define MS 1000000ull

/* Short names for the table below. */
#define D  MB_CONN_DISCONNECTED
#define CG MB_CONN_CONNECTING
#define CD MB_CONN_CONNECTED
#define DG MB_CONN_DEGRADED
#define RC MB_CONN_RECONNECTING
#define CO MB_CONN_CIRCUIT_OPEN
#define CL MB_CONN_CLOSED

/* ---- helpers ---- */

typedef struct fixture {
    mb_manual_clock *mc;
    mb_connstate *cs;
} fixture;

static fixture make(const mb_connstate_opts *o)
{
    fixture f = {NULL, NULL};
    assert_int_equal(mb_manual_clock_create(5000 * MS, 1700000000000 * MS, &f.mc, NULL), MB_OK);
    mb_connstate_opts opts = {0};
    if (o != NULL)
        opts = *o;
    opts.clock = mb_manual_clock_get(f.mc);
    mb_err err = {0};
    assert_int_equal(mb_connstate_create(&opts, &f.cs, &err), MB_OK);
    assert_int_equal(err.code, MB_OK);
    return f;
}

static void unmake(fixture *f)
{
    mb_connstate_destroy(f->cs);
    mb_manual_clock_destroy(f->mc);
}

static void advance_ms(fixture *f, uint64_t ms)
{
    mb_manual_clock_advance(f->mc, ms * MS);
}

static void go(fixture *f, mb_conn_state to)
{
    mb_err err = {0};
    mb_status st = mb_connstate_transition(f->cs, to, MB_OK, NULL, &err);
    if (st != MB_OK)
        fail_msg("transition to %s: %s", mb_connstate_name(to), err.msg);
}

static mb_connstate_stats stats(mb_connstate *cs)
{
    mb_connstate_stats s;
    mb_connstate_stats_get(cs, &s);
    return s;
}

/* Put a fresh machine into `s` by a valid path; the clock is moved past any
 * cool-down afterwards so that only the table decides. */
static void drive_to(fixture *f, mb_conn_state s)
{
    switch (s) {
    case MB_CONN_DISCONNECTED:
        break;
    case MB_CONN_CONNECTING:
        go(f, MB_CONN_CONNECTING);
        break;
    case MB_CONN_CONNECTED:
        go(f, MB_CONN_CONNECTING);
        go(f, MB_CONN_CONNECTED);
        break;
    case MB_CONN_DEGRADED:
        drive_to(f, MB_CONN_CONNECTED);
        go(f, MB_CONN_DEGRADED);
        break;
    case MB_CONN_RECONNECTING:
        drive_to(f, MB_CONN_CONNECTED);
        go(f, MB_CONN_RECONNECTING);
        break;
    case MB_CONN_CIRCUIT_OPEN:
        go(f, MB_CONN_CONNECTING);
        go(f, MB_CONN_CIRCUIT_OPEN);
        advance_ms(f, 5000);
        break;
    case MB_CONN_CLOSED:
        go(f, MB_CONN_CLOSED);
        break;
    }
    assert_int_equal(mb_connstate_get(f->cs), s);
}

/* ---- names and the table ---- */

static void test_names(void **state)
{
    (void)state;
    static const char *const names[] = {"disconnected", "connecting",   "connected", "degraded",
                                        "reconnecting", "circuit_open", "closed"};
    for (unsigned s = 0; s < MB_CONN_STATE_COUNT; s++)
        assert_string_equal(mb_connstate_name((mb_conn_state)s), names[s]);
    assert_string_equal(mb_connstate_name((mb_conn_state)7), "unknown");
    assert_string_equal(mb_connstate_name((mb_conn_state)-1), "unknown");
}

/* The table as the design states it, written out independently. */
static const struct {
    mb_conn_state from, to;
} expected_pairs[] = {
    {D, CG},  {D, CL},                                /* disconnected */
    {CG, CD}, {CG, D},  {CG, CO}, {CG, CL},           /* connecting */
    {CD, DG}, {CD, RC}, {CD, D},  {CD, CL},           /* connected */
    {DG, CD}, {DG, RC}, {DG, D},  {DG, CO}, {DG, CL}, /* degraded */
    {RC, CD}, {RC, D},  {RC, CO}, {RC, CL},           /* reconnecting */
    {CO, CG}, {CO, CL},                               /* circuit open */
};

static bool expected_allowed(mb_conn_state from, mb_conn_state to)
{
    for (size_t i = 0; i < sizeof expected_pairs / sizeof expected_pairs[0]; i++)
        if (expected_pairs[i].from == from && expected_pairs[i].to == to)
            return true;
    return false;
}

static void test_allowed_matches_design(void **state)
{
    (void)state;
    unsigned n = 0;
    for (unsigned from = 0; from < MB_CONN_STATE_COUNT; from++) {
        for (unsigned to = 0; to < MB_CONN_STATE_COUNT; to++) {
            bool want = expected_allowed(from, to);
            if (mb_connstate_allowed(from, to) != want)
                fail_msg("%s -> %s: expected %s", mb_connstate_name(from), mb_connstate_name(to),
                         want ? "allowed" : "refused");
            n += want;
        }
        assert_false(mb_connstate_allowed(from, from));
        assert_false(mb_connstate_allowed(MB_CONN_CLOSED, from));
        assert_false(mb_connstate_allowed(from, (mb_conn_state)7));
        assert_false(mb_connstate_allowed((mb_conn_state)7, from));
    }
    assert_int_equal(n, 21);
}

static void test_every_pair_on_a_machine(void **state)
{
    (void)state;
    for (unsigned from = 0; from < MB_CONN_STATE_COUNT; from++) {
        for (unsigned to = 0; to < MB_CONN_STATE_COUNT; to++) {
            fixture f = make(NULL);
            drive_to(&f, from);
            mb_connstate_stats before = stats(f.cs);
            mb_err err = {0};
            mb_status st = mb_connstate_transition(f.cs, to, MB_ETIMEOUT, "why", &err);
            mb_connstate_stats after = stats(f.cs);
            if (expected_allowed(from, to)) {
                if (st != MB_OK)
                    fail_msg("%s -> %s refused: %s", mb_connstate_name(from), mb_connstate_name(to),
                             err.msg);
                assert_int_equal(after.state, to);
                assert_int_equal(after.transitions, before.transitions + 1);
                assert_int_equal(after.last_error, MB_ETIMEOUT);
                assert_string_equal(after.last_error_msg, "why");
                /* The counters move exactly as their definitions say. */
                bool attempt = to == CG || to == RC;
                bool connect = to == CD && (from == CG || from == RC);
                bool disconnect = (from == CD || from == DG) && (to == RC || to == D);
                assert_int_equal(after.attempts, before.attempts + attempt);
                assert_int_equal(after.connects, before.connects + connect);
                assert_int_equal(after.disconnects, before.disconnects + disconnect);
                assert_int_equal(after.circuit_opens, before.circuit_opens + (to == CO));
            } else {
                if (st != MB_ESTATE)
                    fail_msg("%s -> %s: expected MB_ESTATE, got %s", mb_connstate_name(from),
                             mb_connstate_name(to), mb_status_name(st));
                assert_int_equal(err.code, MB_ESTATE);
                assert_non_null(strstr(err.msg, mb_connstate_name(to)));
                if (from != to)
                    assert_non_null(strstr(err.msg, mb_connstate_name(from)));
                else if (from != CL)
                    assert_non_null(strstr(err.msg, "already"));
                /* Nothing changed, not even the last error. */
                assert_memory_equal(&before, &after, sizeof before);
            }
            unmake(&f);
        }
    }
}

static void test_invalid_target_and_options(void **state)
{
    (void)state;
    fixture f = make(NULL);
    mb_connstate_stats before = stats(f.cs);
    mb_err err = {0};
    assert_int_equal(mb_connstate_transition(f.cs, (mb_conn_state)7, MB_OK, NULL, &err), MB_EINVAL);
    mb_connstate_stats after = stats(f.cs);
    assert_memory_equal(&before, &after, sizeof before);
    unmake(&f);

    mb_connstate *cs = (mb_connstate *)&err;
    assert_int_equal(mb_connstate_create(NULL, NULL, NULL), MB_EINVAL);
    assert_int_equal(mb_connstate_create(&(mb_connstate_opts){.name = "a b"}, &cs, NULL),
                     MB_EINVAL);
    assert_int_equal(mb_connstate_create(&(mb_connstate_opts){.cooldown_backoff = 0.9}, &cs, NULL),
                     MB_EINVAL);
    assert_int_equal(
        mb_connstate_create(&(mb_connstate_opts){.cooldown_ms = 2000, .max_cooldown_ms = 1000}, &cs,
                            NULL),
        MB_EINVAL);
    assert_ptr_equal(cs, (mb_connstate *)&err);
    assert_int_equal(mb_connstate_create(NULL, &cs, NULL), MB_OK);
    assert_int_equal(mb_connstate_get(cs), MB_CONN_DISCONNECTED);
    assert_int_equal(stats(cs).cooldown_ms, 5000);
    mb_connstate_destroy(cs);
    mb_connstate_destroy(NULL);
}

/* ---- specific transitions ---- */

static void test_connected_to_reconnecting(void **state)
{
    (void)state;
    fixture f = make(NULL);
    drive_to(&f, MB_CONN_CONNECTED);
    mb_err err = {0};
    assert_int_equal(
        mb_connstate_transition(f.cs, MB_CONN_RECONNECTING, MB_ENOCONN, "server gone", &err),
        MB_OK);
    mb_connstate_stats s = stats(f.cs);
    assert_int_equal(s.state, MB_CONN_RECONNECTING);
    assert_int_equal(s.disconnects, 1);
    assert_int_equal(s.attempts, 2);
    go(&f, MB_CONN_CONNECTED);
    assert_int_equal(stats(f.cs).connects, 2);
    unmake(&f);
}

static void test_circuit_open_cooldown(void **state)
{
    (void)state;
    fixture f = make(&(mb_connstate_opts){.cooldown_ms = 5000});
    go(&f, MB_CONN_CONNECTING);
    go(&f, MB_CONN_CIRCUIT_OPEN);
    mb_connstate_stats s = stats(f.cs);
    assert_int_equal(s.cooldown_ms, 5000);
    assert_int_equal(s.cooldown_left_ms, 5000);
    assert_int_equal(s.circuit_opens, 1);

    advance_ms(&f, 3766);
    mb_err err = {0};
    assert_int_equal(mb_connstate_transition(f.cs, MB_CONN_CONNECTING, MB_OK, NULL, &err),
                     MB_ESTATE);
    assert_non_null(strstr(err.msg, "1234 ms"));
    assert_false(mb_connstate_poll(f.cs));
    mb_manual_clock_advance(f.mc, 1234 * MS - 1);
    mb_err_clear(&err);
    assert_int_equal(mb_connstate_transition(f.cs, MB_CONN_CONNECTING, MB_OK, NULL, &err),
                     MB_ESTATE);
    assert_non_null(strstr(err.msg, "1 ms"));
    assert_int_equal(stats(f.cs).cooldown_left_ms, 1);
    assert_false(mb_connstate_poll(f.cs));
    assert_int_equal(stats(f.cs).transitions, 2);
    mb_manual_clock_advance(f.mc, 1);
    assert_int_equal(stats(f.cs).cooldown_left_ms, 0);
    assert_int_equal(mb_connstate_transition(f.cs, MB_CONN_CONNECTING, MB_OK, NULL, NULL), MB_OK);
    assert_int_equal(stats(f.cs).attempts, 2);
    unmake(&f);
}

static void test_poll_drives_circuit_closed(void **state)
{
    (void)state;
    fixture f = make(&(mb_connstate_opts){.cooldown_ms = 1000});
    /* Not in circuit_open: poll does nothing. */
    assert_false(mb_connstate_poll(f.cs));
    drive_to(&f, MB_CONN_DEGRADED);
    assert_false(mb_connstate_poll(f.cs));
    go(&f, MB_CONN_CIRCUIT_OPEN);
    advance_ms(&f, 999);
    assert_false(mb_connstate_poll(f.cs));
    advance_ms(&f, 1);
    assert_true(mb_connstate_poll(f.cs));
    assert_int_equal(mb_connstate_get(f.cs), MB_CONN_CONNECTING);
    assert_false(mb_connstate_poll(f.cs));
    mb_connstate_stats s = stats(f.cs);
    assert_int_equal(s.attempts, 2);
    assert_int_equal(s.transitions, 5);
    unmake(&f);
}

static void test_cooldown_backoff_grows_and_resets(void **state)
{
    (void)state;
    fixture f = make(
        &(mb_connstate_opts){.cooldown_ms = 1000, .cooldown_backoff = 2, .max_cooldown_ms = 5000});
    go(&f, MB_CONN_CONNECTING);
    static const uint64_t expected[] = {1000, 2000, 4000, 5000, 5000};
    for (unsigned i = 0; i < 5; i++) {
        assert_int_equal(stats(f.cs).cooldown_ms, expected[i]); /* the next one */
        go(&f, MB_CONN_CIRCUIT_OPEN);
        assert_int_equal(stats(f.cs).cooldown_left_ms, expected[i]);
        mb_manual_clock_advance(f.mc, expected[i] * MS - 1);
        assert_false(mb_connstate_poll(f.cs));
        mb_manual_clock_advance(f.mc, 1);
        assert_true(mb_connstate_poll(f.cs));
    }
    /* Reaching connected resets it. */
    go(&f, MB_CONN_CONNECTED);
    assert_int_equal(stats(f.cs).cooldown_ms, 1000);
    go(&f, MB_CONN_DEGRADED);
    go(&f, MB_CONN_CIRCUIT_OPEN);
    assert_int_equal(stats(f.cs).cooldown_left_ms, 1000);
    unmake(&f);

    /* Default: constant. */
    f = make(&(mb_connstate_opts){.cooldown_ms = 700});
    go(&f, MB_CONN_CONNECTING);
    for (unsigned i = 0; i < 4; i++) {
        go(&f, MB_CONN_CIRCUIT_OPEN);
        assert_int_equal(stats(f.cs).cooldown_left_ms, 700);
        advance_ms(&f, 700);
        assert_true(mb_connstate_poll(f.cs));
    }
    unmake(&f);
}

static void test_closed_is_terminal(void **state)
{
    (void)state;
    fixture f = make(NULL);
    drive_to(&f, MB_CONN_RECONNECTING);
    go(&f, MB_CONN_CLOSED);
    mb_connstate_stats before = stats(f.cs);
    for (unsigned to = 0; to < MB_CONN_STATE_COUNT; to++) {
        mb_err err = {0};
        assert_int_equal(mb_connstate_transition(f.cs, to, MB_OK, NULL, &err), MB_ESTATE);
        assert_non_null(strstr(err.msg, "terminal"));
    }
    assert_false(mb_connstate_poll(f.cs));
    mb_connstate_stats after = stats(f.cs);
    assert_memory_equal(&before, &after, sizeof before);
    assert_int_equal(after.state, MB_CONN_CLOSED);
    unmake(&f);
}

/* ---- the reconnect story ---- */

static void step(fixture *f, uint64_t after_ms, mb_conn_state to, mb_status cause,
                 const char *reason)
{
    advance_ms(f, after_ms);
    mb_err err = {0};
    if (mb_connstate_transition(f->cs, to, cause, reason, &err) != MB_OK)
        fail_msg("to %s: %s", mb_connstate_name(to), err.msg);
}

static void test_reconnect_story_exact_stats(void **state)
{
    (void)state;
    fixture f = make(&(mb_connstate_opts){.cooldown_ms = 5000});
    uint64_t t0 = mb_clock_mono_ns(mb_manual_clock_get(f.mc));
    step(&f, 100, MB_CONN_CONNECTING, MB_OK, "start");
    step(&f, 50, MB_CONN_CONNECTED, MB_OK, NULL);
    step(&f, 10000, MB_CONN_DEGRADED, MB_ETIMEOUT, "health check took 2100 ms");
    step(&f, 2000, MB_CONN_CONNECTED, MB_OK, "healthy again");
    step(&f, 3000, MB_CONN_RECONNECTING, MB_ENOCONN, "connection reset by peer");
    step(&f, 500, MB_CONN_CONNECTED, MB_OK, NULL);
    step(&f, 1000, MB_CONN_DEGRADED, MB_ETIMEOUT, NULL);
    step(&f, 400, MB_CONN_RECONNECTING, MB_ENOCONN, "stale connection");
    step(&f, 700, MB_CONN_CIRCUIT_OPEN, MB_ETIMEOUT, "5 reconnects failed");

    mb_connstate_stats s = stats(f.cs);
    assert_int_equal(s.last_error, MB_ETIMEOUT);
    assert_string_equal(s.last_error_msg, "5 reconnects failed");
    assert_int_equal(s.last_error_ns, t0 + 17750 * MS);
    assert_int_equal(s.last_error_wall_ns, 1700000000000 * MS + 17750 * MS);

    advance_ms(&f, 4999);
    assert_int_equal(mb_connstate_transition(f.cs, MB_CONN_CONNECTING, MB_OK, NULL, NULL),
                     MB_ESTATE);
    advance_ms(&f, 1);
    assert_true(mb_connstate_poll(f.cs));
    step(&f, 200, MB_CONN_CONNECTED, MB_OK, NULL);
    step(&f, 800, MB_CONN_DISCONNECTED, MB_OK, "shutting down");
    step(&f, 300, MB_CONN_CLOSED, MB_OK, NULL);
    advance_ms(&f, 1000);

    s = stats(f.cs);
    assert_int_equal(s.state, MB_CONN_CLOSED);
    assert_int_equal(s.since_ns, t0 + 24050 * MS);
    assert_int_equal(s.since_wall_ns, 1700000000000 * MS + 24050 * MS);
    assert_int_equal(s.transitions, 13);
    assert_int_equal(s.attempts, 4);
    assert_int_equal(s.connects, 3);
    assert_int_equal(s.disconnects, 3);
    assert_int_equal(s.circuit_opens, 1);
    assert_int_equal(s.time_in_state_ns[MB_CONN_DISCONNECTED], 400 * MS);
    assert_int_equal(s.time_in_state_ns[MB_CONN_CONNECTING], 250 * MS);
    assert_int_equal(s.time_in_state_ns[MB_CONN_CONNECTED], 14800 * MS);
    assert_int_equal(s.time_in_state_ns[MB_CONN_DEGRADED], 2400 * MS);
    assert_int_equal(s.time_in_state_ns[MB_CONN_RECONNECTING], 1200 * MS);
    assert_int_equal(s.time_in_state_ns[MB_CONN_CIRCUIT_OPEN], 5000 * MS);
    assert_int_equal(s.time_in_state_ns[MB_CONN_CLOSED], 1000 * MS);
    /* Errors in MB_OK transitions do not overwrite the last error. */
    assert_int_equal(s.last_error, MB_ETIMEOUT);
    assert_string_equal(s.last_error_msg, "5 reconnects failed");
    unmake(&f);
}

static void test_last_error_message(void **state)
{
    (void)state;
    fixture f = make(NULL);
    assert_int_equal(stats(f.cs).last_error, MB_OK);
    assert_string_equal(stats(f.cs).last_error_msg, "");
    /* No reason: the status's sentence. */
    go(&f, MB_CONN_CONNECTING);
    assert_int_equal(mb_connstate_transition(f.cs, MB_CONN_DISCONNECTED, MB_EAUTH, NULL, NULL),
                     MB_OK);
    assert_int_equal(stats(f.cs).last_error, MB_EAUTH);
    assert_string_equal(stats(f.cs).last_error_msg, mb_status_str(MB_EAUTH));
    /* A long reason is cut, in the stats and for the listeners. */
    char longr[400];
    memset(longr, 'x', sizeof longr - 1);
    longr[sizeof longr - 1] = '\0';
    go(&f, MB_CONN_CONNECTING);
    assert_int_equal(mb_connstate_transition(f.cs, MB_CONN_DISCONNECTED, MB_ETLS, longr, NULL),
                     MB_OK);
    mb_connstate_stats s = stats(f.cs);
    assert_int_equal(s.last_error, MB_ETLS);
    assert_int_equal(strlen(s.last_error_msg), MB_CONNSTATE_REASON_MAX - 1);
    assert_memory_equal(s.last_error_msg, longr, MB_CONNSTATE_REASON_MAX - 1);
    /* The caller's buffer was only borrowed. */
    memset(longr, 'y', 10);
    assert_int_equal(stats(f.cs).last_error_msg[0], 'x');
    unmake(&f);
}

/* ---- listeners ---- */

#define MAX_EVENTS 64

typedef struct event {
    int who;
    mb_conn_state from, to;
    mb_status cause;
    uint64_t seq;
    char reason[MB_CONNSTATE_REASON_MAX];
} event;

typedef struct recorder {
    mb_connstate *cs;
    unsigned n;
    event ev[MAX_EVENTS];
    /* Behaviour of the listener with the matching `who`. */
    int reenter;                        /* who 1: on entering reconnecting, go to connected */
    mb_connstate_listener_id remove_id; /* who 1: remove this one on every call */
} recorder;

typedef struct tag {
    recorder *r;
    int who;
} tag;

static void on_transition(void *ctx, mb_conn_state from, mb_conn_state to, mb_status cause,
                          const char *reason, uint64_t seq)
{
    tag *t = ctx;
    recorder *r = t->r;
    assert_true(r->n < MAX_EVENTS);
    event *e = &r->ev[r->n++];
    *e = (event){.who = t->who, .from = from, .to = to, .cause = cause, .seq = seq};
    snprintf(e->reason, sizeof e->reason, "%s", reason);
    /* The machine is not locked: these would deadlock otherwise. */
    mb_connstate_stats s;
    mb_connstate_stats_get(r->cs, &s);
    assert_true(s.transitions >= seq);
    if (t->who != 1)
        return;
    if (r->remove_id != 0)
        assert_int_equal(mb_connstate_listener_remove(r->cs, r->remove_id), MB_OK);
    r->remove_id = 0;
    if (r->reenter && to == MB_CONN_RECONNECTING)
        assert_int_equal(
            mb_connstate_transition(r->cs, MB_CONN_CONNECTED, MB_OK, "fast reconnect", NULL),
            MB_OK);
}

static void test_listeners_order_sequence_and_removal(void **state)
{
    (void)state;
    fixture f = make(NULL);
    recorder r = {.cs = f.cs};
    tag a = {&r, 0}, b = {&r, 2}, c = {&r, 3};
    mb_connstate_listener_id ida = 0, idb = 0, idc = 0;
    assert_int_equal(mb_connstate_listener_add(f.cs, on_transition, &a, &ida, NULL), MB_OK);
    assert_int_equal(mb_connstate_listener_add(f.cs, on_transition, &b, &idb, NULL), MB_OK);
    assert_int_equal(mb_connstate_listener_add(f.cs, on_transition, &c, &idc, NULL), MB_OK);
    assert_true(ida != 0 && idb != 0 && idc != 0 && ida != idb && idb != idc);

    assert_int_equal(mb_connstate_transition(f.cs, MB_CONN_CONNECTING, MB_OK, "boot", NULL), MB_OK);
    assert_int_equal(r.n, 3);
    static const int first_order[] = {0, 2, 3};
    for (unsigned i = 0; i < 3; i++) {
        assert_int_equal(r.ev[i].who, first_order[i]);
        assert_int_equal(r.ev[i].from, MB_CONN_DISCONNECTED);
        assert_int_equal(r.ev[i].to, MB_CONN_CONNECTING);
        assert_int_equal(r.ev[i].seq, 1);
        assert_string_equal(r.ev[i].reason, "boot");
    }
    /* A refused transition calls nobody. */
    assert_int_equal(mb_connstate_transition(f.cs, MB_CONN_DEGRADED, MB_OK, NULL, NULL), MB_ESTATE);
    assert_int_equal(r.n, 3);

    assert_int_equal(mb_connstate_listener_remove(f.cs, idb), MB_OK);
    assert_int_equal(mb_connstate_listener_remove(f.cs, idb), MB_ENOTFOUND);
    assert_int_equal(mb_connstate_listener_remove(f.cs, 0), MB_ENOTFOUND);
    assert_int_equal(
        mb_connstate_transition(f.cs, MB_CONN_DISCONNECTED, MB_ENOCONN, "refused", NULL), MB_OK);
    assert_int_equal(r.n, 5);
    assert_int_equal(r.ev[3].who, 0);
    assert_int_equal(r.ev[4].who, 3);
    assert_int_equal(r.ev[4].seq, 2);
    assert_int_equal(r.ev[4].cause, MB_ENOCONN);
    assert_string_equal(r.ev[4].reason, "refused");

    /* A listener added again goes after the others. */
    assert_int_equal(mb_connstate_listener_add(f.cs, on_transition, &b, &idb, NULL), MB_OK);
    go(&f, MB_CONN_CONNECTING);
    assert_int_equal(r.n, 8);
    static const int later_order[] = {0, 3, 2};
    for (unsigned i = 5; i < 8; i++) {
        assert_int_equal(r.ev[i].who, later_order[i - 5]);
        assert_int_equal(r.ev[i].seq, 3);
        assert_string_equal(r.ev[i].reason, "");
    }
    /* Removing the first keeps the others' order. */
    assert_int_equal(mb_connstate_listener_remove(f.cs, ida), MB_OK);
    go(&f, MB_CONN_CONNECTED);
    assert_int_equal(r.n, 10);
    assert_int_equal(r.ev[8].who, 3);
    assert_int_equal(r.ev[9].who, 2);
    unmake(&f);
}

static void test_listener_removes_another_during_delivery(void **state)
{
    (void)state;
    fixture f = make(NULL);
    recorder r = {.cs = f.cs};
    tag one = {&r, 1}, two = {&r, 2};
    mb_connstate_listener_id id2 = 0;
    assert_int_equal(mb_connstate_listener_add(f.cs, on_transition, &one, NULL, NULL), MB_OK);
    assert_int_equal(mb_connstate_listener_add(f.cs, on_transition, &two, &id2, NULL), MB_OK);
    r.remove_id = id2;
    go(&f, MB_CONN_CONNECTING);
    /* Listener 1 removed listener 2 before its turn: only 1 was called. */
    assert_int_equal(r.n, 1);
    assert_int_equal(r.ev[0].who, 1);
    go(&f, MB_CONN_CONNECTED);
    assert_int_equal(r.n, 2);
    unmake(&f);
}

static void test_listener_reentrant_transition(void **state)
{
    (void)state;
    fixture f = make(NULL);
    recorder r = {.cs = f.cs, .reenter = 1};
    tag one = {&r, 1}, two = {&r, 2};
    assert_int_equal(mb_connstate_listener_add(f.cs, on_transition, &one, NULL, NULL), MB_OK);
    assert_int_equal(mb_connstate_listener_add(f.cs, on_transition, &two, NULL, NULL), MB_OK);
    drive_to(&f, MB_CONN_CONNECTED); /* seq 1, 2: four events */
    assert_int_equal(r.n, 4);
    assert_int_equal(mb_connstate_transition(f.cs, MB_CONN_RECONNECTING, MB_ENOCONN, "reset", NULL),
                     MB_OK);
    /* Listener 1 saw seq 3 and made seq 4 at once; the nested delivery of 4
     * reached listener 2 before the rest of 3's delivery did. */
    assert_int_equal(r.n, 8);
    assert_int_equal(r.ev[4].who, 1);
    assert_int_equal(r.ev[4].seq, 3);
    assert_int_equal(r.ev[5].who, 1);
    assert_int_equal(r.ev[5].seq, 4);
    assert_int_equal(r.ev[5].to, MB_CONN_CONNECTED);
    assert_string_equal(r.ev[5].reason, "fast reconnect");
    assert_int_equal(r.ev[6].who, 2);
    assert_int_equal(r.ev[6].seq, 4);
    assert_int_equal(r.ev[7].who, 2);
    assert_int_equal(r.ev[7].seq, 3);
    assert_int_equal(r.ev[7].to, MB_CONN_RECONNECTING);
    mb_connstate_stats s = stats(f.cs);
    assert_int_equal(s.state, MB_CONN_CONNECTED);
    assert_int_equal(s.transitions, 4);
    assert_int_equal(s.connects, 2);
    assert_int_equal(s.disconnects, 1);
    unmake(&f);
}

static void noop_listener(void *ctx, mb_conn_state from, mb_conn_state to, mb_status cause,
                          const char *reason, uint64_t seq)
{
    (void)from;
    (void)to;
    (void)cause;
    (void)reason;
    (void)seq;
    atomic_fetch_add((_Atomic unsigned *)ctx, 1);
}

static void test_listener_limit(void **state)
{
    (void)state;
    fixture f = make(NULL);
    _Atomic unsigned calls = 0;
    mb_connstate_listener_id ids[MB_CONNSTATE_MAX_LISTENERS];
    for (unsigned i = 0; i < MB_CONNSTATE_MAX_LISTENERS; i++)
        assert_int_equal(
            mb_connstate_listener_add(f.cs, noop_listener, (void *)&calls, &ids[i], NULL), MB_OK);
    mb_err err = {0};
    mb_connstate_listener_id extra = 0;
    assert_int_equal(mb_connstate_listener_add(f.cs, noop_listener, (void *)&calls, &extra, &err),
                     MB_ELIMIT);
    assert_int_equal(err.code, MB_ELIMIT);
    assert_int_equal(extra, 0);
    assert_int_equal(mb_connstate_listener_add(f.cs, NULL, NULL, NULL, NULL), MB_EINVAL);
    go(&f, MB_CONN_CONNECTING);
    assert_int_equal(calls, MB_CONNSTATE_MAX_LISTENERS);
    assert_int_equal(mb_connstate_listener_remove(f.cs, ids[5]), MB_OK);
    assert_int_equal(mb_connstate_listener_add(f.cs, noop_listener, (void *)&calls, &extra, NULL),
                     MB_OK);
    assert_true(extra != ids[5]); /* ids are not reused */
    go(&f, MB_CONN_CONNECTED);
    assert_int_equal(calls, 2 * MB_CONNSTATE_MAX_LISTENERS);
    unmake(&f);
}

/* ---- metrics ---- */

static void expect_sample(const char *text, const char *line)
{
    if (strstr(text, line) == NULL)
        fail_msg("no line '%s' in:\n%s", line, text);
}

static void test_metrics(void **state)
{
    (void)state;
    mb_metrics *m = NULL;
    assert_int_equal(mb_metrics_create(&m, NULL), MB_OK);
    fixture f = make(&(mb_connstate_opts){.name = "game", .metrics = m, .cooldown_ms = 10});
    drive_to(&f, MB_CONN_RECONNECTING);
    go(&f, MB_CONN_CIRCUIT_OPEN);
    advance_ms(&f, 10);
    assert_true(mb_connstate_poll(f.cs));
    char *text = NULL;
    size_t len;
    assert_int_equal(mb_metrics_format(m, &text, &len, NULL), MB_OK);
    expect_sample(text, "\nmudbus_connstate_state{name=\"game\"} 1\n");
    expect_sample(text,
                  "\nmudbus_connstate_transitions_total{name=\"game\",to=\"connecting\"} 2\n");
    expect_sample(text, "\nmudbus_connstate_transitions_total{name=\"game\",to=\"connected\"} 1\n");
    expect_sample(text,
                  "\nmudbus_connstate_transitions_total{name=\"game\",to=\"reconnecting\"} 1\n");
    expect_sample(text,
                  "\nmudbus_connstate_transitions_total{name=\"game\",to=\"circuit_open\"} 1\n");
    expect_sample(text, "\nmudbus_connstate_transitions_total{name=\"game\",to=\"closed\"} 0\n");
    expect_sample(text, "# TYPE mudbus_connstate_state gauge\n");
    free(text);
    /* A refused transition counts nowhere. */
    assert_int_equal(mb_connstate_transition(f.cs, MB_CONN_DEGRADED, MB_OK, NULL, NULL), MB_ESTATE);
    assert_int_equal(mb_metrics_format(m, &text, &len, NULL), MB_OK);
    expect_sample(text, "\nmudbus_connstate_transitions_total{name=\"game\",to=\"degraded\"} 0\n");
    free(text);

    mb_connstate *dup = NULL;
    assert_int_equal(
        mb_connstate_create(&(mb_connstate_opts){.name = "game", .metrics = m}, &dup, NULL),
        MB_EEXIST);
    assert_null(dup);
    unmake(&f);
    mb_metrics_destroy(m);
}

/* ---- threads ---- */

#define THREADS 6
#define ITERS   3000
#define MAX_SEQ (THREADS * ITERS + 1)

typedef struct shared {
    mb_connstate *cs;
    mb_manual_clock *mc;
    pthread_barrier_t start;
    _Atomic unsigned delivered;
    /* Indexed by sequence number; each slot is written by one delivery. */
    _Atomic int seen[MAX_SEQ + 1];
    mb_conn_state from[MAX_SEQ + 1], to[MAX_SEQ + 1];
} shared;

typedef struct runner {
    shared *sh;
    uint64_t seed;
    unsigned ok;
} runner;

static void on_threaded(void *ctx, mb_conn_state from, mb_conn_state to, mb_status cause,
                        const char *reason, uint64_t seq)
{
    (void)cause;
    (void)reason;
    shared *sh = ctx;
    assert_true(seq >= 1 && seq <= MAX_SEQ);
    assert_int_equal(atomic_fetch_add(&sh->seen[seq], 1), 0);
    sh->from[seq] = from;
    sh->to[seq] = to;
    atomic_fetch_add(&sh->delivered, 1);
}

static void *runner_main(void *arg)
{
    runner *r = arg;
    pthread_barrier_wait(&r->sh->start);
    uint64_t x = r->seed;
    for (unsigned i = 0; i < ITERS; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        mb_manual_clock_advance(r->sh->mc, MS);
        if (x % 10 == 0) {
            r->ok += mb_connstate_poll(r->sh->cs);
            continue;
        }
        /* Any state but closed, so that the machine keeps moving. */
        mb_conn_state to = (mb_conn_state)(x % (MB_CONN_STATE_COUNT - 1));
        mb_status st = mb_connstate_transition(r->sh->cs, to, (x >> 20) % 2 ? MB_ETIMEOUT : MB_OK,
                                               "race", NULL);
        if (st == MB_OK)
            r->ok++;
        else
            assert_int_equal(st, MB_ESTATE);
    }
    return NULL;
}

static void test_threaded_transitions_keep_stats_consistent(void **state)
{
    (void)state;
    fixture f = make(&(mb_connstate_opts){.cooldown_ms = 2});
    shared *sh = calloc(1, sizeof *sh);
    assert_non_null(sh);
    sh->cs = f.cs;
    sh->mc = f.mc;
    pthread_barrier_init(&sh->start, NULL, THREADS);
    assert_int_equal(mb_connstate_listener_add(f.cs, on_threaded, sh, NULL, NULL), MB_OK);
    uint64_t t0 = mb_clock_mono_ns(mb_manual_clock_get(f.mc));
    runner r[THREADS];
    pthread_t th[THREADS];
    for (unsigned i = 0; i < THREADS; i++) {
        r[i] = (runner){.sh = sh, .seed = 0x9E3779B97F4A7C15ull * (i + 1)};
        assert_int_equal(pthread_create(&th[i], NULL, runner_main, &r[i]), 0);
    }
    unsigned ok = 0;
    for (unsigned i = 0; i < THREADS; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        ok += r[i].ok;
    }
    pthread_barrier_destroy(&sh->start);

    mb_connstate_stats s = stats(f.cs);
    uint64_t now = mb_clock_mono_ns(mb_manual_clock_get(f.mc));
    print_message("%u of %u calls made a transition\n", ok, THREADS * ITERS);
    assert_true(ok > 100); /* the machine really moved */
    assert_int_equal(s.transitions, ok);
    assert_int_equal(sh->delivered, ok);
    /* Every sequence number once; the deliveries form one chain of allowed
     * transitions that ends in the current state; the counters match it. */
    uint64_t attempts = 0, connects = 0, disconnects = 0, opens = 0;
    mb_conn_state cur = MB_CONN_DISCONNECTED;
    for (uint64_t q = 1; q <= ok; q++) {
        assert_int_equal(sh->seen[q], 1);
        assert_int_equal(sh->from[q], cur);
        assert_true(mb_connstate_allowed(sh->from[q], sh->to[q]));
        mb_conn_state from = sh->from[q], to = sh->to[q];
        attempts += to == MB_CONN_CONNECTING || to == MB_CONN_RECONNECTING;
        connects +=
            to == MB_CONN_CONNECTED && (from == MB_CONN_CONNECTING || from == MB_CONN_RECONNECTING);
        disconnects += (from == MB_CONN_CONNECTED || from == MB_CONN_DEGRADED) &&
                       (to == MB_CONN_RECONNECTING || to == MB_CONN_DISCONNECTED);
        opens += to == MB_CONN_CIRCUIT_OPEN;
        cur = to;
    }
    assert_int_equal(sh->seen[ok + 1], 0);
    assert_int_equal(s.state, cur);
    assert_int_equal(s.attempts, attempts);
    assert_int_equal(s.connects, connects);
    assert_int_equal(s.disconnects, disconnects);
    assert_int_equal(s.circuit_opens, opens);
    uint64_t total = 0;
    for (unsigned i = 0; i < MB_CONN_STATE_COUNT; i++)
        total += s.time_in_state_ns[i];
    assert_int_equal(total, now - t0);
    assert_int_equal(now - t0, (uint64_t)THREADS * ITERS * MS);
    free(sh);
    unmake(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_allowed_matches_design),
        cmocka_unit_test(test_every_pair_on_a_machine),
        cmocka_unit_test(test_invalid_target_and_options),
        cmocka_unit_test(test_connected_to_reconnecting),
        cmocka_unit_test(test_circuit_open_cooldown),
        cmocka_unit_test(test_poll_drives_circuit_closed),
        cmocka_unit_test(test_cooldown_backoff_grows_and_resets),
        cmocka_unit_test(test_closed_is_terminal),
        cmocka_unit_test(test_reconnect_story_exact_stats),
        cmocka_unit_test(test_last_error_message),
        cmocka_unit_test(test_listeners_order_sequence_and_removal),
        cmocka_unit_test(test_listener_removes_another_during_delivery),
        cmocka_unit_test(test_listener_reentrant_transition),
        cmocka_unit_test(test_listener_limit),
        cmocka_unit_test(test_metrics),
        cmocka_unit_test(test_threaded_transitions_keep_stats_consistent),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
