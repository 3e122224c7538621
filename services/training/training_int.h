/* What the files of cms-training share (jobs.c: submit, cancel, get, list,
 * metrics, budget; reports.c: what workers report; facts.c: what it hears
 * of contracts and identities; tracker.c: the timer of due jobs). */
#ifndef TRAINING_INT_H
#define TRAINING_INT_H

#include "cms/v1/training.pb-c.h"
#include "duetimer.h"
#include "metrics.h"
#include "training.h"
#include "training/events.h"
#include "training/plan.h"
#include "training/store.h"
#include "training/validate.h"

#include <stdbool.h>

#define TR_ID_LEN 36
#define TRSVC_RUNS 4096
#define TRSVC_PLANS 16

/* A plan made for these inputs (jobs.c's plan_of). */
struct trsvc_plan_memo {
    bool used;
    double q, delta, epsilon, sigma, budget;
    int64_t steps;
    tp_plan plan;
};

struct trsvc {
    cms_service *svc;
    cms_pg *pg;
    cms_nats *nats;
    cms_outbox *outbox;
    cms_duetimer *tracker;
    trsvc_options opt;
    int nround;
    struct trsvc_gate *gates; /* the contracts with a submit under way (jobs.c) */
    struct trsvc_run *runs;   /* TRSVC_RUNS running jobs heard of (reports.c) */
    struct trsvc_plan_memo plans[TRSVC_PLANS];
    int next_plan;
    /* the prepared statements of every file (trsvc_prepare) */
    const cms_pg_stmt *st_actor, *st_read, *st_submit_read, *st_submit, *st_start, *st_progress,
        *st_end, *st_tell, *st_requeue, *st_list, *st_points, *st_budget, *st_budget_jobs,
        *st_contract, *st_party, *st_mark_contract, *st_mark_party, *st_next, *st_due, *st_undue;
    cms_counter *m_submitted, *m_refused_budget, *m_reports, *m_requeued, *m_lost, *m_stopped;
    void (*drained)(void *arg);
    void *drained_arg;
};

/* Adds who acts as the job's lead statement: actor (NULL: ''), all, the
 * worker (NULL: ''). 0 or a cms_pg_err. */
int trsvc_job_actor(trsvc *s, cms_pg_job *job, const char *actor, bool all, const char *worker);
bool trsvc_prepare(trsvc *s, const cms_pg_stmt **out, const char *name, const char *sql,
                   int nparams);

/* ---- answers ---- */
void trsvc_fail_invalid(cms_cmd_req *req, const tv_err *e);
void trsvc_fail_oom(cms_cmd_req *req);
/* The one answer for a job that does not exist and one the caller may not
 * see. */
void trsvc_fail_not_found(cms_cmd_req *req);

/* ---- rows ---- */
int64_t trsvc_i64(const PGresult *r, int row, int col);
double trsvc_f64(const PGresult *r, int row, int col);
/* A job row (TRSQL_COLS) as its message; strings point into r. */
void trsvc_row_job(const PGresult *r, int row, Cms__V1__TrainingJob *out);
/* The event's view of the job in row of r, with its status after. */
void trsvc_row_event(const PGresult *r, int row, const char *status_after, trev_job *out);

/* The dispatch of attempt of the job (its row's config, plan figures),
 * packed for the work queue. false: no memory or a stored config that no
 * longer parses. */
bool trsvc_dispatch_event(trsvc *s, const char *job_id, int attempt, const char *model_name,
                          const char *config_json, double sigma, int64_t planned_steps,
                          int64_t max_steps, int64_t steps_before, cms_bus_event *out);

/* Tells the worker of a running job to stop (core NATS, its control
 * subject). */
void trsvc_tell_stop(trsvc *s, const char *job_id, int attempt, const char *reason);

/* A committed change: kick the outbox, tell the tracker. */
void trsvc_committed(trsvc *s, int64_t due_us);

/* Frees what is left of the submit gates (none after a drain), and the
 * running jobs kept for reports. */
void trsvc_gates_free(trsvc *s);
void trsvc_runs_free(trsvc *s);

/* The verbs of each file. */
trsvc_err trsvc_register_jobs(trsvc *s, cms_cmd *c);
trsvc_err trsvc_register_reports(trsvc *s, cms_cmd *c);
trsvc_err trsvc_register_facts(trsvc *s);
trsvc_err trsvc_tracker_create(trsvc *s, uv_loop_t *loop);

#endif
