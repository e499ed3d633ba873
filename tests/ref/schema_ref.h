/* SPDX-License-Identifier: MIT */
/*
 * schema_ref: a reference implementation of the mudbus chat and event schema
 * rules (PROTOCOL.md section 2, as specified in include/mudbus/schema.h) on
 * jansson. It is deliberately simple and slow: parse with jansson, then check
 * the tree. It serves as the oracle of the differential fuzz targets and unit
 * tests, and as the baseline of bench/bench_schema.c.
 */
#ifndef MUDBUS_SCHEMA_REF_H
#define MUDBUS_SCHEMA_REF_H

#include <stddef.h>

#include "mudbus/schema.h"

/* 1 when json_loadb(buf, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY)
 * accepts the bytes, else 0. */
int mbref_json_accepts(const char *buf, size_t len);

/* Validate with jansson plus tree checks, with the same contract as
 * mb_schema_validate: MB_OK, MB_ETOOBIG, MB_EJSON, MB_ESCHEMA. `msg` (may be
 * NULL) receives a one-line reason. max_bytes and max_depth 0 = defaults. */
mb_status mbref_validate(mb_schema_kind kind, const char *json, size_t len, size_t max_bytes,
                         unsigned max_depth, mb_schema_kind *detected, char *msg, size_t msgcap);

#endif
