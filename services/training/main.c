/* cms-training: training jobs under active contracts, within their privacy
 * budget and their contract's privacy ledger, dispatched to workers and
 * tracked step by step. */
#include "log.h"
#include "service.h"
#include "training_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const cms_option options[] = {
    {"worker-timeout", "CMS_WORKER_TIMEOUT", CMS_OPT_DURATION, "15s",
     "a running job whose worker has not reported for this long is presumed lost, and requeued "
     "or failed (1s to 1h; more than the report interval)",
     CMS_OPT_PUBLIC, false},
    {"stop-timeout", "CMS_STOP_TIMEOUT", CMS_OPT_DURATION, "10s",
     "a worker told to stop that has not reported stopping this long after is presumed lost, and "
     "the job ends stopped (1s to 1h)",
     CMS_OPT_PUBLIC, false},
    {"max-attempts", "CMS_MAX_ATTEMPTS", CMS_OPT_INT, "3",
     "dispatches of one job at most: a job whose worker was lost this many times fails (1 to 100)",
     CMS_OPT_PUBLIC, false},
    {"report-interval", "CMS_REPORT_INTERVAL", CMS_OPT_DURATION, "1s",
     "how often workers are asked to report at least (100ms to 1m)", CMS_OPT_PUBLIC, false},
    {"progress-event-interval", "CMS_PROGRESS_EVENT_INTERVAL", CMS_OPT_DURATION, "5s",
     "one training_job.progress event (and one point of the spent budget) per job this often at "
     "most (0 to 1h; 0: every report)",
     CMS_OPT_PUBLIC, false},
    {"work-subject", "CMS_WORK_SUBJECT", CMS_OPT_STRING, CMS_BUS_WORK_TRAINING,
     "the subject dispatches go to, cms.work.training or a subject under it (tests give each "
     "their own, pulled by a durable of their own)",
     CMS_OPT_PUBLIC, false},
};

/* The service, made at start (spec.arg points here). */
typedef struct app {
    trsvc *svc;
} app;

static app the_app;

static bool in(int64_t v, int64_t lo, int64_t hi)
{
    return v >= lo && v <= hi;
}

static int start(cms_service *s, void *arg)
{
    app *a = arg;
    const cms_config *c = cms_service_config(s);
    trsvc_options o = {.worker_timeout_ms = cms_config_duration_ms(c, "worker-timeout"),
                       .stop_timeout_ms = cms_config_duration_ms(c, "stop-timeout"),
                       .max_attempts = (int)cms_config_int(c, "max-attempts"),
                       .report_interval_ms = cms_config_duration_ms(c, "report-interval"),
                       .progress_event_ms = cms_config_duration_ms(c, "progress-event-interval")};
    const char *bad = NULL;
    if (!in(o.worker_timeout_ms, 1000, 3600000) || o.worker_timeout_ms <= o.report_interval_ms)
        bad = "--worker-timeout must be 1s to 1h and longer than --report-interval";
    else if (!in(o.stop_timeout_ms, 1000, 3600000))
        bad = "--stop-timeout must be 1s to 1h";
    else if (!in(o.max_attempts, 1, 100))
        bad = "--max-attempts must be 1 to 100";
    else if (!in(o.report_interval_ms, 100, 60000))
        bad = "--report-interval must be 100ms to 1m";
    else if (!in(o.progress_event_ms, 0, 3600000))
        bad = "--progress-event-interval must be 0 to 1h";
    const char *ws = cms_config_str(c, "work-subject");
    if (!bad && (ws == NULL ||
                 (strcmp(ws, CMS_BUS_WORK_TRAINING) != 0 &&
                  strncmp(ws, CMS_BUS_WORK_TRAINING ".", sizeof CMS_BUS_WORK_TRAINING) != 0) ||
                 strlen(ws) >= sizeof o.work_subject || strpbrk(ws, " *>") != NULL))
        bad = "--work-subject must be cms.work.training or a subject under it";
    else
        snprintf(o.work_subject, sizeof o.work_subject, "%s", ws);
    if (bad) {
        cms_log_error("cms-training cannot start", "{s:s}", "error", bad);
        return -1;
    }
    trsvc_err err = trsvc_create(&o, &a->svc);
    if (err == TRSVC_OK)
        err = trsvc_start(a->svc, s);
    if (err != TRSVC_OK)
        cms_log_error("cms-training cannot start", "{s:s}", "error", trsvc_strerror(err));
    return err == TRSVC_OK ? 0 : -1;
}

static void drained(void *arg)
{
    cms_service_drained(arg);
}

static void drain(cms_service *s, void *arg)
{
    app *a = arg;
    if (a->svc)
        trsvc_drain(a->svc, drained, s);
    else
        cms_service_drained(s);
}

static cms_consumer_verdict on_contract(void *arg, const Cms__V1__Envelope *env, cms_pg_job *job,
                                        const char **reason)
{
    return trsvc_on_contract(((app *)arg)->svc, env, job, reason);
}

static cms_consumer_verdict on_identity(void *arg, const Cms__V1__Envelope *env, cms_pg_job *job,
                                        const char **reason)
{
    return trsvc_on_identity(((app *)arg)->svc, env, job, reason);
}

static void on_committed(void *arg, const Cms__V1__Envelope *env)
{
    trsvc_fact_committed(((app *)arg)->svc, env);
}

/* ---- life ---- */

trsvc_err trsvc_create(const trsvc_options *o, trsvc **out)
{
    trsvc *s = calloc(1, sizeof *s);
    if (s == NULL)
        return TRSVC_ENOMEM;
    s->opt = *o;
    *out = s;
    return TRSVC_OK;
}

trsvc_err trsvc_start(trsvc *s, cms_service *svc)
{
    s->svc = svc;
    s->pg = cms_service_pg(svc);
    s->nats = cms_service_nats(svc);
    s->outbox = cms_service_outbox(svc);
    cms_metrics *mx = cms_metrics_default();
    s->m_submitted =
        cms_metrics_counter(mx, "cms_training_jobs_admitted_total", "Training jobs admitted", NULL);
    s->m_refused_budget = cms_metrics_counter(
        mx, "cms_training_jobs_refused_budget_total",
        "Training jobs refused for their budget or their contract's ledger", NULL);
    s->m_reports =
        cms_metrics_counter(mx, "cms_training_reports_total", "Worker reports applied", NULL);
    s->m_requeued = cms_metrics_counter(mx, "cms_training_jobs_requeued_total",
                                        "Training jobs requeued after their worker was lost", NULL);
    s->m_lost = cms_metrics_counter(mx, "cms_training_workers_lost_total",
                                    "Workers presumed lost (silent past their deadline)", NULL);
    s->m_stopped = cms_metrics_counter(mx, "cms_training_jobs_ended_by_service_total",
                                       "Training jobs ended by cancel or by the tracker", NULL);
    cms_cmd *c = cms_service_cmd(svc);
    trsvc_err err = trsvc_register_jobs(s, c);
    if (err == TRSVC_OK)
        err = trsvc_register_reports(s, c);
    if (err == TRSVC_OK)
        err = trsvc_register_facts(s);
    if (err == TRSVC_OK)
        err = trsvc_tracker_create(s, cms_service_loop(svc));
    if (err != TRSVC_OK)
        return err;
    cms_duetimer_start(s->tracker);
    return TRSVC_OK;
}

static void tracker_closed(void *arg)
{
    trsvc *s = arg;
    if (s->drained)
        s->drained(s->drained_arg);
}

void trsvc_drain(trsvc *s, void (*drained_cb)(void *arg), void *arg)
{
    s->drained = drained_cb;
    s->drained_arg = arg;
    if (s->tracker)
        cms_duetimer_close(s->tracker, tracker_closed, s);
    else if (drained_cb)
        drained_cb(arg);
}

void trsvc_destroy(trsvc *s)
{
    if (s == NULL)
        return;
    cms_duetimer_destroy(s->tracker);
    trsvc_gates_free(s);
    trsvc_runs_free(s);
    free(s);
}

int main(int argc, char **argv)
{
    /* contract facts and identity status, each from its own durable */
    static const cms_service_consumer consumers[] = {
        {.name = "training-contract",
         .filter_subject = "cms.events.contract.>",
         .handle = on_contract,
         .committed = on_committed},
        {.name = "training-identity",
         .filter_subject = "cms.events.identity.>",
         .handle = on_identity,
         .committed = on_committed},
    };
    static const cms_service_spec spec = {
        .name = "training",
        .summary = "training jobs under active contracts: admission within the privacy budget "
                   "and the contract's ledger, dispatch to workers, tracking and stopping",
        .options = options,
        .noptions = sizeof options / sizeof options[0],
        .outbox = true,
        .commands = true,
        .consumers = consumers,
        .nconsumers = sizeof consumers / sizeof consumers[0],
        .start = start,
        .drain = drain,
        .arg = &the_app,
    };
    int code = cms_service_main(argc, argv, &spec);
    trsvc_destroy(the_app.svc);
    return code;
}
