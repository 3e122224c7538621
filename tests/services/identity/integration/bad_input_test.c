/* cms-identity's doors against bad input: every command subject refuses
 * bytes that are not its request (too large, cut short, the wrong wire
 * type, a NUL or invalid UTF-8 in a string) with INVALID_ARGUMENT naming
 * what is wrong; SQL metacharacters in every text field are stored and
 * read back byte for byte, never run; a request_id replayed with another
 * body gets the first reply and does nothing new; and /healthz and /readyz
 * answer through hundreds of idle and slow HTTP connections. */
#include "cms/v1/command.pb-c.h"
#include "cms/v1/identity.pb-c.h"
#include "doorfx.h"
#include "svcfx.h"
#include "testenv.h"

#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OK 0
#define INVALID CMS__V1__ERROR_CODE__INVALID_ARGUMENT
#define NOT_FOUND CMS__V1__ERROR_CODE__NOT_FOUND

static svcfx F;
static char g_field[256], g_msg[256];

static void setup(void)
{
    svcfx_setup(&F, "identity_bad");
    svcfx_start(&F, "cms-identity", NULL);
}

static void teardown(void)
{
    svcfx_teardown(&F);
}

TestSuite(bad_input, .init = setup, .fini = teardown, .timeout = 120);

static const doorfx_verb VERBS[] = {
    {"create", &cms__v1__create_identity__descriptor},
    {"get", &cms__v1__get_identity__descriptor},
    {"list", &cms__v1__list_identities__descriptor},
    {"set_status", &cms__v1__set_identity_status__descriptor},
    {"issue_credential", &cms__v1__issue_credential__descriptor},
    {"revoke_credential", &cms__v1__revoke_credential__descriptor},
    {"list_credentials", &cms__v1__list_credentials__descriptor},
    {"authenticate", &cms__v1__authenticate__descriptor},
    {NULL, NULL},
};

static int create(const char *rid, const char *name, const char *metadata, Cms__V1__Identity **out)
{
    Cms__V1__CreateIdentity m = CMS__V1__CREATE_IDENTITY__INIT;
    m.name = (char *)name;
    m.type = (char *)"user";
    m.metadata_json = (char *)metadata;
    return svcfx_call(&F, "identity", F.admin_key, rid, "create", &m.base,
                      &cms__v1__identity__descriptor, (ProtobufCMessage **)out, g_field, g_msg);
}

static int get_by_name(const char *name, Cms__V1__Identity **out)
{
    Cms__V1__GetIdentity m = CMS__V1__GET_IDENTITY__INIT;
    m.name = (char *)name;
    return svcfx_call(&F, "identity", F.admin_key, NULL, "get", &m.base,
                      &cms__v1__identity__descriptor, (ProtobufCMessage **)out, g_field, g_msg);
}

Test(bad_input, every_command_refuses_bytes_that_are_not_its_request)
{
    doorfx_wire(F.nc, F.prefix, "identity", F.admin_key, VERBS, 64 * 1024);
    /* nothing was made of any of it, and the service goes on */
    char *n =
        svcfx_sql(&F, "SELECT count(*) FROM identities WHERE name NOT IN ('admin', 'system')");
    cr_assert_str_eq(n, "0");
    free(n);
    Cms__V1__Identity *id = NULL;
    cr_assert_eq(create(NULL, "after-the-junk", "", &id), OK, "%s: %s", g_field, g_msg);
    cms__v1__identity__free_unpacked(id, NULL);
}

/* Text a hand-built query would run; it must come back as it went in. */
static const char *const NASTY[] = {
    "x'; DROP TABLE identities; --",
    "Robert\"); DELETE FROM credentials WHERE (\"1\"=\"1",
    "back\\slash \\' \\\\ end\\",
    "$1 $2::text $$ dollar $$ $tag$",
    "100% _under_ %s %n",
    "' OR '1'='1",
    "semi; colon -- and /* comment */",
};

Test(bad_input, sql_metacharacters_in_every_text_field_round_trip_unchanged)
{
    size_t n = sizeof NASTY / sizeof NASTY[0];
    char *before = svcfx_sql(&F, "SELECT count(*) FROM identities");
    for (size_t i = 0; i < n; i++) {
        /* name, and a metadata object with the same text as key and value */
        json_t *meta = json_pack("{s:s,s:{s:s}}", NASTY[i], NASTY[i], "nested", "v", NASTY[i]);
        char *mj = json_dumps(meta, JSON_COMPACT);
        Cms__V1__Identity *made = NULL;
        cr_assert_eq(create(NULL, NASTY[i], mj, &made), OK, "create %s: %s: %s", NASTY[i], g_field,
                     g_msg);
        cr_assert_str_eq(made->name, NASTY[i]);
        Cms__V1__Identity *got = NULL;
        cr_assert_eq(get_by_name(NASTY[i], &got), OK, "get %s: %s", NASTY[i], g_msg);
        cr_assert_str_eq(got->id, made->id);
        cr_assert_str_eq(got->name, NASTY[i], "the name read back byte for byte");
        json_t *back = json_loads(got->metadata_json, 0, NULL);
        cr_assert(json_equal(back, meta), "metadata read back: %s", got->metadata_json);
        json_decref(back);
        /* a reason of the same text */
        Cms__V1__SetIdentityStatus ss = CMS__V1__SET_IDENTITY_STATUS__INIT;
        ss.id = made->id;
        ss.status = (char *)"inactive";
        ss.reason = (char *)NASTY[i];
        cr_assert_eq(svcfx_call(&F, "identity", F.admin_key, NULL, "set_status", &ss.base,
                                &cms__v1__identity__descriptor, NULL, g_field, g_msg),
                     OK, "set_status: %s: %s", g_field, g_msg);
        free(mj);
        json_decref(meta);
        cms__v1__identity__free_unpacked(made, NULL);
        cms__v1__identity__free_unpacked(got, NULL);
    }
    /* what a query built by concatenation would have matched, matches nothing */
    cr_assert_eq(get_by_name("nobody' OR '1'='1", NULL), NOT_FOUND);
    /* closed vocabularies refuse it by name */
    Cms__V1__ListIdentities li = CMS__V1__LIST_IDENTITIES__INIT;
    li.type = (char *)"user' OR '1'='1";
    cr_assert_eq(svcfx_call(&F, "identity", F.admin_key, NULL, "list", &li.base,
                            &cms__v1__identity_page__descriptor, NULL, g_field, g_msg),
                 INVALID);
    cr_assert_str_eq(g_field, "type");
    li.type = (char *)"";
    li.after = (char *)"'; DROP TABLE identities; --";
    cr_assert_eq(svcfx_call(&F, "identity", F.admin_key, NULL, "list", &li.base,
                            &cms__v1__identity_page__descriptor, NULL, g_field, g_msg),
                 INVALID);
    cr_assert_str_eq(g_field, "after");
    /* a NUL inside JSON text, where the wire allows it as \u0000: jsonb
     * cannot hold it, so it is refused by name */
    cr_assert_eq(create(NULL, "nul-in-json", "{\"k\":\"a\\u0000b\"}", NULL), INVALID);
    cr_assert_str_eq(g_field, "metadata_json");
    /* numbers PostgreSQL's jsonb refuses: beyond double range (jansson),
     * beyond numeric's scale (a double reads it as 0, jsonb refuses it) */
    static const char *const numbers[] = {"1e400", "1e-16384", "0e-20000", "NaN", "-Infinity"};
    for (size_t i = 0; i < sizeof numbers / sizeof numbers[0]; i++) {
        char meta[64];
        snprintf(meta, sizeof meta, "{\"n\":%s}", numbers[i]);
        cr_assert_eq(create(NULL, "numbers", meta, NULL), INVALID, "%s: %s", numbers[i], g_msg);
        cr_assert_str_eq(g_field, "metadata_json", "%s", numbers[i]);
    }
    /* and every table is still there, every row intact */
    char *count = svcfx_sql(&F, "SELECT count(*) FROM identities");
    char want[32];
    snprintf(want, sizeof want, "%ld", atol(before) + (long)n);
    free(before);
    cr_assert_str_eq(count, want);
    free(count);
    count = svcfx_sql(&F, "SELECT count(*) FROM credentials");
    cr_assert_not_null(count, "credentials is still there");
    free(count);
}

Test(bad_input, a_request_id_replayed_with_another_body_gets_the_first_reply_and_does_nothing)
{
    Cms__V1__Identity *first = NULL, *second = NULL;
    cr_assert_eq(create("replay-1", "first-body", "", &first), OK, "%s", g_msg);
    cr_assert_eq(create("replay-1", "second-body", "", &second), OK, "%s", g_msg);
    cr_assert_str_eq(second->id, first->id, "the first reply, again");
    cr_assert_str_eq(second->name, "first-body");
    cr_assert_eq(get_by_name("second-body", NULL), NOT_FOUND, "the second body never ran");
    cms__v1__identity__free_unpacked(first, NULL);
    cms__v1__identity__free_unpacked(second, NULL);
}

Test(bad_input, probes_answer_through_hundreds_of_idle_and_slow_connections)
{
    doorfx_slowloris(F.ports[0], 300, 3000);
    cr_assert_geq(svcfx_metric(&F, 0, "cms_http_connections_evicted_total"), 300 - 128,
                  "the idle and slow ones gave way");
    /* and commands are untouched by it */
    Cms__V1__Identity *id = NULL;
    cr_assert_eq(create(NULL, "after-the-flood", "", &id), OK, "%s", g_msg);
    cms__v1__identity__free_unpacked(id, NULL);
}
