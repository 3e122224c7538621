/* A loop against nats-server, a side connection and streams; see natsfx.h. */
#include "natsfx.h"

#include "log.h"
#include "testenv.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define NS_PER_MS INT64_C(1000000)

static void on_watchdog(uv_timer_t *t)
{
    (void)t;
    cr_assert_fail("watchdog: the test did not finish in time");
}

void natsfx_init(natsfx *f, const char *name, const char *tag, int64_t timeout_ms,
                 const cms_nats_options *opts)
{
    natsfx_init_at(f, cms_test_env("CMS_TEST_NATS_URL"), name, tag, timeout_ms, opts);
}

void natsfx_init_at(natsfx *f, const char *url, const char *name, const char *tag,
                    int64_t timeout_ms, const cms_nats_options *opts)
{
    memset(f, 0, sizeof *f);
    cms_log_init(name, CMS_LOG_WARN, stderr);
    snprintf(f->tag, sizeof f->tag, "%s%d", tag, (int)getpid());
    cr_assert_eq(uv_loop_init(&f->loop), 0);
    f->loop_thread = uv_thread_self();
    cr_assert_eq(uv_timer_init(&f->loop, &f->watchdog), 0);
    cr_assert_eq(uv_timer_start(&f->watchdog, on_watchdog, (uint64_t)timeout_ms, 0), 0);
    uv_unref((uv_handle_t *)&f->watchdog);
    cms_nats_options o = {.name = name};
    if (opts != NULL)
        o = *opts;
    if (o.name == NULL)
        o.name = name;
    o.url = url;
    cr_assert_eq(cms_nats_create(&f->loop, &o, &f->n), 0);
}

void natsfx_check_thread(natsfx *f)
{
    uv_thread_t self = uv_thread_self();
    if (!uv_thread_equal(&self, &f->loop_thread))
        f->wrong_thread++;
}

static void on_closed(void *arg)
{
    natsfx *f = arg;
    f->closed++;
}

void natsfx_close(natsfx *f)
{
    cms_nats_close(f->n, on_closed, f);
}

void natsfx_finish(natsfx *f)
{
    uv_run(&f->loop, UV_RUN_DEFAULT);
    cr_assert_eq(f->closed, 1, "closed callback ran %d times", f->closed);
    cr_assert_eq(f->wrong_thread, 0, "%d callbacks ran off the loop thread", f->wrong_thread);
    cms_nats_destroy(f->n);
    uv_close((uv_handle_t *)&f->watchdog, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(&f->loop), 0);
}

/* ---- the side connection ---- */

void natsfx_side_open(natsfx_side *s)
{
    memset(s, 0, sizeof *s);
    cr_assert_eq(natsConnection_ConnectTo(&s->nc, cms_test_env("CMS_TEST_NATS_URL")), NATS_OK);
    cr_assert_eq(natsConnection_JetStream(&s->js, s->nc, NULL), NATS_OK);
}

void natsfx_side_close(natsfx_side *s)
{
    jsCtx_Destroy(s->js);
    natsConnection_Destroy(s->nc);
}

jsStreamInfo *natsfx_side_info(natsfx_side *s, const char *name)
{
    jsStreamInfo *si = NULL;
    natsStatus st = js_GetStreamInfo(&si, s->js, name, NULL, NULL);
    cr_assert_eq(st, NATS_OK, "stream info %s: %s", name, natsStatus_GetText(st));
    return si;
}

void natsfx_side_fill(natsfx_side *s, const char *subject, int count, const char *const *headers)
{
    for (int i = 0; i < count; i++) {
        char data[32], id[64];
        snprintf(data, sizeof data, "%d", i);
        snprintf(id, sizeof id, "%s-%d", subject, i);
        natsMsg *m = NULL;
        cr_assert_eq(natsMsg_Create(&m, subject, NULL, data, (int)strlen(data)), NATS_OK);
        for (size_t h = 0; headers != NULL && headers[h] != NULL; h += 2)
            cr_assert_eq(natsMsgHeader_Add(m, headers[h], headers[h + 1]), NATS_OK);
        jsPubOptions po;
        jsPubOptions_Init(&po);
        po.MsgId = id;
        cr_assert_eq(js_PublishMsgAsync(s->js, &m, &po), NATS_OK);
        natsMsg_Destroy(m);
    }
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = 10000;
    cr_assert_eq(js_PublishAsyncComplete(s->js, &po), NATS_OK);
}

void natsfx_side_drop_stream(natsfx_side *s, const char *name)
{
    (void)js_DeleteStream(s->js, name, NULL, NULL);
}

/* ---- streams ---- */

static natsStatus add_stream(jsCtx *js, const char *name, const char *subject, int64_t max_age_ms,
                             int64_t duplicates_ms, jsErrCode *jerr)
{
    jsStreamConfig cfg;
    jsStreamConfig_Init(&cfg);
    const char *subjects[1] = {subject};
    cfg.Name = name;
    cfg.Subjects = subjects;
    cfg.SubjectsLen = 1;
    cfg.Storage = js_FileStorage;
    cfg.MaxAge = max_age_ms * NS_PER_MS;
    cfg.Duplicates = duplicates_ms * NS_PER_MS;
    *jerr = 0;
    return js_AddStream(NULL, js, &cfg, NULL, jerr);
}

void natsfx_side_stream(natsfx_side *s, const char *name, const char *subject, int64_t max_age_ms)
{
    natsfx_side_drop_stream(s, name);
    jsErrCode jerr = 0;
    natsStatus st = add_stream(s->js, name, subject, max_age_ms, 0, &jerr);
    cr_assert_eq(st, NATS_OK, "add stream %s: %s (%d)", name, natsStatus_GetText(st), (int)jerr);
}

void natsfx_stream_ensure(jsCtx *js, const char *name, const char *subject, int64_t max_age_ms,
                          int64_t duplicates_ms)
{
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus st = js_GetStreamInfo(&si, js, name, NULL, &jerr);
    if (st == NATS_OK) {
        jsStreamInfo_Destroy(si);
        return;
    }
    st = add_stream(js, name, subject, max_age_ms, duplicates_ms, &jerr);
    if (st != NATS_OK && jerr == JSStreamNameExistErr)
        st = NATS_OK; /* someone else made it meanwhile */
    cr_assert_eq(st, NATS_OK, "stream %s: %s (%d)", name, natsStatus_GetText(st), (int)jerr);
}
