/* Authentication across services: cms-testsvc resolves its callers through
 * cms-identity (CMS_TESTSVC_REMOTE_AUTH=1), as every real service does.
 * Its cache lifetime is set to 30 s here, so a refusal within 3 s of a
 * revocation, a suspension or an expiry proves the events invalidated it. */
#include "cms/v1/command.pb-c.h"
#include "cms/v1/envelope.pb-c.h"
#include "cms/v1/identity.pb-c.h"
#include "svcfx.h"
#include "testcmd.h"
#include "testenv.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static svcfx F;
static void setup(void)
{
    svcfx_setup(&F, "authn_test");
    svcfx_start(&F, "cms-identity", NULL);
    /* beside it, cms-testsvc authenticating its callers through it */
    const char *set[] = {"CMS_TESTSVC_REMOTE_AUTH=1", "CMS_AUTH_CACHE=30s", NULL};
    svcfx_start_at(&F, 1, "cms-testsvc", set);
}

static void teardown(void)
{
    svcfx_teardown(&F);
}

TestSuite(authn, .init = setup, .fini = teardown, .timeout = 120);

/* cms-testsvc's echo as key: the reply's error code (0: let in). */
static int echo_as(const char *key)
{
    char subject[128];
    snprintf(subject, sizeof subject, "%s.testsvc.echo", F.prefix);
    Cms__V1__Envelope e = CMS__V1__ENVELOPE__INIT;
    e.event_type = (char *)"x.y";
    Cms__V1__Reply *r = cms_test_command(F.nc, subject, key, NULL, &e.base);
    int code = cms_test_reply_code(r);
    cms__v1__reply__free_unpacked(r, NULL);
    return code;
}

static void refused_within_3s(const char *key, const char *what)
{
    double t0 = cms_test_now_ms();
    int code;
    while ((code = echo_as(key)) == 0) {
        cr_assert_lt(cms_test_now_ms() - t0, 3000,
                     "%s: cms-testsvc still let the key in after 3 s (cache 30 s)", what);
        cms_test_pause_ms(20);
    }
    cr_assert_eq(code, CMS__V1__ERROR_CODE__PERMISSION_DENIED, "%s", what);
}

static Cms__V1__Credential *new_key(const char *identity_id, int64_t ttl_us)
{
    Cms__V1__IssueCredential m = CMS__V1__ISSUE_CREDENTIAL__INIT;
    m.identity_id = (char *)identity_id;
    m.type = (char *)"api_key";
    m.expires_at_us = cms_test_wall_us() + ttl_us;
    Cms__V1__Credential *c = NULL;
    char field[256], msg[256];
    cr_assert_eq(svcfx_call(&F, "identity", F.admin_key, NULL, "issue_credential", &m.base,
                            &cms__v1__credential__descriptor, (ProtobufCMessage **)&c, field, msg),
                 0, "%s", msg);
    return c;
}

Test(authn, another_service_refuses_revoked_suspended_and_expired_keys)
{
    cr_assert_eq(echo_as(F.admin_key), 0, "the admin is let in");
    cr_assert_eq(echo_as(NULL), CMS__V1__ERROR_CODE__PERMISSION_DENIED);
    char other[CMS_APIKEY_LEN + 1];
    snprintf(other, sizeof other, "%s", F.admin_key);
    other[CMS_APIKEY_LEN - 2] = other[CMS_APIKEY_LEN - 2] == 'A' ? 'B' : 'A';
    cr_assert_eq(echo_as(other), CMS__V1__ERROR_CODE__PERMISSION_DENIED, "a wrong secret");

    char id[37], k1[CMS_APIKEY_LEN + 1];
    svcfx_insert(&F, "svc-user", "user", "active", "{}", 3600, id, k1);
    Cms__V1__Credential *k2 = new_key(id, 3600 * INT64_C(1000000));
    Cms__V1__Credential *k3 = new_key(id, 2000000);
    cr_assert_eq(echo_as(k1), 0);
    cr_assert_eq(echo_as(k2->api_key), 0);
    cr_assert_eq(echo_as(k3->api_key), 0);

    /* revocation of one key: that key only */
    Cms__V1__RevokeCredential rv = CMS__V1__REVOKE_CREDENTIAL__INIT;
    rv.id = k2->id;
    char field[256], msg[256];
    cr_assert_eq(svcfx_call(&F, "identity", F.admin_key, NULL, "revoke_credential", &rv.base,
                            &cms__v1__credential__descriptor, NULL, field, msg),
                 0, "%s", msg);
    refused_within_3s(k2->api_key, "revoked");
    cr_assert_eq(echo_as(k1), 0, "the other key still works");

    /* expiry */
    refused_within_3s(k3->api_key, "expired");

    /* suspension: every key of the identity */
    Cms__V1__SetIdentityStatus ss = CMS__V1__SET_IDENTITY_STATUS__INIT;
    ss.id = id;
    ss.status = (char *)"suspended";
    cr_assert_eq(svcfx_call(&F, "identity", F.admin_key, NULL, "set_status", &ss.base,
                            &cms__v1__identity__descriptor, NULL, field, msg),
                 0, "%s", msg);
    refused_within_3s(k1, "suspended");
    cms__v1__credential__free_unpacked(k2, NULL);
    cms__v1__credential__free_unpacked(k3, NULL);
}

Test(authn, without_cms_identity_an_unknown_caller_is_unavailable_not_denied)
{
    /* the admin's key in cms-testsvc's cache: an echo answered from it (for
     * a second after any invalidation, such as identity's first events,
     * nothing is cached) */
    double t0 = cms_test_now_ms();
    for (;;) {
        double before = svcfx_metric(&F, 1, "cms_auth_cache_hits_total");
        cr_assert_eq(echo_as(F.admin_key), 0);
        if (svcfx_metric(&F, 1, "cms_auth_cache_hits_total") > before)
            break;
        cr_assert_lt(cms_test_now_ms() - t0, 10000, "the admin's key cached within 10 s");
        cms_test_pause_ms(50);
    }
    svcfx_kill9(&F);
    char id[37], key[CMS_APIKEY_LEN + 1];
    svcfx_insert(&F, "late", "user", "active", "{}", 3600, id, key);
    cr_assert_eq(echo_as(key), CMS__V1__ERROR_CODE__UNAVAILABLE,
                 "nobody can say who it is: retry later, not refused");
    cr_assert_eq(echo_as(F.admin_key), 0, "a cached caller is still let in");
    svcfx_start(&F, "cms-identity", NULL);
    cr_assert_eq(echo_as(key), 0, "resolved once cms-identity is back");
}
