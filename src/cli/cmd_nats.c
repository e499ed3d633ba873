/* SPDX-License-Identifier: MIT */
/*
 * cmd_nats: the commands that talk to NATS through the mudbus client
 * (include/mudbus/client.h), and the connection options they share with
 * `mudbus dlq replay --server`:
 *
 *   mudbus pub SUBJECT [DATA|-]          validate, publish (no retry), flush
 *   mudbus sub PATTERN [--count N] [--queue G] [--timeout MS]
 *   mudbus req SUBJECT DATA [--timeout MS]
 *   mudbus health                        state, pool, RTT, server, JetStream
 *
 * Subjects and payloads are checked before connecting (the same checks the
 * client makes), so a refusal never depends on the server being up.
 *
 * Exit statuses: 0 ok; 1 refused (invalid subject, pattern or message;
 * invalid configuration), timed out or no responders; 2 usage; 3 NATS
 * unreachable (connection, TLS, authentication) or an I/O error.
 *
 * Threads: the client delivers `sub` messages and events on its own threads;
 * the sub state below is shared with them under its mutex. The main thread
 * blocks SIGINT and SIGTERM before the client starts (its threads inherit
 * the mask) and takes them with sigtimedwait, so an interrupted `sub` shuts
 * the client down cleanly. No global mutable state.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <nats/nats.h>

#include "cli.h"
#include "mudbus/schema.h"
#include "mudbus/subject.h"

#define PAYLOAD_MAX         ((size_t)1 << 20)
#define CONNECT_TIMEOUT_MAX 600000u

/* ---- connection options ---- */

static int parse_ms(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || *s < '0' || *s > '9' || v < min || v > max)
        return 0;
    *out = v;
    return 1;
}

int cli_conn_option(const char *path, cli_conn *c, int argc, char **argv, int *i)
{
    const char *arg = argv[*i], *v = NULL;
    int r;
    if (strcmp(arg, "--tls") == 0) {
        c->tls = true;
        return 1;
    }
#define VALUE(name) ((r = cli_opt_value(path, argc, argv, i, name, &v)) != 0)
    if (VALUE("--server")) {
        if (r < 0)
            return -1;
        /* argv is ours to modify: split the comma list in place. */
        char *save = NULL;
        char *list = (char *)v;
        if (*list == '\0' || list[strlen(list) - 1] == ',' || *list == ',' || strstr(list, ",,"))
            return cli_usage_error(path, "--server '%s': empty URL in the list", v), -1;
        for (char *u = strtok_r(list, ",", &save); u != NULL; u = strtok_r(NULL, ",", &save)) {
            if (c->nservers == MB_CLIENT_MAX_SERVERS)
                return cli_usage_error(path, "at most %d servers", MB_CLIENT_MAX_SERVERS), -1;
            c->servers[c->nservers++] = u;
        }
        c->given = true;
    } else if (VALUE("--config")) {
        if (r < 0)
            return -1;
        c->config = v;
        c->given = true;
    } else if (VALUE("--tls-ca")) {
        if (r < 0)
            return -1;
        c->tls_ca = v;
    } else if (VALUE("--tls-cert")) {
        if (r < 0)
            return -1;
        c->tls_cert = v;
    } else if (VALUE("--tls-key")) {
        if (r < 0)
            return -1;
        c->tls_key = v;
    } else if (VALUE("--user")) {
        if (r < 0)
            return -1;
        c->user = v;
    } else if (VALUE("--password")) {
        if (r < 0)
            return -1;
        c->password = v;
    } else if (VALUE("--token")) {
        if (r < 0)
            return -1;
        c->token = v;
    } else if (VALUE("--creds")) {
        if (r < 0)
            return -1;
        c->creds = v;
    } else if (VALUE("--nkey-seed")) {
        if (r < 0)
            return -1;
        c->nkey_seed = v;
    } else if (VALUE("--nkey-public")) {
        if (r < 0)
            return -1;
        c->nkey_public = v;
    } else if (VALUE("--connect-timeout")) {
        if (r < 0)
            return -1;
        if (!parse_ms(v, 1, CONNECT_TIMEOUT_MAX, &c->connect_timeout_ms))
            return cli_usage_error(path, "bad --connect-timeout '%s': 1 to %u milliseconds", v,
                                   CONNECT_TIMEOUT_MAX),
                   -1;
    } else {
        return 0;
    }
#undef VALUE
    return 1;
}

/* The flags, over whatever *o holds. */
static void apply_flags(const cli_conn *c, mb_client_opts *o)
{
    if (c->nservers > 0) {
        for (size_t i = 0; i < c->nservers; i++)
            o->servers[i] = c->servers[i];
        o->nservers = c->nservers;
    }
    if (c->tls || c->tls_ca || c->tls_cert || c->tls_key)
        o->tls.enabled = true;
    if (c->tls_ca)
        o->tls.ca_file = c->tls_ca;
    if (c->tls_cert)
        o->tls.cert_file = c->tls_cert;
    if (c->tls_key)
        o->tls.key_file = c->tls_key;
    if (c->user)
        o->auth.user = c->user;
    if (c->password)
        o->auth.password = c->password;
    if (c->token)
        o->auth.token = c->token;
    if (c->creds)
        o->auth.creds_file = c->creds;
    if (c->nkey_seed)
        o->auth.nkey_seed_file = c->nkey_seed;
    if (c->nkey_public)
        o->auth.nkey_public = c->nkey_public;
    if (c->connect_timeout_ms)
        o->connect_timeout_ms = c->connect_timeout_ms;
}

int cli_conn_check(const char *path, const cli_conn *c)
{
    if (c->password != NULL && c->user == NULL)
        return cli_usage_error(path, "--password needs --user");
    if ((c->tls_cert == NULL) != (c->tls_key == NULL))
        return cli_usage_error(path, "--tls-cert and --tls-key go together");
    if ((c->nkey_seed == NULL) != (c->nkey_public == NULL))
        return cli_usage_error(path, "--nkey-seed and --nkey-public go together");
    return -1;
}

int cli_conn_opts(const char *path, cli_conn *c, mb_client_opts *o)
{
    int rc = cli_conn_check(path, c);
    if (rc >= 0)
        return rc;
    mb_client_opts_default(o);
    /* The flags go in first too, so that the checks across keys of the
     * config (user with password, ...) see them: --user with the password
     * in MUDBUS_NATS_PASSWORD. They are applied again last, to win. */
    apply_flags(c, o);
    mb_err err = {0};
    mb_status st;
    if (c->config != NULL) {
        /* The file alone (any sections: it may be a server's whole config). */
        static const char *const no_env[] = {NULL};
        st = mb_config_load(c->config, no_env, NULL, &c->cfg_file, &err);
        if (st != MB_OK)
            return cli_report("--config", st, &err);
        if ((st = mb_client_opts_from_config(c->cfg_file, "nats", o, &err)) != MB_OK)
            return cli_report(NULL, st, &err);
    }
    const char *envpw = getenv("MUDBUS_NATS_PASSWORD");
    if (c->user != NULL && c->password == NULL && (envpw == NULL || *envpw == '\0') &&
        !mb_config_has(c->cfg_file, "nats", "password"))
        return cli_usage_error(path, "--user needs --password (or MUDBUS_NATS_PASSWORD)");
    static const char *const sections[] = {"nats", NULL};
    mb_config_opts co = {0};
    co.sections = sections; /* other MUDBUS_ variables are not ours: ignored */
    if ((st = mb_config_load(NULL, NULL, &co, &c->cfg_env, &err)) != MB_OK)
        return cli_report("environment", st, &err);
    if ((st = mb_client_opts_from_config(c->cfg_env, "nats", o, &err)) != MB_OK)
        return cli_report(NULL, st, &err);
    apply_flags(c, o);
    if (o->auth.password != NULL && o->auth.user == NULL)
        return cli_usage_error(path, "a password needs --user");
    if (o->auth.user != NULL && o->auth.password == NULL)
        return cli_usage_error(path, "--user needs --password (or MUDBUS_NATS_PASSWORD)");
    /* What an operator's one-shot tool needs, whatever the config says. */
    o->name = "mudbus-cli";
    o->pool_size = 1;
    o->start_disconnected = false;
    o->poll_mode = false;
    o->dlq = NULL;
    return -1;
}

void cli_conn_free(cli_conn *c)
{
    mb_config_destroy(c->cfg_file);
    mb_config_destroy(c->cfg_env);
    c->cfg_file = c->cfg_env = NULL;
}

/* Exit status of a failed NATS operation: 1 when the library judged the
 * input (subject, pattern, payload, argument), else 3 (connection, TLS,
 * authentication, timeout of a flush, I/O). */
static int conn_exit(mb_status st)
{
    return cli_exit_for(st) == CLI_EXIT_REFUSED ? CLI_EXIT_REFUSED : CLI_EXIT_INTERNAL;
}

int cli_conn_connect(const char *path, cli_conn *c, mb_client_opts *o, mb_client **out)
{
    int rc = cli_conn_opts(path, c, o);
    if (rc >= 0)
        return rc;
    mb_err err = {0};
    mb_status st = mb_client_create(o, out, &err);
    if (st != MB_OK) {
        cli_report(NULL, st, &err);
        return conn_exit(st);
    }
    return -1;
}

/* ---- shared pieces ---- */

/* Read DATA: the argument itself, or standard input for "-" or NULL. */
static int read_data(const char *arg, char **buf, const char **data, size_t *len)
{
    *buf = NULL;
    if (arg != NULL && strcmp(arg, "-") != 0) {
        *data = arg;
        *len = strlen(arg);
        return CLI_EXIT_OK;
    }
    char *b = malloc(PAYLOAD_MAX + 1);
    if (b == NULL) {
        cli_error("out of memory");
        return CLI_EXIT_INTERNAL;
    }
    size_t n = fread(b, 1, PAYLOAD_MAX + 1, stdin);
    if (ferror(stdin)) {
        free(b);
        cli_error("reading standard input: read error");
        return CLI_EXIT_INTERNAL;
    }
    if (n > PAYLOAD_MAX) {
        free(b);
        cli_error("standard input: payload larger than %zu bytes", PAYLOAD_MAX);
        return CLI_EXIT_REFUSED;
    }
    *buf = b;
    *data = b;
    *len = n;
    return CLI_EXIT_OK;
}

/* The checks the client makes before sending, made before connecting. */
static int check_message(const char *subject, const char *data, size_t len)
{
    mb_subject_registry *reg = NULL;
    mb_schema *schema = NULL;
    mb_err err = {0};
    mb_subject_info info;
    mb_subject_reason reason = MB_SUBJECT_OK;
    mb_status st = mb_subject_registry_create(NULL, &reg, &err);
    if (st == MB_OK)
        st = mb_subject_check(reg, subject, strlen(subject), &info, &reason, &err);
    if (st == MB_OK)
        st = mb_schema_create(NULL, &schema, &err);
    if (st == MB_OK)
        st = mb_schema_validate(schema, info.schema, data, len, NULL, &err);
    mb_schema_destroy(schema);
    mb_subject_registry_destroy(reg);
    return st == MB_OK ? CLI_EXIT_OK : cli_report(NULL, st, &err);
}

static int check_pattern(const char *pattern)
{
    mb_subject_registry *reg = NULL;
    mb_err err = {0};
    mb_subject_reason reason = MB_SUBJECT_OK;
    mb_status st = mb_subject_registry_create(NULL, &reg, &err);
    if (st == MB_OK)
        st = mb_subject_check_sub(reg, pattern, strlen(pattern), &reason, &err);
    mb_subject_registry_destroy(reg);
    return st == MB_OK ? CLI_EXIT_OK : cli_report(NULL, st, &err);
}

static uint64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* Generic argument loop: connection options, the command's own options
 * (`own`, may be NULL), help, positionals. Returns -1 to go on. */
typedef int (*own_opt_fn)(void *ctx, const char *path, int argc, char **argv, int *i);

static int parse_args(const char *path, const char *help, cli_conn *c, own_opt_fn own, void *ctx,
                      int argc, char **argv, char **pos, int maxpos, int *npos)
{
    bool options = true;
    *npos = 0;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (options && strcmp(arg, "--") == 0) {
            options = false;
            continue;
        }
        if (!options || arg[0] != '-' || arg[1] == '\0') {
            if (*npos >= maxpos)
                return cli_usage_error(path, "unexpected argument '%s'", arg);
            pos[(*npos)++] = argv[i];
            continue;
        }
        if (cli_is_help(arg)) {
            cli_command_help(help);
            return CLI_EXIT_OK;
        }
        int r = cli_conn_option(path, c, argc, argv, &i);
        if (r == 0 && own != NULL)
            r = own(ctx, path, argc, argv, &i);
        if (r < 0)
            return CLI_EXIT_USAGE;
        if (r == 0)
            return cli_usage_error(path, "unknown option '%s'", arg);
    }
    return cli_conn_check(path, c);
}

/* ---- pub ---- */

static const char pub_help[] =
    "Usage: mudbus pub [OPTIONS] SUBJECT [DATA|-]\n"
    "\n"
    "Publish one message. SUBJECT must match a registered pattern (mudbus\n"
    "subjects list) and DATA its schema; DATA omitted or '-' is read from\n"
    "standard input (at most 1 MiB). The message is sent without retries and\n"
    "flushed to the server; then `published to SUBJECT (N bytes)` is printed.\n" CLI_CONN_HELP "\n"
    "Exit status 1 also means: the configuration is invalid; 3: no NATS server\n"
    "could be reached (connection, TLS or authentication failure), or the\n"
    "message could not be handed over or flushed.\n";

int cli_cmd_pub(int argc, char **argv)
{
    const char *path = "mudbus pub";
    cli_conn c = {0};
    char *pos[2];
    int npos = 0;
    int rc = parse_args(path, pub_help, &c, NULL, NULL, argc, argv, pos, 2, &npos);
    if (rc >= 0)
        return rc;
    if (npos < 1)
        return cli_usage_error(path, "missing SUBJECT");
    char *buf = NULL;
    const char *data = NULL;
    size_t len = 0;
    if ((rc = read_data(npos > 1 ? pos[1] : NULL, &buf, &data, &len)) != CLI_EXIT_OK)
        return rc;
    if ((rc = check_message(pos[0], data, len)) != CLI_EXIT_OK) {
        free(buf);
        return rc;
    }
    mb_client_opts o;
    mb_client *cl = NULL;
    if ((rc = cli_conn_connect(path, &c, &o, &cl)) >= 0) {
        cli_conn_free(&c);
        free(buf);
        return rc;
    }
    mb_publish_opts po = {.ordering_key = NULL, .no_retry = true};
    mb_publish_disposition disp = MB_PUB_SENT;
    mb_err err = {0};
    mb_status st = mb_client_publish(cl, pos[0], data, len, &po, &disp, &err);
    if (st == MB_OK)
        st = mb_client_flush(cl, o.connect_timeout_ms > 5000 ? o.connect_timeout_ms : 5000, &err);
    if (st == MB_OK) {
        printf("published to %s (%zu bytes)\n", pos[0], len);
        rc = CLI_EXIT_OK;
    } else {
        cli_report("publish", st, &err);
        rc = conn_exit(st);
    }
    mb_client_destroy(cl);
    cli_conn_free(&c);
    free(buf);
    return rc;
}

/* ---- sub ---- */

static const char sub_help[] =
    "Usage: mudbus sub [OPTIONS] PATTERN [--count N] [--queue GROUP] [--timeout MS]\n"
    "\n"
    "Subscribe to PATTERN ('*' one token, '>' the rest; checked by the breadth\n"
    "rules of mudbus subjects check-sub) and print each validated message as\n"
    "one line `SUBJECT DATA` (line breaks of pretty-printed JSON become\n"
    "spaces). Messages that fail validation are not printed: each is reported\n"
    "on standard error as `mudbus: warning: dropped ...` (the CLI has no DLQ),\n"
    "and so are disconnections and slow-consumer drops.\n"
    "\n"
    "Stops after N messages (--count), after MS milliseconds (--timeout), or\n"
    "on SIGINT or SIGTERM (exit 0), whichever comes first.\n"
    "\n"
    "Options:\n"
    "      --count N        stop after N messages\n"
    "      --queue GROUP    join queue group GROUP (each message goes to one member)\n"
    "      --timeout MS     stop after MS milliseconds; with --count, exit 1 when\n"
    "                       fewer than N messages arrived\n" CLI_CONN_HELP "\n"
    "Exit status 1 also means: the pattern is refused, the configuration is\n"
    "invalid, or --timeout passed before --count messages arrived; 3: no NATS\n"
    "server could be reached (connection, TLS or authentication failure).\n";

typedef struct sub_args {
    uint64_t count;
    uint64_t timeout_ms;
    const char *queue;
} sub_args;

static int sub_opt(void *ctx, const char *path, int argc, char **argv, int *i)
{
    sub_args *a = ctx;
    const char *v = NULL;
    int r;
    if ((r = cli_opt_value(path, argc, argv, i, "--count", &v)) != 0) {
        if (r > 0 && !parse_ms(v, 1, UINT32_MAX, &a->count))
            return cli_usage_error(path, "bad --count '%s': a number above 0", v), -1;
        return r;
    }
    if ((r = cli_opt_value(path, argc, argv, i, "--timeout", &v)) != 0) {
        if (r > 0 && !parse_ms(v, 1, UINT32_MAX, &a->timeout_ms))
            return cli_usage_error(path, "bad --timeout '%s': milliseconds above 0", v), -1;
        return r;
    }
    if ((r = cli_opt_value(path, argc, argv, i, "--queue", &v)) != 0) {
        if (r > 0 && *v == '\0')
            return cli_usage_error(path, "empty --queue"), -1;
        a->queue = v;
        return r;
    }
    return 0;
}

typedef struct sub_state {
    pthread_mutex_t lock;
    uint64_t count, max;
    bool write_failed;
    bool closing; /* the client is being shut down: its disconnection is ours */
} sub_state;

static mb_handled sub_msg(void *ctx, const mb_msg *m)
{
    sub_state *s = ctx;
    pthread_mutex_lock(&s->lock);
    if (s->max == 0 || s->count < s->max) {
        fputs(m->subject, stdout);
        fputc(' ', stdout);
        size_t n = m->len;
        while (n > 0 && (m->data[n - 1] == '\n' || m->data[n - 1] == '\r' ||
                         m->data[n - 1] == ' ' || m->data[n - 1] == '\t'))
            n--;
        /* Valid JSON has no raw line breaks inside strings: replacing them is
         * harmless and keeps one message per line. */
        for (size_t i = 0; i < n; i++) {
            char ch = m->data[i];
            fputc(ch == '\n' || ch == '\r' ? ' ' : ch, stdout);
        }
        fputc('\n', stdout);
        if (fflush(stdout) != 0 || ferror(stdout))
            s->write_failed = true;
        s->count++;
    }
    pthread_mutex_unlock(&s->lock);
    return MB_HANDLED_OK;
}

static void sub_event(void *ctx, const mb_client_event *ev)
{
    sub_state *s = ctx;
    pthread_mutex_lock(&s->lock);
    bool closing = s->closing;
    pthread_mutex_unlock(&s->lock);
    if (closing)
        return;
    const char *text = ev->text != NULL ? ev->text : "";
    switch (ev->type) {
    case MB_CLIENT_EV_DROPPED:
        cli_error("warning: dropped %s", text);
        break;
    case MB_CLIENT_EV_DISCONNECTED:
        cli_error("warning: disconnected%s%s", *text ? ": " : "", text);
        break;
    case MB_CLIENT_EV_RECONNECTED:
        cli_error("warning: reconnected%s%s", *text ? ": " : "", text);
        break;
    case MB_CLIENT_EV_SLOW_CONSUMER:
        cli_error("warning: slow consumer, messages dropped%s%s", *text ? ": " : "", text);
        break;
    case MB_CLIENT_EV_ERROR:
        cli_error("warning: %s", *text ? text : mb_status_str(ev->status));
        break;
    default:
        break;
    }
}

int cli_cmd_sub(int argc, char **argv)
{
    const char *path = "mudbus sub";
    cli_conn c = {0};
    sub_args a = {0};
    char *pos[1];
    int npos = 0;
    int rc = parse_args(path, sub_help, &c, sub_opt, &a, argc, argv, pos, 1, &npos);
    if (rc >= 0)
        return rc;
    if (npos < 1)
        return cli_usage_error(path, "missing PATTERN");
    if ((rc = check_pattern(pos[0])) != CLI_EXIT_OK)
        return rc;

    /* Block the stop signals before any client thread exists (they inherit
     * the mask); this thread takes them with sigtimedwait. */
    sigset_t stop, old;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop, &old);

    sub_state s = {.max = a.count};
    pthread_mutex_init(&s.lock, NULL);
    mb_client_opts o;
    mb_client *cl = NULL;
    mb_err err = {0};
    mb_status st = MB_OK;
    if ((rc = cli_conn_connect(path, &c, &o, &cl)) >= 0)
        goto out;
    rc = CLI_EXIT_OK;
    if ((st = mb_client_listen(cl, sub_event, &s, &err)) != MB_OK) {
        rc = cli_report(NULL, st, &err);
        goto out;
    }
    mb_sub_id id = 0;
    if ((st = mb_client_subscribe(cl, pos[0], a.queue, sub_msg, &s, &id, &err)) != MB_OK ||
        (st = mb_client_flush(cl, 5000, &err)) != MB_OK) {
        cli_report("subscribe", st, &err);
        rc = conn_exit(st);
        goto out;
    }
    uint64_t deadline = a.timeout_ms ? mono_us() + a.timeout_ms * 1000u : 0;
    bool timed_out = false;
    for (;;) {
        pthread_mutex_lock(&s.lock);
        bool done = (s.max != 0 && s.count >= s.max) || s.write_failed;
        pthread_mutex_unlock(&s.lock);
        if (done)
            break;
        uint64_t now = mono_us();
        if (deadline && now >= deadline) {
            timed_out = true;
            break;
        }
        uint64_t slice = 20000; /* us: how quickly --count is noticed */
        if (deadline && deadline - now < slice)
            slice = deadline - now;
        struct timespec ts = {0, (long)slice * 1000};
        int sig = sigtimedwait(&stop, NULL, &ts);
        if (sig == SIGINT || sig == SIGTERM)
            break;
    }
    pthread_mutex_lock(&s.lock);
    s.closing = true;
    if (s.write_failed) {
        rc = CLI_EXIT_INTERNAL; /* main reports the write error */
    } else if (timed_out && s.max != 0 && s.count < s.max) {
        cli_error("timed out after %" PRIu64 " ms: %" PRIu64 " of %" PRIu64 " messages",
                  a.timeout_ms, s.count, s.max);
        rc = CLI_EXIT_REFUSED;
    }
    pthread_mutex_unlock(&s.lock);
    st = mb_client_unsubscribe(cl, id, &err);
    (void)st; /* the client is destroyed next anyway */
out:
    if (cl != NULL) {
        pthread_mutex_lock(&s.lock);
        s.closing = true;
        pthread_mutex_unlock(&s.lock);
    }
    mb_client_destroy(cl);
    cli_conn_free(&c);
    pthread_mutex_destroy(&s.lock);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rc;
}

/* ---- req ---- */

static const char req_help[] =
    "Usage: mudbus req [OPTIONS] SUBJECT DATA|- [--timeout MS]\n"
    "\n"
    "Send DATA ('-': standard input) as a request on SUBJECT and print the\n"
    "reply followed by a newline. The request is validated like `mudbus pub`;\n"
    "the reply is printed as it came (replies have no schema).\n"
    "\n"
    "Options:\n"
    "      --timeout MS     wait at most MS milliseconds for the reply (default "
    "5000)\n" CLI_CONN_HELP "\n"
    "Exit status 1 also means: `timed out` (no reply in time), `no responders`\n"
    "(nobody listens on SUBJECT), or an invalid configuration; 3: no NATS\n"
    "server could be reached (connection, TLS or authentication failure).\n";

static int req_opt(void *ctx, const char *path, int argc, char **argv, int *i)
{
    uint64_t *timeout = ctx;
    const char *v = NULL;
    int r;
    if ((r = cli_opt_value(path, argc, argv, i, "--timeout", &v)) != 0) {
        if (r > 0 && !parse_ms(v, 1, UINT32_MAX, timeout))
            return cli_usage_error(path, "bad --timeout '%s': milliseconds above 0", v), -1;
        return r;
    }
    return 0;
}

int cli_cmd_req(int argc, char **argv)
{
    const char *path = "mudbus req";
    cli_conn c = {0};
    uint64_t timeout = 5000;
    char *pos[2];
    int npos = 0;
    int rc = parse_args(path, req_help, &c, req_opt, &timeout, argc, argv, pos, 2, &npos);
    if (rc >= 0)
        return rc;
    if (npos < 1)
        return cli_usage_error(path, "missing SUBJECT");
    if (npos < 2)
        return cli_usage_error(path, "missing DATA ('-' reads standard input)");
    char *buf = NULL;
    const char *data = NULL;
    size_t len = 0;
    if ((rc = read_data(pos[1], &buf, &data, &len)) != CLI_EXIT_OK)
        return rc;
    if ((rc = check_message(pos[0], data, len)) != CLI_EXIT_OK) {
        free(buf);
        return rc;
    }
    mb_client_opts o;
    mb_client *cl = NULL;
    if ((rc = cli_conn_connect(path, &c, &o, &cl)) >= 0) {
        cli_conn_free(&c);
        free(buf);
        return rc;
    }
    mb_reply *reply = NULL;
    mb_err err = {0};
    mb_status st = mb_client_request(cl, pos[0], data, len, timeout, &reply, &err);
    if (st == MB_OK) {
        fwrite(reply->data, 1, reply->len, stdout);
        fputc('\n', stdout);
        mb_client_reply_free(reply);
        rc = CLI_EXIT_OK;
    } else if (st == MB_ETIMEOUT) {
        cli_error("request on %s timed out after %" PRIu64 " ms", pos[0], timeout);
        rc = CLI_EXIT_REFUSED;
    } else if (st == MB_ENORESPONDERS) {
        cli_error("request on %s: no responders", pos[0]);
        rc = CLI_EXIT_REFUSED;
    } else {
        cli_report("request", st, &err);
        rc = conn_exit(st);
    }
    mb_client_destroy(cl);
    cli_conn_free(&c);
    free(buf);
    return rc;
}

/* ---- health ---- */

static const char health_help[] =
    "Usage: mudbus health [OPTIONS]\n"
    "\n"
    "Connect and print, one `name: value` per line: the client's state, live\n"
    "pool connections, the round trip time of a flush, the server's URL and\n"
    "version (`unknown`: nats.c 3.4 does not report it), and whether JetStream\n"
    "is available to the account (probed on a second, plain nats.c connection\n"
    "with the same options: `available (N streams, M consumers)`, `not enabled`\n"
    "or `unknown (...)`).\n" CLI_CONN_HELP "\n"
    "Exit status 0: connected (whatever JetStream says); 1: invalid\n"
    "configuration; 3: no NATS server could be reached (connection, TLS or\n"
    "authentication failure), or the flush failed.\n";

static bool any_tls_url(const mb_client_opts *o)
{
    for (size_t i = 0; i < o->nservers; i++)
        if (strncmp(o->servers[i], "tls://", 6) == 0)
            return true;
    return false;
}

/* A plain nats.c connection with the client's options, for what the client
 * does not expose. Returns NATS_OK or the first failure. */
static natsStatus probe_connect(const mb_client_opts *o, natsConnection **nc)
{
    natsOptions *no = NULL;
    natsStatus s = natsOptions_Create(&no);
    if (s == NATS_OK)
        s = natsOptions_SetServers(no, (const char **)o->servers, (int)o->nservers);
    if (s == NATS_OK)
        s = natsOptions_SetName(no, "mudbus-cli-probe");
    if (s == NATS_OK)
        s = natsOptions_SetTimeout(no, (int64_t)o->connect_timeout_ms);
    if (s == NATS_OK)
        s = natsOptions_SetMaxReconnect(no, 0);
    if (s == NATS_OK && (o->tls.enabled || any_tls_url(o))) {
        s = natsOptions_SetSecure(no, true);
        if (s == NATS_OK && o->tls.ca_file)
            s = natsOptions_LoadCATrustedCertificates(no, o->tls.ca_file);
        if (s == NATS_OK && o->tls.cert_file)
            s = natsOptions_LoadCertificatesChain(no, o->tls.cert_file, o->tls.key_file);
        if (s == NATS_OK && o->tls.hostname)
            s = natsOptions_SetExpectedHostname(no, o->tls.hostname);
        if (s == NATS_OK && o->tls.skip_verify)
            s = natsOptions_SkipServerVerification(no, true);
    }
    if (s == NATS_OK && o->auth.user)
        s = natsOptions_SetUserInfo(no, o->auth.user, o->auth.password);
    if (s == NATS_OK && o->auth.token)
        s = natsOptions_SetToken(no, o->auth.token);
    if (s == NATS_OK && o->auth.nkey_seed_file)
        s = natsOptions_SetNKeyFromSeed(no, o->auth.nkey_public, o->auth.nkey_seed_file);
    if (s == NATS_OK && o->auth.creds_file)
        s = natsOptions_SetUserCredentialsFromFiles(no, o->auth.creds_file, NULL);
    if (s == NATS_OK)
        s = natsConnection_Connect(nc, no);
    natsOptions_Destroy(no);
    return s;
}

/* The server's URL and the JetStream line, from a probe connection. */
static void probe(const mb_client_opts *o, char *url, size_t url_cap, char *js, size_t js_cap)
{
    natsConnection *nc = NULL;
    natsStatus s = probe_connect(o, &nc);
    if (s != NATS_OK) {
        snprintf(js, js_cap, "unknown (probe connection failed: %s)", natsStatus_GetText(s));
        return;
    }
    if (natsConnection_GetConnectedUrl(nc, url, url_cap) != NATS_OK)
        snprintf(url, url_cap, "unknown");
    jsCtx *ctx = NULL;
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = 2000;
    s = natsConnection_JetStream(&ctx, nc, &jo);
    if (s == NATS_OK) {
        jsAccountInfo *ai = NULL;
        jsErrCode jerr = 0;
        s = js_GetAccountInfo(&ai, ctx, NULL, &jerr);
        if (s == NATS_OK) {
            snprintf(js, js_cap, "available (%" PRId64 " streams, %" PRId64 " consumers)",
                     ai->Streams, ai->Consumers);
            jsAccountInfo_Destroy(ai);
        } else if (s == NATS_NO_RESPONDERS || jerr == JSNotEnabledErr ||
                   jerr == JSNotEnabledForAccountErr) {
            snprintf(js, js_cap, "not enabled");
        } else {
            snprintf(js, js_cap, "unknown (%s)", natsStatus_GetText(s));
        }
        jsCtx_Destroy(ctx);
    } else {
        snprintf(js, js_cap, "unknown (%s)", natsStatus_GetText(s));
    }
    natsConnection_Destroy(nc);
}

int cli_cmd_health(int argc, char **argv)
{
    const char *path = "mudbus health";
    cli_conn c = {0};
    char *pos[1];
    int npos = 0;
    int rc = parse_args(path, health_help, &c, NULL, NULL, argc, argv, pos, 0, &npos);
    if (rc >= 0)
        return rc;
    mb_client_opts o;
    mb_client *cl = NULL;
    if ((rc = cli_conn_connect(path, &c, &o, &cl)) >= 0) {
        cli_conn_free(&c);
        return rc;
    }
    mb_err err = {0};
    uint64_t t0 = mono_us();
    mb_status st = mb_client_flush(cl, 5000, &err);
    uint64_t rtt = mono_us() - t0;
    if (st != MB_OK) {
        cli_report("flush", st, &err);
        mb_client_destroy(cl);
        cli_conn_free(&c);
        return CLI_EXIT_INTERNAL;
    }
    mb_client_health h;
    mb_client_health_get(cl, &h);
    char url[256] = "unknown", js[160] = "unknown";
    probe(&o, url, sizeof url, js, sizeof js);
    printf("state:           %s\n", mb_connstate_name(h.state));
    printf("pool:            %zu/%zu live\n", h.live, h.pool_size);
    printf("rtt:             %" PRIu64 ".%03" PRIu64 " ms\n", rtt / 1000, rtt % 1000);
    printf("server:          %s\n", url);
    printf("server version:  %s\n", h.server_version[0] ? h.server_version : "unknown");
    printf("jetstream:       %s\n", js);
    if (h.last_error != MB_OK)
        printf("last error:      %s: %s\n", mb_status_name(h.last_error),
               h.last_error_msg[0] ? h.last_error_msg : mb_status_str(h.last_error));
    mb_client_destroy(cl);
    cli_conn_free(&c);
    return CLI_EXIT_OK;
}
