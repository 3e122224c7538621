/* What a flood of well-formed API keys costs cms-identity's database,
 * against the real PostgreSQL and NATS: keys of one unknown credential id,
 * whatever their secrets, cost one look-up (shared while it runs, then
 * refused from the negative cache, as its metrics show); a credential with
 * such an id, once issued, authenticates at once; and beyond the cap of
 * look-ups in flight keys are answered UNAVAILABLE at once, the service
 * staying healthy and serving legitimate keys afterwards. */
#include "cms/v1/command.pb-c.h"
#include "cms/v1/envelope.pb-c.h"
#include "cms/v1/identity.pb-c.h"
#include "svcfx.h"
#include "testcmd.h"
#include "testenv.h"
#include "uuid.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OK 0
#define DENIED CMS__V1__ERROR_CODE__PERMISSION_DENIED
#define UNAVAILABLE CMS__V1__ERROR_CODE__UNAVAILABLE
#define BURST 200

static svcfx F;
static char g_field[256], g_msg[256];

static void start_with(const char *const *set)
{
    svcfx_setup(&F, "identity_flood");
    svcfx_start(&F, "cms-identity", set);
}

static void negative_setup(void)
{
    /* long, so that only the invalidation can let the issued key in in time */
    const char *set[] = {"CMS_AUTH_NEGATIVE_CACHE=30s", NULL};
    start_with(set);
}

static void capped_setup(void)
{
    const char *set[] = {"CMS_AUTH_LOOKUPS_MAX=1", NULL};
    start_with(set);
}

static void teardown(void)
{
    svcfx_teardown(&F);
}

TestSuite(negative, .init = negative_setup, .fini = teardown, .timeout = 120);
TestSuite(capped, .init = capped_setup, .fini = teardown, .timeout = 120);

static double metric(const char *name)
{
    double v = svcfx_metric(&F, 0, name);
    cr_assert_geq(v, 0, "%s is not on /metrics", name);
    return v;
}

static int authenticate(const char *key)
{
    Cms__V1__Authenticate m = CMS__V1__AUTHENTICATE__INIT;
    m.api_key = (char *)key;
    return svcfx_call(&F, "identity", NULL, NULL, "authenticate", &m.base,
                      &cms__v1__principal__descriptor, NULL, g_field, g_msg);
}

/* authenticate for each of n keys, all sent before any reply is read: the
 * error code of each reply into codes. */
static void authenticate_all(char (*keys)[CMS_APIKEY_LEN + 1], int n, int *codes)
{
    char subject[128];
    snprintf(subject, sizeof subject, "%s.identity.authenticate", F.prefix);
    Cms__V1__Authenticate *m = calloc((size_t)n, sizeof *m);
    const ProtobufCMessage **bodies = calloc((size_t)n, sizeof *bodies);
    Cms__V1__Reply **replies = calloc((size_t)n, sizeof *replies);
    cr_assert(m && bodies && replies);
    for (int i = 0; i < n; i++) {
        cms__v1__authenticate__init(&m[i]);
        m[i].api_key = keys[i];
        bodies[i] = &m[i].base;
    }
    cms_test_commands_each(F.nc, subject, NULL, NULL, bodies, n, replies);
    for (int i = 0; i < n; i++) {
        codes[i] = cms_test_reply_code(replies[i]);
        cms__v1__reply__free_unpacked(replies[i], NULL);
    }
    free(replies);
    free(bodies);
    free(m);
}

static int count(const int *codes, int n, int code)
{
    int k = 0;
    for (int i = 0; i < n; i++)
        k += codes[i] == code;
    return k;
}

Test(negative, keys_of_one_unknown_id_cost_one_lookup_and_an_issued_one_gets_in_at_once)
{
    static char keys[BURST][CMS_APIKEY_LEN + 1];
    static uint8_t secrets[BURST][CMS_APIKEY_SECRET_BYTES];
    int codes[BURST];
    cms_uuid id;
    char cred_id[CMS_UUID_STRLEN + 1];
    cms_uuid_v7(&id);
    cms_uuid_format(&id, cred_id);
    for (int i = 0; i < BURST; i++) /* one id, as many secrets */
        cr_assert_eq(cms_apikey_generate(&id, keys[i], secrets[i]), 0);
    double lookups = metric("cms_identity_auth_lookups_total");

    /* at once: one look-up, every key answered by its row (none), or, for
     * the keys that arrive after it ended, by the negative cache */
    authenticate_all(keys, BURST, codes);
    cr_assert_eq(count(codes, BURST, DENIED), BURST);
    cr_assert_eq(metric("cms_identity_auth_lookups_total") - lookups, 1,
                 "one look-up for a burst of one id");
    /* and afterwards: every one from the negative cache, no look-up */
    double hits = metric("cms_identity_auth_negative_hits_total");
    authenticate_all(keys, BURST, codes);
    cr_assert_eq(count(codes, BURST, DENIED), BURST);
    cr_assert_eq(metric("cms_identity_auth_lookups_total") - lookups, 1);
    cr_assert_eq(metric("cms_identity_auth_negative_hits_total") - hits, BURST);

    /* the credential is issued with that very id (as another replica or
     * cms-migrate would: its row, then its event) */
    char hash[CMS_APIKEY_HASH_LEN + 1], q[512];
    cms_apikey_hash(F.server_key, secrets[7], hash);
    snprintf(q, sizeof q,
             "INSERT INTO credentials (id, identity_id, type, value, expires_at) "
             "VALUES ('%s', '%s', 'api_key', '%s', now() + interval '1 hour') RETURNING 1",
             cred_id, F.admin_id, hash);
    free(svcfx_sql(&F, q));
    Cms__V1__Envelope e = CMS__V1__ENVELOPE__INIT;
    cms_uuid eid;
    char event_id[CMS_UUID_STRLEN + 1];
    cms_uuid_v7(&eid);
    cms_uuid_format(&eid, event_id);
    e.event_id = event_id;
    e.event_type = (char *)"credential.issued";
    e.resource_type = (char *)"credential";
    e.resource_id = cred_id;
    e.source = (char *)"identity";
    svcfx_publish(&F, &e, NULL);
    /* the event reaches the service on a subscription of its own, which may
     * come a moment after the ack here: asked again (each try waits for
     * its reply) until let in, well within the 30 s of the cache */
    double t0 = cms_test_now_ms();
    while (authenticate(keys[7]) != OK)
        cr_assert_lt(cms_test_now_ms() - t0, 5000, "the issued key is still refused: %s", g_msg);
    cr_assert_eq(authenticate(keys[8]), DENIED, "another secret of that id is not let in");
}

Test(capped, beyond_the_lookups_in_flight_keys_are_unavailable_and_the_service_stays_well)
{
    static char keys[BURST][CMS_APIKEY_LEN + 1];
    int codes[BURST];
    for (int i = 0; i < BURST; i++) { /* as many unknown ids */
        cms_uuid id;
        uint8_t secret[CMS_APIKEY_SECRET_BYTES];
        cms_uuid_v7(&id);
        cr_assert_eq(cms_apikey_generate(&id, keys[i], secret), 0);
    }
    double refused = metric("cms_identity_auth_lookups_refused_total");
    authenticate_all(keys, BURST, codes);
    int unavailable = count(codes, BURST, UNAVAILABLE);
    cr_assert_gt(unavailable, 0, "one look-up in flight at most: some keys wait for none");
    cr_assert_eq(unavailable + count(codes, BURST, DENIED), BURST, "nothing else");
    cr_assert_eq(metric("cms_identity_auth_lookups_refused_total") - refused, unavailable,
                 "each refusal counted");

    /* afterwards, legitimate keys are served */
    cr_assert_eq(authenticate(F.admin_key), OK, "%s", g_msg);
    cr_assert_eq(svcfx_identity_get(&F, F.admin_key, "admin", NULL, g_field, g_msg), OK, "%s",
                 g_msg);
    cr_assert_eq(authenticate(keys[0]), DENIED, "an unknown key alone is refused as ever");
}
