/* SPDX-License-Identifier: MIT */
/*
 * config: an INI file plus MUDBUS_* environment overrides, loaded once into an
 * immutable store of (section, key) -> string, with typed getters whose errors
 * name the key and where its value came from.
 *
 * File syntax (parsed by libinih, with mudbus's own checks around it):
 *   - `[section]` headers; every key belongs to a section. Section names are
 *     letters, digits, '_', '.' and '-'; key names letters, digits and '_';
 *     both at most MB_CONFIG_MAX_NAME bytes and case-insensitive (stored in
 *     lower case).
 *   - `key = value` lines. Whitespace around keys and values and indentation
 *     are ignored; values are not unquoted; there are no multi-line values.
 *   - Whole-line comments start with '#' or ';'. A ';' preceded by whitespace
 *     also starts a comment at the end of a line (`pool_size = 4 ; four`);
 *     '#' does not (`pool_size = 4 # four` is the value "4 # four", which the
 *     number getter then refuses). A value that must contain " ;" (a password)
 *     is best given through the environment.
 *   - A key given twice in the file is refused (naming both lines), as is a
 *     key before the first section, a line that is neither a header nor
 *     `key = value`, a header naming a section the program does not know
 *     (when it passes its sections), and a file, line or key count beyond
 *     the MB_CONFIG_MAX_* bounds below.
 *
 * Environment: a variable MUDBUS_<SECTION>_<KEY> sets [section] key and beats
 * the file, e.g. MUDBUS_AUTH_JWT_SECRET sets [auth] jwt_secret and
 * MUDBUS_NATS_SERVERS sets [nats] servers. The section part is the section's
 * name upper-cased with every other character than a letter or digit made
 * '_' (store.sqlite -> STORE_SQLITE); the key part is the key upper-cased.
 * Because a section name may itself contain '_', the split is resolved by the
 * program's table of known sections; when one known section's prefix extends
 * another's, the longer one wins (MUDBUS_STORE_SQLITE_PATH is [store.sqlite]
 * path, not [store] sqlite_path). A MUDBUS_ variable that matches no known
 * section is reported through the warning callback and otherwise ignored, so
 * that unrelated variables never stop a daemon; a matching variable whose key
 * is unknown is caught like a file typo by mb_config_check_keys. Values are
 * trimmed of surrounding whitespace like file values. The program runs with no
 * file at all when the environment says everything it needs.
 *
 * Sources: every value remembers where it came from, "PATH:LINE" or
 * "env NAME", and every getter error names it:
 *   [nats] connect_timeout (env MUDBUS_NATS_CONNECT_TIMEOUT): "5 sec" is not a
 *   duration (a whole number with ms, s, m or h, e.g. 500ms or 5s)
 *
 * Memory: at most MB_CONFIG_MAX_FILE_BYTES of file and MB_CONFIG_MAX_KEYS
 * keys; each value is stored twice (as written, and split into list items).
 * Strings returned by the getters point into the config and stay valid until
 * mb_config_destroy.
 *
 * libinih: Debian's build turns its compile-time options into process-wide
 * variables and builds it with 200-byte lines, which it would silently split.
 * mudbus feeds libinih one checked line at a time, so it never sees an
 * indented (continuation) line, a BOM or an over-long line, and the first load
 * raises Debian's ini_max_line to MB_CONFIG_MAX_LINE (+3) if it is lower (it
 * never lowers it; this is the only process-wide effect). With a libinih that
 * lacks that variable, lines longer than its buffer are refused with a clear
 * error instead.
 *
 * Threads: mb_config_load reads the process environment when given none, so
 * it must not run concurrently with setenv/putenv. A loaded config is never
 * modified: every other function may be called from any number of threads at
 * once.
 */
#ifndef MUDBUS_CONFIG_H
#define MUDBUS_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mudbus/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mb_config mb_config;

#define MB_CONFIG_MAX_FILE_BYTES (1024 * 1024) /* larger files: MB_ETOOBIG */
#define MB_CONFIG_MAX_LINE       4096 /* bytes of a line or an environment value: MB_ETOOBIG */
#define MB_CONFIG_MAX_KEYS       4096 /* keys in all, file and environment: MB_ELIMIT */
#define MB_CONFIG_MAX_NAME       48   /* bytes of a section or key name */
#define MB_CONFIG_ENV_PREFIX     "MUDBUS_"

/* Receives one warning line (no newline), borrowed for the call. */
typedef void (*mb_config_warn_fn)(void *ctx, const char *msg);

typedef struct mb_config_opts {
    /* The program's sections, NULL-terminated, e.g. {"gateway", "nats", "auth",
     * NULL}. A file section outside it is an error; environment variables are
     * resolved against it. NULL: any file section is accepted, and environment
     * variables are resolved against the sections the file has. */
    const char *const *sections;
    /* Full names of MUDBUS_ variables that are not config keys (e.g.
     * "MUDBUS_CONFIG", naming the file) and are skipped without a warning.
     * NULL-terminated; may be NULL. */
    const char *const *env_ignore;
    mb_config_warn_fn warn; /* NULL: warnings are dropped */
    void *warn_ctx;
} mb_config_opts;

/* Load the INI file at `path` (NULL: no file) and then apply the MUDBUS_*
 * variables of `environ_vars` ("NAME=VALUE" strings, NULL-terminated; NULL:
 * the process environment). `opts` may be NULL (as if zeroed). Nothing is
 * kept of the arguments.
 *
 * Returns MB_OK with a new config in *out, or, with *out unchanged and
 * nothing allocated:
 *   MB_ENOTFOUND  the file does not exist;
 *   MB_EIO        it cannot be opened or read;
 *   MB_ETOOBIG    the file, a line or an environment value is over its bound;
 *   MB_ELIMIT     more than MB_CONFIG_MAX_KEYS keys;
 *   MB_EINVAL     a syntax error, duplicate key, key outside a section,
 *                 unknown section, invalid name (each "PATH:LINE: ..."), or a
 *                 bad opts table (invalid or ambiguous section names);
 *   MB_ENOMEM.
 * Warnings (environment variables matching no section) do not fail the
 * load. */
mb_status mb_config_load(const char *path, const char *const *environ_vars,
                         const mb_config_opts *opts, mb_config **out, mb_err *err);

/* Free a config; every string obtained from it becomes invalid. NULL does
 * nothing. */
void mb_config_destroy(mb_config *cfg);

/* Section and key arguments below are matched case-insensitively. A NULL
 * `cfg` behaves as an empty config (every getter returns its default). */

/* Whether [section] key is set (by the file or the environment). */
bool mb_config_has(const mb_config *cfg, const char *section, const char *key);

/* Where [section] key came from: "PATH:LINE" or "env NAME"; NULL when it is
 * not set. Valid while cfg lives. */
const char *mb_config_source(const mb_config *cfg, const char *section, const char *key);

/* The i-th key (0-based, file order, then environment additions) of
 * [section], lower case; NULL past the last. Valid while cfg lives. */
const char *mb_config_key_at(const mb_config *cfg, const char *section, size_t i);

/* MB_EINVAL naming the first key of [section] that is not in `known`
 * (NULL-terminated), with its source and the nearest known key when one is
 * close ("[nats] pool_sise (/etc/mudbus.ini:7): unknown key; did you mean
 * pool_size?"), so that typos are caught; MB_OK when every key is known or the
 * section is empty. */
mb_status mb_config_check_keys(const mb_config *cfg, const char *section, const char *const *known,
                               mb_err *err);

/* ---- getters ----
 * Each returns MB_OK with the value in *out, or `def` in *out when the key is
 * not set (the default is not range-checked). A set value that does not parse
 * or is out of [min, max] is MB_EINVAL, naming section, key, source and value;
 * *out is then unchanged. */

/* The value as written (never fails); `def` when not set. */
const char *mb_config_get_str(const mb_config *cfg, const char *section, const char *key,
                              const char *def);

/* true/yes/on/1 and false/no/off/0, case-insensitive. */
mb_status mb_config_get_bool(const mb_config *cfg, const char *section, const char *key, bool def,
                             bool *out, mb_err *err);

/* A whole number in decimal digits, no sign. */
mb_status mb_config_get_u64(const mb_config *cfg, const char *section, const char *key,
                            uint64_t def, uint64_t min, uint64_t max, uint64_t *out, mb_err *err);

/* A whole number in decimal digits with an optional leading '-'. */
mb_status mb_config_get_i64(const mb_config *cfg, const char *section, const char *key, int64_t def,
                            int64_t min, int64_t max, int64_t *out, mb_err *err);

/* A duration in milliseconds: a whole number followed by ms, s, m or h with
 * no space ("500ms", "5s", "2m", "1h"), or a plain number of milliseconds. */
mb_status mb_config_get_duration_ms(const mb_config *cfg, const char *section, const char *key,
                                    uint64_t def, uint64_t min_ms, uint64_t max_ms, uint64_t *out,
                                    mb_err *err);

/* A size in bytes: a whole number followed by B, KiB, MiB or GiB with no space
 * (units case-insensitive; "64KiB", "8MiB", "1GiB"), or a plain number of
 * bytes. Decimal units (KB, MB, GB) are refused as ambiguous. */
mb_status mb_config_get_size(const mb_config *cfg, const char *section, const char *key,
                             uint64_t def, uint64_t min, uint64_t max, uint64_t *out, mb_err *err);

/* A comma-separated list: items are trimmed of whitespace and stored in
 * items[0..*n), pointing into the config. An empty value is a list of zero
 * items; an empty item ("a,,b", "a,") or more than `max` items is MB_EINVAL.
 * When the key is not set, items and *n are left as they are (so the caller
 * fills in its defaults first); on error too. */
mb_status mb_config_get_list(const mb_config *cfg, const char *section, const char *key,
                             const char **items, size_t max, size_t *n, mb_err *err);

/* ---- client options ----
 *
 * mb_client_opts_from_config applies the keys of `section` (usually "nats")
 * to *o, which holds the starting values (call mb_client_opts_default first):
 * a key that is not set leaves its field as it is. Every key of the section
 * must be one of the table below (MB_EINVAL names an unknown key: typo
 * protection). String fields are set to pointers into cfg, valid while cfg
 * lives: keep cfg until mb_client_create has returned. An empty value for an
 * optional string (e.g. MUDBUS_NATS_TLS_CA_FILE= overriding the file) sets
 * the field to NULL. Returns MB_OK, or MB_EINVAL naming the key, its source
 * and the problem, with *o unchanged. Checks across keys: user and password
 * both or neither, likewise tls_cert_file and tls_key_file, and
 * nkey_seed_file and nkey_public;
 * health_timeout <= health_interval; retry_base_delay <= retry_max_delay;
 * budget_max_tokens pays for at least one retry; js_duplicate_window <=
 * js_max_age (when js is on or either key is set).
 *
 * | key                     | type             | range                    | default            |
 * |-------------------------|------------------|--------------------------|--------------------|
 * | servers                 | list of URLs     | 1..16 nats:// or tls://  | nats://127.0.0.1:4222 |
 * | name                    | string           | 1..40 of A-Za-z0-9_.-    | mudbus             |
 * | pool_size               | number           | 1..32                    | 2                  |
 * | tls                     | bool             | (a tls:// URL implies it)| off                |
 * | tls_ca_file             | path             |                          | the system's CAs   |
 * | tls_cert_file           | path             | with tls_key_file        | none               |
 * | tls_key_file            | path             | with tls_cert_file       | none               |
 * | tls_hostname            | string           |                          | from the URL       |
 * | tls_skip_verify         | bool             | DANGEROUS                | off                |
 * | user                    | string           | with password            | none               |
 * | password                | string (secret)  | with user                | none               |
 * | token                   | string (secret)  |                          | none               |
 * | nkey_seed_file          | path             | with nkey_public         | none               |
 * | nkey_public             | string (U...)    | with nkey_seed_file      | none               |
 * | creds_file              | path             |                          | none               |
 * | max_reconnect           | integer          | -1 (unlimited)..1000000  | -1                 |
 * | reconnect_wait          | duration         | 0..1h                    | 2s                 |
 * | reconnect_jitter        | duration         | 0..1h                    | 100ms (TLS: 1s)    |
 * | reconnect_buffer        | size             | 1KiB..1GiB               | 8MiB               |
 * | connect_timeout         | duration         | 1ms..10m                 | 2s                 |
 * | start_disconnected      | bool             |                          | off                |
 * | health_interval         | duration         | 10ms..1h                 | 5s                 |
 * | health_timeout          | duration         | 1ms..1m, <= interval     | 500ms              |
 * | health_failures         | number           | 1..1000                  | 3                  |
 * | retry_max_attempts      | number           | 1 (no retry)..100        | 4                  |
 * | retry_base_delay        | duration         | 1ms..1h, <= max delay    | 50ms               |
 * | retry_max_delay         | duration         | 1ms..1h                  | 5s                 |
 * | retry_deadline          | duration         | 0 (none)..24h            | 30s                |
 * | retry_jitter            | none, full, equal or decorrelated           | full               |
 * | retry_queue_max         | number           | 1..16777216              | 65536              |
 * | budget_max_tokens       | number           | 1..1000000, >= one retry | 500                |
 * | breaker_failure_rate    | percent or off   | 1..100                   | 50                 |
 * | breaker_open            | duration         | 1ms..1h                  | 5s                 |
 * | breaker_min_calls       | number           | 1..1000000               | 20                 |
 * | breaker_window          | calls, or a time | 1..1000000 calls;        | 100 calls          |
 * |                         | with a unit      | 1s..1h, whole seconds    |                    |
 * | breaker_half_open_calls | number           | 1..10000                 | 5                  |
 * | poll_mode               | bool             |                          | off                |
 * | shared_delivery         | bool             |                          | off                |
 * | send_asap               | bool             |                          | off                |
 * | no_echo                 | bool             | (see mb_client_opts)     | off                |
 * | dispatch_queue_max      | number           | 1..16777216              | 65536              |
 * | sub_pending_msgs        | number           | 1..16777216              | 65536              |
 * | sub_pending_bytes       | size             | 1KiB..1GiB               | 64MiB              |
 * | max_payload             | size             | 1B..64MiB                | the schema's limit |
 * | js                      | bool             | JetStream for critical   | off                |
 * | js_critical_subjects    | list of patterns | 1..16 subscription       | chat.system,       |
 * |                         |                  | patterns (breadth rules),| mutes.changed.*,   |
 * |                         |                  | no repeats               | chat.whisper.      |
 * |                         |                  |                          |  player.*          |
 * | js_stream               | name             | 1..32 of A-Za-z0-9_-     | MUDBUS_CRITICAL    |
 * | js_memory_storage       | bool             | (off: file storage)      | off                |
 * | js_max_age              | duration         | 1s..8760h (365 days)     | 24h                |
 * | js_duplicate_window     | duration         | 100ms..24h, <= max age   | 2m                 |
 * | js_ack_wait             | duration         | 100ms..1h                | 30s                |
 * | js_max_deliver          | number           | 1..1000                  | 5                  |
 * | js_durable_prefix       | name             | 1..48 of A-Za-z0-9_-     | mudbus_<name>      |
 * | js_fetch_batch          | number           | 1..4096                  | 64                 |
 * | js_fetch_timeout        | duration         | 10ms..1m                 | 500ms              |
 * | js_publish_ack_timeout  | duration         | 1ms..10m                 | 5s                 |
 * | js_max_pending          | number           | 1..1000000               | 4096               |
 *
 * Fields: servers sets servers[] and nservers; tls_* set tls.* (tls itself
 * tls.enabled); user, password, token, nkey_seed_file, nkey_public and
 * creds_file set auth.*; retry_max_attempts, retry_base_delay, retry_max_delay,
 * retry_deadline and retry_jitter set retry.*; budget_max_tokens
 * budget.max_tokens; breaker_failure_rate, breaker_open, breaker_min_calls,
 * breaker_window and breaker_half_open_calls set breaker.failure_rate_pct,
 * open_ms, min_calls, window + window_size and half_open_calls; js sets
 * js.enabled and every js_K the field K of js (js_critical_subjects sets
 * js.critical_subjects[] and js.ncritical; a js_* duration js.K_ms); an
 * empty js_stream or js_durable_prefix sets the field to NULL (the client's
 * default); durations set the *_ms field of the same name, reconnect_buffer
 * reconnect_buf_bytes; the rest set the field of the same name. Defaults are
 * those of mb_client_opts_default (client.h).
 *
 * Types: bool is true/yes/on/1 or false/no/off/0; a duration is a whole
 * number with ms, s, m or h (a plain number is milliseconds); a size is a
 * whole number with B, KiB, MiB or GiB (a plain number is bytes);
 * breaker_window "100" is a window of the last 100 calls, "60s" or "1m" one
 * of the last 60 seconds. Each key K can also be set by MUDBUS_NATS_K (for
 * section "nats"), e.g. MUDBUS_NATS_SERVERS=tls://a:4222,tls://b:4222.
 *
 * Threads: any thread; cfg may be shared, *o must not be. */
struct mb_client_opts;
mb_status mb_client_opts_from_config(const mb_config *cfg, const char *section,
                                     struct mb_client_opts *o, mb_err *err);

#ifdef __cplusplus
}
#endif
#endif
