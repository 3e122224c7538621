/* The input checks of cms-contracts (services/contracts/validate.h): for
 * each check the inputs just inside and just outside its bounds, and the
 * field, or the JSON path into the terms, that a refusal names. */
#include "contracts/validate.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* SCHEMA.md's example of a contract's terms */
#define SCHEMA_TERMS                                                                               \
    "{\"start_date\":\"2024-03-20\",\"end_date\":\"2025-03-20\","                                  \
    "\"conditions\":[{\"type\":\"payment\",\"amount\":1000,\"currency\":\"USD\","                  \
    "\"schedule\":\"monthly\"}],"                                                                  \
    "\"sla\":{\"availability\":99.9,\"response_time\":200}}"
#define US_2024_03_20 INT64_C(1710892800000000)
#define US_2025_03_20 INT64_C(1742428800000000)
/* the dates every terms below starts with */
#define DATES "\"start_date\":\"2024-03-20\",\"end_date\":\"2025-03-20\""

static cv_err e;

static void reset(void)
{
    memset(&e, 0, sizeof e);
}

/* A refusal must say which field and why (a non-empty message). */
static void refused(bool ok, const char *field, const char *what)
{
    cr_assert_not(ok, "%s was accepted", what);
    cr_assert_str_eq(e.field, field, "%s: %s", what, e.msg);
    cr_assert_gt(strlen(e.msg), 0, "%s: empty message", what);
    reset();
}

static void accepted(bool ok, const char *what)
{
    cr_assert(ok, "%s was refused: %s: %s", what, e.field, e.msg);
    reset();
}

/* The refusal's message holds says. */
static void says(const char *says_what, const char *what)
{
    cr_assert_not_null(strstr(e.msg, says_what), "%s: '%s' does not say '%s'", what, e.msg,
                       says_what);
    reset();
}

/* s filled with n copies of the unit u (bytes), NUL-terminated. */
static char *repeat(char *s, const char *u, size_t n)
{
    size_t ul = strlen(u);
    for (size_t i = 0; i < n; i++)
        memcpy(s + i * ul, u, ul);
    s[n * ul] = '\0';
    return s;
}

/* ------------------------------------------------------------------------ */

static cv_terms terms_out;

static void terms_refused(const char *json, const char *field, const char *what)
{
    memset(&terms_out, 0xa5, sizeof terms_out);
    cv_terms before = terms_out;
    refused(cv_terms_check(json, &terms_out, &e), field, what);
    cr_assert_eq(memcmp(&terms_out, &before, sizeof before), 0, "%s: output written on refusal",
                 what);
}

/* refused with field, and the message says says_what */
static void terms_refused_saying(const char *json, const char *field, const char *says_what,
                                 const char *what)
{
    terms_refused(json, field, what);
    cr_assert_not(cv_terms_check(json, &terms_out, &e));
    says(says_what, what);
}

static void terms_accepted(const char *json, const char *what)
{
    memset(&terms_out, 0, sizeof terms_out);
    accepted(cv_terms_check(json, &terms_out, &e), what);
}

TestSuite(terms, .init = reset);

Test(terms, schema_example_is_valid)
{
    terms_accepted(SCHEMA_TERMS, "SCHEMA.md's example");
    cr_assert_eq(terms_out.starts_at_us, US_2024_03_20, "%lld", (long long)terms_out.starts_at_us);
    cr_assert_eq(terms_out.ends_at_us, US_2025_03_20, "%lld", (long long)terms_out.ends_at_us);
    cr_assert_not(terms_out.has_max_epsilon);
    /* the output is optional */
    accepted(cv_terms_check(SCHEMA_TERMS, NULL, &e), "without an output");
}

Test(terms, the_smallest_terms_are_two_dates)
{
    terms_accepted("{" DATES "}", "dates only");
    cr_assert_eq(terms_out.starts_at_us, US_2024_03_20);
    cr_assert_eq(terms_out.ends_at_us, US_2025_03_20);
    terms_accepted("{\"start_date\":\"2024-03-20T09:30:00+01:00\","
                   "\"end_date\":\"2024-03-20T08:30:00.000001Z\"}",
                   "date-times a microsecond apart");
    cr_assert_eq(terms_out.ends_at_us - terms_out.starts_at_us, 1);
    terms_accepted("{\"start_date\":\"2024-03-20\",\"end_date\":\"2024-03-20T00:00:00.000001Z\"}",
                   "a date and a date-time");
}

Test(terms, required_and_json)
{
    terms_refused(NULL, "terms", "NULL");
    terms_refused_saying("", "terms", "required", "empty");
    static const char *const not_json[] = {
        "{",
        "{" DATES ",}",
        "{" DATES "} {}",
        "{" DATES "}x",
        "{'start_date':'2024-03-20'}",
        "{\"start_date\":\"\xc3\x28\"}",
        "{\"a\":\"\\u0000\"}",
        "{\"a\":NaN}",
        "{\"a\":1e400}",
    };
    for (size_t i = 0; i < sizeof not_json / sizeof not_json[0]; i++)
        terms_refused_saying(not_json[i], "terms", "not valid JSON", not_json[i]);
    static const char *const not_objects[] = {"[]", "[{}]", "1", "\"2024-03-20\"", "null", "true"};
    for (size_t i = 0; i < sizeof not_objects / sizeof not_objects[0]; i++)
        terms_refused_saying(not_objects[i], "terms", "must be a JSON object", not_objects[i]);
}

Test(terms, duplicate_keys_are_refused_by_name)
{
    terms_refused_saying("{" DATES ",\"start_date\":\"2024-01-01\"}", "terms", "\"start_date\"",
                         "a duplicate top-level key");
    terms_refused_saying("{" DATES ",\"sla\":{\"availability\":99,\"availability\":98}}", "terms",
                         "\"availability\"", "a duplicate key in sla");
    terms_refused_saying("{" DATES ",\"conditions\":[{\"type\":\"x\",\"k\":1,\"k\":1}]}", "terms",
                         "\"k\"", "a duplicate key in a condition");
    terms_accepted("{" DATES ",\"a\":{\"k\":1},\"b\":{\"k\":1}}", "one key in two objects");
}

Test(terms, at_most_65536_bytes)
{
    static char buf[CV_TERMS_MAX + 64];
    /* {DATES,"pad":"xxx..."} of exactly n bytes */
    const char *head = "{" DATES ",\"pad\":\"";
    size_t hl = strlen(head);
    memcpy(buf, head, hl);
    memset(buf + hl, 'x', CV_TERMS_MAX - hl - 2);
    memcpy(buf + CV_TERMS_MAX - 2, "\"}", 3);
    cr_assert_eq(strlen(buf), CV_TERMS_MAX);
    terms_accepted(buf, "65536 bytes");
    buf[CV_TERMS_MAX - 2] = 'x';
    memcpy(buf + CV_TERMS_MAX - 1, "\"}", 3);
    cr_assert_eq(strlen(buf), CV_TERMS_MAX + 1);
    terms_refused_saying(buf, "terms", "65537", "65537 bytes");
    cr_assert_not(cv_terms_check(buf, &terms_out, &e));
    says("65536", "65537 bytes");
}

Test(terms, dates_are_required_iso8601_strings)
{
    terms_refused_saying("{\"end_date\":\"2025-03-20\"}", "terms.start_date", "required",
                         "no start_date");
    terms_refused_saying("{\"start_date\":\"2024-03-20\"}", "terms.end_date", "required",
                         "no end_date");
    terms_refused("{}", "terms.start_date", "neither date");
    /* ISO 4217's testing and "no currency" codes are codes, but not money */
    static const char *const bad[] = {
        "\"20.03.2024\"",   "\"2024-03-20 00:00:00\"",
        "\"2024-02-30\"",   "\"\"",
        "1710892800",       "null",
        "[\"2024-03-20\"]", "{}",
    };
    char buf[256];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(buf, sizeof buf, "{\"start_date\":%s,\"end_date\":\"2025-03-20\"}", bad[i]);
        terms_refused_saying(buf, "terms.start_date", "must be an ISO 8601 date", buf);
        snprintf(buf, sizeof buf, "{\"start_date\":\"2024-03-20\",\"end_date\":%s}", bad[i]);
        terms_refused_saying(buf, "terms.end_date", "must be an ISO 8601 date", buf);
    }
}

Test(terms, end_after_start)
{
    terms_refused_saying("{\"start_date\":\"2025-03-20\",\"end_date\":\"2024-03-20\"}",
                         "terms.end_date", "must be after terms.start_date", "end before start");
    terms_refused_saying("{\"start_date\":\"2024-03-20\",\"end_date\":\"2024-03-20\"}",
                         "terms.end_date", "must be after terms.start_date", "equal dates");
    /* equal instants written in two zones */
    terms_refused("{\"start_date\":\"2024-03-20\",\"end_date\":\"2024-03-20T01:00:00+01:00\"}",
                  "terms.end_date", "the same instant");
    terms_accepted("{\"start_date\":\"2024-03-20\",\"end_date\":\"2024-03-20T01:00:00+00:59\"}",
                   "a minute later");
}

Test(terms, unknown_top_level_keys_are_kept)
{
    terms_accepted("{" DATES ",\"renewal\":{\"auto\":true},\"notes\":[1,\"two\",null],"
                   "\"x\":null}",
                   "unknown keys of any kind");
}

Test(terms, conditions_is_an_array_of_at_most_100)
{
    terms_accepted("{" DATES ",\"conditions\":[]}", "no conditions");
    static const char *const bad[] = {"{}", "\"payment\"", "null", "1"};
    char buf[256];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(buf, sizeof buf, "{" DATES ",\"conditions\":%s}", bad[i]);
        terms_refused_saying(buf, "terms.conditions", "must be an array", buf);
    }
    static char big[8192];
    for (int n = 100; n <= 101; n++) {
        size_t len = (size_t)snprintf(big, sizeof big, "{" DATES ",\"conditions\":[");
        for (int i = 0; i < n; i++)
            len += (size_t)snprintf(big + len, sizeof big - len, "%s{\"type\":\"note\"}",
                                    i ? "," : "");
        snprintf(big + len, sizeof big - len, "]}");
        if (n == 100)
            terms_accepted(big, "100 conditions");
        else
            terms_refused_saying(big, "terms.conditions", "101", "101 conditions");
    }
}

Test(terms, each_condition_is_an_object_with_a_type)
{
    terms_refused_saying("{" DATES ",\"conditions\":[{\"type\":\"x\"},1]}", "terms.conditions[1]",
                         "must be an object", "a number");
    terms_refused("{" DATES ",\"conditions\":[[]]}", "terms.conditions[0]", "an array");
    terms_refused("{" DATES ",\"conditions\":[null]}", "terms.conditions[0]", "null");
    terms_refused_saying("{" DATES ",\"conditions\":[{\"amount\":1}]}", "terms.conditions[0].type",
                         "required", "no type");
    static const char *const bad[] = {"\"\"",         "\"Payment\"",  "\"pay-ment\"",
                                      "\"pay ment\"", "\"p\\u00e9\"", "1",
                                      "null",         "[\"payment\"]"};
    char buf[256];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(buf, sizeof buf, "{" DATES ",\"conditions\":[{\"type\":\"a\"},{\"type\":%s}]}",
                 bad[i]);
        terms_refused_saying(buf, "terms.conditions[1].type", "[a-z0-9_]", buf);
    }
}

Test(terms, unknown_condition_types_are_kept_unchecked)
{
    terms_accepted("{" DATES ",\"conditions\":[{\"type\":\"data_retention_90d\",\"days\":\"x\"},"
                   "{\"type\":\"_\",\"amount\":-1,\"currency\":\"nope\",\"schedule\":7}]}",
                   "another type's payment-like keys are not checked");
}

/* {DATES,"conditions":[<a valid payment>,{"type":"payment",<fields>}]} */
static const char *payment_terms(char *buf, size_t cap, const char *fields)
{
    snprintf(buf, cap,
             "{" DATES ",\"conditions\":[{\"type\":\"payment\",\"amount\":1,\"currency\":\"EUR\","
             "\"schedule\":\"once\"},{\"type\":\"payment\"%s%s}]}",
             *fields ? "," : "", fields);
    return buf;
}

Test(terms, payment_amount)
{
    char buf[512];
    static const char *const good[] = {"1000", "0.01", "1e-9", "1e300", "12345678901234"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        char f[128];
        snprintf(f, sizeof f, "\"amount\":%s,\"currency\":\"USD\",\"schedule\":\"yearly\"",
                 good[i]);
        terms_accepted(payment_terms(buf, sizeof buf, f), good[i]);
    }
    static const char *const bad[] = {"0",        "-0",   "0.0",  "-1",  "-0.01",
                                      "\"1000\"", "true", "null", "[1]", "{}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char f[128];
        snprintf(f, sizeof f, "\"amount\":%s,\"currency\":\"USD\",\"schedule\":\"yearly\"", bad[i]);
        terms_refused_saying(payment_terms(buf, sizeof buf, f), "terms.conditions[1].amount",
                             "must be a number greater than 0", bad[i]);
    }
    terms_refused_saying(
        payment_terms(buf, sizeof buf, "\"currency\":\"USD\",\"schedule\":\"yearly\""),
        "terms.conditions[1].amount", "required", "no amount");
}

Test(terms, payment_currency)
{
    char buf[512];
    static const char *const good[] = {"USD", "EUR", "GBP", "JPY", "CHF", "CNY", "INR",
                                       "AED", "ZWG", "XCG", "XAU", "SLE", "VES", "UYW"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        char f[128];
        snprintf(f, sizeof f, "\"amount\":5,\"currency\":\"%s\",\"schedule\":\"once\"", good[i]);
        terms_accepted(payment_terms(buf, sizeof buf, f), good[i]);
    }
    /* among them ISO 4217's codes for no currency ("X" "XX"), for testing
     * (XTS) and withdrawn ones (HRK, DEM): codes, but not currencies one pays in */
    static const char *const bad[] = {"\"usd\"",
                                      "\"Usd\"",
                                      "\"US\"",
                                      "\"USDD\"",
                                      "\"ABC\"",
                                      "\"AAA\"",
                                      "\"ZZZ\"",
                                      ("\"X"
                                       "XX\""),
                                      "\"XTS\"",
                                      "\"HRK\"",
                                      "\"DEM\"",
                                      "\"\"",
                                      "\"US \"",
                                      "\"U\\u0000D\"",
                                      "840",
                                      "null",
                                      "[\"USD\"]"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char f[128];
        snprintf(f, sizeof f, "\"amount\":5,\"currency\":%s,\"schedule\":\"once\"", bad[i]);
        const char *t = payment_terms(buf, sizeof buf, f);
        if (strstr(bad[i], "\\u0000")) {
            terms_refused(t, "terms", "NUL in a string is not JSON jsonb takes");
            continue;
        }
        terms_refused_saying(t, "terms.conditions[1].currency",
                             "must be an ISO 4217 currency code such as USD", bad[i]);
    }
    terms_refused_saying(payment_terms(buf, sizeof buf, "\"amount\":5,\"schedule\":\"once\""),
                         "terms.conditions[1].currency", "required", "no currency");
}

/* Every three capital letters: the table holds 180 codes, and the binary
 * search finds each of them (an unsorted table would lose some). */
Test(terms, the_currency_table)
{
    char buf[512], f[128], code[4] = {0};
    int n = 0;
    for (code[0] = 'A'; code[0] <= 'Z'; code[0]++)
        for (code[1] = 'A'; code[1] <= 'Z'; code[1]++)
            for (code[2] = 'A'; code[2] <= 'Z'; code[2]++) {
                snprintf(f, sizeof f, "\"amount\":5,\"currency\":\"%s\",\"schedule\":\"once\"",
                         code);
                if (cv_terms_check(payment_terms(buf, sizeof buf, f), NULL, &e))
                    n++;
                else if (strcmp(e.field, "terms.conditions[1].currency") != 0)
                    cr_assert_fail("%s: %s: %s", code, e.field, e.msg);
                reset();
            }
    cr_assert_eq(n, 180);
}

Test(terms, payment_schedule)
{
    char buf[512];
    static const char *const good[] = {"once", "monthly", "quarterly", "yearly"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        char f[128];
        snprintf(f, sizeof f, "\"amount\":5,\"currency\":\"USD\",\"schedule\":\"%s\"", good[i]);
        terms_accepted(payment_terms(buf, sizeof buf, f), good[i]);
    }
    static const char *const bad[] = {"\"weekly\"",   "\"Monthly\"", "\"annually\"", "\"\"",
                                      "\"monthly \"", "12",          "null"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char f[128];
        snprintf(f, sizeof f, "\"amount\":5,\"currency\":\"USD\",\"schedule\":%s", bad[i]);
        terms_refused_saying(payment_terms(buf, sizeof buf, f), "terms.conditions[1].schedule",
                             "once, monthly, quarterly or yearly", bad[i]);
    }
    terms_refused_saying(payment_terms(buf, sizeof buf, "\"amount\":5,\"currency\":\"USD\""),
                         "terms.conditions[1].schedule", "required", "no schedule");
}

Test(terms, payment_unknown_keys_are_kept)
{
    char buf[512];
    terms_accepted(payment_terms(buf, sizeof buf,
                                 "\"amount\":5,\"currency\":\"USD\",\"schedule\":\"once\","
                                 "\"due_day\":1,\"memo\":{\"any\":[null]}"),
                   "extra keys");
}

Test(terms, the_first_fault_is_named)
{
    terms_refused("{" DATES ",\"conditions\":[{\"type\":\"payment\",\"amount\":0,"
                  "\"currency\":\"usd\",\"schedule\":\"never\"}],\"sla\":{\"availability\":0}}",
                  "terms.conditions[0].amount", "three faults");
    terms_refused("{\"start_date\":1,\"end_date\":2,\"sla\":[]}", "terms.start_date",
                  "dates first");
}

Test(terms, sla)
{
    char buf[256];
    static const char *const good[] = {
        "{}", "{\"availability\":100}", "{\"availability\":99.999,\"response_time\":0.5}",
        "{\"availability\":1e-6}", "{\"response_time\":200,\"penalty\":\"credit\"}"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        snprintf(buf, sizeof buf, "{" DATES ",\"sla\":%s}", good[i]);
        terms_accepted(buf, good[i]);
    }
    static const char *const not_objects[] = {"[]", "99.9", "null", "\"gold\""};
    for (size_t i = 0; i < sizeof not_objects / sizeof not_objects[0]; i++) {
        snprintf(buf, sizeof buf, "{" DATES ",\"sla\":%s}", not_objects[i]);
        terms_refused_saying(buf, "terms.sla", "must be an object", buf);
    }
    static const char *const availability[] = {"0",      "-1",   "100.0001", "101",
                                               "\"99\"", "null", "true",     "1e400"};
    for (size_t i = 0; i < sizeof availability / sizeof availability[0]; i++) {
        snprintf(buf, sizeof buf, "{" DATES ",\"sla\":{\"availability\":%s}}", availability[i]);
        if (strcmp(availability[i], "1e400") == 0) {
            terms_refused(buf, "terms", "an overflowing number is not JSON jansson reads");
            continue;
        }
        terms_refused_saying(buf, "terms.sla.availability",
                             "must be a number greater than 0 and at most 100", buf);
    }
    static const char *const response[] = {"0", "-200", "\"200\"", "null", "{}"};
    for (size_t i = 0; i < sizeof response / sizeof response[0]; i++) {
        snprintf(buf, sizeof buf, "{" DATES ",\"sla\":{\"availability\":99,\"response_time\":%s}}",
                 response[i]);
        terms_refused_saying(buf, "terms.sla.response_time", "greater than 0", buf);
    }
}

Test(terms, privacy_max_epsilon)
{
    terms_accepted("{" DATES ",\"privacy\":{\"max_epsilon\":1.5,\"delta\":1e-5}}", "1.5");
    cr_assert(terms_out.has_max_epsilon);
    cr_assert_float_eq(terms_out.max_epsilon, 1.5, 1e-12);
    terms_accepted("{" DATES ",\"privacy\":{\"max_epsilon\":3}}", "an integer");
    cr_assert(terms_out.has_max_epsilon);
    cr_assert_float_eq(terms_out.max_epsilon, 3.0, 1e-12);
    terms_accepted("{" DATES ",\"privacy\":{\"delta\":1e-5}}", "no max_epsilon");
    cr_assert_not(terms_out.has_max_epsilon);
    terms_accepted("{" DATES ",\"privacy\":{}}", "empty privacy");
    cr_assert_not(terms_out.has_max_epsilon);

    char buf[256];
    static const char *const not_objects[] = {"[]", "1", "null", "\"dp\""};
    for (size_t i = 0; i < sizeof not_objects / sizeof not_objects[0]; i++) {
        snprintf(buf, sizeof buf, "{" DATES ",\"privacy\":%s}", not_objects[i]);
        terms_refused_saying(buf, "terms.privacy", "must be an object", buf);
    }
    static const char *const bad[] = {"0", "-0.5", "\"1\"", "null", "false", "[1]"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(buf, sizeof buf, "{" DATES ",\"privacy\":{\"max_epsilon\":%s}}", bad[i]);
        terms_refused_saying(buf, "terms.privacy.max_epsilon", "must be a number greater than 0",
                             buf);
    }
    static const char *const bad_delta[] = {"0", "1", "1.5", "-1e-5", "\"1e-5\"", "null"};
    for (size_t i = 0; i < sizeof bad_delta / sizeof bad_delta[0]; i++) {
        snprintf(buf, sizeof buf, "{" DATES ",\"privacy\":{\"max_epsilon\":1,\"delta\":%s}}",
                 bad_delta[i]);
        terms_refused_saying(buf, "terms.privacy.delta", "greater than 0 and below 1", buf);
    }
    terms_accepted("{" DATES ",\"privacy\":{\"max_epsilon\":1,\"delta\":0.999}}", "delta 0.999");
}

/* ------------------------------------------------------------------------ */

static void date_is(const char *s, int64_t want)
{
    int64_t us = -12345;
    cr_assert(cv_iso8601(s, &us), "%s was refused", s);
    cr_assert_eq(us, want, "%s: %lld, not %lld", s, (long long)us, (long long)want);
}

static void date_refused(const char *s)
{
    int64_t us = -12345;
    cr_assert_not(cv_iso8601(s, &us), "%s was accepted", s ? s : "NULL");
    cr_assert_eq(us, -12345, "%s: output written on refusal", s ? s : "NULL");
}

Test(iso8601, dates_are_midnight_utc)
{
    date_is("1970-01-01", 0);
    date_is("2024-03-20", US_2024_03_20);
    date_is("2025-03-20", US_2025_03_20);
    date_is("2000-01-01", INT64_C(946684800000000));
    date_is("9999-12-31", INT64_C(253402214400000000));
}

Test(iso8601, date_times_and_offsets)
{
    date_is("2024-03-20T00:00:00Z", US_2024_03_20);
    date_is("2024-03-20T01:00:00+01:00", US_2024_03_20);
    date_is("2024-03-19T19:00:00-05:00", US_2024_03_20);
    date_is("2024-03-20T05:30:00+05:30", US_2024_03_20);
    date_is("2024-03-20T00:00:00+00:00", US_2024_03_20);
    date_is("2024-03-20T00:00:00-00:00", US_2024_03_20);
    date_is("2024-03-20T23:59:00+23:59", US_2024_03_20);
    date_is("2038-01-19T03:14:08Z", INT64_C(2147483648000000));
    date_is("9999-12-31T23:59:59Z", INT64_C(253402300799000000));
    /* an offset may take a 1970 time before the epoch */
    date_is("1970-01-01T00:00:00+01:00", -INT64_C(3600000000));
}

Test(iso8601, fractional_seconds)
{
    date_is("2024-03-20T00:00:00.5Z", US_2024_03_20 + 500000);
    date_is("2024-03-20T00:00:00.05Z", US_2024_03_20 + 50000);
    date_is("2024-03-20T00:00:00.123Z", US_2024_03_20 + 123000);
    date_is("2024-03-20T00:00:00.123456Z", US_2024_03_20 + 123456);
    date_is("2024-03-20T00:00:00.000001Z", US_2024_03_20 + 1);
    date_is("2024-03-20T00:00:00.000000Z", US_2024_03_20);
    date_is("2024-03-20T01:00:00.250+01:00", US_2024_03_20 + 250000);
    date_is("9999-12-31T23:59:59.999999Z", INT64_C(253402300799999999));
    date_refused("2024-03-20T00:00:00.1234567Z");
    date_refused("2024-03-20T00:00:00.Z");
    date_refused("2024-03-20T00:00:00.");
    date_refused("2024-03-20T00:00:00,5Z");
    date_refused("2024-03-20T00:00:00.5");
    date_refused("2024-03-20T00:00:00.-5Z");
}

Test(iso8601, the_calendar)
{
    date_is("2024-02-29", INT64_C(1709164800000000));
    date_is("2024-03-01", INT64_C(1709251200000000));
    date_is("2000-02-29T12:00:00Z", INT64_C(951825600000000));
    date_refused("2023-02-29");
    date_refused("2100-02-29");
    date_refused("2024-02-30");
    date_is("2023-02-28", INT64_C(1677542400000000));
    static const char *const thirty[] = {"04", "06", "09", "11"};
    for (size_t i = 0; i < 4; i++) {
        char s[16];
        snprintf(s, sizeof s, "2024-%s-30", thirty[i]);
        int64_t us;
        cr_assert(cv_iso8601(s, &us), "%s", s);
        snprintf(s, sizeof s, "2024-%s-31", thirty[i]);
        date_refused(s);
    }
    date_refused("2024-13-01");
    date_refused("2024-00-01");
    date_refused("2024-01-32");
    date_refused("2024-01-00");
    date_refused("2024-03-20T24:00:00Z");
    date_refused("2024-03-20T23:60:00Z");
    date_refused("2024-03-20T23:59:60Z"); /* no leap second */
    date_refused("2024-03-20T00:00:00+24:00");
    date_refused("2024-03-20T00:00:00+01:60");
    date_refused("1969-12-31");
    date_refused("0000-01-01");
    date_refused("10000-01-01");
}

/* Every day from 1970 to 9999 against the C library's own calendar. */
Test(iso8601, every_day_agrees_with_gmtime)
{
    const int64_t last = INT64_C(253402214400) / 86400; /* 9999-12-31 */
    char s[32];
    for (int64_t d = 0; d <= last; d++) {
        time_t t = (time_t)(d * 86400);
        struct tm tm;
        if (gmtime_r(&t, &tm) == NULL)
            cr_assert_fail("gmtime_r(%lld)", (long long)t);
        snprintf(s, sizeof s, "%04d-%02d-%02d", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday);
        int64_t us = -1;
        if (!cv_iso8601(s, &us) || us != d * 86400 * 1000000)
            cr_assert_fail("%s: %lld, not %lld", s, (long long)us, (long long)(d * 86400000000));
    }
}

Test(iso8601, nothing_else)
{
    static const char *const bad[] = {
        "",
        "2024",
        "2024-03",
        "2024-3-20",
        "24-03-20",
        "2024/03/20",
        "20240320",
        "2024-03-20x",
        "2024-03-20 ",
        " 2024-03-20",
        "2024-03-20\n",
        "2024-03-20T",
        "2024-03-20T00:00Z",
        "2024-03-20T00:00:00",
        "2024-03-20t00:00:00Z",
        "2024-03-20 00:00:00Z",
        "2024-03-20T00:00:00z",
        "2024-03-20T00:00:00ZZ",
        "2024-03-20T00:00:00Zx",
        "2024-03-20T00:00:00Z ",
        "2024-03-20T00:00:00+01",
        "2024-03-20T00:00:00+0100",
        "2024-03-20T00:00:00+01:00:00",
        "2024-03-20T00:00:00+1:00",
        "2024-03-20T00:00:00 +01:00",
        "2024-03-20T0:00:00Z",
        "2024-03-20T00:0:00Z",
        "2024-03-20T00:00:0Z",
        "2024-03-20T+1:00:00Z",
        "+2024-03-20",
        "2024-+3-20",
        "2024-03-+2",
        "2024-03-20T00:00:00UTC",
        "2024-03-20T00:00:00+01:00Z",
        "\xef\xbc\x92\xef\xbc\x90\xef\xbc\x92\xef\xbc\x94-03-20", /* full-width digits */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        date_refused(bad[i]);
    date_refused(NULL);
}

/* ------------------------------------------------------------------------ */

static const cv_status ALL[CV_NSTATUS] = {CV_DRAFT,     CV_REVIEW,     CV_SIGNED, CV_ACTIVE,
                                          CV_COMPLETED, CV_TERMINATED, CV_EXPIRED};

Test(lifecycle, the_whole_table)
{
    /* want[from][to] */
    static const bool want[CV_NSTATUS][CV_NSTATUS] = {
        /* to:           draft  review signed active compl  term   expired */
        /* draft      */ {false, true, false, false, false, true, false},
        /* review     */ {false, false, true, false, false, true, false},
        /* signed     */ {false, false, false, true, false, true, true},
        /* active     */ {false, false, false, false, true, true, true},
        /* completed  */ {false, false, false, false, false, false, false},
        /* terminated */ {false, false, false, false, false, false, false},
        /* expired    */ {false, false, false, false, false, false, false},
    };
    for (int f = 0; f < CV_NSTATUS; f++)
        for (int t = 0; t < CV_NSTATUS; t++)
            cr_assert_eq(cv_transition(ALL[f], ALL[t]), want[f][t], "%s -> %s",
                         cv_status_name(ALL[f]), cv_status_name(ALL[t]));
    cr_assert_not(cv_transition(CV_NSTATUS, CV_DRAFT));
    cr_assert_not(cv_transition(CV_ACTIVE, CV_NSTATUS));
}

Test(lifecycle, final_statuses)
{
    static const bool want[CV_NSTATUS] = {false, false, false, false, true, true, true};
    for (int s = 0; s < CV_NSTATUS; s++) {
        cr_assert_eq(cv_is_final(ALL[s]), want[s], "%s", cv_status_name(ALL[s]));
        /* nothing leaves a final status */
        for (int t = 0; cv_is_final(ALL[s]) && t < CV_NSTATUS; t++)
            cr_assert_not(cv_transition(ALL[s], ALL[t]));
    }
}

Test(status, parse_and_name_round_trip, .init = reset)
{
    /* the database enum contract_status, in its order */
    static const char *const names[CV_NSTATUS] = {"draft",     "review",     "signed", "active",
                                                  "completed", "terminated", "expired"};
    for (int i = 0; i < CV_NSTATUS; i++) {
        cv_status s = (cv_status)-1;
        accepted(cv_status_parse(names[i], "status", &s, &e), names[i]);
        cr_assert_eq(s, ALL[i], "%s", names[i]);
        cr_assert_eq((int)s, i, "%s is in the database's order", names[i]);
        cr_assert_str_eq(cv_status_name(s), names[i]);
        cv_status back = CV_NSTATUS;
        accepted(cv_status_parse(cv_status_name(ALL[i]), "status", &back, &e), names[i]);
        cr_assert_eq(back, ALL[i]);
    }
    cr_assert_str_eq(cv_status_name(CV_NSTATUS), "unknown");
    cr_assert_str_eq(cv_status_name((cv_status)-1), "unknown");
}

Test(status, bad_names_name_the_callers_field, .init = reset)
{
    static const char *const bad[] = {"",        "Draft",   "DRAFT",     " draft", "draft ",
                                      "drafted", "signing", "cancelled", "unknown"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cv_status s = CV_EXPIRED;
        refused(cv_status_parse(bad[i], "filter.status", &s, &e), "filter.status", bad[i]);
        cr_assert_eq(s, CV_EXPIRED, "output written on refusal of '%s'", bad[i]);
    }
    cv_status s = CV_EXPIRED;
    cr_assert_not(cv_status_parse(NULL, "status", &s, &e));
    cr_assert_str_eq(e.field, "status");
    says("terminated", "the message lists the statuses");
}

/* ------------------------------------------------------------------------ */

TestSuite(title, .init = reset);

Test(title, length_is_bytes_1_to_255)
{
    char s[1024];
    refused(cv_title("", &e), "title", "empty");
    refused(cv_title(NULL, &e), "title", "NULL");
    accepted(cv_title("a", &e), "1 byte");
    accepted(cv_title(repeat(s, "a", 255), &e), "255 bytes");
    refused(cv_title(repeat(s, "a", 256), &e), "title", "256 bytes");
    cr_assert_not(cv_title(repeat(s, "a", 256), &e));
    says("256", "the length");
    accepted(cv_title(repeat(s, "\xe2\x82\xac", 85), &e), "85 x U+20AC (255 bytes)");
    refused(cv_title(repeat(s, "\xc3\xa9", 128), &e), "title", "128 x U+00E9 (256 bytes)");
}

Test(title, control_characters_are_refused)
{
    static const char *const bad[] = {"a\tb",
                                      "a\nb",
                                      "a\r\nb",
                                      "\x01",
                                      "x\x1f",
                                      "x\x7f",
                                      "\x1b[31mred",
                                      ("a\xc2\x85"
                                       "b")};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        refused(cv_title(bad[i], &e), "title", "a control character");
        cr_assert_not(cv_title(bad[i], &e));
        says("control", bad[i]);
    }
}

Test(title, not_only_spaces)
{
    static const char *const blank[] = {" ", "   ", "\xc2\xa0", " \xe3\x80\x80 ",
                                        "\xe2\x80\x83\xe2\x80\xaf"};
    for (size_t i = 0; i < sizeof blank / sizeof blank[0]; i++)
        refused(cv_title(blank[i], &e), "title", "only spaces");
    accepted(cv_title(" a ", &e), "spaces around a letter");
    accepted(cv_title("Data sharing \xe2\x80\x94 2024 \xf0\x9f\xa4\x96", &e), "multi-byte");
}

Test(title, invalid_utf8_is_refused)
{
    static const char *const bad[] = {
        "\x80", "\xc3", "\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "ok\xe2\x82", "\xff"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        refused(cv_title(bad[i], &e), "title", "invalid UTF-8");
        cr_assert_not(cv_title(bad[i], &e));
        says("UTF-8", "invalid UTF-8");
    }
}

Test(description, optional_bounded_free_text, .init = reset)
{
    static char buf[CV_DESCRIPTION_MAX + 8];
    accepted(cv_description(NULL, &e), "NULL");
    accepted(cv_description("", &e), "empty");
    accepted(cv_description("Line one\nline two\r\n\ttabbed", &e), "LF, CRLF and tabs");
    accepted(cv_description("   ", &e), "only spaces, as it is optional");
    accepted(cv_description(repeat(buf, "d", CV_DESCRIPTION_MAX), &e), "8192 bytes");
    refused(cv_description(repeat(buf, "d", CV_DESCRIPTION_MAX + 1), &e), "description",
            "8193 bytes");
    cr_assert_not(cv_description(repeat(buf, "d", CV_DESCRIPTION_MAX + 1), &e));
    says("8193", "8193 bytes");
    static const char *const ctl[] = {"a\rb",  "end\r", "\x01", "\x1b[2J",
                                      "x\x7f", "\x0b",  "\x0c", "a\xc2\x9f"};
    for (size_t i = 0; i < sizeof ctl / sizeof ctl[0]; i++) {
        refused(cv_description(ctl[i], &e), "description", "a control character");
        cr_assert_not(cv_description(ctl[i], &e));
        says("control character", ctl[i]);
    }
    refused(cv_description("caf\xc3", &e), "description", "truncated UTF-8");
    cr_assert_not(cv_description("\xed\xa0\x80", &e));
    says("UTF-8", "a surrogate");
}

Test(reason, bounded_and_maybe_required, .init = reset)
{
    static char buf[CV_REASON_MAX + 8];
    accepted(cv_reason(NULL, false, &e), "NULL, optional");
    accepted(cv_reason("", false, &e), "empty, optional");
    refused(cv_reason(NULL, true, &e), "reason", "NULL, required");
    refused(cv_reason("", true, &e), "reason", "empty, required");
    refused(cv_reason("  \xc2\xa0", true, &e), "reason", "only spaces, required");
    cr_assert_not(cv_reason("", true, &e));
    says("required", "empty, required");
    accepted(cv_reason("breach of clause 4\nsee ticket #12", true, &e), "two lines");
    accepted(cv_reason(repeat(buf, "r", CV_REASON_MAX), true, &e), "1024 bytes");
    refused(cv_reason(repeat(buf, "r", CV_REASON_MAX + 1), false, &e), "reason", "1025 bytes");
    cr_assert_not(cv_reason(repeat(buf, "r", CV_REASON_MAX + 1), true, &e));
    says("1025", "1025 bytes");
    refused(cv_reason("\xc0\xaf", false, &e), "reason", "overlong");
    refused(cv_reason("abc\xe2\x82", true, &e), "reason", "truncated");
    refused(cv_reason("a\x1b[0m", true, &e), "reason", "an escape");
}

Test(uuid, text_form, .init = reset)
{
    accepted(cv_uuid("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", "provider_id", &e), "lowercase");
    accepted(cv_uuid("0190A1B2-C3D4-7E5F-8A9B-0C1D2E3F4A5B", "provider_id", &e), "uppercase");
    refused(cv_uuid(NULL, "id", &e), "id", "NULL");
    cr_assert_not(cv_uuid("", "consumer_id", &e));
    cr_assert_str_eq(e.field, "consumer_id");
    says("required", "empty");
    static const char *const bad[] = {"0190a1b2c3d47e5f8a9b0c1d2e3f4a5b",
                                      "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5",
                                      "{0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b}",
                                      "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5g", "not-a-uuid"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        refused(cv_uuid(bad[i], "consumer_id", &e), "consumer_id", bad[i]);
        cr_assert_not(cv_uuid(bad[i], "consumer_id", &e));
        says("not a UUID", bad[i]);
    }
}

/* ------------------------------------------------------------------------ */

static const char *md_out;

static void md_refused(const char *s, const char *field, const char *what)
{
    md_out = "untouched";
    refused(cv_metadata(s, "metadata", &md_out, &e), field, what);
    cr_assert_str_eq(md_out, "untouched", "%s: output written on refusal", what);
}

static void md_accepted(const char *s, const char *what)
{
    md_out = NULL;
    accepted(cv_metadata(s, "metadata", &md_out, &e), what);
    cr_assert_eq(md_out, s, "%s: the output is the input", what);
}

TestSuite(metadata, .init = reset);

Test(metadata, empty_becomes_an_empty_object)
{
    md_out = NULL;
    accepted(cv_metadata("", "metadata", &md_out, &e), "empty");
    cr_assert_str_eq(md_out, "{}");
    md_out = NULL;
    accepted(cv_metadata(NULL, "metadata", &md_out, &e), "NULL");
    cr_assert_str_eq(md_out, "{}");
}

Test(metadata, objects_only)
{
    md_accepted("{}", "empty object");
    md_accepted("{\"project\":\"x\",\"roles\":\"not identity's roles\",\"n\":[1,{\"a\":null}]}",
                "anything in an object");
    md_accepted("{\"history\":{\"supersedes\":\"x\"}}", "a nested supersedes is the caller's");
    static const char *const bad[] = {
        "[]", "1", "\"x\"", "null", "{", "{\"a\":1,\"a\":2}", "{\"a\":\"\xc3\x28\"}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        md_refused(bad[i], "metadata", bad[i]);
}

Test(metadata, supersedes_is_reserved)
{
    md_refused("{\"supersedes\":\"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b\"}", "metadata.supersedes",
               "supersedes");
    md_refused("{\"a\":1,\"supersedes\":null}", "metadata.supersedes", "supersedes: null");
    md_refused("{\"supersedes\":{\"id\":\"x\",\"content_hash\":\"y\"}}", "metadata.supersedes",
               "the service's own form");
    cr_assert_not(cv_metadata("{\"supersedes\":1}", "amendment.metadata", &md_out, &e));
    cr_assert_str_eq(e.field, "amendment.metadata.supersedes");
    says("reserved", "the message says why");
    md_accepted("{\"Supersedes\":1,\"supersedes_note\":2}", "other keys");
}

Test(metadata, at_most_16384_bytes)
{
    static char buf[CV_METADATA_MAX + 64];
    memcpy(buf, "{\"k\":\"", 6);
    memset(buf + 6, 'x', CV_METADATA_MAX - 8);
    memcpy(buf + CV_METADATA_MAX - 2, "\"}", 3);
    md_accepted(buf, "16384 bytes");
    buf[CV_METADATA_MAX - 2] = 'x';
    memcpy(buf + CV_METADATA_MAX - 1, "\"}", 3);
    md_refused(buf, "metadata", "16385 bytes");
    cr_assert_not(cv_metadata(buf, "metadata", &md_out, &e));
    says("16385", "16385 bytes");
}
