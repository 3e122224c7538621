/* What a contract's parties sign, in one place for cms-contracts (which
 * computes a contract's content_hash and checks each signature given to it)
 * and cmsctl (which signs, and verifies an exported contract offline).
 * Included as "contracts/canonical.h".
 *
 * The canonical form is the RFC 8785 JSON (common/jcs.h) of the object
 *     {"id", "title", "description", "provider_id", "consumer_id", "terms"}
 * with the contract's values; terms is its JSON object. The status, the
 * metadata, the times and the signatures are not part of it: what is signed
 * is what the parties agree to. content_hash is the lowercase hex SHA-256 of
 * those bytes; a signature is Ed25519 (libsodium's crypto_sign_detached) by
 * the signer's key over the 32 bytes of the hash, not over its hex.
 *
 * Encodings: public keys standard padded base64 (as cms-identity keeps a
 * public_key credential), signatures base64url without padding (as
 * SignContract carries them), hashes lowercase hex. */
#ifndef CONTRACTS_CANONICAL_H
#define CONTRACTS_CANONICAL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "jcs.h"

#define CC_HASH_HEX 64        /* hex SHA-256 */
#define CC_SIG_B64URL_MAX 100 /* base64url (no padding) of 64 bytes is 86 chars */
#define CC_PUBLIC_KEY_B64 44  /* standard base64 of 32 bytes, with its padding */
#define CC_FORMAT "cms-contract/1"
#define CC_ALG "ed25519"
#define CC_WHY_MAX 160

/* The canonical form of a contract (see above) into *out (malloc'd,
 * NUL-terminated; *outlen bytes without the NUL). description NULL is "".
 * terms_json is the text of a JSON object. CMS_JCS_EPARSE for a NULL or
 * invalid-UTF-8 string, terms that are not a JSON object, and whatever
 * cms_jcs_canonicalize refuses in them; *out is then NULL. */
cms_jcs_err cc_canonical(const char *id, const char *title, const char *description,
                         const char *provider_id, const char *consumer_id, const char *terms_json,
                         char **out, size_t *outlen) __attribute__((warn_unused_result));

/* The SHA-256 of the canonical bytes: raw in digest, lowercase hex in hex. */
void cc_hash(const char *canonical, size_t len, uint8_t digest[32], char hex[CC_HASH_HEX + 1]);

/* The Ed25519 signature by secret_key (libsodium's 64-byte form) over
 * digest, base64url without padding (86 chars). */
void cc_sign(const uint8_t secret_key[64], const uint8_t digest[32],
             char sig[CC_SIG_B64URL_MAX + 1]);

/* Whether sig_b64url is a signature over digest by public_key_b64. false
 * also for a signature that is not base64url (no padding) of 64 bytes or a
 * public key that is not standard padded base64 of 32 bytes. Both are
 * NUL-terminated. */
bool cc_verify(const char *public_key_b64, const char *sig_b64url, const uint8_t digest[32])
    __attribute__((warn_unused_result));

/* One signature as contracts.signatures keeps it and an export carries it:
 *     {"identity_id", "key_id", "alg": "ed25519", "public_key" (standard
 *      base64), "signature" (base64url), "content_hash" (hex), "signed_at"}
 * signed_at is RFC 3339 in UTC to the microsecond (2026-12-02T10:00:00.123456Z)
 * from Unix microseconds. A new reference the caller decrefs; NULL when a
 * string is NULL or not UTF-8, signed_at_us outside years 0000..9999, or
 * out of memory. */
json_t *cc_entry_json(const char *identity_id, const char *key_id, const char *public_key_b64,
                      const char *sig_b64url, const char *hash_hex, int64_t signed_at_us)
    __attribute__((warn_unused_result));

/* Offline verification of an exported contract, a JSON object
 *     {"format": "cms-contract/1", "id", "title", "description",
 *      "provider_id", "consumer_id", "status", "terms": {...},
 *      "metadata": {...}, "created_at", "updated_at", "content_hash",
 *      "signatures": {"provider": ENTRY, "consumer": ENTRY}}
 * (ENTRY as cc_entry_json makes it; a side not yet signed is absent or
 * null). Only the file is needed: the canonical form and its hash are
 * recomputed from id, title, description (null or absent is ""),
 * provider_id, consumer_id and terms, and each side's entry must exist,
 * say alg ed25519, name that side's party as identity_id, carry the
 * recomputed hash as content_hash, and hold a signature that verifies under
 * its public_key. This proves that the holders of those keys signed this
 * content; that a key is the identity's own (key_id) is cms-identity's
 * record, which this does not consult.
 *
 * The report: parsed false (with why) when the text is not such a document;
 * otherwise content_hash is the recomputed hash, why is set when the
 * document's own content_hash differs from it, and each side says whether
 * its entry is present and valid, with why it is not, and its identity_id
 * and key_id as far as they fit. Returns true exactly when the document
 * parsed, its content_hash (if any) matches, and both sides are present and
 * valid. */
typedef struct cc_side_report {
    bool present, valid;
    char why[CC_WHY_MAX]; /* "" when valid */
    char identity_id[40], key_id[40];
} cc_side_report;

typedef struct cc_report {
    bool parsed;
    char why[CC_WHY_MAX]; /* about the document as a whole; "" when nothing is wrong */
    char content_hash[CC_HASH_HEX + 1];
    cc_side_report provider, consumer;
} cc_report;

bool cc_verify_document(const char *json, size_t len, cc_report *r)
    __attribute__((warn_unused_result));

#endif
