/* The events of cms-training (services/training/events.h): each decodes as
 * an envelope of its type about the job, with its typed body carrying the
 * budget figures; the dispatch goes to the work subject, each with an id
 * of its own. */
#include "training/events.h"

#include "cms/v1/envelope.pb-c.h"

#include <criterion/criterion.h>
#include <string.h>

#define JOB "01890000-0000-7000-8000-0000000000aa"
#define CONTRACT "01890000-0000-7000-8000-0000000000bb"
#define CONSUMER "01890000-0000-7000-8000-0000000000cc"
#define WORKER "01890000-0000-7000-8000-0000000000dd"

static const trev_job J = {JOB, CONTRACT, CONSUMER, "stopped", 2.5, 1.25, 40, 80};

static Cms__V1__Envelope *decoded(const cms_bus_event *ev, const char *type)
{
    Cms__V1__Envelope *e = cms__v1__envelope__unpack(NULL, ev->len, ev->buf);
    cr_assert_not_null(e);
    cr_assert_str_eq(e->event_type, type);
    cr_assert_str_eq(e->resource_type, "training_job");
    cr_assert_str_eq(e->resource_id, JOB);
    cr_assert_str_eq(e->source, "training");
    char subject[64];
    snprintf(subject, sizeof subject, "cms.events.%s", type);
    cr_assert_str_eq(ev->subject, subject);
    return e;
}

Test(events, submitted_carries_the_plan)
{
    trev_submitted s = {.model_name = "lr",
                        .projected_epsilon = 2.0,
                        .noise_multiplier = 1.3,
                        .sample_rate = 0.05,
                        .delta = 1e-5,
                        .ledger_reserved_epsilon = 3.5,
                        .planned_steps = 40};
    cms_bus_event ev = {0};
    trev_job j = J;
    j.status = "pending";
    cr_assert_eq(trev_submitted_event(&j, &s, CONSUMER, "req-1", &ev), CMS_BUS_OK);
    Cms__V1__Envelope *e = decoded(&ev, "training_job.submitted");
    cr_assert_eq(e->body_case, CMS__V1__ENVELOPE__BODY_TRAINING_JOB_SUBMITTED);
    const Cms__V1__TrainingJobSubmitted *b = e->training_job_submitted;
    cr_assert_str_eq(b->job_id, JOB);
    cr_assert_str_eq(b->contract_id, CONTRACT);
    cr_assert_str_eq(b->consumer_id, CONSUMER);
    cr_assert_str_eq(b->status, "pending");
    cr_assert_float_eq(b->privacy_budget, 2.5, 0);
    cr_assert_float_eq(b->noise_multiplier, 1.3, 0);
    cr_assert_float_eq(b->ledger_reserved_epsilon, 3.5, 0);
    cr_assert_eq(b->planned_steps, 40);
    cr_assert_eq(b->max_steps, 80);
    cr_assert_str_eq(e->actor_id, CONSUMER);
    cr_assert_str_eq(e->correlation_id, "req-1");
    cms__v1__envelope__free_unpacked(e, NULL);
    cms_bus_event_release(&ev);
}

Test(events, every_type_carries_the_budget_figures)
{
    cms_bus_event ev = {0};
    cr_assert_eq(trev_stopped(&J, "budget_exhausted", CMS_BUS_SYSTEM_ACTOR, NULL, &ev), CMS_BUS_OK);
    Cms__V1__Envelope *e = decoded(&ev, "training_job.stopped");
    cr_assert_str_eq(e->training_job_stopped->reason, "budget_exhausted");
    cr_assert_float_eq(e->training_job_stopped->privacy_budget_spent, 1.25, 0);
    cr_assert_eq(e->training_job_stopped->steps_done, 40);
    cms__v1__envelope__free_unpacked(e, NULL);
    cms_bus_event_release(&ev);

    cr_assert_eq(trev_requeued(&J, 2, WORKER, &ev), CMS_BUS_OK);
    e = decoded(&ev, "training_job.requeued");
    cr_assert_eq(e->training_job_requeued->attempt, 2);
    cr_assert_str_eq(e->training_job_requeued->lost_worker_id, WORKER);
    cms__v1__envelope__free_unpacked(e, NULL);
    cms_bus_event_release(&ev);

    cr_assert_eq(trev_progress(&J, 0.3, 0.9, 1, WORKER, &ev), CMS_BUS_OK);
    e = decoded(&ev, "training_job.progress");
    cr_assert_float_eq(e->training_job_progress->accuracy, 0.9, 0);
    cr_assert_str_eq(e->actor_id, WORKER, "the worker acted");
    cms__v1__envelope__free_unpacked(e, NULL);
    cms_bus_event_release(&ev);

    cr_assert_eq(trev_failed(&J, "worker_lost", 3, CMS_BUS_SYSTEM_ACTOR, &ev), CMS_BUS_OK);
    e = decoded(&ev, "training_job.failed");
    cr_assert_str_eq(e->training_job_failed->reason, "worker_lost");
    cms__v1__envelope__free_unpacked(e, NULL);
    cms_bus_event_release(&ev);
}

Test(events, dispatches_go_to_the_work_subject_each_with_its_id)
{
    Cms__V1__TrainingDispatch d = CMS__V1__TRAINING_DISPATCH__INIT;
    d.job_id = (char *)JOB;
    d.attempt = 2;
    d.noise_multiplier = 1.1;
    cms_bus_event a = {0}, b = {0};
    cr_assert_eq(trev_dispatch(&d, "cms.work.training", &a), CMS_BUS_OK);
    cr_assert_eq(trev_dispatch(&d, "cms.work.training", &b), CMS_BUS_OK);
    cr_assert_str_eq(a.subject, "cms.work.training");
    cr_assert_str_neq(a.id, b.id);
    Cms__V1__TrainingDispatch *x = cms__v1__training_dispatch__unpack(NULL, a.len, a.buf);
    cr_assert_not_null(x);
    cr_assert_eq(x->attempt, 2);
    cr_assert_float_eq(x->noise_multiplier, 1.1, 0);
    cms__v1__training_dispatch__free_unpacked(x, NULL);
    cms_bus_event_release(&a);
    cms_bus_event_release(&b);
    char long_subject[300];
    memset(long_subject, 'x', sizeof long_subject - 1);
    long_subject[sizeof long_subject - 1] = '\0';
    cr_assert_eq(trev_dispatch(&d, long_subject, &a), CMS_BUS_ETOOLONG);
    cms_bus_event_release(&a);
}
