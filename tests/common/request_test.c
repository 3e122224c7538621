/* request: request-reply from the loop against the real nats-server
 * (CMS_TEST_NATS_URL). A reply comes back to its own request, however many
 * are in flight and in whatever order they are answered; a request nobody
 * answers times out, and not before its timeout; one nobody listens for is
 * refused at once; a reply after the deadline is dropped; closing answers
 * what is pending on a later loop turn, then says it is closed.
 *
 * One loop with a watchdog per test; the responders are subscriptions of
 * the same cms_nats on subjects that carry the pid. */
#include "log.h"
#include "nats.h"
#include "request.h"
#include "testenv.h"

#include <criterion/criterion.h>
#include <nats/nats.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

static uv_loop_t loop;
static uv_timer_t watchdog;
static cms_nats *nats;
static cms_request *req;
static char tag[32];

static void watchdog_fired(uv_timer_t *t)
{
    (void)t;
    cr_assert_fail("watchdog: the test did not finish in time");
}

static void setup(void)
{
    cms_log_init("request-test", CMS_LOG_WARN, stderr);
    snprintf(tag, sizeof tag, "rq%d", (int)getpid());
    cr_assert_eq(uv_loop_init(&loop), 0);
    uv_timer_init(&loop, &watchdog);
    uv_timer_start(&watchdog, watchdog_fired, 30000, 0);
    uv_unref((uv_handle_t *)&watchdog);
    cms_nats_options o = {.url = cms_test_env("CMS_TEST_NATS_URL"), .name = "request-test"};
    cr_assert_eq(cms_nats_create(&loop, &o, &nats), 0);
    cr_assert_eq(cms_request_create(&loop, nats, &req), CMS_REQUEST_OK);
}

static int closed_parts;

static void part_closed(void *arg)
{
    (void)arg;
    closed_parts++;
}

/* Closes the requester (if the test has not) and NATS; every handle closed. */
static void teardown(void)
{
    int want = 1;
    if (req) {
        cms_request_close(req, part_closed, NULL);
        want++;
    }
    cms_nats_close(nats, part_closed, NULL);
    uv_close((uv_handle_t *)&watchdog, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(closed_parts, want, "%d of %d parts closed", closed_parts, want);
    cms_request_destroy(req);
    req = NULL;
    cms_nats_destroy(nats);
    cr_assert_eq(uv_loop_close(&loop), 0, "a handle was left open");
    (void)nats_CloseAndWait(5000);
}

TestSuite(request, .init = setup, .fini = teardown, .timeout = 60);

/* What one request was answered with. */
typedef struct answer {
    int calls;
    cms_request_err err;
    char data[128];
    size_t len;
    double at_ms; /* when it was answered (monotonic) */
} answer;

static void answered(void *arg, cms_request_err err, const void *data, size_t len)
{
    answer *a = arg;
    a->calls++;
    a->err = err;
    a->at_ms = cms_test_now_ms();
    a->len = len;
    snprintf(a->data, sizeof a->data, "%.*s", (int)len, data ? (const char *)data : "");
}

static void run_until(const int *count, int n)
{
    while (*count < n && uv_run(&loop, UV_RUN_ONCE))
        ;
    cr_assert_geq(*count, n, "%d of %d answers", *count, n);
}

/* ---- a responder that echoes ---- */

static int echoed;

static void echo(void *arg, cms_nats_msg *m)
{
    (void)arg;
    char out[160];
    int n = snprintf(out, sizeof out, "re:%.*s", (int)cms_nats_msg_len(m),
                     (const char *)cms_nats_msg_data(m));
    const char *h = cms_nats_msg_header(m, "X-Req");
    const char *hdrs[] = {"X-Echo", h ? h : "", NULL};
    cr_assert_eq(cms_nats_respond(nats, m, hdrs, out, (size_t)n), CMS_NATS_OK);
    cms_nats_msg_destroy(m);
    echoed++;
}

/* ---- a responder that receives and never answers ---- */

static int swallowed;

static void swallow(void *arg, cms_nats_msg *m)
{
    (void)arg;
    swallowed++;
    cms_nats_msg_destroy(m);
}

static void subscribe(const char *verb, cms_nats_msg_cb cb, char *subject, size_t len)
{
    snprintf(subject, len, "%s.%s", tag, verb);
    cms_nats_sub *s = NULL;
    cr_assert_eq(cms_nats_subscribe(nats, subject, NULL, cb, NULL, &s), 0);
}

Test(request, a_reply_comes_back_to_its_request)
{
    char subject[64];
    subscribe("echo", echo, subject, sizeof subject);
    answer a = {0};
    const char *hdrs[] = {"X-Req", "42", NULL};
    cr_assert_eq(cms_request_send(req, subject, hdrs, "ping", 4, 5000, answered, &a),
                 CMS_REQUEST_OK);
    cr_assert_eq(cms_request_pending(req), 1);
    run_until(&a.calls, 1);
    cr_assert_eq(a.err, CMS_REQUEST_OK, "%s", cms_request_strerror(a.err));
    cr_assert_str_eq(a.data, "re:ping");
    cr_assert_eq(a.len, 7);
    cr_assert_eq(echoed, 1);
    cr_assert_eq(cms_request_pending(req), 0);
}

Test(request, a_request_nobody_answers_times_out_not_before_its_timeout)
{
    char subject[64];
    subscribe("silent", swallow, subject, sizeof subject);
    enum { TIMEOUT_MS = 300 };
    answer a = {0};
    uv_update_time(&loop);
    double t0 = cms_test_now_ms();
    cr_assert_eq(cms_request_send(req, subject, NULL, "x", 1, TIMEOUT_MS, answered, &a),
                 CMS_REQUEST_OK);
    run_until(&a.calls, 1);
    double took = a.at_ms - t0;
    cr_assert_eq(a.err, CMS_REQUEST_ETIMEOUT, "%s", cms_request_strerror(a.err));
    cr_assert_eq(a.len, 0);
    /* libuv counts whole milliseconds: up to one of them may not show */
    cr_assert_geq(took, TIMEOUT_MS - 1, "timed out after %.1f ms, before its %d ms", took,
                  TIMEOUT_MS);
    cr_assert_lt(took, TIMEOUT_MS + 1000, "timed out only after %.1f ms", took);
    cr_assert_eq(swallowed, 1, "the request did reach a subscriber");
    cr_assert_eq(cms_request_pending(req), 0);
}

Test(request, nobody_listening_is_no_responders_at_once)
{
    char subject[64];
    snprintf(subject, sizeof subject, "%s.nobody", tag);
    enum { TIMEOUT_MS = 10000 };
    answer a = {0};
    double t0 = cms_test_now_ms();
    cr_assert_eq(cms_request_send(req, subject, NULL, "x", 1, TIMEOUT_MS, answered, &a),
                 CMS_REQUEST_OK);
    run_until(&a.calls, 1);
    double took = a.at_ms - t0;
    cr_assert_eq(a.err, CMS_REQUEST_ENORESPONDERS, "%s", cms_request_strerror(a.err));
    cr_assert_lt(took, 2000, "answered after %.0f ms, not at once", took);
    cr_assert_eq(cms_request_pending(req), 0);
}

/* ---- a reply after the deadline ---- */

typedef struct late_ctx {
    cms_nats_msg *held; /* the request the responder sits on */
    char subject[64];
    answer first, second;
    int sent_second;
} late_ctx;

static late_ctx *g_late;

static void hold_or_echo(void *arg, cms_nats_msg *m)
{
    (void)arg;
    if (g_late->held == NULL && cms_nats_msg_len(m) == 5 &&
        memcmp(cms_nats_msg_data(m), "first", 5) == 0) {
        g_late->held = m; /* answered only after its requester gave up */
        return;
    }
    echo(NULL, m);
}

static void first_answered(void *arg, cms_request_err err, const void *data, size_t len)
{
    late_ctx *c = arg;
    answered(&c->first, err, data, len);
    cr_assert_eq(err, CMS_REQUEST_ETIMEOUT);
    cr_assert_not_null(c->held, "the responder holds the first request");
    /* the late reply, then a second request: both replies come to the one
     * inbox subscription in this order, so once the second is answered the
     * late one has been handled */
    cr_assert_eq(cms_nats_respond(nats, c->held, NULL, "late", 4), CMS_NATS_OK);
    cms_nats_msg_destroy(c->held);
    c->held = NULL;
    cr_assert_eq(cms_request_send(req, c->subject, NULL, "second", 6, 5000, answered, &c->second),
                 CMS_REQUEST_OK);
    c->sent_second = 1;
}

Test(request, a_reply_after_the_timeout_is_dropped)
{
    late_ctx c = {0};
    g_late = &c;
    subscribe("late", hold_or_echo, c.subject, sizeof c.subject);
    cr_assert_eq(cms_request_send(req, c.subject, NULL, "first", 5, 200, first_answered, &c),
                 CMS_REQUEST_OK);
    run_until(&c.second.calls, 1);
    cr_assert_eq(c.first.calls, 1, "the first request was answered once, by its timeout");
    cr_assert_eq(c.first.err, CMS_REQUEST_ETIMEOUT);
    cr_assert_eq(c.second.err, CMS_REQUEST_OK);
    cr_assert_str_eq(c.second.data, "re:second", "the second got its own reply, not the late one");
    cr_assert_eq(cms_request_pending(req), 0);
    g_late = NULL;
}

/* ---- many at once, answered out of order ---- */

#define NMANY 500

typedef struct many_ctx {
    cms_nats_msg *held[NMANY];
    int nheld;
    answer answers[NMANY];
    int done;
} many_ctx;

static many_ctx *g_many;

/* Holds every request until all have arrived, then answers them last first. */
static void answer_backwards(void *arg, cms_nats_msg *m)
{
    (void)arg;
    many_ctx *c = g_many;
    cr_assert_lt(c->nheld, NMANY);
    c->held[c->nheld++] = m;
    if (c->nheld < NMANY)
        return;
    for (int i = NMANY - 1; i >= 0; i--) {
        char out[64];
        int n = snprintf(out, sizeof out, "re:%.*s", (int)cms_nats_msg_len(c->held[i]),
                         (const char *)cms_nats_msg_data(c->held[i]));
        cr_assert_eq(cms_nats_respond(nats, c->held[i], NULL, out, (size_t)n), CMS_NATS_OK);
        cms_nats_msg_destroy(c->held[i]);
        c->held[i] = NULL;
    }
}

static void many_answered(void *arg, cms_request_err err, const void *data, size_t len)
{
    answered(arg, err, data, len);
    g_many->done++;
}

Test(request, many_concurrent_requests_each_get_their_own_reply)
{
    many_ctx *c = calloc(1, sizeof *c);
    cr_assert_not_null(c);
    g_many = c;
    char subject[64];
    subscribe("many", answer_backwards, subject, sizeof subject);
    for (int i = 0; i < NMANY; i++) {
        char body[32];
        int n = snprintf(body, sizeof body, "request %d", i);
        cr_assert_eq(cms_request_send(req, subject, NULL, body, (size_t)n, 20000, many_answered,
                                      &c->answers[i]),
                     CMS_REQUEST_OK);
    }
    cr_assert_eq(cms_request_pending(req), NMANY);
    run_until(&c->done, NMANY);
    for (int i = 0; i < NMANY; i++) {
        char want[48];
        snprintf(want, sizeof want, "re:request %d", i);
        cr_assert_eq(c->answers[i].calls, 1, "request %d answered once", i);
        cr_assert_eq(c->answers[i].err, CMS_REQUEST_OK, "request %d: %s", i,
                     cms_request_strerror(c->answers[i].err));
        cr_assert_str_eq(c->answers[i].data, want, "request %d got its own reply", i);
    }
    cr_assert_eq(cms_request_pending(req), 0);
    g_many = NULL;
    free(c);
}

/* ---- closing ---- */

typedef struct close_ctx {
    answer first;
    answer pending[3];
    int eclosed_before_return; /* ECLOSED answers given inside cms_request_close */
    int in_close;
    int closed;
    int answers_when_closed;
} close_ctx;

static close_ctx *g_close;

static void pending_answered(void *arg, cms_request_err err, const void *data, size_t len)
{
    answered(arg, err, data, len);
    cr_assert_eq(g_close->closed, 0, "every pending request is answered before closed");
    if (g_close->in_close)
        g_close->eclosed_before_return++;
}

static void requester_closed(void *arg)
{
    close_ctx *c = arg;
    c->closed++;
    for (int i = 0; i < 3; i++)
        c->answers_when_closed += c->pending[i].calls;
}

/* Closing from inside a callback of the requester itself. */
static void close_from_callback(void *arg, cms_request_err err, const void *data, size_t len)
{
    close_ctx *c = arg;
    answered(&c->first, err, data, len);
    c->in_close = 1;
    cms_request_close(req, requester_closed, c);
    c->in_close = 0;
    for (int i = 0; i < 3; i++)
        cr_assert_eq(c->pending[i].calls, 0, "pending request %d answered inside close", i);
    /* closed: new requests are refused, and their callback never runs */
    answer refused = {0};
    cr_assert_eq(cms_request_send(req, "x.y", NULL, "z", 1, 1000, answered, &refused),
                 CMS_REQUEST_ECLOSED);
    cr_assert_eq(refused.calls, 0);
}

Test(request, close_answers_pending_ones_on_a_later_turn_then_says_closed)
{
    close_ctx c = {0};
    g_close = &c;
    char echo_subject[64], silent[64];
    subscribe("echo", echo, echo_subject, sizeof echo_subject);
    subscribe("silent", swallow, silent, sizeof silent);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(
            cms_request_send(req, silent, NULL, "x", 1, 20000, pending_answered, &c.pending[i]),
            CMS_REQUEST_OK);
    cr_assert_eq(cms_request_send(req, echo_subject, NULL, "y", 1, 20000, close_from_callback, &c),
                 CMS_REQUEST_OK);
    while (!c.closed && uv_run(&loop, UV_RUN_ONCE))
        ;
    cr_assert_eq(c.closed, 1);
    cr_assert_eq(c.first.err, CMS_REQUEST_OK);
    cr_assert_eq(c.eclosed_before_return, 0);
    cr_assert_eq(c.answers_when_closed, 3, "closed only after every pending one was answered");
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(c.pending[i].calls, 1, "pending request %d answered once", i);
        cr_assert_eq(c.pending[i].err, CMS_REQUEST_ECLOSED, "%s",
                     cms_request_strerror(c.pending[i].err));
    }
    cr_assert_eq(cms_request_pending(req), 0);
    /* a second close is nothing */
    cms_request_close(req, requester_closed, &c);
    uv_run(&loop, UV_RUN_NOWAIT);
    cr_assert_eq(c.closed, 1, "closed is called once");
    cms_request_destroy(req);
    req = NULL;
    g_close = NULL;
}

Test(request, bad_arguments_are_refused)
{
    answer a = {0};
    cr_assert_eq(cms_request_send(req, NULL, NULL, "x", 1, 1000, answered, &a), CMS_REQUEST_EINVAL);
    cr_assert_eq(cms_request_send(req, "a.b", NULL, "x", 1, 0, answered, &a), CMS_REQUEST_EINVAL);
    cr_assert_eq(cms_request_send(req, "a.b", NULL, "x", 1, -5, answered, &a), CMS_REQUEST_EINVAL);
    cr_assert_eq(cms_request_send(req, "a.b", NULL, "x", 1, 1000, NULL, &a), CMS_REQUEST_EINVAL);
    cr_assert_eq(cms_request_send(NULL, "a.b", NULL, "x", 1, 1000, answered, &a),
                 CMS_REQUEST_EINVAL);
    cr_assert_eq(cms_request_pending(req), 0);
    cr_assert_eq(cms_request_pending(NULL), 0);
    cms_request *other = NULL;
    cr_assert_eq(cms_request_create(NULL, nats, &other), CMS_REQUEST_EINVAL);
    cr_assert_eq(cms_request_create(&loop, NULL, &other), CMS_REQUEST_EINVAL);
    cr_assert_null(other);
    cr_assert_eq(a.calls, 0, "no callback for a refused request");
    for (int e = 0; e < CMS_REQUEST_NERRORS; e++) {
        const char *s = cms_request_strerror((cms_request_err)e);
        cr_assert(s && *s);
    }
}
