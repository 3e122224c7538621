/* cmsctl job and cmsctl contract budget run as a program, with no server:
 * the verb and each sub-verb answer --help (exit 0) and are listed where
 * they belong; what cmsctl must understand itself (ids, the budget, the
 * config file, intervals, limits, the output format) is a usage error (exit
 * 2) that names what is wrong and is found before anything is sent; and a
 * well-formed command does reach for NATS (here, a port where nothing
 * listens: exit 1), so the checks are not merely refusing everything. Each
 * command against cms-training itself is the integration tests' part.
 *
 * The children see no CMS_ variable but those set here, an API key and a
 * HOME of their own. The binary is the build's own (CMSCTL_BIN, set by
 * tests/CMakeLists.txt), so this runs under plain ctest as well as under
 * tests/run. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testproc.h"

#define WATCHDOG_MS 30000

#define ID "0190aa00-0000-7000-8000-0000000000a1"
#define CLOSED_NATS "nats://127.0.0.1:1"
#define KEY "cms_0190aa00000070008000000000000001_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789-_abcde"

extern char **environ;

static char g_dir[64]; /* HOME, and the config files */

/* `cmsctl args...`, run to its end. */
#define RUN(...) cms_test_run_bin(CMSCTL_BIN, (const char *const[]){__VA_ARGS__, NULL}, WATCHDOG_MS)
#define assert_exit CMS_TEST_ASSERT_EXIT

static void path_of(const char *name, char out[128])
{
    snprintf(out, 128, "%s/%s", g_dir, name);
}

static void write_file(const char *name, const char *text)
{
    char path[128];
    path_of(name, path);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f, "%s", path);
    cr_assert_geq(fputs(text, f), 0);
    cr_assert_eq(fclose(f), 0);
}

static const char *const g_files[] = {"config.json", "array.json", "broken.json",
                                      "nul.json",    "huge.json",  "deep.json"};

static void setup(void)
{
    char *names[256];
    size_t n = 0;
    for (char **e = environ; *e != NULL && n < 256; e++) {
        if (strncmp(*e, "CMS_", 4) == 0 && strncmp(*e, "CMS_TEST_", 9) != 0)
            names[n++] = strndup(*e, strcspn(*e, "="));
    }
    for (size_t i = 0; i < n; i++) {
        unsetenv(names[i]);
        free(names[i]);
    }
    snprintf(g_dir, sizeof g_dir, "/tmp/cmsctl-job-XXXXXX");
    cr_assert_not_null(mkdtemp(g_dir));
    cr_assert_eq(setenv("HOME", g_dir, 1), 0);
    cr_assert_eq(setenv("CMS_NATS_URL", CLOSED_NATS, 1), 0);
    cr_assert_eq(setenv("CMS_API_KEY", KEY, 1), 0);
    write_file("config.json",
               "{\"model\":{\"architecture\":\"logistic_regression\"},"
               "\"privacy\":{\"epsilon\":1,\"delta\":1e-5,\"noise_mechanism\":\"gaussian\"},"
               "\"training\":{\"batch_size\":64,\"epochs\":2,\"learning_rate\":0.5,"
               "\"dataset\":\"synthetic\",\"dataset_size\":6400,\"max_grad_norm\":1.0}}");
    write_file("array.json", "[1, 2]");
    write_file("broken.json", "{\"model\": ");
    /* a valid object, then a NUL and more: cut there, it would pass */
    char path[128];
    path_of("nul.json", path);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    static const char nul[] = "{\"a\": 1}\0{\"hidden\": 2}";
    cr_assert_eq(fwrite(nul, 1, sizeof nul - 1, f), sizeof nul - 1);
    cr_assert_eq(fclose(f), 0);
    /* one byte over the 64 KiB cms-training takes */
    char *huge = malloc(65537 + 1);
    cr_assert_not_null(huge);
    memset(huge, ' ', 65537);
    huge[0] = '{';
    huge[65536] = '}';
    huge[65537] = '\0';
    write_file("huge.json", huge);
    free(huge);
    /* nested past what jansson (and the services) take */
    char deep[6000 + 16]; /* jansson's limit is 2048 levels */
    memcpy(deep, "{\"d\":", 5);
    memset(deep + 5, '[', 3000);
    memset(deep + 3005, ']', 3000);
    memcpy(deep + 6005, "}", 2);
    write_file("deep.json", deep);
}

static void teardown(void)
{
    char path[128];
    for (size_t i = 0; i < sizeof g_files / sizeof g_files[0]; i++) {
        path_of(g_files[i], path);
        unlink(path);
    }
    rmdir(g_dir);
}

TestSuite(job, .init = setup, .fini = teardown, .timeout = 120);

/* p is a usage error whose message has want. */
static void assert_usage(cms_test_proc *p, const char *want)
{
    assert_exit(p, 2);
    cr_assert_not_null(strstr(p->err, want), "want \"%s\" in:\n%s", want, p->err);
    cr_assert_null(strstr(p->err, "NATS"), "a usage error reached for NATS:\n%s", p->err);
    cr_assert_str_eq(p->out, "", "%s", p->out);
    cms_test_proc_free(p);
}

/* ------------------------------------------------------------------------ */
/* help */

Test(job, the_verb_and_each_sub_verb_answer_help)
{
    const char *const subs[] = {"submit", "cancel", "get", "list", "metrics", "watch"};
    cms_test_proc *p = RUN("job", "--help");
    assert_exit(p, 0);
    cr_assert_not_null(strstr(p->out, "usage: cmsctl job"), "%s", p->out);
    for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++) {
        char line[64];
        snprintf(line, sizeof line, "cmsctl job %s ", subs[i]);
        cr_assert_not_null(strstr(p->out, line), "job --help lacks %s:\n%s", subs[i], p->out);
    }
    cr_assert_not_null(strstr(p->out, "cmsctl contract budget"), "%s", p->out);
    cms_test_proc_free(p);
    for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++) {
        char usage[64];
        snprintf(usage, sizeof usage, "usage: cmsctl job %s ", subs[i]);
        p = RUN("job", subs[i], "--help");
        assert_exit(p, 0);
        cr_assert_not_null(strstr(p->out, usage), "%s", p->out);
        cr_assert_not_null(strstr(p->out, "--timeout"), "%s", p->out);
        cms_test_proc_free(p);
    }
    p = RUN("job", "help");
    assert_exit(p, 0);
    cms_test_proc_free(p);
    p = RUN("contract", "budget", "--help");
    assert_exit(p, 0);
    cr_assert_not_null(strstr(p->out, "usage: cmsctl contract budget "), "%s", p->out);
    cr_assert_not_null(strstr(p->out, "max_epsilon"), "%s", p->out);
    cms_test_proc_free(p);
}

Test(job, the_verbs_are_listed_where_they_belong)
{
    cms_test_proc *p = RUN("--help");
    assert_exit(p, 0);
    cr_assert_not_null(strstr(p->out, "\n  job "), "%s", p->out);
    cms_test_proc_free(p);
    p = RUN("contract", "--help");
    assert_exit(p, 0);
    cr_assert_not_null(strstr(p->out, "cmsctl contract budget ID"), "%s", p->out);
    cms_test_proc_free(p);
    /* a shared option before the verb is passed on to the sub-verb */
    p = RUN("-o", "json", "job", "get", "--help");
    assert_exit(p, 0);
    cms_test_proc_free(p);
}

Test(job, a_missing_or_unknown_sub_verb_is_a_usage_error)
{
    cms_test_proc *p = RUN("job");
    assert_exit(p, 2);
    cr_assert_not_null(strstr(p->err, "a sub-verb is needed"), "%s", p->err);
    cr_assert_not_null(strstr(p->err, "usage: cmsctl job"), "the help goes to stderr:\n%s", p->err);
    cms_test_proc_free(p);
    p = RUN("job", "frobnicate");
    assert_exit(p, 2);
    cr_assert_not_null(strstr(p->err, "unknown sub-verb \"frobnicate\""), "%s", p->err);
    cms_test_proc_free(p);
    assert_usage(RUN("contract", "frobnicate"), "budget");
}

/* ------------------------------------------------------------------------ */
/* usage errors, before anything is sent */

Test(job, ids_are_checked_first)
{
    const char *const subs[] = {"cancel", "get", "metrics", "watch"};
    for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++) {
        assert_usage(RUN("job", subs[i]), "the job's ID is needed");
        assert_usage(RUN("job", subs[i], "not-a-uuid"),
                     "ID \"not-a-uuid\" is not a UUID: copy it from cmsctl job list");
        assert_usage(RUN("job", subs[i], ID, "extra"), "unexpected argument \"extra\"");
    }
    assert_usage(RUN("contract", "budget"), "the contract's ID is needed");
    assert_usage(RUN("contract", "budget", "acme"), "ID \"acme\" is not a UUID");
    assert_usage(RUN("contract", "budget", ID, ID), "unexpected argument");
    assert_usage(RUN("job", "list", "--contract", "acme"), "--contract \"acme\" is not a UUID");
    assert_usage(RUN("job", "list", "extra"), "unexpected argument \"extra\"");
}

Test(job, submit_checks_its_contract_budget_and_config)
{
    char config[128], array[128], broken[128];
    path_of("config.json", config);
    path_of("array.json", array);
    path_of("broken.json", broken);
    assert_usage(RUN("job", "submit", "--config", config, "--budget", "1"),
                 "missing required --contract");
    assert_usage(RUN("job", "submit", "--contract", ID, "--budget", "1"),
                 "missing required --config");
    assert_usage(RUN("job", "submit", "--contract", ID, "--config", config),
                 "missing required --budget");
    assert_usage(RUN("job", "submit", "--contract", "acme", "--config", config, "--budget", "1"),
                 "--contract \"acme\" is not a UUID");
    const char *const budgets[] = {"abc", "0", "-1", "inf", "nan", "1e999", "1x", ""};
    for (size_t i = 0; i < sizeof budgets / sizeof budgets[0]; i++)
        assert_usage(
            RUN("job", "submit", "--contract", ID, "--config", config, "--budget", budgets[i]),
            "--budget must be an epsilon, a finite number > 0");
    assert_usage(RUN("job", "submit", "--contract", ID, "--config", array, "--budget", "1"),
                 "must hold a JSON object");
    assert_usage(RUN("job", "submit", "--contract", ID, "--config", broken, "--budget", "1"),
                 "is not JSON");
    assert_usage(RUN("job", "submit", "--contract", ID, "--config", config, "--budget", "1", "x"),
                 "unexpected argument \"x\"");
    /* a NUL inside the file is refused, never sent cut short */
    char nul[128], huge[128], deep[128];
    path_of("nul.json", nul);
    path_of("huge.json", huge);
    path_of("deep.json", deep);
    assert_usage(RUN("job", "submit", "--contract", ID, "--config", nul, "--budget", "1"),
                 "holds a NUL byte (at byte 8)");
    assert_usage(RUN("job", "submit", "--contract", ID, "--config", deep, "--budget", "1"),
                 "is not JSON");
    cms_test_proc *big = RUN("job", "submit", "--contract", ID, "--config", huge, "--budget", "1");
    assert_exit(big, 1);
    cr_assert_not_null(strstr(big->err, "bigger than 65536 bytes"), "%s", big->err);
    cr_assert_null(strstr(big->err, "NATS"), "refused before NATS:\n%s", big->err);
    cms_test_proc_free(big);
    /* a file that cannot be read is a failure, not a usage error */
    cms_test_proc *p =
        RUN("job", "submit", "--contract", ID, "--config", "/nonexistent/c.json", "--budget", "1");
    assert_exit(p, 1);
    cr_assert_not_null(strstr(p->err, "--config /nonexistent/c.json"), "%s", p->err);
    cms_test_proc_free(p);
}

Test(job, limits_intervals_and_formats_are_checked_first)
{
    assert_usage(RUN("job", "list", "--limit", "0"), "--limit 0 is out of range");
    assert_usage(RUN("job", "list", "--limit", "1001"), "--limit 1001 is out of range");
    assert_usage(RUN("job", "watch", ID, "--interval", "10ms"), "--interval 10ms is out of range");
    assert_usage(RUN("job", "watch", ID, "--interval", "11m"), "--interval 11m is out of range");
    assert_usage(RUN("job", "watch", ID, "--interval", "soon"), "--interval");
    assert_usage(RUN("job", "get", ID, "-o", "yaml"), "-o \"yaml\" is not an output format");
    assert_usage(RUN("job", "metrics", ID, "--json", "-o", "ndjson"), "--json is -o json");
    assert_usage(RUN("job", "get", ID, "--no-such-option"), "no-such-option");
}

/* ------------------------------------------------------------------------ */
/* well-formed commands are sent */

Test(job, well_formed_commands_reach_for_nats)
{
    char config[128];
    path_of("config.json", config);
    const char *const *cmds[] = {
        (const char *const[]){"job", "submit", "--contract", ID, "--config", config, "--budget",
                              "1.5", "--model", "m", NULL},
        (const char *const[]){"job", "cancel", ID, "--reason", "enough", NULL},
        (const char *const[]){"job", "get", ID, NULL},
        (const char *const[]){"job", "list", "--contract", ID, "--status", "running", "--all",
                              NULL},
        (const char *const[]){"job", "metrics", ID, "-o", "json", NULL},
        (const char *const[]){"job", "watch", ID, "--interval", "100ms", NULL},
        (const char *const[]){"contract", "budget", ID, NULL},
    };
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        const char *args[16];
        size_t n = 0;
        for (; cmds[i][n] != NULL; n++)
            args[n] = cmds[i][n];
        args[n++] = "--timeout";
        args[n++] = "2s";
        args[n] = NULL;
        cms_test_proc *p = cms_test_run_bin(CMSCTL_BIN, args, WATCHDOG_MS);
        assert_exit(p, 1);
        cr_assert_not_null(strstr(p->err, "cannot connect to NATS at " CLOSED_NATS), "%s %s:\n%s",
                           cmds[i][0], cmds[i][1], p->err);
        cr_assert_str_eq(p->out, "", "%s", p->out);
        cms_test_proc_free(p);
    }
}

Test(job, without_an_api_key_nothing_is_sent)
{
    cr_assert_eq(unsetenv("CMS_API_KEY"), 0);
    cms_test_proc *p = RUN("job", "get", ID);
    assert_exit(p, 2);
    cr_assert_not_null(strstr(p->err, "no API key"), "%s", p->err);
    cr_assert_null(strstr(p->err, "cannot connect"), "%s", p->err);
    cms_test_proc_free(p);
}
