/* cms-identity while PostgreSQL is away: commands that need the database
 * answer UNAVAILABLE within their deadline (never hang, never a wrong
 * refusal), keys already resolved keep working from the cache, a key not
 * yet known is UNAVAILABLE (not PERMISSION_DENIED), and a credential that
 * came due during the outage is announced expired once the database is
 * back. A cms-identity killed with SIGKILL loses no committed event. */
#include "cms/v1/command.pb-c.h"
#include "cms/v1/envelope.pb-c.h"
#include "cms/v1/identity.pb-c.h"
#include "svcfx.h"
#include "testenv.h"

#include <criterion/criterion.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define UNAVAILABLE CMS__V1__ERROR_CODE__UNAVAILABLE

static svcfx F;
static bool g_pg_down;
static char g_field[256], g_msg[256];

static void setup(void)
{
    svcfx_setup(&F, "identity_fault");
    const char *set[] = {"CMS_AUTH_CACHE=60s", NULL};
    svcfx_start(&F, "cms-identity", set);
}

static void teardown(void)
{
    if (g_pg_down)
        (void)cms_test_ctl("pg-start");
    g_pg_down = false;
    svcfx_teardown(&F);
}

TestSuite(identity_fault, .init = setup, .fini = teardown, .timeout = 180);

static int create(const char *name, Cms__V1__Identity **out)
{
    Cms__V1__CreateIdentity m = CMS__V1__CREATE_IDENTITY__INIT;
    m.name = (char *)name;
    m.type = (char *)"machine";
    return svcfx_call(&F, "identity", F.admin_key, NULL, "create", &m.base,
                      &cms__v1__identity__descriptor, (ProtobufCMessage **)out, g_field, g_msg);
}

static int authenticate(const char *key)
{
    Cms__V1__Authenticate m = CMS__V1__AUTHENTICATE__INIT;
    m.api_key = (char *)key;
    return svcfx_call(&F, "identity", NULL, NULL, "authenticate", &m.base,
                      &cms__v1__principal__descriptor, NULL, g_field, g_msg);
}

static bool saw_event(const char *type, const char *resource_id, double timeout_ms)
{
    Cms__V1__Envelope *e = svcfx_wait_event(&F, type, resource_id, timeout_ms);
    if (e)
        cms__v1__envelope__free_unpacked(e, NULL);
    return e != NULL;
}

Test(identity_fault, a_database_outage_is_unavailable_and_expiry_catches_up)
{
    Cms__V1__Identity *m = NULL;
    cr_assert_eq(create("before", &m), 0, "%s", g_msg);
    cr_assert_eq(authenticate(F.admin_key), 0, "the admin's key is resolved (and cached)");
    Cms__V1__IssueCredential ic = CMS__V1__ISSUE_CREDENTIAL__INIT;
    ic.identity_id = m->id;
    ic.type = (char *)"api_key";
    ic.expires_at_us = cms_test_wall_us() + 2000000;
    Cms__V1__Credential *c = NULL;
    cr_assert_eq(svcfx_call(&F, "identity", F.admin_key, NULL, "issue_credential", &ic.base,
                            &cms__v1__credential__descriptor, (ProtobufCMessage **)&c, g_field,
                            g_msg),
                 0, "%s", g_msg);
    char unknown_id[37], unknown_key[CMS_APIKEY_LEN + 1];
    svcfx_insert(&F, "never-seen", "user", "active", "{}", 3600, unknown_id, unknown_key);

    cr_assert_eq(cms_test_ctl("pg-stop"), 0);
    g_pg_down = true;
    double t0 = cms_test_now_ms();
    cr_assert_eq(create("during", NULL), UNAVAILABLE, "a write without a database");
    cr_assert_lt(cms_test_now_ms() - t0, 11000, "answered within the command deadline");
    cr_assert_eq(authenticate(F.admin_key), 0, "a cached key still works");
    cr_assert_eq(authenticate(unknown_key), UNAVAILABLE,
                 "a key nobody can check now is unavailable, not refused");
    /* the short-lived key comes due while the database is away */
    while (cms_test_wall_us() < c->expires_at_us + 500000) {
        cms_test_pause_ms(100);
    }
    cr_assert_eq(cms_test_ctl("pg-start"), 0);
    g_pg_down = false;
    cr_assert(saw_event("credential.expired", c->id, 15000),
              "the expiry that came due during the outage is announced once it is back");
    double t1 = cms_test_now_ms();
    int code;
    while ((code = create("after", NULL)) == UNAVAILABLE)
        cr_assert_lt(cms_test_now_ms() - t1, 15000, "writes resume");
    cr_assert_eq(code, 0, "%s", g_msg);
    cr_assert_eq(authenticate(unknown_key), 0, "and keys resolve again");
    cms__v1__credential__free_unpacked(c, NULL);
    cms__v1__identity__free_unpacked(m, NULL);
}

Test(identity_fault, a_killed_process_loses_no_committed_event)
{
    enum { N = 40 };
    char ids[N][37];
    for (int i = 0; i < N; i++) {
        char name[32];
        snprintf(name, sizeof name, "burst-%d", i);
        Cms__V1__Identity *m = NULL;
        cr_assert_eq(create(name, &m), 0, "%s", g_msg);
        snprintf(ids[i], sizeof ids[i], "%s", m->id);
        cms__v1__identity__free_unpacked(m, NULL);
    }
    /* SIGKILL right after the last reply: some events may still be in the outbox */
    svcfx_kill9(&F);
    svcfx_start(&F, "cms-identity", NULL);
    for (int i = 0; i < N; i++)
        cr_assert(saw_event("identity.created", ids[i], 15000), "identity.created of %s", ids[i]);
    /* rows published but not yet marked so when it died wait for the dead
     * relay's lease to lapse (ten polls, 10 s), then go (and are kept,
     * marked published, for outbox-retain) */
    double t0 = cms_test_now_ms();
    bool empty = false;
    while (!empty && cms_test_now_ms() - t0 < 25000) {
        char *left = svcfx_sql(&F, "SELECT count(*) FROM outbox WHERE source = 'identity' "
                                   "AND published_at IS NULL");
        empty = left && strcmp(left, "0") == 0;
        free(left);
        if (!empty)
            cms_test_pause_ms(100);
    }
    cr_assert(empty, "the outbox drains after the restart");
}
