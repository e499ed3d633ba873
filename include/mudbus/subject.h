/* SPDX-License-Identifier: MIT */
/*
 * subject: the registry of NATS subject patterns (PROTOCOL.md section 1),
 * injection-proof subject building, publish-subject and subscription-pattern
 * validation.
 *
 * A pattern is a name (e.g. "chat_say_room"), a template of dot-separated
 * tokens (`chat.say.room.{room_id}`) in which a token is either a literal or a
 * `{placeholder}`, and the schema of the messages published on it. A registry
 * starts with the 28 patterns of the contract; callers may add more.
 *
 * Building substitutes parameters into a template; every value must be 1..128
 * bytes of [A-Za-z0-9_-] (the token rule), so a value can never add a token, a
 * wildcard or whitespace to the subject. Nothing is written from a bad value.
 *
 * Checking a publish subject matches it against a compiled token trie of all
 * patterns: cost grows with the number of tokens of the subject and the
 * patterns, never with the number of distinct subjects seen (each thread
 * remembers only its last subject, checked or built, so that checking it
 * again is one comparison). When several patterns match a subject, the most
 * specific one wins: at the first token where they differ, a literal beats a
 * placeholder.
 *
 * Threads: every function may be called from any thread at once, including
 * mb_subject_register concurrently with lookups. Lookups read an immutable
 * compiled snapshot through an atomic pointer and take no lock; registration
 * builds a new snapshot under a mutex and publishes it. Old snapshots are kept
 * until the registry is destroyed (registrations are rare and bounded by
 * MB_SUBJECT_MAX_PATTERNS).
 */
#ifndef MUDBUS_SUBJECT_H
#define MUDBUS_SUBJECT_H

#include <stddef.h>

#include "mudbus/metrics.h"
#include "mudbus/schema.h"
#include "mudbus/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MB_SUBJECT_MAX           255 /* bytes of a whole subject */
#define MB_SUBJECT_TOKEN_MAX     128 /* bytes of a token built from a parameter */
#define MB_SUBJECT_NAME_MAX      64  /* bytes of a pattern name */
#define MB_SUBJECT_MAX_PATTERNS  1024
#define MB_SUBJECT_MAX_WILDCARDS 2 /* in a subscription pattern */

typedef struct mb_subject_registry mb_subject_registry;

/* One parameter for mb_subject_build: placeholder name and value. */
typedef struct mb_subject_param {
    const char *name;
    const char *value;
} mb_subject_param;

/* What a subject or name resolved to. Pointers stay valid until the registry
 * is destroyed. */
typedef struct mb_subject_info {
    const char *name;    /* "chat_say_room" */
    const char *pattern; /* "chat.say.room.{room_id}" */
    mb_schema_kind schema;
} mb_subject_info;

/* Why a subject, parameter or subscription pattern was refused. Each reason is
 * counted in mudbus_subject_failures_total{reason="..."}. */
#define MB_SUBJECT_REASON_MAP(X)                                                                   \
    X(UNKNOWN_PATTERN, "unknown_pattern")                                                          \
    X(MISSING_PARAM, "missing_param")                                                              \
    X(UNEXPECTED_PARAM, "unexpected_param")                                                        \
    X(DUPLICATE_PARAM, "duplicate_param")                                                          \
    X(EMPTY_VALUE, "empty_value")                                                                  \
    X(BAD_CHAR, "bad_char")                                                                        \
    X(TOKEN_TOO_LONG, "token_too_long")                                                            \
    X(TOO_LONG, "too_long")                                                                        \
    X(EMPTY_TOKEN, "empty_token")                                                                  \
    X(NO_MATCH, "no_match")                                                                        \
    X(WILDCARD_FIRST, "wildcard_first")                                                            \
    X(TOO_MANY_WILDCARDS, "too_many_wildcards")                                                    \
    X(ALL_WILDCARDS, "all_wildcards")                                                              \
    X(GT_NOT_LAST, "gt_not_last")                                                                  \
    X(WILDCARD_IN_TOKEN, "wildcard_in_token")

typedef enum mb_subject_reason {
    MB_SUBJECT_OK = 0,
#define MB__SUBJECT_REASON_ENUM(id, str) MB_SUBJECT_##id,
    MB_SUBJECT_REASON_MAP(MB__SUBJECT_REASON_ENUM)
#undef MB__SUBJECT_REASON_ENUM
        MB__SUBJECT_REASON_COUNT
} mb_subject_reason;

/* "bad_char" etc.; "ok" for MB_SUBJECT_OK; "unknown" outside the enum. */
const char *mb_subject_reason_name(mb_subject_reason r);

/* Create a registry preloaded with the contract's 28 patterns. Metrics go into
 * `metrics` (NULL: a private registry, see mb_subject_registry_metrics):
 * mudbus_subject_builds_total, mudbus_subject_checks_total,
 * mudbus_subject_sub_checks_total, mudbus_subject_failures_total{reason},
 * mudbus_subject_build_seconds and mudbus_subject_check_seconds (histograms).
 * MB_EINVAL for NULL out; MB_ENOMEM; a metrics error (MB_EEXIST when a second
 * subject registry uses the same metrics registry). Nothing is created on
 * error, and a caller's `metrics` is left as it was (metrics registered
 * before a later step failed are taken back). */
mb_status mb_subject_registry_create(mb_metrics *metrics, mb_subject_registry **out, mb_err *err);
void mb_subject_registry_destroy(mb_subject_registry *r);

/* The metrics registry the subject registry counts into. */
mb_metrics *mb_subject_registry_metrics(const mb_subject_registry *r);

/* Register a pattern. `name` is 1..64 bytes of [a-z0-9_]; `pattern` is 1..255
 * bytes of dot-separated tokens, each a literal of [A-Za-z0-9_-] (1..128 bytes)
 * or `{param}` with param [a-z_][a-z0-9_]* (1..32 bytes), each param once;
 * `schema` is MB_SCHEMA_CHAT or MB_SCHEMA_EVENT.
 *
 * Returns MB_EEXIST for a name already registered or a pattern that matches
 * exactly the same subjects as an existing one (the error names it);
 * MB_EPATTERN for a malformed pattern (the error says which token and why);
 * MB_EINVAL for a bad name or schema; MB_ENOSPC past MB_SUBJECT_MAX_PATTERNS;
 * MB_ENOMEM. On error the registry is unchanged. */
mb_status mb_subject_register(mb_subject_registry *r, const char *name, const char *pattern,
                              mb_schema_kind schema, mb_err *err);

/* Number of registered patterns, and the i-th in registration order
 * (MB_ENOTFOUND past the end, MB_EINVAL for a NULL r or out). */
size_t mb_subject_count(const mb_subject_registry *r);
mb_status mb_subject_at(const mb_subject_registry *r, size_t i, mb_subject_info *out);

/* Look a pattern up by name: MB_ENOTFOUND if there is none; MB_EINVAL for a
 * NULL r or name. `out` may be NULL (existence check). */
mb_status mb_subject_lookup(const mb_subject_registry *r, const char *name, mb_subject_info *out,
                            mb_err *err);

/* Build the subject of pattern `name` with `nparams` parameters into buf (cap
 * bytes; MB_SUBJECT_MAX + 1 always suffices), NUL-terminated; *out_len (may be
 * NULL) receives its length.
 *
 * Returns MB_ENOTFOUND for an unknown pattern (*reason unknown_pattern);
 * MB_ESUBJECT for a missing, unexpected or repeated parameter, a value that
 * breaks the token rule (empty, over 128 bytes, any byte outside
 * [A-Za-z0-9_-]) or a result over 255 bytes: the message names the pattern,
 * the parameter and the rule, and *reason (may be NULL) says which;
 * MB_ENOSPC when cap is too small; MB_EINVAL for NULL arguments (a NULL
 * params with nparams > 0, or a parameter with a NULL name or value). On
 * error buf holds an empty string (when cap > 0). */
mb_status mb_subject_build(mb_subject_registry *r, const char *name, const mb_subject_param *params,
                           size_t nparams, char *buf, size_t cap, size_t *out_len,
                           mb_subject_reason *reason, mb_err *err);

/* Check that `subject` (len bytes) may be published: 1..255 bytes, tokens
 * non-empty and of the token charset, matching a registered pattern (token
 * count, literal tokens, placeholder tokens of at most 128 bytes). On success
 * *out (may be NULL) says which pattern and schema. Bytes past `len` are not
 * read; an empty subject is reported as empty_token, any token over 128 bytes
 * as token_too_long.
 *
 * Returns MB_OK or MB_ESUBJECT (message and *reason say why); MB_EINVAL for a
 * NULL r, or a NULL subject with len > 0. */
mb_status mb_subject_check(mb_subject_registry *r, const char *subject, size_t len,
                           mb_subject_info *out, mb_subject_reason *reason, mb_err *err);

/* Check a subscription pattern against the breadth rules: 1..255 bytes,
 * non-empty tokens, literals of the token charset, `*` and `>` only as whole
 * tokens, at most 2 wildcard tokens, the first token never a wildcard, not all
 * tokens wildcards, `>` only as the last token. Literal tokens are at most
 * 128 bytes, as in a publish subject. When several rules are broken, the byte
 * rules are reported first, then all_wildcards, wildcard_first, gt_not_last,
 * too_many_wildcards.
 *
 * Returns MB_OK or MB_ESUBJECT (message and *reason name the rule); MB_EINVAL
 * for a NULL r, or a NULL pattern with len > 0. */
mb_status mb_subject_check_sub(mb_subject_registry *r, const char *pattern, size_t len,
                               mb_subject_reason *reason, mb_err *err);

/* Room ids look like {plane}_{zone}_{subzone}_{room}: write the subzone (the
 * third `_`-separated part, or "unknown" when there are fewer than three or
 * it is empty) into buf. MB_ESUBJECT when room_id breaks the token rule;
 * MB_ENOSPC when buf is too small (MB_SUBJECT_TOKEN_MAX + 1 always suffices);
 * MB_EINVAL for NULL arguments. On error buf holds "" (when cap > 0). */
mb_status mb_subject_room_subzone(const char *room_id, char *buf, size_t cap, mb_err *err);

#ifdef __cplusplus
}
#endif
#endif
