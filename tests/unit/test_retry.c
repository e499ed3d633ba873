/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for retry: policy defaults and refusals, jitter names, the seeded
 * generator (same seed, same sequence; unbiased ranges), the exact bounds of
 * every jitter kind over many seeds, the spread of full jitter, saturation at
 * the cap for large attempt numbers, the deadline and attempt limits, the
 * retryable classification of every status in MB_STATUS_MAP, and the retry
 * budget: costs, refusals, refunds, metrics and exact accounting under
 * concurrent use. Everything is deterministic: seeded generators, no clocks.
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

#include "mudbus/metrics.h"
#include "mudbus/retry.h"

/* ---- helpers ---- */

static mb_retry_policy policy(mb_jitter j, unsigned max_attempts, uint64_t base, uint64_t cap,
                              uint64_t deadline)
{
    mb_retry_policy p;
    mb_retry_policy_default(&p);
    p.jitter = j;
    p.max_attempts = max_attempts;
    p.base_delay_ms = base;
    p.max_delay_ms = cap;
    p.deadline_ms = deadline;
    assert_int_equal(mb_retry_policy_check(&p, NULL), MB_OK);
    return p;
}

/* min(cap, base * 2^(n-1)) computed the slow, obviously-correct way. */
static uint64_t ceiling_ref(uint64_t base, uint64_t cap, unsigned n)
{
    uint64_t c = base;
    for (unsigned i = 1; i < n; i++) {
        if (c > cap / 2)
            return cap;
        c *= 2;
    }
    return c < cap ? c : cap;
}

static uint64_t delay_ok(const mb_retry_policy *p, unsigned attempts, uint64_t prev,
                         uint64_t elapsed, mb_rng *rng)
{
    uint64_t d = UINT64_MAX;
    assert_int_equal(mb_retry_next_delay(p, attempts, prev, elapsed, rng, &d), MB_OK);
    assert_true(d <= p->max_delay_ms);
    return d;
}

static char *expose(mb_metrics *m)
{
    char *text = NULL;
    size_t len = 0;
    assert_int_equal(mb_metrics_format(m, &text, &len, NULL), MB_OK);
    assert_non_null(text);
    return text;
}

/* True when `text` holds exactly the line `line`. */
static int has_line(const char *text, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = text; (p = strstr(p, line)) != NULL; p++) {
        if ((p == text || p[-1] == '\n') && (p[n] == '\n' || p[n] == '\0'))
            return 1;
    }
    return 0;
}

/* ---- policy and names ---- */

static void test_policy_defaults(void **state)
{
    (void)state;
    mb_retry_policy p;
    memset(&p, 0xab, sizeof p);
    mb_retry_policy_default(&p);
    assert_int_equal(p.max_attempts, 4);
    assert_int_equal(p.base_delay_ms, 50);
    assert_int_equal(p.max_delay_ms, 5000);
    assert_int_equal(p.deadline_ms, 30000);
    assert_int_equal(p.jitter, MB_JITTER_FULL);
    mb_err err = {0};
    assert_int_equal(mb_retry_policy_check(&p, &err), MB_OK);
    assert_int_equal(err.code, MB_OK);
}

static void expect_refused(const mb_retry_policy *p, const char *why)
{
    mb_err err = {0};
    assert_int_equal(mb_retry_policy_check(p, &err), MB_EINVAL);
    assert_int_equal(err.code, MB_EINVAL);
    if (strstr(err.msg, why) == NULL)
        fail_msg("message '%s' does not mention '%s'", err.msg, why);
    /* A policy the check refuses is refused by next_delay too. */
    mb_rng rng;
    mb_rng_seed(&rng, 1);
    uint64_t d = 77;
    assert_int_equal(mb_retry_next_delay(p, 1, 0, 0, &rng, &d), MB_EINVAL);
    assert_int_equal(d, 77);
}

static void test_policy_check_refusals(void **state)
{
    (void)state;
    mb_retry_policy p;
    assert_int_equal(mb_retry_policy_check(NULL, NULL), MB_EINVAL);

    mb_retry_policy_default(&p);
    p.max_attempts = 0;
    expect_refused(&p, "max_attempts");
    p.max_attempts = 101;
    expect_refused(&p, "max_attempts");
    p.max_attempts = 100;
    assert_int_equal(mb_retry_policy_check(&p, NULL), MB_OK);
    p.max_attempts = 1;
    assert_int_equal(mb_retry_policy_check(&p, NULL), MB_OK);

    mb_retry_policy_default(&p);
    p.base_delay_ms = 0;
    expect_refused(&p, "base_delay_ms");
    p.base_delay_ms = 5001;
    expect_refused(&p, "base_delay_ms");
    p.base_delay_ms = 5000; /* equal to the cap is fine */
    assert_int_equal(mb_retry_policy_check(&p, NULL), MB_OK);

    mb_retry_policy_default(&p);
    p.max_delay_ms = 0;
    expect_refused(&p, "max_delay_ms");

    mb_retry_policy_default(&p);
    p.jitter = (mb_jitter)4;
    expect_refused(&p, "jitter");
    p.jitter = (mb_jitter)-1;
    expect_refused(&p, "jitter");

    /* First error wins: an mb_err that holds one already is not overwritten. */
    mb_err err = {0};
    mb_err_set(&err, MB_EIO, "earlier");
    mb_retry_policy_default(&p);
    p.max_attempts = 0;
    assert_int_equal(mb_retry_policy_check(&p, &err), MB_EINVAL);
    assert_int_equal(err.code, MB_EIO);
    assert_string_equal(err.msg, "earlier");
}

static void test_jitter_names(void **state)
{
    (void)state;
    static const struct {
        mb_jitter j;
        const char *name;
    } names[] = {{MB_JITTER_FULL, "full"},
                 {MB_JITTER_NONE, "none"},
                 {MB_JITTER_EQUAL, "equal"},
                 {MB_JITTER_DECORRELATED, "decorrelated"}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        assert_string_equal(mb_jitter_name(names[i].j), names[i].name);
        mb_jitter out = (mb_jitter)99;
        assert_int_equal(mb_jitter_parse(names[i].name, &out), MB_OK);
        assert_int_equal(out, names[i].j);
    }
    assert_null(mb_jitter_name((mb_jitter)4));
    assert_null(mb_jitter_name((mb_jitter)-1));
    mb_jitter out = MB_JITTER_EQUAL;
    assert_int_equal(mb_jitter_parse("Full", &out), MB_EINVAL);
    assert_int_equal(mb_jitter_parse("", &out), MB_EINVAL);
    assert_int_equal(mb_jitter_parse("full ", &out), MB_EINVAL);
    assert_int_equal(mb_jitter_parse(NULL, &out), MB_EINVAL);
    assert_int_equal(mb_jitter_parse("full", NULL), MB_EINVAL);
    assert_int_equal(out, MB_JITTER_EQUAL);
}

/* ---- generator ---- */

static void test_rng_same_seed_same_sequence(void **state)
{
    (void)state;
    mb_rng a, b, c;
    mb_rng_seed(&a, 42);
    mb_rng_seed(&b, 42);
    mb_rng_seed(&c, 43);
    int differ = 0;
    for (int i = 0; i < 1000; i++) {
        uint64_t x = mb_rng_next(&a);
        assert_int_equal(x, mb_rng_next(&b));
        differ += x != mb_rng_next(&c);
    }
    assert_true(differ > 990);

    /* Seed 0 is allowed and does not give a stuck generator. */
    mb_rng z;
    mb_rng_seed(&z, 0);
    uint64_t first = mb_rng_next(&z);
    int changes = 0;
    for (int i = 0; i < 100; i++)
        changes += mb_rng_next(&z) != first;
    assert_true(changes >= 99);
}

static void test_rng_known_values(void **state)
{
    (void)state;
    /* xoroshiro128** from the state {1, 2}: the first outputs of the
     * reference algorithm (Blackman and Vigna), computed independently with
     * a Python transcription of it. */
    mb_rng r = {{1, 2}};
    assert_int_equal(mb_rng_next(&r), UINT64_C(5760));
    assert_int_equal(mb_rng_next(&r), UINT64_C(97769243520));
    assert_int_equal(mb_rng_next(&r), UINT64_C(9706862127477703552));
}

static void test_rng_range_bounds_and_spread(void **state)
{
    (void)state;
    mb_rng r;
    mb_rng_seed(&r, 7);
    assert_int_equal(mb_rng_range(&r, 5, 5), 5);
    assert_int_equal(mb_rng_range(&r, 9, 3), 9);
    assert_int_equal(mb_rng_range(&r, UINT64_MAX, UINT64_MAX), UINT64_MAX);

    /* A small range: every value appears, roughly equally often. */
    unsigned counts[7] = {0};
    for (int i = 0; i < 70000; i++) {
        uint64_t x = mb_rng_range(&r, 10, 16);
        assert_true(x >= 10 && x <= 16);
        counts[x - 10]++;
    }
    for (int i = 0; i < 7; i++)
        assert_true(counts[i] > 9000 && counts[i] < 11000);

    /* Near the top of the type: no overflow, inclusive upper end reachable. */
    int top = 0;
    for (int i = 0; i < 1000; i++) {
        uint64_t x = mb_rng_range(&r, UINT64_MAX - 1, UINT64_MAX);
        assert_true(x >= UINT64_MAX - 1);
        top += x == UINT64_MAX;
    }
    assert_true(top > 400 && top < 600);

    /* The full range does not loop or fail. */
    for (int i = 0; i < 100; i++)
        (void)mb_rng_range(&r, 0, UINT64_MAX);

    /* No modulo bias. With 3 * 2^62 values, a plain `x % n` would give the
     * lowest third of the range twice the chance of the others (1/2 instead
     * of 1/3); rejection sampling keeps the three thirds equal. */
    uint64_t n3 = UINT64_C(3) << 62;
    unsigned thirds[3] = {0};
    for (int i = 0; i < 6000; i++) {
        uint64_t x = mb_rng_range(&r, 0, n3 - 1);
        assert_true(x < n3);
        thirds[x >> 62]++;
    }
    for (int i = 0; i < 3; i++)
        assert_true(thirds[i] > 1800 && thirds[i] < 2200);
}

/* ---- delays ---- */

static void test_none_exact_values(void **state)
{
    (void)state;
    mb_retry_policy p = policy(MB_JITTER_NONE, 100, 50, 5000, 0);
    mb_rng rng;
    mb_rng_seed(&rng, 1);
    static const uint64_t want[] = {50, 100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000};
    for (unsigned n = 1; n <= 10; n++)
        assert_int_equal(delay_ok(&p, n, 0, 0, &rng), want[n - 1]);
    for (unsigned n = 11; n < 100; n++)
        assert_int_equal(delay_ok(&p, n, 0, 0, &rng), 5000);
    /* A cap that is not base times a power of two. */
    p = policy(MB_JITTER_NONE, 10, 3, 20, 0);
    assert_int_equal(delay_ok(&p, 3, 0, 0, &rng), 12);
    assert_int_equal(delay_ok(&p, 4, 0, 0, &rng), 20);
    /* base == cap: every delay is the cap. */
    p = policy(MB_JITTER_NONE, 10, 250, 250, 0);
    for (unsigned n = 1; n < 10; n++)
        assert_int_equal(delay_ok(&p, n, 0, 0, &rng), 250);
}

static void test_full_jitter_bounds_many_seeds(void **state)
{
    (void)state;
    mb_retry_policy p = policy(MB_JITTER_FULL, 100, 50, 5000, 0);
    uint64_t max_seen[100] = {0};
    for (uint64_t seed = 0; seed < 500; seed++) {
        mb_rng rng;
        mb_rng_seed(&rng, seed);
        for (unsigned n = 1; n < 100; n++) {
            uint64_t d = delay_ok(&p, n, 0, 0, &rng);
            uint64_t c = ceiling_ref(50, 5000, n);
            if (d > c)
                fail_msg("seed %llu attempt %u: %llu above %llu", (unsigned long long)seed, n,
                         (unsigned long long)d, (unsigned long long)c);
            if (d > max_seen[n])
                max_seen[n] = d;
        }
    }
    /* The ceiling grows: later attempts do reach beyond earlier ceilings. */
    assert_true(max_seen[1] > 40);
    assert_true(max_seen[4] > 350);
    assert_true(max_seen[20] > 4900);
}

static void test_equal_jitter_bounds_many_seeds(void **state)
{
    (void)state;
    mb_retry_policy p = policy(MB_JITTER_EQUAL, 100, 7, 4999, 0);
    int hit_low = 0, hit_high = 0;
    for (uint64_t seed = 0; seed < 500; seed++) {
        mb_rng rng;
        mb_rng_seed(&rng, seed * 7919 + 1);
        for (unsigned n = 1; n < 100; n++) {
            uint64_t d = delay_ok(&p, n, 0, 0, &rng);
            uint64_t c = ceiling_ref(7, 4999, n);
            if (d < c / 2 || d > c)
                fail_msg("seed %llu attempt %u: %llu outside [%llu, %llu]",
                         (unsigned long long)seed, n, (unsigned long long)d,
                         (unsigned long long)(c / 2), (unsigned long long)c);
            /* With ceiling 7 ([3, 7]) both ends are reachable. */
            if (n == 1) {
                hit_low += d == 3;
                hit_high += d == 7;
            }
        }
    }
    assert_true(hit_low > 0);
    assert_true(hit_high > 0);
}

static void test_decorrelated_bounds_many_seeds(void **state)
{
    (void)state;
    mb_retry_policy p = policy(MB_JITTER_DECORRELATED, 100, 20, 3000, 0);
    int reached_cap = 0;
    for (uint64_t seed = 0; seed < 500; seed++) {
        mb_rng rng;
        mb_rng_seed(&rng, seed);
        uint64_t prev = 0;
        for (unsigned n = 1; n < 100; n++) {
            uint64_t d = delay_ok(&p, n, prev, 0, &rng);
            uint64_t from = prev != 0 ? prev : 20;
            uint64_t hi = from * 3 < 3000 ? from * 3 : 3000;
            if (d < 20 || d > hi)
                fail_msg("seed %llu attempt %u prev %llu: %llu outside [20, %llu]",
                         (unsigned long long)seed, n, (unsigned long long)prev,
                         (unsigned long long)d, (unsigned long long)hi);
            reached_cap += d == 3000;
            prev = d;
        }
    }
    assert_true(reached_cap > 0);

    /* The first retry (no previous delay) draws from [base, 3 * base], over
     * the whole of it. */
    uint64_t lo = UINT64_MAX, hi = 0;
    for (uint64_t seed = 0; seed < 1000; seed++) {
        mb_rng r1;
        mb_rng_seed(&r1, seed);
        uint64_t d = delay_ok(&p, 1, 0, 0, &r1);
        assert_true(d >= 20 && d <= 60);
        lo = d < lo ? d : lo;
        hi = d > hi ? d : hi;
    }
    assert_int_equal(lo, 20);
    assert_int_equal(hi, 60);

    /* A huge previous delay neither overflows prev * 3 nor passes the cap. */
    mb_rng rng;
    mb_rng_seed(&rng, 5);
    for (int i = 0; i < 100; i++) {
        uint64_t d = delay_ok(&p, 2, UINT64_MAX / 2, 0, &rng);
        assert_true(d >= 20 && d <= 3000);
        d = delay_ok(&p, 2, UINT64_MAX, 0, &rng);
        assert_true(d >= 20 && d <= 3000);
    }
    /* A previous delay below base / 3 still yields the base, not less. */
    assert_int_equal(delay_ok(&p, 2, 1, 0, &rng), 20);
}

static void test_full_jitter_distribution(void **state)
{
    (void)state;
    /* Attempt 5: ceiling 50 * 16 = 800. */
    mb_retry_policy p = policy(MB_JITTER_FULL, 10, 50, 5000, 0);
    mb_rng rng;
    mb_rng_seed(&rng, 2024);
    double sum = 0;
    uint64_t lo = UINT64_MAX, hi = 0;
    unsigned quarters[4] = {0};
    for (int i = 0; i < 10000; i++) {
        uint64_t d = delay_ok(&p, 5, 0, 0, &rng);
        sum += (double)d;
        lo = d < lo ? d : lo;
        hi = d > hi ? d : hi;
        quarters[d * 4 / 801]++;
    }
    double mean = sum / 10000;
    assert_true(mean > 360 && mean < 440);
    assert_true(lo < 20);
    assert_true(hi > 780);
    for (int i = 0; i < 4; i++)
        assert_true(quarters[i] > 2000 && quarters[i] < 3000);
}

static void test_cap_held_for_large_attempts(void **state)
{
    (void)state;
    mb_rng rng;
    mb_rng_seed(&rng, 3);
    /* Caps near the top of uint64_t, where base * 2^(n-1) wraps long before
     * attempt 99: the delay must grow, then stay at the cap. */
    static const uint64_t caps[] = {UINT64_MAX, UINT64_MAX - 1, (UINT64_C(1) << 63) + 1,
                                    UINT64_C(1) << 40};
    static const uint64_t bases[] = {1, 3, 1000, UINT64_C(0x7fffffffffff)};
    for (size_t ci = 0; ci < sizeof caps / sizeof caps[0]; ci++) {
        for (size_t bi = 0; bi < sizeof bases / sizeof bases[0]; bi++) {
            if (bases[bi] > caps[ci])
                continue;
            mb_retry_policy p = policy(MB_JITTER_NONE, 100, bases[bi], caps[ci], 0);
            uint64_t last = 0;
            for (unsigned n = 1; n < 100; n++) {
                uint64_t d = delay_ok(&p, n, 0, 0, &rng);
                assert_int_equal(d, ceiling_ref(bases[bi], caps[ci], n));
                assert_true(d >= last);
                last = d;
            }
            assert_int_equal(last, caps[ci]);
            /* The jittered kinds stay inside the cap at the same attempts. */
            for (unsigned n = 60; n < 100; n++) {
                p.jitter = MB_JITTER_FULL;
                (void)delay_ok(&p, n, 0, 0, &rng);
                p.jitter = MB_JITTER_EQUAL;
                assert_true(delay_ok(&p, n, 0, 0, &rng) >= ceiling_ref(bases[bi], caps[ci], n) / 2);
                p.jitter = MB_JITTER_DECORRELATED;
                (void)delay_ok(&p, n, caps[ci], 0, &rng);
                p.jitter = MB_JITTER_NONE;
            }
        }
    }
    /* Attempt 1000 is beyond any valid policy (at most 100 attempts): it is
     * refused cleanly, not computed with a wrapped shift. */
    mb_retry_policy p = policy(MB_JITTER_NONE, 100, 50, 5000, 0);
    uint64_t d = 1;
    assert_int_equal(mb_retry_next_delay(&p, 1000, 0, 0, &rng, &d), MB_ELIMIT);
    assert_int_equal(mb_retry_next_delay(&p, UINT32_MAX, 0, 0, &rng, &d), MB_ELIMIT);
    assert_int_equal(d, 1);
    /* The last allowed retry of a 100-attempt policy is held at the cap. */
    assert_int_equal(delay_ok(&p, 99, 0, 0, &rng), 5000);
}

static void test_deadline_refusal(void **state)
{
    (void)state;
    mb_rng rng;
    mb_rng_seed(&rng, 11);
    mb_retry_policy p = policy(MB_JITTER_NONE, 10, 100, 1000, 1000);
    uint64_t d = 0;
    /* Attempt 1 waits 100: elapsed 900 ends exactly at the deadline. */
    assert_int_equal(delay_ok(&p, 1, 0, 900, &rng), 100);
    d = 12345;
    assert_int_equal(mb_retry_next_delay(&p, 1, 0, 901, &rng, &d), MB_ELIMIT);
    assert_int_equal(mb_retry_next_delay(&p, 1, 0, 1000, &rng, &d), MB_ELIMIT);
    assert_int_equal(mb_retry_next_delay(&p, 1, 0, 1001, &rng, &d), MB_ELIMIT);
    assert_int_equal(mb_retry_next_delay(&p, 1, 0, UINT64_MAX, &rng, &d), MB_ELIMIT);
    /* Attempt 3 waits 400: 600 is the latest start. */
    assert_int_equal(delay_ok(&p, 3, 0, 600, &rng), 400);
    assert_int_equal(mb_retry_next_delay(&p, 3, 0, 601, &rng, &d), MB_ELIMIT);
    assert_int_equal(d, 12345);

    /* No deadline: any elapsed time is fine. */
    p.deadline_ms = 0;
    assert_int_equal(delay_ok(&p, 3, 0, UINT64_MAX, &rng), 400);

    /* A deadline near the top of the type does not overflow. */
    p.deadline_ms = UINT64_MAX;
    assert_int_equal(delay_ok(&p, 1, 0, UINT64_MAX - 100, &rng), 100);
    assert_int_equal(mb_retry_next_delay(&p, 1, 0, UINT64_MAX - 99, &rng, &d), MB_ELIMIT);

    /* Full jitter against the deadline: every accepted delay fits, and with
     * room for less than the ceiling some draws are refused. */
    p = policy(MB_JITTER_FULL, 10, 100, 1000, 1000);
    int ok = 0, refused = 0;
    for (int i = 0; i < 1000; i++) {
        mb_status st = mb_retry_next_delay(&p, 2, 0, 900, &rng, &d);
        if (st == MB_OK) {
            assert_true(d <= 100);
            ok++;
        } else {
            assert_int_equal(st, MB_ELIMIT);
            refused++;
        }
    }
    assert_true(ok > 300 && refused > 300);
}

static void test_max_attempts_refusal(void **state)
{
    (void)state;
    mb_rng rng;
    mb_rng_seed(&rng, 1);
    static const mb_jitter kinds[] = {MB_JITTER_FULL, MB_JITTER_NONE, MB_JITTER_EQUAL,
                                      MB_JITTER_DECORRELATED};
    for (size_t k = 0; k < 4; k++) {
        mb_retry_policy p = policy(kinds[k], 4, 50, 5000, 0);
        uint64_t d = 0;
        for (unsigned n = 1; n < 4; n++)
            (void)delay_ok(&p, n, 50, 0, &rng);
        assert_int_equal(mb_retry_next_delay(&p, 4, 50, 0, &rng, &d), MB_ELIMIT);
        assert_int_equal(mb_retry_next_delay(&p, 5, 50, 0, &rng, &d), MB_ELIMIT);
        p.max_attempts = 1; /* never retry */
        assert_int_equal(mb_retry_next_delay(&p, 1, 0, 0, &rng, &d), MB_ELIMIT);
    }
}

static void test_next_delay_invalid_arguments(void **state)
{
    (void)state;
    mb_retry_policy p = policy(MB_JITTER_FULL, 4, 50, 5000, 0);
    mb_rng rng;
    mb_rng_seed(&rng, 1);
    uint64_t d = 9;
    assert_int_equal(mb_retry_next_delay(NULL, 1, 0, 0, &rng, &d), MB_EINVAL);
    assert_int_equal(mb_retry_next_delay(&p, 1, 0, 0, NULL, &d), MB_EINVAL);
    assert_int_equal(mb_retry_next_delay(&p, 1, 0, 0, &rng, NULL), MB_EINVAL);
    assert_int_equal(mb_retry_next_delay(&p, 0, 0, 0, &rng, &d), MB_EINVAL);
    assert_int_equal(d, 9);
}

static void test_same_seed_same_delays(void **state)
{
    (void)state;
    static const mb_jitter kinds[] = {MB_JITTER_FULL, MB_JITTER_NONE, MB_JITTER_EQUAL,
                                      MB_JITTER_DECORRELATED};
    for (size_t k = 0; k < 4; k++) {
        mb_retry_policy p = policy(kinds[k], 100, 10, 100000, 0);
        for (uint64_t seed = 0; seed < 20; seed++) {
            mb_rng a, b, c;
            mb_rng_seed(&a, seed);
            mb_rng_seed(&b, seed);
            mb_rng_seed(&c, seed + 1000);
            uint64_t pa = 0, pb = 0, pc = 0;
            int differ = 0;
            for (unsigned n = 1; n < 30; n++) {
                uint64_t da = delay_ok(&p, n, pa, 0, &a);
                uint64_t db = delay_ok(&p, n, pb, 0, &b);
                uint64_t dc = delay_ok(&p, n, pc, 0, &c);
                assert_int_equal(da, db);
                differ += da != dc;
                pa = da;
                pb = db;
                pc = dc;
            }
            if (kinds[k] == MB_JITTER_NONE)
                assert_int_equal(differ, 0);
            else
                assert_true(differ > 10);
        }
    }
}

/* ---- classification ---- */

static void test_retryable_every_status(void **state)
{
    (void)state;
    /* The expectation for every status. A status added to MB_STATUS_MAP
     * without a line here fails the test, so none can be forgotten. */
    static const struct {
        mb_status st;
        bool retryable;
    } expect[] = {
        {MB_OK, false},        {MB_EINVAL, false},       {MB_ENOMEM, false},
        {MB_ENOTFOUND, false}, {MB_EEXIST, false},       {MB_ENOSPC, false},
        {MB_ETOOBIG, false},   {MB_ESUBJECT, false},     {MB_EPATTERN, false},
        {MB_EJSON, false},     {MB_ESCHEMA, false},      {MB_ETIMEOUT, true},
        {MB_ENOCONN, true},    {MB_ENORESPONDERS, true}, {MB_EAUTH, false},
        {MB_ETLS, false},      {MB_EBREAKER, true},      {MB_EBUDGET, false},
        {MB_EAGAIN, true},     {MB_ESTATE, false},       {MB_ECLOSED, false},
        {MB_EIO, true},        {MB_ECORRUPT, false},     {MB_EUNSUPPORTED, false},
        {MB_EINTERNAL, false}, {MB_ELIMIT, false},
    };
    static const mb_status all[] = {
#define X(name, msg) name,
        MB_STATUS_MAP(X)
#undef X
    };
    const size_t nexpect = sizeof expect / sizeof expect[0];
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        size_t j = 0;
        while (j < nexpect && expect[j].st != all[i])
            j++;
        if (j == nexpect)
            fail_msg("%s is not classified in this test's table", mb_status_name(all[i]));
        if (mb_status_retryable(all[i]) != expect[j].retryable)
            fail_msg("%s: retryable %d, expected %d", mb_status_name(all[i]),
                     (int)mb_status_retryable(all[i]), (int)expect[j].retryable);
    }
    assert_int_equal(nexpect, sizeof all / sizeof all[0]);
    /* Values outside the table are never retryable. */
    assert_false(mb_status_retryable(MB__STATUS_COUNT));
    assert_false(mb_status_retryable((mb_status)1000));
    assert_false(mb_status_retryable((mb_status)-1));
}

/* ---- budget ---- */

static mb_retry_budget *new_budget(const mb_retry_budget_opts *o)
{
    mb_retry_budget *b = NULL;
    mb_err err = {0};
    assert_int_equal(mb_retry_budget_create(o, &b, &err), MB_OK);
    assert_non_null(b);
    assert_int_equal(err.code, MB_OK);
    return b;
}

static void test_budget_defaults(void **state)
{
    (void)state;
    mb_retry_budget *b = new_budget(NULL);
    assert_int_equal(mb_retry_budget_tokens(b), 500);
    assert_int_equal(mb_retry_budget_granted(b), 0);
    assert_int_equal(mb_retry_budget_refused(b), 0);
    /* Default costs: 5 per retry, 10 after a timeout, 1 back per success. */
    assert_true(mb_retry_budget_acquire(b, MB_ENOCONN));
    assert_int_equal(mb_retry_budget_tokens(b), 495);
    assert_true(mb_retry_budget_acquire(b, MB_ETIMEOUT));
    assert_int_equal(mb_retry_budget_tokens(b), 485);
    mb_retry_budget_success(b);
    assert_int_equal(mb_retry_budget_tokens(b), 486);
    mb_retry_budget_destroy(b);

    mb_retry_budget_opts zero = {0};
    b = new_budget(&zero);
    assert_int_equal(mb_retry_budget_tokens(b), 500);
    mb_retry_budget_destroy(b);
    mb_retry_budget_destroy(NULL);
}

static void test_budget_create_refusals(void **state)
{
    (void)state;
    mb_retry_budget *b = NULL;
    mb_err err = {0};
    assert_int_equal(mb_retry_budget_create(NULL, NULL, &err), MB_EINVAL);
    mb_err_clear(&err);
    mb_retry_budget_opts o = {.max_tokens = 8, .retry_cost = 9};
    assert_int_equal(mb_retry_budget_create(&o, &b, &err), MB_EINVAL);
    assert_int_equal(err.code, MB_EINVAL);
    assert_non_null(strstr(err.msg, "max_tokens"));
    assert_null(b);
    /* The default timeout cost (10) is above a max of 8, too. */
    o = (mb_retry_budget_opts){.max_tokens = 8, .retry_cost = 2};
    assert_int_equal(mb_retry_budget_create(&o, &b, NULL), MB_EINVAL);
    o.timeout_cost = 8; /* equal to the max is fine */
    b = new_budget(&o);
    assert_true(mb_retry_budget_acquire(b, MB_ETIMEOUT));
    assert_int_equal(mb_retry_budget_tokens(b), 0);
    mb_retry_budget_destroy(b);
}

static void test_budget_drains_after_100_retries(void **state)
{
    (void)state;
    mb_retry_budget *b = new_budget(NULL);
    for (int i = 0; i < 100; i++)
        assert_true(mb_retry_budget_acquire(b, MB_EIO));
    assert_int_equal(mb_retry_budget_tokens(b), 0);
    assert_int_equal(mb_retry_budget_granted(b), 100);
    assert_int_equal(mb_retry_budget_refused(b), 0);
    /* Empty: refused, counted, and nothing goes below zero. */
    assert_false(mb_retry_budget_acquire(b, MB_EIO));
    assert_false(mb_retry_budget_acquire(b, MB_ETIMEOUT));
    assert_int_equal(mb_retry_budget_tokens(b), 0);
    assert_int_equal(mb_retry_budget_granted(b), 100);
    assert_int_equal(mb_retry_budget_refused(b), 2);
    /* Five successes pay for one more retry, not a sixth. */
    for (int i = 0; i < 5; i++)
        mb_retry_budget_success(b);
    assert_true(mb_retry_budget_acquire(b, MB_ENORESPONDERS));
    assert_false(mb_retry_budget_acquire(b, MB_ENORESPONDERS));
    assert_int_equal(mb_retry_budget_refused(b), 3);
    mb_retry_budget_destroy(b);
}

static void test_budget_timeout_costs_ten(void **state)
{
    (void)state;
    mb_retry_budget *b = new_budget(NULL);
    for (int i = 0; i < 50; i++)
        assert_true(mb_retry_budget_acquire(b, MB_ETIMEOUT));
    assert_int_equal(mb_retry_budget_tokens(b), 0);
    assert_false(mb_retry_budget_acquire(b, MB_ETIMEOUT));
    mb_retry_budget_destroy(b);
}

static void test_budget_refusal_takes_nothing(void **state)
{
    (void)state;
    mb_retry_budget *b = new_budget(NULL);
    /* 97 retries at 5 leave 15: a timeout (10) fits once, then 5 is left. */
    for (int i = 0; i < 97; i++)
        assert_true(mb_retry_budget_acquire(b, MB_EIO));
    assert_int_equal(mb_retry_budget_tokens(b), 15);
    assert_true(mb_retry_budget_acquire(b, MB_ETIMEOUT));
    assert_int_equal(mb_retry_budget_tokens(b), 5);
    /* A timeout retry cannot be paid from 5: refused, and the 5 stay. */
    assert_false(mb_retry_budget_acquire(b, MB_ETIMEOUT));
    assert_int_equal(mb_retry_budget_tokens(b), 5);
    assert_int_equal(mb_retry_budget_refused(b), 1);
    /* An ordinary retry still can. */
    assert_true(mb_retry_budget_acquire(b, MB_ENOCONN));
    assert_int_equal(mb_retry_budget_tokens(b), 0);
    assert_int_equal(mb_retry_budget_granted(b), 99);
    mb_retry_budget_destroy(b);
}

static void test_budget_success_refunds_up_to_max(void **state)
{
    (void)state;
    mb_metrics *m = NULL;
    assert_int_equal(mb_metrics_create(&m, NULL), MB_OK);
    mb_retry_budget_opts o = {
        .max_tokens = 20, .retry_cost = 5, .timeout_cost = 10, .success_refund = 3, .metrics = m};
    mb_retry_budget *b = new_budget(&o);
    mb_retry_budget_success(b); /* full already */
    assert_int_equal(mb_retry_budget_tokens(b), 20);
    assert_true(mb_retry_budget_acquire(b, MB_EIO));
    assert_int_equal(mb_retry_budget_tokens(b), 15);
    mb_retry_budget_success(b);
    assert_int_equal(mb_retry_budget_tokens(b), 18);
    mb_retry_budget_success(b); /* 21 would pass the max */
    assert_int_equal(mb_retry_budget_tokens(b), 20);
    /* The gauge moved by what was really refunded (3, then 2), not 3 + 3. */
    char *text = expose(m);
    assert_true(has_line(text, "mudbus_retry_budget_tokens 20"));
    free(text);
    mb_retry_budget_destroy(b);
    mb_metrics_destroy(m);
}

/* A refund gives back exactly what the acquire for that status took, up to
 * the maximum, and moves the gauge by what it really gave. */
static void test_budget_refund_gives_back_the_cost(void **state)
{
    (void)state;
    mb_metrics *m = NULL;
    assert_int_equal(mb_metrics_create(&m, NULL), MB_OK);
    mb_retry_budget_opts o = {
        .max_tokens = 20, .retry_cost = 5, .timeout_cost = 10, .success_refund = 3, .metrics = m};
    mb_retry_budget *b = new_budget(&o);
    assert_true(mb_retry_budget_acquire(b, MB_EIO));
    assert_true(mb_retry_budget_acquire(b, MB_ETIMEOUT));
    assert_int_equal(mb_retry_budget_tokens(b), 5);
    mb_retry_budget_refund(b, MB_ETIMEOUT);
    assert_int_equal(mb_retry_budget_tokens(b), 15);
    mb_retry_budget_refund(b, MB_EIO);
    assert_int_equal(mb_retry_budget_tokens(b), 20);
    mb_retry_budget_success(b);
    assert_true(mb_retry_budget_acquire(b, MB_EIO));
    mb_retry_budget_success(b);        /* 18 */
    mb_retry_budget_refund(b, MB_EIO); /* 23 would pass the max */
    assert_int_equal(mb_retry_budget_tokens(b), 20);
    /* The grants stay counted: they were granted. */
    assert_int_equal(mb_retry_budget_granted(b), 3);
    char *text = expose(m);
    assert_true(has_line(text, "mudbus_retry_budget_tokens 20"));
    free(text);
    mb_retry_budget_destroy(b);
    mb_metrics_destroy(m);
}

static void test_budget_metrics_text(void **state)
{
    (void)state;
    mb_metrics *m = NULL;
    assert_int_equal(mb_metrics_create(&m, NULL), MB_OK);
    mb_retry_budget_opts o = {.metrics = m, .labels = "client=\"game\""};
    mb_retry_budget *b = new_budget(&o);
    char *text = expose(m);
    assert_true(has_line(text, "# TYPE mudbus_retry_budget_tokens gauge"));
    assert_true(has_line(text, "mudbus_retry_budget_tokens{client=\"game\"} 500"));
    assert_true(has_line(text, "# TYPE mudbus_retry_budget_granted_total counter"));
    assert_true(has_line(text, "mudbus_retry_budget_granted_total{client=\"game\"} 0"));
    assert_true(has_line(text, "# TYPE mudbus_retry_budget_refused_total counter"));
    assert_true(has_line(text, "mudbus_retry_budget_refused_total{client=\"game\"} 0"));
    free(text);

    for (int i = 0; i < 99; i++)
        assert_true(mb_retry_budget_acquire(b, MB_EIO));
    assert_false(mb_retry_budget_acquire(b, MB_ETIMEOUT));
    assert_false(mb_retry_budget_acquire(b, MB_ETIMEOUT));
    mb_retry_budget_success(b);
    text = expose(m);
    assert_true(has_line(text, "mudbus_retry_budget_tokens{client=\"game\"} 6"));
    assert_true(has_line(text, "mudbus_retry_budget_granted_total{client=\"game\"} 99"));
    assert_true(has_line(text, "mudbus_retry_budget_refused_total{client=\"game\"} 2"));
    free(text);
    assert_int_equal(mb_retry_budget_granted(b), 99);
    assert_int_equal(mb_retry_budget_refused(b), 2);

    /* A second budget with the same labels is refused by the registry; one
     * with other labels shows up next to the first. */
    mb_retry_budget *dup = NULL;
    mb_err err = {0};
    assert_int_equal(mb_retry_budget_create(&o, &dup, &err), MB_EEXIST);
    assert_null(dup);
    o.labels = "client=\"gateway\"";
    mb_retry_budget *b2 = new_budget(&o);
    text = expose(m);
    assert_true(has_line(text, "mudbus_retry_budget_tokens{client=\"gateway\"} 500"));
    assert_true(has_line(text, "mudbus_retry_budget_tokens{client=\"game\"} 6"));
    free(text);
    mb_retry_budget_destroy(b2);
    mb_retry_budget_destroy(b);
    mb_metrics_destroy(m);
}

/* ---- budget under concurrency ---- */

#define THREADS    4
#define PER_THREAD 20000

struct budget_worker {
    mb_retry_budget *b;
    int mode; /* 0: acquire only, 1: acquire and success mixed, 2: success only */
    unsigned successes;
    uint64_t granted;
    uint64_t refused;
};

static atomic_bool stop_watch;
static atomic_uint watch_violations;

static void *budget_worker_main(void *p)
{
    struct budget_worker *w = p;
    for (unsigned i = 0; i < PER_THREAD; i++) {
        if (w->mode == 2 || (w->mode == 1 && i % 8 == 0 && w->successes < 50)) {
            mb_retry_budget_success(w->b);
            w->successes++;
            if (w->mode == 2)
                continue;
        }
        if (mb_retry_budget_acquire(w->b, MB_EIO))
            w->granted++;
        else
            w->refused++;
    }
    return NULL;
}

/* Samples the token count while the workers run: it must never leave
 * [0, max] (an unsigned wrap would show as a huge value). */
static void *watcher_main(void *p)
{
    mb_retry_budget *b = p;
    while (!atomic_load(&stop_watch)) {
        if (mb_retry_budget_tokens(b) > 500)
            atomic_fetch_add(&watch_violations, 1);
    }
    return NULL;
}

static void run_workers(mb_retry_budget *b, int mode, struct budget_worker *w)
{
    pthread_t th[THREADS], watcher;
    atomic_store(&stop_watch, false);
    assert_int_equal(pthread_create(&watcher, NULL, watcher_main, b), 0);
    for (int t = 0; t < THREADS; t++) {
        w[t] = (struct budget_worker){.b = b, .mode = mode};
        assert_int_equal(pthread_create(&th[t], NULL, budget_worker_main, &w[t]), 0);
    }
    for (int t = 0; t < THREADS; t++)
        assert_int_equal(pthread_join(th[t], NULL), 0);
    atomic_store(&stop_watch, true);
    assert_int_equal(pthread_join(watcher, NULL), 0);
    assert_int_equal(atomic_load(&watch_violations), 0);
}

static void test_budget_concurrent_accounting(void **state)
{
    (void)state;
    mb_metrics *m = NULL;
    assert_int_equal(mb_metrics_create(&m, NULL), MB_OK);
    mb_retry_budget_opts o = {.metrics = m};
    mb_retry_budget *b = new_budget(&o);
    struct budget_worker w[THREADS];

    /* Phase 1: everyone withdraws. Exactly 500 / 5 retries are granted. */
    run_workers(b, 0, w);
    uint64_t granted = 0, refused = 0;
    for (int t = 0; t < THREADS; t++) {
        granted += w[t].granted;
        refused += w[t].refused;
    }
    assert_int_equal(granted, 100);
    assert_int_equal(refused, (uint64_t)THREADS * PER_THREAD - 100);
    assert_int_equal(mb_retry_budget_tokens(b), 0);
    assert_int_equal(mb_retry_budget_granted(b), granted);
    assert_int_equal(mb_retry_budget_refused(b), refused);

    /* Phase 2: withdrawals and refunds race. 200 refunds in all never reach
     * the max, so every refund counts in full and the books balance exactly:
     * tokens = refunds - 5 * granted. Each thread keeps withdrawing long after
     * its last refund, so the bucket ends below one retry's cost: empty, with
     * exactly 200 / 5 retries granted. */
    run_workers(b, 1, w);
    uint64_t granted2 = 0, refused2 = 0, refunds = 0;
    for (int t = 0; t < THREADS; t++) {
        granted2 += w[t].granted;
        refused2 += w[t].refused;
        refunds += w[t].successes;
    }
    assert_int_equal(refunds, 200);
    assert_int_equal(granted2 + refused2, (uint64_t)THREADS * PER_THREAD);
    assert_int_equal((uint64_t)mb_retry_budget_tokens(b) + 5 * granted2, refunds);
    assert_int_equal(granted2, 40);
    assert_int_equal(mb_retry_budget_tokens(b), 0);
    assert_int_equal(mb_retry_budget_granted(b), granted + granted2);
    assert_int_equal(mb_retry_budget_refused(b), refused + refused2);

    /* Phase 3: only refunds, far more than room: the bucket stops at 500. */
    run_workers(b, 2, w);
    assert_int_equal(mb_retry_budget_tokens(b), 500);

    /* The gauge moved by the same deltas as the count. */
    char *text = expose(m);
    assert_true(has_line(text, "mudbus_retry_budget_tokens 500"));
    char line[80];
    snprintf(line, sizeof line, "mudbus_retry_budget_granted_total %llu",
             (unsigned long long)(granted + granted2));
    assert_true(has_line(text, line));
    free(text);
    mb_retry_budget_destroy(b);
    mb_metrics_destroy(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_policy_defaults),
        cmocka_unit_test(test_policy_check_refusals),
        cmocka_unit_test(test_jitter_names),
        cmocka_unit_test(test_rng_same_seed_same_sequence),
        cmocka_unit_test(test_rng_known_values),
        cmocka_unit_test(test_rng_range_bounds_and_spread),
        cmocka_unit_test(test_none_exact_values),
        cmocka_unit_test(test_full_jitter_bounds_many_seeds),
        cmocka_unit_test(test_equal_jitter_bounds_many_seeds),
        cmocka_unit_test(test_decorrelated_bounds_many_seeds),
        cmocka_unit_test(test_full_jitter_distribution),
        cmocka_unit_test(test_cap_held_for_large_attempts),
        cmocka_unit_test(test_deadline_refusal),
        cmocka_unit_test(test_max_attempts_refusal),
        cmocka_unit_test(test_next_delay_invalid_arguments),
        cmocka_unit_test(test_same_seed_same_delays),
        cmocka_unit_test(test_retryable_every_status),
        cmocka_unit_test(test_budget_defaults),
        cmocka_unit_test(test_budget_create_refusals),
        cmocka_unit_test(test_budget_drains_after_100_retries),
        cmocka_unit_test(test_budget_timeout_costs_ten),
        cmocka_unit_test(test_budget_refusal_takes_nothing),
        cmocka_unit_test(test_budget_success_refunds_up_to_max),
        cmocka_unit_test(test_budget_refund_gives_back_the_cost),
        cmocka_unit_test(test_budget_metrics_text),
        cmocka_unit_test(test_budget_concurrent_accounting),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
