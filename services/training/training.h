/* cms-training: training jobs under active contracts, admitted within
 * their privacy budget and their contract's privacy ledger, dispatched to
 * workers, tracked step by step, and stopped before the budget runs out.
 *
 * Verbs (cms.cmd.training.<verb>, proto/cms/v1/training.proto): submit,
 * cancel, get, list, metrics, budget (jobs.c); report, from the workers
 * (reports.c). Contract and identity facts come from their events
 * (facts.c); the tracker ends, stops and requeues jobs when they come due
 * (tracker.c). */
#ifndef TRAINING_H
#define TRAINING_H

#include "service.h"
#include "xenum.h"

#include <stdint.h>

typedef struct trsvc trsvc;

#define TRSVC_ERRORS(X)                                                                            \
    X(TRSVC_OK, "ok")                                                                              \
    X(TRSVC_ENOMEM, "out of memory")                                                               \
    X(TRSVC_ESETUP, "the commands or the tracker could not be set up")

typedef enum { TRSVC_ERRORS(CMS_ENUM_ITEM) TRSVC_NERRORS } trsvc_err;
const char *trsvc_strerror(trsvc_err e);

typedef struct trsvc_options {
    int64_t worker_timeout_ms;  /* a running job's worker silent this long is presumed lost */
    int64_t stop_timeout_ms;    /* a worker told to stop that has not, this long after */
    int max_attempts;           /* dispatches of one job at most */
    int64_t report_interval_ms; /* workers report at least this often */
    int64_t progress_event_ms;  /* one training_job.progress per job this often at most */
    char work_subject[128];     /* where dispatches go: cms.work.training */
} trsvc_options;

trsvc_err trsvc_create(const trsvc_options *o, trsvc **out) __attribute__((warn_unused_result));
/* Registers the verbs and starts the tracker (from the spec's start). */
trsvc_err trsvc_start(trsvc *s, cms_service *svc) __attribute__((warn_unused_result));
/* Stops the tracker, then drained(arg). */
void trsvc_drain(trsvc *s, void (*drained)(void *arg), void *arg);
void trsvc_destroy(trsvc *s); /* NULL-safe */

/* The consumers' handlers and their committed callback (facts.c), called
 * with the spec's arg: the trsvc. */
cms_consumer_verdict trsvc_on_contract(void *arg, const Cms__V1__Envelope *env, cms_pg_job *job,
                                       const char **reason);
cms_consumer_verdict trsvc_on_identity(void *arg, const Cms__V1__Envelope *env, cms_pg_job *job,
                                       const char **reason);
void trsvc_fact_committed(void *arg, const Cms__V1__Envelope *env);

#endif
