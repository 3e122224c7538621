/* config: env -> flags precedence, positionals, validation and its messages,
 * durations, --help/--version, redaction of secrets and of the passwords in
 * connection strings and URLs. Each Criterion test runs in its own process,
 * so setenv does not leak between tests. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "log.h"

static const cms_option opts[] = {
    CMS_OPTIONS_COMMON,
    {"batch-max", "CMS_BATCH_MAX", CMS_OPT_INT, "256", "events per insert", CMS_OPT_PUBLIC, false},
    {"dry-run", "CMS_DRY_RUN", CMS_OPT_BOOL, "false", "change nothing", CMS_OPT_PUBLIC, false},
    {"api-key", "CMS_API_KEY", CMS_OPT_STRING, NULL, "key for the admin API", CMS_OPT_SECRET,
     false},
    {"pin", "CMS_PIN", CMS_OPT_INT, NULL, "secret number", CMS_OPT_SECRET, false},
    {"name", NULL, CMS_OPT_STRING, NULL, "flag-only, no default", CMS_OPT_PUBLIC, false},
    {"token", "CMS_TOKEN", CMS_OPT_STRING, "t-default", "a secret with a default", CMS_OPT_SECRET,
     false},
    {"batch-age", "CMS_BATCH_AGE", CMS_OPT_DURATION, "250ms", "longest wait of a batch",
     CMS_OPT_PUBLIC, false},
    {"ttl", NULL, CMS_OPT_DURATION, NULL, "flag-only duration", CMS_OPT_PUBLIC, false},
};
#define NOPTS (sizeof opts / sizeof opts[0])

/* Captures what fd (1 or 2) receives while the capture is open. */
typedef struct capture {
    int fd, saved;
    FILE *tmp;
    char text[16384];
} capture;

static void capture_begin(capture *c, int fd)
{
    fflush(fd == 1 ? stdout : stderr);
    c->fd = fd;
    c->tmp = tmpfile();
    cr_assert_not_null(c->tmp);
    c->saved = dup(fd);
    cr_assert(c->saved >= 0);
    cr_assert(dup2(fileno(c->tmp), fd) >= 0);
}

static const char *capture_end(capture *c)
{
    fflush(c->fd == 1 ? stdout : stderr);
    dup2(c->saved, c->fd);
    close(c->saved);
    rewind(c->tmp);
    size_t n = fread(c->text, 1, sizeof c->text - 1, c->tmp);
    c->text[n] = '\0';
    fclose(c->tmp);
    return c->text;
}

static cms_config_result parse(int argc, char **argv, cms_config **out)
{
    return cms_config_parse(opts, NOPTS, argc, argv, "cms-test", "a test program",
                            "up [N] | down [N] | status | new NAME", out);
}

/* argv is not written to; the cast only meets main()'s signature */
#define ARGV(...) ((char **)(const char *[]){"cms-test", __VA_ARGS__, NULL})
#define ARGC(...) ((int)(sizeof((const char *[]){"cms-test", __VA_ARGS__}) / sizeof(char *)))

/* Expects a usage error; returns its stderr line. */
static const char *usage_error(capture *cap, int argc, char **argv)
{
    cms_config *c = NULL;
    capture_begin(cap, 2);
    cms_config_result r = parse(argc, argv, &c);
    const char *err = capture_end(cap);
    cr_assert_eq(r, CMS_CONFIG_EXIT_USAGE, "stderr: %s", err);
    cr_assert_null(c, "*out must be set only on success");
    cr_assert(strstr(err, "try --help") != NULL, "stderr: %s", err);
    cr_assert_eq(strchr(err, '\n'), err + strlen(err) - 1, "one line: %s", err);
    return err;
}

Test(config, defaults_without_env_or_flags)
{
    unsetenv("CMS_DATABASE_URL");
    cms_config *c = NULL;
    cr_assert_eq(parse(1, ARGV(NULL), &c), CMS_CONFIG_OK);
    cr_assert_str_eq(cms_config_str(c, "database-url"), "host=127.0.0.1 dbname=cms");
    cr_assert_str_eq(cms_config_str(c, "http-addr"), "127.0.0.1:8080");
    cr_assert_eq(cms_config_int(c, "pg-pool-size"), 2);
    cr_assert_eq(cms_config_duration_ms(c, "drain-timeout"), 10000);
    cr_assert_eq(cms_config_duration_ms(c, "batch-age"), 250);
    cr_assert_eq(cms_config_duration_ms(c, "ttl"), 0);
    cr_assert_eq(cms_config_bool(c, "dry-run"), false);
    cr_assert_null(cms_config_str(c, "name"));
    cr_assert_eq(cms_config_int(c, "pin"), 0);
    cr_assert_not(cms_config_is_set(c, "batch-max"));
    cr_assert_eq(cms_config_npositional(c), 0);
    cr_assert_null(cms_config_positional(c, 0));
    cms_config_destroy(c);
}

Test(config, env_then_flags_override)
{
    setenv("CMS_BATCH_MAX", "17", 1);
    setenv("CMS_NATS_URL", "nats://env:1", 1);
    setenv("CMS_DRY_RUN", "YES", 1);
    setenv("CMS_LOG_LEVEL", "", 1); /* empty counts as unset */
    cms_config *c = NULL;
    cr_assert_eq(parse(ARGC("--nats-url=nats://flag:2", "--batch-max", "-5"),
                       ARGV("--nats-url=nats://flag:2", "--batch-max", "-5"), &c),
                 CMS_CONFIG_OK);
    cr_assert_str_eq(cms_config_str(c, "nats-url"), "nats://flag:2");
    cr_assert_eq(cms_config_int(c, "batch-max"), -5);
    cr_assert_eq(cms_config_bool(c, "dry-run"), true);
    cr_assert_str_eq(cms_config_str(c, "log-level"), "info");
    cr_assert(cms_config_is_set(c, "batch-max"));
    cr_assert(cms_config_is_set(c, "dry-run"));
    cr_assert_not(cms_config_is_set(c, "log-level"));
    cms_config_destroy(c);

    /* the last flag wins, and the env alone applies without flags */
    c = NULL;
    cr_assert_eq(
        parse(ARGC("--batch-max=1", "--batch-max=2"), ARGV("--batch-max=1", "--batch-max=2"), &c),
        CMS_CONFIG_OK);
    cr_assert_eq(cms_config_int(c, "batch-max"), 2);
    cr_assert_str_eq(cms_config_str(c, "nats-url"), "nats://env:1");
    cms_config_destroy(c);
}

Test(config, positionals_mixed_with_flags_and_double_dash)
{
    cms_config *c = NULL;
    cr_assert_eq(
        parse(ARGC("up", "2", "--database-url", "dbname=x", "-", "--", "--batch-max=9", "-x"),
              ARGV("up", "2", "--database-url", "dbname=x", "-", "--", "--batch-max=9", "-x"), &c),
        CMS_CONFIG_OK);
    cr_assert_str_eq(cms_config_str(c, "database-url"), "dbname=x");
    cr_assert_eq(cms_config_int(c, "batch-max"), 256, "after -- nothing is a flag");
    cr_assert_eq(cms_config_npositional(c), 5);
    const char *want[] = {"up", "2", "-", "--batch-max=9", "-x"};
    for (size_t i = 0; i < 5; i++)
        cr_assert_str_eq(cms_config_positional(c, i), want[i]);
    cr_assert_null(cms_config_positional(c, 5));
    cms_config_destroy(c);
}

Test(config, bools)
{
    const char *yes[] = {"true", "1", "yes", "on", "TRUE", "On"};
    const char *no[] = {"false", "0", "no", "off", "False", "OFF"};
    char flag[64];
    for (size_t i = 0; i < 6; i++) {
        cms_config *c = NULL;
        snprintf(flag, sizeof flag, "--dry-run=%s", yes[i]);
        cr_assert_eq(parse(2, ARGV(flag), &c), CMS_CONFIG_OK);
        cr_assert(cms_config_bool(c, "dry-run"), "%s", yes[i]);
        cms_config_destroy(c);
        c = NULL;
        snprintf(flag, sizeof flag, "--dry-run=%s", no[i]);
        cr_assert_eq(parse(2, ARGV(flag), &c), CMS_CONFIG_OK);
        cr_assert_not(cms_config_bool(c, "dry-run"), "%s", no[i]);
        cms_config_destroy(c);
    }
    /* a bare bool flag is true and does not swallow the next argument */
    cms_config *c = NULL;
    cr_assert_eq(parse(ARGC("--dry-run", "status"), ARGV("--dry-run", "status"), &c),
                 CMS_CONFIG_OK);
    cr_assert(cms_config_bool(c, "dry-run"));
    cr_assert_eq(cms_config_npositional(c), 1);
    cr_assert_str_eq(cms_config_positional(c, 0), "status");
    cms_config_destroy(c);
}

Test(config, int_limits)
{
    cms_config *c = NULL;
    cr_assert_eq(parse(2, ARGV("--batch-max=9223372036854775807"), &c), CMS_CONFIG_OK);
    cr_assert_eq(cms_config_int(c, "batch-max"), INT64_MAX);
    cms_config_destroy(c);
    c = NULL;
    cr_assert_eq(parse(2, ARGV("--batch-max=-9223372036854775808"), &c), CMS_CONFIG_OK);
    cr_assert_eq(cms_config_int(c, "batch-max"), INT64_MIN);
    cms_config_destroy(c);
}

Test(config, bad_ints_are_usage_errors)
{
    const char *bad[] = {"--batch-max=abc",
                         "--batch-max=12x",
                         "--batch-max=",
                         "--batch-max= 5",
                         "--batch-max=9223372036854775808",
                         "--batch-max=-9223372036854775809",
                         "--batch-max=0x10",
                         "--batch-max=1.5"};
    capture cap;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *err = usage_error(&cap, 2, ARGV(bad[i]));
        cr_assert(strstr(err, "--batch-max") != NULL, "%s", err);
    }
    const char *err = usage_error(&cap, 2, ARGV("--batch-max=abc"));
    cr_assert_str_eq(err, "cms-test: bad value \"abc\" for --batch-max (from flag): want a base-10 "
                          "64-bit integer; try --help\n");
}

Test(config, bad_env_names_the_variable)
{
    setenv("CMS_PG_POOL_SIZE", "lots", 1);
    capture cap;
    const char *err = usage_error(&cap, 1, ARGV(NULL));
    cr_assert(strstr(err, "CMS_PG_POOL_SIZE") != NULL, "%s", err);
    cr_assert(strstr(err, "lots") != NULL, "%s", err);
}

Test(config, bad_bool_unknown_flag_missing_value)
{
    capture cap;
    const char *err = usage_error(&cap, 2, ARGV("--dry-run=maybe"));
    cr_assert(strstr(err, "dry-run") && strstr(err, "maybe"), "%s", err);
    err = usage_error(&cap, 2, ARGV("--nope=1"));
    cr_assert_str_eq(err, "cms-test: unknown flag --nope; try --help\n");
    err = usage_error(&cap, 2, ARGV("-v"));
    cr_assert(strstr(err, "unknown flag -v"), "%s", err);
    err = usage_error(&cap, 2, ARGV("--batch-max"));
    cr_assert(strstr(err, "--batch-max needs a value"), "%s", err);
}

Test(config, secret_values_are_never_echoed)
{
    setenv("CMS_PIN", "hunter2", 1);
    capture cap;
    const char *err = usage_error(&cap, 1, ARGV(NULL));
    cr_assert(strstr(err, "pin") != NULL, "%s", err);
    cr_assert(strstr(err, "hunter2") == NULL, "%s", err);
}

Test(config, required_option)
{
    static const cms_option req[] = {
        {"token-file", "CMS_TOKEN_FILE", CMS_OPT_STRING, NULL, "where the token is", CMS_OPT_PUBLIC,
         true},
    };
    capture cap;
    cms_config *c = NULL;
    capture_begin(&cap, 2);
    cms_config_result r = cms_config_parse(req, 1, 1, ARGV(NULL), "p", NULL, NULL, &c);
    const char *err = capture_end(&cap);
    cr_assert_eq(r, CMS_CONFIG_EXIT_USAGE);
    cr_assert_null(c);
    cr_assert_str_eq(err, "p: missing required --token-file (or CMS_TOKEN_FILE); try --help\n");

    setenv("CMS_TOKEN_FILE", "/t", 1);
    cr_assert_eq(cms_config_parse(req, 1, 1, ARGV(NULL), "p", NULL, NULL, &c), CMS_CONFIG_OK);
    cr_assert_str_eq(cms_config_str(c, "token-file"), "/t");
    cms_config_destroy(c);
}

Test(config, help_lists_every_option)
{
    setenv("CMS_DATABASE_URL", "password=sekrit", 1);
    capture cap;
    cms_config *c = NULL;
    capture_begin(&cap, 1);
    cms_config_result r = parse(ARGC("up", "--help", "--nope"), ARGV("up", "--help", "--nope"), &c);
    const char *out = capture_end(&cap);
    cr_assert_eq(r, CMS_CONFIG_EXIT_OK);
    cr_assert_null(c);
    cr_assert(strstr(out, "cms-test - a test program") != NULL, "%s", out);
    cr_assert(strstr(out, "usage: cms-test [options] up [N] | down [N] | status | new NAME"), "%s",
              out);
    for (size_t i = 0; i < NOPTS; i++) {
        char flag[64];
        snprintf(flag, sizeof flag, "--%s", opts[i].name);
        cr_assert(strstr(out, flag) != NULL, "%s missing", flag);
        cr_assert(strstr(out, opts[i].help) != NULL, "%s help missing", flag);
        if (opts[i].env)
            cr_assert(strstr(out, opts[i].env) != NULL, "%s missing", opts[i].env);
    }
    cr_assert(strstr(out, "  --drain-timeout=DURATION\n") != NULL, "%s", out);
    cr_assert(strstr(out, "default: 10s\n") != NULL, "%s", out);
    cr_assert(strstr(out, "default: nats://127.0.0.1:4222\n") != NULL, "%s", out);
    /* a connection string's default is shown: it has no password to strip */
    cr_assert(
        strstr(out, "      env: CMS_DATABASE_URL\n      default: host=127.0.0.1 dbname=cms\n") !=
            NULL,
        "%s", out);
    cr_assert(strstr(out, "default: (secret)") != NULL, "the secret's default is not shown");
    cr_assert(strstr(out, "t-default") == NULL, "%s", out);
    cr_assert(strstr(out, "sekrit") == NULL, "values are never shown, only defaults");
    /* the env line only where there is a variable, and no claim that all have one */
    cr_assert(strstr(out, "(none)") == NULL, "%s", out);
    cr_assert(strstr(out, "  --name=STRING\n      flag-only, no default\n  --") != NULL, "%s", out);
    cr_assert(strstr(out, "Every option may") == NULL, "%s", out);
    cr_assert(strstr(out, "A DURATION is a whole number and one unit") != NULL, "%s", out);

    capture_begin(&cap, 1);
    r = parse(2, ARGV("-h"), &c);
    capture_end(&cap);
    cr_assert_eq(r, CMS_CONFIG_EXIT_OK);
}

Test(config, help_marks_required_options)
{
    static const cms_option req[] = {
        {"key-file", "CMS_KEY_FILE", CMS_OPT_STRING, NULL, "where the key is", CMS_OPT_PUBLIC,
         true},
        {"quiet", NULL, CMS_OPT_BOOL, "false", "say less", CMS_OPT_PUBLIC, false},
    };
    capture cap;
    cms_config *c = NULL;
    capture_begin(&cap, 1);
    cms_config_result r = cms_config_parse(req, 2, 2, ARGV("--help"), "p", NULL, NULL, &c);
    const char *out = capture_end(&cap);
    cr_assert_eq(r, CMS_CONFIG_EXIT_OK);
    cr_assert(strstr(out, "  --key-file=STRING (required)\n      where the key is\n      env: "
                          "CMS_KEY_FILE\n") != NULL,
              "%s", out);
    cr_assert(strstr(out, "  --quiet[=BOOL]\n      say less\n      default: false\n") != NULL, "%s",
              out);
    cr_assert(strstr(out, "DURATION") == NULL, "no duration note without durations: %s", out);
}

Test(config, version)
{
    capture cap;
    cms_config *c = NULL;
    capture_begin(&cap, 1);
    cms_config_result r = parse(2, ARGV("--version"), &c);
    const char *out = capture_end(&cap);
    cr_assert_eq(r, CMS_CONFIG_EXIT_OK);
    cr_assert_str_eq(out, "cms-test " CMS_VERSION "\n");
}

/* The one config line cms_config_log writes, for the environment set by the caller. */
static void log_line(int argc, char **argv, char line[4096])
{
    cms_config *c = NULL;
    cr_assert_eq(parse(argc, argv, &c), CMS_CONFIG_OK);
    FILE *f = tmpfile();
    cms_log_init("test", CMS_LOG_INFO, f);
    cms_config_log(c);
    cms_log_init("test", CMS_LOG_INFO, NULL);
    rewind(f);
    line[0] = '\0';
    cr_assert_not_null(fgets(line, 4096, f));
    cr_assert(fgetc(f) == EOF, "exactly one line");
    fclose(f);
    cms_config_destroy(c);
}

Test(config, log_line_redacts_secrets)
{
    setenv("CMS_DATABASE_URL", "host=db port=5433 dbname=cms password=sekrit", 1);
    setenv("CMS_NATS_URL", "nats://alice:n4ts-pw@nats1:4222,nats://bob:other-pw@nats2:4222", 1);
    setenv("CMS_API_KEY", "k-123456", 1);
    setenv("CMS_BATCH_AGE", "2s", 1);
    char line[4096];
    log_line(2, ARGV("--batch-max=42"), line);
    cr_assert(strstr(line, "sekrit") == NULL, "%s", line);
    cr_assert(strstr(line, "n4ts-pw") == NULL, "%s", line);
    cr_assert(strstr(line, "other-pw") == NULL, "%s", line);
    cr_assert(strstr(line, "k-123456") == NULL, "%s", line);
    cr_assert(strstr(line, "t-default") == NULL, "%s", line);
    /* host and dbname stay visible */
    cr_assert(strstr(line, "\"database-url\":\"") != NULL, "%s", line);
    cr_assert(strstr(line, "host=db") != NULL, "%s", line);
    cr_assert(strstr(line, "port=5433") != NULL, "%s", line);
    cr_assert(strstr(line, "dbname=cms") != NULL, "%s", line);
    cr_assert(strstr(line, "password=[redacted]") != NULL, "%s", line);
    cr_assert(
        strstr(line,
               "\"nats-url\":\"nats://alice:[redacted]@nats1:4222,nats://bob:[redacted]@nats2:"
               "4222\"") != NULL,
        "%s", line);
    cr_assert(strstr(line, "\"api-key\":\"[redacted]\"") != NULL, "%s", line);
    cr_assert(strstr(line, "\"batch-max\":42") != NULL, "%s", line);
    cr_assert(strstr(line, "\"batch-age\":\"2s\"") != NULL, "%s", line);
    cr_assert(strstr(line, "\"dry-run\":false") != NULL, "%s", line);
    cr_assert(strstr(line, "\"name\":null") != NULL, "%s", line);
}

Test(config, log_line_shows_what_has_no_password)
{
    setenv("CMS_DATABASE_URL", "postgresql://cms@db.example:5432/cms?sslmode=require", 1);
    char line[4096];
    log_line(1, ARGV(NULL), line);
    cr_assert(strstr(line, "\"database-url\":\"postgresql://cms@db.example:5432/cms?sslmode="
                           "require\"") != NULL,
              "%s", line);
    cr_assert(strstr(line, "\"nats-url\":\"nats://127.0.0.1:4222\"") != NULL, "%s", line);
}

/* ---- durations ---- */

Test(config, durations_in_every_unit)
{
    static const struct {
        const char *text;
        int64_t ms;
    } ok[] = {
        {"250ms", 250},
        {"30s", 30000},
        {"10m", 600000},
        {"2h", 7200000},
        {"90d", INT64_C(7776000000)},
        {"0", 0},
        {"0s", 0},
        {"007s", 7000},
        {"1ms", 1},
        {"106751991167d", INT64_C(106751991167) * 86400000},
        {"9223372036854775807ms", INT64_MAX},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        int64_t ms = -1;
        cr_assert_eq(cms_config_duration_parse(ok[i].text, &ms), CMS_CONFIG_DURATION_OK, "%s",
                     ok[i].text);
        cr_assert_eq(ms, ok[i].ms, "%s is %lld ms", ok[i].text, (long long)ms);
    }
}

Test(config, bad_durations_say_what_is_wrong)
{
    static const struct {
        const char *text;
        cms_config_duration_err err;
    } bad[] = {
        {"10", CMS_CONFIG_DURATION_ENOUNIT},
        {"99999999999999999999", CMS_CONFIG_DURATION_ENOUNIT},
        {"10sec", CMS_CONFIG_DURATION_EUNIT},
        {"5S", CMS_CONFIG_DURATION_EUNIT},
        {"3w", CMS_CONFIG_DURATION_EUNIT},
        {"1.5s", CMS_CONFIG_DURATION_ESYNTAX},
        {"-5s", CMS_CONFIG_DURATION_ESYNTAX},
        {"+5s", CMS_CONFIG_DURATION_ESYNTAX},
        {" 5s", CMS_CONFIG_DURATION_ESYNTAX},
        {"5 s", CMS_CONFIG_DURATION_ESYNTAX},
        {"5s ", CMS_CONFIG_DURATION_ESYNTAX},
        {"1h30m", CMS_CONFIG_DURATION_ESYNTAX},
        {"s", CMS_CONFIG_DURATION_ESYNTAX},
        {"", CMS_CONFIG_DURATION_ESYNTAX},
        {"106751991168d", CMS_CONFIG_DURATION_ERANGE},
        {"9223372036854775808ms", CMS_CONFIG_DURATION_ERANGE},
        {"99999999999999999999s", CMS_CONFIG_DURATION_ERANGE},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int64_t ms = -1;
        cr_assert_eq(cms_config_duration_parse(bad[i].text, &ms), bad[i].err, "\"%s\"",
                     bad[i].text);
        cr_assert_eq(ms, -1, "not set on failure");
    }
    int64_t ms = 0;
    cr_assert_eq(cms_config_duration_parse(NULL, &ms), CMS_CONFIG_DURATION_ESYNTAX);
}

Test(config, bad_duration_flags_and_variables_are_usage_errors)
{
    capture cap;
    const char *err = usage_error(&cap, 2, ARGV("--drain-timeout=10"));
    cr_assert_str_eq(err,
                     "cms-test: --drain-timeout (from flag): '10' needs a unit: ms, s, m, h or "
                     "d; try --help\n");
    err = usage_error(&cap, 2, ARGV("--batch-age=1.5s"));
    cr_assert(strstr(err, "'1.5s' is not a duration: want a whole number and one unit") != NULL,
              "%s", err);
    err = usage_error(&cap, 3, ARGV("--ttl", "3w"));
    cr_assert(strstr(err, "--ttl (from flag): '3w' has an unknown unit") != NULL, "%s", err);
    setenv("CMS_BATCH_AGE", "30", 1);
    err = usage_error(&cap, 1, ARGV(NULL));
    cr_assert_str_eq(err, "cms-test: --batch-age (from CMS_BATCH_AGE): '30' needs a unit: ms, s, "
                          "m, h or d; try --help\n");
}

Test(config, durations_are_written_in_their_largest_whole_unit)
{
    char b[32];
    cr_assert_str_eq(cms_config_duration_format(0, b, sizeof b), "0");
    cr_assert_str_eq(cms_config_duration_format(1, b, sizeof b), "1ms");
    cr_assert_str_eq(cms_config_duration_format(1500, b, sizeof b), "1500ms");
    cr_assert_str_eq(cms_config_duration_format(30000, b, sizeof b), "30s");
    cr_assert_str_eq(cms_config_duration_format(600000, b, sizeof b), "10m");
    cr_assert_str_eq(cms_config_duration_format(36 * 3600000, b, sizeof b), "36h");
    cr_assert_str_eq(cms_config_duration_format(INT64_C(90) * 86400000, b, sizeof b), "90d");
    /* and read back the same */
    int64_t ms = 0;
    cr_assert_eq(cms_config_duration_parse(cms_config_duration_format(5400000, b, sizeof b), &ms),
                 CMS_CONFIG_DURATION_OK);
    cr_assert_eq(ms, 5400000);
}

/* ---- redaction ---- */

static void assert_redacted(const char *in, const char *want)
{
    char out[512];
    cr_assert(cms_config_redact(in, out, sizeof out), "%s", in);
    cr_assert_str_eq(out, want, "from %s", in);
}

Test(config, conninfo_loses_only_its_password)
{
    /* no password: as written, order and spacing kept */
    assert_redacted("host=127.0.0.1 dbname=cms", "host=127.0.0.1 dbname=cms");
    assert_redacted("  dbname = cms   host=/run/pg ", "  dbname = cms   host=/run/pg ");
    assert_redacted("", "");
    /* with one: everything else kept, re-quoted where libpq needs it */
    char out[512];
    cr_assert(cms_config_redact("host=db dbname=cms user=cms password=sekrit port=5433", out,
                                sizeof out));
    cr_assert(strstr(out, "sekrit") == NULL, "%s", out);
    cr_assert(strstr(out, "password=[redacted]") != NULL, "%s", out);
    for (const char *const *k =
             (const char *const[]){"host=db", "dbname=cms", "user=cms", "port=5433", NULL};
         *k != NULL; k++)
        cr_assert(strstr(out, *k) != NULL, "%s lost: %s", *k, out);
    cr_assert(cms_config_redact("password='it\\'s a \\\\ secret' application_name='my app'", out,
                                sizeof out));
    cr_assert(strstr(out, "secret") == NULL, "%s", out);
    cr_assert(strstr(out, "application_name='my app'") != NULL, "%s", out);
    /* a connection string inside dbname is redacted too */
    cr_assert(cms_config_redact("dbname='host=h password=inner'", out, sizeof out));
    cr_assert(strstr(out, "inner") == NULL, "%s", out);
    cr_assert(strstr(out, "host=h") != NULL, "%s", out);
}

Test(config, urls_lose_their_passwords_and_tokens)
{
    assert_redacted("nats://127.0.0.1:4222", "nats://127.0.0.1:4222");
    assert_redacted("nats://u:pw@h:4222", "nats://u:[redacted]@h:4222");
    assert_redacted("nats://s3cr3t-token@h:4222", "nats://[redacted]@h:4222");
    assert_redacted("nats://a:1,tls://u:pw@b:2,nats://tok@c:3",
                    "nats://a:1,tls://u:[redacted]@b:2,nats://[redacted]@c:3");
    assert_redacted("postgresql://cms:pw@db:5432/cms?sslmode=require",
                    "postgresql://cms:[redacted]@db:5432/cms?sslmode=require");
    assert_redacted("postgres://cms@db/cms", "postgres://cms@db/cms");
    assert_redacted("postgresql://db/cms?user=cms&password=pw&sslmode=require",
                    "postgresql://db/cms?user=cms&password=[redacted]&sslmode=require");
    assert_redacted("postgresql://u:pw@h1:5432,h2:5433/cms",
                    "postgresql://u:[redacted]@h1:5432,h2:5433/cms");
    /* a password holding '/' or '@' is still covered */
    char out[512];
    cr_assert(cms_config_redact("nats://u:p/a@ss@h:4222", out, sizeof out));
    cr_assert(strstr(out, "p/a") == NULL && strstr(out, "ss@h") == NULL, "%s", out);
}

Test(config, what_cannot_be_read_is_not_shown)
{
    char out[64];
    cr_assert_not(cms_config_redact("host='unterminated password=sekrit", out, sizeof out));
    cr_assert_str_eq(out, "[redacted]");
    cr_assert_not(cms_config_redact("u:pw@host:4222", out, sizeof out));
    cr_assert_str_eq(out, "[redacted]");
    char tiny[12];
    cr_assert_not(cms_config_redact("nats://u:pw@a-long-host-name:4222", tiny, sizeof tiny));
    cr_assert_str_eq(tiny, "[redacted]");
    cr_assert_not(cms_config_redact(NULL, out, sizeof out));
}

Test(config, wrong_lookups_are_harmless)
{
    cms_config *c = NULL;
    cr_assert_eq(parse(1, ARGV(NULL), &c), CMS_CONFIG_OK);
    FILE *f = tmpfile();
    cms_log_init("test", CMS_LOG_INFO, f); /* keep the error lines out of the test output */
    cr_assert_null(cms_config_str(c, "no-such"));
    cr_assert_null(cms_config_str(c, "batch-max"), "an int read as a string");
    cr_assert_eq(cms_config_int(c, "nats-url"), 0);
    cr_assert_eq(cms_config_bool(c, "no-such"), false);
    cms_log_init("test", CMS_LOG_INFO, NULL);
    fclose(f);
    cms_config_destroy(c);
    cms_config_destroy(NULL);
}
