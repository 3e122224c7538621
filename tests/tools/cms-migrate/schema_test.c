/* The migrated schema, read back from the catalogs, against the facts of
 * docs/schema.md written out below (the reference schema of 0001, the
 * runtime tables of 0002 and later, and schema_migrations): every table's
 * columns with type, nullability and default; every enum's values in order;
 * every foreign key; every index by name with its definition; every primary
 * key and unique constraint. A missing or different fact fails the test and
 * is named. Additions the list does not know (0004) are allowed (the
 * design permits additions) and only reported. */
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <libpq-fe.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testenv.h"

typedef struct column_fact {
    const char *table, *column, *type;
    bool not_null;
    const char *def; /* pg_get_expr of the default, "" for none */
} column_fact;

static const column_fact columns[] = {
    {"contracts", "id", "uuid", true, "gen_random_uuid()"},
    {"contracts", "title", "character varying(255)", true, ""},
    {"contracts", "description", "text", false, ""},
    {"contracts", "provider_id", "uuid", true, ""},
    {"contracts", "consumer_id", "uuid", true, ""},
    {"contracts", "status", "contract_status", true, "'draft'::contract_status"},
    {"contracts", "terms", "jsonb", true, ""},
    {"contracts", "signatures", "jsonb", false, ""},
    {"contracts", "metadata", "jsonb", false, ""},
    {"contracts", "created_at", "timestamp with time zone", true, "now()"},
    {"contracts", "updated_at", "timestamp with time zone", true, "now()"},

    {"identities", "id", "uuid", true, "gen_random_uuid()"},
    {"identities", "name", "character varying(255)", true, ""},
    {"identities", "type", "identity_type", true, ""},
    {"identities", "status", "identity_status", true, "'active'::identity_status"},
    {"identities", "metadata", "jsonb", false, ""},
    {"identities", "created_at", "timestamp with time zone", true, "now()"},
    {"identities", "updated_at", "timestamp with time zone", true, "now()"},

    {"credentials", "id", "uuid", true, "gen_random_uuid()"},
    {"credentials", "identity_id", "uuid", true, ""},
    {"credentials", "type", "credential_type", true, ""},
    {"credentials", "value", "text", true, ""},
    {"credentials", "expires_at", "timestamp with time zone", true, ""},
    {"credentials", "created_at", "timestamp with time zone", true, "now()"},
    {"credentials", "metadata", "jsonb", false, ""},

    {"training_jobs", "id", "uuid", true, "gen_random_uuid()"},
    {"training_jobs", "model_name", "character varying(255)", true, ""},
    {"training_jobs", "status", "job_status", true, "'pending'::job_status"},
    {"training_jobs", "config", "jsonb", true, ""},
    {"training_jobs", "metrics", "jsonb", false, ""},
    {"training_jobs", "privacy_budget", "double precision", true, ""},
    {"training_jobs", "privacy_budget_spent", "double precision", false, "0.0"},
    {"training_jobs", "created_at", "timestamp with time zone", true, "now()"},
    {"training_jobs", "updated_at", "timestamp with time zone", true, "now()"},
    {"training_jobs", "completed_at", "timestamp with time zone", false, ""},

    {"audit_logs", "id", "uuid", true, "gen_random_uuid()"},
    {"audit_logs", "event_type", "character varying(50)", true, ""},
    {"audit_logs", "resource_type", "character varying(50)", true, ""},
    {"audit_logs", "resource_id", "uuid", true, ""},
    {"audit_logs", "actor_id", "uuid", true, ""},
    {"audit_logs", "details", "jsonb", true, ""},
    {"audit_logs", "created_at", "timestamp with time zone", true, "now()"},

    /* 0002_runtime */
    {"outbox", "seq", "bigint", true, "nextval('outbox_seq_seq'::regclass)"},
    {"outbox", "source", "text", true, ""},
    {"outbox", "event_id", "uuid", true, ""},
    {"outbox", "subject", "text", true, ""},
    {"outbox", "payload", "bytea", true, ""},
    {"outbox", "created_at", "timestamp with time zone", true, "now()"},
    /* 0015_outbox_retain */
    {"outbox", "published_at", "timestamp with time zone", false, ""},
    {"outbox", "stream", "text", false, ""},
    {"outbox", "stream_seq", "bigint", false, ""},

    {"processed_events", "consumer", "text", true, ""},
    {"processed_events", "event_id", "uuid", true, ""},
    {"processed_events", "processed_at", "timestamp with time zone", true, "now()"},

    {"command_replies", "service", "text", true, ""},
    {"command_replies", "request_id", "text", true, ""},
    /* 0005_command_claims: NULL while a claim waits for its reply */
    {"command_replies", "reply", "bytea", false, ""},
    {"command_replies", "created_at", "timestamp with time zone", true, "now()"},
    {"command_replies", "owner", "uuid", false, ""},

    /* 0006_leases */
    {"leases", "name", "text", true, ""},
    {"leases", "holder", "uuid", true, ""},
    {"leases", "expires_at", "timestamp with time zone", true, ""},

    /* 0007_outbox_dead */
    {"outbox_dead", "seq", "bigint", true, ""},
    {"outbox_dead", "source", "text", true, ""},
    {"outbox_dead", "event_id", "uuid", true, ""},
    {"outbox_dead", "subject", "text", true, ""},
    {"outbox_dead", "payload", "bytea", true, ""},
    {"outbox_dead", "created_at", "timestamp with time zone", true, ""},
    {"outbox_dead", "reason", "text", true, ""},
    {"outbox_dead", "dead_at", "timestamp with time zone", true, "now()"},

    /* cms-migrate's bookkeeping */
    {"schema_migrations", "version", "integer", true, ""},
    {"schema_migrations", "name", "text", true, ""},
    {"schema_migrations", "checksum", "text", true, ""},
    {"schema_migrations", "applied_at", "timestamp with time zone", true, "now()"},
};

typedef struct pair_fact {
    const char *name;
    const char *value;
} pair_fact;

/* enum -> its labels in order */
static const pair_fact enums[] = {
    {"contract_status", "draft,review,signed,active,completed,terminated,expired"},
    {"identity_type", "user,machine,enclave"},
    {"identity_status", "active,inactive,suspended"},
    {"job_status", "pending,running,completed,failed,stopped"},
    {"credential_type", "api_key,public_key,attestation"},
};

/* "table.column" -> "ref_table.ref_column on delete ACTION" */
static const pair_fact foreign_keys[] = {
    {"contracts.provider_id", "identities.id on delete no action"},
    {"contracts.consumer_id", "identities.id on delete no action"},
    {"credentials.identity_id", "identities.id on delete no action"},
    {"audit_logs.actor_id", "identities.id on delete no action"},
};

/* index name -> pg_get_indexdef */
static const pair_fact indexes[] = {
    {"contracts_pkey", "CREATE UNIQUE INDEX contracts_pkey ON public.contracts USING btree (id)"},
    {"idx_contracts_provider",
     "CREATE INDEX idx_contracts_provider ON public.contracts USING btree (provider_id)"},
    {"idx_contracts_consumer",
     "CREATE INDEX idx_contracts_consumer ON public.contracts USING btree (consumer_id)"},
    {"idx_contracts_status",
     "CREATE INDEX idx_contracts_status ON public.contracts USING btree (status)"},
    {"idx_contracts_created_at",
     "CREATE INDEX idx_contracts_created_at ON public.contracts USING btree (created_at)"},
    {"identities_pkey",
     "CREATE UNIQUE INDEX identities_pkey ON public.identities USING btree (id)"},
    {"identities_name_key",
     "CREATE UNIQUE INDEX identities_name_key ON public.identities USING btree (name)"},
    {"idx_identities_type",
     "CREATE INDEX idx_identities_type ON public.identities USING btree (type)"},
    {"idx_identities_status",
     "CREATE INDEX idx_identities_status ON public.identities USING btree (status)"},
    {"credentials_pkey",
     "CREATE UNIQUE INDEX credentials_pkey ON public.credentials USING btree (id)"},
    {"idx_credentials_identity",
     "CREATE INDEX idx_credentials_identity ON public.credentials USING btree (identity_id)"},
    {"idx_credentials_expires",
     "CREATE INDEX idx_credentials_expires ON public.credentials USING btree (expires_at)"},
    {"training_jobs_pkey",
     "CREATE UNIQUE INDEX training_jobs_pkey ON public.training_jobs USING btree (id)"},
    {"idx_training_jobs_status",
     "CREATE INDEX idx_training_jobs_status ON public.training_jobs USING btree (status)"},
    {"idx_training_jobs_model",
     "CREATE INDEX idx_training_jobs_model ON public.training_jobs USING btree (model_name)"},
    {"audit_logs_pkey",
     "CREATE UNIQUE INDEX audit_logs_pkey ON public.audit_logs USING btree (id)"},
    {"idx_audit_logs_event",
     "CREATE INDEX idx_audit_logs_event ON public.audit_logs USING btree (event_type)"},
    {"idx_audit_logs_resource", "CREATE INDEX idx_audit_logs_resource ON public.audit_logs USING "
                                "btree (resource_type, resource_id)"},
    {"idx_audit_logs_actor",
     "CREATE INDEX idx_audit_logs_actor ON public.audit_logs USING btree (actor_id)"},
    {"idx_audit_logs_created",
     "CREATE INDEX idx_audit_logs_created ON public.audit_logs USING btree (created_at)"},
    /* 0010: cms-audit's query by actor, in its order */
    {"idx_audit_logs_actor_created", "CREATE INDEX idx_audit_logs_actor_created ON "
                                     "public.audit_logs USING btree (actor_id, created_at, id)"},
    {"outbox_pkey", "CREATE UNIQUE INDEX outbox_pkey ON public.outbox USING btree (seq)"},
    {"outbox_event_id_key",
     "CREATE UNIQUE INDEX outbox_event_id_key ON public.outbox USING btree (event_id)"},
    /* 0015: the relay's read of what waits, and the pruning of what it kept */
    {"idx_outbox_pending", "CREATE INDEX idx_outbox_pending ON public.outbox USING btree (source, "
                           "seq) WHERE (published_at IS NULL)"},
    {"idx_outbox_published", "CREATE INDEX idx_outbox_published ON public.outbox USING btree "
                             "(source, published_at) WHERE (published_at IS NOT NULL)"},
    {"processed_events_pkey", "CREATE UNIQUE INDEX processed_events_pkey ON "
                              "public.processed_events USING btree (consumer, event_id)"},
    /* 0008: the consumers' pruning by age */
    {"idx_processed_events_age", "CREATE INDEX idx_processed_events_age ON "
                                 "public.processed_events USING btree (consumer, processed_at)"},
    {"command_replies_pkey", "CREATE UNIQUE INDEX command_replies_pkey ON public.command_replies "
                             "USING btree (service, request_id)"},
    {"idx_command_replies_created",
     "CREATE INDEX idx_command_replies_created ON public.command_replies USING btree (created_at)"},
    {"leases_pkey", "CREATE UNIQUE INDEX leases_pkey ON public.leases USING btree (name)"},
    {"outbox_dead_pkey",
     "CREATE UNIQUE INDEX outbox_dead_pkey ON public.outbox_dead USING btree (seq)"},
    {"idx_outbox_dead_source",
     "CREATE INDEX idx_outbox_dead_source ON public.outbox_dead USING btree (source, seq)"},
    {"schema_migrations_pkey", "CREATE UNIQUE INDEX schema_migrations_pkey ON "
                               "public.schema_migrations USING btree (version)"},
};

/* "table.constraint" -> pg_get_constraintdef, for primary keys and uniques */
static const pair_fact keys[] = {
    {"contracts.contracts_pkey", "PRIMARY KEY (id)"},
    {"identities.identities_pkey", "PRIMARY KEY (id)"},
    {"identities.identities_name_key", "UNIQUE (name)"},
    {"credentials.credentials_pkey", "PRIMARY KEY (id)"},
    {"training_jobs.training_jobs_pkey", "PRIMARY KEY (id)"},
    {"audit_logs.audit_logs_pkey", "PRIMARY KEY (id)"},
    {"outbox.outbox_pkey", "PRIMARY KEY (seq)"},
    {"outbox.outbox_event_id_key", "UNIQUE (event_id)"},
    {"processed_events.processed_events_pkey", "PRIMARY KEY (consumer, event_id)"},
    {"command_replies.command_replies_pkey", "PRIMARY KEY (service, request_id)"},
    {"leases.leases_pkey", "PRIMARY KEY (name)"},
    {"outbox_dead.outbox_dead_pkey", "PRIMARY KEY (seq)"},
    {"schema_migrations.schema_migrations_pkey", "PRIMARY KEY (version)"},
};

#define N(a) (sizeof(a) / sizeof((a)[0]))

static char g_db[512];
static PGconn *g_conn;

static void setup(void)
{
    cr_assert_eq(cms_test_db_create("schema", 1, g_db, sizeof g_db), 0,
                 "cannot create a database from the template");
    g_conn = PQconnectdb(g_db);
    cr_assert_eq(PQstatus(g_conn), CONNECTION_OK, "%s", PQerrorMessage(g_conn));
}

static void teardown(void)
{
    PQfinish(g_conn);
    cms_test_db_drop(g_db);
}

TestSuite(schema, .init = setup, .fini = teardown, .timeout = 60);

static PGresult *query(const char *sql)
{
    PGresult *r = PQexec(g_conn, sql);
    cr_assert_eq(PQresultStatus(r), PGRES_TUPLES_OK, "%s\n%s", sql, PQerrorMessage(g_conn));
    return r;
}

/* Differences, one per line, gathered so a failure lists all of them. */
typedef struct report {
    char *text;
    size_t len;
    FILE *f;
    size_t problems;
} report;

static void report_open(report *rp)
{
    memset(rp, 0, sizeof *rp);
    rp->f = open_memstream(&rp->text, &rp->len);
    cr_assert_not_null(rp->f);
}

static void problem(report *rp, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void problem(report *rp, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("  ", rp->f);
    vfprintf(rp->f, fmt, ap);
    fputc('\n', rp->f);
    va_end(ap);
    rp->problems++;
}

static void report_check(report *rp, const char *what)
{
    fclose(rp->f);
    /* copied out so the buffer is freed before a failing assertion ends the test */
    char msg[16384];
    snprintf(msg, sizeof msg, "%s", rp->text);
    free(rp->text);
    cr_assert_eq(rp->problems, 0, "%s: %zu difference(s) from docs/schema.md:\n%s", what,
                 rp->problems, msg);
}

/* Compares name -> value facts with a two-column query result. Rows with
 * names the facts lack are additions: reported, not failed. */
static void compare_pairs(const char *what, const pair_fact *facts, size_t n, const char *sql)
{
    PGresult *r = query(sql);
    report rp;
    report_open(&rp);
    for (size_t i = 0; i < n; i++) {
        int row = -1;
        for (int k = 0; k < PQntuples(r); k++) {
            if (strcmp(PQgetvalue(r, k, 0), facts[i].name) == 0)
                row = k;
        }
        if (row < 0)
            problem(&rp, "missing %s %s (want: %s)", what, facts[i].name, facts[i].value);
        else if (strcmp(PQgetvalue(r, row, 1), facts[i].value) != 0)
            problem(&rp, "%s %s is \"%s\", want \"%s\"", what, facts[i].name, PQgetvalue(r, row, 1),
                    facts[i].value);
    }
    for (int k = 0; k < PQntuples(r); k++) {
        bool known = false;
        for (size_t i = 0; i < n && !known; i++)
            known = strcmp(PQgetvalue(r, k, 0), facts[i].name) == 0;
        if (!known)
            cr_log_info("addition beyond the reference schema (docs/schema.md): %s %s = %s", what,
                        PQgetvalue(r, k, 0), PQgetvalue(r, k, 1));
    }
    PQclear(r);
    report_check(&rp, what);
}

Test(schema, every_column_has_its_type_nullability_and_default)
{
    PGresult *r =
        query("SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,"
              "       coalesce(pg_get_expr(d.adbin, d.adrelid), '')"
              " FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid"
              " LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum"
              " WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r'"
              "   AND a.attnum > 0 AND NOT a.attisdropped");
    report rp;
    report_open(&rp);
    for (size_t i = 0; i < N(columns); i++) {
        const column_fact *f = &columns[i];
        int row = -1;
        for (int k = 0; k < PQntuples(r) && row < 0; k++) {
            if (strcmp(PQgetvalue(r, k, 0), f->table) == 0 &&
                strcmp(PQgetvalue(r, k, 1), f->column) == 0)
                row = k;
        }
        if (row < 0) {
            problem(&rp, "missing column %s.%s %s", f->table, f->column, f->type);
            continue;
        }
        const char *type = PQgetvalue(r, row, 2), *def = PQgetvalue(r, row, 4);
        bool not_null = PQgetvalue(r, row, 3)[0] == 't';
        if (strcmp(type, f->type) != 0)
            problem(&rp, "%s.%s has type %s, want %s", f->table, f->column, type, f->type);
        if (not_null != f->not_null)
            problem(&rp, "%s.%s is %s, want %s", f->table, f->column,
                    not_null ? "NOT NULL" : "nullable", f->not_null ? "NOT NULL" : "nullable");
        if (strcmp(def, f->def) != 0)
            problem(&rp, "%s.%s has default \"%s\", want \"%s\"", f->table, f->column, def, f->def);
    }
    for (int k = 0; k < PQntuples(r); k++) {
        bool known = false;
        for (size_t i = 0; i < N(columns) && !known; i++)
            known = strcmp(PQgetvalue(r, k, 0), columns[i].table) == 0 &&
                    strcmp(PQgetvalue(r, k, 1), columns[i].column) == 0;
        if (!known)
            cr_log_info("addition beyond the reference schema (docs/schema.md): column %s.%s %s",
                        PQgetvalue(r, k, 0), PQgetvalue(r, k, 1), PQgetvalue(r, k, 2));
    }
    PQclear(r);
    report_check(&rp, "columns");
}

Test(schema, every_enum_has_its_values_in_order)
{
    compare_pairs("enum", enums, N(enums),
                  "SELECT t.typname, string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder)"
                  " FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid"
                  " WHERE t.typnamespace = 'public'::regnamespace GROUP BY t.typname");
}

Test(schema, every_foreign_key_references_identities_without_cascade)
{
    compare_pairs(
        "foreign key", foreign_keys, N(foreign_keys),
        "SELECT c.conrelid::regclass::text || '.' || a.attname,"
        "       c.confrelid::regclass::text || '.' || af.attname || ' on delete ' ||"
        "       CASE c.confdeltype WHEN 'a' THEN 'no action' WHEN 'r' THEN 'restrict'"
        "            WHEN 'c' THEN 'cascade' WHEN 'n' THEN 'set null' ELSE 'set default' END"
        " FROM pg_constraint c"
        " JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]"
        " JOIN pg_attribute af ON af.attrelid = c.confrelid AND af.attnum = c.confkey[1]"
        " WHERE c.contype = 'f' AND c.connamespace = 'public'::regnamespace"
        "   AND cardinality(c.conkey) = 1");
    /* a composite foreign key would be missed above: there must be none */
    PGresult *r = query("SELECT count(*) FROM pg_constraint WHERE contype = 'f'"
                        " AND connamespace = 'public'::regnamespace AND cardinality(conkey) <> 1");
    cr_assert_str_eq(PQgetvalue(r, 0, 0), "0", "unexpected multi-column foreign keys");
    PQclear(r);
}

Test(schema, every_index_has_its_definition)
{
    compare_pairs("index", indexes, N(indexes),
                  "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid)"
                  " FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
                  " WHERE c.relnamespace = 'public'::regnamespace");
}

Test(schema, every_primary_key_and_unique_constraint)
{
    compare_pairs("constraint", keys, N(keys),
                  "SELECT conrelid::regclass::text || '.' || conname, pg_get_constraintdef(oid)"
                  " FROM pg_constraint WHERE contype IN ('p', 'u')"
                  "   AND connamespace = 'public'::regnamespace");
}

Test(schema, the_system_identity_exists)
{
    PGresult *r = query("SELECT name || '|' || type || '|' || status || '|' || metadata::text"
                        " FROM identities WHERE id = '00000000-0000-7000-8000-000000000001'");
    cr_assert_eq(PQntuples(r), 1, "no system identity");
    cr_assert_str_eq(PQgetvalue(r, 0, 0), "system|machine|active|{\"roles\": [\"system\"]}");
    PQclear(r);
}
