/* SPDX-License-Identifier: MIT */
/*
 * client: the NATS service of libmudbus on nats.c: a pool of connections with
 * health checks and an explicit state machine, a publish pipeline (subject
 * check, schema check, breaker, pooled publish, scheduled retries within a
 * budget, dead letter queue), validated subscriptions, request/reply, events,
 * and a poll mode for single-threaded select() loops.
 *
 * Publishing. mb_client_publish checks the subject (it must match a
 * registered pattern) and the payload (against the pattern's schema) and
 * refuses at once, never retrying, what fails either. It then asks the
 * breaker, picks a connection by a hash of the ordering key (default: the
 * subject, so one subject's messages keep their order) and hands the message
 * to nats.c. A retryable failure (see mb_status_retryable) is retried on the
 * client's timer queue with backoff while the retry budget allows; when the
 * retries are exhausted (or the budget or the timer queue refuses), the
 * message goes to the DLQ with its error and attempt count, or, without a
 * DLQ, is reported as an MB_CLIENT_EV_DROPPED event. Nothing fails silently:
 * the caller learns the disposition of every call.
 *
 * Delivery. Handlers run either on library threads (default; handlers must be
 * thread-safe; one subscription's messages arrive in order) or, in poll mode,
 * on the thread that calls mb_client_dispatch() when mb_client_fd() is
 * readable. Every delivered message is schema-validated before its handler
 * sees it; an invalid one goes to the DLQ (origin "consume") and is counted.
 *
 * Threads: every function may be called from any thread unless said
 * otherwise. nats.c's callbacks never run user code: they enqueue events that
 * a client thread (or mb_client_dispatch in poll mode) delivers to listeners.
 * DESIGN: the thread model is described at the top of src/lib/client.c.
 */
#ifndef MUDBUS_CLIENT_H
#define MUDBUS_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mudbus/breaker.h"
#include "mudbus/clock.h"
#include "mudbus/connstate.h"
#include "mudbus/dlq.h"
#include "mudbus/metrics.h"
#include "mudbus/retry.h"
#include "mudbus/schema.h"
#include "mudbus/status.h"
#include "mudbus/subject.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mb_client mb_client;

#define MB_CLIENT_MAX_SERVERS 16
#define MB_CLIENT_MAX_POOL    32

typedef struct mb_client_tls {
    bool enabled;          /* also implied by a tls:// URL */
    const char *ca_file;   /* PEM; NULL: the system's CAs */
    const char *cert_file; /* client certificate (PEM), with key_file; may be NULL */
    const char *key_file;
    const char *hostname; /* expected server name; NULL: from the URL */
    bool skip_verify;     /* DANGEROUS: no certificate verification; default false */
} mb_client_tls;

typedef struct mb_client_auth {
    const char *user, *password; /* both or neither */
    const char *token;
    const char *nkey_seed_file; /* file holding an nkey seed (SU...), with nkey_public */
    const char *nkey_public;    /* the seed's public key (U...): nats.c cannot derive it */
    const char *creds_file;     /* JWT + seed .creds file */
} mb_client_auth;

#define MB_CLIENT_MAX_CRITICAL 16

/* JetStream for critical subjects (see "JetStream" below). Strings are
 * borrowed for the call to mb_client_create. Only nats-server 2.9 features
 * are used. */
typedef struct mb_client_js_opts {
    bool enabled; /* default false: every subject goes through core NATS */
    const char *critical_subjects[MB_CLIENT_MAX_CRITICAL]; /* subscription-style patterns;
                                                            * default chat.whisper.player.*,
                                                            * chat.system, mutes.changed.* */
    size_t ncritical;
    const char *stream;              /* default "MUDBUS_CRITICAL" */
    bool memory_storage;             /* default false: file storage */
    uint64_t max_age_ms;             /* default 24 h */
    uint64_t duplicate_window_ms;    /* Nats-Msg-Id dedup window; default 2 min */
    uint64_t ack_wait_ms;            /* consumer ack wait; default 30 s */
    unsigned max_deliver;            /* consumer deliveries before the DLQ; default 5 */
    const char *durable_prefix;      /* default "mudbus_<client name>" (no '.') */
    unsigned fetch_batch;            /* messages per pull; default 64 */
    uint64_t fetch_timeout_ms;       /* one pull's wait (bounds unsubscribe latency); default 500 */
    uint64_t publish_ack_timeout_ms; /* async publish ack wait; default 5000 */
    int64_t max_pending;             /* async publishes in flight per connection; default 4096 */
} mb_client_js_opts;

/* Client options. Fill with mb_client_opts_default, then change what you need.
 * Strings are borrowed for the call to mb_client_create. */
typedef struct mb_client_opts {
    const char *servers[MB_CLIENT_MAX_SERVERS]; /* nats:// or tls:// URLs; default
                                                 * nats://127.0.0.1:4222 */
    size_t nservers;
    const char *name; /* client name shown by the server; default "mudbus" */
    size_t pool_size; /* connections; default 2; 1..MB_CLIENT_MAX_POOL */
    mb_client_tls tls;
    mb_client_auth auth;
    int max_reconnect;            /* per connection; -1 unlimited (default) */
    uint64_t reconnect_wait_ms;   /* default 2000 */
    uint64_t reconnect_jitter_ms; /* default 100 (TLS: 1000) */
    size_t reconnect_buf_bytes;   /* buffered while reconnecting; default 8 MiB */
    size_t io_buf_bytes;          /* nats.c's read and write buffer per connection
                                   * (natsOptions_SetIOBufSize): publishes reach the socket in
                                   * writes of up to this size; default 128 KiB (a fast
                                   * publisher spends a fifth less CPU per message than with
                                   * nats.c's own 32 KiB, bench_client); 0: nats.c's own;
                                   * else 1 KiB..16 MiB */
    uint64_t connect_timeout_ms;  /* default 2000 */
    bool start_disconnected;      /* when no connection is up at start, succeed anyway and keep
                                   * trying in the background (publishes fail with MB_ENOCONN
                                   * "not yet connected" until one is up); default false */
    uint64_t health_interval_ms;  /* default 5000 */
    uint64_t health_timeout_ms;   /* flush round trip bound; default 500 */
    unsigned health_failures;     /* consecutive failures to degraded; default 3 */
    mb_retry_policy retry;
    mb_retry_budget_opts budget;   /* its metrics field is ignored: the client's is used */
    mb_breaker_opts breaker;       /* likewise */
    size_t retry_queue_max;        /* messages waiting for a retry; default 65536 */
    mb_dlq *dlq;                   /* borrowed; NULL: exhausted messages are reported as
                                    * MB_CLIENT_EV_DROPPED events */
    bool poll_mode;                /* deliver on the mb_client_dispatch thread */
    bool shared_delivery;          /* nats.c delivers every subscription's messages on one
                                    * shared thread (natsOptions_UseGlobalMessageDelivery)
                                    * instead of one thread per subscription; use it with
                                    * many subscriptions (a gateway has one per player) and
                                    * in poll mode, where handlers only enqueue; default false */
    bool send_asap;                /* publishes are written to the socket by the publishing
                                    * thread at once (natsOptions_SetSendAsap) instead of by
                                    * nats.c's flusher thread: lower latency, one write per
                                    * publish; default false */
    bool no_echo;                  /* the server does not deliver a connection's own
                                    * publishes to that connection's subscriptions
                                    * (natsOptions_SetNoEcho). A publish and a subscription
                                    * of this client meet on one connection only when
                                    * pool_size is 1: with a larger pool some of the client's
                                    * own messages still come back. Default false */
    size_t dispatch_queue_max;     /* poll mode: pending deliveries; default 65536; a delivery
                                    * that finds it full goes to the DLQ (MB_ELIMIT) */
    int sub_pending_msgs;          /* per subscription, in nats.c before the handler runs;
                                    * past it nats.c drops messages and the client reports
                                    * MB_CLIENT_EV_SLOW_CONSUMER; default 65536 */
    int sub_pending_bytes;         /* likewise in bytes; default 64 MiB */
    size_t max_payload;            /* default: the schema's max_bytes, at most the server's */
    mb_client_js_opts js;          /* JetStream for critical subjects (see below) */
    mb_subject_registry *subjects; /* borrowed; NULL: the client creates one */
    mb_metrics *metrics;           /* borrowed; NULL: the client creates one */
    uint32_t timing_sample;        /* time one call in N in the timing histograms of `metrics`
                                    * (mb_metrics_set_timing_sample: it applies to the whole
                                    * registry); a power of two up to 1024; default 16; 0 leaves
                                    * the registry as it is */
    const mb_clock *clock;         /* NULL: system */
    void (*log)(void *log_ctx, const char *line); /* one line, no newline; NULL: silent */
    void *log_ctx;
} mb_client_opts;

void mb_client_opts_default(mb_client_opts *o);

/* Create the client and connect its pool. Succeeds when at least one
 * connection is up (the others are repaired in the background; how many are
 * up is in mb_client_health), or, with start_disconnected, at once.
 * MB_ENOCONN when no server could be reached (the message names the servers
 * and the last error), MB_EAUTH, MB_ETLS, MB_EINVAL for bad options,
 * MB_ENOMEM. Nothing is left running on error. */
mb_status mb_client_create(const mb_client_opts *opts, mb_client **out, mb_err *err);

/* Drain subscriptions, flush pending publishes (bounded by 5 s), dead-letter
 * messages still waiting for a retry, close every connection and free the
 * client. NULL does nothing. No other call may be running or start. */
void mb_client_destroy(mb_client *c);

/* ---- publish ---- */

typedef enum mb_publish_disposition {
    MB_PUB_SENT = 0,      /* handed to nats.c (MB_OK) */
    MB_PUB_REFUSED,       /* invalid subject or payload: not retried, not dead-lettered */
    MB_PUB_RETRYING,      /* failed; a retry is scheduled */
    MB_PUB_DEAD_LETTERED, /* failed; stored in the DLQ */
    MB_PUB_DROPPED        /* failed; no DLQ and no retry possible (event reported) */
} mb_publish_disposition;

typedef struct mb_publish_opts {
    const char *ordering_key; /* NULL: the subject */
    bool no_retry;            /* fail fast: no retry and no DLQ (the caller handles it) */
} mb_publish_opts;

/* Publish raw JSON bytes on `subject`. `popts` may be NULL. Returns MB_OK when
 * sent; otherwise the failure (MB_ESUBJECT, MB_ESCHEMA, MB_EJSON, MB_ETOOBIG:
 * refused; MB_ENOCONN, MB_ETIMEOUT, MB_EBREAKER, ...: see *disp, may be NULL,
 * for what happened to the message). */
mb_status mb_client_publish(mb_client *c, const char *subject, const void *data, size_t len,
                            const mb_publish_opts *popts, mb_publish_disposition *disp,
                            mb_err *err);

/* Encode a typed message (schema.h) and publish it as above. */
mb_status mb_client_publish_chat(mb_client *c, const char *subject, const mb_chat_msg *msg,
                                 const mb_publish_opts *popts, mb_publish_disposition *disp,
                                 mb_err *err);
mb_status mb_client_publish_event(mb_client *c, const char *subject, const mb_event_msg *msg,
                                  const mb_publish_opts *popts, mb_publish_disposition *disp,
                                  mb_err *err);

/* Wait until everything published so far has reached the server (or
 * timeout_ms passed: MB_ETIMEOUT) on every live connection. */
mb_status mb_client_flush(mb_client *c, uint64_t timeout_ms, mb_err *err);

/* ---- subscribe and request ---- */

/* A delivered message, borrowed for the handler's duration. */
typedef struct mb_msg {
    const char *subject;
    const char *reply; /* NULL when the sender expects no reply */
    const char *data;  /* validated JSON, NUL-terminated (not counted in len) */
    size_t len;
    mb_schema_kind schema;
    const char *pattern; /* name of the subject's pattern */
    uint64_t deliveries; /* JetStream: this delivery's number (1: first); 0 on core NATS */
} mb_msg;

/* What a handler made of a message (JetStream subscriptions ack by it; core
 * subscriptions count it). */
typedef enum mb_handled {
    MB_HANDLED_OK = 0, /* done */
    MB_HANDLED_RETRY,  /* failed for now: redeliver later (JetStream: nak with delay) */
    MB_HANDLED_FAIL    /* failed for good: dead-letter it (JetStream: term) */
} mb_handled;

typedef mb_handled (*mb_msg_handler)(void *ctx, const mb_msg *msg);

typedef uint64_t mb_sub_id; /* never 0 */

/* Subscribe `pattern` (checked by the breadth rules) on every live connection
 * where it is needed, optionally in a queue group. The handler runs on a
 * library thread or, in poll mode, in mb_client_dispatch. MB_ESUBJECT for a
 * refused pattern (the message names the rule), MB_ENOCONN. */
mb_status mb_client_subscribe(mb_client *c, const char *pattern, const char *queue_group,
                              mb_msg_handler fn, void *ctx, mb_sub_id *id, mb_err *err);

/* As mb_client_subscribe, but a plain NATS subscription even when the pattern
 * is critical (JetStream): it sees what is published from now on, every such
 * subscriber sees every message, nothing is acknowledged or redelivered and
 * no durable consumer is made. For a cache that is kept right another way
 * too, e.g. a gateway's mute cache (reloaded from its store after a NATS
 * outage), where each process must see every change. */
/* Whether a client with options `o` publishes `subject` (a subject, or a
 * pattern: then whether all it matches is critical) through JetStream. */
bool mb_client_opts_critical(const mb_client_opts *o, const char *subject);

mb_status mb_client_subscribe_core(mb_client *c, const char *pattern, const char *queue_group,
                                   mb_msg_handler fn, void *ctx, mb_sub_id *id, mb_err *err);

/* Unsubscribe; no handler call for this subscription starts after it
 * returns, except one that is running now (when called from another
 * thread). MB_ENOTFOUND for an unknown or already removed id. */
mb_status mb_client_unsubscribe(mb_client *c, mb_sub_id id, mb_err *err);

/* Send a request and wait up to timeout_ms for one reply. On MB_OK, *reply
 * (free with mb_client_reply_free) holds the reply bytes (not validated: a
 * reply is not a chat or event message) NUL-terminated. MB_ETIMEOUT when no
 * reply came in time, MB_ENORESPONDERS when nobody listens on the subject,
 * MB_ESUBJECT/MB_ESCHEMA for a refused request, MB_ENOCONN. */
typedef struct mb_reply {
    char *data;
    size_t len;
} mb_reply;
mb_status mb_client_request(mb_client *c, const char *subject, const void *data, size_t len,
                            uint64_t timeout_ms, mb_reply **reply, mb_err *err);
void mb_client_reply_free(mb_reply *r);

/* Reply to a message that has a reply subject (any bytes). MB_EINVAL when it
 * has none. */
mb_status mb_client_respond(mb_client *c, const mb_msg *msg, const void *data, size_t len,
                            mb_err *err);

/* ---- events ---- */

typedef enum mb_client_event_type {
    MB_CLIENT_EV_DISCONNECTED, /* a connection lost its server */
    MB_CLIENT_EV_RECONNECTED,
    MB_CLIENT_EV_CLOSED,        /* a connection closed for good */
    MB_CLIENT_EV_ERROR,         /* an asynchronous error (e.g. permissions) */
    MB_CLIENT_EV_LAME_DUCK,     /* the server is shutting down gracefully */
    MB_CLIENT_EV_SLOW_CONSUMER, /* a subscription dropped messages */
    MB_CLIENT_EV_STATE,         /* the client's connstate changed (from, to) */
    MB_CLIENT_EV_POOL,          /* a pool connection came up (after a repair) */
    MB_CLIENT_EV_DROPPED,       /* a message was lost: no DLQ, or the DLQ refused it */
    MB_CLIENT_EV_DEAD_LETTERED  /* a message went to the DLQ */
} mb_client_event_type;

typedef struct mb_client_event {
    mb_client_event_type type;
    int conn;               /* pool index, or -1 */
    mb_status status;       /* the error, when there is one */
    const char *text;       /* one line: detail, subject, ... */
    mb_conn_state from, to; /* MB_CLIENT_EV_STATE */
} mb_client_event;

typedef void (*mb_client_listener)(void *ctx, const mb_client_event *ev);

/* Add a listener (at most 16: MB_ELIMIT). It runs on the client's event
 * thread, or in mb_client_dispatch in poll mode, never on a nats.c thread. */
mb_status mb_client_listen(mb_client *c, mb_client_listener fn, void *ctx, mb_err *err);

/* ---- poll mode ---- */

/* A file descriptor that is readable while deliveries, events or due retries
 * are pending; -1 unless the client is in poll mode. Do not read it. */
int mb_client_fd(const mb_client *c);

/* Run up to `max` pending handler calls, listener calls and due retries on
 * this thread (0: all that are pending now). *ran (may be NULL) receives how
 * many ran. MB_ESTATE unless in poll mode. One thread at a time. How long
 * each delivery waited in the queue between its arrival and its handler
 * call is the histogram mudbus_client_dispatch_wait_seconds: the latency a
 * loop that dispatches too rarely adds. */
mb_status mb_client_dispatch(mb_client *c, size_t max, size_t *ran);

/* Milliseconds until the next retry is due (-1: none), for poll timeouts. */
int mb_client_timeout_ms(mb_client *c);

/* ---- JetStream (critical subjects) ----
 *
 * With opts.js.enabled, mb_client_create creates the stream (js.stream,
 * subjects = the critical patterns) or checks it, updating its subjects when
 * they differ; any failure fails the create with the server's error (with
 * start_disconnected and no connection up, this happens at the first
 * critical publish or subscribe instead).
 *
 * Publishing on a subject matched by a critical pattern goes, after the same
 * validation and breaker, to JetStream asynchronously, with the header
 * Nats-Msg-Id = the payload's message_id (the stream drops a republished id
 * within duplicate_window_ms). MB_PUB_SENT then means "handed to nats.c's
 * async publisher"; a publish ack that fails (server error, no stream, no
 * ack within publish_ack_timeout_ms) is retried through the retry queue when
 * retryable, else dead-lettered (origin "publish"), and reported as an
 * MB_CLIENT_EV_ERROR event. Core subscribers of the subject receive it too.
 *
 * Subscribing to a pattern that a critical pattern covers creates a durable
 * pull consumer (explicit ack) named durable_prefix + the pattern (+ the queue
 * group), fetched by one library thread per subscription. One client refuses
 * a second subscription on the same durable (MB_EEXIST); processes that use
 * the same durable_prefix share its messages (work sharing), so give each
 * process its own prefix unless that is what you want. The handler's result acks
 * (MB_HANDLED_OK), naks with a delay from the retry policy
 * (MB_HANDLED_RETRY) or terminates and dead-letters (MB_HANDLED_FAIL, origin
 * "consume"); an invalid message is terminated and dead-lettered; a message
 * whose handler still asks for a retry at its max_deliver-th delivery is
 * terminated and dead-lettered. In poll mode the handler runs in
 * mb_client_dispatch and the ack follows its return.
 *
 * mb_client_unsubscribe deletes the durable consumer (nats.c deletes a
 * consumer that its subscribe call created when the subscription is
 * unsubscribed); mb_client_destroy keeps it, so a restarted client resumes
 * where it stopped. */
typedef struct mb_client_js_stats {
    uint64_t acks, ack_failures, naks, terms, redeliveries;
    uint64_t publish_acks, publish_ack_failures;
    int64_t publish_pending; /* async publishes waiting for their ack */
} mb_client_js_stats;

/* Counters since creation (all 0 without JetStream). */
void mb_client_js_stats_get(mb_client *c, mb_client_js_stats *out);

/* ---- health and metrics ---- */

typedef struct mb_client_health {
    mb_conn_state state;
    size_t pool_size;
    size_t live;          /* connections up now */
    uint64_t last_rtt_us; /* last successful health round trip; 0 if none */
    mb_status last_error;
    char last_error_msg[MB_ERR_MSG_MAX];
    char server_version[32]; /* of a live connection; "" if none */
    size_t retry_pending;    /* messages waiting for a retry */
} mb_client_health;

void mb_client_health_get(mb_client *c, mb_client_health *out);

/* The Prometheus text of every client metric (and the subject, schema,
 * breaker, budget and timer queue metrics it owns). Free *out with free(). */
mb_status mb_client_metrics(mb_client *c, char **out, size_t *len, mb_err *err);

#ifdef __cplusplus
}
#endif
#endif
