/* SPDX-License-Identifier: MIT */
/*
 * dlq: the dead letter queue's segments, writer thread, puts, open and close.
 * dlq_recover.c reads a directory at open, dlq_format.c holds the record
 * format, dlq_ops.c the queries, replay, purge and retention by age.
 *
 * DESIGN
 *
 * Files. DIR/seg-NNNNNNNNNNNN.dlq (12+ digit sequence number), append-only,
 * plus DIR/dlq.lock (flock'd by the one writable opener). A segment starts
 * with a 32-byte header: "MBDLQSEG", format version u32 (1), CRC-32C u32 of
 * the other 28 bytes, sequence u64, base id u64 (an id above every id in
 * older segments, so ids keep growing after every entry is deleted). Records
 * follow, each framed as
 *     body_len u32 | crc u32 | version u8 (1) | type u8 | reserved u16 (0) | body
 * where crc is CRC-32C over body_len, version..reserved and the body. Types:
 *     1 entry:    id u64, added_ms i64, first_failure_ms i64, last_failure_ms
 *                 i64, status u32, attempts u32, then length-prefixed (u32)
 *                 subject, origin, error message, a u32 header count and
 *                 name/value pairs, and the payload;
 *     2 replayed, 3 purged: time_ms i64, count u32, count ids (u64).
 * All integers are little-endian. Ids grow strictly through the segments in
 * sequence order.
 *
 * Recovery. Open reads every segment in order and indexes every good record.
 * A bad record (length, CRC, version, type, structure, id order) in the
 * newest segment is a torn tail: the file is truncated there and fsync'd.
 * Elsewhere it is corruption: the rest of that segment is skipped, counted
 * and logged, never reported. A newest file with an incomplete header is a
 * torn creation (removed); any other bad header quarantines the file as
 * *.corrupt. Why stopping at the first bad record is right for the newest
 * segment: every durable put's record was followed by an fdatasync before the
 * put returned, and a later record can only be written after it, so the
 * records before the first bad one include every record whose put returned.
 *
 * Markers. Replay and purge append marker records instead of rewriting
 * files. A segment is deleted when none of its entries is live and every
 * segment that its markers point into has been deleted (otherwise an older
 * entry would come back to life); deletions go oldest first, each followed by
 * an fsync of the directory, so that after a crash a marker never outlives
 * the segment it is needed for. The active (newest) segment is never deleted.
 *
 * Threads. One writer thread per writable DLQ. Callers encode their record
 * and queue it under `qmu` (the id is assigned there, so ids follow queue
 * order). The writer takes the whole queue, seals each record's CRC, writes
 * the records of one segment with pwritev, calls fdatasync once, then under
 * `imu` indexes them and applies markers, and finally under `qmu` completes
 * every waiter with one broadcast and calls async callbacks without a lock.
 * While it writes, new puts accumulate: that is the group commit. A segment
 * rolls (new file, header, fsync of file and directory) when the next record
 * would pass segment_bytes. A failed write truncates the segment back to where
 * the batch began and fails that batch's records (MB_EIO); a failed fdatasync
 * fails them too and rolls to a fresh segment, since the old file's state is
 * then unknown. `imu` guards the segment list and index (also taken by
 * queries while they pread a record); `qmu` guards the queue. The writer
 * takes them one at a time, never nested. When idle it wakes every second to
 * refresh the age gauge, and runs retention by age every minute.
 *
 * Metrics (with opts->labels): mudbus_dlq_depth, mudbus_dlq_bytes,
 * mudbus_dlq_segments, mudbus_dlq_oldest_age_seconds (gauges);
 * mudbus_dlq_puts_total, mudbus_dlq_put_failures_total{reason=full|limit|
 * invalid|io}, mudbus_dlq_fsyncs_total, mudbus_dlq_torn_records_total,
 * mudbus_dlq_corrupt_records_total, mudbus_dlq_retention_dropped_total{reason=
 * age|size}, mudbus_dlq_replayed_total, mudbus_dlq_purged_total (counters);
 * mudbus_dlq_records_per_fsync (histogram).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "metrics_int.h"
#include "dlq_int.h"

#define DEFAULT_MAX_BYTES     (1ull << 30)
#define DEFAULT_MAX_AGE_MS    (7ull * 24 * 3600 * 1000)
#define DEFAULT_MAX_ENTRIES   4000000ull
#define DEFAULT_SEGMENT_BYTES (64ull << 20)
#define DEFAULT_QUEUE_MAX     4096
#define DEFAULT_QUEUE_BYTES   ((size_t)16 << 20)
#define DEFAULT_ENTRY_BYTES   ((size_t)1 << 20)
#define MAINTAIN_EVERY_MS     60000

void mb__dlq_logf(mb_dlq *d, const char *fmt, ...)
{
    if (d->log == NULL)
        return;
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    d->log(d->log_ctx, line);
}

static int64_t wall_ms(const mb_dlq *d)
{
    return (int64_t)(mb_clock_wall_ns(d->clock) / 1000000u);
}

void mb__dlq_seg_name(char *buf, size_t cap, uint64_t seq)
{
    snprintf(buf, cap, "seg-%012" PRIu64 ".dlq", seq);
}

int mb__dlq_sync_fd(const mb_dlq *d, int fd)
{
    if (d->nosync)
        return 0;
    int r;
    do
        r = fdatasync(fd);
    while (r != 0 && errno == EINTR);
    return r;
}

int mb__dlq_sync_dir(const mb_dlq *d)
{
    if (d->nosync)
        return 0;
    int r;
    do
        r = fsync(d->dirfd);
    while (r != 0 && errno == EINTR);
    return r;
}

int mb__dlq_pread_full(int fd, void *buf, size_t n, uint64_t off)
{
    uint8_t *p = buf;
    while (n > 0) {
        ssize_t r = pread(fd, p, n, (off_t)off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        p += r;
        n -= (size_t)r;
        off += (uint64_t)r;
    }
    return 0;
}

static int pwrite_full(int fd, const void *buf, size_t n, uint64_t off)
{
    const uint8_t *p = buf;
    while (n > 0) {
        ssize_t r = pwrite(fd, p, n, (off_t)off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        p += r;
        n -= (size_t)r;
        off += (uint64_t)r;
    }
    return 0;
}

/* ---- index ---- */

size_t mb__dlq_ix_lower(const mb_dlq *d, uint64_t id)
{
    size_t lo = 0, hi = d->nix;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (d->ix[mid].id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

int mb__dlq_ix_reserve(mb_dlq *d, size_t more)
{
    if (d->capix - d->nix >= more)
        return 0;
    size_t cap = d->capix ? d->capix : 1024;
    while (cap - d->nix < more)
        cap *= 2;
    dlq_ix *p = mb__realloc(d->ix, cap * sizeof *p);
    if (p == NULL)
        return -1;
    d->ix = p;
    d->capix = cap;
    return 0;
}

/* Append an entry (room reserved). */
void mb__dlq_ix_add(mb_dlq *d, dlq_seg *s, uint64_t off, uint32_t len, uint64_t id,
                    int64_t added_ms, int64_t last_ms, uint32_t status, uint32_t subj_hash)
{
    dlq_ix *x = &d->ix[d->nix++];
    x->id = id;
    x->seg = s;
    x->off = off;
    x->len = len;
    x->added_ms = added_ms;
    x->last_ms = last_ms;
    x->status = status;
    x->subj_hash = subj_hash;
    x->flags = 0;
    if (s->entries++ == 0)
        s->first_id = id;
    s->last_id = id;
    s->live++;
    d->depth++;
    atomic_fetch_add_explicit(&d->nstored, 1, memory_order_relaxed);
}

/* Apply a marker body (already checked) written in segment `in`. `live`:
 * count the state changes in the metrics (not during recovery). */
void mb__dlq_apply_marker(mb_dlq *d, uint8_t type, const uint8_t *body, dlq_seg *in, bool live)
{
    uint32_t n = mb__dlq_get_u32(body + 8);
    const uint8_t *ids = body + DLQ_MARK_FIXED;
    uint32_t flag = type == DLQ_REC_PURGED ? IX_PURGED : IX_REPLAYED;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t id = mb__dlq_get_u64(ids + 8 * (size_t)i);
        size_t pos = mb__dlq_ix_lower(d, id);
        if (pos >= d->nix || d->ix[pos].id != id)
            continue; /* its segment is gone: nothing to do */
        dlq_ix *x = &d->ix[pos];
        if (x->seg->seq < in->mark_min_seq)
            in->mark_min_seq = x->seg->seq;
        if (x->flags & flag)
            continue;
        if (x->flags == 0) {
            x->seg->live--;
            d->depth--;
        }
        if (live && flag == IX_PURGED && !(x->flags & IX_EXPIRED))
            mb_counter_add(d->m.purged, 1);
        if (live && flag == IX_REPLAYED)
            mb_counter_add(d->m.replayed, 1);
        x->flags |= flag;
    }
}

/* ---- segments ---- */

int mb__dlq_segs_push(mb_dlq *d, dlq_seg *s)
{
    if (d->nsegs == d->capsegs) {
        size_t cap = d->capsegs ? d->capsegs * 2 : 16;
        dlq_seg **p = mb__realloc(d->segs, cap * sizeof *p);
        if (p == NULL)
            return -1;
        d->segs = p;
        d->capsegs = cap;
    }
    d->segs[d->nsegs++] = s;
    return 0;
}

/* Create segment `seq` with its header, fsync'd with the directory. */
static mb_status seg_create(mb_dlq *d, uint64_t seq, uint64_t base_id, dlq_seg **out, mb_err *err)
{
    char name[64];
    mb__dlq_seg_name(name, sizeof name, seq);
    dlq_seg *s = mb__calloc(1, sizeof *s);
    if (s == NULL)
        return mb_err_set(err, MB_ENOMEM, "dlq: out of memory");
    int fd = openat(d->dirfd, name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        int e = errno;
        mb__free(s);
        return mb_err_set(err, MB_EIO, "dlq: creating %s/%s: %s", d->dir, name, strerror(e));
    }
    uint8_t hdr[DLQ_SEG_HDR];
    mb__dlq_seg_header(hdr, seq, base_id);
    if (pwrite_full(fd, hdr, sizeof hdr, 0) != 0 || mb__dlq_sync_fd(d, fd) != 0 ||
        mb__dlq_sync_dir(d) != 0) {
        int e = errno;
        close(fd);
        unlinkat(d->dirfd, name, 0);
        mb__free(s);
        return mb_err_set(err, MB_EIO, "dlq: writing %s/%s: %s", d->dir, name, strerror(e));
    }
    s->seq = seq;
    s->base_id = base_id;
    s->fd = fd;
    s->size = DLQ_SEG_HDR;
    s->mark_min_seq = UINT64_MAX;
    *out = s;
    return MB_OK;
}

/* Remove segs[i] from the list, the disk and the index. Under imu. */
static void seg_delete(mb_dlq *d, size_t i)
{
    dlq_seg *s = d->segs[i];
    char name[64];
    mb__dlq_seg_name(name, sizeof name, s->seq);
    if (!d->read_only) {
        if (unlinkat(d->dirfd, name, 0) != 0 && errno != ENOENT) {
            mb__dlq_logf(d, "dlq: removing %s/%s: %s", d->dir, name, strerror(errno));
            return; /* keep it; a later sweep tries again */
        }
        if (mb__dlq_sync_dir(d) != 0)
            mb__dlq_logf(d, "dlq: fsync of %s: %s", d->dir, strerror(errno));
    }
    if (s->entries > 0) {
        size_t lo = mb__dlq_ix_lower(d, s->first_id);
        size_t hi = mb__dlq_ix_lower(d, s->last_id + 1);
        for (size_t k = lo; k < hi; k++) {
            if (d->ix[k].flags == 0)
                d->depth--;
        }
        memmove(d->ix + lo, d->ix + hi, (d->nix - hi) * sizeof *d->ix);
        d->nix -= hi - lo;
        atomic_fetch_sub_explicit(&d->nstored, hi - lo, memory_order_relaxed);
    }
    atomic_fetch_sub_explicit(&d->total_bytes, s->size, memory_order_relaxed);
    close(s->fd);
    mb__free(s);
    memmove(d->segs + i, d->segs + i + 1, (d->nsegs - i - 1) * sizeof *d->segs);
    d->nsegs--;
}

void mb__dlq_sweep(mb_dlq *d)
{
    if (d->read_only)
        return;
    size_t i = 0;
    while (d->nsegs > 0 && i + 1 < d->nsegs) {
        dlq_seg *s = d->segs[i];
        /* Markers here that point into an older segment that still exists
         * keep this segment alive; the segments are sorted, so the nearest
         * older one decides. */
        bool needed =
            s->mark_min_seq != UINT64_MAX && i > 0 && d->segs[i - 1]->seq >= s->mark_min_seq;
        if (s->live == 0 && !needed) {
            size_t before = d->nsegs;
            seg_delete(d, i);
            if (d->nsegs == before)
                i++; /* could not remove it */
        } else {
            i++;
        }
    }
}

size_t mb__dlq_expire(mb_dlq *d, int64_t now_ms)
{
    if (d->max_age_ms == MB_DLQ_UNLIMITED || d->max_age_ms > (uint64_t)INT64_MAX)
        return 0;
    int64_t cutoff = now_ms - (int64_t)d->max_age_ms;
    size_t n = 0;
    for (size_t i = 0; i < d->nix; i++) {
        dlq_ix *x = &d->ix[i];
        if ((x->flags & IX_DEAD) || x->added_ms > cutoff)
            continue;
        if (x->flags == 0) {
            x->seg->live--;
            d->depth--;
            n++;
        }
        x->flags |= IX_EXPIRED;
    }
    if (n > 0) {
        mb_counter_add(d->m.drop_age, n);
        mb__dlq_logf(d, "dlq: %zu entries older than %" PRIu64 " ms expired", n, d->max_age_ms);
    }
    return n;
}

void mb__dlq_gauges(mb_dlq *d)
{
    mb_gauge_set(d->m.depth, (int64_t)d->depth);
    mb_gauge_set(d->m.bytes, (int64_t)atomic_load(&d->total_bytes));
    mb_gauge_set(d->m.segments, (int64_t)d->nsegs);
    int64_t age = 0;
    for (size_t i = 0; i < d->nix; i++) {
        if (d->ix[i].flags == 0) {
            age = (int64_t)(mb__dlq_age_ms(wall_ms(d), d->ix[i].added_ms) / 1000);
            break;
        }
    }
    mb_gauge_set(d->m.oldest_age, age);
}

/* Whether `bytes` and `entries` more would pass max_bytes or max_entries. */
static bool over_limits(mb_dlq *d, uint64_t bytes, uint64_t entries)
{
    uint64_t total = atomic_load(&d->total_bytes);
    uint64_t stored = atomic_load(&d->nstored);
    return total > d->max_bytes || bytes > d->max_bytes - total || stored > d->max_entries ||
           entries > d->max_entries - stored;
}

/* DROP_OLDEST: make room for `bytes` and `entries` more by deleting the
 * oldest segments (never the active one). Under imu. */
static void drop_for_room(mb_dlq *d, uint64_t bytes, uint64_t entries)
{
    while (d->nsegs > 1 && over_limits(d, bytes, entries)) {
        dlq_seg *s = d->segs[0];
        uint64_t live = s->live;
        mb__dlq_logf(d, "dlq: full: dropping segment %" PRIu64 " with %" PRIu64 " live entries",
                     s->seq, live);
        size_t before = d->nsegs;
        seg_delete(d, 0);
        if (d->nsegs == before)
            return;
        mb_counter_add(d->m.drop_size, live);
    }
}

/* ---- writer ---- */

/* Roll to a new active segment. Writer thread (or open). */
static mb_status roll(mb_dlq *d, uint64_t base_id, mb_err *err)
{
    dlq_seg *s = NULL;
    pthread_mutex_lock(&d->imu);
    uint64_t seq = d->next_seg_seq++;
    pthread_mutex_unlock(&d->imu);
    mb_status st = seg_create(d, seq, base_id, &s, err);
    if (st != MB_OK)
        return st;
    pthread_mutex_lock(&d->imu);
    if (mb__dlq_segs_push(d, s) != 0) {
        pthread_mutex_unlock(&d->imu);
        char name[64];
        mb__dlq_seg_name(name, sizeof name, seq);
        close(s->fd);
        unlinkat(d->dirfd, name, 0);
        mb__free(s);
        return mb_err_set(err, MB_ENOMEM, "dlq: out of memory");
    }
    d->active = s;
    atomic_fetch_add(&d->total_bytes, s->size);
    mb__dlq_sweep(d); /* the old active segment may be all dead */
    mb__dlq_gauges(d);
    pthread_mutex_unlock(&d->imu);
    return MB_OK;
}

static dlq_seg *active_seg(mb_dlq *d)
{
    /* Only the writer (and open, before it starts) changes the active
     * segment (under imu), so the writer may read it without the lock;
     * other threads may be shifting the segs array meanwhile. */
    return d->active;
}

typedef struct batch_state {
    uint64_t last_id; /* highest entry id written so far */
    bool need_roll;   /* the active segment's state is unknown (failed fsync) */
} batch_state;

/* Write items [first, end) into the active segment at its end, fsync, and
 * index them. Returns MB_EIO (err set) with the segment truncated back. */
static mb_status write_run(mb_dlq *d, dlq_item *first, dlq_item *end, size_t n, uint64_t bytes,
                           batch_state *bs, mb_err *err)
{
    dlq_seg *s = active_seg(d);
    uint64_t off0 = s->size, off = off0;
    struct iovec iov[64];
    dlq_item *it = first;
    while (it != end) {
        int k = 0;
        size_t chunk = 0;
        while (it != end && k < 64) {
            iov[k].iov_base = it->rec;
            iov[k].iov_len = it->len;
            chunk += it->len;
            k++;
            it = it->next;
        }
        int idx = 0;
        while (chunk > 0) {
            ssize_t r = pwritev(s->fd, iov + idx, k - idx, (off_t)off);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0) {
                int e = r < 0 ? errno : ENOSPC;
                if (ftruncate(s->fd, (off_t)off0) != 0)
                    bs->need_roll = true;
                return mb_err_set(err, MB_EIO, "dlq: writing segment %" PRIu64 ": %s", s->seq,
                                  strerror(e));
            }
            off += (uint64_t)r;
            chunk -= (size_t)r;
            size_t done = (size_t)r;
            while (idx < k && done >= iov[idx].iov_len) {
                done -= iov[idx].iov_len;
                idx++;
            }
            if (idx < k) {
                iov[idx].iov_base = (uint8_t *)iov[idx].iov_base + done;
                iov[idx].iov_len -= done;
            }
        }
    }
    if (mb__dlq_sync_fd(d, s->fd) != 0) {
        int e = errno;
        bs->need_roll = true;
        if (ftruncate(s->fd, (off_t)off0) != 0)
            mb__dlq_logf(d, "dlq: truncating segment %" PRIu64 ": %s", s->seq, strerror(errno));
        return mb_err_set(err, MB_EIO, "dlq: fdatasync of segment %" PRIu64 ": %s", s->seq,
                          strerror(e));
    }
    mb_counter_add(d->m.fsyncs, 1);
    mb_histogram_observe(d->m.per_fsync, n);

    pthread_mutex_lock(&d->imu);
    off = off0;
    for (it = first; it != end; it = it->next) {
        if (it->type == DLQ_REC_ENTRY) {
            mb__dlq_ix_add(d, s, off, (uint32_t)it->len, it->id, it->added_ms, it->last_ms,
                           it->status, it->subj_hash);
            bs->last_id = it->id;
        } else {
            mb__dlq_apply_marker(d, it->type, it->rec + DLQ_FRAME, s, true);
        }
        off += it->len;
    }
    s->size = off;
    atomic_fetch_add(&d->total_bytes, bytes);
    mb__dlq_sweep(d);
    mb__dlq_gauges(d);
    pthread_mutex_unlock(&d->imu);
    return MB_OK;
}

/* Write a batch; returns the first item that failed (NULL: all written). */
static dlq_item *write_batch(mb_dlq *d, dlq_item *batch, batch_state *bs, mb_status *st,
                             mb_err *err)
{
    size_t entries = 0;
    uint64_t bytes = 0;
    for (dlq_item *it = batch; it != NULL; it = it->next) {
        entries += it->type == DLQ_REC_ENTRY;
        bytes += it->len;
        mb__dlq_seal(it->rec, it->len);
    }
    /* The batch may roll into new segments: count their headers too. */
    uint64_t need = bytes + (bytes / d->segment_bytes + 1) * DLQ_SEG_HDR;
    bool drop = d->policy == MB_DLQ_FULL_DROP_OLDEST;
    pthread_mutex_lock(&d->imu);
    int rc = mb__dlq_ix_reserve(d, entries);
    if (rc == 0 && drop)
        drop_for_room(d, need, entries);
    bool full_active = rc == 0 && drop && d->nsegs == 1 && active_seg(d)->size > DLQ_SEG_HDR &&
                       over_limits(d, need, entries);
    pthread_mutex_unlock(&d->imu);
    if (rc != 0) {
        *st = mb_err_set(err, MB_ENOMEM, "dlq: out of memory indexing %zu entries", entries);
        return batch;
    }
    if (full_active || bs->need_roll) {
        /* Only the active segment is left and it must go, or it cannot be
         * trusted: start a new one (and drop the old one if full). */
        if ((*st = roll(d, bs->last_id + 1, err)) != MB_OK)
            return batch;
        bs->need_roll = false;
        if (full_active) {
            pthread_mutex_lock(&d->imu);
            drop_for_room(d, need, entries);
            pthread_mutex_unlock(&d->imu);
        }
    }
    dlq_item *it = batch;
    while (it != NULL) {
        dlq_seg *s = active_seg(d);
        dlq_item *first = it;
        uint64_t run = 0;
        size_t n = 0;
        while (it != NULL && (s->size + run + it->len <= d->segment_bytes ||
                              (s->size == DLQ_SEG_HDR && n == 0))) {
            run += it->len;
            n++;
            it = it->next;
        }
        if (n > 0 && (*st = write_run(d, first, it, n, run, bs, err)) != MB_OK)
            return first;
        if (it != NULL) {
            uint64_t base = bs->last_id + 1;
            if ((*st = roll(d, base, err)) != MB_OK)
                return it;
        }
    }
    *st = MB_OK;
    return NULL;
}

/* Report a batch: items before `failed` succeeded, the rest failed with
 * `st`. Async callbacks run first (without a lock), so that when flush or a
 * durable put returns, the callbacks of everything before it have run. */
static void complete(mb_dlq *d, dlq_item *batch, dlq_item *failed, mb_status st, const mb_err *err)
{
    bool bad = false;
    for (dlq_item *it = batch; it != NULL; it = it->next) {
        bad = bad || it == failed;
        if (it->done != NULL)
            it->done(it->done_ctx, it->id, bad ? st : MB_OK);
    }
    uint64_t last_seq = 0;
    size_t nfail = 0;
    bad = false;
    pthread_mutex_lock(&d->qmu);
    for (dlq_item *it = batch; it != NULL; it = it->next) {
        bad = bad || it == failed;
        last_seq = it->seq;
        if (bad) {
            nfail++;
            if (it->waiter == NULL)
                d->fail_unreported++;
            if (it->type == DLQ_REC_ENTRY)
                mb_counter_add(d->m.fail_io, 1);
        }
        if (it->waiter != NULL) {
            it->waiter->st = bad ? st : MB_OK;
            if (bad)
                snprintf(it->waiter->msg, sizeof it->waiter->msg, "%s", err->msg);
            it->waiter->done = true;
        }
    }
    if (nfail > 0) {
        d->fail_total += nfail;
        snprintf(d->last_error, sizeof d->last_error, "%s", err->msg);
    }
    d->completed_seq = last_seq;
    d->inflight_bytes = 0;
    d->inflight_entries = 0;
    pthread_cond_broadcast(&d->done_cv);
    pthread_mutex_unlock(&d->qmu);
    if (nfail > 0)
        mb__dlq_logf(d, "%s (%zu records failed)", err->msg, nfail);
    while (batch != NULL) {
        dlq_item *next = batch->next;
        mb__free(batch);
        batch = next;
    }
}

static void tick(mb_dlq *d)
{
    int64_t mono = (int64_t)(mb_clock_mono_ns(d->clock) / 1000000u);
    pthread_mutex_lock(&d->imu);
    if (mono - d->last_maintain_mono_ms >= MAINTAIN_EVERY_MS) {
        d->last_maintain_mono_ms = mono;
        mb__dlq_expire(d, wall_ms(d));
        mb__dlq_sweep(d);
    }
    mb__dlq_gauges(d);
    pthread_mutex_unlock(&d->imu);
}

static void *writer_main(void *arg)
{
    mb_dlq *d = arg;
    batch_state bs = {0};
    pthread_mutex_lock(&d->qmu);
    bs.last_id = d->next_id - 1;
    for (;;) {
        while (!d->closing && (d->qhead == NULL || d->paused)) {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            ts.tv_sec += 1;
            if (pthread_cond_timedwait(&d->wcv, &d->qmu, &ts) == ETIMEDOUT) {
                pthread_mutex_unlock(&d->qmu);
                tick(d);
                pthread_mutex_lock(&d->qmu);
            }
        }
        if (d->qhead == NULL)
            break; /* closing and drained */
        dlq_item *batch = d->qhead;
        d->qhead = d->qtail = NULL;
        d->inflight_bytes = d->qbytes;
        d->inflight_entries = d->qentries;
        d->qlen = d->qbytes = d->qentries = 0;
        pthread_cond_broadcast(&d->space_cv);
        pthread_mutex_unlock(&d->qmu);

        mb_err err = {0};
        mb_status st = MB_OK;
        dlq_item *failed = write_batch(d, batch, &bs, &st, &err);
        complete(d, batch, failed, st, &err);
        pthread_mutex_lock(&d->qmu);
    }
    pthread_mutex_unlock(&d->qmu);
    return NULL;
}

/* ---- queue ---- */

/* Queue `it` (ownership passes on MB_OK). Entries get their id here. */
static mb_status enqueue(mb_dlq *d, dlq_item *it, bool block, uint64_t *id, mb_err *err)
{
    pthread_mutex_lock(&d->qmu);
    for (;;) {
        if (d->closing) {
            pthread_mutex_unlock(&d->qmu);
            return mb_err_set(err, MB_ECLOSED, "dlq: closing");
        }
        if (d->qlen < d->queue_max && it->len <= d->queue_max_bytes - d->qbytes)
            break;
        if (!block) {
            pthread_mutex_unlock(&d->qmu);
            mb_counter_add(d->m.fail_full, 1);
            return mb_err_set(err, MB_EAGAIN, "dlq: queue full (%zu records, %zu bytes)", d->qlen,
                              d->qbytes);
        }
        pthread_cond_wait(&d->space_cv, &d->qmu);
    }
    if (it->type == DLQ_REC_ENTRY && d->policy == MB_DLQ_FULL_REJECT) {
        uint64_t used = atomic_load(&d->total_bytes) + d->qbytes + d->inflight_bytes;
        uint64_t stored = atomic_load(&d->nstored) + d->qentries + d->inflight_entries;
        /* DLQ_SEG_HDR: room for the header of a segment this may roll to. */
        if (used > d->max_bytes || it->len + DLQ_SEG_HDR > d->max_bytes - used ||
            stored >= d->max_entries) {
            pthread_mutex_unlock(&d->qmu);
            mb_counter_add(d->m.fail_limit, 1);
            return mb_err_set(err, MB_ELIMIT,
                              "dlq: full (%" PRIu64 " of %" PRIu64 " bytes, %" PRIu64
                              " entries): new entries are refused",
                              used, d->max_bytes, stored);
        }
    }
    if (it->type == DLQ_REC_ENTRY && d->next_id == 0) {
        pthread_mutex_unlock(&d->qmu);
        mb_counter_add(d->m.fail_limit, 1);
        return mb_err_set(err, MB_ELIMIT, "dlq: every entry id is used up");
    }
    if (it->type == DLQ_REC_ENTRY) {
        it->id = d->next_id++;
        mb__dlq_put_u64(it->rec + DLQ_FRAME, it->id);
        d->qentries++;
        if (id != NULL)
            *id = it->id;
    }
    it->seq = ++d->enq_seq;
    it->next = NULL;
    if (d->qtail != NULL)
        d->qtail->next = it;
    else
        d->qhead = it;
    d->qtail = it;
    d->qlen++;
    d->qbytes += it->len;
    pthread_cond_signal(&d->wcv);
    if (it->waiter != NULL) {
        dlq_waiter *w = it->waiter; /* `it` belongs to the writer now */
        while (!w->done)
            pthread_cond_wait(&d->done_cv, &d->qmu);
    }
    pthread_mutex_unlock(&d->qmu);
    return MB_OK;
}

static mb_status put_common(mb_dlq *d, mb_dlq_entry *e, bool durable, mb_dlq_done_fn done,
                            void *ctx, uint64_t *id, mb_err *err)
{
    if (d == NULL || e == NULL)
        return mb_err_set(err, MB_EINVAL, "dlq put: NULL argument");
    if (d->read_only)
        return mb_err_set(err, MB_ESTATE, "dlq put: %s is open read-only", d->dir);
    mb_err local = {0};
    size_t size = mb__dlq_entry_size(e, &local);
    if (size == 0) {
        mb_counter_add(d->m.fail_invalid, 1);
        return mb_err_set(err, local.code, "%s", local.msg);
    }
    if (size > d->max_entry_bytes) {
        mb_counter_add(d->m.fail_invalid, 1);
        return mb_err_set(err, MB_ETOOBIG, "dlq put: entry of %zu bytes is over the %zu limit",
                          size, d->max_entry_bytes);
    }
    int64_t now = wall_ms(d);
    int64_t last = e->last_failure_ms != 0 ? e->last_failure_ms : now;
    int64_t first = e->first_failure_ms != 0 ? e->first_failure_ms : last;
    if (first > last) {
        mb_counter_add(d->m.fail_invalid, 1);
        return mb_err_set(err, MB_EINVAL, "dlq put: first failure after the last one");
    }
    dlq_item *it = mb__malloc(sizeof *it + size);
    if (it == NULL)
        return mb_err_set(err, MB_ENOMEM, "dlq put: out of memory");
    mb__dlq_entry_encode(it->rec, size, e, 0, now, first, last);
    dlq_waiter w = {false, MB_OK, ""};
    it->type = DLQ_REC_ENTRY;
    it->len = size;
    it->added_ms = now;
    it->last_ms = last;
    it->status = (uint32_t)e->error;
    it->subj_hash = mb__dlq_subject_hash(e->subject, strlen(e->subject));
    it->waiter = durable ? &w : NULL;
    it->done = done;
    it->done_ctx = ctx;
    uint64_t assigned = 0;
    mb_status st = enqueue(d, it, false, &assigned, err);
    if (st != MB_OK) {
        mb__free(it);
        return st;
    }
    mb_counter_add(d->m.puts, 1);
    e->id = assigned;
    e->added_ms = now;
    if (id != NULL)
        *id = assigned;
    if (durable && w.st != MB_OK)
        return mb_err_set(err, w.st, "%s", w.msg);
    return MB_OK;
}

mb_status mb_dlq_put(mb_dlq *d, mb_dlq_entry *e, bool durable, uint64_t *id, mb_err *err)
{
    return put_common(d, e, durable, NULL, NULL, id, err);
}

mb_status mb_dlq_put_async(mb_dlq *d, mb_dlq_entry *e, mb_dlq_done_fn done, void *ctx, uint64_t *id,
                           mb_err *err)
{
    if (done == NULL)
        return mb_err_set(err, MB_EINVAL, "dlq put: NULL completion function");
    return put_common(d, e, false, done, ctx, id, err);
}

mb_status mb__dlq_mark(mb_dlq *d, uint8_t type, const uint64_t *ids, size_t n, mb_err *err)
{
    size_t size = DLQ_FRAME + DLQ_MARK_FIXED + 8 * n;
    dlq_item *it = mb__calloc(1, sizeof *it + size);
    if (it == NULL)
        return mb_err_set(err, MB_ENOMEM, "dlq: out of memory");
    uint8_t *r = it->rec;
    mb__dlq_put_u32(r, (uint32_t)(size - DLQ_FRAME));
    r[8] = DLQ_VERSION;
    r[9] = type;
    mb__dlq_put_u64(r + DLQ_FRAME, (uint64_t)wall_ms(d));
    mb__dlq_put_u32(r + DLQ_FRAME + 8, (uint32_t)n);
    for (size_t i = 0; i < n; i++)
        mb__dlq_put_u64(r + DLQ_FRAME + DLQ_MARK_FIXED + 8 * i, ids[i]);
    dlq_waiter w = {false, MB_OK, ""};
    it->type = type;
    it->len = size;
    it->waiter = &w;
    mb_status st = enqueue(d, it, true, NULL, err);
    if (st != MB_OK) {
        mb__free(it);
        return st;
    }
    if (w.st != MB_OK)
        return mb_err_set(err, w.st, "%s", w.msg);
    return MB_OK;
}

mb_status mb_dlq_flush(mb_dlq *d, mb_err *err)
{
    if (d == NULL)
        return mb_err_set(err, MB_EINVAL, "dlq flush: NULL dlq");
    if (d->read_only)
        return mb_err_set(err, MB_ESTATE, "dlq flush: %s is open read-only", d->dir);
    pthread_mutex_lock(&d->qmu);
    uint64_t target = d->enq_seq;
    while (d->completed_seq < target)
        pthread_cond_wait(&d->done_cv, &d->qmu);
    /* Report every failure no caller has been told of, including those the
     * writer met before this call started (a non-durable put returns before
     * its record is written). */
    mb_status st = MB_OK;
    if (d->fail_unreported != 0)
        st = mb_err_set(err, MB_EIO, "dlq flush: %" PRIu64 " records failed: %s",
                        d->fail_unreported, d->last_error);
    d->fail_unreported = 0;
    pthread_mutex_unlock(&d->qmu);
    return st;
}

void mb__dlq_pause(mb_dlq *d, bool paused)
{
    pthread_mutex_lock(&d->qmu);
    d->paused = paused;
    pthread_cond_signal(&d->wcv);
    pthread_mutex_unlock(&d->qmu);
}

/* ---- open / close ---- */

/* `reason="r"` joined with the caller's labels, or just those (r NULL). */
static const char *labels_for(char *buf, size_t cap, const char *reason, const char *labels)
{
    if (reason == NULL)
        return labels;
    snprintf(buf, cap, "reason=\"%s\"%s%s", reason, labels ? "," : "", labels ? labels : "");
    return buf;
}

static mb_status reg_metrics(mb_dlq *d, mb_metrics *m, const char *L, mb_err *err)
{
    static const char fail_help[] = "DLQ puts refused or failed, by reason.";
    static const char drop_help[] = "Live DLQ entries removed by retention, by reason.";
    dlq_metrics *x = &d->m;
    char b[256];
    mb_status st;
#define G(name, help, out)                                                                         \
    if ((st = mb_metrics_gauge(m, name, help, L, &x->out, err)) != MB_OK)                          \
    return st
#define C(name, help, reason, out)                                                                 \
    if ((st = mb_metrics_counter(m, name, help, labels_for(b, sizeof b, reason, L), &x->out,       \
                                 err)) != MB_OK)                                                   \
    return st
    G("mudbus_dlq_depth", "Live entries in the dead letter queue.", depth);
    G("mudbus_dlq_bytes", "Bytes of all DLQ segment files.", bytes);
    G("mudbus_dlq_segments", "DLQ segment files.", segments);
    G("mudbus_dlq_oldest_age_seconds", "Age of the oldest live DLQ entry.", oldest_age);
    C("mudbus_dlq_puts_total", "Entries accepted into the DLQ.", NULL, puts);
    C("mudbus_dlq_put_failures_total", fail_help, "full", fail_full);
    C("mudbus_dlq_put_failures_total", fail_help, "limit", fail_limit);
    C("mudbus_dlq_put_failures_total", fail_help, "invalid", fail_invalid);
    C("mudbus_dlq_put_failures_total", fail_help, "io", fail_io);
    C("mudbus_dlq_fsyncs_total", "fdatasync calls on DLQ segments.", NULL, fsyncs);
    C("mudbus_dlq_torn_records_total", "Torn DLQ tails found at open.", NULL, torn);
    C("mudbus_dlq_corrupt_records_total", "Corrupt DLQ records skipped.", NULL, corrupt);
    C("mudbus_dlq_retention_dropped_total", drop_help, "age", drop_age);
    C("mudbus_dlq_retention_dropped_total", drop_help, "size", drop_size);
    C("mudbus_dlq_replayed_total", "DLQ entries replayed.", NULL, replayed);
    C("mudbus_dlq_purged_total", "DLQ entries purged.", NULL, purged);
#undef G
#undef C
    return mb_metrics_histogram(m, "mudbus_dlq_records_per_fsync",
                                "DLQ records made durable by one fdatasync.", L, 1.0, &x->per_fsync,
                                err);
}

/* Take back the metrics registered in a caller's registry, when open fails
 * part way, so that the registry is as it was and open can be retried. */
static void forget_metrics(mb_dlq *d, mb_metrics *m)
{
    if (m == NULL || m == d->own_metrics)
        return;
    dlq_metrics *x = &d->m;
    const void *all[] = {x->depth,     x->bytes,      x->segments,     x->oldest_age, x->puts,
                         x->fail_full, x->fail_limit, x->fail_invalid, x->fail_io,    x->fsyncs,
                         x->torn,      x->corrupt,    x->drop_age,     x->drop_size,  x->replayed,
                         x->purged,    x->per_fsync};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        mb__metrics_forget(m, all[i]);
}

static void dlq_free(mb_dlq *d)
{
    for (size_t i = 0; i < d->nsegs; i++) {
        close(d->segs[i]->fd);
        mb__free(d->segs[i]);
    }
    mb__free(d->segs);
    mb__free(d->ix);
    if (d->lockfd >= 0)
        close(d->lockfd); /* releases the flock */
    if (d->dirfd >= 0)
        close(d->dirfd);
    mb_metrics_destroy(d->own_metrics);
    pthread_mutex_destroy(&d->imu);
    pthread_mutex_destroy(&d->qmu);
    pthread_cond_destroy(&d->wcv);
    pthread_cond_destroy(&d->done_cv);
    pthread_cond_destroy(&d->space_cv);
    mb__free(d->dir);
    mb__free(d);
}

static mb_status resolve_opts(mb_dlq *d, const mb_dlq_opts *o, mb_err *err)
{
    d->max_bytes = o->max_bytes ? o->max_bytes : DEFAULT_MAX_BYTES;
    d->max_age_ms = o->max_age_ms ? o->max_age_ms : DEFAULT_MAX_AGE_MS;
    d->max_entries = o->max_entries ? o->max_entries : DEFAULT_MAX_ENTRIES;
    d->policy = o->full_policy;
    if (d->policy != MB_DLQ_FULL_REJECT && d->policy != MB_DLQ_FULL_DROP_OLDEST)
        return mb_err_set(err, MB_EINVAL, "dlq: unknown full_policy %d", (int)d->policy);
    uint64_t seg =
        d->max_bytes / 8 < DEFAULT_SEGMENT_BYTES ? d->max_bytes / 8 : DEFAULT_SEGMENT_BYTES;
    d->segment_bytes = o->segment_bytes ? o->segment_bytes : (seg > 0 ? seg : 1);
    size_t qb =
        d->max_bytes / 2 < DEFAULT_QUEUE_BYTES ? (size_t)(d->max_bytes / 2) : DEFAULT_QUEUE_BYTES;
    d->queue_max = o->queue_max ? o->queue_max : DEFAULT_QUEUE_MAX;
    d->queue_max_bytes = o->queue_max_bytes ? o->queue_max_bytes : qb;
    size_t eb = d->queue_max_bytes < DEFAULT_ENTRY_BYTES ? d->queue_max_bytes : DEFAULT_ENTRY_BYTES;
    d->max_entry_bytes = o->max_entry_bytes ? o->max_entry_bytes : eb;
    if (d->max_entry_bytes > MB_DLQ_ENTRY_HARD_MAX)
        return mb_err_set(err, MB_EINVAL, "dlq: max_entry_bytes above %u",
                          (unsigned)MB_DLQ_ENTRY_HARD_MAX);
    if (d->max_entry_bytes > d->queue_max_bytes || d->max_entry_bytes < 128)
        return mb_err_set(err, MB_EINVAL,
                          "dlq: max_entry_bytes (%zu) must be 128..queue_max_bytes (%zu)",
                          d->max_entry_bytes, d->queue_max_bytes);
    if (d->queue_max_bytes > d->max_bytes)
        return mb_err_set(err, MB_EINVAL, "dlq: queue_max_bytes above max_bytes");
    d->clock = o->clock ? o->clock : mb_clock_system();
    d->log = o->log;
    d->log_ctx = o->log_ctx;
    return MB_OK;
}

mb_status mb__dlq_open_ex(const char *dir, const mb_dlq_opts *opts, unsigned flags, mb_dlq **out,
                          mb_err *err)
{
    if (dir == NULL || dir[0] == '\0' || out == NULL)
        return mb_err_set(err, MB_EINVAL, "dlq open: NULL or empty argument");
    mb_dlq_opts dflt = {0};
    const mb_dlq_opts *o = opts ? opts : &dflt;
    mb_dlq *d = mb__calloc(1, sizeof *d);
    if (d == NULL)
        return mb_err_set(err, MB_ENOMEM, "dlq open: out of memory");
    d->dirfd = d->lockfd = -1;
    d->read_only = o->read_only;
    d->nosync = (flags & MB__DLQ_NOSYNC) != 0;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&d->imu, NULL);
    pthread_mutex_init(&d->qmu, NULL);
    pthread_cond_init(&d->wcv, &ca);
    pthread_cond_init(&d->done_cv, NULL);
    pthread_cond_init(&d->space_cv, NULL);
    pthread_condattr_destroy(&ca);
    mb_status st = resolve_opts(d, o, err);
    mb_metrics *m = o->metrics;
    if (st == MB_OK && (d->dir = mb__strdup(dir)) == NULL)
        st = mb_err_set(err, MB_ENOMEM, "dlq open: out of memory");
    if (st == MB_OK && m == NULL && (st = mb_metrics_create(&d->own_metrics, err)) == MB_OK)
        m = d->own_metrics;
    if (st == MB_OK)
        st = reg_metrics(d, m, o->labels, err);
    if (st != MB_OK) {
        forget_metrics(d, m);
        dlq_free(d);
        return st;
    }
    if (o->create && !d->read_only && mkdir(dir, 0700) == 0) {
        /* Make the new directory's entry durable in its parent. */
        char *parent = mb__strdup(dir);
        if (parent != NULL) {
            char *slash = strrchr(parent, '/');
            const char *pd = slash == NULL ? "." : (slash == parent ? "/" : parent);
            if (slash != NULL && slash != parent)
                *slash = '\0';
            int pfd = open(pd, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
            if (pfd >= 0) {
                if (!d->nosync)
                    fsync(pfd);
                close(pfd);
            }
            mb__free(parent);
        }
    }
    d->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (d->dirfd < 0) {
        int e = errno;
        forget_metrics(d, m);
        dlq_free(d);
        return mb_err_set(err, e == ENOENT ? MB_ENOTFOUND : MB_EIO, "dlq open: %s: %s", dir,
                          strerror(e));
    }
    if (!d->read_only) {
        d->lockfd = openat(d->dirfd, "dlq.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        if (d->lockfd < 0 || flock(d->lockfd, LOCK_EX | LOCK_NB) != 0) {
            int e = errno;
            forget_metrics(d, m);
            dlq_free(d);
            if (e == EWOULDBLOCK)
                return mb_err_set(err, MB_ESTATE,
                                  "dlq open: %s is in use by another writer (dlq.lock)", dir);
            return mb_err_set(err, MB_EIO, "dlq open: %s/dlq.lock: %s", dir, strerror(e));
        }
    }
    st = mb__dlq_recover(d, err);
    if (st == MB_OK && !d->read_only && d->nsegs == 0) {
        dlq_seg *s = NULL;
        st = seg_create(d, d->next_seg_seq++, d->next_id, &s, err);
        if (st == MB_OK && mb__dlq_segs_push(d, s) != 0) {
            /* Leave the directory as it was: no empty segment behind. */
            char name[64];
            mb__dlq_seg_name(name, sizeof name, s->seq);
            close(s->fd);
            unlinkat(d->dirfd, name, 0);
            mb__free(s);
            st = mb_err_set(err, MB_ENOMEM, "dlq open: out of memory");
        }
        if (st == MB_OK)
            atomic_fetch_add(&d->total_bytes, s->size);
    }
    if (st == MB_OK && d->nsegs > 0)
        d->active = d->segs[d->nsegs - 1];
    if (st == MB_OK) {
        d->last_maintain_mono_ms = (int64_t)(mb_clock_mono_ns(d->clock) / 1000000u);
        mb__dlq_expire(d, wall_ms(d));
        mb__dlq_sweep(d);
        mb__dlq_gauges(d);
    }
    if (st == MB_OK && !d->read_only) {
        if (pthread_create(&d->writer, NULL, writer_main, d) != 0)
            st = mb_err_set(err, MB_ENOMEM, "dlq open: cannot start the writer thread");
        else
            d->writer_started = true;
    }
    if (st != MB_OK) {
        forget_metrics(d, m);
        dlq_free(d);
        return st;
    }
    *out = d;
    return MB_OK;
}

mb_status mb_dlq_open(const char *dir, const mb_dlq_opts *opts, mb_dlq **out, mb_err *err)
{
    return mb__dlq_open_ex(dir, opts, 0, out, err);
}

mb_status mb_dlq_close(mb_dlq *d, mb_err *err)
{
    if (d == NULL)
        return MB_OK;
    mb_status st = MB_OK;
    if (d->writer_started) {
        pthread_mutex_lock(&d->qmu);
        d->closing = true;
        d->paused = false;
        pthread_cond_signal(&d->wcv);
        pthread_mutex_unlock(&d->qmu);
        pthread_join(d->writer, NULL);
        if (d->fail_unreported != 0)
            st = mb_err_set(err, MB_EIO, "dlq close: %" PRIu64 " queued records failed: %s",
                            d->fail_unreported, d->last_error);
    }
    dlq_free(d);
    return st;
}
