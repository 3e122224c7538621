/* jcs: the examples of RFC 8785 (the sample of 3.2.2, the sorting of 3.2.3,
 * the number table of Appendix B), numbers as JavaScript reads and writes
 * them, string escapes, key order by UTF-16 code units, what is refused
 * (repeated keys, invalid UTF-8, lone surrogates, numbers beyond double
 * range, too deep), idempotence and independence from the input's order
 * and layout. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "jcs.h"

/* The canonical form of text, which must succeed, compared with want. */
static void assert_canon(const char *text, const char *want)
{
    char *out = NULL;
    size_t len = 0;
    cms_jcs_err e = cms_jcs_canonicalize(text, strlen(text), &out, &len);
    cr_assert_eq(e, CMS_JCS_OK, "%s: %s", text, cms_jcs_strerror(e));
    cr_assert_eq(len, strlen(want), "%s:\n got %s\nwant %s", text, out, want);
    cr_assert_eq(memcmp(out, want, len), 0, "%s:\n got %s\nwant %s", text, out, want);
    cr_assert_eq(out[len], '\0');
    free(out);
}

static void assert_refused(const char *text, size_t len, cms_jcs_err want)
{
    char *out = (char *)"untouched";
    size_t outlen = 99;
    cms_jcs_err e = cms_jcs_canonicalize(text, len, &out, &outlen);
    cr_assert_eq(e, want, "%.*s: %s, want %s", (int)len, text, cms_jcs_strerror(e),
                 cms_jcs_strerror(want));
    cr_assert_null(out);
    cr_assert_eq(outlen, 0);
}

#define REFUSED(text, want) assert_refused((text), sizeof(text) - 1, (want))

static double from_bits(uint64_t bits)
{
    double d;
    memcpy(&d, &bits, sizeof d);
    return d;
}

/* ------------------------------------------------------------------------ */
/* RFC 8785 */

Test(jcs, rfc8785_sample_of_section_3_2_2)
{
    assert_canon("{\n"
                 "  \"numbers\": [333333333.33333329, 1E30, 4.50,\n"
                 "              2e-3, 0.000000000000000000000000001],\n"
                 "  \"string\": \"\\u20ac$\\u000F\\u000aA'\\u0042\\u0022\\u005c\\\\\\\"\\/\",\n"
                 "  \"literals\": [null, true, false]\n"
                 "}",
                 "{\"literals\":[null,true,false],"
                 "\"numbers\":[333333333.3333333,1e+30,4.5,0.002,1e-27],"
                 "\"string\":\"\xe2\x82\xac$\\u000f\\nA'B\\\"\\\\\\\\\\\"/\"}");
}

Test(jcs, rfc8785_sorting_of_section_3_2_3)
{
    assert_canon("{\n"
                 "  \"\\u20ac\": \"Euro Sign\",\n"
                 "  \"\\r\": \"Carriage Return\",\n"
                 "  \"\\ufb33\": \"Hebrew Letter Dalet With Dagesh\",\n"
                 "  \"1\": \"One\",\n"
                 "  \"\\ud83d\\ude00\": \"Emoji: Grinning Face\",\n"
                 "  \"\\u0080\": \"Control\",\n"
                 "  \"\\u00f6\": \"Latin Small Letter O With Diaeresis\"\n"
                 "}",
                 "{\"\\r\":\"Carriage Return\","
                 "\"1\":\"One\","
                 "\"\xc2\x80\":\"Control\","
                 "\"\xc3\xb6\":\"Latin Small Letter O With Diaeresis\","
                 "\"\xe2\x82\xac\":\"Euro Sign\","
                 "\"\xf0\x9f\x98\x80\":\"Emoji: Grinning Face\","
                 "\"\xef\xac\xb3\":\"Hebrew Letter Dalet With Dagesh\"}");
}

static const struct {
    uint64_t bits;
    const char *text;
} appendix_b[] = {
    {0x0000000000000000, "0"},
    {0x8000000000000000, "0"},
    {0x0000000000000001, "5e-324"},
    {0x8000000000000001, "-5e-324"},
    {0x7fefffffffffffff, "1.7976931348623157e+308"},
    {0xffefffffffffffff, "-1.7976931348623157e+308"},
    {0x4340000000000000, "9007199254740992"},
    {0xc340000000000000, "-9007199254740992"},
    {0x4430000000000000, "295147905179352830000"},
    {0x44b52d02c7e14af5, "9.999999999999997e+22"},
    {0x44b52d02c7e14af6, "1e+23"},
    {0x44b52d02c7e14af7, "1.0000000000000001e+23"},
    {0x444b1ae4d6e2ef4e, "999999999999999700000"},
    {0x444b1ae4d6e2ef4f, "999999999999999900000"},
    {0x444b1ae4d6e2ef50, "1e+21"},
    {0x3eb0c6f7a0b5ed8c, "9.999999999999997e-7"},
    {0x3eb0c6f7a0b5ed8d, "0.000001"},
    {0x41b3de4355555553, "333333333.3333332"},
    {0x41b3de4355555554, "333333333.33333325"},
    {0x41b3de4355555555, "333333333.3333333"},
    {0x41b3de4355555556, "333333333.3333334"},
    {0x41b3de4355555557, "333333333.33333343"},
    /* the RFC's value; -0.0000033333333333333327 reads back as 0xbecbf647612f3695 */
    {0xbecbf647612f3696, "-0.0000033333333333333333"},
    {0x43143ff3c1cb0959, "1424953923781206.2"},
};

Test(jcs, rfc8785_appendix_b_numbers)
{
    for (size_t i = 0; i < sizeof appendix_b / sizeof appendix_b[0]; i++) {
        char buf[CMS_JCS_NUMBER_MAX];
        double d = from_bits(appendix_b[i].bits);
        int n = cms_jcs_number(d, buf, sizeof buf);
        cr_assert_eq(n, (int)strlen(appendix_b[i].text), "%016llx: %s",
                     (unsigned long long)appendix_b[i].bits, buf);
        cr_assert_str_eq(buf, appendix_b[i].text, "%016llx",
                         (unsigned long long)appendix_b[i].bits);
        /* and the same through a document: what is written reads back as d */
        cr_assert_eq(strtod(buf, NULL), d);
        json_t *arr = json_pack("[f]", d);
        char *out = NULL;
        size_t len = 0;
        cr_assert_eq(cms_jcs_dump(arr, &out, &len), CMS_JCS_OK);
        char want[64];
        snprintf(want, sizeof want, "[%s]", appendix_b[i].text);
        cr_assert_str_eq(out, want);
        free(out);
        json_decref(arr);
    }
}

Test(jcs, nan_and_infinity_are_refused)
{
    char buf[CMS_JCS_NUMBER_MAX] = "x";
    cr_assert_eq(cms_jcs_number(NAN, buf, sizeof buf), -1);
    cr_assert_str_eq(buf, "");
    cr_assert_eq(cms_jcs_number(INFINITY, buf, sizeof buf), -1);
    cr_assert_eq(cms_jcs_number(-INFINITY, buf, sizeof buf), -1);
    /* 0x7ff0000000000000 and 0xfff0000000000000, NaN as in Appendix B */
    cr_assert_eq(cms_jcs_number(from_bits(0x7ff0000000000000), buf, sizeof buf), -1);
    cr_assert_eq(cms_jcs_number(from_bits(0xfff0000000000000), buf, sizeof buf), -1);
    cr_assert_eq(cms_jcs_number(from_bits(0x7fffffffffffffff), buf, sizeof buf), -1);
    /* JSON has no spelling for them either */
    REFUSED("NaN", CMS_JCS_EPARSE);
    REFUSED("[Infinity]", CMS_JCS_EPARSE);
    REFUSED("-Infinity", CMS_JCS_EPARSE);
}

/* ------------------------------------------------------------------------ */
/* numbers */

Test(jcs, numbers_are_doubles_as_in_javascript)
{
    assert_canon("9007199254740993", "9007199254740992");
    assert_canon("[9007199254740993, -9007199254740993]", "[9007199254740992,-9007199254740992]");
    assert_canon("18446744073709551616", "18446744073709552000");
    assert_canon("123456789012345678901234567890", "1.2345678901234568e+29");
    assert_canon("1.0", "1");
    assert_canon("-0.0", "0");
    assert_canon("-0", "0");
    assert_canon("0e10", "0");
    assert_canon("100", "100");
    assert_canon("1E2", "100");
    assert_canon("0.1", "0.1");
    assert_canon("-1.5", "-1.5");
    assert_canon("1e21", "1e+21");
    assert_canon("1e20", "100000000000000000000");
    assert_canon("1e-6", "0.000001");
    assert_canon("1e-7", "1e-7");
    assert_canon("1.5e-7", "1.5e-7");
    assert_canon("0.0000123", "0.0000123");
    assert_canon("1e-400", "0"); /* underflow reads as JavaScript reads it */
}

Test(jcs, numbers_beyond_double_range_are_refused)
{
    REFUSED("1E400", CMS_JCS_ENUMBER);
    REFUSED("-1e400", CMS_JCS_ENUMBER);
    REFUSED("{\"a\": [1, 2e308]}", CMS_JCS_ENUMBER);
    char big[420] = "1";
    memset(big + 1, '0', 400);
    big[401] = '\0';
    assert_refused(big, strlen(big), CMS_JCS_ENUMBER);
}

Test(jcs, integers_of_a_jansson_value_are_doubles)
{
    json_t *v = json_pack("{s:I, s:I, s:i}", "big", (json_int_t)9007199254740993LL, "max",
                          (json_int_t)INT64_MAX, "small", -7);
    char *out = NULL;
    size_t len = 0;
    cr_assert_eq(cms_jcs_dump(v, &out, &len), CMS_JCS_OK);
    cr_assert_str_eq(out, "{\"big\":9007199254740992,\"max\":9223372036854776000,\"small\":-7}");
    free(out);
    json_decref(v);
}

Test(jcs, number_buffer_too_small)
{
    char buf[4] = "x";
    cr_assert_eq(cms_jcs_number(12345, buf, sizeof buf), -1);
    cr_assert_str_eq(buf, "");
    cr_assert_eq(cms_jcs_number(123, buf, sizeof buf), 3);
    cr_assert_str_eq(buf, "123");
    cr_assert_eq(cms_jcs_number(1, NULL, 0), -1);
}

/* ------------------------------------------------------------------------ */
/* strings */

Test(jcs, only_quote_backslash_and_control_characters_are_escaped)
{
    assert_canon("\"\\u0000\\u0001\\b\\t\\n\\u000b\\f\\r\\u001F\\u001f \\u007f/\\/\"",
                 "\"\\u0000\\u0001\\b\\t\\n\\u000b\\f\\r\\u001f\\u001f \x7f//\"");
    assert_canon("\"\\\"\\\\\"", "\"\\\"\\\\\"");
    /* non-ASCII as UTF-8, however it was written */
    assert_canon("\"\\u00e9\xc3\xa9\\ud83d\\ude00\"", "\"\xc3\xa9\xc3\xa9\xf0\x9f\x98\x80\"");
    assert_canon("\"\\u2028\\u2029\\ufeff\"", "\"\xe2\x80\xa8\xe2\x80\xa9\xef\xbb\xbf\"");
}

Test(jcs, nul_in_a_value_is_written_escaped)
{
    assert_canon("{\"a\": \"x\\u0000y\"}", "{\"a\":\"x\\u0000y\"}");
    assert_canon("[\"\\u0000\"]", "[\"\\u0000\"]");
    /* jansson's decoder has no key with a NUL in it */
    REFUSED("{\"a\\u0000b\": 1}", CMS_JCS_EPARSE);
}

Test(jcs, nul_in_a_key_of_a_jansson_value_is_written_escaped)
{
    json_t *v = json_object();
    cr_assert_eq(json_object_setn_new(v, "a\0b", 3, json_stringn("x\0y", 3)), 0);
    cr_assert_eq(json_object_set_new(v, "a", json_true()), 0);
    char *out = NULL;
    size_t len = 0;
    cr_assert_eq(cms_jcs_dump(v, &out, &len), CMS_JCS_OK);
    const char want[] = "{\"a\":true,\"a\\u0000b\":\"x\\u0000y\"}";
    cr_assert_eq(len, sizeof want - 1, "%s", out);
    cr_assert_eq(memcmp(out, want, len), 0, "%s", out);
    free(out);
    json_decref(v);
}

Test(jcs, invalid_utf8_is_refused)
{
    REFUSED("\"\xff\"", CMS_JCS_EPARSE);
    REFUSED("\"\xc0\xaf\"", CMS_JCS_EPARSE);         /* overlong "/" */
    REFUSED("\"\xe0\x80\xaf\"", CMS_JCS_EPARSE);     /* overlong "/" */
    REFUSED("\"\xed\xa0\x80\"", CMS_JCS_EPARSE);     /* a surrogate, encoded */
    REFUSED("\"\xf4\x90\x80\x80\"", CMS_JCS_EPARSE); /* above U+10FFFF */
    REFUSED("\"\xe2\x82\"", CMS_JCS_EPARSE);         /* truncated */
    REFUSED("\"\x80\"", CMS_JCS_EPARSE);             /* a lone continuation byte */
    REFUSED("{\"\xc3\x28\": 1}", CMS_JCS_EPARSE);    /* in a key */
}

Test(jcs, lone_surrogates_are_refused)
{
    REFUSED("\"\\ud800\"", CMS_JCS_EPARSE);
    REFUSED("\"\\udc00\"", CMS_JCS_EPARSE);
    REFUSED("\"\\ud83d x\"", CMS_JCS_EPARSE);
    REFUSED("\"\\ude00\\ud83d\"", CMS_JCS_EPARSE);
    REFUSED("{\"\\ud800\": 1}", CMS_JCS_EPARSE);
}

Test(jcs, invalid_utf8_in_a_jansson_value_is_refused)
{
    char *out = NULL;
    size_t len = 0;
    json_t *s = json_stringn_nocheck("\xed\xa0\x80", 3);
    cr_assert_eq(cms_jcs_dump(s, &out, &len), CMS_JCS_EPARSE);
    cr_assert_null(out);
    json_decref(s);
    json_t *o = json_object();
    cr_assert_eq(json_object_setn_new_nocheck(o, "\xff", 1, json_null()), 0);
    cr_assert_eq(cms_jcs_dump(o, &out, &len), CMS_JCS_EPARSE);
    json_decref(o);
}

/* ------------------------------------------------------------------------ */
/* objects */

Test(jcs, keys_sort_by_utf16_code_units_at_every_level)
{
    /* U+FB33 (one unit, 0xFB33) after U+1F600 (0xD83D 0xDE00), though its
     * UTF-8 (EF AC B3) is before F0 9F 98 80 */
    assert_canon("{\"\\ufb33\": 1, \"\\ud83d\\ude00\": 2}",
                 "{\"\xf0\x9f\x98\x80\":2,\"\xef\xac\xb3\":1}");
    /* two supplementary characters with the same high surrogate */
    assert_canon("{\"\\ud83d\\ude01\": 1, \"\\ud83d\\ude00\": 2}",
                 "{\"\xf0\x9f\x98\x80\":2,\"\xf0\x9f\x98\x81\":1}");
    /* a prefix first, the empty key first of all; nested objects too;
     * arrays keep their order */
    assert_canon("{\"b\": {\"z\": 1, \"y\": [3, 1, {\"d\": 0, \"c\": 0}]}, \"ab\": 2, \"a\": 3, "
                 "\"\": 4, \"B\": 5}",
                 "{\"\":4,\"B\":5,\"a\":3,\"ab\":2,\"b\":{\"y\":[3,1,{\"c\":0,\"d\":0}],\"z\":1}}");
    assert_canon("{}", "{}");
    assert_canon("[]", "[]");
    assert_canon("[{}, [], [[]]]", "[{},[],[[]]]");
}

Test(jcs, repeated_keys_are_refused)
{
    REFUSED("{\"a\": 1, \"a\": 1}", CMS_JCS_EPARSE);
    REFUSED("{\"x\": {\"a\": 1, \"b\": 2, \"a\": 3}}", CMS_JCS_EPARSE);
    /* the same key spelled two ways */
    REFUSED("{\"\\u00e9\": 1, \"\xc3\xa9\": 2}", CMS_JCS_EPARSE);
}

Test(jcs, any_value_at_the_top)
{
    assert_canon(" \"a\" ", "\"a\"");
    assert_canon("true", "true");
    assert_canon("false", "false");
    assert_canon("null", "null");
    assert_canon("\t42\n", "42");
}

Test(jcs, what_is_not_one_json_value_is_refused)
{
    REFUSED("", CMS_JCS_EPARSE);
    REFUSED(" ", CMS_JCS_EPARSE);
    REFUSED("{", CMS_JCS_EPARSE);
    REFUSED("1 2", CMS_JCS_EPARSE);
    REFUSED("{} x", CMS_JCS_EPARSE);
    REFUSED("{\"a\": 1,}", CMS_JCS_EPARSE);
    REFUSED("[01]", CMS_JCS_EPARSE);
    REFUSED("{'a': 1}", CMS_JCS_EPARSE);
    REFUSED("\"a\nb\"", CMS_JCS_EPARSE);
    char *out = NULL;
    size_t len = 0;
    cr_assert_eq(cms_jcs_canonicalize(NULL, 0, &out, &len), CMS_JCS_EPARSE);
    cr_assert_eq(cms_jcs_dump(NULL, &out, &len), CMS_JCS_EPARSE);
    /* len is what is read: the rest of the buffer is not */
    const char text[] = "[1][2]";
    cr_assert_eq(cms_jcs_canonicalize(text, 3, &out, &len), CMS_JCS_OK);
    cr_assert_str_eq(out, "[1]");
    free(out);
}

/* ------------------------------------------------------------------------ */
/* the canonical form itself */

static const char *const documents[] = {
    "{\"b\": [1.0, 2.50, -0, 1e21, 1e-7], \"a\": {\"y\": null, \"x\": \"\\u00e9\\n\"}}",
    "{\"\\ud83d\\ude00\": true, \"\\ufb33\": false, \"\\u0080\": \"\\u0000\\u001f\\\"\"}",
    "[333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001]",
    "\"\\u20ac$\\u000F\\u000aA'\\u0042\\u0022\\u005c\\\\\\\"\\/\"",
    "{\"terms\": {\"price\": {\"amount\": 100.00, \"currency\": \"EUR\"}, \"days\": [1, 2, 3]}}",
};

Test(jcs, canonicalising_canonical_output_changes_nothing)
{
    for (size_t i = 0; i < sizeof documents / sizeof documents[0]; i++) {
        char *once = NULL, *twice = NULL;
        size_t n1 = 0, n2 = 0;
        cr_assert_eq(cms_jcs_canonicalize(documents[i], strlen(documents[i]), &once, &n1),
                     CMS_JCS_OK, "%s", documents[i]);
        cr_assert_eq(cms_jcs_canonicalize(once, n1, &twice, &n2), CMS_JCS_OK, "%s", once);
        cr_assert_eq(n1, n2);
        cr_assert_eq(memcmp(once, twice, n1), 0, "%s\n%s", once, twice);
        free(once);
        free(twice);
    }
}

Test(jcs, order_and_layout_of_the_input_do_not_matter)
{
    const char *a = "{\"id\": \"c1\", \"terms\": {\"b\": 2, \"a\": [1, {\"y\": 1, \"x\": 2}]}, "
                    "\"title\": \"T\"}";
    const char *b = "{\n  \"title\" : \"\\u0054\",\n  \"terms\" : {\n    \"a\" : [1.0, {\"x\": "
                    "2e0, \"y\": 10e-1}],\n    \"b\" : 2\n  },\n  \"id\" : \"c1\"\n}\n";
    char *ca = NULL, *cb = NULL;
    size_t na = 0, nb = 0;
    cr_assert_eq(cms_jcs_canonicalize(a, strlen(a), &ca, &na), CMS_JCS_OK);
    cr_assert_eq(cms_jcs_canonicalize(b, strlen(b), &cb, &nb), CMS_JCS_OK);
    cr_assert_str_eq(ca, cb);
    cr_assert_str_eq(ca, "{\"id\":\"c1\",\"terms\":{\"a\":[1,{\"x\":2,\"y\":1}],\"b\":2},"
                         "\"title\":\"T\"}");
    /* and a jansson value built in yet another order */
    json_t *v = json_pack("{s:s, s:{s:i, s:[i, {s:i, s:i}]}, s:s}", "title", "T", "terms", "b", 2,
                          "a", 1, "y", 1, "x", 2, "id", "c1");
    char *cv = NULL;
    size_t nv = 0;
    cr_assert_eq(cms_jcs_dump(v, &cv, &nv), CMS_JCS_OK);
    cr_assert_str_eq(cv, ca);
    json_decref(v);
    free(ca);
    free(cb);
    free(cv);
}

/* depth levels of nesting: n arrays, or n objects {"k": ...} */
static char *nested(int n, bool objects)
{
    size_t cap = (size_t)n * 6 + 8, len = 0;
    char *s = malloc(cap);
    cr_assert_not_null(s);
    for (int i = 0; i < n; i++) {
        const char *open = objects ? "{\"k\":" : "[";
        memcpy(s + len, open, strlen(open));
        len += strlen(open);
    }
    s[len++] = '0';
    for (int i = 0; i < n; i++)
        s[len++] = objects ? '}' : ']';
    s[len] = '\0';
    return s;
}

Test(jcs, nesting_deeper_than_64_is_refused)
{
    for (int objects = 0; objects <= 1; objects++) {
        char *ok = nested(CMS_JCS_MAX_DEPTH, objects),
             *deep = nested(CMS_JCS_MAX_DEPTH + 1, objects), *deeper = nested(5000, objects);
        char *out = NULL;
        size_t len = 0;
        cr_assert_eq(cms_jcs_canonicalize(ok, strlen(ok), &out, &len), CMS_JCS_OK);
        cr_assert_str_eq(out, ok);
        free(out);
        assert_refused(deep, strlen(deep), CMS_JCS_EDEPTH);
        /* beyond jansson's own limit too */
        assert_refused(deeper, strlen(deeper), CMS_JCS_EDEPTH);
        free(ok);
        free(deep);
        free(deeper);
    }
}

Test(jcs, a_jansson_value_too_deep_or_containing_itself_is_refused)
{
    json_t *root = json_array(), *cur = root;
    for (int i = 1; i < CMS_JCS_MAX_DEPTH; i++) {
        json_t *next = json_array();
        json_array_append_new(cur, next);
        cur = next;
    }
    char *out = NULL;
    size_t len = 0;
    cr_assert_eq(cms_jcs_dump(root, &out, &len), CMS_JCS_OK);
    free(out);
    json_array_append_new(cur, json_object());
    cr_assert_eq(cms_jcs_dump(root, &out, &len), CMS_JCS_EDEPTH);
    cr_assert_null(out);
    json_decref(root);

    /* a = [b], b = [a] (jansson refuses to put an array straight into itself) */
    json_t *a = json_array(), *b = json_array();
    cr_assert_eq(json_array_append(a, b), 0);
    cr_assert_eq(json_array_append(b, a), 0);
    cr_assert_eq(cms_jcs_dump(a, &out, &len), CMS_JCS_EDEPTH);
    json_array_clear(b);
    json_decref(b);
    json_decref(a);
}

Test(jcs, every_error_has_a_text)
{
    cms_jcs_err all[] = {CMS_JCS_OK, CMS_JCS_EPARSE, CMS_JCS_ENUMBER, CMS_JCS_EDEPTH,
                         CMS_JCS_ENOMEM};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        cr_assert_neq(strcmp(cms_jcs_strerror(all[i]), "unknown error"), 0);
    cr_assert_str_eq(cms_jcs_strerror((cms_jcs_err)99), "unknown error");
}

/* xorshift64*: the same doubles every run */
static uint64_t next_bits(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545f4914f6cdd1dULL;
}

Test(jcs, every_number_written_reads_back_as_itself)
{
    uint64_t s = 0x9e3779b97f4a7c15ULL;
    for (int i = 0; i < 200000; i++) {
        double d = from_bits(next_bits(&s));
        char buf[CMS_JCS_NUMBER_MAX];
        int n = cms_jcs_number(d, buf, sizeof buf);
        if (!isfinite(d)) {
            cr_assert_eq(n, -1);
            continue;
        }
        cr_assert_gt(n, 0);
        cr_assert_eq(strtod(buf, NULL), d, "%s", buf);
        /* JSON's number grammar: no "+" in front, no leading zero, digits after "." */
        cr_assert(buf[0] == '-' || (buf[0] >= '0' && buf[0] <= '9'), "%s", buf);
        const char *dot = strchr(buf, '.');
        cr_assert(dot == NULL || (dot[1] >= '0' && dot[1] <= '9'), "%s", buf);
    }
}
