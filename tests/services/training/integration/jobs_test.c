/* cms-training's jobs against the real PostgreSQL and NATS, with the test
 * acting as the worker (pulling the dispatches, reporting over NATS as a
 * machine identity): a job from submission to completion, its spent budget
 * the accountant's epsilon of the steps reported, never the worker's, and
 * its contract's ledger settled; every admission refusal, each naming its
 * numbers; a job stopped exactly at its budget; cancel. */
#include "trfx.h"

#include "cms/v1/command.pb-c.h"

#include "training/plan.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OK 0
#define INVALID CMS__V1__ERROR_CODE__INVALID_ARGUMENT
#define DENIED CMS__V1__ERROR_CODE__PERMISSION_DENIED
#define PRECONDITION CMS__V1__ERROR_CODE__FAILED_PRECONDITION
#define NOT_FOUND CMS__V1__ERROR_CODE__NOT_FOUND
#define STARTED CMS__V1__REPORT_KIND__REPORT_KIND_STARTED
#define PROGRESS CMS__V1__REPORT_KIND__REPORT_KIND_PROGRESS
#define COMPLETED CMS__V1__REPORT_KIND__REPORT_KIND_COMPLETED
#define STOPPED CMS__V1__REPORT_KIND__REPORT_KIND_STOPPED

static trfx T;
static ctparty P, Q, W; /* provider, consumer, a worker */
static char K[37];      /* an active contract between them, max_epsilon 5 */

static void setup(void)
{
    trfx_setup(&T, "training_jobs", NULL);
    ctfx_party(&T.c, "provider-co", &P);
    ctfx_party(&T.c, "consumer-co", &Q);
    trfx_worker_identity(&T, "worker-1", &W);
    trfx_contract(&T, &P, &Q, "\"privacy\":{\"max_epsilon\":5,\"delta\":1e-5}", K);
}

static void teardown(void)
{
    trfx_teardown(&T);
}

TestSuite(jobs, .init = setup, .fini = teardown, .timeout = 120);

/* the job's spent budget as stored */
static double spent_of(const char *id)
{
    char sql[512];
    snprintf(sql, sizeof sql, "SELECT privacy_budget_spent FROM training_jobs WHERE id = '%s'", id);
    char *v = trfx_sql(&T, sql);
    double x = strtod(v, NULL);
    free(v);
    return x;
}

/* epsilon of steps steps of the job, by the accountant from its q and sigma */
static double eps_of(const Cms__V1__TrainingJob *j, int64_t steps)
{
    double step[CMS_RDP_NORDERS];
    cr_assert(cms_rdp_curve(j->sample_rate, j->noise_multiplier, 1, step));
    return tp_epsilon(step, steps, j->delta);
}

Test(jobs, from_submission_to_completion)
{
    Cms__V1__TrainingJob *j = NULL;
    int code = trfx_submit(&T, &Q, K, trfx_config(2000, 100, 2, 2.0, 0), 2.5, &j);
    cr_assert_eq(code, OK, "submit: %d %s: %s", code, T.field, T.msg);
    cr_assert_str_eq(j->status, "pending");
    cr_assert_str_eq(j->contract_id, K);
    cr_assert_str_eq(j->consumer_id, Q.id);
    cr_assert_float_eq(j->sample_rate, 0.05, 1e-15);
    cr_assert_eq(j->planned_steps, 40, "2 epochs of 20 batches");
    cr_assert_gt(j->noise_multiplier, 0, "the accountant chose sigma");
    cr_assert_leq(j->projected_epsilon, 2.0, "sigma reaches the config's epsilon");
    cr_assert_gt(j->projected_epsilon, 2.0 * 0.999, "and no more noise than that needs");
    cr_assert_geq(j->max_steps, j->planned_steps);
    cr_assert_leq(eps_of(j, j->max_steps), 2.5, "max_steps stays within the budget");
    cr_assert_gt(eps_of(j, j->max_steps + 1), 2.5, "and is the most that does");

    Cms__V1__TrainingDispatch *d = trfx_pull(&T, 10000);
    cr_assert_not_null(d, "the job was dispatched");
    cr_assert_str_eq(d->job_id, j->id);
    cr_assert_eq(d->attempt, 1);
    cr_assert_float_eq(d->noise_multiplier, j->noise_multiplier, 0);
    cr_assert_float_eq(d->max_grad_norm, 1.0, 0);
    cr_assert_eq(d->steps, 40);
    cr_assert_eq(d->max_steps, j->max_steps);
    cr_assert_str_eq(d->dataset, "synthetic");

    Cms__V1__ReportReply *r = NULL;
    code = trfx_report(&T, &W, j->id, 1, STARTED, 0, &r);
    cr_assert_eq(code, OK, "started: %d %s", code, T.msg);
    cr_assert_not(r->stop);
    cms__v1__report_reply__free_unpacked(r, NULL);
    trfx_wait_status(&T, j->id, "running", 5000);
    /* a second worker can neither take it nor report for it: it does not
     * even see it (row-level security: a worker sees pending jobs and its
     * own) */
    ctparty W2;
    trfx_worker_identity(&T, "worker-2", &W2);
    cr_assert_eq(trfx_report(&T, &W2, j->id, 1, STARTED, 0, NULL), NOT_FOUND);
    cr_assert_eq(trfx_report(&T, &W2, j->id, 1, PROGRESS, 5, NULL), NOT_FOUND);
    /* a user is no worker */
    cr_assert_eq(trfx_report(&T, &Q, j->id, 1, PROGRESS, 5, NULL), DENIED);

    code = trfx_report(&T, &W, j->id, 1, PROGRESS, 10, &r);
    cr_assert_eq(code, OK, "progress: %d %s", code, T.msg);
    cr_assert_not(r->stop);
    cr_assert_float_eq(r->privacy_budget_spent, eps_of(j, 10), 1e-12,
                       "the service's epsilon of 10 steps");
    cms__v1__report_reply__free_unpacked(r, NULL);
    /* fewer steps later never lower what was spent */
    cr_assert_eq(trfx_report(&T, &W, j->id, 1, PROGRESS, 4, NULL), OK);
    cr_assert_float_eq(spent_of(j->id), eps_of(j, 10), 1e-12);

    code = trfx_report(&T, &W, j->id, 1, COMPLETED, 40, &r);
    cr_assert_eq(code, OK, "completed: %d %s", code, T.msg);
    cms__v1__report_reply__free_unpacked(r, NULL);
    Cms__V1__TrainingJob *g = trfx_get(&T, &Q, j->id);
    cr_assert_str_eq(g->status, "completed");
    cr_assert_eq(g->steps_done, 40);
    cr_assert_float_eq(g->privacy_budget_spent, eps_of(j, 40), 1e-12);
    cr_assert_leq(g->privacy_budget_spent, g->privacy_budget);
    cr_assert_gt(g->completed_at_us, 0);
    /* a repeat of the final report changes nothing */
    cr_assert_eq(trfx_report(&T, &W, j->id, 1, COMPLETED, 40, NULL), OK);
    /* the events, through the outbox */
    ctfx_wait_events(&T.c, "training_job.submitted", j->id, 1, 10000);
    ctfx_wait_events(&T.c, "training_job.started", j->id, 1, 10000);
    cr_assert_geq(ctfx_events(&T.c, "training_job.progress", j->id), 1);
    ctfx_wait_events(&T.c, "training_job.completed", j->id, 1, 10000);

    /* the ledger: the reservation settled to the steps run */
    Cms__V1__ContractBudgetRef br = CMS__V1__CONTRACT_BUDGET_REF__INIT;
    br.contract_id = K;
    Cms__V1__ContractBudget *b = NULL;
    code = trfx_call(&T, &P, "budget", &br.base, &cms__v1__contract_budget__descriptor,
                     (ProtobufCMessage **)&b);
    cr_assert_eq(code, OK, "the provider reads the ledger: %d %s", code, T.msg);
    cr_assert_float_eq(b->max_epsilon, 5, 0);
    cr_assert_eq(b->jobs, 1);
    cr_assert_eq(b->open_jobs, 0);
    cr_assert_float_eq(b->reserved_epsilon, eps_of(j, 40), 1e-9, "settled: %.17g",
                       b->reserved_epsilon);
    cr_assert_float_eq(b->spent_epsilon, eps_of(j, 40), 1e-9);
    cr_assert_float_eq(b->spent_sum, eps_of(j, 40), 1e-9);
    cms__v1__contract_budget__free_unpacked(b, NULL);
    ctparty X;
    ctfx_party(&T.c, "stranger", &X);
    cr_assert_eq(trfx_call(&T, &X, "budget", &br.base, &cms__v1__contract_budget__descriptor, NULL),
                 NOT_FOUND, "a stranger does not see the ledger");
    Cms__V1__JobRef ref = CMS__V1__JOB_REF__INIT;
    ref.id = j->id;
    cr_assert_eq(trfx_call(&T, &X, "get", &ref.base, NULL, NULL), NOT_FOUND, "nor the job");
    cms__v1__training_dispatch__free_unpacked(d, NULL);
    cms__v1__training_job__free_unpacked(j, NULL);
    cms__v1__training_job__free_unpacked(g, NULL);
}

static void refused(const ctparty *who, const char *contract, const char *config, double budget,
                    int want, const char *field, const char *says)
{
    int code = trfx_submit(&T, who, contract, config, budget, NULL);
    cr_assert_eq(code, want, "%s: %d, not %d: %s: %s", says, code, want, T.field, T.msg);
    cr_assert_str_eq(T.field, field, "%s: the field", says);
    cr_assert_not_null(strstr(T.msg, says), "'%s' says '%s'", T.msg, says);
}

Test(jobs, every_admission_refusal_names_its_numbers)
{
    char ok[1024];
    snprintf(ok, sizeof ok, "%s", trfx_config(2000, 100, 2, 1.0, 0));
    refused(&P, K, ok, 2, DENIED, "contract_id", "only the contract's consumer");
    refused(&Q, "01890000-0000-7000-8000-000000000000", ok, 2, NOT_FOUND, "contract_id",
            "no such contract");
    refused(&Q, K, ok, 0.5, INVALID, "privacy_budget", "less than the config's privacy.epsilon");
    char laplace[1024];
    snprintf(laplace, sizeof laplace, "%s", ok);
    char *g = strstr(laplace, "gaussian");
    memcpy(g, "laplace\"", 8);
    memmove(g + 8, g + 9, strlen(g + 9) + 1);
    refused(&Q, K, laplace, 2, INVALID, "config.privacy.noise_mechanism", "gaussian");
    /* a fixed sigma too small for the budget: the projection is refused */
    refused(&Q, K, trfx_config(2000, 100, 50, 1.0, 0.6), 1.0, PRECONDITION, "privacy_budget",
            "exceeds its privacy_budget 1");
    /* the ledger: 5 at most; a job of about 4.5 fits, a second does not
     * (composed, two such jobs are well over 5, if less than their sum) */
    Cms__V1__TrainingJob *j = NULL;
    cr_assert_eq(trfx_submit(&T, &Q, K, trfx_config(2000, 100, 2, 4.5, 0), 4.5, &j), OK, "%s",
                 T.msg);
    refused(&Q, K, trfx_config(2000, 100, 2, 4.5, 0), 4.5, PRECONDITION, "privacy_budget",
            "holds epsilon 5 at most");
    /* cancelled before it ran: its reservation is released, the second fits */
    Cms__V1__CancelJob c = CMS__V1__CANCEL_JOB__INIT;
    c.id = j->id;
    c.reason = (char *)"";
    Cms__V1__TrainingJob *s = NULL;
    cr_assert_eq(trfx_call(&T, &Q, "cancel", &c.base, NULL, (ProtobufCMessage **)&s), OK, "%s",
                 T.msg);
    cr_assert_str_eq(s->status, "stopped");
    cr_assert_str_eq(s->stop_reason, "cancelled");
    cr_assert_eq(trfx_submit(&T, &Q, K, trfx_config(2000, 100, 2, 4.5, 0), 4.5, NULL), OK, "%s",
                 T.msg);
    cr_assert_eq(trfx_call(&T, &Q, "cancel", &c.base, NULL, NULL), PRECONDITION,
                 "a stopped job is not cancelled again");
    /* a contract that is not active */
    Cms__V1__Contract *draft = ctfx_create(&T.c, &P, &P, &Q, ctfx_terms(-60, 86400, NULL));
    trfx_wait_contract(&T, draft->id, "draft");
    refused(&Q, draft->id, ok, 2, PRECONDITION, "contract_id", "the contract is draft");
    cms__v1__contract__free_unpacked(draft, NULL);
    cms__v1__training_job__free_unpacked(j, NULL);
    cms__v1__training_job__free_unpacked(s, NULL);
}

Test(jobs, a_job_stops_exactly_at_its_budget)
{
    Cms__V1__TrainingJob *j = NULL;
    cr_assert_eq(trfx_submit(&T, &Q, K, trfx_config(2000, 100, 1, 1.0, 0), 1.5, &j), OK, "%s",
                 T.msg);
    Cms__V1__TrainingDispatch *d = trfx_pull(&T, 10000);
    cr_assert_not_null(d);
    cr_assert_eq(trfx_report(&T, &W, j->id, 1, STARTED, 0, NULL), OK);
    /* a worker that runs past max_steps is counted at max_steps and told to stop */
    Cms__V1__ReportReply *r = NULL;
    cr_assert_eq(trfx_report(&T, &W, j->id, 1, PROGRESS, j->max_steps + 7, &r), OK, "%s", T.msg);
    cr_assert(r->stop, "told to stop");
    cr_assert_str_eq(r->reason, "budget_exhausted");
    cr_assert_float_eq(r->privacy_budget_spent, eps_of(j, j->max_steps), 1e-12);
    cms__v1__report_reply__free_unpacked(r, NULL);
    cr_assert_eq(trfx_report(&T, &W, j->id, 1, STOPPED, j->max_steps, NULL), OK, "%s", T.msg);
    Cms__V1__TrainingJob *g = trfx_get(&T, &Q, j->id);
    cr_assert_str_eq(g->status, "stopped");
    cr_assert_str_eq(g->stop_reason, "budget_exhausted");
    cr_assert_eq(g->steps_done, j->max_steps);
    cr_assert_leq(g->privacy_budget_spent, g->privacy_budget);
    cr_assert_gt(eps_of(j, g->steps_done + 1), g->privacy_budget, "one more step would exceed it");
    cms__v1__training_dispatch__free_unpacked(d, NULL);
    cms__v1__training_job__free_unpacked(j, NULL);
    cms__v1__training_job__free_unpacked(g, NULL);
}
