/* SPDX-License-Identifier: MIT */
/*
 * status: the one status enum of libmudbus and the per-call error detail.
 *
 * Every fallible libmudbus call returns an mb_status; MB_OK is zero and every
 * failure is non-zero. The list is generated from one X-macro table, which also
 * yields mb_status_name() ("MB_EINVAL") and mb_status_str() (a sentence), so the
 * three can never drift apart.
 *
 * Per-call detail goes into an optional mb_err that the caller owns (NULL is
 * allowed everywhere). The first error recorded wins: a low-level function that
 * says exactly what was wrong is not overwritten by the caller's vaguer
 * wrapper. There is no thread-local error state.
 *
 * Threads: all functions here may be called from any thread; an mb_err is owned
 * by the caller and must not be shared between concurrent calls.
 */
#ifndef MUDBUS_STATUS_H
#define MUDBUS_STATUS_H

#include <stdarg.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* X(NAME, "message") for every status. The order fixes the numeric values:
 * append new statuses at the end so that values stay stable across releases. */
#define MB_STATUS_MAP(X)                                                                           \
    X(MB_OK, "success")                                                                            \
    X(MB_EINVAL, "invalid argument")                                                               \
    X(MB_ENOMEM, "out of memory")                                                                  \
    X(MB_ENOTFOUND, "not found")                                                                   \
    X(MB_EEXIST, "already exists")                                                                 \
    X(MB_ENOSPC, "output buffer too small")                                                        \
    X(MB_ETOOBIG, "payload too large")                                                             \
    X(MB_ESUBJECT, "invalid subject")                                                              \
    X(MB_EPATTERN, "invalid subject pattern")                                                      \
    X(MB_EJSON, "malformed JSON")                                                                  \
    X(MB_ESCHEMA, "message does not match its schema")                                             \
    X(MB_ETIMEOUT, "timed out")                                                                    \
    X(MB_ENOCONN, "not connected")                                                                 \
    X(MB_ENORESPONDERS, "no responders")                                                           \
    X(MB_EAUTH, "authentication or authorization failed")                                          \
    X(MB_ETLS, "TLS failure")                                                                      \
    X(MB_EBREAKER, "circuit breaker is open")                                                      \
    X(MB_EBUDGET, "retry budget exhausted")                                                        \
    X(MB_EAGAIN, "would block")                                                                    \
    X(MB_ESTATE, "invalid state for this operation")                                               \
    X(MB_ECLOSED, "closed")                                                                        \
    X(MB_EIO, "input/output error")                                                                \
    X(MB_ECORRUPT, "corrupt data")                                                                 \
    X(MB_EUNSUPPORTED, "not supported")                                                            \
    X(MB_EINTERNAL, "internal error")                                                              \
    X(MB_ELIMIT, "limit reached")

typedef enum mb_status {
#define MB__STATUS_ENUM(name, msg) name,
    MB_STATUS_MAP(MB__STATUS_ENUM)
#undef MB__STATUS_ENUM
        MB__STATUS_COUNT
} mb_status;

/* The symbolic name of a status ("MB_EINVAL"); "MB_UNKNOWN" for a value outside
 * the table. Never NULL; the string is static. */
const char *mb_status_name(mb_status st);

/* A short lower-case sentence describing a status ("invalid argument");
 * "unknown status" for a value outside the table. Never NULL; static. */
const char *mb_status_str(mb_status st);

/* Per-call error detail, owned by the caller. Zero-initialise it (or call
 * mb_err_clear) before use. `msg` is one line without a newline. */
#define MB_ERR_MSG_MAX 256
typedef struct mb_err {
    mb_status code;           /* MB_OK while nothing was recorded */
    char msg[MB_ERR_MSG_MAX]; /* "" while nothing was recorded */
} mb_err;

/* Reset an mb_err to "nothing recorded". NULL does nothing. */
void mb_err_clear(mb_err *err);

/* Record `code` and a printf-style message in `err` unless it already holds an
 * error (first error wins). NULL `err` does nothing. Returns `code`, so that a
 * failing function can `return mb_err_set(err, MB_EINVAL, "...")`. Newlines in
 * the formatted text are replaced by spaces; overlong text is truncated. */
mb_status mb_err_set(mb_err *err, mb_status code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* As mb_err_set with a va_list. */
mb_status mb_err_vset(mb_err *err, mb_status code, const char *fmt, va_list ap)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 0)))
#endif
    ;

#ifdef __cplusplus
}
#endif
#endif
