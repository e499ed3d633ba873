/* SPDX-License-Identifier: MIT */
/*
 * auth.c - HS256 player tokens on libjwt 1.10.
 *
 * Verification does not trust libjwt's view of the token beyond the
 * signature. Before libjwt sees a token, the token must be three non-empty
 * parts of the base64url alphabet, the header must decode to a JSON object
 * without duplicate keys whose "alg" is exactly the string "HS256", whose
 * "typ", if any, is "JWT" (in any case, as libjwt requires) and which has no
 * "crit" (RFC 7515 4.1.11: we understand no extensions), and the payload must
 * decode to a JSON object without duplicate keys; then jwt_decode checks the
 * HMAC with the secret (libjwt 1.10 compares the encoded signatures with
 * jwt_strcmp, which looks at every byte whatever the differences), and
 * jwt_get_alg must agree that the algorithm is HS256. The claims are read
 * from our own jansson parse of the payload, which is the byte string the
 * signature covers: libjwt 1.10's jwt_get_grant_int cannot tell a missing or
 * string "exp" from 0 (it returns 0 and leaves errno alone for a string), and
 * its parse merges duplicate keys silently. Claims other than sub, name, adm,
 * party, exp and nbf (iat, iss, ...) are ignored; nbf, when present, must be
 * an integer not after now.
 *
 * Refusal messages name the rule and the claim, never claim values, the
 * token or the secret. The secret lives in one allocation that is wiped
 * before it is freed; the token is copied to the stack (it must be
 * NUL-terminated for libjwt) and that copy is not secret.
 *
 * Threads: a gw_auth is read-only after creation, so any number of threads
 * may verify and issue with it at once.
 */
#define _POSIX_C_SOURCE 200809L

#include "auth.h"
#include "protocol.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <jwt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SECRET_MAX 4096                        /* bytes of a secret (and of a secret file) */
#define PART_MAX   (GW_AUTH_TOKEN_MAX / 4 * 3) /* decoded bytes of one part */
#define MSG_MAX    160
#define TOKEN_RULE "1..128 characters of [A-Za-z0-9_-]"
#define PATH_SHOW  96

struct gw_auth {
    size_t len;
    unsigned char key[];
};

/* ---- helpers ---- */

static void wipe(void *p, size_t n)
{
    volatile unsigned char *v = p;
    while (n-- > 0)
        *v++ = 0;
}

static void say(char *msg, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

static void say(char *msg, const char *fmt, ...)
{
    if (msg == NULL)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, MSG_MAX, fmt, ap);
    va_end(ap);
}

/* A display name: 1..GW_NAME_MAX code points of valid UTF-8 (jansson
 * guarantees that for parsed strings; gw_auth_issue checks it), no control
 * characters (U+0000..U+001F, U+007F..U+009F). */
static bool is_name(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t chars = 0;
    for (size_t i = 0; i < n; i++) {
        if (u[i] < 0x20 || u[i] == 0x7F)
            return false;
        if (u[i] == 0xC2 && i + 1 < n && u[i + 1] <= 0x9F)
            return false;
        if ((u[i] & 0xC0) != 0x80)
            chars++;
    }
    return chars >= 1 && chars <= GW_NAME_MAX;
}

/* Strict UTF-8 (no overlongs, surrogates or values above U+10FFFF). */
static bool utf8_ok(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        unsigned char c = u[i];
        size_t need;
        unsigned char lo = 0x80, hi = 0xBF;
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xC2 && c <= 0xDF) {
            need = 2;
        } else if (c >= 0xE0 && c <= 0xEF) {
            need = 3;
            lo = c == 0xE0 ? 0xA0 : 0x80;
            hi = c == 0xED ? 0x9F : 0xBF;
        } else if (c >= 0xF0 && c <= 0xF4) {
            need = 4;
            lo = c == 0xF0 ? 0x90 : 0x80;
            hi = c == 0xF4 ? 0x8F : 0xBF;
        } else {
            return false;
        }
        if (n - i < need || u[i + 1] < lo || u[i + 1] > hi)
            return false;
        for (size_t k = 2; k < need; k++) {
            if ((u[i + k] & 0xC0) != 0x80)
                return false;
        }
        i += need;
    }
    return true;
}

static bool ascii_caseeq(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char x = (unsigned char)a[i], y = (unsigned char)b[i];
        if (x >= 'a' && x <= 'z')
            x = (unsigned char)(x - 'a' + 'A');
        if (y >= 'a' && y <= 'z')
            y = (unsigned char)(y - 'a' + 'A');
        if (x != y)
            return false;
    }
    return true;
}

static int b64url_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

/* Decode unpadded base64url; false on a bad character, an impossible length
 * or no room. */
static bool b64url_decode(const char *in, size_t n, char *out, size_t cap, size_t *out_len)
{
    if (n % 4 == 1)
        return false;
    uint32_t acc = 0;
    unsigned bits = 0;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int v = b64url_value((unsigned char)in[i]);
        if (v < 0)
            return false;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (o >= cap)
                return false;
            out[o++] = (char)((acc >> bits) & 0xFF);
            acc &= (1u << bits) - 1;
        }
    }
    *out_len = o;
    return true;
}

/* Decode one part and parse it as a JSON object; NULL if it is not one. */
static json_t *decode_object(const char *part, size_t n)
{
    char buf[PART_MAX];
    size_t len;
    if (!b64url_decode(part, n, buf, sizeof buf, &len))
        return NULL;
    /* jansson 2.14 skips a raw NUL right after a number or literal, and
     * libjwt would see the text only up to it. */
    if (memchr(buf, '\0', len) != NULL)
        return NULL;
    json_t *j = json_loadb(buf, len, JSON_REJECT_DUPLICATES, NULL);
    if (j != NULL && !json_is_object(j)) {
        json_decref(j);
        j = NULL;
    }
    return j;
}

/* ---- secret ---- */

gw_auth *gw_auth_create(const void *secret, size_t len, char *msg)
{
    if (secret == NULL || len < GW_AUTH_SECRET_MIN) {
        say(msg, "secret: %zu bytes, need at least %d", secret == NULL ? (size_t)0 : len,
            GW_AUTH_SECRET_MIN);
        return NULL;
    }
    if (len > SECRET_MAX) {
        say(msg, "secret: %zu bytes, at most %d allowed", len, SECRET_MAX);
        return NULL;
    }
    gw_auth *a = malloc(sizeof *a + len);
    if (a == NULL) {
        say(msg, "secret: out of memory");
        return NULL;
    }
    a->len = len;
    memcpy(a->key, secret, len);
    return a;
}

void gw_auth_destroy(gw_auth *a)
{
    if (a == NULL)
        return;
    wipe(a->key, a->len);
    free(a);
}

char *gw_auth_secret_read(const char *path, size_t *len, char *msg)
{
    char shown[PATH_SHOW + 4];
    snprintf(shown, sizeof shown, "%s", path == NULL ? "(null)" : path);
    if (path != NULL && strlen(path) > PATH_SHOW)
        memcpy(shown + PATH_SHOW, "...", 4);
    if (path == NULL || len == NULL) {
        say(msg, "secret file: no path");
        return NULL;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        say(msg, "secret file %s: %s", shown, strerror(errno));
        return NULL;
    }
    /* Read into one buffer big enough for the largest allowed secret, its
     * \r\n and one byte more (to see that a file is too large), so that the
     * secret is never copied by a realloc and left behind unwiped. */
    const size_t cap = SECRET_MAX + 3;
    char *buf = malloc(cap);
    if (buf == NULL) {
        close(fd);
        say(msg, "secret file %s: out of memory", shown);
        return NULL;
    }
    size_t n = 0;
    int err = 0;
    while (n < cap) {
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            err = errno;
            break;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    if (err != 0) {
        say(msg, "secret file %s: %s", shown, strerror(err));
        wipe(buf, n);
        free(buf);
        return NULL;
    }
    if (n == cap) {
        say(msg, "secret file %s: larger than %d bytes", shown, SECRET_MAX);
        wipe(buf, cap);
        free(buf);
        return NULL;
    }
    if (n > 0 && buf[n - 1] == '\n') {
        n--;
        if (n > 0 && buf[n - 1] == '\r')
            n--;
    }
    if (n > SECRET_MAX) {
        say(msg, "secret file %s: larger than %d bytes", shown, SECRET_MAX);
        wipe(buf, cap);
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

void gw_auth_secret_free(char *secret, size_t len)
{
    if (secret == NULL)
        return;
    wipe(secret, len);
    free(secret);
}

/* ---- verify ---- */

static bool refuse(char *msg, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

static bool refuse(char *msg, const char *fmt, ...)
{
    if (msg != NULL) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, MSG_MAX, fmt, ap);
        va_end(ap);
    }
    return false;
}

/* The claims of a signed payload into p, or a refusal. */
static bool read_claims(json_t *claims, int64_t now_s, gw_player *p, char *msg)
{
    json_t *v = json_object_get(claims, "sub");
    if (v == NULL)
        return refuse(msg, "token: sub: required");
    if (!json_is_string(v) || !gw_is_token(json_string_value(v), json_string_length(v)))
        return refuse(msg, "token: sub: must be a string of " TOKEN_RULE);
    memcpy(p->id, json_string_value(v), json_string_length(v) + 1);

    v = json_object_get(claims, "name");
    if (v == NULL)
        return refuse(msg, "token: name: required");
    if (!json_is_string(v) || !is_name(json_string_value(v), json_string_length(v)))
        return refuse(msg,
                      "token: name: must be a string of 1..%d characters, no control "
                      "characters",
                      GW_NAME_MAX);
    memcpy(p->name, json_string_value(v), json_string_length(v) + 1);

    v = json_object_get(claims, "adm");
    if (v != NULL && !json_is_boolean(v))
        return refuse(msg, "token: adm: must be a boolean");
    p->admin = v != NULL && json_is_true(v);

    v = json_object_get(claims, "party");
    if (v != NULL) {
        if (!json_is_string(v) || !gw_is_token(json_string_value(v), json_string_length(v)))
            return refuse(msg, "token: party: must be a string of " TOKEN_RULE);
        memcpy(p->party, json_string_value(v), json_string_length(v) + 1);
    }

    v = json_object_get(claims, "exp");
    if (v == NULL)
        return refuse(msg, "token: exp: required");
    if (!json_is_integer(v))
        return refuse(msg, "token: exp: must be an integer");
    p->exp = (int64_t)json_integer_value(v);

    json_t *nbf = json_object_get(claims, "nbf");
    if (nbf != NULL && !json_is_integer(nbf))
        return refuse(msg, "token: nbf: must be an integer");
    if (p->exp <= now_s)
        return refuse(msg, "token: expired");
    if (nbf != NULL && (int64_t)json_integer_value(nbf) > now_s)
        return refuse(msg, "token: not valid yet (nbf)");
    return true;
}

bool gw_auth_verify(const gw_auth *a, const char *token, size_t len, int64_t now_s, gw_player *out,
                    char *msg)
{
    if (msg != NULL)
        msg[0] = '\0';
    if (a == NULL)
        return refuse(msg, "token: no secret configured");
    if (token == NULL || len == 0)
        return refuse(msg, "token: empty");
    if (len > GW_AUTH_TOKEN_MAX)
        return refuse(msg, "token: %zu bytes exceeds %d", len, GW_AUTH_TOKEN_MAX);

    size_t dot[2], ndots = 0;
    for (size_t i = 0; i < len; i++) {
        if (token[i] == '.') {
            if (ndots == 2)
                return refuse(msg, "token: not three base64url parts");
            dot[ndots++] = i;
        } else if (b64url_value((unsigned char)token[i]) < 0) {
            return refuse(msg, "token: not three base64url parts");
        }
    }
    if (ndots != 2 || dot[0] == 0 || dot[1] == dot[0] + 1 || dot[1] == len - 1)
        return refuse(msg, "token: not three base64url parts");

    json_t *head = decode_object(token, dot[0]);
    if (head == NULL)
        return refuse(msg, "token: header is not a JSON object with unique keys");
    json_t *alg = json_object_get(head, "alg"), *typ = json_object_get(head, "typ");
    bool hs256 = json_is_string(alg) && json_string_length(alg) == 5 &&
                 memcmp(json_string_value(alg), "HS256", 5) == 0;
    /* libjwt refuses a typ other than "JWT" in any case; say so here rather
     * than report a bad signature. */
    bool typ_ok = typ == NULL || (json_is_string(typ) && json_string_length(typ) == 3 &&
                                  ascii_caseeq(json_string_value(typ), "JWT", 3));
    bool crit = json_object_get(head, "crit") != NULL;
    json_decref(head);
    if (!hs256)
        return refuse(msg, "token: alg must be HS256");
    if (!typ_ok)
        return refuse(msg, "token: typ must be JWT");
    if (crit)
        return refuse(msg, "token: crit header not supported");

    json_t *claims = decode_object(token + dot[0] + 1, dot[1] - dot[0] - 1);
    if (claims == NULL)
        return refuse(msg, "token: payload is not a JSON object with unique keys");

    char copy[GW_AUTH_TOKEN_MAX + 1];
    memcpy(copy, token, len);
    copy[len] = '\0';
    jwt_t *jwt = NULL;
    int rc = jwt_decode(&jwt, copy, a->key, (int)a->len);
    bool signed_ok = rc == 0 && jwt != NULL && jwt_get_alg(jwt) == JWT_ALG_HS256;
    jwt_free(jwt);
    if (!signed_ok) {
        json_decref(claims);
        if (rc == ENOMEM)
            return refuse(msg, "token: out of memory");
        return refuse(msg, "token: bad signature");
    }

    gw_player p;
    memset(&p, 0, sizeof p);
    bool ok = read_claims(claims, now_s, &p, msg);
    json_decref(claims);
    if (ok && out != NULL)
        *out = p;
    return ok;
}

/* ---- issue ---- */

char *gw_auth_issue(const gw_auth *a, const gw_player *p, char *msg)
{
    if (msg != NULL)
        msg[0] = '\0';
    if (a == NULL || p == NULL) {
        say(msg, "issue: no secret or no player");
        return NULL;
    }
    size_t idn = strnlen(p->id, sizeof p->id), namen = strnlen(p->name, sizeof p->name),
           partyn = strnlen(p->party, sizeof p->party);
    if (!gw_is_token(p->id, idn)) {
        say(msg, "issue: id: must be " TOKEN_RULE);
        return NULL;
    }
    if (namen == sizeof p->name || !utf8_ok(p->name, namen) || !is_name(p->name, namen)) {
        say(msg, "issue: name: must be 1..%d characters of UTF-8, no control characters",
            GW_NAME_MAX);
        return NULL;
    }
    if (partyn != 0 && !gw_is_token(p->party, partyn)) {
        say(msg, "issue: party: must be empty or " TOKEN_RULE);
        return NULL;
    }
#if LONG_MAX < INT64_MAX
    if (p->exp < LONG_MIN || p->exp > LONG_MAX) {
        say(msg, "issue: exp: out of range");
        return NULL;
    }
#endif

    jwt_t *jwt = NULL;
    char *tok = NULL;
    int rc = jwt_new(&jwt);
    if (rc == 0)
        rc = jwt_add_grant(jwt, "sub", p->id);
    if (rc == 0)
        rc = jwt_add_grant(jwt, "name", p->name);
    if (rc == 0 && p->admin)
        rc = jwt_add_grant_bool(jwt, "adm", 1);
    if (rc == 0 && partyn != 0)
        rc = jwt_add_grant(jwt, "party", p->party);
    if (rc == 0)
        rc = jwt_add_grant_int(jwt, "exp", (long)p->exp);
    if (rc == 0)
        rc = jwt_set_alg(jwt, JWT_ALG_HS256, a->key, (int)a->len);
    if (rc == 0) {
        tok = jwt_encode_str(jwt);
        if (tok == NULL)
            rc = errno != 0 ? errno : ENOMEM;
    }
    jwt_free(jwt);
    if (tok == NULL)
        say(msg, "issue: %s", rc == ENOMEM ? "out of memory" : "libjwt refused the token");
    return tok;
}
