/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for status: the names and messages generated from MB_STATUS_MAP,
 * the fallbacks for values outside the table, and the first-error-wins
 * recording of per-call detail into a caller-owned mb_err (NULL allowed,
 * one line, truncated but always NUL-terminated).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "mudbus/status.h"

/* The table again, expanded here so that every check below compares the
 * library against the X-macro itself rather than against a hand copy. */
static const struct {
    mb_status code;
    const char *name;
    const char *msg;
} table[] = {
#define X(name, msg) {name, #name, msg},
    MB_STATUS_MAP(X)
#undef X
};

#define TABLE_LEN (sizeof table / sizeof table[0])

static void test_ok_is_zero_and_first(void **state)
{
    (void)state;
    assert_int_equal(MB_OK, 0);
    assert_int_equal(table[0].code, MB_OK);
    assert_int_equal(TABLE_LEN, (size_t)MB__STATUS_COUNT);
    assert_string_equal(mb_status_name(MB_OK), "MB_OK");
    assert_string_equal(mb_status_str(MB_OK), "success");
}

static void test_every_status_has_its_table_name_and_message(void **state)
{
    (void)state;
    for (size_t i = 0; i < TABLE_LEN; i++) {
        /* The order of the table fixes the numeric values. */
        assert_int_equal((int)table[i].code, (int)i);
        const char *name = mb_status_name(table[i].code);
        const char *msg = mb_status_str(table[i].code);
        assert_non_null(name);
        assert_non_null(msg);
        assert_string_equal(name, table[i].name);
        assert_string_equal(msg, table[i].msg);
        assert_true(strlen(msg) > 0);
        assert_int_equal(strncmp(name, "MB_", 3), 0);
        assert_true(strlen(name) > 3);
    }
}

static void test_names_and_messages_are_distinct(void **state)
{
    (void)state;
    for (size_t i = 0; i < TABLE_LEN; i++) {
        for (size_t j = i + 1; j < TABLE_LEN; j++) {
            assert_string_not_equal(mb_status_name(table[i].code), mb_status_name(table[j].code));
            assert_string_not_equal(mb_status_str(table[i].code), mb_status_str(table[j].code));
        }
    }
}

static void test_out_of_range_is_unknown(void **state)
{
    (void)state;
    const mb_status bad[] = {MB__STATUS_COUNT, (mb_status)(MB__STATUS_COUNT + 1), (mb_status)1000,
                             (mb_status)-1};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_string_equal(mb_status_name(bad[i]), "MB_UNKNOWN");
        assert_string_equal(mb_status_str(bad[i]), "unknown status");
    }
    /* The last real status is still known. */
    assert_string_equal(mb_status_name((mb_status)(MB__STATUS_COUNT - 1)),
                        table[TABLE_LEN - 1].name);
}

static void test_err_set_records_code_and_message(void **state)
{
    (void)state;
    mb_err err = {0};
    mb_status st = mb_err_set(&err, MB_EINVAL, "bad %s at %d", "field", 7);
    assert_int_equal(st, MB_EINVAL);
    assert_int_equal(err.code, MB_EINVAL);
    assert_string_equal(err.msg, "bad field at 7");
}

static void test_err_set_returns_code_even_when_not_recorded(void **state)
{
    (void)state;
    mb_err err = {0};
    assert_int_equal(mb_err_set(&err, MB_ENOMEM, "first"), MB_ENOMEM);
    /* Already holds an error: nothing recorded, yet the code comes back. */
    assert_int_equal(mb_err_set(&err, MB_ETIMEOUT, "second"), MB_ETIMEOUT);
    assert_int_equal(mb_err_set(NULL, MB_EIO, "no err"), MB_EIO);
    assert_int_equal(mb_err_set(&err, MB_OK, "ok"), MB_OK);
}

static void test_first_error_wins(void **state)
{
    (void)state;
    mb_err err = {0};
    mb_err_set(&err, MB_ESUBJECT, "subject: empty token at 3");
    mb_err_set(&err, MB_EINVAL, "publish failed");
    mb_err_set(&err, MB_EINTERNAL, "%s", "even later");
    assert_int_equal(err.code, MB_ESUBJECT);
    assert_string_equal(err.msg, "subject: empty token at 3");
}

static void test_clear_allows_a_new_error(void **state)
{
    (void)state;
    mb_err err = {0};
    mb_err_set(&err, MB_EIO, "disk");
    mb_err_clear(&err);
    assert_int_equal(err.code, MB_OK);
    assert_string_equal(err.msg, "");
    mb_err_set(&err, MB_ECLOSED, "closed now");
    assert_int_equal(err.code, MB_ECLOSED);
    assert_string_equal(err.msg, "closed now");
    mb_err_clear(NULL); /* must not crash */
}

static void test_null_err_is_fine(void **state)
{
    (void)state;
    assert_int_equal(mb_err_set(NULL, MB_EINVAL, "x=%d", 1), MB_EINVAL);
    assert_int_equal(mb_err_set(NULL, MB_OK, "nothing"), MB_OK);
}

static void test_ok_code_records_nothing(void **state)
{
    (void)state;
    mb_err err = {0};
    assert_int_equal(mb_err_set(&err, MB_OK, "looks fine"), MB_OK);
    assert_int_equal(err.code, MB_OK);
    assert_string_equal(err.msg, "");
    /* Since nothing was recorded, a later real error still gets in. */
    mb_err_set(&err, MB_EAUTH, "denied");
    assert_int_equal(err.code, MB_EAUTH);
    assert_string_equal(err.msg, "denied");
}

static void test_newlines_are_replaced(void **state)
{
    (void)state;
    mb_err err = {0};
    mb_err_set(&err, MB_EJSON, "line one\nline two\r\nthree %s", "a\nb");
    assert_int_equal(err.code, MB_EJSON);
    assert_null(strchr(err.msg, '\n'));
    assert_null(strchr(err.msg, '\r'));
    assert_string_equal(err.msg, "line one line two  three a b");
}

static void test_long_message_truncated_and_terminated(void **state)
{
    (void)state;
    char big[3 * MB_ERR_MSG_MAX];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    /* A newline past the cut must not matter; one before it must be replaced. */
    big[10] = '\n';

    mb_err err;
    memset(&err, 0x5a, sizeof err); /* garbage beyond what clear resets */
    mb_err_clear(&err);
    assert_int_equal(mb_err_set(&err, MB_ETOOBIG, "%s", big), MB_ETOOBIG);
    assert_int_equal(err.code, MB_ETOOBIG);
    const char *nul = memchr(err.msg, '\0', sizeof err.msg);
    assert_non_null(nul); /* NUL inside the buffer */
    size_t n = (size_t)(nul - err.msg);
    assert_int_equal(n, MB_ERR_MSG_MAX - 1);
    assert_int_equal(err.msg[10], ' ');
    for (size_t i = 0; i < n; i++) {
        if (i != 10)
            assert_int_equal(err.msg[i], 'x');
    }
}

static mb_status call_vset(mb_err *err, mb_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static mb_status call_vset(mb_err *err, mb_status code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    mb_status st = mb_err_vset(err, code, fmt, ap);
    va_end(ap);
    return st;
}

static void test_vset_behaves_like_set(void **state)
{
    (void)state;
    mb_err err = {0};
    assert_int_equal(call_vset(&err, MB_ENOTFOUND, "no %s #%u", "stream", 4u), MB_ENOTFOUND);
    assert_int_equal(err.code, MB_ENOTFOUND);
    assert_string_equal(err.msg, "no stream #4");
    assert_int_equal(call_vset(&err, MB_EIO, "later"), MB_EIO);
    assert_string_equal(err.msg, "no stream #4");
    assert_int_equal(call_vset(NULL, MB_EIO, "null"), MB_EIO);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ok_is_zero_and_first),
        cmocka_unit_test(test_every_status_has_its_table_name_and_message),
        cmocka_unit_test(test_names_and_messages_are_distinct),
        cmocka_unit_test(test_out_of_range_is_unknown),
        cmocka_unit_test(test_err_set_records_code_and_message),
        cmocka_unit_test(test_err_set_returns_code_even_when_not_recorded),
        cmocka_unit_test(test_first_error_wins),
        cmocka_unit_test(test_clear_allows_a_new_error),
        cmocka_unit_test(test_null_err_is_fine),
        cmocka_unit_test(test_ok_code_records_nothing),
        cmocka_unit_test(test_newlines_are_replaced),
        cmocka_unit_test(test_long_message_truncated_and_terminated),
        cmocka_unit_test(test_vset_behaves_like_set),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
