/* Who is acting: the authenticate verb, which every other service asks,
 * and the resolver cms-identity itself authenticates its callers with,
 * which reads its own tables. A refusal costs one hash comparison whatever
 * the reason, so timing tells nothing. */
#include "identity_int.h"

#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* SQL reads best as written */
// clang-format off
static const char SQL_AUTH[] =
    "SELECT c.value, i.id::text, i.name, i.type::text, i.status::text, "
    "coalesce(i.metadata -> 'roles', '[]'::jsonb)::text, " IDSQL_US("c.expires_at") ", "
    "(c.revoked_at IS NULL AND c.expired_at IS NULL AND c.expires_at > now()) "
    "FROM credentials c JOIN identities i ON i.id = c.identity_id "
    "WHERE c.id = $1::uuid AND c.type = 'api_key'";
// clang-format on

static void authenticated(void *arg, cms_auth_err res, const cms_principal *p)
{
    cms_cmd_req *req = arg;
    if (res == CMS_AUTH_OK) {
        Cms__V1__Principal pb;
        char *roles[CMS_AUTH_MAX_ROLES];
        cms_principal_to_pb(p, &pb, roles);
        cms_cmd_reply(req, &pb.base);
    } else if (res == CMS_AUTH_DENIED) {
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__PERMISSION_DENIED, "api_key",
                     "the API key is not accepted");
    } else {
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__UNAVAILABLE, NULL,
                     "the API key cannot be checked now; retry");
    }
}

static void h_authenticate(void *arg, cms_cmd_req *req)
{
    idsvc *s = arg;
    const Cms__V1__Authenticate *m = (const void *)cms_cmd_req_body(req);
    cms_auth_resolve(s->auth, m->api_key, authenticated, req);
}

typedef struct resolve_op {
    idsvc *s;
    uint8_t secret[CMS_APIKEY_SECRET_BYTES];
    char cred_id[CMS_UUID_STRLEN + 1];
    cms_auth_cb done;
    void *done_arg;
} resolve_op;

static bool parse_roles(const char *text, cms_principal *p)
{
    json_t *j = json_loads(text, 0, NULL);
    bool ok = json_is_array(j);
    p->nroles = 0;
    for (size_t i = 0; ok && i < json_array_size(j) && p->nroles < CMS_AUTH_MAX_ROLES; i++) {
        json_t *r = json_array_get(j, i);
        if (json_is_string(r) && json_string_length(r) < CMS_AUTH_ROLE_MAX)
            snprintf(p->roles[p->nroles++], CMS_AUTH_ROLE_MAX, "%s", json_string_value(r));
    }
    json_decref(j);
    return ok;
}

static void key_looked_up(void *arg, cms_pg_err err, const cms_pg_result *res)
{
    resolve_op *op = arg;
    idsvc *s = op->s;
    cms_auth_err code = CMS_AUTH_DENIED;
    cms_principal p;
    memset(&p, 0, sizeof p);
    const PGresult *r = err == CMS_PG_OK ? cms_pg_result_get(res, 0) : NULL;
    if (err != CMS_PG_OK) {
        code = CMS_AUTH_UNAVAILABLE;
        goto out;
    }
    bool found = PQntuples(r) == 1;
    /* one hash comparison whatever the outcome, so timing tells nothing */
    bool match =
        cms_apikey_verify(s->o.server_key, op->secret, found ? PQgetvalue(r, 0, 0) : s->dummy_hash);
    if (!found || !match || strcmp(PQgetvalue(r, 0, 7), "t") != 0 ||
        strcmp(PQgetvalue(r, 0, 4), "active") != 0)
        goto out;
    snprintf(p.identity_id, sizeof p.identity_id, "%s", PQgetvalue(r, 0, 1));
    snprintf(p.name, sizeof p.name, "%s", PQgetvalue(r, 0, 2));
    snprintf(p.type, sizeof p.type, "%s", PQgetvalue(r, 0, 3));
    snprintf(p.status, sizeof p.status, "%s", PQgetvalue(r, 0, 4));
    p.expires_at_us = idsvc_i64(r, 0, 6);
    if (!parse_roles(PQgetvalue(r, 0, 5), &p))
        goto out;
    code = CMS_AUTH_OK;
out:
    sodium_memzero(op->secret, sizeof op->secret);
    memcpy(p.credential_id, op->cred_id, sizeof p.credential_id);
    op->done(op->done_arg, code, code == CMS_AUTH_OK ? &p : NULL);
    free(op);
}

void idsvc_resolve(void *arg, const char *key, cms_auth_cb done, void *done_arg)
{
    idsvc *s = arg;
    cms_uuid id;
    char ids[CMS_UUID_STRLEN + 1];
    resolve_op *op = calloc(1, sizeof *op);
    if (s == NULL || op == NULL) {
        free(op);
        done(done_arg, CMS_AUTH_UNAVAILABLE, NULL);
        return;
    }
    if (!cms_apikey_parse(key, strlen(key), &id, op->secret)) {
        free(op);
        done(done_arg, CMS_AUTH_DENIED, NULL);
        return;
    }
    cms_uuid_format(&id, ids);
    memcpy(op->cred_id, ids, sizeof ids);
    op->s = s;
    op->done = done;
    op->done_arg = done_arg;
    cms_pg_job *job = cms_pg_job_new();
    const char *v[] = {ids};
    if (job == NULL || cms_pg_job_exec(job, s->st_auth, v, NULL, NULL) != CMS_PG_OK ||
        cms_pg_submit(s->pg, &job, key_looked_up, op) != CMS_PG_OK) {
        cms_pg_job_free(job);
        sodium_memzero(op->secret, sizeof op->secret);
        free(op);
        done(done_arg, CMS_AUTH_UNAVAILABLE, NULL);
    }
}

idsvc_err idsvc_register_authn(idsvc *s, cms_cmd *c)
{
    s->st_auth = cms_pg_prepare(s->pg, "identity_auth", SQL_AUTH, 1, NULL);
    if (s->st_auth == NULL ||
        cms_cmd_register_open(c, "authenticate", &cms__v1__authenticate__descriptor, h_authenticate,
                              s) != 0)
        return IDSVC_ESETUP;
    return IDSVC_OK;
}
