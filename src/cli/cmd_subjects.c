/* SPDX-License-Identifier: MIT */
/*
 * cmd_subjects: `mudbus subjects list|build|check|check-sub`, the operator's
 * view of the subject registry (PROTOCOL.md section 1).
 *
 * Every subcommand creates a registry preloaded with the contract's patterns,
 * asks it one question through the public API (mb_subject_at, mb_subject_build,
 * mb_subject_check, mb_subject_check_sub) and destroys it. Nothing here
 * re-implements a subject rule: a refusal is reported with the library's own
 * message, which names the parameter or token and the rule, followed by the
 * reason code that the library also counts in its metrics.
 *
 * Single-threaded; no global mutable state.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "mudbus/subject.h"

static const char list_help[] =
    "Usage: mudbus subjects list\n"
    "\n"
    "List the registered subject patterns: name, template and the schema of the\n"
    "messages published on them, in aligned columns with a header line.\n";

static const char build_help[] =
    "Usage: mudbus subjects build NAME [PARAM=VALUE...]\n"
    "\n"
    "Build the subject of pattern NAME (see 'mudbus subjects list') and print it.\n"
    "Every {placeholder} of the template needs exactly one PARAM=VALUE; a value\n"
    "must be 1..128 bytes of [A-Za-z0-9_-], so it can never add a token, a\n"
    "wildcard or whitespace to the subject.\n"
    "\n"
    "Example:\n"
    "  mudbus subjects build chat_say_room room_id=earth_arkham_city_library\n"
    "  chat.say.room.earth_arkham_city_library\n";

static const char check_help[] =
    "Usage: mudbus subjects check SUBJECT\n"
    "\n"
    "Check that SUBJECT may be published: it must match a registered pattern.\n"
    "Prints the pattern's name, template and schema.\n"
    "\n"
    "Example:\n"
    "  mudbus subjects check chat.say.room.earth_arkham_city_library\n"
    "  ok: chat_say_room (chat.say.room.{room_id}), schema chat\n";

static const char check_sub_help[] =
    "Usage: mudbus subjects check-sub PATTERN\n"
    "\n"
    "Check that PATTERN is an allowed subscription: at most 2 wildcard tokens\n"
    "('*' or '>'), the first token never a wildcard, not every token a wildcard,\n"
    "'>' only as the last token.\n"
    "\n"
    "Example:\n"
    "  mudbus subjects check-sub 'chat.*.room.*'\n";

static int open_registry(mb_subject_registry **out)
{
    mb_err err = {0};
    mb_status st = mb_subject_registry_create(NULL, out, &err);
    if (st != MB_OK) {
        cli_report("creating the subject registry", st, &err);
        return CLI_EXIT_INTERNAL;
    }
    return CLI_EXIT_OK;
}

/* Report a refused subject, parameter or pattern: the library's message,
 * which already names the pattern, subject or parameter and the rule, and the
 * reason code (as counted in mudbus_subject_failures_total). `what` is used
 * only when the library recorded no message. */
static int report_refusal(const char *what, mb_status st, const mb_err *err,
                          mb_subject_reason reason)
{
    if (err->msg[0] == '\0')
        cli_error("%s: %s", what, mb_status_str(st));
    else if (reason != MB_SUBJECT_OK)
        cli_error("%s (%s)", err->msg, mb_subject_reason_name(reason));
    else
        cli_error("%s", err->msg);
    return cli_exit_for(st);
}

static int subjects_list(int argc, char **argv)
{
    const char *path = "mudbus subjects list";
    int rc = cli_positional(path, list_help, &argc, argv);
    if (rc >= 0)
        return rc;
    if (argc > 1)
        return cli_usage_error(path, "unexpected argument '%s'", argv[1]);

    mb_subject_registry *reg = NULL;
    if ((rc = open_registry(&reg)) != CLI_EXIT_OK)
        return rc;

    size_t n = mb_subject_count(reg);
    size_t wname = strlen("NAME"), wtmpl = strlen("TEMPLATE");
    for (size_t i = 0; i < n; i++) {
        mb_subject_info info;
        mb_status st = mb_subject_at(reg, i, &info);
        if (st != MB_OK) {
            cli_error("reading pattern %zu of %zu: %s", i, n, mb_status_str(st));
            mb_subject_registry_destroy(reg);
            return CLI_EXIT_INTERNAL;
        }
        size_t l = strlen(info.name);
        if (l > wname)
            wname = l;
        l = strlen(info.pattern);
        if (l > wtmpl)
            wtmpl = l;
    }
    printf("%-*s  %-*s  %s\n", (int)wname, "NAME", (int)wtmpl, "TEMPLATE", "SCHEMA");
    for (size_t i = 0; i < n; i++) {
        mb_subject_info info;
        if (mb_subject_at(reg, i, &info) != MB_OK)
            continue; /* cannot happen: the first pass read every index */
        printf("%-*s  %-*s  %s\n", (int)wname, info.name, (int)wtmpl, info.pattern,
               mb_schema_kind_name(info.schema));
    }
    mb_subject_registry_destroy(reg);
    return CLI_EXIT_OK;
}

static int subjects_build(int argc, char **argv)
{
    const char *path = "mudbus subjects build";
    int rc = cli_positional(path, build_help, &argc, argv);
    if (rc >= 0)
        return rc;
    if (argc < 2)
        return cli_usage_error(path, "missing pattern NAME");

    const char *name = argv[1];
    size_t np = (size_t)argc - 2;
    /* Check the shape of every PARAM=VALUE before splitting any of them. */
    for (size_t i = 0; i < np; i++) {
        const char *a = argv[2 + i];
        const char *eq = strchr(a, '=');
        if (eq == NULL)
            return cli_usage_error(path, "argument '%s' is not PARAM=VALUE", a);
        if (eq == a)
            return cli_usage_error(path, "argument '%s' has an empty PARAM name", a);
    }
    mb_subject_param *params = calloc(np > 0 ? np : 1, sizeof *params);
    if (params == NULL) {
        cli_error("out of memory");
        return CLI_EXIT_INTERNAL;
    }
    for (size_t i = 0; i < np; i++) {
        char *a = argv[2 + i];
        char *eq = strchr(a, '=');
        *eq = '\0'; /* argv strings are ours to modify */
        params[i].name = a;
        params[i].value = eq + 1;
    }

    mb_subject_registry *reg = NULL;
    if ((rc = open_registry(&reg)) != CLI_EXIT_OK) {
        free(params);
        return rc;
    }
    char subject[MB_SUBJECT_MAX + 1];
    size_t len = 0;
    mb_subject_reason reason = MB_SUBJECT_OK;
    mb_err err = {0};
    mb_status st =
        mb_subject_build(reg, name, params, np, subject, sizeof subject, &len, &reason, &err);
    if (st == MB_OK) {
        printf("%.*s\n", (int)len, subject);
        rc = CLI_EXIT_OK;
    } else {
        rc = report_refusal(name, st, &err, reason);
    }
    mb_subject_registry_destroy(reg);
    free(params);
    return rc;
}

static int subjects_check(int argc, char **argv)
{
    const char *path = "mudbus subjects check";
    int rc = cli_positional(path, check_help, &argc, argv);
    if (rc >= 0)
        return rc;
    if (argc < 2)
        return cli_usage_error(path, "missing SUBJECT");
    if (argc > 2)
        return cli_usage_error(path, "unexpected argument '%s'", argv[2]);

    mb_subject_registry *reg = NULL;
    if ((rc = open_registry(&reg)) != CLI_EXIT_OK)
        return rc;
    const char *subject = argv[1];
    mb_subject_info info;
    mb_subject_reason reason = MB_SUBJECT_OK;
    mb_err err = {0};
    mb_status st = mb_subject_check(reg, subject, strlen(subject), &info, &reason, &err);
    if (st == MB_OK) {
        printf("ok: %s (%s), schema %s\n", info.name, info.pattern,
               mb_schema_kind_name(info.schema));
        rc = CLI_EXIT_OK;
    } else {
        rc = report_refusal("subject", st, &err, reason);
    }
    mb_subject_registry_destroy(reg);
    return rc;
}

static int subjects_check_sub(int argc, char **argv)
{
    const char *path = "mudbus subjects check-sub";
    int rc = cli_positional(path, check_sub_help, &argc, argv);
    if (rc >= 0)
        return rc;
    if (argc < 2)
        return cli_usage_error(path, "missing PATTERN");
    if (argc > 2)
        return cli_usage_error(path, "unexpected argument '%s'", argv[2]);

    mb_subject_registry *reg = NULL;
    if ((rc = open_registry(&reg)) != CLI_EXIT_OK)
        return rc;
    const char *pattern = argv[1];
    mb_subject_reason reason = MB_SUBJECT_OK;
    mb_err err = {0};
    mb_status st = mb_subject_check_sub(reg, pattern, strlen(pattern), &reason, &err);
    if (st == MB_OK) {
        printf("ok: %s is an allowed subscription pattern\n", pattern);
        rc = CLI_EXIT_OK;
    } else {
        rc = report_refusal("subscription pattern", st, &err, reason);
    }
    mb_subject_registry_destroy(reg);
    return rc;
}

static const cli_command subjects_commands[] = {
    {"list", "list the registered patterns (name, template, schema)", subjects_list},
    {"build", "build a subject from a pattern name and PARAM=VALUE pairs", subjects_build},
    {"check", "check that a subject may be published; show its pattern and schema", subjects_check},
    {"check-sub", "check that a subscription pattern is allowed", subjects_check_sub},
};

static const cli_group subjects_group = {
    "mudbus subjects",
    "Inspect the NATS subject patterns of the wire contract, build subjects from\n"
    "them with checked parameters, and check publish subjects and subscription\n"
    "patterns the way the library does before publishing or subscribing.",
    subjects_commands,
    sizeof subjects_commands / sizeof subjects_commands[0],
    NULL,
};

int cli_cmd_subjects(int argc, char **argv)
{
    return cli_dispatch(&subjects_group, argc, argv);
}
