/* SPDX-License-Identifier: MIT */
/*
 * clock: an injectable time source.
 *
 * Everything in libmudbus that measures or schedules time (retry delays, the
 * breaker's windows and open duration, health intervals, metric timings) reads
 * it through an mb_clock, so tests can drive time by hand instead of sleeping.
 * An mb_clock has two readings: a monotonic one (nanoseconds from an arbitrary
 * origin; never goes backwards; use it for durations and deadlines) and a wall
 * one (nanoseconds since the Unix epoch; use it only for timestamps that people
 * or other machines read).
 *
 * Threads: mb_clock_system() and the manual clock may be read from any thread
 * at once; a manual clock may be advanced while other threads read it.
 */
#ifndef MUDBUS_CLOCK_H
#define MUDBUS_CLOCK_H

#include <stdint.h>

#include "mudbus/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A time source. Fill both functions; `ctx` is passed to them unchanged. The
 * functions must be safe to call from any thread. */
typedef struct mb_clock {
    uint64_t (*mono_ns)(void *ctx); /* monotonic nanoseconds */
    uint64_t (*wall_ns)(void *ctx); /* nanoseconds since 1970-01-01T00:00:00Z */
    void *ctx;
} mb_clock;

/* The process's real clocks (CLOCK_MONOTONIC and CLOCK_REALTIME). Static; never
 * NULL. */
const mb_clock *mb_clock_system(void);

/* Read a clock; NULL means mb_clock_system(). */
uint64_t mb_clock_mono_ns(const mb_clock *clock);
uint64_t mb_clock_wall_ns(const mb_clock *clock);

/* A clock that only moves when told to, for tests. Both readings start at the
 * given values and advance together. */
typedef struct mb_manual_clock mb_manual_clock;

/* Create a manual clock. Returns MB_EINVAL for a NULL `out`, MB_ENOMEM when out
 * of memory (nothing is created then). */
mb_status mb_manual_clock_create(uint64_t mono_start_ns, uint64_t wall_start_ns,
                                 mb_manual_clock **out, mb_err *err);
void mb_manual_clock_destroy(mb_manual_clock *mc);

/* Move both readings forward by `delta_ns`. Any thread. */
void mb_manual_clock_advance(mb_manual_clock *mc, uint64_t delta_ns);

/* The mb_clock view of a manual clock; valid until the manual clock is
 * destroyed. */
const mb_clock *mb_manual_clock_get(const mb_manual_clock *mc);

#ifdef __cplusplus
}
#endif
#endif
