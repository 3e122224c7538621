/* An Ed25519 signing key in a file of its own (a party's for contracts,
 * cms-audit's for its checkpoints).
 *
 * The file holds one line: the standard (padded) base64 of libsodium's
 * 64-byte secret key, i.e. the 32-byte seed followed by the public key,
 * then a newline. It is created with mode 600 and never overwritten
 * (cmsctl contract keygen, cmsctl audit keygen); it is read only while neither group nor others
 * may read or write it. The public key, in standard base64, is what
 * cms-identity keeps as the party's public_key credential. Callers wipe
 * their copies of the secret key with sodium_memzero. Blocking file I/O:
 * for cmsctl's verbs and a service's start. */
#ifndef CMS_EDKEY_H
#define CMS_EDKEY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CMS_EDKEY_B64 88        /* strlen of the file's line: base64 of 64 bytes */
#define CMS_EDKEY_PUBLIC_B64 44 /* strlen of a public key: base64 of 32 bytes */

/* Reads the secret key from path into sk. false, with a reason beginning
 * with the path in why, when the file is missing, not a regular file, open
 * to group or others, or not exactly one line of base64 of 64 bytes (one
 * trailing newline allowed), or when its public half is not the one its
 * seed derives (a damaged or hand-made file). sk is untouched then. */
bool cms_edkey_load(const char *path, uint8_t sk[64], char *why, size_t whylen)
    __attribute__((warn_unused_result));

/* Writes sk to a new file at path (O_CREAT | O_EXCL, mode 600), in the form
 * above, and syncs it. false, with a reason in why, when path exists (it is
 * never replaced) or cannot be written; a file it created is then removed. */
bool cms_edkey_save(const char *path, const uint8_t sk[64], char *why, size_t whylen)
    __attribute__((warn_unused_result));

/* The public half of sk (crypto_sign_ed25519_sk_to_pk) in standard base64. */
void cms_edkey_public_b64(const uint8_t sk[64], char out[CMS_EDKEY_PUBLIC_B64 + 1]);

#endif
