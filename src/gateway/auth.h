/* SPDX-License-Identifier: MIT */
/*
 * auth.h - player tokens: HS256 JWTs (libjwt) as in PROTOCOL.md section 3.
 *
 * Claims: sub (player id, token charset 1..128), name (display name, 1..64
 * characters, no control characters), adm (boolean, optional), party (party
 * id, token charset, optional), exp (required, seconds since the epoch).
 * A token is refused when: it is not three base64url parts, its header's alg
 * is not exactly HS256 (alg "none" and every other algorithm are refused),
 * its header has a typ other than "JWT" (any case) or a crit, the header or
 * payload is not a JSON object with unique keys, its signature does not
 * verify with the secret, a claim is missing or has the wrong type (null
 * included) or charset, exp <= now, or an nbf claim (optional integer) is
 * after now. Other claims (iat, iss, ...) are ignored. The refusal message
 * says which (never the secret, never the token, never a claim's value).
 *
 * Thread-safe: no shared state besides the secret, which is read-only after
 * gw_auth_create.
 */
#ifndef MUDBUS_GW_AUTH_H
#define MUDBUS_GW_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GW_AUTH_SECRET_MIN 32   /* bytes; shorter secrets are refused at start */
#define GW_AUTH_TOKEN_MAX  4096 /* bytes; longer tokens are refused unparsed */
#define GW_NAME_MAX        64   /* characters of a display name */

typedef struct gw_auth gw_auth;

typedef struct gw_player {
    char id[129];
    char name[4 * 64 + 1]; /* UTF-8 */
    char party[129];       /* "" when none */
    bool admin;
    int64_t exp; /* seconds since the epoch */
} gw_player;

/* The secret (binary-safe; copied, and wiped on destroy). NULL with a message
 * in msg (160 bytes; may be NULL) when it is shorter than GW_AUTH_SECRET_MIN,
 * longer than 4096 bytes, or on OOM. Destroying NULL does nothing. */
gw_auth *gw_auth_create(const void *secret, size_t len, char *msg);
void gw_auth_destroy(gw_auth *a);

/* Read a secret file: its bytes with one trailing newline (\n or \r\n)
 * removed. Returns a malloc'd, NUL-terminated buffer (free with
 * gw_auth_secret_free, which wipes it) or NULL with a message naming the
 * path and the reason (missing, unreadable, larger than 4096 bytes). An
 * empty or short file is read; gw_auth_create refuses it. */
char *gw_auth_secret_read(const char *path, size_t *len, char *msg);
void gw_auth_secret_free(char *secret, size_t len);

/* Verify a token of len bytes (need not be NUL-terminated) at time now_s
 * (seconds since the epoch). true and *out filled (out may be NULL), or
 * false with a one-line reason in msg (160 bytes; may be NULL) and *out
 * unchanged. */
bool gw_auth_verify(const gw_auth *a, const char *token, size_t len, int64_t now_s, gw_player *out,
                    char *msg);

/* Issue a token for p (p->exp is the expiry) into a malloc'd string (free
 * with free()), for the development login and for tests. Claims sub, name,
 * exp, adm only when true, party only when not empty. NULL with a message
 * on a bad player (the same rules as verification) or OOM. */
char *gw_auth_issue(const gw_auth *a, const gw_player *p, char *msg);

#endif
