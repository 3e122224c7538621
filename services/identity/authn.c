/* Who is acting: the authenticate verb, which every other service asks,
 * and the resolver cms-identity itself authenticates its callers with,
 * which reads its own tables. A refusal costs one hash comparison whatever
 * the reason, so timing tells nothing.
 *
 * What a flood of keys may cost the database is bounded: keys of one
 * credential id share one look-up while it runs; an id found not to exist
 * is refused without a look-up for a while (negcache.h); and at most
 * max_auth_lookups look-ups are in flight, a key beyond them being
 * answered UNAVAILABLE at once. */
#include "identity_int.h"

#include "cms/v1/envelope.pb-c.h"

#include "hashtab.h"
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

/* keys of one credential id waiting for its look-up, at most */
#define MAX_KEYS_PER_LOOKUP 256

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

/* One key waiting for the look-up of its credential. */
typedef struct resolve_op {
    uint8_t secret[CMS_APIKEY_SECRET_BYTES];
    cms_auth_cb done;
    void *done_arg;
    struct resolve_op *next;
} resolve_op;

/* The look-up of one credential id, shared by every key of that id that
 * comes while it runs (each checked against the row with its own secret). */
typedef struct lookup {
    idsvc *s;
    cms_uuid id;
    char cred_id[CMS_UUID_STRLEN + 1];
    resolve_op *ops;
    size_t nops;
    UT_hash_handle hh;
} lookup;

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

/* The answer to one key of the credential row r (NULL: none found). */
static cms_auth_err check_key(idsvc *s, const resolve_op *op, const char *cred_id,
                              const PGresult *r, cms_principal *p)
{
    bool found = r != NULL;
    /* the same hash comparisons whatever the outcome, so timing tells
     * nothing: one, or two while a previous key is kept */
    const char *stored = found ? PQgetvalue(r, 0, 0) : s->dummy_hash;
    bool match = cms_apikey_verify(s->o.server_key, op->secret, stored);
    if (s->o.has_previous_key)
        match = cms_apikey_verify(s->o.previous_key, op->secret, stored) || match;
    if (!found || !match || strcmp(PQgetvalue(r, 0, 7), "t") != 0 ||
        strcmp(PQgetvalue(r, 0, 4), "active") != 0)
        return CMS_AUTH_DENIED;
    memset(p, 0, sizeof *p);
    snprintf(p->identity_id, sizeof p->identity_id, "%s", PQgetvalue(r, 0, 1));
    snprintf(p->name, sizeof p->name, "%s", PQgetvalue(r, 0, 2));
    snprintf(p->type, sizeof p->type, "%s", PQgetvalue(r, 0, 3));
    snprintf(p->status, sizeof p->status, "%s", PQgetvalue(r, 0, 4));
    p->expires_at_us = idsvc_i64(r, 0, 6);
    memcpy(p->credential_id, cred_id, sizeof p->credential_id);
    return parse_roles(PQgetvalue(r, 0, 5), p) ? CMS_AUTH_OK : CMS_AUTH_DENIED;
}

/* Answers every key of l with row r (NULL: none found), or with code when
 * the look-up failed, and frees l. Unlinked first: an answer may start
 * another look-up of the same id. */
static void lookup_answer(lookup *l, cms_pg_err err, const PGresult *r)
{
    idsvc *s = l->s;
    HASH_DEL(s->lookups, l);
    s->nlookups--;
    if (err == CMS_PG_OK && r == NULL)
        idneg_note(s->unknown, &l->id, uv_now(cms_service_loop(s->svc)));
    resolve_op *op = l->ops;
    while (op) {
        resolve_op *next = op->next;
        cms_principal p;
        cms_auth_err code =
            err == CMS_PG_OK ? check_key(s, op, l->cred_id, r, &p) : CMS_AUTH_UNAVAILABLE;
        sodium_memzero(op->secret, sizeof op->secret);
        op->done(op->done_arg, code, code == CMS_AUTH_OK ? &p : NULL);
        free(op);
        op = next;
    }
    free(l);
}

static void key_looked_up(void *arg, cms_pg_err err, const cms_pg_result *res)
{
    lookup *l = arg;
    const PGresult *r = err == CMS_PG_OK ? cms_pg_result_get(res, 0) : NULL;
    lookup_answer(l, err, r && PQntuples(r) == 1 ? r : NULL);
}

void idsvc_resolve(void *arg, const char *key, cms_auth_cb done, void *done_arg)
{
    idsvc *s = arg;
    cms_uuid id;
    lookup *l = NULL;
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
    cms_auth_err refuse = CMS_AUTH_OK;
    HASH_FIND(hh, s->lookups, id.b, sizeof id.b, l);
    if (l == NULL && idneg_unknown(s->unknown, &id, uv_now(cms_service_loop(s->svc)))) {
        /* looked up a moment ago and not there: no look-up again */
        cms_counter_add(s->m_negative_hits, 1);
        refuse = CMS_AUTH_DENIED;
    } else if (l != NULL ? l->nops >= MAX_KEYS_PER_LOOKUP : s->nlookups >= s->o.max_auth_lookups) {
        /* the database is not queued for without bound: the caller retries */
        cms_counter_add(s->m_lookups_refused, 1);
        refuse = CMS_AUTH_UNAVAILABLE;
    }
    if (refuse != CMS_AUTH_OK) {
        sodium_memzero(op->secret, sizeof op->secret);
        free(op);
        done(done_arg, refuse, NULL);
        return;
    }
    op->done = done;
    op->done_arg = done_arg;
    if (l != NULL) { /* that id is being looked up: its row answers this key too */
        op->next = l->ops;
        l->ops = op;
        l->nops++;
        return;
    }
    if ((l = calloc(1, sizeof *l)) == NULL) {
        sodium_memzero(op->secret, sizeof op->secret);
        free(op);
        done(done_arg, CMS_AUTH_UNAVAILABLE, NULL);
        return;
    }
    l->s = s;
    l->id = id;
    cms_uuid_format(&id, l->cred_id);
    l->ops = op;
    l->nops = 1;
    HASH_ADD(hh, s->lookups, id.b, sizeof l->id.b, l);
    s->nlookups++;
    cms_counter_add(s->m_lookups, 1);
    cms_pg_job *job = cms_pg_job_new();
    const char *v[] = {l->cred_id};
    if (job == NULL || cms_pg_job_exec(job, s->st_auth, v, NULL, NULL) != CMS_PG_OK ||
        cms_pg_submit(s->pg, &job, key_looked_up, l) != CMS_PG_OK) {
        cms_pg_job_free(job);
        lookup_answer(l, CMS_PG_EUNAVAILABLE, NULL);
    }
}

void idsvc_credential_issued(idsvc *s, const char *cred_id)
{
    cms_uuid id;
    if (cms_uuid_parse(cred_id, strlen(cred_id), &id))
        idneg_forget(s->unknown, &id);
}

/* credential.issued, from any replica: that id exists now */
static void on_issued(void *arg, cms_nats_msg *m)
{
    idsvc *s = arg;
    Cms__V1__Envelope *env =
        cms__v1__envelope__unpack(NULL, cms_nats_msg_len(m), cms_nats_msg_data(m));
    if (env == NULL)
        idneg_clear(s->unknown); /* cannot tell which: forget every one */
    else if (strcmp(env->event_type, "credential.issued") == 0)
        idsvc_credential_issued(s, env->resource_id);
    if (env)
        cms__v1__envelope__free_unpacked(env, NULL);
    cms_nats_msg_destroy(m);
}

int idsvc_authn_start(idsvc *s)
{
    cms_metrics *mx = cms_metrics_default();
    s->m_lookups = cms_metrics_counter(mx, "cms_identity_auth_lookups_total",
                                       "Credential look-ups of API keys in the database", NULL);
    s->m_negative_hits =
        cms_metrics_counter(mx, "cms_identity_auth_negative_hits_total",
                            "API keys refused as of an id found unknown a moment ago", NULL);
    s->m_lookups_refused =
        cms_metrics_counter(mx, "cms_identity_auth_lookups_refused_total",
                            "API keys answered UNAVAILABLE: too many look-ups in flight", NULL);
    char subject[CMS_BUS_SUBJECT_MAX];
    if (cms_bus_event_subject(subject, sizeof subject, "credential.issued") != CMS_BUS_OK)
        return -1;
    return cms_nats_subscribe(cms_service_nats(s->svc), subject, NULL, on_issued, s,
                              &s->issued_sub) == 0
               ? 0
               : -1;
}

void idsvc_authn_stop(idsvc *s)
{
    cms_nats_unsubscribe(s->issued_sub);
    s->issued_sub = NULL;
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
