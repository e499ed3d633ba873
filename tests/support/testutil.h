/* SPDX-License-Identifier: MIT */
/*
 * testutil: small helpers the integration tests share: a monotonic clock in
 * milliseconds, sleeping, and waiting for a condition with a deadline. Tests
 * never decide an outcome by sleeping: they poll a condition until it holds
 * or the deadline passes, and sleep only to show that something does NOT
 * happen within a time.
 */
#ifndef MUDBUS_TEST_TESTUTIL_H
#define MUDBUS_TEST_TESTUTIL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

static inline uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static inline void sleep_ms(unsigned ms)
{
    struct timespec ts = {.tv_sec = ms / 1000u, .tv_nsec = (long)(ms % 1000u) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Poll cond(arg) every 2 ms until it holds (true) or `ms` have passed
 * (false, after one last look). */
static inline bool wait_for(bool (*cond)(void *), void *arg, unsigned ms)
{
    uint64_t end = now_ms() + ms;
    while (!cond(arg)) {
        if (now_ms() > end)
            return cond(arg);
        sleep_ms(2);
    }
    return true;
}

/* Wait until *v >= n, for at most `ms`. */
static inline bool wait_count(_Atomic int *v, int n, unsigned ms)
{
    uint64_t end = now_ms() + ms;
    while (atomic_load(v) < n) {
        if (now_ms() > end)
            return atomic_load(v) >= n;
        sleep_ms(2);
    }
    return true;
}

#endif
