/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for the circuit breaker: a single poison failure never trips it,
 * a burst trips it exactly when min_calls is reached, OPEN rejects for exactly
 * the open duration, HALF_OPEN admits exactly its quota (also with 8 threads
 * racing), closes or re-opens with a growing open duration up to the cap,
 * re-opens when probes hang, slow-call tripping, count and time windows
 * sliding, operator states, listener calls (outside the lock: the listener
 * calls back in), IGNORED and stale outcomes, and the metrics text. Time is a
 * manual clock: nothing sleeps.
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

#include "mudbus/breaker.h"
#include "mudbus/clock.h"
#include "mudbus/metrics.h"

#define MS  1000000ull
#define SEC 1000000000ull

/* ---- helpers ---- */

typedef struct fixture {
    mb_manual_clock *mc;
    mb_breaker *b;
} fixture;

static mb_manual_clock *new_clock(void)
{
    mb_manual_clock *mc = NULL;
    assert_int_equal(mb_manual_clock_create(1000 * SEC, 0, &mc, NULL), MB_OK);
    return mc;
}

/* A breaker on a fresh manual clock; `o` may be NULL. */
static fixture make(mb_breaker_opts *o)
{
    fixture f = {new_clock(), NULL};
    mb_breaker_opts opts = {0};
    if (o != NULL)
        opts = *o;
    opts.clock = mb_manual_clock_get(f.mc);
    mb_err err = {0};
    assert_int_equal(mb_breaker_create(&opts, &f.b, &err), MB_OK);
    assert_int_equal(err.code, MB_OK);
    assert_non_null(f.b);
    return f;
}

static void unmake(fixture *f)
{
    mb_breaker_destroy(f->b);
    mb_manual_clock_destroy(f->mc);
}

static void advance_ms(fixture *f, uint64_t ms)
{
    mb_manual_clock_advance(f->mc, ms * MS);
}

/* One admitted call with outcome `o`; fails the test if it is rejected. */
static void call(mb_breaker *b, mb_breaker_outcome o)
{
    mb_breaker_ticket t;
    assert_int_equal(mb_breaker_acquire(b, &t), MB_OK);
    mb_breaker_record(b, &t, o);
}

static mb_breaker_stats stats(mb_breaker *b)
{
    mb_breaker_stats s;
    mb_breaker_stats_get(b, &s);
    return s;
}

static void expect_rejected(mb_breaker *b)
{
    mb_breaker_ticket t = {{7, 7}};
    assert_int_equal(mb_breaker_acquire(b, &t), MB_EBREAKER);
    assert_int_equal(t.opaque[0], 0);
    assert_int_equal(t.opaque[1], 0);
}

/* Trip the breaker with `n` failures; it must be open after the last one. */
static void trip_now(fixture *f, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        call(f->b, MB_BREAKER_FAILURE);
    assert_int_equal(mb_breaker_state_get(f->b), MB_BREAKER_OPEN);
}

/* ---- names and options ---- */

static void test_state_names(void **state)
{
    (void)state;
    assert_string_equal(mb_breaker_state_name(MB_BREAKER_CLOSED), "closed");
    assert_string_equal(mb_breaker_state_name(MB_BREAKER_OPEN), "open");
    assert_string_equal(mb_breaker_state_name(MB_BREAKER_HALF_OPEN), "half_open");
    assert_string_equal(mb_breaker_state_name(MB_BREAKER_FORCED_OPEN), "forced_open");
    assert_string_equal(mb_breaker_state_name(MB_BREAKER_DISABLED), "disabled");
    assert_string_equal(mb_breaker_state_name((mb_breaker_state)5), "unknown");
    assert_string_equal(mb_breaker_state_name((mb_breaker_state)-1), "unknown");
}

static void test_create_defaults(void **state)
{
    (void)state;
    mb_breaker *b = NULL;
    assert_int_equal(mb_breaker_create(NULL, &b, NULL), MB_OK);
    mb_breaker_stats s = stats(b);
    assert_int_equal(s.state, MB_BREAKER_CLOSED);
    assert_int_equal(s.open_ms, 5000);
    assert_int_equal(s.window_calls, 0);
    assert_int_equal(s.until_half_open_ms, 0);
    mb_breaker_destroy(b);
    mb_breaker_destroy(NULL);
}

static void expect_invalid(mb_breaker_opts o, const char *needle)
{
    mb_breaker *b = (mb_breaker *)&o; /* must stay untouched */
    mb_err err = {0};
    assert_int_equal(mb_breaker_create(&o, &b, &err), MB_EINVAL);
    assert_ptr_equal(b, (mb_breaker *)&o);
    assert_int_equal(err.code, MB_EINVAL);
    if (strstr(err.msg, needle) == NULL)
        fail_msg("error '%s' does not mention '%s'", err.msg, needle);
}

static void test_create_invalid_options(void **state)
{
    (void)state;
    mb_err err = {0};
    assert_int_equal(mb_breaker_create(NULL, NULL, &err), MB_EINVAL);

    char longname[MB_BREAKER_NAME_MAX + 2];
    memset(longname, 'a', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    expect_invalid((mb_breaker_opts){.name = longname}, "name");
    expect_invalid((mb_breaker_opts){.name = ""}, "name");
    expect_invalid((mb_breaker_opts){.name = "a\"b"}, "name");
    expect_invalid((mb_breaker_opts){.failure_rate_pct = 101}, "percent");
    expect_invalid((mb_breaker_opts){.slow_call_rate_pct = 200}, "percent");
    expect_invalid((mb_breaker_opts){.window_size = 1000001}, "window");
    expect_invalid((mb_breaker_opts){.window = MB_BREAKER_WINDOW_TIME, .window_size = 3601},
                   "window");
    expect_invalid((mb_breaker_opts){.window = (mb_breaker_window)9}, "window");
    expect_invalid((mb_breaker_opts){.open_backoff = 0.5}, "open_backoff");
    expect_invalid((mb_breaker_opts){.open_ms = 2000, .max_open_ms = 1000}, "max_open_ms");
    expect_invalid((mb_breaker_opts){.half_open_calls = 10001}, "half_open_calls");

    /* A name of exactly the maximum length is fine. */
    longname[MB_BREAKER_NAME_MAX] = '\0';
    mb_breaker *b = NULL;
    assert_int_equal(mb_breaker_create(&(mb_breaker_opts){.name = longname}, &b, NULL), MB_OK);
    mb_breaker_destroy(b);
    /* The default cap follows a long open_ms. */
    assert_int_equal(mb_breaker_create(&(mb_breaker_opts){.open_ms = 120000}, &b, NULL), MB_OK);
    assert_int_equal(stats(b).open_ms, 120000);
    mb_breaker_destroy(b);
}

/* ---- closed: when it trips and when it does not ---- */

static void test_single_poison_failure_never_trips(void **state)
{
    (void)state;
    fixture f = make(NULL); /* defaults: 100 calls, min 20, 50 % */
    for (unsigned pos = 0; pos < 1000; pos++) {
        for (unsigned i = 0; i < 1000; i++) {
            call(f.b, i == pos ? MB_BREAKER_FAILURE : MB_BREAKER_SUCCESS);
            /* The failure is the only one the window ever holds. */
            if (i == pos && mb_breaker_state_get(f.b) != MB_BREAKER_CLOSED)
                fail_msg("tripped by one failure at position %u", pos);
        }
        mb_breaker_stats s = stats(f.b);
        assert_int_equal(s.state, MB_BREAKER_CLOSED);
        assert_int_equal(s.window_calls, 100);
        assert_int_equal(s.window_failures, pos >= 900 ? 1 : 0);
        mb_breaker_reset(f.b);
    }
    mb_breaker_stats s = stats(f.b);
    assert_int_equal(s.trips_total, 0);
    assert_int_equal(s.calls_total, 1000000);
    assert_int_equal(s.failures_total, 1000);
    assert_int_equal(s.rejected_total, 0);
    unmake(&f);
}

static void test_burst_trips_at_min_calls_not_before(void **state)
{
    (void)state;
    fixture f = make(NULL);
    for (unsigned i = 0; i < 19; i++) {
        call(f.b, MB_BREAKER_FAILURE);
        assert_int_equal(mb_breaker_state_get(f.b), MB_BREAKER_CLOSED);
    }
    assert_int_equal(stats(f.b).failure_rate_pct, 100.0);
    call(f.b, MB_BREAKER_FAILURE);
    mb_breaker_stats s = stats(f.b);
    assert_int_equal(s.state, MB_BREAKER_OPEN);
    assert_int_equal(s.trips_total, 1);
    assert_int_equal(s.window_calls, 20);
    assert_int_equal(s.window_failures, 20);
    expect_rejected(f.b);
    unmake(&f);

    /* 10 successes then failures: exactly 50 % at the 20th call trips it. */
    f = make(NULL);
    for (unsigned i = 0; i < 10; i++)
        call(f.b, MB_BREAKER_SUCCESS);
    for (unsigned i = 0; i < 9; i++)
        call(f.b, MB_BREAKER_FAILURE);
    assert_int_equal(mb_breaker_state_get(f.b), MB_BREAKER_CLOSED);
    call(f.b, MB_BREAKER_FAILURE);
    assert_int_equal(mb_breaker_state_get(f.b), MB_BREAKER_OPEN);
    unmake(&f);

    /* 49 failures spread over a full window (never 50 % of any prefix of at
     * least min_calls) do not trip it; one more failure, evicting the
     * window's first success, makes 50 % and does. */
    f = make(NULL);
    for (unsigned i = 0; i < 100; i++)
        call(f.b, i >= 2 && i % 2 == 0 ? MB_BREAKER_FAILURE : MB_BREAKER_SUCCESS);
    mb_breaker_stats s2 = stats(f.b);
    assert_int_equal(s2.state, MB_BREAKER_CLOSED);
    assert_int_equal(s2.window_calls, 100);
    assert_int_equal(s2.window_failures, 49);
    call(f.b, MB_BREAKER_FAILURE);
    assert_int_equal(stats(f.b).window_failures, 50);
    assert_int_equal(mb_breaker_state_get(f.b), MB_BREAKER_OPEN);
    unmake(&f);
}

static void test_count_window_slides(void **state)
{
    (void)state;
    fixture f = make(&(mb_breaker_opts){.window_size = 10, .min_calls = 10});
    /* F F F F S S S S S S: 40 % */
    for (unsigned i = 0; i < 10; i++)
        call(f.b, i < 4 ? MB_BREAKER_FAILURE : MB_BREAKER_SUCCESS);
    assert_int_equal(stats(f.b).window_failures, 4);
    /* Each new success evicts one of the old failures. */
    for (unsigned i = 0; i < 4; i++) {
        call(f.b, MB_BREAKER_SUCCESS);
        assert_int_equal(stats(f.b).window_failures, 3 - i);
        assert_int_equal(stats(f.b).window_calls, 10);
    }
    /* Now S*10; five failures evict successes: 50 % at the fifth. */
    for (unsigned i = 0; i < 4; i++)
        call(f.b, MB_BREAKER_FAILURE);
    assert_int_equal(mb_breaker_state_get(f.b), MB_BREAKER_CLOSED);
    call(f.b, MB_BREAKER_FAILURE);
    assert_int_equal(mb_breaker_state_get(f.b), MB_BREAKER_OPEN);
    unmake(&f);
}

static void test_min_calls_clamped_to_count_window(void **state)
{
    (void)state;
    fixture f = make(&(mb_breaker_opts){.window_size = 10, .min_calls = 50});
    for (unsigned i = 0; i < 9; i++)
        call(f.b, MB_BREAKER_FAILURE);
    assert_int_equal(mb_breaker_state_get(f.b), MB_BREAKER_CLOSED);
    call(f.b, MB_BREAKER_FAILURE);
    assert_int_equal(mb_breaker_state_get(f.b), MB_BREAKER_OPEN);
    unmake(&f);
}

static void test_failure_rate_off(void **state)
{
    (void)state;
    fixture f = make(&(mb_breaker_opts){.failure_rate_pct = MB_BREAKER_OFF});
    for (unsigned i = 0; i < 1000; i++)
        call(f.b, MB_BREAKER_FAILURE);
    mb_breaker_stats s = stats(f.b);
    assert_int_equal(s.state, MB_BREAKER_CLOSED);
    assert_int_equal(s.window_failures, 100);
    assert_int_equal(s.failures_total, 1000);
    unmake(&f);
}

/* ---- open and half-open ---- */

static void test_open_rejects_for_open_ms_then_half_open(void **state)
{
    (void)state;
    fixture f = make(&(mb_breaker_opts){.open_ms = 3000});
    trip_now(&f, 20);
    mb_breaker_stats s = stats(f.b);
    assert_int_equal(s.until_half_open_ms, 3000);
    assert_int_equal(s.open_ms, 3000);
    for (unsigned i = 0; i < 100; i++)
        expect_rejected(f.b);
    advance_ms(&f, 2999);
    assert_int_equal(stats(f.b).until_half_open_ms, 1);
    expect_rejected(f.b);
    mb_manual_clock_advance(f.mc, MS - 1); /* 1 ns before the end */
    assert_int_equal(stats(f.b).until_half_open_ms, 1);
    expect_rejected(f.b);
    assert_int_equal(mb_breaker_state_get(f.b), MB_BREAKER_OPEN);
    mb_manual_clock_advance(f.mc, 1);
    assert_int_equal(mb_breaker_state_get(f.b), MB_BREAKER_HALF_OPEN);
    s = stats(f.b);
    assert_int_equal(s.rejected_total, 102);
    assert_int_equal(s.until_half_open_ms, 0);
    assert_int_equal(s.trips_total, 1);
    mb_breaker_ticket t;
    assert_int_equal(mb_breaker_acquire(f.b, &t), MB_OK);
    assert_int_equal(stats(f.b).probes_admitted, 1);
    unmake(&f);
}

static void test_half_open_admits_exactly_quota(void **state)
{
    (void)state;
    fixture f = make(&(mb_breaker_opts){.half_open_calls = 3});
    trip_now(&f, 20);
    advance_ms(&f, 5000);
    mb_breaker_ticket t[3];
    for (unsigned i = 0; i < 3; i++)
        assert_int_equal(mb_breaker_acquire(f.b, &t[i]), MB_OK);
    for (unsigned i = 0; i < 10; i++)
        expect_rejected(f.b);
    /* An IGNORED probe hands its slot to the next caller. */
    mb_breaker_record(f.b, &t[1], MB_BREAKER_IGNORED);
    mb_breaker_stats s = stats(f.b);
    assert_int_equal(s.probes_admitted, 2);
    assert_int_equal(s.probes_completed, 0);
    assert_int_equal(s.ignored_total, 1);
    assert_int_equal(mb_breaker_acquire(f.b, &t[1]), MB_OK);
    expect_rejected(f.b);
    /* A reported probe does not free its slot. */
    mb_breaker_record(f.b, &t[0], MB_BREAKER_SUCCESS);
    expect_rejected(f.b);
    s = stats(f.b);
    assert_int_equal(s.state, MB_BREAKER_HALF_OPEN);
    assert_int_equal(s.probes_admitted, 3);
    assert_int_equal(s.probes_completed, 1);
    assert_int_equal(s.rejected_total, 12);
    unmake(&f);
}

static void test_half_open_closes_after_successful_probes(void **state)
{
    (void)state;
    fixture f = make(NULL);
    trip_now(&f, 20);
    advance_ms(&f, 5000);
    mb_breaker_ticket t[5];
    for (unsigned i = 0; i < 5; i++)
        assert_int_equal(mb_breaker_acquire(f.b, &t[i]), MB_OK);
    for (unsigned i = 0; i < 4; i++) {
        mb_breaker_record(f.b, &t[i], MB_BREAKER_SUCCESS);
        assert_int_equal(mb_breaker_state_get(f.b), MB_BREAKER_HALF_OPEN);
    }
    mb_breaker_record(f.b, &t[4], MB_BREAKER_SUCCESS);
    mb_breaker_stats s = stats(f.b);
    assert_int_equal(s.state, MB_BREAKER_CLOSED);
    assert_int_equal(s.window_calls, 0); /* a fresh window */
    assert_int_equal(s.probes_admitted, 0);
    assert_int_equal(s.calls_total, 25);
    /* Closed again: 19 failures do not trip the fresh window. */
    for (unsigned i = 0; i < 19; i++)
        call(f.b, MB_BREAKER_FAILURE);
    assert_int_equal(mb_breaker_state_get(f.b), MB_BREAKER_CLOSED);
    unmake(&f);
}

static void test_half_open_decides_from_probe_failure_rate(void **state)
{
    (void)state;
    /* Quota 5, 50 %: two failures among five probes close it ... */
    fixture f = make(NULL);
    trip_now(&f, 20);
    advance_ms(&f, 5000);
    mb_breaker_ticket t[5];
    for (unsigned i = 0; i < 5; i++)
        assert_int_equal(mb_breaker_acquire(f.b, &t[i]), MB_OK);
    for (unsigned i = 0; i < 5; i++)
        mb_breaker_record(f.b, &t[i], i < 2 ? MB_BREAKER_FAILURE : MB_BREAKER_SUCCESS);
    assert_int_equal(mb_breaker_state_get(f.b), MB_BREAKER_CLOSED);
    unmake(&f);

    /* ... three open it at once, before the other probes report. */
    f = make(NULL);
    trip_now(&f, 20);
    advance_ms(&f, 5000);
    for (unsigned i = 0; i < 5; i++)
        assert_int_equal(mb_breaker_acquire(f.b, &t[i]), MB_OK);
    mb_breaker_record(f.b, &t[0], MB_BREAKER_FAILURE);
    mb_breaker_record(f.b, &t[1], MB_BREAKER_FAILURE);
    assert_int_equal(mb_breaker_state_get(f.b), MB_BREAKER_HALF_OPEN);
    mb_breaker_record(f.b, &t[2], MB_BREAKER_FAILURE);
    mb_breaker_stats s = stats(f.b);
    assert_int_equal(s.state, MB_BREAKER_OPEN);
    assert_int_equal(s.trips_total, 2);
    assert_int_equal(s.open_ms, 10000);
    /* The late probes are stale and change nothing. */
    mb_breaker_record(f.b, &t[3], MB_BREAKER_SUCCESS);
    mb_breaker_record(f.b, &t[4], MB_BREAKER_SUCCESS);
    s = stats(f.b);
    assert_int_equal(s.state, MB_BREAKER_OPEN);
    assert_int_equal(s.stale_total, 2);
    unmake(&f);
}

/* Check that the breaker stays OPEN for exactly `ms` and becomes HALF_OPEN. */
static void expect_open_for(fixture *f, uint64_t ms)
{
    mb_breaker_stats s = stats(f->b);
    assert_int_equal(s.state, MB_BREAKER_OPEN);
    assert_int_equal(s.open_ms, ms);
    assert_int_equal(s.until_half_open_ms, ms);
    mb_manual_clock_advance(f->mc, ms * MS - 1);
    expect_rejected(f->b);
    mb_manual_clock_advance(f->mc, 1);
    assert_int_equal(mb_breaker_state_get(f->b), MB_BREAKER_HALF_OPEN);
}

/* Fail a half-open round with one probe (quota 1). */
static void fail_probe(fixture *f)
{
    call(f->b, MB_BREAKER_FAILURE);
}

static void test_reopen_backoff_grows_to_cap_and_resets(void **state)
{
    (void)state;
    fixture f = make(&(mb_breaker_opts){.window_size = 4,
                                        .min_calls = 4,
                                        .open_ms = 1000,
                                        .max_open_ms = 5000,
                                        .half_open_calls = 1});
    trip_now(&f, 4);
    static const uint64_t expected[] = {1000, 2000, 4000, 5000, 5000, 5000};
    for (unsigned i = 0; i < sizeof expected / sizeof expected[0]; i++) {
        expect_open_for(&f, expected[i]);
        fail_probe(&f);
    }
    assert_int_equal(stats(f.b).trips_total, 7);
    /* A successful probe closes it, and the next trip starts at open_ms. */
    expect_open_for(&f, 5000);
    call(f.b, MB_BREAKER_SUCCESS);
    assert_int_equal(mb_breaker_state_get(f.b), MB_BREAKER_CLOSED);
    assert_int_equal(stats(f.b).open_ms, 1000);
    trip_now(&f, 4);
    expect_open_for(&f, 1000);
    unmake(&f);

    /* open_backoff 1: constant. */
    f = make(&(mb_breaker_opts){.window_size = 4,
                                .min_calls = 4,
                                .open_ms = 1000,
                                .open_backoff = 1,
                                .half_open_calls = 1});
    trip_now(&f, 4);
    for (unsigned i = 0; i < 4; i++) {
        expect_open_for(&f, 1000);
        fail_probe(&f);
    }
    unmake(&f);

    /* A non-integer multiplier. */
    f = make(&(mb_breaker_opts){.window_size = 4,
                                .min_calls = 4,
                                .open_ms = 1000,
                                .open_backoff = 1.5,
                                .max_open_ms = 3000,
                                .half_open_calls = 1});
    trip_now(&f, 4);
    static const uint64_t expected15[] = {1000, 1500, 2250, 3000, 3000};
    for (unsigned i = 0; i < sizeof expected15 / sizeof expected15[0]; i++) {
        expect_open_for(&f, expected15[i]);
        fail_probe(&f);
    }
    unmake(&f);
}

static void test_hung_probes_reopen_after_max_wait(void **state)
{
    (void)state;
    fixture f = make(&(mb_breaker_opts){.half_open_max_wait_ms = 30000});
    trip_now(&f, 20);
    advance_ms(&f, 5000);
    mb_breaker_ticket t[2];
    assert_int_equal(mb_breaker_acquire(f.b, &t[0]), MB_OK);
    advance_ms(&f, 1000);
    assert_int_equal(mb_breaker_acquire(f.b, &t[1]), MB_OK);
    advance_ms(&f, 28999);
    assert_int_equal(mb_breaker_state_get(f.b), MB_BREAKER_HALF_OPEN);
    advance_ms(&f, 1); /* 30 s after the first probe */
    mb_breaker_stats s = stats(f.b);
    assert_int_equal(s.state, MB_BREAKER_OPEN);
    assert_int_equal(s.trips_total, 2);
    assert_int_equal(s.open_ms, 10000);
    /* When they finally report, they are stale. */
    mb_breaker_record(f.b, &t[0], MB_BREAKER_SUCCESS);
    mb_breaker_record(f.b, &t[1], MB_BREAKER_SUCCESS);
    s = stats(f.b);
    assert_int_equal(s.state, MB_BREAKER_OPEN);
    assert_int_equal(s.stale_total, 2);
    assert_int_equal(s.calls_total, 20);
    unmake(&f);
}

static void test_half_open_without_traffic_waits(void **state)
{
    (void)state;
    fixture f = make(NULL);
    trip_now(&f, 20);
    advance_ms(&f, 5000);
    /* Nothing for ten minutes: no probe was lost, it keeps waiting. */
    assert_int_equal(mb_breaker_state_get(f.b), MB_BREAKER_HALF_OPEN);
    advance_ms(&f, 600000);
    assert_int_equal(mb_breaker_state_get(f.b), MB_BREAKER_HALF_OPEN);
    /* Two probes that reported, then another long pause: still waiting. */
    call(f.b, MB_BREAKER_SUCCESS);
    call(f.b, MB_BREAKER_SUCCESS);
    advance_ms(&f, 600000);
    assert_int_equal(mb_breaker_state_get(f.b), MB_BREAKER_HALF_OPEN);
    /* A probe admitted now has the full wait again. */
    mb_breaker_ticket t;
    assert_int_equal(mb_breaker_acquire(f.b, &t), MB_OK);
    advance_ms(&f, 29999);
    assert_int_equal(mb_breaker_state_get(f.b), MB_BREAKER_HALF_OPEN);
    mb_breaker_record(f.b, &t, MB_BREAKER_SUCCESS);
    call(f.b, MB_BREAKER_SUCCESS);
    call(f.b, MB_BREAKER_SUCCESS);
    assert_int_equal(mb_breaker_state_get(f.b), MB_BREAKER_CLOSED);
    assert_int_equal(stats(f.b).trips_total, 1);
    unmake(&f);
}

/* ---- slow calls ---- */

/* A successful call that takes `ms` on the clock. */
static void slow_call(fixture *f, uint64_t ms)
{
    mb_breaker_ticket t;
    assert_int_equal(mb_breaker_acquire(f->b, &t), MB_OK);
    advance_ms(f, ms);
    mb_breaker_record(f->b, &t, MB_BREAKER_SUCCESS);
}

static void test_slow_calls_trip_when_configured(void **state)
{
    (void)state;
    fixture f = make(&(mb_breaker_opts){.slow_call_rate_pct = 50, .slow_call_ms = 100});
    /* Exactly the threshold is not slower than it. */
    for (unsigned i = 0; i < 30; i++)
        slow_call(&f, 100);
    mb_breaker_stats s = stats(f.b);
    assert_int_equal(s.state, MB_BREAKER_CLOSED);
    assert_int_equal(s.window_slow, 0);
    mb_breaker_reset(f.b);
    for (unsigned i = 0; i < 19; i++)
        slow_call(&f, 101);
    assert_int_equal(mb_breaker_state_get(f.b), MB_BREAKER_CLOSED);
    slow_call(&f, 101);
    s = stats(f.b);
    assert_int_equal(s.state, MB_BREAKER_OPEN);
    assert_int_equal(s.window_slow, 20);
    assert_int_equal(s.window_failures, 0);
    assert_int_equal(s.slow_rate_pct, 100.0);
    assert_int_equal(s.slow_total, 20);
    unmake(&f);

    /* An explicit duration counts the same way. */
    f = make(&(mb_breaker_opts){.slow_call_rate_pct = 50, .slow_call_ms = 100});
    for (unsigned i = 0; i < 20; i++) {
        mb_breaker_ticket t;
        assert_int_equal(mb_breaker_acquire(f.b, &t), MB_OK);
        mb_breaker_record_duration(f.b, &t, MB_BREAKER_SUCCESS, i % 2 ? 100 * MS + 1 : 100 * MS);
    }
    assert_int_equal(mb_breaker_state_get(f.b), MB_BREAKER_OPEN);
    assert_int_equal(stats(f.b).window_slow, 10);
    unmake(&f);

    /* Slow probes re-open it. */
    f = make(&(mb_breaker_opts){.slow_call_rate_pct = 50, .slow_call_ms = 100});
    for (unsigned i = 0; i < 20; i++)
        slow_call(&f, 200);
    advance_ms(&f, 5000);
    for (unsigned i = 0; i < 3; i++)
        slow_call(&f, 200);
    assert_int_equal(mb_breaker_state_get(f.b), MB_BREAKER_OPEN);
    assert_int_equal(stats(f.b).trips_total, 2);
    unmake(&f);
}

static void test_slow_calls_do_not_trip_when_not_configured(void **state)
{
    (void)state;
    fixture f = make(&(mb_breaker_opts){.slow_call_ms = 100});
    for (unsigned i = 0; i < 1000; i++)
        slow_call(&f, 5000);
    mb_breaker_stats s = stats(f.b);
    assert_int_equal(s.state, MB_BREAKER_CLOSED);
    assert_int_equal(s.window_slow, 100); /* measured, not acted on */
    assert_int_equal(s.trips_total, 0);
    unmake(&f);
}

/* ---- time window ---- */

static void test_time_window_forgets_old_failures(void **state)
{
    (void)state;
    mb_breaker_opts o = {.window = MB_BREAKER_WINDOW_TIME, .window_size = 10, .min_calls = 10};
    fixture f = make(&o);
    /* Five failures in each of seconds 0 .. 1: trips once ten are in. */
    for (unsigned i = 0; i < 5; i++)
        call(f.b, MB_BREAKER_FAILURE);
    advance_ms(&f, 9000); /* second 9: second 0 is still in */
    for (unsigned i = 0; i < 4; i++)
        call(f.b, MB_BREAKER_FAILURE);
    assert_int_equal(stats(f.b).window_calls, 9);
    call(f.b, MB_BREAKER_FAILURE);
    assert_int_equal(mb_breaker_state_get(f.b), MB_BREAKER_OPEN);
    unmake(&f);

    f = make(&o);
    for (unsigned i = 0; i < 5; i++)
        call(f.b, MB_BREAKER_FAILURE);
    advance_ms(&f, 10000); /* second 10: second 0 has left */
    assert_int_equal(stats(f.b).window_calls, 0);
    for (unsigned i = 0; i < 9; i++)
        call(f.b, MB_BREAKER_FAILURE);
    assert_int_equal(mb_breaker_state_get(f.b), MB_BREAKER_CLOSED);
    unmake(&f);

    /* Buckets expire one second at a time. */
    f = make(&o);
    for (unsigned sec = 0; sec < 10; sec++) {
        for (unsigned i = 0; i <= sec; i++)
            call(f.b, MB_BREAKER_SUCCESS);
        advance_ms(&f, 1000);
    }
    /* Second 10: seconds 1..9 hold 2 + ... + 10 = 54 calls. */
    assert_int_equal(stats(f.b).window_calls, 54);
    advance_ms(&f, 3000); /* second 13: seconds 4..9 = 5 + ... + 10 = 45 */
    assert_int_equal(stats(f.b).window_calls, 45);
    advance_ms(&f, 600000); /* far beyond: empty */
    assert_int_equal(stats(f.b).window_calls, 0);
    /* And it still counts correctly afterwards. */
    for (unsigned i = 0; i < 10; i++)
        call(f.b, MB_BREAKER_FAILURE);
    assert_int_equal(mb_breaker_state_get(f.b), MB_BREAKER_OPEN);
    unmake(&f);
}

static void test_time_window_poison_failures_spread_out(void **state)
{
    (void)state;
    /* One failure per second among 50 successes per second, for ten minutes. */
    fixture f = make(&(mb_breaker_opts){.window = MB_BREAKER_WINDOW_TIME});
    for (unsigned sec = 0; sec < 600; sec++) {
        for (unsigned i = 0; i < 51; i++)
            call(f.b, i == sec % 51 ? MB_BREAKER_FAILURE : MB_BREAKER_SUCCESS);
        advance_ms(&f, 1000);
    }
    mb_breaker_stats s = stats(f.b);
    assert_int_equal(s.trips_total, 0);
    assert_int_equal(s.window_calls, 59 * 51);
    assert_int_equal(s.window_failures, 59);
    unmake(&f);
}

/* ---- operators ---- */

static void test_forced_open_disabled_reset(void **state)
{
    (void)state;
    fixture f = make(NULL);
    mb_breaker_ticket old;
    assert_int_equal(mb_breaker_acquire(f.b, &old), MB_OK);
    mb_breaker_force_open(f.b);
    assert_int_equal(mb_breaker_state_get(f.b), MB_BREAKER_FORCED_OPEN);
    /* Forced open does not end with time. */
    for (unsigned i = 0; i < 100; i++) {
        expect_rejected(f.b);
        advance_ms(&f, 60000);
    }
    assert_int_equal(stats(f.b).rejected_total, 100);
    assert_int_equal(stats(f.b).trips_total, 0);

    mb_breaker_disable(f.b);
    assert_int_equal(mb_breaker_state_get(f.b), MB_BREAKER_DISABLED);
    for (unsigned i = 0; i < 1000; i++)
        call(f.b, MB_BREAKER_FAILURE);
    mb_breaker_stats s = stats(f.b);
    assert_int_equal(s.state, MB_BREAKER_DISABLED);
    assert_int_equal(s.window_calls, 0);
    assert_int_equal(s.calls_total, 0);
    assert_int_equal(s.failures_total, 0);

    mb_breaker_reset(f.b);
    s = stats(f.b);
    assert_int_equal(s.state, MB_BREAKER_CLOSED);
    assert_int_equal(s.window_calls, 0);
    /* The ticket from before the operator calls is stale. */
    mb_breaker_record(f.b, &old, MB_BREAKER_FAILURE);
    assert_int_equal(stats(f.b).window_calls, 0);
    assert_int_equal(stats(f.b).stale_total, 1);

    /* Reset clears a closed window and an open breaker. */
    for (unsigned i = 0; i < 19; i++)
        call(f.b, MB_BREAKER_FAILURE);
    mb_breaker_reset(f.b);
    call(f.b, MB_BREAKER_FAILURE);
    assert_int_equal(mb_breaker_state_get(f.b), MB_BREAKER_CLOSED);
    trip_now(&f, 19);
    mb_breaker_reset(f.b);
    assert_int_equal(mb_breaker_state_get(f.b), MB_BREAKER_CLOSED);
    call(f.b, MB_BREAKER_SUCCESS);
    assert_int_equal(stats(f.b).window_calls, 1);
    assert_int_equal(stats(f.b).trips_total, 1); /* totals are kept */
    unmake(&f);
}

/* ---- listener ---- */

#define MAX_SEEN 32

typedef struct seen {
    mb_breaker *b;
    unsigned n;
    mb_breaker_state from[MAX_SEEN], to[MAX_SEEN];
    mb_breaker_state observed[MAX_SEEN]; /* mb_breaker_state_get inside the listener */
    char name[MB_BREAKER_NAME_MAX + 1];
    int probe; /* take and report one probe on entering HALF_OPEN */
} seen;

static void on_change(void *ctx, const char *name, mb_breaker_state from, mb_breaker_state to)
{
    seen *s = ctx;
    assert_true(s->n < MAX_SEEN);
    unsigned i = s->n++;
    s->from[i] = from;
    s->to[i] = to;
    snprintf(s->name, sizeof s->name, "%s", name);
    /* Both calls take the breaker's lock: they would deadlock if the listener
     * ran under it. */
    s->observed[i] = mb_breaker_state_get(s->b);
    mb_breaker_ticket t;
    mb_status st = mb_breaker_acquire(s->b, &t);
    if (to == MB_BREAKER_OPEN || to == MB_BREAKER_FORCED_OPEN)
        assert_int_equal(st, MB_EBREAKER);
    if (to == MB_BREAKER_HALF_OPEN && s->probe) {
        assert_int_equal(st, MB_OK);
        mb_breaker_record(s->b, &t, MB_BREAKER_SUCCESS);
    } else if (st == MB_OK) {
        mb_breaker_record(s->b, &t, MB_BREAKER_IGNORED);
    }
}

static void test_listener_from_to_and_reentrant(void **state)
{
    (void)state;
    seen s = {0};
    fixture f = make(&(mb_breaker_opts){
        .name = "game.chat", .half_open_calls = 2, .listener = on_change, .listener_ctx = &s});
    s.b = f.b;
    s.probe = 1;
    trip_now(&f, 20);
    advance_ms(&f, 5000);
    /* This acquire moves it to HALF_OPEN; the listener takes the first probe
     * and reports success; this call gets the second and closes it. */
    call(f.b, MB_BREAKER_SUCCESS);
    mb_breaker_force_open(f.b);
    mb_breaker_force_open(f.b); /* no change: no call */
    mb_breaker_disable(f.b);
    mb_breaker_reset(f.b);
    mb_breaker_reset(f.b); /* no change: no call */

    static const mb_breaker_state from[] = {MB_BREAKER_CLOSED,      MB_BREAKER_OPEN,
                                            MB_BREAKER_HALF_OPEN,   MB_BREAKER_CLOSED,
                                            MB_BREAKER_FORCED_OPEN, MB_BREAKER_DISABLED};
    static const mb_breaker_state to[] = {MB_BREAKER_OPEN,     MB_BREAKER_HALF_OPEN,
                                          MB_BREAKER_CLOSED,   MB_BREAKER_FORCED_OPEN,
                                          MB_BREAKER_DISABLED, MB_BREAKER_CLOSED};
    assert_int_equal(s.n, 6);
    for (unsigned i = 0; i < 6; i++) {
        assert_int_equal(s.from[i], from[i]);
        assert_int_equal(s.to[i], to[i]);
        assert_int_equal(s.observed[i], to[i]);
    }
    assert_string_equal(s.name, "game.chat");
    mb_breaker_stats st = stats(f.b);
    assert_int_equal(st.state, MB_BREAKER_CLOSED);
    assert_int_equal(st.trips_total, 1);
    unmake(&f);
}

static void test_listener_on_time_driven_change_from_state_get(void **state)
{
    (void)state;
    seen s = {0};
    fixture f = make(&(mb_breaker_opts){.listener = on_change, .listener_ctx = &s});
    s.b = f.b;
    trip_now(&f, 20);
    advance_ms(&f, 5000);
    /* Observing the breaker applies the due change and tells the listener;
     * the listener's own acquire takes a probe and releases it (IGNORED). */
    assert_int_equal(mb_breaker_state_get(f.b), MB_BREAKER_HALF_OPEN);
    assert_int_equal(s.n, 2);
    assert_int_equal(s.from[1], MB_BREAKER_OPEN);
    assert_int_equal(s.to[1], MB_BREAKER_HALF_OPEN);
    assert_int_equal(stats(f.b).probes_admitted, 0);
    unmake(&f);
}

/* ---- ignored and stale outcomes ---- */

static void test_ignored_outcomes_do_not_count(void **state)
{
    (void)state;
    fixture f = make(NULL);
    for (unsigned i = 0; i < 19; i++)
        call(f.b, MB_BREAKER_FAILURE);
    for (unsigned i = 0; i < 1000; i++)
        call(f.b, MB_BREAKER_IGNORED);
    mb_breaker_stats s = stats(f.b);
    assert_int_equal(s.state, MB_BREAKER_CLOSED);
    assert_int_equal(s.window_calls, 19);
    assert_int_equal(s.calls_total, 19);
    assert_int_equal(s.ignored_total, 1000);
    /* A value outside the enum is treated as IGNORED. */
    call(f.b, (mb_breaker_outcome)42);
    assert_int_equal(stats(f.b).window_calls, 19);
    call(f.b, MB_BREAKER_FAILURE);
    assert_int_equal(mb_breaker_state_get(f.b), MB_BREAKER_OPEN);
    unmake(&f);
}

static void test_stale_tickets_do_not_decide_half_open(void **state)
{
    (void)state;
    fixture f = make(NULL);
    mb_breaker_ticket old[10];
    for (unsigned i = 0; i < 10; i++)
        assert_int_equal(mb_breaker_acquire(f.b, &old[i]), MB_OK);
    trip_now(&f, 20);
    advance_ms(&f, 5000);
    assert_int_equal(mb_breaker_state_get(f.b), MB_BREAKER_HALF_OPEN);
    /* Ten failures of calls admitted while closed arrive now. */
    for (unsigned i = 0; i < 10; i++)
        mb_breaker_record(f.b, &old[i], MB_BREAKER_FAILURE);
    mb_breaker_stats s = stats(f.b);
    assert_int_equal(s.state, MB_BREAKER_HALF_OPEN);
    assert_int_equal(s.probes_completed, 0);
    assert_int_equal(s.stale_total, 10);
    assert_int_equal(s.failures_total, 20);
    for (unsigned i = 0; i < 5; i++)
        call(f.b, MB_BREAKER_SUCCESS);
    assert_int_equal(mb_breaker_state_get(f.b), MB_BREAKER_CLOSED);

    /* A zeroed ticket, a rejected call's ticket and NULL do nothing. */
    mb_breaker_ticket zero = {{0, 0}};
    mb_breaker_record(f.b, &zero, MB_BREAKER_FAILURE);
    mb_breaker_record(f.b, NULL, MB_BREAKER_FAILURE);
    mb_breaker_record(NULL, &zero, MB_BREAKER_FAILURE);
    mb_breaker_force_open(f.b);
    mb_breaker_ticket rejected;
    assert_int_equal(mb_breaker_acquire(f.b, &rejected), MB_EBREAKER);
    mb_breaker_reset(f.b);
    mb_breaker_record(f.b, &rejected, MB_BREAKER_FAILURE);
    s = stats(f.b);
    assert_int_equal(s.window_calls, 0);
    assert_int_equal(s.stale_total, 10);

    /* A probe recorded twice counts once. */
    trip_now(&f, 20);
    advance_ms(&f, 5000);
    mb_breaker_ticket t;
    assert_int_equal(mb_breaker_acquire(f.b, &t), MB_OK);
    mb_breaker_record(f.b, &t, MB_BREAKER_FAILURE);
    mb_breaker_record(f.b, &t, MB_BREAKER_FAILURE);
    s = stats(f.b);
    assert_int_equal(s.state, MB_BREAKER_HALF_OPEN);
    assert_int_equal(s.probes_completed, 1);
    unmake(&f);
}

/* ---- metrics ---- */

static const char *sample(const char *text, const char *series)
{
    size_t n = strlen(series);
    for (const char *line = text; *line != '\0';) {
        const char *end = strchr(line, '\n');
        if (end == NULL)
            end = line + strlen(line);
        if ((size_t)(end - line) > n && strncmp(line, series, n) == 0 && line[n] == ' ')
            return line + n + 1;
        line = *end ? end + 1 : end;
    }
    return NULL;
}

static void expect_sample(const char *text, const char *series, const char *value)
{
    const char *v = sample(text, series);
    if (v == NULL)
        fail_msg("no sample %s in:\n%s", series, text);
    size_t n = strlen(value);
    if (strncmp(v, value, n) != 0 || (v[n] != '\n' && v[n] != '\0'))
        fail_msg("%s: expected %s, got %.20s", series, value, v);
}

static void test_metrics_text(void **state)
{
    (void)state;
    mb_metrics *m = NULL;
    assert_int_equal(mb_metrics_create(&m, NULL), MB_OK);
    fixture f = make(&(mb_breaker_opts){
        .name = "nats", .metrics = m, .slow_call_rate_pct = 90, .slow_call_ms = 10});
    for (unsigned i = 0; i < 5; i++)
        call(f.b, MB_BREAKER_SUCCESS);
    slow_call(&f, 11);
    call(f.b, MB_BREAKER_IGNORED);
    /* 6 successes, then 14 failures make 70 % of 20 calls. */
    trip_now(&f, 14);
    for (unsigned i = 0; i < 3; i++)
        expect_rejected(f.b);

    char *text = NULL;
    size_t len;
    assert_int_equal(mb_metrics_format(m, &text, &len, NULL), MB_OK);
    expect_sample(text, "mudbus_breaker_state{name=\"nats\"}", "1");
    expect_sample(text, "mudbus_breaker_calls_total{name=\"nats\"}", "20");
    expect_sample(text, "mudbus_breaker_failures_total{name=\"nats\"}", "14");
    expect_sample(text, "mudbus_breaker_slow_calls_total{name=\"nats\"}", "1");
    expect_sample(text, "mudbus_breaker_rejected_total{name=\"nats\"}", "3");
    expect_sample(text, "mudbus_breaker_trips_total{name=\"nats\"}", "1");
    assert_non_null(strstr(text, "# TYPE mudbus_breaker_state gauge\n"));
    assert_non_null(strstr(text, "# TYPE mudbus_breaker_trips_total counter\n"));
    free(text);

    /* The gauge follows every state. */
    advance_ms(&f, 5000);
    assert_int_equal(mb_breaker_state_get(f.b), MB_BREAKER_HALF_OPEN);
    assert_int_equal(mb_metrics_format(m, &text, &len, NULL), MB_OK);
    expect_sample(text, "mudbus_breaker_state{name=\"nats\"}", "2");
    free(text);
    mb_breaker_force_open(f.b);
    assert_int_equal(mb_metrics_format(m, &text, &len, NULL), MB_OK);
    expect_sample(text, "mudbus_breaker_state{name=\"nats\"}", "3");
    free(text);
    mb_breaker_disable(f.b);
    assert_int_equal(mb_metrics_format(m, &text, &len, NULL), MB_OK);
    expect_sample(text, "mudbus_breaker_state{name=\"nats\"}", "4");
    free(text);
    mb_breaker_reset(f.b);
    assert_int_equal(mb_metrics_format(m, &text, &len, NULL), MB_OK);
    expect_sample(text, "mudbus_breaker_state{name=\"nats\"}", "0");
    free(text);

    /* A second breaker with the same name cannot register its metrics. */
    mb_breaker *dup = NULL;
    mb_err err = {0};
    assert_int_equal(
        mb_breaker_create(&(mb_breaker_opts){.name = "nats", .metrics = m}, &dup, &err), MB_EEXIST);
    assert_null(dup);
    unmake(&f);
    mb_metrics_destroy(m);
}

/* ---- threads ---- */

#define THREADS 8
#define ROUNDS  20
#define TRIES   5000

typedef struct racer {
    mb_breaker *b;
    pthread_barrier_t *start;
    unsigned admitted;
    mb_breaker_ticket tickets[16];
} racer;

static void *racer_main(void *arg)
{
    racer *r = arg;
    pthread_barrier_wait(r->start);
    for (unsigned i = 0; i < TRIES; i++) {
        mb_breaker_ticket t;
        if (mb_breaker_acquire(r->b, &t) == MB_OK) {
            if (r->admitted < 16)
                r->tickets[r->admitted] = t;
            r->admitted++;
        }
    }
    return NULL;
}

static void test_threaded_half_open_admits_exactly_quota(void **state)
{
    (void)state;
    fixture f = make(&(mb_breaker_opts){
        .window_size = 4, .min_calls = 4, .open_ms = 100, .open_backoff = 1, .half_open_calls = 5});
    trip_now(&f, 4);
    uint64_t rejected_before = 0;
    for (unsigned round = 0; round < ROUNDS; round++) {
        advance_ms(&f, 100);
        pthread_barrier_t start;
        pthread_barrier_init(&start, NULL, THREADS);
        racer r[THREADS];
        pthread_t th[THREADS];
        for (unsigned i = 0; i < THREADS; i++) {
            r[i] = (racer){.b = f.b, .start = &start};
            assert_int_equal(pthread_create(&th[i], NULL, racer_main, &r[i]), 0);
        }
        unsigned admitted = 0;
        for (unsigned i = 0; i < THREADS; i++) {
            assert_int_equal(pthread_join(th[i], NULL), 0);
            admitted += r[i].admitted;
        }
        pthread_barrier_destroy(&start);
        assert_int_equal(admitted, 5);
        mb_breaker_stats s = stats(f.b);
        assert_int_equal(s.state, MB_BREAKER_HALF_OPEN);
        assert_int_equal(s.probes_admitted, 5);
        assert_int_equal(s.rejected_total - rejected_before, THREADS * TRIES - 5);
        rejected_before = s.rejected_total;
        /* Fail the round: three failures re-open it. */
        for (unsigned i = 0; i < THREADS; i++)
            for (unsigned k = 0; k < r[i].admitted; k++)
                mb_breaker_record(f.b, &r[i].tickets[k], MB_BREAKER_FAILURE);
        assert_int_equal(mb_breaker_state_get(f.b), MB_BREAKER_OPEN);
    }
    assert_int_equal(stats(f.b).trips_total, ROUNDS + 1);
    unmake(&f);
}

typedef struct worker {
    mb_breaker *b;
    mb_manual_clock *mc;
    pthread_barrier_t *start;
} worker;

static void *worker_main(void *arg)
{
    worker *w = arg;
    pthread_barrier_wait(w->start);
    for (unsigned i = 0; i < TRIES; i++) {
        mb_breaker_ticket t;
        if (mb_breaker_acquire(w->b, &t) != MB_OK)
            continue;
        mb_manual_clock_advance(w->mc, 1000);
        mb_breaker_record(w->b, &t, i % 4 == 3 ? MB_BREAKER_FAILURE : MB_BREAKER_SUCCESS);
    }
    return NULL;
}

/* ---- the lock-free path of CLOSED (see breaker.c) ---- */

/* Successes counted without the lock land in the window in order: a failure
 * recorded after three of them evicts the oldest of them, not a later one. */
static void test_fast_successes_keep_window_order(void **state)
{
    (void)state;
    fixture f = make(&(mb_breaker_opts){.window_size = 4, .min_calls = 4, .failure_rate_pct = 50});
    for (unsigned i = 0; i < 3; i++)
        call(f.b, MB_BREAKER_SUCCESS);
    call(f.b, MB_BREAKER_FAILURE); /* S S S F: 25 % */
    mb_breaker_stats s = stats(f.b);
    assert_int_equal(s.state, MB_BREAKER_CLOSED);
    assert_int_equal(s.window_calls, 4);
    assert_int_equal(s.window_failures, 1);
    call(f.b, MB_BREAKER_SUCCESS); /* S S F S */
    call(f.b, MB_BREAKER_SUCCESS); /* S F S S */
    call(f.b, MB_BREAKER_FAILURE); /* F S S F: 50 % */
    assert_int_equal(mb_breaker_state_get(f.b), MB_BREAKER_OPEN);
    s = stats(f.b);
    assert_int_equal(s.calls_total, 7);
    assert_int_equal(s.failures_total, 2);
    unmake(&f);
}

/* Below min_calls, failures already in the window can make the success that
 * fills it to min_calls trip the breaker: that success must trip it at once,
 * not at some later fold. */
static void test_fast_success_trips_at_min_calls(void **state)
{
    (void)state;
    fixture f =
        make(&(mb_breaker_opts){.window_size = 100, .min_calls = 10, .failure_rate_pct = 50});
    for (unsigned i = 0; i < 5; i++)
        call(f.b, MB_BREAKER_FAILURE);
    for (unsigned i = 0; i < 4; i++) {
        call(f.b, MB_BREAKER_SUCCESS);
        assert_int_equal(mb_breaker_state_get(f.b), MB_BREAKER_CLOSED);
    }
    call(f.b, MB_BREAKER_SUCCESS); /* 10 calls, 5 failures */
    expect_rejected(f.b);
    assert_int_equal(stats(f.b).trips_total, 1);
    /* With fewer failures the successes never trip it. */
    mb_breaker_reset(f.b);
    for (unsigned i = 0; i < 4; i++)
        call(f.b, MB_BREAKER_FAILURE);
    for (unsigned i = 0; i < 200; i++)
        call(f.b, MB_BREAKER_SUCCESS);
    mb_breaker_stats s = stats(f.b);
    assert_int_equal(s.state, MB_BREAKER_CLOSED);
    assert_int_equal(s.window_calls, 100);
    assert_int_equal(s.window_failures, 0);
    unmake(&f);
}

/* Many successes (more than the window, more than one fold's batch) are all
 * counted, in the window, the totals and the metric. */
static void test_fast_successes_counted_exactly(void **state)
{
    (void)state;
    mb_metrics *m = NULL;
    assert_int_equal(mb_metrics_create(&m, NULL), MB_OK);
    fixture f = make(&(mb_breaker_opts){.name = "fast", .metrics = m, .window_size = 1000});
    const unsigned n = 200000;
    for (unsigned i = 0; i < n; i++)
        call(f.b, MB_BREAKER_SUCCESS);
    call(f.b, MB_BREAKER_FAILURE);
    mb_breaker_stats s = stats(f.b);
    assert_int_equal(s.calls_total, n + 1);
    assert_int_equal(s.window_calls, 1000);
    assert_int_equal(s.window_failures, 1);
    char *text = NULL;
    assert_int_equal(mb_metrics_format(m, &text, NULL, NULL), MB_OK);
    expect_sample(text, "mudbus_breaker_calls_total{name=\"fast\"}", "200001");
    free(text);
    unmake(&f);
    mb_metrics_destroy(m);
}

/* As test_threaded_closed_totals_exact with a COUNT window, where successes
 * take the lock-free path while failures fold them under the lock. */
static void test_threaded_fast_totals_exact(void **state)
{
    (void)state;
    fixture f = make(&(mb_breaker_opts){.window_size = 1000});
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, THREADS);
    worker w[THREADS];
    pthread_t th[THREADS];
    for (unsigned i = 0; i < THREADS; i++) {
        w[i] = (worker){f.b, f.mc, &start};
        assert_int_equal(pthread_create(&th[i], NULL, worker_main, &w[i]), 0);
    }
    for (unsigned i = 0; i < THREADS; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    pthread_barrier_destroy(&start);
    mb_breaker_stats s = stats(f.b);
    assert_int_equal(s.state, MB_BREAKER_CLOSED);
    assert_int_equal(s.calls_total, THREADS * TRIES);
    assert_int_equal(s.failures_total, THREADS * TRIES / 4);
    assert_int_equal(s.window_calls, THREADS * TRIES < 1000 ? THREADS * TRIES : 1000);
    assert_true(s.window_failures <= s.window_calls / 4 + THREADS);
    assert_int_equal(s.stale_total, 0);
    unmake(&f);
}

/* A ticket taken before an operator call is stale afterwards, also when the
 * breaker is closed on both sides; a slow success is counted as slow. */
static void test_fast_stale_and_slow(void **state)
{
    (void)state;
    fixture f = make(&(mb_breaker_opts){.slow_call_ms = 100});
    mb_breaker_ticket t;
    assert_int_equal(mb_breaker_acquire(f.b, &t), MB_OK);
    mb_breaker_reset(f.b);
    mb_breaker_record(f.b, &t, MB_BREAKER_SUCCESS);
    mb_breaker_stats s = stats(f.b);
    assert_int_equal(s.stale_total, 1);
    assert_int_equal(s.calls_total, 0);
    assert_int_equal(mb_breaker_acquire(f.b, &t), MB_OK);
    advance_ms(&f, 101);
    mb_breaker_record(f.b, &t, MB_BREAKER_SUCCESS);
    call(f.b, MB_BREAKER_SUCCESS);
    s = stats(f.b);
    assert_int_equal(s.calls_total, 2);
    assert_int_equal(s.slow_total, 1);
    assert_int_equal(s.window_slow, 1);
    unmake(&f);
}

static void test_threaded_closed_totals_exact(void **state)
{
    (void)state;
    fixture f = make(&(mb_breaker_opts){.window = MB_BREAKER_WINDOW_TIME, .window_size = 5});
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, THREADS);
    worker w[THREADS];
    pthread_t th[THREADS];
    for (unsigned i = 0; i < THREADS; i++) {
        w[i] = (worker){f.b, f.mc, &start};
        assert_int_equal(pthread_create(&th[i], NULL, worker_main, &w[i]), 0);
    }
    for (unsigned i = 0; i < THREADS; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    pthread_barrier_destroy(&start);
    mb_breaker_stats s = stats(f.b);
    assert_int_equal(s.state, MB_BREAKER_CLOSED);
    assert_int_equal(s.calls_total, THREADS * TRIES);
    assert_int_equal(s.failures_total, THREADS * TRIES / 4);
    assert_int_equal(s.window_calls, THREADS * TRIES); /* 40 ms: all in the window */
    assert_int_equal(s.rejected_total, 0);
    unmake(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_state_names),
        cmocka_unit_test(test_create_defaults),
        cmocka_unit_test(test_create_invalid_options),
        cmocka_unit_test(test_single_poison_failure_never_trips),
        cmocka_unit_test(test_burst_trips_at_min_calls_not_before),
        cmocka_unit_test(test_count_window_slides),
        cmocka_unit_test(test_min_calls_clamped_to_count_window),
        cmocka_unit_test(test_failure_rate_off),
        cmocka_unit_test(test_open_rejects_for_open_ms_then_half_open),
        cmocka_unit_test(test_half_open_admits_exactly_quota),
        cmocka_unit_test(test_half_open_closes_after_successful_probes),
        cmocka_unit_test(test_half_open_decides_from_probe_failure_rate),
        cmocka_unit_test(test_reopen_backoff_grows_to_cap_and_resets),
        cmocka_unit_test(test_hung_probes_reopen_after_max_wait),
        cmocka_unit_test(test_half_open_without_traffic_waits),
        cmocka_unit_test(test_slow_calls_trip_when_configured),
        cmocka_unit_test(test_slow_calls_do_not_trip_when_not_configured),
        cmocka_unit_test(test_time_window_forgets_old_failures),
        cmocka_unit_test(test_time_window_poison_failures_spread_out),
        cmocka_unit_test(test_forced_open_disabled_reset),
        cmocka_unit_test(test_listener_from_to_and_reentrant),
        cmocka_unit_test(test_listener_on_time_driven_change_from_state_get),
        cmocka_unit_test(test_ignored_outcomes_do_not_count),
        cmocka_unit_test(test_stale_tickets_do_not_decide_half_open),
        cmocka_unit_test(test_metrics_text),
        cmocka_unit_test(test_threaded_half_open_admits_exactly_quota),
        cmocka_unit_test(test_threaded_closed_totals_exact),
        cmocka_unit_test(test_fast_successes_keep_window_order),
        cmocka_unit_test(test_fast_success_trips_at_min_calls),
        cmocka_unit_test(test_fast_successes_counted_exactly),
        cmocka_unit_test(test_fast_stale_and_slow),
        cmocka_unit_test(test_threaded_fast_totals_exact),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
