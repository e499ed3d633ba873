/* SPDX-License-Identifier: MIT */
/*
 * alloc: the library's allocator, a thin layer over libc's malloc family with
 * an allocation-failure hook for tests (curl's torture mode, sqlite's
 * test_malloc.c). Internal to the library.
 *
 * Every allocation the library makes for itself goes through mb__malloc,
 * mb__calloc, mb__realloc, mb__strdup or mb__strndup and is released with
 * mb__free. Memory that libc or a dependency allocates (getline, scandir,
 * realpath, inih, nats.c) is released with that library's own free. The
 * functions are libc's underneath, so a block from them may be handed to a
 * caller whose contract is to release it with free() (mb_metrics_format's
 * text, for one).
 *
 * The hook: mb__alloc_fail_after(n) arms it and resets the count; the n-th
 * allocation from then on (counting from 0, so n == 0 fails the very next one)
 * fails, and so does every later one, until the hook is reset. n < 0 disarms
 * it. mb__alloc_count() is the number of allocations attempted since the last
 * mb__alloc_fail_after call, failed ones included; it is counted only while
 * the hook is armed (arm it with LONG_MAX to count without failing).
 *
 * Cost when disarmed: one relaxed atomic load per allocation. Threads: any
 * thread may allocate and any thread may arm or read the hook (C11 atomics);
 * allocations racing with a re-arm may be counted under either setting.
 */
#ifndef MUDBUS_ALLOC_H
#define MUDBUS_ALLOC_H

#include <stddef.h>

/* As libc's malloc, calloc, realloc, strdup and strndup, except that each
 * fails (NULL; realloc leaves the old block untouched) when the test hook
 * says so. Each call counts as one allocation. */
void *mb__malloc(size_t n);
void *mb__calloc(size_t count, size_t size);
void *mb__realloc(void *p, size_t n);
char *mb__strdup(const char *s);
char *mb__strndup(const char *s, size_t n);
/* Release memory from the functions above; NULL does nothing. */
void mb__free(void *p);

/* Test hook: fail the n-th allocation from now (0 = the next one) and every
 * later one; n < 0 disarms. Resets the count either way. */
void mb__alloc_fail_after(long n);
/* Allocations attempted since the last mb__alloc_fail_after (armed only). */
long mb__alloc_count(void);

#endif
