/* SPDX-License-Identifier: MIT */
/*
 * fuzz_subject: libFuzzer target for the subject module, checked against a
 * small independent reference written here from PROTOCOL.md section 1.
 *
 * The first byte selects a mode; the rest is the input of that mode:
 *   0  mb_subject_check of the bytes, on the built-in registry;
 *   1  mb_subject_check_sub of the bytes;
 *   2  mb_subject_build on the built-in registry: the next byte picks the
 *      pattern, the rest is split at NUL into parameters ("name=value", or a
 *      bare value for the next placeholder in template order);
 *   3  a script on a fresh registry, NUL-separated commands:
 *      "R<name>=<pattern>" / "E<name>=<pattern>" register (chat / event),
 *      "C<subject>" check, "B<name>|<v1>|<v2>..." build.
 * Invariants, enforced with abort():
 *   - check accepts exactly what the reference accepts (1..255 bytes of
 *     [A-Za-z0-9_.-], no empty token, tokens <= 128 bytes, a registered
 *     pattern matches) and returns the reference's most specific pattern;
 *   - check_sub accepts exactly what the reference breadth rules accept;
 *   - build succeeds exactly when the reference says the parameters are
 *     complete and valid; its subject checks back to a pattern (the same one
 *     when no more specific pattern overlaps); on failure buf is "";
 *   - register succeeds exactly when the reference grammar, name and
 *     uniqueness rules say so;
 *   - every error message is one line of printable ASCII.
 * The built-in registry is created once and kept (it is never modified);
 * mode 3 creates and destroys its own, so nothing leaks and runs are
 * reproducible.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mudbus/subject.h"

#define MAXTOK 256

static void check_msg(const mb_err *err, mb_status st)
{
    if (err->code != st || err->msg[0] == '\0')
        abort();
    for (const char *p = err->msg; *p; p++)
        if (*p < 0x20 || *p > 0x7e)
            abort();
}

static int tokc(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-';
}

typedef struct tok {
    const char *p;
    size_t len;
} tok;

/* Split at '.'; returns the number of tokens (empty ones included). */
static size_t split(const char *s, size_t len, tok *t)
{
    size_t n = 0, start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i == len || s[i] == '.') {
            if (n < MAXTOK)
                t[n] = (tok){s + start, i - start};
            n++;
            start = i + 1;
        }
    }
    return n;
}

/* ---- reference: publish subjects ---- */

static int ref_subject_syntax(const char *s, size_t len, tok *t, size_t *nt)
{
    if (len < 1 || len > 255)
        return 0;
    size_t n = split(s, len, t);
    if (n > MAXTOK)
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (t[i].len == 0 || t[i].len > 128)
            return 0;
        for (size_t k = 0; k < t[i].len; k++)
            if (!tokc((unsigned char)t[i].p[k]))
                return 0;
    }
    *nt = n;
    return 1;
}

static int is_ph(const tok *t)
{
    return t->len > 0 && t->p[0] == '{';
}

static int pat_matches(const char *pattern, const tok *t, size_t n)
{
    tok pt[MAXTOK];
    size_t pn = split(pattern, strlen(pattern), pt);
    if (pn != n)
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (is_ph(&pt[i]))
            continue;
        if (pt[i].len != t[i].len || memcmp(pt[i].p, t[i].p, t[i].len) != 0)
            return 0;
    }
    return 1;
}

/* 1 when pattern a is preferred to b (both match the same subject): at the
 * first token where one has a literal and the other a placeholder, the
 * literal wins. */
static int more_specific(const char *a, const char *b)
{
    tok ta[MAXTOK], tb[MAXTOK];
    size_t na = split(a, strlen(a), ta);
    size_t nb = split(b, strlen(b), tb);
    for (size_t i = 0; i < na && i < nb; i++) {
        int pa = is_ph(&ta[i]), pb = is_ph(&tb[i]);
        if (pa != pb)
            return pb;
    }
    abort(); /* two matching patterns of the same shape: registration let one in */
}

/* The reference answer for a subject: -1 when refused, else the index of the
 * most specific matching pattern. */
static long ref_check(mb_subject_registry *r, const char *s, size_t len)
{
    tok t[MAXTOK];
    size_t n;
    if (!ref_subject_syntax(s, len, t, &n))
        return -1;
    long best = -1;
    const char *best_pat = NULL;
    size_t count = mb_subject_count(r);
    for (size_t i = 0; i < count; i++) {
        mb_subject_info info;
        if (mb_subject_at(r, i, &info) != MB_OK)
            abort();
        if (!pat_matches(info.pattern, t, n))
            continue;
        if (best < 0 || more_specific(info.pattern, best_pat)) {
            best = (long)i;
            best_pat = info.pattern;
        }
    }
    return best;
}

/* Check a subject and compare with the reference; returns the pattern name
 * or NULL. */
static const char *verify_check(mb_subject_registry *r, const char *s, size_t len)
{
    mb_subject_info info = {0};
    mb_subject_reason why = MB_SUBJECT_OK;
    mb_err err = {0};
    mb_status st = mb_subject_check(r, s, len, &info, &why, &err);
    long want = ref_check(r, s, len);
    if (st == MB_OK) {
        if (want < 0 || why != MB_SUBJECT_OK || err.code != MB_OK)
            abort();
        /* Stated separately from the reference, as the contract says it. */
        if (len < 1 || len > 255 || s[0] == '.' || s[len - 1] == '.')
            abort();
        for (size_t i = 0; i < len; i++) {
            if (!tokc((unsigned char)s[i]) && s[i] != '.')
                abort();
            if (s[i] == '.' && i + 1 < len && s[i + 1] == '.')
                abort();
        }
        mb_subject_info w;
        if (mb_subject_at(r, (size_t)want, &w) != MB_OK || w.name != info.name ||
            w.schema != info.schema)
            abort();
        return info.name;
    }
    if (st != MB_ESUBJECT || want >= 0 || why == MB_SUBJECT_OK || info.name != NULL)
        abort();
    check_msg(&err, MB_ESUBJECT);
    return NULL;
}

/* ---- reference: subscription patterns ---- */

static int ref_sub_ok(const char *s, size_t len)
{
    tok t[MAXTOK];
    if (len < 1 || len > 255)
        return 0;
    size_t n = split(s, len, t);
    if (n > MAXTOK)
        return 0;
    size_t wild = 0;
    for (size_t i = 0; i < n; i++) {
        if (t[i].len == 0)
            return 0;
        int w = t[i].len == 1 && (t[i].p[0] == '*' || t[i].p[0] == '>');
        if (w) {
            wild++;
            if (i == 0)
                return 0;
            if (t[i].p[0] == '>' && i != n - 1)
                return 0;
            continue;
        }
        if (t[i].len > 128)
            return 0;
        for (size_t k = 0; k < t[i].len; k++)
            if (!tokc((unsigned char)t[i].p[k]))
                return 0;
    }
    return wild <= 2 && wild < n;
}

static void verify_sub(mb_subject_registry *r, const char *s, size_t len)
{
    mb_subject_reason why = MB_SUBJECT_OK;
    mb_err err = {0};
    mb_status st = mb_subject_check_sub(r, s, len, &why, &err);
    int want = ref_sub_ok(s, len);
    if ((st == MB_OK) != want)
        abort();
    if (st == MB_OK) {
        if (why != MB_SUBJECT_OK)
            abort();
        return;
    }
    if (st != MB_ESUBJECT || why == MB_SUBJECT_OK)
        abort();
    check_msg(&err, MB_ESUBJECT);
}

/* ---- building ---- */

typedef struct pset {
    mb_subject_param p[64];
    size_t n;
} pset;

static int ref_value_ok(const char *v)
{
    size_t n = strlen(v);
    if (n < 1 || n > 128)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!tokc((unsigned char)v[i]))
            return 0;
    return 1;
}

/* Would a build of `pattern` with these parameters succeed? */
static int ref_build_ok(const char *pattern, const pset *ps)
{
    tok pt[MAXTOK];
    size_t pn = split(pattern, strlen(pattern), pt);
    size_t total = pn - 1;
    int used[MAXTOK] = {0};
    for (size_t i = 0; i < ps->n; i++) {
        size_t k;
        size_t nl = strlen(ps->p[i].name);
        for (k = 0; k < pn; k++)
            if (is_ph(&pt[k]) && pt[k].len - 2 == nl && memcmp(pt[k].p + 1, ps->p[i].name, nl) == 0)
                break;
        if (k == pn || used[k] || !ref_value_ok(ps->p[i].value))
            return 0;
        used[k] = 1;
        total += strlen(ps->p[i].value);
    }
    for (size_t k = 0; k < pn; k++) {
        if (!is_ph(&pt[k]))
            total += pt[k].len;
        else if (!used[k])
            return 0;
    }
    return total <= 255;
}

static void verify_build(mb_subject_registry *r, const char *name, const pset *ps)
{
    char buf[MB_SUBJECT_MAX + 1];
    memset(buf, 'x', sizeof buf);
    size_t len = 0;
    mb_subject_reason why = MB_SUBJECT_OK;
    mb_err err = {0};
    mb_status st = mb_subject_build(r, name, ps->p, ps->n, buf, sizeof buf, &len, &why, &err);
    mb_subject_info info;
    if (mb_subject_lookup(r, name, &info, NULL) != MB_OK) {
        if (st != MB_ENOTFOUND || why != MB_SUBJECT_UNKNOWN_PATTERN || buf[0] != '\0')
            abort();
        check_msg(&err, MB_ENOTFOUND);
        return;
    }
    int want = ref_build_ok(info.pattern, ps);
    if (st != MB_OK) {
        if (want || st != MB_ESUBJECT || why == MB_SUBJECT_OK || buf[0] != '\0')
            abort();
        check_msg(&err, MB_ESUBJECT);
        return;
    }
    if (!want || len != strlen(buf) || len > MB_SUBJECT_MAX)
        abort();
    const char *back = verify_check(r, buf, len);
    if (back == NULL)
        abort();
    /* Without a more specific overlapping pattern it is the same one. */
    tok t[MAXTOK];
    size_t nt;
    if (!ref_subject_syntax(buf, len, t, &nt))
        abort();
    size_t count = mb_subject_count(r), matching = 0;
    for (size_t i = 0; i < count; i++) {
        mb_subject_info o;
        mb_subject_at(r, i, &o);
        matching += pat_matches(o.pattern, t, nt);
    }
    if (matching == 1 && back != info.name)
        abort();
    if (!pat_matches(info.pattern, t, nt))
        abort();
}

/* Split `s` (len bytes) at `sep` into NUL-terminated fields in `store`;
 * returns the count (at most max). */
static size_t fields(const char *s, size_t len, char sep, char *store, char **out, size_t max)
{
    size_t n = 0;
    memcpy(store, s, len);
    store[len] = '\0';
    char *p = store, *end = store + len;
    while (n < max) {
        out[n++] = p;
        char *q = memchr(p, sep, (size_t)(end - p));
        if (q == NULL)
            break;
        *q = '\0';
        p = q + 1;
    }
    return n;
}

/* Turn fields into parameters: "name=value", or a bare value for the next
 * placeholder of `pattern`. */
static void make_params(const char *pattern, char **f, size_t nf, pset *ps)
{
    tok pt[MAXTOK];
    size_t pn = split(pattern, strlen(pattern), pt);
    static char names[MAXTOK][40];
    size_t next = 0;
    ps->n = 0;
    for (size_t i = 0; i < nf && ps->n < 64; i++) {
        char *eq = strchr(f[i], '=');
        if (eq != NULL) {
            *eq = '\0';
            ps->p[ps->n++] = (mb_subject_param){f[i], eq + 1};
            continue;
        }
        while (next < pn && !is_ph(&pt[next]))
            next++;
        const char *nm = "extra";
        if (next < pn) {
            snprintf(names[next], sizeof names[next], "%.*s", (int)pt[next].len - 2,
                     pt[next].p + 1);
            nm = names[next];
            next++;
        }
        ps->p[ps->n++] = (mb_subject_param){nm, f[i]};
    }
}

/* ---- reference: registration ---- */

static int ref_name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > 64)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
            return 0;
    return 1;
}

static int ref_pattern_ok(const char *s)
{
    size_t len = strlen(s);
    tok t[MAXTOK];
    if (len < 1 || len > 255)
        return 0;
    size_t n = split(s, len, t);
    if (n > MAXTOK)
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (t[i].len == 0)
            return 0;
        if (t[i].p[0] == '{') {
            if (t[i].len < 3 || t[i].len > 34 || t[i].p[t[i].len - 1] != '}')
                return 0;
            for (size_t k = 1; k + 1 < t[i].len; k++) {
                char c = t[i].p[k];
                if (!((c >= 'a' && c <= 'z') || c == '_' || (k > 1 && c >= '0' && c <= '9')))
                    return 0;
            }
            for (size_t j = 0; j < i; j++)
                if (t[j].len == t[i].len && memcmp(t[j].p, t[i].p, t[i].len) == 0)
                    return 0;
        } else {
            if (t[i].len > 128)
                return 0;
            for (size_t k = 0; k < t[i].len; k++)
                if (!tokc((unsigned char)t[i].p[k]))
                    return 0;
        }
    }
    return 1;
}

static int same_shape(const char *a, const char *b)
{
    tok ta[MAXTOK], tb[MAXTOK];
    size_t na = split(a, strlen(a), ta);
    size_t nb = split(b, strlen(b), tb);
    if (na != nb)
        return 0;
    for (size_t i = 0; i < na; i++) {
        if (is_ph(&ta[i]) != is_ph(&tb[i]))
            return 0;
        if (!is_ph(&ta[i]) && (ta[i].len != tb[i].len || memcmp(ta[i].p, tb[i].p, ta[i].len)))
            return 0;
    }
    return 1;
}

static void verify_register(mb_subject_registry *r, const char *name, const char *pattern,
                            mb_schema_kind schema)
{
    mb_status want = MB_OK;
    size_t before = mb_subject_count(r);
    if (!ref_name_ok(name)) {
        want = MB_EINVAL;
    } else if (!ref_pattern_ok(pattern)) {
        want = MB_EPATTERN;
    } else {
        for (size_t i = 0; i < before && want == MB_OK; i++) {
            mb_subject_info o;
            mb_subject_at(r, i, &o);
            if (strcmp(o.name, name) == 0 || same_shape(o.pattern, pattern))
                want = MB_EEXIST;
        }
        if (want == MB_OK && before >= MB_SUBJECT_MAX_PATTERNS)
            want = MB_ENOSPC;
    }
    mb_err err = {0};
    mb_status st = mb_subject_register(r, name, pattern, schema, &err);
    if (st != want)
        abort();
    if (st != MB_OK) {
        check_msg(&err, st);
        if (mb_subject_count(r) != before)
            abort();
        return;
    }
    mb_subject_info info;
    if (mb_subject_count(r) != before + 1 || mb_subject_at(r, before, &info) != MB_OK ||
        strcmp(info.name, name) != 0 || strcmp(info.pattern, pattern) != 0 || info.schema != schema)
        abort();
}

static void run_script(const char *s, size_t len)
{
    mb_subject_registry *r = NULL;
    if (mb_subject_registry_create(NULL, &r, NULL) != MB_OK)
        abort();
    char *store = malloc(len + 1);
    char *cmd[64];
    if (store == NULL)
        abort();
    size_t n = fields(s, len, '\0', store, cmd, 64);
    for (size_t i = 0; i < n; i++) {
        char *c = cmd[i];
        if (c[0] == 'R' || c[0] == 'E') {
            char *eq = strchr(c + 1, '=');
            if (eq == NULL)
                continue;
            *eq = '\0';
            verify_register(r, c + 1, eq + 1, c[0] == 'R' ? MB_SCHEMA_CHAT : MB_SCHEMA_EVENT);
        } else if (c[0] == 'C') {
            verify_check(r, c + 1, strlen(c + 1));
        } else if (c[0] == 'B') {
            char *f[65];
            size_t cl = strlen(c + 1);
            char *st2 = malloc(cl + 1);
            if (st2 == NULL)
                abort();
            size_t nf = fields(c + 1, cl, '|', st2, f, 65);
            mb_subject_info info;
            pset ps = {.n = 0};
            if (mb_subject_lookup(r, f[0], &info, NULL) == MB_OK)
                make_params(info.pattern, f + 1, nf - 1, &ps);
            verify_build(r, f[0], &ps);
            free(st2);
        }
    }
    free(store);
    mb_subject_registry_destroy(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static mb_subject_registry *reg;
    if (reg == NULL && mb_subject_registry_create(NULL, &reg, NULL) != MB_OK)
        abort();
    if (size < 1 || size > 4096)
        return 0;
    const char *s = (const char *)data + 1;
    size_t len = size - 1;
    switch (data[0] % 4) {
    case 0:
        verify_check(reg, s, len);
        break;
    case 1:
        verify_sub(reg, s, len);
        break;
    case 2: {
        if (len < 1)
            break;
        mb_subject_info info;
        if (mb_subject_at(reg, (unsigned char)s[0] % mb_subject_count(reg), &info) != MB_OK)
            abort();
        char *store = malloc(len);
        char *f[64];
        if (store == NULL)
            abort();
        size_t nf = len > 1 ? fields(s + 1, len - 1, '\0', store, f, 64) : 0;
        pset ps;
        make_params(info.pattern, f, nf, &ps);
        verify_build(reg, info.name, &ps);
        free(store);
        break;
    }
    default:
        run_script(s, len);
        break;
    }
    return 0;
}
