/* SPDX-License-Identifier: MIT */
#include "frame.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mudbus/schema.h"

/* ---- buffer ---- */

static bool reserve(gw_buf *b, size_t n)
{
    if (b->oom)
        return false;
    if (b->len + n + 1 <= b->cap)
        return true;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n + 1)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
        b->oom = true;
        return false;
    }
    b->p = p;
    b->cap = cap;
    return true;
}

void gw_buf_free(gw_buf *b)
{
    free(b->p);
    memset(b, 0, sizeof *b);
}

void gw_buf_put(gw_buf *b, const void *s, size_t n)
{
    if (!reserve(b, n))
        return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void gw_buf_puts(gw_buf *b, const char *s)
{
    gw_buf_put(b, s, strlen(s));
}

void gw_buf_u64(gw_buf *b, uint64_t v)
{
    char tmp[24];
    size_t i = sizeof tmp;
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    gw_buf_put(b, tmp + i, sizeof tmp - i);
}

void gw_buf_i64(gw_buf *b, int64_t v)
{
    if (v < 0) {
        gw_buf_put(b, "-", 1);
        gw_buf_u64(b, (uint64_t)0 - (uint64_t)v);
    } else {
        gw_buf_u64(b, (uint64_t)v);
    }
}

void gw_buf_jstr(gw_buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    if (!reserve(b, n + 2))
        return;
    b->p[b->len++] = '"';
    size_t run = 0; /* start of the pending run of plain bytes */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *esc = NULL;
        char u[7];
        if (c >= 0x20 && c != '"' && c != '\\') {
            continue;
        } else if (c == '"') {
            esc = "\\\"";
        } else if (c == '\\') {
            esc = "\\\\";
        } else if (c == '\n') {
            esc = "\\n";
        } else if (c == '\t') {
            esc = "\\t";
        } else if (c == '\r') {
            esc = "\\r";
        } else {
            u[0] = '\\', u[1] = 'u', u[2] = '0', u[3] = '0';
            u[4] = hex[c >> 4], u[5] = hex[c & 15], u[6] = '\0';
            esc = u;
        }
        gw_buf_put(b, s + run, i - run);
        gw_buf_puts(b, esc);
        run = i + 1;
    }
    gw_buf_put(b, s + run, n - run);
    gw_buf_put(b, "\"", 1);
}

static size_t esc_len(unsigned char c)
{
    if (c >= 0x20 && c != '"' && c != '\\')
        return 1;
    return c == '"' || c == '\\' || c == '\n' || c == '\t' || c == '\r' ? 2 : 6;
}

size_t gw_json_escaped_len(const char *s, size_t n)
{
    size_t len = 0;
    for (size_t i = 0; i < n; i++)
        len += esc_len((unsigned char)s[i]);
    return len;
}

size_t gw_json_prefix_fitting(const char *s, size_t n, size_t max)
{
    size_t len = 0, cut = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c & 0xC0) != 0x80)
            cut = i; /* a character starts here: the prefix may end before it */
        len += esc_len(c);
        if (len > max)
            return cut;
    }
    return n;
}

void gw_buf_key(gw_buf *b, const char *key)
{
    gw_buf_put(b, "\"", 1);
    gw_buf_puts(b, key);
    gw_buf_put(b, "\":", 2);
}

void gw_buf_opt_str(gw_buf *b, const char *key, const char *value)
{
    if (!value || !*value)
        return;
    gw_buf_put(b, ",", 1);
    gw_buf_key(b, key);
    gw_buf_jstr(b, value, strlen(value));
}

void gw_env_begin(gw_buf *b, const char *event_type, int64_t now_ms, const char *room_id,
                  const char *player_id)
{
    char ts[40];
    size_t tl = mb_timestamp_format(now_ms, ts);
    b->len = 0;
    b->oom = false;
    gw_buf_key(b, "event_type");
    gw_buf_jstr(b, event_type, strlen(event_type));
    gw_buf_puts(b, ",\"timestamp\":\"");
    gw_buf_put(b, ts, tl);
    gw_buf_put(b, "\"", 1);
    gw_buf_opt_str(b, "room_id", room_id);
    gw_buf_opt_str(b, "player_id", player_id);
    gw_buf_puts(b, ",\"data\":");
}

/* ---- frames ---- */

gw_frame *gw_frame_new(const char *body, size_t len, gw_frame_class cls)
{
    if (len > UINT32_MAX)
        return NULL;
    gw_frame *f = malloc(sizeof *f + len);
    if (!f)
        return NULL;
    f->refs = 1;
    f->len = (uint32_t)len;
    f->cls = (uint8_t)cls;
    memcpy(f->body, body, len);
    return f;
}

void gw_frame_unref(gw_frame *f)
{
    if (f && --f->refs == 0)
        free(f);
}

size_t gw_frame_emit(const gw_frame *f, uint64_t seq, char *out)
{
    static const char pre[] = "{\"sequence_number\":";
    memcpy(out, pre, sizeof pre - 1);
    size_t n = sizeof pre - 1;
    char tmp[24];
    size_t i = sizeof tmp;
    do {
        tmp[--i] = (char)('0' + seq % 10);
        seq /= 10;
    } while (seq);
    memcpy(out + n, tmp + i, sizeof tmp - i);
    n += sizeof tmp - i;
    out[n++] = ',';
    memcpy(out + n, f->body, f->len);
    return n + f->len;
}

/* ---- queue ---- */

static bool ring_grow(gw_outq *q, uint32_t hard)
{
    uint32_t cap = q->cap ? q->cap * 2 : 8;
    if (cap > hard)
        cap = hard;
    if (cap <= q->cap)
        return false;
    gw_frame **r = malloc(sizeof *r * cap);
    if (!r)
        return false;
    for (uint32_t i = 0; i < q->count; i++)
        r[i] = q->ring[(q->head + i) % q->cap];
    free(q->ring);
    q->ring = r;
    q->cap = cap;
    q->head = 0;
    return true;
}

/* Remove the oldest ambient frame; false when there is none. */
static bool drop_oldest_ambient(gw_outq *q)
{
    for (uint32_t i = 0; i < q->count; i++) {
        uint32_t at = (q->head + i) % q->cap;
        gw_frame *f = q->ring[at];
        if (f->cls != GW_AMBIENT)
            continue;
        q->bytes -= f->len;
        gw_frame_unref(f);
        /* Close the gap by moving the older frames up by one. */
        for (uint32_t j = i; j > 0; j--)
            q->ring[(q->head + j) % q->cap] = q->ring[(q->head + j - 1) % q->cap];
        q->head = (q->head + 1) % q->cap;
        q->count--;
        q->skipped++;
        return true;
    }
    return false;
}

gw_push_result gw_outq_push(gw_outq *q, gw_frame *f, const gw_outq_limits *lim)
{
    gw_push_result r = GW_PUSH_OK;
    if (f->cls == GW_AMBIENT) {
        while (q->count && (q->count >= lim->max_msgs || q->bytes + f->len > lim->max_bytes)) {
            if (!drop_oldest_ambient(q)) {
                q->skipped++; /* only critical frames queued: drop the new one */
                return GW_PUSH_DROPPED;
            }
            r = GW_PUSH_DROPPED;
        }
    }
    if (q->count >= lim->hard_msgs || q->bytes + f->len > lim->hard_bytes)
        return GW_PUSH_OVERFLOW;
    if (q->count == q->cap && !ring_grow(q, lim->hard_msgs))
        return GW_PUSH_NOMEM;
    q->ring[(q->head + q->count) % q->cap] = gw_frame_ref(f);
    q->count++;
    q->bytes += f->len;
    return r;
}

void gw_outq_pop(gw_outq *q)
{
    if (!q->count)
        return;
    gw_frame *f = q->ring[q->head];
    q->head = (q->head + 1) % q->cap;
    q->count--;
    q->bytes -= f->len;
    gw_frame_unref(f);
    if (!q->count) { /* an idle connection holds no ring */
        free(q->ring);
        q->ring = NULL;
        q->cap = q->head = 0;
    }
}

void gw_outq_clear(gw_outq *q)
{
    while (q->count)
        gw_outq_pop(q);
    free(q->ring);
    memset(q, 0, sizeof *q);
}
