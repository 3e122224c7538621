/* Rényi DP of the subsampled Gaussian mechanism; see rdp.h.
 *
 * Everything is in log space, as Opacus computes it: the terms of A_alpha
 * range over hundreds of orders of magnitude (i^2 / (2 sigma^2) for a small
 * sigma), so sums are log-sum-exp (log_add, log_sub) and erfc is log_erfc,
 * which does not underflow. Binomial coefficients come from their
 * recurrence (lgamma would write the global signgam). */
#include "rdp.h"

#include <math.h>
#include <stdint.h>

/* Opacus stops the fractional series once both terms are below e^-30; the
 * cap only guards against a series that would not get there numerically. */
#define FRAC_LOG_STOP (-30.0)
#define FRAC_TERMS_MAX 100000
#define BISECT_MAX 200
#define STEPS_LOG2_MAX 62
/* erfc(x) is a normal double up to about 26.5; beyond, its asymptotic series */
#define ERFC_DIRECT_MAX 26.0
#define SIGMA_HUGE 1e16

/* Python's [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64)), the
 * same doubles */
#define TENTH(x) (1 + (x) / 10.0)
#define TENTHS(t)                                                                                  \
    TENTH(t##0), TENTH(t##1), TENTH(t##2), TENTH(t##3), TENTH(t##4), TENTH(t##5), TENTH(t##6),     \
        TENTH(t##7), TENTH(t##8), TENTH(t##9)
static const double orders[CMS_RDP_NORDERS] = {
    TENTH(1),  TENTH(2),  TENTH(3),  TENTH(4),  TENTH(5),  TENTH(6),  TENTH(7),  TENTH(8),
    TENTH(9),  TENTHS(1), TENTHS(2), TENTHS(3), TENTHS(4), TENTHS(5), TENTHS(6), TENTHS(7),
    TENTHS(8), TENTHS(9), 12,        13,        14,        15,        16,        17,
    18,        19,        20,        21,        22,        23,        24,        25,
    26,        27,        28,        29,        30,        31,        32,        33,
    34,        35,        36,        37,        38,        39,        40,        41,
    42,        43,        44,        45,        46,        47,        48,        49,
    50,        51,        52,        53,        54,        55,        56,        57,
    58,        59,        60,        61,        62,        63};
#undef TENTHS
#undef TENTH

const double *cms_rdp_orders(size_t *n)
{
    if (n != NULL)
        *n = CMS_RDP_NORDERS;
    return orders;
}

/* ---- log-space arithmetic ----------------------------------------------- */

/* log(e^x + e^y) */
static double log_add(double x, double y)
{
    double a = fmin(x, y), b = fmax(x, y);
    if (a == -INFINITY)
        return b;
    return log1p(exp(a - b)) + b;
}

/* log(e^x - e^y). Opacus raises for x < y; a difference that rounds below
 * zero is taken as zero here. */
static double log_sub(double x, double y)
{
    if (y == -INFINITY)
        return x;
    if (x <= y)
        return -INFINITY;
    double d = expm1(x - y);
    if (isinf(d))
        return x;
    return log(d) + y;
}

/* log(erfc(x)) for any x */
static double log_erfc(double x)
{
    if (x < ERFC_DIRECT_MAX)
        return log(erfc(x));
    /* erfc(x) = e^{-x^2} / (x sqrt(pi)) (1 - 1/(2x^2) + 3/(2x^2)^2 - 15/(2x^2)^3 ...);
     * from x = 26 on the terms fall by 1/1350 and more, so five suffice. */
    double u = 1 / (2 * x * x), term = 1, sum = 1;
    for (int k = 1; k <= 5; k++) {
        term *= -(2 * k - 1) * u;
        sum += term;
    }
    return -x * x - log(x) - 0.5 * log(M_PI) + log(sum);
}

/* ---- one step ------------------------------------------------------------ */

/* log A_alpha for an integer alpha >= 2 and 0 < q < 1: the binomial sum
 * sum_i C(alpha, i) q^i (1-q)^(alpha-i) e^{(i^2 - i) / (2 sigma^2)} */
static double log_a_int(double q, double sigma, int alpha)
{
    double log_a = -INFINITY, log_coef = 0; /* log C(alpha, 0) */
    double lq = log(q), l1q = log1p(-q), s2 = 2 * sigma * sigma;
    for (int i = 0; i <= alpha; i++) {
        if (i > 0)
            log_coef += log((double)(alpha - i + 1)) - log((double)i);
        double di = i;
        double s = log_coef + di * lq + (alpha - di) * l1q + (di * di - di) / s2;
        log_a = log_add(log_a, s);
    }
    return log_a;
}

/* log A_alpha for a fractional alpha > 1 and 0 < q < 1: Opacus's two
 * series split at z0, with generalised binomial coefficients whose sign
 * alternates once i exceeds alpha. */
static double log_a_frac(double q, double sigma, double alpha)
{
    double log_a0 = -INFINITY, log_a1 = -INFINITY;
    double lq = log(q), l1q = log1p(-q), s2 = 2 * sigma * sigma;
    /* log(1/q - 1) as l1q - lq: 1/q overflows for a subnormal q */
    double z0 = sigma * sigma * (l1q - lq) + 0.5, r2s = sqrt(2) * sigma;
    double log_coef = 0; /* log |C(alpha, i)| */
    bool positive = true;
    for (int n = 0; n < FRAC_TERMS_MAX; n++) {
        double i = n;
        if (n > 0) {
            double f = alpha - i + 1;
            log_coef += log(fabs(f)) - log(i);
            if (f < 0)
                positive = !positive;
        }
        double j = alpha - i;
        double log_t0 = log_coef + i * lq + j * l1q;
        double log_t1 = log_coef + j * lq + i * l1q;
        double log_e0 = log(0.5) + log_erfc((i - z0) / r2s);
        double log_e1 = log(0.5) + log_erfc((z0 - j) / r2s);
        double log_s0 = log_t0 + (i * i - i) / s2 + log_e0;
        double log_s1 = log_t1 + (j * j - j) / s2 + log_e1;
        if (positive) {
            log_a0 = log_add(log_a0, log_s0);
            log_a1 = log_add(log_a1, log_s1);
        } else {
            log_a0 = log_sub(log_a0, log_s0);
            log_a1 = log_sub(log_a1, log_s1);
        }
        if (fmax(log_s0, log_s1) < FRAC_LOG_STOP)
            break;
    }
    return log_add(log_a0, log_a1);
}

static bool valid_mechanism(double q, double sigma)
{
    return q >= 0 && q <= 1 && sigma >= CMS_RDP_SIGMA_MIN; /* NaN fails both */
}

/* Opacus's _compute_rdp, clamped at 0; q and sigma valid, alpha > 1 finite */
static double rdp_one(double q, double sigma, double alpha)
{
    double r;
    if (q == 0)
        return 0;
    /* For a huge sigma the series lose their way (at 1e155 2 sigma^2
     * overflows, inf - inf, and they ran to FRAC_TERMS_MAX for seconds,
     * ending in inf): from SIGMA_HUGE on take the Gaussian mechanism's own
     * alpha / (2 sigma^2), which bounds the subsampled one from above
     * (sampling never costs privacy) and is below 1e-30 per step there:
     * nothing, even over 2^62 steps. */
    if (q == 1 || sigma >= SIGMA_HUGE)
        r = alpha / (2 * sigma * sigma);
    else if (alpha == floor(alpha) && alpha <= INT32_MAX)
        r = log_a_int(q, sigma, (int)alpha) / (alpha - 1);
    else
        r = log_a_frac(q, sigma, alpha) / (alpha - 1);
    if (isnan(r))
        return INFINITY; /* inf - inf in the sums: no usable bound here */
    return fmax(r, 0);
}

bool cms_rdp_at(double q, double sigma, double alpha, double *rdp)
{
    if (!valid_mechanism(q, sigma) || !(alpha > 1) || isinf(alpha))
        return false;
    *rdp = rdp_one(q, sigma, alpha);
    return true;
}

bool cms_rdp_curve(double q, double sigma, int64_t steps, double *rdp)
{
    if (!valid_mechanism(q, sigma) || steps < 0)
        return false;
    for (size_t k = 0; k < CMS_RDP_NORDERS; k++) {
        double r = rdp_one(q, sigma, orders[k]);
        /* 0 * inf is NaN: zero steps spend nothing at any order */
        rdp[k] = steps == 0 ? 0 : (double)steps * r;
    }
    return true;
}

/* ---- conversion ---------------------------------------------------------- */

/* epsilon of a curve (optionally the sum of two, b may be NULL) */
static bool epsilon_of(const double *a, const double *b, double delta, double *eps,
                       double *best_order)
{
    double best = NAN, at = 0;
    double log_delta = log(delta);
    for (size_t k = 0; k < CMS_RDP_NORDERS; k++) {
        double o = orders[k];
        double r = b == NULL ? a[k] : a[k] + b[k];
        double e = r - (log_delta + log(o)) / (o - 1) + log((o - 1) / o);
        if (isnan(e))
            continue;
        if (isnan(best) || e < best) {
            best = e;
            at = o;
        }
    }
    if (isnan(best))
        return false;
    if (isinf(best))
        at = 0;
    *eps = fmax(best, 0);
    *best_order = at;
    return true;
}

static bool valid_delta(double delta)
{
    return delta > 0 && delta < 1;
}

bool cms_rdp_epsilon(const double *rdp, double delta, double *eps, double *best_order)
{
    if (!valid_delta(delta))
        return false;
    return epsilon_of(rdp, NULL, delta, eps, best_order);
}

bool cms_rdp_eps(double q, double sigma, int64_t steps, double delta, double *eps, double *order)
{
    double rdp[CMS_RDP_NORDERS];
    if (!valid_delta(delta) || !cms_rdp_curve(q, sigma, steps, rdp))
        return false;
    return epsilon_of(rdp, NULL, delta, eps, order);
}

/* ---- inverses ------------------------------------------------------------ */

/* whether (q, sigma) over steps stays within target; arguments valid */
static bool sigma_meets(double q, double sigma, int64_t steps, double delta, double target)
{
    double eps, order;
    if (!cms_rdp_eps(q, sigma, steps, delta, &eps, &order))
        return false;
    return eps <= target;
}

bool cms_rdp_sigma_for(double q, int64_t steps, double delta, double target_eps, double tol,
                       double *sigma)
{
    if (!(q >= 0 && q <= 1) || steps < 0 || !valid_delta(delta) || !(target_eps > 0) ||
        isinf(target_eps) || !(tol > 0 && tol < 1))
        return false;
    /* bracket: lo misses the target, hi meets it */
    double hi = 1;
    while (!sigma_meets(q, hi, steps, delta, target_eps)) {
        if (hi >= CMS_RDP_SIGMA_MAX)
            return false;
        hi = fmin(hi * 2, CMS_RDP_SIGMA_MAX);
    }
    double lo = hi / 2;
    while (sigma_meets(q, lo, steps, delta, target_eps)) {
        hi = lo;
        if (lo <= CMS_RDP_SIGMA_MIN) {
            *sigma = CMS_RDP_SIGMA_MIN;
            return true;
        }
        lo = fmax(lo / 2, CMS_RDP_SIGMA_MIN);
    }
    /* epsilon is non-increasing in sigma, so lo >= hi (1 - tol) with lo
     * missing means hi (1 - tol) misses too */
    for (int n = 0; n < BISECT_MAX && lo < hi * (1 - tol); n++) {
        double mid = lo + (hi - lo) / 2;
        if (sigma_meets(q, mid, steps, delta, target_eps))
            hi = mid;
        else
            lo = mid;
    }
    *sigma = hi;
    return true;
}

/* whether spent (may be NULL) plus steps of one (a step's curve) stays
 * within budget */
static bool steps_fit(const double *one, const double *spent, int64_t steps, double delta,
                      double budget)
{
    double curve[CMS_RDP_NORDERS], eps, order;
    for (size_t k = 0; k < CMS_RDP_NORDERS; k++)
        curve[k] = steps == 0 ? 0 : (double)steps * one[k];
    if (!epsilon_of(curve, spent, delta, &eps, &order))
        return false;
    return eps <= budget;
}

int64_t cms_rdp_max_steps(double q, double sigma, double delta, double eps_budget,
                          const double *spent_rdp)
{
    double one[CMS_RDP_NORDERS];
    if (!valid_delta(delta) || isnan(eps_budget) || !cms_rdp_curve(q, sigma, 1, one))
        return -1;
    if (!steps_fit(one, spent_rdp, 0, delta, eps_budget))
        return -1;
    /* epsilon is non-decreasing in steps (every order is), so: double until
     * a number misses, then bisect between the last fit and it */
    int64_t lo = 0, hi = 1;
    for (int n = 0;; n++) {
        if (!steps_fit(one, spent_rdp, hi, delta, eps_budget))
            break;
        if (n == STEPS_LOG2_MAX)
            return INT64_MAX;
        lo = hi;
        hi *= 2;
    }
    while (hi - lo > 1) {
        int64_t mid = lo + (hi - lo) / 2;
        if (steps_fit(one, spent_rdp, mid, delta, eps_budget))
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}
