/* SPDX-License-Identifier: MIT */
/*
 * client_js: JetStream for critical subjects (whispers, system messages,
 * mute changes by default): the stream, asynchronous publishing with
 * publish acks and Nats-Msg-Id dedup, and durable pull consumers with
 * explicit acks driven by the handlers' results. See "JetStream" in
 * include/mudbus/client.h for the contract.
 *
 * Only nats-server 2.9 features are used: one stream whose subjects are the
 * critical patterns, one FilterSubject per consumer (never filter_subjects,
 * which 2.9 silently ignores), AckExplicit, AckWait, MaxDeliver. The DLQ on
 * max deliveries is the client's own decision (the handler's result at the
 * max_deliver-th delivery), not the server's advisory.
 *
 * DESIGN: contexts. A jsCtx belongs to one natsConnection, so each pool slot
 * has its own, made lazily under the slot's mutex (taken while the slot's
 * rwlock is held shared: order slot rwlock -> js slot mutex -> leaf locks of
 * the retry queue / DLQ / event ring). When the pool replaced a slot's
 * connection, the old context's unacknowledged publishes are taken back
 * (js_PublishAsyncGetPendingList) and go through the retry path, then the
 * context is destroyed.
 *
 * DESIGN: publish acks. One jsPubAckHandler per context counts acks and, for
 * a failure (server error, no stream, no ack within publish_ack_timeout_ms,
 * which is jsPubOptions.MaxWait), hands the message to
 * mb__client_publish_failed (retry queue or DLQ) and reports an
 * MB_CLIENT_EV_ERROR event. The attempt number travels in the message's
 * Mudbus-Attempt header (only from the second attempt on), so a message
 * whose acks keep failing reaches the DLQ after retry.max_attempts instead
 * of cycling.
 *
 * DESIGN: consumers. Each critical subscription is a js_PullSubscribe with a
 * durable name and its own fetch thread (natsSubscription_Fetch, batch
 * fetch_batch, wait fetch_timeout_ms). The thread validates each message as
 * core deliveries are validated, then runs the handler (threaded mode) or
 * queues the message with its sub for mb_client_dispatch (poll mode); either
 * way mb__client_deliver calls mb__js_settle with the handler's result. A
 * poll-mode message that finds the dispatch queue full is nak'ed with a
 * delay (back pressure, not a loss). Unsubscribe stops the thread (joined,
 * or detached when called from the handler on that thread) and calls
 * natsSubscription_Unsubscribe, which deletes the durable consumer; destroy
 * only destroys the subscription (nats.c >= 3.4 keeps the consumer).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "client_int.h"
#include "json.h"

#define JS_ATTEMPT_HDR    "Mudbus-Attempt"
#define JS_DQ_FULL_NAK_MS 1000
#define JS_ERROR_PAUSE_MS 200
#define JS_CLOSE_WAIT_MS  5000

typedef struct mb__js mb__js;
typedef struct mb__js_sub mb__js_sub;

typedef struct js_slot {
    pthread_mutex_t lock;
    jsCtx *ctx;
    natsConnection *nc; /* the connection ctx was made on */
    bool used;          /* an async publish went through ctx (nats.c 3.4.1's
                         * js_PublishAsyncGetPendingList crashes on a context
                         * that never published) */
} js_slot;

struct mb__js {
    mb_client *c;
    char *crit[MB_CLIENT_MAX_CRITICAL];
    size_t ncrit;
    char stream[64];
    char prefix[64];
    pthread_mutex_t ensure_lock;
    _Atomic bool stream_ok;
    _Atomic bool closed;       /* destroy started: no new contexts */
    _Atomic int cb_active;     /* publish-ack callbacks running */
    _Atomic int threads_alive; /* fetch threads not yet exited */
    js_slot slots[MB_CLIENT_MAX_POOL];
    mb_counter *m_acks, *m_ack_fail, *m_naks, *m_terms, *m_redeliv, *m_pub_acks, *m_pub_ack_fail;
    mb_gauge *m_pending;
};

struct mb__js_sub {
    pthread_t thread;
    bool thread_started;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool stop;
    bool unsub_on_exit; /* unsubscribed from its own handler: the thread cleans up */
    char durable[160];
};

/* ---- options ---- */

void mb__js_opts_default(mb_client_js_opts *o)
{
    memset(o, 0, sizeof *o);
    o->critical_subjects[0] = "chat.whisper.player.*";
    o->critical_subjects[1] = "chat.system";
    o->critical_subjects[2] = "mutes.changed.*";
    o->ncritical = 3;
    o->stream = "MUDBUS_CRITICAL";
    o->max_age_ms = 24u * 3600u * 1000u;
    o->duplicate_window_ms = 2u * 60u * 1000u;
    o->ack_wait_ms = 30000;
    o->max_deliver = 5;
    o->fetch_batch = 64;
    o->fetch_timeout_ms = 500;
    o->publish_ack_timeout_ms = 5000;
    o->max_pending = 4096;
}

static bool name_ok(const char *n, size_t max)
{
    size_t l = n ? strlen(n) : 0;
    return l > 0 && l <= max &&
           strspn(n, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-") == l;
}

/* A subscription-style pattern: non-empty tokens of printable ASCII without
 * spaces, '*' and '>' only as whole tokens, '>' only last. */
static bool pattern_ok(const char *p)
{
    size_t l = p ? strlen(p) : 0;
    if (l == 0 || l > 255)
        return false;
    const char *t = p;
    for (;;) {
        const char *e = strchr(t, '.');
        size_t tl = e ? (size_t)(e - t) : strlen(t);
        if (tl == 0)
            return false;
        for (size_t i = 0; i < tl; i++)
            if ((unsigned char)t[i] <= ' ' || (unsigned char)t[i] >= 127 ||
                ((t[i] == '*' || t[i] == '>') && tl != 1))
                return false;
        if (tl == 1 && t[0] == '>' && e)
            return false;
        if (!e)
            return true;
        t = e + 1;
    }
}

/* Whether every subject matched by `pat` is matched by `crit`. */
static bool covers(const char *crit, const char *pat)
{
    for (;;) {
        const char *ce = strchr(crit, '.'), *pe = strchr(pat, '.');
        size_t cl = ce ? (size_t)(ce - crit) : strlen(crit);
        size_t pl = pe ? (size_t)(pe - pat) : strlen(pat);
        if (cl == 1 && crit[0] == '>')
            return true;
        if (pl == 1 && pat[0] == '>')
            return false;
        if (!(cl == 1 && crit[0] == '*') && !(cl == pl && memcmp(crit, pat, cl) == 0))
            return false;
        if (!ce || !pe)
            return !ce && !pe;
        crit = ce + 1;
        pat = pe + 1;
    }
}

bool mb_client_opts_critical(const mb_client_opts *o, const char *subject)
{
    if (!o || !subject || !o->js.enabled)
        return false;
    for (size_t i = 0; i < o->js.ncritical && i < MB_CLIENT_MAX_CRITICAL; i++)
        if (o->js.critical_subjects[i] && covers(o->js.critical_subjects[i], subject))
            return true;
    return false;
}

bool mb__js_critical(mb_client *c, const char *subject)
{
    mb__js *j = c->js;
    if (!j)
        return false;
    for (size_t i = 0; i < j->ncrit; i++)
        if (covers(j->crit[i], subject))
            return true;
    return false;
}

/* ---- create / start / close ---- */

static mb_status register_js_metrics(mb_client *c, mb__js *j, mb_err *err)
{
    mb_status st;
#define JC_(field, name, help)                                                                     \
    if ((st = mb_metrics_counter(c->metrics, name, help, c->labels, &j->field, err)) != MB_OK)     \
        return st;
    JC_(m_acks, "mudbus_js_acks_total", "JetStream deliveries acknowledged")
    JC_(m_ack_fail, "mudbus_js_ack_failures_total",
        "JetStream acks, naks or terms that could not be sent")
    JC_(m_naks, "mudbus_js_naks_total", "JetStream deliveries nak'ed for a delayed redelivery")
    JC_(m_terms, "mudbus_js_terms_total", "JetStream deliveries terminated (to the DLQ)")
    JC_(m_redeliv, "mudbus_js_redeliveries_total", "JetStream deliveries after the first")
    JC_(m_pub_acks, "mudbus_js_publish_acks_total", "JetStream publishes acknowledged")
    JC_(m_pub_ack_fail, "mudbus_js_publish_ack_failures_total",
        "JetStream publishes whose ack failed or timed out")
#undef JC_
    return mb_metrics_gauge(c->metrics, "mudbus_js_publish_pending",
                            "JetStream publishes waiting for their ack", c->labels, &j->m_pending,
                            err);
}

mb_status mb__js_create(mb_client *c, mb_err *err)
{
    const mb_client_js_opts *o = &c->o.js;
    if (!o->enabled)
        return MB_OK;
    if (o->ncritical == 0 || o->ncritical > MB_CLIENT_MAX_CRITICAL)
        return mb_err_set(err, MB_EINVAL, "js.ncritical must be 1..%d", MB_CLIENT_MAX_CRITICAL);
    for (size_t i = 0; i < o->ncritical; i++)
        if (!pattern_ok(o->critical_subjects[i]))
            return mb_err_set(err, MB_EINVAL, "js.critical_subjects[%zu] is not a valid pattern",
                              i);
    const char *stream = o->stream ? o->stream : "MUDBUS_CRITICAL";
    if (!name_ok(stream, 32))
        return mb_err_set(err, MB_EINVAL, "js.stream must be 1..32 bytes of [A-Za-z0-9_-]");
    if (o->durable_prefix && !name_ok(o->durable_prefix, 48))
        return mb_err_set(err, MB_EINVAL, "js.durable_prefix must be 1..48 bytes of [A-Za-z0-9_-]");
    if (o->max_deliver < 1 || o->max_deliver > 1000)
        return mb_err_set(err, MB_EINVAL, "js.max_deliver must be 1..1000");
    if (o->ack_wait_ms == 0 || o->max_age_ms == 0 || o->duplicate_window_ms == 0 ||
        o->duplicate_window_ms > o->max_age_ms)
        return mb_err_set(err, MB_EINVAL,
                          "js.ack_wait_ms, max_age_ms and duplicate_window_ms must be > 0, "
                          "duplicate_window_ms at most max_age_ms");
    if (o->fetch_batch < 1 || o->fetch_batch > 4096 || o->fetch_timeout_ms < 10 ||
        o->publish_ack_timeout_ms == 0 || o->max_pending < 1)
        return mb_err_set(err, MB_EINVAL,
                          "js.fetch_batch must be 1..4096, fetch_timeout_ms >= 10, "
                          "publish_ack_timeout_ms and max_pending > 0");
    mb__js *j = mb__calloc(1, sizeof *j);
    if (!j)
        return mb_err_set(err, MB_ENOMEM, "out of memory");
    j->c = c;
    pthread_mutex_init(&j->ensure_lock, NULL);
    for (size_t i = 0; i < MB_CLIENT_MAX_POOL; i++)
        pthread_mutex_init(&j->slots[i].lock, NULL);
    c->js = j;
    for (size_t i = 0; i < o->ncritical; i++) {
        j->crit[i] = mb__strdup(o->critical_subjects[i]);
        if (!j->crit[i])
            return mb_err_set(err, MB_ENOMEM, "out of memory");
        j->ncrit++;
        c->o.js.critical_subjects[i] = j->crit[i];
    }
    snprintf(j->stream, sizeof j->stream, "%s", stream);
    c->o.js.stream = j->stream;
    if (o->durable_prefix)
        snprintf(j->prefix, sizeof j->prefix, "%s", o->durable_prefix);
    else
        snprintf(j->prefix, sizeof j->prefix, "mudbus_%.40s", c->name);
    for (char *p = j->prefix; *p; p++)
        if (*p == '.')
            *p = '_';
    c->o.js.durable_prefix = j->prefix;
    return register_js_metrics(c, j, err);
}

static mb_status js_fail(mb_err *err, natsStatus s, jsErrCode jerr, const char *what)
{
    natsStatus ls = NATS_OK;
    const char *txt = nats_GetLastError(&ls);
    mb_status st = mb__client_nats_status(s);
    if (st == MB_EINTERNAL)
        st = MB_EIO;
    if (s == NATS_NO_RESPONDERS || jerr == JSNotEnabledErr || jerr == JSNotEnabledForAccountErr)
        return mb_err_set(err, MB_EUNSUPPORTED, "%s: JetStream is not enabled on the server (%s)",
                          what, txt && *txt ? txt : natsStatus_GetText(s));
    if (jerr)
        return mb_err_set(err, st, "%s: %s (JetStream error %d)", what,
                          txt && *txt ? txt : natsStatus_GetText(s), (int)jerr);
    return mb_err_set(err, st, "%s: %s", what, txt && *txt ? txt : natsStatus_GetText(s));
}

/* How many of this client's critical subjects the stream's subjects do not
 * cover (each missing one goes to *missing, which has room for j->ncrit). */
static size_t uncovered(const mb__js *j, const jsStreamConfig *cfg, const char **missing)
{
    size_t n = 0;
    for (size_t i = 0; i < j->ncrit; i++) {
        bool found = false;
        for (int k = 0; cfg && k < cfg->SubjectsLen && !found; k++)
            found = cfg->Subjects[k] && covers(cfg->Subjects[k], j->crit[i]);
        if (!found)
            missing[n++] = j->crit[i];
    }
    return n;
}

/* Create the stream, or check that it covers this client's critical subjects
 * and add those it lacks. Nothing a stream stores is ever taken away (a
 * subject goes only for a wider one that covers it): clients with different
 * lists (a game server's, a gateway's) share one stream. */
static mb_status ensure_stream(mb__js *j, jsCtx *js, mb_err *err)
{
    mb_client *c = j->c;
    const mb_client_js_opts *o = &c->o.js;
    pthread_mutex_lock(&j->ensure_lock);
    if (atomic_load(&j->stream_ok)) {
        pthread_mutex_unlock(&j->ensure_lock);
        return MB_OK;
    }
    mb_status st = MB_OK;
    char what[160];
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_GetStreamInfo(&si, js, j->stream, NULL, &jerr);
    if (s == NATS_NOT_FOUND || jerr == JSStreamNotFoundErr) {
        jsStreamConfig cfg;
        jsStreamConfig_Init(&cfg);
        cfg.Name = j->stream;
        cfg.Subjects = (const char **)j->crit;
        cfg.SubjectsLen = (int)j->ncrit;
        cfg.Storage = o->memory_storage ? js_MemoryStorage : js_FileStorage;
        cfg.MaxAge = (int64_t)o->max_age_ms * 1000000;
        cfg.Duplicates = (int64_t)o->duplicate_window_ms * 1000000;
        jerr = 0;
        s = js_AddStream(NULL, js, &cfg, NULL, &jerr);
        snprintf(what, sizeof what, "cannot create JetStream stream %s", j->stream);
        if (s != NATS_OK)
            st = js_fail(err, s, jerr, what);
        else
            mb__client_log(c, "JetStream stream %s created (%zu subjects)", j->stream, j->ncrit);
    } else if (s != NATS_OK) {
        snprintf(what, sizeof what, "cannot look up JetStream stream %s", j->stream);
        st = js_fail(err, s, jerr, what);
    } else if (!si->Config) {
        st = mb_err_set(err, MB_EIO, "JetStream stream %s: its info has no configuration",
                        j->stream);
    } else {
        const char *missing[MB_CLIENT_MAX_CRITICAL];
        size_t nmiss = uncovered(j, si->Config, missing);
        int have = si->Config->SubjectsLen;
        const char **all = nmiss ? mb__calloc((size_t)have + nmiss, sizeof *all) : NULL;
        if (nmiss && !all) {
            st = mb_err_set(err, MB_ENOMEM, "out of memory");
        } else if (nmiss) {
            /* A subject that a new one covers goes (the server refuses
             * overlapping subjects in one stream); what it matched, the new
             * one matches. */
            size_t n = 0;
            for (int k = 0; k < have; k++) {
                const char *e = si->Config->Subjects[k];
                bool wider = false;
                for (size_t m = 0; e && m < nmiss && !wider; m++)
                    wider = covers(missing[m], e);
                if (e && !wider)
                    all[n++] = e;
            }
            for (size_t k = 0; k < nmiss; k++)
                all[n++] = missing[k];
            jsStreamConfig cfg = *si->Config;
            cfg.Subjects = all;
            cfg.SubjectsLen = (int)n;
            jerr = 0;
            s = js_UpdateStream(NULL, js, &cfg, NULL, &jerr);
            snprintf(what, sizeof what, "cannot add %zu subjects to JetStream stream %s", nmiss,
                     j->stream);
            if (s != NATS_OK)
                st = js_fail(err, s, jerr, what);
            else
                mb__client_log(c, "JetStream stream %s: %zu subjects added (%s%s)", j->stream,
                               nmiss, missing[0], nmiss > 1 ? ", ..." : "");
        }
        mb__free(all);
    }
    jsStreamInfo_Destroy(si);
    if (st == MB_OK)
        atomic_store(&j->stream_ok, true);
    pthread_mutex_unlock(&j->ensure_lock);
    return st;
}

static uint64_t msg_attempts(natsMsg *m)
{
    const char *v = NULL;
    if (natsMsgHeader_Get(m, JS_ATTEMPT_HDR, &v) != NATS_OK || !v)
        return 1;
    unsigned long long n = strtoull(v, NULL, 10);
    return n ? n : 1;
}

/* A publish ack failed: retry or dead-letter, and report. */
static void publish_failed(mb__js *j, natsMsg *m, mb_status st, const char *text)
{
    mb_client *c = j->c;
    const char *subj = natsMsg_GetSubject(m);
    char msg[MB_ERR_MSG_MAX];
    snprintf(msg, sizeof msg, "JetStream publish ack on %s failed: %s", subj ? subj : "?",
             text && *text ? text : mb_status_str(st));
    mb_counter_add(j->m_pub_ack_fail, 1);
    mb__event_push(c, MB_CLIENT_EV_ERROR, -1, st, "%s", msg);
    mb__client_publish_failed(c, subj ? subj : "", natsMsg_GetData(m),
                              (size_t)natsMsg_GetDataLength(m), st, msg, (unsigned)msg_attempts(m));
}

static void on_pub_ack(jsCtx *js, natsMsg *m, jsPubAck *pa, jsPubAckErr *pae, void *closure)
{
    mb__js *j = closure;
    (void)js;
    atomic_fetch_add(&j->cb_active, 1);
    mb_gauge_add(j->m_pending, -1);
    if (pa) {
        mb_counter_add(j->m_pub_acks, 1);
    } else {
        natsStatus e = pae ? pae->Err : NATS_ERR;
        mb_status st = mb__client_nats_status(e);
        if (st == MB_EINTERNAL)
            st = MB_EIO; /* a server-side JetStream error: worth a bounded retry */
        char text[160];
        if (pae && pae->ErrText && *pae->ErrText && pae->ErrCode)
            snprintf(text, sizeof text, "%s (JetStream error %d)", pae->ErrText, (int)pae->ErrCode);
        else if (pae && pae->ErrText && *pae->ErrText)
            snprintf(text, sizeof text, "%s", pae->ErrText);
        else
            snprintf(text, sizeof text, "%s", natsStatus_GetText(e));
        publish_failed(j, m, st, text);
    }
    natsMsg_Destroy(m);
    atomic_fetch_sub(&j->cb_active, 1);
}

/* Take back the unacknowledged publishes of a slot's context and destroy it
 * (slot mutex held). */
static void ctx_retire(mb__js *j, js_slot *sl, const char *why)
{
    jsCtx *ctx = sl->ctx;
    bool used = sl->used;
    sl->ctx = NULL;
    sl->nc = NULL;
    sl->used = false;
    if (!ctx)
        return;
    natsMsgList pend = {0};
    if (used && js_PublishAsyncGetPendingList(&pend, ctx) == NATS_OK) {
        for (int i = 0; i < pend.Count; i++) {
            mb_gauge_add(j->m_pending, -1);
            publish_failed(j, pend.Msgs[i], MB_ENOCONN, why);
        }
        natsMsgList_Destroy(&pend);
    }
    jsCtx_Destroy(ctx);
}

/* The slot's context for nc (slot mutex held). */
static natsStatus slot_ctx(mb__js *j, js_slot *sl, natsConnection *nc, jsCtx **out)
{
    *out = NULL;
    if (sl->ctx && sl->nc == nc) {
        *out = sl->ctx;
        return NATS_OK;
    }
    if (sl->ctx)
        ctx_retire(j, sl, "the pool replaced the connection before the ack");
    if (atomic_load(&j->closed))
        return NATS_CONNECTION_CLOSED;
    jsOptions o;
    jsOptions_Init(&o);
    o.PublishAsync.AckHandler = on_pub_ack;
    o.PublishAsync.AckHandlerClosure = j;
    o.PublishAsync.MaxPending = j->c->o.js.max_pending;
    natsStatus s = natsConnection_JetStream(&sl->ctx, nc, &o);
    if (s != NATS_OK) {
        sl->ctx = NULL;
        return s;
    }
    sl->nc = nc;
    *out = sl->ctx;
    return NATS_OK;
}

mb_status mb__js_start(mb_client *c, mb_err *err)
{
    mb__js *j = c->js;
    if (!j)
        return MB_OK;
    natsConnection *nc;
    mb__conn *k = mb__pool_get(c, 0, &nc);
    if (!k)
        return MB_OK; /* start_disconnected: checked at the first critical call */
    js_slot *sl = &j->slots[k->index];
    pthread_mutex_lock(&sl->lock);
    jsCtx *js = NULL;
    natsStatus s = slot_ctx(j, sl, nc, &js);
    mb_status st = s == NATS_OK ? ensure_stream(j, js, err)
                                : js_fail(err, s, 0, "cannot create a JetStream context");
    pthread_mutex_unlock(&sl->lock);
    mb__pool_put(k);
    return st;
}

/* ---- publish ---- */

/* The top-level "message_id" string of a validated JSON object. */
static bool find_message_id(const char *data, size_t len, char *out, size_t cap)
{
    mb__json_scan s;
    mb_err e = {0};
    bool found = false;
    mb__json_scan_init(&s, data, len, 0, &e);
    mb__json_ws(&s);
    if (s.p >= s.end || *s.p != '{')
        goto done;
    s.p++;
    for (;;) {
        mb__json_ws(&s);
        mb__json_str k;
        if (s.p >= s.end || *s.p != '"' || mb__json_string(&s, &k) != MB_OK)
            goto done;
        bool is_id = k.raw_len == 10 && memcmp(k.raw, "message_id", 10) == 0;
        if (!is_id && (k.flags & MB__JSTR_ESCAPED) && k.bytes == 10) {
            char kb[16];
            size_t n = mb__json_decode(&k, kb, sizeof kb);
            is_id = n == 10 && memcmp(kb, "message_id", 10) == 0;
        }
        mb__json_ws(&s);
        if (s.p >= s.end || *s.p != ':')
            goto done;
        s.p++;
        mb__json_ws(&s);
        if (is_id) {
            mb__json_str v;
            if (s.p >= s.end || *s.p != '"' || mb__json_string(&s, &v) != MB_OK)
                goto done;
            size_t n = mb__json_decode(&v, out, cap - 1);
            if (n != (size_t)-1 && n > 0) {
                out[n] = '\0';
                found = true;
            }
            goto done;
        }
        if (mb__json_value(&s, 2) != MB_OK)
            goto done;
        mb__json_ws(&s);
        if (s.p < s.end && *s.p == ',') {
            s.p++;
            continue;
        }
        goto done;
    }
done:
    mb__json_scan_fini(&s);
    return found;
}

natsStatus mb__js_publish(mb_client *c, mb__conn *k, natsConnection *nc, const char *subject,
                          const void *data, size_t len, unsigned attempt_no)
{
    mb__js *j = c->js;
    js_slot *sl = &j->slots[k->index];
    char id[80];
    bool have_id = find_message_id(data, len, id, sizeof id);
    natsMsg *m = NULL;
    natsStatus s = natsMsg_Create(&m, subject, NULL, data, (int)len);
    if (s == NATS_OK && attempt_no > 1) {
        char a[16];
        snprintf(a, sizeof a, "%u", attempt_no);
        s = natsMsgHeader_Set(m, JS_ATTEMPT_HDR, a);
    }
    if (s != NATS_OK) {
        natsMsg_Destroy(m);
        return s;
    }
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = (int64_t)c->o.js.publish_ack_timeout_ms;
    if (have_id)
        po.MsgId = id;
    pthread_mutex_lock(&sl->lock);
    jsCtx *js = NULL;
    s = slot_ctx(j, sl, nc, &js);
    if (s == NATS_OK && !atomic_load(&j->stream_ok)) {
        mb_err e = {0};
        if (ensure_stream(j, js, &e) != MB_OK) {
            mb__client_log(c, "%s", e.msg);
            s = NATS_NO_RESPONDERS; /* retryable: the stream may come */
        }
    }
    if (s == NATS_OK) {
        mb_gauge_add(j->m_pending, 1);
        s = js_PublishMsgAsync(js, &m, &po);
        if (s != NATS_OK)
            mb_gauge_add(j->m_pending, -1);
        else
            sl->used = true;
    }
    pthread_mutex_unlock(&sl->lock);
    natsMsg_Destroy(m); /* NULL when nats.c took it */
    return s;
}

/* ---- consume ---- */

uint64_t mb__js_deliveries(natsMsg *msg)
{
    jsMsgMetaData *md = NULL;
    if (natsMsg_GetMetaData(&md, msg) != NATS_OK || !md)
        return 0;
    uint64_t n = md->NumDelivered;
    jsMsgMetaData_Destroy(md);
    return n;
}

static void term_dead_letter(mb_client *c, natsMsg *msg, mb_status st, const char *why,
                             uint64_t deliveries)
{
    mb__js *j = c->js;
    if (natsMsg_Term(msg, NULL) == NATS_OK)
        mb_counter_add(j->m_terms, 1);
    else
        mb_counter_add(j->m_ack_fail, 1);
    const char *subj = natsMsg_GetSubject(msg);
    mb__client_dead_letter(c, subj ? subj : "", natsMsg_GetData(msg),
                           (size_t)natsMsg_GetDataLength(msg), st, why,
                           (unsigned)(deliveries ? deliveries : 1), 0, "consume");
}

void mb__js_settle(mb_client *c, mb__sub *s, natsMsg *msg, mb_handled h, uint64_t deliveries)
{
    mb__js *j = c->js;
    const mb_client_js_opts *o = &c->o.js;
    (void)s;
    char why[160];
    switch (h) {
    case MB_HANDLED_OK:
        if (natsMsg_Ack(msg, NULL) == NATS_OK)
            mb_counter_add(j->m_acks, 1);
        else
            mb_counter_add(j->m_ack_fail, 1);
        return;
    case MB_HANDLED_RETRY:
        if (deliveries >= o->max_deliver) {
            snprintf(why, sizeof why,
                     "handler asked for a retry at delivery %" PRIu64 " of max_deliver %u",
                     deliveries, o->max_deliver);
            term_dead_letter(c, msg, MB_ELIMIT, why, deliveries);
            return;
        }
        {
            uint64_t delay = o->ack_wait_ms;
            pthread_mutex_lock(&c->rng_lock);
            if (mb_retry_next_delay(&c->o.retry, (unsigned)(deliveries ? deliveries : 1), 0, 0,
                                    &c->rng, &delay) != MB_OK)
                delay = c->o.retry.max_delay_ms; /* past the policy's attempts: its cap */
            pthread_mutex_unlock(&c->rng_lock);
            if (natsMsg_NakWithDelay(msg, (int64_t)delay, NULL) == NATS_OK)
                mb_counter_add(j->m_naks, 1);
            else
                mb_counter_add(j->m_ack_fail, 1);
        }
        return;
    default:
        snprintf(why, sizeof why, "handler failed the message (delivery %" PRIu64 ")", deliveries);
        term_dead_letter(c, msg, MB_EINTERNAL, why, deliveries);
        return;
    }
}

static void handle_msg(mb_client *c, mb__sub *s, natsMsg *msg)
{
    mb__js *j = c->js;
    if (!atomic_load(&s->active)) {
        natsMsg_Destroy(msg); /* not acked: redelivered to whoever uses the durable */
        return;
    }
    uint64_t deliveries = mb__js_deliveries(msg);
    if (deliveries > 1)
        mb_counter_add(j->m_redeliv, 1);
    const char *subj = natsMsg_GetSubject(msg);
    const char *data = natsMsg_GetData(msg);
    size_t len = (size_t)natsMsg_GetDataLength(msg);
    mb_err e = {0};
    mb_subject_info info;
    mb_status st = mb_subject_check(c->subjects, subj, strlen(subj), &info, NULL, &e);
    if (st == MB_OK && len > c->max_payload)
        st = mb_err_set(&e, MB_ETOOBIG, "payload of %zu bytes exceeds %zu", len, c->max_payload);
    if (st == MB_OK)
        st = mb_schema_validate(c->schema, info.schema, data ? data : "", len, NULL, &e);
    if (st != MB_OK) {
        mb_counter_add(c->m_invalid, 1);
        term_dead_letter(c, msg, st, e.msg, deliveries);
        natsMsg_Destroy(msg);
        return;
    }
    if (!c->o.poll_mode) {
        mb__client_deliver(c, s, msg, &info);
        natsMsg_Destroy(msg);
        return;
    }
    bool full = false;
    if (mb__dq_push_msg(c, s, msg, &info, &full))
        return;
    mb_counter_add(c->m_dq_full, 1);
    if (natsMsg_NakWithDelay(msg, JS_DQ_FULL_NAK_MS, NULL) == NATS_OK)
        mb_counter_add(j->m_naks, 1);
    else
        mb_counter_add(j->m_ack_fail, 1);
    natsMsg_Destroy(msg);
}

/* Wait up to ms unless stopped. */
static void fetch_pause(mb__js_sub *q, unsigned ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t t = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec + ms * 1000000ull;
    ts.tv_sec = (time_t)(t / 1000000000u);
    ts.tv_nsec = (long)(t % 1000000000u);
    pthread_mutex_lock(&q->lock);
    while (!q->stop)
        if (pthread_cond_timedwait(&q->cond, &q->lock, &ts) == ETIMEDOUT)
            break;
    pthread_mutex_unlock(&q->lock);
}

static void sub_release_nats(mb_client *c, mb__sub *s, bool unsubscribe, mb_err *err, mb_status *st)
{
    if (!s->ns)
        return;
    if (unsubscribe) {
        natsStatus ns = natsSubscription_Unsubscribe(s->ns);
        if (ns != NATS_OK && ns != NATS_CONNECTION_CLOSED && ns != NATS_INVALID_SUBSCRIPTION) {
            mb_status r = mb__client_nats_err(ns, err, "unsubscribe (JetStream)");
            if (st)
                *st = r;
            mb__client_log(c, "unsubscribe %s: %s", s->pattern, natsStatus_GetText(ns));
        }
    }
    mb__grave_put(&c->conns[s->conn], s->ns); /* destroyed after a round trip or at close */
    s->ns = NULL;
}

static void *fetch_main(void *arg)
{
    mb__sub *s = arg;
    mb_client *c = s->c;
    mb__js *j = c->js;
    mb__js_sub *q = s->js;
    const mb_client_js_opts *o = &c->o.js;
    bool logged = false;
    while (atomic_load(&s->active)) {
        int batch = (int)o->fetch_batch;
        if (c->o.poll_mode) {
            pthread_mutex_lock(&c->dq_lock);
            size_t room = c->dq_deliveries < c->o.dispatch_queue_max
                              ? c->o.dispatch_queue_max - c->dq_deliveries
                              : 0;
            pthread_mutex_unlock(&c->dq_lock);
            if (room == 0) {
                fetch_pause(q, 20);
                continue;
            }
            if ((size_t)batch > room)
                batch = (int)room;
        }
        natsMsgList list = {0};
        jsErrCode jerr = 0;
        natsStatus ns =
            natsSubscription_Fetch(&list, s->ns, batch, (int64_t)o->fetch_timeout_ms, &jerr);
        for (int i = 0; i < list.Count; i++) {
            natsMsg *m = list.Msgs[i];
            list.Msgs[i] = NULL;
            if (m)
                handle_msg(c, s, m);
        }
        natsMsgList_Destroy(&list);
        if (ns == NATS_OK || ns == NATS_TIMEOUT) {
            logged = false;
            continue;
        }
        if (!atomic_load(&s->active))
            break;
        if (!logged) /* once per failure streak (e.g. while reconnecting) */
            mb__client_log(c, "JetStream fetch on %s: %s", s->pattern, natsStatus_GetText(ns));
        logged = true;
        fetch_pause(q, JS_ERROR_PAUSE_MS);
    }
    if (q->unsub_on_exit)
        sub_release_nats(c, s, true, NULL, NULL);
    atomic_fetch_sub(&j->threads_alive, 1);
    mb__client_sub_unref(s);
    return NULL;
}

static void durable_name(const mb__js *j, const char *pattern, const char *queue, char *out,
                         size_t cap)
{
    size_t n = (size_t)snprintf(out, cap, "%s_", j->prefix);
    const char *parts[2] = {pattern, queue};
    for (int p = 0; p < 2 && parts[p]; p++) {
        if (p == 1 && n + 1 < cap)
            out[n++] = '_';
        for (const char *x = parts[p]; *x && n + 5 < cap; x++) {
            if (*x == '*') {
                memcpy(out + n, "-any", 4);
                n += 4;
            } else if (*x == '>') {
                memcpy(out + n, "-all", 4);
                n += 4;
            } else if (*x == '.') {
                out[n++] = '_';
            } else if ((*x >= 'a' && *x <= 'z') || (*x >= 'A' && *x <= 'Z') ||
                       (*x >= '0' && *x <= '9') || *x == '_' || *x == '-') {
                out[n++] = *x;
            } else {
                out[n++] = '-';
            }
        }
    }
    out[n < cap ? n : cap - 1] = '\0';
}

mb_status mb__js_subscribe(mb_client *c, mb__sub *s, mb_err *err)
{
    mb__js *j = c->js;
    mb__js_sub *q = mb__calloc(1, sizeof *q);
    if (!q)
        return mb_err_set(err, MB_ENOMEM, "out of memory");
    pthread_mutex_init(&q->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&q->cond, &ca);
    pthread_condattr_destroy(&ca);
    s->js = q; /* freed with s */
    durable_name(j, s->pattern, s->queue, q->durable, sizeof q->durable);
    /* Two subscriptions on one durable would share its messages, and the
     * first unsubscribe would delete it under the other. */
    bool dup = false;
    pthread_mutex_lock(&c->subs_lock);
    MB__SUBS_EACH(c, o)
    dup = dup || (o->js && strcmp(o->js->durable, q->durable) == 0);
    pthread_mutex_unlock(&c->subs_lock);
    if (dup)
        return mb_err_set(err, MB_EEXIST,
                          "subscribe %s: this client already consumes JetStream durable %s "
                          "(subscribe once, or with distinct queue groups)",
                          s->pattern, q->durable);

    natsConnection *nc;
    mb__conn *k = mb__pool_get(c, mb__pool_hash(s->pattern, strlen(s->pattern)), &nc);
    if (!k)
        return mb_err_set(err, MB_ENOCONN, "subscribe %s: no live connection", s->pattern);
    s->conn = k->index;
    js_slot *sl = &j->slots[k->index];
    pthread_mutex_lock(&sl->lock);
    jsCtx *js = NULL;
    mb_status st = MB_OK;
    natsStatus ns = slot_ctx(j, sl, nc, &js);
    if (ns != NATS_OK)
        st = js_fail(err, ns, 0, "cannot create a JetStream context");
    if (st == MB_OK)
        st = ensure_stream(j, js, err);
    if (st == MB_OK) {
        const mb_client_js_opts *o = &c->o.js;
        jsSubOptions so;
        jsSubOptions_Init(&so);
        so.Stream = j->stream;
        so.Config.AckPolicy = js_AckExplicit;
        so.Config.AckWait = (int64_t)o->ack_wait_ms * 1000000;
        so.Config.MaxDeliver = (int64_t)o->max_deliver;
        jsErrCode jerr = 0;
        ns = js_PullSubscribe(&s->ns, js, s->pattern, q->durable, NULL, &so, &jerr);
        if (ns != NATS_OK) {
            char what[256];
            snprintf(what, sizeof what, "subscribe %s (JetStream durable %s)", s->pattern,
                     q->durable);
            st = js_fail(err, ns, jerr, what);
            s->ns = NULL;
        }
    }
    pthread_mutex_unlock(&sl->lock);
    mb__pool_put(k);
    if (st != MB_OK)
        return st;
    atomic_fetch_add(&s->refs, 1); /* the fetch thread's */
    atomic_fetch_add(&j->threads_alive, 1);
    int rc = pthread_create(&q->thread, NULL, fetch_main, s);
    if (rc != 0) {
        atomic_fetch_sub(&j->threads_alive, 1);
        atomic_fetch_sub(&s->refs, 1);
        sub_release_nats(c, s, true, NULL, NULL);
        return mb_err_set(err, MB_ENOMEM, "cannot start a JetStream fetch thread: %s",
                          strerror(rc));
    }
    q->thread_started = true;
    mb__client_log(c, "subscribed %s on JetStream (durable %s)", s->pattern, q->durable);
    return MB_OK;
}

static void stop_thread(mb__js_sub *q)
{
    pthread_mutex_lock(&q->lock);
    q->stop = true;
    pthread_cond_broadcast(&q->cond);
    pthread_mutex_unlock(&q->lock);
}

mb_status mb__js_unsubscribe(mb_client *c, mb__sub *s, mb_err *err)
{
    mb__js_sub *q = s->js;
    stop_thread(q);
    if (q->thread_started && pthread_equal(pthread_self(), q->thread)) {
        /* From the handler, on the fetch thread: it unsubscribes on its way out. */
        q->unsub_on_exit = true;
        q->thread_started = false;
        pthread_detach(q->thread);
        return MB_OK;
    }
    if (q->thread_started) {
        pthread_join(q->thread, NULL); /* at most one fetch wait plus the running handler */
        q->thread_started = false;
    }
    mb_status st = MB_OK;
    sub_release_nats(c, s, true, err, &st); /* deletes the durable consumer */
    return st;
}

void mb__js_sub_free(mb__js_sub *q)
{
    if (!q)
        return;
    pthread_mutex_destroy(&q->lock);
    pthread_cond_destroy(&q->cond);
    mb__free(q);
}

void mb__js_close(mb_client *c)
{
    mb__js *j = c->js;
    if (!j)
        return;
    atomic_store(&j->closed, true);
    /* Stop every fetch thread; destroy (not unsubscribe) keeps the durables. */
    pthread_mutex_lock(&c->subs_lock);
    MB__SUBS_EACH(c, s)
    {
        if (s->js) {
            atomic_store(&s->active, false);
            stop_thread(s->js);
        }
    }
    pthread_mutex_unlock(&c->subs_lock);
    MB__SUBS_EACH(c, s)
    {
        if (!s->js)
            continue;
        if (s->js->thread_started) {
            pthread_join(s->js->thread, NULL);
            s->js->thread_started = false;
        }
        sub_release_nats(c, s, false, NULL, NULL);
    }
    /* Threads detached by an unsubscribe from their own handler. */
    for (int i = 0; i < JS_CLOSE_WAIT_MS && atomic_load(&j->threads_alive) > 0; i++) {
        struct timespec ts = {0, 1000000L};
        nanosleep(&ts, NULL);
    }
    /* Wait (bounded) for the publish acks, then fail what is still pending
     * (the client is closing: it goes to the DLQ). */
    uint64_t deadline = mb_clock_mono_ns(NULL) + (uint64_t)JS_CLOSE_WAIT_MS * 1000000u;
    for (size_t i = 0; i < c->npool; i++) {
        js_slot *sl = &j->slots[i];
        pthread_mutex_lock(&sl->lock);
        if (sl->ctx && sl->used) {
            uint64_t now = mb_clock_mono_ns(NULL);
            if (now < deadline) {
                jsPubOptions po;
                jsPubOptions_Init(&po);
                po.MaxWait = (int64_t)((deadline - now) / 1000000u) + 1;
                js_PublishAsyncComplete(sl->ctx, &po);
            }
        }
        ctx_retire(j, sl, "client closed before the ack");
        pthread_mutex_unlock(&sl->lock);
    }
    for (int i = 0; i < JS_CLOSE_WAIT_MS && atomic_load(&j->cb_active) > 0; i++) {
        struct timespec ts = {0, 1000000L};
        nanosleep(&ts, NULL);
    }
}

void mb__js_free(mb_client *c)
{
    mb__js *j = c->js;
    if (!j)
        return;
    for (size_t i = 0; i < MB_CLIENT_MAX_POOL; i++) {
        if (j->slots[i].ctx)
            jsCtx_Destroy(j->slots[i].ctx);
        pthread_mutex_destroy(&j->slots[i].lock);
    }
    for (size_t i = 0; i < j->ncrit; i++)
        mb__free(j->crit[i]);
    pthread_mutex_destroy(&j->ensure_lock);
    mb__free(j);
    c->js = NULL;
}

void mb_client_js_stats_get(mb_client *c, mb_client_js_stats *out)
{
    memset(out, 0, sizeof *out);
    if (!c || !c->js)
        return;
    mb__js *j = c->js;
    out->acks = mb_counter_get(j->m_acks);
    out->ack_failures = mb_counter_get(j->m_ack_fail);
    out->naks = mb_counter_get(j->m_naks);
    out->terms = mb_counter_get(j->m_terms);
    out->redeliveries = mb_counter_get(j->m_redeliv);
    out->publish_acks = mb_counter_get(j->m_pub_acks);
    out->publish_ack_failures = mb_counter_get(j->m_pub_ack_fail);
    out->publish_pending = mb_gauge_get(j->m_pending);
}
