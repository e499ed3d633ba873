/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for the gateway's command parser (src/gateway/protocol.c): the
 * happy path of every command, every field missing, of the wrong type, out of
 * range or unknown to the command, ids echoed on errors, duplicate keys,
 * invalid UTF-8 (overlongs, surrogates, values above U+10FFFF, truncated
 * sequences), NUL bytes raw and escaped, deep nesting, the frame size limit,
 * truncated and non-object JSON, and content lengths counted in code points.
 * Every refusal must carry a one-line message of valid UTF-8 without control
 * characters that fits GW_ERR_MSG_MAX.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "protocol.h"

/* A gw_cmd is over 16 KiB; one static instance serves every test. */
static gw_cmd cmd;
static char msg[GW_ERR_MSG_MAX];

/* ---- helpers ---- */

static void check_msg_shape(const char *m)
{
    size_t n = strnlen(m, GW_ERR_MSG_MAX);
    assert_true(n < GW_ERR_MSG_MAX);
    assert_true(gw_utf8_valid(m, n));
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)m[i];
        if (c < 0x20 || c == 0x7F)
            fail_msg("control byte 0x%02X in message '%s'", c, m);
    }
}

static gw_err_code parse_n(const char *buf, size_t len)
{
    memset(msg, 'Z', sizeof msg);
    gw_err_code rc = gw_cmd_parse(buf, len, &cmd, msg);
    check_msg_shape(msg);
    if (rc == GW_ERR_NONE)
        assert_string_equal(msg, "");
    else if (msg[0] == '\0')
        fail_msg("refusal %s without a message", gw_err_code_name(rc));
    return rc;
}

static gw_err_code parse(const char *json)
{
    return parse_n(json, strlen(json));
}

static void expect_ok(const char *json)
{
    gw_err_code rc = parse(json);
    if (rc != GW_ERR_NONE)
        fail_msg("%s: refused with %s: %s", json, gw_err_code_name(rc), msg);
}

static void expect_err_n(const char *buf, size_t len, gw_err_code code, const char *part)
{
    gw_err_code rc = parse_n(buf, len);
    if (rc != code)
        fail_msg("%.200s: got %s (%s), want %s", buf, gw_err_code_name(rc), msg,
                 gw_err_code_name(code));
    if (part != NULL && strstr(msg, part) == NULL)
        fail_msg("%.200s: message '%s' does not contain '%s'", buf, msg, part);
}

static void expect_err(const char *json, gw_err_code code, const char *part)
{
    expect_err_n(json, strlen(json), code, part);
}

/* Exactly the message. */
static void expect_msg(const char *json, gw_err_code code, const char *want)
{
    expect_err(json, code, NULL);
    assert_string_equal(msg, want);
}

static void assert_in_store(const char *p)
{
    assert_true(p >= cmd.store && p < cmd.store + sizeof cmd.store);
}

/* The other optional fields are absent. */
static void assert_only(int room, int content, int target, int channel, int reason, int minutes)
{
    if (!room)
        assert_null(cmd.room_id);
    if (!content) {
        assert_null(cmd.content);
        assert_int_equal(cmd.content_len, 0);
        assert_int_equal(cmd.content_chars, 0);
    }
    if (!target)
        assert_null(cmd.target);
    if (!channel)
        assert_null(cmd.channel);
    if (!reason)
        assert_null(cmd.reason);
    if (!minutes)
        assert_int_equal(cmd.minutes, 0);
}

static char *repeat(const char *unit, size_t times)
{
    size_t u = strlen(unit);
    char *s = malloc(u * times + 1);
    assert_non_null(s);
    for (size_t i = 0; i < times; i++)
        memcpy(s + i * u, unit, u);
    s[u * times] = '\0';
    return s;
}

static char *frame(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;

/* A malloc'd string from a format. */
static char *frame(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    assert_true(n >= 0);
    s = malloc((size_t)n + 1);
    assert_non_null(s);
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return s;
}

/* ---- names ---- */

static void test_names(void **state)
{
    (void)state;
    static const char *const want[] = {
        "join",           "say",         "emote",         "pose",  "local",  "global",
        "whisper",        "party",       "system",        "mute",  "unmute", "mute_channel",
        "unmute_channel", "mute_global", "unmute_global", "mutes", "ping"};
    assert_int_equal(sizeof want / sizeof want[0], GW_CMD__COUNT);
    for (unsigned t = 0; t < GW_CMD__COUNT; t++)
        assert_string_equal(gw_cmd_type_name((gw_cmd_type)t), want[t]);
    assert_string_equal(gw_cmd_type_name(GW_CMD__COUNT), "?");
    assert_string_equal(gw_cmd_type_name((gw_cmd_type)-1), "?");

    assert_string_equal(gw_err_code_name(GW_ERR_NONE), "none");
    assert_string_equal(gw_err_code_name(GW_ERR_BAD_REQUEST), "bad_request");
    assert_string_equal(gw_err_code_name(GW_ERR_INVALID_ROOM), "invalid_room");
    assert_string_equal(gw_err_code_name(GW_ERR_INVALID_TARGET), "invalid_target");
    assert_string_equal(gw_err_code_name(GW_ERR_TOO_LONG), "too_long");
    assert_string_equal(gw_err_code_name(GW_ERR_RATE_LIMITED), "rate_limited");
    assert_string_equal(gw_err_code_name(GW_ERR_MUTED), "muted");
    assert_string_equal(gw_err_code_name(GW_ERR_FORBIDDEN), "forbidden");
    assert_string_equal(gw_err_code_name(GW_ERR_UNAVAILABLE), "unavailable");
    assert_string_equal(gw_err_code_name(GW_ERR_INTERNAL), "internal");
    assert_string_equal(gw_err_code_name(GW_ERR__COUNT), "?");
    assert_string_equal(gw_err_code_name((gw_err_code)-1), "?");
}

/* ---- happy paths ---- */

static void test_join(void **state)
{
    (void)state;
    expect_ok("{\"type\":\"join\",\"room_id\":\"earth_arkham-01\"}");
    assert_int_equal(cmd.type, GW_CMD_JOIN);
    assert_string_equal(cmd.room_id, "earth_arkham-01");
    assert_in_store(cmd.room_id);
    assert_null(cmd.id);
    assert_only(1, 0, 0, 0, 0, 0);
}

static void test_content_commands(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        gw_cmd_type type;
    } cs[] = {{"say", GW_CMD_SAY},      {"emote", GW_CMD_EMOTE},   {"pose", GW_CMD_POSE},
              {"local", GW_CMD_LOCAL},  {"global", GW_CMD_GLOBAL}, {"party", GW_CMD_PARTY},
              {"system", GW_CMD_SYSTEM}};
    for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) {
        char *f = frame("{\"id\":\"c-%zu\",\"type\":\"%s\",\"content\":\"h\\u00e9llo \\\"w\\\"\"}",
                        i, cs[i].name);
        expect_ok(f);
        assert_int_equal(cmd.type, cs[i].type);
        assert_string_equal(cmd.content, "h\xc3\xa9llo \"w\"");
        assert_int_equal(cmd.content_len, 10);
        assert_int_equal(cmd.content_chars, 9);
        assert_in_store(cmd.content);
        char id[16];
        snprintf(id, sizeof id, "c-%zu", i);
        assert_string_equal(cmd.id, id);
        assert_in_store(cmd.id);
        assert_only(0, 1, 0, 0, 0, 0);
        free(f);
    }
}

static void test_whisper_and_system(void **state)
{
    (void)state;
    expect_ok("{\"type\":\"whisper\",\"target\":\"Player_42\",\"content\":\"psst\"}");
    assert_int_equal(cmd.type, GW_CMD_WHISPER);
    assert_string_equal(cmd.target, "Player_42");
    assert_string_equal(cmd.content, "psst");
    assert_only(0, 1, 1, 0, 0, 0);

    /* Field order does not matter. */
    expect_ok("{\"content\":\"psst\",\"target\":\"p\",\"type\":\"whisper\"}");
    assert_string_equal(cmd.target, "p");

    expect_ok("{\"type\":\"system\",\"content\":\"reboot in 5\"}");
    assert_int_equal(cmd.type, GW_CMD_SYSTEM);
    assert_null(cmd.target);
    expect_ok("{\"type\":\"system\",\"content\":\"you\",\"target\":\"p1\"}");
    assert_string_equal(cmd.target, "p1");
    assert_only(0, 1, 1, 0, 0, 0);
}

static void test_mutes_commands(void **state)
{
    (void)state;
    expect_ok("{\"type\":\"mute\",\"target\":\"troll\"}");
    assert_int_equal(cmd.type, GW_CMD_MUTE);
    assert_string_equal(cmd.target, "troll");
    assert_only(0, 0, 1, 0, 0, 0);
    expect_ok("{\"type\":\"mute\",\"target\":\"troll\",\"minutes\":30}");
    assert_int_equal(cmd.minutes, 30);

    expect_ok("{\"type\":\"unmute\",\"target\":\"troll\"}");
    assert_int_equal(cmd.type, GW_CMD_UNMUTE);
    assert_only(0, 0, 1, 0, 0, 0);

    static const char *const chans[] = {"say",   "local", "global", "whisper",
                                        "emote", "pose",  "party"};
    for (size_t i = 0; i < sizeof chans / sizeof chans[0]; i++) {
        char *f = frame("{\"type\":\"mute_channel\",\"channel\":\"%s\"}", chans[i]);
        expect_ok(f);
        assert_int_equal(cmd.type, GW_CMD_MUTE_CHANNEL);
        assert_string_equal(cmd.channel, chans[i]);
        assert_only(0, 0, 0, 1, 0, 0);
        free(f);
        f = frame("{\"type\":\"unmute_channel\",\"channel\":\"%s\"}", chans[i]);
        expect_ok(f);
        assert_int_equal(cmd.type, GW_CMD_UNMUTE_CHANNEL);
        assert_string_equal(cmd.channel, chans[i]);
        free(f);
    }

    expect_ok("{\"type\":\"mute_global\",\"target\":\"troll\"}");
    assert_int_equal(cmd.type, GW_CMD_MUTE_GLOBAL);
    assert_only(0, 0, 1, 0, 0, 0);
    expect_ok("{\"type\":\"mute_global\",\"target\":\"troll\",\"minutes\":525600,"
              "\"reason\":\"spam \\u2014 again\"}");
    assert_int_equal(cmd.minutes, 525600);
    assert_string_equal(cmd.reason, "spam \xe2\x80\x94 again");
    assert_in_store(cmd.reason);
    expect_ok("{\"type\":\"mute_global\",\"target\":\"troll\",\"reason\":\"\"}");
    assert_string_equal(cmd.reason, "");

    expect_ok("{\"type\":\"unmute_global\",\"target\":\"troll\"}");
    assert_int_equal(cmd.type, GW_CMD_UNMUTE_GLOBAL);
    assert_only(0, 0, 1, 0, 0, 0);

    expect_ok("{\"type\":\"mutes\"}");
    assert_int_equal(cmd.type, GW_CMD_MUTES);
    assert_only(0, 0, 0, 0, 0, 0);
    expect_ok(" { \"type\" : \"ping\" , \"id\" : \"p\" } \n");
    assert_int_equal(cmd.type, GW_CMD_PING);
    assert_string_equal(cmd.id, "p");
    assert_only(0, 0, 0, 0, 0, 0);
}

/* A second parse into the same gw_cmd leaves nothing of the first. */
static void test_reuse_resets(void **state)
{
    (void)state;
    expect_ok("{\"id\":\"a\",\"type\":\"mute_global\",\"target\":\"t\",\"minutes\":5,"
              "\"reason\":\"r\"}");
    expect_ok("{\"type\":\"ping\"}");
    assert_null(cmd.id);
    assert_only(0, 0, 0, 0, 0, 0);
    expect_ok("{\"id\":\"b\",\"type\":\"say\",\"content\":\"x\"}");
    expect_err("{\"type\":\"nope\"}", GW_ERR_BAD_REQUEST, NULL);
    assert_null(cmd.id);
    assert_null(cmd.content);
    assert_int_equal(cmd.content_chars, 0);

    /* msg may be NULL. */
    assert_int_equal(gw_cmd_parse("{\"type\":\"ping\"}", 15, &cmd, NULL), GW_ERR_NONE);
    assert_int_equal(gw_cmd_parse("[]", 2, &cmd, NULL), GW_ERR_BAD_REQUEST);
    /* A NULL buffer is an empty frame. */
    assert_int_equal(gw_cmd_parse(NULL, 0, &cmd, msg), GW_ERR_BAD_REQUEST);
}

/* ---- id ---- */

static void test_id_rules(void **state)
{
    (void)state;
    char *id64 = repeat("x", 64), *id65 = repeat("x", 65);
    char *f = frame("{\"id\":\"%s\",\"type\":\"ping\"}", id64);
    expect_ok(f);
    assert_string_equal(cmd.id, id64);
    free(f);
    f = frame("{\"id\":\"%s\",\"type\":\"ping\"}", id65);
    expect_msg(f, GW_ERR_BAD_REQUEST, "id: must be 1..64 bytes, not 65");
    assert_null(cmd.id);
    free(f);
    free(id64);
    free(id65);

    /* 16 three-byte characters are 48 bytes; 22 are 66 bytes, too many. */
    char *euro16 = repeat("\xe2\x82\xac", 16), *euro22 = repeat("\\u20ac", 22);
    f = frame("{\"id\":\"%s\",\"type\":\"ping\"}", euro16);
    expect_ok(f);
    assert_string_equal(cmd.id, euro16);
    free(f);
    f = frame("{\"id\":\"%s\",\"type\":\"ping\"}", euro22);
    expect_err(f, GW_ERR_BAD_REQUEST, "id: must be 1..64 bytes, not 66");
    free(f);
    free(euro16);
    free(euro22);

    expect_ok("{\"id\":\"a b.c/\\\"{}\",\"type\":\"ping\"}");
    assert_string_equal(cmd.id, "a b.c/\"{}");

    expect_msg("{\"id\":\"\",\"type\":\"ping\"}", GW_ERR_BAD_REQUEST,
               "id: must be 1..64 bytes, not 0");
    expect_msg("{\"id\":7,\"type\":\"ping\"}", GW_ERR_BAD_REQUEST, "id: must be a string");
    expect_err("{\"id\":null,\"type\":\"ping\"}", GW_ERR_BAD_REQUEST, "id: must be a string");
    expect_err("{\"id\":[\"a\"],\"type\":\"ping\"}", GW_ERR_BAD_REQUEST, "id: must be a string");
    expect_msg("{\"id\":\"a\\nb\",\"type\":\"ping\"}", GW_ERR_BAD_REQUEST,
               "id: control character U+000A at byte 1");
    expect_err("{\"id\":\"\\u0000\",\"type\":\"ping\"}", GW_ERR_BAD_REQUEST,
               "id: control character U+0000 at byte 0");
    expect_err("{\"id\":\"x\\u007f\",\"type\":\"ping\"}", GW_ERR_BAD_REQUEST, "U+007F");
    expect_err("{\"id\":\"x\\u0085\",\"type\":\"ping\"}", GW_ERR_BAD_REQUEST, "U+0085");
    expect_err("{\"id\":\"\\t\",\"type\":\"ping\"}", GW_ERR_BAD_REQUEST, "U+0009");
    assert_null(cmd.id);
    /* U+00A0 is not a control character. */
    expect_ok("{\"id\":\"\\u00a0\",\"type\":\"ping\"}");
}

/* A valid id is echoed whatever else is wrong with the object. */
static void test_id_echoed_on_errors(void **state)
{
    (void)state;
    static const struct {
        const char *json;
        gw_err_code code;
    } cases[] = {
        {"{\"id\":\"r1\"}", GW_ERR_BAD_REQUEST},
        {"{\"type\":\"nope\",\"id\":\"r1\"}", GW_ERR_BAD_REQUEST},
        {"{\"id\":\"r1\",\"type\":\"say\"}", GW_ERR_BAD_REQUEST},
        {"{\"id\":\"r1\",\"type\":\"say\",\"content\":\"\"}", GW_ERR_BAD_REQUEST},
        {"{\"id\":\"r1\",\"type\":\"say\",\"content\":\"x\",\"extra\":1}", GW_ERR_BAD_REQUEST},
        {"{\"id\":\"r1\",\"type\":\"join\",\"room_id\":\"a b\"}", GW_ERR_INVALID_ROOM},
        {"{\"id\":\"r1\",\"type\":\"whisper\",\"target\":\"\",\"content\":\"x\"}",
         GW_ERR_INVALID_TARGET},
        {"{\"id\":\"r1\",\"type\":\"mute\",\"target\":\"t\",\"minutes\":0}", GW_ERR_BAD_REQUEST},
        {"{\"id\":\"r1\",\"type\":\"mute_channel\",\"channel\":\"x\"}", GW_ERR_BAD_REQUEST},
        {"{\"id\":\"r1\",\"type\":7}", GW_ERR_BAD_REQUEST},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        expect_err(cases[i].json, cases[i].code, NULL);
        if (cmd.id == NULL || strcmp(cmd.id, "r1") != 0)
            fail_msg("%s: id not echoed", cases[i].json);
    }
    /* Not an object, not JSON: nothing to echo. */
    expect_err("[{\"id\":\"r1\"}]", GW_ERR_BAD_REQUEST, "not a JSON object");
    assert_null(cmd.id);
    expect_err("{\"id\":\"r1\",", GW_ERR_BAD_REQUEST, "bad JSON");
    assert_null(cmd.id);
}

/* ---- type ---- */

static void test_type_rules(void **state)
{
    (void)state;
    expect_msg("{}", GW_ERR_BAD_REQUEST, "type: required");
    expect_msg("{\"content\":\"x\"}", GW_ERR_BAD_REQUEST, "type: required");
    expect_msg("{\"type\":1}", GW_ERR_BAD_REQUEST, "type: must be a string");
    expect_msg("{\"type\":null}", GW_ERR_BAD_REQUEST, "type: must be a string");
    expect_msg("{\"type\":[\"say\"]}", GW_ERR_BAD_REQUEST, "type: must be a string");
    expect_msg("{\"type\":\"foo\"}", GW_ERR_BAD_REQUEST, "type: unknown command \"foo\"");
    expect_msg("{\"type\":\"Say\",\"content\":\"x\"}", GW_ERR_BAD_REQUEST,
               "type: unknown command \"Say\"");
    expect_msg("{\"type\":\"\"}", GW_ERR_BAD_REQUEST, "type: unknown command \"\"");
    expect_msg("{\"type\":\"say \"}", GW_ERR_BAD_REQUEST, "type: unknown command \"say \"");
    /* An embedded NUL does not make "ping\0x" match "ping"; shown as '?'. */
    expect_msg("{\"type\":\"ping\\u0000x\"}", GW_ERR_BAD_REQUEST,
               "type: unknown command \"ping?x\"");
    expect_msg("{\"type\":\"a\\u0007b\"}", GW_ERR_BAD_REQUEST, "type: unknown command \"a?b\"");
    /* A long name is cut on a character boundary. */
    char *longname = repeat("\xc3\xa9", 40);
    char *f = frame("{\"type\":\"%s\"}", longname);
    expect_err(f, GW_ERR_BAD_REQUEST, "type: unknown command \"");
    char want[64];
    snprintf(want, sizeof want, "type: unknown command \"%.32s...\"", longname);
    assert_string_equal(msg, want);
    free(f);
    free(longname);
    assert_int_equal(cmd.type, GW_CMD__COUNT);
}

/* ---- unknown and missing fields ---- */

static void test_unknown_fields(void **state)
{
    (void)state;
    expect_msg("{\"type\":\"say\",\"content\":\"x\",\"target\":\"p\"}", GW_ERR_BAD_REQUEST,
               "\"target\": unknown field (say takes content)");
    expect_msg("{\"type\":\"ping\",\"content\":\"x\"}", GW_ERR_BAD_REQUEST,
               "\"content\": unknown field (ping takes no fields)");
    expect_msg("{\"type\":\"unmute\",\"target\":\"p\",\"minutes\":5}", GW_ERR_BAD_REQUEST,
               "\"minutes\": unknown field (unmute takes target)");
    expect_msg("{\"type\":\"mute\",\"target\":\"p\",\"reason\":\"r\"}", GW_ERR_BAD_REQUEST,
               "\"reason\": unknown field (mute takes target, optional minutes)");
    expect_msg("{\"type\":\"system\",\"content\":\"x\",\"channel\":\"say\"}", GW_ERR_BAD_REQUEST,
               "\"channel\": unknown field (system takes content, optional target)");
    expect_msg("{\"type\":\"mute_global\",\"target\":\"p\",\"Reason\":\"r\"}", GW_ERR_BAD_REQUEST,
               "\"Reason\": unknown field (mute_global takes target, optional minutes, "
               "optional reason)");
    expect_msg("{\"type\":\"join\",\"room_id\":\"r\",\"\":1}", GW_ERR_BAD_REQUEST,
               "\"\": unknown field (join takes room_id)");
    expect_msg("{\"type\":\"mutes\",\"x\\ny\":null}", GW_ERR_BAD_REQUEST,
               "\"x?y\": unknown field (mutes takes no fields)");
    /* Unknown fields are reported before missing or bad ones. */
    expect_err("{\"type\":\"say\",\"zzz\":1}", GW_ERR_BAD_REQUEST, "\"zzz\": unknown field");
    /* ... in document order. */
    expect_err("{\"type\":\"ping\",\"b\":1,\"a\":2}", GW_ERR_BAD_REQUEST, "\"b\"");
    /* A NUL in a key is refused by jansson. */
    expect_err("{\"type\":\"ping\",\"a\\u0000\":1}", GW_ERR_BAD_REQUEST, "bad JSON at byte");
}

static void test_missing_fields(void **state)
{
    (void)state;
    static const struct {
        const char *json, *want;
    } cases[] = {
        {"{\"type\":\"join\"}", "room_id: required"},
        {"{\"type\":\"say\"}", "content: required"},
        {"{\"type\":\"emote\"}", "content: required"},
        {"{\"type\":\"pose\"}", "content: required"},
        {"{\"type\":\"local\"}", "content: required"},
        {"{\"type\":\"global\"}", "content: required"},
        {"{\"type\":\"party\"}", "content: required"},
        {"{\"type\":\"system\"}", "content: required"},
        {"{\"type\":\"system\",\"target\":\"p\"}", "content: required"},
        {"{\"type\":\"whisper\",\"content\":\"x\"}", "target: required"},
        {"{\"type\":\"whisper\",\"target\":\"p\"}", "content: required"},
        {"{\"type\":\"whisper\"}", "target: required"},
        {"{\"type\":\"mute\"}", "target: required"},
        {"{\"type\":\"mute\",\"minutes\":5}", "target: required"},
        {"{\"type\":\"unmute\"}", "target: required"},
        {"{\"type\":\"mute_channel\"}", "channel: required"},
        {"{\"type\":\"unmute_channel\"}", "channel: required"},
        {"{\"type\":\"mute_global\",\"reason\":\"r\"}", "target: required"},
        {"{\"type\":\"unmute_global\"}", "target: required"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        expect_msg(cases[i].json, GW_ERR_BAD_REQUEST, cases[i].want);
}

/* Every field, every wrong JSON type. */
static void test_wrong_types(void **state)
{
    (void)state;
    static const struct {
        const char *prefix, *field, *suffix;
    } slots[] = {
        {"{\"type\":\"join\",", "room_id", "}"},
        {"{\"type\":\"say\",", "content", "}"},
        {"{\"type\":\"whisper\",\"content\":\"x\",", "target", "}"},
        {"{\"type\":\"mute_channel\",", "channel", "}"},
        {"{\"type\":\"mute\",\"target\":\"t\",", "minutes", "}"},
        {"{\"type\":\"mute_global\",\"target\":\"t\",", "reason", "}"},
    };
    static const char *const values[] = {"1",  "-1.5", "true",    "false",         "null",
                                         "[]", "{}",   "[\"x\"]", "{\"a\":\"b\"}", "0"};
    static const char *const string_values[] = {"\"5\"", "\"\"", "\"x\""};
    for (size_t s = 0; s < sizeof slots / sizeof slots[0]; s++) {
        int is_minutes = strcmp(slots[s].field, "minutes") == 0;
        for (size_t v = 0; v < sizeof values / sizeof values[0]; v++) {
            if (is_minutes && strcmp(values[v], "1") == 0)
                continue; /* the one valid value */
            char *f =
                frame("%s\"%s\":%s%s", slots[s].prefix, slots[s].field, values[v], slots[s].suffix);
            char want[64];
            if (is_minutes)
                snprintf(want, sizeof want, "minutes: must be an integer 1..525600");
            else
                snprintf(want, sizeof want, "%s: must be a string", slots[s].field);
            expect_msg(f, GW_ERR_BAD_REQUEST, want);
            free(f);
        }
        if (is_minutes) {
            for (size_t v = 0; v < sizeof string_values / sizeof string_values[0]; v++) {
                char *f = frame("%s\"minutes\":%s}", slots[s].prefix, string_values[v]);
                expect_msg(f, GW_ERR_BAD_REQUEST, "minutes: must be an integer 1..525600");
                free(f);
            }
        }
    }
}

/* ---- field values ---- */

static void test_room_and_target(void **state)
{
    (void)state;
    char *t128 = repeat("aZ9_-", 25), *t129 = NULL;
    t128 = realloc(t128, 129);
    assert_non_null(t128);
    strcat(t128, "abc");
    assert_int_equal(strlen(t128), 128);
    t129 = frame("%sx", t128);

    char *f = frame("{\"type\":\"join\",\"room_id\":\"%s\"}", t128);
    expect_ok(f);
    assert_string_equal(cmd.room_id, t128);
    free(f);
    f = frame("{\"type\":\"join\",\"room_id\":\"%s\"}", t129);
    expect_msg(f, GW_ERR_INVALID_ROOM, "room_id: must be 1..128 characters of [A-Za-z0-9_-]");
    free(f);
    f = frame("{\"type\":\"mute\",\"target\":\"%s\"}", t128);
    expect_ok(f);
    free(f);
    f = frame("{\"type\":\"mute\",\"target\":\"%s\"}", t129);
    expect_msg(f, GW_ERR_INVALID_TARGET, "target: must be 1..128 characters of [A-Za-z0-9_-]");
    free(f);
    free(t128);
    free(t129);

    static const char *const bad[] = {"",     "a b",   "a.b",      "a/b", "\\u00e9", "a\\u0000",
                                      "a\\n", "room!", "\\u0130x", "*",   ">"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        f = frame("{\"type\":\"join\",\"room_id\":\"%s\"}", bad[i]);
        expect_err(f, GW_ERR_INVALID_ROOM, "room_id: must be 1..128 characters");
        free(f);
        static const char *const tgt_cmds[] = {"whisper", "system",      "mute",
                                               "unmute",  "mute_global", "unmute_global"};
        for (size_t c = 0; c < sizeof tgt_cmds / sizeof tgt_cmds[0]; c++) {
            int needs_content = c < 2;
            f = frame("{\"type\":\"%s\",\"target\":\"%s\"%s}", tgt_cmds[c], bad[i],
                      needs_content ? ",\"content\":\"x\"" : "");
            expect_err(f, GW_ERR_INVALID_TARGET, "target: must be 1..128 characters");
            free(f);
        }
    }
}

static void test_content_rules(void **state)
{
    (void)state;
    /* Code points, not bytes: e-acute (2), euro (3), G clef (4) via surrogates. */
    expect_ok("{\"type\":\"say\",\"content\":\"\\u00e9\\u20ac\\ud834\\udd1e\"}");
    assert_int_equal(cmd.content_len, 9);
    assert_int_equal(cmd.content_chars, 3);
    assert_string_equal(cmd.content, "\xc3\xa9\xe2\x82\xac\xf0\x9d\x84\x9e");
    expect_ok("{\"type\":\"say\",\"content\":\"\xc3\xa9\xe2\x82\xac\xf0\x9d\x84\x9e\"}");
    assert_int_equal(cmd.content_chars, 3);

    expect_ok("{\"type\":\"say\",\"content\":\"x\"}");
    assert_int_equal(cmd.content_chars, 1);
    expect_ok("{\"type\":\"say\",\"content\":\"line\\nnext\\tcol\"}");
    assert_string_equal(cmd.content, "line\nnext\tcol");
    expect_ok("{\"type\":\"say\",\"content\":\" \"}");

    expect_msg("{\"type\":\"say\",\"content\":\"\"}", GW_ERR_BAD_REQUEST,
               "content: must be 1..10000 characters, not 0");

    /* 10000 ASCII characters fit in a frame; 10001 are refused. */
    char *c10k = repeat("a", 10000);
    char *f = frame("{\"type\":\"global\",\"content\":\"%s\"}", c10k);
    expect_ok(f);
    assert_int_equal(cmd.content_chars, 10000);
    assert_int_equal(cmd.content_len, 10000);
    free(f);
    f = frame("{\"type\":\"global\",\"content\":\"%sb\"}", c10k);
    expect_msg(f, GW_ERR_TOO_LONG, "content: 10001 characters exceeds 10000");
    free(f);
    free(c10k);

    /* 5000 euro signs are 15000 bytes but 5000 characters. */
    char *euros = repeat("\xe2\x82\xac", 5000);
    f = frame("{\"type\":\"say\",\"content\":\"%s\"}", euros);
    expect_ok(f);
    assert_int_equal(cmd.content_len, 15000);
    assert_int_equal(cmd.content_chars, 5000);
    free(f);
    free(euros);

    static const struct {
        const char *esc, *cp;
    } controls[] = {{"\\u0000", "U+0000"}, {"\\u0001", "U+0001"}, {"\\r", "U+000D"},
                    {"\\b", "U+0008"},     {"\\f", "U+000C"},     {"\\u001f", "U+001F"},
                    {"\\u007f", "U+007F"}, {"\\u0080", "U+0080"}, {"\\u009f", "U+009F"},
                    {"\xc2\x85", "U+0085"}};
    for (size_t i = 0; i < sizeof controls / sizeof controls[0]; i++) {
        f = frame("{\"type\":\"say\",\"content\":\"ok %s\"}", controls[i].esc);
        char want[96];
        snprintf(want, sizeof want,
                 "content: control character %s at byte 3 (only \\n and \\t allowed)",
                 controls[i].cp);
        expect_msg(f, GW_ERR_BAD_REQUEST, want);
        free(f);
    }
    /* U+00A0 and U+2028 are not Cc. */
    expect_ok("{\"type\":\"say\",\"content\":\"\\u00a0\\u2028\"}");
    assert_int_equal(cmd.content_chars, 2);
}

static void test_channel_rules(void **state)
{
    (void)state;
    static const char *const bad[] = {"system", "admin", "Say", "", "say ", "sa", "party\\u0000"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *f = frame("{\"type\":\"mute_channel\",\"channel\":\"%s\"}", bad[i]);
        expect_msg(f, GW_ERR_BAD_REQUEST,
                   "channel: must be one of say local global whisper emote pose party");
        free(f);
    }
}

static void test_minutes_rules(void **state)
{
    (void)state;
    static const char *const good[] = {"1", "525600", "60"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        char *f = frame("{\"type\":\"mute\",\"target\":\"t\",\"minutes\":%s}", good[i]);
        expect_ok(f);
        assert_int_equal(cmd.minutes, atoll(good[i]));
        free(f);
    }
    static const char *const bad[] = {"0",   "-1",  "525601", "9223372036854775807",
                                      "1.0", "1e0", "1.5",    "-9223372036854775808"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *f = frame("{\"type\":\"mute_global\",\"target\":\"t\",\"minutes\":%s}", bad[i]);
        expect_msg(f, GW_ERR_BAD_REQUEST, "minutes: must be an integer 1..525600");
        assert_int_equal(cmd.minutes, 0);
        free(f);
    }
    /* Beyond int64: a JSON error from jansson. */
    expect_err("{\"type\":\"mute\",\"target\":\"t\",\"minutes\":99999999999999999999}",
               GW_ERR_BAD_REQUEST, "bad JSON at byte");
}

static void test_reason_rules(void **state)
{
    (void)state;
    char *r200 = repeat("\\u00e9", 200), *r201 = repeat("r", 201);
    char *f = frame("{\"type\":\"mute_global\",\"target\":\"t\",\"reason\":\"%s\"}", r200);
    expect_ok(f);
    assert_int_equal(strlen(cmd.reason), 400);
    free(f);
    f = frame("{\"type\":\"mute_global\",\"target\":\"t\",\"reason\":\"%s\"}", r201);
    expect_msg(f, GW_ERR_BAD_REQUEST, "reason: must be at most 200 characters, not 201");
    free(f);
    free(r200);
    free(r201);
    expect_msg("{\"type\":\"mute_global\",\"target\":\"t\",\"reason\":\"a\\nb\"}",
               GW_ERR_BAD_REQUEST, "reason: control character U+000A at byte 1");
    expect_err("{\"type\":\"mute_global\",\"target\":\"t\",\"reason\":\"\\u0000\"}",
               GW_ERR_BAD_REQUEST, "reason: control character U+0000");
}

/* Several faults: the documented order decides which is reported. */
static void test_check_order(void **state)
{
    (void)state;
    expect_err("{\"id\":5,\"type\":\"nope\"}", GW_ERR_BAD_REQUEST, "id:");
    expect_err("{\"type\":\"nope\",\"zzz\":1}", GW_ERR_BAD_REQUEST, "type:");
    expect_err("{\"type\":\"whisper\",\"target\":\"a b\",\"content\":\"\"}", GW_ERR_INVALID_TARGET,
               "target:");
    expect_err("{\"type\":\"mute_global\",\"target\":\"t\",\"reason\":\"\\n\",\"minutes\":0}",
               GW_ERR_BAD_REQUEST, "minutes:");
}

/* ---- JSON-level failures ---- */

static void test_duplicate_keys(void **state)
{
    (void)state;
    expect_err("{\"type\":\"say\",\"content\":\"a\",\"content\":\"b\"}", GW_ERR_BAD_REQUEST,
               "duplicate");
    expect_err("{\"type\":\"say\",\"type\":\"say\",\"content\":\"a\"}", GW_ERR_BAD_REQUEST,
               "bad JSON at byte");
    expect_err("{\"id\":\"a\",\"id\":\"a\",\"type\":\"ping\"}", GW_ERR_BAD_REQUEST, "duplicate");
    /* Keys equal after unescaping are duplicates too. */
    expect_err("{\"type\":\"ping\",\"\\u0074ype\":\"ping\"}", GW_ERR_BAD_REQUEST, "duplicate");
}

static void test_not_objects(void **state)
{
    (void)state;
    static const char *const cases[] = {
        "[]", "[{\"type\":\"ping\"}]", "\"ping\"", "1", "-0.5", "null", "true", "false", " [ ] "};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        expect_msg(cases[i], GW_ERR_BAD_REQUEST, "not a JSON object");
}

static void test_bad_json(void **state)
{
    (void)state;
    static const char *const cases[] = {"",
                                        " ",
                                        "{",
                                        "}",
                                        "{\"type\"",
                                        "{\"type\":}",
                                        "{'type':'ping'}",
                                        "{type:\"ping\"}",
                                        "{\"type\":\"ping\",}",
                                        "{\"type\":\"ping\"} {}",
                                        "{\"type\":\"ping\"}x",
                                        "{\"type\":\"say\",\"content\":\"\\x\"}",
                                        "{\"type\":\"say\",\"content\":\"\\ud800\"}",
                                        "{\"type\":\"say\",\"content\":\"\\udc00x\"}",
                                        "{\"type\":\"ping\"\"id\":\"a\"}",
                                        "{\"type\":\"say\",\"content\":\"a\tb\"}",
                                        "{\"type\":\"mute\",\"target\":\"t\",\"minutes\":01}",
                                        "{\"type\":\"ping\",\"x\":NaN}",
                                        "\xef\xbb\xbf{\"type\":\"ping\"}"};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        expect_err(cases[i], GW_ERR_BAD_REQUEST, "bad JSON at byte ");
    expect_msg("{\"type\":\"ping\",}", GW_ERR_BAD_REQUEST,
               "bad JSON at byte 16: string or '}' expected near '}'");
}

/* Every proper prefix of a valid command is refused, without a crash. */
static void test_truncated(void **state)
{
    (void)state;
    const char *full = "{\"id\":\"q\\u00e9\",\"type\":\"mute_global\",\"target\":\"t\","
                       "\"minutes\":10,\"reason\":\"\xe2\x82\xac \\\"x\\\"\"}";
    expect_ok(full);
    size_t n = strlen(full);
    for (size_t i = 0; i < n; i++) {
        /* An exact-size copy, so that ASan catches reads past the end. */
        char *p = malloc(i ? i : 1);
        assert_non_null(p);
        memcpy(p, full, i);
        gw_err_code rc = parse_n(p, i);
        if (rc != GW_ERR_BAD_REQUEST)
            fail_msg("prefix of %zu bytes: %s (%s)", i, gw_err_code_name(rc), msg);
        if (strncmp(msg, "bad JSON at byte ", 17) != 0 &&
            strncmp(msg, "frame: invalid UTF-8", 20) != 0)
            fail_msg("prefix of %zu bytes: message '%s'", i, msg);
        free(p);
    }
}

/* ---- NUL bytes ---- */

static void test_nul_bytes(void **state)
{
    (void)state;
    /* Raw NUL inside a string, between tokens, and after the object. */
    static const char in_string[] = "{\"type\":\"say\",\"content\":\"a\0b\"}";
    expect_err_n(in_string, sizeof in_string - 1, GW_ERR_BAD_REQUEST, "bad JSON at byte 26");
    static const char between[] = "{\"type\":\"ping\",\0\"id\":\"a\"}";
    expect_err_n(between, sizeof between - 1, GW_ERR_BAD_REQUEST, "bad JSON at byte");
    static const char after[] = "{\"type\":\"ping\"}\0";
    expect_err_n(after, sizeof after - 1, GW_ERR_BAD_REQUEST, "bad JSON at byte");
    /* The same frame without its NUL is fine: len, not strlen, counts. */
    assert_int_equal(parse_n(after, sizeof after - 2), GW_ERR_NONE);
    /* jansson alone would skip a NUL right after a number or literal. */
    static const char after_number[] = "{\"type\":\"mute\",\"target\":\"t\",\"minutes\":5\0}";
    expect_err_n(after_number, sizeof after_number - 1, GW_ERR_BAD_REQUEST,
                 "bad JSON at byte 39: NUL byte");
    static const char after_true[] = "{\"type\":\"ping\",\"x\":true\0}";
    expect_err_n(after_true, sizeof after_true - 1, GW_ERR_BAD_REQUEST, "NUL byte");
    static const char only[] = "\0";
    expect_err_n(only, 1, GW_ERR_BAD_REQUEST, "bad JSON at byte");
    /* Escaped NUL: a control character in content, not a truncated string. */
    expect_msg("{\"type\":\"say\",\"content\":\"abc\\u0000def\"}", GW_ERR_BAD_REQUEST,
               "content: control character U+0000 at byte 3 (only \\n and \\t allowed)");
    assert_null(cmd.content);
    /* Every field that keeps a string refuses \u0000. */
    expect_err("{\"type\":\"join\",\"room_id\":\"r\\u0000\"}", GW_ERR_INVALID_ROOM, NULL);
    expect_err("{\"type\":\"mute_channel\",\"channel\":\"say\\u0000\"}", GW_ERR_BAD_REQUEST,
               "channel:");
}

/* ---- frame size and nesting ---- */

static void test_frame_size(void **state)
{
    (void)state;
    const char *obj = "{\"type\":\"ping\"}";
    size_t on = strlen(obj);
    char *buf = malloc(GW_FRAME_MAX + 1);
    assert_non_null(buf);
    memcpy(buf, obj, on);
    memset(buf + on, ' ', GW_FRAME_MAX + 1 - on);
    /* Trailing white space is allowed, so the limit itself is exercised. */
    assert_int_equal(parse_n(buf, GW_FRAME_MAX), GW_ERR_NONE);
    expect_err_n(buf, GW_FRAME_MAX + 1, GW_ERR_BAD_REQUEST, NULL);
    assert_string_equal(msg, "frame: 16385 bytes exceeds 16384");
    assert_null(cmd.id);
    /* Nothing is read from an oversized frame, not even the id. */
    assert_int_equal(gw_cmd_parse(buf, SIZE_MAX, &cmd, msg), GW_ERR_BAD_REQUEST);
    free(buf);

    /* A full-size frame of escapes: the store still holds every string. */
    char *id = repeat("\\u00e9", 32);
    char *reason = repeat("\\u20ac", 200);
    char *f = frame("{\"id\":\"%s\",\"type\":\"mute_global\",\"target\":\"t\",\"reason\":\"%s\"}",
                    id, reason);
    size_t fn = strlen(f);
    assert_true(fn < GW_FRAME_MAX);
    char *big = malloc(GW_FRAME_MAX);
    assert_non_null(big);
    memcpy(big, f, fn);
    memset(big + fn, '\n', GW_FRAME_MAX - fn);
    assert_int_equal(parse_n(big, GW_FRAME_MAX), GW_ERR_NONE);
    assert_int_equal(strlen(cmd.id), 64);
    assert_int_equal(strlen(cmd.reason), 600);
    free(big);
    free(f);
    free(id);
    free(reason);
}

static void test_deep_nesting(void **state)
{
    (void)state;
    /* 32 levels in all are within the limit (then refused as an unknown field). */
    char *open = repeat("[", 31), *close = repeat("]", 31);
    char *f = frame("{\"type\":\"ping\",\"x\":%s%s}", open, close);
    expect_err(f, GW_ERR_BAD_REQUEST, "\"x\": unknown field");
    free(f);
    free(open);
    free(close);
    /* 33 levels are not. */
    open = repeat("[", 32);
    close = repeat("]", 32);
    f = frame("{\"type\":\"ping\",\"x\":%s%s}", open, close);
    expect_msg(f, GW_ERR_BAD_REQUEST, "bad JSON at byte 50: nesting deeper than 32");
    free(f);
    free(open);
    free(close);
    /* Thousands of levels, unbalanced, and mixed objects. */
    open = repeat("[{\"a\":", 2000);
    expect_err(open, GW_ERR_BAD_REQUEST, "nesting deeper than 32");
    free(open);
    open = repeat("[", GW_FRAME_MAX);
    expect_err_n(open, GW_FRAME_MAX, GW_ERR_BAD_REQUEST, "bad JSON at byte 32: nesting");
    free(open);
    /* Brackets inside strings do not count. */
    char *br = repeat("[{", 100);
    f = frame("{\"type\":\"say\",\"content\":\"%s \\\" [[\"}", br);
    expect_ok(f);
    assert_int_equal(cmd.content_chars, 205);
    free(f);
    free(br);
}

/* ---- UTF-8 ---- */

static void test_utf8_valid(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        size_t n;
        bool ok;
        size_t chars;
    } cases[] = {
        {"", 0, true, 0},
        {"abc", 3, true, 3},
        {"\0", 1, true, 1},
        {"\x7f", 1, true, 1},
        {"\xc2\x80", 2, true, 1},         /* U+0080 */
        {"\xdf\xbf", 2, true, 1},         /* U+07FF */
        {"\xe0\xa0\x80", 3, true, 1},     /* U+0800 */
        {"\xed\x9f\xbf", 3, true, 1},     /* U+D7FF */
        {"\xee\x80\x80", 3, true, 1},     /* U+E000 */
        {"\xef\xbf\xbf", 3, true, 1},     /* U+FFFF */
        {"\xf0\x90\x80\x80", 4, true, 1}, /* U+10000 */
        {"\xf4\x8f\xbf\xbf", 4, true, 1}, /* U+10FFFF */
        {"a\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80z", 11, true, 5},
        /* overlongs */
        {"\xc0\x80", 2, false, 0},
        {"\xc1\xbf", 2, false, 0},
        {"\xe0\x80\x80", 3, false, 0},
        {"\xe0\x9f\xbf", 3, false, 0},
        {"\xf0\x80\x80\x80", 4, false, 0},
        {"\xf0\x8f\xbf\xbf", 4, false, 0},
        /* surrogates */
        {"\xed\xa0\x80", 3, false, 0},
        {"\xed\xbf\xbf", 3, false, 0},
        {"\xed\xa0\xbd\xed\xb8\x80", 6, false, 0}, /* CESU-8 pair */
        /* above U+10FFFF */
        {"\xf4\x90\x80\x80", 4, false, 0},
        {"\xf5\x80\x80\x80", 4, false, 0},
        {"\xf7\xbf\xbf\xbf", 4, false, 0},
        {"\xf8\x88\x80\x80\x80", 5, false, 0},
        {"\xfc\x84\x80\x80\x80\x80", 6, false, 0},
        {"\xfe", 1, false, 0},
        {"\xff", 1, false, 0},
        /* truncated sequences */
        {"\xc3", 1, false, 0},
        {"\xe2\x82", 2, false, 0},
        {"\xf0\x9f\x98", 3, false, 0},
        {"a\xe2\x82", 3, false, 0},
        {"\xe2\x82z", 3, false, 0},
        {"\xf0\x9f\x98z", 4, false, 0},
        /* lone and extra continuation bytes */
        {"\x80", 1, false, 0},
        {"\xbf", 1, false, 0},
        {"\xc3\xa9\xa9", 3, false, 0},
        {"\xe2\x82\xac\x80", 4, false, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (gw_utf8_valid(cases[i].s, cases[i].n) != cases[i].ok)
            fail_msg("case %zu: gw_utf8_valid should be %d", i, cases[i].ok);
        if (cases[i].ok && gw_utf8_chars(cases[i].s, cases[i].n) != cases[i].chars)
            fail_msg("case %zu: %zu chars, want %zu", i, gw_utf8_chars(cases[i].s, cases[i].n),
                     cases[i].chars);
    }
    /* A valid prefix does not hide a bad byte at the very end. */
    char buf[64];
    memset(buf, 'a', sizeof buf);
    assert_true(gw_utf8_valid(buf, sizeof buf));
    buf[63] = (char)0xC3;
    assert_false(gw_utf8_valid(buf, sizeof buf));
    assert_true(gw_utf8_valid(buf, 63));
    assert_true(gw_utf8_valid(NULL, 0));
    assert_int_equal(gw_utf8_chars(NULL, 0), 0);

    /* Exhaustive over two-byte inputs: valid exactly when a reference
     * decoder accepts. */
    for (unsigned a = 0; a < 256; a++) {
        for (unsigned b = 0; b < 256; b++) {
            char two[2] = {(char)a, (char)b};
            bool ref = (a < 0x80 && b < 0x80) || (a >= 0xC2 && a <= 0xDF && b >= 0x80 && b <= 0xBF);
            if (gw_utf8_valid(two, 2) != ref)
                fail_msg("bytes %02X %02X: want %d", a, b, ref);
        }
    }
    /* Every code point encodes to something valid; every surrogate does not. */
    for (uint32_t cp = 0; cp <= 0x10FFFF; cp++) {
        unsigned char e[4];
        size_t n;
        if (cp < 0x80) {
            e[0] = (unsigned char)cp;
            n = 1;
        } else if (cp < 0x800) {
            e[0] = (unsigned char)(0xC0 | (cp >> 6));
            e[1] = (unsigned char)(0x80 | (cp & 0x3F));
            n = 2;
        } else if (cp < 0x10000) {
            e[0] = (unsigned char)(0xE0 | (cp >> 12));
            e[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
            e[2] = (unsigned char)(0x80 | (cp & 0x3F));
            n = 3;
        } else {
            e[0] = (unsigned char)(0xF0 | (cp >> 18));
            e[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
            e[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
            e[3] = (unsigned char)(0x80 | (cp & 0x3F));
            n = 4;
        }
        bool want = cp < 0xD800 || cp > 0xDFFF;
        if (gw_utf8_valid((const char *)e, n) != want)
            fail_msg("U+%04X: want %d", (unsigned)cp, want);
        if (want && gw_utf8_chars((const char *)e, n) != 1)
            fail_msg("U+%04X: not one character", (unsigned)cp);
        /* Any truncation of a multi-byte sequence is invalid. */
        for (size_t k = 1; k < n; k++) {
            if (gw_utf8_valid((const char *)e, k))
                fail_msg("U+%04X cut to %zu bytes is valid", (unsigned)cp, k);
        }
    }
}

static void test_invalid_utf8_frames(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        size_t at;
    } cases[] = {
        {"{\"type\":\"say\",\"content\":\"\xc0\xaf\"}", 25},
        {"{\"type\":\"say\",\"content\":\"ab\xed\xa0\x80\"}", 27},
        {"{\"type\":\"say\",\"content\":\"\xf4\x90\x80\x80\"}", 25},
        {"{\"type\":\"say\",\"content\":\"\xe2\x82\"}", 25},
        {"{\"type\":\"s\xff\"}", 10},
        {"{\"type\":\"ping\"}\x80", 15},
        {"\xfe{}", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char want[64];
        snprintf(want, sizeof want, "frame: invalid UTF-8 at byte %zu", cases[i].at);
        expect_msg(cases[i].s, GW_ERR_BAD_REQUEST, want);
    }
    /* An id before the bad byte is not echoed: the frame is not JSON. */
    expect_err("{\"id\":\"a\",\"type\":\"say\",\"content\":\"\xc3\"}", GW_ERR_BAD_REQUEST,
               "invalid UTF-8");
    assert_null(cmd.id);
}

/* Messages quote parts of the frame; they stay clean and bounded. */
static void test_messages_are_clean(void **state)
{
    (void)state;
    /* jansson quotes the offending token in "near '...'". */
    char *junk = repeat("\xe2\x82\xac", 300);
    char *f = frame("{\"type\":\"ping\",\"x\":%s}", junk);
    expect_err(f, GW_ERR_BAD_REQUEST, "bad JSON at byte");
    assert_true(strlen(msg) < GW_ERR_MSG_MAX);
    free(f);
    f = frame("{\"type\":\"ping\",\"%s\":1}", junk);
    expect_err(f, GW_ERR_BAD_REQUEST, "unknown field");
    free(f);
    f = frame("{\"type\":\"%s\"}", junk);
    expect_err(f, GW_ERR_BAD_REQUEST, "unknown command");
    free(f);
    free(junk);
    /* A raw control character in a string: jansson's message names it. */
    expect_err("{\"type\":\"say\",\"content\":\"\x01\x02\x1b[31m\"}", GW_ERR_BAD_REQUEST,
               "control character");
    expect_err("{\"type\":\"ping\",\"\\u001b[2J\":1}", GW_ERR_BAD_REQUEST, "\"?[2J\"");
    expect_err("{\"type\":\"ping\",\"\\u0085\":1}", GW_ERR_BAD_REQUEST, "\"??\"");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_join),
        cmocka_unit_test(test_content_commands),
        cmocka_unit_test(test_whisper_and_system),
        cmocka_unit_test(test_mutes_commands),
        cmocka_unit_test(test_reuse_resets),
        cmocka_unit_test(test_id_rules),
        cmocka_unit_test(test_id_echoed_on_errors),
        cmocka_unit_test(test_type_rules),
        cmocka_unit_test(test_unknown_fields),
        cmocka_unit_test(test_missing_fields),
        cmocka_unit_test(test_wrong_types),
        cmocka_unit_test(test_room_and_target),
        cmocka_unit_test(test_content_rules),
        cmocka_unit_test(test_channel_rules),
        cmocka_unit_test(test_minutes_rules),
        cmocka_unit_test(test_reason_rules),
        cmocka_unit_test(test_check_order),
        cmocka_unit_test(test_duplicate_keys),
        cmocka_unit_test(test_not_objects),
        cmocka_unit_test(test_bad_json),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_nul_bytes),
        cmocka_unit_test(test_frame_size),
        cmocka_unit_test(test_deep_nesting),
        cmocka_unit_test(test_utf8_valid),
        cmocka_unit_test(test_invalid_utf8_frames),
        cmocka_unit_test(test_messages_are_clean),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
