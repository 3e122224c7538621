/* cms-migrate run as a program against the throwaway PostgreSQL: a full
 * round trip leaves the same schema, counted steps, status and version
 * output, two racing migrators, a failing migration that is rolled back and
 * pinned to its line, psql-like statement splitting, changed and unknown
 * files, and `new`. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "../../tools/cms-migrate/migrate.h" /* CMS_MIGRATE_LOCK_* */
#include "testenv.h"
#include "testproc.h"

#define WATCHDOG_MS 60000
#define MAX_MIGRATIONS 256

static char g_bin[1024];
static char g_real_dir[1024];
static char g_labels[MAX_MIGRATIONS][80]; /* "0001_init", … of the real migrations */
static size_t g_n;

/* ---- programs on a loop: tests/lib/testproc ---- */

typedef cms_test_proc proc;
#define proc_free cms_test_proc_free

static proc *run_args(char **args)
{
    return cms_test_run((const char *const *)args, WATCHDOG_MS);
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

/* argv for cms-migrate [--database-url db] [--migrations-dir dir] ARGS… */
static void migrate_argv(char **argv, size_t cap, const char *db, const char *dir, va_list ap)
{
    size_t k = 0;
    argv[k++] = g_bin;
    if (db) {
        argv[k++] = (char *)"--database-url";
        argv[k++] = (char *)db;
    }
    if (dir) {
        argv[k++] = (char *)"--migrations-dir";
        argv[k++] = (char *)dir;
    }
    const char *a;
    while ((a = va_arg(ap, const char *)) != NULL && k + 1 < cap)
        argv[k++] = (char *)a;
    argv[k] = NULL;
}

/* Runs cms-migrate with the given arguments (NULL-terminated) and waits. */
static proc *migrate(const char *db, const char *dir, ...)
{
    char *argv[16];
    va_list ap;
    va_start(ap, dir);
    migrate_argv(argv, 16, db, dir, ap);
    va_end(ap);
    return run_args(argv);
}

#define assert_exit(p, want)                                                                       \
    cr_assert((p)->term_signal == 0 && (p)->status == (want),                                      \
              "exit %lld (signal %d), want %d\n--- stdout:\n%s--- stderr:\n%s",                    \
              (long long)(p)->status, (p)->term_signal, (want), (p)->out, (p)->err)

/* ---- files and SQL ---- */

static char *sql(const char *db, const char *q)
{
    char *v = cms_test_sql(db, q);
    cr_assert_not_null(v, "query failed: %s", q);
    return v;
}

static void assert_sql(const char *db, const char *q, const char *want)
{
    char *v = sql(db, q);
    cr_assert_str_eq(v, want, "%s\n  gave \"%s\", want \"%s\"", q, v, want);
    free(v);
}

static void write_file(const char *dir, const char *name, const char *text)
{
    char path[2048];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "create %s", path);
    cr_assert_eq(fwrite(text, 1, strlen(text), f), strlen(text));
    cr_assert_eq(fclose(f), 0);
}

static void append_file(const char *dir, const char *name, const char *text)
{
    char path[2048];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "ab");
    cr_assert_not_null(f, "open %s", path);
    fputs(text, f);
    cr_assert_eq(fclose(f), 0);
}

static bool file_exists(const char *dir, const char *name)
{
    char path[2048];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return stat(path, &st) == 0;
}

static size_t count_files(const char *dir)
{
    size_t n = 0;
    DIR *d = opendir(dir);
    cr_assert_not_null(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

/* A fresh temp folder holding copies of the real migrations (all, or all but
 * the last `leave_out` versions). */
static void copy_real(char *dir, size_t n, size_t leave_out)
{
    snprintf(dir, n, "/tmp/cms-migtest-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    for (size_t i = 0; i + leave_out < g_n; i++) {
        const char *sfx[] = {".up.sql", ".down.sql"};
        for (int k = 0; k < 2; k++) {
            char src[2048], name[128];
            snprintf(name, sizeof name, "%.79s%s", g_labels[i], sfx[k]);
            snprintf(src, sizeof src, "%s/%s", g_real_dir, name);
            char *text = slurp(src);
            write_file(dir, name, text);
            free(text);
        }
    }
}

static void empty_dir(char *dir, size_t n)
{
    snprintf(dir, n, "/tmp/cms-migtest-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
}

static void remove_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        char path[2048];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        unlink(path);
    }
    closedir(d);
    rmdir(dir);
}

static size_t count_of(const char *hay, const char *needle)
{
    size_t n = 0;
    for (const char *p = hay; (p = strstr(p, needle)) != NULL; p += strlen(needle))
        n++;
    return n;
}

/* The line of text starting with prefix, copied into buf ("" if none). */
static const char *line_starting(const char *text, const char *prefix, char *buf, size_t n)
{
    buf[0] = '\0';
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        if (strncmp(p, prefix, strlen(prefix)) == 0) {
            size_t len = strcspn(p, "\n");
            snprintf(buf, n, "%.*s", (int)len, p);
            break;
        }
    }
    return buf;
}

static int by_name(const void *a, const void *b)
{
    return strcmp((const char *)a, (const char *)b);
}

static void suite_init(void)
{
    /* the children must see only the flags each test gives them */
    const char *vars[] = {"CMS_DATABASE_URL",
                          "CMS_MIGRATIONS_DIR",
                          "CMS_LOG_LEVEL",
                          "CMS_MIGRATE_LOCK_TIMEOUT",
                          "CMS_MIGRATE_STATEMENT_TIMEOUT",
                          "CMS_MIGRATE_WAIT_TIMEOUT"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
        unsetenv(vars[i]);
    cms_test_env("CMS_TEST_PG_URL");
    snprintf(g_bin, sizeof g_bin, "%s/cms-migrate", cms_test_env("CMS_TEST_BIN_DIR"));
    cr_assert_eq(access(g_bin, X_OK), 0, "%s is not an executable: build it first", g_bin);

    /* the repository's migrations, found from this file's own path */
    const char *self = __FILE__;
    const char *tail = strstr(self, "tests/tools/cms-migrate/");
    cr_assert_not_null(tail, "cannot find the repository from %s", self);
    snprintf(g_real_dir, sizeof g_real_dir, "%.*smigrations", (int)(tail - self), self);
    DIR *d = opendir(g_real_dir);
    cr_assert_not_null(d, "open %s", g_real_dir);
    struct dirent *e;
    g_n = 0;
    while ((e = readdir(d)) != NULL && g_n < MAX_MIGRATIONS) {
        size_t len = strlen(e->d_name), sfx = strlen(".up.sql");
        if (len > sfx && strcmp(e->d_name + len - sfx, ".up.sql") == 0)
            snprintf(g_labels[g_n++], sizeof g_labels[0], "%.*s", (int)(len - sfx), e->d_name);
    }
    closedir(d);
    qsort(g_labels, g_n, sizeof g_labels[0], by_name);
    cr_assert_geq(g_n, 2, "expected at least 0001_init and 0002_runtime in %s", g_real_dir);
}

TestSuite(migrate, .init = suite_init, .timeout = 120);

/* ---- a schema dump, with the lines that differ between two dumps dropped ---- */

static char *schema_dump(const char *db)
{
    char *args[] = {(char *)"pg_dump", (char *)"--schema-only", (char *)"--dbname", (char *)db,
                    NULL};
    proc *p = run_args(args);
    assert_exit(p, 0);
    char *out = malloc(strlen(p->out) + 1);
    cr_assert_not_null(out);
    size_t k = 0;
    for (const char *l = p->out; *l;) {
        size_t len = strcspn(l, "\n");
        bool skip = strncmp(l, "--", 2) == 0 || strncmp(l, "\\restrict ", 10) == 0 ||
                    strncmp(l, "\\unrestrict ", 12) == 0; /* random keys of pg_dump >= 15.14 */
        if (!skip) {
            memcpy(out + k, l, len);
            k += len;
            out[k++] = '\n';
        }
        l += len + (l[len] == '\n');
    }
    out[k] = '\0';
    proc_free(p);
    return out;
}

static void assert_same_text(const char *a, const char *b, const char *what)
{
    unsigned line = 1;
    const char *pa = a, *pb = b;
    while (*pa || *pb) {
        size_t la = strcspn(pa, "\n"), lb = strcspn(pb, "\n");
        cr_assert(la == lb && memcmp(pa, pb, la) == 0,
                  "%s differ at line %u:\n  first:  %.*s\n  second: %.*s", what, line, (int)la, pa,
                  (int)lb, pb);
        pa += la + (pa[la] == '\n');
        pb += lb + (pb[lb] == '\n');
        line++;
    }
}

/* Everything user-made in the database except schema_migrations. */
static const char leftovers_sql[] =
    "SELECT coalesce(string_agg(what, ', ' ORDER BY what), '') FROM ("
    " SELECT 'relation ' || relname AS what FROM pg_class"
    "  WHERE relnamespace = 'public'::regnamespace"
    "    AND relname NOT IN ('schema_migrations', 'schema_migrations_pkey')"
    " UNION ALL SELECT 'type ' || typname FROM pg_type"
    "  WHERE typnamespace = 'public'::regnamespace"
    "    AND typname NOT IN ('schema_migrations', '_schema_migrations')"
    " UNION ALL SELECT 'function ' || proname FROM pg_proc WHERE pronamespace = "
    "'public'::regnamespace"
    " UNION ALL SELECT 'schema ' || nspname FROM pg_namespace"
    "  WHERE nspname NOT IN ('public', 'information_schema') AND nspname NOT LIKE 'pg\\_%'"
    " UNION ALL SELECT 'extension ' || extname FROM pg_extension WHERE extname <> 'plpgsql'"
    ") s";

Test(migrate, up_down_all_up_gives_the_same_schema)
{
    char db[512];
    cr_assert_eq(cms_test_db_create("mig_round", 0, db, sizeof db), 0);

    proc *p = migrate(db, NULL, "up", NULL);
    assert_exit(p, 0);
    for (size_t i = 0; i < g_n; i++) {
        char want[128];
        snprintf(want, sizeof want, "applying %.79s ... ok", g_labels[i]);
        cr_assert_not_null(strstr(p->out, want), "no \"%s\" in:\n%s", want, p->out);
    }
    proc_free(p);
    char *first = schema_dump(db);

    p = migrate(db, NULL, "down", "all", NULL);
    assert_exit(p, 0);
    cr_assert_eq(count_of(p->out, "reverting "), g_n, "%s", p->out);
    proc_free(p);
    assert_sql(db, leftovers_sql, "");
    assert_sql(db, "SELECT count(*) FROM schema_migrations", "0");

    p = migrate(db, NULL, "up", NULL);
    assert_exit(p, 0);
    proc_free(p);
    char *second = schema_dump(db);
    assert_same_text(first, second, "pg_dump --schema-only after the first and the second up");

    char want[16];
    snprintf(want, sizeof want, "%zu", g_n);
    assert_sql(db, "SELECT count(DISTINCT version) FROM schema_migrations", want);
    free(first);
    free(second);
    cms_test_db_drop(db);
}

static void assert_version(const char *db, size_t want)
{
    proc *p = migrate(db, NULL, "version", NULL);
    assert_exit(p, 0);
    char w[32];
    snprintf(w, sizeof w, "%zu\n", want);
    cr_assert_str_eq(p->out, w, "version printed \"%s\", want \"%s\"", p->out, w);
    proc_free(p);
}

Test(migrate, counted_steps_status_and_version)
{
    char db[512], line[256], want[128];
    cr_assert_eq(cms_test_db_create("mig_steps", 0, db, sizeof db), 0);
    const size_t n = g_n;

    assert_version(db, 0);
    proc *p = migrate(db, NULL, "status", NULL);
    assert_exit(p, 0);
    cr_assert_not_null(strstr(line_starting(p->out, "0001 ", line, sizeof line), "pending"), "%s",
                       p->out);
    snprintf(want, sizeof want, "current version: 0 (%zu pending)", n);
    cr_assert_not_null(strstr(p->out, want), "%s", p->out);
    proc_free(p);

    p = migrate(db, NULL, "up", "1", NULL);
    assert_exit(p, 0);
    cr_assert_eq(count_of(p->out, "applying "), 1, "%s", p->out);
    snprintf(want, sizeof want, "applying %.79s ... ok (", g_labels[0]);
    cr_assert_not_null(strstr(p->out, want), "%s", p->out);
    proc_free(p);
    assert_version(db, 1);

    p = migrate(db, NULL, "status", NULL);
    assert_exit(p, 0);
    line_starting(p->out, "0001 ", line, sizeof line);
    cr_assert(strstr(line, "init") && strstr(line, "applied") && strstr(line, "T") &&
                  strstr(line, "Z"),
              "0001 should be applied with a time: %s", p->out);
    line_starting(p->out, "0002 ", line, sizeof line);
    cr_assert(strstr(line, "runtime") && strstr(line, "pending"), "0002 should be pending: %s",
              p->out);
    snprintf(want, sizeof want, "current version: 1 (%zu pending)", n - 1);
    cr_assert_not_null(strstr(p->out, want), "%s", p->out);
    proc_free(p);

    p = migrate(db, NULL, "up", NULL);
    assert_exit(p, 0);
    cr_assert_eq(count_of(p->out, "applying "), n - 1, "%s", p->out);
    proc_free(p);
    assert_version(db, n);

    p = migrate(db, NULL, "up", NULL);
    assert_exit(p, 0);
    cr_assert_eq(count_of(p->out, "applying "), 0, "%s", p->out);
    cr_assert_not_null(strstr(p->out, "nothing to apply"), "%s", p->out);
    proc_free(p);

    p = migrate(db, NULL, "down", NULL); /* one, by default */
    assert_exit(p, 0);
    snprintf(want, sizeof want, "reverting %.79s ... ok", g_labels[n - 1]);
    cr_assert_not_null(strstr(p->out, want), "%s", p->out);
    cr_assert_eq(count_of(p->out, "reverting "), 1, "%s", p->out);
    proc_free(p);
    assert_version(db, n - 1);

    p = migrate(db, NULL, "up", "1", NULL);
    assert_exit(p, 0);
    proc_free(p);
    p = migrate(db, NULL, "down", "2", NULL);
    assert_exit(p, 0);
    cr_assert_eq(count_of(p->out, "reverting "), 2, "%s", p->out);
    proc_free(p);
    assert_version(db, n - 2);

    p = migrate(db, NULL, "down", "all", NULL);
    assert_exit(p, 0);
    proc_free(p);
    assert_version(db, 0);
    p = migrate(db, NULL, "down", NULL);
    assert_exit(p, 0);
    cr_assert_not_null(strstr(p->out, "nothing to revert"), "%s", p->out);
    proc_free(p);

    p = migrate(db, NULL, "up", "999", NULL); /* more than there are: all of them */
    assert_exit(p, 0);
    cr_assert_eq(count_of(p->out, "applying "), n, "%s", p->out);
    proc_free(p);
    assert_version(db, n);

    /* usage errors exit 2 and change nothing */
    const char *bad[][3] = {
        {"up", "0", NULL},    {"up", "x", NULL},          {"down", "some", NULL},
        {"down", "-1", NULL}, {"frobnicate", NULL, NULL}, {"status", "extra", NULL},
        {"up", "1", "2"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        p = migrate(db, NULL, bad[i][0], bad[i][1], bad[i][2], NULL);
        assert_exit(p, 2);
        cr_assert_not_null(strstr(p->err, "try --help"), "%s", p->err);
        proc_free(p);
    }
    assert_version(db, n);
    cms_test_db_drop(db);
}

/* ---- two migrators at once ---- */

typedef struct race {
    cms_test_runner *r;
    PGconn *holder; /* holds the migration lock until both children wait for it */
    uv_timer_t poll;
    bool released;
} race;

static void race_poll(uv_timer_t *t)
{
    race *rc = t->data;
    /* children that never waited, or a watchdog that fired: stop polling */
    if (rc->r->timed_out || rc->r->running == 0) {
        uv_close((uv_handle_t *)&rc->poll, NULL);
        return;
    }
    char q[512];
    snprintf(q, sizeof q,
             "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
             " AND classid = %u AND objid = %u AND objsubid = 1",
             CMS_MIGRATE_LOCK_CLASSID, CMS_MIGRATE_LOCK_OBJID);
    PGresult *res = PQexec(rc->holder, q);
    cr_assert_eq(PQresultStatus(res), PGRES_TUPLES_OK, "%s", PQerrorMessage(rc->holder));
    bool both_wait = strcmp(PQgetvalue(res, 0, 0), "2") == 0;
    PQclear(res);
    if (!both_wait)
        return;
    res = PQexec(rc->holder, "SELECT pg_advisory_unlock_all()");
    cr_assert_eq(PQresultStatus(res), PGRES_TUPLES_OK);
    PQclear(res);
    rc->released = true;
    uv_close((uv_handle_t *)&rc->poll, NULL);
}

Test(migrate, two_at_once_apply_each_migration_once)
{
    char db[512];
    cr_assert_eq(cms_test_db_create("mig_race", 0, db, sizeof db), 0);

    /* hold the lock first, so both children are certainly waiting at once */
    race rc = {0};
    rc.holder = PQconnectdb(db);
    cr_assert_eq(PQstatus(rc.holder), CONNECTION_OK, "%s", PQerrorMessage(rc.holder));
    char q[128];
    snprintf(q, sizeof q, "SELECT pg_advisory_lock(%lld)", (long long)CMS_MIGRATE_LOCK_KEY);
    PGresult *res = PQexec(rc.holder, q);
    cr_assert_eq(PQresultStatus(res), PGRES_TUPLES_OK, "%s", PQerrorMessage(rc.holder));
    PQclear(res);

    cms_test_runner r;
    cms_test_runner_init(&r, WATCHDOG_MS);
    rc.r = &r;
    const char *argv[] = {g_bin, "--database-url", db, "up", NULL};
    proc *a = cms_test_spawn(&r, argv), *b = cms_test_spawn(&r, argv);
    cr_assert_eq(uv_timer_init(&r.loop, &rc.poll), 0);
    rc.poll.data = &rc;
    cr_assert_eq(uv_timer_start(&rc.poll, race_poll, 10, 20), 0);
    cms_test_runner_finish(&r);
    PQfinish(rc.holder);

    cr_assert(rc.released, "the two migrators never waited on the lock together");
    assert_exit(a, 0);
    assert_exit(b, 0);
    cr_assert_not_null(strstr(a->out, "waiting for the migration lock"), "%s", a->out);
    cr_assert_not_null(strstr(b->out, "waiting for the migration lock"), "%s", b->out);
    for (size_t i = 0; i < g_n; i++) {
        char want[128];
        snprintf(want, sizeof want, "applying %.79s ... ok", g_labels[i]);
        cr_assert_eq(count_of(a->out, want) + count_of(b->out, want), 1,
                     "\"%s\" should appear once in all:\n--- a:\n%s--- b:\n%s", want, a->out,
                     b->out);
    }
    cr_assert(strstr(a->out, "nothing to apply") || strstr(b->out, "nothing to apply"),
              "the second should find nothing to do:\n--- a:\n%s--- b:\n%s", a->out, b->out);
    char want[32];
    snprintf(want, sizeof want, "%zu|%zu", g_n, g_n);
    assert_sql(db, "SELECT count(*) || '|' || count(DISTINCT version) FROM schema_migrations",
               want);
    proc_free(a);
    proc_free(b);
    cms_test_db_drop(db);
}

/* ---- failures ---- */

Test(migrate, failing_migration_rolls_back_and_names_file_line_and_statement)
{
    char db[512], dir[64], want[32];
    cr_assert_eq(cms_test_db_create("mig_fail", 0, db, sizeof db), 0);
    proc *p = migrate(db, NULL, "up", NULL);
    assert_exit(p, 0);
    proc_free(p);
    snprintf(want, sizeof want, "%zu", g_n);

    copy_real(dir, sizeof dir, 0);
    write_file(dir, "0099_bad.up.sql",
               "-- a good statement, then one that fails\n"
               "CREATE TABLE bad_probe (id int);\n"
               "INSERT INTO no_such_table VALUES (1);\n");
    write_file(dir, "0099_bad.down.sql", "DROP TABLE bad_probe;\n");
    p = migrate(db, dir, "up", NULL);
    assert_exit(p, 1);
    cr_assert_not_null(strstr(p->out, "applying 0099_bad ... FAILED"), "%s", p->out);
    cr_assert_not_null(strstr(p->err, "0099_bad.up.sql:3:13:"), "want file:line:col in:\n%s",
                       p->err);
    cr_assert_not_null(strstr(p->err, "INSERT INTO no_such_table VALUES (1)"),
                       "want the statement:\n%s", p->err);
    cr_assert_not_null(strstr(p->err, "relation \"no_such_table\" does not exist"), "%s", p->err);
    cr_assert_not_null(strstr(p->err, "42P01"), "want the SQLSTATE:\n%s", p->err);
    cr_assert_not_null(strstr(p->err, "stays at version"), "%s", p->err);
    proc_free(p);
    assert_version(db, g_n);
    assert_sql(db, "SELECT max(version) FROM schema_migrations", want);
    assert_sql(db, "SELECT to_regclass('bad_probe') IS NULL",
               "t"); /* the good statement was rolled back */

    /* an error without a position: the statement's own line */
    write_file(dir, "0099_bad.up.sql",
               "CREATE TABLE bad_probe (id int);\n"
               "INSERT INTO bad_probe VALUES (1);\n"
               "INSERT INTO bad_probe SELECT 1/0;\n");
    p = migrate(db, dir, "up", NULL);
    assert_exit(p, 1);
    cr_assert_not_null(strstr(p->err, "0099_bad.up.sql:3:1:"), "%s", p->err);
    cr_assert_not_null(strstr(p->err, "INSERT INTO bad_probe SELECT 1/0"), "%s", p->err);
    cr_assert_not_null(strstr(p->err, "22012"), "%s", p->err);
    proc_free(p);
    assert_version(db, g_n);
    assert_sql(db, "SELECT to_regclass('bad_probe') IS NULL", "t");

    /* transaction control would escape the migration's transaction: refused before running */
    write_file(dir, "0099_bad.up.sql", "BEGIN;\nCREATE TABLE bad_probe (id int);\nCOMMIT;\n");
    p = migrate(db, dir, "up", NULL);
    assert_exit(p, 1);
    cr_assert_not_null(strstr(p->err, "0099_bad.up.sql:1:1"), "%s", p->err);
    cr_assert_not_null(strstr(p->err, "transaction"), "%s", p->err);
    proc_free(p);
    assert_sql(db, "SELECT to_regclass('bad_probe') IS NULL", "t");
    assert_version(db, g_n);

    remove_dir(dir);
    cms_test_db_drop(db);
}

Test(migrate, statements_split_like_psql)
{
    char db[512], dir[64];
    cr_assert_eq(cms_test_db_create("mig_split", 0, db, sizeof db), 0);
    copy_real(dir, sizeof dir, 0);
    write_file(
        dir, "0099_tricky.up.sql",
        "/* a block comment; with a semicolon /* and a nested one; */ still inside; */\n"
        "CREATE TABLE tricky (id int PRIMARY KEY, note text DEFAULT 'a;b', \"odd;name\" int);\n"
        "-- a line comment; with semicolons;\n"
        "CREATE FUNCTION tricky_f() RETURNS int LANGUAGE plpgsql AS $body$\n"
        "BEGIN\n"
        "    RETURN 1; -- inside the body;\n"
        "END;\n"
        "$body$;\n"
        "CREATE FUNCTION tricky_g(a int) RETURNS int LANGUAGE sql\n"
        "BEGIN ATOMIC\n"
        "    SELECT CASE WHEN a > 0 THEN a + 1 ELSE 0 END;\n"
        "END;\n"
        "INSERT INTO tricky (id, note) VALUES (1, E'it\\'s; fine'), (2, $$x;y$$);;\n"
        "DO $$ BEGIN PERFORM 1; END $$\n");
    write_file(dir, "0099_tricky.down.sql",
               "DROP FUNCTION tricky_g(int);\nDROP FUNCTION tricky_f();\nDROP TABLE tricky;\n");
    proc *p = migrate(db, dir, "up", NULL);
    assert_exit(p, 0);
    proc_free(p);
    assert_version(db, 99);
    assert_sql(db, "SELECT note FROM tricky WHERE id = 1", "it's; fine");
    assert_sql(db, "SELECT note FROM tricky WHERE id = 2", "x;y");
    assert_sql(db, "SELECT tricky_f() + tricky_g(1)", "3");
    assert_sql(db,
               "SELECT count(*) FROM information_schema.columns WHERE table_name = 'tricky'"
               " AND column_name = 'odd;name'",
               "1");

    p = migrate(db, dir, "down", NULL);
    assert_exit(p, 0);
    proc_free(p);
    assert_sql(db, "SELECT to_regclass('tricky') IS NULL", "t");
    assert_version(db, g_n);
    remove_dir(dir);
    cms_test_db_drop(db);
}

Test(migrate, changed_files_warn_and_unknown_versions_fail)
{
    char db[512], dir[64], older[64], line[256];
    cr_assert_eq(cms_test_db_create("mig_drift", 0, db, sizeof db), 0);
    proc *p = migrate(db, NULL, "up", NULL);
    assert_exit(p, 0);
    proc_free(p);

    copy_real(dir, sizeof dir, 0);
    append_file(dir, "0001_init.up.sql", "\n-- edited after it was applied\n");
    p = migrate(db, dir, "status", NULL);
    assert_exit(p, 0);
    cr_assert_not_null(strstr(p->err, "warning"), "%s", p->err);
    cr_assert_not_null(strstr(p->err, "0001_init.up.sql changed"), "%s", p->err);
    cr_assert_not_null(strstr(line_starting(p->out, "0001 ", line, sizeof line), "file changed"),
                       "%s", p->out);
    proc_free(p);
    p = migrate(db, dir, "up", NULL);
    assert_exit(p, 0);
    cr_assert_not_null(strstr(p->err, "0001_init.up.sql changed"), "%s", p->err);
    proc_free(p);

    /* a folder without the newest migration: the database is newer than it */
    copy_real(older, sizeof older, 1);
    const char *verbs[] = {"up", "down", "status"};
    for (size_t i = 0; i < 3; i++) {
        p = migrate(db, older, verbs[i], NULL);
        assert_exit(p, 1);
        cr_assert_not_null(strstr(p->err, g_labels[g_n - 1]), "%s: %s", verbs[i], p->err);
        cr_assert_not_null(strstr(p->err, "newer"), "%s: %s", verbs[i], p->err);
        proc_free(p);
    }
    assert_version(db, g_n);

    remove_dir(dir);
    remove_dir(older);
    cms_test_db_drop(db);
}

/* ---- new, help, connection errors ---- */

Test(migrate, new_creates_the_next_pair)
{
    char dir[64], empty[64], up[128], down[128];
    copy_real(dir, sizeof dir, 0);
    size_t before = count_files(dir);
    proc *p = migrate(NULL, dir, "new", "add_things", NULL);
    assert_exit(p, 0);
    snprintf(up, sizeof up, "%04zu_add_things.up.sql", g_n + 1);
    snprintf(down, sizeof down, "%04zu_add_things.down.sql", g_n + 1);
    cr_assert(file_exists(dir, up) && file_exists(dir, down), "want %s and %s in %s", up, down,
              dir);
    cr_assert_not_null(strstr(p->out, up), "%s", p->out);
    cr_assert_eq(count_files(dir), before + 2);
    proc_free(p);

    /* the same name again gets the number after that */
    p = migrate(NULL, dir, "new", "add_things", NULL);
    assert_exit(p, 0);
    snprintf(up, sizeof up, "%04zu_add_things.up.sql", g_n + 2);
    cr_assert(file_exists(dir, up), "want %s", up);
    proc_free(p);

    const char *bad[] = {"Bad", "add-things", "a b", "../escape", "x.sql", ""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        p = migrate(NULL, dir, "new", bad[i], NULL);
        assert_exit(p, 2);
        cr_assert_not_null(strstr(p->err, "a-z, 0-9 and _"), "\"%s\": %s", bad[i], p->err);
        proc_free(p);
    }
    p = migrate(NULL, dir, "new", NULL);
    assert_exit(p, 2);
    proc_free(p);
    cr_assert_eq(count_files(dir), before + 4, "refused names must create nothing");

    empty_dir(empty, sizeof empty);
    p = migrate(NULL, empty, "new", "first", NULL);
    assert_exit(p, 0);
    cr_assert(file_exists(empty, "0001_first.up.sql") && file_exists(empty, "0001_first.down.sql"));
    proc_free(p);

    /* what new made is a valid (empty) migration */
    char db[512];
    cr_assert_eq(cms_test_db_create("mig_new", 0, db, sizeof db), 0);
    p = migrate(db, dir, "up", NULL);
    assert_exit(p, 0);
    proc_free(p);
    assert_version(db, g_n + 2);
    cms_test_db_drop(db);
    remove_dir(dir);
    remove_dir(empty);
}

Test(migrate, help_lists_verbs_options_and_env)
{
    proc *p = migrate(NULL, NULL, "--help", NULL);
    assert_exit(p, 0);
    const char *want[] = {"up [N]",
                          "down [N|all]",
                          "status",
                          "version",
                          "new NAME",
                          "--database-url",
                          "CMS_DATABASE_URL",
                          "--migrations-dir",
                          "CMS_MIGRATIONS_DIR",
                          "--migrate-lock-timeout",
                          "--migrate-statement-timeout",
                          "--migrate-wait-timeout",
                          "--log-level",
                          "CMS_LOG_LEVEL"};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        cr_assert_not_null(strstr(p->out, want[i]), "--help lacks \"%s\":\n%s", want[i], p->out);
    proc_free(p);
}

Test(migrate, cannot_connect_names_host_and_port_never_the_password)
{
    proc *p = migrate(
        "host=127.0.0.1 port=1 dbname=nowhere user=nobody password=sekrit-pw connect_timeout=5",
        NULL, "up", NULL);
    assert_exit(p, 1);
    cr_assert_not_null(strstr(p->err, "127.0.0.1:1"), "%s", p->err);
    cr_assert_null(strstr(p->err, "sekrit-pw"), "password leaked:\n%s", p->err);
    cr_assert_null(strstr(p->out, "sekrit-pw"), "password leaked:\n%s", p->out);
    proc_free(p);

    p = migrate("host=127.0.0.1 password=sekrit pw", NULL, "version", NULL); /* malformed */
    assert_exit(p, 1);
    cr_assert_null(strstr(p->err, "sekrit"), "password leaked:\n%s", p->err);
    cr_assert_not_null(strstr(p->err, "--database-url"), "%s", p->err);
    proc_free(p);
}
