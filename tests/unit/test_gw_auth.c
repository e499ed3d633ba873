/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for the gateway's player tokens (src/gateway/auth.c): issue and
 * verify round trips; expiry (exp missing, of the wrong type, in the past,
 * equal to now) and nbf; forged tokens (wrong secret, tampered payload or
 * signature); alg "none" crafted by hand; HS384 and HS512 tokens signed with
 * the right secret; an alg that differs from "HS256" only in case, signed
 * correctly; every claim's type and charset; garbage, truncated and
 * oversized tokens; secrets that are too short; and secret files with and
 * without a trailing newline, missing, empty or too large. No refusal message
 * may contain the secret or the token.
 *
 * Tokens with arbitrary headers and claims are built here by hand (base64url
 * and OpenSSL's HMAC), so that a refusal is known to come from the rule under
 * test and not from a bad signature.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>

#include <cmocka.h>

#include <jwt.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "auth.h"

#define NOW 1800000000 /* 2027-01-15 */

static const char secret[] = "test-secret-0123456789-abcdefghij-XYZ"; /* 37 bytes */
static const char other[] = "another-secret-0123456789-abcdefghij";
static char msg[160];

/* ---- helpers ---- */

static gw_auth *make_auth(const char *s)
{
    char m[160];
    gw_auth *a = gw_auth_create(s, strlen(s), m);
    if (a == NULL)
        fail_msg("gw_auth_create: %s", m);
    return a;
}

static void b64url(const unsigned char *in, size_t n, char *out)
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
        uint32_t v = (uint32_t)in[i] << 16;
        out[o++] = al[v >> 18];
        out[o++] = al[(v >> 12) & 63];
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        out[o++] = al[v >> 18];
        out[o++] = al[(v >> 12) & 63];
        out[o++] = al[(v >> 6) & 63];
    }
    out[o] = '\0';
}

/* header.payload.signature with the HMAC `md` under key; md NULL leaves the
 * signature empty. The result is malloc'd. */
static char *craft_n(const char *header, const char *payload, size_t pn, const char *key,
                     const EVP_MD *md)
{
    size_t hn = strlen(header);
    char *tok = malloc(hn * 2 + pn * 2 + 200);
    assert_non_null(tok);
    b64url((const unsigned char *)header, hn, tok);
    size_t o = strlen(tok);
    tok[o++] = '.';
    b64url((const unsigned char *)payload, pn, tok + o);
    o += strlen(tok + o);
    tok[o++] = '.';
    tok[o] = '\0';
    if (md != NULL) {
        unsigned char mac[EVP_MAX_MD_SIZE];
        unsigned int mn = 0;
        assert_non_null(
            HMAC(md, key, (int)strlen(key), (const unsigned char *)tok, o - 1, mac, &mn));
        b64url(mac, mn, tok + o);
    }
    return tok;
}

static char *craft(const char *header, const char *payload, const char *key, const EVP_MD *md)
{
    return craft_n(header, payload, strlen(payload), key, md);
}

static char *craft256(const char *payload)
{
    return craft("{\"alg\":\"HS256\",\"typ\":\"JWT\"}", payload, secret, EVP_sha256());
}

static void check_clean_msg(const char *token, size_t len)
{
    assert_true(strlen(msg) > 0);
    assert_true(strlen(msg) < sizeof msg);
    assert_null(strstr(msg, secret));
    assert_null(strstr(msg, other));
    if (token != NULL && len >= 8 && len != SIZE_MAX) {
        /* Not the token, nor any of its parts. */
        char part[9];
        memcpy(part, token, 8);
        part[8] = '\0';
        if (strstr(msg, part) != NULL)
            fail_msg("message '%s' quotes the token", msg);
    }
    for (const char *p = msg; *p; p++)
        assert_true((unsigned char)*p >= 0x20);
}

static void expect_refused_n(const gw_auth *a, const char *tok, size_t len, const char *why)
{
    gw_player p;
    memset(&p, 0x5A, sizeof p);
    gw_player before = p;
    memset(msg, 0, sizeof msg);
    if (gw_auth_verify(a, tok, len, NOW, &p, msg))
        fail_msg("accepted: %.200s", tok);
    check_clean_msg(tok, len);
    if (why != NULL && strstr(msg, why) == NULL)
        fail_msg("%.120s: message '%s' does not contain '%s'", tok, msg, why);
    /* On refusal the output is untouched. */
    assert_memory_equal(&p, &before, sizeof p);
}

static void expect_refused(const gw_auth *a, const char *tok, const char *why)
{
    expect_refused_n(a, tok, strlen(tok), why);
}

static gw_player expect_accepted(const gw_auth *a, const char *tok)
{
    gw_player p;
    memset(&p, 0x5A, sizeof p);
    memset(msg, 'x', sizeof msg);
    if (!gw_auth_verify(a, tok, strlen(tok), NOW, &p, msg))
        fail_msg("refused (%s): %.200s", msg, tok);
    assert_string_equal(msg, "");
    return p;
}

static gw_player player(const char *id, const char *name, const char *party, bool admin,
                        int64_t exp)
{
    gw_player p;
    memset(&p, 0, sizeof p);
    snprintf(p.id, sizeof p.id, "%s", id);
    snprintf(p.name, sizeof p.name, "%s", name);
    snprintf(p.party, sizeof p.party, "%s", party);
    p.admin = admin;
    p.exp = exp;
    return p;
}

static char *issue(const gw_auth *a, const gw_player *p)
{
    char m[160];
    char *tok = gw_auth_issue(a, p, m);
    if (tok == NULL)
        fail_msg("gw_auth_issue: %s", m);
    assert_string_equal(m, "");
    return tok;
}

/* ---- create ---- */

static void test_create(void **state)
{
    (void)state;
    char m[160];
    char s31[32];
    memset(s31, 'k', 31);
    s31[31] = '\0';
    assert_null(gw_auth_create(s31, 31, m));
    assert_string_equal(m, "secret: 31 bytes, need at least 32");
    assert_null(gw_auth_create("", 0, m));
    assert_null(gw_auth_create(NULL, 40, m));
    assert_null(gw_auth_create(s31, 31, NULL));

    gw_auth *a = gw_auth_create(secret, 32, m);
    assert_non_null(a);
    gw_auth_destroy(a);

    /* Binary secrets: NUL bytes count. */
    unsigned char bin[40];
    for (size_t i = 0; i < sizeof bin; i++)
        bin[i] = (unsigned char)(i * 37);
    bin[0] = 0;
    a = gw_auth_create(bin, sizeof bin, m);
    assert_non_null(a);
    gw_player p = player("p1", "P", "", false, NOW + 60);
    char *tok = issue(a, &p);
    expect_accepted(a, tok);
    gw_auth *b = gw_auth_create(bin, sizeof bin - 1, m);
    expect_refused(b, tok, "token: bad signature");
    free(tok);
    gw_auth_destroy(a);
    gw_auth_destroy(b);

    char *huge = malloc(5000);
    assert_non_null(huge);
    memset(huge, 'h', 5000);
    assert_null(gw_auth_create(huge, 5000, m));
    assert_non_null(strstr(m, "at most 4096"));
    free(huge);

    gw_auth_destroy(NULL);
}

/* ---- round trip ---- */

static void test_round_trip(void **state)
{
    (void)state;
    gw_auth *a = make_auth(secret);
    gw_player in =
        player("player-42_X", "Zo\xc3\xab \xf0\x9f\x90\x89", "party_7", true, NOW + 3600);
    char *tok = issue(a, &in);
    gw_player out = expect_accepted(a, tok);
    assert_string_equal(out.id, "player-42_X");
    assert_string_equal(out.name, "Zo\xc3\xab \xf0\x9f\x90\x89");
    assert_string_equal(out.party, "party_7");
    assert_true(out.admin);
    assert_int_equal(out.exp, NOW + 3600);
    free(tok);

    in = player("p", "plain", "", false, NOW + 1);
    tok = issue(a, &in);
    out = expect_accepted(a, tok);
    assert_string_equal(out.party, "");
    assert_false(out.admin);
    assert_int_equal(out.exp, NOW + 1);
    /* out may be NULL, msg may be NULL. */
    assert_true(gw_auth_verify(a, tok, strlen(tok), NOW, NULL, NULL));
    /* The same token a second later is expired. */
    gw_player p;
    assert_false(gw_auth_verify(a, tok, strlen(tok), NOW + 1, &p, msg));
    assert_string_equal(msg, "token: expired");
    /* len, not strlen, delimits the token. */
    char *longer = malloc(strlen(tok) + 10);
    assert_non_null(longer);
    strcpy(longer, tok);
    strcat(longer, "garbage");
    assert_true(gw_auth_verify(a, longer, strlen(tok), NOW, NULL, msg));
    free(longer);
    free(tok);

    /* A 64-character name of 4-byte characters fills gw_player.name. */
    char name[4 * 64 + 1] = "";
    for (int i = 0; i < 64; i++)
        strcat(name, "\xf0\x9f\x98\x80");
    in = player("p", name, "", false, NOW + 10);
    tok = issue(a, &in);
    out = expect_accepted(a, tok);
    assert_string_equal(out.name, name);
    free(tok);

    /* A token from another library with extra claims is fine. */
    tok = craft256("{\"sub\":\"p9\",\"name\":\"N\",\"exp\":1800000100,\"iat\":1,\"iss\":\"x\","
                   "\"adm\":false,\"party\":\"pt\",\"nbf\":1700000000}");
    out = expect_accepted(a, tok);
    assert_string_equal(out.id, "p9");
    assert_string_equal(out.party, "pt");
    assert_false(out.admin);
    free(tok);
    gw_auth_destroy(a);
}

/* ---- expiry ---- */

static void test_expiry(void **state)
{
    (void)state;
    gw_auth *a = make_auth(secret);
    static const struct {
        const char *payload, *why;
    } cases[] = {
        {"{\"sub\":\"p\",\"name\":\"n\"}", "token: exp: required"},
        {"{\"sub\":\"p\",\"name\":\"n\",\"exp\":\"1900000000\"}", "token: exp: must be an integer"},
        {"{\"sub\":\"p\",\"name\":\"n\",\"exp\":1900000000.0}", "token: exp: must be an integer"},
        {"{\"sub\":\"p\",\"name\":\"n\",\"exp\":true}", "token: exp: must be an integer"},
        {"{\"sub\":\"p\",\"name\":\"n\",\"exp\":null}", "token: exp: must be an integer"},
        {"{\"sub\":\"p\",\"name\":\"n\",\"exp\":[1900000000]}", "token: exp: must be an integer"},
        {"{\"sub\":\"p\",\"name\":\"n\",\"exp\":1800000000}", "token: expired"},
        {"{\"sub\":\"p\",\"name\":\"n\",\"exp\":1799999999}", "token: expired"},
        {"{\"sub\":\"p\",\"name\":\"n\",\"exp\":0}", "token: expired"},
        {"{\"sub\":\"p\",\"name\":\"n\",\"exp\":-1}", "token: expired"},
        {"{\"sub\":\"p\",\"name\":\"n\",\"exp\":1900000000,\"nbf\":1800000001}",
         "token: not valid yet (nbf)"},
        {"{\"sub\":\"p\",\"name\":\"n\",\"exp\":1900000000,\"nbf\":\"1\"}",
         "token: nbf: must be an integer"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *tok = craft256(cases[i].payload);
        expect_refused(a, tok, NULL);
        if (strcmp(msg, cases[i].why) != 0)
            fail_msg("%s: message '%s', want '%s'", cases[i].payload, msg, cases[i].why);
        free(tok);
    }
    char *tok = craft256("{\"sub\":\"p\",\"name\":\"n\",\"exp\":1800000001,\"nbf\":1800000000}");
    expect_accepted(a, tok);
    free(tok);
    tok = craft256("{\"sub\":\"p\",\"name\":\"n\",\"exp\":9223372036854775807}");
    assert_int_equal(expect_accepted(a, tok).exp, INT64_MAX);
    free(tok);
    gw_auth_destroy(a);
}

/* ---- forgeries and algorithms ---- */

static void test_forged(void **state)
{
    (void)state;
    gw_auth *a = make_auth(secret), *b = make_auth(other);
    gw_player in = player("p1", "Mallory", "", false, NOW + 600);
    char *tok = issue(b, &in);
    expect_refused(a, tok, NULL);
    assert_string_equal(msg, "token: bad signature");
    expect_accepted(b, tok);
    free(tok);

    /* Claims changed after signing: "adm" added, exp extended. */
    in = player("p1", "Mallory", "", false, NOW + 600);
    tok = issue(a, &in);
    char *dot1 = strchr(tok, '.'), *dot2 = strrchr(tok, '.');
    char *forged =
        craft("{\"alg\":\"HS256\",\"typ\":\"JWT\"}",
              "{\"sub\":\"p1\",\"name\":\"Mallory\",\"exp\":1800000600,\"adm\":true}", "x", NULL);
    size_t fl = strlen(forged);
    forged = realloc(forged, fl + strlen(dot2) + 1);
    assert_non_null(forged);
    strcpy(forged + fl - 1, dot2); /* reuse the genuine signature */
    expect_refused(a, forged, "token: bad signature");
    free(forged);

    /* Every single-character change of the signature is refused. */
    size_t n = strlen(tok);
    for (char *p = dot2 + 1; *p; p++) {
        char keep = *p;
        *p = keep == 'A' ? 'B' : 'A';
        expect_refused(a, tok, NULL);
        *p = keep;
    }
    /* ... and of the payload. */
    for (char *p = dot1 + 1; p < dot2; p++) {
        char keep = *p;
        *p = keep == 'e' ? 'f' : 'e';
        expect_refused_n(a, tok, n, NULL);
        *p = keep;
    }
    expect_accepted(a, tok);
    free(tok);
    gw_auth_destroy(a);
    gw_auth_destroy(b);
}

static void test_alg_none(void **state)
{
    (void)state;
    gw_auth *a = make_auth(secret);
    const char *claims = "{\"sub\":\"p1\",\"name\":\"Eve\",\"exp\":1900000000,\"adm\":true}";
    static const char *const headers[] = {
        "{\"alg\":\"none\",\"typ\":\"JWT\"}",
        "{\"alg\":\"none\"}",
        "{\"alg\":\"None\"}",
        "{\"alg\":\"NONE\"}",
        "{\"typ\":\"JWT\"}",
        "{\"alg\":null}",
        "{\"alg\":\"\"}",
    };
    for (size_t i = 0; i < sizeof headers / sizeof headers[0]; i++) {
        /* With an empty signature: three parts, the last empty. */
        char *tok = craft(headers[i], claims, secret, NULL);
        expect_refused(a, tok, "token: not three base64url parts");
        /* Without the final dot. */
        tok[strlen(tok) - 1] = '\0';
        expect_refused(a, tok, "token: not three base64url parts");
        free(tok);
        /* With a valid HMAC-SHA256 signature: the header still decides. */
        tok = craft(headers[i], claims, secret, EVP_sha256());
        expect_refused(a, tok, "token: alg must be HS256");
        free(tok);
    }
    gw_auth_destroy(a);
}

static void test_other_algs(void **state)
{
    (void)state;
    gw_auth *a = make_auth(secret);
    const char *claims = "{\"sub\":\"p1\",\"name\":\"Eve\",\"exp\":1900000000}";
    /* libjwt itself accepts these with the right key; we do not. */
    static const jwt_alg_t algs[] = {JWT_ALG_HS384, JWT_ALG_HS512};
    for (size_t i = 0; i < 2; i++) {
        jwt_t *j = NULL;
        assert_int_equal(jwt_new(&j), 0);
        assert_int_equal(jwt_add_grants_json(j, claims), 0);
        assert_int_equal(
            jwt_set_alg(j, algs[i], (const unsigned char *)secret, (int)strlen(secret)), 0);
        char *tok = jwt_encode_str(j);
        assert_non_null(tok);
        jwt_t *check = NULL;
        assert_int_equal(
            jwt_decode(&check, tok, (const unsigned char *)secret, (int)strlen(secret)), 0);
        jwt_free(check);
        expect_refused(a, tok, NULL);
        assert_string_equal(msg, "token: alg must be HS256");
        free(tok);
        jwt_free(j);
    }
    /* Crafted: HS384/HS512 MACs, and near-misses of "HS256", all correctly signed. */
    char *tok = craft("{\"alg\":\"HS384\"}", claims, secret, EVP_sha384());
    expect_refused(a, tok, "token: alg must be HS256");
    free(tok);
    tok = craft("{\"alg\":\"HS512\"}", claims, secret, EVP_sha512());
    expect_refused(a, tok, "token: alg must be HS256");
    free(tok);
    static const char *const near[] = {
        "{\"alg\":\"hs256\"}",
        "{\"alg\":\"HS256 \"}",
        "{\"alg\":\"HS256\\u0000\"}",
        "{\"alg\":[\"HS256\"]}",
        "{\"alg\":256}",
        "{\"alg\":\"RS256\"}",
        "{\"alg\":\"HS25\"}",
        "{}",
    };
    for (size_t i = 0; i < sizeof near / sizeof near[0]; i++) {
        tok = craft(near[i], claims, secret, EVP_sha256());
        expect_refused(a, tok, NULL);
        if (strcmp(msg, "token: alg must be HS256") != 0 &&
            strcmp(msg, "token: header is not a JSON object with unique keys") != 0)
            fail_msg("%s: message '%s'", near[i], msg);
        free(tok);
    }
    /* The header must be a JSON object without duplicate keys. */
    static const char *const bad_headers[] = {"{\"alg\":\"none\",\"alg\":\"HS256\"}",
                                              "[\"HS256\"]",
                                              "\"HS256\"",
                                              "{\"alg\":\"HS256\"",
                                              "",
                                              "null"};
    for (size_t i = 0; i < sizeof bad_headers / sizeof bad_headers[0]; i++) {
        tok = craft(bad_headers[i], claims, secret, EVP_sha256());
        expect_refused(a, tok, NULL);
        if (strcmp(msg, "token: header is not a JSON object with unique keys") != 0 &&
            strcmp(msg, "token: not three base64url parts") != 0)
            fail_msg("%s: message '%s'", bad_headers[i], msg);
        free(tok);
    }
    /* typ, when present, is "JWT" in any case; crit is not supported. */
    static const struct {
        const char *header, *why;
    } typs[] = {
        {"{\"alg\":\"HS256\",\"typ\":\"at+jwt\"}", "token: typ must be JWT"},
        {"{\"alg\":\"HS256\",\"typ\":5}", "token: typ must be JWT"},
        {"{\"alg\":\"HS256\",\"typ\":\"JWTX\"}", "token: typ must be JWT"},
        {"{\"alg\":\"HS256\",\"crit\":[\"exp\"]}", "token: crit header not supported"},
    };
    for (size_t i = 0; i < sizeof typs / sizeof typs[0]; i++) {
        tok = craft(typs[i].header, claims, secret, EVP_sha256());
        expect_refused(a, tok, NULL);
        assert_string_equal(msg, typs[i].why);
        free(tok);
    }
    tok = craft("{\"alg\":\"HS256\",\"typ\":\"jwt\"}", claims, secret, EVP_sha256());
    expect_accepted(a, tok);
    free(tok);
    tok = craft("{\"alg\":\"HS256\"}", claims, secret, EVP_sha256());
    expect_accepted(a, tok);
    free(tok);
    /* HS256 itself, crafted here, with extra header fields: accepted. */
    tok = craft("{\"typ\":\"JWT\",\"alg\":\"HS256\",\"kid\":\"k1\"}", claims, secret, EVP_sha256());
    expect_accepted(a, tok);
    free(tok);
    gw_auth_destroy(a);
}

/* ---- claims ---- */

static void test_claims(void **state)
{
    (void)state;
    gw_auth *a = make_auth(secret);
    char s128[129], s129[130], n64[65], n65[66];
    memset(s128, 'a', 128);
    s128[128] = '\0';
    memset(s129, 'a', 129);
    s129[129] = '\0';
    memset(n64, 'n', 64);
    n64[64] = '\0';
    memset(n65, 'n', 65);
    n65[65] = '\0';

    char good[512];
    snprintf(good, sizeof good,
             "{\"sub\":\"%s\",\"name\":\"%s\",\"party\":\"%s\",\"adm\":true,\"exp\":1900000000}",
             s128, n64, s128);
    char *tok = craft256(good);
    gw_player p = expect_accepted(a, tok);
    assert_string_equal(p.id, s128);
    assert_string_equal(p.name, n64);
    assert_string_equal(p.party, s128);
    assert_true(p.admin);
    free(tok);

    static const struct {
        const char *claims, *why;
    } cases[] = {
        {"\"name\":\"n\"", "token: sub: required"},
        {"\"sub\":\"\",\"name\":\"n\"", "token: sub: must be a string of"},
        {"\"sub\":\"a b\",\"name\":\"n\"", "token: sub: must be a string of"},
        {"\"sub\":\"a.b\",\"name\":\"n\"", "token: sub: must be a string of"},
        {"\"sub\":\"\\u00e9\",\"name\":\"n\"", "token: sub: must be a string of"},
        {"\"sub\":\"a\\u0000\",\"name\":\"n\"", "token: payload is not a JSON object"},
        {"\"sub\":42,\"name\":\"n\"", "token: sub: must be a string of"},
        {"\"sub\":null,\"name\":\"n\"", "token: sub: must be a string of"},
        {"\"sub\":\"S129\",\"name\":\"n\"", "token: sub: must be a string of"},
        {"\"sub\":\"p\"", "token: name: required"},
        {"\"sub\":\"p\",\"name\":\"\"", "token: name: must be a string of 1..64 characters"},
        {"\"sub\":\"p\",\"name\":\"N65\"", "token: name: must be a string of 1..64 characters"},
        {"\"sub\":\"p\",\"name\":\"a\\nb\"", "token: name: must be a string of"},
        {"\"sub\":\"p\",\"name\":\"a\\u0085b\"", "token: name: must be a string of"},
        {"\"sub\":\"p\",\"name\":\"a\\u007fb\"", "token: name: must be a string of"},
        {"\"sub\":\"p\",\"name\":7", "token: name: must be a string of"},
        {"\"sub\":\"p\",\"name\":[\"n\"]", "token: name: must be a string of"},
        {"\"sub\":\"p\",\"name\":\"n\",\"adm\":\"true\"", "token: adm: must be a boolean"},
        {"\"sub\":\"p\",\"name\":\"n\",\"adm\":1", "token: adm: must be a boolean"},
        {"\"sub\":\"p\",\"name\":\"n\",\"adm\":null", "token: adm: must be a boolean"},
        {"\"sub\":\"p\",\"name\":\"n\",\"party\":\"\"", "token: party: must be a string of"},
        {"\"sub\":\"p\",\"name\":\"n\",\"party\":\"x y\"", "token: party: must be a string of"},
        {"\"sub\":\"p\",\"name\":\"n\",\"party\":\"x/y\"", "token: party: must be a string of"},
        {"\"sub\":\"p\",\"name\":\"n\",\"party\":5", "token: party: must be a string of"},
        {"\"sub\":\"p\",\"name\":\"n\",\"party\":\"S129\"", "token: party: must be a string of"},
        {"\"sub\":\"p\",\"sub\":\"q\",\"name\":\"n\"", "token: payload is not a JSON object"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char claims[512], payload[600];
        /* Expand the S129 / N65 placeholders. */
        const char *c = cases[i].claims;
        const char *ph = strstr(c, "S129") ? "S129" : strstr(c, "N65") ? "N65" : NULL;
        if (ph != NULL) {
            const char *at = strstr(c, ph);
            snprintf(claims, sizeof claims, "%.*s%s%s", (int)(at - c), c, ph[0] == 'S' ? s129 : n65,
                     at + strlen(ph));
        } else {
            snprintf(claims, sizeof claims, "%s", c);
        }
        snprintf(payload, sizeof payload, "{%s,\"exp\":1900000000}", claims);
        tok = craft256(payload);
        expect_refused(a, tok, cases[i].why);
        free(tok);
    }
    /* A name is counted in characters: 64 two-byte characters are fine. */
    char name[4 * 65 + 1] = "";
    for (int i = 0; i < 64; i++)
        strcat(name, "\xc3\xa9");
    char payload[600];
    snprintf(payload, sizeof payload, "{\"sub\":\"p\",\"name\":\"%s\",\"exp\":1900000000}", name);
    tok = craft256(payload);
    assert_string_equal(expect_accepted(a, tok).name, name);
    free(tok);
    strcat(name, "\xc3\xa9");
    snprintf(payload, sizeof payload, "{\"sub\":\"p\",\"name\":\"%s\",\"exp\":1900000000}", name);
    tok = craft256(payload);
    expect_refused(a, tok, "token: name:");
    free(tok);
    /* A raw NUL after a number: jansson alone would skip it, libjwt would
     * stop there. */
    static const char nul_payload[] = "{\"sub\":\"p\",\"name\":\"n\",\"exp\":1900000000\0}";
    tok = craft_n("{\"alg\":\"HS256\"}", nul_payload, sizeof nul_payload - 1, secret, EVP_sha256());
    expect_refused(a, tok, "token: payload is not a JSON object");
    free(tok);
    /* Payloads that are not objects. */
    static const char *const not_obj[] = {"[]", "\"x\"", "1", "{", "null"};
    for (size_t i = 0; i < sizeof not_obj / sizeof not_obj[0]; i++) {
        tok = craft256(not_obj[i]);
        expect_refused(a, tok, "token: payload is not a JSON object");
        free(tok);
    }
    gw_auth_destroy(a);
}

/* ---- garbage, truncation, size ---- */

static void test_garbage(void **state)
{
    (void)state;
    gw_auth *a = make_auth(secret);
    static const char *const cases[] = {
        "abc",
        "a.b",
        "a.b.c.d",
        "..",
        "a..b",
        "a.b.",
        ".b.c",
        "a. b.c",
        "a+b.c.d",
        "a/b.c.d",
        "eyJhbGciOiJIUzI1NiJ9.e30=.abc",
        "a.b.c\n",
        "\xc3\xa9.b.c",
        "Bearer a.b.c",
        "a.b.c ",
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        expect_refused(a, cases[i], "token: not three base64url parts");
    /* Parts of impossible length or not JSON. */
    expect_refused(a, "a.b.c", "token: header is not a JSON object");
    expect_refused(a, "eyJhbGciOiJIUzI1NiJ9.a.c", "token: payload is not a JSON object");

    expect_refused_n(a, "", 0, NULL);
    assert_string_equal(msg, "token: empty");
    expect_refused_n(a, NULL, 5, "token: empty");
    static const char nul[] = "eyJhbGciOiJIUzI1NiJ9\0.e30.abc";
    expect_refused_n(a, nul, sizeof nul - 1, "token: not three base64url parts");
    gw_player p;
    assert_false(gw_auth_verify(NULL, "a.b.c", 5, NOW, &p, msg));

    /* Every proper prefix of a valid token is refused. */
    gw_player in = player("p1", "Trunc", "pt", true, NOW + 60);
    char *tok = issue(a, &in);
    size_t n = strlen(tok);
    for (size_t i = 0; i < n; i++) {
        char *cut = malloc(i ? i : 1);
        assert_non_null(cut);
        memcpy(cut, tok, i);
        expect_refused_n(a, cut, i, NULL);
        free(cut);
    }
    free(tok);
    gw_auth_destroy(a);
}

static void test_size_limit(void **state)
{
    (void)state;
    gw_auth *a = make_auth(secret);
    /* Pad the claims so that the token is exactly GW_AUTH_TOKEN_MAX bytes. */
    char *pad = malloc(GW_AUTH_TOKEN_MAX);
    char *payload = malloc(GW_AUTH_TOKEN_MAX + 100);
    assert_non_null(pad);
    assert_non_null(payload);
    char *tok = NULL;
    for (size_t k = 2900; k < 3100; k++) {
        memset(pad, 'p', k);
        pad[k] = '\0';
        snprintf(payload, GW_AUTH_TOKEN_MAX + 100,
                 "{\"sub\":\"p\",\"name\":\"n\",\"exp\":1900000000,\"pad\":\"%s\"}", pad);
        tok = craft256(payload);
        if (strlen(tok) == GW_AUTH_TOKEN_MAX)
            break;
        free(tok);
        tok = NULL;
    }
    assert_non_null(tok);
    expect_accepted(a, tok);
    free(tok);

    /* One byte more is refused unparsed. */
    char *big = malloc(GW_AUTH_TOKEN_MAX + 1);
    assert_non_null(big);
    memset(big, 'a', GW_AUTH_TOKEN_MAX + 1);
    big[10] = '.';
    big[20] = '.';
    expect_refused_n(a, big, GW_AUTH_TOKEN_MAX + 1, NULL);
    assert_string_equal(msg, "token: 4097 bytes exceeds 4096");
    expect_refused_n(a, big, SIZE_MAX, "exceeds 4096");
    free(big);
    free(pad);
    free(payload);
    gw_auth_destroy(a);
}

/* ---- issue refusals ---- */

static void test_issue_refusals(void **state)
{
    (void)state;
    gw_auth *a = make_auth(secret);
    char m[160];
    static const struct {
        gw_player p;
        const char *why;
    } cases[] = {
        {{"", "n", "", false, NOW}, "issue: id:"},
        {{"a b", "n", "", false, NOW}, "issue: id:"},
        {{"p", "", "", false, NOW}, "issue: name:"},
        {{"p", "a\nb", "", false, NOW}, "issue: name:"},
        {{"p", "\xc3", "", false, NOW}, "issue: name:"},
        {{"p", "\xed\xa0\x80", "", false, NOW}, "issue: name:"},
        {{"p", "n", "x.y", false, NOW}, "issue: party:"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        assert_null(gw_auth_issue(a, &cases[i].p, m));
        if (strstr(m, cases[i].why) == NULL)
            fail_msg("case %zu: message '%s'", i, m);
        assert_null(strstr(m, secret));
    }
    gw_player p = player("p", "", "", false, NOW);
    memset(p.name, 'n', 65);
    assert_null(gw_auth_issue(a, &p, m));
    assert_non_null(strstr(m, "issue: name:"));
    /* An id without a terminating NUL in its array is refused, not overrun. */
    memset(p.id, 'i', sizeof p.id);
    assert_null(gw_auth_issue(a, &p, m));
    assert_null(gw_auth_issue(a, NULL, m));
    assert_null(gw_auth_issue(NULL, &p, NULL));
    gw_auth_destroy(a);
}

/* ---- secret files ---- */

static char tmpdir[64];

static int setup_dir(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/gw_auth_test.XXXXXX");
    return mkdtemp(tmpdir) == NULL ? -1 : 0;
}

static int teardown_dir(void **state)
{
    (void)state;
    static const char *const names[] = {"lf", "crlf", "none", "two", "empty", "big", "cr"};
    char path[128];
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", tmpdir, names[i]);
        unlink(path);
    }
    return rmdir(tmpdir);
}

static void write_file(const char *name, const void *data, size_t n, char *path, size_t cap)
{
    snprintf(path, cap, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

static void expect_secret(const char *name, const char *content, size_t n, const char *want,
                          size_t want_n)
{
    char path[128], m[160];
    write_file(name, content, n, path, sizeof path);
    size_t len = 999;
    char *s = gw_auth_secret_read(path, &len, m);
    if (s == NULL)
        fail_msg("%s: %s", name, m);
    assert_int_equal(len, want_n);
    assert_memory_equal(s, want, want_n);
    gw_auth_secret_free(s, len);
}

static void test_secret_file(void **state)
{
    (void)state;
    const char *k = "0123456789abcdef0123456789abcdef";
    expect_secret("lf", "0123456789abcdef0123456789abcdef\n", 33, k, 32);
    expect_secret("crlf", "0123456789abcdef0123456789abcdef\r\n", 34, k, 32);
    expect_secret("none", k, 32, k, 32);
    /* Only one newline is removed; a lone \r stays. */
    expect_secret("two", "0123456789abcdef0123456789abcdef\n\n", 34,
                  "0123456789abcdef0123456789abcdef\n", 33);
    expect_secret("cr", "0123456789abcdef0123456789abcdef\r", 33,
                  "0123456789abcdef0123456789abcdef\r", 33);
    expect_secret("empty", "", 0, "", 0);

    /* A secret read from a file works end to end. */
    char path[128], m[160];
    snprintf(path, sizeof path, "%s/lf", tmpdir);
    size_t len = 0;
    char *s = gw_auth_secret_read(path, &len, m);
    assert_non_null(s);
    gw_auth *a = gw_auth_create(s, len, m);
    assert_non_null(a);
    gw_auth *b = gw_auth_create(k, 32, m);
    gw_player p = player("p", "n", "", false, NOW + 5);
    char *tok = issue(a, &p);
    expect_accepted(b, tok);
    free(tok);
    gw_auth_destroy(a);
    gw_auth_destroy(b);
    gw_auth_secret_free(s, len);

    /* A short secret file reads fine but is refused at create. */
    snprintf(path, sizeof path, "%s/empty", tmpdir);
    s = gw_auth_secret_read(path, &len, m);
    assert_non_null(s);
    assert_null(gw_auth_create(s, len, m));
    assert_string_equal(m, "secret: 0 bytes, need at least 32");
    gw_auth_secret_free(s, len);

    /* Missing file and directory: the path and the reason, no content. */
    snprintf(path, sizeof path, "%s/missing", tmpdir);
    assert_null(gw_auth_secret_read(path, &len, m));
    assert_non_null(strstr(m, path));
    assert_non_null(strstr(m, "No such file"));
    assert_null(gw_auth_secret_read(tmpdir, &len, m));
    assert_non_null(strstr(m, "Is a directory"));
    assert_null(gw_auth_secret_read(NULL, &len, m));
    assert_null(gw_auth_secret_read(path, &len, NULL));

    /* Too large (4096 bytes plus \r\n is the most). */
    char *big = malloc(4099);
    assert_non_null(big);
    memset(big, 's', 4099);
    big[4096] = '\r';
    big[4097] = '\n';
    char bp[128];
    write_file("big", big, 4098, bp, sizeof bp);
    s = gw_auth_secret_read(bp, &len, m);
    assert_non_null(s);
    assert_int_equal(len, 4096);
    gw_auth_secret_free(s, len);
    big[4097] = 's';
    big[4098] = '\n';
    write_file("big", big, 4099, bp, sizeof bp);
    assert_null(gw_auth_secret_read(bp, &len, m));
    assert_non_null(strstr(m, "larger than 4096 bytes"));
    assert_null(strstr(m, "sss"));
    /* A larger file whose 4097th byte is a newline is not cut there. */
    big[4096] = '\n';
    write_file("big", big, 4099, bp, sizeof bp);
    assert_null(gw_auth_secret_read(bp, &len, m));
    free(big);
    gw_auth_secret_free(NULL, 0);

    /* A long path is shortened in the message. */
    char longpath[400];
    memset(longpath, 'd', sizeof longpath - 1);
    longpath[0] = '/';
    longpath[sizeof longpath - 1] = '\0';
    assert_null(gw_auth_secret_read(longpath, &len, m));
    assert_true(strlen(m) < 160);
    assert_non_null(strstr(m, "..."));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_expiry),
        cmocka_unit_test(test_forged),
        cmocka_unit_test(test_alg_none),
        cmocka_unit_test(test_other_algs),
        cmocka_unit_test(test_claims),
        cmocka_unit_test(test_garbage),
        cmocka_unit_test(test_size_limit),
        cmocka_unit_test(test_issue_refusals),
        cmocka_unit_test_setup_teardown(test_secret_file, setup_dir, teardown_dir),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
