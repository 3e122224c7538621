/* What cms-training accepts, checked before anything touches the database.
 * Each check names the field at fault, a request field ("model_name") or a
 * JSON path into the config ("config.training.batch_size"), and says what
 * is wanted. On refusal nothing but the error is written. */
#ifndef TRAINING_VALIDATE_H
#define TRAINING_VALIDATE_H

#include "fielderr.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TV_CONFIG_MAX 65536 /* bytes of config JSON */
#define TV_ARCHITECTURE_MAX 64
#define TV_DATASET_MAX 255
#define TV_BATCH_SIZE_MAX 1000000
#define TV_EPOCHS_MAX 100000
#define TV_LEARNING_RATE_MAX 10.0

/* field: a JSON path or a request field (fielderr.h) */
typedef cms_field_err tv_err;

/* The database enum job_status, in its order. */
typedef enum { TV_PENDING, TV_RUNNING, TV_COMPLETED, TV_FAILED, TV_STOPPED, TV_NSTATUS } tv_status;

bool tv_status_parse(const char *s, const char *field, tv_status *out, tv_err *e);
/* "unknown" for a value outside the enum */
const char *tv_status_name(tv_status s);

/* The lifecycle: pending -> running (a worker takes it), pending -> stopped
 * (cancelled before it ran), pending -> failed; running -> completed,
 * failed or stopped; running -> pending (requeued: its worker was lost).
 * Nothing leaves completed, failed or stopped, and a change to the same
 * status is not a change. */
bool tv_transition(tv_status from, tv_status to);

/* A UUID in its text form (cms-identity's idv_uuid). */
bool tv_uuid(const char *s, const char *field, tv_err *e);

/* The job's model_name: 1..255 bytes of valid UTF-8 without control
 * characters (cms-identity's idv_name). */
bool tv_model_name(const char *s, tv_err *e);

/* The job's privacy_budget: a finite number greater than 0, and no less than
 * the epsilon its config asks for. The field is "privacy_budget". */
bool tv_budget(double privacy_budget, double config_epsilon, tv_err *e);

typedef struct tv_config {
    char architecture[TV_ARCHITECTURE_MAX + 1];
    double epsilon, delta, learning_rate, max_grad_norm;
    double noise_multiplier; /* 0: none given */
    int64_t batch_size, epochs, dataset_size;
    char dataset[TV_DATASET_MAX + 1];
    double q;      /* the sampling rate: batch_size / dataset_size */
    int64_t steps; /* epochs * ceil(dataset_size / batch_size) */
} tv_config;

/* The config JSON text: an object of at most 64 KiB without duplicate keys,
 *
 *   model:    architecture, [A-Za-z0-9_.-]{1,64}; parameters, if present, an
 *             object (kept as it is)
 *   privacy:  epsilon, finite > 0; delta in (0, 1); noise_mechanism,
 *             "gaussian" (the only one supported); noise_multiplier, if
 *             present, >= 0.001 (CMS_RDP_SIGMA_MIN: less is no noise)
 *   training: batch_size, an integer 1..1000000; epochs, an integer
 *             1..100000; learning_rate in (0, 10]; dataset, 1..255 bytes;
 *             dataset_size, an integer >= 1 and >= batch_size;
 *             max_grad_norm (the clipping norm) > 0; sampler, if present,
 *             "poisson" (what the accountant assumes; cms-worker samples so)
 *
 * Other keys are kept unchecked; so is a delta of 1/dataset_size or more
 * (weak, but the caller's choice). The steps must fit in an int64_t. Fields
 * in errors start with "config". out (may be NULL) is written only on
 * success. */
bool tv_config_check(const char *json, tv_config *out, tv_err *e);

#endif
