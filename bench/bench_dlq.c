/* SPDX-License-Identifier: MIT */
/*
 * bench_dlq: durable appends per second of 300-byte DLQ entries, in one run:
 *   single:  one thread, each put durable (one fdatasync per record);
 *   group8:  8 threads, each put durable and blocking, sharing fdatasyncs
 *            (at most one record per thread per fsync, so at most ~8x);
 *   async8:  8 threads, each keeping up to 64 durable puts in flight with
 *            mb_dlq_put_async (how a delivery thread that must not block
 *            dead-letters), sharing fdatasyncs;
 * and the ratios group8/single and async8/single (the goal is >= 20x).
 * Then replay reading speed: entries per second of a dry-run replay (read
 * from disk through the page cache, checksum, decode, copy) over 100,000
 * entries, and of a real replay whose durable "replayed" marker per entry
 * bounds it by fdatasync.
 *
 * Every figure is the median of bu_runs runs; each run works in a fresh
 * directory made under /tmp (the disk whose fsync is measured) and removed
 * after. MB_BENCH_QUICK=1 makes every run short.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "bench_util.h"
#include "mudbus/dlq.h"

#define THREADS 8
#define WINDOW  64
#define PAYLOAD 300

static char dir[64];

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void rm_dir(void)
{
    if (dir[0] != '\0')
        nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    dir[0] = '\0';
}

static void die(const char *what, const mb_err *err)
{
    fprintf(stderr, "bench_dlq: %s: %s\n", what, err ? err->msg : "failed");
    rm_dir();
    exit(1);
}

static mb_dlq *fresh(void)
{
    rm_dir();
    strcpy(dir, "/tmp/mb-bench-dlq.XXXXXX");
    if (mkdtemp(dir) == NULL)
        die("mkdtemp", NULL);
    mb_dlq_opts o = {0};
    o.queue_max = 65536;
    o.queue_max_bytes = 64u << 20;
    mb_dlq *d = NULL;
    mb_err err = {0};
    if (mb_dlq_open(dir, &o, &d, &err) != MB_OK)
        die("open", &err);
    return d;
}

static uint8_t payload[PAYLOAD];

static mb_dlq_entry entry(void)
{
    mb_dlq_entry e = {0};
    e.subject = "chat.say.room.earth_arkham_city_library";
    e.payload = payload;
    e.payload_len = sizeof payload;
    e.error = MB_ETIMEOUT;
    e.error_message = "publish timed out";
    e.attempts = 4;
    e.origin = "publish";
    return e;
}

static double run_single(long n)
{
    mb_dlq *d = fresh();
    uint64_t t0 = bu_now_ns();
    for (long i = 0; i < n; i++) {
        mb_dlq_entry e = entry();
        mb_err err = {0};
        if (mb_dlq_put(d, &e, true, NULL, &err) != MB_OK)
            die("put", &err);
    }
    uint64_t t1 = bu_now_ns();
    mb_dlq_close(d, NULL);
    return (double)n / ((double)(t1 - t0) / 1e9);
}

typedef struct worker {
    mb_dlq *d;
    long n;
    bool async;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    long inflight, failed;
} worker;

static void done_fn(void *ctx, uint64_t id, mb_status st)
{
    (void)id;
    worker *w = ctx;
    pthread_mutex_lock(&w->mu);
    w->inflight--;
    w->failed += st != MB_OK;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    for (long i = 0; i < w->n; i++) {
        mb_dlq_entry e = entry();
        mb_err err = {0};
        mb_status st;
        if (w->async) {
            pthread_mutex_lock(&w->mu);
            while (w->inflight >= WINDOW)
                pthread_cond_wait(&w->cv, &w->mu);
            w->inflight++;
            pthread_mutex_unlock(&w->mu);
            st = mb_dlq_put_async(w->d, &e, done_fn, w, NULL, &err);
        } else {
            st = mb_dlq_put(w->d, &e, true, NULL, &err);
        }
        if (st != MB_OK)
            die("put", &err);
    }
    /* Durable means durable: wait for this thread's last callbacks. */
    pthread_mutex_lock(&w->mu);
    while (w->inflight > 0)
        pthread_cond_wait(&w->cv, &w->mu);
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

static double run_group(long per_thread, bool async, double *per_fsync)
{
    mb_dlq *d = fresh();
    worker w[THREADS];
    pthread_t th[THREADS];
    uint64_t t0 = bu_now_ns();
    for (int t = 0; t < THREADS; t++) {
        memset(&w[t], 0, sizeof w[t]);
        w[t].d = d;
        w[t].n = per_thread;
        w[t].async = async;
        pthread_mutex_init(&w[t].mu, NULL);
        pthread_cond_init(&w[t].cv, NULL);
        if (pthread_create(&th[t], NULL, worker_main, &w[t]) != 0)
            die("pthread_create", NULL);
    }
    for (int t = 0; t < THREADS; t++)
        pthread_join(th[t], NULL);
    uint64_t t1 = bu_now_ns();
    mb_dlq_stats s;
    mb_dlq_stats_get(d, &s);
    *per_fsync = s.fsyncs ? (double)s.puts / (double)s.fsyncs : 0;
    for (int t = 0; t < THREADS; t++) {
        if (w[t].failed)
            die("async put failed", NULL);
        pthread_mutex_destroy(&w[t].mu);
        pthread_cond_destroy(&w[t].cv);
    }
    mb_dlq_close(d, NULL);
    return (double)(per_thread * THREADS) / ((double)(t1 - t0) / 1e9);
}

static mb_status nop_publish(void *ctx, const mb_dlq_entry *e, mb_err *err)
{
    (void)err;
    *(uint64_t *)ctx += e->payload_len;
    return MB_OK;
}

static double run_replay(mb_dlq *d, bool dry, size_t max, size_t want)
{
    mb_dlq_replay_opts o = {0};
    o.dry_run = dry;
    o.max = max;
    mb_dlq_replay_result r;
    mb_err err = {0};
    uint64_t sum = 0;
    uint64_t t0 = bu_now_ns();
    if (mb_dlq_replay(d, &o, nop_publish, &sum, &r, &err) != MB_OK)
        die("replay", &err);
    uint64_t t1 = bu_now_ns();
    if (r.published != want)
        die("replay count", NULL);
    bu_sink(sum);
    return (double)r.published / ((double)(t1 - t0) / 1e9);
}

int main(void)
{
    for (size_t i = 0; i < sizeof payload; i++)
        payload[i] = (uint8_t)(i * 7);
    atexit(rm_dir);
    int runs = bu_runs(5);
    bool quick = bu_quick();
    long nsingle = quick ? 200 : 2000;
    long ngroup = quick ? 200 : 1500;   /* per thread */
    long nasync = quick ? 2000 : 25000; /* per thread */
    long nreplay = quick ? 10000 : 100000;
    long nmarked = quick ? 200 : 2000;
    double *single = calloc((size_t)runs, sizeof(double));
    double *group = calloc((size_t)runs, sizeof(double));
    double *async = calloc((size_t)runs, sizeof(double));
    double *gpf = calloc((size_t)runs, sizeof(double));
    double *apf = calloc((size_t)runs, sizeof(double));
    double *replay = calloc((size_t)runs, sizeof(double));
    double *marked = calloc((size_t)runs, sizeof(double));
    if (!single || !group || !async || !gpf || !apf || !replay || !marked)
        die("out of memory", NULL);
    for (int k = 0; k < runs; k++) {
        single[k] = run_single(nsingle);
        group[k] = run_group(ngroup, false, &gpf[k]);
        async[k] = run_group(nasync, true, &apf[k]);
    }
    /* Replay: one DLQ of nreplay entries, written without waiting. */
    mb_dlq *d = fresh();
    for (long i = 0; i < nreplay; i++) {
        mb_dlq_entry e = entry();
        mb_err err = {0};
        mb_status st;
        while ((st = mb_dlq_put(d, &e, false, NULL, &err)) == MB_EAGAIN)
            mb_dlq_flush(d, NULL);
        if (st != MB_OK)
            die("put", &err);
    }
    if (mb_dlq_flush(d, NULL) != MB_OK)
        die("flush", NULL);
    for (int k = 0; k < runs; k++)
        replay[k] = run_replay(d, true, 0, (size_t)nreplay);
    for (int k = 0; k < runs; k++)
        marked[k] = run_replay(d, false, (size_t)nmarked, (size_t)nmarked);
    mb_dlq_close(d, NULL);

    double s = bu_median(single, (size_t)runs), g = bu_median(group, (size_t)runs);
    double a = bu_median(async, (size_t)runs);
    printf("dlq_runs %d\n", runs);
    printf("dlq_entry_payload_bytes %d\n", PAYLOAD);
    printf("dlq_single_fsync_appends_per_sec_median %.0f\n", s);
    printf("dlq_group8_blocking_appends_per_sec_median %.0f\n", g);
    printf("dlq_group8_blocking_records_per_fsync_median %.1f\n", bu_median(gpf, (size_t)runs));
    printf("dlq_group8_async_window%d_appends_per_sec_median %.0f\n", WINDOW, a);
    printf("dlq_group8_async_records_per_fsync_median %.1f\n", bu_median(apf, (size_t)runs));
    printf("dlq_ratio_group8_blocking_over_single %.1f\n", s > 0 ? g / s : 0);
    printf("dlq_ratio_group8_async_over_single %.1f\n", s > 0 ? a / s : 0);
    printf("dlq_replay_read_entries %ld\n", nreplay);
    printf("dlq_replay_read_entries_per_sec_median %.0f\n", bu_median(replay, (size_t)runs));
    printf("dlq_replay_marked_entries_per_sec_median %.0f\n", bu_median(marked, (size_t)runs));
    free(single);
    free(group);
    free(async);
    free(gpf);
    free(apf);
    free(replay);
    free(marked);
    return 0;
}
