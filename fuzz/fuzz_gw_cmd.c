/* SPDX-License-Identifier: MIT */
/*
 * fuzz_gw_cmd: fuzz target of the gateway's command parser and UTF-8 checks.
 *
 * The input is one text frame, any bytes. Properties:
 *   - gw_utf8_valid agrees with a reference decoder written differently (it
 *     decodes each code point and checks the range), and gw_utf8_chars with
 *     its count;
 *   - gw_cmd_parse returns a known code, never GW_ERR_INTERNAL, and a message
 *     exactly when it refuses: non-empty, NUL-terminated within
 *     GW_ERR_MSG_MAX, valid UTF-8, no control characters;
 *   - invalid UTF-8 or an oversized frame is always refused;
 *   - cmd->id, when set (also on refusals), is 1..64 bytes without control
 *     characters, inside cmd->store;
 *   - on GW_ERR_NONE: the frame is valid UTF-8, the type is known, exactly the
 *     command's fields are set (table below, kept apart from the parser's),
 *     each within its rule (content 1..10000 code points, content_chars and
 *     content_len exact), and every string lies in cmd->store;
 *   - round trip: the parsed command, written back as JSON with jansson and
 *     parsed again, gives the same command.
 * A violation prints the input and aborts.
 */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "protocol.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Two instances are over 32 KiB together; keep them off the stack. */
static gw_cmd cmd, again;

static const uint8_t *cur_data;
static size_t cur_size;

static void die(const char *what, const char *detail)
{
    fprintf(stderr, "fuzz_gw_cmd: %s%s%s\n  input (%zu bytes): \"", what, detail ? ": " : "",
            detail ? detail : "", cur_size);
    for (size_t i = 0; i < cur_size && i < 4096; i++) {
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

/* ---- references ---- */

/* Valid UTF-8 by decoding; the number of code points in *chars. */
static int ref_utf8(const uint8_t *s, size_t n, size_t *chars)
{
    size_t i = 0, count = 0;
    while (i < n) {
        uint32_t c = s[i], min;
        size_t k;
        if (c < 0x80) {
            k = 0;
            min = 0;
        } else if ((c & 0xE0) == 0xC0) {
            k = 1;
            c &= 0x1F;
            min = 0x80;
        } else if ((c & 0xF0) == 0xE0) {
            k = 2;
            c &= 0x0F;
            min = 0x800;
        } else if ((c & 0xF8) == 0xF0) {
            k = 3;
            c &= 0x07;
            min = 0x10000;
        } else {
            return 0;
        }
        if (n - i - 1 < k)
            return 0;
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xC0) != 0x80)
                return 0;
            c = (c << 6) | (s[i + j] & 0x3Fu);
        }
        if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
            return 0;
        i += k + 1;
        count++;
    }
    *chars = count;
    return 1;
}

/* Code points of Unicode category Cc, decoded from valid UTF-8. */
static int has_control(const char *s, int allow_nl_tab)
{
    const uint8_t *u = (const uint8_t *)s;
    for (size_t i = 0; u[i] != 0; i++) {
        uint32_t c = u[i];
        if (c == 0xC2)
            c = u[i + 1]; /* U+0080..U+00BF */
        else if (c >= 0x80)
            continue;
        if ((c < 0x20 || (c >= 0x7F && c <= 0x9F)) && !(allow_nl_tab && (c == '\n' || c == '\t')))
            return 1;
    }
    return 0;
}

static int token_ok(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > 128)
        return 0;
    return strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-") == n;
}

static int in_store(const gw_cmd *c, const char *p)
{
    return p >= c->store && p < c->store + sizeof c->store &&
           memchr(p, 0, (size_t)(c->store + sizeof c->store - p)) != NULL;
}

/* ---- expected shape, independent of the parser's table ---- */

enum { ROOM = 1, CONTENT = 2, TARGET = 4, CHANNEL = 8, MINUTES = 16, REASON = 32 };

static unsigned required_of(gw_cmd_type t)
{
    switch (t) {
    case GW_CMD_JOIN:
        return ROOM;
    case GW_CMD_SAY:
    case GW_CMD_EMOTE:
    case GW_CMD_POSE:
    case GW_CMD_LOCAL:
    case GW_CMD_GLOBAL:
    case GW_CMD_PARTY:
    case GW_CMD_SYSTEM:
        return CONTENT;
    case GW_CMD_WHISPER:
        return TARGET | CONTENT;
    case GW_CMD_MUTE:
    case GW_CMD_UNMUTE:
    case GW_CMD_MUTE_GLOBAL:
    case GW_CMD_UNMUTE_GLOBAL:
        return TARGET;
    case GW_CMD_MUTE_CHANNEL:
    case GW_CMD_UNMUTE_CHANNEL:
        return CHANNEL;
    default:
        return 0;
    }
}

static unsigned optional_of(gw_cmd_type t)
{
    switch (t) {
    case GW_CMD_SYSTEM:
        return TARGET;
    case GW_CMD_MUTE:
        return MINUTES;
    case GW_CMD_MUTE_GLOBAL:
        return MINUTES | REASON;
    default:
        return 0;
    }
}

static void check_field(unsigned bit, const void *present, gw_cmd_type t)
{
    unsigned req = required_of(t), opt = optional_of(t);
    if ((req & bit) && present == NULL)
        die("required field missing", gw_cmd_type_name(t));
    if (!((req | opt) & bit) && present != NULL)
        die("field set that the command does not take", gw_cmd_type_name(t));
}

static void check_ok(const gw_cmd *c)
{
    if ((unsigned)c->type >= GW_CMD__COUNT)
        die("unknown type accepted", NULL);
    gw_cmd_type t = c->type;
    check_field(ROOM, c->room_id, t);
    check_field(CONTENT, c->content, t);
    check_field(TARGET, c->target, t);
    check_field(CHANNEL, c->channel, t);
    check_field(REASON, c->reason, t);
    check_field(MINUTES, c->minutes ? c : NULL, t);
    if (c->room_id != NULL && (!in_store(c, c->room_id) || !token_ok(c->room_id)))
        die("bad room_id accepted", c->room_id);
    if (c->target != NULL && (!in_store(c, c->target) || !token_ok(c->target)))
        die("bad target accepted", c->target);
    if (c->channel != NULL) {
        static const char *const ch[] = {"say",   "local", "global", "whisper",
                                         "emote", "pose",  "party"};
        size_t i = 0;
        while (i < 7 && strcmp(ch[i], c->channel) != 0)
            i++;
        if (i == 7 || !in_store(c, c->channel))
            die("bad channel accepted", c->channel);
    }
    if (c->content != NULL) {
        size_t chars = 0;
        if (!in_store(c, c->content) || strlen(c->content) != c->content_len)
            die("content length wrong or NUL inside", NULL);
        if (!ref_utf8((const uint8_t *)c->content, c->content_len, &chars) ||
            chars != c->content_chars || chars < 1 || chars > GW_CONTENT_MAX)
            die("content_chars wrong or out of range", NULL);
        if (has_control(c->content, 1))
            die("control character in content accepted", NULL);
    } else if (c->content_len != 0 || c->content_chars != 0) {
        die("content sizes without content", NULL);
    }
    if (c->minutes != 0 && (c->minutes < 1 || c->minutes > GW_MINUTES_MAX))
        die("minutes out of range accepted", NULL);
    if (c->reason != NULL) {
        size_t chars = 0;
        if (!in_store(c, c->reason) ||
            !ref_utf8((const uint8_t *)c->reason, strlen(c->reason), &chars) ||
            chars > GW_REASON_MAX || has_control(c->reason, 0))
            die("bad reason accepted", NULL);
    }
}

static void check_id(const gw_cmd *c)
{
    if (c->id == NULL)
        return;
    size_t n = in_store(c, c->id) ? strlen(c->id) : 0, chars;
    if (n < 1 || n > GW_CMD_ID_MAX || !ref_utf8((const uint8_t *)c->id, n, &chars) ||
        has_control(c->id, 0))
        die("bad id set", NULL);
}

static void check_msg(const char *m, gw_err_code rc)
{
    const char *end = memchr(m, 0, GW_ERR_MSG_MAX);
    if (end == NULL)
        die("message not terminated", NULL);
    size_t n = (size_t)(end - m), chars;
    if ((rc == GW_ERR_NONE) != (n == 0))
        die("message present exactly on refusal violated", m);
    if (!ref_utf8((const uint8_t *)m, n, &chars) || has_control(m, 0))
        die("message not clean UTF-8", NULL);
}

/* Write c back as JSON; NULL when it would not fit in a frame. */
static char *write_back(const gw_cmd *c, size_t *len)
{
    json_t *o = json_object();
    if (o == NULL)
        return NULL;
    json_object_set_new(o, "type", json_string(gw_cmd_type_name(c->type)));
    if (c->id != NULL)
        json_object_set_new(o, "id", json_string(c->id));
    if (c->room_id != NULL)
        json_object_set_new(o, "room_id", json_string(c->room_id));
    if (c->content != NULL)
        json_object_set_new(o, "content", json_string(c->content));
    if (c->target != NULL)
        json_object_set_new(o, "target", json_string(c->target));
    if (c->channel != NULL)
        json_object_set_new(o, "channel", json_string(c->channel));
    if (c->reason != NULL)
        json_object_set_new(o, "reason", json_string(c->reason));
    if (c->minutes != 0)
        json_object_set_new(o, "minutes", json_integer(c->minutes));
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (s != NULL && strlen(s) > GW_FRAME_MAX) {
        free(s);
        s = NULL;
    }
    if (s != NULL)
        *len = strlen(s);
    return s;
}

static int same_str(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cur_data = data;
    cur_size = size;
    const char *buf = (const char *)data;

    size_t ref_chars = 0;
    int ref_valid = ref_utf8(data, size, &ref_chars);
    if (gw_utf8_valid(buf, size) != (ref_valid != 0))
        die("gw_utf8_valid differs from the reference", NULL);
    if (ref_valid && gw_utf8_chars(buf, size) != ref_chars)
        die("gw_utf8_chars differs from the reference", NULL);

    char msg[GW_ERR_MSG_MAX];
    memset(msg, 0x7E, sizeof msg);
    gw_err_code rc = gw_cmd_parse(buf, size, &cmd, msg);
    if ((unsigned)rc >= GW_ERR__COUNT)
        die("unknown error code", NULL);
    if (rc != GW_ERR_NONE && rc != GW_ERR_BAD_REQUEST && rc != GW_ERR_INVALID_ROOM &&
        rc != GW_ERR_INVALID_TARGET)
        die("unexpected error code", gw_err_code_name(rc));
    check_msg(msg, rc);
    check_id(&cmd);
    if ((!ref_valid || size > GW_FRAME_MAX) && rc != GW_ERR_BAD_REQUEST)
        die("invalid UTF-8 or oversized frame not refused", msg);
    if (rc != GW_ERR_NONE)
        return 0;

    if (memchr(data, 0, size) != NULL)
        die("frame with a raw NUL byte accepted", NULL);
    check_ok(&cmd);

    size_t len = 0;
    char *json = write_back(&cmd, &len);
    if (json == NULL)
        return 0;
    char msg2[GW_ERR_MSG_MAX];
    gw_err_code rc2 = gw_cmd_parse(json, len, &again, msg2);
    if (rc2 != GW_ERR_NONE)
        die("written back, refused", msg2);
    if (again.type != cmd.type || !same_str(again.id, cmd.id) ||
        !same_str(again.room_id, cmd.room_id) || !same_str(again.content, cmd.content) ||
        !same_str(again.target, cmd.target) || !same_str(again.channel, cmd.channel) ||
        !same_str(again.reason, cmd.reason) || again.minutes != cmd.minutes ||
        again.content_len != cmd.content_len || again.content_chars != cmd.content_chars)
        die("written back, parsed differently", json);
    free(json);
    return 0;
}
