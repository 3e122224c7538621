/* cmsctl audit query, run as a program against a real cms-identity and
 * cms-audit (tests/lib/svcfx) on the throwaway servers, through NATS with
 * the caller's API key and no database URL: it filters, pages with its
 * cursor through every row exactly once in order, prints the same rows as a
 * table, one JSON array or NDJSON lines with created_at and created_at_us,
 * says "no results" on stderr only; a plain identity sees only its own rows
 * and is refused another --actor; an auditor sees all; bad arguments are
 * refused with exit 2 before anything is sent, as is --database-url. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "svcfx.h"
#include "testenv.h"
#include "testproc.h"

#define WATCHDOG_MS 60000
#define MAX_ARGS 40
#define RES1 "0190b000-0000-7000-8000-0000000000b1"
#define RES2 "0190b000-0000-7000-8000-0000000000b2"

static char g_bin[1024];
static svcfx g_f;
static char g_actor[37], g_actor_key[CMS_APIKEY_LEN + 1];
static char g_auditor[37], g_auditor_key[CMS_APIKEY_LEN + 1];

/* `cmsctl args...`, run to its end. */
#define RUN(...) cms_test_run_bin(g_bin, (const char *const[]){__VA_ARGS__, NULL}, WATCHDOG_MS)
#define assert_exit CMS_TEST_ASSERT_EXIT

static void exec_sql(const char *q)
{
    char *v = svcfx_sql(&g_f, q);
    cr_assert_not_null(v, "%s", q);
    free(v);
}

static void setup(void)
{
    svcfx_setup(&g_f, "cmsctl_audit");
    snprintf(g_bin, sizeof g_bin, "%s/cmsctl", cms_test_env("CMS_TEST_BIN_DIR"));
    cr_assert_eq(access(g_bin, X_OK), 0, "%s is not there: build the cmsctl target", g_bin);
    cr_assert_eq(setenv("CMS_NATS_URL", cms_test_env("CMS_TEST_NATS_URL"), 1), 0);
    cr_assert_eq(setenv("CMS_COMMAND_PREFIX", g_f.prefix, 1), 0);
    cr_assert_eq(setenv("CMS_API_KEY", g_f.admin_key, 1), 0);
    unsetenv("CMS_CREDENTIALS_FILE");
    unsetenv("CMS_DATABASE_URL");
    svcfx_insert(&g_f, "cmsctl-test-actor", "user", "active", "{}", 3600, g_actor, g_actor_key);
    svcfx_insert(&g_f, "cmsctl-test-auditor", "user", "active", "{\"roles\": [\"auditor\"]}", 3600,
                 g_auditor, g_auditor_key);
    /* 11 rows; several share a created_at, so the id breaks ties */
    char q[2048];
    snprintf(q, sizeof q,
             "INSERT INTO audit_logs (id, event_type, resource_type, resource_id, actor_id, "
             "details, created_at) SELECT gen_random_uuid(), "
             "CASE WHEN g %% 3 = 0 THEN 'contract.signed' ELSE 'contract.created' END, "
             "'contract', CASE WHEN g %% 2 = 0 THEN '" RES1 "'::uuid ELSE '" RES2 "'::uuid END, "
             "CASE WHEN g <= 4 THEN '%s'::uuid ELSE '%s'::uuid END, jsonb_build_object('n', g), "
             "'2024-03-20T15:00:00Z'::timestamptz + (g / 3) * interval '1.000001 second' "
             "FROM generate_series(1, 11) g",
             g_actor, g_f.admin_id);
    exec_sql(q);
    snprintf(q, sizeof q,
             "INSERT INTO audit_logs (id, event_type, resource_type, resource_id, actor_id, "
             "details, created_at) VALUES (gen_random_uuid(), 'identity.created', 'identity', "
             "'%s', '%s', '{}', '2024-03-19T00:00:00Z')",
             g_actor, g_f.admin_id);
    exec_sql(q);
    svcfx_start(&g_f, "cms-identity", NULL);
    svcfx_start_audit_at(&g_f, 1);
}

static void teardown(void)
{
    svcfx_teardown(&g_f);
}

TestSuite(cmsctl_audit, .init = setup, .fini = teardown, .timeout = 120);

/* created_at (RFC 3339, UTC, microseconds) and created_at_us name the same instant. */
static void assert_created_pair(const json_t *o)
{
    json_t *us = json_object_get(o, "created_at_us");
    const char *at = json_string_value(json_object_get(o, "created_at"));
    cr_assert(json_is_integer(us) && at != NULL, "created_at and created_at_us");
    time_t secs = (time_t)(json_integer_value(us) / 1000000);
    struct tm tm;
    char want[64], date[32];
    cr_assert_not_null(gmtime_r(&secs, &tm));
    strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(want, sizeof want, "%s.%06lldZ", date, (long long)(json_integer_value(us) % 1000000));
    cr_assert_str_eq(at, want);
}

/* Runs audit query -o ndjson with args and returns the ids in order; *next
 * gets the cursor or "". */
static size_t query_ids(const char *const *args, char ids[][40], size_t cap, char next[256])
{
    const char *argv[MAX_ARGS];
    size_t k = 0;
    argv[k++] = "audit";
    argv[k++] = "query";
    argv[k++] = "-o";
    argv[k++] = "ndjson";
    for (size_t i = 0; args[i] != NULL; i++)
        argv[k++] = args[i];
    argv[k] = NULL;
    cms_test_proc *p = cms_test_run_bin(g_bin, argv, WATCHDOG_MS);
    assert_exit(p, 0);
    size_t n = 0;
    for (char *line = p->out; *line;) {
        char *nl = strchr(line, '\n');
        cr_assert_not_null(nl);
        *nl = '\0';
        json_error_t jerr;
        json_t *o = json_loads(line, 0, &jerr);
        cr_assert_not_null(o, "not JSON: %s", line);
        cr_assert(json_is_object(json_object_get(o, "details")), "details is an object: %s", line);
        assert_created_pair(o);
        cr_assert_lt(n, cap);
        snprintf(ids[n++], 40, "%s", json_string_value(json_object_get(o, "id")));
        json_decref(o);
        line = nl + 1;
    }
    next[0] = '\0';
    const char *m = strstr(p->err, "next: --after ");
    if (m != NULL)
        sscanf(m, "next: --after %255s", next);
    cms_test_proc_free(p);
    return n;
}

/* The ids a SQL WHERE clause selects, ordered as the tool orders them. */
static size_t sql_ids(const char *where, char ids[][40], size_t cap)
{
    char q[512];
    snprintf(q, sizeof q,
             "SELECT coalesce(string_agg(id::text, ',' ORDER BY created_at, id), '') "
             "FROM audit_logs WHERE %s",
             where);
    char *v = svcfx_sql(&g_f, q);
    cr_assert_not_null(v);
    size_t n = 0;
    for (char *save = NULL, *tok = strtok_r(v, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        cr_assert_lt(n, cap);
        snprintf(ids[n++], 40, "%s", tok);
    }
    free(v);
    return n;
}

static void assert_same_ids(char got[][40], size_t ng, char want[][40], size_t nw)
{
    cr_assert_eq(ng, nw, "%zu rows, want %zu", ng, nw);
    for (size_t i = 0; i < nw; i++)
        cr_assert_str_eq(got[i], want[i], "row %zu", i);
}

Test(cmsctl_audit, filters_and_pages_through_every_row_once)
{
    char got[32][40], want[32][40], next[256], where[128];
    size_t ng, nw;

    ng = query_ids((const char *const[]){NULL}, got, 32, next);
    nw = sql_ids("true", want, 32);
    cr_assert_eq(nw, 12);
    assert_same_ids(got, ng, want, nw);
    cr_assert_str_eq(next, "", "everything fits the default page");

    ng =
        query_ids((const char *const[]){"--resource-type", "contract", "--resource-id", RES1, NULL},
                  got, 32, next);
    nw = sql_ids("resource_type = 'contract' AND resource_id = '" RES1 "'", want, 32);
    cr_assert_eq(nw, 5);
    assert_same_ids(got, ng, want, nw);

    ng = query_ids((const char *const[]){"--actor", g_actor, NULL}, got, 32, next);
    snprintf(where, sizeof where, "actor_id = '%s'", g_actor);
    nw = sql_ids(where, want, 32);
    cr_assert_eq(nw, 4);
    assert_same_ids(got, ng, want, nw);

    ng = query_ids((const char *const[]){"--event-type", "contract.signed", NULL}, got, 32, next);
    nw = sql_ids("event_type = 'contract.signed'", want, 32);
    cr_assert_eq(nw, 3);
    assert_same_ids(got, ng, want, nw);

    ng = query_ids((const char *const[]){"--since", "2024-03-20T15:00:02Z", NULL}, got, 32, next);
    nw = sql_ids("created_at >= '2024-03-20T15:00:02Z'", want, 32);
    cr_assert(nw > 0 && nw < 12);
    assert_same_ids(got, ng, want, nw);
    ng = query_ids((const char *const[]){"--since", "2024-03-20", NULL}, got, 32, next);
    nw = sql_ids("created_at >= '2024-03-20T00:00:00Z'", want, 32);
    cr_assert_eq(nw, 11, "a date is its midnight, UTC");
    assert_same_ids(got, ng, want, nw);

    /* pages of 2: every row exactly once, in order, then no cursor */
    nw = sql_ids("true", want, 32);
    char all[32][40];
    size_t nall = 0;
    char cursor[256] = "";
    int pages = 0;
    do {
        char page[4][40];
        size_t np;
        if (cursor[0] == '\0')
            np = query_ids((const char *const[]){"--limit", "2", NULL}, page, 4, next);
        else
            np = query_ids((const char *const[]){"--limit", "2", "--after", cursor, NULL}, page, 4,
                           next);
        cr_assert(np >= 1 && np <= 2, "page %d has %zu rows", pages, np);
        for (size_t i = 0; i < np; i++)
            memcpy(all[nall++], page[i], sizeof all[0]);
        snprintf(cursor, sizeof cursor, "%s", next);
        pages++;
        cr_assert_leq(pages, 12);
    } while (cursor[0] != '\0');
    cr_assert_eq(pages, 6);
    assert_same_ids(all, nall, want, nw);

    /* with a filter, pages keep the filter */
    ng = query_ids((const char *const[]){"--actor", g_f.admin_id, "--limit", "3", NULL}, got, 32,
                   next);
    cr_assert_eq(ng, 3);
    cr_assert_neq(next[0], '\0');
    char rest[32][40];
    size_t nrest = query_ids(
        (const char *const[]){"--actor", g_f.admin_id, "--limit", "1000", "--after", next, NULL},
        rest, 32, next);
    for (size_t i = 0; i < nrest; i++)
        memcpy(got[ng++], rest[i], sizeof got[0]);
    snprintf(where, sizeof where, "actor_id = '%s'", g_f.admin_id);
    nw = sql_ids(where, want, 32);
    assert_same_ids(got, ng, want, nw);
}

Test(cmsctl_audit, table_json_and_ndjson_and_no_rows)
{
    char want[32][40];
    /* the table: a header, rows, and the next line on stdout */
    cms_test_proc *t = RUN("audit", "query", "--limit", "2");
    assert_exit(t, 0);
    cr_assert(strncmp(t->out, "CREATED_AT", 10) == 0, "%s", t->out);
    cr_assert_not_null(strstr(t->out, "identity.created"), "%s", t->out);
    cr_assert_not_null(strstr(t->out, "2024-03-19T00:00:00.000000Z"), "%s", t->out);
    cr_assert_not_null(strstr(t->out, "\nnext: --after "), "%s", t->out);
    cms_test_proc_free(t);
    /* json: one array, pretty-printed, the same rows as ndjson; the cursor on stderr */
    t = RUN("audit", "query", "--limit", "3", "-o", "json");
    assert_exit(t, 0);
    json_t *arr = json_loads(t->out, 0, NULL);
    cr_assert(json_is_array(arr), "one JSON array:\n%s", t->out);
    cr_assert_eq(json_array_size(arr), 3);
    cr_assert_not_null(strstr(t->out, "\n  {"), "pretty-printed: %s", t->out);
    sql_ids("true", want, 32);
    for (size_t i = 0; i < 3; i++) {
        json_t *o = json_array_get(arr, i);
        cr_assert_str_eq(json_string_value(json_object_get(o, "id")), want[i]);
        assert_created_pair(o);
        const char *keys[] = {"event_type", "resource_type", "resource_id", "actor_id"};
        for (size_t k = 0; k < 4; k++)
            cr_assert(json_is_string(json_object_get(o, keys[k])), "%s", keys[k]);
    }
    json_decref(arr);
    cr_assert_null(strstr(t->out, "next:"), "%s", t->out);
    cr_assert_not_null(strstr(t->err, "next: --after "), "%s", t->err);
    cms_test_proc_free(t);
    /* --json is -o json */
    t = RUN("audit", "query", "--limit", "1", "--json");
    assert_exit(t, 0);
    arr = json_loads(t->out, 0, NULL);
    cr_assert(json_is_array(arr) && json_array_size(arr) == 1, "%s", t->out);
    json_decref(arr);
    cms_test_proc_free(t);

    /* no rows: nothing on stdout (an empty array in json), the note on stderr */
    t = RUN("audit", "query", "--event-type", "nothing.like.this");
    assert_exit(t, 0);
    cr_assert_str_eq(t->out, "", "stdout stays empty");
    cr_assert_not_null(strstr(t->err, "(no audit records match)"), "%s", t->err);
    cms_test_proc_free(t);
    t = RUN("audit", "query", "--event-type", "nothing.like.this", "-o", "ndjson");
    assert_exit(t, 0);
    cr_assert_str_eq(t->out, "");
    cr_assert_not_null(strstr(t->err, "(no audit records match)"), "%s", t->err);
    cms_test_proc_free(t);
    t = RUN("audit", "query", "--event-type", "nothing.like.this", "-o", "json");
    assert_exit(t, 0);
    cr_assert_str_eq(t->out, "[]\n");
    cms_test_proc_free(t);
    /* the shared options may come before the verb */
    t = RUN("-o", "ndjson", "--timeout", "20s", "audit", "query", "--limit", "2");
    assert_exit(t, 0);
    size_t lines = 0;
    for (const char *c = t->out; *c != '\0'; c++)
        lines += *c == '\n';
    cr_assert_eq(lines, 2, "two lines: %s", t->out);
    cr_assert_not_null(strstr(t->err, "next: --after "), "%s", t->err);
    cms_test_proc_free(t);
}

Test(cmsctl_audit, a_plain_identity_reads_its_own_an_auditor_everything)
{
    char got[32][40], want[32][40], next[256], where[128];
    cr_assert_eq(setenv("CMS_API_KEY", g_actor_key, 1), 0);
    size_t ng = query_ids((const char *const[]){NULL}, got, 32, next);
    snprintf(where, sizeof where, "actor_id = '%s'", g_actor);
    size_t nw = sql_ids(where, want, 32);
    cr_assert_eq(nw, 4);
    assert_same_ids(got, ng, want, nw);
    /* the identity.created row is about the actor, by the admin: not theirs */
    ng = query_ids((const char *const[]){"--resource-id", g_actor, NULL}, got, 32, next);
    cr_assert_eq(ng, 0);
    cms_test_proc *p = RUN("audit", "query", "--actor", g_f.admin_id);
    assert_exit(p, 1);
    cr_assert_not_null(strstr(p->err, "PERMISSION_DENIED (actor)"), "%s", p->err);
    cr_assert_str_eq(p->out, "");
    cms_test_proc_free(p);

    cr_assert_eq(setenv("CMS_API_KEY", g_auditor_key, 1), 0);
    ng = query_ids((const char *const[]){NULL}, got, 32, next);
    nw = sql_ids("true", want, 32);
    assert_same_ids(got, ng, want, nw);
    ng = query_ids((const char *const[]){"--resource-id", g_actor, NULL}, got, 32, next);
    cr_assert_eq(ng, 1, "the auditor sees what was done about the actor");

    /* no key at all: a usage error, nothing sent */
    unsetenv("CMS_API_KEY");
    char home[64];
    snprintf(home, sizeof home, "/tmp/cmsctl-audit-home-%d", (int)getpid());
    cr_assert_eq(setenv("HOME", home, 1), 0);
    p = RUN("audit", "query");
    assert_exit(p, 2);
    cr_assert_not_null(strstr(p->err, "no API key"), "%s", p->err);
    cms_test_proc_free(p);
    /* a key that is not accepted: refused by the service */
    cr_assert_eq(setenv("CMS_API_KEY", "cms_not-a-real-key", 1), 0);
    p = RUN("audit", "query");
    assert_exit(p, 1);
    cr_assert_not_null(strstr(p->err, "PERMISSION_DENIED"), "%s", p->err);
    cms_test_proc_free(p);
}

Test(cmsctl_audit, usage_errors_exit_2_before_anything_is_sent)
{
    /* nothing listens on this prefix: only a check here can answer at once */
    cr_assert_eq(setenv("CMS_COMMAND_PREFIX", "nobody.cmd", 1), 0);
    static const char *const cases[][4] = {
        {"--actor", "not-a-uuid", "--actor \"not-a-uuid\" is not a UUID"},
        {"--resource-id", "0190b000-0000-7000-8000", "--resource-id \"0190b000"},
        {"--resource-type", "con tract", "--resource-type \"con tract\" is not a type"},
        {"--limit", "1001", "--limit"},
        {"--limit", "0", "--limit"},
        {"--after", "bm9wZQ", "--after \"bm9wZQ\" is not a cursor"},
        {"--since", "the day before", "--since \"the day before\" is not a timestamp"},
        {"--database-url", "host=127.0.0.1", "database-url"},
        {"-o", "yaml", "want table, json or ndjson"},
        {"--timeout", "10", "'10' needs a unit"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cms_test_proc *p = RUN("audit", "query", cases[i][0], cases[i][1]);
        assert_exit(p, 2);
        cr_assert_not_null(strstr(p->err, cases[i][2]), "%s %s: %s", cases[i][0], cases[i][1],
                           p->err);
        cms_test_proc_free(p);
    }
    cms_test_proc *p = RUN("audit", "frobnicate");
    assert_exit(p, 2);
    cms_test_proc_free(p);
    p = RUN("audit", "query", "--json", "-o", "ndjson");
    assert_exit(p, 2);
    cms_test_proc_free(p);
    p = RUN("audit", "query", "extra");
    assert_exit(p, 2);
    cms_test_proc_free(p);
    /* --help says where it reads from and who sees what */
    p = RUN("audit", "query", "--help");
    assert_exit(p, 0);
    cr_assert_not_null(strstr(p->out, "usage: cmsctl audit query"), "%s", p->out);
    cr_assert_not_null(strstr(p->out, "auditor"), "%s", p->out);
    cr_assert_not_null(strstr(p->out, "CMS_API_KEY"), "%s", p->out);
    cr_assert_null(strstr(p->out, "database-url"), "%s", p->out);
    cms_test_proc_free(p);
}
