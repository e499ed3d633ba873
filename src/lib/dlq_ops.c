/* SPDX-License-Identifier: MIT */
/*
 * dlq_ops: the DLQ's queries and state changes: list with filters, show,
 * replay (rate-limited, resumable), purge, retention by age, stats.
 *
 * Every query walks the in-memory index in id order. For each candidate that
 * the index alone can judge (flags, status, failure time, age, and the hash
 * of a literal subject), the record is read from disk with pread under `imu`
 * (so its segment cannot be deleted meanwhile), then checked again (frame,
 * CRC, structure, id) and matched against the subject pattern without the
 * lock; callbacks always run without a lock. Replay and purge first collect
 * the matching ids, then act on each one, re-checking that it is still
 * eligible, so entries purged or replayed by someone else meanwhile are
 * skipped rather than repeated.
 *
 * Threads: any thread; see dlq.h.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "dlq_int.h"

static int64_t now_wall_ms(const mb_dlq *d)
{
    return (int64_t)(mb_clock_wall_ns(d->clock) / 1000000u);
}

mb_status mb__dlq_read(mb_dlq *d, const dlq_ix *x, uint8_t **buf, size_t *cap, mb_err *err)
{
    if (*cap < x->len) {
        uint8_t *p = mb__realloc(*buf, x->len);
        if (p == NULL)
            return mb_err_set(err, MB_ENOMEM, "dlq: out of memory reading entry %" PRIu64, x->id);
        *buf = p;
        *cap = x->len;
    }
    uint8_t *p = *buf;
    size_t n = x->len;
    uint64_t off = x->off;
    while (n > 0) {
        ssize_t r = pread(x->seg->fd, p, n, (off_t)off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return mb_err_set(err, MB_EIO, "dlq: reading entry %" PRIu64 " in %s: %s", x->id,
                              d->dir, r < 0 ? strerror(errno) : "file shorter than indexed");
        p += r;
        n -= (size_t)r;
        off += (uint64_t)r;
    }
    return MB_OK;
}

/* Verify a record read for index entry `x`; false (counted, logged) when it
 * is no longer intact. */
static bool verify(mb_dlq *d, const dlq_ix *x, const uint8_t *rec, dlq_view *v)
{
    if (mb__dlq_frame_check(rec, x->len) == x->len && rec[9] == DLQ_REC_ENTRY &&
        mb__dlq_entry_decode(rec + DLQ_FRAME, x->len - DLQ_FRAME, v) == 0 && v->id == x->id)
        return true;
    mb_counter_add(d->m.corrupt, 1);
    mb__dlq_logf(d,
                 "dlq: entry %" PRIu64 " in segment %" PRIu64 " at offset %" PRIu64
                 " fails its checksum now: skipped",
                 x->id, x->seg->seq, x->off);
    return false;
}

typedef struct matcher {
    dlq_pattern pat;
    mb_dlq_filter f;
    int64_t now_ms;
} matcher;

static mb_status matcher_init(mb_dlq *d, matcher *m, const mb_dlq_filter *f, mb_err *err)
{
    static const mb_dlq_filter all = {0};
    m->f = f ? *f : all;
    m->now_ms = now_wall_ms(d);
    return mb__dlq_pattern_init(&m->pat, m->f.subject, err);
}

static bool meta_match(const matcher *m, const dlq_ix *x)
{
    if (x->flags & IX_DEAD)
        return false;
    if ((x->flags & IX_REPLAYED) && !m->f.include_replayed)
        return false;
    if (m->f.status != MB_OK && x->status != (uint32_t)m->f.status)
        return false;
    if (m->f.since_ms != 0 && x->last_ms < m->f.since_ms)
        return false;
    if (m->f.until_ms != 0 && x->last_ms >= m->f.until_ms)
        return false;
    if (m->f.min_age_ms != 0 && (m->f.min_age_ms > (uint64_t)INT64_MAX ||
                                 x->added_ms > m->now_ms - (int64_t)m->f.min_age_ms))
        return false;
    if (m->pat.text != NULL && m->pat.literal && x->subj_hash != m->pat.hash)
        return false;
    return true;
}

/* The next entry after `after` that matches: *found, its record in *buf and
 * decoded in *v, its flags in *flags. */
static mb_status next_match(mb_dlq *d, const matcher *m, uint64_t after, uint8_t **buf, size_t *cap,
                            dlq_view *v, uint32_t *flags, bool *found, mb_err *err)
{
    *found = false;
    for (;;) {
        pthread_mutex_lock(&d->imu);
        size_t i = after == UINT64_MAX ? d->nix : mb__dlq_ix_lower(d, after + 1);
        while (i < d->nix && !meta_match(m, &d->ix[i]))
            i++;
        if (i >= d->nix) {
            pthread_mutex_unlock(&d->imu);
            return MB_OK;
        }
        dlq_ix x = d->ix[i];
        mb_status st = mb__dlq_read(d, &x, buf, cap, err);
        pthread_mutex_unlock(&d->imu);
        if (st != MB_OK)
            return st;
        after = x.id;
        if (!verify(d, &x, *buf, v))
            continue;
        if (!mb__dlq_pattern_match(&m->pat, v->subject, v->subject_len))
            continue;
        *flags = x.flags & IX_REPLAYED ? MB_DLQ_REPLAYED : 0;
        *found = true;
        return MB_OK;
    }
}

mb_status mb_dlq_list(mb_dlq *d, const mb_dlq_filter *f, mb_dlq_visit_fn fn, void *ctx,
                      size_t *count, mb_err *err)
{
    if (count != NULL)
        *count = 0;
    if (d == NULL || fn == NULL)
        return mb_err_set(err, MB_EINVAL, "dlq list: NULL argument");
    matcher m;
    mb_status st = matcher_init(d, &m, f, err);
    uint8_t *buf = NULL;
    size_t cap = 0, n = 0;
    uint64_t after = 0;
    while (st == MB_OK) {
        dlq_view v;
        uint32_t flags;
        bool found;
        st = next_match(d, &m, after, &buf, &cap, &v, &flags, &found, err);
        if (st != MB_OK || !found)
            break;
        after = v.id;
        mb_dlq_entry *e = mb__dlq_entry_copy(&v, flags);
        if (e == NULL) {
            st = mb_err_set(err, MB_ENOMEM, "dlq list: out of memory");
            break;
        }
        n++;
        int stop = fn(ctx, e);
        mb__free(e);
        if (stop)
            break;
    }
    mb__free(buf);
    if (count != NULL)
        *count = n;
    return st;
}

/* Read entry `id` if it is still eligible (`include_replayed`). */
static mb_status read_one(mb_dlq *d, uint64_t id, bool include_replayed, mb_dlq_entry **out,
                          mb_err *err)
{
    uint8_t *buf = NULL;
    size_t cap = 0;
    pthread_mutex_lock(&d->imu);
    size_t i = mb__dlq_ix_lower(d, id);
    if (i >= d->nix || d->ix[i].id != id || (d->ix[i].flags & IX_DEAD) ||
        ((d->ix[i].flags & IX_REPLAYED) && !include_replayed)) {
        pthread_mutex_unlock(&d->imu);
        return mb_err_set(err, MB_ENOTFOUND, "dlq: no entry %" PRIu64, id);
    }
    dlq_ix x = d->ix[i];
    mb_status st = mb__dlq_read(d, &x, &buf, &cap, err);
    pthread_mutex_unlock(&d->imu);
    dlq_view v;
    if (st == MB_OK && !verify(d, &x, buf, &v))
        st = mb_err_set(err, MB_ECORRUPT, "dlq: entry %" PRIu64 " is corrupt on disk", id);
    if (st == MB_OK &&
        (*out = mb__dlq_entry_copy(&v, x.flags & IX_REPLAYED ? MB_DLQ_REPLAYED : 0)) == NULL)
        st = mb_err_set(err, MB_ENOMEM, "dlq: out of memory");
    mb__free(buf);
    return st;
}

mb_status mb_dlq_show(mb_dlq *d, uint64_t id, mb_dlq_entry **out, mb_err *err)
{
    if (d == NULL || out == NULL)
        return mb_err_set(err, MB_EINVAL, "dlq show: NULL argument");
    *out = NULL;
    return read_one(d, id, true, out, err);
}

/* The ids of every entry matching `f`, at most `max` (0: all). */
static mb_status collect(mb_dlq *d, const matcher *m, size_t max, uint64_t **ids, size_t *n,
                         mb_err *err)
{
    uint8_t *buf = NULL;
    size_t cap = 0, icap = 0;
    uint64_t after = 0;
    mb_status st = MB_OK;
    *ids = NULL;
    *n = 0;
    while (max == 0 || *n < max) {
        dlq_view v;
        uint32_t flags;
        bool found;
        st = next_match(d, m, after, &buf, &cap, &v, &flags, &found, err);
        if (st != MB_OK || !found)
            break;
        after = v.id;
        if (*n == icap) {
            size_t nc = icap ? icap * 2 : 256;
            uint64_t *p = mb__realloc(*ids, nc * sizeof *p);
            if (p == NULL) {
                st = mb_err_set(err, MB_ENOMEM, "dlq: out of memory");
                break;
            }
            *ids = p;
            icap = nc;
        }
        (*ids)[(*n)++] = v.id;
    }
    mb__free(buf);
    if (st != MB_OK) {
        mb__free(*ids);
        *ids = NULL;
        *n = 0;
    }
    return st;
}

static void default_sleep(void *ctx, uint64_t ns)
{
    (void)ctx;
    struct timespec ts = {(time_t)(ns / 1000000000u), (long)(ns % 1000000000u)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* A token bucket on the DLQ's monotonic clock. */
typedef struct bucket {
    double rate, cap, tokens;
    uint64_t last_ns;
} bucket;

static void bucket_take(mb_dlq *d, bucket *b, const mb_dlq_replay_opts *o)
{
    if (b->rate <= 0)
        return;
    for (;;) {
        uint64_t now = mb_clock_mono_ns(d->clock);
        b->tokens += (double)(now - b->last_ns) * b->rate / 1e9;
        if (b->tokens > b->cap)
            b->tokens = b->cap;
        b->last_ns = now;
        if (b->tokens >= 1.0 - 1e-9)
            break;
        double need = ceil((1.0 - b->tokens) / b->rate * 1e9);
        uint64_t ns = need < 1 ? 1 : (uint64_t)need;
        if (o->sleep != NULL)
            o->sleep(o->sleep_ctx, ns);
        else
            default_sleep(NULL, ns);
    }
    b->tokens -= 1.0;
}

mb_status mb_dlq_replay(mb_dlq *d, const mb_dlq_replay_opts *opts, mb_dlq_publish_fn publish,
                        void *ctx, mb_dlq_replay_result *res, mb_err *err)
{
    mb_dlq_replay_result r = {0};
    if (res != NULL)
        *res = r;
    if (d == NULL || opts == NULL || (publish == NULL && !opts->dry_run))
        return mb_err_set(err, MB_EINVAL, "dlq replay: NULL argument");
    if (!(opts->rate_per_sec >= 0) || isinf(opts->rate_per_sec))
        return mb_err_set(err, MB_EINVAL, "dlq replay: rate must be a finite number >= 0");
    if (opts->on_error != MB_DLQ_REPLAY_STOP && opts->on_error != MB_DLQ_REPLAY_SKIP)
        return mb_err_set(err, MB_EINVAL, "dlq replay: unknown on_error %d", (int)opts->on_error);
    if (d->read_only && !opts->dry_run)
        return mb_err_set(err, MB_ESTATE, "dlq replay: %s is open read-only", d->dir);
    matcher m;
    mb_status st = matcher_init(d, &m, &opts->filter, err);
    uint64_t *ids = NULL;
    size_t n = 0;
    if (st == MB_OK)
        st = collect(d, &m, opts->max, &ids, &n, err);
    if (st != MB_OK)
        return st;
    r.total = n;
    bucket b = {opts->rate_per_sec, opts->burst ? opts->burst : 1, 0, 0};
    b.tokens = b.cap;
    b.last_ns = mb_clock_mono_ns(d->clock);
    mb_status first_fail = MB_OK;
    mb_err perr = {0};
    for (size_t i = 0; i < n; i++) {
        mb_dlq_entry *e = NULL;
        mb_err lerr = {0};
        mb_status rs = read_one(d, ids[i], m.f.include_replayed, &e, &lerr);
        if (rs == MB_ENOMEM || rs == MB_EIO) {
            st = mb_err_set(err, rs, "%s", lerr.msg);
            break;
        }
        if (rs != MB_OK) {
            r.gone++; /* purged, replayed or expired meanwhile, or corrupt */
        } else if (opts->dry_run) {
            r.published++;
        } else {
            bucket_take(d, &b, opts);
            mb_err pe = {0};
            mb_status ps = publish(ctx, e, &pe);
            if (ps != MB_OK) {
                r.failed++;
                if (first_fail == MB_OK) {
                    first_fail = ps;
                    r.first_failed_id = e->id;
                    mb_err_set(&perr, ps, "dlq replay: publishing entry %" PRIu64 " (%s): %s",
                               e->id, e->subject, pe.msg[0] ? pe.msg : mb_status_str(ps));
                }
                mb_dlq_entry_free(e);
                if (opts->on_error == MB_DLQ_REPLAY_STOP)
                    break;
                if (opts->progress != NULL)
                    opts->progress(opts->progress_ctx, i + 1, n);
                continue;
            }
            uint64_t id = e->id;
            if ((st = mb__dlq_mark(d, DLQ_REC_REPLAYED, &id, 1, err)) != MB_OK) {
                mb_dlq_entry_free(e);
                break;
            }
            r.published++;
        }
        mb_dlq_entry_free(e);
        if (opts->progress != NULL)
            opts->progress(opts->progress_ctx, i + 1, n);
    }
    mb__free(ids);
    if (res != NULL)
        *res = r;
    if (st == MB_OK && first_fail != MB_OK) {
        if (r.failed > 1)
            st = mb_err_set(err, first_fail, "%s (%zu entries failed)", perr.msg, r.failed);
        else
            st = mb_err_set(err, first_fail, "%s", perr.msg);
    }
    return st;
}

mb_status mb_dlq_purge(mb_dlq *d, const mb_dlq_filter *f, size_t *purged, mb_err *err)
{
    if (purged != NULL)
        *purged = 0;
    if (d == NULL)
        return mb_err_set(err, MB_EINVAL, "dlq purge: NULL dlq");
    if (d->read_only)
        return mb_err_set(err, MB_ESTATE, "dlq purge: %s is open read-only", d->dir);
    matcher m;
    mb_status st = matcher_init(d, &m, f, err);
    uint64_t *ids = NULL;
    size_t n = 0;
    if (st == MB_OK)
        st = collect(d, &m, 0, &ids, &n, err);
    for (size_t i = 0; st == MB_OK && i < n; i += DLQ_MARK_MAX) {
        size_t k = n - i < DLQ_MARK_MAX ? n - i : DLQ_MARK_MAX;
        st = mb__dlq_mark(d, DLQ_REC_PURGED, ids + i, k, err);
        if (st == MB_OK && purged != NULL)
            *purged += k;
    }
    mb__free(ids);
    return st;
}

mb_status mb_dlq_maintain(mb_dlq *d, size_t *dropped, mb_err *err)
{
    if (dropped != NULL)
        *dropped = 0;
    if (d == NULL)
        return mb_err_set(err, MB_EINVAL, "dlq maintain: NULL dlq");
    if (d->read_only)
        return mb_err_set(err, MB_ESTATE, "dlq maintain: %s is open read-only", d->dir);
    pthread_mutex_lock(&d->imu);
    size_t n = mb__dlq_expire(d, now_wall_ms(d));
    mb__dlq_sweep(d);
    mb__dlq_gauges(d);
    pthread_mutex_unlock(&d->imu);
    if (dropped != NULL)
        *dropped = n;
    return MB_OK;
}

mb_status mb_dlq_stats_get(mb_dlq *d, mb_dlq_stats *out)
{
    if (d == NULL || out == NULL)
        return MB_EINVAL;
    memset(out, 0, sizeof *out);
    int64_t now = now_wall_ms(d);
    pthread_mutex_lock(&d->imu);
    mb__dlq_gauges(d);
    out->depth = d->depth;
    out->stored = d->nix;
    out->bytes = atomic_load(&d->total_bytes);
    out->segments = d->nsegs;
    for (size_t i = 0; i < d->nix; i++) {
        if (d->ix[i].flags == 0) {
            out->oldest_added_ms = d->ix[i].added_ms;
            out->oldest_age_ms = mb__dlq_age_ms(now, out->oldest_added_ms);
            break;
        }
    }
    pthread_mutex_unlock(&d->imu);
    pthread_mutex_lock(&d->qmu);
    out->next_id = d->next_id;
    out->queued = d->qlen;
    pthread_mutex_unlock(&d->qmu);
    const dlq_metrics *x = &d->m;
    out->puts = mb_counter_get(x->puts);
    out->put_full = mb_counter_get(x->fail_full);
    out->put_limit = mb_counter_get(x->fail_limit);
    out->put_invalid = mb_counter_get(x->fail_invalid);
    out->put_io = mb_counter_get(x->fail_io);
    out->fsyncs = mb_counter_get(x->fsyncs);
    out->torn_records = mb_counter_get(x->torn);
    out->corrupt_records = mb_counter_get(x->corrupt);
    out->dropped_age = mb_counter_get(x->drop_age);
    out->dropped_size = mb_counter_get(x->drop_size);
    out->replayed = mb_counter_get(x->replayed);
    out->purged = mb_counter_get(x->purged);
    return MB_OK;
}
