/* SPDX-License-Identifier: MIT */
/* bench_util: see bench_util.h. */
#define _POSIX_C_SOURCE 200809L
#include "bench_util.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

static volatile uint64_t sink;

uint64_t bu_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double bu_median(double *v, size_t n)
{
    if (n == 0)
        return 0;
    qsort(v, n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

int bu_quick(void)
{
    const char *q = getenv("MB_BENCH_QUICK");
    return q != NULL && *q != '\0' && strcmp(q, "0") != 0;
}

int bu_runs(int dflt)
{
    const char *r = getenv("MB_BENCH_RUNS");
    int n = r ? atoi(r) : (bu_quick() ? 3 : dflt);
    return n < 1 ? 1 : n;
}

void bu_sink(uint64_t v)
{
    sink += v;
}
