/* audit_jsonb_text (services/audit/jsonb.h) against the real PostgreSQL:
 * for hand-written edge cases and a few thousand random JSON objects (from
 * a fixed seed), the converter's text is byte for byte what the server
 * prints for `$1::jsonb::text`, and what the server refuses the converter
 * refuses too. Where the server takes an input the converter refuses (the
 * converter may be stricter), both are printed and the test goes on. */
#include "audit/jsonb.h"
#include "json.h"
#include "testenv.h"

#include <criterion/criterion.h>
#include <libpq-fe.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static PGconn *conn;
static audit_jsonb *conv;

static void init(void)
{
    conn = PQconnectdb(cms_test_env("CMS_TEST_PG_URL"));
    cr_assert_eq(PQstatus(conn), CONNECTION_OK, "connect: %s", PQerrorMessage(conn));
    cr_assert_eq(PQsetClientEncoding(conn, "UTF8"), 0, "client_encoding: %s", PQerrorMessage(conn));
    const char *enc = PQparameterStatus(conn, "server_encoding");
    /* in another encoding the server decodes \u escapes otherwise */
    cr_assert(enc != NULL && strcmp(enc, "UTF8") == 0, "server_encoding is %s, not UTF8",
              enc ? enc : "unknown");
    conv = audit_jsonb_new();
    cr_assert_not_null(conv);
}

static void fini(void)
{
    audit_jsonb_free(conv);
    conv = NULL;
    PQfinish(conn);
    conn = NULL;
}

TestSuite(audit_jsonb, .init = init, .fini = fini);

/* ---- the two sides ---- */

/* A string to print in a message: control bytes as \xNN, the rest as is,
 * cut after max bytes (0: never). Malloc'd; leaked on a failed assertion. */
static char *shown(const char *s, size_t len, size_t max)
{
    size_t n = max && len > max ? max : len;
    char *o = malloc(4 * n + 64);
    cr_assert_not_null(o);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f)
            k += (size_t)snprintf(o + k, 5, "\\x%02x", c);
        else
            o[k++] = (char)c;
    }
    if (n < len)
        k += (size_t)snprintf(o + k, 64, "... (%zu bytes)", len);
    o[k] = '\0';
    return o;
}

/* What the server prints for in::jsonb::text: true with the text in *out
 * (malloc'd), false if it refuses the input as data (SQLSTATE class 22,
 * e.g. 22P02 invalid json, 22003 numeric overflow, 22P05 \u0000); any
 * other error fails the test. */
static bool pg_text(const char *in, char **out, size_t *out_len)
{
    const char *params[1] = {in};
    PGresult *r = PQexecParams(conn, "SELECT $1::jsonb::text", 1, NULL, params, NULL, NULL, 0);
    cr_assert_not_null(r, "no result: %s", PQerrorMessage(conn));
    if (PQresultStatus(r) == PGRES_TUPLES_OK) {
        cr_assert_eq(PQntuples(r), 1);
        *out_len = (size_t)PQgetlength(r, 0, 0);
        *out = malloc(*out_len + 1);
        cr_assert_not_null(*out);
        memcpy(*out, PQgetvalue(r, 0, 0), *out_len + 1);
        PQclear(r);
        return true;
    }
    const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    bool data = state != NULL && strncmp(state, "22", 2) == 0;
    if (!data) {
        char *msg = shown(in, strlen(in), 200);
        cr_assert_fail("the server failed otherwise than refusing the input %s: %s %s", msg,
                       state ? state : "(no SQLSTATE)", PQresultErrorMessage(r));
    }
    PQclear(r);
    *out = NULL;
    return false;
}

/* The converter's text: true with *out (valid until its next call). */
static bool our_text(const char *in, const char **out, size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    return audit_jsonb_text(conv, in, strlen(in), out, out_len);
}

static void mismatch(const char *what, const char *in, bool ours_ok, const char *ours,
                     size_t ours_len, bool pg_ok, const char *pg, size_t pg_len)
{
    char *i = shown(in, strlen(in), 0);
    char *o = ours_ok ? shown(ours, ours_len, 0) : NULL;
    char *p = pg_ok ? shown(pg, pg_len, 0) : NULL;
    cr_assert_fail("%s\n  input: %s\n  ours:  %s\n  PG:    %s", what, i, o ? o : "(refused)",
                   p ? p : "(refused)");
}

/* The converter gives exactly the server's text, or refuses as it does.
 * Returns whether the server took the input. */
static bool same_as_pg(const char *in, const char *what)
{
    char *pg;
    size_t pg_len;
    bool pg_ok = pg_text(in, &pg, &pg_len);
    const char *ours;
    size_t ours_len;
    bool ours_ok = our_text(in, &ours, &ours_len);
    if (pg_ok != ours_ok || (pg_ok && (ours_len != pg_len || memcmp(ours, pg, pg_len) != 0)))
        mismatch(what, in, ours_ok, ours, ours_len, pg_ok, pg, pg_len);
    if (ours_ok)
        cr_assert_eq(ours[ours_len], '\0', "the converter's text is not NUL-terminated");
    free(pg);
    return pg_ok;
}

/* same_as_pg for an input meant to be valid: both refusing it proves
 * nothing, so the server must take it. */
static void valid_same_as_pg(const char *in, const char *what)
{
    if (!same_as_pg(in, what)) {
        char *i = shown(in, strlen(in), 0);
        cr_assert_fail("%s: PostgreSQL refuses the input %s", what, i);
    }
}

/* ---- hand-written cases ---- */

static const char *const EDGES[] = {
    /* keys: shorter first, then bytewise (é is 2 bytes, after "zz") */
    "{\"b\": 1, \"a\": 2}",
    "{\"aa\": 1, \"b\": 2}",
    "{\"bb\": 1, \"ab\": 2, \"a\": 3, \"\": 4}",
    "{\"\xc3\xa9\": 1, \"zz\": 2, \"z\": 3, \"\xe2\x82\xac\": 4, \"zzz\": 5}",
    "{\"B\": 1, \"a\": 2, \"_\": 3, \"0\": 4, \"~\": 5}",
    "{\"\\u00e9\": 1, \"e\": 2, \"ee\": 3}",
    "{\"key\": 1, \"kez\": 2, \"kex\": 3, \"ke\": 4, \"k\": 5}",
    /* repeated keys: the last wins, wherever it is */
    "{\"a\": 1, \"a\": 2}",
    "{\"a\": 1, \"b\": 2, \"a\": 3}",
    "{\"a\": 1, \"a\": 2, \"a\": 3}",
    "{\"a\": {\"x\": 1}, \"a\": [2]}",
    "{\"a\": [1], \"b\": 0, \"a\": {\"x\": 1, \"x\": 2}}",
    "{\"\xc3\xa9\": 1, \"\\u00e9\": 2}",
    "{\"k\": 1, \"k\": {\"k\": 2, \"k\": 3}}",
    "{\"/\": 1, \"\\/\": 2}",
    /* nesting */
    "{\"a\": {\"b\": {\"c\": [1, [2, [3, {}]]]}}}",
    "[[], [[]], {}, {\"a\": []}]",
    "[{\"b\": 1, \"a\": 2}, {\"d\": 3, \"c\": 4}]",
    "{\"z\": {\"y\": {\"x\": {\"w\": {\"v\": [null]}}}}, \"a\": [[[[[true]]]]]}",
    /* empty things */
    "{}",
    "[]",
    "{\"\": \"\"}",
    "[{}]",
    "[[]]",
    "\"\"",
    "{ }",
    "[ ]",
    /* whitespace everywhere */
    " \t\n\r{ \t\n\r\"a\" \t\n\r: \t\n\r[ \t\n\r1 \t\n\r, \t\n\r2 \t\n\r] \t\n\r, \"b\":{}} \t\n\r",
    "  1  ",
    "\n\"x\"\n",
    "\r\n[\r\n\"a\"\r\n,\r\n\"b\"\r\n]\r\n",
    "{\"a\":1,\"b\":[2,3],\"c\":{\"d\":null}}",
    /* string escapes */
    "\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"",
    "\"\\u00e9\"",
    "\"\\u00E9\"",
    "\"\\ud83d\\ude00\"",
    "\"\\uD83D\\uDE00\"",
    "\"\\udbff\\udfff\"",
    "\"\\ud800\\udc00\"",
    "\"\\u0001\\u001f\\u007f\"",
    "\"\\u0001\\u0002\\u0003\\u0004\\u0005\\u0006\\u0007\\u0008\\u0009\\u000a\\u000b\\u000c\"",
    "\"\\u000d\\u000e\\u000f\\u0010\\u0011\\u0012\\u0013\\u0014\\u0015\\u0016\\u0017\\u0018\"",
    "\"\\u0019\\u001a\\u001b\\u001c\\u001d\\u001e\\u001f\\u0020\"",
    "\"\\u0022\\u005c\\u002f\\u0041\"",
    "\"\\u20ac\\u4e2d\\uffff\\ufeff\\u0080\\u07ff\\u0800\"",
    "\"a\\nb\\tc\\\\d\\\"e\"",
    "{\"\\u0001\": \"\\u001f\", \"\\n\": \"\\t\", \"\\\"\": \"\\\\\"}",
    /* raw non-ASCII UTF-8, raw DEL */
    "\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xe4\xb8\xad\"",
    "{\"\xf0\x9f\x98\x80\": \"\xc3\x9f\", \"\xc3\x9f\": \"\xf0\x9f\x98\x80\"}",
    ("\"a\x7f"
     "b\""),
    /* numbers */
    "0",
    "-0",
    "-0.0",
    "0.0",
    "1.50",
    "1e2",
    "1E+2",
    "1.5e1",
    "25e-1",
    "1.50e-1",
    "-1.2300e3",
    "123456789012345678901234567890",
    "-123456789012345678901234567890.123456789012345678901234567890",
    "1e-30",
    "0.000",
    "1e308",
    "100e-2",
    "-5",
    "0.1",
    "10",
    "1e0",
    "1e-0",
    "1e+0",
    "1e007",
    "1e-007",
    "12.34e-10",
    "9.999e3",
    "-1e-1",
    "0.00001",
    "1.000000000000000000001",
    "0e10",
    "-0e-5",
    "0.0e2",
    "0.00e1",
    "-0.000e-2",
    "5e-1",
    "50e-1",
    "500e-1",
    "1.2345e2",
    "1.2345e4",
    "1.2345e5",
    "99999999999999999999e-20",
    "1e1000",
    "1e-1000",
    "0e1000",
    "0e-1000",
    "-1e-1000",
    "[1, -1, 1.0, -1.0, 0, -0, 1e1, 1E1, 1e-1, 1E-1]",
    "{\"n\": 1.10, \"m\": -0.0, \"l\": 2E-3}",
    /* literals */
    "true",
    "false",
    "null",
    "[true, false, null]",
    "{\"t\": true, \"f\": false, \"n\": null}",
};

Test(audit_jsonb, edge_cases_print_as_postgresql_prints_them)
{
    for (size_t i = 0; i < sizeof EDGES / sizeof EDGES[0]; i++)
        valid_same_as_pg(EDGES[i], "edge case");
}

/* A buffer that grows. */
typedef struct buf {
    char *p;
    size_t n, cap;
} buf;

static void put(buf *b, const char *s, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1)
            cap *= 2;
        b->p = realloc(b->p, cap);
        cr_assert_not_null(b->p);
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

static void puts_(buf *b, const char *s)
{
    put(b, s, strlen(s));
}

Test(audit_jsonb, the_deepest_nesting_the_converter_takes_prints_as_postgresql_prints_it)
{
    buf b = {0};
    for (int i = 0; i < CMS_JSON_MAX_DEPTH; i++)
        puts_(&b, "[");
    puts_(&b, "1");
    for (int i = 0; i < CMS_JSON_MAX_DEPTH; i++)
        puts_(&b, "]");
    valid_same_as_pg(b.p, "arrays nested CMS_JSON_MAX_DEPTH deep");
    b.n = 0;
    for (int i = 0; i < CMS_JSON_MAX_DEPTH; i++)
        puts_(&b, i % 2 ? "{\"b\": 0, \"a\":" : "{\"a\": [], \"\":");
    puts_(&b, "null");
    for (int i = 0; i < CMS_JSON_MAX_DEPTH; i++)
        puts_(&b, "}");
    valid_same_as_pg(b.p, "objects nested CMS_JSON_MAX_DEPTH deep");
    free(b.p);
}

Test(audit_jsonb, many_keys_given_backwards_print_as_postgresql_prints_them)
{
    buf b = {0};
    puts_(&b, "{");
    for (int i = 300; i >= 0; i--) {
        char m[64];
        snprintf(m, sizeof m, "%s\"k%d\": %d", i == 300 ? "" : ", ", i % 150, i);
        puts_(&b, m);
    }
    puts_(&b, "}");
    valid_same_as_pg(b.p, "300 members, 150 keys each given twice");
    free(b.p);
}

/* ---- refusals ---- */

static const char *const REFUSED[] = {
    /* strings */
    "\"\\u0000\"",
    "{\"a\\u0000\": 1}",
    "\"\\ud800\"",
    "\"\\udc00\"",
    "\"\\ud800x\"",
    "\"\\ud800\\ud800\"",
    "\"\\ud83d\\u0041\"",
    "\"\\ude00\\ud83d\"",
    "\"\\x\"",
    "\"\\u12\"",
    "\"\\u12g4\"",
    "\"\\U00e9\"",
    "\"\\'\"",
    "\"a\tb\"",
    "\"\x01\"",
    "\"abc",
    "'a'",
    /* numbers */
    "1e1001",
    "0e5000",
    "1e-1001",
    "1.0e-1000",
    "1e-16384",
    "1e131072",
    "0e1073741823",
    "01",
    "-01",
    "00",
    "1.",
    ".5",
    "+1",
    "-",
    "1e",
    "1e+",
    "1.e1",
    "0x10",
    "NaN",
    "Infinity",
    "-Infinity",
    /* structure */
    "",
    " ",
    "[",
    "{",
    "[1,]",
    "[,1]",
    "{\"a\": 1,}",
    "{\"a\" 1}",
    "{\"a\": }",
    "{1: 2}",
    "{a: 2}",
    "[1]]",
    "{}{}",
    "1 2",
    "tru",
    "nul",
    "True",
    "\x0c"
    "1",
    "\x0b"
    "1",
};

Test(audit_jsonb, what_postgresql_refuses_the_converter_refuses)
{
    int disagree = 0;
    for (size_t i = 0; i < sizeof REFUSED / sizeof REFUSED[0]; i++) {
        const char *in = REFUSED[i];
        char *pg;
        size_t pg_len;
        bool pg_ok = pg_text(in, &pg, &pg_len);
        const char *ours;
        size_t ours_len;
        bool ours_ok = our_text(in, &ours, &ours_len);
        if (!pg_ok && ours_ok)
            mismatch("PostgreSQL refuses this, the converter does not", in, ours_ok, ours, ours_len,
                     pg_ok, pg, pg_len);
        if (pg_ok && ours_ok && (ours_len != pg_len || memcmp(ours, pg, pg_len) != 0))
            mismatch("both take this, and print it differently", in, ours_ok, ours, ours_len, pg_ok,
                     pg, pg_len);
        if (pg_ok && !ours_ok) {
            /* stricter than the server: said, not failed */
            char *si = shown(in, strlen(in), 0), *sp = shown(pg, pg_len, 60);
            fprintf(stderr,
                    "audit_jsonb: PostgreSQL takes what the converter refuses:\n  input: %s\n"
                    "  ours:  (refused)\n  PG:    %s\n",
                    si, sp);
            free(si);
            free(sp);
            disagree++;
        }
        free(pg);
        /* a refusal leaves nothing behind for the next input */
        cr_assert(our_text("{\"b\": [1.50], \"a\": \"\\u00e9\"}", &ours, &ours_len),
                  "refused a good input after %s", in);
        cr_assert_str_eq(ours, "{\"a\": \"\xc3\xa9\", \"b\": [1.50]}", "after %s", in);
    }
    fprintf(stderr, "audit_jsonb: %d input(s) PostgreSQL takes and the converter refuses\n",
            disagree);
}

Test(audit_jsonb, nesting_beyond_cms_json_max_depth_is_refused)
{
    /* PostgreSQL takes deeper nesting: the converter's limit is its own
     * (jsonb.h), so the server is not asked. */
    buf b = {0};
    for (int i = 0; i <= CMS_JSON_MAX_DEPTH; i++)
        puts_(&b, "[");
    for (int i = 0; i <= CMS_JSON_MAX_DEPTH; i++)
        puts_(&b, "]");
    const char *ours;
    size_t ours_len;
    cr_assert_not(our_text(b.p, &ours, &ours_len), "%d levels taken", CMS_JSON_MAX_DEPTH + 1);
    free(b.p);
}

/* ---- random objects ---- */

static uint64_t rng = 0x5eed0fa0d17c4a1bULL;

/* splitmix64: a fixed sequence, the same on every run */
static uint64_t next(void)
{
    uint64_t z = (rng += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static unsigned below(unsigned n)
{
    return (unsigned)(next() % n);
}

static void gen_ws(buf *b)
{
    static const char *const WS[] = {" ", "\t", "\n", "\r", "  ", " \n "};
    if (below(4) == 0)
        puts_(b, WS[below(sizeof WS / sizeof WS[0])]);
}

/* One piece of a string's body: plain, raw UTF-8, or an escape. */
static void gen_char(buf *b)
{
    static const char *const PIECES[] = {
        "a",
        "b",
        "z",
        "A",
        "Z",
        "0",
        "9",
        "_",
        "-",
        " ",
        "~",
        "\x7f",
        "\xc3\xa9",
        "\xc3\x9f",
        "\xe2\x82\xac",
        "\xe4\xb8\xad",
        "\xf0\x9f\x98\x80",
        "\xef\xbf\xbf",
        "\\\"",
        "\\\\",
        "\\/",
        "\\b",
        "\\f",
        "\\n",
        "\\r",
        "\\t",
        "\\u00e9",
        "\\u00C9",
        "\\u20ac",
        "\\u0041",
        "\\u0001",
        "\\u001f",
        "\\u007f",
        "\\u0080",
        "\\u07ff",
        "\\u0800",
        "\\uffff",
        "\\ud83d\\ude00",
        "\\uDBFF\\uDFFF",
        "\\u0022",
        "\\u005c",
    };
    puts_(b, PIECES[below(sizeof PIECES / sizeof PIECES[0])]);
}

static void gen_string(buf *b, unsigned maxlen)
{
    puts_(b, "\"");
    for (unsigned n = below(maxlen + 1); n > 0; n--)
        gen_char(b);
    puts_(b, "\"");
}

/* Keys: mostly from a small pool, so that keys repeat (some spelled two
 * ways) and sort against others of their length; else random. */
static void gen_key(buf *b)
{
    static const char *const KEYS[] = {
        "\"\"",          "\"a\"",        "\"b\"",       "\"A\"",   "\"aa\"", "\"ab\"",
        "\"ba\"",        "\"\xc3\xa9\"", "\"\\u00e9\"", "\"\\/\"", "\"/\"",  "\"key\"",
        "\"ke\\u0079\"", "\"k\"",        "\"zz\"",      "\"\\n\"",
    };
    if (below(3) != 0)
        puts_(b, KEYS[below(sizeof KEYS / sizeof KEYS[0])]);
    else
        gen_string(b, 5);
}

static void gen_digits(buf *b, unsigned n, bool first_nonzero)
{
    for (unsigned i = 0; i < n; i++) {
        char c = (char)((i == 0 && first_nonzero ? '1' + below(9) : '0' + below(10)));
        put(b, &c, 1);
    }
}

static void gen_zeros(buf *b, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        puts_(b, "0");
}

/* Numbers in every notation JSON has: signs, zeros leading the fraction or
 * trailing either part, long digit strings, exponents of either case and
 * sign with leading zeros. Within numeric's limits as the converter knows
 * them (|exponent| <= 1000, scale <= 1000). */
static void gen_number(buf *b)
{
    if (below(3) == 0)
        puts_(b, "-");
    if (below(3) == 0) {
        puts_(b, "0");
    } else {
        unsigned len = below(8) == 0 ? 1 + below(40) : 1 + below(6);
        gen_digits(b, len, true);
        if (below(4) == 0)
            gen_zeros(b, 1 + below(5));
    }
    if (below(2) == 0) {
        puts_(b, ".");
        if (below(4) == 0) {
            gen_zeros(b, 1 + below(6));
        } else {
            unsigned lead = below(3) == 0 ? below(6) : 0;
            gen_zeros(b, lead);
            unsigned d = below(8) == 0 ? 1 + below(30) : 1 + below(6);
            gen_digits(b, d, false);
            unsigned trail = below(3) == 0 ? 1 + below(4) : 0;
            gen_zeros(b, trail);
        }
    }
    if (below(2) == 0) {
        puts_(b, below(2) ? "e" : "E");
        unsigned sign = below(3);
        puts_(b, sign == 0 ? "" : sign == 1 ? "+" : "-");
        if (below(4) == 0)
            gen_zeros(b, 1 + below(3));
        unsigned e = below(10) == 0 ? below(900) : below(40);
        char m[16];
        snprintf(m, sizeof m, "%u", e);
        puts_(b, m);
    }
}

static void gen_value(buf *b, int depth);

static void gen_object(buf *b, int depth)
{
    puts_(b, "{");
    unsigned n = below(7);
    for (unsigned i = 0; i < n; i++) {
        if (i > 0)
            puts_(b, ",");
        gen_ws(b);
        gen_key(b);
        gen_ws(b);
        puts_(b, ":");
        gen_value(b, depth + 1);
    }
    gen_ws(b);
    puts_(b, "}");
}

static void gen_array(buf *b, int depth)
{
    puts_(b, "[");
    unsigned n = below(6);
    for (unsigned i = 0; i < n; i++) {
        if (i > 0)
            puts_(b, ",");
        gen_value(b, depth + 1);
    }
    gen_ws(b);
    puts_(b, "]");
}

/* A value at depth (the top object's members are at 2): containers down to
 * depth 5, so at most 5 levels of them. */
static void gen_value(buf *b, int depth)
{
    gen_ws(b);
    unsigned kind = below(depth <= 5 ? 10 : 7);
    switch (kind) {
    case 0:
    case 1:
    case 2:
        gen_number(b);
        break;
    case 3:
    case 4:
        gen_string(b, 8);
        break;
    case 5:
        puts_(b, below(2) ? "true" : "false");
        break;
    case 6:
        puts_(b, "null");
        break;
    case 7:
    case 8:
        gen_object(b, depth);
        break;
    default:
        gen_array(b, depth);
    }
    gen_ws(b);
}

Test(audit_jsonb, random_objects_print_as_postgresql_prints_them)
{
    buf b = {0};
    for (int i = 0; i < 3000; i++) {
        b.n = 0;
        gen_ws(&b);
        gen_object(&b, 1);
        gen_ws(&b);
        char what[64];
        snprintf(what, sizeof what, "random object %d", i);
        valid_same_as_pg(b.p, what);
    }
    free(b.p);
}
