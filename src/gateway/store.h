/* SPDX-License-Identifier: MIT */
/*
 * store.h - where mutes live: a small table of functions with two backends,
 * SQLite (store_sqlite.c; the default: one file, WAL) and PostgreSQL
 * (store_pg.c, libpq; for several gateways sharing mutes).
 *
 * Every call blocks (it talks to a database), so the gateway makes them only
 * on its worker threads (workers.c), never on the loop. A store is safe to
 * use from several threads at once: it holds up to `conns` database
 * connections and a call takes a free one (waiting while all are busy).
 *
 * Schema: created and migrated by gw_store_open (a `mudbus_schema_version`
 * table; a database whose version is newer than this binary knows is refused
 * with a clear message, never touched). Tables (times are milliseconds since
 * the epoch; expires_ms NULL or 0 means "never"):
 *   mutes_player  (muter, target, created_ms, expires_ms, reason)    key (muter, target)
 *   mutes_channel (player, channel, created_ms, expires_ms)          key (player, channel)
 *   mutes_global  (target, muted_by, created_ms, expires_ms, reason) key (target)
 *
 * Operations: load (the mutes in force for some players), put (insert or
 * replace one), del (delete one) and purge (delete expired ones). An expired
 * mute is never returned by a load but stays in its table until a purge
 * removes it; purge deletes a bounded number of rows per table per call, so
 * a caller runs it now and then (again while calls remove something)
 * without holding the database for long.
 *
 * Errors: every call returns 0 on success or -1 with a one-line message in
 * msg (GW_STORE_MSG_MAX bytes; msg may be NULL) that names the backend and
 * the operation (e.g. "postgres: load: reconnect failed: connection to
 * server ... failed: Connection refused"); nothing is half-done: a failed
 * put or delete changes nothing. Arguments are checked before the database
 * is asked, the same way for both backends: ids and channel names are
 * 1..GW_STORE_ID_MAX bytes of valid UTF-8, a reason at most
 * GW_STORE_REASON_MAX bytes of valid UTF-8, times are not negative.
 *
 * A PostgreSQL connection that broke (server restarted, network) is
 * reconnected by the next call that takes it; a call during which the
 * connection is lost fails and is not retried (a write may have happened).
 * No call waits for ever: a statement is given up after timeout_ms (server
 * side) or timeout_ms + 2 s (client side, for a server that answers
 * nothing), and reconnecting after max(2 s, timeout_ms) (libpq's
 * connect_timeout, whole seconds). A call may also first wait for a free
 * connection while all `conns` are busy.
 */
#ifndef MUDBUS_GW_STORE_H
#define MUDBUS_GW_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GW_STORE_MSG_MAX    256
#define GW_STORE_SCHEMA     1   /* the schema version this binary writes */
#define GW_STORE_ID_MAX     128 /* bytes of a player id or channel name */
#define GW_STORE_REASON_MAX 800 /* bytes of a reason (200 characters of UTF-8) */

typedef enum gw_mute_kind {
    GW_MUTE_PLAYER = 0, /* owner ignores target (personal) */
    GW_MUTE_CHANNEL,    /* owner does not receive channel `target` */
    GW_MUTE_GLOBAL      /* target may not speak on public channels; owner = muted_by */
} gw_mute_kind;

typedef struct gw_mute_rec {
    gw_mute_kind kind;
    char owner[GW_STORE_ID_MAX + 1];  /* muter / player / muted_by (global) */
    char target[GW_STORE_ID_MAX + 1]; /* target player / channel name / target player */
    int64_t created_ms;
    int64_t expires_ms; /* 0: never */
    char reason[GW_STORE_REASON_MAX + 1];
} gw_mute_rec;

typedef struct gw_store_opts {
    const char *backend;      /* "sqlite" (default when NULL) or "postgres" */
    const char *sqlite_path;  /* the database file (created if missing) */
    const char *postgres_url; /* a libpq connection string or URI */
    unsigned conns;           /* database connections, 1..64 (default 4) */
    unsigned timeout_ms;      /* per statement (SQLite busy timeout, PostgreSQL
                               * statement_timeout and connect_timeout); default 5000 */
} gw_store_opts;

typedef struct gw_store gw_store;

/* Open (connect all `conns` connections, create or migrate the schema).
 * NULL with a message on failure: unknown backend, unset or bad path or
 * URL, unreachable server, conns above 64, a newer schema version (the
 * database is then left untouched), ... The options are only read during
 * the call. Called from one thread. */
gw_store *gw_store_open(const gw_store_opts *o, char *msg);
/* Close every connection and free. NULL does nothing. No call may be in
 * progress. */
void gw_store_close(gw_store *s);

/* The backend's name: "sqlite" or "postgres". Any thread. */
const char *gw_store_backend(const gw_store *s);

/* Every mute that is in force at now_ms (expires_ms 0 or > now_ms) and
 * concerns one of ids[0..n): player and channel mutes whose owner is one of
 * them, global mutes whose target is one of them. One round trip (one
 * statement) per call whatever n is; n is at most 1000 (more is refused); n
 * 0 runs no statement. Duplicate ids are fine. Channel mutes have no reason
 * ("" is returned). On success *out (free() it; NULL when *nout is 0) holds
 * *nout records in any order; on failure *out is NULL and *nout 0. A load
 * returns at most 100,000 records (more is an error). */
int gw_store_load(gw_store *s, const char *const *ids, size_t n, int64_t now_ms, gw_mute_rec **out,
                  size_t *nout, char *msg);

/* Insert or replace the mute with r's (kind, owner, target) key (a global
 * mute's key is its target alone, so a second admin's global mute replaces
 * the first, muted_by included). A channel mute's reason is not stored. */
int gw_store_put(gw_store *s, const gw_mute_rec *r, char *msg);

/* Delete the mute with this key, in force or expired (owner is ignored,
 * and may be NULL, for GW_MUTE_GLOBAL); *existed (may be NULL) says whether
 * there was one in force at now_ms (false on failure). */
int gw_store_del(gw_store *s, gw_mute_kind kind, const char *owner, const char *target,
                 int64_t now_ms, bool *existed, char *msg);

/* Delete mutes that expired at or before before_ms (expires_ms > 0 and
 * <= before_ms; mutes that never expire, expires_ms NULL or 0, are never
 * deleted), at most max_rows from each table per call (1..100000; more, 0
 * or a negative before_ms is refused), so that no statement holds the
 * database long; *removed (may be NULL) is how many rows went, all tables
 * together (0 on failure). One statement per table (mutes_player, then
 * mutes_channel, then mutes_global), each committed on its own: if one
 * fails, the message names its table, and the tables before it may already
 * have lost their expired rows (harmless: no load returns an expired mute,
 * and del's existed ignores it); the next call carries on. Which expired
 * rows of a table go first is unspecified. */
int gw_store_purge(gw_store *s, int64_t before_ms, unsigned max_rows, uint64_t *removed, char *msg);

/* Statements sent by load, put, del and purge since open, failed ones
 * included (for the benchmarks' "queries per storm"); open's connection and
 * schema work is not counted, nor a call refused before reaching the
 * database. Any thread. */
uint64_t gw_store_queries(const gw_store *s);

#endif
