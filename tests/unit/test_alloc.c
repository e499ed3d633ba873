/* SPDX-License-Identifier: MIT */
/*
 * test_alloc: allocation-failure torture tests (curl's torture mode, sqlite's
 * test_malloc.c) through the allocator hook of src/lib/alloc.h.
 *
 * Each scenario is a function that does a whole piece of work from nothing
 * (create, use, destroy) and stops at the first call that fails, undoing what
 * it made. The driver runs it with the n-th allocation failing, and every
 * later one, for n = 0, 1, 2, ... until a run makes no more than n
 * allocations, that is until it succeeds without meeting the failure. At
 * every step the scenario must return MB_OK (a failure the code may absorb,
 * such as a shrinking realloc) or MB_ENOMEM, never crash; where it fails it
 * checks, with the hook paused, that no partial state is visible: the output
 * argument is untouched, a shared metrics registry holds nothing of the
 * failed call, and the very same call succeeds when retried (no MB_EEXIST
 * from a half-registered object). Leaks are caught by LeakSanitizer, which
 * runs in CI (-DMB_SANITIZE=address,undefined).
 */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "alloc.h"
#include "json.h"
#include "mudbus/breaker.h"
#include "mudbus/config.h"
#include "mudbus/connstate.h"
#include "mudbus/dlq.h"
#include "mudbus/metrics.h"
#include "mudbus/retry.h"
#include "mudbus/schema.h"
#include "mudbus/subject.h"
#include "mudbus/timerq.h"

/* ---- the driver ---- */

/* A run stops being counted when the scenario pauses the hook to look at its
 * state; the count at that moment says whether the failure was met. */
static bool g_paused;
static long g_paused_count;

/* Stop failing allocations, for checks after a failed call; the rest of the
 * run must not depend on failures. */
static void hook_pause(void)
{
    if (g_paused)
        return;
    g_paused_count = mb__alloc_count();
    g_paused = true;
    mb__alloc_fail_after(-1);
}

/* True if st is an allowed outcome under the hook: MB_OK or MB_ENOMEM. */
#define CHECK_OOM(st, what)                                                                        \
    do {                                                                                           \
        if ((st) != MB_OK && (st) != MB_ENOMEM)                                                    \
            fail_msg("%s: %s under an allocation failure (want MB_OK or MB_ENOMEM)", (what),       \
                     mb_status_name(st));                                                          \
    } while (0)

#define MAX_STEPS 200000L

/* Run `fn` at every failure point; returns the number of points. */
static long torture(const char *name, mb_status (*fn)(void))
{
    long n;
    long absorbed = 0;
    for (n = 0; n < MAX_STEPS; n++) {
        g_paused = false;
        mb__alloc_fail_after(n);
        mb_status st = fn();
        long count = g_paused ? g_paused_count : mb__alloc_count();
        mb__alloc_fail_after(-1);
        CHECK_OOM(st, name);
        if (count <= n) {
            /* The failure point lies beyond the run: a clean success. */
            if (st != MB_OK)
                fail_msg("%s: %s with no allocation failing (%ld allocations)", name,
                         mb_status_name(st), count);
            break;
        }
        if (st == MB_OK)
            absorbed++;
    }
    if (n == MAX_STEPS)
        fail_msg("%s: still failing after %ld steps", name, n);
    printf("[ alloc    ] %-34s %5ld failure points (%ld absorbed)\n", name, n, absorbed);
    return n;
}

/* Does the exposition of m mention `needle`? Hook paused. */
static bool metrics_mention(mb_metrics *m, const char *needle)
{
    char *text = NULL;
    size_t len = 0;
    assert_int_equal(mb_metrics_format(m, &text, &len, NULL), MB_OK);
    bool found = strstr(text, needle) != NULL;
    free(text);
    return found;
}

/* ---- scenarios ---- */

/* Register metric i of the metrics scenario: counters, gauges and histograms
 * in turn, labelled so that families hold several series. */
static mb_status reg_metric(mb_metrics *m, int i, char *name, size_t cap)
{
    char labels[32];
    snprintf(labels, sizeof labels, "k=\"v%d\"", i);
    mb_status st;
    switch (i % 3) {
    case 0: {
        mb_counter *c = NULL;
        snprintf(name, cap, "t_counter_%d_total", i / 6);
        st = mb_metrics_counter(m, name, "A counter.", labels, &c, NULL);
        assert_true((st == MB_OK) == (c != NULL));
        break;
    }
    case 1: {
        mb_gauge *g = NULL;
        snprintf(name, cap, "t_gauge_%d", i);
        st = mb_metrics_gauge(m, name, "A gauge.", NULL, &g, NULL);
        assert_true((st == MB_OK) == (g != NULL));
        break;
    }
    default: {
        mb_histogram *h = NULL;
        snprintf(name, cap, "t_hist_%d_seconds", i);
        st = mb_metrics_histogram(m, name, "A histogram.", labels, 1e-9, &h, NULL);
        assert_true((st == MB_OK) == (h != NULL));
        break;
    }
    }
    return st;
}

static mb_status sc_metrics(void)
{
    mb_metrics *m = NULL;
    mb_status st = mb_metrics_create(&m, NULL);
    if (st != MB_OK) {
        hook_pause();
        assert_null(m);
        return st;
    }
    /* 40 metrics: the entry array grows past its first 32 slots. */
    for (int i = 0; i < 40 && st == MB_OK; i++) {
        char name[64], series[80];
        st = reg_metric(m, i, name, sizeof name);
        if (st != MB_OK) {
            hook_pause();
            snprintf(series, sizeof series, "k=\"v%d\"", i);
            assert_false(i % 3 != 1 && metrics_mention(m, series));
            assert_false(i % 3 == 1 && metrics_mention(m, name));
            /* Nothing half-registered: the same call succeeds now. */
            assert_int_equal(reg_metric(m, i, name, sizeof name), MB_OK);
            assert_true(metrics_mention(m, name));
        }
    }
    if (st == MB_OK) {
        char *text = (char *)&st;
        size_t len = 12345;
        st = mb_metrics_format(m, &text, &len, NULL);
        if (st == MB_OK) {
            assert_non_null(strstr(text, "t_hist_38_seconds_bucket{k=\"v38\",le="));
            assert_non_null(strstr(text, "t_counter_6_total{k=\"v39\"} 0"));
            assert_int_equal(strlen(text), len);
            free(text);
        } else {
            hook_pause();
            assert_ptr_equal(text, (char *)&st);
            assert_int_equal(len, 12345);
        }
    }
    mb_metrics_destroy(m);
    return st;
}

static mb_status sc_subject(void)
{
    mb_metrics *m = NULL;
    mb_subject_registry *r = NULL;
    mb_status st = mb_metrics_create(&m, NULL);
    if (st != MB_OK)
        return st;
    st = mb_subject_registry_create(m, &r, NULL);
    if (st != MB_OK) {
        hook_pause();
        assert_null(r);
        assert_false(metrics_mention(m, "mudbus_subject_"));
        assert_int_equal(mb_subject_registry_create(m, &r, NULL), MB_OK);
        mb_subject_registry_destroy(r);
        mb_metrics_destroy(m);
        return st;
    }
    static const char *const names[] = {"t_one", "t_two", "t_three"};
    static const char *const pats[] = {"test.one.{x}", "test.two.{x}.{y}",
                                       "test.three.{a}.{b}.{c}"};
    for (size_t i = 0; i < 3 && st == MB_OK; i++) {
        size_t before = mb_subject_count(r);
        st = mb_subject_register(r, names[i], pats[i], MB_SCHEMA_EVENT, NULL);
        if (st != MB_OK) {
            hook_pause();
            assert_int_equal(st, MB_ENOMEM);
            assert_int_equal(mb_subject_count(r), before);
            assert_int_equal(mb_subject_register(r, names[i], pats[i], MB_SCHEMA_EVENT, NULL),
                             MB_OK);
            assert_int_equal(mb_subject_count(r), before + 1);
        }
    }
    if (st == MB_OK) {
        char buf[256];
        size_t len = 0;
        mb_subject_param p = {"x", "abc"};
        st = mb_subject_build(r, "t_one", &p, 1, buf, sizeof buf, &len, NULL, NULL);
        if (st == MB_OK)
            assert_string_equal(buf, "test.one.abc");
    }
    if (st == MB_OK) {
        mb_subject_info info;
        st = mb_subject_check(r, "test.one.abc", 12, &info, NULL, NULL);
        if (st == MB_OK)
            assert_string_equal(info.name, "t_one");
    }
    mb_subject_registry_destroy(r);
    mb_metrics_destroy(m);
    return st;
}

/* An event whose event_data has 100 keys: the duplicate-key set grows past
 * its inline slots. */
static char g_event[8192];
static char g_event_data[4096];
static size_t g_event_len, g_event_data_len;

static void make_event(void)
{
    size_t o = 0;
    o += (size_t)snprintf(g_event_data + o, sizeof g_event_data - o, "{");
    for (int i = 0; i < 100; i++)
        o += (size_t)snprintf(g_event_data + o, sizeof g_event_data - o, "%s\"key_%03d\":%d",
                              i ? "," : "", i, i);
    o += (size_t)snprintf(g_event_data + o, sizeof g_event_data - o, "}");
    g_event_data_len = o;
    int n = snprintf(g_event, sizeof g_event,
                     "{\"message_id\":\"evt-1\",\"timestamp\":\"2026-01-13T10:00:00Z\","
                     "\"event_type\":\"player_entered_room\",\"event_data\":%s,"
                     "\"room_id\":null,\"player_id\":\"p-1\",\"sender_id\":null,"
                     "\"sender_name\":\"Game\"}",
                     g_event_data);
    assert_true(n > 0 && (size_t)n < sizeof g_event);
    g_event_len = (size_t)n;
}

static mb_status sc_schema(void)
{
    mb_metrics *m = NULL;
    mb_schema *s = NULL;
    mb_status st = mb_metrics_create(&m, NULL);
    if (st != MB_OK)
        return st;
    mb_schema_opts o = {.metrics = m};
    st = mb_schema_create(&o, &s, NULL);
    if (st != MB_OK) {
        hook_pause();
        assert_null(s);
        assert_false(metrics_mention(m, "mudbus_schema_"));
        assert_int_equal(mb_schema_create(&o, &s, NULL), MB_OK);
        mb_schema_destroy(s);
        mb_metrics_destroy(m);
        return st;
    }
    mb_schema_kind kind = MB_SCHEMA_AUTO;
    st = mb_schema_validate(s, MB_SCHEMA_AUTO, g_event, g_event_len, &kind, NULL);
    if (st == MB_OK)
        assert_int_equal(kind, MB_SCHEMA_EVENT);
    mb_schema_destroy(s);
    mb_metrics_destroy(m);
    return st;
}

/* mb__json_check of values that need the heap: 100 nested arrays (the level
 * stack grows past its 32 inline levels), an object of 100 keys, and a real
 * number longer than the overflow check's stack buffer. */
static char g_deep[512];
static char g_long_real[256];

static void make_json(void)
{
    size_t o = 0;
    for (int i = 0; i < 100; i++)
        g_deep[o++] = '[';
    g_deep[o++] = '1';
    for (int i = 0; i < 100; i++)
        g_deep[o++] = ']';
    g_deep[o] = '\0';
    o = 0;
    g_long_real[o++] = '1';
    g_long_real[o++] = '.';
    for (int i = 0; i < 150; i++)
        g_long_real[o++] = '5';
    memcpy(g_long_real + o, "e300", 5);
}

static mb_status sc_json(void)
{
    mb_status st = mb__json_check(g_deep, strlen(g_deep), NULL);
    if (st == MB_OK)
        st = mb__json_check(g_event_data, g_event_data_len, NULL);
    if (st == MB_OK)
        st = mb__json_check(g_long_real, strlen(g_long_real), NULL);
    return st;
}

static mb_status sc_encode(void)
{
    static char buf[8192];
    size_t len = 0;
    mb_chat_msg c = {
        .message_id = "a3f1c2d4e5b64789a0b1c2d3e4f5a6b7",
        .timestamp_ms = 1768298400123,
        .sender_id = "4f9a2c1e-7b3d-4e8a-9c5f-1d2e3f4a5b6c",
        .sender_name = "Armitage",
        .channel = MB_CHANNEL_SAY,
        .content = "Has anyone seen the Necronomicon? \xc3\x89tienne said so.",
        .room_id = "earth_arkhamcity_northside_derby_high",
        .speaker_kind = MB_SPEAKER_PLAYER,
    };
    mb_status st = mb_chat_encode(NULL, &c, buf, sizeof buf, &len, NULL);
    if (st != MB_OK)
        return st;
    assert_non_null(strstr(buf, "\"sender_name\":\"Armitage\""));
    mb_event_msg e = {
        .message_id = "evt-2",
        .timestamp_ms = 1768298400000,
        .event_type = "player_entered_room",
        .event_data = g_event_data,
        .event_data_len = g_event_data_len,
    };
    return mb_event_encode(NULL, &e, buf, sizeof buf, &len, NULL);
}

static mb_status sc_retry(void)
{
    mb_metrics *m = NULL;
    mb_retry_budget *b = NULL;
    mb_status st = mb_metrics_create(&m, NULL);
    if (st != MB_OK)
        return st;
    mb_retry_budget_opts o = {.metrics = m, .labels = "client=\"t\""};
    st = mb_retry_budget_create(&o, &b, NULL);
    if (st != MB_OK) {
        hook_pause();
        assert_null(b);
        assert_false(metrics_mention(m, "mudbus_retry_budget"));
        assert_int_equal(mb_retry_budget_create(&o, &b, NULL), MB_OK);
    }
    mb_retry_budget_destroy(b);
    mb_metrics_destroy(m);
    return st;
}

static size_t g_cancelled;

static void on_timer(void *arg, mb_timer_event ev)
{
    (void)arg;
    if (ev == MB_TIMER_CANCELLED)
        g_cancelled++;
}

static mb_status sc_timerq(void)
{
    mb_metrics *m = NULL;
    mb_timerq *q = NULL;
    mb_status st = mb_metrics_create(&m, NULL);
    if (st != MB_OK)
        return st;
    mb_timerq_opts o = {.metrics = m, .labels = "q=\"t\""};
    st = mb_timerq_create(&o, &q, NULL);
    if (st != MB_OK) {
        hook_pause();
        assert_null(q);
        assert_false(metrics_mention(m, "mudbus_timerq_"));
        assert_int_equal(mb_timerq_create(&o, &q, NULL), MB_OK);
        mb_timerq_destroy(q);
        mb_metrics_destroy(m);
        return st;
    }
    size_t added = 0;
    for (int i = 0; i < 1000 && st == MB_OK; i++) {
        mb_timer_id id;
        st = mb_timerq_add(q, (uint64_t)(1000 - i) * 1000000000u, on_timer, NULL, &id);
        if (st == MB_OK) {
            added++;
        } else {
            hook_pause();
            assert_int_equal(mb_timerq_size(q), added);
            assert_int_equal(mb_timerq_add(q, 1, on_timer, NULL, &id), MB_OK);
            added++;
        }
    }
    assert_int_equal(mb_timerq_size(q), added);
    g_cancelled = 0;
    mb_timerq_destroy(q);
    assert_int_equal(g_cancelled, added);
    mb_metrics_destroy(m);
    return st;
}

static mb_status sc_breaker(void)
{
    mb_metrics *m = NULL;
    mb_breaker *b = NULL;
    mb_status st = mb_metrics_create(&m, NULL);
    if (st != MB_OK)
        return st;
    /* A count window and a time window: two different allocations. */
    for (int w = 0; w < 2 && st == MB_OK; w++) {
        mb_breaker_opts o = {.name = w ? "time" : "count", .metrics = m};
        o.window = w ? MB_BREAKER_WINDOW_TIME : MB_BREAKER_WINDOW_COUNT;
        st = mb_breaker_create(&o, &b, NULL);
        if (st != MB_OK) {
            hook_pause();
            assert_null(b);
            assert_false(metrics_mention(m, w ? "name=\"time\"" : "name=\"count\""));
            assert_int_equal(mb_breaker_create(&o, &b, NULL), MB_OK);
        }
        mb_breaker_destroy(b);
        b = NULL;
    }
    mb_metrics_destroy(m);
    return st;
}

static mb_status sc_connstate(void)
{
    mb_metrics *m = NULL;
    mb_connstate *cs = NULL;
    mb_status st = mb_metrics_create(&m, NULL);
    if (st != MB_OK)
        return st;
    mb_connstate_opts o = {.name = "nats", .metrics = m};
    st = mb_connstate_create(&o, &cs, NULL);
    if (st != MB_OK) {
        hook_pause();
        assert_null(cs);
        assert_false(metrics_mention(m, "mudbus_connstate_"));
        assert_int_equal(mb_connstate_create(&o, &cs, NULL), MB_OK);
    }
    mb_connstate_destroy(cs);
    mb_metrics_destroy(m);
    return st;
}

static char g_cfg_path[64];

static mb_status sc_config(void)
{
    static const char *const env[] = {"MUDBUS_NATS_USER=bob", "MUDBUS_NATS_URL=nats://other:1",
                                      "MUDBUS_GATEWAY_WORKERS=8", "HOME=/root", NULL};
    mb_config *cfg = NULL;
    mb_status st = mb_config_load(g_cfg_path, env, NULL, &cfg, NULL);
    if (st != MB_OK) {
        hook_pause();
        assert_null(cfg);
        return st;
    }
    assert_string_equal(mb_config_get_str(cfg, "nats", "url", NULL), "nats://other:1");
    assert_string_equal(mb_config_get_str(cfg, "nats", "user", NULL), "bob");
    assert_string_equal(mb_config_get_str(cfg, "gateway", "tags", NULL), "a, b, c");
    mb_config_destroy(cfg);
    return st;
}

static char g_dlq_dir[64];

static size_t count_segments(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        n += strncmp(de->d_name, "seg-", 4) == 0;
    closedir(d);
    return n;
}

/* Remove everything in the DLQ directory (the directory stays). */
static void empty_dir(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *de;
    char path[PATH_MAX];
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        assert_int_equal(unlink(path), 0);
    }
    closedir(d);
}

static int visit(void *ctx, const mb_dlq_entry *e)
{
    size_t *n = ctx;
    assert_string_equal(e->subject, "chat.say.room.r1");
    (*n)++;
    return 0;
}

static mb_status sc_dlq(void)
{
    mb_metrics *m = NULL;
    mb_dlq *d = NULL;
    empty_dir(g_dlq_dir);
    mb_status st = mb_metrics_create(&m, NULL);
    if (st != MB_OK)
        return st;
    mb_dlq_opts o = {.metrics = m, .labels = "dlq=\"t\""};
    st = mb_dlq_open(g_dlq_dir, &o, &d, NULL);
    if (st != MB_OK) {
        hook_pause();
        assert_null(d);
        assert_false(metrics_mention(m, "mudbus_dlq_"));
        assert_int_equal(count_segments(g_dlq_dir), 0);
        assert_int_equal(mb_dlq_open(g_dlq_dir, &o, &d, NULL), MB_OK);
        assert_int_equal(mb_dlq_close(d, NULL), MB_OK);
        mb_metrics_destroy(m);
        return st;
    }
    size_t stored = 0;
    for (int i = 0; i < 3 && st == MB_OK; i++) {
        static const char payload[] = "{\"content\":\"hello\"}";
        mb_dlq_entry e = {0};
        e.subject = "chat.say.room.r1";
        e.payload = payload;
        e.payload_len = sizeof payload - 1;
        e.error = MB_ETIMEOUT;
        e.error_message = "publish timed out";
        e.attempts = 3;
        e.origin = "publish";
        uint64_t id = 0;
        st = mb_dlq_put(d, &e, true, &id, NULL);
        if (st == MB_OK)
            stored++;
    }
    if (st != MB_OK) {
        /* A durable put that failed stored nothing. */
        hook_pause();
        size_t n = 0;
        assert_int_equal(mb_dlq_list(d, NULL, visit, &n, NULL, NULL), MB_OK);
        assert_int_equal(n, stored);
    } else {
        size_t n = 0, count = 0;
        st = mb_dlq_list(d, NULL, visit, &n, &count, NULL);
        assert_int_equal(n, count);
        if (st == MB_OK)
            assert_int_equal(n, stored);
    }
    mb_status cst = mb_dlq_close(d, NULL);
    if (st == MB_OK)
        st = cst;
    mb_metrics_destroy(m);
    return st;
}

/* ---- tests ---- */

static void test_hook(void **state)
{
    (void)state;
    mb__alloc_fail_after(2);
    void *a = mb__malloc(8);
    char *b = mb__strdup("x");
    void *c = mb__calloc(1, 8);
    char *dd = mb__strndup("abcdef", 3);
    assert_non_null(a);
    assert_non_null(b);
    assert_null(c);
    assert_null(dd);
    assert_int_equal(mb__alloc_count(), 4);
    void *r = mb__realloc(a, 64);
    assert_null(r); /* a is untouched and still ours */
    mb__alloc_fail_after(-1);
    assert_int_equal(mb__alloc_count(), 0);
    r = mb__realloc(a, 64);
    assert_non_null(r);
    dd = mb__strndup("abcdef", 3);
    assert_string_equal(dd, "abc");
    assert_int_equal(mb__alloc_count(), 0); /* disarmed: not counted */
    mb__free(r);
    mb__free(b);
    mb__free(dd);
    mb__free(NULL);
    mb__alloc_fail_after(LONG_MAX);
    mb__free(mb__malloc(1));
    assert_int_equal(mb__alloc_count(), 1);
    mb__alloc_fail_after(-1);
}

#define SCENARIO(fn, min_points)                                                                   \
    static void test_##fn(void **state)                                                            \
    {                                                                                              \
        (void)state;                                                                               \
        long n = torture(#fn, fn);                                                                 \
        assert_true(n >= (min_points));                                                            \
    }

/* The minimums make sure each scenario really allocates where expected. */
SCENARIO(sc_metrics, 40)
SCENARIO(sc_subject, 10)
SCENARIO(sc_schema, 5)
SCENARIO(sc_json, 3)
SCENARIO(sc_encode, 0)
SCENARIO(sc_retry, 4)
SCENARIO(sc_timerq, 10)
SCENARIO(sc_breaker, 10)
SCENARIO(sc_connstate, 10)
SCENARIO(sc_config, 5)
SCENARIO(sc_dlq, 20)

static int group_setup(void **state)
{
    (void)state;
    make_event();
    make_json();
    snprintf(g_dlq_dir, sizeof g_dlq_dir, "/tmp/mb_alloc_dlq_XXXXXX");
    if (mkdtemp(g_dlq_dir) == NULL)
        return -1;
    snprintf(g_cfg_path, sizeof g_cfg_path, "/tmp/mb_alloc_cfg_XXXXXX");
    int fd = mkstemp(g_cfg_path);
    if (fd < 0)
        return -1;
    static const char text[] = "[nats]\nurl = nats://localhost:4222\ntimeout = 5s\n\n"
                               "[gateway]\nlisten = 0.0.0.0:8080\ntags = a, b, c\n";
    ssize_t w = write(fd, text, sizeof text - 1);
    close(fd);
    return w == (ssize_t)(sizeof text - 1) ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    mb__alloc_fail_after(-1);
    empty_dir(g_dlq_dir);
    rmdir(g_dlq_dir);
    unlink(g_cfg_path);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hook),       cmocka_unit_test(test_sc_metrics),
        cmocka_unit_test(test_sc_subject), cmocka_unit_test(test_sc_schema),
        cmocka_unit_test(test_sc_json),    cmocka_unit_test(test_sc_encode),
        cmocka_unit_test(test_sc_retry),   cmocka_unit_test(test_sc_timerq),
        cmocka_unit_test(test_sc_breaker), cmocka_unit_test(test_sc_connstate),
        cmocka_unit_test(test_sc_config),  cmocka_unit_test(test_sc_dlq),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
