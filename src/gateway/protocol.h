/* SPDX-License-Identifier: MIT */
/*
 * protocol.h - the client-to-gateway commands of PROTOCOL.md section 3:
 * strict parsing of one text frame into a gw_cmd, with the error code and
 * message that the reply carries.
 *
 * A frame must be one JSON object (UTF-8, no duplicate keys) with a string
 * "type" naming a known command and exactly that command's fields, each of
 * the right type; "id" (1..64 bytes, any characters but control characters)
 * is allowed on every command. Anything else is GW_ERR_BAD_REQUEST with a
 * message naming the field and the rule, e.g. "content: must be a string".
 * The parser also checks what it can without the gateway's state:
 *   room_id  token charset 1..128 [A-Za-z0-9_-]          else GW_ERR_INVALID_ROOM
 *   target   token charset 1..128                         else GW_ERR_INVALID_TARGET
 *   content  1..10000 characters, no control characters
 *            other than \n and \t (the chat schema's rule)  else GW_ERR_BAD_REQUEST
 *            (more than 10000 characters: GW_ERR_TOO_LONG)
 *   channel  say local global whisper emote pose party     else GW_ERR_BAD_REQUEST
 *   minutes  integer 1..525600                             else GW_ERR_BAD_REQUEST
 *   reason   string, 0..200 characters, no control chars   else GW_ERR_BAD_REQUEST
 * A wrong JSON type (null included: it does not mean "absent") or a missing
 * required field is GW_ERR_BAD_REQUEST. Per-channel content limits
 * (too_long) and everything that needs state (rate limits, admin rights,
 * NATS) are the caller's.
 *
 * Runs on the gateway's loop thread; no globals, so any thread may call it.
 */
#ifndef MUDBUS_GW_PROTOCOL_H
#define MUDBUS_GW_PROTOCOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GW_FRAME_MAX   16384 /* bytes of one WebSocket message, both ways */
#define GW_CMD_ID_MAX  64
#define GW_TOKEN_MAX   128
#define GW_CONTENT_MAX 10000 /* characters (code points) */
#define GW_REASON_MAX  200
#define GW_MINUTES_MAX 525600

/* X(enum suffix, wire name) */
#define GW_CMD_TYPES(X)                                                                            \
    X(JOIN, "join")                                                                                \
    X(SAY, "say")                                                                                  \
    X(EMOTE, "emote")                                                                              \
    X(POSE, "pose")                                                                                \
    X(LOCAL, "local")                                                                              \
    X(GLOBAL, "global")                                                                            \
    X(WHISPER, "whisper")                                                                          \
    X(PARTY, "party")                                                                              \
    X(SYSTEM, "system")                                                                            \
    X(MUTE, "mute")                                                                                \
    X(UNMUTE, "unmute")                                                                            \
    X(MUTE_CHANNEL, "mute_channel")                                                                \
    X(UNMUTE_CHANNEL, "unmute_channel")                                                            \
    X(MUTE_GLOBAL, "mute_global")                                                                  \
    X(UNMUTE_GLOBAL, "unmute_global")                                                              \
    X(MUTES, "mutes")                                                                              \
    X(PING, "ping")

typedef enum gw_cmd_type {
#define GW_X(e, s) GW_CMD_##e,
    GW_CMD_TYPES(GW_X)
#undef GW_X
        GW_CMD__COUNT
} gw_cmd_type;

/* X(enum suffix, wire code) */
#define GW_ERR_CODES(X)                                                                            \
    X(BAD_REQUEST, "bad_request")                                                                  \
    X(INVALID_ROOM, "invalid_room")                                                                \
    X(INVALID_TARGET, "invalid_target")                                                            \
    X(TOO_LONG, "too_long")                                                                        \
    X(RATE_LIMITED, "rate_limited")                                                                \
    X(MUTED, "muted")                                                                              \
    X(FORBIDDEN, "forbidden")                                                                      \
    X(UNAVAILABLE, "unavailable")                                                                  \
    X(INTERNAL, "internal")

typedef enum gw_err_code {
    GW_ERR_NONE = 0,
#define GW_X(e, s) GW_ERR_##e,
    GW_ERR_CODES(GW_X)
#undef GW_X
        GW_ERR__COUNT
} gw_err_code;

const char *gw_cmd_type_name(gw_cmd_type t); /* "join", ...; "?" out of range */
const char *gw_err_code_name(gw_err_code c); /* "bad_request", ...; "none" for GW_ERR_NONE */

#define GW_ERR_MSG_MAX 160

/* A parsed command. String fields point into `store` (NUL-terminated, valid
 * until the next parse into the same gw_cmd); absent fields are NULL. */
typedef struct gw_cmd {
    gw_cmd_type type;
    const char *id;       /* NULL when the command had none */
    const char *room_id;  /* join */
    const char *content;  /* say emote pose local global whisper party system */
    size_t content_len;   /* bytes */
    size_t content_chars; /* code points, for the per-channel limits */
    const char *target;   /* whisper (required), system (optional), mute* (required) */
    const char *channel;  /* mute_channel, unmute_channel */
    const char *reason;   /* mute_global (optional) */
    int64_t minutes;      /* mute, mute_global; 0 when absent */
    char store[GW_FRAME_MAX + 64];
} gw_cmd;

/* Parse one complete text frame of `len` bytes (need not be NUL-terminated).
 * Returns GW_ERR_NONE (msg set to ""), or the error code with a one-line
 * message in msg (GW_ERR_MSG_MAX bytes, valid UTF-8, no control characters;
 * msg may be NULL). Even on error, cmd->id is set when the frame was an
 * object with a valid "id", so that the error reply can echo it; the other
 * fields are then unspecified. Frames larger than GW_FRAME_MAX are
 * GW_ERR_BAD_REQUEST (the server closes with 1009 before calling this), as
 * is invalid UTF-8 (1007). GW_ERR_INTERNAL only on out of memory. */
gw_err_code gw_cmd_parse(const char *buf, size_t len, gw_cmd *cmd, char *msg);

/* Whether buf[0..len) is valid UTF-8 (no overlongs, no surrogates, nothing
 * above U+10FFFF). The server closes with 1007 when a text frame is not. */
bool gw_utf8_valid(const char *buf, size_t len);

/* Whether s[0..n) is 1..GW_TOKEN_MAX bytes of [A-Za-z0-9_-] (ids, rooms). */
bool gw_is_token(const char *s, size_t n);

/* Code points in valid UTF-8. */
size_t gw_utf8_chars(const char *buf, size_t len);

#endif
