/* cmsctl job and cmsctl contract budget, run as a program against a real
 * cms-identity, cms-contracts, cms-training and a cms-worker
 * (tests/services/training/lib/trfx) on the throwaway PostgreSQL and
 * nats-server: a job submitted from a config file by the contract's
 * consumer, watched until it completes (exit 0), listed, its metrics and
 * its contract's ledger shown; a refusal printed with its code and field
 * (exit 1); a cancel of an ended job refused. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testenv.h"
#include "testproc.h"
#include "trfx.h"

#define WATCHDOG_MS 90000
#define RUN(...) cms_test_run_bin(g_bin, (const char *const[]){__VA_ARGS__, NULL}, WATCHDOG_MS)
#define assert_exit CMS_TEST_ASSERT_EXIT

static char g_bin[1024], g_dir[256], g_config[512];
static trfx T;
static ctparty P, Q, W;
static char K[37];

static char *line_value(const char *text, const char *name)
{
    size_t n = strlen(name);
    for (const char *l = text; l != NULL && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
        if (strncmp(l, name, n) == 0 && l[n] == ':' && l[n + 1] == ' ') {
            const char *v = l + n + 2;
            return strndup(v, strcspn(v, "\n"));
        }
    return NULL;
}

static void setup(void)
{
    trfx_setup(&T, "cmsctl_job", NULL);
    snprintf(g_bin, sizeof g_bin, "%s/cmsctl", cms_test_env("CMS_TEST_BIN_DIR"));
    cr_assert_eq(access(g_bin, X_OK), 0, "%s is not there: build the cmsctl target", g_bin);
    cr_assert_eq(setenv("CMS_NATS_URL", cms_test_env("CMS_TEST_NATS_URL"), 1), 0);
    cr_assert_eq(setenv("CMS_COMMAND_PREFIX", T.c.f.prefix, 1), 0);
    unsetenv("CMS_CREDENTIALS_FILE");
    snprintf(g_dir, sizeof g_dir, "/tmp/cmsctl-job-XXXXXX");
    cr_assert_not_null(mkdtemp(g_dir));
    snprintf(g_config, sizeof g_config, "%s/job.json", g_dir);
    FILE *f = fopen(g_config, "w");
    cr_assert_not_null(f);
    fputs(trfx_config(2000, 100, 5, 2.0, 0), f);
    fclose(f);
    ctfx_party(&T.c, "hospital", &P);
    ctfx_party(&T.c, "lab", &Q);
    trfx_worker_identity(&T, "worker-1", &W);
    trfx_contract(&T, &P, &Q, "\"privacy\":{\"max_epsilon\":8}", K);
    trfx_start_worker(&T, 0, &W, NULL);
}

static void teardown(void)
{
    unlink(g_config);
    rmdir(g_dir);
    trfx_teardown(&T);
}

TestSuite(cmsctl_job, .init = setup, .fini = teardown, .timeout = 180);

static void as(const ctparty *p)
{
    cr_assert_eq(setenv("CMS_API_KEY", p->key, 1), 0);
}

Test(cmsctl_job, submit_watch_list_metrics_and_the_ledger)
{
    as(&Q);
    cms_test_proc *p = RUN("job", "submit", "--contract", K, "--config", g_config, "--budget", "3");
    assert_exit(p, 0);
    char *id = line_value(p->out, "id"), *planned = line_value(p->out, "planned_steps");
    cr_assert_not_null(id, "%s", p->out);
    cr_assert_str_eq(planned, "100", "%s", p->out);
    char *sigma = line_value(p->out, "noise_multiplier");
    cr_assert_gt(strtod(sigma, NULL), 0, "%s", p->out);
    cms_test_proc_free(p);

    p = RUN("job", "watch", id, "--interval", "200ms");
    assert_exit(p, 0);
    cr_assert_not_null(strstr(p->out, "completed"), "%s", p->out);
    cr_assert_not_null(strstr(p->out, "100/100"), "%s", p->out);
    cms_test_proc_free(p);

    p = RUN("job", "list", "--contract", K, "-o", "json");
    assert_exit(p, 0);
    json_t *list = json_loads(p->out, 0, NULL);
    cr_assert(json_is_array(list), "%s", p->out);
    cr_assert_eq(json_array_size(list), 1);
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(list, 0), "id")), id);
    json_decref(list);
    cms_test_proc_free(p);

    p = RUN("job", "metrics", id);
    assert_exit(p, 0);
    char *steps = line_value(p->out, "steps_done");
    cr_assert_str_eq(steps, "100", "%s", p->out);
    cr_assert_not_null(strstr(p->out, "EPSILON"), "the spent budget over time:\n%s", p->out);
    cms_test_proc_free(p);

    as(&P); /* the provider sees the ledger */
    p = RUN("contract", "budget", K);
    assert_exit(p, 0);
    char *jobs = line_value(p->out, "jobs"), *max = line_value(p->out, "max_epsilon"),
         *reserved = line_value(p->out, "reserved_epsilon");
    cr_assert_str_eq(jobs, "1", "%s", p->out);
    cr_assert_str_eq(max, "8", "%s", p->out);
    cr_assert_gt(strtod(reserved, NULL), 0, "%s", p->out);
    cr_assert_leq(strtod(reserved, NULL), 2.0 + 1e-9, "settled to what ran:\n%s", p->out);
    cms_test_proc_free(p);

    as(&Q);
    p = RUN("job", "cancel", id);
    assert_exit(p, 1);
    cr_assert_not_null(strstr(p->err, "FAILED_PRECONDITION"), "%s", p->err);
    cr_assert_not_null(strstr(p->err, "completed"), "%s", p->err);
    cms_test_proc_free(p);
    free(id);
    free(planned);
    free(sigma);
    free(steps);
    free(jobs);
    free(max);
    free(reserved);
}

Test(cmsctl_job, a_refusal_names_its_code_and_field)
{
    as(&Q);
    cms_test_proc *p = RUN("job", "submit", "--contract", K, "--config", g_config, "--budget", "1");
    assert_exit(p, 1);
    cr_assert_not_null(strstr(p->err, "INVALID_ARGUMENT (privacy_budget)"), "%s", p->err);
    cr_assert_not_null(strstr(p->err, "less than the config's privacy.epsilon 2"), "%s", p->err);
    cms_test_proc_free(p);
    as(&P); /* the provider is no consumer */
    p = RUN("job", "submit", "--contract", K, "--config", g_config, "--budget", "3");
    assert_exit(p, 1);
    cr_assert_not_null(strstr(p->err, "PERMISSION_DENIED"), "%s", p->err);
    cms_test_proc_free(p);
}
