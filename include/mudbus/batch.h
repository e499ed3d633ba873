/* SPDX-License-Identifier: MIT */
/*
 * batch: a batch publisher over an mb_client. Messages are collected per
 * subject and flushed when a subject's batch reaches max_messages or
 * max_bytes, when its oldest message is max_delay_ms old, or on request.
 *
 * A flush publishes each message of the batch, in the order it was added,
 * with mb_client_publish (ordering key: the subject), so subscribers see
 * ordinary messages, never an envelope. The client does what it does for
 * any publish: a retryable failure is retried with backoff within the retry
 * budget and an exhausted message goes to the DLQ; the batch only counts the
 * dispositions (sent, retrying, dead-lettered, dropped, refused).
 *
 * Validation happens at add time (subject against the registry, payload
 * against the pattern's schema), so the caller learns of a bad message at
 * once; the client validates again when the message is published, and a
 * refusal then (e.g. the client has a smaller max_payload) is counted.
 *
 * Order and loss. One subject is flushed by one thread at a time; a message
 * added while its subject is being flushed goes into the next batch, which is
 * flushed after the current one. So the messages of one subject reach the
 * client in the order they were added (from one thread; adds from several
 * threads are ordered by the batch's lock). The client keeps that order for
 * messages sent at the first attempt; a message that needed a retry arrives
 * later than those after it, as with mb_client_publish. No message that add
 * accepted is lost: each is published, and mb_client_publish gives it a
 * disposition.
 *
 * Bounds. total_max_messages and total_max_bytes bound the payload held
 * across all subjects (plus about 40 bytes per message and one small record
 * per subject that has messages). An add that would exceed a bound keeps
 * nothing and returns MB_EAGAIN ("would block", counted): the caller decides
 * (retry later, call mb_batch_flush, or drop). Each MB_EAGAIN also makes the
 * flusher flush every pending batch at once, so room comes back as fast as
 * the client takes the messages. The flusher never publishes more than
 * max_messages (and max_bytes) of one subject in one batch; a longer backlog
 * is flushed as several batches, one after the other.
 *
 * Threads: mb_batch_add, mb_batch_flush and mb_batch_stats_get may be called
 * from any thread at once. Batches that are full (size or bytes) or old
 * enough are flushed by the batch's own flusher thread, never by the adding
 * thread, so add never waits for the network; mb_batch_flush flushes on the
 * calling thread. mb_client_publish is called from both. DESIGN: the thread
 * model is described at the top of src/lib/batch.c.
 */
#ifndef MUDBUS_BATCH_H
#define MUDBUS_BATCH_H

#include <stddef.h>
#include <stdint.h>

#include "mudbus/client.h"
#include "mudbus/clock.h"
#include "mudbus/metrics.h"
#include "mudbus/status.h"
#include "mudbus/subject.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mb_batch mb_batch;

/* Upper limits of the options (larger values are refused with MB_EINVAL). */
#define MB_BATCH_MAX_TOTAL_MESSAGES (16u * 1024u * 1024u)
#define MB_BATCH_MAX_TOTAL_BYTES    (1024u * 1024u * 1024u)
#define MB_BATCH_MAX_DELAY_MS       3600000u

/* Batch options. Fill with mb_batch_opts_default, then change what you need;
 * a zero field takes its default. Pointers are borrowed: they must outlive
 * the batch. */
typedef struct mb_batch_opts {
    size_t max_messages;           /* per subject batch; default 100 */
    size_t max_bytes;              /* payload bytes per subject batch; default 256 KiB: a
                                    * batch ends with the message that reaches it */
    uint64_t max_delay_ms;         /* age of a batch's oldest message; default 5 */
    size_t total_max_messages;     /* held across all subjects; default 10,000 */
    size_t total_max_bytes;        /* payload bytes held across all subjects; default 8 MiB */
    size_t max_payload;            /* one message; default MB_SCHEMA_MAX_BYTES_DEFAULT (use the
                                    * client's max_payload when it is smaller) */
    uint64_t destroy_timeout_ms;   /* mb_batch_destroy's wait for the server; default 5000 */
    mb_subject_registry *subjects; /* the registry given to the client, so that its own
                                    * patterns are known; NULL: a private registry with
                                    * the contract's patterns */
    const mb_clock *clock;         /* NULL: the system clock */
    mb_metrics *metrics;           /* NULL: a private registry (see mb_batch_stats_get) */
    const char *labels;            /* labels of the batch's metrics, e.g. `batch="chat"`,
                                    * needed to put two batches in one registry; may be NULL */
} mb_batch_opts;

void mb_batch_opts_default(mb_batch_opts *o);

/* Create a batch publisher over `client` (borrowed: it must outlive the
 * batch) and start its flusher thread. Metrics (in opts->metrics, with
 * opts->labels): mudbus_batch_added_total, mudbus_batch_would_block_total,
 * mudbus_batch_add_refused_total, mudbus_batch_flushes_total{reason=
 * "size"|"delay"|"full"|"explicit"}, mudbus_batch_messages_total{disposition=
 * "sent"|"retrying"|"dead_lettered"|"dropped"|"refused"},
 * mudbus_batch_bytes_total (flushed payload), mudbus_batch_pending_messages
 * and mudbus_batch_pending_bytes (gauges), mudbus_batch_flush_seconds and
 * mudbus_batch_flush_messages (histograms).
 *
 * Returns MB_EINVAL for a NULL client or out, or an option above its limit;
 * MB_ENOMEM; an error of the metrics registry (MB_EEXIST for a second batch
 * with the same labels); MB_EINTERNAL when the thread cannot start. Nothing
 * is created on error (metrics already registered in a caller's registry
 * stay there). */
mb_status mb_batch_create(mb_client *client, const mb_batch_opts *opts, mb_batch **out,
                          mb_err *err);

/* Flush every pending message (see mb_batch_flush; the wait for the server is
 * bounded by destroy_timeout_ms), stop the flusher thread and free the batch.
 * Every message added before is handed to the client, whatever the server
 * does; the client's own shutdown then deals with messages still waiting for
 * a retry. NULL does nothing. No other call on the batch may be running or
 * start; the client must still exist. */
void mb_batch_destroy(mb_batch *b);

/* Validate a message and queue a copy of it (`data` is borrowed for the
 * call) in `subject`'s batch. A batch that becomes full is handed to the
 * flusher thread; add itself never publishes.
 *
 * Returns MB_OK when queued; MB_EAGAIN ("would block") when it would exceed
 * total_max_messages or total_max_bytes (counted; the flusher is asked to
 * flush everything now); MB_ESUBJECT (subject matches no pattern), MB_ETOOBIG
 * (over max_payload or total_max_bytes: it could never fit), MB_EJSON,
 * MB_ESCHEMA (refused, counted; the message names the field and rule);
 * MB_EINVAL for NULL arguments; MB_ENOMEM. On error nothing is kept. Any
 * thread. */
mb_status mb_batch_add(mb_batch *b, const char *subject, const void *data, size_t len, mb_err *err);

/* Flush now, on this thread, every message added before the call (a batch
 * that another thread is flushing is waited for), then wait until the client
 * has sent them to the server (mb_client_flush) within the same timeout.
 * Messages added during the call may or may not be included.
 *
 * Returns MB_OK; MB_ETIMEOUT when another thread's flush or the server's
 * confirmation did not complete within timeout_ms (what was published stays
 * published; the rest is flushed later); an error of mb_client_flush (e.g.
 * MB_ENOCONN: the messages were handed to the client, which retries or
 * dead-letters them). A failed publish is not an error of this call: see the
 * disposition counts. Any thread. */
mb_status mb_batch_flush(mb_batch *b, uint64_t timeout_ms, mb_err *err);

/* Counts since creation and the present state. */
typedef struct mb_batch_stats {
    uint64_t added;         /* accepted by mb_batch_add */
    uint64_t would_block;   /* MB_EAGAIN from mb_batch_add */
    uint64_t add_refused;   /* invalid at add */
    uint64_t flushes;       /* subject batches flushed */
    uint64_t flushed_bytes; /* payload bytes published */
    uint64_t sent;          /* dispositions of the published messages */
    uint64_t retrying;
    uint64_t dead_lettered;
    uint64_t dropped;
    uint64_t refused;
    size_t pending_messages; /* held now (queued or being flushed) */
    size_t pending_bytes;
    mb_status last_error; /* of the last failed publish; MB_OK if none */
    char last_error_msg[MB_ERR_MSG_MAX];
} mb_batch_stats;

/* Fill *out. Any thread. */
void mb_batch_stats_get(mb_batch *b, mb_batch_stats *out);

#ifdef __cplusplus
}
#endif
#endif
