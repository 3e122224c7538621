/* cmsctl contract keygen and cmsctl contract verify: the contract verbs
 * that need no server.
 *
 * keygen makes the Ed25519 key a party signs contracts with and writes its
 * secret half to a new file of its own (contract_keys.h); the public half
 * it prints is what cms-identity is given as the party's public_key
 * credential.
 *
 * verify checks an exported contract document from the file alone
 * (contracts/canonical.h): the canonical form and its hash are recomputed
 * from the contract's content, and each side's signature must be over that
 * hash, by that side's party, and verify under the public key its entry
 * carries. Exit status 0 only when both sides verify. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <sodium.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "contracts/canonical.h"
#include "ctlcmd.h"
#include "ctlout.h"
#include "ctlverb.h"
#include "edkey.h"
#include "uuid.h"
#include "verbs.h"

#define DOCUMENT_MAX (16u << 20) /* a bigger export is refused, never read whole */
#define TEXT_MAX 512             /* longest text from the file shown in a table cell */

static const cms_option keygen_options[] = {
    {"out", NULL, CMS_OPT_STRING, NULL,
     "the file for the secret key: created with mode 600, never overwritten", CMS_OPT_PUBLIC, true},
    {"register", NULL, CMS_OPT_BOOL, "false",
     "also issue the public key as the caller's public_key credential (asks cms-identity)",
     CMS_OPT_PUBLIC, false},
    {"expires-in", NULL, CMS_OPT_DURATION, NULL,
     "with --register: the credential's lifetime (default: until the API key used expires, at "
     "most 365d)",
     CMS_OPT_PUBLIC, false},
    CMSCTL_CMD_OPTIONS,
};

static const cms_option verify_options[] = {
    CMSCTL_OUT_OPTIONS,
};

/* ------------------------------------------------------------------------ */
/* cmsctl contract keygen */

/* Issues pub as the caller's public_key credential; its id into key_id. */
static int register_key(const char *prog, const cms_config *cfg, const char *pub, char key_id[64])
{
    bool given = cms_config_is_set(cfg, "expires-in");
    int64_t life = given ? cms_config_duration_ms(cfg, "expires-in") : 0;
    if (given && life <= 0)
        return cmsctl_usage(prog, "--expires-in must be a positive duration");
    cmsctl_cmd *c = NULL;
    Cms__V1__Principal *me = NULL;
    Cms__V1__Credential *cred = NULL;
    int status = cmsctl_cmd_open(prog, cfg, "identity", &c);
    if (status == CMSCTL_EXIT_OK)
        status = cmsctl_cmd_whoami(c, &me);
    if (status == CMSCTL_EXIT_OK) {
        Cms__V1__IssueCredential req = CMS__V1__ISSUE_CREDENTIAL__INIT;
        req.identity_id = me->identity_id;
        req.type = (char *)"public_key";
        req.public_key = (char *)pub;
        /* a credential an identity issues itself never outlives the key it
         * asks with: by default, it lives as long */
        int64_t year_us = INT64_C(365) * 86400 * 1000000, now = cmsctl_wall_us();
        req.expires_at_us = given ? now + life * 1000
                            : me->expires_at_us > 0 && me->expires_at_us < now + year_us
                                ? me->expires_at_us
                                : now + year_us;
        status = cmsctl_cmd_call(c, "issue_credential", CMSCTL_CMD_WRITE, &req.base,
                                 &cms__v1__credential__descriptor, (ProtobufCMessage **)&cred);
    }
    if (status == CMSCTL_EXIT_OK)
        snprintf(key_id, 64, "%s", cred->id);
    else
        fprintf(stderr, "%s: the key file was written; register its public key later\n", prog);
    if (cred)
        cms__v1__credential__free_unpacked(cred, NULL);
    if (me)
        cms__v1__principal__free_unpacked(me, NULL);
    cmsctl_cmd_destroy(c);
    return status;
}

int cmsctl_keygen_main(int argc, char **argv, const char *prog, const char *summary)
{
    cms_config *cfg = NULL;
    cmsctl_out_format fmt = CMSCTL_OUT_TABLE;
    uint8_t pk[crypto_sign_PUBLICKEYBYTES], sk[crypto_sign_SECRETKEYBYTES];
    char pub[CMS_EDKEY_PUBLIC_B64 + 1], why[512];
    int status = cmsctl_parse(
        keygen_options, CMSCTL_NOPTS(keygen_options), argc, argv, prog, summary,
        "--out FILE\n\n"
        "Makes an Ed25519 key pair, writes the secret key to FILE (one line of\n"
        "base64; a new file, mode 600: an existing file is never replaced) and prints\n"
        "the public key (base64) and FILE, or with -o json {\"public_key\", \"key_file\"}.\n"
        "With --register the public key is issued at once as the caller's public_key\n"
        "credential (its id is printed as key_id); else register it later with\n"
        "  cmsctl credential issue ID|NAME --type public_key --public-key BASE64 \\\n"
        "      --expires-in 365d\n"
        "Keep FILE private: whoever holds it can sign as you. Exit status: 0 done,\n"
        "1 failed, 2 usage error.",
        &cfg);
    if (status != CMSCTL_EXIT_OK)
        goto out;
    if (cms_config_npositional(cfg) > 0) {
        status = cmsctl_usage(prog, "unexpected argument \"%s\"", cms_config_positional(cfg, 0));
        goto out;
    }
    if ((status = cmsctl_out_format_get(prog, cfg, &fmt)) != CMSCTL_EXIT_OK)
        goto out;
    const char *path = cms_config_str(cfg, "out");
    if (path == NULL || *path == '\0') {
        status = cmsctl_usage(prog, "--out needs a file name");
        goto out;
    }
    if (sodium_init() < 0) {
        status = cmsctl_fail(prog, "libsodium failed to initialise");
        goto out;
    }
    /* cannot fail: randombytes is ready after sodium_init */
    (void)crypto_sign_keypair(pk, sk);
    if (!cms_edkey_save(path, sk, why, sizeof why)) {
        status = cmsctl_fail(prog, "%s", why);
        goto out;
    }
    cms_edkey_public_b64(sk, pub);
    char key_id[64] = "";
    if (cms_config_bool(cfg, "register") &&
        (status = register_key(prog, cfg, pub, key_id)) != CMSCTL_EXIT_OK)
        goto out;
    if (fmt == CMSCTL_OUT_TABLE) {
        char b[TEXT_MAX];
        printf("public_key: %s\n", pub);
        printf("key_file: %s\n", cmsctl_out_clean(path, b, sizeof b));
        if (key_id[0])
            printf("key_id: %s\n", key_id);
    } else {
        json_t *o = json_pack("{s:s, s:o}", "public_key", pub, "key_file", cmsctl_out_str(path));
        if (o && key_id[0])
            json_object_set_new(o, "key_id", json_string(key_id));
        status = cmsctl_out_emit(prog, fmt, o, NULL);
    }
out:
    sodium_memzero(sk, sizeof sk);
    cms_config_destroy(cfg);
    return status == CMSCTL_PARSE_DONE ? CMSCTL_EXIT_OK : status;
}

/* ------------------------------------------------------------------------ */
/* cmsctl contract verify */

/* The whole file at path, at most DOCUMENT_MAX bytes, into *out (malloc'd,
 * NUL-terminated). */
static int read_document(const char *prog, const char *path, char **out, size_t *outlen)
{
    int status = CMSCTL_EXIT_FAILED;
    char *buf = NULL;
    size_t len = 0, cap = 0;
    cms_uuid u;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        if (errno == ENOENT && cms_uuid_parse(path, strlen(path), &u))
            status = cmsctl_fail(prog,
                                 "there is no file \"%s\": verify checks an exported "
                                 "contract file, not a contract id",
                                 path);
        else
            status = cmsctl_fail(prog, "%s: cannot open: %s", path, strerror(errno));
        goto out;
    }
    for (;;) {
        if (len == cap) {
            if (cap > DOCUMENT_MAX)
                break; /* one byte more than an export may have: too large */
            size_t ncap = cap ? cap * 2 : 65536;
            if (ncap > DOCUMENT_MAX + 1)
                ncap = DOCUMENT_MAX + 1;
            char *p = realloc(buf, ncap + 1);
            if (p == NULL) {
                status = cmsctl_fail(prog, "out of memory");
                goto out;
            }
            buf = p;
            cap = ncap;
        }
        ssize_t n = read(fd, buf + len, cap - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            status = cmsctl_fail(prog, "%s: cannot read: %s", path, strerror(errno));
            goto out;
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    if (len > DOCUMENT_MAX) {
        status = cmsctl_fail(prog, "%s is larger than %u bytes: not an export", path, DOCUMENT_MAX);
        goto out;
    }
    buf[len] = '\0';
    *out = buf;
    *outlen = len;
    buf = NULL;
    status = CMSCTL_EXIT_OK;
out:
    free(buf);
    if (fd >= 0)
        close(fd);
    return status;
}

/* A side's verdict in words: valid, not signed, or invalid: why. */
static const char *side_verdict(const cc_side_report *s, char *buf, size_t len)
{
    char why[TEXT_MAX];
    if (s->valid)
        return "valid";
    if (!s->present)
        return "not signed";
    snprintf(buf, len, "invalid: %s", cmsctl_out_clean(s->why, why, sizeof why));
    return buf;
}

static void side_table(const char *side, const cc_side_report *s)
{
    char v[TEXT_MAX + 16], b[TEXT_MAX];
    printf("%s: %s\n", side, side_verdict(s, v, sizeof v));
    if (!s->present)
        return;
    printf("  identity_id: %s\n",
           s->identity_id[0] ? cmsctl_out_clean(s->identity_id, b, sizeof b) : "-");
    printf("  key_id: %s\n", s->key_id[0] ? cmsctl_out_clean(s->key_id, b, sizeof b) : "-");
}

/* A string member, or null for "". */
static json_t *str_or_null(const char *s)
{
    return s[0] != '\0' ? cmsctl_out_str(s) : json_null();
}

static json_t *side_json(const cc_side_report *s)
{
    return json_pack("{s:b, s:b, s:o, s:o, s:o}", "present", s->present, "valid", s->valid,
                     "identity_id", str_or_null(s->identity_id), "key_id", str_or_null(s->key_id),
                     "why", str_or_null(s->why));
}

static int verify_main(int argc, char **argv)
{
    static const char prog[] = "cmsctl contract verify";
    cms_config *cfg = NULL;
    cmsctl_out_format fmt = CMSCTL_OUT_TABLE;
    char *text = NULL;
    size_t len = 0;
    cc_report r;
    int status = cmsctl_parse(
        verify_options, CMSCTL_NOPTS(verify_options), argc, argv, prog,
        "check the signatures of an exported contract",
        "FILE\n\n"
        "Checks a contract exported to FILE (cmsctl contract export) with nothing but\n"
        "the file: its canonical form (RFC 8785 JSON of id, title, description,\n"
        "provider_id, consumer_id and terms) and that form's SHA-256 are recomputed,\n"
        "and each side's signature must be by that side's party, over that hash, and\n"
        "verify (Ed25519) under the public key its entry carries. That the key is the\n"
        "party's registered credential (key_id) is cms-identity's record, which this\n"
        "does not consult.\n\n"
        "Prints each side as valid, not signed, or invalid with the reason, and its\n"
        "identity and key id; with -o json one object {\"file\", \"content_hash\",\n"
        "\"verified\", \"problem\", \"provider\", \"consumer\"}. Exit status: 0 both sides\n"
        "verify, 1 not (or FILE is not an export), 2 usage error.",
        &cfg);
    if (status != CMSCTL_EXIT_OK)
        goto out;
    if ((status = cmsctl_out_format_get(prog, cfg, &fmt)) != CMSCTL_EXIT_OK)
        goto out;
    size_t npos = cms_config_npositional(cfg);
    if (npos == 0) {
        status = cmsctl_usage(prog, "a FILE (an exported contract) is needed");
        goto out;
    }
    if (npos > 1) {
        status = cmsctl_usage(prog, "unexpected argument \"%s\" after FILE",
                              cms_config_positional(cfg, 1));
        goto out;
    }
    const char *path = cms_config_positional(cfg, 0);
    if ((status = read_document(prog, path, &text, &len)) != CMSCTL_EXIT_OK)
        goto out;
    bool verified = cc_verify_document(text, len, &r);
    if (!r.parsed) {
        char b[TEXT_MAX];
        status = cmsctl_fail(prog, "%s: %s", path, cmsctl_out_clean(r.why, b, sizeof b));
        goto out;
    }
    status = verified ? CMSCTL_EXIT_OK : CMSCTL_EXIT_FAILED;
    if (fmt == CMSCTL_OUT_TABLE) {
        char b[TEXT_MAX];
        printf("file: %s\n", cmsctl_out_clean(path, b, sizeof b));
        printf("content_hash: %s\n", r.content_hash);
        if (r.why[0] != '\0')
            printf("problem: %s\n", cmsctl_out_clean(r.why, b, sizeof b));
        side_table("provider", &r.provider);
        side_table("consumer", &r.consumer);
        printf("verified: %s\n", verified ? "yes" : "no");
    } else {
        json_t *o = json_pack("{s:o, s:s, s:b, s:o, s:o, s:o}", "file", cmsctl_out_str(path),
                              "content_hash", r.content_hash, "verified", verified, "problem",
                              str_or_null(r.why), "provider", side_json(&r.provider), "consumer",
                              side_json(&r.consumer));
        int emitted = cmsctl_out_emit(prog, fmt, o, NULL);
        if (emitted != CMSCTL_EXIT_OK)
            status = emitted;
    }
out:
    free(text);
    cms_config_destroy(cfg);
    return status == CMSCTL_PARSE_DONE ? CMSCTL_EXIT_OK : status;
}

int cmsctl_contract_offline_main(int argc, char **argv)
{
    static const char prog[] = "cmsctl contract";
    const char *sub = argc >= 2 ? argv[1] : "";
    if (strcmp(sub, "keygen") == 0)
        return cmsctl_keygen_main(argc - 1, argv + 1, "cmsctl contract keygen",
                                  "make a key to sign contracts with");
    if (strcmp(sub, "verify") == 0)
        return verify_main(argc - 1, argv + 1);
    return cmsctl_usage(
        prog, "unknown contract verb \"%s\": this part of cmsctl has keygen and verify", sub);
}
