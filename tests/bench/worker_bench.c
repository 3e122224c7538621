/* cms-bench-worker: examples per second of cms-worker's DP-SGD step
 * (services/worker/dpsgd.h) against the same loop without clipping and
 * noise, in the same run, on the same data.
 *
 *   cms-bench-worker [--csv FILE | --rows N --features D] [--sample-rate Q]
 *                    [--noise-multiplier S] [--max-grad-norm C]
 *                    [--learning-rate L] [--phase 1s] [--rounds R] [--seeded]
 *
 * The data: a CSV file as a job's dataset (tests/data/synthetic.csv), or
 * (by default) one generated in memory the way tests/data/gen-synthetic
 * makes its file, larger: features from N(0, 1), labels 1 with probability
 * sigmoid(2 (w . x - 0.5)). Each round runs a fresh private trainer for
 * --phase, then a fresh plain one for as long (the order alternating
 * between rounds, so that neither always runs on a warmer machine); an
 * example counts each time a step samples it. Both draw from libsodium's
 * CSPRNG as a job does (--seeded: the tests' ChaCha20 stream). Prints
 * "key: value" lines: the medians over the rounds of each loop's examples
 * per second and nanoseconds per example, their ratio, and each loop's
 * accuracy on the data after its last round (a check that both trained).
 * A benchmark, not a test: nothing is asserted. Exit status: 0 measured,
 * 1 the data could not be read or a trainer failed, 2 usage error. */
#include "config.h"
#include "dataset.h"
#include "dpsgd.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PROG "cms-bench-worker"
#define MAX_ROUNDS 101
#define CHECK_EVERY 16 /* steps between looks at the clock */

static const cms_option options[] = {
    {"csv", NULL, CMS_OPT_STRING, NULL,
     "a dataset file as cms-worker reads it (e.g. tests/data/synthetic.csv); default: generated",
     CMS_OPT_PUBLIC, false},
    {"rows", NULL, CMS_OPT_INT, "100000", "rows of the generated data (1 to 10000000)",
     CMS_OPT_PUBLIC, false},
    {"features", NULL, CMS_OPT_INT, "8", "features of the generated data (1 to 10000)",
     CMS_OPT_PUBLIC, false},
    {"sample-rate", NULL, CMS_OPT_STRING, "0.05", "q: the Poisson sampling rate, in (0, 1]",
     CMS_OPT_PUBLIC, false},
    {"noise-multiplier", NULL, CMS_OPT_STRING, "1.0", "sigma", CMS_OPT_PUBLIC, false},
    {"max-grad-norm", NULL, CMS_OPT_STRING, "1.0", "C, the clipping norm", CMS_OPT_PUBLIC, false},
    {"learning-rate", NULL, CMS_OPT_STRING, "0.5", "the learning rate", CMS_OPT_PUBLIC, false},
    {"phase", NULL, CMS_OPT_DURATION, "1s", "how long each loop runs per round (10ms to 10m)",
     CMS_OPT_PUBLIC, false},
    {"rounds", NULL, CMS_OPT_INT, "5", "rounds of both loops (1 to 101)", CMS_OPT_PUBLIC, false},
    {"seeded", NULL, CMS_OPT_BOOL, "false",
     "draw from the tests' seeded ChaCha20 stream instead of libsodium's CSPRNG", CMS_OPT_PUBLIC,
     false},
};

static int usage_error(const char *what)
{
    fprintf(stderr, PROG ": %s; try --help\n", what);
    return 2;
}

static bool real(const cms_config *c, const char *name, double *out)
{
    const char *s = cms_config_str(c, name);
    char *end = NULL;
    double v = strtod(s, &end);
    if (end == s || *end != '\0' || !isfinite(v))
        return false;
    *out = v;
    return true;
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int compare(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, compare);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* rows x features as gen-synthetic makes them, from a fixed seed */
static bool generate(size_t rows, size_t features, dpsgd_data *d)
{
    uint8_t seed[DPSGD_SEED_BYTES] = {1};
    dpsgd_rng r;
    d->rows = rows;
    d->features = features;
    d->x = malloc(rows * features * sizeof *d->x);
    d->y = malloc(rows);
    double *w = malloc(features * sizeof *w);
    bool ok = d->x != NULL && d->y != NULL && w != NULL && dpsgd_rng_init_seeded(&r, seed);
    if (ok) {
        for (size_t j = 0; j < features; j++)
            w[j] = dpsgd_rng_gaussian(&r);
        for (size_t i = 0; i < rows; i++) {
            double z = -0.5;
            for (size_t j = 0; j < features; j++) {
                double v = dpsgd_rng_gaussian(&r);
                d->x[i * features + j] = v;
                z += w[j] * v;
            }
            d->y[i] = dpsgd_rng_uniform(&r) < 1.0 / (1.0 + exp(-2.0 * z));
        }
        dpsgd_rng_wipe(&r);
    }
    free(w);
    return ok;
}

typedef struct phase {
    double examples_per_s;
    dpsgd_eval eval;
} phase;

/* A fresh trainer in mode, stepped for seconds. */
static bool run_phase(const dpsgd_data *d, dpsgd_params p, dpsgd_mode mode, double seconds,
                      bool seeded, phase *out)
{
    p.mode = mode;
    dpsgd *t = NULL;
    dpsgd_rng r;
    uint8_t seed[DPSGD_SEED_BYTES] = {7};
    if (dpsgd_create(d, &p, &t) != DPSGD_OK)
        return false;
    bool ok = seeded ? dpsgd_rng_init_seeded(&r, seed) : dpsgd_rng_init_crypto(&r);
    uint64_t examples = 0;
    double start = now_s(), elapsed = 0;
    while (ok) {
        for (int i = 0; i < CHECK_EVERY && ok; i++) {
            dpsgd_batch b;
            ok = dpsgd_step(t, &r, &b) == DPSGD_OK;
            examples += b.size;
        }
        elapsed = now_s() - start;
        if (elapsed >= seconds)
            break;
    }
    if (ok) {
        out->examples_per_s = (double)examples / elapsed;
        dpsgd_evaluate(dpsgd_model_of(t), d, 0, &out->eval);
    }
    dpsgd_rng_wipe(&r);
    dpsgd_destroy(t);
    return ok;
}

int main(int argc, char **argv)
{
    int code = 1;
    cms_config *cfg = NULL;
    dpsgd_data d = {0, 0, NULL, NULL};
    switch (cms_config_parse(options, sizeof options / sizeof options[0], argc, argv, PROG,
                             "examples per second of cms-worker's DP-SGD against plain SGD", NULL,
                             &cfg)) {
    case CMS_CONFIG_OK:
        break;
    case CMS_CONFIG_EXIT_OK:
        return 0;
    case CMS_CONFIG_EXIT_USAGE:
        return 2;
    }
    dpsgd_params p = {.mode = DPSGD_PRIVATE};
    char why[256];
    int64_t rows = cms_config_int(cfg, "rows"), features = cms_config_int(cfg, "features");
    int64_t rounds = cms_config_int(cfg, "rounds"), phase_ms = cms_config_duration_ms(cfg, "phase");
    if (!real(cfg, "sample-rate", &p.sample_rate) ||
        !real(cfg, "noise-multiplier", &p.noise_multiplier) ||
        !real(cfg, "max-grad-norm", &p.max_grad_norm) ||
        !real(cfg, "learning-rate", &p.learning_rate)) {
        code = usage_error("--sample-rate, --noise-multiplier, --max-grad-norm and "
                           "--learning-rate are decimal numbers");
        goto out;
    }
    if (!dpsgd_params_ok(&p, why, sizeof why)) {
        code = usage_error(why);
        goto out;
    }
    if (rows < 1 || rows > 10000000 || features < 1 || features > 10000 || rounds < 1 ||
        rounds > MAX_ROUNDS || phase_ms < 10 || phase_ms > 600000) {
        code = usage_error("--rows, --features, --rounds or --phase is out of its range");
        goto out;
    }
    const char *csv = cms_config_str(cfg, "csv");
    if (csv != NULL) {
        dataset_err e;
        if (dataset_load(csv, NULL, &d, &e) != DATASET_OK) {
            fprintf(stderr, PROG ": %s: %s\n", csv, e.msg);
            goto out;
        }
        printf("dataset: %s (%zu rows, %zu features)\n", csv, d.rows, d.features);
    } else {
        if (!generate((size_t)rows, (size_t)features, &d)) {
            fprintf(stderr, PROG ": out of memory for the data\n");
            goto out;
        }
        printf("dataset: generated (%zu rows, %zu features)\n", d.rows, d.features);
    }
    bool seeded = cms_config_bool(cfg, "seeded");
    printf("sample_rate: %g\nexpected_batch: %g\nnoise_multiplier: %g\nmax_grad_norm: %g\n"
           "learning_rate: %g\nrandomness: %s\nrounds: %lld\nphase_s: %g\n",
           p.sample_rate, p.sample_rate * (double)d.rows, p.noise_multiplier, p.max_grad_norm,
           p.learning_rate, seeded ? "seeded ChaCha20 (tests)" : "libsodium CSPRNG",
           (long long)rounds, (double)phase_ms / 1000);
    double dp[MAX_ROUNDS], plain[MAX_ROUNDS];
    phase last_dp = {0}, last_plain = {0};
    for (int r = 0; r < rounds; r++) {
        phase a, b;
        bool ok;
        if (r % 2 == 0)
            ok = run_phase(&d, p, DPSGD_PRIVATE, (double)phase_ms / 1000, seeded, &a) &&
                 run_phase(&d, p, DPSGD_PLAIN, (double)phase_ms / 1000, seeded, &b);
        else
            ok = run_phase(&d, p, DPSGD_PLAIN, (double)phase_ms / 1000, seeded, &b) &&
                 run_phase(&d, p, DPSGD_PRIVATE, (double)phase_ms / 1000, seeded, &a);
        if (!ok) {
            fprintf(stderr, PROG ": a trainer failed (a learning rate too large?)\n");
            goto out;
        }
        dp[r] = a.examples_per_s;
        plain[r] = b.examples_per_s;
        last_dp = a;
        last_plain = b;
    }
    double dp_med = median(dp, (int)rounds), plain_med = median(plain, (int)rounds);
    printf("dp_sgd_examples_per_s: %.0f\n", dp_med);
    printf("plain_sgd_examples_per_s: %.0f\n", plain_med);
    printf("dp_sgd_ns_per_example: %.1f\n", 1e9 / dp_med);
    printf("plain_sgd_ns_per_example: %.1f\n", 1e9 / plain_med);
    printf("dp_over_plain: %.3f\n", dp_med / plain_med);
    printf("dp_sgd_accuracy: %.3f\n", last_dp.eval.accuracy);
    printf("plain_sgd_accuracy: %.3f\n", last_plain.eval.accuracy);
    code = 0;
out:
    dataset_release(&d);
    cms_config_destroy(cfg);
    return code;
}
