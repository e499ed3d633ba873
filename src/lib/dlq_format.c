/* SPDX-License-Identifier: MIT */
/*
 * dlq_format: the DLQ's on-disk records (see the DESIGN comment of dlq.c for
 * the layout): encoding an entry, sealing a record with its CRC-32C, checking
 * a frame, decoding entry and marker bodies with every length checked, a
 * caller-owned copy of a decoded entry, and NATS subject patterns for filters.
 *
 * Decoding never trusts a length: every field is checked against the bytes
 * that remain, strings may not contain NUL (the API hands them out
 * NUL-terminated), and a body must be consumed exactly. A record that fails
 * any check is treated as corrupt by the callers, whatever its CRC says.
 *
 * Pure functions on caller memory; any thread.
 */
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "crc32c.h"
#include "dlq_int.h"

void mb__dlq_put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

void mb__dlq_put_u64(uint8_t *p, uint64_t v)
{
    mb__dlq_put_u32(p, (uint32_t)v);
    mb__dlq_put_u32(p + 4, (uint32_t)(v >> 32));
}

uint32_t mb__dlq_get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

uint64_t mb__dlq_get_u64(const uint8_t *p)
{
    return (uint64_t)mb__dlq_get_u32(p) | (uint64_t)mb__dlq_get_u32(p + 4) << 32;
}

/* ---- segment header ---- */

static uint32_t header_crc(const uint8_t *h)
{
    uint32_t c = mb__crc32c(0, h, 12);
    return mb__crc32c(c, h + 16, DLQ_SEG_HDR - 16);
}

void mb__dlq_seg_header(uint8_t *out, uint64_t seq, uint64_t base_id)
{
    memcpy(out, DLQ_SEG_MAGIC, 8);
    mb__dlq_put_u32(out + 8, DLQ_VERSION);
    mb__dlq_put_u64(out + 16, seq);
    mb__dlq_put_u64(out + 24, base_id);
    mb__dlq_put_u32(out + 12, header_crc(out));
}

int mb__dlq_seg_header_parse(const uint8_t *h, uint64_t *seq, uint64_t *base_id)
{
    if (memcmp(h, DLQ_SEG_MAGIC, 8) != 0 || mb__dlq_get_u32(h + 8) != DLQ_VERSION)
        return -1;
    if (mb__dlq_get_u32(h + 12) != header_crc(h))
        return -1;
    *seq = mb__dlq_get_u64(h + 16);
    *base_id = mb__dlq_get_u64(h + 24);
    return 0;
}

/* ---- records ---- */

static size_t str_len_max(const char *s, size_t max, bool *ok)
{
    size_t n = s == NULL ? 0 : strlen(s);
    if (n > max)
        *ok = false;
    return n;
}

size_t mb__dlq_entry_size(const mb_dlq_entry *e, mb_err *err)
{
    if (e->subject == NULL || e->subject[0] == '\0') {
        mb_err_set(err, MB_EINVAL, "dlq put: empty subject");
        return 0;
    }
    bool ok = true;
    size_t subj = str_len_max(e->subject, MB_DLQ_SUBJECT_MAX, &ok);
    if (!ok) {
        mb_err_set(err, MB_EINVAL, "dlq put: subject longer than %d bytes", MB_DLQ_SUBJECT_MAX);
        return 0;
    }
    size_t origin = str_len_max(e->origin, MB_DLQ_ORIGIN_MAX, &ok);
    if (!ok) {
        mb_err_set(err, MB_EINVAL, "dlq put: origin longer than %d bytes", MB_DLQ_ORIGIN_MAX);
        return 0;
    }
    size_t msg = str_len_max(e->error_message, MB_DLQ_MESSAGE_MAX, &ok);
    if (!ok) {
        mb_err_set(err, MB_EINVAL, "dlq put: error message longer than %d bytes",
                   MB_DLQ_MESSAGE_MAX);
        return 0;
    }
    if (e->error == MB_OK || (unsigned)e->error >= (unsigned)MB__STATUS_COUNT) {
        mb_err_set(err, MB_EINVAL, "dlq put: error status must be a failure status, not %d",
                   (int)e->error);
        return 0;
    }
    if (e->nheaders > MB_DLQ_HEADERS_MAX || (e->nheaders > 0 && e->headers == NULL)) {
        mb_err_set(err, MB_EINVAL, "dlq put: %zu headers (at most %d, and not NULL)", e->nheaders,
                   MB_DLQ_HEADERS_MAX);
        return 0;
    }
    if (e->payload == NULL && e->payload_len > 0) {
        mb_err_set(err, MB_EINVAL, "dlq put: NULL payload of %zu bytes", e->payload_len);
        return 0;
    }
    /* Sizes are capped so that the sum cannot overflow: MB_DLQ_ENTRY_HARD_MAX
     * is far below SIZE_MAX, and each header adds at most that much. */
    size_t cap = (size_t)DLQ_BODY_MAX;
    size_t n = DLQ_FRAME + DLQ_ENTRY_FIXED + 4 + subj + 4 + origin + 4 + msg + 4 + 4;
    for (size_t i = 0; i < e->nheaders; i++) {
        const mb_dlq_header *h = &e->headers[i];
        if (h->name == NULL || h->name[0] == '\0' || h->value == NULL) {
            mb_err_set(err, MB_EINVAL, "dlq put: header %zu has an empty name or NULL value", i);
            return 0;
        }
        size_t hn = strlen(h->name), hv = strlen(h->value);
        if (hn > cap || hv > cap || n > cap) {
            mb_err_set(err, MB_ETOOBIG, "dlq put: entry larger than %u bytes",
                       (unsigned)MB_DLQ_ENTRY_HARD_MAX);
            return 0;
        }
        n += 8 + hn + hv;
    }
    if (e->payload_len > cap || n + e->payload_len > cap) {
        mb_err_set(err, MB_ETOOBIG, "dlq put: entry larger than %u bytes",
                   (unsigned)MB_DLQ_ENTRY_HARD_MAX);
        return 0;
    }
    return n + e->payload_len;
}

static uint8_t *put_bytes(uint8_t *p, const void *s, size_t n)
{
    mb__dlq_put_u32(p, (uint32_t)n);
    if (n > 0)
        memcpy(p + 4, s, n);
    return p + 4 + n;
}

static uint8_t *put_str(uint8_t *p, const char *s)
{
    return put_bytes(p, s, s == NULL ? 0 : strlen(s));
}

void mb__dlq_entry_encode(uint8_t *rec, size_t size, const mb_dlq_entry *e, uint64_t id,
                          int64_t added_ms, int64_t first_ms, int64_t last_ms)
{
    mb__dlq_put_u32(rec, (uint32_t)(size - DLQ_FRAME));
    mb__dlq_put_u32(rec + 4, 0);
    rec[8] = DLQ_VERSION;
    rec[9] = DLQ_REC_ENTRY;
    rec[10] = rec[11] = 0;
    uint8_t *p = rec + DLQ_FRAME;
    mb__dlq_put_u64(p, id);
    mb__dlq_put_u64(p + 8, (uint64_t)added_ms);
    mb__dlq_put_u64(p + 16, (uint64_t)first_ms);
    mb__dlq_put_u64(p + 24, (uint64_t)last_ms);
    mb__dlq_put_u32(p + 32, (uint32_t)e->error);
    mb__dlq_put_u32(p + 36, e->attempts);
    p += DLQ_ENTRY_FIXED;
    p = put_str(p, e->subject);
    p = put_str(p, e->origin);
    p = put_str(p, e->error_message);
    mb__dlq_put_u32(p, (uint32_t)e->nheaders);
    p += 4;
    for (size_t i = 0; i < e->nheaders; i++) {
        p = put_str(p, e->headers[i].name);
        p = put_str(p, e->headers[i].value);
    }
    p = put_bytes(p, e->payload, e->payload_len);
}

static uint32_t record_crc(const uint8_t *rec, size_t size)
{
    uint32_t c = mb__crc32c(0, rec, 4);
    return mb__crc32c(c, rec + 8, size - 8);
}

void mb__dlq_seal(uint8_t *rec, size_t size)
{
    mb__dlq_put_u32(rec + 4, record_crc(rec, size));
}

size_t mb__dlq_frame_check(const uint8_t *rec, uint64_t avail)
{
    if (avail < DLQ_FRAME)
        return 0;
    uint32_t body = mb__dlq_get_u32(rec);
    if (body > DLQ_BODY_MAX || (uint64_t)body + DLQ_FRAME > avail)
        return 0;
    if (rec[8] != DLQ_VERSION || rec[9] < DLQ_REC_ENTRY || rec[9] > DLQ_REC_PURGED ||
        rec[10] != 0 || rec[11] != 0)
        return 0;
    size_t size = (size_t)body + DLQ_FRAME;
    if (mb__dlq_get_u32(rec + 4) != record_crc(rec, size))
        return 0;
    return size;
}

/* A cursor over a body: every read checks the remaining length. */
typedef struct rd {
    const uint8_t *p;
    size_t left;
} rd;

static int rd_u32(rd *r, uint32_t *v)
{
    if (r->left < 4)
        return -1;
    *v = mb__dlq_get_u32(r->p);
    r->p += 4;
    r->left -= 4;
    return 0;
}

/* A length-prefixed field of at most `max` bytes; `text` fields may not
 * contain NUL. */
static int rd_field(rd *r, uint32_t max, bool text, const uint8_t **out, uint32_t *len)
{
    uint32_t n;
    if (rd_u32(r, &n) != 0 || n > max || n > r->left)
        return -1;
    if (text && n > 0 && memchr(r->p, 0, n) != NULL)
        return -1;
    *out = r->p;
    *len = n;
    r->p += n;
    r->left -= n;
    return 0;
}

int mb__dlq_entry_decode(const uint8_t *body, size_t len, dlq_view *v)
{
    if (len < DLQ_ENTRY_FIXED)
        return -1;
    v->id = mb__dlq_get_u64(body);
    v->added_ms = (int64_t)mb__dlq_get_u64(body + 8);
    v->first_ms = (int64_t)mb__dlq_get_u64(body + 16);
    v->last_ms = (int64_t)mb__dlq_get_u64(body + 24);
    v->status = mb__dlq_get_u32(body + 32);
    v->attempts = mb__dlq_get_u32(body + 36);
    if (v->id == 0 || v->status == 0)
        return -1;
    rd r = {body + DLQ_ENTRY_FIXED, len - DLQ_ENTRY_FIXED};
    if (rd_field(&r, MB_DLQ_SUBJECT_MAX, true, &v->subject, &v->subject_len) != 0 ||
        v->subject_len == 0)
        return -1;
    if (rd_field(&r, MB_DLQ_ORIGIN_MAX, true, &v->origin, &v->origin_len) != 0 ||
        rd_field(&r, MB_DLQ_MESSAGE_MAX, true, &v->message, &v->message_len) != 0 ||
        rd_u32(&r, &v->nheaders) != 0 || v->nheaders > MB_DLQ_HEADERS_MAX)
        return -1;
    v->headers = r.p;
    for (uint32_t i = 0; i < v->nheaders; i++) {
        const uint8_t *s;
        uint32_t n;
        if (rd_field(&r, UINT32_MAX, true, &s, &n) != 0 || n == 0 ||
            rd_field(&r, UINT32_MAX, true, &s, &n) != 0)
            return -1;
    }
    v->headers_len = (uint32_t)(r.p - v->headers);
    if (rd_field(&r, UINT32_MAX, false, &v->payload, &v->payload_len) != 0 || r.left != 0)
        return -1;
    return 0;
}

int mb__dlq_mark_decode(const uint8_t *body, size_t len, uint32_t *count)
{
    if (len < DLQ_MARK_FIXED)
        return -1;
    uint32_t n = mb__dlq_get_u32(body + 8);
    if (n == 0 || n > DLQ_MARK_MAX || len != DLQ_MARK_FIXED + (size_t)n * 8)
        return -1;
    *count = n;
    return 0;
}

static char *copy_str(char **dst, const uint8_t *s, size_t n)
{
    char *out = *dst;
    if (n > 0)
        memcpy(out, s, n);
    out[n] = '\0';
    *dst += n + 1;
    return out;
}

mb_dlq_entry *mb__dlq_entry_copy(const dlq_view *v, uint32_t flags)
{
    /* One block: the entry, the header array, then every string with its NUL
     * and the payload with a NUL after it. The header region holds each
     * name/value as 4-byte length + bytes, so its strings need
     * headers_len - 8 * nheaders + 2 * nheaders bytes. */
    size_t hdr_arr = (size_t)v->nheaders * sizeof(mb_dlq_header);
    size_t strings = (size_t)v->subject_len + 1 + v->origin_len + 1 + v->message_len + 1 +
                     v->headers_len + v->payload_len + 1;
    mb_dlq_entry *e = mb__malloc(sizeof *e + hdr_arr + strings);
    if (e == NULL)
        return NULL;
    mb_dlq_header *hdrs = (mb_dlq_header *)(void *)(e + 1);
    char *s = (char *)(hdrs + v->nheaders);
    memset(e, 0, sizeof *e);
    e->id = v->id;
    e->subject = copy_str(&s, v->subject, v->subject_len);
    e->origin = copy_str(&s, v->origin, v->origin_len);
    e->error_message = copy_str(&s, v->message, v->message_len);
    const uint8_t *h = v->headers;
    for (uint32_t i = 0; i < v->nheaders; i++) {
        uint32_t n = mb__dlq_get_u32(h);
        hdrs[i].name = copy_str(&s, h + 4, n);
        h += 4 + n;
        n = mb__dlq_get_u32(h);
        hdrs[i].value = copy_str(&s, h + 4, n);
        h += 4 + n;
    }
    e->headers = v->nheaders > 0 ? hdrs : NULL;
    e->nheaders = v->nheaders;
    e->payload = copy_str(&s, v->payload, v->payload_len);
    e->payload_len = v->payload_len;
    e->error = (mb_status)v->status;
    e->attempts = v->attempts;
    e->first_failure_ms = v->first_ms;
    e->last_failure_ms = v->last_ms;
    e->added_ms = v->added_ms;
    e->flags = flags;
    return e;
}

void mb_dlq_entry_free(mb_dlq_entry *e)
{
    mb__free(e);
}

uint32_t mb__dlq_subject_hash(const void *s, size_t n)
{
    const unsigned char *p = s;
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 16777619u;
    }
    return h;
}

/* ---- subject patterns ---- */

mb_status mb__dlq_pattern_init(dlq_pattern *p, const char *text, mb_err *err)
{
    p->text = text;
    p->literal = true;
    p->hash = 0;
    if (text == NULL)
        return MB_OK;
    size_t n = strlen(text);
    if (n == 0 || n > MB_DLQ_SUBJECT_MAX)
        return mb_err_set(err, MB_EPATTERN, "subject pattern must be 1..%d bytes",
                          MB_DLQ_SUBJECT_MAX);
    const char *t = text;
    for (;;) {
        const char *dot = strchr(t, '.');
        size_t tl = dot ? (size_t)(dot - t) : strlen(t);
        if (tl == 0)
            return mb_err_set(err, MB_EPATTERN, "subject pattern '%s' has an empty token", text);
        bool wild = memchr(t, '*', tl) != NULL || memchr(t, '>', tl) != NULL;
        if (wild && tl != 1)
            return mb_err_set(err, MB_EPATTERN,
                              "subject pattern '%s': a wildcard must be a whole token", text);
        if (wild)
            p->literal = false;
        if (wild && *t == '>' && dot != NULL)
            return mb_err_set(err, MB_EPATTERN, "subject pattern '%s': '>' must be the last token",
                              text);
        if (dot == NULL)
            break;
        t = dot + 1;
    }
    if (p->literal)
        p->hash = mb__dlq_subject_hash(text, n);
    return MB_OK;
}

bool mb__dlq_pattern_match(const dlq_pattern *p, const uint8_t *s, size_t n)
{
    if (p->text == NULL)
        return true;
    if (p->literal)
        return strlen(p->text) == n && memcmp(p->text, s, n) == 0;
    const char *t = p->text;
    size_t si = 0;
    bool more = true; /* the subject has a token starting at si */
    for (;;) {
        const char *dot = strchr(t, '.');
        size_t tl = dot ? (size_t)(dot - t) : strlen(t);
        if (!more)
            return false;
        if (tl == 1 && *t == '>')
            return true;
        const uint8_t *sd = memchr(s + si, '.', n - si);
        size_t se = sd ? (size_t)(sd - s) : n;
        if (!(tl == 1 && *t == '*') && (se - si != tl || memcmp(s + si, t, tl) != 0))
            return false;
        if (sd == NULL)
            more = false;
        else
            si = se + 1;
        if (dot == NULL)
            return !more;
        t = dot + 1;
    }
}
