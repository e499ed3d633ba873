/* SPDX-License-Identifier: MIT */
/*
 * store.c - the mute store's common half (the contract is store.h; the
 * backend table is store_int.h): options, argument checks, the connection
 * pool, error messages and the statement counter. The SQL lives in the
 * backends, store_sqlite.c and store_pg.c.
 *
 * Pool: `conns` slots, each holding one backend connection opened by
 * gw_store_open (the first one also creates or migrates the schema). A call
 * takes the lowest free slot under a mutex, waiting on a condition variable
 * while all are busy, runs one backend function on it without holding the
 * mutex, and gives it back. So at most `conns` statements run at once and a
 * connection is only ever used by one thread at a time.
 *
 * Arguments are checked here, before a slot is taken, so that both backends
 * refuse the same inputs the same way: ids and channel names are 1..128 bytes
 * of valid UTF-8, a reason at most 800 bytes of valid UTF-8 (PostgreSQL
 * would refuse invalid UTF-8 where SQLite would store it), times not
 * negative, at most 1000 ids per load, purge's max_rows 1..100000.
 *
 * Threads: every function but open and close may be called from any number
 * of threads at once (workers.c's pool); open and close from one thread with
 * no call in progress.
 */
#include "store_int.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct gw_store {
    const gw__store_ops *ops;
    unsigned nconns;
    gw__store_conn **conns;
    bool *busy;
    pthread_mutex_t mu;
    pthread_cond_t freed;
    _Atomic uint64_t queries;
};

void gw__store_why(char *why, const char *fmt, ...)
{
    char tmp[GW_STORE_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0)
        snprintf(tmp, sizeof tmp, "(unformattable message)");
    size_t o = 0;
    for (const char *p = tmp; *p && o + 1 < GW_STORE_MSG_MAX; p++) {
        char ch = (unsigned char)*p < 0x20 || *p == 0x7f ? ' ' : *p;
        if (ch == ' ' && (o == 0 || why[o - 1] == ' '))
            continue;
        why[o++] = ch;
    }
    while (o > 0 && why[o - 1] == ' ')
        o--;
    why[o] = '\0';
}

/* Compose "<backend>: <op>: <detail>" into msg (may be NULL); a detail too
 * long for the buffer is cut and ends in "...". */
static void report(char *msg, const char *backend, const char *op, const char *detail)
{
    if (!msg)
        return;
    int n = snprintf(msg, GW_STORE_MSG_MAX, "%s: %s: %s", backend, op, detail);
    if (n >= GW_STORE_MSG_MAX)
        memcpy(msg + GW_STORE_MSG_MAX - 4, "...", 4);
}

/* Whether s[0..len) is well-formed UTF-8 (no overlongs, no surrogates, at
 * most U+10FFFF). */
static bool utf8_ok(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s, *end = p + len;
    while (p < end) {
        unsigned c = *p;
        size_t k;
        unsigned min;
        if (c < 0x80) {
            p++;
            continue;
        } else if (c >= 0xc2 && c <= 0xdf) {
            k = 1;
            min = 0x80;
        } else if (c >= 0xe0 && c <= 0xef) {
            k = 2;
            min = 0x800;
        } else if (c >= 0xf0 && c <= 0xf4) {
            k = 3;
            min = 0x10000;
        } else {
            return false;
        }
        if ((size_t)(end - p) < k + 1)
            return false;
        unsigned cp = c & (0x3fu >> k);
        for (size_t i = 1; i <= k; i++) {
            if ((p[i] & 0xc0) != 0x80)
                return false;
            cp = (cp << 6) | (p[i] & 0x3fu);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        p += k + 1;
    }
    return true;
}

/* An id or channel name: 1..GW_STORE_ID_MAX bytes of UTF-8. NULL or a reason
 * in why. */
static bool id_ok(const char *what, const char *s, char *why)
{
    if (!s) {
        gw__store_why(why, "%s is NULL", what);
        return false;
    }
    size_t len = strnlen(s, GW_STORE_ID_MAX + 1);
    if (len == 0 || len > GW_STORE_ID_MAX) {
        gw__store_why(why, "%s must be 1..%d bytes", what, GW_STORE_ID_MAX);
        return false;
    }
    if (!utf8_ok(s, len)) {
        gw__store_why(why, "%s is not valid UTF-8", what);
        return false;
    }
    return true;
}

static bool kind_ok(gw_mute_kind kind)
{
    return kind == GW_MUTE_PLAYER || kind == GW_MUTE_CHANNEL || kind == GW_MUTE_GLOBAL;
}

int gw__store_recs_add(gw__store_recs *rs, int kind, const char *owner, const char *target,
                       int64_t created_ms, int64_t expires_ms, const char *reason, char *why)
{
    if (!kind_ok((gw_mute_kind)kind) || !owner || !target)
        return 0;
    size_t lo = strlen(owner), lt = strlen(target);
    if (lo == 0 || lo > GW_STORE_ID_MAX || lt == 0 || lt > GW_STORE_ID_MAX)
        return 0;
    if (rs->n == rs->cap) {
        if (rs->cap >= GW__STORE_LOAD_MAX_RECS) {
            gw__store_why(why, "more than %d mutes for these ids", GW__STORE_LOAD_MAX_RECS);
            return -1;
        }
        size_t cap = rs->cap ? rs->cap * 2 : 16;
        if (cap > GW__STORE_LOAD_MAX_RECS)
            cap = GW__STORE_LOAD_MAX_RECS;
        gw_mute_rec *v = realloc(rs->v, cap * sizeof *v);
        if (!v) {
            gw__store_why(why, "out of memory");
            return -1;
        }
        rs->v = v;
        rs->cap = cap;
    }
    gw_mute_rec *r = &rs->v[rs->n++];
    memset(r, 0, sizeof *r);
    r->kind = (gw_mute_kind)kind;
    memcpy(r->owner, owner, lo);
    memcpy(r->target, target, lt);
    r->created_ms = created_ms;
    r->expires_ms = expires_ms < 0 ? 0 : expires_ms;
    if (reason) {
        size_t lr = strlen(reason);
        if (lr > GW_STORE_REASON_MAX) {
            lr = GW_STORE_REASON_MAX;
            /* Do not cut a character in half: back up over continuation
             * bytes to the start of the character that did not fit. */
            while (lr > 0 && ((unsigned char)reason[lr] & 0xc0) == 0x80)
                lr--;
        }
        memcpy(r->reason, reason, lr);
    }
    return 1;
}

/* Take a free slot, waiting while all are busy. */
static unsigned checkout(gw_store *s)
{
    pthread_mutex_lock(&s->mu);
    for (;;) {
        for (unsigned i = 0; i < s->nconns; i++) {
            if (!s->busy[i]) {
                s->busy[i] = true;
                pthread_mutex_unlock(&s->mu);
                return i;
            }
        }
        pthread_cond_wait(&s->freed, &s->mu);
    }
}

static void checkin(gw_store *s, unsigned i)
{
    pthread_mutex_lock(&s->mu);
    s->busy[i] = false;
    pthread_cond_signal(&s->freed);
    pthread_mutex_unlock(&s->mu);
}

/* Free s, whose mutex and condition variable are initialised. */
static void destroy(gw_store *s)
{
    if (s->conns) {
        for (unsigned i = 0; i < s->nconns; i++)
            s->ops->disconnect(s->conns[i]);
    }
    free(s->conns);
    free(s->busy);
    pthread_cond_destroy(&s->freed);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

gw_store *gw_store_open(const gw_store_opts *o, char *msg)
{
    char why[GW_STORE_MSG_MAX];
    const char *backend = o && o->backend ? o->backend : "sqlite";
    const gw__store_ops *ops;
    if (strcmp(backend, "sqlite") == 0) {
        ops = &gw__store_sqlite_ops;
    } else if (strcmp(backend, "postgres") == 0) {
        ops = &gw__store_pg_ops;
    } else {
        report(msg, "store", "open", "backend must be sqlite or postgres");
        return NULL;
    }
    if (!o || (ops == &gw__store_sqlite_ops && (!o->sqlite_path || !*o->sqlite_path))) {
        report(msg, ops->name, "open", "sqlite_path is not set");
        return NULL;
    }
    if (ops == &gw__store_pg_ops && (!o->postgres_url || !*o->postgres_url)) {
        report(msg, ops->name, "open", "postgres_url is not set");
        return NULL;
    }
    unsigned nconns = o->conns ? o->conns : GW__STORE_CONNS_DEFAULT;
    if (nconns > GW__STORE_CONNS_MAX) {
        gw__store_why(why, "conns must be 1..%d", GW__STORE_CONNS_MAX);
        report(msg, ops->name, "open", why);
        return NULL;
    }
    gw_store *s = calloc(1, sizeof *s);
    if (!s) {
        report(msg, ops->name, "open", "out of memory");
        return NULL;
    }
    s->ops = ops;
    atomic_init(&s->queries, 0);
    if (pthread_mutex_init(&s->mu, NULL) != 0) {
        free(s);
        report(msg, ops->name, "open", "pthread_mutex_init failed");
        return NULL;
    }
    if (pthread_cond_init(&s->freed, NULL) != 0) {
        pthread_mutex_destroy(&s->mu);
        free(s);
        report(msg, ops->name, "open", "pthread_cond_init failed");
        return NULL;
    }
    s->conns = calloc(nconns, sizeof *s->conns);
    s->busy = calloc(nconns, sizeof *s->busy);
    if (!s->conns || !s->busy) {
        destroy(s);
        report(msg, ops->name, "open", "out of memory");
        return NULL;
    }
    s->nconns = nconns;
    gw__store_cfg cfg = {
        .sqlite_path = o->sqlite_path,
        .postgres_url = o->postgres_url,
        .timeout_ms = o->timeout_ms ? o->timeout_ms : GW__STORE_TIMEOUT_DEFAULT_MS,
        .queries = &s->queries,
    };
    for (unsigned i = 0; i < nconns; i++) {
        s->conns[i] = ops->connect(&cfg, why);
        if (!s->conns[i] || (i == 0 && ops->migrate(s->conns[0], why) == -1)) {
            destroy(s);
            report(msg, ops->name, "open", why);
            return NULL;
        }
    }
    return s;
}

void gw_store_close(gw_store *s)
{
    if (s)
        destroy(s);
}

const char *gw_store_backend(const gw_store *s)
{
    return s->ops->name;
}

int gw_store_load(gw_store *s, const char *const *ids, size_t n, int64_t now_ms, gw_mute_rec **out,
                  size_t *nout, char *msg)
{
    char why[GW_STORE_MSG_MAX];
    *out = NULL;
    *nout = 0;
    if (n > GW__STORE_LOAD_MAX_IDS) {
        gw__store_why(why, "%zu ids (at most %d per call)", n, GW__STORE_LOAD_MAX_IDS);
        report(msg, s->ops->name, "load", why);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        if (!id_ok("id", ids[i], why)) {
            char detail[GW_STORE_MSG_MAX];
            snprintf(detail, sizeof detail, "ids[%zu]: %.200s", i, why);
            report(msg, s->ops->name, "load", detail);
            return -1;
        }
    }
    if (n == 0)
        return 0; /* nothing can match: no statement */
    unsigned slot = checkout(s);
    int rc = s->ops->load(s->conns[slot], ids, n, now_ms, out, nout, why);
    checkin(s, slot);
    if (rc == -1) {
        *out = NULL;
        *nout = 0;
        report(msg, s->ops->name, "load", why);
    }
    return rc;
}

int gw_store_put(gw_store *s, const gw_mute_rec *r, char *msg)
{
    char why[GW_STORE_MSG_MAX];
    bool ok = false;
    if (!kind_ok(r->kind)) {
        gw__store_why(why, "unknown kind %d", (int)r->kind);
    } else if (id_ok(r->kind == GW_MUTE_GLOBAL ? "muted_by" : "owner", r->owner, why) &&
               id_ok(r->kind == GW_MUTE_CHANNEL ? "channel" : "target", r->target, why)) {
        size_t lr = strnlen(r->reason, GW_STORE_REASON_MAX + 1);
        if (lr > GW_STORE_REASON_MAX)
            gw__store_why(why, "reason is longer than %d bytes", GW_STORE_REASON_MAX);
        else if (!utf8_ok(r->reason, lr))
            gw__store_why(why, "reason is not valid UTF-8");
        else if (r->created_ms < 0 || r->expires_ms < 0)
            gw__store_why(why, "created_ms and expires_ms must not be negative");
        else
            ok = true;
    }
    if (!ok) {
        report(msg, s->ops->name, "put", why);
        return -1;
    }
    unsigned slot = checkout(s);
    int rc = s->ops->put(s->conns[slot], r, why);
    checkin(s, slot);
    if (rc == -1)
        report(msg, s->ops->name, "put", why);
    return rc;
}

int gw_store_del(gw_store *s, gw_mute_kind kind, const char *owner, const char *target,
                 int64_t now_ms, bool *existed, char *msg)
{
    char why[GW_STORE_MSG_MAX];
    bool dummy;
    if (!existed)
        existed = &dummy;
    *existed = false;
    bool ok = false;
    if (!kind_ok(kind))
        gw__store_why(why, "unknown kind %d", (int)kind);
    else if ((kind == GW_MUTE_GLOBAL || id_ok("owner", owner, why)) &&
             id_ok(kind == GW_MUTE_CHANNEL ? "channel" : "target", target, why))
        ok = true;
    if (!ok) {
        report(msg, s->ops->name, "del", why);
        return -1;
    }
    unsigned slot = checkout(s);
    int rc = s->ops->del(s->conns[slot], kind, owner, target, now_ms, existed, why);
    checkin(s, slot);
    if (rc == -1) {
        *existed = false;
        report(msg, s->ops->name, "del", why);
    }
    return rc;
}

int gw_store_purge(gw_store *s, int64_t before_ms, unsigned max_rows, uint64_t *removed, char *msg)
{
    char why[GW_STORE_MSG_MAX];
    uint64_t dummy;
    if (!removed)
        removed = &dummy;
    *removed = 0;
    if (max_rows == 0 || max_rows > GW__STORE_PURGE_MAX_ROWS) {
        gw__store_why(why, "max_rows must be 1..%d", GW__STORE_PURGE_MAX_ROWS);
        report(msg, s->ops->name, "purge", why);
        return -1;
    }
    if (before_ms < 0) {
        report(msg, s->ops->name, "purge", "before_ms must not be negative");
        return -1;
    }
    unsigned slot = checkout(s);
    int rc = s->ops->purge(s->conns[slot], before_ms, max_rows, removed, why);
    checkin(s, slot);
    if (rc == -1) {
        *removed = 0;
        report(msg, s->ops->name, "purge", why);
    }
    return rc;
}

uint64_t gw_store_queries(const gw_store *s)
{
    return atomic_load_explicit(&s->queries, memory_order_relaxed);
}
