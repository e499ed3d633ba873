/* SPDX-License-Identifier: MIT */
/*
 * Tests of the gateway's mute store (src/gateway/store.c, store_sqlite.c,
 * store_pg.c), every one run against both backends: a real SQLite file in a
 * temporary directory, and a real PostgreSQL server this test starts itself
 * (tests/support/pgsrv.c: initdb, a free port, a database per test). If
 * PostgreSQL cannot be started, its group fails; it is never skipped.
 *
 * Covered: schema creation and idempotent reopening, a newer schema refused
 * and left untouched, put / replace / del / existed for each kind (a global
 * mute keyed by its target alone), loads of 0, 1 and 1000 ids returning
 * exactly the records in force (expiry at the millisecond, 0 and NULL mean
 * never, duplicates, records that concern other players), values that would
 * break quoting (quotes, backslashes, array and JSON syntax, SQL injection,
 * Unicode) and every token character in ids, argument checks (a refused put
 * changes nothing), 8 threads sharing a store with fewer connections (right
 * results, no more connections than configured), the statement counter, a
 * load of 500 ids from 50,000 mutes being one statement and fast, PostgreSQL
 * stopped during use (calls fail naming the backend, then work again after a
 * restart), bad paths, URLs and options, and purge: exactly the expired
 * mutes of each table go (expiry at or before the given time; 0 and NULL
 * never), at most max_rows per table per call, three statements a call,
 * arguments refused before the database, a failing table named.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <limits.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "pgsrv.h"
#include "store.h"

#define NOW      INT64_C(1700000000000) /* the tests' "now" (ms since the epoch) */
#define MINUTE   INT64_C(60000)
#define TOKEN_ID "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"

typedef struct env {
    const char *backend;
    char dir[256]; /* sqlite: the temporary directory */
    pgsrv *pg;     /* postgres: the server */
    int seq;       /* databases made so far */
} env;

/* One test's fixture: a fresh database and a store open on it. */
typedef struct T {
    env *e;
    gw_store_opts o;
    char path[PATH_MAX];
    char url[256];
    gw_store *s;
} T;

static env sqlite_env = {.backend = "sqlite"};
static env pg_env = {.backend = "postgres"};
static bool pg_group_failed; /* the server did not start: the run fails */

static bool is_pg(const T *t)
{
    return t->e == &pg_env;
}

static double mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

/* ---- fixtures ---- */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

static int group_sqlite_setup(void **state)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(sqlite_env.dir, sizeof sqlite_env.dir, "%s/test_gw_store.XXXXXX",
             tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(sqlite_env.dir)) {
        fprintf(stderr, "mkdtemp: %s\n", strerror(errno));
        return -1;
    }
    *state = &sqlite_env;
    return 0;
}

static int group_sqlite_teardown(void **state)
{
    (void)state;
    nftw(sqlite_env.dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

static int group_pg_setup(void **state)
{
    if (pgsrv_start(&pg_env.pg) == -1) {
        pg_group_failed = true;
        fprintf(stderr, "test_gw_store: PostgreSQL could not be started: the postgres group "
                        "FAILS (install postgresql, or set PGSRV_BINDIR)\n");
        return -1;
    }
    *state = &pg_env;
    return 0;
}

static int group_pg_teardown(void **state)
{
    (void)state;
    pgsrv_stop(pg_env.pg);
    pg_env.pg = NULL;
    return 0;
}

/* A fresh database for t (a new file, or a new PostgreSQL database). */
static int new_db(T *t)
{
    env *e = t->e;
    e->seq++;
    t->o.backend = e->backend;
    t->o.conns = 4;
    t->o.timeout_ms = 5000;
    if (e == &sqlite_env) {
        snprintf(t->path, sizeof t->path, "%s/t%d.db", e->dir, e->seq);
        t->o.sqlite_path = t->path;
        return 0;
    }
    char name[32];
    snprintf(name, sizeof name, "t%d", e->seq);
    t->o.postgres_url = t->url;
    return pgsrv_createdb(e->pg, name, t->url, sizeof t->url);
}

static int setup(void **state)
{
    T *t = calloc(1, sizeof *t);
    if (!t)
        return -1;
    t->e = *state;
    char msg[GW_STORE_MSG_MAX] = "";
    if (new_db(t) == -1 || !(t->s = gw_store_open(&t->o, msg))) {
        fprintf(stderr, "setup: %s\n", msg);
        free(t);
        return -1;
    }
    *state = t;
    return 0;
}

static int teardown(void **state)
{
    T *t = *state;
    gw_store_close(t->s);
    free(t);
    return 0;
}

/* ---- direct access to the database, bypassing the store ---- */

/* Run SQL on t's database. 0, or -1 after printing why. */
static int raw_exec(T *t, const char *sql)
{
    if (!is_pg(t)) {
        sqlite3 *db;
        char *err = NULL;
        int rc = sqlite3_open_v2(t->path, &db, SQLITE_OPEN_READWRITE, NULL);
        if (rc == SQLITE_OK) {
            sqlite3_busy_timeout(db, 5000);
            rc = sqlite3_exec(db, sql, NULL, NULL, &err);
        }
        if (rc != SQLITE_OK)
            fprintf(stderr, "raw_exec: %s\n", err ? err : sqlite3_errmsg(db));
        sqlite3_free(err);
        sqlite3_close(db);
        return rc == SQLITE_OK ? 0 : -1;
    }
    PGconn *pg = PQconnectdb(t->url);
    PGresult *res = PQexec(pg, sql);
    ExecStatusType st = PQresultStatus(res);
    int rc = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK ? 0 : -1;
    if (rc == -1)
        fprintf(stderr, "raw_exec: %s\n", PQerrorMessage(pg));
    PQclear(res);
    PQfinish(pg);
    return rc;
}

/* The integer in the first column of the first row, or -1. */
static int64_t raw_int(T *t, const char *sql)
{
    int64_t v = -1;
    if (!is_pg(t)) {
        sqlite3 *db;
        sqlite3_stmt *st = NULL;
        if (sqlite3_open_v2(t->path, &db, SQLITE_OPEN_READWRITE, NULL) == SQLITE_OK &&
            sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK &&
            sqlite3_step(st) == SQLITE_ROW)
            v = sqlite3_column_int64(st, 0);
        else
            fprintf(stderr, "raw_int: %s\n", sqlite3_errmsg(db));
        sqlite3_finalize(st);
        sqlite3_close(db);
        return v;
    }
    PGconn *pg = PQconnectdb(t->url);
    PGresult *res = PQexec(pg, sql);
    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) > 0)
        v = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    else
        fprintf(stderr, "raw_int: %s\n", PQerrorMessage(pg));
    PQclear(res);
    PQfinish(pg);
    return v;
}

/* ---- helpers ---- */

static gw_mute_rec mk(gw_mute_kind kind, const char *owner, const char *target, int64_t created,
                      int64_t expires, const char *reason)
{
    gw_mute_rec r;
    memset(&r, 0, sizeof r);
    r.kind = kind;
    assert_true(strlen(owner) < sizeof r.owner && strlen(target) < sizeof r.target &&
                strlen(reason) < sizeof r.reason);
    strcpy(r.owner, owner);
    strcpy(r.target, target);
    r.created_ms = created;
    r.expires_ms = expires;
    strcpy(r.reason, reason);
    return r;
}

static void put_ok(T *t, const gw_mute_rec *r)
{
    char msg[GW_STORE_MSG_MAX] = "";
    if (gw_store_put(t->s, r, msg) != 0)
        fail_msg("put %d %s %s: %s", (int)r->kind, r->owner, r->target, msg);
}

static bool del_ok(T *t, gw_mute_kind kind, const char *owner, const char *target, int64_t now)
{
    char msg[GW_STORE_MSG_MAX] = "";
    bool existed = !false;
    if (gw_store_del(t->s, kind, owner, target, now, &existed, msg) != 0)
        fail_msg("del %d %s %s: %s", (int)kind, owner ? owner : "(null)", target, msg);
    return existed;
}

/* Load; fails the test on error. The caller frees *out. */
static size_t load_ok(T *t, const char *const *ids, size_t n, int64_t now, gw_mute_rec **out)
{
    char msg[GW_STORE_MSG_MAX] = "";
    size_t nout = 12345;
    *out = (gw_mute_rec *)1;
    if (gw_store_load(t->s, ids, n, now, out, &nout, msg) != 0)
        fail_msg("load of %zu ids: %s", n, msg);
    return nout;
}

static const gw_mute_rec *find(const gw_mute_rec *v, size_t n, gw_mute_kind kind, const char *owner,
                               const char *target)
{
    for (size_t i = 0; i < n; i++)
        if (v[i].kind == kind && strcmp(v[i].owner, owner) == 0 && strcmp(v[i].target, target) == 0)
            return &v[i];
    return NULL;
}

static void assert_rec_equal(const gw_mute_rec *got, const gw_mute_rec *want)
{
    assert_non_null(got);
    assert_int_equal(got->kind, want->kind);
    assert_string_equal(got->owner, want->owner);
    assert_string_equal(got->target, want->target);
    assert_int_equal(got->created_ms, want->created_ms);
    assert_int_equal(got->expires_ms, want->expires_ms);
    assert_string_equal(got->reason, want->kind == GW_MUTE_CHANNEL ? "" : want->reason);
}

/* msg starts with "<backend>: <op>: " and holds `needle` (if not NULL). */
static void assert_msg(const T *t, const char *msg, const char *op, const char *needle)
{
    char prefix[64];
    snprintf(prefix, sizeof prefix, "%s: %s: ", t->e->backend, op);
    if (strncmp(msg, prefix, strlen(prefix)) != 0)
        fail_msg("message \"%s\" does not start with \"%s\"", msg, prefix);
    if (needle && !strstr(msg, needle))
        fail_msg("message \"%s\" does not mention \"%s\"", msg, needle);
    assert_null(strchr(msg, '\n'));
}

/* Close and reopen t's store on the same database. */
static void reopen(T *t)
{
    char msg[GW_STORE_MSG_MAX] = "";
    gw_store_close(t->s);
    t->s = gw_store_open(&t->o, msg);
    if (!t->s)
        fail_msg("reopen: %s", msg);
}

/* ---- schema ---- */

static void test_schema_create_and_reopen(void **state)
{
    T *t = *state;
    assert_string_equal(gw_store_backend(t->s), t->e->backend);
    assert_int_equal(raw_int(t, "SELECT version FROM mudbus_schema_version"), GW_STORE_SCHEMA);
    gw_mute_rec r = mk(GW_MUTE_PLAYER, "alice", "bob", NOW, 0, "spam");
    put_ok(t, &r);
    if (!is_pg(t)) {
        /* WAL mode: the write went to the -wal file next to the database */
        char wal[PATH_MAX + 8];
        snprintf(wal, sizeof wal, "%s-wal", t->path);
        struct stat st;
        assert_int_equal(stat(wal, &st), 0);
        assert_true(st.st_size > 0);
    }
    for (int i = 0; i < 3; i++) {
        reopen(t);
        assert_int_equal(raw_int(t, "SELECT count(*) FROM mudbus_schema_version"), 1);
        assert_int_equal(raw_int(t, "SELECT version FROM mudbus_schema_version"), GW_STORE_SCHEMA);
        const char *ids[] = {"alice"};
        gw_mute_rec *v;
        assert_int_equal(load_ok(t, ids, 1, NOW, &v), 1);
        assert_rec_equal(&v[0], &r);
        free(v);
    }
    /* Tables and key indexes exist under the documented names. */
    assert_int_equal(raw_int(t, "SELECT count(*) FROM mutes_player"), 1);
    assert_int_equal(raw_int(t, "SELECT count(*) FROM mutes_channel"), 0);
    assert_int_equal(raw_int(t, "SELECT count(*) FROM mutes_global"), 0);
}

static void test_newer_schema_refused(void **state)
{
    T *t = *state;
    gw_mute_rec r = mk(GW_MUTE_GLOBAL, "admin", "troll", NOW, 0, "x");
    put_ok(t, &r);
    gw_store_close(t->s);
    t->s = NULL;
    assert_int_equal(raw_exec(t, "UPDATE mudbus_schema_version SET version = 99"), 0);
    char msg[GW_STORE_MSG_MAX] = "";
    assert_null(gw_store_open(&t->o, msg));
    assert_msg(t, msg, "open", "schema version 99");
    assert_non_null(strstr(msg, "newer"));
    /* Untouched: the version and the data are as they were. */
    assert_int_equal(raw_int(t, "SELECT version FROM mudbus_schema_version"), 99);
    assert_int_equal(raw_int(t, "SELECT count(*) FROM mutes_global"), 1);
    /* NULL msg is allowed. */
    assert_null(gw_store_open(&t->o, NULL));
    assert_int_equal(raw_exec(t, "UPDATE mudbus_schema_version SET version = 1"), 0);
    reopen(t);
}

/* ---- put, replace, del ---- */

static void check_kind(T *t, gw_mute_kind kind)
{
    const char *owner = "owner1", *target = "target1";
    /* load finds player and channel mutes by owner, global ones by target */
    const char *key = kind == GW_MUTE_GLOBAL ? target : owner;
    gw_mute_rec *v;
    gw_mute_rec r = mk(kind, owner, target, NOW - 5, NOW + MINUTE, "first reason");
    put_ok(t, &r);
    assert_int_equal(load_ok(t, &key, 1, NOW, &v), 1);
    assert_rec_equal(&v[0], &r);
    free(v);

    /* replace: same key, new values (for a global mute, a new muted_by) */
    gw_mute_rec r2 = mk(kind, kind == GW_MUTE_GLOBAL ? "owner2" : owner, target, NOW, 0, "second");
    put_ok(t, &r2);
    assert_int_equal(load_ok(t, &key, 1, NOW, &v), 1);
    assert_rec_equal(&v[0], &r2);
    free(v);

    /* a different key is a second record */
    gw_mute_rec r3 = mk(kind, owner, "target2", NOW, 0, "third");
    if (kind == GW_MUTE_GLOBAL) {
        put_ok(t, &r3); /* concerns target2, not target1 */
        assert_int_equal(load_ok(t, &key, 1, NOW, &v), 1);
        free(v);
    } else {
        put_ok(t, &r3);
        assert_int_equal(load_ok(t, &key, 1, NOW, &v), 2);
        assert_rec_equal(find(v, 2, kind, owner, "target2"), &r3);
        free(v);
    }

    /* del: existed, then gone, then not existed */
    assert_true(del_ok(t, kind, kind == GW_MUTE_GLOBAL ? "whoever" : owner, target, NOW));
    assert_int_equal(load_ok(t, &key, 1, 0, &v), kind == GW_MUTE_GLOBAL ? 0 : 1);
    free(v);
    assert_false(del_ok(t, kind, owner, target, NOW));

    /* an expired mute: deleted, but did not exist "in force" */
    gw_mute_rec old = mk(kind, owner, target, NOW - 2 * MINUTE, NOW - MINUTE, "old");
    put_ok(t, &old);
    assert_int_equal(load_ok(t, &key, 1, NOW, &v), kind == GW_MUTE_GLOBAL ? 0 : 1);
    free(v);
    assert_false(del_ok(t, kind, owner, target, NOW));
    /* really deleted: not there even at a time when it would be in force */
    assert_int_equal(load_ok(t, &key, 1, NOW - 2 * MINUTE, &v), kind == GW_MUTE_GLOBAL ? 0 : 1);
    free(v);
    /* expiring at exactly now is not in force; a millisecond later is */
    gw_mute_rec edge = mk(kind, owner, target, NOW, NOW, "edge");
    put_ok(t, &edge);
    assert_false(del_ok(t, kind, owner, target, NOW));
    edge.expires_ms = NOW + 1;
    put_ok(t, &edge);
    assert_true(del_ok(t, kind, owner, target, NOW));
    if (kind == GW_MUTE_GLOBAL) {
        /* owner is ignored: NULL is fine */
        put_ok(t, &r);
        assert_true(del_ok(t, kind, NULL, target, NOW));
    }
}

static void test_put_replace_del_player(void **state)
{
    check_kind(*state, GW_MUTE_PLAYER);
}

static void test_put_replace_del_channel(void **state)
{
    check_kind(*state, GW_MUTE_CHANNEL);
}

static void test_put_replace_del_global(void **state)
{
    check_kind(*state, GW_MUTE_GLOBAL);
}

static void test_global_keyed_by_target(void **state)
{
    T *t = *state;
    gw_mute_rec a = mk(GW_MUTE_GLOBAL, "admin1", "troll", NOW, 0, "by admin1");
    gw_mute_rec b = mk(GW_MUTE_GLOBAL, "admin2", "troll", NOW + 1, NOW + MINUTE, "by admin2");
    put_ok(t, &a);
    put_ok(t, &b);
    assert_int_equal(raw_int(t, "SELECT count(*) FROM mutes_global"), 1);
    const char *ids[] = {"troll", "admin1", "admin2"};
    gw_mute_rec *v;
    assert_int_equal(load_ok(t, ids, 3, NOW, &v), 1);
    assert_rec_equal(&v[0], &b);
    free(v);
    /* a load by the muting admin does not return it */
    assert_int_equal(load_ok(t, ids + 1, 2, NOW, &v), 0);
    assert_null(v);
}

/* ---- load ---- */

static void test_load_zero_one(void **state)
{
    T *t = *state;
    gw_mute_rec *v;
    uint64_t q = gw_store_queries(t->s);
    assert_int_equal(load_ok(t, NULL, 0, NOW, &v), 0);
    assert_null(v);
    assert_int_equal(gw_store_queries(t->s), q); /* nothing to ask */
    const char *one[] = {"nobody"};
    assert_int_equal(load_ok(t, one, 1, NOW, &v), 0);
    assert_null(v);
    assert_int_equal(gw_store_queries(t->s), q + 1);

    /* one id: its personal and channel mutes and the global mute on it, not
     * mutes by others on it, and not the global mutes it made */
    gw_mute_rec mine[] = {
        mk(GW_MUTE_PLAYER, "p1", "p2", NOW, 0, "a"),
        mk(GW_MUTE_PLAYER, "p1", "p3", NOW, NOW + 1, "b"),
        mk(GW_MUTE_CHANNEL, "p1", "global", NOW, 0, ""),
        mk(GW_MUTE_GLOBAL, "adm", "p1", NOW, NOW + MINUTE, "c"),
    };
    gw_mute_rec others[] = {
        mk(GW_MUTE_PLAYER, "p2", "p1", NOW, 0, "on p1"),
        mk(GW_MUTE_PLAYER, "p10", "p2", NOW, 0, "prefix"),
        mk(GW_MUTE_PLAYER, "P1", "p2", NOW, 0, "case"),
        mk(GW_MUTE_CHANNEL, "p2", "say", NOW, 0, ""),
        mk(GW_MUTE_GLOBAL, "p1", "p4", NOW, 0, "made by p1"),
        mk(GW_MUTE_PLAYER, "p1", "p5", NOW - 10, NOW, "expired at now"),
        mk(GW_MUTE_CHANNEL, "p1", "local", NOW - 10, NOW - 1, ""),
    };
    for (size_t i = 0; i < sizeof mine / sizeof mine[0]; i++)
        put_ok(t, &mine[i]);
    for (size_t i = 0; i < sizeof others / sizeof others[0]; i++)
        put_ok(t, &others[i]);
    /* a row written by someone else with expires NULL: never expires */
    assert_int_equal(raw_exec(t, "INSERT INTO mutes_player (muter, target, created_ms, "
                                 "expires_ms, reason) VALUES ('p1', 'p6', 5, NULL, 'null')"),
                     0);
    const char *ids[] = {"p1"};
    size_t n = load_ok(t, ids, 1, NOW, &v);
    assert_int_equal(n, 5);
    for (size_t i = 0; i < sizeof mine / sizeof mine[0]; i++)
        assert_rec_equal(find(v, n, mine[i].kind, mine[i].owner, mine[i].target), &mine[i]);
    gw_mute_rec nul = mk(GW_MUTE_PLAYER, "p1", "p6", 5, 0, "null");
    assert_rec_equal(find(v, n, GW_MUTE_PLAYER, "p1", "p6"), &nul);
    free(v);
    /* duplicates in ids do not duplicate records */
    const char *dup[] = {"p1", "p1", "p1"};
    assert_int_equal(load_ok(t, dup, 3, NOW, &v), 5);
    free(v);
    /* a millisecond before p1->p3 expires it is in force, at expiry not */
    assert_int_equal(load_ok(t, ids, 1, NOW + 1, &v), 4);
    assert_null(find(v, 4, GW_MUTE_PLAYER, "p1", "p3"));
    free(v);
}

static void test_load_1000(void **state)
{
    T *t = *state;
    enum { N = 1000 };
    static char names[N + 1][16];
    const char *ids[N + 1];
    for (int i = 0; i <= N; i++) {
        snprintf(names[i], sizeof names[i], "u%d", i);
        ids[i] = names[i];
    }
    /* every 7th player has a personal mute, every 11th an expired one, every
     * 13th a channel mute, every 17th is globally muted; player N (not
     * loaded) has one of each */
    size_t want = 0;
    for (int i = 0; i <= N; i++) {
        bool loaded = i < N;
        if (i % 7 == 0 || i == N) {
            gw_mute_rec r = mk(GW_MUTE_PLAYER, names[i], "x", NOW, 0, "p");
            put_ok(t, &r);
            want += loaded;
        }
        if (i % 11 == 0 || i == N) {
            gw_mute_rec r = mk(GW_MUTE_PLAYER, names[i], "gone", NOW - 9, NOW - 1, "e");
            put_ok(t, &r);
        }
        if (i % 13 == 0 || i == N) {
            gw_mute_rec r = mk(GW_MUTE_CHANNEL, names[i], "global", NOW, NOW + MINUTE, "");
            put_ok(t, &r);
            want += loaded;
        }
        if (i % 17 == 0 || i == N) {
            gw_mute_rec r = mk(GW_MUTE_GLOBAL, "adm", names[i], NOW, 0, "g");
            put_ok(t, &r);
            want += loaded;
        }
    }
    uint64_t q = gw_store_queries(t->s);
    gw_mute_rec *v;
    size_t n = load_ok(t, ids, N, NOW, &v);
    assert_int_equal(gw_store_queries(t->s), q + 1);
    assert_int_equal(n, want);
    for (size_t i = 0; i < n; i++) {
        int k = atoi(v[i].kind == GW_MUTE_GLOBAL ? v[i].target + 1 : v[i].owner + 1);
        assert_true(k >= 0 && k < N);
        switch (v[i].kind) {
        case GW_MUTE_PLAYER:
            assert_true(k % 7 == 0);
            assert_string_equal(v[i].target, "x");
            break;
        case GW_MUTE_CHANNEL:
            assert_true(k % 13 == 0);
            break;
        case GW_MUTE_GLOBAL:
            assert_true(k % 17 == 0);
            break;
        }
    }
    free(v);
    /* more than 1000 ids is refused, naming the limit */
    char msg[GW_STORE_MSG_MAX];
    size_t nout = 7;
    v = (gw_mute_rec *)1;
    assert_int_equal(gw_store_load(t->s, ids, N + 1, NOW, &v, &nout, msg), -1);
    assert_null(v);
    assert_int_equal(nout, 0);
    assert_msg(t, msg, "load", "1000");
}

/* ---- values that must survive any quoting ---- */

static void test_injection_and_unicode(void **state)
{
    T *t = *state;
    static const char *const reasons[] = {
        "it's \"quoted\"",
        "back\\slash \\\\ and \\' and \\\"",
        "'; DROP TABLE mutes_player; --",
        "\"); DROP TABLE mutes_global; --",
        "{\"a\",\"b\"} [1,2] ARRAY['x'] $1 ?1 %s %n",
        "unicode: \xc3\xa9\xe2\x82\xac \xe4\xb8\xad\xe6\x96\x87 \xf0\x9f\x98\x80 \xe2\x80\xae",
        "tab\tnewline\nreturn\r end",
        "",
    };
    /* ids: every token character, and characters that are special in SQL
     * strings, PostgreSQL array literals, JSON and LIKE patterns */
    static const char *const owners[] = {
        TOKEN_ID,   "a_",   "ab",     "o'neil", "q\"uote",          "back\\slash",
        "{br,ace}", "NULL", "sp ace", "p%",     "\xf0\x9f\x98\x80",
    };
    enum { NR = sizeof reasons / sizeof reasons[0], NO = sizeof owners / sizeof owners[0] };
    for (size_t i = 0; i < NO; i++) {
        gw_mute_rec r =
            mk(GW_MUTE_PLAYER, owners[i], owners[(i + 1) % NO], NOW, 0, reasons[i % NR]);
        put_ok(t, &r);
        gw_mute_rec g = mk(GW_MUTE_GLOBAL, "adm", owners[i], NOW, 0, reasons[(i + 3) % NR]);
        put_ok(t, &g);
    }
    for (size_t i = 0; i < NR; i++) {
        gw_mute_rec r =
            mk(GW_MUTE_PLAYER, "reasons", owners[i % NO], NOW + (int64_t)i, 0, reasons[i]);
        put_ok(t, &r);
    }
    /* each owner alone finds exactly its own two records */
    for (size_t i = 0; i < NO; i++) {
        gw_mute_rec *v;
        size_t n = load_ok(t, &owners[i], 1, NOW, &v);
        assert_int_equal(n, 2);
        gw_mute_rec r =
            mk(GW_MUTE_PLAYER, owners[i], owners[(i + 1) % NO], NOW, 0, reasons[i % NR]);
        assert_rec_equal(find(v, n, GW_MUTE_PLAYER, owners[i], owners[(i + 1) % NO]), &r);
        gw_mute_rec g = mk(GW_MUTE_GLOBAL, "adm", owners[i], NOW, 0, reasons[(i + 3) % NR]);
        assert_rec_equal(find(v, n, GW_MUTE_GLOBAL, "adm", owners[i]), &g);
        free(v);
    }
    /* all at once */
    gw_mute_rec *v;
    assert_int_equal(load_ok(t, owners, NO, NOW, &v), 2 * NO);
    free(v);
    const char *who[] = {"reasons"};
    size_t n = load_ok(t, who, 1, NOW, &v);
    assert_int_equal(n, NR < NO ? NR : NO);
    for (size_t i = 0; i < n; i++)
        assert_string_equal(v[i].reason, reasons[v[i].created_ms - NOW]);
    free(v);
    assert_int_equal(raw_int(t, "SELECT count(*) FROM mutes_player"), NO + (NR < NO ? NR : NO));
    assert_int_equal(raw_int(t, "SELECT count(*) FROM mutes_global"), NO);

    /* the longest id and reason round-trip */
    gw_mute_rec big;
    memset(&big, 0, sizeof big);
    big.kind = GW_MUTE_PLAYER;
    memset(big.owner, 'o', GW_STORE_ID_MAX);
    memset(big.target, 't', GW_STORE_ID_MAX);
    for (int i = 0; i < GW_STORE_REASON_MAX / 4; i++)
        memcpy(big.reason + 4 * i, "\xf0\x9f\x98\x80", 4);
    big.created_ms = NOW;
    put_ok(t, &big);
    const char *bo = big.owner;
    assert_int_equal(load_ok(t, &bo, 1, NOW, &v), 1);
    assert_rec_equal(&v[0], &big);
    free(v);
}

static void test_argument_checks(void **state)
{
    T *t = *state;
    char msg[GW_STORE_MSG_MAX];
    uint64_t q = gw_store_queries(t->s);
    gw_mute_rec r = mk(GW_MUTE_PLAYER, "a", "b", NOW, 0, "ok");
    gw_mute_rec bad = r;
    bad.owner[0] = '\0';
    assert_int_equal(gw_store_put(t->s, &bad, msg), -1);
    assert_msg(t, msg, "put", "owner");
    bad = r;
    memset(bad.target, 'x', sizeof bad.target); /* 129 bytes, no terminator */
    assert_int_equal(gw_store_put(t->s, &bad, msg), -1);
    assert_msg(t, msg, "put", "target");
    bad = r;
    snprintf(bad.reason, sizeof bad.reason, "%s", "bad \xc3\x28 utf8");
    assert_int_equal(gw_store_put(t->s, &bad, msg), -1);
    assert_msg(t, msg, "put", "UTF-8");
    bad = r;
    memset(bad.reason, 'r', sizeof bad.reason);
    assert_int_equal(gw_store_put(t->s, &bad, msg), -1);
    assert_msg(t, msg, "put", "reason");
    bad = r;
    bad.expires_ms = -1;
    assert_int_equal(gw_store_put(t->s, &bad, msg), -1);
    assert_msg(t, msg, "put", "negative");
    bad = r;
    bad.kind = (gw_mute_kind)7;
    assert_int_equal(gw_store_put(t->s, &bad, NULL), -1);
    assert_int_equal(gw_store_del(t->s, (gw_mute_kind)7, "a", "b", NOW, NULL, msg), -1);
    assert_msg(t, msg, "del", "kind");
    bool existed = true;
    assert_int_equal(gw_store_del(t->s, GW_MUTE_PLAYER, NULL, "b", NOW, &existed, msg), -1);
    assert_false(existed);
    assert_msg(t, msg, "del", "owner");
    const char *ids[] = {"ok", ""};
    gw_mute_rec *v;
    size_t n;
    assert_int_equal(gw_store_load(t->s, ids, 2, NOW, &v, &n, msg), -1);
    assert_msg(t, msg, "load", "ids[1]");
    /* nothing was written, no statement was run */
    assert_int_equal(raw_int(t, "SELECT count(*) FROM mutes_player"), 0);
    assert_int_equal(gw_store_queries(t->s), q);
    /* NULL existed is allowed */
    put_ok(t, &r);
    assert_int_equal(gw_store_del(t->s, GW_MUTE_PLAYER, "a", "b", NOW, NULL, NULL), 0);
}

/* ---- threads ---- */

enum { THREADS = 8, ITER = 40, POOL = 3 };

typedef struct worker {
    gw_store *s;
    int id;
    _Atomic int *errors;
    char msg[GW_STORE_MSG_MAX + 64];
} worker;

static void *work(void *arg)
{
    worker *w = arg;
    char me[16], target[16], msg[GW_STORE_MSG_MAX];
    snprintf(me, sizeof me, "w%d", w->id);
    const char *ids[] = {me};
    for (int i = 0; i < ITER; i++) {
        snprintf(target, sizeof target, "x%d", i);
        gw_mute_rec r = mk(GW_MUTE_PLAYER, me, target, NOW + i, 0, me);
        gw_mute_rec *v = NULL;
        size_t n = 0;
        bool existed = false;
        if (gw_store_put(w->s, &r, msg) != 0 ||
            gw_store_load(w->s, ids, 1, NOW, &v, &n, msg) != 0) {
            snprintf(w->msg, sizeof w->msg, "%s: %s", me, msg);
            atomic_fetch_add(w->errors, 1);
            return NULL;
        }
        bool right = n == (size_t)i + 1;
        for (size_t k = 0; k < n; k++)
            right = right && strcmp(v[k].owner, me) == 0 && strcmp(v[k].reason, me) == 0;
        free(v);
        if (!right) {
            snprintf(w->msg, sizeof w->msg, "%s: iteration %d loaded %zu records", me, i, n);
            atomic_fetch_add(w->errors, 1);
            return NULL;
        }
        if (i % 4 == 3 &&
            (gw_store_del(w->s, GW_MUTE_CHANNEL, me, "none", NOW, &existed, msg) != 0 || existed)) {
            snprintf(w->msg, sizeof w->msg, "%s: del: %s", me, existed ? "existed" : msg);
            atomic_fetch_add(w->errors, 1);
            return NULL;
        }
    }
    return NULL;
}

/* Open descriptors of this process on the file at path. */
static int fds_on(const char *path)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        char link[PATH_MAX], target[PATH_MAX];
        snprintf(link, sizeof link, "/proc/self/fd/%s", de->d_name);
        ssize_t l = readlink(link, target, sizeof target - 1);
        if (l > 0) {
            target[l] = '\0';
            n += strcmp(target, path) == 0;
        }
    }
    closedir(d);
    return n;
}

static int64_t pg_sessions(T *t)
{
    return raw_int(t, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                      " AND application_name = 'mudbus-gateway'");
}

static void test_threads(void **state)
{
    T *t = *state;
    char msg[GW_STORE_MSG_MAX] = "";
    gw_store_close(t->s);
    t->o.conns = POOL;
    t->s = gw_store_open(&t->o, msg);
    if (!t->s)
        fail_msg("open: %s", msg);
    uint64_t q = gw_store_queries(t->s);
    _Atomic int errors = 0;
    static worker w[THREADS];
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++) {
        w[i] = (worker){.s = t->s, .id = i, .errors = &errors};
        assert_int_equal(pthread_create(&th[i], NULL, work, &w[i]), 0);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < THREADS; i++)
        if (w[i].msg[0])
            print_error("%s\n", w[i].msg);
    assert_int_equal(atomic_load(&errors), 0);
    assert_int_equal(gw_store_queries(t->s) - q, THREADS * (ITER * 2 + ITER / 4));
    /* all writes are there */
    char names[THREADS][8];
    const char *ids[THREADS];
    for (int i = 0; i < THREADS; i++) {
        snprintf(names[i], sizeof names[i], "w%d", i);
        ids[i] = names[i];
    }
    gw_mute_rec *v;
    assert_int_equal(load_ok(t, ids, THREADS, NOW, &v), THREADS * ITER);
    free(v);
    /* no more connections than configured */
    if (is_pg(t)) {
        /* sessions of the closed fixture store may take a moment to go */
        int64_t n = -1;
        for (int i = 0; i < 200 && (n = pg_sessions(t)) != POOL; i++)
            usleep(10000);
        assert_int_equal(n, POOL);
    } else {
        assert_int_equal(fds_on(t->path), POOL);
    }
}

/* ---- statement counter ---- */

static void test_query_counter(void **state)
{
    T *t = *state;
    assert_int_equal(gw_store_queries(t->s), 0); /* open's schema work is not counted */
    gw_mute_rec r = mk(GW_MUTE_CHANNEL, "a", "say", NOW, 0, "");
    put_ok(t, &r);
    assert_int_equal(gw_store_queries(t->s), 1);
    const char *ids[] = {"a", "b", "c"};
    gw_mute_rec *v;
    assert_int_equal(load_ok(t, ids, 3, NOW, &v), 1);
    free(v);
    assert_int_equal(gw_store_queries(t->s), 2);
    assert_true(del_ok(t, GW_MUTE_CHANNEL, "a", "say", NOW));
    assert_int_equal(gw_store_queries(t->s), 3);
    reopen(t);
    assert_int_equal(gw_store_queries(t->s), 0);
}

/* A load that would return more than 100,000 records fails (a defined
 * bound on the memory one call may take) rather than growing without end. */
static void test_load_record_limit(void **state)
{
    T *t = *state;
    const char *fill_sqlite =
        "INSERT INTO mutes_player WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM c"
        " WHERE i < 100000) SELECT 'big', 'q' || i, 1, 0, '' FROM c;";
    const char *fill_pg = "INSERT INTO mutes_player SELECT 'big', 'q' || i, 1, 0, ''"
                          " FROM generate_series(0, 100000) i;";
    assert_int_equal(raw_exec(t, is_pg(t) ? fill_pg : fill_sqlite), 0);
    const char *ids[] = {"big"};
    gw_mute_rec *v = (gw_mute_rec *)1;
    size_t n = 5;
    char msg[GW_STORE_MSG_MAX];
    assert_int_equal(gw_store_load(t->s, ids, 1, NOW, &v, &n, msg), -1);
    assert_null(v);
    assert_int_equal(n, 0);
    assert_msg(t, msg, "load", "more than 100000");
    /* one fewer is fine */
    assert_int_equal(raw_exec(t, "DELETE FROM mutes_player WHERE target = 'q0'"), 0);
    assert_int_equal(load_ok(t, ids, 1, NOW, &v), 100000);
    free(v);
}

/* ---- purge ---- */

/* Purge; fails the test on error. Returns *removed. */
static uint64_t purge_ok(T *t, int64_t before, unsigned max_rows)
{
    char msg[GW_STORE_MSG_MAX] = "";
    uint64_t removed = 12345;
    if (gw_store_purge(t->s, before, max_rows, &removed, msg) != 0)
        fail_msg("purge before %" PRId64 " max %u: %s", before, max_rows, msg);
    return removed;
}

static void assert_counts(T *t, int64_t player, int64_t channel, int64_t global)
{
    assert_int_equal(raw_int(t, "SELECT count(*) FROM mutes_player"), player);
    assert_int_equal(raw_int(t, "SELECT count(*) FROM mutes_channel"), channel);
    assert_int_equal(raw_int(t, "SELECT count(*) FROM mutes_global"), global);
}

static void test_purge_expired(void **state)
{
    T *t = *state;
    /* per table: two expired long ago, one expired at exactly NOW (at or
     * before: goes), one a millisecond later (stays), one in an hour, one
     * never (0) */
    gw_mute_rec live[] = {
        mk(GW_MUTE_PLAYER, "p1", "t-soon", NOW - MINUTE, NOW + 1, "soon"),
        mk(GW_MUTE_PLAYER, "p1", "t-later", NOW - MINUTE, NOW + 60 * MINUTE, "later"),
        mk(GW_MUTE_PLAYER, "p2", "t-never", NOW - MINUTE, 0, "never"),
        mk(GW_MUTE_CHANNEL, "p1", "c-soon", NOW - MINUTE, NOW + 1, ""),
        mk(GW_MUTE_CHANNEL, "p1", "c-later", NOW - MINUTE, NOW + 60 * MINUTE, ""),
        mk(GW_MUTE_CHANNEL, "p2", "c-never", NOW - MINUTE, 0, ""),
        mk(GW_MUTE_GLOBAL, "adm", "p1", NOW - MINUTE, NOW + 1, "g-soon"),
        mk(GW_MUTE_GLOBAL, "adm", "p2", NOW - MINUTE, 0, "g-never"),
        mk(GW_MUTE_GLOBAL, "adm", "p3", NOW - MINUTE, NOW + 60 * MINUTE, "g-later"),
    };
    gw_mute_rec dead[] = {
        mk(GW_MUTE_PLAYER, "p1", "t-old", NOW - 3 * MINUTE, NOW - 2 * MINUTE, "old"),
        mk(GW_MUTE_PLAYER, "p3", "t-old", NOW - 3 * MINUTE, 1, "very old"),
        mk(GW_MUTE_PLAYER, "p1", "t-now", NOW - MINUTE, NOW, "at now"),
        mk(GW_MUTE_CHANNEL, "p1", "c-old", NOW - 3 * MINUTE, NOW - 2 * MINUTE, ""),
        mk(GW_MUTE_CHANNEL, "p2", "c-old", NOW - 3 * MINUTE, NOW - 1, ""),
        mk(GW_MUTE_CHANNEL, "p1", "c-now", NOW - MINUTE, NOW, ""),
        mk(GW_MUTE_GLOBAL, "adm", "p4", NOW - 3 * MINUTE, NOW - 2 * MINUTE, "g-old"),
        mk(GW_MUTE_GLOBAL, "adm", "p5", NOW - MINUTE, NOW, "g-now"),
    };
    enum { NL = sizeof live / sizeof live[0], ND = sizeof dead / sizeof dead[0] };
    for (size_t i = 0; i < NL; i++)
        put_ok(t, &live[i]);
    for (size_t i = 0; i < ND; i++)
        put_ok(t, &dead[i]);
    /* rows written by someone else with expires NULL: never expire */
    assert_int_equal(raw_exec(t, "INSERT INTO mutes_player (muter, target, created_ms, expires_ms,"
                                 " reason) VALUES ('p2', 't-null', 5, NULL, 'null');"
                                 "INSERT INTO mutes_channel (player, channel, created_ms,"
                                 " expires_ms) VALUES ('p2', 'c-null', 5, NULL);"
                                 "INSERT INTO mutes_global (target, muted_by, created_ms,"
                                 " expires_ms, reason) VALUES ('p6', 'adm', 5, NULL, 'null')"),
                     0);
    assert_counts(t, 7, 7, 6);
    /* before 0 and before the oldest expiry: nothing has expired yet */
    assert_int_equal(purge_ok(t, 0, 1000), 0);
    assert_int_equal(purge_ok(t, NOW - 2 * MINUTE - 1, 1000), 1); /* only expires_ms 1 */
    assert_counts(t, 6, 7, 6);

    uint64_t q = gw_store_queries(t->s);
    assert_int_equal(purge_ok(t, NOW, 1000), ND - 1);
    assert_int_equal(gw_store_queries(t->s) - q, 3); /* one statement per table */
    assert_counts(t, 4, 4, 4);
    /* nothing left to purge; removed and msg may be NULL */
    assert_int_equal(purge_ok(t, NOW, 100000), 0);
    assert_int_equal(gw_store_purge(t->s, NOW, 1, NULL, NULL), 0);
    assert_counts(t, 4, 4, 4);

    /* a load still returns every live mute, and finds no dead one even at a
     * time when it would have been in force */
    const char *ids[] = {"p1", "p2", "p3", "p4", "p5", "p6"};
    gw_mute_rec *v;
    size_t n = load_ok(t, ids, 6, NOW, &v);
    assert_int_equal(n, NL + 3);
    for (size_t i = 0; i < NL; i++)
        assert_rec_equal(find(v, n, live[i].kind, live[i].owner, live[i].target), &live[i]);
    assert_non_null(find(v, n, GW_MUTE_PLAYER, "p2", "t-null"));
    assert_non_null(find(v, n, GW_MUTE_CHANNEL, "p2", "c-null"));
    assert_non_null(find(v, n, GW_MUTE_GLOBAL, "adm", "p6"));
    free(v);
    n = load_ok(t, ids, 6, 0, &v);
    assert_int_equal(n, NL + 3);
    for (size_t i = 0; i < ND; i++)
        assert_null(find(v, n, dead[i].kind, dead[i].owner, dead[i].target));
    free(v);

    /* later, the live ones expire in turn; never-expiring ones stay */
    assert_int_equal(purge_ok(t, NOW + 1, 1000), 3);
    assert_int_equal(purge_ok(t, NOW + 60 * MINUTE, 1000), 3);
    assert_int_equal(purge_ok(t, INT64_MAX, 1000), 0);
    assert_counts(t, 2, 2, 2);
}

static void test_purge_max_rows(void **state)
{
    T *t = *state;
    /* 5 expired personal mutes, 3 expired channel mutes, 1 expired global
     * mute, and one of each in force */
    char name[16];
    for (int i = 0; i < 5; i++) {
        snprintf(name, sizeof name, "t%d", i);
        gw_mute_rec r = mk(GW_MUTE_PLAYER, "p", name, NOW - 9, NOW - i, "e");
        put_ok(t, &r);
    }
    for (int i = 0; i < 3; i++) {
        snprintf(name, sizeof name, "c%d", i);
        gw_mute_rec r = mk(GW_MUTE_CHANNEL, "p", name, NOW - 9, NOW - 1 - i, "");
        put_ok(t, &r);
    }
    gw_mute_rec g = mk(GW_MUTE_GLOBAL, "adm", "x", NOW - 9, NOW - 5, "e");
    put_ok(t, &g);
    gw_mute_rec keep[] = {
        mk(GW_MUTE_PLAYER, "p", "keep", NOW, NOW + MINUTE, "k"),
        mk(GW_MUTE_CHANNEL, "p", "keep", NOW, 0, ""),
        mk(GW_MUTE_GLOBAL, "adm", "p", NOW, NOW + MINUTE, "k"),
    };
    for (size_t i = 0; i < 3; i++)
        put_ok(t, &keep[i]);
    assert_counts(t, 6, 4, 2);

    /* max_rows 2: at most 2 from each table per call */
    uint64_t q = gw_store_queries(t->s);
    assert_int_equal(purge_ok(t, NOW, 2), 2 + 2 + 1);
    assert_counts(t, 4, 2, 1);
    assert_int_equal(purge_ok(t, NOW, 2), 2 + 1 + 0);
    assert_counts(t, 2, 1, 1);
    assert_int_equal(purge_ok(t, NOW, 2), 1);
    assert_counts(t, 1, 1, 1);
    assert_int_equal(purge_ok(t, NOW, 2), 0);
    assert_counts(t, 1, 1, 1);
    assert_int_equal(gw_store_queries(t->s) - q, 4 * 3);

    /* max_rows 1 takes one per table */
    for (int i = 0; i < 3; i++) {
        snprintf(name, sizeof name, "again%d", i);
        gw_mute_rec r = mk(GW_MUTE_PLAYER, "p", name, NOW - 9, NOW - 1, "e");
        put_ok(t, &r);
        gw_mute_rec c = mk(GW_MUTE_CHANNEL, "p", name, NOW - 9, NOW - 1, "");
        put_ok(t, &c);
    }
    assert_int_equal(purge_ok(t, NOW, 1), 2);
    assert_int_equal(purge_ok(t, NOW, 1), 2);
    assert_int_equal(purge_ok(t, NOW, 1), 2);
    assert_int_equal(purge_ok(t, NOW, 1), 0);

    const char *ids[] = {"p"};
    gw_mute_rec *v;
    size_t n = load_ok(t, ids, 1, NOW, &v);
    assert_int_equal(n, 3);
    for (size_t i = 0; i < 3; i++)
        assert_rec_equal(find(v, n, keep[i].kind, keep[i].owner, keep[i].target), &keep[i]);
    free(v);
}

static void test_purge_argument_checks(void **state)
{
    T *t = *state;
    gw_mute_rec r = mk(GW_MUTE_PLAYER, "a", "b", NOW - 9, NOW - 1, "expired");
    put_ok(t, &r);
    char msg[GW_STORE_MSG_MAX];
    uint64_t q = gw_store_queries(t->s);
    uint64_t removed = 99;
    assert_int_equal(gw_store_purge(t->s, NOW, 0, &removed, msg), -1);
    assert_msg(t, msg, "purge", "max_rows must be 1..100000");
    assert_int_equal(removed, 0);
    removed = 99;
    assert_int_equal(gw_store_purge(t->s, NOW, 100001, &removed, msg), -1);
    assert_msg(t, msg, "purge", "max_rows");
    assert_int_equal(removed, 0);
    assert_int_equal(gw_store_purge(t->s, NOW, UINT_MAX, &removed, msg), -1);
    assert_msg(t, msg, "purge", "max_rows");
    removed = 99;
    assert_int_equal(gw_store_purge(t->s, -1, 10, &removed, msg), -1);
    assert_msg(t, msg, "purge", "before_ms must not be negative");
    assert_int_equal(removed, 0);
    assert_int_equal(gw_store_purge(t->s, INT64_MIN, 10, NULL, NULL), -1);
    /* nothing was asked, nothing went */
    assert_int_equal(gw_store_queries(t->s), q);
    assert_int_equal(raw_int(t, "SELECT count(*) FROM mutes_player"), 1);
    /* the limits themselves are fine */
    assert_int_equal(purge_ok(t, NOW, 100000), 1);
    assert_int_equal(purge_ok(t, NOW, 1), 0);
    assert_int_equal(gw_store_queries(t->s), q + 6);
}

/* A table that cannot be purged (here: dropped behind the store's back)
 * fails the call with a message naming it; the table before it was purged
 * (each statement commits on its own) and the next call carries on. */
static void test_purge_failure(void **state)
{
    T *t = *state;
    gw_mute_rec rs[] = {
        mk(GW_MUTE_PLAYER, "a", "b", NOW - 9, NOW - 1, "expired"),
        mk(GW_MUTE_CHANNEL, "a", "say", NOW - 9, NOW - 1, ""),
        mk(GW_MUTE_GLOBAL, "adm", "a", NOW - 9, NOW - 1, "expired"),
    };
    for (size_t i = 0; i < 3; i++)
        put_ok(t, &rs[i]);
    assert_int_equal(raw_exec(t, "DROP TABLE mutes_channel"), 0);
    char msg[GW_STORE_MSG_MAX] = "";
    uint64_t removed = 99;
    assert_int_equal(gw_store_purge(t->s, NOW, 100, &removed, msg), -1);
    assert_int_equal(removed, 0);
    assert_msg(t, msg, "purge", "mutes_channel: ");
    print_message("[   INFO   ] purge failure: %s\n", msg);
    assert_int_equal(raw_int(t, "SELECT count(*) FROM mutes_player"), 0);
    assert_int_equal(raw_int(t, "SELECT count(*) FROM mutes_global"), 1);
    assert_int_equal(raw_exec(t, is_pg(t) ? "CREATE TABLE mutes_channel (player TEXT NOT NULL,"
                                            " channel TEXT NOT NULL, created_ms BIGINT NOT NULL,"
                                            " expires_ms BIGINT, PRIMARY KEY (player, channel))"
                                          : "CREATE TABLE mutes_channel (player TEXT NOT NULL,"
                                            " channel TEXT NOT NULL, created_ms INTEGER NOT NULL,"
                                            " expires_ms INTEGER, PRIMARY KEY (player, channel))"
                                            " WITHOUT ROWID"),
                     0);
    /* every connection of the pool works again */
    for (unsigned i = 0; i < t->o.conns; i++)
        assert_int_equal(purge_ok(t, NOW, 100), i == 0 ? 1 : 0);
    assert_counts(t, 0, 0, 0);
}

/* ---- speed: 500 of 50,000 ---- */

static void test_load_500_of_50000(void **state)
{
    T *t = *state;
    /* 10,000 players: 4 personal mutes each (every 4th expired), 5,000
     * channel mutes, 5,000 global mutes: 50,000 rows */
    const char *fill_sqlite =
        "BEGIN;"
        "INSERT INTO mutes_player WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM c"
        " WHERE i < 39999) SELECT 'p' || (i / 4), 'q' || i, 1, CASE WHEN i % 4 = 3 THEN 5 ELSE 0"
        " END, 'r' FROM c;"
        "INSERT INTO mutes_channel WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM c"
        " WHERE i < 4999) SELECT 'p' || i, 'say', 1, 0 FROM c;"
        "INSERT INTO mutes_global WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM c"
        " WHERE i < 4999) SELECT 'p' || (2 * i), 'adm', 1, 0, 'g' FROM c;"
        "COMMIT; ANALYZE;";
    const char *fill_pg =
        "INSERT INTO mutes_player SELECT 'p' || (i / 4), 'q' || i, 1, CASE WHEN i % 4 = 3 THEN 5"
        " ELSE 0 END, 'r' FROM generate_series(0, 39999) i;"
        "INSERT INTO mutes_channel SELECT 'p' || i, 'say', 1, 0 FROM generate_series(0, 4999) i;"
        "INSERT INTO mutes_global SELECT 'p' || (2 * i), 'adm', 1, 0, 'g'"
        " FROM generate_series(0, 4999) i;"
        "ANALYZE;";
    assert_int_equal(raw_exec(t, is_pg(t) ? fill_pg : fill_sqlite), 0);
    assert_int_equal(raw_int(t, "SELECT (SELECT count(*) FROM mutes_player) + (SELECT count(*)"
                                " FROM mutes_channel) + (SELECT count(*) FROM mutes_global)"),
                     50000);
    static char names[500][16];
    const char *ids[500];
    for (int i = 0; i < 500; i++) {
        /* every 20th player: 500 ids spread over the whole key range */
        snprintf(names[i], sizeof names[i], "p%d", i * 20);
        ids[i] = names[i];
    }
    double best = 1e9, first = 0;
    for (int round = 0; round < 5; round++) {
        uint64_t q = gw_store_queries(t->s);
        gw_mute_rec *v;
        double t0 = mono_ms();
        size_t n = load_ok(t, ids, 500, NOW, &v);
        double ms = mono_ms() - t0;
        free(v);
        assert_int_equal(gw_store_queries(t->s) - q, 1); /* one statement */
        /* each id: 3 personal mutes in force (the 4th expired); a channel
         * mute for the 250 ids below p5000; a global mute on every even
         * player, so on all 500 */
        assert_int_equal(n, 500 * 3 + 250 + 500);
        if (round == 0)
            first = ms;
        if (ms < best)
            best = ms;
    }
    print_message("[   INFO   ] %s: load of 500 ids out of 50,000 mutes: first %.2f ms,"
                  " best of 5 %.2f ms, 1 statement each\n",
                  t->e->backend, first, best);
    /* Generous for sanitizer builds on a shared machine; an index-less plan
     * or a statement per id would still be far slower at 50,000 rows. */
    assert_true(best < 250.0);
}

/* ---- PostgreSQL going away and coming back ---- */

static void test_pg_down_and_back(void **state)
{
    T *t = *state;
    gw_mute_rec r = mk(GW_MUTE_PLAYER, "a", "b", NOW, 0, "before");
    put_ok(t, &r);
    const char *ids[] = {"a"};
    gw_mute_rec *v;
    assert_int_equal(load_ok(t, ids, 1, NOW, &v), 1);
    free(v);
    assert_int_equal(pgsrv_stop_temporarily(t->e->pg), 0);
    char msg[GW_STORE_MSG_MAX] = "";
    size_t n = 9;
    /* every connection of the pool fails the same way, none hangs */
    for (unsigned i = 0; i < t->o.conns + 1; i++) {
        v = (gw_mute_rec *)1;
        assert_int_equal(gw_store_load(t->s, ids, 1, NOW, &v, &n, msg), -1);
        assert_null(v);
        assert_int_equal(n, 0);
        assert_msg(t, msg, "load", NULL);
    }
    print_message("[   INFO   ] down: %s\n", msg);
    gw_mute_rec r2 = mk(GW_MUTE_PLAYER, "a", "c", NOW, 0, "while down");
    assert_int_equal(gw_store_put(t->s, &r2, msg), -1);
    assert_msg(t, msg, "put", NULL);
    bool existed = true;
    assert_int_equal(gw_store_del(t->s, GW_MUTE_PLAYER, "a", "b", NOW, &existed, msg), -1);
    assert_false(existed);
    assert_msg(t, msg, "del", NULL);
    uint64_t removed = 99;
    assert_int_equal(gw_store_purge(t->s, NOW, 100, &removed, msg), -1);
    assert_int_equal(removed, 0);
    assert_msg(t, msg, "purge", "mutes_player: ");
    /* a store cannot be opened while the server is down */
    assert_null(gw_store_open(&t->o, msg));
    assert_msg(t, msg, "open", NULL);

    assert_int_equal(pgsrv_restart(t->e->pg), 0);
    /* every call works again, on every connection (no call fails for a
     * connection that broke while the server was away) */
    for (unsigned i = 0; i < 2 * t->o.conns; i++) {
        assert_int_equal(load_ok(t, ids, 1, NOW, &v), 1);
        assert_string_equal(v[0].reason, "before");
        free(v);
    }
    put_ok(t, &r2);
    assert_true(del_ok(t, GW_MUTE_PLAYER, "a", "b", NOW));
    assert_int_equal(load_ok(t, ids, 1, NOW, &v), 1);
    assert_string_equal(v[0].target, "c");
    free(v);
    gw_mute_rec old = mk(GW_MUTE_PLAYER, "a", "old", NOW - 9, NOW - 1, "expired");
    put_ok(t, &old);
    assert_int_equal(purge_ok(t, NOW, 100), 1);
}

/* The server restarts while connections sit idle, and the first call on each
 * finds its connection closed: it reconnects instead of failing. */
static void test_pg_restart_between_calls(void **state)
{
    T *t = *state;
    gw_mute_rec r = mk(GW_MUTE_PLAYER, "a", "b", NOW, 0, "x");
    put_ok(t, &r);
    assert_int_equal(pgsrv_restart(t->e->pg), 0);
    const char *ids[] = {"a"};
    for (unsigned i = 0; i < 2 * t->o.conns; i++) {
        gw_mute_rec *v;
        assert_int_equal(load_ok(t, ids, 1, NOW, &v), 1);
        free(v);
    }
}

/* A server that answers nothing (a hung host): a call gives up after
 * timeout_ms plus the 2 s grace instead of blocking its worker forever, and
 * the store works again once the server answers. */
static void test_pg_frozen(void **state)
{
    T *t = *state;
    char msg[GW_STORE_MSG_MAX] = "";
    gw_store_close(t->s);
    t->o.timeout_ms = 1000;
    t->o.conns = 1;
    t->s = gw_store_open(&t->o, msg);
    if (!t->s)
        fail_msg("open: %s", msg);
    gw_mute_rec r = mk(GW_MUTE_PLAYER, "a", "b", NOW, 0, "x");
    put_ok(t, &r);
    const char *ids[] = {"a"};
    gw_mute_rec *v;
    size_t n;
    assert_int_equal(pgsrv_freeze(t->e->pg), 0);
    double t0 = mono_ms();
    int rc = gw_store_load(t->s, ids, 1, NOW, &v, &n, msg);
    double waited = mono_ms() - t0;
    /* the second call tries to reconnect: bounded by connect_timeout (2 s) */
    char msg2[GW_STORE_MSG_MAX] = "";
    double t1 = mono_ms();
    int rc2 = gw_store_put(t->s, &r, msg2);
    double waited2 = mono_ms() - t1;
    assert_int_equal(pgsrv_thaw(t->e->pg), 0);
    print_message("[   INFO   ] frozen: %.0f ms: %s\n", waited, msg);
    print_message("[   INFO   ] frozen, reconnect: %.0f ms: %s\n", waited2, msg2);
    assert_int_equal(rc, -1);
    assert_msg(t, msg, "load", "no answer");
    assert_true(waited >= 2900 && waited < 6000);
    assert_int_equal(rc2, -1);
    assert_msg(t, msg2, "put", "reconnect failed");
    assert_true(waited2 < 6000);
    assert_int_equal(load_ok(t, ids, 1, NOW, &v), 1);
    free(v);
}

/* ---- bad options ---- */

/* Several gateways starting at the same moment on a new SQLite file (the
 * integration suite's shared store): switching the file to WAL could fail
 * at once with "database is locked" in all but one (SQLite answers
 * SQLITE_BUSY there without calling the busy handler). Every open must
 * succeed. 8 threads, each with its own store, released together, 20 new
 * files. */
typedef struct open_race {
    const char *path;
    pthread_barrier_t *go;
    int rc;
    char msg[GW_STORE_MSG_MAX];
} open_race;

static void *open_race_main(void *arg)
{
    open_race *r = arg;
    gw_store_opts o = {.backend = "sqlite", .sqlite_path = r->path, .conns = 2, .timeout_ms = 5000};
    pthread_barrier_wait(r->go);
    gw_store *s = gw_store_open(&o, r->msg);
    r->rc = s ? 0 : -1;
    gw_store_close(s);
    return NULL;
}

static void test_sqlite_concurrent_first_open(void **state)
{
    T *t = *state;
    enum { OPENERS = 8, ROUNDS = 20 };
    for (int round = 0; round < ROUNDS; round++) {
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/race%d.db", t->e->dir, round);
        pthread_barrier_t go;
        pthread_barrier_init(&go, NULL, OPENERS);
        open_race r[OPENERS];
        pthread_t th[OPENERS];
        for (int i = 0; i < OPENERS; i++) {
            r[i] = (open_race){.path = path, .go = &go};
            assert_int_equal(pthread_create(&th[i], NULL, open_race_main, &r[i]), 0);
        }
        for (int i = 0; i < OPENERS; i++)
            pthread_join(th[i], NULL);
        pthread_barrier_destroy(&go);
        for (int i = 0; i < OPENERS; i++)
            if (r[i].rc != 0)
                fail_msg("round %d, opener %d: %s", round, i, r[i].msg);
    }
}

/* Another connection holds the write lock: a write waits for the busy
 * timeout, then fails with a message that says how long it really waited;
 * it succeeds once the lock is gone. */
static void test_sqlite_locked(void **state)
{
    T *t = *state;
    gw_store_close(t->s);
    t->o.timeout_ms = 300;
    t->o.conns = 1;
    char msg[GW_STORE_MSG_MAX] = "";
    t->s = gw_store_open(&t->o, msg);
    assert_non_null(t->s);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(t->path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    gw_mute_rec r = mk(GW_MUTE_PLAYER, "alice", "bob", NOW, 0, "spam");
    double t0 = mono_ms();
    assert_int_equal(gw_store_put(t->s, &r, msg), -1);
    double waited = mono_ms() - t0;
    print_message("[   INFO   ] locked: %.0f ms: %s\n", waited, msg);
    const char *at = strstr(msg, "gave up after ");
    assert_non_null(strstr(msg, "database is locked"));
    assert_non_null(at);
    long said = strtol(at + strlen("gave up after "), NULL, 10);
    assert_true(said >= 250 && said <= waited + 1);
    assert_non_null(strstr(msg, "busy timeout 300 ms"));
    assert_int_equal(sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    put_ok(t, &r);
}

static void test_bad_open(void **state)
{
    T *t = *state;
    char msg[GW_STORE_MSG_MAX];
    gw_store_opts o = t->o;
    o.conns = 65;
    assert_null(gw_store_open(&o, msg));
    assert_msg(t, msg, "open", "conns");
    o = t->o;
    o.backend = "mysql";
    assert_null(gw_store_open(&o, msg));
    assert_string_equal(msg, "store: open: backend must be sqlite or postgres");
    if (!is_pg(t)) {
        o = t->o;
        o.sqlite_path = "/nonexistent-dir/sub/mutes.db";
        assert_null(gw_store_open(&o, msg));
        assert_msg(t, msg, "open", "/nonexistent-dir/sub/mutes.db");
        o.sqlite_path = t->e->dir; /* a directory */
        assert_null(gw_store_open(&o, msg));
        assert_msg(t, msg, "open", NULL);
        char junk[PATH_MAX];
        snprintf(junk, sizeof junk, "%s/junk.db", t->e->dir);
        FILE *f = fopen(junk, "w");
        assert_non_null(f);
        for (int i = 0; i < 200; i++)
            fputs("this is not a database file\n", f);
        fclose(f);
        o.sqlite_path = junk;
        assert_null(gw_store_open(&o, msg));
        assert_msg(t, msg, "open", "not a database");
        o.sqlite_path = NULL;
        assert_null(gw_store_open(&o, msg));
        assert_msg(t, msg, "open", "sqlite_path");
        return;
    }
    o = t->o;
    o.postgres_url = "postgresql://[bad";
    assert_null(gw_store_open(&o, msg));
    assert_msg(t, msg, "open", "postgres_url");
    o.postgres_url = "host=127.0.0.1 port";
    assert_null(gw_store_open(&o, msg));
    assert_msg(t, msg, "open", "postgres_url");
    char url[512];
    snprintf(url, sizeof url, "postgresql://postgres@127.0.0.1:%d/no_such_db",
             pgsrv_port(t->e->pg));
    o.postgres_url = url;
    assert_null(gw_store_open(&o, msg));
    assert_msg(t, msg, "open", "no_such_db");
    snprintf(url, sizeof url, "postgresql://postgres@127.0.0.1:1/mudbus");
    o.postgres_url = url;
    assert_null(gw_store_open(&o, msg));
    assert_msg(t, msg, "open", NULL);
    o.postgres_url = NULL;
    assert_null(gw_store_open(&o, NULL));
    /* the user's own options survive next to ours */
    o = t->o;
    snprintf(url, sizeof url, "%s?options=-c%%20search_path%%3Dpublic&application_name=mine",
             t->url);
    o.postgres_url = url;
    gw_store *s = gw_store_open(&o, msg);
    if (!s)
        fail_msg("open with options: %s", msg);
    gw_store_close(s);
}

#define STORE_TESTS                                                                                \
    cmocka_unit_test_setup_teardown(test_schema_create_and_reopen, setup, teardown),               \
        cmocka_unit_test_setup_teardown(test_newer_schema_refused, setup, teardown),               \
        cmocka_unit_test_setup_teardown(test_put_replace_del_player, setup, teardown),             \
        cmocka_unit_test_setup_teardown(test_put_replace_del_channel, setup, teardown),            \
        cmocka_unit_test_setup_teardown(test_put_replace_del_global, setup, teardown),             \
        cmocka_unit_test_setup_teardown(test_global_keyed_by_target, setup, teardown),             \
        cmocka_unit_test_setup_teardown(test_load_zero_one, setup, teardown),                      \
        cmocka_unit_test_setup_teardown(test_load_1000, setup, teardown),                          \
        cmocka_unit_test_setup_teardown(test_injection_and_unicode, setup, teardown),              \
        cmocka_unit_test_setup_teardown(test_argument_checks, setup, teardown),                    \
        cmocka_unit_test_setup_teardown(test_threads, setup, teardown),                            \
        cmocka_unit_test_setup_teardown(test_query_counter, setup, teardown),                      \
        cmocka_unit_test_setup_teardown(test_load_500_of_50000, setup, teardown),                  \
        cmocka_unit_test_setup_teardown(test_load_record_limit, setup, teardown),                  \
        cmocka_unit_test_setup_teardown(test_purge_expired, setup, teardown),                      \
        cmocka_unit_test_setup_teardown(test_purge_max_rows, setup, teardown),                     \
        cmocka_unit_test_setup_teardown(test_purge_argument_checks, setup, teardown),              \
        cmocka_unit_test_setup_teardown(test_purge_failure, setup, teardown),                      \
        cmocka_unit_test_setup_teardown(test_bad_open, setup, teardown)

int main(void)
{
    const struct CMUnitTest sqlite_tests[] = {
        STORE_TESTS,
        cmocka_unit_test_setup_teardown(test_sqlite_concurrent_first_open, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sqlite_locked, setup, teardown),
    };
    const struct CMUnitTest pg_tests[] = {
        STORE_TESTS,
        cmocka_unit_test_setup_teardown(test_pg_down_and_back, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pg_restart_between_calls, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pg_frozen, setup, teardown),
    };
    int failed = cmocka_run_group_tests_name("store_sqlite", sqlite_tests, group_sqlite_setup,
                                             group_sqlite_teardown);
    failed +=
        cmocka_run_group_tests_name("store_postgres", pg_tests, group_pg_setup, group_pg_teardown);
    if (pg_group_failed)
        fprintf(stderr, "test_gw_store: FAILED: PostgreSQL did not start\n");
    return failed || pg_group_failed ? 1 : 0;
}
