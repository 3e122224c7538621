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

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

bool cms_uuid_parse(const char *s, size_t len, cms_uuid *out)
{
    if (s == NULL || len != CMS_UUID_STRLEN)
        return false;
    cms_uuid u;
    size_t n = 0;
    for (size_t i = 0; i < CMS_UUID_STRLEN; i++) {
        bool dash_here = (i == 8 || i == 13 || i == 18 || i == 23);
        if (dash_here) {
            if (s[i] != '-')
                return false;
            continue;
        }
        int hi = hexval(s[i]);
        int lo = hexval(s[i + 1]); /* every group has an even length: pairs never span a dash */
        if (hi < 0 || lo < 0)
            return false;
        u.b[n++] = (uint8_t)(hi << 4 | lo);
        i++;
    }
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
