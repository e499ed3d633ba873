/* SPDX-License-Identifier: MIT */
/*
 * ratelimit.c - token buckets in integer arithmetic.
 *
 * A bucket counts thousandths of a token ("milli"); it holds at most
 * per_minute * 1000 and gains per_minute / 60 milli per millisecond. That
 * rate is rarely a whole number, so the refill is credited in whole steps:
 * a step is the shortest span, 60 / gcd(per_minute, 60) ms (1 to 60 ms),
 * after which the gain per_minute * step / 60 is a whole number of milli.
 * stamp_ms advances by whole steps only, so the time left over is carried to
 * the next call and nothing is ever lost or credited twice, however often the
 * bucket is asked. Hence retry_after_ms is exact: a take at now +
 * retry_after_ms succeeds and one a millisecond earlier fails. (For rates
 * where a token takes a fractional number of milliseconds, this can be up to
 * one step later than the continuous-time answer.)
 *
 * A full refill takes exactly 60 s whatever the rate, so a gap of a minute or
 * more fills the bucket without any multiplication; below that, the products
 * stay under 2^48. A clock that goes backwards credits nothing and restarts
 * the count from the new time. stamp_ms 0 means "never used", so a bucket
 * used at time 0 records 1 instead (one millisecond of refill is lost once).
 * per_minute is capped at PER_MINUTE_MAX so that the capacity fits milli.
 *
 * Loop thread only; a bucket is plain data.
 */
#include "ratelimit.h"

#include <stddef.h>

#define MILLI          1000u
#define MINUTE_MS      60000u
#define PER_MINUTE_MAX (UINT32_MAX / MILLI) /* 4294967 */

static uint32_t gcd60(uint32_t pm)
{
    uint32_t a = 60, b = pm % 60;
    while (b != 0) {
        uint32_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

static uint64_t stamp_of(uint64_t now_ms)
{
    return now_ms == 0 ? 1 : now_ms;
}

bool gw_bucket_take(gw_bucket *b, uint32_t per_minute, uint64_t now_ms, uint64_t *retry_after_ms)
{
    if (per_minute == 0)
        return true;
    if (per_minute > PER_MINUTE_MAX)
        per_minute = PER_MINUTE_MAX;
    uint32_t cap = per_minute * MILLI;
    uint32_t g = gcd60(per_minute);
    uint64_t step_ms = 60 / g;            /* 1..60 */
    uint64_t step_milli = per_minute / g; /* milli gained per step */

    if (b->stamp_ms == 0) {
        b->milli = cap;
        b->stamp_ms = stamp_of(now_ms);
    } else if (now_ms < b->stamp_ms) {
        b->stamp_ms = stamp_of(now_ms);
    } else {
        uint64_t dt = now_ms - b->stamp_ms;
        if (dt >= MINUTE_MS) {
            b->milli = cap;
            b->stamp_ms = now_ms;
        } else {
            uint64_t steps = dt / step_ms;
            uint64_t total = b->milli + steps * step_milli;
            if (total >= cap) {
                b->milli = cap;
                b->stamp_ms = now_ms;
            } else {
                b->milli = (uint32_t)total;
                b->stamp_ms += steps * step_ms;
            }
        }
    }
    if (b->milli > cap) /* per_minute was lowered since the last call */
        b->milli = cap;

    if (b->milli >= MILLI) {
        b->milli -= MILLI;
        return true;
    }
    if (retry_after_ms != NULL) {
        uint64_t need = MILLI - b->milli;
        uint64_t wait = (need + step_milli - 1) / step_milli * step_ms;
        /* The stamp is less than one step behind now (so the result is
         * >= 1), or 1 ms ahead of it after a call at time 0. No sums of
         * timestamps, so nothing overflows near UINT64_MAX. */
        if (now_ms >= b->stamp_ms)
            wait -= now_ms - b->stamp_ms;
        else
            wait += b->stamp_ms - now_ms;
        *retry_after_ms = wait;
    }
    return false;
}
