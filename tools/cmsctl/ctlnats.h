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

#include "config.h"
#include "nats.h"

/* The NATS options of every verb that connects: --nats-url, then the
 * credentials, inbox prefix and TLS options of the services
 * (common/natsauth.h); the nats CLI's NATS_CREDS and NATS_CA stand in for
 * CMS_NATS_CREDS and CMS_NATS_CA when those are unset. */
// clang-format off
#define CMSCTL_NATS_OPTIONS \
  {"nats-url", "CMS_NATS_URL", CMS_OPT_STRING, "nats://127.0.0.1:4222", "NATS server URL(s), comma-separated", CMS_OPT_PASSWORD, false}, \
  CMS_OPTIONS_NATS_SECURITY("; also NATS_CREDS when CMS_NATS_CREDS is unset, else ~/.config/cms/nats.creds if it exists", "; also NATS_CA when CMS_NATS_CA is unset, else ~/.config/cms/nats-ca.crt if it exists")
// clang-format on

/* The security options of cfg (a table with CMSCTL_NATS_OPTIONS), with the
 * NATS_CREDS and NATS_CA fallbacks. The strings are cfg's or the
 * environment's. */
void cmsctl_nats_security(const cms_config *cfg, cms_nats_security *out);

/* Connects to cfg's --nats-url (comma-separated servers) with its
 * credentials and TLS options within timeout_ms, with a few quick reconnect
 * attempts should the connection drop later. Returns CMSCTL_EXIT_OK with
 * *out set, or prints why not (for refused credentials: which user, which
 * file, what to do) and returns CMSCTL_EXIT_FAILED. */
int cmsctl_nats_connect(const char *prog, const cms_config *cfg, int64_t timeout_ms,
                        natsConnection **out) __attribute__((warn_unused_result));

/* Makes sure the stream CMS_EVENTS exists: asks JetStream, and if it is
 * missing, provisions it the way every service does (connecting as cfg
 * says), waiting at most timeout_ms. Returns CMSCTL_EXIT_OK or prints why
 * not and returns CMSCTL_EXIT_FAILED. */
int cmsctl_nats_ensure_events(const char *prog, const cms_config *cfg, jsCtx *js,
                              int64_t timeout_ms) __attribute__((warn_unused_result));

/* Prints "PROG: WHAT: <nats.c status and last error>" and returns CMSCTL_EXIT_FAILED. */
int cmsctl_nats_fail(const char *prog, const char *what, natsStatus st);

#endif
