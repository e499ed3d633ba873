/* SPDX-License-Identifier: MIT */
/* loadgen_frame: see loadgen_frame.h. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memmem */
#endif
#include "loadgen_frame.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

static const char *const ev_names[LG_EV_COUNT] = {
    [LG_EV_OTHER] = "other",
    [LG_EV_WELCOME] = "welcome",
    [LG_EV_CHAT] = "chat_message",
    [LG_EV_ACK] = "ack",
    [LG_EV_ERROR] = "error",
    [LG_EV_SKIPPED] = "messages_skipped",
    [LG_EV_ENTERED] = "player_entered",
    [LG_EV_LEFT] = "player_left",
    [LG_EV_PONG] = "pong",
};

const char *lg_event_name(lg_event ev)
{
    return (unsigned)ev < LG_EV_COUNT ? ev_names[ev] : "other";
}

static int is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* The value after key `key` (given with its quotes, e.g. "\"id\""), i.e. the
 * first byte after the colon and any blanks, or NULL. A match counts only
 * when a colon follows and no backslash precedes it, so the key text inside a
 * string value (where its quotes are escaped) is skipped. */
static const char *find_key(const char *buf, const char *end, const char *key, size_t klen)
{
    const char *p = buf;
    while (p < end) {
        const char *k = memmem(p, (size_t)(end - p), key, klen);
        if (k == NULL)
            return NULL;
        const char *v = k + klen;
        p = k + 1;
        if (k > buf && k[-1] == '\\')
            continue;
        while (v < end && is_ws(*v))
            v++;
        if (v >= end || *v != ':')
            continue;
        v++;
        while (v < end && is_ws(*v))
            v++;
        return v < end ? v : NULL;
    }
    return NULL;
}

#define FIND(buf, end, lit) find_key((buf), (end), (lit), sizeof(lit) - 1)

/* A string value at v: sets *s and *n to its raw bytes (escapes not
 * decoded). Returns 0, or -1 when v is not a complete string. */
static int string_at(const char *v, const char *end, const char **s, size_t *n)
{
    if (v == NULL || v >= end || *v != '"')
        return -1;
    const char *p = ++v;
    while (p < end && *p != '"')
        p += (*p == '\\') ? 2 : 1;
    if (p >= end)
        return -1;
    *s = v;
    *n = (size_t)(p - v);
    return 0;
}

/* Decimal digits at *p (advanced past them) into *out; -1 when none. */
static int uint_at(const char **p, const char *end, uint64_t *out)
{
    const char *q = *p;
    uint64_t v = 0;
    while (q < end && *q >= '0' && *q <= '9')
        v = v * 10 + (uint64_t)(*q++ - '0');
    if (q == *p)
        return -1;
    *out = v;
    *p = q;
    return 0;
}

static lg_event event_of(const char *s, size_t n)
{
    for (int i = 1; i < LG_EV_COUNT; i++)
        if (strlen(ev_names[i]) == n && memcmp(ev_names[i], s, n) == 0)
            return (lg_event)i;
    return LG_EV_OTHER;
}

/* Parses "lg:<sender>:<ns>:<no>:" at the start of content s[0..n). */
static int parse_content(const char *s, size_t n, lg_frame *out)
{
    const char *p = s, *end = s + n;
    uint64_t sender;
    if (n < 3 || memcmp(p, "lg:", 3) != 0)
        return -1;
    p += 3;
    if (uint_at(&p, end, &sender) != 0 || p >= end || *p++ != ':')
        return -1;
    if (uint_at(&p, end, &out->sent_ns) != 0 || p >= end || *p++ != ':')
        return -1;
    if (uint_at(&p, end, &out->say_no) != 0 || p >= end || *p != ':')
        return -1;
    if (sender > UINT32_MAX)
        return -1;
    out->sender = (uint32_t)sender;
    return 0;
}

int lg_frame_scan(const char *buf, size_t len, lg_frame *out)
{
    static const char prefix[] = "{\"sequence_number\":";
    const char *end = buf + len, *p = buf + sizeof prefix - 1;
    memset(out, 0, sizeof *out);
    if (len < sizeof prefix || memcmp(buf, prefix, sizeof prefix - 1) != 0)
        return -1;
    if (uint_at(&p, end, &out->seq) != 0 || p >= end || *p != ',')
        return -1;
    const char *ev;
    size_t evn;
    if (string_at(FIND(p, end, "\"event_type\""), end, &ev, &evn) != 0)
        return -1;
    out->ev = event_of(ev, evn);
    switch (out->ev) {
    case LG_EV_CHAT: {
        const char *c, *e;
        size_t cn;
        if (string_at(FIND(p, end, "\"content\""), end, &c, &cn) == 0 &&
            parse_content(c, cn, out) == 0)
            out->ours = 1;
        e = FIND(p, end, "\"echo\"");
        out->echo = e != NULL && end - e >= 4 && memcmp(e, "true", 4) == 0;
        break;
    }
    case LG_EV_ACK:
    case LG_EV_ERROR:
        if (string_at(FIND(p, end, "\"id\""), end, &out->id, &out->id_len) != 0) {
            out->id = NULL;
            out->id_len = 0;
        }
        if (out->ev == LG_EV_ERROR &&
            string_at(FIND(p, end, "\"code\""), end, &out->code, &out->code_len) != 0) {
            out->code = NULL;
            out->code_len = 0;
        }
        break;
    case LG_EV_SKIPPED: {
        const char *v = FIND(p, end, "\"count\"");
        if (v == NULL || uint_at(&v, end, &out->skipped) != 0)
            out->skipped = 0;
        break;
    }
    default:
        break;
    }
    return 0;
}

size_t lg_content_format(char *buf, size_t len, uint32_t sender, uint64_t sent_ns, uint64_t say_no,
                         size_t bytes)
{
    int n = snprintf(buf, len, "lg:%" PRIu32 ":%" PRIu64 ":%" PRIu64 ":", sender, sent_ns, say_no);
    if (n < 0)
        return 0;
    size_t k = (size_t)n < len ? (size_t)n : len - 1;
    if (bytes > len - 1)
        bytes = len - 1;
    while (k < bytes)
        buf[k++] = 'x';
    buf[k] = '\0';
    return k;
}

/* ---- strict validation ---- */

#define FAIL(...)                                                                                  \
    do {                                                                                           \
        snprintf(why, why_len, __VA_ARGS__);                                                       \
        goto out;                                                                                  \
    } while (0)

/* YYYY-MM-DDTHH:MM:SS.mmmZ */
static int is_rfc3339_ms(const char *s)
{
    static const char shape[] = "dddd-dd-ddTdd:dd:dd.dddZ";
    if (strlen(s) != sizeof shape - 1)
        return 0;
    for (size_t i = 0; shape[i]; i++) {
        if (shape[i] == 'd' ? (s[i] < '0' || s[i] > '9') : s[i] != shape[i])
            return 0;
    }
    return 1;
}

static const char *str_field(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

/* Checks that data has a string under each of the NULL-terminated keys;
 * returns the first missing key or NULL. */
static const char *missing_string(json_t *data, const char *const *keys)
{
    for (; *keys; keys++)
        if (str_field(data, *keys) == NULL)
            return *keys;
    return NULL;
}

int lg_frame_validate(const char *buf, size_t len, const lg_frame *scan, const char *id_prefix,
                      char *why, size_t why_len)
{
    static const char *const chat_keys[] = {"message_id", "channel", "sender_id", "player_name",
                                            "content",    "message", "timestamp", NULL};
    static const char *const welcome_keys[] = {"player_id", "player_name", "gateway", NULL};
    static const char *const player_keys[] = {"player_id", "player_name", "room_id", NULL};
    static const char *const error_keys[] = {"code", "message", NULL};
    static const char *const ack_keys[] = {"id", NULL};
    static const char *const envelope_keys[] = {"event_type", "timestamp", "sequence_number",
                                                "room_id",    "player_id", "data"};
    int rc = -1;
    json_error_t jerr;
    json_t *root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
    const char *miss = NULL;
    why[0] = '\0';
    if (root == NULL)
        FAIL("not JSON: %s", jerr.text);
    if (!json_is_object(root))
        FAIL("not an object");
    json_t *seq = json_object_get(root, "sequence_number");
    if (!json_is_integer(seq) || (uint64_t)json_integer_value(seq) != scan->seq)
        FAIL("sequence_number missing or differs from the scan");
    const char *ev = str_field(root, "event_type");
    if (ev == NULL)
        FAIL("event_type missing");
    if (scan->ev != LG_EV_OTHER && strcmp(ev, lg_event_name(scan->ev)) != 0)
        FAIL("event_type %s differs from the scan (%s)", ev, lg_event_name(scan->ev));
    const char *ts = str_field(root, "timestamp");
    if (ts == NULL || !is_rfc3339_ms(ts))
        FAIL("%s: timestamp missing or not YYYY-MM-DDTHH:MM:SS.mmmZ", ev);
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val)
    {
        size_t i, n = sizeof envelope_keys / sizeof envelope_keys[0];
        for (i = 0; i < n; i++)
            if (strcmp(key, envelope_keys[i]) == 0)
                break;
        if (i == n)
            FAIL("%s: unknown envelope key %s", ev, key);
    }
    for (int i = 0; i < 2; i++) {
        json_t *v = json_object_get(root, i ? "player_id" : "room_id");
        if (v != NULL && !json_is_string(v) && !json_is_null(v))
            FAIL("%s: %s not a string", ev, i ? "player_id" : "room_id");
    }
    json_t *data = json_object_get(root, "data");
    if (!json_is_object(data))
        FAIL("%s: data missing or not an object", ev);
    switch (scan->ev) {
    case LG_EV_CHAT: {
        if ((miss = missing_string(data, chat_keys)) != NULL)
            FAIL("chat_message: data.%s missing or not a string", miss);
        if (strcmp(str_field(data, "channel"), "say") != 0)
            FAIL("chat_message: channel %s, expected say", str_field(data, "channel"));
        const char *name = str_field(data, "player_name"), *content = str_field(data, "content");
        const char *msg = str_field(data, "message");
        size_t nl = strlen(name);
        if (strncmp(msg, name, nl) != 0 || strncmp(msg + nl, " says: ", 7) != 0 ||
            strcmp(msg + nl + 7, content) != 0)
            FAIL("chat_message: message \"%.60s\" is not \"<player_name> says: <content>\"", msg);
        json_t *echo = json_object_get(data, "echo");
        if (echo != NULL && !json_is_boolean(echo))
            FAIL("chat_message: echo not a boolean");
        if ((echo != NULL && json_is_true(echo)) != (scan->echo != 0))
            FAIL("chat_message: echo differs from the scan");
        if (scan->ours) {
            char want[160];
            lg_frame probe;
            if (parse_content(content, strlen(content), &probe) != 0 ||
                probe.sent_ns != scan->sent_ns || probe.sender != scan->sender)
                FAIL("chat_message: content differs from the scan");
            snprintf(want, sizeof want, "%s%" PRIu32, id_prefix, scan->sender);
            if (strcmp(str_field(data, "sender_id"), want) != 0)
                FAIL("chat_message: sender_id %s, expected %s", str_field(data, "sender_id"), want);
        }
        break;
    }
    case LG_EV_WELCOME: {
        if ((miss = missing_string(data, welcome_keys)) != NULL)
            FAIL("welcome: data.%s missing or not a string", miss);
        json_t *room = json_object_get(data, "room_id");
        if (room == NULL || !(json_is_string(room) || json_is_null(room)))
            FAIL("welcome: data.room_id missing or neither a string nor null");
        break;
    }
    case LG_EV_ENTERED:
    case LG_EV_LEFT:
        if ((miss = missing_string(data, player_keys)) != NULL)
            FAIL("%s: data.%s missing or not a string", ev, miss);
        break;
    case LG_EV_ACK:
        if ((miss = missing_string(data, ack_keys)) != NULL)
            FAIL("ack: data.%s missing or not a string", miss);
        break;
    case LG_EV_ERROR:
        if ((miss = missing_string(data, error_keys)) != NULL)
            FAIL("error: data.%s missing or not a string", miss);
        break;
    case LG_EV_SKIPPED:
        if (!json_is_integer(json_object_get(data, "count")) || str_field(data, "reason") == NULL)
            FAIL("messages_skipped: data.count or data.reason missing");
        break;
    default:
        break;
    }
    rc = 0;
out:
    json_decref(root);
    return rc;
}
