/* cmsctl contract keygen and verify run as a program, with no server:
 * keygen writes a mode 600 key file that the key loader reads back and
 * never overwrites one; verify passes an export signed by both parties
 * (built here with contracts/canonical.h and a key pair per side), and
 * fails, with the reason, once one byte of the file is changed or a side
 * has not signed.
 *
 * The binary is the build's own (CMSCTL_BIN, set by tests/CMakeLists.txt),
 * so this runs under plain ctest as well as under tests/run. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <fcntl.h>
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "contracts/canonical.h"
#include "edkey.h"
#include "testproc.h"

#define WATCHDOG_MS 30000

#define CONTRACT "0190aa00-0000-7000-8000-0000000000a1"
#define PROVIDER "0190aa00-0000-7000-8000-00000000000b"
#define CONSUMER "0190aa00-0000-7000-8000-00000000000c"
#define PROVIDER_KEY "0190aa00-0000-7000-8000-0000000000f1"
#define CONSUMER_KEY "0190aa00-0000-7000-8000-0000000000f2"
#define TERMS "{\"price\": {\"amount\": 250, \"currency\": \"EUR\"}, \"region\": \"eu-west\"}"

static char g_dir[64];

static void setup(void)
{
    cr_assert_geq(sodium_init(), 0);
    snprintf(g_dir, sizeof g_dir, "/tmp/cmsctl-contract-XXXXXX");
    cr_assert_not_null(mkdtemp(g_dir));
}

/* The test's directory and the files in it (it makes no subdirectories). */
static void teardown(void)
{
    DIR *d = opendir(g_dir);
    struct dirent *e;
    char path[512];
    while (d != NULL && (e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(path, sizeof path, "%s/%s", g_dir, e->d_name);
        unlink(path);
    }
    if (d != NULL)
        closedir(d);
    rmdir(g_dir);
}

TestSuite(contract_offline, .init = setup, .fini = teardown);

static void path_in_dir(const char *name, char out[128])
{
    snprintf(out, 128, "%s/%s", g_dir, name);
}

/* `cmsctl args...`, run to its end. */
#define RUN(...) cms_test_run_bin(CMSCTL_BIN, (const char *const[]){__VA_ARGS__, NULL}, WATCHDOG_MS)
#define assert_exit CMS_TEST_ASSERT_EXIT

static void write_text(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    cr_assert_geq(fd, 0, "%s", path);
    size_t n = strlen(text);
    cr_assert_eq(write(fd, text, n), (ssize_t)n);
    close(fd);
}

static char *read_text(const char *path)
{
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "%s", path);
    char *buf = calloc(1, 1 << 16);
    cr_assert_not_null(buf);
    size_t n = fread(buf, 1, (1 << 16) - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

/* ------------------------------------------------------------------------ */
/* keygen */

Test(contract_offline, keygen_writes_a_private_key_and_prints_its_public_half)
{
    char key[128];
    path_in_dir("provider.key", key);
    cms_test_proc *p = RUN("contract", "keygen", "--out", key);
    assert_exit(p, 0);
    struct stat st;
    cr_assert_eq(stat(key, &st), 0);
    cr_assert_eq(st.st_mode & 0777, 0600, "mode %o", (unsigned)(st.st_mode & 0777));

    /* what the signing verbs will read, and the public key printed is its own */
    uint8_t sk[64];
    char why[512], pub[CMS_EDKEY_PUBLIC_B64 + 1], want[256];
    cr_assert(cms_edkey_load(key, sk, why, sizeof why), "%s", why);
    cms_edkey_public_b64(sk, pub);
    snprintf(want, sizeof want, "public_key: %s\nkey_file: %s\n", pub, key);
    cr_assert_str_eq(p->out, want);
    cms_test_proc_free(p);
}

Test(contract_offline, keygen_json)
{
    char key[128];
    path_in_dir("k.key", key);
    cms_test_proc *p = RUN("--json", "contract", "keygen", "--out", key);
    assert_exit(p, 0);
    json_t *o = json_loads(p->out, 0, NULL);
    cr_assert_not_null(o, "%s", p->out);
    cr_assert_eq(json_object_size(o), 2);
    cr_assert_str_eq(json_string_value(json_object_get(o, "key_file")), key);
    uint8_t sk[64];
    char why[512], pub[CMS_EDKEY_PUBLIC_B64 + 1];
    cr_assert(cms_edkey_load(key, sk, why, sizeof why), "%s", why);
    cms_edkey_public_b64(sk, pub);
    cr_assert_str_eq(json_string_value(json_object_get(o, "public_key")), pub);
    json_decref(o);
    cms_test_proc_free(p);
}

Test(contract_offline, keygen_refuses_to_overwrite)
{
    char key[128];
    path_in_dir("existing.key", key);
    write_text(key, "keep me\n");
    cms_test_proc *p = RUN("contract", "keygen", "--out", key);
    assert_exit(p, 1);
    cr_assert_not_null(strstr(p->err, "never overwritten"), "%s", p->err);
    cr_assert_str_eq(p->out, "");
    char *text = read_text(key);
    cr_assert_str_eq(text, "keep me\n");
    free(text);
    cms_test_proc_free(p);

    /* and a second keygen onto its own file */
    path_in_dir("twice.key", key);
    p = RUN("contract", "keygen", "--out", key);
    assert_exit(p, 0);
    cms_test_proc_free(p);
    text = read_text(key);
    p = RUN("contract", "keygen", "--out", key);
    assert_exit(p, 1);
    char *again = read_text(key);
    cr_assert_str_eq(again, text);
    free(again);
    free(text);
    cms_test_proc_free(p);
}

Test(contract_offline, keygen_needs_out)
{
    cms_test_proc *p = RUN("contract", "keygen");
    assert_exit(p, 2);
    cr_assert_not_null(strstr(p->err, "--out"), "%s", p->err);
    cms_test_proc_free(p);
}

Test(contract_offline, help_of_the_verb_and_its_sub_verbs)
{
    const char *const subs[] = {NULL, "keygen", "verify"};
    for (size_t i = 0; i < 3; i++) {
        cms_test_proc *p = subs[i] ? RUN("contract", subs[i], "--help") : RUN("contract", "--help");
        assert_exit(p, 0);
        cr_assert_not_null(strstr(p->out, "usage: cmsctl contract"), "%s", p->out);
        cms_test_proc_free(p);
    }
    cms_test_proc *p = RUN("contract", "no-such-verb");
    assert_exit(p, 2);
    cr_assert_not_null(strstr(p->err, "unknown sub-verb"), "%s", p->err);
    cms_test_proc_free(p);
}

/* ------------------------------------------------------------------------ */
/* verify */

typedef struct party {
    uint8_t pk[crypto_sign_PUBLICKEYBYTES], sk[crypto_sign_SECRETKEYBYTES];
    char pk_b64[CC_PUBLIC_KEY_B64 + 1];
} party;

static void make_party(party *p)
{
    cr_assert_eq(crypto_sign_keypair(p->pk, p->sk), 0);
    sodium_bin2base64(p->pk_b64, sizeof p->pk_b64, p->pk, sizeof p->pk,
                      sodium_base64_VARIANT_ORIGINAL);
}

/* An export of the contract signed by the parties given (NULL: that side
 * has not signed), pretty-printed as cmsctl would write it, into path. */
static void write_export(const char *path, const party *provider, const party *consumer)
{
    char *canon = NULL;
    size_t len = 0;
    uint8_t digest[32];
    char hex[CC_HASH_HEX + 1], sig[CC_SIG_B64URL_MAX + 1];
    cr_assert_eq(cc_canonical(CONTRACT, "Storage", "Object storage in eu-west", PROVIDER, CONSUMER,
                              TERMS, &canon, &len),
                 CMS_JCS_OK);
    cc_hash(canon, len, digest, hex);
    free(canon);
    json_t *sigs = json_object();
    if (provider != NULL) {
        cc_sign(provider->sk, digest, sig);
        json_object_set_new(sigs, "provider",
                            cc_entry_json(PROVIDER, PROVIDER_KEY, provider->pk_b64, sig, hex,
                                          INT64_C(1796205600123456)));
    }
    if (consumer != NULL) {
        cc_sign(consumer->sk, digest, sig);
        json_object_set_new(sigs, "consumer",
                            cc_entry_json(CONSUMER, CONSUMER_KEY, consumer->pk_b64, sig, hex,
                                          INT64_C(1796209200000001)));
    }
    json_t *doc =
        json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:o, s:{s:s}, s:s, s:s, s:s, s:o}", "format",
                  CC_FORMAT, "id", CONTRACT, "title", "Storage", "description",
                  "Object storage in eu-west", "provider_id", PROVIDER, "consumer_id", CONSUMER,
                  "status", "signed", "terms", json_loads(TERMS, 0, NULL), "metadata", "team",
                  "ops", "created_at", "2026-12-01T09:00:00.000000Z", "updated_at",
                  "2026-12-02T11:00:00.000001Z", "content_hash", hex, "signatures", sigs);
    cr_assert_not_null(doc);
    cr_assert_eq(json_dump_file(doc, path, JSON_INDENT(2)), 0);
    json_decref(doc);
}

Test(contract_offline, verify_passes_both_signatures_and_fails_once_a_byte_changes)
{
    party provider, consumer;
    make_party(&provider);
    make_party(&consumer);
    char doc[128];
    path_in_dir("contract.json", doc);
    write_export(doc, &provider, &consumer);

    cms_test_proc *p = RUN("contract", "verify", doc);
    assert_exit(p, 0);
    cr_assert_not_null(strstr(p->out, "\nprovider: valid\n  identity_id: " PROVIDER
                                      "\n  key_id: " PROVIDER_KEY "\n"),
                       "%s", p->out);
    cr_assert_not_null(strstr(p->out, "\nconsumer: valid\n  identity_id: " CONSUMER
                                      "\n  key_id: " CONSUMER_KEY "\n"),
                       "%s", p->out);
    cr_assert_not_null(strstr(p->out, "\nverified: yes\n"), "%s", p->out);
    cms_test_proc_free(p);

    /* one byte of the terms: 250 becomes 350 */
    char *text = read_text(doc);
    char *at = strstr(text, "\"amount\": 250");
    cr_assert_not_null(at, "%s", text);
    at[strlen("\"amount\": ")] = '3';
    write_text(doc, text);
    free(text);
    p = RUN("contract", "verify", doc);
    assert_exit(p, 1);
    cr_assert_not_null(strstr(p->out, "provider: invalid: signed a different content"), "%s",
                       p->out);
    cr_assert_not_null(strstr(p->out, "consumer: invalid: signed a different content"), "%s",
                       p->out);
    cr_assert_not_null(strstr(p->out, "\nverified: no\n"), "%s", p->out);
    cms_test_proc_free(p);
}

Test(contract_offline, verify_json)
{
    party provider, consumer;
    make_party(&provider);
    make_party(&consumer);
    char doc[128];
    path_in_dir("contract.json", doc);
    write_export(doc, &provider, &consumer);

    cms_test_proc *p = RUN("contract", "verify", doc, "--json");
    assert_exit(p, 0);
    json_t *o = json_loads(p->out, 0, NULL);
    cr_assert_not_null(o, "%s", p->out);
    cr_assert(json_is_true(json_object_get(o, "verified")));
    cr_assert(json_is_null(json_object_get(o, "problem")));
    cr_assert_str_eq(json_string_value(json_object_get(o, "file")), doc);
    cr_assert_eq(strlen(json_string_value(json_object_get(o, "content_hash"))), CC_HASH_HEX);
    json_t *prov = json_object_get(o, "provider");
    cr_assert(json_is_true(json_object_get(prov, "present")));
    cr_assert(json_is_true(json_object_get(prov, "valid")));
    cr_assert_str_eq(json_string_value(json_object_get(prov, "identity_id")), PROVIDER);
    cr_assert_str_eq(json_string_value(json_object_get(prov, "key_id")), PROVIDER_KEY);
    cr_assert(json_is_null(json_object_get(prov, "why")));
    json_decref(o);
    cms_test_proc_free(p);
}

Test(contract_offline, verify_fails_a_side_that_has_not_signed)
{
    party provider;
    make_party(&provider);
    char doc[128];
    path_in_dir("half.json", doc);
    write_export(doc, &provider, NULL);
    cms_test_proc *p = RUN("-o", "json", "contract", "verify", doc);
    assert_exit(p, 1);
    json_t *o = json_loads(p->out, 0, NULL);
    cr_assert_not_null(o, "%s", p->out);
    cr_assert(json_is_false(json_object_get(o, "verified")));
    cr_assert(json_is_true(json_object_get(json_object_get(o, "provider"), "valid")));
    json_t *cons = json_object_get(o, "consumer");
    cr_assert(json_is_false(json_object_get(cons, "present")));
    cr_assert_str_eq(json_string_value(json_object_get(cons, "why")), "not signed");
    json_decref(o);
    cms_test_proc_free(p);
}

Test(contract_offline, verify_refuses_what_is_not_an_export)
{
    char doc[128];
    path_in_dir("not.json", doc);
    write_text(doc, "{\"format\": \"something else\"}\n");
    cms_test_proc *p = RUN("contract", "verify", doc);
    assert_exit(p, 1);
    cr_assert_not_null(strstr(p->err, "format"), "%s", p->err);
    cr_assert_str_eq(p->out, "");
    cms_test_proc_free(p);

    path_in_dir("missing.json", doc);
    p = RUN("contract", "verify", doc);
    assert_exit(p, 1);
    cr_assert_not_null(strstr(p->err, "cannot open"), "%s", p->err);
    cms_test_proc_free(p);

    p = RUN("contract", "verify", CONTRACT);
    assert_exit(p, 1);
    cr_assert_not_null(strstr(p->err, "not a contract id"), "%s", p->err);
    cms_test_proc_free(p);

    p = RUN("contract", "verify");
    assert_exit(p, 2);
    cms_test_proc_free(p);
}
