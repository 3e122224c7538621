/* API keys: the text form handed to a client once, and the keyed hash that
 * is all the server keeps.
 *
 * A key is "cms_<id>_<secret>": id is the credential's UUID as 32 lowercase
 * hex digits without dashes, so a lookup by id finds the stored hash; secret
 * is 32 random bytes in unpadded base64url. The server stores
 * "b2:" + hex(BLAKE2b-256 keyed with a server key, of the secret) and checks
 * a presented secret in constant time against it. The secret itself is never
 * stored, logged or published; callers wipe their copies with
 * cms_apikey_wipe(). */
#ifndef CMS_APIKEY_H
#define CMS_APIKEY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "uuid.h"

#define CMS_APIKEY_SECRET_BYTES 32
#define CMS_APIKEY_SERVER_KEY_BYTES 32
#define CMS_APIKEY_LEN 80      /* strlen of a key: "cms_" + 32 hex + "_" + 43 base64url = 80 */
#define CMS_APIKEY_HASH_LEN 67 /* strlen of a stored hash: "b2:" + 64 hex */

/* libsodium initialised once per process, from any thread (it selects the
 * fastest implementations; the portable ones give the same results without
 * it); false if it failed. */
bool cms_sodium_ready(void);

/* Makes a new key for credential id: 32 random bytes (randombytes_buf) as the
 * secret. out gets "cms_<id as 32 lowercase hex, no dashes>_<secret as
 * base64url, no padding>". Returns 0, or -1 when libsodium cannot be
 * initialised (outputs then untouched). */
int cms_apikey_generate(const cms_uuid *id, char out[CMS_APIKEY_LEN + 1],
                        uint8_t secret[CMS_APIKEY_SECRET_BYTES])
    __attribute__((warn_unused_result));

/* Strict parse of exactly that form (length, prefix, lowercase hex,
 * base64url alphabet, no padding, canonical final character, a UUID id);
 * false for anything else, leaving outputs untouched. key need not be
 * NUL-terminated: len bytes are read, and a NUL among them is rejected. */
bool cms_apikey_parse(const char *key, size_t len, cms_uuid *id,
                      uint8_t secret[CMS_APIKEY_SECRET_BYTES]) __attribute__((warn_unused_result));

/* "b2:" + lowercase hex of keyed BLAKE2b-256 (crypto_generichash with the
 * server key) of the secret. */
void cms_apikey_hash(const uint8_t server_key[CMS_APIKEY_SERVER_KEY_BYTES],
                     const uint8_t secret[CMS_APIKEY_SECRET_BYTES],
                     char out[CMS_APIKEY_HASH_LEN + 1]);

/* Recomputes the hash and compares with sodium_memcmp (constant time with
 * respect to the secret); false for a malformed stored value (not exactly
 * "b2:" + 64 lowercase hex). stored is NUL-terminated. */
bool cms_apikey_verify(const uint8_t server_key[CMS_APIKEY_SERVER_KEY_BYTES],
                       const uint8_t secret[CMS_APIKEY_SECRET_BYTES], const char *stored)
    __attribute__((warn_unused_result));

/* The server key from configuration: exactly 64 hex chars (either case),
 * NUL-terminated; false otherwise, leaving out untouched. */
bool cms_apikey_server_key_parse(const char *text, uint8_t out[CMS_APIKEY_SERVER_KEY_BYTES])
    __attribute__((warn_unused_result));

/* Reading a file that holds a secret: it must be a regular file (a symlink
 * to one is followed: Kubernetes mounts secrets so) that neither group nor
 * others may read or write (or, owned by root, that only its group may
 * read: a Kubernetes secret with defaultMode 0440 and the pod's fsGroup, as
 * PostgreSQL allows its server key), of at most cap bytes. buf gets the bytes and a
 * NUL (cap + 1 bytes); why a reason beginning with the path. Blocking: for
 * start-up and command-line tools. */
typedef enum {
    CMS_APIKEY_FILE_OK,
    CMS_APIKEY_FILE_MISSING, /* no such file */
    CMS_APIKEY_FILE_UNSAFE,  /* others may read or write it */
    CMS_APIKEY_FILE_EREAD,   /* anything else: not regular, too large, unreadable */
} cms_apikey_file_err;

cms_apikey_file_err cms_apikey_read_private_file(const char *path, char *buf, size_t cap,
                                                 size_t *len, char *why, size_t whylen)
    __attribute__((warn_unused_result));

/* Reads the server key from a file holding exactly 64 hex chars (one
 * trailing newline allowed), as CMS_IDENTITY_KEY_FILE names it. A file that
 * others may read or write is refused. Blocking: for start-up only. On
 * failure returns false with a reason for the operator in why. */
bool cms_apikey_server_key_load(const char *path, uint8_t out[CMS_APIKEY_SERVER_KEY_BYTES],
                                char *why, size_t whylen) __attribute__((warn_unused_result));

/* Zeroes a secret or key buffer (sodium_memzero: not optimised away). */
void cms_apikey_wipe(void *p, size_t len);

#endif
