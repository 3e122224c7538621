/* What cms-worker accepts of a dispatch (services/worker/dispatch.h): the
 * sampler it refuses and why, the other refusals, and the plan it makes of
 * one it accepts. */
#include "dispatch.h"

#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#define JOB "0190f0a1-b2c3-7d4e-8f9a-0b1c2d3e4f50"
#define SAMPLER_REFUSAL                                                                            \
    " is not supported: the accountant assumes Poisson sampling, so another sampler would make "   \
    "the reported epsilon wrong"

/* a literal as the generated structs' char * */
#define S(text) ((char *)(text))

static Cms__V1__TrainingDispatch d;
static dispatch_plan plan;
static char why[DISPATCH_WHY_MAX];

/* A dispatch that passes: 400 steps of the synthetic set. */
static void reset(void)
{
    cms__v1__training_dispatch__init(&d);
    d.job_id = S(JOB);
    d.attempt = 1;
    d.model_name = S("demo");
    d.architecture = S("logistic_regression");
    d.dataset = S("synthetic");
    d.dataset_size = 2000;
    d.batch_size = 100;
    d.learning_rate = 0.5;
    d.sample_rate = 0.05;
    d.noise_multiplier = 1.0;
    d.max_grad_norm = 1.0;
    d.steps = 400;
    d.max_steps = 1000;
    d.config_json = S("{\"training\":{\"batch_size\":100}}");
    d.report_interval_ms = 0;
    d.control_subject = S("cms.control.training." JOB);
    memset(&plan, 0, sizeof plan);
    memset(why, 0, sizeof why);
}

TestSuite(dispatch, .init = reset);
TestSuite(sampler);

static void refused(const char *says, const char *what)
{
    dispatch_plan before;
    memset(&plan, 0x5a, sizeof plan);
    before = plan;
    cr_assert_not(dispatch_check(&d, 1000, &plan, why, sizeof why), "%s was accepted", what);
    cr_assert_not_null(strstr(why, says), "%s: '%s' does not say '%s'", what, why, says);
    cr_assert_eq(memcmp(&plan, &before, sizeof plan), 0, "%s: plan written on refusal", what);
    reset();
}

Test(sampler, anything_but_poisson_is_refused_saying_why)
{
    char w[DISPATCH_WHY_MAX];
    cr_assert_not(dispatch_sampler_ok("{\"training\":{\"sampler\":\"shuffle\"}}", w, sizeof w));
    cr_assert_str_eq(w, "training.sampler \"shuffle\"" SAMPLER_REFUSAL);
    cr_assert_not(dispatch_sampler_ok("{\"training\":{\"sampler\":5}}", w, sizeof w));
    cr_assert_str_eq(w, "training.sampler 5" SAMPLER_REFUSAL);
    cr_assert_not(dispatch_sampler_ok("{\"training\":{\"sampler\":\"Poisson\"}}", w, sizeof w));
    cr_assert_not(dispatch_sampler_ok("{\"training\":{\"sampler\":null}}", w, sizeof w));
    cr_assert_str_eq(w, "training.sampler null" SAMPLER_REFUSAL);
}

Test(sampler, poisson_or_none_is_taken)
{
    cr_assert(dispatch_sampler_ok("{\"training\":{\"sampler\":\"poisson\"}}", NULL, 0));
    cr_assert(dispatch_sampler_ok("{\"training\":{\"batch_size\":32}}", NULL, 0));
    cr_assert(dispatch_sampler_ok("{}", NULL, 0));
    cr_assert(dispatch_sampler_ok("", NULL, 0));
    cr_assert(dispatch_sampler_ok(NULL, NULL, 0));
    /* a sampler elsewhere than in training is not the job's */
    cr_assert(dispatch_sampler_ok("{\"model\":{\"sampler\":\"shuffle\"}}", NULL, 0));
}

Test(sampler, a_config_that_is_not_a_json_object_is_refused)
{
    char w[DISPATCH_WHY_MAX];
    cr_assert_not(dispatch_sampler_ok("[1,2]", w, sizeof w));
    cr_assert_str_eq(w, "config_json is not a JSON object");
    cr_assert_not(dispatch_sampler_ok("{\"training\":", w, sizeof w));
    cr_assert_not(dispatch_sampler_ok("{\"a\":1,\"a\":2}", w, sizeof w));
}

Test(dispatch, a_sampler_refusal_fails_the_job_with_it)
{
    d.config_json = S("{\"training\":{\"sampler\":\"shuffle\"}}");
    cr_assert_not(dispatch_check(&d, 1000, &plan, why, sizeof why));
    cr_assert_str_eq(why, "training.sampler \"shuffle\"" SAMPLER_REFUSAL);
}

Test(dispatch, the_plan_of_an_accepted_one)
{
    cr_assert(dispatch_check(&d, 1000, &plan, why, sizeof why), "%s", why);
    cr_assert_eq(plan.steps, 400);
    cr_assert_eq(plan.report_interval_ms, 1000);
    cr_assert_str_eq(plan.control_subject, "cms.control.training." JOB);
    cr_assert_eq(plan.params.mode, DPSGD_PRIVATE);
    cr_assert_float_eq(plan.params.sample_rate, 0.05, 0);
    cr_assert_float_eq(plan.params.noise_multiplier, 1.0, 0);
    cr_assert_float_eq(plan.params.max_grad_norm, 1.0, 0);
    cr_assert_float_eq(plan.params.learning_rate, 0.5, 0);
}

Test(dispatch, never_more_steps_than_max_steps)
{
    d.steps = 5000;
    cr_assert(dispatch_check(&d, 1000, &plan, why, sizeof why), "%s", why);
    cr_assert_eq(plan.steps, 1000);
    d.max_steps = 0;
    cr_assert(dispatch_check(&d, 1000, &plan, why, sizeof why), "%s", why);
    cr_assert_eq(plan.steps, 0);
}

Test(dispatch, the_shorter_report_interval_wins_within_the_floor)
{
    d.report_interval_ms = 250;
    cr_assert(dispatch_check(&d, 1000, &plan, why, sizeof why));
    cr_assert_eq(plan.report_interval_ms, 250);
    d.report_interval_ms = 5000;
    cr_assert(dispatch_check(&d, 1000, &plan, why, sizeof why));
    cr_assert_eq(plan.report_interval_ms, 1000);
    d.report_interval_ms = 1;
    cr_assert(dispatch_check(&d, 1000, &plan, why, sizeof why));
    cr_assert_eq(plan.report_interval_ms, DISPATCH_REPORT_INTERVAL_MIN_MS);
}

Test(dispatch, without_a_control_subject_the_jobs_own_is_taken)
{
    d.control_subject = S("");
    cr_assert(dispatch_check(&d, 1000, &plan, why, sizeof why));
    cr_assert_str_eq(plan.control_subject, "cms.control.training." JOB);
}

Test(dispatch, the_other_refusals)
{
    d.architecture = S("resnet50");
    refused("architecture \"resnet50\" is not supported", "another architecture");
    d.dataset = S("../secrets");
    refused("dataset \"../secrets\"", "a path as dataset");
    d.dataset = S("a/b");
    refused("A-Z, a-z, 0-9", "a dataset with a slash");
    d.dataset = S("");
    refused("is empty", "no dataset");
    d.dataset_size = 0;
    refused("dataset_size is 0", "an empty dataset");
    d.noise_multiplier = 0;
    refused("noise_multiplier is 0", "no noise");
    d.noise_multiplier = NAN;
    refused("noise_multiplier", "NaN noise");
    d.sample_rate = 0;
    refused("sample rate", "q 0");
    d.sample_rate = 1.5;
    refused("sample rate", "q above 1");
    d.max_grad_norm = 0;
    refused("clipping norm", "C 0");
    d.learning_rate = INFINITY;
    refused("learning rate", "an infinite learning rate");
    d.steps = -1;
    refused("must not be negative", "negative steps");
    d.control_subject = S("cms.control.training.*");
    refused("control_subject", "a wildcard control subject");
    d.control_subject = S("a..b");
    refused("control_subject", "an empty token");
    d.config_json = S("not json");
    refused("config_json", "a config that is not JSON");
    d.attempt = 0;
    refused("names no job", "attempt 0");
}

Test(dispatch, only_one_naming_a_job_can_be_reported)
{
    cr_assert(dispatch_reportable(&d));
    d.job_id = S("not-a-uuid");
    cr_assert_not(dispatch_reportable(&d));
    reset();
    d.attempt = 0;
    cr_assert_not(dispatch_reportable(&d));
    reset();
    d.job_id = S("");
    cr_assert_not(dispatch_reportable(&d));
}

Test(dispatch, control_characters_in_a_name_are_not_echoed)
{
    d.architecture = S("a\x1b[2Jb");
    cr_assert_not(dispatch_check(&d, 1000, &plan, why, sizeof why));
    cr_assert_not_null(strstr(why, "\"a?[2Jb\""), "%s", why);
}
