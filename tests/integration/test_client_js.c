/* SPDX-License-Identifier: MIT */
/*
 * Integration tests of mb_client's JetStream support (client_js.c) against a
 * real nats-server with JetStream (tests/support natsrv): the stream is
 * created and updated, critical publishes are stored (and deduplicated by
 * Nats-Msg-Id) and delivered through durable pull consumers whose handler
 * results ack, nak (redelivery) or term (DLQ), max deliveries go to the DLQ,
 * non-critical subjects stay on core NATS, poll mode runs JetStream handlers
 * in dispatch, and a durable consumer resumes after a server restart. The
 * server's view (stream and consumer info) is read with a separate raw
 * nats.c connection. Every wait polls a condition with a deadline.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <nats/nats.h>

#include "mudbus/client.h"
#include "natsrv.h"
#include "testutil.h"

#define STREAM "MUDBUS_CRITICAL"

/* ---- helpers ---- */

static void log_line(void *ctx, const char *line)
{
    (void)ctx;
    if (getenv("MB_TEST_VERBOSE"))
        fprintf(stderr, "  [client] %s\n", line);
}

/* A handler that answers from a script: script[i] for the i-th call, then
 * `then` for every later call. */
#define MAXCALLS 64
typedef struct jrec {
    pthread_mutex_t lock;
    _Atomic int count;
    uint64_t deliveries[MAXCALLS];
    char ids[MAXCALLS][32];
    mb_handled script[8];
    int nscript;
    mb_handled then;
    pthread_t thread;
} jrec;

static void jrec_init(jrec *r, mb_handled then)
{
    memset(r, 0, sizeof *r);
    pthread_mutex_init(&r->lock, NULL);
    r->then = then;
}

static mb_handled jrec_handler(void *ctx, const mb_msg *m)
{
    jrec *r = ctx;
    pthread_mutex_lock(&r->lock);
    int n = atomic_load(&r->count);
    if (n < MAXCALLS) {
        r->deliveries[n] = m->deliveries;
        const char *p = strstr(m->data, "\"message_id\":\"");
        if (p)
            snprintf(r->ids[n], sizeof r->ids[n], "%.*s", (int)strcspn(p + 14, "\""), p + 14);
    }
    r->thread = pthread_self();
    mb_handled h = n < r->nscript ? r->script[n] : r->then;
    atomic_store(&r->count, n + 1);
    pthread_mutex_unlock(&r->lock);
    return h;
}

typedef struct fixture {
    natsrv *srv;
    mb_client *c;
    mb_dlq *dlq;
    char dlqdir[64];
    natsConnection *raw;
    jsCtx *js;
} fixture;

static fixture F;

static int setup(void **state)
{
    (void)state;
    memset(&F, 0, sizeof F);
    snprintf(F.dlqdir, sizeof F.dlqdir, "/tmp/mbjs-dlq-XXXXXX");
    if (!mkdtemp(F.dlqdir))
        return -1;
    mb_dlq_opts dopts = {.create = true};
    if (mb_dlq_open(F.dlqdir, &dopts, &F.dlq, NULL) != MB_OK)
        return -1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    mb_client_destroy(F.c);
    F.c = NULL;
    jsCtx_Destroy(F.js);
    natsConnection_Destroy(F.raw);
    mb_dlq_close(F.dlq, NULL);
    natsrv_destroy(F.srv);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", F.dlqdir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", F.dlqdir);
    return 0;
}

static void start_js_server(void)
{
    natsrv_opts so = {.jetstream = true};
    assert_int_equal(natsrv_start(&so, &F.srv), 0);
    assert_int_equal(natsConnection_ConnectTo(&F.raw, natsrv_url(F.srv)), NATS_OK);
    assert_int_equal(natsConnection_JetStream(&F.js, F.raw, NULL), NATS_OK);
}

static void js_opts(mb_client_opts *o)
{
    mb_client_opts_default(o);
    o->servers[0] = natsrv_url(F.srv);
    o->name = "jstest";
    o->pool_size = 2;
    o->reconnect_wait_ms = 100;
    o->reconnect_jitter_ms = 20;
    o->connect_timeout_ms = 1000;
    o->dlq = F.dlq;
    o->log = log_line;
    o->retry.base_delay_ms = 20;
    o->retry.max_delay_ms = 100;
    o->js.enabled = true;
    o->js.durable_prefix = "t";
    o->js.fetch_timeout_ms = 200;
}

static void create_client(mb_client_opts *o)
{
    mb_err err = {0};
    mb_status st = mb_client_create(o, &F.c, &err);
    if (st != MB_OK)
        fail_msg("mb_client_create: %s: %s", mb_status_name(st), err.msg);
}

static void whisper_json(char *buf, size_t cap, const char *id, const char *text)
{
    snprintf(buf, cap,
             "{\"message_id\":\"%s\",\"timestamp\":\"2026-01-13T10:00:00Z\","
             "\"sender_id\":\"p1\",\"sender_name\":\"Armitage\",\"channel\":\"whisper\","
             "\"content\":\"%s\",\"target_id\":\"p2\"}",
             id, text);
}

static void pub_whisper(const char *id)
{
    char buf[512];
    whisper_json(buf, sizeof buf, id, "psst");
    mb_publish_disposition d = MB_PUB_DROPPED;
    mb_err err = {0};
    mb_status st =
        mb_client_publish(F.c, "chat.whisper.player.p2", buf, strlen(buf), NULL, &d, &err);
    if (st != MB_OK)
        fail_msg("publish %s: %s: %s", id, mb_status_name(st), err.msg);
    assert_int_equal(d, MB_PUB_SENT);
}

static int64_t stream_msgs(void)
{
    jsStreamInfo *si = NULL;
    if (js_GetStreamInfo(&si, F.js, STREAM, NULL, NULL) != NATS_OK)
        return -1;
    int64_t n = (int64_t)si->State.Msgs;
    jsStreamInfo_Destroy(si);
    return n;
}

/* The consumer's ack-pending and redelivered counts; false if it does not
 * exist. */
static bool consumer_state(const char *durable, int64_t *ack_pending, int64_t *redelivered)
{
    jsConsumerInfo *ci = NULL;
    if (js_GetConsumerInfo(&ci, F.js, STREAM, durable, NULL, NULL) != NATS_OK)
        return false;
    if (ack_pending)
        *ack_pending = ci->NumAckPending;
    if (redelivered)
        *redelivered = ci->NumRedelivered;
    jsConsumerInfo_Destroy(ci);
    return true;
}

static size_t dlq_depth(void)
{
    mb_dlq_flush(F.dlq, NULL);
    mb_dlq_stats s;
    mb_dlq_stats_get(F.dlq, &s);
    return (size_t)s.depth;
}

typedef struct stat_want {
    size_t offset; /* into mb_client_js_stats, a uint64_t */
    uint64_t n;
} stat_want;

static bool cond_stat(void *arg)
{
    stat_want *w = arg;
    mb_client_js_stats s;
    mb_client_js_stats_get(F.c, &s);
    uint64_t v;
    memcpy(&v, (const char *)&s + w->offset, sizeof v);
    return v >= w->n;
}

#define WAIT_STAT(field, n, ms)                                                                    \
    do {                                                                                           \
        stat_want w_ = {offsetof(mb_client_js_stats, field), (n)};                                 \
        if (!wait_for(cond_stat, &w_, (ms)))                                                       \
            fail_msg("timed out waiting for js stats " #field " >= %llu",                          \
                     (unsigned long long)(n));                                                     \
    } while (0)

static bool cond_consumer_settled(void *arg)
{
    int64_t pending = -1;
    return consumer_state(arg, &pending, NULL) && pending == 0;
}

static bool cond_stream_msgs(void *arg)
{
    return stream_msgs() == *(const int64_t *)arg;
}

static bool cond_dlq(void *arg)
{
    return dlq_depth() >= *(const size_t *)arg;
}

#define WHISPER_DURABLE "t_chat_whisper_player_-any"

/* ---- tests ---- */

/* Create a client with these critical patterns (a fresh default set when
 * n is 0) and destroy it again; the stream's subjects afterwards, joined by
 * spaces, into out. */
static void stream_subjects_after(const char *const *crit, size_t n, char *out, size_t cap)
{
    mb_client_opts o;
    js_opts(&o);
    for (size_t i = 0; i < n; i++)
        o.js.critical_subjects[i] = crit[i];
    if (n)
        o.js.ncritical = n;
    create_client(&o);
    jsStreamInfo *si = NULL;
    assert_int_equal(js_GetStreamInfo(&si, F.js, STREAM, NULL, NULL), NATS_OK);
    size_t len = 0;
    out[0] = '\0';
    for (int i = 0; i < si->Config->SubjectsLen; i++)
        len +=
            (size_t)snprintf(out + len, cap - len, "%s%s", i ? " " : "", si->Config->Subjects[i]);
    assert_true(len < cap);
    if (n == 0) {
        assert_int_equal(si->Config->Storage, js_FileStorage);
        assert_true(si->Config->Duplicates == (int64_t)120 * 1000000000);
        assert_true(si->Config->MaxAge == (int64_t)24 * 3600 * 1000000000);
    }
    jsStreamInfo_Destroy(si);
    mb_client_destroy(F.c);
    F.c = NULL;
}

static void test_stream_created_and_updated(void **state)
{
    (void)state;
    start_js_server();
    char subj[512];
    stream_subjects_after(NULL, 0, subj, sizeof subj);
    assert_string_equal(subj, "chat.whisper.player.* chat.system mutes.changed.*");

    /* Another client with one more critical pattern adds it. */
    const char *const more[] = {"chat.whisper.player.*", "chat.system", "mutes.changed.*",
                                "chat.party.*"};
    stream_subjects_after(more, 4, subj, sizeof subj);
    assert_string_equal(subj, "chat.whisper.player.* chat.system mutes.changed.* chat.party.*");

    /* A client with fewer critical patterns (a gateway's) takes none away,
     * and one whose pattern an existing subject covers adds nothing. */
    const char *const fewer[] = {"mutes.changed.*", "chat.party.p1"};
    stream_subjects_after(fewer, 2, subj, sizeof subj);
    assert_string_equal(subj, "chat.whisper.player.* chat.system mutes.changed.* chat.party.*");

    /* One with a new pattern adds just that. */
    const char *const other[] = {"events.game_tick"};
    stream_subjects_after(other, 1, subj, sizeof subj);
    assert_string_equal(
        subj, "chat.whisper.player.* chat.system mutes.changed.* chat.party.* events.game_tick");

    /* A wider pattern replaces the subject it covers (the server refuses
     * overlapping subjects in one stream). */
    const char *const wider[] = {"events.>"};
    stream_subjects_after(wider, 1, subj, sizeof subj);
    assert_string_equal(subj,
                        "chat.whisper.player.* chat.system mutes.changed.* chat.party.* events.>");

    /* What options make critical. */
    mb_client_opts o;
    js_opts(&o);
    assert_true(mb_client_opts_critical(&o, "mutes.changed.p1"));
    assert_true(mb_client_opts_critical(&o, "chat.whisper.player.*"));
    assert_false(mb_client_opts_critical(&o, "chat.say.room.r1"));
    assert_false(mb_client_opts_critical(&o, "mutes.changed"));
    o.js.critical_subjects[0] = "chat.>";
    assert_true(mb_client_opts_critical(&o, "chat.say.room.r1"));
    o.js.enabled = false;
    assert_false(mb_client_opts_critical(&o, "mutes.changed.p1"));

    /* Bad options are refused before connecting. */
    mb_client *c2 = NULL;
    mb_err err = {0};
    js_opts(&o);
    o.name = "bad";
    o.js.critical_subjects[0] = "chat..x";
    assert_int_equal(mb_client_create(&o, &c2, &err), MB_EINVAL);
    assert_null(c2);
    assert_non_null(strstr(err.msg, "critical_subjects[0]"));
}

static void test_no_jetstream_server(void **state)
{
    (void)state;
    assert_int_equal(natsrv_start(NULL, &F.srv), 0);
    mb_client_opts o;
    js_opts(&o);
    mb_client *c = NULL;
    mb_err err = {0};
    assert_int_equal(mb_client_create(&o, &c, &err), MB_EUNSUPPORTED);
    assert_null(c);
    assert_non_null(strstr(err.msg, "JetStream"));
}

static void test_publish_stored_delivered_acked(void **state)
{
    (void)state;
    start_js_server();
    mb_client_opts o;
    js_opts(&o);
    create_client(&o);
    jrec r;
    jrec_init(&r, MB_HANDLED_OK);
    mb_sub_id id = 0, id2 = 0;
    mb_err err = {0};
    assert_int_equal(
        mb_client_subscribe(F.c, "chat.whisper.player.*", NULL, jrec_handler, &r, &id, &err),
        MB_OK);
    assert_true(consumer_state(WHISPER_DURABLE, NULL, NULL));
    /* A second subscription on the same durable is refused. */
    mb_sub_id dupid = 0;
    assert_int_equal(
        mb_client_subscribe(F.c, "chat.whisper.player.*", NULL, jrec_handler, &r, &dupid, &err),
        MB_EEXIST);
    assert_int_equal(dupid, 0);
    pub_whisper("w1");
    int64_t one = 1;
    assert_true(wait_for(cond_stream_msgs, &one, 5000));
    assert_true(wait_count(&r.count, 1, 5000));
    assert_int_equal(r.deliveries[0], 1);
    assert_string_equal(r.ids[0], "w1");
    WAIT_STAT(acks, 1, 5000);
    WAIT_STAT(publish_acks, 1, 5000);
    assert_true(wait_for(cond_consumer_settled, WHISPER_DURABLE, 5000));
    int64_t pending = -1, redelivered = -1;
    assert_true(consumer_state(WHISPER_DURABLE, &pending, &redelivered));
    assert_int_equal(pending, 0);
    assert_int_equal(redelivered, 0);
    mb_client_js_stats s;
    mb_client_js_stats_get(F.c, &s);
    assert_int_equal(s.naks, 0);
    assert_int_equal(s.terms, 0);
    assert_int_equal(s.redeliveries, 0);
    assert_int_equal(s.publish_ack_failures, 0);
    assert_int_equal(atomic_load(&r.count), 1);

    /* The metrics are exported. */
    char *text = NULL;
    size_t len = 0;
    assert_int_equal(mb_client_metrics(F.c, &text, &len, NULL), MB_OK);
    assert_non_null(strstr(text, "mudbus_js_acks_total{client=\"jstest\"} 1"));
    assert_non_null(strstr(text, "mudbus_js_publish_acks_total{client=\"jstest\"} 1"));
    free(text);

    /* Unsubscribe deletes the durable; destroy keeps one. */
    assert_int_equal(mb_client_subscribe(F.c, "chat.system", "q1", jrec_handler, &r, &id2, &err),
                     MB_OK);
    assert_true(consumer_state("t_chat_system_q1", NULL, NULL));
    assert_int_equal(mb_client_unsubscribe(F.c, id, &err), MB_OK);
    assert_false(consumer_state(WHISPER_DURABLE, NULL, NULL));
    assert_int_equal(mb_client_unsubscribe(F.c, id, &err), MB_ENOTFOUND);
    mb_client_destroy(F.c);
    F.c = NULL;
    assert_true(consumer_state("t_chat_system_q1", NULL, NULL));
}

static void test_nak_redelivery(void **state)
{
    (void)state;
    start_js_server();
    mb_client_opts o;
    js_opts(&o);
    create_client(&o);
    jrec r;
    jrec_init(&r, MB_HANDLED_OK);
    r.script[0] = MB_HANDLED_RETRY;
    r.script[1] = MB_HANDLED_RETRY;
    r.nscript = 2;
    assert_int_equal(
        mb_client_subscribe(F.c, "chat.whisper.player.*", NULL, jrec_handler, &r, NULL, NULL),
        MB_OK);
    pub_whisper("n1");
    assert_true(wait_count(&r.count, 3, 8000));
    WAIT_STAT(acks, 1, 5000);
    assert_true(wait_for(cond_consumer_settled, WHISPER_DURABLE, 5000));
    assert_int_equal(atomic_load(&r.count), 3);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(r.deliveries[i], (uint64_t)i + 1);
        assert_string_equal(r.ids[i], "n1");
    }
    mb_client_js_stats s;
    mb_client_js_stats_get(F.c, &s);
    assert_int_equal(s.naks, 2);
    assert_int_equal(s.redeliveries, 2);
    assert_int_equal(s.terms, 0);
    assert_int_equal(dlq_depth(), 0);
}

static void test_term_to_dlq(void **state)
{
    (void)state;
    start_js_server();
    mb_client_opts o;
    js_opts(&o);
    create_client(&o);
    jrec r;
    jrec_init(&r, MB_HANDLED_FAIL);
    assert_int_equal(
        mb_client_subscribe(F.c, "chat.whisper.player.*", NULL, jrec_handler, &r, NULL, NULL),
        MB_OK);
    pub_whisper("f1");
    size_t one = 1;
    assert_true(wait_for(cond_dlq, &one, 5000));
    WAIT_STAT(terms, 1, 5000);
    assert_true(wait_for(cond_consumer_settled, WHISPER_DURABLE, 5000));
    int64_t redelivered = -1;
    assert_true(consumer_state(WHISPER_DURABLE, NULL, &redelivered));
    assert_int_equal(redelivered, 0);
    assert_int_equal(atomic_load(&r.count), 1);
    assert_int_equal(dlq_depth(), 1);
    mb_client_js_stats s;
    mb_client_js_stats_get(F.c, &s);
    assert_int_equal(s.acks, 0);
    assert_int_equal(s.naks, 0);
}

static void test_max_deliveries_to_dlq(void **state)
{
    (void)state;
    start_js_server();
    mb_client_opts o;
    js_opts(&o);
    o.js.max_deliver = 3;
    create_client(&o);
    jrec r;
    jrec_init(&r, MB_HANDLED_RETRY);
    assert_int_equal(
        mb_client_subscribe(F.c, "chat.whisper.player.*", NULL, jrec_handler, &r, NULL, NULL),
        MB_OK);
    pub_whisper("x1");
    size_t one = 1;
    assert_true(wait_for(cond_dlq, &one, 8000));
    WAIT_STAT(terms, 1, 5000);
    assert_true(wait_for(cond_consumer_settled, WHISPER_DURABLE, 5000));
    assert_int_equal(atomic_load(&r.count), 3);
    for (int i = 0; i < 3; i++)
        assert_int_equal(r.deliveries[i], (uint64_t)i + 1);
    mb_client_js_stats s;
    mb_client_js_stats_get(F.c, &s);
    assert_int_equal(s.naks, 2);
    assert_int_equal(s.terms, 1);
    assert_int_equal(dlq_depth(), 1);
}

static void test_dedup(void **state)
{
    (void)state;
    start_js_server();
    mb_client_opts o;
    js_opts(&o);
    create_client(&o);
    pub_whisper("same-id");
    pub_whisper("same-id");
    WAIT_STAT(publish_acks, 2, 5000);
    assert_int_equal(stream_msgs(), 1);
    pub_whisper("other-id");
    WAIT_STAT(publish_acks, 3, 5000);
    assert_int_equal(stream_msgs(), 2);
    /* The header is set: the stored message carries it. */
    natsMsg *m = NULL;
    assert_int_equal(js_GetMsg(&m, F.js, STREAM, 1, NULL, NULL), NATS_OK);
    const char *v = NULL;
    assert_int_equal(natsMsgHeader_Get(m, "Nats-Msg-Id", &v), NATS_OK);
    assert_string_equal(v, "same-id");
    natsMsg_Destroy(m);
}

static void test_non_critical_core(void **state)
{
    (void)state;
    start_js_server();
    mb_client_opts o;
    js_opts(&o);
    create_client(&o);
    jrec r;
    jrec_init(&r, MB_HANDLED_OK);
    assert_int_equal(
        mb_client_subscribe(F.c, "chat.say.room.*", NULL, jrec_handler, &r, NULL, NULL), MB_OK);
    assert_int_equal(mb_client_flush(F.c, 2000, NULL), MB_OK);
    char buf[512];
    snprintf(buf, sizeof buf,
             "{\"message_id\":\"s1\",\"timestamp\":\"2026-01-13T10:00:00Z\","
             "\"sender_id\":\"p1\",\"sender_name\":\"Armitage\",\"channel\":\"say\","
             "\"content\":\"hi\",\"room_id\":\"r1\"}");
    assert_int_equal(mb_client_publish(F.c, "chat.say.room.r1", buf, strlen(buf), NULL, NULL, NULL),
                     MB_OK);
    assert_true(wait_count(&r.count, 1, 5000));
    assert_int_equal(r.deliveries[0], 0); /* core NATS */
    assert_int_equal(mb_client_flush(F.c, 2000, NULL), MB_OK);
    assert_int_equal(stream_msgs(), 0);
    mb_client_js_stats s;
    mb_client_js_stats_get(F.c, &s);
    assert_int_equal(s.publish_acks, 0);
    assert_int_equal(s.publish_pending, 0);
    assert_false(consumer_state("t_chat_say_room_-any", NULL, NULL));
}

/* mb_client_subscribe_core on a critical pattern: a plain subscription that
 * sees the JetStream-published messages, with no durable consumer and no
 * acknowledgement; two such subscribers both see every message. */
static void test_core_subscription_of_critical(void **state)
{
    (void)state;
    start_js_server();
    mb_client_opts o;
    js_opts(&o);
    create_client(&o);
    jrec a, b;
    jrec_init(&a, MB_HANDLED_OK);
    jrec_init(&b, MB_HANDLED_OK);
    assert_int_equal(
        mb_client_subscribe_core(F.c, "chat.whisper.player.*", NULL, jrec_handler, &a, NULL, NULL),
        MB_OK);
    assert_int_equal(
        mb_client_subscribe_core(F.c, "chat.whisper.player.p2", NULL, jrec_handler, &b, NULL, NULL),
        MB_OK);
    assert_int_equal(mb_client_flush(F.c, 2000, NULL), MB_OK);
    pub_whisper("c1");
    pub_whisper("c2");
    assert_true(wait_count(&a.count, 2, 5000));
    assert_true(wait_count(&b.count, 2, 5000));
    assert_int_equal(a.deliveries[0], 0); /* core NATS: no delivery count */
    int64_t two = 2;
    assert_true(wait_for(cond_stream_msgs, &two, 5000)); /* still stored by JetStream */
    WAIT_STAT(publish_acks, 2, 5000);
    assert_false(consumer_state(WHISPER_DURABLE, NULL, NULL));
    mb_client_js_stats s;
    mb_client_js_stats_get(F.c, &s);
    assert_int_equal(s.acks, 0);
    /* An ordinary subscription of the same pattern is still a durable one. */
    jrec d;
    jrec_init(&d, MB_HANDLED_OK);
    assert_int_equal(
        mb_client_subscribe(F.c, "chat.whisper.player.*", NULL, jrec_handler, &d, NULL, NULL),
        MB_OK);
    assert_true(consumer_state(WHISPER_DURABLE, NULL, NULL));
}

static void test_poll_mode_dispatch(void **state)
{
    (void)state;
    start_js_server();
    mb_client_opts o;
    js_opts(&o);
    o.poll_mode = true;
    create_client(&o);
    int fd = mb_client_fd(F.c);
    assert_true(fd >= 0);
    jrec r;
    jrec_init(&r, MB_HANDLED_OK);
    r.script[0] = MB_HANDLED_RETRY; /* the nak, too, follows a dispatched handler */
    r.nscript = 1;
    assert_int_equal(
        mb_client_subscribe(F.c, "chat.whisper.player.*", NULL, jrec_handler, &r, NULL, NULL),
        MB_OK);
    pub_whisper("p1");
    WAIT_STAT(publish_acks, 1, 5000);
    /* The fetch thread queues it; nothing runs until dispatch. */
    int64_t one = 1;
    assert_true(wait_for(cond_stream_msgs, &one, 5000));
    assert_int_equal(atomic_load(&r.count), 0);
    uint64_t end = now_ms() + 8000;
    mb_client_js_stats s = {0};
    while (now_ms() < end) {
        mb_client_js_stats_get(F.c, &s);
        if (s.acks >= 1)
            break;
        int t = mb_client_timeout_ms(F.c);
        struct pollfd p = {.fd = fd, .events = POLLIN};
        assert_true(poll(&p, 1, t < 0 || t > 100 ? 100 : t) >= 0);
        assert_int_equal(mb_client_dispatch(F.c, 0, NULL), MB_OK);
    }
    assert_int_equal(s.acks, 1);
    assert_int_equal(s.naks, 1);
    assert_int_equal(atomic_load(&r.count), 2);
    assert_int_equal(r.deliveries[1], 2);
    assert_true(pthread_equal(r.thread, pthread_self()));
    assert_true(wait_for(cond_consumer_settled, WHISPER_DURABLE, 5000));
}

/* A handler that unsubscribes its own subscription (on the fetch thread). */
static _Atomic mb_sub_id SELF_ID;
static _Atomic int SELF_CALLS;
static _Atomic int SELF_UNSUB_ST = -1;

static mb_handled self_unsub_handler(void *ctx, const mb_msg *m)
{
    (void)ctx;
    (void)m;
    atomic_fetch_add(&SELF_CALLS, 1);
    atomic_store(&SELF_UNSUB_ST, (int)mb_client_unsubscribe(F.c, atomic_load(&SELF_ID), NULL));
    return MB_HANDLED_OK;
}

static bool cond_no_consumer(void *arg)
{
    return !consumer_state(arg, NULL, NULL);
}

static void test_unsubscribe_from_handler(void **state)
{
    (void)state;
    start_js_server();
    mb_client_opts o;
    js_opts(&o);
    create_client(&o);
    atomic_store(&SELF_CALLS, 0);
    atomic_store(&SELF_UNSUB_ST, -1);
    mb_sub_id id = 0;
    assert_int_equal(mb_client_subscribe(F.c, "chat.whisper.player.*", NULL, self_unsub_handler,
                                         NULL, &id, NULL),
                     MB_OK);
    atomic_store(&SELF_ID, id);
    pub_whisper("u1");
    assert_true(wait_count(&SELF_CALLS, 1, 5000));
    /* The fetch thread unsubscribes (deleting the durable) on its way out. */
    assert_true(wait_for(cond_no_consumer, WHISPER_DURABLE, 5000));
    assert_int_equal(atomic_load(&SELF_UNSUB_ST), MB_OK);
    pub_whisper("u2");
    WAIT_STAT(publish_acks, 2, 5000);
    assert_int_equal(atomic_load(&SELF_CALLS), 1);
    assert_int_equal(mb_client_unsubscribe(F.c, id, NULL), MB_ENOTFOUND);
}

typedef struct evcount {
    pthread_mutex_t lock;
    int errors;
    int dead;
    char last_error[256];
} evcount;

static void ev_listener(void *ctx, const mb_client_event *ev)
{
    evcount *e = ctx;
    pthread_mutex_lock(&e->lock);
    if (ev->type == MB_CLIENT_EV_ERROR) {
        e->errors++;
        snprintf(e->last_error, sizeof e->last_error, "%s", ev->text);
    } else if (ev->type == MB_CLIENT_EV_DEAD_LETTERED) {
        e->dead++;
    }
    pthread_mutex_unlock(&e->lock);
}

static void test_publish_ack_failure_retried_then_dlq(void **state)
{
    (void)state;
    start_js_server();
    mb_client_opts o;
    js_opts(&o);
    o.js.publish_ack_timeout_ms = 1000;
    create_client(&o);
    static evcount ev; /* outlives the test: the client's listener may still run */
    memset(&ev, 0, sizeof ev);
    pthread_mutex_init(&ev.lock, NULL);
    assert_int_equal(mb_client_listen(F.c, ev_listener, &ev, NULL), MB_OK);
    /* The stream disappears behind the client's back: every publish ack
     * fails (no responders), is retried with backoff, then dead-lettered. */
    assert_int_equal(js_DeleteStream(F.js, STREAM, NULL, NULL), NATS_OK);
    pub_whisper("lost1"); /* MB_PUB_SENT: handed to the async publisher */
    size_t one = 1;
    assert_true(wait_for(cond_dlq, &one, 8000));
    mb_client_js_stats s;
    mb_client_js_stats_get(F.c, &s);
    /* One ack failure per attempt: the first and retry.max_attempts - 1 retries. */
    assert_int_equal(s.publish_ack_failures, o.retry.max_attempts);
    assert_int_equal(s.publish_acks, 0);
    assert_int_equal(s.publish_pending, 0);
    assert_int_equal(dlq_depth(), 1);
    mb_client_health h;
    mb_client_health_get(F.c, &h);
    assert_int_equal(h.retry_pending, 0);
    uint64_t end = now_ms() + 3000;
    int errors = 0, dead = 0;
    char last[256];
    for (;;) {
        pthread_mutex_lock(&ev.lock);
        errors = ev.errors;
        dead = ev.dead;
        snprintf(last, sizeof last, "%s", ev.last_error);
        pthread_mutex_unlock(&ev.lock);
        if ((errors >= (int)o.retry.max_attempts && dead >= 1) || now_ms() > end)
            break;
        sleep_ms(5);
    }
    assert_true(errors >= (int)o.retry.max_attempts);
    assert_int_equal(dead, 1);
    if (!strstr(last, "JetStream publish ack on chat.whisper.player.p2"))
        fail_msg("last error event: %s", last);
}

static bool cond_live(void *arg)
{
    (void)arg;
    mb_client_health h;
    mb_client_health_get(F.c, &h);
    return h.live == h.pool_size;
}

static void test_server_restart_resumes(void **state)
{
    (void)state;
    start_js_server();
    mb_client_opts o;
    js_opts(&o);
    o.retry.jitter = MB_JITTER_NONE;
    o.retry.base_delay_ms = 1500; /* the nak'ed message waits across the restart */
    o.retry.max_delay_ms = 1500;
    o.js.ack_wait_ms = 2000;
    create_client(&o);
    jrec r;
    jrec_init(&r, MB_HANDLED_OK);
    r.script[0] = MB_HANDLED_RETRY;
    r.nscript = 1;
    assert_int_equal(
        mb_client_subscribe(F.c, "chat.whisper.player.*", NULL, jrec_handler, &r, NULL, NULL),
        MB_OK);
    pub_whisper("r1");
    assert_true(wait_count(&r.count, 1, 5000));
    WAIT_STAT(naks, 1, 5000);
    jsCtx_Destroy(F.js);
    F.js = NULL;
    natsConnection_Destroy(F.raw);
    F.raw = NULL;
    assert_int_equal(natsrv_stop(F.srv), 0);
    assert_int_equal(natsrv_restart(F.srv), 0);
    assert_true(wait_for(cond_live, NULL, 5000));
    assert_int_equal(natsConnection_ConnectTo(&F.raw, natsrv_url(F.srv)), NATS_OK);
    assert_int_equal(natsConnection_JetStream(&F.js, F.raw, NULL), NATS_OK);
    /* The durable survived; the pending message and a new one arrive. */
    assert_true(consumer_state(WHISPER_DURABLE, NULL, NULL));
    pub_whisper("r2");
    assert_true(wait_count(&r.count, 3, 8000));
    WAIT_STAT(acks, 2, 5000);
    bool r1 = false, r2 = false;
    pthread_mutex_lock(&r.lock);
    for (int i = 1; i < atomic_load(&r.count) && i < MAXCALLS; i++) {
        r1 |= strcmp(r.ids[i], "r1") == 0;
        r2 |= strcmp(r.ids[i], "r2") == 0;
    }
    pthread_mutex_unlock(&r.lock);
    assert_true(r1);
    assert_true(r2);
    assert_int_equal(stream_msgs(), 2);
    assert_true(wait_for(cond_consumer_settled, WHISPER_DURABLE, 5000));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_stream_created_and_updated, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_jetstream_server, setup, teardown),
        cmocka_unit_test_setup_teardown(test_publish_stored_delivered_acked, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nak_redelivery, setup, teardown),
        cmocka_unit_test_setup_teardown(test_term_to_dlq, setup, teardown),
        cmocka_unit_test_setup_teardown(test_max_deliveries_to_dlq, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dedup, setup, teardown),
        cmocka_unit_test_setup_teardown(test_non_critical_core, setup, teardown),
        cmocka_unit_test_setup_teardown(test_core_subscription_of_critical, setup, teardown),
        cmocka_unit_test_setup_teardown(test_poll_mode_dispatch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unsubscribe_from_handler, setup, teardown),
        cmocka_unit_test_setup_teardown(test_publish_ack_failure_retried_then_dlq, setup, teardown),
        cmocka_unit_test_setup_teardown(test_server_restart_resumes, setup, teardown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    nats_Close();
    return rc;
}
