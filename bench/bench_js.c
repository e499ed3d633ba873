/* SPDX-License-Identifier: MIT */
/*
 * bench_js: JetStream publish-to-all-acked throughput of the same 250-byte
 * chat message (the message of bench_schema.c, with a unique message_id per
 * message) on a critical subject (chat.system) to one local nats-server with
 * JetStream, in one process and one run, through
 *   (a) raw nats.c: a jsCtx on a connection of its own, js_PublishMsgAsync of
 *       a natsMsg with Nats-Msg-Id (jsPubOptions.MsgId) and the same ack
 *       timeout (MaxWait) as mudbus, an ack handler that counts acks, then
 *       js_PublishAsyncComplete;
 *   (b) the full mudbus typed pipeline: mb_subject_build of the subject, then
 *       mb_client_publish_chat (encode, subject check, schema validation,
 *       breaker, metrics, pool pick, message_id extraction, async JetStream
 *       publish with Nats-Msg-Id), then a wait until mb_client_js_stats_get
 *       shows every publish acked (polled every 50 us).
 * Both use one connection and the same in-flight limit (jsCtxOptions
 * PublishAsync.MaxPending = mb_client_js_opts.max_pending, default 4096).
 * Each phase publishes N messages; the time runs until the last ack. Every
 * message_id is unique (a global counter), so the stream's dedup stores every
 * message; after each phase the stream is checked to hold exactly N messages
 * and purged (untimed, on a separate admin connection), so the stream's size
 * does not bias later phases. The phases alternate over several runs; per-run
 * rates, medians and the ratio b/a are printed (goal: >= 0.8, issue 4
 * "Speed").
 *
 * The whole comparison is done twice: with a file-storage stream (as in
 * production, the default of mb_client_js_opts) and with a memory-storage
 * stream (no disk noise). The stream is created by the mudbus client (its
 * own stream configuration: max age 24 h, dedup window 2 min) and deleted
 * after each storage pass.
 *
 * As in bench_client, the server's CPU use during each phase (from
 * /proc/PID/stat) and the client's own CPU (all threads, getrusage) are
 * printed; client CPU time per message does not depend on the server's
 * speed. With JetStream the server stores and acks every message and is
 * usually the one that sets the pace.
 *
 * Usage: bench_js   (MB_BENCH_RUNS=N, MB_BENCH_QUICK=1 for a short run,
 *                    MB_BENCH_N=messages per phase)
 */
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <nats/nats.h>

#include "bench_util.h"
#include "mudbus/client.h"
#include "mudbus/schema.h"
#include "mudbus/subject.h"
#include "natsrv.h"

/* A MythosMUD-style chat message of exactly 250 bytes (bench_schema.c). The
 * 16 hex digits after "m" in message_id are replaced by a counter. */
static const char chat_msg[] =
    "{\"message_id\":\"m7f3a2c1d9e7b4f60\",\"timestamp\":\"2026-01-13T10:00:00.123Z\","
    "\"sender_id\":\"player_4b2e9a\",\"sender_name\":\"Armitage\",\"channel\":\"say\","
    "\"content\":\"Has anyone seen the Necronomicon? It was here last night.\","
    "\"room_id\":\"earth_arkham_city_library\"}";
#define ID_OFF 16 /* offset of the first hex digit of the id in chat_msg */
#define ID_HEX 16

#define SUBJECT       "chat.system" /* critical by default (pattern chat_system) */
#define ACK_WAIT_MS   5000          /* mudbus default publish_ack_timeout_ms */
#define MAX_PENDING   4096          /* mudbus default max_pending */
#define DRAIN_WAIT_MS 60000

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

typedef struct ctx {
    natsrv *srv;
    natsConnection *raw, *admin;
    jsCtx *raw_js, *admin_js;
    mb_client *client;
    mb_subject_registry *subjects;
    mb_metrics *metrics;
    mb_chat_msg msg;
    char msg_id[ID_HEX + 2]; /* the typed message's id ("m" + 16 hex) */
    char raw_buf[sizeof chat_msg];
    const char *stream;
    uint64_t next_id; /* unique ids across every phase */
    _Atomic uint64_t raw_acks, raw_fails;
} ctx;

static void die(const char *what, const char *why)
{
    fprintf(stderr, "bench_js: %s: %s\n", what, why);
    exit(1);
}

static void die_nats(const char *what, natsStatus s, jsErrCode jerr)
{
    char why[256];
    snprintf(why, sizeof why, "%s (JetStream error %d; %s)", natsStatus_GetText(s), (int)jerr,
             nats_GetLastError(NULL) ? nats_GetLastError(NULL) : "");
    die(what, why);
}

/* Write v as 16 lowercase hex digits (no terminator). */
static void put_hex(char *dst, uint64_t v)
{
    static const char hex[] = "0123456789abcdef";
    for (int i = ID_HEX - 1; i >= 0; i--) {
        dst[i] = hex[v & 15u];
        v >>= 4;
    }
}

static void raw_ack(jsCtx *js, natsMsg *m, jsPubAck *pa, jsPubAckErr *pae, void *closure)
{
    ctx *x = closure;
    (void)js;
    (void)pae;
    if (pa)
        atomic_fetch_add(&x->raw_acks, 1);
    else
        atomic_fetch_add(&x->raw_fails, 1);
    natsMsg_Destroy(m);
}

typedef enum phase { PH_RAW, PH_MUDBUS, PH_COUNT } phase;
static const char *const phase_name[PH_COUNT] = {"raw_js", "mudbus_js"};

typedef struct sample {
    double rate;       /* messages per second, until the last ack */
    double server_cpu; /* server CPU seconds / wall seconds */
    double client_cpu; /* this process, all threads */
} sample;

static void sleep_us(long us)
{
    struct timespec ts = {0, us * 1000};
    nanosleep(&ts, NULL);
}

static void publish_raw(ctx *x, long n)
{
    const int len = (int)(sizeof chat_msg - 1);
    uint64_t acks0 = atomic_load(&x->raw_acks);
    for (long i = 0; i < n; i++) {
        put_hex(x->raw_buf + ID_OFF, x->next_id++);
        char id[ID_HEX + 2];
        memcpy(id, x->raw_buf + ID_OFF - 1, ID_HEX + 1);
        id[ID_HEX + 1] = '\0';
        natsMsg *m = NULL;
        natsStatus s = natsMsg_Create(&m, SUBJECT, NULL, x->raw_buf, len);
        if (s != NATS_OK)
            die_nats("natsMsg_Create", s, 0);
        jsPubOptions po;
        jsPubOptions_Init(&po);
        po.MsgId = id;
        po.MaxWait = ACK_WAIT_MS;
        s = js_PublishMsgAsync(x->raw_js, &m, &po);
        natsMsg_Destroy(m); /* NULL when nats.c took it */
        if (s != NATS_OK)
            die_nats("js_PublishMsgAsync", s, 0);
    }
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = DRAIN_WAIT_MS;
    natsStatus s = js_PublishAsyncComplete(x->raw_js, &po);
    if (s != NATS_OK)
        die_nats("js_PublishAsyncComplete", s, 0);
    if (atomic_load(&x->raw_fails) != 0)
        die("raw js_PublishMsgAsync", "a publish ack failed");
    if (atomic_load(&x->raw_acks) - acks0 != (uint64_t)n)
        die("raw js_PublishMsgAsync", "not every publish was acked");
}

static void publish_mudbus(ctx *x, long n)
{
    mb_err err = {0};
    mb_publish_disposition d = MB_PUB_SENT;
    char subj[MB_SUBJECT_MAX + 1];
    mb_client_js_stats st0, st;
    mb_client_js_stats_get(x->client, &st0);
    for (long i = 0; i < n; i++) {
        put_hex(x->msg_id + 1, x->next_id++);
        /* Build the subject as a game would, once per message. */
        if (mb_subject_build(x->subjects, "chat_system", NULL, 0, subj, sizeof subj, NULL, NULL,
                             &err) != MB_OK)
            die("mb_subject_build", err.msg);
        if (mb_client_publish_chat(x->client, subj, &x->msg, NULL, &d, &err) != MB_OK)
            die("mb_client_publish_chat", err.msg);
    }
    uint64_t deadline = bu_now_ns() + (uint64_t)DRAIN_WAIT_MS * 1000000u;
    for (;;) {
        mb_client_js_stats_get(x->client, &st);
        if (st.publish_ack_failures != st0.publish_ack_failures)
            die("mudbus JetStream publish", "a publish ack failed");
        if (st.publish_acks - st0.publish_acks >= (uint64_t)n)
            break;
        if (bu_now_ns() > deadline)
            die("mudbus JetStream publish", "acks did not arrive in time");
        sleep_us(50);
    }
    if (st.publish_acks - st0.publish_acks != (uint64_t)n)
        die("mudbus JetStream publish", "more acks than publishes");
}

/* Check that the stream holds exactly n messages, then purge it. */
static void check_and_purge(ctx *x, long n)
{
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_GetStreamInfo(&si, x->admin_js, x->stream, NULL, &jerr);
    if (s != NATS_OK)
        die_nats("js_GetStreamInfo", s, jerr);
    uint64_t msgs = si->State.Msgs;
    jsStreamInfo_Destroy(si);
    if (msgs != (uint64_t)n) {
        char why[128];
        snprintf(why, sizeof why, "stream holds %llu messages after a phase of %ld",
                 (unsigned long long)msgs, n);
        die("check", why);
    }
    s = js_PurgeStream(x->admin_js, x->stream, NULL, &jerr);
    if (s != NATS_OK)
        die_nats("js_PurgeStream", s, jerr);
}

static sample run_phase(ctx *x, phase ph, long n)
{
    double s0 = bu_proc_cpu_s(natsrv_pid(x->srv)), c0 = bu_self_cpu_s();
    uint64_t t0 = bu_now_ns();
    if (ph == PH_RAW)
        publish_raw(x, n);
    else
        publish_mudbus(x, n);
    uint64_t t1 = bu_now_ns();
    double wall = (double)(t1 - t0) / 1e9;
    sample r = {.rate = (double)n / wall,
                .server_cpu = (bu_proc_cpu_s(natsrv_pid(x->srv)) - s0) / wall,
                .client_cpu = (bu_self_cpu_s() - c0) / wall};
    check_and_purge(x, n);
    return r;
}

static void client_start(ctx *x, bool memory)
{
    mb_err err = {0};
    mb_client_opts o;
    mb_client_opts_default(&o);
    o.servers[0] = natsrv_url(x->srv);
    o.nservers = 1;
    o.name = memory ? "bench_mem" : "bench_file"; /* one metrics registry, two clients */
    o.pool_size = 1;
    o.metrics = x->metrics;
    o.subjects = x->subjects;
    o.js.enabled = true;
    o.js.stream = x->stream;
    o.js.memory_storage = memory;
    o.js.max_pending = MAX_PENDING;
    o.js.publish_ack_timeout_ms = ACK_WAIT_MS;
    if (mb_client_create(&o, &x->client, &err) != MB_OK)
        die("mb_client_create", err.msg);
}

static void client_stop(ctx *x)
{
    mb_client_destroy(x->client);
    x->client = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_DeleteStream(x->admin_js, x->stream, NULL, &jerr);
    if (s != NATS_OK)
        die_nats("js_DeleteStream", s, jerr);
}

/* One storage pass: warm-up, runs, figures. Returns the ratio of medians. */
static double bench_storage(ctx *x, bool memory, int runs, long n)
{
    const char *sname = memory ? "memory" : "file";
    x->stream = memory ? "BENCH_JS_MEM" : "BENCH_JS_FILE";
    client_start(x, memory);
    printf("storage %s (stream %s, created by mudbus):\n", sname, x->stream);

    for (int p = 0; p < PH_COUNT; p++)
        run_phase(x, (phase)p, n / 10 + 1);

    double *rate[PH_COUNT], *srv_cpu[PH_COUNT], *cli_cpu[PH_COUNT];
    double *ratio = calloc((size_t)runs, sizeof(double));
    for (int p = 0; p < PH_COUNT; p++) {
        rate[p] = calloc((size_t)runs, sizeof(double));
        srv_cpu[p] = calloc((size_t)runs, sizeof(double));
        cli_cpu[p] = calloc((size_t)runs, sizeof(double));
        if (!rate[p] || !srv_cpu[p] || !cli_cpu[p])
            die("calloc", "out of memory");
    }
    if (!ratio)
        die("calloc", "out of memory");

    for (int r = 0; r < runs; r++) {
        /* Alternate the order so that neither path always runs first. */
        static const phase order[2][PH_COUNT] = {{PH_RAW, PH_MUDBUS}, {PH_MUDBUS, PH_RAW}};
        for (int i = 0; i < PH_COUNT; i++) {
            phase p = order[r % 2][i];
            sample sm = run_phase(x, p, n);
            rate[p][r] = sm.rate;
            srv_cpu[p][r] = sm.server_cpu;
            cli_cpu[p][r] = sm.client_cpu;
        }
        ratio[r] = rate[PH_MUDBUS][r] / rate[PH_RAW][r];
        printf("  run %d:", r + 1);
        for (int p = 0; p < PH_COUNT; p++)
            printf(" %s %.0f msg/s (server cpu %.0f%%, client cpu %.0f%%)%s", phase_name[p],
                   rate[p][r], srv_cpu[p][r] * 100, cli_cpu[p][r] * 100,
                   p + 1 < PH_COUNT ? "," : "");
        printf("; b/a %.2f\n", ratio[r]);
    }

    mb_client_js_stats st;
    mb_client_js_stats_get(x->client, &st);
    uint64_t want = (uint64_t)n * (uint64_t)runs + (uint64_t)(n / 10 + 1);
    if (st.publish_acks != want || st.publish_ack_failures != 0 || st.publish_pending != 0) {
        fprintf(stderr,
                "bench_js: mudbus js stats: %llu acks (expected %llu), %llu failures, "
                "%lld pending\n",
                (unsigned long long)st.publish_acks, (unsigned long long)want,
                (unsigned long long)st.publish_ack_failures, (long long)st.publish_pending);
        exit(1);
    }

    double med[PH_COUNT], med_srv[PH_COUNT], med_cli[PH_COUNT];
    for (int p = 0; p < PH_COUNT; p++) {
        med[p] = bu_median(rate[p], (size_t)runs);
        med_srv[p] = bu_median(srv_cpu[p], (size_t)runs);
        med_cli[p] = bu_median(cli_cpu[p], (size_t)runs);
    }
    /* As in bench_client: the median of the per-run ratios (the phases of a
     * run are back to back), with the ratio of the medians beside it. */
    double ratio_med = bu_median(ratio, (size_t)runs);
    printf("js_%s_raw_msgs_per_sec_median %.0f\n", sname, med[PH_RAW]);
    printf("js_%s_mudbus_msgs_per_sec_median %.0f\n", sname, med[PH_MUDBUS]);
    printf("js_%s_ratio_mudbus_over_raw %.2f (median of per-run ratios; ratio of the medians "
           "%.2f; goal >= 0.8: %s)\n",
           sname, ratio_med, med[PH_MUDBUS] / med[PH_RAW], ratio_med >= 0.8 ? "met" : "NOT met");
    printf("js_%s_server_cpu_median raw %.0f%% mudbus %.0f%% (of one core)\n", sname,
           med_srv[PH_RAW] * 100, med_srv[PH_MUDBUS] * 100);
    printf("js_%s_client_cpu_median raw %.0f%% mudbus %.0f%% (all threads)\n", sname,
           med_cli[PH_RAW] * 100, med_cli[PH_MUDBUS] * 100);
    double cpu_ns[PH_COUNT];
    for (int p = 0; p < PH_COUNT; p++)
        cpu_ns[p] = med[p] > 0 ? med_cli[p] * 1e9 / med[p] : 0;
    printf("js_%s_client_cpu_ns_per_msg raw %.0f mudbus %.0f (ratio mudbus/raw %.1f)\n", sname,
           cpu_ns[PH_RAW], cpu_ns[PH_MUDBUS],
           cpu_ns[PH_RAW] > 0 ? cpu_ns[PH_MUDBUS] / cpu_ns[PH_RAW] : 0);

    for (int p = 0; p < PH_COUNT; p++) {
        free(rate[p]);
        free(srv_cpu[p]);
        free(cli_cpu[p]);
    }
    free(ratio);
    client_stop(x);
    return ratio_med;
}

int main(void)
{
    int runs = bu_runs(5);
    long n = bu_quick() ? 5000 : 50000;
    const char *ns = getenv("MB_BENCH_N");
    if (ns && atol(ns) > 0)
        n = atol(ns);

    static ctx x;
    x.msg = typed_msg();
    memcpy(x.raw_buf, chat_msg, sizeof chat_msg);
    memcpy(x.msg_id, chat_msg + ID_OFF - 1, ID_HEX + 1);
    x.msg_id[ID_HEX + 1] = '\0';
    x.msg.message_id = x.msg_id;
    x.next_id = 1;
    mb_err err = {0};
    if (mb_timestamp_parse("2026-01-13T10:00:00.123Z", 24, &x.msg.timestamp_ms, &err) != MB_OK)
        die("mb_timestamp_parse", err.msg);

    /* The typed message must encode to exactly the bytes published raw (same
     * id), or the comparison would not be like for like. */
    char enc[512];
    size_t enc_len = 0;
    put_hex(x.msg_id + 1, 0x1234);
    put_hex(x.raw_buf + ID_OFF, 0x1234);
    if (mb_chat_encode(NULL, &x.msg, enc, sizeof enc, &enc_len, &err) != MB_OK)
        die("mb_chat_encode", err.msg);
    if (enc_len != sizeof chat_msg - 1 || memcmp(enc, x.raw_buf, enc_len) != 0) {
        fprintf(stderr, "bench_js: the typed message encodes differently:\n  %s\n  %s\n", enc,
                x.raw_buf);
        return 1;
    }

    natsrv_opts so = {.jetstream = true};
    if (natsrv_start(&so, &x.srv) != 0)
        die("natsrv_start", "cannot start nats-server");
    const char *url = natsrv_url(x.srv);

    /* The raw path's connection gets the client's nats.c I/O buffer. */
    mb_client_opts dflt;
    mb_client_opts_default(&dflt);
    natsOptions *no = NULL;
    natsStatus s = natsOptions_Create(&no);
    if (s == NATS_OK)
        s = natsOptions_SetURL(no, url);
    if (s == NATS_OK && dflt.io_buf_bytes)
        s = natsOptions_SetIOBufSize(no, (int)dflt.io_buf_bytes);
    if (s == NATS_OK)
        s = natsConnection_Connect(&x.raw, no);
    natsOptions_Destroy(no);
    if (s == NATS_OK)
        s = natsConnection_ConnectTo(&x.admin, url);
    if (s != NATS_OK)
        die_nats("natsConnection_ConnectTo", s, 0);
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.PublishAsync.MaxPending = MAX_PENDING;
    jo.PublishAsync.AckHandler = raw_ack;
    jo.PublishAsync.AckHandlerClosure = &x;
    s = natsConnection_JetStream(&x.raw_js, x.raw, &jo);
    if (s == NATS_OK)
        s = natsConnection_JetStream(&x.admin_js, x.admin, NULL);
    if (s != NATS_OK)
        die_nats("natsConnection_JetStream", s, 0);

    if (mb_metrics_create(&x.metrics, &err) != MB_OK ||
        mb_subject_registry_create(x.metrics, &x.subjects, &err) != MB_OK)
        die("setup", err.msg);

    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    printf("bench_js: JetStream publish-to-all-acked throughput of one %zu-byte chat message "
           "on %s to a local nats-server (%s)\n",
           sizeof chat_msg - 1, SUBJECT, url);
    printf("  %ld messages per phase (unique message_id each), until the last ack, %d runs, "
           "phases alternate; %ld CPUs online; goal b/a >= 0.8\n",
           n, runs, cores);
    printf("  (a) raw nats.c js_PublishMsgAsync (Nats-Msg-Id, MaxWait %d ms) + "
           "js_PublishAsyncComplete, one connection, MaxPending %d\n"
           "  (b) mb_subject_build + mb_client_publish_chat, JetStream enabled, pool of 1, "
           "max_pending %d, wait for mb_client_js_stats publish_acks\n",
           ACK_WAIT_MS, MAX_PENDING, MAX_PENDING);
    printf("  the stream is checked to hold N messages and purged after each phase (untimed)"
           "%s\n",
           bu_quick() ? "; quick mode: phases are too short for meaningful figures" : "");

    double r_file = bench_storage(&x, false, runs, n);
    double r_mem = bench_storage(&x, true, runs, n);
    printf("js_ratio_mudbus_over_raw file %.2f memory %.2f (goal >= 0.8: %s)\n", r_file, r_mem,
           r_file >= 0.8 && r_mem >= 0.8 ? "met" : "NOT met");

    jsCtx_Destroy(x.raw_js);
    jsCtx_Destroy(x.admin_js);
    natsConnection_Destroy(x.raw);
    natsConnection_Destroy(x.admin);
    mb_subject_registry_destroy(x.subjects);
    mb_metrics_destroy(x.metrics);
    natsrv_destroy(x.srv);
    nats_CloseAndWait(5000);
    return 0;
}
