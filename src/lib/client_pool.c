/* SPDX-License-Identifier: MIT */
/*
 * client_pool: the client's N natsConnections.
 *
 * Each slot has its own natsOptions (servers, name "<name>-<i>", reconnect,
 * TLS, auth, callbacks) and its own connection; nats.c reconnects a
 * connection that loses its server. A slot whose connection could not be
 * made at start, or that nats.c closed for good, is repaired by the client
 * thread on the internal timer queue every reconnect_wait_ms (with jitter)
 * until it connects; each repair is an MB_CLIENT_EV_POOL event.
 *
 * Picking: publishes (and subscriptions, requests) hash their ordering key
 * (FNV-1a) onto the slots and take the first live one from there, so one
 * key's messages go through one connection while it is up. A slot is live
 * when nats.c says its connection is CONNECTED: a reconnecting connection is
 * never handed out (publishes then fail with MB_ENOCONN and are retried by
 * the client instead of piling up in nats.c's reconnect buffer).
 *
 * Threads: mb__pool_get/put from any thread (a slot's rwlock is held shared
 * while its connection is used); start, repair and close on the creating or
 * client thread, which take a slot's lock exclusively to change it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "client_int.h"

uint32_t mb__pool_hash(const char *s, size_t len)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 16777619u;
    }
    return h;
}

static bool nc_live(natsConnection *nc)
{
    return nc && natsConnection_Status(nc) == NATS_CONN_STATUS_CONNECTED;
}

mb__conn *mb__pool_get(mb_client *c, uint32_t hash, natsConnection **nc)
{
    size_t n = c->npool;
    for (size_t i = 0; i < n; i++) {
        mb__conn *k = &c->conns[(hash + i) % n];
        pthread_rwlock_rdlock(&k->lock);
        /* The flag, not natsConnection_Status (a mutex on every publish): it
         * follows the status through nats.c's callbacks, a moment later. A
         * publish in that moment goes to nats.c's reconnect buffer, as one
         * made just before the disconnect would. */
        if (k->nc && atomic_load_explicit(&k->connected, memory_order_acquire)) {
            *nc = k->nc;
            return k;
        }
        pthread_rwlock_unlock(&k->lock);
    }
    *nc = NULL;
    return NULL;
}

void mb__pool_put(mb__conn *k)
{
    if (k)
        pthread_rwlock_unlock(&k->lock);
}

void mb__grave_put(mb__conn *k, natsSubscription *ns)
{
    mb__grave *g = mb__malloc(sizeof *g);
    if (!g) {
        /* Out of memory: wait here for what the graveyard waits for, one
         * round trip on the connection (a closed one has no read loop left),
         * then destroy it. Only a server frozen for the whole second leaves
         * the small risk of nats.c 3.4, rather than a leak. */
        pthread_rwlock_rdlock(&k->lock);
        if (k->nc)
            (void)natsConnection_FlushTimeout(k->nc, 1000);
        pthread_rwlock_unlock(&k->lock);
        natsSubscription_Destroy(ns);
        return;
    }
    g->ns = ns;
    pthread_mutex_lock(&k->grave_lock);
    g->next = k->grave;
    k->grave = g;
    pthread_mutex_unlock(&k->grave_lock);
}

mb__grave *mb__grave_take(mb__conn *k)
{
    pthread_mutex_lock(&k->grave_lock);
    mb__grave *list = k->grave;
    k->grave = NULL;
    pthread_mutex_unlock(&k->grave_lock);
    return list;
}

void mb__grave_bury(mb__grave *list)
{
    while (list) {
        mb__grave *next = list->next;
        natsSubscription_Destroy(list->ns);
        mb__free(list);
        list = next;
    }
}

void mb__grave_return(mb__conn *k, mb__grave *list)
{
    if (!list)
        return;
    mb__grave *tail = list;
    while (tail->next)
        tail = tail->next;
    pthread_mutex_lock(&k->grave_lock);
    tail->next = k->grave;
    k->grave = list;
    pthread_mutex_unlock(&k->grave_lock);
}

size_t mb__pool_live(mb_client *c)
{
    size_t live = 0;
    for (size_t i = 0; i < c->npool; i++) {
        mb__conn *k = &c->conns[i];
        pthread_rwlock_rdlock(&k->lock);
        bool up = nc_live(k->nc);
        pthread_rwlock_unlock(&k->lock);
        mb_gauge_set(k->up, up);
        live += up;
    }
    mb_gauge_set(c->m_live, (int64_t)live);
    return live;
}

#define NC_TRY(call, what)                                                                         \
    do {                                                                                           \
        natsStatus s_ = (call);                                                                    \
        if (s_ != NATS_OK) {                                                                       \
            mb_status st_ = mb__client_nats_err(s_, err, what);                                    \
            natsOptions_Destroy(no);                                                               \
            return st_;                                                                            \
        }                                                                                          \
    } while (0)

static bool any_tls_url(const mb_client_opts *o)
{
    for (size_t i = 0; i < o->nservers; i++)
        if (strncmp(o->servers[i], "tls://", 6) == 0)
            return true;
    return false;
}

static mb_status build_opts(mb_client *c, mb__conn *k, natsOptions **out, mb_err *err)
{
    const mb_client_opts *o = &c->o;
    natsOptions *no = NULL;
    if (natsOptions_Create(&no) != NATS_OK)
        return mb_err_set(err, MB_ENOMEM, "cannot create nats options");
    char name[96];
    snprintf(name, sizeof name, "%s-%d", c->name, k->index);
    NC_TRY(natsOptions_SetServers(no, (const char **)o->servers, (int)o->nservers), "server URLs");
    NC_TRY(natsOptions_SetName(no, name), "client name");
    NC_TRY(natsOptions_SetMaxReconnect(no, o->max_reconnect), "max_reconnect");
    NC_TRY(natsOptions_SetReconnectWait(no, (int64_t)o->reconnect_wait_ms), "reconnect_wait_ms");
    NC_TRY(natsOptions_SetReconnectJitter(
               no, (int64_t)o->reconnect_jitter_ms,
               (int64_t)(o->reconnect_jitter_ms > 1000 ? o->reconnect_jitter_ms : 1000)),
           "reconnect_jitter_ms");
    NC_TRY(natsOptions_SetReconnectBufSize(no, (int)o->reconnect_buf_bytes), "reconnect_buf_bytes");
    if (o->io_buf_bytes)
        NC_TRY(natsOptions_SetIOBufSize(no, (int)o->io_buf_bytes), "io_buf_bytes");
    NC_TRY(natsOptions_SetTimeout(no, (int64_t)o->connect_timeout_ms), "connect_timeout_ms");
    if (o->tls.enabled || any_tls_url(o)) {
        NC_TRY(natsOptions_SetSecure(no, true), "TLS");
        if (o->tls.ca_file)
            NC_TRY(natsOptions_LoadCATrustedCertificates(no, o->tls.ca_file), "TLS ca_file");
        if (o->tls.cert_file)
            NC_TRY(natsOptions_LoadCertificatesChain(no, o->tls.cert_file, o->tls.key_file),
                   "TLS cert_file/key_file");
        if (o->tls.hostname)
            NC_TRY(natsOptions_SetExpectedHostname(no, o->tls.hostname), "TLS hostname");
        if (o->tls.skip_verify)
            NC_TRY(natsOptions_SkipServerVerification(no, true), "TLS skip_verify");
    }
    if (o->auth.user)
        NC_TRY(natsOptions_SetUserInfo(no, o->auth.user, o->auth.password), "user/password");
    if (o->auth.token)
        NC_TRY(natsOptions_SetToken(no, o->auth.token), "token");
    if (o->auth.nkey_seed_file)
        NC_TRY(natsOptions_SetNKeyFromSeed(no, o->auth.nkey_public, o->auth.nkey_seed_file),
               "nkey_seed_file");
    if (o->auth.creds_file)
        NC_TRY(natsOptions_SetUserCredentialsFromFiles(no, o->auth.creds_file, NULL), "creds_file");
    if (o->send_asap)
        NC_TRY(natsOptions_SetSendAsap(no, true), "send_asap");
    if (o->no_echo)
        NC_TRY(natsOptions_SetNoEcho(no, true), "no_echo");
    if (o->shared_delivery)
        NC_TRY(natsOptions_UseGlobalMessageDelivery(no, true), "shared_delivery");
    mb__events_set_callbacks(k, no);
    *out = no;
    return MB_OK;
}

/* Connect slot k (its lock is not held: only the creating thread or the client
 * thread, one at a time, connects a slot, and nobody uses a NULL nc). */
static mb_status connect_slot(mb_client *c, mb__conn *k, mb_err *err)
{
    natsConnection *nc = NULL;
    natsStatus s = natsConnection_Connect(&nc, k->opts);
    if (s != NATS_OK) {
        mb_counter_add(c->m_connect_fail, 1);
        /* With TLS 1.3 a server that wants a client certificate (or refuses
         * the one given) closes the connection just after the handshake, and
         * nats.c reports a protocol error ("Expected 'PONG', got ''"). It is a
         * TLS configuration problem, not a reachability one: retrying cannot
         * help. */
        const char *last = nats_GetLastError(NULL);
        if ((c->o.tls.enabled || any_tls_url(&c->o)) && s == NATS_PROTOCOL_ERROR && last &&
            strstr(last, "Expected 'PONG', got ''") != NULL)
            return mb_err_set(err, MB_ETLS,
                              "connect: the server closed the connection right after the TLS "
                              "handshake: it probably requires a client certificate "
                              "(tls cert_file/key_file) or refused the one given");
        return mb__client_nats_err(s, err, "connect");
    }
    atomic_fetch_add(&c->conns_open, 1);
    pthread_rwlock_wrlock(&k->lock);
    k->nc = nc;
    atomic_store(&k->connected, true); /* from here the callbacks keep it current */
    k->health_failures = 0;
    pthread_rwlock_unlock(&k->lock);
    size_t maxp = (size_t)natsConnection_GetMaxPayload(nc);
    if (maxp > 0 && maxp < c->max_payload)
        c->max_payload = maxp; /* only ever lowered; a racy read sees either value */
    return MB_OK;
}

mb_status mb__pool_start(mb_client *c, mb_err *err)
{
    mb_err last = {0};
    size_t up = 0;
    for (size_t i = 0; i < c->npool; i++) {
        mb__conn *k = &c->conns[i];
        mb_status st = build_opts(c, k, &k->opts, err);
        if (st != MB_OK)
            return st;
        mb_err e = {0};
        st = connect_slot(c, k, &e);
        if (st == MB_OK) {
            up++;
            continue;
        }
        mb__client_log(c, "pool connection %zu of %zu failed: %s", i + 1, c->npool, e.msg);
        last = e;
        if (st == MB_EAUTH || st == MB_ETLS || st == MB_EINVAL)
            break; /* every other slot would fail the same way */
    }
    if (up == 0 && !(c->o.start_disconnected && last.code != MB_EAUTH && last.code != MB_ETLS &&
                     last.code != MB_EINVAL)) {
        char servers[512] = "";
        size_t off = 0;
        for (size_t i = 0; i < c->o.nservers && off < sizeof servers; i++)
            off += (size_t)snprintf(servers + off, sizeof servers - off, "%s%s", i ? ", " : "",
                                    c->o.servers[i]);
        mb_status code = last.code == MB_EAUTH || last.code == MB_ETLS ? last.code : MB_ENOCONN;
        return mb_err_set(err, code, "cannot connect to %s: %s", servers,
                          last.msg[0] ? last.msg : "unknown error");
    }
    if (up < c->npool) {
        mb__client_log(c, "started with %zu of %zu pool connections up; repairing the rest", up,
                       c->npool);
        mb__pool_schedule_repair(c);
    }
    mb__pool_live(c);
    return MB_OK;
}

static void repair_timer(void *arg, mb_timer_event ev)
{
    mb_client *c = arg;
    if (ev != MB_TIMER_FIRED)
        return;
    pthread_mutex_lock(&c->lock);
    c->repair_pending = false;
    pthread_mutex_unlock(&c->lock);
    mb__pool_repair(c);
}

void mb__pool_schedule_repair(mb_client *c)
{
    pthread_mutex_lock(&c->lock);
    bool go = !c->closing && !c->repair_pending;
    if (go)
        c->repair_pending = true;
    pthread_mutex_unlock(&c->lock);
    if (!go)
        return;
    pthread_mutex_lock(&c->rng_lock);
    uint64_t jitter =
        c->o.reconnect_jitter_ms ? mb_rng_range(&c->rng, 0, c->o.reconnect_jitter_ms) : 0;
    pthread_mutex_unlock(&c->rng_lock);
    uint64_t delay_ns = (c->o.reconnect_wait_ms + jitter) * 1000000u;
    if (mb_timerq_add(c->internal_q, delay_ns, repair_timer, c, NULL) != MB_OK) {
        pthread_mutex_lock(&c->lock);
        c->repair_pending = false;
        pthread_mutex_unlock(&c->lock);
    }
}

void mb__pool_repair(mb_client *c)
{
    bool missing = false;
    for (size_t i = 0; i < c->npool; i++) {
        mb__conn *k = &c->conns[i];
        pthread_mutex_lock(&c->lock);
        bool closing = c->closing;
        pthread_mutex_unlock(&c->lock);
        if (closing)
            return;
        /* A slot is repaired when it has no connection, or nats.c closed its
         * connection for good (e.g. max_reconnect reached). */
        natsConnection *old = NULL;
        pthread_rwlock_wrlock(&k->lock);
        if (k->nc && natsConnection_IsClosed(k->nc)) {
            old = k->nc;
            k->nc = NULL;
            atomic_store(&k->connected, false);
        }
        bool need = k->nc == NULL;
        pthread_rwlock_unlock(&k->lock);
        if (old) {
            natsConnection_Destroy(old); /* its closed callback has run */
            /* Its read loop has ended: what it kept can go. Those of a
             * connection before it too; none of the new one's exist yet. */
            mb__grave_bury(mb__grave_take(k));
        }
        if (!need)
            continue;
        mb_err e = {0};
        if (connect_slot(c, k, &e) == MB_OK) {
            mb_counter_add(c->m_repairs, 1);
            mb__client_log(c, "pool connection %d repaired", k->index);
            mb__event_push(c, MB_CLIENT_EV_POOL, k->index, MB_OK, "pool connection %d is up",
                           k->index);
        } else {
            missing = true;
            pthread_mutex_lock(&c->lock);
            c->last_error = e.code;
            snprintf(c->last_error_msg, sizeof c->last_error_msg, "%s", e.msg);
            pthread_mutex_unlock(&c->lock);
            mb__client_log(c, "pool connection %d: repair failed: %s", k->index, e.msg);
        }
    }
    mb__pool_live(c);
    if (missing)
        mb__pool_schedule_repair(c);
}

void mb__pool_close(mb_client *c)
{
    /* Drain every connection (subscriptions first, then pending publishes),
     * bounded by 5 s; a connection that cannot drain is closed. */
    for (size_t i = 0; i < c->npool; i++) {
        mb__conn *k = &c->conns[i];
        pthread_rwlock_rdlock(&k->lock);
        natsConnection *nc = k->nc;
        if (nc && !natsConnection_IsClosed(nc)) {
            if (natsConnection_Status(nc) != NATS_CONN_STATUS_CONNECTED ||
                natsConnection_DrainTimeout(nc, 5000) != NATS_OK)
                natsConnection_Close(nc);
        }
        pthread_rwlock_unlock(&k->lock);
    }
}
