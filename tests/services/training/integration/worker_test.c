/* cms-training with real cms-worker processes, against the real PostgreSQL
 * and NATS: a job trained by DP-SGD on the shipped dataset to completion,
 * its model clearly better than a constant predictor; a cancel honoured
 * within a step; a worker killed with kill -9 detected, its job requeued
 * with its spent budget kept, then failed after the last attempt. */
#include "trfx.h"

#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OK 0
/* tests/data/synthetic.csv */
#define ROWS 2000

static trfx T;
static ctparty P, Q, W1, W2;
static char K[37];

static void setup(void)
{
    trfx_setup(&T, "training_worker", NULL);
    ctfx_party(&T.c, "provider-co", &P);
    ctfx_party(&T.c, "consumer-co", &Q);
    trfx_worker_identity(&T, "worker-1", &W1);
    trfx_worker_identity(&T, "worker-2", &W2);
    trfx_contract(&T, &P, &Q, NULL, K);
}

static void teardown(void)
{
    trfx_teardown(&T);
}

TestSuite(worker, .init = setup, .fini = teardown, .timeout = 180);

static char *job_sql(const char *what, const char *id)
{
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT %s FROM training_jobs WHERE id = '%s'", what, id);
    return trfx_sql(&T, sql);
}

static void within_budget(const char *id)
{
    char *v = job_sql("coalesce(privacy_budget_spent, 0) <= privacy_budget", id);
    cr_assert_str_eq(v, "t", "spent within the budget");
    free(v);
}

/* the share of the majority label of the shipped dataset: a constant
 * predictor's accuracy */
static double constant_accuracy(void)
{
    FILE *f = fopen(CMS_SOURCE_DIR "/tests/data/synthetic.csv", "r");
    cr_assert_not_null(f);
    char line[4096];
    long ones = 0, all = 0;
    cr_assert_not_null(fgets(line, sizeof line, f), "a header");
    while (fgets(line, sizeof line, f)) {
        char *comma = strrchr(line, ',');
        cr_assert_not_null(comma);
        ones += atoi(comma + 1) == 1;
        all++;
    }
    fclose(f);
    cr_assert_eq(all, ROWS);
    double p = (double)ones / (double)all;
    return p > 0.5 ? p : 1 - p;
}

Test(worker, trains_a_job_to_completion_better_than_a_constant)
{
    trfx_start_worker(&T, 0, &W1, NULL);
    Cms__V1__TrainingJob *j = NULL;
    cr_assert_eq(trfx_submit(&T, &Q, K, trfx_config(ROWS, 100, 10, 3.0, 0), 3.0, &j), OK, "%s",
                 T.msg);
    trfx_wait_status(&T, j->id, "completed", 60000);
    Cms__V1__TrainingJob *g = trfx_get(&T, &Q, j->id);
    cr_assert_eq(g->steps_done, 200, "10 epochs of 20 batches");
    cr_assert_leq(g->privacy_budget_spent, g->privacy_budget);
    cr_assert_gt(g->privacy_budget_spent, 0);
    json_t *m = json_loads(g->metrics_json, 0, NULL);
    cr_assert_not_null(m, "%s", g->metrics_json);
    double acc = json_number_value(json_object_get(m, "accuracy")), base = constant_accuracy();
    cr_log_info("accuracy %.3f against a constant's %.3f", acc, base);
    cr_assert_geq(acc, base + 0.15, "accuracy %.3f, a constant predictor's %.3f", acc, base);
    json_decref(m);
    ctfx_wait_events(&T.c, "training_job.completed", j->id, 1, 10000);
    cms__v1__training_job__free_unpacked(j, NULL);
    cms__v1__training_job__free_unpacked(g, NULL);
}

/* a job long enough to be caught running: many epochs */
static Cms__V1__TrainingJob *long_job(void)
{
    Cms__V1__TrainingJob *j = NULL;
    cr_assert_eq(trfx_submit(&T, &Q, K, trfx_config(ROWS, 100, 50000, 8.0, 0), 8.0, &j), OK, "%s",
                 T.msg);
    return j;
}

/* waits until the job runs attempt and has steps_done > min */
static void wait_running_past(const char *id, int attempt, long min)
{
    char sql[256], want[8];
    snprintf(sql, sizeof sql,
             "SELECT (status = 'running' AND attempt = %d AND steps_done > %ld)::text "
             "FROM training_jobs WHERE id = '%s'",
             attempt, min, id);
    snprintf(want, sizeof want, "true");
    char *v = svcfx_wait_sql(&T.c.f, "training_jobs", sql, want, 60000);
    cr_assert_str_eq(v, "true", "job %s runs attempt %d past %ld steps", id, attempt, min);
    free(v);
}

Test(worker, a_cancel_is_honoured_within_a_step)
{
    trfx_start_worker(&T, 0, &W1, NULL);
    Cms__V1__TrainingJob *j = long_job();
    wait_running_past(j->id, 1, 0);
    Cms__V1__CancelJob c = CMS__V1__CANCEL_JOB__INIT;
    c.id = j->id;
    c.reason = (char *)"enough";
    cr_assert_eq(trfx_call(&T, &Q, "cancel", &c.base, NULL, NULL), OK, "%s", T.msg);
    /* stopped by the worker's own report, well before the stop timeout */
    trfx_wait_status(&T, j->id, "stopped", 1900);
    char *v = job_sql("stop_reason", j->id);
    cr_assert_str_eq(v, "cancelled: enough");
    free(v);
    within_budget(j->id);
    cms__v1__training_job__free_unpacked(j, NULL);
}

Test(worker, a_killed_worker_is_detected_requeued_with_its_budget_then_failed)
{
    trfx_start_worker(&T, 0, &W1, NULL);
    Cms__V1__TrainingJob *j = long_job();
    wait_running_past(j->id, 1, 0);
    trfx_kill9_worker(&T, 0);
    /* after the 3 s worker timeout: attempt 2, the steps run kept */
    ctfx_wait_events(&T.c, "training_job.requeued", j->id, 1, 20000);
    char *steps = job_sql("steps_before", j->id), *spent = job_sql("privacy_budget_spent", j->id);
    cr_assert_gt(atol(steps), 0, "steps of attempt 1 kept: %s", steps);
    cr_assert_gt(strtod(spent, NULL), 0, "and their budget spent: %s", spent);
    trfx_start_worker(&T, 1, &W2, NULL);
    wait_running_past(j->id, 2, atol(steps));
    char *worker = job_sql("worker_id", j->id);
    cr_assert_str_eq(worker, W2.id, "the second worker took it");
    free(worker);
    trfx_kill9_worker(&T, 1);
    /* the last attempt lost: failed, everything spent kept */
    trfx_wait_status(&T, j->id, "failed", 20000);
    char *failure = job_sql("failure", j->id), *after = job_sql("privacy_budget_spent", j->id);
    cr_assert_not_null(strstr(failure, "worker_lost"), "%s", failure);
    cr_assert_geq(strtod(after, NULL), strtod(spent, NULL), "never reset");
    within_budget(j->id);
    free(steps);
    free(spent);
    free(failure);
    free(after);
    cms__v1__training_job__free_unpacked(j, NULL);
}
