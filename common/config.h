/* Configuration of a process: one table of options, read from environment
 * variables and then from command-line flags (a flag overrides its variable).
 * The same table renders --help, so the documented options and the accepted
 * ones cannot drift apart.
 *
 *     static const cms_option opts[] = {
 *         CMS_OPTIONS_COMMON,
 *         {"batch-max", "CMS_BATCH_MAX", CMS_OPT_INT, "256", "events per insert", false, false},
 *     };
 *     cms_config *cfg = NULL;
 *     cms_config_result r = cms_config_parse(opts, sizeof opts / sizeof opts[0], argc, argv,
 *                                            "cms-audit", "audit log writer", NULL, &cfg);
 *     if (r != CMS_CONFIG_OK)
 *         return r == CMS_CONFIG_EXIT_OK ? 0 : 2;
 *
 * Flags: --name=VALUE or --name VALUE; a bool flag alone (--name) means true.
 * "--" ends the flags; any other argument that does not start with "-" is
 * kept, in order, as a positional. */
#ifndef CMS_CONFIG_H
#define CMS_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum { CMS_OPT_STRING, CMS_OPT_INT, CMS_OPT_BOOL } cms_opt_type;

typedef struct cms_option {
    /* long flag without dashes: "database-url" -> --database-url=V or --database-url V */
    const char *name;
    const char *env; /* e.g. "CMS_DATABASE_URL", or NULL for flag-only */
    cms_opt_type type;
    const char *def;  /* default as text, or NULL (no default) */
    const char *help; /* one line */
    bool secret;      /* value never printed (help shows "(secret)", cms_config_log redacts) */
    bool required;    /* missing -> error */
} cms_option;

typedef struct cms_config cms_config;

typedef enum { CMS_CONFIG_OK, CMS_CONFIG_EXIT_OK, CMS_CONFIG_EXIT_USAGE } cms_config_result;

/* Parses env then argv (flags override env; "--" ends flags; non-flag args are
 * kept as positionals, so "cms-migrate up 2 --database-url X" works).
 * --help/-h prints usage to stdout and returns CMS_CONFIG_EXIT_OK; --version
 * prints CMS_VERSION and returns CMS_CONFIG_EXIT_OK. An unknown flag, a bad
 * int (not a whole base-10 int64), a bad bool (true/false/1/0/yes/no/on/off)
 * or a missing required option prints one line to stderr naming the problem
 * and "try --help", and returns CMS_CONFIG_EXIT_USAGE. Defaults are checked
 * like values. *out is set only on CMS_CONFIG_OK; the config copies
 * everything it keeps except the option table, which must outlive it.
 * usage_tail: what follows the flags in the usage line, or NULL. */
cms_config_result cms_config_parse(const cms_option *opts, size_t nopts, int argc, char **argv,
                                   const char *prog, const char *summary, const char *usage_tail,
                                   cms_config **out) __attribute__((warn_unused_result));

/* Lookups by option name. Asking for a name not in the table, or with the
 * wrong type, is a programming error: it is logged and yields NULL/0/false. */
const char *cms_config_str(const cms_config *c, const char *name); /* NULL if unset & no default */
int64_t cms_config_int(const cms_config *c, const char *name);     /* 0 if unset & no default */
bool cms_config_bool(const cms_config *c, const char *name);       /* false if unset & no default */
/* True if the option got a value from the environment or a flag (not the default). */
bool cms_config_is_set(const cms_config *c, const char *name);

size_t cms_config_npositional(const cms_config *c);
const char *cms_config_positional(const cms_config *c, size_t i); /* NULL past the end */

/* One cms_log_info line with every option's value; secrets are "[redacted]". */
void cms_config_log(const cms_config *c);
void cms_config_destroy(cms_config *c);

/* The options every service shares, for use in a service's table. */
// clang-format off
#define CMS_OPTIONS_COMMON \
  {"database-url", "CMS_DATABASE_URL", CMS_OPT_STRING, "host=127.0.0.1 dbname=cms", "libpq connection string", true, false}, \
  {"nats-url", "CMS_NATS_URL", CMS_OPT_STRING, "nats://127.0.0.1:4222", "NATS server URL(s), comma-separated", false, false}, \
  {"http-addr", "CMS_HTTP_ADDR", CMS_OPT_STRING, "127.0.0.1:8080", "address of /healthz, /readyz, /metrics", false, false}, \
  {"log-level", "CMS_LOG_LEVEL", CMS_OPT_STRING, "info", "debug, info, warn or error", false, false}, \
  {"pg-pool-size", "CMS_PG_POOL_SIZE", CMS_OPT_INT, "2", "PostgreSQL connections", false, false}, \
  {"drain-timeout-ms", "CMS_DRAIN_TIMEOUT_MS", CMS_OPT_INT, "10000", "longest graceful shutdown before forcing", false, false}, \
  {"command-prefix", "CMS_COMMAND_PREFIX", CMS_OPT_STRING, "cms.cmd", "subject root of commands: <prefix>.<service>.<verb>", false, false}, \
  {"auth-cache-ms", "CMS_AUTH_CACHE_MS", CMS_OPT_INT, "5000", "longest a resolved API key is trusted without asking cms-identity again", false, false}
// clang-format on

#endif
