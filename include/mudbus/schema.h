/* SPDX-License-Identifier: MIT */
/*
 * schema: the chat and event message schemas of the wire contract
 * (PROTOCOL.md section 2), as a strict validator of raw JSON bytes and as an
 * encoder of typed C messages.
 *
 * Validation is one pass over the bytes with no allocation on the common path
 * (a generic object with many keys allocates a hash set for duplicate
 * detection). It is at least as strict as jansson with JSON_REJECT_DUPLICATES
 * about JSON syntax (a differential fuzz target proves it), and adds the schema
 * rules: no unknown fields, no type coercion, invalid UTF-8, NUL characters,
 * lone surrogates and duplicate keys refused, nesting and size limits, field
 * lengths and character sets, RFC 3339 UTC timestamps parsed (a 30 February is
 * refused). A refusal names the field and the rule, e.g.
 * `content: length 10001 exceeds 10000`.
 *
 * Nesting: the top-level object has depth 1, an object or array directly in it
 * depth 2, and so on; no container may be deeper than max_depth (default 10).
 * Numbers follow JSON's grammar; an integer outside the int64 range or a number
 * whose magnitude overflows a double is refused, as jansson refuses them.
 *
 * The encoder writes JSON that always passes the validator: it checks every
 * field with the same rules before writing, and refuses what the validator
 * would refuse.
 *
 * Threads: mb_schema objects are immutable after creation and may be used from
 * any number of threads at once; their metrics are atomic. The free functions
 * are thread-safe.
 */
#ifndef MUDBUS_SCHEMA_H
#define MUDBUS_SCHEMA_H

#include <stddef.h>
#include <stdint.h>

#include "mudbus/metrics.h"
#include "mudbus/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum mb_schema_kind {
    MB_SCHEMA_AUTO = 0, /* detect: event when event_type or event_data is present */
    MB_SCHEMA_CHAT = 1,
    MB_SCHEMA_EVENT = 2
} mb_schema_kind;

/* "auto", "chat" or "event"; "unknown" otherwise. Static. */
const char *mb_schema_kind_name(mb_schema_kind kind);
/* Parse "auto", "chat" or "event". MB_EINVAL for anything else. */
mb_status mb_schema_kind_parse(const char *s, mb_schema_kind *out);

#define MB_SCHEMA_MAX_BYTES_DEFAULT 65536u
#define MB_SCHEMA_MAX_DEPTH_DEFAULT 10u
/* Hard ceilings: configuration above them is refused. */
#define MB_SCHEMA_MAX_BYTES_LIMIT (64u * 1024u * 1024u)
#define MB_SCHEMA_MAX_DEPTH_LIMIT 64u

/* Limits of the validator. Zero fields take the defaults. max_bytes should
 * not exceed the NATS server's max_payload. */
typedef struct mb_schema_opts {
    size_t max_bytes;    /* whole payload, bytes; default 65536 */
    unsigned max_depth;  /* container nesting, top-level object = 1; default 10 */
    mb_metrics *metrics; /* NULL: the validator keeps no metrics */
} mb_schema_opts;

typedef struct mb_schema mb_schema;

/* Create a validator with the given limits (opts may be NULL: defaults).
 * Registers in opts->metrics, when given: mudbus_schema_validations_total,
 * mudbus_schema_failures_total{reason=...} and
 * mudbus_schema_validate_seconds (histogram). MB_EINVAL for limits above the
 * ceilings or a NULL out, MB_ENOMEM, or an error of the metrics registry (e.g.
 * MB_EEXIST when a second validator registers in the same registry). On error
 * nothing is created and the registry is left as it was. */
mb_status mb_schema_create(const mb_schema_opts *opts, mb_schema **out, mb_err *err);
void mb_schema_destroy(mb_schema *s);

/* Validate `len` bytes of JSON (no NUL terminator needed) against the schema
 * `kind`; MB_SCHEMA_AUTO detects it from the fields, for payloads that have no
 * subject. `s` may be NULL: default limits, no metrics. On success *detected
 * (if not NULL) receives the schema used.
 *
 * Returns MB_OK; MB_ETOOBIG when len exceeds max_bytes (nothing is read);
 * MB_EJSON for anything jansson would refuse too (syntax, invalid UTF-8,
 * \u0000, lone surrogates, duplicate keys, number overflow) and for raw NUL
 * bytes; MB_ESCHEMA for a well-formed document that breaks a schema rule (not
 * an object, unknown or missing field, wrong type, length, charset, timestamp,
 * nesting depth). The message in *err names the field and the rule. */
mb_status mb_schema_validate(const mb_schema *s, mb_schema_kind kind, const char *json, size_t len,
                             mb_schema_kind *detected, mb_err *err);

/* ---- typed messages ---- */

typedef enum mb_channel {
    MB_CHANNEL_SAY,
    MB_CHANNEL_LOCAL,
    MB_CHANNEL_GLOBAL,
    MB_CHANNEL_WHISPER,
    MB_CHANNEL_EMOTE,
    MB_CHANNEL_POSE,
    MB_CHANNEL_SYSTEM,
    MB_CHANNEL_ADMIN,
    MB_CHANNEL_PARTY,
    MB__CHANNEL_COUNT
} mb_channel;

/* "say", "local", ...; NULL for a value outside the enum. */
const char *mb_channel_name(mb_channel ch);
/* MB_EINVAL for a name that is not a channel. */
mb_status mb_channel_parse(const char *s, size_t len, mb_channel *out);

typedef enum mb_speaker_kind {
    MB_SPEAKER_UNSET = 0, /* field absent: receivers read it as "player" */
    MB_SPEAKER_PLAYER,
    MB_SPEAKER_NPC,
    MB_SPEAKER_SYSTEM
} mb_speaker_kind;

/* A chat message. Strings are NUL-terminated UTF-8 and borrowed for the call;
 * optional ones are NULL when absent. */
typedef struct mb_chat_msg {
    const char *message_id; /* NULL: a random id is generated */
    int64_t timestamp_ms;   /* Unix time in ms; 0: now (wall clock) */
    const char *sender_id;
    const char *sender_name;
    mb_channel channel;
    const char *content;
    const char *room_id;     /* optional */
    const char *subzone;     /* optional */
    const char *target_id;   /* optional */
    const char *party_id;    /* optional */
    const char *target_name; /* optional */
    mb_speaker_kind speaker_kind;
} mb_chat_msg;

/* A game event. event_data is the JSON text of an object (NULL: `{}`). */
typedef struct mb_event_msg {
    const char *message_id; /* NULL: a random id is generated */
    int64_t timestamp_ms;   /* Unix time in ms; 0: now */
    const char *event_type;
    const char *event_data;
    size_t event_data_len;
    const char *room_id;     /* optional */
    const char *player_id;   /* optional */
    const char *sender_id;   /* optional */
    const char *sender_name; /* optional */
} mb_event_msg;

/* Encode a message as JSON into buf (cap bytes) and NUL-terminate it: no
 * whitespace between fields; event_data is copied as given once it has been
 * checked (surrounding whitespace trimmed).
 * *out_len receives the length without the NUL. `s` may be NULL (default
 * limits). The result always passes mb_schema_validate with the same `s`.
 *
 * Returns MB_OK; MB_ESCHEMA when a field breaks a rule (the message names the
 * field and rule; nothing useful is in buf); MB_EJSON when event_data is not
 * valid JSON; MB_ETOOBIG when the encoding exceeds max_bytes; MB_ENOSPC when
 * buf is too small, with *out_len set to the length needed (without NUL). */
mb_status mb_chat_encode(const mb_schema *s, const mb_chat_msg *msg, char *buf, size_t cap,
                         size_t *out_len, mb_err *err);
mb_status mb_event_encode(const mb_schema *s, const mb_event_msg *msg, char *buf, size_t cap,
                          size_t *out_len, mb_err *err);

/* ---- timestamps and ids ---- */

/* Parse an RFC 3339 UTC timestamp: `YYYY-MM-DDTHH:MM:SS[.fraction]Z` (also
 * `+00:00` for Z), with real calendar checks (leap years; second 60 only at
 * 23:59). Fractions finer than a millisecond are truncated. MB_EINVAL with a
 * reason otherwise. */
mb_status mb_timestamp_parse(const char *s, size_t len, int64_t *unix_ms, mb_err *err);

/* Format Unix ms as `YYYY-MM-DDTHH:MM:SS.mmmZ` into buf (at least
 * MB_TIMESTAMP_MAX bytes); returns the length (24). Years outside 0..9999 are
 * clamped. */
#define MB_TIMESTAMP_MAX 32
size_t mb_timestamp_format(int64_t unix_ms, char *buf);

/* Write a new random message id (32 lowercase hex characters from the
 * kernel's random source) and a NUL into buf (at least MB_MESSAGE_ID_MAX
 * bytes). MB_EIO if no randomness could be read. */
#define MB_MESSAGE_ID_MAX 33
mb_status mb_message_id_generate(char *buf, mb_err *err);

#ifdef __cplusplus
}
#endif
#endif
