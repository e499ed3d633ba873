/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for the gateway's token buckets (src/gateway/ratelimit.c): a
 * fresh bucket allows a burst of exactly per_minute, a refusal reports the
 * exact wait (a take at now + retry_after_ms succeeds, one millisecond earlier
 * it fails), refill over time at per_minute / 60 s including rates that do
 * not divide a minute evenly, no drift however often a bucket is asked,
 * unlimited buckets, a clock that goes backwards, huge gaps and timestamps
 * near UINT64_MAX, and a rate lowered between calls. Time is passed in; no
 * sleeps.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "ratelimit.h"

static const uint32_t protocol_rates[] = {15, 20, 10, 5, 30, 100, 1, 7, 13, 59, 61, 1000};

#define NRATES (sizeof protocol_rates / sizeof protocol_rates[0])

static gw_bucket fresh(void)
{
    gw_bucket b;
    memset(&b, 0, sizeof b);
    return b;
}

/* Take until refused; the number taken. */
static unsigned drain(gw_bucket *b, uint32_t pm, uint64_t now)
{
    unsigned n = 0;
    while (gw_bucket_take(b, pm, now, NULL)) {
        n++;
        assert_true(n <= pm);
    }
    return n;
}

/* The refusal at `now` says r; a copy of the bucket refuses at now + r - 1
 * and accepts at now + r. */
static uint64_t check_retry_exact(gw_bucket *b, uint32_t pm, uint64_t now)
{
    uint64_t r = 0;
    assert_false(gw_bucket_take(b, pm, now, &r));
    assert_true(r >= 1);
    gw_bucket c = *b;
    if (r > 1) {
        uint64_t r2 = 0;
        if (gw_bucket_take(&c, pm, now + r - 1, &r2))
            fail_msg("per_minute %u: took at now + %llu - 1", pm, (unsigned long long)r);
        assert_int_equal(r2, 1);
    }
    c = *b;
    if (!gw_bucket_take(&c, pm, now + r, NULL))
        fail_msg("per_minute %u: refused at now + %llu", pm, (unsigned long long)r);
    return r;
}

static void test_size(void **state)
{
    (void)state;
    assert_int_equal(sizeof(gw_bucket), 16);
}

static void test_burst_then_refuse(void **state)
{
    (void)state;
    for (size_t i = 0; i < NRATES; i++) {
        uint32_t pm = protocol_rates[i];
        gw_bucket b = fresh();
        assert_int_equal(drain(&b, pm, 1000), pm);
        uint64_t r = 0;
        assert_false(gw_bucket_take(&b, pm, 1000, &r));
        /* Empty: one token takes a whole 60000 / pm ms, rounded up to the
         * refill step (60 / gcd(pm, 60) ms). */
        uint64_t step = 60;
        for (uint32_t g = 60; g > 0; g--) {
            if (pm % g == 0 && 60 % g == 0) {
                step = 60 / g;
                break;
            }
        }
        uint64_t exact = (60000 + pm - 1) / pm;
        assert_true(r >= exact);
        assert_true(r < exact + step);
        check_retry_exact(&b, pm, 1000);
    }
}

static void test_exact_values(void **state)
{
    (void)state;
    /* say: 15 per minute, one token per 4 s. */
    gw_bucket b = fresh();
    assert_int_equal(drain(&b, 15, 5000), 15);
    uint64_t r = 0;
    assert_false(gw_bucket_take(&b, 15, 5000, &r));
    assert_int_equal(r, 4000);
    assert_false(gw_bucket_take(&b, 15, 6500, &r));
    assert_int_equal(r, 2500);
    assert_false(gw_bucket_take(&b, 15, 8999, &r));
    assert_int_equal(r, 1);
    assert_true(gw_bucket_take(&b, 15, 9000, &r));
    assert_false(gw_bucket_take(&b, 15, 9000, &r));
    assert_int_equal(r, 4000);

    /* whisper: 5 per minute, one per 12 s. */
    b = fresh();
    assert_int_equal(drain(&b, 5, 1), 5);
    assert_false(gw_bucket_take(&b, 5, 1, &r));
    assert_int_equal(r, 12000);

    /* system: 100 per minute, one per 600 ms. */
    b = fresh();
    assert_int_equal(drain(&b, 100, 77), 100);
    assert_false(gw_bucket_take(&b, 100, 77, &r));
    assert_int_equal(r, 600);
    assert_false(gw_bucket_take(&b, 100, 377, &r));
    assert_int_equal(r, 300);

    /* 7 per minute: 8571.4 ms per token; credited in 60 ms steps of 7 milli,
     * so 143 steps. */
    b = fresh();
    assert_int_equal(drain(&b, 7, 10), 7);
    assert_false(gw_bucket_take(&b, 7, 10, &r));
    assert_int_equal(r, 8580);

    /* A NULL retry pointer is allowed. */
    assert_false(gw_bucket_take(&b, 7, 10, NULL));
}

static void test_refill(void **state)
{
    (void)state;
    gw_bucket b = fresh();
    assert_int_equal(drain(&b, 15, 1000), 15);
    /* 20 s later: 5 tokens. */
    assert_int_equal(drain(&b, 15, 21000), 5);
    /* A minute later: full again, never more than the burst. */
    assert_int_equal(drain(&b, 15, 81000), 15);
    assert_int_equal(drain(&b, 15, 81000 + 3600000), 15);

    /* Steady use at exactly the rate never gets refused. */
    b = fresh();
    for (uint64_t t = 0; t < 100; t++)
        assert_true(gw_bucket_take(&b, 15, 100000 + t * 4000, NULL));
    /* ... and 15 extra are available as a burst on top (bucket stays full). */
    assert_int_equal(drain(&b, 15, 100000 + 99 * 4000), 14);
}

/* Asking every millisecond loses nothing: the refill is exact. */
static void test_no_drift(void **state)
{
    (void)state;
    for (size_t i = 0; i < NRATES; i++) {
        uint32_t pm = protocol_rates[i];
        gw_bucket b = fresh();
        uint64_t t0 = 50;
        assert_int_equal(drain(&b, pm, t0), pm);
        unsigned got = 0;
        /* Over ten minutes, asking every ms, exactly 10 * pm tokens come. */
        for (uint64_t t = t0 + 1; t <= t0 + 600000; t++) {
            if (gw_bucket_take(&b, pm, t, NULL))
                got++;
        }
        if (got != 10 * pm)
            fail_msg("per_minute %u: %u tokens in ten minutes", pm, got);
    }
}

/* After any sequence of refusals, retry_after_ms stays exact. */
static void test_retry_exact_after_polling(void **state)
{
    (void)state;
    for (size_t i = 0; i < NRATES; i++) {
        uint32_t pm = protocol_rates[i];
        gw_bucket b = fresh();
        drain(&b, pm, 1);
        uint64_t now = 1;
        for (int k = 0; k < 50; k++) {
            now += (uint64_t)(k * 37 % 11) + 1;
            uint64_t r = 0;
            if (gw_bucket_take(&b, pm, now, &r))
                continue;
            gw_bucket c = b;
            check_retry_exact(&c, pm, now);
        }
    }
}

static void test_unlimited(void **state)
{
    (void)state;
    gw_bucket b = fresh();
    uint64_t r = 12345;
    for (int i = 0; i < 100000; i++)
        assert_true(gw_bucket_take(&b, 0, 5, &r));
    assert_int_equal(r, 12345);
    assert_int_equal(b.stamp_ms, 0);
}

static void test_clock_backwards(void **state)
{
    (void)state;
    gw_bucket b = fresh();
    assert_int_equal(drain(&b, 15, 100000), 15);
    uint64_t r = 0;
    /* Earlier than the last call: no refill, and a sane wait. */
    assert_false(gw_bucket_take(&b, 15, 50000, &r));
    assert_int_equal(r, 4000);
    assert_false(gw_bucket_take(&b, 15, 0, &r));
    assert_true(r >= 4000 && r <= 4001);
    /* Time then moves on from the new reading. */
    assert_false(gw_bucket_take(&b, 15, 3999, NULL));
    assert_true(gw_bucket_take(&b, 15, 4001, NULL));

    /* A bucket first used at time 0 is not mistaken for a fresh one. */
    b = fresh();
    assert_int_equal(drain(&b, 5, 0), 5);
    assert_false(gw_bucket_take(&b, 5, 0, &r));
    assert_false(gw_bucket_take(&b, 5, 1, &r));
    assert_int_equal(drain(&b, 5, 0), 0);
}

static void test_large_values(void **state)
{
    (void)state;
    gw_bucket b = fresh();
    uint64_t r = 0;
    /* Near the end of time: no overflow anywhere. */
    uint64_t t = UINT64_MAX - 10;
    assert_int_equal(drain(&b, 15, t), 15);
    assert_false(gw_bucket_take(&b, 15, t, &r));
    assert_int_equal(r, 4000);
    assert_true(gw_bucket_take(&b, 15, UINT64_MAX, &r) == false);
    /* A gap of 2^63 ms fills the bucket, and only to its burst. */
    b = fresh();
    drain(&b, 15, 1);
    assert_int_equal(drain(&b, 15, (uint64_t)1 << 63), 15);
    /* Gaps just below and at a minute. */
    b = fresh();
    drain(&b, 30, 10);
    assert_int_equal(drain(&b, 30, 10 + 59999), 29);
    b = fresh();
    drain(&b, 30, 10);
    assert_int_equal(drain(&b, 30, 10 + 60000), 30);

    /* Huge rates: capped at 4294967 per minute, no overflow. */
    b = fresh();
    for (int i = 0; i < 1000; i++)
        assert_true(gw_bucket_take(&b, UINT32_MAX, 5, NULL));
    b = fresh();
    b.stamp_ms = 5;
    b.milli = 0;
    /* Such a rate is credited in 60 ms steps of 4294 tokens. */
    assert_false(gw_bucket_take(&b, UINT32_MAX, 5, &r));
    assert_int_equal(r, 60);
    assert_false(gw_bucket_take(&b, UINT32_MAX, 64, &r));
    assert_int_equal(drain(&b, UINT32_MAX, 65), 4294);
}

/* Lowering the rate caps a full bucket to the new burst. */
static void test_rate_lowered(void **state)
{
    (void)state;
    gw_bucket b = fresh();
    assert_true(gw_bucket_take(&b, 100, 1000, NULL));
    assert_int_equal(drain(&b, 10, 1000), 10);
    uint64_t r = 0;
    assert_false(gw_bucket_take(&b, 10, 1000, &r));
    assert_int_equal(r, 6000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_size),         cmocka_unit_test(test_burst_then_refuse),
        cmocka_unit_test(test_exact_values), cmocka_unit_test(test_refill),
        cmocka_unit_test(test_no_drift),     cmocka_unit_test(test_retry_exact_after_polling),
        cmocka_unit_test(test_unlimited),    cmocka_unit_test(test_clock_backwards),
        cmocka_unit_test(test_large_values), cmocka_unit_test(test_rate_lowered),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
