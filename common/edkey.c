/* Contract signing key files; see contract_keys.h. */
#include "edkey.h"

#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "apikey.h"

#define SK_BYTES crypto_sign_SECRETKEYBYTES
#define PK_BYTES crypto_sign_PUBLICKEYBYTES
#define B64_VARIANT sodium_base64_VARIANT_ORIGINAL

_Static_assert(SK_BYTES == 64 && PK_BYTES == 32, "Ed25519 sizes");
_Static_assert(sodium_base64_ENCODED_LEN(SK_BYTES, B64_VARIANT) == CMS_EDKEY_B64 + 1,
               "secret key encoding length");
_Static_assert(sodium_base64_ENCODED_LEN(PK_BYTES, B64_VARIANT) == CMS_EDKEY_PUBLIC_B64 + 1,
               "public key encoding length");

/* Whether the public half of sk is the one its seed derives. */
static bool halves_agree(const uint8_t sk[SK_BYTES])
{
    uint8_t seed[crypto_sign_SEEDBYTES], pk[PK_BYTES], again[SK_BYTES];
    crypto_sign_ed25519_sk_to_seed(seed, sk);
    bool ok = crypto_sign_seed_keypair(pk, again, seed) == 0 &&
              sodium_memcmp(pk, sk + crypto_sign_SEEDBYTES, PK_BYTES) == 0;
    sodium_memzero(seed, sizeof seed);
    sodium_memzero(again, sizeof again);
    return ok;
}

bool cms_edkey_load(const char *path, uint8_t sk[64], char *why, size_t whylen)
{
    bool ok = false;
    /* the line, a newline, and one byte more to tell a longer file */
    char text[CMS_EDKEY_B64 + 2];
    uint8_t k[SK_BYTES];
    size_t n = 0, got = 0;
    const char *end = NULL;

    if (path == NULL || *path == '\0') {
        snprintf(why, whylen, "no key file given");
        goto out;
    }
    if (sodium_init() < 0) {
        snprintf(why, whylen, "libsodium failed to initialise");
        goto out;
    }
    if (cms_apikey_read_private_file(path, text, sizeof text - 1, &n, why, whylen) !=
        CMS_APIKEY_FILE_OK)
        goto out;
    if (n > 0 && text[n - 1] == '\n')
        text[--n] = '\0';
    if (n != CMS_EDKEY_B64 ||
        sodium_base642bin(k, sizeof k, text, n, NULL, &got, &end, B64_VARIANT) != 0 ||
        got != sizeof k || end != text + n) {
        snprintf(why, whylen,
                 "%s is not a contract signing key: want one line of %d base64 characters "
                 "(cmsctl contract keygen --out FILE makes one)",
                 path, CMS_EDKEY_B64);
        goto out;
    }
    if (!halves_agree(k)) {
        snprintf(why, whylen,
                 "%s is damaged: its public key is not the one its secret seed derives", path);
        goto out;
    }
    memcpy(sk, k, sizeof k);
    ok = true;
out:
    sodium_memzero(text, sizeof text);
    sodium_memzero(k, sizeof k);
    return ok;
}

/* Writes all of buf to fd. */
static bool write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t w = write(fd, buf, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return false;
        buf += w;
        len -= (size_t)w;
    }
    return true;
}

bool cms_edkey_save(const char *path, const uint8_t sk[64], char *why, size_t whylen)
{
    bool ok = false;
    bool created = false;
    char line[CMS_EDKEY_B64 + 2];
    int fd = -1;

    if (path == NULL || *path == '\0') {
        snprintf(why, whylen, "no key file given");
        goto out;
    }
    /* O_EXCL: never replace a key (it may be the only copy), and never
     * follow a symlink planted where the key is to go */
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        if (errno == EEXIST)
            snprintf(why, whylen, "%s exists: a key file is never overwritten; choose another path",
                     path);
        else
            snprintf(why, whylen, "%s: cannot create: %s", path, strerror(errno));
        goto out;
    }
    created = true;
    sodium_bin2base64(line, sizeof line, sk, SK_BYTES, B64_VARIANT);
    line[CMS_EDKEY_B64] = '\n';
    if (!write_all(fd, line, CMS_EDKEY_B64 + 1) || fsync(fd) != 0) {
        snprintf(why, whylen, "%s: cannot write: %s", path, strerror(errno));
        goto out;
    }
    int rc = close(fd);
    fd = -1;
    if (rc != 0) {
        snprintf(why, whylen, "%s: cannot write: %s", path, strerror(errno));
        goto out;
    }
    ok = true;
out:
    if (fd >= 0)
        close(fd);
    /* a partial key is no key: remove what this call created, nothing else */
    if (!ok && created)
        unlink(path);
    sodium_memzero(line, sizeof line);
    return ok;
}

void cms_edkey_public_b64(const uint8_t sk[64], char out[CMS_EDKEY_PUBLIC_B64 + 1])
{
    uint8_t pk[PK_BYTES];
    crypto_sign_ed25519_sk_to_pk(pk, sk);
    sodium_bin2base64(out, CMS_EDKEY_PUBLIC_B64 + 1, pk, sizeof pk, B64_VARIANT);
}
