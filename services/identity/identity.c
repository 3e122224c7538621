/* The commands of cms-identity; see identity.h.
 *
 * Every change is one job (one transaction) that makes the change and adds
 * its event to the outbox, and the event is added by the same statement
 * that makes the change (a data-modifying WITH), so that a change that did
 * not happen writes no event. A command whose legality depends on the
 * current state (set_status, issue_credential, revoke_credential) reads the
 * state first, checks it here to give a precise error, then writes with
 * the state it read as the statement's condition; if someone else changed
 * it in between, it reads again (a few times at most). */
#include "identity.h"

#include "events.h"
#include "expiry.h"
#include "log.h"
#include "validate.h"

#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LIST_DEFAULT 100
#define LIST_MAX 1000
#define CREDENTIALS_MAX 1000
#define ATTEMPTS 3

/* SQL reads best as written */
// clang-format off
#define ID_COLS                                                                                    \
    "id::text, name, type::text, status::text, coalesce(metadata, '{}'::jsonb)::text, "            \
    IDSQL_US("created_at") ", " IDSQL_US("updated_at")
#define CRED_COLS                                                                                  \
    "id::text, identity_id::text, type::text, value, " IDSQL_US("expires_at") ", "                 \
    IDSQL_US("created_at") ", coalesce(" IDSQL_US("revoked_at") ", 0), "                           \
    "coalesce(metadata, '{}'::jsonb)::text"
static const char SQL_CREATE[] =
    "INSERT INTO identities (id, name, type, status, metadata) "
    "VALUES ($1::uuid, $2, $3::identity_type, $4::identity_status, $5::jsonb) RETURNING " ID_COLS;
static const char SQL_GET_ID[] = "SELECT " ID_COLS " FROM identities WHERE id = $1::uuid";
static const char SQL_GET_NAME[] = "SELECT " ID_COLS " FROM identities WHERE name = $1";
static const char SQL_LIST[] =
    "SELECT " ID_COLS " FROM identities WHERE ($1::identity_type IS NULL OR type = $1) "
    "AND ($2::identity_status IS NULL OR status = $2) AND ($3::uuid IS NULL OR id > $3) "
    "ORDER BY id LIMIT $4::int";
static const char SQL_STATE[] = "SELECT status::text, type::text, " IDSQL_VALID_ATTESTATION(
    "$1::uuid") " FROM identities WHERE id = $1::uuid";
static const char SQL_SET_STATUS[] =
    "WITH u AS (UPDATE identities SET status = $2::identity_status, updated_at = now() "
    "WHERE id = $1::uuid AND status = $3::identity_status AND ($2::identity_status <> 'active' "
    "OR type <> 'enclave' OR " IDSQL_VALID_ATTESTATION("$1::uuid") ") RETURNING " ID_COLS "), "
    "o AS (" IDSQL_OUTBOX_FROM("u", "$4", "$5", "$6") ") SELECT * FROM u";
static const char SQL_ISSUE[] =
    "WITH c AS (INSERT INTO credentials (id, identity_id, type, value, expires_at, metadata, "
    "signer) SELECT $1::uuid, i.id, $3::credential_type, $4, "
    "'epoch'::timestamptz + $5::int8 * interval '1 microsecond', $6::jsonb, $7 "
    "FROM identities i WHERE i.id = $2::uuid AND i.status <> 'suspended' RETURNING " CRED_COLS
    "), o AS (" IDSQL_OUTBOX_FROM("c", "$8", "$9", "$10") ") SELECT * FROM c";
static const char SQL_ACTIVATE_ENCLAVE[] =
    "WITH u AS (UPDATE identities SET status = 'active', updated_at = now() "
    "WHERE id = $1::uuid AND type = 'enclave' AND status = 'inactive' AND " IDSQL_VALID_ATTESTATION(
        "$1::uuid") " RETURNING id), "
                    "o AS (" IDSQL_OUTBOX_FROM("u", "$2", "$3", "$4") ") SELECT count(*) FROM u";
static const char SQL_CRED_STATE[] =
    "SELECT identity_id::text, type::text, revoked_at IS NOT NULL, "
    "(expired_at IS NOT NULL OR expires_at <= now()) FROM credentials WHERE id = $1::uuid";
static const char SQL_REVOKE[] =
    "WITH u AS (UPDATE credentials SET revoked_at = now(), revoke_reason = $2 "
    "WHERE id = $1::uuid AND revoked_at IS NULL AND expired_at IS NULL RETURNING " CRED_COLS
    "), o AS (" IDSQL_OUTBOX_FROM("u", "$3", "$4", "$5") ") SELECT * FROM u";
static const char SQL_EXISTS[] = "SELECT EXISTS (SELECT 1 FROM identities WHERE id = $1::uuid)";
static const char SQL_CREDENTIALS[] = "SELECT " CRED_COLS " FROM credentials "
                                      "WHERE identity_id = $1::uuid ORDER BY created_at, id "
                                      "LIMIT 1000";
static const char SQL_AUTH[] =
    "SELECT c.value, i.id::text, i.name, i.type::text, i.status::text, "
    "coalesce(i.metadata -> 'roles', '[]'::jsonb)::text, " IDSQL_US("c.expires_at") ", "
    "(c.revoked_at IS NULL AND c.expired_at IS NULL AND c.expires_at > now()) "
    "FROM credentials c JOIN identities i ON i.id = c.identity_id "
    "WHERE c.id = $1::uuid AND c.type = 'api_key'";
// clang-format on

struct idsvc {
    idsvc_options o;
    cms_service *svc;
    cms_pg *pg;
    cms_outbox *outbox;
    cms_auth *auth;
    idexp *expiry;
    const cms_pg_stmt *st_auth, *st_create;
    /* compared with when a key's credential is unknown, so that every
     * refusal costs one hash */
    char dummy_hash[CMS_APIKEY_HASH_LEN + 1];
    void (*drained)(void *arg);
    void *drained_arg;
};

/* ---- replies ---- */

static const char *corr_of(cms_cmd_req *req)
{
    return cms_cmd_req_request_id(req);
}

static const char *actor_of(cms_cmd_req *req)
{
    const cms_principal *p = cms_cmd_req_principal(req);
    return p ? p->identity_id : IDEV_SYSTEM_ACTOR;
}

static bool is_admin(cms_cmd_req *req)
{
    return cms_principal_has_role(cms_cmd_req_principal(req), "admin");
}

static bool is_self(cms_cmd_req *req, const char *identity_id)
{
    const cms_principal *p = cms_cmd_req_principal(req);
    return p && strcmp(p->identity_id, identity_id) == 0;
}

static void fail_invalid(cms_cmd_req *req, const idv_err *e)
{
    cms_cmd_fail(req, CMS__V1__ERROR_CODE__INVALID_ARGUMENT, e->field, "%s", e->msg);
}

static void fail_pg(cms_cmd_req *req, cms_pg_err err, const cms_pg_result *res, const char *what)
{
    const char *state = res ? cms_pg_result_sqlstate(res) : NULL;
    cms_cmd_code code = cms_cmd_code_for_pg(err, state);
    if (code == CMS__V1__ERROR_CODE__INTERNAL)
        cms_log_error("identity statement failed", "{s:s, s:s, s:s}", "what", what, "sqlstate",
                      state ? state : "", "detail", res ? cms_pg_result_message(res) : "");
    cms_cmd_fail(req, code, NULL, "%s failed%s", what,
                 code == CMS__V1__ERROR_CODE__UNAVAILABLE ? ": the database is unavailable; retry"
                                                          : "");
}

static int64_t i64(const PGresult *r, int row, int col)
{
    return strtoll(PQgetvalue(r, row, col), NULL, 10);
}

/* Points out's strings into r (valid while r is). */
static void row_identity(const PGresult *r, int row, Cms__V1__Identity *out)
{
    cms__v1__identity__init(out);
    out->id = PQgetvalue(r, row, 0);
    out->name = PQgetvalue(r, row, 1);
    out->type = PQgetvalue(r, row, 2);
    out->status = PQgetvalue(r, row, 3);
    out->metadata_json = PQgetvalue(r, row, 4);
    out->created_at_us = i64(r, row, 5);
    out->updated_at_us = i64(r, row, 6);
}

/* Never the stored value of an api_key: it is a hash, and of no use to anyone. */
static void row_credential(const PGresult *r, int row, Cms__V1__Credential *out)
{
    cms__v1__credential__init(out);
    out->id = PQgetvalue(r, row, 0);
    out->identity_id = PQgetvalue(r, row, 1);
    out->type = PQgetvalue(r, row, 2);
    if (strcmp(out->type, "public_key") == 0)
        out->public_key = PQgetvalue(r, row, 3);
    else if (strcmp(out->type, "attestation") == 0)
        out->measurement = PQgetvalue(r, row, 3);
    out->expires_at_us = i64(r, row, 4);
    out->created_at_us = i64(r, row, 5);
    out->revoked_at_us = i64(r, row, 6);
    out->metadata_json = PQgetvalue(r, row, 7);
}

static void reply_identity_row(cms_cmd_req *req, const PGresult *r)
{
    Cms__V1__Identity m;
    row_identity(r, 0, &m);
    cms_cmd_reply(req, &m.base);
}

/* Submits job (taken in every case); false when it could not be, after
 * answering req: the caller then frees what it passed as arg. */
static bool run_job(idsvc *s, cms_cmd_req *req, cms_pg_job *job, cms_pg_done_cb done, void *arg)
{
    cms_pg_err err = cms_pg_submit(s->pg, &job, done, arg);
    if (err == CMS_PG_OK)
        return true;
    cms_pg_job_free(job);
    cms_cmd_fail(req, CMS__V1__ERROR_CODE__UNAVAILABLE, NULL, "the database is busy; retry");
    return false;
}

/* One statement with one parameter, as a job; false as for run_job. */
static bool read_one(idsvc *s, cms_cmd_req *req, const char *sql, const char *param,
                     cms_pg_done_cb done, void *arg)
{
    cms_pg_job *job = cms_pg_job_new();
    const char *v[] = {param};
    if (job == NULL || cms_pg_job_sql(job, sql, 1, v, NULL, NULL) != CMS_PG_OK) {
        cms_pg_job_free(job);
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__INTERNAL, NULL, "out of memory");
        return false;
    }
    return run_job(s, req, job, done, arg);
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
    if (err == CMS_PG_ESQL && strcmp(cms_pg_result_sqlstate(res), "23505") == 0)
        cms_cmd_fail(op->req, CMS__V1__ERROR_CODE__ALREADY_EXISTS, "name",
                     "an identity named \"%s\" exists", op->name);
    else if (err != CMS_PG_OK)
        fail_pg(op->req, err, res, "create");
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
    if (!is_admin(req)) {
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__PERMISSION_DENIED, NULL,
                     "only an admin creates identities");
        return;
    }
    if (!idv_name(m->name, "name", &e) || !idv_type_parse(m->type, &type, &e) ||
        !idv_metadata(m->metadata_json, "metadata_json", &metadata, &e)) {
        fail_invalid(req, &e);
        return;
    }
    /* an enclave is let in only by an accepted attestation */
    const char *status = type == IDV_ENCLAVE ? "inactive" : "active";
    cms_uuid u;
    char id[CMS_UUID_STRLEN + 1];
    cms_uuid_v7(&u);
    cms_uuid_format(&u, id);
    cms_event ev = {0};
    create_op *op = calloc(1, sizeof *op);
    cms_pg_job *job = cms_pg_job_new();
    const char *v[] = {id, m->name, m->type, status, metadata};
    if (op == NULL || job == NULL ||
        idev_identity_created(id, m->name, m->type, status, actor_of(req), corr_of(req), &ev) !=
            0 ||
        cms_pg_job_exec(job, s->st_create, v, NULL, NULL) != CMS_PG_OK ||
        cms_outbox_add(job, IDEV_SOURCE, ev.id, ev.subject, ev.buf, ev.len) != CMS_PG_OK) {
        cms_event_release(&ev);
        cms_pg_job_free(job);
        free(op);
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__INTERNAL, NULL, "out of memory");
        return;
    }
    cms_event_release(&ev);
    *op = (create_op){.s = s, .req = req};
    snprintf(op->name, sizeof op->name, "%s", m->name);
    if (!run_job(s, req, job, created, op))
        free(op);
}

/* ---- get, list ---- */

static void got(void *arg, cms_pg_err err, const cms_pg_result *res)
{
    cms_cmd_req *req = arg;
    const PGresult *r = err == CMS_PG_OK ? cms_pg_result_get(res, 0) : NULL;
    if (err != CMS_PG_OK)
        fail_pg(req, err, res, "get");
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
        fail_invalid(req, &e);
        return;
    }
    (void)read_one(s, req, by_id ? SQL_GET_ID : SQL_GET_NAME, by_id ? m->id : m->name, got, req);
}

typedef struct list_op {
    cms_cmd_req *req;
    int limit;
} list_op;

static void listed(void *arg, cms_pg_err err, const cms_pg_result *res)
{
    list_op *op = arg;
    if (err != CMS_PG_OK) {
        fail_pg(op->req, err, res, "list");
        free(op);
        return;
    }
    const PGresult *r = cms_pg_result_get(res, 0);
    int n = PQntuples(r), shown = n > op->limit ? op->limit : n;
    Cms__V1__Identity *items = calloc((size_t)shown + 1, sizeof *items);
    Cms__V1__Identity **ptrs = calloc((size_t)shown + 1, sizeof *ptrs);
    if (items == NULL || ptrs == NULL) {
        cms_cmd_fail(op->req, CMS__V1__ERROR_CODE__INTERNAL, NULL, "out of memory");
    } else {
        Cms__V1__IdentityPage page = CMS__V1__IDENTITY_PAGE__INIT;
        for (int i = 0; i < shown; i++) {
            row_identity(r, i, &items[i]);
            ptrs[i] = &items[i];
        }
        page.identities = ptrs;
        page.n_identities = (size_t)shown;
        /* a row beyond the page: there is a next page, after the last shown */
        if (n > op->limit)
            page.next = items[shown - 1].id;
        cms_cmd_reply(op->req, &page.base);
    }
    free(items);
    free(ptrs);
    free(op);
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
        fail_invalid(req, &e);
        return;
    }
    if (m->limit < 0 || m->limit > LIST_MAX) {
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__INVALID_ARGUMENT, "limit",
                     "limit must be 1 to %d (0: %d)", LIST_MAX, LIST_DEFAULT);
        return;
    }
    list_op *op = calloc(1, sizeof *op);
    cms_pg_job *job = cms_pg_job_new();
    char lim[16];
    int limit = m->limit ? m->limit : LIST_DEFAULT;
    snprintf(lim, sizeof lim, "%d", limit + 1);
    const char *v[] = {m->type[0] ? m->type : NULL, m->status[0] ? m->status : NULL,
                       m->after[0] ? m->after : NULL, lim};
    if (op == NULL || job == NULL || cms_pg_job_sql(job, SQL_LIST, 4, v, NULL, NULL) != CMS_PG_OK) {
        free(op);
        cms_pg_job_free(job);
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__INTERNAL, NULL, "out of memory");
        return;
    }
    *op = (list_op){.req = req, .limit = limit};
    if (!run_job(s, req, job, listed, op))
        free(op);
}

/* ---- set_status ---- */

typedef struct status_op {
    idsvc *s;
    cms_cmd_req *req;
    int attempt;
    idv_status to;
    char id[CMS_UUID_STRLEN + 1];
    char reason[IDV_REASON_MAX + 1];
} status_op;

static void status_read(void *arg, cms_pg_err err, const cms_pg_result *res);

static void status_begin(status_op *op)
{
    if (!read_one(op->s, op->req, SQL_STATE, op->id, status_read, op))
        free(op);
}

static void status_written(void *arg, cms_pg_err err, const cms_pg_result *res)
{
    status_op *op = arg;
    const PGresult *r = err == CMS_PG_OK ? cms_pg_result_get(res, 0) : NULL;
    if (err != CMS_PG_OK) {
        fail_pg(op->req, err, res, "set_status");
    } else if (PQntuples(r) == 0) {
        /* changed by someone else since it was read: read it again */
        if (++op->attempt < ATTEMPTS) {
            status_begin(op);
            return;
        }
        cms_cmd_fail(op->req, CMS__V1__ERROR_CODE__UNAVAILABLE, NULL,
                     "the identity keeps changing; retry");
    } else {
        cms_auth_invalidate(op->s->auth, op->id);
        cms_outbox_kick(op->s->outbox);
        reply_identity_row(op->req, r);
    }
    free(op);
}

static void status_read(void *arg, cms_pg_err err, const cms_pg_result *res)
{
    status_op *op = arg;
    idv_status from;
    idv_err e;
    const PGresult *r = err == CMS_PG_OK ? cms_pg_result_get(res, 0) : NULL;
    if (err != CMS_PG_OK) {
        fail_pg(op->req, err, res, "set_status");
        goto done;
    }
    if (PQntuples(r) == 0) {
        cms_cmd_fail(op->req, CMS__V1__ERROR_CODE__NOT_FOUND, "id", "no such identity");
        goto done;
    }
    if (!idv_status_parse(PQgetvalue(r, 0, 0), "status", &from, &e)) {
        cms_cmd_fail(op->req, CMS__V1__ERROR_CODE__INTERNAL, NULL, "unknown stored status");
        goto done;
    }
    if (strcmp(op->id, IDEV_SYSTEM_ACTOR) == 0) {
        cms_cmd_fail(op->req, CMS__V1__ERROR_CODE__FAILED_PRECONDITION, "id",
                     "the system identity's status cannot change");
        goto done;
    }
    if (from == op->to) {
        cms_cmd_fail(op->req, CMS__V1__ERROR_CODE__FAILED_PRECONDITION, "status",
                     "the identity is already %s", idv_status_name(from));
        goto done;
    }
    if (!idv_transition(from, op->to)) {
        cms_cmd_fail(op->req, CMS__V1__ERROR_CODE__FAILED_PRECONDITION, "status",
                     "a %s identity cannot become %s%s", idv_status_name(from),
                     idv_status_name(op->to), from != IDV_ACTIVE ? " (make it active first)" : "");
        goto done;
    }
    if (op->to == IDV_ACTIVE && strcmp(PQgetvalue(r, 0, 1), "enclave") == 0 &&
        strcmp(PQgetvalue(r, 0, 2), "t") != 0) {
        cms_cmd_fail(op->req, CMS__V1__ERROR_CODE__FAILED_PRECONDITION, "status",
                     "an enclave becomes active only with a valid attestation: issue one");
        goto done;
    }
    cms_event ev = {0};
    cms_pg_job *job = cms_pg_job_new();
    const char *v[] = {op->id, idv_status_name(op->to), idv_status_name(from), NULL, NULL, NULL};
    int len[6] = {0}, fmt[6] = {0, 0, 0, 0, 0, 1};
    if (job == NULL ||
        idev_status_changed(op->id, idv_status_name(from), idv_status_name(op->to), op->reason,
                            actor_of(op->req), corr_of(op->req), &ev) != 0) {
        cms_pg_job_free(job);
        cms_cmd_fail(op->req, CMS__V1__ERROR_CODE__INTERNAL, NULL, "out of memory");
        goto done;
    }
    v[3] = ev.id;
    v[4] = ev.subject;
    v[5] = (const char *)ev.buf;
    len[5] = (int)ev.len;
    int rc = cms_pg_job_sql(job, SQL_SET_STATUS, 6, v, len, fmt);
    cms_event_release(&ev);
    if (rc != CMS_PG_OK) {
        cms_pg_job_free(job);
        cms_cmd_fail(op->req, CMS__V1__ERROR_CODE__INTERNAL, NULL, "out of memory");
        goto done;
    }
    if (!run_job(op->s, op->req, job, status_written, op))
        free(op);
    return;
done:
    free(op);
}

static void h_set_status(void *arg, cms_cmd_req *req)
{
    idsvc *s = arg;
    const Cms__V1__SetIdentityStatus *m = (const void *)cms_cmd_req_body(req);
    idv_err e;
    idv_status to;
    if (!is_admin(req)) {
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__PERMISSION_DENIED, NULL,
                     "only an admin changes an identity's status");
        return;
    }
    if (!idv_uuid(m->id, "id", &e) || !idv_status_parse(m->status, "status", &to, &e) ||
        !idv_text(m->reason, "reason", IDV_REASON_MAX, &e)) {
        fail_invalid(req, &e);
        return;
    }
    status_op *op = calloc(1, sizeof *op);
    if (op == NULL) {
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__INTERNAL, NULL, "out of memory");
        return;
    }
    *op = (status_op){.s = s, .req = req, .to = to};
    snprintf(op->id, sizeof op->id, "%s", m->id);
    snprintf(op->reason, sizeof op->reason, "%s", m->reason);
    status_begin(op);
}

/* ---- issue_credential ---- */

typedef struct issue_op {
    idsvc *s;
    cms_cmd_req *req;
    int attempt;
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

static void issue_free(issue_op *op)
{
    if (op == NULL)
        return;
    free(op->metadata);
    sodium_memzero(op->key, sizeof op->key);
    free(op);
}

static void issue_read(void *arg, cms_pg_err err, const cms_pg_result *res);

static void issue_begin(issue_op *op)
{
    if (!read_one(op->s, op->req, SQL_STATE, op->identity_id, issue_read, op))
        issue_free(op);
}

static void issued(void *arg, cms_pg_err err, const cms_pg_result *res)
{
    issue_op *op = arg;
    const PGresult *r = err == CMS_PG_OK ? cms_pg_result_get(res, 0) : NULL;
    if (err != CMS_PG_OK) {
        fail_pg(op->req, err, res, "issue_credential");
    } else if (PQntuples(r) == 0) {
        /* suspended since it was read: the read says so */
        if (++op->attempt < ATTEMPTS) {
            issue_begin(op);
            return;
        }
        cms_cmd_fail(op->req, CMS__V1__ERROR_CODE__UNAVAILABLE, NULL,
                     "the identity keeps changing; retry");
    } else {
        idexp_note(op->s->expiry, op->expires_at_us);
        cms_outbox_kick(op->s->outbox);
        Cms__V1__Credential c;
        row_credential(r, 0, &c);
        if (op->type == IDV_API_KEY)
            c.api_key = op->key;
        cms_cmd_reply(op->req, &c.base);
    }
    issue_free(op);
}

static void issue_read(void *arg, cms_pg_err err, const cms_pg_result *res)
{
    issue_op *op = arg;
    const PGresult *r = err == CMS_PG_OK ? cms_pg_result_get(res, 0) : NULL;
    cms_event ev = {0}, act = {0};
    cms_pg_job *job = NULL;
    if (err != CMS_PG_OK) {
        fail_pg(op->req, err, res, "issue_credential");
        goto fail;
    }
    if (PQntuples(r) == 0) {
        cms_cmd_fail(op->req, CMS__V1__ERROR_CODE__NOT_FOUND, "identity_id", "no such identity");
        goto fail;
    }
    if (strcmp(PQgetvalue(r, 0, 0), "suspended") == 0) {
        cms_cmd_fail(op->req, CMS__V1__ERROR_CODE__FAILED_PRECONDITION, "identity_id",
                     "the identity is suspended: reinstate it first");
        goto fail;
    }
    if (op->type == IDV_ATTESTATION && strcmp(PQgetvalue(r, 0, 1), "enclave") != 0) {
        cms_cmd_fail(op->req, CMS__V1__ERROR_CODE__FAILED_PRECONDITION, "type",
                     "only an enclave holds an attestation");
        goto fail;
    }
    char exp[24];
    snprintf(exp, sizeof exp, "%lld", (long long)op->expires_at_us);
    if (idev_credential_issued(op->cred_id, op->identity_id, idv_cred_type_name(op->type),
                               op->expires_at_us, actor_of(op->req), corr_of(op->req), &ev) != 0 ||
        (job = cms_pg_job_new()) == NULL)
        goto oom;
    const char *v[] = {
        op->cred_id, op->identity_id,     idv_cred_type_name(op->type),      op->value,
        exp,         op->metadata,        op->signer[0] ? op->signer : NULL, ev.id,
        ev.subject,  (const char *)ev.buf};
    int len[10] = {[9] = (int)ev.len}, fmt[10] = {[9] = 1};
    if (cms_pg_job_sql(job, SQL_ISSUE, 10, v, len, fmt) != CMS_PG_OK)
        goto oom;
    if (op->type == IDV_ATTESTATION) {
        if (idev_status_changed(op->identity_id, "inactive", "active", "attestation accepted",
                                actor_of(op->req), corr_of(op->req), &act) != 0)
            goto oom;
        const char *va[] = {op->identity_id, act.id, act.subject, (const char *)act.buf};
        int la[4] = {[3] = (int)act.len}, fa[4] = {[3] = 1};
        if (cms_pg_job_sql(job, SQL_ACTIVATE_ENCLAVE, 4, va, la, fa) != CMS_PG_OK)
            goto oom;
    }
    cms_event_release(&ev);
    cms_event_release(&act);
    if (!run_job(op->s, op->req, job, issued, op))
        issue_free(op);
    return;
oom:
    cms_cmd_fail(op->req, CMS__V1__ERROR_CODE__INTERNAL, NULL, "out of memory");
fail:
    cms_event_release(&ev);
    cms_event_release(&act);
    cms_pg_job_free(job);
    issue_free(op);
}

static bool measurement_allowed(const idsvc *s, const char *m)
{
    for (int i = 0; i < s->o.nmeasurements; i++)
        if (strcmp(s->o.measurements[i], m) == 0)
            return true;
    return false;
}

static void h_issue(void *arg, cms_cmd_req *req)
{
    idsvc *s = arg;
    const Cms__V1__IssueCredential *m = (const void *)cms_cmd_req_body(req);
    idv_err e;
    idv_cred_type type;
    const char *metadata;
    uint8_t pk[IDV_PUBLIC_KEY_BYTES];
    char meas[IDV_MEASUREMENT_MAX + 1];
    if (!idv_uuid(m->identity_id, "identity_id", &e) || !idv_cred_type_parse(m->type, &type, &e)) {
        fail_invalid(req, &e);
        return;
    }
    if (!is_admin(req) && !(is_self(req, m->identity_id) && type != IDV_ATTESTATION)) {
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__PERMISSION_DENIED, NULL,
                     "only an admin issues credentials to another identity, or attestations");
        return;
    }
    int64_t max_s = type == IDV_API_KEY      ? s->o.max_api_key_s
                    : type == IDV_PUBLIC_KEY ? s->o.max_public_key_s
                                             : s->o.max_attestation_s;
    if (!idv_expiry(m->expires_at_us, cms_event_now_us(), max_s, &e) ||
        !idv_metadata(m->metadata_json, "metadata_json", &metadata, &e) ||
        (type == IDV_PUBLIC_KEY && !idv_public_key(m->public_key, pk, &e)) ||
        (type == IDV_ATTESTATION && (!idv_measurement(m->measurement, meas, &e) ||
                                     !idv_text(m->signer, "signer", IDV_SIGNER_MAX, &e)))) {
        fail_invalid(req, &e);
        return;
    }
    if (type == IDV_ATTESTATION && m->signer[0] == '\0') {
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__INVALID_ARGUMENT, "signer",
                     "signer is required for an attestation");
        return;
    }
    if (type == IDV_ATTESTATION && !measurement_allowed(s, meas)) {
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__FAILED_PRECONDITION, "measurement",
                     "the measurement is not on the allowlist (CMS_ENCLAVE_MEASUREMENTS)");
        return;
    }
    issue_op *op = calloc(1, sizeof *op);
    if (op == NULL || (op->metadata = strdup(metadata)) == NULL) {
        issue_free(op);
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__INTERNAL, NULL, "out of memory");
        return;
    }
    op->s = s;
    op->req = req;
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
            issue_free(op);
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
    issue_begin(op);
}

/* ---- revoke_credential ---- */

typedef struct revoke_op {
    idsvc *s;
    cms_cmd_req *req;
    int attempt;
    char id[CMS_UUID_STRLEN + 1];
    char identity_id[CMS_UUID_STRLEN + 1];
    bool attestation;
    char reason[IDV_REASON_MAX + 1];
} revoke_op;

static void revoke_read(void *arg, cms_pg_err err, const cms_pg_result *res);

static void revoke_begin(revoke_op *op)
{
    if (!read_one(op->s, op->req, SQL_CRED_STATE, op->id, revoke_read, op))
        free(op);
}

static void revoked(void *arg, cms_pg_err err, const cms_pg_result *res)
{
    revoke_op *op = arg;
    const PGresult *r = err == CMS_PG_OK ? cms_pg_result_get(res, 0) : NULL;
    if (err != CMS_PG_OK) {
        fail_pg(op->req, err, res, "revoke_credential");
    } else if (PQntuples(r) == 0) {
        if (++op->attempt < ATTEMPTS) {
            revoke_begin(op); /* revoked or expired meanwhile: the read says which */
            return;
        }
        cms_cmd_fail(op->req, CMS__V1__ERROR_CODE__UNAVAILABLE, NULL,
                     "the credential keeps changing; retry");
    } else {
        cms_auth_invalidate(op->s->auth, op->id);
        if (op->attestation)
            cms_auth_invalidate(op->s->auth, op->identity_id);
        cms_outbox_kick(op->s->outbox);
        Cms__V1__Credential c;
        row_credential(r, 0, &c);
        cms_cmd_reply(op->req, &c.base);
    }
    free(op);
}

static void revoke_read(void *arg, cms_pg_err err, const cms_pg_result *res)
{
    revoke_op *op = arg;
    const PGresult *r = err == CMS_PG_OK ? cms_pg_result_get(res, 0) : NULL;
    cms_event ev = {0}, lapse = {0};
    cms_pg_job *job = NULL;
    if (err != CMS_PG_OK) {
        fail_pg(op->req, err, res, "revoke_credential");
        goto fail;
    }
    if (PQntuples(r) == 0) {
        cms_cmd_fail(op->req, CMS__V1__ERROR_CODE__NOT_FOUND, "id", "no such credential");
        goto fail;
    }
    snprintf(op->identity_id, sizeof op->identity_id, "%s", PQgetvalue(r, 0, 0));
    op->attestation = strcmp(PQgetvalue(r, 0, 1), "attestation") == 0;
    if (!is_admin(op->req) && !is_self(op->req, op->identity_id)) {
        cms_cmd_fail(op->req, CMS__V1__ERROR_CODE__PERMISSION_DENIED, NULL,
                     "only an admin revokes another identity's credential");
        goto fail;
    }
    if (strcmp(PQgetvalue(r, 0, 2), "t") == 0) {
        cms_cmd_fail(op->req, CMS__V1__ERROR_CODE__FAILED_PRECONDITION, "id",
                     "the credential is already revoked");
        goto fail;
    }
    if (strcmp(PQgetvalue(r, 0, 3), "t") == 0) {
        cms_cmd_fail(op->req, CMS__V1__ERROR_CODE__FAILED_PRECONDITION, "id",
                     "the credential has expired");
        goto fail;
    }
    if (idev_credential_revoked(op->id, op->identity_id, op->reason, actor_of(op->req),
                                corr_of(op->req), &ev) != 0 ||
        (job = cms_pg_job_new()) == NULL)
        goto oom;
    const char *v[] = {op->id, op->reason, ev.id, ev.subject, (const char *)ev.buf};
    int len[5] = {[4] = (int)ev.len}, fmt[5] = {[4] = 1};
    if (cms_pg_job_sql(job, SQL_REVOKE, 5, v, len, fmt) != CMS_PG_OK)
        goto oom;
    if (op->attestation) {
        if (idev_status_changed(op->identity_id, "active", "inactive", "attestation revoked",
                                actor_of(op->req), corr_of(op->req), &lapse) != 0)
            goto oom;
        const char *vl[] = {op->identity_id, lapse.id, lapse.subject, (const char *)lapse.buf};
        int ll[4] = {[3] = (int)lapse.len}, fl[4] = {[3] = 1};
        if (cms_pg_job_sql(job, IDSQL_ENCLAVE_LAPSE, 4, vl, ll, fl) != CMS_PG_OK)
            goto oom;
    }
    cms_event_release(&ev);
    cms_event_release(&lapse);
    if (!run_job(op->s, op->req, job, revoked, op))
        free(op);
    return;
oom:
    cms_cmd_fail(op->req, CMS__V1__ERROR_CODE__INTERNAL, NULL, "out of memory");
fail:
    cms_event_release(&ev);
    cms_event_release(&lapse);
    cms_pg_job_free(job);
    free(op);
}

static void h_revoke(void *arg, cms_cmd_req *req)
{
    idsvc *s = arg;
    const Cms__V1__RevokeCredential *m = (const void *)cms_cmd_req_body(req);
    idv_err e;
    if (!idv_uuid(m->id, "id", &e) || !idv_text(m->reason, "reason", IDV_REASON_MAX, &e)) {
        fail_invalid(req, &e);
        return;
    }
    revoke_op *op = calloc(1, sizeof *op);
    if (op == NULL) {
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__INTERNAL, NULL, "out of memory");
        return;
    }
    *op = (revoke_op){.s = s, .req = req};
    snprintf(op->id, sizeof op->id, "%s", m->id);
    snprintf(op->reason, sizeof op->reason, "%s", m->reason);
    revoke_begin(op);
}

/* ---- list_credentials ---- */

static void creds_listed(void *arg, cms_pg_err err, const cms_pg_result *res)
{
    cms_cmd_req *req = arg;
    if (err != CMS_PG_OK) {
        fail_pg(req, err, res, "list_credentials");
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
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__INTERNAL, NULL, "out of memory");
    } else {
        Cms__V1__CredentialList list = CMS__V1__CREDENTIAL_LIST__INIT;
        for (int i = 0; i < n; i++) {
            row_credential(r, i, &items[i]);
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
        fail_invalid(req, &e);
        return;
    }
    if (!is_admin(req) && !is_self(req, m->identity_id)) {
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__PERMISSION_DENIED, NULL,
                     "only an admin lists another identity's credentials");
        return;
    }
    cms_pg_job *job = cms_pg_job_new();
    const char *v[] = {m->identity_id};
    if (job == NULL || cms_pg_job_sql(job, SQL_EXISTS, 1, v, NULL, NULL) != CMS_PG_OK ||
        cms_pg_job_sql(job, SQL_CREDENTIALS, 1, v, NULL, NULL) != CMS_PG_OK) {
        cms_pg_job_free(job);
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__INTERNAL, NULL, "out of memory");
        return;
    }
    (void)run_job(s, req, job, creds_listed, req);
}

/* ---- authenticate, and the resolver behind every command ---- */

static void authenticated(void *arg, Cms__V1__ErrorCode code, const cms_principal *p)
{
    cms_cmd_req *req = arg;
    if (code == CMS__V1__ERROR_CODE__OK) {
        Cms__V1__Principal pb;
        char *roles[CMS_AUTH_MAX_ROLES];
        cms_principal_to_pb(p, &pb, roles);
        cms_cmd_reply(req, &pb.base);
    } else if (code == CMS__V1__ERROR_CODE__PERMISSION_DENIED) {
        cms_cmd_fail(req, code, "api_key", "the API key is not accepted");
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
    Cms__V1__ErrorCode code = CMS__V1__ERROR_CODE__PERMISSION_DENIED;
    cms_principal p;
    memset(&p, 0, sizeof p);
    const PGresult *r = err == CMS_PG_OK ? cms_pg_result_get(res, 0) : NULL;
    if (err != CMS_PG_OK) {
        code = CMS__V1__ERROR_CODE__UNAVAILABLE;
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
    p.expires_at_us = i64(r, 0, 6);
    if (!parse_roles(PQgetvalue(r, 0, 5), &p))
        goto out;
    code = CMS__V1__ERROR_CODE__OK;
out:
    sodium_memzero(op->secret, sizeof op->secret);
    memcpy(p.credential_id, op->cred_id, sizeof p.credential_id);
    op->done(op->done_arg, code, code == CMS__V1__ERROR_CODE__OK ? &p : NULL);
    free(op);
}

void idsvc_resolve(void *arg, const char *key, cms_auth_cb done, void *done_arg)
{
    idsvc *s = arg;
    cms_uuid id;
    char ids[CMS_UUID_STRLEN + 1];
    resolve_op *op = calloc(1, sizeof *op);
    if (op == NULL) {
        done(done_arg, CMS__V1__ERROR_CODE__UNAVAILABLE, NULL);
        return;
    }
    if (!cms_apikey_parse(key, strlen(key), &id, op->secret)) {
        free(op);
        done(done_arg, CMS__V1__ERROR_CODE__PERMISSION_DENIED, NULL);
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
        done(done_arg, CMS__V1__ERROR_CODE__UNAVAILABLE, NULL);
    }
}

/* ---- life ---- */

int idsvc_create(const idsvc_options *o, idsvc **out)
{
    idsvc *s = calloc(1, sizeof *s);
    if (s == NULL || sodium_init() < 0) {
        free(s);
        return -1;
    }
    s->o = *o;
    uint8_t junk[CMS_APIKEY_SECRET_BYTES];
    randombytes_buf(junk, sizeof junk);
    cms_apikey_hash(s->o.server_key, junk, s->dummy_hash);
    *out = s;
    return 0;
}

int idsvc_start(idsvc *s, cms_service *svc)
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
    s->st_auth = cms_pg_prepare(s->pg, "identity_auth", SQL_AUTH, 1, NULL);
    s->st_create = cms_pg_prepare(s->pg, "identity_create", SQL_CREATE, 5, NULL);
    if (s->st_auth == NULL || s->st_create == NULL)
        return -1;
    if (cms_cmd_register(c, "create", &cms__v1__create_identity__descriptor, h_create, s) != 0 ||
        cms_cmd_register(c, "get", &cms__v1__get_identity__descriptor, h_get, s) != 0 ||
        cms_cmd_register(c, "list", &cms__v1__list_identities__descriptor, h_list, s) != 0 ||
        cms_cmd_register(c, "set_status", &cms__v1__set_identity_status__descriptor, h_set_status,
                         s) != 0 ||
        cms_cmd_register(c, "issue_credential", &cms__v1__issue_credential__descriptor, h_issue,
                         s) != 0 ||
        cms_cmd_register(c, "revoke_credential", &cms__v1__revoke_credential__descriptor, h_revoke,
                         s) != 0 ||
        cms_cmd_register(c, "list_credentials", &cms__v1__list_credentials__descriptor,
                         h_list_credentials, s) != 0 ||
        cms_cmd_register_open(c, "authenticate", &cms__v1__authenticate__descriptor, h_authenticate,
                              s) != 0)
        return -1;
    if (idexp_create(cms_service_loop(svc), s->pg, s->outbox, s->auth, &s->expiry) != 0)
        return -1;
    idexp_start(s->expiry);
    return 0;
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
    sodium_memzero(s->o.server_key, sizeof s->o.server_key);
    free(s);
}
