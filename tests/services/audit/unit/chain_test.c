/* The audit log's hash chain (services/audit/chain.h): a batch's root
 * changes with any column of any row, with the rows' order and number,
 * and cannot be confused across field boundaries; a batch's hash changes
 * with each of its fields, so a batch removed, reordered or replaced
 * breaks the chain; a checkpoint's signature verifies with its key only,
 * and not once any byte of it changed. */
#include "audit/chain.h"

#include <criterion/criterion.h>
#include <string.h>

#define ID1 "01890000-0000-7000-8000-000000000001"
#define ID2 "01890000-0000-7000-8000-000000000002"
#define RES "01890000-0000-7000-8000-0000000000aa"
#define ACT "01890000-0000-7000-8000-0000000000bb"

static ach_row row(const char *id, const char *details)
{
    ach_row r = {.id = id,
                 .event_type = "contract.signed",
                 .resource_type = "contract",
                 .resource_id = RES,
                 .actor_id = ACT,
                 .details = details,
                 .created_at_us = 1764633600000000};
    return r;
}

static void root_of(const ach_row *rows, int n, uint8_t out[ACH_HASH_BYTES])
{
    ach_root r;
    ach_root_init(&r);
    for (int i = 0; i < n; i++)
        cr_assert(ach_root_add(&r, &rows[i]), "row %d", i);
    ach_root_final(&r, out);
}

static bool same(const uint8_t *a, const uint8_t *b)
{
    return memcmp(a, b, ACH_HASH_BYTES) == 0;
}

Test(chain, the_root_changes_with_any_column_of_any_row)
{
    ach_row rows[2] = {row(ID1, "{\"a\": 1}"), row(ID2, "{}")};
    uint8_t base[ACH_HASH_BYTES], again[ACH_HASH_BYTES], h[ACH_HASH_BYTES];
    root_of(rows, 2, base);
    root_of(rows, 2, again);
    cr_assert(same(base, again), "deterministic");
    for (int field = 0; field < 7; field++) {
        ach_row changed[2] = {rows[0], rows[1]};
        ach_row *c = &changed[1];
        switch (field) {
        case 0:
            c->id = "01890000-0000-7000-8000-000000000003";
            break;
        case 1:
            c->event_type = "contract.signeD";
            break;
        case 2:
            c->resource_type = "contracts";
            break;
        case 3:
            c->resource_id = ID1;
            break;
        case 4:
            c->actor_id = ID1;
            break;
        case 5:
            c->details = "{ }";
            break;
        case 6:
            c->created_at_us++;
            break;
        }
        root_of(changed, 2, h);
        cr_assert_not(same(base, h), "field %d changed, the root did not", field);
    }
}

Test(chain, order_count_and_boundaries_count)
{
    ach_row ab[2] = {row(ID1, "{}"), row(ID2, "{}")}, ba[2] = {ab[1], ab[0]};
    uint8_t h1[ACH_HASH_BYTES], h2[ACH_HASH_BYTES], h0[ACH_HASH_BYTES];
    root_of(ab, 2, h1);
    root_of(ba, 2, h2);
    cr_assert_not(same(h1, h2), "reordered rows");
    root_of(ab, 1, h2);
    cr_assert_not(same(h1, h2), "a row deleted");
    root_of(ab, 0, h0);
    cr_assert_not(same(h0, h2), "no row is not one row");
    /* "ab" + "c" is not "a" + "bc" */
    ach_row x = row(ID1, "{}"), y = row(ID1, "{}");
    x.event_type = "ab";
    x.resource_type = "c";
    y.event_type = "a";
    y.resource_type = "bc";
    root_of(&x, 1, h1);
    root_of(&y, 1, h2);
    cr_assert_not(same(h1, h2), "field boundaries are part of the bytes");
}

Test(chain, bad_rows_are_refused_and_hash_nothing)
{
    ach_root r;
    ach_root_init(&r);
    ach_row bad = row("not-a-uuid", "{}");
    cr_assert_not(ach_root_add(&r, &bad));
    bad = row(ID1, NULL);
    cr_assert_not(ach_root_add(&r, &bad));
    cr_assert_eq(r.rows, 0);
    uint8_t h[ACH_HASH_BYTES], empty[ACH_HASH_BYTES];
    ach_root_final(&r, h);
    root_of(NULL, 0, empty);
    cr_assert(same(h, empty), "refused rows left no trace");
}

Test(chain, a_batch_hash_covers_every_field)
{
    ach_batch b = {.writer = "audit-1", .seq = 7, .rows = 1000};
    memset(b.root, 0x11, sizeof b.root);
    memset(b.prev, 0x22, sizeof b.prev);
    uint8_t base[ACH_HASH_BYTES], h[ACH_HASH_BYTES];
    cr_assert(ach_batch_hash(&b, base));
    ach_batch c = b;
    c.writer = "audit-2";
    cr_assert(ach_batch_hash(&c, h));
    cr_assert_not(same(base, h), "writer");
    c = b;
    c.seq = 8;
    cr_assert(ach_batch_hash(&c, h));
    cr_assert_not(same(base, h), "sequence");
    c = b;
    c.rows = 999;
    cr_assert(ach_batch_hash(&c, h));
    cr_assert_not(same(base, h), "row count");
    c = b;
    c.root[31] ^= 1;
    cr_assert(ach_batch_hash(&c, h));
    cr_assert_not(same(base, h), "root");
    c = b;
    c.prev[0] ^= 0x80;
    cr_assert(ach_batch_hash(&c, h));
    cr_assert_not(same(base, h), "previous hash");
    c.writer = NULL;
    cr_assert_not(ach_batch_hash(&c, h));
}

Test(chain, a_checkpoint_verifies_with_its_key_only)
{
    cr_assert_geq(sodium_init(), 0);
    uint8_t pk[crypto_sign_PUBLICKEYBYTES], sk[crypto_sign_SECRETKEYBYTES];
    uint8_t pk2[crypto_sign_PUBLICKEYBYTES], sk2[crypto_sign_SECRETKEYBYTES];
    crypto_sign_keypair(pk, sk);
    crypto_sign_keypair(pk2, sk2);
    ach_checkpoint c = {.writer = "audit-1",
                        .key_id = ID1,
                        .seq = 42,
                        .total_rows = 42000,
                        .at_us = 1764633600000000};
    memset(c.hash, 0x5a, sizeof c.hash);
    uint8_t sig[ACH_SIG_BYTES];
    cr_assert(ach_checkpoint_sign(&c, sk, sig));
    cr_assert(ach_checkpoint_verify(&c, pk, sig));
    cr_assert_not(ach_checkpoint_verify(&c, pk2, sig), "another key");
    uint8_t flipped[ACH_SIG_BYTES];
    for (size_t i = 0; i < ACH_SIG_BYTES; i += 9) {
        memcpy(flipped, sig, sizeof flipped);
        flipped[i] ^= 1;
        cr_assert_not(ach_checkpoint_verify(&c, pk, flipped), "signature byte %zu flipped", i);
    }
    ach_checkpoint d = c;
    d.seq = 41;
    cr_assert_not(ach_checkpoint_verify(&d, pk, sig), "an older head");
    d = c;
    d.total_rows--;
    cr_assert_not(ach_checkpoint_verify(&d, pk, sig), "fewer rows");
    d = c;
    d.key_id = ID2;
    cr_assert_not(ach_checkpoint_verify(&d, pk, sig), "another key id");
    d = c;
    d.at_us++;
    cr_assert_not(ach_checkpoint_verify(&d, pk, sig), "another time");
    d = c;
    d.hash[3] ^= 4;
    cr_assert_not(ach_checkpoint_verify(&d, pk, sig), "another hash");
}
