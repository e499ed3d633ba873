/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for clock: the system clock (monotonic readings never go back and
 * follow real sleeps; wall readings agree with time(NULL); NULL means the
 * system clock) and the manual clock that tests drive by hand (exact start
 * values, exact advances, advances from several threads at once).
 */
#define _POSIX_C_SOURCE 200809L

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <time.h>

#include "mudbus/clock.h"

#define NS_PER_MS 1000000ull
#define NS_PER_S  1000000000ull

static void sleep_ns(uint64_t ns)
{
    struct timespec req = {(time_t)(ns / NS_PER_S), (long)(ns % NS_PER_S)};
    struct timespec rem;
    while (nanosleep(&req, &rem) != 0) {
        assert_int_equal(errno, EINTR);
        req = rem;
    }
}

static void test_system_clock_is_static_and_complete(void **state)
{
    (void)state;
    const mb_clock *c = mb_clock_system();
    assert_non_null(c);
    assert_ptr_equal(c, mb_clock_system());
    assert_non_null(c->mono_ns);
    assert_non_null(c->wall_ns);
}

static void test_system_mono_never_goes_back(void **state)
{
    (void)state;
    const mb_clock *c = mb_clock_system();
    uint64_t prev = mb_clock_mono_ns(c);
    uint64_t first = prev;
    for (int i = 0; i < 200000; i++) {
        uint64_t now = mb_clock_mono_ns(c);
        assert_true(now >= prev);
        prev = now;
    }
    /* A reading that never moves is not a clock. */
    assert_true(prev > first);
}

static void test_system_mono_tracks_sleep(void **state)
{
    (void)state;
    const mb_clock *c = mb_clock_system();
    uint64_t before = mb_clock_mono_ns(c);
    sleep_ns(20 * NS_PER_MS);
    uint64_t after = mb_clock_mono_ns(c);
    /* Only a lower bound: a loaded machine may oversleep by any amount. */
    assert_true(after - before >= 20 * NS_PER_MS);
}

static void test_system_wall_is_near_time(void **state)
{
    (void)state;
    time_t t0 = time(NULL);
    uint64_t wall = mb_clock_wall_ns(mb_clock_system());
    time_t t1 = time(NULL);
    uint64_t secs = wall / NS_PER_S;
    /* time() truncates to whole seconds; allow one second either side. */
    assert_true(secs + 1 >= (uint64_t)t0);
    assert_true(secs <= (uint64_t)t1 + 1);
    /* Sanity: the epoch is 1970, not boot time (after 2020-01-01). */
    assert_true(secs > 1577836800ull);
}

static void test_null_clock_means_system(void **state)
{
    (void)state;
    const mb_clock *sys = mb_clock_system();
    uint64_t m0 = mb_clock_mono_ns(sys);
    uint64_t m = mb_clock_mono_ns(NULL);
    uint64_t m1 = mb_clock_mono_ns(sys);
    assert_true(m0 <= m && m <= m1);

    uint64_t w0 = sys->wall_ns(sys->ctx);
    uint64_t w = mb_clock_wall_ns(NULL);
    uint64_t w1 = sys->wall_ns(sys->ctx);
    /* CLOCK_REALTIME may be stepped, but not by seconds between two calls. */
    assert_true(w + NS_PER_S >= w0 && w <= w1 + NS_PER_S);
    /* Monotonic and wall readings are different clocks. */
    assert_true(w / NS_PER_S > 1577836800ull);
}

static void test_manual_clock_starts_at_given_values(void **state)
{
    (void)state;
    mb_manual_clock *mc = NULL;
    mb_err err = {0};
    assert_int_equal(mb_manual_clock_create(1000, 1700000000ull * NS_PER_S, &mc, &err), MB_OK);
    assert_non_null(mc);
    assert_int_equal(err.code, MB_OK);
    const mb_clock *c = mb_manual_clock_get(mc);
    assert_non_null(c);
    assert_int_equal(mb_clock_mono_ns(c), 1000);
    assert_int_equal(mb_clock_wall_ns(c), 1700000000ull * NS_PER_S);
    /* Time does not pass on its own. */
    sleep_ns(2 * NS_PER_MS);
    assert_int_equal(mb_clock_mono_ns(c), 1000);
    assert_int_equal(mb_clock_wall_ns(c), 1700000000ull * NS_PER_S);
    mb_manual_clock_destroy(mc);
}

static void test_manual_clock_advances_both_readings_exactly(void **state)
{
    (void)state;
    mb_manual_clock *mc = NULL;
    assert_int_equal(mb_manual_clock_create(0, 5000, &mc, NULL), MB_OK);
    const mb_clock *c = mb_manual_clock_get(mc);

    mb_manual_clock_advance(mc, 1);
    assert_int_equal(mb_clock_mono_ns(c), 1);
    assert_int_equal(mb_clock_wall_ns(c), 5001);

    mb_manual_clock_advance(mc, 0);
    assert_int_equal(mb_clock_mono_ns(c), 1);
    assert_int_equal(mb_clock_wall_ns(c), 5001);

    mb_manual_clock_advance(mc, 30 * NS_PER_S);
    assert_int_equal(mb_clock_mono_ns(c), 30 * NS_PER_S + 1);
    assert_int_equal(mb_clock_wall_ns(c), 30 * NS_PER_S + 5001);

    /* The function pointers give the same readings as the helpers. */
    assert_int_equal(c->mono_ns(c->ctx), 30 * NS_PER_S + 1);
    assert_int_equal(c->wall_ns(c->ctx), 30 * NS_PER_S + 5001);
    mb_manual_clock_destroy(mc);
}

static void test_manual_clocks_are_independent(void **state)
{
    (void)state;
    mb_manual_clock *a = NULL, *b = NULL;
    assert_int_equal(mb_manual_clock_create(10, 20, &a, NULL), MB_OK);
    assert_int_equal(mb_manual_clock_create(100, 200, &b, NULL), MB_OK);
    mb_manual_clock_advance(a, 5);
    assert_int_equal(mb_clock_mono_ns(mb_manual_clock_get(a)), 15);
    assert_int_equal(mb_clock_mono_ns(mb_manual_clock_get(b)), 100);
    assert_int_equal(mb_clock_wall_ns(mb_manual_clock_get(b)), 200);
    mb_manual_clock_destroy(a);
    mb_manual_clock_destroy(b);
}

#define ADV_THREADS 4
#define ADV_STEPS   100000

struct adv_arg {
    mb_manual_clock *mc;
    uint64_t step;
};

static void *advance_thread(void *p)
{
    struct adv_arg *a = p;
    for (int i = 0; i < ADV_STEPS; i++)
        mb_manual_clock_advance(a->mc, a->step);
    return NULL;
}

struct reader_arg {
    const mb_clock *c;
    _Atomic int *stop;
    int went_back;
};

static void *reader_thread(void *p)
{
    struct reader_arg *r = p;
    uint64_t prev = mb_clock_mono_ns(r->c);
    while (!*r->stop) {
        uint64_t now = mb_clock_mono_ns(r->c);
        if (now < prev)
            r->went_back = 1;
        prev = now;
    }
    return NULL;
}

static void test_manual_clock_concurrent_advance(void **state)
{
    (void)state;
    mb_manual_clock *mc = NULL;
    assert_int_equal(mb_manual_clock_create(7, 11, &mc, NULL), MB_OK);
    const mb_clock *c = mb_manual_clock_get(mc);

    _Atomic int stop = 0;
    struct reader_arg reader = {c, &stop, 0};
    pthread_t rt;
    assert_int_equal(pthread_create(&rt, NULL, reader_thread, &reader), 0);

    pthread_t th[ADV_THREADS];
    struct adv_arg args[ADV_THREADS];
    uint64_t expect = 0;
    for (int i = 0; i < ADV_THREADS; i++) {
        args[i].mc = mc;
        args[i].step = (uint64_t)i + 1; /* distinct steps: a lost update shows */
        expect += args[i].step * ADV_STEPS;
        assert_int_equal(pthread_create(&th[i], NULL, advance_thread, &args[i]), 0);
    }
    for (int i = 0; i < ADV_THREADS; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    stop = 1;
    assert_int_equal(pthread_join(rt, NULL), 0);

    assert_int_equal(mb_clock_mono_ns(c), 7 + expect);
    assert_int_equal(mb_clock_wall_ns(c), 11 + expect);
    assert_false(reader.went_back);
    mb_manual_clock_destroy(mc);
}

static void test_manual_clock_create_null_out(void **state)
{
    (void)state;
    mb_err err = {0};
    assert_int_equal(mb_manual_clock_create(0, 0, NULL, &err), MB_EINVAL);
    assert_int_equal(err.code, MB_EINVAL);
    assert_true(err.msg[0] != '\0');
    assert_int_equal(mb_manual_clock_create(0, 0, NULL, NULL), MB_EINVAL);
}

static void test_manual_clock_destroy_null(void **state)
{
    (void)state;
    mb_manual_clock_destroy(NULL); /* must not crash */
    mb_manual_clock *mc = NULL;
    assert_int_equal(mb_manual_clock_create(0, 0, &mc, NULL), MB_OK);
    mb_manual_clock_destroy(mc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_system_clock_is_static_and_complete),
        cmocka_unit_test(test_system_mono_never_goes_back),
        cmocka_unit_test(test_system_mono_tracks_sleep),
        cmocka_unit_test(test_system_wall_is_near_time),
        cmocka_unit_test(test_null_clock_means_system),
        cmocka_unit_test(test_manual_clock_starts_at_given_values),
        cmocka_unit_test(test_manual_clock_advances_both_readings_exactly),
        cmocka_unit_test(test_manual_clocks_are_independent),
        cmocka_unit_test(test_manual_clock_concurrent_advance),
        cmocka_unit_test(test_manual_clock_create_null_out),
        cmocka_unit_test(test_manual_clock_destroy_null),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
