/* The migration runner; see migrate.h. Blocking libpq throughout: this is a
 * command-line tool, not loop code.
 *
 * Every migration file is split into statements (sqlsplit.h) that run one
 * by one inside the migration's transaction, so a failure is pinned to its
 * statement: the server's position within that statement, when it gives one,
 * becomes file:line:col. */
#include "migrate.h"

#include <inttypes.h>
#include <libpq-fe.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sqlsplit.h"

#define PROG "cms-migrate"

/* Where the session is. Transactions happen only while the lock is held. */
typedef enum run_state {
    RS_CONNECTED, /* connected, migration lock not held */
    RS_LOCKED,    /* holding the advisory lock, no transaction open */
    RS_IN_TXN,    /* inside one migration's transaction */
    RS_BROKEN,    /* the connection is gone; only close remains */
} run_state;

struct cms_migrate {
    cms_migrate_opts o;
    const cms_migset *set;
    PGconn *conn;
    run_state state;
    /* the progress line "applying X ... " printed, nothing after it yet */
    bool line_open;
    /* a migration started whose result (ok or FAILED) is not printed yet */
    bool line_pending;
    const char *line_verb;
    const char *line_label;
};

typedef struct applied_row {
    int version;
    char *name;
    char *checksum;
    char *applied_at; /* RFC 3339, UTC */
} applied_row;

/* The rows of schema_migrations, ascending by version. */
typedef struct applied {
    applied_row *rows;
    size_t n;
} applied;

const char *cms_migrate_strerror(cms_migrate_err e)
{
    switch (e) {
    case CMS_MIGRATE_OK:
        return "ok";
    case CMS_MIGRATE_NOMEM:
        return "out of memory";
    case CMS_MIGRATE_CONNECT:
        return "cannot connect to PostgreSQL";
    case CMS_MIGRATE_CONNECTION_LOST:
        return "lost the connection to PostgreSQL";
    case CMS_MIGRATE_LOCK_TIMEOUT:
        return "timed out waiting for another cms-migrate";
    case CMS_MIGRATE_QUERY:
        return "a bookkeeping query failed";
    case CMS_MIGRATE_UNKNOWN_APPLIED:
        return "the database has migrations this cms-migrate does not know";
    case CMS_MIGRATE_OUT_OF_ORDER:
        return "a pending migration is older than an applied one";
    case CMS_MIGRATE_TXN_CONTROL:
        return "a migration contains transaction control";
    case CMS_MIGRATE_FAILED:
        return "a migration failed";
    }
    return "unknown cms-migrate error";
}

static const char *state_name(run_state s)
{
    switch (s) {
    case RS_CONNECTED:
        return "connected";
    case RS_LOCKED:
        return "locked";
    case RS_IN_TXN:
        return "in_transaction";
    case RS_BROKEN:
        return "broken";
    }
    return "?";
}

static bool transition_ok(run_state from, run_state to)
{
    switch (to) {
    case RS_CONNECTED:
        return from == RS_LOCKED;
    case RS_LOCKED:
        return from == RS_CONNECTED || from == RS_IN_TXN;
    case RS_IN_TXN:
        return from == RS_LOCKED;
    case RS_BROKEN:
        return true;
    }
    return false;
}

/* Output, in one place: progress on stdout, problems on stderr. An open
 * progress line is ended first so the two streams interleave readably. */
static void line_break(cms_migrate *m)
{
    if (m->line_open) {
        fputc('\n', stdout);
        m->line_open = false;
    }
    fflush(stdout);
}

static void say_err(cms_migrate *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say_err(cms_migrate *m, const char *fmt, ...)
{
    line_break(m);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
}

static void say_warn(cms_migrate *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say_warn(cms_migrate *m, const char *fmt, ...)
{
    if (m->o.verbosity < CMS_MIGRATE_WARNINGS)
        return;
    line_break(m);
    fputs(PROG ": warning: ", stderr);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
}

static void say(cms_migrate *m, cms_migrate_verbosity min, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void say(cms_migrate *m, cms_migrate_verbosity min, const char *fmt, ...)
{
    if (m->o.verbosity < min)
        return;
    line_break(m);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stdout, fmt, ap);
    va_end(ap);
    fflush(stdout);
}

static void progress_begin(cms_migrate *m, const char *verb, const char *label)
{
    m->line_verb = verb;
    m->line_label = label;
    m->line_pending = true;
    if (m->o.verbosity < CMS_MIGRATE_PROGRESS)
        return;
    line_break(m);
    printf("%s %s ... ", verb, label);
    fflush(stdout);
    m->line_open = true;
}

static void progress_end(cms_migrate *m, const char *result, double ms)
{
    m->line_pending = false;
    if (m->o.verbosity < CMS_MIGRATE_PROGRESS)
        return;
    if (!m->line_open)
        printf("%s %s ... ", m->line_verb, m->line_label);
    printf("%s (%.0f ms)\n", result, ms);
    fflush(stdout);
    m->line_open = false;
}

static void set_state(cms_migrate *m, run_state to)
{
    if (!transition_ok(m->state, to))
        say_err(m, PROG ": internal error: session state %s -> %s\n", state_name(m->state),
                state_name(to));
    say(m, CMS_MIGRATE_STATEMENTS, "  (session %s -> %s)\n", state_name(m->state), state_name(to));
    m->state = to;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void notice_processor(void *arg, const char *message)
{
    cms_migrate *m = arg;
    if (m->o.verbosity < CMS_MIGRATE_WARNINGS)
        return;
    line_break(m);
    fprintf(stderr, PROG ": server: %s", message);
}

/* "host:port (database "d", user "u")" of a connection, good or failed. */
static void describe_target(const PGconn *c, char *buf, size_t n)
{
    const char *host = PQhost(c), *port = PQport(c), *db = PQdb(c), *user = PQuser(c);
    snprintf(buf, n, "%s:%s (database \"%s\", user \"%s\")", host && *host ? host : "localhost",
             port && *port ? port : "5432", db ? db : "", user ? user : "");
}

/* Prints libpq's multi-line message indented under the line before it. */
static void print_indented(FILE *f, const char *msg)
{
    const char *p = msg ? msg : "";
    while (*p) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        fprintf(f, "  %.*s\n", (int)n, p);
        p += n + (nl ? 1 : 0);
    }
}

static cms_migrate_err broken_or(cms_migrate *m, cms_migrate_err otherwise)
{
    if (PQstatus(m->conn) == CONNECTION_BAD) {
        if (m->state != RS_BROKEN)
            set_state(m, RS_BROKEN);
        return CMS_MIGRATE_CONNECTION_LOST;
    }
    return otherwise;
}

/* Runs one bookkeeping statement. On any status other than want it prints
 * what was being done and why it failed, and returns NULL. */
static PGresult *run(cms_migrate *m, const char *what, const char *sql, int nparams,
                     const char *const *params, ExecStatusType want)
{
    PGresult *r = PQexecParams(m->conn, sql, nparams, NULL, params, NULL, NULL, 0);
    if (r != NULL && PQresultStatus(r) == want)
        return r;
    const char *msg = r ? PQresultErrorMessage(r) : PQerrorMessage(m->conn);
    say_err(m, PROG ": %s failed:\n", what);
    print_indented(stderr, msg && *msg ? msg : "no result from the server");
    if (PQstatus(m->conn) == CONNECTION_BAD)
        say_err(m, PROG ": the connection to PostgreSQL is gone; run again once it is back\n");
    PQclear(r);
    return NULL;
}

static cms_migrate_err run_ok(cms_migrate *m, const char *what, const char *sql, int nparams,
                              const char *const *params)
{
    PGresult *r = run(m, what, sql, nparams, params, PGRES_TUPLES_OK);
    if (r == NULL)
        return broken_or(m, CMS_MIGRATE_QUERY);
    PQclear(r);
    return CMS_MIGRATE_OK;
}

static cms_migrate_err set_timeouts(cms_migrate *m, int64_t lock_ms, int64_t stmt_ms)
{
    char l[32], s[32];
    snprintf(l, sizeof l, "%" PRId64 "ms", lock_ms);
    snprintf(s, sizeof s, "%" PRId64 "ms", stmt_ms);
    const char *const p[] = {l, s};
    return run_ok(
        m, "setting lock_timeout and statement_timeout",
        "SELECT set_config('lock_timeout', $1, false), set_config('statement_timeout', $2, false)",
        2, p);
}

/* The session a migration starts in, whatever the one before it SET. */
static cms_migrate_err session_setup(cms_migrate *m)
{
    cms_migrate_err rc =
        run_ok(m, "setting the session up",
               "SELECT set_config('client_min_messages', 'warning', false)", 0, NULL);
    if (rc == CMS_MIGRATE_OK)
        rc = set_timeouts(m, m->o.lock_timeout_ms, m->o.statement_timeout_ms);
    return rc;
}

void cms_migrate_close(cms_migrate *m)
{
    if (m == NULL)
        return;
    /* closing the session also releases its advisory lock and rolls back */
    PQfinish(m->conn);
    free(m);
}

cms_migrate_err cms_migrate_open(const cms_migrate_opts *o, const cms_migset *set,
                                 cms_migrate **out)
{
    cms_migrate_err rc = CMS_MIGRATE_NOMEM;
    char *perr = NULL;
    PQconninfoOption *parsed = NULL;
    cms_migrate *m = calloc(1, sizeof *m);
    if (m == NULL)
        goto out;
    m->o = *o;
    m->set = set;

    /* libpq's own complaint about a malformed string may quote pieces of it,
     * password included, so it is not passed on */
    parsed = PQconninfoParse(o->conninfo ? o->conninfo : "", &perr);
    if (parsed == NULL) {
        if (perr != NULL) {
            say_err(m, PROG
                    ": --database-url (CMS_DATABASE_URL) is not a valid libpq connection string or "
                    "URI (it is not shown: it may hold a password)\n");
            rc = CMS_MIGRATE_CONNECT;
        }
        goto out;
    }
    /* entries before the expanded dbname are defaults the string may override */
    const char *const keys[] = {"connect_timeout", "fallback_application_name", "dbname", NULL};
    const char *const vals[] = {"10", "cms-migrate", o->conninfo, NULL};
    m->conn = PQconnectdbParams(keys, vals, 1);
    if (m->conn == NULL)
        goto out;
    if (PQstatus(m->conn) != CONNECTION_OK) {
        char where[512];
        describe_target(m->conn, where, sizeof where);
        say_err(m, PROG ": cannot connect to PostgreSQL at %s:\n", where);
        print_indented(stderr, PQerrorMessage(m->conn));
        say_err(m,
                PROG ": check --database-url (or CMS_DATABASE_URL), and that the server is up and "
                     "accepts connections from here\n");
        rc = CMS_MIGRATE_CONNECT;
        goto out;
    }
    PQsetNoticeProcessor(m->conn, notice_processor, m);
    m->state = RS_CONNECTED;
    rc = session_setup(m);
    if (rc != CMS_MIGRATE_OK)
        goto out;
    *out = m;
    m = NULL;
out:
    if (rc == CMS_MIGRATE_NOMEM)
        fprintf(stderr, PROG ": out of memory\n");
    PQconninfoFree(parsed);
    PQfreemem(perr);
    cms_migrate_close(m);
    return rc;
}

/* "pid 123 (cms-migrate, from 10.0.0.5)" for whoever holds the lock. */
static void describe_holder(cms_migrate *m, char *buf, size_t n)
{
    char classid[16], objid[16];
    snprintf(classid, sizeof classid, "%u", CMS_MIGRATE_LOCK_CLASSID);
    snprintf(objid, sizeof objid, "%u", CMS_MIGRATE_LOCK_OBJID);
    const char *const p[] = {classid, objid};
    PGresult *r = PQexecParams(
        m->conn,
        "SELECT l.pid, coalesce(a.application_name, ''), "
        "       coalesce(host(a.client_addr), 'a local socket') "
        "FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = $1::oid "
        "  AND l.objid = $2::oid AND l.objsubid = 1 "
        "  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
        "LIMIT 1",
        2, NULL, p, NULL, NULL, 0);
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
        snprintf(buf, n, "pid %s (%s, from %s)", PQgetvalue(r, 0, 0),
                 *PQgetvalue(r, 0, 1) ? PQgetvalue(r, 0, 1) : "no application_name",
                 PQgetvalue(r, 0, 2));
    else
        snprintf(buf, n, "another session");
    PQclear(r);
}

/* Takes the advisory lock, waiting at most wait_timeout_ms for its holder. */
static cms_migrate_err lock_acquire(cms_migrate *m)
{
    cms_migrate_err rc = CMS_MIGRATE_OK;
    char key[32];
    snprintf(key, sizeof key, "%" PRId64, CMS_MIGRATE_LOCK_KEY);
    const char *const p[] = {key};
    PGresult *r = run(m, "taking the migration lock", "SELECT pg_try_advisory_lock($1::bigint)", 1,
                      p, PGRES_TUPLES_OK);
    if (r == NULL)
        return broken_or(m, CMS_MIGRATE_QUERY);
    bool got = PQgetvalue(r, 0, 0)[0] == 't';
    PQclear(r);
    r = NULL;
    if (!got) {
        char holder[256];
        describe_holder(m, holder, sizeof holder);
        say(m, CMS_MIGRATE_PROGRESS, "waiting for the migration lock, held by %s\n", holder);
        rc = set_timeouts(m, m->o.wait_timeout_ms, 0);
        if (rc != CMS_MIGRATE_OK)
            return rc;
        r = PQexecParams(m->conn, "SELECT pg_advisory_lock($1::bigint)", 1, NULL, p, NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            const char *code = PQresultErrorField(r, PG_DIAG_SQLSTATE);
            if (code && strcmp(code, "55P03") == 0) {
                describe_holder(m, holder, sizeof holder);
                say_err(m,
                        PROG ": %s has held the migration lock for longer than "
                             "--migrate-wait-timeout (%" PRId64
                             " ms). Let it finish and run again; if it is stuck, end it with "
                             "pg_terminate_backend(pid) first.\n",
                        holder, m->o.wait_timeout_ms);
                rc = CMS_MIGRATE_LOCK_TIMEOUT;
            } else {
                say_err(m, PROG ": taking the migration lock failed:\n");
                print_indented(stderr, PQresultErrorMessage(r));
                rc = broken_or(m, CMS_MIGRATE_QUERY);
            }
            PQclear(r);
            return rc;
        }
        PQclear(r);
        rc = set_timeouts(m, m->o.lock_timeout_ms, m->o.statement_timeout_ms);
        if (rc != CMS_MIGRATE_OK)
            return rc;
    }
    set_state(m, RS_LOCKED);
    return CMS_MIGRATE_OK;
}

static void lock_release(cms_migrate *m)
{
    if (m->state != RS_LOCKED)
        return;
    char key[32];
    snprintf(key, sizeof key, "%" PRId64, CMS_MIGRATE_LOCK_KEY);
    const char *const p[] = {key};
    PGresult *r = run(m, "releasing the migration lock", "SELECT pg_advisory_unlock($1::bigint)", 1,
                      p, PGRES_TUPLES_OK);
    PQclear(r);
    if (r != NULL)
        set_state(m, RS_CONNECTED);
}

static cms_migrate_err table_exists(cms_migrate *m, bool *exists)
{
    PGresult *r =
        run(m, "looking for schema_migrations",
            "SELECT to_regclass('schema_migrations') IS NOT NULL", 0, NULL, PGRES_TUPLES_OK);
    if (r == NULL)
        return broken_or(m, CMS_MIGRATE_QUERY);
    *exists = PQgetvalue(r, 0, 0)[0] == 't';
    PQclear(r);
    return CMS_MIGRATE_OK;
}

static cms_migrate_err ensure_table(cms_migrate *m)
{
    PGresult *r = run(m, "creating schema_migrations",
                      "CREATE TABLE IF NOT EXISTS schema_migrations ("
                      " version INT PRIMARY KEY,"
                      " name TEXT NOT NULL,"
                      " checksum TEXT NOT NULL,"
                      " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
                      0, NULL, PGRES_COMMAND_OK);
    if (r == NULL)
        return broken_or(m, CMS_MIGRATE_QUERY);
    PQclear(r);
    return CMS_MIGRATE_OK;
}

static void applied_free(applied *a)
{
    for (size_t i = 0; i < a->n; i++) {
        free(a->rows[i].name);
        free(a->rows[i].checksum);
        free(a->rows[i].applied_at);
    }
    free(a->rows);
    a->rows = NULL;
    a->n = 0;
}

static cms_migrate_err load_applied(cms_migrate *m, applied *a)
{
    cms_migrate_err rc = CMS_MIGRATE_NOMEM;
    PGresult *r = run(m, "reading schema_migrations",
                      "SELECT version, name, checksum,"
                      " to_char(applied_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"
                      " FROM schema_migrations ORDER BY version",
                      0, NULL, PGRES_TUPLES_OK);
    if (r == NULL)
        return broken_or(m, CMS_MIGRATE_QUERY);
    size_t n = (size_t)PQntuples(r);
    a->rows = calloc(n ? n : 1, sizeof *a->rows);
    if (a->rows == NULL)
        goto out;
    for (size_t i = 0; i < n; i++) {
        applied_row *row = &a->rows[i];
        row->version = (int)strtol(PQgetvalue(r, (int)i, 0), NULL, 10);
        row->name = strdup(PQgetvalue(r, (int)i, 1));
        row->checksum = strdup(PQgetvalue(r, (int)i, 2));
        row->applied_at = strdup(PQgetvalue(r, (int)i, 3));
        a->n = i + 1;
        if (row->name == NULL || row->checksum == NULL || row->applied_at == NULL)
            goto out;
    }
    rc = CMS_MIGRATE_OK;
out:
    if (rc != CMS_MIGRATE_OK)
        say_err(m, PROG ": out of memory\n");
    PQclear(r);
    return rc;
}

static const applied_row *find_applied(const applied *a, int version)
{
    for (size_t i = 0; i < a->n; i++) {
        if (a->rows[i].version == version)
            return &a->rows[i];
    }
    return NULL;
}

static int current_version(const applied *a)
{
    return a->n ? a->rows[a->n - 1].version : 0;
}

static const char *source_phrase(const cms_migrate *m, char *buf, size_t n)
{
    const char *src = cms_migset_source(m->set);
    if (strcmp(src, "embedded") == 0)
        snprintf(buf, n, "the migrations built into this cms-migrate");
    else
        snprintf(buf, n, "the migrations in %s", src);
    return buf;
}

/* Warns about applied files that changed since; fails if the database has
 * versions the set lacks, because then this binary is older than it. */
static cms_migrate_err check_applied(cms_migrate *m, const applied *a)
{
    size_t unknown = 0;
    char src[4200];
    for (size_t i = 0; i < a->n; i++) {
        const applied_row *row = &a->rows[i];
        const cms_migration *mig = cms_migset_find(m->set, row->version);
        if (mig == NULL) {
            say_err(m, PROG ": %04d_%s is applied (since %s) but is not among %s\n", row->version,
                    row->name, row->applied_at, source_phrase(m, src, sizeof src));
            unknown++;
            continue;
        }
        if (strcmp(mig->name, row->name) != 0)
            say_warn(m, "version %d was applied as %04d_%s but is now named %s\n", row->version,
                     row->version, row->name, mig->label);
        if (strcmp(mig->checksum, row->checksum) != 0)
            say_warn(m,
                     "%s changed after it was applied (at %s; checksum %.12s then, %.12s now). The "
                     "change "
                     "is not applied by up: put it in a new migration.\n",
                     mig->up_file, row->applied_at, row->checksum, mig->checksum);
    }
    if (unknown == 0)
        return CMS_MIGRATE_OK;
    say_err(m,
            PROG ": the database is newer than %s. Use the cms-migrate (or the --migrations-dir) "
                 "that applied those "
                 "migrations.\n",
            source_phrase(m, src, sizeof src));
    return CMS_MIGRATE_UNKNOWN_APPLIED;
}

/* Start of the given 1-based line of text, and its length without "\r\n". */
static const char *line_at(const char *text, size_t len, unsigned line, size_t *line_len)
{
    size_t i = 0;
    for (unsigned l = 1; l < line && i < len; i++) {
        if (text[i] == '\n')
            l++;
    }
    size_t e = i;
    while (e < len && text[e] != '\n')
        e++;
    if (e > i && text[e - 1] == '\r')
        e--;
    *line_len = e - i;
    return text + i;
}

/* The statement's lines, numbered as in the file, with a caret under the
 * error position when there is one; long statements are cut around it. */
static void print_excerpt(const char *sql, size_t len, const cms_sqlstmt *st, size_t err_off,
                          bool has_pos)
{
    unsigned first, col, last, err_line, err_col;
    cms_sqlsplit_linecol(sql, len, st->off, &first, &col);
    cms_sqlsplit_linecol(sql, len, st->off + st->len, &last, &col);
    cms_sqlsplit_linecol(sql, len, err_off, &err_line, &err_col);
    unsigned from = first, to = last;
    if (has_pos) {
        if (err_line > from + 3)
            from = err_line - 3;
        if (to > err_line + 3)
            to = err_line + 3;
    } else if (to > from + 7) {
        to = from + 7;
    }
    if (from > first)
        fprintf(stderr, "        | ...\n");
    for (unsigned l = from; l <= to; l++) {
        size_t n = 0;
        const char *p = line_at(sql, len, l, &n);
        fprintf(stderr, "  %5u | %.*s\n", l, (int)n, p);
        if (has_pos && l == err_line) {
            fputs("        | ", stderr);
            size_t upto = err_off - (size_t)(p - sql);
            for (size_t i = 0; i < upto && i < n; i++) {
                unsigned char c = (unsigned char)p[i];
                if (c == '\t')
                    fputc('\t', stderr);
                else if ((c & 0xC0) != 0x80)
                    fputc(' ', stderr);
            }
            fputs("^\n", stderr);
        }
    }
    if (to < last)
        fprintf(stderr, "        | ...\n");
}

static void print_field(const PGresult *r, int field, const char *label)
{
    const char *v = PQresultErrorField(r, field);
    if (v && *v)
        fprintf(stderr, "  %s: %s\n", label, v);
}

/* What failed, where (file:line:col), the statement, and the server's
 * message with its SQLSTATE and the fields that help. */
static void report_statement_error(cms_migrate *m, const char *path, const char *sql, size_t len,
                                   const cms_sqlstmt *st, size_t idx, size_t nst, const PGresult *r)
{
    const char *sev = r ? PQresultErrorField(r, PG_DIAG_SEVERITY) : NULL;
    const char *code = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    const char *msg = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    const char *pos = r ? PQresultErrorField(r, PG_DIAG_STATEMENT_POSITION) : NULL;
    size_t err_off = st->off;
    if (pos)
        err_off += cms_sqlsplit_char_to_byte(sql + st->off, st->len, strtol(pos, NULL, 10));
    unsigned line, col, sline, scol;
    cms_sqlsplit_linecol(sql, len, err_off, &line, &col);
    cms_sqlsplit_linecol(sql, len, st->off, &sline, &scol);

    line_break(m);
    if (msg) {
        fprintf(stderr, PROG ": %s:%u:%u: %s: %s (SQLSTATE %s)\n", path, line, col,
                sev ? sev : "ERROR", msg, code ? code : "?????");
    } else {
        /* no server message: the failure is on the client side or the connection */
        fprintf(stderr, PROG ": %s:%u:%u: %s", path, line, col, "the statement got no answer:\n");
        print_indented(stderr, PQerrorMessage(m->conn));
    }
    fprintf(stderr, "  statement %zu of %zu in %s, from line %u:\n", idx + 1, nst, path, sline);
    print_excerpt(sql, len, st, err_off, pos != NULL);
    if (r) {
        print_field(r, PG_DIAG_MESSAGE_DETAIL, "detail");
        print_field(r, PG_DIAG_MESSAGE_HINT, "hint");
        print_field(r, PG_DIAG_INTERNAL_QUERY, "internal query");
        print_field(r, PG_DIAG_CONTEXT, "context");
    }
    if (code && strcmp(code, "55P03") == 0)
        fprintf(stderr,
                "  what to do: another session held a lock this statement needs for longer than "
                "--migrate-lock-timeout (%" PRId64
                " ms); run again when it is quieter, or raise the limit\n",
                m->o.lock_timeout_ms);
    else if (code && strcmp(code, "57014") == 0)
        fprintf(stderr,
                "  what to do: the statement ran longer than --migrate-statement-timeout (%" PRId64
                " ms); raise the limit for this run\n",
                m->o.statement_timeout_ms);
}

/* A migration file as the user knows it: its name when embedded, else its
 * path in --migrations-dir. */
static void file_path(const cms_migrate *m, const char *file, char *buf, size_t n)
{
    const char *src = cms_migset_source(m->set);
    if (strcmp(src, "embedded") == 0)
        snprintf(buf, n, "%s", file);
    else
        snprintf(buf, n, "%s/%s", src, file);
}

/* Runs one statement of a migration and consumes all its results. Returns
 * the failing result (caller clears) or NULL when it went well; *failed
 * tells the two apart when libpq could not even produce a result. */
static PGresult *exec_statement(cms_migrate *m, const char *text, bool *failed)
{
    PGresult *r = PQexec(m->conn, text);
    ExecStatusType st = PQresultStatus(r);
    *failed = false;
    if (st == PGRES_COPY_IN) {
        /* there is no data to send: end the copy with an error */
        PQclear(r);
        if (PQputCopyEnd(m->conn, "COPY FROM STDIN cannot be used in a migration") == 1)
            r = PQgetResult(m->conn);
        else
            r = NULL;
        PGresult *rest;
        while ((rest = PQgetResult(m->conn)) != NULL)
            PQclear(rest);
        st = PQresultStatus(r);
    } else if (st == PGRES_COPY_OUT) {
        char *buf = NULL;
        while (PQgetCopyData(m->conn, &buf, 0) > 0)
            PQfreemem(buf);
        PQclear(r);
        r = PQgetResult(m->conn);
        PGresult *rest;
        while ((rest = PQgetResult(m->conn)) != NULL)
            PQclear(rest);
        st = PQresultStatus(r);
    }
    if (r != NULL && (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK || st == PGRES_EMPTY_QUERY)) {
        PQclear(r);
        return NULL;
    }
    *failed = true;
    return r;
}

/* Applies (up) or reverts (down) one migration in one transaction with its
 * schema_migrations row. On failure the transaction is rolled back and the
 * reason printed. */
static cms_migrate_err run_migration(cms_migrate *m, const cms_migration *mig, bool up)
{
    cms_migrate_err rc = CMS_MIGRATE_OK;
    const char *file = up ? mig->up_file : mig->down_file;
    const char *sql = up ? mig->up : mig->down;
    size_t len = up ? mig->up_len : mig->down_len;
    cms_sqlstmt *st = NULL;
    size_t nst = 0;
    char *text = NULL;
    PGresult *r = NULL;
    double t0 = now_ms();
    char path[4200];
    file_path(m, file, path, sizeof path);

    if (cms_sqlsplit_split(sql, len, &st, &nst) != CMS_SQLSPLIT_OK) {
        say_err(m, PROG ": out of memory\n");
        rc = CMS_MIGRATE_NOMEM;
        goto out;
    }
    for (size_t i = 0; i < nst; i++) {
        if (cms_sqlsplit_is_txn_control(sql + st[i].off, st[i].len)) {
            unsigned line, col;
            cms_sqlsplit_linecol(sql, len, st[i].off, &line, &col);
            say_err(m,
                    PROG
                    ": %s:%u:%u: %.*s: a migration must not control the transaction: cms-migrate "
                    "runs each one in its own transaction. Remove the statement.\n",
                    path, line, col, (int)(st[i].len < 40 ? st[i].len : 40), sql + st[i].off);
            rc = CMS_MIGRATE_TXN_CONTROL;
            goto out;
        }
    }

    progress_begin(m, up ? "applying" : "reverting", mig->label);
    r = run(m, "starting a transaction", "BEGIN", 0, NULL, PGRES_COMMAND_OK);
    if (r == NULL) {
        rc = broken_or(m, CMS_MIGRATE_QUERY);
        goto out;
    }
    PQclear(r);
    r = NULL;
    set_state(m, RS_IN_TXN);

    for (size_t i = 0; i < nst; i++) {
        text = strndup(sql + st[i].off, st[i].len);
        if (text == NULL) {
            say_err(m, PROG ": out of memory\n");
            rc = CMS_MIGRATE_NOMEM;
            goto out;
        }
        if (m->o.verbosity >= CMS_MIGRATE_STATEMENTS) {
            unsigned line, col;
            cms_sqlsplit_linecol(sql, len, st[i].off, &line, &col);
            size_t n = strcspn(text, "\n");
            say(m, CMS_MIGRATE_STATEMENTS, "  %s:%u: %.*s%s\n", file, line,
                (int)(n < 100 ? n : 100), text, n < st[i].len ? " ..." : "");
        }
        bool failed = false;
        r = exec_statement(m, text, &failed);
        if (failed) {
            progress_end(m, "FAILED", now_ms() - t0);
            report_statement_error(m, path, sql, len, &st[i], i, nst, r);
            rc = broken_or(m, CMS_MIGRATE_FAILED);
            goto out;
        }
        free(text);
        text = NULL;
    }

    char version[16];
    snprintf(version, sizeof version, "%d", mig->version);
    if (up) {
        const char *const p[] = {version, mig->name, mig->checksum};
        r = run(m, "recording the migration in schema_migrations",
                "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1::int, $2, $3)",
                3, p, PGRES_COMMAND_OK);
    } else {
        const char *const p[] = {version};
        r = run(m, "removing the migration from schema_migrations",
                "DELETE FROM schema_migrations WHERE version = $1::int", 1, p, PGRES_COMMAND_OK);
        if (r != NULL && strcmp(PQcmdTuples(r), "1") != 0) {
            say_err(m, PROG ": %s vanished from schema_migrations while it was being reverted\n",
                    mig->label);
            rc = CMS_MIGRATE_FAILED;
            goto out;
        }
    }
    if (r == NULL) {
        rc = broken_or(m, CMS_MIGRATE_FAILED);
        goto out;
    }
    PQclear(r);

    /* deferred constraints are checked here, so COMMIT can fail too */
    r = PQexec(m->conn, "COMMIT");
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        progress_end(m, "FAILED", now_ms() - t0);
        if (PQstatus(m->conn) == CONNECTION_BAD) {
            say_err(m,
                    PROG
                    ": the connection broke during the COMMIT of %s: whether it was applied is "
                    "unknown; run `cms-migrate status` once PostgreSQL is back\n",
                    mig->label);
        } else {
            say_err(m, PROG ": committing %s failed:\n", mig->label);
            print_indented(stderr, PQresultErrorMessage(r));
        }
        rc = broken_or(m, CMS_MIGRATE_FAILED);
        goto out;
    }
    PQclear(r);
    r = NULL;
    set_state(m, RS_LOCKED);
    progress_end(m, "ok", now_ms() - t0);

    /* a migration may have SET things for the session: start the next one clean */
    r = run(m, "resetting the session", "RESET ALL", 0, NULL, PGRES_COMMAND_OK);
    if (r == NULL) {
        rc = broken_or(m, CMS_MIGRATE_QUERY);
        goto out;
    }
    rc = session_setup(m);
out:
    if (rc != CMS_MIGRATE_OK && m->line_pending)
        progress_end(m, "FAILED", now_ms() - t0);
    if (rc != CMS_MIGRATE_OK && m->state == RS_IN_TXN) {
        PGresult *rb = PQexec(m->conn, "ROLLBACK");
        PQclear(rb);
        if (PQstatus(m->conn) == CONNECTION_OK)
            set_state(m, RS_LOCKED);
        else
            set_state(m, RS_BROKEN);
    }
    PQclear(r);
    free(text);
    free(st);
    return rc;
}

/* What to say after a migration failed, by how it failed. */
static void say_stays(cms_migrate *m, cms_migrate_err rc, const cms_migration *mig, bool up,
                      int version)
{
    char path[4200];
    file_path(m, up ? mig->up_file : mig->down_file, path, sizeof path);
    switch (rc) {
    case CMS_MIGRATE_FAILED:
    case CMS_MIGRATE_TXN_CONTROL:
    case CMS_MIGRATE_QUERY:
    case CMS_MIGRATE_NOMEM:
        say_err(m,
                PROG ": %s was %s; the database stays at version %d. Fix %s and run `cms-migrate "
                     "%s` again.\n",
                mig->label, rc == CMS_MIGRATE_TXN_CONTROL ? "not started" : "rolled back", version,
                path, up ? "up" : "down");
        break;
    case CMS_MIGRATE_CONNECTION_LOST:
        say_err(m,
                PROG ": %s did not complete; check `cms-migrate status` once PostgreSQL is back.\n",
                mig->label);
        break;
    case CMS_MIGRATE_OK:
    case CMS_MIGRATE_CONNECT:
    case CMS_MIGRATE_LOCK_TIMEOUT:
    case CMS_MIGRATE_UNKNOWN_APPLIED:
    case CMS_MIGRATE_OUT_OF_ORDER:
        break;
    }
}

cms_migrate_err cms_migrate_up(cms_migrate *m, int64_t n)
{
    applied a = {0};
    cms_migrate_err rc = lock_acquire(m);
    if (rc == CMS_MIGRATE_OK)
        rc = ensure_table(m);
    if (rc == CMS_MIGRATE_OK)
        rc = load_applied(m, &a);
    if (rc == CMS_MIGRATE_OK)
        rc = check_applied(m, &a);
    if (rc != CMS_MIGRATE_OK)
        goto out;

    int current = current_version(&a);
    size_t pending = 0;
    for (size_t i = 0; i < cms_migset_count(m->set); i++) {
        const cms_migration *mig = cms_migset_at(m->set, i);
        if (find_applied(&a, mig->version))
            continue;
        if (mig->version < current) {
            say_err(
                m,
                PROG
                ": %s is pending but the newer version %d is already applied. Migrations apply in "
                "order: give it a number above %d (or revert down to %d first).\n",
                mig->label, current, current, mig->version - 1);
            rc = CMS_MIGRATE_OUT_OF_ORDER;
            goto out;
        }
        pending++;
    }
    if (pending == 0) {
        say(m, CMS_MIGRATE_PROGRESS, "nothing to apply: at version %d\n", current);
        goto out;
    }
    size_t todo = (n <= 0 || (uint64_t)n > pending) ? pending : (size_t)n, done = 0;
    for (size_t i = 0; i < cms_migset_count(m->set) && done < todo; i++) {
        const cms_migration *mig = cms_migset_at(m->set, i);
        if (find_applied(&a, mig->version))
            continue;
        rc = run_migration(m, mig, true);
        if (rc != CMS_MIGRATE_OK) {
            say_stays(m, rc, mig, true, current);
            goto out;
        }
        current = mig->version;
        done++;
    }
    say(m, CMS_MIGRATE_PROGRESS, "at version %d (%zu applied, %zu pending)\n", current, done,
        pending - done);
out:
    lock_release(m);
    applied_free(&a);
    return rc;
}

cms_migrate_err cms_migrate_down(cms_migrate *m, int64_t n)
{
    applied a = {0};
    bool exists = false;
    cms_migrate_err rc = lock_acquire(m);
    if (rc == CMS_MIGRATE_OK)
        rc = table_exists(m, &exists);
    if (rc == CMS_MIGRATE_OK && exists)
        rc = load_applied(m, &a);
    if (rc == CMS_MIGRATE_OK)
        rc = check_applied(m, &a);
    if (rc != CMS_MIGRATE_OK)
        goto out;
    if (a.n == 0) {
        say(m, CMS_MIGRATE_PROGRESS, "nothing to revert: at version 0\n");
        goto out;
    }
    size_t todo = (n <= 0 || (uint64_t)n > a.n) ? a.n : (size_t)n, done = 0;
    for (; done < todo; done++) {
        const applied_row *row = &a.rows[a.n - 1 - done];
        const cms_migration *mig = cms_migset_find(m->set, row->version);
        rc = run_migration(m, mig, false);
        if (rc != CMS_MIGRATE_OK) {
            say_stays(m, rc, mig, false, row->version);
            goto out;
        }
    }
    int current = done < a.n ? a.rows[a.n - 1 - done].version : 0;
    say(m, CMS_MIGRATE_PROGRESS, "at version %d (%zu reverted)\n", current, done);
out:
    lock_release(m);
    applied_free(&a);
    return rc;
}

cms_migrate_err cms_migrate_status(cms_migrate *m, FILE *out)
{
    applied a = {0};
    bool exists = false;
    cms_migrate_err rc = table_exists(m, &exists);
    if (rc == CMS_MIGRATE_OK && exists)
        rc = load_applied(m, &a);
    if (rc != CMS_MIGRATE_OK)
        goto out;
    cms_migrate_err check = check_applied(m, &a);

    int name_w = 4;
    size_t nset = cms_migset_count(m->set);
    for (size_t i = 0; i < nset; i++) {
        int w = (int)strlen(cms_migset_at(m->set, i)->name);
        name_w = w > name_w ? w : name_w;
    }
    for (size_t i = 0; i < a.n; i++) {
        int w = (int)strlen(a.rows[i].name);
        name_w = w > name_w ? w : name_w;
    }
    int current = current_version(&a);
    size_t pending = 0;
    fprintf(out, "%-7s  %-*s  %-21s  %s\n", "VERSION", name_w, "NAME", "STATE", "APPLIED_AT");
    /* merge the set and the applied rows, both ascending by version */
    size_t i = 0, j = 0;
    while (i < nset || j < a.n) {
        const cms_migration *mig = i < nset ? cms_migset_at(m->set, i) : NULL;
        const applied_row *row = j < a.n ? &a.rows[j] : NULL;
        const char *state;
        int version;
        const char *name;
        if (mig && row && mig->version == row->version) {
            state = strcmp(mig->checksum, row->checksum) ? "applied, file changed" : "applied";
            version = mig->version;
            name = mig->name;
            i++;
            j++;
        } else if (mig && (!row || mig->version < row->version)) {
            state = mig->version < current ? "pending, out of order" : "pending";
            version = mig->version;
            name = mig->name;
            row = NULL;
            pending++;
            i++;
        } else if (row != NULL) {
            state = "applied, unknown here";
            version = row->version;
            name = row->name;
            j++;
        } else {
            break; /* unreachable: the loop runs while either list has rows */
        }
        fprintf(out, "%04d     %-*s  %-21s  %s\n", version, name_w, name, state,
                row ? row->applied_at : "-");
    }
    fprintf(out, "current version: %d (%zu pending)\n", current, pending);
    fflush(out);
    rc = check;
out:
    applied_free(&a);
    return rc;
}

PGconn *cms_migrate_conn(cms_migrate *m)
{
    return m->conn;
}

cms_migrate_err cms_migrate_version(cms_migrate *m, int *version)
{
    bool exists = false;
    cms_migrate_err rc = table_exists(m, &exists);
    if (rc != CMS_MIGRATE_OK)
        return rc;
    *version = 0;
    if (!exists)
        return CMS_MIGRATE_OK;
    PGresult *r =
        run(m, "reading schema_migrations",
            "SELECT coalesce(max(version), 0) FROM schema_migrations", 0, NULL, PGRES_TUPLES_OK);
    if (r == NULL)
        return broken_or(m, CMS_MIGRATE_QUERY);
    *version = (int)strtol(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    return CMS_MIGRATE_OK;
}
