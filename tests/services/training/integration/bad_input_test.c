/* cms-training's doors against bad input: every command subject (the
 * workers' report too) refuses bytes that are not its request with
 * INVALID_ARGUMENT naming what is wrong; a job config nested deeper than
 * JSON may be, numbers PostgreSQL's jsonb refuses and a NUL in JSON text
 * are refused naming the config; SQL metacharacters in the model name,
 * the config and a cancel's reason are stored and read back unchanged; a
 * request_id replayed with another body gets the first reply and submits
 * nothing; and the probes answer through hundreds of idle and slow HTTP
 * connections. */
#include "cms/v1/command.pb-c.h"
#include "doorfx.h"
#include "testenv.h"
#include "trfx.h"

#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OK 0
#define INVALID CMS__V1__ERROR_CODE__INVALID_ARGUMENT

static trfx T;
static ctparty P, Q; /* provider, consumer */
static char K[37];   /* an active contract between them, without a ledger */

static void setup(void)
{
    trfx_setup(&T, "training_bad", NULL);
    ctfx_party(&T.c, "provider-bad", &P);
    ctfx_party(&T.c, "consumer-bad", &Q);
    trfx_contract(&T, &P, &Q, NULL, K);
}

static void teardown(void)
{
    trfx_teardown(&T);
}

TestSuite(bad_input, .init = setup, .fini = teardown, .timeout = 120);

static const doorfx_verb VERBS[] = {
    {"submit", &cms__v1__submit_job__descriptor},
    {"cancel", &cms__v1__cancel_job__descriptor},
    {"get", &cms__v1__job_ref__descriptor},
    {"list", &cms__v1__list_jobs__descriptor},
    {"metrics", &cms__v1__job_ref__descriptor},
    {"budget", &cms__v1__contract_budget_ref__descriptor},
    {"report", &cms__v1__worker_report__descriptor},
    {NULL, NULL},
};

static char *jobs_count(void)
{
    return trfx_sql(&T, "SELECT count(*) FROM training_jobs");
}

/* A valid config with extra top-level members (unknown keys are kept). */
static char *config_with(const char *extra)
{
    const char *base = trfx_config(2000, 100, 1, 1.0, 0);
    size_t blen = strlen(base), elen = strlen(extra);
    char *c = malloc(blen + elen + 2);
    cr_assert_not_null(c);
    memcpy(c, base, blen - 1);
    c[blen - 1] = ',';
    memcpy(c + blen, extra, elen);
    c[blen + elen] = '}';
    c[blen + elen + 1] = '\0';
    return c;
}

static int submit(const char *rid, const char *model, const char *config,
                  Cms__V1__TrainingJob **out)
{
    Cms__V1__SubmitJob m = CMS__V1__SUBMIT_JOB__INIT;
    m.model_name = (char *)model;
    m.contract_id = K;
    m.config_json = (char *)config;
    m.privacy_budget = 1.0;
    return svcfx_call(&T.c.f, "training", Q.key, rid, "submit", &m.base,
                      &cms__v1__training_job__descriptor, (ProtobufCMessage **)out, T.field, T.msg);
}

Test(bad_input, every_command_refuses_bytes_that_are_not_its_request)
{
    doorfx_wire(T.c.f.nc, T.c.f.prefix, "training", Q.key, VERBS, 64 * 1024);
    char *n = jobs_count();
    cr_assert_str_eq(n, "0", "nothing was made of any of it");
    free(n);
    cr_assert_eq(submit(NULL, "after-the-junk", trfx_config(2000, 100, 1, 1.0, 0), NULL), OK,
                 "%s: %s", T.field, T.msg);
}

Test(bad_input, json_too_deep_numbers_jsonb_refuses_and_nul_are_refused_by_name)
{
    enum { DEPTH = 5000 };
    char *nest = malloc(2 * DEPTH + 8);
    cr_assert_not_null(nest);
    memcpy(nest, "\"x\":", 4);
    memset(nest + 4, '[', DEPTH);
    memset(nest + 4 + DEPTH, ']', DEPTH);
    nest[4 + 2 * DEPTH] = '\0';
    char *deep = config_with(nest);
    cr_assert_eq(submit(NULL, "", deep, NULL), INVALID, "%s", T.msg);
    cr_assert_str_eq(T.field, "config", "%s", T.msg);
    free(deep);
    free(nest);
    static const char *const numbers[] = {"1e400",     "-1e400", "1e-16384", "0e-20000",
                                          "1e-400000", "NaN",    "Infinity"};
    for (size_t i = 0; i < sizeof numbers / sizeof numbers[0]; i++) {
        char extra[64];
        snprintf(extra, sizeof extra, "\"n\":%s", numbers[i]);
        char *c = config_with(extra);
        cr_assert_eq(submit(NULL, "", c, NULL), INVALID, "%s: %s", numbers[i], T.msg);
        cr_assert_str_eq(T.field, "config", "%s: %s", numbers[i], T.msg);
        free(c);
    }
    char *c = config_with("\"n\":\"a\\u0000b\"");
    cr_assert_eq(submit(NULL, "", c, NULL), INVALID, "%s", T.msg);
    cr_assert_str_eq(T.field, "config", "%s", T.msg);
    free(c);
    char *n = jobs_count();
    cr_assert_str_eq(n, "0");
    free(n);
}

static const char *const NASTY[] = {
    "x'; DROP TABLE training_jobs; --",
    "Robert\"); DELETE FROM contracts WHERE (\"1\"=\"1",
    "back\\slash \\' \\\\ end\\",
    "$1 $2::text $$ dollar $$ $tag$ 100% _under_ ' OR '1'='1",
};

Test(bad_input, sql_metacharacters_in_every_text_field_round_trip_unchanged)
{
    size_t n = sizeof NASTY / sizeof NASTY[0];
    for (size_t i = 0; i < n; i++) {
        json_t *s = json_string(NASTY[i]);
        char *quoted = json_dumps(s, JSON_ENCODE_ANY);
        char extra[512];
        snprintf(extra, sizeof extra, "\"note\":%s,\"annex\":{%s:%s}", quoted, quoted, quoted);
        char *config = config_with(extra);
        json_t *want = json_loads(config, 0, NULL);
        cr_assert_not_null(want);
        Cms__V1__TrainingJob *made = NULL;
        cr_assert_eq(submit(NULL, NASTY[i], config, &made), OK, "submit %s: %s: %s", NASTY[i],
                     T.field, T.msg);
        Cms__V1__TrainingJob *got = trfx_get(&T, &Q, made->id);
        cr_assert_str_eq(got->model_name, NASTY[i], "the model name byte for byte");
        json_t *back = json_loads(got->config_json, 0, NULL);
        cr_assert(json_equal(back, want), "config read back: %s", got->config_json);
        /* a cancel's reason of the same text, kept with the stop */
        Cms__V1__CancelJob cj = CMS__V1__CANCEL_JOB__INIT;
        cj.id = made->id;
        cj.reason = (char *)NASTY[i];
        cr_assert_eq(trfx_call(&T, &Q, "cancel", &cj.base, NULL, NULL), OK, "cancel: %s: %s",
                     T.field, T.msg);
        Cms__V1__JobRef ref = CMS__V1__JOB_REF__INIT;
        ref.id = made->id;
        Cms__V1__JobMetrics *m = NULL;
        cr_assert_eq(trfx_call(&T, &Q, "metrics", &ref.base, &cms__v1__job_metrics__descriptor,
                               (ProtobufCMessage **)&m),
                     OK, "%s", T.msg);
        char reason[512];
        snprintf(reason, sizeof reason, "cancelled: %s", NASTY[i]);
        cr_assert_str_eq(m->stop_reason, reason, "the reason byte for byte");
        cms__v1__job_metrics__free_unpacked(m, NULL);
        json_decref(back);
        json_decref(want);
        json_decref(s);
        free(quoted);
        free(config);
        cms__v1__training_job__free_unpacked(made, NULL);
        cms__v1__training_job__free_unpacked(got, NULL);
    }
    /* a status filter is a closed vocabulary, a cursor is opaque: refused */
    Cms__V1__ListJobs lj = CMS__V1__LIST_JOBS__INIT;
    lj.status = (char *)"pending' OR '1'='1";
    cr_assert_eq(trfx_call(&T, &Q, "list", &lj.base, &cms__v1__job_page__descriptor, NULL),
                 INVALID);
    cr_assert_str_eq(T.field, "status");
    lj.status = (char *)"";
    lj.after = (char *)"'; DROP TABLE training_jobs; --";
    cr_assert_eq(trfx_call(&T, &Q, "list", &lj.base, &cms__v1__job_page__descriptor, NULL),
                 INVALID);
    cr_assert_str_eq(T.field, "after");
    char *count = jobs_count();
    char want[32];
    snprintf(want, sizeof want, "%zu", n);
    cr_assert_str_eq(count, want, "every job, and the table, still there");
    free(count);
}

Test(bad_input, a_request_id_replayed_with_another_body_gets_the_first_reply_and_does_nothing)
{
    Cms__V1__TrainingJob *first = NULL, *second = NULL;
    cr_assert_eq(submit("replay-1", "first-body", trfx_config(2000, 100, 1, 1.0, 0), &first), OK,
                 "%s", T.msg);
    cr_assert_eq(submit("replay-1", "second-body", trfx_config(2000, 100, 2, 2.0, 0), &second), OK,
                 "%s", T.msg);
    cr_assert_str_eq(second->id, first->id, "the first reply, again");
    cr_assert_str_eq(second->model_name, "first-body");
    char *n = jobs_count();
    cr_assert_str_eq(n, "1", "the second body never ran");
    free(n);
    cms__v1__training_job__free_unpacked(first, NULL);
    cms__v1__training_job__free_unpacked(second, NULL);
}

Test(bad_input, probes_answer_through_hundreds_of_idle_and_slow_connections)
{
    doorfx_slowloris(T.c.f.ports[TRFX_TRAINING], 300, 3000);
    cr_assert_geq(svcfx_metric(&T.c.f, TRFX_TRAINING, "cms_http_connections_evicted_total"),
                  300 - 128);
    cr_assert_eq(submit(NULL, "after-the-flood", trfx_config(2000, 100, 1, 1.0, 0), NULL), OK, "%s",
                 T.msg);
}
