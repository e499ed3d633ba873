/* SPDX-License-Identifier: MIT */
/*
 * json: the strict single-pass JSON scanner under the schema validator.
 * Internal to the library.
 *
 * The scanner validates without building a tree. Its syntax rules are those of
 * jansson 2.14 with JSON_REJECT_DUPLICATES (strict RFC 8259 grammar; strict
 * UTF-8 without overlongs, surrogates or code points above U+10FFFF; no \u0000;
 * no lone surrogate escapes; duplicate keys compared after unescaping; integers
 * within int64; numbers whose magnitude overflows a double refused; at most
 * 2048 levels of value nesting), plus one rule jansson misses: a raw NUL byte
 * is refused anywhere. fuzz/fuzz_json_diff.c checks the equivalence.
 *
 * Threads: no shared state; any thread.
 */
#ifndef MUDBUS_JSON_H
#define MUDBUS_JSON_H

#include <stddef.h>
#include <stdint.h>

#include "mudbus/status.h"

/* jansson's JSON_PARSER_MAX_DEPTH: a value may sit inside at most 2047
 * containers, a container inside at most 2047 others. */
#define MB__JSON_JANSSON_DEPTH 2048u

/* Facts about one string, gathered while scanning it. */
enum {
    MB__JSTR_ESCAPED = 1u << 0,  /* contains a backslash escape */
    MB__JSTR_NONTOKEN = 1u << 1, /* a character outside [A-Za-z0-9_-] */
    MB__JSTR_CTRL = 1u << 2,     /* a Cc character other than \n and \t */
    MB__JSTR_NLTAB = 1u << 3,    /* \n or \t */
    MB__JSTR_PLAIN = 1u << 4     /* raw is plain UTF-8, not JSON text (encoder input) */
};

typedef struct mb__json_str {
    const char *raw; /* first byte after the opening quote */
    size_t raw_len;  /* bytes up to the closing quote */
    size_t chars;    /* code points after unescaping */
    size_t bytes;    /* UTF-8 bytes after unescaping */
    unsigned flags;  /* MB__JSTR_* */
} mb__json_str;

/* Scanner state. Callers initialise it with mb__json_scan_init, drive it with
 * the functions below and release it with mb__json_scan_fini. On MB_EJSON the
 * position is unspecified and the reason is in err. */
typedef struct mb__json_key {
    const char *raw; /* key text as scanned (escapes not resolved) */
    uint32_t raw_len;
    uint32_t obj;     /* serial number of the object holding the key; 0 = empty slot */
    uint32_t hash;    /* hash of the unescaped key */
    uint32_t escaped; /* raw holds backslash escapes */
} mb__json_key;

#define MB__JSON_INLINE_KEYS 32

typedef struct mb__json_scan {
    const unsigned char *start, *p, *end;
    unsigned schema_depth; /* containers deeper than this are a schema error (0: no limit) */
    size_t depth_error_at; /* offset of the first such container, or SIZE_MAX */
    unsigned depth_seen;   /* depth of that container */
    uint32_t next_obj;     /* next object serial number */
    mb__json_key *keys;    /* open-addressing set of (object, key) */
    size_t key_cap, key_count;
    mb__json_key inline_keys[MB__JSON_INLINE_KEYS];
    uint32_t *levels; /* per open container: object serial, 0 for arrays */
    size_t level_cap;
    uint32_t inline_levels[32];
    mb_err *err;
} mb__json_scan;

void mb__json_scan_init(mb__json_scan *s, const char *buf, size_t len, unsigned schema_depth,
                        mb_err *err);
void mb__json_scan_fini(mb__json_scan *s);

/* Skip JSON whitespace. */
static inline void mb__json_ws(mb__json_scan *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\n' || *s->p == '\r' || *s->p == '\t'))
        s->p++;
}

/* Scan the string at s->p (which must be '"') into *out and move past it.
 * MB_EJSON for a malformed string. */
mb_status mb__json_string(mb__json_scan *s, mb__json_str *out);

/* Scan one value of any type at s->p, of value depth `depth` (the top-level
 * value has depth 1), and move past it. Containers deeper than schema_depth
 * are recorded in depth_error_at, not refused. MB_EJSON / MB_ENOMEM. */
mb_status mb__json_value(mb__json_scan *s, unsigned depth);

/* Record key `k` of object `obj` and refuse it (MB_EJSON) if the object has
 * it already. MB_ENOMEM if the set cannot grow. */
mb_status mb__json_key_add(mb__json_scan *s, uint32_t obj, const mb__json_str *k);

/* Refuse with MB_EJSON: "json: <what> at byte N" at the current position. */
mb_status mb__json_fail(mb__json_scan *s, const char *what);

/* Next code point of a scanned (already validated) string: *pos walks from
 * s->raw to s->raw + s->raw_len. */
uint32_t mb__json_next_cp(const mb__json_str *s, const char **pos);

/* Measure a plain (not JSON-escaped) UTF-8 string like a scanned one, for
 * the encoder. MB_EINVAL if it is not valid UTF-8; *bad_at gets the offset. */
mb_status mb__json_measure(const char *p, size_t len, mb__json_str *out, size_t *bad_at);

/* Check that buf is exactly one JSON value (any type at the top, surrounding
 * whitespace allowed) by the rules above. MB_OK or MB_EJSON with the byte
 * offset and reason in *err; MB_ENOMEM if a duplicate-key table could not be
 * allocated. */
mb_status mb__json_check(const char *buf, size_t len, mb_err *err);

/* Write the unescaped UTF-8 of a scanned string into out (cap bytes, no NUL
 * added). Returns the decoded length, or (size_t)-1 if it does not fit. */
size_t mb__json_decode(const mb__json_str *s, char *out, size_t cap);

#endif
