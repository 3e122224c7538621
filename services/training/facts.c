/* What cms-training knows of contracts and identities: their status (and a
 * contract's parties and privacy terms), from their events through its own
 * durable consumers (common/consumer), never from their owners' tables.
 * Each event is applied once (the consumer records it with its effect); an
 * event older than the row stored changes nothing, so a replay of the
 * stream over the seed of migration 0013 leaves the newest facts.
 *
 * A contract that ends (completed, terminated, expired) or a party that is
 * suspended or deactivated marks the jobs it concerns to stop, in the same
 * transaction, with the reason ("contract_terminated", "party_suspended"),
 * and makes them due at once: the tracker then ends the pending ones and
 * tells the running ones to stop. */
#include "training_int.h"

#include <stdio.h>
#include <string.h>

/* SQL reads best as written */
// clang-format off
/* $1 id, $2 provider, $3 consumer, $4 status, $5 max_epsilon (NULL: kept),
 * $6 delta (NULL: kept), $7 when the event happened */
static const char SQL_CONTRACT[] =
    "INSERT INTO training_contracts (contract_id, provider_id, consumer_id, status, max_epsilon, "
    "delta, event_at) VALUES ($1::uuid, $2::uuid, $3::uuid, $4::contract_status, $5::float8, "
    "$6::float8, " CMS_PG_SQL_FROM_US("$7") ") ON CONFLICT (contract_id) DO UPDATE "
    "SET status = EXCLUDED.status, "
    "max_epsilon = coalesce(EXCLUDED.max_epsilon, training_contracts.max_epsilon), "
    "delta = coalesce(EXCLUDED.delta, training_contracts.delta), event_at = EXCLUDED.event_at, "
    "updated_at = now() WHERE training_contracts.event_at <= EXCLUDED.event_at";
static const char SQL_PARTY[] =
    "INSERT INTO training_parties (identity_id, status, event_at) VALUES ($1::uuid, "
    "$2::identity_status, " CMS_PG_SQL_FROM_US("$3") ") ON CONFLICT (identity_id) DO UPDATE "
    "SET status = EXCLUDED.status, event_at = EXCLUDED.event_at, updated_at = now() "
    "WHERE training_parties.event_at <= EXCLUDED.event_at";
/* $1 the contract, $2 the reason */
static const char SQL_MARK_CONTRACT[] =
    "UPDATE training_jobs SET stop_reason = $2, due_at = now(), updated_at = now() "
    "WHERE status IN ('pending', 'running') AND stop_reason IS NULL AND id IN "
    "(SELECT job_id FROM training_job_contracts WHERE contract_id = $1::uuid)";
/* $1 the identity, $2 the reason: the jobs of every contract it is a party to */
static const char SQL_MARK_PARTY[] =
    "UPDATE training_jobs SET stop_reason = $2, due_at = now(), updated_at = now() "
    "WHERE status IN ('pending', 'running') AND stop_reason IS NULL AND id IN "
    "(SELECT l.job_id FROM training_job_contracts l JOIN training_contracts c "
    "USING (contract_id) WHERE c.provider_id = $1::uuid OR c.consumer_id = $1::uuid)";
// clang-format on

static bool is_uuid(const char *s)
{
    tv_err e;
    return s && tv_uuid(s, "id", &e);
}

trsvc_err trsvc_register_facts(trsvc *s)
{
    return trsvc_prepare(s, &s->st_contract, "contract", SQL_CONTRACT, 7) &&
                   trsvc_prepare(s, &s->st_party, "party", SQL_PARTY, 3) &&
                   trsvc_prepare(s, &s->st_mark_contract, "mark_contract", SQL_MARK_CONTRACT, 2) &&
                   trsvc_prepare(s, &s->st_mark_party, "mark_party", SQL_MARK_PARTY, 2)
               ? TRSVC_OK
               : TRSVC_ESETUP;
}

/* The four fields every contract event's body starts with. */
typedef struct contract_fact {
    const char *id, *provider, *consumer, *status;
} contract_fact;

#define FACT_OF(body)                                                                              \
    (contract_fact)                                                                                \
    {                                                                                              \
        (body)->contract_id, (body)->provider_id, (body)->consumer_id, (body)->status              \
    }

static bool contract_of(const Cms__V1__Envelope *env, contract_fact *f)
{
    switch (env->body_case) {
    case CMS__V1__ENVELOPE__BODY_CONTRACT_CREATED:
        *f = FACT_OF(env->contract_created);
        return true;
    case CMS__V1__ENVELOPE__BODY_CONTRACT_UPDATED:
        *f = FACT_OF(env->contract_updated);
        return true;
    case CMS__V1__ENVELOPE__BODY_CONTRACT_SUBMITTED:
        *f = FACT_OF(env->contract_submitted);
        return true;
    case CMS__V1__ENVELOPE__BODY_CONTRACT_SIGNED:
        *f = FACT_OF(env->contract_signed);
        return true;
    case CMS__V1__ENVELOPE__BODY_CONTRACT_FULLY_SIGNED:
        *f = FACT_OF(env->contract_fully_signed);
        return true;
    case CMS__V1__ENVELOPE__BODY_CONTRACT_ACTIVATED:
        *f = FACT_OF(env->contract_activated);
        return true;
    case CMS__V1__ENVELOPE__BODY_CONTRACT_COMPLETED:
        *f = FACT_OF(env->contract_completed);
        return true;
    case CMS__V1__ENVELOPE__BODY_CONTRACT_TERMINATED:
        *f = FACT_OF(env->contract_terminated);
        return true;
    case CMS__V1__ENVELOPE__BODY_CONTRACT_EXPIRED:
        *f = FACT_OF(env->contract_expired);
        return true;
    case CMS__V1__ENVELOPE__BODY_CONTRACT_AMENDED:
        *f = FACT_OF(env->contract_amended);
        return true;
    default:
        return false;
    }
}

static bool contract_status(const char *s)
{
    static const char *const all[] = {"draft",     "review",     "signed", "active",
                                      "completed", "terminated", "expired"};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (strcmp(s, all[i]) == 0)
            return true;
    return false;
}

cms_consumer_verdict trsvc_on_contract(void *arg, const Cms__V1__Envelope *env, cms_pg_job *job,
                                       const char **reason)
{
    trsvc *s = arg;
    contract_fact f;
    if (!contract_of(env, &f))
        return CMS_CONSUMER_SKIP; /* a foreign contract event */
    if (!is_uuid(f.id) || strcmp(f.id, env->resource_id) != 0 || !is_uuid(f.provider) ||
        !is_uuid(f.consumer) || !contract_status(f.status)) {
        *reason = "contract_body_invalid";
        return CMS_CONSUMER_DEAD;
    }
    char at[24], eps[32], delta[32];
    const char *max_eps = NULL, *dl = NULL;
    snprintf(at, sizeof at, "%lld", (long long)env->occurred_at_us);
    if (env->body_case == CMS__V1__ENVELOPE__BODY_CONTRACT_ACTIVATED) {
        const Cms__V1__ContractActivated *a = env->contract_activated;
        if (a->max_epsilon > 0) {
            snprintf(eps, sizeof eps, "%.17g", a->max_epsilon);
            max_eps = eps;
        }
        if (a->delta > 0 && a->delta < 1) {
            snprintf(delta, sizeof delta, "%.17g", a->delta);
            dl = delta;
        }
    }
    const char *v[] = {f.id, f.provider, f.consumer, f.status, max_eps, dl, at};
    if (trsvc_job_actor(s, job, NULL, true, NULL) != CMS_PG_OK ||
        cms_pg_job_exec(job, s->st_contract, v, NULL, NULL) != CMS_PG_OK)
        return CMS_CONSUMER_RETRY;
    if (strcmp(f.status, "completed") == 0 || strcmp(f.status, "terminated") == 0 ||
        strcmp(f.status, "expired") == 0) {
        char why[32];
        snprintf(why, sizeof why, "contract_%s", f.status);
        const char *m[] = {f.id, why};
        if (cms_pg_job_exec(job, s->st_mark_contract, m, NULL, NULL) != CMS_PG_OK)
            return CMS_CONSUMER_RETRY;
    }
    return CMS_CONSUMER_APPLY;
}

cms_consumer_verdict trsvc_on_identity(void *arg, const Cms__V1__Envelope *env, cms_pg_job *job,
                                       const char **reason)
{
    trsvc *s = arg;
    const char *id, *status;
    if (env->body_case == CMS__V1__ENVELOPE__BODY_IDENTITY_CREATED) {
        id = env->identity_created->identity_id;
        status = env->identity_created->status;
    } else if (env->body_case == CMS__V1__ENVELOPE__BODY_IDENTITY_STATUS_CHANGED) {
        id = env->identity_status_changed->identity_id;
        status = env->identity_status_changed->new_status;
    } else {
        return CMS_CONSUMER_SKIP;
    }
    if (!is_uuid(id) || strcmp(id, env->resource_id) != 0) {
        *reason = "identity_body_invalid";
        return CMS_CONSUMER_DEAD;
    }
    char at[24];
    snprintf(at, sizeof at, "%lld", (long long)env->occurred_at_us);
    const char *v[] = {id, status, at};
    if (trsvc_job_actor(s, job, NULL, true, NULL) != CMS_PG_OK ||
        cms_pg_job_exec(job, s->st_party, v, NULL, NULL) != CMS_PG_OK)
        return CMS_CONSUMER_RETRY;
    if (env->body_case == CMS__V1__ENVELOPE__BODY_IDENTITY_STATUS_CHANGED &&
        strcmp(status, "active") != 0) {
        char why[32];
        snprintf(why, sizeof why, "party_%s", status);
        const char *m[] = {id, why};
        if (cms_pg_job_exec(job, s->st_mark_party, m, NULL, NULL) != CMS_PG_OK)
            return CMS_CONSUMER_RETRY;
    }
    return CMS_CONSUMER_APPLY;
}

void trsvc_fact_committed(void *arg, const Cms__V1__Envelope *env)
{
    (void)env;
    trsvc *s = arg;
    /* jobs may have been marked: the tracker looks now */
    trsvc_committed(s, cms_bus_now_us());
}
