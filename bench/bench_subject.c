/* SPDX-License-Identifier: MIT */
/*
 * bench_subject: nanoseconds per mb_subject_build (chat_say_room) and per
 * mb_subject_check over a rotating set of distinct room subjects, plus a
 * refused check and a subscription-pattern check for comparison. Each figure
 * is the median of several runs (bu_runs); the times include the module's own
 * metrics (two clock reads and a histogram observation per call), as a caller
 * would see them. MB_BENCH_QUICK=1 makes the run short.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"
#include "mudbus/subject.h"

#define NSUBJECTS 10000

typedef struct bench_subjects {
    char room[NSUBJECTS][48];
    char subject[NSUBJECTS][64];
    size_t len[NSUBJECTS];
} bench_subjects;

/* A timed call failed: repeat it with an mb_err to say why, and stop. The
 * timed loops pass no mb_err, as a hot path that expects success would. */
static void die(const char *what, mb_subject_registry *r, const char *pattern, const char *arg)
{
    mb_err err = {0};
    if (strcmp(what, "build") == 0) {
        char buf[MB_SUBJECT_MAX + 1];
        mb_subject_param p = {"room_id", arg};
        mb_subject_build(r, pattern, &p, 1, buf, sizeof buf, NULL, NULL, &err);
    } else if (strcmp(what, "check") == 0) {
        mb_subject_check(r, arg, strlen(arg), NULL, NULL, &err);
    } else if (strcmp(what, "check_sub") == 0) {
        mb_subject_check_sub(r, arg, strlen(arg), NULL, &err);
    }
    fprintf(stderr, "bench_subject: %s '%s' gave an unexpected result: %s\n", what, arg,
            err.msg[0] ? err.msg : "(accepted)");
    exit(1);
}

static double run_build(mb_subject_registry *r, const bench_subjects *bs, long iters)
{
    char buf[MB_SUBJECT_MAX + 1];
    uint64_t sum = 0;
    uint64_t t0 = bu_now_ns();
    for (long i = 0; i < iters; i++) {
        mb_subject_param p = {"room_id", bs->room[i % NSUBJECTS]};
        size_t len = 0;
        if (mb_subject_build(r, "chat_say_room", &p, 1, buf, sizeof buf, &len, NULL, NULL) != MB_OK)
            die("build", r, "chat_say_room", p.value);
        sum += len;
    }
    uint64_t t1 = bu_now_ns();
    bu_sink(sum);
    return (double)(t1 - t0) / (double)iters;
}

static double run_check(mb_subject_registry *r, const bench_subjects *bs, long iters, int miss)
{
    uint64_t sum = 0;
    uint64_t t0 = bu_now_ns();
    for (long i = 0; i < iters; i++) {
        size_t k = (size_t)(i % NSUBJECTS);
        mb_subject_info info;
        /* A miss checks the subject without its last token ("chat.say.room"). */
        size_t len = miss ? 13 : bs->len[k];
        mb_status st = mb_subject_check(r, bs->subject[k], len, &info, NULL, NULL);
        if ((st == MB_OK) == miss)
            die("check", r, NULL, bs->subject[k]);
        sum += st == MB_OK ? (uint64_t)info.schema : 1;
    }
    uint64_t t1 = bu_now_ns();
    bu_sink(sum);
    return (double)(t1 - t0) / (double)iters;
}

static double run_sub(mb_subject_registry *r, long iters)
{
    static const char *const pats[] = {"chat.say.room.*", "chat.*.room.*", "events.>",
                                       "combat.*.earth_arkham_city_library"};
    uint64_t sum = 0;
    uint64_t t0 = bu_now_ns();
    for (long i = 0; i < iters; i++) {
        const char *p = pats[i & 3];
        if (mb_subject_check_sub(r, p, strlen(p), NULL, NULL) != MB_OK)
            die("check_sub", r, NULL, p);
        sum++;
    }
    uint64_t t1 = bu_now_ns();
    bu_sink(sum);
    return (double)(t1 - t0) / (double)iters;
}

int main(void)
{
    mb_subject_registry *r = NULL;
    mb_err err = {0};
    if (mb_subject_registry_create(NULL, &r, &err) != MB_OK) {
        fprintf(stderr, "bench_subject: %s\n", err.msg);
        return 1;
    }
    bench_subjects *bs = malloc(sizeof *bs);
    if (bs == NULL) {
        fprintf(stderr, "bench_subject: out of memory\n");
        return 1;
    }
    for (int i = 0; i < NSUBJECTS; i++) {
        snprintf(bs->room[i], sizeof bs->room[i], "earth_zone%d_sub%d_room%d", i % 7, i % 31, i);
        int n = snprintf(bs->subject[i], sizeof bs->subject[i], "chat.say.room.%s", bs->room[i]);
        bs->len[i] = (size_t)n;
    }

    int runs = bu_runs(7);
    long iters = bu_quick() ? 20000 : 1000000;
    double *build = calloc((size_t)runs, sizeof *build);
    double *check = calloc((size_t)runs, sizeof *check);
    double *miss = calloc((size_t)runs, sizeof *miss);
    double *sub = calloc((size_t)runs, sizeof *sub);
    if (build == NULL || check == NULL || miss == NULL || sub == NULL) {
        fprintf(stderr, "bench_subject: out of memory\n");
        return 1;
    }
    /* Warm-up: page in the subjects and the trie. */
    run_check(r, bs, NSUBJECTS, 0);
    for (int k = 0; k < runs; k++) {
        build[k] = run_build(r, bs, iters);
        check[k] = run_check(r, bs, iters, 0);
        miss[k] = run_check(r, bs, iters, 1);
        sub[k] = run_sub(r, iters);
    }
    printf("subject_runs %d\n", runs);
    printf("subject_iterations_per_run %ld\n", iters);
    printf("subject_distinct_subjects %d\n", NSUBJECTS);
    printf("subject_build_ns_median %.1f\n", bu_median(build, (size_t)runs));
    printf("subject_check_ns_median %.1f\n", bu_median(check, (size_t)runs));
    printf("subject_check_miss_ns_median %.1f\n", bu_median(miss, (size_t)runs));
    printf("subject_check_sub_ns_median %.1f\n", bu_median(sub, (size_t)runs));
    free(build);
    free(check);
    free(miss);
    free(sub);
    free(bs);
    mb_subject_registry_destroy(r);
    return 0;
}
