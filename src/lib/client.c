/* SPDX-License-Identifier: MIT */
/*
 * client: mb_client's API: creation and destruction, the publish pipeline
 * with scheduled retries and the dead letter queue, validated subscriptions,
 * request/reply, listeners, health and metrics. The pool is in
 * client_pool.c, health checks and the client state in client_health.c,
 * nats.c callbacks, the client thread and poll-mode dispatch in
 * client_events.c, JetStream for critical subjects (the stream, async
 * publishes with acks, durable pull consumers and their fetch threads) in
 * client_js.c.
 *
 * DESIGN: threads.
 *
 *   nats.c threads. Per connection a reader and a flusher; one thread for
 *   connection events (disconnected, reconnected, closed, error, lame duck);
 *   one delivery thread per subscription. The event callbacks only copy a
 *   record into the client's event ring and signal a condition variable. The
 *   delivery callback validates the message (subject pattern, schema) and
 *   dead-letters an invalid one with mb_dlq_put_async (never blocks); a valid
 *   one runs the handler right there (threaded mode: one subscription's
 *   messages in order, on its own thread) or is queued for dispatch (poll
 *   mode, bounded by dispatch_queue_max).
 *
 *   The client thread (one per client, always). It takes events off the
 *   ring, updates the pool and the connstate, and calls listeners (threaded
 *   mode) or queues them for dispatch (poll mode). It drives the internal
 *   timer queue: health checks (a FlushTimeout per live connection, so at most
 *   pool_size * health_timeout_ms per round) and repairs of missing
 *   connections (natsConnection_Connect, bounded by connect_timeout_ms). In
 *   threaded mode it also drives the retry queue. It sleeps on its condition
 *   variable until the next timer is due or something is pushed.
 *
 *   Poll mode. mb_client_fd is an eventfd that is signalled when a delivery or
 *   event is queued, or (by the client thread) when a retry comes due;
 *   mb_client_dispatch, on the caller's thread, runs queued handler and
 *   listener calls and due retries.
 *
 *   Callers. Publish, subscribe, request, flush and health may be called from
 *   any thread, handlers and listeners included. Publish never blocks beyond
 *   nats.c's own buffering: a failed attempt is copied into a retry record on
 *   the retry queue and the call returns MB_PUB_RETRYING.
 *
 * Locks (never two at once, except a pool slot's rwlock held while taking no
 * other lock but nats.c's): c->lock (ring, listeners, health summary, flags),
 * c->dq_lock (poll-mode queue), c->subs_lock (subscription list),
 * c->rng_lock (jitter), conns[i].lock (a slot's connection).
 *
 * Shutdown: drain every connection (bounded), wait for nats.c's closed and
 * subscription-complete callbacks (after them nats.c never calls the client
 * again), stop the client thread, dead-letter the messages still waiting for
 * a retry, flush the DLQ so that its callbacks have run, then free.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "bytes.h"
#include "client_int.h"

/* ---- statuses ---- */

static const struct {
    natsStatus ns;
    mb_status st;
} status_map[] = {
    {NATS_OK, MB_OK},
    {NATS_TIMEOUT, MB_ETIMEOUT},
    {NATS_NO_RESPONDERS, MB_ENORESPONDERS},
    {NATS_NO_SERVER, MB_ENOCONN},
    {NATS_CONNECTION_CLOSED, MB_ENOCONN},
    {NATS_CONNECTION_DISCONNECTED, MB_ENOCONN},
    {NATS_NOT_YET_CONNECTED, MB_ENOCONN},
    {NATS_STALE_CONNECTION, MB_ENOCONN},
    {NATS_INSUFFICIENT_BUFFER, MB_ENOCONN}, /* the reconnect buffer is full */
    {NATS_IO_ERROR, MB_EIO},
    {NATS_PROTOCOL_ERROR, MB_EIO},
    {NATS_SYS_ERROR, MB_EIO},
    {NATS_NOT_PERMITTED, MB_EAUTH},
    {NATS_CONNECTION_AUTH_FAILED, MB_EAUTH},
    {NATS_SSL_ERROR, MB_ETLS},
    {NATS_SECURE_CONNECTION_WANTED, MB_ETLS},
    {NATS_SECURE_CONNECTION_REQUIRED, MB_ETLS},
    {NATS_MAX_PAYLOAD, MB_ETOOBIG},
    {NATS_NO_MEMORY, MB_ENOMEM},
    {NATS_INVALID_SUBJECT, MB_ESUBJECT},
    {NATS_INVALID_ARG, MB_EINVAL},
    {NATS_INVALID_TIMEOUT, MB_EINVAL},
    {NATS_INVALID_QUEUE_NAME, MB_EINVAL},
    {NATS_ADDRESS_MISSING, MB_EINVAL},
    {NATS_INVALID_SUBSCRIPTION, MB_ESTATE},
    {NATS_ILLEGAL_STATE, MB_ESTATE},
    {NATS_DRAINING, MB_ECLOSED},
    {NATS_SLOW_CONSUMER, MB_ELIMIT},
    {NATS_MAX_DELIVERED_MSGS, MB_ELIMIT},
    {NATS_NOT_FOUND, MB_ENOTFOUND},
    {NATS_NO_SERVER_SUPPORT, MB_EUNSUPPORTED},
};

mb_status mb__client_nats_status(natsStatus s)
{
    for (size_t i = 0; i < sizeof status_map / sizeof status_map[0]; i++)
        if (status_map[i].ns == s)
            return status_map[i].st;
    return MB_EINTERNAL;
}

/* Map `s` and record nats.c's error text (this thread's, so call it right
 * after the failing nats.c call). Authorization violations arrive as a
 * generic error with the server's text: they become MB_EAUTH. */
mb_status mb__client_nats_err(natsStatus s, mb_err *err, const char *what)
{
    natsStatus ls = NATS_OK;
    const char *txt = nats_GetLastError(&ls);
    mb_status st = mb__client_nats_status(s);
    if (txt && (strstr(txt, "uthorization") || strstr(txt, "uthentication")))
        st = MB_EAUTH;
    else if (txt && strstr(txt, "maximum connections"))
        st = MB_ENOCONN;
    else if (st == MB_EINTERNAL)
        st = MB_EIO;
    if (txt && *txt)
        return mb_err_set(err, st, "%s: %s", what, txt);
    return mb_err_set(err, st, "%s: %s", what, natsStatus_GetText(s));
}

void mb__client_log(mb_client *c, const char *fmt, ...)
{
    if (!c->o.log)
        return;
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    c->o.log(c->o.log_ctx, line);
}

/* ---- options ---- */

void mb_client_opts_default(mb_client_opts *o)
{
    memset(o, 0, sizeof *o);
    o->servers[0] = "nats://127.0.0.1:4222";
    o->nservers = 1;
    o->name = "mudbus";
    o->pool_size = 2;
    o->max_reconnect = -1;
    o->reconnect_wait_ms = 2000;
    o->reconnect_jitter_ms = 100;
    o->reconnect_buf_bytes = 8u * 1024u * 1024u;
    o->io_buf_bytes = 128u * 1024u;
    o->connect_timeout_ms = 2000;
    o->health_interval_ms = 5000;
    o->health_timeout_ms = 500;
    o->health_failures = 3;
    mb_retry_policy_default(&o->retry);
    o->retry_queue_max = 65536;
    o->dispatch_queue_max = 65536;
    o->timing_sample = 16;
    o->sub_pending_msgs = MB__SUB_PENDING_MSGS;
    o->sub_pending_bytes = MB__SUB_PENDING_BYTES;
    mb__js_opts_default(&o->js);
}

static mb_status check_opts(const mb_client_opts *o, mb_err *err)
{
    if (o->nservers == 0 || o->nservers > MB_CLIENT_MAX_SERVERS)
        return mb_err_set(err, MB_EINVAL, "nservers must be 1..%d", MB_CLIENT_MAX_SERVERS);
    for (size_t i = 0; i < o->nservers; i++)
        if (!o->servers[i] || !*o->servers[i])
            return mb_err_set(err, MB_EINVAL, "servers[%zu] is empty", i);
    if (o->pool_size == 0 || o->pool_size > MB_CLIENT_MAX_POOL)
        return mb_err_set(err, MB_EINVAL, "pool_size must be 1..%d", MB_CLIENT_MAX_POOL);
    const char *n = o->name ? o->name : "";
    size_t nl = strlen(n);
    if (nl == 0 || nl > 40 ||
        strspn(n, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                  "0123456789_.-") != nl)
        return mb_err_set(err, MB_EINVAL, "name must be 1..40 bytes of [A-Za-z0-9_.-]");
    if (o->health_interval_ms == 0 || o->health_timeout_ms == 0 || o->health_failures == 0)
        return mb_err_set(err, MB_EINVAL, "health interval, timeout and failures must be > 0");
    if (o->io_buf_bytes != 0 && (o->io_buf_bytes < 1024 || o->io_buf_bytes > (size_t)16 << 20))
        return mb_err_set(err, MB_EINVAL,
                          "io_buf_bytes must be 0 (nats.c's default) or 1 KiB..16 MiB");
    if (o->connect_timeout_ms == 0 || o->reconnect_buf_bytes > (size_t)1 << 30)
        return mb_err_set(err, MB_EINVAL,
                          "connect_timeout_ms must be > 0 and "
                          "reconnect_buf_bytes at most 1 GiB");
    if (o->retry_queue_max == 0 || o->retry_queue_max > (1u << 24))
        return mb_err_set(err, MB_EINVAL, "retry_queue_max must be 1..2^24");
    if (o->poll_mode && o->dispatch_queue_max == 0)
        return mb_err_set(err, MB_EINVAL, "dispatch_queue_max must be > 0");
    if (o->sub_pending_msgs <= 0 || o->sub_pending_bytes <= 0)
        return mb_err_set(err, MB_EINVAL, "sub_pending_msgs and sub_pending_bytes must be > 0");
    if (o->max_payload > MB_SCHEMA_MAX_BYTES_LIMIT)
        return mb_err_set(err, MB_EINVAL, "max_payload above %u", MB_SCHEMA_MAX_BYTES_LIMIT);
    if (!o->auth.user != !o->auth.password)
        return mb_err_set(err, MB_EINVAL, "auth: user and password go together");
    if (o->auth.nkey_seed_file && !o->auth.nkey_public)
        return mb_err_set(err, MB_EINVAL, "auth: nkey_seed_file needs nkey_public");
    if (o->tls.cert_file && !o->tls.key_file)
        return mb_err_set(err, MB_EINVAL, "tls: cert_file needs key_file");
    return mb_retry_policy_check(&o->retry, err);
}

/* Copy every borrowed string of the options into one allocation. */
static mb_status copy_strings(mb_client *c, mb_err *err)
{
    const char **fields[MB_CLIENT_MAX_SERVERS + 12];
    size_t nf = 0;
    for (size_t i = 0; i < c->o.nservers; i++)
        fields[nf++] = &c->o.servers[i];
    fields[nf++] = &c->o.tls.ca_file;
    fields[nf++] = &c->o.tls.cert_file;
    fields[nf++] = &c->o.tls.key_file;
    fields[nf++] = &c->o.tls.hostname;
    fields[nf++] = &c->o.auth.user;
    fields[nf++] = &c->o.auth.password;
    fields[nf++] = &c->o.auth.token;
    fields[nf++] = &c->o.auth.nkey_seed_file;
    fields[nf++] = &c->o.auth.nkey_public;
    fields[nf++] = &c->o.auth.creds_file;
    size_t total = 0;
    for (size_t i = 0; i < nf; i++)
        if (*fields[i])
            total += strlen(*fields[i]) + 1;
    c->strs = mb__malloc(total ? total : 1);
    if (!c->strs)
        return mb_err_set(err, MB_ENOMEM, "out of memory");
    char *p = c->strs;
    for (size_t i = 0; i < nf; i++) {
        if (!*fields[i])
            continue;
        size_t l = strlen(*fields[i]) + 1;
        memcpy(p, *fields[i], l);
        *fields[i] = p;
        p += l;
    }
    snprintf(c->name, sizeof c->name, "%s", c->o.name);
    c->o.name = c->name;
    snprintf(c->labels, sizeof c->labels, "client=\"%s\"", c->name);
    return MB_OK;
}

/* ---- metrics ---- */

static mb_status register_metrics(mb_client *c, mb_err *err)
{
    mb_status st;
#define C_(field, name, help)                                                                      \
    if ((st = mb_metrics_counter(c->metrics, name, help, c->labels, &c->field, err)) != MB_OK)     \
        return st;
#define CL_(field, name, help, extra)                                                              \
    do {                                                                                           \
        char l_[192];                                                                              \
        snprintf(l_, sizeof l_, "%s,%s", c->labels, extra);                                        \
        if ((st = mb_metrics_counter(c->metrics, name, help, l_, &c->field, err)) != MB_OK)        \
            return st;                                                                             \
    } while (0)
    if ((st = mb_metrics_gauge(c->metrics, "mudbus_client_pool_size", "Pool connections", c->labels,
                               &c->m_pool_size, err)) != MB_OK)
        return st;
    if ((st = mb_metrics_gauge(c->metrics, "mudbus_client_pool_live", "Pool connections up now",
                               c->labels, &c->m_live, err)) != MB_OK)
        return st;
    C_(m_refused, "mudbus_client_publish_refused_total",
       "Publishes refused by subject or schema validation")
    C_(m_failed, "mudbus_client_publish_failed_total", "Publish calls whose first attempt failed")
    C_(m_retries, "mudbus_client_retries_scheduled_total", "Publish retries scheduled")
    C_(m_retried_ok, "mudbus_client_retried_ok_total", "Messages sent by a retry")
    CL_(m_dead_pub, "mudbus_client_dead_lettered_total", "Messages put into the DLQ",
        "origin=\"publish\"");
    CL_(m_dead_consume, "mudbus_client_dead_lettered_total", "Messages put into the DLQ",
        "origin=\"consume\"");
    C_(m_dropped, "mudbus_client_dropped_total", "Messages lost: no DLQ, or the DLQ refused them")
    C_(m_delivered, "mudbus_client_delivered_total", "Valid messages handed to handlers")
    C_(m_invalid, "mudbus_client_invalid_total", "Received messages that failed validation")
    C_(m_slow, "mudbus_client_slow_consumer_total", "Slow consumer reports from nats.c")
    C_(m_health_fail, "mudbus_client_health_failures_total", "Failed health round trips")
    C_(m_events_lost, "mudbus_client_events_lost_total", "Events lost to a full queue")
    C_(m_connect_fail, "mudbus_client_connect_failures_total", "Failed connection attempts")
    C_(m_repairs, "mudbus_client_repairs_total", "Pool connections repaired")
    C_(m_dq_full, "mudbus_client_dispatch_full_total",
       "Poll-mode deliveries refused by a full dispatch queue")
    CL_(m_handled_ok, "mudbus_client_handled_total", "Handler results", "result=\"ok\"");
    CL_(m_handled_retry, "mudbus_client_handled_total", "Handler results", "result=\"retry\"");
    CL_(m_handled_fail, "mudbus_client_handled_total", "Handler results", "result=\"fail\"");
    if ((st = mb_metrics_histogram(c->metrics, "mudbus_client_health_rtt_seconds",
                                   "Health check round trip", c->labels, 1e-9, &c->m_rtt, err)) !=
        MB_OK)
        return st;
    if (c->o.poll_mode &&
        (st = mb_metrics_histogram(c->metrics, "mudbus_client_dispatch_wait_seconds",
                                   "Poll mode: time from a delivery's arrival to its handler call",
                                   c->labels, 1e-9, &c->m_dq_wait, err)) != MB_OK)
        return st;
    for (size_t i = 0; i < c->npool; i++) {
        char l[192];
        snprintf(l, sizeof l, "%s,conn=\"%zu\"", c->labels, i);
        if ((st = mb_metrics_counter(c->metrics, "mudbus_client_published_total",
                                     "Messages handed to nats.c per pool connection", l,
                                     &c->conns[i].published, err)) != MB_OK)
            return st;
        if ((st = mb_metrics_gauge(c->metrics, "mudbus_client_conn_up",
                                   "1 while the pool connection is up", l, &c->conns[i].up, err)) !=
            MB_OK)
            return st;
    }
#undef C_
#undef CL_
    mb_gauge_set(c->m_pool_size, (int64_t)c->npool);
    return MB_OK;
}

/* ---- create / destroy ---- */

static void state_listener(void *ctx, mb_conn_state from, mb_conn_state to, mb_status cause,
                           const char *reason, uint64_t seq)
{
    mb_client *c = ctx;
    (void)cause;
    (void)seq;
    mb__client_log(c, "state %s -> %s%s%s", mb_connstate_name(from), mb_connstate_name(to),
                   *reason ? ": " : "", reason);
    mb__event_push_state(c, from, to, reason);
}

static void retry_q_wake(void *ctx)
{
    mb__client_wake(ctx);
}

static void client_free(mb_client *c);

mb_status mb_client_create(const mb_client_opts *opts, mb_client **out, mb_err *err)
{
    if (!opts || !out)
        return mb_err_set(err, MB_EINVAL, "NULL options or out");
    *out = NULL;
    mb_status st = check_opts(opts, err);
    if (st != MB_OK)
        return st;
    mb_client *c = mb__calloc(1, sizeof *c);
    if (!c)
        return mb_err_set(err, MB_ENOMEM, "out of memory");
    c->o = *opts;
    c->efd = -1;
    c->npool = opts->pool_size;
    pthread_mutex_init(&c->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&c->cond, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&c->dq_lock, NULL);
    pthread_mutex_init(&c->subs_lock, NULL);
    pthread_mutex_init(&c->rng_lock, NULL);
    for (size_t i = 0; i < c->npool; i++) {
        c->conns[i].c = c;
        c->conns[i].index = (int)i;
        pthread_rwlock_init(&c->conns[i].lock, NULL);
        pthread_mutex_init(&c->conns[i].grave_lock, NULL);
    }
    mb_rng_seed(&c->rng, mb_clock_wall_ns(NULL) ^ (uint64_t)(uintptr_t)c);
    /* The event ring first: from the moment the connstate listener is added,
     * every transition (the fail path's "closed" one included) pushes to it. */
    c->ring = mb__calloc(MB__EV_RING_MAX, sizeof *c->ring);
    if (!c->ring) {
        st = mb_err_set(err, MB_ENOMEM, "out of memory");
        goto fail;
    }
    if ((st = copy_strings(c, err)) != MB_OK)
        goto fail;

    if (opts->metrics) {
        c->metrics = opts->metrics;
    } else {
        if ((st = mb_metrics_create(&c->metrics, err)) != MB_OK)
            goto fail;
        c->own_metrics = true;
    }
    /* The publish path would read the clock six times per message for its
     * timing histograms (subject build and check, schema validation); one
     * message in timing_sample is timed instead. */
    if (opts->timing_sample != 0 &&
        (st = mb_metrics_set_timing_sample(c->metrics, opts->timing_sample, err)) != MB_OK)
        goto fail;
    if ((st = register_metrics(c, err)) != MB_OK)
        goto fail;
    if ((st = mb__js_create(c, err)) != MB_OK)
        goto fail;
    if (opts->subjects) {
        c->subjects = opts->subjects;
    } else {
        st = mb_subject_registry_create(c->metrics, &c->subjects, NULL);
        if (st == MB_EEXIST) /* another client counts into this registry already */
            st = mb_subject_registry_create(NULL, &c->subjects, err);
        if (st != MB_OK)
            goto fail;
        c->own_subjects = true;
    }
    c->max_payload = opts->max_payload ? opts->max_payload : MB_SCHEMA_MAX_BYTES_DEFAULT;
    mb_schema_opts so = {.max_bytes = c->max_payload, .metrics = c->metrics};
    st = mb_schema_create(&so, &c->schema, NULL);
    if (st == MB_EEXIST) {
        so.metrics = NULL;
        st = mb_schema_create(&so, &c->schema, err);
    }
    if (st != MB_OK)
        goto fail;
    char sname[80];
    snprintf(sname, sizeof sname, "client_%s", c->name);
    mb_breaker_opts bo = opts->breaker;
    bo.name = sname;
    bo.clock = opts->clock;
    bo.metrics = c->metrics;
    if ((st = mb_breaker_create(&bo, &c->breaker, err)) != MB_OK)
        goto fail;
    mb_retry_budget_opts rbo = opts->budget;
    rbo.metrics = c->metrics;
    rbo.labels = c->labels;
    if ((st = mb_retry_budget_create(&rbo, &c->budget, err)) != MB_OK)
        goto fail;
    mb_connstate_opts cso = {.name = sname, .clock = opts->clock, .metrics = c->metrics};
    if ((st = mb_connstate_create(&cso, &c->state, err)) != MB_OK)
        goto fail;
    if ((st = mb_connstate_listener_add(c->state, state_listener, c, NULL, err)) != MB_OK)
        goto fail;
    char ql[192];
    snprintf(ql, sizeof ql, "%s,queue=\"retry\"", c->labels);
    mb_timerq_opts to = {.capacity = opts->retry_queue_max,
                         .clock = opts->clock,
                         .wake = retry_q_wake,
                         .wake_ctx = c,
                         .metrics = c->metrics,
                         .labels = ql};
    if ((st = mb_timerq_create(&to, &c->retry_q, err)) != MB_OK)
        goto fail;
    snprintf(ql, sizeof ql, "%s,queue=\"internal\"", c->labels);
    to.capacity = 1024;
    to.labels = ql;
    if ((st = mb_timerq_create(&to, &c->internal_q, err)) != MB_OK)
        goto fail;
    if (opts->poll_mode) {
        c->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (c->efd < 0) {
            st = mb_err_set(err, MB_EIO, "eventfd failed");
            goto fail;
        }
    }
    mb_connstate_transition(c->state, MB_CONN_CONNECTING, MB_OK, "starting", NULL);
    if ((st = mb__pool_start(c, err)) != MB_OK)
        goto fail;
    if ((st = mb__js_start(c, err)) != MB_OK)
        goto fail;
    mb__health_update_state(c, MB_ENOCONN, "pool started");
    if ((st = mb__health_start(c, err)) != MB_OK)
        goto fail;
    if ((st = mb__thread_start(c, err)) != MB_OK)
        goto fail;
    *out = c;
    return MB_OK;
fail:
    client_free(c);
    return st;
}

/* Wait (bounded) until nats.c has called its last callback for this client. */
static void wait_nats_done(mb_client *c, uint64_t max_ms)
{
    struct timespec dl;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    dl.tv_sec += (time_t)(max_ms / 1000u);
    dl.tv_nsec += (long)(max_ms % 1000u) * 1000000L;
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&c->lock);
    while (atomic_load(&c->conns_open) > 0 || atomic_load(&c->subs_alive) > 0) {
        if (pthread_cond_timedwait(&c->cond, &c->lock, &dl) != 0)
            break;
    }
    bool done = atomic_load(&c->conns_open) <= 0 && atomic_load(&c->subs_alive) <= 0;
    pthread_mutex_unlock(&c->lock);
    if (!done)
        mb__client_log(c, "nats.c did not finish closing in time");
}

void mb__client_sub_unref(mb__sub *s)
{
    if (atomic_fetch_sub(&s->refs, 1) != 1)
        return;
    mb__js_sub_free(s->js);
    mb__free(s->pattern);
    mb__free(s->queue);
    mb__free(s);
}

static void client_free(mb_client *c)
{
    pthread_mutex_lock(&c->lock);
    c->closing = true;
    pthread_mutex_unlock(&c->lock);
    mb__js_close(c);
    mb__pool_close(c);
    pthread_mutex_lock(&c->subs_lock);
    MB__SUBS_EACH(c, s)
    atomic_store(&s->active, false);
    pthread_mutex_unlock(&c->subs_lock);
    wait_nats_done(c, 10000);
    mb__thread_stop(c);
    if (c->state && mb_connstate_get(c->state) != MB_CONN_CLOSED)
        mb_connstate_transition(c->state, MB_CONN_CLOSED, MB_OK, "client destroyed", NULL);
    /* Messages still waiting for a retry are dead-lettered now. */
    mb_timerq_destroy(c->retry_q);
    c->retry_q = NULL;
    if (c->o.dlq)
        mb_dlq_flush(c->o.dlq, NULL); /* so that every async put's callback has run */
    mb_timerq_destroy(c->internal_q);
    mb__dq_free_all(c);
    MB__SUBS_EACH(c, s)
    {
        if (s->ns)
            natsSubscription_Destroy(s->ns);
        mb__client_sub_unref(s);
    }
    for (size_t i = 0; i < c->npool; i++) {
        mb__conn *k = &c->conns[i];
        if (k->nc)
            natsConnection_Close(k->nc); /* its read loop ends */
        mb__grave_bury(mb__grave_take(k));
        pthread_mutex_destroy(&k->grave_lock);
        if (k->nc)
            natsConnection_Destroy(k->nc);
        if (k->opts)
            natsOptions_Destroy(k->opts);
        pthread_rwlock_destroy(&k->lock);
    }
    mb_breaker_destroy(c->breaker);
    mb_retry_budget_destroy(c->budget);
    mb_connstate_destroy(c->state);
    mb_schema_destroy(c->schema);
    if (c->own_subjects)
        mb_subject_registry_destroy(c->subjects);
    if (c->own_metrics)
        mb_metrics_destroy(c->metrics);
    if (c->efd >= 0)
        close(c->efd);
    mb__js_free(c);
    mb__free(c->sub_slot);
    mb__free(c->sub_gen);
    mb__free(c->sub_free);
    mb__free(c->ring);
    mb__free(c->strs);
    pthread_mutex_destroy(&c->lock);
    pthread_cond_destroy(&c->cond);
    pthread_mutex_destroy(&c->dq_lock);
    pthread_mutex_destroy(&c->subs_lock);
    pthread_mutex_destroy(&c->rng_lock);
    mb__free(c);
}

void mb_client_destroy(mb_client *c)
{
    if (c)
        client_free(c);
}

/* ---- dead letters ---- */

static void dlq_done(void *ctx, uint64_t id, mb_status st)
{
    mb_client *c = ctx;
    if (st == MB_OK)
        return;
    mb_counter_add(c->m_dropped, 1);
    mb__event_push(c, MB_CLIENT_EV_DROPPED, -1, st, "DLQ entry %llu could not be written",
                   (unsigned long long)id);
}

mb_publish_disposition mb__client_dead_letter(mb_client *c, const char *subject, const void *data,
                                              size_t len, mb_status st, const char *msg,
                                              unsigned attempts, int64_t first_ms,
                                              const char *origin)
{
    bool consume = strcmp(origin, "consume") == 0;
    if (c->o.dlq) {
        mb_dlq_entry e = {.subject = subject,
                          .payload = len ? data : NULL,
                          .payload_len = len,
                          .error = st,
                          .error_message = msg,
                          .attempts = attempts,
                          .first_failure_ms = first_ms,
                          .origin = origin};
        mb_err derr = {0};
        uint64_t id = 0;
        mb_status ds = mb_dlq_put_async(c->o.dlq, &e, dlq_done, c, &id, &derr);
        if (ds == MB_OK) {
            mb_counter_add(consume ? c->m_dead_consume : c->m_dead_pub, 1);
            mb__event_push(c, MB_CLIENT_EV_DEAD_LETTERED, -1, st, "%s (%s, DLQ id %llu): %s",
                           subject, origin, (unsigned long long)id, msg);
            return MB_PUB_DEAD_LETTERED;
        }
        mb_counter_add(c->m_dropped, 1);
        mb__client_log(c, "message on %s lost: the DLQ refused it: %s", subject, derr.msg);
        mb__event_push(c, MB_CLIENT_EV_DROPPED, -1, st, "%s (%s): %s; DLQ refused it: %s", subject,
                       origin, msg, derr.msg);
        return MB_PUB_DROPPED;
    }
    mb_counter_add(c->m_dropped, 1);
    mb__event_push(c, MB_CLIENT_EV_DROPPED, -1, st, "%s (%s): %s", subject, origin, msg);
    return MB_PUB_DROPPED;
}

/* ---- publish ---- */

/* One attempt through breaker and pool. */
static mb_status attempt(mb_client *c, const char *subject, const void *data, size_t len,
                         uint32_t hash, unsigned attempt_no, mb_err *err)
{
    mb_breaker_ticket t;
    if (mb_breaker_acquire(c->breaker, &t) != MB_OK)
        return mb_err_set(err, MB_EBREAKER, "publish on %s: circuit breaker is open", subject);
    natsConnection *nc;
    mb__conn *k = mb__pool_get(c, hash, &nc);
    if (!k) {
        mb_breaker_record(c->breaker, &t, MB_BREAKER_FAILURE);
        pthread_mutex_lock(&c->lock);
        bool ever = c->ever_connected;
        pthread_mutex_unlock(&c->lock);
        return mb_err_set(err, MB_ENOCONN, "publish on %s: %s", subject,
                          ever ? "no live connection in the pool" : "not yet connected");
    }
    natsStatus s = c->js && mb__js_critical(c, subject)
                       ? mb__js_publish(c, k, nc, subject, data, len, attempt_no)
                       : natsConnection_Publish(nc, subject, data, (int)len);
    if (s == NATS_OK) {
        mb_counter_add(k->published, 1);
        mb__pool_put(k);
        mb_breaker_record(c->breaker, &t, MB_BREAKER_SUCCESS);
        mb_retry_budget_success(c->budget);
        return MB_OK;
    }
    mb_status st = mb__client_nats_err(s, err, "publish");
    mb__pool_put(k);
    mb_breaker_record(c->breaker, &t,
                      mb_status_retryable(st) ? MB_BREAKER_FAILURE : MB_BREAKER_IGNORED);
    return st;
}

static void retry_fire(void *arg, mb_timer_event ev);

/* A failed attempt of record r: schedule the next one, or dead-letter it.
 * Takes ownership of r. */
static mb_publish_disposition after_failure(mb_client *c, mb__retry *r)
{
    const char *why = NULL;
    uint64_t delay_ms = 0;
    pthread_mutex_lock(&c->lock);
    bool closing = c->closing;
    pthread_mutex_unlock(&c->lock);
    if (!mb_status_retryable(r->last_status))
        why = "not retryable";
    else if (closing)
        why = "client closing";
    else {
        uint64_t elapsed = (mb_clock_mono_ns(c->o.clock) - r->first_mono_ns) / 1000000u;
        pthread_mutex_lock(&c->rng_lock);
        mb_status ds = mb_retry_next_delay(&c->o.retry, r->attempts, r->prev_delay_ms, elapsed,
                                           &c->rng, &delay_ms);
        pthread_mutex_unlock(&c->rng_lock);
        if (ds != MB_OK)
            why = "retries exhausted";
        else if (!mb_retry_budget_acquire(c->budget, r->last_status))
            why = "retry budget exhausted";
        else if (mb_timerq_add(c->retry_q, delay_ms * 1000000u, retry_fire, r, NULL) != MB_OK) {
            /* The retry the budget paid for will not happen. */
            mb_retry_budget_refund(c->budget, r->last_status);
            why = "retry queue full";
        }
    }
    if (!why) {
        r->prev_delay_ms = delay_ms;
        mb_counter_add(c->m_retries, 1);
        return MB_PUB_RETRYING;
    }
    char msg[MB_ERR_MSG_MAX + 64];
    snprintf(msg, sizeof msg, "%s (%s after %u attempts)", r->last_msg, why, r->attempts);
    mb_publish_disposition d =
        mb__client_dead_letter(c, r->subject, r->data, r->len, r->last_status, msg, r->attempts,
                               r->first_failure_ms, "publish");
    mb__free(r);
    return d;
}

static void retry_fire(void *arg, mb_timer_event ev)
{
    mb__retry *r = arg;
    mb_client *c = r->c;
    if (ev == MB_TIMER_CANCELLED) {
        char msg[MB_ERR_MSG_MAX + 64];
        snprintf(msg, sizeof msg, "%s (client closed before retry %u)", r->last_msg,
                 r->attempts + 1);
        mb__client_dead_letter(c, r->subject, r->data, r->len, r->last_status, msg, r->attempts,
                               r->first_failure_ms, "publish");
        mb__free(r);
        return;
    }
    mb_err e = {0};
    mb_status st = attempt(c, r->subject, r->data, r->len, r->hash, r->attempts + 1, &e);
    if (st == MB_OK) {
        mb_counter_add(c->m_retried_ok, 1);
        mb__free(r);
        return;
    }
    r->attempts++;
    r->last_status = st;
    snprintf(r->last_msg, sizeof r->last_msg, "%s", e.msg);
    after_failure(c, r);
}

/* A failed attempt of a message not yet in a retry record: copy it into one
 * and schedule its next attempt, or dead-letter it. */
static mb_publish_disposition failed(mb_client *c, const char *subject, size_t slen,
                                     const void *data, size_t len, uint32_t hash, mb_status st,
                                     const char *emsg, unsigned attempts)
{
    mb__retry *r = mb__malloc(sizeof *r + len + slen + 1);
    if (!r)
        return mb__client_dead_letter(c, subject, data, len, st, emsg, attempts, 0, "publish");
    memset(r, 0, sizeof *r);
    r->c = c;
    r->hash = hash;
    r->attempts = attempts;
    r->first_mono_ns = mb_clock_mono_ns(c->o.clock);
    r->first_failure_ms = (int64_t)(mb_clock_wall_ns(c->o.clock) / 1000000u);
    r->last_status = st;
    snprintf(r->last_msg, sizeof r->last_msg, "%s", emsg);
    r->len = len;
    if (len)
        memcpy(r->data, data, len);
    r->subject = r->data + len;
    memcpy(r->subject, subject, slen + 1);
    return after_failure(c, r);
}

/* The hash of a publish's ordering key that picks its pool connection (and
 * its retries'): eight bytes at a time, where mb__pool_hash takes one. Only
 * publishes use it, so equal keys always meet the same connection. */
static uint32_t key_hash(const char *s, size_t len)
{
    return mb__bytes_hash(s, len);
}

/* mb_err_clear, inline, for the publish path's own error buffers. */
static inline void err_init(mb_err *e)
{
    e->code = MB_OK;
    e->msg[0] = '\0';
}

static void set_disp(mb_publish_disposition *d, mb_publish_disposition v)
{
    if (d)
        *d = v;
}

/* The pipeline. `encoded` is MB_SCHEMA_AUTO for caller bytes, which are
 * validated against the subject's schema; for the output of this client's own
 * encoder it names the encoder's kind: the encoder already applied every rule
 * with the same mb_schema, so only the kind has to match the subject's. */
static mb_status publish_impl(mb_client *c, const char *subject, const void *data, size_t len,
                              mb_schema_kind encoded, const mb_publish_opts *popts,
                              mb_publish_disposition *disp, mb_err *err)
{
    set_disp(disp, MB_PUB_REFUSED);
    if (!c || !subject || (!data && len))
        return mb_err_set(err, MB_EINVAL, "NULL client, subject or data");
    size_t slen = strlen(subject);
    mb_subject_info info;
    mb_status st = mb_subject_check(c->subjects, subject, slen, &info, NULL, err);
    if (st == MB_OK && len > c->max_payload)
        st = mb_err_set(err, MB_ETOOBIG, "payload of %zu bytes exceeds %zu", len, c->max_payload);
    if (st == MB_OK && encoded == MB_SCHEMA_AUTO)
        st = mb_schema_validate(c->schema, info.schema, data ? data : "", len, NULL, err);
    else if (st == MB_OK && encoded != info.schema)
        st = mb_err_set(err, MB_ESCHEMA, "a %s message cannot go to %s (pattern %s, schema %s)",
                        mb_schema_kind_name(encoded), subject, info.name,
                        mb_schema_kind_name(info.schema));
    if (st != MB_OK) {
        mb_counter_add(c->m_refused, 1);
        return st;
    }
    const char *key = popts && popts->ordering_key ? popts->ordering_key : subject;
    uint32_t hash = key_hash(key, key == subject ? slen : strlen(key));
    mb_err e;
    err_init(&e); /* not = {0}: that clears all 260 bytes */
    st = attempt(c, subject, data, len, hash, 1, &e);
    if (st == MB_OK) {
        set_disp(disp, MB_PUB_SENT);
        return MB_OK;
    }
    mb_counter_add(c->m_failed, 1);
    mb_err_set(err, st, "%s", e.msg);
    if (popts && popts->no_retry) {
        set_disp(disp, MB_PUB_DROPPED); /* the caller was told: no event */
        return st;
    }
    set_disp(disp, failed(c, subject, slen, data, len, hash, st, e.msg, 1));
    return st;
}

mb_publish_disposition mb__client_publish_failed(mb_client *c, const char *subject,
                                                 const void *data, size_t len, mb_status st,
                                                 const char *msg, unsigned attempts)
{
    size_t slen = strlen(subject);
    return failed(c, subject, slen, data, len, key_hash(subject, slen), st, msg,
                  attempts ? attempts : 1);
}

mb_status mb_client_publish(mb_client *c, const char *subject, const void *data, size_t len,
                            const mb_publish_opts *popts, mb_publish_disposition *disp, mb_err *err)
{
    return publish_impl(c, subject, data, len, MB_SCHEMA_AUTO, popts, disp, err);
}

typedef mb_status (*encode_fn)(const mb_schema *, const void *, char *, size_t, size_t *, mb_err *);

static mb_status enc_chat(const mb_schema *s, const void *m, char *b, size_t cap, size_t *n,
                          mb_err *e)
{
    return mb_chat_encode(s, m, b, cap, n, e);
}

static mb_status enc_event(const mb_schema *s, const void *m, char *b, size_t cap, size_t *n,
                           mb_err *e)
{
    return mb_event_encode(s, m, b, cap, n, e);
}

static mb_status publish_typed(mb_client *c, const char *subject, const void *msg, encode_fn enc,
                               mb_schema_kind kind, const mb_publish_opts *popts,
                               mb_publish_disposition *disp, mb_err *err)
{
    set_disp(disp, MB_PUB_REFUSED);
    if (!c || !subject || !msg)
        return mb_err_set(err, MB_EINVAL, "NULL client, subject or message");
    char stackbuf[4096];
    size_t n = 0;
    mb_err e;
    err_init(&e); /* not = {0}: that clears all 260 bytes */
    mb_status st = enc(c->schema, msg, stackbuf, sizeof stackbuf, &n, &e);
    if (st == MB_OK)
        return publish_impl(c, subject, stackbuf, n, kind, popts, disp, err);
    if (st != MB_ENOSPC) {
        mb_counter_add(c->m_refused, 1);
        return mb_err_set(err, st, "%s", e.msg);
    }
    char *heap = mb__malloc(n + 1);
    if (!heap)
        return mb_err_set(err, MB_ENOMEM, "out of memory");
    mb_err_clear(&e);
    st = enc(c->schema, msg, heap, n + 1, &n, &e);
    if (st == MB_OK)
        st = publish_impl(c, subject, heap, n, kind, popts, disp, err);
    else
        mb_err_set(err, st, "%s", e.msg);
    mb__free(heap);
    return st;
}

mb_status mb_client_publish_chat(mb_client *c, const char *subject, const mb_chat_msg *msg,
                                 const mb_publish_opts *popts, mb_publish_disposition *disp,
                                 mb_err *err)
{
    return publish_typed(c, subject, msg, enc_chat, MB_SCHEMA_CHAT, popts, disp, err);
}

mb_status mb_client_publish_event(mb_client *c, const char *subject, const mb_event_msg *msg,
                                  const mb_publish_opts *popts, mb_publish_disposition *disp,
                                  mb_err *err)
{
    return publish_typed(c, subject, msg, enc_event, MB_SCHEMA_EVENT, popts, disp, err);
}

mb_status mb_client_flush(mb_client *c, uint64_t timeout_ms, mb_err *err)
{
    if (!c || timeout_ms == 0)
        return mb_err_set(err, MB_EINVAL, "NULL client or zero timeout");
    uint64_t deadline = mb_clock_mono_ns(NULL) + timeout_ms * 1000000u;
    size_t flushed = 0;
    for (size_t i = 0; i < c->npool; i++) {
        mb__conn *k = &c->conns[i];
        pthread_rwlock_rdlock(&k->lock);
        natsConnection *nc = k->nc;
        if (!nc || natsConnection_Status(nc) != NATS_CONN_STATUS_CONNECTED) {
            pthread_rwlock_unlock(&k->lock);
            continue;
        }
        uint64_t now = mb_clock_mono_ns(NULL);
        int64_t left = now < deadline ? (int64_t)((deadline - now) / 1000000u) : 0;
        natsStatus s = natsConnection_FlushTimeout(nc, left > 0 ? left : 1);
        mb_status st = s == NATS_OK ? MB_OK : mb__client_nats_err(s, err, "flush");
        pthread_rwlock_unlock(&k->lock);
        if (st != MB_OK)
            return st;
        flushed++;
    }
    if (!flushed)
        return mb_err_set(err, MB_ENOCONN, "flush: no live connection");
    return MB_OK;
}

/* ---- subscribe ---- */

void mb__client_deliver(mb_client *c, mb__sub *s, natsMsg *msg, const mb_subject_info *info)
{
    const char *reply = natsMsg_GetReply(msg);
    const char *data = natsMsg_GetData(msg);
    mb_msg m = {.subject = natsMsg_GetSubject(msg),
                .reply = reply && *reply ? reply : NULL,
                .data = data ? data : "",
                .len = (size_t)natsMsg_GetDataLength(msg),
                .schema = info->schema,
                .pattern = info->name,
                .deliveries = s->js ? mb__js_deliveries(msg) : 0};
    mb_counter_add(c->m_delivered, 1);
    mb_handled h = s->fn(s->ctx, &m);
    switch (h) {
    case MB_HANDLED_OK:
        mb_counter_add(c->m_handled_ok, 1);
        break;
    case MB_HANDLED_RETRY:
        mb_counter_add(c->m_handled_retry, 1);
        break;
    default:
        mb_counter_add(c->m_handled_fail, 1);
        break;
    }
    if (s->js)
        mb__js_settle(c, s, msg, h, m.deliveries);
}

/* ---- the subscription table (c->subs_lock held) ---- */

/* Take a slot for a new subscription and give it a fresh generation. */
static bool slot_reserve(mb_client *c, uint32_t *slot)
{
    if (c->sub_nfree) {
        *slot = c->sub_free[--c->sub_nfree];
    } else {
        if (c->sub_used == c->sub_cap) {
            uint32_t cap = c->sub_cap ? c->sub_cap * 2 : 64;
            mb__sub **sl = mb__realloc(c->sub_slot, cap * sizeof *sl);
            if (sl)
                c->sub_slot = sl;
            uint32_t *gen = sl ? mb__realloc(c->sub_gen, cap * sizeof *gen) : NULL;
            if (gen)
                c->sub_gen = gen;
            uint32_t *fr = gen ? mb__realloc(c->sub_free, cap * sizeof *fr) : NULL;
            if (!fr)
                return false; /* what grew stays, unused: the next try reuses it */
            c->sub_free = fr;
            c->sub_cap = cap;
        }
        *slot = c->sub_used++;
        c->sub_gen[*slot] = 0;
    }
    c->sub_slot[*slot] = NULL;
    if (++c->sub_gen[*slot] == 0)
        c->sub_gen[*slot] = 1; /* ids are never 0 */
    return true;
}

static void slot_release(mb_client *c, uint32_t slot)
{
    c->sub_slot[slot] = NULL;
    c->sub_free[c->sub_nfree++] = slot;
}

static mb_sub_id slot_id(const mb_client *c, uint32_t slot)
{
    return (uint64_t)c->sub_gen[slot] << 32 | slot;
}

/* The listed subscription with this id, taken out of the table, or NULL. */
static mb__sub *slot_take(mb_client *c, mb_sub_id id)
{
    uint32_t slot = (uint32_t)id;
    if (slot >= c->sub_used || c->sub_gen[slot] != (uint32_t)(id >> 32) || !c->sub_slot[slot])
        return NULL;
    mb__sub *s = c->sub_slot[slot];
    slot_release(c, slot);
    return s;
}

static mb_status subscribe(mb_client *c, const char *pattern, const char *queue_group, bool core,
                           mb_msg_handler fn, void *ctx, mb_sub_id *id, mb_err *err)
{
    if (!c || !pattern || !fn)
        return mb_err_set(err, MB_EINVAL, "NULL client, pattern or handler");
    size_t plen = strlen(pattern);
    mb_status st = mb_subject_check_sub(c->subjects, pattern, plen, NULL, err);
    if (st != MB_OK)
        return st;
    if (queue_group && (!*queue_group || strpbrk(queue_group, " \t\r\n")))
        return mb_err_set(err, MB_EINVAL, "queue group must be non-empty, without whitespace");
    mb__sub *s = mb__calloc(1, sizeof *s);
    if (!s)
        return mb_err_set(err, MB_ENOMEM, "out of memory");
    s->c = c;
    s->fn = fn;
    s->ctx = ctx;
    s->pattern = mb__strdup(pattern);
    s->queue = queue_group ? mb__strdup(queue_group) : NULL;
    atomic_store(&s->refs, 1);
    atomic_store(&s->active, true);
    if (!s->pattern || (queue_group && !s->queue)) {
        mb__client_sub_unref(s);
        return mb_err_set(err, MB_ENOMEM, "out of memory");
    }
    uint32_t slot;
    pthread_mutex_lock(&c->subs_lock);
    bool reserved = slot_reserve(c, &slot);
    pthread_mutex_unlock(&c->subs_lock);
    if (!reserved) {
        mb__client_sub_unref(s);
        return mb_err_set(err, MB_ENOMEM, "out of memory");
    }
    if (!core && c->js && mb__js_critical(c, pattern)) {
        /* A durable pull consumer with its own fetch thread (client_js.c). */
        if ((st = mb__js_subscribe(c, s, err)) != MB_OK) {
            goto unreserve;
        }
        goto listed;
    }
    natsConnection *nc;
    mb__conn *k = mb__pool_get(c, mb__pool_hash(pattern, plen), &nc);
    if (!k) {
        st = mb_err_set(err, MB_ENOCONN, "subscribe %s: no live connection", pattern);
        goto unreserve;
    }
    s->conn = k->index;
    natsStatus ns =
        queue_group ? natsConnection_QueueSubscribe(&s->ns, nc, pattern, queue_group, mb__msg_cb, s)
                    : natsConnection_Subscribe(&s->ns, nc, pattern, mb__msg_cb, s);
    if (ns != NATS_OK) {
        st = mb__client_nats_err(ns, err, "subscribe");
        mb__pool_put(k);
        goto unreserve;
    }
    mb__pool_put(k);
    natsSubscription_SetPendingLimits(s->ns, c->o.sub_pending_msgs, c->o.sub_pending_bytes);
    atomic_fetch_add(&s->refs, 1);
    atomic_fetch_add(&c->subs_alive, 1);
    if (natsSubscription_SetOnCompleteCB(s->ns, mb__sub_complete_cb, s) != NATS_OK) {
        atomic_fetch_sub(&c->subs_alive, 1);
        atomic_fetch_sub(&s->refs, 1);
    }
listed:
    pthread_mutex_lock(&c->subs_lock);
    s->id = slot_id(c, slot);
    c->sub_slot[slot] = s;
    pthread_mutex_unlock(&c->subs_lock);
    if (id)
        *id = s->id;
    return MB_OK;
unreserve:
    pthread_mutex_lock(&c->subs_lock);
    slot_release(c, slot);
    pthread_mutex_unlock(&c->subs_lock);
    mb__client_sub_unref(s);
    return st;
}

mb_status mb_client_subscribe(mb_client *c, const char *pattern, const char *queue_group,
                              mb_msg_handler fn, void *ctx, mb_sub_id *id, mb_err *err)
{
    return subscribe(c, pattern, queue_group, false, fn, ctx, id, err);
}

mb_status mb_client_subscribe_core(mb_client *c, const char *pattern, const char *queue_group,
                                   mb_msg_handler fn, void *ctx, mb_sub_id *id, mb_err *err)
{
    return subscribe(c, pattern, queue_group, true, fn, ctx, id, err);
}

mb_status mb_client_unsubscribe(mb_client *c, mb_sub_id id, mb_err *err)
{
    if (!c)
        return mb_err_set(err, MB_EINVAL, "NULL client");
    pthread_mutex_lock(&c->subs_lock);
    mb__sub *s = slot_take(c, id);
    pthread_mutex_unlock(&c->subs_lock);
    if (!s)
        return mb_err_set(err, MB_ENOTFOUND, "no subscription with id %llu",
                          (unsigned long long)id);
    atomic_store(&s->active, false);
    if (s->js) {
        mb_status jst = mb__js_unsubscribe(c, s, err); /* deletes the durable consumer */
        mb__client_sub_unref(s);
        return jst;
    }
    natsStatus ns = natsSubscription_Unsubscribe(s->ns);
    mb_status st = MB_OK;
    /* A subscription whose connection closed is gone anyway: not an error. */
    if (ns != NATS_OK && ns != NATS_CONNECTION_CLOSED && ns != NATS_INVALID_SUBSCRIPTION)
        st = mb__client_nats_err(ns, err, "unsubscribe");
    mb__grave_put(&c->conns[s->conn], s->ns); /* destroyed after a round trip */
    s->ns = NULL;
    mb__client_sub_unref(s);
    return st;
}

/* ---- request / respond ---- */

mb_status mb_client_request(mb_client *c, const char *subject, const void *data, size_t len,
                            uint64_t timeout_ms, mb_reply **reply, mb_err *err)
{
    if (reply)
        *reply = NULL;
    if (!c || !subject || (!data && len) || !reply || timeout_ms == 0)
        return mb_err_set(err, MB_EINVAL, "NULL argument or zero timeout");
    size_t slen = strlen(subject);
    mb_subject_info info;
    mb_status st = mb_subject_check(c->subjects, subject, slen, &info, NULL, err);
    if (st == MB_OK && len > c->max_payload)
        st = mb_err_set(err, MB_ETOOBIG, "payload of %zu bytes exceeds %zu", len, c->max_payload);
    if (st == MB_OK)
        st = mb_schema_validate(c->schema, info.schema, data ? data : "", len, NULL, err);
    if (st != MB_OK) {
        mb_counter_add(c->m_refused, 1);
        return st;
    }
    natsConnection *nc;
    mb__conn *k = mb__pool_get(c, mb__pool_hash(subject, slen), &nc);
    if (!k)
        return mb_err_set(err, MB_ENOCONN, "request on %s: no live connection", subject);
    natsMsg *rep = NULL;
    natsStatus ns = natsConnection_Request(&rep, nc, subject, data, (int)len, (int64_t)timeout_ms);
    if (ns == NATS_OK)
        mb_counter_add(k->published, 1);
    mb__pool_put(k);
    if (ns == NATS_TIMEOUT)
        return mb_err_set(err, MB_ETIMEOUT, "request on %s: no reply within %llu ms", subject,
                          (unsigned long long)timeout_ms);
    if (ns == NATS_NO_RESPONDERS)
        return mb_err_set(err, MB_ENORESPONDERS, "request on %s: no responders", subject);
    if (ns != NATS_OK)
        return mb__client_nats_err(ns, err, "request");
    size_t n = (size_t)natsMsg_GetDataLength(rep);
    mb_reply *r = mb__malloc(sizeof *r + n + 1);
    if (!r) {
        natsMsg_Destroy(rep);
        return mb_err_set(err, MB_ENOMEM, "out of memory");
    }
    r->data = (char *)(r + 1);
    r->len = n;
    if (n)
        memcpy(r->data, natsMsg_GetData(rep), n);
    r->data[n] = '\0';
    natsMsg_Destroy(rep);
    *reply = r;
    return MB_OK;
}

void mb_client_reply_free(mb_reply *r)
{
    mb__free(r);
}

mb_status mb_client_respond(mb_client *c, const mb_msg *msg, const void *data, size_t len,
                            mb_err *err)
{
    if (!c || !msg || (!data && len))
        return mb_err_set(err, MB_EINVAL, "NULL argument");
    if (!msg->reply)
        return mb_err_set(err, MB_EINVAL, "message on %s has no reply subject", msg->subject);
    natsConnection *nc;
    mb__conn *k = mb__pool_get(c, mb__pool_hash(msg->reply, strlen(msg->reply)), &nc);
    if (!k)
        return mb_err_set(err, MB_ENOCONN, "respond: no live connection");
    natsStatus ns = natsConnection_Publish(nc, msg->reply, data, (int)len);
    mb_status st = ns == NATS_OK ? MB_OK : mb__client_nats_err(ns, err, "respond");
    if (st == MB_OK)
        mb_counter_add(k->published, 1);
    mb__pool_put(k);
    return st;
}

/* ---- listeners, health, metrics ---- */

mb_status mb_client_listen(mb_client *c, mb_client_listener fn, void *ctx, mb_err *err)
{
    if (!c || !fn)
        return mb_err_set(err, MB_EINVAL, "NULL client or listener");
    pthread_mutex_lock(&c->lock);
    if (c->nlisteners == 16) {
        pthread_mutex_unlock(&c->lock);
        return mb_err_set(err, MB_ELIMIT, "at most 16 listeners");
    }
    c->listeners[c->nlisteners].fn = fn;
    c->listeners[c->nlisteners].ctx = ctx;
    c->nlisteners++;
    pthread_mutex_unlock(&c->lock);
    return MB_OK;
}

void mb_client_health_get(mb_client *c, mb_client_health *out)
{
    memset(out, 0, sizeof *out);
    if (!c)
        return;
    mb_connstate_stats cs;
    mb_connstate_stats_get(c->state, &cs);
    out->state = cs.state;
    out->pool_size = c->npool;
    out->live = mb__pool_live(c);
    out->retry_pending = c->retry_q ? mb_timerq_size(c->retry_q) : 0;
    pthread_mutex_lock(&c->lock);
    out->last_rtt_us = c->last_rtt_us;
    out->last_error = c->last_error;
    snprintf(out->last_error_msg, sizeof out->last_error_msg, "%s", c->last_error_msg);
    pthread_mutex_unlock(&c->lock);
    if (out->last_error == MB_OK && cs.last_error != MB_OK) {
        out->last_error = cs.last_error;
        snprintf(out->last_error_msg, sizeof out->last_error_msg, "%s", cs.last_error_msg);
    }
    /* nats.c 3.4 does not expose the server's version: server_version stays "". */
}

mb_status mb_client_metrics(mb_client *c, char **out, size_t *len, mb_err *err)
{
    if (!c || !out)
        return mb_err_set(err, MB_EINVAL, "NULL client or out");
    mb__pool_live(c); /* refresh the gauges */
    return mb_metrics_format(c->metrics, out, len, err);
}
