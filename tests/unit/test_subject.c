/* SPDX-License-Identifier: MIT */
/*
 * test_subject: the subject registry against PROTOCOL.md section 1: the 28
 * built-in patterns, building with the token rule (every hostile value is
 * refused and nothing is built), registration rules, publish-subject checks,
 * subscription breadth rules, room subzones, metrics, concurrent registration
 * during lookups, and a lookup that keeps no per-subject state.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mudbus/metrics.h"
#include "mudbus/subject.h"

static const struct {
    const char *name;
    const char *pattern;
    mb_schema_kind schema;
} contract[] = {
    {"chat_say_room", "chat.say.room.{room_id}", MB_SCHEMA_CHAT},
    {"chat_local_subzone", "chat.local.subzone.{subzone}", MB_SCHEMA_CHAT},
    {"chat_global", "chat.global", MB_SCHEMA_CHAT},
    {"chat_whisper_player", "chat.whisper.player.{target_id}", MB_SCHEMA_CHAT},
    {"chat_system", "chat.system", MB_SCHEMA_CHAT},
    {"chat_emote_room", "chat.emote.room.{room_id}", MB_SCHEMA_CHAT},
    {"chat_pose_room", "chat.pose.room.{room_id}", MB_SCHEMA_CHAT},
    {"chat_party_group", "chat.party.group.{party_id}", MB_SCHEMA_CHAT},
    {"event_player_entered", "events.player_entered.{room_id}", MB_SCHEMA_EVENT},
    {"event_player_left", "events.player_left.{room_id}", MB_SCHEMA_EVENT},
    {"event_game_tick", "events.game_tick", MB_SCHEMA_EVENT},
    {"event_player_mortally_wounded", "events.player_mortally_wounded.{room_id}", MB_SCHEMA_EVENT},
    {"event_player_dp_decay", "events.player_dp_decay.{room_id}", MB_SCHEMA_EVENT},
    {"event_player_died", "events.player_died.{room_id}", MB_SCHEMA_EVENT},
    {"event_player_respawned", "events.player_respawned.{room_id}", MB_SCHEMA_EVENT},
    {"event_domain", "events.domain.{event_type}", MB_SCHEMA_EVENT},
    {"combat_attack", "combat.attack.{room_id}", MB_SCHEMA_EVENT},
    {"combat_npc_attacked", "combat.npc_attacked.{room_id}", MB_SCHEMA_EVENT},
    {"combat_started", "combat.started.{room_id}", MB_SCHEMA_EVENT},
    {"combat_ended", "combat.ended.{room_id}", MB_SCHEMA_EVENT},
    {"combat_npc_died", "combat.npc_died.{room_id}", MB_SCHEMA_EVENT},
    {"combat_damage", "combat.damage.{room_id}", MB_SCHEMA_EVENT},
    {"combat_dp_update", "combat.dp_update.{player_id}", MB_SCHEMA_EVENT},
    {"combat_player_died", "combat.player_died.{room_id}", MB_SCHEMA_EVENT},
    {"combat_player_mortally_wounded", "combat.player_mortally_wounded.{room_id}", MB_SCHEMA_EVENT},
    {"combat_target_switch", "combat.target_switch.{room_id}", MB_SCHEMA_EVENT},
    {"combat_dp_decay", "combat.dp_decay.{player_id}", MB_SCHEMA_EVENT},
    {"mutes_changed", "mutes.changed.{player_id}", MB_SCHEMA_EVENT},
};
#define NCONTRACT (sizeof contract / sizeof contract[0])

static int setup(void **state)
{
    mb_subject_registry *r = NULL;
    if (mb_subject_registry_create(NULL, &r, NULL) != MB_OK)
        return -1;
    *state = r;
    return 0;
}

static int teardown(void **state)
{
    mb_subject_registry_destroy(*state);
    return 0;
}

static mb_status build1(mb_subject_registry *r, const char *pattern, const char *param,
                        const char *value, char *buf, mb_subject_reason *why, mb_err *err)
{
    mb_subject_param p = {param, value};
    return mb_subject_build(r, pattern, &p, 1, buf, MB_SUBJECT_MAX + 1, NULL, why, err);
}

static mb_status check_str(mb_subject_registry *r, const char *s, mb_subject_info *info,
                           mb_subject_reason *why, mb_err *err)
{
    return mb_subject_check(r, s, strlen(s), info, why, err);
}

/* The name of the single placeholder of a template, into buf ("" if none). */
static void placeholder_of(const char *pattern, char *buf, size_t cap)
{
    const char *o = strchr(pattern, '{');
    buf[0] = '\0';
    if (o == NULL)
        return;
    const char *c = strchr(o, '}');
    snprintf(buf, cap, "%.*s", (int)(c - o - 1), o + 1);
}

/* ---- the contract's patterns ---- */

static void test_builtin_patterns(void **state)
{
    mb_subject_registry *r = *state;
    assert_int_equal(mb_subject_count(r), NCONTRACT);
    assert_int_equal(NCONTRACT, 28);
    for (size_t i = 0; i < NCONTRACT; i++) {
        mb_subject_info info;
        assert_int_equal(mb_subject_at(r, i, &info), MB_OK);
        assert_string_equal(info.name, contract[i].name);
        assert_string_equal(info.pattern, contract[i].pattern);
        assert_int_equal(info.schema, contract[i].schema);

        mb_subject_info byname;
        assert_int_equal(mb_subject_lookup(r, contract[i].name, &byname, NULL), MB_OK);
        assert_ptr_equal(byname.name, info.name);

        char ph[64], buf[MB_SUBJECT_MAX + 1], want[MB_SUBJECT_MAX + 1];
        placeholder_of(contract[i].pattern, ph, sizeof ph);
        mb_subject_param p = {ph, "earth_arkham_city_library"};
        size_t len = 0;
        mb_subject_reason why = MB_SUBJECT_NO_MATCH;
        mb_err err = {0};
        assert_int_equal(mb_subject_build(r, contract[i].name, &p, ph[0] ? 1 : 0, buf, sizeof buf,
                                          &len, &why, &err),
                         MB_OK);
        assert_int_equal(why, MB_SUBJECT_OK);
        assert_int_equal(err.code, MB_OK);
        /* The expected subject: the template with its placeholder replaced. */
        const char *o = strchr(contract[i].pattern, '{');
        if (o == NULL)
            snprintf(want, sizeof want, "%s", contract[i].pattern);
        else
            snprintf(want, sizeof want, "%.*searth_arkham_city_library",
                     (int)(o - contract[i].pattern), contract[i].pattern);
        assert_string_equal(buf, want);
        assert_int_equal(len, strlen(want));

        mb_subject_info back;
        assert_int_equal(mb_subject_check(r, buf, len, &back, &why, &err), MB_OK);
        assert_int_equal(why, MB_SUBJECT_OK);
        assert_string_equal(back.name, contract[i].name);
        assert_int_equal(back.schema, contract[i].schema);
    }
    mb_subject_info info;
    assert_int_equal(mb_subject_at(r, NCONTRACT, &info), MB_ENOTFOUND);
}

static void test_reason_names(void **state)
{
    (void)state;
    assert_string_equal(mb_subject_reason_name(MB_SUBJECT_OK), "ok");
    assert_string_equal(mb_subject_reason_name(MB_SUBJECT_BAD_CHAR), "bad_char");
    assert_string_equal(mb_subject_reason_name(MB_SUBJECT_WILDCARD_IN_TOKEN), "wildcard_in_token");
    assert_string_equal(mb_subject_reason_name((mb_subject_reason)999), "unknown");
}

/* ---- building ---- */

static void test_build_hostile_values(void **state)
{
    mb_subject_registry *r = *state;
    char v129[130], v128[129], v300[301];
    memset(v129, 'a', 129);
    v129[129] = '\0';
    memset(v128, 'b', 128);
    v128[128] = '\0';
    memset(v300, 'c', 300);
    v300[300] = '\0';
    static const struct {
        const char *value;
        mb_subject_reason why;
        const char *msg; /* expected whole message, or NULL */
    } bad[] = {
        {"a.b", MB_SUBJECT_BAD_CHAR,
         "chat_say_room: parameter room_id: character '.' at byte 1 outside [A-Za-z0-9_-]"},
        {"*", MB_SUBJECT_BAD_CHAR,
         "chat_say_room: parameter room_id: character '*' at byte 0 outside [A-Za-z0-9_-]"},
        {">", MB_SUBJECT_BAD_CHAR, NULL},
        {"room>", MB_SUBJECT_BAD_CHAR, NULL},
        {"a b", MB_SUBJECT_BAD_CHAR,
         "chat_say_room: parameter room_id: character ' ' at byte 1 outside [A-Za-z0-9_-]"},
        {"", MB_SUBJECT_EMPTY_VALUE, NULL},
        {"caf\xc3\xa9", MB_SUBJECT_BAD_CHAR,
         "chat_say_room: parameter room_id: character '\\xc3' at byte 3 outside "
         "[A-Za-z0-9_-]"},
        {"a\x01z", MB_SUBJECT_BAD_CHAR,
         "chat_say_room: parameter room_id: character '\\x01' at byte 1 outside "
         "[A-Za-z0-9_-]"},
        {"a\tb", MB_SUBJECT_BAD_CHAR, NULL},
        {"a\nb", MB_SUBJECT_BAD_CHAR, NULL},
        {"a{b}", MB_SUBJECT_BAD_CHAR, NULL},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char buf[MB_SUBJECT_MAX + 1];
        memset(buf, 'x', sizeof buf);
        mb_subject_reason why = MB_SUBJECT_OK;
        mb_err err = {0};
        assert_int_equal(build1(r, "chat_say_room", "room_id", bad[i].value, buf, &why, &err),
                         MB_ESUBJECT);
        assert_int_equal(why, bad[i].why);
        assert_int_equal(err.code, MB_ESUBJECT);
        assert_string_equal(buf, "");
        assert_non_null(strstr(err.msg, "chat_say_room: parameter room_id"));
        if (bad[i].msg != NULL)
            assert_string_equal(err.msg, bad[i].msg);
    }

    char buf[MB_SUBJECT_MAX + 1];
    mb_subject_reason why;
    mb_err err = {0};
    assert_int_equal(build1(r, "chat_say_room", "room_id", v129, buf, &why, &err), MB_ESUBJECT);
    assert_int_equal(why, MB_SUBJECT_TOKEN_TOO_LONG);
    assert_string_equal(buf, "");
    assert_string_equal(err.msg,
                        "chat_say_room: parameter room_id: value of 129 bytes exceeds 128");
    mb_err_clear(&err);
    assert_int_equal(build1(r, "chat_say_room", "room_id", v300, buf, &why, &err), MB_ESUBJECT);
    assert_int_equal(why, MB_SUBJECT_TOKEN_TOO_LONG);
    assert_non_null(strstr(err.msg, "value of 300 bytes exceeds 128"));

    /* Exactly 128 bytes is a valid token, and the subject checks. */
    assert_int_equal(build1(r, "chat_say_room", "room_id", v128, buf, &why, NULL), MB_OK);
    assert_int_equal(strlen(buf), 14 + 128);
    assert_int_equal(check_str(r, buf, NULL, &why, NULL), MB_OK);
}

/* Values are checked 16, 8 or 4 bytes at a time: every length from 1 to 48
 * with a byte outside the charset at every position is refused, naming that
 * byte, and the value without it builds. */
static void test_build_every_length_and_position(void **state)
{
    mb_subject_registry *r = *state;
    static const char bad[] = {'.', ' ', '*',    '>',    '/',    ':',  '@',   '[',
                               '`', '{', '\x7f', '\x80', '\xff', '\t', '\x01'};
    char v[64], buf[MB_SUBJECT_MAX + 1], want[64];
    for (size_t n = 1; n <= 48; n++) {
        for (size_t i = 0; i < n; i++)
            v[i] = "azAZ09_-"[i % 8];
        v[n] = '\0';
        mb_subject_reason why;
        assert_int_equal(build1(r, "chat_say_room", "room_id", v, buf, &why, NULL), MB_OK);
        assert_int_equal(strlen(buf), 14 + n);
        for (size_t at = 0; at < n; at++) {
            for (size_t b = 0; b < sizeof bad; b++) {
                char saved = v[at];
                v[at] = bad[b];
                mb_err err = {0};
                assert_int_equal(build1(r, "chat_say_room", "room_id", v, buf, &why, &err),
                                 MB_ESUBJECT);
                assert_int_equal(why, MB_SUBJECT_BAD_CHAR);
                snprintf(want, sizeof want, "at byte %zu outside", at);
                assert_non_null(strstr(err.msg, want));
                v[at] = saved;
            }
        }
    }
}

static void test_build_params(void **state)
{
    mb_subject_registry *r = *state;
    char buf[MB_SUBJECT_MAX + 1];
    mb_subject_reason why;
    mb_err err = {0};

    assert_int_equal(
        mb_subject_build(r, "chat_say_room", NULL, 0, buf, sizeof buf, NULL, &why, &err),
        MB_ESUBJECT);
    assert_int_equal(why, MB_SUBJECT_MISSING_PARAM);
    assert_string_equal(err.msg, "chat_say_room: parameter room_id missing");
    assert_string_equal(buf, "");

    mb_err_clear(&err);
    mb_subject_param two[] = {{"room_id", "r1"}, {"colour", "red"}};
    assert_int_equal(
        mb_subject_build(r, "chat_say_room", two, 2, buf, sizeof buf, NULL, &why, &err),
        MB_ESUBJECT);
    assert_int_equal(why, MB_SUBJECT_UNEXPECTED_PARAM);
    assert_string_equal(err.msg,
                        "chat_say_room: unexpected parameter colour (pattern has no {colour})");
    assert_string_equal(buf, "");

    mb_err_clear(&err);
    mb_subject_param dup[] = {{"room_id", "r1"}, {"room_id", "r2"}};
    assert_int_equal(
        mb_subject_build(r, "chat_say_room", dup, 2, buf, sizeof buf, NULL, &why, &err),
        MB_ESUBJECT);
    assert_int_equal(why, MB_SUBJECT_DUPLICATE_PARAM);
    assert_non_null(strstr(err.msg, "room_id"));
    assert_string_equal(buf, "");

    /* A pattern without placeholders takes no parameters. */
    size_t len = 0;
    assert_int_equal(mb_subject_build(r, "chat_global", NULL, 0, buf, sizeof buf, &len, &why, NULL),
                     MB_OK);
    assert_string_equal(buf, "chat.global");
    assert_int_equal(len, 11);
    mb_err_clear(&err);
    assert_int_equal(build1(r, "chat_global", "room_id", "r1", buf, &why, &err), MB_ESUBJECT);
    assert_int_equal(why, MB_SUBJECT_UNEXPECTED_PARAM);

    /* A hostile parameter name is printed safely. */
    mb_err_clear(&err);
    assert_int_equal(build1(r, "chat_say_room", "x\n\x7f", "r1", buf, &why, &err), MB_ESUBJECT);
    assert_int_equal(why, MB_SUBJECT_UNEXPECTED_PARAM);
    assert_null(strchr(err.msg, '\n'));
    assert_non_null(strstr(err.msg, "x\\x0a\\x7f"));

    /* NULL arguments. */
    mb_subject_param nul = {"room_id", NULL};
    assert_int_equal(
        mb_subject_build(r, "chat_say_room", &nul, 1, buf, sizeof buf, NULL, &why, NULL),
        MB_EINVAL);
    assert_string_equal(buf, "");
    assert_int_equal(mb_subject_build(r, NULL, NULL, 0, buf, sizeof buf, NULL, NULL, NULL),
                     MB_EINVAL);
    assert_int_equal(mb_subject_build(r, "chat_global", NULL, 1, buf, sizeof buf, NULL, NULL, NULL),
                     MB_EINVAL);
}

static void test_build_unknown_and_space(void **state)
{
    mb_subject_registry *r = *state;
    char buf[MB_SUBJECT_MAX + 1] = "junk";
    mb_subject_reason why;
    mb_err err = {0};
    assert_int_equal(build1(r, "chat_shout", "room_id", "r1", buf, &why, &err), MB_ENOTFOUND);
    assert_int_equal(why, MB_SUBJECT_UNKNOWN_PATTERN);
    assert_string_equal(buf, "");
    assert_non_null(strstr(err.msg, "chat_shout"));
    char longname[200];
    memset(longname, 'n', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    assert_int_equal(build1(r, longname, "room_id", "r1", buf, &why, NULL), MB_ENOTFOUND);

    /* "chat.say.room.r1" is 16 bytes: 17 fit, 16 do not. */
    mb_subject_param p = {"room_id", "r1"};
    char small[17];
    mb_err_clear(&err);
    assert_int_equal(mb_subject_build(r, "chat_say_room", &p, 1, small, 16, NULL, &why, &err),
                     MB_ENOSPC);
    assert_string_equal(small, "");
    assert_int_equal(err.code, MB_ENOSPC);
    assert_int_equal(mb_subject_build(r, "chat_say_room", &p, 1, small, 0, NULL, &why, NULL),
                     MB_ENOSPC);
    size_t len = 0;
    assert_int_equal(mb_subject_build(r, "chat_say_room", &p, 1, small, 17, &len, &why, NULL),
                     MB_OK);
    assert_string_equal(small, "chat.say.room.r1");
    assert_int_equal(len, 16);
}

static void test_build_result_too_long(void **state)
{
    mb_subject_registry *r = *state;
    assert_int_equal(mb_subject_register(r, "big_one", "big.{a}.{b}.{c}", MB_SCHEMA_EVENT, NULL),
                     MB_OK);
    char v[129];
    memset(v, 'v', 128);
    v[128] = '\0';
    mb_subject_param p[] = {{"c", v}, {"a", v}, {"b", v}};
    char buf[MB_SUBJECT_MAX + 1];
    mb_subject_reason why;
    mb_err err = {0};
    assert_int_equal(mb_subject_build(r, "big_one", p, 3, buf, sizeof buf, NULL, &why, &err),
                     MB_ESUBJECT);
    assert_int_equal(why, MB_SUBJECT_TOO_LONG);
    assert_string_equal(buf, "");
    assert_string_equal(err.msg, "big_one: subject of 390 bytes exceeds 255");

    /* 3 + 3 dots + 120 + 128 + 1 = 255 bytes exactly is fine, in template order. */
    char v120[121];
    memset(v120, 'w', 120);
    v120[120] = '\0';
    mb_subject_param q[] = {{"c", "z"}, {"b", v}, {"a", v120}};
    size_t len = 0;
    assert_int_equal(mb_subject_build(r, "big_one", q, 3, buf, sizeof buf, &len, &why, NULL),
                     MB_OK);
    assert_int_equal(len, 255);
    assert_memory_equal(buf, "big.www", 7);
    assert_string_equal(buf + 254, "z");
    mb_subject_info info;
    assert_int_equal(mb_subject_check(r, buf, len, &info, &why, NULL), MB_OK);
    assert_string_equal(info.name, "big_one");
}

/* ---- registration ---- */

static void test_register_refusals(void **state)
{
    mb_subject_registry *r = *state;
    char long_pat[300], long_lit[140], name65[66];
    memset(long_pat, 'a', sizeof long_pat - 1);
    long_pat[sizeof long_pat - 1] = '\0';
    memcpy(long_lit, "x.", 2);
    memset(long_lit + 2, 'l', 129);
    long_lit[131] = '\0';
    memset(name65, 'n', 65);
    name65[65] = '\0';
    static const char long_ph[] = "x.{a23456789012345678901234567890123}";
    const struct {
        const char *name;
        const char *pattern;
        mb_schema_kind schema;
        mb_status st;
        const char *msg; /* substring */
    } cases[] = {
        {"chat_say_room", "other.{room_id}", MB_SCHEMA_CHAT, MB_EEXIST, "chat_say_room"},
        {"my_say", "chat.say.room.{x}", MB_SCHEMA_CHAT, MB_EEXIST,
         "same subjects as chat_say_room"},
        {"my_global", "chat.global", MB_SCHEMA_CHAT, MB_EEXIST, "chat_global"},
        {"p1", "", MB_SCHEMA_CHAT, MB_EPATTERN, "empty"},
        {"p1", "a..b", MB_SCHEMA_CHAT, MB_EPATTERN, "token 2 is empty"},
        {"p1", ".a", MB_SCHEMA_CHAT, MB_EPATTERN, "token 1 is empty"},
        {"p1", "a.", MB_SCHEMA_CHAT, MB_EPATTERN, "token 2 is empty"},
        {"p1", "{", MB_SCHEMA_CHAT, MB_EPATTERN, "unterminated placeholder"},
        {"p1", "a.{x", MB_SCHEMA_CHAT, MB_EPATTERN, "unterminated placeholder"},
        {"p1", "a.{x.y}", MB_SCHEMA_CHAT, MB_EPATTERN, "unterminated placeholder"},
        {"p1", "a{x}", MB_SCHEMA_CHAT, MB_EPATTERN, "whole token"},
        {"p1", "a.x}", MB_SCHEMA_CHAT, MB_EPATTERN, "whole token"},
        {"p1", "a.{X}", MB_SCHEMA_CHAT, MB_EPATTERN, "placeholder name"},
        {"p1", "a.{1x}", MB_SCHEMA_CHAT, MB_EPATTERN, "placeholder name"},
        {"p1", "a.{}", MB_SCHEMA_CHAT, MB_EPATTERN, "placeholder name"},
        {"p1", long_ph, MB_SCHEMA_CHAT, MB_EPATTERN, "placeholder name"},
        {"p1", "a.{x}.{x}", MB_SCHEMA_CHAT, MB_EPATTERN, "appears twice"},
        {"p1", "a.b c", MB_SCHEMA_CHAT, MB_EPATTERN, "character ' '"},
        {"p1", "a.*", MB_SCHEMA_CHAT, MB_EPATTERN, "character '*'"},
        {"p1", "a.>", MB_SCHEMA_CHAT, MB_EPATTERN, "character '>'"},
        {"p1", "a.caf\xc3\xa9", MB_SCHEMA_CHAT, MB_EPATTERN, "'\\xc3'"},
        {"p1", long_pat, MB_SCHEMA_CHAT, MB_EPATTERN, "exceeds 255 bytes"},
        {"p1", long_lit, MB_SCHEMA_CHAT, MB_EPATTERN, "literal of 129 bytes exceeds 128"},
        {"", "a.b", MB_SCHEMA_CHAT, MB_EINVAL, "name"},
        {"Bad", "a.b", MB_SCHEMA_CHAT, MB_EINVAL, "name"},
        {"bad-name", "a.b", MB_SCHEMA_CHAT, MB_EINVAL, "name"},
        {"bad name", "a.b", MB_SCHEMA_CHAT, MB_EINVAL, "name"},
        {name65, "a.b", MB_SCHEMA_CHAT, MB_EINVAL, "name"},
        {"p1", "a.b", MB_SCHEMA_AUTO, MB_EINVAL, "schema"},
        {"p1", "a.b", (mb_schema_kind)7, MB_EINVAL, "schema"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        mb_err err = {0};
        mb_status st =
            mb_subject_register(r, cases[i].name, cases[i].pattern, cases[i].schema, &err);
        if (st != cases[i].st || strstr(err.msg, cases[i].msg) == NULL)
            fail_msg("case %zu (%s): got %s '%s'", i, cases[i].pattern, mb_status_name(st),
                     err.msg);
        assert_int_equal(mb_subject_count(r), NCONTRACT);
    }
    assert_int_equal(mb_subject_register(r, NULL, "a.b", MB_SCHEMA_CHAT, NULL), MB_EINVAL);
    assert_int_equal(mb_subject_register(r, "p1", NULL, MB_SCHEMA_CHAT, NULL), MB_EINVAL);
    assert_int_equal(mb_subject_register(NULL, "p1", "a.b", MB_SCHEMA_CHAT, NULL), MB_EINVAL);
    /* Nothing was registered by the refusals. */
    assert_int_equal(mb_subject_lookup(r, "p1", NULL, NULL), MB_ENOTFOUND);
    assert_int_equal(check_str(r, "a.b", NULL, NULL, NULL), MB_ESUBJECT);
}

static void test_register_and_use(void **state)
{
    mb_subject_registry *r = *state;
    mb_err err = {0};
    assert_int_equal(mb_subject_register(r, "guild_chat", "chat.guild.{guild_id}.{channel}",
                                         MB_SCHEMA_CHAT, &err),
                     MB_OK);
    assert_int_equal(mb_subject_count(r), NCONTRACT + 1);
    mb_subject_info info;
    assert_int_equal(mb_subject_at(r, NCONTRACT, &info), MB_OK);
    assert_string_equal(info.name, "guild_chat");
    assert_string_equal(info.pattern, "chat.guild.{guild_id}.{channel}");
    assert_int_equal(info.schema, MB_SCHEMA_CHAT);

    mb_subject_param p[] = {{"channel", "officers"}, {"guild_id", "g-42"}};
    char buf[MB_SUBJECT_MAX + 1];
    size_t len;
    assert_int_equal(mb_subject_build(r, "guild_chat", p, 2, buf, sizeof buf, &len, NULL, &err),
                     MB_OK);
    assert_string_equal(buf, "chat.guild.g-42.officers");
    mb_subject_reason why;
    assert_int_equal(mb_subject_check(r, buf, len, &info, &why, &err), MB_OK);
    assert_string_equal(info.name, "guild_chat");
    /* A pattern that differs from an existing one only in a literal is fine. */
    assert_int_equal(mb_subject_register(r, "guild_news", "chat.guild.{guild_id}.news.{x}",
                                         MB_SCHEMA_EVENT, &err),
                     MB_OK);
    assert_int_equal(check_str(r, "chat.guild.g1.news.n1", &info, &why, NULL), MB_OK);
    assert_string_equal(info.name, "guild_news");
    assert_int_equal(info.schema, MB_SCHEMA_EVENT);
    assert_int_equal(check_str(r, "chat.guild.g1.news", &info, &why, NULL), MB_OK);
    assert_string_equal(info.name, "guild_chat");
    /* Pointers from an older snapshot stay valid. */
    mb_subject_info old;
    assert_int_equal(mb_subject_at(r, 0, &old), MB_OK);
    assert_int_equal(mb_subject_register(r, "extra", "extra", MB_SCHEMA_EVENT, NULL), MB_OK);
    assert_string_equal(old.name, "chat_say_room");
}

/* Overlapping patterns: the most specific one wins, and a failing literal
 * branch falls back to the placeholder. */
static void test_overlap_and_backtracking(void **state)
{
    mb_subject_registry *r = *state;
    assert_int_equal(mb_subject_register(r, "lobby", "chat.say.room.lobby", MB_SCHEMA_EVENT, NULL),
                     MB_OK);
    mb_subject_info info;
    assert_int_equal(check_str(r, "chat.say.room.lobby", &info, NULL, NULL), MB_OK);
    assert_string_equal(info.name, "lobby");
    assert_int_equal(check_str(r, "chat.say.room.lobby2", &info, NULL, NULL), MB_OK);
    assert_string_equal(info.name, "chat_say_room");

    assert_int_equal(mb_subject_register(r, "lit", "a.x.b", MB_SCHEMA_EVENT, NULL), MB_OK);
    assert_int_equal(mb_subject_register(r, "ph", "a.{p}.c", MB_SCHEMA_EVENT, NULL), MB_OK);
    assert_int_equal(check_str(r, "a.x.b", &info, NULL, NULL), MB_OK);
    assert_string_equal(info.name, "lit");
    assert_int_equal(check_str(r, "a.x.c", &info, NULL, NULL), MB_OK);
    assert_string_equal(info.name, "ph");
    assert_int_equal(check_str(r, "a.y.c", &info, NULL, NULL), MB_OK);
    assert_string_equal(info.name, "ph");
    assert_int_equal(check_str(r, "a.y.b", NULL, NULL, NULL), MB_ESUBJECT);
    assert_int_equal(check_str(r, "a.x", NULL, NULL, NULL), MB_ESUBJECT);
    assert_int_equal(check_str(r, "a", NULL, NULL, NULL), MB_ESUBJECT);
}

static void test_register_full(void **state)
{
    mb_subject_registry *r = *state;
    char name[32], pat[32];
    size_t i = 0;
    while (mb_subject_count(r) < MB_SUBJECT_MAX_PATTERNS) {
        snprintf(name, sizeof name, "fill_%zu", i);
        snprintf(pat, sizeof pat, "fill.f%zu.{id}", i);
        assert_int_equal(mb_subject_register(r, name, pat, MB_SCHEMA_EVENT, NULL), MB_OK);
        i++;
    }
    assert_int_equal(i, MB_SUBJECT_MAX_PATTERNS - NCONTRACT);
    mb_err err = {0};
    assert_int_equal(mb_subject_register(r, "one_more", "one.more", MB_SCHEMA_EVENT, &err),
                     MB_ENOSPC);
    assert_non_null(strstr(err.msg, "one_more"));
    assert_int_equal(mb_subject_count(r), MB_SUBJECT_MAX_PATTERNS);
    assert_int_equal(mb_subject_lookup(r, "one_more", NULL, NULL), MB_ENOTFOUND);
    /* Everything registered is still found, first and last. */
    mb_subject_info info;
    assert_int_equal(check_str(r, "fill.f0.x", &info, NULL, NULL), MB_OK);
    assert_string_equal(info.name, "fill_0");
    snprintf(pat, sizeof pat, "fill.f%zu.x", i - 1);
    assert_int_equal(check_str(r, pat, &info, NULL, NULL), MB_OK);
    assert_int_equal(check_str(r, "chat.say.room.r1", &info, NULL, NULL), MB_OK);
    assert_string_equal(info.name, "chat_say_room");
}

/* ---- checking ---- */

static void test_check_reasons(void **state)
{
    mb_subject_registry *r = *state;
    char long_subj[300], long_tok[160];
    memset(long_subj, 'a', sizeof long_subj - 1);
    long_subj[sizeof long_subj - 1] = '\0';
    memcpy(long_tok, "chat.say.room.", 14);
    memset(long_tok + 14, 't', 129);
    long_tok[14 + 129] = '\0';
    const struct {
        const char *s;
        mb_subject_reason why;
    } cases[] = {
        {"", MB_SUBJECT_EMPTY_TOKEN},
        {long_subj, MB_SUBJECT_TOO_LONG},
        {".chat.global", MB_SUBJECT_EMPTY_TOKEN},
        {"chat.global.", MB_SUBJECT_EMPTY_TOKEN},
        {"chat..global", MB_SUBJECT_EMPTY_TOKEN},
        {".", MB_SUBJECT_EMPTY_TOKEN},
        {"chat.say.room.*", MB_SUBJECT_BAD_CHAR},
        {"chat.say.room.>", MB_SUBJECT_BAD_CHAR},
        {"chat.say.room.a b", MB_SUBJECT_BAD_CHAR},
        {"chat.say.room.caf\xc3\xa9", MB_SUBJECT_BAD_CHAR},
        {"chat.say.room.a\tb", MB_SUBJECT_BAD_CHAR},
        {"chat.say.room.a\x7f", MB_SUBJECT_BAD_CHAR},
        {long_tok, MB_SUBJECT_TOKEN_TOO_LONG},
        {"chat.say.room", MB_SUBJECT_NO_MATCH},
        {"chat.say.room.r1.extra", MB_SUBJECT_NO_MATCH},
        {"chat.shout.room.r1", MB_SUBJECT_NO_MATCH},
        {"Chat.global", MB_SUBJECT_NO_MATCH},
        {"chat", MB_SUBJECT_NO_MATCH},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        mb_err err = {0};
        mb_subject_reason why = MB_SUBJECT_OK;
        mb_subject_info info = {0};
        assert_int_equal(check_str(r, cases[i].s, &info, &why, &err), MB_ESUBJECT);
        if (why != cases[i].why)
            fail_msg("case %zu: reason %s, want %s (%s)", i, mb_subject_reason_name(why),
                     mb_subject_reason_name(cases[i].why), err.msg);
        assert_int_equal(err.code, MB_ESUBJECT);
        assert_null(info.name);
        assert_true(strlen(err.msg) > 0);
    }
    mb_err err = {0};
    assert_int_equal(check_str(r, "chat.say.room", NULL, NULL, &err), MB_ESUBJECT);
    assert_string_equal(err.msg, "subject 'chat.say.room': matches no registered pattern");

    /* Length counts, not the NUL: an embedded NUL is a bad character, and
     * bytes past len are not read. */
    mb_subject_reason why;
    assert_int_equal(mb_subject_check(r, "chat.global\0x", 13, NULL, &why, NULL), MB_ESUBJECT);
    assert_int_equal(why, MB_SUBJECT_BAD_CHAR);
    assert_int_equal(mb_subject_check(r, "chat.globalXYZ", 11, NULL, &why, NULL), MB_OK);
    assert_int_equal(mb_subject_check(r, NULL, 0, NULL, &why, NULL), MB_ESUBJECT);
    assert_int_equal(why, MB_SUBJECT_EMPTY_TOKEN);
    assert_int_equal(mb_subject_check(r, NULL, 3, NULL, &why, NULL), MB_EINVAL);
    assert_int_equal(mb_subject_check(NULL, "a", 1, NULL, &why, NULL), MB_EINVAL);
}

static void test_check_message_is_safe(void **state)
{
    mb_subject_registry *r = *state;
    char hostile[255];
    for (size_t i = 0; i < sizeof hostile; i++)
        hostile[i] = (char)(i % 2 ? '\n' : '\x9b');
    mb_err err = {0};
    mb_subject_reason why;
    assert_int_equal(mb_subject_check(r, hostile, sizeof hostile, NULL, &why, &err), MB_ESUBJECT);
    assert_int_equal(why, MB_SUBJECT_BAD_CHAR);
    for (const char *p = err.msg; *p; p++)
        assert_true(*p >= 0x20 && *p < 0x7f);
    assert_non_null(strstr(err.msg, "..."));
    assert_non_null(strstr(err.msg, "outside [A-Za-z0-9_-]"));

    mb_err_clear(&err);
    assert_int_equal(check_str(r, "chat.say.it's", NULL, &why, &err), MB_ESUBJECT);
    assert_non_null(strstr(err.msg, "'chat.say.it\\'s'"));
}

static void test_check_sub(void **state)
{
    mb_subject_registry *r = *state;
    static const char *const ok[] = {
        "chat.say.room.*", "chat.*.room.*", "chat.say.room.r1", "chat.>",
        "chat.*.>",        "events.*",      "chat.global",      "combat.*.r1",
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        mb_err err = {0};
        mb_subject_reason why = MB_SUBJECT_NO_MATCH;
        if (mb_subject_check_sub(r, ok[i], strlen(ok[i]), &why, &err) != MB_OK)
            fail_msg("'%s' refused: %s", ok[i], err.msg);
        assert_int_equal(why, MB_SUBJECT_OK);
    }
    char long_sub[300], long_lit[140];
    memset(long_sub, 'a', sizeof long_sub - 1);
    long_sub[sizeof long_sub - 1] = '\0';
    memcpy(long_lit, "x.", 2);
    memset(long_lit + 2, 'l', 129);
    long_lit[131] = '\0';
    const struct {
        const char *s;
        mb_subject_reason why;
        const char *msg;
    } bad[] = {
        {"*", MB_SUBJECT_ALL_WILDCARDS, "every token is a wildcard"},
        {">", MB_SUBJECT_ALL_WILDCARDS, "every token is a wildcard"},
        {"*.*", MB_SUBJECT_ALL_WILDCARDS, "every token is a wildcard"},
        {"*.>", MB_SUBJECT_ALL_WILDCARDS, "every token is a wildcard"},
        {"*.chat", MB_SUBJECT_WILDCARD_FIRST, "first token is a wildcard"},
        {">.chat", MB_SUBJECT_WILDCARD_FIRST, "first token is a wildcard"},
        {"chat.*.*.*", MB_SUBJECT_TOO_MANY_WILDCARDS, "3 wildcard tokens exceed 2"},
        {"chat.*.*.>", MB_SUBJECT_TOO_MANY_WILDCARDS, "3 wildcard tokens exceed 2"},
        {"chat.>.room", MB_SUBJECT_GT_NOT_LAST, "may only be the last"},
        {"chat.>.>", MB_SUBJECT_GT_NOT_LAST, "may only be the last"},
        {"chat.a*", MB_SUBJECT_WILDCARD_IN_TOKEN, "whole token"},
        {"chat.*a", MB_SUBJECT_WILDCARD_IN_TOKEN, "whole token"},
        {"chat.**", MB_SUBJECT_WILDCARD_IN_TOKEN, "whole token"},
        {"chat.a>b", MB_SUBJECT_WILDCARD_IN_TOKEN, "whole token"},
        {"chat.a b", MB_SUBJECT_BAD_CHAR, "character ' '"},
        {"chat.caf\xc3\xa9", MB_SUBJECT_BAD_CHAR, "'\\xc3'"},
        {"chat..room", MB_SUBJECT_EMPTY_TOKEN, "empty token"},
        {"chat.", MB_SUBJECT_EMPTY_TOKEN, "empty token"},
        {".chat", MB_SUBJECT_EMPTY_TOKEN, "empty token"},
        {"", MB_SUBJECT_EMPTY_TOKEN, "empty"},
        {long_sub, MB_SUBJECT_TOO_LONG, "exceeds 255"},
        {long_lit, MB_SUBJECT_TOKEN_TOO_LONG, "129 bytes exceeds 128"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        mb_err err = {0};
        mb_subject_reason why = MB_SUBJECT_OK;
        assert_int_equal(mb_subject_check_sub(r, bad[i].s, strlen(bad[i].s), &why, &err),
                         MB_ESUBJECT);
        if (why != bad[i].why || strstr(err.msg, bad[i].msg) == NULL)
            fail_msg("'%s': %s '%s'", bad[i].s, mb_subject_reason_name(why), err.msg);
    }
    mb_subject_reason why;
    assert_int_equal(mb_subject_check_sub(r, NULL, 1, &why, NULL), MB_EINVAL);
}

/* ---- rooms ---- */

static void test_room_subzone(void **state)
{
    (void)state;
    char buf[MB_SUBJECT_TOKEN_MAX + 1];
    assert_int_equal(mb_subject_room_subzone("earth_arkham_city_library", buf, sizeof buf, NULL),
                     MB_OK);
    assert_string_equal(buf, "city");
    assert_int_equal(mb_subject_room_subzone("a_b_c", buf, sizeof buf, NULL), MB_OK);
    assert_string_equal(buf, "c");
    assert_int_equal(mb_subject_room_subzone("a_b_c_d_e", buf, sizeof buf, NULL), MB_OK);
    assert_string_equal(buf, "c");
    assert_int_equal(mb_subject_room_subzone("a_b", buf, sizeof buf, NULL), MB_OK);
    assert_string_equal(buf, "unknown");
    assert_int_equal(mb_subject_room_subzone("lobby", buf, sizeof buf, NULL), MB_OK);
    assert_string_equal(buf, "unknown");
    assert_int_equal(mb_subject_room_subzone("a_b__d", buf, sizeof buf, NULL), MB_OK);
    assert_string_equal(buf, "unknown");

    mb_err err = {0};
    strcpy(buf, "junk");
    assert_int_equal(mb_subject_room_subzone("a.b", buf, sizeof buf, &err), MB_ESUBJECT);
    assert_string_equal(buf, "");
    assert_non_null(strstr(err.msg, "character '.'"));
    assert_int_equal(mb_subject_room_subzone("", buf, sizeof buf, NULL), MB_ESUBJECT);
    char big[200];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    mb_err_clear(&err);
    assert_int_equal(mb_subject_room_subzone(big, buf, sizeof buf, &err), MB_ESUBJECT);
    assert_non_null(strstr(err.msg, "199 bytes exceeds 128"));

    char small[4];
    assert_int_equal(mb_subject_room_subzone("earth_arkham_city_x", small, sizeof small, NULL),
                     MB_ENOSPC);
    assert_string_equal(small, "");
    char fit[5];
    assert_int_equal(mb_subject_room_subzone("earth_arkham_city_x", fit, sizeof fit, NULL), MB_OK);
    assert_string_equal(fit, "city");
    assert_int_equal(mb_subject_room_subzone(NULL, buf, sizeof buf, NULL), MB_EINVAL);
}

/* ---- metrics ---- */

/* The value of one sample line `<series> <value>` in the exposition; -1 when
 * the series is absent. */
static double sample(mb_metrics *m, const char *series)
{
    char *text = NULL;
    size_t len = 0;
    if (mb_metrics_format(m, &text, &len, NULL) != MB_OK)
        return -2;
    double v = -1;
    size_t sl = strlen(series);
    for (const char *line = text; line != NULL && *line; line = strchr(line, '\n')) {
        if (*line == '\n')
            line++;
        if (strncmp(line, series, sl) == 0 && line[sl] == ' ') {
            v = strtod(line + sl + 1, NULL);
            break;
        }
    }
    free(text);
    return v;
}

static void test_metrics(void **state)
{
    mb_subject_registry *r = *state;
    mb_metrics *m = mb_subject_registry_metrics(r);
    assert_non_null(m);
    assert_true(sample(m, "mudbus_subject_builds_total") == 0);
    assert_true(sample(m, "mudbus_subject_failures_total{reason=\"bad_char\"}") == 0);
    assert_true(sample(m, "mudbus_subject_failures_total{reason=\"wildcard_in_token\"}") == 0);

    char buf[MB_SUBJECT_MAX + 1];
    for (int i = 0; i < 5; i++)
        assert_int_equal(build1(r, "chat_say_room", "room_id", "r1", buf, NULL, NULL), MB_OK);
    assert_int_equal(build1(r, "chat_say_room", "room_id", "a.b", buf, NULL, NULL), MB_ESUBJECT);
    assert_int_equal(build1(r, "nope", "room_id", "r1", buf, NULL, NULL), MB_ENOTFOUND);
    for (int i = 0; i < 3; i++)
        assert_int_equal(check_str(r, "chat.global", NULL, NULL, NULL), MB_OK);
    assert_int_equal(check_str(r, "chat.say", NULL, NULL, NULL), MB_ESUBJECT);
    assert_int_equal(mb_subject_check_sub(r, "chat.*", 6, NULL, NULL), MB_OK);
    assert_int_equal(mb_subject_check_sub(r, "*", 1, NULL, NULL), MB_ESUBJECT);

    assert_true(sample(m, "mudbus_subject_builds_total") == 7);
    assert_true(sample(m, "mudbus_subject_build_seconds_count") == 7);
    assert_true(sample(m, "mudbus_subject_checks_total") == 4);
    assert_true(sample(m, "mudbus_subject_check_seconds_count") == 4);
    assert_true(sample(m, "mudbus_subject_check_seconds_sum") > 0);
    assert_true(sample(m, "mudbus_subject_sub_checks_total") == 2);
    assert_true(sample(m, "mudbus_subject_failures_total{reason=\"bad_char\"}") == 1);
    assert_true(sample(m, "mudbus_subject_failures_total{reason=\"unknown_pattern\"}") == 1);
    assert_true(sample(m, "mudbus_subject_failures_total{reason=\"no_match\"}") == 1);
    assert_true(sample(m, "mudbus_subject_failures_total{reason=\"all_wildcards\"}") == 1);
    assert_true(sample(m, "mudbus_subject_failures_total{reason=\"missing_param\"}") == 0);

    char *text = NULL;
    assert_int_equal(mb_metrics_format(m, &text, NULL, NULL), MB_OK);
    assert_non_null(strstr(text, "# TYPE mudbus_subject_builds_total counter"));
    assert_non_null(strstr(text, "# TYPE mudbus_subject_failures_total counter"));
    assert_non_null(strstr(text, "# TYPE mudbus_subject_build_seconds histogram"));
    assert_non_null(strstr(text, "# TYPE mudbus_subject_check_seconds histogram"));
    /* One HELP per family, however many reasons. */
    const char *h = strstr(text, "# HELP mudbus_subject_failures_total");
    assert_non_null(h);
    assert_null(strstr(h + 1, "# HELP mudbus_subject_failures_total"));
    free(text);
}

static void test_metrics_shared_registry(void **state)
{
    (void)state;
    mb_metrics *m = NULL;
    assert_int_equal(mb_metrics_create(&m, NULL), MB_OK);
    mb_subject_registry *a = NULL, *b = NULL;
    assert_int_equal(mb_subject_registry_create(m, &a, NULL), MB_OK);
    assert_ptr_equal(mb_subject_registry_metrics(a), m);
    mb_err err = {0};
    assert_int_equal(mb_subject_registry_create(m, &b, &err), MB_EEXIST);
    assert_null(b);
    assert_int_equal(check_str(a, "chat.system", NULL, NULL, NULL), MB_OK);
    assert_true(sample(m, "mudbus_subject_checks_total") == 1);
    mb_subject_registry_destroy(a);
    mb_metrics_destroy(m); /* the caller's registry outlives the subject registry */
    mb_subject_registry_destroy(NULL);
    assert_int_equal(mb_subject_registry_create(NULL, NULL, NULL), MB_EINVAL);
}

/* ---- threads ---- */

#define NTHREADS  4
#define NREGISTER 200

typedef struct shared {
    mb_subject_registry *r;
    _Atomic int started;
    _Atomic int done;
    _Atomic int published; /* test_p0 .. test_p(published-1) are registered */
    _Atomic long checks;
    _Atomic long failures;
} shared;

static void *checker(void *arg)
{
    shared *sh = arg;
    static const struct {
        const char *s;
        const char *name;
    } pre[] = {
        {"chat.say.room.earth_arkham_city_library", "chat_say_room"},
        {"chat.global", "chat_global"},
        {"events.game_tick", "event_game_tick"},
        {"combat.dp_update.p-1", "combat_dp_update"},
        {"mutes.changed.player_9", "mutes_changed"},
        {"events.domain.weather", "event_domain"},
    };
    atomic_fetch_add(&sh->started, 1);
    unsigned seed = 12345;
    long n = 0;
    while (!atomic_load(&sh->done)) {
        mb_subject_info info;
        mb_err err = {0};
        size_t k = (size_t)n % (sizeof pre / sizeof pre[0]);
        if (check_str(sh->r, pre[k].s, &info, NULL, &err) != MB_OK ||
            strcmp(info.name, pre[k].name) != 0)
            atomic_fetch_add(&sh->failures, 1);
        int pub = atomic_load_explicit(&sh->published, memory_order_acquire);
        if (pub > 0) {
            seed = seed * 1103515245u + 12345u;
            int j = (int)((seed >> 8) % (unsigned)pub);
            char subj[64], want[32];
            snprintf(subj, sizeof subj, "test.p%d.x%ld", j, n);
            snprintf(want, sizeof want, "test_p%d", j);
            if (check_str(sh->r, subj, &info, NULL, NULL) != MB_OK || strcmp(info.name, want) != 0)
                atomic_fetch_add(&sh->failures, 1);
        }
        n++;
    }
    atomic_fetch_add(&sh->checks, n);
    return NULL;
}

static void test_concurrent_register(void **state)
{
    shared sh = {.r = *state};
    pthread_t th[NTHREADS];
    for (int i = 0; i < NTHREADS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, checker, &sh), 0);
    while (atomic_load(&sh.started) < NTHREADS)
        ;
    for (int i = 0; i < NREGISTER; i++) {
        char name[32], pat[32], subj[32];
        snprintf(name, sizeof name, "test_p%d", i);
        snprintf(pat, sizeof pat, "test.p%d.{id}", i);
        assert_int_equal(mb_subject_register(sh.r, name, pat, MB_SCHEMA_EVENT, NULL), MB_OK);
        snprintf(subj, sizeof subj, "test.p%d.y", i);
        mb_subject_info info;
        assert_int_equal(check_str(sh.r, subj, &info, NULL, NULL), MB_OK);
        assert_string_equal(info.name, name);
        atomic_store_explicit(&sh.published, i + 1, memory_order_release);
    }
    atomic_store(&sh.done, 1);
    for (int i = 0; i < NTHREADS; i++)
        pthread_join(th[i], NULL);
    assert_int_equal(atomic_load(&sh.failures), 0);
    assert_true(atomic_load(&sh.checks) > 0);
    assert_int_equal(mb_subject_count(sh.r), NCONTRACT + NREGISTER);
}

/* ---- no per-subject state ---- */

/* The memo of the last subject (per thread) never answers for another
 * snapshot or registry: a built subject resolves to the most specific
 * pattern, also right after a registration that changes the answer. */
static void test_memo_follows_registrations(void **state)
{
    mb_subject_registry *r = *state;
    char buf[MB_SUBJECT_MAX + 1];
    mb_subject_info info;
    assert_int_equal(build1(r, "chat_say_room", "room_id", "vip", buf, NULL, NULL), MB_OK);
    assert_int_equal(check_str(r, buf, &info, NULL, NULL), MB_OK);
    assert_string_equal(info.name, "chat_say_room");
    assert_int_equal(check_str(r, buf, &info, NULL, NULL), MB_OK);
    assert_string_equal(info.name, "chat_say_room");
    assert_int_equal(mb_subject_register(r, "vip", "chat.say.room.vip", MB_SCHEMA_EVENT, NULL),
                     MB_OK);
    assert_int_equal(check_str(r, buf, &info, NULL, NULL), MB_OK);
    assert_string_equal(info.name, "vip");
    assert_int_equal(info.schema, MB_SCHEMA_EVENT);
    /* Built from the general pattern, the subject still resolves to the
     * specific one. */
    assert_int_equal(build1(r, "chat_say_room", "room_id", "vip", buf, NULL, NULL), MB_OK);
    assert_int_equal(check_str(r, buf, &info, NULL, NULL), MB_OK);
    assert_string_equal(info.name, "vip");
    /* Another registry on this thread: its own answer (no such pattern). */
    mb_subject_registry *r2 = NULL;
    assert_int_equal(mb_subject_registry_create(NULL, &r2, NULL), MB_OK);
    assert_int_equal(check_str(r2, buf, &info, NULL, NULL), MB_OK);
    assert_string_equal(info.name, "chat_say_room");
    assert_int_equal(check_str(r, buf, &info, NULL, NULL), MB_OK);
    assert_string_equal(info.name, "vip");
    /* A subject of the same length that differs only in a separator. */
    assert_int_equal(check_str(r2, "chat.say.room-vip", NULL, NULL, NULL), MB_ESUBJECT);
    mb_subject_registry_destroy(r2);
    /* Checks on a hit are counted as checks. */
    assert_true(sample(mb_subject_registry_metrics(r), "mudbus_subject_checks_total") == 5);
}

static size_t heap_in_use(void)
{
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
    return mallinfo2().uordblks;
#else
    return 0;
#endif
}

/* 100,000 distinct room subjects all check correctly, and the heap in use
 * does not grow while they are checked: nothing is remembered per subject. */
static void test_no_cache(void **state)
{
    mb_subject_registry *r = *state;
    char subj[64];
    mb_subject_info info;
    /* Warm up anything lazily allocated (e.g. by the clock or libc). */
    assert_int_equal(check_str(r, "chat.say.room.warmup", &info, NULL, NULL), MB_OK);
    size_t before = heap_in_use();
    for (int i = 0; i < 100000; i++) {
        int n = snprintf(subj, sizeof subj, "chat.say.room.earth_zone%d_sub_room%d", i % 97, i);
        mb_subject_reason why;
        assert_int_equal(mb_subject_check(r, subj, (size_t)n, &info, &why, NULL), MB_OK);
        assert_string_equal(info.name, "chat_say_room");
        /* A near miss of each one must still fail: no stale positive answers. */
        subj[5] = 'S';
        assert_int_equal(mb_subject_check(r, subj, (size_t)n, NULL, &why, NULL), MB_ESUBJECT);
        assert_int_equal(why, MB_SUBJECT_NO_MATCH);
    }
    size_t after = heap_in_use();
    assert_true(after <= before + 4096);
    assert_true(sample(mb_subject_registry_metrics(r), "mudbus_subject_checks_total") == 200001);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_builtin_patterns, setup, teardown),
        cmocka_unit_test(test_reason_names),
        cmocka_unit_test_setup_teardown(test_build_hostile_values, setup, teardown),
        cmocka_unit_test_setup_teardown(test_build_every_length_and_position, setup, teardown),
        cmocka_unit_test_setup_teardown(test_build_params, setup, teardown),
        cmocka_unit_test_setup_teardown(test_build_unknown_and_space, setup, teardown),
        cmocka_unit_test_setup_teardown(test_build_result_too_long, setup, teardown),
        cmocka_unit_test_setup_teardown(test_register_refusals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_register_and_use, setup, teardown),
        cmocka_unit_test_setup_teardown(test_overlap_and_backtracking, setup, teardown),
        cmocka_unit_test_setup_teardown(test_register_full, setup, teardown),
        cmocka_unit_test_setup_teardown(test_check_reasons, setup, teardown),
        cmocka_unit_test_setup_teardown(test_check_message_is_safe, setup, teardown),
        cmocka_unit_test_setup_teardown(test_check_sub, setup, teardown),
        cmocka_unit_test(test_room_subzone),
        cmocka_unit_test_setup_teardown(test_metrics, setup, teardown),
        cmocka_unit_test(test_metrics_shared_registry),
        cmocka_unit_test_setup_teardown(test_concurrent_register, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_cache, setup, teardown),
        cmocka_unit_test_setup_teardown(test_memo_follows_registrations, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
