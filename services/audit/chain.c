/* The audit log's hash chain; see chain.h. */
#include "audit/chain.h"

#include "uuid.h"

#include <string.h>

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

static bool put_text(crypto_generichash_state *st, const char *s)
{
    if (s == NULL)
        return false;
    size_t n = strlen(s);
    if (n >= ACH_TEXT_MAX)
        return false;
    uint8_t b[4] = {(uint8_t)(n >> 24), (uint8_t)(n >> 16), (uint8_t)(n >> 8), (uint8_t)n};
    crypto_generichash_update(st, b, sizeof b);
    crypto_generichash_update(st, (const uint8_t *)s, n);
    return true;
}

static bool uuid_bytes(const char *s, cms_uuid *u)
{
    return s != NULL && cms_uuid_parse(s, strlen(s), u);
}

static void start(crypto_generichash_state *st, const char *tag, size_t taglen)
{
    crypto_generichash_init(st, NULL, 0, ACH_HASH_BYTES);
    crypto_generichash_update(st, (const uint8_t *)tag, taglen); /* with its NUL */
}

void ach_root_init(ach_root *r)
{
    start(&r->st, TAG_ROWS, sizeof TAG_ROWS);
    r->rows = 0;
}

bool ach_root_add(ach_root *r, const ach_row *row)
{
    cms_uuid id, resource, actor;
    size_t lens[3] = {row->event_type ? strlen(row->event_type) : ACH_TEXT_MAX,
                      row->resource_type ? strlen(row->resource_type) : ACH_TEXT_MAX,
                      row->details ? strlen(row->details) : ACH_TEXT_MAX};
    /* everything is checked before anything is hashed */
    if (!uuid_bytes(row->id, &id) || !uuid_bytes(row->resource_id, &resource) ||
        !uuid_bytes(row->actor_id, &actor) || lens[0] >= ACH_TEXT_MAX || lens[1] >= ACH_TEXT_MAX ||
        lens[2] >= ACH_TEXT_MAX)
        return false;
    crypto_generichash_update(&r->st, id.b, sizeof id.b);
    (void)put_text(&r->st, row->event_type);
    (void)put_text(&r->st, row->resource_type);
    crypto_generichash_update(&r->st, resource.b, sizeof resource.b);
    crypto_generichash_update(&r->st, actor.b, sizeof actor.b);
    (void)put_text(&r->st, row->details);
    put_u64(&r->st, (uint64_t)row->created_at_us);
    r->rows++;
    return true;
}

void ach_root_final(ach_root *r, uint8_t out[ACH_HASH_BYTES])
{
    put_u64(&r->st, r->rows);
    crypto_generichash_final(&r->st, out, ACH_HASH_BYTES);
}

bool ach_batch_hash(const ach_batch *b, uint8_t out[ACH_HASH_BYTES])
{
    crypto_generichash_state st;
    start(&st, TAG_BATCH, sizeof TAG_BATCH);
    if (!put_text(&st, b->writer))
        return false;
    put_u64(&st, b->seq);
    put_u64(&st, b->rows);
    crypto_generichash_update(&st, b->root, ACH_HASH_BYTES);
    crypto_generichash_update(&st, b->prev, ACH_HASH_BYTES);
    crypto_generichash_final(&st, out, ACH_HASH_BYTES);
    return true;
}

bool ach_checkpoint_digest(const ach_checkpoint *c, uint8_t out[ACH_HASH_BYTES])
{
    crypto_generichash_state st;
    start(&st, TAG_CHECKPOINT, sizeof TAG_CHECKPOINT);
    if (!put_text(&st, c->writer))
        return false;
    put_u64(&st, c->seq);
    crypto_generichash_update(&st, c->hash, ACH_HASH_BYTES);
    put_u64(&st, c->total_rows);
    put_u64(&st, (uint64_t)c->at_us);
    if (!put_text(&st, c->key_id))
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
