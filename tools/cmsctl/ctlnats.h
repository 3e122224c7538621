/* NATS for cmsctl: a blocking nats.c connection with bounded waits, and the
 * CMS_EVENTS stream made to exist.
 *
 * A command-line tool talks to nats.c directly (no loop to protect), but
 * the stream is provisioned by common/nats (cms_nats_provision_streams), so
 * its settings are the services' settings by construction. */
#ifndef CMSCTL_CTLNATS_H
#define CMSCTL_CTLNATS_H

#include <nats/nats.h>
#include <stdint.h>

/* Connects to url (comma-separated servers) within timeout_ms, with a few
 * quick reconnect attempts should the connection drop later. Returns
 * CMSCTL_EXIT_OK with *out set, or prints why not and returns
 * CMSCTL_EXIT_FAILED. */
int cmsctl_nats_connect(const char *prog, const char *url, int64_t timeout_ms, natsConnection **out)
    __attribute__((warn_unused_result));

/* Makes sure the stream CMS_EVENTS exists: asks JetStream, and if it is
 * missing, provisions it the way every service does, waiting at most
 * timeout_ms. Returns CMSCTL_EXIT_OK or prints why not and returns
 * CMSCTL_EXIT_FAILED. */
int cmsctl_nats_ensure_events(const char *prog, const char *url, jsCtx *js, int64_t timeout_ms)
    __attribute__((warn_unused_result));

/* Prints "PROG: WHAT: <nats.c status and last error>" and returns CMSCTL_EXIT_FAILED. */
int cmsctl_nats_fail(const char *prog, const char *what, natsStatus st);

#endif
