/* cmsctl's API key loading (tools/cmsctl/ctlcmd.h): CMS_API_KEY first,
 * then the file CMS_CREDENTIALS_FILE names, then ~/.config/cms/credentials;
 * comments and blank lines, the bare and the "api_key = " forms, refusal of
 * files others may read or write, and clear reasons that never carry the
 * key. Also the pure parts of the same module: decoding cms.v1.Reply, and
 * RFC 3339 times (durations are common/config's: tests/common/config_test.c). */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cms/v1/command.pb-c.h"
#include "cms/v1/identity.pb-c.h"
#include "ctlcmd.h"

#define KEY "cms_0190aa00000070008000000000000001_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789-_abcde"

static char g_dir[64];
static char g_path[128];
static char g_key[CMSCTL_CMD_KEY_MAX + 1];
static char g_why[1024];

static void setup(void)
{
    snprintf(g_dir, sizeof g_dir, "/tmp/cmsctl-keyfile-XXXXXX");
    cr_assert_not_null(mkdtemp(g_dir));
    snprintf(g_path, sizeof g_path, "%s/credentials", g_dir);
    memset(g_key, 0, sizeof g_key);
    memset(g_why, 0, sizeof g_why);
}

static void teardown(void)
{
    char p[256];
    unlink(g_path);
    snprintf(p, sizeof p, "%s/.config/cms/credentials", g_dir);
    unlink(p);
    snprintf(p, sizeof p, "%s/.config/cms", g_dir);
    rmdir(p);
    snprintf(p, sizeof p, "%s/.config", g_dir);
    rmdir(p);
    snprintf(p, sizeof p, "%s/adir", g_dir);
    rmdir(p);
    rmdir(g_dir);
}

static void write_file(const char *path, const char *text, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    cr_assert_geq(fd, 0, "%s", path);
    size_t n = strlen(text);
    cr_assert_eq(write(fd, text, n), (ssize_t)n);
    close(fd);
    /* explicitly, whatever the umask */
    cr_assert_eq(chmod(path, mode), 0);
}

static cmsctl_cmd_key_err load(const char *env_key, const char *file, const char *home)
{
    cmsctl_cmd_key_sources s = {.env_key = env_key, .file = file, .home = home};
    return cmsctl_cmd_key_load(&s, g_key, g_why, sizeof g_why);
}

static void assert_loaded(cmsctl_cmd_key_err err, const char *want)
{
    cr_assert_eq(err, CMSCTL_CMD_KEY_OK, "%s: %s", cmsctl_cmd_key_strerror(err), g_why);
    cr_assert_str_eq(g_key, want);
}

TestSuite(ctlcmd_key, .init = setup, .fini = teardown);

Test(ctlcmd_key, env_variable_comes_first)
{
    /* a file that would be refused is not even looked at */
    write_file(g_path, "cms_other\n", 0644);
    assert_loaded(load(KEY, g_path, g_dir), KEY);
}

Test(ctlcmd_key, env_variable_loses_a_trailing_newline)
{
    assert_loaded(load(KEY "\n", NULL, NULL), KEY);
    assert_loaded(load(KEY " \r\n", NULL, NULL), KEY);
}

Test(ctlcmd_key, empty_env_variable_counts_as_unset)
{
    write_file(g_path, KEY "\n", 0600);
    assert_loaded(load("", g_path, NULL), KEY);
}

Test(ctlcmd_key, env_variable_with_a_space_is_refused_without_echo)
{
    cr_assert_eq(load("cms_abc def", NULL, NULL), CMSCTL_CMD_KEY_EFORMAT);
    cr_assert_not_null(strstr(g_why, "CMS_API_KEY"), "%s", g_why);
    cr_assert_null(strstr(g_why, "cms_abc"), "the key is echoed: %s", g_why);
}

Test(ctlcmd_key, file_with_the_bare_key)
{
    write_file(g_path, KEY "\n", 0600);
    assert_loaded(load(NULL, g_path, NULL), KEY);
}

Test(ctlcmd_key, file_without_final_newline)
{
    write_file(g_path, KEY, 0600);
    assert_loaded(load(NULL, g_path, NULL), KEY);
}

Test(ctlcmd_key, comments_and_blank_lines_are_skipped)
{
    write_file(g_path,
               "# cms credentials\n"
               "\n"
               "   \t\n"
               "   # indented comment with = and cms_notakey\n"
               "\r\n" KEY "\n"
               "api_key = cms_second_line_is_ignored\n",
               0600);
    assert_loaded(load(NULL, g_path, NULL), KEY);
}

Test(ctlcmd_key, api_key_equals_form)
{
    write_file(g_path, "# written by hand\napi_key = " KEY "\n", 0600);
    assert_loaded(load(NULL, g_path, NULL), KEY);
}

Test(ctlcmd_key, api_key_equals_form_without_spaces)
{
    write_file(g_path, "api_key=" KEY "\n", 0600);
    assert_loaded(load(NULL, g_path, NULL), KEY);
}

Test(ctlcmd_key, api_key_equals_form_with_tabs_and_crlf)
{
    write_file(g_path, "  api_key\t=\t" KEY "  \r\n", 0600);
    assert_loaded(load(NULL, g_path, NULL), KEY);
}

Test(ctlcmd_key, api_key_equals_nothing_is_refused)
{
    write_file(g_path, "api_key =   \n", 0600);
    cr_assert_eq(load(NULL, g_path, NULL), CMSCTL_CMD_KEY_EFORMAT, "%s", g_why);
    cr_assert_not_null(strstr(g_why, g_path), "%s", g_why);
}

Test(ctlcmd_key, a_line_with_spaces_is_not_a_key_and_is_not_echoed)
{
    write_file(g_path, "cms_secretpart and more\n", 0600);
    cr_assert_eq(load(NULL, g_path, NULL), CMSCTL_CMD_KEY_EFORMAT);
    cr_assert_not_null(strstr(g_why, g_path), "%s", g_why);
    cr_assert_null(strstr(g_why, "secretpart"), "the file's text is echoed: %s", g_why);
}

Test(ctlcmd_key, only_comments_is_refused)
{
    write_file(g_path, "# nothing here\n\n#api_key = x\n", 0600);
    cr_assert_eq(load(NULL, g_path, NULL), CMSCTL_CMD_KEY_EFORMAT);
    cr_assert_not_null(strstr(g_why, "holds no key"), "%s", g_why);
}

Test(ctlcmd_key, group_readable_file_is_refused_with_chmod_advice)
{
    char want[256];
    snprintf(want, sizeof want, "chmod 600 %s", g_path);
    write_file(g_path, KEY "\n", 0660);
    cr_assert_eq(load(NULL, g_path, NULL), CMSCTL_CMD_KEY_EUNSAFE, "%s", g_why);
    cr_assert_not_null(strstr(g_why, want), "%s", g_why);
    cr_assert_null(strstr(g_why, KEY), "%s", g_why);
    cr_assert_eq(g_key[0], '\0', "nothing loaded from a refused file");
}

Test(ctlcmd_key, world_readable_or_group_writable_file_is_refused)
{
    write_file(g_path, KEY "\n", 0604);
    cr_assert_eq(load(NULL, g_path, NULL), CMSCTL_CMD_KEY_EUNSAFE, "%s", g_why);
    write_file(g_path, KEY "\n", 0620);
    cr_assert_eq(load(NULL, g_path, NULL), CMSCTL_CMD_KEY_EUNSAFE, "%s", g_why);
    write_file(g_path, KEY "\n", 0602);
    cr_assert_eq(load(NULL, g_path, NULL), CMSCTL_CMD_KEY_EUNSAFE, "%s", g_why);
}

Test(ctlcmd_key, owner_only_modes_are_accepted)
{
    write_file(g_path, KEY "\n", 0400);
    assert_loaded(load(NULL, g_path, NULL), KEY);
    write_file(g_path, KEY "\n", 0700);
    assert_loaded(load(NULL, g_path, NULL), KEY);
}

Test(ctlcmd_key, named_file_that_is_missing_is_an_error_naming_it)
{
    cr_assert_eq(load(NULL, g_path, g_dir), CMSCTL_CMD_KEY_EREAD);
    cr_assert_not_null(strstr(g_why, g_path), "%s", g_why);
    cr_assert_not_null(strstr(g_why, "CMS_CREDENTIALS_FILE"), "%s", g_why);
}

Test(ctlcmd_key, a_directory_is_not_a_credentials_file)
{
    char d[256];
    snprintf(d, sizeof d, "%s/adir", g_dir);
    cr_assert_eq(mkdir(d, 0700), 0);
    cr_assert_eq(load(NULL, d, NULL), CMSCTL_CMD_KEY_EREAD);
    cr_assert_not_null(strstr(g_why, "not a regular file"), "%s", g_why);
}

Test(ctlcmd_key, an_oversized_file_is_refused)
{
    size_t n = CMSCTL_CMD_KEY_FILE_MAX + 10;
    char *big = malloc(n + 1);
    cr_assert_not_null(big);
    memset(big, '#', n);
    big[n] = '\0';
    write_file(g_path, big, 0600);
    free(big);
    cr_assert_eq(load(NULL, g_path, NULL), CMSCTL_CMD_KEY_EREAD);
    cr_assert_not_null(strstr(g_why, "larger than"), "%s", g_why);
}

Test(ctlcmd_key, default_file_under_home)
{
    char p[256];
    snprintf(p, sizeof p, "%s/.config", g_dir);
    cr_assert_eq(mkdir(p, 0700), 0);
    snprintf(p, sizeof p, "%s/.config/cms", g_dir);
    cr_assert_eq(mkdir(p, 0700), 0);
    snprintf(p, sizeof p, "%s/.config/cms/credentials", g_dir);
    write_file(p, "api_key = " KEY "\n", 0600);
    assert_loaded(load(NULL, NULL, g_dir), KEY);
    /* and the same rule on its mode */
    cr_assert_eq(chmod(p, 0644), 0);
    cr_assert_eq(load(NULL, NULL, g_dir), CMSCTL_CMD_KEY_EUNSAFE);
    cr_assert_not_null(strstr(g_why, "chmod 600"), "%s", g_why);
}

Test(ctlcmd_key, nothing_anywhere_says_where_it_looked)
{
    char p[256];
    snprintf(p, sizeof p, "%s/.config/cms/credentials", g_dir);
    cr_assert_eq(load(NULL, NULL, g_dir), CMSCTL_CMD_KEY_ENONE);
    cr_assert_not_null(strstr(g_why, "CMS_API_KEY"), "%s", g_why);
    cr_assert_not_null(strstr(g_why, "CMS_CREDENTIALS_FILE"), "%s", g_why);
    cr_assert_not_null(strstr(g_why, p), "%s", g_why);
}

Test(ctlcmd_key, nothing_and_no_home)
{
    cr_assert_eq(load(NULL, NULL, NULL), CMSCTL_CMD_KEY_ENONE);
    cr_assert_not_null(strstr(g_why, "HOME is not set"), "%s", g_why);
}

Test(ctlcmd_key, key_longer_than_the_maximum_is_refused)
{
    char long_key[CMSCTL_CMD_KEY_MAX + 2];
    memset(long_key, 'k', sizeof long_key - 1);
    long_key[sizeof long_key - 1] = '\0';
    cr_assert_eq(load(long_key, NULL, NULL), CMSCTL_CMD_KEY_EFORMAT);
    long_key[CMSCTL_CMD_KEY_MAX] = '\0';
    assert_loaded(load(long_key, NULL, NULL), long_key);
}

/* ------------------------------------------------------------------------ */
/* replies */

static uint8_t *pack_reply(const Cms__V1__Reply *r, size_t *len)
{
    *len = cms__v1__reply__get_packed_size(r);
    uint8_t *buf = malloc(*len + 1);
    cr_assert_not_null(buf);
    cms__v1__reply__pack(r, buf);
    return buf;
}

Test(ctlcmd_reply, result_is_unpacked_as_the_expected_message)
{
    Cms__V1__Identity id = CMS__V1__IDENTITY__INIT;
    id.id = (char *)"0190aa00-0000-7000-8000-000000000001";
    id.name = (char *)"alice";
    id.created_at_us = 1700000000123456;
    uint8_t body[256];
    size_t blen = cms__v1__identity__pack(&id, body);
    Cms__V1__Reply r = CMS__V1__REPLY__INIT;
    r.outcome_case = CMS__V1__REPLY__OUTCOME_RESULT;
    r.result.data = body;
    r.result.len = blen;
    size_t len;
    uint8_t *buf = pack_reply(&r, &len);
    ProtobufCMessage *out = NULL;
    cmsctl_cmd_error e = {.code = 0};
    cr_assert_eq(cmsctl_cmd_reply_decode(buf, len, &cms__v1__identity__descriptor, &out, &e),
                 CMSCTL_CMD_REPLY_OK);
    Cms__V1__Identity *got = (Cms__V1__Identity *)out;
    cr_assert_str_eq(got->name, "alice");
    cr_assert_eq(got->created_at_us, 1700000000123456);
    cms__v1__identity__free_unpacked(got, NULL);
    free(buf);
}

Test(ctlcmd_reply, error_keeps_code_field_and_message_and_prints_them)
{
    Cms__V1__Error err = CMS__V1__ERROR__INIT;
    err.code = CMS__V1__ERROR_CODE__ALREADY_EXISTS;
    err.field = (char *)"name";
    err.message = (char *)"an identity named \"alice\" exists\x1b[31m";
    Cms__V1__Reply r = CMS__V1__REPLY__INIT;
    r.outcome_case = CMS__V1__REPLY__OUTCOME_ERROR;
    r.error = &err;
    size_t len;
    uint8_t *buf = pack_reply(&r, &len);
    ProtobufCMessage *out = NULL;
    cmsctl_cmd_error e = {.code = 0};
    cr_assert_eq(cmsctl_cmd_reply_decode(buf, len, &cms__v1__identity__descriptor, &out, &e),
                 CMSCTL_CMD_REPLY_ERROR);
    cr_assert_null(out);
    cr_assert_eq(e.code, CMS__V1__ERROR_CODE__ALREADY_EXISTS);
    cr_assert_str_eq(e.field, "name");
    /* the escape character cannot reach the terminal */
    cr_assert_str_eq(e.message, "an identity named \"alice\" exists?[31m");
    free(buf);

    char path[64] = "/tmp/cmsctl-reply-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    fflush(stderr);
    int saved = dup(2);
    dup2(fd, 2);
    int status = cmsctl_cmd_error_print("cmsctl identity create", &e);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    cr_assert_eq(status, 1);
    char text[1024] = "";
    ssize_t n = pread(fd, text, sizeof text - 1, 0);
    close(fd);
    unlink(path);
    cr_assert_gt(n, 0);
    text[n] = '\0';
    cr_assert_str_eq(text, "cmsctl identity create: ALREADY_EXISTS (name): an identity named "
                           "\"alice\" exists?[31m\n");
}

Test(ctlcmd_reply, garbage_and_empty_replies_are_refused)
{
    const uint8_t junk[] = {0xff, 0xff, 0xff, 0xff};
    ProtobufCMessage *out = NULL;
    cmsctl_cmd_error e = {.code = 0};
    cr_assert_eq(
        cmsctl_cmd_reply_decode(junk, sizeof junk, &cms__v1__identity__descriptor, &out, &e),
        CMSCTL_CMD_REPLY_EDECODE);
    /* an empty Reply has neither result nor error */
    cr_assert_eq(cmsctl_cmd_reply_decode(junk, 0, &cms__v1__identity__descriptor, &out, &e),
                 CMSCTL_CMD_REPLY_EDECODE);
    cr_assert_null(out);
}

Test(ctlcmd_reply, unknown_code_has_a_name)
{
    char buf[24];
    /* google.rpc.Code's numbers */
    cr_assert_str_eq(cmsctl_cmd_code_name(7, buf), "PERMISSION_DENIED");
    cr_assert_str_eq(cmsctl_cmd_code_name(14, buf), "UNAVAILABLE");
    cr_assert_str_eq(cmsctl_cmd_code_name(42, buf), "ERROR_42");
    cr_assert_str_eq(cmsctl_cmd_code_name(0, buf), "ERROR_0", "UNSPECIFIED is never an error");
}

/* ------------------------------------------------------------------------ */
/* times */

Test(ctlcmd_time, format_utc)
{
    char t[CMSCTL_CMD_TIME_MAX];
    cr_assert_str_eq(cmsctl_cmd_time_format(1700000000123456, false, t), "2023-11-14T22:13:20Z");
    cr_assert_str_eq(cmsctl_cmd_time_format(1700000000123456, true, t),
                     "2023-11-14T22:13:20.123456Z");
    cr_assert_str_eq(cmsctl_cmd_time_format(-1, true, t), "1969-12-31T23:59:59.999999Z");
    cr_assert_str_eq(cmsctl_cmd_time_format(0, true, t), "", "0 is the wire's unset");
}

Test(ctlcmd_time, parse_rfc3339)
{
    int64_t us = 0;
    cr_assert(cmsctl_cmd_time_parse("2023-11-14T22:13:20Z", &us));
    cr_assert_eq(us, 1700000000000000);
    cr_assert(cmsctl_cmd_time_parse("2023-11-14t22:13:20.123456z", &us));
    cr_assert_eq(us, 1700000000123456);
    cr_assert(cmsctl_cmd_time_parse("2023-11-15T00:13:20.5+02:00", &us));
    cr_assert_eq(us, 1700000000500000);
    cr_assert(cmsctl_cmd_time_parse("2023-11-14T20:43:20-01:30", &us));
    cr_assert_eq(us, 1700000000000000);
    cr_assert(cmsctl_cmd_time_parse("2024-02-29T00:00:00Z", &us), "a leap day");
    char t[CMSCTL_CMD_TIME_MAX];
    cr_assert_str_eq(cmsctl_cmd_time_format(us, false, t), "2024-02-29T00:00:00Z");
}

Test(ctlcmd_time, parse_refuses_what_is_not_rfc3339)
{
    const char *bad[] = {"",
                         "2023-11-14",
                         "2023-11-14T22:13:20",
                         "2023-11-14T22:13Z",
                         "2023-13-01T00:00:00Z",
                         "2023-02-29T00:00:00Z",
                         "2023-11-14T24:00:00Z",
                         "2023-11-14T22:13:20.Z",
                         "2023-11-14T22:13:20+0200",
                         "2023-11-14T22:13:20Z trailing",
                         "tomorrow"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int64_t us = 7;
        cr_assert_not(cmsctl_cmd_time_parse(bad[i], &us), "accepted \"%s\"", bad[i]);
        cr_assert_eq(us, 7, "output touched for \"%s\"", bad[i]);
    }
}
