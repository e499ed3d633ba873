/* SPDX-License-Identifier: MIT */
/*
 * bench_schema: time to validate one chat message of 250 bytes with the
 * mudbus validator, against a plain jansson parse-and-check of the same rules
 * (tests/ref/schema_ref.c, json_loadb with JSON_REJECT_DUPLICATES followed by
 * tree checks), measured in the same process and run. Several runs alternate
 * between the two; the medians and the ratio of medians are printed, with the
 * per-run ratios (the machine is noisy: compare ratios, not absolute times).
 *
 * Also measured: the validator with metrics enabled (counter, failure counter
 * and a timing histogram per call, as on the publish path) and an event
 * message.
 *
 * Usage: bench_schema   (MB_BENCH_RUNS=N, MB_BENCH_QUICK=1 for a short run)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"
#include "mudbus/schema.h"
#include "schema_ref.h"

/* A MythosMUD-style room chat message of exactly 250 bytes. */
static const char chat_msg[] =
    "{\"message_id\":\"m7f3a2c1d9e7b4f60\",\"timestamp\":\"2026-01-13T10:00:00.123Z\","
    "\"sender_id\":\"player_4b2e9a\",\"sender_name\":\"Armitage\",\"channel\":\"say\","
    "\"content\":\"Has anyone seen the Necronomicon? It was here last night.\","
    "\"room_id\":\"earth_arkham_city_library\"}";

static const char event_msg[] =
    "{\"message_id\":\"e91c\",\"timestamp\":\"2026-01-13T10:00:00Z\","
    "\"event_type\":\"player_entered\",\"room_id\":\"earth_arkham_city_library\","
    "\"event_data\":{\"player_id\":\"player_4b2e9a\",\"player_name\":\"Armitage\","
    "\"hp\":37,\"position\":[3,4.5],\"flags\":{\"sane\":true,\"cursed\":null}}}";

typedef int (*validate_fn)(const void *ctx, const char *msg, size_t len);

static int v_mudbus(const void *ctx, const char *msg, size_t len)
{
    return mb_schema_validate(ctx, MB_SCHEMA_AUTO, msg, len, NULL, NULL) == MB_OK;
}

static int v_jansson(const void *ctx, const char *msg, size_t len)
{
    (void)ctx;
    return mbref_validate(MB_SCHEMA_AUTO, msg, len, 0, 0, NULL, NULL, 0) == MB_OK;
}

/* Nanoseconds per call over n calls. */
static double time_ns(validate_fn fn, const void *ctx, const char *msg, size_t len, long n)
{
    uint64_t ok = 0;
    uint64_t t0 = bu_now_ns();
    for (long i = 0; i < n; i++)
        ok += (uint64_t)fn(ctx, msg, len);
    uint64_t t1 = bu_now_ns();
    if (ok != (uint64_t)n) {
        fprintf(stderr, "bench_schema: a valid message was refused\n");
        exit(1);
    }
    bu_sink(ok);
    return (double)(t1 - t0) / (double)n;
}

/* Run `runs` alternating rounds of the three validators on one message. */
static void bench_message(const char *label, const char *msg, const mb_schema *with_metrics,
                          int runs, long n)
{
    size_t len = strlen(msg);
    double *mb = calloc((size_t)runs, sizeof *mb);
    double *mbm = calloc((size_t)runs, sizeof *mbm);
    double *js = calloc((size_t)runs, sizeof *js);
    double *ratio = calloc((size_t)runs, sizeof *ratio);
    if (mb == NULL || mbm == NULL || js == NULL || ratio == NULL) {
        fprintf(stderr, "bench_schema: out of memory\n");
        exit(1);
    }
    /* Warm up caches and branch predictors. */
    time_ns(v_mudbus, NULL, msg, len, n / 10 + 1);
    time_ns(v_jansson, NULL, msg, len, n / 100 + 1);
    printf("%s: %zu bytes, %d runs\n", label, len, runs);
    for (int r = 0; r < runs; r++) {
        mb[r] = time_ns(v_mudbus, NULL, msg, len, n);
        mbm[r] = time_ns(v_mudbus, with_metrics, msg, len, n);
        js[r] = time_ns(v_jansson, NULL, msg, len, n / 8 + 1);
        ratio[r] = js[r] / mbm[r];
        printf("  run %d: mudbus %.1f ns, mudbus+metrics %.1f ns, jansson %.1f ns, ratio %.1fx\n",
               r + 1, mb[r], mbm[r], js[r], ratio[r]);
    }
    double m_mb = bu_median(mb, (size_t)runs), m_mbm = bu_median(mbm, (size_t)runs);
    double m_js = bu_median(js, (size_t)runs), m_ratio = bu_median(ratio, (size_t)runs);
    printf("%s_mudbus_ns_median %.1f\n", label, m_mb);
    printf("%s_mudbus_metrics_ns_median %.1f\n", label, m_mbm);
    printf("%s_jansson_ns_median %.1f\n", label, m_js);
    printf("%s_ratio_jansson_over_mudbus_metrics %.2f (median of per-run ratios %.2f)\n", label,
           m_js / m_mbm, m_ratio);
    free(mb);
    free(mbm);
    free(js);
    free(ratio);
}

int main(void)
{
    int runs = bu_runs(7);
    long n = bu_quick() ? 20000 : 1000000;

    mb_metrics *metrics = NULL;
    mb_schema *schema = NULL;
    mb_err err = {MB_OK, ""};
    if (mb_metrics_create(&metrics, &err) != MB_OK ||
        mb_schema_create(&(mb_schema_opts){0, 0, metrics}, &schema, &err) != MB_OK) {
        fprintf(stderr, "bench_schema: %s\n", err.msg);
        return 1;
    }

    /* Both validators must agree on the inputs measured and refuse the same
     * broken variants, or the comparison would be meaningless. */
    const char *broken[] = {
        "{\"message_id\":\"a\",\"message_id\":\"b\"}",
        "{\"message_id\":\"m1\",\"timestamp\":\"2026-02-30T00:00:00Z\",\"sender_id\":\"p\","
        "\"sender_name\":\"A\",\"channel\":\"say\",\"content\":\"x\"}",
        "{\"message_id\":\"m1\",\"timestamp\":\"2026-01-13T10:00:00Z\",\"sender_id\":\"p.q\","
        "\"sender_name\":\"A\",\"channel\":\"say\",\"content\":\"x\"}",
        "{\"message_id\":\"m1\"",
    };
    for (size_t i = 0; i < sizeof broken / sizeof broken[0]; i++) {
        size_t len = strlen(broken[i]);
        if (v_mudbus(schema, broken[i], len) || v_jansson(NULL, broken[i], len)) {
            fprintf(stderr, "bench_schema: broken input %zu was accepted\n", i);
            return 1;
        }
    }

    printf("bench_schema: validate one message; goal <= 500 ns and >= 6x jansson\n");
    bench_message("chat250", chat_msg, schema, runs, n);
    bench_message("event", event_msg, schema, runs, n);

    mb_schema_destroy(schema);
    mb_metrics_destroy(metrics);
    return 0;
}
