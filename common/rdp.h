/* Rényi differential privacy accounting of DP-SGD: the Poisson-subsampled
 * Gaussian mechanism (sampling rate q, noise multiplier sigma) composed over
 * a number of steps, and its conversion to (epsilon, delta).
 *
 * The numbers are those of Opacus's opacus/accountants/analysis/rdp.py
 * (Mironov, Talwar & Zhang 2019, "Rényi Differential Privacy of the
 * Sampled Gaussian Mechanism"):
 *   - one step at order alpha is log(A_alpha) / (alpha - 1), A_alpha from the
 *     binomial sum for an integer alpha and from the two erfc series for a
 *     fractional one; q = 0 is 0, q = 1 is alpha / (2 sigma^2);
 *   - steps compose by multiplication, jobs by adding their curves order by
 *     order;
 *   - a curve becomes epsilon by the bound of Balle et al. 2020 ("Hypothesis
 *     testing interpretations and Rényi differential privacy"), minimised
 *     over the orders: rdp - (log delta + log alpha) / (alpha - 1)
 *     + log((alpha - 1) / alpha).
 * A curve is always over Opacus's default orders (cms_rdp_orders). Each
 * order's value is clamped at 0 (a Rényi divergence is never negative; the
 * sums can round below), so epsilon is monotone in steps and curves. Note
 * that the bound is not 0 at zero steps (about 0.1 for delta = 1e-5).
 *
 * Pure: no I/O, no allocation, no global state; thread-safe. */
#ifndef CMS_RDP_H
#define CMS_RDP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* 1.1, 1.2, ... 10.9 (99 orders), then 12, 13, ... 63 (52 orders) */
#define CMS_RDP_NORDERS 151

/* The orders of every curve, ascending; *n (if n is not NULL) is set to
 * CMS_RDP_NORDERS. */
const double *cms_rdp_orders(size_t *n);

/* The noise multipliers the accountant takes: CMS_RDP_SIGMA_MIN and above
 * (+inf included). Below it no noise worth the name is added (at 1e-3 one
 * step costs an epsilon in the thousands), and the series lose their
 * precision: 2 sigma^2 underflows to 0 or a subnormal around 1e-160 and some
 * orders came out 0 (privacy where there is none), and subnormal ones took
 * seconds per order. Such a sigma is refused, as sigma <= 0 is. */
#define CMS_RDP_SIGMA_MIN 1e-3
#define CMS_RDP_SIGMA_MAX 1e6

/* The RDP of one step at order alpha (> 1, finite) into *rdp: +inf when the
 * mechanism gives no privacy at that order (numerically). false, *rdp
 * untouched, for q outside [0, 1], sigma below CMS_RDP_SIGMA_MIN (or NaN) or
 * an invalid alpha. */
bool cms_rdp_at(double q, double sigma, double alpha, double *rdp)
    __attribute__((warn_unused_result));

/* The RDP curve of steps steps into rdp[CMS_RDP_NORDERS]. false, rdp
 * untouched, for q outside [0, 1], sigma below CMS_RDP_SIGMA_MIN (or NaN) or
 * steps < 0. */
bool cms_rdp_curve(double q, double sigma, int64_t steps, double *rdp)
    __attribute__((warn_unused_result));

/* Epsilon at delta of a curve (rdp[CMS_RDP_NORDERS], e.g. the sum of
 * several jobs' curves) and the order that gives it, into *eps (>= 0, +inf
 * when no order gives a finite bound) and *best_order (0 with +inf). NaN
 * entries are skipped. false, outputs untouched, for delta outside (0, 1) or
 * a curve that is all NaN. */
bool cms_rdp_epsilon(const double *rdp, double delta, double *eps, double *best_order)
    __attribute__((warn_unused_result));

/* cms_rdp_curve then cms_rdp_epsilon. */
bool cms_rdp_eps(double q, double sigma, int64_t steps, double delta, double *eps, double *order)
    __attribute__((warn_unused_result));

/* The smallest noise multiplier whose steps steps stay within target_eps at
 * delta, to relative tolerance tol (in (0, 1)): eps(*sigma) <= target_eps
 * and eps(*sigma * (1 - tol)) > target_eps. Searched within
 * [CMS_RDP_SIGMA_MIN, CMS_RDP_SIGMA_MAX]: when even CMS_RDP_SIGMA_MIN meets
 * the target (q = 0, steps = 0), *sigma is CMS_RDP_SIGMA_MIN. false, *sigma
 * untouched, for invalid arguments (target_eps must be > 0 and finite) or
 * when CMS_RDP_SIGMA_MAX does not reach the target (a target below the
 * bound's floor). */
bool cms_rdp_sigma_for(double q, int64_t steps, double delta, double target_eps, double tol,
                       double *sigma) __attribute__((warn_unused_result));

/* The largest number of further steps (q, sigma) whose curve, added to
 * spent_rdp (rdp[CMS_RDP_NORDERS] already spent; NULL for none), stays
 * within eps_budget at delta. INT64_MAX when every number does (q = 0, or
 * 2^62 steps still fit); -1 for invalid arguments (eps_budget must not be NaN) or when the spent
 * curve alone is over the budget. */
int64_t cms_rdp_max_steps(double q, double sigma, double delta, double eps_budget,
                          const double *spent_rdp) __attribute__((warn_unused_result));

#endif
