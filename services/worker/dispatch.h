/* What cms-worker accepts of a cms.v1.TrainingDispatch, checked before it
 * tells cms-training it started: a dispatch it cannot train exactly as the
 * accountant assumes is refused, and the job fails with the reason, rather
 * than running with an epsilon that would not be the true one. Pure. */
#ifndef WORKER_DISPATCH_H
#define WORKER_DISPATCH_H

#include "bus.h"
#include "cms/v1/training.pb-c.h"
#include "dpsgd.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DISPATCH_WHY_MAX 512
#define DISPATCH_CONFIG_MAX 65536 /* bytes of config_json read */
/* The one model this worker trains. */
#define DISPATCH_ARCHITECTURE "logistic_regression"
/* The shortest report interval a dispatch may ask for. */
#define DISPATCH_REPORT_INTERVAL_MIN_MS 100

/* Whether the dispatch can be answered at all: job_id is a UUID and
 * attempt >= 1. One that cannot is dropped, since no report could name it. */
bool dispatch_reportable(const Cms__V1__TrainingDispatch *d);

/* The job's config JSON (the dispatch's config_json; empty: no config):
 * training.sampler, if present, must be "poisson", the sampling the
 * accountant assumes. False with the reason in why otherwise, or when the
 * config is not a JSON object. */
bool dispatch_sampler_ok(const char *config_json, char *why, size_t whylen)
    __attribute__((warn_unused_result));

/* How an accepted dispatch is run. */
typedef struct dispatch_plan {
    dpsgd_params params; /* DPSGD_PRIVATE, the dispatch's numbers */
    int64_t steps;       /* the dispatch's steps, never more than its max_steps */
    int64_t report_interval_ms;
    char control_subject[CMS_BUS_SUBJECT_MAX];
} dispatch_plan;

/* Checks a reportable dispatch: the sampler (dispatch_sampler_ok), the
 * architecture (DISPATCH_ARCHITECTURE), the dataset's name
 * (dataset_name_ok) and size (>= 1), the privacy numbers (q in (0, 1],
 * sigma > 0, C > 0, all finite), the learning rate (> 0), the steps (>= 0)
 * and the control subject (a subject without wildcards; empty: the one of
 * bus.h for the job). report_interval_ms: the worker's own; the plan takes
 * the dispatch's when it is shorter, but never below
 * DISPATCH_REPORT_INTERVAL_MIN_MS. False with the reason in why (one
 * sentence for the job's failure) otherwise; out is written on success
 * only. */
bool dispatch_check(const Cms__V1__TrainingDispatch *d, int64_t report_interval_ms,
                    dispatch_plan *out, char *why, size_t whylen)
    __attribute__((warn_unused_result));

#endif
