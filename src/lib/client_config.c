/* SPDX-License-Identifier: MIT */
/*
 * client_config: mb_client_opts from a config section (usually [nats]), as
 * tabled in config.h. It lives apart from config.c so that the config store
 * knows nothing of the client, and apart from client.c so that the client
 * knows nothing of INI files.
 *
 * Every key is applied to a copy of the caller's options, which are the
 * defaults of any key that is not set; the copy replaces the caller's only
 * when every key and every check across keys passed, so on error nothing is
 * changed. Strings in the result point into the config. Ranges here are the
 * operator-facing bounds; mb_client_create still validates what it receives.
 */
#include "mudbus/client.h"
#include "mudbus/config.h"
#include "mudbus/subject.h"

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

static const char *const client_keys[] = {"servers",
                                          "name",
                                          "pool_size",
                                          "tls",
                                          "tls_ca_file",
                                          "tls_cert_file",
                                          "tls_key_file",
                                          "tls_hostname",
                                          "tls_skip_verify",
                                          "user",
                                          "password",
                                          "token",
                                          "nkey_seed_file",
                                          "nkey_public",
                                          "creds_file",
                                          "max_reconnect",
                                          "reconnect_wait",
                                          "reconnect_jitter",
                                          "reconnect_buffer",
                                          "io_buffer",
                                          "connect_timeout",
                                          "start_disconnected",
                                          "health_interval",
                                          "health_timeout",
                                          "health_failures",
                                          "retry_max_attempts",
                                          "retry_base_delay",
                                          "retry_max_delay",
                                          "retry_deadline",
                                          "retry_jitter",
                                          "retry_queue_max",
                                          "budget_max_tokens",
                                          "breaker_failure_rate",
                                          "breaker_open",
                                          "breaker_min_calls",
                                          "breaker_window",
                                          "breaker_half_open_calls",
                                          "poll_mode",
                                          "shared_delivery",
                                          "send_asap",
                                          "no_echo",
                                          "dispatch_queue_max",
                                          "sub_pending_msgs",
                                          "sub_pending_bytes",
                                          "max_payload",
                                          "js",
                                          "js_critical_subjects",
                                          "js_stream",
                                          "js_memory_storage",
                                          "js_max_age",
                                          "js_duplicate_window",
                                          "js_ack_wait",
                                          "js_max_deliver",
                                          "js_durable_prefix",
                                          "js_fetch_batch",
                                          "js_fetch_timeout",
                                          "js_publish_ack_timeout",
                                          "js_max_pending",
                                          NULL};

#define MS_HOUR   UINT64_C(3600000)
#define MS_DAY    (24 * MS_HOUR)
#define QUEUE_MAX UINT64_C(16777216)

/* JetStream names: the rule of mb_client_create (client_js.c), checked here
 * to name the source. Neither may hold '.', '*', '>' or whitespace. */
#define JS_NAME_CHARS      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
#define JS_STREAM_MAX      32
#define JS_DURABLE_PFX_MAX 48

/* One section being applied: the config, the section name, the error. */
typedef struct app {
    const mb_config *cfg;
    const char *sec;
    mb_err *err;
} app;

static mb_status fail(const app *a, const char *key, const char *why)
{
    const char *src = mb_config_source(a->cfg, a->sec, key);
    if (src == NULL) /* the caller's starting value, not the config's */
        return mb_err_set(a->err, MB_EINVAL, "[%s] %s: %s", a->sec, key, why);
    return mb_err_set(a->err, MB_EINVAL, "[%s] %s (%s): %s", a->sec, key, src, why);
}

/* An optional string: unchanged when not set, NULL when set to "". */
static void opt_str(const app *a, const char *key, const char **field)
{
    const char *v = mb_config_get_str(a->cfg, a->sec, key, NULL);
    if (v != NULL)
        *field = v[0] != '\0' ? v : NULL;
}

static mb_status flag(const app *a, const char *key, bool *field)
{
    return mb_config_get_bool(a->cfg, a->sec, key, *field, field, a->err);
}

static mb_status dur(const app *a, const char *key, uint64_t min, uint64_t max, uint64_t *field)
{
    return mb_config_get_duration_ms(a->cfg, a->sec, key, *field, min, max, field, a->err);
}

static mb_status num_unsigned(const app *a, const char *key, uint64_t min, uint64_t max,
                              unsigned *field)
{
    uint64_t v = *field;
    mb_status st = mb_config_get_u64(a->cfg, a->sec, key, v, min, max, &v, a->err);
    if (st == MB_OK)
        *field = (unsigned)v;
    return st;
}

static mb_status num_u32(const app *a, const char *key, uint64_t min, uint64_t max, uint32_t *field)
{
    uint64_t v = *field;
    mb_status st = mb_config_get_u64(a->cfg, a->sec, key, v, min, max, &v, a->err);
    if (st == MB_OK)
        *field = (uint32_t)v;
    return st;
}

static mb_status num_size(const app *a, const char *key, uint64_t min, uint64_t max, size_t *field)
{
    uint64_t v = *field;
    mb_status st = mb_config_get_u64(a->cfg, a->sec, key, v, min, max, &v, a->err);
    if (st == MB_OK)
        *field = (size_t)v;
    return st;
}

static mb_status num_int(const app *a, const char *key, uint64_t min, uint64_t max, int *field,
                         bool size)
{
    uint64_t v = *field > 0 ? (uint64_t)*field : 0;
    mb_status st = size ? mb_config_get_size(a->cfg, a->sec, key, v, min, max, &v, a->err)
                        : mb_config_get_u64(a->cfg, a->sec, key, v, min, max, &v, a->err);
    if (st == MB_OK && mb_config_has(a->cfg, a->sec, key))
        *field = (int)v;
    return st;
}

static mb_status bytes(const app *a, const char *key, uint64_t min, uint64_t max, size_t *field)
{
    uint64_t v = *field;
    mb_status st = mb_config_get_size(a->cfg, a->sec, key, v, min, max, &v, a->err);
    if (st == MB_OK)
        *field = (size_t)v;
    return st;
}

static mb_status servers(const app *a, mb_client_opts *t)
{
    const char *items[MB_CLIENT_MAX_SERVERS];
    size_t n = SIZE_MAX;
    mb_status st =
        mb_config_get_list(a->cfg, a->sec, "servers", items, MB_CLIENT_MAX_SERVERS, &n, a->err);
    if (st != MB_OK || n == SIZE_MAX)
        return st;
    if (n == 0)
        return fail(a, "servers", "needs at least one nats:// or tls:// URL");
    for (size_t i = 0; i < n; i++) {
        const char *u = items[i];
        size_t skip = strncmp(u, "nats://", 7) == 0 ? 7 : strncmp(u, "tls://", 6) == 0 ? 6 : 0;
        if (skip == 0 || u[skip] == '\0' || strpbrk(u, " \t") != NULL) {
            char why[160];
            snprintf(why, sizeof why, "item %zu \"%.100s\" is not a nats:// or tls:// URL", i + 1,
                     u);
            return fail(a, "servers", why);
        }
    }
    memset(t->servers, 0, sizeof t->servers);
    memcpy(t->servers, items, n * sizeof items[0]);
    t->nservers = n;
    return MB_OK;
}

/* A JetStream name (stream, durable prefix): unchanged when not set, NULL
 * (the client's default) when set to "", else 1..max of JS_NAME_CHARS. */
static mb_status js_name(const app *a, const char *key, size_t max, const char **field)
{
    const char *v = mb_config_get_str(a->cfg, a->sec, key, NULL);
    if (v == NULL)
        return MB_OK;
    size_t len = strlen(v);
    if (len == 0) {
        *field = NULL;
        return MB_OK;
    }
    if (len > max || strspn(v, JS_NAME_CHARS) != len) {
        char why[160];
        snprintf(why, sizeof why,
                 "\"%.64s\" must be 1 to %zu letters, digits, '_' or '-' (no '.', '*', '>' or "
                 "spaces)",
                 v, max);
        return fail(a, key, why);
    }
    *field = v;
    return MB_OK;
}

/* The critical subjects: 1..MB_CLIENT_MAX_CRITICAL subscription patterns,
 * each passing the breadth rules of mb_subject_check_sub (checked with a
 * throwaway registry: the rules do not depend on its patterns), no repeats. */
static mb_status js_critical(const app *a, mb_client_js_opts *js)
{
    static const char key[] = "js_critical_subjects";
    const char *items[MB_CLIENT_MAX_CRITICAL];
    size_t n = SIZE_MAX;
    mb_status st =
        mb_config_get_list(a->cfg, a->sec, key, items, MB_CLIENT_MAX_CRITICAL, &n, a->err);
    if (st != MB_OK || n == SIZE_MAX)
        return st;
    if (n == 0)
        return fail(a, key, "needs at least one subscription pattern (e.g. chat.system)");
    mb_subject_registry *r = NULL;
    mb_err rerr = {0};
    if ((st = mb_subject_registry_create(NULL, &r, &rerr)) != MB_OK)
        return mb_err_set(a->err, st, "[%s] %s: cannot check the patterns: %s", a->sec, key,
                          rerr.msg);
    for (size_t i = 0; i < n && st == MB_OK; i++) {
        mb_subject_reason rule = MB_SUBJECT_OK;
        mb_err perr = {0};
        char why[MB_ERR_MSG_MAX];
        if (mb_subject_check_sub(r, items[i], strlen(items[i]), &rule, &perr) != MB_OK) {
            snprintf(why, sizeof why, "item %zu refused (rule %s): %.180s", i + 1,
                     mb_subject_reason_name(rule), perr.msg);
            st = fail(a, key, why);
        }
        for (size_t j = 0; j < i && st == MB_OK; j++)
            if (strcmp(items[j], items[i]) == 0) {
                snprintf(why, sizeof why, "item %zu \"%.100s\" repeats item %zu", i + 1, items[i],
                         j + 1);
                st = fail(a, key, why);
            }
    }
    mb_subject_registry_destroy(r);
    if (st != MB_OK)
        return st;
    memset(js->critical_subjects, 0, sizeof js->critical_subjects);
    memcpy(js->critical_subjects, items, n * sizeof items[0]);
    js->ncritical = n;
    return MB_OK;
}

/* The js_* keys onto o->js. */
static mb_status js_keys(const app *a, mb_client_js_opts *js)
{
    mb_status st;
    if ((st = flag(a, "js", &js->enabled)) != MB_OK || (st = js_critical(a, js)) != MB_OK ||
        (st = js_name(a, "js_stream", JS_STREAM_MAX, &js->stream)) != MB_OK ||
        (st = flag(a, "js_memory_storage", &js->memory_storage)) != MB_OK ||
        (st = dur(a, "js_max_age", 1000, 365 * MS_DAY, &js->max_age_ms)) != MB_OK ||
        (st = dur(a, "js_duplicate_window", 100, MS_DAY, &js->duplicate_window_ms)) != MB_OK ||
        (st = dur(a, "js_ack_wait", 100, MS_HOUR, &js->ack_wait_ms)) != MB_OK ||
        (st = num_unsigned(a, "js_max_deliver", 1, 1000, &js->max_deliver)) != MB_OK ||
        (st = js_name(a, "js_durable_prefix", JS_DURABLE_PFX_MAX, &js->durable_prefix)) != MB_OK ||
        (st = num_unsigned(a, "js_fetch_batch", 1, 4096, &js->fetch_batch)) != MB_OK ||
        (st = dur(a, "js_fetch_timeout", 10, 60000, &js->fetch_timeout_ms)) != MB_OK ||
        (st = dur(a, "js_publish_ack_timeout", 1, 10 * 60000, &js->publish_ack_timeout_ms)) !=
            MB_OK)
        return st;
    int64_t mp = js->max_pending;
    if ((st = mb_config_get_i64(a->cfg, a->sec, "js_max_pending", mp, 1, 1000000, &mp, a->err)) !=
        MB_OK)
        return st;
    js->max_pending = mp;
    return MB_OK;
}

/* "off", or a percentage 1..100. */
static mb_status failure_rate(const app *a, uint32_t *field)
{
    const char *v = mb_config_get_str(a->cfg, a->sec, "breaker_failure_rate", NULL);
    if (v != NULL && strcasecmp(v, "off") == 0) {
        *field = MB_BREAKER_OFF;
        return MB_OK;
    }
    return num_u32(a, "breaker_failure_rate", 1, 100, field);
}

/* A number of calls (COUNT window), or whole seconds with a unit (TIME). */
static mb_status window(const app *a, mb_breaker_opts *b)
{
    const char *v = mb_config_get_str(a->cfg, a->sec, "breaker_window", NULL);
    if (v == NULL)
        return MB_OK;
    if (v[0] != '\0' && strspn(v, "0123456789") == strlen(v)) {
        mb_status st = num_u32(a, "breaker_window", 1, 1000000, &b->window_size);
        if (st == MB_OK)
            b->window = MB_BREAKER_WINDOW_COUNT;
        return st;
    }
    uint64_t ms = 0;
    mb_status st =
        mb_config_get_duration_ms(a->cfg, a->sec, "breaker_window", 0, 1000, MS_HOUR, &ms, a->err);
    if (st != MB_OK)
        return st;
    if (ms % 1000 != 0)
        return fail(a, "breaker_window", "a time window must be whole seconds (e.g. 60s or 1m)");
    b->window = MB_BREAKER_WINDOW_TIME;
    b->window_size = (uint32_t)(ms / 1000);
    return MB_OK;
}

static mb_status both_or_neither(const app *a, const char *k1, const void *v1, const char *k2,
                                 const void *v2)
{
    if ((v1 == NULL) == (v2 == NULL))
        return MB_OK;
    const char *set = v1 != NULL ? k1 : k2, *unset = v1 != NULL ? k2 : k1;
    char why[96];
    snprintf(why, sizeof why, "is set but %s is not (give both or neither)", unset);
    if (mb_config_has(a->cfg, a->sec, set))
        return fail(a, set, why);
    /* Set by the caller's defaults rather than the config. */
    return mb_err_set(a->err, MB_EINVAL, "[%s] %s: needed with the %s of the options", a->sec,
                      unset, set);
}

/* Checks across keys, reported against the key that was set last in the
 * table's sense (the one an operator most likely got wrong). */
static mb_status cross_checks(const app *a, const mb_client_opts *t)
{
    mb_status st = both_or_neither(a, "user", t->auth.user, "password", t->auth.password);
    if (st == MB_OK)
        st = both_or_neither(a, "tls_cert_file", t->tls.cert_file, "tls_key_file", t->tls.key_file);
    if (st == MB_OK)
        st = both_or_neither(a, "nkey_seed_file", t->auth.nkey_seed_file, "nkey_public",
                             t->auth.nkey_public);
    if (st != MB_OK)
        return st;
    char why[160];
    if (t->health_timeout_ms > t->health_interval_ms) {
        snprintf(why, sizeof why, "%" PRIu64 "ms is longer than health_interval (%" PRIu64 "ms)",
                 t->health_timeout_ms, t->health_interval_ms);
        return fail(a,
                    mb_config_has(a->cfg, a->sec, "health_timeout") ? "health_timeout"
                                                                    : "health_interval",
                    why);
    }
    if (t->retry.base_delay_ms > t->retry.max_delay_ms) {
        snprintf(why, sizeof why,
                 "retry_base_delay (%" PRIu64 "ms) is longer than retry_max_delay (%" PRIu64 "ms)",
                 t->retry.base_delay_ms, t->retry.max_delay_ms);
        return fail(a,
                    mb_config_has(a->cfg, a->sec, "retry_base_delay") ? "retry_base_delay"
                                                                      : "retry_max_delay",
                    why);
    }
    uint32_t cost = t->budget.timeout_cost != 0 ? t->budget.timeout_cost : 10;
    if (t->budget.retry_cost > cost)
        cost = t->budget.retry_cost;
    if (t->budget.max_tokens != 0 && t->budget.max_tokens < cost) {
        snprintf(why, sizeof why, "%" PRIu32 " cannot pay for one retry (%" PRIu32 " tokens)",
                 t->budget.max_tokens, cost);
        return fail(a, "budget_max_tokens", why);
    }
    /* JetStream: the stream refuses a dedup window longer than its max age.
     * Checked when JetStream is on or either key is set. */
    bool js_dw = mb_config_has(a->cfg, a->sec, "js_duplicate_window");
    if ((t->js.enabled || js_dw || mb_config_has(a->cfg, a->sec, "js_max_age")) &&
        t->js.duplicate_window_ms > t->js.max_age_ms) {
        snprintf(why, sizeof why,
                 "js_duplicate_window (%" PRIu64 "ms) is longer than js_max_age (%" PRIu64 "ms)",
                 t->js.duplicate_window_ms, t->js.max_age_ms);
        return fail(a, js_dw ? "js_duplicate_window" : "js_max_age", why);
    }
    mb_err perr = {0};
    if (mb_retry_policy_check(&t->retry, &perr) != MB_OK)
        return mb_err_set(a->err, MB_EINVAL, "[%s] retry_*: %s", a->sec, perr.msg);
    return MB_OK;
}

mb_status mb_client_opts_from_config(const mb_config *cfg, const char *section,
                                     struct mb_client_opts *o, mb_err *err)
{
    if (section == NULL || o == NULL)
        return mb_err_set(err, MB_EINVAL, "mb_client_opts_from_config: NULL argument");
    mb_status st = mb_config_check_keys(cfg, section, client_keys, err);
    if (st != MB_OK)
        return st;

    const app a = {cfg, section, err};
    mb_client_opts t = *o;

    if ((st = servers(&a, &t)) != MB_OK)
        return st;
    const char *name = mb_config_get_str(cfg, section, "name", NULL);
    /* The rule of mb_client_create, checked here to name the source. */
    if (name != NULL && (name[0] == '\0' || strlen(name) > 40 ||
                         strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                      "0123456789_.-") != strlen(name)))
        return fail(&a, "name", "must be 1 to 40 letters, digits, '_', '.' or '-'");
    if (name != NULL)
        t.name = name;
    if ((st = num_size(&a, "pool_size", 1, MB_CLIENT_MAX_POOL, &t.pool_size)) != MB_OK)
        return st;

    if ((st = flag(&a, "tls", &t.tls.enabled)) != MB_OK ||
        (st = flag(&a, "tls_skip_verify", &t.tls.skip_verify)) != MB_OK)
        return st;
    opt_str(&a, "tls_ca_file", &t.tls.ca_file);
    opt_str(&a, "tls_cert_file", &t.tls.cert_file);
    opt_str(&a, "tls_key_file", &t.tls.key_file);
    opt_str(&a, "tls_hostname", &t.tls.hostname);
    opt_str(&a, "user", &t.auth.user);
    opt_str(&a, "password", &t.auth.password);
    opt_str(&a, "token", &t.auth.token);
    opt_str(&a, "nkey_seed_file", &t.auth.nkey_seed_file);
    opt_str(&a, "nkey_public", &t.auth.nkey_public);
    opt_str(&a, "creds_file", &t.auth.creds_file);

    int64_t mr = t.max_reconnect;
    if ((st = mb_config_get_i64(cfg, section, "max_reconnect", mr, -1, 1000000, &mr, err)) != MB_OK)
        return st;
    t.max_reconnect = (int)mr;
    if ((st = dur(&a, "reconnect_wait", 0, MS_HOUR, &t.reconnect_wait_ms)) != MB_OK ||
        (st = dur(&a, "reconnect_jitter", 0, MS_HOUR, &t.reconnect_jitter_ms)) != MB_OK ||
        (st = bytes(&a, "reconnect_buffer", UINT64_C(1) << 10, UINT64_C(1) << 30,
                    &t.reconnect_buf_bytes)) != MB_OK ||
        (st = bytes(&a, "io_buffer", UINT64_C(1) << 10, UINT64_C(16) << 20, &t.io_buf_bytes)) !=
            MB_OK ||
        (st = dur(&a, "connect_timeout", 1, 10 * 60000, &t.connect_timeout_ms)) != MB_OK ||
        (st = flag(&a, "start_disconnected", &t.start_disconnected)) != MB_OK)
        return st;

    if ((st = dur(&a, "health_interval", 10, MS_HOUR, &t.health_interval_ms)) != MB_OK ||
        (st = dur(&a, "health_timeout", 1, 60000, &t.health_timeout_ms)) != MB_OK ||
        (st = num_unsigned(&a, "health_failures", 1, 1000, &t.health_failures)) != MB_OK)
        return st;

    if ((st = num_unsigned(&a, "retry_max_attempts", 1, 100, &t.retry.max_attempts)) != MB_OK ||
        (st = dur(&a, "retry_base_delay", 1, MS_HOUR, &t.retry.base_delay_ms)) != MB_OK ||
        (st = dur(&a, "retry_max_delay", 1, MS_HOUR, &t.retry.max_delay_ms)) != MB_OK ||
        (st = dur(&a, "retry_deadline", 0, 24 * MS_HOUR, &t.retry.deadline_ms)) != MB_OK ||
        (st = num_size(&a, "retry_queue_max", 1, QUEUE_MAX, &t.retry_queue_max)) != MB_OK)
        return st;
    const char *jit = mb_config_get_str(cfg, section, "retry_jitter", NULL);
    if (jit != NULL && mb_jitter_parse(jit, &t.retry.jitter) != MB_OK) {
        char why[160];
        snprintf(why, sizeof why,
                 "\"%.64s\" is not a jitter kind (none, full, equal or "
                 "decorrelated)",
                 jit);
        return fail(&a, "retry_jitter", why);
    }
    if ((st = num_u32(&a, "budget_max_tokens", 1, 1000000, &t.budget.max_tokens)) != MB_OK)
        return st;

    if ((st = failure_rate(&a, &t.breaker.failure_rate_pct)) != MB_OK ||
        (st = dur(&a, "breaker_open", 1, MS_HOUR, &t.breaker.open_ms)) != MB_OK ||
        (st = num_u32(&a, "breaker_min_calls", 1, 1000000, &t.breaker.min_calls)) != MB_OK ||
        (st = window(&a, &t.breaker)) != MB_OK ||
        (st = num_u32(&a, "breaker_half_open_calls", 1, 10000, &t.breaker.half_open_calls)) !=
            MB_OK)
        return st;

    if ((st = flag(&a, "poll_mode", &t.poll_mode)) != MB_OK ||
        (st = flag(&a, "shared_delivery", &t.shared_delivery)) != MB_OK ||
        (st = flag(&a, "send_asap", &t.send_asap)) != MB_OK ||
        (st = flag(&a, "no_echo", &t.no_echo)) != MB_OK ||
        (st = num_size(&a, "dispatch_queue_max", 1, QUEUE_MAX, &t.dispatch_queue_max)) != MB_OK ||
        (st = num_int(&a, "sub_pending_msgs", 1, QUEUE_MAX, &t.sub_pending_msgs, false)) != MB_OK ||
        (st = num_int(&a, "sub_pending_bytes", UINT64_C(1) << 10, UINT64_C(1) << 30,
                      &t.sub_pending_bytes, true)) != MB_OK ||
        (st = bytes(&a, "max_payload", 1, UINT64_C(64) << 20, &t.max_payload)) != MB_OK)
        return st;

    if ((st = js_keys(&a, &t.js)) != MB_OK)
        return st;

    if ((st = cross_checks(&a, &t)) != MB_OK)
        return st;
    *o = t;
    return MB_OK;
}
