/* SPDX-License-Identifier: MIT */
/*
 * store_sqlite.c - the SQLite backend of the mute store (store.h; the table
 * it fills is store_int.h). The default backend: one file, shared by the
 * connections of one gateway.
 *
 * Each pool slot has its own sqlite3 handle opened with SQLITE_OPEN_NOMUTEX:
 * store.c hands a slot to one thread at a time, which is the lock. The file
 * is in WAL mode (readers never wait for the writer; set once, it stays in
 * the file) with synchronous=FULL, since a mute is announced to other
 * gateways right after it is written and must not be lost. timeout_ms is
 * both the busy timeout (waiting for another writer) and a deadline for any
 * one statement, enforced by a progress handler.
 *
 * Statements are prepared once per connection (on first use) and reused. Each
 * call is one statement, in autocommit mode (purge: one per table, each
 * committed on its own, see below): a put is an upsert, a delete reports
 * what it removed with RETURNING, and a load finds the records of any
 * number of ids in one statement by passing them as one JSON array bound to
 * ?1 and reading it with json_each (built into SQLite 3.38+; Debian 12 has
 * 3.40). The tables are WITHOUT ROWID with their key as primary key, so every
 * lookup of the load (mutes_player by muter, mutes_channel by player,
 * mutes_global by target) is a search of that index, never a scan.
 *
 * A purge runs three DELETEs, one per table, each in its own autocommit
 * transaction rather than one transaction around all three: the write lock
 * is then held for one bounded statement at a time, and a failure part way
 * loses nothing that matters (the rows already gone had expired). As the
 * tables are WITHOUT ROWID, each deletes by primary key the rows a bounded
 * subquery picks (`(key) IN (SELECT key ... LIMIT ?2)`); sqlite3_changes()
 * gives the count. There is no index on expires_ms (the schema stays at
 * version 1), so the subquery scans the table until it has found max_rows
 * expired rows, or to the end.
 *
 * Threads: see store.c; nothing here is shared between connections.
 */
#include "store_int.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum {
    ST_LOAD,
    ST_PUT_PLAYER,
    ST_PUT_CHANNEL,
    ST_PUT_GLOBAL,
    ST_DEL_PLAYER,
    ST_DEL_CHANNEL,
    ST_DEL_GLOBAL,
    ST_PURGE_PLAYER,
    ST_PURGE_CHANNEL,
    ST_PURGE_GLOBAL,
    ST_COUNT
};

/* In force at p: never expires (NULL or 0) or expires after p. */
#define IN_FORCE(p) "(expires_ms IS NULL OR expires_ms = 0 OR expires_ms > " p ")"
/* Expired at or before p (NULL and 0, "never", are neither). */
#define EXPIRED(p) "expires_ms > 0 AND expires_ms <= " p

static const char *const sql[ST_COUNT] = {
    /* clang-format off */
    [ST_LOAD] =
        "SELECT 0, muter, target, created_ms, expires_ms, reason FROM mutes_player"
        " WHERE muter IN (SELECT value FROM json_each(?1)) AND " IN_FORCE("?2")
        " UNION ALL SELECT 1, player, channel, created_ms, expires_ms, NULL FROM mutes_channel"
        " WHERE player IN (SELECT value FROM json_each(?1)) AND " IN_FORCE("?2")
        " UNION ALL SELECT 2, muted_by, target, created_ms, expires_ms, reason FROM mutes_global"
        " WHERE target IN (SELECT value FROM json_each(?1)) AND " IN_FORCE("?2")
        GW__STORE_LOAD_LIMIT_SQL,
    /* clang-format on */
    [ST_PUT_PLAYER] = "INSERT INTO mutes_player (muter, target, created_ms, expires_ms, reason)"
                      " VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (muter, target) DO UPDATE SET"
                      " created_ms = excluded.created_ms, expires_ms = excluded.expires_ms,"
                      " reason = excluded.reason",
    [ST_PUT_CHANNEL] = "INSERT INTO mutes_channel (player, channel, created_ms, expires_ms)"
                       " VALUES (?1, ?2, ?3, ?4) ON CONFLICT (player, channel) DO UPDATE SET"
                       " created_ms = excluded.created_ms, expires_ms = excluded.expires_ms",
    [ST_PUT_GLOBAL] = "INSERT INTO mutes_global (muted_by, target, created_ms, expires_ms, reason)"
                      " VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (target) DO UPDATE SET"
                      " muted_by = excluded.muted_by, created_ms = excluded.created_ms,"
                      " expires_ms = excluded.expires_ms, reason = excluded.reason",
    [ST_DEL_PLAYER] = "DELETE FROM mutes_player WHERE muter = ?1 AND target = ?2"
                      " RETURNING " IN_FORCE("?3"),
    [ST_DEL_CHANNEL] = "DELETE FROM mutes_channel WHERE player = ?1 AND channel = ?2"
                       " RETURNING " IN_FORCE("?3"),
    [ST_DEL_GLOBAL] = "DELETE FROM mutes_global WHERE target = ?2 RETURNING " IN_FORCE("?3"),
    /* Parameters: before_ms, max_rows. */
    [ST_PURGE_PLAYER] = "DELETE FROM mutes_player WHERE (muter, target) IN (SELECT muter, target"
                        " FROM mutes_player WHERE " EXPIRED("?1") " LIMIT ?2)",
    [ST_PURGE_CHANNEL] = "DELETE FROM mutes_channel WHERE (player, channel) IN (SELECT player,"
                         " channel FROM mutes_channel WHERE " EXPIRED("?1") " LIMIT ?2)",
    [ST_PURGE_GLOBAL] = "DELETE FROM mutes_global WHERE target IN (SELECT target"
                        " FROM mutes_global WHERE " EXPIRED("?1") " LIMIT ?2)",
};

/* Version 1. Every statement is idempotent (IF NOT EXISTS). */
static const char schema_v1[] =
    "CREATE TABLE IF NOT EXISTS mutes_player ("
    " muter TEXT NOT NULL, target TEXT NOT NULL, created_ms INTEGER NOT NULL,"
    " expires_ms INTEGER, reason TEXT NOT NULL DEFAULT '',"
    " PRIMARY KEY (muter, target)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS mutes_channel ("
    " player TEXT NOT NULL, channel TEXT NOT NULL, created_ms INTEGER NOT NULL,"
    " expires_ms INTEGER, PRIMARY KEY (player, channel)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS mutes_global ("
    " target TEXT NOT NULL PRIMARY KEY, muted_by TEXT NOT NULL, created_ms INTEGER NOT NULL,"
    " expires_ms INTEGER, reason TEXT NOT NULL DEFAULT '') WITHOUT ROWID;";

struct gw__store_conn {
    sqlite3 *db;
    sqlite3_stmt *st[ST_COUNT];
    unsigned timeout_ms;
    struct timespec armed, deadline; /* when the call began, when it must end */
    _Atomic uint64_t *queries;
};

/* Progress handler: interrupt a statement that runs past its deadline. */
static int past_deadline(void *arg)
{
    const struct gw__store_conn *c = arg;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec > c->deadline.tv_sec ||
           (now.tv_sec == c->deadline.tv_sec && now.tv_nsec >= c->deadline.tv_nsec);
}

static void arm_deadline(struct gw__store_conn *c)
{
    clock_gettime(CLOCK_MONOTONIC, &c->armed);
    c->deadline = c->armed;
    c->deadline.tv_sec += c->timeout_ms / 1000;
    c->deadline.tv_nsec += (long)(c->timeout_ms % 1000) * 1000000L;
    if (c->deadline.tv_nsec >= 1000000000L) {
        c->deadline.tv_sec++;
        c->deadline.tv_nsec -= 1000000000L;
    }
}

/* Describe the connection's last error (rc from the failed call). */
static void db_why(struct gw__store_conn *c, int rc, char *why)
{
    if (rc == SQLITE_INTERRUPT)
        gw__store_why(why, "statement timed out after %u ms", c->timeout_ms);
    else if (rc == SQLITE_BUSY) {
        /* SQLite gives up at once, without waiting, where waiting could
         * deadlock: say how long this call really waited. */
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        long long ms = (long long)(now.tv_sec - c->armed.tv_sec) * 1000 +
                       (now.tv_nsec - c->armed.tv_nsec) / 1000000;
        gw__store_why(why,
                      "database is locked (by another connection; gave up after %lld ms, "
                      "busy timeout %u ms)",
                      ms > 0 ? ms : 0, c->timeout_ms);
    } else
        gw__store_why(why, "%s", c->db ? sqlite3_errmsg(c->db) : sqlite3_errstr(rc));
}

static void sq_disconnect(gw__store_conn *c)
{
    if (!c)
        return;
    for (int i = 0; i < ST_COUNT; i++)
        sqlite3_finalize(c->st[i]);
    sqlite3_close(c->db); /* all statements are finalized: this closes */
    free(c);
}

/* Run SQL text with no parameters and no wanted rows (setup only). */
static int exec(struct gw__store_conn *c, const char *text, char *why)
{
    arm_deadline(c);
    int rc = sqlite3_exec(c->db, text, NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        db_why(c, rc, why);
        return -1;
    }
    return 0;
}

static gw__store_conn *sq_connect(const gw__store_cfg *cfg, char *why)
{
    struct gw__store_conn *c = calloc(1, sizeof *c);
    if (!c) {
        gw__store_why(why, "out of memory");
        return NULL;
    }
    c->timeout_ms = cfg->timeout_ms;
    c->queries = cfg->queries;
    int rc =
        sqlite3_open_v2(cfg->sqlite_path, &c->db,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        if (c->db)
            gw__store_why(why, "%s: %s", cfg->sqlite_path, sqlite3_errmsg(c->db));
        else
            gw__store_why(why, "%s: %s", cfg->sqlite_path, sqlite3_errstr(rc));
        sq_disconnect(c);
        return NULL;
    }
    sqlite3_extended_result_codes(c->db, 0);
    sqlite3_busy_timeout(c->db, cfg->timeout_ms > INT32_MAX ? INT32_MAX : (int)cfg->timeout_ms);
    sqlite3_progress_handler(c->db, 1000, past_deadline, c);
    /* journal_mode returns a row; sqlite3_exec ignores it. A file that is
     * not a database fails here with "file is not a database". Two processes
     * opening a new file at the same moment: switching it to WAL can fail
     * with SQLITE_BUSY at once, without the busy handler (SQLite's deadlock
     * avoidance), so that is retried here for up to the timeout. */
    int tries = 0;
    struct timespec nap = {0, 10 * 1000000L};
    arm_deadline(c);
    while (sqlite3_exec(c->db, "PRAGMA journal_mode = WAL", NULL, NULL, NULL) == SQLITE_BUSY &&
           (unsigned)++tries * 10u < cfg->timeout_ms)
        nanosleep(&nap, NULL);
    if (exec(c, "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;", why) == -1) {
        char tmp[GW_STORE_MSG_MAX];
        snprintf(tmp, sizeof tmp, "%s", why);
        gw__store_why(why, "%s: %s", cfg->sqlite_path, tmp);
        sq_disconnect(c);
        return NULL;
    }
    return c;
}

static int sq_migrate(gw__store_conn *c, char *why)
{
    /* BEGIN IMMEDIATE takes the write lock first, so two gateways starting
     * on one file at once migrate one after the other. */
    if (exec(c,
             "BEGIN IMMEDIATE;"
             "CREATE TABLE IF NOT EXISTS mudbus_schema_version ("
             " id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL);",
             why) == -1) {
        sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
        return -1;
    }
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(c->db, "SELECT version FROM mudbus_schema_version WHERE id = 1", -1,
                                &st, NULL);
    sqlite3_int64 version = 0;
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            version = sqlite3_column_int64(st, 0);
            rc = SQLITE_DONE;
        }
    }
    if (rc != SQLITE_DONE && rc != SQLITE_OK)
        db_why(c, rc, why);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE && rc != SQLITE_OK)
        goto fail;
    if (version > GW_STORE_SCHEMA) {
        gw__store_why(why,
                      "the database has schema version %lld, newer than this binary knows (%d);"
                      " upgrade mudbus-gateway",
                      (long long)version, GW_STORE_SCHEMA);
        goto fail;
    }
    if (version < GW_STORE_SCHEMA) {
        /* Version 0 (new or empty database) -> 1. Later versions add their
         * steps here, each from the previous version. */
        char set[128];
        snprintf(set, sizeof set,
                 "INSERT INTO mudbus_schema_version (id, version) VALUES (1, %d)"
                 " ON CONFLICT (id) DO UPDATE SET version = excluded.version;",
                 GW_STORE_SCHEMA);
        if (exec(c, schema_v1, why) == -1 || exec(c, set, why) == -1)
            goto fail;
    }
    if (exec(c, "COMMIT", why) == -1)
        goto fail;
    return 0;
fail:
    sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
    return -1;
}

/* The prepared statement i, reset and with its bindings cleared. NULL with
 * why set on failure. */
static sqlite3_stmt *stmt(struct gw__store_conn *c, int i, char *why)
{
    arm_deadline(c);
    if (!c->st[i]) {
        int rc = sqlite3_prepare_v3(c->db, sql[i], -1, SQLITE_PREPARE_PERSISTENT, &c->st[i], NULL);
        if (rc != SQLITE_OK) {
            db_why(c, rc, why);
            c->st[i] = NULL;
            return NULL;
        }
    }
    sqlite3_reset(c->st[i]);
    sqlite3_clear_bindings(c->st[i]);
    return c->st[i];
}

/* Append s to the JSON array text being built in buf as a JSON string. */
static void json_str(char *buf, size_t *len, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = *len;
    buf[o++] = '"';
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') {
            buf[o++] = '\\';
            buf[o++] = (char)*p;
        } else if (*p < 0x20 || *p == 0x7f) {
            buf[o++] = '\\';
            buf[o++] = 'u';
            buf[o++] = '0';
            buf[o++] = '0';
            buf[o++] = hex[*p >> 4];
            buf[o++] = hex[*p & 15];
        } else {
            buf[o++] = (char)*p;
        }
    }
    buf[o++] = '"';
    *len = o;
}

static int sq_load(gw__store_conn *c, const char *const *ids, size_t n, int64_t now_ms,
                   gw_mute_rec **out, size_t *nout, char *why)
{
    /* Each id escapes to at most 6 bytes per byte, plus quotes and comma. */
    size_t cap = 2 + n * (6 * GW_STORE_ID_MAX + 3);
    char *json = malloc(cap);
    if (!json) {
        gw__store_why(why, "out of memory");
        return -1;
    }
    size_t len = 0;
    json[len++] = '[';
    for (size_t i = 0; i < n; i++) {
        if (i > 0)
            json[len++] = ',';
        json_str(json, &len, ids[i]);
    }
    json[len++] = ']';
    sqlite3_stmt *st = stmt(c, ST_LOAD, why);
    if (!st) {
        free(json);
        return -1;
    }
    gw__store_recs rs = {0};
    int rc = sqlite3_bind_text(st, 1, json, (int)len, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(st, 2, now_ms);
    if (rc != SQLITE_OK) {
        db_why(c, rc, why);
        goto fail;
    }
    atomic_fetch_add_explicit(c->queries, 1, memory_order_relaxed);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (gw__store_recs_add(
                &rs, sqlite3_column_int(st, 0), (const char *)sqlite3_column_text(st, 1),
                (const char *)sqlite3_column_text(st, 2), sqlite3_column_int64(st, 3),
                sqlite3_column_int64(st, 4), (const char *)sqlite3_column_text(st, 5), why) == -1)
            goto fail;
    }
    if (rc != SQLITE_DONE) {
        db_why(c, rc, why);
        goto fail;
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st); /* json is freed below */
    free(json);
    *out = rs.v;
    *nout = rs.n;
    return 0;
fail:
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    free(json);
    free(rs.v);
    return -1;
}

/* Step a statement that is a single write (and maybe RETURNING one row). */
static int step_write(struct gw__store_conn *c, sqlite3_stmt *st, bool *row, char *why)
{
    atomic_fetch_add_explicit(c->queries, 1, memory_order_relaxed);
    int rc = sqlite3_step(st);
    if (row)
        *row = rc == SQLITE_ROW && sqlite3_column_int(st, 0) != 0;
    /* A RETURNING statement finishes its writes before the first row, but
     * commits only when it is run to the end or reset. */
    while (rc == SQLITE_ROW)
        rc = sqlite3_step(st);
    if (rc != SQLITE_DONE) {
        db_why(c, rc, why);
        sqlite3_reset(st);
        return -1;
    }
    sqlite3_reset(st);
    return 0;
}

static int sq_put(gw__store_conn *c, const gw_mute_rec *r, char *why)
{
    int i = r->kind == GW_MUTE_PLAYER    ? ST_PUT_PLAYER
            : r->kind == GW_MUTE_CHANNEL ? ST_PUT_CHANNEL
                                         : ST_PUT_GLOBAL;
    sqlite3_stmt *st = stmt(c, i, why);
    if (!st)
        return -1;
    int rc = sqlite3_bind_text(st, 1, r->owner, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(st, 2, r->target, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(st, 3, r->created_ms);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(st, 4, r->expires_ms);
    if (rc == SQLITE_OK && i != ST_PUT_CHANNEL)
        rc = sqlite3_bind_text(st, 5, r->reason, -1, SQLITE_STATIC);
    if (rc != SQLITE_OK) {
        db_why(c, rc, why);
        return -1;
    }
    rc = step_write(c, st, NULL, why);
    sqlite3_clear_bindings(st);
    return rc;
}

static int sq_del(gw__store_conn *c, gw_mute_kind kind, const char *owner, const char *target,
                  int64_t now_ms, bool *existed, char *why)
{
    int i = kind == GW_MUTE_PLAYER    ? ST_DEL_PLAYER
            : kind == GW_MUTE_CHANNEL ? ST_DEL_CHANNEL
                                      : ST_DEL_GLOBAL;
    sqlite3_stmt *st = stmt(c, i, why);
    if (!st)
        return -1;
    int rc = i == ST_DEL_GLOBAL ? SQLITE_OK : sqlite3_bind_text(st, 1, owner, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(st, 2, target, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(st, 3, now_ms);
    if (rc != SQLITE_OK) {
        db_why(c, rc, why);
        return -1;
    }
    rc = step_write(c, st, existed, why);
    sqlite3_clear_bindings(st);
    return rc;
}

/* Prefix why with the table a purge statement failed on. */
static void table_why(const char *table, char *why)
{
    char tmp[GW_STORE_MSG_MAX];
    snprintf(tmp, sizeof tmp, "%s", why);
    gw__store_why(why, "%s: %s", table, tmp);
}

static int sq_purge(gw__store_conn *c, int64_t before_ms, unsigned max_rows, uint64_t *removed,
                    char *why)
{
    static const int sts[3] = {ST_PURGE_PLAYER, ST_PURGE_CHANNEL, ST_PURGE_GLOBAL};
    static const char *const tables[3] = {"mutes_player", "mutes_channel", "mutes_global"};
    uint64_t total = 0;
    for (int k = 0; k < 3; k++) {
        sqlite3_stmt *st = stmt(c, sts[k], why);
        if (!st) {
            table_why(tables[k], why);
            return -1;
        }
        int rc = sqlite3_bind_int64(st, 1, before_ms);
        if (rc == SQLITE_OK)
            rc = sqlite3_bind_int64(st, 2, max_rows);
        if (rc != SQLITE_OK) {
            db_why(c, rc, why);
            table_why(tables[k], why);
            return -1;
        }
        rc = step_write(c, st, NULL, why);
        sqlite3_clear_bindings(st);
        if (rc == -1) {
            table_why(tables[k], why);
            return -1;
        }
        total += (uint64_t)sqlite3_changes(c->db);
    }
    *removed = total;
    return 0;
}

const gw__store_ops gw__store_sqlite_ops = {
    .name = "sqlite",
    .connect = sq_connect,
    .disconnect = sq_disconnect,
    .migrate = sq_migrate,
    .load = sq_load,
    .put = sq_put,
    .del = sq_del,
    .purge = sq_purge,
};
