/* The hash chain of the audit log, its bytes and hashes (pure: no I/O).
 *
 * Each writer (one cms-audit process) chains the batches it commits: a
 * batch's root hashes the hashes of the canonical bytes of every stored
 * column of each of its rows, in id order; the batch's hash covers the writer, its
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

/* One row of audit_logs as stored: UUIDs as their 16 bytes, details as
 * the text PostgreSQL prints for the jsonb column (audit/jsonb.h). */
typedef struct ach_row {
    const uint8_t *id, *resource_id, *actor_id;
    const char *event_type, *resource_type, *details;
    size_t event_type_len, resource_type_len, details_len;
    int64_t created_at_us;
} ach_row;

/* A row's hash, with its id: what a batch's root is made of. */
typedef struct ach_leaf {
    uint8_t id[16];
    uint8_t hash[ACH_HASH_BYTES];
} ach_leaf;

/* false (nothing written) for a text of ACH_TEXT_MAX bytes or more */
bool ach_row_hash(const ach_row *row, ach_leaf *out) __attribute__((warn_unused_result));

/* The root of a batch: its leaves sorted by id (in place: the order rows
 * come back from a table is no order), then the count and each id and
 * hash in that order. */
void ach_root(ach_leaf *leaves, size_t n, uint8_t out[ACH_HASH_BYTES]);
void ach_leaves_sort(ach_leaf *leaves, size_t n);

/* A batch record: the writer's id, its sequence number, its row count, its
 * root and the hash of the writer's batch before it (all zero for the
 * first). */
typedef struct ach_batch {
    uint64_t writer, seq, rows;
    uint8_t root[ACH_HASH_BYTES], prev[ACH_HASH_BYTES];
} ach_batch;

void ach_batch_hash(const ach_batch *b, uint8_t out[ACH_HASH_BYTES]);

/* A checkpoint: the writer's chain head (its last batch's sequence number
 * and hash), the rows it has chained in all, when, and the id of the key
 * that signs it. */
typedef struct ach_checkpoint {
    uint8_t log_id[16]; /* audit_chain_start.log_id: which audit log */
    const char *key_id;
    uint64_t writer, seq, total_rows;
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
