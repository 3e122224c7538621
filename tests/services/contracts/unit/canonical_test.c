/* What a contract's parties sign (services/contracts/canonical.h): the
 * canonical form against a hand-written one and independent of key order,
 * its hash, Ed25519 signing and verifying, the signature entry, and the
 * offline check of an exported document: both sides valid, and each kind
 * of tampering (a byte of the terms or the title, a signature, a public
 * key, swapped entries) caught with a reason that says what. */
#include "contracts/canonical.h"

#include <criterion/criterion.h>
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CONTRACT "0190aa00-0000-7000-8000-0000000000a1"
#define PROVIDER "0190aa00-0000-7000-8000-00000000000b"
#define CONSUMER "0190aa00-0000-7000-8000-00000000000c"
#define PROVIDER_KEY "0190aa00-0000-7000-8000-0000000000kb"
#define CONSUMER_KEY "0190aa00-0000-7000-8000-0000000000kc"
#define TERMS "{\"price\": {\"amount\": 100, \"currency\": \"EUR\"}, \"days\": [1, 2, 3]}"
#define SIGNED_AT_US INT64_C(1796205600123456) /* 2026-12-02T10:00:00.123456Z */

/* The canonical form of the small contract, written by hand. */
static const char small_canonical[] =
    "{\"consumer_id\":\"" CONSUMER "\",\"description\":\"\",\"id\":\"" CONTRACT "\","
    "\"provider_id\":\"" PROVIDER "\",\"terms\":{\"a\":\"\xc3\xa9\",\"b\":[1,2]},"
    "\"title\":\"Data\"}";
/* its SHA-256, by another implementation (Python's hashlib) */
#define SMALL_HASH "b7b8dcc62d797c6187074789b8330bc29e3c6515613653dfa99c83f261e015cc"

typedef struct party {
    uint8_t pk[crypto_sign_PUBLICKEYBYTES], sk[crypto_sign_SECRETKEYBYTES];
    char pk_b64[CC_PUBLIC_KEY_B64 + 1];
} party;

static party g_provider, g_consumer;

static void make_party(party *p)
{
    cr_assert_eq(crypto_sign_keypair(p->pk, p->sk), 0);
    sodium_bin2base64(p->pk_b64, sizeof p->pk_b64, p->pk, sizeof p->pk,
                      sodium_base64_VARIANT_ORIGINAL);
}

static void setup(void)
{
    cr_assert_geq(sodium_init(), 0);
    make_party(&g_provider);
    make_party(&g_consumer);
}

TestSuite(canonical, .init = setup);

/* The digest and hex hash of a contract with terms. */
static void digest_of(const char *title, const char *terms, uint8_t digest[32],
                      char hex[CC_HASH_HEX + 1])
{
    char *c = NULL;
    size_t n = 0;
    cr_assert_eq(cc_canonical(CONTRACT, title, "A description", PROVIDER, CONSUMER, terms, &c, &n),
                 CMS_JCS_OK);
    cc_hash(c, n, digest, hex);
    free(c);
}

/* One side's entry, signed over the contract (title, terms) by p as who. */
static json_t *entry(const party *p, const char *who, const char *key_id, const char *title,
                     const char *terms)
{
    uint8_t digest[32];
    char hex[CC_HASH_HEX + 1], sig[CC_SIG_B64URL_MAX + 1];
    digest_of(title, terms, digest, hex);
    cc_sign(p->sk, digest, sig);
    json_t *e = cc_entry_json(who, key_id, p->pk_b64, sig, hex, SIGNED_AT_US);
    cr_assert_not_null(e);
    return e;
}

/* An export of the contract "Data" with TERMS and the given entries (taken;
 * NULL: that side has not signed), as text (malloc'd). */
static char *document(json_t *provider, json_t *consumer, size_t flags)
{
    uint8_t digest[32];
    char hex[CC_HASH_HEX + 1];
    digest_of("Data", TERMS, digest, hex);
    json_t *terms = json_loads(TERMS, 0, NULL), *sigs = json_object();
    cr_assert_not_null(terms);
    if (provider != NULL)
        json_object_set_new(sigs, "provider", provider);
    if (consumer != NULL)
        json_object_set_new(sigs, "consumer", consumer);
    json_t *doc =
        json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:o, s:{}, s:s, s:s, s:s, s:o}", "format",
                  CC_FORMAT, "id", CONTRACT, "title", "Data", "description", "A description",
                  "provider_id", PROVIDER, "consumer_id", CONSUMER, "status", "signed", "terms",
                  terms, "metadata", "created_at", "2026-12-01T09:00:00.000000Z", "updated_at",
                  "2026-12-02T10:00:00.123456Z", "content_hash", hex, "signatures", sigs);
    cr_assert_not_null(doc);
    char *text = json_dumps(doc, flags);
    cr_assert_not_null(text);
    json_decref(doc);
    return text;
}

static char *signed_document(size_t flags)
{
    return document(entry(&g_provider, PROVIDER, PROVIDER_KEY, "Data", TERMS),
                    entry(&g_consumer, CONSUMER, CONSUMER_KEY, "Data", TERMS), flags);
}

static bool verify_text(const char *text, cc_report *r)
{
    return cc_verify_document(text, strlen(text), r);
}

/* Changes the character off characters into the string value of "key" in
 * text (the first one), to another of the same alphabet. */
static void change_value(char *text, const char *key, size_t off)
{
    char needle[64];
    snprintf(needle, sizeof needle, "\"%s\":\"", key);
    char *p = strstr(text, needle);
    cr_assert_not_null(p, "%s not in %s", needle, text);
    p += strlen(needle) + off;
    *p = *p == 'A' ? 'B' : 'A';
}

/* ------------------------------------------------------------------------ */
/* the canonical form */

Test(canonical, is_the_hand_written_form_whatever_the_key_order)
{
    const char *orders[] = {
        "{\"b\": [1, 2], \"a\": \"\\u00e9\"}",
        "{\"a\":\"\xc3\xa9\",\"b\":[1.0,2e0]}",
        "\n{ \"a\" : \"\xc3\xa9\" ,\n  \"b\" : [ 1 , 2 ] }\n",
    };
    for (size_t i = 0; i < sizeof orders / sizeof orders[0]; i++) {
        char *c = NULL;
        size_t n = 0;
        cr_assert_eq(cc_canonical(CONTRACT, "Data", NULL, PROVIDER, CONSUMER, orders[i], &c, &n),
                     CMS_JCS_OK);
        cr_assert_eq(n, strlen(small_canonical));
        cr_assert_str_eq(c, small_canonical);
        uint8_t digest[32];
        char hex[CC_HASH_HEX + 1];
        cc_hash(c, n, digest, hex);
        cr_assert_str_eq(hex, SMALL_HASH);
        free(c);
    }
    /* description NULL is "" */
    char *c = NULL;
    size_t n = 0;
    cr_assert_eq(cc_canonical(CONTRACT, "Data", "", PROVIDER, CONSUMER, orders[0], &c, &n),
                 CMS_JCS_OK);
    cr_assert_str_eq(c, small_canonical);
    free(c);
}

Test(canonical, refuses_what_has_no_canonical_form)
{
    char *c = (char *)"untouched";
    size_t n = 1;
    cr_assert_eq(cc_canonical(CONTRACT, "Data", NULL, PROVIDER, CONSUMER, "[1]", &c, &n),
                 CMS_JCS_EPARSE);
    cr_assert_null(c);
    cr_assert_eq(n, 0);
    cr_assert_eq(cc_canonical(CONTRACT, "Data", NULL, PROVIDER, CONSUMER, "{", &c, &n),
                 CMS_JCS_EPARSE);
    cr_assert_eq(
        cc_canonical(CONTRACT, "Data", NULL, PROVIDER, CONSUMER, "{\"a\":1,\"a\":2}", &c, &n),
        CMS_JCS_EPARSE);
    cr_assert_eq(cc_canonical(CONTRACT, "Data", NULL, PROVIDER, CONSUMER, "{\"a\":1e400}", &c, &n),
                 CMS_JCS_ENUMBER);
    cr_assert_eq(cc_canonical(CONTRACT, "Data", NULL, PROVIDER, CONSUMER, NULL, &c, &n),
                 CMS_JCS_EPARSE);
    cr_assert_eq(cc_canonical(NULL, "Data", NULL, PROVIDER, CONSUMER, "{}", &c, &n),
                 CMS_JCS_EPARSE);
    cr_assert_eq(cc_canonical(CONTRACT, "D\xff", NULL, PROVIDER, CONSUMER, "{}", &c, &n),
                 CMS_JCS_EPARSE);
    cr_assert_null(c);
}

Test(canonical, hash_is_sha256_in_lowercase_hex)
{
    uint8_t digest[32];
    char hex[CC_HASH_HEX + 1];
    cc_hash("abc", 3, digest, hex);
    cr_assert_str_eq(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    cr_assert_eq(digest[0], 0xba);
    cr_assert_eq(digest[31], 0xad);
}

/* ------------------------------------------------------------------------ */
/* signatures */

Test(canonical, sign_and_verify_round_trip)
{
    uint8_t digest[32];
    char hex[CC_HASH_HEX + 1], sig[CC_SIG_B64URL_MAX + 1];
    digest_of("Data", TERMS, digest, hex);
    cc_sign(g_provider.sk, digest, sig);
    cr_assert_eq(strlen(sig), 86, "%s", sig);
    cr_assert_null(strpbrk(sig, "+/="), "%s", sig);
    cr_assert(cc_verify(g_provider.pk_b64, sig, digest));
    /* over the 32 bytes of the hash: what libsodium checks directly */
    uint8_t raw[crypto_sign_BYTES];
    size_t got = 0;
    cr_assert_eq(sodium_base642bin(raw, sizeof raw, sig, strlen(sig), NULL, &got, NULL,
                                   sodium_base64_VARIANT_URLSAFE_NO_PADDING),
                 0);
    cr_assert_eq(crypto_sign_verify_detached(raw, digest, 32, g_provider.pk), 0);
    /* another key does not verify it */
    cr_assert_not(cc_verify(g_consumer.pk_b64, sig, digest));
}

Test(canonical, a_signature_over_another_contract_fails)
{
    uint8_t d1[32], d2[32];
    char h1[CC_HASH_HEX + 1], h2[CC_HASH_HEX + 1], sig[CC_SIG_B64URL_MAX + 1];
    digest_of("Data", TERMS, d1, h1);
    digest_of("Data", "{\"price\": {\"amount\": 101, \"currency\": \"EUR\"}, \"days\": [1, 2, 3]}",
              d2, h2);
    cr_assert_str_neq(h1, h2);
    cc_sign(g_provider.sk, d2, sig);
    cr_assert(cc_verify(g_provider.pk_b64, sig, d2));
    cr_assert_not(cc_verify(g_provider.pk_b64, sig, d1));
}

Test(canonical, verify_refuses_malformed_keys_and_signatures)
{
    uint8_t digest[32];
    char hex[CC_HASH_HEX + 1], sig[CC_SIG_B64URL_MAX + 1], bad[CC_SIG_B64URL_MAX + 8];
    digest_of("Data", TERMS, digest, hex);
    cc_sign(g_provider.sk, digest, sig);
    cr_assert(cc_verify(g_provider.pk_b64, sig, digest));

    /* the public key: unpadded, base64url, 31 bytes, garbage, empty, NULL */
    char pk[CC_PUBLIC_KEY_B64 + 8];
    snprintf(pk, sizeof pk, "%.43s", g_provider.pk_b64);
    cr_assert_not(cc_verify(pk, sig, digest));
    char pk_url[CC_PUBLIC_KEY_B64 + 1];
    sodium_bin2base64(pk_url, sizeof pk_url, g_provider.pk, sizeof g_provider.pk,
                      sodium_base64_VARIANT_URLSAFE);
    if (strpbrk(g_provider.pk_b64, "+/") != NULL)
        cr_assert_not(cc_verify(pk_url, sig, digest));
    sodium_bin2base64(pk, sizeof pk, g_provider.pk, 31, sodium_base64_VARIANT_ORIGINAL);
    cr_assert_not(cc_verify(pk, sig, digest));
    cr_assert_not(cc_verify("not base64 at all, not at all, not at all!!!", sig, digest));
    cr_assert_not(cc_verify("", sig, digest));
    cr_assert_not(cc_verify(NULL, sig, digest));

    /* the signature: padded, standard alphabet, one character short or long */
    snprintf(bad, sizeof bad, "%s==", sig);
    cr_assert_not(cc_verify(g_provider.pk_b64, bad, digest));
    snprintf(bad, sizeof bad, "%s", sig);
    for (char *p = bad; *p != '\0'; p++)
        *p = *p == '-' ? '+' : *p == '_' ? '/' : *p;
    if (strcmp(bad, sig) != 0)
        cr_assert_not(cc_verify(g_provider.pk_b64, bad, digest));
    snprintf(bad, sizeof bad, "%.85s", sig);
    cr_assert_not(cc_verify(g_provider.pk_b64, bad, digest));
    snprintf(bad, sizeof bad, "%sA", sig);
    cr_assert_not(cc_verify(g_provider.pk_b64, bad, digest));
    cr_assert_not(cc_verify(g_provider.pk_b64, NULL, digest));
}

/* libsodium 1.0.18 decodes every byte above 0x7f as the alphabet's 63rd
 * character ('/', or '_' in base64url): a key or signature spelt so
 * verified, though it is not base64 (tests/fuzz/corpus/identity_cmd). */
Test(canonical, verify_refuses_bytes_above_0x7f)
{
    uint8_t digest[32], pk[crypto_sign_PUBLICKEYBYTES], sk[crypto_sign_SECRETKEYBYTES];
    char hex[CC_HASH_HEX + 1], sig[CC_SIG_B64URL_MAX + 1], pk_b64[CC_PUBLIC_KEY_B64 + 1];
    digest_of("Data", TERMS, digest, hex);
    int tries = 0;
    do { /* a key with a '/' and a signature with a '_' */
        cr_assert_eq(crypto_sign_keypair(pk, sk), 0);
        sodium_bin2base64(pk_b64, sizeof pk_b64, pk, sizeof pk, sodium_base64_VARIANT_ORIGINAL);
        cc_sign(sk, digest, sig);
        cr_assert_lt(++tries, 10000);
    } while (strchr(pk_b64, '/') == NULL || strchr(sig, '_') == NULL);
    cr_assert(cc_verify(pk_b64, sig, digest));
    *strchr(pk_b64, '/') = (char)0xff;
    cr_assert_not(cc_verify(pk_b64, sig, digest));
    sodium_bin2base64(pk_b64, sizeof pk_b64, pk, sizeof pk, sodium_base64_VARIANT_ORIGINAL);
    *strchr(sig, '_') = (char)0x80;
    cr_assert_not(cc_verify(pk_b64, sig, digest));
    sodium_memzero(sk, sizeof sk);
}

Test(canonical, entry_has_every_field_and_the_time_to_the_microsecond)
{
    json_t *e =
        cc_entry_json(PROVIDER, PROVIDER_KEY, g_provider.pk_b64, "c2ln", SMALL_HASH, SIGNED_AT_US);
    cr_assert_not_null(e);
    cr_assert_eq(json_object_size(e), 7);
    cr_assert_str_eq(json_string_value(json_object_get(e, "identity_id")), PROVIDER);
    cr_assert_str_eq(json_string_value(json_object_get(e, "key_id")), PROVIDER_KEY);
    cr_assert_str_eq(json_string_value(json_object_get(e, "alg")), "ed25519");
    cr_assert_str_eq(json_string_value(json_object_get(e, "public_key")), g_provider.pk_b64);
    cr_assert_str_eq(json_string_value(json_object_get(e, "signature")), "c2ln");
    cr_assert_str_eq(json_string_value(json_object_get(e, "content_hash")), SMALL_HASH);
    cr_assert_str_eq(json_string_value(json_object_get(e, "signed_at")),
                     "2026-12-02T10:00:00.123456Z");
    json_decref(e);
    e = cc_entry_json(PROVIDER, PROVIDER_KEY, g_provider.pk_b64, "c2ln", SMALL_HASH, -1);
    cr_assert_str_eq(json_string_value(json_object_get(e, "signed_at")),
                     "1969-12-31T23:59:59.999999Z");
    json_decref(e);
    cr_assert_null(cc_entry_json(PROVIDER, NULL, g_provider.pk_b64, "c2ln", SMALL_HASH, 0));
    cr_assert_null(cc_entry_json(PROVIDER, PROVIDER_KEY, g_provider.pk_b64, "c2ln", SMALL_HASH,
                                 INT64_C(253402300800) * 1000000)); /* year 10000 */
}

/* ------------------------------------------------------------------------ */
/* offline verification of an export */

static void assert_valid_side(const cc_side_report *s, const char *who, const char *key)
{
    cr_assert(s->present);
    cr_assert(s->valid, "%s", s->why);
    cr_assert_str_eq(s->why, "");
    cr_assert_str_eq(s->identity_id, who);
    cr_assert_str_eq(s->key_id, key);
}

static void assert_invalid_side(const cc_side_report *s, const char *why)
{
    cr_assert(s->present);
    cr_assert_not(s->valid);
    cr_assert_not_null(strstr(s->why, why), "why: \"%s\", want \"%s\"", s->why, why);
}

Test(canonical, a_document_with_both_signatures_verifies)
{
    size_t layouts[] = {JSON_COMPACT, JSON_INDENT(2), JSON_COMPACT | JSON_SORT_KEYS};
    for (size_t i = 0; i < sizeof layouts / sizeof layouts[0]; i++) {
        char *text = signed_document(layouts[i]);
        cc_report r;
        cr_assert(verify_text(text, &r), "%s\n%s\n%s", r.why, r.provider.why, r.consumer.why);
        cr_assert(r.parsed);
        cr_assert_str_eq(r.why, "");
        assert_valid_side(&r.provider, PROVIDER, PROVIDER_KEY);
        assert_valid_side(&r.consumer, CONSUMER, CONSUMER_KEY);
        uint8_t digest[32];
        char hex[CC_HASH_HEX + 1];
        digest_of("Data", TERMS, digest, hex);
        cr_assert_str_eq(r.content_hash, hex);
        free(text);
    }
}

Test(canonical, any_byte_changed_in_the_terms_or_the_title_fails)
{
    char *text = signed_document(JSON_COMPACT);
    json_t *terms = json_loads(TERMS, 0, NULL);
    char *terms_text = json_dumps(terms, JSON_COMPACT);
    const char *spans[] = {terms_text, "\"Data\""};
    for (size_t s = 0; s < 2; s++) {
        /* every byte of the value, quotes and brackets included */
        char *start = strstr(text, spans[s]);
        cr_assert_not_null(start, "%s not in %s", spans[s], text);
        size_t len = strlen(spans[s]);
        for (size_t i = 0; i < len; i++) {
            start[i] ^= 0x01;
            cc_report r;
            cr_assert_not(verify_text(text, &r), "%s", text);
            if (r.parsed) {
                cr_assert_str_eq(r.provider.why, "signed a different content", "%s", text);
                cr_assert_str_eq(r.consumer.why, "signed a different content", "%s", text);
                cr_assert_not_null(strstr(r.why, "content_hash"), "%s", r.why);
            }
            start[i] ^= 0x01;
        }
    }
    cc_report r;
    cr_assert(verify_text(text, &r), "the flips were not all undone");
    free(terms_text);
    json_decref(terms);
    free(text);
}

Test(canonical, a_changed_signature_fails)
{
    for (size_t off = 0; off < 86; off += 17) {
        char *text = signed_document(JSON_COMPACT);
        change_value(strstr(text, "\"consumer\":"), "signature", off);
        cc_report r;
        cr_assert_not(verify_text(text, &r));
        cr_assert(r.parsed);
        assert_valid_side(&r.provider, PROVIDER, PROVIDER_KEY);
        assert_invalid_side(&r.consumer, "signature");
        free(text);
    }
}

Test(canonical, a_changed_public_key_fails)
{
    for (size_t off = 0; off < 43; off += 7) {
        char *text = signed_document(JSON_COMPACT);
        change_value(strstr(text, "\"provider\":"), "public_key", off);
        cc_report r;
        cr_assert_not(verify_text(text, &r));
        cr_assert(r.parsed);
        assert_invalid_side(&r.provider, "public_key");
        assert_valid_side(&r.consumer, CONSUMER, CONSUMER_KEY);
        free(text);
    }
}

Test(canonical, swapped_entries_fail)
{
    char *text = document(entry(&g_consumer, CONSUMER, CONSUMER_KEY, "Data", TERMS),
                          entry(&g_provider, PROVIDER, PROVIDER_KEY, "Data", TERMS), JSON_COMPACT);
    cc_report r;
    cr_assert_not(verify_text(text, &r));
    cr_assert(r.parsed);
    assert_invalid_side(&r.provider, "who is not the provider");
    assert_invalid_side(&r.consumer, "who is not the consumer");
    cr_assert_str_eq(r.provider.identity_id, CONSUMER);
    free(text);
}

Test(canonical, a_signature_of_another_content_fails)
{
    const char *other = "{\"price\": {\"amount\": 1, \"currency\": \"EUR\"}, \"days\": [1, 2, 3]}";
    char *text = document(entry(&g_provider, PROVIDER, PROVIDER_KEY, "Data", other),
                          entry(&g_consumer, CONSUMER, CONSUMER_KEY, "Data", TERMS), JSON_COMPACT);
    cc_report r;
    cr_assert_not(verify_text(text, &r));
    assert_invalid_side(&r.provider, "signed a different content");
    assert_valid_side(&r.consumer, CONSUMER, CONSUMER_KEY);
    free(text);
    /* and with its content_hash made to match: the signature itself fails */
    text = document(entry(&g_provider, PROVIDER, PROVIDER_KEY, "Data", other),
                    entry(&g_consumer, CONSUMER, CONSUMER_KEY, "Data", TERMS), JSON_COMPACT);
    uint8_t d1[32], d2[32];
    char right[CC_HASH_HEX + 1], wrong[CC_HASH_HEX + 1];
    digest_of("Data", TERMS, d1, right);
    digest_of("Data", other, d2, wrong);
    char *p = strstr(text, wrong);
    cr_assert_not_null(p);
    memcpy(p, right, CC_HASH_HEX);
    cr_assert_not(verify_text(text, &r));
    assert_invalid_side(&r.provider, "does not verify");
    free(text);
}

Test(canonical, a_missing_side_is_not_present)
{
    char *text =
        document(entry(&g_provider, PROVIDER, PROVIDER_KEY, "Data", TERMS), NULL, JSON_COMPACT);
    cc_report r;
    cr_assert_not(verify_text(text, &r));
    cr_assert(r.parsed);
    assert_valid_side(&r.provider, PROVIDER, PROVIDER_KEY);
    cr_assert_not(r.consumer.present);
    cr_assert_not(r.consumer.valid);
    cr_assert_str_eq(r.consumer.why, "not signed");
    free(text);
    text = document(NULL, NULL, JSON_COMPACT);
    cr_assert_not(verify_text(text, &r));
    cr_assert(r.parsed);
    cr_assert_not(r.provider.present);
    cr_assert_not(r.consumer.present);
    free(text);
}

Test(canonical, another_alg_fails)
{
    json_t *e = entry(&g_provider, PROVIDER, PROVIDER_KEY, "Data", TERMS);
    json_object_set_new(e, "alg", json_string("rsa"));
    char *text = document(e, entry(&g_consumer, CONSUMER, CONSUMER_KEY, "Data", TERMS), 0);
    cc_report r;
    cr_assert_not(verify_text(text, &r));
    assert_invalid_side(&r.provider, "alg is \"rsa\"");
    free(text);
}

Test(canonical, what_is_not_an_export_does_not_parse)
{
    const char *texts[] = {
        "",
        "[]",
        "{}",
        "{\"format\": \"cms-contract/2\"}",
        "{\"format\": \"cms-contract/1\", \"id\": \"c\", \"title\": \"t\", \"provider_id\": "
        "\"p\", \"consumer_id\": \"q\"}",
        "{\"format\": \"cms-contract/1\", \"id\": \"c\", \"title\": \"t\", \"provider_id\": "
        "\"p\", \"consumer_id\": \"q\", \"terms\": []}",
        "{\"format\": \"cms-contract/1\", \"id\": 1, \"title\": \"t\", \"provider_id\": "
        "\"p\", \"consumer_id\": \"q\", \"terms\": {}}",
        "{\"format\": \"cms-contract/1\", \"id\": \"c\", \"title\": \"t\", \"provider_id\": "
        "\"p\", \"consumer_id\": \"q\", \"terms\": {}, \"signatures\": []}",
        "{\"format\": \"cms-contract/1\", \"format\": \"cms-contract/1\"}",
    };
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        cc_report r;
        cr_assert_not(verify_text(texts[i], &r), "%s", texts[i]);
        cr_assert_not(r.parsed, "%s", texts[i]);
        cr_assert_gt(strlen(r.why), 0, "%s", texts[i]);
        cr_assert_not(r.provider.present);
        cr_assert_not(r.consumer.present);
    }
}
