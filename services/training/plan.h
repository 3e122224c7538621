/* A training job's privacy plan and a contract's ledger, from the Rényi-DP
 * accountant (common/rdp.h). Pure: no I/O.
 *
 * A job is DP-SGD with Poisson sampling rate q and noise multiplier sigma:
 * its RDP curve after n steps is n times the curve of one step (rdp_step),
 * which is what the job stores; every epsilon of the job (projected,
 * spent, the step bound) is converted from n * rdp_step by the same code,
 * so the spent budget can never disagree with the bound it is checked
 * against. A contract's ledger is the sum of its jobs' curves, order by
 * order, converted once. */
#ifndef TRAINING_PLAN_H
#define TRAINING_PLAN_H

#include "rdp.h"
#include "training/validate.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The relative tolerance of the noise multiplier searched for a target
 * epsilon. */
#define TP_SIGMA_TOL 1e-6
/* Steps are bounded here: a job runs at most 2^40 steps. */
#define TP_STEPS_MAX (INT64_C(1) << 40)
/* A ledger whose contract names no delta converts at this one. */
#define TP_LEDGER_DELTA 1e-5
/* The text of a curve ("{x,x,...}", PostgreSQL's float8[] literal) fits. */
#define TP_CURVE_TEXT_MAX (CMS_RDP_NORDERS * 26 + 4)

typedef struct tp_plan {
    double q, sigma, delta;
    int64_t planned_steps; /* the config's steps */
    int64_t max_steps;     /* the most steps whose epsilon is within the budget */
    double projected_eps;  /* epsilon of planned_steps */
    double rdp_step[CMS_RDP_NORDERS];
} tp_plan;

/* The plan of a checked config under privacy_budget: sigma from the config,
 * or else the smallest that keeps planned_steps within the config's
 * epsilon; refused (field and numbers in e) when the projected epsilon
 * exceeds the budget or no sigma reaches the target. */
bool tp_plan_job(const tv_config *c, double privacy_budget, tp_plan *out, tv_err *e);

/* Epsilon at delta after steps steps of a job's rdp_step: 0 for no step
 * (nothing was released), else from the curve, +inf if it has no finite
 * bound. */
double tp_epsilon(const double *rdp_step, int64_t steps, double delta);
/* The most steps (0..TP_STEPS_MAX) whose tp_epsilon stays within budget. */
int64_t tp_max_steps(const double *rdp_step, double delta, double budget);

/* acc[i] += k * step[i] for every order (acc may hold a sum of jobs). */
void tp_curve_add(double *acc, const double *step, double k);
/* Epsilon of a composed curve (a ledger's), 0 for an all-zero curve. */
double tp_curve_epsilon(const double *curve, double delta);

/* A ledger's check of a new job: reserved (NULL: nothing reserved yet)
 * plus the job's whole projection, converted at delta, within max_epsilon
 * (0: no limit). *composed (may be NULL) is the composed epsilon with the
 * job. Refused with the numbers in e (field "privacy_budget"). */
bool tp_ledger_admit(const double *reserved, const tp_plan *p, double max_epsilon, double delta,
                     double *composed, tv_err *e);

/* A curve as PostgreSQL's float8[] text, every value exact; false if it
 * does not fit. */
bool tp_curve_format(const double *curve, char *out, size_t len);
/* That text back: exactly CMS_RDP_NORDERS finite values; false otherwise. */
bool tp_curve_parse(const char *text, double *curve);

#endif
