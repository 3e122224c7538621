/* The credentials of cms-identity: issue_credential, revoke_credential and
 * list_credentials. Issuing and revoking depend on the current state of
 * the identity or the credential, so each is a transition
 * (common/transition); an attestation's issue activates its enclave, and a
 * revocation of an enclave's last valid attestation makes it inactive
 * again, each in the same transaction with its event. */
#include "identity_int.h"

#include "log.h"
#include "transition.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* SQL reads best as written */
// clang-format off
static const char SQL_STATE[] = "SELECT status::text, type::text FROM identities WHERE id = $1::uuid";
/* $5 the enclave */
static const char SQL_ACTIVATE_ENCLAVE[] =
    "WITH u AS (UPDATE identities SET status = 'active', updated_at = now() "
    "WHERE id = $5::uuid AND type = 'enclave' AND status = 'inactive' AND "
    IDSQL_VALID_ATTESTATION("$5::uuid") " RETURNING id), "
    "o AS (" CMS_OUTBOX_SQL_FROM("u") ") SELECT count(*) FROM u";
static const char SQL_CRED_STATE[] =
    "SELECT c.identity_id::text, c.type::text, c.revoked_at IS NOT NULL, "
    "(c.expired_at IS NOT NULL OR c.expires_at <= now()), " IDSQL_IS_ADMIN("i.metadata") ", "
    IDSQL_LAST_ADMIN_KEY("$1::uuid") " FROM credentials c JOIN identities i "
    "ON i.id = c.identity_id WHERE c.id = $1::uuid";
/* $5 the credential, $6 the reason; never the last valid key of the last
 * admin (under IDSQL_ADMIN_LOCK) */
static const char SQL_REVOKE[] =
    "WITH u AS (UPDATE credentials SET revoked_at = now(), revoke_reason = $6 "
    "WHERE id = $5::uuid AND revoked_at IS NULL AND expired_at IS NULL "
    "AND NOT " IDSQL_LAST_ADMIN_KEY("$5::uuid") " "
    "RETURNING " IDSQL_CREDENTIAL_COLS "), o AS (" CMS_OUTBOX_SQL_FROM("u") ") SELECT * FROM u";
static const char SQL_EXISTS[] = "SELECT EXISTS (SELECT 1 FROM identities WHERE id = $1::uuid)";
static const char SQL_CREDENTIALS[] =
    "SELECT " IDSQL_CREDENTIAL_COLS " FROM credentials WHERE identity_id = $1::uuid "
    "ORDER BY created_at, id LIMIT 1000";
// clang-format on

/* ---- issue_credential ---- */

typedef struct issue_op {
    idsvc *s;
    idv_cred_type type;
    char identity_id[CMS_UUID_STRLEN + 1];
    char cred_id[CMS_UUID_STRLEN + 1];
    int64_t expires_at_us;
    char *metadata;
    /* the stored value: the key's hash, the public key, or the measurement */
    char value[IDV_MEASUREMENT_MAX + CMS_APIKEY_HASH_LEN + 64];
    char signer[IDV_SIGNER_MAX + 1];
    char key[CMS_APIKEY_LEN + 1]; /* api_key: the whole key, for the reply only */
} issue_op;

static void issue_release(void *arg)
{
    issue_op *op = arg;
    if (op == NULL)
        return;
    free(op->metadata);
    sodium_memzero(op->key, sizeof op->key);
    free(op);
}

static int issue_read(void *arg, cms_pg_job *job)
{
    issue_op *op = arg;
    const char *v[] = {op->identity_id};
    return cms_pg_job_sql(job, SQL_STATE, 1, v, NULL, NULL);
}

/* The credential and its event, and for an attestation the enclave's
 * activation and its event. */
static bool issue_write(issue_op *op, cms_cmd_req *req, cms_pg_job *write)
{
    char exp[24];
    snprintf(exp, sizeof exp, "%lld", (long long)op->expires_at_us);
    cms_bus_event ev = {0}, act = {0};
    const char *v[] = {op->cred_id, op->identity_id, idv_cred_type_name(op->type),     op->value,
                       exp,         op->metadata,    op->signer[0] ? op->signer : NULL};
    const char *va[] = {op->identity_id};
    bool ok =
        idev_credential_issued(op->cred_id, op->identity_id, idv_cred_type_name(op->type),
                               op->type == IDV_PUBLIC_KEY ? op->value : NULL, op->expires_at_us,
                               cms_cmd_req_actor(req), idsvc_correlation(req), &ev) == CMS_BUS_OK &&
        cms_outbox_add_sql(write, IDSQL_ISSUE, IDEV_SOURCE, &ev, 7, v) == CMS_OUTBOX_OK;
    if (ok && op->type == IDV_ATTESTATION)
        ok = idev_status_changed(op->identity_id, "inactive", "active", "attestation accepted",
                                 cms_cmd_req_actor(req), idsvc_correlation(req),
                                 &act) == CMS_BUS_OK &&
             cms_outbox_add_sql(write, SQL_ACTIVATE_ENCLAVE, IDEV_SOURCE, &act, 1, va) ==
                 CMS_OUTBOX_OK;
    cms_bus_event_release(&ev);
    cms_bus_event_release(&act);
    return ok;
}

static cms_transition_step issue_decide(void *arg, cms_cmd_req *req, const cms_pg_result *res,
                                        cms_pg_job *write)
{
    issue_op *op = arg;
    const PGresult *r = cms_pg_result_get(res, 0);
    if (PQntuples(r) == 0) {
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__NOT_FOUND, "identity_id", "no such identity");
        return CMS_TRANSITION_ANSWERED;
    }
    if (strcmp(PQgetvalue(r, 0, 0), "suspended") == 0) {
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__FAILED_PRECONDITION, "identity_id",
                     "the identity is suspended: reinstate it first");
        return CMS_TRANSITION_ANSWERED;
    }
    if (op->type == IDV_ATTESTATION && strcmp(PQgetvalue(r, 0, 1), "enclave") != 0) {
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__FAILED_PRECONDITION, "type",
                     "only an enclave holds an attestation");
        return CMS_TRANSITION_ANSWERED;
    }
    if (!issue_write(op, req, write)) {
        idsvc_fail_oom(req);
        return CMS_TRANSITION_ANSWERED;
    }
    return CMS_TRANSITION_WRITE;
}

static bool issue_written(void *arg, cms_cmd_req *req, const cms_pg_result *res)
{
    issue_op *op = arg;
    const PGresult *r = cms_pg_result_get(res, 0);
    if (PQntuples(r) == 0)
        return false; /* suspended since it was read: the read says so */
    idexp_note(op->s->expiry, op->expires_at_us);
    idsvc_credential_issued(op->s, op->cred_id);
    cms_outbox_kick(op->s->outbox);
    Cms__V1__Credential c;
    idsvc_row_credential(r, 0, &c);
    if (op->type == IDV_API_KEY)
        c.api_key = op->key;
    cms_cmd_reply(req, &c.base);
    return true;
}

static const cms_transition_ops issue_ops = {.what = "issue_credential",
                                             .object = "identity",
                                             .read = issue_read,
                                             .decide = issue_decide,
                                             .written = issue_written,
                                             .release = issue_release};

static bool measurement_allowed(const idsvc *s, const char *m)
{
    for (int i = 0; i < s->o.nmeasurements; i++)
        if (strcmp(s->o.measurements[i], m) == 0)
            return true;
    return false;
}

/* What the request asks for, checked: false after answering req. */
static bool issue_check(idsvc *s, cms_cmd_req *req, const Cms__V1__IssueCredential *m,
                        idv_cred_type *type, const char **metadata, char meas[])
{
    idv_err e;
    uint8_t pk[IDV_PUBLIC_KEY_BYTES];
    if (!idv_uuid(m->identity_id, "identity_id", &e) || !idv_cred_type_parse(m->type, type, &e)) {
        idsvc_fail_invalid(req, &e);
        return false;
    }
    bool admin = idsvc_is_admin(req);
    if (!admin && !(idsvc_is_self(req, m->identity_id) && *type != IDV_ATTESTATION)) {
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__PERMISSION_DENIED, NULL,
                     "only an admin issues credentials to another identity, or attestations");
        return false;
    }
    /* whoever holds a credential of the system identity acts as the system */
    if (strcmp(m->identity_id, CMS_BUS_SYSTEM_ACTOR) == 0) {
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__FAILED_PRECONDITION, "identity_id",
                     "the system identity holds no credentials");
        return false;
    }
    int64_t max_s = *type == IDV_API_KEY      ? s->o.max_api_key_s
                    : *type == IDV_PUBLIC_KEY ? s->o.max_public_key_s
                                              : s->o.max_attestation_s;
    const cms_principal *p = cms_cmd_req_principal(req);
    if (!idv_expiry(m->expires_at_us, cms_bus_now_us(), max_s, &e) ||
        (!admin && !idv_child_expiry(m->expires_at_us, p ? p->expires_at_us : 0, &e)) ||
        !idv_metadata(m->metadata_json, "metadata_json", metadata, &e) ||
        (*type == IDV_PUBLIC_KEY && !idv_public_key(m->public_key, pk, &e)) ||
        (*type == IDV_ATTESTATION && (!idv_measurement(m->measurement, meas, &e) ||
                                      !idv_text(m->signer, "signer", IDV_SIGNER_MAX, &e)))) {
        idsvc_fail_invalid(req, &e);
        return false;
    }
    if (*type == IDV_ATTESTATION && m->signer[0] == '\0') {
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__INVALID_ARGUMENT, "signer",
                     "signer is required for an attestation");
        return false;
    }
    if (*type == IDV_ATTESTATION && !measurement_allowed(s, meas)) {
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__FAILED_PRECONDITION, "measurement",
                     "the measurement is not on the allowlist (CMS_ENCLAVE_MEASUREMENTS)");
        return false;
    }
    return true;
}

static void h_issue(void *arg, cms_cmd_req *req)
{
    idsvc *s = arg;
    const Cms__V1__IssueCredential *m = (const void *)cms_cmd_req_body(req);
    idv_cred_type type;
    const char *metadata;
    char meas[IDV_MEASUREMENT_MAX + 1];
    if (!issue_check(s, req, m, &type, &metadata, meas))
        return;
    issue_op *op = calloc(1, sizeof *op);
    if (op == NULL || (op->metadata = strdup(metadata)) == NULL) {
        issue_release(op);
        idsvc_fail_oom(req);
        return;
    }
    op->s = s;
    op->type = type;
    op->expires_at_us = m->expires_at_us;
    snprintf(op->identity_id, sizeof op->identity_id, "%s", m->identity_id);
    cms_uuid cid;
    cms_uuid_v7(&cid);
    cms_uuid_format(&cid, op->cred_id);
    switch (type) {
    case IDV_API_KEY: {
        uint8_t secret[CMS_APIKEY_SECRET_BYTES];
        if (cms_apikey_generate(&cid, op->key, secret) != 0) {
            issue_release(op);
            cms_cmd_fail(req, CMS__V1__ERROR_CODE__INTERNAL, NULL, "no randomness");
            return;
        }
        cms_apikey_hash(s->o.server_key, secret, op->value);
        sodium_memzero(secret, sizeof secret);
        break;
    }
    case IDV_PUBLIC_KEY:
        snprintf(op->value, sizeof op->value, "%s", m->public_key);
        break;
    case IDV_ATTESTATION:
        snprintf(op->value, sizeof op->value, "%s", meas);
        snprintf(op->signer, sizeof op->signer, "%s", m->signer);
        break;
    }
    cms_transition_run(s->pg, req, &issue_ops, op);
}

/* ---- revoke_credential ---- */

typedef struct revoke_op {
    idsvc *s;
    char id[CMS_UUID_STRLEN + 1];
    char identity_id[CMS_UUID_STRLEN + 1];
    bool attestation;
    char reason[IDV_REASON_MAX + 1];
} revoke_op;

static int revoke_read(void *arg, cms_pg_job *job)
{
    revoke_op *op = arg;
    const char *v[] = {op->id};
    return cms_pg_job_sql(job, SQL_CRED_STATE, 1, v, NULL, NULL);
}

static cms_transition_step revoke_decide(void *arg, cms_cmd_req *req, const cms_pg_result *res,
                                         cms_pg_job *write)
{
    revoke_op *op = arg;
    const PGresult *r = cms_pg_result_get(res, 0);
    if (PQntuples(r) == 0) {
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__NOT_FOUND, "id", "no such credential");
        return CMS_TRANSITION_ANSWERED;
    }
    snprintf(op->identity_id, sizeof op->identity_id, "%s", PQgetvalue(r, 0, 0));
    op->attestation = strcmp(PQgetvalue(r, 0, 1), "attestation") == 0;
    if (!idsvc_is_admin(req) && !idsvc_is_self(req, op->identity_id)) {
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__PERMISSION_DENIED, NULL,
                     "only an admin revokes another identity's credential");
        return CMS_TRANSITION_ANSWERED;
    }
    if (strcmp(PQgetvalue(r, 0, 2), "t") == 0) {
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__FAILED_PRECONDITION, "id",
                     "the credential is already revoked");
        return CMS_TRANSITION_ANSWERED;
    }
    if (strcmp(PQgetvalue(r, 0, 3), "t") == 0) {
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__FAILED_PRECONDITION, "id",
                     "the credential has expired");
        return CMS_TRANSITION_ANSWERED;
    }
    if (strcmp(PQgetvalue(r, 0, 5), "t") == 0) {
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__FAILED_PRECONDITION, "id",
                     "the credential is the last valid API key of the last active admin: issue "
                     "an admin another API key first");
        return CMS_TRANSITION_ANSWERED;
    }
    cms_bus_event ev = {0}, lapse = {0};
    const char *v[] = {op->id, op->reason};
    const char *vl[] = {op->identity_id};
    /* an admin's key may be the last: checked under the lock */
    bool admin_key =
        strcmp(PQgetvalue(r, 0, 4), "t") == 0 && strcmp(PQgetvalue(r, 0, 1), "api_key") == 0;
    bool ok = (!admin_key ||
               cms_pg_job_lead_sql(write, IDSQL_ADMIN_LOCK, 0, NULL, NULL, NULL) == CMS_PG_OK) &&
              idev_credential_revoked(op->id, op->identity_id, op->reason, cms_cmd_req_actor(req),
                                      idsvc_correlation(req), &ev) == CMS_BUS_OK &&
              cms_outbox_add_sql(write, SQL_REVOKE, IDEV_SOURCE, &ev, 2, v) == CMS_OUTBOX_OK;
    if (ok && op->attestation)
        ok = idev_status_changed(op->identity_id, "active", "inactive", "attestation revoked",
                                 cms_cmd_req_actor(req), idsvc_correlation(req),
                                 &lapse) == CMS_BUS_OK &&
             cms_outbox_add_sql(write, IDSQL_ENCLAVE_LAPSE, IDEV_SOURCE, &lapse, 1, vl) ==
                 CMS_OUTBOX_OK;
    cms_bus_event_release(&ev);
    cms_bus_event_release(&lapse);
    if (!ok) {
        idsvc_fail_oom(req);
        return CMS_TRANSITION_ANSWERED;
    }
    return CMS_TRANSITION_WRITE;
}

static bool revoke_written(void *arg, cms_cmd_req *req, const cms_pg_result *res)
{
    revoke_op *op = arg;
    const PGresult *r = cms_pg_result_get(res, 0);
    if (PQntuples(r) == 0)
        return false; /* revoked or expired meanwhile: the read says which */
    cms_auth_invalidate(op->s->auth, op->id);
    if (op->attestation)
        cms_auth_invalidate(op->s->auth, op->identity_id);
    cms_outbox_kick(op->s->outbox);
    Cms__V1__Credential c;
    idsvc_row_credential(r, 0, &c);
    cms_cmd_reply(req, &c.base);
    return true;
}

static const cms_transition_ops revoke_ops = {.what = "revoke_credential",
                                              .object = "credential",
                                              .read = revoke_read,
                                              .decide = revoke_decide,
                                              .written = revoke_written};

static void h_revoke(void *arg, cms_cmd_req *req)
{
    idsvc *s = arg;
    const Cms__V1__RevokeCredential *m = (const void *)cms_cmd_req_body(req);
    idv_err e;
    if (!idv_uuid(m->id, "id", &e) || !idv_text(m->reason, "reason", IDV_REASON_MAX, &e)) {
        idsvc_fail_invalid(req, &e);
        return;
    }
    revoke_op *op = calloc(1, sizeof *op);
    if (op == NULL) {
        idsvc_fail_oom(req);
        return;
    }
    *op = (revoke_op){.s = s};
    snprintf(op->id, sizeof op->id, "%s", m->id);
    snprintf(op->reason, sizeof op->reason, "%s", m->reason);
    cms_transition_run(s->pg, req, &revoke_ops, op);
}

/* ---- list_credentials ---- */

static void creds_listed(void *arg, cms_pg_err err, const cms_pg_result *res)
{
    cms_cmd_req *req = arg;
    if (err != CMS_PG_OK) {
        cms_cmd_fail_pg(req, err, res, "list_credentials");
        return;
    }
    const PGresult *ex = cms_pg_result_get(res, 0), *r = cms_pg_result_get(res, 1);
    if (strcmp(PQgetvalue(ex, 0, 0), "t") != 0) {
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__NOT_FOUND, "identity_id", "no such identity");
        return;
    }
    int n = PQntuples(r);
    Cms__V1__Credential *items = calloc((size_t)n + 1, sizeof *items);
    Cms__V1__Credential **ptrs = calloc((size_t)n + 1, sizeof *ptrs);
    if (items == NULL || ptrs == NULL) {
        idsvc_fail_oom(req);
    } else {
        Cms__V1__CredentialList list = CMS__V1__CREDENTIAL_LIST__INIT;
        for (int i = 0; i < n; i++) {
            idsvc_row_credential(r, i, &items[i]);
            ptrs[i] = &items[i];
        }
        list.credentials = ptrs;
        list.n_credentials = (size_t)n;
        cms_cmd_reply(req, &list.base);
    }
    free(items);
    free(ptrs);
}

static void h_list_credentials(void *arg, cms_cmd_req *req)
{
    idsvc *s = arg;
    const Cms__V1__ListCredentials *m = (const void *)cms_cmd_req_body(req);
    idv_err e;
    if (!idv_uuid(m->identity_id, "identity_id", &e)) {
        idsvc_fail_invalid(req, &e);
        return;
    }
    if (!idsvc_is_admin(req) && !idsvc_is_self(req, m->identity_id)) {
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__PERMISSION_DENIED, NULL,
                     "only an admin lists another identity's credentials");
        return;
    }
    cms_pg_job *job = cms_pg_job_new();
    const char *v[] = {m->identity_id};
    if (job == NULL || cms_pg_job_sql(job, SQL_EXISTS, 1, v, NULL, NULL) != CMS_PG_OK ||
        cms_pg_job_sql(job, SQL_CREDENTIALS, 1, v, NULL, NULL) != CMS_PG_OK) {
        cms_pg_job_free(job);
        idsvc_fail_oom(req);
        return;
    }
    (void)cms_cmd_run_read(req, s->pg, job, creds_listed, req);
}

idsvc_err idsvc_register_credentials(idsvc *s, cms_cmd *c)
{
    if (cms_cmd_register(c, "issue_credential", &cms__v1__issue_credential__descriptor, h_issue,
                         s) != 0 ||
        cms_cmd_register(c, "revoke_credential", &cms__v1__revoke_credential__descriptor, h_revoke,
                         s) != 0 ||
        cms_cmd_register(c, "list_credentials", &cms__v1__list_credentials__descriptor,
                         h_list_credentials, s) != 0)
        return IDSVC_ESETUP;
    return IDSVC_OK;
}
