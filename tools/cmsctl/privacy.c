/* cmsctl privacy epsilon, sigma and steps: the privacy accounting of DP-SGD
 * (common/rdp.h) on the command line, with no server.
 *
 * Each verb takes three of sampling rate q, noise multiplier sigma, steps and
 * epsilon, with delta, and answers the fourth:
 *   epsilon  the (epsilon, delta) bound of steps steps, and the Rényi order
 *            that gives it;
 *   sigma    the smallest noise multiplier that keeps steps steps within
 *            epsilon;
 *   steps    the largest number of steps that stays within epsilon.
 * Numbers are read with strtod and checked against the range rdp.h accepts,
 * so that a bad value is a usage error naming the option, never a silent
 * NaN in the arithmetic. */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "ctlout.h"
#include "ctlverb.h"
#include "rdp.h"
#include "verbs.h"

/* The values an option may take. */
typedef enum {
    RANGE_UNIT,      /* [0, 1]: q */
    RANGE_OPEN_UNIT, /* (0, 1): delta, tolerance */
    RANGE_POSITIVE,  /* (0, inf): sigma, epsilon */
} real_range;

static const char *range_text(real_range r)
{
    switch (r) {
    case RANGE_UNIT:
        return "a number in [0, 1]";
    case RANGE_OPEN_UNIT:
        return "a number in (0, 1), ends excluded";
    case RANGE_POSITIVE:
        return "a finite number > 0";
    }
    return "?";
}

static bool in_range(double v, real_range r)
{
    switch (r) {
    case RANGE_UNIT:
        return v >= 0.0 && v <= 1.0;
    case RANGE_OPEN_UNIT:
        return v > 0.0 && v < 1.0;
    case RANGE_POSITIVE:
        return v > 0.0 && isfinite(v);
    }
    return false;
}

/* The STRING option name read as a number in r into *out; CMSCTL_EXIT_OK,
 * else the usage error is printed and its status returned. */
static int real_arg(const char *prog, const cms_config *cfg, const char *name, real_range r,
                    double *out)
{
    const char *text = cms_config_str(cfg, name);
    if (text == NULL)
        return cmsctl_usage(prog, "--%s is needed: %s", name, range_text(r));
    char *end = NULL;
    errno = 0;
    double v = strtod(text, &end);
    /* NaN fails every comparison of in_range; overflow and underflow are
     * refused rather than rounded to inf or 0 */
    if (end == text || *end != '\0' || errno == ERANGE || !in_range(v, r))
        return cmsctl_usage(prog, "--%s must be %s, not \"%.40s\"", name, range_text(r), text);
    *out = v;
    return CMSCTL_EXIT_OK;
}

/* A JSON number, or null for what is not finite (jansson takes no inf or
 * NaN). */
static json_t *real_or_null(double v)
{
    return isfinite(v) ? json_real(v) : json_null();
}

/* A "key: value" line of the table: 6 significant digits, enough to feed
 * back into another verb. */
static void print_real(const char *key, double v)
{
    if (isfinite(v))
        printf("%s: %.6g\n", key, v);
    else
        printf("%s: %s\n", key, v > 0 ? "inf" : "-");
}

// clang-format off
#define OPT_Q {"q", NULL, CMS_OPT_STRING, NULL, "sampling rate: the chance of each example to be in a batch, in [0, 1] (batch size / dataset size)", CMS_OPT_PUBLIC, true}
#define OPT_SIGMA {"sigma", NULL, CMS_OPT_STRING, NULL, "noise multiplier: the noise's standard deviation over the clipping norm, > 0", CMS_OPT_PUBLIC, true}
#define OPT_STEPS {"steps", NULL, CMS_OPT_INT, NULL, "number of training steps (batches), >= 0", CMS_OPT_PUBLIC, true}
#define OPT_EPSILON {"epsilon", NULL, CMS_OPT_STRING, NULL, "privacy budget epsilon, > 0", CMS_OPT_PUBLIC, true}
#define OPT_DELTA {"delta", NULL, CMS_OPT_STRING, NULL, "delta of the (epsilon, delta) guarantee, in (0, 1); usually below 1 / dataset size", CMS_OPT_PUBLIC, true}
// clang-format on

static const cms_option epsilon_options[] = {
    OPT_Q, OPT_SIGMA, OPT_STEPS, OPT_DELTA, CMSCTL_OUT_OPTIONS,
};

static const cms_option sigma_options[] = {
    OPT_Q,
    OPT_EPSILON,
    OPT_STEPS,
    OPT_DELTA,
    {"tolerance", NULL, CMS_OPT_STRING, "1e-4",
     "relative precision of the search, in (0, 1): sigma * (1 - tolerance) would exceed epsilon",
     CMS_OPT_PUBLIC, false},
    CMSCTL_OUT_OPTIONS,
};

static const cms_option steps_options[] = {
    OPT_Q, OPT_SIGMA, OPT_EPSILON, OPT_DELTA, CMSCTL_OUT_OPTIONS,
};

/* What every verb checks first: no positional argument, the format. */
static int common_args(const char *prog, const cms_config *cfg, cmsctl_out_format *fmt)
{
    if (cms_config_npositional(cfg) > 0)
        return cmsctl_usage(prog, "unexpected argument \"%.40s\"", cms_config_positional(cfg, 0));
    return cmsctl_out_format_get(prog, cfg, fmt);
}

static int steps_arg(const char *prog, const cms_config *cfg, int64_t *out)
{
    return cmsctl_int_arg(prog, cfg, "steps", 0, INT64_MAX, out) ? CMSCTL_EXIT_OK
                                                                 : CMSCTL_EXIT_USAGE;
}

/* cms_rdp_eps, failing (exit 1) with one message if the accountant refuses. */
static int account(const char *prog, double q, double sigma, int64_t steps, double delta,
                   double *eps, double *order)
{
    return cms_rdp_eps(q, sigma, steps, delta, eps, order)
               ? CMSCTL_EXIT_OK
               : cmsctl_fail(prog, "the accountant refused these values");
}

/* The best order of an epsilon: none (NaN in a table, null in JSON) when
 * epsilon is not finite. */
static double order_of(double eps, double order)
{
    return isfinite(eps) ? order : NAN;
}

#define HELP_TAIL                                                                                  \
    "The accounting is Opacus's RDP accountant (Mironov et al. 2019) for the\n"                    \
    "Poisson-subsampled Gaussian mechanism, over its default orders, with the\n"                   \
    "conversion to (epsilon, delta) of Balle et al. 2020 (lower than TF Privacy's).\n"             \
    "Works offline. Exit status: 0 done, 1 no answer, 2 usage error."

/* ------------------------------------------------------------------------ */
/* cmsctl privacy epsilon */

static int epsilon_main(int argc, char **argv)
{
    static const char prog[] = "cmsctl privacy epsilon";
    cms_config *cfg = NULL;
    cmsctl_out_format fmt = CMSCTL_OUT_TABLE;
    double q = 0, sigma = 0, delta = 0, eps = 0, order = 0;
    int64_t steps = 0;
    int status = cmsctl_parse(
        epsilon_options, CMSCTL_NOPTS(epsilon_options), argc, argv, prog,
        "the epsilon that DP-SGD training spends",
        "--q Q --sigma S --steps T --delta D\n\n"
        "Prints the epsilon of T steps at sampling rate Q and noise multiplier S, at\n"
        "delta D, and the Rényi order that gives it (epsilon: E, order: A lines), or\n"
        "with -o json {\"epsilon\", \"order\", \"q\", \"sigma\", \"steps\", \"delta\"}\n"
        "(epsilon and order null when no order gives a finite bound).\n" HELP_TAIL,
        &cfg);
    if (status != CMSCTL_EXIT_OK)
        goto out;
    if ((status = common_args(prog, cfg, &fmt)) != CMSCTL_EXIT_OK ||
        (status = real_arg(prog, cfg, "q", RANGE_UNIT, &q)) != CMSCTL_EXIT_OK ||
        (status = real_arg(prog, cfg, "sigma", RANGE_POSITIVE, &sigma)) != CMSCTL_EXIT_OK ||
        (status = steps_arg(prog, cfg, &steps)) != CMSCTL_EXIT_OK ||
        (status = real_arg(prog, cfg, "delta", RANGE_OPEN_UNIT, &delta)) != CMSCTL_EXIT_OK)
        goto out;
    if ((status = account(prog, q, sigma, steps, delta, &eps, &order)) != CMSCTL_EXIT_OK)
        goto out;
    if (fmt == CMSCTL_OUT_TABLE) {
        print_real("epsilon", eps);
        print_real("order", order_of(eps, order));
    } else {
        status = cmsctl_out_emit(prog, fmt,
                                 json_pack("{s:o, s:o, s:f, s:f, s:I, s:f}", "epsilon",
                                           real_or_null(eps), "order",
                                           real_or_null(order_of(eps, order)), "q", q, "sigma",
                                           sigma, "steps", (json_int_t)steps, "delta", delta),
                                 NULL);
    }
out:
    cms_config_destroy(cfg);
    return status == CMSCTL_PARSE_DONE ? CMSCTL_EXIT_OK : status;
}

/* ------------------------------------------------------------------------ */
/* cmsctl privacy sigma */

static int sigma_main(int argc, char **argv)
{
    static const char prog[] = "cmsctl privacy sigma";
    cms_config *cfg = NULL;
    cmsctl_out_format fmt = CMSCTL_OUT_TABLE;
    double q = 0, target = 0, delta = 0, tol = 0, sigma = 0, eps = 0, order = 0;
    int64_t steps = 0;
    int status = cmsctl_parse(
        sigma_options, CMSCTL_NOPTS(sigma_options), argc, argv, prog,
        "the noise multiplier DP-SGD needs for a privacy budget",
        "--q Q --epsilon E --steps T --delta D [--tolerance TOL]\n\n"
        "Prints the smallest noise multiplier whose T steps at sampling rate Q stay\n"
        "within epsilon E at delta D (searched between 0.001 and 1e6, to\n"
        "relative precision TOL), then the epsilon it spends and the order that gives\n"
        "it (sigma, spent_epsilon, order lines), or with -o json {\"sigma\",\n"
        "\"spent_epsilon\", \"order\", \"q\", \"epsilon\", \"steps\", \"delta\", \"tolerance\"}.\n"
        "Fails (exit 1) when no noise reaches E: the bound has a floor above 0 (about\n"
        "0.1 at delta 1e-5).\n" HELP_TAIL,
        &cfg);
    if (status != CMSCTL_EXIT_OK)
        goto out;
    if ((status = common_args(prog, cfg, &fmt)) != CMSCTL_EXIT_OK ||
        (status = real_arg(prog, cfg, "q", RANGE_UNIT, &q)) != CMSCTL_EXIT_OK ||
        (status = real_arg(prog, cfg, "epsilon", RANGE_POSITIVE, &target)) != CMSCTL_EXIT_OK ||
        (status = steps_arg(prog, cfg, &steps)) != CMSCTL_EXIT_OK ||
        (status = real_arg(prog, cfg, "delta", RANGE_OPEN_UNIT, &delta)) != CMSCTL_EXIT_OK ||
        (status = real_arg(prog, cfg, "tolerance", RANGE_OPEN_UNIT, &tol)) != CMSCTL_EXIT_OK)
        goto out;
    if (!cms_rdp_sigma_for(q, steps, delta, target, tol, &sigma)) {
        status = cmsctl_fail(prog,
                             "no noise multiplier up to %g keeps %lld steps within epsilon %g at "
                             "delta %g: the budget is below the bound's floor",
                             CMS_RDP_SIGMA_MAX, (long long)steps, target, delta);
        goto out;
    }
    if ((status = account(prog, q, sigma, steps, delta, &eps, &order)) != CMSCTL_EXIT_OK)
        goto out;
    if (fmt == CMSCTL_OUT_TABLE) {
        print_real("sigma", sigma);
        print_real("spent_epsilon", eps);
        print_real("order", order_of(eps, order));
    } else {
        status =
            cmsctl_out_emit(prog, fmt,
                            json_pack("{s:f, s:o, s:o, s:f, s:f, s:I, s:f, s:f}", "sigma", sigma,
                                      "spent_epsilon", real_or_null(eps), "order",
                                      real_or_null(order_of(eps, order)), "q", q, "epsilon", target,
                                      "steps", (json_int_t)steps, "delta", delta, "tolerance", tol),
                            NULL);
    }
out:
    cms_config_destroy(cfg);
    return status == CMSCTL_PARSE_DONE ? CMSCTL_EXIT_OK : status;
}

/* ------------------------------------------------------------------------ */
/* cmsctl privacy steps */

static int steps_main(int argc, char **argv)
{
    static const char prog[] = "cmsctl privacy steps";
    cms_config *cfg = NULL;
    cmsctl_out_format fmt = CMSCTL_OUT_TABLE;
    double q = 0, sigma = 0, budget = 0, delta = 0, eps = 0, order = 0;
    int status = cmsctl_parse(
        steps_options, CMSCTL_NOPTS(steps_options), argc, argv, prog,
        "how many DP-SGD steps a privacy budget allows",
        "--q Q --sigma S --epsilon E --delta D\n\n"
        "Prints the largest number of steps at sampling rate Q and noise multiplier S\n"
        "that stays within epsilon E at delta D (\"unbounded\" when every number does),\n"
        "then the epsilon those steps spend and its order (steps, spent_epsilon, order\n"
        "lines), or with -o json {\"steps\" (null when unbounded), \"unbounded\",\n"
        "\"spent_epsilon\", \"order\", \"q\", \"sigma\", \"epsilon\", \"delta\"}. Fails (exit 1)\n"
        "when even 0 steps exceed E: the bound has a floor above 0.\n" HELP_TAIL,
        &cfg);
    if (status != CMSCTL_EXIT_OK)
        goto out;
    if ((status = common_args(prog, cfg, &fmt)) != CMSCTL_EXIT_OK ||
        (status = real_arg(prog, cfg, "q", RANGE_UNIT, &q)) != CMSCTL_EXIT_OK ||
        (status = real_arg(prog, cfg, "sigma", RANGE_POSITIVE, &sigma)) != CMSCTL_EXIT_OK ||
        (status = real_arg(prog, cfg, "epsilon", RANGE_POSITIVE, &budget)) != CMSCTL_EXIT_OK ||
        (status = real_arg(prog, cfg, "delta", RANGE_OPEN_UNIT, &delta)) != CMSCTL_EXIT_OK)
        goto out;
    /* the arguments are checked: -1 can only mean the budget is below the
     * bound at 0 steps */
    int64_t steps = cms_rdp_max_steps(q, sigma, delta, budget, NULL);
    if (steps < 0) {
        double floor_eps = 0, floor_order = 0;
        if (cms_rdp_eps(q, sigma, 0, delta, &floor_eps, &floor_order))
            status = cmsctl_fail(prog,
                                 "even 0 steps exceed epsilon %g at delta %g: the bound is "
                                 "already %.6g before any step",
                                 budget, delta, floor_eps);
        else
            status = cmsctl_fail(prog, "the accountant refused these values");
        goto out;
    }
    bool unbounded = steps == INT64_MAX;
    if (unbounded) {
        eps = NAN;
        order = NAN;
    } else if ((status = account(prog, q, sigma, steps, delta, &eps, &order)) != CMSCTL_EXIT_OK) {
        goto out;
    }
    if (fmt == CMSCTL_OUT_TABLE) {
        if (unbounded)
            printf("steps: unbounded\n");
        else
            printf("steps: %lld\n", (long long)steps);
        print_real("spent_epsilon", eps);
        print_real("order", order_of(eps, order));
    } else {
        status =
            cmsctl_out_emit(prog, fmt,
                            json_pack("{s:o, s:b, s:o, s:o, s:f, s:f, s:f, s:f}", "steps",
                                      unbounded ? json_null() : json_integer((json_int_t)steps),
                                      "unbounded", unbounded, "spent_epsilon", real_or_null(eps),
                                      "order", real_or_null(order_of(eps, order)), "q", q, "sigma",
                                      sigma, "epsilon", budget, "delta", delta),
                            NULL);
    }
out:
    cms_config_destroy(cfg);
    return status == CMSCTL_PARSE_DONE ? CMSCTL_EXIT_OK : status;
}

int cmsctl_privacy_main(int argc, char **argv)
{
    static const char prog[] = "cmsctl privacy";
    const char *sub = argc >= 2 ? argv[1] : "";
    if (strcmp(sub, "epsilon") == 0)
        return epsilon_main(argc - 1, argv + 1);
    if (strcmp(sub, "sigma") == 0)
        return sigma_main(argc - 1, argv + 1);
    if (strcmp(sub, "steps") == 0)
        return steps_main(argc - 1, argv + 1);
    return cmsctl_usage(prog, "unknown privacy verb \"%s\": want epsilon, sigma or steps", sub);
}
