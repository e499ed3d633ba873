/* SPDX-License-Identifier: MIT */
/*
 * json: the strict single-pass JSON scanner under the schema validator.
 *
 * It validates without building a tree: strings are classified while they are
 * scanned (length in bytes and code points, token charset, control
 * characters), numbers are range-checked as jansson does, and duplicate keys
 * are found with one open-addressing set shared by every object of the
 * document, keyed by (object serial, unescaped key). Containers are walked
 * iteratively with an explicit stack, so hostile nesting cannot exhaust the C
 * stack; 2,048 levels are allowed, as in jansson.
 *
 * The common case (a flat message of a few hundred bytes) touches no heap:
 * the key set and the container stack start inline in the scanner and grow on
 * the heap only for large or deep documents.
 *
 * Threads: no shared state except a C locale created once for strtod_l.
 */
#include "json.h"

#include <errno.h>
#include <locale.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "alloc.h"

/* Byte classes for the string fast path. */
enum {
    C_TOKEN = 0, /* [A-Za-z0-9_-] */
    C_PRINT = 1, /* other printable ASCII except '"' and '\\' */
    C_QUOTE = 2,
    C_BSLASH = 3,
    C_CTRL = 4, /* 0x00..0x1F: never raw in a string */
    C_DEL = 5,  /* 0x7F: valid JSON, but a Cc character */
    C_HIGH = 6  /* 0x80..0xFF: UTF-8 */
};

/* One row per 16 bytes reads better than one entry per line. */
/* clang-format off */
static const unsigned char byte_class[256] = {
#define R8(x) x, x, x, x, x, x, x, x
    /* 0x00 */ R8(C_CTRL), R8(C_CTRL),
    /* 0x10 */ R8(C_CTRL), R8(C_CTRL),
    /* 0x20 */ C_PRINT, C_PRINT, C_QUOTE, C_PRINT, C_PRINT, C_PRINT, C_PRINT, C_PRINT,
               C_PRINT, C_PRINT, C_PRINT, C_PRINT, C_PRINT, C_TOKEN, C_PRINT, C_PRINT,
    /* 0x30 */ R8(C_TOKEN), C_TOKEN, C_TOKEN, C_PRINT, C_PRINT, C_PRINT, C_PRINT, C_PRINT, C_PRINT,
    /* 0x40 */ C_PRINT, C_TOKEN, C_TOKEN, C_TOKEN, C_TOKEN, C_TOKEN, C_TOKEN, C_TOKEN, R8(C_TOKEN),
    /* 0x50 */ R8(C_TOKEN), C_TOKEN, C_TOKEN, C_TOKEN, C_PRINT, C_BSLASH, C_PRINT, C_PRINT, C_TOKEN,
    /* 0x60 */ C_PRINT, C_TOKEN, C_TOKEN, C_TOKEN, C_TOKEN, C_TOKEN, C_TOKEN, C_TOKEN, R8(C_TOKEN),
    /* 0x70 */ R8(C_TOKEN), C_TOKEN, C_TOKEN, C_TOKEN, C_PRINT, C_PRINT, C_PRINT, C_PRINT, C_DEL,
    /* 0x80 */ R8(C_HIGH), R8(C_HIGH), R8(C_HIGH), R8(C_HIGH), R8(C_HIGH), R8(C_HIGH), R8(C_HIGH), R8(C_HIGH),
    /* 0xC0 */ R8(C_HIGH), R8(C_HIGH), R8(C_HIGH), R8(C_HIGH), R8(C_HIGH), R8(C_HIGH), R8(C_HIGH), R8(C_HIGH),
#undef R8
};
/* clang-format on */

mb_status mb__json_fail(mb__json_scan *s, const char *what)
{
    return mb_err_set(s->err, MB_EJSON, "json: %s at byte %zu", what, (size_t)(s->p - s->start));
}

void mb__json_scan_init(mb__json_scan *s, const char *buf, size_t len, unsigned schema_depth,
                        mb_err *err)
{
    s->start = (const unsigned char *)buf;
    s->p = s->start;
    s->end = s->start + len;
    s->schema_depth = schema_depth;
    s->depth_error_at = SIZE_MAX;
    s->depth_seen = 0;
    s->next_obj = 1;
    s->keys = NULL;
    s->key_cap = 0;
    s->key_count = 0;
    s->levels = s->inline_levels;
    s->level_cap = sizeof s->inline_levels / sizeof s->inline_levels[0];
    s->err = err;
}

void mb__json_scan_fini(mb__json_scan *s)
{
    if (s->keys != NULL && s->keys != s->inline_keys)
        mb__free(s->keys);
    if (s->levels != s->inline_levels)
        mb__free(s->levels);
    s->keys = NULL;
    s->levels = s->inline_levels;
}

/* ---- UTF-8 ---- */

/* Decode one strictly valid UTF-8 sequence (RFC 3629: no overlong forms, no
 * surrogates, nothing above U+10FFFF) at p. Returns its length (2..4), or 0 if
 * the bytes are not valid; *cp receives the code point. */
static size_t utf8_decode(const unsigned char *p, const unsigned char *end, uint32_t *cp)
{
    unsigned char b0 = p[0];
    size_t avail = (size_t)(end - p);
    if (b0 >= 0xC2 && b0 <= 0xDF) {
        if (avail < 2 || (p[1] & 0xC0) != 0x80)
            return 0;
        *cp = ((uint32_t)(b0 & 0x1F) << 6) | (p[1] & 0x3F);
        return 2;
    }
    if (b0 >= 0xE0 && b0 <= 0xEF) {
        if (avail < 3 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80)
            return 0;
        uint32_t c = ((uint32_t)(b0 & 0x0F) << 12) | ((uint32_t)(p[1] & 0x3F) << 6) | (p[2] & 0x3F);
        if (c < 0x800 || (c >= 0xD800 && c <= 0xDFFF))
            return 0;
        *cp = c;
        return 3;
    }
    if (b0 >= 0xF0 && b0 <= 0xF4) {
        if (avail < 4 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80 || (p[3] & 0xC0) != 0x80)
            return 0;
        uint32_t c = ((uint32_t)(b0 & 0x07) << 18) | ((uint32_t)(p[1] & 0x3F) << 12) |
                     ((uint32_t)(p[2] & 0x3F) << 6) | (p[3] & 0x3F);
        if (c < 0x10000 || c > 0x10FFFF)
            return 0;
        *cp = c;
        return 4;
    }
    return 0;
}

static size_t utf8_len(uint32_t cp)
{
    return cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
}

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static int read_hex4(const unsigned char *p, const unsigned char *end, uint32_t *out)
{
    if (end - p < 4)
        return 0;
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval(p[i]);
        if (h < 0)
            return 0;
        v = (v << 4) | (uint32_t)h;
    }
    *out = v;
    return 1;
}

/* Flags that one code point contributes to a string's classification. */
static unsigned cp_flags(uint32_t cp)
{
    if (cp < 0x80) {
        if (cp == '\n' || cp == '\t')
            return MB__JSTR_NONTOKEN | MB__JSTR_NLTAB;
        if (cp < 0x20 || cp == 0x7F)
            return MB__JSTR_NONTOKEN | MB__JSTR_CTRL;
        return byte_class[cp] == C_TOKEN ? 0 : MB__JSTR_NONTOKEN;
    }
    if (cp <= 0x9F)
        return MB__JSTR_NONTOKEN | MB__JSTR_CTRL;
    return MB__JSTR_NONTOKEN;
}

/* ---- strings ---- */

mb_status mb__json_string(mb__json_scan *s, mb__json_str *out)
{
    const unsigned char *p = s->p + 1;
    const unsigned char *end = s->end;
    unsigned flags = 0;
    size_t chars = 0, bytes = 0;

    for (;;) {
#if defined(__SSE2__)
        /* 16 bytes at a time while they are plain printable ASCII: stop at
         * '"', '\\', a control byte, DEL or a byte >= 0x80. */
        while (end - p >= 16) {
            __m128i v = _mm_loadu_si128((const __m128i *)(const void *)p);
            __m128i sp =
                _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('"')),
                                          _mm_cmpeq_epi8(v, _mm_set1_epi8('\\'))),
                             _mm_or_si128(_mm_cmplt_epi8(v, _mm_set1_epi8(0x20)), /* also >= 0x80 */
                                          _mm_cmpeq_epi8(v, _mm_set1_epi8(0x7F))));
            unsigned special = (unsigned)_mm_movemask_epi8(sp);
            unsigned n = special ? (unsigned)__builtin_ctz(special) : 16u;
            if (!(flags & MB__JSTR_NONTOKEN)) {
                /* Unsigned range checks through a signed compare after a bias. */
                __m128i lower = _mm_or_si128(v, _mm_set1_epi8(0x20));
                __m128i alpha =
                    _mm_cmplt_epi8(_mm_add_epi8(lower, _mm_set1_epi8((char)(0x80 - 'a'))),
                                   _mm_set1_epi8((char)(0x80 + 26)));
                __m128i digit = _mm_cmplt_epi8(_mm_add_epi8(v, _mm_set1_epi8((char)(0x80 - '0'))),
                                               _mm_set1_epi8((char)(0x80 + 10)));
                __m128i tok = _mm_or_si128(_mm_or_si128(alpha, digit),
                                           _mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('_')),
                                                        _mm_cmpeq_epi8(v, _mm_set1_epi8('-'))));
                unsigned want = n == 16 ? 0xFFFFu : (1u << n) - 1u;
                if (((unsigned)_mm_movemask_epi8(tok) & want) != want)
                    flags |= MB__JSTR_NONTOKEN;
            }
            chars += n;
            bytes += n;
            p += n;
            if (special)
                break;
        }
#endif
        const unsigned char *run = p;
        unsigned acc = 0;
        while (p < end && byte_class[*p] <= C_PRINT)
            acc |= byte_class[*p++];
        if (acc)
            flags |= MB__JSTR_NONTOKEN;
        chars += (size_t)(p - run);
        bytes += (size_t)(p - run);
        if (p >= end) {
            s->p = p;
            return mb__json_fail(s, "unterminated string");
        }
        switch (byte_class[*p]) {
        case C_QUOTE:
            out->raw = (const char *)(s->p + 1);
            out->raw_len = (size_t)(p - s->p - 1);
            out->chars = chars;
            out->bytes = bytes;
            out->flags = flags;
            s->p = p + 1;
            return MB_OK;
        case C_DEL:
            flags |= MB__JSTR_NONTOKEN | MB__JSTR_CTRL;
            chars++;
            bytes++;
            p++;
            break;
        case C_CTRL:
            s->p = p;
            return mb__json_fail(s, *p == 0 ? "NUL byte in string"
                                            : "raw control character in string");
        case C_HIGH: {
            uint32_t cp;
            size_t n = utf8_decode(p, end, &cp);
            if (n == 0) {
                s->p = p;
                return mb__json_fail(s, "invalid UTF-8");
            }
            flags |= cp_flags(cp);
            chars++;
            bytes += n;
            p += n;
            break;
        }
        default: { /* backslash */
            flags |= MB__JSTR_ESCAPED;
            if (end - p < 2) {
                s->p = p;
                return mb__json_fail(s, "unterminated escape");
            }
            uint32_t cp;
            switch (p[1]) {
            case '"':
            case '\\':
            case '/':
                cp = p[1];
                p += 2;
                break;
            case 'b':
                cp = '\b';
                p += 2;
                break;
            case 'f':
                cp = '\f';
                p += 2;
                break;
            case 'n':
                cp = '\n';
                p += 2;
                break;
            case 'r':
                cp = '\r';
                p += 2;
                break;
            case 't':
                cp = '\t';
                p += 2;
                break;
            case 'u':
                if (!read_hex4(p + 2, end, &cp)) {
                    s->p = p;
                    return mb__json_fail(s, "invalid \\u escape");
                }
                if (cp >= 0xD800 && cp <= 0xDBFF) {
                    uint32_t lo;
                    if (end - p < 12 || p[6] != '\\' || p[7] != 'u' ||
                        !read_hex4(p + 8, end, &lo)) {
                        s->p = p;
                        return mb__json_fail(s, "lone high surrogate escape");
                    }
                    if (lo < 0xDC00 || lo > 0xDFFF) {
                        s->p = p;
                        return mb__json_fail(s, "high surrogate not followed by a low one");
                    }
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    p += 12;
                } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                    s->p = p;
                    return mb__json_fail(s, "lone low surrogate escape");
                } else if (cp == 0) {
                    s->p = p;
                    return mb__json_fail(s, "\\u0000 (NUL) in string");
                } else {
                    p += 6;
                }
                break;
            default:
                s->p = p;
                return mb__json_fail(s, "invalid escape");
            }
            flags |= cp_flags(cp);
            chars++;
            bytes += utf8_len(cp);
            break;
        }
        }
    }
}

uint32_t mb__json_next_cp(const mb__json_str *s, const char **pos)
{
    const unsigned char *p = (const unsigned char *)*pos;
    const unsigned char *end = (const unsigned char *)s->raw + s->raw_len;
    uint32_t cp;
    if (*p == '\\' && !(s->flags & MB__JSTR_PLAIN)) {
        switch (p[1]) {
        case 'b':
            cp = '\b';
            break;
        case 'f':
            cp = '\f';
            break;
        case 'n':
            cp = '\n';
            break;
        case 'r':
            cp = '\r';
            break;
        case 't':
            cp = '\t';
            break;
        case 'u': {
            read_hex4(p + 2, end, &cp);
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                uint32_t lo;
                read_hex4(p + 8, end, &lo);
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                *pos = (const char *)(p + 12);
                return cp;
            }
            *pos = (const char *)(p + 6);
            return cp;
        }
        default:
            cp = p[1];
            break;
        }
        *pos = (const char *)(p + 2);
        return cp;
    }
    if (*p < 0x80) {
        *pos = (const char *)(p + 1);
        return *p;
    }
    size_t n = utf8_decode(p, end, &cp);
    *pos = (const char *)(p + (n ? n : 1));
    return n ? cp : 0xFFFD;
}

static size_t utf8_encode(uint32_t cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

size_t mb__json_decode(const mb__json_str *s, char *out, size_t cap)
{
    if (s->bytes > cap)
        return (size_t)-1;
    if (!(s->flags & MB__JSTR_ESCAPED)) {
        memcpy(out, s->raw, s->raw_len);
        return s->raw_len;
    }
    const char *pos = s->raw, *end = s->raw + s->raw_len;
    size_t n = 0;
    while (pos < end)
        n += utf8_encode(mb__json_next_cp(s, &pos), out + n);
    return n;
}

mb_status mb__json_measure(const char *str, size_t len, mb__json_str *out, size_t *bad_at)
{
    const unsigned char *p = (const unsigned char *)str, *end = p + len;
    unsigned flags = MB__JSTR_PLAIN;
    size_t chars = 0;
    while (p < end) {
        uint32_t cp;
        size_t n = 1;
        if (*p < 0x80) {
            cp = *p;
        } else if ((n = utf8_decode(p, end, &cp)) == 0) {
            if (bad_at != NULL)
                *bad_at = (size_t)(p - (const unsigned char *)str);
            return MB_EINVAL;
        }
        flags |= cp_flags(cp);
        chars++;
        p += n;
    }
    out->raw = str;
    out->raw_len = len;
    out->chars = chars;
    out->bytes = len;
    out->flags = flags;
    return MB_OK;
}

/* ---- duplicate keys ---- */

static uint32_t key_hash(const mb__json_str *k)
{
    uint32_t h = 2166136261u;
    if (!(k->flags & MB__JSTR_ESCAPED)) {
        for (size_t i = 0; i < k->raw_len; i++)
            h = (h ^ (unsigned char)k->raw[i]) * 16777619u;
        return h;
    }
    const char *pos = k->raw, *end = k->raw + k->raw_len;
    while (pos < end) {
        char buf[4];
        size_t n = utf8_encode(mb__json_next_cp(k, &pos), buf);
        for (size_t i = 0; i < n; i++)
            h = (h ^ (unsigned char)buf[i]) * 16777619u;
    }
    return h;
}

static int key_equal(const mb__json_key *e, const mb__json_str *k)
{
    if (!e->escaped && !(k->flags & MB__JSTR_ESCAPED))
        return e->raw_len == k->raw_len && memcmp(e->raw, k->raw, k->raw_len) == 0;
    mb__json_str a = {e->raw, e->raw_len, 0, 0, e->escaped ? MB__JSTR_ESCAPED : 0};
    const char *pa = a.raw, *ea = a.raw + a.raw_len;
    const char *pb = k->raw, *eb = k->raw + k->raw_len;
    while (pa < ea && pb < eb) {
        if (mb__json_next_cp(&a, &pa) != mb__json_next_cp(k, &pb))
            return 0;
    }
    return pa == ea && pb == eb;
}

static mb_status keys_grow(mb__json_scan *s)
{
    size_t cap = s->key_cap * 2;
    mb__json_key *n = mb__calloc(cap, sizeof *n);
    if (n == NULL)
        return mb_err_set(s->err, MB_ENOMEM, "json: out of memory for the key set");
    for (size_t i = 0; i < s->key_cap; i++) {
        const mb__json_key *e = &s->keys[i];
        if (e->obj == 0)
            continue;
        size_t j = (e->hash ^ e->obj * 2654435761u) & (cap - 1);
        while (n[j].obj != 0)
            j = (j + 1) & (cap - 1);
        n[j] = *e;
    }
    if (s->keys != s->inline_keys)
        mb__free(s->keys);
    s->keys = n;
    s->key_cap = cap;
    return MB_OK;
}

mb_status mb__json_key_add(mb__json_scan *s, uint32_t obj, const mb__json_str *k)
{
    if (s->key_cap == 0) {
        memset(s->inline_keys, 0, sizeof s->inline_keys);
        s->keys = s->inline_keys;
        s->key_cap = MB__JSON_INLINE_KEYS;
    }
    if ((s->key_count + 1) * 2 > s->key_cap) {
        mb_status st = keys_grow(s);
        if (st != MB_OK)
            return st;
    }
    uint32_t h = key_hash(k);
    size_t mask = s->key_cap - 1;
    size_t j = (h ^ obj * 2654435761u) & mask;
    while (s->keys[j].obj != 0) {
        const mb__json_key *e = &s->keys[j];
        if (e->obj == obj && e->hash == h && key_equal(e, k)) {
            char shown[48];
            size_t n = k->raw_len < 40 ? k->raw_len : 40;
            size_t o = 0;
            for (size_t i = 0; i < n; i++) {
                unsigned char c = (unsigned char)k->raw[i];
                shown[o++] = (c >= 0x20 && c < 0x7F && c != '\'') ? (char)c : '?';
            }
            shown[o] = '\0';
            return mb_err_set(s->err, MB_EJSON, "json: duplicate key '%s%s' at byte %zu", shown,
                              k->raw_len > n ? "..." : "",
                              (size_t)((const unsigned char *)k->raw - s->start));
        }
        j = (j + 1) & mask;
    }
    mb__json_key *e = &s->keys[j];
    e->raw = k->raw;
    e->raw_len = (uint32_t)k->raw_len;
    e->obj = obj;
    e->hash = h;
    e->escaped = (k->flags & MB__JSTR_ESCAPED) != 0;
    s->key_count++;
    return MB_OK;
}

/* ---- numbers and literals ---- */

static locale_t c_locale;
static pthread_once_t c_locale_once = PTHREAD_ONCE_INIT;

static void c_locale_init(void)
{
    c_locale = newlocale(LC_ALL_MASK, "C", (locale_t)0);
}

/* Does the real number text [p, p+n) overflow a double, as jansson's strtod
 * check decides? -1 when out of memory. */
static int real_overflows(const unsigned char *p, size_t n)
{
    char small[64];
    char *buf = n < sizeof small ? small : mb__malloc(n + 1);
    if (buf == NULL)
        return -1;
    memcpy(buf, p, n);
    buf[n] = '\0';
    pthread_once(&c_locale_once, c_locale_init);
    errno = 0;
    double v = c_locale ? strtod_l(buf, NULL, c_locale) : strtod(buf, NULL);
    int over = errno == ERANGE && (v == HUGE_VAL || v == -HUGE_VAL);
    if (buf != small)
        mb__free(buf);
    return over;
}

static mb_status scan_number(mb__json_scan *s)
{
    const unsigned char *p = s->p, *end = s->end;
    const unsigned char *start = p;
    int neg = 0, real = 0;
    if (*p == '-') {
        neg = 1;
        p++;
    }
    const unsigned char *digits = p;
    if (p < end && *p == '0') {
        p++;
    } else if (p < end && *p >= '1' && *p <= '9') {
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    } else {
        s->p = p;
        return mb__json_fail(s, "invalid number");
    }
    size_t ndigits = (size_t)(p - digits);
    if (p < end && *p == '.') {
        real = 1;
        p++;
        if (p >= end || *p < '0' || *p > '9') {
            s->p = p;
            return mb__json_fail(s, "digit expected after decimal point");
        }
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        real = 1;
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        if (p >= end || *p < '0' || *p > '9') {
            s->p = p;
            return mb__json_fail(s, "digit expected in exponent");
        }
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    }
    if (!real) {
        /* int64: at most 19 digits, and 19 only up to 9223372036854775807 (8 if negative). */
        static const char lim[] = "9223372036854775807";
        int over = ndigits > 19;
        if (ndigits == 19) {
            int c = memcmp(digits, lim, 18);
            over = c > 0 || (c == 0 && digits[18] > (neg ? '8' : '7'));
        }
        if (over) {
            s->p = start;
            return mb__json_fail(s, "integer outside the int64 range");
        }
    } else {
        int over = real_overflows(start, (size_t)(p - start));
        if (over < 0)
            return mb_err_set(s->err, MB_ENOMEM, "json: out of memory");
        if (over) {
            s->p = start;
            return mb__json_fail(s, "number overflows a double");
        }
    }
    s->p = p;
    return MB_OK;
}

static mb_status scan_literal(mb__json_scan *s)
{
    static const struct {
        const char *text;
        size_t len;
    } lits[] = {{"true", 4}, {"false", 5}, {"null", 4}};
    for (size_t i = 0; i < 3; i++) {
        if (*s->p == lits[i].text[0]) {
            if ((size_t)(s->end - s->p) >= lits[i].len &&
                memcmp(s->p, lits[i].text, lits[i].len) == 0) {
                /* jansson reads a whole identifier: "truex" is one bad token. */
                const unsigned char *q = s->p + lits[i].len;
                if (q < s->end && ((*q >= 'a' && *q <= 'z') || (*q >= 'A' && *q <= 'Z')))
                    break;
                s->p = q;
                return MB_OK;
            }
            break;
        }
    }
    return mb__json_fail(s, "invalid literal");
}

/* ---- values ---- */

static mb_status push_level(mb__json_scan *s, size_t top, uint32_t v)
{
    if (top == s->level_cap) {
        size_t cap = s->level_cap * 2;
        uint32_t *n = mb__malloc(cap * sizeof *n);
        if (n == NULL)
            return mb_err_set(s->err, MB_ENOMEM, "json: out of memory for nesting");
        memcpy(n, s->levels, s->level_cap * sizeof *n);
        if (s->levels != s->inline_levels)
            mb__free(s->levels);
        s->levels = n;
        s->level_cap = cap;
    }
    s->levels[top] = v;
    return MB_OK;
}

mb_status mb__json_value(mb__json_scan *s, unsigned depth)
{
    /* levels[0..top) are the open containers of this value; the value being
     * scanned now has depth `depth + top`. */
    size_t top = 0;
    mb_status st;

value:
    mb__json_ws(s);
    if (s->p >= s->end)
        return mb__json_fail(s, "value expected, found end of input");
    {
        unsigned d = depth + (unsigned)top;
        if (d > MB__JSON_JANSSON_DEPTH)
            return mb__json_fail(s, "nesting deeper than 2048");
        unsigned char c = *s->p;
        if (c == '{' || c == '[') {
            if (s->schema_depth != 0 && d > s->schema_depth && s->depth_error_at == SIZE_MAX) {
                s->depth_error_at = (size_t)(s->p - s->start);
                s->depth_seen = d;
            }
            uint32_t obj = c == '{' ? s->next_obj++ : 0;
            if ((st = push_level(s, top, obj)) != MB_OK)
                return st;
            top++;
            s->p++;
            mb__json_ws(s);
            if (s->p < s->end && *s->p == (c == '{' ? '}' : ']')) {
                s->p++;
                top--;
                goto after;
            }
            if (c == '[')
                goto value;
            goto key;
        }
        if (c == '"') {
            mb__json_str str;
            if ((st = mb__json_string(s, &str)) != MB_OK)
                return st;
        } else if (c == '-' || (c >= '0' && c <= '9')) {
            if ((st = scan_number(s)) != MB_OK)
                return st;
        } else if (c == 't' || c == 'f' || c == 'n') {
            if ((st = scan_literal(s)) != MB_OK)
                return st;
        } else if (c == 0) {
            return mb__json_fail(s, "NUL byte");
        } else {
            return mb__json_fail(s, "unexpected character");
        }
    }

after:
    if (top == 0)
        return MB_OK;
    mb__json_ws(s);
    if (s->p >= s->end)
        return mb__json_fail(s, "unexpected end of input in container");
    if (s->levels[top - 1] != 0) { /* in an object */
        if (*s->p == '}') {
            s->p++;
            top--;
            goto after;
        }
        if (*s->p != ',')
            return mb__json_fail(s, "',' or '}' expected");
        s->p++;
        mb__json_ws(s);
        goto key;
    }
    if (*s->p == ']') {
        s->p++;
        top--;
        goto after;
    }
    if (*s->p != ',')
        return mb__json_fail(s, "',' or ']' expected");
    s->p++;
    goto value;

key:
    if (s->p >= s->end || *s->p != '"')
        return mb__json_fail(s, "object key expected");
    {
        mb__json_str k;
        if ((st = mb__json_string(s, &k)) != MB_OK)
            return st;
        if ((st = mb__json_key_add(s, s->levels[top - 1], &k)) != MB_OK)
            return st;
    }
    mb__json_ws(s);
    if (s->p >= s->end || *s->p != ':')
        return mb__json_fail(s, "':' expected");
    s->p++;
    goto value;
}

mb_status mb__json_check(const char *buf, size_t len, mb_err *err)
{
    mb__json_scan s;
    mb__json_scan_init(&s, buf, len, 0, err);
    mb_status st = mb__json_value(&s, 1);
    if (st == MB_OK) {
        mb__json_ws(&s);
        if (s.p != s.end)
            st = mb__json_fail(&s, s.p[0] == 0 ? "NUL byte" : "trailing data after the value");
    }
    mb__json_scan_fini(&s);
    return st;
}
