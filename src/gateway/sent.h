/* SPDX-License-Identifier: MIT */
/*
 * sent.h - the message ids of what this gateway delivered to its own players
 * when it published it (local fan-out: chat, presence events), until NATS
 * brings each message back and the copy is dropped instead of delivered
 * twice. Only when copies can come back: not with no_echo on the gateway's
 * one NATS connection (its default).
 *
 * A bounded set: at most `cap` ids are remembered, the oldest forgotten first
 * (that is counted: its copy, should it still come, is delivered again). Ids
 * are kept as 64-bit hashes. Loop thread only.
 */
#ifndef MUDBUS_GW_SENT_H
#define MUDBUS_GW_SENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct gw_sent gw_sent;

#define GW_SENT_CAP 32768 /* the gateway's: over 30 s of chat at 1,000 messages/s */

/* NULL when out of memory; cap 0 is taken as 1. */
gw_sent *gw_sent_new(uint32_t cap);
void gw_sent_free(gw_sent *t);
/* Remember id (a NUL-terminated string); true when the oldest remembered id
 * had to be forgotten for it before its copy came back. Adding an id that is
 * remembered already changes nothing; one added again after it was taken
 * leaves when its first place in the order comes round (ids are unique: the
 * gateway makes them at random). */
bool gw_sent_add(gw_sent *t, const char *id);
/* Whether the len bytes at id are a remembered id; it is forgotten. */
bool gw_sent_take(gw_sent *t, const char *id, size_t len);
/* Ids forgotten before their copy came back, since gw_sent_new. */
uint64_t gw_sent_evicted(const gw_sent *t);
/* Ids remembered now. */
size_t gw_sent_pending(const gw_sent *t);

#endif
