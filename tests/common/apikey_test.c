/* apikey: key format round trip and strict parsing, keyed hash properties,
 * constant-time verification outcomes, server key parsing. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "apikey.h"

static const uint8_t SK1[CMS_APIKEY_SERVER_KEY_BYTES] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};
static const uint8_t SK2[CMS_APIKEY_SERVER_KEY_BYTES] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12};

/* A fresh valid key in out (NUL-terminated), with its id and secret. */
static void make_key(char out[CMS_APIKEY_LEN + 1], cms_uuid *id,
                     uint8_t secret[CMS_APIKEY_SECRET_BYTES])
{
    cms_uuid_v7(id);
    cr_assert_eq(cms_apikey_generate(id, out, secret), 0);
}

static bool parses(const char *key, size_t len)
{
    cms_uuid id;
    uint8_t s[CMS_APIKEY_SECRET_BYTES];
    return cms_apikey_parse(key, len, &id, s);
}

Test(apikey, generate_parse_round_trip)
{
    for (int i = 0; i < 50; i++) {
        char key[CMS_APIKEY_LEN + 1];
        cms_uuid id, pid;
        uint8_t secret[CMS_APIKEY_SECRET_BYTES], psecret[CMS_APIKEY_SECRET_BYTES];
        make_key(key, &id, secret);
        cr_assert(cms_apikey_parse(key, strlen(key), &pid, psecret), "%s", key);
        cr_assert_eq(cms_uuid_compare(&id, &pid), 0);
        cr_assert_eq(memcmp(secret, psecret, sizeof secret), 0);
    }
}

Test(apikey, generated_shape_and_id_text)
{
    char key[CMS_APIKEY_LEN + 1];
    cms_uuid id;
    uint8_t secret[CMS_APIKEY_SECRET_BYTES];
    make_key(key, &id, secret);
    cr_assert_eq(strlen(key), CMS_APIKEY_LEN);
    cr_assert_eq(strncmp(key, "cms_", 4), 0);
    cr_assert_eq(key[36], '_');
    /* the id part is the canonical UUID text without dashes */
    char canon[CMS_UUID_STRLEN + 1], nodash[33];
    cms_uuid_format(&id, canon);
    size_t n = 0;
    for (size_t i = 0; i < CMS_UUID_STRLEN; i++)
        if (canon[i] != '-')
            nodash[n++] = canon[i];
    nodash[n] = '\0';
    cr_assert_eq(strncmp(key + 4, nodash, 32), 0, "%s vs %s", key, nodash);
    for (size_t i = 37; i < CMS_APIKEY_LEN; i++)
        cr_assert(strchr("+/=", key[i]) == NULL);
}

static int cmp_keys(const void *a, const void *b)
{
    return memcmp(a, b, CMS_APIKEY_LEN + 1);
}

Test(apikey, thousand_keys_distinct_for_one_id)
{
    enum { N = 1000 };
    char(*keys)[CMS_APIKEY_LEN + 1] = malloc(N * sizeof *keys);
    cr_assert(keys);
    cms_uuid id;
    cms_uuid_v7(&id); /* same id: only the secrets can make them differ */
    for (size_t i = 0; i < N; i++) {
        uint8_t s[CMS_APIKEY_SECRET_BYTES];
        cr_assert_eq(cms_apikey_generate(&id, keys[i], s), 0);
        cr_assert_eq(strlen(keys[i]), CMS_APIKEY_LEN);
    }
    qsort(keys, N, sizeof *keys, cmp_keys);
    for (size_t i = 1; i < N; i++)
        cr_assert_neq(memcmp(keys[i - 1], keys[i], CMS_APIKEY_LEN), 0, "duplicate at %zu", i);
    free(keys);
}

/* Takes a valid key, applies one mutation, expects rejection. */
Test(apikey, parse_rejects_malformed)
{
    char good[CMS_APIKEY_LEN + 1];
    cms_uuid id;
    uint8_t secret[CMS_APIKEY_SECRET_BYTES];
    make_key(good, &id, secret);
    cr_assert(parses(good, CMS_APIKEY_LEN));

    char k[CMS_APIKEY_LEN + 16];
#define RESET() memcpy(k, good, CMS_APIKEY_LEN + 1)

    RESET();
    k[0] = 'C';
    cr_assert_not(parses(k, CMS_APIKEY_LEN), "uppercase prefix");
    RESET();
    memcpy(k, "cmx_", 4);
    cr_assert_not(parses(k, CMS_APIKEY_LEN), "wrong prefix");
    RESET();
    k[3] = '-';
    cr_assert_not(parses(k, CMS_APIKEY_LEN), "prefix separator");

    RESET();
    k[4] = 'A';
    cr_assert_not(parses(k, CMS_APIKEY_LEN), "uppercase hex in id");
    RESET();
    k[20] = 'g';
    cr_assert_not(parses(k, CMS_APIKEY_LEN), "non-hex id");
    RESET();
    k[12] = '-';
    cr_assert_not(parses(k, CMS_APIKEY_LEN), "dash in id");

    RESET();
    k[36] = 'a';
    cr_assert_not(parses(k, CMS_APIKEY_LEN), "missing underscore");
    /* extra underscore: shifts the secret, so one char too many ('_' is
     * itself base64url, so the same text cut back to 80 can be a valid key) */
    memcpy(k, good, 37);
    k[37] = '_';
    memcpy(k + 38, good + 37, CMS_APIKEY_LEN - 37 + 1);
    cr_assert_not(parses(k, CMS_APIKEY_LEN + 1), "extra underscore");

    RESET();
    cr_assert_not(parses(k, CMS_APIKEY_LEN - 1), "short secret");
    memcpy(k, good, CMS_APIKEY_LEN);
    k[CMS_APIKEY_LEN] = 'A';
    cr_assert_not(parses(k, CMS_APIKEY_LEN + 1), "long secret");
    memcpy(k, good, CMS_APIKEY_LEN);
    memcpy(k + CMS_APIKEY_LEN, "AAAA", 4);
    cr_assert_not(parses(k, CMS_APIKEY_LEN + 4), "four more secret chars (another whole block)");
    memcpy(k, good, CMS_APIKEY_LEN);
    k[CMS_APIKEY_LEN] = '=';
    cr_assert_not(parses(k, CMS_APIKEY_LEN + 1), "padding");
    memcpy(k, good, CMS_APIKEY_LEN);
    k[CMS_APIKEY_LEN] = '\n';
    cr_assert_not(parses(k, CMS_APIKEY_LEN + 1), "trailing newline");

    const char bad[] = {'+', '/', '=', ' ', '.', '\0'};
    for (size_t b = 0; b < sizeof bad; b++) {
        for (size_t at = 37; at < CMS_APIKEY_LEN; at += 21) {
            RESET();
            k[at] = bad[b];
            cr_assert_not(parses(k, CMS_APIKEY_LEN), "0x%02x at %zu", bad[b], at);
        }
        RESET();
        k[CMS_APIKEY_LEN - 1] = bad[b];
        cr_assert_not(parses(k, CMS_APIKEY_LEN), "0x%02x last", bad[b]);
    }

    /* embedded NUL: len covers the bytes after it */
    RESET();
    k[10] = '\0';
    cr_assert_not(parses(k, CMS_APIKEY_LEN), "NUL in id");
    RESET();
    k[50] = '\0';
    cr_assert_not(parses(k, CMS_APIKEY_LEN), "NUL in secret");

    cr_assert_not(parses("", 0), "empty");
    cr_assert_not(parses(NULL, 0), "NULL");
    cr_assert_not(parses("cms_", 4), "prefix only");
#undef RESET
}

/* 32 bytes = 256 bits in 43 chars = 258 bits: the last char's 2 low bits are
 * spare. A key with them set decodes to the same secret; only the canonical
 * spelling is accepted. */
Test(apikey, parse_rejects_noncanonical_last_char)
{
    char k[CMS_APIKEY_LEN + 1];
    cms_uuid id;
    uint8_t secret[CMS_APIKEY_SECRET_BYTES];
    make_key(k, &id, secret);
    static const char alpha[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    int v = (int)(strchr(alpha, k[CMS_APIKEY_LEN - 1]) - alpha);
    cr_assert_eq(v & 3, 0, "generated key is canonical");
    k[CMS_APIKEY_LEN - 1] = alpha[v | 1];
    cr_assert_not(parses(k, CMS_APIKEY_LEN));
}

Test(apikey, parse_failure_leaves_outputs_untouched)
{
    char k[CMS_APIKEY_LEN + 1];
    cms_uuid id;
    uint8_t secret[CMS_APIKEY_SECRET_BYTES];
    make_key(k, &id, secret);
    k[CMS_APIKEY_LEN - 2] = '=';
    cms_uuid out_id;
    uint8_t out_s[CMS_APIKEY_SECRET_BYTES];
    memset(&out_id, 0xAB, sizeof out_id);
    memset(out_s, 0xCD, sizeof out_s);
    cr_assert_not(cms_apikey_parse(k, CMS_APIKEY_LEN, &out_id, out_s));
    for (size_t i = 0; i < sizeof out_id.b; i++)
        cr_assert_eq(out_id.b[i], 0xAB);
    for (size_t i = 0; i < sizeof out_s; i++)
        cr_assert_eq(out_s[i], 0xCD);
}

Test(apikey, hash_properties)
{
    uint8_t s1[CMS_APIKEY_SECRET_BYTES], s2[CMS_APIKEY_SECRET_BYTES];
    randombytes_buf(s1, sizeof s1);
    memcpy(s2, s1, sizeof s2);
    s2[31] ^= 1;
    char h1[CMS_APIKEY_HASH_LEN + 1], h1b[CMS_APIKEY_HASH_LEN + 1], h2[CMS_APIKEY_HASH_LEN + 1],
        h3[CMS_APIKEY_HASH_LEN + 1];
    cms_apikey_hash(SK1, s1, h1);
    cms_apikey_hash(SK1, s1, h1b);
    cms_apikey_hash(SK1, s2, h2);
    cms_apikey_hash(SK2, s1, h3);
    cr_assert_str_eq(h1, h1b, "deterministic");
    cr_assert_eq(strlen(h1), CMS_APIKEY_HASH_LEN);
    cr_assert_eq(strncmp(h1, "b2:", 3), 0);
    for (size_t i = 3; i < CMS_APIKEY_HASH_LEN; i++)
        cr_assert(strchr("0123456789abcdef", h1[i]) != NULL && h1[i] != '\0');
    cr_assert_str_neq(h1, h2, "another secret");
    cr_assert_str_neq(h1, h3, "another server key");

    /* keyed BLAKE2b-256, independently computed */
    uint8_t raw[32];
    cr_assert_eq(crypto_generichash(raw, sizeof raw, s1, sizeof s1, SK1, sizeof SK1), 0);
    char hex[65];
    sodium_bin2hex(hex, sizeof hex, raw, sizeof raw);
    cr_assert_str_eq(h1 + 3, hex);

    /* the secret in clear, in either encoding, is nowhere in the hash */
    char s_hex[65], s_b64[64];
    sodium_bin2hex(s_hex, sizeof s_hex, s1, sizeof s1);
    sodium_bin2base64(s_b64, sizeof s_b64, s1, sizeof s1, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    cr_assert_null(strstr(h1, s_hex));
    cr_assert_null(strstr(h1, s_b64));
    /* nor any 8-char run of it */
    for (size_t i = 0; i + 8 <= 64; i++) {
        char run[9];
        memcpy(run, s_hex + i, 8);
        run[8] = '\0';
        cr_assert_null(strstr(h1, run), "hex run at %zu", i);
    }
}

Test(apikey, verify_outcomes)
{
    char key[CMS_APIKEY_LEN + 1];
    cms_uuid id, pid;
    uint8_t secret[CMS_APIKEY_SECRET_BYTES], presented[CMS_APIKEY_SECRET_BYTES];
    make_key(key, &id, secret);
    char stored[CMS_APIKEY_HASH_LEN + 1];
    cms_apikey_hash(SK1, secret, stored);

    cr_assert(cms_apikey_parse(key, strlen(key), &pid, presented));
    cr_assert(cms_apikey_verify(SK1, presented, stored), "the right secret");
    cr_assert_not(cms_apikey_verify(SK2, presented, stored), "another server key");

    for (size_t bit = 0; bit < 8 * CMS_APIKEY_SECRET_BYTES; bit += 37) {
        uint8_t flipped[CMS_APIKEY_SECRET_BYTES];
        memcpy(flipped, presented, sizeof flipped);
        flipped[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        cr_assert_not(cms_apikey_verify(SK1, flipped, stored), "bit %zu flipped", bit);
    }

    char bad[CMS_APIKEY_HASH_LEN + 8];
    memcpy(bad, stored, sizeof stored);
    memcpy(bad, "b3:", 3);
    cr_assert_not(cms_apikey_verify(SK1, presented, bad), "wrong prefix");
    memcpy(bad, stored, sizeof stored);
    bad[CMS_APIKEY_HASH_LEN - 1] = '\0';
    cr_assert_not(cms_apikey_verify(SK1, presented, bad), "short");
    memcpy(bad, stored, sizeof stored);
    bad[CMS_APIKEY_HASH_LEN] = '0';
    bad[CMS_APIKEY_HASH_LEN + 1] = '\0';
    cr_assert_not(cms_apikey_verify(SK1, presented, bad), "long");
    memcpy(bad, stored, sizeof stored);
    bad[10] = 'z';
    cr_assert_not(cms_apikey_verify(SK1, presented, bad), "non-hex");
    /* uppercase of the right digest: the stored form is lowercase only */
    memcpy(bad, stored, sizeof stored);
    bool had_letter = false;
    for (size_t i = 3; i < CMS_APIKEY_HASH_LEN; i++)
        if (bad[i] >= 'a' && bad[i] <= 'f') {
            bad[i] = (char)(bad[i] - 'a' + 'A');
            had_letter = true;
        }
    if (had_letter)
        cr_assert_not(cms_apikey_verify(SK1, presented, bad), "uppercase");
    cr_assert_not(cms_apikey_verify(SK1, presented, ""), "empty");
    cr_assert_not(cms_apikey_verify(SK1, presented, NULL), "NULL");

    cms_apikey_wipe(presented, sizeof presented);
    for (size_t i = 0; i < sizeof presented; i++)
        cr_assert_eq(presented[i], 0);
    cms_apikey_wipe(NULL, 0);
}

Test(apikey, server_key_parse)
{
    const char *hex64 = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1F";
    uint8_t k[CMS_APIKEY_SERVER_KEY_BYTES];
    cr_assert(cms_apikey_server_key_parse(hex64, k));
    for (size_t i = 0; i < sizeof k; i++)
        cr_assert_eq(k[i], i);

    uint8_t untouched[CMS_APIKEY_SERVER_KEY_BYTES];
    memset(untouched, 0xEE, sizeof untouched);
    char t[80];
    memcpy(t, hex64, 63);
    t[63] = '\0';
    cr_assert_not(cms_apikey_server_key_parse(t, untouched), "63");
    memcpy(t, hex64, 64);
    t[64] = '0';
    t[65] = '\0';
    cr_assert_not(cms_apikey_server_key_parse(t, untouched), "65");
    memcpy(t, hex64, 65);
    t[5] = 'x';
    cr_assert_not(cms_apikey_server_key_parse(t, untouched), "non-hex");
    memcpy(t, hex64, 65);
    t[0] = ' ';
    cr_assert_not(cms_apikey_server_key_parse(t, untouched), "leading space");
    memcpy(t, hex64, 65);
    t[63] = '\n';
    cr_assert_not(cms_apikey_server_key_parse(t, untouched), "newline");
    cr_assert_not(cms_apikey_server_key_parse("", untouched), "empty");
    cr_assert_not(cms_apikey_server_key_parse(NULL, untouched), "NULL");
    for (size_t i = 0; i < sizeof untouched; i++)
        cr_assert_eq(untouched[i], 0xEE);
}

/* A secret file's mode, its owner and the outcome of reading it. */
static cms_apikey_file_err read_with(mode_t mode, uid_t owner, bool *made)
{
    char path[] = "/tmp/cms-apikey-test.XXXXXX";
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    cr_assert(write(fd, "secret\n", 7) == 7);
    close(fd);
    *made = chown(path, owner, getgid()) == 0 && chmod(path, mode) == 0;
    char buf[64], why[256];
    size_t len = 0;
    cms_apikey_file_err e = cms_apikey_read_private_file(path, buf, 32, &len, why, sizeof why);
    if (e == CMS_APIKEY_FILE_OK)
        cr_expect_eq(len, 7);
    else
        cr_expect(strstr(why, path) == why, "the reason names the file: %s", why);
    unlink(path);
    return e;
}

Test(apikey, private_file_modes)
{
    bool made;
    uid_t me = geteuid();
    cr_expect_eq(read_with(0600, me, &made), CMS_APIKEY_FILE_OK);
    cr_expect_eq(read_with(0400, me, &made), CMS_APIKEY_FILE_OK);
    cr_expect_eq(read_with(0604, me, &made), CMS_APIKEY_FILE_UNSAFE);
    cr_expect_eq(read_with(0620, me, &made), CMS_APIKEY_FILE_UNSAFE);
    if (me != 0) {
        /* group-readable and owned by someone other than root: refused */
        cr_expect_eq(read_with(0640, me, &made), CMS_APIKEY_FILE_UNSAFE);
        return;
    }
    /* owned by root, readable by its group only (a Kubernetes secret volume) */
    cr_expect_eq(read_with(0440, 0, &made), CMS_APIKEY_FILE_OK);
    cr_expect_eq(read_with(0640, 0, &made), CMS_APIKEY_FILE_OK);
    cr_expect_eq(read_with(0460, 0, &made), CMS_APIKEY_FILE_UNSAFE, "group may write");
    cr_expect_eq(read_with(0444, 0, &made), CMS_APIKEY_FILE_UNSAFE, "others may read");
    cr_expect_eq(read_with(0450, 0, &made), CMS_APIKEY_FILE_UNSAFE, "group may execute");
    /* group-readable but owned by another user: refused */
    cr_expect_eq(read_with(0440, 1, &made), CMS_APIKEY_FILE_UNSAFE);
    cr_expect(made, "chown to another user works as root");
}
