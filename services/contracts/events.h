/* The events of cms-contracts (source "contracts"), built and packed for
 * the outbox: one builder per event type, each with its typed body. Every
 * body names the contract, both parties and the status after the event
 * (ctev_contract). actor: who acted (CMS_BUS_SYSTEM_ACTOR for the timer);
 * corr: the command's request_id, or NULL. */
#ifndef CONTRACTS_EVENTS_H
#define CONTRACTS_EVENTS_H

#include "bus.h"

#include <stdbool.h>
#include <stdint.h>

#define CTEV_SOURCE "contracts"
#define CTEV_WUR __attribute__((warn_unused_result))

typedef struct ctev_contract {
    const char *id, *provider_id, *consumer_id;
    const char *status; /* after the event */
} ctev_contract;

cms_bus_err ctev_created(const ctev_contract *c, const char *title, const char *content_hash,
                         const char *actor, const char *corr, cms_bus_event *out) CTEV_WUR;
/* fields: what changed (title, description, terms, metadata) */
cms_bus_err ctev_updated(const ctev_contract *c, const char *const *fields, size_t nfields,
                         const char *content_hash, const char *actor, const char *corr,
                         cms_bus_event *out) CTEV_WUR;
cms_bus_err ctev_submitted(const ctev_contract *c, const char *content_hash, const char *actor,
                           const char *corr, cms_bus_event *out) CTEV_WUR;
cms_bus_err ctev_signed(const ctev_contract *c, const char *side, const char *key_id,
                        const char *content_hash, const char *actor, const char *corr,
                        cms_bus_event *out) CTEV_WUR;
cms_bus_err ctev_fully_signed(const ctev_contract *c, const char *content_hash,
                              int64_t starts_at_us, int64_t ends_at_us, const char *actor,
                              const char *corr, cms_bus_event *out) CTEV_WUR;
/* max_epsilon, delta: terms.privacy's, 0 for none; supersedes: NULL or
 * the contract an amendment replaces */
cms_bus_err ctev_activated(const ctev_contract *c, int64_t starts_at_us, int64_t ends_at_us,
                           double max_epsilon, double delta, bool automatic, const char *supersedes,
                           const char *actor, const char *corr, cms_bus_event *out) CTEV_WUR;
/* reason: NULL or "superseded" (then superseded_by names the amendment) */
cms_bus_err ctev_completed(const ctev_contract *c, const char *reason, const char *superseded_by,
                           const char *actor, const char *corr, cms_bus_event *out) CTEV_WUR;
/* side: provider, consumer or admin */
cms_bus_err ctev_terminated(const ctev_contract *c, const char *old_status, const char *side,
                            const char *reason, const char *actor, const char *corr,
                            cms_bus_event *out) CTEV_WUR;
cms_bus_err ctev_expired(const ctev_contract *c, const char *old_status, int64_t ends_at_us,
                         cms_bus_event *out) CTEV_WUR;
cms_bus_err ctev_amended(const ctev_contract *c, const char *amendment_id, const char *content_hash,
                         const char *actor, const char *corr, cms_bus_event *out) CTEV_WUR;

#endif
