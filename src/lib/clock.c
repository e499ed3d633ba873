/* SPDX-License-Identifier: MIT */
/*
 * clock: the system clock (CLOCK_MONOTONIC / CLOCK_REALTIME) and a manual clock
 * for tests. The manual clock keeps one atomic offset that both readings share,
 * so a reader on another thread never sees the two readings disagree by more
 * than one advance.
 */
#define _POSIX_C_SOURCE 200809L
#include "mudbus/clock.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#include "alloc.h"

static uint64_t read_clock(clockid_t id)
{
    struct timespec ts;
    /* clock_gettime cannot fail for these clock ids on Linux. */
    clock_gettime(id, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t system_mono(void *ctx)
{
    (void)ctx;
    return read_clock(CLOCK_MONOTONIC);
}

static uint64_t system_wall(void *ctx)
{
    (void)ctx;
    return read_clock(CLOCK_REALTIME);
}

static const mb_clock system_clock = {system_mono, system_wall, NULL};

const mb_clock *mb_clock_system(void)
{
    return &system_clock;
}

uint64_t mb_clock_mono_ns(const mb_clock *clock)
{
    if (clock == NULL)
        return read_clock(CLOCK_MONOTONIC);
    return clock->mono_ns(clock->ctx);
}

uint64_t mb_clock_wall_ns(const mb_clock *clock)
{
    if (clock == NULL)
        return read_clock(CLOCK_REALTIME);
    return clock->wall_ns(clock->ctx);
}

struct mb_manual_clock {
    mb_clock clock;
    uint64_t mono_start;
    uint64_t wall_start;
    _Atomic uint64_t elapsed;
};

static uint64_t manual_mono(void *ctx)
{
    mb_manual_clock *mc = ctx;
    return mc->mono_start + atomic_load_explicit(&mc->elapsed, memory_order_acquire);
}

static uint64_t manual_wall(void *ctx)
{
    mb_manual_clock *mc = ctx;
    return mc->wall_start + atomic_load_explicit(&mc->elapsed, memory_order_acquire);
}

mb_status mb_manual_clock_create(uint64_t mono_start_ns, uint64_t wall_start_ns,
                                 mb_manual_clock **out, mb_err *err)
{
    if (out == NULL)
        return mb_err_set(err, MB_EINVAL, "manual clock: NULL out");
    mb_manual_clock *mc = mb__calloc(1, sizeof *mc);
    if (mc == NULL)
        return mb_err_set(err, MB_ENOMEM, "manual clock: out of memory");
    mc->mono_start = mono_start_ns;
    mc->wall_start = wall_start_ns;
    atomic_init(&mc->elapsed, 0);
    mc->clock.mono_ns = manual_mono;
    mc->clock.wall_ns = manual_wall;
    mc->clock.ctx = mc;
    *out = mc;
    return MB_OK;
}

void mb_manual_clock_destroy(mb_manual_clock *mc)
{
    mb__free(mc);
}

void mb_manual_clock_advance(mb_manual_clock *mc, uint64_t delta_ns)
{
    atomic_fetch_add_explicit(&mc->elapsed, delta_ns, memory_order_acq_rel);
}

const mb_clock *mb_manual_clock_get(const mb_manual_clock *mc)
{
    return &mc->clock;
}
