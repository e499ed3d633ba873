/* SPDX-License-Identifier: MIT */
/*
 * client_events: nats.c's connection callbacks, the client's event ring, the
 * client thread, and poll-mode dispatch.
 *
 * nats.c's disconnected, reconnected, closed, error (slow consumer,
 * permissions) and lame-duck callbacks run on nats.c's one connection-event
 * thread. Here they do nothing but copy a small record into a bounded ring
 * (MB__EV_RING_MAX; overflow is counted in mudbus_client_events_lost_total)
 * and wake the client thread; no user code and nothing that blocks runs on
 * that thread. The client thread takes the events off the ring, updates the
 * pool and the client state, and then calls the listeners (threaded mode) or
 * queues the event for mb_client_dispatch (poll mode). It also drives the
 * internal timer queue (health checks, repairs) and, in threaded mode, the
 * retry queue. See the DESIGN comment in client.c for the whole model.
 */
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "client_int.h"

/* ---- the ring ---- */

static void ring_push(mb_client *c, const mb__event *ev)
{
    pthread_mutex_lock(&c->lock);
    if (!c->ring || c->ring_len == MB__EV_RING_MAX) { /* no ring: a failed create */
        pthread_mutex_unlock(&c->lock);
        if (c->m_events_lost)
            mb_counter_add(c->m_events_lost, 1);
        return;
    }
    c->ring[(c->ring_head + c->ring_len) % MB__EV_RING_MAX] = *ev;
    c->ring_len++;
    c->wake = true;
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->lock);
}

void mb__event_push(mb_client *c, mb_client_event_type type, int conn, mb_status st,
                    const char *fmt, ...)
{
    mb__event ev;
    memset(&ev, 0, sizeof ev);
    ev.type = type;
    ev.conn = conn;
    ev.status = st;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ev.text, sizeof ev.text, fmt, ap);
    va_end(ap);
    ring_push(c, &ev);
}

void mb__event_push_state(mb_client *c, mb_conn_state from, mb_conn_state to, const char *why)
{
    mb__event ev;
    memset(&ev, 0, sizeof ev);
    ev.type = MB_CLIENT_EV_STATE;
    ev.conn = -1;
    ev.from = from;
    ev.to = to;
    snprintf(ev.text, sizeof ev.text, "%s -> %s%s%s", mb_connstate_name(from),
             mb_connstate_name(to), why && *why ? ": " : "", why ? why : "");
    ring_push(c, &ev);
}

void mb__client_wake(mb_client *c)
{
    pthread_mutex_lock(&c->lock);
    c->wake = true;
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->lock);
}

void mb__efd_signal(mb_client *c)
{
    uint64_t one = 1;
    ssize_t n;
    do {
        n = write(c->efd, &one, sizeof one);
    } while (n < 0 && errno == EINTR);
    /* EAGAIN means the counter is saturated: the fd is readable anyway. */
}

/* ---- nats.c callbacks (nats.c's event thread: enqueue only) ---- */

static const char *conn_url(natsConnection *nc, char *buf, size_t cap)
{
    if (natsConnection_GetConnectedUrl(nc, buf, cap) != NATS_OK || !buf[0])
        snprintf(buf, cap, "(no server)");
    return buf;
}

static void on_disconnected(natsConnection *nc, void *closure)
{
    mb__conn *k = closure;
    (void)nc;
    atomic_store(&k->connected, false);
    mb__event_push(k->c, MB_CLIENT_EV_DISCONNECTED, k->index, MB_ENOCONN,
                   "connection %d disconnected", k->index);
}

static void on_reconnected(natsConnection *nc, void *closure)
{
    mb__conn *k = closure;
    char url[128];
    atomic_store(&k->connected, true);
    mb__event_push(k->c, MB_CLIENT_EV_RECONNECTED, k->index, MB_OK,
                   "connection %d reconnected to %s", k->index, conn_url(nc, url, sizeof url));
}

static void on_closed(natsConnection *nc, void *closure)
{
    mb__conn *k = closure;
    mb_client *c = k->c;
    (void)nc;
    atomic_store(&k->connected, false);
    mb__event_push(c, MB_CLIENT_EV_CLOSED, k->index, MB_ECLOSED, "connection %d closed", k->index);
    /* The last thing nats.c does with this connection's callbacks: destroy
     * waits for it before freeing the client. */
    pthread_mutex_lock(&c->lock);
    atomic_fetch_sub(&c->conns_open, 1);
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->lock);
}

static void on_lame_duck(natsConnection *nc, void *closure)
{
    mb__conn *k = closure;
    char url[128];
    mb__event_push(k->c, MB_CLIENT_EV_LAME_DUCK, k->index, MB_OK,
                   "server %s of connection %d entered lame duck mode",
                   conn_url(nc, url, sizeof url), k->index);
}

static void on_error(natsConnection *nc, natsSubscription *sub, natsStatus err, void *closure)
{
    mb__conn *k = closure;
    (void)nc;
    if (err == NATS_SLOW_CONSUMER) {
        mb_counter_add(k->c->m_slow, 1);
        const char *subj = sub ? natsSubscription_GetSubject(sub) : NULL;
        mb__event_push(k->c, MB_CLIENT_EV_SLOW_CONSUMER, k->index, MB_ELIMIT,
                       "slow consumer on %s (connection %d): messages dropped", subj ? subj : "?",
                       k->index);
        return;
    }
    const char *text = NULL;
    if (nc)
        natsConnection_GetLastError(nc, &text);
    mb__event_push(k->c, MB_CLIENT_EV_ERROR, k->index, mb__client_nats_status(err),
                   "connection %d: %s%s%s", k->index, natsStatus_GetText(err),
                   text && *text ? ": " : "", text ? text : "");
}

void mb__events_set_callbacks(mb__conn *k, natsOptions *opts)
{
    natsOptions_SetDisconnectedCB(opts, on_disconnected, k);
    natsOptions_SetReconnectedCB(opts, on_reconnected, k);
    natsOptions_SetClosedCB(opts, on_closed, k);
    natsOptions_SetErrorHandler(opts, on_error, k);
    natsOptions_SetLameDuckModeCB(opts, on_lame_duck, k);
}

/* ---- subscription deliveries (nats.c's delivery threads) ---- */

void mb__sub_complete_cb(void *closure)
{
    mb__sub *s = closure;
    mb_client *c = s->c;
    mb__client_sub_unref(s);
    pthread_mutex_lock(&c->lock);
    atomic_fetch_sub(&c->subs_alive, 1);
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->lock);
}

void mb__msg_cb(natsConnection *nc, natsSubscription *nsub, natsMsg *msg, void *closure)
{
    mb__sub *s = closure;
    mb_client *c = s->c;
    (void)nc;
    (void)nsub;
    if (!atomic_load(&s->active)) {
        natsMsg_Destroy(msg);
        return;
    }
    const char *subj = natsMsg_GetSubject(msg);
    const char *data = natsMsg_GetData(msg);
    size_t len = (size_t)natsMsg_GetDataLength(msg);
    mb_err e = {0};
    mb_subject_info info;
    mb_status st = mb_subject_check(c->subjects, subj, strlen(subj), &info, NULL, &e);
    if (st == MB_OK && len > c->max_payload)
        st = mb_err_set(&e, MB_ETOOBIG, "payload of %zu bytes exceeds %zu", len, c->max_payload);
    if (st == MB_OK)
        st = mb_schema_validate(c->schema, info.schema, data ? data : "", len, NULL, &e);
    if (st != MB_OK) {
        mb_counter_add(c->m_invalid, 1);
        mb__client_dead_letter(c, subj, data, len, st, e.msg, 1, 0, "consume");
        natsMsg_Destroy(msg);
        return;
    }
    if (!c->o.poll_mode) {
        mb__client_deliver(c, s, msg, &info);
        natsMsg_Destroy(msg);
        return;
    }
    bool full = false;
    if (mb__dq_push_msg(c, s, msg, &info, &full))
        return;
    mb_counter_add(c->m_dq_full, 1);
    mb__client_dead_letter(c, subj, data, len, full ? MB_ELIMIT : MB_ENOMEM,
                           full ? "poll-mode dispatch queue full"
                                : "poll-mode dispatch queue: out of memory",
                           1, 0, "consume");
    natsMsg_Destroy(msg);
}

/* ---- the client thread ---- */

static void deliver_to_listeners(mb_client *c, const mb__event *ev)
{
    mb_client_event pub = {.type = ev->type,
                           .conn = ev->conn,
                           .status = ev->status,
                           .text = ev->text,
                           .from = ev->from,
                           .to = ev->to};
    pthread_mutex_lock(&c->lock);
    size_t n = c->nlisteners;
    mb_client_listener fns[16];
    void *ctxs[16];
    for (size_t i = 0; i < n; i++) {
        fns[i] = c->listeners[i].fn;
        ctxs[i] = c->listeners[i].ctx;
    }
    pthread_mutex_unlock(&c->lock);
    for (size_t i = 0; i < n; i++)
        fns[i](ctxs[i], &pub);
}

/* Append it to the poll-mode queue (dq_lock held). The fd is signalled
 * only when the queue was empty: mb_client_dispatch signals again itself
 * when it leaves items behind, so a burst costs one write, not one each. */
static bool dq_append(mb_client *c, mb__item *it)
{
    bool was_empty = c->dq_head == NULL;
    if (c->dq_tail)
        c->dq_tail->next = it;
    else
        c->dq_head = it;
    c->dq_tail = it;
    return was_empty;
}

bool mb__dq_push_msg(mb_client *c, mb__sub *s, natsMsg *msg, const mb_subject_info *info,
                     bool *full)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    mb__item *it = NULL;
    bool signal = false;
    *full = true;
    pthread_mutex_lock(&c->dq_lock);
    if (c->dq_deliveries < c->o.dispatch_queue_max) {
        *full = false;
        it = mb__calloc(1, sizeof *it);
    }
    if (it) {
        it->msg = msg;
        it->sub = s;
        it->info = *info;
        it->queued_ns = (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
        atomic_fetch_add(&s->refs, 1);
        signal = dq_append(c, it);
        c->dq_deliveries++;
    }
    pthread_mutex_unlock(&c->dq_lock);
    if (signal)
        mb__efd_signal(c);
    return it != NULL;
}

static void queue_event(mb_client *c, const mb__event *ev)
{
    mb__item *it = NULL;
    bool signal = false;
    pthread_mutex_lock(&c->dq_lock);
    if (c->dq_events < MB__EV_DISPATCH_MAX)
        it = mb__calloc(1, sizeof *it);
    if (it) {
        it->ev = *ev;
        signal = dq_append(c, it);
        c->dq_events++;
    }
    pthread_mutex_unlock(&c->dq_lock);
    if (signal)
        mb__efd_signal(c);
    if (!it)
        mb_counter_add(c->m_events_lost, 1);
}

/* What the client itself makes of an event, before the listeners see it. */
static void handle_event(mb_client *c, const mb__event *ev)
{
    switch (ev->type) {
    case MB_CLIENT_EV_DISCONNECTED:
    case MB_CLIENT_EV_RECONNECTED:
    case MB_CLIENT_EV_POOL:
        mb__health_update_state(c, ev->status, ev->text);
        break;
    case MB_CLIENT_EV_CLOSED:
        mb__health_update_state(c, ev->status, ev->text);
        mb__pool_schedule_repair(c);
        break;
    case MB_CLIENT_EV_ERROR:
        pthread_mutex_lock(&c->lock);
        c->last_error = ev->status;
        snprintf(c->last_error_msg, sizeof c->last_error_msg, "%s", ev->text);
        pthread_mutex_unlock(&c->lock);
        mb__client_log(c, "%s", ev->text);
        break;
    default:
        break;
    }
    if (c->o.poll_mode)
        queue_event(c, ev);
    else
        deliver_to_listeners(c, ev);
}

static void *client_thread(void *arg)
{
    mb_client *c = arg;
    uint64_t signalled_due = UINT64_MAX;
    pthread_mutex_lock(&c->lock);
    for (;;) {
        while (c->ring_len) {
            mb__event ev = c->ring[c->ring_head];
            c->ring_head = (c->ring_head + 1) % MB__EV_RING_MAX;
            c->ring_len--;
            pthread_mutex_unlock(&c->lock);
            handle_event(c, &ev);
            pthread_mutex_lock(&c->lock);
        }
        if (c->stop)
            break;
        c->wake = false;
        pthread_mutex_unlock(&c->lock);

        mb_timerq_run(c->internal_q, 0);
        uint64_t now = mb_clock_mono_ns(c->o.clock);
        uint64_t rdue = mb_timerq_next_due(c->retry_q);
        if (!c->o.poll_mode) {
            mb_timerq_run(c->retry_q, 0);
            rdue = mb_timerq_next_due(c->retry_q);
        } else if (rdue <= now && rdue != signalled_due) {
            /* Due retries run in mb_client_dispatch: make the fd readable
             * once per earliest timer; dispatch wakes us when it ran them. */
            signalled_due = rdue;
            mb__efd_signal(c);
        }
        uint64_t idue = mb_timerq_next_due(c->internal_q);
        uint64_t due = idue;
        if (rdue != signalled_due && rdue < due)
            due = rdue;

        pthread_mutex_lock(&c->lock);
        if (c->wake || c->ring_len || c->stop)
            continue;
        if (due == UINT64_MAX) {
            pthread_cond_wait(&c->cond, &c->lock);
        } else {
            now = mb_clock_mono_ns(c->o.clock);
            uint64_t wait_ns = due > now ? due - now : 0;
            if (wait_ns > 0) {
                struct timespec ts;
                clock_gettime(CLOCK_MONOTONIC, &ts);
                uint64_t t = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec + wait_ns;
                ts.tv_sec = (time_t)(t / 1000000000u);
                ts.tv_nsec = (long)(t % 1000000000u);
                pthread_cond_timedwait(&c->cond, &c->lock, &ts);
            }
        }
    }
    pthread_mutex_unlock(&c->lock);
    return NULL;
}

mb_status mb__thread_start(mb_client *c, mb_err *err)
{
    int rc = pthread_create(&c->thread, NULL, client_thread, c);
    if (rc != 0)
        return mb_err_set(err, MB_ENOMEM, "cannot start the client thread: %s", strerror(rc));
    c->thread_started = true;
    return MB_OK;
}

void mb__thread_stop(mb_client *c)
{
    if (!c->thread_started)
        return;
    pthread_mutex_lock(&c->lock);
    c->stop = true;
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->lock);
    pthread_join(c->thread, NULL);
    c->thread_started = false;
}

/* ---- poll mode ---- */

void mb__dq_free_all(mb_client *c)
{
    pthread_mutex_lock(&c->dq_lock);
    mb__item *it = c->dq_head;
    c->dq_head = c->dq_tail = NULL;
    c->dq_deliveries = c->dq_events = 0;
    pthread_mutex_unlock(&c->dq_lock);
    while (it) {
        mb__item *next = it->next;
        if (it->msg) {
            natsMsg_Destroy(it->msg);
            mb__client_sub_unref(it->sub);
        }
        mb__free(it);
        it = next;
    }
}

int mb_client_fd(const mb_client *c)
{
    return c && c->o.poll_mode ? c->efd : -1;
}

int mb_client_timeout_ms(mb_client *c)
{
    if (!c)
        return -1;
    return mb_timerq_timeout_ms(c->retry_q);
}

mb_status mb_client_dispatch(mb_client *c, size_t max, size_t *ran)
{
    if (ran)
        *ran = 0;
    if (!c)
        return MB_EINVAL;
    if (!c->o.poll_mode)
        return MB_ESTATE;
    uint64_t v;
    while (read(c->efd, &v, sizeof v) < 0 && errno == EINTR) {
    }
    size_t n = 0;
    /* Only what is pending now: items queued while handlers run wait for the
     * next call (the fd stays readable for them). */
    pthread_mutex_lock(&c->dq_lock);
    size_t pending = c->dq_deliveries + c->dq_events;
    pthread_mutex_unlock(&c->dq_lock);
    while ((max == 0 || n < max) && pending > 0) {
        pthread_mutex_lock(&c->dq_lock);
        mb__item *it = c->dq_head;
        if (it) {
            c->dq_head = it->next;
            if (!c->dq_head)
                c->dq_tail = NULL;
            if (it->msg)
                c->dq_deliveries--;
            else
                c->dq_events--;
        }
        pthread_mutex_unlock(&c->dq_lock);
        if (!it)
            break;
        pending--;
        if (it->msg) {
            struct timespec now;
            clock_gettime(CLOCK_MONOTONIC, &now);
            uint64_t t = (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
            mb_histogram_observe(c->m_dq_wait, t > it->queued_ns ? t - it->queued_ns : 0);
            if (atomic_load(&it->sub->active)) {
                mb__client_deliver(c, it->sub, it->msg, &it->info);
                n++;
            }
            natsMsg_Destroy(it->msg);
            mb__client_sub_unref(it->sub);
        } else {
            deliver_to_listeners(c, &it->ev);
            n++;
        }
        mb__free(it);
    }
    if (max == 0 || n < max) {
        size_t r = mb_timerq_run(c->retry_q, max ? max - n : 0);
        if (r)
            mb__client_wake(c); /* recompute the earliest due retry */
        n += r;
    }
    pthread_mutex_lock(&c->dq_lock);
    bool more = c->dq_head != NULL;
    pthread_mutex_unlock(&c->dq_lock);
    if (more || mb_timerq_timeout_ms(c->retry_q) == 0)
        mb__efd_signal(c);
    if (ran)
        *ran = n;
    return MB_OK;
}
