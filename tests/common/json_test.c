/* json: the exact text rendered for every field kind of tests/common/proto (proto3
 * implicit presence, proto2 explicit presence, oneofs, repeated fields, maps,
 * nesting), string escaping and UTF-8 repair, the size and depth caps, the
 * choice of an envelope's body, the checks on JSON text, and randomized
 * messages whose rendering must always parse and survive a wire round trip. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cms/v1/envelope.pb-c.h"
#include "json.h"
#include "test_presence.pb-c.h"
#include "test_types.pb-c.h"

#define S(lit) ((char *)(lit)) /* generated structs hold char *, literals are const */

static cms_json_buf g_buf;

static void setup(void)
{
    cms_json_buf_init(&g_buf, 64 * 1024);
}

static void teardown(void)
{
    cms_json_buf_free(&g_buf);
}

TestSuite(json, .init = setup, .fini = teardown);

/* The output parses as one JSON object (jansson also checks the UTF-8). */
static void assert_object(const char *text, size_t len)
{
    json_error_t e;
    json_t *j = json_loadb(text, len, 0, &e);
    cr_assert_not_null(j, "not JSON: %s (%s at %d)", text, e.text, e.position);
    cr_assert(json_is_object(j), "not an object: %s", text);
    json_decref(j);
}

static const char *render(const void *msg)
{
    cms_json_buf_reset(&g_buf);
    cms_json_err err = cms_json_render_message(&g_buf, msg);
    cr_assert_eq(err, CMS_JSON_OK, "render: %s", cms_json_strerror(err));
    cr_assert_eq(strlen(g_buf.data), g_buf.len, "NUL-terminated at len");
    assert_object(g_buf.data, g_buf.len);
    return g_buf.data;
}

#define expect_json(msg, want) cr_assert_str_eq(render(msg), (want))

/* ---- scalars (proto3, implicit presence) ---------------------------- */

Test(json, defaults_are_omitted)
{
    Cms__Test__Scalars s = CMS__TEST__SCALARS__INIT;
    expect_json(&s, "{}");
    Cms__Test__Repeats r = CMS__TEST__REPEATS__INIT;
    expect_json(&r, "{}");
    Cms__Test__Choice c = CMS__TEST__CHOICE__INIT;
    expect_json(&c, "{}");
    Cms__Test__Maps m = CMS__TEST__MAPS__INIT;
    expect_json(&m, "{}");
    /* an empty string that is not the static default is still empty */
    s.f_string = S("");
    s.f_double = -0.0; /* zero for presence, as for the wire encoder */
    expect_json(&s, "{}");
}

Test(json, every_scalar_type)
{
    Cms__Test__Inner in = CMS__TEST__INNER__INIT;
    in.name = S("x");
    uint8_t raw[] = {0x00, 0x01, 0xff};
    Cms__Test__Scalars s = CMS__TEST__SCALARS__INIT;
    s.f_double = 1.5;
    s.f_float = 0.1f;
    s.f_int32 = -7;
    s.f_int64 = INT64_MIN;
    s.f_uint32 = UINT32_MAX;
    s.f_uint64 = UINT64_MAX;
    s.f_sint32 = INT32_MIN;
    s.f_sint64 = -1;
    s.f_fixed32 = 7;
    s.f_fixed64 = 8;
    s.f_sfixed32 = -9;
    s.f_sfixed64 = -10;
    s.f_bool = 1;
    s.f_string = S("hi");
    s.f_bytes.data = raw;
    s.f_bytes.len = sizeof raw;
    s.f_enum = CMS__TEST__COLOR__COLOR_GREEN;
    s.f_inner = &in;
    expect_json(&s,
                "{\"f_double\":1.5,\"f_float\":0.1,\"f_int32\":-7,"
                "\"f_int64\":\"-9223372036854775808\",\"f_uint32\":4294967295,"
                "\"f_uint64\":\"18446744073709551615\",\"f_sint32\":-2147483648,"
                "\"f_sint64\":\"-1\",\"f_fixed32\":7,\"f_fixed64\":\"8\",\"f_sfixed32\":-9,"
                "\"f_sfixed64\":\"-10\",\"f_bool\":true,\"f_string\":\"hi\","
                "\"f_bytes\":\"AAH/\",\"f_enum\":\"COLOR_GREEN\",\"f_inner\":{\"name\":\"x\"}}");
    s.f_int64 = INT64_MAX;
    s.f_uint64 = 1;
    s.f_enum = CMS__TEST__COLOR__COLOR_BLUE; /* negative enum value, by name */
    s.f_inner = NULL;
    s.f_bytes.len = 0;
    cr_assert(strstr(render(&s), "\"f_int64\":\"9223372036854775807\",") != NULL);
    cr_assert(strstr(render(&s), "\"f_uint64\":\"1\",") != NULL);
    cr_assert(strstr(render(&s), "\"f_enum\":\"COLOR_BLUE\"}") != NULL);
    cr_assert(strstr(render(&s), "f_bytes") == NULL);
    cr_assert(strstr(render(&s), "f_inner") == NULL);
}

Test(json, enum_without_a_name_is_a_number)
{
    Cms__Test__Scalars s = CMS__TEST__SCALARS__INIT;
    s.f_enum = (Cms__Test__Color)42;
    expect_json(&s, "{\"f_enum\":42}");
    s.f_enum = (Cms__Test__Color)-42;
    expect_json(&s, "{\"f_enum\":-42}");
}

Test(json, bytes_are_padded_base64)
{
    static const struct {
        const char *in, *out;
    } cases[] = {{"f", "Zg=="},
                 {"fo", "Zm8="},
                 {"foo", "Zm9v"},
                 {"foobar", "Zm9vYmFy"},
                 {"\xfb\xff", "+/8="}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        Cms__Test__Scalars s = CMS__TEST__SCALARS__INIT;
        s.f_bytes.data = (uint8_t *)cases[i].in;
        s.f_bytes.len = strlen(cases[i].in);
        char want[64];
        snprintf(want, sizeof want, "{\"f_bytes\":\"%s\"}", cases[i].out);
        expect_json(&s, want);
    }
}

static const char *render_double(double v)
{
    Cms__Test__Scalars s = CMS__TEST__SCALARS__INIT;
    s.f_double = v;
    const char *out = render(&s);
    static char text[64];
    cr_assert(strncmp(out, "{\"f_double\":", 12) == 0, "%s", out);
    snprintf(text, sizeof text, "%.*s", (int)(strlen(out) - 13), out + 12);
    return text;
}

static const char *render_float(float v)
{
    Cms__Test__Scalars s = CMS__TEST__SCALARS__INIT;
    s.f_float = v;
    const char *out = render(&s);
    static char text[64];
    cr_assert(strncmp(out, "{\"f_float\":", 11) == 0, "%s", out);
    snprintf(text, sizeof text, "%.*s", (int)(strlen(out) - 12), out + 11);
    return text;
}

Test(json, floating_point_is_shortest_round_trip)
{
    cr_assert_str_eq(render_double(0.1), "0.1");
    cr_assert_str_eq(render_double(-2.5), "-2.5");
    cr_assert_str_eq(render_double(1e300), "1e+300");
    cr_assert_str_eq(render_double(123456789012.0), "123456789012");
    cr_assert_str_eq(render_double(1.0 / 3.0), "0.3333333333333333");
    cr_assert_str_eq(render_double(2.0 / 3.0), "0.6666666666666666");
    cr_assert_str_eq(render_double(1e23), "1e+23");
    cr_assert_str_eq(render_double(9007199254740993.0), "9007199254740992");
    cr_assert_str_eq(render_double(0.1 + 0.2), "0.30000000000000004");
    cr_assert_str_eq(render_double(NAN), "\"NaN\"");
    cr_assert_str_eq(render_double(INFINITY), "\"Infinity\"");
    cr_assert_str_eq(render_double(-INFINITY), "\"-Infinity\"");
    cr_assert_str_eq(render_float(0.1f), "0.1");
    cr_assert_str_eq(render_float(3.0f), "3");
    cr_assert_str_eq(render_float(16777216.0f), "16777216");
    cr_assert_str_eq(render_float(1.0f / 3.0f), "0.33333334");
    cr_assert_str_eq(render_float(NAN), "\"NaN\"");
    cr_assert_str_eq(render_float(-INFINITY), "\"-Infinity\"");
    /* a denormal and the extremes still read back exactly */
    const double hard[] = {5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, -1e-7};
    for (size_t i = 0; i < sizeof hard / sizeof hard[0]; i++)
        cr_assert_eq(strtod(render_double(hard[i]), NULL), hard[i], "%.17g", hard[i]);
}

/* ---- strings -------------------------------------------------------- */

static const char *render_string(const char *s)
{
    Cms__Test__Inner in = CMS__TEST__INNER__INIT;
    in.name = (char *)s;
    return render(&in);
}

Test(json, strings_are_escaped)
{
    cr_assert_str_eq(render_string("a\"b\\c/d"), "{\"name\":\"a\\\"b\\\\c/d\"}");
    cr_assert_str_eq(render_string("\b\f\n\r\t"), "{\"name\":\"\\b\\f\\n\\r\\t\"}");
    cr_assert_str_eq(render_string("\x01\x1f\x7f"), "{\"name\":\"\\u0001\\u001f\x7f\"}");
    /* valid UTF-8 passes through: 2, 3 and 4 byte forms and the extremes */
    const char *utf8 =
        "\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xc2\x80 \xef\xbf\xbf \xf4\x8f\xbf\xbf";
    char want[128];
    snprintf(want, sizeof want, "{\"name\":\"%s\"}", utf8);
    cr_assert_str_eq(render_string(utf8), want);
}

/* Plain text is skipped a word at a time: a special byte must be found at
 * any offset within and across words. */
Test(json, escapes_are_found_at_every_offset)
{
    static const struct {
        const char *in, *out;
    } specials[] = {{"\"", "\\\""},
                    {"\\", "\\\\"},
                    {"\n", "\\n"},
                    {"\x01", "\\u0001"},
                    {"\x1f", "\\u001f"},
                    {"\xc3\xa9", "\xc3\xa9"},
                    {"\xff", "\xef\xbf\xbd"},
                    {"\xe2\x82", "\xef\xbf\xbd"}};
    for (size_t k = 0; k < sizeof specials / sizeof specials[0]; k++) {
        for (size_t at = 0; at <= 24; at++) {
            char in[64], want[128];
            snprintf(in, sizeof in, "%.*s%s%.*s", (int)at, "abcdefghijklmnopqrstuvwx",
                     specials[k].in, (int)(24 - at), "ABCDEFGHIJKLMNOPQRSTUVWX");
            snprintf(want, sizeof want, "{\"name\":\"%.*s%s%.*s\"}", (int)at,
                     "abcdefghijklmnopqrstuvwx", specials[k].out, (int)(24 - at),
                     "ABCDEFGHIJKLMNOPQRSTUVWX");
            cr_assert_str_eq(render_string(in), want, "special %zu at %zu", k, at);
        }
    }
}

Test(json, invalid_utf8_becomes_replacement_characters)
{
#define R "\xef\xbf\xbd"
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"\xff", R},
        {"a\x80z", "a" R "z"},
        {"\xc3", R},          /* truncated at the end */
        {"\xe2\x82x", R "x"}, /* truncated 3-byte: one U+FFFD */
        {"\xf0\x9f\x98"
         "A",
         R "A"},                             /* truncated 4-byte */
        {"\xc0\xaf", R R},                   /* overlong '/' */
        {"\xe0\x80\xaf", R R R},             /* overlong 3-byte */
        {"\xed\xa0\x80", R R R},             /* a UTF-16 surrogate */
        {"\xf4\x90\x80\x80", R R R R},       /* above U+10FFFF */
        {"\xf8\x88\x80\x80\x80", R R R R R}, /* 5-byte form */
        {"ok\xc3\xa9\xc3", "ok\xc3\xa9" R},
    };
#undef R
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char want[128];
        snprintf(want, sizeof want, "{\"name\":\"%s\"}", cases[i].out);
        cr_assert_str_eq(render_string(cases[i].in), want, "case %zu", i);
    }
}

/* ---- repeated ------------------------------------------------------- */

Test(json, repeated_fields_are_arrays)
{
    int32_t i32[] = {1, -2, 0};
    int64_t i64[] = {0, INT64_MIN};
    uint64_t u64[] = {UINT64_MAX};
    double d[] = {0.5, -0.0, NAN};
    float f[] = {0.25f};
    protobuf_c_boolean bo[] = {1, 0};
    char *strs[] = {S(""), S("q\"")};
    uint8_t b1[] = {'h', 'i'};
    ProtobufCBinaryData bins[] = {{0, NULL}, {2, b1}};
    Cms__Test__Color en[] = {CMS__TEST__COLOR__COLOR_UNSPECIFIED, CMS__TEST__COLOR__COLOR_RED,
                             (Cms__Test__Color)9};
    Cms__Test__Inner in1 = CMS__TEST__INNER__INIT, in2 = CMS__TEST__INNER__INIT;
    in2.n = 4;
    Cms__Test__Inner *ins[] = {&in1, &in2};
    int32_t s32[] = {-1};
    uint64_t f64[] = {42};

    Cms__Test__Repeats r = CMS__TEST__REPEATS__INIT;
    r.n_r_int32 = 3, r.r_int32 = i32;
    r.n_r_int64 = 2, r.r_int64 = i64;
    r.n_r_uint64 = 1, r.r_uint64 = u64;
    r.n_r_double = 3, r.r_double = d;
    r.n_r_float = 1, r.r_float = f;
    r.n_r_bool = 2, r.r_bool = bo;
    r.n_r_string = 2, r.r_string = strs;
    r.n_r_bytes = 2, r.r_bytes = bins;
    r.n_r_enum = 3, r.r_enum = en;
    r.n_r_inner = 2, r.r_inner = ins;
    r.n_r_sint32 = 1, r.r_sint32 = s32;
    r.n_r_fixed64 = 1, r.r_fixed64 = f64;
    /* elements are rendered even when zero */
    expect_json(&r,
                "{\"r_int32\":[1,-2,0],\"r_int64\":[\"0\",\"-9223372036854775808\"],"
                "\"r_uint64\":[\"18446744073709551615\"],\"r_double\":[0.5,-0,\"NaN\"],"
                "\"r_float\":[0.25],\"r_bool\":[true,false],\"r_string\":[\"\",\"q\\\"\"],"
                "\"r_bytes\":[\"\",\"aGk=\"],\"r_enum\":[\"COLOR_UNSPECIFIED\",\"COLOR_RED\",9],"
                "\"r_inner\":[{},{\"n\":4}],\"r_sint32\":[-1],\"r_fixed64\":[\"42\"]}");
}

/* ---- oneof ---------------------------------------------------------- */

Test(json, oneof_renders_only_the_set_member_even_when_zero)
{
    Cms__Test__Choice c = CMS__TEST__CHOICE__INIT;
    c.label = S("L");
    c.pick_case = CMS__TEST__CHOICE__PICK_C_INT32;
    c.c_int32 = 0;
    expect_json(&c, "{\"label\":\"L\",\"c_int32\":0}");
    c.label = S("");
    c.pick_case = CMS__TEST__CHOICE__PICK_C_BOOL;
    c.c_bool = 0;
    expect_json(&c, "{\"c_bool\":false}");
    c.pick_case = CMS__TEST__CHOICE__PICK_C_ENUM;
    c.c_enum = CMS__TEST__COLOR__COLOR_UNSPECIFIED;
    expect_json(&c, "{\"c_enum\":\"COLOR_UNSPECIFIED\"}");
    c.pick_case = CMS__TEST__CHOICE__PICK_C_INT64;
    c.c_int64 = 0;
    expect_json(&c, "{\"c_int64\":\"0\"}");
    c.pick_case = CMS__TEST__CHOICE__PICK_C_DOUBLE;
    c.c_double = 0;
    expect_json(&c, "{\"c_double\":0}");
    c.pick_case = CMS__TEST__CHOICE__PICK_C_BYTES;
    c.c_bytes.len = 0;
    c.c_bytes.data = NULL;
    expect_json(&c, "{\"c_bytes\":\"\"}");
    char empty[1] = ""; /* an empty string as unpack makes it, not the static default */
    c.pick_case = CMS__TEST__CHOICE__PICK_C_STRING;
    c.c_string = empty;
    expect_json(&c, "{\"c_string\":\"\"}");
    Cms__Test__Inner in = CMS__TEST__INNER__INIT;
    c.pick_case = CMS__TEST__CHOICE__PICK_C_INNER;
    c.c_inner = &in;
    expect_json(&c, "{\"c_inner\":{}}");
    c.c_inner = NULL; /* set but NULL: not on the wire, not rendered */
    expect_json(&c, "{}");
}

/* ---- explicit presence (proto2 optional / required / defaults) ------ */

Test(json, explicit_presence_renders_set_defaults)
{
    Cms__Test__Presence p = CMS__TEST__PRESENCE__INIT;
    expect_json(&p, "{\"r_id\":0}"); /* required: always */
    char empty[1] = "";
    char anon[] = "anon";
    p.has_o_int32 = 1;
    p.has_o_bool = 1;
    p.has_o_enum = 1;
    p.has_o_double = 1;
    p.has_o_bytes = 1;
    p.has_o_int64 = 1;
    p.has_o_uint32 = 1;
    p.has_o_five = 1;
    p.o_string = empty;
    p.o_named = anon; /* equal to the default, but set */
    p.r_id = 12;
    expect_json(&p, "{\"o_int32\":0,\"o_string\":\"\",\"o_bool\":false,\"o_enum\":\"SHADE_LIGHT\","
                    "\"o_double\":0,\"o_bytes\":\"\",\"o_int64\":\"0\",\"o_uint32\":0,"
                    "\"o_named\":\"anon\",\"o_five\":5,\"r_id\":12}");

    Cms__Test__Presence q = CMS__TEST__PRESENCE__INIT; /* o_named points at its default */
    Cms__Test__Presence next = CMS__TEST__PRESENCE__INIT;
    next.r_id = -1;
    q.o_next = &next;
    q.has_o_enum = 1;
    q.o_enum = (Cms__Test__Shade)7;
    q.o_five = 6; /* has_o_five unset: not rendered whatever the value */
    expect_json(&q, "{\"o_enum\":7,\"r_id\":0,\"o_next\":{\"r_id\":-1}}");
}

/* ---- maps ----------------------------------------------------------- */

Test(json, maps_are_objects)
{
    Cms__Test__Maps__LabelsEntry l1 = CMS__TEST__MAPS__LABELS_ENTRY__INIT,
                                 l2 = CMS__TEST__MAPS__LABELS_ENTRY__INIT,
                                 l3 = CMS__TEST__MAPS__LABELS_ENTRY__INIT;
    l1.key = S("a");
    l1.value = 1;
    l2.key = S("b\"");
    l3.key = S(""); /* zero key and value: still an entry */
    Cms__Test__Maps__LabelsEntry *labels[] = {&l1, &l2, &l3};

    Cms__Test__Maps__ByIdEntry b1 = CMS__TEST__MAPS__BY_ID_ENTRY__INIT;
    b1.key = -5;
    b1.value = S("x");
    Cms__Test__Maps__ByIdEntry *by_id[] = {&b1};

    Cms__Test__Inner in = CMS__TEST__INNER__INIT;
    in.name = S("n");
    Cms__Test__Maps__InnersEntry i1 = CMS__TEST__MAPS__INNERS_ENTRY__INIT,
                                 i2 = CMS__TEST__MAPS__INNERS_ENTRY__INIT;
    i1.key = S("k");
    i1.value = &in;
    i2.key = S("none");
    Cms__Test__Maps__InnersEntry *inners[] = {&i1, &i2};

    Cms__Test__Maps__FlagsEntry f1 = CMS__TEST__MAPS__FLAGS_ENTRY__INIT,
                                f2 = CMS__TEST__MAPS__FLAGS_ENTRY__INIT;
    f1.key = 1;
    f1.value = CMS__TEST__COLOR__COLOR_RED;
    Cms__Test__Maps__FlagsEntry *flags[] = {&f1, &f2};

    Cms__Test__Maps m = CMS__TEST__MAPS__INIT;
    m.n_labels = 3, m.labels = labels;
    m.n_by_id = 1, m.by_id = by_id;
    m.n_inners = 2, m.inners = inners;
    m.n_flags = 2, m.flags = flags;
    expect_json(&m, "{\"labels\":{\"a\":1,\"b\\\"\":0,\"\":0},\"by_id\":{\"-5\":\"x\"},"
                    "\"inners\":{\"k\":{\"name\":\"n\"},\"none\":{}},"
                    "\"flags\":{\"true\":\"COLOR_RED\",\"false\":\"COLOR_UNSPECIFIED\"}}");
}

/* ---- nesting -------------------------------------------------------- */

/* A chain of n Node objects through `child`. */
static Cms__Test__Node *chain(Cms__Test__Node *nodes, int n)
{
    for (int i = 0; i < n; i++) {
        cms__test__node__init(&nodes[i]);
        nodes[i].child = i + 1 < n ? &nodes[i + 1] : NULL;
    }
    return &nodes[0];
}

Test(json, nesting_is_capped)
{
    static Cms__Test__Node nodes[2000];
    /* 32 objects deep is the most */
    render(chain(nodes, CMS_JSON_MAX_DEPTH));
    cms_json_buf_reset(&g_buf);
    cr_assert_eq(cms_json_render_message(&g_buf, &chain(nodes, CMS_JSON_MAX_DEPTH + 1)->base),
                 CMS_JSON_EINVAL);
    cr_assert_eq(g_buf.len, 0);
    /* far deeper input is refused without running down the stack */
    cr_assert_eq(cms_json_render_message(&g_buf, &chain(nodes, 2000)->base), CMS_JSON_EINVAL);

    /* arrays count too: via `children`, k levels are 1 + 2k containers */
    Cms__Test__Node *ptrs[16];
    for (int k = 15; k <= 16; k++) {
        for (int i = 0; i <= k; i++) {
            cms__test__node__init(&nodes[i]);
            if (i < k) {
                ptrs[i] = &nodes[i + 1];
                nodes[i].n_children = 1;
                nodes[i].children = &ptrs[i];
            }
        }
        cms_json_buf_reset(&g_buf);
        cms_json_err err = cms_json_render_message(&g_buf, &nodes[0].base);
        cr_assert_eq(err, k == 15 ? CMS_JSON_OK : CMS_JSON_EINVAL, "k=%d", k);
        if (err == CMS_JSON_OK)
            assert_object(g_buf.data, g_buf.len);
    }
}

/* ---- the body of an envelope ---------------------------------------- */

Test(json, render_body_picks_the_set_body)
{
    char *tags[] = {S("a"), S("b")};
    Cms__Test__Inner owner = CMS__TEST__INNER__INIT;
    owner.name = S("o");
    owner.n = 3;
    Cms__Test__BodyCreated created = CMS__TEST__BODY_CREATED__INIT;
    created.title = S("Lease");
    created.amount_cents = 125000;
    created.color = CMS__TEST__COLOR__COLOR_RED;
    created.n_tags = 2;
    created.tags = tags;
    created.owner = &owner;
    Cms__Test__Envelope env = CMS__TEST__ENVELOPE__INIT;
    env.event_id = S("0190c3a0-0000-7000-8000-000000000000");
    env.event_type = S("contract.created");
    env.occurred_at_us = 1700000000000000;
    env.details_json = S("{\"ignored\":true}");
    env.body_case = CMS__TEST__ENVELOPE__BODY_CREATED;
    env.created = &created;

    cr_assert_eq(cms_json_render_body(&g_buf, &env.base, 16), CMS_JSON_OK);
    cr_assert_str_eq(g_buf.data, "{\"title\":\"Lease\",\"amount_cents\":\"125000\","
                                 "\"color\":\"COLOR_RED\",\"tags\":[\"a\",\"b\"],"
                                 "\"owner\":{\"name\":\"o\",\"n\":3}}");

    Cms__Test__BodyClosed closed = CMS__TEST__BODY_CLOSED__INIT;
    closed.reason = S("done");
    env.body_case = CMS__TEST__ENVELOPE__BODY_CLOSED;
    env.closed = &closed;
    cms_json_buf_reset(&g_buf);
    cr_assert_eq(cms_json_render_body(&g_buf, &env.base, 16), CMS_JSON_OK);
    cr_assert_str_eq(g_buf.data, "{\"reason\":\"done\"}");

    /* a body with nothing set is still a body */
    Cms__Test__BodyClosed blank = CMS__TEST__BODY_CLOSED__INIT;
    env.closed = &blank;
    cms_json_buf_reset(&g_buf);
    cr_assert_eq(cms_json_render_body(&g_buf, &env.base, 16), CMS_JSON_OK);
    cr_assert_str_eq(g_buf.data, "{}");

    /* first_body_field is honoured */
    cms_json_buf_reset(&g_buf);
    cr_assert_eq(cms_json_render_body(&g_buf, &env.base, 18), CMS_JSON_EINVAL);
    cr_assert_eq(g_buf.len, 0);
}

Test(json, render_body_without_a_body_is_einval)
{
    Cms__Test__Envelope env = CMS__TEST__ENVELOPE__INIT;
    env.event_id = S("x");
    cr_assert_eq(cms_json_render_body(&g_buf, &env.base, 16), CMS_JSON_EINVAL);
    env.body_case = CMS__TEST__ENVELOPE__BODY_CREATED; /* case set, pointer NULL */
    env.created = NULL;
    cr_assert_eq(cms_json_render_body(&g_buf, &env.base, 16), CMS_JSON_EINVAL);
    /* the real envelope has no typed bodies yet: always the fallback */
    Cms__V1__Envelope v1 = CMS__V1__ENVELOPE__INIT;
    v1.details_json = S("{}");
    cr_assert_eq(cms_json_render_body(&g_buf, &v1.base, 16), CMS_JSON_EINVAL);
    cr_assert_eq(g_buf.len, 0);
    cr_assert_eq(cms_json_render_message(&g_buf, NULL), CMS_JSON_EINVAL);
    cr_assert_eq(cms_json_render_body(&g_buf, NULL, 16), CMS_JSON_EINVAL);
}

/* ---- the buffer ----------------------------------------------------- */

Test(json, output_appends_and_errors_roll_back)
{
    Cms__Test__Inner in = CMS__TEST__INNER__INIT;
    in.n = 1;
    cr_assert_eq(cms_json_render_message(&g_buf, &in.base), CMS_JSON_OK);
    cr_assert_eq(cms_json_render_message(&g_buf, &in.base), CMS_JSON_OK);
    cr_assert_str_eq(g_buf.data, "{\"n\":1}{\"n\":1}");
    static Cms__Test__Node nodes[40];
    cr_assert_eq(cms_json_render_message(&g_buf, &chain(nodes, 40)->base), CMS_JSON_EINVAL);
    cr_assert_str_eq(g_buf.data, "{\"n\":1}{\"n\":1}");
    cr_assert_eq(g_buf.len, 14);
    cms_json_buf_reset(&g_buf);
    cr_assert_eq(g_buf.len, 0);
    cr_assert_str_eq(g_buf.data, "");
}

Test(json, output_over_max_is_etoobig)
{
    Cms__Test__Inner in = CMS__TEST__INNER__INIT;
    in.name = S("0123456789");
    const size_t need = strlen("{\"name\":\"0123456789\"}");
    cms_json_buf b;
    /* exactly max fits; one byte less does not, and leaves nothing */
    cms_json_buf_init(&b, need);
    cr_assert_eq(cms_json_render_message(&b, &in.base), CMS_JSON_OK);
    cr_assert_eq(b.len, need);
    cr_assert_leq(b.cap, need + 1);
    cr_assert_eq(cms_json_render_message(&b, &in.base), CMS_JSON_ETOOBIG);
    cr_assert_eq(b.len, need);
    cms_json_buf_free(&b);
    cms_json_buf_init(&b, need - 1);
    cr_assert_eq(cms_json_render_message(&b, &in.base), CMS_JSON_ETOOBIG);
    cr_assert_eq(b.len, 0);
    cms_json_buf_free(&b);
    cms_json_buf_free(&b); /* idempotent */
    cms_json_buf_free(NULL);

    /* big values grow the buffer past several reallocations, up to max */
    size_t n = 300000;
    uint8_t *big = malloc(n);
    cr_assert_not_null(big);
    memset(big, 0xab, n);
    Cms__Test__Scalars s = CMS__TEST__SCALARS__INIT;
    s.f_bytes.data = big;
    s.f_bytes.len = n;
    cms_json_buf_init(&b, 1 << 20);
    cr_assert_eq(cms_json_render_message(&b, &s.base), CMS_JSON_OK);
    cr_assert_eq(b.len, strlen("{\"f_bytes\":\"\"}") + 400000);
    assert_object(b.data, b.len);
    cms_json_buf_free(&b);
    cms_json_buf_init(&b, 64 * 1024);
    cr_assert_eq(cms_json_render_message(&b, &s.base), CMS_JSON_ETOOBIG);
    cr_assert_eq(b.len, 0);
    cr_assert_leq(b.cap, 64 * 1024 + 1);
    s.f_bytes.len = 0;
    s.f_string = (char *)big; /* a long string: stopped at max too */
    big[n - 1] = '\0';
    cr_assert_eq(cms_json_render_message(&b, &s.base), CMS_JSON_ETOOBIG);
    cr_assert_eq(b.len, 0);
    cms_json_buf_free(&b);
    free(big);
}

Test(json, strerror_names_every_error)
{
    cr_assert_str_eq(cms_json_strerror(CMS_JSON_OK), "ok");
    cr_assert_str_neq(cms_json_strerror(CMS_JSON_ENOMEM), "unknown error");
    cr_assert_str_neq(cms_json_strerror(CMS_JSON_ETOOBIG), "unknown error");
    cr_assert_str_neq(cms_json_strerror(CMS_JSON_EINVAL), "unknown error");
    cr_assert_str_eq(cms_json_strerror((cms_json_err)99), "unknown error");
}

/* ---- check_object --------------------------------------------------- */

static cms_json_err check(const char *text)
{
    return cms_json_check_object(&g_buf, text, strlen(text));
}

Test(json, check_object_accepts_objects_unchanged)
{
    static const char *ok[] = {
        "{}",
        " \n{\"a\" : [1, 2.5e3, {\"b\": null}], \"c\": \"\\u00e9\\ud83d\\ude00\"}\t",
        "{\"big\": 123456789012345678901234567890, \"neg\": -0}",
        "{\"s\": \"\xc3\xa9\", \"t\": true, \"f\": false}",
        "{\"x\": \"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[{{{{{{{{{{{{\"}",
        "{\"esc\": \"\\\"[\\\\\"}",
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        cms_json_buf_reset(&g_buf);
        cr_assert_eq(check(ok[i]), CMS_JSON_OK, "%s", ok[i]);
        cr_assert_str_eq(g_buf.data, ok[i]);
    }
    /* len bounds the text: what follows is not read */
    const char *more = "{\"a\":1}garbage";
    cms_json_buf_reset(&g_buf);
    cr_assert_eq(cms_json_check_object(&g_buf, more, 7), CMS_JSON_OK);
    cr_assert_str_eq(g_buf.data, "{\"a\":1}");
    /* appends */
    cr_assert_eq(check("{}"), CMS_JSON_OK);
    cr_assert_str_eq(g_buf.data, "{\"a\":1}{}");
}

Test(json, check_object_rejects_everything_else)
{
    static const char *bad[] = {
        "[]",
        "[{}]",
        "\"s\"",
        "42",
        "null",
        "true",
        "",
        "   ",
        "{",
        "{\"a\":}",
        "{'a':1}",
        "{\"a\":1,}",
        "{\"a\":1} x",
        "{\"a\":1}{}",
        "{\"a\":\"\\u0000\"}",
        "{\"\\u0000\":1}",
        "{\"a\":\"x\\u0000y\"}",
        "{\"a\":\"\xff\"}",
        "{\"a\":\"\xed\xa0\x80\"}",
        "{\"a\":\"\\ud800\"}",
        "{\"a\":\"\\udc00x\"}",
        "{\"a\":\"\x01\"}",
        "{\"a\":1,\"a\":2}",
        "{\"o\":{\"k\":1,\"k\":1}}",
        "{\"a\":NaN}",
        "{\"a\":1e400}",
        "\xef\xbb\xbf{}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cr_assert_eq(check(bad[i]), CMS_JSON_EINVAL, "accepted %s", bad[i]);
        cr_assert_eq(g_buf.len, 0);
    }
    /* a raw NUL inside and after the object */
    const char nul_in[] = "{\"a\":\"x\0y\"}";
    cr_assert_eq(cms_json_check_object(&g_buf, nul_in, sizeof nul_in - 1), CMS_JSON_EINVAL);
    const char nul_after[] = "{}\0";
    cr_assert_eq(cms_json_check_object(&g_buf, nul_after, sizeof nul_after - 1), CMS_JSON_EINVAL);
    /* between tokens, where the scanner hands over to jansson (a key with
     * an escape), which let it through (a fuzzing find) */
    const char nul_between[] = "{\"a\\b\": 0\0, \"c\": 1}";
    cr_assert_eq(cms_json_check_object(&g_buf, nul_between, sizeof nul_between - 1),
                 CMS_JSON_EINVAL, "a raw NUL between tokens");
    cr_assert_eq(cms_json_check_object_reference(&g_buf, nul_between, sizeof nul_between - 1),
                 CMS_JSON_EINVAL, "the reference path too");
    cr_assert_eq(cms_json_check_object(&g_buf, NULL, 0), CMS_JSON_EINVAL);
    cr_assert_eq(cms_json_check_object(NULL, "{}", 2), CMS_JSON_EINVAL);
    cr_assert_eq(g_buf.len, 0);
}

/* {"a":[[...]]} with the object at level 1 and depth levels in all. */
static char *nested(int depth)
{
    size_t n = (size_t)depth * 2 + 8;
    char *s = malloc(n);
    cr_assert_not_null(s);
    size_t o = 0;
    o += (size_t)snprintf(s, n, "{\"a\":");
    for (int i = 1; i < depth; i++)
        s[o++] = '[';
    for (int i = 1; i < depth; i++)
        s[o++] = ']';
    s[o++] = '}';
    s[o] = '\0';
    return s;
}

Test(json, check_object_caps_depth_and_size)
{
    char *s32 = nested(CMS_JSON_MAX_DEPTH), *s33 = nested(CMS_JSON_MAX_DEPTH + 1),
         *deep = nested(100000);
    cr_assert_eq(check(s32), CMS_JSON_OK);
    cms_json_buf_reset(&g_buf);
    cr_assert_eq(check(s33), CMS_JSON_EINVAL);
    cr_assert_eq(check(deep), CMS_JSON_ETOOBIG); /* 200 KB: over 64 KiB first */
    cms_json_buf b;
    cms_json_buf_init(&b, 1 << 20);
    cr_assert_eq(cms_json_check_object(&b, deep, strlen(deep)), CMS_JSON_EINVAL);
    cms_json_buf_free(&b);
    free(s32);
    free(s33);
    free(deep);

    const char *obj = "{\"a\":\"0123456789\"}";
    size_t n = strlen(obj);
    cms_json_buf_init(&b, n);
    cr_assert_eq(cms_json_check_object(&b, obj, n), CMS_JSON_OK);
    cr_assert_eq(cms_json_check_object(&b, "{}", 2), CMS_JSON_ETOOBIG); /* the total is capped */
    cr_assert_eq(b.len, n);
    cms_json_buf_free(&b);
    cms_json_buf_init(&b, n - 1);
    cr_assert_eq(cms_json_check_object(&b, obj, n), CMS_JSON_ETOOBIG);
    cr_assert_eq(b.len, 0);
    cms_json_buf_free(&b);
}

/* ---- randomized ----------------------------------------------------- */

/* xorshift64*: reproducible; CMS_TEST_SEED picks another sequence. */
static uint64_t g_rng;

static void rng_seed(void)
{
    const char *s = getenv("CMS_TEST_SEED");
    g_rng = s ? strtoull(s, NULL, 0) : 0x9E3779B97F4A7C15ull;
    if (g_rng == 0)
        g_rng = 1;
}

static uint64_t rnd(void)
{
    g_rng ^= g_rng >> 12;
    g_rng ^= g_rng << 25;
    g_rng ^= g_rng >> 27;
    return g_rng * 0x2545F4914F6CDD1Dull;
}

static uint64_t rnd_below(uint64_t n)
{
    return rnd() % n;
}

/* Every allocation of one random message, freed together. */
typedef struct arena {
    void **p;
    size_t n, cap;
} arena;

static void *arena_alloc(arena *a, size_t size)
{
    if (a->n == a->cap) {
        a->cap = a->cap ? a->cap * 2 : 64;
        a->p = realloc(a->p, a->cap * sizeof *a->p);
        cr_assert_not_null(a->p);
    }
    void *m = calloc(1, size ? size : 1);
    cr_assert_not_null(m);
    a->p[a->n++] = m;
    return m;
}

static void arena_free(arena *a)
{
    for (size_t i = 0; i < a->n; i++)
        free(a->p[i]);
    free(a->p);
    a->p = NULL;
    a->n = a->cap = 0;
}

static uint64_t rnd_int(void)
{
    static const uint64_t special[] = {
        0,          1,          UINT64_MAX,         0x7fffffff,
        0x80000000, 0xffffffff, 0x7fffffffffffffff, 0x8000000000000000};
    switch (rnd_below(3)) {
    case 0:
        return special[rnd_below(sizeof special / sizeof special[0])];
    case 1:
        return rnd_below(1000);
    default:
        return rnd();
    }
}

static double rnd_double(void)
{
    static const double special[] = {0.0, -0.0, 0.1, -1.5, 1e300, 5e-324, NAN, INFINITY, -INFINITY};
    if (rnd_below(2))
        return special[rnd_below(sizeof special / sizeof special[0])];
    uint64_t bits = rnd();
    double d;
    memcpy(&d, &bits, sizeof d);
    return d;
}

/* Random text: ASCII, valid UTF-8 of any length, or arbitrary bytes (no NUL). */
static char *rnd_string(arena *a)
{
    size_t n = rnd_below(24);
    char *s = arena_alloc(a, n * 4 + 1);
    size_t o = 0;
    int mode = (int)rnd_below(3);
    for (size_t i = 0; i < n; i++) {
        if (mode == 0) {
            s[o++] = (char)(1 + rnd_below(127));
        } else if (mode == 1) {
            uint32_t cp;
            do
                cp = (uint32_t)(1 + rnd_below(0x10FFFF));
            while (cp >= 0xD800 && cp <= 0xDFFF);
            if (rnd_below(2))
                cp = (uint32_t)(1 + rnd_below(0x7ff));
            if (cp < 0x80) {
                s[o++] = (char)cp;
            } else if (cp < 0x800) {
                s[o++] = (char)(0xC0 | cp >> 6);
                s[o++] = (char)(0x80 | (cp & 0x3F));
            } else if (cp < 0x10000) {
                s[o++] = (char)(0xE0 | cp >> 12);
                s[o++] = (char)(0x80 | ((cp >> 6) & 0x3F));
                s[o++] = (char)(0x80 | (cp & 0x3F));
            } else {
                s[o++] = (char)(0xF0 | cp >> 18);
                s[o++] = (char)(0x80 | ((cp >> 12) & 0x3F));
                s[o++] = (char)(0x80 | ((cp >> 6) & 0x3F));
                s[o++] = (char)(0x80 | (cp & 0x3F));
            }
        } else {
            s[o++] = (char)(1 + rnd_below(255));
        }
    }
    s[o] = '\0';
    return s;
}

static void fill_message(arena *a, ProtobufCMessage *m, int depth);

/* One random value of field f at p; an element of a repeated message field
 * is never NULL. */
static void fill_value(arena *a, const ProtobufCFieldDescriptor *f, void *p, int depth,
                       bool element)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32: {
        uint32_t v = (uint32_t)rnd_int();
        memcpy(p, &v, sizeof v);
        break;
    }
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64: {
        uint64_t v = rnd_int();
        memcpy(p, &v, sizeof v);
        break;
    }
    case PROTOBUF_C_TYPE_FLOAT: {
        float v = (float)rnd_double();
        memcpy(p, &v, sizeof v);
        break;
    }
    case PROTOBUF_C_TYPE_DOUBLE: {
        double v = rnd_double();
        memcpy(p, &v, sizeof v);
        break;
    }
    case PROTOBUF_C_TYPE_BOOL: {
        protobuf_c_boolean v = (protobuf_c_boolean)rnd_below(2);
        memcpy(p, &v, sizeof v);
        break;
    }
    case PROTOBUF_C_TYPE_ENUM: {
        const ProtobufCEnumDescriptor *ed = f->descriptor;
        int32_t v = ed->values[rnd_below(ed->n_values)].value;
        if (rnd_below(8) == 0)
            v = (int32_t)rnd_int();
        memcpy(p, &v, sizeof v);
        break;
    }
    case PROTOBUF_C_TYPE_STRING: {
        char *s = rnd_string(a);
        memcpy(p, &s, sizeof s);
        break;
    }
    case PROTOBUF_C_TYPE_BYTES: {
        ProtobufCBinaryData v = {rnd_below(40), NULL};
        v.data = arena_alloc(a, v.len);
        for (size_t i = 0; i < v.len; i++)
            v.data[i] = (uint8_t)rnd();
        memcpy(p, &v, sizeof v);
        break;
    }
    case PROTOBUF_C_TYPE_MESSAGE: {
        ProtobufCMessage *sub = NULL;
        if (element || (depth < 5 && rnd_below(4) != 0)) {
            const ProtobufCMessageDescriptor *d = f->descriptor;
            sub = arena_alloc(a, d->sizeof_message);
            d->message_init(sub);
            if (depth < 5)
                fill_message(a, sub, depth + 1);
        }
        memcpy(p, &sub, sizeof sub);
        break;
    }
    }
}

static size_t elt_size(ProtobufCType t)
{
    switch (t) {
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
    case PROTOBUF_C_TYPE_DOUBLE:
        return 8;
    case PROTOBUF_C_TYPE_STRING:
    case PROTOBUF_C_TYPE_MESSAGE:
        return sizeof(void *);
    case PROTOBUF_C_TYPE_BYTES:
        return sizeof(ProtobufCBinaryData);
    default:
        return 4;
    }
}

/* Fills any message from its descriptor: each field left unset, zero, or random. */
static void fill_message(arena *a, ProtobufCMessage *m, int depth)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    char *base = (char *)m;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        void *member = base + f->offset, *q = base + f->quantifier_offset;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = depth < 5 ? rnd_below(4) : 0;
            char *arr = n ? arena_alloc(a, n * elt_size(f->type)) : NULL;
            for (size_t k = 0; k < n; k++)
                fill_value(a, f, arr + k * elt_size(f->type), depth, true);
            memcpy(q, &n, sizeof n);
            memcpy(member, &arr, sizeof arr);
        } else if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
            if (rnd_below(3) == 0) { /* a later member may overwrite an earlier one */
                uint32_t id = f->id;
                memcpy(q, &id, sizeof id);
                fill_value(a, f, member, depth, false);
            }
        } else if (f->label == PROTOBUF_C_LABEL_OPTIONAL) {
            if (rnd_below(2)) {
                protobuf_c_boolean has = 1;
                if (f->type != PROTOBUF_C_TYPE_STRING && f->type != PROTOBUF_C_TYPE_MESSAGE)
                    memcpy(q, &has, sizeof has);
                fill_value(a, f, member, depth, false);
            }
        } else if (rnd_below(4) != 0) { /* NONE or REQUIRED; else left at its default */
            fill_value(a, f, member, depth, false);
        }
    }
}

/* Renders m, checks it parses, and returns a copy of the text. */
static char *render_copy(const ProtobufCMessage *m, cms_json_buf *b)
{
    cms_json_buf_reset(b);
    cms_json_err err = cms_json_render_message(b, m);
    cr_assert_eq(err, CMS_JSON_OK, "%s", cms_json_strerror(err));
    assert_object(b->data, b->len);
    return strdup(b->data);
}

Test(json, random_messages_render_to_valid_json)
{
    rng_seed();
    cms_json_buf b;
    cms_json_buf_init(&b, 4 << 20);
    size_t total = 0;
    for (int i = 0; i < 1000; i++) {
        arena a = {0};
        Cms__Test__Envelope *env = arena_alloc(&a, sizeof *env);
        cms__test__envelope__init(env);
        fill_message(&a, &env->base, 0);

        char *direct = render_copy(&env->base, &b);
        total += strlen(direct);
        /* the body, when there is one, is the same text as inside the whole */
        cms_json_buf_reset(&b);
        cms_json_err err = cms_json_render_body(&b, &env->base, 16);
        if (err == CMS_JSON_OK) {
            assert_object(b.data, b.len);
            cr_assert(strstr(direct, b.data) != NULL);
        } else {
            cr_assert_eq(err, CMS_JSON_EINVAL);
        }

        /* a wire round trip renders the same text: the JSON shows what is sent */
        size_t len = protobuf_c_message_get_packed_size(&env->base);
        uint8_t *wire = malloc(len ? len : 1);
        cr_assert_not_null(wire);
        cr_assert_eq(protobuf_c_message_pack(&env->base, wire), len);
        ProtobufCMessage *back =
            protobuf_c_message_unpack(&cms__test__envelope__descriptor, NULL, len, wire);
        cr_assert_not_null(back, "unpack failed at iteration %d", i);
        char *again = render_copy(back, &b);
        cr_assert_str_eq(again, direct, "iteration %d", i);
        free(again);
        protobuf_c_message_free_unpacked(back, NULL);
        free(wire);
        free(direct);
        arena_free(&a);
    }
    cr_assert_gt(total, 100000, "random messages too small to mean much: %zu bytes", total);
    cms_json_buf_free(&b);
}

Test(json, random_strings_survive_or_are_repaired)
{
    rng_seed();
    for (int i = 0; i < 1000; i++) {
        arena a = {0};
        char *s = rnd_string(&a);
        Cms__Test__Inner in = CMS__TEST__INNER__INIT;
        in.name = s;
        const char *out = render(&in);
        json_t *j = json_loads(out, 0, NULL);
        cr_assert_not_null(j);
        const char *got = json_string_value(json_object_get(j, "name"));
        json_t *ref = json_string(s); /* jansson's own UTF-8 check: NULL when invalid */
        if (s[0] == '\0') {
            cr_assert_null(got);
        } else if (ref != NULL) {
            cr_assert_str_eq(got, s, "valid UTF-8 must come back byte for byte");
        } else {
            cr_assert_not_null(got);
            cr_assert(strstr(got, "\xef\xbf\xbd") != NULL, "invalid input without U+FFFD");
        }
        json_decref(ref);
        json_decref(j);
        arena_free(&a);
    }
}

/* The allocation-free scanner of check_object against the jansson path:
 * the same verdict for crafted edge cases and for thousands of mutations
 * of valid documents. */
static void same_verdict(const char *text, size_t len)
{
    cms_json_buf a, b;
    cms_json_buf_init(&a, 1 << 16);
    cms_json_buf_init(&b, 1 << 16);
    cms_json_err fast = cms_json_check_object(&a, text, len);
    cms_json_err ref = cms_json_check_object_reference(&b, text, len);
    cr_assert_eq(fast, ref, "verdicts differ (fast %d, reference %d) on [%.*s]", fast, ref,
                 (int)len, text);
    if (fast == CMS_JSON_OK)
        cr_assert(a.len == len && memcmp(a.data, text, len) == 0);
    cms_json_buf_free(&a);
    cms_json_buf_free(&b);
}

Test(json, check_object_fast_path_agrees_with_the_reference)
{
    static const char *const cases[] = {"{}",
                                        " { } ",
                                        "{\"a\":1}",
                                        "{\"a\":1,\"a\":2}",
                                        "{\"a\":{\"a\":1},\"b\":{\"a\":2}}",
                                        "{\"a\":{\"b\":1,\"b\":2}}",
                                        "{\"\\u0061\":1,\"a\":2}",
                                        "{\"a\":\"\\u0000\"}",
                                        "{\"a\":\"\\ud83d\\ude00\"}",
                                        "{\"a\":\"\\ud83d\"}",
                                        "{\"a\":\"\\ude00\"}",
                                        "{\"a\":\"\\ud83dx\"}",
                                        "{\"a\":\"\xc3\xa9\"}",
                                        "{\"a\":\"\xc3\"}",
                                        "{\"a\":\"\xed\xa0\x80\"}",
                                        "{\"a\":\"\xf4\x90\x80\x80\"}",
                                        "{\"a\":\"\xe0\x80\xaf\"}",
                                        "{\"a\":\"\x01\"}",
                                        "{\"a\":1e308}",
                                        "{\"a\":2e308}",
                                        "{\"a\":1.8e308}",
                                        "{\"a\":1.7e308}",
                                        "{\"a\":-1e309}",
                                        "{\"a\":0.00001e312}",
                                        "{\"a\":1e-400}",
                                        "{\"a\":123456789012345678901234567890}",
                                        "{\"a\":01}",
                                        "{\"a\":1.}",
                                        "{\"a\":.5}",
                                        "{\"a\":-}",
                                        "{\"a\":1e}",
                                        "{\"a\":+1}",
                                        "{\"a\":[1,2,]}",
                                        "{\"a\":[]}",
                                        "{\"a\":[[[]]]}",
                                        "{\"a\":tru}",
                                        "{\"a\":nulll}",
                                        "{\"a\":true,\"b\":false,\"c\":null}",
                                        "{\"a\" 1}",
                                        "{\"a\":1,}",
                                        "{,}",
                                        "{\"a\":1}x",
                                        "[1]",
                                        "\"s\"",
                                        "1",
                                        "",
                                        "{\"a\":\"\\x\"}",
                                        "{\"a\":\"\\u12\"}",
                                        "{\"a\":\"\\/\\b\\f\"}"};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        same_verdict(cases[i], strlen(cases[i]));

    /* random edits of a realistic document */
    const char *doc =
        "{\"party\": \"provider\", \"algorithm\": \"ed25519\", \"n\": [1, 2.5e3, -0.25],"
        " \"nested\": {\"ok\": true, \"none\": null, \"s\": \"caf\xc3\xa9 \\n \\\"q\\\"\"},"
        " \"big\": 1e300}";
    static const char alphabet[] = "{}[]\":,\\u0123456789abcdefeE+-. tnrx\x80\xc3\xed\xff";
    uint64_t seed = 0x9e3779b97f4a7c15ull;
    char buf[512];
    for (int iter = 0; iter < 20000; iter++) {
        size_t len = strlen(doc);
        memcpy(buf, doc, len);
        int edits = 1 + (int)(seed % 3);
        for (int e = 0; e < edits; e++) {
            seed = seed * 6364136223846793005ull + 1442695040888963407ull;
            size_t at = (size_t)(seed >> 33) % len;
            char c = alphabet[(seed >> 20) % (sizeof alphabet - 1)];
            switch ((seed >> 8) % 3) {
            case 0:
                buf[at] = c;
                break; /* replace */
            case 1:
                memmove(buf + at, buf + at + 1, len - at - 1);
                len--;
                break; /* delete */
            default:   /* insert */
                if (len + 1 < sizeof buf) {
                    memmove(buf + at + 1, buf + at, len - at);
                    buf[at] = c;
                    len++;
                }
            }
        }
        same_verdict(buf, len);
    }
}

/* numeric's scale limit, case by case as PostgreSQL 15 answers
 * '{"a": <n>}'::jsonb: the fits are stored, the others refused with "value
 * overflows numeric format". A double reads all of them as about 0. */
Test(json, numbers_beyond_numerics_scale_are_found_where_they_are)
{
    static const struct {
        const char *n;
        bool overflows;
    } cases[] = {
        {"1e-16383", false},   {"1e-16384", true},  {"0.1e-16382", false},
        {"0.1e-16383", true},  {"0e-16384", true},  {"-0.0e-16384", true},
        {"1.5e-16382", false}, {"12e-16385", true}, {"1E-99999999999999999999", true},
        {"1e400", false},      {"-0", false},       {"123.456", false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char text[96];
        int len = snprintf(text, sizeof text, "{\"k\": [1, \"1e-99999\", %s]}", cases[i].n);
        size_t at = 0;
        cr_assert_eq(cms_json_numeric_overflow(text, (size_t)len, &at), cases[i].overflows, "%s",
                     cases[i].n);
        if (cases[i].overflows)
            cr_assert_eq(at, strlen("{\"k\": [1, \"1e-99999\", "), "%s: where it starts",
                         cases[i].n);
    }
    /* inside strings, escaped quotes included, numbers are text */
    static const char s[] = "{\"a\\\"1e-99999\": \"x\\\\\", \"b\": \"0e-20000\"}";
    cr_assert_not(cms_json_numeric_overflow(s, sizeof s - 1, NULL));
}
