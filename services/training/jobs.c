/* The jobs of cms-training (submit, cancel, get, list, metrics, budget),
 * what its files share, and the service's life; see training.h.
 *
 * Every job that touches the training tables first says who acts
 * (TRSQL_ACTOR), so that PostgreSQL shows the caller only its own jobs: a
 * job the caller may not see and one that does not exist are the same
 * empty read, answered the same NOT_FOUND.
 *
 * Admission is a transition (common/transition) on the contract's ledger:
 * the read takes the contract as cms-training heard of it, its parties'
 * statuses and the ledger with its version; the decision plans the job
 * (training/plan.h) and checks it against the ledger; the write inserts the
 * job, its contract link, its event and its dispatch and writes the ledger
 * back, all in one statement and only if the ledger is still at the
 * version read and the contract and both parties are still active. Two
 * submits that each fit alone but not together: the second's write finds
 * the ledger moved, reads it again, and is refused with the numbers. */
#include "training_int.h"

#include "log.h"
#include "transition.h"
#include "uuid.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LIST_DEFAULT 100
#define LIST_MAX 1000
#define BUDGET_JOBS_MAX 100000
#define POINTS_MAX 1000

/* SQL reads best as written */
// clang-format off
static const char SQL_READ[] =
    "SELECT " TRSQL_COLS("l.contract_id::text") TRSQL_FROM_JOBS " WHERE j.id = $1::uuid";
/* the contract as heard of, its parties, its ledger (version -1: none yet) */
static const char SQL_SUBMIT_READ[] =
    "SELECT c.status::text, c.provider_id::text, c.consumer_id::text, "
    "coalesce(c.max_epsilon, 0), coalesce(c.delta, 0), "
    "(SELECT status::text FROM training_parties WHERE identity_id = c.provider_id), "
    "(SELECT status::text FROM training_parties WHERE identity_id = c.consumer_id), "
    "g.reserved::text, coalesce(g.version, -1) "
    "FROM training_contracts c LEFT JOIN training_ledgers g USING (contract_id) "
    "WHERE c.contract_id = $1::uuid";
/* events $1..$4 submitted, $5..$8 the dispatch; $9 contract, $10 ledger
 * version read, $11 the new reserved curve, $12 the job's projected epsilon
 * (added to the plain sum), $13 id,
 * $14 model, $15 config, $16 budget, $17 consumer, $18 q, $19 sigma,
 * $20 delta, $21 clipping norm, $22 planned steps, $23 max steps,
 * $24 projected epsilon, $25 rdp_step, $26 max attempts */
static const char SQL_SUBMIT[] =
    "WITH c AS (SELECT 1 FROM training_contracts tc WHERE tc.contract_id = $9::uuid "
    "AND tc.status = 'active' AND tc.consumer_id = $17::uuid "
    "AND (SELECT status FROM training_parties WHERE identity_id = tc.provider_id) = 'active' "
    "AND (SELECT status FROM training_parties WHERE identity_id = tc.consumer_id) = 'active'), "
    "ins AS (INSERT INTO training_ledgers (contract_id, reserved, reserved_sum, jobs, version) "
    "SELECT $9::uuid, $11::float8[], $12::float8, 1, 1 FROM c WHERE $10::int8 = -1 "
    "ON CONFLICT (contract_id) DO NOTHING RETURNING version), "
    "upd AS (UPDATE training_ledgers SET reserved = $11::float8[], "
    "reserved_sum = reserved_sum + $12::float8, "
    "jobs = jobs + 1, version = version + 1, updated_at = now() WHERE contract_id = $9::uuid "
    "AND version = $10::int8 AND EXISTS (SELECT 1 FROM c) RETURNING version), "
    "lg AS (SELECT version FROM ins UNION ALL SELECT version FROM upd), "
    "u AS (INSERT INTO training_jobs (id, model_name, status, config, privacy_budget, "
    "privacy_budget_spent, consumer_id, sample_rate, noise_multiplier, delta, max_grad_norm, "
    "planned_steps, max_steps, projected_epsilon, rdp_step, max_attempts) "
    "SELECT $13::uuid, $14, 'pending', $15::jsonb, $16::float8, 0, $17::uuid, $18::float8, "
    "$19::float8, $20::float8, $21::float8, $22::int8, $23::int8, $24::float8, $25::float8[], "
    "$26::int FROM lg RETURNING *), "
    "l AS (INSERT INTO training_job_contracts (job_id, contract_id, consumer_id) "
    "SELECT id, $9::uuid, consumer_id FROM u), "
    "o1 AS (" CMS_OUTBOX_SQL_FROM_AT("u", "1", "2", "3", "4") " RETURNING seq), "
    "o2 AS (" CMS_OUTBOX_SQL_FROM_AT("u, o1", "5", "6", "7", "8") ") "
    "SELECT " TRSQL_COLS("$9::text") " FROM u j";
/* $1 id, $2 attempt read, $3 the reason, $4 the stop's deadline (ms): a
 * running job told to stop, once */
static const char SQL_TELL[] =
    "UPDATE training_jobs j SET stop_reason = coalesce(j.stop_reason, $3), "
    "stop_told_at = now(), due_at = now() + $4::int8 * interval '1 millisecond', "
    "updated_at = now() WHERE j.id = $1::uuid AND j.attempt = $2::int AND j.status = 'running' "
    "AND j.stop_told_at IS NULL RETURNING " TRSQL_COLS(TRSQL_LINKED_CONTRACT);
static const char SQL_LIST[] =
    "SELECT " TRSQL_COLS("l.contract_id::text") TRSQL_FROM_JOBS
    " WHERE ($1::uuid IS NULL OR l.contract_id = $1::uuid) "
    "AND ($2::job_status IS NULL OR j.status = $2::job_status) "
    "AND ($3::uuid IS NULL OR j.id > $3::uuid) ORDER BY j.id LIMIT $4::int";
/* a job's spent budget over time, the most recent POINTS_MAX */
static const char SQL_POINTS[] =
    "SELECT * FROM (SELECT " CMS_PG_SQL_US("at") ", steps, epsilon FROM training_job_budget "
    "WHERE job_id = $1::uuid ORDER BY steps DESC LIMIT 1000) p ORDER BY steps";
/* the ledger, for a party of the contract ($2) or anyone who sees all ($3) */
static const char SQL_BUDGET[] =
    "SELECT c.status::text, coalesce(c.max_epsilon, 0), coalesce(c.delta, 0), "
    "coalesce(g.reserved::text, ''), coalesce(g.reserved_sum, 0), coalesce(g.jobs, 0), "
    "(c.provider_id::text = $2 OR c.consumer_id::text = $2 OR $3::bool) "
    "FROM training_contracts c LEFT JOIN training_ledgers g USING (contract_id) "
    "WHERE c.contract_id = $1::uuid";
/* what the contract's jobs ran */
static const char SQL_BUDGET_JOBS[] =
    "SELECT j.steps_done, j.rdp_step::text, coalesce(j.privacy_budget_spent, 0), "
    "j.status IN ('pending', 'running') FROM training_job_contracts l "
    "JOIN training_jobs j ON j.id = l.job_id WHERE l.contract_id = $1::uuid LIMIT 100000";
// clang-format on

static const char *const err_names[] = {TRSVC_ERRORS(CMS_ENUM_TEXT)};

const char *trsvc_strerror(trsvc_err e)
{
    return cms_enum_text(err_names, TRSVC_NERRORS, e);
}

/* ---- shared by the files ---- */

int trsvc_job_actor(trsvc *s, cms_pg_job *job, const char *actor, bool all, const char *worker)
{
    const char *v[] = {actor ? actor : "", all ? "on" : "off", worker ? worker : ""};
    return cms_pg_job_lead_exec(job, s->st_actor, v, NULL, NULL);
}

static int job_caller(trsvc *s, cms_pg_job *job, cms_cmd_req *req)
{
    return trsvc_job_actor(s, job, cms_cmd_req_actor(req), cms_cmd_req_sees_all(req), NULL);
}

bool trsvc_prepare(trsvc *s, const cms_pg_stmt **out, const char *name, const char *sql,
                   int nparams)
{
    char full[64];
    snprintf(full, sizeof full, "training_%s", name);
    *out = cms_pg_prepare(s->pg, full, sql, nparams, NULL);
    return *out != NULL;
}

void trsvc_fail_invalid(cms_cmd_req *req, const tv_err *e)
{
    cms_cmd_fail(req, CMS__V1__ERROR_CODE__INVALID_ARGUMENT, e->field, "%s", e->msg);
}

void trsvc_fail_oom(cms_cmd_req *req)
{
    cms_cmd_fail(req, CMS__V1__ERROR_CODE__INTERNAL, NULL, "out of memory");
}

void trsvc_fail_not_found(cms_cmd_req *req)
{
    cms_cmd_fail(req, CMS__V1__ERROR_CODE__NOT_FOUND, "id", "no such training job");
}

int64_t trsvc_i64(const PGresult *r, int row, int col)
{
    return strtoll(PQgetvalue(r, row, col), NULL, 10);
}

double trsvc_f64(const PGresult *r, int row, int col)
{
    return strtod(PQgetvalue(r, row, col), NULL);
}

void trsvc_row_job(const PGresult *r, int row, Cms__V1__TrainingJob *out)
{
    cms__v1__training_job__init(out);
    out->id = PQgetvalue(r, row, TRCOL_ID);
    out->model_name = PQgetvalue(r, row, TRCOL_MODEL);
    out->status = PQgetvalue(r, row, TRCOL_STATUS);
    out->config_json = PQgetvalue(r, row, TRCOL_CONFIG);
    out->metrics_json = PQgetvalue(r, row, TRCOL_METRICS);
    out->privacy_budget = trsvc_f64(r, row, TRCOL_BUDGET);
    out->privacy_budget_spent = trsvc_f64(r, row, TRCOL_SPENT);
    out->created_at_us = trsvc_i64(r, row, TRCOL_CREATED);
    out->updated_at_us = trsvc_i64(r, row, TRCOL_UPDATED);
    out->completed_at_us = trsvc_i64(r, row, TRCOL_COMPLETED);
    out->contract_id = PQgetvalue(r, row, TRCOL_CONTRACT);
    out->consumer_id = PQgetvalue(r, row, TRCOL_CONSUMER);
    out->noise_multiplier = trsvc_f64(r, row, TRCOL_SIGMA);
    out->sample_rate = trsvc_f64(r, row, TRCOL_Q);
    out->delta = trsvc_f64(r, row, TRCOL_DELTA);
    out->max_grad_norm = trsvc_f64(r, row, TRCOL_NORM);
    out->planned_steps = trsvc_i64(r, row, TRCOL_PLANNED);
    out->max_steps = trsvc_i64(r, row, TRCOL_MAX_STEPS);
    out->steps_done = trsvc_i64(r, row, TRCOL_STEPS);
    out->projected_epsilon = trsvc_f64(r, row, TRCOL_PROJECTED);
    out->attempt = (int32_t)trsvc_i64(r, row, TRCOL_ATTEMPT);
    out->max_attempts = (int32_t)trsvc_i64(r, row, TRCOL_MAX_ATTEMPTS);
    out->worker_id = PQgetvalue(r, row, TRCOL_WORKER);
    out->stop_reason = PQgetvalue(r, row, TRCOL_STOP_REASON);
    out->failure = PQgetvalue(r, row, TRCOL_FAILURE);
    out->started_at_us = trsvc_i64(r, row, TRCOL_STARTED);
}

void trsvc_row_event(const PGresult *r, int row, const char *status_after, trev_job *out)
{
    *out = (trev_job){.id = PQgetvalue(r, row, TRCOL_ID),
                      .contract_id = PQgetvalue(r, row, TRCOL_CONTRACT),
                      .consumer_id = PQgetvalue(r, row, TRCOL_CONSUMER),
                      .status = status_after,
                      .privacy_budget = trsvc_f64(r, row, TRCOL_BUDGET),
                      .privacy_budget_spent = trsvc_f64(r, row, TRCOL_SPENT),
                      .steps_done = trsvc_i64(r, row, TRCOL_STEPS),
                      .max_steps = trsvc_i64(r, row, TRCOL_MAX_STEPS)};
}

static void reply_row(cms_cmd_req *req, const PGresult *r)
{
    Cms__V1__TrainingJob m;
    trsvc_row_job(r, 0, &m);
    cms_cmd_reply(req, &m.base);
}

void trsvc_committed(trsvc *s, int64_t due_us)
{
    cms_outbox_kick(s->outbox);
    if (due_us > 0)
        cms_duetimer_note(s->tracker, due_us);
}

void trsvc_tell_stop(trsvc *s, const char *job_id, int attempt, const char *reason)
{
    Cms__V1__StopJob m = CMS__V1__STOP_JOB__INIT;
    m.job_id = (char *)job_id;
    m.attempt = attempt;
    m.reason = (char *)reason;
    uint8_t buf[512];
    size_t len = cms__v1__stop_job__get_packed_size(&m);
    char subject[128];
    snprintf(subject, sizeof subject, "%s%s", CMS_BUS_CONTROL_TRAINING_PREFIX, job_id);
    if (len > sizeof buf) /* a reason of at most 64 bytes: never */
        return;
    cms__v1__stop_job__pack(&m, buf);
    cms_nats_err err = cms_nats_publish(s->nats, subject, NULL, buf, len);
    /* the worker's next report is answered "stop" too: a lost tell only
     * costs the time to that report */
    if (err != CMS_NATS_OK)
        cms_log_warn("a stop could not be sent; the job's next report is told instead",
                     "{s:s, s:s}", "job_id", job_id, "error", cms_nats_strerror(err));
}

bool trsvc_dispatch_event(trsvc *s, const char *job_id, int attempt, const char *model_name,
                          const char *config_json, double sigma, int64_t planned_steps,
                          int64_t max_steps, int64_t steps_before, cms_bus_event *out)
{
    tv_config c;
    tv_err e;
    if (!tv_config_check(config_json, &c, &e))
        return false;
    int64_t left = max_steps - steps_before;
    char control[128];
    snprintf(control, sizeof control, "%s%s", CMS_BUS_CONTROL_TRAINING_PREFIX, job_id);
    Cms__V1__TrainingDispatch d = CMS__V1__TRAINING_DISPATCH__INIT;
    d.job_id = (char *)job_id;
    d.attempt = attempt;
    d.model_name = (char *)model_name;
    d.architecture = c.architecture;
    d.dataset = c.dataset;
    d.dataset_size = c.dataset_size;
    d.batch_size = c.batch_size;
    d.learning_rate = c.learning_rate;
    d.sample_rate = c.q;
    d.noise_multiplier = sigma;
    d.max_grad_norm = c.max_grad_norm;
    /* a requeued attempt trains afresh, within what is left of the budget */
    d.steps = planned_steps < left ? planned_steps : left;
    d.max_steps = left;
    d.steps_before = steps_before;
    d.config_json = (char *)config_json;
    d.report_interval_ms = (int32_t)s->opt.report_interval_ms;
    d.control_subject = control;
    return trev_dispatch(&d, s->opt.work_subject, out) == CMS_BUS_OK;
}

/* ---- submit: a transition on the contract's ledger ---- */

typedef struct submit_op {
    trsvc *s;
    cms_cmd_req *req;
    const Cms__V1__SubmitJob *m; /* the request's body: lives as long as req */
    char id[TR_ID_LEN + 1];
    const char *model;
    tv_config c;
    tp_plan plan;           /* made before the read: it needs no stored state */
    struct submit_op *next; /* waiting behind it for the same ledger */
} submit_op;

/* The submits of one contract run one at a time in this process: each
 * reads the ledger the one before it wrote, so concurrent submits queue
 * instead of racing (and retrying) on the ledger's version; across
 * replicas the version still decides. A gate exists while a submit of its
 * contract runs. */
struct trsvc_gate {
    char contract[TR_ID_LEN + 1];
    submit_op *running, *head, *tail;
    struct trsvc_gate *next;
};

static const cms_transition_ops submit_ops;

static struct trsvc_gate *gate_of(trsvc *s, const char *contract)
{
    for (struct trsvc_gate *g = s->gates; g; g = g->next)
        if (strcmp(g->contract, contract) == 0)
            return g;
    return NULL;
}

/* Runs op now, or queues it behind the submit of its contract under way. */
static void gate_enter(trsvc *s, submit_op *op)
{
    struct trsvc_gate *g = gate_of(s, op->m->contract_id);
    if (g) {
        if (g->tail)
            g->tail->next = op;
        else
            g->head = op;
        g->tail = op;
        return;
    }
    g = calloc(1, sizeof *g);
    if (g == NULL) { /* run it ungated: the ledger's version still decides */
        cms_transition_run(s->pg, op->req, &submit_ops, op);
        return;
    }
    snprintf(g->contract, sizeof g->contract, "%s", op->m->contract_id);
    g->running = op;
    g->next = s->gates;
    s->gates = g;
    cms_transition_run(s->pg, op->req, &submit_ops, op);
}

void trsvc_gates_free(trsvc *s)
{
    while (s->gates) {
        struct trsvc_gate *g = s->gates;
        s->gates = g->next;
        free(g);
    }
}

/* op ended: the next of its contract runs, or the gate goes. */
static void submit_release(void *arg)
{
    submit_op *op = arg;
    trsvc *s = op->s;
    struct trsvc_gate **pp = &s->gates, *g;
    while ((g = *pp) != NULL && g->running != op)
        pp = &g->next;
    free(op);
    if (g == NULL)
        return; /* it ran ungated */
    submit_op *next = g->head;
    if (next == NULL) {
        *pp = g->next;
        free(g);
        return;
    }
    g->head = next->next;
    if (g->head == NULL)
        g->tail = NULL;
    next->next = NULL;
    g->running = next;
    cms_transition_run(s->pg, next->req, &submit_ops, next);
}

static int submit_read(void *arg, cms_pg_job *job)
{
    submit_op *op = arg;
    const char *v[] = {op->m->contract_id};
    int rc = job_caller(op->s, job, op->req);
    return rc ? rc : cms_pg_job_exec(job, op->s->st_submit_read, v, NULL, NULL);
}

/* a party that is not active, refused; status NULL: never heard of */
static bool party_active(cms_cmd_req *req, const char *who, const char *status)
{
    if (status[0] == '\0') {
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__FAILED_PRECONDITION, "contract_id",
                     "the contract's %s is not yet known here; if it was just created, retry in "
                     "a moment",
                     who);
        return false;
    }
    if (strcmp(status, "active") != 0) {
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__FAILED_PRECONDITION, "contract_id",
                     "the contract's %s is %s: no job starts until it is active again", who,
                     status);
        return false;
    }
    return true;
}

static cms_transition_step submit_decide(void *arg, cms_cmd_req *req, const cms_pg_result *res,
                                         cms_pg_job *write)
{
    submit_op *op = arg;
    trsvc *s = op->s;
    const PGresult *r = cms_pg_result_get(res, 0);
    if (r == NULL || PQntuples(r) == 0) {
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__NOT_FOUND, "contract_id",
                     "no such contract is known here; if it was just activated, retry in a "
                     "moment");
        return CMS_TRANSITION_ANSWERED;
    }
    const char *status = PQgetvalue(r, 0, 0), *consumer = PQgetvalue(r, 0, 2);
    if (strcmp(consumer, cms_cmd_req_actor(req)) != 0) {
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__PERMISSION_DENIED, "contract_id",
                     "only the contract's consumer submits training jobs under it");
        return CMS_TRANSITION_ANSWERED;
    }
    if (strcmp(status, "active") != 0) {
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__FAILED_PRECONDITION, "contract_id",
                     "the contract is %s: jobs run only under an active contract", status);
        return CMS_TRANSITION_ANSWERED;
    }
    if (!party_active(req, "provider", PQgetvalue(r, 0, 5)) ||
        !party_active(req, "consumer", PQgetvalue(r, 0, 6)))
        return CMS_TRANSITION_ANSWERED;
    tv_err e = {0};
    const tp_plan p = op->plan;
    double max_eps = trsvc_f64(r, 0, 3), delta = trsvc_f64(r, 0, 4);
    if (!(delta > 0))
        delta = TP_LEDGER_DELTA;
    double reserved[CMS_RDP_NORDERS] = {0}, composed = 0;
    bool has_ledger = !PQgetisnull(r, 0, 7);
    if (has_ledger && !tp_curve_parse(PQgetvalue(r, 0, 7), reserved)) {
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__INTERNAL, NULL, "the stored ledger is unreadable");
        return CMS_TRANSITION_ANSWERED;
    }
    if (!tp_ledger_admit(reserved, &p, max_eps, delta, &composed, &e)) {
        cms_counter_add(s->m_refused_budget, 1);
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__FAILED_PRECONDITION, e.field, "%s", e.msg);
        return CMS_TRANSITION_ANSWERED;
    }
    /* the ledger after: the reservation of the whole projection */
    tp_curve_add(reserved, p.rdp_step, (double)p.planned_steps);
    char curve[TP_CURVE_TEXT_MAX], step[TP_CURVE_TEXT_MAX], sum[32], budget[32], q[32], sigma[32],
        dl[32], norm[32], planned[24], max_steps[24], projected[32], attempts[16];
    if (!tp_curve_format(reserved, curve, sizeof curve) ||
        !tp_curve_format(p.rdp_step, step, sizeof step)) {
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__FAILED_PRECONDITION, "config",
                     "the job's privacy curve is not finite at every order; choose more noise");
        return CMS_TRANSITION_ANSWERED;
    }
    snprintf(sum, sizeof sum, "%.17g", p.projected_eps);
    snprintf(budget, sizeof budget, "%.17g", op->m->privacy_budget);
    snprintf(q, sizeof q, "%.17g", p.q);
    snprintf(sigma, sizeof sigma, "%.17g", p.sigma);
    snprintf(dl, sizeof dl, "%.17g", p.delta);
    snprintf(norm, sizeof norm, "%.17g", op->c.max_grad_norm);
    snprintf(planned, sizeof planned, "%lld", (long long)p.planned_steps);
    snprintf(max_steps, sizeof max_steps, "%lld", (long long)p.max_steps);
    snprintf(projected, sizeof projected, "%.17g", p.projected_eps);
    snprintf(attempts, sizeof attempts, "%d", s->opt.max_attempts);
    trev_job j = {.id = op->id,
                  .contract_id = op->m->contract_id,
                  .consumer_id = consumer,
                  .status = "pending",
                  .privacy_budget = op->m->privacy_budget,
                  .max_steps = p.max_steps};
    trev_submitted sub = {.model_name = op->model,
                          .projected_epsilon = p.projected_eps,
                          .noise_multiplier = p.sigma,
                          .sample_rate = p.q,
                          .delta = p.delta,
                          .ledger_reserved_epsilon = composed,
                          .planned_steps = p.planned_steps};
    cms_bus_event ev = {0}, dispatch = {0};
    const cms_bus_event *evs[] = {&ev, &dispatch};
    char version[24];
    snprintf(version, sizeof version, "%s", has_ledger ? PQgetvalue(r, 0, 8) : "-1");
    const char *v[] = {op->m->contract_id,
                       version,
                       curve,
                       sum,
                       op->id,
                       op->model,
                       op->m->config_json,
                       budget,
                       consumer,
                       q,
                       sigma,
                       dl,
                       norm,
                       planned,
                       max_steps,
                       projected,
                       step,
                       attempts};
    bool ok =
        trsvc_job_actor(s, write, consumer, false, NULL) == CMS_PG_OK &&
        trev_submitted_event(&j, &sub, consumer, cms_cmd_req_request_id(req), &ev) == CMS_BUS_OK &&
        trsvc_dispatch_event(s, op->id, 1, op->model, op->m->config_json, p.sigma, p.planned_steps,
                             p.max_steps, 0, &dispatch) &&
        cms_outbox_add_exec_events(write, s->st_submit, TREV_SOURCE, evs, 2, 18, v) ==
            CMS_OUTBOX_OK;
    cms_bus_event_release(&ev);
    cms_bus_event_release(&dispatch);
    if (!ok) {
        trsvc_fail_oom(req);
        return CMS_TRANSITION_ANSWERED;
    }
    return CMS_TRANSITION_WRITE;
}

static bool submit_written(void *arg, cms_cmd_req *req, const cms_pg_result *res)
{
    submit_op *op = arg;
    const PGresult *r = cms_pg_result_get(res, 0);
    if (r == NULL || PQntuples(r) == 0)
        return false; /* the ledger, the contract or a party moved: read again */
    cms_counter_add(op->s->m_submitted, 1);
    trsvc_committed(op->s, 0);
    reply_row(req, r);
    return true;
}

static const cms_transition_ops submit_ops = {.what = "submit",
                                              .object = "contract's privacy ledger",
                                              .read = submit_read,
                                              .decide = submit_decide,
                                              .written = submit_written,
                                              .release = submit_release};

/* The plan of a job (training/plan.h), from the plans of the last few
 * distinct configs and budgets: the noise multiplier's search costs
 * milliseconds of the loop, and jobs are mostly submitted alike. */
static bool plan_of(trsvc *s, const tv_config *c, double budget, tp_plan *out, tv_err *e)
{
    for (int i = 0; i < TRSVC_PLANS; i++) {
        const struct trsvc_plan_memo *m = &s->plans[i];
        if (m->used && m->q == c->q && m->steps == c->steps && m->delta == c->delta &&
            m->epsilon == c->epsilon && m->sigma == c->noise_multiplier && m->budget == budget) {
            *out = m->plan;
            return true;
        }
    }
    if (!tp_plan_job(c, budget, out, e))
        return false;
    struct trsvc_plan_memo *m = &s->plans[s->next_plan];
    s->next_plan = (s->next_plan + 1) % TRSVC_PLANS;
    *m = (struct trsvc_plan_memo){.used = true,
                                  .q = c->q,
                                  .steps = c->steps,
                                  .delta = c->delta,
                                  .epsilon = c->epsilon,
                                  .sigma = c->noise_multiplier,
                                  .budget = budget,
                                  .plan = *out};
    return true;
}

static void h_submit(void *arg, cms_cmd_req *req)
{
    trsvc *s = arg;
    const Cms__V1__SubmitJob *m = (const void *)cms_cmd_req_body(req);
    tv_err e = {0};
    submit_op *op = calloc(1, sizeof *op);
    if (op == NULL) {
        trsvc_fail_oom(req);
        return;
    }
    *op = (submit_op){.s = s, .req = req, .m = m};
    if (!tv_uuid(m->contract_id, "contract_id", &e) ||
        !tv_config_check(m->config_json, &op->c, &e) ||
        !tv_budget(m->privacy_budget, op->c.epsilon, &e)) {
        free(op);
        trsvc_fail_invalid(req, &e);
        return;
    }
    op->model = m->model_name[0] ? m->model_name : op->c.architecture;
    if (!tv_model_name(op->model, &e)) {
        free(op);
        trsvc_fail_invalid(req, &e);
        return;
    }
    if (!plan_of(s, &op->c, m->privacy_budget, &op->plan, &e)) {
        free(op);
        cms_counter_add(s->m_refused_budget, 1);
        cms_cmd_fail(req,
                     strcmp(e.field, "privacy_budget") == 0
                         ? CMS__V1__ERROR_CODE__FAILED_PRECONDITION
                         : CMS__V1__ERROR_CODE__INVALID_ARGUMENT,
                     e.field, "%s", e.msg);
        return;
    }
    cms_uuid u;
    cms_uuid_v7(&u);
    cms_uuid_format(&u, op->id);
    gate_enter(s, op);
}

/* ---- cancel: a transition of the job ---- */

typedef struct cancel_op {
    trsvc *s;
    cms_cmd_req *req;
    char id[TR_ID_LEN + 1];
    char reason[80];
    bool told; /* a running job: told to stop after the commit */
    int attempt;
} cancel_op;

static int job_read(trsvc *s, cms_pg_job *job, cms_cmd_req *req, const char *id)
{
    const char *v[] = {id};
    int rc = job_caller(s, job, req);
    return rc ? rc : cms_pg_job_exec(job, s->st_read, v, NULL, NULL);
}

static int cancel_read(void *arg, cms_pg_job *job)
{
    cancel_op *op = arg;
    return job_read(op->s, job, op->req, op->id);
}

static cms_transition_step cancel_decide(void *arg, cms_cmd_req *req, const cms_pg_result *res,
                                         cms_pg_job *write)
{
    cancel_op *op = arg;
    trsvc *s = op->s;
    const PGresult *r = cms_pg_result_get(res, 0);
    if (r == NULL || PQntuples(r) == 0) {
        trsvc_fail_not_found(req);
        return CMS_TRANSITION_ANSWERED;
    }
    const char *status = PQgetvalue(r, 0, TRCOL_STATUS);
    if (strcmp(PQgetvalue(r, 0, TRCOL_CONSUMER), cms_cmd_req_actor(req)) != 0 &&
        !cms_principal_has_role(cms_cmd_req_principal(req), "admin")) {
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__PERMISSION_DENIED, NULL,
                     "a job is cancelled by its consumer or by an admin");
        return CMS_TRANSITION_ANSWERED;
    }
    char attempt[16];
    snprintf(attempt, sizeof attempt, "%s", PQgetvalue(r, 0, TRCOL_ATTEMPT));
    op->attempt = (int)trsvc_i64(r, 0, TRCOL_ATTEMPT);
    bool ok;
    if (strcmp(status, "pending") == 0) {
        /* never ran: stopped now, its whole reservation released */
        trev_job j;
        trsvc_row_event(r, 0, "stopped", &j);
        cms_bus_event ev = {0};
        const char *v[] = {op->id, attempt, "pending", NULL,       "stopped", "0",
                           "0",    NULL,    NULL,      op->reason, "false"};
        ok = trsvc_job_actor(s, write, cms_cmd_req_actor(req), cms_cmd_req_sees_all(req), NULL) ==
                 CMS_PG_OK &&
             trev_stopped(&j, op->reason, cms_cmd_req_actor(req), cms_cmd_req_request_id(req),
                          &ev) == CMS_BUS_OK &&
             cms_outbox_add_exec(write, s->st_end, TREV_SOURCE, &ev, 11, v) == CMS_OUTBOX_OK;
        cms_bus_event_release(&ev);
        op->told = false;
    } else if (strcmp(status, "running") == 0) {
        if (strcmp(PQgetvalue(r, 0, TRCOL_STOP_TOLD), "t") == 0) {
            reply_row(req, r); /* already told to stop: it stops */
            return CMS_TRANSITION_ANSWERED;
        }
        char deadline[24];
        snprintf(deadline, sizeof deadline, "%lld", (long long)s->opt.stop_timeout_ms);
        const char *v[] = {op->id, attempt, op->reason, deadline};
        ok = trsvc_job_actor(s, write, cms_cmd_req_actor(req), cms_cmd_req_sees_all(req), NULL) ==
                 CMS_PG_OK &&
             cms_pg_job_exec(write, s->st_tell, v, NULL, NULL) == CMS_PG_OK;
        op->told = true;
    } else {
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__FAILED_PRECONDITION, "status",
                     "the job is %s: only a pending or running job is cancelled", status);
        return CMS_TRANSITION_ANSWERED;
    }
    if (!ok) {
        trsvc_fail_oom(req);
        return CMS_TRANSITION_ANSWERED;
    }
    return CMS_TRANSITION_WRITE;
}

static bool cancel_written(void *arg, cms_cmd_req *req, const cms_pg_result *res)
{
    cancel_op *op = arg;
    const PGresult *r = cms_pg_result_get(res, 0);
    if (r == NULL || PQntuples(r) == 0)
        return false;
    if (op->told)
        trsvc_tell_stop(op->s, op->id, op->attempt, PQgetvalue(r, 0, TRCOL_STOP_REASON));
    cms_counter_add(op->s->m_stopped, op->told ? 0 : 1);
    trsvc_committed(op->s, op->told ? cms_bus_now_us() + op->s->opt.stop_timeout_ms * 1000 : 0);
    reply_row(req, r);
    return true;
}

static const cms_transition_ops cancel_ops = {.what = "cancel",
                                              .object = "training job",
                                              .read = cancel_read,
                                              .decide = cancel_decide,
                                              .written = cancel_written};

static void h_cancel(void *arg, cms_cmd_req *req)
{
    trsvc *s = arg;
    const Cms__V1__CancelJob *m = (const void *)cms_cmd_req_body(req);
    tv_err e = {0};
    if (!tv_uuid(m->id, "id", &e)) {
        trsvc_fail_invalid(req, &e);
        return;
    }
    if (strlen(m->reason) > 64) {
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__INVALID_ARGUMENT, "reason",
                     "reason is %zu bytes; at most 64", strlen(m->reason));
        return;
    }
    cancel_op *op = calloc(1, sizeof *op);
    if (op == NULL) {
        trsvc_fail_oom(req);
        return;
    }
    *op = (cancel_op){.s = s, .req = req};
    snprintf(op->id, sizeof op->id, "%s", m->id);
    if (m->reason[0] && tv_model_name(m->reason, &e))
        snprintf(op->reason, sizeof op->reason, "cancelled: %s", m->reason);
    else
        snprintf(op->reason, sizeof op->reason, "cancelled");
    cms_transition_run(s->pg, req, &cancel_ops, op);
}

/* ---- get, list ---- */

static bool read_job(trsvc *s, cms_cmd_req *req, const char *id, bool points, cms_pg_done_cb done)
{
    tv_err e = {0};
    if (!tv_uuid(id, "id", &e)) {
        trsvc_fail_invalid(req, &e);
        return false;
    }
    cms_pg_job *job = cms_pg_job_new();
    const char *v[] = {id};
    if (job == NULL || job_read(s, job, req, id) != CMS_PG_OK ||
        (points && cms_pg_job_exec(job, s->st_points, v, NULL, NULL) != CMS_PG_OK)) {
        cms_pg_job_free(job);
        trsvc_fail_oom(req);
        return false;
    }
    return cms_cmd_run_read(req, s->pg, job, done, req);
}

static void got(void *arg, cms_pg_err err, const cms_pg_result *res)
{
    cms_cmd_req *req = arg;
    const PGresult *r = cms_pg_result_get(res, 0);
    if (err != CMS_PG_OK)
        cms_cmd_fail_pg(req, err, res, "get");
    else if (r == NULL || PQntuples(r) == 0)
        trsvc_fail_not_found(req);
    else
        reply_row(req, r);
}

static void h_get(void *arg, cms_cmd_req *req)
{
    const Cms__V1__JobRef *m = (const void *)cms_cmd_req_body(req);
    (void)read_job(arg, req, m->id, false, got);
}

static void row_job(const PGresult *r, int i, void *item)
{
    trsvc_row_job(r, i, item);
}

static void h_list(void *arg, cms_cmd_req *req)
{
    trsvc *s = arg;
    const Cms__V1__ListJobs *m = (const void *)cms_cmd_req_body(req);
    tv_err e = {0};
    tv_status st;
    if ((m->contract_id[0] && !tv_uuid(m->contract_id, "contract_id", &e)) ||
        (m->status[0] && !tv_status_parse(m->status, "status", &st, &e)) ||
        (m->after[0] && !tv_uuid(m->after, "after", &e))) {
        trsvc_fail_invalid(req, &e);
        return;
    }
    if (m->limit < 0 || m->limit > LIST_MAX) {
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__INVALID_ARGUMENT, "limit",
                     "limit must be 1 to %d (0: %d)", LIST_MAX, LIST_DEFAULT);
        return;
    }
    cms_pg_job *job = cms_pg_job_new();
    char lim[16];
    int limit = m->limit ? m->limit : LIST_DEFAULT;
    snprintf(lim, sizeof lim, "%d", limit + 1);
    const char *v[] = {m->contract_id[0] ? m->contract_id : NULL, m->status[0] ? m->status : NULL,
                       m->after[0] ? m->after : NULL, lim};
    if (job == NULL || job_caller(s, job, req) != CMS_PG_OK ||
        cms_pg_job_exec(job, s->st_list, v, NULL, NULL) != CMS_PG_OK) {
        cms_pg_job_free(job);
        trsvc_fail_oom(req);
        return;
    }
    cms_cmd_run_page(req, s->pg, job, limit, &cms__v1__job_page__descriptor, "jobs", row_job);
}

/* ---- metrics ---- */

static double metric(const char *json, const char *key)
{
    json_t *j = json_loads(json, 0, NULL);
    double x = json_number_value(json_object_get(j, key));
    json_decref(j);
    return x;
}

static void got_metrics(void *arg, cms_pg_err err, const cms_pg_result *res)
{
    cms_cmd_req *req = arg;
    const PGresult *r = cms_pg_result_get(res, 0), *pts = cms_pg_result_get(res, 1);
    if (err != CMS_PG_OK) {
        cms_cmd_fail_pg(req, err, res, "metrics");
        return;
    }
    if (r == NULL || PQntuples(r) == 0) {
        trsvc_fail_not_found(req);
        return;
    }
    Cms__V1__JobMetrics m = CMS__V1__JOB_METRICS__INIT;
    m.id = PQgetvalue(r, 0, TRCOL_ID);
    m.status = PQgetvalue(r, 0, TRCOL_STATUS);
    m.steps_done = trsvc_i64(r, 0, TRCOL_STEPS);
    m.planned_steps = trsvc_i64(r, 0, TRCOL_PLANNED);
    m.max_steps = trsvc_i64(r, 0, TRCOL_MAX_STEPS);
    m.privacy_budget = trsvc_f64(r, 0, TRCOL_BUDGET);
    m.privacy_budget_spent = trsvc_f64(r, 0, TRCOL_SPENT);
    m.metrics_json = PQgetvalue(r, 0, TRCOL_METRICS);
    m.loss = metric(m.metrics_json, "loss");
    m.accuracy = metric(m.metrics_json, "accuracy");
    m.updated_at_us = trsvc_i64(r, 0, TRCOL_UPDATED);
    m.stop_reason = PQgetvalue(r, 0, TRCOL_STOP_REASON);
    /* the steps it will have run: this attempt's, after the earlier ones' */
    int64_t before = trsvc_i64(r, 0, TRCOL_STEPS_BEFORE), left = m.max_steps - before;
    int64_t target = before + (m.planned_steps < left ? m.planned_steps : left);
    if (strcmp(m.status, "completed") == 0 || target <= 0)
        m.progress = 1;
    else
        m.progress = (double)m.steps_done / (double)target;
    if (m.progress > 1)
        m.progress = 1;
    int n = pts ? PQntuples(pts) : 0;
    Cms__V1__BudgetPoint *items = calloc((size_t)n + 1, sizeof *items);
    Cms__V1__BudgetPoint **ptrs = calloc((size_t)n + 1, sizeof *ptrs);
    if (items == NULL || ptrs == NULL) {
        free(items);
        free(ptrs);
        trsvc_fail_oom(req);
        return;
    }
    for (int i = 0; i < n; i++) {
        cms__v1__budget_point__init(&items[i]);
        items[i].at_us = trsvc_i64(pts, i, 0);
        items[i].steps = trsvc_i64(pts, i, 1);
        items[i].epsilon = trsvc_f64(pts, i, 2);
        ptrs[i] = &items[i];
    }
    m.spent = ptrs;
    m.n_spent = (size_t)n;
    /* the rate of the last points of this attempt gives the time left */
    if (strcmp(m.status, "running") == 0 && n >= 2) {
        const Cms__V1__BudgetPoint *a = &items[n >= 6 ? n - 6 : 0], *b = &items[n - 1];
        if (a->steps >= before && b->steps > a->steps && b->at_us > a->at_us) {
            double rate = (double)(b->steps - a->steps) / (double)(b->at_us - a->at_us);
            m.eta_us =
                target > m.steps_done ? (int64_t)((double)(target - m.steps_done) / rate) : 0;
        }
    }
    cms_cmd_reply(req, &m.base);
    free(items);
    free(ptrs);
}

static void h_metrics(void *arg, cms_cmd_req *req)
{
    const Cms__V1__JobRef *m = (const void *)cms_cmd_req_body(req);
    (void)read_job(arg, req, m->id, true, got_metrics);
}

/* ---- budget: the contract's ledger ---- */

typedef struct budget_op {
    trsvc *s;
    cms_cmd_req *req;
    char id[TR_ID_LEN + 1];
    Cms__V1__ContractBudget b;
} budget_op;

static void got_budget_jobs(void *arg, cms_pg_err err, const cms_pg_result *res)
{
    budget_op *op = arg;
    const PGresult *r = cms_pg_result_get(res, 0);
    if (err != CMS_PG_OK) {
        cms_cmd_fail_pg(op->req, err, res, "budget");
        free(op);
        return;
    }
    double spent[CMS_RDP_NORDERS] = {0}, step[CMS_RDP_NORDERS];
    int open = 0;
    for (int i = 0; r && i < PQntuples(r); i++) {
        int64_t steps = trsvc_i64(r, i, 0);
        if (steps > 0 && tp_curve_parse(PQgetvalue(r, i, 1), step))
            tp_curve_add(spent, step, (double)steps);
        op->b.spent_sum += trsvc_f64(r, i, 2);
        open += strcmp(PQgetvalue(r, i, 3), "t") == 0;
    }
    op->b.spent_epsilon = tp_curve_epsilon(spent, op->b.delta);
    op->b.open_jobs = open;
    cms_cmd_reply(op->req, &op->b.base);
    free(op);
}

static void got_budget(void *arg, cms_pg_err err, const cms_pg_result *res)
{
    budget_op *op = arg;
    trsvc *s = op->s;
    cms_cmd_req *req = op->req;
    const PGresult *r = cms_pg_result_get(res, 0);
    if (err != CMS_PG_OK) {
        cms_cmd_fail_pg(req, err, res, "budget");
        free(op);
        return;
    }
    if (r == NULL || PQntuples(r) == 0 || strcmp(PQgetvalue(r, 0, 6), "t") != 0) {
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__NOT_FOUND, "contract_id",
                     "no such contract is known here");
        free(op);
        return;
    }
    Cms__V1__ContractBudget *b = &op->b;
    cms__v1__contract_budget__init(b);
    b->contract_id = op->id;
    b->contract_status = (char *)"";
    b->max_epsilon = trsvc_f64(r, 0, 1);
    b->delta = trsvc_f64(r, 0, 2) > 0 ? trsvc_f64(r, 0, 2) : TP_LEDGER_DELTA;
    double reserved[CMS_RDP_NORDERS] = {0};
    if (PQgetvalue(r, 0, 3)[0] && !tp_curve_parse(PQgetvalue(r, 0, 3), reserved)) {
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__INTERNAL, NULL, "the stored ledger is unreadable");
        free(op);
        return;
    }
    b->reserved_epsilon = tp_curve_epsilon(reserved, b->delta);
    b->reserved_sum = trsvc_f64(r, 0, 4);
    b->jobs = (int32_t)trsvc_i64(r, 0, 5);
    if (b->max_epsilon > 0)
        b->remaining_epsilon =
            b->max_epsilon > b->reserved_epsilon ? b->max_epsilon - b->reserved_epsilon : 0;
    static const char *const statuses[] = {"draft",     "review",     "signed", "active",
                                           "completed", "terminated", "expired"};
    for (size_t i = 0; i < sizeof statuses / sizeof statuses[0]; i++)
        if (strcmp(PQgetvalue(r, 0, 0), statuses[i]) == 0)
            b->contract_status = (char *)statuses[i];
    /* what every job of the contract ran: a party sees the ledger whole */
    cms_pg_job *job = cms_pg_job_new();
    const char *v[] = {op->id};
    if (job == NULL || trsvc_job_actor(s, job, NULL, true, NULL) != CMS_PG_OK ||
        cms_pg_job_exec(job, s->st_budget_jobs, v, NULL, NULL) != CMS_PG_OK) {
        cms_pg_job_free(job);
        trsvc_fail_oom(req);
        free(op);
        return;
    }
    if (!cms_cmd_run_read(req, s->pg, job, got_budget_jobs, op))
        free(op);
}

static void h_budget(void *arg, cms_cmd_req *req)
{
    trsvc *s = arg;
    const Cms__V1__ContractBudgetRef *m = (const void *)cms_cmd_req_body(req);
    tv_err e = {0};
    if (!tv_uuid(m->contract_id, "contract_id", &e)) {
        trsvc_fail_invalid(req, &e);
        return;
    }
    budget_op *op = calloc(1, sizeof *op);
    cms_pg_job *job = cms_pg_job_new();
    if (op == NULL || job == NULL) {
        free(op);
        cms_pg_job_free(job);
        trsvc_fail_oom(req);
        return;
    }
    op->s = s;
    op->req = req;
    snprintf(op->id, sizeof op->id, "%s", m->contract_id);
    const char *v[] = {op->id, cms_cmd_req_actor(req),
                       cms_cmd_req_sees_all(req) ? "true" : "false"};
    if (job_caller(s, job, req) != CMS_PG_OK ||
        cms_pg_job_exec(job, s->st_budget, v, NULL, NULL) != CMS_PG_OK) {
        cms_pg_job_free(job);
        free(op);
        trsvc_fail_oom(req);
        return;
    }
    if (!cms_cmd_run_read(req, s->pg, job, got_budget, op))
        free(op);
}

trsvc_err trsvc_register_jobs(trsvc *s, cms_cmd *c)
{
    if (!trsvc_prepare(s, &s->st_actor, "actor", TRSQL_ACTOR, 3) ||
        !trsvc_prepare(s, &s->st_read, "read", SQL_READ, 1) ||
        !trsvc_prepare(s, &s->st_submit_read, "submit_read", SQL_SUBMIT_READ, 1) ||
        !trsvc_prepare(s, &s->st_submit, "submit", SQL_SUBMIT, 26) ||
        !trsvc_prepare(s, &s->st_end, "end", TRSQL_END, TRSQL_END_NPARAMS) ||
        !trsvc_prepare(s, &s->st_tell, "tell", SQL_TELL, 4) ||
        !trsvc_prepare(s, &s->st_list, "list", SQL_LIST, 4) ||
        !trsvc_prepare(s, &s->st_points, "points", SQL_POINTS, 1) ||
        !trsvc_prepare(s, &s->st_budget, "budget", SQL_BUDGET, 3) ||
        !trsvc_prepare(s, &s->st_budget_jobs, "budget_jobs", SQL_BUDGET_JOBS, 1))
        return TRSVC_ESETUP;
    if (cms_cmd_register(c, "submit", &cms__v1__submit_job__descriptor, h_submit, s) != 0 ||
        cms_cmd_register(c, "cancel", &cms__v1__cancel_job__descriptor, h_cancel, s) != 0 ||
        cms_cmd_register(c, "get", &cms__v1__job_ref__descriptor, h_get, s) != 0 ||
        cms_cmd_register(c, "list", &cms__v1__list_jobs__descriptor, h_list, s) != 0 ||
        cms_cmd_register(c, "metrics", &cms__v1__job_ref__descriptor, h_metrics, s) != 0 ||
        cms_cmd_register(c, "budget", &cms__v1__contract_budget_ref__descriptor, h_budget, s) != 0)
        return TRSVC_ESETUP;
    return TRSVC_OK;
}
