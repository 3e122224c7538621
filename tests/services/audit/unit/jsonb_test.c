/* audit/jsonb without a server (the byte-for-byte comparison with
 * PostgreSQL is the integration test's): empty containers on a converter
 * that has parsed nothing yet (a fuzzing find: its stacks were never
 * allocated), and output that is its own fixed point. */
#include "audit/jsonb.h"

#include <criterion/criterion.h>
#include <string.h>

static void expect(const char *in, const char *want)
{
    audit_jsonb *j = audit_jsonb_new(); /* fresh each time */
    cr_assert_not_null(j);
    const char *out;
    size_t n;
    cr_assert(audit_jsonb_text(j, in, strlen(in), &out, &n), "%s converts", in);
    cr_assert_str_eq(out, want, "%s", in);
    cr_assert_eq(n, strlen(want));
    const char *again;
    size_t n2;
    cr_assert(audit_jsonb_text(j, want, strlen(want), &again, &n2));
    cr_assert_str_eq(again, want, "the printed form of %s is its own", in);
    audit_jsonb_free(j);
}

Test(jsonb, empty_containers_on_a_fresh_converter)
{
    expect("{}", "{}");
    expect("[]", "[]");
    expect(" { } ", "{}");
    expect("{\"a\":{}}", "{\"a\": {}}");
    expect("[[],{}]", "[[], {}]");
    expect("\"\"", "\"\"");
}

Test(jsonb, keys_numbers_and_strings_as_postgresql_prints_them)
{
    expect("{\"bb\":1,\"a\":2,\"a\":3}", "{\"a\": 3, \"bb\": 1}");
    expect("[-0, -0.0, 1.50, 1e2, 25e-1, 0.5E+1]", "[0, 0.0, 1.50, 100, 2.5, 5]");
    expect("\"\\u00e9\\/\\u0001\"", "\"\xc3\xa9/\\u0001\"");
}

Test(jsonb, what_postgresql_refuses_is_refused)
{
    audit_jsonb *j = audit_jsonb_new();
    const char *out;
    size_t n;
    const char *bad[] = {"", "{", "[1,]", "\"\\u0000\"", "\"\\ud800\"", "01", "1e1073741823"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_assert_not(audit_jsonb_text(j, bad[i], strlen(bad[i]), &out, &n), "%s refused", bad[i]);
    audit_jsonb_free(j);
}
