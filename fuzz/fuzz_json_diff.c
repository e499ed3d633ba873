/* SPDX-License-Identifier: MIT */
/*
 * fuzz_json_diff: differential fuzz target of the strict JSON scanner.
 *
 * Property: for any input, mb__json_check accepts it exactly when jansson 2.14
 * (json_loadb with JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, through
 * mbref_json_accepts) accepts it -- except that an input holding a raw 0x00
 * byte must always be refused by mudbus, because jansson accepts a NUL right
 * after a number or literal (a bug in its stream unget). A violation prints
 * the input, escaped, and the scanner's reason to stderr and aborts, which is
 * how libFuzzer and fuzz/replay_main.c notice it.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "schema_ref.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

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

static void mismatch(const uint8_t *data, size_t size, const char *what, const mb_err *err)
{
    fprintf(stderr, "fuzz_json_diff: %s\n  mb__json_check: %s %s\n  input: ", what,
            mb_status_name(err->code), err->msg);
    print_escaped(data, size);
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = size > 0 ? (const char *)data : "";
    mb_err err;
    mb_err_clear(&err);
    mb_status st = mb__json_check(p, size, &err);
    if (st == MB_ENOMEM)
        return 0;
    if (st != MB_OK && st != MB_EJSON)
        mismatch(data, size, "unexpected status", &err);
    if (st == MB_EJSON && (err.code != MB_EJSON || err.msg[0] == '\0'))
        mismatch(data, size, "MB_EJSON without a reason", &err);
    int mb = st == MB_OK;
    if (size > 0 && memchr(p, 0, size) != NULL) {
        if (mb)
            mismatch(data, size, "a raw NUL byte was accepted", &err);
        return 0;
    }
    int ref = mbref_json_accepts(p, size);
    if (mb != ref)
        mismatch(data, size,
                 ref ? "jansson accepts, mudbus refuses" : "mudbus accepts, jansson refuses", &err);
    return 0;
}
