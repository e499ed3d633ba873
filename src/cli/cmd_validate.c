/* SPDX-License-Identifier: MIT */
/*
 * cmd_validate: `mudbus validate`, checks one chat or event message (a file
 * or standard input) against the schemas of the wire contract (PROTOCOL.md
 * section 2, docs/SCHEMA.md) with the library's validator.
 *
 * The schema comes from, in order of precedence: the pattern of --subject
 * (which must itself be a valid publish subject, as when publishing), the
 * --kind option, or detection from the fields (--kind auto, the default).
 *
 * Input is read in a bounded way: at most the maximum payload plus one byte
 * is ever read, so a huge file or an endless pipe is refused after 64 KiB + 1
 * bytes instead of being slurped into memory.
 *
 * Single-threaded; no global mutable state.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "mudbus/schema.h"
#include "mudbus/subject.h"

static const char validate_help[] =
    "Usage: mudbus validate [--kind chat|event|auto] [--subject SUBJECT] [FILE|-]\n"
    "\n"
    "Validate one JSON message against the chat or event schema and print\n"
    "'ok: <schema>', or the field and the rule it breaks. FILE '-' or no FILE\n"
    "reads standard input. Input larger than the maximum payload (65536 bytes)\n"
    "is refused without being read to the end.\n"
    "\n"
    "Options:\n"
    "  -k, --kind KIND        chat, event, or auto (default): auto picks event when\n"
    "                         the message has event_type or event_data, else chat\n"
    "  -s, --subject SUBJECT  take the schema from the pattern of SUBJECT, as when\n"
    "                         publishing; SUBJECT must be a valid publish subject\n"
    "  -h, --help             show this help\n"
    "\n"
    "Examples:\n"
    "  mudbus validate samples/chat.json\n"
    "  mudbus validate --subject events.player_entered.earth_arkham_city_library ev.json\n"
    "  some-producer | mudbus validate --kind event -\n";

/* Read all of `f` into buf (cap bytes) or stop once buf is full. *len gets
 * the number of bytes read. Returns 0, or -1 on a read error (errno set). */
static int read_bounded(FILE *f, char *buf, size_t cap, size_t *len)
{
    size_t n = 0;
    while (n < cap) {
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0) {
            if (ferror(f))
                return -1;
            break; /* end of file */
        }
    }
    *len = n;
    return 0;
}

/* Resolve --subject to its schema. Returns CLI_EXIT_OK or the exit status of
 * the failure (already reported). */
static int schema_of_subject(const char *subject, mb_schema_kind *kind, char *pattern_name,
                             size_t cap)
{
    mb_subject_registry *reg = NULL;
    mb_err err = {0};
    mb_status st = mb_subject_registry_create(NULL, &reg, &err);
    if (st != MB_OK) {
        cli_report("creating the subject registry", st, &err);
        return CLI_EXIT_INTERNAL;
    }
    mb_subject_info info;
    mb_subject_reason reason = MB_SUBJECT_OK;
    st = mb_subject_check(reg, subject, strlen(subject), &info, &reason, &err);
    int rc = CLI_EXIT_OK;
    if (st == MB_OK) {
        *kind = info.schema;
        snprintf(pattern_name, cap, "%s", info.name);
    } else {
        const char *msg = err.msg[0] != '\0' ? err.msg : mb_status_str(st);
        cli_error("--subject: %s (%s)", msg, mb_subject_reason_name(reason));
        rc = cli_exit_for(st);
    }
    mb_subject_registry_destroy(reg);
    return rc;
}

int cli_cmd_validate(int argc, char **argv)
{
    const char *path = "mudbus validate";
    const char *kind_arg = NULL, *subject = NULL, *file = NULL;
    int opts = 1;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int m;
        if (opts && strcmp(a, "--") == 0) {
            opts = 0;
            continue;
        }
        if (opts && cli_is_help(a)) {
            cli_command_help(validate_help);
            return CLI_EXIT_OK;
        }
        if (opts && a[0] == '-' && a[1] != '\0') {
            if ((m = cli_opt_value(path, argc, argv, &i, "--kind", &kind_arg)) == 0)
                m = cli_opt_value(path, argc, argv, &i, "-k", &kind_arg);
            if (m == 0 && (m = cli_opt_value(path, argc, argv, &i, "--subject", &subject)) == 0)
                m = cli_opt_value(path, argc, argv, &i, "-s", &subject);
            if (m < 0)
                return CLI_EXIT_USAGE;
            if (m == 0)
                return cli_usage_error(path, "unknown option '%s'", a);
            continue;
        }
        if (file != NULL)
            return cli_usage_error(path, "more than one FILE ('%s' and '%s')", file, a);
        file = a;
    }

    mb_schema_kind kind = MB_SCHEMA_AUTO;
    if (kind_arg != NULL && subject != NULL)
        return cli_usage_error(path, "--kind and --subject exclude each other: the subject's "
                                     "pattern decides the schema");
    if (kind_arg != NULL && mb_schema_kind_parse(kind_arg, &kind) != MB_OK)
        return cli_usage_error(path, "--kind '%s' is not one of chat, event, auto", kind_arg);

    char pattern_name[MB_SUBJECT_NAME_MAX + 1] = "";
    if (subject != NULL) {
        int rc = schema_of_subject(subject, &kind, pattern_name, sizeof pattern_name);
        if (rc != CLI_EXIT_OK)
            return rc;
    }

    /* Read at most one byte more than the validator accepts: enough to know
     * that the input is too large without reading the rest of it. */
    const size_t max_bytes = MB_SCHEMA_MAX_BYTES_DEFAULT;
    int from_stdin = file == NULL || strcmp(file, "-") == 0;
    const char *label = from_stdin ? "<stdin>" : file;
    FILE *f = from_stdin ? stdin : fopen(file, "rb");
    if (f == NULL) {
        cli_error("%s: %s", file, strerror(errno));
        return CLI_EXIT_INTERNAL;
    }
    char *buf = malloc(max_bytes + 1);
    if (buf == NULL) {
        cli_error("out of memory");
        if (!from_stdin)
            fclose(f);
        return CLI_EXIT_INTERNAL;
    }
    size_t len = 0;
    int rd = read_bounded(f, buf, max_bytes + 1, &len);
    int read_errno = errno;
    if (!from_stdin)
        fclose(f);
    if (rd != 0) {
        cli_error("%s: %s", label, strerror(read_errno));
        free(buf);
        return CLI_EXIT_INTERNAL;
    }
    if (len > max_bytes) {
        cli_error("%s: input is larger than the maximum payload of %zu bytes", label, max_bytes);
        free(buf);
        return CLI_EXIT_REFUSED;
    }

    mb_schema *schema = NULL;
    mb_err err = {0};
    mb_status st = mb_schema_create(NULL, &schema, &err);
    if (st != MB_OK) {
        cli_report("creating the validator", st, &err);
        free(buf);
        return CLI_EXIT_INTERNAL;
    }
    mb_schema_kind detected = kind;
    st = mb_schema_validate(schema, kind, buf, len, &detected, &err);
    int rc;
    if (st == MB_OK) {
        if (subject != NULL)
            printf("ok: %s (subject %s, pattern %s)\n", mb_schema_kind_name(detected), subject,
                   pattern_name);
        else
            printf("ok: %s\n", mb_schema_kind_name(detected));
        rc = CLI_EXIT_OK;
    } else {
        /* Say which schema refused it when it was not the user's explicit
         * choice, so a misrouted or misdetected message is easy to
         * understand. */
        const char *msg = err.msg[0] != '\0' ? err.msg : mb_status_str(st);
        if (st == MB_ESCHEMA && subject != NULL)
            cli_error("%s: %s (schema %s of pattern %s)", label, msg, mb_schema_kind_name(kind),
                      pattern_name);
        else if (st == MB_ESCHEMA && kind == MB_SCHEMA_AUTO && detected != MB_SCHEMA_AUTO)
            cli_error("%s: %s (detected as %s)", label, msg, mb_schema_kind_name(detected));
        else
            cli_error("%s: %s", label, msg);
        rc = cli_exit_for(st);
    }
    mb_schema_destroy(schema);
    free(buf);
    return rc;
}
