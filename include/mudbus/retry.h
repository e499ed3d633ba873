/* SPDX-License-Identifier: MIT */
/*
 * retry: backoff policy, retryable-status classification and the retry
 * budget.
 *
 * A policy gives the number of attempts (including the first), the base delay
 * and the cap, the jitter kind and an overall deadline. The next delay is a
 * pure function of the policy, the attempt number, the previous delay (for
 * decorrelated jitter) and a caller-owned random generator, so tests replay
 * exact sequences from a seed. Jitter kinds follow the AWS architecture blog's
 * "Exponential Backoff and Jitter" study:
 *   none:          min(cap, base * 2^(n-1))
 *   full:          uniform [0, min(cap, base * 2^(n-1))]            (default)
 *   equal:         c/2 (rounded down) plus uniform [0, c - c/2], where c is
 *                  the "none" value: so uniform over [c/2, c]
 *   decorrelated:  min(cap, uniform [base, prev * 3])
 * where n is the retry number (1 for the first retry).
 *
 * Retries are never slept: the caller schedules the next attempt on an
 * mb_timerq (timerq.h) and returns.
 *
 * The budget is a token bucket shared by one client (AWS SDK defaults: 500
 * tokens, a retry costs 5, a retry after a timeout 10, a success gives 1
 * back). When it is empty, failures are not retried; this is counted. So a
 * degraded server does not attract a retry storm.
 *
 * Threads: policies and mb_retry_next_delay are pure (the rng is the caller's
 * and must not be shared without a lock). A budget may be used from any
 * number of threads at once (lock-free).
 */
#ifndef MUDBUS_RETRY_H
#define MUDBUS_RETRY_H

#include <stdbool.h>
#include <stdint.h>

#include "mudbus/metrics.h"
#include "mudbus/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum mb_jitter {
    MB_JITTER_FULL = 0, /* default */
    MB_JITTER_NONE,
    MB_JITTER_EQUAL,
    MB_JITTER_DECORRELATED
} mb_jitter;

/* "full", "none", "equal", "decorrelated"; NULL outside the enum. */
const char *mb_jitter_name(mb_jitter j);
/* MB_EINVAL for another name. */
mb_status mb_jitter_parse(const char *s, mb_jitter *out);

typedef struct mb_retry_policy {
    unsigned max_attempts;  /* including the first; 1 = never retry; default 4 */
    uint64_t base_delay_ms; /* default 50 */
    uint64_t max_delay_ms;  /* cap of one delay; default 5000 */
    uint64_t deadline_ms;   /* from the first attempt; 0 = none; default 30000 */
    mb_jitter jitter;       /* default MB_JITTER_FULL */
} mb_retry_policy;

/* Fill a policy with the defaults above. */
void mb_retry_policy_default(mb_retry_policy *p);

/* MB_EINVAL (with the reason) for max_attempts 0 or above 100, a base delay of
 * 0 or above the cap, or an unknown jitter kind. */
mb_status mb_retry_policy_check(const mb_retry_policy *p, mb_err *err);

/* A small seeded pseudo-random generator, xoroshiro128** (two 64-bit words of
 * state) seeded through splitmix64; good enough for jitter, not for secrets.
 * The same seed always gives the same sequence. A seed of 0 is allowed. */
typedef struct mb_rng {
    uint64_t s[2];
} mb_rng;

void mb_rng_seed(mb_rng *r, uint64_t seed);
uint64_t mb_rng_next(mb_rng *r);
/* Uniform in [lo, hi] (inclusive); lo when hi <= lo. */
uint64_t mb_rng_range(mb_rng *r, uint64_t lo, uint64_t hi);

/* The delay before the next attempt, after `attempts_made` attempts (>= 1)
 * that together took `elapsed_ms` since the first one started; `prev_delay_ms`
 * is the delay returned last time (0 before the first retry).
 *
 * Returns MB_OK with *delay_ms in [0, max_delay_ms]; MB_ELIMIT when
 * attempts_made has reached max_attempts, or when elapsed + delay would pass
 * the deadline (no attempt is worth scheduling then); MB_EINVAL for a NULL
 * argument, attempts_made 0, or a policy that mb_retry_policy_check refuses.
 * On error *delay_ms is unchanged. */
mb_status mb_retry_next_delay(const mb_retry_policy *p, unsigned attempts_made,
                              uint64_t prev_delay_ms, uint64_t elapsed_ms, mb_rng *rng,
                              uint64_t *delay_ms);

/* Whether a failure with this status may be retried: timeouts, connection
 * loss, no responders, I/O errors and an open breaker may; everything else
 * (invalid input, schema, subject, auth, TLS, payload too large, closed ...)
 * never. */
bool mb_status_retryable(mb_status st);

/* ---- budget ---- */

typedef struct mb_retry_budget_opts {
    uint32_t max_tokens;     /* default 500 */
    uint32_t retry_cost;     /* default 5 */
    uint32_t timeout_cost;   /* default 10: a retry after MB_ETIMEOUT */
    uint32_t success_refund; /* default 1 */
    mb_metrics *metrics;     /* NULL: no metrics */
    const char *labels;      /* labels of its metrics, e.g. client="game"; may be NULL */
} mb_retry_budget_opts;

typedef struct mb_retry_budget mb_retry_budget;

/* Create a full budget (opts may be NULL; zero fields take the defaults).
 * Registers mudbus_retry_budget_tokens (gauge), mudbus_retry_budget_granted_total
 * and mudbus_retry_budget_refused_total when metrics are given; the registry
 * must outlive the budget. MB_EINVAL for a NULL out or a cost above max_tokens;
 * MB_ENOMEM; a metrics error (e.g. MB_EEXIST for a second budget with the same
 * labels). On error no budget is created and the registry is left as it was
 * (metrics registered before the error are taken back). Destroying NULL does
 * nothing. */
mb_status mb_retry_budget_create(const mb_retry_budget_opts *opts, mb_retry_budget **out,
                                 mb_err *err);
void mb_retry_budget_destroy(mb_retry_budget *b);

/* Take the cost of one retry after a failure with status `failure`
 * (timeout_cost for MB_ETIMEOUT, retry_cost otherwise; whether the failure is
 * retryable at all is the caller's mb_status_retryable check). Returns
 * true if the retry may go ahead, false (counted) if the budget cannot pay
 * for it; then nothing is taken. */
bool mb_retry_budget_acquire(mb_retry_budget *b, mb_status failure);

/* Return success_refund tokens after a success, up to max_tokens. */
void mb_retry_budget_success(mb_retry_budget *b);

/* Give back what mb_retry_budget_acquire took for `failure`, up to
 * max_tokens, when the retry it paid for cannot take place after all (e.g.
 * the retry could not be queued). granted_total keeps the grant. */
void mb_retry_budget_refund(mb_retry_budget *b, mb_status failure);

/* Current tokens, and the counts so far. */
uint32_t mb_retry_budget_tokens(const mb_retry_budget *b);
uint64_t mb_retry_budget_granted(const mb_retry_budget *b);
uint64_t mb_retry_budget_refused(const mb_retry_budget *b);

#ifdef __cplusplus
}
#endif
#endif
