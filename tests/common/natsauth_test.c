/* common/natsauth: reading credentials files, the inbox prefix and TLS
 * they lead to, and the texts of refusals and permissions violations. Unit
 * tests: no server (nats_auth_test.c has those). */
#include "natsauth.h"

#include <criterion/criterion.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define JWT_FILE                                                                                   \
    "-----BEGIN NATS USER JWT-----\n"                                                              \
    "eyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ.eyJzdWIiOiJVQUJDIn0.c2ln\n"                    \
    "------END NATS USER JWT------\n"                                                              \
    "\n"                                                                                           \
    "************************* IMPORTANT *************************\n"                              \
    "NKEY Seed printed below can be used to sign and prove identity.\n"                            \
    "\n"                                                                                           \
    "-----BEGIN USER NKEY SEED-----\n"                                                             \
    "SUAIBDPBAUTWCWBKIO6XHQNINK5FWJW4OHLXC3HQ2KFE4PEJUA44CNHTC4\n"                                 \
    "------END USER NKEY SEED------\n"

static char g_dir[64];

static void setup(void)
{
    snprintf(g_dir, sizeof g_dir, "/tmp/cms-natsauth-unit-XXXXXX");
    cr_assert_not_null(mkdtemp(g_dir));
}

static int remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void teardown(void)
{
    (void)nftw(g_dir, remove_one, 8, FTW_DEPTH | FTW_PHYS);
}

TestSuite(natsauth, .init = setup, .fini = teardown);

/* <dir>/name with text and mode; its path in out. */
static const char *put(const char *name, const char *text, mode_t mode, char *out, size_t len)
{
    snprintf(out, len, "%s/%s", g_dir, name);
    int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    cr_assert_geq(fd, 0);
    size_t n = strlen(text);
    cr_assert_eq(write(fd, text, n), (ssize_t)n);
    cr_assert_eq(fchmod(fd, mode), 0);
    close(fd);
    return out;
}

static cms_natsauth_err read_text(const char *text, mode_t mode, cms_natsauth_creds *c, char *why,
                                  size_t whylen)
{
    char path[256];
    put("creds", text, mode, path, sizeof path);
    return cms_natsauth_creds_read(path, c, why, whylen);
}

Test(natsauth, user_password_first_line)
{
    cms_natsauth_creds c;
    char why[512] = "";
    cr_assert_eq(
        read_text("alice:pa:ss word\r\n# later lines are not read\n", 0600, &c, why, sizeof why),
        CMS_NATSAUTH_OK, "%s", why);
    cr_assert_eq(c.kind, CMS_NATSAUTH_PASSWORD);
    cr_assert_str_eq(c.user, "alice");
    cr_assert_str_eq(c.password, "pa:ss word"); /* to the end of the line, ':' and blanks too */
    cms_natsauth_creds_wipe(&c);
    cr_assert_str_eq(c.password, "");
    cr_assert_eq(read_text("bob:x", 0400, &c, why, sizeof why), CMS_NATSAUTH_OK, "%s", why);
    cr_assert_str_eq(c.user, "bob");
    cr_assert_str_eq(c.password, "x");
    cms_natsauth_creds_wipe(&c);
}

Test(natsauth, readable_by_others_refused_with_the_fix)
{
    cms_natsauth_creds c;
    char why[512] = "", path[256], want[300];
    put("creds", "alice:secret\n", 0644, path, sizeof path);
    cr_assert_eq(cms_natsauth_creds_read(path, &c, why, sizeof why), CMS_NATSAUTH_EUNSAFE);
    snprintf(want, sizeof want, "chmod 600 %s", path);
    cr_assert(strstr(why, want) != NULL, "%s", why);
    cr_assert(strstr(why, "644") != NULL, "%s", why);
    cr_assert(strstr(why, "secret") == NULL, "%s", why);
    cr_assert_str_eq(c.password, "");
    put("creds", "alice:secret\n", 0660, path, sizeof path);
    cr_assert_eq(cms_natsauth_creds_read(path, &c, why, sizeof why), CMS_NATSAUTH_EUNSAFE);
    put("creds", "alice:secret\n", 0602, path, sizeof path);
    cr_assert_eq(cms_natsauth_creds_read(path, &c, why, sizeof why), CMS_NATSAUTH_EUNSAFE);
}

Test(natsauth, empty_and_malformed_refused)
{
    static const char *const bad[] = {
        "",             /* empty */
        "\nalice:pw\n", /* the first line is blank */
        "alice\n",      /* no ':' */
        ":pw\n",        /* no user */
        "alice:\n",     /* no password */
        "al ice:pw\n",  /* a blank in the user */
        "alice:p\tw\n", /* a control character */
        "-----BEGIN NATS USER JWT-----\neyJ\n------END NATS USER JWT------\n", /* no seed */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cms_natsauth_creds c;
        char why[512] = "";
        cr_assert_eq(read_text(bad[i], 0600, &c, why, sizeof why), CMS_NATSAUTH_EFORMAT,
                     "case %zu: %s", i, why);
        cr_assert_neq(why[0], '\0', "case %zu says why", i);
        cr_assert(strstr(why, g_dir) != NULL, "case %zu names the file: %s", i, why);
        cr_assert(strstr(why, "p\tw") == NULL && strstr(why, "al ice") == NULL, "%s", why);
        cr_assert_eq(c.kind, CMS_NATSAUTH_NONE);
    }
    char why[512] = "";
    cms_natsauth_creds c;
    cr_assert_eq(read_text("", 0600, &c, why, sizeof why), CMS_NATSAUTH_EFORMAT);
    cr_assert(strstr(why, "empty") != NULL, "%s", why);
}

Test(natsauth, missing_file)
{
    cms_natsauth_creds c;
    char why[512] = "", path[256];
    snprintf(path, sizeof path, "%s/none", g_dir);
    cr_assert_eq(cms_natsauth_creds_read(path, &c, why, sizeof why), CMS_NATSAUTH_EMISSING);
    cr_assert(strstr(why, path) != NULL, "%s", why);
}

Test(natsauth, jwt_creds_file_recognised)
{
    cms_natsauth_creds c;
    char why[512] = "";
    cr_assert_eq(read_text(JWT_FILE, 0600, &c, why, sizeof why), CMS_NATSAUTH_OK, "%s", why);
    cr_assert_eq(c.kind, CMS_NATSAUTH_JWT);
    cr_assert_str_eq(c.user, "");
    cr_assert_str_eq(c.password, "");
}

static cms_natsauth_err apply(const char *url, const cms_nats_security *s, cms_natsauth_info *info,
                              char *why, size_t whylen)
{
    natsOptions *no = NULL;
    cr_assert_eq(natsOptions_Create(&no), NATS_OK);
    cms_natsauth_err e = cms_natsauth_apply(no, url, s, info, why, whylen);
    natsOptions_Destroy(no);
    return e;
}

Test(natsauth, inbox_prefix_follows_the_credentials)
{
    char why[512] = "", pw[256], jwt[256];
    cms_natsauth_info info;
    put("pw", "alice:secret\n", 0600, pw, sizeof pw);
    put("jwt", JWT_FILE, 0600, jwt, sizeof jwt);

    cr_assert_eq(apply("nats://127.0.0.1:4222", NULL, &info, why, sizeof why), CMS_NATSAUTH_OK);
    cr_assert_str_eq(info.inbox_prefix, "_INBOX");
    cr_assert_eq(info.kind, CMS_NATSAUTH_NONE);
    cr_assert(!info.tls);

    cms_nats_security s = {.creds_file = pw};
    cr_assert_eq(apply("nats://127.0.0.1:4222", &s, &info, why, sizeof why), CMS_NATSAUTH_OK, "%s",
                 why);
    cr_assert_str_eq(info.inbox_prefix, "_INBOX.alice");
    cr_assert_str_eq(info.user, "alice");
    cr_assert_str_eq(info.creds_file, pw);

    s.inbox_prefix = "svc.inbox";
    cr_assert_eq(apply("nats://127.0.0.1:4222", &s, &info, why, sizeof why), CMS_NATSAUTH_OK);
    cr_assert_str_eq(info.inbox_prefix, "svc.inbox");

    s = (cms_nats_security){.creds_file = jwt};
    cr_assert_eq(apply("nats://127.0.0.1:4222", &s, &info, why, sizeof why), CMS_NATSAUTH_OK, "%s",
                 why);
    cr_assert_eq(info.kind, CMS_NATSAUTH_JWT);
    cr_assert_str_eq(info.inbox_prefix, "_INBOX");

    static const char *const bad[] = {"a.*", "a.>", "a b", ".a", "a.", "a..b"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        s = (cms_nats_security){.inbox_prefix = bad[i]};
        cr_assert_eq(apply("nats://127.0.0.1:4222", &s, &info, why, sizeof why),
                     CMS_NATSAUTH_EINVAL, "%s", bad[i]);
    }
    /* a user that is no subject token needs an explicit prefix */
    put("dotted", "a.b:secret\n", 0600, pw, sizeof pw);
    s = (cms_nats_security){.creds_file = pw};
    cr_assert_eq(apply("nats://127.0.0.1:4222", &s, &info, why, sizeof why), CMS_NATSAUTH_EINVAL);
    cr_assert(strstr(why, "--nats-inbox-prefix") != NULL, "%s", why);
    s.inbox_prefix = "_INBOX.ab";
    cr_assert_eq(apply("nats://127.0.0.1:4222", &s, &info, why, sizeof why), CMS_NATSAUTH_OK);
}

Test(natsauth, what_requires_tls)
{
    char why[512] = "";
    cms_natsauth_info info;
    cr_assert_eq(apply("nats://a:4222, tls://b:4222", NULL, &info, why, sizeof why),
                 CMS_NATSAUTH_OK, "%s", why);
    cr_assert(info.tls);
    cms_nats_security s = {.tls = true};
    cr_assert_eq(apply("nats://a:4222", &s, &info, why, sizeof why), CMS_NATSAUTH_OK, "%s", why);
    cr_assert(info.tls);
    char ca[256];
    s = (cms_nats_security){.ca_file = put("ca.pem", "not a certificate\n", 0644, ca, sizeof ca)};
    cr_assert_eq(apply("nats://a:4222", &s, &info, why, sizeof why), CMS_NATSAUTH_ETLS);
    cr_assert(strstr(why, ca) != NULL, "%s", why);
    s = (cms_nats_security){.cert_file = ca};
    cr_assert_eq(apply("nats://a:4222", &s, &info, why, sizeof why), CMS_NATSAUTH_EINVAL);
    cr_assert(strstr(why, "--nats-key") != NULL, "%s", why);
    char key[256];
    s = (cms_nats_security){.cert_file = ca,
                            .key_file = put("key.pem", "k\n", 0644, key, sizeof key)};
    cr_assert_eq(apply("nats://a:4222", &s, &info, why, sizeof why), CMS_NATSAUTH_EUNSAFE);
    cr_assert(strstr(why, "chmod 600") != NULL, "%s", why);
}

Test(natsauth, refusal_says_who_and_what_to_do)
{
    cms_natsauth_info info = {.kind = CMS_NATSAUTH_PASSWORD, .user = "alice"};
    snprintf(info.creds_file, sizeof info.creds_file, "/etc/cms/alice.creds");
    char text[1024];
    cms_natsauth_refused_text(&info, text, sizeof text);
    cr_assert(strstr(text, "\"alice\"") != NULL && strstr(text, "/etc/cms/alice.creds") != NULL,
              "%s", text);
    cr_assert(strstr(text, "restart") != NULL, "%s", text);
    info = (cms_natsauth_info){.kind = CMS_NATSAUTH_NONE};
    cms_natsauth_refused_text(&info, text, sizeof text);
    cr_assert(strstr(text, "--nats-creds") != NULL, "%s", text);
}

Test(natsauth, violation_parsed)
{
    const char *op = NULL;
    char subject[128];
    cr_assert(cms_natsauth_violation_parse("Permissions Violation for Publish to \"cms.events.x\"",
                                           &op, subject, sizeof subject));
    cr_assert_str_eq(op, "publish");
    cr_assert_str_eq(subject, "cms.events.x");
    cr_assert(cms_natsauth_violation_parse(
        "permissions violation for subscription to \"_INBOX.>\" using queue \"q\"", &op, subject,
        sizeof subject));
    cr_assert_str_eq(op, "subscribe");
    cr_assert_str_eq(subject, "_INBOX.>");
    cr_assert(cms_natsauth_violation_parse("Permissions Violation for Publish to a.b", &op, subject,
                                           sizeof subject));
    cr_assert_str_eq(subject, "a.b");
    cr_assert(
        !cms_natsauth_violation_parse("Authorization Violation", &op, subject, sizeof subject));
    cr_assert(!cms_natsauth_violation_parse(NULL, &op, subject, sizeof subject));
}

Test(natsauth, url_lists_split_and_bad_ones_refused)
{
    natsOptions *no = NULL;
    char why[512];
    cr_assert_eq(natsOptions_Create(&no), NATS_OK);
    cr_assert_eq(cms_natsauth_apply(no, "nats://127.0.0.1:4222", NULL, NULL, why, sizeof why),
                 CMS_NATSAUTH_OK, "%s", why);
    cr_assert_eq(
        cms_natsauth_apply(no, "nats://a:1,nats://b:2, tls://c:3 ", NULL, NULL, why, sizeof why),
        CMS_NATSAUTH_OK, "%s", why);
    const char *bad[] = {"nats://a:1,", ",nats://a:1", "nats://a:1,,nats://b:2", "nats://a:1, ,"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cr_expect_eq(cms_natsauth_apply(no, bad[i], NULL, NULL, why, sizeof why),
                     CMS_NATSAUTH_EINVAL, "%s", bad[i]);
        cr_expect(strstr(why, "separated by commas") != NULL, "%s", why);
    }
    char many[2048] = "";
    for (int i = 0; i <= CMS_NATSAUTH_URLS_MAX; i++)
        snprintf(many + strlen(many), sizeof many - strlen(many), "%snats://h%d:4222", i ? "," : "",
                 i);
    cr_expect_eq(cms_natsauth_apply(no, many, NULL, NULL, why, sizeof why), CMS_NATSAUTH_EINVAL,
                 "more than the limit");
    natsOptions_Destroy(no);
}
