/* audit_validate(): every reason an event is refused, the boundaries of each
 * check, and what a valid event yields (its fields, and details from
 * details_json or {}). Envelopes are crafted with protobuf-c, and some bytes
 * by hand where a publisher could send what protobuf-c never would. */
#include "cms/v1/envelope.pb-c.h"
#include "json.h"
#include "uuid.h"
#include "validate.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EVENT_ID "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"
#define RESOURCE_ID "0190a1b2-c3d4-7e5f-9a9b-0c1d2e3f4a5c"
#define ACTOR_ID "00000000-0000-7000-8000-000000000001"
#define OCCURRED INT64_C(1718000000123456) /* 2024-06-10, with microseconds */
#define MIN_US INT64_C(946684800000000)    /* 2000-01-01 */
#define MAX_US INT64_C(4102444800000000)   /* 2100-01-01 */

typedef struct fields {
    const char *event_id, *event_type, *resource_type, *resource_id, *actor_id, *details_json;
    int64_t occurred_us;
} fields;

static fields good(void)
{
    return (fields){.event_id = EVENT_ID,
                    .event_type = "contract.signed",
                    .resource_type = "contract",
                    .resource_id = RESOURCE_ID,
                    .actor_id = ACTOR_ID,
                    .details_json = "{\"by\": \"alice\", \"n\": [1, 2]}",
                    .occurred_us = OCCURRED};
}

static uint8_t wire[256 * 1024];

static size_t pack(const fields *f)
{
    Cms__V1__Envelope e = CMS__V1__ENVELOPE__INIT;
    e.event_id = (char *)f->event_id;
    e.event_type = (char *)f->event_type;
    e.resource_type = (char *)f->resource_type;
    e.resource_id = (char *)f->resource_id;
    e.actor_id = (char *)f->actor_id;
    e.occurred_at_us = f->occurred_us;
    e.correlation_id = (char *)"corr";
    e.source = (char *)"unit";
    e.details_json = (char *)f->details_json;
    cr_assert_leq(cms__v1__envelope__get_packed_size(&e), sizeof wire);
    return cms__v1__envelope__pack(&e, wire);
}

static cms_json_buf details;
static audit_event ev;

static void setup(void)
{
    cms_json_buf_init(&details, AUDIT_DETAILS_MAX);
    memset(&ev, 0, sizeof ev);
}

static void teardown(void)
{
    cms_json_buf_free(&details);
}

static audit_reason check(const fields *f)
{
    size_t n = pack(f);
    return audit_validate(wire, n, &ev, &details);
}

static void expect(const fields *f, audit_reason want, const char *what)
{
    audit_reason got = check(f);
    cr_expect_eq(got, want, "%s: got %s, want %s", what, audit_reason_name(got),
                 audit_reason_name(want));
}

static void uuid_bytes(const char *s, uint8_t out[16])
{
    cms_uuid u;
    cr_assert(cms_uuid_parse(s, strlen(s), &u));
    memcpy(out, u.b, 16);
}

TestSuite(audit_validate, .init = setup, .fini = teardown);

Test(audit_validate, reason_names_are_the_dead_letter_header_values)
{
    static const char *const want[] = {
        "ok",
        "undecodable",
        "invalid_event_id",
        "invalid_resource_id",
        "invalid_actor_id",
        "invalid_event_type",
        "invalid_resource_type",
        "invalid_occurred_at",
        "invalid_details",
        "unknown_actor",
        "insert_failed",
    };
    cr_assert_eq(sizeof want / sizeof want[0], (size_t)AUDIT_NREASONS);
    for (int r = 0; r < AUDIT_NREASONS; r++)
        cr_expect_str_eq(audit_reason_name((audit_reason)r), want[r]);
    cr_expect_str_eq(audit_reason_name(AUDIT_NREASONS), "unknown");
    cr_expect_str_eq(audit_reason_name((audit_reason)-1), "unknown");
}

Test(audit_validate, valid_event_fills_every_field)
{
    fields f = good();
    cr_assert_eq(check(&f), AUDIT_OK);
    uint8_t id[16], rid[16], aid[16];
    uuid_bytes(EVENT_ID, id);
    uuid_bytes(RESOURCE_ID, rid);
    uuid_bytes(ACTOR_ID, aid);
    cr_expect_arr_eq(ev.id, id, 16);
    cr_expect_arr_eq(ev.resource_id, rid, 16);
    cr_expect_arr_eq(ev.actor_id, aid, 16);
    cr_expect_str_eq(ev.event_type, "contract.signed");
    cr_expect_eq(ev.event_type_len, strlen("contract.signed"));
    cr_expect_str_eq(ev.resource_type, "contract");
    cr_expect_eq(ev.resource_type_len, strlen("contract"));
    cr_expect_eq(ev.occurred_us, OCCURRED);
    cr_assert_eq(details.len, strlen(f.details_json));
    cr_expect_eq(memcmp(details.data, f.details_json, details.len), 0, "details_json kept as sent");
}

Test(audit_validate, uppercase_uuids_and_foreign_types_are_accepted)
{
    fields f = good();
    f.event_id = "0190A1B2-C3D4-7E5F-8A9B-0C1D2E3F4A5B";
    f.resource_type = "Billing_Invoice-2";
    f.event_type = "Billing_Invoice-2.Paid_in-full";
    cr_assert_eq(check(&f), AUDIT_OK);
    uint8_t id[16];
    uuid_bytes(EVENT_ID, id);
    cr_expect_arr_eq(ev.id, id, 16);
    cr_expect_str_eq(ev.resource_type, "Billing_Invoice-2");
}

Test(audit_validate, empty_details_json_becomes_an_empty_object)
{
    fields f = good();
    f.details_json = "";
    cr_assert_eq(check(&f), AUDIT_OK);
    cr_assert_eq(details.len, 2);
    cr_expect_eq(memcmp(details.data, "{}", 2), 0);
    cr_expect_str_eq(details.data, "{}", "NUL-terminated for use as a C string");
}

Test(audit_validate, details_buffer_is_reset_per_event)
{
    fields f = good();
    cr_assert_eq(check(&f), AUDIT_OK);
    f.details_json = "{\"second\": 2}";
    cr_assert_eq(check(&f), AUDIT_OK);
    cr_expect_eq(details.len, strlen(f.details_json));
    cr_expect_str_eq(details.data, "{\"second\": 2}");
    f.details_json = "";
    cr_assert_eq(check(&f), AUDIT_OK);
    cr_expect_str_eq(details.data, "{}");
}

Test(audit_validate, whitespace_around_an_object_and_unicode_are_accepted)
{
    fields f = good();
    f.details_json =
        " \n\t{\"k\": \"caf\xc3\xa9 \\u00e9 \\ud83d\\ude00 \\\"q\\\"\", \"e\": {}} \r\n";
    expect(&f, AUDIT_OK, "object with whitespace, UTF-8 and escapes");
}

Test(audit_validate, undecodable_bytes)
{
    static const uint8_t truncated_string[] = {0x0a, 0x24, '0',
                                               '1'};     /* field 1: 36 bytes, 2 sent */
    static const uint8_t bad_wire_type[] = {0x0f, 0x00}; /* field 1, wire type 7 */
    static const uint8_t endless_varint[] = {0x30, 0xff, 0xff, 0xff}; /* field 6, varint cut off */
    static const uint8_t garbage[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                      0xff, 0xff, 0xff, 0xff, 0xff};
    static const uint8_t field_zero[] = {0x02, 0x00}; /* field number 0 */
    struct {
        const uint8_t *p;
        size_t n;
    } cases[] = {{truncated_string, sizeof truncated_string},
                 {bad_wire_type, sizeof bad_wire_type},
                 {endless_varint, sizeof endless_varint},
                 {garbage, sizeof garbage},
                 {field_zero, sizeof field_zero}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        audit_reason r = audit_validate(cases[i].p, cases[i].n, &ev, &details);
        cr_expect_eq(r, AUDIT_UNDECODABLE, "case %zu: %s", i, audit_reason_name(r));
    }
    /* a valid envelope cut short anywhere inside its last field */
    fields f = good();
    size_t n = pack(&f);
    cr_expect_eq(audit_validate(wire, n - 1, &ev, &details), AUDIT_UNDECODABLE);
}

Test(audit_validate, empty_message_decodes_but_has_no_event_id)
{
    cr_expect_eq(audit_validate((const uint8_t *)"", 0, &ev, &details), AUDIT_BAD_EVENT_ID);
}

Test(audit_validate, unknown_body_fields_fall_back_to_details_json)
{
    /* a newer publisher's typed body (field 99) this build does not know:
     * decoding skips it; the details are then details_json */
    fields f = good();
    size_t n = pack(&f);
    static const uint8_t body[] = {0x9a, 0x06, 0x03, 0x0a, 0x01, 'x'}; /* field 99, 3 bytes */
    memcpy(wire + n, body, sizeof body);
    cr_assert_eq(audit_validate(wire, n + sizeof body, &ev, &details), AUDIT_OK);
    cr_expect_str_eq(details.data, f.details_json);
}

Test(audit_validate, bad_ids)
{
    static const char *const bad[] = {
        "",
        "not-a-uuid",
        "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5",   /* one short */
        "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5bb", /* one long */
        "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5g",  /* not hex */
        "0190a1b2c3d47e5f8a9b0c1d2e3f4a5b0000",  /* no dashes */
        "{0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        fields f = good();
        f.event_id = bad[i];
        expect(&f, AUDIT_BAD_EVENT_ID, bad[i]);
        f = good();
        f.resource_id = bad[i];
        expect(&f, AUDIT_BAD_RESOURCE_ID, bad[i]);
        f = good();
        f.actor_id = bad[i];
        expect(&f, AUDIT_BAD_ACTOR_ID, bad[i]);
    }
}

static char *repeat(char c, size_t n)
{
    char *s = malloc(n + 1);
    cr_assert_not_null(s);
    memset(s, c, n);
    s[n] = '\0';
    return s;
}

Test(audit_validate, bad_resource_types)
{
    char *long_type = repeat('r', AUDIT_TYPE_MAX + 1);
    char long_event[128];
    snprintf(long_event, sizeof long_event, "%s.x", long_type);
    struct {
        const char *rt, *et;
    } cases[] = {
        {"", ".created"},        {"bad type", "bad type.created"},
        {"a.b", "a.b.created"},  {"caf\xc3\xa9", "caf\xc3\xa9.created"},
        {long_type, long_event}, {"semi;colon", "semi;colon.created"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fields f = good();
        f.resource_type = cases[i].rt;
        f.event_type = cases[i].et;
        expect(&f, AUDIT_BAD_RESOURCE_TYPE, cases[i].rt);
    }
    free(long_type);
}

Test(audit_validate, bad_event_types)
{
    char *verb = repeat('v', AUDIT_TYPE_MAX - strlen("contract."));
    char at_max[128], over_max[128];
    snprintf(at_max, sizeof at_max, "contract.%s", verb);
    snprintf(over_max, sizeof over_max, "contract.%sv", verb);
    cr_assert_eq(strlen(at_max), AUDIT_TYPE_MAX);
    const char *const bad[] = {
        "",
        "contract",           /* no verb */
        "contract.",          /* empty verb */
        "identity.created",   /* another resource type */
        "contracts.signed",   /* prefix matches, then no dot */
        "contrac.signed",     /* shorter than the resource type */
        "contract.sig ned",   /* bad character in the verb */
        "contract.signed.by", /* a dot in the verb */
        "contract.sign\xc3\xa9",
        over_max,
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        fields f = good();
        f.event_type = bad[i];
        expect(&f, AUDIT_BAD_EVENT_TYPE, bad[i]);
    }
    fields f = good();
    f.event_type = at_max;
    cr_expect_eq(check(&f), AUDIT_OK, "an event type of exactly %d characters fits",
                 AUDIT_TYPE_MAX);
    cr_expect_eq(ev.event_type_len, AUDIT_TYPE_MAX);
    cr_expect_str_eq(ev.event_type, at_max);

    /* the longest resource type leaves no room for ".<verb>" */
    char *rt = repeat('r', AUDIT_TYPE_MAX);
    char et[128];
    snprintf(et, sizeof et, "%s.x", rt);
    f = good();
    f.resource_type = rt;
    f.event_type = et;
    expect(&f, AUDIT_BAD_EVENT_TYPE, "50-character resource type");
    free(rt);
    free(verb);
}

Test(audit_validate, occurred_at_bounds)
{
    const int64_t bad[] = {0, -1, MIN_US - 1, MAX_US, MAX_US + 1, INT64_MAX, INT64_MIN};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        fields f = good();
        f.occurred_us = bad[i];
        expect(&f, AUDIT_BAD_OCCURRED_AT, "out of range");
    }
    const int64_t ok[] = {MIN_US, MAX_US - 1};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        fields f = good();
        f.occurred_us = ok[i];
        cr_expect_eq(check(&f), AUDIT_OK, "boundary %zu accepted", i);
        cr_expect_eq(ev.occurred_us, ok[i]);
    }
}

Test(audit_validate, bad_details)
{
    const char *const bad[] = {
        "[]",
        "[{\"a\": 1}]",
        "\"text\"",
        "42",
        "null",
        "true",
        "{",
        "{\"a\": }",
        "{\"a\": 1,}",
        "{a: 1}",
        "{\"a\": 1} {}",
        "{\"a\": 1} x",
        "{\"nul\": \"\\u0000\"}",
        "{\"\\u0000\": 1}",
        "{\"lone\": \"\\ud800\"}",
        "{\"bad utf8\": \"\xc3\x28\"}",
        "{\"dup\": 1, \"dup\": 2}",
        "{\"big\": 1e999}",
        "{\"a\": 01}",
        "{\"a\": NaN}",
        "{\"tab\": \"a\tb\"}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        fields f = good();
        f.details_json = bad[i];
        expect(&f, AUDIT_BAD_DETAILS, bad[i]);
    }
}

Test(audit_validate, nesting_is_bounded)
{
    char deep[2 * (CMS_JSON_MAX_DEPTH + 1) + 16];
    size_t n = 0;
    for (int i = 0; i < CMS_JSON_MAX_DEPTH; i++)
        n += (size_t)snprintf(deep + n, sizeof deep - n, "%s", i ? "[" : "{\"a\":");
    for (int i = CMS_JSON_MAX_DEPTH - 1; i >= 0; i--)
        n += (size_t)snprintf(deep + n, sizeof deep - n, "%s", i ? "]" : "}");
    fields f = good();
    f.details_json = deep;
    expect(&f, AUDIT_OK, "exactly the maximum depth");

    char deeper[2 * (CMS_JSON_MAX_DEPTH + 2) + 16];
    n = 0;
    for (int i = 0; i <= CMS_JSON_MAX_DEPTH; i++)
        n += (size_t)snprintf(deeper + n, sizeof deeper - n, "%s", i ? "[" : "{\"a\":");
    for (int i = CMS_JSON_MAX_DEPTH; i >= 0; i--)
        n += (size_t)snprintf(deeper + n, sizeof deeper - n, "%s", i ? "]" : "}");
    f.details_json = deeper;
    expect(&f, AUDIT_BAD_DETAILS, "one level deeper");
}

/* {"k":"xx...x"} of exactly len bytes */
static char *object_of(size_t len)
{
    cr_assert_gt(len, 8);
    char *t = malloc(len + 1);
    cr_assert_not_null(t);
    memcpy(t, "{\"k\":\"", 6);
    memset(t + 6, 'x', len - 8);
    memcpy(t + len - 2, "\"}", 3);
    return t;
}

Test(audit_validate, details_size_is_capped)
{
    char *at_max = object_of(AUDIT_DETAILS_MAX), *over = object_of(AUDIT_DETAILS_MAX + 1);
    cr_assert_eq(strlen(at_max), (size_t)AUDIT_DETAILS_MAX);
    fields f = good();
    f.details_json = at_max;
    cr_expect_eq(check(&f), AUDIT_OK, "exactly the maximum size (a message larger than the arena)");
    cr_expect_eq(details.len, (size_t)AUDIT_DETAILS_MAX);
    f.details_json = over;
    expect(&f, AUDIT_BAD_DETAILS, "one byte over the maximum");
    free(at_max);
    free(over);

    /* and a small one right after large ones decodes as before */
    f = good();
    cr_expect_eq(check(&f), AUDIT_OK);
    cr_expect_str_eq(details.data, f.details_json);
}

/* A typed body (Envelope fields 16 and up) is what gets stored, rendered
 * from its descriptor, whatever details_json says. */
Test(audit_validate, a_typed_body_is_rendered_from_its_descriptor)
{
    Cms__V1__Envelope e = CMS__V1__ENVELOPE__INIT;
    Cms__V1__CredentialIssued body = CMS__V1__CREDENTIAL_ISSUED__INIT;
    body.credential_id = (char *)"0190a1b2-c3d4-7e5f-8a9b-000000000009";
    body.identity_id = (char *)RESOURCE_ID;
    body.type = (char *)"api_key";
    body.expires_at_us = INT64_C(1893456000000000);
    e.event_id = (char *)EVENT_ID;
    e.event_type = (char *)"credential.issued";
    e.resource_type = (char *)"credential";
    e.resource_id = (char *)RESOURCE_ID;
    e.actor_id = (char *)ACTOR_ID;
    e.occurred_at_us = OCCURRED;
    e.details_json = (char *)"{\"ignored\": true}";
    e.body_case = CMS__V1__ENVELOPE__BODY_CREDENTIAL_ISSUED;
    e.credential_issued = &body;
    size_t n = cms__v1__envelope__pack(&e, wire);
    cr_assert_eq(audit_validate(wire, n, &ev, &details), AUDIT_OK);
    cr_assert_str_eq(details.data, "{\"credential_id\":\"0190a1b2-c3d4-7e5f-8a9b-000000000009\","
                                   "\"identity_id\":\"" RESOURCE_ID "\",\"type\":\"api_key\","
                                   "\"expires_at_us\":\"1893456000000000\"}");

    /* an empty body of a known type is still that type's (empty) object */
    Cms__V1__IdentityStatusChanged empty = CMS__V1__IDENTITY_STATUS_CHANGED__INIT;
    e.body_case = CMS__V1__ENVELOPE__BODY_IDENTITY_STATUS_CHANGED;
    e.identity_status_changed = &empty;
    e.event_type = (char *)"identity.status_changed";
    e.resource_type = (char *)"identity";
    n = cms__v1__envelope__pack(&e, wire);
    cr_assert_eq(audit_validate(wire, n, &ev, &details), AUDIT_OK);
    cr_assert_str_eq(details.data, "{}");
}
