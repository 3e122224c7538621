/* libFuzzer target for common/rdp (the privacy accountant), on any inputs
 * the bytes make: byte 0's low bit picks raw doubles (every double, NaN,
 * infinities and subnormals included) or values spread over the domain
 * (q in [0, 1], sigma in [0.05, 50], delta in [1e-12, 0.5], a budget in
 * [0.01, 100]); then q, sigma, delta, budget and steps. Nothing may crash,
 * and nothing may take long: the accountant refuses a sigma below
 * CMS_RDP_SIGMA_MIN (rdp.h) rather than spend seconds on it, so inputs are
 * not bounded here; the callers' bounds are the accountant's own
 * (training/validate.c refuses a noise_multiplier below it). An accepted
 * curve holds no NaN and no negative order; epsilon is never NaN nor
 * negative, never falls as steps grow nor as sigma falls; the steps
 * max_steps grants stay within the budget, and one more would not. */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rdp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static double take_double(const uint8_t **p, size_t *n)
{
    double d = 0;
    if (*n >= sizeof d) {
        memcpy(&d, *p, sizeof d);
        *p += sizeof d;
        *n -= sizeof d;
    }
    return d;
}

/* a value in [lo, hi] from 4 bytes, so that most inputs are in range */
static double take_in(const uint8_t **p, size_t *n, double lo, double hi)
{
    uint32_t u = 0;
    if (*n >= sizeof u) {
        memcpy(&u, *p, sizeof u);
        *p += sizeof u;
        *n -= sizeof u;
    }
    return lo + (hi - lo) * ((double)u / 4294967295.0);
}

/* epsilon, or -1 when the accountant refuses the arguments */
static double eps_of(double q, double sigma, int64_t steps, double delta)
{
    double eps = -1, order = -1;
    if (!cms_rdp_eps(q, sigma, steps, delta, &eps, &order))
        return -1;
    if (isnan(eps) || eps < 0 || isnan(order) || (isinf(eps) && order != 0))
        abort();
    return eps;
}

/* b >= a, but for the last bits of a finite value */
static bool not_below(double b, double a)
{
    return b >= a || (isfinite(a) && b >= a - 1e-9 * fabs(a));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    bool raw = data[0] & 1;
    const uint8_t *p = data + 1;
    size_t n = size - 1;
    double q = raw ? take_double(&p, &n) : take_in(&p, &n, 0, 1);
    double sigma = raw ? take_double(&p, &n) : take_in(&p, &n, 0.05, 50);
    double delta = raw ? take_double(&p, &n) : take_in(&p, &n, 1e-12, 0.5);
    double budget = raw ? take_double(&p, &n) : take_in(&p, &n, 0.01, 100);
    int64_t steps = (int64_t)take_in(&p, &n, 0, 100000);

    double curve[CMS_RDP_NORDERS];
    bool valid = cms_rdp_curve(q, sigma, steps, curve);
    if (valid != (q >= 0 && q <= 1 && sigma >= CMS_RDP_SIGMA_MIN))
        abort();
    if (valid)
        for (size_t i = 0; i < CMS_RDP_NORDERS; i++)
            if (isnan(curve[i]) || curve[i] < 0 || (steps == 0 && curve[i] != 0))
                abort();

    double e1 = eps_of(q, sigma, steps, delta);
    double e2 = eps_of(q, sigma, steps + 1 + steps / 2, delta);
    if (e1 >= 0 && e2 >= 0 && !not_below(e2, e1))
        abort(); /* more steps, less epsilon */
    double e3 = eps_of(q, sigma * 0.75, steps, delta);
    if (e1 >= 0 && e3 >= 0 && !not_below(e3, e1))
        abort(); /* less noise, less epsilon */

    int64_t most = cms_rdp_max_steps(q, sigma, delta, budget, NULL);
    if (most < -1 || (most >= 0 && !valid))
        abort();
    if (most >= 0 && most < INT64_MAX && most < 100000000) {
        double within = eps_of(q, sigma, most, delta), over = eps_of(q, sigma, most + 1, delta);
        if (within > budget * (1 + 1e-9) || (over >= 0 && over <= budget * (1 - 1e-9)))
            abort();
    }
    return 0;
}
