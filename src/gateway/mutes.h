/* SPDX-License-Identifier: MIT */
/*
 * mutes.h - per-player mute caches, their batched loading from the store,
 * delivery filtering, and the mute commands (PROTOCOL.md sections 3 and 4).
 *
 * Loop thread only; store calls run on the worker pool. A player's mutes load
 * when their first session arrives: players waiting at the same moment share
 * one store statement (up to GW_MUTES_BATCH ids), one batch in flight at a
 * time. Until a player's mutes are loaded nothing is written to their
 * sessions (the welcome included) and deliveries wait in a bounded list, so
 * no message reaches a player unfiltered. Expiry is checked at delivery time.
 *
 * The store is the truth; NATS carries hints: a change is written to the
 * store first, then announced on mutes.changed.{player}; a gateway that has
 * that player loads them again. After a NATS outage every local player is
 * loaded again (announcements may have been missed).
 */
#ifndef MUDBUS_GW_MUTES_H
#define MUDBUS_GW_MUTES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GW_MUTES_BATCH          500 /* ids per store statement */
#define GW_MUTES_GATHER_MS      25  /* a batch waits this long to fill (unless it is full) */
#define GW_MUTES_HELD_MAX       512 /* deliveries waiting for a player's mutes */
#define GW_MUTES_ATTEMPTS       6   /* failed loads before the sessions are closed (about 30 s) */
#define GW_MUTES_PER_PLAYER_MAX 200 /* personal and channel mutes one player may hold */

struct gw;
struct gw_sess;
struct gw_pent;
struct gw_cmd;
struct gw_frame;

typedef struct gw_mute_ent {
    char *target;       /* personal: the muted player; channel: NULL */
    char *reason;       /* may be NULL */
    int64_t expires_ms; /* 0: never */
    uint32_t hash;      /* gw_hash(target) */
    uint8_t channel;    /* channel mutes: gw_chan; personal: 0xFF */
} gw_mute_ent;

typedef struct gw_global_mute {
    char *by, *reason;
    int64_t created_ms, expires_ms; /* expires 0: never */
} gw_global_mute;

enum { GW_MUTES_NEW = 0, GW_MUTES_LOADED, GW_MUTES_FAILED };

typedef struct gw_mutes {
    gw_mute_ent *e; /* personal and channel mutes */
    uint16_t n, cap;
    uint16_t gen;     /* local changes applied (a load that began before one is stale) */
    uint8_t state;    /* GW_MUTES_* */
    uint8_t attempts; /* failed loads in a row */
    bool queued;      /* waiting for the next batch */
    bool in_batch;    /* in the batch in flight */
    uint64_t retry_at_ms;
    gw_global_mute *global; /* this player's global mute (as its target), or NULL */
    struct gw_pent *next;   /* the pending list */
} gw_mutes;

/* A delivery waiting for its recipient's mutes. */
typedef struct gw_held {
    struct gw_frame *f;
    char *sender; /* NULL when the frame is not filtered */
    uint32_t hash;
    uint8_t ch;
} gw_held;

typedef struct gw_held_list {
    gw_held *v;
    uint32_t n, cap;
} gw_held_list;

/* Set up and tear down the batching timer (on the gateway's loop). */
void gw_mutes_init(struct gw *g);
void gw_mutes_close(struct gw *g);
/* Ask for pe's mutes to be loaded (again). */
void gw_mutes_request(struct gw *g, struct gw_pent *pe);
/* Free a player's cache (when the entry goes). */
void gw_mutes_free(struct gw_pent *pe);
/* Whether a delivery from sender (NULL: not from a player) on channel ch
 * passes pe's mutes at now_ms. */
bool gw_mutes_allow(const struct gw_pent *pe, const char *sender, uint32_t sender_hash, unsigned ch,
                    int64_t now_ms);
/* Whether pe may speak on ch: 0, or the error message (muted) in msg. */
bool gw_mutes_may_speak(const struct gw_pent *pe, bool admin, unsigned ch, int64_t now_ms,
                        char *msg, size_t cap);
/* Hold a delivery for s until its mutes are loaded. When the list is full
 * the oldest ambient delivery is dropped (counted in the messages_skipped
 * notice); false only when it holds critical deliveries alone and this one
 * is critical too (the caller closes the connection). */
bool gw_mutes_hold(struct gw_sess *s, struct gw_frame *f, const char *sender, uint32_t hash,
                   unsigned ch, bool filtered);
void gw_held_clear(struct gw_sess *s);
/* Deliver what waited for s, through its player's (now loaded) mutes. */
void gw_mutes_release_held(struct gw *g, struct gw_sess *s);
/* Take pe off the pending list (its entry is going away). */
void gw_mutes_forget(struct gw *g, struct gw_pent *pe);
/* The mute commands: mute, unmute, mute_channel, unmute_channel,
 * mute_global, unmute_global, mutes. */
void gw_mutes_cmd(struct gw *g, struct gw_sess *s, const struct gw_cmd *c);
/* A mutes.changed.{player} announcement. */
void gw_mutes_changed(struct gw *g, const char *player_id);
/* Once a second: failed loads that are due again. */
void gw_mutes_tick(struct gw *g);
/* NATS came back: load every local player again. */
void gw_mutes_reload_all(struct gw *g);

#endif
