/* SPDX-License-Identifier: MIT */
/*
 * test_json: unit tests of the strict JSON scanner under the schema validator
 * (src/lib/json.h): mb__json_check against jansson (mbref_json_accepts) on a
 * table of a few hundred tricky documents in the style of JSONTestSuite
 * (y_ must be accepted, n_ refused, i_ whatever jansson 2.14 does), nesting at
 * jansson's depth limit, big objects, and string decoding with
 * mb__json_string / mb__json_decode / mb__json_measure against jansson's
 * decoded strings.
 *
 * The one intended difference from jansson: a raw NUL byte is refused
 * everywhere, while jansson accepts one right after a number or literal.
 * Every failing case is reported before the test fails.
 */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "schema_ref.h"

static int g_fail;

static void dump(const char *p, size_t n)
{
    size_t shown = n < 120 ? n : 120;
    fputs("    input: \"", stderr);
    for (size_t i = 0; i < shown; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c == '"' || c == '\\')
            fprintf(stderr, "\\%c", c);
        else if (c >= 0x20 && c < 0x7F)
            fputc(c, stderr);
        else
            fprintf(stderr, "\\x%02X", c);
    }
    fprintf(stderr, "\"%s (%zu bytes)\n", shown < n ? "..." : "", n);
}

static void finish(void)
{
    if (g_fail != 0)
        fail_msg("%d case(s) failed, see above", g_fail);
}

static int reset(void **state)
{
    (void)state;
    g_fail = 0;
    return 0;
}

/* Run mb__json_check on an exact-size copy (ASan sees over-reads). */
static mb_status check(const char *p, size_t n, mb_err *err)
{
    char *copy = malloc(n ? n : 1);
    assert_non_null(copy);
    memcpy(copy, p, n);
    mb_status st = mb__json_check(copy, n, err);
    free(copy);
    return st;
}

/* expect: 'y' both accept, 'n' both refuse, 'i' mudbus does what jansson
 * does, 'z' (input holds a raw NUL) mudbus refuses whatever jansson does. */
static void compare_at(int line, char expect, const char *p, size_t n)
{
    mb_err err;
    mb_err_clear(&err);
    mb_status st = check(p, n, &err);
    int ref = mbref_json_accepts(p, n);
    int bad = 0;
    if (st != MB_OK && st != MB_EJSON) {
        fprintf(stderr, "line %d: mb__json_check returned %s\n", line, mb_status_name(st));
        bad = 1;
    }
    int mb = st == MB_OK;
    if (st == MB_EJSON && (err.code != MB_EJSON || err.msg[0] == '\0')) {
        fprintf(stderr, "line %d: MB_EJSON without a reason\n", line);
        bad = 1;
    }
    switch (expect) {
    case 'y':
    case 'n':
        if (ref != (expect == 'y')) {
            fprintf(stderr, "line %d: jansson %s, expected %s\n", line, ref ? "accepts" : "refuses",
                    expect == 'y' ? "accept" : "refuse");
            bad = 1;
        }
        if (mb != (expect == 'y')) {
            fprintf(stderr, "line %d: mb__json_check %s (%s), expected %s\n", line,
                    mb ? "accepts" : "refuses", err.msg, expect == 'y' ? "accept" : "refuse");
            bad = 1;
        }
        break;
    case 'z':
        if (memchr(p, 0, n) == NULL) {
            fprintf(stderr, "line %d: 'z' case without a NUL\n", line);
            bad = 1;
        }
        if (mb) {
            fprintf(stderr, "line %d: mb__json_check accepts a raw NUL\n", line);
            bad = 1;
        }
        break;
    default:
        if (mb != ref) {
            fprintf(stderr, "line %d: mb__json_check %s (%s), jansson %s\n", line,
                    mb ? "accepts" : "refuses", err.msg, ref ? "accepts" : "refuses");
            bad = 1;
        }
    }
    if (bad) {
        dump(p, n);
        g_fail++;
    }
}

typedef struct tcase {
    int line;
    char expect;
    const char *text;
    size_t len;
} tcase;

/* clang-format off */
#define Y(s) {__LINE__, 'y', s, sizeof(s) - 1}
#define N(s) {__LINE__, 'n', s, sizeof(s) - 1}
#define I(s) {__LINE__, 'i', s, sizeof(s) - 1}
#define Z(s) {__LINE__, 'z', s, sizeof(s) - 1}

static const tcase CASES[] = {
    /* ---- structure ---- */
    Y("[]"), Y("{}"), Y("[[]]"), Y("[{}]"), Y("{\"a\":[]}"), Y("[[],[[]],{}]"), Y(" [ ] "),
    Y("\t\r\n[\t\r\n1\t\r\n,\t\r\n2\t\r\n]\t\r\n"), Y("{ \"a\" : 1 , \"b\" : 2 }"), Y("[1,2,3]"),
    Y("[\"a\",\"b\"]"), Y("[null,true,false]"), Y("{\"a\":{\"a\":{\"a\":{}}}}"),
    Y("[[1],[2,[3,[4]]]]"), Y("{\"\":\"\"}"), Y("{\"a\":null}"), Y("[{\"a\":1},{\"a\":1}]"), N(""),
    N(" "), N("\n"), N("["), N("]"), N("{"), N("}"), N("[1"), N("[1,"), N("[1,]"), N("[,1]"),
    N("[,]"), N("[1 2]"), N("[1,,2]"), N("[1:2]"), N("{\"a\"}"), N("{\"a\":}"), N("{\"a\" 1}"),
    N("{\"a\":1,}"), N("{,}"), N("{,\"a\":1}"), N("{1:1}"), N("{a:1}"), N("{'a':1}"),
    N("{\"a\":1 \"b\":2}"), N("{\"a\"::1}"), N("{\"a\":1;\"b\":2}"), N("[}"), N("{]"), N("[]]"),
    N("[][]"), N("{}{}"), N("{}}"), N("{{}}"), N("[{]"), N("[{}"), N("{\"a\":[}"), N("{\"a\":{]}"),
    N("[\"a\":1]"), N("{\"a\",1}"), N("{\"a\":1:2}"), N("{null:1}"), N("{true:1}"), N("{[]:1}"),
    N("{{}:1}"), N("[1]x"), N("[1] [2]"), N("\"a\" \"b\""), N("1 2"), N("1,2"), N("[1],"),
    N("[1]]"), N("{\"a\":1}}"), N("{\"a\":1}#"), N("/* c */ []"), N("[] // c"), N("[1 /* c */]"),
    N("#[]"), N("[]#"), N("\xef\xbb\xbf[]"), N("\x0c[]"), N("[\x0c]"), N("\x0b[]"), N("[]\x0b"),
    N("\xc2\xa0[]"), N("[\xe2\x80\x80]"), N("(1)"), N("<1>"), N("[1;2]"), N("[1\n2]"), N("=1"),
    N("[1]\x1a"),
    /* ---- scalars at the top ---- */
    Y("1"), Y("-1"), Y("0"), Y("-0"), Y("1.5"), Y("true"), Y("false"), Y("null"), Y("\"\""),
    Y("\"a\""), Y(" 1 "), Y("\n\r\t 1 \n\r\t"), Y("\"\\u0041\""), Y("1e5"), N("nul"), N("tru"),
    N("fals"), N("True"), N("FALSE"), N("NULL"), N("nan"), N("NaN"), N("Infinity"), N("-Infinity"),
    N("inf"), N("undefined"), N("truefalse"), N("nulll"), N("truex"), N("[truex]"), N("[true1]"),
    N("[nulltrue]"), N("'a'"), N("a"), N("-"), N("+"), N("."), N("e"), N("\"a"), N("\""), N("a\""),
    /* ---- numbers ---- */
    Y("[0]"), Y("[-0]"), Y("[1]"), Y("[-1]"), Y("[0.0]"), Y("[-0.0]"), Y("[1.5]"), Y("[0.5]"),
    Y("[1e5]"), Y("[1E5]"), Y("[1e+5]"), Y("[1e-5]"), Y("[1E+5]"), Y("[1E-5]"), Y("[0e0]"),
    Y("[-0e-0]"), Y("[0E+0]"), Y("[1.5e10]"), Y("[-1.5e-10]"), Y("[123456789]"),
    Y("[1.0000000000000000000000000000000000000001]"), Y("[123e45]"), Y("[123.456e78]"),
    Y("[9223372036854775807]"), Y("[-9223372036854775808]"), Y("[9223372036854775806]"),
    Y("[-9223372036854775807]"), Y("[1e308]"), Y("[-1e308]"), Y("[1.7976931348623157e308]"),
    Y("[-1.7976931348623157e308]"), Y("[1e-400]"), Y("[-1e-400]"), Y("[4.9e-324]"),
    Y("[2.2250738585072014e-308]"), Y("[1e-99999999999]"), Y("[9223372036854775808.0]"),
    Y("[9223372036854775807e0]"), Y("[-9223372036854775809.0]"),
    Y("[123456789012345678901234567890.0]"), Y("[123456789012345678901234567890e-20]"),
    Y("[0.000000000000000000000000000000000000000000000000000000000000000001e-300]"),
    Y("[1,-1,0.5,-0.5,1e1,-1e-1]"), Y("{\"n\":-0.0e+0}"), N("[01]"), N("[-01]"), N("[00]"),
    N("[012]"), N("[1.]"), N("[-1.]"), N("[.5]"), N("[-.5]"), N("[-]"), N("[+1]"), N("[1e]"),
    N("[1e+]"), N("[1e-]"), N("[1E]"), N("[1.e5]"), N("[0x10]"), N("[0X10]"), N("[1.5.5]"),
    N("[1e5e5]"), N("[1e5.5]"), N("[--1]"), N("[- 1]"), N("[1 .5]"), N("[1. 5]"), N("[1e 5]"),
    N("[1_000]"), N("[0b1]"), N("[0o7]"), N("[1f]"), N("[1ee2]"), N("[1e+-2]"), N("[1e5x]"),
    N("[0.e1]"), N("[1.0e]"), N("[-a]"), N("[-NaN]"), N("[Infinity]"), N("[-Infinity]"), N("[NaN]"),
    N("[\xd9\xa1]"), N("[\xef\xbc\x91]"), N("[9223372036854775808]"), N("[-9223372036854775809]"),
    N("[99999999999999999999]"), N("[-99999999999999999999]"), N("[10000000000000000000]"),
    N("[100000000000000000000000000000000000000]"), N("[1e309]"), N("[-1e309]"), N("[1E400]"),
    N("[1.8e308]"), N("[-1.8e308]"), N("[123.456e999]"), N("[1e99999999999]"),
    N("[1.7976931348623159e308]"), N("9223372036854775808"), N("-9223372036854775809"), N("1e309"),
    N("01"), N("1."), N(".5"), N("-"), N("1e"), N("+1"), I("[0e99999]"), I("[0.0e99999]"),
    I("[-0e-99999]"), I("[1.7976931348623158e308]"),
    I("[0.00000000000000000000000000000000000000000000000000000000001e320]"),
    /* ---- strings ---- */
    Y("[\"\"]"), Y("[\"abc\"]"), Y("[\"\\\"\"]"), Y("[\"\\\\\"]"), Y("[\"\\/\"]"),
    Y("[\"\\b\\f\\n\\r\\t\"]"), Y("[\"\\u0041\"]"), Y("[\"\\u00e9\"]"), Y("[\"\\u00E9\"]"),
    Y("[\"\\uFFFF\"]"), Y("[\"\\uFFFE\"]"), Y("[\"\\uFDD0\"]"), Y("[\"\\uD83D\\uDE00\"]"),
    Y("[\"\\ud83d\\ude00\"]"), Y("[\"\\uDBFF\\uDFFF\"]"), Y("[\"\\uD800\\uDC00\"]"),
    Y("[\"\\u0001\"]"), Y("[\"\\u001f\"]"), Y("[\"\\u007f\"]"), Y("[\"\\u0080\"]"),
    Y("[\"\\u002F\"]"), Y("[\"\\u2028\\u2029\"]"), Y("[\"\\uaBcD\"]"), Y("[\"\x7f\"]"),
    Y("[\"\xc3\xa9\"]"), Y("[\"\xe2\x82\xac\"]"), Y("[\"\xf0\x9f\x98\x80\"]"),
    Y("[\"\xf4\x8f\xbf\xbf\"]"), Y("[\"\xef\xbf\xbf\"]"), Y("[\"\xef\xbf\xbe\"]"),
    Y("[\"\xef\xbb\xbf\"]"), Y("[\"\xe2\x80\xa8\"]"), Y("[\"\xc2\x80\"]"), Y("[\"\xdf\xbf\"]"),
    Y("[\"\xe0\xa0\x80\"]"), Y("[\"\xed\x9f\xbf\"]"), Y("[\"\xee\x80\x80\"]"),
    Y("[\"\xf0\x90\x80\x80\"]"), Y("[\"a/*b*/\"]"), Y("[\"#\"]"), Y("[\"'\"]"), Y("[\" \"]"),
    Y("[\"\\\\u0000\"]"), Y("[\"\\\\\\\\\"]"), Y("[\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"]"),
    Y("\"\\uD834\\uDD1E\""), N("[\"\x01\"]"), N("[\"\x02\"]"), N("[\"\x08\"]"), N("[\"\t\"]"),
    N("[\"\n\"]"), N("[\"\r\"]"), N("[\"\x0b\"]"), N("[\"\x0c\"]"), N("[\"\x1b\"]"),
    N("[\"\x1f\"]"), N("[\"\\a\"]"), N("[\"\\x41\"]"), N("[\"\\'\"]"), N("[\"\\0\"]"),
    N("[\"\\U0041\"]"), N("[\"\\e\"]"), N("[\"\\ \"]"), N("[\"\\\n\"]"), N("[\"\\u\"]"),
    N("[\"\\u1\"]"), N("[\"\\u12\"]"), N("[\"\\u123\"]"), N("[\"\\u123G\"]"), N("[\"\\uG123\"]"),
    N("[\"\\u 123\"]"), N("[\"\\u-123\"]"), N("[\"\\u+123\"]"), N("[\"\\u0x12\"]"), N("[\"\\\"]"),
    N("[\"\\"), N("[\"abc"), N("[\"abc\\\"]"), N("[\"\\u00\""), N("[\"\\u0000\"]"),
    N("[\"a\\u0000\"]"), N("[\"\\uD800\"]"), N("[\"\\uDBFF\"]"), N("[\"\\uDC00\"]"),
    N("[\"\\uDFFF\"]"), N("[\"\\uDFAA\"]"), N("[\"\\uD800\\u0041\"]"), N("[\"\\uD800\\uD800\"]"),
    N("[\"\\uD800\\uDBFF\"]"), N("[\"\\uD800x\"]"), N("[\"\\uD800\\\"]"), N("[\"\\uD800\\n\"]"),
    N("[\"\\uDC00\\uD800\"]"), N("[\"\\uD800\\u\"]"), N("[\"\\uD800\\uDC0\"]"),
    N("[\"\\uD800\\uDC0G\"]"), N("[\"\\uD800\\\\uDC00\"]"), N("[\"\\uD800\\u0000\"]"),
    N("[\"\\uD800\\uE000\"]"), N("[\"\\uD800"), N("[\"\\uD800\\uDC00"), N("\"\\uDC00\""),
    /* invalid UTF-8 in strings */
    N("[\"\xc0\x80\"]"), N("[\"\xc1\xbf\"]"), N("[\"\xc0\xaf\"]"), N("[\"\xe0\x80\x80\"]"),
    N("[\"\xe0\x9f\xbf\"]"), N("[\"\xed\xa0\x80\"]"), N("[\"\xed\xbf\xbf\"]"),
    N("[\"\xed\xa0\xbd\xed\xb8\x80\"]"), N("[\"\xf0\x80\x80\x80\"]"), N("[\"\xf0\x8f\xbf\xbf\"]"),
    N("[\"\xf4\x90\x80\x80\"]"), N("[\"\xf5\x80\x80\x80\"]"), N("[\"\xf7\xbf\xbf\xbf\"]"),
    N("[\"\xf8\x88\x80\x80\x80\"]"), N("[\"\xfc\x84\x80\x80\x80\x80\"]"), N("[\"\x80\"]"),
    N("[\"\xbf\"]"), N("[\"a\x80z\"]"), N("[\"\xe2\x82\"]"), N("[\"\xf0\x9f\x98\"]"),
    N("[\"\xc2\"]"), N("[\"\xc2" "A\"]"), N("[\"\xe2\x28\xa1\"]"), N("[\"\xe2\x82\x28\"]"),
    N("[\"\xf0\x28\x8c\xbc\"]"), N("[\"\xf0\x90\x28\xbc\"]"), N("[\"\xfe\"]"), N("[\"\xff\"]"),
    N("[\"\xc3\xa9\xa9\"]"), N("[\"\xe9\"]"), N("[\"\xc3"), N("[\"\xf0\x9f\x98"),
    N("[\"\xc3\xc3\xa9\"]"),
    /* invalid UTF-8 or stray bytes outside strings */
    N("[\xff]"), N("[1]\xff"), N("\xc3\xa9"), N("[\xc3\xa9]"), N("[1\x80]"), N("\x80"),
    /* ---- keys and duplicates ---- */
    Y("{\"a\":1,\"b\":2}"), Y("{\"a\":1,\"A\":1}"), Y("{\"\xc3\xa9\":1,\"e\xcc\x81\":1}"),
    Y("{\"a\":{\"a\":1},\"b\":{\"a\":1}}"), Y("{\"a\":[{\"a\":1,\"b\":2},{\"a\":3}]}"),
    Y("{\"\":1,\" \":2}"), Y("{\"a\\\\u0000\":1}"), Y("{\"ab\":1,\"a\":2,\"b\":3}"),
    Y("{\"\\uD83D\\uDE00\":1,\"\\uD83D\\uDE01\":2}"), N("{\"a\":1,\"a\":2}"),
    N("{\"a\":1,\"a\":1}"), N("{\"a\":null,\"a\":null}"), N("{\"a\":1,\"\\u0061\":2}"),
    N("{\"\\u0061\":1,\"a\":2}"), N("{\"\\u0061\":1,\"\\u0061\":2}"), N("{\"\":1,\"\":2}"),
    N("{\"\xc3\xa9\":1,\"\\u00e9\":2}"), N("{\"\\u00E9\":1,\"\\u00e9\":2}"),
    N("{\"\xf0\x9f\x98\x80\":1,\"\\ud83d\\ude00\":2}"), N("{\"a/\":1,\"a\\/\":2}"),
    N("{\"a\\n\":1,\"a\\u000a\":2}"), N("{\"\\\"\":1,\"\\u0022\":2}"),
    N("{\"a\":{\"b\":1,\"b\":2}}"), N("[{\"a\":1,\"a\":1}]"), N("{\"a\":1,\"b\":2,\"a\":3}"),
    N("{\"x\":[1,{\"k\":[],\"k\":{}}]}"), N("{\"a\":1,\"b\":{\"c\":1},\"a\":{}}"),
    N("{\"a\":1,\"a\":}"), N("{\"a\" :1, \"a\" :2 ,}"),
    /* ---- raw NUL (mudbus refuses each; jansson accepts some) ---- */
    Z("\0"), Z("\0" "1"), Z("1\0"), Z("-1\0"), Z("1.5\0"), Z("1e5\0"), Z("0\0"), Z("true\0"),
    Z("false\0"), Z("null\0"), Z("[1\0]"), Z("[true\0]"), Z("[null\0,1]"), Z("[1\0,2]"),
    Z("{\"a\":1\0}"), Z("{\"a\":false\0}"), Z("[\0]"), Z("[\"a\0\"]"), Z("1 \0"), Z("[1 \0]"),
    Z("[1\0\0]"), Z("\"\0\""), Z("{\"\0\":1}"), Z("[]\0"), Z("{}\0"), Z("\"a\"\0"), Z("[-\0" "1]"),
    Z("[1.\0" "5]"), Z("[1e\0" "5]"),
};
/* clang-format on */

static void test_table(void **state)
{
    (void)state;
    size_t n = sizeof CASES / sizeof CASES[0];
    for (size_t i = 0; i < n; i++)
        compare_at(CASES[i].line, CASES[i].expect, CASES[i].text, CASES[i].len);
    /* Every case once more with surrounding whitespace, and inside an array
     * and an object: the verdict must not depend on the position. */
    static char buf[256];
    for (size_t i = 0; i < n; i++) {
        const tcase *c = &CASES[i];
        if (c->len + 16 > sizeof buf)
            continue;
        char e = c->expect;
        buf[0] = ' ';
        memcpy(buf + 1, c->text, c->len);
        buf[c->len + 1] = '\n';
        compare_at(c->line, e == 'y' && c->len == 0 ? 'n' : e, buf, c->len + 2);
        memcpy(buf, "[0,", 3);
        memcpy(buf + 3, c->text, c->len);
        memcpy(buf + 3 + c->len, ",0]", 3);
        compare_at(c->line, e == 'z' ? 'z' : 'i', buf, c->len + 6);
        memcpy(buf, "{\"k\":", 5);
        memcpy(buf + 5, c->text, c->len);
        buf[5 + c->len] = '}';
        compare_at(c->line, e == 'z' ? 'z' : 'i', buf, c->len + 6);
    }
    finish();
}

static void test_truncations(void **state)
{
    (void)state;
    /* Every proper prefix of a document whose last byte closes it is refused
     * (a prefix may be a complete number: compare those with jansson). */
    static const char *const docs[] = {
        "{\"message_id\":\"m\",\"n\":[1,-2.5e3,true,false,null],\"s\":"
        "\"\\u00e9\\ud83d\\ude00\xc3\xa9\"}",
        "[\"\xf0\x9f\x98\x80\",{\"a\":{}},[],\"\\\\\"]",
        "\"\\uD834\\uDD1E\"",
    };
    for (size_t d = 0; d < sizeof docs / sizeof docs[0]; d++) {
        size_t n = strlen(docs[d]);
        compare_at(__LINE__, 'y', docs[d], n);
        for (size_t i = 0; i < n; i++)
            compare_at(__LINE__, 'n', docs[d], i);
    }
    static const char *const nums[] = {"-12.5e+10", "123456", "true", "null"};
    for (size_t d = 0; d < sizeof nums / sizeof nums[0]; d++)
        for (size_t i = 0; i <= strlen(nums[d]); i++)
            compare_at(__LINE__, 'i', nums[d], i);
    finish();
}

/* n nested containers: open^n inner close^n. */
static char *nest(const char *open, const char *close, const char *inner, size_t n, size_t *len)
{
    size_t ol = strlen(open), cl = strlen(close), il = strlen(inner);
    char *b = malloc(n * (ol + cl) + il + 1);
    assert_non_null(b);
    size_t k = 0;
    for (size_t i = 0; i < n; i++, k += ol)
        memcpy(b + k, open, ol);
    memcpy(b + k, inner, il);
    k += il;
    for (size_t i = 0; i < n; i++, k += cl)
        memcpy(b + k, close, cl);
    b[k] = '\0';
    *len = k;
    return b;
}

static void test_depth(void **state)
{
    (void)state;
    /* jansson counts the depth of every value, scalars included: 2048 nested
     * empty arrays pass, 2048 arrays around a scalar do not. Check that this
     * is what jansson does, and that mudbus agrees at and around it. */
    static const struct {
        const char *open, *close, *inner;
    } shapes[] = {{"[", "]", ""},         {"[", "]", "1"},         {"[", "]", "{}"},
                  {"[", "]", "\"s\""},    {"{\"a\":", "}", "{}"},  {"{\"a\":", "}", "1"},
                  {"{\"a\":", "}", "[]"}, {"[{\"a\":", "}]", "0"}, {"[1,", "]", "[]"}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        for (size_t n = 1020; n <= 2052; n++) {
            if (n == 1030)
                n = 2040;
            size_t len;
            char *b = nest(shapes[s].open, shapes[s].close, shapes[s].inner, n, &len);
            compare_at(__LINE__, 'i', b, len);
            free(b);
        }
    }
    size_t len;
    char *b = nest("[", "]", "", 2048, &len);
    assert_true(mbref_json_accepts(b, len));
    assert_int_equal(mb__json_check(b, len, NULL), MB_OK);
    free(b);
    b = nest("[", "]", "", 2049, &len);
    assert_false(mbref_json_accepts(b, len));
    assert_int_equal(mb__json_check(b, len, NULL), MB_EJSON);
    free(b);
    b = nest("[", "]", "1", 2048, &len);
    assert_false(mbref_json_accepts(b, len));
    assert_int_equal(mb__json_check(b, len, NULL), MB_EJSON);
    free(b);
    b = nest("[", "]", "1", 2047, &len);
    assert_true(mbref_json_accepts(b, len));
    assert_int_equal(mb__json_check(b, len, NULL), MB_OK);
    free(b);
    /* Hostile depth: refused without exhausting the stack. */
    b = nest("[", "", "", 1000000, &len);
    assert_int_equal(mb__json_check(b, len, NULL), MB_EJSON);
    free(b);
    b = nest("{\"a\":", "}", "1", 300000, &len);
    assert_int_equal(mb__json_check(b, len, NULL), MB_EJSON);
    free(b);
    /* Wide but shallow. */
    char *wide = malloc(150004);
    assert_non_null(wide);
    wide[0] = '[';
    for (size_t i = 0; i < 50000; i++)
        memcpy(wide + 1 + 3 * i, "[],", 3);
    memcpy(wide + 150001, "[]]", 3);
    compare_at(__LINE__, 'y', wide, 150004);
    free(wide);
    finish();
}

static void test_big_objects(void **state)
{
    (void)state;
    size_t cap = 10000 * 24 + 64;
    char *b = malloc(cap);
    assert_non_null(b);
    size_t k = 0;
    b[k++] = '{';
    for (int i = 0; i < 10000; i++)
        k += (size_t)snprintf(b + k, cap - k, "%s\"key%d\":%d", i ? "," : "", i, i);
    size_t body = k;
    memcpy(b + k, "}", 2);
    compare_at(__LINE__, 'y', b, k + 1);
    /* One duplicate at the end, plain and escaped. */
    k = body + (size_t)snprintf(b + body, cap - body, ",\"key0\":0}");
    compare_at(__LINE__, 'n', b, k);
    mb_err err;
    mb_err_clear(&err);
    assert_int_equal(mb__json_check(b, k, &err), MB_EJSON);
    assert_non_null(strstr(err.msg, "duplicate"));
    k = body + (size_t)snprintf(b + body, cap - body, ",\"key\\u0039999\":0}");
    compare_at(__LINE__, 'n', b, k);
    k = body + (size_t)snprintf(b + body, cap - body, ",\"key10000\":0}");
    compare_at(__LINE__, 'y', b, k);
    /* Keys that differ only late, and many objects each with the same keys. */
    k = 0;
    b[k++] = '[';
    for (int i = 0; i < 3000; i++)
        k += (size_t)snprintf(b + k, cap - k, "%s{\"a\":1,\"b\":2,\"c\":3}", i ? "," : "");
    b[k++] = ']';
    compare_at(__LINE__, 'y', b, k);
    memcpy(b + k - 1, ",{\"a\":1,\"a\":2}]", 16);
    compare_at(__LINE__, 'n', b, k + 15);
    free(b);
    /* 10,000 keys sharing a long prefix. */
    cap = 10000 * 140 + 64;
    b = malloc(cap);
    assert_non_null(b);
    k = 0;
    b[k++] = '{';
    for (int i = 0; i < 10000; i++)
        k += (size_t)snprintf(b + k, cap - k, "%s\"%0120d\":null", i ? "," : "", i);
    b[k++] = '}';
    compare_at(__LINE__, 'y', b, k);
    k--;
    k += (size_t)snprintf(b + k, cap - k, ",\"%0120d\":null}", 5000);
    compare_at(__LINE__, 'n', b, k);
    free(b);
    finish();
}

/* ---- strings: scanning, decoding, measuring ---- */

static int is_token_byte(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-';
}

/* Facts about decoded UTF-8, computed independently of the scanner. */
static void facts(const char *s, size_t n, size_t *chars, unsigned *flags)
{
    size_t c = 0;
    unsigned f = 0;
    for (size_t i = 0; i < n;) {
        unsigned char b = (unsigned char)s[i];
        size_t l = b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4;
        uint32_t cp = l == 1 ? b : l == 2 ? (b & 0x1Fu) : l == 3 ? (b & 0x0Fu) : (b & 0x07u);
        for (size_t k = 1; k < l; k++)
            cp = (cp << 6) | ((unsigned char)s[i + k] & 0x3Fu);
        if (!(l == 1 && is_token_byte(b)))
            f |= MB__JSTR_NONTOKEN;
        if (cp == '\n' || cp == '\t')
            f |= MB__JSTR_NLTAB;
        else if (cp <= 0x1F || (cp >= 0x7F && cp <= 0x9F))
            f |= MB__JSTR_CTRL;
        c++;
        i += l;
    }
    *chars = c;
    *flags = f;
}

static const char *const STRINGS[] = {
    "",
    "abc",
    "Az09_-",
    "a.b",
    "a\\\"b",
    "\\\\",
    "\\/",
    "\\b\\f\\n\\r\\t",
    "\\n",
    "tab\\there",
    "\\u0041",
    "\\u00e9",
    "\\u00E9\\u20ac",
    "\\uD83D\\uDE00",
    "\\udbff\\udfff",
    "\\u0001\\u007f\\u0085\\u009f\\u00a0",
    "caf\xc3\xa9",
    "\xf0\x9f\x98\x80 \xe2\x82\xac \xc2\xa0 \xf4\x8f\xbf\xbf",
    "a\\u00e9b\xf0\x9f\x98\x80\\n",
    "\x7f",
    "\xc2\x85",
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_-0123456789",
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_-0123456789.",
    "\\u0030123456789abcdefghijklmnopqrstuvwxyz",
    "long plain ASCII text with spaces, punctuation! and more than sixteen bytes",
    "0123456789abcdef\xc3\xa9",
    "0123456789abcde\x7f",
    "0123456789abcdef0123456789abcdef\\t",
};

/* Scan `"body"` with the scanner; compare its facts and decoding with
 * jansson's decoded string. */
static void check_string(int line, const char *body)
{
    size_t bl = strlen(body);
    char *doc = malloc(bl + 2);
    assert_non_null(doc);
    doc[0] = '"';
    memcpy(doc + 1, body, bl);
    doc[bl + 1] = '"';
    json_error_t jerr;
    json_t *j = json_loadb(doc, bl + 2, JSON_DECODE_ANY, &jerr);
    assert_non_null(j);
    const char *want = json_string_value(j);
    size_t wl = json_string_length(j);
    size_t want_chars;
    unsigned want_flags;
    facts(want, wl, &want_chars, &want_flags);
    if (strchr(body, '\\') != NULL)
        want_flags |= MB__JSTR_ESCAPED;

    mb_err err;
    mb_err_clear(&err);
    mb__json_scan sc;
    mb__json_scan_init(&sc, doc, bl + 2, 0, &err);
    mb__json_str s;
    memset(&s, 0, sizeof s);
    mb_status st = mb__json_string(&sc, &s);
    int bad = 0;
    if (st != MB_OK || (const char *)sc.p != doc + bl + 2) {
        fprintf(stderr, "line %d: mb__json_string = %s (%s)\n", line, mb_status_name(st), err.msg);
        bad = 1;
    } else {
        if (s.raw != doc + 1 || s.raw_len != bl || s.bytes != wl || s.chars != want_chars ||
            (s.flags & ~(unsigned)MB__JSTR_PLAIN) != want_flags) {
            fprintf(stderr,
                    "line %d: facts raw_len %zu/%zu bytes %zu/%zu chars %zu/%zu flags %x/%x\n",
                    line, s.raw_len, bl, s.bytes, wl, s.chars, want_chars, s.flags, want_flags);
            bad = 1;
        }
        /* Decode with exactly enough room, then one byte less; canaries
         * catch writes past cap. */
        char *out = malloc(wl + 8);
        assert_non_null(out);
        memset(out, 0xAA, wl + 8);
        size_t got = mb__json_decode(&s, out, wl);
        if (got != wl || memcmp(out, want, wl) != 0 || (unsigned char)out[wl] != 0xAA) {
            fprintf(stderr, "line %d: mb__json_decode returned %zu, want %zu\n", line, got, wl);
            bad = 1;
        }
        if (wl > 0) {
            memset(out, 0xAA, wl + 8);
            got = mb__json_decode(&s, out, wl - 1);
            if (got != (size_t)-1 || (unsigned char)out[wl - 1] != 0xAA) {
                fprintf(stderr, "line %d: decode into %zu bytes returned %zu\n", line, wl - 1, got);
                bad = 1;
            }
        }
        /* Walking code points gives the same text. */
        const char *pos = s.raw;
        size_t ncp = 0;
        while (pos < s.raw + s.raw_len && ncp <= bl) {
            mb__json_next_cp(&s, &pos);
            ncp++;
        }
        if (ncp != want_chars) {
            fprintf(stderr, "line %d: mb__json_next_cp walked %zu code points, want %zu\n", line,
                    ncp, want_chars);
            bad = 1;
        }
        /* The decoded text, measured as plain UTF-8, has the same facts. */
        mb__json_str m;
        size_t bad_at = 0;
        if (mb__json_measure(want, wl, &m, &bad_at) != MB_OK || m.bytes != wl ||
            m.chars != want_chars ||
            (m.flags & ~(unsigned)(MB__JSTR_PLAIN | MB__JSTR_ESCAPED)) !=
                (want_flags & ~(unsigned)MB__JSTR_ESCAPED)) {
            fprintf(stderr, "line %d: mb__json_measure disagrees\n", line);
            bad = 1;
        }
        free(out);
    }
    mb__json_scan_fini(&sc);
    json_decref(j);
    if (bad) {
        dump(doc, bl + 2);
        g_fail++;
    }
    free(doc);
}

static void test_strings(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof STRINGS / sizeof STRINGS[0]; i++)
        check_string(__LINE__, STRINGS[i]);
    /* Long strings across the 16-byte fast path, with the special byte at
     * every offset. */
    char body[200];
    static const char *const specials[] = {"\\n", "\xc3\xa9", "\x7f", ".", "\\u00e9", "\\\""};
    for (size_t sp = 0; sp < sizeof specials / sizeof specials[0]; sp++) {
        for (size_t off = 0; off < 40; off++) {
            memset(body, 'x', off);
            size_t l = strlen(specials[sp]);
            memcpy(body + off, specials[sp], l);
            memset(body + off + l, 'y', 40);
            body[off + l + 40] = '\0';
            check_string(__LINE__, body);
        }
    }
    /* 1000 escaped characters. */
    static char big[7000];
    for (size_t i = 0; i < 1000; i++)
        memcpy(big + 6 * i, "\\u00e9", 6);
    big[6000] = '\0';
    check_string(__LINE__, big);
    /* Measure refuses invalid UTF-8 and says where. */
    mb__json_str m;
    size_t bad_at = 99;
    assert_int_equal(mb__json_measure("ab\xc0\x80", 4, &m, &bad_at), MB_EINVAL);
    assert_int_equal(bad_at, 2);
    assert_int_equal(mb__json_measure("\xed\xa0\x80", 3, &m, &bad_at), MB_EINVAL);
    assert_int_equal(mb__json_measure("\xf4\x90\x80\x80", 4, &m, &bad_at), MB_EINVAL);
    assert_int_equal(mb__json_measure("x\xe2\x82", 3, &m, &bad_at), MB_EINVAL);
    assert_int_equal(bad_at, 1);
    finish();
}

static void test_error_messages(void **state)
{
    (void)state;
    mb_err err;
    mb_err_clear(&err);
    assert_int_equal(mb__json_check("[1,]", 4, &err), MB_EJSON);
    assert_non_null(strstr(err.msg, "byte 3"));
    mb_err_clear(&err);
    assert_int_equal(mb__json_check("{\"a\":1,\"a\":2}", 13, &err), MB_EJSON);
    assert_non_null(strstr(err.msg, "duplicate"));
    mb_err_clear(&err);
    assert_int_equal(mb__json_check("[\"\\uD800\"]", 10, &err), MB_EJSON);
    assert_non_null(strstr(err.msg, "surrogate"));
    /* NULL err is allowed. */
    assert_int_equal(mb__json_check("[", 1, NULL), MB_EJSON);
    assert_int_equal(mb__json_check("[]", 2, NULL), MB_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_table, reset),
        cmocka_unit_test_setup(test_truncations, reset),
        cmocka_unit_test_setup(test_depth, reset),
        cmocka_unit_test_setup(test_big_objects, reset),
        cmocka_unit_test_setup(test_strings, reset),
        cmocka_unit_test_setup(test_error_messages, reset),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
