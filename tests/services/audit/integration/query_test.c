/* cms-audit's query command against the real servers: cms-identity and
 * cms-audit as processes (tests/lib/svcfx), audit_logs rows inserted
 * directly. An admin and an identity with the role auditor read every
 * row; anyone else reads only their own rows, and asking for another
 * actor is PERMISSION_DENIED; every filter, paged, returns exactly the
 * rows SQL selects, each once, in (created_at, id) order; every bad
 * argument is INVALID_ARGUMENT naming its field; no key or a wrong one is
 * refused; a request_id keeps nothing (a repeat reads again); large rows
 * end a page early with a cursor, and details too large are left out. */
#include "cms/v1/audit.pb-c.h"
#include "cms/v1/command.pb-c.h"
#include "svcfx.h"
#include "testenv.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ROWS 40
#define MAX_IDS 256
#define RES1 "0190b000-0000-7000-8000-0000000000b1"
#define RES2 "0190b000-0000-7000-8000-0000000000b2"

static svcfx F;
static char auditor_id[37], auditor_key[CMS_APIKEY_LEN + 1];
static char user_id[37], user_key[CMS_APIKEY_LEN + 1];
static char other_id[37], other_key[CMS_APIKEY_LEN + 1];

static void exec_sql(const char *q)
{
    char *v = svcfx_sql(&F, q);
    cr_assert_not_null(v, "%s", q);
    free(v);
}

static void setup(void)
{
    svcfx_setup(&F, "audit_query");
    svcfx_insert(&F, "auditor", "user", "active", "{\"roles\": [\"auditor\"]}", 3600, auditor_id,
                 auditor_key);
    svcfx_insert(&F, "plain", "user", "active", "{\"roles\": [\"ops\"]}", 3600, user_id, user_key);
    svcfx_insert(&F, "other", "machine", "active", "{}", 3600, other_id, other_key);
    /* ROWS rows, created three to a microsecond (the id breaks the tie),
     * by the plain user, the other and the admin in turn, about two
     * resources and three event types */
    char q[2048];
    snprintf(q, sizeof q,
             "INSERT INTO audit_logs (id, event_type, resource_type, resource_id, actor_id, "
             "details, created_at) SELECT gen_random_uuid(), "
             "(ARRAY['contract.created', 'contract.signed', 'contract.terminated'])[1 + g %% 3], "
             "'contract', CASE WHEN g %% 2 = 0 THEN '" RES1 "'::uuid ELSE '" RES2 "'::uuid END, "
             "(ARRAY['%s', '%s', '%s'])[1 + (g / 2) %% 3]::uuid, jsonb_build_object('n', g), "
             "'2024-03-20T15:00:00Z'::timestamptz + (g / 3) * interval '1.000001 second' "
             "FROM generate_series(1, %d) g",
             user_id, other_id, F.admin_id, ROWS);
    exec_sql(q);
    svcfx_start(&F, "cms-identity", NULL);
    svcfx_start_audit_at(&F, 1);
}

static void teardown(void)
{
    svcfx_teardown(&F);
}

TestSuite(audit_query, .init = setup, .fini = teardown, .timeout = 120);

/* ---- helpers ---- */

/* query as key: the code (0: *out is the page). */
static int query(const char *key, const Cms__V1__QueryAuditLog *m, Cms__V1__AuditPage **out,
                 char field[256], char msg[256])
{
    return svcfx_call(&F, "audit", key, NULL, "query", &m->base, &cms__v1__audit_page__descriptor,
                      (ProtobufCMessage **)out, field, msg);
}

/* Every page of m as key, limit at a time: the ids in order. Each page
 * holds 1..limit rows (none only when nothing matches) and the last has
 * no cursor. */
static size_t all_pages(const char *key, Cms__V1__QueryAuditLog m, int limit, char ids[][40])
{
    size_t n = 0;
    char cursor[256] = "";
    m.limit = limit;
    for (int pages = 0;; pages++) {
        cr_assert_lt(pages, MAX_IDS, "the cursor does not advance");
        Cms__V1__AuditPage *p = NULL;
        char field[256], msg[256];
        m.after = cursor;
        cr_assert_eq(query(key, &m, &p, field, msg), 0, "%s: %s", field, msg);
        cr_assert_leq(p->n_records, (size_t)limit);
        cr_assert(p->n_records > 0 || (pages == 0 && p->next[0] == '\0'), "an empty page %d",
                  pages);
        for (size_t i = 0; i < p->n_records; i++) {
            cr_assert_lt(n, MAX_IDS);
            snprintf(ids[n++], 40, "%s", p->records[i]->id);
        }
        snprintf(cursor, sizeof cursor, "%s", p->next);
        cms__v1__audit_page__free_unpacked(p, NULL);
        if (cursor[0] == '\0')
            return n;
    }
}

/* The ids a WHERE clause selects, in the command's order. */
static size_t sql_ids(const char *where, char ids[][40])
{
    char q[1024];
    snprintf(q, sizeof q,
             "SELECT coalesce(string_agg(id::text, ',' ORDER BY created_at, id), '') "
             "FROM audit_logs WHERE %s",
             where);
    char *v = svcfx_sql(&F, q);
    cr_assert_not_null(v);
    size_t n = 0;
    for (char *save = NULL, *tok = strtok_r(v, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
        snprintf(ids[n++], 40, "%s", tok);
    free(v);
    return n;
}

static void assert_same(char got[][40], size_t ng, char want[][40], size_t nw, const char *what)
{
    cr_assert_eq(ng, nw, "%s: %zu rows, want %zu", what, ng, nw);
    for (size_t i = 0; i < nw; i++)
        cr_assert_str_eq(got[i], want[i], "%s: row %zu", what, i);
}

static Cms__V1__QueryAuditLog req(void)
{
    Cms__V1__QueryAuditLog m = CMS__V1__QUERY_AUDIT_LOG__INIT;
    return m;
}

/* ---- who reads what ---- */

Test(audit_query, admins_and_auditors_read_every_row_once_in_order)
{
    static char got[MAX_IDS][40], want[MAX_IDS][40];
    size_t nw = sql_ids("true", want);
    cr_assert_eq(nw, ROWS);
    assert_same(got, all_pages(F.admin_key, req(), 1000, got), want, nw, "admin, one page");
    assert_same(got, all_pages(F.admin_key, req(), 7, got), want, nw, "admin, pages of 7");
    assert_same(got, all_pages(auditor_key, req(), 3, got), want, nw, "auditor, pages of 3");

    /* the record is the row, field by field */
    Cms__V1__QueryAuditLog m = req();
    m.limit = 1;
    Cms__V1__AuditPage *p = NULL;
    cr_assert_eq(query(auditor_key, &m, &p, NULL, NULL), 0);
    cr_assert_eq(p->n_records, 1);
    cr_assert_neq(p->next[0], '\0');
    const Cms__V1__AuditRecord *r = p->records[0];
    char q[512];
    snprintf(q, sizeof q,
             "SELECT concat_ws('|', event_type, resource_type, resource_id, actor_id, details, "
             "(extract(epoch FROM created_at) * 1000000)::bigint) FROM audit_logs WHERE id = '%s'",
             r->id);
    char *row = svcfx_sql(&F, q), mine[512];
    snprintf(mine, sizeof mine, "%s|%s|%s|%s|%s|%lld", r->event_type, r->resource_type,
             r->resource_id, r->actor_id, r->details_json, (long long)r->created_at_us);
    cr_assert_str_eq(mine, row);
    free(row);
    cms__v1__audit_page__free_unpacked(p, NULL);

    /* another actor's rows, asked for by an auditor */
    Cms__V1__QueryAuditLog by = req();
    by.actor = other_id;
    char where[128];
    snprintf(where, sizeof where, "actor_id = '%s'", other_id);
    nw = sql_ids(where, want);
    cr_assert_gt(nw, 0);
    assert_same(got, all_pages(auditor_key, by, 4, got), want, nw, "auditor, --actor other");
}

Test(audit_query, anyone_else_reads_only_their_own_rows)
{
    static char got[MAX_IDS][40], want[MAX_IDS][40];
    char where[256];
    snprintf(where, sizeof where, "actor_id = '%s'", user_id);
    size_t nw = sql_ids(where, want);
    cr_assert(nw > 0 && nw < ROWS);
    assert_same(got, all_pages(user_key, req(), 5, got), want, nw, "no actor: their own");
    Cms__V1__QueryAuditLog m = req();
    m.actor = user_id;
    assert_same(got, all_pages(user_key, m, 1000, got), want, nw, "their own actor");

    /* with a filter: their own rows of it */
    m = req();
    m.event_type = (char *)"contract.signed";
    snprintf(where, sizeof where, "actor_id = '%s' AND event_type = 'contract.signed'", user_id);
    nw = sql_ids(where, want);
    cr_assert_gt(nw, 0);
    assert_same(got, all_pages(user_key, m, 2, got), want, nw, "their own, one event type");

    /* someone who did nothing reads nothing */
    char id[37], key[CMS_APIKEY_LEN + 1];
    svcfx_insert(&F, "idle", "user", "active", "{}", 3600, id, key);
    cr_assert_eq(all_pages(key, req(), 10, got), 0);

    /* another actor: refused, not narrowed */
    char field[256], msg[256];
    Cms__V1__AuditPage *p = NULL;
    m = req();
    m.actor = other_id;
    cr_assert_eq(query(user_key, &m, &p, field, msg), CMS__V1__ERROR_CODE__PERMISSION_DENIED);
    cr_assert_str_eq(field, "actor");
    cr_assert_not_null(strstr(msg, "auditor"), "%s", msg);
    m.actor = F.admin_id;
    cr_assert_eq(query(other_key, &m, &p, field, msg), CMS__V1__ERROR_CODE__PERMISSION_DENIED);
}

Test(audit_query, no_key_or_a_wrong_key_is_refused)
{
    Cms__V1__QueryAuditLog m = req();
    Cms__V1__AuditPage *p = NULL;
    cr_assert_eq(query(NULL, &m, &p, NULL, NULL), CMS__V1__ERROR_CODE__PERMISSION_DENIED);
    char wrong[CMS_APIKEY_LEN + 1];
    snprintf(wrong, sizeof wrong, "%s", F.admin_key);
    wrong[CMS_APIKEY_LEN - 2] = wrong[CMS_APIKEY_LEN - 2] == 'A' ? 'B' : 'A';
    cr_assert_eq(query(wrong, &m, &p, NULL, NULL), CMS__V1__ERROR_CODE__PERMISSION_DENIED);
    cr_assert_eq(query("not-a-key", &m, &p, NULL, NULL), CMS__V1__ERROR_CODE__PERMISSION_DENIED);
}

/* ---- filters and pages ---- */

Test(audit_query, every_filter_pages_through_exactly_its_rows)
{
    static char got[MAX_IDS][40], want[MAX_IDS][40];
    char where[256];
    Cms__V1__QueryAuditLog m = req();
    m.resource_type = (char *)"contract";
    m.resource_id = (char *)RES1;
    size_t nw = sql_ids("resource_type = 'contract' AND resource_id = '" RES1 "'", want);
    cr_assert(nw > 0 && nw < ROWS);
    assert_same(got, all_pages(F.admin_key, m, 3, got), want, nw, "a resource");

    m = req();
    m.resource_type = (char *)"identity";
    cr_assert_eq(all_pages(F.admin_key, m, 3, got), 0, "another resource type");

    m = req();
    m.event_type = (char *)"contract.terminated";
    nw = sql_ids("event_type = 'contract.terminated'", want);
    cr_assert(nw > 0 && nw < ROWS);
    assert_same(got, all_pages(F.admin_key, m, 4, got), want, nw, "an event type");

    m = req();
    m.actor = F.admin_id;
    snprintf(where, sizeof where, "actor_id = '%s'", F.admin_id);
    nw = sql_ids(where, want);
    assert_same(got, all_pages(F.admin_key, m, 2, got), want, nw, "an actor");

    /* since: at or after, to the microsecond (row 3 is at 15:00:01.000001) */
    m = req();
    m.since = (char *)"2024-03-20T15:00:01.000001Z";
    nw = sql_ids("created_at >= '2024-03-20T15:00:01.000001Z'", want);
    cr_assert(nw > 0 && nw < ROWS);
    assert_same(got, all_pages(F.admin_key, m, 6, got), want, nw, "since");
    m.since = (char *)"2024-03-20T17:00:01.000001+02:00";
    assert_same(got, all_pages(F.admin_key, m, 6, got), want, nw, "since, with a zone");
    m.since = (char *)"2024-03-20";
    nw = sql_ids("true", want);
    assert_same(got, all_pages(F.admin_key, m, 9, got), want, nw, "since a date");

    /* everything at once */
    m = req();
    m.resource_type = (char *)"contract";
    m.resource_id = (char *)RES2;
    m.event_type = (char *)"contract.created";
    m.actor = other_id;
    m.since = (char *)"2024-03-20T15:00:02Z";
    snprintf(where, sizeof where,
             "resource_id = '" RES2 "' AND event_type = 'contract.created' AND actor_id = '%s' "
             "AND created_at >= '2024-03-20T15:00:02Z'",
             other_id);
    nw = sql_ids(where, want);
    assert_same(got, all_pages(auditor_key, m, 1, got), want, nw, "every filter");

    /* a row inserted before the cursor does not shift the next page */
    m = req();
    m.limit = 5;
    Cms__V1__AuditPage *p = NULL;
    cr_assert_eq(query(F.admin_key, &m, &p, NULL, NULL), 0);
    char cursor[256];
    snprintf(cursor, sizeof cursor, "%s", p->next);
    cms__v1__audit_page__free_unpacked(p, NULL);
    nw = sql_ids("true", want);
    char q[512];
    snprintf(q, sizeof q,
             "INSERT INTO audit_logs (event_type, resource_type, resource_id, actor_id, details, "
             "created_at) VALUES ('contract.created', 'contract', '" RES1 "', '%s', '{}', "
             "'2024-03-19T00:00:00Z')",
             F.admin_id);
    exec_sql(q);
    m.after = cursor;
    cr_assert_eq(query(F.admin_key, &m, &p, NULL, NULL), 0);
    cr_assert_eq(p->n_records, 5);
    for (size_t i = 0; i < 5; i++)
        cr_assert_str_eq(p->records[i]->id, want[5 + i]);
    cms__v1__audit_page__free_unpacked(p, NULL);
    exec_sql("DELETE FROM audit_logs WHERE created_at < '2024-03-20'");
}

/* ---- refusals ---- */

/* A query with one field set from text (limit as a number). */
static Cms__V1__QueryAuditLog with(const char *field, const char *value)
{
    Cms__V1__QueryAuditLog m = req();
    char **slot = strcmp(field, "resource_type") == 0 ? &m.resource_type
                  : strcmp(field, "resource_id") == 0 ? &m.resource_id
                  : strcmp(field, "actor") == 0       ? &m.actor
                  : strcmp(field, "event_type") == 0  ? &m.event_type
                  : strcmp(field, "since") == 0       ? &m.since
                  : strcmp(field, "after") == 0       ? &m.after
                                                      : NULL;
    if (slot != NULL)
        *slot = (char *)value;
    else
        m.limit = (int32_t)strtol(value, NULL, 10);
    return m;
}

Test(audit_query, bad_arguments_are_invalid_argument_naming_the_field)
{
    static const char *const cases[][2] = {
        {"resource_type", "con tract"},
        {"resource_type", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}, /* 51 */
        {"resource_id", "not-a-uuid"},
        {"actor", "0190b000-0000-7000-8000"},
        {"event_type", "contract signed"},
        {"since", "the day before"},
        {"since", "2024-02-30"},
        {"limit", "1001"},
        {"limit", "-5"},
        {"after", "bm9wZQ"},
        {"after", "not a cursor"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *want = cases[i][0];
        Cms__V1__QueryAuditLog m = with(want, cases[i][1]);
        char field[256], msg[256];
        Cms__V1__AuditPage *p = NULL;
        /* an auditor and a plain user alike: arguments are checked first */
        cr_assert_eq(query(auditor_key, &m, &p, field, msg), CMS__V1__ERROR_CODE__INVALID_ARGUMENT,
                     "%s \"%s\"", want, cases[i][1]);
        cr_assert_str_eq(field, want, "%s", msg);
        cr_assert_eq(strncmp(msg, want, strlen(want)), 0, "the message names it: %s", msg);
        cr_assert_eq(query(user_key, &m, &p, field, msg), CMS__V1__ERROR_CODE__INVALID_ARGUMENT);
    }
}

/* ---- what is not kept, and what is bounded ---- */

Test(audit_query, a_request_id_keeps_nothing_a_repeat_reads_again)
{
    Cms__V1__QueryAuditLog m = req();
    m.limit = 1000;
    m.event_type = (char *)"contract.noted";
    ProtobufCMessage *out = NULL;
    cr_assert_eq(svcfx_call(&F, "audit", F.admin_key, "rid-1", "query", &m.base,
                            &cms__v1__audit_page__descriptor, &out, NULL, NULL),
                 0);
    cr_assert_eq(((Cms__V1__AuditPage *)out)->n_records, 0);
    protobuf_c_message_free_unpacked(out, NULL);
    char q[512];
    snprintf(q, sizeof q,
             "INSERT INTO audit_logs (event_type, resource_type, resource_id, actor_id, details) "
             "VALUES ('contract.noted', 'contract', '" RES1 "', '%s', '{}')",
             F.admin_id);
    exec_sql(q);
    cr_assert_eq(svcfx_call(&F, "audit", F.admin_key, "rid-1", "query", &m.base,
                            &cms__v1__audit_page__descriptor, &out, NULL, NULL),
                 0);
    cr_assert_eq(((Cms__V1__AuditPage *)out)->n_records, 1, "read again, not replayed");
    protobuf_c_message_free_unpacked(out, NULL);
    char *kept = svcfx_sql(&F, "SELECT count(*) FROM command_replies WHERE service = 'audit'");
    cr_assert_str_eq(kept, "0");
    free(kept);
    exec_sql("DELETE FROM audit_logs WHERE event_type = 'contract.noted'");
}

Test(audit_query, large_rows_end_a_page_early_and_oversized_details_are_left_out)
{
    enum { BIG = 30 };
    char q[1024];
    /* BIG rows of about 60 KiB of details each, after every other row, and
     * one of 100 KiB (more than cms-audit would ever store) */
    snprintf(q, sizeof q,
             "INSERT INTO audit_logs (event_type, resource_type, resource_id, actor_id, details, "
             "created_at) SELECT 'contract.bulky', 'contract', '" RES1 "', '%s', "
             "jsonb_build_object('n', g, 'pad', repeat('x', 60000)), "
             "'2024-03-21T00:00:00Z'::timestamptz + g * interval '1 second' "
             "FROM generate_series(1, %d) g",
             F.admin_id, BIG);
    exec_sql(q);
    snprintf(q, sizeof q,
             "INSERT INTO audit_logs (event_type, resource_type, resource_id, actor_id, details, "
             "created_at) VALUES ('contract.huge', 'contract', '" RES1 "', '%s', "
             "jsonb_build_object('pad', repeat('y', 100000)), '2024-03-22T00:00:00Z')",
             F.admin_id);
    exec_sql(q);

    Cms__V1__QueryAuditLog m = req();
    m.event_type = (char *)"contract.bulky";
    m.limit = 1000;
    Cms__V1__AuditPage *p = NULL;
    cr_assert_eq(query(F.admin_key, &m, &p, NULL, NULL), 0);
    size_t packed = cms__v1__audit_page__get_packed_size(p);
    cr_assert(p->n_records >= 1 && p->n_records < BIG, "%zu records in one page", p->n_records);
    cr_assert_leq(packed, 512 * 1024 + 65 * 1024, "a page of %zu bytes", packed);
    cr_assert_neq(p->next[0], '\0', "a cursor to go on");
    for (size_t i = 0; i < p->n_records; i++)
        cr_assert_gt(strlen(p->records[i]->details_json), 60000, "whole details");
    cms__v1__audit_page__free_unpacked(p, NULL);
    static char got[MAX_IDS][40], want[MAX_IDS][40];
    size_t nw = sql_ids("event_type = 'contract.bulky'", want);
    cr_assert_eq(nw, BIG);
    assert_same(got, all_pages(F.admin_key, m, 1000, got), want, nw, "every bulky row");

    m.event_type = (char *)"contract.huge";
    cr_assert_eq(query(F.admin_key, &m, &p, NULL, NULL), 0);
    cr_assert_eq(p->n_records, 1);
    cr_assert_str_eq(p->records[0]->details_json, "", "left out");
    cr_assert_str_eq(p->records[0]->event_type, "contract.huge");
    cms__v1__audit_page__free_unpacked(p, NULL);
    exec_sql("DELETE FROM audit_logs WHERE event_type IN ('contract.bulky', 'contract.huge')");
}
