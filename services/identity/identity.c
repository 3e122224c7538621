/* The identities of cms-identity (create, get, list, set_status), what its
 * command files share, and the service's life; see identity.h.
 *
 * Every change is one job (one transaction) that makes the change and
 * writes its event in the same statement (a data-modifying WITH), so that a
 * change that did not happen writes no event. A command whose legality
 * depends on the current state is a transition (common/transition): read,
 * check here, write with the state read as the statement's condition. */
#include "identity_int.h"

#include "log.h"
#include "transition.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LIST_DEFAULT 100
#define LIST_MAX 1000

/* SQL reads best as written */
// clang-format off
static const char SQL_GET_ID[] =
    "SELECT " IDSQL_IDENTITY_COLS " FROM identities WHERE id = $1::uuid";
static const char SQL_GET_NAME[] = "SELECT " IDSQL_IDENTITY_COLS " FROM identities WHERE name = $1";
static const char SQL_LIST[] =
    "SELECT " IDSQL_IDENTITY_COLS " FROM identities WHERE ($1::identity_type IS NULL OR type = $1) "
    "AND ($2::identity_status IS NULL OR status = $2) AND ($3::uuid IS NULL OR id > $3) "
    "ORDER BY id LIMIT $4::int";
static const char SQL_STATE[] = "SELECT status::text, type::text, "
    IDSQL_VALID_ATTESTATION("$1::uuid") ", " IDSQL_IS_ADMIN("metadata") ", "
    IDSQL_LAST_ADMIN("$1::uuid") " FROM identities WHERE id = $1::uuid";
/* $5 id, $6 the new status, $7 the status read; never the last admin
 * holding a valid key away from active (under IDSQL_ADMIN_LOCK) */
static const char SQL_SET_STATUS[] =
    "WITH u AS (UPDATE identities SET status = $6::identity_status, updated_at = now() "
    "WHERE id = $5::uuid AND status = $7::identity_status AND ($6::identity_status <> 'active' "
    "OR type <> 'enclave' OR " IDSQL_VALID_ATTESTATION("$5::uuid") ") "
    "AND ($6::identity_status = 'active' OR NOT " IDSQL_LAST_ADMIN("$5::uuid") ") "
    "RETURNING " IDSQL_IDENTITY_COLS "), o AS (" CMS_OUTBOX_SQL_FROM("u") ") SELECT * FROM u";
// clang-format on

static const char *const err_names[] = {IDSVC_ERRORS(CMS_ENUM_TEXT)};

const char *idsvc_strerror(idsvc_err e)
{
    return cms_enum_text(err_names, IDSVC_NERRORS, e);
}

/* ---- shared by the command files ---- */

const char *idsvc_correlation(cms_cmd_req *req)
{
    return cms_cmd_req_request_id(req);
}

bool idsvc_is_admin(cms_cmd_req *req)
{
    return cms_principal_has_role(cms_cmd_req_principal(req), "admin");
}

bool idsvc_is_self(cms_cmd_req *req, const char *identity_id)
{
    const cms_principal *p = cms_cmd_req_principal(req);
    return p && strcmp(p->identity_id, identity_id) == 0;
}

void idsvc_fail_invalid(cms_cmd_req *req, const idv_err *e)
{
    cms_cmd_fail(req, CMS__V1__ERROR_CODE__INVALID_ARGUMENT, e->field, "%s", e->msg);
}

void idsvc_fail_oom(cms_cmd_req *req)
{
    cms_cmd_fail(req, CMS__V1__ERROR_CODE__INTERNAL, NULL, "out of memory");
}

int64_t idsvc_i64(const PGresult *r, int row, int col)
{
    return strtoll(PQgetvalue(r, row, col), NULL, 10);
}

void idsvc_row_identity(const PGresult *r, int row, Cms__V1__Identity *out)
{
    cms__v1__identity__init(out);
    out->id = PQgetvalue(r, row, 0);
    out->name = PQgetvalue(r, row, 1);
    out->type = PQgetvalue(r, row, 2);
    out->status = PQgetvalue(r, row, 3);
    out->metadata_json = PQgetvalue(r, row, 4);
    out->created_at_us = idsvc_i64(r, row, 5);
    out->updated_at_us = idsvc_i64(r, row, 6);
}

void idsvc_row_credential(const PGresult *r, int row, Cms__V1__Credential *out)
{
    cms__v1__credential__init(out);
    out->id = PQgetvalue(r, row, 0);
    out->identity_id = PQgetvalue(r, row, 1);
    out->type = PQgetvalue(r, row, 2);
    if (strcmp(out->type, "public_key") == 0)
        out->public_key = PQgetvalue(r, row, 3);
    else if (strcmp(out->type, "attestation") == 0)
        out->measurement = PQgetvalue(r, row, 3);
    out->expires_at_us = idsvc_i64(r, row, 4);
    out->created_at_us = idsvc_i64(r, row, 5);
    out->revoked_at_us = idsvc_i64(r, row, 6);
    out->metadata_json = PQgetvalue(r, row, 7);
}

bool idsvc_read_one(idsvc *s, cms_cmd_req *req, const char *sql, const char *param,
                    cms_pg_done_cb done, void *arg)
{
    cms_pg_job *job = cms_pg_job_new();
    const char *v[] = {param};
    if (job == NULL || cms_pg_job_sql(job, sql, 1, v, NULL, NULL) != CMS_PG_OK) {
        cms_pg_job_free(job);
        idsvc_fail_oom(req);
        return false;
    }
    return cms_cmd_run_read(req, s->pg, job, done, arg);
}

static void reply_identity_row(cms_cmd_req *req, const PGresult *r)
{
    Cms__V1__Identity m;
    idsvc_row_identity(r, 0, &m);
    cms_cmd_reply(req, &m.base);
}

/* ---- create ---- */

typedef struct create_op {
    idsvc *s;
    cms_cmd_req *req;
    char name[IDV_NAME_MAX + 1];
} create_op;

static void created(void *arg, cms_pg_err err, const cms_pg_result *res)
{
    create_op *op = arg;
    if (err == CMS_PG_ESQL && cms_pg_result_failed(res) == 0 &&
        strcmp(cms_pg_result_sqlstate(res), "23505") == 0)
        cms_cmd_fail(op->req, CMS__V1__ERROR_CODE__ALREADY_EXISTS, "name",
                     "an identity named \"%s\" exists", op->name);
    else if (err != CMS_PG_OK)
        cms_cmd_fail_pg(op->req, err, res, "create");
    else {
        cms_outbox_kick(op->s->outbox);
        reply_identity_row(op->req, cms_pg_result_get(res, 0));
    }
    free(op);
}

static void h_create(void *arg, cms_cmd_req *req)
{
    idsvc *s = arg;
    const Cms__V1__CreateIdentity *m = (const void *)cms_cmd_req_body(req);
    idv_err e;
    idv_type type;
    const char *metadata;
    if (!idsvc_is_admin(req)) {
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__PERMISSION_DENIED, NULL,
                     "only an admin creates identities");
        return;
    }
    if (!idv_name(m->name, "name", &e) || !idv_type_parse(m->type, &type, &e) ||
        !idv_metadata(m->metadata_json, "metadata_json", &metadata, &e)) {
        idsvc_fail_invalid(req, &e);
        return;
    }
    /* an enclave is let in only by an accepted attestation */
    const char *status = type == IDV_ENCLAVE ? "inactive" : "active";
    cms_uuid u;
    char id[CMS_UUID_STRLEN + 1];
    cms_uuid_v7(&u);
    cms_uuid_format(&u, id);
    cms_bus_event ev = {0};
    create_op *op = calloc(1, sizeof *op);
    cms_pg_job *job = cms_cmd_job_new(req);
    const char *v[] = {id, m->name, m->type, status, metadata};
    if (job == NULL ||
        idev_identity_created(id, m->name, m->type, status, cms_cmd_req_actor(req),
                              idsvc_correlation(req), &ev) != CMS_BUS_OK ||
        cms_outbox_add_exec(job, s->st_create, IDEV_SOURCE, &ev, 5, v) != CMS_OUTBOX_OK) {
        cms_bus_event_release(&ev);
        cms_pg_job_free(job);
        free(op);
        idsvc_fail_oom(req);
        return;
    }
    cms_bus_event_release(&ev);
    *op = (create_op){.s = s, .req = req};
    snprintf(op->name, sizeof op->name, "%s", m->name);
    cms_pg_err err = cms_cmd_submit(req, &job, created, op);
    if (err != CMS_PG_OK) {
        cms_cmd_fail_pg(req, err, NULL, "create");
        free(op);
    }
}

/* ---- get, list ---- */

static void got(void *arg, cms_pg_err err, const cms_pg_result *res)
{
    cms_cmd_req *req = arg;
    const PGresult *r = err == CMS_PG_OK ? cms_pg_result_get(res, 0) : NULL;
    if (err != CMS_PG_OK)
        cms_cmd_fail_pg(req, err, res, "get");
    else if (PQntuples(r) == 0)
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__NOT_FOUND, NULL, "no such identity");
    else
        reply_identity_row(req, r);
}

static void h_get(void *arg, cms_cmd_req *req)
{
    idsvc *s = arg;
    const Cms__V1__GetIdentity *m = (const void *)cms_cmd_req_body(req);
    idv_err e;
    bool by_id = m->id[0] != '\0';
    if (!by_id && m->name[0] == '\0') {
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__INVALID_ARGUMENT, "id", "give an id or a name");
        return;
    }
    if (by_id ? !idv_uuid(m->id, "id", &e) : !idv_name(m->name, "name", &e)) {
        idsvc_fail_invalid(req, &e);
        return;
    }
    (void)idsvc_read_one(s, req, by_id ? SQL_GET_ID : SQL_GET_NAME, by_id ? m->id : m->name, got,
                         req);
}

static void row_identity(const PGresult *r, int i, void *item)
{
    idsvc_row_identity(r, i, item);
}

static void h_list(void *arg, cms_cmd_req *req)
{
    idsvc *s = arg;
    const Cms__V1__ListIdentities *m = (const void *)cms_cmd_req_body(req);
    idv_err e;
    idv_type t;
    idv_status st;
    if ((m->type[0] && !idv_type_parse(m->type, &t, &e)) ||
        (m->status[0] && !idv_status_parse(m->status, "status", &st, &e)) ||
        (m->after[0] && !idv_uuid(m->after, "after", &e))) {
        idsvc_fail_invalid(req, &e);
        return;
    }
    if (m->limit < 0 || m->limit > LIST_MAX) {
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__INVALID_ARGUMENT, "limit",
                     "limit must be 1 to %d (0: %d)", LIST_MAX, LIST_DEFAULT);
        return;
    }
    cms_pg_job *job = cms_pg_job_new();
    char lim[16];
    int limit = m->limit ? m->limit : LIST_DEFAULT;
    snprintf(lim, sizeof lim, "%d", limit + 1);
    const char *v[] = {m->type[0] ? m->type : NULL, m->status[0] ? m->status : NULL,
                       m->after[0] ? m->after : NULL, lim};
    if (job == NULL || cms_pg_job_sql(job, SQL_LIST, 4, v, NULL, NULL) != CMS_PG_OK) {
        cms_pg_job_free(job);
        idsvc_fail_oom(req);
        return;
    }
    cms_cmd_run_page(req, s->pg, job, limit, &cms__v1__identity_page__descriptor, "identities",
                     row_identity);
}

/* ---- set_status: a transition ---- */

typedef struct status_op {
    idsvc *s;
    idv_status to;
    char id[CMS_UUID_STRLEN + 1];
    char reason[IDV_REASON_MAX + 1];
} status_op;

static int status_read(void *arg, cms_pg_job *job)
{
    status_op *op = arg;
    const char *v[] = {op->id};
    return cms_pg_job_sql(job, SQL_STATE, 1, v, NULL, NULL);
}

static cms_transition_step status_decide(void *arg, cms_cmd_req *req, const cms_pg_result *res,
                                         cms_pg_job *write)
{
    status_op *op = arg;
    const PGresult *r = cms_pg_result_get(res, 0);
    idv_status from;
    idv_err e;
    if (PQntuples(r) == 0) {
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__NOT_FOUND, "id", "no such identity");
        return CMS_TRANSITION_ANSWERED;
    }
    if (!idv_status_parse(PQgetvalue(r, 0, 0), "status", &from, &e)) {
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__INTERNAL, NULL, "unknown stored status");
        return CMS_TRANSITION_ANSWERED;
    }
    if (strcmp(op->id, CMS_BUS_SYSTEM_ACTOR) == 0) {
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__FAILED_PRECONDITION, "id",
                     "the system identity's status cannot change");
        return CMS_TRANSITION_ANSWERED;
    }
    if (from == op->to) {
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__FAILED_PRECONDITION, "status",
                     "the identity is already %s", idv_status_name(from));
        return CMS_TRANSITION_ANSWERED;
    }
    if (!idv_transition(from, op->to)) {
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__FAILED_PRECONDITION, "status",
                     "a %s identity cannot become %s%s", idv_status_name(from),
                     idv_status_name(op->to), from != IDV_ACTIVE ? " (make it active first)" : "");
        return CMS_TRANSITION_ANSWERED;
    }
    if (op->to == IDV_ACTIVE && strcmp(PQgetvalue(r, 0, 1), "enclave") == 0 &&
        strcmp(PQgetvalue(r, 0, 2), "t") != 0) {
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__FAILED_PRECONDITION, "status",
                     "an enclave becomes active only with a valid attestation: issue one");
        return CMS_TRANSITION_ANSWERED;
    }
    bool admin = strcmp(PQgetvalue(r, 0, 3), "t") == 0;
    if (op->to != IDV_ACTIVE && strcmp(PQgetvalue(r, 0, 4), "t") == 0) {
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__FAILED_PRECONDITION, "id",
                     "the identity is the last active admin with a valid API key: it cannot "
                     "become %s until another admin can act",
                     idv_status_name(op->to));
        return CMS_TRANSITION_ANSWERED;
    }
    cms_bus_event ev = {0};
    const char *v[] = {op->id, idv_status_name(op->to), idv_status_name(from)};
    /* an admin leaving active may be the last: checked under the lock */
    bool ok =
        (!admin || op->to == IDV_ACTIVE ||
         cms_pg_job_lead_sql(write, IDSQL_ADMIN_LOCK, 0, NULL, NULL, NULL) == CMS_PG_OK) &&
        idev_status_changed(op->id, idv_status_name(from), idv_status_name(op->to), op->reason,
                            cms_cmd_req_actor(req), idsvc_correlation(req), &ev) == CMS_BUS_OK &&
        cms_outbox_add_sql(write, SQL_SET_STATUS, IDEV_SOURCE, &ev, 3, v) == CMS_OUTBOX_OK;
    cms_bus_event_release(&ev);
    if (!ok) {
        idsvc_fail_oom(req);
        return CMS_TRANSITION_ANSWERED;
    }
    return CMS_TRANSITION_WRITE;
}

static bool status_written(void *arg, cms_cmd_req *req, const cms_pg_result *res)
{
    status_op *op = arg;
    const PGresult *r = cms_pg_result_get(res, 0);
    if (PQntuples(r) == 0)
        return false;
    cms_auth_invalidate(op->s->auth, op->id);
    cms_outbox_kick(op->s->outbox);
    reply_identity_row(req, r);
    return true;
}

static const cms_transition_ops status_ops = {.what = "set_status",
                                              .object = "identity",
                                              .read = status_read,
                                              .decide = status_decide,
                                              .written = status_written};

static void h_set_status(void *arg, cms_cmd_req *req)
{
    idsvc *s = arg;
    const Cms__V1__SetIdentityStatus *m = (const void *)cms_cmd_req_body(req);
    idv_err e;
    idv_status to;
    if (!idsvc_is_admin(req)) {
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__PERMISSION_DENIED, NULL,
                     "only an admin changes an identity's status");
        return;
    }
    if (!idv_uuid(m->id, "id", &e) || !idv_status_parse(m->status, "status", &to, &e) ||
        !idv_text(m->reason, "reason", IDV_REASON_MAX, &e)) {
        idsvc_fail_invalid(req, &e);
        return;
    }
    status_op *op = calloc(1, sizeof *op);
    if (op == NULL) {
        idsvc_fail_oom(req);
        return;
    }
    *op = (status_op){.s = s, .to = to};
    snprintf(op->id, sizeof op->id, "%s", m->id);
    snprintf(op->reason, sizeof op->reason, "%s", m->reason);
    cms_transition_run(s->pg, req, &status_ops, op);
}

idsvc_err idsvc_register_identities(idsvc *s, cms_cmd *c)
{
    if (cms_cmd_register(c, "create", &cms__v1__create_identity__descriptor, h_create, s) != 0 ||
        cms_cmd_register(c, "get", &cms__v1__get_identity__descriptor, h_get, s) != 0 ||
        cms_cmd_register(c, "list", &cms__v1__list_identities__descriptor, h_list, s) != 0 ||
        cms_cmd_register(c, "set_status", &cms__v1__set_identity_status__descriptor, h_set_status,
                         s) != 0)
        return IDSVC_ESETUP;
    return IDSVC_OK;
}

/* ---- life ---- */

idsvc_err idsvc_create(const idsvc_options *o, idsvc **out)
{
    idsvc *s = calloc(1, sizeof *s);
    if (s == NULL || sodium_init() < 0) {
        free(s);
        return IDSVC_ENOMEM;
    }
    s->o = *o;
    if (s->o.max_auth_lookups == 0)
        s->o.max_auth_lookups = IDSVC_DEFAULT_AUTH_LOOKUPS;
    if (idneg_create(IDSVC_NEGATIVE_MAX, s->o.negative_ttl_ms, &s->unknown) != 0) {
        free(s);
        return IDSVC_ENOMEM;
    }
    uint8_t junk[CMS_APIKEY_SECRET_BYTES];
    randombytes_buf(junk, sizeof junk);
    cms_apikey_hash(s->o.server_key, junk, s->dummy_hash);
    *out = s;
    return IDSVC_OK;
}

idsvc_err idsvc_start(idsvc *s, cms_service *svc)
{
    s->svc = svc;
    s->pg = cms_service_pg(svc);
    s->outbox = cms_service_outbox(svc);
    s->auth = cms_service_auth(svc);
    cms_cmd *c = cms_service_cmd(svc);
    /* replies of request_ids are kept sealed: issue_credential's carries a key */
    uint8_t seal[32];
    crypto_kdf_derive_from_key(seal, sizeof seal, 1, "cmsreply", s->o.server_key);
    cms_cmd_seal_replies(c, seal);
    sodium_memzero(seal, sizeof seal);
    s->st_create = cms_pg_prepare(s->pg, "identity_create", IDSQL_CREATE, 9, NULL);
    if (s->st_create == NULL)
        return IDSVC_ESETUP;
    idsvc_err err = idsvc_register_identities(s, c);
    if (err == IDSVC_OK)
        err = idsvc_register_credentials(s, c);
    if (err == IDSVC_OK)
        err = idsvc_register_authn(s, c);
    if (err == IDSVC_OK && idsvc_authn_start(s) != 0)
        err = IDSVC_ESETUP;
    if (err != IDSVC_OK)
        return err;
    if (idexp_create(cms_service_loop(svc), s->pg, s->outbox, s->auth, &s->expiry) != 0)
        return IDSVC_ENOMEM;
    idexp_start(s->expiry);
    return IDSVC_OK;
}

static void expiry_closed(void *arg)
{
    idsvc *s = arg;
    if (s->drained)
        s->drained(s->drained_arg);
}

void idsvc_drain(idsvc *s, void (*drained)(void *arg), void *arg)
{
    s->drained = drained;
    s->drained_arg = arg;
    idsvc_authn_stop(s);
    if (s->expiry)
        idexp_close(s->expiry, expiry_closed, s);
    else if (drained)
        drained(arg);
}

void idsvc_destroy(idsvc *s)
{
    if (s == NULL)
        return;
    idexp_destroy(s->expiry);
    idneg_destroy(s->unknown);
    sodium_memzero(s->o.server_key, sizeof s->o.server_key);
    sodium_memzero(s->o.previous_key, sizeof s->o.previous_key);
    free(s);
}
