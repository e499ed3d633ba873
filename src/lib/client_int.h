/* SPDX-License-Identifier: MIT */
/*
 * client_int: the internal structure of mb_client, shared by client.c (API,
 * publish pipeline, subscriptions), client_pool.c (connections),
 * client_health.c (health checks, client state), client_events.c (nats.c
 * callbacks, the client thread, poll-mode dispatch) and client_js.c
 * (JetStream for critical subjects). The thread model is
 * described at the top of client.c.
 */
#ifndef MUDBUS_CLIENT_INT_H
#define MUDBUS_CLIENT_INT_H

#include <nats/nats.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "mudbus/client.h"
#include "mudbus/timerq.h"

#define MB__EV_TEXT_MAX       192  /* bytes of an event's text, NUL included */
#define MB__EV_RING_MAX       4096 /* events waiting for the client thread */
#define MB__EV_DISPATCH_MAX   4096 /* poll mode: events waiting for dispatch */
#define MB__SUB_PENDING_MSGS  65536
#define MB__SUB_PENDING_BYTES (64 * 1024 * 1024)

typedef struct mb__event {
    mb_client_event_type type;
    int conn;
    mb_status status;
    mb_conn_state from, to;
    char text[MB__EV_TEXT_MAX];
} mb__event;

/* One pool slot. `nc` is read under `lock` (shared) by every user and
 * replaced under `lock` (exclusive) by the client thread only. */
typedef struct mb__conn {
    struct mb_client *c;
    int index;
    pthread_rwlock_t lock;
    natsConnection *nc;    /* NULL while missing (repair pending) */
    atomic_bool connected; /* nc is connected: set by the connect and nats.c's
                            * connection callbacks, read by every publish (a
                            * lock-free mb__pool_get) */
    natsOptions *opts;     /* kept for repairs */
    mb_counter *published; /* mudbus_client_published_total{conn} */
    mb_gauge *up;          /* mudbus_client_conn_up{conn} */
    /* Unsubscribed subscriptions waiting to be destroyed (mb__grave_put). */
    pthread_mutex_t grave_lock;
    struct mb__grave *grave;
    /* Client thread only. */
    unsigned health_failures; /* consecutive */
    bool live_prev;
} mb__conn;

typedef struct mb__sub {
    struct mb_client *c;
    mb_sub_id id;
    char *pattern;
    char *queue;
    mb_msg_handler fn;
    void *ctx;
    natsSubscription *ns;
    int conn; /* pool index */
    _Atomic bool active;
    /* One reference for the client's list, one for nats.c (dropped by the
     * subscription's on-complete callback), one per queued delivery. */
    _Atomic int refs;
    struct mb__js_sub *js; /* JetStream pull subscription (client_js.c); NULL: core */
} mb__sub;

/* Poll mode: one pending handler or listener call. */
/* Every listed subscription s of client c (c->subs_lock held, or no other
 * thread left). */
#define MB__SUBS_EACH(c, s)                                                                        \
    for (uint32_t s##_i = 0; s##_i < (c)->sub_used; s##_i++)                                       \
        for (mb__sub *s = (c)->sub_slot[s##_i]; s; s = NULL)

typedef struct mb__item {
    struct mb__item *next;
    natsMsg *msg; /* a delivery (with sub), or NULL for an event */
    mb__sub *sub;
    mb_subject_info info;
    mb__event ev;
    uint64_t queued_ns; /* monotonic time it was queued (deliveries) */
} mb__item;

/* A message waiting for its next attempt (owned by its timer). */
typedef struct mb__retry {
    struct mb_client *c;
    uint32_t hash;
    unsigned attempts;
    uint64_t first_mono_ns;
    int64_t first_failure_ms;
    uint64_t prev_delay_ms;
    mb_status last_status;
    char last_msg[MB_ERR_MSG_MAX];
    size_t len;
    char *subject; /* points into the same allocation, after data */
    char data[];
} mb__retry;

struct mb_client {
    mb_client_opts o; /* strings below are the client's copies */
    char *strs;       /* one allocation holding every copied string */
    char name[64];
    char labels[128]; /* client="<name>" */

    mb_metrics *metrics;
    bool own_metrics;
    mb_subject_registry *subjects;
    bool own_subjects;
    mb_schema *schema;
    mb_breaker *breaker;
    mb_retry_budget *budget;
    mb_connstate *state;
    mb_timerq *retry_q;    /* publish retries: client thread, or dispatch in poll mode */
    mb_timerq *internal_q; /* health checks and repairs: client thread only */
    size_t max_payload;

    pthread_mutex_t rng_lock;
    mb_rng rng;

    size_t npool;
    mb__conn conns[MB_CLIENT_MAX_POOL];
    _Atomic int conns_open; /* connections whose closed callback has not run */
    _Atomic int subs_alive; /* subscriptions nats.c still holds */

    /* The client thread and its wake-up; `lock` also guards the event ring,
     * the listeners, the health summary and the flags below. */
    pthread_t thread;
    bool thread_started;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool wake;
    bool stop;
    bool closing; /* destroy started: no repairs, no new retries */
    bool ever_connected;
    bool repair_pending;
    mb__event *ring;
    size_t ring_head, ring_len;
    struct {
        mb_client_listener fn;
        void *ctx;
    } listeners[16];
    size_t nlisteners;
    uint64_t last_rtt_us;
    size_t live;
    mb_status last_error;
    char last_error_msg[MB_ERR_MSG_MAX];

    /* Poll mode. */
    int efd;
    pthread_mutex_t dq_lock;
    mb__item *dq_head, *dq_tail;
    size_t dq_deliveries, dq_events;

    /* Subscriptions: a list (newest first) and a table by id. An id is
     * (generation << 32 | slot): unsubscribe finds its subscription at once
     * (a gateway holds one per player and drops thousands in a disconnect
     * storm); an id comes back only after 2^32 reuses of its slot. */
    pthread_mutex_t subs_lock;
    mb__sub *subs;
    mb__sub **sub_slot; /* by slot; NULL: free or reserved */
    uint32_t *sub_gen;  /* by slot: the generation of its current id */
    uint32_t *sub_free; /* free slots (a stack) */
    uint32_t sub_cap, sub_used, sub_nfree;

    /* Metrics (the registry owns them). */
    mb_gauge *m_pool_size, *m_live;
    mb_counter *m_refused, *m_failed, *m_retries, *m_retried_ok, *m_dead_pub, *m_dead_consume,
        *m_dropped, *m_delivered, *m_invalid, *m_slow, *m_health_fail, *m_events_lost,
        *m_connect_fail, *m_repairs, *m_dq_full, *m_handled_ok, *m_handled_retry, *m_handled_fail;
    mb_histogram *m_rtt;
    mb_histogram *m_dq_wait; /* poll mode: queued to dispatched */

    struct mb__js *js; /* JetStream for critical subjects (client_js.c); NULL: disabled */
};

/* client.c */
mb_status mb__client_nats_status(natsStatus s);
mb_status mb__client_nats_err(natsStatus s, mb_err *err, const char *what);
void mb__client_log(mb_client *c, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
void mb__client_retry_due(mb_client *c); /* run due retries (driver thread) */
/* Run the handler (and, for a JetStream subscription, ack/nak/term by its
 * result). */
void mb__client_deliver(mb_client *c, mb__sub *sub, natsMsg *msg, const mb_subject_info *info);
/* A publish that failed after its call returned (a JetStream publish ack):
 * retry it through the retry queue, or dead-letter it, as a failed first
 * attempt would be. `attempts` made so far. Any thread, no lock held. */
mb_publish_disposition mb__client_publish_failed(mb_client *c, const char *subject,
                                                 const void *data, size_t len, mb_status st,
                                                 const char *msg, unsigned attempts);
void mb__client_sub_unref(mb__sub *s);
/* Put a failed message into the DLQ (mb_dlq_put_async: never blocks) and
 * report MB_CLIENT_EV_DEAD_LETTERED, or, without a DLQ or when it refuses,
 * count it and report MB_CLIENT_EV_DROPPED. Any thread. */
mb_publish_disposition mb__client_dead_letter(mb_client *c, const char *subject, const void *data,
                                              size_t len, mb_status st, const char *msg,
                                              unsigned attempts, int64_t first_ms,
                                              const char *origin);

/* client_pool.c */
mb_status mb__pool_start(mb_client *c, mb_err *err);
void mb__pool_close(mb_client *c);
uint32_t mb__pool_hash(const char *s, size_t len);
/* Take a live connection for `hash` (shared lock held on return: release
 * with mb__pool_put). NULL when none is live. */
mb__conn *mb__pool_get(mb_client *c, uint32_t hash, natsConnection **nc);
void mb__pool_put(mb__conn *k);
/* nats.c 3.4's read loop looks a subscription up, releases the lookup lock
 * and then uses it, so a subscription destroyed right after its unsubscribe
 * may be freed under the read loop (nats.c issue 637, fixed in 3.6; seen
 * here as heap corruption in a gateway that unsubscribes thousands of
 * players). So an unsubscribed subscription is kept, and destroyed once a
 * flush round trip on its connection has completed after it was kept: the
 * read loop handles the server's data in order, so it is then done with it.
 * mb__grave_put keeps one (out of memory, it waits for a round trip itself
 * and then destroys it);
 * mb__grave_take removes the kept list, mb__grave_bury destroys a list,
 * mb__grave_return puts one back (its flush failed). */
typedef struct mb__grave {
    struct mb__grave *next;
    natsSubscription *ns;
} mb__grave;
void mb__grave_put(mb__conn *k, natsSubscription *ns);
mb__grave *mb__grave_take(mb__conn *k);
void mb__grave_bury(mb__grave *list);
void mb__grave_return(mb__conn *k, mb__grave *list);
size_t mb__pool_live(mb_client *c);
void mb__pool_repair(mb_client *c); /* client thread */
void mb__pool_schedule_repair(mb_client *c);

/* client_health.c */
/* Schedule the first health check: MB_ENOMEM (err set) if it cannot be queued. */
mb_status mb__health_start(mb_client *c, mb_err *err);
void mb__health_update_state(mb_client *c, mb_status cause, const char *reason);

/* client_events.c */
void mb__events_set_callbacks(mb__conn *k, natsOptions *opts);
void mb__event_push(mb_client *c, mb_client_event_type type, int conn, mb_status st,
                    const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 5, 6)))
#endif
    ;
void mb__event_push_state(mb_client *c, mb_conn_state from, mb_conn_state to, const char *why);
void mb__client_wake(mb_client *c);
mb_status mb__thread_start(mb_client *c, mb_err *err);
void mb__thread_stop(mb_client *c);
void mb__msg_cb(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure);
void mb__sub_complete_cb(void *closure);
void mb__dq_free_all(mb_client *c);
void mb__efd_signal(mb_client *c);
/* Poll mode: queue a delivery of msg to s for mb_client_dispatch (taking a
 * reference on s). False, with nothing taken, when the queue is full or out
 * of memory (*full tells which). */
bool mb__dq_push_msg(mb_client *c, mb__sub *s, natsMsg *msg, const mb_subject_info *info,
                     bool *full);

/* client_js.c (JetStream for critical subjects; every function is a no-op
 * or false when c->js is NULL, except where noted) */
void mb__js_opts_default(mb_client_js_opts *o);
/* Check and copy the options, register the metrics (before the pool starts). */
mb_status mb__js_create(mb_client *c, mb_err *err);
/* Create or check the stream on a live connection (after the pool started). */
mb_status mb__js_start(mb_client *c, mb_err *err);
/* At destroy, before the pool closes: stop the fetch threads (durables are
 * kept), wait (bounded) for publish acks, fail what is still pending. */
void mb__js_close(mb_client *c);
void mb__js_free(mb_client *c);
/* Whether `subject` (or a subscription pattern) is covered by a critical
 * pattern. */
bool mb__js_critical(mb_client *c, const char *subject);
/* Publish asynchronously on JetStream through slot k (its lock held shared,
 * nc its connection). c->js must be set. */
natsStatus mb__js_publish(mb_client *c, mb__conn *k, natsConnection *nc, const char *subject,
                          const void *data, size_t len, unsigned attempt_no);
/* Subscribe s (filled but not listed) as a durable pull consumer. */
mb_status mb__js_subscribe(mb_client *c, mb__sub *s, mb_err *err);
/* Unsubscribe s (unlisted, inactive): stop its fetch thread, delete its
 * durable. Does not drop the list's reference. */
mb_status mb__js_unsubscribe(mb_client *c, mb__sub *s, mb_err *err);
/* The delivery number of a JetStream message (1: first), 0 if unknown. */
uint64_t mb__js_deliveries(natsMsg *msg);
/* Ack, nak or term a JetStream message by its handler's result. */
void mb__js_settle(mb_client *c, mb__sub *s, natsMsg *msg, mb_handled h, uint64_t deliveries);
void mb__js_sub_free(struct mb__js_sub *q);

#endif
