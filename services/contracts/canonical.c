/* The canonical form of a contract, its hash, its signatures and the
 * offline check of an export; see canonical.h.
 *
 * Decoders are libsodium's, and each must consume its whole input and
 * yield exactly the expected number of bytes, so that a key or a signature
 * has one accepted spelling (libsodium also refuses non-zero spare bits in
 * the last character). */
#include "contracts/canonical.h"

#include "apikey.h"

#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"

#define SIG_BYTES crypto_sign_BYTES
#define PK_BYTES crypto_sign_PUBLICKEYBYTES
#define SIG_B64_VARIANT sodium_base64_VARIANT_URLSAFE_NO_PADDING
#define PK_B64_VARIANT sodium_base64_VARIANT_ORIGINAL
#define TIME_MAX 32 /* "YYYY-MM-DDTHH:MM:SS.uuuuuuZ" and its NUL */

_Static_assert(crypto_hash_sha256_BYTES == 32, "SHA-256");
_Static_assert(SIG_BYTES == 64 && crypto_sign_SECRETKEYBYTES == 64, "Ed25519 sizes");
_Static_assert(sodium_base64_ENCODED_LEN(SIG_BYTES, SIG_B64_VARIANT) <= CC_SIG_B64URL_MAX + 1,
               "signature encoding length");
_Static_assert(sodium_base64_ENCODED_LEN(PK_BYTES, PK_B64_VARIANT) == CC_PUBLIC_KEY_B64 + 1,
               "public key encoding length");

/* Decodes exactly n bytes (at most 64) from the whole of text
 * (NUL-terminated), spelt exactly as sodium_bin2base64 spells them:
 * libsodium 1.0.18's decoder also takes every byte above 0x7f for the
 * alphabet's last character, '/' or '_' (tests/fuzz/corpus/identity_cmd). */
static bool b64_decode(const char *text, int variant, uint8_t *out, size_t n)
{
    size_t len = text != NULL ? strlen(text) : 0, got = 0;
    const char *end = NULL;
    char again[sodium_base64_ENCODED_LEN(64, sodium_base64_VARIANT_ORIGINAL)];
    if (len == 0 || n > 64 || len != sodium_base64_ENCODED_LEN(n, variant) - 1)
        return false;
    if (sodium_base642bin(out, n, text, len, NULL, &got, &end, variant) != 0 || got != n ||
        end != text + len)
        return false;
    sodium_bin2base64(again, sizeof again, out, n, variant);
    return strcmp(again, text) == 0;
}

/* The object the canonical form is made of; terms is borrowed. */
static cms_jcs_err canonical_of(const char *id, const char *title, const char *description,
                                const char *provider_id, const char *consumer_id,
                                const json_t *terms, char **out, size_t *outlen)
{
    cms_jcs_err e = CMS_JCS_EPARSE;
    json_t *o = NULL;
    const char *names[] = {"id", "title", "description", "provider_id", "consumer_id"};
    const char *values[] = {id, title, description != NULL ? description : "", provider_id,
                            consumer_id};
    *out = NULL;
    *outlen = 0;
    if (!json_is_object(terms))
        goto out;
    if ((o = json_object()) == NULL) {
        e = CMS_JCS_ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        json_t *s = values[i] != NULL ? json_string(values[i]) : NULL;
        if (s == NULL)
            goto out; /* NULL or not UTF-8 */
        if (json_object_set_new(o, names[i], s) != 0) {
            e = CMS_JCS_ENOMEM;
            goto out;
        }
    }
    if (json_object_set(o, "terms", (json_t *)terms) != 0) {
        e = CMS_JCS_ENOMEM;
        goto out;
    }
    e = cms_jcs_dump(o, out, outlen);
out:
    json_decref(o);
    return e;
}

cms_jcs_err cc_canonical(const char *id, const char *title, const char *description,
                         const char *provider_id, const char *consumer_id, const char *terms_json,
                         char **out, size_t *outlen)
{
    json_t *terms = NULL;
    *out = NULL;
    *outlen = 0;
    if (terms_json == NULL)
        return CMS_JCS_EPARSE;
    cms_jcs_err e = cms_jcs_parse(terms_json, strlen(terms_json), &terms);
    if (e == CMS_JCS_OK)
        e = canonical_of(id, title, description, provider_id, consumer_id, terms, out, outlen);
    json_decref(terms);
    return e;
}

void cc_hash(const char *canonical, size_t len, uint8_t digest[32], char hex[CC_HASH_HEX + 1])
{
    (void)cms_sodium_ready();
    crypto_hash_sha256(digest, (const unsigned char *)canonical, len);
    sodium_bin2hex(hex, CC_HASH_HEX + 1, digest, 32);
}

void cc_sign(const uint8_t secret_key[64], const uint8_t digest[32],
             char sig[CC_SIG_B64URL_MAX + 1])
{
    uint8_t s[SIG_BYTES];
    (void)cms_sodium_ready();
    /* cannot fail: detached signing has no error path */
    (void)crypto_sign_detached(s, NULL, digest, 32, secret_key);
    sodium_bin2base64(sig, CC_SIG_B64URL_MAX + 1, s, sizeof s, SIG_B64_VARIANT);
}

bool cc_verify(const char *public_key_b64, const char *sig_b64url, const uint8_t digest[32])
{
    uint8_t pk[PK_BYTES], s[SIG_BYTES];
    (void)cms_sodium_ready();
    if (!b64_decode(public_key_b64, PK_B64_VARIANT, pk, sizeof pk) ||
        !b64_decode(sig_b64url, SIG_B64_VARIANT, s, sizeof s))
        return false;
    return crypto_sign_verify_detached(s, digest, 32, pk) == 0;
}

/* RFC 3339 in UTC to the microsecond; false outside years 0000..9999. */
static bool format_time(int64_t us, char out[TIME_MAX])
{
    int64_t secs = us / 1000000, frac = us % 1000000;
    struct tm tm;
    char date[24];
    if (frac < 0) {
        frac += 1000000;
        secs--;
    }
    time_t t = (time_t)secs;
    if (gmtime_r(&t, &tm) == NULL || tm.tm_year + 1900 < 0 || tm.tm_year + 1900 > 9999)
        return false;
    if (strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%S", &tm) == 0)
        return false;
    snprintf(out, TIME_MAX, "%s.%06dZ", date, (int)frac);
    return true;
}

json_t *cc_entry_json(const char *identity_id, const char *key_id, const char *public_key_b64,
                      const char *sig_b64url, const char *hash_hex, int64_t signed_at_us)
{
    char at[TIME_MAX];
    if (!format_time(signed_at_us, at))
        return NULL;
    /* json_pack fails on a NULL or non-UTF-8 string */
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "identity_id", identity_id, "key_id",
                     key_id, "alg", CC_ALG, "public_key", public_key_b64, "signature", sig_b64url,
                     "content_hash", hash_hex, "signed_at", at);
}

/* ---- offline verification ---------------------------------------------- */

static void say(char why[CC_WHY_MAX], const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void say(char why[CC_WHY_MAX], const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, CC_WHY_MAX, fmt, ap);
    va_end(ap);
}

/* o[key] as a string, or NULL when absent or not a string. */
static const char *str_member(const json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

/* Copies s into out (of cap bytes), cut to fit; "" for NULL. */
static void copy_cut(char *out, size_t cap, const char *s)
{
    snprintf(out, cap, "%s", s != NULL ? s : "");
}

/* One side's entry against the party it must name and the recomputed hash. */
static void verify_side(const json_t *sigs, const char *side, const char *party_id,
                        const char *hash_hex, const uint8_t digest[32], cc_side_report *s)
{
    uint8_t pk[PK_BYTES], sig[SIG_BYTES];
    const json_t *e = json_object_get(sigs, side);
    if (e == NULL || json_is_null(e)) {
        say(s->why, "not signed");
        return;
    }
    s->present = true;
    if (!json_is_object(e)) {
        say(s->why, "the %s entry is not a JSON object", side);
        return;
    }
    const char *who = str_member(e, "identity_id"), *alg = str_member(e, "alg");
    const char *hash = str_member(e, "content_hash");
    copy_cut(s->identity_id, sizeof s->identity_id, who);
    copy_cut(s->key_id, sizeof s->key_id, str_member(e, "key_id"));
    if (alg == NULL) {
        say(s->why, "no alg: want " CC_ALG);
        return;
    }
    if (strcmp(alg, CC_ALG) != 0) {
        say(s->why, "alg is \"%s\", not " CC_ALG, alg);
        return;
    }
    if (who == NULL || strcmp(who, party_id) != 0) {
        say(s->why, "signed by %s, who is not the %s (%s)", who ? who : "no identity_id", side,
            party_id);
        return;
    }
    if (hash == NULL || strcmp(hash, hash_hex) != 0) {
        say(s->why, "signed a different content");
        return;
    }
    if (!b64_decode(str_member(e, "public_key"), PK_B64_VARIANT, pk, sizeof pk)) {
        say(s->why, "public_key is not standard base64 of %d bytes", (int)PK_BYTES);
        return;
    }
    if (!b64_decode(str_member(e, "signature"), SIG_B64_VARIANT, sig, sizeof sig)) {
        say(s->why, "signature is not base64url (no padding) of %d bytes", (int)SIG_BYTES);
        return;
    }
    if (crypto_sign_verify_detached(sig, digest, 32, pk) != 0) {
        say(s->why, "the signature does not verify under its public_key");
        return;
    }
    s->valid = true;
}

bool cc_verify_document(const char *json, size_t len, cc_report *r)
{
    bool ok = false;
    json_t *doc = NULL;
    char *canon = NULL;
    size_t canon_len = 0;
    uint8_t digest[32];
    memset(r, 0, sizeof *r);
    (void)cms_sodium_ready();

    cms_jcs_err e = cms_jcs_parse(json, len, &doc);
    if (e != CMS_JCS_OK) {
        say(r->why, "not a contract document: %s", cms_jcs_strerror(e));
        goto out;
    }
    if (!json_is_object(doc)) {
        say(r->why, "not a contract document: not a JSON object");
        goto out;
    }
    const char *format = str_member(doc, "format");
    if (format == NULL || strcmp(format, CC_FORMAT) != 0) {
        say(r->why, "not a contract document: \"format\" is not \"" CC_FORMAT "\"");
        goto out;
    }
    static const char *const required[] = {"id", "title", "provider_id", "consumer_id"};
    for (size_t i = 0; i < sizeof required / sizeof required[0]; i++) {
        if (str_member(doc, required[i]) == NULL) {
            say(r->why, "\"%s\" is missing or not a string", required[i]);
            goto out;
        }
    }
    const json_t *desc = json_object_get(doc, "description");
    if (desc != NULL && !json_is_null(desc) && !json_is_string(desc)) {
        say(r->why, "\"description\" is not a string");
        goto out;
    }
    const json_t *terms = json_object_get(doc, "terms");
    if (!json_is_object(terms)) {
        say(r->why, "\"terms\" is missing or not a JSON object");
        goto out;
    }
    const json_t *sigs = json_object_get(doc, "signatures");
    if (sigs != NULL && !json_is_null(sigs) && !json_is_object(sigs)) {
        say(r->why, "\"signatures\" is not a JSON object");
        goto out;
    }
    const json_t *claimed = json_object_get(doc, "content_hash");
    if (claimed != NULL && !json_is_null(claimed) && !json_is_string(claimed)) {
        say(r->why, "\"content_hash\" is not a string");
        goto out;
    }
    const char *provider_id = str_member(doc, "provider_id");
    const char *consumer_id = str_member(doc, "consumer_id");
    e = canonical_of(str_member(doc, "id"), str_member(doc, "title"), json_string_value(desc),
                     provider_id, consumer_id, terms, &canon, &canon_len);
    if (e != CMS_JCS_OK) {
        say(r->why, "no canonical form: %s", cms_jcs_strerror(e));
        goto out;
    }
    r->parsed = true;
    cc_hash(canon, canon_len, digest, r->content_hash);
    ok = true;
    if (json_is_string(claimed) && strcmp(json_string_value(claimed), r->content_hash) != 0) {
        say(r->why, "the document's content_hash is not the hash of its content");
        ok = false;
    }
    verify_side(sigs, "provider", provider_id, r->content_hash, digest, &r->provider);
    verify_side(sigs, "consumer", consumer_id, r->content_hash, digest, &r->consumer);
    ok = ok && r->provider.valid && r->consumer.valid;
out:
    free(canon);
    json_decref(doc);
    return ok;
}
