/* cmsctl identity, cmsctl credential and cmsctl whoami, run as a program
 * against a real cms-identity (tests/lib/svcfx) on the throwaway PostgreSQL
 * and nats-server: create and get (table, -o json, --json, -o ndjson), list
 * pages with the cursor and --all, status changes with a reason, an API key
 * issued once, usable, listed without its secret, then revoked and refused;
 * whoami for a key and for a refused one; the shared options before the
 * verb; "no results" on stderr with stdout empty; the service's errors
 * printed with their code and field; where the key comes from and what
 * happens when it is missing or exposed.
 *
 * The suite cmsctl_wire needs no cms-identity: a responder of the test's
 * own on a subject root of its own checks what cmsctl puts on the wire (the
 * Authorization and Cms-Request-Id headers) and that a write is resent with
 * the same request id when no reply comes, and a read is not. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <nats/nats.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cms/v1/command.pb-c.h"
#include "cms/v1/identity.pb-c.h"
#include "svcfx.h"
#include "testenv.h"
#include "testproc.h"
#include "uuid.h"

#define WATCHDOG_MS 60000

static char g_bin[1024];
static svcfx g_f;

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

static size_t count(const char *text, const char *what)
{
    size_t n = 0;
    for (const char *p = strstr(text, what); p != NULL; p = strstr(p + 1, what))
        n++;
    return n;
}

static json_t *parse_json(const cms_test_proc *p)
{
    json_error_t e;
    json_t *v = json_loads(p->out, 0, &e);
    cr_assert_not_null(v, "stdout is not JSON (%s):\n%s", e.text, p->out);
    return v;
}

static const char *jget_str(const json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    cr_assert(json_is_string(v), "\"%s\" is not a string", key);
    return json_string_value(v);
}

/* "2024-03-20T15:00:00.123456Z" for us, as cmsctl's -o json renders times. */
static void rfc3339_us(int64_t us, char out[64])
{
    time_t s = (time_t)(us / 1000000);
    struct tm tm;
    cr_assert_not_null(gmtime_r(&s, &tm));
    char d[24];
    strftime(d, sizeof d, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, 64, "%s.%06lldZ", d, (long long)(us % 1000000));
}

/* A "*_at" and its "*_at_us" agree. */
static void assert_time_pair(const json_t *o, const char *name)
{
    char key[64], want[64];
    snprintf(key, sizeof key, "%s_us", name);
    json_t *us = json_object_get(o, key);
    cr_assert(json_is_integer(us), "%s is not an integer", key);
    cr_assert_gt(json_integer_value(us), 0, "%s", key);
    rfc3339_us(json_integer_value(us), want);
    cr_assert_str_eq(jget_str(o, name), want);
}

static void use_key(const char *key)
{
    cr_assert_eq(setenv("CMS_API_KEY", key, 1), 0);
}

/* Creates an identity with cmsctl; its id into id. */
static void create(const char *name, const char *type, char id[37])
{
    cms_test_proc *p = RUN("identity", "create", name, "--type", type);
    assert_exit(p, 0);
    char *v = line_value(p->out, "id");
    cr_assert_not_null(v, "no id line:\n%s", p->out);
    snprintf(id, 37, "%s", v);
    free(v);
    cms_test_proc_free(p);
}

static void env_init(const char *prefix)
{
    snprintf(g_bin, sizeof g_bin, "%s/cmsctl", cms_test_env("CMS_TEST_BIN_DIR"));
    cr_assert_eq(access(g_bin, X_OK), 0, "%s is not there: build the cmsctl target", g_bin);
    cr_assert_eq(setenv("CMS_NATS_URL", cms_test_env("CMS_TEST_NATS_URL"), 1), 0);
    cr_assert_eq(setenv("CMS_COMMAND_PREFIX", prefix, 1), 0);
    unsetenv("CMS_CREDENTIALS_FILE");
}

static void setup(void)
{
    svcfx_setup(&g_f, "cmsctl_identity");
    env_init(g_f.prefix);
    use_key(g_f.admin_key);
    svcfx_start(&g_f, "cms-identity", NULL);
}

static void teardown(void)
{
    svcfx_teardown(&g_f);
}

TestSuite(cmsctl_identity, .init = setup, .fini = teardown);

/* ------------------------------------------------------------------------ */
/* identities */

Test(cmsctl_identity, create_then_get_as_table_and_json)
{
    cms_test_proc *p =
        RUN("identity", "create", "alice", "--type", "user", "--metadata",
            "{\"team\": \"risk\", \"roles\": [\"auditor\"]}", "--roles", "ops, auditor");
    assert_exit(p, 0);
    char *id = line_value(p->out, "id");
    char *name = line_value(p->out, "name");
    char *status = line_value(p->out, "status");
    char *roles = line_value(p->out, "roles");
    char *created = line_value(p->out, "created_at");
    cr_assert_not_null(id, "%s", p->out);
    cms_uuid u;
    cr_assert(cms_uuid_parse(id, strlen(id), &u), "id %s", id);
    cr_assert_str_eq(name, "alice");
    cr_assert_str_eq(status, "active");
    cr_assert_str_eq(roles, "auditor,ops", "--roles merged after the metadata's own");
    cr_assert_eq(strlen(created), strlen("2024-03-20T15:00:00Z"), "%s", created);
    cr_assert_eq(created[strlen(created) - 1], 'Z');
    cms_test_proc_free(p);

    /* by name, -o json */
    p = RUN("identity", "get", "alice", "-o", "json");
    assert_exit(p, 0);
    json_t *o = parse_json(p);
    cr_assert(json_is_object(o));
    cr_assert_str_eq(jget_str(o, "id"), id);
    cr_assert_str_eq(jget_str(o, "name"), "alice");
    cr_assert_str_eq(jget_str(o, "type"), "user");
    cr_assert_str_eq(jget_str(o, "status"), "active");
    json_t *md = json_object_get(o, "metadata");
    cr_assert(json_is_object(md), "metadata is an object");
    cr_assert_str_eq(jget_str(md, "team"), "risk");
    json_t *jr = json_object_get(md, "roles");
    cr_assert_eq(json_array_size(jr), 2);
    cr_assert_str_eq(json_string_value(json_array_get(jr, 0)), "auditor");
    cr_assert_str_eq(json_string_value(json_array_get(jr, 1)), "ops");
    assert_time_pair(o, "created_at");
    assert_time_pair(o, "updated_at");
    /* the table shows the same instant to the second */
    cr_assert_eq(strncmp(jget_str(o, "created_at"), created, 19), 0, "%s vs %s",
                 jget_str(o, "created_at"), created);
    json_decref(o);
    cms_test_proc_free(p);

    /* by id (upper case is still an id), table */
    char upper[37];
    for (size_t i = 0; i <= strlen(id); i++)
        upper[i] = (char)((id[i] >= 'a' && id[i] <= 'f') ? id[i] - 32 : id[i]);
    p = RUN("identity", "get", upper);
    assert_exit(p, 0);
    char *name2 = line_value(p->out, "name");
    cr_assert_str_eq(name2, "alice");
    cms_test_proc_free(p);

    /* the name is taken */
    p = RUN("identity", "create", "alice", "--type", "enclave");
    assert_exit(p, 1);
    cr_assert_not_null(strstr(p->err, "cmsctl identity create: ALREADY_EXISTS (name): "), "%s",
                       p->err);
    cr_assert_eq(p->out[0], '\0', "nothing on stdout: %s", p->out);
    cms_test_proc_free(p);

    /* nobody by that name */
    p = RUN("identity", "get", "nobody-here");
    assert_exit(p, 1);
    cr_assert_not_null(strstr(p->err, "cmsctl identity get: NOT_FOUND"), "%s", p->err);
    cms_test_proc_free(p);

    free(id);
    free(name);
    free(name2);
    free(status);
    free(roles);
    free(created);
}

Test(cmsctl_identity, bad_type_is_invalid_argument_naming_the_field)
{
    cms_test_proc *p = RUN("identity", "create", "robbie", "--type", "robot");
    assert_exit(p, 1);
    cr_assert_not_null(strstr(p->err, "cmsctl identity create: INVALID_ARGUMENT (type): "), "%s",
                       p->err);
    cms_test_proc_free(p);
    /* and nothing was created */
    char *n = svcfx_sql(&g_f, "SELECT count(*) FROM identities WHERE name = 'robbie'");
    cr_assert_str_eq(n, "0");
    free(n);

    /* what cmsctl itself must understand is a usage error (exit 2), sent nowhere
     */
    p = RUN("identity", "create", "robbie", "--type", "user", "--metadata", "{not json");
    assert_exit(p, 2);
    cr_assert_not_null(strstr(p->err, "--metadata is not JSON"), "%s", p->err);
    cms_test_proc_free(p);
    p = RUN("identity", "create", "--type", "user");
    assert_exit(p, 2);
    cr_assert_not_null(strstr(p->err, "NAME is needed"), "%s", p->err);
    cms_test_proc_free(p);
    p = RUN("identity", "frobnicate");
    assert_exit(p, 2);
    cms_test_proc_free(p);
    p = RUN("credential", "revoke", "not-a-uuid");
    assert_exit(p, 2);
    cr_assert_not_null(strstr(p->err, "is not a UUID"), "%s", p->err);
    cms_test_proc_free(p);
}

/* The ids of a --json list, in order, appended to ids. */
static size_t collect_ids(const cms_test_proc *p, char ids[][37], size_t n)
{
    json_t *a = parse_json(p);
    cr_assert(json_is_array(a), "a list is an array:\n%s", p->out);
    size_t i;
    json_t *v;
    json_array_foreach(a, i, v)
    {
        cr_assert_lt(n, 16);
        snprintf(ids[n++], 37, "%s", jget_str(v, "id"));
        cr_assert_str_eq(jget_str(v, "type"), "enclave");
    }
    json_decref(a);
    return n;
}

Test(cmsctl_identity, list_pages_by_cursor_and_all)
{
    char made[5][37], key[CMS_APIKEY_LEN + 1];
    for (int i = 0; i < 5; i++) {
        char name[32];
        snprintf(name, sizeof name, "robot-%d", i);
        svcfx_insert(&g_f, name, "enclave", "active", "{}", 3600, made[i], key);
    }
    char *total = svcfx_sql(&g_f, "SELECT count(*) FROM identities WHERE type = 'enclave'");
    cr_assert_str_eq(total, "5", "only the test's enclaves");
    free(total);

    /* page by page with the cursor cmsctl prints */
    char paged[16][37];
    size_t n = 0;
    char *after = NULL;
    for (int page = 0; page < 5; page++) {
        cms_test_proc *p =
            after == NULL ? RUN("identity", "list", "--type", "enclave", "--limit", "2", "--json")
                          : RUN("identity", "list", "--type", "enclave", "--limit", "2", "--json",
                                "--after", after);
        assert_exit(p, 0);
        size_t before = n;
        n = collect_ids(p, paged, n);
        cr_assert_leq(n - before, 2, "at most --limit per page");
        free(after);
        after = NULL;
        const char *next = strstr(p->err, "next: --after ");
        if (next != NULL) {
            next += strlen("next: --after ");
            after = strndup(next, strcspn(next, "\n"));
        }
        cms_test_proc_free(p);
        if (after == NULL)
            break;
    }
    cr_assert_null(after, "paging ended");
    cr_assert_eq(n, 5, "every enclave once");

    /* --all follows the pages itself: the same rows in the same order */
    cms_test_proc *p =
        RUN("identity", "list", "--type", "enclave", "--limit", "2", "--all", "--json");
    assert_exit(p, 0);
    char all[16][37];
    size_t m = collect_ids(p, all, 0);
    cr_assert_eq(m, 5);
    for (size_t i = 0; i < 5; i++)
        cr_assert_str_eq(all[i], paged[i], "row %zu", i);
    cr_assert_null(strstr(p->err, "next:"), "%s", p->err);
    cms_test_proc_free(p);
    for (int i = 0; i < 5; i++) {
        bool seen = false;
        for (size_t j = 0; j < 5; j++)
            seen = seen || strcmp(made[i], all[j]) == 0;
        cr_assert(seen, "%s listed", made[i]);
    }

    /* the table: a header, one row each, the cursor line on stdout */
    p = RUN("identity", "list", "--type", "enclave", "--limit", "2");
    assert_exit(p, 0);
    cr_assert_eq(strncmp(p->out, "ID ", 3), 0, "%s", p->out);
    cr_assert_eq(count(p->out, "robot-"), 2, "%s", p->out);
    cr_assert_not_null(strstr(p->out, "\nnext: --after "), "%s", p->out);
    cms_test_proc_free(p);
    p = RUN("identity", "list", "--type", "enclave", "--limit", "2", "--all");
    assert_exit(p, 0);
    cr_assert_eq(count(p->out, "robot-"), 5, "%s", p->out);
    cr_assert_null(strstr(p->out, "next:"), "%s", p->out);
    cms_test_proc_free(p);

    p = RUN("identity", "list", "--limit", "0");
    assert_exit(p, 2);
    cms_test_proc_free(p);
}

Test(cmsctl_identity, suspend_then_activate_with_reason)
{
    char id[37];
    create("bob", "user", id);

    /* by name: looked up, then set_status by id */
    cms_test_proc *p = RUN("identity", "suspend", "bob", "--reason", "audit hold");
    assert_exit(p, 0);
    char *st = line_value(p->out, "status");
    cr_assert_str_eq(st, "suspended");
    free(st);
    cms_test_proc_free(p);
    char *db = svcfx_sql(&g_f, "SELECT status FROM identities WHERE name = 'bob'");
    cr_assert_str_eq(db, "suspended");
    free(db);

    /* by id, --json */
    p = RUN("identity", "activate", id, "--reason", "cleared", "--json");
    assert_exit(p, 0);
    json_t *o = parse_json(p);
    cr_assert_str_eq(jget_str(o, "id"), id);
    cr_assert_str_eq(jget_str(o, "status"), "active");
    json_decref(o);
    cms_test_proc_free(p);
    db = svcfx_sql(&g_f, "SELECT status FROM identities WHERE name = 'bob'");
    cr_assert_str_eq(db, "active");
    free(db);

    p = RUN("identity", "deactivate", "bob");
    assert_exit(p, 0);
    st = line_value(p->out, "status");
    cr_assert_str_eq(st, "inactive");
    free(st);
    cms_test_proc_free(p);

    p = RUN("identity", "suspend", "no-such-identity");
    assert_exit(p, 1);
    cr_assert_not_null(strstr(p->err, "cmsctl identity suspend: NOT_FOUND"), "%s", p->err);
    cms_test_proc_free(p);
}

/* ------------------------------------------------------------------------ */
/* credentials */

Test(cmsctl_identity, api_key_issued_once_usable_listed_without_secret_revoked_refused)
{
    char id[37];
    create("carol", "user", id);

    cms_test_proc *p = RUN("credential", "issue", "carol", "--type", "api_key", "--expires-in",
                           "12h", "--metadata", "{\"purpose\": \"ci\"}");
    assert_exit(p, 0);
    char *key = line_value(p->out, "api_key");
    char *cid = line_value(p->out, "id");
    char *owner = line_value(p->out, "identity_id");
    cr_assert_not_null(key, "no api_key line:\n%s", p->out);
    cr_assert_eq(strlen(key), CMS_APIKEY_LEN, "%s", key);
    cr_assert_eq(strncmp(key, "cms_", 4), 0);
    cr_assert_eq(count(p->out, key), 1, "the key is printed once");
    cr_assert_null(strstr(p->err, key), "not on stderr");
    cr_assert_not_null(strstr(p->err, "shown only this once"), "%s", p->err);
    cr_assert_str_eq(owner, id);
    char *type = line_value(p->out, "type");
    cr_assert_str_eq(type, "api_key");
    free(type);
    cms_test_proc_free(p);
    /* and the service kept only a hash */
    char q[256];
    snprintf(q, sizeof q, "SELECT value FROM credentials WHERE id = '%s'", cid);
    char *stored = svcfx_sql(&g_f, q);
    cr_assert_eq(strncmp(stored, "b2:", 3), 0, "%s", stored);
    free(stored);

    /* the new key works */
    use_key(key);
    p = RUN("identity", "get", "carol");
    assert_exit(p, 0);
    char *name = line_value(p->out, "name");
    cr_assert_str_eq(name, "carol");
    free(name);
    cms_test_proc_free(p);

    /* listed (by the admin and by carol herself), never with a secret */
    const char *secret = key + strlen("cms_") + 32 + 1; /* "cms_<32 hex>_<secret>" */
    for (int who = 0; who < 2; who++) {
        use_key(who == 0 ? g_f.admin_key : key);
        p = RUN("credential", "list", "carol");
        assert_exit(p, 0);
        cr_assert_not_null(strstr(p->out, cid), "%s", p->out);
        cr_assert_null(strstr(p->out, secret), "a secret in the list:\n%s", p->out);
        cr_assert_null(strstr(p->out, "cms_"), "a key in the list:\n%s", p->out);
        cms_test_proc_free(p);
        p = RUN("credential", "list", id, "--json");
        assert_exit(p, 0);
        cr_assert_null(strstr(p->out, secret), "a secret in the list:\n%s", p->out);
        json_t *a = parse_json(p);
        cr_assert_eq(json_array_size(a), 1, "%s", p->out);
        json_t *c = json_array_get(a, 0);
        cr_assert_str_eq(jget_str(c, "id"), cid);
        cr_assert_str_eq(jget_str(c, "status"), "active");
        cr_assert_null(json_object_get(c, "api_key"));
        cr_assert(json_is_null(json_object_get(c, "revoked_at")));
        assert_time_pair(c, "expires_at");
        int64_t ttl = json_integer_value(json_object_get(c, "expires_at_us")) -
                      json_integer_value(json_object_get(c, "created_at_us"));
        cr_assert(ttl > 11 * 3600LL * 1000000 && ttl <= 12 * 3600LL * 1000000 + 60000000,
                  "--expires-in 12h gave %lld us", (long long)ttl);
        cr_assert_str_eq(jget_str(json_object_get(c, "metadata"), "purpose"), "ci");
        json_decref(a);
        cms_test_proc_free(p);
    }

    /* revoked (by the admin), then refused */
    use_key(g_f.admin_key);
    p = RUN("credential", "revoke", cid, "--reason", "leaked");
    assert_exit(p, 0);
    char *st = line_value(p->out, "status");
    char *rev = line_value(p->out, "revoked_at");
    cr_assert_str_eq(st, "revoked");
    cr_assert_neq(rev[0], '-', "revoked_at is set: %s", rev);
    cr_assert_null(line_value(p->out, "api_key"), "no key outside issue");
    free(st);
    free(rev);
    cms_test_proc_free(p);

    use_key(key);
    p = RUN("identity", "get", "carol");
    assert_exit(p, 1);
    cr_assert_not_null(strstr(p->err, "cmsctl identity get: PERMISSION_DENIED"), "%s", p->err);
    cr_assert_null(strstr(p->err, secret), "the key is not echoed: %s", p->err);
    cms_test_proc_free(p);

    free(key);
    free(cid);
    free(owner);
}

Test(cmsctl_identity, issue_json_with_expires_at_and_errors)
{
    char id[37];
    create("dave", "machine", id);
    /* midnight UTC 30 days ahead, written as 02:00 at +02:00 */
    time_t day = (time(NULL) / 86400 + 30) * 86400;
    struct tm tm;
    char at[64], want_at[64];
    cr_assert_not_null(gmtime_r(&day, &tm));
    strftime(at, sizeof at, "%Y-%m-%dT02:00:00+02:00", &tm);
    strftime(want_at, sizeof want_at, "%Y-%m-%dT00:00:00.000000Z", &tm);
    cms_test_proc *p =
        RUN("credential", "issue", id, "--type", "api_key", "--expires-at", at, "--json");
    assert_exit(p, 0);
    json_t *o = parse_json(p);
    const char *key = jget_str(o, "api_key");
    cr_assert_eq(strlen(key), CMS_APIKEY_LEN);
    cr_assert_eq(count(p->out, key), 1);
    cr_assert_eq(json_integer_value(json_object_get(o, "expires_at_us")),
                 (json_int_t)day * 1000000);
    cr_assert_str_eq(jget_str(o, "expires_at"), want_at);
    cr_assert_str_eq(jget_str(o, "identity_id"), id);
    json_decref(o);
    cms_test_proc_free(p);

    /* the service's checks reach the user with the field at fault */
    p = RUN("credential", "issue", "dave", "--type", "password", "--expires-in", "1h");
    assert_exit(p, 1);
    cr_assert_not_null(strstr(p->err, "cmsctl credential issue: INVALID_ARGUMENT (type): "), "%s",
                       p->err);
    cms_test_proc_free(p);
    p = RUN("credential", "issue", "nobody-here", "--type", "api_key", "--expires-in", "1h");
    assert_exit(p, 1);
    cr_assert_not_null(strstr(p->err, "cmsctl credential issue: NOT_FOUND"), "%s", p->err);
    cms_test_proc_free(p);
    /* and cmsctl's own */
    p = RUN("credential", "issue", "dave", "--type", "api_key");
    assert_exit(p, 2);
    cr_assert_not_null(strstr(p->err, "--expires-in"), "%s", p->err);
    cms_test_proc_free(p);
    p = RUN("credential", "issue", "dave", "--type", "api_key", "--expires-in", "1h",
            "--expires-at", "2099-01-01T00:00:00Z");
    assert_exit(p, 2);
    cms_test_proc_free(p);
    p = RUN("credential", "issue", "dave", "--type", "api_key", "--expires-at", "next week");
    assert_exit(p, 2);
    cr_assert_not_null(strstr(p->err, "RFC 3339"), "%s", p->err);
    cms_test_proc_free(p);
}

/* ------------------------------------------------------------------------ */
/* output shapes, "no results", shared options */

/* The lines of text, each parsed as one JSON object; their count. */
static size_t ndjson_objects(const char *text, json_t **out, size_t cap)
{
    size_t n = 0;
    for (const char *l = text; *l != '\0';) {
        const char *nl = strchr(l, '\n');
        cr_assert_not_null(nl, "every line ends with a newline: %s", text);
        char *line = strndup(l, (size_t)(nl - l));
        json_t *o = json_loads(line, 0, NULL);
        cr_assert(json_is_object(o), "not one compact object a line: %s", line);
        cr_assert_null(strchr(line, '\n'));
        free(line);
        cr_assert_lt(n, cap);
        out[n++] = o;
        l = nl + 1;
    }
    return n;
}

Test(cmsctl_identity, json_is_one_document_and_ndjson_one_object_a_line)
{
    char a[37], b[37];
    create("nd-one", "machine", a);
    create("nd-two", "machine", b);

    /* one item: json is a pretty object, ndjson one compact line */
    cms_test_proc *p = RUN("identity", "get", "nd-one", "-o", "ndjson");
    assert_exit(p, 0);
    json_t *objs[8];
    cr_assert_eq(ndjson_objects(p->out, objs, 8), 1, "%s", p->out);
    cr_assert_str_eq(jget_str(objs[0], "id"), a);
    assert_time_pair(objs[0], "created_at");
    json_decref(objs[0]);
    cms_test_proc_free(p);
    p = RUN("identity", "get", "nd-one", "--output=json");
    assert_exit(p, 0);
    cr_assert_eq(strncmp(p->out, "{\n  \"", 5), 0, "pretty-printed: %s", p->out);
    cms_test_proc_free(p);

    /* a list: json is one array, ndjson one object per line, the same rows */
    p = RUN("identity", "list", "--type", "machine", "-ojson");
    assert_exit(p, 0);
    json_t *arr = parse_json(p);
    cr_assert(json_is_array(arr), "%s", p->out);
    size_t n = json_array_size(arr);
    cr_assert_geq(n, 2);
    cms_test_proc_free(p);
    p = RUN("identity", "list", "--type", "machine", "-o", "ndjson");
    assert_exit(p, 0);
    json_t *rows[16];
    cr_assert_eq(ndjson_objects(p->out, rows, 16), n, "%s", p->out);
    for (size_t i = 0; i < n; i++) {
        cr_assert_str_eq(jget_str(rows[i], "id"), jget_str(json_array_get(arr, i), "id"));
        json_decref(rows[i]);
    }
    json_decref(arr);
    cms_test_proc_free(p);

    /* the cursor goes to stderr in ndjson too, never between the objects */
    p = RUN("identity", "list", "--type", "machine", "--limit", "1", "-o", "ndjson");
    assert_exit(p, 0);
    cr_assert_eq(ndjson_objects(p->out, rows, 16), 1, "%s", p->out);
    json_decref(rows[0]);
    cr_assert_not_null(strstr(p->err, "next: --after "), "%s", p->err);
    cms_test_proc_free(p);

    /* an issued key in ndjson: one line, the key in it once */
    p = RUN("credential", "issue", "nd-two", "--type", "api_key", "--expires-in", "1h", "-o",
            "ndjson");
    assert_exit(p, 0);
    cr_assert_eq(ndjson_objects(p->out, rows, 16), 1, "%s", p->out);
    const char *key = jget_str(rows[0], "api_key");
    cr_assert_eq(strlen(key), CMS_APIKEY_LEN);
    assert_time_pair(rows[0], "expires_at");
    json_decref(rows[0]);
    cms_test_proc_free(p);

    /* -o and --json must agree; a format that does not exist is a usage error */
    p = RUN("identity", "get", "nd-one", "--json", "-o", "table");
    assert_exit(p, 2);
    cms_test_proc_free(p);
    p = RUN("identity", "get", "nd-one", "-o", "xml");
    assert_exit(p, 2);
    cr_assert_not_null(strstr(p->err, "table, json or ndjson"), "%s", p->err);
    cms_test_proc_free(p);
}

Test(cmsctl_identity, no_results_go_to_stderr_and_stdout_stays_empty)
{
    /* no identity is a suspended enclave here */
    cms_test_proc *p = RUN("identity", "list", "--type", "enclave", "--status", "suspended");
    assert_exit(p, 0);
    cr_assert_str_eq(p->out, "", "stdout: %s", p->out);
    cr_assert_not_null(strstr(p->err, "(no identities match)"), "%s", p->err);
    cms_test_proc_free(p);
    p = RUN("identity", "list", "--type", "enclave", "--status", "suspended", "-o", "ndjson");
    assert_exit(p, 0);
    cr_assert_str_eq(p->out, "");
    cr_assert_not_null(strstr(p->err, "(no identities match)"), "%s", p->err);
    cms_test_proc_free(p);
    p = RUN("identity", "list", "--type", "enclave", "--status", "suspended", "-o", "json");
    assert_exit(p, 0);
    cr_assert_str_eq(p->out, "[]\n", "an empty array says it in json");
    cms_test_proc_free(p);

    char id[37];
    create("frank", "user", id);
    p = RUN("credential", "list", "frank");
    assert_exit(p, 0);
    cr_assert_str_eq(p->out, "", "stdout: %s", p->out);
    cr_assert_not_null(strstr(p->err, "(no credentials)"), "%s", p->err);
    cms_test_proc_free(p);
    p = RUN("credential", "list", id, "--json");
    assert_exit(p, 0);
    cr_assert_str_eq(p->out, "[]\n");
    cms_test_proc_free(p);
}

Test(cmsctl_identity, shared_options_may_come_before_the_verb)
{
    /* the variable points nowhere: only the option before the verb reaches NATS
     */
    const char *url = cms_test_env("CMS_TEST_NATS_URL");
    cr_assert_eq(setenv("CMS_NATS_URL", "nats://127.0.0.1:1", 1), 0);
    cms_test_proc *p = RUN("--nats-url", url, "identity", "get", "admin");
    assert_exit(p, 0);
    char *name = line_value(p->out, "name");
    cr_assert_str_eq(name, "admin");
    free(name);
    cms_test_proc_free(p);

    /* several, with = or apart, and -o */
    char flag[300];
    snprintf(flag, sizeof flag, "--nats-url=%s", url);
    p = RUN(flag, "--timeout", "5s", "-o", "json", "credential", "list", "admin");
    assert_exit(p, 0);
    json_t *a = parse_json(p);
    cr_assert(json_is_array(a), "%s", p->out);
    json_decref(a);
    cms_test_proc_free(p);
    p = RUN("--json", "--command-prefix", g_f.prefix, flag, "whoami");
    assert_exit(p, 0);
    json_t *o = parse_json(p);
    cr_assert_str_eq(jget_str(o, "identity_id"), g_f.admin_id);
    json_decref(o);
    cms_test_proc_free(p);

    /* the same option after the verb wins */
    p = RUN("--nats-url", "nats://127.0.0.1:1", "identity", "get", "admin", "--nats-url", url);
    assert_exit(p, 0);
    cms_test_proc_free(p);
    /* and the one before it is really used */
    p = RUN("--nats-url", "nats://127.0.0.1:1", "--timeout", "1s", "identity", "get", "admin");
    assert_exit(p, 1);
    cr_assert_not_null(strstr(p->err, "cannot connect to NATS at nats://127.0.0.1:1"), "%s",
                       p->err);
    cms_test_proc_free(p);

    /* a bad value before the verb is the verb's usage error */
    p = RUN("--timeout", "5", flag, "identity", "list");
    assert_exit(p, 2);
    cr_assert_not_null(strstr(p->err, "--timeout (from flag): '5' needs a unit"), "%s", p->err);
    cms_test_proc_free(p);
    /* an option only some verb has is not shared */
    p = RUN("--limit", "5", "identity", "list");
    assert_exit(p, 2);
    cr_assert_not_null(strstr(p->err, "--limit is not a shared option"), "%s", p->err);
    cms_test_proc_free(p);
}

/* ------------------------------------------------------------------------ */
/* whoami */

Test(cmsctl_identity, whoami_names_the_key_owner)
{
    cms_test_proc *p = RUN("whoami");
    assert_exit(p, 0);
    char *iid = line_value(p->out, "identity_id"), *name = line_value(p->out, "name"),
         *roles = line_value(p->out, "roles"), *type = line_value(p->out, "type"),
         *cid = line_value(p->out, "credential_id"), *exp = line_value(p->out, "expires_at");
    cr_assert_str_eq(iid, g_f.admin_id, "%s", p->out);
    cr_assert_str_eq(name, "admin");
    cr_assert_str_eq(type, "user");
    cr_assert_str_eq(roles, "admin");
    cms_uuid u;
    cr_assert(cid != NULL && cms_uuid_parse(cid, strlen(cid), &u), "%s", p->out);
    cr_assert(exp != NULL && strlen(exp) == strlen("2024-03-20T15:00:00Z"), "%s", p->out);
    cr_assert_null(strstr(p->out, g_f.admin_key), "the key is not printed");
    cr_assert_null(strstr(p->err, g_f.admin_key), "the key is not printed");
    cms_test_proc_free(p);

    /* json: the same, roles an array, the expiry as a time pair; the credential
     * is the key's */
    p = RUN("whoami", "-o", "json");
    assert_exit(p, 0);
    json_t *o = parse_json(p);
    cr_assert_str_eq(jget_str(o, "identity_id"), g_f.admin_id);
    cr_assert_str_eq(jget_str(o, "credential_id"), cid);
    cr_assert_str_eq(jget_str(o, "status"), "active");
    json_t *r = json_object_get(o, "roles");
    cr_assert(json_is_array(r) && json_array_size(r) == 1, "%s", p->out);
    cr_assert_str_eq(json_string_value(json_array_get(r, 0)), "admin");
    assert_time_pair(o, "expires_at");
    char q[256];
    snprintf(q, sizeof q,
             "SELECT (extract(epoch FROM expires_at) * 1000000)::bigint FROM "
             "credentials WHERE "
             "id = '%s'",
             cid);
    char *want = svcfx_sql(&g_f, q);
    cr_assert_eq(json_integer_value(json_object_get(o, "expires_at_us")), strtoll(want, NULL, 10));
    free(want);
    json_decref(o);
    cms_test_proc_free(p);
    free(iid);
    free(name);
    free(roles);
    free(type);
    free(cid);
    free(exp);

    /* another identity's key names that identity */
    char gid[37];
    create("grace", "machine", gid);
    p = RUN("credential", "issue", "grace", "--type", "api_key", "--expires-in", "2h");
    assert_exit(p, 0);
    char *key = line_value(p->out, "api_key");
    cms_test_proc_free(p);
    use_key(key);
    p = RUN("whoami");
    assert_exit(p, 0);
    char *who = line_value(p->out, "name"), *none = line_value(p->out, "roles");
    cr_assert_str_eq(who, "grace");
    cr_assert_str_eq(none, "-", "no roles");
    free(who);
    free(none);
    cms_test_proc_free(p);
    free(key);
}

Test(cmsctl_identity, whoami_with_a_refused_key_fails_clearly)
{
    use_key("cms_00000000000000000000000000000000_"
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    cms_test_proc *p = RUN("whoami");
    assert_exit(p, 1);
    cr_assert_str_eq(p->out, "", "nothing on stdout: %s", p->out);
    cr_assert_not_null(strstr(p->err, "cmsctl whoami: PERMISSION_DENIED (api_key): "), "%s",
                       p->err);
    cr_assert_null(strstr(p->err, "AAAAAAAA"), "the key is not echoed: %s", p->err);
    cms_test_proc_free(p);
    /* no key at all is a usage error that says where it looked */
    unsetenv("CMS_API_KEY");
    cr_assert_eq(setenv("HOME", "/nonexistent", 1), 0);
    p = RUN("whoami");
    assert_exit(p, 2);
    cr_assert_not_null(strstr(p->err, "CMS_API_KEY"), "%s", p->err);
    cms_test_proc_free(p);
}

/* ------------------------------------------------------------------------ */
/* where the key comes from */

static void write_file(const char *path, const char *text, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    cr_assert_geq(fd, 0, "%s: %s", path, strerror(errno));
    cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    cr_assert_eq(chmod(path, mode), 0);
}

Test(cmsctl_identity, key_from_files_or_a_clear_error)
{
    char home[64] = "/tmp/cmsctl-home-XXXXXX", dir[128], file[160], text[256];
    cr_assert_not_null(mkdtemp(home));
    unsetenv("CMS_API_KEY");
    cr_assert_eq(setenv("HOME", home, 1), 0);

    /* nothing anywhere: a usage error that says where it looked */
    cms_test_proc *p = RUN("identity", "get", "admin");
    assert_exit(p, 2);
    cr_assert_not_null(strstr(p->err, "CMS_API_KEY"), "%s", p->err);
    cr_assert_not_null(strstr(p->err, "CMS_CREDENTIALS_FILE"), "%s", p->err);
    cr_assert_not_null(strstr(p->err, "/.config/cms/credentials"), "%s", p->err);
    cms_test_proc_free(p);

    /* ~/.config/cms/credentials, "api_key = " form after comments */
    snprintf(dir, sizeof dir, "%s/.config", home);
    cr_assert_eq(mkdir(dir, 0700), 0);
    snprintf(dir, sizeof dir, "%s/.config/cms", home);
    cr_assert_eq(mkdir(dir, 0700), 0);
    snprintf(file, sizeof file, "%s/credentials", dir);
    snprintf(text, sizeof text, "# admin of the test\n\napi_key = %s\n", g_f.admin_key);
    write_file(file, text, 0600);
    p = RUN("identity", "get", "admin");
    assert_exit(p, 0);
    cms_test_proc_free(p);

    /* readable by others: refused, with the fix */
    cr_assert_eq(chmod(file, 0644), 0);
    p = RUN("identity", "get", "admin");
    assert_exit(p, 2);
    char want[256];
    snprintf(want, sizeof want, "chmod 600 %s", file);
    cr_assert_not_null(strstr(p->err, want), "%s", p->err);
    cr_assert_null(strstr(p->err, g_f.admin_key), "the key is not echoed");
    cms_test_proc_free(p);

    /* CMS_CREDENTIALS_FILE (bare key) is preferred to the default file */
    char other[200];
    snprintf(other, sizeof other, "%s/other", home);
    snprintf(text, sizeof text, "%s\n", g_f.admin_key);
    write_file(other, text, 0600);
    cr_assert_eq(setenv("CMS_CREDENTIALS_FILE", other, 1), 0);
    p = RUN("identity", "get", "admin", "--json");
    assert_exit(p, 0);
    json_t *o = parse_json(p);
    cr_assert_str_eq(jget_str(o, "id"), g_f.admin_id);
    json_decref(o);
    cms_test_proc_free(p);

    /* a wrong key is the service's PERMISSION_DENIED */
    write_file(other,
               "cms_00000000000000000000000000000000_"
               "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n",
               0600);
    p = RUN("identity", "get", "admin");
    assert_exit(p, 1);
    cr_assert_not_null(strstr(p->err, "PERMISSION_DENIED"), "%s", p->err);
    cms_test_proc_free(p);

    unlink(other);
    unlink(file);
    rmdir(dir);
    snprintf(dir, sizeof dir, "%s/.config", home);
    rmdir(dir);
    rmdir(home);
}

/* ------------------------------------------------------------------------ */
/* the wire, against a responder of the test's own */

typedef struct wire {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int seen;         /* requests received */
    int answer_after; /* requests left unanswered before the first reply; -1:
                         never */
    char request_ids[8][160];
    char auth[8][160];
    char subjects[8][160];
} wire;

static wire g_w = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static void header(natsMsg *m, const char *key, char out[160])
{
    const char *v = NULL;
    out[0] = '\0';
    if (natsMsgHeader_Get(m, key, &v) == NATS_OK && v != NULL)
        snprintf(out, 160, "%s", v);
}

/* On nats.c's thread: records the request; answers when its turn has come. */
static void on_request(natsConnection *nc, natsSubscription *sub, natsMsg *m, void *arg)
{
    (void)sub;
    wire *w = arg;
    pthread_mutex_lock(&w->mu);
    int i = w->seen < 8 ? w->seen : 7;
    header(m, "Cms-Request-Id", w->request_ids[i]);
    header(m, "Authorization", w->auth[i]);
    snprintf(w->subjects[i], 160, "%s", natsMsg_GetSubject(m));
    bool answer = w->answer_after >= 0 && w->seen >= w->answer_after;
    w->seen++;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    if (answer) {
        Cms__V1__Identity id = CMS__V1__IDENTITY__INIT;
        id.id = (char *)"0190aa00-0000-7000-8000-00000000abcd";
        id.name = (char *)"wired";
        id.type = (char *)"user";
        id.status = (char *)"active";
        id.metadata_json = (char *)"{}";
        id.created_at_us = 1700000000000000;
        uint8_t body[256], buf[300];
        Cms__V1__Reply r = CMS__V1__REPLY__INIT;
        r.outcome_case = CMS__V1__REPLY__OUTCOME_RESULT;
        r.result.data = body;
        r.result.len = cms__v1__identity__pack(&id, body);
        size_t n = cms__v1__reply__pack(&r, buf);
        natsConnection_Publish(nc, natsMsg_GetReply(m), buf, (int)n);
    }
    natsMsg_Destroy(m);
}

static void wait_seen(wire *w, int n)
{
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += 10;
    pthread_mutex_lock(&w->mu);
    while (w->seen < n) {
        if (pthread_cond_timedwait(&w->cv, &w->mu, &dl) == ETIMEDOUT)
            break;
    }
    int seen = w->seen;
    pthread_mutex_unlock(&w->mu);
    cr_assert_geq(seen, n, "requests seen");
}

static natsConnection *g_nc;
static natsSubscription *g_sub;
static char g_prefix[64];

static void wire_setup(void)
{
    snprintf(g_prefix, sizeof g_prefix, "wire%d.cmd", (int)getpid());
    env_init(g_prefix);
    use_key("cms_wire-test-key");
    cr_assert_eq(natsConnection_ConnectTo(&g_nc, cms_test_env("CMS_TEST_NATS_URL")), NATS_OK);
}

static void wire_teardown(void)
{
    natsSubscription_Destroy(g_sub);
    natsConnection_Destroy(g_nc);
}

static void wire_listen(int answer_after)
{
    char subj[128];
    g_w.seen = 0;
    g_w.answer_after = answer_after;
    snprintf(subj, sizeof subj, "%s.identity.*", g_prefix);
    cr_assert_eq(natsConnection_Subscribe(&g_sub, g_nc, subj, on_request, &g_w), NATS_OK);
    cr_assert_eq(natsConnection_FlushTimeout(g_nc, 5000), NATS_OK);
}

TestSuite(cmsctl_wire, .init = wire_setup, .fini = wire_teardown);

Test(cmsctl_wire, a_write_is_resent_with_the_same_request_id_until_answered)
{
    wire_listen(2);
    cms_test_proc *p = RUN("identity", "create", "wired", "--type", "user", "--timeout", "300ms");
    assert_exit(p, 0);
    cr_assert_not_null(strstr(p->out, "name: wired"), "%s", p->out);
    wait_seen(&g_w, 3);
    cr_assert_eq(g_w.seen, 3, "two unanswered, the third answered");
    cms_uuid u;
    cr_assert(cms_uuid_parse(g_w.request_ids[0], strlen(g_w.request_ids[0]), &u),
              "a UUID request id: \"%s\"", g_w.request_ids[0]);
    for (int i = 0; i < 3; i++) {
        cr_assert_str_eq(g_w.request_ids[i], g_w.request_ids[0], "attempt %d", i);
        cr_assert_str_eq(g_w.auth[i], "Bearer cms_wire-test-key");
        char want[128];
        snprintf(want, sizeof want, "%s.identity.create", g_prefix);
        cr_assert_str_eq(g_w.subjects[i], want);
    }
    cms_test_proc_free(p);

    /* another command is another request id */
    char first[160];
    snprintf(first, sizeof first, "%s", g_w.request_ids[0]);
    natsSubscription_Destroy(g_sub);
    g_sub = NULL;
    wire_listen(0);
    p = RUN("identity", "suspend", "0190aa00-0000-7000-8000-00000000abcd");
    assert_exit(p, 0);
    wait_seen(&g_w, 1);
    cr_assert_eq(g_w.seen, 1);
    cr_assert_neq(g_w.request_ids[0][0], '\0');
    cr_assert_str_neq(g_w.request_ids[0], first);
    cr_assert_str_eq(g_w.subjects[0] + strlen(g_prefix), ".identity.set_status");
    cms_test_proc_free(p);
}

Test(cmsctl_wire, a_write_gives_up_after_three_resends)
{
    wire_listen(-1);
    cms_test_proc *p = RUN("identity", "create", "wired", "--type", "user", "--timeout", "200ms");
    assert_exit(p, 1);
    cr_assert_not_null(strstr(p->err, "no reply on"), "%s", p->err);
    cr_assert_not_null(strstr(p->err, "4 attempts"), "%s", p->err);
    cr_assert_not_null(strstr(p->err, "may have been done"), "%s", p->err);
    wait_seen(&g_w, 4);
    cr_assert_eq(g_w.seen, 4);
    for (int i = 1; i < 4; i++)
        cr_assert_str_eq(g_w.request_ids[i], g_w.request_ids[0]);
    cms_test_proc_free(p);
}

Test(cmsctl_wire, a_read_is_sent_once_without_request_id)
{
    wire_listen(-1);
    cms_test_proc *p = RUN("identity", "get", "wired", "--timeout", "200ms");
    assert_exit(p, 1);
    cr_assert_not_null(strstr(p->err, "no reply on"), "%s", p->err);
    wait_seen(&g_w, 1);
    cr_assert_eq(g_w.seen, 1);
    cr_assert_str_eq(g_w.request_ids[0], "", "a read carries no request id");
    cms_test_proc_free(p);
}

Test(cmsctl_wire, nothing_listening_is_retried_then_named)
{
    /* no subscription on this prefix at all */
    cms_test_proc *p = RUN("identity", "create", "wired", "--type", "user", "--timeout", "2s");
    assert_exit(p, 1);
    cr_assert_not_null(strstr(p->err, "nothing answers on"), "%s", p->err);
    cr_assert_not_null(strstr(p->err, "4 attempts"), "%s", p->err);
    cr_assert_not_null(strstr(p->err, "CMS_COMMAND_PREFIX"), "%s", p->err);
    cms_test_proc_free(p);
}
