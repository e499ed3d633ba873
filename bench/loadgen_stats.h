/* SPDX-License-Identifier: MIT */
/*
 * loadgen_stats: the measuring instruments of bench/loadgen: a log-linear
 * latency histogram, a table of WebSocket close codes, and readers of the
 * /proc figures of another process (RSS) and of the machine (CPU busy time).
 *
 * The histogram has a fixed size (about 4,400 buckets of 64 bits) whatever
 * the number of samples: values below 128 ns are exact, larger ones fall in
 * one of 128 buckets per power of two, so a reported percentile is within
 * 0.4% of the true sample. Values from 2^40 ns (18 minutes) up land in the
 * last bucket.
 *
 * Everything here runs on the loadgen's one thread; nothing is thread-safe.
 */
#ifndef MUDBUS_BENCH_LOADGEN_STATS_H
#define MUDBUS_BENCH_LOADGEN_STATS_H

#include <stddef.h>
#include <stdint.h>

#define LG_HIST_SUB_BITS 7
#define LG_HIST_MAX_BITS 40
#define LG_HIST_BUCKETS  ((LG_HIST_MAX_BITS - LG_HIST_SUB_BITS + 1) << LG_HIST_SUB_BITS)

typedef struct lg_hist {
    uint64_t count;
    uint64_t min;
    uint64_t max;
    double sum;
    uint64_t bucket[LG_HIST_BUCKETS];
} lg_hist;

/* Empties h. */
void lg_hist_reset(lg_hist *h);
/* Adds one sample (nanoseconds). */
void lg_hist_add(lg_hist *h, uint64_t v);
/* The value below which a fraction q (0..1) of the samples lie: the middle of
 * the bucket holding the sample of rank ceil(q * count), clamped to
 * [min, max]. 0 when h is empty. */
uint64_t lg_hist_quantile(const lg_hist *h, double q);
/* Mean of the samples, 0 when empty. */
double lg_hist_mean(const lg_hist *h);

/* Counts of close codes, at most LG_CLOSE_KINDS distinct codes; further
 * codes are counted in `other`. */
#define LG_CLOSE_KINDS 16
typedef struct lg_closes {
    unsigned code[LG_CLOSE_KINDS];
    uint64_t count[LG_CLOSE_KINDS];
    unsigned kinds;
    uint64_t other;
    uint64_t total;
} lg_closes;

void lg_closes_add(lg_closes *c, unsigned code);
/* Writes "4008:12 1006:3" (or "none") into buf; returns buf. */
char *lg_closes_format(const lg_closes *c, char *buf, size_t len);
/* Writes {"4008":12,"1006":3} into buf; returns buf. */
char *lg_closes_json(const lg_closes *c, char *buf, size_t len);

/* CPU seconds (user + system) used so far by thread tid of process pid (the
 * main thread when tid == pid), or 0 when it cannot be read. */
double lg_proc_thread_cpu_s(int pid, int tid);
/* VmRSS of process pid in KiB, or -1 when it cannot be read. */
long lg_proc_rss_kib(int pid);
/* CPU time of the whole machine from /proc/stat, in clock ticks: *busy gets
 * everything but idle and iowait, *total everything. Returns 0, or -1 (and
 * sets both to 0) when /proc/stat cannot be read. */
int lg_sys_cpu_ticks(uint64_t *busy, uint64_t *total);

#endif
