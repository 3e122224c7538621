/* The privacy plan of a job and the ledger's check; see plan.h. */
#include "training/plan.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* x as text that reads back as x */
static const char *exact(char buf[32], double x)
{
    snprintf(buf, 32, "%.15g", x);
    if (strtod(buf, NULL) != x)
        snprintf(buf, 32, "%.17g", x);
    return buf;
}

void tp_curve_add(double *acc, const double *step, double k)
{
    for (size_t i = 0; i < CMS_RDP_NORDERS; i++)
        acc[i] += k * step[i];
}

double tp_curve_epsilon(const double *curve, double delta)
{
    bool any = false;
    for (size_t i = 0; i < CMS_RDP_NORDERS; i++)
        any = any || curve[i] > 0;
    double eps = INFINITY, order = 0;
    if (!any)
        return 0;
    if (!cms_rdp_epsilon(curve, delta, &eps, &order))
        return INFINITY;
    return eps;
}

double tp_epsilon(const double *rdp_step, int64_t steps, double delta)
{
    if (steps <= 0)
        return 0;
    double c[CMS_RDP_NORDERS] = {0};
    tp_curve_add(c, rdp_step, (double)steps);
    return tp_curve_epsilon(c, delta);
}

int64_t tp_max_steps(const double *rdp_step, double delta, double budget)
{
    if (!(tp_epsilon(rdp_step, 1, delta) <= budget))
        return 0;
    int64_t lo = 1, hi = 2; /* eps(lo) <= budget; hi unknown, then > budget */
    while (hi <= TP_STEPS_MAX && tp_epsilon(rdp_step, hi, delta) <= budget) {
        lo = hi;
        hi *= 2;
    }
    if (hi > TP_STEPS_MAX) {
        if (tp_epsilon(rdp_step, TP_STEPS_MAX, delta) <= budget)
            return TP_STEPS_MAX;
        hi = TP_STEPS_MAX;
    }
    while (hi - lo > 1) {
        int64_t mid = lo + (hi - lo) / 2;
        if (tp_epsilon(rdp_step, mid, delta) <= budget)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

bool tp_plan_job(const tv_config *c, double budget, tp_plan *out, tv_err *e)
{
    char b1[32], b2[32], b3[32];
    tp_plan p = {.q = c->q, .delta = c->delta, .planned_steps = c->steps};
    if (c->steps > TP_STEPS_MAX)
        return cms_field_fail(e, "config.training.epochs",
                              "the job would run %lld steps; at most 2^40", (long long)c->steps);
    if (c->noise_multiplier > 0) {
        p.sigma = c->noise_multiplier;
    } else if (!cms_rdp_sigma_for(c->q, c->steps, c->delta, c->epsilon, TP_SIGMA_TOL, &p.sigma)) {
        return cms_field_fail(e, "config.privacy.epsilon",
                              "no noise multiplier up to %g keeps %lld steps at q = %s within "
                              "epsilon %s at delta %s",
                              CMS_RDP_SIGMA_MAX, (long long)c->steps, exact(b1, c->q),
                              exact(b2, c->epsilon), exact(b3, c->delta));
    }
    double one[CMS_RDP_NORDERS];
    if (!cms_rdp_curve(p.q, p.sigma, 1, one))
        return cms_field_fail(e, "config", "the accountant refused q = %s, sigma = %s",
                              exact(b1, p.q), exact(b2, p.sigma));
    memcpy(p.rdp_step, one, sizeof one);
    p.projected_eps = tp_epsilon(p.rdp_step, p.planned_steps, p.delta);
    if (!(p.projected_eps <= budget))
        return cms_field_fail(e, "privacy_budget",
                              "the job's projected epsilon %s over its %lld steps (q = %s, "
                              "sigma = %s, delta = %s) exceeds its privacy_budget %s",
                              exact(b1, p.projected_eps), (long long)p.planned_steps,
                              exact(b2, p.q), exact(b3, p.sigma), exact((char[32]){0}, p.delta),
                              exact((char[32]){0}, budget));
    p.max_steps = tp_max_steps(p.rdp_step, p.delta, budget);
    if (p.max_steps < p.planned_steps) /* cannot happen: eps(planned) <= budget */
        p.max_steps = p.planned_steps;
    *out = p;
    return true;
}

bool tp_ledger_admit(const double *reserved, const tp_plan *p, double max_epsilon, double delta,
                     double *composed, tv_err *e)
{
    double c[CMS_RDP_NORDERS] = {0};
    if (reserved)
        memcpy(c, reserved, sizeof c);
    double before = tp_curve_epsilon(c, delta);
    tp_curve_add(c, p->rdp_step, (double)p->planned_steps);
    double with = tp_curve_epsilon(c, delta);
    if (composed)
        *composed = with;
    char b1[32], b2[32], b3[32];
    if (max_epsilon > 0 && !(with <= max_epsilon))
        return cms_field_fail(e, "privacy_budget",
                              "the contract's privacy ledger holds epsilon %s at most "
                              "(terms.privacy.max_epsilon); its jobs already reserve %s, and "
                              "with this job's %lld steps the composed epsilon would be %s",
                              exact(b1, max_epsilon), exact(b2, before),
                              (long long)p->planned_steps, exact(b3, with));
    return true;
}

bool tp_curve_format(const double *curve, char *out, size_t len)
{
    size_t at = 0;
    char b[32];
    for (size_t i = 0; i < CMS_RDP_NORDERS; i++) {
        if (!isfinite(curve[i]))
            return false;
        int n = snprintf(out + at, len - at, "%c%s", i ? ',' : '{', exact(b, curve[i]));
        if (n < 0 || (size_t)n >= len - at)
            return false;
        at += (size_t)n;
    }
    if (at + 2 > len)
        return false;
    memcpy(out + at, "}", 2);
    return true;
}

bool tp_curve_parse(const char *text, double *curve)
{
    if (text == NULL || *text != '{')
        return false;
    const char *p = text + 1;
    for (size_t i = 0; i < CMS_RDP_NORDERS; i++) {
        char *end;
        errno = 0;
        double x = strtod(p, &end);
        if (end == p || errno == ERANGE || !isfinite(x))
            return false;
        curve[i] = x;
        p = end;
        if (*p != (i + 1 < CMS_RDP_NORDERS ? ',' : '}'))
            return false;
        p++;
    }
    return *p == '\0';
}
