/* cms-identity against the real PostgreSQL and NATS: every command's
 * success and errors, authentication refused after revocation, expiry and
 * suspension, enclaves and attestations, racing creates, and the secret of
 * an API key nowhere but in the one reply that hands it out. */
#include "cms/v1/command.pb-c.h"
#include "cms/v1/envelope.pb-c.h"
#include "cms/v1/identity.pb-c.h"
#include "svcfx.h"
#include "testenv.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define OK 0
#define INVALID CMS__V1__ERROR_CODE__INVALID_ARGUMENT
#define NOT_FOUND CMS__V1__ERROR_CODE__NOT_FOUND
#define EXISTS CMS__V1__ERROR_CODE__ALREADY_EXISTS
#define PRECONDITION CMS__V1__ERROR_CODE__FAILED_PRECONDITION
#define DENIED CMS__V1__ERROR_CODE__PERMISSION_DENIED

static svcfx F;
static char g_field[256], g_msg[256];

#define MEASUREMENT "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

static void setup(void)
{
    svcfx_setup(&F, "identity_test");
    static char meas[160];
    snprintf(meas, sizeof meas, "CMS_ENCLAVE_MEASUREMENTS=%s", MEASUREMENT);
    const char *set[] = {meas, "CMS_AUTH_CACHE=2s", NULL};
    svcfx_start(&F, "cms-identity", set);
}

static void teardown(void)
{
    svcfx_teardown(&F);
}

TestSuite(identity, .init = setup, .fini = teardown, .timeout = 120);

static int create(const char *key, const char *name, const char *type, const char *metadata,
                  Cms__V1__Identity **out)
{
    Cms__V1__CreateIdentity m = CMS__V1__CREATE_IDENTITY__INIT;
    m.name = (char *)name;
    m.type = (char *)type;
    m.metadata_json = (char *)(metadata ? metadata : "");
    return svcfx_call(&F, "identity", key, NULL, "create", &m.base, &cms__v1__identity__descriptor,
                      (ProtobufCMessage **)out, g_field, g_msg);
}

static Cms__V1__Identity *must_create(const char *name, const char *type, const char *metadata)
{
    Cms__V1__Identity *id = NULL;
    int code = create(F.admin_key, name, type, metadata, &id);
    cr_assert_eq(code, OK, "create %s: %d %s: %s", name, code, g_field, g_msg);
    return id;
}

static int issue(const char *key, const char *identity_id, const char *type, int64_t expires_at_us,
                 const char *request_id, Cms__V1__Credential **out)
{
    Cms__V1__IssueCredential m = CMS__V1__ISSUE_CREDENTIAL__INIT;
    m.identity_id = (char *)identity_id;
    m.type = (char *)type;
    m.expires_at_us = expires_at_us;
    return svcfx_call(&F, "identity", key, request_id, "issue_credential", &m.base,
                      &cms__v1__credential__descriptor, (ProtobufCMessage **)out, g_field, g_msg);
}

static Cms__V1__Credential *must_issue_key(const char *identity_id, int64_t ttl_us)
{
    Cms__V1__Credential *c = NULL;
    int code = issue(F.admin_key, identity_id, "api_key", cms_test_wall_us() + ttl_us, NULL, &c);
    cr_assert_eq(code, OK, "issue: %d %s: %s", code, g_field, g_msg);
    cr_assert_eq(strlen(c->api_key), CMS_APIKEY_LEN, "the key is in the reply");
    return c;
}

static int authenticate(const char *key, Cms__V1__Principal **out)
{
    Cms__V1__Authenticate m = CMS__V1__AUTHENTICATE__INIT;
    m.api_key = (char *)key;
    return svcfx_call(&F, "identity", NULL, NULL, "authenticate", &m.base,
                      &cms__v1__principal__descriptor, (ProtobufCMessage **)out, g_field, g_msg);
}

static int set_status(const char *key, const char *id, const char *status, const char *reason)
{
    Cms__V1__SetIdentityStatus m = CMS__V1__SET_IDENTITY_STATUS__INIT;
    m.id = (char *)id;
    m.status = (char *)status;
    m.reason = (char *)reason;
    Cms__V1__Identity *out = NULL;
    int code =
        svcfx_call(&F, "identity", key, NULL, "set_status", &m.base, &cms__v1__identity__descriptor,
                   (ProtobufCMessage **)&out, g_field, g_msg);
    if (out) {
        cr_assert_str_eq(out->status, status);
        cms__v1__identity__free_unpacked(out, NULL);
    }
    return code;
}

/* A command of the verb "get" as the given key: whether the key is let in. */
static int get_as(const char *key, const char *name)
{
    return svcfx_identity_get(&F, key, name, NULL, g_field, g_msg);
}

/* The event of this type about this resource (published by the outbox
 * relay), decoded; fails the test after 10 s. */
static Cms__V1__Envelope *wait_event(const char *type, const char *resource_id)
{
    Cms__V1__Envelope *e = svcfx_wait_event(&F, type, resource_id, 10000);
    cr_assert_not_null(e, "no %s event for %s within 10 s", type, resource_id);
    return e;
}

/* Called once the event that invalidates key has been seen here (the
 * change is committed and announced): the key is refused from then on.
 * The service receives that event on a subscription of its own and the
 * next command on another, which nats.c delivers on separate threads, so
 * a command sent right after the event may still overtake it inside the
 * service; it is asked again at once (each try waits for its reply) until
 * refused, which must be within 3 s (the cache is bounded by
 * CMS_AUTH_CACHE = 2 s here even without the event). */
static void assert_refused_within_bound(const char *key, const char *what)
{
    double t0 = cms_test_now_ms();
    while (get_as(key, "admin") != DENIED)
        cr_assert_lt(cms_test_now_ms() - t0, 3000, "%s: the key was still accepted after 3 s",
                     what);
    Cms__V1__Principal *p = NULL;
    cr_assert_eq(authenticate(key, &p), DENIED, "%s: authenticate refuses it too", what);
    cr_assert_str_eq(g_msg, "the API key is not accepted", "one error for every refusal");
}

Test(identity, create_get_list_and_their_errors)
{
    Cms__V1__Identity *a = must_create("alice", "user", "{\"team\": \"x\"}");
    cr_assert_str_eq(a->status, "active");
    cr_assert_str_eq(a->type, "user");
    Cms__V1__Envelope *e = wait_event("identity.created", a->id);
    cr_assert_eq(e->body_case, CMS__V1__ENVELOPE__BODY_IDENTITY_CREATED);
    cr_assert_str_eq(e->identity_created->name, "alice");
    cr_assert_str_eq(e->actor_id, F.admin_id, "the actor is the caller, from the key");
    cr_assert_str_eq(e->source, "identity");
    cms__v1__envelope__free_unpacked(e, NULL);

    Cms__V1__GetIdentity g = CMS__V1__GET_IDENTITY__INIT;
    g.id = a->id;
    Cms__V1__Identity *got = NULL;
    cr_assert_eq(svcfx_call(&F, "identity", F.admin_key, NULL, "get", &g.base,
                            &cms__v1__identity__descriptor, (ProtobufCMessage **)&got, g_field,
                            g_msg),
                 OK);
    cr_assert_str_eq(got->name, "alice");
    cr_assert_str_eq(got->metadata_json, "{\"team\": \"x\"}");
    cms__v1__identity__free_unpacked(got, NULL);
    cr_assert_eq(get_as(F.admin_key, "nobody"), NOT_FOUND);

    /* bad input: the field is named, nothing is written */
    char *before = svcfx_sql(&F, "SELECT count(*) FROM identities");
    cr_assert_eq(create(F.admin_key, "alice", "user", NULL, NULL), EXISTS);
    cr_assert_str_eq(g_field, "name");
    cr_assert_eq(create(F.admin_key, "bob", "robot", NULL, NULL), INVALID);
    cr_assert_str_eq(g_field, "type");
    cr_assert_eq(create(F.admin_key, "", "user", NULL, NULL), INVALID);
    cr_assert_str_eq(g_field, "name");
    char long_name[300];
    memset(long_name, 'n', 256);
    long_name[256] = '\0';
    cr_assert_eq(create(F.admin_key, long_name, "user", NULL, NULL), INVALID);
    cr_assert_str_eq(g_field, "name");
    cr_assert_eq(create(F.admin_key, "bad\xff\xfe", "user", NULL, NULL), INVALID);
    cr_assert_str_eq(g_field, "name");
    cr_assert_eq(create(F.admin_key, "bob", "user", "[1,2]", NULL), INVALID);
    cr_assert_str_eq(g_field, "metadata_json");
    cr_assert_eq(create(F.admin_key, "bob", "user", "{\"a\":", NULL), INVALID);
    cr_assert_str_eq(g_field, "metadata_json");
    char *big = malloc(17000);
    snprintf(big, 17000, "{\"k\": \"%16400s\"}", "x");
    cr_assert_eq(create(F.admin_key, "bob", "user", big, NULL), INVALID);
    cr_assert_str_eq(g_field, "metadata_json");
    free(big);
    cr_assert_eq(create(F.admin_key, "bob", "user", "{\"roles\": \"admin\"}", NULL), INVALID);
    g.id = (char *)"not-a-uuid";
    cr_assert_eq(svcfx_call(&F, "identity", F.admin_key, NULL, "get", &g.base,
                            &cms__v1__identity__descriptor, NULL, g_field, g_msg),
                 INVALID);
    cr_assert_str_eq(g_field, "id");
    char *after = svcfx_sql(&F, "SELECT count(*) FROM identities");
    cr_assert_str_eq(before, after, "no half-written identity");
    free(before);
    free(after);

    /* no key, a bad key, a non-admin's key */
    cr_assert_eq(create(NULL, "carol", "user", NULL, NULL), DENIED);
    cr_assert_eq(create("cms_garbage", "carol", "user", NULL, NULL), DENIED);
    char uid[37], ukey[CMS_APIKEY_LEN + 1];
    svcfx_insert(&F, "plain", "user", "active", "{}", 3600, uid, ukey);
    cr_assert_eq(create(ukey, "carol", "user", NULL, NULL), DENIED);
    cr_assert_eq(get_as(ukey, "alice"), OK, "any identity may read");

    /* keyset pagination over every identity */
    for (int i = 0; i < 7; i++) {
        char n[32];
        snprintf(n, sizeof n, "machine-%d", i);
        cms__v1__identity__free_unpacked(must_create(n, "machine", NULL), NULL);
    }
    Cms__V1__ListIdentities l = CMS__V1__LIST_IDENTITIES__INIT;
    l.type = (char *)"machine";
    l.limit = 3;
    int seen = 0, pages = 0;
    char after_id[40] = "";
    do {
        l.after = after_id;
        Cms__V1__IdentityPage *p = NULL;
        cr_assert_eq(svcfx_call(&F, "identity", F.admin_key, NULL, "list", &l.base,
                                &cms__v1__identity_page__descriptor, (ProtobufCMessage **)&p,
                                g_field, g_msg),
                     OK);
        for (size_t i = 0; i < p->n_identities; i++)
            cr_assert_str_eq(p->identities[i]->type, "machine");
        seen += (int)p->n_identities;
        pages++;
        snprintf(after_id, sizeof after_id, "%s", p->next);
        cms__v1__identity_page__free_unpacked(p, NULL);
    } while (after_id[0] && pages < 10);
    cr_assert_eq(seen, 8, "7 machines and the system identity, once each");
    cr_assert_eq(pages, 3);
    l.limit = 5000;
    cr_assert_eq(svcfx_call(&F, "identity", F.admin_key, NULL, "list", &l.base,
                            &cms__v1__identity_page__descriptor, NULL, g_field, g_msg),
                 INVALID);
    cr_assert_str_eq(g_field, "limit");
    l.limit = 0;
    l.status = (char *)"sleeping";
    cr_assert_eq(svcfx_call(&F, "identity", F.admin_key, NULL, "list", &l.base,
                            &cms__v1__identity_page__descriptor, NULL, g_field, g_msg),
                 INVALID);
    cr_assert_str_eq(g_field, "status");
    cms__v1__identity__free_unpacked(a, NULL);
}

Test(identity, api_key_lifecycle_and_the_secret_never_leaks)
{
    Cms__V1__Identity *m = must_create("worker", "machine", "{\"roles\": [\"trainer\"]}");
    Cms__V1__Credential *c = NULL;
    int64_t exp = cms_test_wall_us() + 3600 * INT64_C(1000000);
    cr_assert_eq(issue(F.admin_key, m->id, "api_key", exp, "issue-1", &c), OK, "%s", g_msg);
    char key[CMS_APIKEY_LEN + 1];
    snprintf(key, sizeof key, "%s", c->api_key);
    /* the same request_id: the same reply (the same key), no second credential */
    Cms__V1__Credential *again = NULL;
    cr_assert_eq(issue(F.admin_key, m->id, "api_key", exp, "issue-1", &again), OK);
    cr_assert_str_eq(again->api_key, key);
    cr_assert_str_eq(again->id, c->id);
    cms__v1__credential__free_unpacked(again, NULL);

    Cms__V1__Principal *p = NULL;
    cr_assert_eq(authenticate(key, &p), OK, "%s", g_msg);
    cr_assert_str_eq(p->identity_id, m->id);
    cr_assert_str_eq(p->credential_id, c->id);
    cr_assert_eq(p->n_roles, 1);
    cr_assert_str_eq(p->roles[0], "trainer");
    cms__v1__principal__free_unpacked(p, NULL);
    cr_assert_eq(get_as(key, "worker"), OK, "the new key is let in");

    /* an identity lists, issues and revokes its own credentials, not others' */
    Cms__V1__ListCredentials lc = CMS__V1__LIST_CREDENTIALS__INIT;
    lc.identity_id = m->id;
    Cms__V1__CredentialList *list = NULL;
    cr_assert_eq(svcfx_call(&F, "identity", key, NULL, "list_credentials", &lc.base,
                            &cms__v1__credential_list__descriptor, (ProtobufCMessage **)&list,
                            g_field, g_msg),
                 OK);
    cr_assert_eq(list->n_credentials, 1);
    cr_assert_str_eq(list->credentials[0]->api_key, "", "never a secret in a list");
    cms__v1__credential_list__free_unpacked(list, NULL);
    lc.identity_id = F.admin_id;
    cr_assert_eq(svcfx_call(&F, "identity", key, NULL, "list_credentials", &lc.base,
                            &cms__v1__credential_list__descriptor, NULL, g_field, g_msg),
                 DENIED);
    Cms__V1__Credential *own = NULL;
    cr_assert_eq(issue(key, m->id, "api_key", exp, NULL, &own), OK, "rotation by itself");
    cr_assert_eq(issue(key, F.admin_id, "api_key", exp, NULL, NULL), DENIED);

    /* expiry: required, in the future, within the maximum */
    cr_assert_eq(issue(F.admin_key, m->id, "api_key", 0, NULL, NULL), INVALID);
    cr_assert_str_eq(g_field, "expires_at_us");
    cr_assert_eq(issue(F.admin_key, m->id, "api_key", cms_test_wall_us() - 1000000, NULL, NULL),
                 INVALID);
    cr_assert_str_eq(g_field, "expires_at_us");
    cr_assert_eq(issue(F.admin_key, m->id, "api_key",
                       cms_test_wall_us() + 400 * 86400 * INT64_C(1000000), NULL, NULL),
                 INVALID);
    cr_assert_str_eq(g_field, "expires_at_us");
    cr_assert_eq(issue(F.admin_key, m->id, "password", exp, NULL, NULL), INVALID);
    cr_assert_str_eq(g_field, "type");
    cr_assert_eq(
        issue(F.admin_key, "00000000-0000-7000-8000-00000000dead", "api_key", exp, NULL, NULL),
        NOT_FOUND);

    /* revoke: refused at once and with the same error as an unknown key */
    Cms__V1__RevokeCredential rv = CMS__V1__REVOKE_CREDENTIAL__INIT;
    rv.id = c->id;
    rv.reason = (char *)"leaked";
    Cms__V1__Credential *r = NULL;
    cr_assert_eq(svcfx_call(&F, "identity", F.admin_key, NULL, "revoke_credential", &rv.base,
                            &cms__v1__credential__descriptor, (ProtobufCMessage **)&r, g_field,
                            g_msg),
                 OK, "%s", g_msg);
    cr_assert_gt(r->revoked_at_us, 0);
    cms__v1__credential__free_unpacked(r, NULL);
    /* in commit order: issued, then revoked; the revocation's event
     * invalidates the key */
    Cms__V1__Envelope *e = wait_event("credential.issued", c->id);
    cr_assert_eq(e->credential_issued->expires_at_us / 1000000, exp / 1000000);
    cms__v1__envelope__free_unpacked(e, NULL);
    e = wait_event("credential.revoked", c->id);
    cr_assert_str_eq(e->credential_revoked->reason, "leaked");
    cms__v1__envelope__free_unpacked(e, NULL);
    assert_refused_within_bound(key, "revoked");
    cr_assert_eq(svcfx_call(&F, "identity", F.admin_key, NULL, "revoke_credential", &rv.base,
                            &cms__v1__credential__descriptor, NULL, g_field, g_msg),
                 PRECONDITION, "revoked once");
    /* an unknown key of the right form */
    char unknown[CMS_APIKEY_LEN + 1];
    snprintf(unknown, sizeof unknown, "%s", key);
    unknown[10] = unknown[10] == 'a' ? 'b' : 'a';
    cr_assert_eq(authenticate(unknown, &p), DENIED);
    cr_assert_str_eq(g_msg, "the API key is not accepted");

    /* the open verb (no caller) neither reads nor keeps replies by
     * request_id: naming the admin's stored reply returns nothing of it */
    {
        char stolen_rid[128];
        snprintf(stolen_rid, sizeof stolen_rid, "%s/issue-1", F.admin_id);
        Cms__V1__Authenticate am = CMS__V1__AUTHENTICATE__INIT;
        am.api_key = (char *)"x";
        Cms__V1__Principal *pp = NULL;
        int code =
            svcfx_call(&F, "identity", NULL, stolen_rid, "authenticate", &am.base,
                       &cms__v1__principal__descriptor, (ProtobufCMessage **)&pp, g_field, g_msg);
        cr_assert_eq(code, DENIED, "the key x is refused; no stored reply is returned");
    }

    /* the secret: nowhere in the database, the log or the events */
    const char *secret = key + 4 + 32 + 1;
    char q[512];
    snprintf(q, sizeof q,
             "SELECT count(*) FROM (SELECT value AS t FROM credentials UNION ALL "
             "SELECT encode(payload, 'escape') FROM outbox UNION ALL "
             "SELECT encode(reply, 'escape') FROM command_replies UNION ALL "
             "SELECT encode(reply, 'hex') FROM command_replies) x "
             "WHERE position('%s' in t) > 0",
             secret);
    char *hits = svcfx_sql(&F, q);
    cr_assert_str_eq(hits, "0", "the secret is stored nowhere");
    free(hits);
    snprintf(q, sizeof q, "SELECT count(*) FROM command_replies");
    hits = svcfx_sql(&F, q);
    cr_assert_str_neq(hits, "0", "the request_id reply was stored (sealed)");
    free(hits);
    char *log = svcfx_log(&F);
    cr_assert_null(strstr(log, secret), "the secret is not in the log");
    free(log);
    cms__v1__credential__free_unpacked(c, NULL);
    cms__v1__credential__free_unpacked(own, NULL);
    cms__v1__identity__free_unpacked(m, NULL);
}

Test(identity, suspension_and_expiry_refuse_keys_and_expiry_is_announced)
{
    Cms__V1__Identity *m = must_create("robot", "machine", NULL);
    Cms__V1__Credential *c = must_issue_key(m->id, 3600 * INT64_C(1000000));
    cr_assert_eq(get_as(c->api_key, "robot"), OK);
    cr_assert_eq(set_status(F.admin_key, m->id, "suspended", "abuse"), OK, "%s", g_msg);
    Cms__V1__Envelope *e = wait_event("identity.status_changed", m->id);
    cr_assert_str_eq(e->identity_status_changed->old_status, "active");
    cr_assert_str_eq(e->identity_status_changed->new_status, "suspended");
    cr_assert_str_eq(e->identity_status_changed->reason, "abuse");
    cms__v1__envelope__free_unpacked(e, NULL);
    assert_refused_within_bound(c->api_key, "suspended");
    /* only legal transitions */
    cr_assert_eq(set_status(F.admin_key, m->id, "suspended", ""), PRECONDITION);
    cr_assert_eq(set_status(F.admin_key, m->id, "inactive", ""), PRECONDITION);
    cr_assert_str_eq(g_field, "status");
    cr_assert_eq(set_status(F.admin_key, m->id, "asleep", ""), INVALID);
    cr_assert_eq(set_status(c->api_key, m->id, "active", ""), DENIED);
    cr_assert_eq(issue(F.admin_key, m->id, "api_key", cms_test_wall_us() + 60000000, NULL, NULL),
                 PRECONDITION, "no credentials for a suspended identity");
    cr_assert_eq(set_status(F.admin_key, m->id, "active", "cleared"), OK);
    cr_assert_eq(get_as(c->api_key, "robot"), OK, "reinstated");

    /* a key that expires in 1.5 s: refused after, and credential.expired once */
    Cms__V1__Credential *short_lived = must_issue_key(m->id, 1500000);
    cr_assert_eq(get_as(short_lived->api_key, "robot"), OK);
    e = wait_event("credential.expired", short_lived->id);
    cr_assert_str_eq(e->actor_id, "00000000-0000-7000-8000-000000000001");
    cr_assert_geq(cms_test_wall_us(), e->credential_expired->expires_at_us, "not announced early");
    cms__v1__envelope__free_unpacked(e, NULL);
    assert_refused_within_bound(short_lived->api_key, "expired");
    char q[256];
    snprintf(q, sizeof q, "SELECT expired_at IS NOT NULL FROM credentials WHERE id = '%s'",
             short_lived->id);
    char *v = svcfx_sql(&F, q);
    cr_assert_str_eq(v, "t");
    free(v);
    cms__v1__credential__free_unpacked(short_lived, NULL);
    cms__v1__credential__free_unpacked(c, NULL);
    cms__v1__identity__free_unpacked(m, NULL);
}

/* Returns once the wall clock (the clock of expires_at here and in the
 * database, on this host) has reached until_us: for a wait whose object is
 * an instant, not something another process does. */
static void wait_until_wall_us(int64_t until_us)
{
    struct timespec at = {(time_t)(until_us / 1000000), (long)(until_us % 1000000) * 1000};
    while (clock_nanosleep(CLOCK_REALTIME, TIMER_ABSTIME, &at, NULL) != 0)
        ; /* EINTR: the instant is still ahead */
    cr_assert_geq(cms_test_wall_us(), until_us);
}

Test(identity, the_expiry_timer_fires_after_a_restart)
{
    Cms__V1__Identity *m = must_create("sleeper", "machine", NULL);
    Cms__V1__Credential *c = must_issue_key(m->id, 1000000);
    cr_assert_eq(svcfx_stop(&F), 0, "a clean drain");
    /* due while no process runs: the instant itself is what is waited for */
    char q[256];
    snprintf(q, sizeof q,
             "SELECT (extract(epoch FROM expires_at) * 1000000)::int8 FROM credentials "
             "WHERE id = '%s'",
             c->id);
    char *v = svcfx_sql(&F, q);
    int64_t expires_us = strtoll(v, NULL, 10);
    cr_assert_gt(expires_us, 0, "the credential's expiry: %s", v);
    free(v);
    cr_assert_lt(expires_us - cms_test_wall_us(), INT64_C(5000000), "due within 5 s");
    wait_until_wall_us(expires_us + 1);
    snprintf(q, sizeof q,
             "SELECT count(*) FROM credentials WHERE id = '%s' AND expires_at < now() "
             "AND expired_at IS NULL",
             c->id);
    v = svcfx_sql(&F, q);
    cr_assert_str_eq(v, "1", "due, and not yet expired by anyone");
    free(v);
    const char *set[] = {NULL};
    svcfx_start(&F, "cms-identity", set);
    Cms__V1__Envelope *e = wait_event("credential.expired", c->id);
    cr_assert_str_eq(e->credential_expired->identity_id, m->id);
    cms__v1__envelope__free_unpacked(e, NULL);
    cms__v1__credential__free_unpacked(c, NULL);
    cms__v1__identity__free_unpacked(m, NULL);
}

Test(identity, enclaves_become_active_by_attestation_only)
{
    Cms__V1__Identity *enc = must_create("enclave-1", "enclave", NULL);
    cr_assert_str_eq(enc->status, "inactive");
    cr_assert_eq(set_status(F.admin_key, enc->id, "active", ""), PRECONDITION,
                 "no attestation yet");
    Cms__V1__IssueCredential m = CMS__V1__ISSUE_CREDENTIAL__INIT;
    m.identity_id = enc->id;
    m.type = (char *)"attestation";
    m.expires_at_us = cms_test_wall_us() + 86400 * INT64_C(1000000);
    m.measurement = (char *)"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    m.signer = (char *)"intel";
    cr_assert_eq(svcfx_call(&F, "identity", F.admin_key, NULL, "issue_credential", &m.base,
                            &cms__v1__credential__descriptor, NULL, g_field, g_msg),
                 PRECONDITION, "not on the allowlist");
    cr_assert_str_eq(g_field, "measurement");
    m.measurement = (char *)"xyz";
    cr_assert_eq(svcfx_call(&F, "identity", F.admin_key, NULL, "issue_credential", &m.base,
                            &cms__v1__credential__descriptor, NULL, g_field, g_msg),
                 INVALID);
    cr_assert_str_eq(g_field, "measurement");
    m.measurement = (char *)MEASUREMENT;
    Cms__V1__Credential *att = NULL;
    cr_assert_eq(svcfx_call(&F, "identity", F.admin_key, NULL, "issue_credential", &m.base,
                            &cms__v1__credential__descriptor, (ProtobufCMessage **)&att, g_field,
                            g_msg),
                 OK, "%s", g_msg);
    cr_assert_str_eq(att->measurement, MEASUREMENT);
    Cms__V1__Envelope *e = wait_event("identity.status_changed", enc->id);
    cr_assert_str_eq(e->identity_status_changed->new_status, "active");
    cms__v1__envelope__free_unpacked(e, NULL);
    cr_assert_eq(get_as(F.admin_key, "enclave-1"), OK);
    char q[256];
    snprintf(q, sizeof q, "SELECT status FROM identities WHERE id = '%s'", enc->id);
    char *v = svcfx_sql(&F, q);
    cr_assert_str_eq(v, "active");
    free(v);
    /* attestations are for enclaves only */
    Cms__V1__Identity *u = must_create("human", "user", NULL);
    m.identity_id = u->id;
    cr_assert_eq(svcfx_call(&F, "identity", F.admin_key, NULL, "issue_credential", &m.base,
                            &cms__v1__credential__descriptor, NULL, g_field, g_msg),
                 PRECONDITION);
    /* revoking the only attestation makes the enclave inactive again */
    Cms__V1__RevokeCredential rv = CMS__V1__REVOKE_CREDENTIAL__INIT;
    rv.id = att->id;
    cr_assert_eq(svcfx_call(&F, "identity", F.admin_key, NULL, "revoke_credential", &rv.base,
                            &cms__v1__credential__descriptor, NULL, g_field, g_msg),
                 OK);
    v = svcfx_sql(&F, q);
    cr_assert_str_eq(v, "inactive");
    free(v);

    /* public keys: Ed25519, base64, checked */
    Cms__V1__IssueCredential pk = CMS__V1__ISSUE_CREDENTIAL__INIT;
    pk.identity_id = u->id;
    pk.type = (char *)"public_key";
    pk.expires_at_us = cms_test_wall_us() + 86400 * INT64_C(1000000);
    pk.public_key = (char *)"not base64!";
    cr_assert_eq(svcfx_call(&F, "identity", F.admin_key, NULL, "issue_credential", &pk.base,
                            &cms__v1__credential__descriptor, NULL, g_field, g_msg),
                 INVALID);
    cr_assert_str_eq(g_field, "public_key");
    pk.public_key = (char *)"AAAA";
    cr_assert_eq(svcfx_call(&F, "identity", F.admin_key, NULL, "issue_credential", &pk.base,
                            &cms__v1__credential__descriptor, NULL, g_field, g_msg),
                 INVALID);
    /* the Ed25519 base point, a valid public key */
    pk.public_key = (char *)"WGZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmY=";
    Cms__V1__Credential *pc = NULL;
    cr_assert_eq(svcfx_call(&F, "identity", F.admin_key, NULL, "issue_credential", &pk.base,
                            &cms__v1__credential__descriptor, (ProtobufCMessage **)&pc, g_field,
                            g_msg),
                 OK, "%s: %s", g_field, g_msg);
    cr_assert_str_eq(pc->public_key, pk.public_key);
    cms__v1__credential__free_unpacked(pc, NULL);
    cms__v1__credential__free_unpacked(att, NULL);
    cms__v1__identity__free_unpacked(u, NULL);
    cms__v1__identity__free_unpacked(enc, NULL);
}

/* Requests sent at once, answered in any order. */
Test(identity, racing_creates_of_one_name_exactly_one_wins)
{
    enum { N = 16 };
    natsMsg *reqs[N];
    natsInbox *inbox = NULL;
    natsSubscription *sub = NULL;
    cr_assert_eq(natsInbox_Create(&inbox), NATS_OK);
    char wild[128];
    snprintf(wild, sizeof wild, "%s.*", (const char *)inbox);
    cr_assert_eq(natsConnection_SubscribeSync(&sub, F.nc, wild), NATS_OK);
    char subject[128], auth[128];
    snprintf(subject, sizeof subject, "%s.identity.create", F.prefix);
    snprintf(auth, sizeof auth, "Bearer %s", F.admin_key);
    Cms__V1__CreateIdentity m = CMS__V1__CREATE_IDENTITY__INIT;
    m.name = (char *)"contested";
    m.type = (char *)"user";
    uint8_t buf[128];
    size_t len = cms__v1__create_identity__pack(&m, buf);
    for (int i = 0; i < N; i++) {
        char reply[160];
        snprintf(reply, sizeof reply, "%s.%d", (const char *)inbox, i);
        cr_assert_eq(natsMsg_Create(&reqs[i], subject, reply, (const char *)buf, (int)len),
                     NATS_OK);
        natsMsgHeader_Set(reqs[i], "Authorization", auth);
        cr_assert_eq(natsConnection_PublishMsg(F.nc, reqs[i]), NATS_OK);
        natsMsg_Destroy(reqs[i]);
    }
    int ok = 0, exists = 0;
    for (int i = 0; i < N; i++) {
        natsMsg *r = NULL;
        cr_assert_eq(natsSubscription_NextMsg(&r, sub, 10000), NATS_OK, "reply %d", i);
        Cms__V1__Reply *rep = cms__v1__reply__unpack(NULL, (size_t)natsMsg_GetDataLength(r),
                                                     (const uint8_t *)natsMsg_GetData(r));
        cr_assert_not_null(rep);
        if (rep->outcome_case == CMS__V1__REPLY__OUTCOME_RESULT)
            ok++;
        else if (rep->error->code == CMS__V1__ERROR_CODE__ALREADY_EXISTS)
            exists++;
        cms__v1__reply__free_unpacked(rep, NULL);
        natsMsg_Destroy(r);
    }
    cr_assert_eq(ok, 1, "exactly one create wins");
    cr_assert_eq(exists, N - 1, "every other one is told the name exists");
    char *n = svcfx_sql(&F, "SELECT count(*) FROM identities WHERE name = 'contested'");
    cr_assert_str_eq(n, "1");
    free(n);
    natsSubscription_Destroy(sub);
    natsInbox_Destroy(inbox);
}

Test(identity, credential_and_status_errors_name_what_is_wrong)
{
    const char *missing = "00000000-0000-7000-8000-00000000beef";
    Cms__V1__Identity *m = must_create("owner", "machine", NULL);
    Cms__V1__Credential *c = must_issue_key(m->id, 3600 * INT64_C(1000000));
    char oid[37], okey[CMS_APIKEY_LEN + 1];
    svcfx_insert(&F, "stranger", "user", "active", "{}", 3600, oid, okey);

    Cms__V1__RevokeCredential rv = CMS__V1__REVOKE_CREDENTIAL__INIT;
    rv.id = (char *)missing;
    cr_assert_eq(svcfx_call(&F, "identity", F.admin_key, NULL, "revoke_credential", &rv.base,
                            &cms__v1__credential__descriptor, NULL, g_field, g_msg),
                 NOT_FOUND);
    rv.id = (char *)"1234";
    cr_assert_eq(svcfx_call(&F, "identity", F.admin_key, NULL, "revoke_credential", &rv.base,
                            &cms__v1__credential__descriptor, NULL, g_field, g_msg),
                 INVALID);
    cr_assert_str_eq(g_field, "id");
    rv.id = c->id;
    cr_assert_eq(svcfx_call(&F, "identity", okey, NULL, "revoke_credential", &rv.base,
                            &cms__v1__credential__descriptor, NULL, g_field, g_msg),
                 DENIED, "not the stranger's to revoke");
    cr_assert_eq(get_as(c->api_key, "owner"), OK, "and it still works");
    /* the owner revokes its own */
    cr_assert_eq(svcfx_call(&F, "identity", c->api_key, NULL, "revoke_credential", &rv.base,
                            &cms__v1__credential__descriptor, NULL, g_field, g_msg),
                 OK, "%s", g_msg);

    Cms__V1__ListCredentials lc = CMS__V1__LIST_CREDENTIALS__INIT;
    lc.identity_id = (char *)missing;
    cr_assert_eq(svcfx_call(&F, "identity", F.admin_key, NULL, "list_credentials", &lc.base,
                            &cms__v1__credential_list__descriptor, NULL, g_field, g_msg),
                 NOT_FOUND);
    lc.identity_id = (char *)"";
    cr_assert_eq(svcfx_call(&F, "identity", F.admin_key, NULL, "list_credentials", &lc.base,
                            &cms__v1__credential_list__descriptor, NULL, g_field, g_msg),
                 INVALID);
    cr_assert_str_eq(g_field, "identity_id");

    cr_assert_eq(set_status(F.admin_key, missing, "inactive", ""), NOT_FOUND);
    cr_assert_eq(set_status(F.admin_key, "00000000-0000-7000-8000-000000000001", "inactive", ""),
                 PRECONDITION, "the system identity stays");
    char reason[1100];
    memset(reason, 'r', 1025);
    reason[1025] = '\0';
    cr_assert_eq(set_status(F.admin_key, m->id, "inactive", reason), INVALID);
    cr_assert_str_eq(g_field, "reason");

    /* the request body itself: not the verb's message, an unknown verb */
    Cms__V1__Authenticate junk = CMS__V1__AUTHENTICATE__INIT;
    junk.api_key = (char *)"\x01\x02";
    cr_assert_eq(svcfx_call(&F, "identity", F.admin_key, NULL, "fly", &junk.base,
                            &cms__v1__identity__descriptor, NULL, g_field, g_msg),
                 INVALID);
    cr_assert_str_eq(g_field, "verb");
    cms__v1__credential__free_unpacked(c, NULL);
    cms__v1__identity__free_unpacked(m, NULL);
}
