/* cms-contracts' doors against bad input: every command subject refuses
 * bytes that are not its request with INVALID_ARGUMENT naming what is
 * wrong; terms nested deeper than JSON may be, numbers PostgreSQL's jsonb
 * refuses and a NUL in JSON text are refused naming the field; SQL
 * metacharacters in the title, description, terms, metadata and reason
 * are stored and read back unchanged; a request_id replayed with another
 * body gets the first reply and creates nothing; an API key revoked while
 * cms-contracts holds it in its cache is refused at once; and the probes
 * answer through hundreds of idle and slow HTTP connections. */
#include "cms/v1/command.pb-c.h"
#include "cms/v1/identity.pb-c.h"
#include "ctfx.h"
#include "doorfx.h"
#include "testenv.h"

#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OK 0
#define INVALID CMS__V1__ERROR_CODE__INVALID_ARGUMENT
#define DAY 86400

static ctfx C;
static ctparty P, Q; /* provider, consumer */

static void setup(void)
{
    ctfx_setup(&C, "contracts_bad");
    ctfx_party(&C, "provider-bad", &P);
    ctfx_party(&C, "consumer-bad", &Q);
}

static void teardown(void)
{
    ctfx_teardown(&C);
}

TestSuite(bad_input, .init = setup, .fini = teardown, .timeout = 120);

static const doorfx_verb VERBS[] = {
    {"create", &cms__v1__create_contract__descriptor},
    {"update", &cms__v1__update_contract__descriptor},
    {"get", &cms__v1__contract_ref__descriptor},
    {"canonical", &cms__v1__contract_ref__descriptor},
    {"list", &cms__v1__list_contracts__descriptor},
    {"submit", &cms__v1__contract_ref__descriptor},
    {"activate", &cms__v1__contract_ref__descriptor},
    {"complete", &cms__v1__contract_ref__descriptor},
    {"terminate", &cms__v1__terminate_contract__descriptor},
    {"amend", &cms__v1__amend_contract__descriptor},
    {"sign", &cms__v1__sign_contract__descriptor},
    {NULL, NULL},
};

static int create(const char *title, const char *description, const char *terms,
                  const char *metadata, Cms__V1__Contract **out)
{
    Cms__V1__CreateContract m = CMS__V1__CREATE_CONTRACT__INIT;
    m.title = (char *)title;
    m.description = (char *)description;
    m.provider_id = P.id;
    m.consumer_id = Q.id;
    m.terms_json = (char *)terms;
    m.metadata_json = (char *)metadata;
    return ctfx_call(&C, &P, "create", &m.base, NULL, (ProtobufCMessage **)out);
}

static char *contracts_count(void)
{
    return svcfx_sql(&C.f, "SELECT count(*) FROM contracts");
}

Test(bad_input, every_command_refuses_bytes_that_are_not_its_request)
{
    doorfx_wire(C.f.nc, C.f.prefix, "contracts", P.key, VERBS, 64 * 1024);
    char *n = contracts_count();
    cr_assert_str_eq(n, "0", "nothing was made of any of it");
    free(n);
    Cms__V1__Contract *k = ctfx_create(&C, &P, &P, &Q, ctfx_terms(DAY, 2 * DAY, NULL));
    cms__v1__contract__free_unpacked(k, NULL);
}

/* terms of depth levels: {"start_date":..,"end_date":..,"x":[[[...]]]} */
static char *deep_terms(int depth)
{
    const char *base = ctfx_terms(DAY, 2 * DAY, NULL);
    size_t blen = strlen(base);
    char *t = malloc(blen + 2 * (size_t)depth + 16);
    cr_assert_not_null(t);
    memcpy(t, base, blen - 1); /* without its closing brace */
    size_t at = blen - 1;
    memcpy(t + at, ",\"x\":", 5);
    at += 5;
    memset(t + at, '[', (size_t)depth);
    at += (size_t)depth;
    memset(t + at, ']', (size_t)depth);
    at += (size_t)depth;
    t[at++] = '}';
    t[at] = '\0';
    return t;
}

Test(bad_input, json_too_deep_numbers_jsonb_refuses_and_nul_are_refused_by_name)
{
    /* beyond what the canonical form takes (64), what jsonb takes, what
     * jansson takes (2048) */
    static const int depths[] = {100, 2000, 5000};
    for (size_t i = 0; i < sizeof depths / sizeof depths[0]; i++) {
        char *deep = deep_terms(depths[i]);
        int code = create("deep", "", deep, "", NULL);
        cr_assert_eq(code, INVALID, "depth %d: %d %s", depths[i], code, C.msg);
        cr_assert_str_eq(C.field, "terms", "depth %d: [%s] %s", depths[i], C.field, C.msg);
        free(deep);
    }
    static const char *const numbers[] = {"1e400",     "-1e400", "1e-16384", "0e-20000",
                                          "1e-400000", "NaN",    "Infinity", "-Infinity"};
    for (size_t i = 0; i < sizeof numbers / sizeof numbers[0]; i++) {
        char extra[64];
        snprintf(extra, sizeof extra, "\"n\":%s", numbers[i]);
        int code = create("numbers", "", ctfx_terms(DAY, 2 * DAY, extra), "", NULL);
        cr_assert_eq(code, INVALID, "%s: %d %s", numbers[i], code, C.msg);
        cr_assert_str_eq(C.field, "terms", "%s: %s", numbers[i], C.msg);
    }
    cr_assert_eq(create("nul", "", ctfx_terms(DAY, 2 * DAY, "\"n\":\"a\\u0000b\""), "", NULL),
                 INVALID);
    cr_assert_str_eq(C.field, "terms", "%s", C.msg);
    cr_assert_eq(create("meta", "", ctfx_terms(DAY, 2 * DAY, NULL), "{\"n\":1e400}", NULL),
                 INVALID);
    cr_assert_str_eq(C.field, "metadata_json", "%s", C.msg);
    cr_assert_eq(create("meta", "", ctfx_terms(DAY, 2 * DAY, NULL), "{\"n\":1e-16384}", NULL),
                 INVALID);
    cr_assert_str_eq(C.field, "metadata_json", "%s", C.msg);
    /* the smallest numeric still holds is taken */
    Cms__V1__Contract *k = NULL;
    cr_assert_eq(
        create("tiny", "", ctfx_terms(DAY, 2 * DAY, "\"n\":1e-300"), "{\"n\":1e-16383}", &k), OK,
        "%s: %s", C.field, C.msg);
    cms__v1__contract__free_unpacked(k, NULL);
    char *n = contracts_count();
    cr_assert_str_eq(n, "1", "only the one that fits");
    free(n);
}

static const char *const NASTY[] = {
    "x'; DROP TABLE contracts; --",   "Robert\"); DELETE FROM contract_parties WHERE (\"1\"=\"1",
    "back\\slash \\' \\\\ end\\",     "$1 $2::text $$ dollar $$ $tag$",
    "100% _under_ %s %n ' OR '1'='1",
};

Test(bad_input, sql_metacharacters_in_every_text_field_round_trip_unchanged)
{
    for (size_t i = 0; i < sizeof NASTY / sizeof NASTY[0]; i++) {
        json_t *s = json_string(NASTY[i]);
        char *quoted = json_dumps(s, JSON_ENCODE_ANY);
        char extra[512];
        snprintf(extra, sizeof extra, "\"note\":%s,\"annex\":{\"comment\":%s}", quoted, quoted);
        char meta[512];
        snprintf(meta, sizeof meta, "{%s:%s}", quoted, quoted);
        const char *terms = ctfx_terms(DAY, 2 * DAY, extra);
        json_t *want_terms = json_loads(terms, 0, NULL);
        json_t *want_meta = json_loads(meta, 0, NULL);
        cr_assert_not_null(want_terms);
        cr_assert_not_null(want_meta);
        Cms__V1__Contract *made = NULL;
        cr_assert_eq(create(NASTY[i], NASTY[i], terms, meta, &made), OK, "create %s: %s: %s",
                     NASTY[i], C.field, C.msg);
        Cms__V1__Contract *got = NULL;
        cr_assert_eq(ctfx_simple(&C, &Q, "get", made->id, &got), OK, "%s", C.msg);
        cr_assert_str_eq(got->title, NASTY[i], "the title byte for byte");
        cr_assert_str_eq(got->description, NASTY[i], "the description byte for byte");
        json_t *t = json_loads(got->terms_json, 0, NULL);
        cr_assert(json_equal(t, want_terms), "terms read back: %s", got->terms_json);
        json_t *m = json_loads(got->metadata_json, 0, NULL);
        cr_assert(json_equal(m, want_meta), "metadata read back: %s", got->metadata_json);
        /* a termination reason of the same text */
        Cms__V1__TerminateContract tm = CMS__V1__TERMINATE_CONTRACT__INIT;
        tm.id = made->id;
        tm.reason = (char *)NASTY[i];
        Cms__V1__Contract *ended = NULL;
        cr_assert_eq(ctfx_call(&C, &P, "terminate", &tm.base, NULL, (ProtobufCMessage **)&ended),
                     OK, "terminate: %s: %s", C.field, C.msg);
        cr_assert_str_eq(ended->status, "terminated");
        json_decref(t);
        json_decref(m);
        json_decref(want_terms);
        json_decref(want_meta);
        json_decref(s);
        free(quoted);
        cms__v1__contract__free_unpacked(made, NULL);
        cms__v1__contract__free_unpacked(got, NULL);
        cms__v1__contract__free_unpacked(ended, NULL);
    }
    /* a status filter is a closed vocabulary, a cursor is opaque: refused */
    Cms__V1__ListContracts lc = CMS__V1__LIST_CONTRACTS__INIT;
    lc.status = (char *)"draft' OR '1'='1";
    cr_assert_eq(ctfx_call(&C, &P, "list", &lc.base, &cms__v1__contract_page__descriptor, NULL),
                 INVALID);
    cr_assert_str_eq(C.field, "status");
    lc.status = (char *)"";
    lc.after = (char *)"'; DROP TABLE contracts; --";
    cr_assert_eq(ctfx_call(&C, &P, "list", &lc.base, &cms__v1__contract_page__descriptor, NULL),
                 INVALID);
    cr_assert_str_eq(C.field, "after");
    char *n = contracts_count();
    char want[8];
    snprintf(want, sizeof want, "%zu", sizeof NASTY / sizeof NASTY[0]);
    cr_assert_str_eq(n, want, "every contract, and the table, still there");
    free(n);
}

Test(bad_input, a_request_id_replayed_with_another_body_gets_the_first_reply_and_does_nothing)
{
    Cms__V1__CreateContract m = CMS__V1__CREATE_CONTRACT__INIT;
    m.title = (char *)"first body";
    m.description = (char *)"";
    m.provider_id = P.id;
    m.consumer_id = Q.id;
    m.terms_json = (char *)ctfx_terms(DAY, 2 * DAY, NULL);
    m.metadata_json = (char *)"";
    Cms__V1__Contract *first = NULL, *second = NULL;
    cr_assert_eq(svcfx_call(&C.f, "contracts", P.key, "replay-1", "create", &m.base,
                            &cms__v1__contract__descriptor, (ProtobufCMessage **)&first, C.field,
                            C.msg),
                 OK, "%s", C.msg);
    m.title = (char *)"second body";
    cr_assert_eq(svcfx_call(&C.f, "contracts", P.key, "replay-1", "create", &m.base,
                            &cms__v1__contract__descriptor, (ProtobufCMessage **)&second, C.field,
                            C.msg),
                 OK, "%s", C.msg);
    cr_assert_str_eq(second->id, first->id, "the first reply, again");
    cr_assert_str_eq(second->title, "first body");
    char *n = contracts_count();
    cr_assert_str_eq(n, "1", "the second body never ran");
    free(n);
    cms__v1__contract__free_unpacked(first, NULL);
    cms__v1__contract__free_unpacked(second, NULL);
}

Test(bad_input, probes_answer_through_hundreds_of_idle_and_slow_connections)
{
    doorfx_slowloris(C.f.ports[CTFX_CONTRACTS], 300, 3000);
    cr_assert_geq(svcfx_metric(&C.f, CTFX_CONTRACTS, "cms_http_connections_evicted_total"),
                  300 - 128);
    Cms__V1__Contract *k = ctfx_create(&C, &P, &P, &Q, ctfx_terms(DAY, 2 * DAY, NULL));
    cms__v1__contract__free_unpacked(k, NULL);
}

/* cms-contracts' list as key: the reply's code. */
static int list_as(const char *key)
{
    Cms__V1__ListContracts lc = CMS__V1__LIST_CONTRACTS__INIT;
    return svcfx_call(&C.f, "contracts", key, NULL, "list", &lc.base,
                      &cms__v1__contract_page__descriptor, NULL, C.field, C.msg);
}

Test(bad_input, a_key_revoked_inside_the_cache_window_is_refused_at_once)
{
    /* a cache of a minute: a refusal within 3 s is the revocation event's */
    cr_assert_eq(svcfx_stop_at(&C.f, CTFX_CONTRACTS), 0);
    ctfx_start_contracts(&C, CTFX_CONTRACTS, (const char *const[]){"CMS_AUTH_CACHE=60s", NULL});
    Cms__V1__IssueCredential ic = CMS__V1__ISSUE_CREDENTIAL__INIT;
    ic.identity_id = P.id;
    ic.type = (char *)"api_key";
    ic.expires_at_us = cms_test_wall_us() + INT64_C(3600000000);
    Cms__V1__Credential *k = NULL;
    cr_assert_eq(svcfx_call(&C.f, "identity", C.f.admin_key, NULL, "issue_credential", &ic.base,
                            &cms__v1__credential__descriptor, (ProtobufCMessage **)&k, C.field,
                            C.msg),
                 OK, "%s", C.msg);
    /* until cms-contracts answers it from its cache (after an invalidation,
     * such as the issue's own event, nothing is cached for a moment) */
    double t0 = cms_test_now_ms();
    for (;;) {
        double before = svcfx_metric(&C.f, CTFX_CONTRACTS, "cms_auth_cache_hits_total");
        cr_assert_eq(list_as(k->api_key), OK, "%s", C.msg);
        if (svcfx_metric(&C.f, CTFX_CONTRACTS, "cms_auth_cache_hits_total") > before)
            break;
        cr_assert_lt(cms_test_now_ms() - t0, 10000, "the key cached within 10 s");
        cms_test_pause_ms(50);
    }
    Cms__V1__RevokeCredential rv = CMS__V1__REVOKE_CREDENTIAL__INIT;
    rv.id = k->id;
    cr_assert_eq(svcfx_call(&C.f, "identity", C.f.admin_key, NULL, "revoke_credential", &rv.base,
                            &cms__v1__credential__descriptor, NULL, C.field, C.msg),
                 OK, "%s", C.msg);
    t0 = cms_test_now_ms();
    int code;
    while ((code = list_as(k->api_key)) == OK) {
        cr_assert_lt(cms_test_now_ms() - t0, 3000,
                     "still let in 3 s after its revocation, with a cache of 60 s");
        cms_test_pause_ms(20);
    }
    cr_assert_eq(code, CMS__V1__ERROR_CODE__PERMISSION_DENIED, "%s", C.msg);
    cr_assert_eq(list_as(P.key), OK, "the party's other key still works");
    cms__v1__credential__free_unpacked(k, NULL);
}
