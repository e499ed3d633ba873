/* SPDX-License-Identifier: MIT */
/*
 * fuzz_gw_jwt: fuzz target of the gateway's token verification.
 *
 * The first input byte picks a mode; the rest is the material.
 *   mode 0: the rest is a token, verified as is. Property: it is accepted only
 *           if its signature is the HMAC-SHA256, under the fixed secret, of
 *           its first two parts (recomputed here with OpenSSL) and its header
 *           says exactly "HS256".
 *   mode 1: the rest is a header and a payload separated by the first '\n';
 *           both are base64url-encoded here and signed with the right secret.
 *           Property: accepted exactly when a reference check written here
 *           (jansson, independent of auth.c) says the header and claims obey
 *           PROTOCOL.md section 3 / auth.h, and then the gw_player matches.
 *   mode 2: as mode 1 but signed with a different secret: always refused.
 * Every refusal has a one-line message that contains neither secret. A
 * violation prints the input and aborts.
 */
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define NOW 1800000000

static const char secret[] = "fuzz-secret-0123456789abcdef-0123456789";
static const char wrong[] = "fuzz-secret-0123456789abcdef-012345678X";
static gw_auth *auth;

static const uint8_t *cur_data;
static size_t cur_size;

static void die(const char *what, const char *detail)
{
    fprintf(stderr, "fuzz_gw_jwt: %s%s%s\n  input (%zu bytes): \"", what, detail ? ": " : "",
            detail ? detail : "", cur_size);
    for (size_t i = 0; i < cur_size && i < 8192; i++) {
        uint8_t c = cur_data[i];
        if (c == '"' || c == '\\')
            fprintf(stderr, "\\%c", c);
        else if (c >= 0x20 && c < 0x7F)
            fputc(c, stderr);
        else
            fprintf(stderr, "\\x%02X", c);
    }
    fprintf(stderr, "\"\n");
    abort();
}

static size_t b64url(const uint8_t *in, size_t n, char *out)
{
    static const char al[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0, i = 0;
    for (; i + 2 < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = al[v >> 18];
        out[o++] = al[(v >> 12) & 63];
        out[o++] = al[(v >> 6) & 63];
        out[o++] = al[v & 63];
    }
    if (n - i == 1) {
        out[o++] = al[in[i] >> 2];
        out[o++] = al[(in[i] & 3) << 4];
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)in[i] << 8 | in[i + 1];
        out[o++] = al[v >> 10];
        out[o++] = al[(v >> 4) & 63];
        out[o++] = al[(v & 15) << 2];
    }
    return o;
}

static size_t sign(const char *key, const char *signing_input, size_t n, char *out)
{
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int mn = 0;
    if (HMAC(EVP_sha256(), key, (int)strlen(key), (const unsigned char *)signing_input, n, mac,
             &mn) == NULL)
        die("HMAC failed", NULL);
    return b64url(mac, mn, out);
}

/* ---- reference rules ---- */

static int ref_token(json_t *v)
{
    if (!json_is_string(v))
        return 0;
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    return n >= 1 && n <= 128 &&
           strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-") == n;
}

static int ref_name(json_t *v)
{
    if (!json_is_string(v))
        return 0;
    const uint8_t *s = (const uint8_t *)json_string_value(v);
    size_t n = json_string_length(v), chars = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t c = s[i];
        if ((c & 0xC0) == 0x80)
            continue;
        chars++;
        if (c == 0xC2 && i + 1 < n)
            c = s[i + 1];
        else if (c >= 0x80)
            continue;
        if (c < 0x20 || (c >= 0x7F && c <= 0x9F))
            return 0;
    }
    return chars >= 1 && chars <= 64;
}

/* JSON text never holds a raw NUL (jansson 2.14 lets one through after a
 * number or literal, so it is checked separately). */
static json_t *ref_load(const char *s, size_t n)
{
    if (memchr(s, 0, n) != NULL)
        return NULL;
    return json_loadb(s, n, JSON_REJECT_DUPLICATES, NULL);
}

static int ref_header(const char *h, size_t n)
{
    json_t *j = ref_load(h, n);
    int ok = json_is_object(j);
    if (ok) {
        json_t *alg = json_object_get(j, "alg"), *typ = json_object_get(j, "typ");
        ok = json_is_string(alg) && json_string_length(alg) == 5 &&
             strcmp(json_string_value(alg), "HS256") == 0 && json_object_get(j, "crit") == NULL;
        if (typ != NULL) {
            const char *t = json_is_string(typ) ? json_string_value(typ) : "";
            ok = ok && json_string_length(typ) == 3 && (t[0] == 'J' || t[0] == 'j') &&
                 (t[1] == 'W' || t[1] == 'w') && (t[2] == 'T' || t[2] == 't');
        }
    }
    json_decref(j);
    return ok;
}

/* The claims as the reference reads them; NULL when refused. */
static json_t *ref_claims(const char *p, size_t n)
{
    json_t *j = ref_load(p, n);
    if (!json_is_object(j))
        goto refuse;
    if (!ref_token(json_object_get(j, "sub")) || !ref_name(json_object_get(j, "name")))
        goto refuse;
    json_t *adm = json_object_get(j, "adm"), *party = json_object_get(j, "party");
    json_t *exp = json_object_get(j, "exp"), *nbf = json_object_get(j, "nbf");
    if (adm != NULL && !json_is_boolean(adm))
        goto refuse;
    if (party != NULL && !ref_token(party))
        goto refuse;
    if (!json_is_integer(exp) || json_integer_value(exp) <= NOW)
        goto refuse;
    if (nbf != NULL && (!json_is_integer(nbf) || json_integer_value(nbf) > NOW))
        goto refuse;
    return j;
refuse:
    json_decref(j);
    return NULL;
}

static void check_refusal(const char *msg)
{
    size_t n = strnlen(msg, 160);
    if (n == 0 || n == 160)
        die("refusal without a one-line message", NULL);
    if (strstr(msg, secret) != NULL || strstr(msg, wrong) != NULL ||
        strstr(msg, "fuzz-secret") != NULL)
        die("message contains the secret", msg);
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)msg[i] < 0x20)
            die("control character in message", msg);
    }
}

static void check_player(const gw_player *p, json_t *claims)
{
    json_t *party = json_object_get(claims, "party");
    if (strcmp(p->id, json_string_value(json_object_get(claims, "sub"))) != 0 ||
        strcmp(p->name, json_string_value(json_object_get(claims, "name"))) != 0 ||
        strcmp(p->party, party ? json_string_value(party) : "") != 0 ||
        p->admin != json_is_true(json_object_get(claims, "adm")) ||
        p->exp != json_integer_value(json_object_get(claims, "exp")))
        die("player differs from the claims", NULL);
}

/* Mode 0: an accepted token must carry the right HMAC-SHA256 and alg. */
static void raw_token(const char *tok, size_t n)
{
    gw_player p;
    char msg[160];
    if (!gw_auth_verify(auth, tok, n, NOW, &p, msg)) {
        check_refusal(msg);
        return;
    }
    const char *d1 = memchr(tok, '.', n);
    const char *d2 = d1 ? memchr(d1 + 1, '.', n - (size_t)(d1 + 1 - tok)) : NULL;
    if (d2 == NULL || memchr(d2 + 1, '.', n - (size_t)(d2 + 1 - tok)) != NULL)
        die("accepted a token that is not three parts", NULL);
    char sig[128];
    size_t sn = sign(secret, tok, (size_t)(d2 - tok), sig);
    if (sn != n - (size_t)(d2 + 1 - tok) || memcmp(sig, d2 + 1, sn) != 0)
        die("accepted a token without the right signature", NULL);
}

/* Modes 1 and 2: build and sign a token from a header and a payload. */
static void built_token(const uint8_t *m, size_t n, int right_key)
{
    const uint8_t *nl = memchr(m, '\n', n);
    size_t hn = nl ? (size_t)(nl - m) : 0;
    const uint8_t *pl = nl ? nl + 1 : m;
    size_t pn = nl ? n - hn - 1 : n;
    static const char def_header[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
    const uint8_t *hd = nl ? m : (const uint8_t *)def_header;
    if (nl == NULL)
        hn = sizeof def_header - 1;

    size_t cap = (hn + pn) / 3 * 4 + 128;
    char *tok = malloc(cap);
    if (tok == NULL)
        return;
    size_t o = b64url(hd, hn, tok);
    tok[o++] = '.';
    o += b64url(pl, pn, tok + o);
    size_t signing = o;
    tok[o++] = '.';
    o += sign(right_key ? secret : wrong, tok, signing, tok + o);

    gw_player p;
    char msg[160];
    bool ok = gw_auth_verify(auth, tok, o, NOW, &p, msg);
    if (!right_key) {
        if (ok)
            die("accepted a token signed with the wrong secret", NULL);
        check_refusal(msg);
        free(tok);
        return;
    }
    json_t *claims = NULL;
    int want = o <= GW_AUTH_TOKEN_MAX && hn > 0 && pn > 0 && ref_header((const char *)hd, hn) &&
               (claims = ref_claims((const char *)pl, pn)) != NULL;
    if (ok && !want)
        die("accepted a token the reference refuses", NULL);
    if (!ok && want)
        die("refused a token the reference accepts", msg);
    if (ok)
        check_player(&p, claims);
    else
        check_refusal(msg);
    json_decref(claims);
    free(tok);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cur_data = data;
    cur_size = size;
    if (auth == NULL) {
        char msg[160];
        auth = gw_auth_create(secret, strlen(secret), msg);
        if (auth == NULL)
            die("gw_auth_create", msg);
    }
    if (size < 1)
        return 0;
    switch (data[0] % 3) {
    case 0:
        raw_token((const char *)data + 1, size - 1);
        break;
    case 1:
        built_token(data + 1, size - 1, 1);
        break;
    default:
        built_token(data + 1, size - 1, 0);
        break;
    }
    return 0;
}
