/* The first admin; see bootstrap.h.
 *
 * What is sent to PostgreSQL: ids, the admin's name, the key's hash, its
 * expiry and the packed events, none of which holds the secret. What is
 * printed about a statement is what it does, never its values; a failed
 * statement shows the server's primary message and SQLSTATE only, because
 * the DETAIL of a constraint error quotes the row. */
#include "bootstrap.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "apikey.h"
#include "bus.h"
#include "config.h"
#include "identity/events.h"   /* cms-identity's events: the admin's are the same */
#include "identity/store.h"    /* and its statements: the admin is made as any identity */
#include "identity/validate.h" /* and its checks: the admin's name is a name like any */
#include "outbox.h"
#include "uuid.h"

#define PROG "cms-migrate"

/* How far a run got; the cleanup at its end follows from it. */
typedef enum run_state {
    BS_IDLE,           /* no transaction of ours open */
    BS_IN_TXN,         /* our transaction is open */
    BS_KEY_FILE,       /* open, and the key's file is created: removed unless committed */
    BS_COMMITTED,      /* the admin exists */
    BS_COMMIT_UNKNOWN, /* the connection broke during COMMIT: the key's file is kept */
} run_state;

struct cms_bootstrap {
    cms_bootstrap_opts o;
    bool have_key;
    uint8_t server_key[CMS_APIKEY_SERVER_KEY_BYTES];
    bool have_in_key; /* key_in read: the admin gets this key */
    char in_key[CMS_APIKEY_LEN + 1];
    PGconn *conn; /* during cms_bootstrap_run only */
    run_state state;
};

/* One admin in the making. key and secret are wiped when the run ends. */
typedef struct admin {
    char identity_id[CMS_UUID_STRLEN + 1];
    char credential_id[CMS_UUID_STRLEN + 1];
    char correlation_id[CMS_UUID_STRLEN + 1];
    char key[CMS_APIKEY_LEN + 1];
    uint8_t secret[CMS_APIKEY_SECRET_BYTES];
    char hash[CMS_APIKEY_HASH_LEN + 1];
    int64_t expires_us;
    char expires_text[32]; /* RFC 3339, UTC */
    cms_bus_event created; /* identity.created */
    cms_bus_event issued;  /* credential.issued */
} admin;

static const char SQL_ADMIN_EXISTS[] =
    "SELECT EXISTS (SELECT 1 FROM identities WHERE metadata->'roles' ? 'admin')";
static const char SQL_NAME_TAKEN[] = "SELECT EXISTS (SELECT 1 FROM identities WHERE name = $1)";
static const char SQL_TABLES[] =
    "SELECT to_regclass('identities') IS NOT NULL, to_regclass('credentials') IS NOT NULL, "
    "to_regclass('outbox') IS NOT NULL";
static const char SQL_LOCK[] = "SELECT pg_advisory_xact_lock($1::bigint)";
#define ADMIN_METADATA "{\"roles\": [\"admin\"]}"

const char *cms_bootstrap_strerror(cms_bootstrap_err e)
{
    switch (e) {
    case CMS_BOOTSTRAP_OK:
        return "ok";
    case CMS_BOOTSTRAP_NOMEM:
        return "out of memory";
    case CMS_BOOTSTRAP_BAD_OPTION:
        return "a bootstrap option is out of range";
    case CMS_BOOTSTRAP_KEY_FILE:
        return "the identity key file cannot be used";
    case CMS_BOOTSTRAP_NO_SCHEMA:
        return "the schema has no identities, credentials or outbox table";
    case CMS_BOOTSTRAP_NAME_TAKEN:
        return "the admin's name belongs to another identity";
    case CMS_BOOTSTRAP_KEY_OUT:
        return "the admin key's file cannot be created";
    case CMS_BOOTSTRAP_NO_KEY_OUTPUT:
        return "the admin key has nowhere to go but a stdout that is no terminal";
    case CMS_BOOTSTRAP_QUERY:
        return "a bootstrap statement failed";
    case CMS_BOOTSTRAP_CONNECTION_LOST:
        return "lost the connection to PostgreSQL";
    case CMS_BOOTSTRAP_COMMIT_UNKNOWN:
        return "the connection broke during the bootstrap's COMMIT";
    case CMS_BOOTSTRAP_OUTPUT:
        return "the admin key could not be printed";
    case CMS_BOOTSTRAP_KEY_IN:
        return "the admin key file given cannot be used";
    }
    return "unknown bootstrap error";
}

static const char *state_name(run_state s)
{
    switch (s) {
    case BS_IDLE:
        return "idle";
    case BS_IN_TXN:
        return "in_transaction";
    case BS_KEY_FILE:
        return "key_file_written";
    case BS_COMMITTED:
        return "committed";
    case BS_COMMIT_UNKNOWN:
        return "commit_unknown";
    }
    return "?";
}

static bool transition_ok(run_state from, run_state to)
{
    switch (to) {
    case BS_IDLE:
        return true;
    case BS_IN_TXN:
        return from == BS_IDLE;
    case BS_KEY_FILE:
        return from == BS_IN_TXN;
    case BS_COMMITTED:
    case BS_COMMIT_UNKNOWN:
        return from == BS_IN_TXN || from == BS_KEY_FILE;
    }
    return false;
}

static void say_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say_err(const char *fmt, ...)
{
    fflush(stdout);
    fputs(PROG ": ", stderr);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
}

static void say(const cms_bootstrap *b, cms_migrate_verbosity min, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void say(const cms_bootstrap *b, cms_migrate_verbosity min, const char *fmt, ...)
{
    if (b->o.verbosity < min)
        return;
    fflush(stdout);
    fputs(PROG ": ", stderr);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
}

static void set_state(cms_bootstrap *b, run_state to)
{
    if (!transition_ok(b->state, to))
        say_err("internal error: bootstrap state %s -> %s\n", state_name(b->state), state_name(to));
    say(b, CMS_MIGRATE_STATEMENTS, "bootstrap: %s -> %s\n", state_name(b->state), state_name(to));
    b->state = to;
}

void cms_bootstrap_destroy(cms_bootstrap *b)
{
    if (b == NULL)
        return;
    cms_apikey_wipe(b->server_key, sizeof b->server_key);
    cms_apikey_wipe(b->in_key, sizeof b->in_key);
    free(b);
}

/* The key of a file cms-migrate admin-key (or cmsctl) wrote: its first line
 * that is neither blank nor a # comment, either the key alone or
 * "api_key = KEY". */
static bool read_in_key(const char *path, char key[CMS_APIKEY_LEN + 1])
{
    char buf[4097], why[512];
    size_t len = 0;
    bool ok = false;
    if (cms_apikey_read_private_file(path, buf, sizeof buf - 1, &len, why, sizeof why) !=
        CMS_APIKEY_FILE_OK) {
        say_err("--admin-key-in (CMS_ADMIN_KEY_IN): %s\n", why);
        goto out;
    }
    for (char *line = buf; line < buf + len;) {
        size_t n = strcspn(line, "\r\n");
        char *next = line + n + (line[n] != '\0');
        line[n] = '\0';
        line += strspn(line, " \t");
        if (*line == '\0' || *line == '#') {
            line = next;
            continue;
        }
        if (strncmp(line, "api_key", 7) == 0) {
            line += 7 + strspn(line + 7, " \t");
            if (*line == '=')
                line += 1 + strspn(line + 1, " \t");
        }
        n = strcspn(line, " \t");
        cms_uuid id;
        uint8_t secret[CMS_APIKEY_SECRET_BYTES];
        if (line[n + strspn(line + n, " \t")] == '\0' && cms_apikey_parse(line, n, &id, secret)) {
            memcpy(key, line, n);
            key[n] = '\0';
            ok = true;
        }
        cms_apikey_wipe(secret, sizeof secret);
        break;
    }
    if (!ok)
        say_err("--admin-key-in (CMS_ADMIN_KEY_IN): %s holds no API key (cms_<id>_<secret>, as "
                "`cms-migrate admin-key` writes one) on its first line\n",
                path);
out:
    cms_apikey_wipe(buf, sizeof buf);
    return ok;
}

cms_bootstrap_err cms_bootstrap_create(const cms_bootstrap_opts *o, cms_bootstrap **out)
{
    cms_bootstrap_err rc = CMS_BOOTSTRAP_NOMEM;
    char why[512] = "";
    cms_bootstrap *b = calloc(1, sizeof *b);
    if (b == NULL) {
        say_err("out of memory\n");
        goto out;
    }
    b->o = *o;
    if (b->o.key_file != NULL && *b->o.key_file == '\0')
        b->o.key_file = NULL;
    if (b->o.key_out != NULL && *b->o.key_out == '\0')
        b->o.key_out = NULL;
    if (b->o.key_in != NULL && *b->o.key_in == '\0')
        b->o.key_in = NULL;
    idv_err e;
    if (b->o.key_in != NULL && (b->o.key_out != NULL || b->o.key_stdout)) {
        say_err("--admin-key-in (CMS_ADMIN_KEY_IN) gives the first admin a key made beforehand: "
                "not with --admin-key-out or --admin-key-stdout, which show a new one; try "
                "--help\n");
        rc = CMS_BOOTSTRAP_BAD_OPTION;
        goto out;
    }
    if (b->o.key_out != NULL && b->o.key_stdout) {
        say_err("give --admin-key-out (CMS_ADMIN_KEY_OUT) or --admin-key-stdout "
                "(CMS_ADMIN_KEY_STDOUT), not both; try --help\n");
        rc = CMS_BOOTSTRAP_BAD_OPTION;
        goto out;
    }
    if (!idv_name(b->o.admin_name, "--admin-name", &e)) {
        say_err("%s (CMS_ADMIN_NAME); try --help\n", e.msg);
        rc = CMS_BOOTSTRAP_BAD_OPTION;
        goto out;
    }
    if (b->o.ttl_ms < CMS_BOOTSTRAP_TTL_MS_MIN || b->o.ttl_ms > CMS_BOOTSTRAP_TTL_MS_MAX) {
        char ttl[32];
        say_err("--admin-key-ttl (CMS_ADMIN_KEY_TTL) must be 1d to 365d, not %s; try --help\n",
                cms_config_duration_format(b->o.ttl_ms, ttl, sizeof ttl));
        rc = CMS_BOOTSTRAP_BAD_OPTION;
        goto out;
    }
    if (b->o.key_file != NULL) {
        if (!cms_apikey_server_key_load(b->o.key_file, b->server_key, why, sizeof why)) {
            say_err("--identity-key-file (CMS_IDENTITY_KEY_FILE): %s\n", why);
            rc = CMS_BOOTSTRAP_KEY_FILE;
            goto out;
        }
        b->have_key = true;
    }
    if (b->o.key_in != NULL) {
        if (!read_in_key(b->o.key_in, b->in_key)) {
            rc = CMS_BOOTSTRAP_KEY_IN;
            goto out;
        }
        b->have_in_key = true;
    }
    *out = b;
    b = NULL;
    rc = CMS_BOOTSTRAP_OK;
out:
    cms_bootstrap_destroy(b);
    return rc;
}

/* Runs one statement; on any status but want prints what was being done and
 * why it failed, sets *rc and returns NULL. */
static PGresult *exec(cms_bootstrap *b, const char *what, const char *sql, int n,
                      const char *const *values, const int *lengths, const int *formats,
                      ExecStatusType want, cms_bootstrap_err *rc)
{
    say(b, CMS_MIGRATE_STATEMENTS, "bootstrap: %s\n", what);
    PGresult *r = PQexecParams(b->conn, sql, n, NULL, values, lengths, formats, 0);
    if (r != NULL && PQresultStatus(r) == want)
        return r;
    const char *code = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    const char *msg = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    if (code != NULL && strncmp(code, "22", 2) == 0) {
        /* a data exception's message may quote the value it refused */
        say_err("bootstrap: %s failed: a value was refused (SQLSTATE %s)\n", what, code);
    } else if (msg != NULL) {
        say_err("bootstrap: %s failed: %s (SQLSTATE %s)\n", what, msg, code ? code : "?????");
    } else {
        const char *e = PQerrorMessage(b->conn);
        say_err("bootstrap: %s failed: %.*s\n", what, (int)strcspn(e, "\n"),
                *e ? e : "no answer from PostgreSQL");
    }
    *rc = PQstatus(b->conn) == CONNECTION_BAD ? CMS_BOOTSTRAP_CONNECTION_LOST : CMS_BOOTSTRAP_QUERY;
    PQclear(r);
    return NULL;
}

/* A statement whose only row has booleans: their values into out. */
static cms_bootstrap_err exec_bools(cms_bootstrap *b, const char *what, const char *sql, int n,
                                    const char *const *values, bool *out, int nout)
{
    cms_bootstrap_err rc = CMS_BOOTSTRAP_OK;
    PGresult *r = exec(b, what, sql, n, values, NULL, NULL, PGRES_TUPLES_OK, &rc);
    if (r == NULL)
        return rc;
    if (PQntuples(r) != 1 || PQnfields(r) != nout) {
        say_err("bootstrap: %s: unexpected answer\n", what);
        rc = CMS_BOOTSTRAP_QUERY;
    } else {
        for (int i = 0; i < nout; i++)
            out[i] = PQgetvalue(r, 0, i)[0] == 't';
    }
    PQclear(r);
    return rc;
}

/* A statement without parameters or rows (BEGIN). */
static cms_bootstrap_err exec_command(cms_bootstrap *b, const char *what, const char *sql)
{
    cms_bootstrap_err rc = CMS_BOOTSTRAP_OK;
    PGresult *r = exec(b, what, sql, 0, NULL, NULL, NULL, PGRES_COMMAND_OK, &rc);
    PQclear(r);
    return rc;
}

/* One of cms-identity's statements that writes a row and its event
 * (identity/store.h): the event's four parameters, then own[0..n). It must
 * return exactly one row. */
static cms_bootstrap_err exec_with_event(cms_bootstrap *b, const char *what, const char *sql,
                                         const cms_bus_event *ev, int n, const char *const *own)
{
    enum { MAX_OWN = 8 };
    const char *v[4 + MAX_OWN];
    int lengths[4 + MAX_OWN], formats[4 + MAX_OWN];
    if (n > MAX_OWN || ev->len > INT32_MAX)
        return CMS_BOOTSTRAP_NOMEM;
    cms_outbox_params(IDEV_SOURCE, ev, v, lengths, formats);
    for (int i = 0; i < n; i++) {
        v[4 + i] = own[i];
        lengths[4 + i] = formats[4 + i] = 0;
    }
    cms_bootstrap_err rc = CMS_BOOTSTRAP_OK;
    PGresult *r = exec(b, what, sql, 4 + n, v, lengths, formats, PGRES_TUPLES_OK, &rc);
    if (r != NULL && PQntuples(r) != 1) {
        say_err("bootstrap: %s: no row written\n", what);
        rc = CMS_BOOTSTRAP_QUERY;
    }
    PQclear(r);
    return rc;
}

/* Ids, key, hash, expiry and the two events of a new admin. */
static cms_bootstrap_err admin_make(const cms_bootstrap *b, admin *a)
{
    cms_uuid iid, cid, corr;
    char ttl[32];
    cms_uuid_v7(&iid);
    cms_uuid_v7(&cid);
    cms_uuid_v7(&corr);
    if (b->have_in_key) {
        /* the credential is the one the key names */
        if (!cms_apikey_parse(b->in_key, strlen(b->in_key), &cid, a->secret))
            return CMS_BOOTSTRAP_KEY_IN; /* read_in_key parsed it */
        memcpy(a->key, b->in_key, sizeof a->key);
    }
    cms_uuid_format(&iid, a->identity_id);
    cms_uuid_format(&cid, a->credential_id);
    cms_uuid_format(&corr, a->correlation_id);
    if (!b->have_in_key && cms_apikey_generate(&cid, a->key, a->secret) != 0) {
        say_err("bootstrap: libsodium cannot generate a key\n");
        return CMS_BOOTSTRAP_NOMEM;
    }
    cms_apikey_hash(b->server_key, a->secret, a->hash);
    /* the secret is in a->key; nothing below needs its bytes */
    cms_apikey_wipe(a->secret, sizeof a->secret);

    a->expires_us = cms_bus_now_us() + b->o.ttl_ms * 1000;
    time_t secs = (time_t)(a->expires_us / 1000000);
    struct tm tm;
    if (gmtime_r(&secs, &tm) == NULL ||
        strftime(a->expires_text, sizeof a->expires_text, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(a->expires_text, sizeof a->expires_text, "in %s",
                 cms_config_duration_format(b->o.ttl_ms, ttl, sizeof ttl));

    if (idev_identity_created(a->identity_id, b->o.admin_name, "user", "active",
                              CMS_BUS_SYSTEM_ACTOR, a->correlation_id, &a->created) != CMS_BUS_OK ||
        idev_credential_issued(a->credential_id, a->identity_id, "api_key", NULL, a->expires_us,
                               CMS_BUS_SYSTEM_ACTOR, a->correlation_id, &a->issued) != CMS_BUS_OK) {
        say_err("out of memory\n");
        return CMS_BOOTSTRAP_NOMEM;
    }
    return CMS_BOOTSTRAP_OK;
}

static void admin_wipe(admin *a)
{
    cms_apikey_wipe(a->key, sizeof a->key);
    cms_apikey_wipe(a->secret, sizeof a->secret);
    cms_bus_event_release(&a->created);
    cms_bus_event_release(&a->issued);
}

static cms_bootstrap_err admin_insert(cms_bootstrap *b, const admin *a)
{
    const char *vi[] = {a->identity_id, b->o.admin_name, "user", "active", ADMIN_METADATA};
    cms_bootstrap_err rc = exec_with_event(b, "inserting the identity and identity.created",
                                           IDSQL_CREATE, &a->created, 5, vi);
    if (rc != CMS_BOOTSTRAP_OK)
        return rc;
    char expires[32];
    snprintf(expires, sizeof expires, "%" PRId64, a->expires_us);
    const char *vc[] = {a->credential_id, a->identity_id, "api_key", a->hash, expires, "{}", NULL};
    return exec_with_event(b, "inserting the credential (its hash only) and credential.issued",
                           IDSQL_ISSUE, &a->issued, 7, vc);
}

static bool write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return false;
        p += w;
        n -= (size_t)w;
    }
    return true;
}

/* A new file (never over another) at path holding text, mode exactly 0600
 * whatever the umask, synced to disk; on any failure it is removed and
 * stderr says why. what names the file in those messages. */
static cms_bootstrap_err create_key_file(const char *path, const char *what, const char *text,
                                         size_t n)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        say_err("cannot create %s %s: %s%s\n", what, path, strerror(errno),
                errno == EEXIST ? " (a key is never written over a file: remove it or give "
                                  "another --admin-key-out)"
                                : "");
        return CMS_BOOTSTRAP_KEY_OUT;
    }
    bool ok = fchmod(fd, 0600) == 0 && write_all(fd, text, n) && fsync(fd) == 0;
    if (close(fd) != 0)
        ok = false;
    if (ok)
        return CMS_BOOTSTRAP_OK;
    say_err("cannot write %s %s: %s\n", what, path, strerror(errno));
    (void)unlink(path);
    return CMS_BOOTSTRAP_KEY_OUT;
}

/* The key's file, in the form `cmsctl` reads credentials in. */
static cms_bootstrap_err write_key_file(cms_bootstrap *b, const admin *a)
{
    char text[2048];
    cms_bootstrap_err rc = CMS_BOOTSTRAP_KEY_OUT;
    int n = snprintf(text, sizeof text,
                     "# cms API key of the first admin \"%s\" (identity %s), expires %s\n"
                     "api_key = %s\n",
                     b->o.admin_name, a->identity_id, a->expires_text, a->key);
    if (n < 0 || (size_t)n >= sizeof text)
        say_err("bootstrap: the admin key's file would be too long\n");
    else
        rc = create_key_file(b->o.key_out, "the admin key's file", text, (size_t)n);
    cms_apikey_wipe(text, sizeof text);
    /* from now on a failure removes it (cleanup): no key without its admin */
    if (rc == CMS_BOOTSTRAP_OK)
        set_state(b, BS_KEY_FILE);
    return rc;
}

/* The key alone on one line of stdout, written past stdio so that no copy
 * stays behind in its buffer. */
static bool print_key_line(const char key[CMS_APIKEY_LEN + 1])
{
    char line[CMS_APIKEY_LEN + 1];
    memcpy(line, key, CMS_APIKEY_LEN);
    line[CMS_APIKEY_LEN] = '\n';
    fflush(stdout);
    bool ok = write_all(STDOUT_FILENO, line, sizeof line);
    cms_apikey_wipe(line, sizeof line);
    return ok;
}

static cms_bootstrap_err print_key(const admin *a)
{
    if (print_key_line(a->key))
        return CMS_BOOTSTRAP_OK;
    say_err("the first admin was created but its API key could not be printed (%s). Delete the "
            "admin's identity and credential rows and run `cms-migrate up` again.\n",
            strerror(errno));
    return CMS_BOOTSTRAP_OUTPUT;
}

static cms_bootstrap_err commit(cms_bootstrap *b)
{
    cms_bootstrap_err rc = CMS_BOOTSTRAP_OK;
    say(b, CMS_MIGRATE_STATEMENTS, "bootstrap: committing\n");
    PGresult *r = PQexec(b->conn, "COMMIT");
    /* COMMIT of a failed transaction answers "ROLLBACK", with status OK */
    if (PQresultStatus(r) == PGRES_COMMAND_OK && strcmp(PQcmdStatus(r), "COMMIT") == 0) {
        set_state(b, BS_COMMITTED);
    } else if (PQstatus(b->conn) == CONNECTION_BAD) {
        set_state(b, BS_COMMIT_UNKNOWN);
        rc = CMS_BOOTSTRAP_COMMIT_UNKNOWN;
    } else {
        const char *code = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        const char *msg = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
        say_err("bootstrap: committing failed: %s (SQLSTATE %s)\n", msg ? msg : "rolled back",
                code ? code : "?????");
        rc = CMS_BOOTSTRAP_QUERY;
    }
    PQclear(r);
    return rc;
}

/* Ends a transaction that is still open, and removes a key's file that no
 * committed admin goes with. */
static void cleanup(cms_bootstrap *b)
{
    PGTransactionStatusType ts = PQtransactionStatus(b->conn);
    if (ts == PQTRANS_INTRANS || ts == PQTRANS_INERROR) {
        say(b, CMS_MIGRATE_STATEMENTS, "bootstrap: rolling back\n");
        PGresult *r = PQexec(b->conn, "ROLLBACK");
        PQclear(r);
    }
    if (b->state == BS_KEY_FILE && unlink(b->o.key_out) != 0)
        say_err("cannot remove %s, which holds a key that was never valid: %s\n", b->o.key_out,
                strerror(errno));
    if (b->state != BS_IDLE)
        set_state(b, BS_IDLE);
}

/* Without a key file: the way to the first admin, if there is none. */
static cms_bootstrap_err hint(cms_bootstrap *b, bool have_identities)
{
    bool exists = false;
    if (!have_identities)
        return CMS_BOOTSTRAP_OK;
    cms_bootstrap_err rc =
        exec_bools(b, "looking for an admin", SQL_ADMIN_EXISTS, 0, NULL, &exists, 1);
    if (rc == CMS_BOOTSTRAP_OK && !exists)
        say(b, CMS_MIGRATE_PROGRESS,
            "no admin identity yet: run `cms-migrate up --identity-key-file FILE` (or set "
            "CMS_IDENTITY_KEY_FILE), FILE being cms-identity's key file, to create the first "
            "admin and show its API key once\n");
    return rc;
}

cms_bootstrap_err cms_bootstrap_run(cms_bootstrap *b, PGconn *conn)
{
    cms_bootstrap_err rc = CMS_BOOTSTRAP_OK;
    admin a;
    memset(&a, 0, sizeof a);
    bool tables[3] = {false, false, false};
    bool exists = false;
    char lock_key[32];
    b->conn = conn;
    b->state = BS_IDLE;

    rc = exec_bools(b, "looking for the identity tables", SQL_TABLES, 0, NULL, tables, 3);
    if (rc != CMS_BOOTSTRAP_OK)
        goto out;
    if (!b->have_key) {
        rc = hint(b, tables[0]);
        goto out;
    }
    if (!tables[0] || !tables[1] || !tables[2]) {
        say_err("cannot create the first admin: the schema has no identities, credentials or "
                "outbox table (are these the system's migrations?)\n");
        rc = CMS_BOOTSTRAP_NO_SCHEMA;
        goto out;
    }

    rc = exec_command(b, "starting a transaction", "BEGIN");
    if (rc != CMS_BOOTSTRAP_OK)
        goto out;
    set_state(b, BS_IN_TXN);
    snprintf(lock_key, sizeof lock_key, "%" PRId64, CMS_BOOTSTRAP_LOCK_KEY);
    const char *const lk[] = {lock_key};
    PGresult *r =
        exec(b, "taking the bootstrap lock", SQL_LOCK, 1, lk, NULL, NULL, PGRES_TUPLES_OK, &rc);
    PQclear(r);
    if (r == NULL)
        goto out;
    /* only now, holding the lock, is the answer final for this database */
    rc = exec_bools(b, "looking for an admin", SQL_ADMIN_EXISTS, 0, NULL, &exists, 1);
    if (rc != CMS_BOOTSTRAP_OK)
        goto out;
    if (exists) {
        say(b, CMS_MIGRATE_PROGRESS, "an admin identity exists already: no first admin created\n");
        goto out;
    }
    const char *const nv[] = {b->o.admin_name};
    rc = exec_bools(b, "looking for the admin's name", SQL_NAME_TAKEN, 1, nv, &exists, 1);
    if (rc != CMS_BOOTSTRAP_OK)
        goto out;
    if (exists) {
        say_err("cannot create the first admin: an identity named \"%s\" exists and is no admin; "
                "choose another --admin-name\n",
                b->o.admin_name);
        rc = CMS_BOOTSTRAP_NAME_TAKEN;
        goto out;
    }

    /* a stdout that is no terminal is a pipe or a file, often a job's log */
    if (!b->have_in_key && b->o.key_out == NULL && !b->o.key_stdout && !isatty(STDOUT_FILENO)) {
        say_err("no first admin created: its API key would be shown on stdout, which is not a "
                "terminal and may be kept in a log. Give --admin-key-out FILE (a new file, mode "
                "0600) to have it there, or --admin-key-stdout to print it on this stdout "
                "anyway\n");
        rc = CMS_BOOTSTRAP_NO_KEY_OUTPUT;
        goto out;
    }
    rc = admin_make(b, &a);
    if (rc == CMS_BOOTSTRAP_OK)
        rc = admin_insert(b, &a);
    if (rc == CMS_BOOTSTRAP_OK && b->o.key_out != NULL)
        rc = write_key_file(b, &a);
    if (rc == CMS_BOOTSTRAP_OK)
        rc = commit(b);
    if (rc == CMS_BOOTSTRAP_COMMIT_UNKNOWN) {
        say_err("the connection broke during the COMMIT of the first admin \"%s\" (identity %s): "
                "whether it exists is unknown, and the key %s is valid only if it does. Run "
                "`cms-migrate up` again once PostgreSQL is back: it says whether an admin "
                "exists.\n",
                b->o.admin_name, a.identity_id,
                b->have_in_key ? "of --admin-key-in"
                : b->o.key_out ? "in the file written"
                               : "printed below");
        if (!b->have_in_key && b->o.key_out == NULL)
            (void)print_key(&a);
        goto out;
    }
    if (rc != CMS_BOOTSTRAP_OK)
        goto out;

    if (b->have_in_key) {
        say_err("first admin \"%s\" created (identity %s) with the API key of %s, valid until "
                "%s\n",
                b->o.admin_name, a.identity_id, b->o.key_in, a.expires_text);
    } else if (b->o.key_out != NULL) {
        say_err("first admin \"%s\" created (identity %s); its API key, valid until %s, is in %s "
                "(mode 0600) and is shown nowhere else: store it safely\n",
                b->o.admin_name, a.identity_id, a.expires_text, b->o.key_out);
    } else {
        say_err("first admin created; its API key is shown once: store it now\n");
        fflush(stderr);
        rc = print_key(&a);
    }
out:
    cleanup(b);
    admin_wipe(&a);
    b->conn = NULL;
    return rc;
}

cms_bootstrap_err cms_bootstrap_new_key(const char *key_out, bool key_stdout)
{
    if (key_out != NULL && *key_out == '\0')
        key_out = NULL;
    if (key_out != NULL && key_stdout) {
        say_err("give --admin-key-out (CMS_ADMIN_KEY_OUT) or --admin-key-stdout "
                "(CMS_ADMIN_KEY_STDOUT), not both; try --help\n");
        return CMS_BOOTSTRAP_BAD_OPTION;
    }
    if (key_out == NULL && !key_stdout && !isatty(STDOUT_FILENO)) {
        say_err("no key made: it would be shown on stdout, which is not a terminal and may be "
                "kept in a log. Give --admin-key-out FILE (a new file, mode 0600), or "
                "--admin-key-stdout to print it on this stdout anyway\n");
        return CMS_BOOTSTRAP_NO_KEY_OUTPUT;
    }
    cms_uuid cid;
    admin a;
    memset(&a, 0, sizeof a);
    cms_uuid_v7(&cid);
    if (cms_apikey_generate(&cid, a.key, a.secret) != 0) {
        say_err("libsodium cannot generate a key\n");
        return CMS_BOOTSTRAP_NOMEM;
    }
    cms_apikey_wipe(a.secret, sizeof a.secret);
    cms_bootstrap_err rc = CMS_BOOTSTRAP_OK;
    if (key_out == NULL) {
        if (!print_key_line(a.key)) {
            say_err("cannot print the key: %s\n", strerror(errno));
            rc = CMS_BOOTSTRAP_OUTPUT;
        }
        goto out;
    }
    char text[512];
    int n = snprintf(text, sizeof text,
                     "# cms API key for the first admin, not valid anywhere until `cms-migrate "
                     "up --admin-key-in` gives it to the admin it creates\napi_key = %s\n",
                     a.key);
    rc = n > 0 && (size_t)n < sizeof text
             ? create_key_file(key_out, "the key's file", text, (size_t)n)
             : CMS_BOOTSTRAP_KEY_OUT;
    cms_apikey_wipe(text, sizeof text);
out:
    cms_apikey_wipe(a.key, sizeof a.key);
    return rc;
}
