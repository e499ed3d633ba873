/* SPDX-License-Identifier: MIT */
/*
 * protocol.c - strict parsing of the client commands of PROTOCOL.md section 3.
 *
 * One call checks one text frame in a fixed order, so that a frame with
 * several faults always gets the same reply: size, UTF-8, raw NUL bytes,
 * nesting depth, JSON syntax (jansson, duplicate keys refused), "is an
 * object", "id", "type", unknown fields (in document order), then the
 * command's fields in the order room_id, target, channel, content, minutes,
 * reason. The first fault wins. "id" is checked before everything else in
 * the object so that any later refusal can echo it. null is a value of the
 * wrong type, not an absent field.
 *
 * Raw NUL bytes are refused before jansson runs: jansson 2.14 silently
 * drops one that directly follows a number or literal ("[1\0]" loads).
 * Strings are decoded by jansson with JSON_ALLOW_NUL, so that "\u0000" is
 * refused here as a control character with a precise message rather than by
 * jansson as a syntax error; every string kept is then free of NUL bytes and
 * is copied, NUL-terminated, into cmd->store. Unescaping never makes a string
 * longer and every string costs at least its two quotes, so the strings of a
 * frame of at most GW_FRAME_MAX bytes always fit in the store; running out
 * of room would be a bug and is reported as GW_ERR_INTERNAL.
 *
 * Nesting is limited to MAX_DEPTH by a scan before jansson runs (no command
 * has any nesting at all), which bounds jansson's recursion on any thread's
 * stack. Messages are at most GW_ERR_MSG_MAX bytes of valid UTF-8 with no
 * control characters: parts that come from the frame (unknown names,
 * jansson's "near '...'") are shortened and cleaned.
 *
 * No state: any thread may call anything here, on distinct gw_cmd values.
 */
#include "protocol.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define MAX_DEPTH     32 /* [ and { levels; a valid command has one */
#define NAME_SHOW     32 /* bytes of an unknown type or field name in a message */
#define TOKEN_CHARSET "[A-Za-z0-9_-]"

/* ---- names ---- */

static const char *const cmd_names[] = {
#define GW_X(e, s) [GW_CMD_##e] = s,
    GW_CMD_TYPES(GW_X)
#undef GW_X
};

static const char *const err_names[] = {[GW_ERR_NONE] = "none",
#define GW_X(e, s) [GW_ERR_##e] = s,
                                        GW_ERR_CODES(GW_X)
#undef GW_X
};

const char *gw_cmd_type_name(gw_cmd_type t)
{
    if ((unsigned)t >= GW_CMD__COUNT)
        return "?";
    return cmd_names[t];
}

const char *gw_err_code_name(gw_err_code c)
{
    if ((unsigned)c >= GW_ERR__COUNT)
        return "?";
    return err_names[c];
}

/* ---- command table ---- */

enum {
    F_ROOM_ID = 1u << 0,
    F_TARGET = 1u << 1,
    F_CHANNEL = 1u << 2,
    F_CONTENT = 1u << 3,
    F_MINUTES = 1u << 4,
    F_REASON = 1u << 5,
};

/* In checking order. */
static const struct field {
    const char *name;
    unsigned bit;
} fields[] = {
    {"room_id", F_ROOM_ID}, {"target", F_TARGET},   {"channel", F_CHANNEL},
    {"content", F_CONTENT}, {"minutes", F_MINUTES}, {"reason", F_REASON},
};

#define NFIELDS (sizeof fields / sizeof fields[0])

static const struct shape {
    unsigned required, optional;
} shapes[GW_CMD__COUNT] = {
    [GW_CMD_JOIN] = {F_ROOM_ID, 0},
    [GW_CMD_SAY] = {F_CONTENT, 0},
    [GW_CMD_EMOTE] = {F_CONTENT, 0},
    [GW_CMD_POSE] = {F_CONTENT, 0},
    [GW_CMD_LOCAL] = {F_CONTENT, 0},
    [GW_CMD_GLOBAL] = {F_CONTENT, 0},
    [GW_CMD_WHISPER] = {F_TARGET | F_CONTENT, 0},
    [GW_CMD_PARTY] = {F_CONTENT, 0},
    [GW_CMD_SYSTEM] = {F_CONTENT, F_TARGET},
    [GW_CMD_MUTE] = {F_TARGET, F_MINUTES},
    [GW_CMD_UNMUTE] = {F_TARGET, 0},
    [GW_CMD_MUTE_CHANNEL] = {F_CHANNEL, 0},
    [GW_CMD_UNMUTE_CHANNEL] = {F_CHANNEL, 0},
    [GW_CMD_MUTE_GLOBAL] = {F_TARGET, F_MINUTES | F_REASON},
    [GW_CMD_UNMUTE_GLOBAL] = {F_TARGET, 0},
    [GW_CMD_MUTES] = {0, 0},
    [GW_CMD_PING] = {0, 0},
};

static const char *const channels[] = {"say",   "local", "global", "whisper",
                                       "emote", "pose",  "party"};

/* ---- UTF-8 ---- */

/* Length of the valid UTF-8 sequence at s[0..n), or 0 when there is none
 * (bad lead byte, bad or missing continuation, overlong, surrogate, above
 * U+10FFFF). The second byte's range depends on the lead (Unicode table 3-7). */
static size_t seq_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    if (c < 0x80)
        return 1;
    size_t need;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
        need = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        need = 3;
        if (c == 0xE0)
            lo = 0xA0; /* overlong below U+0800 */
        else if (c == 0xED)
            hi = 0x9F; /* surrogates U+D800..U+DFFF */
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 4;
        if (c == 0xF0)
            lo = 0x90; /* overlong below U+10000 */
        else if (c == 0xF4)
            hi = 0x8F; /* above U+10FFFF */
    } else {
        return 0; /* continuation byte, C0, C1 (overlong), F5..FF */
    }
    if (n < need || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < need; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
    }
    return need;
}

/* Offset of the first byte that does not start a valid sequence, or len. */
static size_t utf8_bad_at(const char *buf, size_t len)
{
    const unsigned char *s = (const unsigned char *)buf;
    size_t i = 0;
    while (i < len) {
        size_t k = seq_len(s + i, len - i);
        if (k == 0)
            return i;
        i += k;
    }
    return len;
}

bool gw_utf8_valid(const char *buf, size_t len)
{
    if (buf == NULL)
        return len == 0;
    return utf8_bad_at(buf, len) == len;
}

size_t gw_utf8_chars(const char *buf, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; buf != NULL && i < len; i++) {
        if (((unsigned char)buf[i] & 0xC0) != 0x80)
            n++;
    }
    return n;
}

/* The first control character (Unicode Cc: U+0000..U+001F, U+007F..U+009F)
 * in valid UTF-8, other than \n and \t when allow_nl_tab; its offset and code
 * point. U+0080..U+009F are the two-byte sequences C2 80..C2 9F. */
static bool find_control(const char *buf, size_t len, bool allow_nl_tab, size_t *at, unsigned *cp)
{
    const unsigned char *s = (const unsigned char *)buf;
    for (size_t i = 0; i < len; i++) {
        unsigned c = s[i];
        if (c < 0x20 || c == 0x7F) {
            if (allow_nl_tab && (c == '\n' || c == '\t'))
                continue;
            *at = i;
            *cp = c;
            return true;
        }
        if (c == 0xC2 && i + 1 < len && s[i + 1] >= 0x80 && s[i + 1] <= 0x9F) {
            *at = i;
            *cp = s[i + 1];
            return true;
        }
    }
    return false;
}

/* ---- messages ---- */

/* Make msg valid UTF-8 without control characters: each byte that does not
 * start a valid sequence, and each control character, becomes '?'. A
 * sequence cut short at the end by truncation is dropped instead. */
static void clean_msg(char *msg)
{
    unsigned char *s = (unsigned char *)msg;
    size_t len = strlen(msg);
    size_t i = 0;
    while (i < len) {
        size_t k = seq_len(s + i, len - i);
        if (k == 0 && s[i] >= 0xC2 && s[i] <= 0xF4) {
            /* A sequence cut short by truncation: if every remaining byte
             * is a continuation byte, cut it off. */
            size_t j = i + 1;
            while (j < len && (s[j] & 0xC0) == 0x80)
                j++;
            if (j == len) {
                s[i] = '\0';
                return;
            }
        }
        if (k == 0) {
            s[i++] = '?';
        } else if (k == 1 && (s[i] < 0x20 || s[i] == 0x7F)) {
            s[i++] = '?';
        } else if (k == 2 && s[i] == 0xC2 && s[i + 1] <= 0x9F) {
            s[i++] = '?';
            s[i++] = '?';
        } else {
            i += k;
        }
    }
}

static gw_err_code fail(char *msg, gw_err_code code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

static gw_err_code fail(char *msg, gw_err_code code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, GW_ERR_MSG_MAX, fmt, ap);
    va_end(ap);
    clean_msg(msg);
    return code;
}

/* A name from the frame, shortened to at most NAME_SHOW bytes on a character
 * boundary ("..." marks the cut); clean_msg later replaces control bytes. */
static void show_name(char *dst, size_t cap, const char *s, size_t n)
{
    size_t keep = n;
    if (keep > NAME_SHOW) {
        keep = NAME_SHOW;
        while (keep > 0 && ((unsigned char)s[keep] & 0xC0) == 0x80)
            keep--;
    }
    /* NUL bytes would end the message early; show them as '?'. */
    size_t o = 0;
    for (size_t i = 0; i < keep && o + 1 < cap; i++)
        dst[o++] = s[i] == '\0' ? '?' : s[i];
    if (keep < n && o + 4 <= cap) {
        memcpy(dst + o, "...", 3);
        o += 3;
    }
    dst[o] = '\0';
}

/* "content", "target, content", "content, optional target", "no fields". */
static void describe_shape(char *dst, size_t cap, const struct shape *sh)
{
    size_t o = 0;
    dst[0] = '\0';
    for (int pass = 0; pass < 2; pass++) {
        unsigned set = pass == 0 ? sh->required : sh->optional;
        for (size_t i = 0; i < NFIELDS; i++) {
            if (!(set & fields[i].bit))
                continue;
            int w = snprintf(dst + o, cap - o, "%s%s%s", o ? ", " : "", pass ? "optional " : "",
                             fields[i].name);
            if (w < 0 || (size_t)w >= cap - o)
                return;
            o += (size_t)w;
        }
    }
    if (o == 0)
        snprintf(dst, cap, "no fields");
}

/* ---- store ---- */

typedef struct store {
    char *buf;
    size_t used;
} store;

static const char *keep(store *st, const char *s, size_t n)
{
    if (n >= sizeof(((gw_cmd *)0)->store) - st->used)
        return NULL;
    char *p = st->buf + st->used;
    memcpy(p, s, n);
    p[n] = '\0';
    st->used += n + 1;
    return p;
}

/* ---- field checks ---- */

bool gw_is_token(const char *s, size_t n)
{
    if (n < 1 || n > GW_TOKEN_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return false;
    }
    return true;
}

static gw_err_code check_id(json_t *v, store *st, gw_cmd *cmd, char *msg)
{
    if (!json_is_string(v))
        return fail(msg, GW_ERR_BAD_REQUEST, "id: must be a string");
    const char *s = json_string_value(v);
    size_t n = json_string_length(v), at;
    unsigned cp;
    if (n < 1 || n > GW_CMD_ID_MAX)
        return fail(msg, GW_ERR_BAD_REQUEST, "id: must be 1..%d bytes, not %zu", GW_CMD_ID_MAX, n);
    if (find_control(s, n, false, &at, &cp))
        return fail(msg, GW_ERR_BAD_REQUEST, "id: control character U+%04X at byte %zu", cp, at);
    cmd->id = keep(st, s, n);
    if (cmd->id == NULL)
        return fail(msg, GW_ERR_INTERNAL, "id: no room to store");
    return GW_ERR_NONE;
}

static gw_err_code check_type(json_t *v, gw_cmd *cmd, char *msg)
{
    if (v == NULL)
        return fail(msg, GW_ERR_BAD_REQUEST, "type: required");
    if (!json_is_string(v))
        return fail(msg, GW_ERR_BAD_REQUEST, "type: must be a string");
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    for (unsigned t = 0; t < GW_CMD__COUNT; t++) {
        if (strlen(cmd_names[t]) == n && memcmp(cmd_names[t], s, n) == 0) {
            cmd->type = (gw_cmd_type)t;
            return GW_ERR_NONE;
        }
    }
    char shown[NAME_SHOW + 4];
    show_name(shown, sizeof shown, s, n);
    return fail(msg, GW_ERR_BAD_REQUEST, "type: unknown command \"%s\"", shown);
}

static gw_err_code check_field(const struct field *f, json_t *v, store *st, gw_cmd *cmd, char *msg)
{
    if (f->bit == F_MINUTES) {
        json_int_t m = json_is_integer(v) ? json_integer_value(v) : 0;
        if (m < 1 || m > GW_MINUTES_MAX)
            return fail(msg, GW_ERR_BAD_REQUEST, "minutes: must be an integer 1..%d",
                        GW_MINUTES_MAX);
        cmd->minutes = (int64_t)m;
        return GW_ERR_NONE;
    }
    if (!json_is_string(v))
        return fail(msg, GW_ERR_BAD_REQUEST, "%s: must be a string", f->name);
    const char *s = json_string_value(v);
    size_t n = json_string_length(v), chars = 0, at;
    unsigned cp;

    switch (f->bit) {
    case F_ROOM_ID:
    case F_TARGET:
        if (!gw_is_token(s, n))
            return fail(msg, f->bit == F_ROOM_ID ? GW_ERR_INVALID_ROOM : GW_ERR_INVALID_TARGET,
                        "%s: must be 1..%d characters of " TOKEN_CHARSET, f->name, GW_TOKEN_MAX);
        break;
    case F_CHANNEL: {
        size_t i = 0;
        while (i < sizeof channels / sizeof channels[0] &&
               !(strlen(channels[i]) == n && memcmp(channels[i], s, n) == 0))
            i++;
        if (i == sizeof channels / sizeof channels[0])
            return fail(msg, GW_ERR_BAD_REQUEST,
                        "channel: must be one of say local global whisper emote pose party");
        break;
    }
    case F_CONTENT:
        chars = gw_utf8_chars(s, n);
        if (chars < 1)
            return fail(msg, GW_ERR_BAD_REQUEST, "content: must be 1..%d characters, not 0",
                        GW_CONTENT_MAX);
        if (chars > GW_CONTENT_MAX)
            return fail(msg, GW_ERR_TOO_LONG, "content: %zu characters exceeds %d", chars,
                        GW_CONTENT_MAX);
        if (find_control(s, n, true, &at, &cp))
            return fail(msg, GW_ERR_BAD_REQUEST,
                        "content: control character U+%04X at byte %zu (only \\n and \\t allowed)",
                        cp, at);
        break;
    case F_REASON:
        chars = gw_utf8_chars(s, n);
        if (chars > GW_REASON_MAX)
            return fail(msg, GW_ERR_BAD_REQUEST, "reason: must be at most %d characters, not %zu",
                        GW_REASON_MAX, chars);
        if (find_control(s, n, false, &at, &cp))
            return fail(msg, GW_ERR_BAD_REQUEST, "reason: control character U+%04X at byte %zu", cp,
                        at);
        break;
    default:
        return fail(msg, GW_ERR_INTERNAL, "%s: no rule", f->name);
    }

    const char *p = keep(st, s, n);
    if (p == NULL)
        return fail(msg, GW_ERR_INTERNAL, "%s: no room to store", f->name);
    switch (f->bit) {
    case F_ROOM_ID:
        cmd->room_id = p;
        break;
    case F_TARGET:
        cmd->target = p;
        break;
    case F_CHANNEL:
        cmd->channel = p;
        break;
    case F_CONTENT:
        cmd->content = p;
        cmd->content_len = n;
        cmd->content_chars = chars;
        break;
    default:
        cmd->reason = p;
        break;
    }
    return GW_ERR_NONE;
}

static gw_err_code check_object(json_t *root, gw_cmd *cmd, char *msg)
{
    store st = {cmd->store, 0};
    json_t *v = json_object_get(root, "id");
    gw_err_code rc;
    if (v != NULL && (rc = check_id(v, &st, cmd, msg)) != GW_ERR_NONE)
        return rc;
    if ((rc = check_type(json_object_get(root, "type"), cmd, msg)) != GW_ERR_NONE)
        return rc;

    const struct shape *sh = &shapes[cmd->type];
    unsigned allowed = sh->required | sh->optional;
    const char *key;
    json_object_foreach(root, key, v)
    {
        if (strcmp(key, "id") == 0 || strcmp(key, "type") == 0)
            continue;
        size_t i = 0;
        while (i < NFIELDS && strcmp(fields[i].name, key) != 0)
            i++;
        if (i < NFIELDS && (allowed & fields[i].bit))
            continue;
        char shown[NAME_SHOW + 4], takes[96];
        show_name(shown, sizeof shown, key, strlen(key));
        describe_shape(takes, sizeof takes, sh);
        return fail(msg, GW_ERR_BAD_REQUEST, "\"%s\": unknown field (%s takes %s)", shown,
                    cmd_names[cmd->type], takes);
    }

    for (size_t i = 0; i < NFIELDS; i++) {
        if (!(allowed & fields[i].bit))
            continue;
        v = json_object_get(root, fields[i].name);
        if (v == NULL) {
            if (sh->required & fields[i].bit)
                return fail(msg, GW_ERR_BAD_REQUEST, "%s: required", fields[i].name);
            continue;
        }
        if ((rc = check_field(&fields[i], v, &st, cmd, msg)) != GW_ERR_NONE)
            return rc;
    }
    return GW_ERR_NONE;
}

/* Offset of the first [ or { deeper than MAX_DEPTH outside strings, or len.
 * Exact for valid JSON; for invalid JSON it only changes which error the
 * frame gets. */
static size_t too_deep_at(const char *buf, size_t len)
{
    unsigned depth = 0;
    bool in_string = false;
    for (size_t i = 0; i < len; i++) {
        char c = buf[i];
        if (in_string) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_string = false;
        } else if (c == '"') {
            in_string = true;
        } else if (c == '[' || c == '{') {
            if (++depth > MAX_DEPTH)
                return i;
        } else if ((c == ']' || c == '}') && depth > 0) {
            depth--;
        }
    }
    return len;
}

gw_err_code gw_cmd_parse(const char *buf, size_t len, gw_cmd *cmd, char *msg)
{
    char scratch[GW_ERR_MSG_MAX];
    if (msg == NULL)
        msg = scratch;
    msg[0] = '\0';
    cmd->type = GW_CMD__COUNT;
    cmd->id = cmd->room_id = cmd->content = cmd->target = cmd->channel = cmd->reason = NULL;
    cmd->content_len = cmd->content_chars = 0;
    cmd->minutes = 0;
    if (buf == NULL)
        len = 0;
    if (len > GW_FRAME_MAX)
        return fail(msg, GW_ERR_BAD_REQUEST, "frame: %zu bytes exceeds %d", len, GW_FRAME_MAX);
    if (buf == NULL)
        buf = "";

    size_t at = utf8_bad_at(buf, len);
    if (at < len)
        return fail(msg, GW_ERR_BAD_REQUEST, "frame: invalid UTF-8 at byte %zu", at);
    /* A raw NUL is never valid JSON, but jansson 2.14 skips one that
     * directly follows a number or a literal ("[1\0]" loads). */
    const char *nul = memchr(buf, '\0', len);
    if (nul != NULL)
        return fail(msg, GW_ERR_BAD_REQUEST, "bad JSON at byte %zu: NUL byte", (size_t)(nul - buf));
    at = too_deep_at(buf, len);
    if (at < len)
        return fail(msg, GW_ERR_BAD_REQUEST, "bad JSON at byte %zu: nesting deeper than %d", at,
                    MAX_DEPTH);

    json_error_t jerr;
    json_t *root =
        json_loadb(buf, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    if (root == NULL) {
        if (json_error_code(&jerr) == json_error_out_of_memory)
            return fail(msg, GW_ERR_INTERNAL, "out of memory");
        return fail(msg, GW_ERR_BAD_REQUEST, "bad JSON at byte %d: %s", jerr.position, jerr.text);
    }
    gw_err_code rc;
    if (!json_is_object(root))
        rc = fail(msg, GW_ERR_BAD_REQUEST, "not a JSON object");
    else
        rc = check_object(root, cmd, msg);
    json_decref(root);
    return rc;
}
