/* SPDX-License-Identifier: MIT */
/* strbuf: growable, bounded byte buffer (see strbuf.h). */
#include "strbuf.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"

void mb__strbuf_init(mb__strbuf *b, size_t max)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->max = max;
}

void mb__strbuf_free(mb__strbuf *b)
{
    mb__free(b->data);
    mb__strbuf_init(b, b->max);
}

static mb_status reserve(mb__strbuf *b, size_t extra)
{
    if (extra > b->max - b->len)
        return MB_ETOOBIG;
    size_t need = b->len + extra + 1;
    if (need <= b->cap)
        return MB_OK;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    char *p = mb__realloc(b->data, cap);
    if (p == NULL)
        return MB_ENOMEM;
    b->data = p;
    b->cap = cap;
    return MB_OK;
}

mb_status mb__strbuf_append(mb__strbuf *b, const void *p, size_t n)
{
    mb_status st = reserve(b, n);
    if (st != MB_OK)
        return st;
    if (n > 0)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return MB_OK;
}

mb_status mb__strbuf_appendf(mb__strbuf *b, const char *fmt, ...)
{
    char small[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0)
        return MB_EINVAL;
    if ((size_t)n < sizeof small)
        return mb__strbuf_append(b, small, (size_t)n);
    mb_status st = reserve(b, (size_t)n);
    if (st != MB_OK)
        return st;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return MB_OK;
}

char *mb__strbuf_steal(mb__strbuf *b, size_t *len)
{
    char *p = b->data;
    if (len != NULL)
        *len = b->len;
    if (p == NULL)
        p = mb__calloc(1, 1);
    mb__strbuf_init(b, b->max);
    return p;
}
