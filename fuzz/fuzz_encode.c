/* SPDX-License-Identifier: MIT */
/*
 * fuzz_encode: fuzz target of the message encoders (mb_chat_encode,
 * mb_event_encode), checked against the jansson oracle in both directions.
 *
 * Input layout: four header bytes, then the string fields separated by 0x00.
 *   byte 0: bit 0 event (1) or chat (0); bits 1-4 channel (9..15 invalid);
 *           bits 5-7 speaker kind (4..7 invalid)
 *   byte 1: bit 0 message_id NULL (generated); bits 1-5 which optional
 *           fields are given
 *   byte 2: capacity of a second, exact-size output buffer (MB_ENOSPC path)
 *   byte 3: bit 0 event_data NULL; bit 1 timestamp_ms 0 (now)
 *   chat fields: message_id, sender_id, sender_name, content, room_id,
 *     subzone, target_id, party_id, target_name (a missing one is NULL)
 *   event fields: message_id, event_type, room_id, player_id, sender_id,
 *     sender_name, then event_data: all remaining bytes, NULs included.
 *
 * Properties:
 *  - The expected status is computed independently: the same message is built
 *    by hand as a jansson tree and checked by mbref_validate (invalid UTF-8 in
 *    a field, or a schema failure, means MB_ESCHEMA; event_data that jansson
 *    refuses or that holds a NUL means MB_EJSON; when both, either).
 *  - On MB_OK the output passes mb_schema_validate (auto and explicit kind,
 *    detected kind right) and mbref_validate, and holds exactly the given
 *    field values (event_data equal as a JSON tree).
 *  - A smaller buffer gives MB_ENOSPC with the needed length, or the same
 *    output when it fits (written into an exact-size allocation).
 *  - With a validator of max_bytes 512, the result is MB_OK exactly when the
 *    default encoding is at most 512 bytes, else MB_ETOOBIG.
 * Any violation prints the details and aborts.
 */
#include <jansson.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mudbus/schema.h"
#include "schema_ref.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FIXED_MS  1768298400123LL /* 2026-01-13T10:00:00.123Z */
#define SMALL_MAX 512u
#define OUT_CAP   (256u * 1024u)

static mb_schema *small_schema;
static char out[OUT_CAP];

static const uint8_t *g_data;
static size_t g_size;

static void print_escaped(const char *p, size_t n)
{
    fputc('"', stderr);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c == '"' || c == '\\')
            fprintf(stderr, "\\%c", c);
        else if (c >= 0x20 && c < 0x7F)
            fputc(c, stderr);
        else
            fprintf(stderr, "\\x%02X", c);
    }
    fprintf(stderr, "\" (%zu bytes)\n", n);
}

#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
static void
die(const char *doc, size_t doclen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "fuzz_encode: ");
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n  input: ");
    print_escaped((const char *)g_data, g_size);
    if (doc != NULL) {
        fprintf(stderr, "  document: ");
        print_escaped(doc, doclen);
    }
    abort();
}

/* The fixed timestamp as the encoder must write it (any RFC 3339 form of the
 * same instant is fine; this one is only used in the hand-built document). */
static const char *FIXED_TS = "2026-01-13T10:00:00.123Z";

typedef struct fields {
    int event;
    const char *s[9]; /* chat: 9 strings; event: 6 strings */
    mb_channel channel;
    mb_speaker_kind speaker;
    const char *event_data; /* exact-size copy, or NULL */
    size_t event_data_len;
    int ts_now;
} fields;

static const char *const CHAT_NAMES[9] = {"message_id", "sender_id", "sender_name",
                                          "content",    "room_id",   "subzone",
                                          "target_id",  "party_id",  "target_name"};
static const char *const EVENT_NAMES[6] = {"message_id", "event_type", "room_id",
                                           "player_id",  "sender_id",  "sender_name"};

/* Expected outcome: bit 0 MB_OK allowed, bit 1 MB_ESCHEMA, bit 2 MB_EJSON. */
enum { X_OK = 1, X_SCHEMA = 2, X_JSON = 4 };

static unsigned expected(const fields *f)
{
    const char *const *names = f->event ? EVENT_NAMES : CHAT_NAMES;
    size_t n = f->event ? 6 : 9;
    int schema_bad = 0, json_bad = 0;
    json_t *o = json_object();
    if (o == NULL)
        abort();
    for (size_t i = 0; i < n; i++) {
        const char *v = f->s[i];
        if (i == 0 && v == NULL)
            v = "0123456789abcdef0123456789abcdef"; /* generated */
        if (v == NULL)
            continue;
        json_t *js = json_stringn(v, strlen(v));
        if (js == NULL) { /* not valid UTF-8 */
            schema_bad = 1;
            continue;
        }
        json_object_set_new(o, names[i], js);
    }
    json_object_set_new(o, "timestamp", json_string(FIXED_TS));
    if (!f->event) {
        const char *ch = mb_channel_name(f->channel);
        json_object_set_new(o, "channel",
                            ch != NULL ? json_string(ch) : json_integer((json_int_t)f->channel));
        static const char *const sk[4] = {NULL, "player", "npc", "system"};
        if ((unsigned)f->speaker > 3)
            json_object_set_new(o, "speaker_kind", json_integer((json_int_t)f->speaker));
        else if (sk[f->speaker] != NULL)
            json_object_set_new(o, "speaker_kind", json_string(sk[f->speaker]));
    } else {
        json_t *ed = NULL;
        if (f->event_data == NULL) {
            ed = json_object();
        } else if (f->event_data_len > 0 && memchr(f->event_data, 0, f->event_data_len) != NULL) {
            json_bad = 1;
        } else {
            json_error_t jerr;
            ed = json_loadb(f->event_data, f->event_data_len,
                            JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
            if (ed == NULL)
                json_bad = 1;
        }
        json_object_set_new(o, "event_data", ed != NULL ? ed : json_object());
    }
    char *doc = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (doc == NULL)
        abort();
    char msg[256];
    mb_status st = mbref_validate(f->event ? MB_SCHEMA_EVENT : MB_SCHEMA_CHAT, doc, strlen(doc),
                                  SIZE_MAX, 0, NULL, msg, sizeof msg);
    int too_deep = 0;
    if (st == MB_ESCHEMA)
        schema_bad = 1;
    else if (st == MB_EJSON && f->event)
        too_deep = 1; /* event_data of 2048 levels is 2049 inside the message */
    else if (st != MB_OK)
        die(doc, strlen(doc), "hand-built document refused by the oracle: %s", msg);
    free(doc);
    if (too_deep)
        return X_SCHEMA | X_JSON;
    if (schema_bad && json_bad)
        return X_SCHEMA | X_JSON;
    if (schema_bad)
        return X_SCHEMA;
    if (json_bad)
        return X_JSON;
    return X_OK;
}

static mb_status encode(const mb_schema *s, const fields *f, char *buf, size_t cap, size_t *len,
                        mb_err *err)
{
    int64_t ts = f->ts_now ? 0 : FIXED_MS;
    if (!f->event) {
        mb_chat_msg m;
        memset(&m, 0, sizeof m);
        m.message_id = f->s[0];
        m.timestamp_ms = ts;
        m.sender_id = f->s[1];
        m.sender_name = f->s[2];
        m.channel = f->channel;
        m.content = f->s[3];
        m.room_id = f->s[4];
        m.subzone = f->s[5];
        m.target_id = f->s[6];
        m.party_id = f->s[7];
        m.target_name = f->s[8];
        m.speaker_kind = f->speaker;
        return mb_chat_encode(s, &m, buf, cap, len, err);
    }
    mb_event_msg m;
    memset(&m, 0, sizeof m);
    m.message_id = f->s[0];
    m.timestamp_ms = ts;
    m.event_type = f->s[1];
    m.room_id = f->s[2];
    m.player_id = f->s[3];
    m.sender_id = f->s[4];
    m.sender_name = f->s[5];
    m.event_data = f->event_data;
    m.event_data_len = f->event_data_len;
    return mb_event_encode(s, &m, buf, cap, len, err);
}

/* The encoded document holds exactly the given values. */
static void check_values(const fields *f, const char *doc, size_t len)
{
    json_error_t jerr;
    json_t *root = json_loadb(doc, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL)
        die(doc, len, "jansson cannot parse the output: %s", jerr.text);
    const char *const *names = f->event ? EVENT_NAMES : CHAT_NAMES;
    size_t n = f->event ? 6 : 9;
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_object_get(root, names[i]);
        if (f->s[i] == NULL) {
            if (i == 0) {
                if (!json_is_string(v) || json_string_length(v) != 32)
                    die(doc, len, "%s: no generated 32-character id", names[i]);
            } else if (v != NULL && !json_is_null(v)) {
                die(doc, len, "%s: present but not given", names[i]);
            }
            continue;
        }
        if (!json_is_string(v) || json_string_length(v) != strlen(f->s[i]) ||
            memcmp(json_string_value(v), f->s[i], strlen(f->s[i])) != 0)
            die(doc, len, "%s: value differs from the input", names[i]);
    }
    json_t *ts = json_object_get(root, "timestamp");
    int64_t ms = 0;
    if (!json_is_string(ts) ||
        mb_timestamp_parse(json_string_value(ts), json_string_length(ts), &ms, NULL) != MB_OK ||
        (!f->ts_now && ms != FIXED_MS))
        die(doc, len, "%s: wrong timestamp", "timestamp");
    if (!f->event) {
        json_t *ch = json_object_get(root, "channel");
        if (!json_is_string(ch) || strcmp(json_string_value(ch), mb_channel_name(f->channel)) != 0)
            die(doc, len, "%s: wrong channel", "channel");
        static const char *const sk[4] = {NULL, "player", "npc", "system"};
        json_t *v = json_object_get(root, "speaker_kind");
        if (f->speaker == MB_SPEAKER_UNSET
                ? (v != NULL && !json_is_null(v))
                : (!json_is_string(v) || strcmp(json_string_value(v), sk[f->speaker]) != 0))
            die(doc, len, "%s: wrong speaker_kind", "speaker_kind");
    } else {
        json_t *want = f->event_data == NULL
                           ? json_object()
                           : json_loadb(f->event_data, f->event_data_len, JSON_DECODE_ANY, &jerr);
        if (want == NULL || !json_equal(want, json_object_get(root, "event_data")))
            die(doc, len, "%s: event_data differs from the input", "event_data");
        json_decref(want);
    }
    json_decref(root);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 4)
        return 0;
    g_data = data;
    g_size = size;
    if (small_schema == NULL) {
        mb_schema_opts o = {0};
        o.max_bytes = SMALL_MAX;
        if (mb_schema_create(&o, &small_schema, NULL) != MB_OK)
            abort();
    }
    fields f;
    memset(&f, 0, sizeof f);
    f.event = data[0] & 1u;
    unsigned ch = (data[0] >> 1) & 15u;
    f.channel = ch < 9 ? (mb_channel)ch : (mb_channel)(ch == 9 ? -1 : (int)ch);
    f.speaker = (mb_speaker_kind)((data[0] >> 5) & 7u);
    unsigned present = data[1];
    size_t cap2 = data[2];
    f.ts_now = (data[3] >> 1) & 1u;

    /* Split a NUL-terminated copy of the rest into fields. */
    size_t rest = size - 4;
    char *copy = malloc(rest + 1);
    if (copy == NULL)
        return 0;
    memcpy(copy, data + 4, rest);
    copy[rest] = '\0';
    size_t nstr = f.event ? 6 : 9, pos = 0, i = 0;
    for (; i < nstr && pos <= rest; i++) {
        f.s[i] = copy + pos;
        pos += strlen(copy + pos) + 1;
    }
    char *ed = NULL;
    if (f.event && !(data[3] & 1u)) {
        size_t off = pos <= rest ? pos : rest;
        f.event_data_len = rest - off;
        ed = malloc(f.event_data_len ? f.event_data_len : 1);
        if (ed == NULL) {
            free(copy);
            return 0;
        }
        memcpy(ed, copy + off, f.event_data_len);
        f.event_data = ed;
    }
    if (present & 1u)
        f.s[0] = NULL;
    /* Optional fields (index 4.. for chat, 2.. for events) need their bit. */
    size_t first_opt = f.event ? 2 : 4;
    for (size_t k = first_opt; k < nstr; k++)
        if (!(present & (1u << (1 + (k - first_opt)))))
            f.s[k] = NULL;

    unsigned want = expected(&f);
    size_t len = 0;
    mb_err err;
    mb_err_clear(&err);
    mb_status st = encode(NULL, &f, out, sizeof out, &len, &err);
    if (st == MB_ENOMEM)
        goto done;
    unsigned got = st == MB_OK ? X_OK : st == MB_ESCHEMA ? X_SCHEMA : st == MB_EJSON ? X_JSON : 0;
    if ((got & want) == 0) {
        char detail[400];
        snprintf(detail, sizeof detail, "%s (%s), expected%s%s%s", mb_status_name(st), err.msg,
                 want & X_OK ? " MB_OK" : "", want & X_SCHEMA ? " MB_ESCHEMA" : "",
                 want & X_JSON ? " MB_EJSON" : "");
        die(st == MB_OK ? out : NULL, st == MB_OK ? len : 0, "encode returned %s", detail);
    }
    if (st != MB_OK && (err.code != st || err.msg[0] == '\0'))
        die(NULL, 0, "refusal without a reason: %s", mb_status_name(st));

    if (st == MB_OK) {
        if (len >= sizeof out || out[len] != '\0' || strlen(out) != len)
            die(out, len, "%s", "output not NUL-terminated at out_len");
        mb_schema_kind kind = f.event ? MB_SCHEMA_EVENT : MB_SCHEMA_CHAT, det = MB_SCHEMA_AUTO;
        mb_err verr;
        mb_err_clear(&verr);
        if (mb_schema_validate(NULL, MB_SCHEMA_AUTO, out, len, &det, &verr) != MB_OK ||
            det != kind || mb_schema_validate(NULL, kind, out, len, NULL, NULL) != MB_OK)
            die(out, len, "mb_schema_validate refuses the output: %s", verr.msg);
        char rmsg[256];
        if (mbref_validate(kind, out, len, 0, 0, NULL, rmsg, sizeof rmsg) != MB_OK)
            die(out, len, "the oracle refuses the output: %s", rmsg);
        check_values(&f, out, len);

        /* A second encoding into an exact-size buffer of cap2 bytes. */
        char *small = malloc(cap2 ? cap2 : 1);
        if (small != NULL) {
            size_t len2 = 0;
            mb_status st2 = encode(NULL, &f, small, cap2, &len2, NULL);
            if (cap2 > len) {
                if (st2 != MB_OK || len2 != len ||
                    (f.s[0] != NULL && !f.ts_now && memcmp(small, out, len + 1) != 0))
                    die(out, len, "re-encoding into a buffer that fits: %s", mb_status_name(st2));
            } else if (st2 != MB_ENOSPC || len2 != len) {
                die(out, len, "buffer too small: %s or wrong needed length", mb_status_name(st2));
            }
            free(small);
        }
    }

    /* The same message against max_bytes 512. */
    size_t len3 = 0;
    mb_status st3 = encode(small_schema, &f, out, sizeof out, &len3, NULL);
    if (st == MB_OK) {
        mb_status want3 = len <= SMALL_MAX ? MB_OK : MB_ETOOBIG;
        /* With a generated id or "now" the length is the same. */
        if (st3 != want3)
            die(NULL, 0, "with max_bytes 512: %s", mb_status_name(st3));
        if (st3 == MB_OK &&
            mb_schema_validate(small_schema, MB_SCHEMA_AUTO, out, len3, NULL, NULL) != MB_OK)
            die(out, len3, "%s", "output refused by its own validator");
    } else if (st3 != st && st3 != MB_ETOOBIG && st3 != MB_ENOMEM) {
        die(NULL, 0, "with max_bytes 512: %s", mb_status_name(st3));
    }
done:
    free(ed);
    free(copy);
    return 0;
}
