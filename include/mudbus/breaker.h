/* SPDX-License-Identifier: MIT */
/*
 * breaker: a circuit breaker with a sliding window, failure-rate and
 * slow-call-rate thresholds and a half-open probe quota.
 *
 * A caller asks the breaker before each call to a dependency
 * (mb_breaker_acquire) and reports the outcome afterwards (mb_breaker_record).
 * While CLOSED, outcomes go into a sliding window: the last `window_size` calls
 * (COUNT) or the calls of the last `window_size` seconds (TIME). Once the
 * window holds at least `min_calls` calls, the breaker trips to OPEN when the
 * share of failures reaches `failure_rate_pct`, or the share of calls slower
 * than `slow_call_ms` reaches `slow_call_rate_pct`. So a single poison message
 * among healthy traffic never trips it; a dependency that fails (or crawls)
 * for a good part of the traffic does.
 *
 * OPEN rejects every call with MB_EBREAKER for the open duration, then becomes
 * HALF_OPEN, which admits exactly `half_open_calls` probe calls (rejecting the
 * rest) and decides from their outcomes with the same thresholds: back to
 * CLOSED (window cleared, open duration back to `open_ms`), or OPEN again with
 * the open duration multiplied by `open_backoff`, up to `max_open_ms`. The
 * round is decided as soon as its outcome is certain (enough failures to
 * reach the threshold, or every probe reported). Probes still in flight
 * `half_open_max_wait_ms` after the earliest of them was admitted count as a
 * failed round (a hung dependency); a round that merely lacks traffic waits
 * as long as it takes. Operators can force the breaker open (FORCED_OPEN
 * rejects everything), disable it (DISABLED admits everything and records
 * nothing) and reset it (CLOSED, window cleared); the first two stay until
 * the next operator call.
 *
 * Time-driven changes (OPEN -> HALF_OPEN, an expired probe round) happen when
 * the breaker is next used or observed, on the caller's thread: there is no
 * timer thread. Time is read from the injected monotonic clock only (for
 * mb_clock_system(), its coarse variant, CLOCK_MONOTONIC_COARSE, when that
 * resolution is below 1/64 of slow_call_ms).
 *
 * Every acquire hands out a ticket that remembers when the call started and
 * the breaker's state generation, which changes with every state change and
 * every operator call. An outcome whose ticket belongs to an older generation
 * is "stale": it is counted as such and has no effect, so calls admitted
 * before a trip cannot decide a later half-open round.
 *
 * Costs: acquire and record are O(1) under one mutex (a TIME window also
 * expires the buckets of the seconds that passed, amortised O(1)); the window
 * keeps running totals, so a stats snapshot is O(1). While CLOSED with a
 * COUNT window and no success could trip it, acquire and the record of a
 * success that is not slow take no lock (one atomic compare-and-swap; the
 * next locked call folds them into the window, with the same results). Memory: one byte per
 * call of a COUNT window, 12 bytes per second of a TIME window.
 *
 * Threads: every function may be called from any thread at once, except that
 * mb_breaker_destroy must be the last call. The state-change listener runs on
 * the thread whose call caused the change, after the breaker's lock is
 * released, so it may call back into the breaker. Listener calls caused by
 * concurrent calls on different threads may overlap and arrive out of order;
 * the listener may consult mb_breaker_state_get for the current state.
 */
#ifndef MUDBUS_BREAKER_H
#define MUDBUS_BREAKER_H

#include <stdint.h>

#include "mudbus/clock.h"
#include "mudbus/metrics.h"
#include "mudbus/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mb_breaker mb_breaker;

/* The numeric values are those of the mudbus_breaker_state gauge. */
typedef enum mb_breaker_state {
    MB_BREAKER_CLOSED = 0,
    MB_BREAKER_OPEN = 1,
    MB_BREAKER_HALF_OPEN = 2,
    MB_BREAKER_FORCED_OPEN = 3,
    MB_BREAKER_DISABLED = 4
} mb_breaker_state;

/* "closed", "open", "half_open", "forced_open", "disabled"; "unknown" for a
 * value outside the enum. Static; never NULL. */
const char *mb_breaker_state_name(mb_breaker_state s);

typedef enum mb_breaker_window {
    MB_BREAKER_WINDOW_COUNT = 0, /* the last window_size recorded calls (default) */
    MB_BREAKER_WINDOW_TIME       /* the calls of the last window_size seconds */
} mb_breaker_window;

typedef enum mb_breaker_outcome {
    MB_BREAKER_SUCCESS = 0,
    MB_BREAKER_FAILURE,
    /* Not the dependency's fault (e.g. the caller's message failed
     * validation): counted nowhere; a half-open probe slot is released for
     * another caller. */
    MB_BREAKER_IGNORED
} mb_breaker_outcome;

/* Called after a state change, outside the breaker's lock, with the breaker's
 * name (valid during the call). */
typedef void (*mb_breaker_listener_fn)(void *ctx, const char *name, mb_breaker_state from,
                                       mb_breaker_state to);

/* A rate threshold set to this value is switched off. */
#define MB_BREAKER_OFF UINT32_MAX
/* Longest name, in bytes, not counting the NUL. */
#define MB_BREAKER_NAME_MAX 63

/* Options; every zero field takes its default. */
typedef struct mb_breaker_opts {
    /* [A-Za-z0-9_.:-], 1..MB_BREAKER_NAME_MAX bytes; the label name="..." of
     * the metrics and the listener's `name`. Default "default". Copied. */
    const char *name;
    mb_breaker_window window; /* default MB_BREAKER_WINDOW_COUNT */
    /* Calls (COUNT, default 100, at most 1000000) or seconds (TIME, default
     * 60, at most 3600). */
    uint32_t window_size;
    /* No trip before the window holds this many calls; default 20. For a
     * COUNT window, values above window_size are lowered to window_size. */
    uint32_t min_calls;
    /* Trip when failures * 100 >= failure_rate_pct * calls. 1..100, default
     * 50, MB_BREAKER_OFF: failures never trip it. */
    uint32_t failure_rate_pct;
    /* Trip when slow calls * 100 >= slow_call_rate_pct * calls, a call being
     * slow when it took longer than slow_call_ms (default 1000), whatever its
     * outcome. 1..100; 0 (the default) or MB_BREAKER_OFF: off. */
    uint32_t slow_call_rate_pct;
    uint64_t slow_call_ms;
    /* Open duration after a trip from CLOSED; default 5000. */
    uint64_t open_ms;
    /* Each failed half-open round multiplies the open duration by this
     * (>= 1; default 2; 1 keeps it constant), up to max_open_ms (default
     * 60000 or open_ms if larger; MB_EINVAL below open_ms). A successful
     * close resets it to open_ms. */
    double open_backoff;
    uint64_t max_open_ms;
    /* Probe calls admitted in HALF_OPEN; default 5, at most 10000. */
    uint32_t half_open_calls;
    /* When probes are still in flight this long after the earliest of them
     * was admitted, the breaker opens again; default 30000. */
    uint64_t half_open_max_wait_ms;
    const mb_clock *clock;           /* NULL: mb_clock_system(); must outlive the breaker */
    mb_metrics *metrics;             /* NULL: no metrics; must outlive the breaker */
    mb_breaker_listener_fn listener; /* NULL: none */
    void *listener_ctx;
} mb_breaker_opts;

/* A caller-stored record of one admitted call, filled by mb_breaker_acquire
 * and handed back to mb_breaker_record. Its contents are private to the
 * breaker; it is a value so that acquiring allocates nothing. A zeroed
 * ticket (and the ticket of a rejected call) is valid and recording it does
 * nothing. Record each ticket at most once, on the breaker that issued it. */
typedef struct mb_breaker_ticket {
    uint64_t opaque[2];
} mb_breaker_ticket;

/* Create a CLOSED breaker (`opts` may be NULL: all defaults). With metrics,
 * registers with the label name="<name>": mudbus_breaker_state (gauge, the
 * mb_breaker_state value), mudbus_breaker_calls_total, _failures_total,
 * _slow_calls_total (outcomes counted in the window or a probe round),
 * _rejected_total and _trips_total (entries into OPEN).
 *
 * Returns MB_EINVAL (with the reason) for a NULL `out` or an option out of
 * range, MB_EEXIST when a breaker of that name registered its metrics in the
 * registry before, MB_ENOMEM. On error no breaker is created and the registry
 * is left as it was (metrics registered before the failure are taken back). */
mb_status mb_breaker_create(const mb_breaker_opts *opts, mb_breaker **out, mb_err *err);

/* Destroy a breaker. NULL does nothing. No other thread may use it any more;
 * its metrics stay in the registry with their last values. */
void mb_breaker_destroy(mb_breaker *b);

/* Ask whether a call may proceed now. MB_OK: proceed, and report the outcome
 * with *t later. MB_EBREAKER: rejected (OPEN before its time, FORCED_OPEN, or
 * HALF_OPEN with its quota taken), counted in rejected_total; *t is zeroed.
 * In HALF_OPEN an admitted call takes one probe slot until it is recorded. */
mb_status mb_breaker_acquire(mb_breaker *b, mb_breaker_ticket *t);

/* Report the outcome of a call admitted with *t; its duration is the time
 * since the acquire, on the breaker's clock. Counted only if the ticket
 * belongs to the current state generation and the state is CLOSED or
 * HALF_OPEN (a stale ticket only adds to stale_total); may trip, close or
 * re-open the breaker (the listener runs before this returns). An outcome
 * outside the enum counts as MB_BREAKER_IGNORED. A NULL or zeroed ticket, or
 * that of a rejected call, does nothing. */
void mb_breaker_record(mb_breaker *b, const mb_breaker_ticket *t, mb_breaker_outcome o);

/* As mb_breaker_record with the call's duration given by the caller (e.g.
 * measured by the server), in nanoseconds. */
void mb_breaker_record_duration(mb_breaker *b, const mb_breaker_ticket *t, mb_breaker_outcome o,
                                uint64_t duration_ns);

/* Operator controls. Each starts a new generation (outstanding tickets become
 * stale) and calls the listener if the state changed.
 *   force_open: FORCED_OPEN, rejecting every call until reset or disable.
 *   disable:    DISABLED, admitting every call and recording nothing.
 *   reset:      CLOSED with an empty window, open duration back to open_ms,
 *               half-open round forgotten; totals are kept. */
void mb_breaker_force_open(mb_breaker *b);
void mb_breaker_disable(mb_breaker *b);
void mb_breaker_reset(mb_breaker *b);

/* The state now (after applying the time-driven changes that are due, which
 * may call the listener). */
mb_breaker_state mb_breaker_state_get(mb_breaker *b);

/* A consistent snapshot, taken under the lock after the time-driven changes
 * that are due. */
typedef struct mb_breaker_stats {
    mb_breaker_state state;
    /* The CLOSED window; in OPEN and HALF_OPEN, what is left of the window
     * that tripped it (a TIME window keeps expiring). */
    uint32_t window_calls;
    uint32_t window_failures;
    uint32_t window_slow;
    double failure_rate_pct; /* of window_calls; 0 when empty */
    double slow_rate_pct;
    /* The current half-open round: probes admitted and not released, and
     * probes that reported. 0 outside HALF_OPEN. */
    uint32_t probes_admitted;
    uint32_t probes_completed;
    /* Totals since creation. */
    uint64_t calls_total;    /* outcomes counted (window or probes) */
    uint64_t failures_total; /* of those, failures */
    uint64_t slow_total;     /* of those, slow calls */
    uint64_t ignored_total;  /* MB_BREAKER_IGNORED outcomes of current tickets */
    uint64_t stale_total;    /* outcomes of stale tickets (ignored) */
    uint64_t rejected_total;
    uint64_t trips_total;
    /* The duration of the current OPEN period, or of the last one; open_ms
     * again after a close or reset. */
    uint64_t open_ms;
    uint64_t until_half_open_ms; /* OPEN: time left, rounded up; otherwise 0 */
} mb_breaker_stats;

void mb_breaker_stats_get(mb_breaker *b, mb_breaker_stats *out);

#ifdef __cplusplus
}
#endif
#endif
