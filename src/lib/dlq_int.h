/* SPDX-License-Identifier: MIT */
/*
 * dlq_int: the internals shared by the files of the DLQ module (dlq.c: open,
 * close, the writer thread, puts, segments; dlq_recover.c: reading a
 * directory at open; dlq_format.c: the on-disk record format, subject
 * patterns, entry copies; dlq_ops.c: list, show, replay, purge, retention,
 * stats), plus two hooks for tests and fuzzing. Internal to
 * the library. The format and the locking rules are described in the DESIGN
 * comment of dlq.c.
 */
#ifndef MUDBUS_DLQ_INT_H
#define MUDBUS_DLQ_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mudbus/dlq.h"

/* ---- on-disk format (little-endian) ---- */

#define DLQ_SEG_MAGIC    "MBDLQSEG"
#define DLQ_SEG_HDR      32 /* magic[8] version u32 crc u32 seq u64 base_id u64 */
#define DLQ_FRAME        12 /* body_len u32, crc u32, version u8, type u8, reserved u16 */
#define DLQ_VERSION      1
#define DLQ_REC_ENTRY    1
#define DLQ_REC_REPLAYED 2
#define DLQ_REC_PURGED   3
#define DLQ_BODY_MAX     (MB_DLQ_ENTRY_HARD_MAX + 64u) /* larger lengths are corrupt */
#define DLQ_ENTRY_FIXED  40   /* id, added, first, last (8 each), status, attempts (4 each) */
#define DLQ_MARK_FIXED   12   /* time_ms i64, count u32; then count u64 ids */
#define DLQ_MARK_MAX     8192 /* ids per marker record */

/* A decoded entry body: pointers into the record buffer. */
typedef struct dlq_view {
    uint64_t id;
    int64_t added_ms, first_ms, last_ms;
    uint32_t status, attempts;
    const uint8_t *subject, *origin, *message, *headers, *payload;
    uint32_t subject_len, origin_len, message_len, nheaders, headers_len, payload_len;
} dlq_view;

void mb__dlq_put_u32(uint8_t *p, uint32_t v);
void mb__dlq_put_u64(uint8_t *p, uint64_t v);
uint32_t mb__dlq_get_u32(const uint8_t *p);
uint64_t mb__dlq_get_u64(const uint8_t *p);

/* The segment file header for `seq` / `base_id` into out[DLQ_SEG_HDR]. */
void mb__dlq_seg_header(uint8_t *out, uint64_t seq, uint64_t base_id);
/* 0 and the fields when `h` is a valid header, -1 otherwise. */
int mb__dlq_seg_header_parse(const uint8_t *h, uint64_t *seq, uint64_t *base_id);

/* Encoded size of an entry record (frame included), or 0 when a field breaks
 * a rule (err says which). Checks everything but the size limit. */
size_t mb__dlq_entry_size(const mb_dlq_entry *e, mb_err *err);
/* Encode `e` (already checked by mb__dlq_entry_size, giving `size`) into
 * rec[size]; the CRC is left for mb__dlq_seal. */
void mb__dlq_entry_encode(uint8_t *rec, size_t size, const mb_dlq_entry *e, uint64_t id,
                          int64_t added_ms, int64_t first_ms, int64_t last_ms);
/* Write the frame's CRC over the record (frame + body). */
void mb__dlq_seal(uint8_t *rec, size_t size);
/* Frame check of rec[0..avail): returns the record's total size when a whole
 * valid record (length, version, type, CRC) is present, 0 when it is not. */
size_t mb__dlq_frame_check(const uint8_t *rec, uint64_t avail);
/* Decode an entry body; 0 or -1 for a malformed body. */
int mb__dlq_entry_decode(const uint8_t *body, size_t len, dlq_view *v);
/* Check a marker body; 0 and its id count, or -1. */
int mb__dlq_mark_decode(const uint8_t *body, size_t len, uint32_t *count);
/* A copy of a decoded entry in one allocation (free with free()); NULL when
 * out of memory. */
mb_dlq_entry *mb__dlq_entry_copy(const dlq_view *v, uint32_t flags);
/* FNV-1a of a subject, for exact-match prefiltering. */
uint32_t mb__dlq_subject_hash(const void *s, size_t n);

/* A parsed subject pattern. */
typedef struct dlq_pattern {
    const char *text;
    bool literal; /* no wildcard: compare by hash, then bytes */
    uint32_t hash;
} dlq_pattern;
/* MB_EPATTERN (err says why) for an invalid pattern; NULL text matches all. */
mb_status mb__dlq_pattern_init(dlq_pattern *p, const char *text, mb_err *err);
bool mb__dlq_pattern_match(const dlq_pattern *p, const uint8_t *subject, size_t len);

/* ---- in memory ---- */

typedef struct dlq_seg {
    uint64_t seq, base_id;
    int fd;
    uint64_t size;              /* bytes on disk (the good prefix for the newest) */
    uint64_t live;              /* indexed entries that are live */
    uint64_t entries;           /* indexed entries */
    uint64_t first_id, last_id; /* id range of its indexed entries (0: none) */
    uint64_t mark_min_seq;      /* lowest seq a marker in it targets; UINT64_MAX: none */
} dlq_seg;

#define IX_REPLAYED 1u
#define IX_PURGED   2u
#define IX_EXPIRED  4u
#define IX_DEAD     (IX_PURGED | IX_EXPIRED)

typedef struct dlq_ix {
    uint64_t id;
    dlq_seg *seg;
    uint64_t off;
    int64_t added_ms, last_ms;
    uint32_t len; /* record size, frame included */
    uint32_t subj_hash;
    uint32_t status;
    uint32_t flags;
} dlq_ix;

typedef struct dlq_waiter {
    bool done;
    mb_status st;
    char msg[MB_ERR_MSG_MAX];
} dlq_waiter;

typedef struct dlq_item {
    struct dlq_item *next;
    uint64_t seq;
    uint8_t type;
    uint64_t id; /* entries */
    int64_t added_ms, last_ms;
    uint32_t status, subj_hash;
    dlq_waiter *waiter;
    mb_dlq_done_fn done;
    void *done_ctx;
    size_t len;
    uint8_t rec[];
} dlq_item;

typedef struct dlq_metrics {
    mb_gauge *depth, *bytes, *segments, *oldest_age;
    mb_counter *puts, *fail_full, *fail_limit, *fail_invalid, *fail_io;
    mb_counter *fsyncs, *torn, *corrupt, *drop_age, *drop_size, *replayed, *purged;
    mb_histogram *per_fsync;
} dlq_metrics;

struct mb_dlq {
    char *dir;
    int dirfd, lockfd;
    bool read_only, nosync;
    uint64_t max_bytes, max_age_ms, max_entries, segment_bytes;
    size_t queue_max, queue_max_bytes, max_entry_bytes;
    mb_dlq_full_policy policy;
    const mb_clock *clock;
    void (*log)(void *, const char *);
    void *log_ctx;
    mb_metrics *own_metrics;
    dlq_metrics m;

    /* imu guards the segments and the index. */
    pthread_mutex_t imu;
    dlq_seg **segs;  /* by seq; the last is the active one when writable */
    dlq_seg *active; /* == segs[nsegs - 1]; changed only by open and the writer */
    size_t nsegs, capsegs;
    dlq_ix *ix; /* by id */
    size_t nix, capix;
    uint64_t depth;
    uint64_t next_seg_seq;
    _Atomic uint64_t total_bytes;
    _Atomic uint64_t nstored;
    int64_t last_maintain_mono_ms;

    /* qmu guards the queue and the completion state. */
    pthread_mutex_t qmu;
    pthread_cond_t wcv, done_cv, space_cv;
    dlq_item *qhead, *qtail;
    size_t qlen, qbytes, qentries;
    uint64_t inflight_bytes, inflight_entries; /* taken by the writer, not yet indexed */
    uint64_t next_id, enq_seq, completed_seq, fail_total;
    /* Failed records whose put did not wait for them (non-durable or async)
     * and that no mb_dlq_flush or close has reported yet. */
    uint64_t fail_unreported;
    bool closing, paused, writer_started;
    char last_error[MB_ERR_MSG_MAX];
    pthread_t writer;
};

/* Helpers of dlq.c shared with dlq_recover.c. */
void mb__dlq_seg_name(char *buf, size_t cap, uint64_t seq);
int mb__dlq_pread_full(int fd, void *buf, size_t n, uint64_t off);
int mb__dlq_sync_fd(const mb_dlq *d, int fd);   /* fdatasync unless nosync */
int mb__dlq_sync_dir(const mb_dlq *d);          /* fsync of the directory */
int mb__dlq_ix_reserve(mb_dlq *d, size_t more); /* room for more index entries */
void mb__dlq_ix_add(mb_dlq *d, dlq_seg *s, uint64_t off, uint32_t len, uint64_t id,
                    int64_t added_ms, int64_t last_ms, uint32_t status, uint32_t subj_hash);
/* Apply a checked marker body written in segment `in`; `live`: count it. */
void mb__dlq_apply_marker(mb_dlq *d, uint8_t type, const uint8_t *body, dlq_seg *in, bool live);
int mb__dlq_segs_push(mb_dlq *d, dlq_seg *s);
/* Read the directory into the segment list and index (dlq_recover.c). */
mb_status mb__dlq_recover(mb_dlq *d, mb_err *err);

/* Log a formatted line through opts->log. */
void mb__dlq_logf(mb_dlq *d, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* now - then in milliseconds, 0 when then is not before now. Times read
 * from a file may be anything: the difference is taken without signed
 * overflow (it always fits in 64 unsigned bits). */
static inline uint64_t mb__dlq_age_ms(int64_t now, int64_t then)
{
    return now > then ? (uint64_t)now - (uint64_t)then : 0;
}

/* Index lookup: the position of the first entry with id >= `id`. Under imu. */
size_t mb__dlq_ix_lower(const mb_dlq *d, uint64_t id);
/* Delete segments that hold no live entry and no needed marker, except the
 * active one. Under imu. */
void mb__dlq_sweep(mb_dlq *d);
/* Mark live entries stored before the age limit expired; returns how many.
 * Under imu. */
size_t mb__dlq_expire(mb_dlq *d, int64_t now_ms);
/* Refresh the depth, bytes, segments and oldest-age gauges. Under imu. */
void mb__dlq_gauges(mb_dlq *d);
/* Read the record of index entry `x` into *buf (grown as needed, caller
 * frees). Under imu. MB_EIO, MB_ENOMEM. */
mb_status mb__dlq_read(mb_dlq *d, const dlq_ix *x, uint8_t **buf, size_t *cap, mb_err *err);
/* Queue a marker record of `type` for ids[0..n) (n <= DLQ_MARK_MAX), waiting
 * for queue space, and wait until it is durable. MB_ECLOSED, MB_EIO, MB_ENOMEM. */
mb_status mb__dlq_mark(mb_dlq *d, uint8_t type, const uint64_t *ids, size_t n, mb_err *err);

/* ---- hooks for tests and fuzzing ---- */

#define MB__DLQ_NOSYNC 1u /* never fsync: throw-away data only (fuzzing) */
mb_status mb__dlq_open_ex(const char *dir, const mb_dlq_opts *opts, unsigned flags, mb_dlq **out,
                          mb_err *err);
/* Hold (true) or release the writer before its next batch, so tests can fill
 * the queue deterministically. close releases it. */
void mb__dlq_pause(mb_dlq *d, bool paused);

#endif
