/* SPDX-License-Identifier: MIT */
/*
 * loadgen.h: the state of bench/loadgen shared by its files: loadgen.c (the
 * loop, connections, sending and receiving), loadgen_opts.c (command line)
 * and loadgen_report.c (the summary and the exit status). Internal to the
 * benchmark; one thread (see the DESIGN comment in loadgen.c).
 */
#ifndef MUDBUS_BENCH_LOADGEN_H
#define MUDBUS_BENCH_LOADGEN_H

#include <stdint.h>

#include <libwebsockets.h>
#include <uv.h>

#include "loadgen_frame.h"
#include "loadgen_stats.h"

#define LG_MAX_PENDING 64    /* says due on one client before schedule drops */
#define LG_RX_MAX      65536 /* bytes of one reassembled message */
#define LG_TX_MAX      2048  /* bytes of one command we send */
#define LG_CONTENT_MAX 400   /* bytes of say content (the say limit is 500) */
#define LG_ERR_KINDS   8
#define LG_DRAIN_NS    3000000000ull
#define LG_CLOSE_NS    3000000000ull
#define LG_SAY_TIMEOUT 5000000000ull /* a say in flight (--max) is given up */
#define LG_PROGRESS_NS 1000000000ull
#define LG_METRICS     4  /* gateway metrics read with --metrics (lg_metric_names) */
#define LG_BUCKETS     72 /* histogram buckets read from /metrics */
#define LG_NSIG        4  /* SIGINT, SIGTERM, SIGUSR1, SIGUSR2 */

/* A client's life: IDLE -> CONNECTING -> OPEN (upgraded, waiting for the
 * welcome) -> JOINING (join sent) -> JOINED (join acked) or JOINFAIL (join
 * refused); CLOSED once an open connection ends, FAILED when it never
 * opened. */
enum { CS_IDLE, CS_CONNECTING, CS_OPEN, CS_JOINING, CS_JOINED, CS_JOINFAIL, CS_CLOSED, CS_FAILED };
/* The run's phases, in order (see loadgen.c). */
enum { PH_CONNECT, PH_WARMUP, PH_WINDOW, PH_DRAIN, PH_CLOSE, PH_DONE };

/* The command line (loadgen_opts.c has the usage text with the defaults). */

typedef struct lg_opts {
    char host[256];
    int port;
    char path[512];
    const char *secret;
    unsigned clients;
    unsigned rooms;
    double rate;
    int max_mode;
    unsigned inflight;
    double duration_s;
    double warmup_s;
    int gw_pid;
    int nats_pid;
    int json;
    int quiet;
    int strict;
    int verbose;
    unsigned connect_rate;
    unsigned max_setup; /* connections between connect and join ack */
    double connect_timeout_s;
    unsigned content_bytes;
    unsigned validate_every;
    unsigned dump;
    const char *id_prefix;
    const char *room_prefix;
    int metrics;            /* read the gateway's /metrics at both ends of the window */
    int window_signals;     /* the window starts at SIGUSR1 and ends at SIGUSR2 */
    const char *phase_file; /* the current phase's name is written there */
} lg_opts;

/* One WebSocket client. */
typedef struct lg_client {
    struct lws *wsi;
    uint32_t idx;
    uint32_t room;
    uint8_t state;
    uint8_t need_join;
    uint8_t closing;   /* we asked to close */
    uint8_t in_flight; /* --max: one say on its way */
    uint16_t pending;  /* says due, not yet written */
    uint16_t close_code;
    uint64_t frames;
    uint64_t last_seq;
    uint64_t flight_no; /* say number of the say in flight */
    uint64_t flight_since_ns;
    uint64_t connect_ns; /* when its connection was started */
    char *rx;            /* reassembly of a fragmented message */
    size_t rx_len;
} lg_client;

/* Counts of error replies by data.code. */
typedef struct lg_errs {
    char code[LG_ERR_KINDS][32];
    uint64_t count[LG_ERR_KINDS];
    unsigned kinds;
    uint64_t other;
} lg_errs;

/* Everything of one run; counters are whole-run unless prefixed w_ (the
 * measured window). */
/* A Prometheus histogram as read: cumulative counts by upper bound (the
 * buckets up to the highest non-empty one; +Inf is `count`). */
typedef struct lg_buckets {
    unsigned n;
    double le[LG_BUCKETS], cum[LG_BUCKETS];
    double count, sum; /* -1: not read */
} lg_buckets;

typedef struct lg_run {
    lg_opts o;
    uv_loop_t loop;
    uv_timer_t tick;
    uv_signal_t sig[LG_NSIG];
    struct lws_context *ctx;
    lg_client *cl;
    uint32_t *room_joined; /* joined clients per room */
    int phase;
    int interrupted;
    int usr1, usr2; /* --window-signals: SIGUSR1 / SIGUSR2 seen */
    int exit_code;
    uint64_t t_start, t_phase, t_send0, t_progress, t_expire;

    /* connections */
    unsigned started, connecting, opened, joining, joined, join_failed, failed, open_now;
    unsigned closed_by_us;
    double connect_s;
    double connects_started_s;           /* when the last connection was started */
    double gw_cpu_start, gw_cpu_connect; /* gateway CPU at start, spent connecting */
    unsigned rr;                         /* round-robin cursor over clients for sends */

    /* sending */
    uint64_t scheduled, say_no, says, expected, inflight, timeouts, sched_drops;
    unsigned max_pending_seen;

    /* receiving, whole run */
    uint64_t frames, deliveries, foreign_chat, acks, skipped, seq_errors, bad_frames;
    uint64_t echo_errors, validated, invalid, oversize, binary;
    uint64_t ev_count[LG_EV_COUNT];
    lg_closes closes;
    lg_errs errs;
    char first_invalid[320];
    char first_bad[160];
    char first_skipped[320];
    char conn_err[3][160];
    unsigned conn_err_n;
    uint64_t conn_err_other;

    /* the measured window */
    uint64_t w_says, w_deliveries, w_frames, w_t0, w_t1;
    uint64_t w_ev_count[LG_EV_COUNT];
    lg_hist hist;
    lg_hist setup_hist;                    /* connect start to join ack, every joined client */
    lg_hist welcome_hist;                  /* connect start to welcome, every client welcomed */
    double m0[LG_METRICS], m1[LG_METRICS]; /* --metrics; -1: not read */
    lg_buckets busy0, busy1;               /* --metrics: the gateway's loop busy histogram */
    lg_buckets wait0, wait1; /* --metrics: NATS deliveries' wait in the poll-mode queue */
    double gw_main0, gw_main1, gw_cpu0, gw_cpu1, nats_cpu0, nats_cpu1, self_cpu0, self_cpu1;
    uint64_t sys_busy0, sys_total0, sys_busy1, sys_total1;
    long rss_before, rss_joined, rss_after;
    uint64_t progress_deliveries;

    unsigned char tx[LWS_PRE + LG_TX_MAX];
} lg_run;

/* The gateway metrics --metrics reads, and reading them: GET /metrics from
 * host:port (blocking, up to 2 s); v[i] is the value of the unlabelled
 * sample lg_metric_names[i], -1 when absent; *busy the cumulative buckets of
 * mudbus_gateway_loop_busy_seconds. Returns 0 or -1. */
extern const char *const lg_metric_names[LG_METRICS];
int lg_metrics_read(const char *host, int port, double v[LG_METRICS], lg_buckets *busy,
                    lg_buckets *wait);

/* Fills *o from the command line and the environment (the secret may come
 * from MUDBUS_AUTH_JWT_SECRET). Returns 0, or -1 after printing why to
 * stderr. --help prints the usage and exits 0. */
int lg_opts_parse(lg_opts *o, int argc, char **argv);

/* Prints the run's summary: to stdout, or with --json to stderr followed by
 * one JSON line on stdout. */
void lg_report(const lg_run *r);

/* The exit status: 0; 2 when nothing was measured (no client joined, or says
 * were sent and none arrived); with --strict, 3 when a delivery, protocol or
 * connection check failed. */
int lg_verdict(const lg_run *r);

#endif
