/* The first admin made by `cms-migrate up`, run as a program on empty
 * scratch databases: the key is shown once, verifies against the stored
 * hash and appears nowhere else (database, events, stderr, debug output);
 * a second run creates nothing; two runs released together at the
 * bootstrap lock create one admin; --admin-key-out writes a new 0600 file
 * and never overwrites one; a key file others can read stops up before it
 * migrates; the outbox rows are identity.created and credential.issued;
 * a stdout that is no terminal gets no key unless --admin-key-stdout asks. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "../../tools/cms-migrate/bootstrap.h" /* CMS_BOOTSTRAP_LOCK_KEY */
#include "apikey.h"
#include "cms/v1/envelope.pb-c.h"
#include "testenv.h"
#include "testproc.h"
#include "uuid.h"

#define WATCHDOG_MS 60000
#define CREATED_LINE "first admin created; its API key is shown once: store it now"
#define DAY_US INT64_C(86400000000)

static char g_bin[1024];
static char g_dir[64]; /* this test's files: the server key, key outputs */
static char g_key_file[128];
static uint8_t g_server_key[CMS_APIKEY_SERVER_KEY_BYTES];
static char g_db[512];
static char g_db2[512];

typedef cms_test_proc proc;

/* ---- files ---- */

static void write_file(const char *path, const char *text, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
    cr_assert_geq(fd, 0, "create %s", path);
    cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    cr_assert_eq(fchmod(fd, mode), 0);
    close(fd);
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "open %s", path);
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        fwrite(chunk, 1, n, m);
    fclose(m);
    fclose(f);
    return buf;
}

static void in_dir(char *out, size_t n, const char *name)
{
    snprintf(out, n, "%s/%s", g_dir, name);
}

/* ---- suite ---- */

static void init(void)
{
    /* the children see only the flags each test gives them */
    const char *vars[] = {
        "CMS_DATABASE_URL",      "CMS_MIGRATIONS_DIR",       "CMS_LOG_LEVEL",
        "CMS_IDENTITY_KEY_FILE", "CMS_ADMIN_NAME",           "CMS_ADMIN_KEY_TTL",
        "CMS_ADMIN_KEY_OUT",     "CMS_MIGRATE_LOCK_TIMEOUT", "CMS_ADMIN_KEY_STDOUT"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
        unsetenv(vars[i]);
    snprintf(g_bin, sizeof g_bin, "%s/cms-migrate", cms_test_env("CMS_TEST_BIN_DIR"));
    cr_assert_eq(access(g_bin, X_OK), 0, "%s is not an executable: build it first", g_bin);
    cr_assert_geq(sodium_init(), 0);

    snprintf(g_dir, sizeof g_dir, "/tmp/cms-boottest-XXXXXX");
    cr_assert_not_null(mkdtemp(g_dir));
    in_dir(g_key_file, sizeof g_key_file, "identity.key");
    char hex[2 * CMS_APIKEY_SERVER_KEY_BYTES + 2];
    randombytes_buf(g_server_key, sizeof g_server_key);
    sodium_bin2hex(hex, sizeof hex, g_server_key, sizeof g_server_key);
    hex[2 * CMS_APIKEY_SERVER_KEY_BYTES] = '\n';
    hex[2 * CMS_APIKEY_SERVER_KEY_BYTES + 1] = '\0';
    write_file(g_key_file, hex, 0600);

    g_db2[0] = '\0';
    cr_assert_eq(cms_test_db_create("boot", 0, g_db, sizeof g_db), 0);
}

static void fini(void)
{
    if (g_db[0])
        cms_test_db_drop(g_db);
    if (g_db2[0])
        cms_test_db_drop(g_db2);
    g_db[0] = g_db2[0] = '\0';
    if (g_dir[0]) {
        const char *names[] = {"identity.key", "world.key", "bad.key", "admin.key", "other"};
        for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
            char p[128];
            in_dir(p, sizeof p, names[i]);
            unlink(p);
        }
        rmdir(g_dir);
    }
}

TestSuite(bootstrap, .init = init, .fini = fini, .timeout = 120);

/* ---- running cms-migrate ---- */

/* argv: cms-migrate --database-url db up ARGS… (NULL-terminated) */
static void up_argv(const char **argv, size_t cap, const char *db, va_list ap)
{
    size_t k = 0;
    argv[k++] = g_bin;
    argv[k++] = "--database-url";
    argv[k++] = db;
    argv[k++] = "up";
    const char *a;
    while ((a = va_arg(ap, const char *)) != NULL && k + 1 < cap)
        argv[k++] = a;
    argv[k] = NULL;
}

static proc *up(const char *db, ...)
{
    const char *argv[24];
    va_list ap;
    va_start(ap, db);
    up_argv(argv, 24, db, ap);
    va_end(ap);
    return cms_test_run(argv, WATCHDOG_MS);
}

#define assert_exit(p, want)                                                                       \
    cr_assert((p)->term_signal == 0 && (p)->status == (want),                                      \
              "exit %lld (signal %d), want %d\n--- stdout:\n%s--- stderr:\n%s",                    \
              (long long)(p)->status, (p)->term_signal, (want), (p)->out, (p)->err)

static size_t count_of(const char *hay, const char *needle)
{
    size_t n = 0;
    for (const char *p = hay; (p = strstr(p, needle)) != NULL; p += strlen(needle))
        n++;
    return n;
}

/* The API keys printed on lines of their own in text; the last one into
 * key (when not NULL). */
static size_t keys_in(const char *text, char key[CMS_APIKEY_LEN + 1])
{
    size_t n = 0;
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        size_t len = strcspn(p, "\n");
        cms_uuid id;
        uint8_t secret[CMS_APIKEY_SECRET_BYTES];
        if (len == CMS_APIKEY_LEN && cms_apikey_parse(p, len, &id, secret)) {
            n++;
            if (key) {
                memcpy(key, p, CMS_APIKEY_LEN);
                key[CMS_APIKEY_LEN] = '\0';
            }
        }
    }
    return n;
}

/* ---- SQL ---- */

static char *sql(const char *db, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static char *sql(const char *db, const char *fmt, ...)
{
    char q[2048];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(q, sizeof q, fmt, ap);
    va_end(ap);
    cr_assert(n > 0 && (size_t)n < sizeof q);
    char *v = cms_test_sql(db, q);
    cr_assert_not_null(v, "query failed: %s", q);
    return v;
}

#define assert_sql(db, want, ...)                                                                  \
    do {                                                                                           \
        char *v_ = sql(db, __VA_ARGS__);                                                           \
        cr_assert_str_eq(v_, want, "%s: got \"%s\", want \"%s\"", #__VA_ARGS__, v_, want);         \
        free(v_);                                                                                  \
    } while (0)

/* How many identities, admins, credentials and identity outbox rows. */
static void assert_counts(const char *db, const char *admins, const char *creds, const char *events)
{
    assert_sql(db, admins, "SELECT count(*) FROM identities WHERE metadata->'roles' ? 'admin'");
    assert_sql(db, creds, "SELECT count(*) FROM credentials");
    assert_sql(db, events, "SELECT count(*) FROM outbox WHERE source = 'identity'");
}

/* ---- what a key must satisfy ---- */

typedef struct parsed_key {
    char id[CMS_UUID_STRLEN + 1]; /* the credential */
    uint8_t secret[CMS_APIKEY_SECRET_BYTES];
    char b64[44];                              /* the secret as in the key */
    char hex[2 * CMS_APIKEY_SECRET_BYTES + 1]; /* the secret's bytes as hex */
    char identity_id[CMS_UUID_STRLEN + 1];     /* whose it is, from the database */
    char stored[CMS_APIKEY_HASH_LEN + 1];      /* credentials.value */
} parsed_key;

/* The key parses, is the only credential of the only admin ("name", user,
 * active), is an api_key expiring ttl_days from now, and verifies against the
 * stored hash with the server key of the key file. */
static void check_key(const char *db, const char *key, const char *name, int ttl_days,
                      parsed_key *pk)
{
    cms_uuid id;
    cr_assert(cms_apikey_parse(key, strlen(key), &id, pk->secret), "not an API key: %s", key);
    cms_uuid_format(&id, pk->id);
    snprintf(pk->b64, sizeof pk->b64, "%s", key + CMS_APIKEY_LEN - 43);
    sodium_bin2hex(pk->hex, sizeof pk->hex, pk->secret, sizeof pk->secret);

    char *v = sql(db, "SELECT value FROM credentials WHERE id = '%s' AND type = 'api_key'", pk->id);
    cr_assert_eq(strlen(v), CMS_APIKEY_HASH_LEN, "credential %s: stored \"%s\"", pk->id, v);
    snprintf(pk->stored, sizeof pk->stored, "%s", v);
    free(v);
    cr_assert(cms_apikey_verify(g_server_key, pk->secret, pk->stored),
              "the key does not verify against the stored hash");
    uint8_t other[CMS_APIKEY_SECRET_BYTES];
    memcpy(other, pk->secret, sizeof other);
    other[0] ^= 1;
    cr_assert(!cms_apikey_verify(g_server_key, other, pk->stored), "any secret verifies");

    v = sql(db, "SELECT identity_id FROM credentials WHERE id = '%s'", pk->id);
    snprintf(pk->identity_id, sizeof pk->identity_id, "%s", v);
    free(v);
    assert_sql(db, "t",
               "SELECT name = '%s' AND type = 'user' AND status = 'active' AND "
               "metadata = '{\"roles\": [\"admin\"]}'::jsonb FROM identities WHERE id = '%s'",
               name, pk->identity_id);
    assert_sql(db, "t",
               "SELECT abs(extract(epoch FROM expires_at - now() - %d * interval '1 day')) < 60 "
               "FROM credentials WHERE id = '%s'",
               ttl_days, pk->id);
    cms_uuid iid;
    cr_assert(cms_uuid_parse(pk->identity_id, strlen(pk->identity_id), &iid));
    cr_assert_eq(cms_uuid_version(&iid), 7, "identity ids are UUIDv7");
    cr_assert_eq(cms_uuid_version(&id), 7, "credential ids are UUIDv7");
}

/* Neither the secret (as in the key, or as hex of its bytes) nor the key is
 * in any row of the database, as text or as bytes, nor in text. */
static void assert_secret_nowhere(const char *db, const parsed_key *pk, const char *text)
{
    const char *tables[] = {"identities", "credentials", "outbox", "schema_migrations"};
    for (size_t i = 0; i < sizeof tables / sizeof tables[0]; i++)
        assert_sql(db, "0",
                   "SELECT count(*) FROM %s t WHERE strpos(t::text, '%s') > 0 OR "
                   "strpos(t::text, '%s') > 0",
                   tables[i], pk->b64, pk->hex);
    assert_sql(db, "0",
               "SELECT count(*) FROM credentials WHERE strpos(value, '%s') > 0 OR "
               "strpos(value, '%s') > 0",
               pk->b64, pk->hex);
    assert_sql(db, "0",
               "SELECT count(*) FROM outbox WHERE strpos(encode(payload, 'escape'), '%s') > 0 OR "
               "position('\\x%s'::bytea IN payload) > 0",
               pk->b64, pk->hex);
    cr_assert_null(strstr(text, pk->b64), "the secret is in:\n%s", text);
    cr_assert_null(strstr(text, pk->hex), "the secret's hex is in:\n%s", text);
}

/* A key file cms-migrate wrote: a regular file of mode 0600, a comment
 * first, then "api_key = KEY" on a line of its own; KEY into key. Returns
 * the file's text (the caller wipes and frees it). */
static char *read_key_file(const char *path, char key[CMS_APIKEY_LEN + 1])
{
    struct stat st;
    cr_assert_eq(lstat(path, &st), 0);
    cr_assert(S_ISREG(st.st_mode));
    cr_assert_eq(st.st_mode & 07777, 0600, "mode %o", (unsigned)(st.st_mode & 07777));
    char *text = slurp(path);
    cr_assert_eq(text[0], '#', "a comment line first:\n%s", text);
    const char *line = strstr(text, "\napi_key = ");
    cr_assert_not_null(line, "an api_key line, the form cmsctl reads:\n%s", text);
    line += strlen("\napi_key = ");
    cr_assert_eq(line[CMS_APIKEY_LEN], '\n', "%s", text);
    memcpy(key, line, CMS_APIKEY_LEN);
    key[CMS_APIKEY_LEN] = '\0';
    return text;
}

/* ---- the tests ---- */

Test(bootstrap, first_up_creates_the_admin_and_shows_its_key_once)
{
    proc *p = up(g_db, "--identity-key-file", g_key_file, "--admin-key-stdout", NULL);
    assert_exit(p, 0);
    char key[CMS_APIKEY_LEN + 1];
    cr_assert_eq(keys_in(p->out, key), 1, "want the key once on stdout:\n%s", p->out);
    cr_assert_eq(count_of(p->out, "cms_"), 1, "the key is printed once:\n%s", p->out);
    cr_assert_eq(count_of(p->err, CREATED_LINE), 1, "%s", p->err);
    cr_assert_eq(keys_in(p->err, NULL), 0, "%s", p->err);

    parsed_key pk;
    check_key(g_db, key, "admin", 90, &pk);
    assert_counts(g_db, "1", "1", "2");
    assert_secret_nowhere(g_db, &pk, p->err);
    cms_test_proc_free(p);

    /* again: the admin is there, nothing changes, nothing is shown */
    p = up(g_db, "--identity-key-file", g_key_file, NULL);
    assert_exit(p, 0);
    cr_assert_eq(keys_in(p->out, NULL), 0, "%s", p->out);
    cr_assert_not_null(strstr(p->err, "an admin identity exists already"), "%s", p->err);
    cr_assert_null(strstr(p->err, CREATED_LINE), "%s", p->err);
    assert_counts(g_db, "1", "1", "2");
    cms_test_proc_free(p);
    cms_apikey_wipe(key, sizeof key);
}

/* Decodes the outbox's payload (hex from SQL) as an Envelope. */
static Cms__V1__Envelope *envelope_of(const char *hex)
{
    size_t cap = strlen(hex) / 2 + 1, len = 0;
    uint8_t *buf = malloc(cap);
    cr_assert_not_null(buf);
    cr_assert_eq(sodium_hex2bin(buf, cap, hex, strlen(hex), NULL, &len, NULL), 0);
    Cms__V1__Envelope *env = cms__v1__envelope__unpack(NULL, len, buf);
    free(buf);
    cr_assert_not_null(env, "the payload is not an Envelope");
    return env;
}

Test(bootstrap, outbox_rows_are_the_two_identity_events)
{
    proc *p = up(g_db, "--identity-key-file", g_key_file, "--admin-name", "first-admin",
                 "--admin-key-ttl", "7d", "--admin-key-stdout", NULL);
    assert_exit(p, 0);
    char key[CMS_APIKEY_LEN + 1];
    cr_assert_eq(keys_in(p->out, key), 1, "%s", p->out);
    parsed_key pk;
    check_key(g_db, key, "first-admin", 7, &pk);
    cms_test_proc_free(p);

    PGconn *c = PQconnectdb(g_db);
    cr_assert_eq(PQstatus(c), CONNECTION_OK, "%s", PQerrorMessage(c));
    PGresult *r = PQexec(c, "SELECT source, event_id::text, subject, encode(payload, 'hex') "
                            "FROM outbox ORDER BY seq");
    cr_assert_eq(PQresultStatus(r), PGRES_TUPLES_OK, "%s", PQresultErrorMessage(r));
    cr_assert_eq(PQntuples(r), 2);
    char *expires =
        sql(g_db, "SELECT (extract(epoch FROM expires_at) * 1000000)::bigint FROM credentials");
    char *created = sql(g_db, "SELECT (extract(epoch FROM now()) * 1000000)::bigint");
    const char *types[] = {"identity.created", "credential.issued"};
    const char *resources[] = {"identity", "credential"};
    const char *ids[] = {pk.identity_id, pk.id};
    char correlation[CMS_UUID_STRLEN + 1] = "";
    for (int i = 0; i < 2; i++) {
        cr_assert_str_eq(PQgetvalue(r, i, 0), "identity");
        char subject[128];
        snprintf(subject, sizeof subject, "cms.events.%s", types[i]);
        cr_assert_str_eq(PQgetvalue(r, i, 2), subject);
        const char *hex = PQgetvalue(r, i, 3);
        cr_assert_null(strstr(hex, pk.hex), "the secret's bytes are in the event");
        Cms__V1__Envelope *env = envelope_of(hex);
        cr_assert_str_eq(env->event_id, PQgetvalue(r, i, 1), "the row's event_id is the event's");
        cr_assert_str_eq(env->event_type, types[i]);
        cr_assert_str_eq(env->resource_type, resources[i]);
        cr_assert_str_eq(env->resource_id, ids[i]);
        cr_assert_str_eq(env->actor_id, "00000000-0000-7000-8000-000000000001",
                         "the system identity");
        cr_assert_str_eq(env->source, "identity");
        cr_assert_str_eq(env->details_json, "");
        int64_t now_us = strtoll(created, NULL, 10);
        cr_assert(env->occurred_at_us > now_us - 60 * INT64_C(1000000) &&
                      env->occurred_at_us <= now_us + INT64_C(1000000),
                  "occurred_at_us %lld, now %lld", (long long)env->occurred_at_us,
                  (long long)now_us);
        cr_assert_neq(env->correlation_id[0], '\0', "the two events share a correlation id");
        if (i == 0) {
            snprintf(correlation, sizeof correlation, "%s", env->correlation_id);
            cr_assert_eq(env->body_case, CMS__V1__ENVELOPE__BODY_IDENTITY_CREATED);
            cr_assert_str_eq(env->identity_created->identity_id, pk.identity_id);
            cr_assert_str_eq(env->identity_created->name, "first-admin");
            cr_assert_str_eq(env->identity_created->type, "user");
            cr_assert_str_eq(env->identity_created->status, "active");
        } else {
            cr_assert_str_eq(env->correlation_id, correlation);
            cr_assert_eq(env->body_case, CMS__V1__ENVELOPE__BODY_CREDENTIAL_ISSUED);
            cr_assert_str_eq(env->credential_issued->credential_id, pk.id);
            cr_assert_str_eq(env->credential_issued->identity_id, pk.identity_id);
            cr_assert_str_eq(env->credential_issued->type, "api_key");
            cr_assert_eq(env->credential_issued->expires_at_us, strtoll(expires, NULL, 10),
                         "expires_at_us is the stored expires_at, to the microsecond");
        }
        cms__v1__envelope__free_unpacked(env, NULL);
    }
    free(expires);
    free(created);
    PQclear(r);
    PQfinish(c);
    assert_secret_nowhere(g_db, &pk, "");
    cms_apikey_wipe(key, sizeof key);
}

/* ---- two runs at once ---- */

typedef struct race {
    cms_test_runner *runner;
    uv_timer_t poll;
    PGconn *holder; /* holds the bootstrap lock until both runs wait for it */
    char waiting_sql[512];
    bool released;
} race;

static void race_poll(uv_timer_t *t)
{
    race *rc = t->data;
    if (rc->runner->running < 2) {
        /* a run ended before reaching the lock: nothing to release it for */
        uv_close((uv_handle_t *)t, NULL);
        return;
    }
    PGresult *r = PQexec(rc->holder, rc->waiting_sql);
    cr_assert_eq(PQresultStatus(r), PGRES_TUPLES_OK, "%s", PQresultErrorMessage(r));
    bool both = strcmp(PQgetvalue(r, 0, 0), "2") == 0;
    PQclear(r);
    if (!both)
        return;
    char q[128];
    snprintf(q, sizeof q, "SELECT pg_advisory_unlock(%lld)", (long long)CMS_BOOTSTRAP_LOCK_KEY);
    r = PQexec(rc->holder, q);
    cr_assert_eq(PQresultStatus(r), PGRES_TUPLES_OK, "%s", PQresultErrorMessage(r));
    cr_assert_str_eq(PQgetvalue(r, 0, 0), "t");
    PQclear(r);
    rc->released = true;
    uv_close((uv_handle_t *)t, NULL);
}

Test(bootstrap, two_concurrent_runs_create_one_admin)
{
    /* The test holds the bootstrap lock while both runs migrate and queue
     * behind it, then lets them go at once. */
    race rc = {0};
    rc.holder = PQconnectdb(g_db);
    cr_assert_eq(PQstatus(rc.holder), CONNECTION_OK, "%s", PQerrorMessage(rc.holder));
    char q[128];
    snprintf(q, sizeof q, "SELECT pg_advisory_lock(%lld)", (long long)CMS_BOOTSTRAP_LOCK_KEY);
    PGresult *r = PQexec(rc.holder, q);
    cr_assert_eq(PQresultStatus(r), PGRES_TUPLES_OK, "%s", PQresultErrorMessage(r));
    PQclear(r);
    snprintf(rc.waiting_sql, sizeof rc.waiting_sql,
             "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
             "AND classid = %u AND objid = %u AND objsubid = 1 "
             "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
             (unsigned)((uint64_t)CMS_BOOTSTRAP_LOCK_KEY >> 32),
             (unsigned)((uint64_t)CMS_BOOTSTRAP_LOCK_KEY & 0xffffffffu));

    cms_test_runner runner;
    cms_test_runner_init(&runner, WATCHDOG_MS);
    rc.runner = &runner;
    const char *argv[] = {g_bin,
                          "--database-url",
                          g_db,
                          "up",
                          "--identity-key-file",
                          g_key_file,
                          "--migrate-lock-timeout",
                          "30s",
                          "--admin-key-stdout",
                          NULL};
    proc *a = cms_test_spawn(&runner, argv);
    proc *b = cms_test_spawn(&runner, argv);
    cr_assert_eq(uv_timer_init(&runner.loop, &rc.poll), 0);
    rc.poll.data = &rc;
    cr_assert_eq(uv_timer_start(&rc.poll, race_poll, 10, 10), 0);
    cms_test_runner_finish(&runner);
    PQfinish(rc.holder);

    cr_assert(rc.released, "both runs waited at the bootstrap lock\n--- a:\n%s%s--- b:\n%s%s",
              a->out, a->err, b->out, b->err);
    assert_exit(a, 0);
    assert_exit(b, 0);
    char key[CMS_APIKEY_LEN + 1];
    cr_assert_eq(keys_in(a->out, key) + keys_in(b->out, key), 1, "one key in all:\n%s\n%s", a->out,
                 b->out);
    cr_assert_eq(count_of(a->err, CREATED_LINE) + count_of(b->err, CREATED_LINE), 1);
    cr_assert_eq(count_of(a->err, "an admin identity exists already") +
                     count_of(b->err, "an admin identity exists already"),
                 1, "the other run found the admin:\n%s\n%s", a->err, b->err);
    assert_counts(g_db, "1", "1", "2");
    parsed_key pk;
    check_key(g_db, key, "admin", 90, &pk);
    cms_test_proc_free(a);
    cms_test_proc_free(b);
    cms_apikey_wipe(key, sizeof key);
}

/* ---- --admin-key-out ---- */

Test(bootstrap, key_out_writes_a_new_0600_file_and_never_overwrites)
{
    char out[128];
    in_dir(out, sizeof out, "admin.key");
    mode_t old = umask(0277); /* the file is 0600 whatever the umask */
    proc *p = up(g_db, "--identity-key-file", g_key_file, "--admin-key-out", out, NULL);
    umask(old);
    assert_exit(p, 0);
    cr_assert_eq(keys_in(p->out, NULL), 0, "no key on stdout:\n%s", p->out);
    cr_assert_null(strstr(p->out, "cms_"), "%s", p->out);
    cr_assert_not_null(strstr(p->err, out), "stderr says where the key is:\n%s", p->err);
    cr_assert_null(strstr(p->err, "cms_"), "%s", p->err);

    char key[CMS_APIKEY_LEN + 1];
    char *text = read_key_file(out, key);
    parsed_key pk;
    check_key(g_db, key, "admin", 90, &pk);
    assert_secret_nowhere(g_db, &pk, p->err);
    cms_test_proc_free(p);

    /* the admin exists: the file is left as it is, and that is no error */
    p = up(g_db, "--identity-key-file", g_key_file, "--admin-key-out", out, NULL);
    assert_exit(p, 0);
    cr_assert_not_null(strstr(p->err, "an admin identity exists already"), "%s", p->err);
    char *again = slurp(out);
    cr_assert_str_eq(again, text);
    free(again);
    cms_test_proc_free(p);

    /* a database without admin: the existing file is not overwritten, and
     * no admin is created whose key nobody would have */
    cr_assert_eq(cms_test_db_create("boot2", 0, g_db2, sizeof g_db2), 0);
    p = up(g_db2, "--identity-key-file", g_key_file, "--admin-key-out", out, NULL);
    assert_exit(p, 1);
    cr_assert_not_null(strstr(p->err, "File exists"), "%s", p->err);
    cr_assert_eq(keys_in(p->out, NULL), 0, "%s", p->out);
    assert_counts(g_db2, "0", "0", "0");
    again = slurp(out);
    cr_assert_str_eq(again, text);
    free(again);
    cms_test_proc_free(p);

    /* a new path: now it is created there */
    char other[128];
    in_dir(other, sizeof other, "other");
    p = up(g_db2, "--identity-key-file", g_key_file, "--admin-key-out", other, NULL);
    assert_exit(p, 0);
    assert_counts(g_db2, "1", "1", "2");
    cr_assert_eq(access(other, R_OK), 0);
    cms_test_proc_free(p);
    cms_apikey_wipe(text, strlen(text));
    free(text);
    cms_apikey_wipe(key, sizeof key);
}

/* ---- a stdout that is no terminal ---- */

Test(bootstrap, a_key_is_never_printed_on_a_stdout_that_is_no_terminal_unless_asked)
{
    /* the test's pipe is what a job's log is: no admin whose key would land there */
    proc *p = up(g_db, "--identity-key-file", g_key_file, NULL);
    assert_exit(p, 1);
    cr_assert_eq(keys_in(p->out, NULL), 0, "%s", p->out);
    cr_assert_null(strstr(p->out, "cms_"), "%s", p->out);
    cr_assert_not_null(strstr(p->err, "no first admin created"), "%s", p->err);
    cr_assert_not_null(strstr(p->err, "--admin-key-out"), "stderr says how:\n%s", p->err);
    cr_assert_not_null(strstr(p->err, "--admin-key-stdout"), "%s", p->err);
    cr_assert_null(strstr(p->err, "cms_"), "%s", p->err);
    assert_sql(g_db, "t", "SELECT to_regclass('identities') IS NOT NULL");
    assert_counts(g_db, "0", "0", "0");
    cms_test_proc_free(p);

    /* both ways at once is a usage error */
    char out[128];
    in_dir(out, sizeof out, "admin.key");
    p = up(g_db, "--identity-key-file", g_key_file, "--admin-key-out", out, "--admin-key-stdout",
           NULL);
    assert_exit(p, 2);
    cms_test_proc_free(p);

    /* --admin-key-out: in the file, mode 0600, and stderr says where */
    p = up(g_db, "--identity-key-file", g_key_file, "--admin-key-out", out, NULL);
    assert_exit(p, 0);
    cr_assert_eq(keys_in(p->out, NULL), 0, "%s", p->out);
    cr_assert_not_null(strstr(p->err, out), "%s", p->err);
    char key[CMS_APIKEY_LEN + 1];
    char *text = read_key_file(out, key);
    parsed_key pk;
    check_key(g_db, key, "admin", 90, &pk);
    cms_apikey_wipe(text, strlen(text));
    free(text);
    cms_apikey_wipe(key, sizeof key);
    cms_test_proc_free(p);
}

/* ---- refusals ---- */

Test(bootstrap, unsafe_or_malformed_key_file_stops_up_before_it_migrates)
{
    char world[128], bad[128];
    in_dir(world, sizeof world, "world.key");
    in_dir(bad, sizeof bad, "bad.key");
    char *hex = slurp(g_key_file);
    write_file(world, hex, 0644);
    free(hex);
    write_file(bad, "not a key\n", 0600);

    proc *p = up(g_db, "--identity-key-file", world, NULL);
    assert_exit(p, 1);
    cr_assert_not_null(strstr(p->err, world), "%s", p->err);
    cr_assert_not_null(strstr(p->err, "chmod 600"), "%s", p->err);
    cms_test_proc_free(p);

    p = up(g_db, "--identity-key-file", bad, NULL);
    assert_exit(p, 1);
    cr_assert_not_null(strstr(p->err, "64 hex digits"), "%s", p->err);
    cms_test_proc_free(p);

    char missing[160];
    in_dir(missing, sizeof missing, "no-such.key");
    p = up(g_db, "--identity-key-file", missing, NULL);
    assert_exit(p, 1);
    cr_assert_not_null(strstr(p->err, "No such file"), "%s", p->err);
    cms_test_proc_free(p);

    assert_sql(g_db, "t", "SELECT to_regclass('schema_migrations') IS NULL");
}

Test(bootstrap, options_out_of_range_are_usage_errors)
{
    const char *ttl[] = {"0", "23h", "366d", "366", "-1d"};
    for (size_t i = 0; i < sizeof ttl / sizeof ttl[0]; i++) {
        proc *p = up(g_db, "--identity-key-file", g_key_file, "--admin-key-ttl", ttl[i], NULL);
        assert_exit(p, 2);
        cr_assert_not_null(strstr(p->err, "--admin-key-ttl"), "%s", p->err);
        cms_test_proc_free(p);
    }
    char long_name[300];
    memset(long_name, 'a', 256);
    long_name[256] = '\0';
    const char *names[] = {"", "two\nlines", long_name};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        proc *p = up(g_db, "--identity-key-file", g_key_file, "--admin-name", names[i], NULL);
        assert_exit(p, 2);
        cr_assert_not_null(strstr(p->err, "--admin-name"), "%s", p->err);
        cms_test_proc_free(p);
    }
    assert_sql(g_db, "t", "SELECT to_regclass('schema_migrations') IS NULL");
}

Test(bootstrap, without_a_key_file_nothing_is_created_and_up_says_how)
{
    proc *p = up(g_db, NULL);
    assert_exit(p, 0);
    cr_assert_not_null(strstr(p->err, "--identity-key-file"), "%s", p->err);
    cr_assert_not_null(strstr(p->err, "no admin identity yet"), "%s", p->err);
    cr_assert_eq(keys_in(p->out, NULL), 0, "%s", p->out);
    assert_sql(g_db, "t", "SELECT to_regclass('identities') IS NOT NULL");
    assert_counts(g_db, "0", "0", "0");
    cms_test_proc_free(p);

    /* `up 1` on a database behind: no bootstrap before the latest version */
    cr_assert_eq(cms_test_db_create("boot2", 0, g_db2, sizeof g_db2), 0);
    p = up(g_db2, "1", "--identity-key-file", g_key_file, NULL);
    assert_exit(p, 0);
    cr_assert_eq(keys_in(p->out, NULL), 0, "%s", p->out);
    cr_assert_not_null(strstr(p->err, "once every migration is applied"), "%s", p->err);
    cms_test_proc_free(p);
}

Test(bootstrap, a_name_held_by_a_non_admin_is_refused)
{
    proc *p = up(g_db, NULL);
    assert_exit(p, 0);
    cms_test_proc_free(p);
    free(sql(g_db, "INSERT INTO identities (name, type, metadata) "
                   "VALUES ('admin', 'machine', '{\"roles\": []}')"));
    p = up(g_db, "--identity-key-file", g_key_file, NULL);
    assert_exit(p, 1);
    cr_assert_not_null(strstr(p->err, "--admin-name"), "%s", p->err);
    cr_assert_eq(keys_in(p->out, NULL), 0, "%s", p->out);
    assert_counts(g_db, "0", "0", "0");
    cms_test_proc_free(p);

    p = up(g_db, "--identity-key-file", g_key_file, "--admin-name", "root", "--admin-key-stdout",
           NULL);
    assert_exit(p, 0);
    char key[CMS_APIKEY_LEN + 1];
    cr_assert_eq(keys_in(p->out, key), 1, "%s", p->out);
    parsed_key pk;
    check_key(g_db, key, "root", 90, &pk);
    cms_test_proc_free(p);
    cms_apikey_wipe(key, sizeof key);
}

Test(bootstrap, debug_output_holds_no_value_of_the_bootstrap)
{
    proc *p = up(g_db, "--identity-key-file", g_key_file, "--log-level", "debug",
                 "--admin-key-stdout", NULL);
    assert_exit(p, 0);
    cr_assert_not_null(strstr(p->err, "bootstrap:"), "debug lines of the bootstrap:\n%s", p->err);
    char key[CMS_APIKEY_LEN + 1];
    cr_assert_eq(keys_in(p->out, key), 1, "%s", p->out);
    parsed_key pk;
    check_key(g_db, key, "admin", 90, &pk);
    cr_assert_eq(count_of(p->out, pk.b64), 1, "the key once, nothing else:\n%s", p->out);
    assert_secret_nowhere(g_db, &pk, p->err);
    /* nor the values the statements were given */
    cr_assert_null(strstr(p->err, pk.stored), "the hash is logged:\n%s", p->err);
    cr_assert_null(strstr(p->out, pk.stored), "the hash is logged:\n%s", p->out);
    cr_assert_null(strstr(p->err, pk.id), "the credential id is logged:\n%s", p->err);
    cr_assert_null(strstr(p->err, pk.identity_id), "the identity id is logged:\n%s", p->err);
    cms_test_proc_free(p);
    cms_apikey_wipe(key, sizeof key);
}

/* ---- a key made beforehand (a Kubernetes Secret) ---- */

static proc *admin_key(const char *out_path)
{
    const char *argv[] = {g_bin, "admin-key", "--admin-key-out", out_path, NULL};
    return cms_test_run(argv, WATCHDOG_MS);
}

Test(bootstrap, admin_key_makes_a_key_that_up_admin_key_in_gives_the_first_admin)
{
    char made[128];
    in_dir(made, sizeof made, "made.key");
    proc *p = admin_key(made);
    assert_exit(p, 0);
    cr_assert_null(strstr(p->out, "cms_"), "no key on stdout:\n%s", p->out);
    cr_assert_null(strstr(p->err, "cms_"), "none on stderr:\n%s", p->err);
    cms_test_proc_free(p);
    char key[CMS_APIKEY_LEN + 1];
    char *text = read_key_file(made, key);
    cms_uuid id;
    uint8_t secret[CMS_APIKEY_SECRET_BYTES];
    cr_assert(cms_apikey_parse(key, strlen(key), &id, secret), "%s", key);

    /* never over a file */
    p = admin_key(made);
    assert_exit(p, 1);
    cr_assert_not_null(strstr(p->err, "File exists"), "%s", p->err);
    cms_test_proc_free(p);
    /* nor on a stdout that is no terminal */
    const char *argv[] = {g_bin, "admin-key", NULL};
    p = cms_test_run(argv, WATCHDOG_MS);
    assert_exit(p, 1);
    cr_assert_eq(keys_in(p->out, NULL), 0, "%s", p->out);
    cr_assert_not_null(strstr(p->err, "--admin-key-out"), "%s", p->err);
    cms_test_proc_free(p);

    /* up gives it to the admin, and shows nothing of it */
    p = up(g_db, "--identity-key-file", g_key_file, "--admin-key-in", made, NULL);
    assert_exit(p, 0);
    cr_assert_null(strstr(p->out, "cms_"), "%s", p->out);
    cr_assert_null(strstr(p->err, "cms_"), "%s", p->err);
    cr_assert_not_null(strstr(p->err, made), "stderr names the file:\n%s", p->err);
    parsed_key pk;
    check_key(g_db, key, "admin", 90, &pk);
    assert_secret_nowhere(g_db, &pk, p->err);
    assert_counts(g_db, "1", "1", "2");
    cms_test_proc_free(p);

    /* again: the admin exists, nothing changes (a Job run twice) */
    p = up(g_db, "--identity-key-file", g_key_file, "--admin-key-in", made, NULL);
    assert_exit(p, 0);
    assert_counts(g_db, "1", "1", "2");
    cms_test_proc_free(p);

    /* the bare key on a line of its own is taken too */
    char bare[128], text2[CMS_APIKEY_LEN + 8];
    in_dir(bare, sizeof bare, "bare.key");
    snprintf(text2, sizeof text2, "%s\n", key);
    write_file(bare, text2, 0600);
    cr_assert_eq(cms_test_db_create("boot2", 0, g_db2, sizeof g_db2), 0);
    p = up(g_db2, "--identity-key-file", g_key_file, "--admin-key-in", bare, NULL);
    assert_exit(p, 0);
    check_key(g_db2, key, "admin", 90, &pk);
    cms_test_proc_free(p);
    cms_apikey_wipe(text, strlen(text));
    free(text);
    cms_apikey_wipe(key, sizeof key);
    cms_apikey_wipe(text2, sizeof text2);
}

Test(bootstrap, a_bad_admin_key_in_stops_up_before_it_migrates)
{
    char junk[128], open_key[128], out[128];
    in_dir(junk, sizeof junk, "junk.key");
    in_dir(open_key, sizeof open_key, "open.key");
    in_dir(out, sizeof out, "out.key");
    write_file(junk, "# no key here\napi_key = cms_not_a_key\n", 0600);
    proc *p = admin_key(open_key);
    assert_exit(p, 0);
    cms_test_proc_free(p);
    cr_assert_eq(chmod(open_key, 0644), 0);

    p = up(g_db, "--identity-key-file", g_key_file, "--admin-key-in", junk, NULL);
    assert_exit(p, 1);
    cr_assert_not_null(strstr(p->err, "holds no API key"), "%s", p->err);
    cms_test_proc_free(p);
    p = up(g_db, "--identity-key-file", g_key_file, "--admin-key-in", open_key, NULL);
    assert_exit(p, 1);
    cr_assert_not_null(strstr(p->err, "chmod 600"), "%s", p->err);
    cms_test_proc_free(p);
    cr_assert_eq(chmod(open_key, 0600), 0);
    /* a key made beforehand is not shown: with --admin-key-out it is a usage error */
    p = up(g_db, "--identity-key-file", g_key_file, "--admin-key-in", open_key, "--admin-key-out",
           out, NULL);
    assert_exit(p, 2);
    cms_test_proc_free(p);
    assert_sql(g_db, "t", "SELECT to_regclass('schema_migrations') IS NULL");
}
