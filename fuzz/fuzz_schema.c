/* SPDX-License-Identifier: MIT */
/*
 * fuzz_schema: differential fuzz target of the schema validator.
 *
 * The first input byte picks the schema kind (auto, chat, event) and the
 * limits (max_depth, max_bytes); the rest is the payload. Property:
 * mb_schema_validate returns the same status as the jansson oracle
 * (mbref_validate) with the same limits, and on MB_OK both detect the same
 * kind. A refusal must carry a reason. A violation prints the input, both
 * statuses and both reasons to stderr and aborts.
 *
 * One validator per limit combination is created on first use and kept for
 * the life of the process (it stays reachable, so LeakSanitizer is quiet).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mudbus/schema.h"
#include "schema_ref.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const unsigned depths[8] = {0, 1, 2, 3, 4, 10, 11, 64};
static const size_t sizes[8] = {0, 16, 64, 128, 256, 512, 1024, MB_SCHEMA_MAX_BYTES_LIMIT};
static mb_schema *schemas[8][8];

static void print_escaped(const uint8_t *p, size_t n)
{
    fputc('"', stderr);
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '"' || p[i] == '\\')
            fprintf(stderr, "\\%c", p[i]);
        else if (p[i] >= 0x20 && p[i] < 0x7F)
            fputc(p[i], stderr);
        else
            fprintf(stderr, "\\x%02X", p[i]);
    }
    fprintf(stderr, "\" (%zu bytes)\n", n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    unsigned sel = data[0];
    mb_schema_kind kind = (mb_schema_kind)((sel & 3u) % 3u);
    unsigned di = (sel >> 2) & 7u, bi = (sel >> 5) & 7u;
    if (schemas[di][bi] == NULL) {
        mb_schema_opts o = {0};
        o.max_depth = depths[di];
        o.max_bytes = sizes[bi];
        mb_err err;
        mb_err_clear(&err);
        if (mb_schema_create(&o, &schemas[di][bi], &err) != MB_OK) {
            fprintf(stderr, "fuzz_schema: mb_schema_create: %s\n", err.msg);
            abort();
        }
    }
    const char *json = (const char *)data + 1;
    size_t len = size - 1;

    mb_err err;
    mb_err_clear(&err);
    mb_schema_kind det = (mb_schema_kind)99, rdet = (mb_schema_kind)99;
    mb_status st = mb_schema_validate(schemas[di][bi], kind, json, len, &det, &err);
    if (st == MB_ENOMEM)
        return 0;
    char rmsg[256];
    mb_status rst =
        mbref_validate(kind, json, len, sizes[bi], depths[di], &rdet, rmsg, sizeof rmsg);

    const char *what = NULL;
    if (st != rst)
        what = "status differs";
    else if (st == MB_OK && det != rdet)
        what = "detected kind differs";
    else if (st != MB_OK && (err.code != st || err.msg[0] == '\0'))
        what = "refusal without a reason";
    else if (st == MB_OK && err.code != MB_OK)
        what = "MB_OK with an error recorded";
    if (what != NULL) {
        fprintf(stderr,
                "fuzz_schema: %s (kind %s, max_depth %u, max_bytes %zu)\n"
                "  mudbus: %s detected %d: %s\n  oracle: %s detected %d: %s\n  payload: ",
                what, mb_schema_kind_name(kind), depths[di], sizes[bi], mb_status_name(st),
                (int)det, err.msg, mb_status_name(rst), (int)rdet, rmsg);
        print_escaped((const uint8_t *)json, len);
        abort();
    }
    return 0;
}
