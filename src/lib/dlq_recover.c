/* SPDX-License-Identifier: MIT */
/*
 * dlq_recover: reading a DLQ directory at open (see the DESIGN comment of
 * dlq.c for the format and the rules). Lists the segment files, checks each
 * header (a newest file with an incomplete header is a torn creation and is
 * removed; any other bad header quarantines the file as *.corrupt), then
 * reads every record through a 1 MiB window and indexes the good ones. A bad
 * record in the newest segment is a torn tail, truncated and fsync'd; in an
 * older one it is corruption: the rest of that segment is skipped. Either
 * is counted and logged, never reported as an entry. A read-only open changes
 * no file. Runs on the opening thread before the writer starts.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "alloc.h"
#include "dlq_int.h"

#define SCAN_BUF ((size_t)1 << 20)

/* A read window over one segment file. */
typedef struct scanbuf {
    uint8_t *p;
    size_t cap;
    uint64_t start, len; /* file range held */
} scanbuf;

/* Make [off, off + n) of the file (size `size`) available; returns a pointer
 * or NULL (*io set on a read error or out of memory). */
static const uint8_t *window(scanbuf *b, int fd, uint64_t size, uint64_t off, size_t n, int *io)
{
    if (off >= b->start && off + n <= b->start + b->len)
        return b->p + (off - b->start);
    size_t want = n > SCAN_BUF ? n : SCAN_BUF;
    if (want > b->cap) {
        uint8_t *q = mb__realloc(b->p, want);
        if (q == NULL) {
            *io = ENOMEM;
            return NULL;
        }
        b->p = q;
        b->cap = want;
    }
    uint64_t len = size - off < b->cap ? size - off : b->cap;
    if (mb__dlq_pread_full(fd, b->p, (size_t)len, off) != 0) {
        *io = errno ? errno : EIO;
        return NULL;
    }
    b->start = off;
    b->len = len;
    return b->p;
}

typedef struct open_state {
    uint64_t max_id;
    uint64_t torn, corrupt;
} open_state;

/* Read and index segment `s` (size from fstat). Returns MB_EIO / MB_ENOMEM
 * for failures that stop the open; bad records are handled here. */
static mb_status scan_segment(mb_dlq *d, dlq_seg *s, bool newest, uint64_t fsize, scanbuf *b,
                              open_state *os, mb_err *err)
{
    uint64_t off = DLQ_SEG_HDR;
    const char *why = NULL;
    int io = 0;
    b->start = b->len = 0; /* the window held another file */
    while (off < fsize) {
        const uint8_t *r = window(b, s->fd, fsize, off,
                                  DLQ_FRAME > fsize - off ? (size_t)(fsize - off) : DLQ_FRAME, &io);
        if (r == NULL)
            break;
        if (fsize - off < DLQ_FRAME) {
            why = "truncated record header";
            break;
        }
        uint32_t body = mb__dlq_get_u32(r);
        if (body > DLQ_BODY_MAX) {
            why = "bad record length";
            break;
        }
        if (off + DLQ_FRAME + body > fsize) {
            why = "truncated record";
            break;
        }
        r = window(b, s->fd, fsize, off, DLQ_FRAME + (size_t)body, &io);
        if (r == NULL)
            break;
        size_t rl = mb__dlq_frame_check(r, DLQ_FRAME + (uint64_t)body);
        if (rl == 0) {
            why = "bad record checksum or frame";
            break;
        }
        const uint8_t *bp = r + DLQ_FRAME;
        if (r[9] == DLQ_REC_ENTRY) {
            dlq_view v;
            if (mb__dlq_entry_decode(bp, body, &v) != 0) {
                why = "malformed entry";
                break;
            }
            if (v.id <= os->max_id) {
                why = "entry id out of order";
                break;
            }
            if (mb__dlq_ix_reserve(d, 1) != 0) {
                io = ENOMEM;
                break;
            }
            mb__dlq_ix_add(d, s, off, (uint32_t)rl, v.id, v.added_ms, v.last_ms, v.status,
                           mb__dlq_subject_hash(v.subject, v.subject_len));
            os->max_id = v.id;
        } else {
            uint32_t n;
            if (mb__dlq_mark_decode(bp, body, &n) != 0) {
                why = "malformed marker";
                break;
            }
            mb__dlq_apply_marker(d, r[9], bp, s, false);
        }
        off += rl;
    }
    if (io == ENOMEM)
        return mb_err_set(err, MB_ENOMEM, "dlq: out of memory reading segment %" PRIu64, s->seq);
    if (io != 0)
        return mb_err_set(err, MB_EIO, "dlq: reading segment %" PRIu64 " of %s: %s", s->seq, d->dir,
                          strerror(io));
    s->size = fsize;
    if (why == NULL)
        return MB_OK;
    if (newest) {
        os->torn++;
        mb_counter_add(d->m.torn, 1);
        mb__dlq_logf(d,
                     "dlq: segment %" PRIu64 ": torn tail at offset %" PRIu64 " (%s): %" PRIu64
                     " bytes %s",
                     s->seq, off, why, fsize - off, d->read_only ? "ignored" : "truncated");
        s->size = off;
        if (!d->read_only) {
            if (ftruncate(s->fd, (off_t)off) != 0 || mb__dlq_sync_fd(d, s->fd) != 0)
                return mb_err_set(err, MB_EIO, "dlq: truncating segment %" PRIu64 ": %s", s->seq,
                                  strerror(errno));
        }
    } else {
        os->corrupt++;
        mb_counter_add(d->m.corrupt, 1);
        mb__dlq_logf(d,
                     "dlq: segment %" PRIu64 ": corrupt record at offset %" PRIu64
                     " (%s): the remaining %" PRIu64 " bytes of the segment are skipped",
                     s->seq, off, why, fsize - off);
    }
    return MB_OK;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* The sequence numbers of DIR's segment files, sorted. */
static mb_status list_segments(mb_dlq *d, uint64_t **out, size_t *n, mb_err *err)
{
    int fd = dup(d->dirfd);
    DIR *dir = fd >= 0 ? fdopendir(fd) : NULL;
    if (dir == NULL) {
        if (fd >= 0)
            close(fd);
        return mb_err_set(err, MB_EIO, "dlq: reading %s: %s", d->dir, strerror(errno));
    }
    rewinddir(dir);
    uint64_t *seqs = NULL;
    size_t cnt = 0, cap = 0;
    struct dirent *de;
    mb_status st = MB_OK;
    while ((de = readdir(dir)) != NULL) {
        const char *nm = de->d_name;
        size_t len = strlen(nm);
        if (len < 4 + 12 + 4 || len > 4 + 20 + 4 || strncmp(nm, "seg-", 4) != 0 ||
            strcmp(nm + len - 4, ".dlq") != 0)
            continue;
        uint64_t seq = 0;
        bool ok = true;
        for (size_t i = 4; i < len - 4; i++) {
            if (nm[i] < '0' || nm[i] > '9' || seq > (UINT64_MAX - 9) / 10) {
                ok = false;
                break;
            }
            seq = seq * 10 + (uint64_t)(nm[i] - '0');
        }
        char canon[64];
        mb__dlq_seg_name(canon, sizeof canon, seq);
        if (!ok || seq == 0 || strcmp(canon, nm) != 0)
            continue;
        if (cnt == cap) {
            size_t nc = cap ? cap * 2 : 64;
            uint64_t *p = mb__realloc(seqs, nc * sizeof *p);
            if (p == NULL) {
                st = mb_err_set(err, MB_ENOMEM, "dlq: out of memory");
                break;
            }
            seqs = p;
            cap = nc;
        }
        seqs[cnt++] = seq;
    }
    closedir(dir);
    if (st != MB_OK) {
        mb__free(seqs);
        return st;
    }
    if (cnt > 0)
        qsort(seqs, cnt, sizeof *seqs, cmp_u64);
    *out = seqs;
    *n = cnt;
    return MB_OK;
}

/* Open, check the header of, and scan every segment. */
mb_status mb__dlq_recover(mb_dlq *d, mb_err *err)
{
    uint64_t *seqs = NULL;
    size_t n = 0;
    mb_status st = list_segments(d, &seqs, &n, err);
    if (st != MB_OK)
        return st;
    scanbuf b = {0};
    open_state os = {0};
    uint64_t max_base = 0, max_seq = 0;
    bool last_torn = false;
    if (n > 0) {
        /* A last file with an incomplete header was being created. */
        char nl[64];
        mb__dlq_seg_name(nl, sizeof nl, seqs[n - 1]);
        int fd = openat(d->dirfd, nl, O_RDONLY | O_CLOEXEC);
        struct stat sl;
        uint8_t h[DLQ_SEG_HDR];
        uint64_t q, bi;
        if (fd >= 0 && fstat(fd, &sl) == 0 && (uint64_t)sl.st_size <= DLQ_SEG_HDR)
            last_torn = (uint64_t)sl.st_size < DLQ_SEG_HDR ||
                        mb__dlq_pread_full(fd, h, sizeof h, 0) != 0 ||
                        mb__dlq_seg_header_parse(h, &q, &bi) != 0;
        if (fd >= 0)
            close(fd);
    }
    for (size_t i = 0; i < n && st == MB_OK; i++) {
        char name[64];
        mb__dlq_seg_name(name, sizeof name, seqs[i]);
        max_seq = seqs[i];
        int fd = openat(d->dirfd, name, (d->read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC);
        if (fd < 0) {
            if (errno == ENOENT)
                continue; /* removed by the writer while a read-only open lists */
            st = mb_err_set(err, MB_EIO, "dlq: opening %s/%s: %s", d->dir, name, strerror(errno));
            break;
        }
        struct stat sb;
        uint8_t hdr[DLQ_SEG_HDR];
        uint64_t seq = 0, base = 0;
        if (fstat(fd, &sb) != 0) {
            st = mb_err_set(err, MB_EIO, "dlq: stat %s/%s: %s", d->dir, name, strerror(errno));
            close(fd);
            break;
        }
        uint64_t fsize = (uint64_t)sb.st_size;
        bool hdr_ok = fsize >= DLQ_SEG_HDR && mb__dlq_pread_full(fd, hdr, sizeof hdr, 0) == 0 &&
                      mb__dlq_seg_header_parse(hdr, &seq, &base) == 0 && seq == seqs[i];
        if (!hdr_ok) {
            close(fd);
            bool torn_create = i + 1 == n && fsize <= DLQ_SEG_HDR;
            if (torn_create) {
                os.torn++;
                mb_counter_add(d->m.torn, 1);
                mb__dlq_logf(d, "dlq: %s: incomplete header (torn creation)%s", name,
                             d->read_only ? "" : ": removed");
                if (!d->read_only && (unlinkat(d->dirfd, name, 0) != 0 || mb__dlq_sync_dir(d) != 0))
                    st = mb_err_set(err, MB_EIO, "dlq: removing %s: %s", name, strerror(errno));
            } else {
                os.corrupt++;
                mb_counter_add(d->m.corrupt, 1);
                char to[80];
                snprintf(to, sizeof to, "%s.corrupt", name);
                mb__dlq_logf(d, "dlq: %s: bad segment header%s%s", name,
                             d->read_only ? "" : ": renamed to ", d->read_only ? "" : to);
                if (!d->read_only &&
                    (renameat(d->dirfd, name, d->dirfd, to) != 0 || mb__dlq_sync_dir(d) != 0))
                    st = mb_err_set(err, MB_EIO, "dlq: renaming %s: %s", name, strerror(errno));
            }
            continue;
        }
        dlq_seg *s = mb__calloc(1, sizeof *s);
        if (s == NULL || mb__dlq_segs_push(d, s) != 0) {
            mb__free(s);
            close(fd);
            st = mb_err_set(err, MB_ENOMEM, "dlq: out of memory");
            break;
        }
        s->seq = seq;
        s->base_id = base;
        s->fd = fd;
        s->mark_min_seq = UINT64_MAX;
        if (base > max_base)
            max_base = base;
        /* The newest segment is the last file, or the one before it when
         * the last is a torn creation (header-only or shorter). */
        bool newest = i + 1 == n || (i + 2 == n && last_torn);
        st = scan_segment(d, s, newest, fsize, &b, &os, err);
        atomic_fetch_add(&d->total_bytes, s->size);
    }
    mb__free(b.p);
    mb__free(seqs);
    if (st != MB_OK)
        return st;
    /* next_id 0 means every id is used up (a file holding id 2^64 - 1). */
    if (os.max_id == UINT64_MAX)
        d->next_id = 0;
    else
        d->next_id = os.max_id + 1 > max_base ? os.max_id + 1 : max_base;
    if (d->next_id == 0 && os.max_id == 0)
        d->next_id = 1;
    d->next_seg_seq = max_seq + 1;
    return MB_OK;
}
