/* cms-contracts' signatures against the real PostgreSQL and NATS, with
 * cms-identity making the parties and their keys: every refused signature
 * with its code and field (not base64url, not 64 bytes, over another
 * digest, the other party's key, the other party's side, a revoked, an
 * expired or an unknown key, a signature replayed from a twin contract or
 * made over the content before an update, a draft, a suspended signer),
 * each leaving the contract's signatures as they were; and what a stored
 * signature holds. */
#include "cms/v1/command.pb-c.h"
#include "cms/v1/identity.pb-c.h"
#include "contracts/canonical.h"
#include "ctfx.h"
#include "testenv.h"

#include <criterion/criterion.h>
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define OK 0
#define INVALID CMS__V1__ERROR_CODE__INVALID_ARGUMENT
#define DENIED CMS__V1__ERROR_CODE__PERMISSION_DENIED
#define PRECONDITION CMS__V1__ERROR_CODE__FAILED_PRECONDITION
#define DAY 86400

static ctfx C;
static ctparty P, Q; /* provider, consumer */

static void setup(void)
{
    ctfx_setup(&C, "contracts_sig");
    ctfx_party(&C, "provider-co", &P);
    ctfx_party(&C, "consumer-co", &Q);
}

static void teardown(void)
{
    ctfx_teardown(&C);
}

TestSuite(signatures, .init = setup, .fini = teardown, .timeout = 120);

/* A sign command as given: signature, key and side (NULL: ""). */
static int sign_raw(const ctparty *who, const char *id, const char *sig, const char *key_id,
                    const char *side)
{
    Cms__V1__SignContract m = CMS__V1__SIGN_CONTRACT__INIT;
    m.id = (char *)id;
    m.signature = (char *)sig;
    m.key_id = (char *)key_id;
    m.side = (char *)(side ? side : "");
    return ctfx_call(&C, who, "sign", &m.base, NULL, NULL);
}

static void digest_of(const char *hex, uint8_t d[32])
{
    size_t n = 0;
    cr_assert_eq(sodium_hex2bin(d, 32, hex, strlen(hex), NULL, &n, NULL), 0);
    cr_assert_eq(n, 32);
}

/* sk's signature over the 32 bytes of the hash hex, base64url */
static void sign_hash(const uint8_t sk[64], const char *hex, char sig[CC_SIG_B64URL_MAX + 1])
{
    uint8_t d[32];
    digest_of(hex, d);
    cc_sign(sk, d, sig);
}

static Cms__V1__Contract *get(const ctparty *who, const char *id)
{
    Cms__V1__Contract *k = NULL;
    int code = ctfx_simple(&C, who, "get", id, &k);
    cr_assert_eq(code, OK, "get: %d %s", code, C.msg);
    return k;
}

/* A contract in review, made and submitted by P. */
static Cms__V1__Contract *in_review(void)
{
    Cms__V1__Contract *k = ctfx_create(&C, &P, &P, &Q, ctfx_terms(DAY, 30 * DAY, NULL)), *r = NULL;
    cr_assert_eq(ctfx_simple(&C, &P, "submit", k->id, &r), OK, "submit: %s", C.msg);
    cr_assert_str_eq(r->status, "review");
    cms__v1__contract__free_unpacked(k, NULL);
    return r;
}

/* The contract as before the refusal: its status, signatures, last change
 * and signed events are what they were. */
static void assert_unchanged(const Cms__V1__Contract *before, const char *what)
{
    Cms__V1__Contract *now = get(&P, before->id);
    cr_assert_str_eq(now->signatures_json, before->signatures_json, "%s: signatures unchanged",
                     what);
    cr_assert_str_eq(now->status, before->status, "%s: status unchanged", what);
    cr_assert_eq(now->updated_at_us, before->updated_at_us, "%s: not written", what);
    cms__v1__contract__free_unpacked(now, NULL);
}

static void assert_refused(int code, int want, const char *field, const char *msg_has,
                           const Cms__V1__Contract *before, const char *what)
{
    cr_assert_eq(code, want, "%s: code %d (%s: %s)", what, code, C.field, C.msg);
    if (field)
        cr_assert_str_eq(C.field, field, "%s: field (%s)", what, C.msg);
    if (msg_has)
        cr_assert(strstr(C.msg, msg_has) != NULL, "%s: the message says \"%s\": %s", what, msg_has,
                  C.msg);
    assert_unchanged(before, what);
}

Test(signatures, malformed_or_over_another_digest_is_an_invalid_argument)
{
    Cms__V1__Contract *k = in_review();
    char good[CC_SIG_B64URL_MAX + 1];
    sign_hash(P.sk, k->content_hash, good);
    cr_assert_eq(strlen(good), 86);

    assert_refused(sign_raw(&P, k->id, "", P.key_id, NULL), INVALID, "signature", NULL, k,
                   "no signature");
    char longer[CC_SIG_B64URL_MAX + 2];
    memset(longer, 'A', sizeof longer - 1);
    longer[sizeof longer - 1] = '\0';
    assert_refused(sign_raw(&P, k->id, longer, P.key_id, NULL), INVALID, "signature", NULL, k,
                   "longer than any signature");
    /* 86 characters, but not of the base64url alphabet */
    char notb64[87];
    memcpy(notb64, good, sizeof notb64);
    notb64[10] = '*';
    notb64[40] = '+';
    assert_refused(sign_raw(&P, k->id, notb64, P.key_id, NULL), INVALID, "signature", NULL, k,
                   "not base64url");
    /* the right signature in standard padded base64: not the encoding asked for */
    uint8_t raw[64];
    size_t n = 0;
    cr_assert_eq(sodium_base642bin(raw, sizeof raw, good, strlen(good), NULL, &n, NULL,
                                   sodium_base64_VARIANT_URLSAFE_NO_PADDING),
                 0);
    char std[100];
    sodium_bin2base64(std, sizeof std, raw, sizeof raw, sodium_base64_VARIANT_ORIGINAL);
    assert_refused(sign_raw(&P, k->id, std, P.key_id, NULL), INVALID, "signature", NULL, k,
                   "standard base64 with padding");
    /* base64url, but of 63 bytes */
    char shorter[100];
    sodium_bin2base64(shorter, sizeof shorter, raw, 63, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    assert_refused(sign_raw(&P, k->id, shorter, P.key_id, NULL), INVALID, "signature", NULL, k,
                   "63 bytes");
    /* a valid Ed25519 signature by the right key, over another digest */
    uint8_t other[32];
    crypto_hash_sha256(other, (const uint8_t *)"something else", 14);
    char wrong[CC_SIG_B64URL_MAX + 1];
    cc_sign(P.sk, other, wrong);
    assert_refused(sign_raw(&P, k->id, wrong, P.key_id, NULL), INVALID, "signature",
                   k->content_hash, k, "over another digest");
    /* the message names the hash to sign; with it, the same key succeeds */
    cr_assert_eq(sign_raw(&P, k->id, good, P.key_id, NULL), OK, "%s: %s", C.field, C.msg);
    cr_assert_eq(ctfx_events(&C, "contract.signed", k->id), 1);
    cms__v1__contract__free_unpacked(k, NULL);
}

Test(signatures, only_with_ones_own_key_on_ones_own_side)
{
    Cms__V1__Contract *k = in_review();
    char byp[CC_SIG_B64URL_MAX + 1], byq[CC_SIG_B64URL_MAX + 1];
    sign_hash(P.sk, k->content_hash, byp);
    sign_hash(Q.sk, k->content_hash, byq);
    /* the provider names the consumer's key, with a signature that verifies under it */
    assert_refused(sign_raw(&P, k->id, byq, Q.key_id, NULL), DENIED, "key_id", "not yours", k,
                   "the other party's key");
    /* the provider asks to sign the consumer's side */
    assert_refused(sign_raw(&P, k->id, byp, P.key_id, "consumer"), DENIED, "side", NULL, k,
                   "the other party's side");
    assert_refused(sign_raw(&Q, k->id, byq, Q.key_id, "provider"), DENIED, "side", NULL, k,
                   "the consumer asks for the provider's side");
    assert_refused(sign_raw(&P, k->id, byp, P.key_id, "witness"), INVALID, "side", NULL, k,
                   "no such side");
    /* a key cms-contracts has never heard of */
    assert_refused(sign_raw(&P, k->id, byp, "0190f0a1-b2c3-7d4e-8f9a-0b1c2d3e4f50", NULL),
                   PRECONDITION, "key_id", "not yet known", k, "an unknown key");
    /* naming its own side is allowed */
    cr_assert_eq(sign_raw(&P, k->id, byp, P.key_id, "provider"), OK, "%s: %s", C.field, C.msg);
    cms__v1__contract__free_unpacked(k, NULL);
}

Test(signatures, not_with_a_revoked_key)
{
    Cms__V1__Contract *k = in_review();
    Cms__V1__RevokeCredential rv = CMS__V1__REVOKE_CREDENTIAL__INIT;
    rv.id = P.key_id;
    rv.reason = (char *)"key compromised";
    cr_assert_eq(svcfx_call(&C.f, "identity", C.f.admin_key, NULL, "revoke_credential", &rv.base,
                            &cms__v1__credential__descriptor, NULL, C.field, C.msg),
                 OK, "revoke: %s", C.msg);
    char sql[200];
    snprintf(sql, sizeof sql,
             "SELECT (revoked_at IS NOT NULL)::text FROM contract_party_keys WHERE "
             "credential_id = '%s'",
             P.key_id);
    char *got = svcfx_wait_sql(&C.f, "contract_party_keys", sql, "true", 20000);
    cr_assert_str_eq(got, "true", "cms-contracts hears of the revocation");
    free(got);
    char sig[CC_SIG_B64URL_MAX + 1];
    sign_hash(P.sk, k->content_hash, sig);
    assert_refused(sign_raw(&P, k->id, sig, P.key_id, NULL), PRECONDITION, "key_id", "revoked", k,
                   "a revoked key");
    cr_assert_eq(ctfx_events(&C, "contract.signed", k->id), 0);
    cms__v1__contract__free_unpacked(k, NULL);
}

Test(signatures, not_with_an_expired_key)
{
    Cms__V1__Contract *k = in_review();
    /* a key of P's that cms-contracts holds as expired an hour ago */
    uint8_t pk[32], sk[64];
    char pk64[CC_PUBLIC_KEY_B64 + 1], sql[512];
    const char *kid = "0190f0a1-b2c3-7d4e-8f9a-0b1c2d3e4f51";
    crypto_sign_keypair(pk, sk);
    sodium_bin2base64(pk64, sizeof pk64, pk, sizeof pk, sodium_base64_VARIANT_ORIGINAL);
    snprintf(sql, sizeof sql,
             "INSERT INTO contract_party_keys (credential_id, identity_id, public_key, "
             "expires_at) VALUES ('%s', '%s', '%s', now() - interval '1 hour') RETURNING 1",
             kid, P.id, pk64);
    char *v = svcfx_sql(&C.f, sql);
    cr_assert_str_eq(v, "1");
    free(v);
    char sig[CC_SIG_B64URL_MAX + 1];
    sign_hash(sk, k->content_hash, sig);
    assert_refused(sign_raw(&P, k->id, sig, kid, NULL), PRECONDITION, "key_id", "expired", k,
                   "an expired key");
    /* the same key, unexpired, is accepted: it was refused for its expiry only */
    snprintf(sql, sizeof sql,
             "UPDATE contract_party_keys SET expires_at = now() + interval '1 hour' WHERE "
             "credential_id = '%s' RETURNING 1",
             kid);
    v = svcfx_sql(&C.f, sql);
    cr_assert_str_eq(v, "1");
    free(v);
    cr_assert_eq(sign_raw(&P, k->id, sig, kid, NULL), OK, "%s: %s", C.field, C.msg);
    cms__v1__contract__free_unpacked(k, NULL);
}

Test(signatures, not_replayed_on_a_twin_contract)
{
    /* two contracts alike in everything but their ids */
    const char *terms = ctfx_terms(DAY, 30 * DAY, NULL);
    char t[1024];
    snprintf(t, sizeof t, "%s", terms);
    Cms__V1__Contract *a = ctfx_create(&C, &P, &P, &Q, t), *b = ctfx_create(&C, &P, &P, &Q, t);
    cr_assert_str_eq(a->terms_json, b->terms_json);
    cr_assert_str_eq(a->title, b->title);
    cr_assert_str_neq(a->content_hash, b->content_hash, "the id is part of what is signed");
    cr_assert_eq(ctfx_simple(&C, &P, "submit", a->id, NULL), OK);
    Cms__V1__Contract *sb = NULL;
    cr_assert_eq(ctfx_simple(&C, &P, "submit", b->id, &sb), OK);
    Cms__V1__Contract *sa = NULL;
    cr_assert_eq(ctfx_sign(&C, &P, a->id, a->content_hash, &sa), OK, "%s", C.msg);
    /* the signature as stored on A, sent for B */
    json_t *sigs = json_loads(sa->signatures_json, 0, NULL);
    cr_assert_not_null(sigs, "%s", sa->signatures_json);
    const char *stolen =
        json_string_value(json_object_get(json_object_get(sigs, "provider"), "signature"));
    cr_assert_not_null(stolen, "%s", sa->signatures_json);
    assert_refused(sign_raw(&P, b->id, stolen, P.key_id, NULL), INVALID, "signature", NULL, sb,
                   "A's signature on B");
    cr_assert_eq(ctfx_events(&C, "contract.signed", b->id), 0);
    json_decref(sigs);
    cms__v1__contract__free_unpacked(a, NULL);
    cms__v1__contract__free_unpacked(b, NULL);
    cms__v1__contract__free_unpacked(sa, NULL);
    cms__v1__contract__free_unpacked(sb, NULL);
}

Test(signatures, not_over_the_content_before_an_update)
{
    Cms__V1__Contract *k = ctfx_create(&C, &P, &P, &Q, ctfx_terms(DAY, 30 * DAY, NULL)), *u = NULL,
                      *r = NULL;
    char old_sig[CC_SIG_B64URL_MAX + 1];
    sign_hash(P.sk, k->content_hash, old_sig);
    Cms__V1__UpdateContract m = CMS__V1__UPDATE_CONTRACT__INIT;
    m.id = k->id;
    m.terms_json = (char *)ctfx_terms(DAY, 60 * DAY, NULL);
    cr_assert_eq(ctfx_call(&C, &Q, "update", &m.base, NULL, (ProtobufCMessage **)&u), OK, "%s",
                 C.msg);
    cr_assert_str_neq(u->content_hash, k->content_hash);
    cr_assert_eq(ctfx_simple(&C, &P, "submit", k->id, &r), OK);
    /* made over the old content, before the update: it verifies under P's key, but not for this */
    assert_refused(sign_raw(&P, k->id, old_sig, P.key_id, NULL), INVALID, "signature",
                   u->content_hash, r, "a signature of the content before the update");
    /* and the hash as it is now is signed */
    cr_assert_eq(ctfx_sign(&C, &P, k->id, r->content_hash, NULL), OK, "%s", C.msg);
    cms__v1__contract__free_unpacked(k, NULL);
    cms__v1__contract__free_unpacked(u, NULL);
    cms__v1__contract__free_unpacked(r, NULL);
}

Test(signatures, not_in_draft)
{
    Cms__V1__Contract *k = ctfx_create(&C, &P, &P, &Q, ctfx_terms(DAY, 30 * DAY, NULL));
    assert_refused(ctfx_sign(&C, &P, k->id, k->content_hash, NULL), PRECONDITION, "status", "draft",
                   k, "a draft");
    assert_refused(ctfx_sign(&C, &Q, k->id, k->content_hash, NULL), PRECONDITION, "status", "draft",
                   k, "a draft, by the consumer");
    cr_assert_eq(ctfx_events(&C, "contract.signed", k->id), 0);
    cms__v1__contract__free_unpacked(k, NULL);
}

Test(signatures, not_by_a_suspended_party)
{
    Cms__V1__Contract *k = in_review();
    Cms__V1__SetIdentityStatus st = CMS__V1__SET_IDENTITY_STATUS__INIT;
    st.id = Q.id;
    st.status = (char *)"suspended";
    st.reason = (char *)"under review";
    cr_assert_eq(svcfx_call(&C.f, "identity", C.f.admin_key, NULL, "set_status", &st.base,
                            &cms__v1__identity__descriptor, NULL, C.field, C.msg),
                 OK, "suspend: %s", C.msg);
    ctfx_wait_party(&C, Q.id, "suspended");
    /* refused at authentication (the key's identity is not active) or by
     * cms-contracts' own view of the party */
    int code = ctfx_sign(&C, &Q, k->id, k->content_hash, NULL);
    cr_assert(code == DENIED || code == PRECONDITION, "suspended signer: %d %s: %s", code, C.field,
              C.msg);
    if (code == PRECONDITION)
        cr_assert(strstr(C.msg, "suspended") != NULL, "%s", C.msg);
    assert_unchanged(k, "a suspended signer");
    Cms__V1__Contract *seen = get(&P, k->id);
    cr_assert_str_eq(seen->signatures_json, "{}", "no signature stored");
    cr_assert_eq(ctfx_events(&C, "contract.signed", k->id), 0);
    cms__v1__contract__free_unpacked(seen, NULL);
    cms__v1__contract__free_unpacked(k, NULL);
}

/* cms-identity still lets the signer in, but cms-contracts has heard that
 * it is suspended (set here directly): its own view refuses the signature. */
Test(signatures, not_by_a_party_cms_contracts_holds_suspended)
{
    Cms__V1__Contract *k = in_review();
    char sql[200];
    snprintf(sql, sizeof sql,
             "UPDATE contract_parties SET status = 'suspended' WHERE identity_id = '%s' "
             "RETURNING 1",
             Q.id);
    char *v = svcfx_sql(&C.f, sql);
    cr_assert_str_eq(v, "1");
    free(v);
    assert_refused(ctfx_sign(&C, &Q, k->id, k->content_hash, NULL), PRECONDITION, "consumer",
                   "the consumer is suspended", k, "a signer held suspended");
    cr_assert_eq(ctfx_events(&C, "contract.signed", k->id), 0);
    cms__v1__contract__free_unpacked(k, NULL);
}

/* "2026-12-02T10:00:00.123456Z" to Unix microseconds */
static int64_t parse_us(const char *s)
{
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    const char *rest = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    cr_assert_not_null(rest, "RFC 3339: %s", s);
    cr_assert(rest[0] == '.' && strlen(rest) == 8 && rest[7] == 'Z', "microseconds, UTC: %s", s);
    return (int64_t)timegm(&tm) * 1000000 + strtoll(rest + 1, NULL, 10);
}

Test(signatures, a_stored_signature_says_who_signed_what_with_which_key)
{
    Cms__V1__Contract *k = in_review(), *s = NULL;
    char sig[CC_SIG_B64URL_MAX + 1];
    sign_hash(P.sk, k->content_hash, sig);
    int64_t before = cms_test_wall_us();
    cr_assert_eq(sign_raw(&P, k->id, sig, P.key_id, NULL), OK, "%s", C.msg);
    int64_t after = cms_test_wall_us();
    s = get(&Q, k->id);
    json_error_t je;
    json_t *all = json_loads(s->signatures_json, 0, &je);
    cr_assert_not_null(all, "%s: %s", s->signatures_json, je.text);
    cr_assert_eq(json_object_size(all), 1, "the provider's only: %s", s->signatures_json);
    json_t *e = json_object_get(all, "provider");
    cr_assert(json_is_object(e), "%s", s->signatures_json);
    cr_assert_eq(json_object_size(e), 7, "exactly the seven members: %s", s->signatures_json);
    const char *names[] = {"identity_id", "key_id",       "alg",      "public_key",
                           "signature",   "content_hash", "signed_at"};
    for (size_t i = 0; i < 7; i++)
        cr_assert(json_is_string(json_object_get(e, names[i])), "%s is a string: %s", names[i],
                  s->signatures_json);
#define MEMBER(name) json_string_value(json_object_get(e, name))
    cr_assert_str_eq(MEMBER("identity_id"), P.id);
    cr_assert_str_eq(MEMBER("key_id"), P.key_id);
    cr_assert_str_eq(MEMBER("alg"), "ed25519");
    uint8_t pk[32];
    char pk64[CC_PUBLIC_KEY_B64 + 1];
    crypto_sign_ed25519_sk_to_pk(pk, P.sk);
    sodium_bin2base64(pk64, sizeof pk64, pk, sizeof pk, sodium_base64_VARIANT_ORIGINAL);
    cr_assert_str_eq(MEMBER("public_key"), pk64, "the key's public half, standard base64");
    cr_assert_str_eq(MEMBER("signature"), sig);
    cr_assert_str_eq(MEMBER("content_hash"), k->content_hash);
    int64_t at = parse_us(MEMBER("signed_at"));
    /* the service's clock and ours are the same machine's; a second of slack */
    cr_assert(at >= before - 1000000 && at <= after + 1000000, "signed_at %s", MEMBER("signed_at"));
    /* and the entry alone verifies: the signature over its hash under its key */
    uint8_t d[32];
    digest_of(MEMBER("content_hash"), d);
    cr_assert(cc_verify(MEMBER("public_key"), MEMBER("signature"), d));
#undef MEMBER
    json_decref(all);
    cms__v1__contract__free_unpacked(k, NULL);
    cms__v1__contract__free_unpacked(s, NULL);
}
