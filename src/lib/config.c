/* SPDX-License-Identifier: MIT */
/*
 * config: loading an INI file and MUDBUS_* environment overrides into an
 * immutable (section, key) -> value store, and the typed getters.
 *
 * Loading reads the whole file (at most MB_CONFIG_MAX_FILE_BYTES) into memory
 * and hands it to libinih through a reader of our own that returns exactly one
 * source line per call, so libinih's line count and ours agree and handler
 * errors carry the right line number. The reader does the checks libinih
 * would get wrong or silently: line length (Debian builds it with 200-byte
 * lines and splits longer ones), NUL bytes, indentation (which libinih would
 * take as a continuation of the previous value), headers with trailing junk
 * or unknown names, lines without '='. It passes blank and comment lines on
 * as empty lines, headers as a normalised "[name]", and other lines trimmed.
 * libinih then splits key from value and strips inline ';' comments.
 *
 * Store: an array of entries in insertion order (file order, then new keys
 * from the environment), each one allocation holding its lower-case section
 * and key, the value, the value split into list items, and the source text.
 * Lookups are linear: a config has at most MB_CONFIG_MAX_KEYS keys and is read
 * a few hundred times at start-up. Once mb_config_load returns, nothing
 * changes, so readers need no lock.
 */
#include "mudbus/config.h"

#include <errno.h>
#include <fcntl.h>
#include <ini.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "alloc.h"

/* Debian's libinih exports its options as variables; other builds do not,
 * and then this weak reference is NULL (see raise_inih_line_limit). */
#pragma weak ini_max_line

typedef struct entry {
    const char *section; /* lower case */
    const char *key;     /* lower case */
    const char *value;   /* trimmed */
    const char *items;   /* the list items, each NUL-terminated, back to back */
    size_t nitems;
    size_t empty_item;  /* 1-based index of the first empty list item; 0: none */
    const char *source; /* "PATH:LINE" or "env NAME" */
    unsigned line;      /* 0 for the environment */
    char *block;        /* the one allocation behind the strings above */
} entry;

struct mb_config {
    entry *v;
    size_t n, cap;
};

/* ---- small string helpers ---- */

static int lower(int c)
{
    return c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c;
}

static bool is_alnum(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

static bool is_space(int c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

static bool name_eq(const char *a, const char *b)
{
    for (; *a != '\0' && lower((unsigned char)*a) == lower((unsigned char)*b); a++, b++) {
    }
    return *a == '\0' && *b == '\0';
}

/* A key name: 1..MB_CONFIG_MAX_NAME letters, digits and '_'. */
static bool valid_key(const char *s, size_t n)
{
    if (n == 0 || n > MB_CONFIG_MAX_NAME)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (!is_alnum((unsigned char)s[i]) && s[i] != '_')
            return false;
    }
    return true;
}

/* A section name: as a key name, plus '.' and '-'. */
static bool valid_section(const char *s, size_t n)
{
    if (n == 0 || n > MB_CONFIG_MAX_NAME)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (!is_alnum((unsigned char)s[i]) && s[i] != '_' && s[i] != '.' && s[i] != '-')
            return false;
    }
    return true;
}

/* Write `v` into buf as a double-quoted, printable, possibly shortened text
 * for an error message. */
static const char *quote(const char *v, char *buf, size_t size)
{
    size_t o = 0;
    buf[o++] = '"';
    for (; *v != '\0' && o + 6 < size; v++) {
        unsigned char c = (unsigned char)*v;
        if (c < 0x20 || c == 0x7f || c == '"' || c == '\\')
            o += (size_t)snprintf(buf + o, size - o, "\\x%02x", c);
        else
            buf[o++] = (char)c;
    }
    if (*v != '\0') {
        memcpy(buf + o, "...", 3);
        o += 3;
    }
    buf[o++] = '"';
    buf[o] = '\0';
    return buf;
}

/* ---- the store ---- */

static entry *find(const mb_config *cfg, const char *section, const char *key)
{
    if (cfg == NULL || section == NULL || key == NULL)
        return NULL;
    for (size_t i = 0; i < cfg->n; i++) {
        if (name_eq(cfg->v[i].section, section) && name_eq(cfg->v[i].key, key))
            return &cfg->v[i];
    }
    return NULL;
}

/* Fill `e` with copies of the strings, lower-casing the names and splitting
 * the value into list items. MB_ENOMEM leaves `e` as it was. */
static mb_status entry_fill(entry *e, const char *section, const char *key, const char *value,
                            size_t vlen, const char *source, unsigned line)
{
    size_t sl = strlen(section), kl = strlen(key), ol = strlen(source);
    char *b = mb__malloc(sl + 1 + kl + 1 + 2 * (vlen + 1) + ol + 1);
    if (b == NULL)
        return MB_ENOMEM;
    char *p = b;
    e->block = b;
    e->section = p;
    for (size_t i = 0; i < sl; i++)
        *p++ = (char)lower((unsigned char)section[i]);
    *p++ = '\0';
    e->key = p;
    for (size_t i = 0; i < kl; i++)
        *p++ = (char)lower((unsigned char)key[i]);
    *p++ = '\0';
    e->value = p;
    memcpy(p, value, vlen);
    p += vlen;
    *p++ = '\0';

    /* Items: each comma-separated piece, trimmed, NUL-terminated. */
    e->items = p;
    e->nitems = 0;
    e->empty_item = 0;
    if (vlen > 0) {
        const char *s = value, *end = value + vlen;
        for (;;) {
            const char *comma = memchr(s, ',', (size_t)(end - s));
            const char *ie = comma != NULL ? comma : end;
            const char *is = s;
            while (is < ie && is_space((unsigned char)*is))
                is++;
            while (ie > is && is_space((unsigned char)ie[-1]))
                ie--;
            e->nitems++;
            if (ie == is && e->empty_item == 0)
                e->empty_item = e->nitems;
            memcpy(p, is, (size_t)(ie - is));
            p += ie - is;
            *p++ = '\0';
            if (comma == NULL)
                break;
            s = comma + 1;
        }
    }
    e->source = p;
    memcpy(p, source, ol + 1);
    e->line = line;
    return MB_OK;
}

/* Append a new entry. MB_ELIMIT past MB_CONFIG_MAX_KEYS, MB_ENOMEM; the store
 * is unchanged on error. */
static mb_status store_add(mb_config *cfg, const char *section, const char *key, const char *value,
                           size_t vlen, const char *source, unsigned line)
{
    if (cfg->n >= MB_CONFIG_MAX_KEYS)
        return MB_ELIMIT;
    if (cfg->n == cfg->cap) {
        size_t cap = cfg->cap == 0 ? 32 : cfg->cap * 2;
        if (cap > MB_CONFIG_MAX_KEYS)
            cap = MB_CONFIG_MAX_KEYS;
        entry *v = mb__realloc(cfg->v, cap * sizeof *v);
        if (v == NULL)
            return MB_ENOMEM;
        cfg->v = v;
        cfg->cap = cap;
    }
    mb_status st = entry_fill(&cfg->v[cfg->n], section, key, value, vlen, source, line);
    if (st == MB_OK)
        cfg->n++;
    return st;
}

void mb_config_destroy(mb_config *cfg)
{
    if (cfg == NULL)
        return;
    for (size_t i = 0; i < cfg->n; i++)
        mb__free(cfg->v[i].block);
    mb__free(cfg->v);
    mb__free(cfg);
}

/* ---- known sections and their environment prefixes ---- */

typedef struct known_sections {
    const char **names; /* lower case, owned by `prefixes`' block */
    char **prefixes;    /* "MUDBUS_NATS_" */
    size_t n;
} known_sections;

static void known_free(known_sections *k)
{
    for (size_t i = 0; i < k->n; i++)
        mb__free(k->prefixes[i]);
    mb__free(k->prefixes);
    mb__free((void *)k->names);
    k->names = NULL;
    k->prefixes = NULL;
    k->n = 0;
}

/* Add a section (unless already there) with its environment prefix. */
static mb_status known_add(known_sections *k, const char *name, mb_err *err)
{
    size_t nl = strlen(name);
    size_t pl = sizeof MB_CONFIG_ENV_PREFIX - 1 + nl + 1;
    char *pre = mb__malloc(pl + 1 + nl + 1);
    if (pre == NULL)
        return mb_err_set(err, MB_ENOMEM, "config: out of memory");
    char *p = pre + sizeof MB_CONFIG_ENV_PREFIX - 1;
    memcpy(pre, MB_CONFIG_ENV_PREFIX, sizeof MB_CONFIG_ENV_PREFIX - 1);
    for (size_t i = 0; i < nl; i++) {
        int c = (unsigned char)name[i];
        *p++ = is_alnum(c) ? (char)(c >= 'a' && c <= 'z' ? c - 'a' + 'A' : c) : '_';
    }
    *p++ = '_';
    *p++ = '\0';
    char *lname = p;
    for (size_t i = 0; i < nl; i++)
        lname[i] = (char)lower((unsigned char)name[i]);
    lname[nl] = '\0';
    for (size_t i = 0; i < k->n; i++) {
        if (strcmp(k->names[i], lname) == 0) {
            mb__free(pre);
            return MB_OK;
        }
        if (strcmp(k->prefixes[i], pre) == 0) {
            mb_status st = mb_err_set(err, MB_EINVAL,
                                      "config: sections %s and %s both map to the "
                                      "environment prefix %s",
                                      k->names[i], lname, pre);
            mb__free(pre);
            return st;
        }
    }
    char **np = mb__realloc(k->prefixes, (k->n + 1) * sizeof *np);
    if (np == NULL) {
        mb__free(pre);
        return mb_err_set(err, MB_ENOMEM, "config: out of memory");
    }
    k->prefixes = np;
    const char **nn = mb__realloc((void *)k->names, (k->n + 1) * sizeof *nn);
    if (nn == NULL) {
        mb__free(pre);
        return mb_err_set(err, MB_ENOMEM, "config: out of memory");
    }
    k->names = nn;
    k->prefixes[k->n] = pre;
    k->names[k->n] = lname;
    k->n++;
    return MB_OK;
}

static bool known_has(const known_sections *k, const char *name)
{
    for (size_t i = 0; i < k->n; i++) {
        if (name_eq(k->names[i], name))
            return true;
    }
    return false;
}

/* "gateway, nats, auth" into buf (shortened to fit). */
static const char *known_list(const known_sections *k, char *buf, size_t size)
{
    size_t o = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < k->n && o < size; i++)
        o += (size_t)snprintf(buf + o, size - o, "%s%s", i ? ", " : "", k->names[i]);
    return buf;
}

/* ---- the file ---- */

/* Read the file into a new NUL-terminated buffer. */
static mb_status read_file(const char *path, char **out, size_t *len, mb_err *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        return mb_err_set(err, e == ENOENT ? MB_ENOTFOUND : MB_EIO,
                          "config file %s: cannot open: %s", path, strerror(e));
    }
    char *buf = mb__malloc(MB_CONFIG_MAX_FILE_BYTES + 2);
    if (buf == NULL) {
        close(fd);
        return mb_err_set(err, MB_ENOMEM, "config file %s: out of memory", path);
    }
    size_t n = 0;
    for (;;) {
        ssize_t r = read(fd, buf + n, MB_CONFIG_MAX_FILE_BYTES + 1 - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int e = errno;
            mb__free(buf);
            close(fd);
            return mb_err_set(err, MB_EIO, "config file %s: cannot read: %s", path, strerror(e));
        }
        if (r == 0)
            break;
        n += (size_t)r;
        if (n > MB_CONFIG_MAX_FILE_BYTES) {
            mb__free(buf);
            close(fd);
            return mb_err_set(err, MB_ETOOBIG, "config file %s: larger than %d bytes", path,
                              MB_CONFIG_MAX_FILE_BYTES);
        }
    }
    close(fd);
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return MB_OK;
}

typedef struct parse_ctx {
    mb_config *cfg;
    const known_sections *known; /* NULL: any section */
    const char *path;
    const char *buf;
    size_t len, pos;
    unsigned lineno;
    bool failed;
    unsigned fail_line;
    mb_err err; /* our first error, merged with libinih's at the end */
} parse_ctx;

static char *parse_fail(parse_ctx *p, mb_status code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

static char *parse_fail(parse_ctx *p, mb_status code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    mb_err_vset(&p->err, code, fmt, ap);
    va_end(ap);
    if (!p->failed) {
        p->failed = true;
        p->fail_line = p->lineno;
    }
    return NULL;
}

/* Validate a trimmed "[name] ; comment" line and write "[name]" (lower case)
 * into out. Returns false after recording the error. */
static bool header_line(parse_ctx *p, const char *s, size_t n, char *out)
{
    const char *rb = memchr(s, ']', n);
    if (rb == NULL) {
        parse_fail(p, MB_EINVAL, "%s:%u: section header without ']'", p->path, p->lineno);
        return false;
    }
    const char *name = s + 1;
    size_t nl = (size_t)(rb - name);
    while (nl > 0 && is_space((unsigned char)*name)) {
        name++;
        nl--;
    }
    while (nl > 0 && is_space((unsigned char)name[nl - 1]))
        nl--;
    const char *rest = rb + 1, *end = s + n;
    while (rest < end && is_space((unsigned char)*rest))
        rest++;
    if (rest < end && *rest != ';' && *rest != '#') {
        parse_fail(p, MB_EINVAL, "%s:%u: text after the section header", p->path, p->lineno);
        return false;
    }
    if (!valid_section(name, nl)) {
        parse_fail(p, MB_EINVAL,
                   "%s:%u: invalid section name \"%.*s\" (1 to %d letters, digits, '_', '.' or "
                   "'-')",
                   p->path, p->lineno, (int)(nl > 64 ? 64 : nl), name, MB_CONFIG_MAX_NAME);
        return false;
    }
    out[0] = '[';
    for (size_t i = 0; i < nl; i++)
        out[1 + i] = (char)lower((unsigned char)name[i]);
    out[1 + nl] = ']';
    out[2 + nl] = '\0';
    if (p->known != NULL) {
        out[1 + nl] = '\0';
        if (!known_has(p->known, out + 1)) {
            char list[160];
            parse_fail(p, MB_EINVAL, "%s:%u: unknown section [%s] (known: %s)", p->path, p->lineno,
                       out + 1, known_list(p->known, list, sizeof list));
            return false;
        }
        out[1 + nl] = ']';
    }
    return true;
}

/* libinih's reader: one source line per call (see the file comment). */
static char *reader(char *str, int num, void *stream)
{
    parse_ctx *p = stream;
    if (p->failed || p->pos >= p->len)
        return NULL;
    const char *line = p->buf + p->pos;
    const char *nl = memchr(line, '\n', p->len - p->pos);
    size_t n = nl != NULL ? (size_t)(nl - line) : p->len - p->pos;
    p->pos += n + (nl != NULL);
    p->lineno++;
    if (n > 0 && line[n - 1] == '\r')
        n--;
    if (n > MB_CONFIG_MAX_LINE)
        return parse_fail(p, MB_ETOOBIG, "%s:%u: line longer than %d bytes", p->path, p->lineno,
                          MB_CONFIG_MAX_LINE);
    if (memchr(line, '\0', n) != NULL)
        return parse_fail(p, MB_EINVAL, "%s:%u: NUL byte in line", p->path, p->lineno);
    if (p->lineno == 1 && n >= 3 && memcmp(line, "\xEF\xBB\xBF", 3) == 0) {
        line += 3;
        n -= 3;
    }
    while (n > 0 && is_space((unsigned char)*line)) {
        line++;
        n--;
    }
    while (n > 0 && is_space((unsigned char)line[n - 1]))
        n--;
    if (num < 1 || (size_t)num < n + 1)
        return parse_fail(p, MB_ETOOBIG,
                          "%s:%u: line of %zu bytes is longer than libinih accepts (%d)", p->path,
                          p->lineno, n, num - 1);

    if (n == 0 || *line == '#' || *line == ';') {
        str[0] = '\0';
        return str;
    }
    if (*line == '[')
        return header_line(p, line, n, str) ? str : NULL;
    const char *eq = memchr(line, '=', n);
    const char *colon = memchr(line, ':', n);
    if (eq == NULL || (colon != NULL && colon < eq))
        return parse_fail(p, MB_EINVAL, "%s:%u: expected \"key = value\" or a [section] header",
                          p->path, p->lineno);
    memcpy(str, line, n);
    str[n] = '\0';
    return str;
}

static int handler(void *user, const char *section, const char *name, const char *value)
{
    parse_ctx *p = user;
    if (p->failed)
        return 0;
    if (section[0] == '\0') {
        parse_fail(p, MB_EINVAL, "%s:%u: key %s outside a section (add a [section] line above it)",
                   p->path, p->lineno, name);
        return 0;
    }
    size_t kl = strlen(name);
    if (!valid_key(name, kl)) {
        char q[80];
        parse_fail(p, MB_EINVAL, "%s:%u: invalid key name %s (1 to %d letters, digits or '_')",
                   p->path, p->lineno, quote(name, q, sizeof q), MB_CONFIG_MAX_NAME);
        return 0;
    }
    const entry *dup = find(p->cfg, section, name);
    if (dup != NULL) {
        parse_fail(p, MB_EINVAL, "%s:%u: duplicate key [%s] %s (first set at line %u)", p->path,
                   p->lineno, dup->section, dup->key, dup->line);
        return 0;
    }
    /* A path beyond 200 bytes keeps its end, which names the file: so the
     * sources of 4096 keys stay small whatever the path. */
    char source[256];
    size_t pl = strlen(p->path);
    if (pl > 200)
        snprintf(source, sizeof source, "...%s:%u", p->path + pl - 200, p->lineno);
    else
        snprintf(source, sizeof source, "%s:%u", p->path, p->lineno);
    mb_status st = store_add(p->cfg, section, name, value, strlen(value), source, p->lineno);
    if (st == MB_ELIMIT)
        parse_fail(p, st, "%s:%u: more than %d keys", p->path, p->lineno, MB_CONFIG_MAX_KEYS);
    else if (st != MB_OK)
        parse_fail(p, st, "%s:%u: out of memory", p->path, p->lineno);
    return st == MB_OK;
}

/* Debian's libinih takes lines of ini_max_line - 3 bytes; raise it once to
 * ours (never lower it: another user in the process may want more). */
static pthread_once_t inih_once = PTHREAD_ONCE_INIT;

static void raise_inih_line_limit(void)
{
    if (&ini_max_line != NULL && ini_max_line < MB_CONFIG_MAX_LINE + 3)
        ini_max_line = MB_CONFIG_MAX_LINE + 3;
}

static mb_status parse_file(mb_config *cfg, const char *path, const known_sections *known,
                            mb_err *err)
{
    char *buf = NULL;
    size_t len = 0;
    mb_status st = read_file(path, &buf, &len, err);
    if (st != MB_OK)
        return st;
    pthread_once(&inih_once, raise_inih_line_limit);

    parse_ctx p = {.cfg = cfg, .known = known, .path = path, .buf = buf, .len = len};
    int r = ini_parse_stream(reader, &p, handler, &p);
    mb__free(buf);
    /* Report whichever error comes first in the file: ours, or a line that
     * libinih refused after our checks passed it. */
    if (r > 0 && (!p.failed || (unsigned)r < p.fail_line))
        return mb_err_set(err, MB_EINVAL, "%s:%d: expected \"key = value\" or a [section] header",
                          path, r);
    if (p.failed)
        return mb_err_set(err, p.err.code, "%s", p.err.msg);
    if (r == -2)
        return mb_err_set(err, MB_ENOMEM, "config file %s: out of memory", path);
    if (r != 0)
        return mb_err_set(err, MB_EINTERNAL, "config file %s: libinih returned %d", path, r);
    return MB_OK;
}

/* ---- the environment ---- */

static void warnf(const mb_config_opts *opts, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

static void warnf(const mb_config_opts *opts, const char *fmt, ...)
{
    if (opts == NULL || opts->warn == NULL)
        return;
    char msg[MB_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    opts->warn(opts->warn_ctx, msg);
}

static bool env_ignored(const mb_config_opts *opts, const char *name, size_t n)
{
    if (opts == NULL || opts->env_ignore == NULL)
        return false;
    for (const char *const *i = opts->env_ignore; *i != NULL; i++) {
        if (strlen(*i) == n && memcmp(*i, name, n) == 0)
            return true;
    }
    return false;
}

static mb_status apply_env_var(mb_config *cfg, const char *var, const known_sections *known,
                               const mb_config_opts *opts, mb_err *err)
{
    const size_t plen = sizeof MB_CONFIG_ENV_PREFIX - 1;
    if (strncmp(var, MB_CONFIG_ENV_PREFIX, plen) != 0)
        return MB_OK;
    const char *eq = strchr(var, '=');
    if (eq == NULL)
        return MB_OK;
    size_t nlen = (size_t)(eq - var);
    if (env_ignored(opts, var, nlen))
        return MB_OK;

    size_t best = SIZE_MAX, best_len = 0;
    for (size_t i = 0; i < known->n; i++) {
        size_t l = strlen(known->prefixes[i]);
        if (l <= nlen && l > best_len && memcmp(var, known->prefixes[i], l) == 0) {
            best = i;
            best_len = l;
        }
    }
    if (best == SIZE_MAX) {
        char list[160];
        warnf(opts, "environment variable %.*s matches no config section (known: %s); ignored",
              (int)(nlen > 100 ? 100 : nlen), var, known_list(known, list, sizeof list));
        return MB_OK;
    }
    const char *k = var + best_len;
    size_t kl = nlen - best_len;
    bool upper = kl > 0 && kl <= MB_CONFIG_MAX_NAME;
    for (size_t i = 0; upper && i < kl; i++)
        upper = (k[i] >= 'A' && k[i] <= 'Z') || (k[i] >= '0' && k[i] <= '9') || k[i] == '_';
    if (!upper) {
        warnf(opts,
              "environment variable %.*s does not name a key of [%s] (upper-case letters, "
              "digits and '_' after %s); ignored",
              (int)(nlen > 100 ? 100 : nlen), var, known->names[best], known->prefixes[best]);
        return MB_OK;
    }
    char key[MB_CONFIG_MAX_NAME + 1];
    for (size_t i = 0; i < kl; i++)
        key[i] = (char)lower((unsigned char)k[i]);
    key[kl] = '\0';

    const char *v = eq + 1;
    size_t vl = strlen(v);
    while (vl > 0 && is_space((unsigned char)*v)) {
        v++;
        vl--;
    }
    while (vl > 0 && is_space((unsigned char)v[vl - 1]))
        vl--;
    if (vl > MB_CONFIG_MAX_LINE)
        return mb_err_set(err, MB_ETOOBIG, "environment variable %.*s: value longer than %d bytes",
                          (int)nlen, var, MB_CONFIG_MAX_LINE);

    char source[128]; /* "env " + MUDBUS_ + two names of at most 48 + '_' */
    snprintf(source, sizeof source, "env %.*s", (int)nlen, var);
    entry *e = find(cfg, known->names[best], key);
    if (e != NULL) {
        /* A name given twice in an environment: the first wins, as with
         * getenv(). Otherwise the environment beats the file. */
        if (e->line == 0)
            return MB_OK;
        entry fresh;
        if (entry_fill(&fresh, known->names[best], key, v, vl, source, 0) != MB_OK)
            return mb_err_set(err, MB_ENOMEM, "config: out of memory");
        mb__free(e->block);
        *e = fresh;
        return MB_OK;
    }
    mb_status st = store_add(cfg, known->names[best], key, v, vl, source, 0);
    if (st == MB_ELIMIT)
        return mb_err_set(err, st, "config: more than %d keys (at environment variable %.*s)",
                          MB_CONFIG_MAX_KEYS, (int)nlen, var);
    if (st != MB_OK)
        return mb_err_set(err, st, "config: out of memory");
    return MB_OK;
}

/* ---- load ---- */

mb_status mb_config_load(const char *path, const char *const *environ_vars,
                         const mb_config_opts *opts, mb_config **out, mb_err *err)
{
    if (out == NULL)
        return mb_err_set(err, MB_EINVAL, "config: NULL out");
    known_sections known = {0};
    mb_status st = MB_OK;
    if (opts != NULL && opts->sections != NULL) {
        for (const char *const *s = opts->sections; *s != NULL && st == MB_OK; s++) {
            if (!valid_section(*s, strlen(*s)))
                st = mb_err_set(err, MB_EINVAL, "config: invalid section name \"%s\" in opts", *s);
            else
                st = known_add(&known, *s, err);
        }
        if (st != MB_OK) {
            known_free(&known);
            return st;
        }
    }

    mb_config *cfg = mb__calloc(1, sizeof *cfg);
    if (cfg == NULL) {
        known_free(&known);
        return mb_err_set(err, MB_ENOMEM, "config: out of memory");
    }
    bool any_section = opts == NULL || opts->sections == NULL;
    if (path != NULL)
        st = parse_file(cfg, path, any_section ? NULL : &known, err);

    /* Without a table, the environment is resolved against the file's
     * sections. */
    for (size_t i = 0; st == MB_OK && any_section && i < cfg->n; i++)
        st = known_add(&known, cfg->v[i].section, err);

    if (st == MB_OK) {
        const char *const *envp = environ_vars;
        if (envp == NULL)
            envp = (const char *const *)environ;
        for (; *envp != NULL && st == MB_OK; envp++)
            st = apply_env_var(cfg, *envp, &known, opts, err);
    }
    known_free(&known);
    if (st != MB_OK) {
        mb_config_destroy(cfg);
        return st;
    }
    *out = cfg;
    return MB_OK;
}

/* ---- lookups ---- */

bool mb_config_has(const mb_config *cfg, const char *section, const char *key)
{
    return find(cfg, section, key) != NULL;
}

const char *mb_config_source(const mb_config *cfg, const char *section, const char *key)
{
    const entry *e = find(cfg, section, key);
    return e != NULL ? e->source : NULL;
}

const char *mb_config_key_at(const mb_config *cfg, const char *section, size_t i)
{
    if (cfg == NULL || section == NULL)
        return NULL;
    for (size_t j = 0; j < cfg->n; j++) {
        if (name_eq(cfg->v[j].section, section) && i-- == 0)
            return cfg->v[j].key;
    }
    return NULL;
}

/* Levenshtein distance of two short names, capped: good enough to suggest
 * "pool_size" for "pool_sise". */
static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > MB_CONFIG_MAX_NAME || lb > MB_CONFIG_MAX_NAME)
        return SIZE_MAX;
    size_t row[MB_CONFIG_MAX_NAME + 1];
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t cost = lower((unsigned char)a[i - 1]) == lower((unsigned char)b[j - 1]) ? 0 : 1;
            size_t best = diag + cost;
            if (row[j] + 1 < best)
                best = row[j] + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

mb_status mb_config_check_keys(const mb_config *cfg, const char *section, const char *const *known,
                               mb_err *err)
{
    if (cfg == NULL || section == NULL)
        return MB_OK;
    for (size_t i = 0; i < cfg->n; i++) {
        const entry *e = &cfg->v[i];
        if (!name_eq(e->section, section))
            continue;
        const char *near = NULL;
        size_t near_d = 3; /* suggest only within two edits */
        bool ok = false;
        for (const char *const *k = known; k != NULL && *k != NULL; k++) {
            if (name_eq(*k, e->key)) {
                ok = true;
                break;
            }
            size_t d = edit_distance(e->key, *k);
            if (d < near_d) {
                near_d = d;
                near = *k;
            }
        }
        if (ok)
            continue;
        if (near != NULL)
            return mb_err_set(err, MB_EINVAL, "[%s] %s (%s): unknown key; did you mean %s?",
                              e->section, e->key, e->source, near);
        return mb_err_set(err, MB_EINVAL, "[%s] %s (%s): unknown key", e->section, e->key,
                          e->source);
    }
    return MB_OK;
}

/* ---- getters ---- */

static mb_status bad_value(mb_err *err, const entry *e, const char *why)
{
    char q[64];
    return mb_err_set(err, MB_EINVAL, "[%s] %s (%s): %s %s", e->section, e->key, e->source,
                      quote(e->value, q, sizeof q), why);
}

/* Parse leading decimal digits. Returns the number of digits (0: none);
 * *overflow when the number does not fit. */
static size_t parse_digits(const char *s, uint64_t *out, bool *overflow)
{
    uint64_t v = 0;
    size_t i = 0;
    *overflow = false;
    for (; s[i] >= '0' && s[i] <= '9'; i++) {
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            *overflow = true;
        else
            v = v * 10 + d;
    }
    *out = v;
    return i;
}

const char *mb_config_get_str(const mb_config *cfg, const char *section, const char *key,
                              const char *def)
{
    const entry *e = find(cfg, section, key);
    return e != NULL ? e->value : def;
}

mb_status mb_config_get_bool(const mb_config *cfg, const char *section, const char *key, bool def,
                             bool *out, mb_err *err)
{
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};
    const entry *e = find(cfg, section, key);
    if (e == NULL) {
        *out = def;
        return MB_OK;
    }
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        if (name_eq(yes[i], e->value)) {
            *out = true;
            return MB_OK;
        }
        if (name_eq(no[i], e->value)) {
            *out = false;
            return MB_OK;
        }
    }
    return bad_value(err, e, "is not a boolean (true/false, yes/no, on/off, 1/0)");
}

/* The range error, with values shown by `show`. */
typedef void (*show_fn)(uint64_t v, char *buf, size_t size);

static void show_plain(uint64_t v, char *buf, size_t size)
{
    snprintf(buf, size, "%" PRIu64, v);
}

static void show_ms(uint64_t v, char *buf, size_t size)
{
    if (v != 0 && v % 3600000 == 0)
        snprintf(buf, size, "%" PRIu64 "h", v / 3600000);
    else if (v != 0 && v % 60000 == 0)
        snprintf(buf, size, "%" PRIu64 "m", v / 60000);
    else if (v != 0 && v % 1000 == 0)
        snprintf(buf, size, "%" PRIu64 "s", v / 1000);
    else
        snprintf(buf, size, "%" PRIu64 "ms", v);
}

static void show_bytes(uint64_t v, char *buf, size_t size)
{
    if (v != 0 && v % (1u << 30) == 0)
        snprintf(buf, size, "%" PRIu64 "GiB", v >> 30);
    else if (v != 0 && v % (1u << 20) == 0)
        snprintf(buf, size, "%" PRIu64 "MiB", v >> 20);
    else if (v != 0 && v % (1u << 10) == 0)
        snprintf(buf, size, "%" PRIu64 "KiB", v >> 10);
    else
        snprintf(buf, size, "%" PRIu64 "B", v);
}

static mb_status check_range(mb_err *err, const entry *e, uint64_t v, uint64_t min, uint64_t max,
                             show_fn show)
{
    if (v >= min && v <= max)
        return MB_OK;
    char a[32], b[32], why[96];
    show(min, a, sizeof a);
    show(max, b, sizeof b);
    if (max == UINT64_MAX)
        snprintf(why, sizeof why, "is out of range (at least %s)", a);
    else
        snprintf(why, sizeof why, "is out of range (%s to %s)", a, b);
    return bad_value(err, e, why);
}

mb_status mb_config_get_u64(const mb_config *cfg, const char *section, const char *key,
                            uint64_t def, uint64_t min, uint64_t max, uint64_t *out, mb_err *err)
{
    const entry *e = find(cfg, section, key);
    if (e == NULL) {
        *out = def;
        return MB_OK;
    }
    uint64_t v;
    bool overflow;
    size_t nd = parse_digits(e->value, &v, &overflow);
    if (nd == 0 || e->value[nd] != '\0')
        return bad_value(err, e, "is not a whole number (digits only, no sign)");
    if (overflow)
        return bad_value(err, e, "is too large");
    mb_status st = check_range(err, e, v, min, max, show_plain);
    if (st == MB_OK)
        *out = v;
    return st;
}

mb_status mb_config_get_i64(const mb_config *cfg, const char *section, const char *key, int64_t def,
                            int64_t min, int64_t max, int64_t *out, mb_err *err)
{
    const entry *e = find(cfg, section, key);
    if (e == NULL) {
        *out = def;
        return MB_OK;
    }
    bool neg = e->value[0] == '-';
    uint64_t mag;
    bool overflow;
    size_t nd = parse_digits(e->value + neg, &mag, &overflow);
    if (nd == 0 || e->value[neg + nd] != '\0')
        return bad_value(err, e, "is not a whole number");
    if (overflow || mag > (uint64_t)INT64_MAX + neg)
        return bad_value(err, e, "is too large");
    int64_t v = neg ? (mag == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)mag) : (int64_t)mag;
    if (v < min || v > max) {
        char why[96];
        snprintf(why, sizeof why, "is out of range (%" PRId64 " to %" PRId64 ")", min, max);
        return bad_value(err, e, why);
    }
    *out = v;
    return MB_OK;
}

typedef struct unit {
    const char *name;
    uint64_t mult;
} unit;

/* Number + optional unit from `units` (case-sensitive unless `fold`). */
static mb_status get_with_unit(const mb_config *cfg, const char *section, const char *key,
                               uint64_t def, uint64_t min, uint64_t max, uint64_t *out, mb_err *err,
                               const unit *units, size_t nunits, bool fold, const char *what,
                               show_fn show)
{
    const entry *e = find(cfg, section, key);
    if (e == NULL) {
        *out = def;
        return MB_OK;
    }
    uint64_t v;
    bool overflow;
    size_t nd = parse_digits(e->value, &v, &overflow);
    const char *u = e->value + nd;
    uint64_t mult = 0;
    if (nd > 0 && *u == '\0') {
        mult = 1;
    } else if (nd > 0) {
        for (size_t i = 0; i < nunits; i++) {
            if (fold ? name_eq(units[i].name, u) : strcmp(units[i].name, u) == 0) {
                mult = units[i].mult;
                break;
            }
        }
    }
    if (mult == 0)
        return bad_value(err, e, what);
    if (overflow || v > UINT64_MAX / mult)
        return bad_value(err, e, "is too large");
    v *= mult;
    mb_status st = check_range(err, e, v, min, max, show);
    if (st == MB_OK)
        *out = v;
    return st;
}

mb_status mb_config_get_duration_ms(const mb_config *cfg, const char *section, const char *key,
                                    uint64_t def, uint64_t min_ms, uint64_t max_ms, uint64_t *out,
                                    mb_err *err)
{
    static const unit units[] = {{"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}};
    return get_with_unit(cfg, section, key, def, min_ms, max_ms, out, err, units,
                         sizeof units / sizeof units[0], false,
                         "is not a duration (a whole number with ms, s, m or h, e.g. 500ms or "
                         "5s)",
                         show_ms);
}

mb_status mb_config_get_size(const mb_config *cfg, const char *section, const char *key,
                             uint64_t def, uint64_t min, uint64_t max, uint64_t *out, mb_err *err)
{
    static const unit units[] = {{"B", 1}, {"KiB", 1u << 10}, {"MiB", 1u << 20}, {"GiB", 1u << 30}};
    return get_with_unit(cfg, section, key, def, min, max, out, err, units,
                         sizeof units / sizeof units[0], true,
                         "is not a size (a whole number with B, KiB, MiB or GiB, e.g. 64KiB; "
                         "1 KiB = 1024 bytes)",
                         show_bytes);
}

mb_status mb_config_get_list(const mb_config *cfg, const char *section, const char *key,
                             const char **items, size_t max, size_t *n, mb_err *err)
{
    const entry *e = find(cfg, section, key);
    if (e == NULL)
        return MB_OK;
    if (e->empty_item != 0) {
        char why[96];
        snprintf(why, sizeof why, "has an empty item (item %zu)", e->empty_item);
        return bad_value(err, e, why);
    }
    if (e->nitems > max) {
        char why[96];
        snprintf(why, sizeof why, "has %zu items; at most %zu are allowed", e->nitems, max);
        return bad_value(err, e, why);
    }
    const char *p = e->items;
    for (size_t i = 0; i < e->nitems; i++) {
        items[i] = p;
        p += strlen(p) + 1;
    }
    *n = e->nitems;
    return MB_OK;
}
