/* Events of cms-identity; see events.h. */
#include "identity/events.h"

static cms_bus_err build(Cms__V1__Envelope *env, const char *type, const char *rtype,
                         const char *rid, const char *actor, const char *corr, cms_bus_event *out)
{
    cms_bus_event_header h = {.event_type = type,
                              .resource_type = rtype,
                              .resource_id = rid,
                              .actor_id = actor,
                              .correlation_id = corr,
                              .source = IDEV_SOURCE};
    return cms_bus_event_build(env, &h, out);
}

cms_bus_err idev_identity_created(const char *id, const char *name, const char *type,
                                  const char *status, const char *actor, const char *corr,
                                  cms_bus_event *out)
{
    Cms__V1__Envelope env = CMS__V1__ENVELOPE__INIT;
    Cms__V1__IdentityCreated b = CMS__V1__IDENTITY_CREATED__INIT;
    b.identity_id = (char *)id;
    b.name = (char *)name;
    b.type = (char *)type;
    b.status = (char *)status;
    env.body_case = CMS__V1__ENVELOPE__BODY_IDENTITY_CREATED;
    env.identity_created = &b;
    return build(&env, "identity.created", "identity", id, actor, corr, out);
}

cms_bus_err idev_status_changed(const char *id, const char *old_status, const char *new_status,
                                const char *reason, const char *actor, const char *corr,
                                cms_bus_event *out)
{
    Cms__V1__Envelope env = CMS__V1__ENVELOPE__INIT;
    Cms__V1__IdentityStatusChanged b = CMS__V1__IDENTITY_STATUS_CHANGED__INIT;
    b.identity_id = (char *)id;
    b.old_status = (char *)old_status;
    b.new_status = (char *)new_status;
    b.reason = (char *)(reason ? reason : "");
    env.body_case = CMS__V1__ENVELOPE__BODY_IDENTITY_STATUS_CHANGED;
    env.identity_status_changed = &b;
    return build(&env, "identity.status_changed", "identity", id, actor, corr, out);
}

cms_bus_err idev_credential_issued(const char *cred_id, const char *identity_id, const char *type,
                                   const char *public_key, int64_t expires_at_us, const char *actor,
                                   const char *corr, cms_bus_event *out)
{
    Cms__V1__Envelope env = CMS__V1__ENVELOPE__INIT;
    Cms__V1__CredentialIssued b = CMS__V1__CREDENTIAL_ISSUED__INIT;
    b.credential_id = (char *)cred_id;
    b.identity_id = (char *)identity_id;
    b.type = (char *)type;
    b.public_key = (char *)(public_key ? public_key : "");
    b.expires_at_us = expires_at_us;
    env.body_case = CMS__V1__ENVELOPE__BODY_CREDENTIAL_ISSUED;
    env.credential_issued = &b;
    return build(&env, "credential.issued", "credential", cred_id, actor, corr, out);
}

cms_bus_err idev_credential_revoked(const char *cred_id, const char *identity_id,
                                    const char *reason, const char *actor, const char *corr,
                                    cms_bus_event *out)
{
    Cms__V1__Envelope env = CMS__V1__ENVELOPE__INIT;
    Cms__V1__CredentialRevoked b = CMS__V1__CREDENTIAL_REVOKED__INIT;
    b.credential_id = (char *)cred_id;
    b.identity_id = (char *)identity_id;
    b.reason = (char *)(reason ? reason : "");
    env.body_case = CMS__V1__ENVELOPE__BODY_CREDENTIAL_REVOKED;
    env.credential_revoked = &b;
    return build(&env, "credential.revoked", "credential", cred_id, actor, corr, out);
}

cms_bus_err idev_credential_expired(const char *cred_id, const char *identity_id,
                                    int64_t expires_at_us, cms_bus_event *out)
{
    Cms__V1__Envelope env = CMS__V1__ENVELOPE__INIT;
    Cms__V1__CredentialExpired b = CMS__V1__CREDENTIAL_EXPIRED__INIT;
    b.credential_id = (char *)cred_id;
    b.identity_id = (char *)identity_id;
    b.expires_at_us = expires_at_us;
    env.body_case = CMS__V1__ENVELOPE__BODY_CREDENTIAL_EXPIRED;
    env.credential_expired = &b;
    return build(&env, "credential.expired", "credential", cred_id, CMS_BUS_SYSTEM_ACTOR, NULL,
                 out);
}
