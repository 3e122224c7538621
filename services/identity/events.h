/* The events of cms-identity (source "identity"), built and packed for the
 * outbox: one builder per event type, each with its typed body. */
#ifndef IDENTITY_EVENTS_H
#define IDENTITY_EVENTS_H

#include "bus.h"

#include <stdint.h>

#define IDEV_SOURCE "identity"
#define IDEV_WUR __attribute__((warn_unused_result))

cms_bus_err idev_identity_created(const char *id, const char *name, const char *type,
                                  const char *status, const char *actor, const char *corr,
                                  cms_bus_event *out) IDEV_WUR;
cms_bus_err idev_status_changed(const char *id, const char *old_status, const char *new_status,
                                const char *reason, const char *actor, const char *corr,
                                cms_bus_event *out) IDEV_WUR;
/* public_key: the key of a public_key credential (base64), else NULL */
cms_bus_err idev_credential_issued(const char *cred_id, const char *identity_id, const char *type,
                                   const char *public_key, int64_t expires_at_us, const char *actor,
                                   const char *corr, cms_bus_event *out) IDEV_WUR;
cms_bus_err idev_credential_revoked(const char *cred_id, const char *identity_id,
                                    const char *reason, const char *actor, const char *corr,
                                    cms_bus_event *out) IDEV_WUR;
cms_bus_err idev_credential_expired(const char *cred_id, const char *identity_id,
                                    int64_t expires_at_us, cms_bus_event *out) IDEV_WUR;

#endif
