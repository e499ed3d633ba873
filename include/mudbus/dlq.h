/* SPDX-License-Identifier: MIT */
/*
 * dlq: the dead letter queue, a crash-safe directory of append-only segment
 * files holding messages that could not be delivered, with filters, replay,
 * purge and retention.
 *
 * Durability. Puts are queued (bounded) and written by one background writer
 * thread with group commit: it takes everything queued, writes it with one
 * write, calls fdatasync once and then wakes every waiter, so concurrent
 * durable puts share an fsync. A durable put returns MB_OK only after its
 * record is on stable storage. After a crash at any byte, opening the
 * directory recovers every record whose durable put returned, drops a torn
 * tail (truncating the file at the last good record) and never reports a
 * record whose length, checksum (CRC-32C) or structure is wrong.
 *
 * State. Replaying or purging an entry appends a durable marker record; files
 * are never rewritten. A segment file is deleted once every entry in it is
 * replayed, purged or expired (and its markers are no longer needed), or by
 * retention: by age (default 7 days from when the entry was stored) and by
 * total size (default 1 GiB), where a full DLQ either refuses new entries
 * (MB_ELIMIT) or drops its oldest segment, per `full_policy`; both counted.
 *
 * Memory. An in-memory index holds ~64 bytes of metadata per stored entry;
 * subjects, headers and payloads are read from disk when asked for.
 *
 * Processes. A writable DLQ holds an exclusive lock on DIR/dlq.lock; a second
 * writable open fails with MB_ESTATE. A read-only open takes no lock, changes
 * no file and may run beside a writer (it sees what was on disk at open).
 *
 * Threads: every function may be called from any thread at once on one
 * mb_dlq, except mb_dlq_close (no other call may be running or start). Callbacks
 * run on the calling thread without internal locks held, unless said otherwise.
 * On-disk format: see the DESIGN comment at the top of src/lib/dlq.c.
 */
#ifndef MUDBUS_DLQ_H
#define MUDBUS_DLQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mudbus/clock.h"
#include "mudbus/metrics.h"
#include "mudbus/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mb_dlq mb_dlq;

#define MB_DLQ_SUBJECT_MAX    4096        /* bytes of a subject */
#define MB_DLQ_ORIGIN_MAX     64          /* bytes of an origin */
#define MB_DLQ_MESSAGE_MAX    4096        /* bytes of an error message */
#define MB_DLQ_HEADERS_MAX    1024        /* headers of one entry */
#define MB_DLQ_ENTRY_HARD_MAX (64u << 20) /* upper bound of max_entry_bytes */
#define MB_DLQ_UNLIMITED      UINT64_MAX  /* max_age_ms / max_bytes: no limit */

/* One header: NUL-terminated name (non-empty) and value (may be ""). */
typedef struct mb_dlq_header {
    const char *name;
    const char *value;
} mb_dlq_header;

/* Flags of a stored entry (mb_dlq_entry.flags). */
#define MB_DLQ_REPLAYED 1u /* replayed successfully; kept until its segment goes */

/* A dead-lettered message. For mb_dlq_put the caller fills the fields marked
 * "in"; strings are NUL-terminated and must not be NULL unless said so. In
 * entries the DLQ hands out, every field is set and points into memory owned
 * by the DLQ (a callback's argument: valid during the callback) or by the
 * entry (mb_dlq_show: until mb_dlq_entry_free). */
typedef struct mb_dlq_entry {
    uint64_t id;                  /* out: unique, increasing across restarts, never 0 */
    const char *subject;          /* in: 1..MB_DLQ_SUBJECT_MAX bytes */
    const mb_dlq_header *headers; /* in: nheaders entries; NULL when nheaders == 0 */
    size_t nheaders;              /* in: 0..MB_DLQ_HEADERS_MAX */
    const void *payload;          /* in: bytes, may contain NUL; NULL when payload_len == 0 */
    size_t payload_len;           /* in; out: a NUL follows the payload (not counted) */
    mb_status error;              /* in: why it was dead-lettered; never MB_OK */
    const char *error_message;    /* in: may be NULL (""), up to MB_DLQ_MESSAGE_MAX bytes */
    uint32_t attempts;            /* in: delivery attempts made */
    int64_t first_failure_ms;     /* in: wall ms; 0: same as last_failure_ms */
    int64_t last_failure_ms;      /* in: wall ms; 0: now (the DLQ's clock) */
    const char *origin;           /* in: "publish", "consume", "batch", ...; NULL: "" */
    int64_t added_ms;             /* out: wall ms when the DLQ stored it (age retention) */
    uint32_t flags;               /* out: MB_DLQ_REPLAYED */
} mb_dlq_entry;

typedef enum mb_dlq_full_policy {
    MB_DLQ_FULL_REJECT = 0, /* refuse new entries with MB_ELIMIT (default) */
    MB_DLQ_FULL_DROP_OLDEST /* delete the oldest segment, live entries and all */
} mb_dlq_full_policy;

/* Options of mb_dlq_open; zero-initialise, then set what you need. Zero
 * means the default for every field. */
typedef struct mb_dlq_opts {
    bool read_only;                 /* no lock, no writes: list/show/stats only */
    bool create;                    /* create DIR (one level) when missing */
    uint64_t max_bytes;             /* all segment files; default 1 GiB (replay and purge
                                     * markers may pass it a little: they must work when full) */
    uint64_t max_age_ms;            /* since stored; default 7 days */
    uint64_t max_entries;           /* stored entries (bounds the index); default 4,000,000 */
    mb_dlq_full_policy full_policy; /* when max_bytes or max_entries is reached */
    uint64_t segment_bytes;         /* roll to a new file past this; default min(64 MiB, max/8) */
    size_t queue_max;               /* queued puts; default 4096 */
    size_t queue_max_bytes;         /* queued record bytes; default 16 MiB (at most max/2) */
    size_t max_entry_bytes;         /* encoded size of one entry; default 1 MiB */
    const mb_clock *clock;          /* wall: entry times; mono: replay rate; NULL: system */
    mb_metrics *metrics;            /* NULL: a private registry */
    const char *labels; /* extra labels of every metric, e.g. `dlq="chat"`; may be NULL */
    /* Called with one line (no newline) for every recovery finding (torn tail,
     * corrupt record, quarantined file) and write failure; NULL: silent. Runs
     * on the opening thread or the writer thread; must not call into the DLQ. */
    void (*log)(void *log_ctx, const char *line);
    void *log_ctx;
} mb_dlq_opts;

/* Open (recover) the DLQ in directory `dir` and, unless read-only, start its
 * writer thread. Recovery scans every segment: a bad record at the end of the
 * newest segment is a torn tail (truncated away, counted as torn); a bad
 * record elsewhere ends the reading of that segment (the rest is skipped,
 * counted as corrupt, logged); a file with a bad header is renamed to
 * *.corrupt, except a newest one cut short inside its header (a torn
 * creation), which is removed. Then retention by age runs. Metrics (see the
 * mudbus_dlq_* list in dlq.c) are registered in opts->metrics.
 * Returns MB_EINVAL (bad argument or options), MB_ENOTFOUND (no such
 * directory), MB_ESTATE (another process has it open for writing), MB_EIO,
 * MB_ENOMEM, a metrics error. Nothing is open or changed on error, except
 * torn tails already truncated. */
mb_status mb_dlq_open(const char *dir, const mb_dlq_opts *opts, mb_dlq **out, mb_err *err);

/* Drain the queue, write and fsync it, stop the writer and free everything.
 * Returns MB_EIO when a queued record could not be written (the DLQ is freed
 * all the same). NULL returns MB_OK. No other call may run or follow. */
mb_status mb_dlq_close(mb_dlq *d, mb_err *err);

/* Store a copy of `e` (borrowed) and set *id (may be NULL) and e->id. With
 * `durable`, return only after the record is fsync'd; otherwise after it is
 * queued. Returns MB_EINVAL (bad field), MB_ETOOBIG (over max_entry_bytes),
 * MB_EAGAIN (queue full), MB_ELIMIT (full under MB_DLQ_FULL_REJECT),
 * MB_ESTATE (read-only), MB_ECLOSED, MB_ENOMEM, MB_EIO (durable: the write
 * or fsync failed; the record may or may not be present after a restart).
 * Refusals are counted by reason; on error nothing is queued, except MB_EIO.
 * A durable put blocks for an fsync (~0.1-10 ms): from a thread that must not
 * block (a delivery thread, a game loop) use mb_dlq_put_async. */
mb_status mb_dlq_put(mb_dlq *d, mb_dlq_entry *e, bool durable, uint64_t *id, mb_err *err);

/* Called once on the writer thread when an async put's record is durable
 * (MB_OK) or failed (MB_EIO), before any flush or durable put waiting for a
 * later record returns. It must not block nor call mb_dlq_put with durable,
 * flush, replay, purge or close. */
typedef void (*mb_dlq_done_fn)(void *ctx, uint64_t id, mb_status st);

/* As mb_dlq_put, but never waits: `done` (not NULL) reports durability
 * later. `done` is not called when this returns an error. */
mb_status mb_dlq_put_async(mb_dlq *d, mb_dlq_entry *e, mb_dlq_done_fn done, void *ctx, uint64_t *id,
                           mb_err *err);

/* Wait until everything queued before the call is written and fsync'd (and
 * its async callbacks have run). MB_EIO when writing a record failed whose
 * put did not wait for it (non-durable or async) and that no earlier flush
 * reported; MB_ESTATE read-only. */
mb_status mb_dlq_flush(mb_dlq *d, mb_err *err);

/* Which entries an operation applies to. Zero-initialised: every live entry. */
typedef struct mb_dlq_filter {
    const char *subject;   /* NATS pattern ("chat.*.room.>"): `*` one token, `>` the
                            * rest (last token only); NULL: any */
    mb_status status;      /* MB_OK: any; else entries dead-lettered with it */
    int64_t since_ms;      /* last_failure_ms >= since_ms; 0: no bound */
    int64_t until_ms;      /* last_failure_ms < until_ms; 0: no bound */
    uint64_t min_age_ms;   /* stored at least this long ago (clock); 0: any */
    bool include_replayed; /* also entries flagged MB_DLQ_REPLAYED */
} mb_dlq_filter;

/* Visit matching entries in id order; return non-zero to stop. */
typedef int (*mb_dlq_visit_fn)(void *ctx, const mb_dlq_entry *e);

/* Call `fn` for every entry matching `f` (NULL: all live entries), in id
 * order, reading each from disk. *count (may be NULL) gets the number
 * visited. Queries see written records only: puts still queued are not
 * seen (mb_dlq_flush first). Entries stored or removed during the call may or
 * may not be seen.
 * A record that fails its checksum on this read is skipped and counted as
 * corrupt, never passed to `fn`. MB_EPATTERN for a bad subject pattern;
 * MB_EIO; MB_ENOMEM (the visits made stand). */
mb_status mb_dlq_list(mb_dlq *d, const mb_dlq_filter *f, mb_dlq_visit_fn fn, void *ctx,
                      size_t *count, mb_err *err);

/* Read entry `id` (live or replayed) into a new allocation that the caller
 * frees with mb_dlq_entry_free. MB_ENOTFOUND (never stored, purged, expired,
 * dropped), MB_ECORRUPT (fails its checksum now), MB_EIO, MB_ENOMEM. */
mb_status mb_dlq_show(mb_dlq *d, uint64_t id, mb_dlq_entry **out, mb_err *err);
void mb_dlq_entry_free(mb_dlq_entry *e);

/* Replay: publish one entry; MB_OK means it was delivered. */
typedef mb_status (*mb_dlq_publish_fn)(void *ctx, const mb_dlq_entry *e, mb_err *err);

typedef enum mb_dlq_on_error {
    MB_DLQ_REPLAY_STOP = 0, /* stop at the first publish failure (default) */
    MB_DLQ_REPLAY_SKIP      /* leave the failed entry live and go on */
} mb_dlq_on_error;

typedef struct mb_dlq_replay_opts {
    mb_dlq_filter filter; /* include_replayed re-publishes replayed entries too */
    double rate_per_sec;  /* publishes per second (token bucket); 0: unlimited */
    uint32_t burst;       /* bucket size; 0: 1 (evenly spaced) */
    size_t max;           /* replay at most this many; 0: all */
    bool dry_run;         /* read and count, publish nothing, mark nothing */
    mb_dlq_on_error on_error;
    /* After each entry: done of total (total = matches when the replay began). */
    void (*progress)(void *ctx, size_t done, size_t total);
    void *progress_ctx;
    /* Sleep `ns` for the rate limit; NULL: nanosleep. A test passes one that
     * advances its manual clock instead. */
    void (*sleep)(void *ctx, uint64_t ns);
    void *sleep_ctx;
} mb_dlq_replay_opts;

typedef struct mb_dlq_replay_result {
    size_t total;             /* matching entries when the replay began */
    size_t published;         /* published and marked replayed (dry run: would be) */
    size_t failed;            /* publish failed (left live) */
    size_t gone;              /* purged, expired or unreadable before their turn */
    uint64_t first_failed_id; /* 0 when none failed */
} mb_dlq_replay_result;

/* Replay matching entries in id order through `publish` (may be NULL only for
 * a dry run), at most opts->rate_per_sec per second. Each published entry gets
 * a durable "replayed" marker before the next one is published, so a replay
 * interrupted at any point and run again publishes each entry once (a crash
 * between a publish and its marker may repeat that one entry). Returns MB_OK
 * when every entry was published; the publish status of the first failure
 * (with err naming the entry) when one failed, after stopping or after the
 * rest (MB_DLQ_REPLAY_SKIP); MB_EIO when a marker could not be written (stops);
 * MB_EPATTERN; MB_ESTATE (read-only, unless dry run); MB_ENOMEM. *res (may be
 * NULL) says what was done in every case. */
mb_status mb_dlq_replay(mb_dlq *d, const mb_dlq_replay_opts *opts, mb_dlq_publish_fn publish,
                        void *ctx, mb_dlq_replay_result *res, mb_err *err);

/* Purge every entry matching `f` (NULL: all live entries; include_replayed
 * also removes replayed ones) with durable markers, then delete segments left
 * with no live entry. *purged (may be NULL) gets the number removed. MB_EPATTERN,
 * MB_ESTATE (read-only), MB_EIO (markers written before the failure stand),
 * MB_ENOMEM. */
mb_status mb_dlq_purge(mb_dlq *d, const mb_dlq_filter *f, size_t *purged, mb_err *err);

/* Apply retention by age now (the writer also does this every minute and at
 * open) and delete segments without live entries. *dropped (may be NULL) gets
 * the number of entries that expired. MB_ESTATE read-only; MB_EIO. */
mb_status mb_dlq_maintain(mb_dlq *d, size_t *dropped, mb_err *err);

typedef struct mb_dlq_stats {
    uint64_t depth;          /* live entries (not replayed, purged or expired) */
    uint64_t stored;         /* entries in the index, live or not */
    uint64_t bytes;          /* size of all segment files */
    uint64_t segments;       /* segment files */
    int64_t oldest_added_ms; /* stored time of the oldest live entry; 0 when empty */
    uint64_t oldest_age_ms;  /* clock now - oldest_added_ms; 0 when empty */
    uint64_t next_id;        /* the id the next put gets */
    uint64_t queued;         /* records waiting for the writer */
    uint64_t puts;           /* accepted puts since open */
    uint64_t put_full, put_limit, put_invalid, put_io; /* refused or failed puts by reason */
    uint64_t fsyncs;                                   /* fdatasync calls on segments */
    uint64_t torn_records;              /* torn tails found at open (and truncated) */
    uint64_t corrupt_records;           /* bad records found mid-segment, or on a later read */
    uint64_t dropped_age, dropped_size; /* live entries removed by retention */
    uint64_t replayed, purged;          /* since open */
} mb_dlq_stats;

/* A snapshot of the counters and sizes; also refreshes the age gauges.
 * MB_EINVAL for NULL arguments. */
mb_status mb_dlq_stats_get(mb_dlq *d, mb_dlq_stats *out);

#ifdef __cplusplus
}
#endif
#endif
