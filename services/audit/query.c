/* The query verb of cms-audit; see query.h. */
#include "query.h"

#include "audit/query_args.h"
#include "cms/v1/audit.pb-c.h"
#include "log.h"
#include "validate.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_PARAMS 10
#define SQL_MAX 1024
/* a record's tag and length prefix within the page, at most */
#define RECORD_FRAMING 6

_Static_assert(AUDIT_QUERY_DETAILS_MAX == AUDIT_DETAILS_MAX,
               "the query leaves out only what ingestion would have refused");
_Static_assert(AUDIT_QUERY_PAGE_BYTES + AUDIT_QUERY_DETAILS_MAX + 4096 < 1024 * 1024,
               "a page, with the record that ends it, stays under max_payload");

/* ---- the statement ---- */

/* The columns read, in the order row_record takes them; details are NULL
 * when their text is longer than the first parameter. */
static const char SQL_SELECT[] =
    "SELECT id::text, event_type, resource_type, resource_id::text, actor_id::text, "
    "CASE WHEN octet_length(details::text) <= $?::int THEN details::text END, "
    "(extract(epoch FROM created_at) * 1000000)::bigint FROM audit_logs WHERE true";

typedef struct stmt {
    char sql[SQL_MAX];
    size_t len;
    bool overflow;
    const char *params[MAX_PARAMS];
    int nparams;
} stmt;

/* Appends a fixed fragment; "$?" in it stands for the next parameter,
 * value. */
static void add(stmt *q, const char *fragment, const char *value)
{
    const char *mark = strstr(fragment, "$?");
    size_t room = sizeof q->sql - q->len;
    int n;
    if (mark == NULL) {
        n = snprintf(q->sql + q->len, room, "%s", fragment);
    } else {
        if (q->nparams == MAX_PARAMS) {
            q->overflow = true;
            return;
        }
        q->params[q->nparams++] = value;
        n = snprintf(q->sql + q->len, room, "%.*s$%d%s", (int)(mark - fragment), fragment,
                     q->nparams, mark + 2);
    }
    if (n < 0 || (size_t)n >= room)
        q->overflow = true;
    else
        q->len += (size_t)n;
}

/* What the statement's parameters point at while it is built. */
typedef struct texts {
    char details_max[16];
    char since[AUDIT_QA_TIME_TEXT_MAX];
    char after[AUDIT_QA_TIME_TEXT_MAX];
    char limit[16];
} texts;

static bool build(const audit_qa *a, stmt *q, texts *t)
{
    memset(q, 0, sizeof *q);
    snprintf(t->details_max, sizeof t->details_max, "%d", AUDIT_QUERY_DETAILS_MAX);
    add(q, SQL_SELECT, t->details_max);
    if (a->resource_type[0])
        add(q, " AND resource_type = $?", a->resource_type);
    if (a->resource_id[0])
        add(q, " AND resource_id = $?::uuid", a->resource_id);
    if (a->actor[0])
        add(q, " AND actor_id = $?::uuid", a->actor);
    if (a->event_type[0])
        add(q, " AND event_type = $?", a->event_type);
    if (a->has_since) {
        if (!audit_qa_time_text(a->since_us, t->since))
            return false;
        add(q, " AND created_at >= $?::timestamptz", t->since);
    }
    if (a->has_after) {
        /* a row comparison: the index on created_at (or on actor_id,
         * created_at, id) starts its range at the cursor */
        if (!audit_qa_time_text(a->after_us, t->after))
            return false;
        add(q, " AND (created_at, id) > ($?::timestamptz", t->after);
        add(q, ", $?::uuid)", a->after_id);
    }
    /* one row more than the page tells whether another follows; the
     * columns qualified, or "id" would be the output's id::text, sorted as
     * text and by no index */
    snprintf(t->limit, sizeof t->limit, "%d", a->limit + 1);
    add(q, " ORDER BY audit_logs.created_at, audit_logs.id LIMIT $?::int", t->limit);
    return !q->overflow;
}

/* ---- the reply ---- */

typedef struct query_op {
    cms_cmd_req *req;
    int limit;
} query_op;

static void row_record(const PGresult *r, int i, Cms__V1__AuditRecord *out)
{
    cms__v1__audit_record__init(out);
    out->id = PQgetvalue(r, i, 0);
    out->event_type = PQgetvalue(r, i, 1);
    out->resource_type = PQgetvalue(r, i, 2);
    out->resource_id = PQgetvalue(r, i, 3);
    out->actor_id = PQgetvalue(r, i, 4);
    out->details_json = PQgetvalue(r, i, 5); /* "" for NULL: left out */
    out->created_at_us = strtoll(PQgetvalue(r, i, 6), NULL, 10);
}

static void read_done(void *arg, cms_pg_err err, const cms_pg_result *res)
{
    query_op *op = arg;
    Cms__V1__AuditRecord *items = NULL;
    Cms__V1__AuditRecord **ptrs = NULL;
    char next[AUDIT_QA_CURSOR_MAX];
    if (err != CMS_PG_OK) {
        cms_cmd_fail_pg(op->req, err, res, "query");
        goto out;
    }
    const PGresult *r = cms_pg_result_get(res, 0);
    int n = PQntuples(r), fit = n > op->limit ? op->limit : n;
    items = calloc((size_t)fit + 1, sizeof *items);
    ptrs = calloc((size_t)fit + 1, sizeof *ptrs);
    if (items == NULL || ptrs == NULL) {
        cms_cmd_fail(op->req, CMS__V1__ERROR_CODE__UNAVAILABLE, NULL, "out of memory; retry");
        goto out;
    }
    /* the page ends at the limit or at its byte budget, whichever comes
     * first; a page holds at least one record */
    size_t bytes = 0;
    int shown = 0;
    for (; shown < fit; shown++) {
        row_record(r, shown, &items[shown]);
        size_t size = protobuf_c_message_get_packed_size(&items[shown].base) + RECORD_FRAMING;
        if (shown > 0 && bytes + size > AUDIT_QUERY_PAGE_BYTES)
            break;
        bytes += size;
        ptrs[shown] = &items[shown];
    }
    Cms__V1__AuditPage page = CMS__V1__AUDIT_PAGE__INIT;
    page.records = ptrs;
    page.n_records = (size_t)shown;
    if (shown < n) {
        if (!audit_qa_cursor_encode(items[shown - 1].created_at_us, items[shown - 1].id, next)) {
            cms_cmd_fail(op->req, CMS__V1__ERROR_CODE__INTERNAL, NULL,
                         "the last row's key makes no cursor");
            goto out;
        }
        page.next = next;
    }
    cms_cmd_reply(op->req, &page.base);
out:
    free(items);
    free(ptrs);
    free(op);
}

static void h_query(void *arg, cms_cmd_req *req)
{
    cms_pg *pg = arg;
    const Cms__V1__QueryAuditLog *m = (const void *)cms_cmd_req_body(req);
    audit_qa a;
    audit_qa_err e;
    char why[200];
    stmt q;
    texts t;
    if (!audit_qa_validate(m, &a, &e)) {
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__INVALID_ARGUMENT, e.field, "%s %s", e.field, e.what);
        return;
    }
    if (!audit_qa_authorise(&a, cms_cmd_req_principal(req), why, sizeof why)) {
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__PERMISSION_DENIED, a.actor[0] ? "actor" : NULL, "%s",
                     why);
        return;
    }
    if (!build(&a, &q, &t)) {
        cms_log_error("the audit query does not fit its statement", NULL);
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__INTERNAL, NULL, "the query cannot be made");
        return;
    }
    query_op *op = calloc(1, sizeof *op);
    cms_pg_job *job = cms_pg_job_new();
    if (op == NULL || job == NULL ||
        cms_pg_job_sql(job, q.sql, q.nparams, q.params, NULL, NULL) != CMS_PG_OK) {
        free(op);
        cms_pg_job_free(job);
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__UNAVAILABLE, NULL, "out of memory; retry");
        return;
    }
    *op = (query_op){.req = req, .limit = a.limit};
    cms_pg_err err = cms_pg_submit(pg, &job, read_done, op);
    if (err != CMS_PG_OK) {
        free(op);
        cms_cmd_fail_pg(req, err, NULL, "query");
    }
}

cms_cmd_err audit_query_register(cms_cmd *c, cms_pg *pg)
{
    return cms_cmd_register(c, "query", &cms__v1__query_audit_log__descriptor, h_query, pg);
}
