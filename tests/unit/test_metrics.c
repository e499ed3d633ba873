/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for metrics: registration rules (names, labels, duplicates, one
 * type per family), the exact Prometheus text exposition of a small registry,
 * power-of-two histogram buckets and their cumulative lines, quantile
 * estimates, exact totals under concurrent updates, and the bounded string
 * buffer (strbuf, internal) that the exposition is built in.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mudbus/metrics.h"
#include "strbuf.h"

/* ---- helpers ---- */

static mb_metrics *new_registry(void)
{
    mb_metrics *m = NULL;
    mb_err err = {0};
    assert_int_equal(mb_metrics_create(&m, &err), MB_OK);
    assert_non_null(m);
    assert_int_equal(err.code, MB_OK);
    return m;
}

/* The whole exposition; the caller frees it. Checks the reported length. */
static char *expose(mb_metrics *m)
{
    char *text = NULL;
    size_t len = (size_t)-1;
    mb_err err = {0};
    assert_int_equal(mb_metrics_format(m, &text, &len, &err), MB_OK);
    assert_non_null(text);
    assert_int_equal(len, strlen(text));
    return text;
}

/* The value text of the sample line whose series is exactly `series` (the
 * part before the space), or NULL when there is no such line. Points into
 * `text`; the value ends at the next newline. */
static const char *sample(const char *text, const char *series)
{
    size_t n = strlen(series);
    for (const char *line = text; *line != '\0';) {
        const char *end = strchr(line, '\n');
        if (end == NULL)
            end = line + strlen(line);
        if ((size_t)(end - line) > n && strncmp(line, series, n) == 0 && line[n] == ' ')
            return line + n + 1;
        line = *end ? end + 1 : end;
    }
    return NULL;
}

/* A sample's value as an integer; -1 when the line is absent. */
static long long sample_int(const char *text, const char *series)
{
    const char *v = sample(text, series);
    if (v == NULL)
        return -1;
    char *end;
    long long x = strtoll(v, &end, 10);
    assert_true(*end == '\n' || *end == '\0');
    return x;
}

static double sample_double(const char *text, const char *series)
{
    const char *v = sample(text, series);
    assert_non_null(v);
    char *end;
    double x = strtod(v, &end);
    assert_true(end != v && (*end == '\n' || *end == '\0'));
    return x;
}

static size_t count_substr(const char *text, const char *needle)
{
    size_t n = 0, len = strlen(needle);
    for (const char *p = strstr(text, needle); p != NULL; p = strstr(p + len, needle))
        n++;
    return n;
}

/* Lowest bucket whose upper bound 2^i holds v, computed by repeated doubling
 * rather than the library's count-leading-zeros; MB_HIST_BUCKETS is +Inf. */
static unsigned expected_bucket(uint64_t v)
{
    uint64_t bound = 1;
    for (unsigned i = 0; i < MB_HIST_BUCKETS; i++, bound <<= 1) {
        if (v <= bound)
            return i;
    }
    return MB_HIST_BUCKETS;
}

/* ---- registry lifecycle ---- */

static void test_create_destroy(void **state)
{
    (void)state;
    mb_metrics *m = new_registry();
    char *text = expose(m);
    assert_string_equal(text, ""); /* empty registry: empty exposition */
    free(text);
    mb_metrics_destroy(m);
    mb_metrics_destroy(NULL); /* does nothing */

    mb_err err = {0};
    assert_int_equal(mb_metrics_create(NULL, &err), MB_EINVAL);
    assert_int_equal(err.code, MB_EINVAL);
}

static void test_format_null_arguments(void **state)
{
    (void)state;
    mb_metrics *m = new_registry();
    size_t len;
    mb_err err = {0};
    assert_int_equal(mb_metrics_format(m, NULL, &len, &err), MB_EINVAL);
    assert_int_equal(err.code, MB_EINVAL);
    char *text = NULL;
    assert_int_equal(mb_metrics_format(NULL, &text, &len, NULL), MB_EINVAL);
    assert_null(text);
    /* out_len is optional. */
    assert_int_equal(mb_metrics_format(m, &text, NULL, NULL), MB_OK);
    assert_string_equal(text, "");
    free(text);
    mb_metrics_destroy(m);
}

/* ---- updates and exposition ---- */

static void test_counter_gauge_update_and_show(void **state)
{
    (void)state;
    mb_metrics *m = new_registry();
    mb_counter *c = NULL;
    mb_gauge *g = NULL;
    assert_int_equal(mb_metrics_counter(m, "jobs_total", "Jobs.", NULL, &c, NULL), MB_OK);
    assert_int_equal(mb_metrics_gauge(m, "depth", "Depth.", NULL, &g, NULL), MB_OK);
    assert_int_equal(mb_counter_get(c), 0);
    assert_int_equal(mb_gauge_get(g), 0);

    char *text = expose(m);
    assert_int_equal(sample_int(text, "jobs_total"), 0);
    assert_int_equal(sample_int(text, "depth"), 0);
    free(text);

    mb_counter_add(c, 5);
    mb_counter_add(c, 1);
    mb_gauge_set(g, 10);
    mb_gauge_add(g, -13);
    assert_int_equal(mb_counter_get(c), 6);
    assert_int_equal(mb_gauge_get(g), -3);
    text = expose(m);
    assert_int_equal(sample_int(text, "jobs_total"), 6);
    assert_non_null(strstr(text, "\ndepth -3\n"));
    free(text);

    /* The full range of both types is shown exactly. */
    mb_counter_add(c, UINT64_MAX - 6);
    mb_gauge_set(g, INT64_MIN);
    text = expose(m);
    assert_non_null(strstr(text, "\njobs_total 18446744073709551615\n"));
    assert_non_null(strstr(text, "\ndepth -9223372036854775808\n"));
    free(text);
    mb_metrics_destroy(m);
}

static void test_exposition_exact_text(void **state)
{
    (void)state;
    mb_metrics *m = new_registry();
    mb_counter *ok = NULL, *fail = NULL;
    mb_gauge *conns = NULL, *ws = NULL;
    mb_histogram *in = NULL, *out = NULL;

    /* Families interleaved on purpose: the exposition must group them. */
    assert_int_equal(
        mb_metrics_counter(m, "mb_requests_total", "Requests handled.", "code=\"200\"", &ok, NULL),
        MB_OK);
    assert_int_equal(mb_metrics_gauge(m, "mb_connections", "Open connections.", NULL, &conns, NULL),
                     MB_OK);
    assert_int_equal(mb_metrics_counter(m, "mb_requests_total", "Other help is ignored.",
                                        "code=\"500\"", &fail, NULL),
                     MB_OK);
    assert_int_equal(
        mb_metrics_histogram(m, "mb_payload_bytes", "Payload sizes.", "dir=\"in\"", 1.0, &in, NULL),
        MB_OK);
    assert_int_equal(
        mb_metrics_gauge(m, "mb_connections", "Open connections.", "kind=\"ws\"", &ws, NULL),
        MB_OK);
    assert_int_equal(mb_metrics_histogram(m, "mb_payload_bytes", "Payload sizes.", "dir=\"out\"",
                                          1.0, &out, NULL),
                     MB_OK);

    mb_counter_add(ok, 3);
    mb_counter_add(fail, 1);
    mb_gauge_set(conns, -2);
    mb_gauge_set(ws, 5);
    mb_histogram_observe(in, 1);
    mb_histogram_observe(in, 3);

    char *text = expose(m);
    assert_string_equal(text, "# HELP mb_requests_total Requests handled.\n"
                              "# TYPE mb_requests_total counter\n"
                              "mb_requests_total{code=\"200\"} 3\n"
                              "mb_requests_total{code=\"500\"} 1\n"
                              "# HELP mb_connections Open connections.\n"
                              "# TYPE mb_connections gauge\n"
                              "mb_connections -2\n"
                              "mb_connections{kind=\"ws\"} 5\n"
                              "# HELP mb_payload_bytes Payload sizes.\n"
                              "# TYPE mb_payload_bytes histogram\n"
                              "mb_payload_bytes_bucket{dir=\"in\",le=\"1\"} 1\n"
                              "mb_payload_bytes_bucket{dir=\"in\",le=\"2\"} 1\n"
                              "mb_payload_bytes_bucket{dir=\"in\",le=\"4\"} 2\n"
                              "mb_payload_bytes_bucket{dir=\"in\",le=\"+Inf\"} 2\n"
                              "mb_payload_bytes_sum{dir=\"in\"} 4\n"
                              "mb_payload_bytes_count{dir=\"in\"} 2\n"
                              "mb_payload_bytes_bucket{dir=\"out\",le=\"+Inf\"} 0\n"
                              "mb_payload_bytes_sum{dir=\"out\"} 0\n"
                              "mb_payload_bytes_count{dir=\"out\"} 0\n");
    assert_int_equal(count_substr(text, "# HELP mb_requests_total "), 1);
    assert_int_equal(count_substr(text, "# TYPE mb_connections "), 1);
    free(text);
    mb_metrics_destroy(m);
}

static void test_exposition_seconds_histogram(void **state)
{
    (void)state;
    mb_metrics *m = new_registry();
    mb_histogram *h = NULL;
    assert_int_equal(
        mb_metrics_histogram(m, "mb_latency_seconds", "Latency.", NULL, 1e-9, &h, NULL), MB_OK);
    mb_histogram_observe(h, 1);
    mb_histogram_observe(h, 3);
    char *text = expose(m);
    assert_string_equal(text, "# HELP mb_latency_seconds Latency.\n"
                              "# TYPE mb_latency_seconds histogram\n"
                              "mb_latency_seconds_bucket{le=\"1e-09\"} 1\n"
                              "mb_latency_seconds_bucket{le=\"2e-09\"} 1\n"
                              "mb_latency_seconds_bucket{le=\"4e-09\"} 2\n"
                              "mb_latency_seconds_bucket{le=\"+Inf\"} 2\n"
                              "mb_latency_seconds_sum 4e-09\n"
                              "mb_latency_seconds_count 2\n");
    free(text);

    /* 1.5 ms lands in the bucket of 2^21 ns = 2.097152 ms, shown in seconds. */
    mb_histogram_observe(h, 1500000);
    text = expose(m);
    assert_int_equal(sample_int(text, "mb_latency_seconds_bucket{le=\"0.001048576\"}"), 2);
    assert_int_equal(sample_int(text, "mb_latency_seconds_bucket{le=\"0.002097152\"}"), 3);
    assert_null(sample(text, "mb_latency_seconds_bucket{le=\"0.004194304\"}"));
    assert_true(fabs(sample_double(text, "mb_latency_seconds_sum") - 0.001500004) < 1e-12);
    assert_int_equal(sample_int(text, "mb_latency_seconds_count"), 3);
    free(text);
    mb_metrics_destroy(m);
}

static void test_pointers_stay_valid_as_registry_grows(void **state)
{
    (void)state;
    enum { N = 200 };
    mb_metrics *m = new_registry();
    mb_counter *cs[N];
    char name[32];
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof name, "c%d_total", i);
        assert_int_equal(mb_metrics_counter(m, name, "A counter.", NULL, &cs[i], NULL), MB_OK);
        mb_counter_add(cs[i], (uint64_t)i);
    }
    for (int i = 0; i < N; i++)
        mb_counter_add(cs[i], 1000);
    char *text = expose(m);
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof name, "c%d_total", i);
        assert_int_equal(sample_int(text, name), 1000 + i);
    }
    assert_int_equal(count_substr(text, "# TYPE "), N);
    free(text);
    mb_metrics_destroy(m);
}

/* ---- registration rules ---- */

static void test_valid_names_accepted(void **state)
{
    (void)state;
    const char *names[] = {"a", "_x", ":y", "A9_:z", "mb_http_requests_total", "x0"};
    mb_metrics *m = new_registry();
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        mb_counter *c = NULL;
        assert_int_equal(mb_metrics_counter(m, names[i], "h", NULL, &c, NULL), MB_OK);
        assert_non_null(c);
    }
    mb_metrics_destroy(m);
}

static void test_invalid_names_refused(void **state)
{
    (void)state;
    const char *bad[] = {"", "9lives", "0", "a-b", "a b", " a", "a\n", "é", "a.b", "a{b}", NULL};
    mb_metrics *m = new_registry();
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        mb_counter *c = NULL;
        mb_gauge *g = NULL;
        mb_histogram *h = NULL;
        mb_err err = {0};
        assert_int_equal(mb_metrics_counter(m, bad[i], "h", NULL, &c, &err), MB_EINVAL);
        assert_int_equal(err.code, MB_EINVAL);
        assert_true(err.msg[0] != '\0');
        assert_int_equal(mb_metrics_gauge(m, bad[i], "h", NULL, &g, NULL), MB_EINVAL);
        assert_int_equal(mb_metrics_histogram(m, bad[i], "h", NULL, 1.0, &h, NULL), MB_EINVAL);
    }
    /* On error nothing is registered. */
    char *text = expose(m);
    assert_string_equal(text, "");
    free(text);
    mb_metrics_destroy(m);
}

static void test_valid_labels_accepted(void **state)
{
    (void)state;
    const char *labels[] = {
        "a=\"x\"",
        "a=\"x\",b=\"y\"",
        "_k9=\"\"",
        "path=\"/a b/c\"",
        "q=\"say \\\"hi\\\" \\\\ \\n\"", /* escaped quote, backslash, newline */
    };
    mb_metrics *m = new_registry();
    for (size_t i = 0; i < sizeof labels / sizeof labels[0]; i++) {
        mb_counter *c = NULL;
        assert_int_equal(mb_metrics_counter(m, "n_total", "h", labels[i], &c, NULL), MB_OK);
        mb_counter_add(c, i + 1);
    }
    char *text = expose(m);
    /* Labels are rendered verbatim inside braces. */
    assert_int_equal(sample_int(text, "n_total{a=\"x\"}"), 1);
    assert_int_equal(sample_int(text, "n_total{a=\"x\",b=\"y\"}"), 2);
    assert_int_equal(sample_int(text, "n_total{_k9=\"\"}"), 3);
    assert_int_equal(sample_int(text, "n_total{path=\"/a b/c\"}"), 4);
    assert_int_equal(sample_int(text, "n_total{q=\"say \\\"hi\\\" \\\\ \\n\"}"), 5);
    free(text);
    mb_metrics_destroy(m);
}

static void test_invalid_labels_refused(void **state)
{
    (void)state;
    const char *bad[] = {
        "a=x",            /* missing quotes */
        "a=\"x",          /* unterminated */
        "a=\"x\ny\"",     /* raw newline */
        "a=\"\\t\"",      /* bad escape */
        "a=\"x\\\"",      /* backslash eats the closing quote */
        "=\"x\"",         /* empty label name */
        "1a=\"x\"",       /* name starts with a digit */
        "a-b=\"x\"",      /* '-' in name */
        "a=\"x\"b=\"y\"", /* missing comma */
        "a=\"x\" ",       /* trailing space */
        "{a=\"x\"}",      /* braces are not part of the list */
        "a",              /* no value */
        "a=",             /* no value */
    };
    mb_metrics *m = new_registry();
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        mb_counter *c = NULL;
        mb_gauge *g = NULL;
        mb_histogram *h = NULL;
        mb_err err = {0};
        assert_int_equal(mb_metrics_counter(m, "ok_total", "h", bad[i], &c, &err), MB_EINVAL);
        assert_int_equal(err.code, MB_EINVAL);
        assert_null(strchr(err.msg, '\n'));
        assert_int_equal(mb_metrics_gauge(m, "ok_gauge", "h", bad[i], &g, NULL), MB_EINVAL);
        assert_int_equal(mb_metrics_histogram(m, "ok_hist", "h", bad[i], 1.0, &h, NULL), MB_EINVAL);
    }
    char *text = expose(m);
    assert_string_equal(text, "");
    free(text);
    mb_metrics_destroy(m);
}

static void test_help_with_newline_refused(void **state)
{
    (void)state;
    mb_metrics *m = new_registry();
    mb_counter *c = NULL;
    assert_int_equal(mb_metrics_counter(m, "a_total", "two\nlines", NULL, &c, NULL), MB_EINVAL);
    char *text = expose(m);
    assert_string_equal(text, "");
    free(text);
    mb_metrics_destroy(m);
}

static void test_duplicate_name_and_labels(void **state)
{
    (void)state;
    mb_metrics *m = new_registry();
    mb_counter *c1 = NULL, *c2 = NULL, *c3 = NULL, *c4 = NULL;
    mb_err err = {0};
    assert_int_equal(mb_metrics_counter(m, "x_total", "h", NULL, &c1, NULL), MB_OK);
    assert_int_equal(mb_metrics_counter(m, "x_total", "h", NULL, &c2, &err), MB_EEXIST);
    assert_int_equal(err.code, MB_EEXIST);
    /* Empty labels are no labels. */
    assert_int_equal(mb_metrics_counter(m, "x_total", "h", "", &c2, NULL), MB_EEXIST);

    assert_int_equal(mb_metrics_counter(m, "x_total", "h", "k=\"1\"", &c3, NULL), MB_OK);
    assert_int_equal(mb_metrics_counter(m, "x_total", "h", "k=\"1\"", &c4, NULL), MB_EEXIST);
    assert_int_equal(mb_metrics_counter(m, "x_total", "h", "k=\"2\"", &c4, NULL), MB_OK);

    mb_histogram *h1 = NULL, *h2 = NULL;
    assert_int_equal(mb_metrics_histogram(m, "y", "h", "a=\"b\"", 1.0, &h1, NULL), MB_OK);
    assert_int_equal(mb_metrics_histogram(m, "y", "h", "a=\"b\"", 1.0, &h2, NULL), MB_EEXIST);

    /* The first registration is untouched and still the one shown. */
    mb_counter_add(c1, 7);
    char *text = expose(m);
    assert_int_equal(sample_int(text, "x_total"), 7);
    assert_int_equal(count_substr(text, "\nx_total "), 1);
    assert_int_equal(count_substr(text, "x_total{k=\"1\"} "), 1);
    assert_int_equal(count_substr(text, "y_count{a=\"b\"} "), 1);
    free(text);
    mb_metrics_destroy(m);
}

static void test_same_name_other_type(void **state)
{
    (void)state;
    mb_metrics *m = new_registry();
    mb_counter *c = NULL;
    mb_gauge *g = NULL;
    mb_histogram *h = NULL;
    mb_err err = {0};
    assert_int_equal(mb_metrics_counter(m, "thing", "h", NULL, &c, NULL), MB_OK);
    assert_int_equal(mb_metrics_gauge(m, "thing", "h", NULL, &g, &err), MB_EINVAL);
    assert_int_equal(err.code, MB_EINVAL);
    /* Other labels do not make another type acceptable. */
    assert_int_equal(mb_metrics_gauge(m, "thing", "h", "a=\"1\"", &g, NULL), MB_EINVAL);
    assert_int_equal(mb_metrics_histogram(m, "thing", "h", "a=\"1\"", 1.0, &h, NULL), MB_EINVAL);

    assert_int_equal(mb_metrics_gauge(m, "level", "h", "a=\"1\"", &g, NULL), MB_OK);
    assert_int_equal(mb_metrics_counter(m, "level", "h", NULL, &c, NULL), MB_EINVAL);

    char *text = expose(m);
    assert_int_equal(count_substr(text, "# TYPE thing counter\n"), 1);
    assert_int_equal(count_substr(text, "# TYPE level gauge\n"), 1);
    assert_int_equal(count_substr(text, "# TYPE "), 2);
    assert_int_equal(count_substr(text, "thing{"), 0);
    assert_int_equal(count_substr(text, "\nlevel "), 0);
    free(text);
    mb_metrics_destroy(m);
}

static void test_histogram_needs_positive_scale(void **state)
{
    (void)state;
    mb_metrics *m = new_registry();
    mb_histogram *h = NULL;
    assert_int_equal(mb_metrics_histogram(m, "h", "h", NULL, 0.0, &h, NULL), MB_EINVAL);
    assert_int_equal(mb_metrics_histogram(m, "h", "h", NULL, -1.0, &h, NULL), MB_EINVAL);
    assert_int_equal(mb_metrics_histogram(m, "h", "h", NULL, NAN, &h, NULL), MB_EINVAL);
    assert_int_equal(mb_metrics_histogram(m, "h", "h", NULL, 1.0, &h, NULL), MB_OK);
    mb_metrics_destroy(m);
}

/* A label list the parser accepts must not make the exposition unparsable.
 * A trailing comma is allowed by the Prometheus grammar, but a histogram
 * appends ",le=..." to the list, giving `{a="x",,le="1"}`, which Prometheus
 * rejects, failing the whole scrape. Either refusing the labels or rendering
 * them without the doubled comma is fine. */
static void test_labels_with_trailing_comma_render_valid(void **state)
{
    (void)state;
    mb_metrics *m = new_registry();
    mb_histogram *h = NULL;
    mb_status st = mb_metrics_histogram(m, "sz", "h", "a=\"x\",", 1.0, &h, NULL);
    char bad_line[128] = "";
    if (st == MB_OK) {
        mb_histogram_observe(h, 1);
        char *text = expose(m);
        const char *bad = strstr(text, ",,");
        if (bad != NULL) {
            while (bad > text && bad[-1] != '\n')
                bad--;
            snprintf(bad_line, sizeof bad_line, "%.*s", (int)strcspn(bad, "\n"), bad);
        }
        free(text);
    } else {
        assert_int_equal(st, MB_EINVAL);
    }
    mb_metrics_destroy(m);
    if (bad_line[0] != '\0')
        fail_msg("unparsable exposition line: %s", bad_line);
}

/* ---- histogram buckets ---- */

static void test_histogram_bucket_boundaries_in_text(void **state)
{
    (void)state;
    static const struct {
        uint64_t v;
        unsigned bucket; /* MB_HIST_BUCKETS: only +Inf changes */
    } steps[] = {
        {0, 0},     {1, 0},     {2, 1},
        {3, 2},     {4, 2},     {5, 3},
        {1024, 10}, {1025, 11}, {UINT64_MAX, MB_HIST_BUCKETS},
    };
    mb_metrics *m = new_registry();
    mb_histogram *h = NULL;
    assert_int_equal(mb_metrics_histogram(m, "h", "Sizes.", NULL, 1.0, &h, NULL), MB_OK);

    uint64_t model[MB_HIST_BUCKETS + 1] = {0};
    long long before[MB_HIST_BUCKETS + 1];
    char series[64];
    char *text = expose(m);
    for (unsigned i = 0; i < MB_HIST_BUCKETS; i++) {
        snprintf(series, sizeof series, "h_bucket{le=\"%llu\"}", 1ull << i);
        before[i] = sample_int(text, series);
        assert_int_equal(before[i], -1); /* empty: no finite bucket lines */
    }
    before[MB_HIST_BUCKETS] = sample_int(text, "h_bucket{le=\"+Inf\"}");
    assert_int_equal(before[MB_HIST_BUCKETS], 0);
    free(text);

    for (size_t s = 0; s < sizeof steps / sizeof steps[0]; s++) {
        assert_int_equal(expected_bucket(steps[s].v), steps[s].bucket);
        mb_histogram_observe(h, steps[s].v);
        model[steps[s].bucket]++;

        text = expose(m);
        unsigned top = 0;
        int any = 0;
        for (unsigned i = 0; i < MB_HIST_BUCKETS; i++) {
            if (model[i] != 0) {
                top = i;
                any = 1;
            }
        }
        uint64_t cum = 0;
        for (unsigned i = 0; i < MB_HIST_BUCKETS; i++) {
            cum += model[i];
            snprintf(series, sizeof series, "h_bucket{le=\"%llu\"}", 1ull << i);
            long long now = sample_int(text, series);
            if (!any || i > top) {
                assert_int_equal(now, -1);
                continue;
            }
            assert_int_equal(now, (long long)cum);
            /* Lines present before change exactly from the step's bucket up. */
            if (before[i] >= 0)
                assert_int_equal(now - before[i], i >= steps[s].bucket ? 1 : 0);
            before[i] = now;
        }
        long long inf = sample_int(text, "h_bucket{le=\"+Inf\"}");
        assert_int_equal(inf, before[MB_HIST_BUCKETS] + 1);
        assert_int_equal(inf, (long long)(s + 1));
        before[MB_HIST_BUCKETS] = inf;
        assert_int_equal(sample_int(text, "h_count"), (long long)(s + 1));
        /* Finite lines, then +Inf: nothing else named h_bucket. */
        assert_int_equal(count_substr(text, "h_bucket{"), (any ? top + 1 : 0) + 1);
        free(text);
    }
    mb_metrics_destroy(m);
}

static void test_histogram_bucket_edges_all_powers(void **state)
{
    (void)state;
    mb_histogram h;
    memset(&h, 0, sizeof h);
    h.unit_scale = 1.0;
    mb_histogram_snapshot s;
    for (unsigned k = 0; k < MB_HIST_BUCKETS; k++) {
        const uint64_t vals[] = {(1ull << k), (1ull << k) + 1, k > 1 ? (1ull << k) - 1 : 0};
        for (size_t j = 0; j < 3; j++) {
            mb_histogram_snapshot_get(&h, &s);
            uint64_t before[MB_HIST_BUCKETS + 1];
            memcpy(before, s.buckets, sizeof before);
            mb_histogram_observe(&h, vals[j]);
            mb_histogram_snapshot_get(&h, &s);
            unsigned want = expected_bucket(vals[j]);
            for (unsigned i = 0; i <= MB_HIST_BUCKETS; i++)
                assert_int_equal(s.buckets[i] - before[i], i == want ? 1 : 0);
        }
    }
    /* The documented edges: 2^36 is the last finite bound; above is +Inf. */
    assert_int_equal(expected_bucket(1ull << 36), 36);
    assert_int_equal(expected_bucket((1ull << 36) + 1), MB_HIST_BUCKETS);
    mb_histogram_snapshot_get(&h, &s);
    uint64_t inf = s.buckets[MB_HIST_BUCKETS];
    mb_histogram_observe(&h, (1ull << 36) + 1);
    mb_histogram_observe(&h, 1ull << 63);
    mb_histogram_snapshot_get(&h, &s);
    assert_int_equal(s.buckets[MB_HIST_BUCKETS], inf + 2);
}

static void test_histogram_sum_and_count(void **state)
{
    (void)state;
    mb_metrics *m = new_registry();
    mb_histogram *h = NULL;
    assert_int_equal(mb_metrics_histogram(m, "b", "h", "k=\"v\"", 1.0, &h, NULL), MB_OK);
    const uint64_t vals[] = {0, 1, 2, 3, 4, 5, 1024, 1025};
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++)
        mb_histogram_observe(h, vals[i]);
    char *text = expose(m);
    assert_true(sample_double(text, "b_sum{k=\"v\"}") == 2064.0);
    assert_int_equal(sample_int(text, "b_count{k=\"v\"}"), 8);
    assert_int_equal(sample_int(text, "b_bucket{k=\"v\",le=\"+Inf\"}"), 8);
    free(text);

    mb_histogram_snapshot s;
    mb_histogram_snapshot_get(h, &s);
    assert_int_equal(s.count, 8);
    assert_int_equal(s.sum, 2064);
    mb_metrics_destroy(m);
}

/* Compare every finite le of histogram `name` in `text` with 2^i * scale and
 * its _sum with `sum`, as a scraper reads them (parsed as doubles). Appends a
 * description of each difference to `problems`; returns the number of finite
 * bucket lines. */
static unsigned check_bounds(const char *text, const char *name, double scale, double sum,
                             char *problems, size_t size)
{
    char prefix[64], series[64];
    snprintf(prefix, sizeof prefix, "%s_bucket{le=\"", name);
    unsigned seen = 0;
    for (const char *p = strstr(text, prefix); p != NULL; p = strstr(p + 1, prefix)) {
        const char *v = p + strlen(prefix);
        if (strncmp(v, "+Inf", 4) == 0)
            continue;
        double want = ldexp(1.0, (int)seen) * scale;
        if (strtod(v, NULL) != want) {
            size_t used = strlen(problems);
            snprintf(problems + used, size - used, " %s le=\"%.*s\" (want %.17g);", name,
                     (int)strcspn(v, "\""), v, want);
        }
        seen++;
    }
    snprintf(series, sizeof series, "%s_sum", name);
    const char *got = sample(text, series);
    if (got == NULL || strtod(got, NULL) != sum) {
        size_t used = strlen(problems);
        snprintf(problems + used, size - used, " %s %.*s (want %.17g);", series,
                 got ? (int)strcspn(got, "\n") : 6, got ? got : "absent", sum);
    }
    return seen;
}

/* The le of every finite bucket must be its real bound 2^i units times the
 * scale, and _sum the real sum: a scraper parses them as numbers. Bounds of
 * 2^30 and up (1.07 s and up in seconds, 1 GiB and up in bytes) and sums with
 * more than nine significant digits are the ones at risk. */
static void test_histogram_large_bounds_and_sums_exact(void **state)
{
    (void)state;
    mb_metrics *m = new_registry();
    mb_histogram *bytes = NULL, *secs = NULL;
    assert_int_equal(mb_metrics_histogram(m, "big_bytes", "h", NULL, 1.0, &bytes, NULL), MB_OK);
    assert_int_equal(mb_metrics_histogram(m, "slow_seconds", "h", NULL, 1e-9, &secs, NULL), MB_OK);
    mb_histogram_observe(bytes, 1000000001); /* ~1 GB, bucket 30 */
    mb_histogram_observe(bytes, 1ull << 36); /* last finite bucket */
    mb_histogram_observe(secs, 1ull << 31);  /* ~2.1 s, bucket 31 */

    char *text = expose(m);
    char problems[4096] = "";
    unsigned n_bytes = check_bounds(text, "big_bytes", 1.0, 1000000001.0 + 68719476736.0, problems,
                                    sizeof problems);
    unsigned n_secs =
        check_bounds(text, "slow_seconds", 1e-9, 2147483648.0 * 1e-9, problems, sizeof problems);
    free(text);
    mb_metrics_destroy(m);
    assert_int_equal(n_bytes, 37);
    assert_int_equal(n_secs, 32);
    if (problems[0] != '\0')
        fail_msg("inexact exposition:%s", problems);
}

/* ---- quantiles ---- */

static void test_quantile_empty_is_zero(void **state)
{
    (void)state;
    mb_histogram h;
    memset(&h, 0, sizeof h);
    mb_histogram_snapshot s;
    mb_histogram_snapshot_get(&h, &s);
    assert_int_equal(s.count, 0);
    assert_true(mb_histogram_quantile(&s, 0.5) == 0.0);
    assert_true(mb_histogram_quantile(&s, 0.99) == 0.0);
    assert_true(mb_histogram_quantile(&s, 1.0) == 0.0);
}

static void test_quantile_constant_values(void **state)
{
    (void)state;
    mb_histogram h;
    memset(&h, 0, sizeof h);
    for (int i = 0; i < 1000; i++)
        mb_histogram_observe(&h, 100);
    mb_histogram_snapshot s;
    mb_histogram_snapshot_get(&h, &s);
    assert_int_equal(s.count, 1000);
    assert_int_equal(s.sum, 100000);
    const double qs[] = {0.01, 0.5, 0.9, 0.99, 1.0};
    for (size_t i = 0; i < sizeof qs / sizeof qs[0]; i++) {
        double v = mb_histogram_quantile(&s, qs[i]);
        assert_true(v > 64.0 && v <= 128.0);
    }
}

static void test_quantile_uniform(void **state)
{
    (void)state;
    mb_histogram h;
    memset(&h, 0, sizeof h);
    for (uint64_t v = 1; v <= 1000; v++)
        mb_histogram_observe(&h, v);
    mb_histogram_snapshot s;
    mb_histogram_snapshot_get(&h, &s);
    assert_int_equal(s.count, 1000);
    assert_int_equal(s.sum, 500500);

    double p50 = mb_histogram_quantile(&s, 0.5);
    double p90 = mb_histogram_quantile(&s, 0.9);
    double p99 = mb_histogram_quantile(&s, 0.99);
    double p100 = mb_histogram_quantile(&s, 1.0);
    /* The true p50 (500) is in (256, 512]; p99 (990) in (512, 1024]. */
    assert_true(p50 > 256.0 && p50 <= 512.0);
    assert_true(p99 > 512.0 && p99 <= 1024.0);
    /* Never off by more than the width of the holding bucket. */
    assert_true(fabs(p50 - 500.0) <= 256.0);
    assert_true(fabs(p99 - 990.0) <= 512.0);
    assert_true(p50 <= p90 && p90 <= p99 && p99 <= p100);
    assert_true(p100 <= 1024.0);
}

static void test_quantile_overflow_bucket(void **state)
{
    (void)state;
    mb_histogram h;
    memset(&h, 0, sizeof h);
    mb_histogram_observe(&h, UINT64_MAX);
    mb_histogram_observe(&h, (1ull << 36) + 1);
    mb_histogram_snapshot s;
    mb_histogram_snapshot_get(&h, &s);
    double v = mb_histogram_quantile(&s, 0.5);
    /* All we know of +Inf observations is that they exceed 2^36. */
    assert_true(isfinite(v));
    assert_true(v >= ldexp(1.0, 36));
}

/* ---- concurrency ---- */

#define THREADS    4
#define PER_THREAD 100000

struct worker {
    mb_counter *c;
    mb_gauge *g;
    mb_histogram *h;
    unsigned id;
};

static void *worker_main(void *p)
{
    struct worker *w = p;
    for (unsigned i = 0; i < PER_THREAD; i++) {
        mb_counter_add(w->c, 1);
        mb_gauge_add(w->g, (i & 1) ? -1 : 3);
        mb_histogram_observe(w->h, (uint64_t)(i % 3000) + w->id);
    }
    return NULL;
}

static void test_concurrent_updates_exact_totals(void **state)
{
    (void)state;
    mb_metrics *m = new_registry();
    mb_counter *c = NULL;
    mb_gauge *g = NULL;
    mb_histogram *h = NULL;
    assert_int_equal(mb_metrics_counter(m, "ops_total", "h", NULL, &c, NULL), MB_OK);
    assert_int_equal(mb_metrics_gauge(m, "level", "h", NULL, &g, NULL), MB_OK);
    assert_int_equal(mb_metrics_histogram(m, "val", "h", NULL, 1.0, &h, NULL), MB_OK);

    pthread_t th[THREADS];
    struct worker w[THREADS];
    for (unsigned t = 0; t < THREADS; t++) {
        w[t] = (struct worker){c, g, h, t};
        assert_int_equal(pthread_create(&th[t], NULL, worker_main, &w[t]), 0);
    }
    for (unsigned t = 0; t < THREADS; t++)
        assert_int_equal(pthread_join(th[t], NULL), 0);

    uint64_t want_buckets[MB_HIST_BUCKETS + 1] = {0};
    uint64_t want_sum = 0;
    for (unsigned t = 0; t < THREADS; t++) {
        for (unsigned i = 0; i < PER_THREAD; i++) {
            uint64_t v = (uint64_t)(i % 3000) + t;
            want_buckets[expected_bucket(v)]++;
            want_sum += v;
        }
    }
    const uint64_t total = (uint64_t)THREADS * PER_THREAD;
    assert_int_equal(mb_counter_get(c), total);
    assert_int_equal(mb_gauge_get(g), (int64_t)THREADS * (PER_THREAD / 2) * 2);
    mb_histogram_snapshot s;
    mb_histogram_snapshot_get(h, &s);
    assert_int_equal(s.count, total);
    assert_int_equal(s.sum, want_sum);
    for (unsigned i = 0; i <= MB_HIST_BUCKETS; i++)
        assert_int_equal(s.buckets[i], want_buckets[i]);

    char *text = expose(m);
    assert_int_equal(sample_int(text, "ops_total"), (long long)total);
    assert_int_equal(sample_int(text, "val_count"), (long long)total);
    assert_true(sample_double(text, "val_sum") == (double)want_sum);
    assert_int_equal(sample_int(text, "val_bucket{le=\"+Inf\"}"), (long long)total);
    free(text);
    mb_metrics_destroy(m);
}

struct registrar {
    mb_metrics *m;
    _Atomic int done;
    int failures;
};

static void *registrar_main(void *p)
{
    struct registrar *r = p;
    char name[32];
    for (int i = 0; i < 300; i++) {
        mb_histogram *h = NULL;
        mb_counter *c = NULL;
        snprintf(name, sizeof name, "h%d_seconds", i);
        if (mb_metrics_histogram(r->m, name, "h", NULL, 1e-9, &h, NULL) != MB_OK)
            r->failures++;
        else
            mb_histogram_observe(h, 1);
        snprintf(name, sizeof name, "c%d_total", i);
        if (mb_metrics_counter(r->m, name, "c", NULL, &c, NULL) != MB_OK)
            r->failures++;
    }
    r->done = 1;
    return NULL;
}

/* Registering on one thread while another formats: every exposition is well
 * formed (each HELP is followed by its TYPE) and only ever grows. */
static void test_format_while_registering(void **state)
{
    (void)state;
    struct registrar r = {new_registry(), 0, 0};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, registrar_main, &r), 0);
    size_t prev_families = 0;
    int rounds = 0;
    while (!r.done || rounds == 0) {
        char *text = expose(r.m);
        size_t families = count_substr(text, "# HELP ");
        assert_int_equal(count_substr(text, "# TYPE "), families);
        assert_true(families >= prev_families);
        prev_families = families;
        for (const char *p = strstr(text, "# HELP "); p != NULL; p = strstr(p + 1, "# HELP ")) {
            const char *name = p + 7;
            size_t n = strcspn(name, " ");
            const char *next = strchr(p, '\n');
            assert_non_null(next);
            assert_int_equal(strncmp(next + 1, "# TYPE ", 7), 0);
            assert_int_equal(strncmp(next + 8, name, n), 0);
            assert_true(next[8 + n] == ' ');
        }
        /* A histogram whose unit scale was read before registration set it
         * would show bounds of 0. */
        assert_int_equal(count_substr(text, "le=\"0\""), 0);
        free(text);
        rounds++;
    }
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(r.failures, 0);
    char *text = expose(r.m);
    assert_int_equal(count_substr(text, "# TYPE "), 600);
    assert_int_equal(count_substr(text, "_bucket{le=\"1e-09\"} 1\n"), 300);
    free(text);
    mb_metrics_destroy(r.m);
}

/* ---- strbuf: the bounded buffer behind the exposition ---- */

static void test_strbuf_refuses_past_max_unchanged(void **state)
{
    (void)state;
    mb__strbuf b;
    mb__strbuf_init(&b, 10);
    assert_int_equal(mb__strbuf_append(&b, "hello", 5), MB_OK);
    assert_int_equal(mb__strbuf_append(&b, "world!", 6), MB_ETOOBIG);
    assert_int_equal(b.len, 5);
    assert_string_equal(b.data, "hello");
    assert_int_equal(mb__strbuf_appendf(&b, "%s", "world!"), MB_ETOOBIG);
    assert_int_equal(b.len, 5);
    assert_string_equal(b.data, "hello");
    /* Exactly up to max is allowed; not one byte more. */
    assert_int_equal(mb__strbuf_appendf(&b, "%s", "world"), MB_OK);
    assert_int_equal(b.len, 10);
    assert_string_equal(b.data, "helloworld");
    assert_int_equal(mb__strbuf_append(&b, "x", 1), MB_ETOOBIG);
    assert_int_equal(mb__strbuf_appendf(&b, "x"), MB_ETOOBIG);
    assert_int_equal(mb__strbuf_append(&b, "", 0), MB_OK);
    assert_int_equal(b.len, 10);
    assert_string_equal(b.data, "helloworld");
    mb__strbuf_free(&b);
}

static void test_strbuf_long_appendf_past_max_unchanged(void **state)
{
    (void)state;
    char big[600];
    memset(big, 'q', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    mb__strbuf b;
    mb__strbuf_init(&b, 500);
    assert_int_equal(mb__strbuf_appendf(&b, "pre:"), MB_OK);
    assert_int_equal(mb__strbuf_appendf(&b, "%s", big), MB_ETOOBIG);
    assert_int_equal(b.len, 4);
    assert_string_equal(b.data, "pre:");
    mb__strbuf_free(&b);
}

static void test_strbuf_appendf_long_strings(void **state)
{
    (void)state;
    const size_t sizes[] = {255, 256, 257, 1000, 5000};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        size_t n = sizes[k];
        char *s = malloc(n + 1);
        assert_non_null(s);
        for (size_t i = 0; i < n; i++)
            s[i] = (char)('a' + i % 26);
        s[n] = '\0';

        mb__strbuf b;
        mb__strbuf_init(&b, 4 + n + 4);
        assert_int_equal(mb__strbuf_appendf(&b, "pre:"), MB_OK);
        assert_int_equal(mb__strbuf_appendf(&b, "%s", s), MB_OK);
        assert_int_equal(mb__strbuf_appendf(&b, ":%d", 42), MB_OK);
        assert_int_equal(b.len, 4 + n + 3);
        assert_int_equal(strlen(b.data), b.len);
        assert_memory_equal(b.data, "pre:", 4);
        assert_memory_equal(b.data + 4, s, n);
        assert_string_equal(b.data + 4 + n, ":42");

        size_t len = 0;
        char *out = mb__strbuf_steal(&b, &len);
        assert_non_null(out);
        assert_int_equal(len, 4 + n + 3);
        assert_int_equal(strlen(out), len);
        free(out);
        free(s);
    }
}

static void test_strbuf_steal_empty_and_reset(void **state)
{
    (void)state;
    mb__strbuf b;
    mb__strbuf_init(&b, 64);
    size_t len = 99;
    char *out = mb__strbuf_steal(&b, &len);
    assert_non_null(out);
    assert_string_equal(out, "");
    assert_int_equal(len, 0);
    free(out);

    /* After a steal the buffer is empty and usable again, same bound. */
    assert_int_equal(mb__strbuf_append(&b, "abc", 3), MB_OK);
    out = mb__strbuf_steal(&b, NULL);
    assert_string_equal(out, "abc");
    free(out);
    assert_int_equal(b.len, 0);
    assert_null(b.data);
    out = mb__strbuf_steal(&b, &len);
    assert_string_equal(out, "");
    assert_int_equal(len, 0);
    free(out);
    char fill[65];
    memset(fill, 'z', 64);
    assert_int_equal(mb__strbuf_append(&b, fill, 64), MB_OK);
    assert_int_equal(mb__strbuf_append(&b, fill, 1), MB_ETOOBIG);
    mb__strbuf_free(&b);
    assert_int_equal(b.len, 0);
    assert_null(b.data);
}

/* Sampled timings: one call in N per thread is timed, in every nanosecond
 * histogram of the registry, present and future; size histograms are not
 * sampled; N must be a power of two in 1..1024. */
static void test_timing_sample(void **state)
{
    (void)state;
    mb_metrics *m = NULL;
    mb_histogram *before = NULL, *after = NULL, *sizes = NULL;
    assert_int_equal(mb_metrics_create(&m, NULL), MB_OK);
    assert_int_equal(mb_metrics_histogram(m, "t_before_seconds", "h", NULL, 1e-9, &before, NULL),
                     MB_OK);
    assert_int_equal(mb_metrics_histogram(m, "sizes_bytes", "h", NULL, 1, &sizes, NULL), MB_OK);
    /* Default: every call. */
    for (int i = 0; i < 100; i++)
        assert_true(mb_histogram_sample(before));
    mb_err err = {MB_OK, ""};
    assert_int_equal(mb_metrics_set_timing_sample(m, 3, &err), MB_EINVAL);
    assert_non_null(strstr(err.msg, "power of two"));
    assert_int_equal(mb_metrics_set_timing_sample(m, 0, NULL), MB_EINVAL);
    assert_int_equal(mb_metrics_set_timing_sample(m, 2048, NULL), MB_EINVAL);
    assert_int_equal(mb_metrics_set_timing_sample(m, 8, NULL), MB_OK);
    assert_int_equal(mb_metrics_histogram(m, "t_after_seconds", "h", NULL, 1e-9, &after, NULL),
                     MB_OK);
    int hits_before = 0, hits_after = 0, hits_sizes = 0;
    for (int i = 0; i < 8000; i++) {
        hits_before += mb_histogram_sample(before);
        hits_after += mb_histogram_sample(after);
        hits_sizes += mb_histogram_sample(sizes);
    }
    /* About one call in 8 of each timing histogram, even though the calls
     * alternate (a counter shared by both would starve one of them). */
    assert_true(hits_before > 700 && hits_before < 1300);
    assert_true(hits_after > 700 && hits_after < 1300);
    assert_int_equal(hits_sizes, 8000);
    assert_int_equal(mb_metrics_set_timing_sample(m, 1, NULL), MB_OK);
    for (int i = 0; i < 10; i++)
        assert_true(mb_histogram_sample(after));
    mb_metrics_destroy(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create_destroy),
        cmocka_unit_test(test_format_null_arguments),
        cmocka_unit_test(test_counter_gauge_update_and_show),
        cmocka_unit_test(test_exposition_exact_text),
        cmocka_unit_test(test_exposition_seconds_histogram),
        cmocka_unit_test(test_pointers_stay_valid_as_registry_grows),
        cmocka_unit_test(test_valid_names_accepted),
        cmocka_unit_test(test_invalid_names_refused),
        cmocka_unit_test(test_valid_labels_accepted),
        cmocka_unit_test(test_invalid_labels_refused),
        cmocka_unit_test(test_help_with_newline_refused),
        cmocka_unit_test(test_duplicate_name_and_labels),
        cmocka_unit_test(test_same_name_other_type),
        cmocka_unit_test(test_histogram_needs_positive_scale),
        cmocka_unit_test(test_labels_with_trailing_comma_render_valid),
        cmocka_unit_test(test_histogram_bucket_boundaries_in_text),
        cmocka_unit_test(test_histogram_bucket_edges_all_powers),
        cmocka_unit_test(test_histogram_sum_and_count),
        cmocka_unit_test(test_histogram_large_bounds_and_sums_exact),
        cmocka_unit_test(test_quantile_empty_is_zero),
        cmocka_unit_test(test_quantile_constant_values),
        cmocka_unit_test(test_quantile_uniform),
        cmocka_unit_test(test_quantile_overflow_bucket),
        cmocka_unit_test(test_concurrent_updates_exact_totals),
        cmocka_unit_test(test_format_while_registering),
        cmocka_unit_test(test_strbuf_refuses_past_max_unchanged),
        cmocka_unit_test(test_strbuf_long_appendf_past_max_unchanged),
        cmocka_unit_test(test_strbuf_appendf_long_strings),
        cmocka_unit_test(test_strbuf_steal_empty_and_reset),
        cmocka_unit_test(test_timing_sample),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
