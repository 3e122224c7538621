/* config: env -> flags precedence, positionals, validation and its messages,
 * --help/--version, redaction of secrets. Each Criterion test runs in its own
 * process, so setenv does not leak between tests. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "log.h"

static const cms_option opts[] = {
    CMS_OPTIONS_COMMON,
    {"batch-max", "CMS_BATCH_MAX", CMS_OPT_INT, "256", "events per insert", false, false},
    {"dry-run", "CMS_DRY_RUN", CMS_OPT_BOOL, "false", "change nothing", false, false},
    {"api-key", "CMS_API_KEY", CMS_OPT_STRING, NULL, "key for the admin API", true, false},
    {"pin", "CMS_PIN", CMS_OPT_INT, NULL, "secret number", true, false},
    {"name", NULL, CMS_OPT_STRING, NULL, "flag-only, no default", false, false},
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
    cr_assert_eq(cms_config_int(c, "drain-timeout-ms"), 10000);
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
        {"token-file", "CMS_TOKEN_FILE", CMS_OPT_STRING, NULL, "where the token is", false, true},
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
    cr_assert(strstr(out, "default: 10000") != NULL);
    cr_assert(strstr(out, "default: nats://127.0.0.1:4222") != NULL);
    cr_assert(strstr(out, "(secret)") != NULL);
    cr_assert(strstr(out, "dbname=cms") == NULL, "a secret's default is not shown");
    cr_assert(strstr(out, "sekrit") == NULL);

    capture_begin(&cap, 1);
    r = parse(2, ARGV("-h"), &c);
    capture_end(&cap);
    cr_assert_eq(r, CMS_CONFIG_EXIT_OK);
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

Test(config, log_line_redacts_secrets)
{
    setenv("CMS_DATABASE_URL", "host=db password=sekrit", 1);
    setenv("CMS_API_KEY", "k-123456", 1);
    cms_config *c = NULL;
    cr_assert_eq(parse(2, ARGV("--batch-max=42"), &c), CMS_CONFIG_OK);
    cr_assert_str_eq(cms_config_str(c, "database-url"), "host=db password=sekrit");
    FILE *f = tmpfile();
    cms_log_init("test", CMS_LOG_INFO, f);
    cms_config_log(c);
    cms_log_init("test", CMS_LOG_INFO, NULL);
    rewind(f);
    char line[4096] = "";
    cr_assert_not_null(fgets(line, sizeof line, f));
    cr_assert(fgetc(f) == EOF, "exactly one line");
    fclose(f);
    cr_assert(strstr(line, "sekrit") == NULL, "%s", line);
    cr_assert(strstr(line, "k-123456") == NULL, "%s", line);
    cr_assert(strstr(line, "\"database-url\":\"[redacted]\"") != NULL, "%s", line);
    cr_assert(strstr(line, "\"batch-max\":42") != NULL, "%s", line);
    cr_assert(strstr(line, "\"dry-run\":false") != NULL, "%s", line);
    cr_assert(strstr(line, "\"name\":null") != NULL, "%s", line);
    cr_assert(strstr(line, "\"nats-url\":\"nats://127.0.0.1:4222\"") != NULL, "%s", line);
    cms_config_destroy(c);
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
