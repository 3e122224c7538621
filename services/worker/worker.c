/* The cms-worker process; see worker.h, and main.c for the protocol.
 *
 * Pulling: natsSubscription_Fetch with a batch of one. (nats.c 3.4.1's
 * Fetch can write past its array when it starts with more messages queued
 * than a batch larger than one still wants, which common/nats_pull.c works
 * around by speaking the pull protocol itself; with a batch of one the
 * queued message, if any, fills the batch and no request is sent.) A
 * worker holds one dispatch at a time, acked as soon as cms-training
 * accepted its start, so the durable's 30 s ack wait bounds only the time
 * to say STARTED. */
#include "worker.h"

#include "apikey.h"
#include "backoff.h"
#include "bus.h"
#include "cmd.h"
#include "dataset.h"
#include "dispatch.h"
#include "fsm.h"
#include "log.h"
#include "natsauth.h"
#include "report.h"
#include "uuid.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <nats/nats.h>
#include <poll.h>
#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <uv.h>

#define CONNECT_TIMEOUT_MS 2000
#define RECONNECT_WAIT_MS 250
#define RECONNECT_JITTER_MS 250
#define FLUSH_TIMEOUT_MS 2000
#define DISPATCH_MAX (1024 * 1024) /* bytes of a dispatch decoded at most */
#define CONTROL_MAX 4096           /* bytes of a stop decoded at most */
#define NAK_DELAY_MS 5000          /* before a dispatch nobody took up comes back */
#define REBIND_AFTER_ERRORS 3      /* fetch errors in a row before binding again */
#define PROGRESS_EVAL_ROWS 10000   /* rows a progress report's figures are measured on */
#define AUTH_MAX 300               /* "Bearer " and a key */

static const char *const err_names[] = {WORKER_ERRORS(CMS_ENUM_TEXT)};

const char *worker_strerror(worker_err e)
{
    return cms_enum_text(err_names, WORKER_NERRORS, (int)e);
}

/* ---- stopping ---- */

/* Set once by worker_stop, from a signal handler or any thread; waits
 * poll the eventfd, which becomes readable then and stays so. */
static atomic_bool g_stop;
static atomic_int g_stop_fd = -1;

void worker_stop(void)
{
    atomic_store(&g_stop, true);
    int fd = atomic_load(&g_stop_fd);
    if (fd >= 0) {
        uint64_t one = 1;
        ssize_t n = write(fd, &one, sizeof one);
        (void)n; /* a full counter is readable too */
    }
}

bool worker_stopping(void)
{
    return atomic_load(&g_stop);
}

static int64_t now_ms(void)
{
    return (int64_t)(uv_hrtime() / 1000000);
}

/* Waits ms unless stopped; false once stopped. */
static bool pause_for(int64_t ms)
{
    int64_t deadline = now_ms() + ms;
    while (!worker_stopping()) {
        int64_t left = deadline - now_ms();
        if (left <= 0)
            return true;
        struct pollfd p = {.fd = atomic_load(&g_stop_fd), .events = POLLIN};
        if (poll(&p, 1, left > INT_MAX ? INT_MAX : (int)left) < 0 && errno != EINTR)
            return !worker_stopping(); /* cannot wait: nothing better to do than go on */
    }
    return false;
}

/* ---- states ---- */

#define PROC_STATES(X)                                                                             \
    X(PROC_CONNECTING, "connecting")                                                               \
    X(PROC_BINDING, "binding")                                                                     \
    X(PROC_WAITING, "waiting")                                                                     \
    X(PROC_WORKING, "working")                                                                     \
    X(PROC_CLOSING, "closing")                                                                     \
    X(PROC_CLOSED, "closed")

typedef enum { PROC_STATES(CMS_ENUM_ITEM) PROC_NSTATES } proc_state;
static const char *const proc_names[] = {PROC_STATES(CMS_ENUM_TEXT)};
static const bool proc_moves[PROC_NSTATES][PROC_NSTATES] = {
    [PROC_CONNECTING] = {[PROC_BINDING] = true, [PROC_CLOSING] = true},
    [PROC_BINDING] = {[PROC_WAITING] = true, [PROC_CLOSING] = true},
    [PROC_WAITING] = {[PROC_WORKING] = true, [PROC_BINDING] = true, [PROC_CLOSING] = true},
    [PROC_WORKING] = {[PROC_WAITING] = true, [PROC_CLOSING] = true},
    [PROC_CLOSING] = {[PROC_CLOSED] = true},
};
static const cms_fsm proc_fsm = CMS_FSM_INIT("worker", CMS_LOG_INFO, proc_names, proc_moves);

/* A job from its dispatch to its last report. */
#define JOB_STATES(X)                                                                              \
    X(JOB_CHECKING, "checking")   /* decoded, not yet known to be trainable */                     \
    X(JOB_STARTING, "starting")   /* STARTED sent: cms-training decides */                         \
    X(JOB_RUNNING, "running")     /* accepted and acked: training */                               \
    X(JOB_REPORTING, "reporting") /* its final report is being sent */                             \
    X(JOB_DONE, "done")

typedef enum { JOB_STATES(CMS_ENUM_ITEM) JOB_NSTATES } job_state;
static const char *const job_names[] = {JOB_STATES(CMS_ENUM_TEXT)};
static const bool job_moves[JOB_NSTATES][JOB_NSTATES] = {
    [JOB_CHECKING] = {[JOB_STARTING] = true, [JOB_REPORTING] = true, [JOB_DONE] = true},
    [JOB_STARTING] = {[JOB_RUNNING] = true, [JOB_DONE] = true},
    [JOB_RUNNING] = {[JOB_REPORTING] = true, [JOB_DONE] = true},
    [JOB_REPORTING] = {[JOB_DONE] = true},
};
static const cms_fsm job_fsm = CMS_FSM_INIT("training job", CMS_LOG_INFO, job_names, job_moves);

/* ---- the worker ---- */

struct worker {
    worker_options o;
    proc_state state;
    char auth[AUTH_MAX]; /* "Bearer <key>": the only copy of the key, wiped on destroy */
    char report_subject[CMS_BUS_SUBJECT_MAX];
    bool seeded;
    uint8_t seed[DPSGD_SEED_BYTES];
    cms_natsauth_info nats_info;
    natsConnection *nc;
    jsCtx *js;
    natsSubscription *pull;
    unsigned fetch_errors; /* in a row */
};

/* What nats.c's threads touch: never the worker, which may be gone by the
 * time a late callback runs (nats.c runs them on threads of its own and
 * does not wait for them on close), so these live as long as the process.
 *
 * g_closing: the disconnection is ours. g_ctl: the stop of the job in
 * hand, set by its control subscription's callback; mu guards job, attempt
 * and reason, stop is read without it before every step. */
static atomic_bool g_closing;
static struct {
    pthread_mutex_t mu;
    char job[CMS_UUID_STRLEN + 1];
    int32_t attempt;
    char reason[REPORT_TEXT_MAX];
    atomic_bool stop;
} g_ctl = {.mu = PTHREAD_MUTEX_INITIALIZER};

/* What /readyz reads from the probes' thread: the worker's state and
 * whether its connection is up. */
static atomic_int g_state = PROC_CONNECTING;
static atomic_bool g_connected;

static void set_state(worker *w, proc_state to)
{
    w->state = (proc_state)cms_fsm_step(&proc_fsm, w->state, to, NULL);
    atomic_store(&g_state, (int)w->state);
}

bool worker_ready(char *why, size_t whylen)
{
    proc_state st = (proc_state)atomic_load(&g_state);
    if (st != PROC_WAITING && st != PROC_WORKING) {
        snprintf(why, whylen, "worker %s", cms_enum_text(proc_names, PROC_NSTATES, (int)st));
        return false;
    }
    if (!atomic_load(&g_connected)) {
        snprintf(why, whylen, "NATS disconnected: reconnecting");
        return false;
    }
    return true;
}

worker_err worker_create(const worker_options *o, worker **out)
{
    if (o->nats_url == NULL || o->api_key == NULL || o->data_dir == NULL ||
        o->report_interval_ms <= 0 || o->report_timeout_ms <= 0 || o->final_report_ms <= 0 ||
        o->fetch_timeout_ms <= 0 || strlen(o->api_key) + sizeof "Bearer " > AUTH_MAX)
        return WORKER_EINVAL;
    worker *w = calloc(1, sizeof *w);
    if (w == NULL)
        return WORKER_ENOMEM;
    w->o = *o;
    w->o.api_key = NULL;
    w->o.test_seed = NULL;
    snprintf(w->auth, sizeof w->auth, "Bearer %s", o->api_key);
    if (o->test_seed != NULL) {
        w->seeded = true;
        memcpy(w->seed, o->test_seed, sizeof w->seed);
    }
    if (cms_bus_command_subject(w->report_subject, sizeof w->report_subject, o->command_prefix,
                                REPORT_SERVICE, REPORT_VERB) != CMS_BUS_OK) {
        worker_destroy(w);
        return WORKER_EINVAL;
    }
    if (atomic_load(&g_stop_fd) < 0) {
        int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (fd < 0) {
            worker_destroy(w);
            return WORKER_ENOMEM;
        }
        atomic_store(&g_stop_fd, fd);
        if (worker_stopping())
            worker_stop(); /* a signal before the fd: make it readable */
    }
    *out = w;
    return WORKER_OK;
}

void worker_destroy(worker *w)
{
    if (w == NULL)
        return;
    natsSubscription_Destroy(w->pull);
    jsCtx_Destroy(w->js);
    natsConnection_Destroy(w->nc);
    sodium_memzero(w->auth, sizeof w->auth);
    sodium_memzero(w->seed, sizeof w->seed);
    free(w);
}

/* ---- NATS ---- */

static void on_async_error(natsConnection *nc, natsSubscription *sub, natsStatus err, void *closure)
{
    (void)nc;
    (void)sub;
    (void)closure;
    /* logging is thread-safe; the text names the subject of a permission refusal */
    const char *text = err == NATS_NOT_PERMITTED ? nats_GetLastError(NULL) : NULL;
    cms_log_warn("nats error", "{s:s, s:s?}", "error", natsStatus_GetText(err), "detail", text);
}

static void on_disconnected(natsConnection *nc, void *closure)
{
    (void)nc;
    (void)closure;
    atomic_store(&g_connected, false);
    if (!atomic_load(&g_closing))
        cms_log_warn("nats disconnected: reconnecting", NULL);
}

static void on_reconnected(natsConnection *nc, void *closure)
{
    (void)nc;
    (void)closure;
    atomic_store(&g_connected, true);
    cms_log_info("nats reconnected", NULL);
}

/* One attempt. 0: connected; 1: retry later; -1: the options are wrong
 * (logged), retrying cannot help. */
static int connect_once(worker *w)
{
    int rc = -1;
    natsOptions *no = NULL;
    char why[1024];
    natsStatus st = natsOptions_Create(&no);
    if (st == NATS_OK)
        st = natsOptions_SetName(no, "cms-worker");
    if (st == NATS_OK)
        st = natsOptions_SetTimeout(no, CONNECT_TIMEOUT_MS);
    if (st == NATS_OK)
        st = natsOptions_SetMaxReconnect(no, -1);
    if (st == NATS_OK)
        st = natsOptions_SetReconnectWait(no, RECONNECT_WAIT_MS);
    if (st == NATS_OK)
        st = natsOptions_SetReconnectJitter(no, RECONNECT_JITTER_MS, RECONNECT_JITTER_MS * 4);
    if (st == NATS_OK)
        st = natsOptions_SetErrorHandler(no, on_async_error, NULL);
    if (st == NATS_OK)
        st = natsOptions_SetDisconnectedCB(no, on_disconnected, NULL);
    if (st == NATS_OK)
        st = natsOptions_SetReconnectedCB(no, on_reconnected, NULL);
    if (st != NATS_OK) {
        cms_log_error("bad NATS options (check --nats-url)", "{s:s}", "error",
                      natsStatus_GetText(st));
        goto out;
    }
    if (cms_natsauth_apply(no, w->o.nats_url, &w->o.security, &w->nats_info, why, sizeof why) !=
        CMS_NATSAUTH_OK) {
        cms_log_error("the NATS security options cannot be used", "{s:s}", "why", why);
        goto out;
    }
    st = natsConnection_Connect(&w->nc, no);
    if (st == NATS_OK) {
        atomic_store(&g_connected, true);
        cms_log_info("nats connected", "{s:s, s:b}", "inbox_prefix", w->nats_info.inbox_prefix,
                     "tls", w->nats_info.tls);
        rc = 0;
    } else {
        if (st == NATS_CONNECTION_AUTH_FAILED)
            cms_natsauth_refused_text(&w->nats_info, why, sizeof why);
        else
            snprintf(why, sizeof why, "%s", natsStatus_GetText(st));
        cms_log_warn("cannot connect to NATS: trying again", "{s:s}", "why", why);
        rc = 1;
    }
out:
    natsOptions_Destroy(no);
    return rc;
}

static bool connect_nats(worker *w)
{
    cms_backoff b;
    cms_backoff_init(&b, 500, 30000);
    for (;;) {
        int rc = connect_once(w);
        if (rc == 0)
            break;
        if (rc < 0 || !pause_for((int64_t)cms_backoff_next(&b)))
            return false;
    }
    natsStatus st = natsConnection_JetStream(&w->js, w->nc, NULL);
    if (st != NATS_OK) {
        cms_log_error("cannot use JetStream", "{s:s}", "error", natsStatus_GetText(st));
        return false;
    }
    return true;
}

/* Binds the durable cms-migrate made (never creating it: a worker's NATS
 * user may not), retrying until it is there. */
static bool bind_durable(worker *w)
{
    cms_backoff b;
    cms_backoff_init(&b, 1000, 30000);
    natsSubscription_Destroy(w->pull);
    w->pull = NULL;
    const char *durable = w->o.work_durable ? w->o.work_durable : CMS_BUS_WORKERS_DURABLE;
    for (;;) {
        jsSubOptions so;
        jsSubOptions_Init(&so);
        so.Stream = CMS_BUS_WORK_STREAM;
        so.Consumer = durable;
        so.ManualAck = true;
        jsErrCode jerr = 0;
        /* the subject the durable filters on (cms.work.training, or a
         * test's own under it) */
        char subject[CMS_BUS_SUBJECT_MAX];
        snprintf(subject, sizeof subject, "%s", CMS_BUS_WORK_TRAINING);
        jsConsumerInfo *ci = NULL;
        natsStatus st = js_GetConsumerInfo(&ci, w->js, CMS_BUS_WORK_STREAM, durable, NULL, &jerr);
        if (st == NATS_OK && ci->Config && ci->Config->FilterSubject &&
            ci->Config->FilterSubject[0])
            snprintf(subject, sizeof subject, "%s", ci->Config->FilterSubject);
        jsConsumerInfo_Destroy(ci);
        if (st == NATS_OK)
            st = js_PullSubscribe(&w->pull, w->js, subject, durable, NULL, &so, &jerr);
        if (st == NATS_OK) {
            cms_log_info("pulling dispatches", "{s:s, s:s, s:s}", "stream", CMS_BUS_WORK_STREAM,
                         "durable", durable, "subject", subject);
            w->fetch_errors = 0;
            return true;
        }
        cms_log_warn("cannot bind the workers durable (has cms-migrate provisioned it?): trying "
                     "again",
                     "{s:s, s:s, s:i, s:s?}", "stream", CMS_BUS_WORK_STREAM, "error",
                     natsStatus_GetText(st), "js_error", (int)jerr, "detail",
                     nats_GetLastError(NULL));
        w->pull = NULL;
        if (!pause_for((int64_t)cms_backoff_next(&b)))
            return false;
    }
}

/* ---- a job ---- */

typedef enum {
    SETTLE_ACK,       /* done with: cms-training has it, or it can never be trained */
    SETTLE_NAK_LATER, /* nobody answered: try again after NAK_DELAY_MS */
    SETTLE_NAK_NOW,   /* this worker is stopping: let another take it */
    SETTLE_TERM,      /* undecodable: never again */
} settle_how;

typedef struct job {
    job_state state;
    char label[64]; /* "<job id>/<attempt>", for the log */
    natsMsg *msg;   /* the dispatch, until settled */
    Cms__V1__TrainingDispatch *d;
    dispatch_plan plan;
    int64_t bound; /* steps this attempt may run: the plan's, lowered by replies */
    int64_t steps, examples;
    dpsgd_eval eval; /* the latest figures */
    dpsgd_data data;
    dpsgd *trainer;
    dpsgd_rng rng;
    bool rng_ready;
    natsSubscription *control;
    char failure[DISPATCH_WHY_MAX];
} job;

static void job_set_state(job *j, job_state to)
{
    j->state = (job_state)cms_fsm_step(&job_fsm, j->state, to, j->label);
}

static void settle(job *j, settle_how how)
{
    if (j->msg == NULL)
        return;
    natsStatus st = NATS_OK;
    switch (how) {
    case SETTLE_ACK:
        st = natsMsg_Ack(j->msg, NULL);
        break;
    case SETTLE_NAK_LATER:
        st = natsMsg_NakWithDelay(j->msg, NAK_DELAY_MS, NULL);
        break;
    case SETTLE_NAK_NOW:
        st = natsMsg_Nak(j->msg, NULL);
        break;
    case SETTLE_TERM:
        st = natsMsg_Term(j->msg, NULL);
        break;
    }
    if (st != NATS_OK)
        cms_log_warn("the dispatch could not be settled: it comes back after the ack wait",
                     "{s:s, s:s}", "job", j->label, "error", natsStatus_GetText(st));
    natsMsg_Destroy(j->msg);
    j->msg = NULL;
}

/* One report of j, sent once and waited for: true with *a filled when a
 * reply came (whatever it says), false when none did. */
static bool report_once(worker *w, const job *j, Cms__V1__ReportKind kind, const char *message,
                        const char *request_id, report_answer *a)
{
    bool answered = false;
    uint8_t *body = NULL;
    size_t len = 0;
    natsMsg *m = NULL, *rep = NULL;
    Cms__V1__WorkerReport r = CMS__V1__WORKER_REPORT__INIT;
    r.job_id = j->d->job_id;
    r.attempt = j->d->attempt;
    r.kind = kind;
    r.steps = j->steps;
    r.loss = j->eval.loss;
    r.accuracy = j->eval.accuracy;
    r.message = (char *)(message != NULL ? message : "");
    r.examples = j->examples;
    body = report_pack(&r, &len);
    if (body == NULL || len > INT_MAX) {
        cms_log_error("out of memory for a report", "{s:s}", "job", j->label);
        goto out;
    }
    natsStatus st = natsMsg_Create(&m, w->report_subject, NULL, (const char *)body, (int)len);
    if (st == NATS_OK)
        st = natsMsgHeader_Set(m, "Authorization", w->auth);
    if (st == NATS_OK && request_id != NULL)
        st = natsMsgHeader_Set(m, CMS_CMD_REQUEST_ID_HEADER, request_id);
    if (st == NATS_OK)
        st = natsConnection_RequestMsg(&rep, w->nc, m, w->o.report_timeout_ms);
    if (st != NATS_OK) {
        cms_log_warn("no reply to a report", "{s:s, s:s, s:s, s:s}", "job", j->label, "kind",
                     report_kind_name(kind), "subject", w->report_subject, "error",
                     natsStatus_GetText(st));
        goto out;
    }
    int dlen = natsMsg_GetDataLength(rep);
    report_decode((const uint8_t *)natsMsg_GetData(rep), dlen > 0 ? (size_t)dlen : 0, a);
    char code[24];
    switch (a->outcome) {
    case REPORT_ACCEPTED:
        cms_log_debug("report accepted", "{s:s, s:s, s:I, s:b}", "job", j->label, "kind",
                      report_kind_name(kind), "steps", (json_int_t)j->steps, "stop", a->stop);
        break;
    case REPORT_REFUSED:
        cms_log_warn("report refused", "{s:s, s:s, s:s, s:s}", "job", j->label, "kind",
                     report_kind_name(kind), "code", report_code_name((int)a->code, code),
                     "message", a->text);
        break;
    case REPORT_UNDECODABLE:
        cms_log_warn("the reply to a report is no cms.v1.Reply of a ReportReply", "{s:s, s:s, s:i}",
                     "job", j->label, "kind", report_kind_name(kind), "bytes", dlen);
        break;
    }
    answered = true;
out:
    natsMsg_Destroy(rep);
    natsMsg_Destroy(m);
    free(body);
    return answered;
}

static void new_request_id(char out[CMS_UUID_STRLEN + 1])
{
    cms_uuid u;
    cms_uuid_v7(&u);
    cms_uuid_format(&u, out);
}

/* A job's last report (COMPLETED, FAILED, STOPPED): sent again, with one
 * request id so that cms-training applies it once, until a reply that is
 * not a passing refusal comes, for at most final_report_ms; after
 * worker_stop, no more tries. True if it was answered. */
static bool report_final(worker *w, job *j, Cms__V1__ReportKind kind, const char *message)
{
    char rid[CMS_UUID_STRLEN + 1];
    new_request_id(rid);
    cms_backoff b;
    cms_backoff_init(&b, 200, 5000);
    int64_t deadline = now_ms() + w->o.final_report_ms;
    for (;;) {
        report_answer a;
        if (report_once(w, j, kind, message, rid, &a) && !report_transient(&a))
            return true;
        int64_t delay = (int64_t)cms_backoff_next(&b);
        if (worker_stopping() || now_ms() + delay > deadline || !pause_for(delay)) {
            cms_log_error("a job's last report was not answered: cms-training will presume the "
                          "worker lost",
                          "{s:s, s:s}", "job", j->label, "kind", report_kind_name(kind));
            return false;
        }
    }
}

static void lower_bound(job *j, const report_answer *a)
{
    if (a->outcome == REPORT_ACCEPTED && a->max_steps > 0 && a->max_steps < j->bound) {
        cms_log_info("cms-training lowered the job's steps", "{s:s, s:I, s:I}", "job", j->label,
                     "from", (json_int_t)j->bound, "to", (json_int_t)a->max_steps);
        j->bound = a->max_steps;
    }
}

/* The stop of a job, from its control subject (a nats.c thread): only
 * flags it. A stop for attempt 0 is for every attempt of the job. */
static void on_control(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
    (void)nc;
    (void)sub;
    (void)closure;
    int len = natsMsg_GetDataLength(msg);
    Cms__V1__StopJob *s = NULL;
    if (len >= 0 && len <= CONTROL_MAX)
        s = cms__v1__stop_job__unpack(NULL, (size_t)len, (const uint8_t *)natsMsg_GetData(msg));
    if (s != NULL) {
        pthread_mutex_lock(&g_ctl.mu);
        if (s->job_id != NULL && g_ctl.job[0] != '\0' && strcmp(s->job_id, g_ctl.job) == 0 &&
            (s->attempt == 0 || s->attempt == g_ctl.attempt)) {
            snprintf(g_ctl.reason, sizeof g_ctl.reason, "%s", s->reason ? s->reason : "");
            atomic_store(&g_ctl.stop, true);
        }
        pthread_mutex_unlock(&g_ctl.mu);
        cms__v1__stop_job__free_unpacked(s, NULL);
    }
    natsMsg_Destroy(msg);
}

/* A stop that came with a reply rather than on the control subject. */
static void told_to_stop(const char *reason)
{
    pthread_mutex_lock(&g_ctl.mu);
    snprintf(g_ctl.reason, sizeof g_ctl.reason, "%s", reason);
    atomic_store(&g_ctl.stop, true);
    pthread_mutex_unlock(&g_ctl.mu);
}

static void control_arm(worker *w, job *j)
{
    pthread_mutex_lock(&g_ctl.mu);
    snprintf(g_ctl.job, sizeof g_ctl.job, "%s", j->d->job_id);
    g_ctl.attempt = j->d->attempt;
    g_ctl.reason[0] = '\0';
    atomic_store(&g_ctl.stop, false);
    pthread_mutex_unlock(&g_ctl.mu);
    natsStatus st =
        natsConnection_Subscribe(&j->control, w->nc, j->plan.control_subject, on_control, NULL);
    if (st != NATS_OK) {
        /* a stop then comes only with a progress report's reply */
        cms_log_error("cannot subscribe to the job's control subject", "{s:s, s:s, s:s}", "job",
                      j->label, "subject", j->plan.control_subject, "error",
                      natsStatus_GetText(st));
        j->control = NULL;
    }
}

static void control_disarm(job *j)
{
    if (j->control != NULL) {
        (void)natsSubscription_Unsubscribe(j->control);
        natsSubscription_Destroy(j->control);
        j->control = NULL;
    }
    pthread_mutex_lock(&g_ctl.mu);
    g_ctl.job[0] = '\0';
    atomic_store(&g_ctl.stop, false);
    pthread_mutex_unlock(&g_ctl.mu);
}

/* Says STARTED and settles the dispatch by the answer: true if the job is
 * to run. */
static bool start(worker *w, job *j)
{
    job_set_state(j, JOB_STARTING);
    char rid[CMS_UUID_STRLEN + 1], code[24];
    new_request_id(rid);
    report_answer a;
    if (!report_once(w, j, CMS__V1__REPORT_KIND__REPORT_KIND_STARTED, NULL, rid, &a)) {
        settle(j, worker_stopping() ? SETTLE_NAK_NOW : SETTLE_NAK_LATER);
        return false;
    }
    switch (a.outcome) {
    case REPORT_ACCEPTED:
        settle(j, SETTLE_ACK);
        lower_bound(j, &a);
        if (a.stop)
            told_to_stop(a.text);
        return true;
    case REPORT_REFUSED:
        if (report_transient(&a)) {
            settle(j, SETTLE_NAK_LATER);
        } else if (a.code == CMS__V1__ERROR_CODE__PERMISSION_DENIED) {
            /* this worker's key is refused: the job is another worker's to run */
            cms_log_error("cms-training refused this worker's key: the job is left to others",
                          "{s:s, s:s}", "job", j->label, "message", a.text);
            settle(j, SETTLE_NAK_LATER);
        } else {
            /* not pending any more, a stale attempt, not this worker's to run */
            cms_log_info("cms-training did not give the job to this worker", "{s:s, s:s, s:s}",
                         "job", j->label, "code", report_code_name((int)a.code, code), "message",
                         a.text);
            settle(j, SETTLE_ACK);
        }
        return false;
    case REPORT_UNDECODABLE:
        settle(j, SETTLE_NAK_LATER);
        return false;
    }
    return false;
}

/* The dataset, checked against the dispatch; false with j->failure. */
static bool load_data(worker *w, job *j)
{
    char path[4096];
    const char *name = j->d->dataset;
    if (!dataset_path(w->o.data_dir, name, path, sizeof path)) {
        snprintf(j->failure, sizeof j->failure, "dataset \"%s\": the path is too long", name);
        return false;
    }
    dataset_err e;
    dataset_code c = dataset_load(path, NULL, &j->data, &e);
    if (c != DATASET_OK) {
        cms_log_warn("the dataset cannot be used", "{s:s, s:s, s:s}", "job", j->label, "path", path,
                     "why", e.msg);
        if (c == DATASET_EMISSING)
            snprintf(j->failure, sizeof j->failure,
                     "dataset \"%s\" is not in the worker's data directory (no file %s.csv)", name,
                     name);
        else
            snprintf(j->failure, sizeof j->failure, "dataset \"%s\": %s", name, e.msg);
        return false;
    }
    if ((int64_t)j->data.rows != j->d->dataset_size) {
        snprintf(j->failure, sizeof j->failure,
                 "dataset \"%s\" has %zu rows: the dispatch says dataset_size %" PRId64
                 " (the accountant's sample rate and privacy assume that size)",
                 name, j->data.rows, (int64_t)j->d->dataset_size);
        return false;
    }
    cms_log_info("dataset loaded", "{s:s, s:s, s:I, s:I}", "job", j->label, "dataset", name, "rows",
                 (json_int_t)j->data.rows, "features", (json_int_t)j->data.features);
    return true;
}

typedef enum {
    END_COMPLETED, /* ran its steps */
    END_STOPPED,   /* told to stop */
    END_FAILED,    /* could not go on: j->failure */
    END_ABANDONED, /* the worker stops, or the job is no longer this worker's */
} job_end;

/* A progress report; what the reply says of the job. */
static job_end progress(worker *w, job *j)
{
    dpsgd_evaluate(dpsgd_model_of(j->trainer), &j->data, PROGRESS_EVAL_ROWS, &j->eval);
    report_answer a;
    /* no request id: a progress report repeated changes nothing (the steps
     * only grow), and one stored reply per report would fill
     * command_replies */
    if (!report_once(w, j, CMS__V1__REPORT_KIND__REPORT_KIND_PROGRESS, NULL, NULL, &a))
        return END_COMPLETED; /* no news: go on; the final report is retried */
    if (a.outcome == REPORT_REFUSED && !report_transient(&a)) {
        /* the job moved on without this worker (stopped, failed, requeued) */
        return END_ABANDONED;
    }
    lower_bound(j, &a);
    if (a.outcome == REPORT_ACCEPTED && a.stop) {
        told_to_stop(a.text);
        return END_STOPPED;
    }
    return END_COMPLETED;
}

/* Trains the accepted job, checking before every step whether to stop. */
static job_end train(worker *w, job *j)
{
    if (atomic_load(&g_ctl.stop)) /* told at its start */
        return END_STOPPED;
    if (!load_data(w, j))
        return END_FAILED;
    dpsgd_err e = dpsgd_create(&j->data, &j->plan.params, &j->trainer);
    if (e != DPSGD_OK) {
        snprintf(j->failure, sizeof j->failure, "the trainer cannot start: %s", dpsgd_strerror(e));
        return END_FAILED;
    }
    j->rng_ready =
        w->seeded ? dpsgd_rng_init_seeded(&j->rng, w->seed) : dpsgd_rng_init_crypto(&j->rng);
    if (!j->rng_ready) {
        snprintf(j->failure, sizeof j->failure, "the random source cannot start");
        return END_FAILED;
    }
    dpsgd_evaluate(dpsgd_model_of(j->trainer), &j->data, PROGRESS_EVAL_ROWS, &j->eval);
    int64_t next_report = now_ms() + j->plan.report_interval_ms;
    while (j->steps < j->bound) {
        if (worker_stopping())
            return END_ABANDONED;
        if (atomic_load(&g_ctl.stop))
            return END_STOPPED;
        dpsgd_batch batch;
        e = dpsgd_step(j->trainer, &j->rng, &batch);
        j->steps++;
        j->examples += (int64_t)batch.size;
        if (e != DPSGD_OK) {
            snprintf(j->failure, sizeof j->failure, "step %" PRId64 ": %s (learning rate %g)",
                     j->steps, dpsgd_strerror(e), j->plan.params.learning_rate);
            return END_FAILED;
        }
        if (now_ms() >= next_report && j->steps < j->bound) {
            job_end end = progress(w, j);
            if (end != END_COMPLETED)
                return end;
            next_report = now_ms() + j->plan.report_interval_ms;
        }
    }
    return END_COMPLETED;
}

/* After training: the last report, by how it ended. */
static void finish(worker *w, job *j, job_end end)
{
    if (j->trainer != NULL)
        dpsgd_evaluate(dpsgd_model_of(j->trainer), &j->data, 0, &j->eval);
    char reason[REPORT_TEXT_MAX];
    switch (end) {
    case END_COMPLETED:
        job_set_state(j, JOB_REPORTING);
        cms_log_info("job completed", "{s:s, s:I, s:I, s:f, s:f}", "job", j->label, "steps",
                     (json_int_t)j->steps, "examples", (json_int_t)j->examples, "loss",
                     j->eval.loss, "accuracy", j->eval.accuracy);
        (void)report_final(w, j, CMS__V1__REPORT_KIND__REPORT_KIND_COMPLETED, NULL);
        break;
    case END_STOPPED:
        job_set_state(j, JOB_REPORTING);
        pthread_mutex_lock(&g_ctl.mu);
        snprintf(reason, sizeof reason, "%s", g_ctl.reason);
        pthread_mutex_unlock(&g_ctl.mu);
        cms_log_info("job stopped as told", "{s:s, s:I, s:s}", "job", j->label, "steps",
                     (json_int_t)j->steps, "reason", reason);
        (void)report_final(w, j, CMS__V1__REPORT_KIND__REPORT_KIND_STOPPED, reason);
        break;
    case END_FAILED:
        job_set_state(j, JOB_REPORTING);
        cms_log_warn("job failed", "{s:s, s:I, s:s}", "job", j->label, "steps",
                     (json_int_t)j->steps, "why", j->failure);
        (void)report_final(w, j, CMS__V1__REPORT_KIND__REPORT_KIND_FAILED, j->failure);
        break;
    case END_ABANDONED:
        if (worker_stopping()) {
            /* no final report: cms-training presumes the attempt lost and
             * requeues the job; one last progress report keeps its count of
             * the steps run (and so of the budget spent) exact */
            report_answer a;
            (void)report_once(w, j, CMS__V1__REPORT_KIND__REPORT_KIND_PROGRESS, NULL, NULL, &a);
            cms_log_info("job left unfinished: the worker is stopping", "{s:s, s:I}", "job",
                         j->label, "steps", (json_int_t)j->steps);
        } else {
            cms_log_info("job given up: cms-training no longer has it running here", "{s:s, s:I}",
                         "job", j->label, "steps", (json_int_t)j->steps);
        }
        break;
    }
    job_set_state(j, JOB_DONE);
}

static void job_release(job *j)
{
    control_disarm(j);
    settle(j, SETTLE_NAK_NOW); /* only if still held: nothing decided about it */
    dpsgd_destroy(j->trainer);
    dataset_release(&j->data);
    if (j->rng_ready)
        dpsgd_rng_wipe(&j->rng);
    if (j->d != NULL)
        cms__v1__training_dispatch__free_unpacked(j->d, NULL);
}

/* One dispatch, from its message to its last report; takes msg. */
static void run_job(worker *w, natsMsg *msg)
{
    job j;
    memset(&j, 0, sizeof j);
    j.msg = msg;
    snprintf(j.label, sizeof j.label, "?");
    int len = natsMsg_GetDataLength(msg);
    if (len >= 0 && len <= DISPATCH_MAX)
        j.d = cms__v1__training_dispatch__unpack(NULL, (size_t)len,
                                                 (const uint8_t *)natsMsg_GetData(msg));
    if (j.d == NULL || !dispatch_reportable(j.d)) {
        cms_log_error("dropped a dispatch that names no job: it is not a cms.v1.TrainingDispatch "
                      "of a job id and attempt",
                      "{s:i, s:b}", "bytes", len, "decoded", j.d != NULL);
        settle(&j, SETTLE_TERM);
        job_set_state(&j, JOB_DONE);
        goto out;
    }
    snprintf(j.label, sizeof j.label, "%s/%" PRId32, j.d->job_id, j.d->attempt);
    if (worker_stopping()) {
        settle(&j, SETTLE_NAK_NOW);
        job_set_state(&j, JOB_DONE);
        goto out;
    }
    if (!dispatch_check(j.d, w->o.report_interval_ms, &j.plan, j.failure, sizeof j.failure)) {
        job_set_state(&j, JOB_REPORTING);
        cms_log_warn("job refused", "{s:s, s:s}", "job", j.label, "why", j.failure);
        bool answered = report_final(w, &j, CMS__V1__REPORT_KIND__REPORT_KIND_FAILED, j.failure);
        settle(&j, answered ? SETTLE_ACK : SETTLE_NAK_LATER);
        job_set_state(&j, JOB_DONE);
        goto out;
    }
    j.bound = j.plan.steps;
    cms_log_info("job received", "{s:s, s:s, s:I, s:f, s:f, s:f, s:f, s:I}", "job", j.label,
                 "dataset", j.d->dataset, "steps", (json_int_t)j.plan.steps, "sample_rate",
                 j.plan.params.sample_rate, "noise_multiplier", j.plan.params.noise_multiplier,
                 "max_grad_norm", j.plan.params.max_grad_norm, "learning_rate",
                 j.plan.params.learning_rate, "report_interval_ms",
                 (json_int_t)j.plan.report_interval_ms);
    /* before STARTED, so that a stop sent as soon as it is accepted is heard */
    control_arm(w, &j);
    if (!start(w, &j)) {
        job_set_state(&j, JOB_DONE);
        goto out;
    }
    job_set_state(&j, JOB_RUNNING);
    finish(w, &j, train(w, &j));
out:
    job_release(&j);
}

/* ---- the pull ---- */

/* The next dispatch, waiting up to fetch_timeout_ms; NULL for none. */
static natsMsg *next_dispatch(worker *w)
{
    natsMsgList list = {NULL, 0};
    jsErrCode jerr = 0;
    natsStatus st = natsSubscription_Fetch(&list, w->pull, 1, w->o.fetch_timeout_ms, &jerr);
    natsMsg *msg = NULL;
    if (st == NATS_OK && list.Count > 0) {
        msg = list.Msgs[0];
        list.Msgs[0] = NULL;
    }
    natsMsgList_Destroy(&list);
    if (st == NATS_OK || st == NATS_TIMEOUT) {
        w->fetch_errors = 0;
        return msg;
    }
    w->fetch_errors++;
    cms_log_warn("fetching a dispatch failed", "{s:s, s:i, s:s?, s:i}", "error",
                 natsStatus_GetText(st), "js_error", (int)jerr, "detail", nats_GetLastError(NULL),
                 "in_a_row", (int)w->fetch_errors);
    (void)pause_for((int64_t)cms_backoff_delay(250, 5000, w->fetch_errors - 1));
    return NULL;
}

int worker_run(worker *w)
{
    int rc = 0;
    if (w->seeded)
        cms_log_warn("CMS_WORKER_TEST_SEED is set: every job's sampling and noise follow a known "
                     "seed, so its model is NOT private; for tests only",
                     NULL);
    if (!connect_nats(w)) {
        rc = worker_stopping() ? 0 : 1;
        goto out;
    }
    set_state(w, PROC_BINDING);
    if (!bind_durable(w))
        goto out;
    set_state(w, PROC_WAITING);
    while (!worker_stopping()) {
        natsMsg *msg = next_dispatch(w);
        if (msg != NULL) {
            set_state(w, PROC_WORKING);
            run_job(w, msg);
            set_state(w, PROC_WAITING);
            if (w->o.once)
                break;
        } else if (w->fetch_errors >= REBIND_AFTER_ERRORS) {
            set_state(w, PROC_BINDING);
            if (!bind_durable(w))
                goto out;
            set_state(w, PROC_WAITING);
        }
    }
out:
    set_state(w, PROC_CLOSING);
    if (w->nc != NULL)
        (void)natsConnection_FlushTimeout(w->nc, FLUSH_TIMEOUT_MS); /* the last ack */
    natsSubscription_Destroy(w->pull);
    w->pull = NULL;
    atomic_store(&g_closing, true);
    if (w->nc != NULL)
        natsConnection_Close(w->nc);
    set_state(w, PROC_CLOSED);
    return rc;
}
