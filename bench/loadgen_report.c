/* SPDX-License-Identifier: MIT */
/* loadgen_report: the summary and exit status of bench/loadgen (loadgen.h). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* uv.h needs POSIX 2008 types under -std=c11 */
#endif
#include "loadgen.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "bench_util.h"

/* ---- the gateway's /metrics (--metrics) ---- */

const char *const lg_metric_names[LG_METRICS] = {
    "mudbus_gateway_store_statements",
    "mudbus_gateway_mute_loads_total",
    "mudbus_gateway_mute_filtered_total",
    "mudbus_gateway_mute_load_failures_total",
};

#define LG_METRICS_MAX (1u << 20) /* bytes of a /metrics answer we read */

/* One line of histogram `name` (one series; labels other than le are
 * ignored) into *b. */
static void hist_line(const char *line, const char *name, lg_buckets *b)
{
    const size_t nl = strlen(name);
    if (strncmp(line, name, nl) != 0)
        return;
    line += nl;
    if (strncmp(line, "_bucket{", 8) == 0) {
        const char *le_at = strstr(line, "le=\"");
        char *end = NULL;
        double le = le_at ? strtod(le_at + 4, &end) : 0;
        if (!le_at || end == le_at + 4 || strncmp(end, "\"} ", 3) != 0 || b->n >= LG_BUCKETS)
            return; /* +Inf (not a number here) is `count` */
        b->le[b->n] = le;
        b->cum[b->n++] = strtod(end + 3, NULL);
        return;
    }
    if (*line == '{') /* labels before the value */
        line = strchr(line, '}') ? strchr(line, '}') + 1 : line;
    if (strncmp(line, "_count", 6) == 0 || strncmp(line, "_sum", 4) == 0) {
        bool count = line[1] == 'c';
        const char *v = line + (count ? 6 : 4);
        if (*v == '{')
            v = strchr(v, '}') ? strchr(v, '}') + 1 : v;
        if (*v == ' ')
            *(count ? &b->count : &b->sum) = strtod(v + 1, NULL);
    }
}

int lg_metrics_read(const char *host, int port, double v[LG_METRICS], lg_buckets *busy,
                    lg_buckets *wait)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai = NULL;
    char portstr[16], req[512];
    int fd = -1, rc = -1;
    size_t len = 0;
    char *buf = malloc(LG_METRICS_MAX + 1);
    uint64_t deadline = bu_now_ns() + 2000000000ull;
    for (int i = 0; i < LG_METRICS; i++)
        v[i] = -1;
    busy->n = wait->n = 0;
    busy->count = busy->sum = wait->count = wait->sum = -1;
    snprintf(portstr, sizeof portstr, "%d", port);
    if (buf == NULL || getaddrinfo(host, portstr, &hints, &ai) != 0)
        goto out;
    fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
    if (fd < 0 || connect(fd, ai->ai_addr, ai->ai_addrlen) != 0)
        goto out;
    int n = snprintf(req, sizeof req,
                     "GET /metrics HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", host);
    if (send(fd, req, (size_t)n, MSG_NOSIGNAL) != n)
        goto out;
    for (;;) {
        uint64_t now = bu_now_ns();
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (now >= deadline || len >= LG_METRICS_MAX)
            break;
        int pr = poll(&pfd, 1, (int)((deadline - now) / 1000000u) + 1);
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr <= 0)
            break;
        ssize_t got = recv(fd, buf + len, LG_METRICS_MAX - len, 0);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            break;
        len += (size_t)got;
    }
    buf[len] = '\0';
    if (strncmp(buf, "HTTP/1.1 200", 12) != 0)
        goto out;
    /* Lines "name value" (no labels). The gateway answers with a
     * content-length (about 15 KiB), not chunked, so lines are whole. */
    for (char *line = buf; line && *line;
         line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
        for (int i = 0; i < LG_METRICS; i++) {
            size_t nl = strlen(lg_metric_names[i]);
            if (strncmp(line, lg_metric_names[i], nl) == 0 && line[nl] == ' ')
                v[i] = strtod(line + nl + 1, NULL);
        }
        hist_line(line, "mudbus_gateway_loop_busy_seconds", busy);
        hist_line(line, "mudbus_client_dispatch_wait_seconds", wait);
    }
    rc = 0;
out:
    if (fd >= 0)
        close(fd);
    if (ai)
        freeaddrinfo(ai);
    free(buf);
    return rc;
}

static double metric_delta(const lg_run *r, int i)
{
    return r->m0[i] >= 0 && r->m1[i] >= 0 ? r->m1[i] - r->m0[i] : -1;
}

/* Cumulative count of b at upper bound le: its own bucket, or, past its
 * highest bucket, everything. */
static double cum_at(const lg_buckets *b, double le)
{
    for (unsigned i = 0; i < b->n; i++)
        if (b->le[i] >= le * (1 - 1e-9))
            return b->cum[i];
    return b->count;
}

/* The upper bound of the bucket holding quantile q of the window's
 * observations (b1 less b0), or -1. */
static double busy_quantile(const lg_buckets *b0, const lg_buckets *b1, double q)
{
    double total = b1->count - b0->count;
    if (b0->count < 0 || b1->count < 0 || total <= 0)
        return -1;
    for (unsigned i = 0; i < b1->n; i++)
        if (b1->cum[i] - cum_at(b0, b1->le[i]) >= q * total)
            return b1->le[i];
    return b1->n ? b1->le[b1->n - 1] * 2 : -1;
}

static double secs(uint64_t ns)
{
    return (double)ns / 1e9;
}

static uint64_t errs_total(const lg_errs *e)
{
    uint64_t t = e->other;
    for (unsigned i = 0; i < e->kinds; i++)
        t += e->count[i];
    return t;
}

static double per_s(uint64_t n, double s)
{
    return s > 0 ? (double)n / s : 0;
}

void lg_report(const lg_run *r)
{
    const lg_opts *o = &r->o;
    double win = r->w_t1 > r->w_t0 ? secs(r->w_t1 - r->w_t0) : 0;
    double gw_cpu = r->gw_cpu1 - r->gw_cpu0, self_cpu = r->self_cpu1 - r->self_cpu0;
    double nats_cpu = r->nats_cpu1 - r->nats_cpu0, gw_main = r->gw_main1 - r->gw_main0;
    /* The gateway's figures count only when /proc/PID was readable at both
     * ends of the window (it may have exited or restarted meanwhile). */
    int gw_ok = o->gw_pid && r->rss_after >= 0 && r->w_t1 > r->w_t0 && gw_cpu >= 0;
    if (!gw_ok)
        gw_cpu = gw_main = 0;
    uint64_t sys_total = r->sys_total1 - r->sys_total0, sys_busy = r->sys_busy1 - r->sys_busy0;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    double sys_pct = sys_total ? 100.0 * (double)sys_busy / (double)sys_total : 0;
    double us_per_delivery = r->w_deliveries ? gw_cpu * 1e6 / (double)r->w_deliveries : 0;
    double us_per_frame = r->w_frames ? gw_cpu * 1e6 / (double)r->w_frames : 0;
    double mem_per_conn = (r->rss_before >= 0 && r->rss_joined >= 0 && r->joined)
                              ? (double)(r->rss_joined - r->rss_before) * 1024.0 / r->joined
                              : 0;
    uint64_t lost = r->expected > r->deliveries ? r->expected - r->deliveries : 0;
    const char *mode = o->max_mode ? "max" : o->rate > 0 ? "rate" : "idle";
    char closes[512], closes_js[512], errs[512] = "none", errs_js[512] = "{}";
    FILE *out = o->json ? stderr : stdout;

    lg_closes_format(&r->closes, closes, sizeof closes);
    lg_closes_json(&r->closes, closes_js, sizeof closes_js);
    if (r->errs.kinds || r->errs.other) {
        size_t a = 0, b = (size_t)snprintf(errs_js, sizeof errs_js, "{");
        for (unsigned i = 0; i < r->errs.kinds; i++) {
            a += (size_t)snprintf(errs + a, sizeof errs - a, "%s%s:%" PRIu64, i ? " " : "",
                                  r->errs.code[i], r->errs.count[i]);
            b += (size_t)snprintf(errs_js + b, sizeof errs_js - b, "%s\"%s\":%" PRIu64,
                                  i ? "," : "", r->errs.code[i], r->errs.count[i]);
        }
        snprintf(errs_js + b, sizeof errs_js - b, "}");
    }

    fprintf(out, "loadgen: %u clients, %u rooms (%.1f per room), mode %s", o->clients, o->rooms,
            (double)o->clients / o->rooms, mode);
    if (o->max_mode)
        fprintf(out, " (%u says in flight)", o->inflight);
    else if (o->rate > 0)
        fprintf(out, " (%.0f says/s offered)", o->rate);
    fprintf(out, ", window %.1f s after %.1f s warm-up%s\n", win, o->warmup_s,
            r->interrupted ? " (INTERRUPTED)" : "");
    fprintf(out,
            "  connect   %u connected, %u failed, %u joined, %u join errors in %.2f s "
            "(%.0f/s)\n",
            r->opened, r->failed, r->joined, r->join_failed, r->connect_s,
            per_s(r->joined, r->connect_s));
    if (r->setup_hist.count)
        fprintf(out, "  connect   setup (connect to join ack), ms: p50 %.1f  p99 %.1f  max %.1f\n",
                (double)lg_hist_quantile(&r->setup_hist, 0.5) / 1e6,
                (double)lg_hist_quantile(&r->setup_hist, 0.99) / 1e6,
                (double)r->setup_hist.max / 1e6);
    fprintf(out, "  connect   all %u connections started after %.3f s\n", o->clients,
            r->connects_started_s);
    if (r->welcome_hist.count)
        fprintf(out, "  connect   connect to welcome, ms: p50 %.1f  p99 %.1f  max %.1f\n",
                (double)lg_hist_quantile(&r->welcome_hist, 0.5) / 1e6,
                (double)lg_hist_quantile(&r->welcome_hist, 0.99) / 1e6,
                (double)r->welcome_hist.max / 1e6);
    if (o->gw_pid && r->connect_s > 0)
        fprintf(out,
                "  connect   gateway CPU %.1f%% of a core while connecting, %.0f us per joined "
                "client\n",
                100 * r->gw_cpu_connect / r->connect_s,
                r->joined ? r->gw_cpu_connect * 1e6 / r->joined : 0);
    if (r->conn_err_n) {
        for (unsigned i = 0; i < r->conn_err_n; i++)
            fprintf(out, "  connect error: %s\n", r->conn_err[i]);
        if (r->conn_err_other)
            fprintf(out, "  (%" PRIu64 " more kinds of connect error)\n", r->conn_err_other);
    }
    if (strcmp(mode, "idle") != 0 && r->joined) {
        fprintf(out,
                "  window    says %.0f/s, deliveries %.0f/s, all frames %.0f/s (%" PRIu64
                " deliveries)\n",
                per_s(r->w_says, win), per_s(r->w_deliveries, win), per_s(r->w_frames, win),
                r->w_deliveries);
        fprintf(out,
                "  latency   publish to receipt, us: p50 %.0f  p99 %.0f  p99.9 %.0f  max %.0f  "
                "mean %.0f\n",
                (double)lg_hist_quantile(&r->hist, 0.5) / 1e3,
                (double)lg_hist_quantile(&r->hist, 0.99) / 1e3,
                (double)lg_hist_quantile(&r->hist, 0.999) / 1e3, (double)r->hist.max / 1e3,
                lg_hist_mean(&r->hist) / 1e3);
    }
    if (o->gw_pid && !gw_ok)
        fprintf(out,
                "  gateway   no figures: /proc/%d unreadable at the end of the window "
                "(did it exit?)\n",
                o->gw_pid);
    if (gw_ok) {
        fprintf(out, "  gateway   CPU %.1f%% of a core (main thread %.1f%%)",
                win > 0 ? 100 * gw_cpu / win : 0, win > 0 ? 100 * gw_main / win : 0);
        if (r->w_deliveries)
            fprintf(out, ", %.2f us per delivery (%.2f us per frame sent)", us_per_delivery,
                    us_per_frame);
        fprintf(out, "\n");
        fprintf(out,
                "  gateway   RSS %.1f MiB before connecting, %.1f MiB all joined, %.1f MiB "
                "after the window: %.1f KiB per connection\n",
                (double)r->rss_before / 1024, (double)r->rss_joined / 1024,
                (double)r->rss_after / 1024, mem_per_conn / 1024);
    }
    if (o->nats_pid)
        fprintf(out, "  nats      CPU %.1f%% of a core\n", win > 0 ? 100 * nats_cpu / win : 0);
    fprintf(out,
            "  loadgen   CPU %.1f%% of a core (its own); machine busy %.1f%% of %ld CPUs; "
            "schedule drops %" PRIu64 ", max says queued on a client %u\n",
            win > 0 ? 100 * self_cpu / win : 0, sys_pct, ncpu, r->sched_drops, r->max_pending_seen);
    fprintf(out,
            "  delivery  %" PRIu64 " says, %" PRIu64 " expected deliveries, %" PRIu64
            " received, %" PRIu64 " missing; messages_skipped %" PRIu64 "; say timeouts %" PRIu64
            "\n",
            r->says, r->expected, r->deliveries, lost, r->skipped, r->timeouts);
    if (r->skipped)
        fprintf(out, "  first messages_skipped frame: %s\n", r->first_skipped);
    for (int w = 0; w < 2; w++) {
        const uint64_t *n = w ? r->w_ev_count : r->ev_count;
        fprintf(out, "  frames   ");
        for (int i = 0; i < LG_EV_COUNT; i++)
            if (n[i])
                fprintf(out, " %s %" PRIu64, lg_event_name((lg_event)i), n[i]);
        fprintf(out, "%s (%s)\n", (w ? r->w_frames : r->frames) ? "" : " none",
                w ? "in the window" : "whole run");
    }
    if (o->metrics) {
        fprintf(out, "  metrics   in the window:");
        for (int i = 0; i < LG_METRICS; i++)
            fprintf(out, " %s +%.0f", lg_metric_names[i] + strlen("mudbus_gateway_"),
                    metric_delta(r, i));
        fprintf(out, "\n");
        if (r->busy0.count >= 0 && r->busy1.count >= 0)
            fprintf(out,
                    "  loop      %.0f iterations in the window, busy %.3f s; an iteration's work, "
                    "ms (bucket upper bounds): p50 %.3f p99 %.3f p99.9 %.3f max %.3f\n",
                    r->busy1.count - r->busy0.count, r->busy1.sum - r->busy0.sum,
                    busy_quantile(&r->busy0, &r->busy1, 0.5) * 1e3,
                    busy_quantile(&r->busy0, &r->busy1, 0.99) * 1e3,
                    busy_quantile(&r->busy0, &r->busy1, 0.999) * 1e3,
                    busy_quantile(&r->busy0, &r->busy1, 1.0) * 1e3);
        if (r->wait0.count >= 0 && r->wait1.count == r->wait0.count)
            fprintf(out, "  dispatch  no NATS deliveries in the window (the gateway's own "
                         "messages do not come back)\n");
        else if (r->wait0.count >= 0 && r->wait1.count >= 0)
            fprintf(out,
                    "  dispatch  %.0f NATS deliveries in the window; their wait in the poll-mode "
                    "queue, ms (bucket upper bounds): p50 %.3f p99 %.3f p99.9 %.3f max %.3f\n",
                    r->wait1.count - r->wait0.count, busy_quantile(&r->wait0, &r->wait1, 0.5) * 1e3,
                    busy_quantile(&r->wait0, &r->wait1, 0.99) * 1e3,
                    busy_quantile(&r->wait0, &r->wait1, 0.999) * 1e3,
                    busy_quantile(&r->wait0, &r->wait1, 1.0) * 1e3);
    }
    fprintf(out, "  closes    by the server: %s; by us: %u\n", closes, r->closed_by_us);
    fprintf(out, "  errors    %s; acks %" PRIu64 "\n", errs, r->acks);
    fprintf(out,
            "  checks    %" PRIu64 " frames validated, %" PRIu64 " invalid, %" PRIu64
            " sequence gaps, %" PRIu64 " unreadable, %" PRIu64 " echo flag errors, %" PRIu64
            " binary, %" PRIu64 " oversize, %" PRIu64 " foreign chat\n",
            r->validated, r->invalid, r->seq_errors, r->bad_frames, r->echo_errors, r->binary,
            r->oversize, r->foreign_chat);
    if (r->invalid)
        fprintf(out, "  first invalid frame: %s\n", r->first_invalid);
    if (r->bad_frames)
        fprintf(out, "  first unreadable frame: %s\n", r->first_bad);

    if (!o->json)
        return;
    printf(
        "{\"mode\":\"%s\",\"clients\":%u,\"rooms\":%u,\"rate\":%.0f,\"inflight\":%u,"
        "\"window_s\":%.3f,\"interrupted\":%s,"
        "\"connected\":%u,\"connect_failures\":%u,\"joined\":%u,\"join_errors\":%u,"
        "\"connect_s\":%.3f,\"setup_p50_ms\":%.2f,\"setup_p99_ms\":%.2f,\"gw_cpu_connect_s\":%.3f,"
        "\"says\":%" PRIu64 ",\"says_per_s\":%.1f,\"deliveries\":%" PRIu64
        ",\"deliveries_per_s\":%.1f,\"frames_per_s\":%.1f,"
        "\"lat_p50_us\":%.1f,\"lat_p99_us\":%.1f,\"lat_p999_us\":%.1f,\"lat_max_us\":%.1f,"
        "\"lat_mean_us\":%.1f,"
        "\"gw_ok\":%s,\"gw_cpu_pct\":%.1f,\"gw_main_thread_cpu_pct\":%.1f,\"gw_cpu_us_per_"
        "delivery\":%.3f,"
        "\"gw_cpu_us_per_frame\":%.3f,"
        "\"gw_rss_before_kib\":%ld,\"gw_rss_joined_kib\":%ld,\"gw_rss_after_kib\":%ld,"
        "\"gw_bytes_per_conn\":%.0f,\"nats_cpu_pct\":%.1f,\"loadgen_cpu_pct\":%.1f,"
        "\"machine_busy_pct\":%.1f,\"ncpu\":%ld,\"schedule_drops\":%" PRIu64 ","
        "\"expected_total\":%" PRIu64 ",\"received_total\":%" PRIu64 ",\"missing\":%" PRIu64
        ",\"skipped\":%" PRIu64 ",\"say_timeouts\":%" PRIu64 ",\"closes\":%s,"
        "\"closed_by_us\":%u,\"errors\":%s,\"validated\":%" PRIu64 ",\"invalid\":%" PRIu64
        ",\"seq_gaps\":%" PRIu64 ",\"unreadable\":%" PRIu64 ",\"echo_errors\":%" PRIu64,
        mode, o->clients, o->rooms, o->rate, o->max_mode ? o->inflight : 0, win,
        r->interrupted ? "true" : "false", r->opened, r->failed, r->joined, r->join_failed,
        r->connect_s, (double)lg_hist_quantile(&r->setup_hist, 0.5) / 1e6,
        (double)lg_hist_quantile(&r->setup_hist, 0.99) / 1e6, r->gw_cpu_connect, r->w_says,
        per_s(r->w_says, win), r->w_deliveries, per_s(r->w_deliveries, win),
        per_s(r->w_frames, win), (double)lg_hist_quantile(&r->hist, 0.5) / 1e3,
        (double)lg_hist_quantile(&r->hist, 0.99) / 1e3,
        (double)lg_hist_quantile(&r->hist, 0.999) / 1e3, (double)r->hist.max / 1e3,
        lg_hist_mean(&r->hist) / 1e3, gw_ok ? "true" : "false", win > 0 ? 100 * gw_cpu / win : 0,
        win > 0 ? 100 * gw_main / win : 0, us_per_delivery, us_per_frame, r->rss_before,
        r->rss_joined, r->rss_after, mem_per_conn, win > 0 ? 100 * nats_cpu / win : 0,
        win > 0 ? 100 * self_cpu / win : 0, sys_pct, ncpu, r->sched_drops, r->expected,
        r->deliveries, lost, r->skipped, r->timeouts, closes_js, r->closed_by_us, errs_js,
        r->validated, r->invalid, r->seq_errors, r->bad_frames, r->echo_errors);
    printf(",\"connects_started_s\":%.3f", r->connects_started_s);
    printf(",\"welcome_p50_ms\":%.2f,\"welcome_p99_ms\":%.2f,\"welcome_max_ms\":%.2f",
           (double)lg_hist_quantile(&r->welcome_hist, 0.5) / 1e6,
           (double)lg_hist_quantile(&r->welcome_hist, 0.99) / 1e6,
           (double)r->welcome_hist.max / 1e6);
    if (o->metrics) {
        for (int i = 0; i < LG_METRICS; i++)
            printf(",\"d_%s\":%.0f", lg_metric_names[i] + strlen("mudbus_gateway_"),
                   metric_delta(r, i));
        printf(",\"loop_busy_p99_ms\":%.3f,\"loop_busy_max_ms\":%.3f",
               busy_quantile(&r->busy0, &r->busy1, 0.99) * 1e3,
               busy_quantile(&r->busy0, &r->busy1, 1.0) * 1e3);
    }
    printf("}\n");
    fflush(stdout);
}

int lg_verdict(const lg_run *r)
{
    int sending = r->o.max_mode || r->o.rate > 0;
    if (r->joined == 0 || (sending && r->w_deliveries == 0))
        return 2;
    if (r->o.strict &&
        (r->failed || r->join_failed || r->invalid || r->seq_errors || r->bad_frames ||
         r->echo_errors || r->closes.total || r->expected != r->deliveries || r->timeouts ||
         errs_total(&r->errs) || r->skipped))
        return 3;
    return 0;
}
