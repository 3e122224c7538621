/* The audit log's hash chain; see chain.h. */
#include "audit/chain.h"

#include <stdlib.h>
#include <string.h>

static const char TAG_ROW[] = "cms-audit-row-v1";
static const char TAG_ROWS[] = "cms-audit-rows-v1";
static const char TAG_BATCH[] = "cms-audit-batch-v1";
static const char TAG_CHECKPOINT[] = "cms-audit-checkpoint-v1";

static void put_u64(crypto_generichash_state *st, uint64_t v)
{
    uint8_t b[8];
    for (int i = 7; i >= 0; i--) {
        b[i] = (uint8_t)(v & 0xff);
        v >>= 8;
    }
    crypto_generichash_update(st, b, sizeof b);
}

static bool put_text(crypto_generichash_state *st, const char *s, size_t n)
{
    if (s == NULL || n >= ACH_TEXT_MAX)
        return false;
    uint8_t b[4] = {(uint8_t)(n >> 24), (uint8_t)(n >> 16), (uint8_t)(n >> 8), (uint8_t)n};
    crypto_generichash_update(st, b, sizeof b);
    crypto_generichash_update(st, (const uint8_t *)s, n);
    return true;
}

static void start(crypto_generichash_state *st, const char *tag, size_t taglen)
{
    crypto_generichash_init(st, NULL, 0, ACH_HASH_BYTES);
    crypto_generichash_update(st, (const uint8_t *)tag, taglen); /* with its NUL */
}

bool ach_row_hash(const ach_row *row, ach_leaf *out)
{
    if (row->event_type_len >= ACH_TEXT_MAX || row->resource_type_len >= ACH_TEXT_MAX ||
        row->details_len >= ACH_TEXT_MAX || row->event_type == NULL || row->resource_type == NULL ||
        row->details == NULL)
        return false;
    crypto_generichash_state st;
    start(&st, TAG_ROW, sizeof TAG_ROW);
    crypto_generichash_update(&st, row->id, 16);
    (void)put_text(&st, row->event_type, row->event_type_len);
    (void)put_text(&st, row->resource_type, row->resource_type_len);
    crypto_generichash_update(&st, row->resource_id, 16);
    crypto_generichash_update(&st, row->actor_id, 16);
    (void)put_text(&st, row->details, row->details_len);
    put_u64(&st, (uint64_t)row->created_at_us);
    memcpy(out->id, row->id, 16);
    crypto_generichash_final(&st, out->hash, ACH_HASH_BYTES);
    return true;
}

static int leaf_cmp(const void *a, const void *b)
{
    return memcmp(((const ach_leaf *)a)->id, ((const ach_leaf *)b)->id, 16);
}

void ach_leaves_sort(ach_leaf *leaves, size_t n)
{
    if (n > 1)
        qsort(leaves, n, sizeof *leaves, leaf_cmp);
}

void ach_root(ach_leaf *leaves, size_t n, uint8_t out[ACH_HASH_BYTES])
{
    ach_leaves_sort(leaves, n);
    crypto_generichash_state st;
    start(&st, TAG_ROWS, sizeof TAG_ROWS);
    put_u64(&st, n);
    crypto_generichash_update(&st, (const uint8_t *)leaves, n * sizeof *leaves);
    crypto_generichash_final(&st, out, ACH_HASH_BYTES);
}

void ach_batch_hash(const ach_batch *b, uint8_t out[ACH_HASH_BYTES])
{
    crypto_generichash_state st;
    start(&st, TAG_BATCH, sizeof TAG_BATCH);
    put_u64(&st, b->writer);
    put_u64(&st, b->seq);
    put_u64(&st, b->rows);
    crypto_generichash_update(&st, b->root, ACH_HASH_BYTES);
    crypto_generichash_update(&st, b->prev, ACH_HASH_BYTES);
    crypto_generichash_final(&st, out, ACH_HASH_BYTES);
}

bool ach_checkpoint_digest(const ach_checkpoint *c, uint8_t out[ACH_HASH_BYTES])
{
    crypto_generichash_state st;
    start(&st, TAG_CHECKPOINT, sizeof TAG_CHECKPOINT);
    crypto_generichash_update(&st, c->log_id, sizeof c->log_id);
    put_u64(&st, c->writer);
    put_u64(&st, c->seq);
    crypto_generichash_update(&st, c->hash, ACH_HASH_BYTES);
    put_u64(&st, c->total_rows);
    put_u64(&st, (uint64_t)c->at_us);
    if (c->key_id == NULL || !put_text(&st, c->key_id, strlen(c->key_id)))
        return false;
    crypto_generichash_final(&st, out, ACH_HASH_BYTES);
    return true;
}

bool ach_checkpoint_sign(const ach_checkpoint *c, const uint8_t sk[crypto_sign_SECRETKEYBYTES],
                         uint8_t sig[ACH_SIG_BYTES])
{
    uint8_t d[ACH_HASH_BYTES];
    if (!ach_checkpoint_digest(c, d))
        return false;
    return crypto_sign_detached(sig, NULL, d, sizeof d, sk) == 0;
}

bool ach_checkpoint_verify(const ach_checkpoint *c, const uint8_t pk[crypto_sign_PUBLICKEYBYTES],
                           const uint8_t sig[ACH_SIG_BYTES])
{
    uint8_t d[ACH_HASH_BYTES];
    return ach_checkpoint_digest(c, d) && crypto_sign_verify_detached(sig, d, sizeof d, pk) == 0;
}
