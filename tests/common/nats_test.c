/* common/nats against a real nats-server (CMS_TEST_NATS_URL).
 *
 * Every test runs one loop with a watchdog (tests/lib/natsfx.h); handlers
 * check that they run on the loop's thread. Streams, consumers and subjects
 * carry the pid, so runs of other test binaries on the same server are not
 * disturbed. A blocking nats.c connection ("side" connection) prepares and
 * checks server state outside the loop. */
#include <criterion/criterion.h>
#include <nats/nats.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "bus.h"
#include "metrics.h"
#include "nats.h"
#include "natsfx.h"
#include "testenv.h"

#define NS_PER_MS INT64_C(1000000)

/* ------------------------------------------------------------------------ */
/* core request / reply */

#define NREQ 200

typedef struct core_ctx {
    natsfx f;
    char svc[64], inbox[64];
    int requests, replies, bad_replies;
    bool seen[NREQ];
} core_ctx;

static void on_request(void *arg, cms_nats_msg *m)
{
    core_ctx *c = arg;
    natsfx_check_thread(&c->f);
    c->requests++;
    char out[64];
    int len = snprintf(out, sizeof out, "pong:%.*s", (int)cms_nats_msg_len(m),
                       (const char *)cms_nats_msg_data(m));
    const char *hdrs[] = {
        "X-Echo", cms_nats_msg_header(m, "X-Req") ? cms_nats_msg_header(m, "X-Req") : "?", NULL};
    cr_assert_eq(cms_nats_respond(c->f.n, m, hdrs, out, (size_t)len), CMS_NATS_OK);
    cms_nats_msg_destroy(m);
}

static void on_reply(void *arg, cms_nats_msg *m)
{
    core_ctx *c = arg;
    natsfx_check_thread(&c->f);
    int i = -1;
    char body[64];
    snprintf(body, sizeof body, "%.*s", (int)cms_nats_msg_len(m),
             (const char *)cms_nats_msg_data(m));
    const char *echo = cms_nats_msg_header(m, "X-Echo");
    if (sscanf(body, "pong:%d", &i) != 1 || i < 0 || i >= NREQ || c->seen[i] || echo == NULL ||
        strtol(echo, NULL, 10) != i)
        c->bad_replies++;
    else
        c->seen[i] = true;
    cr_assert_eq(cms_nats_msg_stream_seq(m), 0);
    cr_assert_eq(cms_nats_msg_ack(m), CMS_NATS_EINVAL, "a core message cannot be acked");
    cms_nats_msg_destroy(m);
    if (++c->replies == NREQ)
        natsfx_close(&c->f);
}

/* NREQ requests answered on the loop's thread, through a cms_nats on url. */
static void echo_round_trips(const char *url)
{
    core_ctx *c = calloc(1, sizeof *c);
    natsfx_init_at(&c->f, url, "nats-test", "t", 20000, NULL);
    snprintf(c->svc, sizeof c->svc, "%s.cmd.echo", c->f.tag);
    snprintf(c->inbox, sizeof c->inbox, "%s.inbox", c->f.tag);
    cms_nats_sub *s1 = NULL, *s2 = NULL;
    cr_assert_eq(cms_nats_subscribe(c->f.n, c->svc, "echo", on_request, c, &s1), 0);
    cr_assert_eq(cms_nats_subscribe(c->f.n, c->inbox, NULL, on_reply, c, &s2), 0);
    for (int i = 0; i < NREQ; i++) {
        char data[16], num[16];
        snprintf(data, sizeof data, "%d", i);
        snprintf(num, sizeof num, "%d", i);
        const char *hdrs[] = {"X-Req", num, NULL};
        cr_assert_eq(cms_nats_publish_request(c->f.n, c->svc, c->inbox, hdrs, data, strlen(data)),
                     CMS_NATS_OK);
    }
    natsfx_finish(&c->f);
    cr_assert_eq(c->requests, NREQ);
    cr_assert_eq(c->replies, NREQ);
    cr_assert_eq(c->bad_replies, 0);
    free(c);
    (void)nats_CloseAndWait(5000);
}

Test(nats, core_request_reply_on_loop_thread)
{
    echo_round_trips(cms_test_env("CMS_TEST_NATS_URL"));
}

/* "URL,URL" is several servers (of one cluster), not one malformed URL: a
 * port nothing listens on, then the test server, blanks around them */
Test(nats, a_comma_separated_url_list_is_several_servers)
{
    char urls[512];
    snprintf(urls, sizeof urls, "nats://127.0.0.1:%d , %s", cms_test_free_port(),
             cms_test_env("CMS_TEST_NATS_URL"));
    echo_round_trips(urls);
}

/* ------------------------------------------------------------------------ */
/* queue groups */

#define NWORK 400

typedef struct group_ctx {
    natsfx f;
    int a, b, other;
    cms_nats_sub *sa, *sb, *so;
} group_ctx;

static void group_check_done(group_ctx *c)
{
    if (c->a + c->b == NWORK && c->other == NWORK)
        natsfx_close(&c->f);
}

static void on_a(void *arg, cms_nats_msg *m)
{
    group_ctx *c = arg;
    natsfx_check_thread(&c->f);
    c->a++;
    cms_nats_msg_destroy(m);
    group_check_done(c);
}

static void on_b(void *arg, cms_nats_msg *m)
{
    group_ctx *c = arg;
    natsfx_check_thread(&c->f);
    c->b++;
    cms_nats_msg_destroy(m);
    group_check_done(c);
}

static void on_other(void *arg, cms_nats_msg *m)
{
    group_ctx *c = arg;
    natsfx_check_thread(&c->f);
    c->other++;
    cms_nats_msg_destroy(m);
    group_check_done(c);
}

Test(nats, queue_groups_split_work)
{
    group_ctx *c = calloc(1, sizeof *c);
    natsfx_init(&c->f, "nats-test", "t", 20000, NULL);
    char subj[64];
    snprintf(subj, sizeof subj, "%s.cmd.work", c->f.tag);
    cr_assert_eq(cms_nats_subscribe(c->f.n, subj, "workers", on_a, c, &c->sa), 0);
    cr_assert_eq(cms_nats_subscribe(c->f.n, subj, "workers", on_b, c, &c->sb), 0);
    cr_assert_eq(cms_nats_subscribe(c->f.n, subj, "audit", on_other, c, &c->so), 0);
    for (int i = 0; i < NWORK; i++)
        cr_assert_eq(cms_nats_publish(c->f.n, subj, NULL, "w", 1), CMS_NATS_OK);
    natsfx_finish(&c->f);
    cr_assert_eq(c->a + c->b, NWORK);
    cr_assert_gt(c->a, 0, "queue group member a got nothing");
    cr_assert_gt(c->b, 0, "queue group member b got nothing");
    cr_assert_eq(c->other, NWORK, "another group gets every message");
    free(c);
    (void)nats_CloseAndWait(5000);
}

/* ------------------------------------------------------------------------ */
/* unsubscribe: no handler call afterwards, and the subscription is freed */

typedef struct unsub_ctx {
    natsfx f;
    char subj[64], probe[64];
    cms_nats_sub *s, *p;
    int got, probes;
} unsub_ctx;

/* Round one reaches both subscriptions (their nats.c threads race, so wait
 * for both); then unsubscribe and send a second round. */
static void unsub_round(unsub_ctx *c)
{
    if (c->got == 1 && c->probes == 1) {
        cms_nats_unsubscribe(c->s);
        c->s = NULL;
        cr_assert_eq(cms_nats_publish(c->f.n, c->subj, NULL, "x", 1), CMS_NATS_OK);
        cr_assert_eq(cms_nats_publish(c->f.n, c->probe, NULL, "p", 1), CMS_NATS_OK);
    } else if (c->probes == 2) {
        natsfx_close(&c->f);
    }
}

static void on_unsub_msg(void *arg, cms_nats_msg *m)
{
    unsub_ctx *c = arg;
    natsfx_check_thread(&c->f);
    c->got++;
    cms_nats_msg_destroy(m);
    unsub_round(c);
}

static void on_probe(void *arg, cms_nats_msg *m)
{
    unsub_ctx *c = arg;
    natsfx_check_thread(&c->f);
    cms_nats_msg_destroy(m);
    c->probes++;
    unsub_round(c);
}

Test(nats, unsubscribe_stops_delivery)
{
    unsub_ctx *c = calloc(1, sizeof *c);
    natsfx_init(&c->f, "nats-test", "t", 20000, NULL);
    snprintf(c->subj, sizeof c->subj, "%s.u", c->f.tag);
    snprintf(c->probe, sizeof c->probe, "%s.probe", c->f.tag);
    cr_assert_eq(cms_nats_subscribe(c->f.n, c->subj, NULL, on_unsub_msg, c, &c->s), 0);
    cr_assert_eq(cms_nats_subscribe(c->f.n, c->probe, NULL, on_probe, c, &c->p), 0);
    cr_assert_eq(cms_nats_publish(c->f.n, c->subj, NULL, "x", 1), CMS_NATS_OK);
    cr_assert_eq(cms_nats_publish(c->f.n, c->probe, NULL, "p", 1), CMS_NATS_OK);
    natsfx_finish(&c->f);
    cr_assert_eq(c->got, 1, "only the message before unsubscribe is handled");
    cr_assert_eq(c->probes, 2);
    free(c);
    (void)nats_CloseAndWait(5000);
}

/* ------------------------------------------------------------------------ */
/* full queue: core messages are dropped and counted, never block nats.c */

#define NFLOOD 300
#define FLOOD_CAP 8

typedef struct flood_ctx {
    natsfx f;
    natsfx_side s;
    char subj[64];
    int handled;
    uint64_t dropped0;
    cms_counter *dropped;
} flood_ctx;

static uint64_t flood_dropped(flood_ctx *c)
{
    return cms_counter_get(c->dropped) - c->dropped0;
}

static void on_flood(void *arg, cms_nats_msg *m)
{
    flood_ctx *c = arg;
    cms_nats_msg_destroy(m);
    if (c->handled++ == 0) {
        /* Holds the loop on purpose while another connection floods the
         * subject: the queue must refuse without blocking nats.c's thread. */
        for (int i = 1; i < NFLOOD; i++)
            cr_assert_eq(natsConnection_Publish(c->s.nc, c->subj, "f", 1), NATS_OK);
        cr_assert_eq(natsConnection_Flush(c->s.nc), NATS_OK);
        double deadline = cms_test_now_ms() + 10000;
        /* all arrive while the loop is held: queue_cap queued, the rest dropped */
        while (flood_dropped(c) < NFLOOD - 1 - FLOOD_CAP && cms_test_now_ms() < deadline) {
        }
        cr_assert_eq(flood_dropped(c), NFLOOD - 1 - FLOOD_CAP);
    }
}

static void on_flood_check(uv_timer_t *t)
{
    flood_ctx *c = t->data;
    if ((uint64_t)c->handled + flood_dropped(c) == NFLOOD) {
        uv_timer_stop(t);
        uv_close((uv_handle_t *)t, NULL);
        natsfx_close(&c->f);
    }
}

Test(nats, full_queue_drops_core_messages)
{
    flood_ctx *c = calloc(1, sizeof *c);
    cms_nats_options o = {.name = "nats-test", .queue_cap = FLOOD_CAP};
    natsfx_init(&c->f, "nats-test", "t", 20000, &o);
    natsfx_side_open(&c->s);
    c->dropped =
        cms_metrics_counter(cms_metrics_default(), "cms_nats_messages_dropped_total",
                            "Core NATS messages dropped because the hand-off queue was full", NULL);
    cr_assert_not_null(c->dropped);
    c->dropped0 = cms_counter_get(c->dropped);
    snprintf(c->subj, sizeof c->subj, "%s.flood", c->f.tag);
    cms_nats_sub *s = NULL;
    cr_assert_eq(cms_nats_subscribe(c->f.n, c->subj, NULL, on_flood, c, &s), 0);
    cr_assert_eq(cms_nats_publish(c->f.n, c->subj, NULL, "f", 1), CMS_NATS_OK);
    uv_timer_t check;
    uv_timer_init(&c->f.loop, &check);
    check.data = c;
    uv_timer_start(&check, on_flood_check, 10, 10);
    natsfx_finish(&c->f);
    cr_assert_gt(flood_dropped(c), 0);
    cr_assert_eq((uint64_t)c->handled + flood_dropped(c), NFLOOD);
    cr_assert_eq(c->handled, 1 + FLOOD_CAP);
    natsfx_side_close(&c->s);
    free(c);
    (void)nats_CloseAndWait(5000);
}

/* ------------------------------------------------------------------------ */
/* stream provisioning */

typedef struct prov_ctx {
    natsfx f;
    int done;
    cms_nats_err err;
} prov_ctx;

static void on_provisioned(void *arg, cms_nats_err err)
{
    prov_ctx *c = arg;
    natsfx_check_thread(&c->f);
    c->done++;
    c->err = err;
    uv_stop(&c->f.loop);
}

static void prov_run(prov_ctx *c)
{
    int before = c->done;
    uv_run(&c->f.loop, UV_RUN_DEFAULT);
    cr_assert_eq(c->done, before + 1);
    cr_assert_eq(c->err, CMS_NATS_OK, "provisioning: %s", cms_nats_strerror(c->err));
}

Test(nats, provision_streams_idempotent)
{
    prov_ctx *c = calloc(1, sizeof *c);
    natsfx_init(&c->f, "nats-test", "t", 30000, NULL);
    cr_assert_eq(cms_bus_provision(c->f.n, on_provisioned, c), 0);
    prov_run(c);

    natsfx_side s;
    natsfx_side_open(&s);
    jsStreamInfo *ev = natsfx_side_info(&s, "CMS_EVENTS");
    cr_assert_eq(ev->Config->SubjectsLen, 1);
    cr_assert_str_eq(ev->Config->Subjects[0], "cms.events.>");
    cr_assert_eq(ev->Config->Storage, js_FileStorage);
    cr_assert_eq(ev->Config->Duplicates, INT64_C(120000) * NS_PER_MS);
    cr_assert_eq(ev->Config->MaxAge, INT64_C(30) * 24 * 3600 * 1000 * NS_PER_MS);
    int64_t created = ev->Created;
    jsStreamInfo_Destroy(ev);
    jsStreamInfo *dlq = natsfx_side_info(&s, "CMS_DLQ");
    cr_assert_str_eq(dlq->Config->Subjects[0], "cms.dlq.>");
    cr_assert_eq(dlq->Config->Storage, js_FileStorage);
    cr_assert_eq(dlq->Config->MaxAge, INT64_C(90) * 24 * 3600 * 1000 * NS_PER_MS);
    cr_assert_not(dlq->Config->DenyDelete);
    jsStreamInfo_Destroy(dlq);
    /* the audit chain's checkpoints: nothing leaves the stream, and the
     * server refuses to purge it or delete a message */
    jsStreamInfo *cp = natsfx_side_info(&s, "CMS_AUDIT_CHECKPOINTS");
    cr_assert_str_eq(cp->Config->Subjects[0], "cms.audit.checkpoints.>");
    cr_assert(cp->Config->DenyDelete && cp->Config->DenyPurge);
    cr_assert_eq(cp->Config->MaxAge, 0);
    jsStreamInfo_Destroy(cp);
    jsErrCode jerr = 0;
    cr_assert_neq(js_PurgeStream(s.js, "CMS_AUDIT_CHECKPOINTS", NULL, &jerr), NATS_OK,
                  "a purge of CMS_AUDIT_CHECKPOINTS was allowed");

    /* second run: nothing to do, the stream is the same one */
    cr_assert_eq(cms_bus_provision(c->f.n, on_provisioned, c), 0);
    prov_run(c);
    ev = natsfx_side_info(&s, "CMS_EVENTS");
    cr_assert_eq(ev->Created, created, "the second run re-created the stream");
    jsStreamInfo_Destroy(ev);
    natsfx_side_close(&s);

    natsfx_close(&c->f);
    natsfx_finish(&c->f);
    free(c);
    (void)nats_CloseAndWait(5000);
}

Test(nats, provision_uses_existing_stream_with_other_settings)
{
    prov_ctx *c = calloc(1, sizeof *c);
    natsfx_init(&c->f, "nats-test", "t", 30000, NULL);
    char name[64], subj[64];
    snprintf(name, sizeof name, "T%d_PRE", (int)getpid());
    snprintf(subj, sizeof subj, "%s.pre.>", c->f.tag);
    natsfx_side s;
    natsfx_side_open(&s);
    natsfx_side_stream(&s, name, subj, 3600 * 1000); /* one hour, not the 30 days asked below */

    cms_nats_stream_spec spec = {.name = name,
                                 .subject = subj,
                                 .max_age_ms = INT64_C(30) * 24 * 3600 * 1000,
                                 .duplicates_ms = 120000};
    cr_assert_eq(cms_nats_provision(c->f.n, &spec, 1, on_provisioned, c), 0);
    prov_run(c);
    jsStreamInfo *si = natsfx_side_info(&s, name);
    cr_assert_eq(si->Config->MaxAge, INT64_C(3600) * 1000 * NS_PER_MS,
                 "an operator's stream is not changed");
    jsStreamInfo_Destroy(si);

    /* and a missing one is created with what was asked */
    natsfx_side_drop_stream(&s, name);
    cr_assert_eq(cms_nats_provision(c->f.n, &spec, 1, on_provisioned, c), 0);
    prov_run(c);
    si = natsfx_side_info(&s, name);
    cr_assert_eq(si->Config->MaxAge, spec.max_age_ms * NS_PER_MS);
    cr_assert_eq(si->Config->Duplicates, spec.duplicates_ms * NS_PER_MS);
    jsStreamInfo_Destroy(si);
    natsfx_side_drop_stream(&s, name);
    natsfx_side_close(&s);

    natsfx_close(&c->f);
    natsfx_finish(&c->f);
    free(c);
    (void)nats_CloseAndWait(5000);
}

/* ------------------------------------------------------------------------ */
/* JetStream publish with the in-flight cap */

#define NPUB 5000
#define PUB_CAP 64

typedef struct pub_ctx {
    natsfx f;
    char subj[64], stream[64];
    int next, acked, errors, busy, max_inflight, room_calls;
    bool seq_seen[NPUB + 1];
    int bad_seq, bad_stream;
    int dup_phase; /* 0 publishing, 1 waiting for the duplicate's answer */
    bool dup_result;
} pub_ctx;

static void pub_pump(pub_ctx *c);

static void on_dup_done(void *arg, cms_nats_err err, const cms_nats_pub_ack *ack)
{
    bool duplicate = ack->duplicate;
    uint64_t seq = ack->seq;
    pub_ctx *c = arg;
    natsfx_check_thread(&c->f);
    cr_assert_eq(err, CMS_NATS_OK);
    c->dup_result = duplicate;
    cr_assert_leq(seq, NPUB, "a duplicate reports the original's sequence");
    natsfx_close(&c->f);
}

static void on_pub_done(void *arg, cms_nats_err err, const cms_nats_pub_ack *ack)
{
    bool duplicate = ack->duplicate;
    uint64_t seq = ack->seq;
    pub_ctx *c = arg;
    natsfx_check_thread(&c->f);
    if (err != CMS_NATS_OK || duplicate) {
        c->errors++;
    } else {
        if (seq == 0 || seq > NPUB || c->seq_seen[seq])
            c->bad_seq++;
        else
            c->seq_seen[seq] = true;
        if (strcmp(ack->stream, c->stream) != 0)
            c->bad_stream++;
    }
    if (++c->acked == NPUB) {
        cr_assert_eq(cms_nats_publish_inflight(c->f.n), 0);
        c->dup_phase = 1;
        cr_assert_eq(cms_nats_js_publish(c->f.n, c->subj, "id-0", NULL, "0", 1, on_dup_done, c),
                     CMS_NATS_OK);
    }
}

static void pub_pump(pub_ctx *c)
{
    while (c->next < NPUB) {
        char id[32], data[32];
        snprintf(id, sizeof id, "id-%d", c->next);
        int len = snprintf(data, sizeof data, "%d", c->next);
        cms_nats_err err =
            cms_nats_js_publish(c->f.n, c->subj, id, NULL, data, (size_t)len, on_pub_done, c);
        if (err == CMS_NATS_EBUSY) {
            c->busy++;
            return;
        }
        cr_assert_eq(err, CMS_NATS_OK, "publish: %s", cms_nats_strerror(err));
        c->next++;
        int inflight = cms_nats_publish_inflight(c->f.n);
        if (inflight > c->max_inflight)
            c->max_inflight = inflight;
    }
}

static void on_room(void *arg)
{
    pub_ctx *c = arg;
    natsfx_check_thread(&c->f);
    c->room_calls++;
    pub_pump(c);
}

Test(nats, js_publish_all_acked_under_cap_and_dedup)
{
    pub_ctx *c = calloc(1, sizeof *c);
    cms_nats_options o = {.name = "nats-test",
                          .max_publish_inflight = PUB_CAP,
                          .on_publish_room = on_room,
                          .room_arg = c};
    natsfx_init(&c->f, "nats-test", "t", 60000, &o);
    char name[64], filter[64];
    snprintf(name, sizeof name, "T%d_PUB", (int)getpid());
    snprintf(c->stream, sizeof c->stream, "%s", name);
    snprintf(filter, sizeof filter, "%s.pub.>", c->f.tag);
    snprintf(c->subj, sizeof c->subj, "%s.pub.x", c->f.tag);
    natsfx_side s;
    natsfx_side_open(&s);
    natsfx_side_stream(&s, name, filter, 0);

    pub_pump(c);
    natsfx_finish(&c->f);

    cr_assert_eq(c->acked, NPUB);
    cr_assert_eq(c->errors, 0);
    cr_assert_eq(c->bad_seq, 0);
    cr_assert_eq(c->bad_stream, 0, "every ack names the stream that stored the message");
    cr_assert_gt(c->busy, 0, "the in-flight cap was never reached");
    cr_assert_gt(c->room_calls, 0);
    cr_assert_leq(c->max_inflight, PUB_CAP);
    cr_assert(c->dup_result, "the same msg id twice must report duplicate");
    jsStreamInfo *si = natsfx_side_info(&s, name);
    cr_assert_eq(si->State.Msgs, (uint64_t)NPUB);
    jsStreamInfo_Destroy(si);
    natsfx_side_drop_stream(&s, name);
    natsfx_side_close(&s);
    free(c);
    (void)nats_CloseAndWait(5000);
}

/* ------------------------------------------------------------------------ */
/* probing what a stream holds */

enum { NPROBES = 6 };

typedef struct probe_ctx {
    natsfx f;
    int calls;
    cms_nats_err err;
    bool present[NPROBES];
} probe_ctx;

static void on_probed(void *arg, cms_nats_err err, const bool *present)
{
    probe_ctx *c = arg;
    natsfx_check_thread(&c->f);
    c->calls++;
    c->err = err;
    if (present != NULL)
        memcpy(c->present, present, sizeof c->present);
    natsfx_close(&c->f);
}

Test(nats, probe_tells_held_from_lost_messages)
{
    probe_ctx *c = calloc(1, sizeof *c);
    cms_nats_options o = {.name = "nats-test"};
    natsfx_init(&c->f, "nats-test", "t", 30000, &o);
    char name[64], filter[64], subj[64];
    snprintf(name, sizeof name, "T%d_PROBE", (int)getpid());
    snprintf(filter, sizeof filter, "%s.probe.>", c->f.tag);
    snprintf(subj, sizeof subj, "%s.probe.x", c->f.tag);
    natsfx_side s;
    natsfx_side_open(&s);
    natsfx_side_stream(&s, name, filter, 0);
    /* seqs 1..4 with ids m1..m4; 2 is deleted afterwards */
    for (int i = 1; i <= 4; i++) {
        char id[16];
        snprintf(id, sizeof id, "m%d", i);
        jsPubOptions po;
        jsPubOptions_Init(&po);
        po.MsgId = id;
        cr_assert_eq(js_Publish(NULL, s.js, subj, "x", 1, &po, NULL), NATS_OK);
    }
    cr_assert_eq(js_DeleteMsg(s.js, name, 2, NULL, NULL), NATS_OK);

    const cms_nats_probe probes[] = {
        {name, 1, "m1"},        /* there */
        {name, 2, "m2"},        /* deleted since: not lost */
        {name, 3, "other"},     /* another message at its place: lost */
        {name, 4, "m4"},        /* there */
        {name, 5, "m5"},        /* past the stream's end: lost */
        {"T_NO_SUCH", 1, "m1"}, /* no such stream: lost */
    };
    cr_assert_eq(cms_nats_probe_stream(c->f.n, probes, NPROBES, on_probed, c), CMS_NATS_OK);
    cr_assert_eq(cms_nats_probe_stream(c->f.n, probes, 0, on_probed, c), CMS_NATS_EINVAL);
    natsfx_finish(&c->f);

    cr_assert_eq(c->calls, 1);
    cr_assert_eq(c->err, CMS_NATS_OK, "%s", cms_nats_strerror(c->err));
    const bool want[] = {true, true, false, true, false, false};
    for (int i = 0; i < NPROBES; i++)
        cr_expect_eq(c->present[i], want[i], "probe %d: got %d", i, c->present[i]);
    natsfx_side_drop_stream(&s, name);
    natsfx_side_close(&s);
    free(c);
    (void)nats_CloseAndWait(5000);
}

/* ------------------------------------------------------------------------ */
/* pull consumer: credit bound */

#define NCON 2000
#define CON_MAX_ACK 100
#define CON_BATCH 32

typedef struct con_ctx {
    natsfx f;
    cms_nats_consumer *c;
    cms_nats_msg *held[CON_MAX_ACK * 2];
    int nheld, max_held, delivered, dups, over;
    uint8_t seen[NCON + 1];
    uv_timer_t acker;
} con_ctx;

static void on_con_msg(void *arg, cms_nats_msg *m)
{
    con_ctx *c = arg;
    natsfx_check_thread(&c->f);
    uint64_t seq = cms_nats_msg_stream_seq(m);
    cr_assert(seq >= 1 && seq <= NCON, "stream seq %llu", (unsigned long long)seq);
    if (c->seen[seq]++)
        c->dups++;
    c->delivered++;
    if (c->nheld >= (int)(sizeof c->held / sizeof c->held[0])) {
        c->over++;
        cr_assert_eq(cms_nats_msg_ack(m), CMS_NATS_OK);
        cms_nats_msg_destroy(m);
        return;
    }
    c->held[c->nheld++] = m;
    if (c->nheld > c->max_held)
        c->max_held = c->nheld;
}

/* Acks what the handler held, in bursts, so the credit runs out in between. */
static void on_acker(uv_timer_t *t)
{
    con_ctx *c = t->data;
    for (int i = 0; i < c->nheld; i++) {
        cr_assert_eq(cms_nats_msg_ack(c->held[i]), CMS_NATS_OK);
        cr_assert_eq(cms_nats_msg_ack(c->held[i]), CMS_NATS_EINVAL, "settled twice");
        cms_nats_msg_destroy(c->held[i]);
    }
    c->nheld = 0;
    if (c->delivered >= NCON) {
        uv_timer_stop(t);
        uv_close((uv_handle_t *)t, NULL);
        natsfx_close(&c->f);
    }
}

Test(nats, pull_consumer_respects_credit)
{
    con_ctx *c = calloc(1, sizeof *c);
    natsfx_init(&c->f, "nats-test", "t", 60000, NULL);
    char name[64], filter[64], subj[64], durable[64];
    snprintf(name, sizeof name, "T%d_CON", (int)getpid());
    snprintf(filter, sizeof filter, "%s.con.>", c->f.tag);
    snprintf(subj, sizeof subj, "%s.con.x", c->f.tag);
    snprintf(durable, sizeof durable, "d%d", (int)getpid());
    natsfx_side s;
    natsfx_side_open(&s);
    natsfx_side_stream(&s, name, filter, 0);
    natsfx_side_fill(&s, subj, NCON, NULL);

    cms_nats_consumer_options co = {.stream = name,
                                    .durable = durable,
                                    .filter_subject = filter,
                                    .max_ack_pending = CON_MAX_ACK,
                                    .fetch_batch = CON_BATCH};
    cr_assert_eq(cms_nats_consume(c->f.n, &co, on_con_msg, c, &c->c), 0);
    uv_timer_init(&c->f.loop, &c->acker);
    c->acker.data = c;
    uv_timer_start(&c->acker, on_acker, 3, 3);
    natsfx_finish(&c->f);

    cr_assert_eq(c->delivered, NCON);
    cr_assert_eq(c->dups, 0);
    cr_assert_eq(c->over, 0);
    cr_assert_leq(c->max_held, CON_MAX_ACK, "more messages outstanding than the credit");
    cr_assert_geq(c->max_held, CON_BATCH, "the credit bound was never exercised");

    jsConsumerInfo *ci = NULL;
    cr_assert_eq(js_GetConsumerInfo(&ci, s.js, name, durable, NULL, NULL), NATS_OK,
                 "the durable survives close");
    cr_assert_eq(ci->NumPending, 0);
    jsConsumerInfo_Destroy(ci);
    natsfx_side_drop_stream(&s, name);
    natsfx_side_close(&s);
    free(c);
    (void)nats_CloseAndWait(5000);
}

/* ------------------------------------------------------------------------ */
/* pull consumer: pause and resume */

#define NPAUSE 200

typedef struct pause_ctx {
    natsfx f;
    cms_nats_consumer *c;
    int delivered, at_pause, at_check;
    uv_timer_t t;
    int phase;
} pause_ctx;

static void on_pause_timer(uv_timer_t *t)
{
    pause_ctx *c = t->data;
    if (c->phase == 1) {
        /* a fetch under way at pause time has ended by now */
        c->at_check = c->delivered;
        c->phase = 2;
        uv_timer_start(t, on_pause_timer, 1200, 0);
    } else if (c->phase == 2) {
        cr_assert_eq(c->delivered, c->at_check, "delivered while paused");
        cr_assert_lt(c->delivered, NPAUSE);
        c->phase = 3;
        uv_close((uv_handle_t *)t, NULL);
        cms_nats_consumer_pause(c->c, false);
    }
}

static void on_pause_msg(void *arg, cms_nats_msg *m)
{
    pause_ctx *c = arg;
    natsfx_check_thread(&c->f);
    cr_assert_eq(cms_nats_msg_ack(m), CMS_NATS_OK);
    cms_nats_msg_destroy(m);
    c->delivered++;
    if (c->delivered == 20 && c->phase == 0) {
        cms_nats_consumer_pause(c->c, true);
        c->at_pause = c->delivered;
        c->phase = 1;
        uv_timer_start(&c->t, on_pause_timer, 1500, 0);
    }
    if (c->delivered == NPAUSE)
        natsfx_close(&c->f);
}

Test(nats, pull_consumer_pause_resume)
{
    pause_ctx *c = calloc(1, sizeof *c);
    natsfx_init(&c->f, "nats-test", "t", 30000, NULL);
    char name[64], filter[64], subj[64], durable[64];
    snprintf(name, sizeof name, "T%d_PAU", (int)getpid());
    snprintf(filter, sizeof filter, "%s.pau.>", c->f.tag);
    snprintf(subj, sizeof subj, "%s.pau.x", c->f.tag);
    snprintf(durable, sizeof durable, "p%d", (int)getpid());
    natsfx_side s;
    natsfx_side_open(&s);
    natsfx_side_stream(&s, name, filter, 0);
    natsfx_side_fill(&s, subj, NPAUSE, NULL);
    uv_timer_init(&c->f.loop, &c->t);
    c->t.data = c;

    cms_nats_consumer_options co = {
        .stream = name, .durable = durable, .max_ack_pending = 50, .fetch_batch = 10};
    cr_assert_eq(cms_nats_consume(c->f.n, &co, on_pause_msg, c, &c->c), 0);
    natsfx_finish(&c->f);
    cr_assert_eq(c->phase, 3);
    cr_assert_eq(c->delivered, NPAUSE);
    natsfx_side_drop_stream(&s, name);
    natsfx_side_close(&s);
    free(c);
    (void)nats_CloseAndWait(5000);
}

/* ------------------------------------------------------------------------ */
/* redelivery: destroyed unacked, nak, term */

typedef struct redo_ctx {
    natsfx f;
    int deliveries;
    uint64_t seq;
    double first_ms, second_ms;
    uv_timer_t quiet;
} redo_ctx;

static void on_quiet(uv_timer_t *t)
{
    redo_ctx *c = t->data;
    uv_close((uv_handle_t *)t, NULL);
    natsfx_close(&c->f);
}

static void on_redo_msg(void *arg, cms_nats_msg *m)
{
    redo_ctx *c = arg;
    natsfx_check_thread(&c->f);
    c->deliveries++;
    cr_assert_eq(cms_nats_msg_num_delivered(m), (uint64_t)c->deliveries);
    if (c->deliveries == 1) {
        c->seq = cms_nats_msg_stream_seq(m);
        c->first_ms = cms_test_now_ms();
        cms_nats_msg_destroy(m); /* unsettled: redelivered after AckWait */
    } else if (c->deliveries == 2) {
        c->second_ms = cms_test_now_ms();
        cr_assert_eq(cms_nats_msg_stream_seq(m), c->seq);
        cr_assert_eq(cms_nats_msg_in_progress(m), CMS_NATS_OK);
        cr_assert_eq(cms_nats_msg_nak(m, 0), CMS_NATS_OK);
        cms_nats_msg_destroy(m);
    } else if (c->deliveries == 3) {
        cr_assert_eq(cms_nats_msg_term(m), CMS_NATS_OK);
        cms_nats_msg_destroy(m);
        /* terminated: nothing more may come, even past AckWait */
        uv_timer_start(&c->quiet, on_quiet, 2500, 0);
    }
}

Test(nats, pull_consumer_redelivers_unacked)
{
    redo_ctx *c = calloc(1, sizeof *c);
    natsfx_init(&c->f, "nats-test", "t", 30000, NULL);
    char name[64], filter[64], subj[64], durable[64];
    snprintf(name, sizeof name, "T%d_RED", (int)getpid());
    snprintf(filter, sizeof filter, "%s.red.>", c->f.tag);
    snprintf(subj, sizeof subj, "%s.red.x", c->f.tag);
    snprintf(durable, sizeof durable, "r%d", (int)getpid());
    natsfx_side s;
    natsfx_side_open(&s);
    natsfx_side_stream(&s, name, filter, 0);
    natsfx_side_fill(&s, subj, 1, NULL);
    uv_timer_init(&c->f.loop, &c->quiet);
    c->quiet.data = c;

    cms_nats_consumer_options co = {.stream = name, .durable = durable, .ack_wait_ms = 1000};
    cms_nats_consumer *con = NULL;
    cr_assert_eq(cms_nats_consume(c->f.n, &co, on_redo_msg, c, &con), 0);
    natsfx_finish(&c->f);
    cr_assert_eq(c->deliveries, 3);
    cr_assert_geq(c->second_ms - c->first_ms, 800, "redelivered before AckWait");
    natsfx_side_drop_stream(&s, name);
    natsfx_side_close(&s);
    free(c);
    (void)nats_CloseAndWait(5000);
}

/* ------------------------------------------------------------------------ */
/* close with nothing connected yet, and arguments */

typedef struct early_ctx {
    natsfx f;
    int provisioned;
    cms_nats_err err;
} early_ctx;

static void on_early_prov(void *arg, cms_nats_err err)
{
    early_ctx *c = arg;
    c->provisioned++;
    c->err = err;
}

static void on_early_pub(void *arg, cms_nats_err err, const cms_nats_pub_ack *ack)
{
    (void)ack;
    early_ctx *c = arg;
    cr_assert_neq(err, CMS_NATS_OK);
    c->provisioned += 10;
}

Test(nats, close_right_after_create_and_bad_arguments)
{
    early_ctx *c = calloc(1, sizeof *c);
    natsfx_init(&c->f, "nats-test", "t", 30000, NULL);
    cr_assert_eq(cms_nats_publish(c->f.n, "", NULL, "x", 1), CMS_NATS_EINVAL);
    cr_assert_eq(cms_nats_js_publish(c->f.n, NULL, NULL, NULL, "x", 1, on_early_pub, c),
                 CMS_NATS_EINVAL);
    cr_assert_eq(cms_bus_provision(c->f.n, on_early_prov, c), 0);
    /* an unknown subject: no stream answers; the publish must still complete */
    char subj[64];
    snprintf(subj, sizeof subj, "%s.nostream", c->f.tag);
    cr_assert_eq(cms_nats_js_publish(c->f.n, subj, NULL, NULL, "x", 1, on_early_pub, c),
                 CMS_NATS_OK);
    natsfx_close(&c->f);
    cr_assert_eq(cms_nats_publish(c->f.n, subj, NULL, "x", 1), CMS_NATS_ECLOSED);
    natsfx_finish(&c->f);
    cr_assert_eq(c->provisioned, 11, "provisioning and the publish each complete once");
    free(c);
    (void)nats_CloseAndWait(5000);
}
