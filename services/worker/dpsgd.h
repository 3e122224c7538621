/* DP-SGD for binary logistic regression, exactly as common/rdp's accountant
 * assumes it (the Poisson-subsampled Gaussian mechanism). One step:
 *
 *   1. Poisson sampling: every example is in the batch independently with
 *      probability q (sample_rate), so the batch size varies from step to
 *      step around q * N;
 *   2. the gradient of each sampled example's logistic loss, over the
 *      weights and the bias, clipped to L2 norm at most C (max_grad_norm);
 *   3. the clipped gradients summed, and N(0, (sigma * C)^2) noise added to
 *      each coordinate of the sum independently (sigma: noise_multiplier);
 *   4. the sum divided by the expected batch size q * N (as Opacus does
 *      with Poisson sampling: the actual size would depend on the data),
 *      and a step of the learning rate against it.
 *
 * An empty batch still adds its noise and takes its step: the accountant
 * counts every step. DPSGD_PLAIN runs the same loop without clipping and
 * noise (the benchmark's baseline; no privacy).
 *
 * The losses and accuracies computed here are measured on the training
 * data itself and are not covered by the privacy guarantee: only the model
 * is.
 *
 * Randomness comes from a dpsgd_rng: libsodium's CSPRNG in production, or a
 * ChaCha20 stream keyed by a 32-byte seed for reproducible tests.
 *
 * Pure: no I/O (but the CSPRNG's), no global state, no allocation after
 * dpsgd_create. A dpsgd and a dpsgd_rng belong to one thread. */
#ifndef WORKER_DPSGD_H
#define WORKER_DPSGD_H

#include "xenum.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DPSGD_WUR __attribute__((warn_unused_result))

#define DPSGD_ERRORS(X)                                                                            \
    X(DPSGD_OK, "ok")                                                                              \
    X(DPSGD_EINVAL, "invalid training parameters")                                                 \
    X(DPSGD_ENOMEM, "out of memory")                                                               \
    X(DPSGD_EDIVERGED, "the model's parameters are no longer finite numbers")

typedef enum { DPSGD_ERRORS(CMS_ENUM_ITEM) DPSGD_NERRORS } dpsgd_err;
const char *dpsgd_strerror(dpsgd_err e);

/* ---- randomness ---- */

#define DPSGD_SEED_BYTES 32
#define DPSGD_RNG_BUF 4096

/* A source of random bits. Embed it anywhere; initialise it with one of the
 * two inits, wipe it when done (it holds its key and unread output). */
typedef struct dpsgd_rng {
    uint8_t buf[DPSGD_RNG_BUF];
    size_t pos;     /* next unread byte of buf */
    bool seeded;    /* the ChaCha20 stream of key, else libsodium's CSPRNG */
    uint64_t block; /* refills so far: the ChaCha20 nonce of the next one */
    uint8_t key[DPSGD_SEED_BYTES];
    bool has_spare; /* the polar method makes two normals at a time */
    double spare;
} dpsgd_rng;

/* libsodium's CSPRNG (randombytes_buf). False if libsodium cannot start. */
bool dpsgd_rng_init_crypto(dpsgd_rng *r) DPSGD_WUR;
/* The ChaCha20 keystream of seed (nonce: the refill count, from 0), the
 * same for the same seed on every machine: for tests only. False if
 * libsodium cannot start. */
bool dpsgd_rng_init_seeded(dpsgd_rng *r, const uint8_t seed[DPSGD_SEED_BYTES]) DPSGD_WUR;
void dpsgd_rng_wipe(dpsgd_rng *r); /* NULL-safe */

uint64_t dpsgd_rng_u64(dpsgd_rng *r);
/* Uniform on [0, 1), on the grid of 2^-53 (53 random bits). */
double dpsgd_rng_uniform(dpsgd_rng *r);
/* Standard normal, by Marsaglia's polar method (exact, never log(0)). */
double dpsgd_rng_gaussian(dpsgd_rng *r);

/* ---- data and model ---- */

/* rows examples of features doubles each, row-major, with labels 0 or 1.
 * The trainer borrows it: it must outlive the dpsgd. */
typedef struct dpsgd_data {
    size_t rows, features;
    double *x;  /* rows * features */
    uint8_t *y; /* rows */
} dpsgd_data;

/* p(y = 1 | x) = sigmoid(w . x + bias) */
typedef struct dpsgd_model {
    size_t features;
    double *w; /* features */
    double bias;
} dpsgd_model;

typedef enum {
    DPSGD_PRIVATE, /* clipping and noise: what a job runs */
    DPSGD_PLAIN,   /* neither: the same loop as a baseline, not private */
} dpsgd_mode;

typedef struct dpsgd_params {
    double sample_rate;      /* q, in (0, 1] */
    double noise_multiplier; /* sigma >= 0, finite */
    double max_grad_norm;    /* C > 0, finite */
    double learning_rate;    /* > 0, finite */
    dpsgd_mode mode;
} dpsgd_params;

/* Whether p is usable; why gets what is wrong with it. */
bool dpsgd_params_ok(const dpsgd_params *p, char *why, size_t whylen) DPSGD_WUR;

/* ---- the pieces of a step (public so that tests hold each to the spec) ---- */

/* The Poisson sample of n (< 2^32) examples at rate q: each index in [0, n) is in
 * it independently with probability q (drawn as geometric gaps between
 * the chosen indices, which has the same distribution as a coin per
 * example and costs O(q n) draws). The indices go to idx (room for n),
 * ascending; returns how many. */
size_t dpsgd_sample(dpsgd_rng *r, size_t n, double q, uint32_t *idx);

/* The gradient of one example's logistic loss at m: g[0..features) for the
 * weights, g[features] for the bias (room for features + 1). */
void dpsgd_example_grad(const dpsgd_model *m, const double *x, int y, double *g);
/* Scales g[0..n) so that its L2 norm is at most c (c > 0); a vector within
 * it is left exactly as it is. Returns the factor applied (1 or less). */
double dpsgd_clip(double *g, size_t n, double c);
/* dpsgd_example_grad then dpsgd_clip to c: what a private step sums for
 * each example. */
void dpsgd_clipped_grad(const dpsgd_model *m, const double *x, int y, double c, double *g);
/* Adds N(0, (sigma * c)^2) to each of sum[0..n) independently. */
void dpsgd_add_noise(dpsgd_rng *r, double *sum, size_t n, double sigma, double c);

/* ---- training ---- */

typedef struct dpsgd dpsgd;

/* A trainer of a model of data->features weights, all parameters 0, with
 * its buffers for every step allocated here. data must have at least one
 * row and one feature, and fewer than 2^32 rows. */
dpsgd_err dpsgd_create(const dpsgd_data *data, const dpsgd_params *p, dpsgd **out) DPSGD_WUR;
void dpsgd_destroy(dpsgd *t); /* NULL-safe */

const dpsgd_model *dpsgd_model_of(const dpsgd *t);

typedef struct dpsgd_batch {
    size_t size; /* examples sampled */
    double loss; /* their mean loss before the step (0 for an empty batch) */
} dpsgd_batch;

/* One step, as the file's comment says; batch (may be NULL) gets what was
 * sampled. Allocates nothing. DPSGD_EDIVERGED if a parameter is no longer
 * finite afterwards (a learning rate far too large): the model is then of
 * no use. */
dpsgd_err dpsgd_step(dpsgd *t, dpsgd_rng *r, dpsgd_batch *batch) DPSGD_WUR;

typedef struct dpsgd_eval {
    double loss;     /* mean logistic loss */
    double accuracy; /* the share predicted right (p >= 0.5 predicts 1) */
    size_t rows;     /* rows evaluated */
} dpsgd_eval;

/* m on data: every row when max_rows is 0 or at least data->rows, else
 * about max_rows rows evenly spaced through it (a cheap progress figure). */
void dpsgd_evaluate(const dpsgd_model *m, const dpsgd_data *data, size_t max_rows, dpsgd_eval *out);

#endif
