/* SPDX-License-Identifier: MIT */
/*
 * The DLQ crash test: kill a writer process at random moments, many times,
 * and check after every restart that nothing acknowledged was lost.
 *
 * Each iteration forks a child that opens the DLQ in one directory (kept
 * across iterations) and puts entries in a loop: mostly durable, every third
 * one not. After each durable put RETURNS, the child writes its id to a pipe.
 * The parent sleeps a random 0-20 ms (seeded: MB_KILL_SEED, default 1),
 * counted from the fork in odd iterations and from the child's "opened"
 * mark in even ones, and SIGKILLs it: kills land while the child opens and recovers, writes, rolls
 * segments (they are small here), or, every fifth iteration, replays the 40
 * oldest entries (markers, segment deletion). Then the parent reopens the DLQ and
 * checks that
 *   - every id the child reported is present and intact (its subject and
 *     payload are derived from the id, so content is verified, not just
 *     presence), except after a replaying child, whose deletions may remove
 *     replayed entries (the expected set restarts there);
 *   - every entry that can be listed is intact and ids strictly increase;
 *   - no corrupt record is reported.
 * SIGKILL keeps the page cache, so this proves process-crash safety; power
 * loss is simulated by the torn-tail tests in test_dlq.c. Iterations:
 * MB_KILL_ITERS (default 250). Prints the number of kills.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <ftw.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "mudbus/dlq.h"

static char dir[64];

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void cleanup(void)
{
    if (dir[0] != '\0')
        nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    dir[0] = '\0';
}

static size_t payload_of(uint64_t id, uint8_t *buf)
{
    size_t n = 40 + (size_t)(id % 300);
    for (size_t i = 0; i < n; i++)
        buf[i] = (uint8_t)(id * 31 + i * 17);
    return n;
}

static void subject_of(uint64_t id, char *buf, size_t cap)
{
    snprintf(buf, cap, "kill.%" PRIu64, id);
}

static mb_dlq_opts opts(void)
{
    mb_dlq_opts o = {0};
    o.create = true;
    o.segment_bytes = 16 * 1024; /* frequent rolls */
    o.max_age_ms = MB_DLQ_UNLIMITED;
    return o;
}

static mb_status nop_publish(void *ctx, const mb_dlq_entry *e, mb_err *err)
{
    (void)ctx;
    (void)e;
    (void)err;
    return MB_OK;
}

/* The child: put until killed. Exits non-zero only on a failure. */
static void child(int fd, bool replay)
{
    mb_dlq_opts o = opts();
    mb_dlq *d = NULL;
    mb_err err = {0};
    if (mb_dlq_open(dir, &o, &d, &err) != MB_OK) {
        fprintf(stderr, "child: open: %s\n", err.msg);
        _exit(2);
    }
    if (replay) {
        mb_dlq_replay_opts ro = {0};
        ro.max = 40; /* often finishes before the kill, so segments get deleted */
        if (mb_dlq_replay(d, &ro, nop_publish, NULL, NULL, &err) != MB_OK) {
            fprintf(stderr, "child: replay: %s\n", err.msg);
            _exit(2);
        }
    }
    uint64_t ready = 0; /* id 0: opened, the put loop starts */
    if (write(fd, &ready, sizeof ready) != (ssize_t)sizeof ready)
        _exit(4);
    for (unsigned n = 0;; n++) {
        mb_dlq_stats s;
        mb_dlq_stats_get(d, &s);
        uint64_t want = s.next_id; /* one thread: the next put gets it */
        uint8_t pl[400];
        char subj[64];
        subject_of(want, subj, sizeof subj);
        mb_dlq_header h = {"k", subj};
        mb_dlq_entry e = {0};
        e.subject = subj;
        e.headers = &h;
        e.nheaders = 1;
        e.payload = pl;
        e.payload_len = payload_of(want, pl);
        e.error = MB_ETIMEOUT;
        e.origin = "kill";
        bool durable = n % 3 != 2;
        uint64_t id = 0;
        mb_status st = mb_dlq_put(d, &e, durable, &id, &err);
        if (st != MB_OK || id != want) {
            fprintf(stderr, "child: put: %s (id %" PRIu64 ", want %" PRIu64 "): %s\n",
                    mb_status_name(st), id, want, err.msg);
            _exit(3);
        }
        if (durable && write(fd, &id, sizeof id) != (ssize_t)sizeof id)
            _exit(4);
    }
}

typedef struct idset {
    uint64_t *v;
    size_t n, cap;
} idset;

static void idset_add(idset *s, uint64_t id)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 1024;
        s->v = realloc(s->v, s->cap * sizeof *s->v);
        assert_non_null(s->v);
    }
    s->v[s->n++] = id;
}

typedef struct check_state {
    uint64_t last;
    size_t n;
} check_state;

static int check_entry(void *ctx, const mb_dlq_entry *e)
{
    check_state *c = ctx;
    uint8_t pl[400];
    char subj[64];
    size_t n = payload_of(e->id, pl);
    subject_of(e->id, subj, sizeof subj);
    if (e->id <= c->last || e->payload_len != n || memcmp(e->payload, pl, n) != 0 ||
        strcmp(e->subject, subj) != 0 || e->nheaders != 1 || strcmp(e->headers[0].value, subj) != 0)
        fail_msg("entry %" PRIu64 " is not intact (after %" PRIu64 ")", e->id, c->last);
    c->last = e->id;
    c->n++;
    return 0;
}

static void test_kill_loop(void **state)
{
    (void)state;
    const char *it_env = getenv("MB_KILL_ITERS"), *seed_env = getenv("MB_KILL_SEED");
    int iters = it_env ? atoi(it_env) : 250;
    unsigned seed = seed_env ? (unsigned)strtoul(seed_env, NULL, 10) : 1;
    srand(seed);
    strcpy(dir, "/tmp/mb-dlq-kill.XXXXXX");
    assert_non_null(mkdtemp(dir));

    idset expected = {0};
    size_t kills = 0, reported = 0, torn = 0, max_listed = 0;
    uint64_t min_segs = UINT64_MAX, max_segs = 0;
    for (int it = 0; it < iters; it++) {
        bool replay = it % 5 == 4;
        if (replay)
            expected.n = 0; /* the child may delete replayed entries */
        int p[2];
        assert_int_equal(pipe(p), 0);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            close(p[0]);
            child(p[1], replay);
        }
        close(p[1]);
        /* Odd iterations count the delay from the fork (kills land in open
         * and recovery too), even ones from the start of the put loop, so
         * that a slow disk does not keep every kill in the open. */
        uint64_t id;
        ssize_t r;
        if (it % 2 == 0) {
            struct pollfd pfd = {p[0], POLLIN, 0};
            assert_int_equal(poll(&pfd, 1, 10000), 1);
            assert_int_equal(read(p[0], &id, sizeof id), (ssize_t)sizeof id);
            assert_int_equal(id, 0);
        }
        struct timespec ts = {0, (long)(rand() % 20001) * 1000};
        nanosleep(&ts, NULL);
        assert_int_equal(kill(pid, SIGKILL), 0);
        int status = 0;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        if (!(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL))
            fail_msg("iteration %d: the child ended by itself (status 0x%x)", it, status);
        kills++;
        while ((r = read(p[0], &id, sizeof id)) == (ssize_t)sizeof id) {
            if (id == 0)
                continue; /* the ready mark */
            idset_add(&expected, id);
            reported++;
        }
        assert_int_equal(r, 0);
        close(p[0]);

        mb_dlq_opts o = opts();
        mb_dlq *d = NULL;
        mb_err err = {0};
        mb_status st = mb_dlq_open(dir, &o, &d, &err);
        if (st != MB_OK)
            fail_msg("iteration %d: reopen: %s", it, err.msg);
        for (size_t i = 0; i < expected.n; i++) {
            mb_dlq_entry *e = NULL;
            st = mb_dlq_show(d, expected.v[i], &e, &err);
            if (st != MB_OK)
                fail_msg("iteration %d: durable entry %" PRIu64 " lost: %s", it, expected.v[i],
                         err.msg);
            check_state c = {expected.v[i] - 1, 0};
            check_entry(&c, e);
            mb_dlq_entry_free(e);
        }
        check_state c = {0, 0};
        mb_dlq_filter f = {0};
        f.include_replayed = true;
        assert_int_equal(mb_dlq_list(d, &f, check_entry, &c, NULL, &err), MB_OK);
        if (c.n > max_listed)
            max_listed = c.n;
        mb_dlq_stats s;
        mb_dlq_stats_get(d, &s);
        if (s.corrupt_records != 0)
            fail_msg("iteration %d: %" PRIu64 " corrupt records reported", it, s.corrupt_records);
        torn += s.torn_records;
        if (s.segments < min_segs)
            min_segs = s.segments;
        if (it == 0 || s.segments > max_segs)
            max_segs = s.segments;
        assert_int_equal(mb_dlq_close(d, &err), MB_OK);
    }
    printf("dlq kill test: %zu kills (seed %u), %zu durable puts reported and verified, "
           "%zu torn tails recovered, up to %zu entries in %" PRIu64 "..%" PRIu64 " segments\n",
           kills, seed, reported, torn, max_listed, min_segs, max_segs);
    assert_true(kills >= (size_t)iters);
    free(expected.v);
    cleanup();
}

int main(void)
{
    atexit(cleanup);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kill_loop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
