/* cms-worker against a nats-server of the test's own running the local
 * stack's configuration (deploy/nats/gen-conf: the worker is the NATS user
 * "worker", with only its permissions), with the test playing cms-training
 * as the user "training": it publishes dispatches on CMS_WORK, answers the
 * worker's reports as the script of each test says, and tells jobs to
 * stop. The worker runs --once with a fixed CMS_WORKER_TEST_SEED on
 * tests/data, so what it trains is the same every run.
 *
 * Each test waits for the worker process to exit (bounded), then reads
 * what the reports were: the protocol of services/worker/main.c, report by
 * report, and whether the dispatch was acked (the work queue is empty) or
 * nak'd (it is still there). */
#include "apikey.h"
#include "bus.h"
#include "cms/v1/command.pb-c.h"
#include "cms/v1/training.pb-c.h"
#include "log.h"
#include "natsauth.h"
#include "testenv.h"

#include <criterion/criterion.h>
#include <fcntl.h>
#include <nats/nats.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#ifndef CMS_SOURCE_DIR
#error CMS_SOURCE_DIR must name the repository
#endif
#ifndef CMS_WORKER_BIN
#error CMS_WORKER_BIN must name the cms-worker binary
#endif

#define JOB "0190f0a1-b2c3-7d4e-8f9a-0b1c2d3e4f50"
#define CONTROL "cms.control.training." JOB
#define SEED "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
#define MAX_REPORTS 4096
#define EXIT_WAIT_MS 30000

static char dir[256];
static char url[64];
static pid_t server = -1;
static char api_key[CMS_APIKEY_LEN + 1];

/* ---- the server ---- */

static void run_or_fail(const char *cmd)
{
    int rc = system(cmd);
    cr_assert(rc == 0, "%s: exit %d", cmd, rc);
}

static void start_server(void)
{
    snprintf(dir, sizeof dir, "/tmp/cms-worker-it.XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    int port = cms_test_free_port();
    snprintf(url, sizeof url, "nats://127.0.0.1:%d", port);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, CMS_SOURCE_DIR "/deploy/nats/gen-conf %s --port %d --monitor-port 0",
             dir, port);
    run_or_fail(cmd);
    char conf[300], log[300];
    snprintf(conf, sizeof conf, "%s/nats.conf", dir);
    snprintf(log, sizeof log, "%s/nats-server.log", dir);
    pid_t parent = getpid();
    fflush(NULL);
    server = fork();
    cr_assert_geq(server, 0);
    if (server == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        if (freopen(log, "a", stdout) == NULL || freopen(log, "a", stderr) == NULL)
            _exit(127);
        execlp("nats-server", "nats-server", "-c", conf, (char *)NULL);
        execl("/usr/sbin/nats-server", "nats-server", "-c", conf, (char *)NULL);
        _exit(127);
    }
}

static void creds_of(const char *user, char *out, size_t len)
{
    snprintf(out, len, "%s/creds/%s.creds", dir, user);
}

/* The streams and durables, as cms-migrate makes them, as the migrator. */
static void provision(void)
{
    char creds[300];
    creds_of("migrator", creds, sizeof creds);
    cms_nats_options o = {.url = url, .name = "worker-test-provision"};
    o.security.creds_file = creds;
    cms_nats_err err = cms_bus_provision_wait(&o, true, 0, 20000);
    cr_assert_eq(err, CMS_NATS_OK, "provisioning: %s", cms_nats_strerror(err));
}

/* ---- the test's cms-training ---- */

typedef enum {
    SCRIPT_ACCEPT,          /* every report accepted */
    SCRIPT_REFUSE_START,    /* STARTED answered FAILED_PRECONDITION */
    SCRIPT_DENY_KEY,        /* STARTED answered PERMISSION_DENIED */
    SCRIPT_STOP_BY_CONTROL, /* the first PROGRESS: a StopJob on the control subject */
    SCRIPT_STOP_BY_REPLY,   /* the first PROGRESS answered stop */
    SCRIPT_LOWER_STEPS,     /* STARTED answered max_steps 37 */
} script;

typedef struct seen {
    Cms__V1__ReportKind kind;
    int64_t steps, examples;
    double loss, accuracy;
    char message[512];
    char auth[320];
    char request_id[128];
} seen;

static struct {
    uv_mutex_t mu;
    script script;
    seen reports[MAX_REPORTS];
    size_t n;
    bool stop_sent;
} fake;

static natsConnection *training;
static natsSubscription *responder;

static natsConnection *as(const char *user)
{
    char creds[300], why[512];
    creds_of(user, creds, sizeof creds);
    cms_nats_security sec = {.creds_file = creds};
    natsOptions *o = NULL;
    cr_assert_eq(natsOptions_Create(&o), NATS_OK);
    natsOptions_SetURL(o, url);
    cr_assert_eq(cms_natsauth_apply(o, url, &sec, NULL, why, sizeof why), CMS_NATSAUTH_OK, "%s",
                 why);
    natsOptions_SetRetryOnFailedConnect(o, true, NULL, NULL);
    natsOptions_SetMaxReconnect(o, 100);
    natsOptions_SetReconnectWait(o, 50);
    natsConnection *nc = NULL;
    natsStatus st = natsConnection_Connect(&nc, o);
    natsOptions_Destroy(o);
    cr_assert_eq(st, NATS_OK, "connect as %s: %s", user, natsStatus_GetText(st));
    cr_assert_eq(natsConnection_FlushTimeout(nc, 5000), NATS_OK, "%s connected", user);
    return nc;
}

static void reply_with(natsMsg *req, const Cms__V1__ReportReply *rr, Cms__V1__ErrorCode code)
{
    uint8_t inner[256], out[512];
    Cms__V1__Reply r = CMS__V1__REPLY__INIT;
    Cms__V1__Error err = CMS__V1__ERROR__INIT;
    if (rr != NULL) {
        r.outcome_case = CMS__V1__REPLY__OUTCOME_RESULT;
        r.result.data = inner;
        r.result.len = cms__v1__report_reply__pack(rr, inner);
    } else {
        err.code = code;
        err.message =
            (char *)(code == CMS__V1__ERROR_CODE__PERMISSION_DENIED ? "not a worker's key"
                                                                    : "the job is not pending");
        r.outcome_case = CMS__V1__REPLY__OUTCOME_ERROR;
        r.error = &err;
    }
    size_t n = cms__v1__reply__pack(&r, out);
    (void)natsConnection_Publish(training, natsMsg_GetReply(req), out, (int)n);
}

static void send_stop(void)
{
    Cms__V1__StopJob s = CMS__V1__STOP_JOB__INIT;
    s.job_id = (char *)JOB;
    s.attempt = 1;
    s.reason = (char *)"cancelled by the test";
    uint8_t buf[256];
    size_t n = cms__v1__stop_job__pack(&s, buf);
    (void)natsConnection_Publish(training, CONTROL, buf, (int)n);
}

/* cms.cmd.training.report, on a nats.c thread: record, then answer by the
 * script. */
static void on_report(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
    (void)nc;
    (void)sub;
    (void)closure;
    Cms__V1__WorkerReport *r = cms__v1__worker_report__unpack(
        NULL, (size_t)natsMsg_GetDataLength(msg), (const uint8_t *)natsMsg_GetData(msg));
    if (r == NULL) {
        natsMsg_Destroy(msg);
        return;
    }
    uv_mutex_lock(&fake.mu);
    seen *s = fake.n < MAX_REPORTS ? &fake.reports[fake.n++] : NULL;
    if (s != NULL) {
        const char *v = NULL;
        memset(s, 0, sizeof *s);
        s->kind = r->kind;
        s->steps = r->steps;
        s->examples = r->examples;
        s->loss = r->loss;
        s->accuracy = r->accuracy;
        snprintf(s->message, sizeof s->message, "%s", r->message);
        if (natsMsgHeader_Get(msg, "Authorization", &v) == NATS_OK)
            snprintf(s->auth, sizeof s->auth, "%s", v);
        if (natsMsgHeader_Get(msg, "Cms-Request-Id", &v) == NATS_OK)
            snprintf(s->request_id, sizeof s->request_id, "%s", v);
    }
    script sc = fake.script;
    bool first_progress = r->kind == CMS__V1__REPORT_KIND__REPORT_KIND_PROGRESS && !fake.stop_sent;
    if (first_progress && (sc == SCRIPT_STOP_BY_CONTROL || sc == SCRIPT_STOP_BY_REPLY))
        fake.stop_sent = true;
    uv_mutex_unlock(&fake.mu);

    Cms__V1__ReportReply rr = CMS__V1__REPORT_REPLY__INIT;
    rr.max_steps = 1000000;
    if (r->kind == CMS__V1__REPORT_KIND__REPORT_KIND_STARTED && sc == SCRIPT_REFUSE_START) {
        reply_with(msg, NULL, CMS__V1__ERROR_CODE__FAILED_PRECONDITION);
    } else if (r->kind == CMS__V1__REPORT_KIND__REPORT_KIND_STARTED && sc == SCRIPT_DENY_KEY) {
        reply_with(msg, NULL, CMS__V1__ERROR_CODE__PERMISSION_DENIED);
    } else {
        if (r->kind == CMS__V1__REPORT_KIND__REPORT_KIND_STARTED && sc == SCRIPT_LOWER_STEPS)
            rr.max_steps = 37;
        if (first_progress && sc == SCRIPT_STOP_BY_REPLY) {
            rr.stop = true;
            rr.reason = (char *)"the budget is spent";
        }
        if (first_progress && sc == SCRIPT_STOP_BY_CONTROL)
            send_stop(); /* before the reply: the worker hears it before its next step */
        reply_with(msg, &rr, CMS__V1__ERROR_CODE__UNSPECIFIED);
    }
    cms__v1__worker_report__free_unpacked(r, NULL);
    natsMsg_Destroy(msg);
}

static void setup(void)
{
    cms_log_init("worker-test", CMS_LOG_WARN, NULL); /* the provisioning's lines */
    start_server();
    cr_assert_eq(uv_mutex_init(&fake.mu), 0);
    fake.n = 0;
    fake.stop_sent = false;
    fake.script = SCRIPT_ACCEPT;
    provision();
    training = as("training");
    cr_assert_eq(
        natsConnection_Subscribe(&responder, training, "cms.cmd.training.report", on_report, NULL),
        NATS_OK);
    cr_assert_eq(natsConnection_FlushTimeout(training, 5000), NATS_OK);
    /* the worker's key: of the form cms-identity issues (nobody checks it here) */
    cms_uuid id;
    uint8_t secret[CMS_APIKEY_SECRET_BYTES];
    cms_uuid_v7(&id);
    cr_assert_eq(cms_apikey_generate(&id, api_key, secret), 0);
    char path[300];
    snprintf(path, sizeof path, "%s/worker.key", dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, api_key, strlen(api_key)), (ssize_t)strlen(api_key));
    cr_assert_eq(write(fd, "\n", 1), 1);
    close(fd);
}

static void teardown(void)
{
    natsSubscription_Destroy(responder);
    responder = NULL;
    natsConnection_Destroy(training);
    training = NULL;
    if (server > 0) {
        kill(server, SIGKILL);
        waitpid(server, NULL, 0);
        server = -1;
    }
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    (void)system(cmd);
}

TestSuite(worker, .init = setup, .fini = teardown, .timeout = 120);

/* ---- dispatches ---- */

typedef struct dispatch_args {
    const char *dataset;
    int64_t dataset_size, steps;
    const char *config_json;
} dispatch_args;

static void publish_dispatch(const dispatch_args *a)
{
    Cms__V1__TrainingDispatch d = CMS__V1__TRAINING_DISPATCH__INIT;
    d.job_id = (char *)JOB;
    d.attempt = 1;
    d.model_name = (char *)"it";
    d.architecture = (char *)"logistic_regression";
    d.dataset = (char *)(a->dataset ? a->dataset : "synthetic");
    d.dataset_size = a->dataset_size ? a->dataset_size : 2000;
    d.batch_size = 100;
    d.learning_rate = 0.5;
    d.sample_rate = 0.05;
    d.noise_multiplier = 1.0;
    d.max_grad_norm = 1.0;
    d.steps = a->steps;
    d.max_steps = a->steps;
    d.config_json = (char *)(a->config_json ? a->config_json : "{}");
    d.report_interval_ms = 100;
    d.control_subject = (char *)CONTROL;
    uint8_t buf[2048];
    size_t n = cms__v1__training_dispatch__pack(&d, buf);
    jsCtx *js = NULL;
    cr_assert_eq(natsConnection_JetStream(&js, training, NULL), NATS_OK);
    jsPubAck *pa = NULL;
    jsErrCode jerr = 0;
    natsStatus st = js_Publish(&pa, js, CMS_BUS_WORK_TRAINING, buf, (int)n, NULL, &jerr);
    cr_assert_eq(st, NATS_OK, "dispatch stored: %s (%d)", natsStatus_GetText(st), (int)jerr);
    cr_assert_str_eq(pa->Stream, CMS_BUS_WORK_STREAM);
    jsPubAck_Destroy(pa);
    jsCtx_Destroy(js);
}

static uint64_t work_left(void)
{
    jsCtx *js = NULL;
    cr_assert_eq(natsConnection_JetStream(&js, training, NULL), NATS_OK);
    jsStreamInfo *si = NULL;
    natsStatus st = js_GetStreamInfo(&si, js, CMS_BUS_WORK_STREAM, NULL, NULL);
    cr_assert_eq(st, NATS_OK, "%s", natsStatus_GetText(st));
    uint64_t n = si->State.Msgs;
    jsStreamInfo_Destroy(si);
    jsCtx_Destroy(js);
    return n;
}

/* ---- the worker ---- */

/* extra: one more argument (NULL: none); --once unless it is given */
static pid_t spawn_worker_with(const char *report_timeout, const char *extra)
{
    char creds[300], key[300], log[300], timeout[64];
    creds_of("worker", creds, sizeof creds);
    snprintf(key, sizeof key, "%s/worker.key", dir);
    snprintf(log, sizeof log, "%s/worker.log", dir);
    snprintf(timeout, sizeof timeout, "--report-timeout=%s", report_timeout);
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (freopen(log, "a", stdout) == NULL || freopen(log, "a", stderr) == NULL)
            _exit(127);
        setenv("CMS_NATS_URL", url, 1);
        setenv("CMS_NATS_CREDS", creds, 1);
        setenv("CMS_API_KEY_FILE", key, 1);
        setenv("CMS_DATA_DIR", CMS_SOURCE_DIR "/tests/data", 1);
        setenv("CMS_WORKER_TEST_SEED", SEED, 1);
        setenv("CMS_LOG_LEVEL", "debug", 1);
        unsetenv("CMS_COMMAND_PREFIX");
        unsetenv("CMS_NATS_INBOX_PREFIX");
        if (extra != NULL)
            execl(CMS_WORKER_BIN, "cms-worker", "--final-report-timeout=3s", timeout, extra,
                  (char *)NULL);
        else
            execl(CMS_WORKER_BIN, "cms-worker", "--once", "--final-report-timeout=3s", timeout,
                  (char *)NULL);
        _exit(127);
    }
    return pid;
}

static pid_t spawn_worker(const char *report_timeout)
{
    return spawn_worker_with(report_timeout, NULL);
}

static void show_log(void)
{
    char cmd[400];
    snprintf(cmd, sizeof cmd, "tail -n 40 %s/worker.log >&2", dir);
    (void)system(cmd);
}

static int wait_worker(pid_t pid)
{
    int status = 0;
    int r = cms_test_wait_exit(pid, EXIT_WAIT_MS, &status);
    if (r != pid) {
        show_log();
        cms_test_kill9(pid);
        cr_assert_fail("cms-worker did not exit within %d ms", EXIT_WAIT_MS);
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        show_log();
    cr_assert(WIFEXITED(status), "cms-worker died of signal %d", WTERMSIG(status));
    return WEXITSTATUS(status);
}

static size_t reports(seen *out, size_t cap)
{
    uv_mutex_lock(&fake.mu);
    size_t n = fake.n < cap ? fake.n : cap;
    memcpy(out, fake.reports, n * sizeof *out);
    uv_mutex_unlock(&fake.mu);
    return n;
}

static seen got[MAX_REPORTS];

static const char *kind(Cms__V1__ReportKind k)
{
    const ProtobufCEnumValue *v =
        protobuf_c_enum_descriptor_get_value(&cms__v1__report_kind__descriptor, (int)k);
    return v ? v->name : "?";
}

/* STARTED first, only PROGRESS between, last the one given; steps never
 * fall; every report carries the key; STARTED and the final report carry a
 * request id (they change the job once), progress reports none (a repeat
 * changes nothing, and each would leave a stored reply). */
static size_t check_sequence(Cms__V1__ReportKind last)
{
    size_t n = reports(got, MAX_REPORTS);
    cr_assert_geq(n, 2, "%zu reports", n);
    cr_assert_eq(got[0].kind, CMS__V1__REPORT_KIND__REPORT_KIND_STARTED, "first: %s",
                 kind(got[0].kind));
    cr_assert_eq(got[n - 1].kind, last, "last: %s, want %s", kind(got[n - 1].kind), kind(last));
    char bearer[320];
    snprintf(bearer, sizeof bearer, "Bearer %s", api_key);
    for (size_t i = 0; i < n; i++) {
        cr_assert_str_eq(got[i].auth, bearer, "report %zu carries the worker's key", i);
        if (got[i].kind == CMS__V1__REPORT_KIND__REPORT_KIND_PROGRESS)
            cr_assert_eq(strlen(got[i].request_id), 0, "progress report %zu has no request id", i);
        else
            cr_assert_gt(strlen(got[i].request_id), 0, "report %zu has a request id", i);
        if (i > 0 && i < n - 1)
            cr_assert_eq(got[i].kind, CMS__V1__REPORT_KIND__REPORT_KIND_PROGRESS, "report %zu: %s",
                         i, kind(got[i].kind));
        if (i > 0)
            cr_assert_geq(got[i].steps, got[i - 1].steps);
    }
    return n;
}

/* ---- the tests ---- */

Test(worker, trains_a_job_to_the_end_and_reports_it)
{
    publish_dispatch(&(dispatch_args){.steps = 3000});
    pid_t pid = spawn_worker("5s");
    cr_assert_eq(wait_worker(pid), 0);
    size_t n = check_sequence(CMS__V1__REPORT_KIND__REPORT_KIND_COMPLETED);
    const seen *done = &got[n - 1];
    cr_assert_eq(done->steps, 3000);
    /* Poisson batches of 100 expected */
    cr_assert(done->examples > 3000 * 90 && done->examples < 3000 * 110, "%lld examples",
              (long long)done->examples);
    cr_assert_geq(done->accuracy, 0.56 + 0.15, "accuracy %.3f", done->accuracy);
    cr_assert_lt(done->loss, 0.6931, "loss %.3f", done->loss);
    cr_assert_eq(work_left(), 0, "the dispatch was acked");
}

Test(worker, a_seed_makes_the_same_model)
{
    publish_dispatch(&(dispatch_args){.steps = 200});
    cr_assert_eq(wait_worker(spawn_worker("5s")), 0);
    size_t n = check_sequence(CMS__V1__REPORT_KIND__REPORT_KIND_COMPLETED);
    seen first = got[n - 1];
    uv_mutex_lock(&fake.mu);
    fake.n = 0;
    uv_mutex_unlock(&fake.mu);
    publish_dispatch(&(dispatch_args){.steps = 200});
    cr_assert_eq(wait_worker(spawn_worker("5s")), 0);
    n = check_sequence(CMS__V1__REPORT_KIND__REPORT_KIND_COMPLETED);
    cr_assert_eq(got[n - 1].examples, first.examples);
    cr_assert_eq(got[n - 1].loss, first.loss);
    cr_assert_eq(got[n - 1].accuracy, first.accuracy);
}

Test(worker, a_stop_on_the_control_subject_stops_it_within_a_step)
{
    fake.script = SCRIPT_STOP_BY_CONTROL;
    publish_dispatch(&(dispatch_args){.steps = 100000000});
    cr_assert_eq(wait_worker(spawn_worker("5s")), 0);
    size_t n = check_sequence(CMS__V1__REPORT_KIND__REPORT_KIND_STOPPED);
    cr_assert_lt(got[n - 1].steps, 100000000);
    cr_assert_str_eq(got[n - 1].message, "cancelled by the test");
    cr_assert_eq(work_left(), 0);
}

Test(worker, a_reply_that_says_stop_stops_it)
{
    fake.script = SCRIPT_STOP_BY_REPLY;
    publish_dispatch(&(dispatch_args){.steps = 100000000});
    cr_assert_eq(wait_worker(spawn_worker("5s")), 0);
    size_t n = check_sequence(CMS__V1__REPORT_KIND__REPORT_KIND_STOPPED);
    cr_assert_eq(n, 3, "STARTED, the PROGRESS answered stop, STOPPED");
    cr_assert_eq(got[2].steps, got[1].steps, "not one step after the reply");
    cr_assert_str_eq(got[2].message, "the budget is spent");
}

Test(worker, a_smaller_max_steps_in_a_reply_is_obeyed)
{
    fake.script = SCRIPT_LOWER_STEPS;
    publish_dispatch(&(dispatch_args){.steps = 5000});
    cr_assert_eq(wait_worker(spawn_worker("5s")), 0);
    size_t n = check_sequence(CMS__V1__REPORT_KIND__REPORT_KIND_COMPLETED);
    cr_assert_eq(got[n - 1].steps, 37);
}

Test(worker, another_sampler_fails_the_job_before_it_starts)
{
    publish_dispatch(
        &(dispatch_args){.steps = 100, .config_json = "{\"training\":{\"sampler\":\"shuffle\"}}"});
    cr_assert_eq(wait_worker(spawn_worker("5s")), 0);
    size_t n = reports(got, MAX_REPORTS);
    cr_assert_eq(n, 1, "only the failure");
    cr_assert_eq(got[0].kind, CMS__V1__REPORT_KIND__REPORT_KIND_FAILED);
    cr_assert_str_eq(got[0].message,
                     "training.sampler \"shuffle\" is not supported: the accountant assumes "
                     "Poisson sampling, so another sampler would make the reported epsilon wrong");
    cr_assert_eq(got[0].steps, 0);
    cr_assert_eq(work_left(), 0);
}

Test(worker, a_dataset_of_another_size_fails_the_job)
{
    publish_dispatch(&(dispatch_args){.steps = 100, .dataset_size = 1999});
    cr_assert_eq(wait_worker(spawn_worker("5s")), 0);
    check_sequence(CMS__V1__REPORT_KIND__REPORT_KIND_FAILED);
    cr_assert_not_null(strstr(got[1].message, "has 2000 rows: the dispatch says dataset_size 1999"),
                       "%s", got[1].message);
    cr_assert_eq(got[1].steps, 0);
}

Test(worker, a_missing_dataset_fails_the_job)
{
    publish_dispatch(&(dispatch_args){.steps = 100, .dataset = "nowhere"});
    cr_assert_eq(wait_worker(spawn_worker("5s")), 0);
    check_sequence(CMS__V1__REPORT_KIND__REPORT_KIND_FAILED);
    cr_assert_not_null(strstr(got[1].message, "dataset \"nowhere\" is not in the worker's data"),
                       "%s", got[1].message);
}

Test(worker, a_start_refused_is_acked_and_not_run)
{
    fake.script = SCRIPT_REFUSE_START;
    publish_dispatch(&(dispatch_args){.steps = 100});
    cr_assert_eq(wait_worker(spawn_worker("5s")), 0);
    size_t n = reports(got, MAX_REPORTS);
    cr_assert_eq(n, 1, "STARTED only");
    cr_assert_eq(got[0].kind, CMS__V1__REPORT_KIND__REPORT_KIND_STARTED);
    cr_assert_eq(work_left(), 0, "acked: it is no job for this worker");
}

Test(worker, a_key_refused_leaves_the_dispatch_to_other_workers)
{
    fake.script = SCRIPT_DENY_KEY;
    publish_dispatch(&(dispatch_args){.steps = 100});
    cr_assert_eq(wait_worker(spawn_worker("5s")), 0);
    size_t n = reports(got, MAX_REPORTS);
    cr_assert_eq(n, 1, "STARTED only");
    cr_assert_eq(work_left(), 1, "nak'd, not acked");
}

Test(worker, without_cms_training_the_dispatch_is_left_for_later)
{
    natsSubscription_Unsubscribe(responder);
    cr_assert_eq(natsConnection_FlushTimeout(training, 5000), NATS_OK);
    publish_dispatch(&(dispatch_args){.steps = 100});
    cr_assert_eq(wait_worker(spawn_worker("500ms")), 0);
    cr_assert_eq(work_left(), 1, "nak'd, not acked");
}

Test(worker, sigterm_ends_a_job_after_a_last_progress_report)
{
    publish_dispatch(&(dispatch_args){.steps = 100000000});
    pid_t pid = spawn_worker("5s");
    /* once it trains: its first progress report */
    double until = cms_test_now_ms() + EXIT_WAIT_MS;
    for (;;) {
        uv_mutex_lock(&fake.mu);
        bool training_now = fake.n >= 2;
        uv_mutex_unlock(&fake.mu);
        if (training_now)
            break;
        cr_assert_lt(cms_test_now_ms(), until, "the worker never trained");
        cms_test_pause_ms(20);
    }
    double sent = cms_test_now_ms();
    cr_assert_eq(kill(pid, SIGTERM), 0);
    cr_assert_eq(wait_worker(pid), 0);
    cr_assert_lt(cms_test_now_ms() - sent, 5000, "it exits quickly");
    size_t n = reports(got, MAX_REPORTS);
    cr_assert_eq(got[n - 1].kind, CMS__V1__REPORT_KIND__REPORT_KIND_PROGRESS,
                 "no final report, only the count of its steps");
    cr_assert_gt(got[n - 1].steps, 0);
    cr_assert_eq(work_left(), 0, "acked when it started: cms-training requeues it");
}

/* --http-addr: /healthz while it runs, /readyz only while it is bound and
 * connected (503 with the reason once NATS is gone), /metrics with the
 * process metrics; SIGTERM still ends it cleanly. */
Test(worker, probes_say_when_it_can_take_work)
{
    int port = cms_test_free_port();
    char addr[64], body[8192];
    snprintf(addr, sizeof addr, "--http-addr=127.0.0.1:%d", port);
    pid_t pid = spawn_worker_with("5s", addr);
    cr_assert(cms_test_wait_http(port, "/readyz", 200, "ready", pid, 20000, body, sizeof body),
              "ready once bound: %s", body);
    cr_assert_eq(cms_test_http_get(port, "/healthz", NULL, 0), 200);
    double rss = -1;
    cr_assert_eq(cms_test_metric(port, "process_resident_memory_bytes", &rss), 200);
    cr_assert_gt(rss, 0);
    /* NATS goes away: not ready, and says why; alive all the same */
    kill(server, SIGKILL);
    waitpid(server, NULL, 0);
    server = -1;
    cr_assert(cms_test_wait_http(port, "/readyz", 503, "NATS disconnected", pid, 20000, body,
                                 sizeof body),
              "not ready without NATS: %s", body);
    cr_assert_eq(cms_test_http_get(port, "/healthz", NULL, 0), 200);
    cr_assert_eq(kill(pid, SIGTERM), 0);
    cr_assert_eq(wait_worker(pid), 0);
}

Test(worker, an_http_addr_it_cannot_bind_is_refused_at_start)
{
    pid_t pid = spawn_worker_with("5s", "--http-addr=not-an-address");
    cr_assert_eq(wait_worker(pid), 1);
}
