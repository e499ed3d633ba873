/* SPDX-License-Identifier: MIT */
/*
 * ratelimit.h - per-player, per-channel token buckets ("N per minute").
 *
 * A bucket holds up to `per_minute` tokens and refills continuously at
 * per_minute / 60 s; a command takes one token. A refusal says how long until
 * the next token (retry_after_ms, rounded up, >= 1; exact: a take at
 * now + retry_after_ms succeeds). Refill is credited in whole steps of at
 * most 60 ms (see ratelimit.c), so for rates that do not divide a minute
 * evenly a token can come up to one step later than in continuous time.
 * per_minute is capped at 4294967 (the burst must fit `milli`). A clock that
 * goes backwards credits nothing. Times are monotonic milliseconds supplied
 * by the caller (no clock reads, so tests need no sleeps). A bucket is 16
 * bytes; no allocation. Loop thread only.
 */
#ifndef MUDBUS_GW_RATELIMIT_H
#define MUDBUS_GW_RATELIMIT_H

#include <stdbool.h>
#include <stdint.h>

typedef struct gw_bucket {
    uint64_t stamp_ms; /* last refill; 0: never used (full) */
    uint32_t milli;    /* tokens x 1000 */
    uint32_t pad;
} gw_bucket;

/* Take one token. per_minute 0 means unlimited (always true). On refusal,
 * *retry_after_ms (may be NULL) receives the wait for the next token. */
bool gw_bucket_take(gw_bucket *b, uint32_t per_minute, uint64_t now_ms, uint64_t *retry_after_ms);

#endif
