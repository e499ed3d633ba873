/* SPDX-License-Identifier: MIT */
/*
 * test_schema: unit tests of the message schemas (include/mudbus/schema.h)
 * against the rules of docs/SCHEMA.md: every field rule exactly at its limit
 * and one past it, types, presence, auto-detection, timestamps, control
 * characters, size and depth limits, malformed JSON of every kind, the
 * encoder, timestamps and ids, options and metrics.
 *
 * Every validation case runs through both mb_schema_validate and the jansson
 * oracle (tests/ref/schema_ref.c), and both must return the expected status,
 * so the two implementations are tested against each other as well as
 * against the hand-written expectation. Table-driven tests report every
 * failing case (line, input, both reasons) before failing, instead of
 * stopping at the first.
 */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mudbus/metrics.h"
#include "mudbus/schema.h"
#include "schema_ref.h"

/* ---- harness ---- */

typedef struct lim {
    const mb_schema *s; /* NULL: default limits */
    size_t max_bytes;   /* the same limits for the oracle; 0 = default */
    unsigned max_depth;
} lim;

static const lim DEF = {NULL, 0, 0};
static lim BIG, DEPTH3, DEPTH1, DEPTH64, SMALL300; /* set up in group_setup */
static int g_fail;

static void dump(const char *p, size_t n)
{
    size_t shown = n < 200 ? n : 200;
    fprintf(stderr, "    input (%zu bytes): \"", n);
    for (size_t i = 0; i < shown; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c == '"' || c == '\\')
            fprintf(stderr, "\\%c", c);
        else if (c >= 0x20 && c < 0x7F)
            fputc(c, stderr);
        else
            fprintf(stderr, "\\x%02X", c);
    }
    fprintf(stderr, "\"%s\n", shown < n ? "..." : "");
}

/* 1 when msg contains one of the '|'-separated words (or words is NULL). */
static int has_word(const char *msg, const char *words)
{
    if (words == NULL)
        return 1;
    const char *w = words;
    for (;;) {
        const char *bar = strchr(w, '|');
        size_t wl = bar != NULL ? (size_t)(bar - w) : strlen(w);
        for (const char *p = msg; *p != '\0'; p++)
            if (strncmp(p, w, wl) == 0)
                return 1;
        if (bar == NULL)
            return 0;
        w = bar + 1;
    }
}

/* Validate a copy of json (exact-size allocation, so that ASan sees any read
 * past the end) with the library and with the oracle; both must return
 * `want`. On success the detected kind must be `want_kind` (unless AUTO); on
 * failure the library's message must name `field` and hold one of `words`. */
static void expect_at(int line, lim l, mb_schema_kind kind, const char *json, size_t len,
                      mb_status want, mb_schema_kind want_kind, const char *field,
                      const char *words)
{
    char *copy = malloc(len ? len : 1);
    assert_non_null(copy);
    memcpy(copy, json, len);
    mb_err err;
    mb_err_clear(&err);
    mb_schema_kind det = (mb_schema_kind)99, rdet = (mb_schema_kind)99;
    mb_status st = mb_schema_validate(l.s, kind, copy, len, &det, &err);
    char rmsg[256];
    mb_status rst =
        mbref_validate(kind, copy, len, l.max_bytes, l.max_depth, &rdet, rmsg, sizeof rmsg);
    free(copy);

    int bad = 0;
    if (st != want) {
        fprintf(stderr, "line %d: mb_schema_validate returned %s, expected %s (msg: %s)\n", line,
                mb_status_name(st), mb_status_name(want), err.msg);
        bad = 1;
    }
    if (rst != want) {
        fprintf(stderr, "line %d: oracle returned %s, expected %s (msg: %s)\n", line,
                mb_status_name(rst), mb_status_name(want), rmsg);
        bad = 1;
    }
    if (want == MB_OK && want_kind != MB_SCHEMA_AUTO) {
        if (st == MB_OK && det != want_kind) {
            fprintf(stderr, "line %d: detected %s, expected %s\n", line, mb_schema_kind_name(det),
                    mb_schema_kind_name(want_kind));
            bad = 1;
        }
        if (rst == MB_OK && rdet != want_kind) {
            fprintf(stderr, "line %d: oracle detected %d, expected %d\n", line, (int)rdet,
                    (int)want_kind);
            bad = 1;
        }
    }
    if (st == MB_OK && err.code != MB_OK) {
        fprintf(stderr, "line %d: MB_OK but err holds %s\n", line, mb_status_name(err.code));
        bad = 1;
    }
    if (st == want && want != MB_OK) {
        if (err.code != want) {
            fprintf(stderr, "line %d: err.code %s, expected %s\n", line, mb_status_name(err.code),
                    mb_status_name(want));
            bad = 1;
        }
        if (err.msg[0] == '\0' || (field != NULL && strstr(err.msg, field) == NULL) ||
            !has_word(err.msg, words)) {
            fprintf(stderr, "line %d: message '%s' should name '%s' and say '%s'\n", line, err.msg,
                    field ? field : "", words ? words : "");
            bad = 1;
        }
    }
    if (bad) {
        dump(json, len);
        g_fail++;
    }
}

#define EXPECT(l, kind, json, len, want, wkind, field, words)                                      \
    expect_at(__LINE__, l, kind, json, len, want, wkind, field, words)
#define OK_AS(json, wkind) EXPECT(DEF, MB_SCHEMA_AUTO, json, strlen(json), MB_OK, wkind, NULL, NULL)
#define OK_L(l, json)                                                                              \
    EXPECT(l, MB_SCHEMA_AUTO, json, strlen(json), MB_OK, MB_SCHEMA_AUTO, NULL, NULL)
#define BAD(json, want, field, words)                                                              \
    EXPECT(DEF, MB_SCHEMA_AUTO, json, strlen(json), want, MB_SCHEMA_AUTO, field, words)
#define BAD_L(l, json, want, field, words)                                                         \
    EXPECT(l, MB_SCHEMA_AUTO, json, strlen(json), want, MB_SCHEMA_AUTO, field, words)
#define JSONERR(json, len)                                                                         \
    EXPECT(DEF, MB_SCHEMA_AUTO, json, len, MB_EJSON, MB_SCHEMA_AUTO, NULL, NULL)
#define SCHEMAERR(json, field, words) BAD(json, MB_ESCHEMA, field, words)

static void finish(void)
{
    if (g_fail != 0)
        fail_msg("%d case(s) failed, see above", g_fail);
}

static int reset(void **state)
{
    (void)state;
    g_fail = 0;
    return 0;
}

/* ---- documents ---- */

typedef struct kv {
    const char *key;
    const char *val; /* raw JSON; NULL: remove the key */
} kv;

static const kv CHAT_BASE[] = {
    {"message_id", "\"a3f1c2d4e5b64789a0b1c2d3e4f5a6b7\""},
    {"timestamp", "\"2026-01-13T10:00:00.123Z\""},
    {"sender_id", "\"4f9a2c1e-7b3d-4e8a-9c5f-1d2e3f4a5b6c\""},
    {"sender_name", "\"Armitage\""},
    {"channel", "\"local\""},
    {"content", "\"Has anyone seen the Necronomicon?\""},
};

static const kv EVENT_BASE[] = {
    {"message_id", "\"evt-7\""},
    {"timestamp", "\"2026-01-13T10:00:00Z\""},
    {"event_type", "\"player_entered\""},
    {"event_data", "{\"player_id\":\"p1\",\"hp\":[10,20],\"flags\":{\"invisible\":false}}"},
};

static char g_doc[400000];
static char g_vals[4][160000];
static unsigned g_vi;

/* The base document of `kind` with the modifications applied: a key of the
 * base is replaced (or removed when val is NULL), another key is appended. */
static const char *doc_mod(mb_schema_kind kind, const kv *mods, size_t nmods)
{
    const kv *base = kind == MB_SCHEMA_EVENT ? EVENT_BASE : CHAT_BASE;
    size_t nbase = kind == MB_SCHEMA_EVENT ? sizeof EVENT_BASE / sizeof EVENT_BASE[0]
                                           : sizeof CHAT_BASE / sizeof CHAT_BASE[0];
    size_t k = 0;
    int first = 1;
    g_doc[k++] = '{';
    for (size_t i = 0; i < nbase + nmods; i++) {
        const kv *e = i < nbase ? &base[i] : &mods[i - nbase];
        const char *val = e->val;
        if (i < nbase) {
            for (size_t j = 0; j < nmods; j++)
                if (strcmp(mods[j].key, e->key) == 0)
                    val = mods[j].val;
        } else {
            int in_base = 0;
            for (size_t j = 0; j < nbase; j++)
                if (strcmp(base[j].key, e->key) == 0)
                    in_base = 1;
            if (in_base)
                continue;
        }
        if (val == NULL)
            continue;
        int n = snprintf(g_doc + k, sizeof g_doc - k, "%s\"%s\":%s", first ? "" : ",", e->key, val);
        assert_true(n > 0 && (size_t)n < sizeof g_doc - k);
        k += (size_t)n;
        first = 0;
    }
    g_doc[k++] = '}';
    g_doc[k] = '\0';
    return g_doc;
}

static const char *chat_with(const char *key, const char *val)
{
    kv m = {key, val};
    return doc_mod(MB_SCHEMA_CHAT, &m, 1);
}

static const char *event_with(const char *key, const char *val)
{
    kv m = {key, val};
    return doc_mod(MB_SCHEMA_EVENT, &m, 1);
}

static char *next_val(void)
{
    return g_vals[g_vi++ % 4];
}

/* A JSON string literal of `piece` repeated n times. */
static const char *jrep(const char *piece, size_t n)
{
    char *v = next_val();
    size_t pl = strlen(piece), k = 0;
    assert_true(n * pl + 3 <= sizeof g_vals[0]);
    v[k++] = '"';
    for (size_t i = 0; i < n; i++, k += pl)
        memcpy(v + k, piece, pl);
    v[k++] = '"';
    v[k] = '\0';
    return v;
}

/* A JSON string literal of raw text. */
static const char *jstr(const char *raw)
{
    return jrep(raw, 1);
}

/* n nested objects {"a":{"a":...inner...}}; inner is the innermost value. */
static const char *nested(size_t n, const char *inner)
{
    char *v = next_val();
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        memcpy(v + k, "{\"a\":", 5);
        k += 5;
    }
    size_t il = strlen(inner);
    memcpy(v + k, inner, il);
    k += il;
    memset(v + k, '}', n);
    k += n;
    v[k] = '\0';
    return v;
}

/* ---- validation: whole messages ---- */

static const char REAL_CHAT[] =
    "{\"message_id\":\"a3f1c2d4e5b64789a0b1c2d3e4f5a6b7\",\"timestamp\":\"2026-01-13T10:00:00."
    "123Z\","
    "\"sender_id\":\"4f9a2c1e-7b3d-4e8a-9c5f-1d2e3f4a5b6c\",\"sender_name\":\"Armitage\","
    "\"channel\":\"local\",\"content\":\"Has anyone seen the Necronomicon? \\u00c9tienne said "
    "it was in the library.\",\"room_id\":\"earth_arkhamcity_northside_derby_high\","
    "\"subzone\":\"northside\",\"target_id\":null,\"party_id\":null,\"target_name\":null,"
    "\"speaker_kind\":\"player\"}";

static const char REAL_EVENT[] =
    "{\"message_id\":\"evt-5b1c\",\"timestamp\":\"2026-01-13T10:00:00Z\",\"event_type\":"
    "\"player_entered_room\",\"event_data\":{\"player_id\":\"p-1\",\"player_name\":\"Armitage\","
    "\"from\":null,\"stats\":{\"hp\":42,\"sanity\":-3.5e0,\"tags\":[\"a\",true,null]}},"
    "\"room_id\":\"earth_arkhamcity_downtown_001\",\"player_id\":\"p-1\",\"sender_id\":null,"
    "\"sender_name\":\"Game\"}";

static void test_valid_messages(void **state)
{
    (void)state;
    OK_AS(REAL_CHAT, MB_SCHEMA_CHAT);
    OK_AS(REAL_EVENT, MB_SCHEMA_EVENT);
    OK_AS(doc_mod(MB_SCHEMA_CHAT, NULL, 0), MB_SCHEMA_CHAT);
    OK_AS(doc_mod(MB_SCHEMA_EVENT, NULL, 0), MB_SCHEMA_EVENT);
    OK_AS(event_with("event_data", "{}"), MB_SCHEMA_EVENT);
    OK_AS(" \t\r\n{\"content\":\"x\",\"channel\":\"say\",\"sender_name\":\"N\",\"sender_id\":\"s\","
          "\"timestamp\":\"2026-01-13T10:00:00Z\",\"message_id\":\"m\"} \n\r\t",
          MB_SCHEMA_CHAT);
    /* Every optional field present, then every optional field null. */
    kv all[] = {{"room_id", "\"r-1\""},        {"subzone", "\"northside\""},
                {"target_id", "\"t_2\""},      {"party_id", "\"party-9\""},
                {"target_name", "\"Wilbur\""}, {"speaker_kind", "\"npc\""}};
    OK_AS(doc_mod(MB_SCHEMA_CHAT, all, 6), MB_SCHEMA_CHAT);
    kv nulls[] = {{"room_id", "null"},  {"subzone", "null"},     {"target_id", "null"},
                  {"party_id", "null"}, {"target_name", "null"}, {"speaker_kind", "null"}};
    OK_AS(doc_mod(MB_SCHEMA_CHAT, nulls, 6), MB_SCHEMA_CHAT);
    kv enulls[] = {
        {"room_id", "null"}, {"player_id", "null"}, {"sender_id", "null"}, {"sender_name", "null"}};
    OK_AS(doc_mod(MB_SCHEMA_EVENT, enulls, 4), MB_SCHEMA_EVENT);
    kv eall[] = {{"room_id", "\"r\""},
                 {"player_id", "\"p\""},
                 {"sender_id", "\"s\""},
                 {"sender_name", "\"The Game\""}};
    OK_AS(doc_mod(MB_SCHEMA_EVENT, eall, 4), MB_SCHEMA_EVENT);
    /* Escaped keys are the same keys. */
    OK_AS("{\"message\\u005fid\":\"m\",\"timestamp\":\"2026-01-13T10:00:00Z\",\"sender_id\":\"s\","
          "\"sender_name\":\"N\",\"\\u0063hannel\":\"say\",\"content\":\"x\"}",
          MB_SCHEMA_CHAT);
    finish();
}

static void test_auto_detection(void **state)
{
    (void)state;
    const char *chat = doc_mod(MB_SCHEMA_CHAT, NULL, 0);
    EXPECT(DEF, MB_SCHEMA_CHAT, chat, strlen(chat), MB_OK, MB_SCHEMA_CHAT, NULL, NULL);
    EXPECT(DEF, MB_SCHEMA_EVENT, chat, strlen(chat), MB_ESCHEMA, MB_SCHEMA_AUTO, NULL, NULL);
    const char *event = doc_mod(MB_SCHEMA_EVENT, NULL, 0);
    EXPECT(DEF, MB_SCHEMA_EVENT, event, strlen(event), MB_OK, MB_SCHEMA_EVENT, NULL, NULL);
    EXPECT(DEF, MB_SCHEMA_CHAT, event, strlen(event), MB_ESCHEMA, MB_SCHEMA_AUTO, "event_",
           "unknown");
    /* Detection by key: without event_data the document is still an event
     * (event_type), so the complaint is the missing event_data; and the
     * reverse. */
    SCHEMAERR(event_with("event_data", NULL), "event_data", "missing");
    SCHEMAERR(event_with("event_type", NULL), "event_type", "missing");
    /* A chat document with an event key is an event. */
    SCHEMAERR(chat_with("event_data", "{}"), NULL, NULL);
    SCHEMAERR(chat_with("event_type", "\"x\""), NULL, NULL);
    /* Chat-only fields are unknown in an event. */
    SCHEMAERR(event_with("content", "\"hi\""), "content", "unknown");
    SCHEMAERR(event_with("channel", "\"say\""), "channel", "unknown");
    finish();
}

/* ---- validation: field rules ---- */

static const char *const EMPTY_WORDS = "empty|length|least|short|below|minimum|1..";

static void id_rules(mb_schema_kind kind, const char *field, size_t max)
{
    const char *(*with)(const char *, const char *) =
        kind == MB_SCHEMA_EVENT ? event_with : chat_with;
    OK_AS(with(field, jrep("a", max)), kind);
    OK_AS(with(field, jrep("\\u0061", max)), kind); /* escapes count decoded */
    OK_AS(with(field, jstr("Az09_-")), kind);
    OK_AS(with(field, jstr("\\u0041")), kind);
    SCHEMAERR(with(field, jrep("a", max + 1)), field, "exceeds");
    SCHEMAERR(with(field, jrep("\\u0061", max + 1)), field, "exceeds");
    SCHEMAERR(with(field, jstr("")), field, EMPTY_WORDS);
    SCHEMAERR(with(field, jstr("a.b")), field, "outside");
    SCHEMAERR(with(field, jstr("a\\u002eb")), field, "outside");
    SCHEMAERR(with(field, jstr("a b")), field, "outside");
    SCHEMAERR(with(field, jstr("a:b")), field, "outside");
    SCHEMAERR(with(field, jstr("a/b")), field, "outside");
    SCHEMAERR(with(field, jstr("caf\xc3\xa9")), field, "outside");
    SCHEMAERR(with(field, jstr("a\\nb")), field, "outside|control");
}

static void test_id_and_token_rules(void **state)
{
    (void)state;
    id_rules(MB_SCHEMA_CHAT, "message_id", 64);
    id_rules(MB_SCHEMA_EVENT, "message_id", 64);
    id_rules(MB_SCHEMA_EVENT, "event_type", 64);
    id_rules(MB_SCHEMA_CHAT, "sender_id", 128);
    id_rules(MB_SCHEMA_CHAT, "room_id", 128);
    id_rules(MB_SCHEMA_CHAT, "subzone", 128);
    id_rules(MB_SCHEMA_CHAT, "target_id", 128);
    id_rules(MB_SCHEMA_CHAT, "party_id", 128);
    id_rules(MB_SCHEMA_EVENT, "room_id", 128);
    id_rules(MB_SCHEMA_EVENT, "player_id", 128);
    id_rules(MB_SCHEMA_EVENT, "sender_id", 128);
    finish();
}

static void name_rules(mb_schema_kind kind, const char *field)
{
    const char *(*with)(const char *, const char *) =
        kind == MB_SCHEMA_EVENT ? event_with : chat_with;
    OK_AS(with(field, jstr("A")), kind);
    OK_AS(with(field, jstr("Dr. Henry Armitage (ret.), \\\"the librarian\\\"")), kind);
    OK_AS(with(field, jrep("a", 64)), kind);
    OK_AS(with(field, jrep("\xc3\xa9", 64)), kind);         /* 128 bytes, 64 characters */
    OK_AS(with(field, jrep("\\u00e9", 64)), kind);          /* escaped */
    OK_AS(with(field, jrep("\xf0\x9f\x98\x80", 64)), kind); /* 256 bytes */
    OK_AS(with(field, jrep("\\ud83d\\ude00", 64)), kind);   /* surrogate pairs */
    OK_AS(with(field, jstr("\xc2\xa0nbsp")), kind);         /* U+00A0 is not Cc */
    SCHEMAERR(with(field, jrep("a", 65)), field, "exceeds");
    SCHEMAERR(with(field, jrep("\xc3\xa9", 65)), field, "exceeds");
    SCHEMAERR(with(field, jrep("\\u00e9", 65)), field, "exceeds");
    SCHEMAERR(with(field, jrep("\xf0\x9f\x98\x80", 65)), field, "exceeds");
    SCHEMAERR(with(field, jrep("\\ud83d\\ude00", 65)), field, "exceeds");
    SCHEMAERR(with(field, jstr("")), field, EMPTY_WORDS);
    SCHEMAERR(with(field, jstr("a\\nb")), field, "control");
    SCHEMAERR(with(field, jstr("a\\tb")), field, "control");
    SCHEMAERR(with(field, jstr("a\\u0007")), field, "control");
    SCHEMAERR(with(field, jstr("a\\u0085")), field, "control");
    SCHEMAERR(with(field, jstr("a\\u007f")), field, "control");
    SCHEMAERR(with(field, jstr("a\x7f")), field, "control");
    SCHEMAERR(with(field, jstr("a\xc2\x9f")), field, "control");
}

static void test_name_rules(void **state)
{
    (void)state;
    name_rules(MB_SCHEMA_CHAT, "sender_name");
    name_rules(MB_SCHEMA_CHAT, "target_name");
    name_rules(MB_SCHEMA_EVENT, "sender_name");
    finish();
}

static void test_text_rules(void **state)
{
    (void)state;
    const mb_schema_kind C = MB_SCHEMA_CHAT;
    OK_AS(chat_with("content", jstr("a")), C);
    OK_AS(chat_with("content", jrep("a", 10000)), C);
    OK_AS(chat_with("content", jrep("\xc3\xa9", 10000)), C);         /* 20000 bytes */
    OK_AS(chat_with("content", jrep("\\u00e9", 10000)), C);          /* 60000 bytes of JSON */
    OK_AS(chat_with("content", jrep("\xf0\x9f\x98\x80", 10000)), C); /* 40000 bytes */
    OK_L(BIG, chat_with("content", jrep("\\ud83d\\ude00", 10000)));  /* 120000 bytes */
    OK_AS(chat_with("content", jstr("\\n")), C);
    OK_AS(chat_with("content", jstr("\\t")), C);
    OK_AS(chat_with("content", jstr("line one\\nline two\\tend")), C);
    OK_AS(chat_with("content", jstr("\\u000a\\u0009")), C);
    OK_AS(chat_with("content", jstr("\xc2\xa0 \xe2\x80\xa8 \xf4\x8f\xbf\xbf \\u00a0")), C);
    OK_AS(chat_with("content", jstr("quote \\\" backslash \\\\ slash \\/ \\u007e")), C);
    SCHEMAERR(chat_with("content", jrep("a", 10001)), "content", "exceeds");
    SCHEMAERR(chat_with("content", jrep("a", 10001)), "10001", "10000");
    SCHEMAERR(chat_with("content", jrep("\xc3\xa9", 10001)), "content", "exceeds");
    SCHEMAERR(chat_with("content", jrep("\\u00e9", 10001)), "content", "exceeds");
    SCHEMAERR(chat_with("content", jrep("\xf0\x9f\x98\x80", 10001)), "content", "exceeds");
    BAD_L(BIG, chat_with("content", jrep("\\ud83d\\ude00", 10001)), MB_ESCHEMA, "content",
          "exceeds");
    SCHEMAERR(chat_with("content", jstr("")), "content", EMPTY_WORDS);
    SCHEMAERR(chat_with("content", jstr("a\\rb")), "content", "control");
    SCHEMAERR(chat_with("content", jstr("bell\\u0007")), "content", "U+0007");
    SCHEMAERR(chat_with("content", jstr("bell\\u0007")), "content", "control");
    SCHEMAERR(chat_with("content", jstr("nel\\u0085")), "content", "control");
    SCHEMAERR(chat_with("content", jstr("nel\xc2\x85")), "content", "control");
    SCHEMAERR(chat_with("content", jstr("del\\u007f")), "content", "control");
    SCHEMAERR(chat_with("content", jstr("del\x7f")), "content", "control");
    SCHEMAERR(chat_with("content", jstr("\\u009f")), "content", "control");
    SCHEMAERR(chat_with("content", jstr("\\u0080")), "content", "control");
    SCHEMAERR(chat_with("content", jstr("\\u001f")), "content", "control");
    SCHEMAERR(chat_with("content", jstr("\\u0001")), "content", "control");
    SCHEMAERR(chat_with("content", jstr("\\b")), "content", "control");
    SCHEMAERR(chat_with("content", jstr("\\f")), "content", "control");
    SCHEMAERR(chat_with("content", jrep("\\u0007", 10001)), "content", "control|exceeds");
    finish();
}

static void test_enum_rules(void **state)
{
    (void)state;
    static const char *const chans[] = {"say",  "local",  "global", "whisper", "emote",
                                        "pose", "system", "admin",  "party"};
    for (size_t i = 0; i < 9; i++)
        OK_AS(chat_with("channel", jstr(chans[i])), MB_SCHEMA_CHAT);
    OK_AS(chat_with("channel", jstr("\\u0073ay")), MB_SCHEMA_CHAT);
    const char *bad_chans[] = {"shout",          "Say",  "SAY",      "say ",
                               " say",           "",     "sa",       "says",
                               "whisper\\u0000", "tell", "global\\n"};
    for (size_t i = 0; i < sizeof bad_chans / sizeof bad_chans[0]; i++) {
        if (strstr(bad_chans[i], "\\u0000") != NULL)
            BAD(chat_with("channel", jstr(bad_chans[i])), MB_EJSON, NULL, NULL);
        else
            SCHEMAERR(chat_with("channel", jstr(bad_chans[i])), "channel", "not one of");
    }
    SCHEMAERR(chat_with("channel", jstr("shout")), "shout", "not one of");
    OK_AS(chat_with("speaker_kind", jstr("player")), MB_SCHEMA_CHAT);
    OK_AS(chat_with("speaker_kind", jstr("npc")), MB_SCHEMA_CHAT);
    OK_AS(chat_with("speaker_kind", jstr("system")), MB_SCHEMA_CHAT);
    OK_AS(chat_with("speaker_kind", "null"), MB_SCHEMA_CHAT);
    const char *bad_speakers[] = {"bot", "Player", "NPC", "", "player ", "admin", "unset"};
    for (size_t i = 0; i < sizeof bad_speakers / sizeof bad_speakers[0]; i++)
        SCHEMAERR(chat_with("speaker_kind", jstr(bad_speakers[i])), "speaker_kind", "not one of");
    finish();
}

static void test_types(void **state)
{
    (void)state;
    static const char *const chat_req[] = {"message_id",  "timestamp", "sender_id",
                                           "sender_name", "channel",   "content"};
    static const char *const event_req[] = {"message_id", "timestamp", "event_type"};
    static const struct {
        const char *val, *word;
    } wrong[] = {
        {"1", "number"}, {"-1.5e3", "number"}, {"true", "bool|true"}, {"false", "bool|false"},
        {"[]", "array"}, {"[\"a\"]", "array"}, {"{}", "object"},      {"{\"a\":\"b\"}", "object"}};
    for (size_t f = 0; f < 6; f++) {
        for (size_t w = 0; w < sizeof wrong / sizeof wrong[0]; w++)
            SCHEMAERR(chat_with(chat_req[f], wrong[w].val), chat_req[f], wrong[w].word);
        SCHEMAERR(chat_with(chat_req[f], "null"), chat_req[f], "missing|null");
        SCHEMAERR(chat_with(chat_req[f], NULL), chat_req[f], "missing");
    }
    for (size_t f = 0; f < 3; f++) {
        for (size_t w = 0; w < sizeof wrong / sizeof wrong[0]; w++)
            SCHEMAERR(event_with(event_req[f], wrong[w].val), event_req[f], wrong[w].word);
        SCHEMAERR(event_with(event_req[f], "null"), event_req[f], "missing|null");
        SCHEMAERR(event_with(event_req[f], NULL), event_req[f], "missing");
    }
    /* event_data: an object, nothing else. */
    SCHEMAERR(event_with("event_data", "[]"), "event_data", "array");
    SCHEMAERR(event_with("event_data", "[{}]"), "event_data", "array");
    SCHEMAERR(event_with("event_data", "\"{}\""), "event_data", "string");
    SCHEMAERR(event_with("event_data", "0"), "event_data", "number");
    SCHEMAERR(event_with("event_data", "true"), "event_data", "bool|true");
    SCHEMAERR(event_with("event_data", "null"), "event_data", "missing|null");
    SCHEMAERR(event_with("event_data", NULL), "event_data", "missing");
    /* Optional fields: null is absence, any other non-string is refused. */
    static const char *const chat_opt[] = {"room_id",  "subzone",     "target_id",
                                           "party_id", "target_name", "speaker_kind"};
    for (size_t f = 0; f < 6; f++) {
        OK_AS(chat_with(chat_opt[f], "null"), MB_SCHEMA_CHAT);
        for (size_t w = 0; w < sizeof wrong / sizeof wrong[0]; w++)
            SCHEMAERR(chat_with(chat_opt[f], wrong[w].val), chat_opt[f], wrong[w].word);
    }
    static const char *const event_opt[] = {"room_id", "player_id", "sender_id", "sender_name"};
    for (size_t f = 0; f < 4; f++) {
        OK_AS(event_with(event_opt[f], "null"), MB_SCHEMA_EVENT);
        for (size_t w = 0; w < sizeof wrong / sizeof wrong[0]; w++)
            SCHEMAERR(event_with(event_opt[f], wrong[w].val), event_opt[f], wrong[w].word);
    }
    finish();
}

static void test_unknown_fields(void **state)
{
    (void)state;
    SCHEMAERR(chat_with("colour", "\"red\""), "colour", "unknown");
    SCHEMAERR(chat_with("colour", "null"), "colour", "unknown");
    SCHEMAERR(chat_with("Content", "\"x\""), "Content", "unknown");
    SCHEMAERR(chat_with("player_id", "\"p\""), "player_id", "unknown");
    SCHEMAERR(chat_with("", "1"), NULL, "unknown");
    SCHEMAERR(chat_with("content ", "\"x\""), NULL, "unknown");
    SCHEMAERR(event_with("colour", "{}"), "colour", "unknown");
    SCHEMAERR(event_with("target_name", "\"x\""), "target_name", "unknown");
    SCHEMAERR(event_with("speaker_kind", "\"npc\""), "speaker_kind", "unknown");
    /* Nested keys are free-form in event_data. */
    OK_AS(event_with("event_data", "{\"colour\":1,\"content\":[],\"\":null}"), MB_SCHEMA_EVENT);
    finish();
}

static void test_not_object(void **state)
{
    (void)state;
    static const char *const docs[] = {"[]",   "[{}]",  "\"chat\"", "1",        "-0.5",
                                       "true", "false", "null",     " [1,2,3] "};
    for (size_t i = 0; i < sizeof docs / sizeof docs[0]; i++)
        SCHEMAERR(docs[i], "message", "expected object");
    SCHEMAERR("{}", "missing", NULL);
    finish();
}

/* ---- validation: timestamps ---- */

static const struct ts_case {
    const char *ts;
    int ok;
    const char *word; /* a word the reason should hold, besides "timestamp" */
} TS[] = {
    {"2026-01-13T10:00:00Z", 1, NULL},
    {"2026-01-13T10:00:00.1Z", 1, NULL},
    {"2026-01-13T10:00:00.123Z", 1, NULL},
    {"2026-01-13T10:00:00.123456789Z", 1, NULL},
    {"2026-01-13T10:00:00+00:00", 1, NULL},
    {"2026-01-13T10:00:00.5+00:00", 1, NULL},
    {"2024-02-29T00:00:00Z", 1, NULL},
    {"2000-02-29T12:00:00Z", 1, NULL},
    {"2400-02-29T12:00:00Z", 1, NULL},
    {"0000-02-29T12:00:00Z", 1, NULL},
    {"2016-12-31T23:59:60Z", 1, NULL},
    {"2026-06-30T23:59:60.5Z", 1, NULL},
    {"0000-01-01T00:00:00Z", 1, NULL},
    {"9999-12-31T23:59:59.999999999Z", 1, NULL},
    {"2026-04-30T00:00:00Z", 1, NULL},
    {"2026-01-31T00:00:00Z", 1, NULL},
    {"2026-12-31T00:00:00Z", 1, NULL},
    {"2023-02-29T00:00:00Z", 0, "day"},
    {"1900-02-29T00:00:00Z", 0, "day"},
    {"2100-02-29T00:00:00Z", 0, "day"},
    {"2026-02-30T00:00:00Z", 0, "day"},
    {"2026-04-31T00:00:00Z", 0, "day"},
    {"2026-01-32T00:00:00Z", 0, "day"},
    {"2026-01-00T00:00:00Z", 0, "day"},
    {"2026-13-01T00:00:00Z", 0, "month"},
    {"2026-00-01T00:00:00Z", 0, "month"},
    {"2026-01-13T24:00:00Z", 0, "hour"},
    {"2026-01-13T10:60:00Z", 0, "minute"},
    {"2026-01-13T12:00:60Z", 0, "second"},
    {"2026-01-13T23:58:60Z", 0, "second"},
    {"2026-01-13T23:59:61Z", 0, "second"},
    {"2026-01-13T10:00:00.1234567890Z", 0, NULL},
    {"2026-01-13T10:00:00.Z", 0, NULL},
    {"2026-01-13t10:00:00Z", 0, NULL},
    {"2026-01-13T10:00:00z", 0, NULL},
    {"2026-01-13T10:00:00+01:00", 0, NULL},
    {"2026-01-13T10:00:00-00:00", 0, NULL},
    {"2026-01-13T10:00:00+0000", 0, NULL},
    {"2026-01-13T10:00:00+00", 0, NULL},
    {"2026-01-13T10:00:00+00:00Z", 0, NULL},
    {"2026-01-13T10:00:00", 0, NULL},
    {"2026-01-13T10:00:00.123", 0, NULL},
    {"2026-01-13 10:00:00Z", 0, NULL},
    {"2026-01-13T10:00Z", 0, NULL},
    {"2026-01-13T10:00:00ZZ", 0, NULL},
    {"2026-01-13T10:00:00Z ", 0, NULL},
    {" 2026-01-13T10:00:00Z", 0, NULL},
    {"26-01-13T10:00:00Z", 0, NULL},
    {"2026-1-13T10:00:00Z", 0, NULL},
    {"+2026-01-13T10:00:00Z", 0, NULL},
    {"20260113T100000Z", 0, NULL},
    {"2026-01-13T10:00:00,5Z", 0, NULL},
    {"2026-01-13T1a:00:00Z", 0, NULL},
    {"2026-01-13", 0, NULL},
    {"", 0, NULL},
    {"\xef\xbc\x92\xef\xbc\x90\xef\xbc\x92\xef\xbc\x96-01-13T10:00:00Z", 0, NULL},
};

static void test_timestamp_rules(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof TS / sizeof TS[0]; i++) {
        const char *d = chat_with("timestamp", jstr(TS[i].ts));
        if (TS[i].ok)
            OK_AS(d, MB_SCHEMA_CHAT);
        else
            SCHEMAERR(d, "timestamp", TS[i].word);
        d = event_with("timestamp", jstr(TS[i].ts));
        if (TS[i].ok)
            OK_AS(d, MB_SCHEMA_EVENT);
        else
            SCHEMAERR(d, "timestamp", TS[i].word);
    }
    /* Escapes are decoded before the timestamp is parsed. */
    OK_AS(chat_with("timestamp", jstr("\\u0032026-01-13T10:00:00\\u005a")), MB_SCHEMA_CHAT);
    SCHEMAERR(chat_with("timestamp", jstr("2026-02-30T00:00:00Z")), "timestamp", "30");
    finish();
}

static void test_timestamp_parse(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof TS / sizeof TS[0]; i++) {
        mb_err err;
        mb_err_clear(&err);
        int64_t ms = -42;
        mb_status st = mb_timestamp_parse(TS[i].ts, strlen(TS[i].ts), &ms, &err);
        if ((st == MB_OK) != TS[i].ok || (!TS[i].ok && st != MB_EINVAL)) {
            fprintf(stderr, "mb_timestamp_parse('%s') = %s, expected %s (%s)\n", TS[i].ts,
                    mb_status_name(st), TS[i].ok ? "MB_OK" : "MB_EINVAL", err.msg);
            g_fail++;
        } else if (!TS[i].ok && (err.msg[0] == '\0' || !has_word(err.msg, TS[i].word))) {
            fprintf(stderr, "mb_timestamp_parse('%s'): reason '%s' lacks '%s'\n", TS[i].ts, err.msg,
                    TS[i].word);
            g_fail++;
        }
    }
    static const struct {
        const char *ts;
        int64_t ms;
    } vals[] = {
        {"1970-01-01T00:00:00Z", 0},
        {"1970-01-01T00:00:00.001Z", 1},
        {"1969-12-31T23:59:59.999Z", -1},
        {"2026-01-13T10:00:00Z", 1768298400000},
        {"2026-01-13T10:00:00+00:00", 1768298400000},
        {"2026-01-13T10:00:00.1Z", 1768298400100},
        {"2026-01-13T10:00:00.12Z", 1768298400120},
        {"2026-01-13T10:00:00.123Z", 1768298400123},
        {"2026-01-13T10:00:00.123999999Z", 1768298400123},
        {"2026-01-13T10:00:00.9999Z", 1768298400999},
        {"2024-02-29T12:00:00Z", 1709208000000},
        {"2000-02-29T00:00:00Z", 951782400000},
        {"0000-01-01T00:00:00Z", -62167219200000},
        {"9999-12-31T23:59:59.999Z", 253402300799999},
    };
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
        int64_t ms = -42;
        mb_status st = mb_timestamp_parse(vals[i].ts, strlen(vals[i].ts), &ms, NULL);
        if (st != MB_OK || ms != vals[i].ms) {
            fprintf(stderr, "mb_timestamp_parse('%s') = %s, %lld; expected %lld\n", vals[i].ts,
                    mb_status_name(st), (long long)ms, (long long)vals[i].ms);
            g_fail++;
        }
    }
    /* The length bounds the parse: no NUL terminator needed. */
    int64_t ms = 0;
    assert_int_equal(mb_timestamp_parse("2026-01-13T10:00:00Zjunk", 20, &ms, NULL), MB_OK);
    assert_int_equal(ms, 1768298400000);
    assert_int_equal(mb_timestamp_parse("2026-01-13T10:00:00Z", 19, &ms, NULL), MB_EINVAL);
    finish();
}

static void test_timestamp_format(void **state)
{
    (void)state;
    char buf[MB_TIMESTAMP_MAX];
    assert_int_equal(mb_timestamp_format(0, buf), 24);
    assert_string_equal(buf, "1970-01-01T00:00:00.000Z");
    assert_int_equal(mb_timestamp_format(-1, buf), 24);
    assert_string_equal(buf, "1969-12-31T23:59:59.999Z");
    mb_timestamp_format(1768298400123, buf);
    assert_string_equal(buf, "2026-01-13T10:00:00.123Z");
    mb_timestamp_format(1709208000000 + 5, buf);
    assert_string_equal(buf, "2024-02-29T12:00:00.005Z");
    mb_timestamp_format(-62167219200000, buf);
    assert_string_equal(buf, "0000-01-01T00:00:00.000Z");
    mb_timestamp_format(253402300799999, buf);
    assert_string_equal(buf, "9999-12-31T23:59:59.999Z");
    /* Round trips over 0000..9999, including negative times. */
    uint64_t x = 0x9e3779b97f4a7c15u;
    for (int i = 0; i < 20000; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        int64_t t = (int64_t)(x % 315569520000000u) - 62167219200000;
        size_t n = mb_timestamp_format(t, buf);
        int64_t back = 0;
        const char *d = chat_with("timestamp", jstr(buf));
        if (n != 24 || strlen(buf) != 24 || mb_timestamp_parse(buf, n, &back, NULL) != MB_OK ||
            back != t ||
            mbref_validate(MB_SCHEMA_CHAT, d, strlen(d), 0, 0, NULL, NULL, 0) != MB_OK) {
            fprintf(stderr, "format/parse round trip of %lld: '%s' -> %lld\n", (long long)t, buf,
                    (long long)back);
            g_fail++;
            break;
        }
    }
    /* Out of range years are clamped, and still produce a valid timestamp. */
    assert_int_equal(mb_timestamp_format(INT64_MAX, buf), 24);
    assert_memory_equal(buf, "9999-", 5);
    int64_t back;
    assert_int_equal(mb_timestamp_parse(buf, 24, &back, NULL), MB_OK);
    assert_int_equal(mb_timestamp_format(INT64_MIN, buf), 24);
    assert_memory_equal(buf, "0000-", 5);
    assert_int_equal(mb_timestamp_parse(buf, 24, &back, NULL), MB_OK);
    finish();
}

/* ---- validation: limits ---- */

static void test_depth(void **state)
{
    (void)state;
    /* The top-level object is depth 1 and event_data depth 2: nine objects
     * in event_data (nested(8, "{}") or nested(9, scalar)) make ten. */
    OK_AS(event_with("event_data", nested(8, "{}")), MB_SCHEMA_EVENT);
    OK_AS(event_with("event_data", nested(9, "1")), MB_SCHEMA_EVENT);
    OK_AS(event_with("event_data", nested(9, "\"deep\"")), MB_SCHEMA_EVENT);
    SCHEMAERR(event_with("event_data", nested(9, "{}")), "event_data", "depth");
    SCHEMAERR(event_with("event_data", nested(10, "1")), "event_data", "depth");
    SCHEMAERR(event_with("event_data", nested(9, "{}")), "11", "10");
    OK_AS(event_with("event_data", "{\"a\":[[[[[[[[]]]]]]]]}"), MB_SCHEMA_EVENT);
    OK_AS(event_with("event_data", "{\"a\":[[[[[[[[1,\"x\",null]]]]]]]]}"), MB_SCHEMA_EVENT);
    SCHEMAERR(event_with("event_data", "{\"a\":[[[[[[[[[]]]]]]]]]}"), "event_data", "depth");
    SCHEMAERR(event_with("event_data", "{\"a\":[[[[[[[[{}]]]]]]]]}"), "event_data", "depth");
    SCHEMAERR(event_with("event_data", "{\"a\":1,\"b\":[[[[[[[[{}]]]]]]]],\"c\":2}"), "event_data",
              "depth");
    /* Configured limits. */
    OK_L(DEPTH3, event_with("event_data", "{\"a\":{}}"));
    OK_L(DEPTH3, event_with("event_data", "{\"a\":[1]}"));
    BAD_L(DEPTH3, event_with("event_data", "{\"a\":{\"b\":{}}}"), MB_ESCHEMA, "event_data",
          "depth");
    BAD_L(DEPTH3, event_with("event_data", "{\"a\":[[]]}"), MB_ESCHEMA, "event_data", "depth");
    if (DEPTH1.s != NULL) {
        OK_L(DEPTH1, chat_with("room_id", "\"r\""));
        BAD_L(DEPTH1, event_with("event_data", "{}"), MB_ESCHEMA, "event_data", "depth");
    }
    OK_L(DEPTH64, event_with("event_data", nested(62, "{}")));
    BAD_L(DEPTH64, event_with("event_data", nested(63, "{}")), MB_ESCHEMA, "event_data", "depth");
    /* A deep value in a wrong-typed or unknown field is refused either way. */
    SCHEMAERR(chat_with("room_id", nested(12, "1")), "room_id", NULL);
    SCHEMAERR(chat_with("zz", nested(12, "1")), "zz", NULL);
    /* jansson's own limit of 2048 value levels makes it a JSON error: in
     * nested(n, inner) inside event_data, inner is at value depth n + 2. */
    BAD_L(BIG, event_with("event_data", nested(2046, "{}")), MB_ESCHEMA, "event_data", "depth");
    BAD_L(BIG, event_with("event_data", nested(2046, "1")), MB_ESCHEMA, "event_data", "depth");
    BAD_L(BIG, event_with("event_data", nested(2047, "1")), MB_EJSON, NULL, NULL);
    BAD_L(BIG, event_with("event_data", nested(2047, "{}")), MB_EJSON, NULL, NULL);
    BAD_L(BIG, event_with("event_data", nested(20000, "{}")), MB_EJSON, NULL, NULL);
    finish();
}

static void test_size(void **state)
{
    (void)state;
    static char big[70000];
    const char *d = doc_mod(MB_SCHEMA_CHAT, NULL, 0);
    size_t dl = strlen(d);
    memcpy(big, d, dl);
    memset(big + dl, ' ', sizeof big - dl);
    EXPECT(DEF, MB_SCHEMA_AUTO, big, 65536, MB_OK, MB_SCHEMA_CHAT, NULL, NULL);
    EXPECT(DEF, MB_SCHEMA_AUTO, big, 65537, MB_ETOOBIG, MB_SCHEMA_AUTO, "payload", "exceeds");
    EXPECT(DEF, MB_SCHEMA_AUTO, big, 65537, MB_ETOOBIG, MB_SCHEMA_AUTO, "65537", "65536");
    EXPECT(BIG, MB_SCHEMA_AUTO, big, sizeof big, MB_OK, MB_SCHEMA_CHAT, NULL, NULL);
    /* Leading whitespace counts the same. */
    memset(big, ' ', sizeof big);
    memcpy(big + 65536 - dl, d, dl);
    EXPECT(DEF, MB_SCHEMA_AUTO, big, 65536, MB_OK, MB_SCHEMA_CHAT, NULL, NULL);
    /* Nothing is read past the limit: garbage is too big, not malformed. */
    memset(big, 0xFF, sizeof big);
    EXPECT(DEF, MB_SCHEMA_AUTO, big, 65537, MB_ETOOBIG, MB_SCHEMA_AUTO, "payload", "exceeds");
    EXPECT(DEF, MB_SCHEMA_AUTO, big, 65536, MB_EJSON, MB_SCHEMA_AUTO, NULL, NULL);
    /* A configured limit of 300 bytes. */
    memcpy(big, d, dl);
    memset(big + dl, '\n', 400 - dl);
    EXPECT(SMALL300, MB_SCHEMA_AUTO, big, 300, MB_OK, MB_SCHEMA_CHAT, NULL, NULL);
    EXPECT(SMALL300, MB_SCHEMA_AUTO, big, 301, MB_ETOOBIG, MB_SCHEMA_AUTO, "payload", "300");
    EXPECT(SMALL300, MB_SCHEMA_AUTO, "[", 1, MB_EJSON, MB_SCHEMA_AUTO, NULL, NULL);
    /* Empty input is malformed JSON. */
    EXPECT(DEF, MB_SCHEMA_AUTO, "", 0, MB_EJSON, MB_SCHEMA_AUTO, NULL, NULL);
    finish();
}

/* ---- validation: malformed JSON ---- */

static void truncations(const char *doc)
{
    size_t n = strlen(doc);
    for (size_t i = 0; i < n; i++)
        EXPECT(DEF, MB_SCHEMA_AUTO, doc, i, MB_EJSON, MB_SCHEMA_AUTO, NULL, NULL);
}

static void test_truncated(void **state)
{
    (void)state;
    truncations(REAL_CHAT);
    truncations(REAL_EVENT);
    truncations(" {\"content\" : \"\xf0\x9f\x98\x80\\ud83d\\ude00\\u00e9\" , \"a\" : [ 1.5e-3 , "
                "-0 , true , false , null , { } ] }");
    finish();
}

/* Bodies of the content string that make the document malformed. */
static const struct {
    const char *body;
    size_t len; /* 0: strlen */
} BAD_STRINGS[] = {
    {"\\x41", 0},
    {"\\u12", 0},
    {"\\u12G4", 0},
    {"\\uG123", 0},
    {"\\u 123", 0},
    {"\\U0041", 0},
    {"\\'", 0},
    {"\\a", 0},
    {"\\0", 0},
    {"\\e", 0},
    {"abc\\", 0},
    {"\\u0000", 0},
    {"a\\u0000b", 0},
    {"\\uD800", 0},
    {"\\uDBFF", 0},
    {"\\uDC00", 0},
    {"\\uDFFF", 0},
    {"\\uD800\\u0041", 0},
    {"\\uD800\\uD800", 0},
    {"\\uD800x", 0},
    {"\\uD800\\n", 0},
    {"\\uDC00\\uD800", 0},
    {"\\ud83d", 0},
    {"\\ude00\\ud83d", 0},
    {"\xc0\x80", 0},
    {"\xc1\xbf", 0},
    {"\xc0\xaf", 0},
    {"\xe0\x80\x80", 0},
    {"\xe0\x9f\xbf", 0},
    {"\xed\xa0\x80", 0},
    {"\xed\xbf\xbf", 0},
    {"\xed\xa0\xbd\xed\xb8\x80", 0},
    {"\xf0\x80\x80\x80", 0},
    {"\xf0\x8f\xbf\xbf", 0},
    {"\xf4\x90\x80\x80", 0},
    {"\xf5\x80\x80\x80", 0},
    {"\xf8\x88\x80\x80\x80", 0},
    {"\x80", 0},
    {"\xbf", 0},
    {"a\x80z", 0},
    {"\xe2\x82", 0},
    {"\xf0\x9f\x98", 0},
    {"\xc2", 0},
    {"\xc2"
     "A",
     0},
    {"\xe2\x28\xa1", 0},
    {"\xf0\x28\x8c\xbc", 0},
    {"\xfe", 0},
    {"\xff", 0},
    {"\x01", 0},
    {"\x1f", 0},
    {"\t", 0},
    {"\n", 0},
    {"\r", 0},
    {"a\0b", 3},
    {"\0", 1},
};

static const char *chat_with_content_raw(const char *body, size_t blen, size_t *len)
{
    const char *pre = "{\"message_id\":\"m\",\"timestamp\":\"2026-01-13T10:00:00Z\",\"sender_id\":"
                      "\"s\",\"sender_name\":\"N\",\"channel\":\"say\",\"content\":\"";
    const char *post = "\"}";
    size_t k = strlen(pre);
    memcpy(g_doc, pre, k);
    memcpy(g_doc + k, body, blen);
    k += blen;
    memcpy(g_doc + k, post, strlen(post) + 1);
    *len = k + strlen(post);
    return g_doc;
}

static void test_malformed_strings(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof BAD_STRINGS / sizeof BAD_STRINGS[0]; i++) {
        size_t blen = BAD_STRINGS[i].len ? BAD_STRINGS[i].len : strlen(BAD_STRINGS[i].body);
        size_t len;
        const char *d = chat_with_content_raw(BAD_STRINGS[i].body, blen, &len);
        JSONERR(d, len);
        /* The same in a key, and in event_data. */
        size_t k = (size_t)snprintf(g_vals[0], 40, "{\"");
        memcpy(g_vals[0] + k, BAD_STRINGS[i].body, blen);
        k += blen;
        memcpy(g_vals[0] + k, "\":1}", 5);
        k += 4;
        JSONERR(g_vals[0], k);
        char ed[256];
        size_t el = (size_t)snprintf(ed, sizeof ed,
                                     "{\"message_id\":\"m\",\"timestamp\":\"2026-"
                                     "01-13T10:00:00Z\",\"event_type\":\"t\","
                                     "\"event_data\":{\"x\":[\"");
        memcpy(ed + el, BAD_STRINGS[i].body, blen);
        el += blen;
        memcpy(ed + el, "\"]}}", 4);
        el += 4;
        JSONERR(ed, el);
    }
    /* The valid counterparts, to show the harness is not the reason. */
    OK_AS(chat_with("content", jstr("\\ud83d\\ude00 \\uDBFF\\uDFFF \\uD800\\uDC00 \\uFFFF "
                                    "\xef\xbf\xbf \xc2\xa0\xdf\xbf\xe0\xa0\x80\xed\x9f\xbf"
                                    "\xee\x80\x80\xf0\x90\x80\x80")),
          MB_SCHEMA_CHAT);
    /* U+0080 is valid JSON but a Cc character: fine in event_data only. */
    OK_AS(event_with("event_data", "{\"s\":\"\xc2\x80\\u0080\x7f\"}"), MB_SCHEMA_EVENT);
    SCHEMAERR(chat_with("content", jstr("\xc2\x80")), "content", "control");
    finish();
}

static void test_malformed_structure(void **state)
{
    (void)state;
    const char *d = doc_mod(MB_SCHEMA_CHAT, NULL, 0);
    size_t dl = strlen(d);
    static const struct {
        const char *s;
        size_t len;
    } tails[] = {{"x", 1},        {"{}", 2},          {",", 1},    {"]", 1},    {"}", 1},
                 {"\"\"", 2},     {"0", 1},           {"\0", 1},   {" \0", 2},  {"\xff", 1},
                 {"/", 1},        {"//c", 3},         {"/**/", 4}, {"\x0c", 1}, {"\x0b", 1},
                 {"\xc2\xa0", 2}, {"\xef\xbb\xbf", 3}};
    char buf[1024];
    for (size_t i = 0; i < sizeof tails / sizeof tails[0]; i++) {
        memcpy(buf, d, dl);
        memcpy(buf + dl, tails[i].s, tails[i].len);
        JSONERR(buf, dl + tails[i].len);
        /* and as a prefix */
        memcpy(buf, tails[i].s, tails[i].len);
        memcpy(buf + tails[i].len, d, dl);
        JSONERR(buf, dl + tails[i].len);
    }
    static const char *const docs[] = {
        "{\"message_id\":\"m\",}",
        "{,\"message_id\":\"m\"}",
        "{\"message_id\" \"m\"}",
        "{\"message_id\"::\"m\"}",
        "{'message_id':\"m\"}",
        "{message_id:\"m\"}",
        "{\"message_id\":'m'}",
        "{\"message_id\":\"m\" \"timestamp\":\"t\"}",
        "{\"message_id\":\"m\";\"timestamp\":\"t\"}",
        "{\"message_id\":\"m\"",
        "{\"message_id\":}",
        "{\"message_id\"}",
        "{1:2}",
        "{null:2}",
        "{\"a\":[1,]}",
        "{\"a\":[,1]}",
        "{\"a\":[1 2]}",
        "{\"a\":[}",
        "{\"a\":{]}",
        "{} {}",
        "{}}",
        "{{}}",
        "{\"a\":tru}",
        "{\"a\":True}",
        "{\"a\":nul}",
        "{\"a\":NaN}",
        "{\"a\":Infinity}",
        "{\"a\":-Infinity}",
        "{\"a\":undefined}",
        "/* c */ {}",
        "{\"a\":1 /* c */}",
        "\"abc",
        "[",
        "]",
        "{",
        "}",
        "",
        " ",
        "nul",
    };
    for (size_t i = 0; i < sizeof docs / sizeof docs[0]; i++)
        JSONERR(docs[i], strlen(docs[i]));
    finish();
}

static void test_duplicate_keys(void **state)
{
    (void)state;
    BAD(chat_with("zz", "1,\"content\":\"again\""), MB_EJSON, "content", "duplicate");
    BAD(chat_with("zz", "1,\"\\u0063ontent\":\"again\""), MB_EJSON, NULL, "duplicate");
    BAD(chat_with("zz", "1,\"message\\u005fid\":\"m2\""), MB_EJSON, NULL, "duplicate");
    BAD(chat_with("room_id", "null,\"room_id\":null"), MB_EJSON, "room_id", "duplicate");
    BAD(chat_with("zz", "1,\"zz\":2"), MB_EJSON, "zz", "duplicate");
    BAD(event_with("zz", "1,\"event_data\":{}"), MB_EJSON, "event_data", "duplicate");
    BAD(event_with("event_data", "{\"a\":1,\"a\":2}"), MB_EJSON, NULL, "duplicate");
    BAD(event_with("event_data", "{\"a\":1,\"\\u0061\":2}"), MB_EJSON, NULL, "duplicate");
    BAD(event_with("event_data", "{\"\\u0061\":1,\"a\":2}"), MB_EJSON, NULL, "duplicate");
    BAD(event_with("event_data", "{\"\":1,\"\":2}"), MB_EJSON, NULL, "duplicate");
    BAD(event_with("event_data", "{\"\xc3\xa9\":1,\"\\u00e9\":2}"), MB_EJSON, NULL, "duplicate");
    BAD(event_with("event_data", "{\"\xf0\x9f\x98\x80\":1,\"\\ud83d\\ude00\":2}"), MB_EJSON, NULL,
        "duplicate");
    BAD(event_with("event_data", "{\"a/\":1,\"a\\/\":2}"), MB_EJSON, NULL, "duplicate");
    BAD(event_with("event_data", "{\"a\\n\":1,\"a\\u000a\":2}"), MB_EJSON, NULL, "duplicate");
    BAD(event_with("event_data", "{\"x\":{\"b\":1,\"c\":2,\"b\":3}}"), MB_EJSON, NULL, "duplicate");
    BAD(event_with("event_data", "{\"l\":[1,{\"k\":null,\"k\":null}]}"), MB_EJSON, NULL,
        "duplicate");
    /* Same key in different objects, or differing in case or normalisation,
     * is no duplicate. */
    OK_AS(event_with("event_data", "{\"a\":{\"a\":{\"a\":1}},\"b\":[{\"a\":1},{\"a\":2}]}"),
          MB_SCHEMA_EVENT);
    OK_AS(event_with("event_data", "{\"a\":1,\"A\":2,\"\xc3\xa9\":3,\"e\xcc\x81\":4}"),
          MB_SCHEMA_EVENT);
    /* A duplicate among many keys. */
    char *v = next_val();
    size_t k = 0;
    v[k++] = '{';
    for (int i = 0; i < 2000; i++)
        k += (size_t)sprintf(v + k, "\"key%d\":%d,", i, i);
    strcpy(v + k, "\"last\":0}");
    OK_AS(event_with("event_data", v), MB_SCHEMA_EVENT);
    strcpy(v + k, "\"key1999\":0}");
    BAD(event_with("event_data", v), MB_EJSON, "key1999", "duplicate");
    strcpy(v + k, "\"key\\u0030\":0}");
    BAD(event_with("event_data", v), MB_EJSON, NULL, "duplicate");
    finish();
}

static void test_numbers(void **state)
{
    (void)state;
    static const char *const good[] = {"0",
                                       "-0",
                                       "1",
                                       "-1",
                                       "0.0",
                                       "-0.0",
                                       "1.5",
                                       "1e5",
                                       "1E5",
                                       "1e+5",
                                       "1e-5",
                                       "1E+2",
                                       "0e0",
                                       "-0e-0",
                                       "0e99999",
                                       "1.5e10",
                                       "-1.5e-3",
                                       "9223372036854775807",
                                       "-9223372036854775808",
                                       "1e308",
                                       "-1e308",
                                       "1.7976931348623157e308",
                                       "1e-400",
                                       "-1e-400",
                                       "4.9e-324",
                                       "1e-99999999999",
                                       "123456789012345678901234567890.0",
                                       "9223372036854775808.0",
                                       "9223372036854775807e0",
                                       "-9223372036854775809.5"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        char *v = next_val();
        snprintf(v, 200, "{\"n\":%s,\"l\":[%s]}", good[i], good[i]);
        OK_AS(event_with("event_data", v), MB_SCHEMA_EVENT);
    }
    static const char *const bad[] = {"01",
                                      "-01",
                                      "00",
                                      "1.",
                                      "-1.",
                                      ".5",
                                      "-.5",
                                      "-",
                                      "+1",
                                      "1e",
                                      "1e+",
                                      "1e-",
                                      "1E",
                                      "1.e5",
                                      "0x10",
                                      "1.5.5",
                                      "1e5e5",
                                      "--1",
                                      "- 1",
                                      "1 .5",
                                      "1_000",
                                      "0b1",
                                      "1f",
                                      "1ee2",
                                      "1e+-2",
                                      "NaN",
                                      "Infinity",
                                      "-Infinity",
                                      "9223372036854775808",
                                      "-9223372036854775809",
                                      "99999999999999999999",
                                      "1e309",
                                      "-1e309",
                                      "1E400",
                                      "1.8e308",
                                      "123.456e999",
                                      "1e99999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *v = next_val();
        snprintf(v, 200, "{\"n\":%s}", bad[i]);
        const char *d = event_with("event_data", v);
        JSONERR(d, strlen(d));
        snprintf(v, 200, "{\"n\":[%s]}", bad[i]);
        d = event_with("event_data", v);
        JSONERR(d, strlen(d));
    }
    /* A number out of range in a string field's place is a JSON error, not a
     * type error. */
    const char *d = chat_with("content", "1e309");
    JSONERR(d, strlen(d));
    d = chat_with("content", "01");
    JSONERR(d, strlen(d));
    finish();
}

static void test_raw_nul(void **state)
{
    (void)state;
    /* jansson accepts a NUL right after a number or literal (a bug in its
     * stream unget); mudbus and the oracle refuse every raw NUL. */
    static const char *const values[] = {"1", "true", "[null", "-1.5e3", "false", "0"};
    static const char *const closers[] = {"}}", "}}", "]}}", "}}", "}}", "}}"};
    const char *pre = "{\"message_id\":\"m\",\"timestamp\":\"2026-01-13T10:00:00Z\",\"event_type\":"
                      "\"t\",\"event_data\":{\"n\":";
    char buf[256];
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        int n = snprintf(buf, sizeof buf, "%s%s", pre, values[i]);
        size_t k = (size_t)n;
        buf[k++] = '\0';
        memcpy(buf + k, closers[i], strlen(closers[i]));
        k += strlen(closers[i]);
        JSONERR(buf, k);
        if (!mbref_json_accepts(buf, k)) {
            fprintf(stderr, "jansson no longer accepts a NUL after '%s'\n", values[i]);
            g_fail++;
        }
    }
    const char *d = doc_mod(MB_SCHEMA_CHAT, NULL, 0);
    size_t dl = strlen(d);
    memcpy(buf, d, dl);
    buf[dl] = '\0';
    JSONERR(buf, dl + 1);
    buf[0] = '\0';
    memcpy(buf + 1, d, dl);
    JSONERR(buf, dl + 1);
    finish();
}

static void test_json_beats_schema(void **state)
{
    (void)state;
    /* A schema rule broken early and a JSON rule broken later: the status is
     * MB_EJSON, so a validator may not stop at the first schema error. */
    static const char *const docs[] = {
        "{\"colour\":\"red\",\"content\":\"\\uD800\"}",
        "{\"colour\":\"red\",\"content\":\"x\"} x",
        "{\"message_id\":\"bad id!\",\"a\":01}",
        "{\"message_id\":1,\"content\":\"x\",\"content\":\"y\"}",
        "{\"event_data\":[],\"event_data\":{}}",
        "{\"timestamp\":\"2026-13-01T00:00:00Z\",\"a\":1e309}",
        "{\"zz\":[[[[[[[[[[[[[[1]]]]]]]]]]]]]],\"zz\":2}",
        "{\"event_type\":\"t\",\"event_data\":{\"a\":[[[[[[[[[[[[[[1]]]]]]]]]]]]]]},\"b\":"
        "\"\xc0\x80\"}",
        "{\"content\":\"\\u0007\",\"b\":\"\\x\"}",
        "[1,2,",
        "[\"\xff\"]",
        "\"\\uDC00\"",
        "1 2",
        "{\"sender_name\":\"\xf0\x9f\x98\x80\",\"x\":nul}",
        "{\"channel\":\"shout\",\"speaker_kind\":\"bot\",\"content\":\"\",}",
    };
    for (size_t i = 0; i < sizeof docs / sizeof docs[0]; i++) {
        JSONERR(docs[i], strlen(docs[i]));
        EXPECT(DEF, MB_SCHEMA_CHAT, docs[i], strlen(docs[i]), MB_EJSON, MB_SCHEMA_AUTO, NULL, NULL);
        EXPECT(DEF, MB_SCHEMA_EVENT, docs[i], strlen(docs[i]), MB_EJSON, MB_SCHEMA_AUTO, NULL,
               NULL);
    }
    /* Content too long, then a JSON error (content is the last field). */
    const char *d = chat_with("content", jrep("a", 10001));
    size_t dl = strlen(d);
    memcpy(g_doc + dl - 1, ",\"x\":}", 7);
    JSONERR(g_doc, dl + 5);
    finish();
}

/* ---- names ---- */

static void test_channel_and_kind_names(void **state)
{
    (void)state;
    static const char *const names[] = {"say",  "local",  "global", "whisper", "emote",
                                        "pose", "system", "admin",  "party"};
    for (int i = 0; i < MB__CHANNEL_COUNT; i++) {
        assert_non_null(mb_channel_name((mb_channel)i));
        assert_string_equal(mb_channel_name((mb_channel)i), names[i]);
        mb_channel ch = MB__CHANNEL_COUNT;
        assert_int_equal(mb_channel_parse(names[i], strlen(names[i]), &ch), MB_OK);
        assert_int_equal(ch, i);
    }
    assert_null(mb_channel_name(MB__CHANNEL_COUNT));
    assert_null(mb_channel_name((mb_channel)-1));
    mb_channel ch = MB_CHANNEL_SAY;
    assert_int_equal(mb_channel_parse("shout", 5, &ch), MB_EINVAL);
    assert_int_equal(mb_channel_parse("SAY", 3, &ch), MB_EINVAL);
    assert_int_equal(mb_channel_parse("say", 2, &ch), MB_EINVAL);
    assert_int_equal(mb_channel_parse("says", 4, &ch), MB_EINVAL);
    assert_int_equal(mb_channel_parse("", 0, &ch), MB_EINVAL);
    assert_int_equal(mb_channel_parse("say\0", 4, &ch), MB_EINVAL);
    assert_int_equal(mb_channel_parse("partyx", 5, &ch), MB_OK);
    assert_int_equal(ch, MB_CHANNEL_PARTY);

    assert_string_equal(mb_schema_kind_name(MB_SCHEMA_AUTO), "auto");
    assert_string_equal(mb_schema_kind_name(MB_SCHEMA_CHAT), "chat");
    assert_string_equal(mb_schema_kind_name(MB_SCHEMA_EVENT), "event");
    assert_string_equal(mb_schema_kind_name((mb_schema_kind)7), "unknown");
    mb_schema_kind k = MB_SCHEMA_AUTO;
    assert_int_equal(mb_schema_kind_parse("event", &k), MB_OK);
    assert_int_equal(k, MB_SCHEMA_EVENT);
    assert_int_equal(mb_schema_kind_parse("chat", &k), MB_OK);
    assert_int_equal(k, MB_SCHEMA_CHAT);
    assert_int_equal(mb_schema_kind_parse("auto", &k), MB_OK);
    assert_int_equal(k, MB_SCHEMA_AUTO);
    assert_int_equal(mb_schema_kind_parse("Chat", &k), MB_EINVAL);
    assert_int_equal(mb_schema_kind_parse("", &k), MB_EINVAL);
}

static void test_message_id_generate(void **state)
{
    (void)state;
    char a[MB_MESSAGE_ID_MAX], b[MB_MESSAGE_ID_MAX];
    memset(a, 'x', sizeof a);
    assert_int_equal(mb_message_id_generate(a, NULL), MB_OK);
    assert_int_equal(mb_message_id_generate(b, NULL), MB_OK);
    assert_int_equal(strlen(a), 32);
    for (size_t i = 0; i < 32; i++)
        assert_true((a[i] >= '0' && a[i] <= '9') || (a[i] >= 'a' && a[i] <= 'f'));
    assert_string_not_equal(a, b);
    /* A generated id is a valid message_id. */
    OK_AS(chat_with("message_id", jstr(a)), MB_SCHEMA_CHAT);
    finish();
}

/* ---- options and metrics ---- */

static void test_create_options(void **state)
{
    (void)state;
    mb_schema *s = NULL;
    mb_err err;
    mb_err_clear(&err);
    assert_int_equal(mb_schema_create(NULL, NULL, &err), MB_EINVAL);
    assert_int_equal(mb_schema_create(NULL, &s, NULL), MB_OK);
    assert_non_null(s);
    mb_schema_destroy(s);
    mb_schema_destroy(NULL);

    mb_schema_opts o = {0};
    o.max_bytes = MB_SCHEMA_MAX_BYTES_LIMIT + 1;
    s = NULL;
    mb_err_clear(&err);
    assert_int_equal(mb_schema_create(&o, &s, &err), MB_EINVAL);
    assert_null(s);
    assert_true(err.msg[0] != '\0');
    o.max_bytes = MB_SCHEMA_MAX_BYTES_LIMIT;
    assert_int_equal(mb_schema_create(&o, &s, NULL), MB_OK);
    /* Above the default limit, within the configured one. */
    static char big[70000];
    const char *d = doc_mod(MB_SCHEMA_CHAT, NULL, 0);
    memset(big, ' ', sizeof big);
    memcpy(big, d, strlen(d));
    assert_int_equal(mb_schema_validate(s, MB_SCHEMA_AUTO, big, sizeof big, NULL, NULL), MB_OK);
    assert_int_equal(mb_schema_validate(NULL, MB_SCHEMA_AUTO, big, sizeof big, NULL, NULL),
                     MB_ETOOBIG);
    mb_schema_destroy(s);

    o.max_bytes = 0;
    o.max_depth = MB_SCHEMA_MAX_DEPTH_LIMIT + 1;
    s = NULL;
    assert_int_equal(mb_schema_create(&o, &s, NULL), MB_EINVAL);
    assert_null(s);
    o.max_depth = MB_SCHEMA_MAX_DEPTH_LIMIT;
    assert_int_equal(mb_schema_create(&o, &s, NULL), MB_OK);
    mb_schema_destroy(s);
    /* Every depth from 1 to the ceiling is a valid configuration: schema.h
     * refuses only limits above the ceilings (a depth of 1 admits chat
     * messages and no event). */
    for (unsigned depth = 1; depth <= MB_SCHEMA_MAX_DEPTH_LIMIT; depth++) {
        o.max_depth = depth;
        s = NULL;
        mb_err_clear(&err);
        if (mb_schema_create(&o, &s, &err) != MB_OK) {
            fprintf(stderr, "mb_schema_create refuses max_depth %u: %s\n", depth, err.msg);
            g_fail++;
        }
        mb_schema_destroy(s);
    }
    /* Zero fields take the defaults. */
    o.max_depth = 0;
    assert_int_equal(mb_schema_create(&o, &s, NULL), MB_OK);
    d = event_with("event_data", nested(8, "{}"));
    assert_int_equal(mb_schema_validate(s, MB_SCHEMA_AUTO, d, strlen(d), NULL, NULL), MB_OK);
    d = event_with("event_data", nested(9, "{}"));
    assert_int_equal(mb_schema_validate(s, MB_SCHEMA_AUTO, d, strlen(d), NULL, NULL), MB_ESCHEMA);
    memset(big, ' ', sizeof big);
    d = doc_mod(MB_SCHEMA_CHAT, NULL, 0);
    memcpy(big, d, strlen(d));
    assert_int_equal(mb_schema_validate(s, MB_SCHEMA_AUTO, big, 65536, NULL, NULL), MB_OK);
    assert_int_equal(mb_schema_validate(s, MB_SCHEMA_AUTO, big, 65537, NULL, NULL), MB_ETOOBIG);
    mb_schema_destroy(s);
    finish();
}

/* Sum of the samples of `name` (with any labels) in an exposition; *nonzero
 * receives how many label sets have a non-zero value. */
static double metric_sum(const char *text, const char *name, int *nonzero)
{
    double sum = 0;
    int nz = 0;
    size_t nl = strlen(name);
    for (const char *line = text; line != NULL && *line != '\0';) {
        const char *end = strchr(line, '\n');
        if (line[0] != '#' && strncmp(line, name, nl) == 0 &&
            (line[nl] == ' ' || line[nl] == '{')) {
            const char *sp = line + nl;
            const char *last = NULL;
            for (const char *p = sp; p < (end ? end : line + strlen(line)); p++)
                if (*p == ' ')
                    last = p;
            double v = last ? strtod(last + 1, NULL) : 0;
            sum += v;
            if (v != 0)
                nz++;
        }
        line = end ? end + 1 : NULL;
    }
    if (nonzero != NULL)
        *nonzero = nz;
    return sum;
}

static void test_metrics(void **state)
{
    (void)state;
    mb_metrics *m = NULL;
    assert_int_equal(mb_metrics_create(&m, NULL), MB_OK);
    mb_schema_opts o = {0};
    o.metrics = m;
    mb_schema *s = NULL;
    assert_int_equal(mb_schema_create(&o, &s, NULL), MB_OK);
    char *text = NULL;
    size_t tl;
    assert_int_equal(mb_metrics_format(m, &text, &tl, NULL), MB_OK);
    assert_non_null(strstr(text, "mudbus_schema_validations_total"));
    assert_non_null(strstr(text, "mudbus_schema_failures_total"));
    assert_non_null(strstr(text, "mudbus_schema_validate_seconds"));
    assert_true(metric_sum(text, "mudbus_schema_validations_total", NULL) == 0);
    free(text);

    const char *ok = doc_mod(MB_SCHEMA_CHAT, NULL, 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(mb_schema_validate(s, MB_SCHEMA_AUTO, ok, strlen(ok), NULL, NULL), MB_OK);
    static char big[65537];
    memset(big, ' ', sizeof big);
    assert_int_equal(mb_schema_validate(s, MB_SCHEMA_AUTO, big, sizeof big, NULL, NULL),
                     MB_ETOOBIG);
    assert_int_equal(mb_schema_validate(s, MB_SCHEMA_AUTO, "{", 1, NULL, NULL), MB_EJSON);
    assert_int_equal(mb_schema_validate(s, MB_SCHEMA_AUTO, "{\"a\":1,\"a\":1}", 13, NULL, NULL),
                     MB_EJSON);
    const char *bad = chat_with("colour", "1");
    assert_int_equal(mb_schema_validate(s, MB_SCHEMA_AUTO, bad, strlen(bad), NULL, NULL),
                     MB_ESCHEMA);

    assert_int_equal(mb_metrics_format(m, &text, &tl, NULL), MB_OK);
    int reasons = 0;
    double total = metric_sum(text, "mudbus_schema_validations_total", NULL);
    double failures = metric_sum(text, "mudbus_schema_failures_total", &reasons);
    double timed = metric_sum(text, "mudbus_schema_validate_seconds_count", NULL);
    if (total != 7 || failures != 4 || timed != 7 || reasons < 3)
        fprintf(stderr, "metrics exposition:\n%s", text);
    assert_true(total == 7);
    assert_true(failures == 4);
    assert_true(timed == 7);
    assert_true(reasons >= 3); /* too big, malformed and schema are told apart */
    assert_non_null(strstr(text, "mudbus_schema_failures_total{reason="));
    free(text);

    /* A second validator cannot register the same metrics. */
    mb_schema *s2 = NULL;
    assert_int_equal(mb_schema_create(&o, &s2, NULL), MB_EEXIST);
    assert_null(s2);
    mb_schema_destroy(s);
    mb_metrics_destroy(m);
}

/* ---- encoder ---- */

static mb_chat_msg good_chat(void)
{
    mb_chat_msg m;
    memset(&m, 0, sizeof m);
    m.message_id = "m-0001";
    m.timestamp_ms = 1768298400123;
    m.sender_id = "player_42";
    m.sender_name = "Armitage";
    m.channel = MB_CHANNEL_LOCAL;
    m.content = "Has anyone seen the Necronomicon?";
    return m;
}

static mb_event_msg good_event(void)
{
    mb_event_msg m;
    memset(&m, 0, sizeof m);
    m.message_id = "evt-1";
    m.timestamp_ms = 1768298400000;
    m.event_type = "player_entered";
    m.event_data = "{\"hp\":10,\"tags\":[\"a\",\"b\"],\"nested\":{\"x\":null}}";
    m.event_data_len = strlen(m.event_data);
    return m;
}

static char g_out[300000];

/* Check that a string field of the parsed output equals `want` (absent or
 * null when want is NULL). */
static void field_is(int line, json_t *root, const char *key, const char *want)
{
    json_t *v = json_object_get(root, key);
    if (want == NULL) {
        if (v != NULL && !json_is_null(v)) {
            fprintf(stderr, "line %d: %s should be absent\n", line, key);
            g_fail++;
        }
        return;
    }
    if (!json_is_string(v) || json_string_length(v) != strlen(want) ||
        memcmp(json_string_value(v), want, strlen(want)) != 0) {
        fprintf(stderr, "line %d: %s is not '%s'\n", line, key, want);
        g_fail++;
    }
}

/* Validate encoder output with the library and the oracle and parse it. */
static json_t *check_output(int line, lim l, const char *out, size_t len, mb_schema_kind kind)
{
    if (strlen(out) != len) {
        fprintf(stderr, "line %d: output length %zu, strlen %zu\n", line, len, strlen(out));
        g_fail++;
    }
    for (size_t i = 0; i < len; i++) {
        if ((unsigned char)out[i] < 0x20 && out[i] != '\n' && out[i] != '\r' && out[i] != '\t') {
            fprintf(stderr, "line %d: raw control byte in output\n", line);
            g_fail++;
            break;
        }
    }
    expect_at(line, l, MB_SCHEMA_AUTO, out, len, MB_OK, kind, NULL, NULL);
    expect_at(line, l, kind, out, len, MB_OK, kind, NULL, NULL);
    json_error_t jerr;
    json_t *root = json_loadb(out, len, JSON_REJECT_DUPLICATES, &jerr);
    assert_non_null(root);
    return root;
}

static void check_chat_fields(int line, json_t *root, const mb_chat_msg *m)
{
    if (m->message_id != NULL)
        field_is(line, root, "message_id", m->message_id);
    json_t *ts = json_object_get(root, "timestamp");
    int64_t ms = -1;
    if (!json_is_string(ts) ||
        mb_timestamp_parse(json_string_value(ts), json_string_length(ts), &ms, NULL) != MB_OK ||
        (m->timestamp_ms != 0 && ms != m->timestamp_ms)) {
        fprintf(stderr, "line %d: timestamp %lld, expected %lld\n", line, (long long)ms,
                (long long)m->timestamp_ms);
        g_fail++;
    }
    field_is(line, root, "sender_id", m->sender_id);
    field_is(line, root, "sender_name", m->sender_name);
    field_is(line, root, "channel", mb_channel_name(m->channel));
    field_is(line, root, "content", m->content);
    field_is(line, root, "room_id", m->room_id);
    field_is(line, root, "subzone", m->subzone);
    field_is(line, root, "target_id", m->target_id);
    field_is(line, root, "party_id", m->party_id);
    field_is(line, root, "target_name", m->target_name);
    static const char *const sk[] = {NULL, "player", "npc", "system"};
    field_is(line, root, "speaker_kind", sk[m->speaker_kind]);
}

#define CHAT_OK(l, m)                                                                              \
    do {                                                                                           \
        size_t len_ = 0;                                                                           \
        mb_err err_;                                                                               \
        mb_err_clear(&err_);                                                                       \
        mb_status st_ = mb_chat_encode((l).s, (m), g_out, sizeof g_out, &len_, &err_);             \
        if (st_ != MB_OK) {                                                                        \
            fprintf(stderr, "line %d: mb_chat_encode = %s (%s)\n", __LINE__, mb_status_name(st_),  \
                    err_.msg);                                                                     \
            g_fail++;                                                                              \
        } else {                                                                                   \
            json_t *root_ = check_output(__LINE__, (l), g_out, len_, MB_SCHEMA_CHAT);              \
            check_chat_fields(__LINE__, root_, (m));                                               \
            json_decref(root_);                                                                    \
        }                                                                                          \
    } while (0)

static void enc_refused(int line, mb_status st, const mb_err *err, mb_status want,
                        const char *field)
{
    if (st != want || (field != NULL && strstr(err->msg, field) == NULL)) {
        fprintf(stderr, "line %d: encode = %s (%s), expected %s naming '%s'\n", line,
                mb_status_name(st), err->msg, mb_status_name(want), field ? field : "");
        g_fail++;
    }
}

#define CHAT_BAD(m, want, field)                                                                   \
    do {                                                                                           \
        size_t len_ = 0;                                                                           \
        mb_err err_;                                                                               \
        mb_err_clear(&err_);                                                                       \
        mb_status st_ = mb_chat_encode(NULL, (m), g_out, sizeof g_out, &len_, &err_);              \
        enc_refused(__LINE__, st_, &err_, want, field);                                            \
    } while (0)

#define EVENT_BAD(l, m, want, field)                                                               \
    do {                                                                                           \
        size_t len_ = 0;                                                                           \
        mb_err err_;                                                                               \
        mb_err_clear(&err_);                                                                       \
        mb_status st_ = mb_event_encode((l).s, (m), g_out, sizeof g_out, &len_, &err_);            \
        enc_refused(__LINE__, st_, &err_, want, field);                                            \
    } while (0)

static void test_chat_encode(void **state)
{
    (void)state;
    mb_chat_msg m = good_chat();
    CHAT_OK(DEF, &m);
    m.room_id = "earth_arkhamcity_northside_derby_high";
    m.subzone = "northside";
    m.target_id = "t-9";
    m.party_id = "party_1";
    m.target_name = "Wilbur Whateley";
    m.speaker_kind = MB_SPEAKER_NPC;
    m.channel = MB_CHANNEL_WHISPER;
    CHAT_OK(DEF, &m);
    for (int ch = 0; ch < MB__CHANNEL_COUNT; ch++) {
        m.channel = (mb_channel)ch;
        CHAT_OK(DEF, &m);
    }
    for (int sk = MB_SPEAKER_UNSET; sk <= MB_SPEAKER_SYSTEM; sk++) {
        m.speaker_kind = (mb_speaker_kind)sk;
        CHAT_OK(DEF, &m);
    }
    /* Escaping. */
    m = good_chat();
    m.content = "He said \"hi\" \\ back\nand\ttab / caf\xc3\xa9 \xf0\x9f\x98\x80 \xe2\x80\xa8 "
                "\xc2\xa0 ~ </script>";
    m.sender_name = "\"Quoted\" \\Name/ \xc3\xa9";
    m.target_name = "\xf4\x8f\xbf\xbf";
    CHAT_OK(DEF, &m);
    /* Limits exactly reached. */
    static char content[40001], name[257], id[129], mid[65];
    memset(content, 'a', 10000);
    content[10000] = '\0';
    memset(id, 'i', 128);
    id[128] = '\0';
    memset(mid, 'm', 64);
    mid[64] = '\0';
    for (int i = 0; i < 64; i++)
        memcpy(name + 4 * i, "\xf0\x9f\x98\x80", 4);
    name[256] = '\0';
    m = good_chat();
    m.content = content;
    m.sender_name = name;
    m.target_name = name;
    m.sender_id = id;
    m.room_id = id;
    m.message_id = mid;
    CHAT_OK(DEF, &m);
    /* 10000 characters of \" take 20000 bytes escaped. */
    memset(content, '"', 10000);
    CHAT_OK(DEF, &m);
    for (int i = 0; i < 10000; i++)
        memcpy(content + 4 * i, "\xf0\x9f\x98\x80", 4);
    content[40000] = '\0';
    CHAT_OK(DEF, &m);
    finish();
}

/* The encoder's fast paths take strings in pieces of 16, 8 and 4 bytes (ids
 * and tokens checked in one vector, names and texts scanned for the bytes
 * that need escaping): every length from 1 to 48, with a byte that changes
 * the outcome at every position, must give what the byte-at-a-time path
 * gives. */
static void test_chat_encode_every_length_and_position(void **state)
{
    (void)state;
    static const char *const special[] = {"\"", "\\", "\n", "\x7f", "\xc3\xa9", "\x01"};
    static const char bad_token[] = {'.', ' ', '*', '>',    '/',    ':',    '@',
                                     '[', '`', '{', '\x7f', '\x80', '\xff', '\t'};
    char tok[64], text[64];
    for (size_t n = 1; n <= 48; n++) {
        for (size_t i = 0; i < n; i++)
            tok[i] = "abcXYZ019_-"[i % 11];
        tok[n] = '\0';
        mb_chat_msg m = good_chat();
        m.sender_id = tok;
        CHAT_OK(DEF, &m);
        for (size_t at = 0; at < n; at++) {
            for (size_t b = 0; b < sizeof bad_token; b++) {
                char saved = tok[at];
                tok[at] = bad_token[b];
                m = good_chat();
                m.sender_id = tok;
                CHAT_BAD(&m, MB_ESCHEMA, "sender_id");
                m = good_chat();
                m.room_id = tok;
                CHAT_BAD(&m, MB_ESCHEMA, "room_id");
                tok[at] = saved;
            }
        }
        for (size_t at = 0; at < n; at++) {
            for (size_t k = 0; k < sizeof special / sizeof special[0]; k++) {
                size_t sl = strlen(special[k]);
                if (at + sl > n)
                    continue;
                for (size_t i = 0; i < n; i++)
                    text[i] = "Hello, world! "[i % 14];
                memcpy(text + at, special[k], sl);
                text[n] = '\0';
                /* Texts take \n and \t but no other control character
                 * (DEL is one); names take none. */
                m = good_chat();
                m.content = text;
                if (k == 3 || k == 5)
                    CHAT_BAD(&m, MB_ESCHEMA, "content");
                else
                    CHAT_OK(DEF, &m);
                m = good_chat();
                m.sender_name = text;
                if (k <= 1 || k == 4)
                    CHAT_OK(DEF, &m);
                else
                    CHAT_BAD(&m, MB_ESCHEMA, "sender_name");
            }
        }
    }
    finish();
}

static void test_chat_encode_invalid(void **state)
{
    (void)state;
    static char c10001[10002], n65[66], t129[130], m65[66];
    memset(c10001, 'a', 10001);
    memset(n65, 'n', 65);
    memset(t129, 't', 129);
    memset(m65, 'm', 65);
    mb_chat_msg m;
#define CHAT_FIELD_BAD(assign, field)                                                              \
    do {                                                                                           \
        m = good_chat();                                                                           \
        assign;                                                                                    \
        CHAT_BAD(&m, MB_ESCHEMA, field);                                                           \
    } while (0)
    CHAT_FIELD_BAD(m.message_id = "", "message_id");
    CHAT_FIELD_BAD(m.message_id = "bad id", "message_id");
    CHAT_FIELD_BAD(m.message_id = m65, "message_id");
    CHAT_FIELD_BAD(m.sender_id = NULL, "sender_id");
    CHAT_FIELD_BAD(m.sender_id = "", "sender_id");
    CHAT_FIELD_BAD(m.sender_id = "a.b", "sender_id");
    CHAT_FIELD_BAD(m.sender_id = t129, "sender_id");
    CHAT_FIELD_BAD(m.sender_name = NULL, "sender_name");
    CHAT_FIELD_BAD(m.sender_name = "", "sender_name");
    CHAT_FIELD_BAD(m.sender_name = n65, "sender_name");
    CHAT_FIELD_BAD(m.sender_name = "a\x07", "sender_name");
    CHAT_FIELD_BAD(m.sender_name = "a\nb", "sender_name");
    CHAT_FIELD_BAD(m.sender_name = "\xc3", "sender_name");
    CHAT_FIELD_BAD(m.channel = MB__CHANNEL_COUNT, "channel");
    CHAT_FIELD_BAD(m.channel = (mb_channel)-1, "channel");
    CHAT_FIELD_BAD(m.content = NULL, "content");
    CHAT_FIELD_BAD(m.content = "", "content");
    CHAT_FIELD_BAD(m.content = c10001, "content");
    CHAT_FIELD_BAD(m.content = "a\rb", "content");
    CHAT_FIELD_BAD(m.content = "bell\x07", "content");
    CHAT_FIELD_BAD(m.content = "nel\xc2\x85", "content");
    CHAT_FIELD_BAD(m.content = "del\x7f", "content");
    CHAT_FIELD_BAD(m.content = "\x1b[31mred", "content");
    CHAT_FIELD_BAD(m.content = "bad \xc3 utf8", "content");
    CHAT_FIELD_BAD(m.content = "overlong \xc0\x80", "content");
    CHAT_FIELD_BAD(m.content = "overlong \xe0\x80\x80", "content");
    CHAT_FIELD_BAD(m.content = "surrogate \xed\xa0\x80", "content");
    CHAT_FIELD_BAD(m.content = "too high \xf4\x90\x80\x80", "content");
    CHAT_FIELD_BAD(m.content = "lone \x80", "content");
    CHAT_FIELD_BAD(m.content = "cut \xf0\x9f\x98", "content");
    CHAT_FIELD_BAD(m.content = "\xff", "content");
    CHAT_FIELD_BAD(m.room_id = "", "room_id");
    CHAT_FIELD_BAD(m.room_id = "a.b", "room_id");
    CHAT_FIELD_BAD(m.subzone = "north side", "subzone");
    CHAT_FIELD_BAD(m.target_id = t129, "target_id");
    CHAT_FIELD_BAD(m.party_id = "p\xc3\xa9", "party_id");
    CHAT_FIELD_BAD(m.target_name = n65, "target_name");
    CHAT_FIELD_BAD(m.target_name = "", "target_name");
    CHAT_FIELD_BAD(m.target_name = "\t", "target_name");
    CHAT_FIELD_BAD(m.speaker_kind = (mb_speaker_kind)4, "speaker_kind");
#undef CHAT_FIELD_BAD
    size_t len = 0;
    assert_int_not_equal(mb_chat_encode(NULL, NULL, g_out, sizeof g_out, &len, NULL), MB_OK);
    finish();
}

static void test_event_encode(void **state)
{
    (void)state;
    mb_event_msg m = good_event();
    size_t len = 0;
    mb_err err;
    mb_err_clear(&err);
    assert_int_equal(mb_event_encode(NULL, &m, g_out, sizeof g_out, &len, &err), MB_OK);
    json_t *root = check_output(__LINE__, DEF, g_out, len, MB_SCHEMA_EVENT);
    field_is(__LINE__, root, "message_id", "evt-1");
    field_is(__LINE__, root, "event_type", "player_entered");
    field_is(__LINE__, root, "room_id", NULL);
    json_t *want = json_loads(m.event_data, 0, NULL);
    assert_true(json_equal(json_object_get(root, "event_data"), want));
    json_decref(want);
    json_decref(root);

    /* All optional fields, pretty-printed event_data with escapes. */
    m.room_id = "room_1";
    m.player_id = "p-2";
    m.sender_id = "s_3";
    m.sender_name = "The \"Game\" \xc3\xa9";
    m.event_data =
        " {\n  \"text\" : \"caf\\u00e9 \\ud83d\\ude00 \\\"q\\\"\",\n  \"n\" : [ 1 , -2.5e3 , "
        "9223372036854775807 ] ,\n  \"\\u0061b\" : { } }\n";
    m.event_data_len = strlen(m.event_data);
    assert_int_equal(mb_event_encode(NULL, &m, g_out, sizeof g_out, &len, NULL), MB_OK);
    root = check_output(__LINE__, DEF, g_out, len, MB_SCHEMA_EVENT);
    field_is(__LINE__, root, "room_id", "room_1");
    field_is(__LINE__, root, "player_id", "p-2");
    field_is(__LINE__, root, "sender_id", "s_3");
    field_is(__LINE__, root, "sender_name", m.sender_name);
    want = json_loadb(m.event_data, m.event_data_len, 0, NULL);
    assert_non_null(want);
    assert_true(json_equal(json_object_get(root, "event_data"), want));
    json_decref(want);
    json_decref(root);

    /* event_data_len bounds event_data: trailing bytes are not read. */
    m = good_event();
    m.event_data = "{\"a\":1}GARBAGE";
    m.event_data_len = 7;
    assert_int_equal(mb_event_encode(NULL, &m, g_out, sizeof g_out, &len, NULL), MB_OK);
    root = check_output(__LINE__, DEF, g_out, len, MB_SCHEMA_EVENT);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(root, "event_data"), "a")),
                     1);
    json_decref(root);

    /* NULL event_data is {}. */
    m = good_event();
    m.event_data = NULL;
    m.event_data_len = 0;
    assert_int_equal(mb_event_encode(NULL, &m, g_out, sizeof g_out, &len, NULL), MB_OK);
    root = check_output(__LINE__, DEF, g_out, len, MB_SCHEMA_EVENT);
    json_t *ed = json_object_get(root, "event_data");
    assert_true(json_is_object(ed) && json_object_size(ed) == 0);
    json_decref(root);

    /* Nesting exactly at the limit, default and configured. */
    m = good_event();
    m.event_data = nested(8, "{}");
    m.event_data_len = strlen(m.event_data);
    assert_int_equal(mb_event_encode(NULL, &m, g_out, sizeof g_out, &len, NULL), MB_OK);
    json_decref(check_output(__LINE__, DEF, g_out, len, MB_SCHEMA_EVENT));
    m.event_data = "{\"a\":{}}";
    m.event_data_len = strlen(m.event_data);
    assert_int_equal(mb_event_encode(DEPTH3.s, &m, g_out, sizeof g_out, &len, NULL), MB_OK);
    json_decref(check_output(__LINE__, DEPTH3, g_out, len, MB_SCHEMA_EVENT));
    finish();
}

static void test_event_encode_invalid(void **state)
{
    (void)state;
    static char t65[66];
    memset(t65, 't', 65);
    mb_event_msg m;
#define EV_BAD(l, assign, want, field)                                                             \
    do {                                                                                           \
        m = good_event();                                                                          \
        assign;                                                                                    \
        EVENT_BAD(l, &m, want, field);                                                             \
    } while (0)
#define ED(s) (m.event_data = (s), m.event_data_len = strlen(m.event_data))
    EV_BAD(DEF, m.message_id = "", MB_ESCHEMA, "message_id");
    EV_BAD(DEF, m.message_id = "a b", MB_ESCHEMA, "message_id");
    EV_BAD(DEF, m.event_type = NULL, MB_ESCHEMA, "event_type");
    EV_BAD(DEF, m.event_type = "", MB_ESCHEMA, "event_type");
    EV_BAD(DEF, m.event_type = t65, MB_ESCHEMA, "event_type");
    EV_BAD(DEF, m.event_type = "player entered", MB_ESCHEMA, "event_type");
    EV_BAD(DEF, m.room_id = "a.b", MB_ESCHEMA, "room_id");
    EV_BAD(DEF, m.player_id = "", MB_ESCHEMA, "player_id");
    EV_BAD(DEF, m.sender_id = "x/y", MB_ESCHEMA, "sender_id");
    EV_BAD(DEF, m.sender_name = "", MB_ESCHEMA, "sender_name");
    EV_BAD(DEF, m.sender_name = "bell\x07", MB_ESCHEMA, "sender_name");
    EV_BAD(DEF, m.sender_name = "\xed\xa0\x80", MB_ESCHEMA, "sender_name");
    EV_BAD(DEF, ED("[1,2]"), MB_ESCHEMA, "event_data");
    EV_BAD(DEF, ED("\"{}\""), MB_ESCHEMA, "event_data");
    EV_BAD(DEF, ED("null"), MB_ESCHEMA, "event_data");
    EV_BAD(DEF, ED("42"), MB_ESCHEMA, "event_data");
    EV_BAD(DEF, ED(nested(9, "{}")), MB_ESCHEMA, "event_data");
    EV_BAD(DEPTH3, ED("{\"a\":{\"b\":{}}}"), MB_ESCHEMA, "event_data");
    EV_BAD(DEF, ED("{"), MB_EJSON, NULL);
    /* Not JSON at all, though not starting with '{' either: MB_EJSON, not
     * "expected object" (found by fuzz_encode). */
    EV_BAD(DEF, ED("nope"), MB_EJSON, NULL);
    EV_BAD(DEF, ED("[1,"), MB_EJSON, NULL);
    EV_BAD(DEF, ED("\"abc"), MB_EJSON, NULL);
    EV_BAD(DEF, ED("e Gamn\":-1.5e3}"), MB_EJSON, NULL);
    EV_BAD(DEF, ED("[1]]"), MB_EJSON, NULL);
    EV_BAD(DEF, ED("{\"a\":}"), MB_EJSON, NULL);
    EV_BAD(DEF, ED("{}x"), MB_EJSON, NULL);
    EV_BAD(DEF, ED("{} {}"), MB_EJSON, NULL);
    EV_BAD(DEF, ED("   "), MB_EJSON, NULL);
    EV_BAD(DEF, ED("{\"a\":1,\"a\":2}"), MB_EJSON, NULL);
    EV_BAD(DEF, ED("{\"a\":1,\"\\u0061\":2}"), MB_EJSON, NULL);
    EV_BAD(DEF, ED("{\"a\":\"\\uD800\"}"), MB_EJSON, NULL);
    EV_BAD(DEF, ED("{\"a\":\"\xc0\x80\"}"), MB_EJSON, NULL);
    EV_BAD(DEF, ED("{\"a\":01}"), MB_EJSON, NULL);
    EV_BAD(DEF, ED("{\"a\":1e309}"), MB_EJSON, NULL);
    EV_BAD(DEF, ED("{\"a\":9223372036854775808}"), MB_EJSON, NULL);
    EV_BAD(DEF, (m.event_data = "{\"a\":1\0}", m.event_data_len = 8), MB_EJSON, NULL);
    EV_BAD(DEF, (m.event_data = "{}\0", m.event_data_len = 3), MB_EJSON, NULL);
    /* 2048 levels are valid JSON on their own (a schema error once inside
     * the message); 2049 are not JSON. */
    EV_BAD(BIG, ED(nested(2047, "{}")), MB_ESCHEMA, "event_data");
    EV_BAD(BIG, ED(nested(2048, "{}")), MB_EJSON, NULL);
#undef ED
#undef EV_BAD
    size_t len = 0;
    assert_int_not_equal(mb_event_encode(NULL, NULL, g_out, sizeof g_out, &len, NULL), MB_OK);
    finish();
}

static void test_encode_space_and_size(void **state)
{
    (void)state;
    mb_chat_msg m = good_chat();
    char small[16];
    size_t need = 0;
    assert_int_equal(mb_chat_encode(NULL, &m, small, sizeof small, &need, NULL), MB_ENOSPC);
    assert_true(need > sizeof small);
    char *exact = malloc(need + 1);
    assert_non_null(exact);
    size_t len = 0;
    assert_int_equal(mb_chat_encode(NULL, &m, exact, need, &len, NULL), MB_ENOSPC);
    assert_int_equal(len, need);
    len = 0;
    assert_int_equal(mb_chat_encode(NULL, &m, exact, need + 1, &len, NULL), MB_OK);
    assert_int_equal(len, need);
    assert_int_equal(exact[need], '\0');
    json_decref(check_output(__LINE__, DEF, exact, len, MB_SCHEMA_CHAT));
    free(exact);

    mb_event_msg e = good_event();
    assert_int_equal(mb_event_encode(NULL, &e, small, sizeof small, &need, NULL), MB_ENOSPC);
    exact = malloc(need + 1);
    assert_non_null(exact);
    assert_int_equal(mb_event_encode(NULL, &e, exact, need + 1, &len, NULL), MB_OK);
    assert_int_equal(len, need);
    json_decref(check_output(__LINE__, DEF, exact, len, MB_SCHEMA_EVENT));
    free(exact);

    /* The encoding must fit max_bytes of the validator. */
    static char content[400];
    memset(content, 'a', sizeof content - 1);
    m.content = content;
    mb_err err;
    mb_err_clear(&err);
    assert_int_equal(mb_chat_encode(SMALL300.s, &m, g_out, sizeof g_out, &len, &err), MB_ETOOBIG);
    content[50] = '\0';
    assert_int_equal(mb_chat_encode(SMALL300.s, &m, g_out, sizeof g_out, &len, NULL), MB_OK);
    json_decref(check_output(__LINE__, SMALL300, g_out, len, MB_SCHEMA_CHAT));
    /* The largest content that fits 300 bytes fits exactly. */
    size_t base = len - 50;
    memset(content, 'a', sizeof content - 1);
    content[300 - base] = '\0';
    assert_int_equal(mb_chat_encode(SMALL300.s, &m, g_out, sizeof g_out, &len, NULL), MB_OK);
    assert_int_equal(len, 300);
    content[300 - base] = 'a';
    content[301 - base] = '\0';
    assert_int_equal(mb_chat_encode(SMALL300.s, &m, g_out, sizeof g_out, &len, NULL), MB_ETOOBIG);
    finish();
}

static void test_encode_defaults(void **state)
{
    (void)state;
    mb_chat_msg m = good_chat();
    m.message_id = NULL;
    m.timestamp_ms = 0;
    size_t len = 0;
    int64_t before = (int64_t)time(NULL) * 1000;
    assert_int_equal(mb_chat_encode(NULL, &m, g_out, sizeof g_out, &len, NULL), MB_OK);
    int64_t after = (int64_t)time(NULL) * 1000 + 1000;
    json_t *root = check_output(__LINE__, DEF, g_out, len, MB_SCHEMA_CHAT);
    json_t *id = json_object_get(root, "message_id");
    assert_true(json_is_string(id));
    assert_int_equal(json_string_length(id), 32);
    for (size_t i = 0; i < 32; i++) {
        char c = json_string_value(id)[i];
        assert_true((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'));
    }
    char first[33];
    memcpy(first, json_string_value(id), 33);
    json_t *ts = json_object_get(root, "timestamp");
    int64_t ms = 0;
    assert_int_equal(mb_timestamp_parse(json_string_value(ts), json_string_length(ts), &ms, NULL),
                     MB_OK);
    assert_true(ms >= before && ms <= after);
    json_decref(root);
    /* Another message gets another id. */
    assert_int_equal(mb_chat_encode(NULL, &m, g_out, sizeof g_out, &len, NULL), MB_OK);
    root = check_output(__LINE__, DEF, g_out, len, MB_SCHEMA_CHAT);
    assert_string_not_equal(json_string_value(json_object_get(root, "message_id")), first);
    json_decref(root);

    mb_event_msg e = good_event();
    e.message_id = NULL;
    e.timestamp_ms = 0;
    assert_int_equal(mb_event_encode(NULL, &e, g_out, sizeof g_out, &len, NULL), MB_OK);
    root = check_output(__LINE__, DEF, g_out, len, MB_SCHEMA_EVENT);
    assert_int_equal(json_string_length(json_object_get(root, "message_id")), 32);
    ts = json_object_get(root, "timestamp");
    assert_int_equal(mb_timestamp_parse(json_string_value(ts), json_string_length(ts), &ms, NULL),
                     MB_OK);
    assert_true(ms >= before && ms <= (int64_t)time(NULL) * 1000 + 1000);
    json_decref(root);
    finish();
}

/* ---- setup ---- */

static mb_schema *make(size_t max_bytes, unsigned max_depth, lim *l)
{
    mb_schema_opts o = {0};
    o.max_bytes = max_bytes;
    o.max_depth = max_depth;
    mb_schema *s = NULL;
    if (mb_schema_create(&o, &s, NULL) != MB_OK)
        return NULL;
    l->s = s;
    l->max_bytes = max_bytes;
    l->max_depth = max_depth;
    return s;
}

static int group_setup(void **state)
{
    (void)state;
    if (make(1u << 20, 0, &BIG) == NULL || make(0, 3, &DEPTH3) == NULL ||
        make(0, 64, &DEPTH64) == NULL || make(300, 0, &SMALL300) == NULL)
        return -1;
    /* max_depth 1 is within the documented limits; test_create_options
     * reports it if creation fails, and test_depth skips its cases. */
    make(0, 1, &DEPTH1);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    mb_schema_destroy((mb_schema *)BIG.s);
    mb_schema_destroy((mb_schema *)DEPTH3.s);
    mb_schema_destroy((mb_schema *)DEPTH1.s);
    mb_schema_destroy((mb_schema *)DEPTH64.s);
    mb_schema_destroy((mb_schema *)SMALL300.s);
    return 0;
}

#define T(f) cmocka_unit_test_setup(f, reset)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_valid_messages),
        T(test_auto_detection),
        T(test_id_and_token_rules),
        T(test_name_rules),
        T(test_text_rules),
        T(test_enum_rules),
        T(test_types),
        T(test_unknown_fields),
        T(test_not_object),
        T(test_timestamp_rules),
        T(test_timestamp_parse),
        T(test_timestamp_format),
        T(test_depth),
        T(test_size),
        T(test_truncated),
        T(test_malformed_strings),
        T(test_malformed_structure),
        T(test_duplicate_keys),
        T(test_numbers),
        T(test_raw_nul),
        T(test_json_beats_schema),
        T(test_channel_and_kind_names),
        T(test_message_id_generate),
        T(test_create_options),
        T(test_metrics),
        T(test_chat_encode),
        T(test_chat_encode_every_length_and_position),
        T(test_chat_encode_invalid),
        T(test_event_encode),
        T(test_event_encode_invalid),
        T(test_encode_space_and_size),
        T(test_encode_defaults),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
