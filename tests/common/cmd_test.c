/* The command server over the real nats-server and PostgreSQL: dispatch by
 * verb on the loop thread, typed errors, deadlines, request_id idempotency
 * across a restart. */
#include "cmd.h"
#include "cms/v1/envelope.pb-c.h"
#include "testenv.h"

#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAXR 32

typedef struct {
    uv_loop_t loop;
    uv_timer_t watchdog, later;
    uv_thread_t loop_thread;
    cms_pg *pg;
    cms_nats *nats;
    cms_cmd *cmd;
    cms_nats_sub *inbox;
    char service[64];
    char db[512];
    int sent, got;
    Cms__V1__Reply *replies[MAXR];
    uint8_t *raw[MAXR];
    size_t rawlen[MAXR];
    int counter;
    int off_thread;
    int flaky_calls;
    char bearer[64];
    cms_cmd_req *slow;
    int slow_calls;
    int closed;
} fx;

static fx f;

static void watchdog_fired(uv_timer_t *t)
{
    (void)t;
    cr_assert_fail("watchdog: sent %d, got %d", f.sent, f.got);
}

static void on_reply(void *arg, cms_nats_msg *m)
{
    (void)arg;
    const char *subj = cms_nats_msg_subject(m);
    int i = atoi(strrchr(subj, '.') + 1);
    cr_assert(i >= 0 && i < MAXR);
    f.rawlen[i] = cms_nats_msg_len(m);
    f.raw[i] = malloc(f.rawlen[i] + 1);
    memcpy(f.raw[i], cms_nats_msg_data(m), f.rawlen[i]);
    f.replies[i] = cms__v1__reply__unpack(NULL, f.rawlen[i], f.raw[i]);
    cr_assert_not_null(f.replies[i], "a reply is always a cms.v1.Reply");
    f.got++;
    cms_nats_msg_destroy(m);
}

static int call(const char *verb, const char *const *headers, const void *data, size_t len)
{
    char subject[128], reply[128];
    snprintf(subject, sizeof subject, "cms.cmd.%s.%s", f.service, verb);
    int i = f.sent++;
    snprintf(reply, sizeof reply, "_INBOX.%s.%d", f.service, i);
    cr_assert_eq(cms_nats_publish_request(f.nats, subject, reply, headers, data, len), CMS_NATS_OK);
    return i;
}

static int call_env(const char *verb, const char *const *headers, const char *event_id)
{
    Cms__V1__Envelope e = CMS__V1__ENVELOPE__INIT;
    e.event_id = (char *)event_id;
    uint8_t buf[256];
    size_t n = cms__v1__envelope__pack(&e, buf);
    return call(verb, headers, buf, n);
}

static void wait_replies(int n)
{
    while (f.got < n && uv_run(&f.loop, UV_RUN_ONCE))
        ;
    cr_assert_eq(f.got, n);
}

static Cms__V1__Envelope *result_env(int i)
{
    cr_assert_eq(f.replies[i]->outcome_case, CMS__V1__REPLY__OUTCOME_RESULT, "reply %d: %s", i,
                 f.replies[i]->outcome_case == CMS__V1__REPLY__OUTCOME_ERROR
                     ? f.replies[i]->error->message
                     : "no outcome");
    Cms__V1__Envelope *e =
        cms__v1__envelope__unpack(NULL, f.replies[i]->result.len, f.replies[i]->result.data);
    cr_assert_not_null(e);
    return e;
}

static void assert_error(int i, Cms__V1__ErrorCode code, const char *field)
{
    cr_assert_eq(f.replies[i]->outcome_case, CMS__V1__REPLY__OUTCOME_ERROR, "reply %d is an error",
                 i);
    cr_assert_eq(f.replies[i]->error->code, code, "reply %d: code %d, want %d (%s)", i,
                 f.replies[i]->error->code, code, f.replies[i]->error->message);
    if (field)
        cr_assert_str_eq(f.replies[i]->error->field, field);
    cr_assert_gt(strlen(f.replies[i]->error->message), 0, "an error says what was wrong");
}

/* ---- handlers ---- */

static void check_thread(void)
{
    uv_thread_t self = uv_thread_self();
    if (!uv_thread_equal(&self, &f.loop_thread))
        f.off_thread++;
}

static void h_echo(void *arg, cms_cmd_req *req)
{
    (void)arg;
    check_thread();
    const char *b = cms_cmd_req_bearer(req);
    snprintf(f.bearer, sizeof f.bearer, "%s", b ? b : "(none)");
    cms_cmd_reply(req, cms_cmd_req_body(req));
}

static void h_fail(void *arg, cms_cmd_req *req)
{
    (void)arg;
    cms_cmd_fail(req, CMS__V1__ERROR_CODE__FAILED_PRECONDITION, "status", "contract is %s, not %s",
                 "draft", "signed");
}

static void h_count(void *arg, cms_cmd_req *req)
{
    (void)arg;
    char n[16];
    snprintf(n, sizeof n, "%d", ++f.counter);
    Cms__V1__Envelope e = CMS__V1__ENVELOPE__INIT;
    e.event_id = n;
    cms_cmd_reply(req, &e.base);
}

static void h_flaky(void *arg, cms_cmd_req *req)
{
    (void)arg;
    if (f.flaky_calls++ == 0)
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__UNAVAILABLE, NULL, "database away");
    else
        h_count(arg, req);
}

static void slow_answer(uv_timer_t *t)
{
    (void)t;
    /* after the deadline: kept for its request_id, if it has one */
    cms_cmd_reply(f.slow, cms_cmd_req_body(f.slow));
    f.slow = NULL;
}

static void h_slow(void *arg, cms_cmd_req *req)
{
    (void)arg;
    f.slow = req;
    f.slow_calls++;
    uv_timer_start(&f.later, slow_answer, 400, 0);
}

static void start_server(void)
{
    cms_cmd_options o = {.service = f.service, .pg = f.pg, .deadline_ms = 150};
    cr_assert_eq(cms_cmd_create(&f.loop, f.nats, &o, &f.cmd), 0);
    cr_assert_eq(cms_cmd_register(f.cmd, "echo", &cms__v1__envelope__descriptor, h_echo, NULL), 0);
    cr_assert_eq(cms_cmd_register(f.cmd, "fail", &cms__v1__envelope__descriptor, h_fail, NULL), 0);
    cr_assert_eq(cms_cmd_register(f.cmd, "count", &cms__v1__envelope__descriptor, h_count, NULL),
                 0);
    cr_assert_eq(cms_cmd_register(f.cmd, "flaky", &cms__v1__envelope__descriptor, h_flaky, NULL),
                 0);
    cr_assert_eq(cms_cmd_register(f.cmd, "slow", &cms__v1__envelope__descriptor, h_slow, NULL), 0);
    cr_assert_neq(cms_cmd_register(f.cmd, "echo", &cms__v1__envelope__descriptor, h_echo, NULL), 0,
                  "a verb registers once");
    cr_assert_neq(cms_cmd_register(f.cmd, "Bad.Verb", &cms__v1__envelope__descriptor, h_echo, NULL),
                  0);
    cr_assert_eq(cms_cmd_start(f.cmd), 0);
}

static void closed(void *arg)
{
    (*(int *)arg)++;
}

static void stop_server(void)
{
    int done = 0;
    cms_cmd_close(f.cmd, closed, &done);
    while (!done && uv_run(&f.loop, UV_RUN_ONCE))
        ;
    cr_assert_eq(done, 1);
    cms_cmd_destroy(f.cmd);
    f.cmd = NULL;
}

static void setup(void)
{
    memset(&f, 0, sizeof f);
    snprintf(f.service, sizeof f.service, "cmdtest%d", (int)getpid());
    cr_assert_eq(cms_test_db_create("cmd_test", 1, f.db, sizeof f.db), 0);
    cr_assert_eq(uv_loop_init(&f.loop), 0);
    f.loop_thread = uv_thread_self();
    uv_timer_init(&f.loop, &f.watchdog);
    uv_timer_start(&f.watchdog, watchdog_fired, 30000, 0);
    uv_unref((uv_handle_t *)&f.watchdog);
    uv_timer_init(&f.loop, &f.later);
    cms_pg_options po = {.conninfo = f.db, .pool_size = 1};
    cr_assert_eq(cms_pg_create(&f.loop, &po, &f.pg), 0);
    cms_nats_options no = {.url = cms_test_env("CMS_TEST_NATS_URL"), .name = "cmd_test"};
    cr_assert_eq(cms_nats_create(&f.loop, &no, &f.nats), 0);
    char inbox[128];
    snprintf(inbox, sizeof inbox, "_INBOX.%s.*", f.service);
    cr_assert_eq(cms_nats_subscribe(f.nats, inbox, NULL, on_reply, NULL, &f.inbox), 0);
    start_server();
}

static void teardown(void)
{
    if (f.cmd)
        stop_server();
    cms_nats_unsubscribe(f.inbox);
    int done = 0;
    cms_nats_close(f.nats, closed, &done);
    cms_pg_close(f.pg, closed, &done);
    uv_close((uv_handle_t *)&f.watchdog, NULL);
    uv_close((uv_handle_t *)&f.later, NULL);
    uv_run(&f.loop, UV_RUN_DEFAULT);
    cr_assert_eq(done, 2);
    cr_assert_eq(uv_loop_close(&f.loop), 0, "a handle was left open");
    cms_nats_destroy(f.nats);
    cms_pg_destroy(f.pg);
    for (int i = 0; i < MAXR; i++) {
        if (f.replies[i])
            cms__v1__reply__free_unpacked(f.replies[i], NULL);
        free(f.raw[i]);
    }
    cms_test_db_drop(f.db);
}

TestSuite(cmd, .init = setup, .fini = teardown, .timeout = 60);

Test(cmd, dispatches_on_the_loop_thread_and_replies)
{
    const char *h[] = {"Authorization", "Bearer cms_k1_s3cr3t", NULL};
    int i = call_env("echo", h, "0190a0c4-0000-7000-8000-000000000001");
    wait_replies(1);
    Cms__V1__Envelope *e = result_env(i);
    cr_assert_str_eq(e->event_id, "0190a0c4-0000-7000-8000-000000000001");
    cms__v1__envelope__free_unpacked(e, NULL);
    cr_assert_eq(f.off_thread, 0, "handlers run on the loop thread");
    cr_assert_str_eq(f.bearer, "cms_k1_s3cr3t");

    const char *basic[] = {"Authorization", "Basic abc", NULL};
    call_env("echo", basic, "x");
    wait_replies(2);
    cr_assert_str_eq(f.bearer, "(none)", "only a Bearer key counts");
}

Test(cmd, bad_requests_get_typed_errors_and_hurt_no_one)
{
    int a = call_env("nosuchverb", NULL, "x");
    uint8_t junk[] = {0xff, 0xff, 0xff, 0xff, 0x0f, 0x12};
    int b = call("echo", NULL, junk, sizeof junk);
    int c = call_env("fail", NULL, "x");
    const char *badrid[] = {"Cms-Request-Id", "has space", NULL};
    int d = call_env("count", badrid, "x");
    int e = call_env("echo", NULL, "still-alive");
    wait_replies(5);
    assert_error(a, CMS__V1__ERROR_CODE__INVALID_ARGUMENT, "verb");
    assert_error(b, CMS__V1__ERROR_CODE__INVALID_ARGUMENT, "body");
    assert_error(c, CMS__V1__ERROR_CODE__FAILED_PRECONDITION, "status");
    cr_assert_str_eq(f.replies[c]->error->message, "contract is draft, not signed");
    assert_error(d, CMS__V1__ERROR_CODE__INVALID_ARGUMENT, "Cms-Request-Id");
    Cms__V1__Envelope *env = result_env(e);
    cr_assert_str_eq(env->event_id, "still-alive");
    cms__v1__envelope__free_unpacked(env, NULL);
    cr_assert_eq(f.counter, 0);
}

Test(cmd, a_request_id_runs_once_even_across_a_restart)
{
    const char *r1[] = {"Cms-Request-Id", "req-1", NULL};
    const char *r2[] = {"Cms-Request-Id", "req-2", NULL};
    int a = call_env("count", r1, "x");
    int b = call_env("count", r1, "x"); /* while the first may still run */
    wait_replies(2);
    int c = call_env("count", r1, "x");
    wait_replies(3);
    cr_assert_eq(f.counter, 1, "the handler ran once for req-1, not %d times", f.counter);
    cr_assert_eq(f.rawlen[a], f.rawlen[c]);
    cr_assert_eq(memcmp(f.raw[a], f.raw[b], f.rawlen[a]), 0, "the same reply every time");
    cr_assert_eq(memcmp(f.raw[a], f.raw[c], f.rawlen[a]), 0);

    stop_server();
    start_server();
    int d = call_env("count", r1, "x");
    int e = call_env("count", r2, "x");
    wait_replies(5);
    cr_assert_eq(memcmp(f.raw[a], f.raw[d], f.rawlen[a]), 0, "stored reply after restart");
    Cms__V1__Envelope *env = result_env(e);
    cr_assert_str_eq(env->event_id, "2", "a new request_id runs");
    cms__v1__envelope__free_unpacked(env, NULL);
    cr_assert_eq(f.counter, 2);
}

Test(cmd, transient_failures_are_not_remembered)
{
    const char *r[] = {"Cms-Request-Id", "flaky-1", NULL};
    int a = call_env("flaky", r, "x");
    wait_replies(1);
    assert_error(a, CMS__V1__ERROR_CODE__UNAVAILABLE, NULL);
    int b = call_env("flaky", r, "x");
    wait_replies(2);
    Cms__V1__Envelope *env = result_env(b);
    cms__v1__envelope__free_unpacked(env, NULL);
    cr_assert_eq(f.flaky_calls, 2, "the retry ran again");
}

Test(cmd, a_late_handler_is_answered_for_then_ignored)
{
    double t0 = cms_test_now_ms();
    int a = call_env("slow", NULL, "x");
    wait_replies(1);
    double took = cms_test_now_ms() - t0;
    assert_error(a, CMS__V1__ERROR_CODE__UNAVAILABLE, NULL);
    cr_assert(took >= 140 && took < 2000, "deadline answered after %.0f ms", took);
    /* let the handler answer late: nothing is sent, nothing leaks */
    while (f.slow && uv_run(&f.loop, UV_RUN_ONCE))
        ;
    int b = call_env("echo", NULL, "after");
    wait_replies(2);
    Cms__V1__Envelope *env = result_env(b);
    cms__v1__envelope__free_unpacked(env, NULL);
    cr_assert_eq(f.got, 2, "no second reply to the slow request");
}

Test(cmd, a_retry_after_the_deadline_gets_the_late_outcome_without_a_second_run)
{
    const char *h[] = {CMS_CMD_REQUEST_ID_HEADER, "late-1", NULL};
    int a = call_env("slow", h, "first");
    wait_replies(1);
    assert_error(a, CMS__V1__ERROR_CODE__UNAVAILABLE, NULL);
    cr_assert_not_null(f.slow, "the handler still holds the request");
    /* the retry the deadline's message asks for, while the handler still runs */
    int b = call_env("slow", h, "second");
    wait_replies(2);
    Cms__V1__Envelope *env = result_env(b);
    cr_assert_str_eq(env->event_id, "first", "the first run's outcome");
    cms__v1__envelope__free_unpacked(env, NULL);
    /* and later, from the stored reply */
    int c = call_env("slow", h, "third");
    wait_replies(3);
    env = result_env(c);
    cr_assert_str_eq(env->event_id, "first");
    cms__v1__envelope__free_unpacked(env, NULL);
    cr_assert_eq(f.slow_calls, 1, "the command ran once");
}

Test(cmd, close_waits_for_a_running_handler)
{
    call_env("slow", NULL, "x");
    while (f.slow == NULL && uv_run(&f.loop, UV_RUN_ONCE))
        ;
    int done = 0;
    cms_cmd_close(f.cmd, closed, &done);
    cr_assert_eq(done, 0, "not closed while a handler holds a request");
    while (!done && uv_run(&f.loop, UV_RUN_ONCE))
        ;
    cr_assert_null(f.slow, "closed only after the handler answered");
    cms_cmd_destroy(f.cmd);
    f.cmd = NULL;
}

static void prune_done(void *arg, long removed)
{
    *(long *)arg = removed;
}

Test(cmd, stored_replies_older_than_the_retention_are_pruned)
{
    char sql[512];
    snprintf(sql, sizeof sql,
             "INSERT INTO command_replies (service, request_id, reply, created_at) VALUES "
             "('%s', 'old', '\\x00', now() - interval '2 days'), "
             "('%s', 'recent', '\\x00', now() - interval '1 hour'), "
             "('another', 'old-elsewhere', '\\x00', now() - interval '2 days')",
             f.service, f.service);
    char *r = cms_test_sql(f.db, sql);
    cr_assert_not_null(r);
    free(r);
    long removed = -2;
    cms_cmd_prune(f.cmd, prune_done, &removed);
    while (removed == -2 && uv_run(&f.loop, UV_RUN_ONCE))
        ;
    cr_assert_eq(removed, 1, "only this service's reply past 24 h: %ld", removed);
    r = cms_test_sql(f.db,
                     "SELECT string_agg(request_id, ',' ORDER BY request_id) FROM "
                     "command_replies WHERE request_id IN ('old', 'recent', 'old-elsewhere')");
    cr_assert_str_eq(r, "old-elsewhere,recent");
    free(r);
}
