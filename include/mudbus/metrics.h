/* SPDX-License-Identifier: MIT */
/*
 * metrics: counters, gauges and histograms, and their Prometheus text
 * exposition.
 *
 * An mb_metrics registry owns the storage of every metric registered in it;
 * registering returns a pointer that stays valid until the registry is
 * destroyed, so the hot path updates a metric with one relaxed atomic operation
 * and no lookup. Samples of one family (same name, different labels) are written
 * together, with one HELP and one TYPE line, in registration order.
 *
 * Histograms use fixed power-of-two buckets (bucket i counts values v with
 * 2^(i-1) < v <= 2^i of the histogram's base unit), so an observation is a
 * count-leading-zeros and two atomic adds, and quantiles can be estimated from
 * a snapshot. Timing histograms observe nanoseconds and are exposed in seconds,
 * as Prometheus conventions ask.
 *
 * Threads: every function may be called from any thread. Updates are relaxed
 * atomics: a snapshot taken while others update is consistent per value, not
 * across values.
 */
#ifndef MUDBUS_METRICS_H
#define MUDBUS_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "mudbus/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mb_metrics mb_metrics;

/* A monotonically increasing count. Update with mb_counter_add. */
typedef struct mb_counter {
    _Atomic uint64_t value;
} mb_counter;

/* A value that goes up and down. */
typedef struct mb_gauge {
    _Atomic int64_t value;
} mb_gauge;

/* Number of finite buckets: upper bounds 2^0 .. 2^(MB_HIST_BUCKETS-1) units,
 * plus the +Inf bucket. With nanoseconds that spans 1 ns .. ~69 s. */
#define MB_HIST_BUCKETS 37

typedef struct mb_histogram {
    _Atomic uint64_t buckets[MB_HIST_BUCKETS + 1]; /* per bucket, not cumulative */
    _Atomic uint64_t sum;         /* wraps at 2^64 base units (584 years of nanoseconds) */
    double unit_scale;            /* exposition multiplies values by this (1e-9: ns -> s) */
    _Atomic uint32_t sample_mask; /* see mb_histogram_sample; 0: every call */
} mb_histogram;

static inline void mb_counter_add(mb_counter *c, uint64_t n)
{
    atomic_fetch_add_explicit(&c->value, n, memory_order_relaxed);
}

static inline uint64_t mb_counter_get(const mb_counter *c)
{
    return atomic_load_explicit(&c->value, memory_order_relaxed);
}

static inline void mb_gauge_set(mb_gauge *g, int64_t v)
{
    atomic_store_explicit(&g->value, v, memory_order_relaxed);
}

static inline void mb_gauge_add(mb_gauge *g, int64_t delta)
{
    atomic_fetch_add_explicit(&g->value, delta, memory_order_relaxed);
}

static inline int64_t mb_gauge_get(const mb_gauge *g)
{
    return atomic_load_explicit(&g->value, memory_order_relaxed);
}

/* Record one observation of `v` base units. */
void mb_histogram_observe(mb_histogram *h, uint64_t v);

/* Whether this call should be timed into `h`. Timing a hot path costs two
 * clock reads; a histogram with sampling on (mb_metrics_set_timing_sample)
 * times a random one call in N (a per-thread xorshift generator, so calls to
 * several histograms in a fixed order are all sampled fairly) and the rest not
 * at all. The observations are real timings either way; with sampling, the
 * histogram's count is the number of sampled calls (use a counter for the
 * number of calls). */
static inline int mb_histogram_sample(mb_histogram *h)
{
    static _Thread_local uint32_t x = 2463534242u;
    uint32_t mask = atomic_load_explicit(&h->sample_mask, memory_order_relaxed);
    if (mask == 0)
        return 1;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return (x & mask) == 0;
}

/* A consistent-per-field copy of a histogram. */
typedef struct mb_histogram_snapshot {
    uint64_t buckets[MB_HIST_BUCKETS + 1];
    uint64_t count;
    uint64_t sum;
} mb_histogram_snapshot;

void mb_histogram_snapshot_get(const mb_histogram *h, mb_histogram_snapshot *out);

/* Estimate the q-quantile (0 < q <= 1) in base units by linear interpolation
 * inside the bucket that holds it. Returns 0 for an empty histogram. The
 * estimate is never off by more than the width of that bucket. */
double mb_histogram_quantile(const mb_histogram_snapshot *s, double q);

/* Create an empty registry. MB_EINVAL for a NULL `out`; MB_ENOMEM. */
mb_status mb_metrics_create(mb_metrics **out, mb_err *err);

/* Destroy a registry and every metric in it. NULL does nothing. No other
 * thread may use the registry or its metrics any more. */
void mb_metrics_destroy(mb_metrics *m);

/* Register a metric and return its storage (zeroed) in *out.
 *
 * `name` must match [a-zA-Z_:][a-zA-Z0-9_:]* ; `help` is one line; `labels` is
 * NULL or a preformatted Prometheus label list without braces, e.g.
 * `reason="bad_token"` (no trailing comma; a histogram may not have a label
 * `le`). A family's type is fixed by its first registration.
 *
 * Returns MB_EINVAL for a bad name or labels or a family registered before
 * with another type, MB_EEXIST when the same name and labels are registered
 * already, MB_ENOMEM. On error nothing is registered. */
mb_status mb_metrics_counter(mb_metrics *m, const char *name, const char *help, const char *labels,
                             mb_counter **out, mb_err *err);
mb_status mb_metrics_gauge(mb_metrics *m, const char *name, const char *help, const char *labels,
                           mb_gauge **out, mb_err *err);
/* `unit_scale` converts the observed base unit to the exposed one: 1e-9 for a
 * histogram of nanoseconds exposed in seconds, 1 for sizes. */
mb_status mb_metrics_histogram(mb_metrics *m, const char *name, const char *help,
                               const char *labels, double unit_scale, mb_histogram **out,
                               mb_err *err);

/* Time one call in `every_n` (a power of two, 1..1024; 1 = every call, the
 * default) in every timing histogram of the registry (unit_scale 1e-9),
 * those registered already and those registered later. MB_EINVAL otherwise. */
mb_status mb_metrics_set_timing_sample(mb_metrics *m, uint32_t every_n, mb_err *err);

/* Write the Prometheus text exposition (format 0.0.4) of every metric into a
 * new NUL-terminated string that the caller frees with free(). Histograms are
 * written with cumulative `_bucket{le=...}` samples for the buckets up to the
 * highest non-empty one, then `+Inf`, `_sum` and `_count`. MB_ENOMEM: nothing
 * is returned. */
mb_status mb_metrics_format(mb_metrics *m, char **out, size_t *out_len, mb_err *err);

#ifdef __cplusplus
}
#endif
#endif
