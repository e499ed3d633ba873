/* SPDX-License-Identifier: MIT */
/*
 * mutes.c - mute caches, batched loading, filtering and the mute commands.
 * See mutes.h for the model; PROTOCOL.md section 4 for the rules.
 */
#include "mutes.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw.h"

/* ---- the cache ---- */

static void ent_free(gw_mute_ent *e)
{
    free(e->target);
    free(e->reason);
}

static void global_free(gw_global_mute *gm)
{
    if (gm) {
        free(gm->by);
        free(gm->reason);
        free(gm);
    }
}

static void cache_clear(gw_mutes *m)
{
    for (uint16_t i = 0; i < m->n; i++)
        ent_free(&m->e[i]);
    free(m->e);
    m->e = NULL;
    m->n = m->cap = 0;
    global_free(m->global);
    m->global = NULL;
}

void gw_mutes_free(gw_pent *pe)
{
    cache_clear(&pe->mutes);
}

static bool in_force(int64_t expires_ms, int64_t now_ms)
{
    return expires_ms == 0 || expires_ms > now_ms;
}

static int find_ent(const gw_mutes *m, const char *target, unsigned ch)
{
    for (uint16_t i = 0; i < m->n; i++) {
        const gw_mute_ent *e = &m->e[i];
        if (target ? e->target && strcmp(e->target, target) == 0 : e->channel == ch)
            return i;
    }
    return -1;
}

static void remove_ent(gw_mutes *m, int i)
{
    ent_free(&m->e[i]);
    m->e[i] = m->e[--m->n];
    if (!m->n) {
        free(m->e);
        m->e = NULL;
        m->cap = 0;
    }
}

/* Add or replace a personal (target != NULL) or channel mute. */
static bool put_ent(gw_mutes *m, const char *target, unsigned ch, int64_t expires_ms,
                    const char *reason)
{
    int i = find_ent(m, target, ch);
    if (i >= 0)
        remove_ent(m, i);
    if (m->n == m->cap) {
        if (m->cap >= UINT16_MAX / 2)
            return false;
        uint16_t cap = m->cap ? (uint16_t)(m->cap * 2) : 4;
        gw_mute_ent *e = realloc(m->e, sizeof *e * cap);
        if (!e)
            return false;
        m->e = e;
        m->cap = cap;
    }
    gw_mute_ent *e = &m->e[m->n];
    memset(e, 0, sizeof *e);
    e->channel = target ? 0xFF : (uint8_t)ch;
    e->expires_ms = expires_ms;
    if (target && !(e->target = strdup(target)))
        return false;
    e->hash = target ? gw_hash(target) : 0;
    if (reason && *reason && !(e->reason = strdup(reason))) {
        free(e->target);
        return false;
    }
    m->n++;
    return true;
}

static bool put_global(gw_mutes *m, const char *by, const char *reason, int64_t created_ms,
                       int64_t expires_ms)
{
    gw_global_mute *gm = calloc(1, sizeof *gm);
    if (!gm || !(gm->by = strdup(by ? by : "")) ||
        (reason && *reason && !(gm->reason = strdup(reason)))) {
        global_free(gm);
        return false;
    }
    gm->created_ms = created_ms;
    gm->expires_ms = expires_ms;
    global_free(m->global);
    m->global = gm;
    return true;
}

static int chan_index(const char *name)
{
    for (int i = 0; i < GW_CH__COUNT; i++)
        if (strcmp(name, gw_chan_names[i]) == 0)
            return i;
    return -1;
}

bool gw_mutes_allow(const gw_pent *pe, const char *sender, uint32_t sender_hash, unsigned ch,
                    int64_t now_ms)
{
    const gw_mutes *m = &pe->mutes;
    for (uint16_t i = 0; i < m->n; i++) {
        const gw_mute_ent *e = &m->e[i];
        if (!in_force(e->expires_ms, now_ms))
            continue;
        if (e->channel == ch)
            return false;
        if (e->target && sender && e->hash == sender_hash && strcmp(e->target, sender) == 0)
            return false;
    }
    return true;
}

bool gw_mutes_may_speak(const gw_pent *pe, bool admin, unsigned ch, int64_t now_ms, char *msg,
                        size_t cap)
{
    const gw_mutes *m = &pe->mutes;
    if (!admin && m->global && in_force(m->global->expires_ms, now_ms)) {
        if (m->global->expires_ms) {
            char ts[40];
            mb_timestamp_format(m->global->expires_ms, ts);
            snprintf(msg, cap, "you are muted until %s%s%.120s", ts, m->global->reason ? ": " : "",
                     m->global->reason ? m->global->reason : "");
        } else {
            snprintf(msg, cap, "you are muted%s%.120s", m->global->reason ? ": " : "",
                     m->global->reason ? m->global->reason : "");
        }
        return false;
    }
    for (uint16_t i = 0; i < m->n; i++)
        if (m->e[i].channel == ch && in_force(m->e[i].expires_ms, now_ms)) {
            snprintf(msg, cap, "you muted the %s channel (unmute_channel to use it)",
                     gw_chan_names[ch]);
            return false;
        }
    return true;
}

/* ---- held deliveries ---- */

bool gw_mutes_hold(gw_sess *s, gw_frame *f, const char *sender, uint32_t hash, unsigned ch,
                   bool filtered)
{
    gw_held_list *l = s->waiting;
    if (!l && !(l = s->waiting = calloc(1, sizeof *l)))
        return false;
    if (l->n == GW_MUTES_HELD_MAX) {
        /* Full: the oldest ambient delivery makes room (the player later gets
         * one messages_skipped); only critical ones left: refuse. */
        uint32_t i = 0;
        while (i < l->n && l->v[i].f->cls != GW_AMBIENT)
            i++;
        if (i == l->n) {
            if (f->cls != GW_AMBIENT)
                return false;
            s->q.skipped++;
            return true;
        }
        gw_frame_unref(l->v[i].f);
        free(l->v[i].sender);
        memmove(&l->v[i], &l->v[i + 1], sizeof *l->v * (l->n - i - 1));
        l->n--;
        s->q.skipped++;
    }
    if (l->n == l->cap) {
        uint32_t cap = l->cap ? l->cap * 2 : 16;
        gw_held *v = realloc(l->v, sizeof *v * cap);
        if (!v)
            return false;
        l->v = v;
        l->cap = cap;
    }
    gw_held *h = &l->v[l->n];
    h->sender = NULL;
    if (filtered && sender && !(h->sender = strdup(sender)))
        return false;
    h->f = gw_frame_ref(f);
    h->hash = hash;
    h->ch = filtered ? (uint8_t)ch : 0xFF;
    l->n++;
    return true;
}

void gw_held_clear(gw_sess *s)
{
    gw_held_list *l = s->waiting;
    if (!l)
        return;
    for (uint32_t i = 0; i < l->n; i++) {
        gw_frame_unref(l->v[i].f);
        free(l->v[i].sender);
    }
    free(l->v);
    free(l);
    s->waiting = NULL;
}

/* Deliver what waited, through the filter that is now known. */
void gw_mutes_release_held(gw *g, gw_sess *s)
{
    gw_held_list *l = s->waiting;
    if (!l)
        return;
    s->waiting = NULL;
    int64_t now = gw_wall_ms();
    for (uint32_t i = 0; i < l->n; i++) {
        gw_held *h = &l->v[i];
        if (h->ch == 0xFF || gw_mutes_allow(s->pe, h->sender, h->hash, h->ch, now))
            gw_send(s, h->f);
        else
            mb_counter_add(g->st.mute_filtered, 1);
    }
    s->waiting = l;
    gw_held_clear(s);
}

/* ---- loading ---- */

typedef struct load_job {
    gw_work w;
    gw *g;
    char **ids;
    uint16_t *gens; /* each player's mutes.gen when the batch was taken */
    size_t n;
    gw_mute_rec *recs;
    size_t nrecs;
    int rc;
    char msg[GW_STORE_MSG_MAX];
} load_job;

static void load_kick(gw *g);

static void load_run(gw_work *w)
{
    load_job *j = (load_job *)w;
    j->rc = gw_store_load(j->g->store, (const char *const *)j->ids, j->n, gw_wall_ms(), &j->recs,
                          &j->nrecs, j->msg);
}

static void apply_rec(gw *g, const gw_mute_rec *r)
{
    gw_pent *pe = gw_player_find(g, r->kind == GW_MUTE_GLOBAL ? r->target : r->owner);
    if (!pe || !pe->mutes.in_batch)
        return;
    gw_mutes *m = &pe->mutes;
    bool ok = true;
    if (r->kind == GW_MUTE_PLAYER) {
        ok = put_ent(m, r->target, 0, r->expires_ms, r->reason);
    } else if (r->kind == GW_MUTE_CHANNEL) {
        int ch = chan_index(r->target);
        ok = ch < 0 || put_ent(m, NULL, (unsigned)ch, r->expires_ms, NULL);
    } else {
        ok = put_global(m, r->owner, r->reason, r->created_ms, r->expires_ms);
    }
    if (!ok)
        gw_log("error", "event=mute_cache_alloc_failed player=%s", pe->id);
}

static void load_failed(gw *g, gw_pent *pe, const char *why)
{
    gw_mutes *m = &pe->mutes;
    mb_counter_add(g->st.mute_load_failures, 1);
    if (m->attempts < UINT8_MAX)
        m->attempts++;
    unsigned shift = m->attempts < 5 ? m->attempts : 5;
    m->retry_at_ms = gw_now_mono_ms(g) + (250u << shift); /* 0.5 s .. 8 s */
    if (m->state == GW_MUTES_LOADED)
        return; /* a reload: the old cache stays in use */
    m->state = GW_MUTES_FAILED;
    for (gw_sess *s = pe->sessions; s; s = s->pe_next) {
        if (m->attempts >= GW_MUTES_ATTEMPTS) {
            gw_log("warn", "event=mutes_unavailable player=%s attempts=%u closing=1", pe->id,
                   m->attempts);
            gw_close(s, 1011, "mute store unavailable");
            continue;
        }
        gw_sess_release(g, s); /* the welcome and the error go out; deliveries wait */
        if (m->attempts == 1) {
            char msg[GW_ERR_MSG_MAX];
            snprintf(msg, sizeof msg, "your mutes could not be loaded (%.90s); retrying", why);
            gw_send_error(g, s, NULL, GW_ERR_UNAVAILABLE, msg, 0);
        }
    }
}

static void load_done(gw_work *w)
{
    load_job *j = (load_job *)w;
    gw *g = j->g;
    /* mute_busy stays set until the end: requests made here only queue. */
    if (j->rc != 0 && !j->w.cancelled)
        gw_log("warn", "event=mute_load_failed players=%zu error=\"%s\"", j->n, j->msg);
    /* Fresh caches for the players of this batch, then the records. A
     * player whose cache changed here (a mute command of theirs completed)
     * since the batch was taken may have been read before that change was
     * stored: their result is dropped and they are loaded again. */
    for (size_t i = 0; i < j->n; i++) {
        gw_pent *pe = gw_player_find(g, j->ids[i]);
        if (!pe || !pe->mutes.in_batch || j->rc != 0 || j->w.cancelled)
            continue;
        if (pe->mutes.gen != j->gens[i]) {
            pe->mutes.in_batch = false;
            gw_mutes_request(g, pe);
            continue;
        }
        cache_clear(&pe->mutes);
    }
    if (j->rc == 0 && !j->w.cancelled)
        for (size_t i = 0; i < j->nrecs; i++)
            apply_rec(g, &j->recs[i]);
    for (size_t i = 0; i < j->n; i++) {
        gw_pent *pe = gw_player_find(g, j->ids[i]);
        free(j->ids[i]);
        if (!pe || !pe->mutes.in_batch)
            continue; /* gone, or a new entry for the same id (it has its own load) */
        pe->mutes.in_batch = false;
        if (j->w.cancelled)
            continue;
        if (j->rc != 0) {
            load_failed(g, pe, j->msg);
            continue;
        }
        pe->mutes.state = GW_MUTES_LOADED;
        pe->mutes.attempts = 0;
        mb_counter_add(g->st.mute_loads, 1);
        for (gw_sess *s = pe->sessions; s; s = s->pe_next)
            gw_sess_release_soon(g, s);
    }
    free(j->ids);
    free(j->gens);
    free(j->recs);
    free(j);
    g->mute_busy = false;
    if (!g->draining)
        load_kick(g);
}

static void on_mute_timer(uv_timer_t *t)
{
    load_kick(t->data);
}

void gw_mutes_init(gw *g)
{
    uv_timer_init(&g->loop, &g->mute_timer);
    g->mute_timer.data = g;
}

void gw_mutes_close(gw *g)
{
    if (!uv_is_closing((uv_handle_t *)&g->mute_timer))
        uv_close((uv_handle_t *)&g->mute_timer, NULL);
}

static void pending_push_front(gw *g, gw_pent *pe)
{
    pe->mutes.queued = true;
    pe->mutes.next = g->mute_pending;
    g->mute_pending = pe;
    if (!g->mute_pending_tail)
        g->mute_pending_tail = pe;
    g->mute_pending_n++;
}

static void load_kick(gw *g)
{
    if (g->mute_busy || !g->mute_pending || !g->store)
        return;
    /* Gather: players arriving together share a statement. A batch goes when
     * it is full or when its oldest player has waited GW_MUTES_GATHER_MS. */
    uint64_t now = gw_now_mono_ms(g), due = g->mute_pending_since + GW_MUTES_GATHER_MS;
    if (g->mute_pending_n < GW_MUTES_BATCH && now < due && !g->draining) {
        if (!uv_is_active((uv_handle_t *)&g->mute_timer))
            uv_timer_start(&g->mute_timer, on_mute_timer, due - now, 0);
        return;
    }
    uv_timer_stop(&g->mute_timer);
    load_job *j = calloc(1, sizeof *j);
    char **ids = calloc(GW_MUTES_BATCH, sizeof *ids);
    uint16_t *gens = calloc(GW_MUTES_BATCH, sizeof *gens);
    if (!j || !ids || !gens) {
        free(j);
        free(ids);
        free(gens);
        return; /* retried at the next request or tick */
    }
    j->gens = gens;
    j->w.run = load_run;
    j->w.done = load_done;
    j->g = g;
    j->ids = ids;
    while (g->mute_pending && j->n < GW_MUTES_BATCH) {
        gw_pent *pe = g->mute_pending;
        if (!(ids[j->n] = strdup(pe->id)))
            break;
        gens[j->n] = pe->mutes.gen;
        j->n++;
        g->mute_pending = pe->mutes.next;
        pe->mutes.next = NULL;
        pe->mutes.queued = false;
        pe->mutes.in_batch = true;
        g->mute_pending_n--;
    }
    if (!g->mute_pending)
        g->mute_pending_tail = NULL;
    else
        g->mute_pending_since = now; /* the rest go with the next batch */
    if (!j->n || !gw_work_submit(g->store_work, &j->w)) {
        /* Back to the front of the list: nothing is lost. */
        for (size_t i = j->n; i-- > 0;) {
            gw_pent *pe = gw_player_find(g, ids[i]);
            if (pe)
                pe->mutes.in_batch = false;
            if (pe && !pe->mutes.queued)
                pending_push_front(g, pe);
            free(ids[i]);
        }
        free(ids);
        free(gens);
        free(j);
        return;
    }
    g->mute_busy = true;
}

void gw_mutes_request(gw *g, gw_pent *pe)
{
    gw_mutes *m = &pe->mutes;
    if (!g->store) { /* no store configured: nothing to filter */
        m->state = GW_MUTES_LOADED;
        return;
    }
    if (!m->queued) {
        m->queued = true;
        m->next = NULL;
        if (g->mute_pending_tail) {
            g->mute_pending_tail->mutes.next = pe;
        } else {
            g->mute_pending = pe;
            g->mute_pending_since = gw_now_mono_ms(g);
        }
        g->mute_pending_tail = pe;
        g->mute_pending_n++;
    }
    load_kick(g);
}

void gw_mutes_forget(gw *g, gw_pent *pe)
{
    if (!pe->mutes.queued)
        return;
    gw_pent **pp = &g->mute_pending, *prev = NULL;
    while (*pp && *pp != pe) {
        prev = *pp;
        pp = &(*pp)->mutes.next;
    }
    if (*pp) {
        *pp = pe->mutes.next;
        if (g->mute_pending_tail == pe)
            g->mute_pending_tail = prev;
        g->mute_pending_n--;
    }
    pe->mutes.queued = false;
    pe->mutes.next = NULL;
}

/* ---- purging expired mutes ---- */

/* Expired mutes stop applying at once (expiry is checked at delivery) but
 * their rows stay in the store until a purge deletes them: every
 * [store] purge_interval, on a store worker, in statements of at most
 * PURGE_BATCH rows per table (each holds the database briefly), until a
 * round finds nothing more or PURGE_ROUNDS rounds have run. Gateways that
 * share a database all purge; deleting what is already gone is harmless. */
#define PURGE_BATCH  5000
#define PURGE_ROUNDS 200

typedef struct purge_job {
    gw_work w;
    gw *g;
    int64_t before_ms;
    uint64_t removed;
    int rc;
    char msg[GW_STORE_MSG_MAX];
} purge_job;

static void purge_run(gw_work *w)
{
    purge_job *j = (purge_job *)w;
    for (int i = 0; i < PURGE_ROUNDS; i++) {
        uint64_t n = 0;
        j->rc = gw_store_purge(j->g->store, j->before_ms, PURGE_BATCH, &n, j->msg);
        j->removed += n;
        if (j->rc != 0 || n == 0)
            break;
    }
}

static void purge_done(gw_work *w)
{
    purge_job *j = (purge_job *)w;
    gw *g = j->g;
    g->purge_busy = false;
    mb_counter_add(g->st.mutes_purged, j->removed);
    if (j->rc != 0 && !j->w.cancelled)
        gw_log("warn", "event=mute_purge_failed removed=%llu error=\"%s\"",
               (unsigned long long)j->removed, j->msg);
    else if (j->removed)
        gw_log("info", "event=mutes_purged removed=%llu", (unsigned long long)j->removed);
    free(j);
}

static void purge_kick(gw *g)
{
    uint64_t now = gw_now_mono_ms(g);
    if (!g->store || !g->cfg->purge_interval_ms || g->purge_busy || g->draining ||
        now < g->purge_next_ms)
        return;
    g->purge_next_ms = now + g->cfg->purge_interval_ms;
    purge_job *j = calloc(1, sizeof *j);
    if (!j)
        return; /* tried again at the next interval */
    j->w.run = purge_run;
    j->w.done = purge_done;
    j->g = g;
    j->before_ms = gw_wall_ms();
    if (!gw_work_submit(g->store_work, &j->w)) {
        free(j);
        return;
    }
    g->purge_busy = true;
}

void gw_mutes_tick(gw *g)
{
    purge_kick(g);
    uint64_t now = gw_now_mono_ms(g);
    for (gw_map_ent *e = NULL; (e = gw_map_next(&g->players, e));) {
        gw_pent *pe = e->val;
        if (pe->n && pe->mutes.attempts && !pe->mutes.queued && !pe->mutes.in_batch &&
            pe->mutes.retry_at_ms <= now)
            gw_mutes_request(g, pe);
    }
    load_kick(g);
}

void gw_mutes_reload_all(gw *g)
{
    for (gw_map_ent *e = NULL; (e = gw_map_next(&g->players, e));) {
        gw_pent *pe = e->val;
        if (pe->n)
            gw_mutes_request(g, pe);
    }
}

void gw_mutes_changed(gw *g, const char *player_id)
{
    gw_pent *pe = gw_player_find(g, player_id);
    if (pe && pe->n)
        gw_mutes_request(g, pe);
}

/* ---- commands ---- */

typedef struct mute_job {
    gw_work w;
    gw *g;
    gw_sess *s;
    char *id;
    gw_cmd_type type;
    gw_mute_rec rec;
    bool del;
    bool existed;
    int rc;
    char msg[GW_STORE_MSG_MAX];
} mute_job;

static void mute_run(gw_work *w)
{
    mute_job *j = (mute_job *)w;
    if (j->del)
        j->rc = gw_store_del(j->g->store, j->rec.kind, j->rec.owner, j->rec.target, gw_wall_ms(),
                             &j->existed, j->msg);
    else
        j->rc = gw_store_put(j->g->store, &j->rec, j->msg);
}

/* Announce a change: the gateways that have `player` load them again. */
static void announce(gw *g, const gw_mute_rec *r, bool del)
{
    const char *player = r->kind == GW_MUTE_GLOBAL ? r->target : r->owner;
    gw_buf data = {0};
    gw_buf_puts(&data, "{\"kind\":");
    static const char *const kinds[] = {"player", "channel", "global"};
    gw_buf_jstr(&data, kinds[r->kind], strlen(kinds[r->kind]));
    gw_buf_puts(&data, ",\"action\":");
    gw_buf_puts(&data, del ? "\"removed\"" : "\"added\"");
    gw_buf_puts(&data, ",\"owner\":");
    gw_buf_jstr(&data, r->owner, strlen(r->owner));
    gw_buf_puts(&data, ",\"target\":");
    gw_buf_jstr(&data, r->target, strlen(r->target));
    gw_buf_puts(&data, ",\"expires_ms\":");
    gw_buf_i64(&data, r->expires_ms);
    gw_buf_puts(&data, "}");
    char subj[300];
    snprintf(subj, sizeof subj, "mutes.changed.%s", player);
    mb_event_msg ev = {.event_type = "mutes_changed",
                       .event_data = data.p,
                       .event_data_len = data.len,
                       .player_id = player,
                       .sender_id = r->owner};
    mb_err err = {0};
    if (data.oom || mb_client_publish_event(g->nats, subj, &ev, NULL, NULL, &err) != MB_OK)
        gw_log("warn", "event=mute_announce_failed subject=%s error=\"%s\"", subj,
               data.oom ? "out of memory" : err.msg);
    gw_buf_free(&data);
}

/* The store has it: update the local cache at once, announce, acknowledge. */
static void mute_done(gw_work *w)
{
    mute_job *j = (mute_job *)w;
    gw *g = j->g;
    gw_sess *s = j->s;
    if (j->rc != 0) {
        mb_counter_add(g->st.mute_store_errors, 1);
        if (!s->closed && !j->w.cancelled) {
            char m[GW_ERR_MSG_MAX];
            snprintf(m, sizeof m, "mute store: %.120s; nothing changed", j->msg);
            gw_send_error(g, s, j->id, GW_ERR_UNAVAILABLE, m, 0);
        }
    } else if (!j->w.cancelled) {
        const gw_mute_rec *r = &j->rec;
        gw_pent *pe = gw_player_find(g, r->kind == GW_MUTE_GLOBAL ? r->target : r->owner);
        if (pe && pe->mutes.state == GW_MUTES_LOADED) {
            gw_mutes *m = &pe->mutes;
            m->gen++;
            if (r->kind == GW_MUTE_GLOBAL) {
                if (j->del) {
                    global_free(m->global);
                    m->global = NULL;
                } else {
                    put_global(m, r->owner, r->reason, r->created_ms, r->expires_ms);
                }
            } else {
                int ch = r->kind == GW_MUTE_CHANNEL ? chan_index(r->target) : 0;
                const char *t = r->kind == GW_MUTE_PLAYER ? r->target : NULL;
                if (j->del) {
                    int i = find_ent(m, t, (unsigned)ch);
                    if (i >= 0)
                        remove_ent(m, i);
                } else if (ch >= 0) {
                    put_ent(m, t, (unsigned)ch, r->expires_ms, r->reason);
                }
            }
        }
        announce(g, r, j->del);
        if (!s->closed) {
            gw_buf *b = &g->scratch;
            gw_env_begin(b, "ack", gw_wall_ms(), NULL, NULL);
            gw_buf_puts(b, "{");
            if (j->id) {
                gw_buf_key(b, "id");
                gw_buf_jstr(b, j->id, strlen(j->id));
            }
            gw_buf_puts(b, "}}");
            gw_send_scratch(s, GW_CRITICAL);
        }
    }
    gw_sess_unref(s);
    free(j->id);
    free(j);
}

static void mutes_list(gw *g, gw_sess *s, const gw_cmd *c)
{
    const gw_mutes *m = &s->pe->mutes;
    int64_t now = gw_wall_ms();
    char ts[40];
    gw_buf *b = &g->scratch;
    gw_env_begin(b, "mutes", now, NULL, s->pe->id);
    gw_buf_puts(b, "{");
    if (c->id) {
        gw_buf_key(b, "id");
        gw_buf_jstr(b, c->id, strlen(c->id));
        gw_buf_puts(b, ",");
    }
    gw_buf_puts(b, "\"players\":[");
    bool first = true;
    for (uint16_t i = 0; i < m->n; i++) {
        const gw_mute_ent *e = &m->e[i];
        if (!e->target || !in_force(e->expires_ms, now))
            continue;
        gw_buf_puts(b, first ? "{\"target\":" : ",{\"target\":");
        first = false;
        gw_buf_jstr(b, e->target, strlen(e->target));
        gw_buf_puts(b, ",\"expires_at\":");
        if (e->expires_ms) {
            mb_timestamp_format(e->expires_ms, ts);
            gw_buf_jstr(b, ts, strlen(ts));
        } else {
            gw_buf_puts(b, "null");
        }
        gw_buf_puts(b, ",\"reason\":");
        if (e->reason)
            gw_buf_jstr(b, e->reason, strlen(e->reason));
        else
            gw_buf_puts(b, "null");
        gw_buf_puts(b, "}");
    }
    gw_buf_puts(b, "],\"channels\":[");
    first = true;
    for (uint16_t i = 0; i < m->n; i++) {
        const gw_mute_ent *e = &m->e[i];
        if (e->target || !in_force(e->expires_ms, now))
            continue;
        if (!first)
            gw_buf_puts(b, ",");
        first = false;
        const char *name = gw_chan_names[e->channel];
        gw_buf_jstr(b, name, strlen(name));
    }
    gw_buf_puts(b, "],\"global\":");
    if (m->global && in_force(m->global->expires_ms, now)) {
        gw_buf_puts(b, "{\"muted_by\":");
        gw_buf_jstr(b, m->global->by, strlen(m->global->by));
        gw_buf_puts(b, ",\"expires_at\":");
        if (m->global->expires_ms) {
            mb_timestamp_format(m->global->expires_ms, ts);
            gw_buf_jstr(b, ts, strlen(ts));
        } else {
            gw_buf_puts(b, "null");
        }
        gw_buf_puts(b, ",\"reason\":");
        if (m->global->reason)
            gw_buf_jstr(b, m->global->reason, strlen(m->global->reason));
        else
            gw_buf_puts(b, "null");
        gw_buf_puts(b, "}");
    } else {
        gw_buf_puts(b, "null");
    }
    gw_buf_puts(b, "}}");
    gw_send_scratch(s, GW_CRITICAL);
}

void gw_mutes_cmd(gw *g, gw_sess *s, const gw_cmd *c)
{
    bool global = c->type == GW_CMD_MUTE_GLOBAL || c->type == GW_CMD_UNMUTE_GLOBAL;
    if (global && !s->admin) {
        gw_send_error(g, s, c->id, GW_ERR_FORBIDDEN, "global mutes are for admins", 0);
        return;
    }
    if (!g->store) {
        gw_send_error(g, s, c->id, GW_ERR_UNAVAILABLE, "no mute store is configured", 0);
        return;
    }
    if (s->pe->mutes.state != GW_MUTES_LOADED) {
        gw_send_error(g, s, c->id, GW_ERR_UNAVAILABLE, "your mutes are not loaded yet", 0);
        return;
    }
    if (c->type == GW_CMD_MUTES) {
        mutes_list(g, s, c);
        return;
    }
    if (c->target && strcmp(c->target, s->pe->id) == 0) {
        gw_send_error(g, s, c->id, GW_ERR_BAD_REQUEST, "target: you cannot mute yourself", 0);
        return;
    }
    bool adding = c->type == GW_CMD_MUTE || c->type == GW_CMD_MUTE_CHANNEL;
    if (adding && s->pe->mutes.n >= GW_MUTES_PER_PLAYER_MAX &&
        find_ent(&s->pe->mutes, c->type == GW_CMD_MUTE ? c->target : NULL,
                 c->channel ? (unsigned)chan_index(c->channel) : 0) < 0) {
        char m[GW_ERR_MSG_MAX];
        snprintf(m, sizeof m, "at most %d mutes (unmute someone first)", GW_MUTES_PER_PLAYER_MAX);
        gw_send_error(g, s, c->id, GW_ERR_BAD_REQUEST, m, 0);
        return;
    }
    if (global) {
        gw_pent *t = gw_player_find(g, c->target);
        for (gw_sess *o = t ? t->sessions : NULL; o; o = o->pe_next)
            if (o->admin) {
                gw_send_error(g, s, c->id, GW_ERR_BAD_REQUEST,
                              "target: admins cannot be muted globally", 0);
                return;
            }
    }
    mute_job *j = calloc(1, sizeof *j);
    if (!j || (c->id && !(j->id = strdup(c->id)))) {
        free(j);
        gw_send_error(g, s, c->id, GW_ERR_INTERNAL, "out of memory", 0);
        return;
    }
    int64_t now = gw_wall_ms();
    gw_mute_rec *r = &j->rec;
    r->created_ms = now;
    r->expires_ms = c->minutes ? now + c->minutes * 60000 : 0;
    switch (c->type) {
    case GW_CMD_MUTE:
    case GW_CMD_UNMUTE:
        r->kind = GW_MUTE_PLAYER;
        snprintf(r->owner, sizeof r->owner, "%s", s->pe->id);
        snprintf(r->target, sizeof r->target, "%s", c->target);
        break;
    case GW_CMD_MUTE_CHANNEL:
    case GW_CMD_UNMUTE_CHANNEL:
        r->kind = GW_MUTE_CHANNEL;
        snprintf(r->owner, sizeof r->owner, "%s", s->pe->id);
        snprintf(r->target, sizeof r->target, "%s", c->channel);
        break;
    default:
        r->kind = GW_MUTE_GLOBAL;
        snprintf(r->owner, sizeof r->owner, "%s", s->pe->id);
        snprintf(r->target, sizeof r->target, "%s", c->target);
        break;
    }
    if (c->reason)
        snprintf(r->reason, sizeof r->reason, "%s", c->reason);
    j->del = c->type == GW_CMD_UNMUTE || c->type == GW_CMD_UNMUTE_CHANNEL ||
             c->type == GW_CMD_UNMUTE_GLOBAL;
    j->type = c->type;
    j->w.run = mute_run;
    j->w.done = mute_done;
    j->g = g;
    j->s = s;
    s->refs++;
    if (!gw_work_submit(g->store_work, &j->w)) {
        s->refs--;
        free(j->id);
        free(j);
        gw_send_error(g, s, c->id, GW_ERR_UNAVAILABLE, "too many requests in flight; try again", 0);
    }
}
