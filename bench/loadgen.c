/* SPDX-License-Identifier: MIT */
/*
 * loadgen: load generator for mudbus-gateway (PROTOCOL.md section 3).
 *
 * It opens N WebSocket connections to one gateway, each with its own HS256
 * token (player "<prefix><i>"), joins client i to room "<room prefix><i % R>"
 * and then, for a measured window after a warm-up, either
 *   - sends says at a fixed total rate spread round-robin over the clients
 *     (--rate S; open loop, so a slow gateway shows as latency, not as a
 *     lower offered load), or
 *   - keeps K says in flight (--max; closed loop: a say is done when its
 *     sender receives its own echo copy), which finds the most deliveries a
 *     second the system can carry, or
 *   - holds the connections idle (--rate 0), to measure memory.
 * Every say's content carries its send time (CLOCK_MONOTONIC ns); every
 * receiver of the chat_message takes publish-to-receipt latency from it. The
 * window's figures: deliveries a second, latency percentiles, the gateway's
 * CPU time per delivered frame and its RSS per connection (from /proc with
 * --gateway-pid), and the loadgen's own CPU so a reader can see that the
 * client was not the bottleneck.
 *
 * DESIGN. One thread, one libuv loop that the loadgen owns; libwebsockets
 * joins it as a foreign loop (LWS_SERVER_OPTION_LIBUV), so a wakeup costs
 * O(ready sockets), not O(connections) as lws's default poll() loop does.
 * A 1 ms loop timer drives everything else: the connection ramp, the say
 * schedule, phase changes and progress lines. The ramp has a bounded rate
 * (so the gateway's accept queue is not overrun) and a bounded number of
 * connections in setup, between connect and the join's ack: the gateway puts
 * every new player in its start room, and each arrival and departure there
 * is an event to everyone in it, so a crowd waiting in the start room costs
 * the gateway O(crowd) per connection (--max-setup 0 shows that storm). lws allows one write per
 * WRITEABLE callback, so each client keeps a count of says due (at most LG_MAX_PENDING; more are
 * counted as schedule drops, a sign that the gateway does not read fast enough) and sends one per
 * callback. Received frames are read by the key scanner of loadgen_frame.c; a sample is also
 * checked strictly with jansson.
 *
 * To bracket something else (bench/run_storm.sh: a reconnect storm made by
 * a second loadgen), --window-signals starts the window at SIGUSR1 and ends
 * it at SIGUSR2, --phase-file tells a script the phase, and --metrics reads
 * the gateway's store and mute counters at both ends of the window.
 *
 * Phases: connect (ramp, join) -> warm-up -> window -> drain (no more sends;
 * wait for the says in flight) -> close (a normal close frame on every
 * connection) -> done (context destroyed, loop closed, everything freed).
 *
 * Usage: loadgen --url ws://127.0.0.1:PORT [--secret S] [options]; --help.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "loadgen.h"

#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <jwt.h>

#include "bench_util.h"

/* Bytes lws hands over per receive callback; longer messages arrive in parts
 * and are put together in lg_client.rx. (Build with a small value to test
 * the reassembly.) */
#ifndef LG_RX_CHUNK
#define LG_RX_CHUNK 4096
#endif

static const char *const phase_name[] = {"connect", "warm-up", "window", "drain", "close", "done"};

/* ---- small helpers ---- */

static void note_conn_error(lg_run *r, const char *why)
{
    for (unsigned i = 0; i < r->conn_err_n; i++)
        if (strncmp(r->conn_err[i], why, sizeof r->conn_err[i] - 1) == 0)
            return;
    if (r->conn_err_n < 3)
        snprintf(r->conn_err[r->conn_err_n++], sizeof r->conn_err[0], "%s", why);
    else
        r->conn_err_other++;
}

static void note_error_code(lg_errs *e, const char *code, size_t n)
{
    if (n >= sizeof e->code[0])
        n = sizeof e->code[0] - 1;
    for (unsigned i = 0; i < e->kinds; i++) {
        if (strlen(e->code[i]) == n && memcmp(e->code[i], code, n) == 0) {
            e->count[i]++;
            return;
        }
    }
    if (e->kinds < LG_ERR_KINDS) {
        memcpy(e->code[e->kinds], code, n);
        e->code[e->kinds][n] = '\0';
        e->count[e->kinds++] = 1;
        return;
    }
    e->other++;
}

static double secs(uint64_t ns)
{
    return (double)ns / 1e9;
}

/* A signed token for client idx; free() it. NULL on failure. */
static char *mint_token(const lg_run *r, unsigned idx)
{
    jwt_t *j = NULL;
    char sub[96], name[96], *tok = NULL;
    long exp =
        (long)time(NULL) + 3600 + (long)(r->o.duration_s + r->o.warmup_s + r->o.connect_timeout_s);
    if (jwt_new(&j) != 0)
        return NULL;
    snprintf(sub, sizeof sub, "%s%u", r->o.id_prefix, idx);
    snprintf(name, sizeof name, "Bench%u", idx);
    if (jwt_add_grant(j, "sub", sub) == 0 && jwt_add_grant(j, "name", name) == 0 &&
        jwt_add_grant_int(j, "exp", exp) == 0 &&
        jwt_set_alg(j, JWT_ALG_HS256, (const unsigned char *)r->o.secret,
                    (int)strlen(r->o.secret)) == 0)
        tok = jwt_encode_str(j);
    jwt_free(j);
    return tok;
}

/* ---- connections ---- */

static void start_client(lg_run *r, lg_client *c)
{
    struct lws_client_connect_info ci;
    char path[1536];
    char *tok = mint_token(r, c->idx);
    if (tok == NULL) {
        note_conn_error(r, "cannot mint a token (libjwt)");
        c->state = CS_FAILED;
        r->failed++;
        return;
    }
    snprintf(path, sizeof path, "%s%ctoken=%s", r->o.path, strchr(r->o.path, '?') ? '&' : '?', tok);
    free(tok);
    memset(&ci, 0, sizeof ci);
    ci.context = r->ctx;
    ci.address = r->o.host;
    ci.port = r->o.port;
    ci.path = path;
    ci.host = r->o.host;
    ci.origin = r->o.host;
    ci.protocol = "mudbus.v1";
    ci.opaque_user_data = c;
    ci.pwsi = &c->wsi;
    c->state = CS_CONNECTING;
    c->connect_ns = bu_now_ns();
    r->connecting++;
    if (lws_client_connect_via_info(&ci) == NULL && c->state == CS_CONNECTING) {
        /* Failed before any callback said so. */
        note_conn_error(r, "lws_client_connect_via_info failed");
        c->state = CS_FAILED;
        c->wsi = NULL;
        r->connecting--;
        r->failed++;
    }
}

static void release_flight(lg_run *r, lg_client *c)
{
    if (c->in_flight) {
        c->in_flight = 0;
        r->inflight--;
    }
}

static void on_closed(lg_run *r, lg_client *c)
{
    if (c->state == CS_JOINED)
        r->room_joined[c->room]--;
    if (c->state == CS_OPEN || c->state == CS_JOINING)
        r->joining--;
    if (c->closing)
        r->closed_by_us++;
    else
        lg_closes_add(&r->closes, c->close_code ? c->close_code : 1006);
    if (r->o.verbose && !c->closing)
        fprintf(stderr,
                "loadgen: client %" PRIu32 " (state %d, %" PRIu64
                " frames) closed by the server: %u\n",
                c->idx, c->state, c->frames, c->close_code ? c->close_code : 1006);
    release_flight(r, c);
    c->pending = 0;
    c->need_join = 0;
    free(c->rx);
    c->rx = NULL;
    c->rx_len = 0;
    c->state = CS_CLOSED;
    c->wsi = NULL;
    r->open_now--;
}

/* ---- receiving ---- */

static void validate_frame(lg_run *r, const char *buf, size_t len, const lg_frame *f)
{
    char why[256];
    r->validated++;
    if (lg_frame_validate(buf, len, f, r->o.id_prefix, why, sizeof why) == 0)
        return;
    if (r->invalid++ == 0)
        snprintf(r->first_invalid, sizeof r->first_invalid, "%s | frame: %.*s", why,
                 (int)(len > 200 ? 200 : len), buf);
}

static void on_frame(lg_run *r, lg_client *c, const char *buf, size_t len)
{
    uint64_t now = bu_now_ns();
    lg_frame f;
    r->frames++;
    if (r->frames <= r->o.dump)
        fprintf(stderr, "loadgen: client %" PRIu32 " got %.*s\n", c->idx, (int)len, buf);
    if (r->phase == PH_WINDOW)
        r->w_frames++;
    if (lg_frame_scan(buf, len, &f) != 0) {
        if (r->bad_frames++ == 0)
            snprintf(r->first_bad, sizeof r->first_bad, "%.*s", (int)(len > 150 ? 150 : len), buf);
        return;
    }
    if (c->frames > 0 && f.seq != c->last_seq + 1)
        r->seq_errors++;
    c->last_seq = f.seq;
    c->frames++;
    r->ev_count[f.ev]++;
    if (r->phase == PH_WINDOW)
        r->w_ev_count[f.ev]++;
    if (r->o.validate_every && (c->frames <= 2 || r->frames % r->o.validate_every == 0))
        validate_frame(r, buf, len, &f);

    switch (f.ev) {
    case LG_EV_WELCOME:
        if (c->state == CS_OPEN && !c->need_join)
            lg_hist_add(&r->welcome_hist, now - c->connect_ns);
        if (c->state == CS_OPEN && !c->need_join) {
            c->need_join = 1;
            lws_callback_on_writable(c->wsi);
        }
        break;
    case LG_EV_ACK:
        if (f.id_len == 2 && memcmp(f.id, "j1", 2) == 0 && c->state == CS_JOINING) {
            c->state = CS_JOINED;
            r->joining--;
            r->joined++;
            r->room_joined[c->room]++;
            lg_hist_add(&r->setup_hist, now - c->connect_ns);
        } else {
            r->acks++;
        }
        break;
    case LG_EV_ERROR:
        note_error_code(&r->errs, f.code ? f.code : "(none)", f.code ? f.code_len : 6);
        if (f.id_len == 2 && memcmp(f.id, "j1", 2) == 0 && c->state == CS_JOINING) {
            c->state = CS_JOINFAIL;
            r->joining--;
            r->join_failed++;
        } else if (f.id_len > 1 && f.id[0] == 's' && c->in_flight) {
            release_flight(r, c);
        }
        break;
    case LG_EV_CHAT:
        if (!f.ours) {
            r->foreign_chat++;
            break;
        }
        r->deliveries++;
        if (r->phase == PH_WINDOW) {
            r->w_deliveries++;
            lg_hist_add(&r->hist, now > f.sent_ns ? now - f.sent_ns : 0);
        }
        if ((f.echo != 0) != (f.sender == c->idx))
            r->echo_errors++;
        if (f.echo && f.sender == c->idx && c->in_flight && f.say_no == c->flight_no)
            release_flight(r, c);
        break;
    case LG_EV_SKIPPED:
        if (r->skipped == 0)
            snprintf(r->first_skipped, sizeof r->first_skipped, "%.*s",
                     (int)(len > 300 ? 300 : len), buf);
        r->skipped += f.skipped;
        break;
    default:
        break;
    }
}

static void on_receive(lg_run *r, lg_client *c, struct lws *wsi, const char *in, size_t len)
{
    int final = lws_is_final_fragment(wsi) && lws_remaining_packet_payload(wsi) == 0;
    if (lws_frame_is_binary(wsi) && c->rx_len == 0 && lws_is_first_fragment(wsi))
        r->binary++;
    if (final && c->rx_len == 0) {
        on_frame(r, c, in, len);
        return;
    }
    if (c->rx == NULL && (c->rx = malloc(LG_RX_MAX)) == NULL) {
        r->oversize++;
        return;
    }
    if (c->rx_len + len > LG_RX_MAX) {
        r->oversize++;
        c->rx_len = LG_RX_MAX + 1; /* drop the rest of this message */
    } else if (c->rx_len <= LG_RX_MAX) {
        memcpy(c->rx + c->rx_len, in, len);
        c->rx_len += len;
    }
    if (final) {
        if (c->rx_len <= LG_RX_MAX)
            on_frame(r, c, c->rx, c->rx_len);
        c->rx_len = 0;
    }
}

/* ---- sending ---- */

static int on_writable(lg_run *r, lg_client *c, struct lws *wsi)
{
    char *p = (char *)r->tx + LWS_PRE;
    int n;
    if (c->closing) {
        lws_close_reason(wsi, LWS_CLOSE_STATUS_NORMAL, NULL, 0);
        return -1;
    }
    if (c->need_join) {
        n = snprintf(p, LG_TX_MAX,
                     "{\"type\":\"join\",\"room_id\":\"%s%" PRIu32 "\",\"id\":\"j1\"}",
                     r->o.room_prefix, c->room);
        c->need_join = 0;
        c->state = CS_JOINING;
    } else if (c->pending && c->state == CS_JOINED) {
        char content[LG_CONTENT_MAX + 1];
        uint64_t no = ++r->say_no;
        lg_content_format(content, sizeof content, c->idx, bu_now_ns(), no, r->o.content_bytes);
        n = snprintf(p, LG_TX_MAX, "{\"type\":\"say\",\"content\":\"%s\",\"id\":\"s%" PRIu64 "\"}",
                     content, no);
        c->pending--;
        r->says++;
        if (r->phase == PH_WINDOW)
            r->w_says++;
        r->expected += r->room_joined[c->room];
        if (c->in_flight)
            c->flight_no = no;
    } else {
        return 0;
    }
    if (n < 0 || n >= LG_TX_MAX)
        return -1;
    if (lws_write(wsi, (unsigned char *)p, (size_t)n, LWS_WRITE_TEXT) < n)
        return -1;
    if (c->pending || c->need_join)
        lws_callback_on_writable(wsi);
    return 0;
}

static int lg_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                       size_t len)
{
    lg_client *c = lws_get_opaque_user_data(wsi);
    lg_run *r = lws_context_user(lws_get_context(wsi));
    (void)user;
    if (c == NULL)
        return 0;
    switch (reason) {
    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
        note_conn_error(r, in ? (const char *)in : "(no reason given)");
        if (c->state == CS_CONNECTING) {
            r->connecting--;
            r->failed++;
            c->state = CS_FAILED;
        }
        c->wsi = NULL;
        break;
    case LWS_CALLBACK_CLIENT_ESTABLISHED:
        if (c->state == CS_CONNECTING) {
            r->connecting--;
            r->opened++;
            r->open_now++;
            r->joining++;
            c->state = CS_OPEN;
            c->wsi = wsi;
        }
        break;
    case LWS_CALLBACK_CLIENT_RECEIVE:
        on_receive(r, c, wsi, in, len);
        break;
    case LWS_CALLBACK_CLIENT_WRITEABLE:
        return on_writable(r, c, wsi);
    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
        c->close_code =
            len >= 2
                ? (uint16_t)(((const unsigned char *)in)[0] << 8 | ((const unsigned char *)in)[1])
                : 1005;
        break;
    case LWS_CALLBACK_CLIENT_CLOSED:
        if (c->state >= CS_OPEN && c->state <= CS_JOINFAIL)
            on_closed(r, c);
        break;
    default:
        break;
    }
    return 0;
}

static const struct lws_protocols protocols[] = {
    {.name = "mudbus.v1", .callback = lg_callback, .rx_buffer_size = LG_RX_CHUNK},
    {.name = NULL},
};

/* ---- scheduling ---- */

/* The next joined client after the cursor, or NULL when none is. */
static lg_client *next_joined(lg_run *r, int want_idle)
{
    for (unsigned k = 0; k < r->o.clients; k++) {
        lg_client *c = &r->cl[r->rr];
        r->rr = r->rr + 1 == r->o.clients ? 0 : r->rr + 1;
        if (c->state == CS_JOINED && !c->closing && (!want_idle || !c->in_flight))
            return c;
    }
    return NULL;
}

static void queue_say(lg_run *r, lg_client *c)
{
    if (c->pending >= LG_MAX_PENDING) {
        r->sched_drops++;
        return;
    }
    c->pending++;
    if (c->pending > r->max_pending_seen)
        r->max_pending_seen = c->pending;
    if (c->pending == 1)
        lws_callback_on_writable(c->wsi);
}

static void schedule_says(lg_run *r, uint64_t now)
{
    if (r->o.max_mode) {
        while (r->inflight < r->o.inflight) {
            lg_client *c = next_joined(r, 1);
            if (c == NULL)
                break;
            c->in_flight = 1;
            c->flight_no = 0;
            c->flight_since_ns = now;
            r->inflight++;
            queue_say(r, c);
        }
        return;
    }
    if (r->o.rate <= 0)
        return;
    uint64_t due = (uint64_t)(secs(now - r->t_send0) * r->o.rate);
    while (r->scheduled < due) {
        lg_client *c = next_joined(r, 0);
        if (c == NULL) {
            r->scheduled = due;
            break;
        }
        r->scheduled++;
        queue_say(r, c);
    }
}

/* --max: gives up says whose echo did not come back in time. */
static void expire_flights(lg_run *r, uint64_t now)
{
    for (unsigned i = 0; i < r->o.clients; i++) {
        lg_client *c = &r->cl[i];
        if (c->in_flight && now - c->flight_since_ns > LG_SAY_TIMEOUT) {
            release_flight(r, c);
            r->timeouts++;
        }
    }
}

static void stop_sending(lg_run *r)
{
    for (unsigned i = 0; i < r->o.clients; i++) {
        lg_client *c = &r->cl[i];
        c->pending = 0;
        if (c->in_flight && c->flight_no == 0)
            release_flight(r, c); /* queued, never written */
    }
}

/* ---- phases ---- */

static void snapshot(lg_run *r, int end)
{
    uint64_t busy, total;
    double gw = r->o.gw_pid ? bu_proc_cpu_s(r->o.gw_pid) : 0;
    double gw_main = r->o.gw_pid ? lg_proc_thread_cpu_s(r->o.gw_pid, r->o.gw_pid) : 0;
    double nats = r->o.nats_pid ? bu_proc_cpu_s(r->o.nats_pid) : 0;
    lg_sys_cpu_ticks(&busy, &total);
    if (r->o.metrics &&
        lg_metrics_read(r->o.host, r->o.port, end ? r->m1 : r->m0, end ? &r->busy1 : &r->busy0,
                        end ? &r->wait1 : &r->wait0) != 0)
        fprintf(stderr, "loadgen: cannot read the gateway's /metrics\n");
    if (end) {
        r->w_t1 = bu_now_ns();
        r->gw_cpu1 = gw;
        r->gw_main1 = gw_main;
        r->nats_cpu1 = nats;
        r->self_cpu1 = bu_self_cpu_s();
        r->sys_busy1 = busy;
        r->sys_total1 = total;
        r->rss_after = r->o.gw_pid ? lg_proc_rss_kib(r->o.gw_pid) : -1;
    } else {
        r->w_t0 = bu_now_ns();
        r->gw_cpu0 = gw;
        r->gw_main0 = gw_main;
        r->nats_cpu0 = nats;
        r->self_cpu0 = bu_self_cpu_s();
        r->sys_busy0 = busy;
        r->sys_total0 = total;
    }
}

static void set_phase(lg_run *r, int ph, uint64_t now)
{
    r->phase = ph;
    r->t_phase = now;
    if (r->o.phase_file) {
        FILE *f = fopen(r->o.phase_file, "w");
        if (f) {
            fprintf(f, "%s\n", phase_name[ph]);
            fclose(f);
        }
    }
    if (r->o.verbose)
        fprintf(stderr, "loadgen: [%6.1fs] phase %s\n", secs(now - r->t_start), phase_name[ph]);
}

static void begin_close(lg_run *r, uint64_t now)
{
    stop_sending(r);
    for (unsigned i = 0; i < r->o.clients; i++) {
        lg_client *c = &r->cl[i];
        if (c->wsi != NULL && c->state >= CS_OPEN && c->state <= CS_JOINFAIL) {
            c->closing = 1;
            lws_callback_on_writable(c->wsi);
        }
    }
    set_phase(r, PH_CLOSE, now);
}

static void finish(lg_run *r, uint64_t now)
{
    set_phase(r, PH_DONE, now);
    uv_timer_stop(&r->tick);
    for (int i = 0; i < LG_NSIG; i++)
        uv_signal_stop(&r->sig[i]);
    /* lws closes whatever is left and releases its loop handles; uv_run
     * returns once no handle is active. */
    lws_context_destroy(r->ctx);
}

static void progress(lg_run *r, uint64_t now)
{
    if (r->o.quiet || now - r->t_progress < LG_PROGRESS_NS)
        return;
    double dt = secs(now - r->t_progress);
    fprintf(stderr,
            "loadgen: [%6.1fs] %-7s open %u joined %u failed %u closed %" PRIu64 " | says %" PRIu64
            " deliveries %.0f/s in flight %" PRIu64 "\n",
            secs(now - r->t_start), phase_name[r->phase], r->open_now, r->joined, r->failed,
            r->closes.total, r->says, (double)(r->deliveries - r->progress_deliveries) / dt,
            r->inflight);
    r->t_progress = now;
    r->progress_deliveries = r->deliveries;
}

static void on_tick(uv_timer_t *t)
{
    lg_run *r = t->data;
    uint64_t now = bu_now_ns(), in_phase = now - r->t_phase;
    progress(r, now);
    switch (r->phase) {
    case PH_CONNECT: {
        uint64_t allowed = (uint64_t)(secs(in_phase) * r->o.connect_rate) + 1;
        while (r->started < r->o.clients && r->started < allowed &&
               r->connecting + r->joining < r->o.max_setup) {
            start_client(r, &r->cl[r->started++]);
            if (r->started == r->o.clients)
                r->connects_started_s = secs(bu_now_ns() - r->t_phase);
        }
        int done = r->started == r->o.clients && r->connecting == 0 && r->joining == 0;
        if (!done && secs(in_phase) < r->o.connect_timeout_s && !r->interrupted)
            break;
        r->connect_s = secs(now - r->t_phase);
        if (r->o.gw_pid) {
            r->rss_joined = lg_proc_rss_kib(r->o.gw_pid);
            r->gw_cpu_connect = bu_proc_cpu_s(r->o.gw_pid) - r->gw_cpu_start;
        }
        if (!done)
            fprintf(stderr, "loadgen: connect phase %s after %.1f s: %u connecting, %u joining\n",
                    r->interrupted ? "interrupted" : "timed out", r->connect_s, r->connecting,
                    r->joining);
        if (r->interrupted || r->joined == 0) {
            begin_close(r, now);
            break;
        }
        r->t_send0 = now;
        r->scheduled = 0;
        set_phase(r, PH_WARMUP, now);
        break;
    }
    case PH_WARMUP:
        schedule_says(r, now);
        if (r->interrupted) {
            begin_close(r, now);
        } else if (secs(in_phase) >= r->o.warmup_s && (!r->o.window_signals || r->usr1)) {
            lg_hist_reset(&r->hist);
            snapshot(r, 0);
            set_phase(r, PH_WINDOW, now);
        }
        break;
    case PH_WINDOW:
        schedule_says(r, now);
        if (secs(in_phase) >= r->o.duration_s || r->interrupted ||
            (r->o.window_signals && r->usr2)) {
            snapshot(r, 1);
            stop_sending(r);
            set_phase(r, PH_DRAIN, now);
        }
        break;
    case PH_DRAIN:
        if ((r->deliveries >= r->expected && r->inflight == 0) || in_phase > LG_DRAIN_NS ||
            r->interrupted > 1)
            begin_close(r, now);
        break;
    case PH_CLOSE:
        if (r->open_now == 0 || in_phase > LG_CLOSE_NS || r->interrupted > 1)
            finish(r, now);
        break;
    default:
        break;
    }
    if (r->o.max_mode && r->phase <= PH_WINDOW && now - r->t_expire >= 100000000u) {
        expire_flights(r, now);
        r->t_expire = now;
    }
}

static void on_signal(uv_signal_t *s, int signum)
{
    lg_run *r = s->data;
    if (signum == SIGUSR1 || signum == SIGUSR2) {
        if (!r->o.window_signals)
            return;
        if (signum == SIGUSR1)
            r->usr1 = 1;
        else
            r->usr2 = 1;
        if (r->o.verbose)
            fprintf(stderr, "loadgen: %s\n", signum == SIGUSR1 ? "SIGUSR1" : "SIGUSR2");
        return;
    }
    r->interrupted++;
    fprintf(stderr, "loadgen: interrupted; %s\n",
            r->interrupted > 1 ? "stopping now" : "ending the run (again to stop now)");
}

/* Raises the open-file limit to the hard limit; fails when the clients do
 * not fit under it. */
static int raise_nofile(unsigned clients)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return -1;
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
        return -1;
    if (rl.rlim_cur != RLIM_INFINITY && (rlim_t)clients + 64 > rl.rlim_cur) {
        fprintf(stderr, "loadgen: %u clients need more than the open-file limit %llu\n", clients,
                (unsigned long long)rl.rlim_cur);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    lg_run *r = calloc(1, sizeof *r);
    struct lws_context_creation_info info;
    void *loops[1];
    int rc = 1;
    if (r == NULL)
        return 1;
    if (lg_opts_parse(&r->o, argc, argv) != 0 || raise_nofile(r->o.clients) != 0)
        goto out_free;
    signal(SIGPIPE, SIG_IGN);
    lws_set_log_level(r->o.verbose ? LLL_ERR | LLL_WARN : 0, NULL);
    r->cl = calloc(r->o.clients, sizeof *r->cl);
    r->room_joined = calloc(r->o.rooms, sizeof *r->room_joined);
    if (r->cl == NULL || r->room_joined == NULL)
        goto out_free;
    for (unsigned i = 0; i < r->o.clients; i++) {
        r->cl[i].idx = i;
        r->cl[i].room = i % r->o.rooms;
    }
    r->rss_before = r->rss_joined = r->rss_after = -1;
    for (int i = 0; i < LG_METRICS; i++)
        r->m0[i] = r->m1[i] = -1;
    if (r->o.gw_pid) {
        r->rss_before = lg_proc_rss_kib(r->o.gw_pid);
        r->gw_cpu_start = bu_proc_cpu_s(r->o.gw_pid);
        if (r->rss_before < 0)
            fprintf(stderr, "loadgen: cannot read /proc/%d/status; no gateway figures\n",
                    r->o.gw_pid);
    }

    if (uv_loop_init(&r->loop) != 0)
        goto out_free;
    uv_timer_init(&r->loop, &r->tick);
    r->tick.data = r;
    static const int signums[LG_NSIG] = {SIGINT, SIGTERM, SIGUSR1, SIGUSR2};
    for (int i = 0; i < LG_NSIG; i++) {
        uv_signal_init(&r->loop, &r->sig[i]);
        r->sig[i].data = r;
        uv_signal_start(&r->sig[i], on_signal, signums[i]);
    }

    memset(&info, 0, sizeof info);
    loops[0] = &r->loop;
    info.port = CONTEXT_PORT_NO_LISTEN;
    info.protocols = protocols;
    info.options = LWS_SERVER_OPTION_LIBUV;
    info.foreign_loops = loops;
    info.user = r;
    info.pcontext = &r->ctx;
    info.gid = -1;
    info.uid = -1;
    /* No fd_limit_per_thread: with it lws 4.1 finds a socket's wsi by a
     * linear search (max_fds_unrelated_to_ulimit); without it the table is
     * indexed by fd, sized from RLIMIT_NOFILE, which raise_nofile() set. */
    info.timeout_secs = 30;
    info.connect_timeout_secs = 20;
    info.pt_serv_buf_size = 16384;
    r->ctx = lws_create_context(&info);
    if (r->ctx == NULL) {
        fprintf(stderr, "loadgen: lws_create_context failed\n");
        uv_close((uv_handle_t *)&r->tick, NULL);
        for (int i = 0; i < LG_NSIG; i++)
            uv_close((uv_handle_t *)&r->sig[i], NULL);
        uv_run(&r->loop, UV_RUN_DEFAULT);
        uv_loop_close(&r->loop);
        goto out_free;
    }

    r->t_start = r->t_phase = r->t_progress = bu_now_ns();
    set_phase(r, PH_CONNECT, r->t_start);
    uv_timer_start(&r->tick, on_tick, 1, 1);
    uv_run(&r->loop, UV_RUN_DEFAULT);

    /* The loop ends after finish(); destroy again in case the first call
     * left the context half torn down, then release our handles. */
    if (r->ctx != NULL)
        lws_context_destroy(r->ctx);
    uv_close((uv_handle_t *)&r->tick, NULL);
    for (int i = 0; i < LG_NSIG; i++)
        uv_close((uv_handle_t *)&r->sig[i], NULL);
    uv_run(&r->loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&r->loop) != 0)
        fprintf(stderr, "loadgen: the loop still has handles at exit\n");

    lg_report(r);
    rc = lg_verdict(r);
out_free:
    if (r->cl != NULL)
        for (unsigned i = 0; i < r->o.clients; i++)
            free(r->cl[i].rx);
    free(r->cl);
    free(r->room_joined);
    free(r);
    return rc;
}
