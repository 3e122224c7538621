/* cmsctl contract, run as a program against a real cms-identity and
 * cms-contracts (tests/services/contracts/lib/ctfx) on the throwaway
 * PostgreSQL and nats-server: each party with its own API key and its
 * Ed25519 key in a mode-600 key file. A contract created by the parties'
 * names, submitted, signed by both (the key's credential found through
 * cms-identity), shown signed, listed by party, its canonical bytes hashing
 * to its content_hash, and exported to a document whose signatures verify
 * offline (contracts/canonical.h). Also: a key file others may read is
 * refused, a key nobody registered is named, arguments are checked before
 * any connection, and --help lists every sub-verb. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "contracts/canonical.h"
#include "ctfx.h"
#include "testenv.h"
#include "testproc.h"

#define WATCHDOG_MS 60000

static char g_bin[1024];
static char g_dir[256]; /* the test's scratch files */
static ctfx C;
static ctparty g_prov, g_cons;

/* ------------------------------------------------------------------------ */
/* running cmsctl */

/* `cmsctl args...`, run to its end. */
#define RUN(...) cms_test_run_bin(g_bin, (const char *const[]){__VA_ARGS__, NULL}, WATCHDOG_MS)
#define assert_exit CMS_TEST_ASSERT_EXIT

/* The value of the "name: value" line of text (malloc'd), or NULL. */
static char *line_value(const char *text, const char *name)
{
    size_t n = strlen(name);
    for (const char *l = text; l != NULL && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
        if (strncmp(l, name, n) == 0 && l[n] == ':' && l[n + 1] == ' ') {
            const char *v = l + n + 2;
            return strndup(v, strcspn(v, "\n"));
        }
    }
    return NULL;
}

static void assert_line(const cms_test_proc *p, const char *name, const char *want)
{
    char *v = line_value(p->out, name);
    cr_assert_not_null(v, "no %s line:\n%s", name, p->out);
    cr_assert_str_eq(v, want, "%s:\n%s", name, p->out);
    free(v);
}

static json_t *parse_json(const char *text)
{
    json_error_t e;
    json_t *v = json_loads(text, 0, &e);
    cr_assert_not_null(v, "not JSON (%s):\n%s", e.text, text);
    return v;
}

static void as(const ctparty *p)
{
    cr_assert_eq(setenv("CMS_API_KEY", p->key, 1), 0);
}

static void write_file(const char *path, const char *text, mode_t mode)
{
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f, "%s", path);
    cr_assert_eq(fputs(text, f) >= 0, 1);
    cr_assert_eq(fclose(f), 0);
    cr_assert_eq(chmod(path, mode), 0);
}

/* p's secret key in the format of cmsctl contract keygen: one line of base64. */
static void key_file(const ctparty *p, const char *path, mode_t mode)
{
    char b64[sodium_base64_ENCODED_LEN(64, sodium_base64_VARIANT_ORIGINAL)], line[160];
    sodium_bin2base64(b64, sizeof b64, p->sk, 64, sodium_base64_VARIANT_ORIGINAL);
    snprintf(line, sizeof line, "%s\n", b64);
    write_file(path, line, mode);
}

static void path_of(const char *name, char out[512])
{
    snprintf(out, 512, "%s/%s", g_dir, name);
}

static void setup(void)
{
    ctfx_setup(&C, "cmsctl_contract");
    snprintf(g_bin, sizeof g_bin, "%s/cmsctl", cms_test_env("CMS_TEST_BIN_DIR"));
    cr_assert_eq(access(g_bin, X_OK), 0, "%s is not there: build the cmsctl target", g_bin);
    cr_assert_eq(setenv("CMS_NATS_URL", cms_test_env("CMS_TEST_NATS_URL"), 1), 0);
    cr_assert_eq(setenv("CMS_COMMAND_PREFIX", C.f.prefix, 1), 0);
    unsetenv("CMS_CREDENTIALS_FILE");
    snprintf(g_dir, sizeof g_dir, "/tmp/cmsctl-contract-XXXXXX");
    cr_assert_not_null(mkdtemp(g_dir));
    ctfx_party(&C, "acme-provider", &g_prov);
    ctfx_party(&C, "beta-consumer", &g_cons);
    char path[512];
    path_of("provider.key", path);
    key_file(&g_prov, path, 0600);
    path_of("consumer.key", path);
    key_file(&g_cons, path, 0600);
    path_of("terms.json", path);
    write_file(path, ctfx_terms(-60, 86400 * 30, NULL), 0644);
}

static void teardown(void)
{
    const char *names[] = {"provider.key", "consumer.key", "terms.json",
                           "export.json",  "open.key",     "stranger.key"};
    char path[512];
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        path_of(names[i], path);
        unlink(path);
    }
    rmdir(g_dir);
    ctfx_teardown(&C);
}

TestSuite(cmsctl_contract, .init = setup, .fini = teardown, .timeout = 180);

/* A draft between the two parties by their names, made by the provider;
 * its id into id. */
static void create(char id[37])
{
    char terms[512];
    path_of("terms.json", terms);
    as(&g_prov);
    cms_test_proc *p =
        RUN("contract", "create", "--title", "Data sharing", "--provider", g_prov.name,
            "--consumer", g_cons.name, "--terms", terms, "--description", "shares, trains");
    assert_exit(p, 0);
    assert_line(p, "status", "draft");
    assert_line(p, "provider_id", g_prov.id);
    assert_line(p, "consumer_id", g_cons.id);
    assert_line(p, "signatures", "none");
    char *v = line_value(p->out, "id");
    cr_assert_not_null(v, "%s", p->out);
    snprintf(id, 37, "%s", v);
    free(v);
    cms_test_proc_free(p);
}

/* ------------------------------------------------------------------------ */

Test(cmsctl_contract, create_submit_sign_list_canonical_export)
{
    char id[37], kprov[512], kcons[512], out[512];
    path_of("provider.key", kprov);
    path_of("consumer.key", kcons);
    path_of("export.json", out);
    create(id);

    cms_test_proc *p = RUN("contract", "submit", id);
    assert_exit(p, 0);
    assert_line(p, "status", "review");
    cms_test_proc_free(p);

    /* each party signs with its own key; the key's credential is looked up */
    p = RUN("contract", "sign", id, "--key", kprov);
    assert_exit(p, 0);
    assert_line(p, "signatures", "provider");
    cms_test_proc_free(p);
    as(&g_cons);
    p = RUN("contract", "sign", id, "--key", kcons);
    assert_exit(p, 0);
    assert_line(p, "signatures", "provider,consumer");
    cms_test_proc_free(p);

    /* get, as json: signed (or active already: the term has begun) */
    p = RUN("contract", "get", id, "--json");
    assert_exit(p, 0);
    json_t *o = parse_json(p->out);
    const char *status = json_string_value(json_object_get(o, "status"));
    cr_assert(status && (strcmp(status, "signed") == 0 || strcmp(status, "active") == 0), "%s",
              p->out);
    cr_assert(json_is_object(json_object_get(o, "terms")), "terms is an object");
    json_t *sigs = json_object_get(o, "signatures");
    cr_assert_str_eq(
        json_string_value(json_object_get(json_object_get(sigs, "provider"), "key_id")),
        g_prov.key_id);
    cr_assert_str_eq(
        json_string_value(json_object_get(json_object_get(sigs, "consumer"), "key_id")),
        g_cons.key_id);
    char hash[CC_HASH_HEX + 1];
    snprintf(hash, sizeof hash, "%s", json_string_value(json_object_get(o, "content_hash")));
    json_decref(o);
    cms_test_proc_free(p);

    /* listed for the consumer by name, in the table and in json */
    p = RUN("contract", "list", "--party", g_cons.name);
    assert_exit(p, 0);
    cr_assert_not_null(strstr(p->out, id), "%s", p->out);
    cr_assert_not_null(strstr(p->out, "provider,consumer"), "%s", p->out);
    cms_test_proc_free(p);
    p = RUN("contract", "list", "--party", g_cons.name, "-o", "json", "--created-after",
            "2000-01-01T00:00:00Z");
    assert_exit(p, 0);
    o = parse_json(p->out);
    cr_assert_eq(json_array_size(o), 1, "%s", p->out);
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(o, 0), "id")), id);
    json_decref(o);
    cms_test_proc_free(p);
    p = RUN("contract", "list", "--party", g_cons.name, "--created-before", "2000-01-01T00:00:00Z");
    assert_exit(p, 0);
    cr_assert_eq(p->out[0], '\0', "nothing before 2000: %s", p->out);
    cr_assert_not_null(strstr(p->err, "no contracts match"), "%s", p->err);
    cms_test_proc_free(p);

    /* canonical: the exact bytes, whose SHA-256 is the content hash */
    p = RUN("contract", "canonical", id);
    assert_exit(p, 0);
    uint8_t digest[32];
    char hex[CC_HASH_HEX + 1];
    cc_hash(p->out, p->outlen, digest, hex);
    cr_assert_str_eq(hex, hash);
    cr_assert_eq(p->out[p->outlen - 1], '}', "no newline added");
    cms_test_proc_free(p);
    p = RUN("contract", "canonical", id, "-o", "json");
    assert_exit(p, 0);
    o = parse_json(p->out);
    cr_assert_str_eq(json_string_value(json_object_get(o, "content_hash")), hash);
    cr_assert_str_eq(json_string_value(json_object_get(o, "id")), id);
    cr_assert(json_is_string(json_object_get(o, "canonical")));
    json_decref(o);
    cms_test_proc_free(p);

    /* export: a document that verifies offline */
    p = RUN("contract", "export", id, "--out", out);
    assert_exit(p, 0);
    cms_test_proc_free(p);
    FILE *f = fopen(out, "r");
    cr_assert_not_null(f);
    char doc[65536];
    size_t n = fread(doc, 1, sizeof doc - 1, f);
    fclose(f);
    doc[n] = '\0';
    cc_report r;
    bool ok = cc_verify_document(doc, n, &r);
    cr_assert(ok, "%s\nwhy: %s / provider: %s / consumer: %s", doc, r.why, r.provider.why,
              r.consumer.why);
    cr_assert_str_eq(r.content_hash, hash);
    cr_assert_str_eq(r.provider.key_id, g_prov.key_id);
    cr_assert_str_eq(r.consumer.key_id, g_cons.key_id);
    o = parse_json(doc);
    const char *order[] = {"format",      "id",           "title",     "description", "provider_id",
                           "consumer_id", "status",       "terms",     "metadata",    "created_at",
                           "updated_at",  "content_hash", "signatures"};
    size_t i = 0;
    const char *key;
    json_t *val;
    json_object_foreach(o, key, val)
    {
        cr_assert_lt(i, sizeof order / sizeof order[0], "extra key %s", key);
        cr_assert_str_eq(key, order[i], "key %zu", i);
        i++;
    }
    cr_assert_eq(i, sizeof order / sizeof order[0]);
    cr_assert_str_eq(json_string_value(json_object_get(o, "format")), "cms-contract/1");
    const char *created = json_string_value(json_object_get(o, "created_at"));
    cr_assert_eq(strlen(created), strlen("2024-03-20T15:00:00.123456Z"), "%s", created);
    json_decref(o);

    /* an amendment: a new draft that supersedes this one */
    p = RUN("contract", "amend", id, "--title", "Data sharing, amended", "-o", "json");
    assert_exit(p, 0);
    o = parse_json(p->out);
    cr_assert_str_eq(json_string_value(json_object_get(o, "status")), "draft");
    cr_assert_str_eq(json_string_value(json_object_get(o, "title")), "Data sharing, amended");
    cr_assert_str_neq(json_string_value(json_object_get(o, "id")), id);
    cr_assert_not_null(strstr(p->out, id), "supersedes names the old one: %s", p->out);
    json_decref(o);
    cms_test_proc_free(p);

    /* a tampered export does not verify */
    char *at = strstr(doc, "Data sharing");
    cr_assert_not_null(at);
    at[0] = 'd';
    cr_assert_not(cc_verify_document(doc, n, &r));
}

Test(cmsctl_contract, key_file_others_may_read_is_refused)
{
    char id[37], key[512];
    create(id);
    path_of("open.key", key);
    key_file(&g_prov, key, 0644);
    cms_test_proc *p = RUN("contract", "sign", id, "--key", key);
    assert_exit(p, 1);
    cr_assert_not_null(strstr(p->err, "chmod 600"), "%s", p->err);
    cms_test_proc_free(p);
}

Test(cmsctl_contract, unregistered_key_is_named)
{
    char id[37], key[512];
    create(id);
    cms_test_proc *p = RUN("contract", "submit", id);
    assert_exit(p, 0);
    cms_test_proc_free(p);
    ctparty stranger = g_prov;
    uint8_t pk[32];
    crypto_sign_keypair(pk, stranger.sk);
    path_of("stranger.key", key);
    key_file(&stranger, key, 0600);
    p = RUN("contract", "sign", id, "--key", key);
    assert_exit(p, 1);
    cr_assert_not_null(strstr(p->err, "no public_key credential"), "%s", p->err);
    cms_test_proc_free(p);
    /* with the wrong --key-id the service refuses it */
    p = RUN("contract", "sign", id, "--key", key, "--key-id", g_prov.key_id);
    assert_exit(p, 1);
    cms_test_proc_free(p);
    p = RUN("contract", "get", id);
    assert_exit(p, 0);
    assert_line(p, "signatures", "none");
    cms_test_proc_free(p);
}

Test(cmsctl_contract, arguments_are_checked_first)
{
    cms_test_proc *p = RUN("contract", "get", "not-a-uuid", "--nats-url", "nats://127.0.0.1:1");
    assert_exit(p, 2);
    cr_assert_not_null(strstr(p->err, "is not a UUID"), "%s", p->err);
    cms_test_proc_free(p);
    p = RUN("contract", "create", "--title", "x", "--provider", "a", "--consumer", "b", "--terms",
            "/nonexistent/terms.json");
    assert_exit(p, 1);
    cms_test_proc_free(p);
    p = RUN("contract", "frobnicate");
    assert_exit(p, 2);
    cms_test_proc_free(p);
    p = RUN("contract", "--help");
    assert_exit(p, 0);
    const char *subs[] = {"create",    "update",    "submit", "sign",  "activate",
                          "complete",  "terminate", "amend",  "get",   "list",
                          "canonical", "export",    "keygen", "verify"};
    for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++)
        cr_assert_not_null(strstr(p->out, subs[i]), "%s in:\n%s", subs[i], p->out);
    cr_assert_not_null(strstr(p->out, "offline"), "%s", p->out);
    cms_test_proc_free(p);
}

Test(cmsctl_contract, update_amend_terminate)
{
    char id[37];
    create(id);
    cms_test_proc *p =
        RUN("contract", "update", id, "--title", "Data sharing v2", "--clear-description");
    assert_exit(p, 0);
    assert_line(p, "title", "Data sharing v2");
    cr_assert_null(strstr(p->out, "description:"), "%s", p->out);
    cms_test_proc_free(p);
    p = RUN("contract", "update", id);
    assert_exit(p, 2);
    cms_test_proc_free(p);
    /* a draft is updated, not amended */
    p = RUN("contract", "amend", id, "--title", "v3");
    assert_exit(p, 1);
    cr_assert_not_null(strstr(p->err, "FAILED_PRECONDITION"), "%s", p->err);
    cms_test_proc_free(p);
    p = RUN("contract", "terminate", id, "--reason", "changed our minds");
    assert_exit(p, 0);
    assert_line(p, "status", "terminated");
    cms_test_proc_free(p);
    p = RUN("contract", "terminate", id);
    assert_exit(p, 2);
    cms_test_proc_free(p);
}
