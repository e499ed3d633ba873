/* SPDX-License-Identifier: MIT */
/*
 * frame.h - server-to-client frames and the per-connection outbound queue.
 *
 * A frame is serialized once per fan-out: gw_frame holds everything of the
 * envelope after `{"sequence_number":N,` (reference counted, shared by every
 * recipient's queue); the writer puts the per-connection prefix in front when
 * it writes (gw_frame_emit).
 *
 * gw_outq is a bounded ring of frame references. Ambient frames (say, local,
 * global, emote, pose, game events) may be dropped, oldest first, when the
 * queue is over its soft limits (messages or bytes); the count of dropped
 * frames is kept so the writer can send one `messages_skipped`. Critical
 * frames (whispers, system, acks, errors, the connection's own notices) are
 * never dropped; when they alone exceed the hard limits the push reports
 * overflow and the server closes the connection with 4008.
 *
 * Loop thread only (the reference count is not atomic).
 */
#ifndef MUDBUS_GW_FRAME_H
#define MUDBUS_GW_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- a growable byte buffer with JSON helpers; errors are sticky ---- */
typedef struct gw_buf {
    char *p;
    size_t len, cap;
    bool oom;
} gw_buf;

void gw_buf_free(gw_buf *b);
void gw_buf_put(gw_buf *b, const void *s, size_t n);
void gw_buf_puts(gw_buf *b, const char *s);
void gw_buf_u64(gw_buf *b, uint64_t v);
void gw_buf_i64(gw_buf *b, int64_t v);
/* A JSON string literal with quotes; s is valid UTF-8 (control characters,
 * '"' and '\\' are escaped; everything else is copied). */
void gw_buf_jstr(gw_buf *b, const char *s, size_t n);
/* Bytes gw_buf_jstr writes for s, without the quotes. */
size_t gw_json_escaped_len(const char *s, size_t n);
/* The longest prefix of s (cut at a UTF-8 boundary) whose escaped length is
 * at most max bytes. */
size_t gw_json_prefix_fitting(const char *s, size_t n, size_t max);
/* `"key":` */
void gw_buf_key(gw_buf *b, const char *key);
/* `,"key":"value"` when value is non-NULL and non-empty. */
void gw_buf_opt_str(gw_buf *b, const char *key, const char *value);

/* Start a frame body in b (reset first): `"event_type":T,"timestamp":NOW
 * [,"room_id":R][,"player_id":P],"data":` - the caller appends the data
 * object and then `}`. */
void gw_env_begin(gw_buf *b, const char *event_type, int64_t now_ms, const char *room_id,
                  const char *player_id);

/* ---- frames ---- */
typedef enum gw_frame_class { GW_AMBIENT = 0, GW_CRITICAL = 1 } gw_frame_class;

typedef struct gw_frame {
    uint32_t refs;
    uint32_t len; /* bytes of body */
    uint8_t cls;  /* gw_frame_class */
    char body[];  /* not NUL-terminated */
} gw_frame;

/* A frame with one reference holding a copy of body; NULL on OOM. */
gw_frame *gw_frame_new(const char *body, size_t len, gw_frame_class cls);
static inline gw_frame *gw_frame_ref(gw_frame *f)
{
    f->refs++;
    return f;
}
void gw_frame_unref(gw_frame *f);

/* Bytes gw_frame_emit writes at most (plus LWS_PRE in front). */
#define GW_SEQ_PREFIX_MAX 42
static inline size_t gw_frame_wire_max(const gw_frame *f)
{
    return GW_SEQ_PREFIX_MAX + f->len;
}
/* Write `{"sequence_number":seq,` + body into out; returns the bytes written. */
size_t gw_frame_emit(const gw_frame *f, uint64_t seq, char *out);

/* ---- the outbound queue ---- */
typedef struct gw_outq_limits {
    uint32_t max_msgs;   /* soft: ambient frames are dropped past it */
    uint32_t hard_msgs;  /* hard: overflow (close 4008) past it */
    uint64_t max_bytes;  /* soft, as max_msgs */
    uint64_t hard_bytes; /* hard, as hard_msgs */
} gw_outq_limits;

typedef struct gw_outq {
    gw_frame **ring; /* allocated on first push, grows to hard_msgs */
    uint32_t cap, head, count;
    uint64_t bytes;
    uint64_t skipped; /* ambient frames dropped since the last notice */
} gw_outq;

typedef enum gw_push_result {
    GW_PUSH_OK = 0,
    GW_PUSH_DROPPED,  /* queued, but ambient frames were dropped (or this one) */
    GW_PUSH_OVERFLOW, /* hard limit: not queued; close the connection */
    GW_PUSH_NOMEM     /* not queued */
} gw_push_result;

/* Queue a reference to f (taken only when queued). */
gw_push_result gw_outq_push(gw_outq *q, gw_frame *f, const gw_outq_limits *lim);
/* The oldest frame (still queued) or NULL. */
static inline gw_frame *gw_outq_peek(const gw_outq *q)
{
    return q->count ? q->ring[q->head] : NULL;
}
/* Remove the oldest frame and drop its reference. */
void gw_outq_pop(gw_outq *q);
void gw_outq_clear(gw_outq *q); /* drop everything and free the ring */

#endif
