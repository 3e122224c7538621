/* Configuration of a process: one table of options, read from environment
 * variables and then from command-line flags (a flag overrides its variable).
 * The same table renders --help, so the documented options and the accepted
 * ones cannot drift apart.
 *
 *     static const cms_option opts[] = {
 *         CMS_OPTIONS_COMMON,
 *         {"batch-max", "CMS_BATCH_MAX", CMS_OPT_INT, "256", "events per insert",
 *          CMS_OPT_PUBLIC, false},
 *         {"batch-age", "CMS_BATCH_AGE", CMS_OPT_DURATION, "5ms", "longest wait of a batch",
 *          CMS_OPT_PUBLIC, false},
 *     };
 *     cms_config *cfg = NULL;
 *     cms_config_result r = cms_config_parse(opts, sizeof opts / sizeof opts[0], argc, argv,
 *                                            "cms-audit", "audit log writer", NULL, &cfg);
 *     if (r != CMS_CONFIG_OK)
 *         return r == CMS_CONFIG_EXIT_OK ? 0 : 2;
 *
 * Names: an option with a variable is named after it, mechanically: the
 * variable without "CMS_", lower-cased, "_" -> "-" (CMS_IDENTITY_KEY_FILE is
 * --identity-key-file in every binary). A duration is named for what it
 * bounds, never for its unit (--drain-timeout, not --drain-timeout-ms).
 *
 * Flags: --name=VALUE or --name VALUE; a bool flag alone (--name) means true.
 * "--" ends the flags; any other argument that does not start with "-" is
 * kept, in order, as a positional.
 *
 * Durations: a whole number and one unit, ms, s, m, h or d ("250ms", "30s",
 * "10m", "2h", "90d"); "0" alone is zero. They are read back in
 * milliseconds. */
#ifndef CMS_CONFIG_H
#define CMS_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum { CMS_OPT_STRING, CMS_OPT_INT, CMS_OPT_BOOL, CMS_OPT_DURATION } cms_opt_type;

/* How much of a value --help, the config log line and error messages show.
 * The first two are false and true, so a table may still write those. */
typedef enum {
    CMS_OPT_PUBLIC = 0,   /* all of it */
    CMS_OPT_SECRET = 1,   /* nothing: "[redacted]" (--help: "(secret)") */
    CMS_OPT_PASSWORD = 2, /* a libpq connection string or URL(s): all but the passwords
                           * (cms_config_redact) */
} cms_opt_secrecy;

typedef struct cms_option {
    /* long flag without dashes: "database-url" -> --database-url=V or --database-url V */
    const char *name;
    const char *env; /* e.g. "CMS_DATABASE_URL", or NULL for flag-only */
    cms_opt_type type;
    const char *def;        /* default as text, or NULL (no default) */
    const char *help;       /* one line */
    cms_opt_secrecy secret; /* what of the value may be shown */
    bool required;          /* missing -> error; --help marks it "(required)" */
} cms_option;

typedef struct cms_config cms_config;

typedef enum { CMS_CONFIG_OK, CMS_CONFIG_EXIT_OK, CMS_CONFIG_EXIT_USAGE } cms_config_result;

/* Parses env then argv (flags override env; "--" ends flags; non-flag args are
 * kept as positionals, so "cms-migrate up 2 --database-url X" works).
 * --help/-h prints usage to stdout and returns CMS_CONFIG_EXIT_OK; --version
 * prints CMS_VERSION and returns CMS_CONFIG_EXIT_OK. An unknown flag, a bad
 * int (not a whole base-10 int64), a bad bool (true/false/1/0/yes/no/on/off),
 * a bad duration or a missing required option prints one line to stderr
 * naming the problem and "try --help", and returns CMS_CONFIG_EXIT_USAGE.
 * Defaults are checked like values. *out is set only on CMS_CONFIG_OK; the
 * config copies everything it keeps except the option table, which must
 * outlive it. usage_tail: what follows the flags in the usage line, or NULL.
 *
 * --help lists every option: its flag and type ("(required)" when it is),
 * its help line, "env: VAR" where it has a variable, and "default: ..."
 * where it has one (a CMS_OPT_PASSWORD default with its passwords
 * stripped, a CMS_OPT_SECRET one as "(secret)"). */
cms_config_result cms_config_parse(const cms_option *opts, size_t nopts, int argc, char **argv,
                                   const char *prog, const char *summary, const char *usage_tail,
                                   cms_config **out) __attribute__((warn_unused_result));

/* Lookups by option name. Asking for a name not in the table, or with the
 * wrong type, is a programming error: it is logged and yields NULL/0/false. */
const char *cms_config_str(const cms_config *c, const char *name); /* NULL if unset & no default */
int64_t cms_config_int(const cms_config *c, const char *name);     /* 0 if unset & no default */
bool cms_config_bool(const cms_config *c, const char *name);       /* false if unset & no default */
/* A CMS_OPT_DURATION in milliseconds; 0 if unset & no default. */
int64_t cms_config_duration_ms(const cms_config *c, const char *name);
/* True if the option got a value from the environment or a flag (not the default). */
bool cms_config_is_set(const cms_config *c, const char *name);

size_t cms_config_npositional(const cms_config *c);
const char *cms_config_positional(const cms_config *c, size_t i); /* NULL past the end */

/* One cms_log_info line with every option's value, shown as --help would:
 * a CMS_OPT_SECRET as "[redacted]", a CMS_OPT_PASSWORD with its passwords
 * stripped (host and dbname stay), a duration as written ("10s"). */
void cms_config_log(const cms_config *c);
void cms_config_destroy(cms_config *c);

/* ---- durations ---- */

#define CMS_CONFIG_DURATION_ERRORS(X)                                                              \
    X(CMS_CONFIG_DURATION_OK, "ok")                                                                \
    X(CMS_CONFIG_DURATION_ENOUNIT, "needs a unit: ms, s, m, h or d")                               \
    X(CMS_CONFIG_DURATION_EUNIT, "has an unknown unit: want ms, s, m, h or d")                     \
    X(CMS_CONFIG_DURATION_ESYNTAX,                                                                 \
      "is not a duration: want a whole number and one unit, ms, s, m, h or d (like 250ms, 30s, "   \
      "10m, 2h or 90d)")                                                                           \
    X(CMS_CONFIG_DURATION_ERANGE, "is too long: at most 106751991167d")

typedef enum cms_config_duration_err {
#define CMS_CONFIG_DURATION_ENUM(name, text) name,
    CMS_CONFIG_DURATION_ERRORS(CMS_CONFIG_DURATION_ENUM)
#undef CMS_CONFIG_DURATION_ENUM
} cms_config_duration_err;

/* What is wrong, worded to follow the value: "'10' needs a unit: ...". */
const char *cms_config_duration_strerror(cms_config_duration_err err);

/* "<digits><unit>" (unit ms, s, m, h or d; no sign, blank or fraction), or
 * "0", to milliseconds. *ms is set only on CMS_CONFIG_DURATION_OK. */
cms_config_duration_err cms_config_duration_parse(const char *text, int64_t *ms)
    __attribute__((warn_unused_result));

/* ms (>= 0) in the largest unit that holds it whole: 90d, 36h, 1500ms, 0.
 * Returns out. */
const char *cms_config_duration_format(int64_t ms, char *out, size_t len);

/* ---- redaction ---- */

/* value with every password replaced by "[redacted]", into out:
 *   - a libpq key=value connection string (read with PQconninfoParse): the
 *     password keyword; a value without one is copied as it is;
 *   - URL(s), comma-separated (postgresql://, nats://...): the password of
 *     user:password@, a nats URL's token@ (nats.c takes a lone user part as
 *     a token), and a password=... query parameter.
 * False, with out "[redacted]", if value is neither or does not fit:
 * nothing is shown that was not understood. */
bool cms_config_redact(const char *value, char *out, size_t len);

/* Who a process is to NATS and how it trusts the server (common/natsauth.h;
 * cms_natsauth_from_config reads them): for every binary that connects.
 * CREDS_ALSO, CA_ALSO: what the help lines add (string literals, "" for
 * nothing), for a tool that honours more variables. */
// clang-format off
#define CMS_OPTIONS_NATS_SECURITY(CREDS_ALSO, CA_ALSO) \
  {"nats-creds", "CMS_NATS_CREDS", CMS_OPT_STRING, NULL, "file of the NATS credentials, mode 0600: a .creds file (user JWT and NKey seed) or USER:PASSWORD on its first line" CREDS_ALSO, CMS_OPT_PUBLIC, false}, \
  {"nats-inbox-prefix", "CMS_NATS_INBOX_PREFIX", CMS_OPT_STRING, NULL, "subject prefix of the reply inboxes (default _INBOX.<USER> with a USER:PASSWORD file, else _INBOX)", CMS_OPT_PUBLIC, false}, \
  {"nats-tls", "CMS_NATS_TLS", CMS_OPT_BOOL, "false", "require TLS, verifying the server's certificate and host name (a tls:// URL, --nats-ca or --nats-cert require it too)", CMS_OPT_PUBLIC, false}, \
  {"nats-ca", "CMS_NATS_CA", CMS_OPT_STRING, NULL, "PEM file of the CA(s) the NATS server's certificate must chain to, besides the system's (requires TLS)" CA_ALSO, CMS_OPT_PUBLIC, false}, \
  {"nats-cert", "CMS_NATS_CERT", CMS_OPT_STRING, NULL, "PEM client certificate (chain) for a server that verifies clients; with --nats-key (requires TLS)", CMS_OPT_PUBLIC, false}, \
  {"nats-key", "CMS_NATS_KEY", CMS_OPT_STRING, NULL, "PEM private key of --nats-cert, mode 0600", CMS_OPT_PUBLIC, false}
// clang-format on

/* The options every service shares, for use in a service's table. */
// clang-format off
#define CMS_OPTIONS_COMMON \
  {"database-url", "CMS_DATABASE_URL", CMS_OPT_STRING, "host=127.0.0.1 dbname=cms", "libpq connection string or URI (a password is better in PGPASSFILE)", CMS_OPT_PASSWORD, false}, \
  {"nats-url", "CMS_NATS_URL", CMS_OPT_STRING, "nats://127.0.0.1:4222", "NATS server URL(s), comma-separated", CMS_OPT_PASSWORD, false}, \
  CMS_OPTIONS_NATS_SECURITY("", ""), \
  {"http-addr", "CMS_HTTP_ADDR", CMS_OPT_STRING, "127.0.0.1:8080", "address of /healthz, /readyz, /metrics (numeric HOST:PORT)", CMS_OPT_PUBLIC, false}, \
  {"log-level", "CMS_LOG_LEVEL", CMS_OPT_STRING, "info", "debug, info, warn or error", CMS_OPT_PUBLIC, false}, \
  {"pg-pool-size", "CMS_PG_POOL_SIZE", CMS_OPT_INT, "2", "PostgreSQL connections", CMS_OPT_PUBLIC, false}, \
  {"drain-timeout", "CMS_DRAIN_TIMEOUT", CMS_OPT_DURATION, "10s", "longest graceful shutdown before forcing", CMS_OPT_PUBLIC, false}

/* What a service that serves commands adds (common/service.c adds them only
 * then, so that no binary offers an option it does not use). */
#define CMS_OPTIONS_COMMANDS \
  {"command-prefix", "CMS_COMMAND_PREFIX", CMS_OPT_STRING, "cms.cmd", "subject root of commands: <prefix>.<service>.<verb>", CMS_OPT_PUBLIC, false}, \
  {"auth-cache", "CMS_AUTH_CACHE", CMS_OPT_DURATION, "5s", "longest a resolved API key is trusted without asking cms-identity again (1ms to 10m)", CMS_OPT_PUBLIC, false}

/* What a service with an outbox relay adds (common/outbox.h). */
#define CMS_OPTIONS_OUTBOX \
  {"outbox-retain", "CMS_OUTBOX_RETAIN", CMS_OPT_DURATION, "10m", "how long a published event stays in the outbox with its ack's stream sequence, so that one a stream lost (a JetStream store rolled back by a host crash) is published again at start or reconnection; longer than the store may hold acked messages unsynced (0: deleted once acked)", CMS_OPT_PUBLIC, false}

/* What a service that consumes events adds (common/consumer.h). */
#define CMS_OPTIONS_CONSUMERS \
  {"consumer-ack-wait", "CMS_CONSUMER_ACK_WAIT", CMS_OPT_DURATION, "30s", "how long JetStream waits for an event's ack before redelivering it (set when the durable is created)", CMS_OPT_PUBLIC, false}, \
  {"consumer-lease", "CMS_CONSUMER_LEASE", CMS_OPT_DURATION, "10s", "how long a replica's hold on a consumer lasts unrenewed; a standby takes over after it", CMS_OPT_PUBLIC, false}, \
  {"consumer-max-inflight", "CMS_CONSUMER_MAX_INFLIGHT", CMS_OPT_INT, "256", "events a consumer holds unacked at most", CMS_OPT_PUBLIC, false}, \
  {"consumer-concurrency", "CMS_CONSUMER_CONCURRENCY", CMS_OPT_INT, "8", "events (of different resources) a consumer applies at once", CMS_OPT_PUBLIC, false}, \
  {"consumer-suffix", "CMS_CONSUMER_SUFFIX", CMS_OPT_STRING, "", "appended to every consumer's name as \"-SUFFIX\" (its durable, lease and records): for deployments side by side on one NATS, each with durables of its own; [a-z0-9_-]", CMS_OPT_PUBLIC, false}, \
  {"processed-events-retention", "CMS_PROCESSED_EVENTS_RETENTION", CMS_OPT_DURATION, "7d", "how long an applied event is remembered against a second delivery (at least 1h, 10 ack waits and twice the dedupe window)", CMS_OPT_PUBLIC, false}
// clang-format on

#endif
