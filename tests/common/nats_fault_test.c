/* common/nats while nats-server freezes (SIGSTOP) and restarts.
 *
 * One loop publishes a stream of numbered messages to JetStream (retrying
 * failures with the same Nats-Msg-Id) and consumes them back through a pull
 * consumer, acking each, while tests/lib/ctl pulls the fault (spawned, so the
 * loop never waits for it). A 10 ms timer measures how late the loop turns.
 * The test ends when every message was acked by the stream, delivered at
 * least once, and the server reports nothing pending or unacked for the
 * consumer (checked on the thread pool with a side connection). */
#include <criterion/criterion.h>
#include <nats/nats.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "log.h"
#include "metrics.h"
#include "nats.h"
#include "testenv.h"
#include "testpub.h"

#define NMSG 3000
#define PER_TICK 10 /* publishes per 5 ms tick: spread over ~1.5 s plus retries */
#define LAG_TICK_MS 10
#define MAX_LAG_MS 100.0

typedef enum {
    FAULT_FREEZE,      /* 3 s: under the ping timeout, the connection survives */
    FAULT_FREEZE_LONG, /* 8 s: nats.c sees a stale connection and reconnects to a frozen server */
    FAULT_RESTART,
} fault_kind;

typedef struct ft {
    uv_loop_t loop;
    uv_timer_t watchdog, lag, pub_tick, fault_timer, check;
    uv_work_t work;
    cms_nats *n;
    cms_nats_consumer *consumer;
    fault_kind kind;
    char stream[64], subj[64], durable[64];

    /* publishing (tests/lib/testpub.h) */
    cms_test_pub pub;

    /* consuming */
    int delivered[NMSG];
    int ndistinct, nredelivered, bad;

    /* fault and completion */
    int fault_step; /* 0 none, 1 first verb running, 2 waiting, 3 second verb, 4 done */
    int ctl_failures;
    bool work_busy, quiet;
    uint64_t ack_pending, pending;
    int closed;

    uint64_t lag_prev;
    double lag_max_ms;
    uint64_t reconnects0;
    cms_counter *reconnects;

    natsConnection *side_nc; /* threadpool only */
    jsCtx *side_js;
} ft;

static void on_watchdog(uv_timer_t *t)
{
    ft *f = t->data;
    cr_assert_fail(
        "watchdog: acked %d/%d, distinct %d/%d, fault step %d, ack pending %llu, pending %llu",
        f->pub.nstored, NMSG, f->ndistinct, NMSG, f->fault_step, (unsigned long long)f->ack_pending,
        (unsigned long long)f->pending);
}

static void on_lag(uv_timer_t *t)
{
    ft *f = t->data;
    uint64_t now = uv_hrtime();
    if (f->lag_prev != 0) {
        double late = (double)(now - f->lag_prev) / 1e6 - LAG_TICK_MS;
        if (late > f->lag_max_ms)
            f->lag_max_ms = late;
    }
    f->lag_prev = now;
}

/* ---- publishing ---- */

static void on_pub_tick(uv_timer_t *t)
{
    ft *f = t->data;
    cms_nats_err err = cms_test_pub_pump(&f->pub, PER_TICK);
    cr_assert(err == CMS_NATS_OK || err == CMS_NATS_EBUSY, "publish: %s", cms_nats_strerror(err));
}

/* ---- consuming ---- */

static void on_msg(void *arg, cms_nats_msg *m)
{
    ft *f = arg;
    char buf[32];
    snprintf(buf, sizeof buf, "%.*s", (int)cms_nats_msg_len(m), (const char *)cms_nats_msg_data(m));
    char *end = NULL;
    long i = strtol(buf, &end, 10);
    if (end == buf || i < 0 || i >= NMSG) {
        f->bad++;
    } else {
        if (f->delivered[i]++ == 0)
            f->ndistinct++;
        else
            f->nredelivered++;
    }
    cr_assert_eq(cms_nats_msg_ack(m), CMS_NATS_OK);
    cms_nats_msg_destroy(m);
}

/* ---- the fault ---- */

static void fault_next(ft *f);

static void on_ctl_done(int status, void *arg)
{
    ft *f = arg;
    if (status != 0)
        f->ctl_failures++;
    fault_next(f);
}

static void on_fault_timer(uv_timer_t *t)
{
    fault_next(t->data);
}

static void spawn(ft *f, const char *verb)
{
    cr_assert_eq(cms_test_ctl_spawn(&f->loop, verb, on_ctl_done, f), 0, "spawn %s", verb);
}

/* freeze: start -> freeze -> 3 s (8 s) -> thaw -> done; restart: start -> restart -> done */
static void fault_next(ft *f)
{
    f->fault_step++;
    if (f->kind != FAULT_RESTART) {
        switch (f->fault_step) {
        case 1:
            spawn(f, "nats-freeze");
            break;
        case 2:
            uv_timer_start(&f->fault_timer, on_fault_timer, f->kind == FAULT_FREEZE ? 3000 : 8000,
                           0);
            break;
        case 3:
            spawn(f, "nats-thaw");
            break;
        default:
            f->fault_step = 4;
            break;
        }
    } else {
        if (f->fault_step == 1)
            spawn(f, "nats-restart");
        else
            f->fault_step = 4;
    }
}

/* ---- completion: the server's view, read off the loop ---- */

static void side_work(uv_work_t *w)
{
    ft *f = w->data;
    jsConsumerInfo *ci = NULL;
    if (js_GetConsumerInfo(&ci, f->side_js, f->stream, f->durable, NULL, NULL) == NATS_OK) {
        f->ack_pending = (uint64_t)ci->NumAckPending;
        f->pending = ci->NumPending;
        jsConsumerInfo_Destroy(ci);
    }
}

static void on_closed(void *arg)
{
    ft *f = arg;
    f->closed++;
}

static void finish(ft *f)
{
    uv_timer_stop(&f->lag);
    uv_timer_stop(&f->pub_tick);
    uv_timer_stop(&f->check);
    uv_close((uv_handle_t *)&f->lag, NULL);
    uv_close((uv_handle_t *)&f->pub_tick, NULL);
    uv_close((uv_handle_t *)&f->check, NULL);
    uv_close((uv_handle_t *)&f->fault_timer, NULL);
    cms_nats_close(f->n, on_closed, f);
}

static void side_done(uv_work_t *w, int status)
{
    ft *f = w->data;
    f->work_busy = false;
    cr_assert_eq(status, 0);
    if (f->ack_pending == 0 && f->pending == 0 && f->ndistinct == NMSG) {
        f->quiet = true;
        finish(f);
    }
}

static void on_check(uv_timer_t *t)
{
    ft *f = t->data;
    if (f->fault_step < 4 || f->pub.nstored < NMSG || f->ndistinct < NMSG || f->work_busy ||
        f->quiet)
        return;
    f->work_busy = true;
    f->work.data = f;
    cr_assert_eq(uv_queue_work(&f->loop, &f->work, side_work, side_done), 0);
}

static void on_start_fault(uv_timer_t *t)
{
    fault_next(t->data);
}

static void run(fault_kind kind)
{
    ft *f = calloc(1, sizeof *f);
    cr_assert_not_null(f);
    f->kind = kind;
    cms_log_init("nats-fault", CMS_LOG_ERROR, stderr);
    int pid = (int)getpid();
    snprintf(f->stream, sizeof f->stream, "F%d", pid);
    snprintf(f->subj, sizeof f->subj, "f%d.x", pid);
    snprintf(f->durable, sizeof f->durable, "f%d", pid);
    char filter[64];
    snprintf(filter, sizeof filter, "f%d.>", pid);

    /* the stream, made by a side connection that survives the restart */
    natsOptions *so = NULL;
    cr_assert_eq(natsOptions_Create(&so), NATS_OK);
    natsOptions_SetURL(so, cms_test_env("CMS_TEST_NATS_URL"));
    natsOptions_SetMaxReconnect(so, -1);
    natsOptions_SetReconnectWait(so, 100);
    cr_assert_eq(natsConnection_Connect(&f->side_nc, so), NATS_OK);
    natsOptions_Destroy(so);
    cr_assert_eq(natsConnection_JetStream(&f->side_js, f->side_nc, NULL), NATS_OK);
    jsStreamConfig cfg;
    jsStreamConfig_Init(&cfg);
    const char *subjects[1] = {filter};
    cfg.Name = f->stream;
    cfg.Subjects = subjects;
    cfg.SubjectsLen = 1;
    cfg.Storage = js_FileStorage;
    cfg.Duplicates = INT64_C(120000) * 1000000;
    (void)js_DeleteStream(f->side_js, f->stream, NULL, NULL);
    cr_assert_eq(js_AddStream(NULL, f->side_js, &cfg, NULL, NULL), NATS_OK);

    cr_assert_eq(uv_loop_init(&f->loop), 0);
    uv_timer_init(&f->loop, &f->watchdog);
    f->watchdog.data = f;
    uv_timer_start(&f->watchdog, on_watchdog, 90000, 0);
    uv_unref((uv_handle_t *)&f->watchdog);
    uv_timer_init(&f->loop, &f->lag);
    f->lag.data = f;
    uv_timer_start(&f->lag, on_lag, LAG_TICK_MS, LAG_TICK_MS);
    uv_timer_init(&f->loop, &f->pub_tick);
    f->pub_tick.data = f;
    uv_timer_start(&f->pub_tick, on_pub_tick, 5, 5);
    uv_timer_init(&f->loop, &f->check);
    f->check.data = f;
    uv_timer_start(&f->check, on_check, 250, 250);
    uv_timer_init(&f->loop, &f->fault_timer);
    f->fault_timer.data = f;
    uv_timer_start(&f->fault_timer, on_start_fault, 300, 0);

    f->reconnects = cms_metrics_counter(cms_metrics_default(), "cms_nats_reconnects_total",
                                        "NATS reconnections", NULL);
    f->reconnects0 = cms_counter_get(f->reconnects);
    cms_nats_options o = {.url = cms_test_env("CMS_TEST_NATS_URL"),
                          .name = "nats-fault",
                          .max_publish_inflight = 128,
                          .publish_timeout_ms = 2000};
    cr_assert_eq(cms_nats_create(&f->loop, &o, &f->n), 0);
    cr_assert_eq(cms_test_pub_init(&f->pub, f->n, f->subj, NMSG), 0);
    cms_nats_consumer_options co = {.stream = f->stream,
                                    .durable = f->durable,
                                    .filter_subject = filter,
                                    .max_ack_pending = 200,
                                    .fetch_batch = 50,
                                    .ack_wait_ms = 2000};
    cr_assert_eq(cms_nats_consume(f->n, &co, on_msg, f, &f->consumer), 0);

    uv_run(&f->loop, UV_RUN_DEFAULT);

    cr_assert_eq(f->closed, 1);
    cr_assert(f->quiet);
    cr_assert_eq(f->ctl_failures, 0, "tests/lib/ctl failed");
    cr_assert_eq(f->bad, 0);
    cr_assert_eq(f->pub.nstored, NMSG);
    cr_assert_eq(f->ndistinct, NMSG);
    cr_assert_lt(f->lag_max_ms, MAX_LAG_MS, "the loop stalled for %.1f ms", f->lag_max_ms);
    if (kind != FAULT_FREEZE)
        cr_assert_gt(cms_counter_get(f->reconnects) - f->reconnects0, 0, "no reconnect counted");
    cr_log_info(
        "fault %s: max loop lag %.1f ms, publish errors %d, redelivered %d, reconnects %llu",
        kind == FAULT_FREEZE    ? "freeze"
        : kind == FAULT_RESTART ? "restart"
                                : "long freeze",
        f->lag_max_ms, f->pub.errors, f->nredelivered,
        (unsigned long long)(cms_counter_get(f->reconnects) - f->reconnects0));

    cms_nats_destroy(f->n);
    uv_close((uv_handle_t *)&f->watchdog, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(&f->loop), 0);

    (void)js_DeleteStream(f->side_js, f->stream, NULL, NULL);
    jsCtx_Destroy(f->side_js);
    natsConnection_Destroy(f->side_nc);
    cms_test_pub_free(&f->pub);
    free(f);
    (void)nats_CloseAndWait(5000);
}

Test(nats_fault, freeze_and_thaw, .timeout = 120)
{
    run(FAULT_FREEZE);
}

Test(nats_fault, long_freeze_reconnects, .timeout = 120)
{
    run(FAULT_FREEZE_LONG);
}

Test(nats_fault, restart, .timeout = 120)
{
    run(FAULT_RESTART);
}
