/* API key generation, parsing, hashing and verification; see apikey.h.
 *
 * Encoders are libsodium's. Its decoders accept more than the key format
 * allows (sodium_hex2bin takes uppercase; the position checks are ours), so
 * the format is checked character by character before decoding, and every
 * decode must consume its whole input. */
#include "apikey.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"

#define PREFIX "cms_"
#define PREFIX_LEN (sizeof PREFIX - 1)
#define ID_HEX_LEN 32
#define SECRET_B64_LEN 43
#define SEP_AT (PREFIX_LEN + ID_HEX_LEN)
#define SECRET_AT (SEP_AT + 1)
#define HASH_PREFIX "b2:"
#define HASH_PREFIX_LEN (sizeof HASH_PREFIX - 1)
#define HASH_BYTES 32
#define B64_VARIANT sodium_base64_VARIANT_URLSAFE_NO_PADDING

_Static_assert(SECRET_AT + SECRET_B64_LEN == CMS_APIKEY_LEN, "key layout");
_Static_assert(HASH_PREFIX_LEN + 2 * HASH_BYTES == CMS_APIKEY_HASH_LEN, "hash layout");
_Static_assert(sodium_base64_ENCODED_LEN(CMS_APIKEY_SECRET_BYTES, B64_VARIANT) ==
                   SECRET_B64_LEN + 1,
               "secret encoding length");
_Static_assert(HASH_BYTES == crypto_generichash_BYTES, "BLAKE2b-256");
_Static_assert(CMS_APIKEY_SERVER_KEY_BYTES >= crypto_generichash_KEYBYTES_MIN &&
                   CMS_APIKEY_SERVER_KEY_BYTES <= crypto_generichash_KEYBYTES_MAX,
               "server key size");

static pthread_once_t g_sodium_once = PTHREAD_ONCE_INIT;
static int g_sodium_rc = -1;

static void sodium_setup(void)
{
    g_sodium_rc = sodium_init();
    if (g_sodium_rc < 0)
        cms_log_error("sodium_init failed", NULL);
}

bool cms_sodium_ready(void)
{
    pthread_once(&g_sodium_once, sodium_setup);
    return g_sodium_rc >= 0;
}

static bool is_lower_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

static bool is_hex(char c)
{
    return is_lower_hex(c) || (c >= 'A' && c <= 'F');
}

static bool is_b64url(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_';
}

/* Decodes exactly n hex chars into exactly n/2 bytes; the caller has checked
 * the alphabet. */
static bool hex_decode(const char *hex, size_t n, uint8_t *out)
{
    size_t got = 0;
    const char *end = NULL;
    if (sodium_hex2bin(out, n / 2, hex, n, NULL, &got, &end) != 0)
        return false;
    return got == n / 2 && end == hex + n;
}

int cms_apikey_generate(const cms_uuid *id, char out[CMS_APIKEY_LEN + 1],
                        uint8_t secret[CMS_APIKEY_SECRET_BYTES])
{
    if (!cms_sodium_ready())
        return -1;
    randombytes_buf(secret, CMS_APIKEY_SECRET_BYTES);
    memcpy(out, PREFIX, PREFIX_LEN);
    /* bin2hex writes a NUL after the digits; the separator overwrites it. */
    sodium_bin2hex(out + PREFIX_LEN, ID_HEX_LEN + 1, id->b, sizeof id->b);
    out[SEP_AT] = '_';
    sodium_bin2base64(out + SECRET_AT, SECRET_B64_LEN + 1, secret, CMS_APIKEY_SECRET_BYTES,
                      B64_VARIANT);
    return 0;
}

bool cms_apikey_parse(const char *key, size_t len, cms_uuid *id,
                      uint8_t secret[CMS_APIKEY_SECRET_BYTES])
{
    bool ok = false;
    cms_uuid u;
    uint8_t s[CMS_APIKEY_SECRET_BYTES];
    size_t got = 0;
    const char *end = NULL;

    if (key == NULL || len != CMS_APIKEY_LEN || !cms_sodium_ready())
        goto out;
    if (memcmp(key, PREFIX, PREFIX_LEN) != 0 || key[SEP_AT] != '_')
        goto out;
    for (size_t i = PREFIX_LEN; i < SEP_AT; i++)
        if (!is_lower_hex(key[i]))
            goto out;
    for (size_t i = SECRET_AT; i < CMS_APIKEY_LEN; i++)
        if (!is_b64url(key[i]))
            goto out;
    if (!hex_decode(key + PREFIX_LEN, ID_HEX_LEN, u.b))
        goto out;
    /* libsodium also rejects non-zero spare bits in the last character, so
     * each secret has exactly one accepted spelling. */
    if (sodium_base642bin(s, sizeof s, key + SECRET_AT, SECRET_B64_LEN, NULL, &got, &end,
                          B64_VARIANT) != 0 ||
        got != sizeof s || end != key + CMS_APIKEY_LEN)
        goto out;
    *id = u;
    memcpy(secret, s, sizeof s);
    ok = true;
out:
    sodium_memzero(s, sizeof s);
    return ok;
}

static void raw_hash(const uint8_t server_key[CMS_APIKEY_SERVER_KEY_BYTES],
                     const uint8_t secret[CMS_APIKEY_SECRET_BYTES], uint8_t out[HASH_BYTES])
{
    /* Cannot fail with these sizes (checked above at compile time). */
    (void)crypto_generichash(out, HASH_BYTES, secret, CMS_APIKEY_SECRET_BYTES, server_key,
                             CMS_APIKEY_SERVER_KEY_BYTES);
}

void cms_apikey_hash(const uint8_t server_key[CMS_APIKEY_SERVER_KEY_BYTES],
                     const uint8_t secret[CMS_APIKEY_SECRET_BYTES],
                     char out[CMS_APIKEY_HASH_LEN + 1])
{
    uint8_t h[HASH_BYTES];
    (void)cms_sodium_ready(); /* selects the fastest BLAKE2b; without it the portable one runs */
    raw_hash(server_key, secret, h);
    memcpy(out, HASH_PREFIX, HASH_PREFIX_LEN);
    sodium_bin2hex(out + HASH_PREFIX_LEN, 2 * HASH_BYTES + 1, h, sizeof h);
    sodium_memzero(h, sizeof h);
}

bool cms_apikey_verify(const uint8_t server_key[CMS_APIKEY_SERVER_KEY_BYTES],
                       const uint8_t secret[CMS_APIKEY_SECRET_BYTES], const char *stored)
{
    bool ok = false;
    uint8_t want[HASH_BYTES];
    uint8_t have[HASH_BYTES];

    /* Only the stored value's shape decides the early exits; the secret
     * reaches nothing but the hash and the constant-time compare. */
    if (stored == NULL || strnlen(stored, CMS_APIKEY_HASH_LEN + 1) != CMS_APIKEY_HASH_LEN)
        goto out;
    if (memcmp(stored, HASH_PREFIX, HASH_PREFIX_LEN) != 0)
        goto out;
    for (size_t i = HASH_PREFIX_LEN; i < CMS_APIKEY_HASH_LEN; i++)
        if (!is_lower_hex(stored[i]))
            goto out;
    if (!cms_sodium_ready() || !hex_decode(stored + HASH_PREFIX_LEN, 2 * HASH_BYTES, want))
        goto out;
    raw_hash(server_key, secret, have);
    ok = sodium_memcmp(want, have, HASH_BYTES) == 0;
out:
    sodium_memzero(want, sizeof want);
    sodium_memzero(have, sizeof have);
    return ok;
}

bool cms_apikey_server_key_parse(const char *text, uint8_t out[CMS_APIKEY_SERVER_KEY_BYTES])
{
    bool ok = false;
    uint8_t k[CMS_APIKEY_SERVER_KEY_BYTES];
    enum { N = 2 * CMS_APIKEY_SERVER_KEY_BYTES };

    if (text == NULL || strnlen(text, N + 1) != N || !cms_sodium_ready())
        goto out;
    for (size_t i = 0; i < N; i++)
        if (!is_hex(text[i]))
            goto out;
    if (!hex_decode(text, N, k))
        goto out;
    memcpy(out, k, sizeof k);
    ok = true;
out:
    sodium_memzero(k, sizeof k);
    return ok;
}

cms_apikey_file_err cms_apikey_read_private_file(const char *path, char *buf, size_t cap,
                                                 size_t *len, char *why, size_t whylen)
{
    cms_apikey_file_err err = CMS_APIKEY_FILE_EREAD;
    struct stat st;
    size_t got = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        err = errno == ENOENT ? CMS_APIKEY_FILE_MISSING : CMS_APIKEY_FILE_EREAD;
        snprintf(why, whylen, "%s: cannot open: %s", path, strerror(errno));
        goto out;
    }
    /* the mode of the file actually opened, not of whatever the path names later */
    if (fstat(fd, &st) != 0) {
        snprintf(why, whylen, "%s: cannot stat: %s", path, strerror(errno));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(why, whylen, "%s is not a regular file", path);
        goto out;
    }
    /* As PostgreSQL takes its server key: private to its owner, or owned
     * by root and readable by its group alone (a Kubernetes secret volume
     * with defaultMode 0440 and the pod's fsGroup) */
    if ((st.st_mode & 0077) != 0 && !(st.st_uid == 0 && (st.st_mode & 0037) == 0)) {
        err = CMS_APIKEY_FILE_UNSAFE;
        snprintf(why, whylen,
                 "%s may be read or written by other users (mode %03o), so it is refused: "
                 "chmod 600 %s (or, owned by root, 640 for its group)",
                 path, (unsigned)(st.st_mode & 0777), path);
        goto out;
    }
    /* bounded by cap, not by st_size: the file may grow meanwhile */
    for (;;) {
        ssize_t n = read(fd, buf + got, cap + 1 - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            snprintf(why, whylen, "%s: cannot read: %s", path, strerror(errno));
            goto out;
        }
        if (n == 0)
            break;
        got += (size_t)n;
        if (got > cap) {
            snprintf(why, whylen, "%s is larger than %zu bytes", path, cap);
            goto out;
        }
    }
    buf[got] = '\0';
    *len = got;
    err = CMS_APIKEY_FILE_OK;
out:
    if (err != CMS_APIKEY_FILE_OK)
        sodium_memzero(buf, got < cap + 1 ? got : cap + 1);
    if (fd >= 0)
        close(fd);
    return err;
}

bool cms_apikey_server_key_load(const char *path, uint8_t out[CMS_APIKEY_SERVER_KEY_BYTES],
                                char *why, size_t whylen)
{
    bool ok = false;
    char text[2 * CMS_APIKEY_SERVER_KEY_BYTES + 2];
    size_t n = 0;

    if (path == NULL || *path == '\0') {
        snprintf(why, whylen, "no key file given (CMS_IDENTITY_KEY_FILE)");
        goto out;
    }
    if (cms_apikey_read_private_file(path, text, sizeof text - 1, &n, why, whylen) !=
        CMS_APIKEY_FILE_OK)
        goto out;
    if (n > 0 && text[n - 1] == '\n')
        text[--n] = '\0';
    if (!cms_apikey_server_key_parse(text, out)) {
        snprintf(why, whylen,
                 "%s must hold exactly 64 hex digits (e.g. from "
                 "`head -c32 /dev/urandom | od -An -tx1 | tr -d ' \\n'`)",
                 path);
        goto out;
    }
    ok = true;
out:
    sodium_memzero(text, sizeof text);
    return ok;
}

void cms_apikey_wipe(void *p, size_t len)
{
    if (p != NULL)
        sodium_memzero(p, len);
}
