/* SPDX-License-Identifier: MIT */
/*
 * store_pg.c - the PostgreSQL backend of the mute store (store.h; the table
 * it fills is store_int.h), for several gateways sharing one set of mutes.
 *
 * Each pool slot holds one libpq connection. The connection string is the
 * configured one (URI or key=value) with these added: connect_timeout (from
 * timeout_ms, in whole seconds, at least 2 as libpq requires), options
 * `-c statement_timeout=<timeout_ms>` (after any options the string had), so
 * the server cancels a statement that runs too long, client_encoding UTF8
 * (always: store.c only lets UTF-8 in), and fallback_application_name
 * mudbus-gateway. Server notices (e.g. "table
 * already exists, skipping") are dropped, not printed.
 *
 * Every call is one parameterised statement (PQsendQueryParams, the
 * asynchronous PQexecParams; purge: one per table, see below): values only
 * ever travel as parameters, never in SQL text. A load passes all its ids as
 * ONE parameter, a text[] in PostgreSQL's binary array format (so no quoting
 * or escaping exists that could go wrong), matched with `= ANY($1)`. The
 * primary keys lead with the columns a load looks up (muter, player,
 * target); the planner uses them or, when a large share of a small table
 * matches, a sequential scan with a hashed ANY (at 500 ids out of 10,000
 * players it scans, in about 7 ms).
 *
 * A purge runs three DELETEs, one per table, each in its own (autocommit)
 * transaction, stopping at the first failure; each deletes by primary key
 * the rows a bounded subquery picks (`(key) IN (SELECT key ... LIMIT $2 FOR
 * UPDATE SKIP LOCKED)`) and PQcmdTuples gives the count. The row locks make
 * the subquery re-check a row that a concurrent put renewed (it then no
 * longer counts as expired and is kept), and SKIP LOCKED lets gateways that
 * purge at once take different rows instead of waiting for each other.
 * There is no index on expires_ms (the schema stays at version 1), so the
 * subquery scans the table until it has found max_rows expired rows.
 *
 * Broken connections: a call that finds its connection broken (the server
 * closed it, e.g. on restart, as seen by a non-blocking look at the socket, or
 * an earlier call failed with the connection lost) first reconnects it with
 * PQreset. If that fails the call fails; the next call tries again. A
 * connection lost during a statement fails that call (it is not retried: a
 * write might have happened) and is reset by the next call.
 *
 * No call blocks for ever: connections are in non-blocking mode and a
 * statement is sent and awaited with poll() until statement_timeout plus
 * GRACE_MS; past that (a server or host that answers nothing, where the
 * server's own timeout cannot fire) the call fails and the connection is
 * reset by the next call. Reconnecting is bounded by connect_timeout.
 *
 * Schema creation and migration run in one transaction holding a
 * transaction-level advisory lock, so gateways that start at once on one
 * database migrate one after the other.
 *
 * Threads: see store.c; nothing here is shared between connections (libpq
 * is thread-safe for separate connections).
 */
#include "store_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define OID_INT8    20
#define OID_TEXT    25
#define OID_TEXTARR 1009
#define GRACE_MS    2000               /* client-side wait beyond statement_timeout */
#define SCHEMA_LOCK "7230561040425189" /* pg_advisory_xact_lock key; any constant of our own */

/* In force at p: never expires (NULL or 0) or expires after p. */
#define IN_FORCE(p) "(expires_ms IS NULL OR expires_ms = 0 OR expires_ms > " p ")"
/* Expired at or before p (NULL and 0, "never", are neither). */
#define EXPIRED(p) "expires_ms > 0 AND expires_ms <= " p

/* clang-format off */
static const char sql_load[] =
    "SELECT 0, muter, target, created_ms, expires_ms, reason FROM mutes_player"
    " WHERE muter = ANY($1) AND " IN_FORCE("$2")
    " UNION ALL SELECT 1, player, channel, created_ms, expires_ms, NULL FROM mutes_channel"
    " WHERE player = ANY($1) AND " IN_FORCE("$2")
    " UNION ALL SELECT 2, muted_by, target, created_ms, expires_ms, reason FROM mutes_global"
    " WHERE target = ANY($1) AND " IN_FORCE("$2")
    GW__STORE_LOAD_LIMIT_SQL;
/* clang-format on */

static const char *const sql_put[] = {
    [GW_MUTE_PLAYER] = "INSERT INTO mutes_player (muter, target, created_ms, expires_ms, reason)"
                       " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (muter, target) DO UPDATE SET"
                       " created_ms = EXCLUDED.created_ms, expires_ms = EXCLUDED.expires_ms,"
                       " reason = EXCLUDED.reason",
    [GW_MUTE_CHANNEL] = "INSERT INTO mutes_channel (player, channel, created_ms, expires_ms)"
                        " VALUES ($1, $2, $3, $4) ON CONFLICT (player, channel) DO UPDATE SET"
                        " created_ms = EXCLUDED.created_ms, expires_ms = EXCLUDED.expires_ms",
    [GW_MUTE_GLOBAL] = "INSERT INTO mutes_global (muted_by, target, created_ms, expires_ms, reason)"
                       " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (target) DO UPDATE SET"
                       " muted_by = EXCLUDED.muted_by, created_ms = EXCLUDED.created_ms,"
                       " expires_ms = EXCLUDED.expires_ms, reason = EXCLUDED.reason",
};

/* Parameters: owner, target, now (global: target, now). */
static const char *const sql_del[] = {
    [GW_MUTE_PLAYER] = "DELETE FROM mutes_player WHERE muter = $1 AND target = $2"
                       " RETURNING " IN_FORCE("$3"),
    [GW_MUTE_CHANNEL] = "DELETE FROM mutes_channel WHERE player = $1 AND channel = $2"
                        " RETURNING " IN_FORCE("$3"),
    [GW_MUTE_GLOBAL] = "DELETE FROM mutes_global WHERE target = $1 RETURNING " IN_FORCE("$2"),
};

/* Parameters: before_ms, max_rows. In the order purge runs them. */
static const struct {
    const char *table, *sql;
} sql_purge[3] = {
    {"mutes_player", "DELETE FROM mutes_player WHERE (muter, target) IN (SELECT muter, target"
                     " FROM mutes_player WHERE " EXPIRED("$1") " LIMIT $2 FOR UPDATE SKIP LOCKED)"},
    {"mutes_channel",
     "DELETE FROM mutes_channel WHERE (player, channel) IN (SELECT player, channel"
     " FROM mutes_channel WHERE " EXPIRED("$1") " LIMIT $2 FOR UPDATE SKIP LOCKED)"},
    {"mutes_global", "DELETE FROM mutes_global WHERE target IN (SELECT target"
                     " FROM mutes_global WHERE " EXPIRED("$1") " LIMIT $2 FOR UPDATE SKIP LOCKED)"},
};

static const char schema_v1[] =
    "CREATE TABLE IF NOT EXISTS mutes_player ("
    " muter TEXT NOT NULL, target TEXT NOT NULL, created_ms BIGINT NOT NULL,"
    " expires_ms BIGINT, reason TEXT NOT NULL DEFAULT '', PRIMARY KEY (muter, target));"
    "CREATE TABLE IF NOT EXISTS mutes_channel ("
    " player TEXT NOT NULL, channel TEXT NOT NULL, created_ms BIGINT NOT NULL,"
    " expires_ms BIGINT, PRIMARY KEY (player, channel));"
    "CREATE TABLE IF NOT EXISTS mutes_global ("
    " target TEXT NOT NULL PRIMARY KEY, muted_by TEXT NOT NULL, created_ms BIGINT NOT NULL,"
    " expires_ms BIGINT, reason TEXT NOT NULL DEFAULT '');";

struct gw__store_conn {
    PGconn *pg;
    bool broken; /* a call gave up on it: reset before the next use */
    unsigned wait_ms;
    _Atomic uint64_t *queries;
};

static void drop_notice(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

/* why = the connection's error (first line of it, as libpq's can be
 * several), prefixed. */
static void conn_why(PGconn *pg, const char *prefix, char *why)
{
    const char *e = pg ? PQerrorMessage(pg) : "out of memory";
    gw__store_why(why, "%s%s", prefix, e && *e ? e : "unknown error");
}

static void pg_disconnect(gw__store_conn *c)
{
    if (!c)
        return;
    PQfinish(c->pg);
    free(c);
}

static gw__store_conn *pg_connect(const gw__store_cfg *cfg, char *why)
{
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(cfg->postgres_url, &perr);
    if (!opts) {
        gw__store_why(why, "bad postgres_url: %s", perr ? perr : "out of memory");
        PQfreemem(perr);
        return NULL;
    }
    size_t nopts = 0;
    for (PQconninfoOption *o = opts; o->keyword; o++)
        nopts++;
    const char **kw = calloc(nopts + 5, sizeof *kw);
    const char **val = calloc(nopts + 5, sizeof *val);
    struct gw__store_conn *c = calloc(1, sizeof *c);
    char timeout[32], options[1024];
    const char *user_options = NULL;
    size_t k = 0;
    if (!kw || !val || !c) {
        gw__store_why(why, "out of memory");
        goto fail;
    }
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (!o->val || strcmp(o->keyword, "connect_timeout") == 0 ||
            strcmp(o->keyword, "client_encoding") == 0)
            continue;
        if (strcmp(o->keyword, "options") == 0) {
            user_options = o->val;
            continue;
        }
        kw[k] = o->keyword;
        val[k++] = o->val;
    }
    unsigned secs = (cfg->timeout_ms + 999) / 1000;
    snprintf(timeout, sizeof timeout, "%u", secs < 2 ? 2 : secs);
    /* PostgreSQL's limit for statement_timeout is INT_MAX ms. */
    unsigned stmt_ms = cfg->timeout_ms > INT32_MAX ? INT32_MAX : cfg->timeout_ms;
    int n = snprintf(options, sizeof options, "%s%s-c statement_timeout=%u",
                     user_options ? user_options : "", user_options ? " " : "", stmt_ms);
    if (n < 0 || (size_t)n >= sizeof options) {
        gw__store_why(why, "bad postgres_url: options is too long");
        goto fail;
    }
    kw[k] = "connect_timeout";
    val[k++] = timeout;
    kw[k] = "options";
    val[k++] = options;
    kw[k] = "fallback_application_name";
    val[k++] = "mudbus-gateway";
    kw[k] = "client_encoding";
    val[k++] = "UTF8";
    c->queries = cfg->queries;
    c->wait_ms = stmt_ms > UINT32_MAX - GRACE_MS ? UINT32_MAX : stmt_ms + GRACE_MS;
    c->pg = PQconnectdbParams(kw, val, 0);
    if (!c->pg || PQstatus(c->pg) != CONNECTION_OK) {
        conn_why(c->pg, "", why);
        goto fail;
    }
    PQsetNoticeProcessor(c->pg, drop_notice, NULL);
    PQsetnonblocking(c->pg, 1);
    PQconninfoFree(opts);
    free(kw);
    free(val);
    return c;
fail:
    PQconninfoFree(opts);
    free(kw);
    free(val);
    pg_disconnect(c);
    return NULL;
}

/* Make sure the connection is usable before a call: reset it if it is known
 * to be broken or if the server has closed it since the last call. */
static int ensure(struct gw__store_conn *c, char *why)
{
    /* Idle, anything readable is the server's goodbye (an error message,
     * then EOF) or a notice; PQconsumeInput reads it and says whether the
     * connection survived. The goodbye can take two reads to see the EOF;
     * a few rounds are plenty (a live idle connection has nothing more). */
    bool alive = !c->broken && PQstatus(c->pg) == CONNECTION_OK;
    for (int round = 0; alive && round < 4; round++) {
        struct pollfd p = {.fd = PQsocket(c->pg), .events = POLLIN};
        if (p.fd < 0) {
            alive = false;
            break;
        }
        if (poll(&p, 1, 0) <= 0)
            break;
        alive = PQconsumeInput(c->pg) && PQstatus(c->pg) == CONNECTION_OK;
    }
    if (alive)
        return 0;
    PQreset(c->pg);
    if (PQstatus(c->pg) != CONNECTION_OK) {
        c->broken = true;
        conn_why(c->pg, "reconnect failed: ", why);
        return -1;
    }
    c->broken = false;
    PQsetNoticeProcessor(c->pg, drop_notice, NULL);
    PQsetnonblocking(c->pg, 1);
    return 0;
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Wait until the query is sent and a result (or the end) can be read
 * without blocking, at most until deadline. On failure the connection is
 * marked broken (the statement's fate is unknown) and why is set. */
static int wait_ready(struct gw__store_conn *c, int64_t deadline, char *why)
{
    for (;;) {
        int pending = PQflush(c->pg);
        if (pending == -1)
            break;
        if (pending == 0 && !PQisBusy(c->pg))
            return 0;
        int64_t left = deadline - mono_ms();
        if (left <= 0) {
            c->broken = true;
            gw__store_why(why, "no answer from the server within %u ms", c->wait_ms);
            return -1;
        }
        struct pollfd p = {.fd = PQsocket(c->pg), .events = POLLIN | (pending ? POLLOUT : 0)};
        int r = poll(&p, 1, left > INT32_MAX ? INT32_MAX : (int)left);
        if (r == -1 && errno != EINTR)
            break;
        if (r > 0 && (p.revents & (POLLIN | POLLERR | POLLHUP)) && !PQconsumeInput(c->pg))
            break;
    }
    c->broken = true;
    conn_why(c->pg, "", why);
    return -1;
}

/* Send one statement and wait for its result, at most wait_ms (the server's
 * statement_timeout plus a grace period: this bound only matters when the
 * server cannot answer at all, e.g. a frozen host). The result, or NULL with
 * why set. */
static PGresult *exec_params(struct gw__store_conn *c, const char *sql, int nparams,
                             const Oid *types, const char *const *values, const int *lengths,
                             const int *formats, char *why)
{
    if (!PQsendQueryParams(c->pg, sql, nparams, types, values, lengths, formats, 0)) {
        c->broken = PQstatus(c->pg) != CONNECTION_OK;
        conn_why(c->pg, "", why);
        return NULL;
    }
    int64_t deadline = mono_ms() + c->wait_ms;
    PGresult *first = NULL;
    for (;;) {
        if (wait_ready(c, deadline, why) == -1) {
            PQclear(first);
            return NULL;
        }
        PGresult *r = PQgetResult(c->pg);
        if (!r)
            break;
        if (!first)
            first = r;
        else
            PQclear(r);
    }
    if (!first)
        conn_why(c->pg, "", why);
    return first;
}

/* One statement; the result if its status is `want`, else NULL with why. */
static PGresult *run(struct gw__store_conn *c, const char *sql, int nparams, const Oid *types,
                     const char *const *values, const int *lengths, const int *formats,
                     ExecStatusType want, char *why)
{
    if (ensure(c, why) == -1)
        return NULL;
    atomic_fetch_add_explicit(c->queries, 1, memory_order_relaxed);
    PGresult *res = exec_params(c, sql, nparams, types, values, lengths, formats, why);
    if (!res)
        return NULL;
    if (PQresultStatus(res) == want)
        return res;
    if (PQresultErrorMessage(res)[0])
        gw__store_why(why, "%s", PQresultErrorMessage(res));
    else
        conn_why(c->pg, "", why);
    PQclear(res);
    return NULL;
}

/* Run setup SQL (no parameters, several statements allowed). */
static int exec_plain(struct gw__store_conn *c, const char *sql, char *why)
{
    PGresult *res = PQexec(c->pg, sql);
    ExecStatusType st = PQresultStatus(res);
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
        PQclear(res);
        return 0;
    }
    if (res && PQresultErrorMessage(res)[0])
        gw__store_why(why, "%s", PQresultErrorMessage(res));
    else
        conn_why(c->pg, "", why);
    PQclear(res);
    return -1;
}

static int parse_i64(const char *s, int64_t *v)
{
    char *end;
    errno = 0;
    long long x = strtoll(s, &end, 10);
    if (errno || end == s || *end)
        return -1;
    *v = x;
    return 0;
}

static int pg_migrate(gw__store_conn *c, char *why)
{
    if (exec_plain(c,
                   "BEGIN; SELECT pg_advisory_xact_lock(" SCHEMA_LOCK ");"
                   "CREATE TABLE IF NOT EXISTS mudbus_schema_version ("
                   " id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL);",
                   why) == -1)
        goto fail;
    PGresult *res = PQexec(c->pg, "SELECT version FROM mudbus_schema_version WHERE id = 1");
    int64_t version = 0;
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        gw__store_why(why, "%s", PQresultErrorMessage(res));
        PQclear(res);
        goto fail;
    }
    if (PQntuples(res) == 1 && parse_i64(PQgetvalue(res, 0, 0), &version) == -1) {
        gw__store_why(why, "bad schema version \"%s\"", PQgetvalue(res, 0, 0));
        PQclear(res);
        goto fail;
    }
    PQclear(res);
    if (version > GW_STORE_SCHEMA) {
        gw__store_why(why,
                      "the database has schema version %" PRId64
                      ", newer than this binary knows (%d); upgrade mudbus-gateway",
                      version, GW_STORE_SCHEMA);
        goto fail;
    }
    if (version < GW_STORE_SCHEMA) {
        /* Version 0 (new or empty database) -> 1. Later versions add their
         * steps here, each from the previous version. */
        char set[160];
        snprintf(set, sizeof set,
                 "INSERT INTO mudbus_schema_version (id, version) VALUES (1, %d)"
                 " ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version",
                 GW_STORE_SCHEMA);
        if (exec_plain(c, schema_v1, why) == -1 || exec_plain(c, set, why) == -1)
            goto fail;
    }
    if (exec_plain(c, "COMMIT", why) == -1)
        goto fail;
    return 0;
fail:
    PQclear(PQexec(c->pg, "ROLLBACK"));
    return -1;
}

static void put_be32(unsigned char *p, uint32_t v)
{
    v = htonl(v);
    memcpy(p, &v, 4);
}

static int pg_load(gw__store_conn *c, const char *const *ids, size_t n, int64_t now_ms,
                   gw_mute_rec **out, size_t *nout, char *why)
{
    /* Binary text[]: ndim, has-nulls flag, element type, then per dimension
     * its length and lower bound, then each element as length + bytes. */
    size_t len = 20;
    for (size_t i = 0; i < n; i++)
        len += 4 + strlen(ids[i]);
    unsigned char *arr = malloc(len);
    if (!arr) {
        gw__store_why(why, "out of memory");
        return -1;
    }
    put_be32(arr, 1);
    put_be32(arr + 4, 0);
    put_be32(arr + 8, OID_TEXT);
    put_be32(arr + 12, (uint32_t)n);
    put_be32(arr + 16, 1);
    unsigned char *p = arr + 20;
    for (size_t i = 0; i < n; i++) {
        size_t l = strlen(ids[i]);
        put_be32(p, (uint32_t)l);
        memcpy(p + 4, ids[i], l);
        p += 4 + l;
    }
    char now[32];
    snprintf(now, sizeof now, "%" PRId64, now_ms);
    const Oid types[2] = {OID_TEXTARR, OID_INT8};
    const char *values[2] = {(const char *)arr, now};
    const int lengths[2] = {(int)len, 0};
    const int formats[2] = {1, 0};
    PGresult *res = run(c, sql_load, 2, types, values, lengths, formats, PGRES_TUPLES_OK, why);
    free(arr);
    if (!res)
        return -1;
    gw__store_recs rs = {0};
    int rows = PQntuples(res);
    for (int r = 0; r < rows; r++) {
        int64_t kind, created, expires = 0;
        if (parse_i64(PQgetvalue(res, r, 0), &kind) == -1 ||
            parse_i64(PQgetvalue(res, r, 3), &created) == -1 ||
            (!PQgetisnull(res, r, 4) && parse_i64(PQgetvalue(res, r, 4), &expires) == -1)) {
            gw__store_why(why, "unexpected value in row %d", r);
            goto fail;
        }
        const char *reason = PQgetisnull(res, r, 5) ? NULL : PQgetvalue(res, r, 5);
        if (gw__store_recs_add(&rs, (int)kind, PQgetvalue(res, r, 1), PQgetvalue(res, r, 2),
                               created, expires, reason, why) == -1)
            goto fail;
    }
    PQclear(res);
    *out = rs.v;
    *nout = rs.n;
    return 0;
fail:
    PQclear(res);
    free(rs.v);
    return -1;
}

static int pg_put(gw__store_conn *c, const gw_mute_rec *r, char *why)
{
    char created[32], expires[32];
    snprintf(created, sizeof created, "%" PRId64, r->created_ms);
    snprintf(expires, sizeof expires, "%" PRId64, r->expires_ms);
    const Oid types[5] = {OID_TEXT, OID_TEXT, OID_INT8, OID_INT8, OID_TEXT};
    const char *values[5] = {r->owner, r->target, created, expires, r->reason};
    int nparams = r->kind == GW_MUTE_CHANNEL ? 4 : 5;
    PGresult *res =
        run(c, sql_put[r->kind], nparams, types, values, NULL, NULL, PGRES_COMMAND_OK, why);
    if (!res)
        return -1;
    PQclear(res);
    return 0;
}

static int pg_del(gw__store_conn *c, gw_mute_kind kind, const char *owner, const char *target,
                  int64_t now_ms, bool *existed, char *why)
{
    char now[32];
    snprintf(now, sizeof now, "%" PRId64, now_ms);
    const Oid types[3] = {OID_TEXT, OID_TEXT, OID_INT8};
    const Oid gtypes[2] = {OID_TEXT, OID_INT8};
    const char *values[3] = {owner, target, now};
    const char *gvalues[2] = {target, now};
    bool global = kind == GW_MUTE_GLOBAL;
    PGresult *res = run(c, sql_del[kind], global ? 2 : 3, global ? gtypes : types,
                        global ? gvalues : values, NULL, NULL, PGRES_TUPLES_OK, why);
    if (!res)
        return -1;
    *existed = PQntuples(res) > 0 && strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    PQclear(res);
    return 0;
}

static int pg_purge(gw__store_conn *c, int64_t before_ms, unsigned max_rows, uint64_t *removed,
                    char *why)
{
    char before[32], limit[32];
    snprintf(before, sizeof before, "%" PRId64, before_ms);
    snprintf(limit, sizeof limit, "%u", max_rows);
    const Oid types[2] = {OID_INT8, OID_INT8};
    const char *values[2] = {before, limit};
    uint64_t total = 0;
    for (int k = 0; k < 3; k++) {
        PGresult *res =
            run(c, sql_purge[k].sql, 2, types, values, NULL, NULL, PGRES_COMMAND_OK, why);
        if (!res) {
            char tmp[GW_STORE_MSG_MAX];
            snprintf(tmp, sizeof tmp, "%s", why);
            gw__store_why(why, "%s: %s", sql_purge[k].table, tmp);
            return -1;
        }
        int64_t n;
        if (parse_i64(PQcmdTuples(res), &n) == -1 || n < 0) {
            gw__store_why(why, "%s: unexpected row count \"%s\"", sql_purge[k].table,
                          PQcmdTuples(res));
            PQclear(res);
            return -1;
        }
        PQclear(res);
        total += (uint64_t)n;
    }
    *removed = total;
    return 0;
}

const gw__store_ops gw__store_pg_ops = {
    .name = "postgres",
    .connect = pg_connect,
    .disconnect = pg_disconnect,
    .migrate = pg_migrate,
    .load = pg_load,
    .put = pg_put,
    .del = pg_del,
    .purge = pg_purge,
};
