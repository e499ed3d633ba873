/* SPDX-License-Identifier: MIT */
/*
 * metrics_int: what the library's own modules need from the metrics registry
 * beyond the public API. Internal to the library.
 */
#ifndef MUDBUS_METRICS_INT_H
#define MUDBUS_METRICS_INT_H

#include <stdbool.h>
#include <stddef.h>

#include "mudbus/metrics.h"

/* Whether `s` is 1..max bytes of [A-Za-z0-9_.:-]: a name that modules put
 * unescaped into a label value (name="..."). */
bool mb__metrics_label_value_ok(const char *s, size_t max);

/* Take back one metric that this caller registered (a counter, gauge or
 * histogram pointer from mb_metrics_*), so that a constructor that fails part
 * way leaves the registry as it found it and can be retried without
 * MB_EEXIST. The pointer is invalid afterwards. NULL m or metric, or a metric
 * the registry does not hold, does nothing. Never allocates. Thread-safe like
 * registration; no other thread may be using the metric. */
void mb__metrics_forget(mb_metrics *m, const void *metric);

#endif
