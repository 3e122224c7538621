/* Events of cms-contracts; see events.h. */
#include "contracts/events.h"

static cms_bus_err build(Cms__V1__Envelope *env, const char *type, const ctev_contract *c,
                         const char *actor, const char *corr, cms_bus_event *out)
{
    cms_bus_event_header h = {.event_type = type,
                              .resource_type = "contract",
                              .resource_id = c->id,
                              .actor_id = actor,
                              .correlation_id = corr,
                              .source = CTEV_SOURCE};
    return cms_bus_event_build(env, &h, out);
}

static const char *str(const char *s)
{
    return s ? s : "";
}

/* the four fields every body starts with */
#define CONTRACT_FIELDS(b, c)                                                                      \
    do {                                                                                           \
        (b).contract_id = (char *)str((c)->id);                                                    \
        (b).provider_id = (char *)str((c)->provider_id);                                           \
        (b).consumer_id = (char *)str((c)->consumer_id);                                           \
        (b).status = (char *)str((c)->status);                                                     \
    } while (0)

cms_bus_err ctev_created(const ctev_contract *c, const char *title, const char *content_hash,
                         const char *actor, const char *corr, cms_bus_event *out)
{
    Cms__V1__Envelope env = CMS__V1__ENVELOPE__INIT;
    Cms__V1__ContractCreated b = CMS__V1__CONTRACT_CREATED__INIT;
    CONTRACT_FIELDS(b, c);
    b.title = (char *)str(title);
    b.content_hash = (char *)str(content_hash);
    env.body_case = CMS__V1__ENVELOPE__BODY_CONTRACT_CREATED;
    env.contract_created = &b;
    return build(&env, "contract.created", c, actor, corr, out);
}

cms_bus_err ctev_updated(const ctev_contract *c, const char *const *fields, size_t nfields,
                         const char *content_hash, const char *actor, const char *corr,
                         cms_bus_event *out)
{
    Cms__V1__Envelope env = CMS__V1__ENVELOPE__INIT;
    Cms__V1__ContractUpdated b = CMS__V1__CONTRACT_UPDATED__INIT;
    CONTRACT_FIELDS(b, c);
    b.fields = (char **)fields;
    b.n_fields = nfields;
    b.content_hash = (char *)str(content_hash);
    env.body_case = CMS__V1__ENVELOPE__BODY_CONTRACT_UPDATED;
    env.contract_updated = &b;
    return build(&env, "contract.updated", c, actor, corr, out);
}

cms_bus_err ctev_submitted(const ctev_contract *c, const char *content_hash, const char *actor,
                           const char *corr, cms_bus_event *out)
{
    Cms__V1__Envelope env = CMS__V1__ENVELOPE__INIT;
    Cms__V1__ContractSubmitted b = CMS__V1__CONTRACT_SUBMITTED__INIT;
    CONTRACT_FIELDS(b, c);
    b.content_hash = (char *)str(content_hash);
    env.body_case = CMS__V1__ENVELOPE__BODY_CONTRACT_SUBMITTED;
    env.contract_submitted = &b;
    return build(&env, "contract.submitted", c, actor, corr, out);
}

cms_bus_err ctev_signed(const ctev_contract *c, const char *side, const char *key_id,
                        const char *content_hash, const char *actor, const char *corr,
                        cms_bus_event *out)
{
    Cms__V1__Envelope env = CMS__V1__ENVELOPE__INIT;
    Cms__V1__ContractSigned b = CMS__V1__CONTRACT_SIGNED__INIT;
    CONTRACT_FIELDS(b, c);
    b.side = (char *)str(side);
    b.signer_id = (char *)str(actor);
    b.key_id = (char *)str(key_id);
    b.content_hash = (char *)str(content_hash);
    env.body_case = CMS__V1__ENVELOPE__BODY_CONTRACT_SIGNED;
    env.contract_signed = &b;
    return build(&env, "contract.signed", c, actor, corr, out);
}

cms_bus_err ctev_fully_signed(const ctev_contract *c, const char *content_hash,
                              int64_t starts_at_us, int64_t ends_at_us, const char *actor,
                              const char *corr, cms_bus_event *out)
{
    Cms__V1__Envelope env = CMS__V1__ENVELOPE__INIT;
    Cms__V1__ContractFullySigned b = CMS__V1__CONTRACT_FULLY_SIGNED__INIT;
    CONTRACT_FIELDS(b, c);
    b.content_hash = (char *)str(content_hash);
    b.starts_at_us = starts_at_us;
    b.ends_at_us = ends_at_us;
    env.body_case = CMS__V1__ENVELOPE__BODY_CONTRACT_FULLY_SIGNED;
    env.contract_fully_signed = &b;
    return build(&env, "contract.fully_signed", c, actor, corr, out);
}

cms_bus_err ctev_activated(const ctev_contract *c, int64_t starts_at_us, int64_t ends_at_us,
                           double max_epsilon, double delta, bool automatic, const char *supersedes,
                           const char *actor, const char *corr, cms_bus_event *out)
{
    Cms__V1__Envelope env = CMS__V1__ENVELOPE__INIT;
    Cms__V1__ContractActivated b = CMS__V1__CONTRACT_ACTIVATED__INIT;
    CONTRACT_FIELDS(b, c);
    b.starts_at_us = starts_at_us;
    b.ends_at_us = ends_at_us;
    b.max_epsilon = max_epsilon;
    b.delta = delta;
    b.automatic = automatic;
    b.supersedes = (char *)str(supersedes);
    env.body_case = CMS__V1__ENVELOPE__BODY_CONTRACT_ACTIVATED;
    env.contract_activated = &b;
    return build(&env, "contract.activated", c, actor, corr, out);
}

cms_bus_err ctev_completed(const ctev_contract *c, const char *reason, const char *superseded_by,
                           const char *actor, const char *corr, cms_bus_event *out)
{
    Cms__V1__Envelope env = CMS__V1__ENVELOPE__INIT;
    Cms__V1__ContractCompleted b = CMS__V1__CONTRACT_COMPLETED__INIT;
    CONTRACT_FIELDS(b, c);
    b.reason = (char *)str(reason);
    b.superseded_by = (char *)str(superseded_by);
    env.body_case = CMS__V1__ENVELOPE__BODY_CONTRACT_COMPLETED;
    env.contract_completed = &b;
    return build(&env, "contract.completed", c, actor, corr, out);
}

cms_bus_err ctev_terminated(const ctev_contract *c, const char *old_status, const char *side,
                            const char *reason, const char *actor, const char *corr,
                            cms_bus_event *out)
{
    Cms__V1__Envelope env = CMS__V1__ENVELOPE__INIT;
    Cms__V1__ContractTerminated b = CMS__V1__CONTRACT_TERMINATED__INIT;
    CONTRACT_FIELDS(b, c);
    b.old_status = (char *)str(old_status);
    b.terminated_by = (char *)str(actor);
    b.side = (char *)str(side);
    b.reason = (char *)str(reason);
    env.body_case = CMS__V1__ENVELOPE__BODY_CONTRACT_TERMINATED;
    env.contract_terminated = &b;
    return build(&env, "contract.terminated", c, actor, corr, out);
}

cms_bus_err ctev_expired(const ctev_contract *c, const char *old_status, int64_t ends_at_us,
                         cms_bus_event *out)
{
    Cms__V1__Envelope env = CMS__V1__ENVELOPE__INIT;
    Cms__V1__ContractExpired b = CMS__V1__CONTRACT_EXPIRED__INIT;
    CONTRACT_FIELDS(b, c);
    b.old_status = (char *)str(old_status);
    b.ends_at_us = ends_at_us;
    env.body_case = CMS__V1__ENVELOPE__BODY_CONTRACT_EXPIRED;
    env.contract_expired = &b;
    return build(&env, "contract.expired", c, CMS_BUS_SYSTEM_ACTOR, NULL, out);
}

cms_bus_err ctev_amended(const ctev_contract *c, const char *amendment_id, const char *content_hash,
                         const char *actor, const char *corr, cms_bus_event *out)
{
    Cms__V1__Envelope env = CMS__V1__ENVELOPE__INIT;
    Cms__V1__ContractAmended b = CMS__V1__CONTRACT_AMENDED__INIT;
    CONTRACT_FIELDS(b, c);
    b.amendment_id = (char *)str(amendment_id);
    b.content_hash = (char *)str(content_hash);
    env.body_case = CMS__V1__ENVELOPE__BODY_CONTRACT_AMENDED;
    env.contract_amended = &b;
    return build(&env, "contract.amended", c, actor, corr, out);
}
