/* SPDX-License-Identifier: MIT */
/*
 * sent.c - the ids of chat delivered by local fan-out (sent.h).
 *
 * A ring of the last `cap` ids added (as 64-bit hashes: the ids are random,
 * the gateway makes them), oldest first, and an open-addressing table of the
 * ones still waiting for their copy (linear probing over 2 * cap slots, so it
 * is at most half full; deletion by backward shift, no tombstones). A taken
 * id leaves the table at once and its ring entry when the ring comes round.
 * With NATS up a copy comes back within milliseconds, and publishing refuses
 * while NATS is down, so no copy waits in nats.c's reconnect buffer for long.
 *
 * Threads: the loop thread only.
 */
#include <stdlib.h>
#include <string.h>

#include "sent.h"

struct gw_sent {
    uint64_t *ring;  /* cap: keys in the order added, taken ones too */
    uint64_t *table; /* 2 * cap slots: keys, 0 = empty */
    uint32_t cap, head, n;
    size_t pending; /* keys in the table */
    uint64_t evicted;
};

/* FNV-1a, then a final mix: ids are short and random. Never 0 (empty). */
static uint64_t key_of(const char *id, size_t len)
{
    uint64_t h = 1469598103934665603u;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)id[i];
        h *= 1099511628211u;
    }
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9u;
    h ^= h >> 32;
    return h ? h : 1;
}

gw_sent *gw_sent_new(uint32_t cap)
{
    gw_sent *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->cap = cap ? cap : 1;
    t->ring = calloc(t->cap, sizeof *t->ring);
    t->table = calloc((size_t)t->cap * 2, sizeof *t->table);
    if (!t->ring || !t->table) {
        gw_sent_free(t);
        return NULL;
    }
    return t;
}

void gw_sent_free(gw_sent *t)
{
    if (!t)
        return;
    free(t->ring);
    free(t->table);
    free(t);
}

static size_t slot_of(const gw_sent *t, uint64_t key)
{
    return (size_t)(key % ((uint64_t)t->cap * 2));
}

/* The slot holding key, or SIZE_MAX. The table is at most half full, so a
 * probe always meets an empty slot. */
static size_t find(const gw_sent *t, uint64_t key)
{
    size_t m = (size_t)t->cap * 2;
    for (size_t i = slot_of(t, key);; i = (i + 1) % m) {
        if (t->table[i] == key)
            return i;
        if (t->table[i] == 0)
            return SIZE_MAX;
    }
}

/* Empty slot i, moving later keys of its probe run back into the hole. */
static void remove_at(gw_sent *t, size_t i)
{
    size_t m = (size_t)t->cap * 2;
    size_t hole = i;
    for (size_t j = (i + 1) % m; t->table[j] != 0; j = (j + 1) % m) {
        size_t home = slot_of(t, t->table[j]);
        /* The key at j may fill the hole when its home is not in (hole, j]. */
        bool between = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j);
        if (!between) {
            t->table[hole] = t->table[j];
            hole = j;
        }
    }
    t->table[hole] = 0;
}

bool gw_sent_add(gw_sent *t, const char *id)
{
    uint64_t key = key_of(id, strlen(id));
    if (find(t, key) != SIZE_MAX)
        return false;
    bool evicted = false;
    if (t->n == t->cap) {
        /* Full: the oldest id leaves, whether or not its copy came back. */
        uint64_t old = t->ring[t->head];
        size_t at = old ? find(t, old) : SIZE_MAX;
        if (at != SIZE_MAX) {
            remove_at(t, at);
            t->pending--;
            t->evicted++;
            evicted = true;
        }
        t->head = (t->head + 1) % t->cap;
        t->n--;
    }
    t->ring[(t->head + t->n) % t->cap] = key;
    t->n++;
    size_t m = (size_t)t->cap * 2;
    size_t i = slot_of(t, key);
    while (t->table[i] != 0)
        i = (i + 1) % m;
    t->table[i] = key;
    t->pending++;
    return evicted;
}

bool gw_sent_take(gw_sent *t, const char *id, size_t len)
{
    uint64_t key = key_of(id, len);
    size_t at = find(t, key);
    if (at == SIZE_MAX)
        return false;
    /* Its ring entry stays (the ring is FIFO); at eviction the table no
     * longer has the key, and that is not counted. */
    remove_at(t, at);
    t->pending--;
    return true;
}

uint64_t gw_sent_evicted(const gw_sent *t)
{
    return t->evicted;
}

size_t gw_sent_pending(const gw_sent *t)
{
    return t->pending;
}
