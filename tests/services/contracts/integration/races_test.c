/* Racing commands on one contract, against the real PostgreSQL and NATS:
 * the provider's signature (completing the consumer's) racing the
 * provider's own terminations, and updates of one draft racing each other,
 * all sent before any reply is read, to a cms-contracts with a pool of
 * several connections. Of each race the outcome is one of those a
 * sequence of the same commands could have had: one termination, at most
 * one signature, each with its one event; the losers refused with the
 * status they lost to. */
#include "cms/v1/command.pb-c.h"
#include "contracts/canonical.h"
#include "ctfx.h"
#include "testcmd.h"

#include <criterion/criterion.h>
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OK 0
#define PRECONDITION CMS__V1__ERROR_CODE__FAILED_PRECONDITION
#define UNAVAILABLE CMS__V1__ERROR_CODE__UNAVAILABLE
#define DAY 86400
#define NSIGN 25
#define NTERM 25
#define NUPDATE 20

static ctfx C;
static ctparty P, Q; /* provider, consumer */

static void setup(void)
{
    ctfx_setup(&C, "contracts_race");
    /* several connections, so that the commands really are concurrent */
    cr_assert_eq(svcfx_stop_at(&C.f, CTFX_CONTRACTS), 0);
    const char *set[] = {"CMS_PG_POOL_SIZE=8", NULL};
    ctfx_start_contracts(&C, CTFX_CONTRACTS, set);
    ctfx_party(&C, "provider-co", &P);
    ctfx_party(&C, "consumer-co", &Q);
}

static void teardown(void)
{
    ctfx_teardown(&C);
}

TestSuite(races, .init = setup, .fini = teardown, .timeout = 120);

/* n commands of cms-contracts, verbs[i] with bodies[i], all by key,
 * published before any reply is read; out[i] is the reply to the i-th
 * (free with cms__v1__reply__free_unpacked). cms_test_commands_each with
 * one subject per command. */
static void commands_at_once(const char *key, const char *const *verbs,
                             const ProtobufCMessage *const *bodies, int n, Cms__V1__Reply **out)
{
    char inbox[96], reply[128], subject[128], auth[160];
    natsInbox *ib = NULL;
    natsSubscription *sub = NULL;
    cr_assert_eq(natsInbox_Create(&ib), NATS_OK);
    snprintf(inbox, sizeof inbox, "%s", (const char *)ib);
    natsInbox_Destroy(ib);
    snprintf(reply, sizeof reply, "%s.*", inbox);
    cr_assert_eq(natsConnection_SubscribeSync(&sub, C.f.nc, reply), NATS_OK);
    cr_assert_eq(natsSubscription_SetPendingLimits(sub, -1, -1), NATS_OK);
    cr_assert_eq(natsConnection_Flush(C.f.nc), NATS_OK, "subscribed before anything is sent");
    snprintf(auth, sizeof auth, "Bearer %s", key);
    for (int i = 0; i < n; i++) {
        size_t len = protobuf_c_message_get_packed_size(bodies[i]);
        uint8_t *buf = malloc(len + 1);
        cr_assert_not_null(buf);
        protobuf_c_message_pack(bodies[i], buf);
        snprintf(subject, sizeof subject, "%s.contracts.%s", C.f.prefix, verbs[i]);
        snprintf(reply, sizeof reply, "%s.%d", inbox, i);
        natsMsg *m = NULL;
        cr_assert_eq(natsMsg_Create(&m, subject, reply, (const char *)buf, (int)len), NATS_OK);
        cr_assert_eq(natsMsgHeader_Set(m, "Authorization", auth), NATS_OK);
        cr_assert_eq(natsConnection_PublishMsg(C.f.nc, m), NATS_OK);
        natsMsg_Destroy(m);
        free(buf);
        out[i] = NULL;
    }
    cr_assert_eq(natsConnection_Flush(C.f.nc), NATS_OK);
    for (int got = 0; got < n; got++) {
        natsMsg *rep = NULL;
        natsStatus s = natsSubscription_NextMsg(&rep, sub, 20000);
        cr_assert_eq(s, NATS_OK, "%d of %d replies", got, n);
        int i = atoi(strrchr(natsMsg_GetSubject(rep), '.') + 1);
        cr_assert(i >= 0 && i < n && out[i] == NULL, "one reply per request");
        out[i] = cms__v1__reply__unpack(NULL, (size_t)natsMsg_GetDataLength(rep),
                                        (const uint8_t *)natsMsg_GetData(rep));
        cr_assert_not_null(out[i], "a reply is a cms.v1.Reply");
        natsMsg_Destroy(rep);
    }
    natsSubscription_Destroy(sub);
}

static Cms__V1__Contract *result(const Cms__V1__Reply *r)
{
    Cms__V1__Contract *k = cms__v1__contract__unpack(NULL, r->result.len, r->result.data);
    cr_assert_not_null(k, "the result is a Contract");
    return k;
}

static Cms__V1__Contract *get(const char *id)
{
    Cms__V1__Contract *k = NULL;
    int code = ctfx_simple(&C, &P, "get", id, &k);
    cr_assert_eq(code, OK, "get: %d %s", code, C.msg);
    return k;
}

static bool has_side(const char *signatures, const char *side)
{
    json_t *j = json_loads(signatures, 0, NULL);
    cr_assert_not_null(j, "%s", signatures);
    bool yes = json_object_get(j, side) != NULL;
    json_decref(j);
    return yes;
}

Test(races, signatures_against_terminations)
{
    Cms__V1__Contract *k = ctfx_create(&C, &P, &P, &Q, ctfx_terms(DAY, 30 * DAY, NULL));
    cr_assert_eq(ctfx_simple(&C, &P, "submit", k->id, NULL), OK);
    cr_assert_eq(ctfx_sign(&C, &Q, k->id, k->content_hash, NULL), OK, "%s", C.msg);
    cr_assert_eq(ctfx_events(&C, "contract.signed", k->id), 1, "the consumer's");

    uint8_t d[32];
    size_t dn = 0;
    cr_assert_eq(sodium_hex2bin(d, sizeof d, k->content_hash, CC_HASH_HEX, NULL, &dn, NULL), 0);
    char sig[CC_SIG_B64URL_MAX + 1];
    cc_sign(P.sk, d, sig);
    Cms__V1__SignContract s = CMS__V1__SIGN_CONTRACT__INIT;
    s.id = k->id;
    s.signature = sig;
    s.key_id = P.key_id;
    s.side = (char *)"";
    Cms__V1__TerminateContract t = CMS__V1__TERMINATE_CONTRACT__INIT;
    t.id = k->id;
    t.reason = (char *)"changed our minds";

    enum { N = NSIGN + NTERM };
    const char *verbs[N];
    const ProtobufCMessage *bodies[N];
    for (int i = 0; i < N; i++) { /* sign, terminate, sign, terminate, ... */
        verbs[i] = i % 2 ? "terminate" : "sign";
        bodies[i] = i % 2 ? &t.base : &s.base;
    }
    Cms__V1__Reply *out[N];
    commands_at_once(P.key, verbs, bodies, N, out);

    int signs = 0, terms = 0;
    bool signed_first = false;
    for (int i = 0; i < N; i++) {
        int code = cms_test_reply_code(out[i]);
        bool sign = i % 2 == 0;
        if (code == OK) {
            Cms__V1__Contract *r = result(out[i]);
            if (sign) {
                signs++;
                cr_assert_str_eq(r->status, "signed", "the second signature completes it");
            } else {
                terms++;
                cr_assert_str_eq(r->status, "terminated");
                /* a termination after the signature carries it */
                signed_first = has_side(r->signatures_json, "provider");
            }
            cms__v1__contract__free_unpacked(r, NULL);
            continue;
        }
        const Cms__V1__Error *e = out[i]->error;
        cr_assert_eq(code, PRECONDITION, "%s %d: %d %s: %s", verbs[i], i, code, e->field,
                     e->message);
        if (sign)
            cr_assert(strstr(e->message, "the contract is terminated") ||
                          strstr(e->message, "the contract is signed") ||
                          strstr(e->message, "the provider has signed already"),
                      "sign %d names what it lost to: %s", i, e->message);
        else
            cr_assert(strstr(e->message, "the contract is terminated") != NULL,
                      "terminate %d names what it lost to: %s", i, e->message);
    }
    cr_log_info("signatures won: %d of %d", signs, NSIGN);
    cr_assert_eq(terms, 1, "exactly one termination wins");
    cr_assert_leq(signs, 1, "at most one signature wins");
    cr_assert_eq(signed_first, signs == 1, "the termination came after the signature, if any");

    Cms__V1__Contract *end = get(k->id);
    cr_assert_str_eq(end->status, "terminated");
    cr_assert_eq(has_side(end->signatures_json, "provider"), signs == 1, "%s",
                 end->signatures_json);
    cr_assert(has_side(end->signatures_json, "consumer"));
    /* each event once per change that happened, all written with their change */
    cr_assert_eq(ctfx_events(&C, "contract.signed", k->id), signs + 1);
    cr_assert_eq(ctfx_events(&C, "contract.fully_signed", k->id), signs);
    cr_assert_eq(ctfx_events(&C, "contract.terminated", k->id), 1);
    cr_assert_eq(ctfx_events(&C, "contract.activated", k->id), 0);
    for (int i = 0; i < N; i++)
        cms__v1__reply__free_unpacked(out[i], NULL);
    cms__v1__contract__free_unpacked(end, NULL);
    cms__v1__contract__free_unpacked(k, NULL);
}

Test(races, updates_of_one_draft)
{
    Cms__V1__Contract *k = ctfx_create(&C, &P, &P, &Q, ctfx_terms(DAY, 30 * DAY, NULL));
    Cms__V1__UpdateContract u[NUPDATE];
    char titles[NUPDATE][32], terms[NUPDATE][1024];
    const char *verbs[NUPDATE];
    const ProtobufCMessage *bodies[NUPDATE];
    for (int i = 0; i < NUPDATE; i++) {
        cms__v1__update_contract__init(&u[i]);
        snprintf(titles[i], sizeof titles[i], "revision %d", i);
        /* each its own term too: the row must be one update's, not a mix */
        snprintf(terms[i], sizeof terms[i], "%s", ctfx_terms(DAY, (30 + i) * DAY, NULL));
        u[i].id = k->id;
        u[i].title = titles[i];
        u[i].terms_json = terms[i];
        verbs[i] = "update";
        bodies[i] = &u[i].base;
    }
    Cms__V1__Reply *out[NUPDATE];
    commands_at_once(Q.key, verbs, bodies, NUPDATE, out);

    /* each one wins, or is refused after its retries as the row kept
     * changing under it; each win read the one before it, so the last
     * written is the latest */
    int wins = 0, last = -1;
    int64_t last_at = 0;
    Cms__V1__Contract *won[NUPDATE] = {0};
    for (int i = 0; i < NUPDATE; i++) {
        int code = cms_test_reply_code(out[i]);
        if (code != OK) {
            cr_assert_eq(code, UNAVAILABLE, "update %d: %d %s: %s", i, code, out[i]->error->field,
                         out[i]->error->message);
            cr_assert(strstr(out[i]->error->message, "keeps changing") != NULL, "update %d: %s", i,
                      out[i]->error->message);
            continue;
        }
        won[i] = result(out[i]);
        cr_assert_str_eq(won[i]->title, titles[i], "the reply is its own update's");
        cr_assert_str_eq(won[i]->status, "draft");
        for (int j = 0; j < i; j++)
            if (won[j])
                cr_assert_neq(won[j]->updated_at_us, won[i]->updated_at_us,
                              "updates %d and %d are not one write", j, i);
        wins++;
        if (won[i]->updated_at_us > last_at) {
            last_at = won[i]->updated_at_us;
            last = i;
        }
    }
    cr_log_info("updates won: %d of %d", wins, NUPDATE);
    cr_assert_geq(wins, 1, "one at least");
    Cms__V1__Contract *row = get(k->id);
    cr_assert_str_eq(row->title, titles[last], "the row is the last win's");
    cr_assert_str_eq(row->terms_json, won[last]->terms_json, "with its terms");
    cr_assert_str_eq(row->content_hash, won[last]->content_hash);
    cr_assert_eq(row->updated_at_us, won[last]->updated_at_us);
    /* its hash is that of what is stored: not a mix of two updates */
    Cms__V1__CanonicalForm *f = NULL;
    Cms__V1__ContractRef r = CMS__V1__CONTRACT_REF__INIT;
    r.id = k->id;
    cr_assert_eq(ctfx_call(&C, &P, "canonical", &r.base, &cms__v1__canonical_form__descriptor,
                           (ProtobufCMessage **)&f),
                 OK, "%s", C.msg);
    cr_assert_str_eq(f->content_hash, row->content_hash);
    cr_assert_eq(ctfx_events(&C, "contract.updated", k->id), wins, "one event per win");
    protobuf_c_message_free_unpacked(&f->base, NULL);
    for (int i = 0; i < NUPDATE; i++) {
        cms__v1__reply__free_unpacked(out[i], NULL);
        if (won[i])
            cms__v1__contract__free_unpacked(won[i], NULL);
    }
    cms__v1__contract__free_unpacked(row, NULL);
    cms__v1__contract__free_unpacked(k, NULL);
}
