/* SPDX-License-Identifier: MIT */
/*
 * connstate: the state machine of one NATS connection (or pool), with an
 * explicit transition table, statistics and listeners.
 *
 * The client reports what happens to its connection by asking for
 * transitions; the machine refuses any transition that is not in the table
 * (MB_ESTATE, and then nothing changes at all, statistics included), so a
 * bug or a late event that would put the connection in a nonsensical state is
 * caught where it happens. The table (from -> allowed targets):
 *
 *   disconnected -> connecting, closed
 *   connecting   -> connected, disconnected, circuit_open, closed
 *   connected    -> degraded, reconnecting, disconnected, closed
 *   degraded     -> connected, reconnecting, disconnected, circuit_open, closed
 *   reconnecting -> connected, disconnected, circuit_open, closed
 *   circuit_open -> connecting (only once the cool-down has elapsed), closed
 *   closed       -> (nothing: terminal)
 *
 * A transition to the current state is refused too: "still connected" is
 * not an event, and counting it would make transitions_total and the
 * listeners' sequence numbers lie about how often the connection changed.
 *
 * The circuit always closes again: entering circuit_open starts a cool-down
 * (cooldown_ms, optionally growing on consecutive openings), after which
 * mb_connstate_poll moves the machine to connecting. Whoever drives the
 * client calls poll from a timer (stats give the time left), so no thread
 * sleeps and no event is needed to leave circuit_open.
 *
 * Listeners are called after every transition, outside the machine's lock,
 * with the transition's sequence number (1 for the first transition, then
 * 2, 3, ...). A listener may call back into the machine, including asking
 * for another transition; that nested transition is delivered to the
 * listeners before the rest of the current delivery, and transitions on
 * different threads may be delivered concurrently and in any order. The
 * sequence number gives the true order.
 *
 * Workload: a handful of transitions per connection event (seconds to hours
 * apart); stats on a metrics scrape or health check. Every call is O(number
 * of listeners) at most.
 *
 * Threads: every function may be called from any thread at once, and from
 * inside a listener, except that mb_connstate_destroy must be the last call.
 */
#ifndef MUDBUS_CONNSTATE_H
#define MUDBUS_CONNSTATE_H

#include <stdbool.h>
#include <stdint.h>

#include "mudbus/clock.h"
#include "mudbus/metrics.h"
#include "mudbus/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mb_connstate mb_connstate;

/* The numeric values are those of the mudbus_connstate_state gauge. */
typedef enum mb_conn_state {
    MB_CONN_DISCONNECTED = 0,
    MB_CONN_CONNECTING = 1,
    MB_CONN_CONNECTED = 2,
    MB_CONN_DEGRADED = 3,
    MB_CONN_RECONNECTING = 4,
    MB_CONN_CIRCUIT_OPEN = 5,
    MB_CONN_CLOSED = 6
} mb_conn_state;

#define MB_CONN_STATE_COUNT 7

/* "disconnected", "connecting", "connected", "degraded", "reconnecting",
 * "circuit_open", "closed"; "unknown" outside the enum. Static; never NULL. */
const char *mb_connstate_name(mb_conn_state s);

/* Whether the table allows from -> to (false for values outside the enum and
 * for from == to). circuit_open -> connecting is allowed by the table; the
 * cool-down is checked by mb_connstate_transition. Pure; any thread. */
bool mb_connstate_allowed(mb_conn_state from, mb_conn_state to);

/* Longest reason kept, in bytes including the NUL; longer text is cut. */
#define MB_CONNSTATE_REASON_MAX 128
/* Listeners per machine. */
#define MB_CONNSTATE_MAX_LISTENERS 16
/* Longest name, in bytes, not counting the NUL. */
#define MB_CONNSTATE_NAME_MAX 63

/* Called after transition number `seq` from `from` to `to`, outside any lock
 * of the machine, on the thread that made the transition (the caller of
 * mb_connstate_transition or mb_connstate_poll). `reason` is the copied
 * reason ("" when none), valid during the call. */
typedef void (*mb_connstate_listener_fn)(void *ctx, mb_conn_state from, mb_conn_state to,
                                         mb_status cause, const char *reason, uint64_t seq);

typedef uint64_t mb_connstate_listener_id; /* never 0 */

/* Options; every zero field takes its default. */
typedef struct mb_connstate_opts {
    /* [A-Za-z0-9_.:-], 1..MB_CONNSTATE_NAME_MAX bytes: the label name="..."
     * of the metrics. Default "default". Copied. */
    const char *name;
    /* Cool-down of circuit_open; default 5000. */
    uint64_t cooldown_ms;
    /* Each opening of the circuit that follows another without reaching
     * connected in between multiplies the cool-down by this (>= 1; default 1:
     * constant), up to max_cooldown_ms (default 60000 or cooldown_ms if
     * larger; MB_EINVAL below cooldown_ms). */
    double cooldown_backoff;
    uint64_t max_cooldown_ms;
    const mb_clock *clock; /* NULL: mb_clock_system(); must outlive the machine */
    mb_metrics *metrics;   /* NULL: no metrics; must outlive the machine */
} mb_connstate_opts;

/* Create a machine in MB_CONN_DISCONNECTED (`opts` may be NULL: defaults).
 * With metrics, registers with the label name="<name>":
 * mudbus_connstate_state (gauge, the mb_conn_state value) and
 * mudbus_connstate_transitions_total{to="<state name>"} (one counter per
 * state).
 *
 * Returns MB_EINVAL (with the reason) for a NULL `out` or an option out of
 * range, MB_EEXIST when a machine of that name registered its metrics in the
 * registry before, MB_ENOMEM. On error nothing is created and the registry is
 * left as it was (metrics registered before the failure are taken back). */
mb_status mb_connstate_create(const mb_connstate_opts *opts, mb_connstate **out, mb_err *err);

/* Destroy a machine. NULL does nothing. No other thread may use it any more
 * and no listener may be running; its metrics stay in the registry. */
void mb_connstate_destroy(mb_connstate *cs);

/* The current state. */
mb_conn_state mb_connstate_get(mb_connstate *cs);

/* Move to `to` because of `cause` (MB_OK for a normal step) with an optional
 * human-readable `reason` (NULL allowed; copied, cut at
 * MB_CONNSTATE_REASON_MAX - 1 bytes). A cause other than MB_OK becomes the
 * last error, with the reason (or the status's sentence when there is none)
 * as its message. The listeners run before this returns.
 *
 * Returns MB_OK; MB_ESTATE when the table does not allow the transition from
 * the current state (the message names both states), or for circuit_open ->
 * connecting before the cool-down has elapsed (the message gives the time
 * left); MB_EINVAL for a `to` outside the enum. On error nothing is changed
 * and no listener is called. */
mb_status mb_connstate_transition(mb_connstate *cs, mb_conn_state to, mb_status cause,
                                  const char *reason, mb_err *err);

/* If the machine is in circuit_open and its cool-down has elapsed, move it to
 * connecting (cause MB_OK, reason "cool-down elapsed"; listeners run before
 * this returns) and return true; otherwise change nothing and return false. */
bool mb_connstate_poll(mb_connstate *cs);

/* Add a listener; *id (may be NULL) receives its id, for removal. `ctx` is
 * borrowed and must stay valid until the listener is removed and no call of
 * it can be running. Returns MB_OK, MB_ELIMIT when
 * MB_CONNSTATE_MAX_LISTENERS are registered, MB_EINVAL for a NULL `fn`. On
 * error nothing is added. Listeners are called in the order they were added;
 * one added during a delivery is called from the next transition on. */
mb_status mb_connstate_listener_add(mb_connstate *cs, mb_connstate_listener_fn fn, void *ctx,
                                    mb_connstate_listener_id *id, mb_err *err);

/* Remove a listener. Returns MB_OK or MB_ENOTFOUND. After it returns, the
 * listener is not called by any transition that starts later, nor by the
 * rest of a delivery in progress on this thread (a listener may remove
 * itself or another); a delivery already in progress on another thread may
 * still be calling it, or call it once more. */
mb_status mb_connstate_listener_remove(mb_connstate *cs, mb_connstate_listener_id id);

typedef struct mb_connstate_stats {
    mb_conn_state state;
    uint64_t since_ns;      /* monotonic time (the machine's clock) it was entered */
    uint64_t since_wall_ns; /* the same, as wall-clock time */
    uint64_t transitions;   /* successful transitions = sequence number of the last */
    uint64_t attempts;      /* entries into connecting or reconnecting */
    uint64_t connects;      /* entries into connected from connecting or reconnecting */
    /* Moves from connected or degraded to reconnecting or disconnected. */
    uint64_t disconnects;
    uint64_t circuit_opens; /* entries into circuit_open */
    /* Time spent in each state since creation, the current visit included
     * up to now; the sum is the machine's age. */
    uint64_t time_in_state_ns[MB_CONN_STATE_COUNT];
    uint64_t cooldown_ms;      /* of the current (or next) circuit opening */
    uint64_t cooldown_left_ms; /* circuit_open: until poll moves on, rounded up; else 0 */
    mb_status last_error;      /* MB_OK when there was none */
    char last_error_msg[MB_CONNSTATE_REASON_MAX];
    uint64_t last_error_ns;      /* monotonic */
    uint64_t last_error_wall_ns; /* wall clock */
} mb_connstate_stats;

/* A consistent snapshot, taken under the lock. */
void mb_connstate_stats_get(mb_connstate *cs, mb_connstate_stats *out);

#ifdef __cplusplus
}
#endif
#endif
