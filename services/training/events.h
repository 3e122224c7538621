/* The events of cms-training (source "training"), built and packed for the
 * outbox, one builder per event type, each with its typed body. Every body
 * names the job, its contract and consumer, the status after the event and
 * the budget figures (trev_job). actor: who acted (CMS_BUS_SYSTEM_ACTOR for
 * the tracker and the consumers); corr: the command's request_id, or NULL.
 * Also the dispatch a worker pulls (not an event: a message of the work
 * queue, written to the outbox the same way). */
#ifndef TRAINING_EVENTS_H
#define TRAINING_EVENTS_H

#include "bus.h"
#include "cms/v1/training.pb-c.h"

#include <stdbool.h>
#include <stdint.h>

#define TREV_SOURCE "training"
#define TREV_WUR __attribute__((warn_unused_result))

typedef struct trev_job {
    const char *id, *contract_id, *consumer_id;
    const char *status; /* after the event */
    double privacy_budget, privacy_budget_spent;
    int64_t steps_done, max_steps;
} trev_job;

typedef struct trev_submitted {
    const char *model_name;
    double projected_epsilon, noise_multiplier, sample_rate, delta, ledger_reserved_epsilon;
    int64_t planned_steps;
} trev_submitted;

cms_bus_err trev_submitted_event(const trev_job *j, const trev_submitted *s, const char *actor,
                                 const char *corr, cms_bus_event *out) TREV_WUR;
cms_bus_err trev_started(const trev_job *j, const char *worker_id, int attempt,
                         cms_bus_event *out) TREV_WUR;
cms_bus_err trev_progress(const trev_job *j, double loss, double accuracy, int attempt,
                          const char *worker_id, cms_bus_event *out) TREV_WUR;
cms_bus_err trev_completed(const trev_job *j, double loss, double accuracy, const char *worker_id,
                           cms_bus_event *out) TREV_WUR;
cms_bus_err trev_failed(const trev_job *j, const char *reason, int attempt, const char *actor,
                        cms_bus_event *out) TREV_WUR;
cms_bus_err trev_stopped(const trev_job *j, const char *reason, const char *actor, const char *corr,
                         cms_bus_event *out) TREV_WUR;
cms_bus_err trev_requeued(const trev_job *j, int attempt, const char *lost_worker_id,
                          cms_bus_event *out) TREV_WUR;

/* The dispatch d packed for the work queue (subject: cms.work.training
 * or, in tests, a subject of the test's own under it; a new id: the work
 * stream's dedupe key), as an outbox row's event. */
cms_bus_err trev_dispatch(const Cms__V1__TrainingDispatch *d, const char *subject,
                          cms_bus_event *out) TREV_WUR;

#endif
