/* SPDX-License-Identifier: MIT */
/* loadgen_stats: see loadgen_stats.h. */
#include "loadgen_stats.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void lg_hist_reset(lg_hist *h)
{
    memset(h, 0, sizeof *h);
}

static unsigned msb64(uint64_t v)
{
    unsigned n = 0;
    while (v >>= 1)
        n++;
    return n;
}

static size_t hist_index(uint64_t v)
{
    const uint64_t sub = (uint64_t)1 << LG_HIST_SUB_BITS;
    if (v < sub)
        return (size_t)v;
    if (v >= (uint64_t)1 << LG_HIST_MAX_BITS)
        return LG_HIST_BUCKETS - 1;
    unsigned e = msb64(v) - LG_HIST_SUB_BITS;
    return (size_t)(e + 1) * (size_t)sub + (size_t)((v >> e) - sub);
}

/* The middle of bucket i (the inverse of hist_index). */
static uint64_t hist_value(size_t i)
{
    const uint64_t sub = (uint64_t)1 << LG_HIST_SUB_BITS;
    if (i < sub)
        return (uint64_t)i;
    unsigned e = (unsigned)(i / sub) - 1;
    uint64_t lo = ((uint64_t)(i % sub) + sub) << e;
    return lo + (((uint64_t)1 << e) >> 1);
}

void lg_hist_add(lg_hist *h, uint64_t v)
{
    h->bucket[hist_index(v)]++;
    if (h->count == 0 || v < h->min)
        h->min = v;
    if (v > h->max)
        h->max = v;
    h->count++;
    h->sum += (double)v;
}

uint64_t lg_hist_quantile(const lg_hist *h, double q)
{
    if (h->count == 0)
        return 0;
    if (q <= 0)
        return h->min;
    if (q >= 1)
        return h->max;
    uint64_t rank = (uint64_t)(q * (double)h->count);
    if ((double)rank < q * (double)h->count)
        rank++;
    if (rank == 0)
        rank = 1;
    uint64_t seen = 0;
    for (size_t i = 0; i < LG_HIST_BUCKETS; i++) {
        seen += h->bucket[i];
        if (seen >= rank) {
            uint64_t v = hist_value(i);
            if (v < h->min)
                v = h->min;
            if (v > h->max)
                v = h->max;
            return v;
        }
    }
    return h->max;
}

double lg_hist_mean(const lg_hist *h)
{
    return h->count ? h->sum / (double)h->count : 0;
}

void lg_closes_add(lg_closes *c, unsigned code)
{
    c->total++;
    for (unsigned i = 0; i < c->kinds; i++) {
        if (c->code[i] == code) {
            c->count[i]++;
            return;
        }
    }
    if (c->kinds < LG_CLOSE_KINDS) {
        c->code[c->kinds] = code;
        c->count[c->kinds] = 1;
        c->kinds++;
        return;
    }
    c->other++;
}

static char *closes_write(const lg_closes *c, char *buf, size_t len, int json)
{
    const char *q = json ? "\"" : "", *sep = json ? "," : " ";
    size_t off = 0;
    buf[0] = '\0';
    if (json)
        off += (size_t)snprintf(buf, len, "{");
    for (unsigned i = 0; i < c->kinds && off < len; i++)
        off += (size_t)snprintf(buf + off, len - off, "%s%s%u%s:%" PRIu64, i ? sep : "", q,
                                c->code[i], q, c->count[i]);
    if (c->other && off < len)
        off += (size_t)snprintf(buf + off, len - off, "%s%sother%s:%" PRIu64, c->kinds ? sep : "",
                                q, q, c->other);
    if (json && off < len)
        snprintf(buf + off, len - off, "}");
    else if (!json && c->total == 0)
        snprintf(buf, len, "none");
    return buf;
}

char *lg_closes_format(const lg_closes *c, char *buf, size_t len)
{
    return closes_write(c, buf, len, 0);
}

char *lg_closes_json(const lg_closes *c, char *buf, size_t len)
{
    return closes_write(c, buf, len, 1);
}

double lg_proc_thread_cpu_s(int pid, int tid)
{
    char path[96], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/task/%d/stat", pid, tid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* utime and stime are fields 14 and 15; the command name (field 2, in
     * parentheses) may hold blanks, so count from its closing parenthesis. */
    const char *p = strrchr(buf, ')');
    unsigned long ut = 0, st = 0;
    if (p == NULL ||
        sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return 0;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

long lg_proc_rss_kib(int pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    long kib = -1;
    while (fgets(line, sizeof line, f) != NULL) {
        if (strncmp(line, "VmRSS:", 6) == 0) {
            kib = strtol(line + 6, NULL, 10);
            break;
        }
    }
    fclose(f);
    return kib;
}

int lg_sys_cpu_ticks(uint64_t *busy, uint64_t *total)
{
    *busy = *total = 0;
    FILE *f = fopen("/proc/stat", "r");
    if (f == NULL)
        return -1;
    char line[512];
    int rc = -1;
    if (fgets(line, sizeof line, f) != NULL && strncmp(line, "cpu ", 4) == 0) {
        /* user nice system idle iowait irq softirq steal (guest time is
         * already inside user and nice). */
        uint64_t v[8] = {0};
        char *p = line + 4;
        for (int i = 0; i < 8; i++) {
            char *end;
            v[i] = strtoull(p, &end, 10);
            if (end == p)
                break;
            p = end;
        }
        for (int i = 0; i < 8; i++)
            *total += v[i];
        *busy = *total - v[3] - v[4];
        rc = 0;
    }
    fclose(f);
    return rc;
}
