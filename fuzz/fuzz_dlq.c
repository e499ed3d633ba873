/* SPDX-License-Identifier: MIT */
/*
 * fuzz_dlq: libFuzzer target for the DLQ's segment reader and recovery,
 * checked against an independent reference reader written here from the
 * format in the DESIGN comment of src/lib/dlq.c (its own bitwise CRC-32C,
 * its own decoder).
 *
 * The first byte selects options; the rest becomes a segment file:
 *   bit 0  prepend a valid segment header (else the input has its own);
 *   bit 1  fix the CRC of every frame whose length fits, so that the fuzzer
 *          gets past the checksum into the body decoder;
 *   bit 2  the input is an older segment 1 followed by a valid segment 2
 *          holding two entries with ids 2^62 and 2^62 + 1;
 *   bit 3  after the read-only checks, open it writable too (recovery
 *          truncates a torn tail or quarantines a bad header), check the
 *          same entries again, put one more and see it listed.
 * Invariants, enforced with abort():
 *   - open never fails on any file content;
 *   - the entries listed (with and without replayed ones) are exactly the
 *     reference's: the valid records before the first bad one of each
 *     segment, in id order, with markers applied, and every field equal to
 *     the reference's decoding of its record (so no record with a wrong
 *     CRC, length or structure is ever reported);
 *   - show finds exactly those ids;
 *   - the torn and corrupt counts match the reference's verdict.
 * The directory is made once per process under /tmp and emptied before each
 * input; fsync is off (MB__DLQ_NOSYNC), as the data is thrown away.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dlq_int.h"
#include "mudbus/dlq.h"

#define BODY_MAX ((64u << 20) + 64u)
#define MAXREC   4096

static char dir[64];

/* ---- reference reader ---- */

static uint32_t ref_crc(uint32_t crc, const uint8_t *p, size_t n)
{
    crc = ~crc;
    for (size_t i = 0; i < n; i++) {
        crc ^= p[i];
        for (int k = 0; k < 8; k++)
            crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1u)));
    }
    return ~crc;
}

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t le64(const uint8_t *p)
{
    return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

static void wr32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void wr64(uint8_t *p, uint64_t v)
{
    wr32(p, (uint32_t)v);
    wr32(p + 4, (uint32_t)(v >> 32));
}

typedef struct ref_entry {
    uint64_t id;
    const uint8_t *body;
    size_t len;
    bool replayed, purged;
} ref_entry;

typedef struct ref {
    ref_entry e[MAXREC];
    size_t n;
    uint64_t max_id;
    int torn, corrupt;
} ref;

/* A length-prefixed string; NUL not allowed when `text`. */
static bool field(const uint8_t **p, size_t *left, uint32_t max, bool text, uint32_t min)
{
    if (*left < 4)
        return false;
    uint32_t n = le32(*p);
    if (n > max || n < min || n > *left - 4)
        return false;
    if (text && memchr(*p + 4, 0, n) != NULL)
        return false;
    *p += 4 + n;
    *left -= 4 + n;
    return true;
}

static bool entry_ok(const uint8_t *b, size_t len)
{
    if (len < 40 || le64(b) == 0 || le32(b + 32) == 0)
        return false;
    const uint8_t *p = b + 40;
    size_t left = len - 40;
    if (!field(&p, &left, 4096, true, 1) || !field(&p, &left, 64, true, 0) ||
        !field(&p, &left, 4096, true, 0) || left < 4)
        return false;
    uint32_t nh = le32(p);
    p += 4;
    left -= 4;
    if (nh > 1024)
        return false;
    for (uint32_t i = 0; i < nh; i++) {
        if (!field(&p, &left, UINT32_MAX, true, 1) || !field(&p, &left, UINT32_MAX, true, 0))
            return false;
    }
    return field(&p, &left, UINT32_MAX, false, 0) && left == 0;
}

/* Read one segment image the way the format says; `newest` decides whether
 * a bad record is a torn tail or corruption. Returns 0 (clean), 1 (bad
 * header) or 2 (a bad record). */
static int ref_segment(ref *r, const uint8_t *img, size_t len, uint64_t want_seq, bool newest)
{
    if (len < 32 || memcmp(img, "MBDLQSEG", 8) != 0 || le32(img + 8) != 1 ||
        le64(img + 16) != want_seq) {
        if (!(newest && len <= 32))
            r->corrupt++;
        else
            r->torn++;
        return 1;
    }
    uint32_t c = ref_crc(0, img, 12);
    c = ref_crc(c, img + 16, 16);
    if (c != le32(img + 12)) {
        if (!(newest && len <= 32))
            r->corrupt++;
        else
            r->torn++;
        return 1;
    }
    size_t off = 32;
    while (off < len) {
        bool bad = true;
        size_t rl = 0;
        do {
            if (len - off < 12)
                break;
            uint32_t body = le32(img + off);
            if (body > BODY_MAX || body > len - off - 12)
                break;
            const uint8_t *f = img + off;
            if (f[8] != 1 || f[9] < 1 || f[9] > 3 || f[10] || f[11])
                break;
            uint32_t cc = ref_crc(0, f, 4);
            cc = ref_crc(cc, f + 8, 4 + (size_t)body);
            if (cc != le32(f + 4))
                break;
            const uint8_t *b = f + 12;
            if (f[9] == 1) {
                if (!entry_ok(b, body) || le64(b) <= r->max_id || r->n >= MAXREC)
                    break;
                r->e[r->n++] = (ref_entry){le64(b), b, body, false, false};
                r->max_id = le64(b);
            } else {
                if (body < 12)
                    break;
                uint32_t cnt = le32(b + 8);
                if (cnt == 0 || cnt > 8192 || body != 12 + (size_t)cnt * 8)
                    break;
                for (uint32_t i = 0; i < cnt; i++) {
                    uint64_t id = le64(b + 12 + 8 * (size_t)i);
                    for (size_t k = 0; k < r->n; k++) {
                        if (r->e[k].id == id) {
                            if (f[9] == 2)
                                r->e[k].replayed = true;
                            else
                                r->e[k].purged = true;
                        }
                    }
                }
            }
            rl = 12 + (size_t)body;
            bad = false;
        } while (0);
        if (bad) {
            if (newest)
                r->torn++;
            else
                r->corrupt++;
            return 2;
        }
        off += rl;
    }
    return 0;
}

/* ---- comparing ---- */

typedef struct cmp_state {
    const ref *r;
    bool include_replayed;
    size_t next; /* index into r->e */
} cmp_state;

static bool visible(const ref_entry *e, bool include_replayed)
{
    return !e->purged && (include_replayed || !e->replayed);
}

static void same_entry(const ref_entry *x, const mb_dlq_entry *e)
{
    const uint8_t *b = x->body;
    if (e->id != x->id || (uint64_t)e->added_ms != le64(b + 8) ||
        (uint64_t)e->first_failure_ms != le64(b + 16) ||
        (uint64_t)e->last_failure_ms != le64(b + 24) || (uint32_t)e->error != le32(b + 32) ||
        e->attempts != le32(b + 36) || e->flags != (x->replayed ? MB_DLQ_REPLAYED : 0u))
        abort();
    const uint8_t *p = b + 40;
    uint32_t n = le32(p);
    if (strlen(e->subject) != n || memcmp(e->subject, p + 4, n) != 0)
        abort();
    p += 4 + n;
    n = le32(p);
    if (strlen(e->origin) != n || memcmp(e->origin, p + 4, n) != 0)
        abort();
    p += 4 + n;
    n = le32(p);
    if (strlen(e->error_message) != n || memcmp(e->error_message, p + 4, n) != 0)
        abort();
    p += 4 + n;
    if (e->nheaders != le32(p))
        abort();
    p += 4;
    for (size_t i = 0; i < e->nheaders; i++) {
        n = le32(p);
        if (strlen(e->headers[i].name) != n || memcmp(e->headers[i].name, p + 4, n) != 0)
            abort();
        p += 4 + n;
        n = le32(p);
        if (strlen(e->headers[i].value) != n || memcmp(e->headers[i].value, p + 4, n) != 0)
            abort();
        p += 4 + n;
    }
    n = le32(p);
    if (e->payload_len != n || (n > 0 && memcmp(e->payload, p + 4, n) != 0))
        abort();
}

static int cmp_visit(void *ctx, const mb_dlq_entry *e)
{
    cmp_state *c = ctx;
    while (c->next < c->r->n && !visible(&c->r->e[c->next], c->include_replayed))
        c->next++;
    if (c->next >= c->r->n)
        abort(); /* reported an entry the reference does not have */
    same_entry(&c->r->e[c->next], e);
    c->next++;
    return 0;
}

static void check_against(mb_dlq *d, const ref *r)
{
    for (int inc = 0; inc < 2; inc++) {
        cmp_state c = {r, inc != 0, 0};
        mb_dlq_filter f = {0};
        f.include_replayed = inc != 0;
        size_t n = 0;
        if (mb_dlq_list(d, &f, cmp_visit, &c, &n, NULL) != MB_OK)
            abort();
        while (c.next < r->n && !visible(&r->e[c.next], c.include_replayed))
            c.next++;
        if (c.next != r->n)
            abort(); /* missed an entry */
    }
    for (size_t i = 0; i < r->n; i++) {
        mb_dlq_entry *e = NULL;
        mb_status st = mb_dlq_show(d, r->e[i].id, &e, NULL);
        if ((st == MB_OK) != !r->e[i].purged)
            abort();
        if (st == MB_OK)
            same_entry(&r->e[i], e);
        mb_dlq_entry_free(e);
    }
}

/* ---- harness ---- */

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void cleanup(void)
{
    if (dir[0] != '\0')
        nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void empty_dir(void)
{
    if (dir[0] == '\0') {
        strcpy(dir, "/tmp/mb-fuzz-dlq.XXXXXX");
        if (mkdtemp(dir) == NULL)
            abort();
        atexit(cleanup);
        return;
    }
    DIR *dd = opendir(dir);
    if (dd == NULL)
        abort();
    struct dirent *de;
    while ((de = readdir(dd)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        unlinkat(dirfd(dd), de->d_name, 0);
    }
    closedir(dd);
}

static void write_seg(uint64_t seq, const uint8_t *data, size_t len)
{
    char p[256];
    snprintf(p, sizeof p, "%s/seg-%012llu.dlq", dir, (unsigned long long)seq);
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || (len > 0 && write(fd, data, len) != (ssize_t)len) || close(fd) != 0)
        abort();
}

static void header(uint8_t *h, uint64_t seq)
{
    memcpy(h, "MBDLQSEG", 8);
    wr32(h + 8, 1);
    wr64(h + 16, seq);
    wr64(h + 24, 1);
    uint32_t c = ref_crc(0, h, 12);
    wr32(h + 12, ref_crc(c, h + 16, 16));
}

/* An entry record with id `id` at p; returns its size. */
static size_t entry_record(uint8_t *p, uint64_t id)
{
    static const char subj[] = "fuzz.tail";
    uint8_t *b = p + 12;
    memset(b, 0, 40);
    wr64(b, id);
    wr64(b + 8, 1800000000000ull);
    wr64(b + 16, 1800000000000ull);
    wr64(b + 24, 1800000000000ull);
    wr32(b + 32, MB_ETIMEOUT);
    wr32(b + 36, 2);
    uint8_t *q = b + 40;
    wr32(q, sizeof subj - 1);
    memcpy(q + 4, subj, sizeof subj - 1);
    q += 4 + sizeof subj - 1;
    wr32(q, 0);     /* origin */
    wr32(q + 4, 0); /* message */
    wr32(q + 8, 0); /* headers */
    wr32(q + 12, 3);
    memcpy(q + 16, "a\0b", 3);
    q += 19;
    uint32_t body = (uint32_t)(q - b);
    wr32(p, body);
    p[8] = 1;
    p[9] = 1;
    p[10] = p[11] = 0;
    uint32_t c = ref_crc(0, p, 4);
    wr32(p + 4, ref_crc(c, p + 8, 4 + body));
    return 12 + body;
}

static void fix_crcs(uint8_t *img, size_t len)
{
    size_t off = 32;
    while (off + 12 <= len) {
        uint32_t body = le32(img + off);
        if (body > len - off - 12)
            break;
        uint32_t c = ref_crc(0, img + off, 4);
        wr32(img + off + 4, ref_crc(c, img + off + 8, 4 + (size_t)body));
        off += 12 + (size_t)body;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > (1u << 20))
        return 0;
    uint8_t mode = data[0];
    data++;
    size--;
    empty_dir();
    size_t hdr = (mode & 1) ? 32 : 0;
    uint8_t *img = malloc(hdr + size + 1);
    if (img == NULL)
        abort();
    if (hdr)
        header(img, 1);
    if (size > 0)
        memcpy(img + hdr, data, size);
    size_t len = hdr + size;
    if (mode & 2)
        fix_crcs(img, len);
    write_seg(1, img, len);
    uint8_t seg2[32 + 256];
    size_t len2 = 0;
    if (mode & 4) {
        header(seg2, 2);
        len2 = 32;
        len2 += entry_record(seg2 + len2, 1ull << 62);
        len2 += entry_record(seg2 + len2, (1ull << 62) + 1);
        write_seg(2, seg2, len2);
    }

    ref *r = calloc(1, sizeof *r);
    if (r == NULL)
        abort();
    int v1 = ref_segment(r, img, len, 1, !(mode & 4));
    size_t n1 = r->n;
    if (mode & 4)
        ref_segment(r, seg2, len2, 2, true);

    mb_dlq_opts o = {0};
    o.read_only = true;
    o.max_age_ms = MB_DLQ_UNLIMITED;
    mb_dlq *d = NULL;
    if (mb__dlq_open_ex(dir, &o, MB__DLQ_NOSYNC, &d, NULL) != MB_OK)
        abort();
    mb_dlq_stats s;
    mb_dlq_stats_get(d, &s);
    if (s.torn_records != (uint64_t)r->torn || s.corrupt_records != (uint64_t)r->corrupt)
        abort();
    check_against(d, r);
    mb_dlq_close(d, NULL);

    if (mode & 8) {
        /* A writable open deletes the older segment 1 when none of its
         * entries is live (its markers can only point into itself). */
        bool swept = false;
        if ((mode & 4) && v1 != 1) {
            swept = true;
            for (size_t i = 0; i < n1; i++)
                swept = swept && (r->e[i].purged || r->e[i].replayed);
        }
        if (swept) {
            memmove(r->e, r->e + n1, (r->n - n1) * sizeof r->e[0]);
            r->n -= n1;
        }
        o.read_only = false;
        if (mb__dlq_open_ex(dir, &o, MB__DLQ_NOSYNC, &d, NULL) != MB_OK)
            abort();
        check_against(d, r);
        mb_dlq_entry e = {0};
        e.subject = "fuzz.new";
        e.error = MB_EIO;
        uint64_t id = 0;
        mb_status st = mb_dlq_put(d, &e, true, &id, NULL);
        if (st == MB_ELIMIT && r->max_id == UINT64_MAX) {
            mb_dlq_close(d, NULL); /* every id is used up */
        } else {
            if (st != MB_OK || id <= r->max_id)
                abort();
            mb_dlq_entry *g = NULL;
            if (mb_dlq_show(d, id, &g, NULL) != MB_OK || strcmp(g->subject, "fuzz.new") != 0)
                abort();
            mb_dlq_entry_free(g);
            mb_dlq_close(d, NULL);
        }
        /* Reopen read-only: the repaired newest segment reads cleanly; only
         * a kept older segment still reports its corrupt record. */
        o.read_only = true;
        if (mb__dlq_open_ex(dir, &o, MB__DLQ_NOSYNC, &d, NULL) != MB_OK)
            abort();
        mb_dlq_stats_get(d, &s);
        uint64_t want_corrupt = (mode & 4) && v1 == 2 && !swept;
        if (s.torn_records != 0 || s.corrupt_records != want_corrupt)
            abort();
        mb_dlq_close(d, NULL);
    }
    free(r);
    free(img);
    return 0;
}
