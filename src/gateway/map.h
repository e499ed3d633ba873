/* SPDX-License-Identifier: MIT */
/*
 * map.h - a string-keyed hash map (chained, power-of-two buckets, grows at
 * load 1). Keys are borrowed: they must live as long as their entry (the
 * gateway keys rooms and players by an id stored in the value itself).
 * Loop thread only.
 */
#ifndef MUDBUS_GW_MAP_H
#define MUDBUS_GW_MAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct gw_map_ent {
    const char *key;
    void *val;
    uint32_t hash;
    struct gw_map_ent *next;
} gw_map_ent;

typedef struct gw_map {
    gw_map_ent **b;
    size_t nb, n;
} gw_map;

void gw_map_init(gw_map *m);
void gw_map_free(gw_map *m); /* entries only; values are the caller's */
void *gw_map_get(const gw_map *m, const char *key);
bool gw_map_put(gw_map *m, const char *key, void *val); /* false: OOM; replaces */
void *gw_map_del(gw_map *m, const char *key);           /* the removed value or NULL */
uint32_t gw_hash(const char *s);

/* Iterate: for (gw_map_ent *e = NULL; (e = gw_map_next(m, e));) */
gw_map_ent *gw_map_next(const gw_map *m, gw_map_ent *e);

#endif
