/* The unknown credential ids of cms-identity's resolver: kept for the ttl
 * and no longer, bounded with the oldest going first, forgotten on
 * demand, and nothing kept when the ttl is 0. */
#include "negcache.h"

#include <criterion/criterion.h>

static cms_uuid id_of(uint8_t n)
{
    cms_uuid u = {{0}};
    u.b[6] = 0x70;
    u.b[15] = n;
    return u;
}

Test(negcache, an_unknown_id_is_kept_for_the_ttl_only)
{
    idneg *n = NULL;
    cr_assert_eq(idneg_create(8, 2000, &n), 0);
    cms_uuid a = id_of(1), b = id_of(2);
    cr_assert_not(idneg_unknown(n, &a, 1000), "nothing before a look-up");
    idneg_note(n, &a, 1000);
    cr_assert(idneg_unknown(n, &a, 1000));
    cr_assert(idneg_unknown(n, &a, 2999), "just within the ttl");
    cr_assert_not(idneg_unknown(n, &b, 1000), "another id is not");
    cr_assert_not(idneg_unknown(n, &a, 3000), "the ttl is over");
    cr_assert_eq(idneg_count(n), 0, "and the entry went");
    /* noted again: from then */
    idneg_note(n, &a, 5000);
    idneg_note(n, &a, 6000);
    cr_assert_eq(idneg_count(n), 1);
    cr_assert(idneg_unknown(n, &a, 7999));
    idneg_destroy(n);
}

Test(negcache, forgotten_at_once_when_the_credential_is_issued)
{
    idneg *n = NULL;
    cr_assert_eq(idneg_create(8, 60000, &n), 0);
    cms_uuid a = id_of(1), b = id_of(2);
    idneg_note(n, &a, 0);
    idneg_note(n, &b, 0);
    idneg_forget(n, &a);
    cr_assert_not(idneg_unknown(n, &a, 1));
    cr_assert(idneg_unknown(n, &b, 1));
    idneg_forget(n, &a); /* twice is nothing */
    idneg_clear(n);
    cr_assert_not(idneg_unknown(n, &b, 1));
    cr_assert_eq(idneg_count(n), 0);
    idneg_destroy(n);
}

Test(negcache, bounded_the_oldest_go_first)
{
    idneg *n = NULL;
    cr_assert_eq(idneg_create(3, 60000, &n), 0);
    cms_uuid ids[5];
    for (uint8_t i = 0; i < 5; i++) {
        ids[i] = id_of(i);
        idneg_note(n, &ids[i], i);
        cr_assert_leq(idneg_count(n), 3);
    }
    cr_assert_not(idneg_unknown(n, &ids[0], 10));
    cr_assert_not(idneg_unknown(n, &ids[1], 10));
    for (int i = 2; i < 5; i++)
        cr_assert(idneg_unknown(n, &ids[i], 10), "%d", i);
    /* noting one again makes it the newest */
    idneg_note(n, &ids[2], 20);
    cms_uuid f = id_of(9);
    idneg_note(n, &f, 21);
    cr_assert_not(idneg_unknown(n, &ids[3], 22), "the oldest now went");
    cr_assert(idneg_unknown(n, &ids[2], 22));
    idneg_destroy(n);
}

Test(negcache, a_ttl_of_zero_keeps_nothing)
{
    idneg *n = NULL;
    cr_assert_eq(idneg_create(3, 0, &n), 0);
    cms_uuid a = id_of(1);
    idneg_note(n, &a, 0);
    cr_assert_not(idneg_unknown(n, &a, 0));
    cr_assert_eq(idneg_count(n), 0);
    idneg_destroy(n);
    cr_assert_neq(idneg_create(0, 1000, &n), 0, "no room is an error");
    cr_assert_neq(idneg_create(4, -1, &n), 0, "nor is a negative ttl");
    idneg_destroy(NULL);
}
