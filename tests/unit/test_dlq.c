/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for the dead letter queue: CRC-32C, the round trip of every
 * field, ids across reopen, durability without close, filters (subject
 * patterns, status, time range, age, replayed), show, replay (dry run,
 * progress, rate limit on a manual clock, markers that survive reopen, an
 * interrupted replay that resumes, skip on error), purge, retention by age
 * and by size under both policies, a full queue, torn tails cut at every byte
 * of the last record, flipped bits, a corrupt record in an older segment,
 * marker bookkeeping across segment deletion, concurrent durable puts from 8
 * threads, async puts, read-only opens and the writer lock, argument checks
 * and metrics.
 *
 * Every test works in its own directory made with mkdtemp under /tmp; the
 * teardown removes it even when the test fails, and an atexit handler
 * removes any that a crash left behind.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crc32c.h"
#include "dlq_int.h"
#include "mudbus/dlq.h"

/* ---- temp directories ---- */

#define MAX_DIRS 64
static char dirs[MAX_DIRS][64];
static int ndirs;

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void rm_rf(const char *path)
{
    nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void rm_all_dirs(void)
{
    for (int i = 0; i < ndirs; i++) {
        if (dirs[i][0] != '\0')
            rm_rf(dirs[i]);
        dirs[i][0] = '\0';
    }
    ndirs = 0;
}

/* A new empty directory, removed by the teardown. */
static const char *new_dir(void)
{
    assert_true(ndirs < MAX_DIRS);
    char *d = dirs[ndirs++];
    strcpy(d, "/tmp/mb-dlq-test.XXXXXX");
    assert_non_null(mkdtemp(d));
    return d;
}

static int setup(void **state)
{
    (void)state;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    rm_all_dirs();
    return 0;
}

/* ---- helpers ---- */

typedef struct logbuf {
    pthread_mutex_t mu;
    char text[8192];
} logbuf;

static void log_fn(void *ctx, const char *line)
{
    logbuf *l = ctx;
    pthread_mutex_lock(&l->mu);
    size_t n = strlen(l->text);
    snprintf(l->text + n, sizeof l->text - n, "%s\n", line);
    pthread_mutex_unlock(&l->mu);
}

static mb_dlq *open_dir(const char *dir, const mb_dlq_opts *o)
{
    mb_dlq_opts dflt = {0};
    mb_dlq_opts opts = o ? *o : dflt;
    opts.create = true;
    mb_dlq *d = NULL;
    mb_err err = {0};
    mb_status st = mb_dlq_open(dir, &opts, &d, &err);
    if (st != MB_OK)
        fail_msg("open %s: %s: %s", dir, mb_status_name(st), err.msg);
    return d;
}

static void close_ok(mb_dlq *d)
{
    mb_err err = {0};
    assert_int_equal(mb_dlq_close(d, &err), MB_OK);
}

/* The payload of entry number k: binary, with NUL bytes, length 1..200. */
static size_t payload_for(uint64_t k, uint8_t *buf)
{
    size_t n = 1 + (size_t)(k * 37 % 200);
    for (size_t i = 0; i < n; i++)
        buf[i] = (uint8_t)((k * 131 + i * 7) % 256);
    if (n > 2)
        buf[1] = 0;
    return n;
}

static uint64_t put_one(mb_dlq *d, const char *subject, mb_status st, int64_t last_ms, uint64_t k,
                        bool durable)
{
    uint8_t pl[256];
    mb_dlq_entry e = {0};
    e.subject = subject;
    e.payload = pl;
    e.payload_len = payload_for(k, pl);
    e.error = st;
    e.error_message = "boom";
    e.attempts = (uint32_t)k;
    e.last_failure_ms = last_ms;
    e.origin = "publish";
    uint64_t id = 0;
    mb_err err = {0};
    mb_status rs = mb_dlq_put(d, &e, durable, &id, &err);
    if (rs != MB_OK)
        fail_msg("put: %s: %s", mb_status_name(rs), err.msg);
    assert_int_equal(e.id, id);
    return id;
}

typedef struct collected {
    size_t n;
    uint64_t ids[4096];
    uint32_t flags[4096];
    int stop_after; /* 0: never */
} collected;

static int collect_fn(void *ctx, const mb_dlq_entry *e)
{
    collected *c = ctx;
    assert_true(c->n < 4096);
    c->ids[c->n] = e->id;
    c->flags[c->n] = e->flags;
    c->n++;
    return c->stop_after != 0 && (int)c->n >= c->stop_after;
}

static size_t count(mb_dlq *d, const mb_dlq_filter *f)
{
    collected c = {0};
    size_t n = 0;
    mb_err err = {0};
    mb_status st = mb_dlq_list(d, f, collect_fn, &c, &n, &err);
    if (st != MB_OK)
        fail_msg("list: %s: %s", mb_status_name(st), err.msg);
    assert_int_equal(n, c.n);
    return n;
}

static collected *list_all(mb_dlq *d, bool include_replayed)
{
    collected *c = calloc(1, sizeof *c);
    assert_non_null(c);
    mb_dlq_filter f = {0};
    f.include_replayed = include_replayed;
    mb_err err = {0};
    assert_int_equal(mb_dlq_list(d, &f, collect_fn, c, NULL, &err), MB_OK);
    return c;
}

static size_t count_segments(const char *dir)
{
    DIR *dd = opendir(dir);
    assert_non_null(dd);
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(dd)) != NULL) {
        size_t l = strlen(de->d_name);
        if (strncmp(de->d_name, "seg-", 4) == 0 && l > 4 && strcmp(de->d_name + l - 4, ".dlq") == 0)
            n++;
    }
    closedir(dd);
    return n;
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return buf;
}

static void write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

static void seg_path(char *buf, size_t cap, const char *dir, uint64_t seq)
{
    snprintf(buf, cap, "%s/seg-%012" PRIu64 ".dlq", dir, seq);
}

/* Offsets of the records of a segment file image. */
static size_t record_offsets(const uint8_t *img, size_t len, size_t *offs, size_t max)
{
    size_t n = 0, off = DLQ_SEG_HDR;
    while (off + DLQ_FRAME <= len && n < max) {
        size_t rl = DLQ_FRAME + mb__dlq_get_u32((const uint8_t *)img + off);
        if (off + rl > len)
            break;
        offs[n++] = off;
        off += rl;
    }
    return n;
}

/* Check that entry `id` reads back with the payload of number k. */
static void check_payload(mb_dlq *d, uint64_t id, uint64_t k)
{
    mb_dlq_entry *e = NULL;
    mb_err err = {0};
    mb_status st = mb_dlq_show(d, id, &e, &err);
    if (st != MB_OK)
        fail_msg("show %" PRIu64 ": %s: %s", id, mb_status_name(st), err.msg);
    uint8_t pl[256];
    size_t n = payload_for(k, pl);
    assert_int_equal(e->payload_len, n);
    assert_memory_equal(e->payload, pl, n);
    mb_dlq_entry_free(e);
}

/* ---- tests ---- */

static void test_crc32c(void **state)
{
    (void)state;
    assert_int_equal(mb__crc32c(0, "123456789", 9), 0xE3069283u);
    assert_int_equal(mb__crc32c_sw(0, "123456789", 9), 0xE3069283u);
    assert_int_equal(mb__crc32c(0, "", 0), 0);
    /* 32 bytes of zeros: the iSCSI test vector (RFC 3720 B.4). */
    uint8_t z[32] = {0};
    assert_int_equal(mb__crc32c(0, z, 32), 0x8A9136AAu);
    uint8_t buf[1024 + 8];
    for (size_t i = 0; i < sizeof buf; i++)
        buf[i] = (uint8_t)(i * 131 + 7);
    for (size_t off = 0; off < 8; off++) {
        for (size_t n = 0; n <= 1024; n += 1 + n / 3) {
            uint32_t a = mb__crc32c(0, buf + off, n), b = mb__crc32c_sw(0, buf + off, n);
            assert_int_equal(a, b);
            size_t half = n / 2;
            assert_int_equal(mb__crc32c(mb__crc32c(0, buf + off, half), buf + off + half, n - half),
                             a);
        }
    }
}

static void test_round_trip(void **state)
{
    (void)state;
    const char *dir = new_dir();
    mb_dlq *d = open_dir(dir, NULL);
    static const uint8_t payload[] = {'a', 0, 'b', 0, 0xff, 0x80, '\n', 0};
    mb_dlq_header hdrs[] = {{"Nats-Msg-Id", "m-1"}, {"X-Empty", ""}, {"X-Trace", "t=1;u=2"}};
    mb_dlq_entry e = {0};
    e.subject = "chat.say.room.earth_arkham_city_library";
    e.headers = hdrs;
    e.nheaders = 3;
    e.payload = payload;
    e.payload_len = sizeof payload;
    e.error = MB_ETIMEOUT;
    e.error_message = "publish timed out after 3 attempts";
    e.attempts = 3;
    e.first_failure_ms = 1700000000000;
    e.last_failure_ms = 1700000005000;
    e.origin = "publish";
    uint64_t id1 = 0, id2 = 0;
    mb_err err = {0};
    assert_int_equal(mb_dlq_put(d, &e, true, &id1, &err), MB_OK);
    assert_true(id1 > 0);
    assert_true(e.added_ms > 0);
    /* No headers, empty payload, no message, no origin, default times. */
    mb_dlq_entry e2 = {0};
    e2.subject = "events.game_tick";
    e2.error = MB_ENOCONN;
    assert_int_equal(mb_dlq_put(d, &e2, true, &id2, &err), MB_OK);
    assert_true(id2 > id1);

    for (int pass = 0; pass < 2; pass++) {
        mb_dlq_entry *g = NULL;
        assert_int_equal(mb_dlq_show(d, id1, &g, &err), MB_OK);
        assert_int_equal(g->id, id1);
        assert_string_equal(g->subject, e.subject);
        assert_int_equal(g->nheaders, 3);
        for (size_t i = 0; i < 3; i++) {
            assert_string_equal(g->headers[i].name, hdrs[i].name);
            assert_string_equal(g->headers[i].value, hdrs[i].value);
        }
        assert_int_equal(g->payload_len, sizeof payload);
        assert_memory_equal(g->payload, payload, sizeof payload);
        assert_int_equal(((const uint8_t *)g->payload)[g->payload_len], 0);
        assert_int_equal(g->error, MB_ETIMEOUT);
        assert_string_equal(g->error_message, e.error_message);
        assert_int_equal(g->attempts, 3);
        assert_int_equal(g->first_failure_ms, 1700000000000);
        assert_int_equal(g->last_failure_ms, 1700000005000);
        assert_string_equal(g->origin, "publish");
        assert_int_equal(g->added_ms, e.added_ms);
        assert_int_equal(g->flags, 0);
        mb_dlq_entry_free(g);

        assert_int_equal(mb_dlq_show(d, id2, &g, &err), MB_OK);
        assert_string_equal(g->subject, "events.game_tick");
        assert_int_equal(g->nheaders, 0);
        assert_null(g->headers);
        assert_int_equal(g->payload_len, 0);
        assert_string_equal(g->error_message, "");
        assert_string_equal(g->origin, "");
        assert_int_equal(g->error, MB_ENOCONN);
        /* Default times: last = first = the time it was stored. */
        assert_int_equal(g->last_failure_ms, e2.added_ms);
        assert_int_equal(g->first_failure_ms, e2.added_ms);
        mb_dlq_entry_free(g);
        assert_int_equal(count(d, NULL), 2);
        close_ok(d);
        d = open_dir(dir, NULL);
    }
    close_ok(d);
}

static void test_ids_across_reopen(void **state)
{
    (void)state;
    const char *dir = new_dir();
    mb_dlq_opts o = {0};
    o.segment_bytes = 300; /* about two entries per segment */
    uint64_t last = 0;
    for (int round = 0; round < 3; round++) {
        mb_dlq *d = open_dir(dir, &o);
        for (int i = 0; i < 5; i++) {
            uint64_t id = put_one(d, "a.b", MB_EIO, 0, (uint64_t)i, i == 4);
            assert_true(id > last);
            last = id;
        }
        close_ok(d);
    }
    assert_int_equal(last, 15);
    /* Purge everything: every segment but the newest goes; ids go on. */
    mb_dlq *d = open_dir(dir, &o);
    size_t n = 0;
    mb_err err = {0};
    assert_int_equal(mb_dlq_purge(d, NULL, &n, &err), MB_OK);
    assert_int_equal(n, 15);
    assert_int_equal(count(d, NULL), 0);
    close_ok(d);
    assert_int_equal(count_segments(dir), 1);
    d = open_dir(dir, &o);
    assert_int_equal(count(d, NULL), 0);
    assert_int_equal(put_one(d, "a.b", MB_EIO, 0, 1, true), 16);
    close_ok(d);
}

/* Copy every regular file of `from` into `to`. */
static void copy_dir(const char *from, const char *to)
{
    DIR *dd = opendir(from);
    assert_non_null(dd);
    struct dirent *de;
    while ((de = readdir(dd)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        char a[512], b[512];
        snprintf(a, sizeof a, "%s/%s", from, de->d_name);
        snprintf(b, sizeof b, "%s/%s", to, de->d_name);
        size_t len;
        char *data = read_file(a, &len);
        write_file(b, data, len);
        free(data);
    }
    closedir(dd);
}

static void test_durable_without_close(void **state)
{
    (void)state;
    const char *dir = new_dir(), *copy = new_dir();
    mb_dlq *d = open_dir(dir, NULL);
    uint64_t id = put_one(d, "x.y", MB_EIO, 0, 7, true);
    /* The DLQ is still open: what a crash now would leave is on disk. */
    copy_dir(dir, copy);
    mb_dlq_opts ro = {0};
    ro.read_only = true;
    mb_dlq *c = NULL;
    mb_err err = {0};
    assert_int_equal(mb_dlq_open(copy, &ro, &c, &err), MB_OK);
    check_payload(c, id, 7);
    assert_int_equal(mb_dlq_close(c, &err), MB_OK);
    close_ok(d);
}

static void test_filters(void **state)
{
    (void)state;
    const char *dir = new_dir();
    mb_manual_clock *mc = NULL;
    assert_int_equal(mb_manual_clock_create(0, 1800000000000ull * 1000000ull, &mc, NULL), MB_OK);
    mb_dlq_opts o = {0};
    o.clock = mb_manual_clock_get(mc);
    mb_dlq *d = open_dir(dir, &o);
    put_one(d, "chat.say.room.a", MB_ETIMEOUT, 1000, 1, false);
    put_one(d, "chat.say.room.b", MB_ENOCONN, 2000, 2, false);
    put_one(d, "chat.whisper.player.p1", MB_ETIMEOUT, 3000, 3, false);
    put_one(d, "events.player_entered.a", MB_ESCHEMA, 4000, 4, false);
    mb_manual_clock_advance(mc, 3600ull * 1000000000ull); /* an hour later */
    put_one(d, "chat.global", MB_ETIMEOUT, 5000, 5, true);

    static const struct {
        const char *pattern;
        size_t n;
    } pats[] = {
        {"chat.>", 4},
        {"chat.*.room.*", 2},
        {"chat.say.room.a", 1},
        {"*.global", 1},
        {"events.*", 0},
        {">", 5},
        {"chat", 0},
        {"*.*.*.a", 1},
        {"chat.say.room", 0},
        {"chat.say.room.a.x", 0},
        {"events.>", 1},
        {"*", 0},
    };
    for (size_t i = 0; i < sizeof pats / sizeof pats[0]; i++) {
        mb_dlq_filter f = {0};
        f.subject = pats[i].pattern;
        if (count(d, &f) != pats[i].n)
            fail_msg("pattern %s: want %zu", pats[i].pattern, pats[i].n);
    }
    static const char *bad[] = {"", "chat..x", "chat.*x", "chat.>.x", ".chat", "chat.", "a>"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        mb_dlq_filter f = {0};
        f.subject = bad[i];
        mb_err err = {0};
        collected c = {0};
        assert_int_equal(mb_dlq_list(d, &f, collect_fn, &c, NULL, &err), MB_EPATTERN);
        assert_true(err.msg[0] != '\0');
    }
    mb_dlq_filter f = {0};
    f.status = MB_ETIMEOUT;
    assert_int_equal(count(d, &f), 3);
    f.subject = "chat.say.>";
    assert_int_equal(count(d, &f), 1);
    mb_dlq_filter t = {0};
    t.since_ms = 2000;
    assert_int_equal(count(d, &t), 4);
    t.until_ms = 4000;
    assert_int_equal(count(d, &t), 2); /* 2000 and 3000: until is exclusive */
    mb_dlq_filter a = {0};
    a.min_age_ms = 1800000; /* stored at least half an hour ago */
    assert_int_equal(count(d, &a), 4);
    /* Stopping early. */
    collected c = {0};
    c.stop_after = 2;
    size_t n = 0;
    assert_int_equal(mb_dlq_list(d, NULL, collect_fn, &c, &n, NULL), MB_OK);
    assert_int_equal(n, 2);
    assert_true(c.ids[0] < c.ids[1]);
    close_ok(d);
    mb_manual_clock_destroy(mc);
}

typedef struct pub_state {
    size_t calls;
    size_t fail_at;    /* fail the call with this number (1-based); 0: never */
    uint64_t fail_mod; /* fail ids divisible by this; 0: never */
    uint64_t ids[4096];
    size_t progress_calls;
    size_t last_done, last_total;
    mb_manual_clock *mc;
    uint64_t slept_ns;
} pub_state;

static mb_status publish_fn(void *ctx, const mb_dlq_entry *e, mb_err *err)
{
    pub_state *p = ctx;
    p->calls++;
    if ((p->fail_at != 0 && p->calls == p->fail_at) ||
        (p->fail_mod != 0 && e->id % p->fail_mod == 0))
        return mb_err_set(err, MB_ENOCONN, "test publisher refused %" PRIu64, e->id);
    assert_true(p->calls < 4096);
    p->ids[p->calls - 1] = e->id;
    return MB_OK;
}

static void progress_fn(void *ctx, size_t done, size_t total)
{
    pub_state *p = ctx;
    assert_true(done > p->last_done);
    assert_true(done <= total);
    p->progress_calls++;
    p->last_done = done;
    p->last_total = total;
}

static void sleep_fn(void *ctx, uint64_t ns)
{
    pub_state *p = ctx;
    p->slept_ns += ns;
    mb_manual_clock_advance(p->mc, ns);
}

static void test_show(void **state)
{
    (void)state;
    const char *dir = new_dir();
    mb_dlq *d = open_dir(dir, NULL);
    uint64_t a = put_one(d, "s.a", MB_EIO, 0, 1, false);
    uint64_t b = put_one(d, "s.b", MB_EIO, 0, 2, false);
    uint64_t c = put_one(d, "s.c", MB_EIO, 0, 3, true);
    mb_dlq_entry *e = NULL;
    mb_err err = {0};
    assert_int_equal(mb_dlq_show(d, 999, &e, &err), MB_ENOTFOUND);
    assert_null(e);
    assert_int_equal(mb_dlq_show(d, 0, &e, NULL), MB_ENOTFOUND);
    mb_dlq_filter f = {0};
    f.subject = "s.b";
    size_t n = 0;
    assert_int_equal(mb_dlq_purge(d, &f, &n, NULL), MB_OK);
    assert_int_equal(n, 1);
    assert_int_equal(mb_dlq_show(d, b, &e, NULL), MB_ENOTFOUND);
    pub_state p = {0};
    mb_dlq_replay_opts ro = {0};
    ro.filter.subject = "s.c";
    assert_int_equal(mb_dlq_replay(d, &ro, publish_fn, &p, NULL, NULL), MB_OK);
    assert_int_equal(mb_dlq_show(d, c, &e, NULL), MB_OK);
    assert_int_equal(e->flags, MB_DLQ_REPLAYED);
    mb_dlq_entry_free(e);
    check_payload(d, a, 1);
    assert_int_equal(mb_dlq_show(d, a, NULL, NULL), MB_EINVAL);
    close_ok(d);
}

static void test_replay_dry_run_progress(void **state)
{
    (void)state;
    const char *dir = new_dir();
    mb_dlq *d = open_dir(dir, NULL);
    for (int i = 0; i < 10; i++)
        put_one(d, "r.x", MB_ETIMEOUT, 0, (uint64_t)i, i == 9);
    pub_state p = {0};
    mb_dlq_replay_opts o = {0};
    o.dry_run = true;
    o.rate_per_sec = 0.001; /* would take hours: a dry run does not wait */
    o.progress = progress_fn;
    o.progress_ctx = &p;
    mb_dlq_replay_result r;
    mb_err err = {0};
    assert_int_equal(mb_dlq_replay(d, &o, publish_fn, &p, &r, &err), MB_OK);
    assert_int_equal(p.calls, 0);
    assert_int_equal(r.total, 10);
    assert_int_equal(r.published, 10);
    assert_int_equal(p.progress_calls, 10);
    assert_int_equal(p.last_done, 10);
    assert_int_equal(p.last_total, 10);
    assert_int_equal(count(d, NULL), 10); /* nothing marked */

    pub_state q = {0};
    o.dry_run = false;
    o.rate_per_sec = 0;
    o.progress_ctx = &q;
    o.max = 4;
    assert_int_equal(mb_dlq_replay(d, &o, publish_fn, &q, &r, &err), MB_OK);
    assert_int_equal(r.total, 4);
    assert_int_equal(q.calls, 4);
    assert_int_equal(q.last_total, 4);
    o.max = 0;
    q.last_done = 0;
    assert_int_equal(mb_dlq_replay(d, &o, publish_fn, &q, &r, &err), MB_OK);
    assert_int_equal(q.calls, 10);
    for (size_t i = 0; i < 10; i++)
        assert_int_equal(q.ids[i], i + 1); /* in id order, each once */
    assert_int_equal(count(d, NULL), 0);
    collected *c = list_all(d, true);
    assert_int_equal(c->n, 10);
    for (size_t i = 0; i < c->n; i++)
        assert_int_equal(c->flags[i], MB_DLQ_REPLAYED);
    free(c);
    mb_dlq_stats s;
    assert_int_equal(mb_dlq_stats_get(d, &s), MB_OK);
    assert_int_equal(s.replayed, 10);
    assert_int_equal(s.depth, 0);
    /* A dry run needs no publish function; a real one does. */
    o.dry_run = true;
    assert_int_equal(mb_dlq_replay(d, &o, NULL, NULL, &r, NULL), MB_OK);
    o.dry_run = false;
    assert_int_equal(mb_dlq_replay(d, &o, NULL, NULL, &r, NULL), MB_EINVAL);
    close_ok(d);
}

static void test_replay_rate_limit(void **state)
{
    (void)state;
    const char *dir = new_dir();
    mb_manual_clock *mc = NULL;
    assert_int_equal(mb_manual_clock_create(1000, 1800000000000ull * 1000000ull, &mc, NULL), MB_OK);
    mb_dlq_opts opts = {0};
    opts.clock = mb_manual_clock_get(mc);
    mb_dlq *d = open_dir(dir, &opts);
    for (int i = 0; i < 100; i++)
        put_one(d, i < 50 ? "rate.a" : "rate.b", MB_ETIMEOUT, 0, (uint64_t)i, i == 99);
    pub_state p = {0};
    p.mc = mc;
    mb_dlq_replay_opts o = {0};
    o.filter.subject = "rate.a";
    o.rate_per_sec = 10;
    o.sleep = sleep_fn;
    o.sleep_ctx = &p;
    mb_dlq_replay_result r;
    assert_int_equal(mb_dlq_replay(d, &o, publish_fn, &p, &r, NULL), MB_OK);
    assert_int_equal(r.published, 50);
    /* 10 per second: the first goes at once, each of the other 49 waits 0.1 s. */
    assert_true(p.slept_ns >= 4900000000ull);
    assert_true(p.slept_ns <= 5000000000ull);
    /* With a burst of 5 the first five go at once. */
    pub_state q = {0};
    q.mc = mc;
    o.filter.subject = "rate.b";
    o.burst = 5;
    o.sleep_ctx = &q;
    assert_int_equal(mb_dlq_replay(d, &o, publish_fn, &q, &r, NULL), MB_OK);
    assert_int_equal(r.published, 50);
    assert_true(q.slept_ns >= 4500000000ull && q.slept_ns <= 4600000000ull);
    close_ok(d);
    mb_manual_clock_destroy(mc);
}

static void test_replay_marker_survives_reopen(void **state)
{
    (void)state;
    const char *dir = new_dir();
    mb_dlq *d = open_dir(dir, NULL);
    for (int i = 0; i < 20; i++)
        put_one(d, "m.x", MB_ETIMEOUT, 0, (uint64_t)i, false);
    assert_int_equal(mb_dlq_flush(d, NULL), MB_OK); /* queued puts are not listed yet */
    pub_state p = {0};
    mb_dlq_replay_opts o = {0};
    mb_dlq_replay_result r;
    assert_int_equal(mb_dlq_replay(d, &o, publish_fn, &p, &r, NULL), MB_OK);
    assert_int_equal(r.published, 20);
    close_ok(d);
    d = open_dir(dir, NULL);
    pub_state q = {0};
    assert_int_equal(mb_dlq_replay(d, &o, publish_fn, &q, &r, NULL), MB_OK);
    assert_int_equal(q.calls, 0);
    assert_int_equal(r.total, 0);
    /* Replaying replayed entries again is possible on request. */
    o.filter.include_replayed = true;
    assert_int_equal(mb_dlq_replay(d, &o, publish_fn, &q, &r, NULL), MB_OK);
    assert_int_equal(q.calls, 20);
    close_ok(d);
}

static void test_replay_interrupted_resumes(void **state)
{
    (void)state;
    const char *dir = new_dir();
    mb_dlq *d = open_dir(dir, NULL);
    for (int i = 0; i < 50; i++)
        put_one(d, "int.x", MB_ETIMEOUT, 0, (uint64_t)i, i == 49);
    pub_state p = {0};
    p.fail_at = 20;
    mb_dlq_replay_opts o = {0};
    mb_dlq_replay_result r;
    mb_err err = {0};
    assert_int_equal(mb_dlq_replay(d, &o, publish_fn, &p, &r, &err), MB_ENOCONN);
    assert_non_null(strstr(err.msg, "entry 20"));
    assert_int_equal(r.published, 19);
    assert_int_equal(r.failed, 1);
    assert_int_equal(r.first_failed_id, 20);
    close_ok(d); /* as if the process stopped there */
    d = open_dir(dir, NULL);
    pub_state q = {0};
    assert_int_equal(mb_dlq_replay(d, &o, publish_fn, &q, &r, NULL), MB_OK);
    assert_int_equal(q.calls, 31);
    for (size_t i = 0; i < 31; i++)
        assert_int_equal(q.ids[i], 20 + i);
    assert_int_equal(count(d, NULL), 0);
    close_ok(d);
}

static void test_replay_skip(void **state)
{
    (void)state;
    const char *dir = new_dir();
    mb_dlq *d = open_dir(dir, NULL);
    for (int i = 0; i < 50; i++)
        put_one(d, "skip.x", MB_ETIMEOUT, 0, (uint64_t)i, i == 49);
    pub_state p = {0};
    p.fail_mod = 5;
    mb_dlq_replay_opts o = {0};
    o.on_error = MB_DLQ_REPLAY_SKIP;
    o.progress = progress_fn;
    o.progress_ctx = &p;
    mb_dlq_replay_result r;
    mb_err err = {0};
    assert_int_equal(mb_dlq_replay(d, &o, publish_fn, &p, &r, &err), MB_ENOCONN);
    assert_non_null(strstr(err.msg, "10 entries failed"));
    assert_int_equal(r.published, 40);
    assert_int_equal(r.failed, 10);
    assert_int_equal(r.first_failed_id, 5);
    assert_int_equal(p.last_done, 50);
    assert_int_equal(count(d, NULL), 10); /* the failed ones stay live */
    close_ok(d);
}

static void test_purge(void **state)
{
    (void)state;
    const char *dir = new_dir();
    mb_manual_clock *mc = NULL;
    assert_int_equal(mb_manual_clock_create(0, 1800000000000ull * 1000000ull, &mc, NULL), MB_OK);
    mb_dlq_opts o = {0};
    o.clock = mb_manual_clock_get(mc);
    o.segment_bytes = 1024;
    mb_dlq *d = open_dir(dir, &o);
    for (int i = 0; i < 20; i++)
        put_one(d, i % 2 ? "p.odd" : "p.even", MB_ETIMEOUT, 0, (uint64_t)i, false);
    mb_manual_clock_advance(mc, 7200ull * 1000000000ull);
    for (int i = 20; i < 30; i++)
        put_one(d, "p.new", MB_ETIMEOUT, 0, (uint64_t)i, i == 29);
    size_t segs = count_segments(dir);
    assert_true(segs > 3);
    mb_dlq_filter f = {0};
    f.subject = "p.odd";
    size_t n = 0;
    mb_err err = {0};
    assert_int_equal(mb_dlq_purge(d, &f, &n, &err), MB_OK);
    assert_int_equal(n, 10);
    assert_int_equal(count(d, NULL), 20);
    /* By age: everything stored an hour or more ago. */
    mb_dlq_filter age = {0};
    age.min_age_ms = 3600000;
    assert_int_equal(mb_dlq_purge(d, &age, &n, &err), MB_OK);
    assert_int_equal(n, 10);
    assert_int_equal(count(d, NULL), 10);
    /* Segments holding only purged entries are gone. */
    assert_true(count_segments(dir) < segs);
    mb_dlq_stats s;
    mb_dlq_stats_get(d, &s);
    assert_int_equal(s.purged, 20);
    assert_int_equal(s.depth, 10);
    close_ok(d);
    d = open_dir(dir, &o);
    assert_int_equal(count(d, NULL), 10);
    collected *c = list_all(d, true);
    for (size_t i = 0; i < c->n; i++)
        assert_true(c->ids[i] >= 21);
    free(c);
    close_ok(d);
    mb_manual_clock_destroy(mc);
}

static void test_retention_age(void **state)
{
    (void)state;
    const char *dir = new_dir();
    mb_manual_clock *mc = NULL;
    assert_int_equal(mb_manual_clock_create(0, 1800000000000ull * 1000000ull, &mc, NULL), MB_OK);
    mb_dlq_opts o = {0};
    o.clock = mb_manual_clock_get(mc);
    o.max_age_ms = 3600000;
    o.segment_bytes = 700;
    mb_dlq *d = open_dir(dir, &o);
    for (int i = 0; i < 10; i++)
        put_one(d, "age.old", MB_ETIMEOUT, 0, (uint64_t)i, i == 9);
    mb_manual_clock_advance(mc, 1800ull * 1000000000ull);
    for (int i = 0; i < 10; i++)
        put_one(d, "age.new", MB_ETIMEOUT, 0, (uint64_t)i, i == 9);
    size_t segs = count_segments(dir);
    mb_manual_clock_advance(mc, 1860ull * 1000000000ull); /* 62 min after the first batch */
    size_t dropped = 0;
    mb_err err = {0};
    assert_int_equal(mb_dlq_maintain(d, &dropped, &err), MB_OK);
    assert_int_equal(dropped, 10);
    mb_dlq_filter f = {0};
    f.subject = "age.old";
    assert_int_equal(count(d, &f), 0);
    assert_int_equal(count(d, NULL), 10);
    mb_dlq_stats s;
    mb_dlq_stats_get(d, &s);
    assert_int_equal(s.dropped_age, 10);
    assert_int_equal(s.oldest_age_ms, 1860000);
    assert_true(count_segments(dir) < segs);
    close_ok(d);
    d = open_dir(dir, &o); /* same clock: still expired */
    assert_int_equal(count(d, NULL), 10);
    mb_manual_clock_advance(mc, 1800ull * 1000000000ull);
    assert_int_equal(mb_dlq_maintain(d, &dropped, &err), MB_OK);
    assert_int_equal(dropped, 10);
    assert_int_equal(count(d, NULL), 0);
    close_ok(d);
    mb_manual_clock_destroy(mc);
}

static void test_retention_size_reject(void **state)
{
    (void)state;
    const char *dir = new_dir();
    mb_dlq_opts o = {0};
    o.max_bytes = 8192;
    o.segment_bytes = 1024;
    o.queue_max_bytes = 2048;
    o.max_entry_bytes = 1024;
    o.full_policy = MB_DLQ_FULL_REJECT;
    mb_dlq *d = open_dir(dir, &o);
    int ok = 0;
    mb_status st = MB_OK;
    mb_err err = {0};
    for (int i = 0; i < 200 && st == MB_OK; i++) {
        uint8_t pl[256];
        mb_dlq_entry e = {0};
        e.subject = "size.x";
        e.payload = pl;
        e.payload_len = payload_for((uint64_t)i, pl);
        e.error = MB_EIO;
        st = mb_dlq_put(d, &e, true, NULL, &err);
        ok += st == MB_OK;
    }
    assert_int_equal(st, MB_ELIMIT);
    assert_non_null(strstr(err.msg, "full"));
    assert_true(ok > 10);
    mb_dlq_stats s;
    mb_dlq_stats_get(d, &s);
    assert_int_equal(s.put_limit, 1);
    assert_true(s.bytes <= 8192);
    assert_int_equal(count(d, NULL), (size_t)ok); /* nothing was dropped */
    /* Purging makes room again. */
    size_t n = 0;
    assert_int_equal(mb_dlq_purge(d, NULL, &n, NULL), MB_OK);
    assert_int_equal(n, (size_t)ok);
    put_one(d, "size.y", MB_EIO, 0, 1, true);
    close_ok(d);

    /* The entry limit (which bounds the index) refuses the same way. */
    const char *dir2 = new_dir();
    mb_dlq_opts o2 = {0};
    o2.max_entries = 5;
    d = open_dir(dir2, &o2);
    for (uint64_t i = 0; i < 5; i++)
        put_one(d, "count.x", MB_EIO, 0, i, false);
    mb_dlq_entry e = {0};
    e.subject = "count.x";
    e.error = MB_EIO;
    mb_err_clear(&err);
    assert_int_equal(mb_dlq_put(d, &e, false, NULL, &err), MB_ELIMIT);
    assert_non_null(strstr(err.msg, "5 entries"));
    close_ok(d);
}

static void test_retention_size_drop_oldest(void **state)
{
    (void)state;
    const char *dir = new_dir();
    mb_dlq_opts o = {0};
    o.max_bytes = 8192;
    o.segment_bytes = 1024;
    o.queue_max_bytes = 2048;
    o.max_entry_bytes = 1024;
    o.full_policy = MB_DLQ_FULL_DROP_OLDEST;
    mb_dlq *d = open_dir(dir, &o);
    uint64_t last = 0;
    for (int i = 0; i < 300; i++) {
        last = put_one(d, "drop.x", MB_EIO, 0, (uint64_t)i, true);
        mb_dlq_stats s;
        mb_dlq_stats_get(d, &s);
        assert_true(s.bytes <= 8192);
    }
    mb_dlq_stats s;
    mb_dlq_stats_get(d, &s);
    assert_true(s.dropped_size > 0);
    assert_int_equal(s.dropped_size + s.depth, 300);
    collected *c = list_all(d, false);
    assert_int_equal(c->n, s.depth);
    /* What is left is the newest, contiguous up to the last put. */
    assert_int_equal(c->ids[c->n - 1], last);
    for (size_t i = 1; i < c->n; i++)
        assert_int_equal(c->ids[i], c->ids[i - 1] + 1);
    for (size_t i = 0; i < c->n; i++)
        check_payload(d, c->ids[i], c->ids[i] - 1);
    free(c);
    close_ok(d);
}

static void test_queue_full(void **state)
{
    (void)state;
    const char *dir = new_dir();
    mb_dlq_opts o = {0};
    o.queue_max = 4;
    mb_dlq *d = open_dir(dir, &o);
    mb__dlq_pause(d, true);
    for (int i = 0; i < 4; i++)
        put_one(d, "q.x", MB_EIO, 0, (uint64_t)i, false);
    uint8_t pl[8] = {0};
    mb_dlq_entry e = {0};
    e.subject = "q.x";
    e.payload = pl;
    e.payload_len = sizeof pl;
    e.error = MB_EIO;
    mb_err err = {0};
    assert_int_equal(mb_dlq_put(d, &e, false, NULL, &err), MB_EAGAIN);
    assert_non_null(strstr(err.msg, "queue full"));
    mb_dlq_stats s;
    mb_dlq_stats_get(d, &s);
    assert_int_equal(s.put_full, 1);
    assert_int_equal(s.queued, 4);
    assert_int_equal(s.puts, 4);
    mb__dlq_pause(d, false);
    assert_int_equal(mb_dlq_flush(d, &err), MB_OK);
    assert_int_equal(count(d, NULL), 4);
    assert_int_equal(mb_dlq_put(d, &e, false, NULL, &err), MB_OK);
    close_ok(d);
}

static void test_close_drains(void **state)
{
    (void)state;
    const char *dir = new_dir();
    mb_dlq *d = open_dir(dir, NULL);
    mb__dlq_pause(d, true);
    for (int i = 0; i < 10; i++)
        put_one(d, "drain.x", MB_EIO, 0, (uint64_t)i, false);
    close_ok(d);
    d = open_dir(dir, NULL);
    assert_int_equal(count(d, NULL), 10);
    for (uint64_t i = 0; i < 10; i++)
        check_payload(d, i + 1, i);
    close_ok(d);
}

/* Five durable entries in one segment; returns the segment image. */
static uint8_t *five_entries(const char *dir, size_t *len, size_t *offs)
{
    mb_dlq *d = open_dir(dir, NULL);
    for (uint64_t i = 0; i < 5; i++)
        put_one(d, "torn.x", MB_EIO, 0, i, true);
    close_ok(d);
    char p[256];
    seg_path(p, sizeof p, dir, 1);
    uint8_t *img = (uint8_t *)read_file(p, len);
    assert_int_equal(record_offsets(img, *len, offs, 8), 5);
    return img;
}

static void test_torn_tail_every_offset(void **state)
{
    (void)state;
    const char *dir = new_dir();
    size_t len, offs[8];
    uint8_t *img = five_entries(dir, &len, offs);
    const char *cut_dir = new_dir();
    char p[256];
    seg_path(p, sizeof p, cut_dir, 1);
    for (size_t cut = offs[4]; cut < len; cut++) {
        write_file(p, img, cut);
        for (int ro = 0; ro < 2; ro++) {
            mb_dlq_opts o = {0};
            o.read_only = ro;
            mb_dlq *d = NULL;
            mb_err err = {0};
            assert_int_equal(mb_dlq_open(cut_dir, &o, &d, &err), MB_OK);
            collected *c = list_all(d, true);
            assert_int_equal(c->n, 4);
            for (uint64_t i = 0; i < 4; i++) {
                assert_int_equal(c->ids[i], i + 1);
                check_payload(d, i + 1, i);
            }
            free(c);
            mb_dlq_entry *e = NULL;
            assert_int_equal(mb_dlq_show(d, 5, &e, NULL), MB_ENOTFOUND);
            mb_dlq_stats s;
            mb_dlq_stats_get(d, &s);
            assert_int_equal(s.torn_records, cut > offs[4] ? 1 : 0);
            assert_int_equal(s.corrupt_records, 0);
            if (!ro) {
                /* Truncated to the last good record; the next id is 5 again,
                 * since entry 5 never became durable. */
                assert_int_equal(s.bytes, offs[4]);
                assert_int_equal(s.next_id, 5);
                put_one(d, "torn.y", MB_EIO, 0, 9, true);
                check_payload(d, 5, 9);
            }
            assert_int_equal(mb_dlq_close(d, &err), MB_OK);
            if (!ro) {
                struct stat sb;
                assert_int_equal(stat(p, &sb), 0);
                assert_true((size_t)sb.st_size > offs[4]);
            }
            write_file(p, img, cut); /* the writable pass changed it */
        }
    }
    /* A cut inside the file header: a torn creation, removed. */
    for (size_t cut = 0; cut < DLQ_SEG_HDR; cut += 7) {
        write_file(p, img, cut);
        mb_dlq *d = open_dir(cut_dir, NULL);
        assert_int_equal(count(d, NULL), 0);
        close_ok(d);
        rm_rf(cut_dir);
        mkdir(cut_dir, 0700);
    }
    free(img);
}

static void test_bit_flip(void **state)
{
    (void)state;
    const char *dir = new_dir();
    size_t len, offs[8];
    uint8_t *img = five_entries(dir, &len, offs);
    const char *flip_dir = new_dir();
    char p[256];
    seg_path(p, sizeof p, flip_dir, 1);
    /* Flip one bit in every byte of record 3 (id 3), in turn. */
    for (size_t at = offs[2]; at < offs[3]; at++) {
        img[at] ^= (uint8_t)(1u << (at % 8));
        write_file(p, img, len);
        img[at] ^= (uint8_t)(1u << (at % 8));
        mb_dlq_opts o = {0};
        o.read_only = true;
        mb_dlq *d = NULL;
        assert_int_equal(mb_dlq_open(flip_dir, &o, &d, NULL), MB_OK);
        collected *c = list_all(d, true);
        /* In the newest segment a bad record ends what can be trusted. */
        assert_int_equal(c->n, 2);
        for (uint64_t i = 0; i < c->n; i++) {
            assert_int_equal(c->ids[i], i + 1);
            check_payload(d, i + 1, i);
        }
        free(c);
        assert_int_equal(mb_dlq_show(d, 3, &(mb_dlq_entry *){NULL}, NULL), MB_ENOTFOUND);
        assert_int_equal(mb_dlq_close(d, NULL), MB_OK);
    }
    free(img);
}

static void test_corrupt_middle_of_older_segment(void **state)
{
    (void)state;
    const char *dir = new_dir();
    mb_dlq_opts o = {0};
    o.segment_bytes = 800; /* a few entries per segment */
    mb_dlq *d = open_dir(dir, &o);
    for (uint64_t i = 0; i < 30; i++)
        put_one(d, "mid.x", MB_EIO, 0, i, true);
    close_ok(d);
    assert_true(count_segments(dir) >= 4);
    char p[256];
    seg_path(p, sizeof p, dir, 1);
    size_t len, offs[32];
    uint8_t *img = (uint8_t *)read_file(p, &len);
    size_t nrec = record_offsets(img, len, offs, 32);
    assert_true(nrec >= 3);
    img[offs[1] + DLQ_FRAME + 3] ^= 0x10; /* inside the body of the 2nd record */
    write_file(p, img, len);
    free(img);

    logbuf lb = {PTHREAD_MUTEX_INITIALIZER, ""};
    o.log = log_fn;
    o.log_ctx = &lb;
    d = open_dir(dir, &o);
    mb_dlq_stats s;
    mb_dlq_stats_get(d, &s);
    assert_int_equal(s.corrupt_records, 1);
    assert_int_equal(s.torn_records, 0);
    assert_non_null(strstr(lb.text, "corrupt record"));
    collected *c = list_all(d, true);
    /* Record 1 of segment 1 stays, the rest of segment 1 is skipped, every
     * later segment is intact. */
    assert_int_equal(c->n, 30 - (nrec - 1));
    assert_int_equal(c->ids[0], 1);
    assert_int_equal(c->ids[1], nrec + 1);
    for (size_t i = 0; i < c->n; i++)
        check_payload(d, c->ids[i], c->ids[i] - 1);
    free(c);
    close_ok(d);
    struct stat sb;
    assert_int_equal(stat(p, &sb), 0);
    assert_int_equal((size_t)sb.st_size, len); /* not truncated */
}

/* A segment whose entries are all dead but whose markers point into an older
 * live segment must outlive that segment, or the older entries would come
 * back after a restart. */
static void test_marker_keeps_segment(void **state)
{
    (void)state;
    const char *dir = new_dir();
    mb_dlq_opts o = {0};
    /* Records are 87 bytes plus the payload (payload_for(k)): three of 110
     * bytes fill segment 1, the 88-byte mk.b and two 32-byte markers go to
     * segment 2, and no 273-byte mk.c fits after them. */
    o.segment_bytes = 400;
    mb_dlq *d = open_dir(dir, &o);
    for (uint64_t i = 0; i < 3; i++)
        put_one(d, "mk.a", MB_EIO, 0, 6, true); /* segment 1: ids 1-3 */
    put_one(d, "mk.b", MB_EIO, 0, 0, true);     /* segment 2: id 4 */
    assert_int_equal(count_segments(dir), 2);
    pub_state p = {0};
    mb_dlq_replay_opts ro = {0};
    ro.max = 1; /* replay id 1: the marker goes to segment 2 */
    assert_int_equal(mb_dlq_replay(d, &ro, publish_fn, &p, NULL, NULL), MB_OK);
    mb_dlq_filter f = {0};
    f.subject = "mk.b";
    assert_int_equal(mb_dlq_purge(d, &f, NULL, NULL), MB_OK); /* segment 2: no live entry */
    assert_int_equal(count_segments(dir), 2);
    for (uint64_t i = 0; i < 4; i++)
        put_one(d, "mk.c", MB_EIO, 0, 5, true); /* segments 3.. */
    assert_true(count_segments(dir) >= 4);
    /* Segment 2 holds the marker of id 1 and must stay. */
    char p2[256];
    seg_path(p2, sizeof p2, dir, 2);
    assert_int_equal(access(p2, F_OK), 0);
    close_ok(d);
    d = open_dir(dir, &o);
    assert_int_equal(count(d, NULL), 6); /* 2, 3 and four mk.c */
    mb_dlq_entry *e = NULL;
    assert_int_equal(mb_dlq_show(d, 1, &e, NULL), MB_OK);
    assert_int_equal(e->flags, MB_DLQ_REPLAYED);
    mb_dlq_entry_free(e);
    /* Once segment 1 is all dead, both go. */
    f.subject = "mk.a";
    f.include_replayed = true;
    assert_int_equal(mb_dlq_purge(d, &f, NULL, NULL), MB_OK);
    char p1[256];
    seg_path(p1, sizeof p1, dir, 1);
    assert_int_equal(access(p1, F_OK), -1);
    assert_int_equal(access(p2, F_OK), -1);
    close_ok(d);
    d = open_dir(dir, &o);
    assert_int_equal(count(d, NULL), 4);
    close_ok(d);
}

#define THREADS    8
#define PER_THREAD 200

typedef struct thr {
    mb_dlq *d;
    int t;
    uint64_t ids[PER_THREAD];
} thr;

static void *thr_main(void *arg)
{
    thr *x = arg;
    for (int i = 0; i < PER_THREAD; i++) {
        char subj[64];
        snprintf(subj, sizeof subj, "thr.%d.%d", x->t, i);
        uint8_t pl[256];
        mb_dlq_entry e = {0};
        e.subject = subj;
        e.payload = pl;
        e.payload_len = payload_for((uint64_t)(x->t * PER_THREAD + i), pl);
        e.error = MB_ETIMEOUT;
        if (mb_dlq_put(x->d, &e, true, &x->ids[i], NULL) != MB_OK)
            x->ids[i] = 0;
    }
    return NULL;
}

static void test_concurrent_durable_puts(void **state)
{
    (void)state;
    const char *dir = new_dir();
    mb_dlq_opts o = {0};
    o.segment_bytes = 64 * 1024;
    mb_dlq *d = open_dir(dir, &o);
    pthread_t th[THREADS];
    thr *xs = calloc(THREADS, sizeof *xs);
    assert_non_null(xs);
    for (int t = 0; t < THREADS; t++) {
        xs[t].d = d;
        xs[t].t = t;
        assert_int_equal(pthread_create(&th[t], NULL, thr_main, &xs[t]), 0);
    }
    for (int t = 0; t < THREADS; t++)
        pthread_join(th[t], NULL);
    mb_dlq_stats s;
    mb_dlq_stats_get(d, &s);
    assert_int_equal(s.puts, THREADS * PER_THREAD);
    /* Group commit: fewer fsyncs than records. */
    assert_true(s.fsyncs < s.puts);
    close_ok(d);
    d = open_dir(dir, &o);
    assert_int_equal(count(d, NULL), THREADS * PER_THREAD);
    for (int t = 0; t < THREADS; t++) {
        for (int i = 0; i < PER_THREAD; i++) {
            assert_true(xs[t].ids[i] != 0);
            if (i > 0)
                assert_true(xs[t].ids[i] > xs[t].ids[i - 1]);
            check_payload(d, xs[t].ids[i], (uint64_t)(t * PER_THREAD + i));
        }
    }
    close_ok(d);
    free(xs);
}

typedef struct async_state {
    pthread_mutex_t mu;
    size_t ok, bad;
    uint64_t last;
} async_state;

static void done_fn(void *ctx, uint64_t id, mb_status st)
{
    async_state *a = ctx;
    pthread_mutex_lock(&a->mu);
    if (st == MB_OK && id > a->last)
        a->ok++;
    else
        a->bad++;
    a->last = id;
    pthread_mutex_unlock(&a->mu);
}

static void test_async_put(void **state)
{
    (void)state;
    const char *dir = new_dir();
    mb_dlq *d = open_dir(dir, NULL);
    async_state a = {PTHREAD_MUTEX_INITIALIZER, 0, 0, 0};
    for (int i = 0; i < 100; i++) {
        mb_dlq_entry e = {0};
        e.subject = "async.x";
        e.error = MB_EIO;
        uint64_t id;
        assert_int_equal(mb_dlq_put_async(d, &e, done_fn, &a, &id, NULL), MB_OK);
        assert_int_equal(id, (uint64_t)i + 1);
    }
    mb_dlq_entry e = {0};
    e.subject = "async.x";
    e.error = MB_EIO;
    assert_int_equal(mb_dlq_put_async(d, &e, NULL, NULL, NULL, NULL), MB_EINVAL);
    assert_int_equal(mb_dlq_flush(d, NULL), MB_OK);
    pthread_mutex_lock(&a.mu);
    assert_int_equal(a.ok, 100);
    assert_int_equal(a.bad, 0);
    pthread_mutex_unlock(&a.mu);
    close_ok(d);
}

static void test_read_only_and_lock(void **state)
{
    (void)state;
    const char *dir = new_dir();
    mb_dlq *d = open_dir(dir, NULL);
    put_one(d, "ro.x", MB_EIO, 0, 1, true);
    /* A second writer is refused; a reader is not. */
    mb_dlq *w = NULL, *r = NULL;
    mb_err err = {0};
    assert_int_equal(mb_dlq_open(dir, NULL, &w, &err), MB_ESTATE);
    assert_non_null(strstr(err.msg, "in use"));
    assert_null(w);
    mb_dlq_opts ro = {0};
    ro.read_only = true;
    assert_int_equal(mb_dlq_open(dir, &ro, &r, NULL), MB_OK);
    assert_int_equal(count(r, NULL), 1);
    mb_dlq_entry e = {0};
    e.subject = "ro.y";
    e.error = MB_EIO;
    assert_int_equal(mb_dlq_put(r, &e, false, NULL, NULL), MB_ESTATE);
    assert_int_equal(mb_dlq_purge(r, NULL, NULL, NULL), MB_ESTATE);
    assert_int_equal(mb_dlq_flush(r, NULL), MB_ESTATE);
    assert_int_equal(mb_dlq_maintain(r, NULL, NULL), MB_ESTATE);
    pub_state p = {0};
    mb_dlq_replay_opts o = {0};
    assert_int_equal(mb_dlq_replay(r, &o, publish_fn, &p, NULL, NULL), MB_ESTATE);
    o.dry_run = true;
    mb_dlq_replay_result res;
    assert_int_equal(mb_dlq_replay(r, &o, publish_fn, &p, &res, NULL), MB_OK);
    assert_int_equal(res.published, 1);
    assert_int_equal(mb_dlq_close(r, NULL), MB_OK);
    close_ok(d);
    /* A read-only open leaves a torn tail alone. */
    char p1[256];
    seg_path(p1, sizeof p1, dir, 1);
    size_t len;
    char *img = read_file(p1, &len);
    write_file(p1, img, len - 3);
    free(img);
    assert_int_equal(mb_dlq_open(dir, &ro, &r, NULL), MB_OK);
    assert_int_equal(count(r, NULL), 0);
    assert_int_equal(mb_dlq_close(r, NULL), MB_OK);
    struct stat sb;
    assert_int_equal(stat(p1, &sb), 0);
    assert_int_equal((size_t)sb.st_size, len - 3);
    /* Missing directory. */
    assert_int_equal(mb_dlq_open("/tmp/mb-dlq-test-does-not-exist", &ro, &r, &err), MB_ENOTFOUND);
}

static void test_invalid_arguments(void **state)
{
    (void)state;
    const char *dir = new_dir();
    mb_dlq *d = NULL;
    mb_err err = {0};
    assert_int_equal(mb_dlq_open(NULL, NULL, &d, &err), MB_EINVAL);
    assert_int_equal(mb_dlq_open(dir, NULL, NULL, NULL), MB_EINVAL);
    mb_dlq_opts bad = {0};
    bad.max_entry_bytes = 4096;
    bad.queue_max_bytes = 1024;
    mb_err_clear(&err);
    assert_int_equal(mb_dlq_open(dir, &bad, &d, &err), MB_EINVAL);
    assert_non_null(strstr(err.msg, "max_entry_bytes"));
    bad = (mb_dlq_opts){0};
    bad.full_policy = (mb_dlq_full_policy)7;
    assert_int_equal(mb_dlq_open(dir, &bad, &d, NULL), MB_EINVAL);
    assert_int_equal(mb_dlq_close(NULL, NULL), MB_OK);

    mb_dlq_opts o = {0};
    o.max_entry_bytes = 1024;
    d = open_dir(dir, &o);
    uint8_t big[2048] = {0};
    mb_dlq_header h_empty[] = {{"", "v"}};
    mb_dlq_header h_null[] = {{"n", NULL}};
    struct {
        mb_dlq_entry e;
        mb_status want;
    } cases[] = {
        {{.subject = NULL, .error = MB_EIO}, MB_EINVAL},
        {{.subject = "", .error = MB_EIO}, MB_EINVAL},
        {{.subject = "a", .error = MB_OK}, MB_EINVAL},
        {{.subject = "a", .error = (mb_status)999}, MB_EINVAL},
        {{.subject = "a", .error = MB_EIO, .nheaders = 1}, MB_EINVAL},
        {{.subject = "a", .error = MB_EIO, .headers = h_empty, .nheaders = 1}, MB_EINVAL},
        {{.subject = "a", .error = MB_EIO, .headers = h_null, .nheaders = 1}, MB_EINVAL},
        {{.subject = "a", .error = MB_EIO, .payload_len = 3}, MB_EINVAL},
        {{.subject = "a", .error = MB_EIO, .first_failure_ms = 5, .last_failure_ms = 4}, MB_EINVAL},
        {{.subject = "a", .error = MB_EIO, .payload = big, .payload_len = sizeof big}, MB_ETOOBIG},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        mb_err_clear(&err);
        assert_int_equal(mb_dlq_put(d, &cases[i].e, false, NULL, &err), cases[i].want);
        assert_true(err.msg[0] != '\0');
    }
    char longs[MB_DLQ_SUBJECT_MAX + 2];
    memset(longs, 'a', sizeof longs - 1);
    longs[sizeof longs - 1] = '\0';
    mb_dlq_entry e = {0};
    e.subject = longs;
    e.error = MB_EIO;
    assert_int_equal(mb_dlq_put(d, &e, false, NULL, NULL), MB_EINVAL);
    assert_int_equal(mb_dlq_put(NULL, &e, false, NULL, NULL), MB_EINVAL);
    mb_dlq_stats s;
    assert_int_equal(mb_dlq_stats_get(d, &s), MB_OK);
    assert_int_equal(s.put_invalid, sizeof cases / sizeof cases[0] + 1);
    assert_int_equal(s.puts, 0);
    assert_int_equal(mb_dlq_stats_get(d, NULL), MB_EINVAL);
    pub_state p = {0};
    mb_dlq_replay_opts ro = {0};
    ro.rate_per_sec = -1;
    assert_int_equal(mb_dlq_replay(d, &ro, publish_fn, &p, NULL, NULL), MB_EINVAL);
    close_ok(d);
}

static void test_metrics(void **state)
{
    (void)state;
    const char *dir = new_dir();
    mb_metrics *m = NULL;
    assert_int_equal(mb_metrics_create(&m, NULL), MB_OK);
    mb_dlq_opts o = {0};
    o.metrics = m;
    o.labels = "dlq=\"chat\"";
    mb_dlq *d = open_dir(dir, &o);
    for (uint64_t i = 0; i < 3; i++)
        put_one(d, "met.x", MB_EIO, 0, i, i == 2);
    mb_dlq_stats s;
    mb_dlq_stats_get(d, &s);
    char *text = NULL;
    size_t len;
    assert_int_equal(mb_metrics_format(m, &text, &len, NULL), MB_OK);
    assert_non_null(strstr(text, "mudbus_dlq_depth{dlq=\"chat\"} 3\n"));
    assert_non_null(strstr(text, "mudbus_dlq_puts_total{dlq=\"chat\"} 3\n"));
    assert_non_null(strstr(text, "mudbus_dlq_put_failures_total{reason=\"full\",dlq=\"chat\"} 0"));
    assert_non_null(strstr(text, "mudbus_dlq_records_per_fsync_count{dlq=\"chat\"}"));
    assert_non_null(strstr(text, "mudbus_dlq_oldest_age_seconds{dlq=\"chat\"}"));
    assert_non_null(strstr(text, "mudbus_dlq_bytes{dlq=\"chat\"}"));
    free(text);
    /* The same labels twice in one registry are refused. */
    const char *dir2 = new_dir();
    mb_dlq *d2 = NULL;
    assert_int_equal(mb_dlq_open(dir2, &o, &d2, NULL), MB_EEXIST);
    close_ok(d);
    mb_metrics_destroy(m);
}

static void test_patterns_direct(void **state)
{
    (void)state;
    static const struct {
        const char *pat, *subj;
        bool match;
    } cases[] = {
        {"a.b", "a.b", true},    {"a.b", "a.bc", false}, {"a.*", "a.b", true},
        {"a.*", "a.b.c", false}, {"a.>", "a.b.c", true}, {"a.>", "a", false},
        {"*", "a", true},        {">", "a.b", true},     {"a.*.c", "a..c", true},
        {"*.*", "a.", true},     {"a.*", "a", false},    {"a.b.>", "a.b.", true},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        dlq_pattern p;
        assert_int_equal(mb__dlq_pattern_init(&p, cases[i].pat, NULL), MB_OK);
        bool got = mb__dlq_pattern_match(&p, (const uint8_t *)cases[i].subj, strlen(cases[i].subj));
        if (got != cases[i].match)
            fail_msg("pattern %s subject %s: got %d", cases[i].pat, cases[i].subj, got);
    }
}

/* A write that fails (here: past RLIMIT_FSIZE, as a full disk would) fails
 * its puts with MB_EIO, leaves no partial record behind, and the DLQ goes on
 * once space is back. */
static void test_write_failure(void **state)
{
    (void)state;
    const char *dir = new_dir();
    logbuf lb = {PTHREAD_MUTEX_INITIALIZER, ""};
    mb_dlq_opts o = {0};
    o.log = log_fn;
    o.log_ctx = &lb;
    mb_dlq *d = open_dir(dir, &o);
    put_one(d, "wf.a", MB_EIO, 0, 1, true);
    char p[256];
    seg_path(p, sizeof p, dir, 1);
    struct stat sb;
    assert_int_equal(stat(p, &sb), 0);
    struct rlimit old, lim;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
    lim = old;
    lim.rlim_cur = (rlim_t)sb.st_size + 100; /* room for part of a record only */
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);

    uint8_t pl[256];
    mb_dlq_entry e = {0};
    e.subject = "wf.b";
    e.payload = pl;
    e.payload_len = payload_for(150, pl); /* 151 bytes: the record is over 100 */
    e.error = MB_EIO;
    mb_err err = {0};
    mb_status st = mb_dlq_put(d, &e, true, NULL, &err);
    mb_status st2 = mb_dlq_put(d, &e, false, NULL, NULL);
    /* Let the writer fail the queued record before the flush starts: a flush
     * must still report it (it once only counted failures met while it
     * waited, and passed when the writer was quicker). */
    for (int i = 0; i < 5000; i++) {
        mb_dlq_stats ws;
        mb_dlq_stats_get(d, &ws);
        if (ws.put_io >= 2)
            break;
        usleep(1000);
    }
    mb_err ferr = {0};
    mb_status fst = mb_dlq_flush(d, &ferr);
    setrlimit(RLIMIT_FSIZE, &old);
    signal(SIGXFSZ, prev);
    assert_int_equal(st, MB_EIO);
    assert_non_null(strstr(err.msg, "writing segment"));
    assert_int_equal(st2, MB_OK); /* queued; its failure shows in flush */
    assert_int_equal(fst, MB_EIO);
    assert_non_null(strstr(ferr.msg, "1 records failed"));
    assert_int_equal(stat(p, &sb), 0);
    mb_dlq_stats s;
    mb_dlq_stats_get(d, &s);
    assert_int_equal(s.put_io, 2);
    assert_int_equal((uint64_t)sb.st_size, s.bytes); /* truncated back */
    assert_non_null(strstr(lb.text, "records failed"));

    uint64_t id = put_one(d, "wf.c", MB_EIO, 0, 2, true);
    assert_int_equal(id, 4);
    close_ok(d);
    d = open_dir(dir, NULL);
    collected *c = list_all(d, true);
    assert_int_equal(c->n, 2);
    assert_int_equal(c->ids[0], 1);
    assert_int_equal(c->ids[1], 4);
    free(c);
    check_payload(d, 1, 1);
    check_payload(d, 4, 2);
    mb_dlq_stats_get(d, &s);
    assert_int_equal(s.torn_records, 0);
    assert_int_equal(s.corrupt_records, 0);
    close_ok(d);
}

int main(void)
{
    atexit(rm_all_dirs);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc32c),
        cmocka_unit_test(test_patterns_direct),
        cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ids_across_reopen, setup, teardown),
        cmocka_unit_test_setup_teardown(test_durable_without_close, setup, teardown),
        cmocka_unit_test_setup_teardown(test_filters, setup, teardown),
        cmocka_unit_test_setup_teardown(test_show, setup, teardown),
        cmocka_unit_test_setup_teardown(test_replay_dry_run_progress, setup, teardown),
        cmocka_unit_test_setup_teardown(test_replay_rate_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_replay_marker_survives_reopen, setup, teardown),
        cmocka_unit_test_setup_teardown(test_replay_interrupted_resumes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_replay_skip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_purge, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retention_age, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retention_size_reject, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retention_size_drop_oldest, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_full, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_drains, setup, teardown),
        cmocka_unit_test_setup_teardown(test_torn_tail_every_offset, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bit_flip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_middle_of_older_segment, setup, teardown),
        cmocka_unit_test_setup_teardown(test_marker_keeps_segment, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_durable_puts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_async_put, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_only_and_lock, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invalid_arguments, setup, teardown),
        cmocka_unit_test_setup_teardown(test_metrics, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_failure, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
