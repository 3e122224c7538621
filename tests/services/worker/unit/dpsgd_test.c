/* cms-worker's trainer (services/worker/dpsgd.h) held to what the
 * accountant assumes of DP-SGD: Gaussian noise of standard deviation
 * sigma * C on each coordinate of the summed gradient, every per-example
 * gradient clipped to C, Poisson sampling at rate q, and the sum divided by
 * the expected batch q * N; then that it learns (on tests/data's synthetic
 * set) and that a seed makes it repeat. The statistical tests draw from
 * fixed seeds, so they pass or fail the same way on every run; their bounds
 * are 4 standard errors (6 for the maximum over many indices). */
#include "dataset.h"
#include "dpsgd.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifndef CMS_TEST_DATA_DIR
#error CMS_TEST_DATA_DIR must name tests/data
#endif

static void seed_of(uint8_t seed[DPSGD_SEED_BYTES], uint8_t v)
{
    for (size_t i = 0; i < DPSGD_SEED_BYTES; i++)
        seed[i] = (uint8_t)(v + 13 * i);
}

static void seeded(dpsgd_rng *r, uint8_t v)
{
    uint8_t seed[DPSGD_SEED_BYTES];
    seed_of(seed, v);
    cr_assert(dpsgd_rng_init_seeded(r, seed));
}

static dpsgd_data synthetic(void)
{
    dpsgd_data d;
    dataset_err e;
    dataset_code c = dataset_load(CMS_TEST_DATA_DIR "/synthetic.csv", NULL, &d, &e);
    cr_assert_eq(c, DATASET_OK, "synthetic.csv: %s", e.msg);
    cr_assert_eq(d.rows, 2000);
    cr_assert_eq(d.features, 8);
    return d;
}

static double norm(const double *v, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += v[i] * v[i];
    return sqrt(s);
}

/* ---- randomness ---- */

Test(rng, a_seed_gives_one_stream_and_another_seed_another)
{
    dpsgd_rng a, b, c;
    seeded(&a, 1);
    seeded(&b, 1);
    seeded(&c, 2);
    bool differs = false;
    /* past several refills of the buffer */
    for (int i = 0; i < 5000; i++) {
        uint64_t x = dpsgd_rng_u64(&a), y = dpsgd_rng_u64(&b), z = dpsgd_rng_u64(&c);
        cr_assert_eq(x, y, "draw %d", i);
        differs = differs || x != z;
    }
    cr_assert(differs);
    dpsgd_rng_wipe(&a);
    dpsgd_rng_wipe(&b);
    dpsgd_rng_wipe(&c);
}

Test(rng, the_crypto_source_does_not_repeat)
{
    dpsgd_rng a, b;
    cr_assert(dpsgd_rng_init_crypto(&a));
    cr_assert(dpsgd_rng_init_crypto(&b));
    int same = 0;
    for (int i = 0; i < 1000; i++)
        same += dpsgd_rng_u64(&a) == dpsgd_rng_u64(&b);
    cr_assert_eq(same, 0);
    dpsgd_rng_wipe(&a);
    dpsgd_rng_wipe(&b);
}

Test(rng, uniforms_are_in_0_1_on_53_bits_with_mean_one_half)
{
    dpsgd_rng r;
    seeded(&r, 3);
    const int n = 200000;
    double sum = 0;
    for (int i = 0; i < n; i++) {
        double u = dpsgd_rng_uniform(&r);
        cr_assert(u >= 0.0 && u < 1.0, "%g", u);
        cr_assert_eq(ldexp(u, 53), floor(ldexp(u, 53)), "%a is not on the 2^-53 grid", u);
        sum += u;
    }
    /* the mean of n uniforms: sd sqrt(1/12 / n) */
    cr_assert_lt(fabs(sum / n - 0.5), 4 * sqrt(1.0 / 12 / n));
    dpsgd_rng_wipe(&r);
}

/* ---- noise ---- */

/* The noise a step adds, on a zero sum: each coordinate N(0, (sigma C)^2),
 * independent of its neighbour. */
Test(noise, on_a_zero_sum_it_has_mean_0_and_sd_sigma_times_c)
{
    enum { N = 100000 };
    const double sigma = 1.3, c = 0.7, sd = sigma * c;
    double *v = calloc(N, sizeof *v);
    cr_assert_not_null(v);
    dpsgd_rng r;
    seeded(&r, 4);
    dpsgd_add_noise(&r, v, N, sigma, c);
    double sum = 0, sq = 0, lag = 0;
    int within = 0;
    for (size_t i = 0; i < N; i++) {
        sum += v[i];
        within += fabs(v[i]) <= sd;
        if (i > 0)
            lag += v[i] * v[i - 1];
    }
    double mean = sum / N;
    for (size_t i = 0; i < N; i++)
        sq += (v[i] - mean) * (v[i] - mean);
    double s = sqrt(sq / (N - 1));
    cr_assert_lt(fabs(mean), 4 * sd / sqrt(N), "mean %g", mean);
    /* the sample sd of n normals: standard error sd / sqrt(2 n) */
    cr_assert_lt(fabs(s - sd), 4 * sd / sqrt(2.0 * N), "sd %g, want %g", s, sd);
    /* Gaussian, not merely of that variance: 68.27% within one sd */
    double p = 0.682689492137, share = (double)within / N;
    cr_assert_lt(fabs(share - p), 4 * sqrt(p * (1 - p) / N), "%g within one sd", share);
    /* neighbours uncorrelated */
    double corr = lag / (N - 1) / (sd * sd);
    cr_assert_lt(fabs(corr), 4 / sqrt(N), "lag-1 correlation %g", corr);
    free(v);
    dpsgd_rng_wipe(&r);
}

Test(noise, sigma_0_adds_nothing)
{
    double v[3] = {1, -2, 3};
    dpsgd_rng r;
    seeded(&r, 5);
    dpsgd_add_noise(&r, v, 3, 0.0, 1.0);
    cr_assert(v[0] == 1 && v[1] == -2 && v[2] == 3);
    dpsgd_rng_wipe(&r);
}

/* ---- clipping ---- */

Test(clip, a_vector_above_c_gets_norm_c_and_keeps_its_direction)
{
    double g[4] = {3, -4, 12, 0}, orig[4];
    memcpy(orig, g, sizeof g);
    double f = dpsgd_clip(g, 4, 1.0);
    cr_assert_float_eq(f, 1.0 / 13, 1e-15);
    cr_assert_leq(norm(g, 4), 1.0 + 1e-12);
    cr_assert_float_eq(norm(g, 4), 1.0, 1e-12);
    for (int i = 0; i < 4; i++)
        cr_assert_float_eq(g[i], orig[i] / 13, 1e-15);
}

Test(clip, a_vector_within_c_is_left_exactly_as_it_is)
{
    double g[3] = {0.1, -0.2, 0.3}, orig[3];
    memcpy(orig, g, sizeof g);
    cr_assert_eq(dpsgd_clip(g, 3, 1.0), 1.0);
    cr_assert_eq(memcmp(g, orig, sizeof g), 0);
    double at[2] = {0.6, 0.8}; /* norm exactly 1 */
    cr_assert_eq(dpsgd_clip(at, 2, 1.0), 1.0);
    cr_assert(at[0] == 0.6 && at[1] == 0.8);
}

/* Every per-example gradient a step would sum, at models far from 0 (so
 * that most gradients are large): none exceeds C, each is the clipped
 * logistic gradient, and one already within C is unchanged. */
Test(clip, no_clipped_example_gradient_exceeds_c)
{
    dpsgd_data d = synthetic();
    double w[8], g[9], raw[9];
    dpsgd_model m = {8, w, 0};
    dpsgd_rng r;
    seeded(&r, 6);
    const double cs[] = {0.01, 0.5, 1.0, 3.0};
    size_t clipped = 0, unchanged = 0;
    for (int model = 0; model < 5; model++) {
        for (int j = 0; j < 8; j++)
            w[j] = 4 * dpsgd_rng_gaussian(&r);
        m.bias = dpsgd_rng_gaussian(&r);
        for (size_t k = 0; k < sizeof cs / sizeof cs[0]; k++) {
            for (size_t i = 0; i < d.rows; i++) {
                const double *x = d.x + i * 8;
                dpsgd_clipped_grad(&m, x, d.y[i], cs[k], g);
                cr_assert_leq(norm(g, 9), cs[k] + 1e-12, "row %zu, C %g: |g| = %.17g", i, cs[k],
                              norm(g, 9));
                dpsgd_example_grad(&m, x, d.y[i], raw);
                if (norm(raw, 9) <= cs[k]) {
                    cr_assert_eq(memcmp(g, raw, sizeof g), 0, "row %zu changed within C", i);
                    unchanged++;
                } else {
                    /* the same as clipping the gradient itself */
                    double f = dpsgd_clip(raw, 9, cs[k]);
                    cr_assert_lt(f, 1.0);
                    for (int j = 0; j < 9; j++)
                        cr_assert_float_eq(g[j], raw[j], 1e-12 * cs[k]);
                    clipped++;
                }
            }
        }
    }
    cr_assert_gt(clipped, 1000, "the test clips (%zu)", clipped);
    cr_assert_gt(unchanged, 1000, "the test has gradients within C (%zu)", unchanged);
    dataset_release(&d);
    dpsgd_rng_wipe(&r);
}

Test(clip, the_example_gradient_is_that_of_the_logistic_loss)
{
    /* at w = 0, b = 0: p = 1/2, so the gradient is (1/2 - y) (x, 1) */
    double w[2] = {0, 0}, x[2] = {2, -3}, g[3];
    dpsgd_model m = {2, w, 0};
    dpsgd_example_grad(&m, x, 1, g);
    cr_assert_float_eq(g[0], -1.0, 1e-15);
    cr_assert_float_eq(g[1], 1.5, 1e-15);
    cr_assert_float_eq(g[2], -0.5, 1e-15);
    /* against a central difference of the loss, at another point */
    double w2[2] = {0.3, -0.7}, xx[2] = {1.5, 0.25}, h = 1e-6;
    dpsgd_model m2 = {2, w2, 0.2};
    dpsgd_example_grad(&m2, xx, 0, g);
    for (int j = 0; j < 3; j++) {
        double *p = j < 2 ? &w2[j] : &m2.bias, keep = *p, l[2];
        for (int s = 0; s < 2; s++) {
            *p = keep + (s ? h : -h);
            double z = w2[0] * xx[0] + w2[1] * xx[1] + m2.bias;
            l[s] = log1p(exp(z)); /* y = 0 */
        }
        *p = keep;
        cr_assert_float_eq(g[j], (l[1] - l[0]) / (2 * h), 1e-8, "coordinate %d", j);
    }
}

/* ---- Poisson sampling ---- */

Test(sample, batches_vary_around_q_n_and_every_example_is_taken_at_rate_q)
{
    enum { N = 2000, STEPS = 20000 };
    const double q = 0.05;
    uint32_t *idx = calloc(N, sizeof *idx);
    unsigned *taken = calloc(N, sizeof *taken);
    cr_assert(idx && taken);
    dpsgd_rng r;
    seeded(&r, 7);
    double sum = 0, sq = 0;
    size_t lo = N, hi = 0;
    for (int s = 0; s < STEPS; s++) {
        size_t n = dpsgd_sample(&r, N, q, idx);
        for (size_t i = 0; i < n; i++) {
            cr_assert_lt(idx[i], N);
            cr_assert(i == 0 || idx[i] > idx[i - 1], "ascending and distinct");
            taken[idx[i]]++;
        }
        sum += (double)n;
        sq += (double)n * (double)n;
        lo = n < lo ? n : lo;
        hi = n > hi ? n : hi;
    }
    double mean = sum / STEPS, var = sq / STEPS - mean * mean;
    double want = q * N, want_var = N * q * (1 - q);
    cr_assert_lt(fabs(mean - want), 4 * sqrt(want_var / STEPS), "mean batch %g, want %g", mean,
                 want);
    /* the sample variance of near-normal sizes: standard error var sqrt(2 / steps) */
    cr_assert_lt(fabs(var - want_var), 4 * want_var * sqrt(2.0 / STEPS), "variance %g, want %g",
                 var, want_var);
    cr_assert_lt(lo, hi, "the batch size varies");
    cr_assert_lt(lo, 80);
    cr_assert_gt(hi, 120);
    /* each index Binomial(STEPS, q), the first and the last too */
    double each = STEPS * q, each_sd = sqrt(STEPS * q * (1 - q));
    for (size_t i = 0; i < N; i++)
        cr_assert_lt(fabs(taken[i] - each), 6 * each_sd, "index %zu taken %u times", i, taken[i]);
    free(idx);
    free(taken);
    dpsgd_rng_wipe(&r);
}

Test(sample, rate_1_takes_all_and_a_tiny_rate_almost_none)
{
    uint32_t idx[100];
    dpsgd_rng r;
    seeded(&r, 8);
    cr_assert_eq(dpsgd_sample(&r, 100, 1.0, idx), 100);
    for (uint32_t i = 0; i < 100; i++)
        cr_assert_eq(idx[i], i);
    size_t total = 0;
    for (int s = 0; s < 1000; s++)
        total += dpsgd_sample(&r, 100, 1e-9, idx);
    cr_assert_eq(total, 0);
    dpsgd_rng_wipe(&r);
}

/* ---- the step ---- */

static dpsgd *trainer(const dpsgd_data *d, double q, double sigma, double c, double lr,
                      dpsgd_mode mode)
{
    dpsgd_params p = {q, sigma, c, lr, mode};
    dpsgd *t = NULL;
    cr_assert_eq(dpsgd_create(d, &p, &t), DPSGD_OK);
    return t;
}

/* One step from 0: w = -lr / (q N) (sum of the clipped gradients of the
 * sample + sigma C Z), Z the source's normals drawn after the sample. */
static void check_one_step(double q, double sigma)
{
    dpsgd_data d = synthetic();
    const double c = 0.5, lr = 0.8;
    dpsgd *t = trainer(&d, q, sigma, c, lr, DPSGD_PRIVATE);
    dpsgd_rng r, again;
    seeded(&r, 9);
    seeded(&again, 9);
    dpsgd_batch b;
    cr_assert_eq(dpsgd_step(t, &r, &b), DPSGD_OK);

    uint32_t *idx = calloc(d.rows, sizeof *idx);
    cr_assert_not_null(idx);
    size_t n = dpsgd_sample(&again, d.rows, q, idx);
    cr_assert_eq(n, b.size);
    double zero_w[8] = {0}, g[9], sum[9] = {0};
    dpsgd_model zero = {8, zero_w, 0};
    for (size_t i = 0; i < n; i++) {
        dpsgd_clipped_grad(&zero, d.x + (size_t)idx[i] * 8, d.y[idx[i]], c, g);
        for (int j = 0; j < 9; j++)
            sum[j] += g[j];
    }
    for (int j = 0; j < 9; j++)
        sum[j] += sigma * c * dpsgd_rng_gaussian(&again);
    const dpsgd_model *m = dpsgd_model_of(t);
    double scale = lr / (q * (double)d.rows);
    for (int j = 0; j < 8; j++)
        cr_assert_float_eq(m->w[j], -scale * sum[j], 1e-12, "w[%d]", j);
    cr_assert_float_eq(m->bias, -scale * sum[8], 1e-12);
    /* at w = 0 every loss is log 2 */
    cr_assert_float_eq(b.loss, log(2.0), 1e-12);
    free(idx);
    dpsgd_destroy(t);
    dataset_release(&d);
    dpsgd_rng_wipe(&r);
    dpsgd_rng_wipe(&again);
}

Test(step, is_the_clipped_sum_plus_noise_over_the_expected_batch)
{
    check_one_step(1.0, 0.0);
    check_one_step(1.0, 1.1);
    check_one_step(0.05, 1.1); /* divided by q N, not by the batch's own size */
}

Test(step, an_empty_batch_still_adds_its_noise)
{
    double x[2] = {1, 1};
    uint8_t y[2] = {0, 1};
    dpsgd_data d = {2, 1, x, y};
    dpsgd *t = trainer(&d, 1e-12, 2.0, 1.0, 1.0, DPSGD_PRIVATE);
    dpsgd_rng r;
    seeded(&r, 10);
    dpsgd_batch b;
    cr_assert_eq(dpsgd_step(t, &r, &b), DPSGD_OK);
    cr_assert_eq(b.size, 0);
    cr_assert_eq(b.loss, 0);
    cr_assert_neq(dpsgd_model_of(t)->w[0], 0.0, "noise moved the model");
    dpsgd_destroy(t);
    dpsgd_rng_wipe(&r);
}

Test(step, the_plain_loop_neither_clips_nor_adds_noise)
{
    dpsgd_data d = synthetic();
    const double lr = 0.3;
    dpsgd *t = trainer(&d, 1.0, 5.0, 0.001, lr, DPSGD_PLAIN);
    dpsgd_rng r;
    seeded(&r, 11);
    cr_assert_eq(dpsgd_step(t, &r, NULL), DPSGD_OK);
    double zero_w[8] = {0}, g[9], sum[9] = {0};
    dpsgd_model zero = {8, zero_w, 0};
    for (size_t i = 0; i < d.rows; i++) {
        dpsgd_example_grad(&zero, d.x + i * 8, d.y[i], g);
        for (int j = 0; j < 9; j++)
            sum[j] += g[j];
    }
    const dpsgd_model *m = dpsgd_model_of(t);
    for (int j = 0; j < 8; j++)
        cr_assert_float_eq(m->w[j], -lr / (double)d.rows * sum[j], 1e-12);
    dpsgd_destroy(t);
    dataset_release(&d);
    dpsgd_rng_wipe(&r);
}

Test(step, a_model_that_is_no_longer_finite_is_reported)
{
    double x[1] = {1e300};
    uint8_t y[1] = {1};
    dpsgd_data d = {1, 1, x, y};
    dpsgd *t = trainer(&d, 1.0, 0.0, 1.0, 1e10, DPSGD_PLAIN);
    dpsgd_rng r;
    seeded(&r, 12);
    cr_assert_eq(dpsgd_step(t, &r, NULL), DPSGD_EDIVERGED);
    dpsgd_destroy(t);
    dpsgd_rng_wipe(&r);
}

Test(step, bad_parameters_are_refused)
{
    double x[1] = {1};
    uint8_t y[1] = {1};
    dpsgd_data d = {1, 1, x, y};
    const dpsgd_params bad[] = {
        {0, 1, 1, 1, DPSGD_PRIVATE},          {1.5, 1, 1, 1, DPSGD_PRIVATE},
        {NAN, 1, 1, 1, DPSGD_PRIVATE},        {0.5, -1, 1, 1, DPSGD_PRIVATE},
        {0.5, INFINITY, 1, 1, DPSGD_PRIVATE}, {0.5, 1, 0, 1, DPSGD_PRIVATE},
        {0.5, 1, 1, 0, DPSGD_PRIVATE},        {0.5, 1, 1, NAN, DPSGD_PRIVATE},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char why[128] = "";
        dpsgd *t = NULL;
        cr_assert_not(dpsgd_params_ok(&bad[i], why, sizeof why), "case %zu", i);
        cr_assert_gt(strlen(why), 0);
        cr_assert_eq(dpsgd_create(&d, &bad[i], &t), DPSGD_EINVAL, "case %zu", i);
    }
    dpsgd_params ok = {0.5, 1, 1, 1, DPSGD_PRIVATE};
    dpsgd_data empty = {0, 1, x, y};
    dpsgd *t = NULL;
    cr_assert_eq(dpsgd_create(&empty, &ok, &t), DPSGD_EINVAL);
}

/* ---- training ---- */

static double majority_rate(const dpsgd_data *d)
{
    size_t ones = 0;
    for (size_t i = 0; i < d->rows; i++)
        ones += d->y[i];
    double p = (double)ones / (double)d->rows;
    return p > 0.5 ? p : 1 - p;
}

static dpsgd_eval train(const dpsgd_data *d, dpsgd_mode mode, uint8_t seed, int steps,
                        double *w_out)
{
    dpsgd *t = trainer(d, 0.05, 1.0, 1.0, 0.5, mode);
    dpsgd_rng r;
    seeded(&r, seed);
    size_t examples = 0;
    for (int s = 0; s < steps; s++) {
        dpsgd_batch b;
        cr_assert_eq(dpsgd_step(t, &r, &b), DPSGD_OK);
        examples += b.size;
    }
    cr_assert_gt(examples, (size_t)(0.9 * 0.05 * 2000 * steps));
    dpsgd_eval e;
    dpsgd_evaluate(dpsgd_model_of(t), d, 0, &e);
    cr_assert_eq(e.rows, d->rows);
    if (w_out != NULL)
        memcpy(w_out, dpsgd_model_of(t)->w, 8 * sizeof *w_out);
    dpsgd_destroy(t);
    dpsgd_rng_wipe(&r);
    return e;
}

/* sigma 1, C 1, q 0.05 (a batch of 100 expected), 400 steps (10 epochs) */
Test(train, dp_sgd_on_the_synthetic_set_beats_the_constant_predictor_clearly)
{
    dpsgd_data d = synthetic();
    double base = majority_rate(&d);
    dpsgd_eval dp = train(&d, DPSGD_PRIVATE, 13, 400, NULL);
    dpsgd_eval plain = train(&d, DPSGD_PLAIN, 13, 400, NULL);
    cr_log_info("majority %.3f; DP-SGD accuracy %.3f loss %.3f; plain accuracy %.3f loss %.3f",
                base, dp.accuracy, dp.loss, plain.accuracy, plain.loss);
    cr_assert_geq(dp.accuracy, base + 0.15, "DP-SGD %.3f against the majority's %.3f", dp.accuracy,
                  base);
    cr_assert_lt(dp.loss, log(2.0), "better than the untrained model");
    cr_assert_geq(plain.accuracy, base + 0.15);
    dataset_release(&d);
}

Test(train, a_seed_repeats_a_run_and_another_seed_does_not)
{
    dpsgd_data d = synthetic();
    double a[8], b[8], c[8];
    (void)train(&d, DPSGD_PRIVATE, 21, 50, a);
    (void)train(&d, DPSGD_PRIVATE, 21, 50, b);
    (void)train(&d, DPSGD_PRIVATE, 22, 50, c);
    cr_assert_eq(memcmp(a, b, sizeof a), 0);
    cr_assert_neq(memcmp(a, c, sizeof a), 0);
    dataset_release(&d);
}

Test(train, evaluation_of_a_subset_takes_evenly_spaced_rows)
{
    dpsgd_data d = synthetic();
    double w[8] = {0};
    dpsgd_model m = {8, w, 0};
    dpsgd_eval e;
    dpsgd_evaluate(&m, &d, 300, &e);
    cr_assert_geq(e.rows, 300);
    cr_assert_lt(e.rows, 600);
    cr_assert_float_eq(e.loss, log(2.0), 1e-12);
    dpsgd_evaluate(&m, &d, 5000, &e);
    cr_assert_eq(e.rows, 2000);
    /* w = 0 predicts 1 everywhere (p = 1/2): right on the ones */
    size_t ones = 0;
    for (size_t i = 0; i < d.rows; i++)
        ones += d.y[i];
    cr_assert_float_eq(e.accuracy, (double)ones / 2000, 1e-12);
    dataset_release(&d);
}
