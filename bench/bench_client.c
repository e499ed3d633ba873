/* SPDX-License-Identifier: MIT */
/*
 * bench_client: publish throughput of the same 250-byte chat message (the
 * message of bench_schema.c) to one local nats-server, in one process and
 * one run, through
 *   (a) raw nats.c: natsConnection_Publish on a connection of its own;
 *   (b) the full mudbus typed pipeline: mb_subject_build of the subject, then
 *       mb_client_publish_chat (encode, subject check, schema validation,
 *       breaker, metrics, pool pick, publish);
 *   (c) mb_subject_build + mb_client_publish with the raw JSON bytes
 *       (subject check, validation, breaker, metrics, pool, publish).
 * Each phase publishes N messages and then flushes (the flush is timed: a
 * message counts once the server has it). The phases alternate over several
 * runs; per-run rates, medians and the ratios b/a and c/a are printed (goal
 * for b/a: >= 0.8, issue 4 "Speed").
 *
 * The server is started here (tests/support natsrv, a free port, no
 * JetStream). Nothing subscribes, so the server parses and drops every
 * message: it does the same work for every phase and is much faster than a
 * publishing client. To show that it does not limit a phase, the server's
 * CPU use during each phase (from /proc/PID/stat) is printed next to the
 * rate; a figure near 100% of one core would mean the server, not the
 * client, sets the pace (on a small machine the raw path gets close: its
 * client mostly waits in send() while the server drains the socket, so the
 * ratio b/a flatters mudbus if anything). The client's own CPU (all threads,
 * getrusage) is printed too, and from it the client CPU time per message of
 * each path, which does not depend on the server's speed.
 *
 * Usage: bench_client   (MB_BENCH_RUNS=N, MB_BENCH_QUICK=1 for a short run,
 *                        MB_BENCH_N=messages per phase, MB_BENCH_PHASE=raw,
 *                        typed or bytes: that phase alone, for a profiler;
 *                        MB_BENCH_PIN=1: server and client on CPUs of their own;
 *                        MB_BENCH_IOBUF=BYTES: nats.c's I/O buffer for both paths,
 *                        natsOptions_SetIOBufSize and the client's io_buf_bytes;
 *                        default: the client's default, 128 KiB; 0: nats.c's own)
 */
#include <dirent.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <nats/nats.h>

#include "bench_util.h"
#include "mudbus/client.h"
#include "mudbus/schema.h"
#include "mudbus/subject.h"
#include "natsrv.h"

/* A MythosMUD-style room chat message of exactly 250 bytes (bench_schema.c). */
static const char chat_msg[] =
    "{\"message_id\":\"m7f3a2c1d9e7b4f60\",\"timestamp\":\"2026-01-13T10:00:00.123Z\","
    "\"sender_id\":\"player_4b2e9a\",\"sender_name\":\"Armitage\",\"channel\":\"say\","
    "\"content\":\"Has anyone seen the Necronomicon? It was here last night.\","
    "\"room_id\":\"earth_arkham_city_library\"}";

/* The same message as a typed value (the encoder must reproduce chat_msg). */
static mb_chat_msg typed_msg(void)
{
    mb_chat_msg m = {.message_id = "m7f3a2c1d9e7b4f60",
                     .timestamp_ms = 0, /* set in main from the text */
                     .sender_id = "player_4b2e9a",
                     .sender_name = "Armitage",
                     .channel = MB_CHANNEL_SAY,
                     .content = "Has anyone seen the Necronomicon? It was here last night.",
                     .room_id = "earth_arkham_city_library"};
    return m;
}

#define ROOM "earth_arkham_city_library"

typedef struct ctx {
    natsrv *srv;
    natsConnection *raw;
    mb_client *client;
    mb_subject_registry *subjects;
    mb_chat_msg msg;
} ctx;

static void die(const char *what, const char *why)
{
    fprintf(stderr, "bench_client: %s: %s\n", what, why);
    exit(1);
}

typedef enum phase { PH_RAW, PH_TYPED, PH_BYTES, PH_COUNT } phase;
static const char *const phase_name[PH_COUNT] = {"raw_nats", "mudbus_typed", "mudbus_bytes"};

/* Build the room subject as a game would, once per message. */
static void build_subject(ctx *x, char *subj, size_t cap)
{
    mb_subject_param p = {"room_id", ROOM};
    mb_err err; /* cleared, not = {0}: 260 zeroed bytes per message are the harness's cost */
    mb_err_clear(&err);
    if (mb_subject_build(x->subjects, "chat_say_room", &p, 1, subj, cap, NULL, NULL, &err) != MB_OK)
        die("mb_subject_build", err.msg);
}

typedef struct sample {
    double rate;       /* messages per second, flush included */
    double server_cpu; /* server CPU seconds / wall seconds */
    double client_cpu; /* this process, all threads */
} sample;

/* MB_BENCH_PIN=1 (with 2 or more CPUs): the server on CPU 1, this process
 * (and the nats.c threads it starts from now on) on CPU 0, so that both
 * paths run in the same arrangement instead of wherever the scheduler puts
 * them; on this 2-core VM the raw rate otherwise moves between two regimes
 * (about 2.0 and 2.8 million messages/s) from run to run. */
static void pin(ctx *x)
{
    const char *v = getenv("MB_BENCH_PIN");
    if (!v || strcmp(v, "1") != 0 || sysconf(_SC_NPROCESSORS_ONLN) < 2)
        return;
    cpu_set_t srv, self;
    CPU_ZERO(&srv);
    CPU_SET(1, &srv);
    CPU_ZERO(&self);
    CPU_SET(0, &self);
    if (sched_setaffinity(natsrv_pid(x->srv), sizeof srv, &srv) != 0 ||
        sched_setaffinity(0, sizeof self, &self) != 0)
        die("MB_BENCH_PIN", "sched_setaffinity failed");
    /* nats-server's threads were started before: move each of them. */
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task", natsrv_pid(x->srv));
    DIR *d = opendir(path);
    for (struct dirent *e; d && (e = readdir(d));)
        if (e->d_name[0] != '.')
            sched_setaffinity((pid_t)atoi(e->d_name), sizeof srv, &srv);
    if (d)
        closedir(d);
    printf("  pinned: nats-server on CPU 1, this process on CPU 0\n");
}

static sample run_phase(ctx *x, phase ph, long n)
{
    static const char raw_subject[] = "chat.say.room." ROOM;
    const int len = (int)(sizeof chat_msg - 1);
    mb_err err = {0};
    mb_publish_disposition d = MB_PUB_SENT;
    char subj[MB_SUBJECT_MAX + 1];
    double s0 = bu_proc_cpu_s(natsrv_pid(x->srv)), c0 = bu_self_cpu_s();
    uint64_t t0 = bu_now_ns();
    switch (ph) {
    case PH_RAW:
        for (long i = 0; i < n; i++) {
            natsStatus s = natsConnection_Publish(x->raw, raw_subject, chat_msg, len);
            if (s != NATS_OK)
                die("natsConnection_Publish", natsStatus_GetText(s));
        }
        {
            natsStatus s = natsConnection_FlushTimeout(x->raw, 30000);
            if (s != NATS_OK)
                die("natsConnection_FlushTimeout", natsStatus_GetText(s));
        }
        break;
    case PH_TYPED:
        for (long i = 0; i < n; i++) {
            build_subject(x, subj, sizeof subj);
            if (mb_client_publish_chat(x->client, subj, &x->msg, NULL, &d, &err) != MB_OK)
                die("mb_client_publish_chat", err.msg);
        }
        if (mb_client_flush(x->client, 30000, &err) != MB_OK)
            die("mb_client_flush", err.msg);
        break;
    case PH_BYTES:
        for (long i = 0; i < n; i++) {
            build_subject(x, subj, sizeof subj);
            if (mb_client_publish(x->client, subj, chat_msg, (size_t)len, NULL, &d, &err) != MB_OK)
                die("mb_client_publish", err.msg);
        }
        if (mb_client_flush(x->client, 30000, &err) != MB_OK)
            die("mb_client_flush", err.msg);
        break;
    default:
        break;
    }
    uint64_t t1 = bu_now_ns();
    double wall = (double)(t1 - t0) / 1e9;
    sample r = {.rate = (double)n / wall,
                .server_cpu = (bu_proc_cpu_s(natsrv_pid(x->srv)) - s0) / wall,
                .client_cpu = (bu_self_cpu_s() - c0) / wall};
    return r;
}

/* Sum of the client's mudbus_client_published_total series. */
static double client_published(mb_client *c)
{
    char *text = NULL;
    if (mb_client_metrics(c, &text, NULL, NULL) != MB_OK)
        return -1;
    double sum = 0;
    for (const char *p = text; (p = strstr(p, "mudbus_client_published_total{")) != NULL;) {
        const char *sp = strchr(p, '}');
        if (!sp)
            break;
        sum += strtod(sp + 1, NULL);
        p = sp;
    }
    free(text);
    return sum;
}

int main(void)
{
    int runs = bu_runs(5);
    long n = bu_quick() ? 20000 : 500000;
    const char *ns = getenv("MB_BENCH_N");
    if (ns && atol(ns) > 0)
        n = atol(ns);

    ctx x;
    memset(&x, 0, sizeof x);
    x.msg = typed_msg();
    mb_err err = {0};
    if (mb_timestamp_parse("2026-01-13T10:00:00.123Z", 24, &x.msg.timestamp_ms, &err) != MB_OK)
        die("mb_timestamp_parse", err.msg);

    /* The typed message must encode to exactly the bytes published raw, or
     * the comparison would not be like for like. */
    char enc[512];
    size_t enc_len = 0;
    if (mb_chat_encode(NULL, &x.msg, enc, sizeof enc, &enc_len, &err) != MB_OK)
        die("mb_chat_encode", err.msg);
    if (enc_len != sizeof chat_msg - 1 || memcmp(enc, chat_msg, enc_len) != 0) {
        fprintf(stderr, "bench_client: the typed message encodes differently:\n  %s\n  %s\n", enc,
                chat_msg);
        return 1;
    }

    if (natsrv_start(NULL, &x.srv) != 0)
        die("natsrv_start", "cannot start nats-server");
    pin(&x);
    const char *url = natsrv_url(x.srv);

    /* nats.c's I/O buffer: the same on both paths, the client's default
     * unless MB_BENCH_IOBUF=BYTES says otherwise (0: nats.c's own). */
    mb_client_opts o;
    mb_client_opts_default(&o);
    const char *iob = getenv("MB_BENCH_IOBUF");
    long iobuf = iob ? atol(iob) : (long)o.io_buf_bytes;
    natsOptions *no = NULL;
    natsStatus s = natsOptions_Create(&no);
    if (s == NATS_OK)
        s = natsOptions_SetURL(no, url);
    if (s == NATS_OK && iobuf > 0)
        s = natsOptions_SetIOBufSize(no, (int)iobuf);
    if (s == NATS_OK)
        s = natsConnection_Connect(&x.raw, no);
    natsOptions_Destroy(no);
    if (s != NATS_OK)
        die("natsConnection_Connect", natsStatus_GetText(s));

    mb_metrics *metrics = NULL;
    if (mb_metrics_create(&metrics, &err) != MB_OK ||
        mb_subject_registry_create(metrics, &x.subjects, &err) != MB_OK)
        die("setup", err.msg);
    o.servers[0] = url;
    o.nservers = 1;
    o.name = "bench";
    o.metrics = metrics;     /* one registry for client, subject and schema metrics */
    o.subjects = x.subjects; /* the registry the subjects are built with */
    o.io_buf_bytes = iobuf > 0 ? (size_t)iobuf : 0;
    if (mb_client_create(&o, &x.client, &err) != MB_OK)
        die("mb_client_create", err.msg);
    mb_client_health h;
    mb_client_health_get(x.client, &h);

    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    printf("bench_client: publish throughput of one %zu-byte chat message to a local "
           "nats-server (%s)\n",
           sizeof chat_msg - 1, url);
    printf("  %ld messages per phase, flush included, %d runs, phases alternate; "
           "%ld CPUs online; goal b/a >= 0.8\n",
           n, runs, cores);
    if (iobuf > 0)
        printf("  nats.c I/O buffer (natsOptions_SetIOBufSize) %ld bytes on both paths\n", iobuf);
    else
        printf("  nats.c I/O buffer: nats.c's default on both paths\n");
    printf("  (a) raw nats.c natsConnection_Publish, one connection\n"
           "  (b) mb_subject_build + mb_client_publish_chat (pool of %zu; one subject uses "
           "one connection)\n"
           "  (c) mb_subject_build + mb_client_publish of the JSON bytes\n",
           h.pool_size);
    printf("  nothing subscribes: the server parses and drops each message; its CPU use per "
           "phase is shown (near 100%% = server-bound)%s\n",
           bu_quick() ? "; quick mode: phases are too short for meaningful CPU figures" : "");

    /* One phase alone (for `perf record`): its rate and CPU per run. */
    const char *only = getenv("MB_BENCH_PHASE");
    if (only && *only) {
        static const char *const short_name[PH_COUNT] = {"raw", "typed", "bytes"};
        int p = 0;
        while (p < PH_COUNT && strcmp(short_name[p], only) != 0)
            p++;
        if (p == PH_COUNT)
            die("MB_BENCH_PHASE", "not raw, typed or bytes");
        run_phase(&x, (phase)p, n / 10 + 1);
        for (int r = 0; r < runs; r++) {
            sample sm = run_phase(&x, (phase)p, n);
            printf("  run %d: %s %.0f msg/s (server cpu %.0f%%, client cpu %.0f%%, %.0f ns/msg)\n",
                   r + 1, phase_name[p], sm.rate, sm.server_cpu * 100, sm.client_cpu * 100,
                   sm.client_cpu * 1e9 / sm.rate);
        }
        mb_client_destroy(x.client);
        natsConnection_Destroy(x.raw);
        mb_subject_registry_destroy(x.subjects);
        mb_metrics_destroy(metrics);
        natsrv_destroy(x.srv);
        nats_CloseAndWait(5000);
        return 0;
    }

    /* Warm up every path (connections, caches, nats.c buffers). */
    for (int p = 0; p < PH_COUNT; p++)
        run_phase(&x, (phase)p, n / 10 + 1);

    double *rate[PH_COUNT], *srv_cpu[PH_COUNT], *cli_cpu[PH_COUNT];
    double *ratio_b = calloc((size_t)runs, sizeof(double));
    double *ratio_c = calloc((size_t)runs, sizeof(double));
    for (int p = 0; p < PH_COUNT; p++) {
        rate[p] = calloc((size_t)runs, sizeof(double));
        srv_cpu[p] = calloc((size_t)runs, sizeof(double));
        cli_cpu[p] = calloc((size_t)runs, sizeof(double));
        if (!rate[p] || !srv_cpu[p] || !cli_cpu[p])
            die("calloc", "out of memory");
    }
    if (!ratio_b || !ratio_c)
        die("calloc", "out of memory");

    for (int r = 0; r < runs; r++) {
        /* Alternate the order so that neither path always runs first. */
        static const phase order[2][PH_COUNT] = {{PH_RAW, PH_TYPED, PH_BYTES},
                                                 {PH_TYPED, PH_BYTES, PH_RAW}};
        for (int i = 0; i < PH_COUNT; i++) {
            phase p = order[r % 2][i];
            sample sm = run_phase(&x, p, n);
            rate[p][r] = sm.rate;
            srv_cpu[p][r] = sm.server_cpu;
            cli_cpu[p][r] = sm.client_cpu;
        }
        ratio_b[r] = rate[PH_TYPED][r] / rate[PH_RAW][r];
        ratio_c[r] = rate[PH_BYTES][r] / rate[PH_RAW][r];
        printf("  run %d:", r + 1);
        for (int p = 0; p < PH_COUNT; p++)
            printf(" %s %.0f msg/s (server cpu %.0f%%, client cpu %.0f%%)%s", phase_name[p],
                   rate[p][r], srv_cpu[p][r] * 100, cli_cpu[p][r] * 100,
                   p + 1 < PH_COUNT ? "," : "");
        printf("; b/a %.2f, c/a %.2f\n", ratio_b[r], ratio_c[r]);
    }

    /* Every message must have been handed to nats.c by the pipeline. */
    double want = 2.0 * ((double)n * runs + (double)(n / 10 + 1)); /* (b) and (c), warm-up */
    double got = client_published(x.client);
    if (got != want) {
        fprintf(stderr, "bench_client: mudbus_client_published_total is %.0f, expected %.0f\n", got,
                want);
        return 1;
    }
    natsStatistics *st = NULL;
    uint64_t out_msgs = 0;
    if (natsStatistics_Create(&st) == NATS_OK && natsConnection_GetStats(x.raw, st) == NATS_OK)
        natsStatistics_GetCounts(st, NULL, NULL, &out_msgs, NULL, NULL);
    natsStatistics_Destroy(st);
    if (out_msgs != (uint64_t)n * (uint64_t)runs + (uint64_t)(n / 10 + 1)) {
        fprintf(stderr, "bench_client: raw connection sent %llu messages\n",
                (unsigned long long)out_msgs);
        return 1;
    }

    double med[PH_COUNT], med_srv[PH_COUNT], med_cli[PH_COUNT];
    for (int p = 0; p < PH_COUNT; p++) {
        med[p] = bu_median(rate[p], (size_t)runs);
        med_srv[p] = bu_median(srv_cpu[p], (size_t)runs);
        med_cli[p] = bu_median(cli_cpu[p], (size_t)runs);
    }
    printf("client_raw_nats_msgs_per_sec_median %.0f\n", med[PH_RAW]);
    printf("client_mudbus_typed_msgs_per_sec_median %.0f\n", med[PH_TYPED]);
    printf("client_mudbus_bytes_msgs_per_sec_median %.0f\n", med[PH_BYTES]);
    /* The verdict reads the median of the per-run ratios: the two phases of
     * a run are measured back to back, so their ratio cancels what the
     * machine's speed does between runs (on a shared VM it moves by tens of
     * percent); the ratio of the medians mixes rates of different runs and
     * is printed next to it. */
    double paired_b = bu_median(ratio_b, (size_t)runs);
    printf("client_ratio_typed_over_raw %.2f (median of per-run ratios; ratio of the medians "
           "%.2f; goal >= 0.8: %s)\n",
           paired_b, med[PH_TYPED] / med[PH_RAW], paired_b >= 0.8 ? "met" : "NOT met");
    printf("client_ratio_bytes_over_raw %.2f (median of per-run ratios; ratio of the medians "
           "%.2f)\n",
           bu_median(ratio_c, (size_t)runs), med[PH_BYTES] / med[PH_RAW]);
    printf("client_server_cpu_median raw %.0f%% typed %.0f%% bytes %.0f%% (of one core)\n",
           med_srv[PH_RAW] * 100, med_srv[PH_TYPED] * 100, med_srv[PH_BYTES] * 100);
    printf("client_client_cpu_median raw %.0f%% typed %.0f%% bytes %.0f%% (all threads)\n",
           med_cli[PH_RAW] * 100, med_cli[PH_TYPED] * 100, med_cli[PH_BYTES] * 100);
    /* Client CPU per message does not depend on how fast the server drains
     * the socket: it is the cost of each path to this process. */
    double cpu_ns[PH_COUNT];
    for (int p = 0; p < PH_COUNT; p++)
        cpu_ns[p] = med[p] > 0 ? med_cli[p] * 1e9 / med[p] : 0;
    printf("client_cpu_ns_per_msg raw %.0f typed %.0f bytes %.0f (ratio typed/raw %.1f)\n",
           cpu_ns[PH_RAW], cpu_ns[PH_TYPED], cpu_ns[PH_BYTES],
           cpu_ns[PH_RAW] > 0 ? cpu_ns[PH_TYPED] / cpu_ns[PH_RAW] : 0);

    for (int p = 0; p < PH_COUNT; p++) {
        free(rate[p]);
        free(srv_cpu[p]);
        free(cli_cpu[p]);
    }
    free(ratio_b);
    free(ratio_c);
    mb_client_destroy(x.client);
    natsConnection_Destroy(x.raw);
    mb_subject_registry_destroy(x.subjects);
    mb_metrics_destroy(metrics);
    natsrv_destroy(x.srv);
    nats_CloseAndWait(5000);
    return 0;
}
