/* cmsctl privacy epsilon, sigma and steps run as a program, with no server,
 * on TF Privacy's MNIST example (q = 256/60000, sigma = 1.1, 14063 steps,
 * delta = 1e-5: 3.01 there; Opacus's conversion, which rdp.h uses, is
 * lower): the three verbs answer each other's questions, --json parses,
 * and a bad number is a usage error naming its option.
 *
 * The binary is the build's own (CMSCTL_BIN, set by tests/CMakeLists.txt),
 * so this runs under plain ctest as well as under tests/run. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testproc.h"

#define WATCHDOG_MS 30000

#define Q "0.004266666666666667" /* 256 / 60000 */
#define DELTA "1e-5"

TestSuite(privacy);

/* `cmsctl args...`, run to its end. */
#define RUN(...) cms_test_run_bin(CMSCTL_BIN, (const char *const[]){__VA_ARGS__, NULL}, WATCHDOG_MS)
#define assert_exit CMS_TEST_ASSERT_EXIT

/* The value of the table line "key: VALUE" (the first line must be it when
 * first is set), copied into out. */
static void table_value(const char *text, const char *key, bool first, char out[64])
{
    char prefix[64];
    snprintf(prefix, sizeof prefix, "%s: ", key);
    const char *l = strstr(text, prefix);
    cr_assert_not_null(l, "no %s line in:\n%s", key, text);
    cr_assert(!first || l == text, "%s is not the first line:\n%s", key, text);
    l += strlen(prefix);
    size_t n = strcspn(l, "\n");
    cr_assert_lt(n, 64);
    memcpy(out, l, n);
    out[n] = '\0';
}

static double number(const char *s)
{
    char *end = NULL;
    double v = strtod(s, &end);
    cr_assert(end != s && *end == '\0', "not a number: \"%s\"", s);
    return v;
}

/* The epsilon of the MNIST example, as the epsilon verb prints it. */
static void mnist_epsilon(char eps[64])
{
    cms_test_proc *p =
        RUN("privacy", "epsilon", "--q", Q, "--sigma", "1.1", "--steps", "14063", "--delta", DELTA);
    assert_exit(p, 0);
    table_value(p->out, "epsilon", true, eps);
    char order[64];
    table_value(p->out, "order", false, order);
    cr_assert_gt(number(order), 1.0);
    cms_test_proc_free(p);
}

static json_t *parse_json(const cms_test_proc *p)
{
    json_error_t e;
    json_t *o = json_loads(p->out, 0, &e);
    cr_assert_not_null(o, "%s: %s", e.text, p->out);
    cr_assert(json_is_object(o));
    return o;
}

Test(privacy, epsilon_of_the_mnist_example_is_below_tf_privacys)
{
    char eps[64];
    mnist_epsilon(eps);
    double e = number(eps);
    cr_assert(e > 2.5 && e < 3.01, "epsilon %s", eps);
}

Test(privacy, sigma_for_that_epsilon_is_the_noise_it_came_from)
{
    char eps[64], sigma[64];
    mnist_epsilon(eps);
    cms_test_proc *p =
        RUN("privacy", "sigma", "--q", Q, "--epsilon", eps, "--steps", "14063", "--delta", DELTA);
    assert_exit(p, 0);
    table_value(p->out, "sigma", true, sigma);
    double s = number(sigma);
    cr_assert(fabs(s - 1.1) <= 0.02 * 1.1, "sigma %s for epsilon %s", sigma, eps);
    cms_test_proc_free(p);
}

Test(privacy, steps_for_that_epsilon_are_the_steps_it_came_from)
{
    char eps[64], steps[64];
    mnist_epsilon(eps);
    cms_test_proc *p =
        RUN("privacy", "steps", "--q", Q, "--sigma", "1.1", "--epsilon", eps, "--delta", DELTA);
    assert_exit(p, 0);
    table_value(p->out, "steps", true, steps);
    double t = number(steps);
    cr_assert(fabs(t - 14063) <= 0.01 * 14063, "steps %s for epsilon %s", steps, eps);
    cms_test_proc_free(p);
}

Test(privacy, json_outputs_parse)
{
    cms_test_proc *p = RUN("privacy", "epsilon", "--json", "--q", Q, "--sigma", "1.1", "--steps",
                           "14063", "--delta", DELTA);
    assert_exit(p, 0);
    json_t *o = parse_json(p);
    double e = json_number_value(json_object_get(o, "epsilon"));
    cr_assert(e > 2.5 && e < 3.01, "%s", p->out);
    cr_assert_gt(json_number_value(json_object_get(o, "order")), 1.0);
    cr_assert_float_eq(json_number_value(json_object_get(o, "sigma")), 1.1, 1e-12);
    cr_assert_eq(json_integer_value(json_object_get(o, "steps")), 14063);
    cr_assert_float_eq(json_number_value(json_object_get(o, "delta")), 1e-5, 1e-18);
    cr_assert_float_eq(json_number_value(json_object_get(o, "q")), 256.0 / 60000, 1e-15);
    json_decref(o);
    cms_test_proc_free(p);

    char eps[64];
    mnist_epsilon(eps);
    p = RUN("-o", "json", "privacy", "sigma", "--q", Q, "--epsilon", eps, "--steps", "14063",
            "--delta", DELTA);
    assert_exit(p, 0);
    o = parse_json(p);
    double s = json_number_value(json_object_get(o, "sigma"));
    cr_assert(fabs(s - 1.1) <= 0.022, "%s", p->out);
    cr_assert_leq(json_number_value(json_object_get(o, "spent_epsilon")), number(eps));
    cr_assert_float_eq(json_number_value(json_object_get(o, "tolerance")), 1e-4, 1e-15);
    json_decref(o);
    cms_test_proc_free(p);

    p = RUN("privacy", "steps", "--json", "--q", Q, "--sigma", "1.1", "--epsilon", eps, "--delta",
            DELTA);
    assert_exit(p, 0);
    o = parse_json(p);
    cr_assert(json_is_integer(json_object_get(o, "steps")), "%s", p->out);
    json_int_t t = json_integer_value(json_object_get(o, "steps"));
    cr_assert(t >= 13922 && t <= 14204, "%s", p->out);
    cr_assert(json_is_false(json_object_get(o, "unbounded")));
    json_decref(o);
    cms_test_proc_free(p);
}

Test(privacy, steps_without_sampling_are_unbounded)
{
    cms_test_proc *p =
        RUN("privacy", "steps", "--q", "0", "--sigma", "1.1", "--epsilon", "1", "--delta", DELTA);
    assert_exit(p, 0);
    char steps[64];
    table_value(p->out, "steps", true, steps);
    cr_assert_str_eq(steps, "unbounded");
    cms_test_proc_free(p);

    p = RUN("privacy", "steps", "--json", "--q", "0", "--sigma", "1.1", "--epsilon", "1", "--delta",
            DELTA);
    assert_exit(p, 0);
    json_t *o = parse_json(p);
    cr_assert(json_is_null(json_object_get(o, "steps")), "%s", p->out);
    cr_assert(json_is_true(json_object_get(o, "unbounded")));
    json_decref(o);
    cms_test_proc_free(p);
}

Test(privacy, a_budget_below_the_floor_fails_clearly)
{
    /* the bound is about 0.1 at 0 steps for delta 1e-5 */
    cms_test_proc *p =
        RUN("privacy", "steps", "--q", Q, "--sigma", "1.1", "--epsilon", "0.01", "--delta", DELTA);
    assert_exit(p, 1);
    cr_assert_not_null(strstr(p->err, "even 0 steps exceed"), "%s", p->err);
    cr_assert_str_eq(p->out, "");
    cms_test_proc_free(p);

    p = RUN("privacy", "sigma", "--q", Q, "--epsilon", "0.01", "--steps", "100", "--delta", DELTA);
    assert_exit(p, 1);
    cr_assert_not_null(strstr(p->err, "floor"), "%s", p->err);
    cms_test_proc_free(p);
}

/* Each bad value exits 2, naming its option and saying what it must be. */
Test(privacy, bad_numbers_are_usage_errors_naming_the_option)
{
    static const struct {
        const char *verb, *opt, *value, *range;
    } cases[] = {
        {"epsilon", "q", "1.5", "[0, 1]"},      {"epsilon", "q", "-0.1", "[0, 1]"},
        {"epsilon", "q", "abc", "[0, 1]"},      {"epsilon", "q", "nan", "[0, 1]"},
        {"epsilon", "q", "0.1x", "[0, 1]"},     {"epsilon", "q", "", "[0, 1]"},
        {"epsilon", "sigma", "0", "> 0"},       {"epsilon", "sigma", "inf", "> 0"},
        {"epsilon", "sigma", "1e999", "> 0"},   {"epsilon", "delta", "1", "(0, 1)"},
        {"epsilon", "delta", "0", "(0, 1)"},    {"epsilon", "steps", "-1", "steps"},
        {"epsilon", "steps", "1.5", "integer"}, {"sigma", "epsilon", "0", "> 0"},
        {"sigma", "epsilon", "NaN", "> 0"},     {"sigma", "tolerance", "1", "(0, 1)"},
        {"steps", "epsilon", "-3", "> 0"},      {"steps", "sigma", "-1", "> 0"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *q = Q, *sigma = "1.1", *steps = "100", *eps = "3", *delta = DELTA,
                   *tol = "1e-4";
        const char *opt = cases[i].opt, *v = cases[i].value;
        if (strcmp(opt, "q") == 0)
            q = v;
        else if (strcmp(opt, "sigma") == 0)
            sigma = v;
        else if (strcmp(opt, "steps") == 0)
            steps = v;
        else if (strcmp(opt, "epsilon") == 0)
            eps = v;
        else if (strcmp(opt, "delta") == 0)
            delta = v;
        else
            tol = v;
        char a1[64], a2[64], a3[64], a4[64];
        cms_test_proc *p;
        snprintf(a1, sizeof a1, "--q=%s", q);
        snprintf(a4, sizeof a4, "--delta=%s", delta);
        if (strcmp(cases[i].verb, "epsilon") == 0) {
            snprintf(a2, sizeof a2, "--sigma=%s", sigma);
            snprintf(a3, sizeof a3, "--steps=%s", steps);
            p = RUN("privacy", "epsilon", a1, a2, a3, a4);
        } else if (strcmp(cases[i].verb, "sigma") == 0) {
            char a5[64];
            snprintf(a2, sizeof a2, "--epsilon=%s", eps);
            snprintf(a3, sizeof a3, "--steps=%s", steps);
            snprintf(a5, sizeof a5, "--tolerance=%s", tol);
            p = RUN("privacy", "sigma", a1, a2, a3, a4, a5);
        } else {
            snprintf(a2, sizeof a2, "--sigma=%s", sigma);
            snprintf(a3, sizeof a3, "--epsilon=%s", eps);
            p = RUN("privacy", "steps", a1, a2, a3, a4);
        }
        cr_assert(p->term_signal == 0 && p->status == 2, "%s --%s=%s: exit %lld\n%s%s",
                  cases[i].verb, opt, v, (long long)p->status, p->out, p->err);
        char flag[32];
        snprintf(flag, sizeof flag, "--%s", opt);
        cr_assert_not_null(strstr(p->err, flag), "%s --%s=%s: %s", cases[i].verb, opt, v, p->err);
        cr_assert_not_null(strstr(p->err, cases[i].range), "%s --%s=%s: %s", cases[i].verb, opt, v,
                           p->err);
        cr_assert_str_eq(p->out, "");
        cms_test_proc_free(p);
    }

    cms_test_proc *p = RUN("privacy", "epsilon", "--q", Q, "--sigma", "1.1", "--steps", "10");
    assert_exit(p, 2);
    cr_assert_not_null(strstr(p->err, "--delta"), "%s", p->err);
    cms_test_proc_free(p);

    p = RUN("privacy", "entropy");
    assert_exit(p, 2);
    cms_test_proc_free(p);
}

Test(privacy, help_works_for_each_verb)
{
    static const char *const verbs[] = {"epsilon", "sigma", "steps"};
    for (size_t i = 0; i < 3; i++) {
        cms_test_proc *p = RUN("privacy", verbs[i], "--help");
        assert_exit(p, 0);
        cr_assert_not_null(strstr(p->out, "usage: "), "%s", p->out);
        cr_assert_not_null(strstr(p->out, "--delta"), "%s", p->out);
        cms_test_proc_free(p);
    }
    cms_test_proc *p = RUN("--help");
    assert_exit(p, 0);
    cr_assert_not_null(strstr(p->out, "\n  privacy "), "%s", p->out);
    cms_test_proc_free(p);
}
