/* Events of cms-training; see events.h. */
#include "training/events.h"

#include "uuid.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static cms_bus_err build(Cms__V1__Envelope *env, const char *type, const trev_job *j,
                         const char *actor, const char *corr, cms_bus_event *out)
{
    cms_bus_event_header h = {.event_type = type,
                              .resource_type = "training_job",
                              .resource_id = j->id,
                              .actor_id = actor,
                              .correlation_id = corr,
                              .source = TREV_SOURCE};
    return cms_bus_event_build(env, &h, out);
}

static char *str(const char *s)
{
    return (char *)(s ? s : "");
}

/* the eight fields every body starts with */
#define JOB_FIELDS(b, j)                                                                           \
    do {                                                                                           \
        (b).job_id = str((j)->id);                                                                 \
        (b).contract_id = str((j)->contract_id);                                                   \
        (b).consumer_id = str((j)->consumer_id);                                                   \
        (b).status = str((j)->status);                                                             \
        (b).privacy_budget = (j)->privacy_budget;                                                  \
        (b).privacy_budget_spent = (j)->privacy_budget_spent;                                      \
        (b).steps_done = (j)->steps_done;                                                          \
        (b).max_steps = (j)->max_steps;                                                            \
    } while (0)

cms_bus_err trev_submitted_event(const trev_job *j, const trev_submitted *s, const char *actor,
                                 const char *corr, cms_bus_event *out)
{
    Cms__V1__Envelope env = CMS__V1__ENVELOPE__INIT;
    Cms__V1__TrainingJobSubmitted b = CMS__V1__TRAINING_JOB_SUBMITTED__INIT;
    JOB_FIELDS(b, j);
    b.model_name = str(s->model_name);
    b.projected_epsilon = s->projected_epsilon;
    b.noise_multiplier = s->noise_multiplier;
    b.sample_rate = s->sample_rate;
    b.delta = s->delta;
    b.planned_steps = s->planned_steps;
    b.ledger_reserved_epsilon = s->ledger_reserved_epsilon;
    env.body_case = CMS__V1__ENVELOPE__BODY_TRAINING_JOB_SUBMITTED;
    env.training_job_submitted = &b;
    return build(&env, "training_job.submitted", j, actor, corr, out);
}

cms_bus_err trev_started(const trev_job *j, const char *worker_id, int attempt, cms_bus_event *out)
{
    Cms__V1__Envelope env = CMS__V1__ENVELOPE__INIT;
    Cms__V1__TrainingJobStarted b = CMS__V1__TRAINING_JOB_STARTED__INIT;
    JOB_FIELDS(b, j);
    b.worker_id = str(worker_id);
    b.attempt = attempt;
    env.body_case = CMS__V1__ENVELOPE__BODY_TRAINING_JOB_STARTED;
    env.training_job_started = &b;
    return build(&env, "training_job.started", j, worker_id, NULL, out);
}

cms_bus_err trev_progress(const trev_job *j, double loss, double accuracy, int attempt,
                          const char *worker_id, cms_bus_event *out)
{
    Cms__V1__Envelope env = CMS__V1__ENVELOPE__INIT;
    Cms__V1__TrainingJobProgress b = CMS__V1__TRAINING_JOB_PROGRESS__INIT;
    JOB_FIELDS(b, j);
    b.loss = loss;
    b.accuracy = accuracy;
    b.attempt = attempt;
    env.body_case = CMS__V1__ENVELOPE__BODY_TRAINING_JOB_PROGRESS;
    env.training_job_progress = &b;
    return build(&env, "training_job.progress", j, worker_id, NULL, out);
}

cms_bus_err trev_completed(const trev_job *j, double loss, double accuracy, const char *worker_id,
                           cms_bus_event *out)
{
    Cms__V1__Envelope env = CMS__V1__ENVELOPE__INIT;
    Cms__V1__TrainingJobCompleted b = CMS__V1__TRAINING_JOB_COMPLETED__INIT;
    JOB_FIELDS(b, j);
    b.loss = loss;
    b.accuracy = accuracy;
    env.body_case = CMS__V1__ENVELOPE__BODY_TRAINING_JOB_COMPLETED;
    env.training_job_completed = &b;
    return build(&env, "training_job.completed", j, worker_id, NULL, out);
}

cms_bus_err trev_failed(const trev_job *j, const char *reason, int attempt, const char *actor,
                        cms_bus_event *out)
{
    Cms__V1__Envelope env = CMS__V1__ENVELOPE__INIT;
    Cms__V1__TrainingJobFailed b = CMS__V1__TRAINING_JOB_FAILED__INIT;
    JOB_FIELDS(b, j);
    b.reason = str(reason);
    b.attempt = attempt;
    env.body_case = CMS__V1__ENVELOPE__BODY_TRAINING_JOB_FAILED;
    env.training_job_failed = &b;
    return build(&env, "training_job.failed", j, actor, NULL, out);
}

cms_bus_err trev_stopped(const trev_job *j, const char *reason, const char *actor, const char *corr,
                         cms_bus_event *out)
{
    Cms__V1__Envelope env = CMS__V1__ENVELOPE__INIT;
    Cms__V1__TrainingJobStopped b = CMS__V1__TRAINING_JOB_STOPPED__INIT;
    JOB_FIELDS(b, j);
    b.reason = str(reason);
    env.body_case = CMS__V1__ENVELOPE__BODY_TRAINING_JOB_STOPPED;
    env.training_job_stopped = &b;
    return build(&env, "training_job.stopped", j, actor, corr, out);
}

cms_bus_err trev_requeued(const trev_job *j, int attempt, const char *lost_worker_id,
                          cms_bus_event *out)
{
    Cms__V1__Envelope env = CMS__V1__ENVELOPE__INIT;
    Cms__V1__TrainingJobRequeued b = CMS__V1__TRAINING_JOB_REQUEUED__INIT;
    JOB_FIELDS(b, j);
    b.attempt = attempt;
    b.lost_worker_id = str(lost_worker_id);
    env.body_case = CMS__V1__ENVELOPE__BODY_TRAINING_JOB_REQUEUED;
    env.training_job_requeued = &b;
    return build(&env, "training_job.requeued", j, CMS_BUS_SYSTEM_ACTOR, NULL, out);
}

cms_bus_err trev_dispatch(const Cms__V1__TrainingDispatch *d, const char *subject,
                          cms_bus_event *out)
{
    memset(out, 0, sizeof *out);
    cms_uuid u;
    cms_uuid_v7(&u);
    cms_uuid_format(&u, out->id);
    if ((size_t)snprintf(out->subject, sizeof out->subject, "%s", subject) >= sizeof out->subject)
        return CMS_BUS_ETOOLONG;
    out->len = cms__v1__training_dispatch__get_packed_size(d);
    out->buf = malloc(out->len ? out->len : 1);
    if (out->buf == NULL)
        return CMS_BUS_ENOMEM;
    cms__v1__training_dispatch__pack(d, out->buf);
    return CMS_BUS_OK;
}
