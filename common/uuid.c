/* UUIDv7 generation and the canonical text form; see uuid.h.
 *
 * Monotonicity: one process-wide (ms, counter) pair, advanced under a mutex.
 * Each new millisecond seeds the 12-bit counter with 11 random bits, so the
 * counter starts in its lower half and rarely overflows; when it would, the
 * timestamp moves one ms ahead of the clock (RFC 9562 §6.2, method 3). The
 * pair never goes backwards, whatever the wall clock does. */
#include "uuid.h"

#include <pthread.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"

static pthread_once_t g_sodium_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t g_v7_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t g_v7_ms;  /* timestamp of the last UUID handed out */
static uint16_t g_v7_ctr; /* its counter, 0 .. 0xFFF */

static void sodium_setup(void)
{
    /* randombytes works without sodium_init on Linux, but init makes the
     * choice of generator explicit and thread-safe from here on. */
    if (sodium_init() < 0)
        cms_log_error("sodium_init failed; random bits come from the default generator", NULL);
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void cms_uuid_v7(cms_uuid *out)
{
    pthread_once(&g_sodium_once, sodium_setup);
    /* rnd[0..7]: rand_b; rnd[8..9]: a counter seed, used only on a new ms.
     * Drawn before taking the lock so the critical section stays short. */
    uint8_t rnd[10];
    randombytes_buf(rnd, sizeof rnd);
    uint16_t seed = (uint16_t)(((rnd[8] << 8) | rnd[9]) & 0x7FF);

    uint64_t now = now_ms() & 0xFFFFFFFFFFFFull;
    pthread_mutex_lock(&g_v7_lock);
    if (now > g_v7_ms) {
        g_v7_ms = now;
        g_v7_ctr = seed;
    } else if (g_v7_ctr < 0xFFF) {
        g_v7_ctr++; /* same ms, or the clock stepped back: stay on our own time */
    } else {
        g_v7_ms++;
        g_v7_ctr = seed;
    }
    uint64_t ms = g_v7_ms;
    uint16_t ctr = g_v7_ctr;
    pthread_mutex_unlock(&g_v7_lock);

    for (int i = 0; i < 6; i++)
        out->b[i] = (uint8_t)(ms >> (40 - 8 * i));
    out->b[6] = (uint8_t)(0x70 | (ctr >> 8)); /* version 7 */
    out->b[7] = (uint8_t)(ctr & 0xFF);
    out->b[8] = (uint8_t)(0x80 | (rnd[0] & 0x3F)); /* variant 10 */
    memcpy(&out->b[9], &rnd[1], 7);
}

/* A hex digit's value plus one; zero for anything else. One load a digit. */
static const uint8_t hex_plus_one[256] = {
    ['0'] = 1,  ['1'] = 2,  ['2'] = 3,  ['3'] = 4,  ['4'] = 5,  ['5'] = 6,  ['6'] = 7,  ['7'] = 8,
    ['8'] = 9,  ['9'] = 10, ['a'] = 11, ['b'] = 12, ['c'] = 13, ['d'] = 14, ['e'] = 15, ['f'] = 16,
    ['A'] = 11, ['B'] = 12, ['C'] = 13, ['D'] = 14, ['E'] = 15, ['F'] = 16};

/* where each byte's two digits start in the text form */
static const uint8_t byte_at[16] = {0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34};

bool cms_uuid_parse(const char *s, size_t len, cms_uuid *out)
{
    if (s == NULL || len != CMS_UUID_STRLEN || s[8] != '-' || s[13] != '-' || s[18] != '-' ||
        s[23] != '-')
        return false;
    const unsigned char *p = (const unsigned char *)s;
    cms_uuid u;
    unsigned bad = 0;
    for (size_t i = 0; i < 16; i++) {
        unsigned hi = hex_plus_one[p[byte_at[i]]], lo = hex_plus_one[p[byte_at[i] + 1]];
        bad |= (hi == 0) | (lo == 0);
        u.b[i] = (uint8_t)((hi - 1) << 4 | ((lo - 1) & 0xF));
    }
    if (bad)
        return false;
    *out = u;
    return true;
}

void cms_uuid_format(const cms_uuid *u, char out[CMS_UUID_STRLEN + 1])
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    for (size_t i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out[o++] = '-';
        out[o++] = hex[u->b[i] >> 4];
        out[o++] = hex[u->b[i] & 0xF];
    }
    out[o] = '\0';
}

int cms_uuid_compare(const cms_uuid *a, const cms_uuid *b)
{
    return memcmp(a->b, b->b, sizeof a->b);
}

bool cms_uuid_is_nil(const cms_uuid *u)
{
    static const cms_uuid nil;
    return memcmp(u->b, nil.b, sizeof nil.b) == 0;
}

uint64_t cms_uuid_v7_ms(const cms_uuid *u)
{
    uint64_t ms = 0;
    for (int i = 0; i < 6; i++)
        ms = ms << 8 | u->b[i];
    return ms;
}

int cms_uuid_version(const cms_uuid *u)
{
    return u->b[6] >> 4;
}
