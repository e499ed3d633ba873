/* SPDX-License-Identifier: MIT */
/*
 * gw.h - the gateway's shared state: configuration, players, sessions,
 * rooms, subzones and parties, and the functions the gateway's files offer
 * each other.
 *
 * Threads: everything here belongs to the loop thread (libwebsockets on the
 * gateway's own libuv loop), except gw_work (workers.c), whose jobs run on
 * worker threads and complete on the loop. NATS deliveries arrive through
 * libmudbus's poll mode (mb_client_dispatch on the loop), so handlers run on
 * the loop too and no structure below needs a lock.
 *
 * Ownership: a session (one WebSocket) holds a reference on its player entry
 * (one per player id, shared by that player's sessions) and is a member of
 * one room, one subzone (through the room) and at most one party. Each of
 * those holds its NATS subscriptions while it has members.
 */
#ifndef MUDBUS_GW_H
#define MUDBUS_GW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "auth.h"
#include "frame.h"
#include "map.h"
#include "mutes.h"
#include "mudbus/client.h"
#include "mudbus/metrics.h"
#include "protocol.h"
#include "ratelimit.h"
#include "sent.h"
#include "store.h"

struct lws;
struct lws_context;
struct lws_vhost;

/* Channels with a content limit and a rate limit, in this order. */
#define GW_CHANNELS(X)                                                                             \
    X(SAY, "say", 500, 15)                                                                         \
    X(LOCAL, "local", 500, 20)                                                                     \
    X(GLOBAL, "global", 1000, 10)                                                                  \
    X(WHISPER, "whisper", 1000, 5)                                                                 \
    X(EMOTE, "emote", 200, 10)                                                                     \
    X(POSE, "pose", 100, 10)                                                                       \
    X(PARTY, "party", 1000, 30)                                                                    \
    X(SYSTEM, "system", 2000, 100)

typedef enum gw_chan {
#define GW_X(e, s, len, rate) GW_CH_##e,
    GW_CHANNELS(GW_X)
#undef GW_X
        GW_CH__COUNT
} gw_chan;

extern const char *const gw_chan_names[GW_CH__COUNT];

/* ---- configuration (config.c) ---- */
typedef struct gw_config {
    char listen_host[64];
    int listen_port; /* 0: any free port */
    char *port_file; /* write the port here once listening */
    char *web_root;
    char *instance_id;
    char *start_room;
    bool start_room_presence; /* announce arrivals and departures there */
    bool local_fanout;        /* deliver our own players' chat at once (chat.c, sent.c) */
    uint32_t max_connections;
    uint32_t accept_batch; /* connections accepted per loop iteration at most */
    gw_outq_limits queue;
    uint32_t socket_sndbuf; /* bytes; 0: the kernel's default */
    uint64_t whisper_timeout_ms;
    uint64_t drain_timeout_ms;
    unsigned workers;
    /* [auth] */
    char *jwt_secret; /* wiped and freed by gw_config_free */
    size_t jwt_secret_len;
    bool dev_login;
    uint64_t dev_token_ttl_s;
    /* [store] */
    gw_store_opts store;        /* backend NULL: no store (mutes off) */
    uint64_t purge_interval_ms; /* expired mutes are deleted this often; 0: never */
    char *sqlite_path_buf;
    /* [limits] */
    bool rate_limits;
    uint32_t max_chars[GW_CH__COUNT];
    uint32_t per_minute[GW_CH__COUNT];
    uint32_t join_per_minute; /* joins publish presence events: limited too */
    /* [nats] */
    mb_client_opts nats;
    struct mb_config *cfg;                      /* keeps the strings nats points to alive */
    char *nats_override[MB_CLIENT_MAX_SERVERS]; /* --nats URLs */
    char *nats_servers_buf;
} gw_config;

/* Parse argv, the config file and the environment. Returns 0 and fills c;
 * 1 after --help / --version (printed; exit 0); 2 on an error (printed to
 * stderr; exit 2). */
int gw_config_load(gw_config *c, int argc, char **argv, char **envp);
void gw_config_free(gw_config *c);

/* ---- entities ---- */
typedef struct gw gw;
typedef struct gw_sess gw_sess;
typedef struct gw_room gw_room;

typedef struct gw_zone { /* a subzone with local players */
    char *id;
    size_t players;
    mb_sub_id sub; /* chat.local.subzone.{id}; 0 while missing */
    gw_room *rooms;
} gw_zone;

#define GW_ROOM_SUBS 3 /* chat.*.room.R, events.*.R, combat.*.R */
struct gw_room {
    char *id;
    gw_zone *zone;
    gw_room *zone_next, *zone_prev;
    gw_sess *members;
    size_t n;
    mb_sub_id subs[GW_ROOM_SUBS]; /* 0 while missing (NATS down): retried */
};

typedef struct gw_party {
    char *id;
    gw_sess *members;
    size_t n;
    mb_sub_id sub;
} gw_party;

typedef struct gw_pent { /* a player with at least one session here */
    char *id, *name;
    gw_sess *sessions;
    size_t n;
    mb_sub_id sub;      /* chat.whisper.player.{id} */
    gw_bucket *buckets; /* GW_CH__COUNT channels + join; allocated at the first command that
                         * is rate limited (an idle player holds none) */
    gw_mutes mutes;
} gw_pent;

struct gw_sess {
    gw *g;
    struct lws *wsi;
    uint32_t refs; /* the connection + pending jobs */
    bool closed;   /* the WebSocket is gone */
    bool closing;  /* a close was requested (close_code) */
    bool admin;
    bool held;           /* nothing is written until its subscriptions are live and its
                          * player's mutes are loaded (or failed to load) */
    bool synced;         /* its subscriptions are live */
    bool dirty;          /* on gw.dirty: frames were queued in this loop iteration */
    bool release_queued; /* on gw.release_head */
    gw_sess *dirty_next;
    gw_sess *release_next; /* on gw.release_head (gw_sess_release_soon) */
    uint16_t close_code;
    const char *close_why; /* the close frame's reason (a string literal) */
    int64_t exp;           /* the token's expiry (s since the epoch): closed with 4001 after it */
    gw_pent *pe;
    gw_room *room;
    gw_sess *room_next, *room_prev;
    gw_party *party;
    gw_sess *party_next, *party_prev;
    gw_sess *pe_next, *pe_prev;
    gw_sess *all_next, *all_prev;
    uint64_t seq;
    gw_outq q;
    char *rx; /* a message arriving in fragments */
    size_t rx_len;
    gw_held_list *waiting; /* deliveries waiting for the player's mutes (NULL: none) */
};

/* ---- metrics ---- */
typedef struct gw_stats {
    mb_counter *frames_out;                 /* frames written, all kinds */
    mb_counter *msgs_out[GW_CH__COUNT + 1]; /* deliveries queued, by channel; the last: events */
    mb_counter *msgs_in[GW_CH__COUNT];      /* chat commands accepted, by channel */
    mb_counter *cmd_errors[GW_ERR__COUNT];
    mb_counter *mute_loads, *mute_load_failures, *mute_filtered, *mute_store_errors;
    mb_counter *mutes_purged; /* expired rows deleted from the store */
    mb_counter *drops, *oversize, *slow_closes, *conns_total, *auth_refused, *nats_in;
    mb_gauge *conns, *rooms, *subs, *queued_frames, *work_queue, *heap, *store_statements;
    mb_counter *accepted, *accept_deferred;
    mb_counter *whispers_captured; /* answered by a JetStream stream, not a gateway */
    mb_counter *local_fanouts;     /* chat delivered here when published (local fan-out) */
    mb_counter *echoes_dropped;    /* their copies back from NATS, not delivered again */
    mb_counter *sent_evicted;      /* ids forgotten before their copy came back */
    mb_histogram *loop_busy;       /* each loop iteration's work, ns */
} gw_stats;

struct gw {
    gw_config *cfg;
    uv_loop_t loop;
    struct lws_context *lws;
    gw_auth *auth;
    mb_client *nats;
    mb_metrics *metrics;
    gw_stats st;
    uv_poll_t nats_poll;
    uv_timer_t nats_timer; /* due retries and re-subscribing */
    uv_signal_t sig_term, sig_int;
    uv_timer_t drain_timer;
    uv_check_t flush_check; /* after each loop iteration's callbacks: write what was queued */
    uv_prepare_t busy_prep; /* before each poll: the iteration's busy time, accept batch */
    uint64_t busy_prep_ns, busy_idle_ns; /* at the last prepare: clock, loop idle time */
    gw_sess *dirty; /* sessions with frames queued in this iteration (one ref each) */
    size_t ndirty;
    bool draining;
    struct lws_vhost *vhost;    /* serves the sockets listener.c accepts */
    int listen_fd, listen_port; /* listener.c */
    bool listen_open, listening, accept_paused, accept_deferred;
    uint32_t accept_left; /* of this iteration's batch */
    uv_poll_t listen_poll;
    uv_timer_t accept_pause;
    bool nats_ready; /* a live connection and the global subscriptions */
    gw_map rooms, zones, parties, players;
    gw_sess *all;
    size_t nsess;
    mb_sub_id global_subs[4];  /* chat.global, chat.system, events.game_tick, mutes.changed.* */
    gw_buf scratch;            /* frame bodies */
    struct gw_work_pool *work; /* NATS calls: subscription flushes, whispers */
    struct gw_work_pool *store_work; /* mute store calls (a slow database delays only them) */
    struct gw_waiter *sync_next;     /* waiting for the next subscription flush */
    bool sync_busy;                  /* a flush is running on a worker */
    struct gw_waiter *sync_ready, *sync_ready_tail; /* flushed, to continue (oldest first) */
    uv_idle_t sync_idle;                            /* continues them in later iterations */
    gw_sess *release_head, *release_tail;           /* gw_sess_release_soon, one ref each */
    uv_idle_t release_idle;
    gw_store *store;
    gw_pent *mute_pending, *mute_pending_tail; /* players whose mutes must be loaded */
    size_t mute_pending_n;
    uint64_t mute_pending_since; /* when the oldest pending player arrived (loop clock) */
    bool mute_busy;              /* a batch is loading on a worker */
    bool purge_busy;             /* a purge of expired mutes runs on a worker */
    uint64_t purge_next_ms;      /* when the next purge is due (loop clock) */
    uv_timer_t mute_timer;       /* a batch waits up to GW_MUTES_GATHER_MS to fill */
    gw_sent *sent;               /* ids of chat delivered by local fan-out (sent.c) */
};

/* Bulk work on the loop (many sessions released at once) runs in slices of
 * this much time per loop iteration, so that NATS deliveries and the other
 * connections are served in between. */
#define GW_SLICE_NS 2000000u
/* Sessions released per loop iteration by gw_sess_release_soon. */
#define GW_RELEASE_PER_ITER 64u
/* NATS deliveries stop for the iteration once this many sessions have
 * frames to write (about 3 ms of send() calls here). */
#define GW_FLUSH_SESSIONS 256u

/* ---- server.c ---- */
int gw_server_run(gw_config *cfg);
/* Queue a frame to a session (takes its own reference) and ask for a write. */
void gw_send(gw_sess *s, gw_frame *f);
/* Build a critical frame from g->scratch and send it to one session. */
void gw_send_scratch(gw_sess *s, gw_frame_class cls);
/* Close a session with a code and a reason (a string literal, at most 120
 * bytes), after what is queued (4008: at once). */
void gw_close(gw_sess *s, uint16_t code, const char *reason);
void gw_sess_unref(gw_sess *s);
void gw_log(const char *level, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* ---- rooms.c ---- */
/* Enter the start room etc.: a new session's player entry, whisper and party
 * subscriptions. false on OOM. */
bool gw_sess_attach(gw *g, gw_sess *s, const gw_player *p);
void gw_sess_detach(gw *g, gw_sess *s); /* leaves room, party, player */
/* Move s into room_id (NULL: leave only). false on OOM (s stays where it was). */
bool gw_room_move(gw *g, gw_sess *s, const char *room_id);
gw_room *gw_room_find(gw *g, const char *id);
gw_pent *gw_player_find(gw *g, const char *id);
/* The subzone of a room id: its third '_' token, or "unknown". */
void gw_room_subzone(const char *room_id, char *out, size_t cap);
/* Continue once every subscription made so far is live at the server (a
 * flush round trip on a worker thread; concurrent waiters share one flush):
 * GW_AFTER_WELCOME releases a new session's writes (its welcome is first)
 * and announces it; GW_AFTER_JOIN announces the move and acks the join. */
typedef enum gw_after_kind { GW_AFTER_WELCOME, GW_AFTER_JOIN } gw_after_kind;
void gw_after_subs(gw *g, gw_sess *s, gw_after_kind kind, const char *id, const char *old_room,
                   const char *new_room);
/* Once a second: retry a subscription flush that could not be queued. */
void gw_players_reap(gw *g);
/* Subscribe whatever is missing (after NATS came back). */
void gw_resubscribe(gw *g);
bool gw_global_subscribe(gw *g);
void gw_rooms_free(gw *g);

/* ---- chat.c ---- */
#define GW_BUCKET_JOIN GW_CH__COUNT
/* Take a token from pe's bucket `which` (a gw_chan or GW_BUCKET_JOIN); false
 * when refused, with the wait in *retry_after_ms (1 s when out of memory). */
bool gw_rate_take(gw *g, gw_pent *pe, unsigned which, uint32_t per_minute,
                  uint64_t *retry_after_ms);
void gw_handle_frame(gw *g, gw_sess *s, const char *buf, size_t len);
mb_handled gw_on_nats(void *ctx, const mb_msg *m);
/* Send the welcome frame. */
void gw_welcome(gw *g, gw_sess *s);
/* The continuations of gw_after_subs (server.c and chat.c). */
void gw_after_welcome(gw *g, gw_sess *s);
void gw_after_join(gw *g, gw_sess *s, const char *id, const char *old_room, const char *new_room);
/* Publish player_entered / player_left for s in room (best effort). */
void gw_publish_presence(gw *g, gw_sess *s, const char *event, const char *room_id);
/* Send s what is waiting, if it is synced and its mutes are settled. */
void gw_sess_release(gw *g, gw_sess *s);
/* gw_sess_release in a later loop iteration, GW_RELEASE_PER_ITER sessions
 * per iteration (for a batch of hundreds released at once). */
void gw_sess_release_soon(gw *g, gw_sess *s);
void gw_release_init(gw *g);
/* Drop what is queued (shutdown). */
void gw_release_drop(gw *g);
/* Queue a delivery to s through its player's mute filter (or hold it). */
void gw_deliver(gw *g, gw_sess *s, gw_frame *f, const char *sender, uint32_t sender_hash,
                gw_chan ch, bool filtered, int64_t now_ms);
int64_t gw_wall_ms(void);
void gw_send_error(gw *g, gw_sess *s, const char *id, gw_err_code code, const char *msg,
                   uint64_t retry_after_ms);

/* ---- listener.c ---- */
/* Grow the descriptor table to hold `conns` connections and a margin, up to
 * the open-file limit (best effort); call before any thread starts. */
void gw_fd_table_presize(size_t conns);
/* Bind and listen on [gateway] listen (sets listen_fd and listen_port), or
 * false with the reason in msg. */
bool gw_listener_open(gw *g, char *msg, size_t cap);
/* Start accepting into g->vhost. */
void gw_listener_start(gw *g);
/* Before each poll: a new batch of accepts. */
void gw_listener_iteration(gw *g);
void gw_listener_close(gw *g);

/* ---- workers.c ---- */
typedef struct gw_work gw_work;
struct gw_work {
    void (*run)(gw_work *w);  /* on a worker thread */
    void (*done)(gw_work *w); /* on the loop, after run (or instead of it, with
                               * cancelled set, when the pool stops); frees w */
    bool cancelled;
    gw_work *next;
};
typedef struct gw_work_pool gw_work_pool;
gw_work_pool *gw_work_start(uv_loop_t *loop, unsigned threads, size_t queue_max);
/* false when the queue is full (the caller answers `unavailable`). */
bool gw_work_submit(gw_work_pool *p, gw_work *w);
size_t gw_work_depth(gw_work_pool *p);
/* Stop: running jobs finish, queued ones are cancelled; every done callback
 * runs on the calling (loop) thread before it returns. */
void gw_work_stop(gw_work_pool *p);

static inline uint64_t gw_now_mono_ms(gw *g)
{
    return uv_now(&g->loop);
}

#endif
