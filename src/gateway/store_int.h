/* SPDX-License-Identifier: MIT */
/*
 * store_int.h - what a mute store backend provides to store.c, and what
 * store.c gives the backends. Internal to the store (store.c, store_sqlite.c,
 * store_pg.c).
 *
 * store.c owns everything common: options and their defaults, argument
 * checks (so both backends refuse the same inputs with the same words), the
 * pool of connection slots (a call checks one out, waiting while all are
 * busy), the message prefix "<backend>: <operation>: ", and the statement
 * counter. A backend owns one database connection per slot and turns each
 * call into exactly one statement on it (purge: one per table, three). A
 * backend connection is used by one thread at a time (the pool guarantees
 * it), so backends need no locks.
 *
 * Backend functions write a detail (no prefix, one line) into `why`
 * (GW_STORE_MSG_MAX bytes, never NULL) and return -1 on failure, 0 on
 * success.
 */
#ifndef MUDBUS_GW_STORE_INT_H
#define MUDBUS_GW_STORE_INT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store.h"

#define GW__STORE_LOAD_MAX_IDS  1000   /* ids per gw_store_load (store.h: "n up to 1000") */
#define GW__STORE_LOAD_MAX_RECS 100000 /* records one load may return (about 108 MB) */
/* The load statements ask for one row more than that, so that neither the
 * backend library nor we ever hold more (keep in step with the line above). */
#define GW__STORE_LOAD_LIMIT_SQL     " LIMIT 100001"
#define GW__STORE_PURGE_MAX_ROWS     100000 /* max_rows of gw_store_purge (store.h) */
#define GW__STORE_CONNS_MAX          64
#define GW__STORE_CONNS_DEFAULT      4
#define GW__STORE_TIMEOUT_DEFAULT_MS 5000

/* What a backend's connect gets: the options with defaults applied, and the
 * counter it bumps once per statement it sends for load, put, del or purge. */
typedef struct gw__store_cfg {
    const char *sqlite_path;
    const char *postgres_url;
    unsigned timeout_ms;
    _Atomic uint64_t *queries;
} gw__store_cfg;

typedef struct gw__store_conn gw__store_conn; /* defined by each backend */

typedef struct gw__store_ops {
    const char *name; /* "sqlite" or "postgres" */
    /* Open one connection. NULL on failure. */
    gw__store_conn *(*connect)(const gw__store_cfg *cfg, char *why);
    /* Close it (NULL does nothing). */
    void (*disconnect)(gw__store_conn *c);
    /* Create or migrate the schema; refuse a newer version without touching
     * anything. Called once, on the first connection, by gw_store_open. */
    int (*migrate)(gw__store_conn *c, char *why);
    /* The operations of store.h, arguments already checked (n >= 1). */
    int (*load)(gw__store_conn *c, const char *const *ids, size_t n, int64_t now_ms,
                gw_mute_rec **out, size_t *nout, char *why);
    int (*put)(gw__store_conn *c, const gw_mute_rec *r, char *why);
    int (*del)(gw__store_conn *c, gw_mute_kind kind, const char *owner, const char *target,
               int64_t now_ms, bool *existed, char *why);
    /* One bounded DELETE per table (max_rows 1..GW__STORE_PURGE_MAX_ROWS,
     * before_ms >= 0), stopping at the first failure, whose why names the
     * table; *removed (never NULL) is set to the total on success (store.c
     * zeroes it on failure). */
    int (*purge)(gw__store_conn *c, int64_t before_ms, unsigned max_rows, uint64_t *removed,
                 char *why);
} gw__store_ops;

extern const gw__store_ops gw__store_sqlite_ops;
extern const gw__store_ops gw__store_pg_ops;

/* A growing array of records for the backends' load; at most
 * GW__STORE_LOAD_MAX_RECS. */
typedef struct gw__store_recs {
    gw_mute_rec *v;
    size_t n, cap;
} gw__store_recs;

/* Append a record built from column values (owner and target of at most
 * GW_STORE_ID_MAX bytes, reason truncated at a UTF-8 boundary to
 * GW_STORE_REASON_MAX bytes, NULL reason = ""). Returns 1 if appended, 0 if
 * the row was skipped (kind unknown, or owner or target empty or too long: no
 * valid id could match it), -1 on failure (out of memory, too many records)
 * with why set. */
int gw__store_recs_add(gw__store_recs *rs, int kind, const char *owner, const char *target,
                       int64_t created_ms, int64_t expires_ms, const char *reason, char *why);

/* Write a formatted detail into why (GW_STORE_MSG_MAX bytes) as one line:
 * control characters become spaces, runs of spaces collapse, no trailing
 * space. */
void gw__store_why(char *why, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
