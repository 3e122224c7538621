/* Who sees a contract, against the real PostgreSQL and NATS: to an identity
 * that is neither party, every verb on the parties' contract answers
 * exactly as for a contract that does not exist, and list shows it
 * nothing; admins and auditors read every contract but change none. Then
 * the row-level security itself, connected as cms-contracts' own database
 * role: no actor sees nothing, an actor sees only its own contracts and
 * changes no one else's, and the timer sees only what is due. */
#include "cms/v1/command.pb-c.h"
#include "cms/v1/identity.pb-c.h"
#include "contracts/canonical.h"
#include "ctfx.h"
#include "testenv.h"

#include <criterion/criterion.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OK 0
#define NOT_FOUND CMS__V1__ERROR_CODE__NOT_FOUND
#define DENIED CMS__V1__ERROR_CODE__PERMISSION_DENIED
#define DAY 86400
#define MISSING "0190f0a1-b2c3-7d4e-8f9a-0b1c2d3e4f52" /* no contract has this id */

static ctfx C;
static ctparty P, Q, R; /* provider, consumer, a bystander */

static void setup(void)
{
    ctfx_setup(&C, "contracts_acc");
    ctfx_party(&C, "provider-co", &P);
    ctfx_party(&C, "consumer-co", &Q);
    ctfx_party(&C, "bystander-co", &R);
}

static void teardown(void)
{
    ctfx_teardown(&C);
}

TestSuite(access, .init = setup, .fini = teardown, .timeout = 120);

/* The verb by who on id, with a body that would otherwise be accepted:
 * the reply's code, its field and message into field/msg (256 bytes). */
static int verb_on(const ctparty *who, const char *verb, const char *id, char *field, char *msg)
{
    int code;
    if (strcmp(verb, "update") == 0) {
        Cms__V1__UpdateContract m = CMS__V1__UPDATE_CONTRACT__INIT;
        m.id = (char *)id;
        m.title = (char *)"taken over";
        code = ctfx_call(&C, who, verb, &m.base, NULL, NULL);
    } else if (strcmp(verb, "sign") == 0) {
        /* a well-formed signature by the caller's own key over a digest */
        uint8_t d[32] = {1};
        char sig[CC_SIG_B64URL_MAX + 1];
        cc_sign(who->sk, d, sig);
        Cms__V1__SignContract m = CMS__V1__SIGN_CONTRACT__INIT;
        m.id = (char *)id;
        m.signature = sig;
        m.key_id = (char *)who->key_id;
        m.side = (char *)"";
        code = ctfx_call(&C, who, verb, &m.base, NULL, NULL);
    } else if (strcmp(verb, "terminate") == 0) {
        Cms__V1__TerminateContract m = CMS__V1__TERMINATE_CONTRACT__INIT;
        m.id = (char *)id;
        m.reason = (char *)"not mine, but still";
        code = ctfx_call(&C, who, verb, &m.base, NULL, NULL);
    } else if (strcmp(verb, "amend") == 0) {
        Cms__V1__AmendContract m = CMS__V1__AMEND_CONTRACT__INIT;
        m.id = (char *)id;
        m.title = (char *)"amended by a stranger";
        m.description = m.terms_json = m.metadata_json = (char *)"";
        code = ctfx_call(&C, who, verb, &m.base, NULL, NULL);
    } else if (strcmp(verb, "canonical") == 0) {
        Cms__V1__ContractRef m = CMS__V1__CONTRACT_REF__INIT;
        m.id = (char *)id;
        code = ctfx_call(&C, who, verb, &m.base, &cms__v1__canonical_form__descriptor, NULL);
    } else {
        code = ctfx_simple(&C, who, verb, id, NULL);
    }
    snprintf(field, 256, "%s", C.field);
    snprintf(msg, 256, "%s", C.msg);
    return code;
}

static Cms__V1__Contract *get(const ctparty *who, const char *id)
{
    Cms__V1__Contract *k = NULL;
    int code = ctfx_simple(&C, who, "get", id, &k);
    cr_assert_eq(code, OK, "get: %d %s", code, C.msg);
    return k;
}

static int list_count(const ctparty *who, const char *party_id, const char *find_id)
{
    Cms__V1__ListContracts l = CMS__V1__LIST_CONTRACTS__INIT;
    l.party_id = (char *)(party_id ? party_id : "");
    Cms__V1__ContractPage *pg = NULL;
    cr_assert_eq(ctfx_call(&C, who, "list", &l.base, &cms__v1__contract_page__descriptor,
                           (ProtobufCMessage **)&pg),
                 OK, "list: %s", C.msg);
    int n = 0;
    for (size_t i = 0; i < pg->n_contracts; i++)
        n += find_id == NULL || strcmp(pg->contracts[i]->id, find_id) == 0;
    cr_assert_str_eq(pg->next, "", "one page");
    protobuf_c_message_free_unpacked(&pg->base, NULL);
    return n;
}

Test(access, a_bystander_is_told_it_does_not_exist)
{
    Cms__V1__Contract *k = ctfx_create(&C, &P, &P, &Q, ctfx_terms(-60, 30 * DAY, NULL));
    /* the verbs a bystander might try, on a draft and on an active contract */
    static const char *const verbs[] = {"get",       "canonical", "update",   "submit",  "sign",
                                        "terminate", "amend",     "activate", "complete"};
    for (int round = 0; round < 2; round++) {
        for (size_t i = 0; i < sizeof verbs / sizeof verbs[0]; i++) {
            char f1[256], m1[256], f2[256], m2[256];
            int theirs = verb_on(&R, verbs[i], k->id, f1, m1);
            int none = verb_on(&R, verbs[i], MISSING, f2, m2);
            cr_assert_eq(theirs, NOT_FOUND, "%s of their contract: %d %s: %s", verbs[i], theirs, f1,
                         m1);
            cr_assert_eq(none, NOT_FOUND, "%s of no contract: %d %s: %s", verbs[i], none, f2, m2);
            cr_assert_str_eq(f1, f2, "%s: the same field", verbs[i]);
            cr_assert_str_eq(m1, m2, "%s: the same message", verbs[i]);
        }
        if (round == 0) {
            /* make it active (its start has passed), then try again */
            Cms__V1__Contract *s = NULL;
            cr_assert_eq(ctfx_simple(&C, &P, "submit", k->id, &s), OK);
            cr_assert_eq(ctfx_sign(&C, &P, k->id, k->content_hash, NULL), OK, "%s", C.msg);
            cr_assert_eq(ctfx_sign(&C, &Q, k->id, k->content_hash, NULL), OK, "%s", C.msg);
            ctfx_wait_events(&C, "contract.activated", k->id, 1, 10000);
            Cms__V1__Contract *active = get(&P, k->id);
            cr_assert_str_eq(active->status, "active");
            cms__v1__contract__free_unpacked(s, NULL);
            cms__v1__contract__free_unpacked(k, NULL);
            k = active;
        }
    }
    /* nothing the bystander did changed it */
    Cms__V1__Contract *now = get(&Q, k->id);
    cr_assert_eq(now->updated_at_us, k->updated_at_us);
    cr_assert_str_eq(now->title, "Data sharing");
    cr_assert_eq(ctfx_events(&C, "contract.updated", k->id), 0);
    cr_assert_eq(ctfx_events(&C, "contract.terminated", k->id), 0);
    cr_assert_eq(ctfx_events(&C, "contract.amended", k->id), 0);
    cr_assert_eq(ctfx_events(&C, "contract.signed", k->id), 2, "the parties' two");
    cms__v1__contract__free_unpacked(now, NULL);
    cms__v1__contract__free_unpacked(k, NULL);
}

Test(access, a_bystander_lists_nothing_of_theirs)
{
    Cms__V1__Contract *a = ctfx_create(&C, &P, &P, &Q, ctfx_terms(DAY, 30 * DAY, NULL));
    Cms__V1__Contract *b = ctfx_create(&C, &Q, &Q, &P, ctfx_terms(DAY, 30 * DAY, NULL));
    /* and one of R's own, with P */
    Cms__V1__Contract *mine = ctfx_create(&C, &R, &R, &P, ctfx_terms(DAY, 30 * DAY, NULL));
    cr_assert_eq(list_count(&P, NULL, NULL), 3, "P is party to all three");
    cr_assert_eq(list_count(&Q, NULL, NULL), 2);
    cr_assert_eq(list_count(&R, NULL, NULL), 1, "R's own only");
    cr_assert_eq(list_count(&R, NULL, mine->id), 1);
    cr_assert_eq(list_count(&R, P.id, NULL), 1, "P's contracts, as R sees them: R's own with P");
    cr_assert_eq(list_count(&R, P.id, a->id) + list_count(&R, P.id, b->id), 0);
    cr_assert_eq(list_count(&R, Q.id, NULL), 0, "none of Q's");
    cms__v1__contract__free_unpacked(a, NULL);
    cms__v1__contract__free_unpacked(b, NULL);
    cms__v1__contract__free_unpacked(mine, NULL);
}

/* An identity with metadata, made through cms-identity, with an API key. */
static void identity_with(const char *name, const char *metadata, ctparty *out)
{
    memset(out, 0, sizeof *out);
    Cms__V1__CreateIdentity m = CMS__V1__CREATE_IDENTITY__INIT;
    m.name = (char *)name;
    m.type = (char *)"user";
    m.metadata_json = (char *)metadata;
    Cms__V1__Identity *id = NULL;
    cr_assert_eq(svcfx_call(&C.f, "identity", C.f.admin_key, NULL, "create", &m.base,
                            &cms__v1__identity__descriptor, (ProtobufCMessage **)&id, C.field,
                            C.msg),
                 OK, "create %s: %s", name, C.msg);
    snprintf(out->id, sizeof out->id, "%s", id->id);
    cms__v1__identity__free_unpacked(id, NULL);
    Cms__V1__IssueCredential ic = CMS__V1__ISSUE_CREDENTIAL__INIT;
    ic.identity_id = out->id;
    ic.type = (char *)"api_key";
    ic.expires_at_us = cms_test_wall_us() + DAY * INT64_C(1000000);
    ic.public_key = (char *)"";
    Cms__V1__Credential *cred = NULL;
    cr_assert_eq(svcfx_call(&C.f, "identity", C.f.admin_key, NULL, "issue_credential", &ic.base,
                            &cms__v1__credential__descriptor, (ProtobufCMessage **)&cred, C.field,
                            C.msg),
                 OK, "issue: %s", C.msg);
    snprintf(out->key, sizeof out->key, "%s", cred->api_key);
    cms__v1__credential__free_unpacked(cred, NULL);
}

Test(access, admins_and_auditors_read_every_contract_and_change_none)
{
    Cms__V1__Contract *k = ctfx_create(&C, &P, &P, &Q, ctfx_terms(DAY, 30 * DAY, NULL));
    ctparty A;
    identity_with("auditor-1", "{\"roles\":[\"auditor\"]}", &A);
    Cms__V1__Contract *ga = NULL, *gb = NULL;
    cr_assert_eq(ctfx_simple(&C, NULL, "get", k->id, &ga), OK, "the admin: %s", C.msg);
    cr_assert_eq(ctfx_simple(&C, &A, "get", k->id, &gb), OK, "the auditor: %s", C.msg);
    cr_assert_str_eq(ga->content_hash, k->content_hash);
    cr_assert_str_eq(gb->content_hash, k->content_hash);
    cr_assert_eq(list_count(&A, NULL, k->id), 1, "the auditor lists it");
    Cms__V1__ContractRef r = CMS__V1__CONTRACT_REF__INIT;
    r.id = k->id;
    cr_assert_eq(
        ctfx_call(&C, &A, "canonical", &r.base, &cms__v1__canonical_form__descriptor, NULL), OK,
        "%s", C.msg);
    /* reading is all: they are no party */
    char f[256], m[256];
    cr_assert_eq(verb_on(&A, "update", k->id, f, m), DENIED, "auditor update: %s", m);
    cr_assert_eq(verb_on(&A, "terminate", k->id, f, m), DENIED, "auditor terminate: %s", m);
    cr_assert_eq(verb_on(NULL, "submit", k->id, f, m), DENIED, "admin submit: %s", m);
    /* an identity whose metadata names no role is a bystander */
    ctparty plain;
    identity_with("nobody-1", "{\"roles\":[]}", &plain);
    cr_assert_eq(ctfx_simple(&C, &plain, "get", k->id, NULL), NOT_FOUND);
    Cms__V1__Contract *now = get(&P, k->id);
    cr_assert_eq(now->updated_at_us, k->updated_at_us, "unchanged");
    cr_assert_str_eq(now->status, "draft");
    cms__v1__contract__free_unpacked(now, NULL);
    cms__v1__contract__free_unpacked(ga, NULL);
    cms__v1__contract__free_unpacked(gb, NULL);
    cms__v1__contract__free_unpacked(k, NULL);
}

/* ---- the row-level security, as cms-contracts' database role ---- */

static PGconn *as_contracts(void)
{
    char conninfo[640];
    cms_test_db_as(C.f.db, "contracts", conninfo, sizeof conninfo);
    PGconn *pg = PQconnectdb(conninfo);
    cr_assert_eq(PQstatus(pg), CONNECTION_OK, "%s", PQerrorMessage(pg));
    return pg;
}

static void exec_ok(PGconn *pg, const char *sql)
{
    PGresult *r = PQexec(pg, sql);
    cr_assert(PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK,
              "%s: %s", sql, PQerrorMessage(pg));
    PQclear(r);
}

/* The first value of a one-row query, with params (malloc'd). */
static char *value(PGconn *pg, const char *sql, int n, const char *const *params)
{
    PGresult *r = PQexecParams(pg, sql, n, NULL, params, NULL, NULL, 0);
    cr_assert_eq(PQresultStatus(r), PGRES_TUPLES_OK, "%s: %s", sql, PQerrorMessage(pg));
    cr_assert_eq(PQntuples(r), 1, "%s", sql);
    char *v = strdup(PQgetvalue(r, 0, 0));
    PQclear(r);
    return v;
}

static void assert_value(PGconn *pg, const char *sql, int n, const char *const *params,
                         const char *want, const char *what)
{
    char *v = value(pg, sql, n, params);
    cr_assert_str_eq(v, want, "%s: %s", what, sql);
    free(v);
}

static void act_as(PGconn *pg, const char *actor)
{
    const char *v[] = {actor};
    free(value(pg, "SELECT set_config('cms.actor', $1, true)", 1, v));
}

Test(access, row_level_security_as_the_service_role)
{
    Cms__V1__Contract *a = ctfx_create(&C, &P, &P, &Q, ctfx_terms(DAY, 30 * DAY, NULL));
    Cms__V1__Contract *b = ctfx_signed(&C, &P, &Q, ctfx_terms(DAY, 30 * DAY, NULL));
    cr_assert_str_eq(b->status, "signed", "signed, starting tomorrow");
    Cms__V1__Contract *other = ctfx_create(&C, &R, &R, &Q, ctfx_terms(DAY, 30 * DAY, NULL));
    char *all = svcfx_sql(&C.f, "SELECT count(*) FROM contracts");
    cr_assert_str_eq(all, "3", "the superuser sees the three");
    free(all);

    PGconn *pg = as_contracts();
    assert_value(pg, "SELECT current_setting('is_superuser')", 0, NULL, "off", "not a superuser");
    /* nobody acting: nothing at all */
    assert_value(pg, "SELECT count(*) FROM contracts", 0, NULL, "0", "no actor");
    /* acting as the bystander: R's own one only, none of P-Q's */
    exec_ok(pg, "BEGIN");
    act_as(pg, R.id);
    assert_value(pg, "SELECT count(*) FROM contracts", 0, NULL, "1", "R");
    const char *ab[] = {a->id, b->id};
    assert_value(pg, "SELECT count(*) FROM contracts WHERE id IN ($1::uuid, $2::uuid)", 2, ab, "0",
                 "R sees none of P-Q's");
    /* and changes none of them: the update finds no row */
    const char *ida[] = {a->id};
    PGresult *u = PQexecParams(pg, "UPDATE contracts SET title = 'seized' WHERE id = $1::uuid", 1,
                               NULL, ida, NULL, NULL, 0);
    cr_assert_eq(PQresultStatus(u), PGRES_COMMAND_OK, "%s", PQerrorMessage(pg));
    cr_assert_str_eq(PQcmdTuples(u), "0", "R's update of P-Q's contract changes no row");
    PQclear(u);
    /* nor write one in their name */
    const char *ins[] = {P.id, Q.id};
    u = PQexecParams(pg,
                     "INSERT INTO contracts (id, title, provider_id, consumer_id, terms, "
                     "signatures, metadata, content_hash, starts_at, ends_at) VALUES "
                     "(gen_random_uuid(), 'forged', $1::uuid, $2::uuid, '{}', '{}', '{}', "
                     "repeat('0', 64), now(), now() + interval '1 day')",
                     2, NULL, ins, NULL, NULL, 0);
    cr_assert_eq(PQresultStatus(u), PGRES_FATAL_ERROR, "an insert for P-Q by R is refused");
    cr_assert_str_eq(PQresultErrorField(u, PG_DIAG_SQLSTATE), "42501", "%s", PQerrorMessage(pg));
    PQclear(u);
    exec_ok(pg, "ROLLBACK");
    /* a transaction-local actor is gone with its transaction */
    assert_value(pg, "SELECT count(*) FROM contracts", 0, NULL, "0", "after the transaction");

    /* acting as P: P's two, not R's */
    exec_ok(pg, "BEGIN");
    act_as(pg, P.id);
    assert_value(pg, "SELECT count(*) FROM contracts", 0, NULL, "2", "P");
    assert_value(pg, "SELECT count(*) FROM contracts WHERE id IN ($1::uuid, $2::uuid)", 2, ab, "2",
                 "P's are P-Q's");
    exec_ok(pg, "COMMIT");

    /* the timer: only what is due; the signed one starts tomorrow */
    exec_ok(pg, "BEGIN");
    free(value(pg, "SELECT set_config('cms.timer', 'on', true)", 0, NULL));
    assert_value(pg, "SELECT count(*) FROM contracts", 0, NULL, "0", "the timer, nothing due");
    /* in this transaction only, its start comes (as P, who may change it):
     * now the timer sees it, and it alone */
    act_as(pg, P.id);
    const char *idb[] = {b->id};
    u = PQexecParams(pg,
                     "UPDATE contracts SET starts_at = now() - interval '1 minute' "
                     "WHERE id = $1::uuid",
                     1, NULL, idb, NULL, NULL, 0);
    cr_assert_str_eq(PQcmdTuples(u), "1", "%s", PQerrorMessage(pg));
    PQclear(u);
    act_as(pg, "");
    assert_value(pg, "SELECT count(*) FROM contracts", 0, NULL, "1", "the timer, one due");
    assert_value(pg, "SELECT id::text FROM contracts", 0, NULL, b->id, "the timer, the due one");
    exec_ok(pg, "ROLLBACK");
    PQfinish(pg);

    /* R's attempt left P-Q's contract as it was */
    Cms__V1__Contract *now = get(&P, a->id);
    cr_assert_str_eq(now->title, "Data sharing");
    cr_assert_eq(now->updated_at_us, a->updated_at_us);
    cms__v1__contract__free_unpacked(now, NULL);
    cms__v1__contract__free_unpacked(a, NULL);
    cms__v1__contract__free_unpacked(b, NULL);
    cms__v1__contract__free_unpacked(other, NULL);
}
