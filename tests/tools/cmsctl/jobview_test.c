/* jobview (tools/cmsctl/jobview.h): what cmsctl job watch draws of a
 * training job. The statuses and which of them end a job (and the exit
 * status each gives); the view of a JobMetrics (the total the progress was
 * computed against, the earlier attempts' steps in it; loss and accuracy
 * only once reported); times left in their two largest units; the progress
 * line; and the bar, cut to the terminal's width exactly, without a bar when
 * too narrow, never wrapping. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "jobview.h"

/* A running job 1220 steps into 2000 (of 2100 allowed), reported. */
static Cms__V1__JobMetrics running(void)
{
    Cms__V1__JobMetrics m = CMS__V1__JOB_METRICS__INIT;
    m.id = (char *)"0190aa00-0000-7000-8000-0000000000a1";
    m.status = (char *)"running";
    m.steps_done = 1220;
    m.planned_steps = 2000;
    m.max_steps = 2100;
    m.progress = 0.61;
    m.loss = 0.34121;
    m.accuracy = 0.912;
    m.metrics_json = (char *)"{\"loss\": 0.34121, \"accuracy\": 0.912}";
    m.privacy_budget = 3;
    m.privacy_budget_spent = 1.2345;
    m.eta_us = 130 * 1000000LL;
    return m;
}

static cmsctl_jobview view_of(const Cms__V1__JobMetrics *m)
{
    cmsctl_jobview v;
    cmsctl_jobview_from_metrics(m, &v);
    return v;
}

/* ------------------------------------------------------------------------ */
/* states */

Test(jobview, every_status_of_cms_training_is_known_and_names_itself)
{
    const char *const names[] = {"pending", "running", "completed", "failed", "stopped"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        cmsctl_jobview_state s = cmsctl_jobview_state_parse(names[i]);
        cr_assert_neq(s, CMSCTL_JOBVIEW_UNKNOWN, "%s", names[i]);
        cr_assert_str_eq(cmsctl_jobview_state_name(s), names[i]);
    }
    cr_assert_eq(cmsctl_jobview_state_parse(""), CMSCTL_JOBVIEW_UNKNOWN);
    cr_assert_eq(cmsctl_jobview_state_parse("Running"), CMSCTL_JOBVIEW_UNKNOWN);
    cr_assert_eq(cmsctl_jobview_state_parse("queued"), CMSCTL_JOBVIEW_UNKNOWN);
    cr_assert_str_eq(cmsctl_jobview_state_name(CMSCTL_JOBVIEW_UNKNOWN), "unknown");
}

Test(jobview, completed_failed_and_stopped_end_a_job_and_only_completed_exits_0)
{
    cr_assert(cmsctl_jobview_state_final(CMSCTL_JOBVIEW_COMPLETED));
    cr_assert(cmsctl_jobview_state_final(CMSCTL_JOBVIEW_FAILED));
    cr_assert(cmsctl_jobview_state_final(CMSCTL_JOBVIEW_STOPPED));
    cr_assert_not(cmsctl_jobview_state_final(CMSCTL_JOBVIEW_PENDING));
    cr_assert_not(cmsctl_jobview_state_final(CMSCTL_JOBVIEW_RUNNING));
    /* a status this build does not know is watched on, not taken for an end */
    cr_assert_not(cmsctl_jobview_state_final(CMSCTL_JOBVIEW_UNKNOWN));
    cr_assert_eq(cmsctl_jobview_exit_status(CMSCTL_JOBVIEW_COMPLETED), CMSCTL_EXIT_OK);
    cr_assert_eq(cmsctl_jobview_exit_status(CMSCTL_JOBVIEW_FAILED), CMSCTL_EXIT_FAILED);
    cr_assert_eq(cmsctl_jobview_exit_status(CMSCTL_JOBVIEW_STOPPED), CMSCTL_EXIT_FAILED);
}

/* ------------------------------------------------------------------------ */
/* the view of the metrics */

Test(jobview, the_total_is_what_the_progress_was_computed_against)
{
    Cms__V1__JobMetrics m = running();
    cmsctl_jobview v = view_of(&m);
    cr_assert_eq(v.state, CMSCTL_JOBVIEW_RUNNING);
    cr_assert_eq(v.steps_done, 1220);
    cr_assert_eq(v.steps_total, 2000);
    cr_assert_float_eq(v.progress, 0.61, 1e-12);
    cr_assert_float_eq(v.spent, 1.2345, 1e-12);
    cr_assert_float_eq(v.budget, 3, 1e-12);
    cr_assert_eq(v.eta_us, 130 * 1000000LL);

    /* a requeued attempt trains its plan afresh after the 500 steps before
     * it: the service's progress counts against 2500, capped by max_steps */
    m.steps_done = 1500;
    m.max_steps = 2400;
    m.progress = 1500.0 / 2400.0;
    v = view_of(&m);
    cr_assert_eq(v.steps_total, 2400);
}

Test(jobview, before_any_step_the_total_is_the_plan_within_max_steps)
{
    Cms__V1__JobMetrics m = CMS__V1__JOB_METRICS__INIT;
    m.status = (char *)"pending";
    m.planned_steps = 2000;
    m.max_steps = 2100;
    m.metrics_json = (char *)"{}";
    cmsctl_jobview v = view_of(&m);
    cr_assert_eq(v.state, CMSCTL_JOBVIEW_PENDING);
    cr_assert_eq(v.steps_total, 2000);
    cr_assert_not(v.has_loss);
    cr_assert_not(v.has_accuracy);
    /* a budget that allows fewer steps than planned */
    m.max_steps = 1500;
    cr_assert_eq(view_of(&m).steps_total, 1500);
    /* nothing planned (yet): not known */
    m.planned_steps = 0;
    m.max_steps = 0;
    cr_assert_eq(view_of(&m).steps_total, 0);
}

Test(jobview, progress_out_of_range_is_held_to_0_and_1)
{
    Cms__V1__JobMetrics m = running();
    m.progress = 1.5;
    cr_assert_float_eq(view_of(&m).progress, 1.0, 0);
    m.progress = -0.5;
    cr_assert_float_eq(view_of(&m).progress, 0.0, 0);
    m.progress = __builtin_nan("");
    cr_assert_float_eq(view_of(&m).progress, 0.0, 0);
    m.eta_us = -5;
    cr_assert_eq(view_of(&m).eta_us, 0);
}

Test(jobview, loss_and_accuracy_count_once_reported_as_numbers)
{
    Cms__V1__JobMetrics m = running();
    m.metrics_json = (char *)"{\"loss\": 0}";
    cmsctl_jobview v = view_of(&m);
    cr_assert(v.has_loss, "a loss of 0 is a loss");
    cr_assert_not(v.has_accuracy);
    m.metrics_json = (char *)"{\"loss\": \"high\", \"accuracy\": null}";
    v = view_of(&m);
    cr_assert_not(v.has_loss);
    cr_assert_not(v.has_accuracy);
    m.metrics_json = (char *)"not json";
    cr_assert_not(view_of(&m).has_loss);
    m.metrics_json = (char *)"";
    cr_assert_not(view_of(&m).has_loss);
}

/* ------------------------------------------------------------------------ */
/* durations */

static const char *dur(int64_t us)
{
    static char b[CMSCTL_JOBVIEW_DURATION_MAX];
    return cmsctl_jobview_duration(us, b);
}

Test(jobview, a_time_left_is_in_its_two_largest_units)
{
    cr_assert_str_eq(dur(0), "-");
    cr_assert_str_eq(dur(-1), "-");
    cr_assert_str_eq(dur(1), "1s", "time that is left is never 0s");
    cr_assert_str_eq(dur(499999), "1s");
    cr_assert_str_eq(dur(1499999), "1s");
    cr_assert_str_eq(dur(1500000), "2s");
    cr_assert_str_eq(dur(45 * 1000000LL), "45s");
    cr_assert_str_eq(dur(59 * 1000000LL), "59s");
    cr_assert_str_eq(dur(60 * 1000000LL), "1m00s");
    cr_assert_str_eq(dur(185 * 1000000LL), "3m05s");
    cr_assert_str_eq(dur(3599 * 1000000LL), "59m59s");
    cr_assert_str_eq(dur(3600 * 1000000LL), "1h00m");
    cr_assert_str_eq(dur((2 * 3600 + 7 * 60 + 59) * 1000000LL), "2h07m");
    cr_assert_str_eq(dur(86400 * 1000000LL), "1d00h");
    cr_assert_str_eq(dur((3 * 86400 + 4 * 3600 + 1) * 1000000LL), "3d04h");
    cr_assert_str_eq(dur(INT64_MAX), "106751991d04h");
}

/* ------------------------------------------------------------------------ */
/* the line and the bar */

static const char *line_of(const cmsctl_jobview *v)
{
    static char b[CMSCTL_JOBVIEW_LINE_MAX];
    size_t n = cmsctl_jobview_line(v, b, sizeof b);
    cr_assert_eq(n, strlen(b));
    return b;
}

Test(jobview, the_line_says_status_progress_steps_loss_accuracy_epsilon_and_eta)
{
    Cms__V1__JobMetrics m = running();
    cmsctl_jobview v = view_of(&m);
    cr_assert_str_eq(line_of(&v),
                     "running 61% 1220/2000 loss 0.3412 acc 0.912 eps 1.23/3 eta 2m10s");
    /* the time left only while running */
    m.status = (char *)"stopped";
    v = view_of(&m);
    cr_assert_str_eq(line_of(&v), "stopped 61% 1220/2000 loss 0.3412 acc 0.912 eps 1.23/3");
    /* not known: "-" */
    m.status = (char *)"running";
    m.eta_us = 0;
    m.metrics_json = (char *)"{}";
    v = view_of(&m);
    cr_assert_str_eq(line_of(&v), "running 61% 1220/2000 loss - acc - eps 1.23/3 eta -");
}

Test(jobview, the_percentage_never_shows_100_before_completion)
{
    Cms__V1__JobMetrics m = running();
    m.steps_done = 1999;
    m.progress = 1999.0 / 2000.0;
    cmsctl_jobview v = view_of(&m);
    cr_assert(strncmp(line_of(&v), "running 99% 1999/2000 ", 22) == 0, "%s", line_of(&v));
    m.status = (char *)"completed";
    m.steps_done = 2000;
    m.progress = 1;
    m.privacy_budget_spent = 2.999;
    v = view_of(&m);
    cr_assert_str_eq(line_of(&v), "completed 100% 2000/2000 loss 0.3412 acc 0.912 eps 3/3");
}

Test(jobview, a_pending_job_without_a_plan_has_no_total)
{
    Cms__V1__JobMetrics m = CMS__V1__JOB_METRICS__INIT;
    m.status = (char *)"pending";
    m.metrics_json = (char *)"{}";
    m.privacy_budget = 0.5;
    cmsctl_jobview v = view_of(&m);
    cr_assert_str_eq(line_of(&v), "pending 0% 0/- loss - acc - eps 0/0.5");
}

Test(jobview, the_line_is_cut_to_fit)
{
    Cms__V1__JobMetrics m = running();
    cmsctl_jobview v = view_of(&m);
    char b[12];
    cr_assert_eq(cmsctl_jobview_line(&v, b, sizeof b), 11);
    cr_assert_str_eq(b, "running 61%");
    cr_assert_eq(cmsctl_jobview_line(&v, b, 1), 0);
    cr_assert_str_eq(b, "");
    cr_assert_eq(cmsctl_jobview_line(&v, b, 0), 0);
}

static const char *bar_of(const cmsctl_jobview *v, size_t cols)
{
    static char b[CMSCTL_JOBVIEW_LINE_MAX + 64];
    size_t n = cmsctl_jobview_bar(v, cols, b, sizeof b);
    cr_assert_eq(n, strlen(b));
    return b;
}

Test(jobview, the_bar_fills_with_the_progress_and_leaves_the_last_column_free)
{
    Cms__V1__JobMetrics m = running();
    cmsctl_jobview v = view_of(&m);
    char line[CMSCTL_JOBVIEW_LINE_MAX];
    snprintf(line, sizeof line, "%s", line_of(&v));
    size_t n = strlen(line);
    /* wide: a bar of 30, 61% of it filled (18) */
    const char *b = bar_of(&v, 200);
    cr_assert_str_eq(
        b,
        "[##################............] running 61% 1220/2000 loss 0.3412 acc 0.912 eps 1.23/3 "
        "eta 2m10s");
    cr_assert_str_eq(bar_of(&v, 100), b, "30 from 100 columns");
    /* 80 columns: a bar of 10 (6 filled), the line whole beside it */
    b = bar_of(&v, 80);
    cr_assert(strncmp(b, "[######....] ", 13) == 0, "%s", b);
    cr_assert_str_eq(b + 13, line);
    b = bar_of(&v, 90);
    cr_assert(strncmp(b, "[############........] ", 23) == 0, "%s", b);
    /* below 80: no bar, the line alone */
    cr_assert_str_eq(bar_of(&v, 79), line);
    /* narrower than the line: the line is cut, still one column short */
    b = bar_of(&v, 40);
    cr_assert_eq(strlen(b), 39);
    cr_assert(strncmp(b, line, 39) == 0, "%s", b);
    cr_assert_lt(39, n);
    cr_assert_str_eq(bar_of(&v, 1), "");
}

Test(jobview, the_bar_holds_still_while_the_line_changes)
{
    Cms__V1__JobMetrics m = running();
    cmsctl_jobview v = view_of(&m);
    const size_t cols[] = {80, 90, 100, 200};
    for (size_t i = 0; i < sizeof cols / sizeof cols[0]; i++) {
        char before[CMSCTL_JOBVIEW_LINE_MAX + 64];
        snprintf(before, sizeof before, "%s", bar_of(&v, cols[i]));
        /* a much longer line: huge step counts, days left */
        Cms__V1__JobMetrics big = m;
        big.steps_done = 123456789;
        big.planned_steps = 987654321;
        big.max_steps = 987654321;
        big.progress = 123456789.0 / 987654321.0;
        big.eta_us = 40 * 86400 * 1000000LL;
        big.loss = 12345.678;
        big.privacy_budget_spent = 0.00012345;
        cmsctl_jobview w = view_of(&big);
        const char *after = bar_of(&w, cols[i]);
        size_t bar = strcspn(before, "]");
        cr_assert_eq(strcspn(after, "]"), bar, "%zu columns:\n%s\n%s", cols[i], before, after);
        cr_assert_leq(strlen(after), cols[i] - 1, "%zu columns: %s", cols[i], after);
    }
}

Test(jobview, an_unknown_width_is_80_columns)
{
    Cms__V1__JobMetrics m = running();
    cmsctl_jobview v = view_of(&m);
    char unknown[CMSCTL_JOBVIEW_LINE_MAX + 64];
    snprintf(unknown, sizeof unknown, "%s", bar_of(&v, 0));
    cr_assert_str_eq(unknown, bar_of(&v, 80));
    cr_assert_leq(strlen(unknown), 79);
    /* 80 columns have room for a bar */
    cr_assert_eq(unknown[0], '[', "%s", unknown);
}

Test(jobview, a_completed_job_has_a_full_bar)
{
    Cms__V1__JobMetrics m = running();
    m.status = (char *)"completed";
    m.steps_done = 2000;
    m.progress = 0.999; /* whatever the last report said */
    cmsctl_jobview v = view_of(&m);
    const char *b = bar_of(&v, 200);
    cr_assert(strncmp(b, "[##############################] completed 100%", 47) == 0, "%s", b);
    m.status = (char *)"pending";
    m.steps_done = 0;
    m.progress = 0;
    v = view_of(&m);
    b = bar_of(&v, 200);
    cr_assert(strncmp(b, "[..............................] pending 0%", 43) == 0, "%s", b);
}

Test(jobview, the_bar_is_cut_to_its_buffer)
{
    Cms__V1__JobMetrics m = running();
    cmsctl_jobview v = view_of(&m);
    char b[8];
    cr_assert_eq(cmsctl_jobview_bar(&v, 200, b, sizeof b), 7);
    cr_assert_str_eq(b, "[######");
}
