/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for the gateway's set of locally delivered chat ids
 * (src/gateway/sent.c): an id is taken once and only once, ids that were
 * never added are not taken, the oldest id is forgotten (and reported) when
 * the set is full while ids already taken are not reported, the length given
 * to take is respected, and a long random run of adds and takes agrees with a
 * plain array model (the table's deletions move entries around; a wrong move
 * would lose or invent an id).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sent.h"

static bool take(gw_sent *t, const char *id)
{
    return gw_sent_take(t, id, strlen(id));
}

static void test_add_take_once(void **state)
{
    (void)state;
    gw_sent *t = gw_sent_new(8);
    assert_non_null(t);
    assert_false(take(t, "m0000000000000001"));
    assert_false(gw_sent_add(t, "m0000000000000001"));
    assert_false(gw_sent_add(t, "m0000000000000002"));
    assert_int_equal(gw_sent_pending(t), 2);
    assert_false(gw_sent_add(t, "m0000000000000001")); /* already there: no change */
    assert_int_equal(gw_sent_pending(t), 2);
    assert_true(take(t, "m0000000000000001"));
    assert_false(take(t, "m0000000000000001"));
    assert_true(take(t, "m0000000000000002"));
    assert_int_equal(gw_sent_pending(t), 0);
    assert_int_equal(gw_sent_evicted(t), 0);
    gw_sent_free(t);
}

static void test_take_uses_the_length(void **state)
{
    (void)state;
    gw_sent *t = gw_sent_new(4);
    assert_non_null(t);
    gw_sent_add(t, "m7f3a");
    /* A payload's id is not NUL-terminated: the bytes after it do not count. */
    assert_false(gw_sent_take(t, "m7f3a\"rest", 4));
    assert_false(gw_sent_take(t, "m7f3a\"rest", 6));
    assert_true(gw_sent_take(t, "m7f3a\"rest", 5));
    gw_sent_free(t);
}

static void test_full_forgets_the_oldest(void **state)
{
    (void)state;
    gw_sent *t = gw_sent_new(3);
    assert_non_null(t);
    assert_false(gw_sent_add(t, "a"));
    assert_false(gw_sent_add(t, "b"));
    assert_false(gw_sent_add(t, "c"));
    assert_true(gw_sent_add(t, "d")); /* "a" is forgotten before its copy came */
    assert_int_equal(gw_sent_evicted(t), 1);
    assert_false(take(t, "a"));
    /* "b" comes back; when its turn to leave comes it is not counted. */
    assert_true(take(t, "b"));
    assert_false(gw_sent_add(t, "e"));
    assert_int_equal(gw_sent_evicted(t), 1);
    assert_true(gw_sent_add(t, "f")); /* forgets "c" */
    assert_int_equal(gw_sent_evicted(t), 2);
    assert_false(take(t, "c"));
    assert_true(take(t, "d"));
    assert_true(take(t, "e"));
    assert_true(take(t, "f"));
    assert_int_equal(gw_sent_pending(t), 0);
    gw_sent_free(t);
}

static void test_capacity_one(void **state)
{
    (void)state;
    gw_sent *t = gw_sent_new(0); /* taken as 1 */
    assert_non_null(t);
    assert_false(gw_sent_add(t, "x"));
    assert_true(gw_sent_add(t, "y"));
    assert_false(take(t, "x"));
    assert_true(take(t, "y"));
    gw_sent_free(t);
    gw_sent_free(NULL);
}

/* Adds and takes at random against a model: an array of the ids added, in
 * order, each marked waiting or gone. Small capacities make long probe runs
 * and many evictions. */
static void test_random_against_model(void **state)
{
    (void)state;
    enum { OPS = 200000, IDS = 512 };
    static const uint32_t caps[] = {1, 2, 7, 64, 300};
    for (size_t ci = 0; ci < sizeof caps / sizeof caps[0]; ci++) {
        uint32_t cap = caps[ci];
        gw_sent *t = gw_sent_new(cap);
        assert_non_null(t);
        /* model: the last `cap` adds (ring) and which of them still wait */
        int ring[300];
        bool waiting[IDS];
        memset(waiting, 0, sizeof waiting);
        uint32_t head = 0, n = 0;
        uint64_t evicted = 0;
        unsigned seed = 12345u + cap;
        for (int op = 0; op < OPS; op++) {
            seed = seed * 1103515245u + 12345u;
            int id = (int)((seed >> 8) % IDS);
            char s[16];
            snprintf(s, sizeof s, "m%04x", (unsigned)id);
            if ((seed >> 4) & 1) {
                bool want_evict = false;
                if (!waiting[id]) {
                    if (n == cap) {
                        int old = ring[head];
                        if (waiting[old]) {
                            waiting[old] = false;
                            want_evict = true;
                            evicted++;
                        }
                        head = (head + 1) % cap;
                        n--;
                    }
                    ring[(head + n) % cap] = id;
                    n++;
                    waiting[id] = true;
                }
                assert_int_equal(gw_sent_add(t, s), want_evict);
            } else {
                bool want = waiting[id];
                waiting[id] = false;
                assert_int_equal(take(t, s), want);
            }
        }
        size_t pending = 0;
        for (int i = 0; i < IDS; i++)
            pending += waiting[i];
        assert_int_equal(gw_sent_pending(t), pending);
        assert_int_equal(gw_sent_evicted(t), evicted);
        gw_sent_free(t);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_add_take_once),           cmocka_unit_test(test_take_uses_the_length),
        cmocka_unit_test(test_full_forgets_the_oldest), cmocka_unit_test(test_capacity_one),
        cmocka_unit_test(test_random_against_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
