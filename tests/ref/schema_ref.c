/* SPDX-License-Identifier: MIT */
/*
 * schema_ref: the reference validator, the oracle of the differential fuzz
 * targets and of the unit tests of mb_schema_validate (docs/SCHEMA.md is the
 * specification it follows, rule by rule).
 *
 * It is written to be obviously correct rather than fast, and shares no code
 * with the library's validator: jansson parses the bytes into a tree, and the
 * tree is then checked field by field with plain loops. Its own RFC 3339
 * timestamp parser is deliberately written differently from the library's (a
 * pattern of digits and separators, then range checks). Nothing here calls
 * libmudbus, so a bug there cannot hide in both places.
 *
 * Order of checks (SCHEMA.md): size, then JSON (a raw NUL byte anywhere, then
 * whatever jansson refuses), then the schema. Any schema rule broken yields
 * MB_ESCHEMA whatever its position, so the order of the tree checks below only
 * decides which reason is reported.
 *
 * Threads: no shared state; any thread.
 */
#include "schema_ref.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define REF_FLAGS (JSON_REJECT_DUPLICATES | JSON_DECODE_ANY)

int mbref_json_accepts(const char *buf, size_t len)
{
    json_error_t jerr;
    json_t *root = json_loadb(buf != NULL ? buf : "", len, REF_FLAGS, &jerr);
    if (root == NULL)
        return 0;
    json_decref(root);
    return 1;
}

/* ---- reasons ---- */

typedef struct reason {
    char *buf;
    size_t cap;
} reason;

#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
static mb_status
fail(reason *r, mb_status st, const char *fmt, ...)
{
    if (r->buf != NULL && r->cap > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(r->buf, r->cap, fmt, ap);
        va_end(ap);
        /* One line: a key may hold an escaped newline. */
        for (char *p = r->buf; *p != '\0'; p++)
            if (*p == '\n' || *p == '\r')
                *p = ' ';
    }
    return st;
}

/* A key made printable for a reason: control bytes become '?', long keys are
 * cut. */
static const char *printable(const char *s, size_t n, char *out, size_t cap)
{
    size_t k = 0;
    for (size_t i = 0; i < n && k + 1 < cap; i++)
        out[k++] = (unsigned char)s[i] < 0x20 ? '?' : s[i];
    out[k] = '\0';
    return out;
}

static const char *type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "object";
    case JSON_ARRAY:
        return "array";
    case JSON_STRING:
        return "string";
    case JSON_INTEGER:
    case JSON_REAL:
        return "number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "boolean";
    case JSON_NULL:
        return "null";
    }
    return "unknown";
}

/* ---- UTF-8 of decoded strings (jansson guarantees it is valid) ---- */

/* Decode the code point at s[*i] and advance *i past it. */
static uint32_t next_cp(const unsigned char *s, size_t n, size_t *i)
{
    unsigned char c = s[*i];
    size_t len = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
    uint32_t cp = len == 1 ? c : len == 2 ? (c & 0x1Fu) : len == 3 ? (c & 0x0Fu) : (c & 0x07u);
    for (size_t k = 1; k < len && *i + k < n; k++)
        cp = (cp << 6) | (s[*i + k] & 0x3Fu);
    *i += len;
    return cp;
}

static int is_cc(uint32_t cp)
{
    return cp <= 0x1F || (cp >= 0x7F && cp <= 0x9F);
}

static int is_token_byte(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-';
}

/* ---- timestamps ---- */

static int is_leap(int y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int days_in_month(int y, int m)
{
    static const int days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && is_leap(y) ? 29 : days[m - 1];
}

static int digits(const char *s, size_t n)
{
    int v = 0;
    for (size_t i = 0; i < n; i++)
        v = v * 10 + (s[i] - '0');
    return v;
}

/* YYYY-MM-DDTHH:MM:SS[.F{1,9}](Z|+00:00), with calendar checks. */
static mb_status check_timestamp(const char *s, size_t n, reason *r)
{
    static const char pattern[] = "dddd-dd-ddTdd:dd:dd";
    const size_t plen = sizeof pattern - 1;
    const char *form = "timestamp: not RFC 3339 UTC (YYYY-MM-DDTHH:MM:SS[.F]Z)";
    if (n < plen)
        return fail(r, MB_ESCHEMA, "%s", form);
    for (size_t i = 0; i < plen; i++) {
        int ok = pattern[i] == 'd' ? (s[i] >= '0' && s[i] <= '9') : s[i] == pattern[i];
        if (!ok)
            return fail(r, MB_ESCHEMA, "%s", form);
    }
    size_t i = plen;
    if (i < n && s[i] == '.') {
        size_t start = ++i;
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
        size_t nd = i - start;
        if (nd == 0)
            return fail(r, MB_ESCHEMA, "timestamp: fraction without digits");
        if (nd > 9)
            return fail(r, MB_ESCHEMA, "timestamp: fraction of %zu digits exceeds 9", nd);
    }
    size_t rest = n - i;
    int zulu = rest == 1 && s[i] == 'Z';
    int offset0 = rest == 6 && memcmp(s + i, "+00:00", 6) == 0;
    if (!zulu && !offset0)
        return fail(r, MB_ESCHEMA, "timestamp: zone must be Z or +00:00");

    int year = digits(s, 4), month = digits(s + 5, 2), day = digits(s + 8, 2);
    int hour = digits(s + 11, 2), minute = digits(s + 14, 2), second = digits(s + 17, 2);
    if (month < 1 || month > 12)
        return fail(r, MB_ESCHEMA, "timestamp: month %d out of range", month);
    if (day < 1 || day > days_in_month(year, month))
        return fail(r, MB_ESCHEMA, "timestamp: day %d out of range for %04d-%02d", day, year,
                    month);
    if (hour > 23)
        return fail(r, MB_ESCHEMA, "timestamp: hour %d out of range", hour);
    if (minute > 59)
        return fail(r, MB_ESCHEMA, "timestamp: minute %d out of range", minute);
    if (second > 60 || (second == 60 && !(hour == 23 && minute == 59)))
        return fail(r, MB_ESCHEMA, "timestamp: second %d out of range", second);
    return MB_OK;
}

/* ---- field rules ---- */

typedef enum rule {
    R_ID,          /* 1..64 bytes, token charset */
    R_TOKEN,       /* 1..128 bytes, token charset */
    R_SHORT_TOKEN, /* 1..64 bytes, token charset */
    R_TIMESTAMP,
    R_NAME,    /* 1..64 characters, no Cc */
    R_TEXT,    /* 1..10000 characters, no Cc but \n and \t */
    R_CHANNEL, /* one of the channel names */
    R_SPEAKER, /* one of the speaker kinds */
    R_OBJECT   /* any object */
} rule;

typedef struct field {
    const char *name;
    rule rule;
    int required;
} field;

static const field chat_fields[] = {
    {"message_id", R_ID, 1},    {"timestamp", R_TIMESTAMP, 1}, {"sender_id", R_TOKEN, 1},
    {"sender_name", R_NAME, 1}, {"channel", R_CHANNEL, 1},     {"content", R_TEXT, 1},
    {"room_id", R_TOKEN, 0},    {"subzone", R_TOKEN, 0},       {"target_id", R_TOKEN, 0},
    {"party_id", R_TOKEN, 0},   {"target_name", R_NAME, 0},    {"speaker_kind", R_SPEAKER, 0},
};

static const field event_fields[] = {
    {"message_id", R_ID, 1},     {"timestamp", R_TIMESTAMP, 1}, {"event_type", R_SHORT_TOKEN, 1},
    {"event_data", R_OBJECT, 1}, {"room_id", R_TOKEN, 0},       {"player_id", R_TOKEN, 0},
    {"sender_id", R_TOKEN, 0},   {"sender_name", R_NAME, 0},
};

static const char *const channels[] = {"say",  "local",  "global", "whisper", "emote",
                                       "pose", "system", "admin",  "party"};
static const char *const speakers[] = {"player", "npc", "system"};

static int in_list(const char *s, size_t n, const char *const *list, size_t count)
{
    for (size_t i = 0; i < count; i++)
        if (strlen(list[i]) == n && memcmp(list[i], s, n) == 0)
            return 1;
    return 0;
}

static mb_status check_token(const field *f, const char *s, size_t n, size_t max, reason *r)
{
    if (n == 0)
        return fail(r, MB_ESCHEMA, "%s: empty string, length 0 below 1", f->name);
    if (n > max)
        return fail(r, MB_ESCHEMA, "%s: length %zu bytes exceeds %zu", f->name, n, max);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!is_token_byte(c)) {
            if (c >= 0x21 && c < 0x7F)
                return fail(r, MB_ESCHEMA, "%s: character '%c' outside [A-Za-z0-9_-]", f->name, c);
            size_t j = i;
            uint32_t cp = next_cp((const unsigned char *)s, n, &j);
            return fail(r, MB_ESCHEMA, "%s: character U+%04X outside [A-Za-z0-9_-]", f->name,
                        (unsigned)cp);
        }
    }
    return MB_OK;
}

static mb_status check_chars(const field *f, const char *s, size_t n, size_t max, int text,
                             reason *r)
{
    size_t chars = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp = next_cp((const unsigned char *)s, n, &i);
        chars++;
        if (is_cc(cp) && !(text && (cp == '\n' || cp == '\t')))
            return fail(r, MB_ESCHEMA, "%s: control character U+%04X at character %zu", f->name,
                        (unsigned)cp, chars);
    }
    if (chars == 0)
        return fail(r, MB_ESCHEMA, "%s: empty string, length 0 below 1", f->name);
    if (chars > max)
        return fail(r, MB_ESCHEMA, "%s: length %zu exceeds %zu", f->name, chars, max);
    return MB_OK;
}

static mb_status check_field(const field *f, const json_t *v, reason *r)
{
    if (f->rule == R_OBJECT) {
        if (!json_is_object(v))
            return fail(r, MB_ESCHEMA, "%s: expected object, got %s", f->name, type_name(v));
        return MB_OK;
    }
    if (!json_is_string(v))
        return fail(r, MB_ESCHEMA, "%s: expected string, got %s", f->name, type_name(v));
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    switch (f->rule) {
    case R_ID:
    case R_SHORT_TOKEN:
        return check_token(f, s, n, 64, r);
    case R_TOKEN:
        return check_token(f, s, n, 128, r);
    case R_TIMESTAMP:
        return check_timestamp(s, n, r);
    case R_NAME:
        return check_chars(f, s, n, 64, 0, r);
    case R_TEXT:
        return check_chars(f, s, n, 10000, 1, r);
    case R_CHANNEL:
        if (!in_list(s, n, channels, sizeof channels / sizeof channels[0]))
            return fail(r, MB_ESCHEMA,
                        "%s: value is not one of say local global whisper emote pose system "
                        "admin party",
                        f->name);
        return MB_OK;
    case R_SPEAKER:
        if (!in_list(s, n, speakers, sizeof speakers / sizeof speakers[0]))
            return fail(r, MB_ESCHEMA, "%s: value is not one of player npc system", f->name);
        return MB_OK;
    case R_OBJECT:
        break;
    }
    return MB_OK;
}

/* Container depth of a value: 0 for a scalar, 1 + the deepest child for an
 * object or array. jansson has already bounded it by 2048. */
static unsigned container_depth(const json_t *v)
{
    unsigned deepest = 0;
    if (json_is_object(v)) {
        const char *key;
        json_t *child;
        json_object_foreach((json_t *)v, key, child)
        {
            unsigned d = container_depth(child);
            if (d > deepest)
                deepest = d;
        }
        return deepest + 1;
    }
    if (json_is_array(v)) {
        size_t i;
        json_t *child;
        json_array_foreach(v, i, child)
        {
            unsigned d = container_depth(child);
            if (d > deepest)
                deepest = d;
        }
        return deepest + 1;
    }
    return 0;
}

static mb_status check_tree(mb_schema_kind kind, const json_t *root, unsigned max_depth,
                            mb_schema_kind *detected, reason *r)
{
    if (!json_is_object(root))
        return fail(r, MB_ESCHEMA, "message: expected object, got %s", type_name(root));

    if (kind == MB_SCHEMA_AUTO) {
        /* The presence of the key decides, whatever its value. */
        int event = json_object_get(root, "event_type") != NULL ||
                    json_object_get(root, "event_data") != NULL;
        kind = event ? MB_SCHEMA_EVENT : MB_SCHEMA_CHAT;
    }
    if (detected != NULL)
        *detected = kind;
    const field *fields = kind == MB_SCHEMA_EVENT ? event_fields : chat_fields;
    size_t nfields = kind == MB_SCHEMA_EVENT ? sizeof event_fields / sizeof event_fields[0]
                                             : sizeof chat_fields / sizeof chat_fields[0];

    /* Nesting, per top-level member, so that the reason names the field. */
    const char *key;
    json_t *value;
    char pk[80];
    json_object_foreach((json_t *)root, key, value)
    {
        unsigned depth = 1 + container_depth(value);
        if (depth > max_depth)
            return fail(r, MB_ESCHEMA, "%s: nesting depth %u exceeds %u",
                        printable(key, strlen(key), pk, sizeof pk), depth, max_depth);
    }
    /* Unknown fields. jansson keys hold no NUL (\u0000 is refused). */
    json_object_foreach((json_t *)root, key, value)
    {
        int known = 0;
        for (size_t i = 0; i < nfields; i++)
            if (strcmp(fields[i].name, key) == 0)
                known = 1;
        if (!known)
            return fail(r, MB_ESCHEMA, "%s: unknown field",
                        printable(key, strlen(key), pk, sizeof pk));
    }

    /* Each field of the schema: present (null = absent) and following its
     * rule. */
    for (size_t i = 0; i < nfields; i++) {
        const json_t *v = json_object_get(root, fields[i].name);
        if (v == NULL || json_is_null(v)) {
            if (fields[i].required)
                return fail(r, MB_ESCHEMA, "%s: required field missing%s", fields[i].name,
                            v != NULL ? " (null)" : "");
            continue;
        }
        mb_status st = check_field(&fields[i], v, r);
        if (st != MB_OK)
            return st;
    }
    return MB_OK;
}

mb_status mbref_validate(mb_schema_kind kind, const char *json, size_t len, size_t max_bytes,
                         unsigned max_depth, mb_schema_kind *detected, char *msg, size_t msgcap)
{
    reason r = {msg, msgcap};
    if (msg != NULL && msgcap > 0)
        msg[0] = '\0';
    if (max_bytes == 0)
        max_bytes = 65536;
    if (max_depth == 0)
        max_depth = 10;

    if (len > max_bytes)
        return fail(&r, MB_ETOOBIG, "payload: %zu bytes exceeds %zu", len, max_bytes);
    if (json == NULL)
        json = "";
    const char *nul = memchr(json, '\0', len);
    if (nul != NULL)
        return fail(&r, MB_EJSON, "json: NUL byte at byte %zu", (size_t)(nul - json));

    json_error_t jerr;
    json_t *root = json_loadb(json, len, REF_FLAGS, &jerr);
    if (root == NULL)
        return fail(&r, MB_EJSON, "json: %s at byte %d", jerr.text, jerr.position);

    mb_status st = check_tree(kind, root, max_depth, detected, &r);
    json_decref(root);
    return st;
}
