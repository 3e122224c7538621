/* A job's privacy plan and the ledger's check (services/training/plan.h):
 * sigma from the accountant when the config gives none, the projection
 * refused over the budget with its numbers, max_steps the most steps within
 * the budget, epsilon monotone in steps and zero for none, composition
 * tighter than the plain sum and never looser than the largest job, and the
 * float8[] text of a curve read back exactly. */
#include "training/plan.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

static tv_config config(double epsilon, double sigma, int64_t steps, double q)
{
    tv_config c = {.epsilon = epsilon,
                   .delta = 1e-5,
                   .noise_multiplier = sigma,
                   .batch_size = 100,
                   .epochs = 1,
                   .dataset_size = 2000,
                   .q = q,
                   .steps = steps,
                   .max_grad_norm = 1.0,
                   .learning_rate = 0.1};
    return c;
}

Test(plan, sigma_from_the_accountant_reaches_the_target)
{
    tv_config c = config(1.0, 0, 1000, 0.01);
    tp_plan p;
    tv_err e = {0};
    cr_assert(tp_plan_job(&c, 1.0, &p, &e), "%s", e.msg);
    cr_assert_leq(p.projected_eps, 1.0);
    cr_assert_gt(p.projected_eps, 0.999, "no more noise than the target needs: %.6f",
                 p.projected_eps);
    /* a slightly smaller sigma would overshoot */
    tv_config less = config(1.0, p.sigma * (1 - 1e-4), 1000, 0.01);
    tp_plan q;
    cr_assert_not(tp_plan_job(&less, 1.0, &q, &e));
    cr_assert_str_eq(e.field, "privacy_budget");
    cr_assert_not_null(strstr(e.msg, "exceeds its privacy_budget 1"), "%s", e.msg);
    cr_assert_not_null(strstr(e.msg, "1000 steps"), "%s", e.msg);
}

Test(plan, max_steps_is_the_most_within_the_budget)
{
    tv_config c = config(1.0, 1.1, 100, 0.01);
    tp_plan p;
    tv_err e = {0};
    cr_assert(tp_plan_job(&c, 2.0, &p, &e), "%s", e.msg);
    cr_assert_geq(p.max_steps, p.planned_steps);
    cr_assert_leq(tp_epsilon(p.rdp_step, p.max_steps, p.delta), 2.0);
    cr_assert_gt(tp_epsilon(p.rdp_step, p.max_steps + 1, p.delta), 2.0);
    /* monotone, and nothing spent for no step */
    cr_assert_eq(tp_epsilon(p.rdp_step, 0, p.delta), 0);
    double last = 0;
    for (int64_t n = 1; n < 5000; n += 97) {
        double x = tp_epsilon(p.rdp_step, n, p.delta);
        cr_assert_geq(x, last, "epsilon falls at %lld steps", (long long)n);
        last = x;
    }
    /* the same as the accountant's curve of n steps */
    double eps = 0, order = 0;
    cr_assert(cms_rdp_eps(0.01, 1.1, 1000, 1e-5, &eps, &order));
    cr_assert_float_eq(tp_epsilon(p.rdp_step, 1000, 1e-5), eps, eps * 1e-9);
}

Test(plan, composition_is_tighter_than_the_sum)
{
    tv_config c = config(1.0, 0, 500, 0.02);
    tp_plan p;
    tv_err e = {0};
    cr_assert(tp_plan_job(&c, 1.0, &p, &e), "%s", e.msg);
    double reserved[CMS_RDP_NORDERS] = {0}, composed = 0;
    int admitted = 0;
    while (tp_ledger_admit(reserved, &p, 4.0, 1e-5, &composed, &e)) {
        tp_curve_add(reserved, p.rdp_step, (double)p.planned_steps);
        admitted++;
        cr_assert_leq(composed, 4.0);
        cr_assert_geq(composed, p.projected_eps - 1e-12, "never below one job");
        cr_assert_lt(composed, admitted * p.projected_eps + 1e-12, "never above the sum");
        cr_assert_lt(admitted, 1000);
    }
    cr_assert_gt(admitted, 4, "composed, more than the 4 the plain sum allows: %d", admitted);
    cr_assert_str_eq(e.field, "privacy_budget");
    cr_assert_not_null(strstr(e.msg, "holds epsilon 4 at most"), "%s", e.msg);
    /* without a limit everything fits */
    cr_assert(tp_ledger_admit(reserved, &p, 0, 1e-5, &composed, &e));
    cr_assert_gt(composed, 4.0);
}

Test(plan, curve_text_reads_back_exactly)
{
    tv_config c = config(1.0, 0.7, 10, 0.1);
    tp_plan p;
    tv_err e = {0};
    cr_assert(tp_plan_job(&c, 100, &p, &e), "%s", e.msg);
    char text[TP_CURVE_TEXT_MAX];
    cr_assert(tp_curve_format(p.rdp_step, text, sizeof text));
    double back[CMS_RDP_NORDERS];
    cr_assert(tp_curve_parse(text, back));
    cr_assert_eq(memcmp(back, p.rdp_step, sizeof back), 0, "bit for bit");
    cr_assert_not(tp_curve_parse("{1,2,3}", back), "too short");
    cr_assert_not(tp_curve_parse("", back));
    cr_assert_not(tp_curve_parse(NULL, back));
    char small[16];
    cr_assert_not(tp_curve_format(p.rdp_step, small, sizeof small), "does not fit");
}

Test(plan, steps_are_bounded)
{
    tv_config c = config(1.0, 1.0, TP_STEPS_MAX + 1, 0.01);
    tp_plan p;
    tv_err e = {0};
    cr_assert_not(tp_plan_job(&c, 1.0, &p, &e));
    cr_assert_not_null(strstr(e.msg, "2^40"), "%s", e.msg);
}
