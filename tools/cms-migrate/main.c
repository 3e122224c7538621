/* cms-migrate: applies, reverts and reports the schema migrations of the
 * system's database, and creates new ones. Its migrations are compiled in,
 * so a deployed binary needs no files; --migrations-dir reads a folder instead. Given
 * cms-identity's key file, `up` also creates the first admin (bootstrap.h).
 *
 * Exit status: 0 done, 1 failed (the database stays at its last good
 * version), 2 usage error. */
#include <errno.h>
#include <inttypes.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bootstrap.h"
#include "bus.h"
#include "config.h"
#include "log.h"
#include "migrate.h"
#include "migset.h"
#include "natsauth.h"

#define PROG "cms-migrate"

enum { EXIT_DONE = 0, EXIT_FAILED = 1, EXIT_USAGE = 2 };

static const cms_option options[] = {
    {"database-url", "CMS_DATABASE_URL", CMS_OPT_STRING, "host=127.0.0.1 dbname=cms",
     "libpq connection string or URI of the database to migrate", CMS_OPT_PASSWORD, false},
    {"migrations-dir", "CMS_MIGRATIONS_DIR", CMS_OPT_STRING, NULL,
     "read migrations from this folder instead of the built-in ones (new: default ./migrations)",
     CMS_OPT_PUBLIC, false},
    {"migrate-lock-timeout", "CMS_MIGRATE_LOCK_TIMEOUT", CMS_OPT_DURATION, "10s",
     "longest wait of a migration statement for a table lock, so it never queues long in front of "
     "traffic (0: no limit)",
     CMS_OPT_PUBLIC, false},
    {"migrate-statement-timeout", "CMS_MIGRATE_STATEMENT_TIMEOUT", CMS_OPT_DURATION, "10m",
     "longest single migration statement (0: no limit)", CMS_OPT_PUBLIC, false},
    {"migrate-wait-timeout", "CMS_MIGRATE_WAIT_TIMEOUT", CMS_OPT_DURATION, "2m",
     "longest wait for another cms-migrate working on the same database (0: no limit)",
     CMS_OPT_PUBLIC, false},
    {"nats-url", "CMS_NATS_URL", CMS_OPT_STRING, "nats://127.0.0.1:4222",
     "provision: NATS server URL(s), comma-separated", CMS_OPT_PASSWORD, false},
    {"stream-replicas", "CMS_STREAM_REPLICAS", CMS_OPT_INT, "1",
     "provision: copies of each stream kept by a NATS cluster (1 to 5; 3 on a three-node "
     "cluster), its durables alike",
     CMS_OPT_PUBLIC, false},
    {"provision-timeout", "CMS_PROVISION_TIMEOUT", CMS_OPT_DURATION, "1m",
     "provision: longest wait for NATS to take the streams and durables", CMS_OPT_PUBLIC, false},
    /* provision: the migrator's NATS credentials (only it may make streams) */
    CMS_OPTIONS_NATS_SECURITY("", ""),
    {"log-level", "CMS_LOG_LEVEL", CMS_OPT_STRING, "info",
     "debug (every statement), info (every migration), warn or error", CMS_OPT_PUBLIC, false},
    {"identity-key-file", "CMS_IDENTITY_KEY_FILE", CMS_OPT_STRING, NULL,
     "up: cms-identity's server key file (64 hex digits, mode 0600); with it, up creates the "
     "first admin when no identity has the role admin",
     CMS_OPT_PUBLIC, false},
    {"admin-name", "CMS_ADMIN_NAME", CMS_OPT_STRING, "admin", "up: name of the first admin",
     CMS_OPT_PUBLIC, false},
    {"admin-key-ttl", "CMS_ADMIN_KEY_TTL", CMS_OPT_DURATION, "90d",
     "up: how long the first admin's API key is valid (1d to 365d)", CMS_OPT_PUBLIC, false},
    {"admin-key-out", "CMS_ADMIN_KEY_OUT", CMS_OPT_STRING, NULL,
     "up: write the first admin's API key to this new file (mode 0600, never over an existing "
     "one) instead of stdout",
     CMS_OPT_PUBLIC, false},
    {"admin-key-stdout", "CMS_ADMIN_KEY_STDOUT", CMS_OPT_BOOL, "false",
     "up: print the first admin's API key on stdout even when stdout is not a terminal (a pipe "
     "or a file: a job's log)",
     CMS_OPT_PUBLIC, false},
    {"admin-key-in", "CMS_ADMIN_KEY_IN", CMS_OPT_STRING, NULL,
     "up: give the first admin the API key in this file (made by `cms-migrate admin-key`, "
     "e.g. a Kubernetes Secret; mode 0600, or 0440 owned by root) instead of a new one; "
     "nothing is shown",
     CMS_OPT_PUBLIC, false},
};

static const char usage_tail[] =
    "VERB [ARG]\n"
    "\n"
    "verbs:\n"
    "  up [N]        apply every pending migration in order, or only the next N; at the\n"
    "                latest version, then create the first admin if needed (see below)\n"
    "  down [N|all]  revert the last applied migration, the last N, or all of them\n"
    "  status        list every migration (version, name, applied or pending, applied_at)\n"
    "                and the current version\n"
    "  version       print the current version number only (0 when none is applied)\n"
    "  new NAME      create the next-numbered NNNN_NAME.up.sql and .down.sql in\n"
    "                --migrations-dir (default ./migrations); NAME is [a-z0-9_]+\n"
    "  admin-key     make an API key for the first admin beforehand, to --admin-key-out\n"
    "                (or a terminal's stdout); `up --admin-key-in FILE` gives it to the\n"
    "                admin it creates, so the key can live in a secret store and no log\n"
    "  provision     create the JetStream streams (CMS_EVENTS, CMS_DLQ, CMS_WORK,\n"
    "                CMS_AUDIT_CHECKPOINTS) and the services'\n"
    "                durable consumers on --nats-url where missing; existing ones are\n"
    "                kept as they are (differences logged). Services only bind to them:\n"
    "                with the NATS permissions of deploy/nats/gen-conf, only the\n"
    "                migrator's user may create, change or delete streams and consumers\n"
    "\n"
    "Each migration runs in its own transaction with its schema_migrations row; a failure\n"
    "leaves the database at the previous version. Concurrent runs on one database wait\n"
    "for each other. Exit status: 0 done, 1 failed, 2 usage error.\n"
    "\n"
    "First admin: given --identity-key-file, the key file cms-identity uses, up creates\n"
    "the identity --admin-name with the role admin and an API key valid for\n"
    "--admin-key-ttl, when no identity has the role admin yet; otherwise it changes\n"
    "nothing. The key is shown that once: in the new file --admin-key-out, or on stdout\n"
    "when it is a terminal (or --admin-key-stdout: a stdout that is no terminal, often a\n"
    "log, creates no admin without one of the two); the database keeps only its keyed\n"
    "hash. Concurrent runs create one admin. A key file that others can read, or a\n"
    "malformed one, stops up before it migrates anything.\n"
    "Make a key file with\n"
    "  (umask 077; head -c32 /dev/urandom | od -An -tx1 | tr -d ' \\n' >identity.key)";

static int usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int cmd_provision(const cms_config *cfg);
static int usage(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs(PROG ": ", stderr);
    vfprintf(stderr, fmt, ap);
    fputs("; try --help\n", stderr);
    va_end(ap);
    return EXIT_USAGE;
}

/* A count argument: a whole positive number. */
static bool parse_count(const char *s, int64_t *out)
{
    if (s == NULL || *s < '0' || *s > '9')
        return false;
    errno = 0;
    char *end = NULL;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || *end != '\0' || v <= 0)
        return false;
    *out = (int64_t)v;
    return true;
}

static int exit_for(cms_migrate_err rc)
{
    return rc == CMS_MIGRATE_OK ? EXIT_DONE : EXIT_FAILED;
}

static int cmd_new(const cms_config *cfg, const char *name)
{
    const char *dir = cms_config_str(cfg, "migrations-dir");
    char up[4200], down[4200], err[1024] = "";
    if (!cms_migset_valid_name(name))
        return usage("NAME \"%s\" must be 1 to 63 of a-z, 0-9 and _ (like add_contract_index)",
                     name);
    cms_migset_err rc = cms_migset_new(dir ? dir : "migrations", name, up, sizeof up, down,
                                       sizeof down, err, sizeof err);
    if (rc != CMS_MIGSET_OK) {
        fprintf(stderr, PROG ": %s: %s\n", cms_migset_strerror(rc), err);
        return EXIT_FAILED;
    }
    printf("created %s\ncreated %s\n", up, down);
    return EXIT_DONE;
}

static int cmd_provision(const cms_config *cfg)
{
    int64_t timeout_ms = cms_config_duration_ms(cfg, "provision-timeout");
    if (timeout_ms <= 0)
        return usage("%s", "--provision-timeout must be more than 0");
    cms_nats_options o = {.url = cms_config_str(cfg, "nats-url"), .name = PROG};
    cms_natsauth_from_config(cfg, &o.security);
    size_t ns = 0, nd = 0;
    const cms_nats_stream_spec *streams = cms_bus_streams(&ns);
    const cms_nats_durable_spec *durables = cms_bus_durables(&nd);
    int64_t replicas = cms_config_int(cfg, "stream-replicas");
    if (replicas < 1 || replicas > CMS_BUS_MAX_REPLICAS)
        return usage("--stream-replicas must be 1 to %d, not %lld", CMS_BUS_MAX_REPLICAS,
                     (long long)replicas);
    cms_nats_err err = cms_bus_provision_wait(&o, true, (int)replicas, timeout_ms);
    if (err != CMS_NATS_OK) {
        char wait[32];
        fprintf(stderr,
                PROG ": streams and durables not provisioned within %s: %s; check that "
                     "nats-server (with JetStream) is reachable at --nats-url and that these are "
                     "the migrator's credentials (the log above says what the server answered)\n",
                cms_config_duration_format(timeout_ms, wait, sizeof wait),
                err == CMS_NATS_ETIMEOUT ? "timed out" : cms_nats_strerror(err));
        return EXIT_FAILED;
    }
    for (size_t i = 0; i < ns; i++)
        printf("stream %s (%s)\n", streams[i].name, streams[i].subject);
    for (size_t i = 0; i < nd; i++)
        printf("durable %s on %s\n", durables[i].durable, durables[i].stream);
    return EXIT_DONE;
}

/* After a successful up: the first admin, once every migration is applied. */
static int bootstrap_after_up(cms_migrate *m, const cms_migset *set, cms_bootstrap *boot,
                              cms_migrate_verbosity v)
{
    int version = 0;
    size_t n = cms_migset_count(set);
    int latest = n ? cms_migset_at(set, n - 1)->version : 0;
    if (cms_migrate_version(m, &version) != CMS_MIGRATE_OK)
        return EXIT_FAILED;
    if (version < latest) {
        if (v >= CMS_MIGRATE_PROGRESS)
            fprintf(stderr,
                    PROG ": at version %d of %d: the first admin is looked for once every "
                         "migration is applied\n",
                    version, latest);
        return EXIT_DONE;
    }
    return cms_bootstrap_run(boot, cms_migrate_conn(m)) == CMS_BOOTSTRAP_OK ? EXIT_DONE
                                                                            : EXIT_FAILED;
}

static cms_migrate_verbosity verbosity_for(cms_log_level l)
{
    switch (l) {
    case CMS_LOG_DEBUG:
        return CMS_MIGRATE_STATEMENTS;
    case CMS_LOG_INFO:
        return CMS_MIGRATE_PROGRESS;
    case CMS_LOG_WARN:
        return CMS_MIGRATE_WARNINGS;
    case CMS_LOG_ERROR:
        return CMS_MIGRATE_ERRORS;
    }
    return CMS_MIGRATE_PROGRESS;
}

int main(int argc, char **argv)
{
    int status = EXIT_FAILED;
    cms_config *cfg = NULL;
    cms_migset *set = NULL;
    cms_migrate *m = NULL;
    cms_bootstrap *boot = NULL;
    char err[1024] = "";

    switch (cms_config_parse(options, sizeof options / sizeof options[0], argc, argv, PROG,
                             "schema migrations of the contract management database", usage_tail,
                             &cfg)) {
    case CMS_CONFIG_OK:
        break;
    case CMS_CONFIG_EXIT_OK:
        return EXIT_DONE;
    case CMS_CONFIG_EXIT_USAGE:
        return EXIT_USAGE;
    }
    cms_log_level level = CMS_LOG_INFO;
    if (!cms_log_level_parse(cms_config_str(cfg, "log-level"), &level)) {
        status = usage("bad --log-level \"%s\": want debug, info, warn or error",
                       cms_config_str(cfg, "log-level"));
        goto out;
    }
    cms_log_init(PROG, level, stderr);
    if (sodium_init() < 0) {
        fprintf(stderr, PROG ": libsodium failed to initialise\n");
        goto out;
    }

    size_t npos = cms_config_npositional(cfg);
    const char *verb = cms_config_positional(cfg, 0);
    const char *arg = cms_config_positional(cfg, 1);
    if (verb == NULL) {
        status =
            usage("%s", "a verb is needed: up, down, status, version, new, admin-key or provision");
        goto out;
    }
    bool takes_arg =
        strcmp(verb, "up") == 0 || strcmp(verb, "down") == 0 || strcmp(verb, "new") == 0;
    if (npos > (takes_arg ? 2u : 1u)) {
        status = usage("too many arguments for %s", verb);
        goto out;
    }
    if (strcmp(verb, "new") == 0) {
        status = arg ? cmd_new(cfg, arg) : usage("%s", "new needs a NAME, like add_contract_index");
        goto out;
    }
    if (strcmp(verb, "provision") == 0) {
        status = cmd_provision(cfg);
        goto out;
    }
    if (strcmp(verb, "admin-key") == 0) {
        cms_bootstrap_err brc = cms_bootstrap_new_key(cms_config_str(cfg, "admin-key-out"),
                                                      cms_config_bool(cfg, "admin-key-stdout"));
        status = brc == CMS_BOOTSTRAP_OK           ? EXIT_DONE
                 : brc == CMS_BOOTSTRAP_BAD_OPTION ? EXIT_USAGE
                                                   : EXIT_FAILED;
        goto out;
    }

    int64_t count = 0; /* up/down: 0 means all (up) or, for down, the default of one */
    if (strcmp(verb, "up") == 0 && arg && !parse_count(arg, &count)) {
        status = usage("up takes a positive count, not \"%s\"", arg);
        goto out;
    }
    if (strcmp(verb, "down") == 0) {
        if (arg == NULL)
            count = 1;
        else if (strcmp(arg, "all") == 0)
            count = 0;
        else if (!parse_count(arg, &count)) {
            status = usage("down takes a positive count or \"all\", not \"%s\"", arg);
            goto out;
        }
    }
    if (strcmp(verb, "up") != 0 && strcmp(verb, "down") != 0 && strcmp(verb, "status") != 0 &&
        strcmp(verb, "version") != 0) {
        status = usage(
            "unknown verb \"%s\": want up, down, status, version, new, admin-key or provision",
            verb);
        goto out;
    }

    cms_migrate_opts o = {
        .conninfo = cms_config_str(cfg, "database-url"),
        .lock_timeout_ms = cms_config_duration_ms(cfg, "migrate-lock-timeout"),
        .statement_timeout_ms = cms_config_duration_ms(cfg, "migrate-statement-timeout"),
        .wait_timeout_ms = cms_config_duration_ms(cfg, "migrate-wait-timeout"),
        .verbosity = verbosity_for(level),
    };
    /* PostgreSQL takes lock_timeout and statement_timeout as an int of milliseconds */
    if (o.lock_timeout_ms > INT32_MAX || o.statement_timeout_ms > INT32_MAX ||
        o.wait_timeout_ms > INT32_MAX) {
        status = usage("%s", "the timeouts can be at most 24d (0 means no limit)");
        goto out;
    }

    if (strcmp(verb, "up") == 0) {
        /* before anything is migrated: a bad key file changes nothing */
        cms_bootstrap_opts bo = {
            .key_file = cms_config_str(cfg, "identity-key-file"),
            .admin_name = cms_config_str(cfg, "admin-name"),
            .ttl_ms = cms_config_duration_ms(cfg, "admin-key-ttl"),
            .key_out = cms_config_str(cfg, "admin-key-out"),
            .key_stdout = cms_config_bool(cfg, "admin-key-stdout"),
            .key_in = cms_config_str(cfg, "admin-key-in"),
            .verbosity = o.verbosity,
        };
        cms_bootstrap_err brc = cms_bootstrap_create(&bo, &boot);
        if (brc != CMS_BOOTSTRAP_OK) {
            status = brc == CMS_BOOTSTRAP_BAD_OPTION ? EXIT_USAGE : EXIT_FAILED;
            goto out;
        }
    }

    if (strcmp(verb, "version") != 0) {
        const char *dir = cms_config_str(cfg, "migrations-dir");
        cms_migset_err lrc = dir ? cms_migset_load_dir(dir, &set, err, sizeof err)
                                 : cms_migset_load_embedded(&set, err, sizeof err);
        if (lrc != CMS_MIGSET_OK) {
            fprintf(stderr, PROG ": %s: %s\n", cms_migset_strerror(lrc), err);
            goto out;
        }
    }
    cms_migrate_err rc = cms_migrate_open(&o, set, &m);
    if (rc != CMS_MIGRATE_OK)
        goto out;

    if (strcmp(verb, "up") == 0) {
        rc = cms_migrate_up(m, count);
    } else if (strcmp(verb, "down") == 0) {
        rc = cms_migrate_down(m, count);
    } else if (strcmp(verb, "status") == 0) {
        rc = cms_migrate_status(m, stdout);
    } else {
        int version = 0;
        rc = cms_migrate_version(m, &version);
        if (rc == CMS_MIGRATE_OK)
            printf("%d\n", version);
    }
    status = exit_for(rc);
    if (rc == CMS_MIGRATE_OK && boot != NULL)
        status = bootstrap_after_up(m, set, boot, o.verbosity);
out:
    cms_bootstrap_destroy(boot);
    cms_migrate_close(m);
    cms_migset_destroy(set);
    cms_config_destroy(cfg);
    return status;
}
