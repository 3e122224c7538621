/* cms-contracts' lifecycle against the real PostgreSQL and NATS, with
 * cms-identity making the parties: every transition with its one event,
 * every illegal one refused with the status it met, updates only of
 * drafts, activation not before the start date (and by itself once it has
 * come), termination by either party, amendments that supersede, the
 * canonical form whose hash is the content hash, list and its cursor. */
#include "cms/v1/command.pb-c.h"
#include "cms/v1/identity.pb-c.h"
#include "contracts/canonical.h"
#include "ctfx.h"

#include <criterion/criterion.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#define OK 0
#define INVALID CMS__V1__ERROR_CODE__INVALID_ARGUMENT
#define NOT_FOUND CMS__V1__ERROR_CODE__NOT_FOUND
#define DENIED CMS__V1__ERROR_CODE__PERMISSION_DENIED
#define PRECONDITION CMS__V1__ERROR_CODE__FAILED_PRECONDITION
#define DAY 86400

static ctfx C;
static ctparty P, Q; /* provider, consumer */

static void setup(void)
{
    ctfx_setup(&C, "contracts_life");
    ctfx_party(&C, "provider-co", &P);
    ctfx_party(&C, "consumer-co", &Q);
}

static void teardown(void)
{
    ctfx_teardown(&C);
}

TestSuite(lifecycle, .init = setup, .fini = teardown, .timeout = 120);

static Cms__V1__Contract *get(const ctparty *who, const char *id)
{
    Cms__V1__Contract *k = NULL;
    int code = ctfx_simple(&C, who, "get", id, &k);
    cr_assert_eq(code, OK, "get: %d %s", code, C.msg);
    return k;
}

Test(lifecycle, from_draft_to_completed_with_one_event_each)
{
    /* started yesterday: activation is allowed at once */
    Cms__V1__Contract *k = ctfx_create(&C, &P, &P, &Q, ctfx_terms(-DAY, 30 * DAY, NULL));
    cr_assert_eq(ctfx_events(&C, "contract.created", k->id), 1);
    cr_assert_str_eq(k->provider_id, P.id);
    cr_assert_str_eq(k->signatures_json, "{}");
    cr_assert_eq(strlen(k->content_hash), 64);

    Cms__V1__UpdateContract u = CMS__V1__UPDATE_CONTRACT__INIT;
    u.id = k->id;
    u.title = (char *)"Data sharing, revised";
    Cms__V1__Contract *v = NULL;
    cr_assert_eq(ctfx_call(&C, &Q, "update", &u.base, NULL, (ProtobufCMessage **)&v), OK, "%s",
                 C.msg);
    cr_assert_str_eq(v->title, "Data sharing, revised");
    cr_assert_str_neq(v->content_hash, k->content_hash, "the content changed, so its hash");
    cr_assert_eq(ctfx_events(&C, "contract.updated", k->id), 1);

    cr_assert_eq(ctfx_simple(&C, &P, "submit", k->id, NULL), OK, "%s", C.msg);
    cr_assert_eq(ctfx_events(&C, "contract.submitted", k->id), 1);
    /* in review, the content is fixed */
    cr_assert_eq(ctfx_call(&C, &Q, "update", &u.base, NULL, NULL), PRECONDITION);
    cr_assert(strstr(C.msg, "review") != NULL, "names the status: %s", C.msg);
    cr_assert_eq(ctfx_simple(&C, &P, "submit", k->id, NULL), PRECONDITION);
    cr_assert_eq(ctfx_simple(&C, &P, "activate", k->id, NULL), PRECONDITION);

    Cms__V1__Contract *s1 = NULL, *s2 = NULL;
    cr_assert_eq(ctfx_sign(&C, &P, k->id, v->content_hash, &s1), OK, "%s: %s", C.field, C.msg);
    cr_assert_str_eq(s1->status, "review", "one signature of two");
    cr_assert_eq(ctfx_sign(&C, &P, k->id, v->content_hash, NULL), PRECONDITION,
                 "signing again is refused");
    cr_assert_eq(ctfx_sign(&C, &Q, k->id, v->content_hash, &s2), OK, "%s: %s", C.field, C.msg);
    cr_assert_str_eq(s2->status, "signed");
    cr_assert(strstr(s2->signatures_json, "\"provider\"") &&
                  strstr(s2->signatures_json, "\"consumer\""),
              "%s", s2->signatures_json);
    cr_assert_eq(ctfx_events(&C, "contract.signed", k->id), 2);
    cr_assert_eq(ctfx_events(&C, "contract.fully_signed", k->id), 1);

    /* its start has come: a party activates it, or the timer does; once */
    int code = ctfx_simple(&C, &Q, "activate", k->id, NULL);
    cr_assert(code == OK || code == PRECONDITION, "%d %s", code, C.msg);
    ctfx_wait_events(&C, "contract.activated", k->id, 1, 10000);
    Cms__V1__Contract *a = get(&P, k->id);
    cr_assert_str_eq(a->status, "active");
    cr_assert_eq(ctfx_simple(&C, &Q, "activate", k->id, NULL), PRECONDITION);

    cr_assert_eq(ctfx_simple(&C, &P, "complete", k->id, NULL), OK, "%s", C.msg);
    cr_assert_eq(ctfx_events(&C, "contract.completed", k->id), 1);
    cr_assert_eq(ctfx_simple(&C, &P, "complete", k->id, NULL), PRECONDITION);
    Cms__V1__TerminateContract t = CMS__V1__TERMINATE_CONTRACT__INIT;
    t.id = k->id;
    t.reason = (char *)"too late";
    cr_assert_eq(ctfx_call(&C, &Q, "terminate", &t.base, NULL, NULL), PRECONDITION);
    cr_assert(strstr(C.msg, "completed") != NULL, "%s", C.msg);
    cr_assert_eq(ctfx_events(&C, "contract.activated", k->id), 1, "activated once");
    cms__v1__contract__free_unpacked(k, NULL);
    cms__v1__contract__free_unpacked(v, NULL);
    cms__v1__contract__free_unpacked(s1, NULL);
    cms__v1__contract__free_unpacked(s2, NULL);
    cms__v1__contract__free_unpacked(a, NULL);
}

Test(lifecycle, not_active_before_its_start_date)
{
    Cms__V1__Contract *k = ctfx_signed(&C, &P, &Q, ctfx_terms(DAY, 30 * DAY, NULL));
    cr_assert_eq(ctfx_simple(&C, &P, "activate", k->id, NULL), PRECONDITION);
    cr_assert_str_eq(C.field, "terms.start_date");
    cr_assert_eq(ctfx_simple(&C, &P, "complete", k->id, NULL), PRECONDITION);
    cms__v1__contract__free_unpacked(k, NULL);
}

Test(lifecycle, activated_without_anyone_asking_when_its_start_has_come)
{
    Cms__V1__Contract *k = ctfx_signed(&C, &P, &Q, ctfx_terms(-60, 30 * DAY, NULL));
    ctfx_wait_events(&C, "contract.activated", k->id, 1, 10000);
    Cms__V1__Contract *a = get(&Q, k->id);
    cr_assert_str_eq(a->status, "active");
    cms__v1__contract__free_unpacked(k, NULL);
    cms__v1__contract__free_unpacked(a, NULL);
}

Test(lifecycle, either_party_terminates_from_every_open_status)
{
    const char *froms[] = {"draft", "review", "signed", "active"};
    for (int i = 0; i < 4; i++) {
        Cms__V1__Contract *k = ctfx_create(&C, &P, &P, &Q, ctfx_terms(DAY, 30 * DAY, NULL));
        if (i >= 1)
            cr_assert_eq(ctfx_simple(&C, &P, "submit", k->id, NULL), OK);
        if (i >= 2) {
            cr_assert_eq(ctfx_sign(&C, &P, k->id, k->content_hash, NULL), OK);
            cr_assert_eq(ctfx_sign(&C, &Q, k->id, k->content_hash, NULL), OK);
        }
        if (i == 3) /* active: its start moved to the past, as if the day had come */
            free(svcfx_sql(&C.f, "UPDATE contracts SET status = 'active' WHERE status = "
                                 "'signed' RETURNING 1"));
        Cms__V1__TerminateContract t = CMS__V1__TERMINATE_CONTRACT__INIT;
        t.id = k->id;
        t.reason = (char *)"";
        cr_assert_eq(ctfx_call(&C, &Q, "terminate", &t.base, NULL, NULL), INVALID,
                     "a reason is required");
        t.reason = (char *)"the data is no longer available";
        Cms__V1__Contract *x = NULL;
        const ctparty *by = i % 2 ? &P : &Q;
        cr_assert_eq(ctfx_call(&C, by, "terminate", &t.base, NULL, (ProtobufCMessage **)&x), OK,
                     "from %s: %s", froms[i], C.msg);
        cr_assert_str_eq(x->status, "terminated");
        cr_assert_eq(ctfx_events(&C, "contract.terminated", k->id), 1);
        cr_assert_eq(ctfx_call(&C, by, "terminate", &t.base, NULL, NULL), PRECONDITION);
        cms__v1__contract__free_unpacked(x, NULL);
        cms__v1__contract__free_unpacked(k, NULL);
    }
}

Test(lifecycle, create_is_checked)
{
    ctparty R;
    ctfx_party(&C, "bystander", &R);
    Cms__V1__CreateContract m = CMS__V1__CREATE_CONTRACT__INIT;
    m.title = (char *)"t";
    m.description = (char *)"";
    m.provider_id = P.id;
    m.consumer_id = Q.id;
    m.metadata_json = (char *)"";
    m.terms_json = (char *)"{\"start_date\":\"2030-01-01\",\"end_date\":\"2029-01-01\"}";
    cr_assert_eq(ctfx_call(&C, &P, "create", &m.base, NULL, NULL), INVALID);
    cr_assert_str_eq(C.field, "terms.end_date");
    m.terms_json = (char *)"{\"start_date\":\"2030-01-01\",\"end_date\":\"2031-01-01\","
                           "\"conditions\":[{\"type\":\"payment\",\"amount\":5,\"currency\":"
                           "\"EUR\",\"schedule\":\"once\"},{\"type\":\"payment\",\"amount\":5,"
                           "\"currency\":\"EURO\",\"schedule\":\"once\"}]}";
    cr_assert_eq(ctfx_call(&C, &P, "create", &m.base, NULL, NULL), INVALID);
    cr_assert_str_eq(C.field, "terms.conditions[1].currency");
    m.terms_json = (char *)ctfx_terms(DAY, 2 * DAY, NULL);
    /* a third identity is neither party: it cannot create for them */
    cr_assert_eq(ctfx_call(&C, &R, "create", &m.base, NULL, NULL), DENIED);
    /* an admin may */
    cr_assert_eq(ctfx_call(&C, NULL, "create", &m.base, NULL, NULL), OK, "%s", C.msg);
    m.consumer_id = P.id;
    cr_assert_eq(ctfx_call(&C, &P, "create", &m.base, NULL, NULL), INVALID, "parties differ");
    /* an identity cms-contracts has not heard of */
    m.consumer_id = (char *)"0190f0a1-b2c3-7d4e-8f9a-0b1c2d3e4f50";
    cr_assert_eq(ctfx_call(&C, &P, "create", &m.base, NULL, NULL), PRECONDITION);
    cr_assert(strstr(C.msg, "not yet known") != NULL, "%s", C.msg);
    /* a suspended party */
    Cms__V1__SetIdentityStatus st = CMS__V1__SET_IDENTITY_STATUS__INIT;
    st.id = R.id;
    st.status = (char *)"suspended";
    st.reason = (char *)"";
    cr_assert_eq(svcfx_call(&C.f, "identity", C.f.admin_key, NULL, "set_status", &st.base,
                            &cms__v1__identity__descriptor, NULL, NULL, NULL),
                 OK);
    ctfx_wait_party(&C, R.id, "suspended");
    m.consumer_id = R.id;
    cr_assert_eq(ctfx_call(&C, &P, "create", &m.base, NULL, NULL), PRECONDITION);
    cr_assert(strstr(C.msg, "suspended") != NULL, "%s", C.msg);
}

Test(lifecycle, amendment_supersedes_when_it_becomes_active)
{
    Cms__V1__Contract *k = ctfx_signed(&C, &P, &Q, ctfx_terms(-60, 30 * DAY, NULL));
    ctfx_wait_events(&C, "contract.activated", k->id, 1, 10000);
    Cms__V1__AmendContract am = CMS__V1__AMEND_CONTRACT__INIT;
    am.id = k->id;
    am.terms_json = (char *)ctfx_terms(-60, 60 * DAY, NULL);
    Cms__V1__Contract *n = NULL;
    cr_assert_eq(ctfx_call(&C, &Q, "amend", &am.base, NULL, (ProtobufCMessage **)&n), OK, "%s",
                 C.msg);
    cr_assert_str_eq(n->status, "draft");
    cr_assert_str_neq(n->id, k->id);
    cr_assert(strstr(n->metadata_json, k->id) && strstr(n->metadata_json, k->content_hash),
              "metadata.supersedes names the old contract and its hash: %s", n->metadata_json);
    cr_assert_eq(ctfx_events(&C, "contract.amended", k->id), 1);
    /* the old one is untouched by the amendment */
    Cms__V1__Contract *old = get(&P, k->id);
    cr_assert_str_eq(old->status, "active");
    cr_assert_str_eq(old->content_hash, k->content_hash);
    /* a draft is not amended but updated */
    cr_assert_eq(ctfx_call(&C, &Q, "amend",
                           &(Cms__V1__AmendContract){.base = am.base,
                                                     .id = n->id,
                                                     .title = (char *)"x",
                                                     .description = (char *)"",
                                                     .terms_json = (char *)"",
                                                     .metadata_json = (char *)""}
                                .base,
                           NULL, NULL),
                 PRECONDITION);
    cr_assert_eq(ctfx_simple(&C, &P, "submit", n->id, NULL), OK);
    cr_assert_eq(ctfx_sign(&C, &P, n->id, n->content_hash, NULL), OK, "%s", C.msg);
    cr_assert_eq(ctfx_sign(&C, &Q, n->id, n->content_hash, NULL), OK, "%s", C.msg);
    ctfx_wait_events(&C, "contract.activated", n->id, 1, 10000);
    ctfx_wait_events(&C, "contract.completed", k->id, 1, 10000);
    Cms__V1__Contract *done = get(&P, k->id);
    cr_assert_str_eq(done->status, "completed");
    char sql[160];
    snprintf(sql, sizeof sql, "SELECT ended_reason FROM contracts WHERE id = '%s'", k->id);
    char *why = svcfx_sql(&C.f, sql);
    cr_assert_str_eq(why, "superseded");
    free(why);
    cms__v1__contract__free_unpacked(k, NULL);
    cms__v1__contract__free_unpacked(n, NULL);
    cms__v1__contract__free_unpacked(old, NULL);
    cms__v1__contract__free_unpacked(done, NULL);
}

Test(lifecycle, canonical_form_hashes_to_the_content_hash)
{
    Cms__V1__Contract *k = ctfx_create(&C, &P, &P, &Q, ctfx_terms(DAY, 2 * DAY, "\"x\":1.50"));
    Cms__V1__CanonicalForm *f = NULL;
    Cms__V1__ContractRef r = CMS__V1__CONTRACT_REF__INIT;
    r.id = k->id;
    cr_assert_eq(ctfx_call(&C, &Q, "canonical", &r.base, &cms__v1__canonical_form__descriptor,
                           (ProtobufCMessage **)&f),
                 OK, "%s", C.msg);
    uint8_t d[32];
    char hex[CC_HASH_HEX + 1];
    cc_hash((const char *)f->canonical.data, f->canonical.len, d, hex);
    cr_assert_str_eq(hex, k->content_hash);
    cr_assert_str_eq(f->content_hash, k->content_hash);
    cr_assert(memmem(f->canonical.data, f->canonical.len, "\"x\":1.5", 7) != NULL,
              "numbers in their canonical form");
    protobuf_c_message_free_unpacked(&f->base, NULL);
    cms__v1__contract__free_unpacked(k, NULL);
}

Test(lifecycle, list_by_party_and_status_with_a_cursor)
{
    char ids[5][37];
    for (int i = 0; i < 5; i++) {
        Cms__V1__Contract *k = ctfx_create(&C, &P, &P, &Q, ctfx_terms(DAY, 2 * DAY, NULL));
        snprintf(ids[i], sizeof ids[i], "%s", k->id);
        cms__v1__contract__free_unpacked(k, NULL);
    }
    cr_assert_eq(ctfx_simple(&C, &P, "submit", ids[4], NULL), OK);
    Cms__V1__ListContracts l = CMS__V1__LIST_CONTRACTS__INIT;
    l.status = (char *)"draft";
    l.limit = 2;
    int seen = 0;
    for (int page = 0; page < 5; page++) {
        Cms__V1__ContractPage *pg = NULL;
        cr_assert_eq(ctfx_call(&C, &Q, "list", &l.base, &cms__v1__contract_page__descriptor,
                               (ProtobufCMessage **)&pg),
                     OK, "%s", C.msg);
        for (size_t i = 0; i < pg->n_contracts; i++)
            cr_assert_str_eq(pg->contracts[i]->id, ids[seen++], "oldest first, none twice");
        bool last = pg->next[0] == '\0';
        static char after[37];
        snprintf(after, sizeof after, "%s", pg->next);
        l.after = after;
        protobuf_c_message_free_unpacked(&pg->base, NULL);
        if (last)
            break;
    }
    cr_assert_eq(seen, 4, "the four drafts, the one in review left out");
}
