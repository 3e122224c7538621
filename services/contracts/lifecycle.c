/* The lifecycle verbs of cms-contracts: submit, activate, complete,
 * terminate and amend. Each is a transition (common/transition): the
 * contract is read as the caller sees it, checked here so that a refusal
 * says why, then written with the status read as the statement's
 * condition; the loser of a race reads again and is refused with the
 * status it lost to. */
#include "contracts_int.h"

#include "transition.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* SQL reads best as written */
// clang-format off
/* $5 id, $6 the new status, $7 the status read, $8 why it ended (NULL:
 * not ended), $9 the content hash read */
static const char SQL_SET_STATUS[] =
    "WITH u AS (UPDATE contracts SET status = $6::contract_status, "
    "ended_reason = coalesce($8, ended_reason), updated_at = now() WHERE id = $5::uuid "
    "AND status = $7::contract_status AND content_hash = $9 RETURNING " CTSQL_COLS "), "
    "o AS (" CMS_OUTBOX_SQL_FROM("u") ") SELECT * FROM u";
/* Events: $1..$4 contract.amended (the old one), $5..$8 contract.created
 * (the amendment). $9 old id, $10 its status read, $11 its hash read,
 * $12 new id, $13 title, $14 description, $15 provider, $16 consumer,
 * $17 terms, $18 metadata, $19 hash, $20 starts, $21 ends. */
static const char SQL_AMEND[] =
    "WITH src AS (SELECT id FROM contracts WHERE id = $9::uuid AND status = $10::contract_status "
    "AND content_hash = $11), "
    "u AS (INSERT INTO contracts (id, title, description, provider_id, consumer_id, terms, "
    "signatures, metadata, content_hash, starts_at, ends_at, supersedes) SELECT $12::uuid, $13, "
    "nullif($14, ''), $15::uuid, $16::uuid, $17::jsonb, '{}'::jsonb, ($18::jsonb - 'supersedes') "
    "|| jsonb_build_object('supersedes', jsonb_build_object('id', $9::text, 'content_hash', "
    "$11::text)), $19, " CMS_PG_SQL_FROM_US("$20") ", " CMS_PG_SQL_FROM_US("$21") ", src.id "
    "FROM src WHERE " CTSQL_PARTY_STATUS("$15::uuid") " = 'active' AND "
    CTSQL_PARTY_STATUS("$16::uuid") " = 'active' RETURNING " CTSQL_COLS "), "
    "o1 AS (" CMS_OUTBOX_SQL_FROM_AT("u", "1", "2", "3", "4") " RETURNING seq), "
    "o2 AS (" CMS_OUTBOX_SQL_FROM_AT("u, o1", "5", "6", "7", "8") ") SELECT * FROM u";
// clang-format on

int ctsvc_add_activation(ctsvc *s, cms_pg_job *job, const PGresult *r, int row, bool automatic,
                         const char *actor, const char *corr)
{
    ctev_contract c, old;
    ctsvc_row_event(r, row, "active", &c);
    const char *sup = PQgetvalue(r, row, CTCOL_SUPERSEDES);
    old = c;
    old.id = sup[0] ? sup : c.id; /* without one, its events are never written */
    cms_bus_event ev[3];
    memset(ev, 0, sizeof ev);
    const cms_bus_event *evs[] = {&ev[0], &ev[1], &ev[2]};
    const char *v[] = {c.id};
    old.status = "completed";
    bool ok = ctev_activated(&c, ctsvc_i64(r, row, CTCOL_STARTS), ctsvc_i64(r, row, CTCOL_ENDS),
                             strtod(PQgetvalue(r, row, CTCOL_MAX_EPSILON), NULL),
                             strtod(PQgetvalue(r, row, CTCOL_DELTA), NULL), automatic,
                             sup[0] ? sup : NULL, actor, corr, &ev[0]) == CMS_BUS_OK &&
              ctev_completed(&old, "superseded", c.id, actor, corr, &ev[1]) == CMS_BUS_OK;
    old.status = "terminated";
    ok =
        ok &&
        ctev_terminated(&old, "signed", automatic ? "system" : ctsvc_side_of(r, row, actor),
                        "superseded", actor, corr, &ev[2]) == CMS_BUS_OK &&
        cms_outbox_add_exec_events(job, s->st_activate, CTEV_SOURCE, evs, 3, 1, v) == CMS_OUTBOX_OK;
    for (int i = 0; i < 3; i++)
        cms_bus_event_release(&ev[i]);
    return ok ? 0 : -1;
}

/* ---- one op for every verb ---- */

typedef enum { V_SUBMIT, V_ACTIVATE, V_COMPLETE, V_TERMINATE, V_AMEND } verb;

typedef struct life_op {
    ctsvc_op o; /* first: ctsvc_written's */
    verb v;
    char id[CT_ID_LEN + 1];
    char reason[CV_REASON_MAX + 1];
    const Cms__V1__AmendContract *am; /* amend: the request's body */
    const char *metadata;             /* amend: NULL, or the new metadata */
} life_op;

static int life_read(void *arg, cms_pg_job *job)
{
    life_op *op = arg;
    return ctsvc_read_contract(op->o.s, job, op->o.req, op->id);
}

/* "2026-12-02T10:00:00Z" */
static void iso_time(int64_t us, char out[32])
{
    time_t t = (time_t)(us / 1000000);
    struct tm tm;
    if (gmtime_r(&t, &tm) == NULL || strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(out, 32, "%lld us", (long long)us);
}

/* The plain status changes: the event, then the conditional write. */
static bool add_set_status(life_op *op, cms_cmd_req *req, const PGresult *r, const char *side,
                           cms_pg_job *write)
{
    const char *from = PQgetvalue(r, 0, CTCOL_STATUS), *hash = PQgetvalue(r, 0, CTCOL_HASH);
    const char *to = op->v == V_SUBMIT     ? "review"
                     : op->v == V_COMPLETE ? "completed"
                                           : "terminated";
    ctev_contract c;
    ctsvc_row_event(r, 0, to, &c);
    cms_bus_event ev = {0};
    cms_bus_err be;
    const char *actor = cms_cmd_req_actor(req), *corr = ctsvc_correlation(req);
    if (op->v == V_SUBMIT)
        be = ctev_submitted(&c, hash, actor, corr, &ev);
    else if (op->v == V_COMPLETE)
        be = ctev_completed(&c, NULL, NULL, actor, corr, &ev);
    else
        be = ctev_terminated(&c, from, side, op->reason, actor, corr, &ev);
    const char *v[] = {op->id, to, from, op->v == V_TERMINATE ? op->reason : NULL, hash};
    bool ok = be == CMS_BUS_OK && cms_outbox_add_exec(write, op->o.s->st_set_status, CTEV_SOURCE,
                                                      &ev, 5, v) == CMS_OUTBOX_OK;
    cms_bus_event_release(&ev);
    return ok;
}

static bool add_amend(life_op *op, cms_cmd_req *req, const PGresult *r, cms_pg_job *write)
{
    const Cms__V1__AmendContract *m = op->am;
    const char *title = m->title[0] ? m->title : PQgetvalue(r, 0, CTCOL_TITLE);
    const char *desc = m->description[0] ? m->description : PQgetvalue(r, 0, CTCOL_DESCRIPTION);
    const char *terms = m->terms_json[0] ? m->terms_json : PQgetvalue(r, 0, CTCOL_TERMS);
    const char *meta = op->metadata ? op->metadata : PQgetvalue(r, 0, CTCOL_METADATA);
    const char *prov = PQgetvalue(r, 0, CTCOL_PROVIDER), *cons = PQgetvalue(r, 0, CTCOL_CONSUMER);
    cv_terms t;
    cv_err e;
    if (!cv_terms_check(terms, &t, &e)) {
        ctsvc_fail_invalid(req, &e);
        return true; /* answered */
    }
    char new_id[CT_ID_LEN + 1], hash[CC_HASH_HEX + 1], starts[24], ends[24];
    cms_uuid u;
    cms_uuid_v7(&u);
    cms_uuid_format(&u, new_id);
    if (!ctsvc_content_hash(req, new_id, title, desc, prov, cons, terms, hash))
        return true;
    snprintf(starts, sizeof starts, "%lld", (long long)t.starts_at_us);
    snprintf(ends, sizeof ends, "%lld", (long long)t.ends_at_us);
    ctev_contract old, fresh = {new_id, prov, cons, "draft"};
    ctsvc_row_event(r, 0, PQgetvalue(r, 0, CTCOL_STATUS), &old);
    cms_bus_event ev[2];
    memset(ev, 0, sizeof ev);
    const cms_bus_event *evs[] = {&ev[0], &ev[1]};
    const char *actor = cms_cmd_req_actor(req), *corr = ctsvc_correlation(req);
    const char *v[] = {op->id,
                       PQgetvalue(r, 0, CTCOL_STATUS),
                       PQgetvalue(r, 0, CTCOL_HASH),
                       new_id,
                       title,
                       desc,
                       prov,
                       cons,
                       terms,
                       meta,
                       hash,
                       starts,
                       ends};
    bool ok = ctev_amended(&old, new_id, PQgetvalue(r, 0, CTCOL_HASH), actor, corr, &ev[0]) ==
                  CMS_BUS_OK &&
              ctev_created(&fresh, title, hash, actor, corr, &ev[1]) == CMS_BUS_OK &&
              cms_outbox_add_exec_events(write, op->o.s->st_amend, CTEV_SOURCE, evs, 2, 13, v) ==
                  CMS_OUTBOX_OK;
    cms_bus_event_release(&ev[0]);
    cms_bus_event_release(&ev[1]);
    if (!ok) {
        ctsvc_fail_oom(req);
        return true;
    }
    return false;
}

static const char *const verb_names[] = {"submit", "activate", "complete", "terminate", "amend"};

/* Whether the verb applies to a contract in status; if not, why. */
static bool status_allows(verb v, const char *status, const char **why)
{
    static const char *const from[] = {"draft", "signed", "active", NULL, NULL};
    if (v == V_TERMINATE) {
        *why = "it has ended already";
        return strcmp(status, "draft") == 0 || strcmp(status, "review") == 0 ||
               strcmp(status, "signed") == 0 || strcmp(status, "active") == 0;
    }
    if (v == V_AMEND) {
        *why = "only a signed or active contract is amended (a draft is updated)";
        return strcmp(status, "signed") == 0 || strcmp(status, "active") == 0;
    }
    static const char *const whys[] = {"only a draft is submitted",
                                       "only a signed contract is activated",
                                       "only an active contract is completed"};
    *why = whys[v];
    return strcmp(status, from[v]) == 0;
}

static cms_transition_step life_decide(void *arg, cms_cmd_req *req, const cms_pg_result *res,
                                       cms_pg_job *write)
{
    life_op *op = arg;
    const PGresult *r = ctsvc_read_row(req, res);
    if (r == NULL)
        return CMS_TRANSITION_ANSWERED;
    const char *side = ctsvc_side(req, r, 0);
    if (side == NULL) {
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__PERMISSION_DENIED, NULL,
                     "only a party may %s a contract", verb_names[op->v]);
        return CMS_TRANSITION_ANSWERED;
    }
    const char *status = PQgetvalue(r, 0, CTCOL_STATUS), *why;
    if (!status_allows(op->v, status, &why)) {
        ctsvc_fail_status(req, status, why);
        return CMS_TRANSITION_ANSWERED;
    }
    /* the caller's own standing, as cms-contracts heard of it */
    int mine = strcmp(side, "provider") == 0 ? CTCOL_N : CTCOL_N + 1;
    if ((op->v == V_ACTIVATE || op->v == V_AMEND) &&
        !ctsvc_party_active(req, side, PQgetvalue(r, 0, mine)))
        return CMS_TRANSITION_ANSWERED;
    if (op->v == V_ACTIVATE) {
        int64_t now = cms_bus_now_us(), starts = ctsvc_i64(r, 0, CTCOL_STARTS),
                ends = ctsvc_i64(r, 0, CTCOL_ENDS);
        char when[32];
        if (now < starts) {
            iso_time(starts, when);
            cms_cmd_fail(req, CMS__V1__ERROR_CODE__FAILED_PRECONDITION, "terms.start_date",
                         "the contract starts at %s: not before (it is then activated without "
                         "anyone asking)",
                         when);
            return CMS_TRANSITION_ANSWERED;
        }
        if (now >= ends) {
            iso_time(ends, when);
            cms_cmd_fail(req, CMS__V1__ERROR_CODE__FAILED_PRECONDITION, "terms.end_date",
                         "the contract ended at %s: it expires", when);
            return CMS_TRANSITION_ANSWERED;
        }
    }
    if (ctsvc_job_actor(op->o.s, write, req) != CMS_PG_OK) {
        ctsvc_fail_oom(req);
        return CMS_TRANSITION_ANSWERED;
    }
    if (op->v == V_AMEND)
        return add_amend(op, req, r, write) ? CMS_TRANSITION_ANSWERED : CMS_TRANSITION_WRITE;
    bool ok = op->v == V_ACTIVATE
                  ? ctsvc_add_activation(op->o.s, write, r, 0, false, cms_cmd_req_actor(req),
                                         ctsvc_correlation(req)) == 0
                  : add_set_status(op, req, r, side, write);
    if (!ok) {
        ctsvc_fail_oom(req);
        return CMS_TRANSITION_ANSWERED;
    }
    return CMS_TRANSITION_WRITE;
}

static const cms_transition_ops life_ops = {.what = "lifecycle",
                                            .object = "contract",
                                            .read = life_read,
                                            .decide = life_decide,
                                            .written = ctsvc_written};

static void run(ctsvc *s, cms_cmd_req *req, verb v, const char *id, const char *reason,
                const Cms__V1__AmendContract *am, const char *metadata)
{
    cv_err e;
    if (!cv_uuid(id, "id", &e)) {
        ctsvc_fail_invalid(req, &e);
        return;
    }
    life_op *op = calloc(1, sizeof *op);
    if (op == NULL) {
        ctsvc_fail_oom(req);
        return;
    }
    *op = (life_op){.o = {s, req}, .v = v, .am = am, .metadata = metadata};
    snprintf(op->id, sizeof op->id, "%s", id);
    snprintf(op->reason, sizeof op->reason, "%s", reason ? reason : "");
    cms_transition_run(s->pg, req, &life_ops, op);
}

static void h_submit(void *arg, cms_cmd_req *req)
{
    const Cms__V1__ContractRef *m = (const void *)cms_cmd_req_body(req);
    run(arg, req, V_SUBMIT, m->id, NULL, NULL, NULL);
}

static void h_activate(void *arg, cms_cmd_req *req)
{
    const Cms__V1__ContractRef *m = (const void *)cms_cmd_req_body(req);
    run(arg, req, V_ACTIVATE, m->id, NULL, NULL, NULL);
}

static void h_complete(void *arg, cms_cmd_req *req)
{
    const Cms__V1__ContractRef *m = (const void *)cms_cmd_req_body(req);
    run(arg, req, V_COMPLETE, m->id, NULL, NULL, NULL);
}

static void h_terminate(void *arg, cms_cmd_req *req)
{
    const Cms__V1__TerminateContract *m = (const void *)cms_cmd_req_body(req);
    cv_err e;
    if (!cv_reason(m->reason, true, &e)) {
        ctsvc_fail_invalid(req, &e);
        return;
    }
    run(arg, req, V_TERMINATE, m->id, m->reason, NULL, NULL);
}

static void h_amend(void *arg, cms_cmd_req *req)
{
    const Cms__V1__AmendContract *m = (const void *)cms_cmd_req_body(req);
    cv_err e;
    const char *metadata = NULL;
    if ((m->title[0] && !cv_title(m->title, &e)) || !cv_description(m->description, &e) ||
        (m->metadata_json[0] && !cv_metadata(m->metadata_json, "metadata_json", &metadata, &e))) {
        ctsvc_fail_invalid(req, &e);
        return;
    }
    if (!m->title[0] && !m->description[0] && !m->terms_json[0] && metadata == NULL) {
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__INVALID_ARGUMENT, NULL,
                     "an amendment changes something: give a title, a description, terms or "
                     "metadata");
        return;
    }
    run(arg, req, V_AMEND, m->id, NULL, m, metadata);
}

ctsvc_err ctsvc_register_lifecycle(ctsvc *s, cms_cmd *c)
{
    const ProtobufCMessageDescriptor *ref = &cms__v1__contract_ref__descriptor;
    if (!ctsvc_prepare(s, &s->st_set_status, "set_status", SQL_SET_STATUS, 9) ||
        !ctsvc_prepare(s, &s->st_amend, "amend", SQL_AMEND, 21) ||
        cms_cmd_register(c, "submit", ref, h_submit, s) != 0 ||
        cms_cmd_register(c, "activate", ref, h_activate, s) != 0 ||
        cms_cmd_register(c, "complete", ref, h_complete, s) != 0 ||
        cms_cmd_register(c, "terminate", &cms__v1__terminate_contract__descriptor, h_terminate,
                         s) != 0 ||
        cms_cmd_register(c, "amend", &cms__v1__amend_contract__descriptor, h_amend, s) != 0)
        return CTSVC_ESETUP;
    return CTSVC_OK;
}
