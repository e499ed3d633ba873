/* SPDX-License-Identifier: MIT */
/*
 * rooms.c - who is where: player entries, rooms, subzones and parties, each
 * holding its NATS subscriptions exactly while it has local members
 * (reference counts; no server-wide wildcard subscription). A subscription
 * that cannot be made while NATS is down stays 0 and gw_resubscribe makes it
 * when a connection is back.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw.h"

static void sub(gw *g, mb_sub_id *id, const char *prefix, const char *arg)
{
    if (*id || !g->nats)
        return;
    char subj[300];
    snprintf(subj, sizeof subj, "%s%s", prefix, arg);
    mb_err err = {0};
    /* Plain subscriptions, critical subjects too: every gateway must see
     * every message for its own players, as it comes. */
    if (mb_client_subscribe_core(g->nats, subj, NULL, gw_on_nats, g, id, &err) != MB_OK) {
        *id = 0;
        if (err.code != MB_ENOCONN)
            gw_log("warn", "event=subscribe_failed subject=%s error=\"%s\"", subj, err.msg);
        return;
    }
    mb_gauge_add(g->st.subs, 1);
}

static void unsub(gw *g, mb_sub_id *id)
{
    if (!*id)
        return;
    mb_err err = {0};
    if (mb_client_unsubscribe(g->nats, *id, &err) != MB_OK)
        gw_log("warn", "event=unsubscribe_failed error=\"%s\"", err.msg);
    *id = 0;
    mb_gauge_add(g->st.subs, -1);
}

static const char *const room_fmts[GW_ROOM_SUBS] = {"chat.*.room.", "events.*.", "combat.*."};

void gw_room_subzone(const char *room_id, char *out, size_t cap)
{
    const char *p = room_id;
    for (int i = 0; i < 2 && p; i++) {
        p = strchr(p, '_');
        if (p)
            p++;
    }
    if (!p || !*p) {
        snprintf(out, cap, "unknown");
        return;
    }
    size_t n = strcspn(p, "_");
    if (n >= cap)
        n = cap - 1;
    memcpy(out, p, n);
    out[n] = '\0';
}

gw_room *gw_room_find(gw *g, const char *id)
{
    return gw_map_get(&g->rooms, id);
}

gw_pent *gw_player_find(gw *g, const char *id)
{
    return gw_map_get(&g->players, id);
}

/* ---- intrusive doubly linked lists ---- */
#define LIST_ADD(head, s, next, prev)                                                              \
    do {                                                                                           \
        (s)->prev = NULL;                                                                          \
        (s)->next = (head);                                                                        \
        if (head)                                                                                  \
            (head)->prev = (s);                                                                    \
        (head) = (s);                                                                              \
    } while (0)
#define LIST_DEL(head, s, next, prev)                                                              \
    do {                                                                                           \
        if ((s)->prev)                                                                             \
            (s)->prev->next = (s)->next;                                                           \
        else                                                                                       \
            (head) = (s)->next;                                                                    \
        if ((s)->next)                                                                             \
            (s)->next->prev = (s)->prev;                                                           \
        (s)->next = (s)->prev = NULL;                                                              \
    } while (0)

/* ---- subzones ---- */
static gw_zone *zone_get(gw *g, const char *id)
{
    gw_zone *z = gw_map_get(&g->zones, id);
    if (z)
        return z;
    z = calloc(1, sizeof *z);
    if (!z || !(z->id = strdup(id)) || !gw_map_put(&g->zones, z->id, z)) {
        if (z)
            free(z->id);
        free(z);
        return NULL;
    }
    return z;
}

static void zone_release(gw *g, gw_zone *z)
{
    if (z->rooms)
        return;
    unsub(g, &z->sub);
    gw_map_del(&g->zones, z->id);
    free(z->id);
    free(z);
}

/* ---- rooms ---- */
static gw_room *room_get(gw *g, const char *id)
{
    gw_room *r = gw_map_get(&g->rooms, id);
    if (r)
        return r;
    char zid[GW_TOKEN_MAX + 1];
    gw_room_subzone(id, zid, sizeof zid);
    gw_zone *z = zone_get(g, zid);
    if (!z)
        return NULL;
    r = calloc(1, sizeof *r);
    if (!r || !(r->id = strdup(id)) || !gw_map_put(&g->rooms, r->id, r)) {
        if (r)
            free(r->id);
        free(r);
        zone_release(g, z);
        return NULL;
    }
    r->zone = z;
    LIST_ADD(z->rooms, r, zone_next, zone_prev);
    mb_gauge_add(g->st.rooms, 1);
    return r;
}

static void room_release(gw *g, gw_room *r)
{
    if (r->members)
        return;
    for (int i = 0; i < GW_ROOM_SUBS; i++)
        unsub(g, &r->subs[i]);
    gw_zone *z = r->zone;
    LIST_DEL(z->rooms, r, zone_next, zone_prev);
    gw_map_del(&g->rooms, r->id);
    free(r->id);
    free(r);
    mb_gauge_add(g->st.rooms, -1);
    zone_release(g, z);
}

static void room_subscribe(gw *g, gw_room *r)
{
    for (int i = 0; i < GW_ROOM_SUBS; i++)
        sub(g, &r->subs[i], room_fmts[i], r->id);
    sub(g, &r->zone->sub, "chat.local.subzone.", r->zone->id);
}

bool gw_room_move(gw *g, gw_sess *s, const char *room_id)
{
    gw_room *old = s->room;
    if (old && room_id && strcmp(old->id, room_id) == 0)
        return true;
    gw_room *r = NULL;
    if (room_id && !(r = room_get(g, room_id)))
        return false;
    if (old) {
        LIST_DEL(old->members, s, room_next, room_prev);
        old->n--;
        old->zone->players--;
        s->room = NULL;
        room_release(g, old);
    }
    if (r) {
        LIST_ADD(r->members, s, room_next, room_prev);
        r->n++;
        r->zone->players++;
        s->room = r;
        room_subscribe(g, r);
    }
    return true;
}

/* ---- parties ---- */
static bool party_join(gw *g, gw_sess *s, const char *id)
{
    gw_party *p = gw_map_get(&g->parties, id);
    if (!p) {
        p = calloc(1, sizeof *p);
        if (!p || !(p->id = strdup(id)) || !gw_map_put(&g->parties, p->id, p)) {
            if (p)
                free(p->id);
            free(p);
            return false;
        }
    }
    LIST_ADD(p->members, s, party_next, party_prev);
    p->n++;
    s->party = p;
    sub(g, &p->sub, "chat.party.group.", p->id);
    return true;
}

static void party_leave(gw *g, gw_sess *s)
{
    gw_party *p = s->party;
    if (!p)
        return;
    LIST_DEL(p->members, s, party_next, party_prev);
    s->party = NULL;
    if (--p->n)
        return;
    unsub(g, &p->sub);
    gw_map_del(&g->parties, p->id);
    free(p->id);
    free(p);
}

/* ---- players and sessions ---- */
static void pent_free(gw *g, gw_pent *pe)
{
    gw_mutes_forget(g, pe);
    gw_mutes_free(pe);
    unsub(g, &pe->sub);
    free(pe->buckets);
    free(pe->id);
    free(pe->name);
    free(pe);
}

/* Once a second: retry a subscription flush that could not be queued. */
static void sync_start(gw *g);

void gw_players_reap(gw *g)
{
    if (g->sync_next && !g->sync_busy && !g->draining)
        sync_start(g);
}

bool gw_sess_attach(gw *g, gw_sess *s, const gw_player *p)
{
    gw_pent *pe = gw_map_get(&g->players, p->id);
    bool fresh = !pe;
    if (pe && strcmp(pe->name, p->name) != 0) {
        char *name = strdup(p->name);
        if (!name)
            return false;
        free(pe->name);
        pe->name = name;
    }
    if (fresh) {
        pe = calloc(1, sizeof *pe);
        if (!pe || !(pe->id = strdup(p->id)) || !(pe->name = strdup(p->name)) ||
            !gw_map_put(&g->players, pe->id, pe)) {
            if (pe) {
                free(pe->id);
                free(pe->name);
            }
            free(pe);
            return false;
        }
    }
    if (p->party[0] && !party_join(g, s, p->party)) {
        if (fresh) {
            gw_map_del(&g->players, pe->id);
            free(pe->id);
            free(pe->name);
            free(pe);
        }
        return false;
    }
    LIST_ADD(pe->sessions, s, pe_next, pe_prev);
    pe->n++;
    s->pe = pe;
    s->admin = p->admin;
    sub(g, &pe->sub, "chat.whisper.player.", pe->id);
    if (fresh)
        gw_mutes_request(g, pe);
    return true;
}

void gw_sess_detach(gw *g, gw_sess *s)
{
    gw_room_move(g, s, NULL);
    party_leave(g, s);
    gw_pent *pe = s->pe;
    if (!pe)
        return;
    LIST_DEL(pe->sessions, s, pe_next, pe_prev);
    s->pe = NULL;
    if (--pe->n == 0) {
        gw_map_del(&g->players, pe->id);
        pent_free(g, pe);
    }
}

/* ---- waiting for subscriptions to be live ---- */
typedef struct gw_waiter {
    struct gw_waiter *next;
    gw_sess *s;
    gw_after_kind kind;
    char *id;
    char old_room[GW_TOKEN_MAX + 1], new_room[GW_TOKEN_MAX + 1];
} gw_waiter;

typedef struct sync_job {
    gw_work w;
    gw *g;
    gw_waiter *batch;
    mb_status st;
} sync_job;

static void sync_run(gw_work *w)
{
    sync_job *j = (sync_job *)w;
    mb_err err = {0};
    j->st = mb_client_flush(j->g->nats, 1000, &err);
}

/* Continue one waiter (its subscriptions are live) and free it. */
static void waiter_run(gw *g, gw_waiter *w, bool cancelled)
{
    gw_sess *s = w->s;
    if (!s->closed && !cancelled) {
        if (w->kind == GW_AFTER_WELCOME)
            gw_after_welcome(g, s);
        else
            gw_after_join(g, s, w->id, w->old_room, w->new_room);
    }
    gw_sess_unref(s);
    free(w->id);
    free(w);
}

/* Continue the waiters whose flush completed, oldest first, for at most
 * GW_SLICE_NS of this loop iteration; the rest continue in the next
 * iterations (the idle handle keeps the poll from blocking meanwhile).
 * In a connect storm one flush may release hundreds of joins, each
 * publishing its presence events and writing its ack; in one piece that
 * held every NATS delivery back for tens of milliseconds. */
static void release_ready(gw *g);

static void on_ready_idle(uv_idle_t *h)
{
    release_ready(h->data);
}

static void release_ready(gw *g)
{
    uint64_t t0 = uv_hrtime();
    while (g->sync_ready) {
        gw_waiter *w = g->sync_ready;
        g->sync_ready = w->next;
        waiter_run(g, w, false);
        if (uv_hrtime() - t0 >= GW_SLICE_NS)
            break;
    }
    if (!g->sync_ready) {
        g->sync_ready_tail = NULL;
        uv_idle_stop(&g->sync_idle);
    } else if (!uv_is_active((uv_handle_t *)&g->sync_idle)) {
        uv_idle_start(&g->sync_idle, on_ready_idle);
    }
}

static void sync_done(gw_work *w)
{
    sync_job *j = (sync_job *)w;
    gw *g = j->g;
    g->sync_busy = false;
    /* Oldest first, after those still waiting from earlier flushes. */
    gw_waiter *rev = NULL;
    while (j->batch) {
        gw_waiter *n = j->batch->next;
        j->batch->next = rev;
        rev = j->batch;
        j->batch = n;
    }
    if (j->w.cancelled) {
        while (rev) {
            gw_waiter *n = rev->next;
            waiter_run(g, rev, true);
            rev = n;
        }
    } else if (rev) {
        gw_waiter *tail = rev;
        while (tail->next)
            tail = tail->next;
        if (g->sync_ready_tail)
            g->sync_ready_tail->next = rev;
        else
            g->sync_ready = rev;
        g->sync_ready_tail = tail;
        release_ready(g);
    }
    free(j);
    if (g->sync_next && !g->draining)
        sync_start(g);
}

static void sync_start(gw *g)
{
    sync_job *j = calloc(1, sizeof *j);
    if (!j)
        return; /* retried at the next waiter */
    j->w.run = sync_run;
    j->w.done = sync_done;
    j->g = g;
    j->batch = g->sync_next;
    if (!gw_work_submit(g->work, &j->w)) {
        free(j);
        return;
    }
    g->sync_next = NULL;
    g->sync_busy = true;
}

void gw_after_subs(gw *g, gw_sess *s, gw_after_kind kind, const char *id, const char *old_room,
                   const char *new_room)
{
    gw_waiter *w = calloc(1, sizeof *w);
    if (!w || (id && !(w->id = strdup(id)))) {
        free(w);
        /* Cannot wait: continue now (the subscriptions are on their way). */
        if (kind == GW_AFTER_WELCOME)
            gw_after_welcome(g, s);
        else
            gw_after_join(g, s, id, old_room, new_room);
        return;
    }
    w->s = s;
    s->refs++;
    w->kind = kind;
    snprintf(w->old_room, sizeof w->old_room, "%s", old_room ? old_room : "");
    snprintf(w->new_room, sizeof w->new_room, "%s", new_room ? new_room : "");
    w->next = g->sync_next;
    g->sync_next = w;
    if (!g->sync_busy)
        sync_start(g);
}

bool gw_global_subscribe(gw *g)
{
    static const char *const subj[4] = {"chat.global", "chat.system", "events.game_tick",
                                        "mutes.changed.*"};
    bool ok = true;
    for (int i = 0; i < 4; i++) {
        sub(g, &g->global_subs[i], subj[i], "");
        ok = ok && g->global_subs[i];
    }
    return ok;
}

void gw_resubscribe(gw *g)
{
    gw_global_subscribe(g);
    for (gw_map_ent *e = NULL; (e = gw_map_next(&g->rooms, e));)
        room_subscribe(g, e->val);
    for (gw_map_ent *e = NULL; (e = gw_map_next(&g->parties, e));) {
        gw_party *p = e->val;
        sub(g, &p->sub, "chat.party.group.", p->id);
    }
    for (gw_map_ent *e = NULL; (e = gw_map_next(&g->players, e));) {
        gw_pent *pe = e->val;
        sub(g, &pe->sub, "chat.whisper.player.", pe->id);
    }
}

void gw_rooms_free(gw *g)
{
    /* Sessions are detached before this (their player entries went with
     * them); what is left are waiters that never ran and the globals. The
     * player loop only guards against an entry left behind. */
    for (gw_map_ent *e = NULL; (e = gw_map_next(&g->players, e));)
        pent_free(g, e->val);
    while (g->sync_next) {
        gw_waiter *w = g->sync_next;
        g->sync_next = w->next;
        waiter_run(g, w, true);
    }
    while (g->sync_ready) {
        gw_waiter *w = g->sync_ready;
        g->sync_ready = w->next;
        waiter_run(g, w, true);
    }
    g->sync_ready_tail = NULL;
    for (int i = 0; i < 4; i++)
        unsub(g, &g->global_subs[i]);
    gw_map_free(&g->rooms);
    gw_map_free(&g->zones);
    gw_map_free(&g->parties);
    gw_map_free(&g->players);
}
