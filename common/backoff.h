/* Exponential backoff with jitter: the one retry policy of every module
 * (reconnects, stream provisioning, pulls, outbox publishes, batch
 * retries, cmsctl's resends).
 *
 * The n-th delay in a row (n from 0) is drawn uniformly from [d/2, d] with
 * d = min(max, min * 2^n): replicas that failed together do not retry
 * together, and no retry comes sooner than half the nominal delay, so a
 * failing peer is never hammered. The unit is the caller's (milliseconds
 * by convention). Any thread; randomness from libsodium. */
#ifndef CMS_BACKOFF_H
#define CMS_BACKOFF_H

#include <stdint.h>

typedef struct cms_backoff {
    uint64_t min, max;
    unsigned failures; /* in a row, since the last reset */
} cms_backoff;

/* min >= 1 and max >= min (otherwise raised to fit). */
void cms_backoff_init(cms_backoff *b, uint64_t min, uint64_t max);
/* The delay before the next try after one more failure. */
uint64_t cms_backoff_next(cms_backoff *b) __attribute__((warn_unused_result));
/* A success: the next failure waits min again. */
void cms_backoff_reset(cms_backoff *b);

/* The delay of the n-th failure in a row (n from 0), without state. */
uint64_t cms_backoff_delay(uint64_t min, uint64_t max, unsigned n)
    __attribute__((warn_unused_result));

#endif
