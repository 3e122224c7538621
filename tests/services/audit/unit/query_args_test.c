/* audit_qa (services/audit/query_args): every field of a query checked,
 * with the field at fault named; UUIDs made canonical; the limit's default
 * and bounds; the times --since accepts, to the microsecond, and the ones
 * it refuses; the timestamptz text of a time; the cursor's round trip and
 * its refusal of anything it did not make; and who reads what (admin and
 * auditor as asked, anyone else their own actor only, another refused). */
#include "audit/query_args.h"

#include <criterion/criterion.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#define ID "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"
#define OTHER "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c"
#define T2024_03_20 INT64_C(1710892800000000) /* 2024-03-20T00:00:00Z */

static Cms__V1__QueryAuditLog req(void)
{
    Cms__V1__QueryAuditLog m = CMS__V1__QUERY_AUDIT_LOG__INIT;
    return m;
}

/* Refused, at field. */
static void refused(const Cms__V1__QueryAuditLog *m, const char *field)
{
    audit_qa q;
    audit_qa_err e = {0};
    cr_assert_not(audit_qa_validate(m, &q, &e), "accepted, want %s refused", field);
    cr_assert_str_eq(e.field, field);
    cr_assert_gt(strlen(e.what), 10, "says what is wanted: %s", e.what);
}

Test(query_args, an_empty_query_is_every_row_a_default_page)
{
    Cms__V1__QueryAuditLog m = req();
    audit_qa q;
    audit_qa_err e;
    cr_assert(audit_qa_validate(&m, &q, &e), "%s: %s", e.field, e.what);
    cr_assert_eq(q.limit, AUDIT_QA_LIMIT_DEFAULT);
    cr_assert_str_eq(q.resource_type, "");
    cr_assert_str_eq(q.resource_id, "");
    cr_assert_str_eq(q.actor, "");
    cr_assert_str_eq(q.event_type, "");
    cr_assert_not(q.has_since);
    cr_assert_not(q.has_after);
}

Test(query_args, every_filter_accepted_and_made_canonical)
{
    Cms__V1__QueryAuditLog m = req();
    char cursor[AUDIT_QA_CURSOR_MAX];
    cr_assert(audit_qa_cursor_encode(T2024_03_20 + 7, ID, cursor));
    m.resource_type = (char *)"training_job";
    m.resource_id = (char *)"0190A1B2-C3D4-7E5F-8A9B-0C1D2E3F4A5B";
    m.actor = (char *)OTHER;
    m.event_type = (char *)"training_job.started";
    m.since = (char *)"2024-03-20";
    m.limit = 1000;
    m.after = cursor;
    audit_qa q;
    audit_qa_err e;
    cr_assert(audit_qa_validate(&m, &q, &e), "%s: %s", e.field, e.what);
    cr_assert_str_eq(q.resource_type, "training_job");
    cr_assert_str_eq(q.resource_id, ID, "lowercase");
    cr_assert_str_eq(q.actor, OTHER);
    cr_assert_str_eq(q.event_type, "training_job.started");
    cr_assert(q.has_since);
    cr_assert_eq(q.since_us, T2024_03_20);
    cr_assert_eq(q.limit, 1000);
    cr_assert(q.has_after);
    cr_assert_eq(q.after_us, T2024_03_20 + 7);
    cr_assert_str_eq(q.after_id, ID);
    /* an event type of more than two words is a type too (it matches nothing stored) */
    m.event_type = (char *)"nothing.like.this";
    cr_assert(audit_qa_validate(&m, &q, &e));
}

Test(query_args, each_bad_field_is_named)
{
    char long_type[60];
    memset(long_type, 'a', 51);
    long_type[51] = '\0';
    struct {
        const char *resource_type, *resource_id, *actor, *event_type, *since, *after;
        int limit;
        const char *field;
    } cases[] = {
        {.resource_type = "con tract", .field = "resource_type"},
        {.resource_type = "contract.signed", .field = "resource_type"},
        {.resource_type = long_type, .field = "resource_type"},
        {.resource_id = "not-a-uuid", .field = "resource_id"},
        {.resource_id = "0190b000-0000-7000-8000", .field = "resource_id"},
        {.actor = ID "0", .field = "actor"},
        {.actor = "x", .field = "actor"},
        {.event_type = "contract signed", .field = "event_type"},
        {.event_type = "contract.signed\n", .field = "event_type"},
        {.event_type = long_type, .field = "event_type"},
        {.since = "the day before", .field = "since"},
        {.since = "2024-13-01", .field = "since"},
        {.limit = -1, .field = "limit"},
        {.limit = 1001, .field = "limit"},
        {.after = "bm9wZQ", .field = "after"},
        {.after = "!!!", .field = "after"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        Cms__V1__QueryAuditLog m = req();
        if (cases[i].resource_type)
            m.resource_type = (char *)cases[i].resource_type;
        if (cases[i].resource_id)
            m.resource_id = (char *)cases[i].resource_id;
        if (cases[i].actor)
            m.actor = (char *)cases[i].actor;
        if (cases[i].event_type)
            m.event_type = (char *)cases[i].event_type;
        if (cases[i].since)
            m.since = (char *)cases[i].since;
        if (cases[i].after)
            m.after = (char *)cases[i].after;
        m.limit = cases[i].limit;
        refused(&m, cases[i].field);
    }
}

Test(query_args, a_refused_value_is_quoted_short_and_printable)
{
    char big[4096];
    memset(big, 'z', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    big[3] = '\x1b';
    Cms__V1__QueryAuditLog m = req();
    m.actor = big;
    audit_qa q;
    audit_qa_err e;
    cr_assert_not(audit_qa_validate(&m, &q, &e));
    cr_assert_lt(strlen(e.what), sizeof e.what);
    cr_assert_null(strchr(e.what, '\x1b'), "%s", e.what);
    cr_assert_not_null(strstr(e.what, "zzz?zzz"), "%s", e.what);
    cr_assert_not_null(strstr(e.what, "...\" is not a UUID"), "%s", e.what);
}

Test(query_args, times_since_accepts)
{
    struct {
        const char *text;
        int64_t us;
    } ok[] = {
        {"2024-03-20", T2024_03_20},
        {"2024-03-20T00:00:00Z", T2024_03_20},
        {"2024-03-20t00:00:00z", T2024_03_20},
        {"2024-03-20 00:00", T2024_03_20},
        {"2024-03-20T15:00:00Z", T2024_03_20 + INT64_C(15) * 3600000000},
        {"2024-03-20T15:00:00", T2024_03_20 + INT64_C(15) * 3600000000},
        {"2024-03-20T15:00:00.000001Z", T2024_03_20 + INT64_C(15) * 3600000000 + 1},
        {"2024-03-20T15:00:00.5+02:00", T2024_03_20 + INT64_C(13) * 3600000000 + 500000},
        {"2024-03-20T15:00:00.1234567Z", T2024_03_20 + INT64_C(15) * 3600000000 + 123456},
        {"2024-03-20T05:30-0530", T2024_03_20 + INT64_C(11) * 3600000000},
        {"2024-03-20T01:00+01", T2024_03_20},
        {"2024-02-29", T2024_03_20 - INT64_C(20) * 86400000000},
        {"1970-01-01", 0},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        int64_t us = -1;
        cr_assert(audit_qa_time_parse(ok[i].text, &us), "%s refused", ok[i].text);
        cr_assert_eq(us, ok[i].us, "%s: %lld, want %lld", ok[i].text, (long long)us,
                     (long long)ok[i].us);
    }
    const char *bad[] = {"",
                         "2024",
                         "2024-3-20",
                         "2023-02-29",
                         "2024-04-31",
                         "2024-00-10",
                         "1969-12-31",
                         "2024-03-20T24:00",
                         "2024-03-20T15:60",
                         "2024-03-20T15:00:60",
                         "2024-03-20T15",
                         "2024-03-20T15:00:00.",
                         "2024-03-20T15:00:00+",
                         "2024-03-20T15:00:00+02:",
                         "2024-03-20T15:00:00+2",
                         "2024-03-20Z",
                         "2024-03-20T15:00:00Z ",
                         " 2024-03-20",
                         "yesterday"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int64_t us;
        cr_assert_not(audit_qa_time_parse(bad[i], &us), "\"%s\" accepted", bad[i]);
    }
}

Test(query_args, time_text_is_exact_to_the_microsecond)
{
    char t[AUDIT_QA_TIME_TEXT_MAX];
    cr_assert(audit_qa_time_text(0, t));
    cr_assert_str_eq(t, "1970-01-01 00:00:00.000000+00");
    cr_assert(audit_qa_time_text(T2024_03_20 + INT64_C(15) * 3600000000 + 1, t));
    cr_assert_str_eq(t, "2024-03-20 15:00:00.000001+00");
    cr_assert(audit_qa_time_text(-1, t));
    cr_assert_str_eq(t, "1969-12-31 23:59:59.999999+00");
}

Test(query_args, cursor_round_trip_and_refusals)
{
    const int64_t keys[] = {0, 1, -1, T2024_03_20 + 123456, INT64_MAX, INT64_MIN};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        char c[AUDIT_QA_CURSOR_MAX], id[CMS_UUID_STRLEN + 1];
        int64_t us = 42;
        cr_assert(audit_qa_cursor_encode(keys[i], ID, c));
        cr_assert_eq(strspn(c, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"),
                     strlen(c), "base64url without padding: %s", c);
        cr_assert(audit_qa_cursor_decode(c, &us, id), "%s", c);
        cr_assert_eq(us, keys[i]);
        cr_assert_str_eq(id, ID);
    }
    /* what the encoder never makes: no colon, no key, not a UUID, an
     * upper-case UUID, a '+' sign, blanks, padding */
    const char *raw[] = {
        "nope",    ":" ID,    "12:not-a-uuid", "12:0190A1B2-C3D4-7E5F-8A9B-0C1D2E3F4A5B",
        "+12:" ID, " 12:" ID, "12 :" ID,       "x12:" ID};
    for (size_t i = 0; i < sizeof raw / sizeof raw[0]; i++) {
        char c[AUDIT_QA_CURSOR_MAX], id[CMS_UUID_STRLEN + 1];
        int64_t us;
        sodium_bin2base64(c, sizeof c, (const unsigned char *)raw[i], strlen(raw[i]),
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING);
        cr_assert_not(audit_qa_cursor_decode(c, &us, id), "\"%s\" accepted", raw[i]);
    }
    char c[AUDIT_QA_CURSOR_MAX], id[CMS_UUID_STRLEN + 1];
    int64_t us;
    cr_assert(audit_qa_cursor_encode(5, ID, c));
    char padded[AUDIT_QA_CURSOR_MAX + 4];
    snprintf(padded, sizeof padded, "%s=", c);
    cr_assert_not(audit_qa_cursor_decode(padded, &us, id));
    cr_assert_not(audit_qa_cursor_decode("", &us, id));
    char huge[512];
    memset(huge, 'A', sizeof huge - 1);
    huge[sizeof huge - 1] = '\0';
    cr_assert_not(audit_qa_cursor_decode(huge, &us, id));
}

static cms_principal principal(const char *id, const char *role)
{
    cms_principal p;
    memset(&p, 0, sizeof p);
    snprintf(p.identity_id, sizeof p.identity_id, "%s", id);
    snprintf(p.status, sizeof p.status, "active");
    if (role != NULL) {
        snprintf(p.roles[0], sizeof p.roles[0], "%s", role);
        p.nroles = 1;
    }
    return p;
}

Test(query_args, admins_and_auditors_read_all_others_their_own)
{
    char why[200];
    audit_qa q = {.limit = 50};
    cms_principal admin = principal(ID, "admin"), auditor = principal(ID, "auditor"),
                  user = principal(ID, NULL), ops = principal(ID, "ops");

    cr_assert(audit_qa_authorise(&q, &admin, why, sizeof why));
    cr_assert_str_eq(q.actor, "", "an admin reads every actor");
    snprintf(q.actor, sizeof q.actor, OTHER);
    cr_assert(audit_qa_authorise(&q, &admin, why, sizeof why));
    cr_assert_str_eq(q.actor, OTHER, "as asked");
    cr_assert(audit_qa_authorise(&q, &auditor, why, sizeof why));
    cr_assert_str_eq(q.actor, OTHER);
    q.actor[0] = '\0';
    cr_assert(audit_qa_authorise(&q, &auditor, why, sizeof why));
    cr_assert_str_eq(q.actor, "");

    /* anyone else: their own, whether asked for or not */
    cr_assert(audit_qa_authorise(&q, &user, why, sizeof why));
    cr_assert_str_eq(q.actor, ID, "narrowed to the caller");
    cr_assert(audit_qa_authorise(&q, &ops, why, sizeof why));
    cr_assert_str_eq(q.actor, ID);
    snprintf(q.actor, sizeof q.actor, OTHER);
    why[0] = '\0';
    cr_assert_not(audit_qa_authorise(&q, &user, why, sizeof why), "another actor is refused");
    cr_assert_not_null(strstr(why, "auditor"), "%s", why);
    cr_assert_str_eq(q.actor, OTHER, "not rewritten");
    cr_assert_not(audit_qa_authorise(&q, &ops, why, sizeof why));
    cr_assert_not(audit_qa_authorise(&q, NULL, why, sizeof why), "nobody");

    /* a principal's id in capitals is still its own */
    cms_principal upper = principal("0190A1B2-C3D4-7E5F-8A9B-0C1D2E3F4A5B", NULL);
    snprintf(q.actor, sizeof q.actor, ID);
    cr_assert(audit_qa_authorise(&q, &upper, why, sizeof why));
    cr_assert_str_eq(q.actor, ID);
}
