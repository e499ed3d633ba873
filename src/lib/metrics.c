/* SPDX-License-Identifier: MIT */
/*
 * metrics: registry of counters, gauges and power-of-two histograms, and the
 * Prometheus text exposition.
 *
 * Each metric lives in its own allocation that never moves, so the pointer that
 * registration returns stays valid while the registry grows. The registry's
 * list is guarded by a mutex that only registration and exposition take; the
 * hot path touches nothing but the metric's atomics.
 */
#include "mudbus/metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "metrics_int.h"
#include "strbuf.h"

typedef enum { KIND_COUNTER, KIND_GAUGE, KIND_HISTOGRAM } metric_kind;

typedef struct entry {
    metric_kind kind;
    char *name;
    char *help;
    char *labels; /* NULL or "k=\"v\",..." */
    union {
        mb_counter counter;
        mb_gauge gauge;
        mb_histogram hist;
    } u;
} entry;

struct mb_metrics {
    pthread_mutex_t lock;
    uint32_t timing_mask; /* sample_mask of new timing histograms */
    entry **entries;
    size_t n, cap;
};

/* Bucket of a value: 0 for v <= 1, else ceil(log2(v)), capped at the +Inf
 * bucket. */
static unsigned bucket_of(uint64_t v)
{
    if (v <= 1)
        return 0;
    unsigned b = 64u - (unsigned)__builtin_clzll(v - 1);
    return b > MB_HIST_BUCKETS ? MB_HIST_BUCKETS : b;
}

void mb_histogram_observe(mb_histogram *h, uint64_t v)
{
    atomic_fetch_add_explicit(&h->buckets[bucket_of(v)], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum, v, memory_order_relaxed);
}

void mb_histogram_snapshot_get(const mb_histogram *h, mb_histogram_snapshot *out)
{
    uint64_t total = 0;
    for (unsigned i = 0; i <= MB_HIST_BUCKETS; i++) {
        out->buckets[i] = atomic_load_explicit(&h->buckets[i], memory_order_relaxed);
        total += out->buckets[i];
    }
    /* The bucket sum is the count that matches the buckets exactly. */
    out->count = total;
    out->sum = atomic_load_explicit(&h->sum, memory_order_relaxed);
}

double mb_histogram_quantile(const mb_histogram_snapshot *s, double q)
{
    if (s->count == 0 || !(q > 0))
        return 0;
    if (q > 1)
        q = 1;
    double rank = q * (double)s->count;
    uint64_t seen = 0;
    for (unsigned i = 0; i <= MB_HIST_BUCKETS; i++) {
        if (s->buckets[i] == 0)
            continue;
        if ((double)(seen + s->buckets[i]) >= rank) {
            double lo = i == 0 ? 0 : ldexp(1.0, (int)i - 1);
            double hi = ldexp(1.0, (int)(i < MB_HIST_BUCKETS ? i : MB_HIST_BUCKETS - 1));
            if (i == MB_HIST_BUCKETS)
                return hi; /* +Inf bucket: the best we know is its lower bound */
            double frac = (rank - (double)seen) / (double)s->buckets[i];
            return lo + (hi - lo) * frac;
        }
        seen += s->buckets[i];
    }
    return ldexp(1.0, MB_HIST_BUCKETS - 1);
}

mb_status mb_metrics_create(mb_metrics **out, mb_err *err)
{
    if (out == NULL)
        return mb_err_set(err, MB_EINVAL, "metrics: NULL out");
    mb_metrics *m = mb__calloc(1, sizeof *m);
    if (m == NULL)
        return mb_err_set(err, MB_ENOMEM, "metrics: out of memory");
    pthread_mutex_init(&m->lock, NULL);
    *out = m;
    return MB_OK;
}

static void entry_free(entry *e)
{
    mb__free(e->name);
    mb__free(e->help);
    mb__free(e->labels);
    mb__free(e);
}

void mb_metrics_destroy(mb_metrics *m)
{
    if (m == NULL)
        return;
    for (size_t i = 0; i < m->n; i++)
        entry_free(m->entries[i]);
    mb__free(m->entries);
    pthread_mutex_destroy(&m->lock);
    mb__free(m);
}

void mb__metrics_forget(mb_metrics *m, const void *metric)
{
    if (m == NULL || metric == NULL)
        return;
    pthread_mutex_lock(&m->lock);
    for (size_t i = 0; i < m->n; i++) {
        entry *e = m->entries[i];
        if ((const void *)&e->u != metric)
            continue;
        /* Keep the order of registration: exposition groups families by it. */
        memmove(&m->entries[i], &m->entries[i + 1], (m->n - i - 1) * sizeof *m->entries);
        m->n--;
        entry_free(e);
        break;
    }
    pthread_mutex_unlock(&m->lock);
}

static int valid_name(const char *s)
{
    if (s == NULL || *s == '\0')
        return 0;
    for (const char *p = s; *p; p++) {
        char c = *p;
        int alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
        if (!alpha && !(p != s && c >= '0' && c <= '9'))
            return 0;
    }
    return 1;
}

/* Labels: name="value" pairs separated by commas; values may hold \" \\ \n
 * escapes but no raw newline. */
static int valid_labels(const char *s)
{
    if (s == NULL)
        return 1;
    const char *p = s;
    while (*p) {
        const char *start = p;
        while ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || *p == '_' ||
               (p != start && *p >= '0' && *p <= '9'))
            p++;
        if (p == start || *p++ != '=' || *p++ != '"')
            return 0;
        while (*p && *p != '"') {
            if (*p == '\n')
                return 0;
            if (*p == '\\') {
                p++;
                if (*p != '\\' && *p != '"' && *p != 'n')
                    return 0;
            }
            p++;
        }
        if (*p++ != '"')
            return 0;
        if (*p == ',') {
            p++;
            if (*p == '\0')
                return 0;
        } else if (*p != '\0') {
            return 0;
        }
    }
    return 1;
}

static int same_str(const char *a, const char *b)
{
    if (a == NULL || b == NULL)
        return a == b;
    return strcmp(a, b) == 0;
}

static mb_status add_entry(mb_metrics *m, metric_kind kind, const char *name, const char *help,
                           const char *labels, double unit_scale, entry **out, mb_err *err)
{
    if (m == NULL || out == NULL)
        return mb_err_set(err, MB_EINVAL, "metrics: NULL argument");
    if (!valid_name(name))
        return mb_err_set(err, MB_EINVAL, "metrics: invalid metric name '%s'",
                          name ? name : "(null)");
    if (labels != NULL && *labels == '\0')
        labels = NULL;
    if (!valid_labels(labels))
        return mb_err_set(err, MB_EINVAL, "metrics: invalid labels '%s' for %s", labels, name);
    if (kind == KIND_HISTOGRAM && labels != NULL &&
        (strncmp(labels, "le=", 3) == 0 || strstr(labels, ",le=") != NULL))
        return mb_err_set(err, MB_EINVAL, "metrics: histogram %s may not have a label 'le'", name);
    if (help == NULL)
        help = "";
    if (strchr(help, '\n') != NULL)
        return mb_err_set(err, MB_EINVAL, "metrics: help of %s has a newline", name);

    mb_status st = MB_OK;
    pthread_mutex_lock(&m->lock);
    for (size_t i = 0; i < m->n; i++) {
        entry *e = m->entries[i];
        if (strcmp(e->name, name) != 0)
            continue;
        if (e->kind != kind) {
            st =
                mb_err_set(err, MB_EINVAL, "metrics: %s registered before with another type", name);
            goto out;
        }
        if (same_str(e->labels, labels)) {
            st = mb_err_set(err, MB_EEXIST, "metrics: %s{%s} registered twice", name,
                            labels ? labels : "");
            goto out;
        }
    }
    if (m->n == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 32;
        entry **p = mb__realloc(m->entries, cap * sizeof *p);
        if (p == NULL) {
            st = mb_err_set(err, MB_ENOMEM, "metrics: out of memory");
            goto out;
        }
        m->entries = p;
        m->cap = cap;
    }
    entry *e = mb__calloc(1, sizeof *e);
    if (e == NULL || (e->name = mb__strdup(name)) == NULL || (e->help = mb__strdup(help)) == NULL ||
        (labels != NULL && (e->labels = mb__strdup(labels)) == NULL)) {
        if (e != NULL)
            entry_free(e);
        st = mb_err_set(err, MB_ENOMEM, "metrics: out of memory");
        goto out;
    }
    e->kind = kind;
    if (kind == KIND_HISTOGRAM) {
        e->u.hist.unit_scale = unit_scale;
        atomic_init(&e->u.hist.sample_mask, unit_scale == 1e-9 ? m->timing_mask : 0);
    }
    m->entries[m->n++] = e;
    *out = e;
out:
    pthread_mutex_unlock(&m->lock);
    return st;
}

mb_status mb_metrics_counter(mb_metrics *m, const char *name, const char *help, const char *labels,
                             mb_counter **out, mb_err *err)
{
    entry *e;
    mb_status st = add_entry(m, KIND_COUNTER, name, help, labels, 0, &e, err);
    if (st == MB_OK)
        *out = &e->u.counter;
    return st;
}

mb_status mb_metrics_gauge(mb_metrics *m, const char *name, const char *help, const char *labels,
                           mb_gauge **out, mb_err *err)
{
    entry *e;
    mb_status st = add_entry(m, KIND_GAUGE, name, help, labels, 0, &e, err);
    if (st == MB_OK)
        *out = &e->u.gauge;
    return st;
}

mb_status mb_metrics_histogram(mb_metrics *m, const char *name, const char *help,
                               const char *labels, double unit_scale, mb_histogram **out,
                               mb_err *err)
{
    if (!(unit_scale > 0))
        return mb_err_set(err, MB_EINVAL, "metrics: histogram %s needs a positive unit scale",
                          name ? name : "(null)");
    entry *e;
    mb_status st = add_entry(m, KIND_HISTOGRAM, name, help, labels, unit_scale, &e, err);
    if (st == MB_OK)
        *out = &e->u.hist;
    return st;
}

mb_status mb_metrics_set_timing_sample(mb_metrics *m, uint32_t every_n, mb_err *err)
{
    if (m == NULL || every_n == 0 || every_n > 1024 || (every_n & (every_n - 1)) != 0)
        return mb_err_set(err, MB_EINVAL,
                          "metrics: timing sample %u is not a power of two in 1..1024", every_n);
    pthread_mutex_lock(&m->lock);
    m->timing_mask = every_n - 1;
    for (size_t i = 0; i < m->n; i++) {
        entry *e = m->entries[i];
        if (e->kind == KIND_HISTOGRAM && e->u.hist.unit_scale == 1e-9)
            atomic_store_explicit(&e->u.hist.sample_mask, m->timing_mask, memory_order_relaxed);
    }
    pthread_mutex_unlock(&m->lock);
    return MB_OK;
}

bool mb__metrics_label_value_ok(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n == 0 || n > max)
        return false;
    for (const char *p = s; *p != '\0'; p++) {
        char c = *p;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == ':' || c == '-'))
            return false;
    }
    return true;
}

static const char *kind_name(metric_kind k)
{
    switch (k) {
    case KIND_COUNTER:
        return "counter";
    case KIND_GAUGE:
        return "gauge";
    default:
        return "histogram";
    }
}

/* The shortest decimal that reads back as exactly v, as Prometheus clients
 * print floats: bucket bounds such as 2^30 ns must not be rounded. */
static void fmt_double(char *buf, size_t cap, double v)
{
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, cap, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            return;
    }
}

static mb_status write_hist(mb__strbuf *b, const entry *e)
{
    char num[40];
    mb_histogram_snapshot s;
    mb_histogram_snapshot_get(&e->u.hist, &s);
    const char *lb = e->labels ? e->labels : "";
    const char *sep = e->labels ? "," : "";
    int top = -1;
    for (int i = 0; i < MB_HIST_BUCKETS; i++)
        if (s.buckets[i] != 0)
            top = i;
    uint64_t cum = 0;
    mb_status st = MB_OK;
    for (int i = 0; i <= top && st == MB_OK; i++) {
        cum += s.buckets[i];
        fmt_double(num, sizeof num, ldexp(1.0, i) * e->u.hist.unit_scale);
        st = mb__strbuf_appendf(b, "%s_bucket{%s%sle=\"%s\"} %llu\n", e->name, lb, sep, num,
                                (unsigned long long)cum);
    }
    if (st == MB_OK)
        st = mb__strbuf_appendf(b, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", e->name, lb, sep,
                                (unsigned long long)s.count);
    fmt_double(num, sizeof num, (double)s.sum * e->u.hist.unit_scale);
    if (st == MB_OK)
        st = mb__strbuf_appendf(b, "%s_sum%s%s%s %s\n", e->name, e->labels ? "{" : "", lb,
                                e->labels ? "}" : "", num);
    if (st == MB_OK)
        st = mb__strbuf_appendf(b, "%s_count%s%s%s %llu\n", e->name, e->labels ? "{" : "", lb,
                                e->labels ? "}" : "", (unsigned long long)s.count);
    return st;
}

static mb_status write_entry(mb__strbuf *b, const entry *e)
{
    const char *open = e->labels ? "{" : "";
    const char *lb = e->labels ? e->labels : "";
    const char *close = e->labels ? "}" : "";
    switch (e->kind) {
    case KIND_COUNTER:
        return mb__strbuf_appendf(b, "%s%s%s%s %llu\n", e->name, open, lb, close,
                                  (unsigned long long)mb_counter_get(&e->u.counter));
    case KIND_GAUGE:
        return mb__strbuf_appendf(b, "%s%s%s%s %lld\n", e->name, open, lb, close,
                                  (long long)mb_gauge_get(&e->u.gauge));
    default:
        return write_hist(b, e);
    }
}

mb_status mb_metrics_format(mb_metrics *m, char **out, size_t *out_len, mb_err *err)
{
    if (m == NULL || out == NULL)
        return mb_err_set(err, MB_EINVAL, "metrics: NULL argument");
    mb__strbuf b;
    mb__strbuf_init(&b, (size_t)1 << 30);
    mb_status st = MB_OK;
    pthread_mutex_lock(&m->lock);
    char *done = mb__calloc(m->n ? m->n : 1, 1);
    if (done == NULL)
        st = MB_ENOMEM;
    /* One family at a time, in order of first registration. */
    for (size_t i = 0; i < m->n && st == MB_OK; i++) {
        if (done[i])
            continue;
        const entry *f = m->entries[i];
        st = mb__strbuf_appendf(&b, "# HELP %s ", f->name);
        for (const char *h = f->help; *h != '\0' && st == MB_OK; h++)
            st = *h == '\\' ? mb__strbuf_append(&b, "\\\\", 2) : mb__strbuf_append(&b, h, 1);
        if (st == MB_OK)
            st = mb__strbuf_appendf(&b, "\n# TYPE %s %s\n", f->name, kind_name(f->kind));
        for (size_t j = i; j < m->n && st == MB_OK; j++) {
            if (done[j] || strcmp(m->entries[j]->name, f->name) != 0)
                continue;
            done[j] = 1;
            st = write_entry(&b, m->entries[j]);
        }
    }
    pthread_mutex_unlock(&m->lock);
    mb__free(done);
    if (st != MB_OK) {
        mb__strbuf_free(&b);
        return mb_err_set(err, st, "metrics: cannot format exposition: %s", mb_status_str(st));
    }
    size_t len;
    char *text = mb__strbuf_steal(&b, &len);
    if (text == NULL)
        return mb_err_set(err, MB_ENOMEM, "metrics: out of memory");
    *out = text;
    if (out_len != NULL)
        *out_len = len;
    return MB_OK;
}
