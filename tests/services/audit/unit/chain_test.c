/* The audit log's hash chain (services/audit/chain.h): a row's hash
 * changes with each of its columns and cannot be confused across field
 * boundaries; a batch's root changes with any row and with their number,
 * but not with the order the rows come in (a table returns them in no
 * order); a batch's hash changes with each of its fields, so a batch
 * removed, reordered or replaced breaks the chain; a checkpoint's signature
 * verifies with its key only, and not once any byte of it changed. */
#include "audit/chain.h"

#include <criterion/criterion.h>
#include <string.h>

/* UUIDs as their 16 bytes (01890000-0000-7000-8000-0000000000xx). */
#define UUID(last)                                                                                 \
    {                                                                                              \
        0x01, 0x89, 0, 0, 0, 0, 0x70, 0, 0x80, 0, 0, 0, 0, 0, 0, (last)                            \
    }

static const uint8_t ID1[16] = UUID(0x01), ID2[16] = UUID(0x02), ID3[16] = UUID(0x03);
static const uint8_t RES[16] = UUID(0xaa), ACT[16] = UUID(0xbb);

#define TEXT(s) s, sizeof s - 1

static ach_row row(const uint8_t id[16], const char *details, size_t details_len)
{
    ach_row r = {.id = id,
                 .resource_id = RES,
                 .actor_id = ACT,
                 .event_type = "contract.signed",
                 .event_type_len = strlen("contract.signed"),
                 .resource_type = "contract",
                 .resource_type_len = strlen("contract"),
                 .details = details,
                 .details_len = details_len,
                 .created_at_us = 1764633600000000};
    return r;
}

static bool same(const uint8_t *a, const uint8_t *b)
{
    return memcmp(a, b, ACH_HASH_BYTES) == 0;
}

/* The root of n rows (at most 8), hashed in the order given. */
static void root_of(const ach_row *rows, size_t n, uint8_t out[ACH_HASH_BYTES])
{
    ach_leaf leaves[8];
    cr_assert_leq(n, 8);
    for (size_t i = 0; i < n; i++)
        cr_assert(ach_row_hash(&rows[i], &leaves[i]), "row %zu refused", i);
    ach_root(leaves, n, out);
}

static void leaf_of(const ach_row *r, ach_leaf *out)
{
    cr_assert(ach_row_hash(r, out), "row refused");
}

Test(chain, a_row_hash_is_deterministic_and_carries_the_id)
{
    ach_row r = row(ID1, TEXT("{\"a\": 1}"));
    ach_leaf a, b;
    leaf_of(&r, &a);
    leaf_of(&r, &b);
    cr_assert(same(a.hash, b.hash), "the same row hashed twice");
    cr_assert_arr_eq(a.id, ID1, 16, "the leaf carries the row's id");
}

Test(chain, the_root_changes_with_any_column_of_any_row)
{
    ach_row rows[2] = {row(ID1, TEXT("{\"a\": 1}")), row(ID2, TEXT("{}"))};
    uint8_t base[ACH_HASH_BYTES], h[ACH_HASH_BYTES];
    root_of(rows, 2, base);
    for (int which = 0; which < 2; which++) {
        for (int field = 0; field < 7; field++) {
            ach_row changed[2] = {rows[0], rows[1]};
            ach_row *c = &changed[which];
            switch (field) {
            case 0:
                c->id = ID3;
                break;
            case 1:
                c->event_type = "contract.signeD";
                break;
            case 2:
                c->resource_type = "contracts";
                c->resource_type_len++;
                break;
            case 3:
                c->resource_id = ID1;
                break;
            case 4:
                c->actor_id = ID1;
                break;
            case 5:
                c->details = "{ }";
                c->details_len = 3;
                break;
            case 6:
                c->created_at_us++;
                break;
            }
            root_of(changed, 2, h);
            cr_assert_not(same(base, h), "field %d of row %d changed, the root did not", field,
                          which);
        }
    }
}

Test(chain, a_text_is_its_length_in_bytes_not_up_to_a_nul)
{
    ach_row a = row(ID1, TEXT("{}")), b = row(ID1, "{}trailing", 2);
    ach_leaf la, lb;
    leaf_of(&a, &la);
    leaf_of(&b, &lb);
    cr_assert(same(la.hash, lb.hash), "bytes past details_len were hashed");
    b.details_len = 3;
    leaf_of(&b, &lb);
    cr_assert_not(same(la.hash, lb.hash), "a longer details_len was ignored");
}

Test(chain, field_boundaries_are_part_of_the_bytes)
{
    ach_row x = row(ID1, TEXT("{}")), y = x;
    /* "ab" + "c" is not "a" + "bc" */
    x.event_type = "ab";
    x.event_type_len = 2;
    x.resource_type = "c";
    x.resource_type_len = 1;
    y.event_type = "a";
    y.event_type_len = 1;
    y.resource_type = "bc";
    y.resource_type_len = 2;
    ach_leaf lx, ly;
    leaf_of(&x, &lx);
    leaf_of(&y, &ly);
    cr_assert_not(same(lx.hash, ly.hash), "event_type/resource_type boundary");
    uint8_t hx[ACH_HASH_BYTES], hy[ACH_HASH_BYTES];
    root_of(&x, 1, hx);
    root_of(&y, 1, hy);
    cr_assert_not(same(hx, hy), "the roots of those rows");
    /* an empty text is a text too: "" + "x" is not "x" + "" */
    x.event_type = "";
    x.event_type_len = 0;
    x.resource_type = "x";
    x.resource_type_len = 1;
    y.event_type = "x";
    y.event_type_len = 1;
    y.resource_type = "";
    y.resource_type_len = 0;
    leaf_of(&x, &lx);
    leaf_of(&y, &ly);
    cr_assert_not(same(lx.hash, ly.hash), "an empty text moved across the boundary");
}

Test(chain, the_root_counts_rows_but_ignores_their_order)
{
    ach_row rows[3] = {row(ID1, TEXT("{}")), row(ID2, TEXT("{\"b\": 2}")), row(ID3, TEXT("[]"))};
    static const int perms[6][3] = {{0, 1, 2}, {0, 2, 1}, {1, 0, 2},
                                    {1, 2, 0}, {2, 0, 1}, {2, 1, 0}};
    uint8_t base[ACH_HASH_BYTES], h[ACH_HASH_BYTES];
    root_of(rows, 3, base);
    for (int p = 1; p < 6; p++) {
        ach_row shuffled[3];
        for (int i = 0; i < 3; i++)
            shuffled[i] = rows[perms[p][i]];
        root_of(shuffled, 3, h);
        cr_assert(same(base, h), "rows in order %d%d%d gave another root", perms[p][0], perms[p][1],
                  perms[p][2]);
    }

    /* ach_root sorts the leaves it is given by id, in place */
    ach_leaf leaves[3];
    leaf_of(&rows[2], &leaves[0]);
    leaf_of(&rows[0], &leaves[1]);
    leaf_of(&rows[1], &leaves[2]);
    ach_root(leaves, 3, h);
    cr_assert(same(base, h));
    cr_assert_arr_eq(leaves[0].id, ID1, 16, "leaves not sorted by id");
    cr_assert_arr_eq(leaves[1].id, ID2, 16, "leaves not sorted by id");
    cr_assert_arr_eq(leaves[2].id, ID3, 16, "leaves not sorted by id");

    /* a row more, a row less, no row */
    uint8_t two[ACH_HASH_BYTES], one[ACH_HASH_BYTES], none[ACH_HASH_BYTES], four[ACH_HASH_BYTES];
    root_of(rows, 2, two);
    root_of(rows, 1, one);
    root_of(rows, 0, none);
    cr_assert_not(same(base, two), "a row deleted");
    cr_assert_not(same(two, one), "another row deleted");
    cr_assert_not(same(one, none), "no row is not one row");
    ach_row more[4] = {rows[0], rows[1], rows[2], rows[2]};
    root_of(more, 4, four);
    cr_assert_not(same(base, four), "a row repeated");
}

Test(chain, a_row_with_no_text_or_too_long_a_text_is_refused)
{
    for (int field = 0; field < 6; field++) {
        ach_row r = row(ID1, TEXT("{}"));
        switch (field) {
        case 0:
            r.event_type = NULL;
            break;
        case 1:
            r.resource_type = NULL;
            break;
        case 2:
            r.details = NULL;
            break;
        /* refused by its length alone: nothing is read */
        case 3:
            r.event_type_len = ACH_TEXT_MAX;
            break;
        case 4:
            r.resource_type_len = ACH_TEXT_MAX;
            break;
        case 5:
            r.details_len = ACH_TEXT_MAX;
            break;
        }
        ach_leaf leaf, untouched;
        memset(&leaf, 0xa5, sizeof leaf);
        untouched = leaf;
        cr_assert_not(ach_row_hash(&r, &leaf), "case %d accepted", field);
        cr_assert_arr_eq(&leaf, &untouched, sizeof leaf, "case %d wrote its leaf", field);
    }
    /* an empty text is no missing text */
    ach_row r = row(ID1, "", 0);
    ach_leaf leaf;
    cr_assert(ach_row_hash(&r, &leaf), "empty details refused");
}

Test(chain, a_batch_hash_covers_every_field)
{
    ach_batch b = {.writer = 0x0189000000007000, .seq = 7, .rows = 1000};
    memset(b.root, 0x11, sizeof b.root);
    memset(b.prev, 0x22, sizeof b.prev);
    uint8_t base[ACH_HASH_BYTES], h[ACH_HASH_BYTES];
    ach_batch_hash(&b, base);
    ach_batch_hash(&b, h);
    cr_assert(same(base, h), "deterministic");
    for (int field = 0; field < 5; field++) {
        ach_batch c = b;
        switch (field) {
        case 0:
            c.writer++;
            break;
        case 1:
            c.seq = 8;
            break;
        case 2:
            c.rows = 999;
            break;
        case 3:
            c.root[31] ^= 1;
            break;
        case 4:
            c.prev[0] ^= 0x80;
            break;
        }
        ach_batch_hash(&c, h);
        cr_assert_not(same(base, h), "field %d (writer, seq, rows, root, prev) changed", field);
    }
    /* the fields are not interchangeable: writer 7, seq 1 is not writer 1, seq 7 */
    ach_batch x = b, y = b;
    x.writer = 7;
    x.seq = 1;
    y.writer = 1;
    y.seq = 7;
    uint8_t hx[ACH_HASH_BYTES], hy[ACH_HASH_BYTES];
    ach_batch_hash(&x, hx);
    ach_batch_hash(&y, hy);
    cr_assert_not(same(hx, hy), "writer and seq swapped");
}

Test(chain, a_checkpoint_verifies_with_its_key_only)
{
    cr_assert_geq(sodium_init(), 0);
    uint8_t pk[crypto_sign_PUBLICKEYBYTES], sk[crypto_sign_SECRETKEYBYTES];
    uint8_t pk2[crypto_sign_PUBLICKEYBYTES], sk2[crypto_sign_SECRETKEYBYTES];
    crypto_sign_keypair(pk, sk);
    crypto_sign_keypair(pk2, sk2);
    ach_checkpoint c = {.key_id = "01890000-0000-7000-8000-000000000001",
                        .writer = 0x0189000000007000,
                        .seq = 42,
                        .total_rows = 42000,
                        .at_us = 1764633600000000};
    memset(c.hash, 0x5a, sizeof c.hash);
    uint8_t sig[ACH_SIG_BYTES];
    cr_assert(ach_checkpoint_sign(&c, sk, sig));
    cr_assert(ach_checkpoint_verify(&c, pk, sig));
    cr_assert_not(ach_checkpoint_verify(&c, pk2, sig), "another key");
    uint8_t sig2[ACH_SIG_BYTES];
    cr_assert(ach_checkpoint_sign(&c, sk2, sig2));
    cr_assert(ach_checkpoint_verify(&c, pk2, sig2));
    cr_assert_not(ach_checkpoint_verify(&c, pk, sig2), "signed by another key");

    uint8_t flipped[ACH_SIG_BYTES];
    for (size_t i = 0; i < ACH_SIG_BYTES; i++) {
        memcpy(flipped, sig, sizeof flipped);
        flipped[i] ^= 1;
        cr_assert_not(ach_checkpoint_verify(&c, pk, flipped), "signature byte %zu flipped", i);
    }

    for (int field = 0; field < 6; field++) {
        ach_checkpoint d = c;
        switch (field) {
        case 0:
            d.key_id = "01890000-0000-7000-8000-000000000002";
            break;
        case 1:
            d.writer++;
            break;
        case 2:
            d.seq = 41;
            break;
        case 3:
            d.total_rows--;
            break;
        case 4:
            d.hash[3] ^= 4;
            break;
        case 5:
            d.at_us++;
            break;
        }
        cr_assert_not(ach_checkpoint_verify(&d, pk, sig),
                      "field %d (key_id, writer, seq, total_rows, hash, at_us) changed", field);
    }

    /* the digest is what is signed, and a checkpoint with no key id has none */
    uint8_t d1[ACH_HASH_BYTES], d2[ACH_HASH_BYTES];
    cr_assert(ach_checkpoint_digest(&c, d1));
    cr_assert(ach_checkpoint_digest(&c, d2));
    cr_assert(same(d1, d2), "deterministic");
    cr_assert_eq(crypto_sign_verify_detached(sig, d1, sizeof d1, pk), 0,
                 "sig is not of the digest");
    ach_checkpoint nokey = c;
    nokey.key_id = NULL;
    cr_assert_not(ach_checkpoint_digest(&nokey, d1));
    cr_assert_not(ach_checkpoint_sign(&nokey, sk, sig));
    cr_assert_not(ach_checkpoint_verify(&nokey, pk, sig));
}
