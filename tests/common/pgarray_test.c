/* Binary arrays built by common/pgarray are accepted by the real server as
 * the types they claim, and unnest back to the values put in. */
#include "pgarray.h"
#include "testenv.h"

#include <criterion/criterion.h>
#include <libpq-fe.h>
#include <stdlib.h>
#include <string.h>

static PGconn *conn;

static void setup(void)
{
    conn = PQconnectdb(cms_test_env("CMS_TEST_PG_URL"));
    cr_assert_eq(PQstatus(conn), CONNECTION_OK, "%s", PQerrorMessage(conn));
}

static void teardown(void)
{
    PQfinish(conn);
}

TestSuite(pgarray, .init = setup, .fini = teardown);

/* Sends one binary array parameter of type oid and returns the query's rows
 * joined with '|'. */
static char *roundtrip(cms_pgarr *a, Oid oid, const char *sql)
{
    size_t len;
    const uint8_t *bytes = cms_pgarr_bytes(a, &len);
    const char *values[] = {(const char *)bytes};
    int lengths[] = {(int)len}, formats[] = {1};
    Oid types[] = {oid};
    PGresult *r = PQexecParams(conn, sql, 1, types, values, lengths, formats, 0);
    cr_assert_eq(PQresultStatus(r), PGRES_TUPLES_OK, "%s", PQresultErrorMessage(r));
    static char out[8192];
    out[0] = '\0';
    for (int i = 0; i < PQntuples(r); i++) {
        strncat(out, PQgetisnull(r, i, 0) ? "NULL" : PQgetvalue(r, i, 0),
                sizeof out - strlen(out) - 2);
        strcat(out, "|");
    }
    PQclear(r);
    return out;
}

Test(pgarray, uuid_text_jsonb_timestamptz_int8_and_nulls)
{
    cms_pgarr a;
    cms_pgarr_init(&a, CMS_PG_OID_UUID);
    uint8_t u1[16], u2[16];
    for (int i = 0; i < 16; i++) {
        u1[i] = (uint8_t)i;
        u2[i] = (uint8_t)(0xf0 + i);
    }
    cr_assert_eq(cms_pgarr_add(&a, u1, 16), 0);
    cr_assert_eq(cms_pgarr_add_null(&a), 0);
    cr_assert_eq(cms_pgarr_add(&a, u2, 16), 0);
    cr_assert_str_eq(
        roundtrip(&a, CMS_PG_OID_UUID_ARRAY, "SELECT unnest($1::uuid[])::text"),
        "00010203-0405-0607-0809-0a0b0c0d0e0f|NULL|f0f1f2f3-f4f5-f6f7-f8f9-fafbfcfdfeff|");
    cms_pgarr_free(&a);

    cms_pgarr_init(&a, CMS_PG_OID_TEXT);
    const char *texts[] = {"contract.signed", "", "quote ' and \" and \\ and , { } ÿ"};
    for (int i = 0; i < 3; i++)
        cr_assert_eq(cms_pgarr_add(&a, texts[i], strlen(texts[i])), 0);
    cr_assert_str_eq(roundtrip(&a, CMS_PG_OID_TEXT_ARRAY, "SELECT unnest($1::text[])"),
                     "contract.signed||quote ' and \" and \\ and , { } ÿ|", "no escaping needed");
    cms_pgarr_free(&a);

    cms_pgarr_init(&a, CMS_PG_OID_JSONB);
    const char *docs[] = {"{\"b\": 1, \"a\": [true, null]}", "{}"};
    for (int i = 0; i < 2; i++)
        cr_assert_eq(cms_pgarr_add_jsonb(&a, docs[i], strlen(docs[i])), 0);
    cr_assert_str_eq(roundtrip(&a, CMS_PG_OID_JSONB_ARRAY, "SELECT unnest($1::jsonb[])::text"),
                     "{\"a\": [true, null], \"b\": 1}|{}|");
    cms_pgarr_free(&a);

    cms_pgarr_init(&a, CMS_PG_OID_TIMESTAMPTZ);
    cr_assert_eq(cms_pgarr_add_timestamptz_unix_us(&a, INT64_C(1700000000123456)), 0);
    cr_assert_eq(cms_pgarr_add_timestamptz_unix_us(&a, 0), 0);
    cr_assert_str_eq(
        roundtrip(
            &a, CMS_PG_OID_TIMESTAMPTZ_ARRAY,
            "SELECT (extract(epoch from t) * 1000000)::bigint FROM unnest($1::timestamptz[]) t"),
        "1700000000123456|0|");
    cms_pgarr_free(&a);

    cms_pgarr_init(&a, CMS_PG_OID_INT8);
    cr_assert_eq(cms_pgarr_add_int8(&a, -5), 0);
    cr_assert_eq(cms_pgarr_add_int8(&a, INT64_MAX), 0);
    cr_assert_str_eq(roundtrip(&a, CMS_PG_OID_INT8_ARRAY, "SELECT unnest($1::int8[])"),
                     "-5|9223372036854775807|");
    /* reset keeps memory and starts a new array */
    cms_pgarr_reset(&a);
    cr_assert_eq(cms_pgarr_add_int8(&a, 7), 0);
    cr_assert_str_eq(roundtrip(&a, CMS_PG_OID_INT8_ARRAY, "SELECT unnest($1::int8[])"), "7|");
    cms_pgarr_free(&a);
}

Test(pgarray, empty_array)
{
    cms_pgarr a;
    cms_pgarr_init(&a, CMS_PG_OID_UUID);
    cr_assert_str_eq(
        roundtrip(&a, CMS_PG_OID_UUID_ARRAY, "SELECT coalesce(cardinality($1::uuid[]), 0)::text"),
        "0|");
    cms_pgarr_free(&a);
}

Test(pgarray, a_wrong_element_type_is_refused_by_the_server)
{
    cms_pgarr a;
    cms_pgarr_init(&a, CMS_PG_OID_TEXT);
    cr_assert_eq(cms_pgarr_add(&a, "x", 1), 0);
    size_t len;
    const uint8_t *bytes = cms_pgarr_bytes(&a, &len);
    const char *values[] = {(const char *)bytes};
    int lengths[] = {(int)len}, formats[] = {1};
    Oid types[] = {CMS_PG_OID_UUID_ARRAY};
    PGresult *r = PQexecParams(conn, "SELECT $1::uuid[]", 1, types, values, lengths, formats, 0);
    cr_assert_eq(PQresultStatus(r), PGRES_FATAL_ERROR, "a text[] is not a uuid[]");
    PQclear(r);
    cms_pgarr_free(&a);
}
