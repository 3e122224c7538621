/* The credential rules of cms-identity against the real PostgreSQL and
 * NATS: a credential an identity issues itself never outlives the key it
 * was issued with; the system identity holds none; the last active admin
 * holding a valid API key can be neither suspended, nor deactivated, nor
 * stripped of that key, also when two requests race for it (the test holds
 * the lock the writes take, so both have read before either writes); a
 * sealed stored reply copied to another row does not open there. */
#include "../../../../services/identity/store.h" /* IDSQL_ADMIN_LOCK's key */
#include "bus.h"
#include "cms/v1/command.pb-c.h"
#include "cms/v1/identity.pb-c.h"
#include "svcfx.h"
#include "testenv.h"

#include <criterion/criterion.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OK 0
#define INVALID CMS__V1__ERROR_CODE__INVALID_ARGUMENT
#define PRECONDITION CMS__V1__ERROR_CODE__FAILED_PRECONDITION
#define HOUR_US (3600 * INT64_C(1000000))
#define DAY_US (24 * HOUR_US)
/* IDSQL_ADMIN_LOCK's key, as pg_locks shows an advisory lock of an int8 */
#define ADMIN_LOCK_KEY INT64_C(7164509220961021294)

static svcfx F;
static char g_field[256], g_msg[256];

static void setup(void)
{
    svcfx_setup(&F, "identity_rules");
    /* room for a read beside two writes held at the admin lock */
    const char *set[] = {"CMS_PG_POOL_SIZE=4", NULL};
    svcfx_start(&F, "cms-identity", set);
}

static void teardown(void)
{
    svcfx_teardown(&F);
}

TestSuite(rules, .init = setup, .fini = teardown, .timeout = 120);

static Cms__V1__Identity *must_create(const char *name, const char *metadata)
{
    Cms__V1__CreateIdentity m = CMS__V1__CREATE_IDENTITY__INIT;
    m.name = (char *)name;
    m.type = (char *)"user";
    m.metadata_json = (char *)(metadata ? metadata : "");
    Cms__V1__Identity *id = NULL;
    int code = svcfx_call(&F, "identity", F.admin_key, NULL, "create", &m.base,
                          &cms__v1__identity__descriptor, (ProtobufCMessage **)&id, g_field, g_msg);
    cr_assert_eq(code, OK, "create %s: %d %s: %s", name, code, g_field, g_msg);
    return id;
}

static int issue_rid(const char *key, const char *identity_id, const char *type,
                     int64_t expires_at_us, const char *request_id, Cms__V1__Credential **out)
{
    Cms__V1__IssueCredential m = CMS__V1__ISSUE_CREDENTIAL__INIT;
    m.identity_id = (char *)identity_id;
    m.type = (char *)type;
    m.expires_at_us = expires_at_us;
    /* any valid Ed25519 point does: this is the base point */
    if (strcmp(type, "public_key") == 0)
        m.public_key = (char *)"WGZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmY=";
    return svcfx_call(&F, "identity", key, request_id, "issue_credential", &m.base,
                      &cms__v1__credential__descriptor, (ProtobufCMessage **)out, g_field, g_msg);
}

static int issue(const char *key, const char *identity_id, const char *type, int64_t expires_at_us,
                 Cms__V1__Credential **out)
{
    return issue_rid(key, identity_id, type, expires_at_us, NULL, out);
}

/* A key for identity_id issued by the admin, expiring ttl_us from now. */
static void must_issue_key(const char *identity_id, int64_t ttl_us, char key[CMS_APIKEY_LEN + 1],
                           char cred_id[37])
{
    Cms__V1__Credential *c = NULL;
    int code = issue(F.admin_key, identity_id, "api_key", cms_test_wall_us() + ttl_us, &c);
    cr_assert_eq(code, OK, "issue: %d %s: %s", code, g_field, g_msg);
    snprintf(key, CMS_APIKEY_LEN + 1, "%s", c->api_key);
    if (cred_id)
        snprintf(cred_id, 37, "%s", c->id);
    cms__v1__credential__free_unpacked(c, NULL);
}

static void status_msg(Cms__V1__SetIdentityStatus *m, const char *id, const char *status)
{
    cms__v1__set_identity_status__init(m);
    m->id = (char *)id;
    m->status = (char *)status;
    m->reason = (char *)"test";
}

static int set_status(const char *key, const char *id, const char *status)
{
    Cms__V1__SetIdentityStatus m;
    status_msg(&m, id, status);
    return svcfx_call(&F, "identity", key, NULL, "set_status", &m.base,
                      &cms__v1__identity__descriptor, NULL, g_field, g_msg);
}

static void revoke_msg(Cms__V1__RevokeCredential *m, const char *cred_id)
{
    cms__v1__revoke_credential__init(m);
    m->id = (char *)cred_id;
    m->reason = (char *)"test";
}

static int revoke_cred(const char *key, const char *cred_id)
{
    Cms__V1__RevokeCredential m;
    revoke_msg(&m, cred_id);
    return svcfx_call(&F, "identity", key, NULL, "revoke_credential", &m.base,
                      &cms__v1__credential__descriptor, NULL, g_field, g_msg);
}

static char *sqlf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *sqlf(const char *fmt, ...)
{
    char q[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(q, sizeof q, fmt, ap);
    va_end(ap);
    char *v = svcfx_sql(&F, q);
    cr_assert_not_null(v, "%s", q);
    return v;
}

#define assert_sql(want, ...)                                                                      \
    do {                                                                                           \
        char *v_ = sqlf(__VA_ARGS__);                                                              \
        cr_assert_str_eq(v_, want, "%s", #__VA_ARGS__);                                            \
        free(v_);                                                                                  \
    } while (0)

static const char ACTIVE_ADMINS[] =
    "SELECT count(*) FROM identities WHERE status = 'active' AND metadata -> 'roles' ? 'admin'";

/* ---- a credential issued by a non-admin never outlives its parent ---- */

Test(rules, a_self_issued_credential_never_outlives_the_key_it_was_issued_with)
{
    Cms__V1__Identity *u = must_create("shorty", NULL);
    char k1[CMS_APIKEY_LEN + 1];
    int64_t parent = cms_test_wall_us() + DAY_US;
    Cms__V1__Credential *c = NULL;
    cr_assert_eq(issue(F.admin_key, u->id, "api_key", parent, &c), OK, "%s", g_msg);
    snprintf(k1, sizeof k1, "%s", c->api_key);
    cr_assert_eq(c->expires_at_us, parent);
    cms__v1__credential__free_unpacked(c, NULL);

    /* the one-day key cannot mint a year-long one, of either type */
    cr_assert_eq(issue(k1, u->id, "api_key", cms_test_wall_us() + 365 * DAY_US, NULL), INVALID);
    cr_assert_str_eq(g_field, "expires_at_us");
    cr_assert_not_null(strstr(g_msg, "cannot outlive"), "%s", g_msg);
    cr_assert_eq(issue(k1, u->id, "api_key", parent + 1, NULL), INVALID, "not even by 1 us");
    cr_assert_eq(issue(k1, u->id, "public_key", parent + HOUR_US, NULL), INVALID);
    cr_assert_str_eq(g_field, "expires_at_us");
    assert_sql("1", "SELECT count(*) FROM credentials WHERE identity_id = '%s'", u->id);

    /* equal or shorter is a rotation */
    Cms__V1__Credential *same = NULL, *shorter = NULL;
    cr_assert_eq(issue(k1, u->id, "api_key", parent, &same), OK, "%s", g_msg);
    cr_assert_eq(issue(k1, u->id, "public_key", parent - HOUR_US, &shorter), OK, "%s", g_msg);
    /* and the child's children are bound by the child */
    cr_assert_eq(issue(same->api_key, u->id, "api_key", parent, NULL), OK, "%s", g_msg);

    /* an admin may still issue long ones */
    cr_assert_eq(issue(F.admin_key, u->id, "api_key", cms_test_wall_us() + 300 * DAY_US, NULL), OK,
                 "%s", g_msg);
    assert_sql("5", "SELECT count(*) FROM credentials WHERE identity_id = '%s'", u->id);
    cms__v1__credential__free_unpacked(same, NULL);
    cms__v1__credential__free_unpacked(shorter, NULL);
    cms__v1__identity__free_unpacked(u, NULL);
}

Test(rules, the_system_identity_holds_no_credentials)
{
    int64_t exp = cms_test_wall_us() + HOUR_US;
    cr_assert_eq(issue(F.admin_key, CMS_BUS_SYSTEM_ACTOR, "api_key", exp, NULL), PRECONDITION);
    cr_assert_str_eq(g_field, "identity_id");
    cr_assert_not_null(strstr(g_msg, "system"), "%s", g_msg);
    cr_assert_eq(issue(F.admin_key, CMS_BUS_SYSTEM_ACTOR, "public_key", exp, NULL), PRECONDITION);
    assert_sql("0", "SELECT count(*) FROM credentials WHERE identity_id = '%s'",
               CMS_BUS_SYSTEM_ACTOR);
}

/* ---- the last admin ---- */

Test(rules, the_last_admin_is_neither_suspended_deactivated_nor_stripped_of_its_last_key)
{
    char admin_cred[37];
    char *v = sqlf("SELECT id FROM credentials WHERE identity_id = '%s'", F.admin_id);
    snprintf(admin_cred, sizeof admin_cred, "%s", v);
    free(v);

    cr_assert_eq(set_status(F.admin_key, F.admin_id, "suspended"), PRECONDITION);
    cr_assert_str_eq(g_field, "id");
    cr_assert_not_null(strstr(g_msg, "last active admin"), "%s", g_msg);
    cr_assert_eq(set_status(F.admin_key, F.admin_id, "inactive"), PRECONDITION);
    cr_assert_not_null(strstr(g_msg, "last active admin"), "%s", g_msg);
    cr_assert_eq(revoke_cred(F.admin_key, admin_cred), PRECONDITION);
    cr_assert_not_null(strstr(g_msg, "last valid API key"), "%s", g_msg);
    assert_sql("1", "%s", ACTIVE_ADMINS);
    assert_sql("0", "SELECT count(*) FROM credentials WHERE revoked_at IS NOT NULL");

    /* an admin without a valid key is no way in: it does not count */
    char keyless_id[37], keyless_key[CMS_APIKEY_LEN + 1];
    svcfx_insert(&F, "keyless", "user", "active", "{\"roles\": [\"admin\"]}", -60, keyless_id,
                 keyless_key);
    cr_assert_eq(set_status(F.admin_key, F.admin_id, "suspended"), PRECONDITION);
    cr_assert_eq(set_status(F.admin_key, keyless_id, "suspended"), OK, "%s", g_msg);

    /* a second key: one of the two may go, not both */
    char k2[CMS_APIKEY_LEN + 1], k2_cred[37];
    must_issue_key(F.admin_id, DAY_US, k2, k2_cred);
    cr_assert_eq(revoke_cred(F.admin_key, admin_cred), OK, "%s", g_msg);
    cr_assert_eq(revoke_cred(k2, k2_cred), PRECONDITION);
    cr_assert_not_null(strstr(g_msg, "last valid API key"), "%s", g_msg);

    /* a second admin holding a key: either of the two may be suspended */
    char b_id[37], b_key[CMS_APIKEY_LEN + 1];
    svcfx_insert(&F, "second-admin", "user", "active", "{\"roles\": [\"admin\"]}", 86400, b_id,
                 b_key);
    cr_assert_eq(set_status(k2, b_id, "suspended"), OK, "%s", g_msg);
    cr_assert_eq(set_status(k2, F.admin_id, "suspended"), PRECONDITION, "b is suspended now");
    cr_assert_eq(set_status(k2, b_id, "active"), OK, "%s", g_msg);
    cr_assert_eq(set_status(b_key, F.admin_id, "inactive"), OK, "%s", g_msg);
    cr_assert_eq(set_status(b_key, b_id, "suspended"), PRECONDITION, "b is the last now");
    assert_sql("1", "%s", ACTIVE_ADMINS);
}

/* Two commands in flight at once. */
typedef struct inflight {
    natsSubscription *sub;
    char inbox[96];
} inflight;

static void send_cmd(inflight *in, int i, const char *verb, const char *key,
                     const ProtobufCMessage *body)
{
    if (in->sub == NULL) {
        natsInbox *ib = NULL;
        cr_assert_eq(natsInbox_Create(&ib), NATS_OK);
        snprintf(in->inbox, sizeof in->inbox, "%s", (const char *)ib);
        natsInbox_Destroy(ib);
        char all[128];
        snprintf(all, sizeof all, "%s.*", in->inbox);
        cr_assert_eq(natsConnection_SubscribeSync(&in->sub, F.nc, all), NATS_OK);
    }
    char subject[128], reply[128], auth[160];
    snprintf(subject, sizeof subject, "%s.identity.%s", F.prefix, verb);
    snprintf(reply, sizeof reply, "%s.%d", in->inbox, i);
    snprintf(auth, sizeof auth, "Bearer %s", key);
    size_t len = protobuf_c_message_get_packed_size(body);
    uint8_t *buf = malloc(len + 1);
    cr_assert_not_null(buf);
    protobuf_c_message_pack(body, buf);
    natsMsg *m = NULL;
    cr_assert_eq(natsMsg_Create(&m, subject, reply, (const char *)buf, (int)len), NATS_OK);
    cr_assert_eq(natsMsgHeader_Set(m, "Authorization", auth), NATS_OK);
    cr_assert_eq(natsConnection_PublishMsg(F.nc, m), NATS_OK);
    cr_assert_eq(natsConnection_Flush(F.nc), NATS_OK);
    natsMsg_Destroy(m);
    free(buf);
}

/* The error codes of the two replies, in the order sent. */
static void recv_two(inflight *in, int codes[2])
{
    codes[0] = codes[1] = -1;
    for (int got = 0; got < 2; got++) {
        natsMsg *rep = NULL;
        cr_assert_eq(natsSubscription_NextMsg(&rep, in->sub, 20000), NATS_OK);
        int i = atoi(strrchr(natsMsg_GetSubject(rep), '.') + 1);
        Cms__V1__Reply *r = cms__v1__reply__unpack(NULL, (size_t)natsMsg_GetDataLength(rep),
                                                   (const uint8_t *)natsMsg_GetData(rep));
        cr_assert_not_null(r);
        cr_assert(i == 0 || i == 1);
        codes[i] = r->outcome_case == CMS__V1__REPLY__OUTCOME_ERROR ? (int)r->error->code : 0;
        cms__v1__reply__free_unpacked(r, NULL);
        natsMsg_Destroy(rep);
    }
    natsSubscription_Destroy(in->sub);
    in->sub = NULL;
}

/* The test's own session holds the admin lock, so the service's writes
 * queue at it after their reads. */
static PGconn *hold_admin_lock(void)
{
    PGconn *c = PQconnectdb(F.db);
    cr_assert_eq(PQstatus(c), CONNECTION_OK, "%s", PQerrorMessage(c));
    char q[96];
    snprintf(q, sizeof q, "SELECT pg_advisory_lock(%lld)", (long long)ADMIN_LOCK_KEY);
    PGresult *r = PQexec(c, q);
    cr_assert_eq(PQresultStatus(r), PGRES_TUPLES_OK, "%s", PQresultErrorMessage(r));
    PQclear(r);
    return c;
}

/* Waits (each look one round trip, at most 10 s) until n sessions wait for the lock. */
static void wait_lock_waiters(PGconn *c, int n)
{
    char q[512], want[16];
    snprintf(q, sizeof q,
             "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
             "AND classid = %u AND objid = %u AND objsubid = 1 "
             "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
             (unsigned)((uint64_t)ADMIN_LOCK_KEY >> 32),
             (unsigned)((uint64_t)ADMIN_LOCK_KEY & 0xffffffffu));
    snprintf(want, sizeof want, "%d", n);
    double t0 = cms_test_now_ms();
    for (;;) {
        PGresult *r = PQexec(c, q);
        cr_assert_eq(PQresultStatus(r), PGRES_TUPLES_OK, "%s", PQresultErrorMessage(r));
        bool done = strcmp(PQgetvalue(r, 0, 0), want) == 0;
        PQclear(r);
        if (done)
            return;
        cr_assert_lt(cms_test_now_ms() - t0, 10000, "%d writes never queued at the admin lock", n);
    }
}

static void release_admin_lock(PGconn *c)
{
    char q[96];
    snprintf(q, sizeof q, "SELECT pg_advisory_unlock(%lld)", (long long)ADMIN_LOCK_KEY);
    PGresult *r = PQexec(c, q);
    cr_assert_eq(PQresultStatus(r), PGRES_TUPLES_OK, "%s", PQresultErrorMessage(r));
    PQclear(r);
    PQfinish(c);
}

Test(rules, two_admins_suspending_each_other_at_once_leave_one)
{
    char b_id[37], b_key[CMS_APIKEY_LEN + 1];
    svcfx_insert(&F, "rival", "user", "active", "{\"roles\": [\"admin\"]}", 86400, b_id, b_key);
    /* each caller once, so that neither is resolved while the lock is held */
    cr_assert_eq(set_status(F.admin_key, b_id, "active"), PRECONDITION, "already active");
    cr_assert_eq(set_status(b_key, F.admin_id, "active"), PRECONDITION, "already active");

    PGconn *lock = hold_admin_lock();
    inflight in = {0};
    Cms__V1__SetIdentityStatus a_suspends_b, b_suspends_a;
    status_msg(&a_suspends_b, b_id, "suspended");
    status_msg(&b_suspends_a, F.admin_id, "suspended");
    send_cmd(&in, 0, "set_status", F.admin_key, &a_suspends_b.base);
    wait_lock_waiters(lock, 1); /* read: b is not the last; its write waits */
    send_cmd(&in, 1, "set_status", b_key, &b_suspends_a.base);
    wait_lock_waiters(lock, 2); /* read: a is not the last either */
    release_admin_lock(lock);
    int codes[2];
    recv_two(&in, codes);
    cr_assert_eq(codes[0], OK, "the first write wins");
    cr_assert_eq(codes[1], PRECONDITION, "the second finds a the last admin");
    assert_sql("1", "%s", ACTIVE_ADMINS);
    assert_sql("active", "SELECT status FROM identities WHERE id = '%s'", F.admin_id);
}

Test(rules, two_revocations_of_the_last_admins_two_keys_at_once_leave_one)
{
    char k2[CMS_APIKEY_LEN + 1], k2_cred[37], k1_cred[37];
    must_issue_key(F.admin_id, DAY_US, k2, k2_cred);
    char *v = sqlf("SELECT id FROM credentials WHERE identity_id = '%s' AND id <> '%s'", F.admin_id,
                   k2_cred);
    snprintf(k1_cred, sizeof k1_cred, "%s", v);
    free(v);
    cr_assert_eq(set_status(k2, F.admin_id, "active"), PRECONDITION, "k2 resolved once");

    PGconn *lock = hold_admin_lock();
    inflight in = {0};
    Cms__V1__RevokeCredential r1, r2;
    revoke_msg(&r1, k1_cred);
    revoke_msg(&r2, k2_cred);
    send_cmd(&in, 0, "revoke_credential", F.admin_key, &r1.base);
    wait_lock_waiters(lock, 1);
    send_cmd(&in, 1, "revoke_credential", k2, &r2.base);
    wait_lock_waiters(lock, 2);
    release_admin_lock(lock);
    int codes[2];
    recv_two(&in, codes);
    cr_assert_eq(codes[0], OK);
    cr_assert_eq(codes[1], PRECONDITION);
    assert_sql("1",
               "SELECT count(*) FROM credentials WHERE identity_id = '%s' AND revoked_at IS NULL",
               F.admin_id);
}

/* ---- sealed stored replies are bound to their row ---- */

Test(rules, a_sealed_reply_copied_to_another_row_does_not_open)
{
    Cms__V1__Identity *u = must_create("copier", NULL);
    char ukey[CMS_APIKEY_LEN + 1];
    must_issue_key(u->id, DAY_US, ukey, NULL);
    Cms__V1__Credential *c = NULL;
    cr_assert_eq(
        issue_rid(F.admin_key, u->id, "api_key", cms_test_wall_us() + HOUR_US, "rid-1", &c), OK,
        "%s", g_msg);
    char secret_key[CMS_APIKEY_LEN + 1];
    snprintf(secret_key, sizeof secret_key, "%s", c->api_key);
    cms__v1__credential__free_unpacked(c, NULL);

    /* the admin's sealed reply, copied to rows of another caller, another
     * verb and another request_id (as anyone who can write the table could) */
    const char *rows[][2] = {{u->id, "issue_credential/rid-2"},
                             {F.admin_id, "list_credentials/rid-1"},
                             {F.admin_id, "issue_credential/rid-3"}};
    for (size_t i = 0; i < 3; i++)
        free(sqlf("INSERT INTO command_replies (service, request_id, owner, reply) "
                  "SELECT service, '%s/%s', owner, reply FROM command_replies "
                  "WHERE service = 'identity' AND request_id = '%s/issue_credential/rid-1' "
                  "RETURNING 1",
                  rows[i][0], rows[i][1], F.admin_id));

    int64_t exp = cms_test_wall_us() + HOUR_US;
    Cms__V1__Credential *got = NULL;
    cr_assert_eq(issue_rid(ukey, u->id, "api_key", exp, "rid-2", &got), PRECONDITION);
    cr_assert_str_eq(g_field, "Cms-Request-Id");
    cr_assert_null(strstr(g_msg, secret_key), "never the other caller's reply");
    Cms__V1__ListCredentials lc = CMS__V1__LIST_CREDENTIALS__INIT;
    lc.identity_id = u->id;
    cr_assert_eq(svcfx_call(&F, "identity", F.admin_key, "rid-1", "list_credentials", &lc.base,
                            &cms__v1__credential_list__descriptor, NULL, g_field, g_msg),
                 PRECONDITION, "another verb's row");
    cr_assert_eq(issue_rid(F.admin_key, u->id, "api_key", exp, "rid-3", &got), PRECONDITION,
                 "another request_id's row");
    char *log = svcfx_log(&F);
    cr_assert_null(strstr(log, secret_key + 37), "the key is not logged");
    cr_assert_not_null(strstr(log, "does not open for its row"), "the refusal is logged");
    free(log);

    /* in its own row it opens: the retry gets the same key */
    cr_assert_eq(
        issue_rid(F.admin_key, u->id, "api_key", cms_test_wall_us() + HOUR_US, "rid-1", &got), OK,
        "%s", g_msg);
    cr_assert_str_eq(got->api_key, secret_key);
    cms__v1__credential__free_unpacked(got, NULL);
    cms__v1__identity__free_unpacked(u, NULL);
}
