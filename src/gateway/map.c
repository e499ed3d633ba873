/* SPDX-License-Identifier: MIT */
#include "map.h"

#include <stdlib.h>
#include <string.h>

uint32_t gw_hash(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 16777619u;
    }
    return h;
}

void gw_map_init(gw_map *m)
{
    memset(m, 0, sizeof *m);
}

void gw_map_free(gw_map *m)
{
    for (size_t i = 0; i < m->nb; i++) {
        gw_map_ent *e = m->b[i];
        while (e) {
            gw_map_ent *n = e->next;
            free(e);
            e = n;
        }
    }
    free(m->b);
    gw_map_init(m);
}

static gw_map_ent **slot(const gw_map *m, const char *key, uint32_t h)
{
    gw_map_ent **pp = &m->b[h & (m->nb - 1)];
    while (*pp && ((*pp)->hash != h || strcmp((*pp)->key, key) != 0))
        pp = &(*pp)->next;
    return pp;
}

void *gw_map_get(const gw_map *m, const char *key)
{
    if (!m->n)
        return NULL;
    gw_map_ent *e = *slot(m, key, gw_hash(key));
    return e ? e->val : NULL;
}

static bool grow(gw_map *m)
{
    size_t nb = m->nb ? m->nb * 2 : 16;
    gw_map_ent **b = calloc(nb, sizeof *b);
    if (!b)
        return false;
    for (size_t i = 0; i < m->nb; i++) {
        gw_map_ent *e = m->b[i];
        while (e) {
            gw_map_ent *n = e->next;
            e->next = b[e->hash & (nb - 1)];
            b[e->hash & (nb - 1)] = e;
            e = n;
        }
    }
    free(m->b);
    m->b = b;
    m->nb = nb;
    return true;
}

bool gw_map_put(gw_map *m, const char *key, void *val)
{
    if (m->n >= m->nb && !grow(m) && !m->nb)
        return false;
    uint32_t h = gw_hash(key);
    gw_map_ent **pp = slot(m, key, h);
    if (*pp) {
        (*pp)->key = key;
        (*pp)->val = val;
        return true;
    }
    gw_map_ent *e = malloc(sizeof *e);
    if (!e)
        return false;
    e->key = key;
    e->val = val;
    e->hash = h;
    e->next = NULL;
    *pp = e;
    m->n++;
    return true;
}

void *gw_map_del(gw_map *m, const char *key)
{
    if (!m->n)
        return NULL;
    gw_map_ent **pp = slot(m, key, gw_hash(key));
    gw_map_ent *e = *pp;
    if (!e)
        return NULL;
    void *v = e->val;
    *pp = e->next;
    free(e);
    m->n--;
    return v;
}

gw_map_ent *gw_map_next(const gw_map *m, gw_map_ent *e)
{
    size_t i = 0;
    if (e) {
        if (e->next)
            return e->next;
        i = (e->hash & (m->nb - 1)) + 1;
    }
    for (; i < m->nb; i++)
        if (m->b[i])
            return m->b[i];
    return NULL;
}
