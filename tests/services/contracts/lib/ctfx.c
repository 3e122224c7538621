/* The fixture of cms-contracts' tests; see ctfx.h. */
#include "ctfx.h"

#include "bus.h"
#include "cms/v1/envelope.pb-c.h"
#include "cms/v1/identity.pb-c.h"
#include "contracts/canonical.h"
#include "testenv.h"

#include <criterion/criterion.h>
#include <libpq-fe.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DAY_US (86400 * INT64_C(1000000))

static const char SQL_NOTES[] =
    "CREATE FUNCTION ctfx_note() RETURNS trigger LANGUAGE plpgsql AS $$"
    " BEGIN PERFORM pg_notify(TG_TABLE_NAME, ''); RETURN NULL; END $$;"
    "CREATE TRIGGER ctfx_note AFTER INSERT OR UPDATE ON contract_parties"
    " FOR EACH STATEMENT EXECUTE FUNCTION ctfx_note();"
    "CREATE TRIGGER ctfx_note AFTER INSERT OR UPDATE ON contract_party_keys"
    " FOR EACH STATEMENT EXECUTE FUNCTION ctfx_note();"
    "CREATE TRIGGER ctfx_note AFTER INSERT OR UPDATE ON contracts"
    " FOR EACH STATEMENT EXECUTE FUNCTION ctfx_note();"
    /* every event ever written to the outbox, kept after it is published */
    "CREATE TABLE ctfx_events (seq BIGINT, subject TEXT, payload BYTEA);"
    "CREATE FUNCTION ctfx_event() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$"
    " BEGIN INSERT INTO ctfx_events VALUES (NEW.seq, NEW.subject, NEW.payload);"
    " PERFORM pg_notify('ctfx_events', ''); RETURN NULL; END $$;"
    "CREATE TRIGGER ctfx_event AFTER INSERT ON outbox FOR EACH ROW EXECUTE FUNCTION ctfx_event();";

static const char *const consumers[][2] = {{"contracts-identity", "cms.events.identity.>"},
                                           {"contracts-credential", "cms.events.credential.>"}};

static void durable_name(const ctfx *c, int i, char *out, size_t len)
{
    snprintf(out, len, "%s-%s", consumers[i][0], c->suffix);
}

void ctfx_setup(ctfx *c, const char *dbprefix)
{
    memset(c, 0, sizeof *c);
    cr_assert_eq(sodium_init() < 0, 0);
    svcfx_setup(&c->f, dbprefix);
    /* the triggers the waits listen to */
    PGconn *pg = PQconnectdb(c->f.db);
    cr_assert_eq(PQstatus(pg), CONNECTION_OK, "%s", PQerrorMessage(pg));
    PGresult *res = PQexec(pg, SQL_NOTES);
    cr_assert_eq(PQresultStatus(res), PGRES_COMMAND_OK, "%s", PQerrorMessage(pg));
    PQclear(res);
    PQfinish(pg);
    /* "t<pid>x<hex>" of the command prefix: a durable name's tail */
    snprintf(c->suffix, sizeof c->suffix, "%.*s", (int)strcspn(c->f.prefix, "."), c->f.prefix);
    if (c->f.js == NULL)
        cr_assert_eq(natsConnection_JetStream(&c->f.js, c->f.nc, NULL), NATS_OK);
    for (int i = 0; i < 2; i++) {
        char name[96];
        durable_name(c, i, name, sizeof name);
        jsConsumerConfig cc;
        jsConsumerConfig_Init(&cc);
        cc.Durable = name;
        cc.FilterSubject = consumers[i][1];
        cc.AckPolicy = js_AckExplicit;
        cc.DeliverPolicy = js_DeliverNew;
        cc.MaxAckPending = 256;
        cc.AckWait = INT64_C(30000000000);
        jsErrCode jerr = 0;
        jsConsumerInfo *ci = NULL;
        cr_assert_eq(js_AddConsumer(&ci, c->f.js, "CMS_EVENTS", &cc, NULL, &jerr), NATS_OK,
                     "durable %s: %d", name, (int)jerr);
        jsConsumerInfo_Destroy(ci);
    }
    svcfx_start_at(&c->f, 0, "cms-identity", NULL);
    ctfx_start_contracts(c, CTFX_CONTRACTS, NULL);
}

pid_t ctfx_start_contracts(ctfx *c, int i, const char *const *set)
{
    char suffix[96];
    snprintf(suffix, sizeof suffix, "CMS_CONSUMER_SUFFIX=%s", c->suffix);
    const char *all[16] = {suffix};
    int n = 1;
    for (size_t k = 0; set && set[k] && n < 15; k++)
        all[n++] = set[k];
    all[n] = NULL;
    return svcfx_start_at(&c->f, i, "cms-contracts", all);
}

void ctfx_teardown(ctfx *c)
{
    for (int i = 0; i < SVCFX_PROCS; i++)
        if (c->f.pids[i] > 0)
            svcfx_kill9_at(&c->f, i);
    if (c->suffix[0] && c->f.js)
        for (int i = 0; i < 2; i++) {
            char name[96];
            durable_name(c, i, name, sizeof name);
            (void)js_DeleteConsumer(c->f.js, "CMS_EVENTS", name, NULL, NULL);
        }
    svcfx_teardown(&c->f);
}

static Cms__V1__Credential *issue(ctfx *c, const char *identity_id, const char *type,
                                  const char *public_key)
{
    Cms__V1__IssueCredential m = CMS__V1__ISSUE_CREDENTIAL__INIT;
    m.identity_id = (char *)identity_id;
    m.type = (char *)type;
    m.expires_at_us = cms_bus_now_us() + DAY_US;
    m.public_key = (char *)(public_key ? public_key : "");
    Cms__V1__Credential *cred = NULL;
    int code =
        svcfx_call(&c->f, "identity", c->f.admin_key, NULL, "issue_credential", &m.base,
                   &cms__v1__credential__descriptor, (ProtobufCMessage **)&cred, c->field, c->msg);
    cr_assert_eq(code, 0, "issue %s: %d %s: %s", type, code, c->field, c->msg);
    return cred;
}

void ctfx_wait_party(ctfx *c, const char *identity_id, const char *status)
{
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT coalesce((SELECT status::text FROM contract_parties WHERE identity_id = "
             "'%s'), 'unknown')",
             identity_id);
    char *got = svcfx_wait_sql(&c->f, "contract_parties", sql, status, 20000);
    cr_assert_str_eq(got, status, "cms-contracts hears that %s is %s", identity_id, status);
    free(got);
}

void ctfx_party(ctfx *c, const char *name, ctparty *p)
{
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    Cms__V1__CreateIdentity m = CMS__V1__CREATE_IDENTITY__INIT;
    m.name = (char *)name;
    m.type = (char *)"user";
    m.metadata_json = (char *)"";
    Cms__V1__Identity *id = NULL;
    int code =
        svcfx_call(&c->f, "identity", c->f.admin_key, NULL, "create", &m.base,
                   &cms__v1__identity__descriptor, (ProtobufCMessage **)&id, c->field, c->msg);
    cr_assert_eq(code, 0, "create %s: %d %s: %s", name, code, c->field, c->msg);
    snprintf(p->id, sizeof p->id, "%s", id->id);
    cms__v1__identity__free_unpacked(id, NULL);
    Cms__V1__Credential *k = issue(c, p->id, "api_key", NULL);
    snprintf(p->key, sizeof p->key, "%s", k->api_key);
    cms__v1__credential__free_unpacked(k, NULL);
    uint8_t pk[32];
    char pk64[64];
    crypto_sign_keypair(pk, p->sk);
    sodium_bin2base64(pk64, sizeof pk64, pk, sizeof pk, sodium_base64_VARIANT_ORIGINAL);
    k = issue(c, p->id, "public_key", pk64);
    snprintf(p->key_id, sizeof p->key_id, "%s", k->id);
    cms__v1__credential__free_unpacked(k, NULL);
    ctfx_wait_party(c, p->id, "active");
    char sql[200];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM contract_party_keys WHERE credential_id = '%s'",
             p->key_id);
    char *got = svcfx_wait_sql(&c->f, "contract_party_keys", sql, "1", 20000);
    cr_assert_str_eq(got, "1", "cms-contracts hears of %s's public key", name);
    free(got);
}

int ctfx_call(ctfx *c, const ctparty *who, const char *verb, const ProtobufCMessage *req,
              const ProtobufCMessageDescriptor *rdesc, ProtobufCMessage **out)
{
    c->field[0] = c->msg[0] = '\0';
    ProtobufCMessage *got = NULL;
    int code = svcfx_call(&c->f, "contracts", who ? who->key : c->f.admin_key, NULL, verb, req,
                          rdesc ? rdesc : &cms__v1__contract__descriptor, &got, c->field, c->msg);
    if (out)
        *out = got;
    else if (got)
        protobuf_c_message_free_unpacked(got, NULL);
    return code;
}

static void rfc3339(int64_t s, char out[32])
{
    time_t t = (time_t)s;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

const char *ctfx_terms(int64_t start_s, int64_t end_s, const char *extra)
{
    static char buf[1024];
    char a[32], b[32];
    int64_t now = (int64_t)time(NULL);
    rfc3339(now + start_s, a);
    rfc3339(now + end_s, b);
    snprintf(buf, sizeof buf,
             "{\"start_date\":\"%s\",\"end_date\":\"%s\",\"conditions\":[{\"type\":\"payment\","
             "\"amount\":1000,\"currency\":\"EUR\",\"schedule\":\"monthly\"}],"
             "\"sla\":{\"availability\":99.9,\"response_time\":200}%s%s}",
             a, b, extra ? "," : "", extra ? extra : "");
    return buf;
}

Cms__V1__Contract *ctfx_create(ctfx *c, const ctparty *by, const ctparty *prov, const ctparty *cons,
                               const char *terms)
{
    Cms__V1__CreateContract m = CMS__V1__CREATE_CONTRACT__INIT;
    m.title = (char *)"Data sharing";
    m.description = (char *)"provider shares, consumer trains";
    m.provider_id = (char *)prov->id;
    m.consumer_id = (char *)cons->id;
    m.terms_json = (char *)terms;
    m.metadata_json = (char *)"";
    Cms__V1__Contract *k = NULL;
    int code = ctfx_call(c, by, "create", &m.base, NULL, (ProtobufCMessage **)&k);
    cr_assert_eq(code, 0, "create: %d %s: %s", code, c->field, c->msg);
    cr_assert_str_eq(k->status, "draft");
    return k;
}

int ctfx_simple(ctfx *c, const ctparty *who, const char *verb, const char *id,
                Cms__V1__Contract **out)
{
    Cms__V1__ContractRef m = CMS__V1__CONTRACT_REF__INIT;
    m.id = (char *)id;
    return ctfx_call(c, who, verb, &m.base, NULL, (ProtobufCMessage **)out);
}

int ctfx_sign(ctfx *c, const ctparty *p, const char *id, const char *content_hash,
              Cms__V1__Contract **out)
{
    uint8_t digest[32];
    size_t n = 0;
    cr_assert_eq(
        sodium_hex2bin(digest, sizeof digest, content_hash, strlen(content_hash), NULL, &n, NULL),
        0);
    cr_assert_eq(n, sizeof digest);
    char sig[CC_SIG_B64URL_MAX + 1];
    cc_sign(p->sk, digest, sig);
    Cms__V1__SignContract m = CMS__V1__SIGN_CONTRACT__INIT;
    m.id = (char *)id;
    m.signature = sig;
    m.key_id = (char *)p->key_id;
    m.side = (char *)"";
    return ctfx_call(c, p, "sign", &m.base, NULL, (ProtobufCMessage **)out);
}

Cms__V1__Contract *ctfx_signed(ctfx *c, const ctparty *prov, const ctparty *cons, const char *terms)
{
    Cms__V1__Contract *k = ctfx_create(c, prov, prov, cons, terms), *r = NULL;
    int code = ctfx_simple(c, prov, "submit", k->id, NULL);
    cr_assert_eq(code, 0, "submit: %d %s", code, c->msg);
    code = ctfx_sign(c, prov, k->id, k->content_hash, NULL);
    cr_assert_eq(code, 0, "provider signs: %d %s: %s", code, c->field, c->msg);
    code = ctfx_sign(c, cons, k->id, k->content_hash, &r);
    cr_assert_eq(code, 0, "consumer signs: %d %s: %s", code, c->field, c->msg);
    cms__v1__contract__free_unpacked(k, NULL);
    return r;
}

static void events_sql(const char *type, const char *contract_id, char *sql, size_t len)
{
    snprintf(sql, len,
             "SELECT count(*) FROM ctfx_events WHERE subject = 'cms.events.%s' AND "
             "position(convert_to('%s', 'UTF8') in payload) > 0",
             type, contract_id);
}

int ctfx_events(ctfx *c, const char *type, const char *contract_id)
{
    char sql[400];
    events_sql(type, contract_id, sql, sizeof sql);
    char *v = svcfx_sql(&c->f, sql);
    int n = atoi(v);
    free(v);
    return n;
}

void ctfx_wait_events(ctfx *c, const char *type, const char *contract_id, int want,
                      double timeout_ms)
{
    char sql[400], w[16];
    events_sql(type, contract_id, sql, sizeof sql);
    snprintf(w, sizeof w, "%d", want);
    char *v = svcfx_wait_sql(&c->f, "ctfx_events", sql, w, timeout_ms);
    cr_assert_str_eq(v, w, "%s events about %s", type, contract_id);
    free(v);
}
