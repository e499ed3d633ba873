/* SPDX-License-Identifier: MIT */
/*
 * main: entry point of the `mudbus` operator tool, its top-level table of
 * command groups, and the helpers every command shares (dispatch through a
 * command table, help layout, error reporting, exit statuses, option values).
 *
 * The top-level table below is the only place that knows which groups exist;
 * each group's code lives in src/cli/cmd_<group>.c. After the command has run,
 * main flushes stdout and turns a failed write (a full disk, a closed pipe)
 * into exit status 3, so a script never mistakes truncated output for success.
 *
 * Single-threaded; no global mutable state.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

const char cli_exit_help[] =
    "Exit status:\n"
    "  0  success\n"
    "  1  refused: the subject, pattern or message is invalid (reason on stderr)\n"
    "  2  usage error: unknown command or option, missing or extra argument\n"
    "  3  internal or I/O error: unreadable file, failed write, out of memory,\n"
    "     NATS unreachable (connection, TLS or authentication failure)\n";

static const cli_command top_commands[] = {
    {"subjects", "list, build and check NATS subjects and subscription patterns", cli_cmd_subjects},
    {"validate", "validate a chat or event message against its schema", cli_cmd_validate},
    {"dlq", "inspect, replay and purge a dead letter queue directory", cli_cmd_dlq},
    {"pub", "publish a validated message to NATS", cli_cmd_pub},
    {"sub", "print the validated messages of a subscription pattern", cli_cmd_sub},
    {"req", "send a validated request and print the reply", cli_cmd_req},
    {"health", "connect and report state, round trip time and JetStream", cli_cmd_health},
};

static const char top_footer[] =
    "Options:\n"
    "  -h, --help     show this help (also after any command: mudbus subjects build --help)\n"
    "      --version  print the version\n";

static const cli_group top_group = {
    "mudbus",
    "Operator tool for mudbus, resilient NATS messaging for MUD game servers.\n"
    "Checks subjects and messages against the wire contract (PROTOCOL.md),\n"
    "publishes, subscribes and requests over NATS, and manages dead letter queues.",
    top_commands,
    sizeof top_commands / sizeof top_commands[0],
    top_footer,
};

void cli_error(const char *fmt, ...)
{
    va_list ap;
    fputs("mudbus: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

int cli_exit_for(mb_status st)
{
    switch (st) {
    case MB_OK:
        return CLI_EXIT_OK;
    case MB_EINVAL:
    case MB_ENOTFOUND:
    case MB_ETOOBIG:
    case MB_ESUBJECT:
    case MB_EPATTERN:
    case MB_EJSON:
    case MB_ESCHEMA:
        return CLI_EXIT_REFUSED;
    default:
        return CLI_EXIT_INTERNAL;
    }
}

int cli_report(const char *context, mb_status st, const mb_err *err)
{
    const char *reason = (err != NULL && err->msg[0] != '\0') ? err->msg : mb_status_str(st);
    if (context != NULL)
        cli_error("%s: %s", context, reason);
    else
        cli_error("%s", reason);
    return cli_exit_for(st);
}

int cli_usage_error(const char *path, const char *fmt, ...)
{
    va_list ap;
    fputs("mudbus: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry '%s --help'.\n", path);
    return CLI_EXIT_USAGE;
}

int cli_is_help(const char *arg)
{
    return strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0;
}

int cli_opt_value(const char *path, int argc, char **argv, int *i, const char *name,
                  const char **value)
{
    const char *arg = argv[*i];
    size_t n = strlen(name);
    if (strncmp(arg, name, n) != 0)
        return 0;
    if (arg[n] == '=') {
        *value = arg + n + 1;
        return 1;
    }
    if (arg[n] != '\0')
        return 0;
    if (*i + 1 >= argc) {
        cli_usage_error(path, "option '%s' needs a value", name);
        return -1;
    }
    *i += 1;
    *value = argv[*i];
    return 1;
}

void cli_command_help(const char *help)
{
    fprintf(stdout, "%s\n%s", help, cli_exit_help);
}

int cli_positional(const char *path, const char *help, int *argc, char **argv)
{
    int n = 1, opts = 1;
    for (int i = 1; i < *argc; i++) {
        const char *a = argv[i];
        if (opts && strcmp(a, "--") == 0) {
            opts = 0;
            continue;
        }
        if (opts && cli_is_help(a)) {
            cli_command_help(help);
            return CLI_EXIT_OK;
        }
        if (opts && a[0] == '-' && a[1] != '\0')
            return cli_usage_error(path, "unknown option '%s'", a);
        argv[n++] = argv[i];
    }
    argv[n] = NULL;
    *argc = n;
    return -1;
}

void cli_group_help(const cli_group *g, FILE *out)
{
    size_t width = 0;
    for (size_t i = 0; i < g->ncmds; i++) {
        size_t l = strlen(g->cmds[i].name);
        if (l > width)
            width = l;
    }
    fprintf(out, "Usage: %s COMMAND [ARGS...]\n\n%s\n\nCommands:\n", g->path, g->about);
    for (size_t i = 0; i < g->ncmds; i++)
        fprintf(out, "  %-*s  %s\n", (int)width, g->cmds[i].name, g->cmds[i].summary);
    fprintf(out, "\nRun '%s COMMAND --help' for the arguments of a command.\n", g->path);
    if (g->footer != NULL)
        fprintf(out, "\n%s", g->footer);
    fprintf(out, "\n%s", cli_exit_help);
}

int cli_dispatch(const cli_group *g, int argc, char **argv)
{
    if (argc < 2)
        return cli_usage_error(g->path, "missing command");
    const char *name = argv[1];
    if (cli_is_help(name)) {
        cli_group_help(g, stdout);
        return CLI_EXIT_OK;
    }
    if (name[0] == '-')
        return cli_usage_error(g->path, "unknown option '%s'", name);
    for (size_t i = 0; i < g->ncmds; i++) {
        if (strcmp(g->cmds[i].name, name) == 0)
            return g->cmds[i].run(argc - 1, argv + 1);
    }
    return cli_usage_error(g->path, "unknown command '%s'", name);
}

int main(int argc, char **argv)
{
    int rc;
    if (argc >= 2 && strcmp(argv[1], "--version") == 0) {
        if (argc > 2)
            return cli_usage_error("mudbus", "--version takes no arguments");
        printf("mudbus %s\n", MUDBUS_VERSION_STRING);
        rc = CLI_EXIT_OK;
    } else {
        rc = cli_dispatch(&top_group, argc, argv);
    }
    /* Output that did not reach its destination is a failure, whatever the
     * command decided. */
    errno = 0;
    if (fflush(stdout) != 0 || ferror(stdout)) {
        cli_error("writing output: %s", errno != 0 ? strerror(errno) : "write error");
        return CLI_EXIT_INTERNAL;
    }
    return rc;
}
