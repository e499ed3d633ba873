/* SPDX-License-Identifier: MIT */
/*
 * retry: backoff delays for the four jitter kinds, the retryable-status
 * classification, the seeded generator that jitter draws from, and the retry
 * budget (a lock-free token bucket).
 *
 * Delays. mb_retry_next_delay is pure apart from the caller's generator. The
 * exponential ceiling base * 2^(n-1) is computed without ever overflowing: it
 * is compared with cap >> (n-1) first and saturates at the cap, so attempt
 * 1000 yields the cap, not a wrapped value. Every result lies in
 * [0, max_delay_ms]; full and equal jitter never exceed the ceiling of their
 * attempt, decorrelated jitter never goes below the base delay.
 *
 * Generator. xoroshiro128** (Blackman and Vigna, 2018: two 64-bit words of
 * state, 64-bit output), seeded by running splitmix64 over the seed, so every
 * seed including 0 gives a well-mixed, non-zero state. mb_rng_range maps the
 * output onto a range without modulo bias by rejecting the few lowest outputs
 * (2^64 mod span of them), as OpenBSD's arc4random_uniform does.
 *
 * Budget. The token count is one 32-bit atomic updated by compare-and-swap
 * loops, so acquire and success never block and the count never leaves
 * [0, max_tokens]: a withdrawal that cannot be paid in full takes nothing, a
 * refund stops at the maximum. The tokens gauge moves by the exact delta of
 * each successful swap, so once the callers are quiet it equals the count.
 * Counters are relaxed atomics.
 *
 * Threads: everything here may be called from any thread; a budget from many
 * at once. An mb_rng belongs to one thread at a time.
 */
#include "mudbus/retry.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "metrics_int.h"

#define MAX_ATTEMPTS_LIMIT 100u

/* ---- jitter names ---- */

static const char *const jitter_names[] = {
    [MB_JITTER_FULL] = "full",
    [MB_JITTER_NONE] = "none",
    [MB_JITTER_EQUAL] = "equal",
    [MB_JITTER_DECORRELATED] = "decorrelated",
};

#define NJITTER (sizeof jitter_names / sizeof jitter_names[0])

const char *mb_jitter_name(mb_jitter j)
{
    if ((unsigned)j >= NJITTER)
        return NULL;
    return jitter_names[j];
}

mb_status mb_jitter_parse(const char *s, mb_jitter *out)
{
    if (s == NULL || out == NULL)
        return MB_EINVAL;
    for (unsigned i = 0; i < NJITTER; i++) {
        if (strcmp(s, jitter_names[i]) == 0) {
            *out = (mb_jitter)i;
            return MB_OK;
        }
    }
    return MB_EINVAL;
}

/* ---- policy ---- */

void mb_retry_policy_default(mb_retry_policy *p)
{
    if (p == NULL)
        return;
    p->max_attempts = 4;
    p->base_delay_ms = 50;
    p->max_delay_ms = 5000;
    p->deadline_ms = 30000;
    p->jitter = MB_JITTER_FULL;
}

mb_status mb_retry_policy_check(const mb_retry_policy *p, mb_err *err)
{
    if (p == NULL)
        return mb_err_set(err, MB_EINVAL, "retry policy: NULL policy");
    if (p->max_attempts == 0)
        return mb_err_set(err, MB_EINVAL, "retry policy: max_attempts must be at least 1");
    if (p->max_attempts > MAX_ATTEMPTS_LIMIT)
        return mb_err_set(err, MB_EINVAL, "retry policy: max_attempts %u is above %u",
                          p->max_attempts, MAX_ATTEMPTS_LIMIT);
    if (p->base_delay_ms == 0)
        return mb_err_set(err, MB_EINVAL, "retry policy: base_delay_ms must be at least 1");
    if (p->base_delay_ms > p->max_delay_ms)
        return mb_err_set(
            err, MB_EINVAL, "retry policy: base_delay_ms %llu is above max_delay_ms %llu",
            (unsigned long long)p->base_delay_ms, (unsigned long long)p->max_delay_ms);
    if ((unsigned)p->jitter >= NJITTER)
        return mb_err_set(err, MB_EINVAL, "retry policy: unknown jitter kind %d", (int)p->jitter);
    return MB_OK;
}

/* ---- generator ---- */

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

void mb_rng_seed(mb_rng *r, uint64_t seed)
{
    uint64_t x = seed;
    r->s[0] = splitmix64(&x);
    r->s[1] = splitmix64(&x);
    /* xoroshiro must not start from the all-zero state, its only fixed point. */
    if (r->s[0] == 0 && r->s[1] == 0)
        r->s[0] = 1;
}

uint64_t mb_rng_next(mb_rng *r)
{
    uint64_t s0 = r->s[0];
    uint64_t s1 = r->s[1];
    uint64_t result = rotl(s0 * 5, 7) * 9;
    s1 ^= s0;
    r->s[0] = rotl(s0, 24) ^ s1 ^ (s1 << 16);
    r->s[1] = rotl(s1, 37);
    return result;
}

uint64_t mb_rng_range(mb_rng *r, uint64_t lo, uint64_t hi)
{
    if (hi <= lo)
        return lo;
    uint64_t span = hi - lo;
    if (span == UINT64_MAX)
        return mb_rng_next(r);
    uint64_t n = span + 1;
    /* 2^64 mod n: outputs below it would make the low residues more likely. */
    uint64_t reject_below = (0 - n) % n;
    uint64_t x;
    do {
        x = mb_rng_next(r);
    } while (x < reject_below);
    return lo + x % n;
}

/* ---- delays ---- */

/* min(cap, base * 2^(n-1)) for n >= 1, saturating instead of overflowing.
 * Requires base <= cap. */
static uint64_t exp_ceiling(uint64_t base, uint64_t cap, unsigned n)
{
    unsigned shift = n - 1;
    if (shift >= 64 || base > (cap >> shift))
        return cap;
    return base << shift;
}

mb_status mb_retry_next_delay(const mb_retry_policy *p, unsigned attempts_made,
                              uint64_t prev_delay_ms, uint64_t elapsed_ms, mb_rng *rng,
                              uint64_t *delay_ms)
{
    if (p == NULL || rng == NULL || delay_ms == NULL || attempts_made == 0 ||
        mb_retry_policy_check(p, NULL) != MB_OK)
        return MB_EINVAL;
    if (attempts_made >= p->max_attempts)
        return MB_ELIMIT;
    /* Past the deadline already: refuse before drawing from the generator. */
    if (p->deadline_ms != 0 && elapsed_ms > p->deadline_ms)
        return MB_ELIMIT;

    const uint64_t base = p->base_delay_ms;
    const uint64_t cap = p->max_delay_ms;
    uint64_t d;
    switch (p->jitter) {
    case MB_JITTER_NONE:
        d = exp_ceiling(base, cap, attempts_made);
        break;
    case MB_JITTER_EQUAL: {
        uint64_t c = exp_ceiling(base, cap, attempts_made);
        uint64_t half = c / 2;
        /* The random part spans the other half (one more for an odd ceiling),
         * so the result covers exactly [floor(c/2), c]. */
        d = half + mb_rng_range(rng, 0, c - half);
        break;
    }
    case MB_JITTER_DECORRELATED: {
        uint64_t prev = prev_delay_ms != 0 ? prev_delay_ms : base;
        uint64_t hi = prev > UINT64_MAX / 3 ? UINT64_MAX : prev * 3;
        d = mb_rng_range(rng, base, hi);
        if (d > cap)
            d = cap;
        break;
    }
    case MB_JITTER_FULL:
    default:
        d = mb_rng_range(rng, 0, exp_ceiling(base, cap, attempts_made));
        break;
    }

    /* elapsed + d > deadline, written so that it cannot overflow (elapsed is
     * at most the deadline here). */
    if (p->deadline_ms != 0 && d > p->deadline_ms - elapsed_ms)
        return MB_ELIMIT;
    *delay_ms = d;
    return MB_OK;
}

bool mb_status_retryable(mb_status st)
{
    /* Every status is listed and there is no default, so -Wswitch (in -Wall)
     * fails the build when a status is added without being classified. */
    switch (st) {
    case MB_ETIMEOUT:
    case MB_ENOCONN:
    case MB_ENORESPONDERS:
    case MB_EIO:
    case MB_EBREAKER:
    case MB_EAGAIN:
        return true;
    case MB_OK:
    case MB_EINVAL:
    case MB_ENOMEM:
    case MB_ENOTFOUND:
    case MB_EEXIST:
    case MB_ENOSPC:
    case MB_ETOOBIG:
    case MB_ESUBJECT:
    case MB_EPATTERN:
    case MB_EJSON:
    case MB_ESCHEMA:
    case MB_EAUTH:
    case MB_ETLS:
    case MB_EBUDGET:
    case MB_ESTATE:
    case MB_ECLOSED:
    case MB_ECORRUPT:
    case MB_EUNSUPPORTED:
    case MB_EINTERNAL:
    case MB_ELIMIT:
    case MB__STATUS_COUNT:
        return false;
    }
    return false;
}

/* ---- budget ---- */

struct mb_retry_budget {
    _Atomic uint32_t tokens;
    uint32_t max_tokens;
    uint32_t retry_cost;
    uint32_t timeout_cost;
    uint32_t success_refund;
    /* Point into the caller's registry, or at the local storage below. */
    mb_gauge *tokens_gauge;
    mb_counter *granted;
    mb_counter *refused;
    mb_gauge own_tokens;
    mb_counter own_granted;
    mb_counter own_refused;
};

static uint32_t or_default(uint32_t v, uint32_t def)
{
    return v != 0 ? v : def;
}

mb_status mb_retry_budget_create(const mb_retry_budget_opts *opts, mb_retry_budget **out,
                                 mb_err *err)
{
    if (out == NULL)
        return mb_err_set(err, MB_EINVAL, "retry budget: NULL out");
    mb_retry_budget_opts o = {0};
    if (opts != NULL)
        o = *opts;
    o.max_tokens = or_default(o.max_tokens, 500);
    o.retry_cost = or_default(o.retry_cost, 5);
    o.timeout_cost = or_default(o.timeout_cost, 10);
    o.success_refund = or_default(o.success_refund, 1);
    if (o.retry_cost > o.max_tokens || o.timeout_cost > o.max_tokens)
        return mb_err_set(err, MB_EINVAL,
                          "retry budget: a retry cost (%u, timeout %u) is above max_tokens %u",
                          o.retry_cost, o.timeout_cost, o.max_tokens);

    mb_retry_budget *b = mb__calloc(1, sizeof *b);
    if (b == NULL)
        return mb_err_set(err, MB_ENOMEM, "retry budget: out of memory");
    b->max_tokens = o.max_tokens;
    b->retry_cost = o.retry_cost;
    b->timeout_cost = o.timeout_cost;
    b->success_refund = o.success_refund;
    b->tokens_gauge = &b->own_tokens;
    b->granted = &b->own_granted;
    b->refused = &b->own_refused;

    if (o.metrics != NULL) {
        /* On failure the metrics registered so far are taken back, so that
         * the caller's registry is as it was and the call can be retried.
         * Pointers still at the own_ fields are not in the registry. */
        mb_status st =
            mb_metrics_gauge(o.metrics, "mudbus_retry_budget_tokens",
                             "Tokens left in the retry budget.", o.labels, &b->tokens_gauge, err);
        if (st == MB_OK)
            st = mb_metrics_counter(o.metrics, "mudbus_retry_budget_granted_total",
                                    "Retries the budget paid for.", o.labels, &b->granted, err);
        if (st == MB_OK)
            st = mb_metrics_counter(o.metrics, "mudbus_retry_budget_refused_total",
                                    "Retries refused because the budget was empty.", o.labels,
                                    &b->refused, err);
        if (st != MB_OK) {
            mb__metrics_forget(o.metrics, b->tokens_gauge);
            mb__metrics_forget(o.metrics, b->granted);
            mb__metrics_forget(o.metrics, b->refused);
            mb__free(b);
            return st;
        }
    }
    atomic_init(&b->tokens, b->max_tokens);
    mb_gauge_set(b->tokens_gauge, (int64_t)b->max_tokens);
    *out = b;
    return MB_OK;
}

void mb_retry_budget_destroy(mb_retry_budget *b)
{
    mb__free(b);
}

bool mb_retry_budget_acquire(mb_retry_budget *b, mb_status failure)
{
    uint32_t cost = failure == MB_ETIMEOUT ? b->timeout_cost : b->retry_cost;
    uint32_t cur = atomic_load_explicit(&b->tokens, memory_order_relaxed);
    do {
        if (cur < cost) {
            mb_counter_add(b->refused, 1);
            return false;
        }
    } while (!atomic_compare_exchange_weak_explicit(&b->tokens, &cur, cur - cost,
                                                    memory_order_relaxed, memory_order_relaxed));
    mb_gauge_add(b->tokens_gauge, -(int64_t)cost);
    mb_counter_add(b->granted, 1);
    return true;
}

/* Add up to n tokens, never above max_tokens. */
static void budget_give(mb_retry_budget *b, uint32_t n)
{
    uint32_t cur = atomic_load_explicit(&b->tokens, memory_order_relaxed);
    uint32_t next;
    do {
        if (cur >= b->max_tokens)
            return;
        uint32_t room = b->max_tokens - cur;
        next = cur + (n < room ? n : room);
    } while (!atomic_compare_exchange_weak_explicit(&b->tokens, &cur, next, memory_order_relaxed,
                                                    memory_order_relaxed));
    mb_gauge_add(b->tokens_gauge, (int64_t)(next - cur));
}

void mb_retry_budget_success(mb_retry_budget *b)
{
    /* The common case (a full budget) without a call. */
    if (atomic_load_explicit(&b->tokens, memory_order_relaxed) >= b->max_tokens)
        return;
    budget_give(b, b->success_refund);
}

void mb_retry_budget_refund(mb_retry_budget *b, mb_status failure)
{
    budget_give(b, failure == MB_ETIMEOUT ? b->timeout_cost : b->retry_cost);
}

uint32_t mb_retry_budget_tokens(const mb_retry_budget *b)
{
    return atomic_load_explicit(&b->tokens, memory_order_relaxed);
}

uint64_t mb_retry_budget_granted(const mb_retry_budget *b)
{
    return mb_counter_get(b->granted);
}

uint64_t mb_retry_budget_refused(const mb_retry_budget *b)
{
    return mb_counter_get(b->refused);
}
