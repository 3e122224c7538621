/* backoff: every delay within [d/2, d] of its nominal d, doubling from min
 * to max, jittered (not all alike), reset, and the stateless form. */
#include <criterion/criterion.h>
#include <stdbool.h>
#include <stdint.h>

#include "backoff.h"

static uint64_t nominal(uint64_t min, uint64_t max, unsigned n)
{
    uint64_t d = min;
    for (unsigned i = 0; i < n && d < max; i++)
        d *= 2;
    return d > max ? max : d;
}

Test(backoff, delays_double_within_their_jitter_up_to_max)
{
    cms_backoff b;
    cms_backoff_init(&b, 100, 5000);
    for (unsigned n = 0; n < 20; n++) {
        uint64_t d = nominal(100, 5000, n), got = cms_backoff_next(&b);
        cr_assert(got >= d / 2 && got <= d, "failure %u: %llu outside [%llu, %llu]", n,
                  (unsigned long long)got, (unsigned long long)(d / 2), (unsigned long long)d);
    }
    cr_assert_eq(b.failures, 20);
}

Test(backoff, reset_starts_over)
{
    cms_backoff b;
    cms_backoff_init(&b, 10, 1000);
    for (int i = 0; i < 8; i++)
        cr_assert_leq(cms_backoff_next(&b), 1000);
    cms_backoff_reset(&b);
    uint64_t got = cms_backoff_next(&b);
    cr_assert(got >= 5 && got <= 10, "after reset: %llu", (unsigned long long)got);
}

Test(backoff, jittered_not_constant)
{
    /* 200 draws of [500, 1000] all equal would mean no jitter */
    bool differ = false;
    uint64_t first = cms_backoff_delay(1000, 1000, 0);
    for (int i = 0; i < 200 && !differ; i++)
        differ = cms_backoff_delay(1000, 1000, 0) != first;
    cr_assert(differ, "200 delays were all %llu", (unsigned long long)first);
}

Test(backoff, odd_bounds_are_made_sane)
{
    cr_assert_leq(cms_backoff_delay(0, 0, 5), 1);
    uint64_t got = cms_backoff_delay(100, 10, 3); /* max below min: min */
    cr_assert(got >= 50 && got <= 100, "%llu", (unsigned long long)got);
    /* huge failure counts neither overflow nor pass max */
    got = cms_backoff_delay(1, UINT64_C(1) << 62, 1000);
    cr_assert_geq(got, UINT64_C(1) << 61);
    cms_backoff b;
    cms_backoff_init(&b, 0, 0);
    cr_assert_eq(b.min, 1);
    cr_assert_eq(b.max, 1);
}
