/* The first admin of a new installation, created by `cms-migrate up`.
 *
 * Every cms-identity command but authenticate needs an admin's API key, so
 * the first admin cannot be made through the service: it is written straight
 * into the database in one transaction, as cms-identity would write it: the
 * identity (type user, status active, roles ["admin"]), an api_key
 * credential of which only the keyed hash is stored (common/apikey.h, with
 * the server key of CMS_IDENTITY_KEY_FILE), and the outbox rows
 * identity.created and credential.issued (source "identity", acted by the
 * system identity), which cms-identity's relay publishes like its own.
 *
 * Concurrent runs on one database take a transaction-level advisory lock
 * (CMS_BOOTSTRAP_LOCK_KEY) and look for an admin only once they hold it, so
 * exactly one of them creates one. Once any identity has the role admin,
 * nothing is created again.
 *
 * The key is shown once. To a file: created with O_EXCL and mode 0600 and
 * written before the COMMIT, so the key is on disk whenever the admin
 * exists; or else on stdout, after the COMMIT, but only when stdout is a
 * terminal or key_stdout asks for it: a stdout that is no terminal is a
 * pipe or a file, often a job's log, so then no admin is created and
 * stderr says how to get one. Lines about the bootstrap go
 * to stderr; neither the key nor any value sent with the statements is ever
 * printed there, at any log level. Blocking libpq: command-line use only. */
#ifndef CMS_BOOTSTRAP_H
#define CMS_BOOTSTRAP_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>

#include "migrate.h"

/* "cms-boot" in ASCII; held with pg_advisory_xact_lock. */
#define CMS_BOOTSTRAP_LOCK_KEY INT64_C(0x636d732d626f6f74)
#define CMS_BOOTSTRAP_TTL_MS_MIN INT64_C(86400000)         /* 1d */
#define CMS_BOOTSTRAP_TTL_MS_MAX (365 * INT64_C(86400000)) /* 365d */

typedef struct cms_bootstrap_opts {
    const char *key_file; /* the server key file; NULL or "": no bootstrap, only a hint */
    const char *
        admin_name; /* a name cms-identity accepts (1..255 bytes of UTF-8, no control characters) */
    int64_t ttl_ms; /* the key's lifetime, CMS_BOOTSTRAP_TTL_MS_MIN..MAX */
    const char *key_out; /* a new file for the key; NULL: stdout */
    const char *key_in;  /* a file holding the key to give the admin (cms-migrate admin-key
                            made it, e.g. a Kubernetes Secret): nothing is shown; NULL: a new
                            key, shown once */
    bool key_stdout;     /* stdout even when it is no terminal (not with key_out) */
    cms_migrate_verbosity verbosity;
} cms_bootstrap_opts;

typedef enum cms_bootstrap_err {
    CMS_BOOTSTRAP_OK,
    CMS_BOOTSTRAP_NOMEM,
    CMS_BOOTSTRAP_BAD_OPTION,      /* admin name or lifetime out of range */
    CMS_BOOTSTRAP_KEY_FILE,        /* the server key file is missing, unsafe or malformed */
    CMS_BOOTSTRAP_NO_SCHEMA,       /* identities, credentials or outbox is missing */
    CMS_BOOTSTRAP_NAME_TAKEN,      /* an identity that is no admin has the admin's name */
    CMS_BOOTSTRAP_KEY_OUT,         /* the key's file cannot be created (it exists, ...) */
    CMS_BOOTSTRAP_NO_KEY_OUTPUT,   /* neither a file nor a terminal to show the key: none made */
    CMS_BOOTSTRAP_QUERY,           /* a statement failed; nothing was created */
    CMS_BOOTSTRAP_CONNECTION_LOST, /* the connection broke before COMMIT; nothing was created */
    CMS_BOOTSTRAP_COMMIT_UNKNOWN,  /* the connection broke during COMMIT */
    CMS_BOOTSTRAP_OUTPUT,          /* the admin was created but its key could not be printed */
    CMS_BOOTSTRAP_KEY_IN,          /* the key_in file is missing, unsafe or holds no key */
} cms_bootstrap_err;

const char *cms_bootstrap_strerror(cms_bootstrap_err e);

typedef struct cms_bootstrap cms_bootstrap;

/* Checks the options and, when a key file is given, loads the server key
 * (before anything touches the database, so a bad file changes nothing).
 * On failure the reason has been printed to stderr. o's strings are
 * borrowed: they must outlive the bootstrap. */
cms_bootstrap_err cms_bootstrap_create(const cms_bootstrap_opts *o, cms_bootstrap **out)
    __attribute__((warn_unused_result));

/* On a database at the latest version: creates the first admin if there is
 * none and a key file was given, and shows its key; with an admin already
 * there, says so and changes nothing; without a key file, says how to get
 * the first admin when there is none. conn must be idle (no transaction
 * open); it is left idle. */
cms_bootstrap_err cms_bootstrap_run(cms_bootstrap *b, PGconn *conn)
    __attribute__((warn_unused_result));

/* Wipes the server key and frees; NULL-safe. */
void cms_bootstrap_destroy(cms_bootstrap *b);

/* `cms-migrate admin-key`: a new API key of the form cms-identity issues,
 * valid nowhere until `up --admin-key-in` gives it to the first admin, so
 * that it can be kept in a secret store before any admin exists. Written to
 * the new file key_out (mode 0600, never over another file, in the form
 * cmsctl reads credentials in), else on stdout when it is a terminal or
 * key_stdout says so. The reason of a failure is printed on stderr. */
cms_bootstrap_err cms_bootstrap_new_key(const char *key_out, bool key_stdout);

#endif
