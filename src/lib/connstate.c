/* SPDX-License-Identifier: MIT */
/*
 * connstate: the connection state machine: a static transition table, the
 * cool-down of circuit_open, statistics and listener delivery.
 *
 * Invariants, all under `lock`:
 * - `state` only changes through commit(), which is reached only for a pair
 *   the table allows (and, for circuit_open -> connecting, after the
 *   cool-down); commit() updates every statistic in the same critical
 *   section, so a refused transition changes nothing.
 * - time_in[s] holds the time of the finished visits of s; the current visit
 *   is now - since. Readings of the clock are taken under the lock, so they
 *   never decrease from one transition to the next and the times add up to
 *   the machine's age exactly.
 * - `seq` is the number of successful transitions; each transition gets the
 *   next value.
 * - listeners[0 .. n_listeners) are the registered listeners in the order
 *   they were added; ids are never reused.
 *
 * Delivery: commit() copies the listener list and the reason onto the
 * caller's stack; after the lock is released each listener is called if its
 * id is still registered (checked under the lock just before the call), so
 * removal during a delivery takes effect for the rest of it on this thread.
 * Nothing of the machine is held while a listener runs.
 */
#include "mudbus/connstate.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "metrics_int.h"

#define NS_PER_MS 1000000ull

/* The transition table: allowed[from][to]. */
#define D  MB_CONN_DISCONNECTED
#define CG MB_CONN_CONNECTING
#define CD MB_CONN_CONNECTED
#define DG MB_CONN_DEGRADED
#define RC MB_CONN_RECONNECTING
#define CO MB_CONN_CIRCUIT_OPEN
#define CL MB_CONN_CLOSED
static const bool allowed[MB_CONN_STATE_COUNT][MB_CONN_STATE_COUNT] = {
    [D] = {[CG] = true, [CL] = true},
    [CG] = {[CD] = true, [D] = true, [CO] = true, [CL] = true},
    [CD] = {[DG] = true, [RC] = true, [D] = true, [CL] = true},
    [DG] = {[CD] = true, [RC] = true, [D] = true, [CO] = true, [CL] = true},
    [RC] = {[CD] = true, [D] = true, [CO] = true, [CL] = true},
    [CO] = {[CG] = true, [CL] = true},
    [CL] = {0},
};
#undef D
#undef CG
#undef CD
#undef DG
#undef RC
#undef CO
#undef CL

static const char *const state_names[MB_CONN_STATE_COUNT] = {
    "disconnected", "connecting",   "connected", "degraded",
    "reconnecting", "circuit_open", "closed"};

typedef struct listener {
    mb_connstate_listener_fn fn;
    void *ctx;
    mb_connstate_listener_id id;
} listener;

/* What a committed transition hands to the listeners. */
typedef struct delivery {
    mb_conn_state from, to;
    mb_status cause;
    uint64_t seq;
    unsigned n;
    listener l[MB_CONNSTATE_MAX_LISTENERS];
    char reason[MB_CONNSTATE_REASON_MAX];
} delivery;

struct mb_connstate {
    pthread_mutex_t lock;
    char name[MB_CONNSTATE_NAME_MAX + 1];
    uint64_t base_cooldown_ms;
    double backoff;
    uint64_t max_cooldown_ms;
    const mb_clock *clock;

    mb_conn_state state;
    uint64_t since_ns, since_wall_ns;
    uint64_t seq;
    uint64_t attempts, connects, disconnects, circuit_opens;
    uint64_t time_in[MB_CONN_STATE_COUNT];

    uint64_t cooldown_ms;    /* of the current or last circuit opening */
    unsigned open_streak;    /* circuit openings since the last connect */
    uint64_t cooldown_until; /* monotonic ns */

    mb_status last_error;
    char last_error_msg[MB_CONNSTATE_REASON_MAX];
    uint64_t last_error_ns, last_error_wall_ns;

    listener listeners[MB_CONNSTATE_MAX_LISTENERS];
    unsigned n_listeners;
    mb_connstate_listener_id next_id;

    mb_gauge *m_state;
    mb_counter *m_to[MB_CONN_STATE_COUNT];
};

const char *mb_connstate_name(mb_conn_state s)
{
    if ((unsigned)s >= MB_CONN_STATE_COUNT)
        return "unknown";
    return state_names[s];
}

bool mb_connstate_allowed(mb_conn_state from, mb_conn_state to)
{
    if ((unsigned)from >= MB_CONN_STATE_COUNT || (unsigned)to >= MB_CONN_STATE_COUNT)
        return false;
    return allowed[from][to];
}

/* ---- create / destroy ---- */

static mb_status register_metrics(mb_connstate *cs, mb_metrics *m, mb_err *err)
{
    char labels[MB_CONNSTATE_NAME_MAX + 40];
    snprintf(labels, sizeof labels, "name=\"%s\"", cs->name);
    mb_status st = mb_metrics_gauge(m, "mudbus_connstate_state",
                                    "Connection state: 0 disconnected, 1 connecting, 2 connected, "
                                    "3 degraded, 4 reconnecting, 5 circuit open, 6 closed",
                                    labels, &cs->m_state, err);
    for (unsigned s = 0; s < MB_CONN_STATE_COUNT && st == MB_OK; s++) {
        snprintf(labels, sizeof labels, "name=\"%s\",to=\"%s\"", cs->name, state_names[s]);
        st = mb_metrics_counter(m, "mudbus_connstate_transitions_total",
                                "Connection state transitions, by target state", labels,
                                &cs->m_to[s], err);
    }
    return st;
}

mb_status mb_connstate_create(const mb_connstate_opts *opts, mb_connstate **out, mb_err *err)
{
    static const mb_connstate_opts defaults;
    if (out == NULL)
        return mb_err_set(err, MB_EINVAL, "connstate: NULL out");
    if (opts == NULL)
        opts = &defaults;
    const char *name = opts->name != NULL ? opts->name : "default";
    if (!mb__metrics_label_value_ok(name, MB_CONNSTATE_NAME_MAX))
        return mb_err_set(err, MB_EINVAL,
                          "connstate: name must be 1..%d characters of [A-Za-z0-9_.:-]",
                          MB_CONNSTATE_NAME_MAX);
    uint64_t cooldown = opts->cooldown_ms ? opts->cooldown_ms : 5000;
    /* The default cap never lies below an explicit cool-down. */
    uint64_t max = opts->max_cooldown_ms;
    if (max == 0)
        max = cooldown > 60000 ? cooldown : 60000;
    if (max < cooldown || max > UINT64_MAX / NS_PER_MS / 4)
        return mb_err_set(err, MB_EINVAL,
                          "connstate %s: max_cooldown_ms must be in [cooldown_ms, 2^60 ns)", name);
    double backoff = opts->cooldown_backoff != 0 ? opts->cooldown_backoff : 1.0;
    if (!(backoff >= 1.0))
        return mb_err_set(err, MB_EINVAL, "connstate %s: cooldown_backoff must be at least 1",
                          name);

    mb_connstate *cs = mb__calloc(1, sizeof *cs);
    if (cs == NULL)
        return mb_err_set(err, MB_ENOMEM, "connstate %s: out of memory", name);
    memcpy(cs->name, name, strlen(name) + 1);
    cs->base_cooldown_ms = cooldown;
    cs->cooldown_ms = cooldown;
    cs->backoff = backoff;
    cs->max_cooldown_ms = max;
    cs->clock = opts->clock != NULL ? opts->clock : mb_clock_system();
    if (opts->metrics != NULL) {
        mb_status st = register_metrics(cs, opts->metrics, err);
        if (st != MB_OK) {
            /* Take back what was registered, so that the call can be retried. */
            mb__metrics_forget(opts->metrics, cs->m_state);
            for (unsigned s = 0; s < MB_CONN_STATE_COUNT; s++)
                mb__metrics_forget(opts->metrics, cs->m_to[s]);
            mb__free(cs);
            return st;
        }
    }
    cs->state = MB_CONN_DISCONNECTED;
    cs->since_ns = mb_clock_mono_ns(cs->clock);
    cs->since_wall_ns = mb_clock_wall_ns(cs->clock);
    cs->next_id = 1;
    pthread_mutex_init(&cs->lock, NULL);
    *out = cs;
    return MB_OK;
}

void mb_connstate_destroy(mb_connstate *cs)
{
    if (cs == NULL)
        return;
    pthread_mutex_destroy(&cs->lock);
    mb__free(cs);
}

mb_conn_state mb_connstate_get(mb_connstate *cs)
{
    pthread_mutex_lock(&cs->lock);
    mb_conn_state s = cs->state;
    pthread_mutex_unlock(&cs->lock);
    return s;
}

/* ---- transitions ---- */

/* The cool-down the next circuit opening gets. */
static uint64_t next_cooldown(const mb_connstate *cs)
{
    if (cs->open_streak == 0)
        return cs->base_cooldown_ms;
    double next = (double)cs->cooldown_ms * cs->backoff;
    return next >= (double)cs->max_cooldown_ms ? cs->max_cooldown_ms : (uint64_t)next;
}

static void copy_reason(char *dst, const char *src)
{
    size_t n = src != NULL ? strnlen(src, MB_CONNSTATE_REASON_MAX - 1) : 0;
    if (n != 0)
        memcpy(dst, src, n);
    dst[n] = '\0';
}

/* Make the transition (already checked) and fill the delivery. */
static void commit(mb_connstate *cs, mb_conn_state to, mb_status cause, const char *reason,
                   uint64_t now, delivery *d)
{
    mb_conn_state from = cs->state;
    uint64_t wall = mb_clock_wall_ns(cs->clock);
    cs->time_in[from] += now - cs->since_ns;
    cs->state = to;
    cs->since_ns = now;
    cs->since_wall_ns = wall;
    cs->seq++;

    if (to == MB_CONN_CONNECTING || to == MB_CONN_RECONNECTING)
        cs->attempts++;
    if (to == MB_CONN_CONNECTED && (from == MB_CONN_CONNECTING || from == MB_CONN_RECONNECTING))
        cs->connects++;
    if ((from == MB_CONN_CONNECTED || from == MB_CONN_DEGRADED) &&
        (to == MB_CONN_RECONNECTING || to == MB_CONN_DISCONNECTED))
        cs->disconnects++;
    if (to == MB_CONN_CONNECTED)
        cs->open_streak = 0;
    if (to == MB_CONN_CIRCUIT_OPEN) {
        cs->cooldown_ms = next_cooldown(cs);
        cs->open_streak++;
        cs->circuit_opens++;
        cs->cooldown_until = now + cs->cooldown_ms * NS_PER_MS;
    }

    d->from = from;
    d->to = to;
    d->cause = cause;
    d->seq = cs->seq;
    copy_reason(d->reason, reason);
    if (cause != MB_OK) {
        cs->last_error = cause;
        copy_reason(cs->last_error_msg, d->reason[0] != '\0' ? d->reason : mb_status_str(cause));
        cs->last_error_ns = now;
        cs->last_error_wall_ns = wall;
    }
    d->n = cs->n_listeners;
    memcpy(d->l, cs->listeners, d->n * sizeof d->l[0]);

    if (cs->m_state != NULL) {
        mb_gauge_set(cs->m_state, (int64_t)to);
        mb_counter_add(cs->m_to[to], 1);
    }
}

static bool still_registered(mb_connstate *cs, mb_connstate_listener_id id)
{
    bool found = false;
    pthread_mutex_lock(&cs->lock);
    for (unsigned i = 0; i < cs->n_listeners && !found; i++)
        found = cs->listeners[i].id == id;
    pthread_mutex_unlock(&cs->lock);
    return found;
}

static void deliver(mb_connstate *cs, const delivery *d)
{
    for (unsigned i = 0; i < d->n; i++) {
        if (still_registered(cs, d->l[i].id))
            d->l[i].fn(d->l[i].ctx, d->from, d->to, d->cause, d->reason, d->seq);
    }
}

mb_status mb_connstate_transition(mb_connstate *cs, mb_conn_state to, mb_status cause,
                                  const char *reason, mb_err *err)
{
    if ((unsigned)to >= MB_CONN_STATE_COUNT)
        return mb_err_set(err, MB_EINVAL, "connstate %s: unknown target state %d", cs->name,
                          (int)to);
    delivery d;
    mb_status st = MB_OK;
    pthread_mutex_lock(&cs->lock);
    uint64_t now = mb_clock_mono_ns(cs->clock);
    mb_conn_state from = cs->state;
    if (from == MB_CONN_CLOSED) {
        st = mb_err_set(err, MB_ESTATE, "connstate %s: closed is terminal (asked for %s)", cs->name,
                        state_names[to]);
    } else if (from == to) {
        st = mb_err_set(err, MB_ESTATE, "connstate %s: already %s", cs->name, state_names[to]);
    } else if (!allowed[from][to]) {
        st = mb_err_set(err, MB_ESTATE, "connstate %s: %s -> %s is not allowed", cs->name,
                        state_names[from], state_names[to]);
    } else if (from == MB_CONN_CIRCUIT_OPEN && to == MB_CONN_CONNECTING &&
               now < cs->cooldown_until) {
        uint64_t left = (cs->cooldown_until - now + NS_PER_MS - 1) / NS_PER_MS;
        st = mb_err_set(err, MB_ESTATE, "connstate %s: circuit open, %llu ms of the cool-down left",
                        cs->name, (unsigned long long)left);
    } else {
        commit(cs, to, cause, reason, now, &d);
    }
    pthread_mutex_unlock(&cs->lock);
    if (st == MB_OK)
        deliver(cs, &d);
    return st;
}

bool mb_connstate_poll(mb_connstate *cs)
{
    delivery d;
    bool moved = false;
    pthread_mutex_lock(&cs->lock);
    uint64_t now = mb_clock_mono_ns(cs->clock);
    if (cs->state == MB_CONN_CIRCUIT_OPEN && now >= cs->cooldown_until) {
        commit(cs, MB_CONN_CONNECTING, MB_OK, "cool-down elapsed", now, &d);
        moved = true;
    }
    pthread_mutex_unlock(&cs->lock);
    if (moved)
        deliver(cs, &d);
    return moved;
}

/* ---- listeners ---- */

mb_status mb_connstate_listener_add(mb_connstate *cs, mb_connstate_listener_fn fn, void *ctx,
                                    mb_connstate_listener_id *id, mb_err *err)
{
    if (fn == NULL)
        return mb_err_set(err, MB_EINVAL, "connstate %s: NULL listener", cs->name);
    mb_status st = MB_ELIMIT;
    pthread_mutex_lock(&cs->lock);
    if (cs->n_listeners < MB_CONNSTATE_MAX_LISTENERS) {
        listener *l = &cs->listeners[cs->n_listeners++];
        *l = (listener){fn, ctx, cs->next_id++};
        if (id != NULL)
            *id = l->id;
        st = MB_OK;
    }
    pthread_mutex_unlock(&cs->lock);
    if (st != MB_OK)
        return mb_err_set(err, st, "connstate %s: %d listeners already", cs->name,
                          MB_CONNSTATE_MAX_LISTENERS);
    return MB_OK;
}

mb_status mb_connstate_listener_remove(mb_connstate *cs, mb_connstate_listener_id id)
{
    mb_status st = MB_ENOTFOUND;
    pthread_mutex_lock(&cs->lock);
    for (unsigned i = 0; i < cs->n_listeners; i++) {
        if (cs->listeners[i].id == id) {
            /* Close the gap, keeping the order of addition. */
            memmove(&cs->listeners[i], &cs->listeners[i + 1],
                    (cs->n_listeners - i - 1) * sizeof cs->listeners[0]);
            cs->n_listeners--;
            st = MB_OK;
            break;
        }
    }
    pthread_mutex_unlock(&cs->lock);
    return st;
}

/* ---- stats ---- */

void mb_connstate_stats_get(mb_connstate *cs, mb_connstate_stats *out)
{
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&cs->lock);
    uint64_t now = mb_clock_mono_ns(cs->clock);
    out->state = cs->state;
    out->since_ns = cs->since_ns;
    out->since_wall_ns = cs->since_wall_ns;
    out->transitions = cs->seq;
    out->attempts = cs->attempts;
    out->connects = cs->connects;
    out->disconnects = cs->disconnects;
    out->circuit_opens = cs->circuit_opens;
    memcpy(out->time_in_state_ns, cs->time_in, sizeof cs->time_in);
    out->time_in_state_ns[cs->state] += now - cs->since_ns;
    if (cs->state == MB_CONN_CIRCUIT_OPEN) {
        out->cooldown_ms = cs->cooldown_ms;
        if (now < cs->cooldown_until)
            out->cooldown_left_ms = (cs->cooldown_until - now + NS_PER_MS - 1) / NS_PER_MS;
    } else {
        out->cooldown_ms = next_cooldown(cs);
    }
    out->last_error = cs->last_error;
    memcpy(out->last_error_msg, cs->last_error_msg, sizeof out->last_error_msg);
    out->last_error_ns = cs->last_error_ns;
    out->last_error_wall_ns = cs->last_error_wall_ns;
    pthread_mutex_unlock(&cs->lock);
}
