/* SPDX-License-Identifier: MIT */
/*
 * strbuf: a growable byte buffer with a hard maximum, for text that libmudbus
 * builds internally (metrics exposition, messages). Internal to the library.
 *
 * Invariant: data is NULL or NUL-terminated at data[len]; len + 1 <= cap;
 * len <= max. Appending past `max` fails with MB_ETOOBIG and leaves the buffer
 * unchanged. Not thread-safe.
 */
#ifndef MUDBUS_STRBUF_H
#define MUDBUS_STRBUF_H

#include <stddef.h>

#include "mudbus/status.h"

typedef struct mb__strbuf {
    char *data;
    size_t len;
    size_t cap;
    size_t max;
} mb__strbuf;

/* An empty buffer that may grow to `max` bytes (not counting the NUL). */
void mb__strbuf_init(mb__strbuf *b, size_t max);
void mb__strbuf_free(mb__strbuf *b);
/* MB_ETOOBIG past max, MB_ENOMEM; on error the buffer is unchanged. */
mb_status mb__strbuf_append(mb__strbuf *b, const void *p, size_t n);
mb_status mb__strbuf_appendf(mb__strbuf *b, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* Hand the NUL-terminated contents to the caller (free() them) and reset. An
 * empty buffer yields an allocated "" (or NULL when out of memory). */
char *mb__strbuf_steal(mb__strbuf *b, size_t *len);

#endif
