/* Jittered exponential backoff; see backoff.h. */
#include "backoff.h"

#include <sodium.h>

uint64_t cms_backoff_delay(uint64_t min, uint64_t max, unsigned n)
{
    if (min < 1)
        min = 1;
    if (max < min)
        max = min;
    uint64_t d = min;
    for (unsigned i = 0; i < n && d < max; i++)
        d = d > max / 2 ? max : d * 2;
    if (d > max)
        d = max;
    uint64_t half = d / 2, span = d - half;
    /* randombytes_uniform takes a 32-bit bound: delays beyond it are not jittered finer */
    uint32_t bound = span >= UINT32_MAX ? UINT32_MAX : (uint32_t)span + 1;
    return half + randombytes_uniform(bound);
}

void cms_backoff_init(cms_backoff *b, uint64_t min, uint64_t max)
{
    b->min = min < 1 ? 1 : min;
    b->max = max < b->min ? b->min : max;
    b->failures = 0;
}

uint64_t cms_backoff_next(cms_backoff *b)
{
    uint64_t d = cms_backoff_delay(b->min, b->max, b->failures);
    if (b->failures < 64)
        b->failures++;
    return d;
}

void cms_backoff_reset(cms_backoff *b)
{
    b->failures = 0;
}
