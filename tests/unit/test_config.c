/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for config and client_config: the INI syntax mudbus accepts and
 * each refusal with its line number (duplicates, keys outside a section,
 * malformed lines, unknown sections, bounds of file, line and key count),
 * environment overrides (precedence, resolution by known sections, longest
 * prefix, warnings, no file at all), every getter's accepted forms and
 * refusals, source reporting, unknown-key detection, and the mapping of a
 * [nats] section onto mb_client_opts (every key, refusals naming key and
 * source, checks across keys, nothing changed on error, string lifetime).
 *
 * Files are written with mkstemp and removed by each test; environments are
 * explicit arrays, so the tests do not depend on the real environment (one
 * test sets and clears a variable of its own to cover the NULL case).
 */
#define _POSIX_C_SOURCE 200809L

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mudbus/client.h"
#include "mudbus/config.h"

/* ---- helpers ---- */

static const char *const sections[] = {"gateway", "nats", "auth",    "limits",
                                       "store",   "dlq",  "metrics", NULL};

static const char *const no_env[] = {NULL};

/* Write `text` (len bytes) to a new temporary file; returns its path (free it
 * after unlink). */
static char *tmp_file(const char *text, size_t len)
{
    char *path = strdup("/tmp/mudbus-test-config-XXXXXX");
    assert_non_null(path);
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(fd, text + off, len - off);
        assert_true(w > 0);
        off += (size_t)w;
    }
    assert_int_equal(close(fd), 0);
    return path;
}

static char *tmp_text(const char *text)
{
    return tmp_file(text, strlen(text));
}

static void rm_file(char *path)
{
    unlink(path);
    free(path);
}

typedef struct warnings {
    int n;
    char last[MB_ERR_MSG_MAX];
} warnings;

static void on_warn(void *ctx, const char *msg)
{
    warnings *w = ctx;
    w->n++;
    snprintf(w->last, sizeof w->last, "%s", msg);
}

/* Load `text` as a file (removed again before returning) with the known
 * sections, `env` and a warning collector. */
static mb_status load(const char *text, const char *const *env, mb_config **cfg, mb_err *err,
                      warnings *w)
{
    char *path = tmp_text(text);
    mb_config_opts o = {.sections = sections, .warn = on_warn, .warn_ctx = w};
    mb_err_clear(err);
    mb_status st = mb_config_load(path, env, &o, cfg, err);
    rm_file(path);
    return st;
}

/* Load expecting failure; checks the status and that the message contains
 * `needle`. */
static void load_fails(const char *text, mb_status want, const char *needle)
{
    mb_config *cfg = (mb_config *)0x1;
    mb_err err;
    warnings w = {0};
    assert_int_equal(load(text, no_env, &cfg, &err, &w), want);
    assert_ptr_equal(cfg, (mb_config *)0x1); /* untouched */
    assert_int_equal(err.code, want);
    if (strstr(err.msg, needle) == NULL)
        fail_msg("error \"%s\" lacks \"%s\"", err.msg, needle);
}

static void assert_contains(const char *hay, const char *needle)
{
    if (hay == NULL || strstr(hay, needle) == NULL)
        fail_msg("\"%s\" lacks \"%s\"", hay ? hay : "(null)", needle);
}

/* Load only from an environment array. */
static mb_config *env_cfg(const char *const *env)
{
    mb_config *cfg = NULL;
    mb_err err = {0};
    mb_config_opts o = {.sections = sections};
    assert_int_equal(mb_config_load(NULL, env, &o, &cfg, &err), MB_OK);
    return cfg;
}

/* ---- file syntax ---- */

static void test_parse_sections_keys_comments_whitespace(void **state)
{
    (void)state;
    const char *text = "\xEF\xBB\xBF# leading comment\n"
                       "; another comment\n"
                       "\n"
                       "[gateway]\n"
                       "listen = 0.0.0.0:8080\n"
                       "  indented=yes   \n"
                       "\tempty =\n"
                       "hash_kept = a # not a comment\n"
                       "semi = value ; inline comment\n"
                       "semi_tight = p;w\n"
                       "eq_in_value = a=b=c\n"
                       "\r\n"
                       "[ NATS ]   ; the NATS section\r\n"
                       "Servers = nats://a:4222, tls://b:4222\r\n"
                       "[auth]\n"
                       "jwt_secret_file = /etc/mudbus/secret";
    mb_config *cfg = NULL;
    mb_err err;
    warnings w = {0};
    assert_int_equal(load(text, no_env, &cfg, &err, &w), MB_OK);
    assert_string_equal(mb_config_get_str(cfg, "gateway", "listen", NULL), "0.0.0.0:8080");
    assert_string_equal(mb_config_get_str(cfg, "gateway", "indented", NULL), "yes");
    assert_string_equal(mb_config_get_str(cfg, "gateway", "empty", "x"), "");
    assert_string_equal(mb_config_get_str(cfg, "gateway", "hash_kept", NULL), "a # not a comment");
    assert_string_equal(mb_config_get_str(cfg, "gateway", "semi", NULL), "value");
    assert_string_equal(mb_config_get_str(cfg, "gateway", "semi_tight", NULL), "p;w");
    assert_string_equal(mb_config_get_str(cfg, "gateway", "eq_in_value", NULL), "a=b=c");
    /* Names are case-insensitive and stored in lower case. */
    assert_string_equal(mb_config_get_str(cfg, "nats", "servers", NULL),
                        "nats://a:4222, tls://b:4222");
    assert_string_equal(mb_config_get_str(cfg, "NATS", "SERVERS", NULL),
                        "nats://a:4222, tls://b:4222");
    assert_string_equal(mb_config_key_at(cfg, "nats", 0), "servers");
    assert_string_equal(mb_config_get_str(cfg, "auth", "jwt_secret_file", NULL),
                        "/etc/mudbus/secret");
    assert_null(mb_config_get_str(cfg, "auth", "jwt_secret", NULL));
    assert_string_equal(mb_config_get_str(cfg, "auth", "jwt_secret", "dflt"), "dflt");
    assert_false(mb_config_has(cfg, "gateway", "nope"));
    assert_true(mb_config_has(cfg, "gateway", "empty"));
    assert_int_equal(w.n, 0);
    mb_config_destroy(cfg);
}

static void test_duplicate_key_refused(void **state)
{
    (void)state;
    load_fails("[nats]\nname = a\npool_size = 2\nname = b\n", MB_EINVAL,
               ":4: duplicate key [nats] name (first set at line 2)");
    /* Also across two headers of the same section, and across case. */
    load_fails("[nats]\nname = a\n[auth]\nx = 1\n[nats]\nNAME = b\n", MB_EINVAL,
               ":6: duplicate key [nats] name (first set at line 2)");
}

static void test_key_outside_section_refused(void **state)
{
    (void)state;
    load_fails("# comment\n\nname = a\n[nats]\n", MB_EINVAL, ":3: key name outside a section");
}

static void test_malformed_lines_refused(void **state)
{
    (void)state;
    load_fails("[nats]\nname = a\njust some text\n", MB_EINVAL,
               ":3: expected \"key = value\" or a [section] header");
    load_fails("[nats]\nname: a\n", MB_EINVAL, ":2: expected \"key = value\"");
    load_fails("[nats\nname = a\n", MB_EINVAL, ":1: section header without ']'");
    load_fails("[nats] extra\n", MB_EINVAL, ":1: text after the section header");
    load_fails("[]\n", MB_EINVAL, ":1: invalid section name \"\"");
    load_fails("[na ts]\n", MB_EINVAL, ":1: invalid section name \"na ts\"");
    load_fails("[nats]\npool size = 2\n", MB_EINVAL, ":2: invalid key name \"pool size\"");
    load_fails("[nats]\n= 2\n", MB_EINVAL, ":2: invalid key name \"\"");
    load_fails("[nats]\npool-size = 2\n", MB_EINVAL, ":2: invalid key name \"pool-size\"");
    /* A name longer than MB_CONFIG_MAX_NAME. */
    load_fails("[nats]\naaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa = 1\n", MB_EINVAL,
               ":2: invalid key name");
    /* A line our checks pass but libinih refuses (its inline comment hides
     * the '='), reported with its line number like the others. */
    load_fails("[nats]\nname = a\nkey ;= v\n", MB_EINVAL,
               ":3: expected \"key = value\" or a [section] header");
    /* The first error in the file is the one reported. */
    load_fails("[nats]\nbad line\nname = a\nname = b\n", MB_EINVAL, ":2: expected");

    char text[] = "[nats]\nname = a\0b\n";
    char *path = tmp_file(text, sizeof text - 1);
    mb_config *cfg = NULL;
    mb_err err = {0};
    assert_int_equal(mb_config_load(path, no_env, NULL, &cfg, &err), MB_EINVAL);
    assert_contains(err.msg, ":2: NUL byte");
    assert_null(cfg);
    rm_file(path);
}

static void test_unknown_section_refused(void **state)
{
    (void)state;
    load_fails("[nats]\nname = a\n[nast]\nx = 1\n", MB_EINVAL,
               ":3: unknown section [nast] (known: gateway, nats, auth");
    /* Without a table every section is accepted. */
    char *path = tmp_text("[anything.goes]\nx = 1\n");
    mb_config *cfg = NULL;
    assert_int_equal(mb_config_load(path, no_env, NULL, &cfg, NULL), MB_OK);
    assert_string_equal(mb_config_get_str(cfg, "anything.goes", "x", NULL), "1");
    mb_config_destroy(cfg);
    rm_file(path);
}

static void test_file_bounds(void **state)
{
    (void)state;
    /* A line of exactly MB_CONFIG_MAX_LINE bytes is read whole (libinih on
     * its own would split it at 200 bytes), one byte more is refused. */
    size_t vlen = MB_CONFIG_MAX_LINE - strlen("v = ");
    char *text = malloc(MB_CONFIG_MAX_FILE_BYTES + 16);
    assert_non_null(text);
    int n = snprintf(text, 64, "[nats]\nv = ");
    memset(text + n, 'x', vlen);
    strcpy(text + n + vlen, "\n");
    mb_config *cfg = NULL;
    mb_err err;
    warnings w = {0};
    assert_int_equal(load(text, no_env, &cfg, &err, &w), MB_OK);
    assert_int_equal(strlen(mb_config_get_str(cfg, "nats", "v", "")), vlen);
    mb_config_destroy(cfg);

    memset(text + n, 'x', vlen + 1);
    strcpy(text + n + vlen + 1, "\n");
    load_fails(text, MB_ETOOBIG, ":2: line longer than 4096 bytes");

    /* A file of exactly the maximum loads; one byte more is refused. */
    memset(text, '#', MB_CONFIG_MAX_FILE_BYTES);
    for (size_t i = 100; i < MB_CONFIG_MAX_FILE_BYTES; i += 100)
        text[i] = '\n';
    text[MB_CONFIG_MAX_FILE_BYTES] = '\0';
    assert_int_equal(load(text, no_env, &cfg, &err, &w), MB_OK);
    mb_config_destroy(cfg);
    text[MB_CONFIG_MAX_FILE_BYTES] = '\n';
    text[MB_CONFIG_MAX_FILE_BYTES + 1] = '\0';
    load_fails(text, MB_ETOOBIG, "larger than 1048576 bytes");
    free(text);
}

static void test_key_count_bound(void **state)
{
    (void)state;
    size_t cap = 16 + (MB_CONFIG_MAX_KEYS + 1) * 16;
    char *text = malloc(cap);
    assert_non_null(text);
    size_t o = (size_t)snprintf(text, cap, "[limits]\n");
    for (int i = 0; i < MB_CONFIG_MAX_KEYS; i++)
        o += (size_t)snprintf(text + o, cap - o, "k%d = %d\n", i, i);
    mb_config *cfg = NULL;
    mb_err err;
    warnings w = {0};
    assert_int_equal(load(text, no_env, &cfg, &err, &w), MB_OK);
    assert_string_equal(mb_config_key_at(cfg, "limits", MB_CONFIG_MAX_KEYS - 1), "k4095");
    assert_null(mb_config_key_at(cfg, "limits", MB_CONFIG_MAX_KEYS));
    mb_config_destroy(cfg);

    snprintf(text + o, cap - o, "one_more = 1\n");
    load_fails(text, MB_ELIMIT, ":4098: more than 4096 keys");

    /* The environment counts too. */
    text[o] = '\0';
    const char *env[] = {"MUDBUS_LIMITS_ONE_MORE=1", NULL};
    assert_int_equal(load(text, env, &cfg, &err, &w), MB_ELIMIT);
    assert_contains(err.msg, "MUDBUS_LIMITS_ONE_MORE");
    free(text);
}

static void test_missing_and_unreadable_file(void **state)
{
    (void)state;
    mb_config *cfg = NULL;
    mb_err err = {0};
    assert_int_equal(mb_config_load("/nonexistent/mudbus.ini", no_env, NULL, &cfg, &err),
                     MB_ENOTFOUND);
    assert_contains(err.msg, "/nonexistent/mudbus.ini");
    assert_null(cfg);
    mb_err_clear(&err);
    assert_int_equal(mb_config_load("/tmp", no_env, NULL, &cfg, &err), MB_EIO);
    assert_contains(err.msg, "cannot read");
    assert_null(cfg);
    assert_int_equal(mb_config_load(NULL, no_env, NULL, NULL, NULL), MB_EINVAL);
}

/* ---- environment ---- */

static void test_env_beats_file(void **state)
{
    (void)state;
    const char *env[] = {"PATH=/usr/bin",
                         "MUDBUS_NATS_NAME=  from-env  ",
                         "MUDBUS_AUTH_JWT_SECRET=s3cret",
                         "MUDBUS_NATS_NAME=second-ignored",
                         "MUDBUS_GATEWAY_LISTEN=",
                         NULL};
    mb_config *cfg = NULL;
    mb_err err;
    warnings w = {0};
    assert_int_equal(load("[nats]\nname = from-file\npool_size = 3\n[gateway]\nlisten = :1\n", env,
                          &cfg, &err, &w),
                     MB_OK);
    assert_string_equal(mb_config_get_str(cfg, "nats", "name", NULL), "from-env");
    assert_string_equal(mb_config_source(cfg, "nats", "name"), "env MUDBUS_NATS_NAME");
    assert_string_equal(mb_config_get_str(cfg, "nats", "pool_size", NULL), "3");
    assert_contains(mb_config_source(cfg, "nats", "pool_size"), ":3");
    /* A key the file lacks is added; an empty variable sets an empty value. */
    assert_string_equal(mb_config_get_str(cfg, "auth", "jwt_secret", NULL), "s3cret");
    assert_string_equal(mb_config_get_str(cfg, "gateway", "listen", NULL), "");
    assert_int_equal(w.n, 0);
    mb_config_destroy(cfg);
}

static void test_env_unknown_section_warned(void **state)
{
    (void)state;
    const char *env[] = {"MUDBUS_NAST_SERVERS=nats://x:4222", "MUDBUS_CONFIG=/etc/x.ini",
                         "MUDBUS_NATS_=1", "MUDBUS_NATS_pool_size=3", NULL};
    const char *const ignore[] = {"MUDBUS_CONFIG", NULL};
    warnings w = {0};
    mb_config_opts o = {
        .sections = sections, .env_ignore = ignore, .warn = on_warn, .warn_ctx = &w};
    mb_config *cfg = NULL;
    mb_err err = {0};

    const char *one[] = {env[0], NULL};
    assert_int_equal(mb_config_load(NULL, one, &o, &cfg, &err), MB_OK);
    assert_int_equal(w.n, 1);
    assert_contains(w.last, "MUDBUS_NAST_SERVERS matches no config section");
    assert_contains(w.last, "gateway, nats");
    assert_false(mb_config_has(cfg, "nats", "servers"));
    mb_config_destroy(cfg);

    w.n = 0;
    assert_int_equal(mb_config_load(NULL, env, &o, &cfg, &err), MB_OK);
    /* MUDBUS_CONFIG is ignored silently; an empty and a lower-case key warn. */
    assert_int_equal(w.n, 3);
    assert_contains(w.last, "MUDBUS_NATS_pool_size does not name a key of [nats]");
    assert_null(mb_config_key_at(cfg, "nats", 0));
    mb_config_destroy(cfg);
}

static void test_env_only_no_file(void **state)
{
    (void)state;
    const char *env[] = {"MUDBUS_AUTH_JWT_SECRET=abc", "MUDBUS_NATS_SERVERS=nats://n:4222", NULL};
    mb_config *cfg = env_cfg(env);
    assert_string_equal(mb_config_get_str(cfg, "auth", "jwt_secret", NULL), "abc");
    assert_string_equal(mb_config_get_str(cfg, "nats", "servers", NULL), "nats://n:4222");
    assert_string_equal(mb_config_source(cfg, "auth", "jwt_secret"), "env MUDBUS_AUTH_JWT_SECRET");
    mb_config_destroy(cfg);

    /* Neither file nor variables: an empty config that answers defaults. */
    cfg = env_cfg(no_env);
    assert_null(mb_config_key_at(cfg, "nats", 0));
    uint64_t v = 0;
    assert_int_equal(mb_config_get_u64(cfg, "nats", "pool_size", 7, 1, 9, &v, NULL), MB_OK);
    assert_int_equal(v, 7);
    mb_config_destroy(cfg);
}

static void test_env_process_environment(void **state)
{
    (void)state;
    const char *const secs[] = {"testsec", NULL};
    mb_config_opts o = {.sections = secs};
    assert_int_equal(setenv("MUDBUS_TESTSEC_PROBE", "42", 1), 0);
    mb_config *cfg = NULL;
    mb_status st = mb_config_load(NULL, NULL, &o, &cfg, NULL);
    unsetenv("MUDBUS_TESTSEC_PROBE");
    assert_int_equal(st, MB_OK);
    assert_string_equal(mb_config_get_str(cfg, "testsec", "probe", NULL), "42");
    mb_config_destroy(cfg);
}

static void test_env_section_resolution(void **state)
{
    (void)state;
    /* The longer prefix wins: STORE_SQLITE_ is [store.sqlite]. */
    const char *const secs[] = {"store", "store.sqlite", NULL};
    const char *env[] = {"MUDBUS_STORE_SQLITE_PATH=/var/lib/m.db", "MUDBUS_STORE_BACKEND=sqlite",
                         NULL};
    mb_config_opts o = {.sections = secs};
    mb_config *cfg = NULL;
    mb_err err = {0};
    assert_int_equal(mb_config_load(NULL, env, &o, &cfg, &err), MB_OK);
    assert_string_equal(mb_config_get_str(cfg, "store.sqlite", "path", NULL), "/var/lib/m.db");
    assert_false(mb_config_has(cfg, "store", "sqlite_path"));
    assert_string_equal(mb_config_get_str(cfg, "store", "backend", NULL), "sqlite");
    mb_config_destroy(cfg);

    /* Two sections with one prefix are refused; so are invalid names. */
    const char *const clash[] = {"store_sqlite", "store.sqlite", NULL};
    o.sections = clash;
    assert_int_equal(mb_config_load(NULL, env, &o, &cfg, &err), MB_EINVAL);
    assert_contains(err.msg, "MUDBUS_STORE_SQLITE_");
    const char *const bad[] = {"has space", NULL};
    o.sections = bad;
    mb_err_clear(&err);
    assert_int_equal(mb_config_load(NULL, env, &o, &cfg, &err), MB_EINVAL);
    assert_contains(err.msg, "has space");

    /* Without a table, the file's sections resolve the environment. */
    char *path = tmp_text("[game]\nport = 1\n");
    const char *env2[] = {"MUDBUS_GAME_PORT=2", "MUDBUS_OTHER_X=1", NULL};
    warnings w = {0};
    mb_config_opts o2 = {.warn = on_warn, .warn_ctx = &w};
    assert_int_equal(mb_config_load(path, env2, &o2, &cfg, NULL), MB_OK);
    assert_string_equal(mb_config_get_str(cfg, "game", "port", NULL), "2");
    assert_int_equal(w.n, 1);
    assert_contains(w.last, "MUDBUS_OTHER_X");
    mb_config_destroy(cfg);
    rm_file(path);
}

static void test_env_value_bound(void **state)
{
    (void)state;
    size_t n = strlen("MUDBUS_NATS_NAME=");
    char *var = malloc(n + MB_CONFIG_MAX_LINE + 2);
    assert_non_null(var);
    memcpy(var, "MUDBUS_NATS_NAME=", n);
    memset(var + n, 'v', MB_CONFIG_MAX_LINE);
    var[n + MB_CONFIG_MAX_LINE] = '\0';
    const char *env[] = {var, NULL};
    mb_config *cfg = env_cfg(env);
    assert_int_equal(strlen(mb_config_get_str(cfg, "nats", "name", "")), MB_CONFIG_MAX_LINE);
    mb_config_destroy(cfg);

    var[n + MB_CONFIG_MAX_LINE] = 'v';
    var[n + MB_CONFIG_MAX_LINE + 1] = '\0';
    mb_config_opts o = {.sections = sections};
    mb_err err = {0};
    cfg = NULL;
    assert_int_equal(mb_config_load(NULL, env, &o, &cfg, &err), MB_ETOOBIG);
    assert_contains(err.msg, "MUDBUS_NATS_NAME: value longer than 4096 bytes");
    assert_null(cfg);
    free(var);
}

/* ---- getters ---- */

static void test_get_bool(void **state)
{
    (void)state;
    const char *env[] = {"MUDBUS_GATEWAY_A=true", "MUDBUS_GATEWAY_B=YES",     "MUDBUS_GATEWAY_C=On",
                         "MUDBUS_GATEWAY_D=1",    "MUDBUS_GATEWAY_E=false",   "MUDBUS_GATEWAY_F=no",
                         "MUDBUS_GATEWAY_G=OFF",  "MUDBUS_GATEWAY_H=0",       "MUDBUS_GATEWAY_I=2",
                         "MUDBUS_GATEWAY_J=",     "MUDBUS_GATEWAY_K=enabled", NULL};
    mb_config *cfg = env_cfg(env);
    const char *yes[] = {"a", "b", "c", "d"}, *no[] = {"e", "f", "g", "h"};
    for (int i = 0; i < 4; i++) {
        bool v = false;
        assert_int_equal(mb_config_get_bool(cfg, "gateway", yes[i], false, &v, NULL), MB_OK);
        assert_true(v);
        assert_int_equal(mb_config_get_bool(cfg, "gateway", no[i], true, &v, NULL), MB_OK);
        assert_false(v);
    }
    const char *bad[] = {"i", "j", "k"};
    for (int i = 0; i < 3; i++) {
        bool v = true;
        mb_err err = {0};
        assert_int_equal(mb_config_get_bool(cfg, "gateway", bad[i], false, &v, &err), MB_EINVAL);
        assert_true(v); /* unchanged */
        assert_contains(err.msg, "is not a boolean");
        assert_contains(err.msg, "(env MUDBUS_GATEWAY_");
    }
    bool v = false;
    assert_int_equal(mb_config_get_bool(cfg, "gateway", "unset", true, &v, NULL), MB_OK);
    assert_true(v);
    mb_config_destroy(cfg);
}

static void test_get_u64_and_i64(void **state)
{
    (void)state;
    const char *env[] = {"MUDBUS_LIMITS_MAX=18446744073709551615",
                         "MUDBUS_LIMITS_OVER=18446744073709551616",
                         "MUDBUS_LIMITS_NEG=-1",
                         "MUDBUS_LIMITS_PLUS=+5",
                         "MUDBUS_LIMITS_HEX=0x10",
                         "MUDBUS_LIMITS_EMPTY=",
                         "MUDBUS_LIMITS_UNIT=5s",
                         "MUDBUS_LIMITS_SEVEN=007",
                         "MUDBUS_LIMITS_MIN=-9223372036854775808",
                         "MUDBUS_LIMITS_UNDER=-9223372036854775809",
                         NULL};
    mb_config *cfg = env_cfg(env);
    uint64_t u = 0;
    assert_int_equal(mb_config_get_u64(cfg, "limits", "max", 0, 0, UINT64_MAX, &u, NULL), MB_OK);
    assert_true(u == UINT64_MAX);
    assert_int_equal(mb_config_get_u64(cfg, "limits", "seven", 0, 0, 10, &u, NULL), MB_OK);
    assert_int_equal(u, 7);

    struct {
        const char *key, *msg;
    } bad[] = {{"over", "is too large"},
               {"neg", "\"-1\" is not a whole number"},
               {"plus", "is not a whole number"},
               {"hex", "is not a whole number"},
               {"empty", "\"\" is not a whole number"},
               {"unit", "is not a whole number"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        mb_err err = {0};
        u = 99;
        assert_int_equal(mb_config_get_u64(cfg, "limits", bad[i].key, 0, 0, UINT64_MAX, &u, &err),
                         MB_EINVAL);
        assert_int_equal(u, 99);
        assert_contains(err.msg, bad[i].msg);
    }
    mb_err err = {0};
    assert_int_equal(mb_config_get_u64(cfg, "limits", "seven", 0, 8, 16, &u, &err), MB_EINVAL);
    assert_string_equal(err.msg, "[limits] seven (env MUDBUS_LIMITS_SEVEN): \"007\" is out of "
                                 "range (8 to 16)");

    int64_t s = 0;
    assert_int_equal(mb_config_get_i64(cfg, "limits", "neg", 0, -1, 10, &s, NULL), MB_OK);
    assert_int_equal(s, -1);
    assert_int_equal(mb_config_get_i64(cfg, "limits", "min", 0, INT64_MIN, 0, &s, NULL), MB_OK);
    assert_true(s == INT64_MIN);
    mb_err_clear(&err);
    assert_int_equal(mb_config_get_i64(cfg, "limits", "under", 0, INT64_MIN, 0, &s, &err),
                     MB_EINVAL);
    assert_contains(err.msg, "is too large");
    mb_err_clear(&err);
    assert_int_equal(mb_config_get_i64(cfg, "limits", "neg", 0, 0, 10, &s, &err), MB_EINVAL);
    assert_contains(err.msg, "out of range (0 to 10)");
    mb_err_clear(&err);
    assert_int_equal(mb_config_get_i64(cfg, "limits", "plus", 0, 0, 10, &s, &err), MB_EINVAL);
    mb_config_destroy(cfg);
}

static void test_get_duration(void **state)
{
    (void)state;
    const char *env[] = {"MUDBUS_NATS_A=500ms",
                         "MUDBUS_NATS_B=5s",
                         "MUDBUS_NATS_C=2m",
                         "MUDBUS_NATS_D=1h",
                         "MUDBUS_NATS_E=250",
                         "MUDBUS_NATS_F=0",
                         "MUDBUS_NATS_CONNECT_TIMEOUT=5 sec",
                         "MUDBUS_NATS_G=5S",
                         "MUDBUS_NATS_H=1.5s",
                         "MUDBUS_NATS_I=-1s",
                         "MUDBUS_NATS_J=s",
                         "MUDBUS_NATS_K=",
                         "MUDBUS_NATS_L=5d",
                         "MUDBUS_NATS_M=9999999999999999h",
                         NULL};
    mb_config *cfg = env_cfg(env);
    struct {
        const char *key;
        uint64_t ms;
    } ok[] = {{"a", 500}, {"b", 5000}, {"c", 120000}, {"d", 3600000}, {"e", 250}, {"f", 0}};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        uint64_t v = 1;
        assert_int_equal(
            mb_config_get_duration_ms(cfg, "nats", ok[i].key, 0, 0, UINT64_MAX, &v, NULL), MB_OK);
        assert_int_equal(v, ok[i].ms);
    }
    mb_err err = {0};
    uint64_t v = 77;
    assert_int_equal(
        mb_config_get_duration_ms(cfg, "nats", "connect_timeout", 0, 0, UINT64_MAX, &v, &err),
        MB_EINVAL);
    assert_string_equal(err.msg, "[nats] connect_timeout (env MUDBUS_NATS_CONNECT_TIMEOUT): "
                                 "\"5 sec\" is not a duration (a whole number with ms, s, m or "
                                 "h, e.g. 500ms or 5s)");
    const char *bad[] = {"g", "h", "i", "j", "k", "l"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        mb_err_clear(&err);
        assert_int_equal(mb_config_get_duration_ms(cfg, "nats", bad[i], 0, 0, UINT64_MAX, &v, &err),
                         MB_EINVAL);
        assert_contains(err.msg, "is not a duration");
    }
    mb_err_clear(&err);
    assert_int_equal(mb_config_get_duration_ms(cfg, "nats", "m", 0, 0, UINT64_MAX, &v, &err),
                     MB_EINVAL);
    assert_contains(err.msg, "is too large");
    mb_err_clear(&err);
    assert_int_equal(mb_config_get_duration_ms(cfg, "nats", "d", 0, 1, 600000, &v, &err),
                     MB_EINVAL);
    assert_contains(err.msg, "\"1h\" is out of range (1ms to 10m)");
    assert_int_equal(v, 77);
    assert_int_equal(mb_config_get_duration_ms(cfg, "nats", "unset", 1500, 0, 1, &v, NULL), MB_OK);
    assert_int_equal(v, 1500);
    mb_config_destroy(cfg);
}

static void test_get_size(void **state)
{
    (void)state;
    const char *env[] = {"MUDBUS_DLQ_A=64KiB", "MUDBUS_DLQ_B=8MiB",
                         "MUDBUS_DLQ_C=1GiB",  "MUDBUS_DLQ_D=512",
                         "MUDBUS_DLQ_E=10B",   "MUDBUS_DLQ_F=8mib",
                         "MUDBUS_DLQ_G=8MB",   "MUDBUS_DLQ_H=1.5MiB",
                         "MUDBUS_DLQ_I=",      "MUDBUS_DLQ_J=99999999999GiB",
                         "MUDBUS_DLQ_K=8 MiB", NULL};
    mb_config *cfg = env_cfg(env);
    struct {
        const char *key;
        uint64_t bytes;
    } ok[] = {{"a", 65536}, {"b", 8u << 20}, {"c", 1u << 30},
              {"d", 512},   {"e", 10},       {"f", 8u << 20}};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        uint64_t v = 1;
        assert_int_equal(mb_config_get_size(cfg, "dlq", ok[i].key, 0, 0, UINT64_MAX, &v, NULL),
                         MB_OK);
        assert_int_equal(v, ok[i].bytes);
    }
    const char *bad[] = {"g", "h", "i", "k"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        mb_err err = {0};
        uint64_t v = 3;
        assert_int_equal(mb_config_get_size(cfg, "dlq", bad[i], 0, 0, UINT64_MAX, &v, &err),
                         MB_EINVAL);
        assert_contains(err.msg, "is not a size");
        assert_int_equal(v, 3);
    }
    mb_err err = {0};
    uint64_t v = 0;
    assert_int_equal(mb_config_get_size(cfg, "dlq", "j", 0, 0, UINT64_MAX, &v, &err), MB_EINVAL);
    assert_contains(err.msg, "is too large");
    mb_err_clear(&err);
    assert_int_equal(mb_config_get_size(cfg, "dlq", "c", 0, 1024, 64u << 20, &v, &err), MB_EINVAL);
    assert_contains(err.msg, "out of range (1KiB to 64MiB)");
    mb_config_destroy(cfg);
}

static void test_get_list(void **state)
{
    (void)state;
    const char *env[] = {"MUDBUS_NATS_A= x , y,z ",
                         "MUDBUS_NATS_B=",
                         "MUDBUS_NATS_C=a,,b",
                         "MUDBUS_NATS_D=a,b,",
                         "MUDBUS_NATS_E=1,2,3,4",
                         "MUDBUS_NATS_F=solo",
                         NULL};
    mb_config *cfg = env_cfg(env);
    const char *items[3] = {"keep", NULL, NULL};
    size_t n = 42;
    assert_int_equal(mb_config_get_list(cfg, "nats", "unset", items, 3, &n, NULL), MB_OK);
    assert_int_equal(n, 42);
    assert_string_equal(items[0], "keep");

    assert_int_equal(mb_config_get_list(cfg, "nats", "a", items, 3, &n, NULL), MB_OK);
    assert_int_equal(n, 3);
    assert_string_equal(items[0], "x");
    assert_string_equal(items[1], "y");
    assert_string_equal(items[2], "z");
    assert_int_equal(mb_config_get_list(cfg, "nats", "f", items, 3, &n, NULL), MB_OK);
    assert_int_equal(n, 1);
    assert_string_equal(items[0], "solo");
    assert_int_equal(mb_config_get_list(cfg, "nats", "b", items, 3, &n, NULL), MB_OK);
    assert_int_equal(n, 0);

    mb_err err = {0};
    n = 9;
    assert_int_equal(mb_config_get_list(cfg, "nats", "c", items, 3, &n, &err), MB_EINVAL);
    assert_contains(err.msg, "has an empty item (item 2)");
    assert_int_equal(n, 9);
    mb_err_clear(&err);
    assert_int_equal(mb_config_get_list(cfg, "nats", "d", items, 3, &n, &err), MB_EINVAL);
    assert_contains(err.msg, "(item 3)");
    mb_err_clear(&err);
    assert_int_equal(mb_config_get_list(cfg, "nats", "e", items, 3, &n, &err), MB_EINVAL);
    assert_contains(err.msg, "has 4 items; at most 3 are allowed");
    mb_config_destroy(cfg);
}

static void test_null_config_gives_defaults(void **state)
{
    (void)state;
    bool b = false;
    uint64_t u = 0;
    assert_int_equal(mb_config_get_bool(NULL, "nats", "tls", true, &b, NULL), MB_OK);
    assert_true(b);
    assert_int_equal(mb_config_get_duration_ms(NULL, "nats", "x", 9, 0, 1, &u, NULL), MB_OK);
    assert_int_equal(u, 9);
    assert_string_equal(mb_config_get_str(NULL, "nats", "x", "d"), "d");
    assert_null(mb_config_source(NULL, "nats", "x"));
    assert_int_equal(mb_config_check_keys(NULL, "nats", NULL, NULL), MB_OK);
    mb_config_destroy(NULL);
}

static void test_source_reporting_and_quoting(void **state)
{
    (void)state;
    char *path = tmp_text("[nats]\n\n# c\npool_size = lots\n");
    const char *env[] = {"MUDBUS_NATS_NAME=a\x01\"b", NULL};
    mb_config_opts o = {.sections = sections};
    mb_config *cfg = NULL;
    assert_int_equal(mb_config_load(path, env, &o, &cfg, NULL), MB_OK);
    char want[128];
    snprintf(want, sizeof want, "%s:4", path);
    assert_string_equal(mb_config_source(cfg, "nats", "pool_size"), want);
    assert_string_equal(mb_config_source(cfg, "nats", "name"), "env MUDBUS_NATS_NAME");
    assert_null(mb_config_source(cfg, "nats", "servers"));

    mb_err err = {0};
    uint64_t v;
    assert_int_equal(mb_config_get_u64(cfg, "nats", "pool_size", 2, 1, 32, &v, &err), MB_EINVAL);
    snprintf(want, sizeof want, "[nats] pool_size (%s:4): \"lots\" is not a whole number", path);
    assert_contains(err.msg, want);
    /* Control characters and quotes are escaped in messages. */
    mb_err_clear(&err);
    assert_int_equal(mb_config_get_u64(cfg, "nats", "name", 2, 1, 32, &v, &err), MB_EINVAL);
    assert_contains(err.msg, "\"a\\x01\\x22b\"");
    mb_config_destroy(cfg);
    rm_file(path);
}

static void test_check_keys(void **state)
{
    (void)state;
    const char *const known[] = {"listen", "instance_id", "dev_login", NULL};
    mb_config *cfg = NULL;
    mb_err err;
    warnings w = {0};
    assert_int_equal(load("[gateway]\nlisten = :80\ninstance_id = g1\n", no_env, &cfg, &err, &w),
                     MB_OK);
    assert_int_equal(mb_config_check_keys(cfg, "gateway", known, &err), MB_OK);
    assert_int_equal(mb_config_check_keys(cfg, "nats", known, &err), MB_OK); /* empty */
    assert_string_equal(mb_config_key_at(cfg, "gateway", 1), "instance_id");
    mb_config_destroy(cfg);

    assert_int_equal(
        load("[gateway]\nlisten = :80\nlisen = :81\nzzz = 1\n", no_env, &cfg, &err, &w), MB_OK);
    assert_int_equal(mb_config_check_keys(cfg, "gateway", known, &err), MB_EINVAL);
    assert_contains(err.msg, "[gateway] lisen (");
    assert_contains(err.msg, ":3): unknown key; did you mean listen?");
    mb_config_destroy(cfg);

    /* A far-off key gets no suggestion; an environment typo names the
     * variable. */
    const char *env[] = {"MUDBUS_GATEWAY_COLOUR=red", NULL};
    cfg = env_cfg(env);
    mb_err_clear(&err);
    assert_int_equal(mb_config_check_keys(cfg, "gateway", known, &err), MB_EINVAL);
    assert_string_equal(err.msg, "[gateway] colour (env MUDBUS_GATEWAY_COLOUR): unknown key");
    mb_config_destroy(cfg);
}

/* ---- client options ---- */

/* The client's own defaults: the mapping starts from them. */
static void opts_defaults(mb_client_opts *o)
{
    mb_client_opts_default(o);
}

static const char all_keys[] = "[nats]\n"
                               "servers = tls://a:4222, tls://b:4222 ,nats://c:4222\n"
                               "name = game-1\n"
                               "pool_size = 4\n"
                               "tls = yes\n"
                               "tls_ca_file = /etc/ca.pem\n"
                               "tls_cert_file = /etc/c.pem\n"
                               "tls_key_file = /etc/k.pem\n"
                               "tls_hostname = nats.internal\n"
                               "tls_skip_verify = off\n"
                               "user = game\n"
                               "password = pw;x\n"
                               "token = tok\n"
                               "nkey_seed_file = /etc/seed\n"
                               "nkey_public = UABC\n"
                               "creds_file = /etc/x.creds\n"
                               "max_reconnect = 10\n"
                               "reconnect_wait = 3s\n"
                               "reconnect_jitter = 250ms\n"
                               "reconnect_buffer = 4MiB\n"
                               "io_buffer = 256KiB\n"
                               "connect_timeout = 1500\n"
                               "start_disconnected = true\n"
                               "health_interval = 2s\n"
                               "health_timeout = 200ms\n"
                               "health_failures = 5\n"
                               "retry_max_attempts = 6\n"
                               "retry_base_delay = 20ms\n"
                               "retry_max_delay = 2s\n"
                               "retry_deadline = 1m\n"
                               "retry_jitter = decorrelated\n"
                               "retry_queue_max = 1000\n"
                               "budget_max_tokens = 300\n"
                               "breaker_failure_rate = 40\n"
                               "breaker_open = 10s\n"
                               "breaker_min_calls = 30\n"
                               "breaker_window = 200\n"
                               "breaker_half_open_calls = 7\n"
                               "poll_mode = on\n"
                               "no_echo = on\n"
                               "dispatch_queue_max = 2000\n"
                               "sub_pending_msgs = 1000\n"
                               "sub_pending_bytes = 16MiB\n"
                               "max_payload = 512KiB\n"
                               "js = on\n"
                               "js_critical_subjects = chat.whisper.player.*, chat.system.> ,"
                               "mutes.*.changed,audit.log\n"
                               "js_stream = GAME_CRIT-1\n"
                               "js_memory_storage = yes\n"
                               "js_max_age = 2h\n"
                               "js_duplicate_window = 90s\n"
                               "js_ack_wait = 45s\n"
                               "js_max_deliver = 9\n"
                               "js_durable_prefix = game_1-a\n"
                               "js_fetch_batch = 128\n"
                               "js_fetch_timeout = 250ms\n"
                               "js_publish_ack_timeout = 3s\n"
                               "js_max_pending = 1000\n";

static void test_client_opts_every_key(void **state)
{
    (void)state;
    mb_config *cfg = NULL;
    mb_err err;
    warnings w = {0};
    assert_int_equal(load(all_keys, no_env, &cfg, &err, &w), MB_OK);
    mb_client_opts o;
    opts_defaults(&o);
    assert_int_equal(mb_client_opts_from_config(cfg, "nats", &o, &err), MB_OK);
    assert_int_equal(o.nservers, 3);
    assert_string_equal(o.servers[0], "tls://a:4222");
    assert_string_equal(o.servers[1], "tls://b:4222");
    assert_string_equal(o.servers[2], "nats://c:4222");
    assert_null(o.servers[3]);
    assert_string_equal(o.name, "game-1");
    assert_int_equal(o.pool_size, 4);
    assert_true(o.tls.enabled);
    assert_string_equal(o.tls.ca_file, "/etc/ca.pem");
    assert_string_equal(o.tls.cert_file, "/etc/c.pem");
    assert_string_equal(o.tls.key_file, "/etc/k.pem");
    assert_string_equal(o.tls.hostname, "nats.internal");
    assert_false(o.tls.skip_verify);
    assert_string_equal(o.auth.user, "game");
    assert_string_equal(o.auth.password, "pw;x");
    assert_string_equal(o.auth.token, "tok");
    assert_string_equal(o.auth.nkey_seed_file, "/etc/seed");
    assert_string_equal(o.auth.nkey_public, "UABC");
    assert_string_equal(o.auth.creds_file, "/etc/x.creds");
    assert_int_equal(o.max_reconnect, 10);
    assert_int_equal(o.reconnect_wait_ms, 3000);
    assert_int_equal(o.reconnect_jitter_ms, 250);
    assert_int_equal(o.reconnect_buf_bytes, 4u << 20);
    assert_int_equal(o.io_buf_bytes, 256u << 10);
    assert_int_equal(o.connect_timeout_ms, 1500);
    assert_true(o.start_disconnected);
    assert_int_equal(o.health_interval_ms, 2000);
    assert_int_equal(o.health_timeout_ms, 200);
    assert_int_equal(o.health_failures, 5);
    assert_int_equal(o.retry.max_attempts, 6);
    assert_int_equal(o.retry.base_delay_ms, 20);
    assert_int_equal(o.retry.max_delay_ms, 2000);
    assert_int_equal(o.retry.deadline_ms, 60000);
    assert_int_equal(o.retry.jitter, MB_JITTER_DECORRELATED);
    assert_int_equal(o.retry_queue_max, 1000);
    assert_int_equal(o.budget.max_tokens, 300);
    assert_int_equal(o.breaker.failure_rate_pct, 40);
    assert_int_equal(o.breaker.open_ms, 10000);
    assert_int_equal(o.breaker.min_calls, 30);
    assert_int_equal(o.breaker.window, MB_BREAKER_WINDOW_COUNT);
    assert_int_equal(o.breaker.window_size, 200);
    assert_int_equal(o.breaker.half_open_calls, 7);
    assert_true(o.poll_mode);
    assert_true(o.no_echo);
    assert_int_equal(o.dispatch_queue_max, 2000);
    assert_int_equal(o.sub_pending_msgs, 1000);
    assert_int_equal(o.sub_pending_bytes, 16 << 20);
    assert_int_equal(o.max_payload, 512u << 10);
    assert_true(o.js.enabled);
    assert_int_equal(o.js.ncritical, 4);
    assert_string_equal(o.js.critical_subjects[0], "chat.whisper.player.*");
    assert_string_equal(o.js.critical_subjects[1], "chat.system.>");
    assert_string_equal(o.js.critical_subjects[2], "mutes.*.changed");
    assert_string_equal(o.js.critical_subjects[3], "audit.log");
    assert_null(o.js.critical_subjects[4]); /* the defaults' rest is cleared */
    assert_string_equal(o.js.stream, "GAME_CRIT-1");
    assert_true(o.js.memory_storage);
    assert_int_equal(o.js.max_age_ms, 2 * 3600 * 1000);
    assert_int_equal(o.js.duplicate_window_ms, 90000);
    assert_int_equal(o.js.ack_wait_ms, 45000);
    assert_int_equal(o.js.max_deliver, 9);
    assert_string_equal(o.js.durable_prefix, "game_1-a");
    assert_int_equal(o.js.fetch_batch, 128);
    assert_int_equal(o.js.fetch_timeout_ms, 250);
    assert_int_equal(o.js.publish_ack_timeout_ms, 3000);
    assert_int_equal(o.js.max_pending, 1000);
    mb_config_destroy(cfg);
}

static void test_client_opts_env_and_special_forms(void **state)
{
    (void)state;
    /* The environment reaches the client too; an empty optional string
     * clears the file's; "off" and a time window have their own forms. */
    const char *env[] = {"MUDBUS_NATS_SERVERS=nats://x:1",
                         "MUDBUS_NATS_TLS_CA_FILE=",
                         "MUDBUS_NATS_MAX_RECONNECT=-1",
                         "MUDBUS_NATS_BREAKER_FAILURE_RATE=off",
                         "MUDBUS_NATS_BREAKER_WINDOW=2m",
                         "MUDBUS_NATS_RETRY_JITTER=none",
                         NULL};
    mb_config *cfg = NULL;
    mb_err err;
    warnings w = {0};
    assert_int_equal(
        load("[nats]\ntls_ca_file = /etc/ca.pem\nmax_reconnect = 5\n", env, &cfg, &err, &w), MB_OK);
    mb_client_opts o;
    opts_defaults(&o);
    o.max_reconnect = 3;
    o.tls.ca_file = "/caller/ca.pem";
    assert_int_equal(mb_client_opts_from_config(cfg, "nats", &o, &err), MB_OK);
    assert_int_equal(o.nservers, 1);
    assert_string_equal(o.servers[0], "nats://x:1");
    assert_null(o.servers[1]);
    assert_null(o.tls.ca_file);
    assert_int_equal(o.max_reconnect, -1);
    assert_true(o.breaker.failure_rate_pct == MB_BREAKER_OFF);
    assert_int_equal(o.breaker.window, MB_BREAKER_WINDOW_TIME);
    assert_int_equal(o.breaker.window_size, 120);
    assert_int_equal(o.retry.jitter, MB_JITTER_NONE);
    /* Keys that are not set keep the caller's values. */
    assert_string_equal(o.name, "mudbus");
    assert_int_equal(o.pool_size, 2);
    assert_int_equal(o.health_interval_ms, 5000);
    mb_config_destroy(cfg);

    /* An empty section changes nothing. */
    cfg = env_cfg(no_env);
    mb_client_opts before, after;
    opts_defaults(&before);
    memcpy(&after, &before, sizeof after);
    assert_int_equal(mb_client_opts_from_config(cfg, "nats", &after, NULL), MB_OK);
    assert_ptr_equal(after.servers[0], before.servers[0]);
    assert_int_equal(after.nservers, 1);
    assert_ptr_equal(after.name, before.name);
    assert_int_equal(after.pool_size, before.pool_size);
    assert_int_equal(after.max_reconnect, before.max_reconnect);
    assert_int_equal(after.reconnect_buf_bytes, before.reconnect_buf_bytes);
    assert_int_equal(after.health_timeout_ms, before.health_timeout_ms);
    assert_memory_equal(&after.retry, &before.retry, sizeof after.retry);
    assert_memory_equal(&after.breaker, &before.breaker, sizeof after.breaker);
    assert_false(after.tls.enabled);
    assert_null(after.auth.user);
    assert_memory_equal(&after.js, &before.js, sizeof after.js);
    mb_config_destroy(cfg);
}

static void test_client_opts_js(void **state)
{
    (void)state;
    /* Keys that are not set keep the caller's values; an empty name goes
     * back to the client's default (NULL); a full list of critical subjects
     * is accepted and its items point into the config. */
    const char *env[] = {"MUDBUS_NATS_JS=true",
                         "MUDBUS_NATS_JS_STREAM=",
                         "MUDBUS_NATS_JS_DURABLE_PREFIX=",
                         "MUDBUS_NATS_JS_CRITICAL_SUBJECTS=a.1,a.2,a.3,a.4,a.5,a.6,a.7,a.8,a.9,"
                         "a.10,a.11,a.12,a.13,a.14,a.15,a.>",
                         "MUDBUS_NATS_JS_MAX_PENDING=1000000",
                         NULL};
    mb_config *cfg = env_cfg(env);
    mb_client_opts o;
    opts_defaults(&o);
    mb_client_js_opts before = o.js;
    o.js.stream = "CALLER";
    o.js.durable_prefix = "caller";
    assert_int_equal(mb_client_opts_from_config(cfg, "nats", &o, NULL), MB_OK);
    assert_true(o.js.enabled);
    assert_null(o.js.stream);
    assert_null(o.js.durable_prefix);
    assert_int_equal(o.js.ncritical, MB_CLIENT_MAX_CRITICAL);
    assert_string_equal(o.js.critical_subjects[0], "a.1");
    assert_string_equal(o.js.critical_subjects[15], "a.>");
    const char *items[MB_CLIENT_MAX_CRITICAL];
    size_t n = 0;
    assert_int_equal(mb_config_get_list(cfg, "nats", "js_critical_subjects", items,
                                        MB_CLIENT_MAX_CRITICAL, &n, NULL),
                     MB_OK);
    assert_ptr_equal(o.js.critical_subjects[0], items[0]);
    assert_int_equal(o.js.max_pending, 1000000);
    assert_false(o.js.memory_storage);
    assert_int_equal(o.js.max_age_ms, before.max_age_ms);
    assert_int_equal(o.js.duplicate_window_ms, before.duplicate_window_ms);
    assert_int_equal(o.js.ack_wait_ms, before.ack_wait_ms);
    assert_int_equal(o.js.max_deliver, before.max_deliver);
    assert_int_equal(o.js.fetch_batch, before.fetch_batch);
    assert_int_equal(o.js.fetch_timeout_ms, before.fetch_timeout_ms);
    assert_int_equal(o.js.publish_ack_timeout_ms, before.publish_ack_timeout_ms);
    mb_config_destroy(cfg);

    /* The dedup window may not outlast the stream's messages: reported
     * against js_duplicate_window when it is set, else js_max_age. */
    const char *env2[] = {"MUDBUS_NATS_JS_MAX_AGE=1h", "MUDBUS_NATS_JS_DUPLICATE_WINDOW=2h", NULL};
    cfg = env_cfg(env2);
    opts_defaults(&o);
    mb_client_opts keep = o;
    mb_err err = {0};
    assert_int_equal(mb_client_opts_from_config(cfg, "nats", &o, &err), MB_EINVAL);
    assert_string_equal(err.msg, "[nats] js_duplicate_window (env "
                                 "MUDBUS_NATS_JS_DUPLICATE_WINDOW): js_duplicate_window "
                                 "(7200000ms) is longer than js_max_age (3600000ms)");
    assert_memory_equal(&keep, &o, sizeof o);
    mb_config_destroy(cfg);

    /* Without JetStream and without either key, the caller's own values are
     * not second-guessed. */
    cfg = env_cfg(no_env);
    opts_defaults(&o);
    memset(&o.js, 0, sizeof o.js);
    o.js.duplicate_window_ms = 5;
    assert_int_equal(mb_client_opts_from_config(cfg, "nats", &o, NULL), MB_OK);
    mb_config_destroy(cfg);
}

static void test_client_opts_unknown_key(void **state)
{
    (void)state;
    mb_config *cfg = NULL;
    mb_err err;
    warnings w = {0};
    assert_int_equal(load("[nats]\npool_size = 4\npool_sise = 4\n", no_env, &cfg, &err, &w), MB_OK);
    mb_client_opts o;
    opts_defaults(&o);
    mb_client_opts before = o;
    mb_err_clear(&err);
    assert_int_equal(mb_client_opts_from_config(cfg, "nats", &o, &err), MB_EINVAL);
    assert_contains(err.msg, "[nats] pool_sise (");
    assert_contains(err.msg, ":3): unknown key; did you mean pool_size?");
    assert_memory_equal(&before, &o, sizeof o);
    mb_config_destroy(cfg);

    /* A misspelt JetStream key is caught like any other. */
    assert_int_equal(load("[nats]\njs = on\njs_strem = X\n", no_env, &cfg, &err, &w), MB_OK);
    opts_defaults(&o);
    before = o;
    mb_err_clear(&err);
    assert_int_equal(mb_client_opts_from_config(cfg, "nats", &o, &err), MB_EINVAL);
    assert_contains(err.msg, "[nats] js_strem (");
    assert_contains(err.msg, ":3): unknown key; did you mean js_stream?");
    assert_memory_equal(&before, &o, sizeof o);
    mb_config_destroy(cfg);

    /* An unknown js_ key far from every known one. */
    const char *env[] = {"MUDBUS_NATS_JS_CONSUMER_MODE=push", NULL};
    cfg = env_cfg(env);
    mb_err_clear(&err);
    assert_int_equal(mb_client_opts_from_config(cfg, "nats", &o, &err), MB_EINVAL);
    assert_string_equal(err.msg, "[nats] js_consumer_mode (env MUDBUS_NATS_JS_CONSUMER_MODE): "
                                 "unknown key");
    assert_memory_equal(&before, &o, sizeof o);
    mb_config_destroy(cfg);
}

static void test_client_opts_bad_values(void **state)
{
    (void)state;
    struct {
        const char *var, *msg;
    } cases[] = {
        {"MUDBUS_NATS_POOL_SIZE=0", "[nats] pool_size (env MUDBUS_NATS_POOL_SIZE): \"0\" is out "
                                    "of range (1 to 32)"},
        {"MUDBUS_NATS_POOL_SIZE=33", "\"33\" is out of range (1 to 32)"},
        {"MUDBUS_NATS_SERVERS=", "[nats] servers (env MUDBUS_NATS_SERVERS): needs at least one"},
        {"MUDBUS_NATS_SERVERS=nats://a:1,http://b:2",
         "[nats] servers (env MUDBUS_NATS_SERVERS): item 2 \"http://b:2\" is not a nats:// or "
         "tls:// URL"},
        {"MUDBUS_NATS_SERVERS=nats://", "item 1 \"nats://\" is not"},
        {"MUDBUS_NATS_SERVERS=nats://1,nats://2,nats://3,nats://4,nats://5,nats://6,nats://7,"
         "nats://8,nats://9,nats://10,nats://11,nats://12,nats://13,nats://14,nats://15,nats://"
         "16,nats://17",
         "has 17 items; at most 16 are allowed"},
        {"MUDBUS_NATS_NAME=", "[nats] name (env MUDBUS_NATS_NAME): must be 1 to 40 letters"},
        {"MUDBUS_NATS_NAME=game server", "[nats] name (env MUDBUS_NATS_NAME): must be 1 to 40"},
        {"MUDBUS_NATS_NAME=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "[nats] name (env "},
        {"MUDBUS_NATS_NKEY_SEED_FILE=/s", "[nats] nkey_seed_file (env "
                                          "MUDBUS_NATS_NKEY_SEED_FILE): is set but nkey_public"},
        {"MUDBUS_NATS_SUB_PENDING_MSGS=0", "[nats] sub_pending_msgs (env "
                                           "MUDBUS_NATS_SUB_PENDING_MSGS): \"0\" is out of range"},
        {"MUDBUS_NATS_SUB_PENDING_BYTES=2GiB", "\"2GiB\" is out of range (1KiB to 1GiB)"},
        {"MUDBUS_NATS_TLS=maybe", "[nats] tls (env MUDBUS_NATS_TLS): \"maybe\" is not a boolean"},
        {"MUDBUS_NATS_MAX_RECONNECT=-2", "[nats] max_reconnect (env MUDBUS_NATS_MAX_RECONNECT): "
                                         "\"-2\" is out of range (-1 to 1000000)"},
        {"MUDBUS_NATS_CONNECT_TIMEOUT=0", "\"0\" is out of range (1ms to 10m)"},
        {"MUDBUS_NATS_RECONNECT_BUFFER=8MB",
         "[nats] reconnect_buffer (env "
         "MUDBUS_NATS_RECONNECT_BUFFER): \"8MB\" is not a size"},
        {"MUDBUS_NATS_IO_BUFFER=512", "[nats] io_buffer (env MUDBUS_NATS_IO_BUFFER): \"512\" is "
                                      "out of range (1KiB to 16MiB)"},
        {"MUDBUS_NATS_IO_BUFFER=32MiB", "\"32MiB\" is out of range (1KiB to 16MiB)"},
        {"MUDBUS_NATS_HEALTH_FAILURES=0", "[nats] health_failures"},
        {"MUDBUS_NATS_RETRY_MAX_ATTEMPTS=101", "[nats] retry_max_attempts"},
        {"MUDBUS_NATS_RETRY_JITTER=random",
         "[nats] retry_jitter (env MUDBUS_NATS_RETRY_JITTER): \"random\" is not a jitter kind"},
        {"MUDBUS_NATS_BUDGET_MAX_TOKENS=5", "[nats] budget_max_tokens (env "
                                            "MUDBUS_NATS_BUDGET_MAX_TOKENS): 5 cannot pay for one "
                                            "retry (10 tokens)"},
        {"MUDBUS_NATS_BREAKER_FAILURE_RATE=0", "[nats] breaker_failure_rate"},
        {"MUDBUS_NATS_BREAKER_FAILURE_RATE=101", "\"101\" is out of range (1 to 100)"},
        {"MUDBUS_NATS_BREAKER_WINDOW=1500ms",
         "[nats] breaker_window (env MUDBUS_NATS_BREAKER_WINDOW): a time window must be whole "
         "seconds"},
        {"MUDBUS_NATS_BREAKER_WINDOW=2h", "\"2h\" is out of range (1s to 1h)"},
        {"MUDBUS_NATS_BREAKER_WINDOW=lots", "\"lots\" is not a duration"},
        {"MUDBUS_NATS_BREAKER_HALF_OPEN_CALLS=10001", "[nats] breaker_half_open_calls"},
        {"MUDBUS_NATS_MAX_PAYLOAD=65MiB", "\"65MiB\" is out of range (1B to 64MiB)"},
        {"MUDBUS_NATS_POLL_MODE=2", "[nats] poll_mode"},
        {"MUDBUS_NATS_NO_ECHO=sometimes", "[nats] no_echo"},
        {"MUDBUS_NATS_HEALTH_TIMEOUT=10s",
         "[nats] health_timeout (env MUDBUS_NATS_HEALTH_TIMEOUT): 10000ms is longer than "
         "health_interval (5000ms)"},
        {"MUDBUS_NATS_RETRY_BASE_DELAY=10s",
         "[nats] retry_base_delay (env MUDBUS_NATS_RETRY_BASE_DELAY): retry_base_delay (10000ms) "
         "is longer than retry_max_delay (5000ms)"},
        {"MUDBUS_NATS_USER=game", "[nats] user (env MUDBUS_NATS_USER): is set but password is "
                                  "not (give both or neither)"},
        {"MUDBUS_NATS_TLS_KEY_FILE=/k.pem", "[nats] tls_key_file (env "
                                            "MUDBUS_NATS_TLS_KEY_FILE): is set but tls_cert_file"},
        /* JetStream */
        {"MUDBUS_NATS_JS=maybe", "[nats] js (env MUDBUS_NATS_JS): \"maybe\" is not a boolean"},
        {"MUDBUS_NATS_JS_CRITICAL_SUBJECTS=*",
         "[nats] js_critical_subjects (env MUDBUS_NATS_JS_CRITICAL_SUBJECTS): item 1 refused "
         "(rule all_wildcards): subscription pattern '*': every token is a wildcard"},
        {"MUDBUS_NATS_JS_CRITICAL_SUBJECTS=chat.system,>.x",
         "item 2 refused (rule wildcard_first)"},
        {"MUDBUS_NATS_JS_CRITICAL_SUBJECTS=chat.>.x", "item 1 refused (rule gt_not_last)"},
        {"MUDBUS_NATS_JS_CRITICAL_SUBJECTS=chat.*.*.*", "item 1 refused (rule too_many_wildcards)"},
        {"MUDBUS_NATS_JS_CRITICAL_SUBJECTS=chat.who*", "item 1 refused (rule wildcard_in_token)"},
        {"MUDBUS_NATS_JS_CRITICAL_SUBJECTS=chat.a b", "item 1 refused (rule bad_char)"},
        {"MUDBUS_NATS_JS_CRITICAL_SUBJECTS=chat..x", "item 1 refused (rule empty_token)"},
        {"MUDBUS_NATS_JS_CRITICAL_SUBJECTS=", "[nats] js_critical_subjects (env "
                                              "MUDBUS_NATS_JS_CRITICAL_SUBJECTS): needs at least "
                                              "one subscription pattern"},
        {"MUDBUS_NATS_JS_CRITICAL_SUBJECTS=a.b,,c.d", "[nats] js_critical_subjects (env "
                                                      "MUDBUS_NATS_JS_CRITICAL_SUBJECTS): "
                                                      "\"a.b,,c.d\" has an empty item"},
        {"MUDBUS_NATS_JS_CRITICAL_SUBJECTS=a.1,a.2,a.3,a.4,a.5,a.6,a.7,a.8,a.9,a.10,a.11,a.12,"
         "a.13,a.14,a.15,a.16,a.17",
         "[nats] js_critical_subjects (env MUDBUS_NATS_JS_CRITICAL_SUBJECTS): "},
        {"MUDBUS_NATS_JS_CRITICAL_SUBJECTS=a.1,a.2,a.3,a.4,a.5,a.6,a.7,a.8,a.9,a.10,a.11,a.12,"
         "a.13,a.14,a.15,a.16,a.17",
         "has 17 items; at most 16 are allowed"},
        {"MUDBUS_NATS_JS_CRITICAL_SUBJECTS=a.b,c.*,a.b",
         "[nats] js_critical_subjects (env MUDBUS_NATS_JS_CRITICAL_SUBJECTS): item 3 \"a.b\" "
         "repeats item 1"},
        {"MUDBUS_NATS_JS_STREAM=A.B", "[nats] js_stream (env MUDBUS_NATS_JS_STREAM): \"A.B\" "
                                      "must be 1 to 32 letters, digits, '_' or '-'"},
        {"MUDBUS_NATS_JS_STREAM=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "[nats] js_stream (env "},
        {"MUDBUS_NATS_JS_STREAM=MY STREAM", "[nats] js_stream"},
        {"MUDBUS_NATS_JS_MEMORY_STORAGE=2", "[nats] js_memory_storage (env "
                                            "MUDBUS_NATS_JS_MEMORY_STORAGE): \"2\" is not a "
                                            "boolean"},
        {"MUDBUS_NATS_JS_MAX_AGE=0", "[nats] js_max_age (env MUDBUS_NATS_JS_MAX_AGE): \"0\" is "
                                     "out of range"},
        {"MUDBUS_NATS_JS_MAX_AGE=1 day", "[nats] js_max_age (env MUDBUS_NATS_JS_MAX_AGE): \"1 "
                                         "day\" is not a duration"},
        {"MUDBUS_NATS_JS_MAX_AGE=8761h", "[nats] js_max_age (env MUDBUS_NATS_JS_MAX_AGE): "
                                         "\"8761h\" is out of range"},
        {"MUDBUS_NATS_JS_DUPLICATE_WINDOW=0", "[nats] js_duplicate_window (env "
                                              "MUDBUS_NATS_JS_DUPLICATE_WINDOW): \"0\" is out"},
        {"MUDBUS_NATS_JS_DUPLICATE_WINDOW=25h", "[nats] js_duplicate_window"},
        {"MUDBUS_NATS_JS_MAX_AGE=1m", "[nats] js_max_age (env MUDBUS_NATS_JS_MAX_AGE): "
                                      "js_duplicate_window (120000ms) is longer than js_max_age "
                                      "(60000ms)"},
        {"MUDBUS_NATS_JS_ACK_WAIT=0", "[nats] js_ack_wait (env MUDBUS_NATS_JS_ACK_WAIT): \"0\" "
                                      "is out of range"},
        {"MUDBUS_NATS_JS_ACK_WAIT=2h", "[nats] js_ack_wait"},
        {"MUDBUS_NATS_JS_MAX_DELIVER=0", "[nats] js_max_deliver (env "
                                         "MUDBUS_NATS_JS_MAX_DELIVER): \"0\" is out of range (1 "
                                         "to 1000)"},
        {"MUDBUS_NATS_JS_MAX_DELIVER=1001", "\"1001\" is out of range (1 to 1000)"},
        {"MUDBUS_NATS_JS_DURABLE_PREFIX=game.1", "[nats] js_durable_prefix (env "
                                                 "MUDBUS_NATS_JS_DURABLE_PREFIX): \"game.1\" "
                                                 "must be 1 to 48"},
        {"MUDBUS_NATS_JS_DURABLE_PREFIX=game*", "[nats] js_durable_prefix"},
        {"MUDBUS_NATS_JS_DURABLE_PREFIX=game>", "[nats] js_durable_prefix"},
        {"MUDBUS_NATS_JS_DURABLE_PREFIX=game 1", "[nats] js_durable_prefix"},
        {"MUDBUS_NATS_JS_DURABLE_PREFIX=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
         "[nats] js_durable_prefix"},
        {"MUDBUS_NATS_JS_FETCH_BATCH=0", "[nats] js_fetch_batch (env "
                                         "MUDBUS_NATS_JS_FETCH_BATCH): \"0\" is out of range (1 "
                                         "to 4096)"},
        {"MUDBUS_NATS_JS_FETCH_BATCH=4097", "[nats] js_fetch_batch"},
        {"MUDBUS_NATS_JS_FETCH_TIMEOUT=5ms", "[nats] js_fetch_timeout (env "
                                             "MUDBUS_NATS_JS_FETCH_TIMEOUT): \"5ms\" is out of "
                                             "range (10ms to 1m)"},
        {"MUDBUS_NATS_JS_FETCH_TIMEOUT=2m", "[nats] js_fetch_timeout"},
        {"MUDBUS_NATS_JS_PUBLISH_ACK_TIMEOUT=0", "[nats] js_publish_ack_timeout (env "
                                                 "MUDBUS_NATS_JS_PUBLISH_ACK_TIMEOUT): \"0\" is "
                                                 "out of range"},
        {"MUDBUS_NATS_JS_PUBLISH_ACK_TIMEOUT=11m", "[nats] js_publish_ack_timeout"},
        {"MUDBUS_NATS_JS_MAX_PENDING=0", "[nats] js_max_pending (env "
                                         "MUDBUS_NATS_JS_MAX_PENDING): \"0\" is out of range (1 "
                                         "to 1000000)"},
        {"MUDBUS_NATS_JS_MAX_PENDING=1000001", "[nats] js_max_pending"},
        {"MUDBUS_NATS_JS_MAX_PENDING=-5", "[nats] js_max_pending"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *env[] = {cases[i].var, NULL};
        mb_config *cfg = env_cfg(env);
        mb_client_opts o;
        opts_defaults(&o);
        mb_client_opts before = o;
        mb_err err = {0};
        if (mb_client_opts_from_config(cfg, "nats", &o, &err) != MB_EINVAL)
            fail_msg("%s: accepted", cases[i].var);
        if (strstr(err.msg, cases[i].msg) == NULL)
            fail_msg("%s: error \"%s\" lacks \"%s\"", cases[i].var, err.msg, cases[i].msg);
        assert_memory_equal(&before, &o, sizeof o); /* nothing changed */
        mb_config_destroy(cfg);
    }
}

static void test_client_opts_file_source_in_errors(void **state)
{
    (void)state;
    char *path = tmp_text("[nats]\n\npool_size = 99\n");
    mb_config_opts co = {.sections = sections};
    mb_config *cfg = NULL;
    assert_int_equal(mb_config_load(path, no_env, &co, &cfg, NULL), MB_OK);
    mb_client_opts o;
    opts_defaults(&o);
    mb_err err = {0};
    assert_int_equal(mb_client_opts_from_config(cfg, "nats", &o, &err), MB_EINVAL);
    char want[160];
    snprintf(want, sizeof want, "[nats] pool_size (%s:3): \"99\" is out of range (1 to 32)", path);
    assert_string_equal(err.msg, want);
    mb_config_destroy(cfg);
    rm_file(path);

    /* A cross-key problem of the caller's own starting values names no
     * source. */
    cfg = env_cfg(no_env);
    opts_defaults(&o);
    o.auth.password = "pw";
    mb_err_clear(&err);
    assert_int_equal(mb_client_opts_from_config(cfg, "nats", &o, &err), MB_EINVAL);
    assert_string_equal(err.msg, "[nats] user: needed with the password of the options");
    mb_config_destroy(cfg);
}

static void test_client_opts_string_lifetime(void **state)
{
    (void)state;
    /* Strings point into the config (not into a temporary), so they stay
     * valid while it lives, through later loads and frees of other configs;
     * ASan would catch a dangling pointer in the comparisons below. */
    const char *env[] = {"MUDBUS_NATS_NAME=svc", "MUDBUS_NATS_SERVERS= nats://h:1 ,tls://h:2",
                         "MUDBUS_NATS_TOKEN=t0k", NULL};
    mb_config *cfg = env_cfg(env);
    mb_client_opts o;
    opts_defaults(&o);
    assert_int_equal(mb_client_opts_from_config(cfg, "nats", &o, NULL), MB_OK);
    assert_ptr_equal(o.name, mb_config_get_str(cfg, "nats", "name", NULL));
    assert_ptr_equal(o.auth.token, mb_config_get_str(cfg, "nats", "token", NULL));
    const char *items[2];
    size_t n = 0;
    assert_int_equal(mb_config_get_list(cfg, "nats", "servers", items, 2, &n, NULL), MB_OK);
    assert_ptr_equal(o.servers[0], items[0]);
    assert_ptr_equal(o.servers[1], items[1]);

    for (int i = 0; i < 3; i++) {
        const char *other_env[] = {"MUDBUS_NATS_NAME=other", NULL};
        mb_config *other = env_cfg(other_env);
        mb_config_destroy(other);
    }
    assert_string_equal(o.name, "svc");
    assert_string_equal(o.servers[0], "nats://h:1");
    assert_string_equal(o.servers[1], "tls://h:2");
    assert_string_equal(o.auth.token, "t0k");
    mb_config_destroy(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_sections_keys_comments_whitespace),
        cmocka_unit_test(test_duplicate_key_refused),
        cmocka_unit_test(test_key_outside_section_refused),
        cmocka_unit_test(test_malformed_lines_refused),
        cmocka_unit_test(test_unknown_section_refused),
        cmocka_unit_test(test_file_bounds),
        cmocka_unit_test(test_key_count_bound),
        cmocka_unit_test(test_missing_and_unreadable_file),
        cmocka_unit_test(test_env_beats_file),
        cmocka_unit_test(test_env_unknown_section_warned),
        cmocka_unit_test(test_env_only_no_file),
        cmocka_unit_test(test_env_process_environment),
        cmocka_unit_test(test_env_section_resolution),
        cmocka_unit_test(test_env_value_bound),
        cmocka_unit_test(test_get_bool),
        cmocka_unit_test(test_get_u64_and_i64),
        cmocka_unit_test(test_get_duration),
        cmocka_unit_test(test_get_size),
        cmocka_unit_test(test_get_list),
        cmocka_unit_test(test_null_config_gives_defaults),
        cmocka_unit_test(test_source_reporting_and_quoting),
        cmocka_unit_test(test_check_keys),
        cmocka_unit_test(test_client_opts_every_key),
        cmocka_unit_test(test_client_opts_env_and_special_forms),
        cmocka_unit_test(test_client_opts_js),
        cmocka_unit_test(test_client_opts_unknown_key),
        cmocka_unit_test(test_client_opts_bad_values),
        cmocka_unit_test(test_client_opts_file_source_in_errors),
        cmocka_unit_test(test_client_opts_string_lifetime),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
