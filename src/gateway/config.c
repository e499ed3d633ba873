/* SPDX-License-Identifier: MIT */
/*
 * config.c - the gateway's settings: command-line flags over MUDBUS_* environment
 * variables over the INI file over defaults. Every key K of section [S] can be
 * set by MUDBUS_S_K (mb_config does that). Secrets are never logged.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "gw.h"
#include "mudbus/config.h"

#ifndef MB_VERSION
#define MB_VERSION "0.0.0"
#endif
#ifndef MB_WEB_ROOT
#define MB_WEB_ROOT "/usr/share/mudbus/web"
#endif

static const char *const sections[] = {"gateway", "nats", "auth", "limits", "store", NULL};
static const char *const gateway_keys[] = {
    "listen",          "web_root",        "instance_id",
    "start_room",      "max_connections", "queue_max_msgs",
    "queue_max_bytes", "queue_hard_msgs", "queue_hard_bytes",
    "socket_sndbuf",   "whisper_timeout", "drain_timeout",
    "workers",         "port_file",       "start_room_presence",
    "accept_batch",    "local_fanout",    NULL};
static const char *const auth_keys[] = {"jwt_secret", "jwt_secret_file", "dev_login",
                                        "dev_token_ttl", NULL};
static const char *const store_keys[] = {"backend", "sqlite_path",    "postgres_url",
                                         "timeout", "purge_interval", NULL};

static void usage(FILE *f)
{
    fprintf(f, "usage: mudbus-gateway [options]\n"
               "\n"
               "Delivers mudbus chat and game events to players' browsers over WebSocket.\n"
               "\n"
               "  --config FILE          INI file (also MUDBUS_CONFIG)\n"
               "  --listen HOST:PORT     [gateway] listen (default 127.0.0.1:8080; port 0: any)\n"
               "  --nats URL[,URL...]    [nats] servers (default nats://127.0.0.1:4222)\n"
               "  --web-root DIR         [gateway] web_root: the browser client's files\n"
               "  --instance-id ID       [gateway] instance_id (default gw-HOST-PID-RANDOM)\n"
               "  --port-file FILE       write the listening port here once listening\n"
               "  --dev-login            [auth] dev_login = on (issues tokens to anyone: never in\n"
               "                         production)\n"
               "  --no-rate-limits       [limits] rate_limits = off (load tests)\n"
               "  --help, --version\n"
               "\n"
               "Every key K of section [S] can be set by the environment variable MUDBUS_S_K,\n"
               "e.g. MUDBUS_AUTH_JWT_SECRET. The JWT secret (>= 32 bytes) comes from [auth]\n"
               "jwt_secret or jwt_secret_file. See docs/OPERATIONS.md for every key.\n"
               "Exit status: 0 after a clean stop (SIGTERM drains), 1 on a runtime failure,\n"
               "2 on a configuration error.\n");
}

static void warn_cb(void *ctx, const char *msg)
{
    (void)ctx;
    gw_log("warn", "event=config_warning msg=\"%s\"", msg);
}

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

static int fail(const char *what, const char *msg)
{
    fprintf(stderr, "mudbus-gateway: %s: %s\n", what, msg);
    return 2;
}

static bool is_dir(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static int parse_listen(gw_config *c, const char *v)
{
    const char *colon = strrchr(v, ':');
    if (!colon || colon == v || (size_t)(colon - v) >= sizeof c->listen_host)
        return fail("listen", "expected HOST:PORT");
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (!colon[1] || *end || port < 0 || port > 65535)
        return fail("listen", "port must be 0..65535");
    memcpy(c->listen_host, v, (size_t)(colon - v));
    c->listen_host[colon - v] = '\0';
    c->listen_port = (int)port;
    return 0;
}

int gw_config_load(gw_config *c, int argc, char **argv, char **envp)
{
    memset(c, 0, sizeof *c);
    const char *config = getenv("MUDBUS_CONFIG"), *listen = NULL, *nats = NULL, *web = NULL,
               *inst = NULL, *port_file = NULL;
    bool dev = false, norate = false;
    static const struct option longopts[] = {{"config", required_argument, NULL, 'c'},
                                             {"listen", required_argument, NULL, 'l'},
                                             {"nats", required_argument, NULL, 'n'},
                                             {"web-root", required_argument, NULL, 'w'},
                                             {"instance-id", required_argument, NULL, 'i'},
                                             {"port-file", required_argument, NULL, 'p'},
                                             {"dev-login", no_argument, NULL, 'd'},
                                             {"no-rate-limits", no_argument, NULL, 'r'},
                                             {"help", no_argument, NULL, 'h'},
                                             {"version", no_argument, NULL, 'V'},
                                             {NULL, 0, NULL, 0}};
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (ch) {
        case 'c':
            config = optarg;
            break;
        case 'l':
            listen = optarg;
            break;
        case 'n':
            nats = optarg;
            break;
        case 'w':
            web = optarg;
            break;
        case 'i':
            inst = optarg;
            break;
        case 'p':
            port_file = optarg;
            break;
        case 'd':
            dev = true;
            break;
        case 'r':
            norate = true;
            break;
        case 'h':
            usage(stdout);
            return 1;
        case 'V':
            printf("mudbus-gateway %s\n", MB_VERSION);
            return 1;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc)
        return fail(argv[optind], "unexpected argument (see --help)");

    static const char *const env_ignore[] = {"MUDBUS_CONFIG", NULL};
    mb_config_opts co = {.sections = sections, .env_ignore = env_ignore, .warn = warn_cb};
    mb_err err = {0};
    if (mb_config_load(config, (const char *const *)envp, &co, &c->cfg, &err) != MB_OK)
        return fail(config ? config : "environment", err.msg);
    mb_config *cfg = c->cfg;
    if (mb_config_check_keys(cfg, "gateway", gateway_keys, &err) != MB_OK ||
        mb_config_check_keys(cfg, "auth", auth_keys, &err) != MB_OK ||
        mb_config_check_keys(cfg, "store", store_keys, &err) != MB_OK)
        return fail("config", err.msg);

    /* [gateway] */
    if (parse_listen(c, listen ? listen
                               : mb_config_get_str(cfg, "gateway", "listen", "127.0.0.1:8080")))
        return 2;
    web = web ? web : mb_config_get_str(cfg, "gateway", "web_root", NULL);
    if (!web)
        web = is_dir(MB_WEB_ROOT) ? MB_WEB_ROOT : is_dir("web") ? "web" : NULL;
    if (web && !is_dir(web))
        return fail("web_root", "not a directory");
    if (web) {
        c->web_root = realpath(web, NULL);
        if (!c->web_root)
            return fail("web_root", "cannot resolve the path");
    }
    char host[64] = "host";
    gethostname(host, sizeof host - 1);
    for (char *p = host; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9')))
            *p = '-';
    /* Unique across restarts too: the pid may come back, the random part not. */
    uint32_t rnd = 0;
    FILE *ur = fopen("/dev/urandom", "rb");
    if (!ur || fread(&rnd, sizeof rnd, 1, ur) != 1)
        rnd = (uint32_t)time(NULL) ^ (uint32_t)getpid();
    if (ur)
        fclose(ur);
    char defid[128];
    snprintf(defid, sizeof defid, "gw-%s-%ld-%04x", host, (long)getpid(), rnd & 0xffff);
    c->instance_id = strdup(inst ? inst : mb_config_get_str(cfg, "gateway", "instance_id", defid));
    c->start_room =
        strdup(mb_config_get_str(cfg, "gateway", "start_room", "earth_arkham_city_square"));
    bool srp;
    if (mb_config_get_bool(cfg, "gateway", "start_room_presence", false, &srp, &err) != MB_OK)
        return fail("gateway", err.msg);
    c->start_room_presence = srp;
    bool lf;
    if (mb_config_get_bool(cfg, "gateway", "local_fanout", true, &lf, &err) != MB_OK)
        return fail("gateway", err.msg);
    c->local_fanout = lf;
    c->port_file =
        dup_or_null(port_file ? port_file : mb_config_get_str(cfg, "gateway", "port_file", NULL));
    uint64_t v, qmax, qhard;
    if (mb_config_get_u64(cfg, "gateway", "max_connections", 15000, 1, 1000000, &v, &err) != MB_OK)
        return fail("gateway", err.msg);
    c->max_connections = (uint32_t)v;
    if (mb_config_get_u64(cfg, "gateway", "accept_batch", 16, 1, 100000, &v, &err) != MB_OK)
        return fail("gateway", err.msg);
    c->accept_batch = (uint32_t)v;
    if (mb_config_get_u64(cfg, "gateway", "queue_max_msgs", 256, 1, 1000000, &qmax, &err) !=
            MB_OK ||
        mb_config_get_u64(cfg, "gateway", "queue_hard_msgs", qmax * 4 > 1024 ? qmax * 4 : 1024,
                          qmax, 4000000, &qhard, &err) != MB_OK)
        return fail("gateway", err.msg);
    c->queue.max_msgs = (uint32_t)qmax;
    c->queue.hard_msgs = (uint32_t)qhard;
    if (mb_config_get_size(cfg, "gateway", "queue_max_bytes", 1 << 20, 1024, 1ull << 30,
                           &c->queue.max_bytes, &err) != MB_OK ||
        mb_config_get_size(cfg, "gateway", "queue_hard_bytes", c->queue.max_bytes * 4,
                           c->queue.max_bytes, 1ull << 32, &c->queue.hard_bytes, &err) != MB_OK ||
        mb_config_get_size(cfg, "gateway", "socket_sndbuf", 128 * 1024, 0, 64 << 20, &v, &err) !=
            MB_OK)
        return fail("gateway", err.msg);
    c->socket_sndbuf = (uint32_t)v;
    if (mb_config_get_duration_ms(cfg, "gateway", "whisper_timeout", 2000, 10, 60000,
                                  &c->whisper_timeout_ms, &err) != MB_OK ||
        mb_config_get_duration_ms(cfg, "gateway", "drain_timeout", 5000, 0, 600000,
                                  &c->drain_timeout_ms, &err) != MB_OK ||
        mb_config_get_u64(cfg, "gateway", "workers", 4, 1, 64, &v, &err) != MB_OK)
        return fail("gateway", err.msg);
    c->workers = (unsigned)v;

    /* [auth] */
    const char *secret = mb_config_get_str(cfg, "auth", "jwt_secret", NULL);
    const char *secret_file = mb_config_get_str(cfg, "auth", "jwt_secret_file", NULL);
    char msg[160];
    if (secret && secret_file)
        return fail("auth", "set jwt_secret or jwt_secret_file, not both");
    if (secret) {
        c->jwt_secret_len = strlen(secret);
        c->jwt_secret = strdup(secret);
    } else if (secret_file) {
        if (!(c->jwt_secret = gw_auth_secret_read(secret_file, &c->jwt_secret_len, msg)))
            return fail("auth jwt_secret_file", msg);
    } else {
        return fail("auth", "no JWT secret: set [auth] jwt_secret_file or "
                            "MUDBUS_AUTH_JWT_SECRET (>= 32 bytes)");
    }
    if (c->jwt_secret_len < GW_AUTH_SECRET_MIN)
        return fail("auth", "the JWT secret must be at least 32 bytes");
    bool b;
    if (mb_config_get_bool(cfg, "auth", "dev_login", false, &b, &err) != MB_OK)
        return fail("auth", err.msg);
    c->dev_login = dev || b;
    if (mb_config_get_duration_ms(cfg, "auth", "dev_token_ttl", 12 * 3600 * 1000, 1000,
                                  30ull * 24 * 3600 * 1000, &v, &err) != MB_OK)
        return fail("auth", err.msg);
    c->dev_token_ttl_s = v / 1000;

    /* [limits] */
    if (mb_config_get_bool(cfg, "limits", "rate_limits", true, &b, &err) != MB_OK)
        return fail("limits", err.msg);
    c->rate_limits = b && !norate;
    static const uint32_t def_len[GW_CH__COUNT] = {
#define GW_X(e, s, len, rate) len,
        GW_CHANNELS(GW_X)
#undef GW_X
    };
    static const uint32_t def_rate[GW_CH__COUNT] = {
#define GW_X(e, s, len, rate) rate,
        GW_CHANNELS(GW_X)
#undef GW_X
    };
    const char *limit_keys[2 * GW_CH__COUNT + 3];
    static char names[2 * GW_CH__COUNT][32];
    size_t nk = 0;
    limit_keys[nk++] = "rate_limits";
    for (int i = 0; i < GW_CH__COUNT; i++) {
        snprintf(names[2 * i], sizeof names[0], "%s_per_minute", gw_chan_names[i]);
        snprintf(names[2 * i + 1], sizeof names[0], "%s_max_chars", gw_chan_names[i]);
        limit_keys[nk++] = names[2 * i];
        limit_keys[nk++] = names[2 * i + 1];
        if (mb_config_get_u64(cfg, "limits", names[2 * i], def_rate[i], 0, 1000000, &v, &err) !=
            MB_OK)
            return fail("limits", err.msg);
        c->per_minute[i] = (uint32_t)v;
        if (mb_config_get_u64(cfg, "limits", names[2 * i + 1], def_len[i], 1, GW_CONTENT_MAX, &v,
                              &err) != MB_OK)
            return fail("limits", err.msg);
        c->max_chars[i] = (uint32_t)v;
    }
    limit_keys[nk++] = "join_per_minute";
    limit_keys[nk] = NULL;
    if (mb_config_get_u64(cfg, "limits", "join_per_minute", 30, 0, 1000000, &v, &err) != MB_OK)
        return fail("limits", err.msg);
    c->join_per_minute = (uint32_t)v;
    if (mb_config_check_keys(cfg, "limits", limit_keys, &err) != MB_OK)
        return fail("config", err.msg);

    /* [store]: the mute store. "none" turns mutes off (the commands answer
     * `unavailable`); the default is SQLite in $STATE_DIRECTORY (systemd) or
     * the working directory. */
    const char *backend = mb_config_get_str(cfg, "store", "backend", "sqlite");
    if (strcmp(backend, "sqlite") != 0 && strcmp(backend, "postgres") != 0 &&
        strcmp(backend, "none") != 0)
        return fail("store backend", "must be sqlite, postgres or none");
    if (strcmp(backend, "none") != 0) {
        c->store.backend = backend;
        const char *state = getenv("STATE_DIRECTORY");
        char defpath[4096];
        snprintf(defpath, sizeof defpath, "%s%smudbus-mutes.db", state ? state : "",
                 state ? "/" : "");
        c->sqlite_path_buf = strdup(mb_config_get_str(cfg, "store", "sqlite_path", defpath));
        c->store.sqlite_path = c->sqlite_path_buf;
        c->store.postgres_url = mb_config_get_str(cfg, "store", "postgres_url", NULL);
        if (strcmp(backend, "postgres") == 0 && !c->store.postgres_url)
            return fail("store", "backend postgres needs postgres_url (a libpq connection "
                                 "string, e.g. postgresql://mudbus@db/mudbus)");
        if (mb_config_get_duration_ms(cfg, "store", "timeout", 5000, 100, 600000, &v, &err) !=
            MB_OK)
            return fail("store", err.msg);
        c->store.timeout_ms = (unsigned)v;
        c->store.conns = c->workers;
        /* 0: never; else 1 s .. 1 day. */
        if (mb_config_get_duration_ms(cfg, "store", "purge_interval", 600000, 0, 86400000,
                                      &c->purge_interval_ms, &err) != MB_OK)
            return fail("store", err.msg);
        if (c->purge_interval_ms > 0 && c->purge_interval_ms < 1000)
            return fail("store", "purge_interval: 0 (never) or at least 1s");
        if (!c->sqlite_path_buf)
            return fail("config", "out of memory");
    }

    /* [nats]: JetStream keeps the gateway's critical announcements (mute
     * changes, system messages) unless `js = off`. Whispers are NATS
     * requests answered by the target's gateway ("no responders" means
     * offline): a stream on their subject would answer them instead. */
    mb_client_opts_default(&c->nats);
    /* Local fan-out delivers what the gateway publishes to its own players
     * at once: the server need not send it back (no_echo). With one
     * connection its publishes and subscriptions meet there and nothing comes
     * back; with a larger pool what does is dropped by id (chat.c). */
    c->nats.pool_size = 1;
    c->nats.no_echo = true;
    /* Nor need its publishes reach NATS before the loop goes on: nats.c's
     * flusher thread writes them, many per write, while the loop delivers
     * (send_asap off; a 5,000-player storm: nats-server's CPU halved, room
     * chat p99 24 -> 15 ms). */
    c->nats.send_asap = false;
    c->nats.js.enabled = true;
    c->nats.js.critical_subjects[0] = "chat.system";
    c->nats.js.critical_subjects[1] = "mutes.changed.*";
    c->nats.js.ncritical = 2;
    if (mb_client_opts_from_config(cfg, "nats", &c->nats, &err) != MB_OK)
        return fail("nats", err.msg);
    if (!c->local_fanout)
        c->nats.no_echo = false; /* its own players get its messages from NATS */
    if (mb_client_opts_critical(&c->nats, "chat.whisper.player.x"))
        return fail("nats", "js_critical_subjects: whispers are NATS requests answered by the "
                            "target's gateway; a JetStream stream on chat.whisper.player.* "
                            "would answer them instead (leave them out, or js = off)");
    if (nats) {
        c->nats_servers_buf = strdup(nats);
        size_t n = 0;
        for (char *save = NULL, *t = strtok_r(c->nats_servers_buf, ",", &save); t;
             t = strtok_r(NULL, ",", &save)) {
            if (n == MB_CLIENT_MAX_SERVERS)
                return fail("--nats", "too many URLs");
            c->nats.servers[n++] = t;
        }
        if (!n)
            return fail("--nats", "no URL");
        c->nats.nservers = n;
    }
    if (!c->instance_id || !c->start_room)
        return fail("config", "out of memory");
    return 0;
}

void gw_config_free(gw_config *c)
{
    if (c->jwt_secret)
        gw_auth_secret_free(c->jwt_secret, c->jwt_secret_len);
    free(c->web_root);
    free(c->instance_id);
    free(c->start_room);
    free(c->port_file);
    free(c->nats_servers_buf);
    free(c->sqlite_path_buf);
    mb_config_destroy(c->cfg);
    memset(c, 0, sizeof *c);
}
