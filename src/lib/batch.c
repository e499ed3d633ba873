/* SPDX-License-Identifier: MIT */
/*
 * batch: per-subject batching in front of mb_client_publish (see batch.h for
 * the contract).
 *
 * DESIGN: data and threads.
 *
 *   State. One mutex (b->lock) guards everything but the metrics. A subject
 *   with messages has a record (struct sq) in a chained hash table with a
 *   fixed number of buckets; it holds its pending messages as a FIFO list.
 *   Every message carries a sequence number taken at add time, under the
 *   lock, so "added before" is a comparison. Three intrusive lists of subject
 *   records drive flushing:
 *     - age: records with pending messages, in the order their oldest
 *       pending message was added; since max_delay is the same for all, the
 *       first record that is not being flushed is the next one due;
 *     - ready: records whose pending list reached max_messages or max_bytes
 *       (what stays after a claim is ready again only if it is that full);
 *     - busy: records being flushed, with the lowest sequence number of the
 *       messages in flight.
 *   A record with no pending message and no flush in progress is freed, so
 *   the number of records is bounded by total_max_messages plus the number
 *   of flushing threads.
 *
 *   Flushing a record claims, under the lock, the head of its pending list
 *   (the flusher: at most max_messages and up to max_bytes; mb_batch_flush:
 *   all of it) as the in-flight batch, marks the record busy and publishes
 *   the batch with the lock released. Adds meanwhile go to the pending list,
 *   which nobody may claim until the busy mark is gone: one flush per subject
 *   at a time, in order. The held totals are lowered when the flush ends (the
 *   memory is freed message by message during it).
 *
 *   The flusher thread (one per batch) sleeps on b->cv, with a timed wait on
 *   CLOCK_MONOTONIC until the oldest batch is due (the delay is measured with
 *   the injected clock; with a manual clock the thread re-reads it at most
 *   every max_delay_ms of real time). It wakes when a batch becomes ready,
 *   when a subject gets a first message due earlier than its deadline, when
 *   an add finds the totals full (then it flushes everything pending:
 *   "full"), when a flush ends and on destroy. It flushes ready batches
 *   first, then due ones.
 *
 *   mb_batch_flush runs on the caller's thread: in one pass over the age list
 *   it claims every record holding messages added before the call that
 *   nobody is flushing, publishes them, waits on b->done_cv for the busy
 *   ones, repeats until none is left, and finally calls mb_client_flush.
 *
 *   Add validates and copies outside the lock and only links the message in
 *   under it; it never publishes and never waits but for the lock, which no
 *   one holds while publishing.
 *
 *   Destroy stops the flusher (it finishes its current record), then flushes
 *   what is left on the caller's thread and waits for the server within
 *   destroy_timeout_ms.
 */
#include "mudbus/batch.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "metrics_int.h"
#include "mudbus/schema.h"

#define DEF_MAX_MESSAGES       100u
#define DEF_MAX_BYTES          (256u * 1024u)
#define DEF_MAX_DELAY_MS       5u
#define DEF_TOTAL_MESSAGES     10000u
#define DEF_TOTAL_BYTES        (8u * 1024u * 1024u)
#define DEF_DESTROY_TIMEOUT_MS 5000u

enum { R_SIZE, R_DELAY, R_FULL, R_EXPLICIT, R__COUNT };
static const char *const reason_names[R__COUNT] = {"size", "delay", "full", "explicit"};

enum { D_SENT, D_RETRYING, D_DEAD, D_DROPPED, D_REFUSED, D__COUNT };
static const char *const disp_names[D__COUNT] = {"sent", "retrying", "dead_lettered", "dropped",
                                                 "refused"};

typedef struct dlink {
    struct dlink *prev, *next;
} dlink;

typedef struct bmsg {
    struct bmsg *next;
    uint64_t seq;
    size_t len;
    char data[];
} bmsg;

typedef struct sq {
    struct sq *hnext; /* hash chain */
    uint32_t hash;
    bmsg *head, *tail;      /* pending (next batch) */
    size_t count, bytes;    /* of the pending list */
    uint64_t first_ns;      /* when the pending list's first message was added */
    dlink age, ready, busy; /* membership: count > 0, in_ready, flushing */
    bool in_ready, flushing;
    bmsg *inflight; /* the batch being flushed; only its flusher reads it */
    size_t inflight_n, inflight_bytes;
    uint64_t inflight_min_seq;
    int inflight_reason;
    struct sq *claim_next; /* a flushing thread's list of claimed records */
    char subject[];
} sq;

struct mb_batch {
    mb_client *c;
    mb_batch_opts o;
    mb_subject_registry *subjects, *own_subjects;
    mb_schema *schema;
    mb_metrics *own_metrics;

    pthread_mutex_t lock;
    pthread_cond_t cv;      /* the flusher's wake-up */
    pthread_cond_t done_cv; /* a flush ended */
    sq **buckets;
    size_t nbuckets;        /* a power of two */
    dlink age, ready, busy; /* sentinels */
    size_t total_msgs, total_bytes;
    uint64_t next_seq;
    uint64_t flusher_due; /* what the flusher waits for; UINT64_MAX: untimed */
    bool pressure, stop;
    mb_status last_error;
    char last_error_msg[MB_ERR_MSG_MAX];
    pthread_t thread;

    mb_counter *m_added, *m_would_block, *m_add_refused, *m_bytes;
    mb_counter *m_flushes[R__COUNT];
    mb_counter *m_disp[D__COUNT];
    mb_gauge *m_pending_msgs, *m_pending_bytes;
    mb_histogram *m_flush_seconds, *m_flush_messages;
};

/* ---- lists ---- */

#define SQ_OF(l, field) ((sq *)(void *)((char *)(l)-offsetof(sq, field)))

static void list_init(dlink *h)
{
    h->prev = h->next = h;
}

static void list_append(dlink *h, dlink *e)
{
    e->prev = h->prev;
    e->next = h;
    h->prev->next = e;
    h->prev = e;
}

static void list_remove(dlink *e)
{
    e->prev->next = e->next;
    e->next->prev = e->prev;
    e->prev = e->next = e;
}

/* ---- subject records ---- */

static uint32_t fnv1a(const char *s, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 16777619u;
    }
    return h;
}

static sq *sq_find(mb_batch *b, const char *subject, uint32_t h)
{
    for (sq *q = b->buckets[h & (b->nbuckets - 1)]; q; q = q->hnext)
        if (q->hash == h && strcmp(q->subject, subject) == 0)
            return q;
    return NULL;
}

static void sq_unlink_free(mb_batch *b, sq *q)
{
    sq **pp = &b->buckets[q->hash & (b->nbuckets - 1)];
    while (*pp != q)
        pp = &(*pp)->hnext;
    *pp = q->hnext;
    mb__free(q);
}

static uint64_t ms_to_ns(uint64_t ms)
{
    return ms > UINT64_MAX / 1000000u ? UINT64_MAX : ms * 1000000u;
}

static uint64_t sat_add(uint64_t a, uint64_t b)
{
    return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

/* ---- flushing ---- */

static void count_disposition(mb_batch *b, mb_status st, mb_publish_disposition d)
{
    int k = D_SENT;
    if (st != MB_OK) {
        switch (d) {
        case MB_PUB_RETRYING:
            k = D_RETRYING;
            break;
        case MB_PUB_DEAD_LETTERED:
            k = D_DEAD;
            break;
        case MB_PUB_DROPPED:
            k = D_DROPPED;
            break;
        default:
            k = D_REFUSED;
            break;
        }
    }
    mb_counter_add(b->m_disp[k], 1);
}

/* Take up to max_n messages (and up to the first that reaches max_bytes;
 * always at least one) off q's pending list as its in-flight batch and mark q
 * busy. Lock held; q has pending messages and is not flushing. A remainder
 * stays pending, ready only if it is a full batch itself, and keeps q's place
 * in the age list. */
static void claim(mb_batch *b, sq *q, size_t max_n, size_t max_bytes, int reason)
{
    bmsg *first = q->head, *last = first;
    size_t n = 1, bytes = first->len;
    while (last->next && n < max_n && bytes < max_bytes) {
        last = last->next;
        n++;
        bytes += last->len;
    }
    q->head = last->next;
    if (!q->head)
        q->tail = NULL;
    last->next = NULL;
    q->count -= n;
    q->bytes -= bytes;
    q->inflight = first;
    q->inflight_n = n;
    q->inflight_bytes = bytes;
    q->inflight_min_seq = first->seq;
    q->inflight_reason = reason;
    q->flushing = true;
    list_append(&b->busy, &q->busy);
    if (q->count == 0)
        list_remove(&q->age);
    /* What stays is ready only if it is a full batch itself; otherwise it
     * waits for more or for the delay (counted from the oldest message that
     * was pending before the claim: never later than its own). */
    bool full = q->count >= b->o.max_messages || q->bytes >= b->o.max_bytes;
    if (full && !q->in_ready) {
        list_append(&b->ready, &q->ready);
        q->in_ready = true;
    } else if (!full && q->in_ready) {
        list_remove(&q->ready);
        q->in_ready = false;
    }
}

/* Publish q's in-flight batch in order and free it. Lock NOT held; only the
 * thread that claimed q calls this. Returns the last failure (MB_OK if none)
 * with its message in *e. */
static mb_status publish_claimed(mb_batch *b, sq *q, mb_err *last_err)
{
    uint64_t t0 = mb_clock_mono_ns(b->o.clock);
    mb_status last = MB_OK;
    for (bmsg *m = q->inflight, *next; m; m = next) {
        next = m->next;
        mb_publish_disposition d = MB_PUB_REFUSED;
        mb_err e = {0};
        mb_status st = mb_client_publish(b->c, q->subject, m->data, m->len, NULL, &d, &e);
        count_disposition(b, st, d);
        if (st != MB_OK) {
            last = st;
            *last_err = e;
        }
        mb__free(m);
    }
    q->inflight = NULL;
    mb_histogram_observe(b->m_flush_seconds, mb_clock_mono_ns(b->o.clock) - t0);
    mb_histogram_observe(b->m_flush_messages, q->inflight_n);
    mb_counter_add(b->m_flushes[q->inflight_reason], 1);
    mb_counter_add(b->m_bytes, q->inflight_bytes);
    return last;
}

/* Remember a failed publish for mb_batch_stats_get. Lock held. */
static void record_error(mb_batch *b, const char *subject, mb_status last, const mb_err *e)
{
    b->last_error = last;
    snprintf(b->last_error_msg, sizeof b->last_error_msg, "%.96s: %.150s", subject,
             e->msg[0] ? e->msg : mb_status_str(last));
}

/* End q's flush: lower the totals, clear the busy mark, free q if nothing is
 * pending, wake waiters. Lock held; q may be freed on return. */
static void finish(mb_batch *b, sq *q)
{
    b->total_msgs -= q->inflight_n;
    b->total_bytes -= q->inflight_bytes;
    mb_gauge_set(b->m_pending_msgs, (int64_t)b->total_msgs);
    mb_gauge_set(b->m_pending_bytes, (int64_t)b->total_bytes);
    q->flushing = false;
    list_remove(&q->busy);
    if (q->count == 0)
        sq_unlink_free(b, q);
    pthread_cond_broadcast(&b->done_cv);
    pthread_cond_signal(&b->cv);
}

/* Flush one record from the flusher thread: claim (capped by the batch
 * limits), publish without the lock, finish. Lock held on entry and exit. */
static void flush_one(mb_batch *b, sq *q, int reason)
{
    claim(b, q, b->o.max_messages, b->o.max_bytes, reason);
    pthread_mutex_unlock(&b->lock);
    mb_err e = {0};
    mb_status last = publish_claimed(b, q, &e);
    pthread_mutex_lock(&b->lock);
    if (last != MB_OK)
        record_error(b, q->subject, last, &e);
    finish(b, q);
}

/* The flusher's next record, or NULL with *due set to when the oldest batch
 * comes due (UINT64_MAX: nothing pending that it may flush). Lock held. */
static sq *pick(mb_batch *b, uint64_t now, uint64_t *due, int *reason)
{
    *due = UINT64_MAX;
    for (dlink *l = b->ready.next; l != &b->ready; l = l->next) {
        sq *q = SQ_OF(l, ready);
        if (!q->flushing) {
            *reason = R_SIZE;
            return q;
        }
    }
    uint64_t delay = ms_to_ns(b->o.max_delay_ms);
    for (dlink *l = b->age.next; l != &b->age; l = l->next) {
        sq *q = SQ_OF(l, age);
        if (q->flushing)
            continue; /* a few at most: one per flushing thread */
        if (b->pressure) {
            *reason = R_FULL;
            return q;
        }
        uint64_t at = sat_add(q->first_ns, delay);
        if (at <= now) {
            *reason = R_DELAY;
            return q;
        }
        *due = at;
        break;
    }
    b->pressure = false;
    return NULL;
}

static void *flusher_main(void *arg)
{
    mb_batch *b = arg;
    pthread_mutex_lock(&b->lock);
    while (!b->stop) {
        uint64_t now = mb_clock_mono_ns(b->o.clock);
        uint64_t due;
        int reason = R_DELAY;
        sq *q = pick(b, now, &due, &reason);
        if (q) {
            flush_one(b, q, reason);
            continue;
        }
        b->flusher_due = due;
        if (due == UINT64_MAX) {
            pthread_cond_wait(&b->cv, &b->lock);
        } else {
            /* The injected clock says how long; the wait itself is on the
             * real monotonic clock. */
            uint64_t wait_ns = due - now;
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            uint64_t sec = wait_ns / 1000000000u;
            long nsec = ts.tv_nsec + (long)(wait_ns % 1000000000u);
            if (nsec >= 1000000000L) {
                nsec -= 1000000000L;
                sec++;
            }
            ts.tv_sec += (time_t)(sec > 86400u ? 86400u : sec);
            ts.tv_nsec = nsec;
            pthread_cond_timedwait(&b->cv, &b->lock, &ts);
        }
        b->flusher_due = 0; /* awake: no one needs to signal */
    }
    pthread_mutex_unlock(&b->lock);
    return NULL;
}

/* Flush every message with a sequence number below `target`: claim, in one
 * pass, every record holding such messages that nobody flushes, publish them
 * on this thread, and wait (until `deadline`, on CLOCK_MONOTONIC) for the
 * other threads' flushes of such messages to end. A claim here takes the
 * whole pending list, so a subject's messages go out in order. Called and
 * returns with the lock held. MB_OK or MB_ETIMEOUT. */
static mb_status flush_before(mb_batch *b, uint64_t target, const struct timespec *deadline)
{
    for (;;) {
        sq *claimed = NULL, **tailp = &claimed;
        bool wait = false;
        for (dlink *l = b->age.next, *next; l != &b->age; l = next) {
            next = l->next; /* claim() may unlink l */
            sq *q = SQ_OF(l, age);
            if (q->head->seq >= target)
                continue;
            if (q->flushing) {
                wait = true;
                continue;
            }
            claim(b, q, SIZE_MAX, SIZE_MAX, R_EXPLICIT);
            q->claim_next = NULL;
            *tailp = q;
            tailp = &q->claim_next;
        }
        if (claimed) {
            pthread_mutex_unlock(&b->lock);
            mb_status last = MB_OK;
            mb_err last_err = {0};
            char last_subject[MB_SUBJECT_MAX + 1] = "";
            for (sq *q = claimed; q; q = q->claim_next) {
                mb_err e = {0};
                mb_status st = publish_claimed(b, q, &e);
                if (st != MB_OK) {
                    last = st;
                    last_err = e;
                    snprintf(last_subject, sizeof last_subject, "%s", q->subject);
                }
            }
            pthread_mutex_lock(&b->lock);
            if (last != MB_OK)
                record_error(b, last_subject, last, &last_err);
            for (sq *q = claimed, *next; q; q = next) {
                next = q->claim_next;
                finish(b, q);
            }
            continue;
        }
        for (dlink *l = b->busy.next; !wait && l != &b->busy; l = l->next)
            wait = SQ_OF(l, busy)->inflight_min_seq < target;
        if (!wait)
            return MB_OK;
        if (pthread_cond_timedwait(&b->done_cv, &b->lock, deadline) == ETIMEDOUT)
            return MB_ETIMEOUT;
    }
}

static struct timespec deadline_after(uint64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    if (ms > 86400000u * 365u)
        ms = 86400000u * 365u;
    ts.tv_sec += (time_t)(ms / 1000u);
    ts.tv_nsec += (long)(ms % 1000u) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_nsec -= 1000000000L;
        ts.tv_sec++;
    }
    return ts;
}

static uint64_t ms_until(const struct timespec *deadline)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    int64_t ms = (int64_t)(deadline->tv_sec - now.tv_sec) * 1000 +
                 (deadline->tv_nsec - now.tv_nsec) / 1000000L;
    return ms > 0 ? (uint64_t)ms : 0;
}

mb_status mb_batch_flush(mb_batch *b, uint64_t timeout_ms, mb_err *err)
{
    if (!b)
        return mb_err_set(err, MB_EINVAL, "NULL batch");
    struct timespec deadline = deadline_after(timeout_ms);
    pthread_mutex_lock(&b->lock);
    mb_status st = flush_before(b, b->next_seq, &deadline);
    pthread_mutex_unlock(&b->lock);
    if (st != MB_OK)
        return mb_err_set(err, st,
                          "batch flush: another thread's flush of a subject did not "
                          "end within %llu ms",
                          (unsigned long long)timeout_ms);
    return mb_client_flush(b->c, ms_until(&deadline), err);
}

/* ---- add ---- */

mb_status mb_batch_add(mb_batch *b, const char *subject, const void *data, size_t len, mb_err *err)
{
    if (!b || !subject || (!data && len))
        return mb_err_set(err, MB_EINVAL, "NULL batch, subject or data");
    size_t slen = strlen(subject);
    mb_subject_info info;
    mb_status st = mb_subject_check(b->subjects, subject, slen, &info, NULL, err);
    if (st == MB_OK && len > b->o.max_payload)
        st = mb_err_set(err, MB_ETOOBIG, "payload of %zu bytes exceeds %zu", len, b->o.max_payload);
    if (st == MB_OK && len > b->o.total_max_bytes)
        st = mb_err_set(err, MB_ETOOBIG, "payload of %zu bytes exceeds the batch total of %zu", len,
                        b->o.total_max_bytes);
    if (st == MB_OK)
        st = mb_schema_validate(b->schema, info.schema, data ? data : "", len, NULL, err);
    if (st != MB_OK) {
        mb_counter_add(b->m_add_refused, 1);
        return st;
    }
    bmsg *m = mb__malloc(sizeof *m + (len ? len : 1));
    if (!m)
        return mb_err_set(err, MB_ENOMEM, "out of memory");
    m->next = NULL;
    m->len = len;
    if (len)
        memcpy(m->data, data, len);
    uint32_t h = fnv1a(subject, slen);

    pthread_mutex_lock(&b->lock);
    if (b->total_msgs + 1 > b->o.total_max_messages ||
        b->total_bytes + len > b->o.total_max_bytes) {
        size_t held = b->total_msgs, held_bytes = b->total_bytes;
        b->pressure = true;
        pthread_cond_signal(&b->cv);
        pthread_mutex_unlock(&b->lock);
        mb__free(m);
        mb_counter_add(b->m_would_block, 1);
        return mb_err_set(err, MB_EAGAIN,
                          "batch full: %zu messages, %zu bytes held (bounds %zu, %zu)", held,
                          held_bytes, b->o.total_max_messages, b->o.total_max_bytes);
    }
    sq *q = sq_find(b, subject, h);
    if (!q) {
        q = mb__calloc(1, sizeof *q + slen + 1);
        if (!q) {
            pthread_mutex_unlock(&b->lock);
            mb__free(m);
            return mb_err_set(err, MB_ENOMEM, "out of memory");
        }
        q->hash = h;
        memcpy(q->subject, subject, slen + 1);
        list_init(&q->age);
        list_init(&q->ready);
        list_init(&q->busy);
        q->hnext = b->buckets[h & (b->nbuckets - 1)];
        b->buckets[h & (b->nbuckets - 1)] = q;
    }
    m->seq = b->next_seq++;
    if (q->tail)
        q->tail->next = m;
    else
        q->head = m;
    q->tail = m;
    q->count++;
    q->bytes += len;
    b->total_msgs++;
    b->total_bytes += len;
    if (q->count == 1) {
        q->first_ns = mb_clock_mono_ns(b->o.clock);
        list_append(&b->age, &q->age);
        /* Wake the flusher only when it sleeps past this batch's due time. */
        if (!q->flushing && sat_add(q->first_ns, ms_to_ns(b->o.max_delay_ms)) < b->flusher_due)
            pthread_cond_signal(&b->cv);
    }
    if (!q->in_ready && (q->count >= b->o.max_messages || q->bytes >= b->o.max_bytes)) {
        q->in_ready = true;
        list_append(&b->ready, &q->ready);
        pthread_cond_signal(&b->cv);
    }
    mb_gauge_set(b->m_pending_msgs, (int64_t)b->total_msgs);
    mb_gauge_set(b->m_pending_bytes, (int64_t)b->total_bytes);
    pthread_mutex_unlock(&b->lock);
    mb_counter_add(b->m_added, 1);
    return MB_OK;
}

/* ---- stats ---- */

void mb_batch_stats_get(mb_batch *b, mb_batch_stats *out)
{
    memset(out, 0, sizeof *out);
    if (!b)
        return;
    out->added = mb_counter_get(b->m_added);
    out->would_block = mb_counter_get(b->m_would_block);
    out->add_refused = mb_counter_get(b->m_add_refused);
    for (int r = 0; r < R__COUNT; r++)
        out->flushes += mb_counter_get(b->m_flushes[r]);
    out->flushed_bytes = mb_counter_get(b->m_bytes);
    out->sent = mb_counter_get(b->m_disp[D_SENT]);
    out->retrying = mb_counter_get(b->m_disp[D_RETRYING]);
    out->dead_lettered = mb_counter_get(b->m_disp[D_DEAD]);
    out->dropped = mb_counter_get(b->m_disp[D_DROPPED]);
    out->refused = mb_counter_get(b->m_disp[D_REFUSED]);
    pthread_mutex_lock(&b->lock);
    out->pending_messages = b->total_msgs;
    out->pending_bytes = b->total_bytes;
    out->last_error = b->last_error;
    memcpy(out->last_error_msg, b->last_error_msg, sizeof out->last_error_msg);
    pthread_mutex_unlock(&b->lock);
}

/* ---- create and destroy ---- */

void mb_batch_opts_default(mb_batch_opts *o)
{
    memset(o, 0, sizeof *o);
    o->max_messages = DEF_MAX_MESSAGES;
    o->max_bytes = DEF_MAX_BYTES;
    o->max_delay_ms = DEF_MAX_DELAY_MS;
    o->total_max_messages = DEF_TOTAL_MESSAGES;
    o->total_max_bytes = DEF_TOTAL_BYTES;
    o->max_payload = MB_SCHEMA_MAX_BYTES_DEFAULT;
    o->destroy_timeout_ms = DEF_DESTROY_TIMEOUT_MS;
}

static mb_status register_metrics(mb_batch *b, mb_metrics *m, mb_err *err)
{
    const char *base = b->o.labels && b->o.labels[0] ? b->o.labels : NULL;
    char lab[512];
#define LABELS(fmt, val)                                                                           \
    (snprintf(lab, sizeof lab, "%s%s" fmt, base ? base : "", base ? "," : "", val), lab)
    mb_status st;
    if ((st = mb_metrics_counter(m, "mudbus_batch_added_total", "Messages accepted by add", base,
                                 &b->m_added, err)) != MB_OK ||
        (st = mb_metrics_counter(m, "mudbus_batch_would_block_total",
                                 "Adds refused because the batch held its maximum", base,
                                 &b->m_would_block, err)) != MB_OK ||
        (st = mb_metrics_counter(m, "mudbus_batch_add_refused_total", "Adds refused as invalid",
                                 base, &b->m_add_refused, err)) != MB_OK ||
        (st = mb_metrics_counter(m, "mudbus_batch_bytes_total", "Payload bytes flushed", base,
                                 &b->m_bytes, err)) != MB_OK)
        return st;
    for (int r = 0; r < R__COUNT; r++)
        if ((st = mb_metrics_counter(
                 m, "mudbus_batch_flushes_total", "Subject batches flushed, by trigger",
                 LABELS("reason=\"%s\"", reason_names[r]), &b->m_flushes[r], err)) != MB_OK)
            return st;
    for (int d = 0; d < D__COUNT; d++)
        if ((st = mb_metrics_counter(
                 m, "mudbus_batch_messages_total", "Flushed messages, by publish disposition",
                 LABELS("disposition=\"%s\"", disp_names[d]), &b->m_disp[d], err)) != MB_OK)
            return st;
#undef LABELS
    if ((st = mb_metrics_gauge(m, "mudbus_batch_pending_messages", "Messages held", base,
                               &b->m_pending_msgs, err)) != MB_OK ||
        (st = mb_metrics_gauge(m, "mudbus_batch_pending_bytes", "Payload bytes held", base,
                               &b->m_pending_bytes, err)) != MB_OK ||
        (st = mb_metrics_histogram(m, "mudbus_batch_flush_seconds",
                                   "Time to publish one subject batch", base, 1e-9,
                                   &b->m_flush_seconds, err)) != MB_OK ||
        (st =
             mb_metrics_histogram(m, "mudbus_batch_flush_messages", "Messages in one subject batch",
                                  base, 1.0, &b->m_flush_messages, err)) != MB_OK)
        return st;
    return MB_OK;
}

/* Take back the metrics registered in a caller's registry, when create fails
 * part way, so that the registry is as it was and create can be retried. */
static void forget_metrics(mb_batch *b)
{
    mb_metrics *m = b->o.metrics;
    if (m == NULL)
        return;
    mb__metrics_forget(m, b->m_added);
    mb__metrics_forget(m, b->m_would_block);
    mb__metrics_forget(m, b->m_add_refused);
    mb__metrics_forget(m, b->m_bytes);
    for (int r = 0; r < R__COUNT; r++)
        mb__metrics_forget(m, b->m_flushes[r]);
    for (int d = 0; d < D__COUNT; d++)
        mb__metrics_forget(m, b->m_disp[d]);
    mb__metrics_forget(m, b->m_pending_msgs);
    mb__metrics_forget(m, b->m_pending_bytes);
    mb__metrics_forget(m, b->m_flush_seconds);
    mb__metrics_forget(m, b->m_flush_messages);
}

static void batch_free(mb_batch *b)
{
    mb__free(b->buckets);
    mb_schema_destroy(b->schema);
    mb_subject_registry_destroy(b->own_subjects);
    mb_metrics_destroy(b->own_metrics);
    mb__free(b);
}

mb_status mb_batch_create(mb_client *client, const mb_batch_opts *opts, mb_batch **out, mb_err *err)
{
    if (!client || !out)
        return mb_err_set(err, MB_EINVAL, "NULL client or out");
    *out = NULL;
    mb_batch_opts o;
    mb_batch_opts_default(&o);
    if (opts) {
        mb_batch_opts d = o;
        o = *opts;
        if (!o.max_messages)
            o.max_messages = d.max_messages;
        if (!o.max_bytes)
            o.max_bytes = d.max_bytes;
        if (!o.max_delay_ms)
            o.max_delay_ms = d.max_delay_ms;
        if (!o.total_max_messages)
            o.total_max_messages = d.total_max_messages;
        if (!o.total_max_bytes)
            o.total_max_bytes = d.total_max_bytes;
        if (!o.max_payload)
            o.max_payload = d.max_payload;
        if (!o.destroy_timeout_ms)
            o.destroy_timeout_ms = d.destroy_timeout_ms;
    }
    if (o.total_max_messages > MB_BATCH_MAX_TOTAL_MESSAGES)
        return mb_err_set(err, MB_EINVAL, "total_max_messages %zu exceeds %u", o.total_max_messages,
                          MB_BATCH_MAX_TOTAL_MESSAGES);
    if (o.total_max_bytes > MB_BATCH_MAX_TOTAL_BYTES)
        return mb_err_set(err, MB_EINVAL, "total_max_bytes %zu exceeds %u", o.total_max_bytes,
                          MB_BATCH_MAX_TOTAL_BYTES);
    if (o.max_delay_ms > MB_BATCH_MAX_DELAY_MS)
        return mb_err_set(err, MB_EINVAL, "max_delay_ms %llu exceeds %u",
                          (unsigned long long)o.max_delay_ms, MB_BATCH_MAX_DELAY_MS);
    if (o.max_payload > MB_SCHEMA_MAX_BYTES_LIMIT)
        return mb_err_set(err, MB_EINVAL, "max_payload %zu exceeds %u", o.max_payload,
                          MB_SCHEMA_MAX_BYTES_LIMIT);

    mb_batch *b = mb__calloc(1, sizeof *b);
    if (!b)
        return mb_err_set(err, MB_ENOMEM, "out of memory");
    b->c = client;
    b->o = o;
    b->o.clock = o.clock ? o.clock : mb_clock_system();
    b->flusher_due = UINT64_MAX;
    list_init(&b->age);
    list_init(&b->ready);
    list_init(&b->busy);
    /* About four messages per bucket when full, for a hash table that never
     * grows. */
    size_t want = o.total_max_messages / 4;
    b->nbuckets = 64;
    while (b->nbuckets < want && b->nbuckets < 65536)
        b->nbuckets *= 2;
    mb_status st = MB_OK;
    b->buckets = mb__calloc(b->nbuckets, sizeof *b->buckets);
    if (!b->buckets)
        st = mb_err_set(err, MB_ENOMEM, "out of memory");
    mb_metrics *m = o.metrics;
    if (st == MB_OK && !m && (st = mb_metrics_create(&b->own_metrics, err)) == MB_OK)
        m = b->own_metrics;
    if (st == MB_OK)
        st = register_metrics(b, m, err);
    b->subjects = o.subjects;
    if (st == MB_OK && !b->subjects &&
        (st = mb_subject_registry_create(NULL, &b->own_subjects, err)) == MB_OK)
        b->subjects = b->own_subjects;
    mb_schema_opts so = {.max_bytes = o.max_payload};
    if (st == MB_OK)
        st = mb_schema_create(&so, &b->schema, err);
    if (st != MB_OK) {
        forget_metrics(b);
        batch_free(b);
        return st;
    }
    pthread_condattr_t ca;
    bool cv_ok = false, done_ok = false;
    if (pthread_condattr_init(&ca) == 0) {
        if (pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) == 0) {
            cv_ok = pthread_cond_init(&b->cv, &ca) == 0;
            done_ok = pthread_cond_init(&b->done_cv, &ca) == 0;
        }
        pthread_condattr_destroy(&ca);
    }
    if (!cv_ok || !done_ok || pthread_mutex_init(&b->lock, NULL) != 0) {
        if (cv_ok)
            pthread_cond_destroy(&b->cv);
        if (done_ok)
            pthread_cond_destroy(&b->done_cv);
        forget_metrics(b);
        batch_free(b);
        return mb_err_set(err, MB_EINTERNAL, "cannot initialise the batch's lock");
    }
    if (pthread_create(&b->thread, NULL, flusher_main, b) != 0) {
        pthread_cond_destroy(&b->cv);
        pthread_cond_destroy(&b->done_cv);
        pthread_mutex_destroy(&b->lock);
        forget_metrics(b);
        batch_free(b);
        return mb_err_set(err, MB_EINTERNAL, "cannot start the batch flusher thread");
    }
    *out = b;
    return MB_OK;
}

void mb_batch_destroy(mb_batch *b)
{
    if (!b)
        return;
    pthread_mutex_lock(&b->lock);
    b->stop = true;
    pthread_cond_signal(&b->cv);
    pthread_mutex_unlock(&b->lock);
    pthread_join(b->thread, NULL);
    /* Alone now: nothing is busy, so this publishes everything without
     * waiting; only the server's confirmation is bounded. */
    struct timespec deadline = deadline_after(b->o.destroy_timeout_ms);
    pthread_mutex_lock(&b->lock);
    flush_before(b, UINT64_MAX, &deadline);
    pthread_mutex_unlock(&b->lock);
    mb_client_flush(b->c, ms_until(&deadline), NULL);
    pthread_cond_destroy(&b->cv);
    pthread_cond_destroy(&b->done_cv);
    pthread_mutex_destroy(&b->lock);
    batch_free(b);
}
