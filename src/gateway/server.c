/* SPDX-License-Identifier: MIT */
/*
 * server.c - the loop: libwebsockets on the gateway's own libuv loop
 * (foreign_loops), libmudbus in poll mode on the same loop, HTTP endpoints
 * (/healthz, /readyz, /metrics, /auth/dev-login, static files from web_root),
 * WebSocket sessions (token check before the upgrade, fragment assembly,
 * frame size and UTF-8 limits, batched writes), and the SIGTERM drain.
 */
#include <errno.h>
#include <sched.h>
#include <jansson.h>
#include <libwebsockets.h>
#include <malloc.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "gw.h"

/* ---- logging: one line per event, key=value ---- */

void gw_log(const char *level, const char *fmt, ...)
{
    char ts[40];
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    mb_timestamp_format((int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000, ts);
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, "ts=%s level=%s %s\n", ts, level, line);
}

static void lws_logger(int level, const char *line)
{
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        n--;
    gw_log(level == LLL_ERR ? "error" : "warn", "event=lws msg=\"%.*s\"", (int)n, line);
}

/* ---- sessions and writes ---- */

struct pss {    /* libwebsockets' per-connection storage */
    gw_sess *s; /* first: a WebSocket connection's storage holds only this */
    char *body; /* dev-login POST body */
    size_t body_len;
    bool want_body; /* this transaction is a dev-login POST: take its body */
};

static gw *the_gw; /* for libwebsockets callbacks (one gateway per process) */

void gw_sess_unref(gw_sess *s)
{
    if (--s->refs)
        return;
    gw_outq_clear(&s->q);
    free(s->rx);
    free(s);
}

void gw_send(gw_sess *s, gw_frame *f)
{
    if (s->closed || s->closing)
        return;
    gw *g = s->g;
    gw_push_result r = gw_outq_push(&s->q, f, &g->cfg->queue);
    switch (r) {
    case GW_PUSH_OK:
        break;
    case GW_PUSH_DROPPED:
        mb_counter_add(g->st.drops, 1);
        break;
    case GW_PUSH_OVERFLOW:
        mb_counter_add(g->st.slow_closes, 1);
        gw_log("warn", "event=slow_client_closed player=%s queued=%u bytes=%llu", s->pe->id,
               s->q.count, (unsigned long long)s->q.bytes);
        gw_outq_clear(&s->q);
        gw_close(s, 4008, "slow client");
        return;
    case GW_PUSH_NOMEM:
        gw_log("error", "event=queue_alloc_failed player=%s", s->pe->id);
        gw_close(s, 1011, "out of memory");
        return;
    }
    if (!s->dirty) {
        s->dirty = true;
        s->refs++;
        s->dirty_next = g->dirty;
        g->dirty = s;
        g->ndirty++;
    }
}

void gw_send_scratch(gw_sess *s, gw_frame_class cls)
{
    gw *g = s->g;
    if (g->scratch.oom) {
        gw_log("error", "event=frame_alloc_failed");
        return;
    }
    gw_frame *f = gw_frame_new(g->scratch.p, g->scratch.len, cls);
    if (!f)
        return;
    gw_send(s, f);
    gw_frame_unref(f);
}

void gw_close(gw_sess *s, uint16_t code, const char *reason)
{
    if (s->closed || s->closing)
        return;
    s->closing = true;
    s->close_code = code;
    s->close_why = reason;
    lws_callback_on_writable(s->wsi);
}

/* A WebSocket frame header for an unmasked final text frame of n bytes. */
static size_t ws_header(uint8_t *h, size_t n)
{
    h[0] = 0x81;
    if (n < 126) {
        h[1] = (uint8_t)n;
        return 2;
    }
    if (n <= 0xFFFF) {
        h[1] = 126;
        h[2] = (uint8_t)(n >> 8);
        h[3] = (uint8_t)n;
        return 4;
    }
    h[1] = 127;
    for (int i = 0; i < 8; i++)
        h[2 + i] = (uint8_t)((uint64_t)n >> (56 - 8 * i));
    return 10;
}

/* Send a close frame with a code and reason ourselves (written raw, after
 * what is already written), then let libwebsockets drop the connection:
 * returning -1 from a callback alone closes without a close frame. */
static int close_with(struct lws *wsi, uint16_t code, const char *why)
{
    size_t n = strnlen(why, 120); /* a close payload is at most 125 bytes */
    uint8_t f[LWS_PRE + 4 + 120];
    uint8_t *p = f + LWS_PRE;
    p[0] = 0x88;
    p[1] = (uint8_t)(2 + n);
    p[2] = (uint8_t)(code >> 8);
    p[3] = (uint8_t)code;
    memcpy(p + 4, why, n);
    lws_write(wsi, p, 4 + n, LWS_WRITE_RAW);
    return -1;
}

static uint8_t *wbuf;
static size_t wbuf_cap;

static bool wbuf_reserve(size_t n)
{
    if (n <= wbuf_cap)
        return true;
    size_t cap = wbuf_cap ? wbuf_cap : 65536;
    while (cap < n)
        cap *= 2;
    uint8_t *p = realloc(wbuf, cap);
    if (!p)
        return false;
    wbuf = p;
    wbuf_cap = cap;
    return true;
}

#define WRITE_BATCH_BYTES 65536

/* Send pre-framed bytes on the socket ourselves; what the kernel does not
 * take goes to libwebsockets (lws_write raw), which holds it, sends it before
 * anything else (its own pongs and close frames included) and then reports
 * the socket writeable. Writing through lws_write every time would cost two
 * epoll changes per write: libwebsockets 4.1 asks for POLLOUT after each. */
static int send_frames(struct lws *wsi, uint8_t *p, size_t len)
{
    int fd = (int)lws_get_socket_fd(wsi);
    ssize_t n = fd >= 0 ? send(fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT) : -1;
    if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            return -1;
        n = 0;
    }
    if ((size_t)n == len)
        return 0;
    return lws_write(wsi, p + n, len - (size_t)n, LWS_WRITE_RAW) < 0 ? -1 : 0;
}

/* Write queued frames: several frames per send (pre-framed, written raw),
 * until the queue is empty or the kernel did not take everything (then
 * libwebsockets holds the rest and reports the socket writeable once it has
 * sent it). Returns -1 on a write error. */
static int write_queue(gw *g, gw_sess *s)
{
    if (s->q.skipped && s->q.count < g->cfg->queue.max_msgs / 2) {
        gw_buf *b = &g->scratch;
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        gw_env_begin(b, "messages_skipped", (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000,
                     NULL, NULL);
        gw_buf_puts(b, "{\"count\":");
        gw_buf_u64(b, s->q.skipped);
        gw_buf_puts(b, ",\"reason\":\"slow connection\"}}");
        s->q.skipped = 0;
        gw_frame *f = b->oom ? NULL : gw_frame_new(b->p, b->len, GW_CRITICAL);
        if (f) {
            gw_outq_limits lim = g->cfg->queue;
            lim.hard_msgs++; /* the notice always fits */
            gw_outq_push(&s->q, f, &lim);
            gw_frame_unref(f);
        }
    }
    while (s->q.count && !lws_partial_buffered(s->wsi)) {
        size_t used = LWS_PRE;
        while (s->q.count) {
            gw_frame *f = gw_outq_peek(&s->q);
            size_t need = used + 10 + gw_frame_wire_max(f);
            if (used > LWS_PRE && need > LWS_PRE + WRITE_BATCH_BYTES)
                break;
            if (!wbuf_reserve(need))
                return -1;
            /* The payload goes 10 bytes in (room for the largest header),
             * then the header is put right before it. */
            uint8_t *pay = wbuf + used + 10;
            size_t n = gw_frame_emit(f, ++s->seq, (char *)pay);
            uint8_t h[10];
            size_t hl = ws_header(h, n);
            memmove(wbuf + used + hl, pay, n);
            memcpy(wbuf + used, h, hl);
            used += hl + n;
            gw_outq_pop(&s->q);
            mb_counter_add(g->st.frames_out, 1);
        }
        if (send_frames(s->wsi, wbuf + LWS_PRE, used - LWS_PRE) < 0)
            return -1;
    }
    if (s->q.count)
        lws_callback_on_writable(s->wsi);
    return 0;
}

static int on_writeable(gw *g, gw_sess *s)
{
    if (s->closing && (s->close_code == 4008 || !s->q.count)) {
        if (lws_partial_buffered(s->wsi)) { /* the close frame goes after it */
            lws_callback_on_writable(s->wsi);
            return 0;
        }
        return close_with(s->wsi, s->close_code, s->close_why);
    }
    if (s->held)
        return 0; /* gw_after_welcome asks for this write again */
    if (write_queue(g, s) < 0)
        return -1;
    if (s->closing)
        lws_callback_on_writable(s->wsi);
    return 0;
}

/* After the callbacks of a loop iteration: write what they queued, one send
 * per session (frames of several deliveries go out together). */
static void on_flush_check(uv_check_t *c)
{
    gw *g = c->data;
    gw_sess *list = g->dirty;
    g->dirty = NULL;
    g->ndirty = 0;
    while (list) {
        gw_sess *s = list;
        list = s->dirty_next;
        s->dirty = false;
        if (!s->closed && !s->held) {
            if (s->closing || lws_partial_buffered(s->wsi) || write_queue(g, s) < 0)
                lws_callback_on_writable(s->wsi);
        }
        gw_sess_unref(s);
    }
}

/* Before each poll: the time since the last one, less what the loop spent
 * blocked in the poll, is the work of one iteration: how long an event that
 * became ready just after the poll returned may have waited. */
static void on_busy_prepare(uv_prepare_t *p)
{
    gw *g = p->data;
    uint64_t now = uv_hrtime(), idle = uv_metrics_idle_time(&g->loop);
    if (g->busy_prep_ns != 0)
        mb_histogram_observe(g->st.loop_busy, (now - g->busy_prep_ns) - (idle - g->busy_idle_ns));
    g->busy_prep_ns = now;
    g->busy_idle_ns = idle;
    gw_listener_iteration(g);
}

/* ---- HTTP ---- */

static int http_reply(struct lws *wsi, unsigned status, const char *ctype, const char *body,
                      size_t len)
{
    uint8_t hdr[LWS_PRE + 512], *start = hdr + LWS_PRE, *p = start, *end = hdr + sizeof hdr - 1;
    if (lws_add_http_common_headers(wsi, status, ctype, (lws_filepos_t)len, &p, end) ||
        lws_add_http_header_by_name(wsi, (const unsigned char *)"cache-control:",
                                    (const unsigned char *)"no-store", 8, &p, end) ||
        lws_finalize_write_http_header(wsi, start, &p, end))
        return -1;
    uint8_t *b = malloc(LWS_PRE + len + 1);
    if (!b)
        return -1;
    memcpy(b + LWS_PRE, body, len);
    int n = lws_write(wsi, b + LWS_PRE, len, LWS_WRITE_HTTP_FINAL);
    free(b);
    if (n < 0)
        return -1;
    return lws_http_transaction_completed(wsi) ? -1 : 0;
}

/* Refuse a WebSocket upgrade with an HTTP status and a one-line body; the
 * caller returns 1 (libwebsockets completes the transaction). The response
 * is written whole: libwebsockets' header helpers answer an upgrade request
 * with an HTTP/1.0 status line, which WebSocket clients do not accept. */
static int http_refuse(struct lws *wsi, unsigned status, const char *msg)
{
    char buf[LWS_PRE + 768];
    char *p = buf + LWS_PRE;
    const char *text = status == 401 ? "Unauthorized" : "Service Unavailable";
    int n = snprintf(p, sizeof buf - LWS_PRE,
                     "HTTP/1.1 %u %s\r\ncontent-type: text/plain\r\ncontent-length: %zu\r\n"
                     "cache-control: no-store\r\nconnection: close\r\n\r\n%.200s\n",
                     status, text, strnlen(msg, 200) + 1, msg);
    if (n < 0 || (size_t)n >= sizeof buf - LWS_PRE)
        return -1;
    return lws_write(wsi, (unsigned char *)p, (size_t)n, LWS_WRITE_HTTP_FINAL) < 0 ? -1 : 1;
}

static int http_json_error(struct lws *wsi, unsigned status, const char *msg)
{
    gw_buf b = {0};
    gw_buf_puts(&b, "{\"error\":");
    gw_buf_jstr(&b, msg, strlen(msg));
    gw_buf_puts(&b, "}\n");
    int r = b.oom ? -1 : http_reply(wsi, status, "application/json", b.p, b.len);
    gw_buf_free(&b);
    return r;
}

static bool ready(gw *g, char *why, size_t cap)
{
    mb_client_health h;
    mb_client_health_get(g->nats, &h);
    if (g->draining)
        snprintf(why, cap, "draining");
    else if (!h.live)
        snprintf(why, cap, "NATS: no live connection (%.160s)",
                 h.last_error_msg[0] ? h.last_error_msg : "not connected");
    else if (!g->global_subs[0] || !g->global_subs[1])
        snprintf(why, cap, "NATS: global subscriptions missing");
    else
        return true;
    return false;
}

static void stats_refresh(gw *g)
{
    int64_t queued = 0;
    for (gw_sess *s = g->all; s; s = s->all_next)
        queued += s->q.count;
    mb_gauge_set(g->st.queued_frames, queued);
    if (g->store)
        mb_gauge_set(g->st.store_statements, (int64_t)gw_store_queries(g->store));
    struct mallinfo2 mi = mallinfo2();
    mb_gauge_set(g->st.heap, (int64_t)mi.uordblks);
    mb_gauge_set(g->st.work_queue,
                 (int64_t)(gw_work_depth(g->work) + gw_work_depth(g->store_work)));
}

static int dev_login(gw *g, struct lws *wsi, const char *body, size_t len)
{
    json_error_t je;
    json_t *o = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
    const char *name = o ? json_string_value(json_object_get(o, "name")) : NULL;
    json_t *adm = o ? json_object_get(o, "admin") : NULL;
    const char *party = o ? json_string_value(json_object_get(o, "party")) : NULL;
    size_t nl = name ? strlen(name) : 0;
    bool ok = name && nl <= 32 && gw_is_token(name, nl) && (!adm || json_is_boolean(adm)) &&
              (!json_object_get(o, "party") || (party && gw_is_token(party, strlen(party))));
    if (!ok) {
        json_decref(o);
        return http_json_error(wsi, 400,
                               "body must be {\"name\": 1..32 of [A-Za-z0-9_-], optional "
                               "\"admin\": bool, \"party\": id}");
    }
    gw_player p = {0};
    for (size_t i = 0; i < nl; i++)
        p.id[i] = (char)(name[i] >= 'A' && name[i] <= 'Z' ? name[i] - 'A' + 'a' : name[i]);
    snprintf(p.name, sizeof p.name, "%s", name);
    snprintf(p.party, sizeof p.party, "%s", party ? party : "");
    p.admin = adm && json_is_true(adm);
    p.exp = (int64_t)time(NULL) + (int64_t)g->cfg->dev_token_ttl_s;
    json_decref(o);
    char msg[160];
    char *tok = gw_auth_issue(g->auth, &p, msg);
    if (!tok)
        return http_json_error(wsi, 500, msg);
    char exp[40];
    mb_timestamp_format(p.exp * 1000, exp);
    gw_buf b = {0};
    gw_buf_puts(&b, "{\"token\":");
    gw_buf_jstr(&b, tok, strlen(tok));
    gw_buf_puts(&b, ",\"player_id\":");
    gw_buf_jstr(&b, p.id, strlen(p.id));
    gw_buf_puts(&b, ",\"name\":");
    gw_buf_jstr(&b, p.name, strlen(p.name));
    gw_buf_puts(&b, ",\"expires_at\":");
    gw_buf_jstr(&b, exp, strlen(exp));
    gw_buf_puts(&b, "}\n");
    free(tok);
    gw_log("info", "event=dev_login player=%s admin=%d", p.id, p.admin);
    int r = b.oom ? -1 : http_reply(wsi, 200, "application/json", b.p, b.len);
    gw_buf_free(&b);
    return r;
}

static int on_http(gw *g, struct lws *wsi, struct pss *ps, const char *uri)
{
    char why[256];
    if (strcmp(uri, "/healthz") == 0)
        return http_reply(wsi, 200, "text/plain", "ok\n", 3);
    if (strcmp(uri, "/readyz") == 0) {
        if (ready(g, why, sizeof why))
            return http_reply(wsi, 200, "text/plain", "ready\n", 6);
        size_t n = strlen(why);
        why[n] = '\n';
        return http_reply(wsi, 503, "text/plain", why, n + 1);
    }
    if (strcmp(uri, "/metrics") == 0) {
        stats_refresh(g);
        char *text = NULL;
        size_t len = 0;
        mb_err err = {0};
        if (mb_metrics_format(g->metrics, &text, &len, &err) != MB_OK)
            return http_reply(wsi, 500, "text/plain", "out of memory\n", 14);
        int r = http_reply(wsi, 200, "text/plain; version=0.0.4", text, len);
        free(text);
        return r;
    }
    if (strcmp(uri, "/auth/dev-login") == 0) {
        if (!g->cfg->dev_login)
            return http_json_error(wsi, 404, "dev login is disabled");
        if (lws_hdr_total_length(wsi, WSI_TOKEN_POST_URI) <= 0)
            return http_json_error(wsi, 405, "use POST");
        ps->body_len = 0;
        ps->want_body = true;
        return 0; /* the body follows */
    }
    return http_json_error(wsi, 404, "not found");
}

/* ---- the WebSocket handshake ---- */

/* The claims CONFIRM_UPGRADE verified, for the ESTABLISHED of the same
 * connection that libwebsockets calls right after it (the WebSocket
 * protocol's per-connection storage is not the HTTP one's): the token is
 * verified once. Any other ESTABLISHED verifies it again. */
static const struct lws *verified_wsi;
static gw_player verified;

static bool token_of(struct lws *wsi, char *tok, size_t cap)
{
    const char *v = lws_get_urlarg_by_name(wsi, "token=", tok, (int)cap);
    return v && *v;
}

static bool check_upgrade(gw *g, struct lws *wsi, gw_player *p, char *msg)
{
    char uri[64];
    if (lws_hdr_copy(wsi, uri, sizeof uri, WSI_TOKEN_GET_URI) < 0 || strcmp(uri, "/ws") != 0) {
        snprintf(msg, 160, "WebSocket endpoint is /ws");
        return false;
    }
    static char tok[GW_AUTH_TOKEN_MAX + 16];
    if (!token_of(wsi, tok, sizeof tok)) {
        snprintf(msg, 160, "missing token");
        return false;
    }
    /* lws_get_urlarg_by_name returns the value after "token=" inside tok. */
    const char *t = strstr(tok, "token=") == tok ? tok + 6 : tok;
    return gw_auth_verify(g->auth, t, strlen(t), (int64_t)time(NULL), p, msg);
}

static int on_established(gw *g, struct lws *wsi, struct pss *ps)
{
    gw_player p;
    char msg[160];
    if (verified_wsi == wsi) { /* by CONFIRM_UPGRADE, moments ago */
        p = verified;
        verified_wsi = NULL;
    } else if (!check_upgrade(g, wsi, &p, msg)) {
        return close_with(wsi, 4001, "unauthorized");
    }
    gw_sess *s = calloc(1, sizeof *s);
    if (!s)
        return -1;
    s->g = g;
    s->wsi = wsi;
    s->refs = 1;
    s->exp = p.exp;
    if (!gw_sess_attach(g, s, &p) || !gw_room_move(g, s, g->cfg->start_room)) {
        gw_sess_detach(g, s);
        free(s);
        return -1;
    }
    ps->s = s;
    s->all_next = g->all;
    if (g->all)
        g->all->all_prev = s;
    g->all = s;
    g->nsess++;
    mb_gauge_add(g->st.conns, 1);
    mb_counter_add(g->st.conns_total, 1);
    s->held = true;
    gw_welcome(g, s);
    gw_after_subs(g, s, GW_AFTER_WELCOME, NULL, NULL, NULL);
    return 0;
}

void gw_after_welcome(gw *g, gw_sess *s)
{
    s->synced = true;
    if (g->nats_ready && s->room)
        gw_publish_presence(g, s, "player_entered", s->room->id);
    gw_sess_release(g, s);
}

void gw_sess_release(gw *g, gw_sess *s)
{
    if (s->closed || !s->synced || s->pe->mutes.state == GW_MUTES_NEW)
        return;
    if (s->held) {
        s->held = false;
        lws_callback_on_writable(s->wsi);
    }
    if (s->pe->mutes.state == GW_MUTES_LOADED)
        gw_mutes_release_held(g, s);
}

/* A mute batch releases up to GW_MUTES_BATCH sessions at once. Each
 * release writes a welcome and held deliveries, and the client answers
 * with its join (a subscription, two presence events, an ack): hundreds in
 * one iteration were tens of milliseconds in which no NATS delivery went
 * out. So they are released GW_RELEASE_PER_ITER per iteration. */
static void on_release_idle(uv_idle_t *h)
{
    gw *g = h->data;
    for (unsigned i = 0; i < GW_RELEASE_PER_ITER && g->release_head; i++) {
        gw_sess *s = g->release_head;
        g->release_head = s->release_next;
        s->release_queued = false;
        gw_sess_release(g, s);
        gw_sess_unref(s);
    }
    if (!g->release_head) {
        g->release_tail = NULL;
        uv_idle_stop(&g->release_idle);
    }
}

void gw_sess_release_soon(gw *g, gw_sess *s)
{
    if (s->release_queued || s->closed)
        return;
    s->release_queued = true;
    s->refs++;
    s->release_next = NULL;
    if (g->release_tail)
        g->release_tail->release_next = s;
    else
        g->release_head = s;
    g->release_tail = s;
    uv_idle_start(&g->release_idle, on_release_idle);
}

void gw_release_init(gw *g)
{
    uv_idle_init(&g->loop, &g->release_idle);
    g->release_idle.data = g;
}

void gw_release_drop(gw *g)
{
    while (g->release_head) {
        gw_sess *s = g->release_head;
        g->release_head = s->release_next;
        s->release_queued = false;
        gw_sess_unref(s);
    }
    g->release_tail = NULL;
}

static void on_closed(gw *g, struct pss *ps)
{
    gw_sess *s = ps->s;
    if (!s)
        return;
    ps->s = NULL;
    if (s->room && g->nats_ready && !g->draining)
        gw_publish_presence(g, s, "player_left", s->room->id);
    gw_sess_detach(g, s);
    if (s->all_prev)
        s->all_prev->all_next = s->all_next;
    else
        g->all = s->all_next;
    if (s->all_next)
        s->all_next->all_prev = s->all_prev;
    g->nsess--;
    mb_gauge_add(g->st.conns, -1);
    s->closed = true;
    s->wsi = NULL;
    gw_outq_clear(&s->q);
    gw_held_clear(s);
    gw_sess_unref(s);
}

static int on_receive(gw *g, struct lws *wsi, gw_sess *s, const char *in, size_t len)
{
    if (s->closing)
        return 0;
    bool first = lws_is_first_fragment(wsi), final = lws_is_final_fragment(wsi);
    size_t rest = lws_remaining_packet_payload(wsi);
    if (first && s->rx_len) /* a new message: drop a stale partial one */
        s->rx_len = 0;
    bool whole = first && final && rest == 0 && !s->rx_len;
    if (!whole) {
        if (s->rx_len + len + rest > GW_FRAME_MAX)
            return close_with(wsi, 1009, "frame too large");
        if (!s->rx && !(s->rx = malloc(GW_FRAME_MAX)))
            return -1;
        memcpy(s->rx + s->rx_len, in, len);
        s->rx_len += len;
        if (!final || rest)
            return 0;
        in = s->rx;
        len = s->rx_len;
    } else if (len > GW_FRAME_MAX) {
        return close_with(wsi, 1009, "frame too large");
    }
    int r = 0;
    if (lws_frame_is_binary(wsi)) {
        gw_send_error(g, s, NULL, GW_ERR_BAD_REQUEST, "binary frames are not supported", 0);
    } else if (!gw_utf8_valid(in, len)) {
        r = close_with(wsi, 1007, "invalid UTF-8");
    } else {
        gw_handle_frame(g, s, in, len);
    }
    free(s->rx); /* a fragmented message's buffer is not kept */
    s->rx = NULL;
    s->rx_len = 0;
    return r;
}

static int callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                    size_t len)
{
    gw *g = the_gw;
    struct pss *ps = user;
    /* The HTTP fields exist only in the HTTP protocol's storage. */
    const struct lws_protocols *pr = lws_get_protocol(wsi);
    struct pss *hp = pr && pr->per_session_data_size >= sizeof(struct pss) ? ps : NULL;
    switch (reason) {
    case LWS_CALLBACK_HTTP: {
        char uri[128] = "";
        if (lws_hdr_copy(wsi, uri, sizeof uri, WSI_TOKEN_GET_URI) <= 0 &&
            lws_hdr_copy(wsi, uri, sizeof uri, WSI_TOKEN_POST_URI) <= 0)
            uri[0] = '\0';
        return on_http(g, wsi, ps, uri);
    }
    case LWS_CALLBACK_HTTP_BODY:
        if (!hp || !hp->want_body)
            return 0; /* a body nobody asked for (the request was answered) */
        if (hp->body_len + len > 4096) {
            hp->want_body = false;
            free(hp->body); /* before the reply: it frees *ps */
            hp->body = NULL;
            hp->body_len = 0;
            return http_json_error(wsi, 413, "body too large");
        }
        if (!hp->body && !(hp->body = malloc(4096)))
            return -1;
        memcpy(hp->body + hp->body_len, in, len);
        hp->body_len += len;
        return 0;
    case LWS_CALLBACK_HTTP_BODY_COMPLETION: {
        if (!hp || !hp->want_body)
            return 0;
        /* Take the body out first: the reply completes the transaction, and
         * libwebsockets frees *ps with it. */
        hp->want_body = false;
        char *body = hp->body;
        size_t body_len = hp->body_len;
        hp->body = NULL;
        hp->body_len = 0;
        int r = dev_login(g, wsi, body ? body : "", body_len);
        free(body);
        return r;
    }
    case LWS_CALLBACK_HTTP_DROP_PROTOCOL:
    case LWS_CALLBACK_CLOSED_HTTP:
        free(hp ? hp->body : NULL);
        if (hp)
            hp->body = NULL;
        return 0;
    case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE: {
        gw_player p;
        char msg[160];
        if (g->draining)
            return http_refuse(wsi, 503, "shutting down");
        if (g->nsess >= g->cfg->max_connections)
            return http_refuse(wsi, 503, "too many connections");
        if (!check_upgrade(g, wsi, &p, msg)) {
            mb_counter_add(g->st.auth_refused, 1);
            gw_log("info", "event=upgrade_refused reason=\"%s\"", msg);
            return http_refuse(wsi, 401, msg);
        }
        verified_wsi = wsi; /* for ESTABLISHED, which follows at once */
        verified = p;
        return 0;
    }
    case LWS_CALLBACK_WSI_DESTROY:
        if (verified_wsi == wsi)
            verified_wsi = NULL;
        return lws_callback_http_dummy(wsi, reason, user, in, len);
    case LWS_CALLBACK_ESTABLISHED:
        return on_established(g, wsi, ps);
    case LWS_CALLBACK_RECEIVE:
        return ps->s ? on_receive(g, wsi, ps->s, in, len) : -1;
    case LWS_CALLBACK_SERVER_WRITEABLE:
        return ps->s ? on_writeable(g, ps->s) : 0;
    case LWS_CALLBACK_CLOSED:
        on_closed(g, ps);
        return 0;
    default:
        return lws_callback_http_dummy(wsi, reason, user, in, len);
    }
}

/* The WebSocket protocol's rx_buffer_size is allocated for every connection:
 * 128 bytes keeps an idle connection small (commands are short; a longer
 * message arrives in 128-byte pieces and is assembled in on_receive). */
static const struct lws_protocols protocols[] = {
    {"http", callback, sizeof(struct pss), 1024, 0, NULL, 0},
    {"mudbus.v1", callback, sizeof(gw_sess *), 128, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0}};

/* ---- NATS on the loop ---- */

static void nats_check(gw *g)
{
    char why[256];
    bool was = g->nats_ready;
    mb_client_health h;
    mb_client_health_get(g->nats, &h);
    if (h.live) {
        gw_resubscribe(g);
    }
    g->nats_ready = ready(g, why, sizeof why);
    gw_players_reap(g);
    gw_mutes_tick(g);
    if (was != g->nats_ready)
        gw_log(g->nats_ready ? "info" : "warn", "event=%s%s%s%s",
               g->nats_ready ? "nats_ready" : "nats_not_ready", g->nats_ready ? "" : " reason=\"",
               g->nats_ready ? "" : why, g->nats_ready ? "" : "\"");
}

static void on_nats_fd(uv_poll_t *p, int status, int events)
{
    (void)status, (void)events;
    gw *g = p->data;
    size_t ran = 0;
    /* In pieces, until this iteration has queued frames for GW_FLUSH_SESSIONS
     * sessions or used its slice: what is left waits for the next iteration
     * (the fd stays readable), so that one iteration's writes stay bounded
     * and reading clients and accepting interleave with a burst of
     * deliveries. */
    uint64_t t0 = uv_hrtime();
    do
        mb_client_dispatch(g->nats, 64, &ran);
    while (ran > 0 && g->ndirty < GW_FLUSH_SESSIONS && uv_hrtime() - t0 < GW_SLICE_NS);
}

/* Once a second: NATS readiness and missing subscriptions, expired tokens. */
static void on_nats_timer(uv_timer_t *t)
{
    gw *g = t->data;
    nats_check(g);
    int64_t now = (int64_t)time(NULL);
    for (gw_sess *s = g->all; s; s = s->all_next)
        if (s->exp <= now && !s->closing) {
            gw_log("info", "event=token_expired player=%s", s->pe->id);
            gw_close(s, 4001, "token expired");
        }
}

static void on_nats_event(void *ctx, const mb_client_event *ev)
{
    gw *g = ctx;
    switch (ev->type) {
    case MB_CLIENT_EV_DISCONNECTED:
    case MB_CLIENT_EV_RECONNECTED:
    case MB_CLIENT_EV_CLOSED:
    case MB_CLIENT_EV_POOL:
        gw_log("info", "event=nats_%s conn=%d %s",
               ev->type == MB_CLIENT_EV_DISCONNECTED  ? "disconnected"
               : ev->type == MB_CLIENT_EV_RECONNECTED ? "reconnected"
               : ev->type == MB_CLIENT_EV_CLOSED      ? "closed"
                                                      : "pool_up",
               ev->conn, ev->text ? ev->text : "");
        nats_check(g);
        if (ev->type == MB_CLIENT_EV_RECONNECTED || ev->type == MB_CLIENT_EV_POOL)
            gw_mutes_reload_all(g); /* announcements may have been missed */
        break;
    case MB_CLIENT_EV_SLOW_CONSUMER:
    case MB_CLIENT_EV_ERROR:
    case MB_CLIENT_EV_DROPPED:
        gw_log("warn", "event=nats_problem type=%d status=%s text=\"%s\"", (int)ev->type,
               mb_status_name(ev->status), ev->text ? ev->text : "");
        break;
    default:
        break;
    }
}

/* ---- shutdown ---- */

static void stop_loop(gw *g)
{
    gw_log("info", "event=stopping");
    uv_stop(&g->loop);
}

static uint64_t drain_start;

static void on_drain_tick(uv_timer_t *t)
{
    gw *g = t->data;
    if (!g->nsess || uv_now(&g->loop) - drain_start >= g->cfg->drain_timeout_ms)
        stop_loop(g);
}

static void on_signal(uv_signal_t *sig, int signum)
{
    gw *g = sig->data;
    if (g->draining) {
        gw_log("warn", "event=second_signal signal=%d: stopping now", signum);
        stop_loop(g);
        return;
    }
    g->draining = true;
    gw_log("info", "event=draining signal=%d sessions=%zu", signum, g->nsess);
    for (gw_sess *s = g->all; s; s = s->all_next)
        gw_close(s, 4009, "server shutting down");
    drain_start = uv_now(&g->loop);
    uv_timer_start(&g->drain_timer, on_drain_tick, 10, 10);
}

/* ---- metrics ---- */

static bool stats_create(gw *g)
{
    mb_metrics *m = g->metrics;
    mb_err err = {0};
    char lab[64];
    gw_stats *st = &g->st;
    if (mb_metrics_counter(m, "mudbus_gateway_frames_out_total",
                           "Frames written to WebSocket clients (all kinds)", NULL, &st->frames_out,
                           &err) != MB_OK)
        return false;
    for (int i = 0; i <= GW_CH__COUNT; i++) {
        snprintf(lab, sizeof lab, "channel=\"%s\"", i < GW_CH__COUNT ? gw_chan_names[i] : "event");
        if (mb_metrics_counter(m, "mudbus_gateway_messages_out_total",
                               "Chat messages and game events queued to players, by channel", lab,
                               &st->msgs_out[i], &err) != MB_OK)
            return false;
        if (i < GW_CH__COUNT && mb_metrics_counter(m, "mudbus_gateway_messages_in_total",
                                                   "Chat commands accepted and published", lab,
                                                   &st->msgs_in[i], &err) != MB_OK)
            return false;
    }
    for (int i = 1; i < GW_ERR__COUNT; i++) {
        snprintf(lab, sizeof lab, "code=\"%s\"", gw_err_code_name((gw_err_code)i));
        if (mb_metrics_counter(m, "mudbus_gateway_errors_total", "Error replies by code", lab,
                               &st->cmd_errors[i], &err) != MB_OK)
            return false;
    }
    return mb_metrics_counter(m, "mudbus_gateway_dropped_frames_total",
                              "Ambient frames dropped for slow connections", NULL, &st->drops,
                              &err) == MB_OK &&
           mb_metrics_counter(m, "mudbus_gateway_mute_loads_total",
                              "Players whose mutes were loaded from the store", NULL,
                              &st->mute_loads, &err) == MB_OK &&
           mb_metrics_counter(m, "mudbus_gateway_mute_load_failures_total",
                              "Failed mute loads (players retried later)", NULL,
                              &st->mute_load_failures, &err) == MB_OK &&
           mb_metrics_counter(m, "mudbus_gateway_mute_filtered_total",
                              "Deliveries not made because of the receiver's mutes", NULL,
                              &st->mute_filtered, &err) == MB_OK &&
           mb_metrics_counter(m, "mudbus_gateway_mute_store_errors_total",
                              "Mute commands refused because the store failed", NULL,
                              &st->mute_store_errors, &err) == MB_OK &&
           mb_metrics_counter(m, "mudbus_gateway_mutes_purged_total",
                              "Expired mutes deleted from the store ([store] purge_interval)", NULL,
                              &st->mutes_purged, &err) == MB_OK &&
           mb_metrics_counter(m, "mudbus_gateway_oversize_messages_total",
                              "NATS messages too large for one frame even with the formatted "
                              "line shortened (not delivered)",
                              NULL, &st->oversize, &err) == MB_OK &&
           mb_metrics_counter(m, "mudbus_gateway_slow_closes_total",
                              "Connections closed with 4008 (slow client)", NULL, &st->slow_closes,
                              &err) == MB_OK &&
           mb_metrics_counter(m, "mudbus_gateway_connections_total", "WebSocket sessions opened",
                              NULL, &st->conns_total, &err) == MB_OK &&
           mb_metrics_counter(m, "mudbus_gateway_auth_refused_total",
                              "Upgrades refused for a missing or bad token", NULL,
                              &st->auth_refused, &err) == MB_OK &&
           mb_metrics_counter(m, "mudbus_gateway_nats_messages_total", "NATS deliveries handled",
                              NULL, &st->nats_in, &err) == MB_OK &&
           mb_metrics_gauge(m, "mudbus_gateway_connections", "Open WebSocket sessions", NULL,
                            &st->conns, &err) == MB_OK &&
           mb_metrics_gauge(m, "mudbus_gateway_rooms", "Rooms with local players", NULL, &st->rooms,
                            &err) == MB_OK &&
           mb_metrics_gauge(m, "mudbus_gateway_subscriptions", "NATS subscriptions held", NULL,
                            &st->subs, &err) == MB_OK &&
           mb_metrics_gauge(m, "mudbus_gateway_queued_frames", "Frames waiting in outbound queues",
                            NULL, &st->queued_frames, &err) == MB_OK &&
           mb_metrics_gauge(m, "mudbus_gateway_work_queue", "Jobs waiting for a worker thread",
                            NULL, &st->work_queue, &err) == MB_OK &&
           mb_metrics_gauge(m, "mudbus_gateway_store_statements",
                            "Mute store statements run since start", NULL, &st->store_statements,
                            &err) == MB_OK &&
           mb_metrics_gauge(m, "mudbus_gateway_heap_bytes",
                            "Heap bytes in use (glibc mallinfo2 uordblks)", NULL, &st->heap,
                            &err) == MB_OK &&
           mb_metrics_histogram(m, "mudbus_gateway_loop_busy_seconds",
                                "Work of each event loop iteration (time not spent waiting in "
                                "the poll): the longest a ready event may wait",
                                NULL, 1e-9, &st->loop_busy, &err) == MB_OK &&
           mb_metrics_counter(m, "mudbus_gateway_accepted_total", "TCP connections accepted", NULL,
                              &st->accepted, &err) == MB_OK &&
           mb_metrics_counter(m, "mudbus_gateway_accept_deferred_total",
                              "Loop iterations that used their whole accept batch (the rest "
                              "waited in the backlog)",
                              NULL, &st->accept_deferred, &err) == MB_OK &&
           mb_metrics_counter(m, "mudbus_gateway_whispers_captured_total",
                              "Whisper requests answered by a JetStream stream instead of a "
                              "gateway (a stream stores chat.whisper.player.*: misconfigured)",
                              NULL, &st->whispers_captured, &err) == MB_OK &&
           mb_metrics_counter(m, "mudbus_gateway_local_fanouts_total",
                              "Chat messages and presence events delivered to this gateway's "
                              "players when published here, without waiting for NATS",
                              NULL, &st->local_fanouts, &err) == MB_OK &&
           mb_metrics_counter(m, "mudbus_gateway_echoes_dropped_total",
                              "Copies of locally delivered messages that NATS brought back "
                              "(no_echo off, or a pool of several connections), not delivered "
                              "again",
                              NULL, &st->echoes_dropped, &err) == MB_OK &&
           mb_metrics_counter(m, "mudbus_gateway_sent_evicted_total",
                              "Ids of locally delivered messages forgotten before a copy came "
                              "back from NATS (one that still comes is delivered a second time)",
                              NULL, &st->sent_evicted, &err) == MB_OK;
}

/* ---- run ---- */

static void nats_log(void *ctx, const char *line)
{
    (void)ctx;
    gw_log("info", "event=nats msg=\"%s\"", line);
}

static void close_handle(uv_handle_t *h)
{
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static void write_port_file(const char *path, int port)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f || fprintf(f, "%d\n", port) < 0 || fclose(f) != 0 || rename(tmp, path) != 0)
        gw_log("error", "event=port_file_failed path=%s error=\"%s\"", path, strerror(errno));
}

/* The helper threads (the store and request workers, libmudbus's and nats.c's
 * threads) run as SCHED_BATCH, which they inherit from the thread that starts
 * them: a woken batch thread does not preempt the loop thread. On a busy
 * machine every hand-off to a worker or to nats.c's flusher otherwise let
 * that thread take the loop's CPU at once and left the loop waiting for its
 * turn (a 5,000-player storm: room chat p50 2.0 -> 1.3 ms, the worst p99 of
 * 16 storms 32.8 -> 20.3 ms). They get the same share of the CPU as before. */
static void sched_batch(bool on)
{
    struct sched_param sp = {0};
    if (sched_setscheduler(0, on ? SCHED_BATCH : SCHED_OTHER, &sp) != 0)
        gw_log("warn", "event=sched_setscheduler_failed error=\"%s\"", strerror(errno));
}

int gw_server_run(gw_config *cfg)
{
    static gw G;
    gw *g = &G;
    memset(g, 0, sizeof *g);
    the_gw = g;
    g->cfg = cfg;
    gw_map_init(&g->rooms);
    gw_map_init(&g->zones);
    gw_map_init(&g->parties);
    gw_map_init(&g->players);
    int rc = 1;
    mb_err err = {0};
    char msg[160];
    sched_batch(true); /* for the threads started from here on */
    if (uv_loop_init(&g->loop) != 0)
        return 1;
    uv_loop_configure(&g->loop, UV_METRICS_IDLE_TIME); /* for the loop's busy time */
    if (mb_metrics_create(&g->metrics, &err) != MB_OK || !stats_create(g)) {
        gw_log("error", "event=start_failed what=metrics");
        goto out_loop;
    }
    if (!(g->auth = gw_auth_create(cfg->jwt_secret, cfg->jwt_secret_len, msg))) {
        gw_log("error", "event=start_failed what=auth error=\"%s\"", msg);
        goto out_metrics;
    }
    mb_client_opts *no = &cfg->nats;
    no->poll_mode = true;
    no->shared_delivery = true;
    no->start_disconnected = true;
    no->metrics = g->metrics;
    no->log = nats_log;
    if (!no->name || strcmp(no->name, "mudbus") == 0)
        no->name = cfg->instance_id;
    if (mb_client_create(no, &g->nats, &err) != MB_OK) {
        bool js = no->js.enabled && strstr(err.msg, "JetStream") != NULL;
        gw_log("error", "event=start_failed what=nats error=\"%s\"%s", err.msg,
               js ? " hint=\"mute changes and system messages go through JetStream: run "
                    "nats-server with JetStream (-js), or set [nats] js = off\""
                  : "");
        goto out_auth;
    }
    if (mb_client_listen(g->nats, on_nats_event, g, &err) != MB_OK)
        goto out_nats;
    if (cfg->store.backend) {
        char smsg[GW_STORE_MSG_MAX];
        if (!(g->store = gw_store_open(&cfg->store, smsg))) {
            gw_log("error", "event=start_failed what=store error=\"%s\"", smsg);
            goto out_nats;
        }
        gw_log("info", "event=store_open backend=%s", gw_store_backend(g->store));
    }
    /* Copies of what local fan-out delivered come back from NATS unless
     * no_echo holds on the one connection: then there is nothing to drop. */
    bool echoes = !cfg->nats.no_echo || cfg->nats.pool_size > 1;
    if (cfg->local_fanout && echoes && !(g->sent = gw_sent_new(GW_SENT_CAP))) {
        gw_log("error", "event=start_failed what=memory");
        goto out_nats;
    }
    if (!(g->work = gw_work_start(&g->loop, cfg->workers, 4096)) ||
        !(g->store_work = gw_work_start(&g->loop, cfg->workers, 4096))) {
        gw_log("error", "event=start_failed what=workers");
        gw_work_stop(g->work);
        uv_run(&g->loop, UV_RUN_NOWAIT); /* let the pool's async handle close */
        goto out_nats;
    }

    uv_poll_init(&g->loop, &g->nats_poll, mb_client_fd(g->nats));
    g->nats_poll.data = g;
    uv_poll_start(&g->nats_poll, UV_READABLE, on_nats_fd);
    uv_timer_init(&g->loop, &g->nats_timer);
    g->nats_timer.data = g;
    uv_timer_start(&g->nats_timer, on_nats_timer, 0, 1000);
    uv_signal_init(&g->loop, &g->sig_term);
    uv_signal_init(&g->loop, &g->sig_int);
    g->sig_term.data = g->sig_int.data = g;
    uv_signal_start(&g->sig_term, on_signal, SIGTERM);
    uv_signal_start(&g->sig_int, on_signal, SIGINT);
    uv_timer_init(&g->loop, &g->drain_timer);
    g->drain_timer.data = g;
    gw_mutes_init(g);
    uv_check_init(&g->loop, &g->flush_check);
    g->flush_check.data = g;
    uv_check_start(&g->flush_check, on_flush_check);
    uv_idle_init(&g->loop, &g->sync_idle);
    g->sync_idle.data = g;
    gw_release_init(g);
    uv_prepare_init(&g->loop, &g->busy_prep);
    g->busy_prep.data = g;
    uv_prepare_start(&g->busy_prep, on_busy_prepare);

    lws_set_log_level(LLL_ERR | LLL_WARN, lws_logger);
    static struct lws_http_mount mount_files;
    memset(&mount_files, 0, sizeof mount_files);
    mount_files.mountpoint = "/";
    mount_files.mountpoint_len = 1;
    mount_files.origin = cfg->web_root;
    mount_files.def = "index.html";
    mount_files.origin_protocol = LWSMPRO_FILE;
    static struct lws_http_mount mount_cb[4];
    static const char *const cb_paths[4] = {"/healthz", "/readyz", "/metrics", "/auth/dev-login"};
    const struct lws_http_mount *next = cfg->web_root ? &mount_files : NULL;
    for (int i = 3; i >= 0; i--) {
        memset(&mount_cb[i], 0, sizeof mount_cb[i]);
        mount_cb[i].mount_next = next;
        mount_cb[i].mountpoint = cb_paths[i];
        mount_cb[i].mountpoint_len = (unsigned char)strlen(cb_paths[i]);
        mount_cb[i].origin = "http";
        mount_cb[i].origin_protocol = LWSMPRO_CALLBACK;
        next = &mount_cb[i];
    }
    void *loops[1] = {&g->loop};
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.port = CONTEXT_PORT_NO_LISTEN_SERVER; /* listener.c accepts */
    info.protocols = protocols;
    info.mounts = next;
    info.options =
        LWS_SERVER_OPTION_LIBUV | LWS_SERVER_OPTION_HTTP_HEADERS_SECURITY_BEST_PRACTICES_ENFORCE;
    info.foreign_loops = loops;
    /* No libwebsockets "validity" timers: its default idle policy keeps one
     * timer per connection in a sorted list (an O(n) insert, redone on every
     * received frame), 12% of the loop during a 5,000-player connect storm.
     * Dead peers are found by TCP keepalive (ka_* below). */
    static const lws_retry_bo_t idle_policy = {.secs_since_valid_ping = 0,
                                               .secs_since_valid_hangup = 0};
    info.retry_and_idle_policy = &idle_policy;
    /* No fd_limit_per_thread: below the open-file limit libwebsockets 4.1
     * finds a socket's connection by a linear search. TCP keepalive: see
     * listener.c. */
    info.timeout_secs = 10;
    if (!gw_listener_open(g, msg, sizeof msg)) {
        gw_log("error", "event=start_failed what=listen address=%s:%d error=\"%s\"",
               cfg->listen_host, cfg->listen_port, msg);
        goto out_handles;
    }
    if (!(g->lws = lws_create_context(&info)) ||
        !(g->vhost = lws_get_vhost_by_name(g->lws, "default"))) {
        gw_log("error", "event=start_failed what=websockets");
        goto out_handles;
    }
    gw_listener_start(g);
    int port = g->listen_port;
    gw_log("info", "event=listening address=%s:%d instance=%s web_root=%s dev_login=%d",
           cfg->listen_host, port, cfg->instance_id, cfg->web_root ? cfg->web_root : "-",
           cfg->dev_login);
    if (cfg->port_file)
        write_port_file(cfg->port_file, port);

    sched_batch(false); /* the loop itself */
    uv_run(&g->loop, UV_RUN_DEFAULT);
    rc = 0;

    /* Shut down: no new work, flush NATS, then close everything. */
    gw_log("info", "event=shutdown sessions=%zu", g->nsess);
    mb_client_flush(g->nats, 2000, &err);
out_handles:
    gw_listener_close(g);
    close_handle((uv_handle_t *)&g->nats_poll);
    close_handle((uv_handle_t *)&g->nats_timer);
    close_handle((uv_handle_t *)&g->sig_term);
    close_handle((uv_handle_t *)&g->sig_int);
    close_handle((uv_handle_t *)&g->drain_timer);
    close_handle((uv_handle_t *)&g->flush_check);
    close_handle((uv_handle_t *)&g->busy_prep);
    close_handle((uv_handle_t *)&g->sync_idle);
    close_handle((uv_handle_t *)&g->release_idle);
    gw_mutes_close(g);
    gw_work_stop(g->work);
    gw_work_stop(g->store_work);
    if (g->lws)
        lws_context_destroy(g->lws); /* closes every session (on_closed) */
    uv_run(&g->loop, UV_RUN_DEFAULT);
    /* Sessions left (none normally) are detached here. */
    while (g->all) {
        struct pss tmp = {.s = g->all};
        on_closed(g, &tmp);
    }
    gw_release_drop(g);
    while (g->dirty) {
        gw_sess *s = g->dirty;
        g->dirty = s->dirty_next;
        s->dirty = false;
        gw_sess_unref(s);
    }
    gw_rooms_free(g);
out_nats:
    gw_sent_free(g->sent);
    g->sent = NULL;
    gw_store_close(g->store);
    mb_client_destroy(g->nats);
out_auth:
    gw_auth_destroy(g->auth);
out_metrics:
    mb_metrics_destroy(g->metrics);
out_loop:
    gw_buf_free(&g->scratch);
    free(wbuf);
    wbuf = NULL;
    wbuf_cap = 0;
    if (uv_loop_close(&g->loop) != 0)
        gw_log("warn", "event=loop_close_busy");
    return rc;
}
