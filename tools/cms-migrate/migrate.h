/* Applying and reverting migrations on one database.
 *
 * Bookkeeping lives in schema_migrations (version, name, checksum of the up
 * file, applied_at). Each migration runs in its own transaction together with
 * its schema_migrations row, so a failure leaves the database at the previous
 * version. up and down hold a session-level advisory lock (key
 * CMS_MIGRATE_LOCK_KEY, on the migrated database) for the whole run: a second
 * cms-migrate waits for the first and then finds nothing left to do. That
 * lock needs a session, so migrate directly or through a session-pooling
 * proxy, not a transaction-pooling one.
 *
 * Progress lines go to stdout; warnings and errors, which say what failed
 * and what to do about it, go to stderr. The password of the connection
 * string is never printed. */
#ifndef CMS_MIGRATE_H
#define CMS_MIGRATE_H

#include <libpq-fe.h>
#include <stdint.h>
#include <stdio.h>

#include "migset.h"

/* "cms-migr" in ASCII. In pg_locks: locktype 'advisory', classid = the high
 * 32 bits, objid = the low 32 bits, objsubid 1. */
#define CMS_MIGRATE_LOCK_KEY INT64_C(0x636d732d6d696772)
#define CMS_MIGRATE_LOCK_CLASSID 0x636d732du
#define CMS_MIGRATE_LOCK_OBJID 0x6d696772u

typedef enum cms_migrate_verbosity {
    CMS_MIGRATE_ERRORS,     /* errors only */
    CMS_MIGRATE_WARNINGS,   /* and warnings */
    CMS_MIGRATE_PROGRESS,   /* and one line per migration */
    CMS_MIGRATE_STATEMENTS, /* and one line per statement */
} cms_migrate_verbosity;

typedef struct cms_migrate_opts {
    const char *conninfo;         /* libpq connection string or URI */
    int64_t lock_timeout_ms;      /* lock_timeout inside migrations; 0 = no limit */
    int64_t statement_timeout_ms; /* statement_timeout inside migrations; 0 = no limit */
    int64_t wait_timeout_ms;      /* longest wait for another migrator's lock; 0 = no limit */
    cms_migrate_verbosity verbosity;
} cms_migrate_opts;

typedef enum cms_migrate_err {
    CMS_MIGRATE_OK,
    CMS_MIGRATE_NOMEM,
    CMS_MIGRATE_CONNECT,         /* cannot connect */
    CMS_MIGRATE_CONNECTION_LOST, /* the connection broke during the run */
    CMS_MIGRATE_LOCK_TIMEOUT,    /* another migrator held the lock past wait_timeout_ms */
    CMS_MIGRATE_QUERY,           /* a bookkeeping query failed */
    CMS_MIGRATE_UNKNOWN_APPLIED, /* an applied version is not in the set: the database is newer */
    CMS_MIGRATE_OUT_OF_ORDER,    /* a pending migration is older than an applied one */
    CMS_MIGRATE_TXN_CONTROL,     /* a file has BEGIN/COMMIT/…: the runner owns the transaction */
    CMS_MIGRATE_FAILED,          /* a migration failed and was rolled back */
} cms_migrate_err;

const char *cms_migrate_strerror(cms_migrate_err e);

typedef struct cms_migrate cms_migrate;

/* Connects (blocking). set may be NULL for cms_migrate_version alone; it
 * must outlive the runner. On CMS_MIGRATE_CONNECT the reason, naming host
 * and port, has been printed. */
cms_migrate_err cms_migrate_open(const cms_migrate_opts *o, const cms_migset *set,
                                 cms_migrate **out) __attribute__((warn_unused_result));
void cms_migrate_close(cms_migrate *m);

/* Applies the pending migrations in version order: all of them when n <= 0,
 * else at most n. */
cms_migrate_err cms_migrate_up(cms_migrate *m, int64_t n) __attribute__((warn_unused_result));
/* Reverts applied migrations, newest first: all of them when n <= 0, else at
 * most n. */
cms_migrate_err cms_migrate_down(cms_migrate *m, int64_t n) __attribute__((warn_unused_result));
/* Writes one line per migration (version, name, applied/pending, applied_at)
 * and then "current version: N" to out. */
cms_migrate_err cms_migrate_status(cms_migrate *m, FILE *out) __attribute__((warn_unused_result));
/* The highest applied version, 0 if none (or no schema_migrations yet). */
cms_migrate_err cms_migrate_version(cms_migrate *m, int *version)
    __attribute__((warn_unused_result));

/* The runner's session, for work that follows a run (bootstrap.h): idle, the
 * migration lock released, lock_timeout and statement_timeout as configured.
 * It stays the runner's: do not close it. */
PGconn *cms_migrate_conn(cms_migrate *m);

#endif
