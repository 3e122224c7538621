/* What cms-contracts knows of identities: their status and their public
 * keys, from identity and credential events through its own durable
 * consumers (common/consumer), never from the identity tables. Each event
 * is applied once (the consumer records it with its effect); an event
 * older than the status stored changes nothing, so a replay of the stream
 * over the seed of migration 0011 leaves the newest status. */
#include "contracts_int.h"

#include <stdio.h>
#include <string.h>

/* SQL reads best as written */
// clang-format off
static const char SQL_PARTY[] =
    "INSERT INTO contract_parties (identity_id, status, event_at) VALUES ($1::uuid, "
    "$2::identity_status, " CMS_PG_SQL_FROM_US("$3") ") ON CONFLICT (identity_id) DO UPDATE "
    "SET status = EXCLUDED.status, event_at = EXCLUDED.event_at, updated_at = now() "
    "WHERE contract_parties.event_at <= EXCLUDED.event_at";
static const char SQL_KEY_ISSUED[] =
    "INSERT INTO contract_party_keys (credential_id, identity_id, public_key, expires_at) "
    "VALUES ($1::uuid, $2::uuid, $3, " CMS_PG_SQL_FROM_US("$4") ") "
    "ON CONFLICT (credential_id) DO NOTHING";
static const char SQL_KEY_REVOKED[] =
    "UPDATE contract_party_keys SET revoked_at = coalesce(revoked_at, "
    CMS_PG_SQL_FROM_US("$2") ") WHERE credential_id = $1::uuid";
// clang-format on

static bool is_uuid(const char *s)
{
    cv_err e;
    return s && cv_uuid(s, "id", &e);
}

static cms_consumer_verdict add(cms_pg_job *job, const cms_pg_stmt *st, const char *const *v)
{
    return cms_pg_job_exec(job, st, v, NULL, NULL) == CMS_PG_OK ? CMS_CONSUMER_APPLY
                                                                : CMS_CONSUMER_RETRY;
}

ctsvc_err ctsvc_register_parties(ctsvc *s)
{
    return ctsvc_prepare(s, &s->st_party, "party", SQL_PARTY, 3) &&
                   ctsvc_prepare(s, &s->st_key_issued, "key_issued", SQL_KEY_ISSUED, 4) &&
                   ctsvc_prepare(s, &s->st_key_revoked, "key_revoked", SQL_KEY_REVOKED, 2)
               ? CTSVC_OK
               : CTSVC_ESETUP;
}

cms_consumer_verdict ctsvc_on_identity(void *arg, const Cms__V1__Envelope *env, cms_pg_job *job,
                                       const char **reason)
{
    ctsvc *s = arg;
    const char *id, *status;
    if (env->body_case == CMS__V1__ENVELOPE__BODY_IDENTITY_CREATED) {
        id = env->identity_created->identity_id;
        status = env->identity_created->status;
    } else if (env->body_case == CMS__V1__ENVELOPE__BODY_IDENTITY_STATUS_CHANGED) {
        id = env->identity_status_changed->identity_id;
        status = env->identity_status_changed->new_status;
    } else {
        return CMS_CONSUMER_SKIP; /* another identity event, or a foreign one */
    }
    if (!is_uuid(id) || strcmp(id, env->resource_id) != 0) {
        *reason = "identity_body_invalid";
        return CMS_CONSUMER_DEAD;
    }
    char at[24];
    snprintf(at, sizeof at, "%lld", (long long)env->occurred_at_us);
    const char *v[] = {id, status, at};
    return add(job, s->st_party, v);
}

cms_consumer_verdict ctsvc_on_credential(void *arg, const Cms__V1__Envelope *env, cms_pg_job *job,
                                         const char **reason)
{
    ctsvc *s = arg;
    char t[24];
    if (env->body_case == CMS__V1__ENVELOPE__BODY_CREDENTIAL_ISSUED) {
        const Cms__V1__CredentialIssued *b = env->credential_issued;
        if (strcmp(b->type, "public_key") != 0)
            return CMS_CONSUMER_SKIP;
        if (!is_uuid(b->credential_id) || !is_uuid(b->identity_id) || b->public_key[0] == '\0') {
            *reason = "credential_body_invalid";
            return CMS_CONSUMER_DEAD;
        }
        snprintf(t, sizeof t, "%lld", (long long)b->expires_at_us);
        const char *v[] = {b->credential_id, b->identity_id, b->public_key, t};
        return add(job, s->st_key_issued, v);
    }
    if (env->body_case == CMS__V1__ENVELOPE__BODY_CREDENTIAL_REVOKED) {
        const Cms__V1__CredentialRevoked *b = env->credential_revoked;
        if (!is_uuid(b->credential_id)) {
            *reason = "credential_body_invalid";
            return CMS_CONSUMER_DEAD;
        }
        snprintf(t, sizeof t, "%lld", (long long)env->occurred_at_us);
        const char *v[] = {b->credential_id, t};
        return add(job, s->st_key_revoked, v); /* not a public key: changes nothing */
    }
    /* expiry needs nothing: the key's expires_at is stored */
    return CMS_CONSUMER_SKIP;
}
