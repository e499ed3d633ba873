/* SPDX-License-Identifier: MIT */
/*
 * cmd_dlq: `mudbus dlq list|show|replay|purge|stats|put --dir DIR`, the
 * operator's view of a dead letter queue directory (include/mudbus/dlq.h).
 *
 * Reading commands (list, show, stats, replay --dry-run) open the directory
 * read-only: they take no lock and change nothing, so they work beside the
 * game server that owns the DLQ. Changing commands (replay, purge, put) open
 * it for writing and fail with exit status 3 while another process has it.
 * The tool never applies retention of its own (no age or size limit): that
 * is the owner's configuration, which the tool cannot know.
 *
 * Replay has three targets. `--server URL` (or any other NATS connection
 * option, cmd_nats.c) publishes each entry through mb_client_publish with
 * its original subject and payload (validated like any publish, no retry)
 * and flushes it to the server before the entry is marked replayed;
 * `--to-file FILE` appends one JSON object per line (and fsyncs each line
 * before the entry is marked replayed); either way an interrupted replay
 * resumes without losing or repeating an entry, apart from the one in
 * flight. `--dry-run` lists what would be replayed. The JSON of an entry: id, subject, headers (an
 * array of [name, value]), payload (a string when the payload is valid
 * UTF-8, else payload_base64), error (status name), error_message, attempts,
 * first_failure, last_failure, added (RFC 3339 UTC), origin, replayed. Text
 * fields that are not valid UTF-8 have the bad bytes replaced by U+FFFD.
 *
 * `put` dead-letters a message by hand (origin "manual" unless given): for
 * re-injecting an exported entry, or checking the pipeline end to end; the
 * CLI tests seed their DLQs with it.
 *
 * Single-threaded (the library's writer thread aside); no global mutable
 * state.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "cli.h"
#include "mudbus/client.h"
#include "mudbus/dlq.h"
#include "mudbus/schema.h"

#define MAX_HEADERS 64
#define PAYLOAD_MAX ((size_t)1 << 20)

#define FILTER_HELP                                                                                \
    "\n"                                                                                           \
    "Filters (all optional, combined with AND):\n"                                                 \
    "      --subject PATTERN   NATS subject pattern: '*' one token, '>' the rest\n"                \
    "      --status NAME       the status it was dead-lettered with (MB_ETIMEOUT)\n"               \
    "      --since TIME        last failure at or after TIME (RFC 3339, UTC)\n"                    \
    "      --until TIME        last failure before TIME\n"                                         \
    "      --older-than DUR    stored at least DUR ago: 90s, 15m, 2h, 7d, 500ms\n"                 \
    "      --include-replayed  also entries already replayed\n"

static const char list_help[] =
    "Usage: mudbus dlq list --dir DIR [FILTERS] [--json]\n"
    "\n"
    "List dead-lettered entries in id order: id, last failure time, status,\n"
    "attempts, origin, state (live or replayed), payload size and subject.\n"
    "Read-only: safe while the owner runs.\n"
    "\n"
    "Options:\n"
    "      --dir DIR           the DLQ directory\n"
    "      --json              one JSON object per line instead of a table\n" FILTER_HELP;

static const char show_help[] =
    "Usage: mudbus dlq show --dir DIR [--json | --raw] ID\n"
    "\n"
    "Show every field of entry ID. The payload is shown as a quoted string when\n"
    "it is UTF-8 text, else in base64. Read-only.\n"
    "\n"
    "Options:\n"
    "      --dir DIR   the DLQ directory\n"
    "      --json      the entry as one JSON object\n"
    "      --raw       only the payload bytes, unchanged\n";

static const char replay_help[] =
    "Usage: mudbus dlq replay --dir DIR [FILTERS]\n"
    "                         (--server URL [CONNECTION OPTIONS] | --to-file FILE | --dry-run)\n"
    "                         [--rate N] [--burst N] [--max N] [--on-error stop|skip]\n"
    "\n"
    "Replay matching entries in id order. Each replayed entry is marked, durably,\n"
    "so running the same replay again after an interruption goes on where it\n"
    "stopped. With --server (or --config, or any other connection option) each\n"
    "entry is published to NATS on its original subject with its original\n"
    "payload (headers are not sent), without retries, and flushed to the server\n"
    "before it is marked; an entry the client refuses (invalid subject or\n"
    "payload) fails like an unreachable server: see --on-error. --to-file\n"
    "appends each entry as a JSON line to FILE ('-': standard output) and\n"
    "fsyncs it before marking the entry. A progress bar is drawn on standard\n"
    "error when it is a terminal.\n"
    "\n"
    "Options:\n"
    "      --dir DIR           the DLQ directory\n"
    "      --server URL        publish the entries to NATS (see connection options)\n"
    "      --to-file FILE      append the entries to FILE as JSON lines\n"
    "      --dry-run           list what would be replayed; change nothing\n"
    "      --rate N            at most N entries per second (default: no limit)\n"
    "      --burst N           entries allowed at once under --rate (default 1)\n"
    "      --max N             replay at most N entries\n"
    "      --on-error MODE     stop (default) or skip an entry that fails\n" FILTER_HELP
        CLI_CONN_HELP "\n"
    "With --server, exit status 1 also means: an entry was refused (invalid\n"
    "subject or payload) or the configuration is invalid; 3: no NATS server\n"
    "could be reached, or publishing or flushing an entry failed.\n";

static const char purge_help[] =
    "Usage: mudbus dlq purge --dir DIR (FILTERS | --all)\n"
    "\n"
    "Remove matching entries for good (durable markers; segment files without\n"
    "live entries are deleted). Without a filter, --all is required.\n"
    "\n"
    "Options:\n"
    "      --dir DIR   the DLQ directory\n"
    "      --all       purge every live entry\n" FILTER_HELP;

static const char stats_help[] =
    "Usage: mudbus dlq stats --dir DIR\n"
    "\n"
    "Print depth (live entries), stored entries, bytes, segment files, the\n"
    "oldest live entry and its age, the next id, and what reading the\n"
    "directory found (torn tails, corrupt records). Read-only.\n";

static const char put_help[] =
    "Usage: mudbus dlq put --dir DIR --subject SUBJECT --error NAME\n"
    "                      [--payload TEXT | --payload-file FILE]\n"
    "                      [--header NAME=VALUE]... [--message TEXT]\n"
    "                      [--origin NAME] [--attempts N]\n"
    "\n"
    "Dead-letter one message by hand, durably, and print its id. DIR is\n"
    "created when missing. FILE '-' reads standard input (at most 1 MiB).\n"
    "\n"
    "Options:\n"
    "      --dir DIR            the DLQ directory\n"
    "      --subject SUBJECT    the message's subject\n"
    "      --error NAME         the status it failed with, e.g. MB_ETIMEOUT\n"
    "      --payload TEXT       the payload (default: empty)\n"
    "      --payload-file FILE  the payload, read from FILE\n"
    "      --header NAME=VALUE  a header (repeatable, at most 64)\n"
    "      --message TEXT       the error message\n"
    "      --origin NAME        where it failed (default: manual)\n"
    "      --attempts N         delivery attempts made (default 0)\n";

/* ---- argument parsing ---- */

typedef struct args {
    const char *path, *help;
    const char *dir;
    mb_dlq_filter filter;
    bool any_filter;
    bool json, raw, all, dry_run;
    bool nats; /* a connection option was given: replay to NATS */
    const char *to_file;
    double rate;
    unsigned long burst, max;
    mb_dlq_on_error on_error;
    const char *subject, *error, *payload, *payload_file, *message, *origin;
    unsigned long attempts;
    mb_dlq_header headers[MAX_HEADERS];
    size_t nheaders;
    char *positional[4];
    int npositional;
    cli_conn conn; /* replay --server */
} args;

enum { OPT_FILTER = 1, OPT_JSON = 2, OPT_RAW = 4, OPT_ALL = 8, OPT_REPLAY = 16, OPT_PUT = 32 };

static bool parse_status(const char *s, mb_status *out)
{
    for (int i = 1; i < (int)MB__STATUS_COUNT; i++) {
        const char *n = mb_status_name((mb_status)i);
        if (strcasecmp(s, n) == 0 || strcasecmp(s, n + 3) == 0) {
            *out = (mb_status)i;
            return true;
        }
    }
    return false;
}

/* "90s", "15m", "2h", "7d", "500ms", "1w" into milliseconds. */
static bool parse_duration(const char *s, uint64_t *ms)
{
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || end == s || *s == '-' || *s == '+')
        return false;
    static const struct {
        const char *unit;
        uint64_t ms;
    } units[] = {{"ms", 1},      {"s", 1000},     {"m", 60000},
                 {"h", 3600000}, {"d", 86400000}, {"w", 604800000}};
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (strcmp(end, units[i].unit) == 0) {
            if (v > UINT64_MAX / units[i].ms)
                return false;
            *ms = v * units[i].ms;
            return true;
        }
    }
    return false;
}

static bool parse_ulong(const char *s, unsigned long max, unsigned long *out)
{
    char *end = NULL;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || *s == '-' || v > max)
        return false;
    *out = v;
    return true;
}

/* Parse argv into *a for a command that takes the option groups in `opts`.
 * Returns -1 to go on, or the exit status to return. */
static int parse(args *a, int opts, int argc, char **argv)
{
    bool options = true;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i], *v = NULL;
        int r;
        if (options && strcmp(arg, "--") == 0) {
            options = false;
            continue;
        }
        if (!options || arg[0] != '-' || arg[1] == '\0') {
            if (a->npositional >= 4)
                return cli_usage_error(a->path, "unexpected argument '%s'", arg);
            a->positional[a->npositional++] = argv[i];
            continue;
        }
        if (cli_is_help(arg)) {
            cli_command_help(a->help);
            return CLI_EXIT_OK;
        }
#define VALUE(name) ((r = cli_opt_value(a->path, argc, argv, &i, name, &v)) != 0)
        if (VALUE("--dir")) {
            if (r < 0)
                return CLI_EXIT_USAGE;
            a->dir = v;
        } else if ((opts & OPT_FILTER) && VALUE("--subject")) {
            if (r < 0)
                return CLI_EXIT_USAGE;
            a->filter.subject = v;
            a->any_filter = true;
        } else if ((opts & OPT_FILTER) && VALUE("--status")) {
            if (r < 0)
                return CLI_EXIT_USAGE;
            if (!parse_status(v, &a->filter.status))
                return cli_usage_error(a->path, "unknown status '%s' (e.g. MB_ETIMEOUT)", v);
            a->any_filter = true;
        } else if ((opts & OPT_FILTER) && (VALUE("--since") || VALUE("--until"))) {
            if (r < 0)
                return CLI_EXIT_USAGE;
            int64_t ms = 0;
            mb_err err = {0};
            if (mb_timestamp_parse(v, strlen(v), &ms, &err) != MB_OK)
                return cli_usage_error(a->path, "%s '%s': %s", arg, v, err.msg);
            if (strncmp(arg, "--since", 7) == 0)
                a->filter.since_ms = ms;
            else
                a->filter.until_ms = ms;
            a->any_filter = true;
        } else if ((opts & OPT_FILTER) && VALUE("--older-than")) {
            if (r < 0)
                return CLI_EXIT_USAGE;
            if (!parse_duration(v, &a->filter.min_age_ms) || a->filter.min_age_ms == 0)
                return cli_usage_error(a->path, "bad duration '%s' (e.g. 90s, 15m, 2h, 7d)", v);
            a->any_filter = true;
        } else if ((opts & OPT_FILTER) && strcmp(arg, "--include-replayed") == 0) {
            a->filter.include_replayed = true;
        } else if ((opts & OPT_JSON) && strcmp(arg, "--json") == 0) {
            a->json = true;
        } else if ((opts & OPT_RAW) && strcmp(arg, "--raw") == 0) {
            a->raw = true;
        } else if ((opts & OPT_ALL) && strcmp(arg, "--all") == 0) {
            a->all = true;
        } else if ((opts & OPT_REPLAY) && strcmp(arg, "--dry-run") == 0) {
            a->dry_run = true;
        } else if ((opts & OPT_REPLAY) && VALUE("--to-file")) {
            if (r < 0)
                return CLI_EXIT_USAGE;
            a->to_file = v;
        } else if ((opts & OPT_REPLAY) && VALUE("--rate")) {
            if (r < 0)
                return CLI_EXIT_USAGE;
            char *end = NULL;
            a->rate = strtod(v, &end);
            if (end == v || *end != '\0' || !(a->rate > 0) || a->rate > 1e9)
                return cli_usage_error(a->path, "bad rate '%s': a number above 0", v);
        } else if ((opts & OPT_REPLAY) && VALUE("--burst")) {
            if (r < 0)
                return CLI_EXIT_USAGE;
            if (!parse_ulong(v, 1000000, &a->burst) || a->burst == 0)
                return cli_usage_error(a->path, "bad burst '%s'", v);
        } else if ((opts & OPT_REPLAY) && VALUE("--max")) {
            if (r < 0)
                return CLI_EXIT_USAGE;
            if (!parse_ulong(v, (unsigned long)-1, &a->max) || a->max == 0)
                return cli_usage_error(a->path, "bad --max '%s'", v);
        } else if ((opts & OPT_REPLAY) && VALUE("--on-error")) {
            if (r < 0)
                return CLI_EXIT_USAGE;
            if (strcmp(v, "stop") == 0)
                a->on_error = MB_DLQ_REPLAY_STOP;
            else if (strcmp(v, "skip") == 0)
                a->on_error = MB_DLQ_REPLAY_SKIP;
            else
                return cli_usage_error(a->path, "--on-error must be stop or skip, not '%s'", v);
        } else if ((opts & OPT_PUT) && VALUE("--subject")) {
            if (r < 0)
                return CLI_EXIT_USAGE;
            a->subject = v;
        } else if ((opts & OPT_PUT) && VALUE("--error")) {
            if (r < 0)
                return CLI_EXIT_USAGE;
            a->error = v;
        } else if ((opts & OPT_PUT) && VALUE("--payload")) {
            if (r < 0)
                return CLI_EXIT_USAGE;
            a->payload = v;
        } else if ((opts & OPT_PUT) && VALUE("--payload-file")) {
            if (r < 0)
                return CLI_EXIT_USAGE;
            a->payload_file = v;
        } else if ((opts & OPT_PUT) && VALUE("--message")) {
            if (r < 0)
                return CLI_EXIT_USAGE;
            a->message = v;
        } else if ((opts & OPT_PUT) && VALUE("--origin")) {
            if (r < 0)
                return CLI_EXIT_USAGE;
            a->origin = v;
        } else if ((opts & OPT_PUT) && VALUE("--attempts")) {
            if (r < 0)
                return CLI_EXIT_USAGE;
            if (!parse_ulong(v, UINT32_MAX, &a->attempts))
                return cli_usage_error(a->path, "bad --attempts '%s'", v);
        } else if ((opts & OPT_PUT) && VALUE("--header")) {
            if (r < 0)
                return CLI_EXIT_USAGE;
            char *name = (char *)v; /* points into argv, which is ours to modify */
            char *eq = strchr(name, '=');
            if (eq == NULL || eq == name)
                return cli_usage_error(a->path, "--header '%s' is not NAME=VALUE", v);
            if (a->nheaders == MAX_HEADERS)
                return cli_usage_error(a->path, "at most %d headers", MAX_HEADERS);
            *eq = '\0';
            a->headers[a->nheaders].name = name;
            a->headers[a->nheaders].value = eq + 1;
            a->nheaders++;
        } else if ((opts & OPT_REPLAY) &&
                   (r = cli_conn_option(a->path, &a->conn, argc, argv, &i)) != 0) {
            if (r < 0)
                return CLI_EXIT_USAGE;
            a->nats = true;
        } else {
            return cli_usage_error(a->path, "unknown option '%s'", arg);
        }
#undef VALUE
    }
    if (a->dir == NULL)
        return cli_usage_error(a->path, "missing --dir DIR");
    if (a->nats && cli_conn_check(a->path, &a->conn) >= 0)
        return CLI_EXIT_USAGE;
    if (a->filter.since_ms != 0 && a->filter.until_ms != 0 &&
        a->filter.since_ms >= a->filter.until_ms)
        return cli_usage_error(a->path, "--since must be before --until");
    return -1;
}

/* ---- opening ---- */

static void log_line(void *ctx, const char *line)
{
    (void)ctx;
    cli_error("warning: %s", line);
}

static int open_dlq(const args *a, bool writable, bool create, mb_dlq **out)
{
    mb_dlq_opts o = {0};
    o.read_only = !writable;
    o.create = create;
    o.max_age_ms = MB_DLQ_UNLIMITED;
    o.max_bytes = MB_DLQ_UNLIMITED;
    o.log = log_line;
    mb_err err = {0};
    mb_status st = mb_dlq_open(a->dir, &o, out, &err);
    if (st != MB_OK)
        return cli_report(NULL, st, &err);
    return CLI_EXIT_OK;
}

static int close_dlq(mb_dlq *d, int rc)
{
    mb_err err = {0};
    mb_status st = mb_dlq_close(d, &err);
    if (st != MB_OK && rc == CLI_EXIT_OK)
        return cli_report(NULL, st, &err);
    return rc;
}

/* ---- JSON and text output ---- */

/* Length of the valid UTF-8 sequence at p (n bytes left), or 0. */
static size_t utf8_len(const unsigned char *p, size_t n)
{
    unsigned char c = p[0];
    if (c < 0x80)
        return 1;
    size_t len;
    uint32_t cp;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
        cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (p[i] & 0x3f);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

static bool is_utf8(const void *s, size_t n)
{
    const unsigned char *p = s;
    for (size_t i = 0; i < n;) {
        size_t l = utf8_len(p + i, n - i);
        if (l == 0)
            return false;
        i += l;
    }
    return true;
}

/* A JSON string; invalid UTF-8 bytes become U+FFFD. */
static void json_str(FILE *f, const void *s, size_t n)
{
    const unsigned char *p = s;
    fputc('"', f);
    for (size_t i = 0; i < n;) {
        unsigned char c = p[i];
        size_t l = utf8_len(p + i, n - i);
        if (l == 0) {
            fputs("\\ufffd", f);
            i++;
            continue;
        }
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c == '\n')
            fputs("\\n", f);
        else if (c == '\t')
            fputs("\\t", f);
        else if (c == '\r')
            fputs("\\r", f);
        else if (c < 0x20 || c == 0x7f)
            fprintf(f, "\\u%04x", c);
        else
            fwrite(p + i, 1, l, f);
        i += l;
    }
    fputc('"', f);
}

/* Text as is when it is plain printable ASCII without spaces or quotes
 * (every real NATS subject), else as a JSON string. */
static void text(FILE *f, const char *s)
{
    for (const char *p = s; *p != '\0'; p++) {
        if (*p <= ' ' || *p > '~' || *p == '"' || *p == '\\') {
            json_str(f, s, strlen(s));
            return;
        }
    }
    fputs(*s ? s : "\"\"", f);
}

static void base64(FILE *f, const void *s, size_t n)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const unsigned char *p = s;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)p[i + 1] << 8;
        if (i + 2 < n)
            v |= p[i + 2];
        fputc(tab[v >> 18], f);
        fputc(tab[(v >> 12) & 63], f);
        fputc(i + 1 < n ? tab[(v >> 6) & 63] : '=', f);
        fputc(i + 2 < n ? tab[v & 63] : '=', f);
    }
}

static const char *ts(int64_t ms, char *buf)
{
    mb_timestamp_format(ms, buf);
    return buf;
}

static void entry_json(FILE *f, const mb_dlq_entry *e)
{
    char t[MB_TIMESTAMP_MAX];
    fprintf(f, "{\"id\":%" PRIu64 ",\"subject\":", e->id);
    json_str(f, e->subject, strlen(e->subject));
    fputs(",\"headers\":[", f);
    for (size_t i = 0; i < e->nheaders; i++) {
        fputs(i ? ",[" : "[", f);
        json_str(f, e->headers[i].name, strlen(e->headers[i].name));
        fputc(',', f);
        json_str(f, e->headers[i].value, strlen(e->headers[i].value));
        fputc(']', f);
    }
    fputs("],", f);
    if (is_utf8(e->payload, e->payload_len)) {
        fputs("\"payload\":", f);
        json_str(f, e->payload, e->payload_len);
    } else {
        fputs("\"payload_base64\":\"", f);
        base64(f, e->payload, e->payload_len);
        fputc('"', f);
    }
    fprintf(f, ",\"error\":\"%s\",\"error_message\":", mb_status_name(e->error));
    json_str(f, e->error_message, strlen(e->error_message));
    fprintf(f, ",\"attempts\":%" PRIu32 ",\"first_failure\":\"%s\"", e->attempts,
            ts(e->first_failure_ms, t));
    fprintf(f, ",\"last_failure\":\"%s\"", ts(e->last_failure_ms, t));
    fprintf(f, ",\"added\":\"%s\",\"origin\":", ts(e->added_ms, t));
    json_str(f, e->origin, strlen(e->origin));
    fprintf(f, ",\"replayed\":%s}\n", (e->flags & MB_DLQ_REPLAYED) ? "true" : "false");
}

/* ---- list ---- */

typedef struct list_ctx {
    bool json, measure;
    int w_id, w_status, w_origin, w_attempts, w_bytes;
    size_t n, max;
} list_ctx;

static int digits(uint64_t v)
{
    int n = 1;
    while (v >= 10) {
        v /= 10;
        n++;
    }
    return n;
}

static int list_visit(void *ctx, const mb_dlq_entry *e)
{
    list_ctx *c = ctx;
    c->n++;
    if (c->measure) {
        int w;
        if ((w = digits(e->id)) > c->w_id)
            c->w_id = w;
        if ((w = (int)strlen(mb_status_name(e->error))) > c->w_status)
            c->w_status = w;
        if ((w = (int)strlen(e->origin)) > c->w_origin)
            c->w_origin = w;
        if ((w = digits(e->attempts)) > c->w_attempts)
            c->w_attempts = w;
        if ((w = digits(e->payload_len)) > c->w_bytes)
            c->w_bytes = w;
    } else if (c->json) {
        entry_json(stdout, e);
    } else {
        char t[MB_TIMESTAMP_MAX];
        printf("%*" PRIu64 "  %-24s  %-*s  %*" PRIu32 "  %-*s  %-8s  %*zu  ", c->w_id, e->id,
               ts(e->last_failure_ms, t), c->w_status, mb_status_name(e->error), c->w_attempts,
               e->attempts, c->w_origin, e->origin,
               (e->flags & MB_DLQ_REPLAYED) ? "replayed" : "live", c->w_bytes, e->payload_len);
        text(stdout, e->subject);
        fputc('\n', stdout);
    }
    return c->max != 0 && c->n >= c->max;
}

static int dlq_list(int argc, char **argv)
{
    args a = {.path = "mudbus dlq list", .help = list_help};
    int rc = parse(&a, OPT_FILTER | OPT_JSON, argc, argv);
    if (rc >= 0)
        return rc;
    if (a.npositional > 0)
        return cli_usage_error(a.path, "unexpected argument '%s'", a.positional[0]);
    mb_dlq *d = NULL;
    if ((rc = open_dlq(&a, false, false, &d)) != CLI_EXIT_OK)
        return rc;
    list_ctx c = {.json = a.json,
                  .measure = !a.json,
                  .w_id = 2,
                  .w_status = 6,
                  .w_origin = 6,
                  .w_attempts = 8,
                  .w_bytes = 5};
    mb_err err = {0};
    mb_status st = MB_OK;
    if (!a.json) {
        /* A read-only handle keeps the index it read at open, so two passes
         * see the same entries: one to size the columns, one to print. */
        st = mb_dlq_list(d, &a.filter, list_visit, &c, NULL, &err);
        c.measure = false;
        c.n = 0;
        if (st == MB_OK)
            printf("%*s  %-24s  %-*s  %*s  %-*s  %-8s  %*s  %s\n", c.w_id, "ID", "LAST_FAILURE",
                   c.w_status, "STATUS", c.w_attempts, "ATTEMPTS", c.w_origin, "ORIGIN", "STATE",
                   c.w_bytes, "BYTES", "SUBJECT");
    }
    if (st == MB_OK)
        st = mb_dlq_list(d, &a.filter, list_visit, &c, NULL, &err);
    rc = st == MB_OK ? CLI_EXIT_OK : cli_report("listing", st, &err);
    return close_dlq(d, rc);
}

/* ---- show ---- */

static int dlq_show(int argc, char **argv)
{
    args a = {.path = "mudbus dlq show", .help = show_help};
    int rc = parse(&a, OPT_JSON | OPT_RAW, argc, argv);
    if (rc >= 0)
        return rc;
    if (a.npositional != 1)
        return cli_usage_error(a.path, a.npositional ? "expected one ID" : "missing ID");
    if (a.json && a.raw)
        return cli_usage_error(a.path, "--json and --raw exclude each other");
    char *end = NULL;
    errno = 0;
    unsigned long long id = strtoull(a.positional[0], &end, 10);
    if (errno != 0 || end == a.positional[0] || *end != '\0' || a.positional[0][0] == '-' ||
        id == 0)
        return cli_usage_error(a.path, "bad ID '%s': a positive number", a.positional[0]);
    mb_dlq *d = NULL;
    if ((rc = open_dlq(&a, false, false, &d)) != CLI_EXIT_OK)
        return rc;
    mb_dlq_entry *e = NULL;
    mb_err err = {0};
    mb_status st = mb_dlq_show(d, id, &e, &err);
    if (st != MB_OK)
        return close_dlq(d, cli_report(NULL, st, &err));
    char t[MB_TIMESTAMP_MAX];
    if (a.raw) {
        fwrite(e->payload, 1, e->payload_len, stdout);
    } else if (a.json) {
        entry_json(stdout, e);
    } else {
        printf("id:             %" PRIu64 "\n", e->id);
        printf("subject:        ");
        text(stdout, e->subject);
        printf("\nstate:          %s\n", (e->flags & MB_DLQ_REPLAYED) ? "replayed" : "live");
        printf("error:          %s (%s)\n", mb_status_name(e->error), mb_status_str(e->error));
        printf("error message:  ");
        json_str(stdout, e->error_message, strlen(e->error_message));
        printf("\nattempts:       %" PRIu32 "\n", e->attempts);
        printf("first failure:  %s\n", ts(e->first_failure_ms, t));
        printf("last failure:   %s\n", ts(e->last_failure_ms, t));
        printf("stored:         %s\n", ts(e->added_ms, t));
        printf("origin:         ");
        text(stdout, e->origin);
        printf("\nheaders:        %zu\n", e->nheaders);
        for (size_t i = 0; i < e->nheaders; i++) {
            printf("  ");
            json_str(stdout, e->headers[i].name, strlen(e->headers[i].name));
            printf(": ");
            json_str(stdout, e->headers[i].value, strlen(e->headers[i].value));
            printf("\n");
        }
        bool text = is_utf8(e->payload, e->payload_len);
        printf("payload:        %zu bytes, %s\n", e->payload_len, text ? "text" : "base64");
        if (text)
            json_str(stdout, e->payload, e->payload_len);
        else
            base64(stdout, e->payload, e->payload_len);
        printf("\n");
    }
    mb_dlq_entry_free(e);
    return close_dlq(d, CLI_EXIT_OK);
}

/* ---- replay ---- */

typedef struct replay_ctx {
    FILE *out;
    bool sync; /* fsync after each line (a regular file) */
    bool bar;
    int last_fill;
    mb_client *client; /* replay --server */
} replay_ctx;

static mb_status to_file(void *ctx, const mb_dlq_entry *e, mb_err *err)
{
    replay_ctx *c = ctx;
    errno = 0;
    entry_json(c->out, e);
    if (fflush(c->out) != 0 || ferror(c->out) || (c->sync && fdatasync(fileno(c->out)) != 0))
        return mb_err_set(err, MB_EIO, "writing the replay file: %s",
                          errno ? strerror(errno) : "write error");
    return MB_OK;
}

static void progress(void *ctx, size_t done, size_t total)
{
    replay_ctx *c = ctx;
    if (!c->bar || total == 0)
        return;
    int fill = (int)(done * 40 / total);
    if (fill == c->last_fill && done != total && done % 100 != 0)
        return;
    c->last_fill = fill;
    fprintf(stderr, "\r[%.*s%*s] %zu/%zu", fill, "########################################",
            40 - fill, "", done, total);
    if (done == total)
        fputc('\n', stderr);
    fflush(stderr);
}

typedef struct dry_ctx {
    size_t n, max;
} dry_ctx;

static int dry_visit(void *ctx, const mb_dlq_entry *e)
{
    dry_ctx *c = ctx;
    printf("would replay %" PRIu64 " ", e->id);
    text(stdout, e->subject);
    fputc('\n', stdout);
    c->n++;
    return c->max != 0 && c->n >= c->max;
}

static mb_dlq_replay_opts replay_opts(const args *a, replay_ctx *c)
{
    mb_dlq_replay_opts o = {0};
    o.filter = a->filter;
    o.rate_per_sec = a->rate;
    o.burst = (uint32_t)a->burst;
    o.max = a->max;
    o.on_error = a->on_error;
    o.progress = progress;
    o.progress_ctx = c;
    return o;
}

/* Publish one entry and wait until the server has it: only then may the
 * entry be marked replayed. */
static mb_status to_nats(void *ctx, const mb_dlq_entry *e, mb_err *err)
{
    replay_ctx *c = ctx;
    mb_publish_opts po = {.ordering_key = NULL, .no_retry = true};
    mb_status st =
        mb_client_publish(c->client, e->subject, e->payload, e->payload_len, &po, NULL, err);
    if (st == MB_OK)
        st = mb_client_flush(c->client, 5000, err);
    if (st != MB_OK && err != NULL) {
        char why[MB_ERR_MSG_MAX];
        snprintf(why, sizeof why, "%s", err->msg[0] ? err->msg : mb_status_str(st));
        mb_err_set(err, st, "entry %" PRIu64 " (%s): %s", e->id, e->subject, why);
    }
    return st;
}

static int replay_nats(args *a)
{
    mb_client_opts co;
    mb_client *cl = NULL;
    int rc = cli_conn_connect(a->path, &a->conn, &co, &cl);
    if (rc >= 0) {
        cli_conn_free(&a->conn);
        return rc;
    }
    mb_dlq *d = NULL;
    if ((rc = open_dlq(a, true, false, &d)) != CLI_EXIT_OK) {
        mb_client_destroy(cl);
        cli_conn_free(&a->conn);
        return rc;
    }
    replay_ctx c = {NULL, false, isatty(STDERR_FILENO) != 0, -1, cl};
    mb_dlq_replay_opts o = replay_opts(a, &c);
    mb_dlq_replay_result r = {0};
    mb_err err = {0};
    mb_status st = mb_dlq_replay(d, &o, to_nats, &c, &r, &err);
    if (c.bar && c.last_fill >= 0 && r.published + r.failed + r.gone < r.total)
        fputc('\n', stderr); /* end an unfinished bar */
    rc = CLI_EXIT_OK;
    if (st != MB_OK)
        rc = cli_report("replay", st, &err);
    if (st == MB_OK || r.published > 0)
        printf("%zu of %zu entries published to NATS%s\n", r.published, r.total,
               r.gone ? " (some were gone meanwhile)" : "");
    rc = close_dlq(d, rc);
    mb_client_destroy(cl);
    cli_conn_free(&a->conn);
    return rc;
}

static int dlq_replay(int argc, char **argv)
{
    args a = {.path = "mudbus dlq replay", .help = replay_help};
    int rc = parse(&a, OPT_FILTER | OPT_REPLAY, argc, argv);
    if (rc >= 0)
        return rc;
    if (a.npositional > 0)
        return cli_usage_error(a.path, "unexpected argument '%s'", a.positional[0]);
    if ((int)a.dry_run + (a.to_file != NULL) + (int)a.nats != 1)
        return cli_usage_error(a.path, "give exactly one of --to-file FILE and --dry-run, "
                                       "or --server URL to publish to NATS");
    mb_dlq *d = NULL;
    if (a.dry_run) {
        if ((rc = open_dlq(&a, false, false, &d)) != CLI_EXIT_OK)
            return rc;
        dry_ctx c = {0, a.max};
        mb_err err = {0};
        mb_status st = mb_dlq_list(d, &a.filter, dry_visit, &c, NULL, &err);
        if (st != MB_OK)
            return close_dlq(d, cli_report("dry run", st, &err));
        printf("dry run: %zu entries would be replayed\n", c.n);
        return close_dlq(d, CLI_EXIT_OK);
    }
    if (a.nats)
        return replay_nats(&a);
    replay_ctx c = {NULL, false, isatty(STDERR_FILENO) != 0, -1, NULL};
    if (strcmp(a.to_file, "-") == 0) {
        c.out = stdout;
    } else {
        c.out = fopen(a.to_file, "a");
        if (c.out == NULL) {
            cli_error("opening %s: %s", a.to_file, strerror(errno));
            return CLI_EXIT_INTERNAL;
        }
        c.sync = true;
    }
    if ((rc = open_dlq(&a, true, false, &d)) != CLI_EXIT_OK) {
        if (c.out != stdout)
            fclose(c.out);
        return rc;
    }
    mb_dlq_replay_opts o = replay_opts(&a, &c);
    mb_dlq_replay_result r = {0};
    mb_err err = {0};
    mb_status st = mb_dlq_replay(d, &o, to_file, &c, &r, &err);
    if (c.bar && c.last_fill >= 0 && r.published + r.failed + r.gone < r.total)
        fputc('\n', stderr); /* end an unfinished bar */
    if (c.out != stdout && fclose(c.out) != 0 && st == MB_OK)
        st = mb_err_set(&err, MB_EIO, "closing %s: %s", a.to_file, strerror(errno));
    rc = CLI_EXIT_OK;
    if (st != MB_OK)
        rc = cli_report("replay", st, &err);
    /* The summary goes to stdout, unless the entries themselves do. */
    if (c.out != stdout && (st == MB_OK || r.published > 0))
        printf("%zu of %zu entries replayed to %s%s\n", r.published, r.total, a.to_file,
               r.gone ? " (some were gone meanwhile)" : "");
    return close_dlq(d, rc);
}

/* ---- purge ---- */

static int dlq_purge(int argc, char **argv)
{
    args a = {.path = "mudbus dlq purge", .help = purge_help};
    int rc = parse(&a, OPT_FILTER | OPT_ALL, argc, argv);
    if (rc >= 0)
        return rc;
    if (a.npositional > 0)
        return cli_usage_error(a.path, "unexpected argument '%s'", a.positional[0]);
    if (!a.any_filter && !a.all)
        return cli_usage_error(a.path, "refusing to purge everything without --all");
    if (a.any_filter && a.all)
        return cli_usage_error(a.path, "--all and filters exclude each other");
    mb_dlq *d = NULL;
    if ((rc = open_dlq(&a, true, false, &d)) != CLI_EXIT_OK)
        return rc;
    size_t n = 0;
    mb_err err = {0};
    mb_status st = mb_dlq_purge(d, &a.filter, &n, &err);
    if (st != MB_OK)
        return close_dlq(d, cli_report("purge", st, &err));
    printf("purged %zu entries\n", n);
    return close_dlq(d, CLI_EXIT_OK);
}

/* ---- stats ---- */

static void age_text(uint64_t ms, char *buf, size_t cap)
{
    uint64_t s = ms / 1000;
    if (s < 120)
        snprintf(buf, cap, "%" PRIu64 "s", s);
    else if (s < 7200)
        snprintf(buf, cap, "%" PRIu64 "m", s / 60);
    else if (s < 172800)
        snprintf(buf, cap, "%" PRIu64 "h %" PRIu64 "m", s / 3600, s % 3600 / 60);
    else
        snprintf(buf, cap, "%" PRIu64 "d %" PRIu64 "h", s / 86400, s % 86400 / 3600);
}

static int dlq_stats(int argc, char **argv)
{
    args a = {.path = "mudbus dlq stats", .help = stats_help};
    int rc = parse(&a, 0, argc, argv);
    if (rc >= 0)
        return rc;
    if (a.npositional > 0)
        return cli_usage_error(a.path, "unexpected argument '%s'", a.positional[0]);
    mb_dlq *d = NULL;
    if ((rc = open_dlq(&a, false, false, &d)) != CLI_EXIT_OK)
        return rc;
    mb_dlq_stats s;
    mb_dlq_stats_get(d, &s);
    char t[MB_TIMESTAMP_MAX], age[64];
    printf("depth:            %" PRIu64 "\n", s.depth);
    printf("stored:           %" PRIu64 "\n", s.stored);
    printf("bytes:            %" PRIu64 "\n", s.bytes);
    printf("segments:         %" PRIu64 "\n", s.segments);
    if (s.depth > 0) {
        age_text(s.oldest_age_ms, age, sizeof age);
        printf("oldest:           %s\n", ts(s.oldest_added_ms, t));
        printf("oldest age:       %s\n", age);
    } else {
        printf("oldest:           -\n");
        printf("oldest age:       -\n");
    }
    printf("next id:          %" PRIu64 "\n", s.next_id);
    printf("torn tails:       %" PRIu64 "\n", s.torn_records);
    printf("corrupt records:  %" PRIu64 "\n", s.corrupt_records);
    return close_dlq(d, CLI_EXIT_OK);
}

/* ---- put ---- */

static int read_payload(const char *path, char **out, size_t *len)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (f == NULL) {
        cli_error("opening %s: %s", path, strerror(errno));
        return CLI_EXIT_INTERNAL;
    }
    char *buf = malloc(PAYLOAD_MAX + 1);
    if (buf == NULL) {
        if (f != stdin)
            fclose(f);
        cli_error("out of memory");
        return CLI_EXIT_INTERNAL;
    }
    size_t n = fread(buf, 1, PAYLOAD_MAX + 1, f);
    bool bad = ferror(f) != 0;
    if (f != stdin)
        fclose(f);
    if (bad) {
        free(buf);
        cli_error("reading %s: read error", path);
        return CLI_EXIT_INTERNAL;
    }
    if (n > PAYLOAD_MAX) {
        free(buf);
        cli_error("%s: payload larger than %zu bytes", path, PAYLOAD_MAX);
        return CLI_EXIT_REFUSED;
    }
    *out = buf;
    *len = n;
    return CLI_EXIT_OK;
}

static int dlq_put(int argc, char **argv)
{
    args a = {.path = "mudbus dlq put", .help = put_help};
    int rc = parse(&a, OPT_PUT, argc, argv);
    if (rc >= 0)
        return rc;
    if (a.npositional > 0)
        return cli_usage_error(a.path, "unexpected argument '%s'", a.positional[0]);
    if (a.subject == NULL)
        return cli_usage_error(a.path, "missing --subject SUBJECT");
    if (a.error == NULL)
        return cli_usage_error(a.path, "missing --error NAME");
    mb_status status;
    if (!parse_status(a.error, &status))
        return cli_usage_error(a.path, "unknown status '%s' (e.g. MB_ETIMEOUT)", a.error);
    if (a.payload != NULL && a.payload_file != NULL)
        return cli_usage_error(a.path, "--payload and --payload-file exclude each other");
    char *file_payload = NULL;
    size_t plen = a.payload ? strlen(a.payload) : 0;
    if (a.payload_file != NULL && (rc = read_payload(a.payload_file, &file_payload, &plen)) != 0)
        return rc;
    mb_dlq *d = NULL;
    if ((rc = open_dlq(&a, true, true, &d)) != CLI_EXIT_OK) {
        free(file_payload);
        return rc;
    }
    mb_dlq_entry e = {0};
    e.subject = a.subject;
    e.headers = a.nheaders ? a.headers : NULL;
    e.nheaders = a.nheaders;
    e.payload = file_payload ? (const void *)file_payload : (const void *)a.payload;
    e.payload_len = plen;
    e.error = status;
    e.error_message = a.message;
    e.attempts = (uint32_t)a.attempts;
    e.origin = a.origin ? a.origin : "manual";
    uint64_t id = 0;
    mb_err err = {0};
    mb_status st = mb_dlq_put(d, &e, true, &id, &err);
    free(file_payload);
    if (st != MB_OK)
        return close_dlq(d, cli_report("put", st, &err));
    printf("stored entry %" PRIu64 "\n", id);
    return close_dlq(d, CLI_EXIT_OK);
}

static const cli_command dlq_commands[] = {
    {"list", "list entries, filtered by subject pattern, status and time", dlq_list},
    {"show", "show every field of one entry", dlq_show},
    {"replay", "replay entries to NATS or a file, rate-limited and resumable", dlq_replay},
    {"purge", "remove entries by filter or age", dlq_purge},
    {"stats", "depth, size, segments and the age of the oldest entry", dlq_stats},
    {"put", "dead-letter a message by hand", dlq_put},
};

static const cli_group dlq_group = {
    "mudbus dlq",
    "Inspect and manage a dead letter queue directory: the messages that could\n"
    "not be delivered, why, and how often it was tried. list, show, stats and\n"
    "replay --dry-run only read (safe beside a running server); replay, purge\n"
    "and put need the directory to themselves.",
    dlq_commands,
    sizeof dlq_commands / sizeof dlq_commands[0],
    "Every command takes --dir DIR. Exit status 1 also means: no such entry or\n"
    "directory, or an invalid subject pattern; 3: the directory is in use by\n"
    "another writer, unreadable, or a replay's output could not be written\n"
    "(or, with --server, no NATS server could be reached).\n",
};

int cli_cmd_dlq(int argc, char **argv)
{
    return cli_dispatch(&dlq_group, argc, argv);
}
