/* DP-SGD for logistic regression; see dpsgd.h.
 *
 * The gradient of one example's loss is (p - y) * (x, 1), with p the
 * predicted probability, so its norm is |p - y| * sqrt(|x|^2 + 1) and its
 * clipped form is a single coefficient times (x, 1): a step computes that
 * coefficient per example (grad_coef) and adds coefficient * x to the sum,
 * never materialising a gradient. dpsgd_clipped_grad computes the same
 * coefficient, so the tests of it hold the step to the same numbers. */
#include "dpsgd.h"

#include <math.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const err_names[] = {DPSGD_ERRORS(CMS_ENUM_TEXT)};

const char *dpsgd_strerror(dpsgd_err e)
{
    return cms_enum_text(err_names, DPSGD_NERRORS, (int)e);
}

/* ---- randomness ---- */

static void refill(dpsgd_rng *r)
{
    if (r->seeded) {
        uint8_t nonce[crypto_stream_chacha20_NONCEBYTES];
        for (size_t i = 0; i < sizeof nonce; i++)
            nonce[i] = (uint8_t)(r->block >> (8 * i));
        crypto_stream_chacha20(r->buf, sizeof r->buf, nonce, r->key);
        r->block++;
    } else {
        randombytes_buf(r->buf, sizeof r->buf);
    }
    r->pos = 0;
}

static bool rng_init(dpsgd_rng *r, bool seeded, const uint8_t *seed)
{
    memset(r, 0, sizeof *r);
    if (sodium_init() < 0)
        return false;
    r->seeded = seeded;
    if (seeded)
        memcpy(r->key, seed, sizeof r->key);
    refill(r);
    return true;
}

bool dpsgd_rng_init_crypto(dpsgd_rng *r)
{
    return rng_init(r, false, NULL);
}

bool dpsgd_rng_init_seeded(dpsgd_rng *r, const uint8_t seed[DPSGD_SEED_BYTES])
{
    return rng_init(r, true, seed);
}

void dpsgd_rng_wipe(dpsgd_rng *r)
{
    if (r != NULL)
        sodium_memzero(r, sizeof *r);
}

uint64_t dpsgd_rng_u64(dpsgd_rng *r)
{
    if (r->pos + 8 > sizeof r->buf)
        refill(r);
    /* little-endian whatever the machine, so a seed gives the same numbers everywhere */
    uint64_t v = 0;
    for (size_t i = 0; i < 8; i++)
        v |= (uint64_t)r->buf[r->pos + i] << (8 * i);
    r->pos += 8;
    return v;
}

double dpsgd_rng_uniform(dpsgd_rng *r)
{
    return (double)(dpsgd_rng_u64(r) >> 11) * 0x1.0p-53;
}

double dpsgd_rng_gaussian(dpsgd_rng *r)
{
    if (r->has_spare) {
        r->has_spare = false;
        return r->spare;
    }
    double u, v, s;
    do {
        u = 2.0 * dpsgd_rng_uniform(r) - 1.0;
        v = 2.0 * dpsgd_rng_uniform(r) - 1.0;
        s = u * u + v * v;
    } while (s >= 1.0 || s == 0.0);
    double f = sqrt(-2.0 * log(s) / s);
    r->spare = v * f;
    r->has_spare = true;
    return u * f;
}

/* ---- parameters ---- */

static bool why_not(char *why, size_t whylen, const char *text)
{
    if (why != NULL && whylen > 0)
        snprintf(why, whylen, "%s", text);
    return false;
}

bool dpsgd_params_ok(const dpsgd_params *p, char *why, size_t whylen)
{
    if (!(isfinite(p->sample_rate) && p->sample_rate > 0 && p->sample_rate <= 1))
        return why_not(why, whylen, "the sample rate must be in (0, 1]");
    if (!(isfinite(p->noise_multiplier) && p->noise_multiplier >= 0))
        return why_not(why, whylen, "the noise multiplier must be a finite number >= 0");
    if (!(isfinite(p->max_grad_norm) && p->max_grad_norm > 0))
        return why_not(why, whylen, "the clipping norm must be a finite number > 0");
    if (!(isfinite(p->learning_rate) && p->learning_rate > 0))
        return why_not(why, whylen, "the learning rate must be a finite number > 0");
    if (p->mode != DPSGD_PRIVATE && p->mode != DPSGD_PLAIN)
        return why_not(why, whylen, "unknown mode");
    return true;
}

/* ---- the pieces of a step ---- */

size_t dpsgd_sample(dpsgd_rng *r, size_t n, double q, uint32_t *idx)
{
    size_t count = 0;
    if (q >= 1.0) {
        for (size_t i = 0; i < n; i++)
            idx[count++] = (uint32_t)i;
        return count;
    }
    if (!(q > 0.0))
        return 0;
    /* P(gap >= k) = P(log U <= k log(1 - q)) = (1 - q)^k with U uniform on
     * (0, 1]: the run of examples left out before the next one taken, as
     * independent coins of probability q give it */
    const double log_keep = log1p(-q);
    size_t i = 0;
    while (i < n) {
        double u = 1.0 - dpsgd_rng_uniform(r);
        double gap = floor(log(u) / log_keep);
        if (!(gap < (double)(n - i)))
            break;
        i += (size_t)gap;
        idx[count++] = (uint32_t)i;
        i++;
    }
    return count;
}

static double dot(const double *a, const double *b, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += a[i] * b[i];
    return s;
}

/* sigmoid(z) and the loss softplus(z) - y z, without overflow for any z */
static double logistic(double z, int y, double *loss)
{
    double e = exp(-fabs(z));
    double s = 1.0 / (1.0 + e);
    if (loss != NULL)
        *loss = (z > 0 ? z : 0) + log1p(e) - (y ? z : 0);
    return z >= 0 ? s : e * s;
}

/* The coefficient k of one example's gradient k * (x, 1), clipped to norm
 * c when clip is set; *loss gets its loss. */
static double grad_coef(const dpsgd_model *m, const double *x, int y, bool clip, double c,
                        double *loss)
{
    double z = dot(m->w, x, m->features) + m->bias;
    double k = logistic(z, y, loss) - (y ? 1.0 : 0.0);
    if (clip) {
        double norm = fabs(k) * sqrt(dot(x, x, m->features) + 1.0);
        if (norm > c)
            k *= c / norm;
    }
    return k;
}

void dpsgd_example_grad(const dpsgd_model *m, const double *x, int y, double *g)
{
    double k = grad_coef(m, x, y, false, 0, NULL);
    for (size_t j = 0; j < m->features; j++)
        g[j] = k * x[j];
    g[m->features] = k;
}

double dpsgd_clip(double *g, size_t n, double c)
{
    double norm = sqrt(dot(g, g, n));
    if (!(norm > c))
        return 1.0;
    double f = c / norm;
    for (size_t i = 0; i < n; i++)
        g[i] *= f;
    return f;
}

void dpsgd_clipped_grad(const dpsgd_model *m, const double *x, int y, double c, double *g)
{
    double k = grad_coef(m, x, y, true, c, NULL);
    for (size_t j = 0; j < m->features; j++)
        g[j] = k * x[j];
    g[m->features] = k;
}

void dpsgd_add_noise(dpsgd_rng *r, double *sum, size_t n, double sigma, double c)
{
    const double sd = sigma * c;
    for (size_t i = 0; i < n; i++)
        sum[i] += sd * dpsgd_rng_gaussian(r);
}

/* ---- training ---- */

struct dpsgd {
    const dpsgd_data *data;
    dpsgd_params p;
    dpsgd_model model;
    double *sum;   /* features + 1: the batch's gradient sum, bias last */
    uint32_t *idx; /* rows: the batch */
};

dpsgd_err dpsgd_create(const dpsgd_data *data, const dpsgd_params *p, dpsgd **out)
{
    if (!dpsgd_params_ok(p, NULL, 0) || data->rows == 0 || data->features == 0 ||
        data->rows > UINT32_MAX || data->x == NULL || data->y == NULL ||
        data->features > SIZE_MAX / sizeof(double) - 1)
        return DPSGD_EINVAL;
    dpsgd *t = calloc(1, sizeof *t);
    if (t == NULL)
        return DPSGD_ENOMEM;
    t->data = data;
    t->p = *p;
    t->model.features = data->features;
    t->model.w = calloc(data->features, sizeof *t->model.w);
    t->sum = calloc(data->features + 1, sizeof *t->sum);
    t->idx = calloc(data->rows, sizeof *t->idx);
    if (t->model.w == NULL || t->sum == NULL || t->idx == NULL) {
        dpsgd_destroy(t);
        return DPSGD_ENOMEM;
    }
    *out = t;
    return DPSGD_OK;
}

void dpsgd_destroy(dpsgd *t)
{
    if (t == NULL)
        return;
    free(t->model.w);
    free(t->sum);
    free(t->idx);
    free(t);
}

const dpsgd_model *dpsgd_model_of(const dpsgd *t)
{
    return &t->model;
}

dpsgd_err dpsgd_step(dpsgd *t, dpsgd_rng *r, dpsgd_batch *batch)
{
    const dpsgd_data *d = t->data;
    const size_t nf = d->features;
    const bool private_ = t->p.mode == DPSGD_PRIVATE;
    dpsgd_model *m = &t->model;
    size_t n = dpsgd_sample(r, d->rows, t->p.sample_rate, t->idx);
    memset(t->sum, 0, (nf + 1) * sizeof *t->sum);
    double loss = 0;
    for (size_t b = 0; b < n; b++) {
        const double *x = d->x + (size_t)t->idx[b] * nf;
        double l;
        double k = grad_coef(m, x, d->y[t->idx[b]], private_, t->p.max_grad_norm, &l);
        loss += l;
        for (size_t j = 0; j < nf; j++)
            t->sum[j] += k * x[j];
        t->sum[nf] += k;
    }
    if (private_)
        dpsgd_add_noise(r, t->sum, nf + 1, t->p.noise_multiplier, t->p.max_grad_norm);
    const double rate = t->p.learning_rate / (t->p.sample_rate * (double)d->rows);
    bool finite = true;
    for (size_t j = 0; j < nf; j++) {
        m->w[j] -= rate * t->sum[j];
        finite = finite && isfinite(m->w[j]);
    }
    m->bias -= rate * t->sum[nf];
    finite = finite && isfinite(m->bias);
    if (batch != NULL) {
        batch->size = n;
        batch->loss = n > 0 ? loss / (double)n : 0;
    }
    return finite ? DPSGD_OK : DPSGD_EDIVERGED;
}

void dpsgd_evaluate(const dpsgd_model *m, const dpsgd_data *data, size_t max_rows, dpsgd_eval *out)
{
    size_t stride = 1;
    if (max_rows > 0 && max_rows < data->rows)
        stride = data->rows / max_rows;
    double loss = 0;
    size_t right = 0, rows = 0;
    for (size_t i = 0; i < data->rows; i += stride) {
        int y = data->y[i];
        double l;
        double p = logistic(dot(m->w, data->x + i * data->features, m->features) + m->bias, y, &l);
        loss += l;
        right += (p >= 0.5) == (y == 1);
        rows++;
    }
    out->rows = rows;
    out->loss = rows > 0 ? loss / (double)rows : 0;
    out->accuracy = rows > 0 ? (double)right / (double)rows : 0;
}
