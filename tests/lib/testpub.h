/* Numbered JetStream publishes from a loop, for tests that publish through
 * a fault: message i (0 .. count-1) is "<i>" on one subject with
 * Nats-Msg-Id "<subject>-<i>", and one the stream did not acknowledge is
 * published again with the same id, so the stream keeps it once.
 *
 * No Criterion: the plain programs of tests/common/tsan/ use it too, so
 * failures are returned for the caller to assert. */
#ifndef CMS_TESTPUB_H
#define CMS_TESTPUB_H

#include "nats.h"

#include <stdbool.h>
#include <uv.h>

typedef struct cms_test_pub {
    cms_nats *n;
    char subject[64];
    int count;
    int next;   /* the next index never published */
    int *retry; /* indexes whose publish failed, to publish again */
    int nretry;
    bool *stored; /* [i]: acknowledged by the stream */
    int nstored;
    int errors;       /* publishes that failed (each is published again) */
    int wrong_thread; /* acknowledgements handled off the loop's thread */
    uv_thread_t loop_thread;
    struct cms_test_pub_arg *args; /* one per index: an index is in flight once at most */
} cms_test_pub;

/* count messages to publish with n on subject; call it on the loop's
 * thread. Returns 0, or -1 when out of memory. */
int cms_test_pub_init(cms_test_pub *p, cms_nats *n, const char *subject, int count);
/* Publishes up to budget messages, those to publish again first, and stops
 * where the in-flight cap refuses one. Returns CMS_NATS_OK, CMS_NATS_EBUSY
 * (the cap: go on later), or the error of a publish refused otherwise. */
cms_nats_err cms_test_pub_pump(cms_test_pub *p, int budget);
/* Once no publish is in flight (after the close callback of n). */
void cms_test_pub_free(cms_test_pub *p);

#endif
