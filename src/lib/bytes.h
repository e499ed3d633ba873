/* SPDX-License-Identifier: MIT */
/*
 * bytes: inline helpers for the short byte strings of the publish path
 * (subjects, their tokens, pattern names, message fields). Internal to the
 * library.
 *
 * - The token charset [A-Za-z0-9_-] (subject tokens, ids), checked 16 bytes
 *   at a time with SSE2 where the compiler targets it, one byte at a time
 *   otherwise. Nothing here reads a byte outside the [p, p + n) it is given:
 *   a tail shorter than 16 bytes is checked with the last 16 bytes of the
 *   string (overlapping) when there are that many; a string of 4..15 bytes
 *   as its first and last 8 (or 4) bytes, overlapping, in one vector; below
 *   4 bytes one byte at a time.
 * - Equality, copy and hash of short strings a word (or a vector) at a time,
 *   without the call that memcmp and memcpy of a variable length cost.
 *
 * Threads: no state; any thread.
 */
#ifndef MUDBUS_BYTES_H
#define MUDBUS_BYTES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* Inline even where the compiler's size heuristics would not: for helpers of
 * the publish path whose callers pass constants that drop whole branches. */
#define MB__ALWAYS_INLINE inline __attribute__((always_inline))

static inline bool mb__bytes_is_token(unsigned char c)
{
    return (unsigned)((c | 0x20) - 'a') < 26u || (unsigned)(c - '0') < 10u || c == '_' || c == '-';
}

#if defined(__SSE2__)
/* Per byte of x: 0xFF for a byte of the token charset, else 0. */
static inline __m128i mb__bytes_token_mask(__m128i x)
{
    /* Signed compares: bytes from 0x80 are below every bound. */
    __m128i l = _mm_or_si128(x, _mm_set1_epi8(0x20)); /* letters to lower case */
    __m128i alpha = _mm_and_si128(_mm_cmpgt_epi8(l, _mm_set1_epi8('a' - 1)),
                                  _mm_cmplt_epi8(l, _mm_set1_epi8('z' + 1)));
    __m128i digit = _mm_and_si128(_mm_cmpgt_epi8(x, _mm_set1_epi8('0' - 1)),
                                  _mm_cmplt_epi8(x, _mm_set1_epi8('9' + 1)));
    __m128i other =
        _mm_or_si128(_mm_cmpeq_epi8(x, _mm_set1_epi8('_')), _mm_cmpeq_epi8(x, _mm_set1_epi8('-')));
    return _mm_or_si128(_mm_or_si128(alpha, digit), other);
}

static inline bool mb__bytes_token16(const char *p)
{
    __m128i x = _mm_loadu_si128((const __m128i *)(const void *)p);
    return _mm_movemask_epi8(mb__bytes_token_mask(x)) == 0xFFFF;
}
#endif

/* Whether the n bytes at p are all of the token charset. */
static inline bool mb__bytes_all_token(const char *p, size_t n)
{
    size_t i = 0;
#if defined(__SSE2__)
    for (; i + 16 <= n; i += 16)
        if (!mb__bytes_token16(p + i))
            return false;
    if (i < n && n >= 16)
        return mb__bytes_token16(p + n - 16); /* the last 16 bytes, overlapping */
    if (n >= 8) {
        /* 8..15 bytes (ids, most subject tokens): the first and the last 8,
         * overlapping, in one vector. */
        __m128i x = _mm_unpacklo_epi64(_mm_loadl_epi64((const __m128i *)(const void *)p),
                                       _mm_loadl_epi64((const __m128i *)(const void *)(p + n - 8)));
        return _mm_movemask_epi8(mb__bytes_token_mask(x)) == 0xFFFF;
    }
    if (n >= 4) {
        /* 4..7 bytes: the first and the last 4; the rest of the vector is
         * 'a', which passes. */
        int32_t a, b;
        memcpy(&a, p, 4);
        memcpy(&b, p + n - 4, 4);
        __m128i x = _mm_set_epi32(0x61616161, 0x61616161, b, a);
        return _mm_movemask_epi8(mb__bytes_token_mask(x)) == 0xFFFF;
    }
#endif
    for (; i < n; i++)
        if (!mb__bytes_is_token((unsigned char)p[i]))
            return false;
    return true;
}

/* The n (at most 8) bytes at p as a word, zero-extended. */
static inline uint64_t mb__bytes_load_short(const char *p, size_t n)
{
    uint64_t w = 0;
    for (size_t i = 0; i < n; i++)
        w |= (uint64_t)(unsigned char)p[i] << (8 * i);
    return w;
}

/* memcmp(a, b, n) == 0, with two loads that cover the n bytes (overlapping)
 * below 8 bytes and a word at a time above. */
static inline bool mb__bytes_equal(const char *a, const char *b, size_t n)
{
    if (n < 8) {
        if (n >= 4) {
            uint32_t a0, a1, b0, b1;
            memcpy(&a0, a, 4);
            memcpy(&b0, b, 4);
            memcpy(&a1, a + n - 4, 4);
            memcpy(&b1, b + n - 4, 4);
            return a0 == b0 && a1 == b1;
        }
        if (n >= 2) {
            uint16_t a0, a1, b0, b1;
            memcpy(&a0, a, 2);
            memcpy(&b0, b, 2);
            memcpy(&a1, a + n - 2, 2);
            memcpy(&b1, b + n - 2, 2);
            return a0 == b0 && a1 == b1;
        }
        return n == 0 || a[0] == b[0];
    }
    uint64_t x, y;
    for (size_t i = 0; i + 8 < n; i += 8) {
        memcpy(&x, a + i, 8);
        memcpy(&y, b + i, 8);
        if (x != y)
            return false;
    }
    memcpy(&x, a + n - 8, 8); /* the last word, overlapping the one before */
    memcpy(&y, b + n - 8, 8);
    return x == y;
}

/* memcpy(dst, src, n), inline up to 16 bytes (32 with SSE2): two loads and
 * two stores that overlap, never touching a byte outside [0, n). */
static inline void mb__bytes_copy(char *dst, const char *src, size_t n)
{
#if defined(__SSE2__)
    if (n > 16 && n <= 32) {
        __m128i a = _mm_loadu_si128((const __m128i *)(const void *)src);
        __m128i b = _mm_loadu_si128((const __m128i *)(const void *)(src + n - 16));
        _mm_storeu_si128((__m128i *)(void *)dst, a);
        _mm_storeu_si128((__m128i *)(void *)(dst + n - 16), b);
        return;
    }
#endif
    if (n > 16) {
        memcpy(dst, src, n);
    } else if (n >= 8) {
        uint64_t a, b;
        memcpy(&a, src, 8);
        memcpy(&b, src + n - 8, 8);
        memcpy(dst, &a, 8);
        memcpy(dst + n - 8, &b, 8);
    } else if (n >= 4) {
        uint32_t a, b;
        memcpy(&a, src, 4);
        memcpy(&b, src + n - 4, 4);
        memcpy(dst, &a, 4);
        memcpy(dst + n - 4, &b, 4);
    } else {
        for (size_t i = 0; i < n; i++)
            dst[i] = src[i];
    }
}

/* A 32-bit hash of n bytes, eight at a time, each word mixed in with a
 * multiply (not for hostile keys: names and subjects of the process). */
static inline uint32_t mb__bytes_hash(const char *s, size_t n)
{
    uint64_t h = UINT64_C(0x9E3779B97F4A7C15) ^ n, w;
    if (n >= 8) {
        const char *last = s + n - 8;
        for (; s < last; s += 8) {
            memcpy(&w, s, 8);
            h = (h ^ w) * UINT64_C(0xFF51AFD7ED558CCD);
            h ^= h >> 32;
        }
        memcpy(&w, last, 8); /* overlapping the word before */
    } else {
        w = mb__bytes_load_short(s, n);
    }
    h = (h ^ w) * UINT64_C(0xC4CEB9FE1A85EC53);
    return (uint32_t)(h ^ h >> 32);
}

#endif
