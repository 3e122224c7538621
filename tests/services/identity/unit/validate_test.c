/* The input checks of cms-identity (services/identity/validate.h): for each
 * check the inputs just inside and just outside its bounds, and the request
 * field a refusal names. */
#include "identity/validate.h"

#include <criterion/criterion.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#define EXPIRY_NOW INT64_C(1718000000000000) /* 2024-06-10 */

static idv_err e;

static void reset(void)
{
    memset(&e, 0, sizeof e);
}

/* A refusal must say which field and why (a non-empty message). */
static void refused(bool ok, const char *field, const char *what)
{
    cr_assert_not(ok, "%s was accepted", what);
    cr_assert_not_null(e.field, "%s: no field named", what);
    cr_assert_str_eq(e.field, field, "%s", what);
    cr_assert_gt(strlen(e.msg), 0, "%s: empty message", what);
    reset();
}

static void accepted(bool ok, const char *what)
{
    cr_assert(ok, "%s was refused: %s: %s", what, e.field ? e.field : "(none)", e.msg);
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

TestSuite(name, .init = reset);

Test(name, empty_and_null_are_refused)
{
    refused(idv_name("", "name", &e), "name", "empty name");
    refused(idv_name(NULL, "name", &e), "name", "NULL name");
    cr_assert_not(idv_name("", "display_name", &e));
    cr_assert_str_eq(e.field, "display_name", "the field is the caller's");
    cr_assert_not_null(strstr(e.msg, "empty"), "%s", e.msg);
}

Test(name, length_is_bytes_255_and_256)
{
    char s[1024];
    accepted(idv_name(repeat(s, "a", 1), "name", &e), "1 byte");
    accepted(idv_name(repeat(s, "a", 255), "name", &e), "255 bytes");
    refused(idv_name(repeat(s, "a", 256), "name", &e), "name", "256 bytes");
    cr_assert_not(idv_name(repeat(s, "a", 256), "name", &e));
    cr_assert_not_null(strstr(e.msg, "256"), "%s", e.msg);
    cr_assert_not_null(strstr(e.msg, "255"), "%s", e.msg);
    /* bytes, not characters: 85 three-byte characters fit, 128 two-byte ones do not */
    accepted(idv_name(repeat(s, "\xe2\x82\xac", 85), "name", &e), "85 x U+20AC (255 bytes)");
    refused(idv_name(repeat(s, "\xc3\xa9", 128), "name", &e), "name", "128 x U+00E9 (256 bytes)");
    /* 254 ASCII + a two-byte character = 256 */
    repeat(s, "a", 254);
    memcpy(s + 254, "\xc3\xa9", 3);
    refused(idv_name(s, "name", &e), "name", "254 + 2 bytes");
}

Test(name, multibyte_utf8_is_accepted)
{
    accepted(idv_name("J\xc3\xbcrgen M\xc3\xbcller", "name", &e), "2-byte (U+00FC)");
    accepted(idv_name("\xe6\x9d\xb1\xe4\xba\xac", "name", &e), "3-byte (CJK)");
    accepted(idv_name("robot \xf0\x9f\xa4\x96", "name", &e), "4-byte (U+1F916)");
    accepted(idv_name("\xc2\xa0", "name", &e), "U+00A0, lead byte C2");
    accepted(idv_name("\xe0\xa0\x80", "name", &e), "U+0800, smallest 3-byte");
    accepted(idv_name("\xef\xbf\xbd", "name", &e), "U+FFFD");
    accepted(idv_name("\xed\x9f\xbf", "name", &e), "U+D7FF, just below the surrogates");
    accepted(idv_name("\xee\x80\x80", "name", &e), "U+E000, just above the surrogates");
    accepted(idv_name("\xf0\x90\x80\x80", "name", &e), "U+10000, smallest 4-byte");
    accepted(idv_name("\xf4\x8f\xbf\xbf", "name", &e), "U+10FFFF, the last code point");
    accepted(idv_name("a b-c_d.e@f ~", "name", &e), "printable ASCII with spaces");
}

Test(name, invalid_utf8_is_refused)
{
    static const struct {
        const char *s, *why;
    } bad[] = {
        {"\x80", "lone continuation byte"},
        {"a\xbf", "continuation byte after ASCII"},
        {"\xc3", "truncated 2-byte sequence"},
        {"\xc3(", "2-byte lead without continuation"},
        {"\xe2\x82", "truncated 3-byte sequence"},
        {"\xf0\x9f\xa4", "truncated 4-byte sequence"},
        {"\xc0\xaf", "overlong '/' (C0)"},
        {"\xc1\xbf", "overlong (C1)"},
        {"\xe0\x80\xaf", "overlong 3-byte '/'"},
        {"\xe0\x9f\xbf", "overlong 3-byte U+07FF"},
        {"\xf0\x80\x80\xaf", "overlong 4-byte '/'"},
        {"\xf0\x8f\xbf\xbf", "overlong 4-byte U+FFFF"},
        {"\xed\xa0\x80", "surrogate U+D800"},
        {"\xed\xbf\xbf", "surrogate U+DFFF"},
        {"\xed\xa0\xbd\xed\xb2\xa9", "CESU-8 surrogate pair"},
        {"\xf4\x90\x80\x80", "U+110000, beyond Unicode"},
        {"\xf5\x80\x80\x80", "lead byte F5"},
        {"\xf8\x88\x80\x80\x80", "5-byte form"},
        {"\xfe", "byte FE"},
        {"\xff", "byte FF"},
        {"ok\xe2\x82\xac\xe2\x82", "valid prefix, truncated tail"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cr_assert_not(idv_name(bad[i].s, "name", &e), "%s was accepted", bad[i].why);
        cr_assert_str_eq(e.field, "name", "%s", bad[i].why);
        cr_assert_not_null(strstr(e.msg, "UTF-8"), "%s: %s", bad[i].why, e.msg);
        reset();
    }
}

Test(name, control_characters_are_refused)
{
    static const char *const bad[] = {"\x01", "a\tb", "a\nb", "a\rb", "x\x1f", "x\x7f", "\x1b[31m"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cr_assert_not(idv_name(bad[i], "name", &e), "control character %zu was accepted", i);
        cr_assert_str_eq(e.field, "name");
        cr_assert_not_null(strstr(e.msg, "control"), "%s", e.msg);
        reset();
    }
    /* C1 controls in UTF-8: U+0080, U+0085 (NEL), U+009F */
    static const char *const c1[] = {"a\xc2\x80",
                                     ("a\xc2\x85"
                                      "b"),
                                     "\xc2\x9f"};
    for (size_t i = 0; i < sizeof c1 / sizeof c1[0]; i++)
        refused(idv_name(c1[i], "name", &e), "name", "a C1 control character");
    accepted(idv_name(" ", "name", &e), "0x20 is not a control character");
    accepted(idv_name("~", "name", &e), "0x7e is not a control character");
    accepted(idv_name("a\xc2\xa0"
                      "b",
                      "name", &e),
             "U+00A0 is not a control character");
}

/* ------------------------------------------------------------------------ */

Test(enums, type_parse)
{
    static const char *const names[] = {"user", "machine", "enclave"};
    static const idv_type want[] = {IDV_USER, IDV_MACHINE, IDV_ENCLAVE};
    for (int i = 0; i < 3; i++) {
        idv_type t = (idv_type)-1;
        accepted(idv_type_parse(names[i], &t, &e), names[i]);
        cr_assert_eq(t, want[i], "%s", names[i]);
        cr_assert_str_eq(idv_type_name(t), names[i]);
    }
    static const char *const bad[] = {"",      "User",  "USER",    "users",  "use",
                                      " user", "user ", "service", "api_key"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        idv_type t = IDV_ENCLAVE;
        refused(idv_type_parse(bad[i], &t, &e), "type", bad[i]);
        cr_assert_eq(t, IDV_ENCLAVE, "output written on refusal of '%s'", bad[i]);
    }
    idv_type t = IDV_ENCLAVE;
    refused(idv_type_parse(NULL, &t, &e), "type", "NULL type");
}

Test(enums, status_parse_names_the_callers_field)
{
    static const char *const names[] = {"active", "inactive", "suspended"};
    static const idv_status want[] = {IDV_ACTIVE, IDV_INACTIVE, IDV_SUSPENDED};
    for (int i = 0; i < 3; i++) {
        idv_status s = (idv_status)-1;
        accepted(idv_status_parse(names[i], "status", &s, &e), names[i]);
        cr_assert_eq(s, want[i], "%s", names[i]);
        cr_assert_str_eq(idv_status_name(s), names[i]);
    }
    static const char *const bad[] = {"",        "Active",  "ACTIVE",   "activ",
                                      "actives", "deleted", "disabled", " active"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        idv_status s = IDV_SUSPENDED;
        refused(idv_status_parse(bad[i], "new_status", &s, &e), "new_status", bad[i]);
        cr_assert_eq(s, IDV_SUSPENDED, "output written on refusal of '%s'", bad[i]);
    }
    idv_status s;
    refused(idv_status_parse(NULL, "filter.status", &s, &e), "filter.status", "NULL status");
}

Test(enums, cred_type_parse)
{
    static const char *const names[] = {"api_key", "public_key", "attestation"};
    static const idv_cred_type want[] = {IDV_API_KEY, IDV_PUBLIC_KEY, IDV_ATTESTATION};
    for (int i = 0; i < 3; i++) {
        idv_cred_type t = (idv_cred_type)-1;
        accepted(idv_cred_type_parse(names[i], &t, &e), names[i]);
        cr_assert_eq(t, want[i], "%s", names[i]);
        cr_assert_str_eq(idv_cred_type_name(t), names[i]);
    }
    static const char *const bad[] = {"",       "apikey", "api-key",     "API_KEY",
                                      "public", "user",   "attestations"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        idv_cred_type t = IDV_ATTESTATION;
        refused(idv_cred_type_parse(bad[i], &t, &e), "type", bad[i]);
        cr_assert_eq(t, IDV_ATTESTATION, "output written on refusal of '%s'", bad[i]);
    }
    idv_cred_type t;
    refused(idv_cred_type_parse(NULL, &t, &e), "type", "NULL credential type");
}

/* ------------------------------------------------------------------------ */

Test(uuid, text_form)
{
    accepted(idv_uuid("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", "identity_id", &e), "lowercase");
    accepted(idv_uuid("0190A1B2-C3D4-7E5F-8A9B-0C1D2E3F4A5B", "identity_id", &e), "uppercase");
    accepted(idv_uuid("00000000-0000-0000-0000-000000000000", "identity_id", &e), "nil");

    refused(idv_uuid(NULL, "identity_id", &e), "identity_id", "NULL");
    cr_assert_not(idv_uuid("", "credential_id", &e));
    cr_assert_str_eq(e.field, "credential_id");
    cr_assert_not_null(strstr(e.msg, "required"), "%s", e.msg);
    reset();

    static const char *const bad[] = {
        "0190a1b2c3d47e5f8a9b0c1d2e3f4a5b",       /* no dashes */
        "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5",    /* 35 */
        "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5bc",  /* 37 */
        "{0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b}", /* braces */
        "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5g",   /* not hex */
        "0190a1b2-c3d47-e5f-8a9b-0c1d2e3f4a5b",   /* dash misplaced */
        "urn:uuid:0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
        " 0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
        "not-a-uuid",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cr_assert_not(idv_uuid(bad[i], "identity_id", &e), "'%s' was accepted", bad[i]);
        cr_assert_str_eq(e.field, "identity_id");
        cr_assert_not_null(strstr(e.msg, "not a UUID"), "%s: %s", bad[i], e.msg);
        reset();
    }
}

/* ------------------------------------------------------------------------ */

static const char *md_out;

static void md_refused(const char *s, const char *what)
{
    md_out = "untouched";
    refused(idv_metadata(s, "metadata", &md_out, &e), "metadata", what);
    cr_assert_str_eq(md_out, "untouched", "%s: output written on refusal", what);
}

static void md_accepted(const char *s, const char *what)
{
    md_out = NULL;
    accepted(idv_metadata(s, "metadata", &md_out, &e), what);
    cr_assert_eq(md_out, s, "%s: the output is the input", what);
}

/* {"k":"xxx..."} of exactly n bytes */
static char *object_of(char *buf, size_t n)
{
    cr_assert_geq(n, 9);
    memcpy(buf, "{\"k\":\"", 6);
    memset(buf + 6, 'x', n - 8);
    memcpy(buf + n - 2, "\"}", 3);
    cr_assert_eq(strlen(buf), n);
    return buf;
}

Test(metadata, empty_becomes_an_empty_object)
{
    md_out = NULL;
    accepted(idv_metadata("", "metadata", &md_out, &e), "empty");
    cr_assert_str_eq(md_out, "{}");
    md_out = NULL;
    accepted(idv_metadata(NULL, "metadata", &md_out, &e), "NULL");
    cr_assert_str_eq(md_out, "{}");
}

Test(metadata, objects_are_accepted)
{
    md_accepted("{}", "empty object");
    md_accepted(" { \"team\" : \"ops\", \"n\": [1, 2, {\"x\": null}] } \n", "with whitespace");
    md_accepted("{\"note\":\"J\xc3\xbcrgen \xf0\x9f\xa4\x96\"}", "UTF-8 inside strings");
    md_accepted("{\"a\":{\"a\":1},\"b\":{\"a\":2}}", "the same key in different objects");
}

Test(metadata, non_objects_are_refused)
{
    static const char *const arrays[] = {"[]", "[{}]", "[\"roles\"]", " [1, 2] "};
    for (size_t i = 0; i < sizeof arrays / sizeof arrays[0]; i++) {
        md_refused(arrays[i], arrays[i]);
        cr_assert_not(idv_metadata(arrays[i], "metadata", &md_out, &e));
        cr_assert_not_null(strstr(e.msg, "must be a JSON object"), "%s: %s", arrays[i], e.msg);
        reset();
    }
    /* scalars are JSON, but not objects: the message says so */
    static const char *const scalars[] = {"1", "-0.5", "\"text\"", "true", "null"};
    for (size_t i = 0; i < sizeof scalars / sizeof scalars[0]; i++) {
        cr_assert_not(idv_metadata(scalars[i], "metadata", &md_out, &e));
        cr_assert_not_null(strstr(e.msg, "must be a JSON object"), "%s: %s", scalars[i], e.msg);
        reset();
    }
}

Test(metadata, invalid_json_is_refused)
{
    static const char *const bad[] = {
        "{",
        "}",
        "{\"a\":}",
        "{\"a\":1,}",
        "{'a':1}",
        "{a:1}",
        "{} {}",
        "{}x",
        "{\"a\":1} // comment",
        "{\"a\":NaN}",
        "{\"a\":\"\\x41\"}",
        "{\"a\":\"unterminated}",
        "{\"a\":\"\xc3\x28\"}",     /* invalid UTF-8 in a string */
        "{\"a\":\"\xed\xa0\x80\"}", /* a raw surrogate */
        "{\"a\":\"\\ud800\"}",      /* an escaped lone surrogate */
        "{\"a\":\"\\u0000\"}",      /* NUL, which jsonb refuses */
        "{\"k\\u0000\":1}",         /* NUL in a key */
        "{\"a\":\"x\\u0000y\"}",
        "{\"a\":1,\"a\":2}", /* duplicate keys */
        "{\"a\":1,\"b\":2,\"a\":1}",
        "{\"x\":{\"k\":1,\"k\":1}}", /* duplicate keys, nested */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        md_refused(bad[i], bad[i]);
        cr_assert_not(idv_metadata(bad[i], "metadata", &md_out, &e));
        cr_assert_not_null(strstr(e.msg, "not valid JSON"), "%s: %s", bad[i], e.msg);
        reset();
    }
    md_accepted("{\"a\":\"\\u0001 \\ud83e\\udd16\"}", "escaped control char and surrogate pair");
}

Test(metadata, at_most_16384_bytes)
{
    static char buf[IDV_METADATA_MAX + 64];
    md_accepted(object_of(buf, IDV_METADATA_MAX), "16384 bytes");
    md_refused(object_of(buf, IDV_METADATA_MAX + 1), "16385 bytes");
    cr_assert_not(idv_metadata(object_of(buf, IDV_METADATA_MAX + 1), "metadata", &md_out, &e));
    cr_assert_not_null(strstr(e.msg, "16385"), "%s", e.msg);
    cr_assert_not_null(strstr(e.msg, "16384"), "%s", e.msg);
    reset();
    /* the size is checked before parsing: 16385 bytes of garbage says "bytes" */
    memset(buf, '!', IDV_METADATA_MAX + 1);
    buf[IDV_METADATA_MAX + 1] = '\0';
    cr_assert_not(idv_metadata(buf, "metadata", &md_out, &e));
    cr_assert_null(strstr(e.msg, "JSON"), "%s", e.msg);
}

Test(metadata, roles_valid)
{
    md_accepted("{\"roles\":[]}", "no roles");
    md_accepted("{\"roles\":[\"admin\"]}", "one role");
    md_accepted("{\"roles\":[\"a\",\"b\",\"c\",\"d\",\"e\",\"f\",\"g\",\"h\"]}", "8 roles");
    md_accepted("{\"roles\":[\"auditor_2\",\"ops-team\",\"0\",\"_\",\"-\"]}", "[a-z0-9_-]");
    /* 31 characters */
    md_accepted("{\"roles\":[\"abcdefghijklmnopqrstuvwxyz01234\"]}", "31-byte role");
    md_accepted("{\"team\":\"x\",\"roles\":[\"admin\"],\"more\":{\"roles\":7}}",
                "only the top-level roles are roles");
}

Test(metadata, roles_must_be_an_array_of_at_most_8)
{
    static const char *const bad[] = {
        "{\"roles\":\"admin\"}",
        "{\"roles\":{\"admin\":true}}",
        "{\"roles\":null}",
        "{\"roles\":1}",
        "{\"roles\":true}",
        "{\"roles\":[\"a\",\"b\",\"c\",\"d\",\"e\",\"f\",\"g\",\"h\",\"i\"]}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        md_refused(bad[i], bad[i]);
        cr_assert_not(idv_metadata(bad[i], "metadata", &md_out, &e));
        cr_assert_not_null(strstr(e.msg, "metadata.roles must be an array"), "%s: %s", bad[i],
                           e.msg);
        reset();
    }
}

Test(metadata, roles_names)
{
    static const struct {
        const char *s;
        const char *index;
    } bad[] = {
        {"{\"roles\":[\"\"]}", "[0]"},
        {"{\"roles\":[\"Admin\"]}", "[0]"},
        {"{\"roles\":[\"ok\",\"two words\"]}", "[1]"},
        {"{\"roles\":[\"ok\",\"a.b\"]}", "[1]"},
        {"{\"roles\":[\"r\\u00e9le\"]}", "[0]"},
        {"{\"roles\":[\"abcdefghijklmnopqrstuvwxyz012345\"]}", "[0]"}, /* 32 bytes */
        {"{\"roles\":[1]}", "[0]"},
        {"{\"roles\":[null]}", "[0]"},
        {"{\"roles\":[[\"admin\"]]}", "[0]"},
        {"{\"roles\":[\"a\",\"b\",{\"c\":1}]}", "[2]"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        md_refused(bad[i].s, bad[i].s);
        cr_assert_not(idv_metadata(bad[i].s, "metadata", &md_out, &e));
        cr_assert_not_null(strstr(e.msg, bad[i].index), "%s: %s", bad[i].s, e.msg);
        reset();
    }
}

Test(metadata, roles_duplicates)
{
    md_refused("{\"roles\":[\"admin\",\"admin\"]}", "adjacent duplicate");
    md_refused("{\"roles\":[\"a\",\"b\",\"c\",\"d\",\"e\",\"f\",\"g\",\"a\"]}", "first and last");
    cr_assert_not(idv_metadata("{\"roles\":[\"x\",\"ops\",\"ops\"]}", "metadata", &md_out, &e));
    cr_assert_not_null(strstr(e.msg, "ops twice"), "%s", e.msg);
    reset();
    md_accepted("{\"roles\":[\"ops\",\"ops-1\",\"ops_1\"]}", "similar but distinct");
}

Test(metadata, field_is_the_callers)
{
    cr_assert_not(idv_metadata("[]", "identity.metadata", &md_out, &e));
    cr_assert_str_eq(e.field, "identity.metadata");
    cr_assert_not_null(strstr(e.msg, "identity.metadata"), "%s", e.msg);
}

/* ------------------------------------------------------------------------ */

Test(text, optional_bounded_utf8)
{
    static char buf[IDV_REASON_MAX + 8];
    accepted(idv_text(NULL, "reason", IDV_REASON_MAX, &e), "NULL");
    accepted(idv_text("", "reason", IDV_REASON_MAX, &e), "empty");
    accepted(idv_text("left the company\nticket #12\t(ok)", "reason", IDV_REASON_MAX, &e),
             "free text may hold line breaks");
    accepted(idv_text("\xe6\x9d\xb1\xf0\x9f\xa4\x96", "reason", IDV_REASON_MAX, &e), "multi-byte");
    accepted(idv_text(repeat(buf, "r", IDV_REASON_MAX), "reason", IDV_REASON_MAX, &e),
             "1024 bytes");
    refused(idv_text(repeat(buf, "r", IDV_REASON_MAX + 1), "reason", IDV_REASON_MAX, &e), "reason",
            "1025 bytes");
    cr_assert_not(idv_text(repeat(buf, "r", IDV_REASON_MAX + 1), "reason", IDV_REASON_MAX, &e));
    cr_assert_not_null(strstr(e.msg, "1025"), "%s", e.msg);
    reset();
    /* the bound is the caller's */
    accepted(idv_text(repeat(buf, "s", IDV_SIGNER_MAX), "signer", IDV_SIGNER_MAX, &e), "255");
    refused(idv_text(repeat(buf, "s", IDV_SIGNER_MAX + 1), "signer", IDV_SIGNER_MAX, &e), "signer",
            "256 with max 255");
    refused(idv_text("\xc0\xaf", "reason", IDV_REASON_MAX, &e), "reason", "overlong");
    refused(idv_text("\xed\xa0\x80", "reason", IDV_REASON_MAX, &e), "reason", "surrogate");
    refused(idv_text("abc\xe2\x82", "reason", IDV_REASON_MAX, &e), "reason", "truncated");
    cr_assert_not(idv_text("\xff", "note", IDV_REASON_MAX, &e));
    cr_assert_str_eq(e.field, "note");
    cr_assert_not_null(strstr(e.msg, "UTF-8"), "%s", e.msg);
}

/* ------------------------------------------------------------------------ */

#define BASE_POINT "WGZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmY="

static uint8_t pk_out[IDV_PUBLIC_KEY_BYTES];

static void pk_refused(const char *s, const char *what, const char *says)
{
    memset(pk_out, 0xa5, sizeof pk_out);
    refused(idv_public_key(s, pk_out, &e), "public_key", what);
    for (size_t i = 0; i < sizeof pk_out; i++)
        cr_assert_eq(pk_out[i], 0xa5, "%s: output written on refusal", what);
    if (says) {
        cr_assert_not(idv_public_key(s, pk_out, &e));
        cr_assert_not_null(strstr(e.msg, says), "%s: %s", what, e.msg);
        reset();
    }
}

static void b64(const uint8_t *bin, size_t n, char *out, size_t cap)
{
    cr_assert_not_null(sodium_bin2base64(out, cap, bin, n, sodium_base64_VARIANT_ORIGINAL));
}

Test(public_key, ed25519_points_are_accepted, .init = reset)
{
    cr_assert_geq(sodium_init(), 0);
    accepted(idv_public_key(BASE_POINT, pk_out, &e), "the base point");
    cr_assert_eq(pk_out[0], 0x58);
    for (size_t i = 1; i < sizeof pk_out; i++)
        cr_assert_eq(pk_out[i], 0x66, "byte %zu", i);

    uint8_t pk[crypto_sign_PUBLICKEYBYTES], sk[crypto_sign_SECRETKEYBYTES];
    char
        text[sodium_base64_ENCODED_LEN(crypto_sign_PUBLICKEYBYTES, sodium_base64_VARIANT_ORIGINAL)];
    for (int i = 0; i < 8; i++) {
        cr_assert_eq(crypto_sign_keypair(pk, sk), 0);
        b64(pk, sizeof pk, text, sizeof text);
        memset(pk_out, 0, sizeof pk_out);
        accepted(idv_public_key(text, pk_out, &e), text);
        cr_assert_eq(memcmp(pk_out, pk, sizeof pk), 0, "the decoded key is the key");
    }
    sodium_memzero(sk, sizeof sk);
}

Test(public_key, required, .init = reset)
{
    pk_refused(NULL, "NULL", "required");
    pk_refused("", "empty", "required");
}

Test(public_key, standard_padded_base64_only, .init = reset)
{
    cr_assert_geq(sodium_init(), 0);
    pk_refused("WGZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmY", "unpadded base point", "base64");
    pk_refused("!!!!", "not base64 at all", "base64");
    pk_refused("WGZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmY=\n", "trailing newline", "base64");
    pk_refused(" WGZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmY=", "leading space", "base64");
    pk_refused("WGZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmY==", "extra padding", "base64");
    pk_refused("WGZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZm ZmZmZmY=", "inner space", "base64");

    /* a valid key in the URL alphabet: '-' and '_' are not standard base64 */
    uint8_t pk[crypto_sign_PUBLICKEYBYTES], sk[crypto_sign_SECRETKEYBYTES];
    char std[64], url[64];
    int tries = 0;
    do {
        cr_assert_eq(crypto_sign_keypair(pk, sk), 0);
        b64(pk, sizeof pk, std, sizeof std);
        cr_assert_lt(++tries, 1000);
    } while (strpbrk(std, "+/") == NULL);
    cr_assert_not_null(
        sodium_bin2base64(url, sizeof url, pk, sizeof pk, sodium_base64_VARIANT_URLSAFE));
    accepted(idv_public_key(std, pk_out, &e), std);
    pk_refused(url, "URL-safe alphabet", "base64");
    sodium_memzero(sk, sizeof sk);
}

/* libsodium 1.0.18 decodes every byte above 0x7f as '/' (63): the same key
 * had 128 more spellings, stored as the credential's text, invalid UTF-8
 * included (tests/fuzz/corpus/identity_cmd/regress-high-byte-base64). */
Test(public_key, bytes_above_0x7f_are_not_base64, .init = reset)
{
    cr_assert_geq(sodium_init(), 0);
    static const char key[] = "11qYAYKxCrfVS/7TyWQHOg7hcvPa////rwIaaPcHURo=";
    accepted(idv_public_key(key, pk_out, &e), key);
    char bad[sizeof key];
    memcpy(bad, key, sizeof key);
    bad[28] = (char)0xa0;
    pk_refused(bad, "one 0xa0 for a '/'", "base64");
    memcpy(bad + 28, "\xa0\x96\xb2\x93", 4);
    pk_refused(bad, "four bytes above 0x7f", "base64");
}

Test(public_key, exactly_32_bytes, .init = reset)
{
    cr_assert_geq(sodium_init(), 0);
    uint8_t bin[64];
    char text[128];
    memset(bin, 0x66, sizeof bin);
    bin[0] = 0x58;
    b64(bin, 31, text, sizeof text);
    pk_refused(text, "31 bytes", "31 bytes");
    b64(bin, 33, text, sizeof text);
    pk_refused(text, "33 bytes", "33 bytes");
    b64(bin, 48, text, sizeof text);
    pk_refused(text, "48 bytes", NULL);
    b64(bin, 1, text, sizeof text);
    pk_refused(text, "1 byte", NULL);
}

Test(public_key, must_be_a_valid_point, .init = reset)
{
    cr_assert_geq(sodium_init(), 0);
    /* y = 2: (y^2 - 1) / (d y^2 + 1) is not a square mod p, so no x exists */
    pk_refused("AgAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "y = 2, not on the curve",
               "not a valid Ed25519");
    /* the identity (y = 1) and all zeros (order 4) are of small order */
    pk_refused("AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "the identity point",
               "not a valid Ed25519");
    pk_refused("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "all zeros", "not a valid Ed25519");
    /* y = p (a non-canonical 0) */
    uint8_t bin[32];
    char text[64];
    memset(bin, 0xff, sizeof bin);
    bin[0] = 0xed;
    bin[31] = 0x7f;
    b64(bin, sizeof bin, text, sizeof text);
    pk_refused(text, "non-canonical y = p", "not a valid Ed25519");
}

/* ------------------------------------------------------------------------ */

static char meas[IDV_MEASUREMENT_MAX + 1];

static void meas_refused(const char *s, const char *what)
{
    refused(idv_measurement(s, meas, &e), "measurement", what);
}

Test(measurement, lengths, .init = reset)
{
    char s[256];
    meas_refused(NULL, "NULL");
    meas_refused("", "empty");
    meas_refused(repeat(s, "a", 2), "1 byte");
    meas_refused(repeat(s, "a", 30), "15 bytes");
    meas_refused(repeat(s, "a", 31), "31 digits");
    accepted(idv_measurement(repeat(s, "a", 32), meas, &e), "32 digits (16 bytes)");
    cr_assert_str_eq(meas, s);
    meas_refused(repeat(s, "a", 33), "33 digits");
    accepted(idv_measurement(repeat(s, "0", 64), meas, &e), "64 digits (SHA-256)");
    cr_assert_str_eq(meas, s);
    meas_refused(repeat(s, "a", 127), "127 digits");
    accepted(idv_measurement(repeat(s, "f", 128), meas, &e), "128 digits (64 bytes)");
    cr_assert_str_eq(meas, s);
    cr_assert_eq(strlen(meas), 128);
    meas_refused(repeat(s, "a", 129), "129 digits");
    meas_refused(repeat(s, "a", 130), "130 digits (65 bytes)");
    cr_assert_not(idv_measurement(repeat(s, "a", 130), meas, &e));
    cr_assert_not_null(strstr(e.msg, "16 to 64"), "%s", e.msg);
}

Test(measurement, hex_folded_to_lowercase, .init = reset)
{
    accepted(idv_measurement("0123456789ABCDEFabcdef0123456789", meas, &e), "mixed case");
    cr_assert_str_eq(meas, "0123456789abcdefabcdef0123456789");
    char s[256];
    accepted(idv_measurement(repeat(s, "AbCdEf09", 16), meas, &e), "128 mixed");
    cr_assert_str_eq(meas, repeat(s, "abcdef09", 16));

    static const char *const bad[] = {
        "0123456789abcdefabcdef012345678g",
        "0123456789abcdefabcdef012345678G",
        "0x23456789abcdefabcdef0123456789",
        "0123456789abcdef abcdef012345678",
        "0123456789abcdef-abcdef012345678",
        ("\xc3\xa9"
         "23456789abcdefabcdef0123456789"),
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cr_assert_not(idv_measurement(bad[i], meas, &e), "'%s' was accepted", bad[i]);
        cr_assert_str_eq(e.field, "measurement");
        cr_assert_not_null(strstr(e.msg, "hex"), "%s", e.msg);
        reset();
    }
}

/* ------------------------------------------------------------------------ */

Test(expiry, window, .init = reset)
{
    const int64_t max_s = 90 * 86400;
    const int64_t max_us = max_s * 1000000;
    refused(idv_expiry(0, EXPIRY_NOW, max_s, &e), "expires_at_us", "0");
    cr_assert_not(idv_expiry(0, EXPIRY_NOW, max_s, &e));
    cr_assert_not_null(strstr(e.msg, "required"), "%s", e.msg);
    reset();
    refused(idv_expiry(-1, EXPIRY_NOW, max_s, &e), "expires_at_us", "negative");
    refused(idv_expiry(EXPIRY_NOW - 1000000, EXPIRY_NOW, max_s, &e), "expires_at_us", "past");
    refused(idv_expiry(EXPIRY_NOW, EXPIRY_NOW, max_s, &e), "expires_at_us", "now");
    cr_assert_not(idv_expiry(EXPIRY_NOW, EXPIRY_NOW, max_s, &e));
    cr_assert_not_null(strstr(e.msg, "past"), "%s", e.msg);
    reset();
    accepted(idv_expiry(EXPIRY_NOW + 1, EXPIRY_NOW, max_s, &e), "now + 1 us");
    accepted(idv_expiry(EXPIRY_NOW + max_us, EXPIRY_NOW, max_s, &e), "exactly the max");
    refused(idv_expiry(EXPIRY_NOW + max_us + 1, EXPIRY_NOW, max_s, &e), "expires_at_us",
            "max + 1 us");
    cr_assert_not(idv_expiry(EXPIRY_NOW + max_us + 1, EXPIRY_NOW, max_s, &e));
    cr_assert_not_null(strstr(e.msg, "90 days"), "%s", e.msg);
    reset();
    refused(idv_expiry(INT64_MAX, EXPIRY_NOW, max_s, &e), "expires_at_us", "INT64_MAX");
    /* one year allowed */
    accepted(idv_expiry(EXPIRY_NOW + INT64_C(365) * 86400 * 1000000, EXPIRY_NOW, 365 * 86400, &e),
             "a year of a year");
    refused(
        idv_expiry(EXPIRY_NOW + INT64_C(365) * 86400 * 1000000 + 1, EXPIRY_NOW, 365 * 86400, &e),
        "expires_at_us", "a year and 1 us");
}

Test(expiry, a_child_never_outlives_its_parent, .init = reset)
{
    const int64_t parent = EXPIRY_NOW + 86400 * INT64_C(1000000);
    accepted(idv_child_expiry(parent, parent, &e), "equal");
    accepted(idv_child_expiry(parent - 1, parent, &e), "shorter");
    accepted(idv_child_expiry(EXPIRY_NOW + 1, parent, &e), "much shorter");
    refused(idv_child_expiry(parent + 1, parent, &e), "expires_at_us", "1 us longer");
    cr_assert_not(idv_child_expiry(parent + 365 * 86400 * INT64_C(1000000), parent, &e));
    cr_assert_not_null(strstr(e.msg, "cannot outlive"), "%s", e.msg);
    /* the parent's expiry, as a time the caller can read */
    cr_assert_not_null(strstr(e.msg, "2024-06-11T06:13:20Z"), "%s", e.msg);
    reset();
    /* a parent of unknown expiry lets nothing through */
    refused(idv_child_expiry(EXPIRY_NOW + 1, 0, &e), "expires_at_us", "unknown parent");
    refused(idv_child_expiry(INT64_MIN, -1, &e), "expires_at_us", "negative parent");
}

/* ------------------------------------------------------------------------ */

Test(transition, table)
{
    static const idv_status all[] = {IDV_ACTIVE, IDV_INACTIVE, IDV_SUSPENDED};
    /* want[from][to]: DESIGN.md's active <-> inactive, active <-> suspended */
    static const bool want[3][3] = {
        /* to:      active inactive suspended */
        /* active    */ {false, true, true},
        /* inactive  */ {true, false, false},
        /* suspended */ {true, false, false},
    };
    for (int f = 0; f < 3; f++)
        for (int t = 0; t < 3; t++)
            cr_assert_eq(idv_transition(all[f], all[t]), want[f][t], "%s -> %s",
                         idv_status_name(all[f]), idv_status_name(all[t]));
}
