/* Rotating the key API keys are hashed with, against the real servers:
 * with the new key and the old one as --identity-previous-key-file, keys
 * hashed with the old one still authenticate and a key issued now is hashed
 * with the new one; once the old key is dropped, only the keys made since
 * authenticate. */
#include "cms/v1/command.pb-c.h"
#include "cms/v1/identity.pb-c.h"
#include "svcfx.h"
#include "testenv.h"

#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define OK 0

static svcfx F;
static char g_field[256], g_msg[256];
static char previous[160];

static void setup(void)
{
    svcfx_setup(&F, "identity_rotation");
    snprintf(previous, sizeof previous, "%s.previous", F.key_file);
}

static void teardown(void)
{
    unlink(previous);
    svcfx_teardown(&F);
}

TestSuite(rotation, .init = setup, .fini = teardown, .timeout = 120);

static int get_as(const char *key, const char *name)
{
    return svcfx_identity_get(&F, key, name, NULL, g_field, g_msg);
}

static void copy_file(const char *from, const char *to)
{
    char buf[256];
    int in = open(from, O_RDONLY), out = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    cr_assert(in >= 0 && out >= 0, "%s -> %s", from, to);
    ssize_t n = read(in, buf, sizeof buf);
    cr_assert_gt(n, 0);
    cr_assert_eq(write(out, buf, (size_t)n), n);
    close(in);
    close(out);
}

/* A new random key (64 hex digits, mode 600) in the fixture's key file. */
static void new_key(void)
{
    unsigned char raw[32];
    FILE *r = fopen("/dev/urandom", "rb");
    cr_assert_not_null(r);
    cr_assert_eq(fread(raw, 1, sizeof raw, r), sizeof raw);
    fclose(r);
    char hex[65];
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", raw[i]);
    int fd = open(F.key_file, O_WRONLY | O_TRUNC);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, hex, 64), 64);
    close(fd);
}

Test(rotation, keys_of_the_previous_key_authenticate_until_it_is_dropped)
{
    svcfx_start(&F, "cms-identity", NULL);
    cr_assert_eq(get_as(F.admin_key, "admin"), OK, "the admin's key, hashed with the first key");
    cr_assert_eq(svcfx_stop(&F), 0);

    /* rotate: the new key in place, the old one as the previous */
    copy_file(F.key_file, previous);
    new_key();
    char prev_env[200];
    snprintf(prev_env, sizeof prev_env, "CMS_IDENTITY_PREVIOUS_KEY_FILE=%s", previous);
    const char *with_previous[] = {prev_env, NULL};
    svcfx_start(&F, "cms-identity", with_previous);
    cr_assert_eq(get_as(F.admin_key, "admin"), OK, "an old key still authenticates");
    Cms__V1__IssueCredential m = CMS__V1__ISSUE_CREDENTIAL__INIT;
    Cms__V1__Identity *admin = NULL;
    cr_assert_eq(svcfx_identity_get(&F, F.admin_key, "admin", &admin, g_field, g_msg), OK);
    m.identity_id = admin->id;
    m.type = (char *)"api_key";
    m.expires_at_us = ((int64_t)time(NULL) + 86400) * 1000000;
    Cms__V1__Credential *cred = NULL;
    cr_assert_eq(svcfx_call(&F, "identity", F.admin_key, NULL, "issue_credential", &m.base,
                            &cms__v1__credential__descriptor, (ProtobufCMessage **)&cred, g_field,
                            g_msg),
                 OK, "issue: %s %s", g_field, g_msg);
    char fresh[256];
    snprintf(fresh, sizeof fresh, "%s", cred->api_key);
    cms__v1__credential__free_unpacked(cred, NULL);
    cms__v1__identity__free_unpacked(admin, NULL);
    cr_assert_eq(get_as(fresh, "admin"), OK, "a key issued during the rotation");
    cr_assert_eq(svcfx_stop(&F), 0);

    /* the old key dropped: only what was hashed with the new one is let in */
    svcfx_start(&F, "cms-identity", NULL);
    cr_assert_eq(get_as(fresh, "admin"), OK, "the key issued during the rotation, after it");
    cr_assert_neq(get_as(F.admin_key, "admin"), OK, "a key of the dropped key is refused");
}

Test(rotation, a_previous_key_file_that_others_can_read_stops_the_start)
{
    copy_file(F.key_file, previous);
    cr_assert_eq(chmod(previous, 0644), 0);
    char prev_env[200];
    snprintf(prev_env, sizeof prev_env, "CMS_IDENTITY_PREVIOUS_KEY_FILE=%s", previous);
    char dburl[640], db[600];
    cms_test_db_as(F.db, "identity", db, sizeof db);
    snprintf(dburl, sizeof dburl, "CMS_DATABASE_URL=%s", db);
    const char *all[] = {dburl, F.key_env, prev_env, NULL};
    int pid = cms_test_spawn_service("cms-identity", NULL, all, F.log_file);
    cr_assert_gt(pid, 0);
    int status = 0;
    cr_assert_eq(cms_test_wait_exit(pid, 20000, &status), pid, "cms-identity exits");
    cr_assert_neq(status, 0, "refused to start");
    char *log = svcfx_log(&F);
    cr_assert_not_null(strstr(log, "previous identity key cannot be used"), "%s", log);
    free(log);
}
