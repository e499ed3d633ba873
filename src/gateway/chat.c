/* SPDX-License-Identifier: MIT */
/*
 * chat.c - what players say and what they receive: the commands of
 * PROTOCOL.md section 3 (checks, limits, publishing through libmudbus) and
 * the fan-out of NATS deliveries to the local players of section 4.
 *
 * Publishing never blocks the loop: chat goes out with mb_client_publish_*
 * (no_retry: a failure is answered `unavailable` at once and nothing is
 * sent); a whisper to a player elsewhere is a NATS request, run on a worker
 * thread, so that "no responders" tells us the target is offline. What the
 * gateway publishes for its own players (chat, presence, system messages,
 * whispers to players here) is delivered here when published (local fan-out):
 * nats-server does not send it back (no_echo), and a copy that does come
 * back is dropped by its id (sent.c).
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gw.h"
#include "mudbus/schema.h"

/* Frames are at most GW_FRAME_MAX bytes both ways (PROTOCOL.md section 3),
 * the sequence-number prefix and the echo flag included. */
#define FRAME_BODY_MAX (GW_FRAME_MAX - GW_SEQ_PREFIX_MAX - 16)

const char *const gw_chan_names[GW_CH__COUNT] = {
#define GW_X(e, s, len, rate) s,
    GW_CHANNELS(GW_X)
#undef GW_X
};

int64_t gw_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static bool nats_up(gw *g)
{
    mb_client_health h;
    mb_client_health_get(g->nats, &h);
    return h.live > 0;
}

/* ---- replies ---- */

void gw_send_error(gw *g, gw_sess *s, const char *id, gw_err_code code, const char *msg,
                   uint64_t retry_after_ms)
{
    gw_buf *b = &g->scratch;
    gw_env_begin(b, "error", gw_wall_ms(), NULL, NULL);
    gw_buf_put(b, "{", 1);
    if (id) {
        gw_buf_key(b, "id");
        gw_buf_jstr(b, id, strlen(id));
        gw_buf_put(b, ",", 1);
    }
    gw_buf_key(b, "code");
    gw_buf_jstr(b, gw_err_code_name(code), strlen(gw_err_code_name(code)));
    gw_buf_put(b, ",", 1);
    gw_buf_key(b, "message");
    gw_buf_jstr(b, msg, strlen(msg));
    if (code == GW_ERR_RATE_LIMITED) {
        gw_buf_put(b, ",", 1);
        gw_buf_key(b, "retry_after_ms");
        gw_buf_u64(b, retry_after_ms);
    }
    gw_buf_puts(b, "}}");
    if (code > GW_ERR_NONE && code < GW_ERR__COUNT)
        mb_counter_add(g->st.cmd_errors[code], 1);
    gw_send_scratch(s, GW_CRITICAL);
}

static void send_ack(gw *g, gw_sess *s, const char *id, const char *message_id)
{
    if (!id && !message_id)
        return;
    gw_buf *b = &g->scratch;
    gw_env_begin(b, "ack", gw_wall_ms(), NULL, NULL);
    gw_buf_put(b, "{", 1);
    if (id) {
        gw_buf_key(b, "id");
        gw_buf_jstr(b, id, strlen(id));
    }
    if (message_id) {
        if (id)
            gw_buf_put(b, ",", 1);
        gw_buf_key(b, "message_id");
        gw_buf_jstr(b, message_id, strlen(message_id));
    }
    gw_buf_puts(b, "}}");
    gw_send_scratch(s, GW_CRITICAL);
}

void gw_welcome(gw *g, gw_sess *s)
{
    gw_buf *b = &g->scratch;
    gw_env_begin(b, "welcome", gw_wall_ms(), s->room ? s->room->id : NULL, s->pe->id);
    gw_buf_put(b, "{", 1);
    gw_buf_key(b, "player_id");
    gw_buf_jstr(b, s->pe->id, strlen(s->pe->id));
    gw_buf_opt_str(b, "player_name", s->pe->name);
    gw_buf_opt_str(b, "room_id", s->room ? s->room->id : NULL);
    gw_buf_opt_str(b, "gateway", g->cfg->instance_id);
    gw_buf_puts(b, "}}");
    gw_send_scratch(s, GW_CRITICAL);
}

/* ---- publishing ---- */

static void event_fan_out(gw *g, const mb_msg *m, const char *type, const char *room,
                          const char *player_id, const char *data, size_t len, gw_sess *skip);

/* Local fan-out: remember the id of a message delivered here when published,
 * so that a copy NATS brings back is dropped (gw_on_nats). There is no set
 * when nothing can come back (no_echo on the gateway's one connection). */
static void remember_sent(gw *g, const char *message_id)
{
    if (g->sent && gw_sent_add(g->sent, message_id))
        mb_counter_add(g->st.sent_evicted, 1);
    mb_counter_add(g->st.local_fanouts, 1);
}

void gw_publish_presence(gw *g, gw_sess *s, const char *event, const char *room_id)
{
    /* The start room may be a quiet lobby: with thousands arriving at once,
     * announcing every arrival to everyone there grows with the square of the
     * crowd. */
    if (!g->cfg->start_room_presence && strcmp(room_id, g->cfg->start_room) == 0)
        return;
    gw_buf data = {0};
    gw_buf_put(&data, "{", 1);
    gw_buf_key(&data, "player_id");
    gw_buf_jstr(&data, s->pe->id, strlen(s->pe->id));
    gw_buf_opt_str(&data, "player_name", s->pe->name);
    gw_buf_opt_str(&data, "room_id", room_id);
    gw_buf_put(&data, "}", 1);
    if (data.oom) {
        gw_buf_free(&data);
        return;
    }
    /* With local fan-out the id is ours, to know the copy NATS may bring
     * back (gw_on_nats). */
    char mid[65];
    bool local = g->cfg->local_fanout && mb_message_id_generate(mid, NULL) == MB_OK;
    mb_event_msg ev = {.message_id = local ? mid : NULL,
                       .event_type = event,
                       .event_data = data.p,
                       .event_data_len = data.len,
                       .room_id = room_id,
                       .player_id = s->pe->id,
                       .sender_id = s->pe->id,
                       .sender_name = s->pe->name};
    char subj[300];
    snprintf(subj, sizeof subj, "events.%s.%s", event, room_id);
    mb_err err = {0};
    if (mb_client_publish_event(g->nats, subj, &ev, NULL, NULL, &err) != MB_OK) {
        gw_log("warn", "event=presence_publish_failed subject=%s error=\"%s\"", subj, err.msg);
    } else if (local) {
        /* A player who leaves is not told of it (on NATS's way they are
         * gone by the time it comes back). */
        mb_msg lm = {.subject = subj, .schema = MB_SCHEMA_EVENT};
        remember_sent(g, mid);
        event_fan_out(g, &lm, event, room_id, s->pe->id, data.p, data.len,
                      strcmp(event, "player_left") == 0 ? s : NULL);
    }
    gw_buf_free(&data);
}

static gw_err_code publish_status(mb_status st)
{
    switch (st) {
    case MB_OK:
        return GW_ERR_NONE;
    case MB_ESUBJECT:
    case MB_ESCHEMA:
    case MB_EJSON:
    case MB_ETOOBIG:
        return GW_ERR_BAD_REQUEST;
    case MB_ENOMEM:
        return GW_ERR_INTERNAL;
    default:
        return GW_ERR_UNAVAILABLE;
    }
}

/* Whisper: a NATS request on a worker thread. */
typedef struct whisper_job {
    gw_work w;
    gw *g;
    gw_sess *s;
    char *id;
    char subject[300];
    char *payload;
    size_t len;
    mb_status st;
    bool captured; /* the answer was a JetStream publish ack */
    char err[MB_ERR_MSG_MAX];
    char message_id[65];
    char target[GW_TOKEN_MAX + 1];
    char *content;
    bool system;
} whisper_job;

static void whisper_run(gw_work *w)
{
    whisper_job *j = (whisper_job *)w;
    mb_reply *r = NULL;
    mb_err err = {0};
    j->st = mb_client_request(j->g->nats, j->subject, j->payload, j->len,
                              j->g->cfg->whisper_timeout_ms, &r, &err);
    /* No answer: the target may have left while the request was on its way
     * (their subscription went with it). Once more: now "no responders"
     * tells. */
    if (j->st == MB_ETIMEOUT) {
        mb_err_clear(&err);
        j->st = mb_client_request(j->g->nats, j->subject, j->payload, j->len,
                                  j->g->cfg->whisper_timeout_ms, &r, &err);
    }
    snprintf(j->err, sizeof j->err, "%s", err.msg);
    /* The target's gateway answers whether a session of the player got it.
     * A JetStream publish ack ({"stream":..,"seq":..}) means a stream stores
     * whispers and answered first: whether the target is online is then
     * unknown (reported as offline, and loudly logged in whisper_done). */
    if (j->st == MB_OK && !strstr(r->data, "\"delivered\":true")) {
        j->captured = strstr(r->data, "\"stream\"") && strstr(r->data, "\"seq\"");
        j->st = MB_ENORESPONDERS;
    }
    mb_client_reply_free(r);
}

static void chat_frame_data(gw_buf *b, const char *message_id, const char *channel,
                            const char *sender_id, const char *sender_name, const char *content,
                            const char *line, const char *ts, const char *target_id,
                            const char *target_name, const char *speaker_kind);
static void local_fan_out(gw *g, const char *subj, const char *pattern, const mb_chat_msg *m,
                          gw_chan ch);

/* A whisper reached its target: the sender's copy, marked echo (not for an
 * admin's system message), and the ack. */
static void whisper_ok(gw *g, gw_sess *s, const char *cmd_id, const char *message_id,
                       const char *target, const char *content, bool system, int64_t ts_ms)
{
    if (!system) {
        gw_buf *b = &g->scratch;
        gw_buf msg = {0};
        gw_buf_puts(&msg, s->pe->name);
        gw_buf_puts(&msg, " whispers: ");
        gw_buf_puts(&msg, content);
        char ts[MB_TIMESTAMP_MAX];
        mb_timestamp_format(ts_ms, ts);
        gw_env_begin(b, "chat_message", gw_wall_ms(), NULL, NULL);
        chat_frame_data(b, message_id, "whisper", s->pe->id, s->pe->name, content,
                        msg.oom ? "" : msg.p, ts, target, NULL, NULL);
        gw_buf_puts(b, ",\"echo\":true}}");
        gw_buf_free(&msg);
        gw_send_scratch(s, GW_CRITICAL);
    }
    send_ack(g, s, cmd_id, message_id);
}

static void whisper_done(gw_work *w)
{
    whisper_job *j = (whisper_job *)w;
    gw_sess *s = j->s;
    gw *g = j->g;
    if (j->captured) {
        static uint64_t last_ms;
        mb_counter_add(g->st.whispers_captured, 1);
        uint64_t now = (uint64_t)gw_wall_ms();
        if (last_ms == 0 || now - last_ms >= 60000) {
            last_ms = now;
            gw_log("warn",
                   "event=whisper_captured_by_jetstream subject=%s detail=\"a JetStream "
                   "stream stores chat.whisper.player.* and answers whisper requests, so "
                   "whether the target is online cannot be told (the sender is told "
                   "offline); take the subject out of that stream and out of every "
                   "client's js_critical_subjects\"",
                   j->subject);
        }
    }
    if (!j->w.cancelled && !s->closed) {
        if (j->st == MB_OK) {
            whisper_ok(g, s, j->id, j->message_id, j->target, j->content, j->system, gw_wall_ms());
        } else if (j->st == MB_ENORESPONDERS) {
            char m[GW_ERR_MSG_MAX];
            snprintf(m, sizeof m, "%s is not online", j->target);
            gw_send_error(g, s, j->id, GW_ERR_INVALID_TARGET, m, 0);
        } else {
            gw_err_code code = publish_status(j->st);
            gw_send_error(g, s, j->id, code,
                          code == GW_ERR_UNAVAILABLE
                              ? "chat is unavailable (NATS): nothing was sent"
                              : j->err,
                          0);
        }
    }
    gw_sess_unref(s);
    free(j->id);
    free(j->payload);
    free(j->content);
    free(j);
}

static void start_whisper(gw *g, gw_sess *s, const gw_cmd *c, mb_chat_msg *m, bool system)
{
    whisper_job *j = calloc(1, sizeof *j);
    char *buf = malloc(GW_FRAME_MAX * 2 + 2048);
    if (!j || !buf) {
        free(j);
        free(buf);
        gw_send_error(g, s, c->id, GW_ERR_INTERNAL, "out of memory", 0);
        return;
    }
    mb_err err = {0};
    size_t len;
    mb_status st = mb_chat_encode(NULL, m, buf, GW_FRAME_MAX * 2 + 2048, &len, &err);
    if (st != MB_OK) {
        free(j);
        free(buf);
        gw_send_error(g, s, c->id, GW_ERR_BAD_REQUEST, err.msg, 0);
        return;
    }
    j->w.run = whisper_run;
    j->w.done = whisper_done;
    j->g = g;
    j->s = s;
    j->payload = buf;
    j->len = len;
    j->system = system;
    j->id = c->id ? strdup(c->id) : NULL;
    j->content = strdup(c->content);
    snprintf(j->message_id, sizeof j->message_id, "%s", m->message_id);
    snprintf(j->target, sizeof j->target, "%s", c->target);
    snprintf(j->subject, sizeof j->subject, "chat.whisper.player.%s", c->target);
    s->refs++;
    if ((c->id && !j->id) || !j->content || !gw_work_submit(g->work, &j->w)) {
        s->refs--;
        free(j->id);
        free(j->content);
        free(j->payload);
        free(j);
        gw_send_error(g, s, c->id, GW_ERR_UNAVAILABLE, "too many requests in flight; try again", 0);
        return;
    }
    mb_gauge_set(g->st.work_queue, (int64_t)gw_work_depth(g->work));
}

bool gw_rate_take(gw *g, gw_pent *pe, unsigned which, uint32_t per_minute, uint64_t *retry_after_ms)
{
    if (!per_minute)
        return true;
    if (!pe->buckets && !(pe->buckets = calloc(GW_CH__COUNT + 1, sizeof *pe->buckets))) {
        *retry_after_ms = 1000; /* out of memory: come back later */
        return false;
    }
    return gw_bucket_take(&pe->buckets[which], per_minute, gw_now_mono_ms(g), retry_after_ms);
}

static gw_chan cmd_chan(gw_cmd_type t)
{
    switch (t) {
    case GW_CMD_SAY:
        return GW_CH_SAY;
    case GW_CMD_EMOTE:
        return GW_CH_EMOTE;
    case GW_CMD_POSE:
        return GW_CH_POSE;
    case GW_CMD_LOCAL:
        return GW_CH_LOCAL;
    case GW_CMD_GLOBAL:
        return GW_CH_GLOBAL;
    case GW_CMD_WHISPER:
        return GW_CH_WHISPER;
    case GW_CMD_PARTY:
        return GW_CH_PARTY;
    default:
        return GW_CH_SYSTEM;
    }
}

/* Publish a player's chat line; false (the sender told why) when it was
 * not sent. */
static bool publish_chat(gw *g, gw_sess *s, const gw_cmd *c, const char *subj, mb_chat_msg *m,
                         gw_chan ch)
{
    m->timestamp_ms = gw_wall_ms(); /* the same time here (local fan-out) and in the message */
    mb_publish_opts po = {.no_retry = true};
    mb_err err = {0};
    mb_status st = mb_client_publish_chat(g->nats, subj, m, &po, NULL, &err);
    gw_err_code code = publish_status(st);
    if (code != GW_ERR_NONE) {
        gw_send_error(g, s, c->id, code,
                      code == GW_ERR_UNAVAILABLE ? "chat is unavailable (NATS): nothing was sent"
                                                 : err.msg,
                      0);
        return false;
    }
    mb_counter_add(g->st.msgs_in[ch], 1);
    return true;
}

/* A whisper (or an admin's system message to one player) whose target is
 * connected here: published without a request (for game servers that listen,
 * and for the target's sessions on other gateways), delivered here at once,
 * then the sender's echo and ack. A request would be answered by this very
 * gateway, and with no_echo it never reaches it. False when the target is
 * not here: the request goes out (start_whisper). */
static bool local_whisper(gw *g, gw_sess *s, const gw_cmd *c, mb_chat_msg *m, gw_chan ch)
{
    gw_pent *pe = gw_player_find(g, c->target);
    if (!pe || !pe->n)
        return false;
    char subj[300];
    snprintf(subj, sizeof subj, "chat.whisper.player.%s", c->target);
    if (!publish_chat(g, s, c, subj, m, ch))
        return true;
    local_fan_out(g, subj, "chat_whisper_player", m, ch);
    whisper_ok(g, s, c->id, m->message_id, c->target, c->content, ch == GW_CH_SYSTEM,
               m->timestamp_ms);
    return true;
}

static void chat_cmd(gw *g, gw_sess *s, const gw_cmd *c)
{
    gw_chan ch = cmd_chan(c->type);
    const gw_config *cfg = g->cfg;
    if (ch == GW_CH_SYSTEM && !s->admin) {
        gw_send_error(g, s, c->id, GW_ERR_FORBIDDEN, "system messages are for admins", 0);
        return;
    }
    if (ch != GW_CH_SYSTEM) {
        char m[GW_ERR_MSG_MAX];
        if (s->pe->mutes.state != GW_MUTES_LOADED) {
            gw_send_error(g, s, c->id, GW_ERR_UNAVAILABLE,
                          "your mutes are not loaded yet: nothing was sent", 0);
            return;
        }
        if (!gw_mutes_may_speak(s->pe, s->admin, ch, gw_wall_ms(), m, sizeof m)) {
            gw_send_error(g, s, c->id, GW_ERR_MUTED, m, 0);
            return;
        }
    }
    if (c->content_chars > cfg->max_chars[ch]) {
        char m[GW_ERR_MSG_MAX];
        snprintf(m, sizeof m, "content: %zu characters exceeds %u for %s", c->content_chars,
                 cfg->max_chars[ch], gw_chan_names[ch]);
        gw_send_error(g, s, c->id, GW_ERR_TOO_LONG, m, 0);
        return;
    }
    /* The delivered frame carries the content and its formatted line; the
     * line may be shortened, the content not. */
    if (gw_json_escaped_len(c->content, c->content_len) > FRAME_BODY_MAX - 1024) {
        char m[GW_ERR_MSG_MAX];
        snprintf(m, sizeof m, "content: %zu bytes do not fit in one frame", c->content_len);
        gw_send_error(g, s, c->id, GW_ERR_TOO_LONG, m, 0);
        return;
    }
    if (ch == GW_CH_PARTY && !s->party) {
        gw_send_error(g, s, c->id, GW_ERR_INVALID_TARGET, "you are not in a party", 0);
        return;
    }
    uint64_t retry = 0;
    if (cfg->rate_limits && !gw_rate_take(g, s->pe, ch, cfg->per_minute[ch], &retry)) {
        char m[GW_ERR_MSG_MAX];
        snprintf(m, sizeof m, "%s: at most %u per minute", gw_chan_names[ch], cfg->per_minute[ch]);
        gw_send_error(g, s, c->id, GW_ERR_RATE_LIMITED, m, retry);
        return;
    }
    char mid[65];
    mb_err err = {0};
    if (mb_message_id_generate(mid, &err) != MB_OK) {
        gw_send_error(g, s, c->id, GW_ERR_INTERNAL, err.msg, 0);
        return;
    }
    char subzone[GW_TOKEN_MAX + 1] = "";
    const char *room = s->room ? s->room->id : NULL;
    if (room)
        gw_room_subzone(room, subzone, sizeof subzone);
    mb_chat_msg m = {.message_id = mid,
                     .sender_id = s->pe->id,
                     .sender_name = s->pe->name,
                     .content = c->content,
                     .room_id = room,
                     .subzone = room ? subzone : NULL};
    mb_channel_parse(gw_chan_names[ch], strlen(gw_chan_names[ch]), &m.channel);
    char subj[300];
    /* The subject's pattern, for local fan-out. Whispers (and system
     * messages to one player) are requests that the target's gateway
     * answers: when the target is here, local_whisper serves them. */
    const char *pattern = NULL;
    switch (ch) {
    case GW_CH_SAY:
    case GW_CH_EMOTE:
    case GW_CH_POSE:
        snprintf(subj, sizeof subj, "chat.%s.room.%s", gw_chan_names[ch], room);
        pattern = ch == GW_CH_SAY     ? "chat_say_room"
                  : ch == GW_CH_EMOTE ? "chat_emote_room"
                                      : "chat_pose_room";
        break;
    case GW_CH_LOCAL:
        snprintf(subj, sizeof subj, "chat.local.subzone.%s", subzone);
        pattern = "chat_local_subzone";
        break;
    case GW_CH_GLOBAL:
        snprintf(subj, sizeof subj, "chat.global");
        pattern = "chat_global";
        break;
    case GW_CH_PARTY:
        m.party_id = s->party->id;
        snprintf(subj, sizeof subj, "chat.party.group.%s", s->party->id);
        pattern = "chat_party_group";
        break;
    case GW_CH_WHISPER:
    case GW_CH_SYSTEM:
    default:
        if (ch == GW_CH_SYSTEM && !c->target) {
            m.speaker_kind = MB_SPEAKER_SYSTEM;
            snprintf(subj, sizeof subj, "chat.system");
            pattern = "chat_system";
            break;
        }
        m.target_id = c->target;
        if (ch == GW_CH_SYSTEM)
            m.speaker_kind = MB_SPEAKER_SYSTEM;
        if (g->cfg->local_fanout && local_whisper(g, s, c, &m, ch))
            return;
        mb_counter_add(g->st.msgs_in[ch], 1);
        start_whisper(g, s, c, &m, ch == GW_CH_SYSTEM);
        return;
    }
    if (!publish_chat(g, s, c, subj, &m, ch))
        return;
    send_ack(g, s, c->id, mid);
    if (pattern)
        local_fan_out(g, subj, pattern, &m, ch);
}

static void join_cmd(gw *g, gw_sess *s, const gw_cmd *c)
{
    if (s->room && strcmp(s->room->id, c->room_id) == 0) {
        send_ack(g, s, c->id, NULL);
        return;
    }
    uint64_t retry = 0;
    if (g->cfg->rate_limits &&
        !gw_rate_take(g, s->pe, GW_BUCKET_JOIN, g->cfg->join_per_minute, &retry)) {
        char m[GW_ERR_MSG_MAX];
        snprintf(m, sizeof m, "join: at most %u per minute", g->cfg->join_per_minute);
        gw_send_error(g, s, c->id, GW_ERR_RATE_LIMITED, m, retry);
        return;
    }
    if (!nats_up(g)) {
        gw_send_error(g, s, c->id, GW_ERR_UNAVAILABLE, "NATS is down: cannot change rooms now", 0);
        return;
    }
    char old[GW_TOKEN_MAX + 1] = "";
    if (s->room)
        snprintf(old, sizeof old, "%s", s->room->id);
    if (!gw_room_move(g, s, c->room_id)) {
        gw_send_error(g, s, c->id, GW_ERR_INTERNAL, "out of memory", 0);
        return;
    }
    gw_after_subs(g, s, GW_AFTER_JOIN, c->id, old, c->room_id);
}

void gw_after_join(gw *g, gw_sess *s, const char *id, const char *old_room, const char *new_room)
{
    if (old_room && old_room[0])
        gw_publish_presence(g, s, "player_left", old_room);
    gw_publish_presence(g, s, "player_entered", new_room);
    send_ack(g, s, id, NULL);
}

void gw_handle_frame(gw *g, gw_sess *s, const char *buf, size_t len)
{
    static gw_cmd cmd; /* loop thread only; 16 KiB is too much for the stack */
    char msg[GW_ERR_MSG_MAX];
    gw_err_code code = gw_cmd_parse(buf, len, &cmd, msg);
    if (code != GW_ERR_NONE) {
        gw_send_error(g, s, cmd.id, code, msg, 0);
        return;
    }
    switch (cmd.type) {
    case GW_CMD_PING: {
        gw_buf *b = &g->scratch;
        gw_env_begin(b, "pong", gw_wall_ms(), NULL, NULL);
        gw_buf_put(b, "{", 1);
        if (cmd.id) {
            gw_buf_key(b, "id");
            gw_buf_jstr(b, cmd.id, strlen(cmd.id));
        }
        gw_buf_puts(b, "}}");
        gw_send_scratch(s, GW_CRITICAL);
        return;
    }
    case GW_CMD_JOIN:
        join_cmd(g, s, &cmd);
        return;
    case GW_CMD_SAY:
    case GW_CMD_EMOTE:
    case GW_CMD_POSE:
    case GW_CMD_LOCAL:
    case GW_CMD_GLOBAL:
    case GW_CMD_WHISPER:
    case GW_CMD_PARTY:
    case GW_CMD_SYSTEM:
        chat_cmd(g, s, &cmd);
        return;
    default: /* mute, unmute, mute_channel, unmute_channel, mute_global, unmute_global, mutes */
        gw_mutes_cmd(g, s, &cmd);
        return;
    }
}

/* ---- deliveries ---- */

static void chat_frame_data(gw_buf *b, const char *message_id, const char *channel,
                            const char *sender_id, const char *sender_name, const char *content,
                            const char *line, const char *ts, const char *target_id,
                            const char *target_name, const char *speaker_kind)
{
    gw_buf_put(b, "{", 1);
    gw_buf_key(b, "message_id");
    gw_buf_jstr(b, message_id, strlen(message_id));
    gw_buf_opt_str(b, "channel", channel);
    gw_buf_opt_str(b, "sender_id", sender_id);
    gw_buf_puts(b, ",\"player_name\":");
    gw_buf_jstr(b, sender_name, strlen(sender_name));
    gw_buf_puts(b, ",\"content\":");
    gw_buf_jstr(b, content, strlen(content));
    gw_buf_puts(b, ",\"message\":");
    gw_buf_jstr(b, line, strlen(line));
    gw_buf_opt_str(b, "timestamp", ts);
    gw_buf_opt_str(b, "target_id", target_id);
    gw_buf_opt_str(b, "target_name", target_name);
    gw_buf_opt_str(b, "speaker_kind", speaker_kind);
}

static const char *jstr(json_t *o, const char *k)
{
    const char *v = json_string_value(json_object_get(o, k));
    return v ? v : NULL;
}

static gw_chan chan_of(const char *name, bool *admin)
{
    *admin = name && strcmp(name, "admin") == 0;
    if (*admin)
        return GW_CH_SYSTEM;
    for (int i = 0; i < GW_CH__COUNT; i++)
        if (name && strcmp(name, gw_chan_names[i]) == 0)
            return (gw_chan)i;
    return GW_CH_SAY;
}

/* The formatted line of PROTOCOL.md section 3. */
static void format_line(gw_buf *b, gw_chan ch, bool admin, bool to_target, const char *name,
                        const char *content)
{
    b->len = 0;
    b->oom = false;
    if (admin) {
        gw_buf_puts(b, "[ADMIN] ");
        gw_buf_puts(b, name);
        gw_buf_puts(b, ": ");
    } else {
        static const char *const suffix[GW_CH__COUNT] = {[GW_CH_SAY] = " says: ",
                                                         [GW_CH_LOCAL] = " (local): ",
                                                         [GW_CH_GLOBAL] = " (global): ",
                                                         [GW_CH_WHISPER] = " whispers: ",
                                                         [GW_CH_EMOTE] = " ",
                                                         [GW_CH_POSE] = " ",
                                                         [GW_CH_PARTY] = " (party): ",
                                                         [GW_CH_SYSTEM] = NULL};
        if (ch == GW_CH_SYSTEM) {
            gw_buf_puts(b, "[SYSTEM] ");
        } else {
            gw_buf_puts(b, name);
            gw_buf_puts(b, ch == GW_CH_WHISPER && to_target ? " whispers to you: " : suffix[ch]);
        }
    }
    gw_buf_puts(b, content);
}

typedef struct fanout {
    gw *g;
    gw_frame *f, *echo;
    const char *sender_id;
    uint32_t sender_hash;
    int64_t now_ms;        /* mutes expire by the wall clock */
    const char *target_id; /* chat.system for one player */
    gw_sess *skip;         /* not delivered to (a player leaving) */
    gw_chan ch;
    bool filtered; /* receiver-side filtering applies */
    bool event;    /* a game event (metrics) */
} fanout;

void gw_deliver(gw *g, gw_sess *s, gw_frame *f, const char *sender, uint32_t sender_hash,
                gw_chan ch, bool filtered, int64_t now_ms)
{
    if (s->pe->mutes.state != GW_MUTES_LOADED) {
        /* No message reaches a player unfiltered: wait for the mutes. */
        uint64_t skipped = s->q.skipped;
        if (!gw_mutes_hold(s, f, sender, sender_hash, ch, filtered)) {
            mb_counter_add(g->st.slow_closes, 1);
            gw_log("warn", "event=slow_client_closed player=%s waiting_for_mutes=1", s->pe->id);
            gw_close(s, 4008, "slow client");
        } else if (s->q.skipped != skipped) {
            mb_counter_add(g->st.drops, 1);
        }
        return;
    }
    if (filtered && !gw_mutes_allow(s->pe, sender, sender_hash, ch, now_ms)) {
        mb_counter_add(g->st.mute_filtered, 1);
        return;
    }
    gw_send(s, f);
}

static void deliver(fanout *fo, gw_sess *s)
{
    if (s->closed || s->closing || s == fo->skip)
        return;
    bool own = fo->sender_id && strcmp(s->pe->id, fo->sender_id) == 0;
    gw_deliver(fo->g, s, own && fo->echo ? fo->echo : fo->f, fo->sender_id, fo->sender_hash, fo->ch,
               fo->filtered && !own, fo->now_ms);
    mb_counter_add(fo->g->st.msgs_out[fo->event ? GW_CH__COUNT : fo->ch], 1);
}

static void deliver_room(fanout *fo, gw_room *r)
{
    for (gw_sess *s = r->members; s; s = s->room_next)
        deliver(fo, s);
}

/* Last token of a subject. */
static const char *last_token(const char *subj)
{
    const char *p = strrchr(subj, '.');
    return p ? p + 1 : subj;
}

static void fan_out(gw *g, const mb_msg *m, fanout *fo)
{
    const char *pat = m->pattern ? m->pattern : "";
    const char *key = last_token(m->subject);
    if (strcmp(pat, "chat_system") == 0 && fo->target_id) {
        gw_pent *pe = gw_player_find(g, fo->target_id);
        for (gw_sess *s = pe ? pe->sessions : NULL; s; s = s->pe_next)
            deliver(fo, s);
    } else if (strcmp(pat, "chat_global") == 0 || strcmp(pat, "chat_system") == 0 ||
               strcmp(pat, "event_game_tick") == 0) {
        for (gw_sess *s = g->all; s; s = s->all_next)
            deliver(fo, s);
    } else if (strcmp(pat, "chat_local_subzone") == 0) {
        gw_zone *z = gw_map_get(&g->zones, key);
        for (gw_room *r = z ? z->rooms : NULL; r; r = r->zone_next)
            deliver_room(fo, r);
    } else if (strcmp(pat, "chat_whisper_player") == 0) {
        gw_pent *pe = gw_player_find(g, key);
        for (gw_sess *s = pe ? pe->sessions : NULL; s; s = s->pe_next)
            deliver(fo, s);
    } else if (strcmp(pat, "chat_party_group") == 0) {
        gw_party *p = gw_map_get(&g->parties, key);
        for (gw_sess *s = p ? p->members : NULL; s; s = s->party_next)
            deliver(fo, s);
    } else {
        gw_room *r = gw_room_find(g, key); /* room subjects */
        if (r)
            deliver_room(fo, r);
    }
}

/* What a chat frame and its fan-out take from a message. */
typedef struct chat_fields {
    const char *message_id, *channel, *sender_id, *sender_name, *content, *room_id, *timestamp,
        *target_id, *target_name, *speaker_kind;
} chat_fields;

/* Deliver chat message cf, which came on m->subject (m->pattern), to the
 * local players it is for. */
static void chat_fan_out(gw *g, const mb_msg *m, const chat_fields *cf)
{
    const char *channel = cf->channel;
    bool admin;
    gw_chan ch = chan_of(channel, &admin);
    const char *sender_id = cf->sender_id, *name = cf->sender_name;
    const char *content = cf->content, *mid = cf->message_id;
    const char *room = cf->room_id;
    bool whisper = strcmp(m->pattern, "chat_whisper_player") == 0;
    gw_buf line = {0};
    format_line(&line, ch, admin, whisper, name, content);
    gw_buf *b = &g->scratch;
    size_t open_len = 0;
    for (int pass = 0; pass < 2; pass++) {
        gw_env_begin(b, "chat_message", gw_wall_ms(), room, NULL);
        chat_frame_data(b, mid, channel, sender_id, name, content, line.oom ? "" : line.p,
                        cf->timestamp, cf->target_id, cf->target_name, cf->speaker_kind);
        open_len = b->len; /* before the data object's closing brace */
        gw_buf_puts(b, "}}");
        if (b->oom || open_len + 2 <= FRAME_BODY_MAX || pass == 1 || line.oom)
            break;
        /* Too large for a frame: shorten the formatted line (the content is
         * whole in "content") and mark the cut. */
        size_t over = open_len + 2 - FRAME_BODY_MAX + 3;
        size_t esc = gw_json_escaped_len(line.p, line.len);
        if (over >= esc)
            break;
        line.len = gw_json_prefix_fitting(line.p, line.len, esc - over);
        line.p[line.len] = '\0';
        gw_buf_puts(&line, "\xe2\x80\xa6"); /* U+2026 */
    }
    if (!b->oom && open_len + 2 > FRAME_BODY_MAX) {
        mb_counter_add(g->st.oversize, 1);
        gw_log("warn", "event=message_too_large_for_a_frame subject=%s message_id=%s bytes=%zu",
               m->subject, mid ? mid : "-", open_len + 2);
        gw_buf_free(&line);
        return;
    }
    bool critical = ch == GW_CH_WHISPER || ch == GW_CH_SYSTEM;
    gw_frame_class cls = critical ? GW_CRITICAL : GW_AMBIENT;
    fanout fo = {.g = g,
                 .sender_id = sender_id,
                 .sender_hash = sender_id ? gw_hash(sender_id) : 0,
                 .now_ms = gw_wall_ms(),
                 .target_id = cf->target_id,
                 .ch = ch,
                 .filtered = ch != GW_CH_SYSTEM && !admin};
    if (!b->oom)
        fo.f = gw_frame_new(b->p, b->len, cls);
    /* The sender's own copy (only when the sender is here, and not for a
     * whisper's target copy: the sender's echo is sent by whisper_done). */
    gw_pent *spe = sender_id ? gw_player_find(g, sender_id) : NULL;
    if (fo.f && !whisper && spe && spe->n) {
        b->len = open_len;
        gw_buf_puts(b, ",\"echo\":true}}");
        if (!b->oom)
            fo.echo = gw_frame_new(b->p, b->len, cls);
    }
    if (fo.f)
        fan_out(g, m, &fo);
    else
        gw_log("error", "event=frame_alloc_failed subject=%s", m->subject);
    gw_frame_unref(fo.f);
    gw_frame_unref(fo.echo);
    gw_buf_free(&line);
}

static void on_chat(gw *g, const mb_msg *m, json_t *o)
{
    chat_fields cf = {.message_id = jstr(o, "message_id"),
                      .channel = jstr(o, "channel"),
                      .sender_id = jstr(o, "sender_id"),
                      .sender_name = jstr(o, "sender_name"),
                      .content = jstr(o, "content"),
                      .room_id = jstr(o, "room_id"),
                      .timestamp = jstr(o, "timestamp"),
                      .target_id = jstr(o, "target_id"),
                      .target_name = jstr(o, "target_name"),
                      .speaker_kind = jstr(o, "speaker_kind")};
    chat_fan_out(g, m, &cf);
}

/* Local fan-out: chat that a player here published goes to the players here
 * at once, as the copy from NATS would (the same frame, filtering and echo),
 * and its id is remembered so that the copy NATS brings back is dropped
 * (gw_on_nats). Players on other gateways get it through NATS as before. */
static void local_fan_out(gw *g, const char *subj, const char *pattern, const mb_chat_msg *m,
                          gw_chan ch)
{
    if (!g->cfg->local_fanout)
        return;
    char ts[MB_TIMESTAMP_MAX];
    mb_timestamp_format(m->timestamp_ms, ts);
    chat_fields cf = {.message_id = m->message_id,
                      .channel = gw_chan_names[ch],
                      .sender_id = m->sender_id,
                      .sender_name = m->sender_name,
                      .content = m->content,
                      .room_id = m->room_id,
                      .timestamp = ts,
                      .target_id = m->target_id,
                      .speaker_kind = m->speaker_kind == MB_SPEAKER_SYSTEM ? "system" : NULL};
    mb_msg lm = {.subject = subj, .pattern = pattern, .schema = MB_SCHEMA_CHAT};
    remember_sent(g, m->message_id);
    chat_fan_out(g, &lm, &cf);
}

/* The message id of a payload that starts with it, as this gateway's
 * encoder writes them; NULL otherwise (not a copy of ours). */
static const char *leading_id(const mb_msg *m, size_t *len)
{
    static const char head[] = "{\"message_id\":\"";
    size_t h = sizeof head - 1;
    if (m->len <= h || memcmp(m->data, head, h) != 0)
        return NULL;
    const char *id = m->data + h;
    const char *end = memchr(id, '"', m->len - h);
    if (!end)
        return NULL;
    *len = (size_t)(end - id);
    return id;
}

/* Deliver game event `type` (event_data `data`, JSON), which came on
 * m->subject, to the local players it is for, except `skip`. */
static void event_fan_out(gw *g, const mb_msg *m, const char *type, const char *room,
                          const char *player_id, const char *data, size_t len, gw_sess *skip)
{
    gw_buf *b = &g->scratch;
    gw_env_begin(b, type, gw_wall_ms(), room, player_id);
    gw_buf_put(b, data, len);
    gw_buf_put(b, "}", 1);
    if (!b->oom && b->len > FRAME_BODY_MAX) {
        mb_counter_add(g->st.oversize, 1);
        gw_log("warn", "event=event_too_large_for_a_frame subject=%s bytes=%zu", m->subject,
               b->len);
        return;
    }
    fanout fo = {.g = g, .ch = GW_CH_SAY, .event = true, .skip = skip};
    if (!b->oom && (fo.f = gw_frame_new(b->p, b->len, GW_AMBIENT)))
        fan_out(g, m, &fo);
    gw_frame_unref(fo.f);
}

static void on_event(gw *g, const mb_msg *m, json_t *o)
{
    const char *type = jstr(o, "event_type");
    json_t *data = json_object_get(o, "event_data");
    char *dtext = json_dumps(data, JSON_COMPACT | JSON_ENSURE_ASCII);
    if (!type || !dtext) {
        free(dtext);
        return;
    }
    event_fan_out(g, m, type, jstr(o, "room_id"), jstr(o, "player_id"), dtext, strlen(dtext), NULL);
    free(dtext);
}

mb_handled gw_on_nats(void *ctx, const mb_msg *m)
{
    gw *g = ctx;
    mb_counter_add(g->st.nats_in, 1);
    if (m->pattern && strcmp(m->pattern, "mutes_changed") == 0) {
        gw_mutes_changed(g, last_token(m->subject)); /* the store has it: load again */
        return MB_HANDLED_OK;
    }
    size_t idlen = 0;
    const char *id;
    if (g->sent && (m->schema == MB_SCHEMA_CHAT || m->schema == MB_SCHEMA_EVENT) && m->pattern &&
        (id = leading_id(m, &idlen)) != NULL && gw_sent_take(g->sent, id, idlen)) {
        mb_counter_add(g->st.echoes_dropped, 1); /* delivered here when published */
        return MB_HANDLED_OK;
    }
    json_error_t je;
    json_t *o = json_loadb(m->data, m->len, 0, &je);
    if (!o)
        return MB_HANDLED_FAIL; /* cannot happen: the client validated it */
    if (m->schema == MB_SCHEMA_CHAT)
        on_chat(g, m, o);
    else
        on_event(g, m, o);
    json_decref(o);
    /* A whisper is a request: answer it when the target is here (a gateway
     * where the target is not stays silent: another one may have them). */
    if (m->reply && strcmp(m->pattern, "chat_whisper_player") == 0 &&
        gw_player_find(g, last_token(m->subject))) {
        static const char r[] = "{\"delivered\":true}";
        mb_err err = {0};
        if (mb_client_respond(g->nats, m, r, sizeof r - 1, &err) != MB_OK)
            gw_log("warn", "event=whisper_reply_failed error=\"%s\"", err.msg);
    }
    return MB_HANDLED_OK;
}
