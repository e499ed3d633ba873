/* SPDX-License-Identifier: MIT */
/*
 * client_health: health checks and the client's state.
 *
 * Every health_interval_ms the client thread sends a flush round trip
 * (natsConnection_FlushTimeout, bounded by health_timeout_ms; never GetRTT,
 * which blocks 10 s on a frozen server) on each live connection. A success
 * observes the round trip in mudbus_client_health_rtt_seconds and clears the
 * connection's failure count; health_failures consecutive failures of any
 * live connection make the client degraded, until every live connection
 * answers again. The same round trip frees the subscriptions unsubscribed
 * before it (mb__grave_put).
 *
 * The client's connstate is derived, on the client thread only, from the
 * pool and the health counts: no live connection -> connecting (never
 * connected yet) or reconnecting; a live connection with too many failures ->
 * degraded; otherwise connected. A pool with only some connections up is
 * connected (how many are up is in mb_client_health). Where the transition
 * table has no direct edge (reconnecting -> degraded), the shortest allowed
 * path is taken, so every step is a real, listed transition.
 */
#include <stdio.h>
#include <string.h>

#include "client_int.h"

/* Shortest path from -> to through the transition table, avoiding
 * circuit_open and closed; writes the steps (excluding `from`). */
static size_t state_path(mb_conn_state from, mb_conn_state to, mb_conn_state *steps)
{
    int prev[MB_CONN_STATE_COUNT];
    bool seen[MB_CONN_STATE_COUNT] = {false};
    mb_conn_state q[MB_CONN_STATE_COUNT];
    size_t qh = 0, qt = 0;
    q[qt++] = from;
    seen[from] = true;
    prev[from] = -1;
    while (qh < qt) {
        mb_conn_state s = q[qh++];
        if (s == to)
            break;
        for (int n = 0; n < MB_CONN_STATE_COUNT; n++) {
            mb_conn_state ns = (mb_conn_state)n;
            if (seen[n] || !mb_connstate_allowed(s, ns))
                continue;
            if (ns != to && (ns == MB_CONN_CIRCUIT_OPEN || ns == MB_CONN_CLOSED))
                continue;
            seen[n] = true;
            prev[n] = (int)s;
            q[qt++] = ns;
        }
    }
    if (!seen[to])
        return 0;
    mb_conn_state rev[MB_CONN_STATE_COUNT];
    size_t n = 0;
    for (int s = (int)to; s != (int)from; s = prev[s])
        rev[n++] = (mb_conn_state)s;
    for (size_t i = 0; i < n; i++)
        steps[i] = rev[n - 1 - i];
    return n;
}

void mb__health_update_state(mb_client *c, mb_status cause, const char *reason)
{
    size_t live = mb__pool_live(c);
    bool bad = false;
    for (size_t i = 0; i < c->npool; i++)
        if (c->conns[i].health_failures >= c->o.health_failures)
            bad = true;
    pthread_mutex_lock(&c->lock);
    c->live = live;
    if (live)
        c->ever_connected = true;
    bool ever = c->ever_connected, closing = c->closing;
    pthread_mutex_unlock(&c->lock);
    if (closing)
        return;
    mb_conn_state to = live == 0 ? (ever ? MB_CONN_RECONNECTING : MB_CONN_CONNECTING)
                                 : (bad ? MB_CONN_DEGRADED : MB_CONN_CONNECTED);
    mb_conn_state from = mb_connstate_get(c->state);
    if (from == to)
        return;
    mb_conn_state steps[MB_CONN_STATE_COUNT];
    size_t n = state_path(from, to, steps);
    for (size_t i = 0; i < n; i++) {
        mb_status st = steps[i] == MB_CONN_CONNECTED ? MB_OK : cause;
        if (mb_connstate_transition(c->state, steps[i], st, reason, NULL) != MB_OK)
            break;
    }
}

static void health_timer(void *arg, mb_timer_event ev);

static mb_status schedule(mb_client *c)
{
    return mb_timerq_add(c->internal_q, c->o.health_interval_ms * 1000000u, health_timer, c, NULL);
}

static void health_timer(void *arg, mb_timer_event ev)
{
    mb_client *c = arg;
    if (ev != MB_TIMER_FIRED)
        return;
    pthread_mutex_lock(&c->lock);
    bool closing = c->closing;
    pthread_mutex_unlock(&c->lock);
    if (closing)
        return;
    mb_status cause = MB_OK;
    char reason[MB_ERR_MSG_MAX] = "";
    for (size_t i = 0; i < c->npool; i++) {
        mb__conn *k = &c->conns[i];
        pthread_rwlock_rdlock(&k->lock);
        natsConnection *nc = k->nc;
        if (!nc || natsConnection_Status(nc) != NATS_CONN_STATUS_CONNECTED) {
            pthread_rwlock_unlock(&k->lock);
            k->health_failures = 0; /* not live: the pool state speaks for it */
            continue;
        }
        /* Subscriptions kept since an unsubscribe (mb__grave_put) are
         * destroyed once this round trip has completed. */
        mb__grave *kept = mb__grave_take(k);
        uint64_t t0 = mb_clock_mono_ns(c->o.clock);
        natsStatus s = natsConnection_FlushTimeout(nc, (int64_t)c->o.health_timeout_ms);
        uint64_t dt = mb_clock_mono_ns(c->o.clock) - t0;
        pthread_rwlock_unlock(&k->lock);
        if (s == NATS_OK)
            mb__grave_bury(kept);
        else
            mb__grave_return(k, kept);
        if (s == NATS_OK) {
            k->health_failures = 0;
            mb_histogram_observe(c->m_rtt, dt);
            pthread_mutex_lock(&c->lock);
            c->last_rtt_us = dt / 1000u ? dt / 1000u : 1;
            pthread_mutex_unlock(&c->lock);
            continue;
        }
        k->health_failures++;
        mb_counter_add(c->m_health_fail, 1);
        mb_err e = {0};
        cause = mb__client_nats_err(s, &e, "health check");
        snprintf(reason, sizeof reason, "connection %d: %.200s (%u in a row)", k->index, e.msg,
                 k->health_failures);
        pthread_mutex_lock(&c->lock);
        c->last_error = cause;
        snprintf(c->last_error_msg, sizeof c->last_error_msg, "%s", reason);
        pthread_mutex_unlock(&c->lock);
    }
    mb__health_update_state(c, cause, reason[0] ? reason : "health check passed");
    mb_status st = schedule(c);
    if (st != MB_OK) {
        /* Out of memory (the internal queue grows on demand): health checks
         * stop rather than fail silently; say so where an operator looks. */
        pthread_mutex_lock(&c->lock);
        c->last_error = st;
        snprintf(c->last_error_msg, sizeof c->last_error_msg,
                 "health checks stopped: cannot schedule the next one (%s)", mb_status_name(st));
        pthread_mutex_unlock(&c->lock);
        mb__client_log(c, "health checks stopped: cannot schedule the next one (%s)",
                       mb_status_name(st));
    }
}

mb_status mb__health_start(mb_client *c, mb_err *err)
{
    mb_status st = schedule(c);
    if (st != MB_OK)
        return mb_err_set(err, st, "cannot schedule the health checks: %s", mb_status_name(st));
    return MB_OK;
}
