/* The hash chain of the audit log, its bytes and hashes (pure: no I/O).
 *
 * Each writer (one cms-audit process) chains the batches it commits: a
 * batch's root hashes the canonical bytes of every stored column of every
 * row, in the batch's order; the batch's hash covers the writer, its
 * sequence number, its row count, its root and the previous batch's hash.
 * A checkpoint is the writer's chain head signed with Ed25519.
 *
 * Canonical bytes: a UUID as its 16 bytes, a time as 8 bytes of Unix
 * microseconds (big-endian, two's complement), a count as 8 bytes
 * big-endian, a text as 4 bytes of length (big-endian) then its bytes, so
 * that no two different rows share an encoding. Every hash is BLAKE2b-256
 * (libsodium's crypto_generichash) over a NUL-terminated domain tag and
 * then the fields, so that no hash of one kind is a hash of another. */
#ifndef AUDIT_CHAIN_H
#define AUDIT_CHAIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sodium.h>

#define ACH_HASH_BYTES 32
#define ACH_SIG_BYTES 64
#define ACH_TEXT_MAX (UINT32_C(1) << 30) /* longer texts are refused */

/* One row of audit_logs as stored: UUIDs as text, details as the JSON
 * text PostgreSQL returns for the jsonb column. */
typedef struct ach_row {
    const char *id, *event_type, *resource_type, *resource_id, *actor_id;
    const char *details;
    int64_t created_at_us;
} ach_row;

/* The root of a batch, hashed row by row. */
typedef struct ach_root {
    crypto_generichash_state st;
    uint64_t rows;
} ach_root;

void ach_root_init(ach_root *r);
/* false (nothing hashed) for a UUID that does not parse, a NULL or an
 * over-long text */
bool ach_root_add(ach_root *r, const ach_row *row) __attribute__((warn_unused_result));
void ach_root_final(ach_root *r, uint8_t out[ACH_HASH_BYTES]);

/* A batch record: the writer's id (text), its sequence number, its row
 * count, its root and the hash of the writer's batch before it (all zero
 * for the first). */
typedef struct ach_batch {
    const char *writer;
    uint64_t seq, rows;
    uint8_t root[ACH_HASH_BYTES], prev[ACH_HASH_BYTES];
} ach_batch;

/* false for a NULL or over-long writer */
bool ach_batch_hash(const ach_batch *b, uint8_t out[ACH_HASH_BYTES])
    __attribute__((warn_unused_result));

/* A checkpoint: the writer's chain head (its last batch's sequence number
 * and hash), the rows it has chained in all, when, and the id of the key
 * that signs it. */
typedef struct ach_checkpoint {
    const char *writer, *key_id;
    uint64_t seq, total_rows;
    uint8_t hash[ACH_HASH_BYTES];
    int64_t at_us;
} ach_checkpoint;

/* What is signed: the hash of the checkpoint's canonical bytes. */
bool ach_checkpoint_digest(const ach_checkpoint *c, uint8_t out[ACH_HASH_BYTES])
    __attribute__((warn_unused_result));
bool ach_checkpoint_sign(const ach_checkpoint *c, const uint8_t sk[crypto_sign_SECRETKEYBYTES],
                         uint8_t sig[ACH_SIG_BYTES]) __attribute__((warn_unused_result));
/* true only if sig is pk's signature of this very checkpoint */
bool ach_checkpoint_verify(const ach_checkpoint *c, const uint8_t pk[crypto_sign_PUBLICKEYBYTES],
                           const uint8_t sig[ACH_SIG_BYTES]);

#endif
