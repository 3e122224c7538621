/* uuid: v7 ordering and uniqueness (one thread and several), bit layout,
 * strict parsing, formatting. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "uuid.h"

static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void assert_v7_bits(const cms_uuid *u)
{
    cr_assert_eq(cms_uuid_version(u), 7);
    cr_assert_eq(u->b[6] >> 4, 7);
    cr_assert_eq(u->b[8] & 0xC0, 0x80, "variant must be 10xx");
}

Test(uuid, v7_tight_loop_strictly_increasing)
{
    enum { N = 100000 };
    cms_uuid *u = malloc(N * sizeof *u);
    char(*s)[CMS_UUID_STRLEN + 1] = malloc(N * sizeof *s);
    cr_assert(u && s);
    uint64_t before = wall_ms();
    for (size_t i = 0; i < N; i++)
        cms_uuid_v7(&u[i]);
    uint64_t after = wall_ms();
    for (size_t i = 0; i < N; i++) {
        assert_v7_bits(&u[i]);
        cms_uuid_format(&u[i], s[i]);
        if (i > 0) {
            cr_assert(memcmp(u[i - 1].b, u[i].b, 16) < 0, "memcmp order broken at %zu", i);
            cr_assert(cms_uuid_compare(&u[i - 1], &u[i]) < 0);
            cr_assert(strcmp(s[i - 1], s[i]) < 0, "text order broken at %zu: %s %s", i, s[i - 1],
                      s[i]);
        }
    }
    /* counter overflow may run the timestamp a little ahead, never behind */
    cr_assert_geq(cms_uuid_v7_ms(&u[0]), before);
    cr_assert_leq(cms_uuid_v7_ms(&u[N - 1]), after + 1000);
    free(u);
    free(s);
}

Test(uuid, v7_across_millisecond_boundaries)
{
    cms_uuid prev, cur;
    cms_uuid_v7(&prev);
    int changes = 0;
    while (changes < 20) {
        cms_uuid_v7(&cur);
        cr_assert(cms_uuid_compare(&prev, &cur) < 0);
        if (cms_uuid_v7_ms(&cur) != cms_uuid_v7_ms(&prev)) {
            cr_assert_gt(cms_uuid_v7_ms(&cur), cms_uuid_v7_ms(&prev));
            changes++;
        }
        prev = cur;
    }
}

Test(uuid, v7_random_bits_differ)
{
    /* rand_b (62 bits) should essentially never repeat */
    cms_uuid a, b;
    cms_uuid_v7(&a);
    cms_uuid_v7(&b);
    cr_assert(memcmp(a.b + 9, b.b + 9, 7) != 0);
}

enum { THREADS = 4, PER_THREAD = 10000 };

static void *gen_thread(void *arg)
{
    cms_uuid *out = arg;
    for (size_t i = 0; i < PER_THREAD; i++)
        cms_uuid_v7(&out[i]);
    return NULL;
}

static int cmp_uuid(const void *a, const void *b)
{
    return cms_uuid_compare(a, b);
}

Test(uuid, v7_threads_unique_and_each_increasing)
{
    cms_uuid *all = malloc(THREADS * PER_THREAD * sizeof *all);
    pthread_t th[THREADS];
    for (size_t t = 0; t < THREADS; t++)
        cr_assert_eq(pthread_create(&th[t], NULL, gen_thread, all + t * PER_THREAD), 0);
    for (size_t t = 0; t < THREADS; t++)
        pthread_join(th[t], NULL);
    for (size_t t = 0; t < THREADS; t++) {
        for (size_t i = 1; i < PER_THREAD; i++)
            cr_assert(cms_uuid_compare(&all[t * PER_THREAD + i - 1], &all[t * PER_THREAD + i]) < 0);
    }
    qsort(all, THREADS * PER_THREAD, sizeof *all, cmp_uuid);
    for (size_t i = 1; i < THREADS * PER_THREAD; i++)
        cr_assert(cms_uuid_compare(&all[i - 1], &all[i]) != 0, "duplicate at %zu", i);
    free(all);
}

Test(uuid, rfc9562_example)
{
    /* RFC 9562 appendix A.6 */
    const char *s = "017F22E2-79B0-7CC3-98C4-DC0C0C07398F";
    cms_uuid u;
    cr_assert(cms_uuid_parse(s, strlen(s), &u));
    cr_assert_eq(cms_uuid_version(&u), 7);
    cr_assert_eq(cms_uuid_v7_ms(&u), 0x017F22E279B0ull);
    char out[CMS_UUID_STRLEN + 1];
    cms_uuid_format(&u, out);
    cr_assert_str_eq(out, "017f22e2-79b0-7cc3-98c4-dc0c0c07398f");
}

Test(uuid, format_parse_round_trip)
{
    for (int i = 0; i < 1000; i++) {
        cms_uuid u, back;
        char s[CMS_UUID_STRLEN + 1];
        cms_uuid_v7(&u);
        cms_uuid_format(&u, s);
        cr_assert_eq(strlen(s), CMS_UUID_STRLEN);
        cr_assert(cms_uuid_parse(s, CMS_UUID_STRLEN, &back));
        cr_assert_eq(cms_uuid_compare(&u, &back), 0);
    }
    cms_uuid nil;
    cr_assert(cms_uuid_parse("00000000-0000-0000-0000-000000000000", 36, &nil));
    cr_assert(cms_uuid_is_nil(&nil));
    cr_assert_eq(cms_uuid_version(&nil), 0);
}

Test(uuid, parse_rejects_everything_else)
{
    const char *bad[] = {
        "",
        "017f22e2-79b0-7cc3-98c4-dc0c0c07398",    /* 35 */
        "017f22e2-79b0-7cc3-98c4-dc0c0c07398f0",  /* 37 */
        "017f22e2-79b0-7cc3-98c4-dc0c0c07398g",   /* bad hex */
        "017f22e2-79b0-7cc3-98c4 dc0c0c07398f",   /* space for dash */
        "017f22e279b0-7cc3-98c4-dc0c0c07398f-",   /* dash moved */
        "017f22e-279b0-7cc3-98c4-dc0c0c07398f",   /* dash moved */
        "017f22e2-79b0-7cc3-98c4dc0c-0c07398f",   /* dash moved */
        "017f22e279b07cc398c4dc0c0c07398f",       /* no dashes */
        "{017f22e2-79b0-7cc3-98c4-dc0c0c07398f}", /* braces */
        "{017f22e2-79b0-7cc3-98c4-dc0c0c0739}",   /* braces, right length */
        "urn:uuid:017f22e2-79b0-7cc3-98c4-dc0c0c07398f",
        " 17f22e2-79b0-7cc3-98c4-dc0c0c07398f",
        "017f22e2-79b0-7cc3-98c4-dc0c0c07398+",
        "+17f22e2-79b0-7cc3-98c4-dc0c0c07398f",
        "0x7f22e2-79b0-7cc3-98c4-dc0c0c07398f",
    };
    cms_uuid u;
    memset(&u, 0xAB, sizeof u);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_assert_not(cms_uuid_parse(bad[i], strlen(bad[i]), &u), "accepted %s", bad[i]);
    for (size_t i = 0; i < 16; i++)
        cr_assert_eq(u.b[i], 0xAB, "failed parse must not write");
    /* an embedded NUL inside the given length */
    char nul[] = "017f22e2-79b0-7cc3-98c4-dc0c0c07398f";
    nul[20] = '\0';
    cr_assert_not(cms_uuid_parse(nul, 36, &u));
    cr_assert_not(cms_uuid_parse(NULL, 36, &u));
    /* length is what counts, not NUL termination: a prefix of a longer string */
    const char *longer = "017f22e2-79b0-7cc3-98c4-dc0c0c07398f,more";
    cr_assert(cms_uuid_parse(longer, 36, &u));
    cr_assert_not(cms_uuid_parse(longer, strlen(longer), &u));
    /* upper case is fine */
    cr_assert(cms_uuid_parse("ABCDEF01-2345-6789-ABCD-EF0123456789", 36, &u));
    char out[CMS_UUID_STRLEN + 1];
    cms_uuid_format(&u, out);
    cr_assert_str_eq(out, "abcdef01-2345-6789-abcd-ef0123456789");
}
