/* What workers report (the verb report): a transition of the job from its
 * worker's side. Only a machine or enclave identity reports; the job must
 * be at the attempt the report names and, once started, run by the
 * reporting identity. The steps are the attempt's: the job's are the
 * earlier attempts' plus these, never more than max_steps, and the spent
 * budget is the accountant's epsilon of them (training/plan.h), never a
 * figure from the worker. A report past max_steps, or of a job told to
 * stop, is answered "stop"; a final report (completed, failed, stopped)
 * ends the job and settles its contract's ledger in the same statement;
 * repeating one changes nothing and gets the same answer. */
#include "training_int.h"

#include "log.h"
#include "transition.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MESSAGE_MAX 1024

/* SQL reads best as written */
// clang-format off
/* $5 id, $6 attempt, $7 worker, $8 the worker's deadline (ms); event $1..$4 */
static const char SQL_START[] =
    "WITH u AS (UPDATE training_jobs j SET status = 'running', worker_id = $7::uuid, "
    "started_at = coalesce(j.started_at, now()), last_report_at = now(), "
    "due_at = now() + $8::int8 * interval '1 millisecond', updated_at = now() "
    "WHERE j.id = $5::uuid AND j.attempt = $6::int AND j.status = 'pending' "
    "AND j.stop_reason IS NULL RETURNING j.*), "
    "o AS (" CMS_OUTBOX_SQL_FROM("u") ") SELECT " TRSQL_COLS(TRSQL_LINKED_CONTRACT) " FROM u j";
/* $5 id, $6 attempt, $7 worker, $8 the job's steps, $9 their epsilon,
 * $10 metrics, $11 the worker's deadline (ms), $12 the least time between
 * two progress events (ms), $13 the stop to tell or NULL, $14 the stop's
 * deadline (ms); event $1..$4, written (with a point of the spent budget)
 * only if the job's last one is old enough. The worker's deadline moves
 * only once it is nearer than $11 (then to 1.25 times $11 from now), so
 * that most reports change no indexed column (a HOT update): a worker is
 * presumed lost after 1 to 1.25 times $11 of silence. A stop stored meanwhile (a
 * contract's end, a cancel) is told by this report's answer: the worker is
 * then counted as told. */
static const char SQL_PROGRESS[] =
    "WITH p AS (SELECT (progress_event_at IS NULL OR progress_event_at <= now() - "
    "$12::int8 * interval '1 millisecond') AS emit FROM training_jobs WHERE id = $5::uuid), "
    "u AS (UPDATE training_jobs j SET steps_done = greatest(j.steps_done, $8::int8), "
    "privacy_budget_spent = greatest(coalesce(j.privacy_budget_spent, 0), $9::float8), "
    "metrics = $10::jsonb, last_report_at = now(), "
    "due_at = CASE WHEN j.stop_told_at IS NOT NULL THEN j.due_at "
    "WHEN coalesce(j.stop_reason, $13::text) IS NOT NULL "
    "THEN now() + $14::int8 * interval '1 millisecond' "
    "WHEN j.due_at < now() + $11::int8 * interval '1 millisecond' "
    "THEN now() + $11::int8 * interval '1.25 millisecond' ELSE j.due_at END, "
    "stop_reason = coalesce(j.stop_reason, $13::text), "
    "stop_told_at = CASE WHEN j.stop_told_at IS NULL AND coalesce(j.stop_reason, $13::text) "
    "IS NOT NULL THEN now() ELSE j.stop_told_at END, "
    "progress_event_at = CASE WHEN p.emit THEN now() ELSE j.progress_event_at END, "
    "updated_at = now() FROM p WHERE j.id = $5::uuid AND j.attempt = $6::int "
    "AND j.worker_id = $7::uuid AND j.status = 'running' RETURNING j.*, p.emit), "
    "b AS (INSERT INTO training_job_budget (job_id, steps, epsilon) "
    "SELECT id, steps_done, privacy_budget_spent FROM u WHERE u.emit ON CONFLICT DO NOTHING), "
    "o AS (" CMS_OUTBOX_SQL_FROM("u WHERE u.emit") ") "
    "SELECT j.id::text, j.status::text, coalesce(j.stop_reason, ''), j.emit FROM u j";
/* what SQL_PROGRESS returns: emit, whether it wrote its event */
enum { PROGRESS_ID, PROGRESS_STATUS, PROGRESS_STOP_REASON, PROGRESS_EMIT };
// clang-format on

typedef struct report_op {
    trsvc *s;
    cms_cmd_req *req;
    const Cms__V1__WorkerReport *m;
    const char *worker;
    char attempt[16];
    /* what the decision found, for the answer */
    bool stop, final;
    char reason[96];
    int64_t attempt_max; /* steps this attempt may run in all */
    double spent;
} report_op;

/* ---- the running jobs this process heard of ------------------------------ */

/* What a progress report needs of a running job, kept from the last row
 * written for it: with it, a progress report is one write (conditional on
 * the job still being at this attempt, run by this worker), without the
 * read of the transition; a write that finds the job moved drops the entry
 * and goes the transition's way, whose read answers precisely.
 * Direct-mapped by the job's id: a collision only costs a read. */
struct trsvc_run {
    char id[TR_ID_LEN + 1], worker[TR_ID_LEN + 1], consumer[TR_ID_LEN + 1];
    char contract[TR_ID_LEN + 1];
    int attempt;
    int64_t max_steps, before;
    double delta, budget;
    double step[CMS_RDP_NORDERS];
};

static uint32_t run_slot(const char *id)
{
    uint32_t h = 2166136261u;
    for (const char *p = id; *p; p++)
        h = (h ^ (uint8_t)*p) * 16777619u;
    return h % TRSVC_RUNS;
}

static struct trsvc_run *run_find(trsvc *s, const char *id, int attempt, const char *worker)
{
    struct trsvc_run *e = &s->runs[run_slot(id)];
    if (strcmp(e->id, id) != 0 || e->attempt != attempt || strcmp(e->worker, worker) != 0)
        return NULL;
    return e;
}

static void run_forget(trsvc *s, const char *id)
{
    if (strcmp(s->runs[run_slot(id)].id, id) == 0)
        s->runs[run_slot(id)].id[0] = '\0';
}

/* Keeps row 0 of r (TRSQL_COLS) if the job runs, else forgets it. */
static void run_keep(trsvc *s, const PGresult *r)
{
    const char *id = PQgetvalue(r, 0, TRCOL_ID);
    if (strcmp(PQgetvalue(r, 0, TRCOL_STATUS), "running") != 0) {
        run_forget(s, id);
        return;
    }
    struct trsvc_run *e = &s->runs[run_slot(id)];
    if (!tp_curve_parse(PQgetvalue(r, 0, TRCOL_RDP_STEP), e->step)) {
        e->id[0] = '\0';
        return;
    }
    snprintf(e->id, sizeof e->id, "%s", id);
    snprintf(e->worker, sizeof e->worker, "%s", PQgetvalue(r, 0, TRCOL_WORKER));
    snprintf(e->consumer, sizeof e->consumer, "%s", PQgetvalue(r, 0, TRCOL_CONSUMER));
    snprintf(e->contract, sizeof e->contract, "%s", PQgetvalue(r, 0, TRCOL_CONTRACT));
    e->attempt = (int)trsvc_i64(r, 0, TRCOL_ATTEMPT);
    e->max_steps = trsvc_i64(r, 0, TRCOL_MAX_STEPS);
    e->before = trsvc_i64(r, 0, TRCOL_STEPS_BEFORE);
    e->delta = trsvc_f64(r, 0, TRCOL_DELTA);
    e->budget = trsvc_f64(r, 0, TRCOL_BUDGET);
}

void trsvc_runs_free(trsvc *s)
{
    free(s->runs);
    s->runs = NULL;
}

static int report_read(void *arg, cms_pg_job *job)
{
    report_op *op = arg;
    const char *v[] = {op->m->job_id};
    int rc = trsvc_job_actor(op->s, job, NULL, false, op->worker);
    return rc ? rc : cms_pg_job_exec(job, op->s->st_read, v, NULL, NULL);
}

static void answer(cms_cmd_req *req, const report_op *op)
{
    Cms__V1__ReportReply a = CMS__V1__REPORT_REPLY__INIT;
    a.stop = op->stop;
    a.reason = (char *)op->reason;
    a.max_steps = op->attempt_max;
    a.privacy_budget_spent = op->spent;
    cms_cmd_reply(req, &a.base);
}

static const char *final_status(Cms__V1__ReportKind k)
{
    switch (k) {
    case CMS__V1__REPORT_KIND__REPORT_KIND_COMPLETED:
        return "completed";
    case CMS__V1__REPORT_KIND__REPORT_KIND_FAILED:
        return "failed";
    case CMS__V1__REPORT_KIND__REPORT_KIND_STOPPED:
        return "stopped";
    default:
        return NULL;
    }
}

/* {"loss": x, "accuracy": y, "examples": n, "attempt": a} */
static char *metrics_json(const Cms__V1__WorkerReport *m)
{
    json_t *j =
        json_pack("{s:f, s:f, s:I, s:i, s:I}", "loss", m->loss, "accuracy", m->accuracy, "examples",
                  (json_int_t)m->examples, "attempt", m->attempt, "steps", (json_int_t)m->steps);
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    return s;
}

/* Adds the write of a report past STARTED to write: the job's steps (the
 * attempt's after the earlier ones', within max_steps, never fewer than
 * stored), the epsilon they spent, and for a final report (fin: its
 * status) the job's end with its ledger settled. stop_reason: the job's as
 * known. false: no memory. */
static bool add_write(report_op *op, cms_pg_job *write, const struct trsvc_run *run, int64_t stored,
                      const char *fin, const char *stop_reason)
{
    trsvc *s = op->s;
    const Cms__V1__WorkerReport *m = op->m;
    int64_t total = run->before + m->steps;
    bool over = total >= run->max_steps;
    if (total > run->max_steps) {
        cms_log_warn("a worker reported steps past the job's budget; counted at max_steps",
                     "{s:s, s:I, s:I}", "job_id", m->job_id, "reported", (json_int_t)total,
                     "max_steps", (json_int_t)run->max_steps);
        total = run->max_steps;
    }
    if (total < stored)
        total = stored;
    double spent = tp_epsilon(run->step, total, run->delta);
    if (!(spent <= run->budget)) /* cannot happen within max_steps: a guard */
        spent = run->budget;
    op->spent = spent;
    op->attempt_max = run->max_steps - run->before;
    char *mj = metrics_json(m);
    char steps_t[24], spent_t[32];
    snprintf(steps_t, sizeof steps_t, "%lld", (long long)total);
    snprintf(spent_t, sizeof spent_t, "%.17g", spent);
    trev_job j = {.id = run->id,
                  .contract_id = run->contract,
                  .consumer_id = run->consumer,
                  .status = fin ? fin : "running",
                  .privacy_budget = run->budget,
                  .privacy_budget_spent = spent,
                  .steps_done = total,
                  .max_steps = run->max_steps};
    cms_bus_event ev = {0};
    bool ok =
        mj != NULL && trsvc_job_actor(s, write, run->consumer, false, op->worker) == CMS_PG_OK;
    if (fin) {
        char failure[MESSAGE_MAX + 16];
        snprintf(failure, sizeof failure, "worker: %s", m->message[0] ? m->message : "failed");
        const char *why = strcmp(fin, "failed") == 0 ? failure
                          : strcmp(fin, "stopped") == 0
                              ? (stop_reason[0] ? stop_reason : "worker_stopped")
                              : NULL;
        op->final = true;
        op->stop = true;
        snprintf(op->reason, sizeof op->reason, "%s", fin);
        const char *v[] = {m->job_id,
                           op->attempt,
                           "running",
                           op->worker,
                           fin,
                           steps_t,
                           spent_t,
                           mj,
                           strcmp(fin, "failed") == 0 ? failure : NULL,
                           strcmp(fin, "stopped") == 0 ? why : NULL,
                           "false"};
        if (strcmp(fin, "completed") == 0)
            ok = ok && trev_completed(&j, m->loss, m->accuracy, op->worker, &ev) == CMS_BUS_OK;
        else if (strcmp(fin, "failed") == 0)
            ok = ok && trev_failed(&j, failure, run->attempt, op->worker, &ev) == CMS_BUS_OK;
        else
            ok = ok && trev_stopped(&j, why, op->worker, NULL, &ev) == CMS_BUS_OK;
        ok = ok && cms_outbox_add_exec(write, s->st_end, TREV_SOURCE, &ev, 11, v) == CMS_OUTBOX_OK;
    } else {
        /* past max_steps: told to stop (a stop stored meanwhile is told too) */
        const char *tell = over ? "budget_exhausted" : NULL;
        char wd[24], pe[24], sd[24];
        snprintf(wd, sizeof wd, "%lld", (long long)s->opt.worker_timeout_ms);
        snprintf(pe, sizeof pe, "%lld", (long long)s->opt.progress_event_ms);
        snprintf(sd, sizeof sd, "%lld", (long long)s->opt.stop_timeout_ms);
        const char *v[] = {m->job_id, op->attempt, op->worker, steps_t, spent_t,
                           mj,        wd,          pe,         tell,    sd};
        ok = ok &&
             trev_progress(&j, m->loss, m->accuracy, run->attempt, op->worker, &ev) == CMS_BUS_OK &&
             cms_outbox_add_exec(write, s->st_progress, TREV_SOURCE, &ev, 10, v) == CMS_OUTBOX_OK;
    }
    cms_bus_event_release(&ev);
    free(mj);
    return ok;
}

static cms_transition_step report_decide(void *arg, cms_cmd_req *req, const cms_pg_result *res,
                                         cms_pg_job *write)
{
    report_op *op = arg;
    trsvc *s = op->s;
    const Cms__V1__WorkerReport *m = op->m;
    const PGresult *r = cms_pg_result_get(res, 0);
    op->stop = op->final = false;
    op->reason[0] = '\0';
    if (r == NULL || PQntuples(r) == 0) {
        trsvc_fail_not_found(req);
        return CMS_TRANSITION_ANSWERED;
    }
    const char *status = PQgetvalue(r, 0, TRCOL_STATUS), *worker = PQgetvalue(r, 0, TRCOL_WORKER);
    int attempt = (int)trsvc_i64(r, 0, TRCOL_ATTEMPT);
    int64_t max_steps = trsvc_i64(r, 0, TRCOL_MAX_STEPS),
            before = trsvc_i64(r, 0, TRCOL_STEPS_BEFORE);
    op->attempt_max = max_steps - before;
    op->spent = trsvc_f64(r, 0, TRCOL_SPENT);
    const char *fin = final_status(m->kind);
    bool mine = strcmp(worker, op->worker) == 0;
    if (attempt != m->attempt) {
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__FAILED_PRECONDITION, "attempt",
                     "attempt %d is not the job's: it is at attempt %d; stop", m->attempt, attempt);
        return CMS_TRANSITION_ANSWERED;
    }
    if (m->kind == CMS__V1__REPORT_KIND__REPORT_KIND_STARTED) {
        if (strcmp(status, "running") == 0 && mine) {
            answer(req, op); /* a repeat */
            return CMS_TRANSITION_ANSWERED;
        }
        if (strcmp(status, "pending") != 0 || PQgetvalue(r, 0, TRCOL_STOP_REASON)[0]) {
            cms_cmd_fail(req, CMS__V1__ERROR_CODE__FAILED_PRECONDITION, "job_id",
                         "the job is %s%s%s: it does not start", status,
                         PQgetvalue(r, 0, TRCOL_STOP_REASON)[0] ? ", stopping: " : "",
                         PQgetvalue(r, 0, TRCOL_STOP_REASON));
            return CMS_TRANSITION_ANSWERED;
        }
        trev_job j;
        trsvc_row_event(r, 0, "running", &j);
        cms_bus_event ev = {0};
        char deadline[24];
        snprintf(deadline, sizeof deadline, "%lld", (long long)s->opt.worker_timeout_ms);
        const char *v[] = {m->job_id, op->attempt, op->worker, deadline};
        bool ok = trsvc_job_actor(s, write, PQgetvalue(r, 0, TRCOL_CONSUMER), false, op->worker) ==
                      CMS_PG_OK &&
                  trev_started(&j, op->worker, attempt, &ev) == CMS_BUS_OK &&
                  cms_outbox_add_exec(write, s->st_start, TREV_SOURCE, &ev, 4, v) == CMS_OUTBOX_OK;
        cms_bus_event_release(&ev);
        if (!ok) {
            trsvc_fail_oom(req);
            return CMS_TRANSITION_ANSWERED;
        }
        return CMS_TRANSITION_WRITE;
    }
    if (!mine) {
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__PERMISSION_DENIED, "job_id",
                     "the job's attempt %d is not run by this worker; stop", attempt);
        return CMS_TRANSITION_ANSWERED;
    }
    if (strcmp(status, "running") != 0) {
        if (fin && strcmp(fin, status) == 0) {
            snprintf(op->reason, sizeof op->reason, "%s", status);
            op->stop = true;
            answer(req, op); /* a repeat of the final report */
            return CMS_TRANSITION_ANSWERED;
        }
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__FAILED_PRECONDITION, "job_id", "the job is %s: stop",
                     status);
        return CMS_TRANSITION_ANSWERED;
    }
    struct trsvc_run run = {.attempt = attempt, .max_steps = max_steps, .before = before};
    snprintf(run.id, sizeof run.id, "%s", m->job_id);
    snprintf(run.worker, sizeof run.worker, "%s", op->worker);
    snprintf(run.consumer, sizeof run.consumer, "%s", PQgetvalue(r, 0, TRCOL_CONSUMER));
    snprintf(run.contract, sizeof run.contract, "%s", PQgetvalue(r, 0, TRCOL_CONTRACT));
    run.delta = trsvc_f64(r, 0, TRCOL_DELTA);
    run.budget = trsvc_f64(r, 0, TRCOL_BUDGET);
    if (!tp_curve_parse(PQgetvalue(r, 0, TRCOL_RDP_STEP), run.step)) {
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__INTERNAL, NULL,
                     "the job's privacy curve is unreadable");
        return CMS_TRANSITION_ANSWERED;
    }
    if (!fin)
        run_keep(s, r); /* running, and this worker's: its next reports are one write */
    if (!add_write(op, write, &run, trsvc_i64(r, 0, TRCOL_STEPS), fin,
                   PQgetvalue(r, 0, TRCOL_STOP_REASON))) {
        trsvc_fail_oom(req);
        return CMS_TRANSITION_ANSWERED;
    }
    return CMS_TRANSITION_WRITE;
}

static bool report_written(void *arg, cms_cmd_req *req, const cms_pg_result *res)
{
    report_op *op = arg;
    trsvc *s = op->s;
    const PGresult *r = cms_pg_result_get(res, 0);
    if (r == NULL || PQntuples(r) == 0) {
        run_forget(s, op->m->job_id);
        return false; /* the job moved (stopped, requeued): read again */
    }
    cms_counter_add(s->m_reports, 1);
    bool events = true;
    if (op->m->kind == CMS__V1__REPORT_KIND__REPORT_KIND_PROGRESS) {
        events = strcmp(PQgetvalue(r, 0, PROGRESS_EMIT), "t") == 0;
        /* a stop stored meanwhile is told now */
        const char *stop = PQgetvalue(r, 0, PROGRESS_STOP_REASON);
        op->stop = stop[0] != '\0';
        snprintf(op->reason, sizeof op->reason, "%s", stop);
    } else {
        run_keep(s, r); /* started: kept; ended: forgotten */
    }
    int64_t due = 0;
    if (op->m->kind == CMS__V1__REPORT_KIND__REPORT_KIND_STARTED)
        due = cms_bus_now_us() + s->opt.worker_timeout_ms * 1000;
    else if (op->stop && !op->final)
        due = cms_bus_now_us() + s->opt.stop_timeout_ms * 1000;
    /* most progress reports write no event: the outbox has nothing new */
    if (events)
        trsvc_committed(s, due);
    else if (due > 0)
        cms_duetimer_note(s->tracker, due);
    answer(req, op);
    return true;
}

static const cms_transition_ops report_ops = {.what = "report",
                                              .object = "training job",
                                              .read = report_read,
                                              .decide = report_decide,
                                              .written = report_written};

/* The fast way's write: done, or the transition's way from its read. */
static void fast_done(void *arg, cms_pg_err err, const cms_pg_result *res)
{
    report_op *op = arg;
    if (err == CMS_PG_OK && report_written(op, op->req, res)) {
        free(op);
        return;
    }
    run_forget(op->s, op->m->job_id);
    cms_transition_run(op->s->pg, op->req, &report_ops, op);
}

static void h_report(void *arg, cms_cmd_req *req)
{
    trsvc *s = arg;
    const Cms__V1__WorkerReport *m = (const void *)cms_cmd_req_body(req);
    const cms_principal *p = cms_cmd_req_principal(req);
    tv_err e = {0};
    if (p == NULL || (strcmp(p->type, "machine") != 0 && strcmp(p->type, "enclave") != 0)) {
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__PERMISSION_DENIED, NULL,
                     "only a machine or enclave identity reports as a worker");
        return;
    }
    if (!tv_uuid(m->job_id, "job_id", &e)) {
        trsvc_fail_invalid(req, &e);
        return;
    }
    const char *bad = NULL;
    if (m->attempt < 1)
        bad = "attempt must be 1 or more: the dispatch's";
    else if (m->kind < CMS__V1__REPORT_KIND__REPORT_KIND_STARTED ||
             m->kind > CMS__V1__REPORT_KIND__REPORT_KIND_STOPPED)
        bad = "kind must be started, progress, completed, failed or stopped";
    else if (m->steps < 0 || m->examples < 0)
        bad = "steps and examples must not be negative";
    else if (!isfinite(m->loss) || !isfinite(m->accuracy) || m->accuracy < 0 || m->accuracy > 1)
        bad = "loss must be finite and accuracy in [0, 1]";
    else if (strlen(m->message) > MESSAGE_MAX)
        bad = "message is longer than 1024 bytes";
    if (bad) {
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__INVALID_ARGUMENT, NULL, "%s", bad);
        return;
    }
    report_op *op = calloc(1, sizeof *op);
    if (op == NULL) {
        trsvc_fail_oom(req);
        return;
    }
    *op = (report_op){.s = s, .req = req, .m = m, .worker = p->identity_id};
    snprintf(op->attempt, sizeof op->attempt, "%d", m->attempt);
    const struct trsvc_run *run = NULL;
    if (m->kind == CMS__V1__REPORT_KIND__REPORT_KIND_PROGRESS &&
        (run = run_find(s, m->job_id, m->attempt, op->worker)) != NULL) {
        /* the fast way: one write, no read */
        cms_pg_job *job = cms_cmd_job_new(req);
        if (job == NULL || !add_write(op, job, run, 0, NULL, "")) {
            cms_pg_job_free(job);
            free(op);
            trsvc_fail_oom(req);
            return;
        }
        cms_pg_err err = cms_cmd_submit(req, &job, fast_done, op);
        if (err != CMS_PG_OK) {
            free(op);
            cms_cmd_fail_pg(req, err, NULL, "report");
        }
        return;
    }
    cms_transition_run(s->pg, req, &report_ops, op);
}

trsvc_err trsvc_register_reports(trsvc *s, cms_cmd *c)
{
    /* Every slot is marked empty here, which touches every page of the
     * table: resident from the start, it does not grow the process by a page
     * every few new job ids for hours, as slots fault in (a zeroed
     * allocation would, and a malloc and memset becomes one). */
    if (s->runs == NULL) {
        if ((s->runs = malloc(TRSVC_RUNS * sizeof *s->runs)) == NULL)
            return TRSVC_ENOMEM;
        for (size_t i = 0; i < TRSVC_RUNS; i++)
            s->runs[i].id[0] = '\0';
    }
    if (!trsvc_prepare(s, &s->st_start, "start", SQL_START, 8) ||
        !trsvc_prepare(s, &s->st_progress, "progress", SQL_PROGRESS, 14))
        return TRSVC_ESETUP;
    if (cms_cmd_register(c, "report", &cms__v1__worker_report__descriptor, h_report, s) != 0)
        return TRSVC_ESETUP;
    return TRSVC_OK;
}
