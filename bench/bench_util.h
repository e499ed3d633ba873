/* SPDX-License-Identifier: MIT */
/*
 * bench_util: shared helpers of the benchmark programs: a monotonic clock,
 * medians, and the run-length knobs. Benchmarks print figures; they never
 * assert a time. MB_BENCH_QUICK=1 in the environment makes every benchmark run
 * briefly (CI uses it to prove that they work); MB_BENCH_RUNS=N sets the number
 * of repeated runs whose median is reported.
 */
#ifndef MUDBUS_BENCH_UTIL_H
#define MUDBUS_BENCH_UTIL_H

#include <stddef.h>
#include <stdint.h>

uint64_t bu_now_ns(void);
/* Median of n values (sorts v in place). 0 for n == 0. */
double bu_median(double *v, size_t n);
/* 1 when MB_BENCH_QUICK is set to a non-empty value other than "0". */
int bu_quick(void);
/* MB_BENCH_RUNS, or `dflt` (quick mode: 3). At least 1. */
int bu_runs(int dflt);
/* CPU seconds (user + system) used so far by process `pid` (from
 * /proc/PID/stat), or 0 when it cannot be read. */
double bu_proc_cpu_s(int pid);
/* CPU seconds used so far by this process, all threads. */
double bu_self_cpu_s(void);
/* Keep the compiler from discarding a computed value. */
void bu_sink(uint64_t v);

#endif
