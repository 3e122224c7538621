/* What migrations/0009_roles lets each service role do, tried as that role
 * on a migrated scratch database (tests/lib/ctl made the login roles):
 * audit_logs is insert-and-select only for cms_audit, read-only for
 * cms_auditor, and refuses UPDATE, DELETE and TRUNCATE even when granted by
 * mistake; a service sees and writes only its own rows of the runtime
 * tables; no service role may change the schema, owns anything or may
 * create roles or databases; the hot statements still use their indexes;
 * and a migrator without CREATEROLE (deploy/local/up's) migrates, grants
 * and bootstraps the first admin, whose events identity then relays. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testenv.h"
#include "testproc.h"

#define WATCHDOG_MS 60000
#define SYSTEM_ID "00000000-0000-7000-8000-000000000001"

static const char *const service_roles[] = {"identity", "audit",   "contracts",
                                            "training", "auditor", NULL};

static char g_db[512];

static void init(void)
{
    cr_assert_eq(cms_test_db_create("roles", 1, g_db, sizeof g_db), 0);
}

static void fini(void)
{
    if (g_db[0])
        cms_test_db_drop(g_db);
    g_db[0] = '\0';
}

TestSuite(roles, .init = init, .fini = fini, .timeout = 120);

/* ---- SQL as a role ---- */

typedef struct outcome {
    bool ok;
    char sqlstate[6];
    char value[256];   /* first column of the first row; "" for none */
    char message[256]; /* the error's */
    long rows;         /* PQcmdTuples, or the rows returned */
} outcome;

/* Runs sql (one or more statements) on conninfo; the last result counts. */
static outcome run_on(const char *conninfo, const char *sql)
{
    outcome o = {.ok = false};
    PGconn *c = PQconnectdb(conninfo);
    cr_assert_eq(PQstatus(c), CONNECTION_OK, "connect: %s", PQerrorMessage(c));
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    o.ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
    if (o.ok) {
        if (st == PGRES_TUPLES_OK && PQntuples(r) > 0)
            snprintf(o.value, sizeof o.value, "%s", PQgetvalue(r, 0, 0));
        o.rows = st == PGRES_TUPLES_OK ? PQntuples(r) : atol(PQcmdTuples(r));
    } else {
        const char *s = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        snprintf(o.sqlstate, sizeof o.sqlstate, "%s", s ? s : "");
        snprintf(o.message, sizeof o.message, "%s", PQresultErrorMessage(r));
    }
    PQclear(r);
    PQfinish(c);
    return o;
}

static outcome run_as(const char *role, const char *sql)
{
    char url[640];
    cms_test_db_as(g_db, role, url, sizeof url);
    return run_on(url, sql);
}

static void assert_refused(const char *role, const char *sql)
{
    outcome o = run_as(role, sql);
    cr_assert(!o.ok, "as %s, \"%s\" was allowed", role, sql);
    cr_assert_str_eq(o.sqlstate, "42501", "as %s, \"%s\": SQLSTATE %s (%s), want 42501", role, sql,
                     o.sqlstate, o.message);
}

static outcome assert_allowed(const char *role, const char *sql)
{
    outcome o = run_as(role, sql);
    cr_assert(o.ok, "as %s, \"%s\" was refused: %s", role, sql, o.message);
    return o;
}

static void assert_value_as(const char *role, const char *sql, const char *want)
{
    outcome o = assert_allowed(role, sql);
    cr_assert_str_eq(o.value, want, "as %s, \"%s\" gave \"%s\", want \"%s\"", role, sql, o.value,
                     want);
}

static void assert_super(const char *sql, const char *want)
{
    char *got = cms_test_sql(g_db, sql);
    cr_assert_not_null(got, "%s", sql);
    cr_assert_str_eq(got, want, "\"%s\" gave \"%s\", want \"%s\"", sql, got, want);
    free(got);
}

static void super(const char *sql)
{
    char *got = cms_test_sql(g_db, sql);
    cr_assert_not_null(got, "%s", sql);
    free(got);
}

/* ---- audit_logs ---- */

#define AUDIT_ROW                                                                                  \
    "INSERT INTO audit_logs (id, event_type, resource_type, resource_id, actor_id, details) "      \
    "VALUES (gen_random_uuid(), 'identity.created', 'identity', gen_random_uuid(), '" SYSTEM_ID    \
    "', '{}')"

Test(roles, the_audit_role_inserts_and_selects_audit_logs_and_changes_nothing)
{
    assert_allowed("audit", AUDIT_ROW);
    assert_value_as("audit", "SELECT count(*) FROM audit_logs", "1");
    assert_refused("audit", "UPDATE audit_logs SET details = '{\"forged\": true}'");
    assert_refused("audit", "DELETE FROM audit_logs");
    assert_refused("audit", "TRUNCATE audit_logs");
    assert_super("SELECT count(*) FROM audit_logs WHERE details = '{}'", "1");
    /* the actor check reads identities' ids, nothing else of them */
    assert_value_as("audit", "SELECT count(*) FROM identities WHERE id = '" SYSTEM_ID "'", "1");
    assert_refused("audit", "SELECT name FROM identities");
    assert_refused("audit", "SELECT * FROM credentials");
    assert_refused("audit", "SELECT * FROM outbox");
    /* the auditor reads, and only reads */
    assert_value_as("auditor", "SELECT count(*) FROM audit_logs", "1");
    assert_refused("auditor", AUDIT_ROW);
    assert_refused("auditor", "DELETE FROM audit_logs");
    assert_refused("auditor", "SELECT id FROM identities");
    /* and no other service touches audit_logs */
    assert_refused("identity", "SELECT * FROM audit_logs");
    assert_refused("identity", AUDIT_ROW);
}

Test(roles, audit_logs_refuse_update_delete_and_truncate_even_when_granted)
{
    super(AUDIT_ROW);
    /* a grant by mistake */
    super("GRANT UPDATE, DELETE, TRUNCATE ON audit_logs TO cms_auditor");
    const char *const changes[] = {"UPDATE audit_logs SET details = '{\"forged\": true}'",
                                   "DELETE FROM audit_logs", "TRUNCATE audit_logs", NULL};
    for (size_t i = 0; changes[i]; i++) {
        outcome o = run_as("auditor", changes[i]);
        cr_assert(!o.ok, "\"%s\" was allowed", changes[i]);
        cr_assert_str_eq(o.sqlstate, "42501", "\"%s\": %s", changes[i], o.message);
        cr_assert_not_null(strstr(o.message, "append-only"), "refused by the guard: %s", o.message);
    }
    super("REVOKE UPDATE, DELETE, TRUNCATE ON audit_logs FROM cms_auditor");
    assert_super("SELECT count(*) FROM audit_logs WHERE details = '{}'", "1");
    /* the owner may still repair it */
    assert_super("WITH d AS (DELETE FROM audit_logs RETURNING 1) SELECT count(*) FROM d", "1");
}

/* ---- the runtime tables ---- */

Test(roles, a_service_sees_and_writes_only_its_own_runtime_rows)
{
    super("INSERT INTO outbox (source, event_id, subject, payload) VALUES "
          " ('identity', gen_random_uuid(), 'cms.events.identity.created', ''),"
          " ('contracts', gen_random_uuid(), 'cms.events.contract.created', ''),"
          " ('identityx', gen_random_uuid(), 'cms.events.identity.created', '');"
          "INSERT INTO outbox_dead (seq, source, event_id, subject, payload, created_at, reason) "
          " VALUES (-1, 'contracts', gen_random_uuid(), 's', '', now(), 'refused');"
          "INSERT INTO command_replies (service, request_id, owner, reply) VALUES"
          " ('identity', 'a/get/1', gen_random_uuid(), 'mine'),"
          " ('contracts', 'a/get/1', gen_random_uuid(), 'theirs');"
          "INSERT INTO leases (name, holder, expires_at) VALUES"
          " ('outbox:identity', gen_random_uuid(), now() + interval '1 hour'),"
          " ('outbox:contracts', gen_random_uuid(), now() + interval '1 hour'),"
          " ('consumer:contracts-x', gen_random_uuid(), now() + interval '1 hour');"
          "INSERT INTO processed_events (consumer, event_id) VALUES"
          " ('contracts', gen_random_uuid()), ('contracts-x', gen_random_uuid()),"
          " ('contractsx', gen_random_uuid()), ('training-x', gen_random_uuid())");

    assert_value_as("identity", "SELECT cms_current_service()", "identity");
    /* reading: its own rows, nothing of another service's */
    assert_value_as("identity", "SELECT string_agg(source, ',') FROM outbox", "identity");
    assert_value_as("identity", "SELECT count(*) FROM outbox WHERE source = 'contracts'", "0");
    assert_value_as("identity",
                    "SELECT string_agg(service || ':' || encode(reply, 'escape'), ',') "
                    "FROM command_replies",
                    "identity:mine");
    assert_value_as("identity", "SELECT string_agg(name, ',') FROM leases", "outbox:identity");
    /* writing another's: refused on insert, nothing found to update or delete */
    const char *const inserts[] = {
        "INSERT INTO outbox (source, event_id, subject, payload) "
        "VALUES ('contracts', gen_random_uuid(), 's', '')",
        "INSERT INTO outbox_dead (seq, source, event_id, subject, payload, created_at, reason) "
        "VALUES (-2, 'contracts', gen_random_uuid(), 's', '', now(), 'refused')",
        "INSERT INTO command_replies (service, request_id, owner, reply) "
        "VALUES ('contracts', 'a/get/2', gen_random_uuid(), 'forged')",
        "INSERT INTO leases (name, holder, expires_at) "
        "VALUES ('consumer:contracts', gen_random_uuid(), now())",
        /* its own row given to another */
        "UPDATE command_replies SET service = 'contracts', request_id = 'a/get/3'",
        "UPDATE leases SET name = 'outbox:contracts2'",
        /* an event's content is never rewritten, its own neither */
        "UPDATE outbox SET payload = 'forged' WHERE source = 'identity'",
        "UPDATE outbox SET source = 'contracts'", NULL};
    for (size_t i = 0; inserts[i]; i++)
        assert_refused("identity", inserts[i]);
    const char *const changes[] = {
        "UPDATE command_replies SET reply = 'forged' WHERE service = 'contracts'",
        "DELETE FROM command_replies WHERE service = 'contracts'",
        "DELETE FROM outbox WHERE source <> 'identity'",
        "UPDATE outbox SET published_at = now(), stream = 'S', stream_seq = 1 "
        "WHERE source = 'contracts'",
        "UPDATE leases SET holder = gen_random_uuid() WHERE name = 'outbox:contracts'",
        "DELETE FROM leases WHERE name <> 'outbox:identity'",
        NULL};
    for (size_t i = 0; changes[i]; i++) {
        outcome o = assert_allowed("identity", changes[i]);
        cr_assert_eq(o.rows, 0, "as identity, \"%s\" changed %ld rows", changes[i], o.rows);
    }
    /* the ON CONFLICT path of a lease (common/lease.c) onto another's row */
    assert_refused("identity", "INSERT INTO leases (name, holder, expires_at) "
                               "VALUES ('outbox:contracts', gen_random_uuid(), now()) "
                               "ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder");
    assert_super("SELECT count(*) FROM outbox WHERE source = 'contracts'", "1");
    /* the relay marks its own rows published, and unmarks them */
    outcome mark = assert_allowed("identity", "UPDATE outbox SET published_at = now(), "
                                              "stream = 'CMS_EVENTS', stream_seq = 7");
    cr_assert_eq(mark.rows, 1, "identity marked its one row, not %ld", mark.rows);
    assert_allowed("identity",
                   "UPDATE outbox SET published_at = NULL, stream = NULL, stream_seq = NULL");
    assert_super("SELECT encode(reply, 'escape') FROM command_replies WHERE service = 'contracts'",
                 "theirs");
    assert_super("SELECT count(*) FROM leases", "3");
    /* identity consumes nothing: processed_events is not its at all */
    assert_refused("identity", "SELECT * FROM processed_events");

    /* processed_events and consumer leases by the consumer's name:
     * "<service>" or "<service>-<more>" */
    assert_value_as("contracts",
                    "SELECT string_agg(consumer, ',' ORDER BY consumer) FROM processed_events",
                    "contracts,contracts-x");
    assert_value_as("contracts", "SELECT string_agg(name, ',' ORDER BY name) FROM leases",
                    "consumer:contracts-x,outbox:contracts");
    assert_refused("contracts", "INSERT INTO processed_events (consumer, event_id) "
                                "VALUES ('training-x', gen_random_uuid())");
    assert_refused("contracts", "INSERT INTO leases (name, holder, expires_at) "
                                "VALUES ('consumer:training', gen_random_uuid(), now())");
    assert_allowed("contracts", "INSERT INTO processed_events (consumer, event_id) "
                                "VALUES ('contracts-y', gen_random_uuid())");
    outcome o = assert_allowed("training", "DELETE FROM processed_events");
    cr_assert_eq(o.rows, 1, "training deleted its one row, not %ld", o.rows);
    assert_super("SELECT count(*) FROM processed_events", "4");
}

Test(roles, the_hot_statements_keep_their_indexes_and_compute_the_service_once)
{
    /* with sequential scans priced out, a plan without the index would
     * still show one: the policy must not hide the index */
    const struct {
        const char *role, *sql, *index;
    } plans[] = {
        {"identity",
         "SELECT seq FROM outbox WHERE source = 'identity' AND published_at IS NULL ORDER BY seq "
         "LIMIT 256",
         "idx_outbox_pending"},
        {"identity",
         "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox WHERE source = 'identity' AND "
         "published_at < now() - interval '10 minutes' LIMIT 10000)",
         "idx_outbox_published"},
        {"identity", "DELETE FROM outbox WHERE seq = ANY('{1,2,3}'::bigint[])", "outbox_pkey"},
        {"identity",
         "SELECT reply FROM command_replies WHERE service = 'identity' AND request_id = 'x'",
         "command_replies_pkey"},
        {"identity", "SELECT holder FROM leases WHERE name = 'outbox:identity'", "leases_pkey"},
        {"contracts",
         "DELETE FROM processed_events WHERE ctid IN (SELECT ctid FROM processed_events "
         "WHERE consumer = 'contracts' AND processed_at < now() - interval '1 day' LIMIT 10000)",
         NULL /* its primary key or idx_processed_events_age */},
    };
    for (size_t i = 0; i < sizeof plans / sizeof plans[0]; i++) {
        char url[640];
        cms_test_db_as(g_db, plans[i].role, url, sizeof url);
        PGconn *c = PQconnectdb(url);
        cr_assert_eq(PQstatus(c), CONNECTION_OK, "%s", PQerrorMessage(c));
        PQclear(PQexec(c, "SET enable_seqscan = off"));
        char explain[1200];
        snprintf(explain, sizeof explain, "EXPLAIN %s", plans[i].sql);
        PGresult *r = PQexec(c, explain);
        cr_assert_eq(PQresultStatus(r), PGRES_TUPLES_OK, "%s: %s", explain, PQerrorMessage(c));
        char plan[8192];
        size_t len = 0;
        plan[0] = '\0';
        for (int k = 0; k < PQntuples(r) && len < sizeof plan; k++)
            len += (size_t)snprintf(plan + len, sizeof plan - len, "%s\n", PQgetvalue(r, k, 0));
        PQclear(r);
        PQfinish(c);
        cr_assert_null(strstr(plan, "Seq Scan"), "as %s, %s:\n%s", plans[i].role, plans[i].sql,
                       plan);
        cr_assert_not_null(strstr(plan, "Index"), "as %s, %s uses no index:\n%s", plans[i].role,
                           plans[i].sql, plan);
        if (plans[i].index)
            cr_assert_not_null(strstr(plan, plans[i].index), "as %s, %s does not use %s:\n%s",
                               plans[i].role, plans[i].sql, plans[i].index, plan);
        /* the service's name is an InitPlan (once per statement), never a
         * SubPlan run per row */
        cr_assert_not_null(strstr(plan, "InitPlan"), "%s:\n%s", plans[i].sql, plan);
        cr_assert_null(strstr(plan, "SubPlan"), "%s:\n%s", plans[i].sql, plan);
    }
}

/* ---- the schema and the roles themselves ---- */

Test(roles, no_service_role_may_change_the_schema)
{
    const char *const ddl[] = {"CREATE TABLE mine (id int)",
                               "CREATE FUNCTION mine() RETURNS int LANGUAGE sql AS 'SELECT 1'",
                               "CREATE SCHEMA mine",
                               "DROP TABLE outbox",
                               "ALTER TABLE identities ADD COLUMN mine int",
                               "ALTER TABLE outbox DISABLE ROW LEVEL SECURITY",
                               "DROP POLICY own_rows ON command_replies",
                               "DROP TRIGGER append_only ON audit_logs",
                               "CREATE INDEX mine ON identities (name)",
                               "TRUNCATE outbox",
                               "GRANT cms_identity, cms_audit TO CURRENT_USER",
                               "CREATE ROLE mine",
                               NULL};
    for (size_t r = 0; service_roles[r]; r++)
        for (size_t i = 0; ddl[i]; i++)
            assert_refused(service_roles[r], ddl[i]);
    assert_super("SELECT count(*) FROM pg_class WHERE relname = 'mine'", "0");
}

Test(roles, no_service_role_is_superuser_creator_or_owner)
{
    char sql[1024];
    for (size_t r = 0; service_roles[r]; r++) {
        /* the group and its login role */
        snprintf(sql, sizeof sql,
                 "SELECT string_agg(rolname, ',') FROM pg_roles WHERE rolname IN "
                 "('cms_%s', 'cms_%s_login') AND (rolsuper OR rolcreaterole OR rolcreatedb "
                 "OR rolbypassrls OR rolreplication)",
                 service_roles[r], service_roles[r]);
        assert_super(sql, "");
        assert_super("SELECT count(*) FROM pg_roles WHERE rolname = 'cms_identity' AND "
                     "NOT rolcanlogin",
                     "1");
        /* owns nothing here: no relation, function, type, schema or policy table */
        snprintf(sql, sizeof sql,
                 "SELECT string_agg(what, ', ') FROM ("
                 " SELECT 'relation ' || relname AS what FROM pg_class"
                 "  WHERE pg_has_role('cms_%s_login', relowner, 'USAGE')"
                 " UNION ALL SELECT 'function ' || proname FROM pg_proc"
                 "  WHERE pg_has_role('cms_%s_login', proowner, 'USAGE')"
                 " UNION ALL SELECT 'type ' || typname FROM pg_type"
                 "  WHERE pg_has_role('cms_%s_login', typowner, 'USAGE')"
                 " UNION ALL SELECT 'schema ' || nspname FROM pg_namespace"
                 "  WHERE pg_has_role('cms_%s_login', nspowner, 'USAGE')"
                 " UNION ALL SELECT 'database ' || datname FROM pg_database"
                 "  WHERE pg_has_role('cms_%s_login', datdba, 'USAGE')) o",
                 service_roles[r], service_roles[r], service_roles[r], service_roles[r],
                 service_roles[r]);
        assert_super(sql, "");
        /* a member of its own group only: no other service's rights */
        snprintf(sql, sizeof sql,
                 "SELECT string_agg(rolname, ',') FROM pg_roles WHERE rolname LIKE 'cms\\_%%' "
                 "AND rolname <> 'cms_%s' AND NOT rolcanlogin "
                 "AND pg_has_role('cms_%s_login', oid, 'MEMBER')",
                 service_roles[r], service_roles[r]);
        assert_super(sql, "");
    }
    /* the owner's session acts for no service */
    assert_super("SET ROLE NONE; SELECT coalesce(cms_current_service(), 'none')", "none");
}

/* ---- the migrator ---- */

static void write_key_file(const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    cr_assert_geq(fd, 0, "create %s", path);
    const char hex[] = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n";
    cr_assert_eq(write(fd, hex, sizeof hex - 1), (ssize_t)(sizeof hex - 1));
    close(fd);
}

Test(roles, a_migrator_without_createrole_migrates_and_bootstraps_the_first_admin)
{
    char role[64], db[64], sql[512], url[512], key_file[128];
    snprintf(role, sizeof role, "migrator_%d", (int)getpid());
    snprintf(db, sizeof db, "owned_%d", (int)getpid());
    snprintf(key_file, sizeof key_file, "/tmp/cms-rolestest-%d.key", (int)getpid());
    const char *admin = cms_test_env("CMS_TEST_PG_URL");
    snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", db);
    free(cms_test_sql(admin, sql));
    snprintf(sql, sizeof sql, "DROP ROLE IF EXISTS %s", role);
    free(cms_test_sql(admin, sql));
    /* as deploy/local/up has it: a login role that owns the database, no more */
    snprintf(sql, sizeof sql, "CREATE ROLE %s LOGIN PASSWORD 'migrator-pw'", role);
    free(cms_test_sql(admin, sql));
    snprintf(sql, sizeof sql, "CREATE DATABASE %s OWNER %s", db, role);
    char *ok = cms_test_sql(admin, sql);
    cr_assert_not_null(ok);
    free(ok);
    write_key_file(key_file);

    snprintf(url, sizeof url, "host=127.0.0.1 port=%s user=%s password=migrator-pw dbname=%s",
             cms_test_env("CMS_TEST_PG_PORT"), role, db);
    char bin[512], key_opt[160];
    snprintf(bin, sizeof bin, "%s/cms-migrate", cms_test_env("CMS_TEST_BIN_DIR"));
    snprintf(key_opt, sizeof key_opt, "--identity-key-file=%s", key_file);
    const char *argv[] = {bin, "--database-url", url, "up", key_opt, "--admin-key-stdout", NULL};
    cms_test_proc *p = cms_test_run(argv, WATCHDOG_MS);
    cr_assert(p->exited && p->status == 0, "cms-migrate up as %s: %s%s", role, p->out, p->err);
    cr_assert_not_null(strstr(p->err, "first admin created"), "%s", p->err);
    cms_test_proc_free(p);

    /* the bootstrap's rows, written as the owner through forced RLS */
    char super_db[600];
    snprintf(super_db, sizeof super_db, "%s dbname=%s", admin, db);
    char *got = cms_test_sql(super_db, "SELECT string_agg(subject, ',' ORDER BY seq) FROM outbox "
                                       "WHERE source = 'identity'");
    cr_assert_not_null(got);
    cr_assert_str_eq(got, "cms.events.identity.created,cms.events.credential.issued");
    free(got);

    /* identity, connected to that database, relays them */
    char as_identity[640];
    cms_test_db_as(super_db, "identity", as_identity, sizeof as_identity);
    outcome o = run_on(as_identity, "SELECT count(*) FROM outbox");
    cr_assert(o.ok, "%s", o.message);
    cr_assert_str_eq(o.value, "2");
    /* the database itself: no temporary tables, no way in for others */
    o = run_on(as_identity, "CREATE TEMP TABLE mine (id int)");
    cr_assert(!o.ok && strcmp(o.sqlstate, "42501") == 0, "temp table: %s %s", o.sqlstate,
              o.message);
    char as_testsvc[640];
    cms_test_db_as(super_db, "testsvc", as_testsvc, sizeof as_testsvc);
    PGconn *c = PQconnectdb(as_testsvc);
    cr_assert_neq(PQstatus(c), CONNECTION_OK, "a role outside the system connected");
    cr_assert_not_null(strstr(PQerrorMessage(c), "permission denied"), "%s", PQerrorMessage(c));
    PQfinish(c);

    /* and all the way down again, as the same migrator */
    const char *down[] = {bin, "--database-url", url, "down", "all", NULL};
    p = cms_test_run(down, WATCHDOG_MS);
    cr_assert(p->exited && p->status == 0, "cms-migrate down all: %s%s", p->out, p->err);
    cms_test_proc_free(p);

    unlink(key_file);
    snprintf(sql, sizeof sql, "DROP DATABASE %s WITH (FORCE)", db);
    free(cms_test_sql(admin, sql));
    snprintf(sql, sizeof sql, "DROP ROLE %s", role);
    free(cms_test_sql(admin, sql));
}
