/* common/nats's thread hand-off under ThreadSanitizer, against the real
 * nats-server of the test run: core request/reply, JetStream publishes at
 * the in-flight cap, a pull consumer that acks, naks and drops messages, a
 * nats-server restart in the middle, and close. Every nats.c thread, the
 * writer and the fetch thread hand work to the loop here; TSan checks that
 * none of it races. A plain program (Criterion cannot start under TSan):
 * exit status 0 means passed. */
#include <nats/nats.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "check.h"
#include "log.h"
#include "nats.h"
#include "testenv.h"
#include "testpub.h"

enum { NREQ = 100, NPUB = 1000, CAP = 32 };

typedef struct ctx {
    uv_loop_t loop;
    uv_timer_t watchdog, tick;
    uv_thread_t loop_thread;
    cms_nats *n;
    cms_nats_consumer *consumer;
    char svc[64], inbox[64], subj[64], stream[64], durable[64];
    int replies, wrong_thread;
    cms_test_pub pub; /* the JetStream publishes (tests/lib/testpub.h) */
    bool *seen;
    int nseen, naks, drops;
    int restart_state; /* 0 not yet, 1 running, 2 done */
    int closed;
} ctx;

static void on_thread(ctx *c)
{
    uv_thread_t self = uv_thread_self();
    if (!uv_thread_equal(&self, &c->loop_thread))
        c->wrong_thread++;
}

static void on_watchdog(uv_timer_t *t)
{
    ctx *c = t->data;
    CHECK(0, "watchdog: replies %d, stored %d, seen %d, restart %d", c->replies, c->pub.nstored,
          c->nseen, c->restart_state);
}

static void on_request(void *arg, cms_nats_msg *m)
{
    ctx *c = arg;
    on_thread(c);
    CHECK(cms_nats_respond(c->n, m, NULL, cms_nats_msg_data(m), cms_nats_msg_len(m)) == CMS_NATS_OK,
          "respond");
    cms_nats_msg_destroy(m);
}

static void on_reply(void *arg, cms_nats_msg *m)
{
    ctx *c = arg;
    on_thread(c);
    c->replies++;
    cms_nats_msg_destroy(m);
}

static void on_msg(void *arg, cms_nats_msg *m)
{
    ctx *c = arg;
    on_thread(c);
    char buf[16];
    snprintf(buf, sizeof buf, "%.*s", (int)cms_nats_msg_len(m), (const char *)cms_nats_msg_data(m));
    int i = (int)strtol(buf, NULL, 10);
    CHECK(i >= 0 && i < NPUB, "payload %s", buf);
    if (cms_nats_msg_num_delivered(m) == 1 && i % 13 == 0) {
        c->naks++;
        CHECK(cms_nats_msg_nak(m, 0) == CMS_NATS_OK, "nak");
    } else if (cms_nats_msg_num_delivered(m) == 1 && i % 17 == 0) {
        c->drops++; /* unsettled: redelivered after AckWait */
    } else {
        CHECK(cms_nats_msg_ack(m) == CMS_NATS_OK, "ack");
        if (!c->seen[i]) {
            c->seen[i] = true;
            c->nseen++;
        }
    }
    cms_nats_msg_destroy(m);
}

static void on_closed(void *arg)
{
    ctx *c = arg;
    c->closed++;
}

static void on_restarted(int status, void *arg)
{
    ctx *c = arg;
    CHECK(status == 0, "nats-restart failed");
    c->restart_state = 2;
}

static void on_tick(uv_timer_t *t)
{
    ctx *c = t->data;
    cms_nats_err err = cms_test_pub_pump(&c->pub, 20);
    CHECK(err == CMS_NATS_OK || err == CMS_NATS_EBUSY, "publish: %s", cms_nats_strerror(err));
    if (c->restart_state == 0 && c->pub.nstored >= NPUB / 3) {
        c->restart_state = 1;
        CHECK(cms_test_ctl_spawn(&c->loop, "nats-restart", on_restarted, c) == 0, "spawn");
    }
    if (c->restart_state == 2 && c->pub.nstored == NPUB && c->nseen == NPUB && c->replies == NREQ) {
        uv_close((uv_handle_t *)&c->tick, NULL);
        cms_nats_close(c->n, on_closed, c);
    }
}

int main(void)
{
    ctx *c = calloc(1, sizeof *c);
    CHECK(c != NULL, "calloc");
    c->seen = calloc(NPUB, sizeof *c->seen);
    cms_log_init("nats-tsan", CMS_LOG_ERROR, stderr);
    int pid = (int)getpid();
    snprintf(c->svc, sizeof c->svc, "ts%d.cmd", pid);
    snprintf(c->inbox, sizeof c->inbox, "ts%d.inbox", pid);
    snprintf(c->subj, sizeof c->subj, "ts%d.ev.x", pid);
    snprintf(c->stream, sizeof c->stream, "TS%d", pid);
    snprintf(c->durable, sizeof c->durable, "ts%d", pid);
    const char *url = cms_test_env("CMS_TEST_NATS_URL");

    /* the stream, made off the loop by a blocking side connection */
    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    CHECK(natsConnection_ConnectTo(&nc, url) == NATS_OK, "side connect");
    CHECK(natsConnection_JetStream(&js, nc, NULL) == NATS_OK, "side js");
    char filter[64];
    snprintf(filter, sizeof filter, "ts%d.ev.>", pid);
    const char *subjects[1] = {filter};
    jsStreamConfig cfg;
    jsStreamConfig_Init(&cfg);
    cfg.Name = c->stream;
    cfg.Subjects = subjects;
    cfg.SubjectsLen = 1;
    (void)js_DeleteStream(js, c->stream, NULL, NULL);
    CHECK(js_AddStream(NULL, js, &cfg, NULL, NULL) == NATS_OK, "add stream");
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);

    CHECK(uv_loop_init(&c->loop) == 0, "loop");
    c->loop_thread = uv_thread_self();
    uv_timer_init(&c->loop, &c->watchdog);
    c->watchdog.data = c;
    uv_timer_start(&c->watchdog, on_watchdog, 120000, 0);
    uv_unref((uv_handle_t *)&c->watchdog);
    uv_timer_init(&c->loop, &c->tick);
    c->tick.data = c;
    uv_timer_start(&c->tick, on_tick, 5, 5);

    cms_nats_options o = {
        .url = url, .name = "nats-tsan", .max_publish_inflight = CAP, .publish_timeout_ms = 2000};
    CHECK(cms_nats_create(&c->loop, &o, &c->n) == 0, "create");
    CHECK(cms_test_pub_init(&c->pub, c->n, c->subj, NPUB) == 0, "publishes");
    cms_nats_sub *s1 = NULL, *s2 = NULL;
    CHECK(cms_nats_subscribe(c->n, c->svc, "svc", on_request, c, &s1) == 0, "subscribe");
    CHECK(cms_nats_subscribe(c->n, c->inbox, NULL, on_reply, c, &s2) == 0, "subscribe");
    for (int i = 0; i < NREQ; i++)
        CHECK(cms_nats_publish_request(c->n, c->svc, c->inbox, NULL, "r", 1) == CMS_NATS_OK,
              "request");
    cms_nats_consumer_options co = {.stream = c->stream,
                                    .durable = c->durable,
                                    .max_ack_pending = 50,
                                    .fetch_batch = 16,
                                    .ack_wait_ms = 1000};
    CHECK(cms_nats_consume(c->n, &co, on_msg, c, &c->consumer) == 0, "consume");

    uv_run(&c->loop, UV_RUN_DEFAULT);
    CHECK(c->closed == 1, "closed %d", c->closed);
    int off_loop = c->wrong_thread + c->pub.wrong_thread;
    CHECK(off_loop == 0, "%d callbacks off the loop thread", off_loop);
    CHECK(c->nseen == NPUB && c->pub.nstored == NPUB, "seen %d stored %d", c->nseen,
          c->pub.nstored);
    CHECK(c->naks > 0 && c->drops > 0, "naks %d drops %d", c->naks, c->drops);
    cms_nats_destroy(c->n);
    uv_close((uv_handle_t *)&c->watchdog, NULL);
    uv_run(&c->loop, UV_RUN_DEFAULT);
    CHECK(uv_loop_close(&c->loop) == 0, "loop close");

    CHECK(natsConnection_ConnectTo(&nc, url) == NATS_OK, "side connect");
    CHECK(natsConnection_JetStream(&js, nc, NULL) == NATS_OK, "side js");
    (void)js_DeleteStream(js, c->stream, NULL, NULL);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    printf("nats tsan: replies %d, published %d (errors %d), consumed %d (naks %d, drops %d)\n",
           c->replies, c->pub.nstored, c->pub.errors, c->nseen, c->naks, c->drops);
    cms_test_pub_free(&c->pub);
    free(c->seen);
    free(c);
    (void)nats_CloseAndWait(5000);
    return 0;
}
