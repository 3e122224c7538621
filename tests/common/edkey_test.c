/* Ed25519 signing key files (common/edkey.h): what save
 * writes load reads back; an existing file is never replaced; files open
 * to group or others, malformed files and keys whose public half is not
 * their seed's are refused with a reason that names the file. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "edkey.h"

static char g_dir[64];
static char g_path[128];
static char g_why[512];

static void setup(void)
{
    cr_assert_geq(sodium_init(), 0);
    snprintf(g_dir, sizeof g_dir, "/tmp/cmsctl-ckeys-XXXXXX");
    cr_assert_not_null(mkdtemp(g_dir));
    snprintf(g_path, sizeof g_path, "%s/key", g_dir);
    memset(g_why, 0, sizeof g_why);
}

static void teardown(void)
{
    unlink(g_path);
    rmdir(g_dir);
}

TestSuite(contract_keys, .init = setup, .fini = teardown);

static void write_file(const char *text, mode_t mode)
{
    int fd = open(g_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    cr_assert_geq(fd, 0);
    size_t n = strlen(text);
    cr_assert_eq(write(fd, text, n), (ssize_t)n);
    close(fd);
    cr_assert_eq(chmod(g_path, mode), 0);
}

/* The file's line for sk, without the newline. */
static void key_line(const uint8_t sk[64], char out[CMS_EDKEY_B64 + 1])
{
    sodium_bin2base64(out, CMS_EDKEY_B64 + 1, sk, 64, sodium_base64_VARIANT_ORIGINAL);
}

static void assert_refused(const char *what)
{
    uint8_t sk[64];
    memset(sk, 0x5a, sizeof sk);
    cr_assert_not(cms_edkey_load(g_path, sk, g_why, sizeof g_why), "%s", what);
    cr_assert_not_null(strstr(g_why, g_path), "%s: %s", what, g_why);
    for (size_t i = 0; i < sizeof sk; i++)
        cr_assert_eq(sk[i], 0x5a, "%s: sk was touched", what);
}

Test(contract_keys, save_then_load_round_trip)
{
    uint8_t pk[32], sk[64], got[64];
    cr_assert_eq(crypto_sign_keypair(pk, sk), 0);
    cr_assert(cms_edkey_save(g_path, sk, g_why, sizeof g_why), "%s", g_why);
    struct stat st;
    cr_assert_eq(stat(g_path, &st), 0);
    cr_assert_eq(st.st_mode & 0777, 0600, "mode %o", (unsigned)(st.st_mode & 0777));
    cr_assert_eq(st.st_size, CMS_EDKEY_B64 + 1);
    cr_assert(cms_edkey_load(g_path, got, g_why, sizeof g_why), "%s", g_why);
    cr_assert_eq(memcmp(sk, got, sizeof sk), 0);

    char pub[CMS_EDKEY_PUBLIC_B64 + 1], want[CMS_EDKEY_PUBLIC_B64 + 1];
    cms_edkey_public_b64(sk, pub);
    sodium_bin2base64(want, sizeof want, pk, sizeof pk, sodium_base64_VARIANT_ORIGINAL);
    cr_assert_str_eq(pub, want);
}

Test(contract_keys, save_never_replaces_a_file)
{
    uint8_t pk[32], sk[64];
    cr_assert_eq(crypto_sign_keypair(pk, sk), 0);
    write_file("the only copy\n", 0600);
    cr_assert_not(cms_edkey_save(g_path, sk, g_why, sizeof g_why));
    cr_assert_not_null(strstr(g_why, "never overwritten"), "%s", g_why);
    char buf[64] = {0};
    FILE *f = fopen(g_path, "r");
    cr_assert_not_null(f);
    cr_assert_not_null(fgets(buf, sizeof buf, f));
    fclose(f);
    cr_assert_str_eq(buf, "the only copy\n");

    /* a symlink is not followed to write the key elsewhere */
    char link[160];
    snprintf(link, sizeof link, "%s/link", g_dir);
    cr_assert_eq(symlink("elsewhere", link), 0);
    cr_assert_not(cms_edkey_save(link, sk, g_why, sizeof g_why));
    char elsewhere[160];
    snprintf(elsewhere, sizeof elsewhere, "%s/elsewhere", g_dir);
    cr_assert_neq(access(elsewhere, F_OK), 0);
    unlink(link);
}

Test(contract_keys, save_into_a_missing_directory_fails)
{
    uint8_t pk[32], sk[64];
    cr_assert_eq(crypto_sign_keypair(pk, sk), 0);
    char path[160];
    snprintf(path, sizeof path, "%s/no/such/dir/key", g_dir);
    cr_assert_not(cms_edkey_save(path, sk, g_why, sizeof g_why));
    cr_assert_not_null(strstr(g_why, "cannot create"), "%s", g_why);
}

Test(contract_keys, load_without_a_final_newline)
{
    uint8_t pk[32], sk[64], got[64];
    char line[CMS_EDKEY_B64 + 1];
    cr_assert_eq(crypto_sign_keypair(pk, sk), 0);
    key_line(sk, line);
    write_file(line, 0400);
    cr_assert(cms_edkey_load(g_path, got, g_why, sizeof g_why), "%s", g_why);
    cr_assert_eq(memcmp(sk, got, sizeof sk), 0);
}

Test(contract_keys, load_refuses_a_file_others_may_read_or_write)
{
    uint8_t pk[32], sk[64];
    char line[CMS_EDKEY_B64 + 1], text[CMS_EDKEY_B64 + 2];
    cr_assert_eq(crypto_sign_keypair(pk, sk), 0);
    key_line(sk, line);
    snprintf(text, sizeof text, "%s\n", line);
    const mode_t modes[] = {0660, 0604, 0620, 0602, 0644, 0666};
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++) {
        write_file(text, modes[i]);
        assert_refused("mode");
        cr_assert_not_null(strstr(g_why, "chmod 600"), "%s", g_why);
    }
}

Test(contract_keys, load_refuses_what_is_not_a_key)
{
    uint8_t pk[32], sk[64];
    char line[CMS_EDKEY_B64 + 1], text[512];
    cr_assert_eq(crypto_sign_keypair(pk, sk), 0);
    key_line(sk, line);

    write_file("", 0600);
    assert_refused("empty");
    snprintf(text, sizeof text, "%.87s\n", line);
    write_file(text, 0600);
    assert_refused("one character short");
    snprintf(text, sizeof text, "%s\n\n", line);
    write_file(text, 0600);
    assert_refused("a second newline");
    snprintf(text, sizeof text, "%s\nmore\n", line);
    write_file(text, 0600);
    assert_refused("a second line");
    snprintf(text, sizeof text, " %s\n", line);
    write_file(text, 0600);
    assert_refused("a leading space");
    snprintf(text, sizeof text, "%s", line);
    for (char *p = text; *p != '\0'; p++)
        *p = *p == '+' ? '-' : *p == '/' ? '_' : *p;
    if (strcmp(text, line) != 0) {
        write_file(text, 0600);
        assert_refused("base64url");
    }
    /* 63 bytes */
    sodium_bin2base64(text, sizeof text, sk, 63, sodium_base64_VARIANT_ORIGINAL);
    write_file(text, 0600);
    assert_refused("63 bytes");
    cr_assert_not_null(strstr(g_why, "keygen"), "%s", g_why);

    unlink(g_path);
    assert_refused("missing");
}

Test(contract_keys, load_refuses_a_public_half_that_is_not_the_seeds)
{
    uint8_t pk1[32], sk1[64], pk2[32], sk2[64], mixed[64];
    char line[CMS_EDKEY_B64 + 1];
    cr_assert_eq(crypto_sign_keypair(pk1, sk1), 0);
    cr_assert_eq(crypto_sign_keypair(pk2, sk2), 0);
    memcpy(mixed, sk1, 32);
    memcpy(mixed + 32, pk2, 32);
    key_line(mixed, line);
    write_file(line, 0600);
    assert_refused("mixed halves");
    cr_assert_not_null(strstr(g_why, "damaged"), "%s", g_why);
}
