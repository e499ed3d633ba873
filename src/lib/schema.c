/* SPDX-License-Identifier: MIT */
/*
 * schema: validation of chat and event payloads (docs/SCHEMA.md) and encoding
 * of typed messages.
 *
 * Validation is one pass of the json scanner over the bytes. The top-level
 * object is walked here: each key is matched against the 15 field names of
 * the two schemas (a key that is none of them is remembered as unknown and
 * put into the scanner's duplicate-key set), and the value of a known field is
 * scanned and classified into a slot. After the closing brace, and only if the
 * whole document is well-formed JSON, the slots are checked against the
 * schema's table: presence, type, then the field's rule. So malformed JSON is
 * always reported as MB_EJSON, even when it also breaks a schema rule, and a
 * well-formed message costs one scan plus a few comparisons per field.
 *
 * The encoder checks every field of a typed message with the same rule
 * functions as the validator, so it cannot produce what the validator
 * refuses. A field of ASCII is checked while it is written, in one pass
 * (w_fast); a field with UTF-8, or one that the pass cannot decide, is
 * measured by mb__json_measure, checked, then written. The timestamp text of
 * the last second is kept per thread.
 *
 * Threads: an mb_schema is immutable after creation; metrics are atomic.
 */
#include "mudbus/schema.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/random.h>

#include "alloc.h"
#include "bytes.h"
#include "metrics_int.h"
#include "json.h"
#include "mudbus/clock.h"

/* ---- reasons, for metrics ---- */

#define REASON_MAP(X)                                                                              \
    X(TOO_BIG, "too_big")                                                                          \
    X(JSON, "json")                                                                                \
    X(NOT_OBJECT, "not_object")                                                                    \
    X(DEPTH, "depth")                                                                              \
    X(UNKNOWN_FIELD, "unknown_field")                                                              \
    X(MISSING_FIELD, "missing_field")                                                              \
    X(WRONG_TYPE, "wrong_type")                                                                    \
    X(LENGTH, "length")                                                                            \
    X(CHARSET, "charset")                                                                          \
    X(CONTROL, "control_char")                                                                     \
    X(BAD_VALUE, "bad_value")                                                                      \
    X(TIMESTAMP, "timestamp")                                                                      \
    X(OTHER, "other")

enum reason {
#define X(id, s) REASON_##id,
    REASON_MAP(X)
#undef X
        REASON_COUNT
};

static const char *const reason_names[] = {
#define X(id, s) s,
    REASON_MAP(X)
#undef X
};

struct mb_schema {
    size_t max_bytes;
    unsigned max_depth;
    mb_counter *validations;
    mb_counter *failures[REASON_COUNT];
    mb_histogram *seconds;
};

/* ---- fields ---- */

enum field {
    F_MESSAGE_ID,
    F_TIMESTAMP,
    F_SENDER_ID,
    F_SENDER_NAME,
    F_CHANNEL,
    F_CONTENT,
    F_ROOM_ID,
    F_SUBZONE,
    F_TARGET_ID,
    F_PARTY_ID,
    F_TARGET_NAME,
    F_SPEAKER_KIND,
    F_EVENT_TYPE,
    F_EVENT_DATA,
    F_PLAYER_ID,
    F_COUNT
};

static const struct {
    const char *name;
    size_t len;
} field_names[F_COUNT] = {
    {"message_id", 10}, {"timestamp", 9},   {"sender_id", 9},    {"sender_name", 11},
    {"channel", 7},     {"content", 7},     {"room_id", 7},      {"subzone", 7},
    {"target_id", 9},   {"party_id", 8},    {"target_name", 11}, {"speaker_kind", 12},
    {"event_type", 10}, {"event_data", 10}, {"player_id", 9},
};

enum rule {
    R_ID,
    R_TOKEN,
    R_SHORT_TOKEN,
    R_TIMESTAMP,
    R_NAME,
    R_TEXT,
    R_CHANNEL,
    R_SPEAKER,
    R_OBJECT
};

typedef struct field_spec {
    enum field id;
    enum rule rule;
    bool required;
} field_spec;

static const field_spec chat_spec[] = {
    {F_MESSAGE_ID, R_ID, true},     {F_TIMESTAMP, R_TIMESTAMP, true},
    {F_SENDER_ID, R_TOKEN, true},   {F_SENDER_NAME, R_NAME, true},
    {F_CHANNEL, R_CHANNEL, true},   {F_CONTENT, R_TEXT, true},
    {F_ROOM_ID, R_TOKEN, false},    {F_SUBZONE, R_TOKEN, false},
    {F_TARGET_ID, R_TOKEN, false},  {F_PARTY_ID, R_TOKEN, false},
    {F_TARGET_NAME, R_NAME, false}, {F_SPEAKER_KIND, R_SPEAKER, false},
};

static const field_spec event_spec[] = {
    {F_MESSAGE_ID, R_ID, true},          {F_TIMESTAMP, R_TIMESTAMP, true},
    {F_EVENT_TYPE, R_SHORT_TOKEN, true}, {F_EVENT_DATA, R_OBJECT, true},
    {F_ROOM_ID, R_TOKEN, false},         {F_PLAYER_ID, R_TOKEN, false},
    {F_SENDER_ID, R_TOKEN, false},       {F_SENDER_NAME, R_NAME, false},
};

enum vtype { VT_ABSENT = 0, VT_NULL, VT_STRING, VT_NUMBER, VT_BOOL, VT_OBJECT, VT_ARRAY };

static const char *const vtype_names[] = {"nothing", "null",   "string", "number",
                                          "boolean", "object", "array"};

typedef struct slot {
    enum vtype type;
    size_t key_at; /* byte offset of the key, for document order */
    mb__json_str str;
} slot;

static const char *const channel_names[MB__CHANNEL_COUNT] = {
    "say", "local", "global", "whisper", "emote", "pose", "system", "admin", "party"};

static const char *const speaker_names[] = {NULL, "player", "npc", "system"};

/* ---- small helpers ---- */

const char *mb_schema_kind_name(mb_schema_kind kind)
{
    switch (kind) {
    case MB_SCHEMA_AUTO:
        return "auto";
    case MB_SCHEMA_CHAT:
        return "chat";
    case MB_SCHEMA_EVENT:
        return "event";
    }
    return "unknown";
}

mb_status mb_schema_kind_parse(const char *s, mb_schema_kind *out)
{
    if (s == NULL || out == NULL)
        return MB_EINVAL;
    for (int k = MB_SCHEMA_AUTO; k <= MB_SCHEMA_EVENT; k++) {
        if (strcmp(s, mb_schema_kind_name((mb_schema_kind)k)) == 0) {
            *out = (mb_schema_kind)k;
            return MB_OK;
        }
    }
    return MB_EINVAL;
}

const char *mb_channel_name(mb_channel ch)
{
    if ((unsigned)ch >= MB__CHANNEL_COUNT)
        return NULL;
    return channel_names[ch];
}

mb_status mb_channel_parse(const char *s, size_t len, mb_channel *out)
{
    if (s == NULL || out == NULL)
        return MB_EINVAL;
    for (unsigned i = 0; i < MB__CHANNEL_COUNT; i++) {
        if (strlen(channel_names[i]) == len && memcmp(channel_names[i], s, len) == 0) {
            *out = (mb_channel)i;
            return MB_OK;
        }
    }
    return MB_EINVAL;
}

/* Show an untrusted code point in a message: 'x' for printable ASCII, U+XXXX
 * otherwise. */
static void show_cp(uint32_t cp, char *buf, size_t cap)
{
    if (cp >= 0x21 && cp < 0x7F && cp != '\'')
        snprintf(buf, cap, "'%c'", (char)cp);
    else
        snprintf(buf, cap, "U+%04X", (unsigned)cp);
}

/* ---- timestamps ---- */

static int is_leap(int y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int days_in_month(int y, int m)
{
    static const int dim[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && is_leap(y) ? 29 : dim[m - 1];
}

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
 * days_from_civil). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int digits(const char *s, size_t n, int *out)
{
    int v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return 0;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 1;
}

mb_status mb_timestamp_parse(const char *s, size_t len, int64_t *unix_ms, mb_err *err)
{
    int y, mo, d, h, mi, sec;
    if (s == NULL)
        return mb_err_set(err, MB_EINVAL, "timestamp: NULL");
    if (len < 20)
        return mb_err_set(err, MB_EINVAL, "timestamp: too short for YYYY-MM-DDTHH:MM:SSZ");
    if (!digits(s, 4, &y) || s[4] != '-' || !digits(s + 5, 2, &mo) || s[7] != '-' ||
        !digits(s + 8, 2, &d))
        return mb_err_set(err, MB_EINVAL, "timestamp: date is not YYYY-MM-DD");
    if (s[10] != 'T')
        return mb_err_set(err, MB_EINVAL, "timestamp: 'T' expected after the date");
    if (!digits(s + 11, 2, &h) || s[13] != ':' || !digits(s + 14, 2, &mi) || s[16] != ':' ||
        !digits(s + 17, 2, &sec))
        return mb_err_set(err, MB_EINVAL, "timestamp: time is not HH:MM:SS");
    if (mo < 1 || mo > 12)
        return mb_err_set(err, MB_EINVAL, "timestamp: month %02d out of range", mo);
    if (d < 1 || d > days_in_month(y, mo))
        return mb_err_set(err, MB_EINVAL, "timestamp: day %02d out of range for %04d-%02d", d, y,
                          mo);
    if (h > 23)
        return mb_err_set(err, MB_EINVAL, "timestamp: hour %02d out of range", h);
    if (mi > 59)
        return mb_err_set(err, MB_EINVAL, "timestamp: minute %02d out of range", mi);
    if (sec > 60 || (sec == 60 && !(h == 23 && mi == 59)))
        return mb_err_set(err, MB_EINVAL, "timestamp: second %02d out of range", sec);
    size_t i = 19;
    int ms = 0;
    if (s[i] == '.') {
        size_t f = ++i;
        while (i < len && s[i] >= '0' && s[i] <= '9') {
            if (i - f < 3)
                ms = ms * 10 + (s[i] - '0');
            i++;
        }
        size_t nf = i - f;
        if (nf == 0 || nf > 9)
            return mb_err_set(err, MB_EINVAL, "timestamp: fraction must have 1 to 9 digits");
        for (size_t k = nf; k < 3; k++)
            ms *= 10;
    }
    if (i == len - 1 && s[i] == 'Z') {
        /* UTC */
    } else if (len - i == 6 && memcmp(s + i, "+00:00", 6) == 0) {
        /* UTC as an offset */
    } else {
        return mb_err_set(err, MB_EINVAL, "timestamp: must end in Z (UTC)");
    }
    if (unix_ms != NULL) {
        /* A leap second is counted as the last second of the minute. */
        int64_t days = days_from_civil(y, mo, d);
        int64_t secs = days * 86400 + h * 3600 + mi * 60 + (sec == 60 ? 59 : sec);
        *unix_ms = secs * 1000 + ms;
    }
    return MB_OK;
}

size_t mb_timestamp_format(int64_t unix_ms, char *buf)
{
    /* Clamp to 0000-01-01 .. 9999-12-31T23:59:59.999. */
    const int64_t lo = days_from_civil(0, 1, 1) * 86400000;
    const int64_t hi = days_from_civil(10000, 1, 1) * 86400000 - 1;
    if (unix_ms < lo)
        unix_ms = lo;
    if (unix_ms > hi)
        unix_ms = hi;
    int64_t ms = unix_ms % 86400000;
    int64_t z = unix_ms / 86400000;
    if (ms < 0) {
        ms += 86400000;
        z--;
    }
    /* civil_from_days */
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t y = yoe + era * 400;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    int d = (int)(doy - (153 * mp + 2) / 5 + 1);
    int m = (int)(mp < 10 ? mp + 3 : mp - 9);
    y += m <= 2;
    /* Digits by hand: this runs once per encoded message. */
    int fields[7] = {
        (int)y,          m, d, (int)(ms / 3600000), (int)(ms / 60000 % 60), (int)(ms / 1000 % 60),
        (int)(ms % 1000)};
    static const int widths[7] = {4, 2, 2, 2, 2, 2, 3};
    static const char seps[7] = {'-', '-', 'T', ':', ':', '.', 'Z'};
    char *p = buf;
    for (int i = 0; i < 7; i++) {
        for (int k = widths[i] - 1; k >= 0; k--) {
            p[k] = (char)('0' + fields[i] % 10);
            fields[i] /= 10;
        }
        p += widths[i];
        *p++ = seps[i];
    }
    *p = '\0';
    return (size_t)(p - buf);
}

/* Message ids come from a per-thread xoroshiro128++ generator seeded with 128
 * bits from the kernel (getrandom) on the thread's first id and again after a
 * fork (a child must not repeat its parent's ids): one system call per thread
 * instead of one per message. Ids need uniqueness, not secrecy. */
static _Atomic unsigned fork_generation;
static pthread_once_t fork_hook_once = PTHREAD_ONCE_INIT;

static void after_fork_child(void)
{
    atomic_fetch_add(&fork_generation, 1);
}

static void install_fork_hook(void)
{
    pthread_atfork(NULL, NULL, after_fork_child);
}

typedef struct id_rng {
    uint64_t s[2];
    unsigned generation;
    bool seeded;
} id_rng;

static _Thread_local id_rng tl_rng;

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t id_next(id_rng *r)
{
    uint64_t s0 = r->s[0], s1 = r->s[1];
    uint64_t out = rotl(s0 + s1, 17) + s0;
    s1 ^= s0;
    r->s[0] = rotl(s0, 49) ^ s1 ^ (s1 << 21);
    r->s[1] = rotl(s1, 28);
    return out;
}

mb_status mb_message_id_generate(char *buf, mb_err *err)
{
    id_rng *r = &tl_rng;
    pthread_once(&fork_hook_once, install_fork_hook);
    unsigned gen = atomic_load(&fork_generation);
    if (!r->seeded || r->generation != gen) {
        unsigned char seed[16];
        size_t got = 0;
        while (got < sizeof seed) {
            ssize_t n = getrandom(seed + got, sizeof seed - got, 0);
            if (n < 0) {
                if (errno == EINTR)
                    continue;
                return mb_err_set(err, MB_EIO, "message id: cannot read random bytes: %s",
                                  strerror(errno));
            }
            got += (size_t)n;
        }
        memcpy(r->s, seed, sizeof seed);
        if (r->s[0] == 0 && r->s[1] == 0)
            r->s[1] = 1; /* the all-zero state is a fixed point */
        r->generation = gen;
        r->seeded = true;
    }
    uint64_t v[2] = {id_next(r), id_next(r)};
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++)
        buf[i] = hex[(v[i / 16] >> (60 - 4 * (i % 16))) & 15];
    buf[32] = '\0';
    return MB_OK;
}

/* ---- rules ---- */

typedef struct check_ctx {
    mb_err *err;
    enum reason reason;
} check_ctx;

static mb_status refuse(check_ctx *c, enum reason r, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

static mb_status refuse(check_ctx *c, enum reason r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    mb_err_vset(c->err, MB_ESCHEMA, fmt, ap);
    va_end(ap);
    c->reason = r;
    return MB_ESCHEMA;
}

/* Find the first code point for which bad() holds; report it. */
static mb_status refuse_char(check_ctx *c, const char *field, const mb__json_str *s,
                             int (*bad)(uint32_t), enum reason r, const char *what)
{
    const char *pos = s->raw, *end = s->raw + s->raw_len;
    size_t idx = 0;
    while (pos < end) {
        uint32_t cp = mb__json_next_cp(s, &pos);
        if (bad(cp)) {
            char shown[16];
            show_cp(cp, shown, sizeof shown);
            return refuse(c, r, "%s: %s %s at character %zu", field, what, shown, idx + 1);
        }
        idx++;
    }
    return refuse(c, r, "%s: %s", field, what);
}

static int not_token_cp(uint32_t cp)
{
    return !((cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z') || (cp >= '0' && cp <= '9') ||
             cp == '_' || cp == '-');
}

static int is_cc(uint32_t cp)
{
    return cp < 0x20 || (cp >= 0x7F && cp <= 0x9F);
}

static int is_cc_text(uint32_t cp)
{
    return is_cc(cp) && cp != '\n' && cp != '\t';
}

static mb_status check_token(check_ctx *c, const char *field, const mb__json_str *s, size_t max)
{
    if (s->bytes == 0)
        return refuse(c, REASON_LENGTH, "%s: empty (1 to %zu characters of [A-Za-z0-9_-])", field,
                      max);
    if (s->flags & MB__JSTR_NONTOKEN)
        return refuse_char(c, field, s, not_token_cp, REASON_CHARSET,
                           "character outside [A-Za-z0-9_-]:");
    if (s->bytes > max)
        return refuse(c, REASON_LENGTH, "%s: length %zu exceeds %zu bytes", field, s->bytes, max);
    return MB_OK;
}

static mb_status check_chars(check_ctx *c, const char *field, const mb__json_str *s, size_t max,
                             bool text)
{
    if (s->chars == 0)
        return refuse(c, REASON_LENGTH, "%s: empty (1 to %zu characters)", field, max);
    if (s->chars > max)
        return refuse(c, REASON_LENGTH, "%s: length %zu exceeds %zu characters", field, s->chars,
                      max);
    if (text ? (s->flags & MB__JSTR_CTRL) : (s->flags & (MB__JSTR_CTRL | MB__JSTR_NLTAB)))
        return refuse_char(c, field, s, text ? is_cc_text : is_cc, REASON_CONTROL,
                           "control character");
    return MB_OK;
}

/* Decode a short string value for enum/timestamp checks; NULL if too long. */
static const char *short_value(const mb__json_str *s, char *buf, size_t cap, size_t *len)
{
    if (!(s->flags & MB__JSTR_ESCAPED) || (s->flags & MB__JSTR_PLAIN)) {
        *len = s->raw_len;
        return s->raw;
    }
    size_t n = mb__json_decode(s, buf, cap);
    if (n == (size_t)-1)
        return NULL;
    *len = n;
    return buf;
}

static mb_status check_enum(check_ctx *c, const char *field, const mb__json_str *s,
                            const char *const *names, size_t n, const char *list)
{
    char buf[32];
    size_t len;
    const char *v = short_value(s, buf, sizeof buf, &len);
    for (size_t i = 0; v != NULL && i < n; i++) {
        if (names[i] != NULL && strlen(names[i]) == len && memcmp(names[i], v, len) == 0)
            return MB_OK;
    }
    if (v == NULL || len > 20 || memchr(v, '\'', len) != NULL)
        return refuse(c, REASON_BAD_VALUE, "%s: value is not one of %s", field, list);
    for (size_t i = 0; i < len; i++) {
        if ((unsigned char)v[i] < 0x20 || (unsigned char)v[i] >= 0x7F)
            return refuse(c, REASON_BAD_VALUE, "%s: value is not one of %s", field, list);
    }
    return refuse(c, REASON_BAD_VALUE, "%s: '%.*s' is not one of %s", field, (int)len, v, list);
}

static mb_status check_timestamp(check_ctx *c, const char *field, const mb__json_str *s)
{
    char buf[48];
    size_t len;
    const char *v = short_value(s, buf, sizeof buf, &len);
    if (v == NULL || len > 40)
        return refuse(c, REASON_TIMESTAMP, "%s: too long for an RFC 3339 timestamp", field);
    mb_err e = {MB_OK, ""};
    if (mb_timestamp_parse(v, len, NULL, &e) != MB_OK) {
        /* e.msg starts with "timestamp: "; keep the field name of the caller. */
        const char *why = strchr(e.msg, ':');
        return refuse(c, REASON_TIMESTAMP, "%s:%s", field, why ? why + 1 : " invalid");
    }
    return MB_OK;
}

/* Check one string field against its rule. */
static mb_status check_rule(check_ctx *c, enum rule rule, const char *field, const mb__json_str *s)
{
    switch (rule) {
    case R_ID:
    case R_SHORT_TOKEN:
        return check_token(c, field, s, 64);
    case R_TOKEN:
        return check_token(c, field, s, 128);
    case R_TIMESTAMP:
        return check_timestamp(c, field, s);
    case R_NAME:
        return check_chars(c, field, s, 64, false);
    case R_TEXT:
        return check_chars(c, field, s, 10000, true);
    case R_CHANNEL:
        return check_enum(c, field, s, channel_names, MB__CHANNEL_COUNT,
                          "say local global whisper emote pose system admin party");
    case R_SPEAKER:
        return check_enum(c, field, s, speaker_names, 4, "player npc system");
    case R_OBJECT:
        break;
    }
    return MB_OK;
}

/* ---- validation ---- */

typedef struct doc {
    slot f[F_COUNT];
    enum vtype top;          /* type of the top-level value */
    size_t unknown_at;       /* offset of the first unknown key, SIZE_MAX if none */
    mb__json_str unknown;    /* that key */
    const char *depth_field; /* field whose value nests too deep */
    unsigned depth_seen;     /* the depth found there */
    char depth_field_buf[48];
} doc;

static int lookup_field(const mb__json_str *k)
{
    char buf[16];
    size_t len;
    const char *v = short_value(k, buf, sizeof buf, &len);
    if (v == NULL)
        return -1;
    for (int i = 0; i < F_COUNT; i++) {
        if (field_names[i].len == len && memcmp(field_names[i].name, v, len) == 0)
            return i;
    }
    return -1;
}

static enum vtype type_of(unsigned char c)
{
    switch (c) {
    case '"':
        return VT_STRING;
    case '{':
        return VT_OBJECT;
    case '[':
        return VT_ARRAY;
    case 't':
    case 'f':
        return VT_BOOL;
    case 'n':
        return VT_NULL;
    default:
        return VT_NUMBER;
    }
}

static void copy_key_name(const mb__json_str *k, char *buf, size_t cap)
{
    size_t o = 0;
    const char *pos = k->raw, *end = k->raw + k->raw_len;
    while (pos < end && o + 8 < cap) {
        uint32_t cp = mb__json_next_cp(k, &pos);
        if (cp >= 0x20 && cp < 0x7F)
            buf[o++] = (char)cp;
        else
            o += (size_t)snprintf(buf + o, cap - o, "\\u%04X",
                                  (unsigned)(cp > 0xFFFF ? 0xFFFD : cp));
    }
    if (pos < end && o + 4 <= cap) {
        memcpy(buf + o, "...", 3);
        o += 3;
    }
    buf[o] = '\0';
}

/* Scan the document into d. MB_EJSON/MB_ENOMEM for what is not well-formed. */
static mb_status scan_doc(mb__json_scan *sc, doc *d)
{
    mb_status st;
    mb__json_ws(sc);
    if (sc->p >= sc->end)
        return mb__json_fail(sc, "empty document");
    d->top = type_of(*sc->p);
    if (*sc->p != '{') {
        if ((st = mb__json_value(sc, 1)) != MB_OK)
            return st;
        goto trailing;
    }
    uint32_t obj = sc->next_obj++;
    sc->p++;
    mb__json_ws(sc);
    if (sc->p < sc->end && *sc->p == '}') {
        sc->p++;
        goto trailing;
    }
    for (;;) {
        if (sc->p >= sc->end || *sc->p != '"')
            return mb__json_fail(sc, "object key expected");
        size_t key_at = (size_t)(sc->p - sc->start);
        mb__json_str k;
        if ((st = mb__json_string(sc, &k)) != MB_OK)
            return st;
        int fid = lookup_field(&k);
        if (fid < 0) {
            if ((st = mb__json_key_add(sc, obj, &k)) != MB_OK)
                return st;
            if (d->unknown_at == SIZE_MAX) {
                d->unknown_at = key_at;
                d->unknown = k;
            }
        } else if (d->f[fid].type != VT_ABSENT) {
            sc->p = (const unsigned char *)k.raw - 1;
            return mb_err_set(sc->err, MB_EJSON, "json: duplicate key '%s' at byte %zu",
                              field_names[fid].name, key_at);
        }
        mb__json_ws(sc);
        if (sc->p >= sc->end || *sc->p != ':')
            return mb__json_fail(sc, "':' expected");
        sc->p++;
        mb__json_ws(sc);
        if (sc->p >= sc->end)
            return mb__json_fail(sc, "value expected, found end of input");
        enum vtype vt = type_of(*sc->p);
        size_t depth_before = sc->depth_error_at;
        if (fid >= 0 && vt == VT_STRING) {
            st = mb__json_string(sc, &d->f[fid].str);
        } else {
            st = mb__json_value(sc, 2);
        }
        if (st != MB_OK)
            return st;
        if (fid >= 0) {
            d->f[fid].type = vt;
            d->f[fid].key_at = key_at;
        }
        if (depth_before == SIZE_MAX && sc->depth_error_at != SIZE_MAX) {
            if (fid >= 0) {
                d->depth_field = field_names[fid].name;
            } else {
                copy_key_name(&k, d->depth_field_buf, sizeof d->depth_field_buf);
                d->depth_field = d->depth_field_buf;
            }
            d->depth_seen = sc->depth_seen;
        }
        mb__json_ws(sc);
        if (sc->p >= sc->end)
            return mb__json_fail(sc, "unexpected end of input in object");
        if (*sc->p == '}') {
            sc->p++;
            break;
        }
        if (*sc->p != ',')
            return mb__json_fail(sc, "',' or '}' expected");
        sc->p++;
        mb__json_ws(sc);
    }
trailing:
    mb__json_ws(sc);
    if (sc->p != sc->end)
        return mb__json_fail(sc, *sc->p == 0 ? "NUL byte" : "trailing data after the value");
    return MB_OK;
}

static bool spec_has(const field_spec *spec, size_t n, int fid)
{
    for (size_t i = 0; i < n; i++)
        if ((int)spec[i].id == fid)
            return true;
    return false;
}

/* Apply the schema rules to a well-formed document. */
static mb_status check_doc(const mb_schema *s, doc *d, mb_schema_kind kind,
                           mb_schema_kind *detected, check_ctx *c)
{
    if (d->top != VT_OBJECT)
        return refuse(c, REASON_NOT_OBJECT, "message: expected object, got %s",
                      vtype_names[d->top]);
    if (kind == MB_SCHEMA_AUTO)
        kind = d->f[F_EVENT_TYPE].type != VT_ABSENT || d->f[F_EVENT_DATA].type != VT_ABSENT
                   ? MB_SCHEMA_EVENT
                   : MB_SCHEMA_CHAT;
    if (detected != NULL)
        *detected = kind;
    const field_spec *spec = kind == MB_SCHEMA_EVENT ? event_spec : chat_spec;
    size_t n = kind == MB_SCHEMA_EVENT ? sizeof event_spec / sizeof event_spec[0]
                                       : sizeof chat_spec / sizeof chat_spec[0];
    if (d->depth_field != NULL)
        return refuse(c, REASON_DEPTH, "%s: nesting depth %u exceeds %u", d->depth_field,
                      d->depth_seen, s->max_depth);

    /* The first field in document order that this schema does not have. */
    size_t first_at = d->unknown_at;
    const char *first_name = NULL;
    for (int i = 0; i < F_COUNT; i++) {
        if (d->f[i].type != VT_ABSENT && !spec_has(spec, n, i) && d->f[i].key_at < first_at) {
            first_at = d->f[i].key_at;
            first_name = field_names[i].name;
        }
    }
    if (first_at != SIZE_MAX) {
        char buf[48];
        if (first_name == NULL) {
            copy_key_name(&d->unknown, buf, sizeof buf);
            first_name = buf;
        }
        return refuse(c, REASON_UNKNOWN_FIELD, "%s: unknown field in %s message", first_name,
                      kind == MB_SCHEMA_EVENT ? "an event" : "a chat");
    }

    for (size_t i = 0; i < n; i++) {
        const slot *f = &d->f[spec[i].id];
        const char *name = field_names[spec[i].id].name;
        if (f->type == VT_ABSENT || f->type == VT_NULL) {
            if (!spec[i].required)
                continue;
            if (f->type == VT_ABSENT)
                return refuse(c, REASON_MISSING_FIELD, "%s: required field missing", name);
            return refuse(c, REASON_WRONG_TYPE, "%s: required field is null", name);
        }
        enum vtype want = spec[i].rule == R_OBJECT ? VT_OBJECT : VT_STRING;
        if (f->type != want)
            return refuse(c, REASON_WRONG_TYPE, "%s: expected %s, got %s", name, vtype_names[want],
                          vtype_names[f->type]);
        mb_status st = check_rule(c, spec[i].rule, name, &f->str);
        if (st != MB_OK)
            return st;
    }
    return MB_OK;
}

static mb_status validate(const mb_schema *s, mb_schema_kind kind, const char *json, size_t len,
                          mb_schema_kind *detected, check_ctx *c)
{
    if (len > s->max_bytes) {
        c->reason = REASON_TOO_BIG;
        return mb_err_set(c->err, MB_ETOOBIG, "payload: %zu bytes exceeds %zu", len, s->max_bytes);
    }
    if (json == NULL && len > 0) {
        c->reason = REASON_OTHER;
        return mb_err_set(c->err, MB_EINVAL, "payload: NULL");
    }
    if ((unsigned)kind > MB_SCHEMA_EVENT) {
        c->reason = REASON_OTHER;
        return mb_err_set(c->err, MB_EINVAL, "schema: unknown kind %d", (int)kind);
    }
    doc d;
    for (int i = 0; i < F_COUNT; i++)
        d.f[i].type = VT_ABSENT;
    d.unknown_at = SIZE_MAX;
    d.depth_field = NULL;
    mb__json_scan sc;
    mb__json_scan_init(&sc, json ? json : "", len, s->max_depth, c->err);
    mb_status st = scan_doc(&sc, &d);
    mb__json_scan_fini(&sc);
    if (st != MB_OK) {
        c->reason = st == MB_EJSON ? REASON_JSON : REASON_OTHER;
        return st;
    }
    return check_doc(s, &d, kind, detected, c);
}

static const mb_schema default_schema = {
    MB_SCHEMA_MAX_BYTES_DEFAULT, MB_SCHEMA_MAX_DEPTH_DEFAULT, NULL, {NULL}, NULL};

mb_status mb_schema_validate(const mb_schema *s, mb_schema_kind kind, const char *json, size_t len,
                             mb_schema_kind *detected, mb_err *err)
{
    if (s == NULL)
        s = &default_schema;
    check_ctx c = {err, REASON_OTHER};
    if (s->validations == NULL)
        return validate(s, kind, json, len, detected, &c);
    int timed = mb_histogram_sample(s->seconds);
    uint64_t t0 = timed ? mb_clock_mono_ns(NULL) : 0;
    mb_status st = validate(s, kind, json, len, detected, &c);
    if (timed)
        mb_histogram_observe(s->seconds, mb_clock_mono_ns(NULL) - t0);
    mb_counter_add(s->validations, 1);
    if (st != MB_OK)
        mb_counter_add(s->failures[c.reason], 1);
    return st;
}

mb_status mb_schema_create(const mb_schema_opts *opts, mb_schema **out, mb_err *err)
{
    if (out == NULL)
        return mb_err_set(err, MB_EINVAL, "schema: NULL out");
    size_t max_bytes = opts && opts->max_bytes ? opts->max_bytes : MB_SCHEMA_MAX_BYTES_DEFAULT;
    unsigned max_depth = opts && opts->max_depth ? opts->max_depth : MB_SCHEMA_MAX_DEPTH_DEFAULT;
    if (max_bytes > MB_SCHEMA_MAX_BYTES_LIMIT)
        return mb_err_set(err, MB_EINVAL, "schema: max_bytes %zu exceeds the ceiling %u", max_bytes,
                          MB_SCHEMA_MAX_BYTES_LIMIT);
    if (max_depth > MB_SCHEMA_MAX_DEPTH_LIMIT)
        return mb_err_set(err, MB_EINVAL, "schema: max_depth %u outside 1..%u", max_depth,
                          MB_SCHEMA_MAX_DEPTH_LIMIT);
    mb_schema *s = mb__calloc(1, sizeof *s);
    if (s == NULL)
        return mb_err_set(err, MB_ENOMEM, "schema: out of memory");
    s->max_bytes = max_bytes;
    s->max_depth = max_depth;
    mb_metrics *m = opts ? opts->metrics : NULL;
    if (m != NULL) {
        mb_status st = mb_metrics_counter(m, "mudbus_schema_validations_total",
                                          "Payloads validated against a message schema", NULL,
                                          &s->validations, err);
        for (int r = 0; r < REASON_COUNT && st == MB_OK; r++) {
            char labels[64];
            snprintf(labels, sizeof labels, "reason=\"%s\"", reason_names[r]);
            st = mb_metrics_counter(m, "mudbus_schema_failures_total",
                                    "Payloads refused by the schema validator, by reason", labels,
                                    &s->failures[r], err);
        }
        if (st == MB_OK)
            st = mb_metrics_histogram(m, "mudbus_schema_validate_seconds",
                                      "Time to validate one payload", NULL, 1e-9, &s->seconds, err);
        if (st != MB_OK) {
            /* Take back what was registered, so that the call can be retried. */
            mb__metrics_forget(m, s->validations);
            for (int r = 0; r < REASON_COUNT; r++)
                mb__metrics_forget(m, s->failures[r]);
            mb__metrics_forget(m, s->seconds);
            mb__free(s);
            return st;
        }
    }
    *out = s;
    return MB_OK;
}

void mb_schema_destroy(mb_schema *s)
{
    mb__free(s);
}

/* ---- encoding ---- */

typedef struct writer {
    char *buf;
    size_t cap; /* usable bytes, including the NUL */
    size_t len; /* bytes produced so far (may exceed cap: then only counted) */
} writer;

static inline void w_raw(writer *w, const char *p, size_t n)
{
    if (w->len < w->cap && n < w->cap - w->len)
        mb__bytes_copy(w->buf + w->len, p, n);
    w->len += n;
}

/* w_raw of a string literal. */
#define W_LIT(w, lit) w_raw((w), (lit), sizeof(lit) - 1)

/* The two-pass path's writer of a checked string value: quoted, escaped. */
static void w_string(writer *w, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    w_raw(w, "\"", 1);
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        char esc[7];
        size_t en = 0;
        if (ch == '"' || ch == '\\') {
            esc[0] = '\\';
            esc[1] = (char)ch;
            en = 2;
        } else if (ch < 0x20) {
            esc[0] = '\\';
            en = 2;
            switch (ch) {
            case '\n':
                esc[1] = 'n';
                break;
            case '\t':
                esc[1] = 't';
                break;
            case '\r':
                esc[1] = 'r';
                break;
            case '\b':
                esc[1] = 'b';
                break;
            case '\f':
                esc[1] = 'f';
                break;
            default:
                memcpy(esc + 1, "u00", 3);
                esc[4] = hex[ch >> 4];
                esc[5] = hex[ch & 15];
                en = 6;
            }
        }
        if (en) {
            w_raw(w, s + run, i - run);
            w_raw(w, esc, en);
            run = i + 1;
        }
    }
    w_raw(w, s + run, n - run);
    w_raw(w, "\"", 1);
}

/* What the single pass (w_fast) does with each byte. */
enum { E_TOKEN, E_PRINT, E_ESCAPE, E_CTRL, E_DEL, E_HIGH };

/* One row per 16 bytes, as json.c's byte classes. */
/* clang-format off */
static const unsigned char enc_class[256] = {
#define R8(x) x, x, x, x, x, x, x, x
    /* 0x00 */ R8(E_CTRL), R8(E_CTRL),
    /* 0x10 */ R8(E_CTRL), R8(E_CTRL),
    /* 0x20 */ E_PRINT, E_PRINT, E_ESCAPE, E_PRINT, E_PRINT, E_PRINT, E_PRINT, E_PRINT,
               E_PRINT, E_PRINT, E_PRINT, E_PRINT, E_PRINT, E_TOKEN, E_PRINT, E_PRINT,
    /* 0x30 */ R8(E_TOKEN), E_TOKEN, E_TOKEN, E_PRINT, E_PRINT, E_PRINT, E_PRINT, E_PRINT, E_PRINT,
    /* 0x40 */ E_PRINT, E_TOKEN, E_TOKEN, E_TOKEN, E_TOKEN, E_TOKEN, E_TOKEN, E_TOKEN, R8(E_TOKEN),
    /* 0x50 */ R8(E_TOKEN), E_TOKEN, E_TOKEN, E_TOKEN, E_PRINT, E_ESCAPE, E_PRINT, E_PRINT, E_TOKEN,
    /* 0x60 */ E_PRINT, E_TOKEN, E_TOKEN, E_TOKEN, E_TOKEN, E_TOKEN, E_TOKEN, E_TOKEN, R8(E_TOKEN),
    /* 0x70 */ R8(E_TOKEN), E_TOKEN, E_TOKEN, E_TOKEN, E_PRINT, E_PRINT, E_PRINT, E_PRINT, E_DEL,
    /* 0x80 */ R8(E_HIGH), R8(E_HIGH), R8(E_HIGH), R8(E_HIGH), R8(E_HIGH), R8(E_HIGH), R8(E_HIGH), R8(E_HIGH),
    /* 0xC0 */ R8(E_HIGH), R8(E_HIGH), R8(E_HIGH), R8(E_HIGH), R8(E_HIGH), R8(E_HIGH), R8(E_HIGH), R8(E_HIGH),
#undef R8
};
/* clang-format on */

#if defined(__SSE2__)
/* Per byte of x: 0xFF for a byte that is not plain. Signed compares: bytes
 * from 0x80 are negative, below the space too. */
static inline __m128i not_plain(__m128i x)
{
    return _mm_or_si128(
        _mm_or_si128(_mm_cmplt_epi8(x, _mm_set1_epi8(0x20)), _mm_cmpeq_epi8(x, _mm_set1_epi8('"'))),
        _mm_or_si128(_mm_cmpeq_epi8(x, _mm_set1_epi8('\\')),
                     _mm_cmpeq_epi8(x, _mm_set1_epi8(0x7F))));
}
#endif

/* Length of the leading run of v that is written as it is and tells the
 * rules nothing: printable ASCII other than '"' and '\\'. */
static size_t plain_run(const char *v, size_t n)
{
    size_t i = 0;
#if defined(__SSE2__)
    for (; i + 16 <= n; i += 16) {
        __m128i x = _mm_loadu_si128((const __m128i *)(const void *)(v + i));
        unsigned m = (unsigned)_mm_movemask_epi8(not_plain(x));
        if (m != 0)
            return i + (size_t)__builtin_ctz(m);
    }
    /* The rest: the last 16 bytes (overlapping), or for 8..15 bytes the
     * first and the last 8, in one vector. All plain, or go on byte by
     * byte. */
    __m128i x;
    if (i < n && n >= 16)
        x = _mm_loadu_si128((const __m128i *)(const void *)(v + n - 16));
    else if (n >= 8)
        x = _mm_unpacklo_epi64(_mm_loadl_epi64((const __m128i *)(const void *)v),
                               _mm_loadl_epi64((const __m128i *)(const void *)(v + n - 8)));
    else
        x = _mm_set1_epi8(1); /* not plain: the byte loop decides */
    if (i < n && _mm_movemask_epi8(not_plain(x)) == 0)
        return n;
#endif
    while (i < n && enc_class[(unsigned char)v[i]] <= E_PRINT)
        i++;
    return i;
}

/* Write the escape of control character ch (as w_string does) at o; note it
 * in *flags as mb__json_measure would. Returns the end of the escape. */
static char *put_ctrl(char *o, unsigned char ch, unsigned *flags)
{
    static const char hex[] = "0123456789abcdef";
    *flags |= ch == '\n' || ch == '\t' ? MB__JSTR_NLTAB : MB__JSTR_CTRL;
    *o++ = '\\';
    switch (ch) {
    case '\n':
        *o++ = 'n';
        break;
    case '\t':
        *o++ = 't';
        break;
    case '\r':
        *o++ = 'r';
        break;
    case '\b':
        *o++ = 'b';
        break;
    case '\f':
        *o++ = 'f';
        break;
    default:
        memcpy(o, "u00", 3);
        o[3] = hex[ch >> 4];
        o[4] = hex[ch & 15];
        o += 5;
    }
    return o;
}

/* `,"name":"` of each field, in a fixed-size slot: w_fast copies a whole slot
 * (one or two vector stores; its room check allows for that) and keeps what
 * it needs. */
#define KEY_SLOT 32
static const char field_keys[F_COUNT][KEY_SLOT + 1] = {
    ",\"message_id\":\"", ",\"timestamp\":\"",  ",\"sender_id\":\"",   ",\"sender_name\":\"",
    ",\"channel\":\"",    ",\"content\":\"",    ",\"room_id\":\"",     ",\"subzone\":\"",
    ",\"target_id\":\"",  ",\"party_id\":\"",   ",\"target_name\":\"", ",\"speaker_kind\":\"",
    ",\"event_type\":\"", ",\"event_data\":\"", ",\"player_id\":\"",
};

/* The single pass over a token, name or text field: write
 * `,"name":"value"` straight into the buffer while gathering what the rule
 * needs, then check the rule on it. The facts handed to check_rule are
 * those of mb__json_measure for what the rule reads (bytes and characters;
 * charset for tokens; control characters for names and texts), so the
 * verdict and its message are the two-pass path's.
 *
 * Returns false, having changed nothing, for what it leaves to the two-pass
 * path: a buffer that might be too small for the worst case, a byte of UTF-8
 * (it has to be decoded and checked) or a token with a byte outside the
 * charset (the refusal may be about UTF-8 further on). Otherwise true with
 * *st the rule's verdict; the field is written only when it is MB_OK. */
static MB__ALWAYS_INLINE bool w_fast(writer *w, check_ctx *c, enum field fid, enum rule rule,
                                     const char *v, size_t n, mb_status *st)
{
    /* Each byte takes at most 6 (\u00XX); the key slot, the closing quote
     * and the NUL. */
    if (n > w->cap || w->len >= w->cap || w->cap - w->len <= 6 * n + KEY_SLOT + 2)
        return false;
    char *o = w->buf + w->len;
    bool first = w->len <= 1; /* right after the brace: no comma */
    memcpy(o, field_keys[fid] + first, KEY_SLOT);
    o += field_names[fid].len + 5 - first;
    unsigned flags = MB__JSTR_PLAIN;
    bool fine; /* the rule holds: check_rule need not run */
    if (rule == R_ID || rule == R_TOKEN || rule == R_SHORT_TOKEN) {
        if (!mb__bytes_all_token(v, n))
            return false;
        mb__bytes_copy(o, v, n);
        o += n;
        fine = n != 0 && n <= (rule == R_TOKEN ? 128u : 64u);
    } else {
        size_t i = plain_run(v, n);
        mb__bytes_copy(o, v, i);
        o += i;
        for (; i < n; i++) {
            unsigned char ch = (unsigned char)v[i];
            switch (enc_class[ch]) {
            case E_TOKEN:
            case E_PRINT:
                *o++ = (char)ch;
                break;
            case E_ESCAPE:
                *o++ = '\\';
                *o++ = (char)ch;
                break;
            case E_DEL:
                flags |= MB__JSTR_CTRL;
                *o++ = (char)ch;
                break;
            case E_CTRL:
                o = put_ctrl(o, ch, &flags);
                break;
            default:
                return false;
            }
        }
        unsigned bad = rule == R_TEXT ? MB__JSTR_CTRL : MB__JSTR_CTRL | MB__JSTR_NLTAB;
        fine = n != 0 && n <= (rule == R_TEXT ? 10000u : 64u) && !(flags & bad);
    }
    if (fine) {
        *st = MB_OK;
    } else {
        mb__json_str s = {v, n, n, n, flags};
        *st = check_rule(c, rule, field_names[fid].name, &s);
    }
    if (*st == MB_OK) {
        *o++ = '"';
        w->len = (size_t)(o - w->buf);
    }
    return true;
}

/* What w_field leaves to a call: a missing required field, and the
 * two-pass path for what w_fast declines. */
static mb_status w_field_slow(writer *w, check_ctx *c, enum field fid, enum rule rule,
                              const char *v, size_t n)
{
    const char *name = field_names[fid].name;
    if (v == NULL)
        return refuse(c, REASON_MISSING_FIELD, "%s: required field missing", name);
    mb_status st;
    mb__json_str s;
    size_t bad_at = 0;
    if (mb__json_measure(v, n, &s, &bad_at) != MB_OK)
        return refuse(c, REASON_CHARSET, "%s: invalid UTF-8 at byte %zu", name, bad_at);
    st = check_rule(c, rule, name, &s);
    if (st != MB_OK)
        return st;
    w_raw(w, w->len > 1 ? ",\"" : "\"", w->len > 1 ? 2 : 1);
    w_raw(w, name, field_names[fid].len);
    w_raw(w, "\":", 2);
    w_string(w, v, n);
    return MB_OK;
}

/* Check and write `,"name":"value"` for a string field. Inline: at each call
 * the field and its rule are constants, and w_fast keeps only their path. */
static MB__ALWAYS_INLINE mb_status w_field(writer *w, check_ctx *c, enum field fid, enum rule rule,
                                           const char *v, bool required)
{
    if (v == NULL)
        return required ? w_field_slow(w, c, fid, rule, NULL, 0) : MB_OK;
    size_t n = strlen(v);
    mb_status st;
    if (w_fast(w, c, fid, rule, v, n, &st))
        return st;
    return w_field_slow(w, c, fid, rule, v, n);
}

/* `,"channel":"say"` ..., `,"speaker_kind":"player"` ...: the values of the
 * encoder's own tables pass their rules by construction. */
static const char *const channel_fields[MB__CHANNEL_COUNT] = {
    ",\"channel\":\"say\"",     ",\"channel\":\"local\"", ",\"channel\":\"global\"",
    ",\"channel\":\"whisper\"", ",\"channel\":\"emote\"", ",\"channel\":\"pose\"",
    ",\"channel\":\"system\"",  ",\"channel\":\"admin\"", ",\"channel\":\"party\"",
};
static const char *const speaker_fields[] = {
    NULL,
    ",\"speaker_kind\":\"player\"",
    ",\"speaker_kind\":\"npc\"",
    ",\"speaker_kind\":\"system\"",
};

static void w_known(writer *w, const char *field)
{
    w_raw(w, field, strlen(field));
}

/* mb_timestamp_format, keeping the text of the last second formatted on this
 * thread: the messages of a stream mostly share their second, and then only
 * the milliseconds are written. */
static void format_ts(int64_t ms, char *ts)
{
    static _Thread_local struct {
        int64_t sec;
        char text[MB_TIMESTAMP_MAX];
    } last = {-1, ""};
    const int64_t end = 253402300800000; /* 10000-01-01T00:00:00Z, where clamping starts */
    if (ms < 0 || ms >= end) {
        mb_timestamp_format(ms, ts);
        return;
    }
    if (ms / 1000 != last.sec) {
        mb_timestamp_format(ms / 1000 * 1000, last.text);
        last.sec = ms / 1000;
    }
    int f = (int)(ms % 1000);
    memcpy(ts, last.text, 20); /* YYYY-MM-DDTHH:MM:SS. */
    ts[20] = (char)('0' + f / 100);
    ts[21] = (char)('0' + f / 10 % 10);
    ts[22] = (char)('0' + f % 10);
    ts[23] = 'Z';
    ts[24] = '\0';
}

static mb_status w_head(writer *w, check_ctx *c, const char *message_id, int64_t ts_ms)
{
    char idbuf[MB_MESSAGE_ID_MAX];
    if (message_id == NULL) {
        mb_status st = mb_message_id_generate(idbuf, c->err);
        if (st != MB_OK)
            return st;
        message_id = idbuf;
    }
    char ts[MB_TIMESTAMP_MAX];
    if (ts_ms == 0)
        ts_ms = (int64_t)(mb_clock_wall_ns(NULL) / 1000000u);
    format_ts(ts_ms, ts);
    W_LIT(w, "{");
    mb_status st = w_field(w, c, F_MESSAGE_ID, R_ID, message_id, true);
    if (st == MB_OK) {
        /* mb_timestamp_format always writes a valid RFC 3339 UTC time. */
        W_LIT(w, ",\"timestamp\":\"");
        w_raw(w, ts, 24);
        W_LIT(w, "\"");
    }
    return st;
}

static mb_status finish(const mb_schema *s, writer *w, check_ctx *c, size_t *out_len)
{
    W_LIT(w, "}");
    if (out_len != NULL)
        *out_len = w->len;
    if (w->len > s->max_bytes) {
        c->reason = REASON_TOO_BIG;
        return mb_err_set(c->err, MB_ETOOBIG, "payload: %zu bytes exceeds %zu", w->len,
                          s->max_bytes);
    }
    if (w->len >= w->cap)
        return mb_err_set(c->err, MB_ENOSPC, "encode: needs %zu bytes plus NUL, buffer has %zu",
                          w->len, w->cap);
    w->buf[w->len] = '\0';
    return MB_OK;
}

mb_status mb_chat_encode(const mb_schema *s, const mb_chat_msg *m, char *buf, size_t cap,
                         size_t *out_len, mb_err *err)
{
    if (s == NULL)
        s = &default_schema;
    if (m == NULL || (buf == NULL && cap > 0))
        return mb_err_set(err, MB_EINVAL, "encode: NULL argument");
    check_ctx c = {err, REASON_OTHER};
    writer w = {buf, cap, 0};
    const char *channel = mb_channel_name(m->channel);
    if (channel == NULL)
        return refuse(&c, REASON_BAD_VALUE, "channel: %d is not a channel", (int)m->channel);
    if ((unsigned)m->speaker_kind > MB_SPEAKER_SYSTEM)
        return refuse(&c, REASON_BAD_VALUE, "speaker_kind: %d is not a speaker kind",
                      (int)m->speaker_kind);
    mb_status st = w_head(&w, &c, m->message_id, m->timestamp_ms);
    if (st == MB_OK)
        st = w_field(&w, &c, F_SENDER_ID, R_TOKEN, m->sender_id, true);
    if (st == MB_OK)
        st = w_field(&w, &c, F_SENDER_NAME, R_NAME, m->sender_name, true);
    if (st == MB_OK)
        w_known(&w, channel_fields[m->channel]);
    if (st == MB_OK)
        st = w_field(&w, &c, F_CONTENT, R_TEXT, m->content, true);
    if (st == MB_OK)
        st = w_field(&w, &c, F_ROOM_ID, R_TOKEN, m->room_id, false);
    if (st == MB_OK)
        st = w_field(&w, &c, F_SUBZONE, R_TOKEN, m->subzone, false);
    if (st == MB_OK)
        st = w_field(&w, &c, F_TARGET_ID, R_TOKEN, m->target_id, false);
    if (st == MB_OK)
        st = w_field(&w, &c, F_PARTY_ID, R_TOKEN, m->party_id, false);
    if (st == MB_OK)
        st = w_field(&w, &c, F_TARGET_NAME, R_NAME, m->target_name, false);
    if (st != MB_OK)
        goto fail;
    if (m->speaker_kind != MB_SPEAKER_UNSET)
        w_known(&w, speaker_fields[m->speaker_kind]);
    return finish(s, &w, &c, out_len);
fail:
    if (cap > 0)
        buf[0] = '\0';
    return st;
}

mb_status mb_event_encode(const mb_schema *s, const mb_event_msg *m, char *buf, size_t cap,
                          size_t *out_len, mb_err *err)
{
    if (s == NULL)
        s = &default_schema;
    if (m == NULL || (buf == NULL && cap > 0) || (m->event_data == NULL && m->event_data_len))
        return mb_err_set(err, MB_EINVAL, "encode: NULL argument");
    check_ctx c = {err, REASON_OTHER};
    writer w = {buf, cap, 0};
    mb_status st = w_head(&w, &c, m->message_id, m->timestamp_ms);
    if (st == MB_OK)
        st = w_field(&w, &c, F_EVENT_TYPE, R_SHORT_TOKEN, m->event_type, true);
    if (st != MB_OK)
        goto fail;

    /* event_data: one JSON object, checked by the scanner; within the document
     * it sits at depth 2, so its own nesting may reach max_depth - 1. */
    const char *data = m->event_data ? m->event_data : "{}";
    size_t dlen = m->event_data ? m->event_data_len : 2;
    mb__json_scan sc;
    mb__json_scan_init(&sc, data, dlen, s->max_depth > 1 ? s->max_depth - 1 : 1, err);
    mb__json_ws(&sc);
    const unsigned char *obj_start = sc.p;
    bool is_object = sc.p < sc.end && *sc.p == '{';
    st = mb__json_value(&sc, 1);
    const unsigned char *obj_end = sc.p;
    if (st == MB_OK) {
        mb__json_ws(&sc);
        if (sc.p != sc.end)
            st = mb__json_fail(&sc, "trailing data after event_data");
    }
    size_t depth_error_at = sc.depth_error_at;
    unsigned depth_seen = sc.depth_seen;
    if (s->max_depth == 1 && depth_error_at == SIZE_MAX) {
        depth_error_at = 0; /* event_data itself is at depth 2 */
        depth_seen = 1;
    }
    mb__json_scan_fini(&sc);
    if (st != MB_OK)
        goto fail;
    /* Well-formed JSON first (as the validator reports), then the type. */
    if (!is_object) {
        st = refuse(&c, REASON_WRONG_TYPE, "event_data: expected object");
        goto fail;
    }
    if (depth_error_at != SIZE_MAX) {
        st = refuse(&c, REASON_DEPTH, "event_data: nesting depth %u exceeds %u", depth_seen + 1,
                    s->max_depth);
        goto fail;
    }
    W_LIT(&w, ",\"event_data\":");
    w_raw(&w, (const char *)obj_start, (size_t)(obj_end - obj_start));

    st = w_field(&w, &c, F_ROOM_ID, R_TOKEN, m->room_id, false);
    if (st == MB_OK)
        st = w_field(&w, &c, F_PLAYER_ID, R_TOKEN, m->player_id, false);
    if (st == MB_OK)
        st = w_field(&w, &c, F_SENDER_ID, R_TOKEN, m->sender_id, false);
    if (st == MB_OK)
        st = w_field(&w, &c, F_SENDER_NAME, R_NAME, m->sender_name, false);
    if (st != MB_OK)
        goto fail;
    return finish(s, &w, &c, out_len);
fail:
    if (cap > 0)
        buf[0] = '\0';
    return st;
}
