/* SPDX-License-Identifier: MIT */
/*
 * status: names and messages of mb_status, generated from MB_STATUS_MAP, and the
 * first-error-wins recording of per-call detail into a caller's mb_err.
 */
#include "mudbus/status.h"

#include <stdio.h>
#include <string.h>

static const char *const status_names[] = {
#define X(name, msg) #name,
    MB_STATUS_MAP(X)
#undef X
};

static const char *const status_msgs[] = {
#define X(name, msg) msg,
    MB_STATUS_MAP(X)
#undef X
};

const char *mb_status_name(mb_status st)
{
    if ((unsigned)st >= (unsigned)MB__STATUS_COUNT)
        return "MB_UNKNOWN";
    return status_names[st];
}

const char *mb_status_str(mb_status st)
{
    if ((unsigned)st >= (unsigned)MB__STATUS_COUNT)
        return "unknown status";
    return status_msgs[st];
}

void mb_err_clear(mb_err *err)
{
    if (err == NULL)
        return;
    err->code = MB_OK;
    err->msg[0] = '\0';
}

mb_status mb_err_vset(mb_err *err, mb_status code, const char *fmt, va_list ap)
{
    if (err == NULL || err->code != MB_OK || code == MB_OK)
        return code;
    err->code = code;
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    for (char *p = err->msg; *p != '\0'; p++) {
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    }
    return code;
}

mb_status mb_err_set(mb_err *err, mb_status code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    code = mb_err_vset(err, code, fmt, ap);
    va_end(ap);
    return code;
}
