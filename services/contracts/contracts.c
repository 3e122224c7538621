/* The contracts of cms-contracts (create, update, get, list, canonical),
 * what its command files share, and the service's life; see contracts.h.
 *
 * Every job that touches contracts first says who acts (CTSQL_ACTOR), so
 * that PostgreSQL shows it only the caller's contracts: a contract the
 * caller may not see and one that does not exist are the same empty read,
 * answered the same NOT_FOUND. Every change writes its event in the same
 * statement; a command whose legality depends on the current state is a
 * transition (common/transition). */
#include "contracts_int.h"

#include "log.h"
#include "transition.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LIST_DEFAULT 100
#define LIST_MAX 1000

/* SQL reads best as written */
// clang-format off
static const char SQL_GET[] = "SELECT " CTSQL_COLS " FROM contracts WHERE id = $1::uuid";
static const char SQL_READ[] =
    "SELECT " CTSQL_COLS ", " CTSQL_PARTY_STATUS("provider_id") ", "
    CTSQL_PARTY_STATUS("consumer_id") " FROM contracts WHERE id = $1::uuid";
static const char SQL_PARTIES[] =
    "SELECT " CTSQL_PARTY_STATUS("$1::uuid") ", " CTSQL_PARTY_STATUS("$2::uuid");
/* $5 id, $6 title, $7 description, $8 provider, $9 consumer, $10 terms,
 * $11 metadata, $12 hash, $13 starts, $14 ends; only while both parties
 * are active */
static const char SQL_CREATE[] =
    "WITH u AS (INSERT INTO contracts (id, title, description, provider_id, consumer_id, terms, "
    "signatures, metadata, content_hash, starts_at, ends_at) SELECT $5::uuid, $6, nullif($7, ''), "
    "$8::uuid, $9::uuid, $10::jsonb, '{}'::jsonb, $11::jsonb, $12, " CMS_PG_SQL_FROM_US("$13") ", "
    CMS_PG_SQL_FROM_US("$14") " WHERE " CTSQL_PARTY_STATUS("$8::uuid") " = 'active' AND "
    CTSQL_PARTY_STATUS("$9::uuid") " = 'active' RETURNING " CTSQL_COLS "), "
    "o AS (" CMS_OUTBOX_SQL_FROM("u") ") SELECT * FROM u";
/* $5 id, $6 title, $7 description, $8 terms, $9 metadata (NULL: kept),
 * $10 hash, $11 starts, $12 ends, $13 updated_at read; a draft as read,
 * keeping an amendment's supersedes */
static const char SQL_UPDATE[] =
    "WITH u AS (UPDATE contracts SET title = $6, description = nullif($7, ''), "
    "terms = $8::jsonb, metadata = CASE WHEN $9::jsonb IS NULL THEN metadata ELSE $9::jsonb || "
    "CASE WHEN metadata ? 'supersedes' THEN jsonb_build_object('supersedes', "
    "metadata -> 'supersedes') ELSE '{}'::jsonb END END, content_hash = $10, "
    "starts_at = " CMS_PG_SQL_FROM_US("$11") ", ends_at = " CMS_PG_SQL_FROM_US("$12") ", "
    "updated_at = now() WHERE id = $5::uuid AND status = 'draft' AND "
    CMS_PG_SQL_US("updated_at") " = $13::int8 RETURNING " CTSQL_COLS "), "
    "o AS (" CMS_OUTBOX_SQL_FROM("u") ") SELECT * FROM u";
static const char SQL_LIST[] =
    "SELECT " CTSQL_COLS " FROM contracts WHERE ($1::uuid IS NULL OR provider_id = $1::uuid OR "
    "consumer_id = $1::uuid) AND ($2::contract_status IS NULL OR status = $2::contract_status) "
    "AND ($3::int8 IS NULL OR created_at >= " CMS_PG_SQL_FROM_US("$3") ") "
    "AND ($4::int8 IS NULL OR created_at < " CMS_PG_SQL_FROM_US("$4") ") "
    "AND ($5::uuid IS NULL OR id > $5::uuid) ORDER BY id LIMIT $6::int";
// clang-format on

static const char *const err_names[] = {CTSVC_ERRORS(CMS_ENUM_TEXT)};

const char *ctsvc_strerror(ctsvc_err e)
{
    return cms_enum_text(err_names, CTSVC_NERRORS, e);
}

/* ---- shared by the command files ---- */

const char *ctsvc_correlation(cms_cmd_req *req)
{
    return cms_cmd_req_request_id(req);
}

bool ctsvc_is_admin(cms_cmd_req *req)
{
    return cms_principal_has_role(cms_cmd_req_principal(req), "admin");
}

int ctsvc_job_actor(ctsvc *s, cms_pg_job *job, cms_cmd_req *req)
{
    const char *v[] = {cms_cmd_req_actor(req), cms_cmd_req_sees_all(req) ? "on" : "off"};
    return cms_pg_job_lead_exec(job, s->st_actor, v, NULL, NULL);
}

bool ctsvc_prepare(ctsvc *s, const cms_pg_stmt **out, const char *name, const char *sql,
                   int nparams)
{
    char full[64];
    snprintf(full, sizeof full, "contracts_%s", name);
    *out = cms_pg_prepare(s->pg, full, sql, nparams, NULL);
    return *out != NULL;
}

const char *ctsvc_side(cms_cmd_req *req, const PGresult *r, int row)
{
    return ctsvc_side_of(r, row, cms_cmd_req_actor(req));
}

const char *ctsvc_side_of(const PGresult *r, int row, const char *me)
{
    if (strcmp(PQgetvalue(r, row, CTCOL_PROVIDER), me) == 0)
        return "provider";
    if (strcmp(PQgetvalue(r, row, CTCOL_CONSUMER), me) == 0)
        return "consumer";
    return NULL;
}

void ctsvc_fail_invalid(cms_cmd_req *req, const cv_err *e)
{
    cms_cmd_fail(req, CMS__V1__ERROR_CODE__INVALID_ARGUMENT, e->field, "%s", e->msg);
}

void ctsvc_fail_oom(cms_cmd_req *req)
{
    cms_cmd_fail(req, CMS__V1__ERROR_CODE__INTERNAL, NULL, "out of memory");
}

void ctsvc_fail_not_found(cms_cmd_req *req)
{
    cms_cmd_fail(req, CMS__V1__ERROR_CODE__NOT_FOUND, "id", "no such contract");
}

void ctsvc_fail_status(cms_cmd_req *req, const char *status, const char *what)
{
    cms_cmd_fail(req, CMS__V1__ERROR_CODE__FAILED_PRECONDITION, "status", "the contract is %s: %s",
                 status, what);
}

bool ctsvc_party_active(cms_cmd_req *req, const char *who, const char *status)
{
    if (status == NULL || status[0] == '\0') {
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__FAILED_PRECONDITION, who,
                     "the %s is an unknown or not yet known identity; if it was just created, "
                     "retry in a moment",
                     who);
        return false;
    }
    if (strcmp(status, "active") != 0) {
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__FAILED_PRECONDITION, who, "the %s is %s", who,
                     status);
        return false;
    }
    return true;
}

int64_t ctsvc_i64(const PGresult *r, int row, int col)
{
    return strtoll(PQgetvalue(r, row, col), NULL, 10);
}

void ctsvc_row_contract(const PGresult *r, int row, Cms__V1__Contract *out)
{
    cms__v1__contract__init(out);
    out->id = PQgetvalue(r, row, CTCOL_ID);
    out->title = PQgetvalue(r, row, CTCOL_TITLE);
    out->description = PQgetvalue(r, row, CTCOL_DESCRIPTION);
    out->provider_id = PQgetvalue(r, row, CTCOL_PROVIDER);
    out->consumer_id = PQgetvalue(r, row, CTCOL_CONSUMER);
    out->status = PQgetvalue(r, row, CTCOL_STATUS);
    out->terms_json = PQgetvalue(r, row, CTCOL_TERMS);
    out->signatures_json = PQgetvalue(r, row, CTCOL_SIGNATURES);
    out->metadata_json = PQgetvalue(r, row, CTCOL_METADATA);
    out->created_at_us = ctsvc_i64(r, row, CTCOL_CREATED);
    out->updated_at_us = ctsvc_i64(r, row, CTCOL_UPDATED);
    out->content_hash = PQgetvalue(r, row, CTCOL_HASH);
}

void ctsvc_reply_row(cms_cmd_req *req, const PGresult *r)
{
    Cms__V1__Contract m;
    ctsvc_row_contract(r, 0, &m);
    cms_cmd_reply(req, &m.base);
}

void ctsvc_row_event(const PGresult *r, int row, const char *status_after, ctev_contract *out)
{
    out->id = PQgetvalue(r, row, CTCOL_ID);
    out->provider_id = PQgetvalue(r, row, CTCOL_PROVIDER);
    out->consumer_id = PQgetvalue(r, row, CTCOL_CONSUMER);
    out->status = status_after;
}

int ctsvc_read_contract(ctsvc *s, cms_pg_job *job, cms_cmd_req *req, const char *id)
{
    const char *v[] = {id};
    int rc = ctsvc_job_actor(s, job, req);
    return rc ? rc : cms_pg_job_exec(job, s->st_read, v, NULL, NULL);
}

const PGresult *ctsvc_read_row(cms_cmd_req *req, const cms_pg_result *res)
{
    const PGresult *r = cms_pg_result_get(res, 0);
    if (r == NULL || PQntuples(r) == 0) {
        ctsvc_fail_not_found(req);
        return NULL;
    }
    return r;
}

bool ctsvc_content_hash(cms_cmd_req *req, const char *id, const char *title,
                        const char *description, const char *provider, const char *consumer,
                        const char *terms, char hex[CC_HASH_HEX + 1])
{
    char *canon = NULL;
    size_t len = 0;
    cms_jcs_err err = cc_canonical(id, title, description, provider, consumer, terms, &canon, &len);
    if (err != CMS_JCS_OK) {
        if (err == CMS_JCS_ENOMEM)
            ctsvc_fail_oom(req);
        else
            cms_cmd_fail(req, CMS__V1__ERROR_CODE__INVALID_ARGUMENT, "terms",
                         "the contract has no canonical form (RFC 8785): %s",
                         cms_jcs_strerror(err));
        return false;
    }
    uint8_t digest[32];
    cc_hash(canon, len, digest, hex);
    free(canon);
    return true;
}

void ctsvc_committed(ctsvc *s, const PGresult *r)
{
    cms_outbox_kick(s->outbox);
    if (r == NULL || PQntuples(r) == 0)
        return;
    const char *st = PQgetvalue(r, 0, CTCOL_STATUS);
    if (strcmp(st, "signed") == 0)
        ctsched_note(s->sched, ctsvc_i64(r, 0, CTCOL_STARTS));
    if (strcmp(st, "signed") == 0 || strcmp(st, "active") == 0)
        ctsched_note(s->sched, ctsvc_i64(r, 0, CTCOL_ENDS));
}

bool ctsvc_written(void *op, cms_cmd_req *req, const cms_pg_result *res)
{
    const PGresult *r = cms_pg_result_get(res, 0);
    if (PQntuples(r) == 0)
        return false;
    ctsvc_committed(((ctsvc_op *)op)->s, r);
    ctsvc_reply_row(req, r);
    return true;
}

/* ---- create: a transition on the parties' statuses ---- */

typedef struct create_op {
    ctsvc_op o; /* first: ctsvc_written's */
    char id[CT_ID_LEN + 1], provider[CT_ID_LEN + 1], consumer[CT_ID_LEN + 1];
    char hash[CC_HASH_HEX + 1];
    char starts[24], ends[24];
    const Cms__V1__CreateContract *m; /* the request's body: lives as long as req */
    const char *metadata;
} create_op;

static int create_read(void *arg, cms_pg_job *job)
{
    create_op *op = arg;
    const char *v[] = {op->provider, op->consumer};
    int rc = ctsvc_job_actor(op->o.s, job, op->o.req);
    return rc ? rc : cms_pg_job_exec(job, op->o.s->st_parties, v, NULL, NULL);
}

static cms_transition_step create_decide(void *arg, cms_cmd_req *req, const cms_pg_result *res,
                                         cms_pg_job *write)
{
    create_op *op = arg;
    const PGresult *r = cms_pg_result_get(res, 0);
    if (!ctsvc_party_active(req, "provider", PQgetvalue(r, 0, 0)) ||
        !ctsvc_party_active(req, "consumer", PQgetvalue(r, 0, 1)))
        return CMS_TRANSITION_ANSWERED;
    ctev_contract c = {op->id, op->provider, op->consumer, "draft"};
    cms_bus_event ev = {0};
    const char *v[] = {op->id,       op->m->title,      op->m->description, op->provider,
                       op->consumer, op->m->terms_json, op->metadata,       op->hash,
                       op->starts,   op->ends};
    bool ok =
        ctsvc_job_actor(op->o.s, write, req) == CMS_PG_OK &&
        ctev_created(&c, op->m->title, op->hash, cms_cmd_req_actor(req), ctsvc_correlation(req),
                     &ev) == CMS_BUS_OK &&
        cms_outbox_add_exec(write, op->o.s->st_create, CTEV_SOURCE, &ev, 10, v) == CMS_OUTBOX_OK;
    cms_bus_event_release(&ev);
    if (!ok) {
        ctsvc_fail_oom(req);
        return CMS_TRANSITION_ANSWERED;
    }
    return CMS_TRANSITION_WRITE;
}

static const cms_transition_ops create_ops = {.what = "create",
                                              .object = "parties' status",
                                              .read = create_read,
                                              .decide = create_decide,
                                              .written = ctsvc_written};

static void h_create(void *arg, cms_cmd_req *req)
{
    ctsvc *s = arg;
    const Cms__V1__CreateContract *m = (const void *)cms_cmd_req_body(req);
    cv_err e;
    cv_terms t;
    const char *metadata;
    if (!cv_title(m->title, &e) || !cv_description(m->description, &e) ||
        !cv_uuid(m->provider_id, "provider_id", &e) ||
        !cv_uuid(m->consumer_id, "consumer_id", &e) || !cv_terms_check(m->terms_json, &t, &e) ||
        !cv_metadata(m->metadata_json, "metadata_json", &metadata, &e)) {
        ctsvc_fail_invalid(req, &e);
        return;
    }
    if (strcmp(m->provider_id, m->consumer_id) == 0) {
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__INVALID_ARGUMENT, "consumer_id",
                     "the provider and the consumer must be two identities");
        return;
    }
    const char *me = cms_cmd_req_actor(req);
    if (strcmp(me, m->provider_id) != 0 && strcmp(me, m->consumer_id) != 0 &&
        !ctsvc_is_admin(req)) {
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__PERMISSION_DENIED, NULL,
                     "a contract is created by one of its parties or by an admin");
        return;
    }
    create_op *op = calloc(1, sizeof *op);
    if (op == NULL) {
        ctsvc_fail_oom(req);
        return;
    }
    *op = (create_op){.o = {s, req}, .m = m, .metadata = metadata};
    cms_uuid u;
    cms_uuid_v7(&u);
    cms_uuid_format(&u, op->id);
    snprintf(op->provider, sizeof op->provider, "%s", m->provider_id);
    snprintf(op->consumer, sizeof op->consumer, "%s", m->consumer_id);
    snprintf(op->starts, sizeof op->starts, "%lld", (long long)t.starts_at_us);
    snprintf(op->ends, sizeof op->ends, "%lld", (long long)t.ends_at_us);
    if (!ctsvc_content_hash(req, op->id, m->title, m->description, m->provider_id, m->consumer_id,
                            m->terms_json, op->hash)) {
        free(op);
        return;
    }
    cms_transition_run(s->pg, req, &create_ops, op);
}

/* ---- update: a transition of a draft ---- */

typedef struct update_op {
    ctsvc_op o; /* first: ctsvc_written's */
    char id[CT_ID_LEN + 1];
    const Cms__V1__UpdateContract *m;
    const char *metadata; /* NULL: kept */
} update_op;

static int update_read(void *arg, cms_pg_job *job)
{
    update_op *op = arg;
    return ctsvc_read_contract(op->o.s, job, op->o.req, op->id);
}

static cms_transition_step update_decide(void *arg, cms_cmd_req *req, const cms_pg_result *res,
                                         cms_pg_job *write)
{
    update_op *op = arg;
    const Cms__V1__UpdateContract *m = op->m;
    const PGresult *r = ctsvc_read_row(req, res);
    if (r == NULL)
        return CMS_TRANSITION_ANSWERED;
    if (ctsvc_side(req, r, 0) == NULL) {
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__PERMISSION_DENIED, NULL,
                     "only a party changes a contract");
        return CMS_TRANSITION_ANSWERED;
    }
    const char *status = PQgetvalue(r, 0, CTCOL_STATUS);
    if (strcmp(status, "draft") != 0) {
        ctsvc_fail_status(req, status, "only a draft changes; amend a signed or active contract");
        return CMS_TRANSITION_ANSWERED;
    }
    const char *title = m->title[0] ? m->title : PQgetvalue(r, 0, CTCOL_TITLE);
    const char *desc = m->clear_description ? ""
                       : m->description[0]  ? m->description
                                            : PQgetvalue(r, 0, CTCOL_DESCRIPTION);
    const char *terms = m->terms_json[0] ? m->terms_json : PQgetvalue(r, 0, CTCOL_TERMS);
    cv_terms t;
    cv_err e;
    if (!cv_terms_check(terms, &t, &e)) {
        ctsvc_fail_invalid(req, &e);
        return CMS_TRANSITION_ANSWERED;
    }
    char hash[CC_HASH_HEX + 1], starts[24], ends[24];
    if (!ctsvc_content_hash(req, op->id, title, desc, PQgetvalue(r, 0, CTCOL_PROVIDER),
                            PQgetvalue(r, 0, CTCOL_CONSUMER), terms, hash))
        return CMS_TRANSITION_ANSWERED;
    snprintf(starts, sizeof starts, "%lld", (long long)t.starts_at_us);
    snprintf(ends, sizeof ends, "%lld", (long long)t.ends_at_us);
    const char *fields[4];
    size_t nf = 0;
    if (m->title[0])
        fields[nf++] = "title";
    if (m->description[0] || m->clear_description)
        fields[nf++] = "description";
    if (m->terms_json[0])
        fields[nf++] = "terms";
    if (op->metadata)
        fields[nf++] = "metadata";
    ctev_contract c;
    ctsvc_row_event(r, 0, "draft", &c);
    cms_bus_event ev = {0};
    const char *v[] = {op->id, title,        desc,
                       terms,  op->metadata, hash,
                       starts, ends,         PQgetvalue(r, 0, CTCOL_UPDATED)};
    bool ok =
        ctsvc_job_actor(op->o.s, write, req) == CMS_PG_OK &&
        ctev_updated(&c, fields, nf, hash, cms_cmd_req_actor(req), ctsvc_correlation(req), &ev) ==
            CMS_BUS_OK &&
        cms_outbox_add_exec(write, op->o.s->st_update, CTEV_SOURCE, &ev, 9, v) == CMS_OUTBOX_OK;
    cms_bus_event_release(&ev);
    if (!ok) {
        ctsvc_fail_oom(req);
        return CMS_TRANSITION_ANSWERED;
    }
    return CMS_TRANSITION_WRITE;
}

static const cms_transition_ops update_ops = {.what = "update",
                                              .object = "contract",
                                              .read = update_read,
                                              .decide = update_decide,
                                              .written = ctsvc_written};

static void h_update(void *arg, cms_cmd_req *req)
{
    ctsvc *s = arg;
    const Cms__V1__UpdateContract *m = (const void *)cms_cmd_req_body(req);
    cv_err e;
    const char *metadata = NULL;
    if (!cv_uuid(m->id, "id", &e) || (m->title[0] && !cv_title(m->title, &e)) ||
        !cv_description(m->description, &e) ||
        (m->metadata_json[0] && !cv_metadata(m->metadata_json, "metadata_json", &metadata, &e))) {
        ctsvc_fail_invalid(req, &e);
        return;
    }
    if (!m->title[0] && !m->description[0] && !m->clear_description && !m->terms_json[0] &&
        metadata == NULL) {
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__INVALID_ARGUMENT, NULL,
                     "nothing to change: give a title, a description, terms or metadata");
        return;
    }
    update_op *op = calloc(1, sizeof *op);
    if (op == NULL) {
        ctsvc_fail_oom(req);
        return;
    }
    *op = (update_op){.o = {s, req}, .m = m, .metadata = metadata};
    snprintf(op->id, sizeof op->id, "%s", m->id);
    cms_transition_run(s->pg, req, &update_ops, op);
}

/* ---- get, canonical, list ---- */

static bool read_by_id(ctsvc *s, cms_cmd_req *req, const char *id, cms_pg_done_cb done)
{
    cv_err e;
    if (!cv_uuid(id, "id", &e)) {
        ctsvc_fail_invalid(req, &e);
        return false;
    }
    cms_pg_job *job = cms_pg_job_new();
    const char *v[] = {id};
    if (job == NULL || ctsvc_job_actor(s, job, req) != CMS_PG_OK ||
        cms_pg_job_exec(job, s->st_get, v, NULL, NULL) != CMS_PG_OK) {
        cms_pg_job_free(job);
        ctsvc_fail_oom(req);
        return false;
    }
    return cms_cmd_run_read(req, s->pg, job, done, req);
}

static void got(void *arg, cms_pg_err err, const cms_pg_result *res)
{
    cms_cmd_req *req = arg;
    if (err != CMS_PG_OK)
        cms_cmd_fail_pg(req, err, res, "get");
    else if (ctsvc_read_row(req, res) != NULL)
        ctsvc_reply_row(req, cms_pg_result_get(res, 0));
}

static void h_get(void *arg, cms_cmd_req *req)
{
    const Cms__V1__ContractRef *m = (const void *)cms_cmd_req_body(req);
    (void)read_by_id(arg, req, m->id, got);
}

static void got_canonical(void *arg, cms_pg_err err, const cms_pg_result *res)
{
    cms_cmd_req *req = arg;
    const PGresult *r;
    if (err != CMS_PG_OK) {
        cms_cmd_fail_pg(req, err, res, "canonical");
        return;
    }
    if ((r = ctsvc_read_row(req, res)) == NULL)
        return;
    char *canon = NULL;
    size_t len = 0;
    cms_jcs_err je =
        cc_canonical(PQgetvalue(r, 0, CTCOL_ID), PQgetvalue(r, 0, CTCOL_TITLE),
                     PQgetvalue(r, 0, CTCOL_DESCRIPTION), PQgetvalue(r, 0, CTCOL_PROVIDER),
                     PQgetvalue(r, 0, CTCOL_CONSUMER), PQgetvalue(r, 0, CTCOL_TERMS), &canon, &len);
    if (je != CMS_JCS_OK) {
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__INTERNAL, NULL,
                     "the stored contract has no canonical form");
        return;
    }
    Cms__V1__CanonicalForm f = CMS__V1__CANONICAL_FORM__INIT;
    uint8_t digest[32];
    char hex[CC_HASH_HEX + 1];
    cc_hash(canon, len, digest, hex);
    f.id = PQgetvalue(r, 0, CTCOL_ID);
    f.canonical.data = (uint8_t *)canon;
    f.canonical.len = len;
    f.content_hash = hex;
    cms_cmd_reply(req, &f.base);
    free(canon);
}

static void h_canonical(void *arg, cms_cmd_req *req)
{
    const Cms__V1__ContractRef *m = (const void *)cms_cmd_req_body(req);
    (void)read_by_id(arg, req, m->id, got_canonical);
}

static void row_contract(const PGresult *r, int i, void *item)
{
    ctsvc_row_contract(r, i, item);
}

static void h_list(void *arg, cms_cmd_req *req)
{
    ctsvc *s = arg;
    const Cms__V1__ListContracts *m = (const void *)cms_cmd_req_body(req);
    cv_err e;
    cv_status st;
    if ((m->party_id[0] && !cv_uuid(m->party_id, "party_id", &e)) ||
        (m->status[0] && !cv_status_parse(m->status, "status", &st, &e)) ||
        (m->after[0] && !cv_uuid(m->after, "after", &e))) {
        ctsvc_fail_invalid(req, &e);
        return;
    }
    if (m->limit < 0 || m->limit > LIST_MAX) {
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__INVALID_ARGUMENT, "limit",
                     "limit must be 1 to %d (0: %d)", LIST_MAX, LIST_DEFAULT);
        return;
    }
    if (m->created_after_us < 0 || m->created_before_us < 0 ||
        (m->created_before_us && m->created_after_us >= m->created_before_us)) {
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__INVALID_ARGUMENT, "created_before_us",
                     "the creation range must end after it starts");
        return;
    }
    cms_pg_job *job = cms_pg_job_new();
    char lim[16], from[24], to[24];
    int limit = m->limit ? m->limit : LIST_DEFAULT;
    snprintf(lim, sizeof lim, "%d", limit + 1);
    snprintf(from, sizeof from, "%lld", (long long)m->created_after_us);
    snprintf(to, sizeof to, "%lld", (long long)m->created_before_us);
    const char *v[] = {m->party_id[0] ? m->party_id : NULL, m->status[0] ? m->status : NULL,
                       m->created_after_us ? from : NULL,   m->created_before_us ? to : NULL,
                       m->after[0] ? m->after : NULL,       lim};
    if (job == NULL || ctsvc_job_actor(s, job, req) != CMS_PG_OK ||
        cms_pg_job_exec(job, s->st_list, v, NULL, NULL) != CMS_PG_OK) {
        cms_pg_job_free(job);
        ctsvc_fail_oom(req);
        return;
    }
    cms_cmd_run_page(req, s->pg, job, limit, &cms__v1__contract_page__descriptor, "contracts",
                     row_contract);
}

ctsvc_err ctsvc_register_contracts(ctsvc *s, cms_cmd *c)
{
    if (!ctsvc_prepare(s, &s->st_actor, "actor", CTSQL_ACTOR, 2) ||
        !ctsvc_prepare(s, &s->st_timer, "timer", CTSQL_TIMER, 0) ||
        !ctsvc_prepare(s, &s->st_activate, "activate", CTSQL_ACTIVATE, 13) ||
        !ctsvc_prepare(s, &s->st_get, "get", SQL_GET, 1) ||
        !ctsvc_prepare(s, &s->st_read, "read", SQL_READ, 1) ||
        !ctsvc_prepare(s, &s->st_parties, "parties", SQL_PARTIES, 2) ||
        !ctsvc_prepare(s, &s->st_create, "create", SQL_CREATE, 14) ||
        !ctsvc_prepare(s, &s->st_update, "update", SQL_UPDATE, 13) ||
        !ctsvc_prepare(s, &s->st_list, "list", SQL_LIST, 6))
        return CTSVC_ESETUP;
    if (cms_cmd_register(c, "create", &cms__v1__create_contract__descriptor, h_create, s) != 0 ||
        cms_cmd_register(c, "update", &cms__v1__update_contract__descriptor, h_update, s) != 0 ||
        cms_cmd_register(c, "get", &cms__v1__contract_ref__descriptor, h_get, s) != 0 ||
        cms_cmd_register(c, "canonical", &cms__v1__contract_ref__descriptor, h_canonical, s) != 0 ||
        cms_cmd_register(c, "list", &cms__v1__list_contracts__descriptor, h_list, s) != 0)
        return CTSVC_ESETUP;
    return CTSVC_OK;
}

/* ---- life ---- */

/* contract.fully_signed and contract.activated of any replica: the timer
 * here learns their due dates too */
static void on_own_event(void *arg, cms_nats_msg *msg)
{
    ctsvc *s = arg;
    Cms__V1__Envelope *env =
        cms__v1__envelope__unpack(NULL, cms_nats_msg_len(msg), cms_nats_msg_data(msg));
    if (env && env->body_case == CMS__V1__ENVELOPE__BODY_CONTRACT_FULLY_SIGNED) {
        ctsched_note(s->sched, env->contract_fully_signed->starts_at_us);
        ctsched_note(s->sched, env->contract_fully_signed->ends_at_us);
    } else if (env && env->body_case == CMS__V1__ENVELOPE__BODY_CONTRACT_ACTIVATED) {
        ctsched_note(s->sched, env->contract_activated->ends_at_us);
    }
    if (env)
        cms__v1__envelope__free_unpacked(env, NULL);
    cms_nats_msg_destroy(msg);
}

ctsvc_err ctsvc_create(ctsvc **out)
{
    ctsvc *s = calloc(1, sizeof *s);
    if (s == NULL)
        return CTSVC_ENOMEM;
    *out = s;
    return CTSVC_OK;
}

ctsvc_err ctsvc_start(ctsvc *s, cms_service *svc)
{
    s->svc = svc;
    s->pg = cms_service_pg(svc);
    s->outbox = cms_service_outbox(svc);
    cms_cmd *c = cms_service_cmd(svc);
    ctsvc_err err = ctsvc_register_contracts(s, c);
    if (err == CTSVC_OK)
        err = ctsvc_register_lifecycle(s, c);
    if (err == CTSVC_OK)
        err = ctsvc_register_signing(s, c);
    if (err == CTSVC_OK)
        err = ctsvc_register_parties(s);
    if (err != CTSVC_OK)
        return err;
    if (ctsched_create(cms_service_loop(svc), s, &s->sched) != 0)
        return CTSVC_ENOMEM;
    cms_nats *n = cms_service_nats(svc);
    if (cms_nats_subscribe(n, "cms.events.contract.fully_signed", NULL, on_own_event, s,
                           &s->signed_sub) != 0 ||
        cms_nats_subscribe(n, "cms.events.contract.activated", NULL, on_own_event, s,
                           &s->activated_sub) != 0)
        return CTSVC_ESETUP;
    ctsched_start(s->sched);
    return CTSVC_OK;
}

static void sched_closed(void *arg)
{
    ctsvc *s = arg;
    if (s->drained)
        s->drained(s->drained_arg);
}

void ctsvc_drain(ctsvc *s, void (*drained)(void *arg), void *arg)
{
    s->drained = drained;
    s->drained_arg = arg;
    cms_nats_unsubscribe(s->signed_sub);
    cms_nats_unsubscribe(s->activated_sub);
    s->signed_sub = s->activated_sub = NULL;
    if (s->sched)
        ctsched_close(s->sched, sched_closed, s);
    else if (drained)
        drained(arg);
}

void ctsvc_destroy(ctsvc *s)
{
    if (s == NULL)
        return;
    ctsched_destroy(s->sched);
    free(s);
}
