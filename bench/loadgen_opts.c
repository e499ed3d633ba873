/* SPDX-License-Identifier: MIT */
/* loadgen_opts: the command line of bench/loadgen (loadgen.h). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* uv.h needs POSIX 2008 types under -std=c11 */
#endif
#include "loadgen.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f)
{
    fprintf(f,
            "usage: loadgen --url ws://HOST:PORT[/PATH] [options]\n"
            "  --secret S          HS256 secret (default: $MUDBUS_AUTH_JWT_SECRET)\n"
            "  --clients N         connections (default 100)\n"
            "  --rooms R           rooms; client i joins <room-prefix><i %% R> (default 10)\n"
            "  --rate S            says per second in total over all clients; 0 = idle\n"
            "  --max               closed loop: keep --inflight says in flight (default 64)\n"
            "  --inflight K        says in flight with --max\n"
            "  --duration S        measured window, seconds (default 10)\n"
            "  --warmup S          seconds of load before the window (default 2)\n"
            "  --gateway-pid PID   report the gateway's CPU and RSS from /proc\n"
            "  --nats-pid PID      report nats-server's CPU too\n"
            "  --connect-rate N    new connections per second (default 2000)\n"
            "  --max-setup N       connections between connect and join ack at once\n"
            "                      (default 100; 0 = only --connect-rate bounds them)\n"
            "  --connect-timeout S give up waiting for connects and joins (default 60)\n"
            "  --content-bytes N   say content length, %d..%d (default 64)\n"
            "  --validate-every N  check every Nth frame strictly (default 512; 0 = off)\n"
            "  --dump N            print the first N frames received to stderr\n"
            "  --id-prefix P       player ids are P<i> (default lg)\n"
            "  --room-prefix P     (default bench_zone_sub_room)\n"
            "  --metrics           read the gateway's /metrics at both ends of the window and\n"
            "                      report the deltas of its store and mute counters\n"
            "  --window-signals    the window starts at SIGUSR1 (once warmed up) and ends at\n"
            "                      SIGUSR2 or after --duration (to bracket another run)\n"
            "  --phase-file F      write the current phase's name to F at every change\n"
            "  --json              one JSON line on stdout (the summary goes to stderr)\n"
            "  --strict            exit 3 if a delivery or protocol check failed\n"
            "  --quiet             no progress lines; --verbose: phase changes, lws warnings\n",
            48, LG_CONTENT_MAX);
}

static int parse_url(lg_opts *o, const char *url)
{
    const char *p = url;
    if (strncmp(p, "ws://", 5) != 0) {
        fprintf(stderr, "loadgen: --url must start with ws:// (TLS is not supported)\n");
        return -1;
    }
    p += 5;
    const char *colon = strchr(p, ':'), *slash = strchr(p, '/');
    const char *host_end = colon && (!slash || colon < slash) ? colon
                           : slash                            ? slash
                                                              : p + strlen(p);
    if (host_end == p || (size_t)(host_end - p) >= sizeof o->host)
        return -1;
    memcpy(o->host, p, (size_t)(host_end - p));
    o->host[host_end - p] = '\0';
    o->port = 80;
    if (*host_end == ':') {
        char *end;
        long port = strtol(host_end + 1, &end, 10);
        if (port <= 0 || port > 65535 || (*end != '\0' && *end != '/'))
            return -1;
        o->port = (int)port;
    }
    snprintf(o->path, sizeof o->path, "%s", slash ? slash : "/ws");
    if (strcmp(o->path, "/") == 0)
        snprintf(o->path, sizeof o->path, "/ws");
    return 0;
}

static int parse_num(const char *name, const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end != '\0' || v < lo || v > hi) {
        fprintf(stderr, "loadgen: %s: %s is not a number in %g..%g\n", name, s, lo, hi);
        return -1;
    }
    *out = v;
    return 0;
}

int lg_opts_parse(lg_opts *o, int argc, char **argv)
{
    enum {
        O_URL = 256,
        O_SECRET,
        O_CLIENTS,
        O_ROOMS,
        O_RATE,
        O_MAX,
        O_INFLIGHT,
        O_DURATION,
        O_WARMUP,
        O_GWPID,
        O_NATSPID,
        O_JSON,
        O_QUIET,
        O_STRICT,
        O_VERBOSE,
        O_CRATE,
        O_HS,
        O_CTIMEOUT,
        O_BYTES,
        O_VALIDATE,
        O_DUMP,
        O_IDP,
        O_ROOMP,
        O_METRICS,
        O_WSIG,
        O_PFILE,
        O_HELP
    };
    static const struct option longs[] = {
        {"url", required_argument, NULL, O_URL},
        {"secret", required_argument, NULL, O_SECRET},
        {"clients", required_argument, NULL, O_CLIENTS},
        {"rooms", required_argument, NULL, O_ROOMS},
        {"rate", required_argument, NULL, O_RATE},
        {"max", no_argument, NULL, O_MAX},
        {"inflight", required_argument, NULL, O_INFLIGHT},
        {"duration", required_argument, NULL, O_DURATION},
        {"warmup", required_argument, NULL, O_WARMUP},
        {"gateway-pid", required_argument, NULL, O_GWPID},
        {"nats-pid", required_argument, NULL, O_NATSPID},
        {"json", no_argument, NULL, O_JSON},
        {"quiet", no_argument, NULL, O_QUIET},
        {"strict", no_argument, NULL, O_STRICT},
        {"verbose", no_argument, NULL, O_VERBOSE},
        {"connect-rate", required_argument, NULL, O_CRATE},
        {"max-setup", required_argument, NULL, O_HS},
        {"connect-timeout", required_argument, NULL, O_CTIMEOUT},
        {"content-bytes", required_argument, NULL, O_BYTES},
        {"validate-every", required_argument, NULL, O_VALIDATE},
        {"dump", required_argument, NULL, O_DUMP},
        {"id-prefix", required_argument, NULL, O_IDP},
        {"room-prefix", required_argument, NULL, O_ROOMP},
        {"metrics", no_argument, NULL, O_METRICS},
        {"window-signals", no_argument, NULL, O_WSIG},
        {"phase-file", required_argument, NULL, O_PFILE},
        {"help", no_argument, NULL, O_HELP},
        {NULL, 0, NULL, 0},
    };
    const char *url = NULL;
    double v;
    int ch;
    memset(o, 0, sizeof *o);
    o->secret = getenv("MUDBUS_AUTH_JWT_SECRET");
    o->clients = 100;
    o->rooms = 10;
    o->inflight = 64;
    o->duration_s = 10;
    o->warmup_s = 2;
    o->connect_rate = 2000;
    o->max_setup = 100;
    o->connect_timeout_s = 60;
    o->content_bytes = 64;
    o->validate_every = 512;
    o->id_prefix = "lg";
    o->room_prefix = "bench_zone_sub_room";
    while ((ch = getopt_long(argc, argv, "h", longs, NULL)) != -1) {
        int rc = 0;
        switch (ch) {
        case O_URL:
            url = optarg;
            break;
        case O_SECRET:
            o->secret = optarg;
            break;
        case O_CLIENTS:
            rc = parse_num("--clients", optarg, 1, 1000000, &v);
            o->clients = (unsigned)v;
            break;
        case O_ROOMS:
            rc = parse_num("--rooms", optarg, 1, 1000000, &v);
            o->rooms = (unsigned)v;
            break;
        case O_RATE:
            rc = parse_num("--rate", optarg, 0, 1e7, &o->rate);
            break;
        case O_MAX:
            o->max_mode = 1;
            break;
        case O_INFLIGHT:
            rc = parse_num("--inflight", optarg, 1, 1000000, &v);
            o->inflight = (unsigned)v;
            break;
        case O_DURATION:
            rc = parse_num("--duration", optarg, 0.1, 86400, &o->duration_s);
            break;
        case O_WARMUP:
            rc = parse_num("--warmup", optarg, 0, 86400, &o->warmup_s);
            break;
        case O_GWPID:
            rc = parse_num("--gateway-pid", optarg, 1, 1 << 30, &v);
            o->gw_pid = (int)v;
            break;
        case O_NATSPID:
            rc = parse_num("--nats-pid", optarg, 1, 1 << 30, &v);
            o->nats_pid = (int)v;
            break;
        case O_JSON:
            o->json = 1;
            break;
        case O_QUIET:
            o->quiet = 1;
            break;
        case O_STRICT:
            o->strict = 1;
            break;
        case O_VERBOSE:
            o->verbose = 1;
            break;
        case O_CRATE:
            rc = parse_num("--connect-rate", optarg, 1, 1e6, &v);
            o->connect_rate = (unsigned)v;
            break;
        case O_HS:
            rc = parse_num("--max-setup", optarg, 0, 1e6, &v);
            o->max_setup = v > 0 ? (unsigned)v : UINT_MAX;
            break;
        case O_CTIMEOUT:
            rc = parse_num("--connect-timeout", optarg, 1, 86400, &o->connect_timeout_s);
            break;
        case O_BYTES:
            rc = parse_num("--content-bytes", optarg, 48, LG_CONTENT_MAX, &v);
            o->content_bytes = (unsigned)v;
            break;
        case O_VALIDATE:
            rc = parse_num("--validate-every", optarg, 0, 1e9, &v);
            o->validate_every = (unsigned)v;
            break;
        case O_DUMP:
            rc = parse_num("--dump", optarg, 0, 1e9, &v);
            o->dump = (unsigned)v;
            break;
        case O_IDP:
            o->id_prefix = optarg;
            break;
        case O_ROOMP:
            o->room_prefix = optarg;
            break;
        case O_METRICS:
            o->metrics = 1;
            break;
        case O_WSIG:
            o->window_signals = 1;
            break;
        case O_PFILE:
            o->phase_file = optarg;
            break;
        case O_HELP:
        case 'h':
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            return -1;
        }
        if (rc != 0)
            return -1;
    }
    if (optind != argc || url == NULL) {
        usage(stderr);
        return -1;
    }
    if (parse_url(o, url) != 0) {
        fprintf(stderr, "loadgen: bad --url %s\n", url);
        return -1;
    }
    if (o->secret == NULL || strlen(o->secret) < 32) {
        fprintf(stderr, "loadgen: need --secret or MUDBUS_AUTH_JWT_SECRET of at least 32 bytes\n");
        return -1;
    }
    if (strlen(o->id_prefix) > 40 || strlen(o->room_prefix) > 80) {
        fprintf(stderr, "loadgen: --id-prefix or --room-prefix too long\n");
        return -1;
    }
    if (o->max_mode && o->inflight > o->clients)
        o->inflight = o->clients;
    return 0;
}
