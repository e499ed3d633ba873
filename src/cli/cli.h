/* SPDX-License-Identifier: MIT */
/*
 * cli: the internals shared by the files of the `mudbus` operator tool.
 *
 * The tool is a tree of command tables. main.c owns the top-level table (one
 * entry per command group: `subjects`, `validate`, `dlq`, and `pub`, `sub`,
 * `req`, `health`, which share cmd_nats.c and its connection options) and
 * each group lives in its own cmd_<group>.c, which either
 * is a single command (`validate`) or hands its arguments to cli_dispatch()
 * with a table of subcommands (`subjects list|build|check|check-sub`). Adding
 * a group is one new file and one table row.
 *
 * Conventions every command follows:
 *   - `-h`/`--help` anywhere before `--` prints the command's help to stdout
 *     and exits 0;
 *   - results go to stdout, errors to stderr as one line `mudbus: <reason>`,
 *     where the reason is the library's mb_err message when there is one;
 *   - the exit status is one of CLI_EXIT_* below.
 *
 * The tool is single-threaded and keeps no global mutable state: every
 * command creates the library objects it needs and destroys them before it
 * returns.
 */
#ifndef MUDBUS_CLI_H
#define MUDBUS_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "mudbus/client.h"
#include "mudbus/config.h"
#include "mudbus/status.h"

#ifndef MUDBUS_VERSION_STRING
/* The build passes the project version; this fallback keeps stand-alone
 * compiles working. tests/cli/test_cli.sh checks it against CMakeLists.txt. */
#define MUDBUS_VERSION_STRING "0.1.0"
#endif

/* Exit statuses, documented in `mudbus --help`. */
enum {
    CLI_EXIT_OK = 0,      /* success */
    CLI_EXIT_REFUSED = 1, /* the input was refused: invalid subject, message, ... */
    CLI_EXIT_USAGE = 2,   /* bad command line */
    CLI_EXIT_INTERNAL = 3 /* I/O error, out of memory, internal error */
};

/* A command's entry point. argv[0] is the command's own name (as for main),
 * argv[argc] is NULL. Returns a CLI_EXIT_* status. */
typedef int (*cli_run_fn)(int argc, char **argv);

typedef struct cli_command {
    const char *name;    /* "build" */
    const char *summary; /* one line for the parent's help */
    cli_run_fn run;
} cli_command;

/* A table of commands under a common prefix. */
typedef struct cli_group {
    const char *path;  /* "mudbus subjects": used in usage and error lines */
    const char *about; /* a paragraph printed at the top of the help */
    const cli_command *cmds;
    size_t ncmds;
    const char *footer; /* printed at the end of the help; may be NULL */
} cli_group;

/* Run the command of `g` named by argv[1] with argv + 1. `--help`/`-h` as
 * argv[1] prints the group's help (exit 0); no command or an unknown one is a
 * usage error (exit 2). */
int cli_dispatch(const cli_group *g, int argc, char **argv);

/* Print the group's help (usage line, about, commands, footer) to `out`. */
void cli_group_help(const cli_group *g, FILE *out);

/* Print "mudbus: <formatted text>\n" to stderr. */
void cli_error(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;

/* Report a library failure: "mudbus: [context: ]<reason>" where the reason is
 * err->msg, or the status's sentence when the library recorded none. Returns
 * the exit status for `st` (see cli_exit_for). `context` may be NULL. */
int cli_report(const char *context, mb_status st, const mb_err *err);

/* The exit status for a library status: CLI_EXIT_OK for MB_OK,
 * CLI_EXIT_REFUSED for statuses that judge the input (invalid subject,
 * pattern, JSON, schema, too big, not found, invalid argument),
 * CLI_EXIT_INTERNAL for everything else (memory, I/O, internal). */
int cli_exit_for(mb_status st);

/* Report a usage error: "mudbus: <text>" and "Try '<path> --help'." on
 * stderr. Returns CLI_EXIT_USAGE. */
int cli_usage_error(const char *path, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* 1 when `arg` is "-h" or "--help". */
int cli_is_help(const char *arg);

/* Option parsing for commands that take `--name VALUE` or `--name=VALUE`.
 * Looks at argv[*i]: when it is option `name`, stores its value in *value,
 * advances *i past a separate value and returns 1; returns 0 when argv[*i] is
 * another argument; returns -1 (after reporting a usage error under `path`)
 * when the option's value is missing. */
int cli_opt_value(const char *path, int argc, char **argv, int *i, const char *name,
                  const char **value);

/* Argument handling for a command without options: `-h`/`--help` before `--`
 * prints `help` and the exit statuses to stdout; any other argument that
 * starts with '-' (except "-" itself and anything after `--`) is a usage
 * error. On return of -1 the positional arguments have been moved to
 * argv[1 .. *argc - 1] in order and the caller goes on; any other return is
 * the exit status the caller must return. */
int cli_positional(const char *path, const char *help, int *argc, char **argv);

/* Print a command's help text followed by the exit statuses to stdout. */
void cli_command_help(const char *help);

/* The exit-status paragraph shared by every help text. */
extern const char cli_exit_help[];

/* ---- NATS connection options (cmd_nats.c) ----
 *
 * Every command that talks to NATS (pub, sub, req, health, dlq replay
 * --server) takes the same options, parsed by cli_conn_option and turned
 * into client options by cli_conn_opts: mb_client_opts_default, then the
 * [nats] section of --config FILE, then the MUDBUS_NATS_* environment, then
 * the command line (flags win). The CLI always uses one connection
 * (pool_size 1), no DLQ, no poll mode, and fails at once when no server can
 * be reached (start_disconnected off). */
typedef struct cli_conn {
    const char *servers[MB_CLIENT_MAX_SERVERS]; /* --server, split at commas */
    size_t nservers;
    bool tls;
    const char *tls_ca, *tls_cert, *tls_key;
    const char *user, *password, *token, *creds, *nkey_seed, *nkey_public;
    uint64_t connect_timeout_ms;   /* 0: not given */
    const char *config;            /* --config FILE */
    bool given;                    /* --server or --config was given */
    mb_config *cfg_file, *cfg_env; /* kept until cli_conn_free: opts point into them */
} cli_conn;

/* The help paragraph of the connection options. */
#define CLI_CONN_HELP                                                                              \
    "\n"                                                                                           \
    "Connection options:\n"                                                                        \
    "      --server URL         nats:// or tls:// URL; repeatable or a comma list\n"               \
    "                           (default: MUDBUS_NATS_SERVERS, else nats://127.0.0.1:4222)\n"      \
    "      --config FILE        read the [nats] section of an INI file (other sections are\n"      \
    "                           ignored); MUDBUS_NATS_* variables override it, flags both\n"       \
    "      --tls                use TLS (implied by a tls:// URL or any --tls-* option)\n"         \
    "      --tls-ca FILE        CA certificates (PEM) to verify the server with\n"                 \
    "      --tls-cert FILE      client certificate (PEM), with --tls-key\n"                        \
    "      --tls-key FILE       its private key (PEM)\n"                                           \
    "      --user USER          user name, with --password\n"                                      \
    "      --password PASS      password; better: MUDBUS_NATS_PASSWORD (not shown by ps)\n"        \
    "      --token TOKEN        authentication token (or MUDBUS_NATS_TOKEN)\n"                     \
    "      --creds FILE         JWT and nkey seed (.creds file)\n"                                 \
    "      --nkey-seed FILE     file holding an nkey seed, with --nkey-public\n"                   \
    "      --nkey-public KEY    the seed's public key (U...)\n"                                    \
    "      --connect-timeout MS connection timeout in milliseconds (default 2000)\n"

/* When argv[*i] is a connection option, store it in *c, advance *i past its
 * value and return 1; 0 when it is another argument; -1 (after reporting a
 * usage error under `path`) when it is malformed. */
int cli_conn_option(const char *path, cli_conn *c, int argc, char **argv, int *i);

/* The checks between connection flags (--password needs --user, --tls-cert
 * with --tls-key, --nkey-seed with --nkey-public). Returns -1 when they
 * hold, else CLI_EXIT_USAGE after reporting why. */
int cli_conn_check(const char *path, const cli_conn *c);

/* Fill *o from defaults, --config, the environment and the flags. Returns -1
 * to go on, or the exit status to return (after reporting why). */
int cli_conn_opts(const char *path, cli_conn *c, mb_client_opts *o);

/* cli_conn_opts, then mb_client_create. Returns -1 with *out set, or the
 * exit status (3 when no server could be reached, after reporting why). */
int cli_conn_connect(const char *path, cli_conn *c, mb_client_opts *o, mb_client **out);

/* Free what cli_conn_opts loaded (after the client is created). */
void cli_conn_free(cli_conn *c);

/* ---- command groups (one cmd_<group>.c each) ---- */

int cli_cmd_subjects(int argc, char **argv);
int cli_cmd_validate(int argc, char **argv);
int cli_cmd_dlq(int argc, char **argv);
int cli_cmd_pub(int argc, char **argv);
int cli_cmd_sub(int argc, char **argv);
int cli_cmd_req(int argc, char **argv);
int cli_cmd_health(int argc, char **argv);

#endif
