/* SPDX-License-Identifier: MIT */
/*
 * breaker: the circuit breaker's state machine and sliding windows.
 *
 * Invariants, all under `lock`:
 * - The window totals (w_calls, w_failures, w_slow) equal the sums over the
 *   ring (COUNT: one byte of outcome bits per call, `ring_n` of them filled)
 *   or over the per-second buckets (TIME: bucket s % window_size holds second
 *   s for the seconds (head_sec - window_size, head_sec]).
 * - `gen` changes on every state change and operator call; a ticket carries
 *   the generation it was issued in and is counted only in that generation.
 *   Generation 0 is never used, so a zeroed ticket is always stale.
 * - In HALF_OPEN, ho_done <= ho_admitted <= half_open_calls; the probes in
 *   flight are ho_admitted - ho_done. ho_deadline is meaningful only while
 *   some are in flight.
 * - cur_open_ms is in [open_ms, max_open_ms].
 *
 * Time-driven changes are applied lazily by tick() at the start of every
 * call. State changes are collected in a small `pending` list while the lock
 * is held and handed to the listener after it is released, so the listener
 * may call back into the breaker. Metrics are relaxed atomics, updated under
 * the lock so that they move in step with the state (except calls_total's
 * counter, which the fast path below adds to at once).
 *
 * Fast path. While CLOSED with a COUNT window, in the common case no
 * success can trip the breaker: once the window holds min_calls calls, a
 * success only lowers the rates; below that, the trip could only come at
 * min_calls with the failures already in the window, which is known now.
 * Then `fast` holds the generation (and is 0 otherwise, and while the lock
 * is held): acquire takes no lock, and a success that is not slow, on a
 * ticket of that generation, is only counted in `fast` (one compare-and-swap)
 * and folded into the window by the next call that takes the lock (fold(),
 * before anything else; at most FAST_FOLD_AT successes wait). Successes are
 * folded in a batch, which is the order in which they would have been
 * recorded had each taken the lock at the moment of its fold, so every
 * observation (stats, trips, the window) is exactly that of the locked path.
 * With the system clock the breaker reads CLOCK_MONOTONIC_COARSE (a few ns
 * instead of a few tens) when its resolution is below 1/64 of slow_call_ms
 * (4 ms against the default 1000 ms); all its readings come from that one
 * source.
 *
 * Workload: one acquire and one record per call to the dependency (every NATS
 * publish or request of a client), from many threads; stats from a metrics
 * scrape or an operator's command.
 */
#include "mudbus/breaker.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "metrics_int.h"

#define NS_PER_MS  1000000ull
#define NS_PER_SEC 1000000000ull

#define MAX_COUNT_WINDOW 1000000u
#define MAX_TIME_WINDOW  3600u
#define MAX_PROBES       10000u

/* Outcome bits of one call in a COUNT window. */
#define BIT_FAIL 1u
#define BIT_SLOW 2u

/* The fast word: generation << FAST_SHIFT | successes not folded yet. */
#define FAST_SHIFT   24
#define FAST_COUNT   ((UINT64_C(1) << FAST_SHIFT) - 1)
#define FAST_FOLD_AT (UINT64_C(1) << 16) /* bounds the work of one fold */
#define FAST_GEN_MAX (UINT64_MAX >> FAST_SHIFT)

/* More changes than one call can make: tick() makes at most one, the call
 * itself at most one more. */
#define MAX_PENDING 4

typedef struct bucket {
    uint32_t calls;
    uint32_t failures;
    uint32_t slow;
} bucket;

typedef struct change {
    mb_breaker_state from;
    mb_breaker_state to;
} change;

typedef struct pending {
    change c[MAX_PENDING];
    unsigned n;
} pending;

struct mb_breaker {
    pthread_mutex_t lock;
    char name[MB_BREAKER_NAME_MAX + 1];

    /* Options, resolved. */
    mb_breaker_window window;
    uint32_t window_size;
    uint32_t min_calls;
    uint32_t failure_pct; /* 0: off */
    uint32_t slow_pct;    /* 0: off */
    uint64_t slow_ns;
    uint64_t open_ms;
    double backoff;
    uint64_t max_open_ms;
    uint32_t quota;
    uint64_t max_wait_ns;
    const mb_clock *clock;
    bool coarse; /* read CLOCK_MONOTONIC_COARSE instead of `clock` */
    mb_breaker_listener_fn listener;
    void *listener_ctx;

    mb_breaker_state state;
    uint64_t gen;
    /* The fast path (see the top): 0 or gen << FAST_SHIFT | successes. */
    _Atomic uint64_t fast;

    /* Window. */
    uint8_t *ring; /* COUNT */
    uint32_t ring_n, ring_pos;
    bucket *buckets; /* TIME */
    uint64_t t0_ns;  /* second 0 of the TIME window */
    uint64_t head_sec;
    uint32_t w_calls, w_failures, w_slow;

    /* OPEN. */
    uint64_t cur_open_ms;
    uint64_t open_until_ns;

    /* HALF_OPEN round. */
    uint32_t ho_admitted, ho_done, ho_failures, ho_slow;
    uint64_t ho_deadline_ns;

    /* Totals. */
    uint64_t calls_total, failures_total, slow_total, ignored_total, stale_total;
    uint64_t rejected_total, trips_total;

    /* Metrics, all NULL without a registry. */
    mb_gauge *m_state;
    mb_counter *m_calls, *m_failures, *m_slow, *m_rejected, *m_trips;
};

static const char *const state_names[] = {"closed", "open", "half_open", "forced_open", "disabled"};

const char *mb_breaker_state_name(mb_breaker_state s)
{
    if ((unsigned)s >= sizeof state_names / sizeof state_names[0])
        return "unknown";
    return state_names[s];
}

/* ---- helpers ---- */

static inline uint64_t now_ns(const mb_breaker *b)
{
    if (b->coarse) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
        return (uint64_t)ts.tv_sec * NS_PER_SEC + (uint64_t)ts.tv_nsec;
    }
    return mb_clock_mono_ns(b->clock);
}

static inline void count(mb_counter *c, uint64_t n)
{
    if (c != NULL)
        mb_counter_add(c, n);
}

/* Whether `bad` out of `total` reaches `pct` percent; pct 0 is off. */
static inline bool reaches(uint32_t pct, uint64_t bad, uint64_t total)
{
    return pct != 0 && total != 0 && bad * 100u >= (uint64_t)pct * total;
}

/* ---- window ---- */

static void window_clear(mb_breaker *b)
{
    b->ring_n = 0;
    b->ring_pos = 0;
    if (b->buckets != NULL)
        memset(b->buckets, 0, (size_t)b->window_size * sizeof *b->buckets);
    b->w_calls = b->w_failures = b->w_slow = 0;
}

/* TIME window: move the head to the second of `now`, expiring the buckets of
 * the seconds that left the window. */
static void window_advance(mb_breaker *b, uint64_t now)
{
    if (b->window != MB_BREAKER_WINDOW_TIME)
        return;
    uint64_t sec = now >= b->t0_ns ? (now - b->t0_ns) / NS_PER_SEC : 0;
    if (sec <= b->head_sec)
        return;
    uint64_t delta = sec - b->head_sec;
    if (delta >= b->window_size) {
        window_clear(b);
    } else {
        for (uint64_t s = b->head_sec + 1; s <= sec; s++) {
            bucket *k = &b->buckets[s % b->window_size];
            b->w_calls -= k->calls;
            b->w_failures -= k->failures;
            b->w_slow -= k->slow;
            memset(k, 0, sizeof *k);
        }
    }
    b->head_sec = sec;
}

static void window_add(mb_breaker *b, bool failed, bool slow)
{
    if (b->window == MB_BREAKER_WINDOW_COUNT) {
        if (b->ring_n == b->window_size) {
            uint8_t old = b->ring[b->ring_pos];
            b->w_calls--;
            b->w_failures -= (old & BIT_FAIL) != 0;
            b->w_slow -= (old & BIT_SLOW) != 0;
        } else {
            b->ring_n++;
        }
        b->ring[b->ring_pos] = (uint8_t)((failed ? BIT_FAIL : 0) | (slow ? BIT_SLOW : 0));
        b->ring_pos = (b->ring_pos + 1) % b->window_size;
    } else {
        /* The head was advanced to `now` by tick(). */
        bucket *k = &b->buckets[b->head_sec % b->window_size];
        k->calls++;
        k->failures += failed;
        k->slow += slow;
    }
    b->w_calls++;
    b->w_failures += failed;
    b->w_slow += slow;
}

/* Add k successes that are not slow to a COUNT window: as k calls of
 * window_add, in O(min(k, window_size)). */
static void window_add_ok(mb_breaker *b, uint64_t k)
{
    if (k < b->window_size) {
        while (k-- > 0)
            window_add(b, false, false);
        return;
    }
    memset(b->ring, 0, b->window_size);
    b->ring_n = b->window_size;
    b->ring_pos = (uint32_t)((b->ring_pos + k) % b->window_size);
    b->w_calls = b->window_size;
    b->w_failures = b->w_slow = 0;
}

/* ---- state changes ---- */

static void set_state(mb_breaker *b, mb_breaker_state to, uint64_t now, pending *p)
{
    mb_breaker_state from = b->state;
    b->state = to;
    b->gen++;
    b->ho_admitted = b->ho_done = b->ho_failures = b->ho_slow = 0;
    b->ho_deadline_ns = 0;
    switch (to) {
    case MB_BREAKER_OPEN:
        b->trips_total++;
        count(b->m_trips, 1);
        b->open_until_ns = now + b->cur_open_ms * NS_PER_MS;
        break;
    case MB_BREAKER_CLOSED:
        window_clear(b);
        b->cur_open_ms = b->open_ms;
        break;
    default:
        break;
    }
    if (b->m_state != NULL)
        mb_gauge_set(b->m_state, (int64_t)to);
    if (from != to && p->n < MAX_PENDING)
        p->c[p->n++] = (change){from, to};
}

/* Trip to OPEN: from CLOSED with the base duration, from a failed half-open
 * round with the duration grown by the backoff. */
static void trip(mb_breaker *b, uint64_t now, pending *p)
{
    if (b->state == MB_BREAKER_HALF_OPEN) {
        double next = (double)b->cur_open_ms * b->backoff;
        b->cur_open_ms = next >= (double)b->max_open_ms ? b->max_open_ms : (uint64_t)next;
    } else {
        b->cur_open_ms = b->open_ms;
    }
    set_state(b, MB_BREAKER_OPEN, now, p);
}

/* Apply the changes that time alone causes. */
static void tick(mb_breaker *b, uint64_t now, pending *p)
{
    window_advance(b, now);
    if (b->state == MB_BREAKER_OPEN && now >= b->open_until_ns)
        set_state(b, MB_BREAKER_HALF_OPEN, now, p);
    else if (b->state == MB_BREAKER_HALF_OPEN && b->ho_admitted > b->ho_done &&
             now >= b->ho_deadline_ns)
        trip(b, now, p);
}

/* Whether successes alone cannot trip the breaker now (see the top): the
 * fast path may count them. */
static bool fast_ok(const mb_breaker *b)
{
    if (b->state != MB_BREAKER_CLOSED || b->window != MB_BREAKER_WINDOW_COUNT ||
        b->gen > FAST_GEN_MAX)
        return false;
    uint64_t n = b->w_calls > b->min_calls ? b->w_calls : b->min_calls;
    return !reaches(b->failure_pct, b->w_failures, n) && !reaches(b->slow_pct, b->w_slow, n);
}

/* With the lock held: stop the fast path and fold the successes it counted.
 * They were counted in this generation, in CLOSED, while fast_ok() held, so
 * they cannot trip the breaker; m_calls has them already. */
static void fold(mb_breaker *b)
{
    uint64_t k = atomic_exchange_explicit(&b->fast, 0, memory_order_relaxed) & FAST_COUNT;
    if (k != 0) {
        window_add_ok(b, k);
        b->calls_total += k;
    }
}

/* Take the lock, fold, read the clock and apply what time changed. Returns
 * the time read. */
static uint64_t enter(mb_breaker *b, pending *p)
{
    pthread_mutex_lock(&b->lock);
    fold(b);
    uint64_t now = now_ns(b);
    tick(b, now, p);
    return now;
}

/* Release the lock, opening the fast path again if it applies. */
static void leave(mb_breaker *b)
{
    atomic_store_explicit(&b->fast, fast_ok(b) ? b->gen << FAST_SHIFT : 0, memory_order_relaxed);
    pthread_mutex_unlock(&b->lock);
}

static void notify(mb_breaker *b, const pending *p)
{
    if (b->listener == NULL)
        return;
    for (unsigned i = 0; i < p->n; i++)
        b->listener(b->listener_ctx, b->name, p->c[i].from, p->c[i].to);
}

/* ---- create / destroy ---- */

static mb_status register_metrics(mb_breaker *b, mb_metrics *m, mb_err *err)
{
    char labels[MB_BREAKER_NAME_MAX + 16];
    snprintf(labels, sizeof labels, "name=\"%s\"", b->name);
    mb_status st = mb_metrics_gauge(
        m, "mudbus_breaker_state",
        "Circuit breaker state: 0 closed, 1 open, 2 half-open, 3 forced open, 4 disabled", labels,
        &b->m_state, err);
    if (st == MB_OK)
        st = mb_metrics_counter(m, "mudbus_breaker_calls_total",
                                "Call outcomes counted by the circuit breaker", labels, &b->m_calls,
                                err);
    if (st == MB_OK)
        st = mb_metrics_counter(m, "mudbus_breaker_failures_total",
                                "Failed calls counted by the circuit breaker", labels,
                                &b->m_failures, err);
    if (st == MB_OK)
        st = mb_metrics_counter(m, "mudbus_breaker_slow_calls_total",
                                "Slow calls counted by the circuit breaker", labels, &b->m_slow,
                                err);
    if (st == MB_OK)
        st = mb_metrics_counter(m, "mudbus_breaker_rejected_total",
                                "Calls rejected by the circuit breaker", labels, &b->m_rejected,
                                err);
    if (st == MB_OK)
        st = mb_metrics_counter(m, "mudbus_breaker_trips_total", "Times the circuit breaker opened",
                                labels, &b->m_trips, err);
    return st;
}

/* Resolve defaults and check ranges into `b`. */
static mb_status resolve_opts(mb_breaker *b, const mb_breaker_opts *o, mb_err *err)
{
    const char *name = o->name != NULL ? o->name : "default";
    if (!mb__metrics_label_value_ok(name, MB_BREAKER_NAME_MAX))
        return mb_err_set(err, MB_EINVAL,
                          "breaker: name must be 1..%d characters of [A-Za-z0-9_.:-]",
                          MB_BREAKER_NAME_MAX);
    memcpy(b->name, name, strlen(name) + 1);

    b->window = o->window;
    if (b->window == MB_BREAKER_WINDOW_COUNT) {
        b->window_size = o->window_size ? o->window_size : 100;
        if (b->window_size > MAX_COUNT_WINDOW)
            return mb_err_set(err, MB_EINVAL, "breaker %s: count window %u above %u calls", b->name,
                              b->window_size, MAX_COUNT_WINDOW);
    } else if (b->window == MB_BREAKER_WINDOW_TIME) {
        b->window_size = o->window_size ? o->window_size : 60;
        if (b->window_size > MAX_TIME_WINDOW)
            return mb_err_set(err, MB_EINVAL, "breaker %s: time window %u above %u seconds",
                              b->name, b->window_size, MAX_TIME_WINDOW);
    } else {
        return mb_err_set(err, MB_EINVAL, "breaker %s: unknown window kind %d", b->name,
                          (int)o->window);
    }
    b->min_calls = o->min_calls ? o->min_calls : 20;
    if (b->window == MB_BREAKER_WINDOW_COUNT && b->min_calls > b->window_size)
        b->min_calls = b->window_size;

    uint32_t fp = o->failure_rate_pct ? o->failure_rate_pct : 50;
    uint32_t sp = o->slow_call_rate_pct;
    if ((fp > 100 && fp != MB_BREAKER_OFF) || (sp > 100 && sp != MB_BREAKER_OFF))
        return mb_err_set(err, MB_EINVAL,
                          "breaker %s: rate thresholds are 1..100 percent or MB_BREAKER_OFF",
                          b->name);
    b->failure_pct = fp == MB_BREAKER_OFF ? 0 : fp;
    b->slow_pct = sp == MB_BREAKER_OFF ? 0 : sp;
    uint64_t slow_ms = o->slow_call_ms ? o->slow_call_ms : 1000;
    if (slow_ms > UINT64_MAX / NS_PER_MS)
        return mb_err_set(err, MB_EINVAL, "breaker %s: slow_call_ms too large", b->name);
    b->slow_ns = slow_ms * NS_PER_MS;

    b->open_ms = o->open_ms ? o->open_ms : 5000;
    /* The default cap never lies below an explicit open_ms. */
    b->max_open_ms = o->max_open_ms;
    if (b->max_open_ms == 0)
        b->max_open_ms = b->open_ms > 60000 ? b->open_ms : 60000;
    if (b->max_open_ms < b->open_ms || b->max_open_ms > UINT64_MAX / NS_PER_MS / 4)
        return mb_err_set(err, MB_EINVAL, "breaker %s: max_open_ms must be in [open_ms, 2^60 ns)",
                          b->name);
    b->backoff = o->open_backoff != 0 ? o->open_backoff : 2.0;
    if (!(b->backoff >= 1.0))
        return mb_err_set(err, MB_EINVAL, "breaker %s: open_backoff must be at least 1", b->name);
    b->quota = o->half_open_calls ? o->half_open_calls : 5;
    if (b->quota > MAX_PROBES)
        return mb_err_set(err, MB_EINVAL, "breaker %s: half_open_calls above %u", b->name,
                          MAX_PROBES);
    uint64_t wait_ms = o->half_open_max_wait_ms ? o->half_open_max_wait_ms : 30000;
    if (wait_ms > UINT64_MAX / NS_PER_MS / 4)
        return mb_err_set(err, MB_EINVAL, "breaker %s: half_open_max_wait_ms too large", b->name);
    b->max_wait_ns = wait_ms * NS_PER_MS;
    b->clock = o->clock != NULL ? o->clock : mb_clock_system();
    struct timespec res;
    b->coarse = b->clock == mb_clock_system() && clock_getres(CLOCK_MONOTONIC_COARSE, &res) == 0 &&
                res.tv_sec == 0 && (uint64_t)res.tv_nsec * 64 <= b->slow_ns;
    b->listener = o->listener;
    b->listener_ctx = o->listener_ctx;
    return MB_OK;
}

mb_status mb_breaker_create(const mb_breaker_opts *opts, mb_breaker **out, mb_err *err)
{
    static const mb_breaker_opts defaults;
    if (out == NULL)
        return mb_err_set(err, MB_EINVAL, "breaker: NULL out");
    if (opts == NULL)
        opts = &defaults;
    mb_breaker *b = mb__calloc(1, sizeof *b);
    if (b == NULL)
        return mb_err_set(err, MB_ENOMEM, "breaker: out of memory");
    mb_status st = resolve_opts(b, opts, err);
    if (st != MB_OK) {
        mb__free(b);
        return st;
    }
    if (b->window == MB_BREAKER_WINDOW_COUNT)
        b->ring = mb__malloc(b->window_size);
    else
        b->buckets = mb__calloc(b->window_size, sizeof *b->buckets);
    if (b->ring == NULL && b->buckets == NULL) {
        st = mb_err_set(err, MB_ENOMEM, "breaker %s: out of memory", b->name);
        mb__free(b);
        return st;
    }
    if (opts->metrics != NULL && (st = register_metrics(b, opts->metrics, err)) != MB_OK) {
        /* Take back what was registered, so that the call can be retried. */
        mb__metrics_forget(opts->metrics, b->m_state);
        mb__metrics_forget(opts->metrics, b->m_calls);
        mb__metrics_forget(opts->metrics, b->m_failures);
        mb__metrics_forget(opts->metrics, b->m_slow);
        mb__metrics_forget(opts->metrics, b->m_rejected);
        mb__metrics_forget(opts->metrics, b->m_trips);
        mb__free(b->ring);
        mb__free(b->buckets);
        mb__free(b);
        return st;
    }
    b->state = MB_BREAKER_CLOSED;
    b->gen = 1;
    b->cur_open_ms = b->open_ms;
    b->t0_ns = now_ns(b);
    atomic_init(&b->fast, fast_ok(b) ? b->gen << FAST_SHIFT : 0);
    pthread_mutex_init(&b->lock, NULL);
    *out = b;
    return MB_OK;
}

void mb_breaker_destroy(mb_breaker *b)
{
    if (b == NULL)
        return;
    pthread_mutex_destroy(&b->lock);
    mb__free(b->ring);
    mb__free(b->buckets);
    mb__free(b);
}

/* ---- calls ---- */

mb_status mb_breaker_acquire(mb_breaker *b, mb_breaker_ticket *t)
{
    /* CLOSED with a COUNT window: nothing but the ticket to do. */
    uint64_t f = atomic_load_explicit(&b->fast, memory_order_relaxed);
    if (f != 0) {
        t->opaque[0] = now_ns(b);
        t->opaque[1] = f >> FAST_SHIFT;
        return MB_OK;
    }
    pending p = {.n = 0};
    bool ok;
    uint64_t now = enter(b, &p);
    switch (b->state) {
    case MB_BREAKER_CLOSED:
    case MB_BREAKER_DISABLED:
        ok = true;
        break;
    case MB_BREAKER_HALF_OPEN:
        ok = b->ho_admitted < b->quota;
        if (ok) {
            /* The wait for hung probes starts when the first of them goes
             * out; a round that only lacks traffic waits without limit. */
            if (b->ho_admitted == b->ho_done)
                b->ho_deadline_ns = now + b->max_wait_ns;
            b->ho_admitted++;
        }
        break;
    default:
        ok = false;
        break;
    }
    if (ok) {
        t->opaque[0] = now;
        t->opaque[1] = b->gen;
    } else {
        t->opaque[0] = t->opaque[1] = 0;
        b->rejected_total++;
        count(b->m_rejected, 1);
    }
    leave(b);
    notify(b, &p);
    return ok ? MB_OK : MB_EBREAKER;
}

/* Count one outcome in the totals and metrics. */
static void count_outcome(mb_breaker *b, bool failed, bool slow)
{
    b->calls_total++;
    b->failures_total += failed;
    b->slow_total += slow;
    count(b->m_calls, 1);
    if (failed)
        count(b->m_failures, 1);
    if (slow)
        count(b->m_slow, 1);
}

/* The fast path of a record (see the top): true if the outcome was counted. */
static bool record_fast(mb_breaker *b, const mb_breaker_ticket *t, mb_breaker_outcome o,
                        bool have_duration, uint64_t duration_ns)
{
    uint64_t f = atomic_load_explicit(&b->fast, memory_order_relaxed);
    if (o != MB_BREAKER_SUCCESS || f == 0 || f >> FAST_SHIFT != t->opaque[1])
        return false;
    if (!have_duration) {
        uint64_t now = now_ns(b);
        duration_ns = now >= t->opaque[0] ? now - t->opaque[0] : 0;
    }
    if (duration_ns > b->slow_ns)
        return false;
    for (;;) {
        if (f == 0 || f >> FAST_SHIFT != t->opaque[1] || (f & FAST_COUNT) >= FAST_FOLD_AT)
            return false;
        if (atomic_compare_exchange_weak_explicit(&b->fast, &f, f + 1, memory_order_relaxed,
                                                  memory_order_relaxed))
            break;
    }
    count(b->m_calls, 1);
    return true;
}

static void record_at(mb_breaker *b, const mb_breaker_ticket *t, mb_breaker_outcome o,
                      bool have_duration, uint64_t duration_ns)
{
    /* Generation 0: a zeroed ticket or that of a rejected call. */
    if (b == NULL || t == NULL || t->opaque[1] == 0)
        return;
    if (record_fast(b, t, o, have_duration, duration_ns))
        return;
    pending p = {.n = 0};
    uint64_t now = enter(b, &p);
    if (!have_duration)
        duration_ns = now >= t->opaque[0] ? now - t->opaque[0] : 0;
    bool failed = o == MB_BREAKER_FAILURE;
    bool slow = duration_ns > b->slow_ns;
    bool ignored = o != MB_BREAKER_SUCCESS && o != MB_BREAKER_FAILURE;

    if (t->opaque[1] != b->gen) {
        b->stale_total++;
    } else if (b->state == MB_BREAKER_CLOSED) {
        if (ignored) {
            b->ignored_total++;
        } else {
            window_add(b, failed, slow);
            count_outcome(b, failed, slow);
            if (b->w_calls >= b->min_calls && (reaches(b->failure_pct, b->w_failures, b->w_calls) ||
                                               reaches(b->slow_pct, b->w_slow, b->w_calls)))
                trip(b, now, &p);
        }
    } else if (b->state == MB_BREAKER_HALF_OPEN) {
        if (b->ho_admitted == b->ho_done) {
            b->stale_total++; /* recorded twice: no probe is in flight */
        } else if (ignored) {
            b->ignored_total++;
            b->ho_admitted--; /* the slot goes to another caller */
        } else {
            b->ho_done++;
            b->ho_failures += failed;
            b->ho_slow += slow;
            count_outcome(b, failed, slow);
            /* The denominator is the whole quota, so once a threshold is
             * reached no later probe can undo it: decide at once. */
            if (reaches(b->failure_pct, b->ho_failures, b->quota) ||
                reaches(b->slow_pct, b->ho_slow, b->quota))
                trip(b, now, &p);
            else if (b->ho_done == b->quota)
                set_state(b, MB_BREAKER_CLOSED, now, &p);
        }
    }
    /* DISABLED records nothing; OPEN and FORCED_OPEN issue no tickets. */
    leave(b);
    notify(b, &p);
}

void mb_breaker_record(mb_breaker *b, const mb_breaker_ticket *t, mb_breaker_outcome o)
{
    record_at(b, t, o, false, 0);
}

void mb_breaker_record_duration(mb_breaker *b, const mb_breaker_ticket *t, mb_breaker_outcome o,
                                uint64_t duration_ns)
{
    record_at(b, t, o, true, duration_ns);
}

/* ---- operators and observation ---- */

static void operate(mb_breaker *b, mb_breaker_state to)
{
    pending p = {.n = 0};
    pthread_mutex_lock(&b->lock);
    fold(b); /* no tick: the operator decides */
    uint64_t now = now_ns(b);
    if (to == MB_BREAKER_CLOSED) {
        window_advance(b, now);
        set_state(b, MB_BREAKER_CLOSED, now, &p); /* clears the window even when closed */
    } else {
        set_state(b, to, now, &p);
    }
    leave(b);
    notify(b, &p);
}

void mb_breaker_force_open(mb_breaker *b)
{
    operate(b, MB_BREAKER_FORCED_OPEN);
}

void mb_breaker_disable(mb_breaker *b)
{
    operate(b, MB_BREAKER_DISABLED);
}

void mb_breaker_reset(mb_breaker *b)
{
    operate(b, MB_BREAKER_CLOSED);
}

mb_breaker_state mb_breaker_state_get(mb_breaker *b)
{
    pending p = {.n = 0};
    enter(b, &p);
    mb_breaker_state s = b->state;
    leave(b);
    notify(b, &p);
    return s;
}

void mb_breaker_stats_get(mb_breaker *b, mb_breaker_stats *out)
{
    pending p = {.n = 0};
    uint64_t now = enter(b, &p);
    memset(out, 0, sizeof *out);
    out->state = b->state;
    out->window_calls = b->w_calls;
    out->window_failures = b->w_failures;
    out->window_slow = b->w_slow;
    if (b->w_calls != 0) {
        out->failure_rate_pct = 100.0 * b->w_failures / b->w_calls;
        out->slow_rate_pct = 100.0 * b->w_slow / b->w_calls;
    }
    out->probes_admitted = b->ho_admitted;
    out->probes_completed = b->ho_done;
    out->calls_total = b->calls_total;
    out->failures_total = b->failures_total;
    out->slow_total = b->slow_total;
    out->ignored_total = b->ignored_total;
    out->stale_total = b->stale_total;
    out->rejected_total = b->rejected_total;
    out->trips_total = b->trips_total;
    out->open_ms = b->cur_open_ms;
    if (b->state == MB_BREAKER_OPEN && b->open_until_ns > now)
        out->until_half_open_ms = (b->open_until_ns - now + NS_PER_MS - 1) / NS_PER_MS;
    leave(b);
    notify(b, &p);
}
