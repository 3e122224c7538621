/* audit_actors: a bounded set of UUIDs. Membership is exact (never a false
 * positive), ids that collide in their hashed half still probe apart, and
 * when the set fills past half it empties itself so memory stays
 * capacity * 16 bytes however many actors pass through. */
#include "actors.h"

#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

/* Deterministic pseudo-random ids: v7-like (a shared timestamp prefix, then
 * random bits), different for each (stream, i). */
static void id_of(uint32_t stream, uint32_t i, uint8_t out[16])
{
    uint64_t x = ((uint64_t)stream << 32 | i) * 0x9e3779b97f4a7c15ull + 0x632be59bd9b4e019ull;
    uint64_t hi = 0x0190a1b2c3d47000ull | (x >> 52);
    x ^= x >> 29;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 32;
    memcpy(out, &hi, 8);
    memcpy(out + 8, &x, 8);
    out[6] = (uint8_t)(0x70 | (out[6] & 0x0f));
    out[8] = (uint8_t)(0x80 | (out[8] & 0x3f));
    /* keep (stream, i) exactly recoverable so two ids never coincide */
    memcpy(out + 12, &i, 4);
    out[0] = (uint8_t)stream;
}

Test(audit_actors, add_has_count)
{
    audit_actors *a = NULL;
    cr_assert_eq(audit_actors_create(0, &a), 0);
    uint8_t x[16], y[16];
    id_of(1, 1, x);
    id_of(1, 2, y);
    cr_expect_not(audit_actors_has(a, x));
    cr_expect_eq(audit_actors_count(a), 0);
    audit_actors_add(a, x);
    cr_expect(audit_actors_has(a, x));
    cr_expect_not(audit_actors_has(a, y));
    cr_expect_eq(audit_actors_count(a), 1);
    audit_actors_add(a, x);
    cr_expect_eq(audit_actors_count(a), 1, "adding twice keeps one");
    audit_actors_add(a, y);
    cr_expect(audit_actors_has(a, y));
    cr_expect_eq(audit_actors_count(a), 2);
    cr_expect_eq(audit_actors_resets(a), 0);
    audit_actors_destroy(a);
    audit_actors_destroy(NULL);
}

Test(audit_actors, the_nil_uuid_is_an_ordinary_member)
{
    audit_actors *a = NULL;
    cr_assert_eq(audit_actors_create(64, &a), 0);
    uint8_t nil[16] = {0};
    cr_expect_not(audit_actors_has(a, nil), "an empty slot is not a nil id");
    audit_actors_add(a, nil);
    cr_expect(audit_actors_has(a, nil));
    uint8_t one[16] = {0};
    one[15] = 1;
    cr_expect_not(audit_actors_has(a, one));
    audit_actors_destroy(a);
}

Test(audit_actors, many_ids_without_false_positives)
{
    enum { N = 30000, PROBES = 20000 };
    audit_actors *a = NULL;
    cr_assert_eq(audit_actors_create(1u << 16, &a), 0);
    uint8_t id[16];
    for (uint32_t i = 0; i < N; i++) {
        id_of(2, i, id);
        audit_actors_add(a, id);
    }
    cr_expect_eq(audit_actors_count(a), N);
    cr_expect_eq(audit_actors_resets(a), 0, "below half of 65536 slots: never emptied");
    int missing = 0, false_pos = 0;
    for (uint32_t i = 0; i < N; i++) {
        id_of(2, i, id);
        missing += !audit_actors_has(a, id);
    }
    for (uint32_t i = 0; i < PROBES; i++) {
        id_of(3, i, id);
        false_pos += audit_actors_has(a, id);
    }
    cr_expect_eq(missing, 0);
    cr_expect_eq(false_pos, 0);
    audit_actors_destroy(a);
}

Test(audit_actors, ids_equal_in_their_hashed_half_probe_apart)
{
    /* same last 8 bytes, or same first 8 bytes: collisions by construction */
    audit_actors *a = NULL;
    cr_assert_eq(audit_actors_create(256, &a), 0);
    uint8_t ids[100][16];
    for (int i = 0; i < 100; i++) {
        memset(ids[i], 0xab, 16);
        if (i < 50)
            ids[i][i % 8] = (uint8_t)i; /* differs only in the first half */
        else
            ids[i][8 + i % 8] = (uint8_t)i; /* differs only in the second half */
    }
    for (int i = 0; i < 100; i++)
        audit_actors_add(a, ids[i]);
    cr_expect_eq(audit_actors_count(a), 100, "all distinct (byte values stay below 0xab)");
    for (int i = 0; i < 100; i++)
        cr_expect(audit_actors_has(a, ids[i]), "id %d", i);
    uint8_t other[16];
    memset(other, 0xab, 16);
    other[3] = 0x01;
    other[12] = 0x02;
    cr_expect_not(audit_actors_has(a, other));
    audit_actors_destroy(a);
}

Test(audit_actors, full_set_empties_itself_and_stays_exact)
{
    /* 64 slots: at most 32 members; the 33rd distinct id empties the set first */
    audit_actors *a = NULL;
    cr_assert_eq(audit_actors_create(64, &a), 0);
    enum { N = 100000, CYCLE = 32 };
    uint8_t id[16];
    size_t max_count = 0;
    int wrong = 0, false_pos = 0;
    for (uint32_t i = 0; i < N; i++) {
        id_of(4, i, id);
        audit_actors_add(a, id);
        size_t c = audit_actors_count(a);
        if (c > max_count)
            max_count = c;
        wrong += !audit_actors_has(a, id);
        /* an id never added is never reported */
        id_of(5, i, id);
        false_pos += audit_actors_has(a, id);
    }
    cr_expect_eq(wrong, 0, "the id just added is always there");
    cr_expect_eq(false_pos, 0);
    cr_expect_eq(max_count, CYCLE, "never more than half the slots");
    cr_expect_eq(audit_actors_resets(a), (uint64_t)((N - 1) / CYCLE));
    cr_expect_eq(audit_actors_count(a), (size_t)((N - 1) % CYCLE + 1));
    /* exactly the ids since the last reset are members, the older ones are not */
    uint32_t since = (uint32_t)(N - audit_actors_count(a));
    for (uint32_t i = since - CYCLE; i < N; i++) {
        id_of(4, i, id);
        cr_expect_eq(audit_actors_has(a, id), i >= since, "id %u", i);
    }
    audit_actors_destroy(a);
}

Test(audit_actors, re_adding_a_member_never_empties_the_set)
{
    audit_actors *a = NULL;
    cr_assert_eq(audit_actors_create(64, &a), 0);
    uint8_t id[16];
    for (uint32_t i = 0; i < 32; i++) {
        id_of(6, i, id);
        audit_actors_add(a, id);
    }
    cr_assert_eq(audit_actors_count(a), 32);
    for (int round = 0; round < 10; round++)
        for (uint32_t i = 0; i < 32; i++) {
            id_of(6, i, id);
            audit_actors_add(a, id);
        }
    cr_expect_eq(audit_actors_resets(a), 0);
    cr_expect_eq(audit_actors_count(a), 32);
    audit_actors_destroy(a);
}

Test(audit_actors, capacity_rounds_up_to_a_power_of_two)
{
    /* 100 -> 128 slots: 64 members, the 65th empties it */
    audit_actors *a = NULL;
    cr_assert_eq(audit_actors_create(100, &a), 0);
    uint8_t id[16];
    for (uint32_t i = 0; i < 64; i++) {
        id_of(7, i, id);
        audit_actors_add(a, id);
    }
    cr_expect_eq(audit_actors_count(a), 64);
    cr_expect_eq(audit_actors_resets(a), 0);
    id_of(7, 64, id);
    audit_actors_add(a, id);
    cr_expect_eq(audit_actors_resets(a), 1);
    cr_expect_eq(audit_actors_count(a), 1);
    cr_expect(audit_actors_has(a, id));
    audit_actors_destroy(a);

    /* below the minimum: 64 slots */
    cr_assert_eq(audit_actors_create(1, &a), 0);
    for (uint32_t i = 0; i < 33; i++) {
        id_of(8, i, id);
        audit_actors_add(a, id);
    }
    cr_expect_eq(audit_actors_resets(a), 1);
    audit_actors_destroy(a);
}
