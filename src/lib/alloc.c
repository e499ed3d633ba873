/* SPDX-License-Identifier: MIT */
/*
 * alloc: libc's allocator behind a failure hook (see alloc.h).
 *
 * fail_at is the index of the first allocation to fail, or -1 when the hook is
 * disarmed; attempts counts allocations while it is armed. Both are relaxed
 * atomics: the hook is a test device, and all it needs is that every
 * allocation on every thread sees some consistent value, not an ordering
 * against other memory.
 */
#include "alloc.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

static atomic_long fail_at = -1;
static atomic_long attempts;

/* True if this allocation must fail. Disarmed: one relaxed load. */
static int should_fail(void)
{
    long at = atomic_load_explicit(&fail_at, memory_order_relaxed);
    if (at < 0)
        return 0;
    return atomic_fetch_add_explicit(&attempts, 1, memory_order_relaxed) >= at;
}

void *mb__malloc(size_t n)
{
    return should_fail() ? NULL : malloc(n);
}

void *mb__calloc(size_t count, size_t size)
{
    return should_fail() ? NULL : calloc(count, size);
}

void *mb__realloc(void *p, size_t n)
{
    return should_fail() ? NULL : realloc(p, n);
}

char *mb__strndup(const char *s, size_t n)
{
    const char *end = memchr(s, '\0', n);
    size_t len = end != NULL ? (size_t)(end - s) : n;
    char *d = mb__malloc(len + 1);
    if (d == NULL)
        return NULL;
    memcpy(d, s, len);
    d[len] = '\0';
    return d;
}

char *mb__strdup(const char *s)
{
    size_t len = strlen(s);
    char *d = mb__malloc(len + 1);
    if (d != NULL)
        memcpy(d, s, len + 1);
    return d;
}

void mb__free(void *p)
{
    free(p);
}

void mb__alloc_fail_after(long n)
{
    /* Disarm first so that no allocation counts against a stale limit while
     * the count is reset. */
    atomic_store_explicit(&fail_at, -1, memory_order_relaxed);
    atomic_store_explicit(&attempts, 0, memory_order_relaxed);
    if (n >= 0)
        atomic_store_explicit(&fail_at, n, memory_order_relaxed);
}

long mb__alloc_count(void)
{
    return atomic_load_explicit(&attempts, memory_order_relaxed);
}
