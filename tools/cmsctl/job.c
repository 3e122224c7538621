/* cmsctl job and cmsctl contract budget: the commands of cms-training.
 *
 * Each sub-verb is one request on <prefix>.training.<verb> (see ctlcmd.h):
 * submit, cancel, get, list and metrics are the job commands of the same
 * names; watch is metrics asked again every --interval until the job has
 * ended (and get, for why, when it did not complete); cmsctl contract budget
 * is training's budget, the contract's privacy ledger, dispatched here from
 * contract.c because it is cms-training that keeps it. What the sub-verbs
 * share with cmsctl identity and contract (their plumbing, table times,
 * paging) is ctlverb.h; how a running job is drawn is jobview.h.
 *
 * Values are checked by the service, which names the field at fault; this
 * file checks only what it must understand itself (ids, that the config
 * file holds a JSON object, the budget as a number, the shape of the
 * command line), so that a usage error never waits on NATS.
 *
 * Output (ctlout.h): "key: value" lines for one job, metrics or ledger, and
 * a table for lists; or with -o json one JSON document (an object, an array
 * for lists) in which config and metrics are JSON values, with -o ndjson one
 * compact object per line. Privacy figures are printed to 6 significant
 * digits in tables, enough to feed back into cmsctl privacy. */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "cms/v1/training.pb-c.h"
#include "ctlcmd.h"
#include "ctlout.h"
#include "ctlverb.h"
#include "jobview.h"
#include "uuid.h"
#include "verbs.h"

#define SERVICE "training"
#define MODEL_COLUMN_MAX 40
#define TEXT_MAX 4096             /* longest server text shown in a table cell */
#define CONFIG_FILE_MAX (1 << 16) /* cms-training takes a config of at most 64 KiB */
#define INTERVAL_MIN_MS 100
#define INTERVAL_MAX_MS (10 * 60 * 1000)

/* ------------------------------------------------------------------------ */
/* option tables */

static const cms_option submit_options[] = {
    CMSCTL_CMD_OPTIONS,
    {"contract", NULL, CMS_OPT_STRING, NULL, "the contract's ID (the caller is its consumer)",
     CMS_OPT_PUBLIC, true},
    {"config", NULL, CMS_OPT_STRING, NULL,
     "file of the training config, a JSON object (- for stdin)", CMS_OPT_PUBLIC, true},
    {"budget", NULL, CMS_OPT_STRING, NULL,
     "epsilon the job may spend, > 0 and no less than the config's privacy.epsilon", CMS_OPT_PUBLIC,
     true},
    {"model", NULL, CMS_OPT_STRING, NULL, "the job's model name (default: model.architecture)",
     CMS_OPT_PUBLIC, false},
};

static const cms_option ref_options[] = {
    CMSCTL_CMD_OPTIONS,
};

static const cms_option cancel_options[] = {
    CMSCTL_CMD_OPTIONS,
    {"reason", NULL, CMS_OPT_STRING, NULL, "why (kept with the stop; at most 64 bytes)",
     CMS_OPT_PUBLIC, false},
};

static const cms_option list_options[] = {
    CMSCTL_CMD_OPTIONS,
    {"contract", NULL, CMS_OPT_STRING, NULL, "only the jobs of this contract (ID)", CMS_OPT_PUBLIC,
     false},
    {"status", NULL, CMS_OPT_STRING, NULL,
     "only this status (pending, running, completed, failed, stopped)", CMS_OPT_PUBLIC, false},
    CMSCTL_VERB_PAGE_OPTIONS("jobs"),
};

static const cms_option watch_options[] = {
    CMSCTL_CMD_OPTIONS,
    {"interval", NULL, CMS_OPT_DURATION, "1s",
     "time between two polls of the metrics (100ms to 10m)", CMS_OPT_PUBLIC, false},
};

static const char job_help[] =
    "cmsctl job - training jobs, run by cms-training\n"
    "\n"
    "usage: cmsctl job submit --contract ID --config FILE.json --budget EPSILON [--model NAME]\n"
    "       cmsctl job cancel ID [--reason TEXT]\n"
    "       cmsctl job get ID\n"
    "       cmsctl job list [--contract ID] [--status S] [--limit N] [--after CURSOR] [--all]\n"
    "       cmsctl job metrics ID\n"
    "       cmsctl job watch ID [--interval DURATION]\n"
    "\n"
    "The privacy ledger of a contract, over all its jobs, is cmsctl contract budget ID.\n"
    "cmsctl job SUB-VERB --help shows the options of each.\n";

/* ------------------------------------------------------------------------ */
/* arguments */

/* An id argument or option, checked to be a UUID. */
static int uuid_arg(const char *prog, const char *what, const char *text, const char *from,
                    char id[CMS_UUID_STRLEN + 1])
{
    if (!cmsctl_verb_uuid(text, id))
        return cmsctl_usage(prog, "%s \"%s\" is not a UUID: copy it from %s", what, text, from);
    return CMSCTL_EXIT_OK;
}

static int job_id(const cmsctl_verb *v, char id[CMS_UUID_STRLEN + 1])
{
    return uuid_arg(v->prog, "ID", v->arg, "cmsctl job list", id);
}

/* --budget: a finite epsilon > 0. strtod's NaN fails the comparison;
 * overflow and underflow are refused rather than rounded. */
static int budget_arg(const cmsctl_verb *v, double *out)
{
    const char *text = cms_config_str(v->cfg, "budget");
    char *end = NULL;
    errno = 0;
    double e = strtod(text, &end);
    if (end == text || *end != '\0' || errno == ERANGE || !(e > 0.0) || !isfinite(e))
        return cmsctl_usage(
            v->prog, "--budget must be an epsilon, a finite number > 0, not \"%.40s\"", text);
    *out = e;
    return CMSCTL_EXIT_OK;
}

/* ------------------------------------------------------------------------ */
/* output */

/* A JSON number, or null for what is not finite (jansson takes no inf or
 * NaN). */
static json_t *jreal(double v)
{
    return isfinite(v) ? json_real(v) : json_null();
}

/* A "key: value" line of a figure: 6 significant digits. */
static void print_real(const char *key, double v)
{
    printf("%s: %.6g\n", key, v);
}

/* A "key: value" line of server text, left out when the text is empty. */
static void print_text(const char *key, const char *s)
{
    char b[TEXT_MAX];
    if (s[0] != '\0')
        printf("%s: %s\n", key, cmsctl_out_clean(s, b, sizeof b));
}

/* A "key: value" line of JSON text, made compact. */
static void print_json_text(const char *key, const char *text)
{
    char b[TEXT_MAX];
    char *c = cmsctl_out_compact(text[0] != '\0' ? text : "{}");
    printf("%s: %s\n", key, cmsctl_out_clean(c != NULL ? c : "?", b, sizeof b));
    free(c);
}

static json_t *job_json(const Cms__V1__TrainingJob *j)
{
    json_t *o = json_object();
    if (o == NULL)
        return NULL;
    json_object_set_new(o, "id", cmsctl_out_str(j->id));
    json_object_set_new(o, "model_name", cmsctl_out_str(j->model_name));
    json_object_set_new(o, "status", cmsctl_out_str(j->status));
    json_object_set_new(o, "contract_id", cmsctl_out_str(j->contract_id));
    json_object_set_new(o, "consumer_id", cmsctl_out_str(j->consumer_id));
    json_object_set_new(o, "noise_multiplier", jreal(j->noise_multiplier));
    json_object_set_new(o, "sample_rate", jreal(j->sample_rate));
    json_object_set_new(o, "delta", jreal(j->delta));
    json_object_set_new(o, "max_grad_norm", jreal(j->max_grad_norm));
    json_object_set_new(o, "planned_steps", json_integer(j->planned_steps));
    json_object_set_new(o, "max_steps", json_integer(j->max_steps));
    json_object_set_new(o, "steps_done", json_integer(j->steps_done));
    json_object_set_new(o, "projected_epsilon", jreal(j->projected_epsilon));
    json_object_set_new(o, "privacy_budget", jreal(j->privacy_budget));
    json_object_set_new(o, "privacy_budget_spent", jreal(j->privacy_budget_spent));
    json_object_set_new(o, "attempt", json_integer(j->attempt));
    json_object_set_new(o, "max_attempts", json_integer(j->max_attempts));
    json_object_set_new(o, "worker_id", cmsctl_out_str(j->worker_id));
    json_object_set_new(o, "stop_reason", cmsctl_out_str(j->stop_reason));
    json_object_set_new(o, "failure", cmsctl_out_str(j->failure));
    json_object_set_new(o, "config", cmsctl_out_json_text(j->config_json));
    json_object_set_new(o, "metrics", cmsctl_out_json_text(j->metrics_json));
    cmsctl_out_time(o, "created_at", j->created_at_us);
    cmsctl_out_time(o, "started_at", j->started_at_us);
    cmsctl_out_time(o, "updated_at", j->updated_at_us);
    cmsctl_out_time(o, "completed_at", j->completed_at_us);
    return o;
}

/* What submit decided first (the noise, the sampling rate, the steps and
 * their epsilon against the budget), then the rest. */
static void job_table(const Cms__V1__TrainingJob *j)
{
    char t[CMSCTL_CMD_TIME_MAX];
    print_text("id", j->id);
    print_text("status", j->status);
    print_real("noise_multiplier", j->noise_multiplier);
    print_real("sample_rate", j->sample_rate);
    printf("planned_steps: %" PRId64 "\n", j->planned_steps);
    printf("max_steps: %" PRId64 "\n", j->max_steps);
    print_real("projected_epsilon", j->projected_epsilon);
    print_real("privacy_budget", j->privacy_budget);
    print_real("privacy_budget_spent", j->privacy_budget_spent);
    printf("steps_done: %" PRId64 "\n", j->steps_done);
    print_real("delta", j->delta);
    print_real("max_grad_norm", j->max_grad_norm);
    print_text("model_name", j->model_name);
    print_text("contract_id", j->contract_id);
    print_text("consumer_id", j->consumer_id);
    printf("attempt: %" PRId32 "\n", j->attempt);
    printf("max_attempts: %" PRId32 "\n", j->max_attempts);
    print_text("worker_id", j->worker_id);
    print_text("stop_reason", j->stop_reason);
    print_text("failure", j->failure);
    print_json_text("config", j->config_json);
    print_json_text("metrics", j->metrics_json);
    printf("created_at: %s\n", cmsctl_verb_time(j->created_at_us, t));
    printf("started_at: %s\n", cmsctl_verb_time(j->started_at_us, t));
    printf("updated_at: %s\n", cmsctl_verb_time(j->updated_at_us, t));
    printf("completed_at: %s\n", cmsctl_verb_time(j->completed_at_us, t));
}

static int print_job(const char *prog, cmsctl_out_format fmt, const Cms__V1__TrainingJob *j)
{
    if (fmt != CMSCTL_OUT_TABLE)
        return cmsctl_out_emit(prog, fmt, job_json(j), NULL);
    job_table(j);
    return CMSCTL_EXIT_OK;
}

/* A figure of metrics_json, as JobMetrics gives it, or null when no worker
 * has reported it. */
static json_t *reported(bool has, double v)
{
    return has ? jreal(v) : json_null();
}

static json_t *metrics_json(const Cms__V1__JobMetrics *m)
{
    cmsctl_jobview jv;
    json_t *o = json_object(), *spent = json_array();
    if (o == NULL || spent == NULL) {
        json_decref(o);
        json_decref(spent);
        return NULL;
    }
    cmsctl_jobview_from_metrics(m, &jv);
    json_object_set_new(o, "id", cmsctl_out_str(m->id));
    json_object_set_new(o, "status", cmsctl_out_str(m->status));
    json_object_set_new(o, "steps_done", json_integer(m->steps_done));
    json_object_set_new(o, "planned_steps", json_integer(m->planned_steps));
    json_object_set_new(o, "max_steps", json_integer(m->max_steps));
    json_object_set_new(o, "progress", jreal(m->progress));
    json_object_set_new(o, "eta_us", m->eta_us > 0 ? json_integer(m->eta_us) : json_null());
    json_object_set_new(o, "loss", reported(jv.has_loss, m->loss));
    json_object_set_new(o, "accuracy", reported(jv.has_accuracy, m->accuracy));
    json_object_set_new(o, "privacy_budget", jreal(m->privacy_budget));
    json_object_set_new(o, "privacy_budget_spent", jreal(m->privacy_budget_spent));
    json_object_set_new(o, "stop_reason", cmsctl_out_str(m->stop_reason));
    json_object_set_new(o, "metrics", cmsctl_out_json_text(m->metrics_json));
    cmsctl_out_time(o, "updated_at", m->updated_at_us);
    for (size_t i = 0; i < m->n_spent; i++) {
        const Cms__V1__BudgetPoint *p = m->spent[i];
        json_t *e = json_object();
        if (e == NULL || json_array_append_new(spent, e) != 0) {
            json_decref(o);
            json_decref(spent);
            return NULL;
        }
        cmsctl_out_time(e, "at", p->at_us);
        json_object_set_new(e, "steps", json_integer(p->steps));
        json_object_set_new(e, "epsilon", jreal(p->epsilon));
    }
    json_object_set_new(o, "spent", spent);
    return o;
}

/* The figures, then the spent budget over time as a table. */
static void metrics_table(const Cms__V1__JobMetrics *m)
{
    char t[CMSCTL_CMD_TIME_MAX], eta[CMSCTL_JOBVIEW_DURATION_MAX];
    cmsctl_jobview jv;
    cmsctl_jobview_from_metrics(m, &jv);
    print_text("id", m->id);
    print_text("status", m->status);
    printf("steps_done: %" PRId64 "\n", m->steps_done);
    printf("planned_steps: %" PRId64 "\n", m->planned_steps);
    printf("max_steps: %" PRId64 "\n", m->max_steps);
    printf("progress: %.1f%%\n", jv.progress * 100.0);
    printf("eta: %s\n", cmsctl_jobview_duration(m->eta_us, eta));
    if (jv.has_loss)
        print_real("loss", m->loss);
    else
        printf("loss: -\n");
    if (jv.has_accuracy)
        print_real("accuracy", m->accuracy);
    else
        printf("accuracy: -\n");
    print_real("privacy_budget", m->privacy_budget);
    print_real("privacy_budget_spent", m->privacy_budget_spent);
    print_text("stop_reason", m->stop_reason);
    printf("updated_at: %s\n", cmsctl_verb_time(m->updated_at_us, t));
    if (m->n_spent == 0)
        return;
    printf("\n%-20s  %10s  %s\n", "AT", "STEPS", "EPSILON");
    for (size_t i = 0; i < m->n_spent; i++) {
        const Cms__V1__BudgetPoint *p = m->spent[i];
        printf("%-20s  %10" PRId64 "  %.6g\n", cmsctl_verb_time(p->at_us, t), p->steps, p->epsilon);
    }
}

static int print_metrics(const char *prog, cmsctl_out_format fmt, const Cms__V1__JobMetrics *m)
{
    if (fmt != CMSCTL_OUT_TABLE)
        return cmsctl_out_emit(prog, fmt, metrics_json(m), NULL);
    metrics_table(m);
    return CMSCTL_EXIT_OK;
}

/* ------------------------------------------------------------------------ */
/* submit, cancel, get, metrics */

/* The command name, whose reply is a job: printed. */
static int job_call(cmsctl_verb *v, const char *name, cmsctl_cmd_kind kind,
                    const ProtobufCMessage *req)
{
    int status = cmsctl_verb_call(v, name, kind, req, &cms__v1__training_job__descriptor);
    if (status == CMSCTL_EXIT_OK)
        status = print_job(v->prog, v->fmt, (const Cms__V1__TrainingJob *)v->got);
    return status;
}

static int submit_main(int argc, char **argv)
{
    cmsctl_verb v;
    char contract[CMS_UUID_STRLEN + 1];
    char *config = NULL;
    double budget = 0;
    int status = cmsctl_verb_begin(
        &v, SERVICE, "cmsctl job submit", submit_options, CMSCTL_NOPTS(submit_options), argc, argv,
        "submit a training job",
        "--contract ID --config FILE.json --budget EPSILON [--model NAME]\n\n"
        "Submits a DP-SGD training job under the contract (the caller must be its\n"
        "consumer, the contract active) and prints it as admitted: the noise\n"
        "multiplier sigma, the sampling rate q, the planned steps, the most steps the\n"
        "budget allows (max_steps) and the epsilon the planned steps spend\n"
        "(projected_epsilon). The config is a JSON object with model, privacy\n"
        "(epsilon, delta, noise_mechanism \"gaussian\") and training (batch_size,\n"
        "epochs, learning_rate, dataset, dataset_size, max_grad_norm); at most 64 KiB,\n"
        "- reads it from stdin. The job's epsilon is also reserved in the contract's\n"
        "privacy ledger (cmsctl contract budget ID).\n\n" CMSCTL_CMD_KEY_HELP,
        NULL);
    if (status != CMSCTL_EXIT_OK ||
        (status = uuid_arg(v.prog, "--contract", cms_config_str(v.cfg, "contract"),
                           "cmsctl contract list", contract)) != CMSCTL_EXIT_OK ||
        (status = budget_arg(&v, &budget)) != CMSCTL_EXIT_OK ||
        (status = cmsctl_verb_json_file(v.prog, "config", cms_config_str(v.cfg, "config"), true,
                                        CONFIG_FILE_MAX, &config)) != CMSCTL_EXIT_OK ||
        (status = cmsctl_verb_open(&v)) != CMSCTL_EXIT_OK)
        goto out;
    Cms__V1__SubmitJob req = CMS__V1__SUBMIT_JOB__INIT;
    req.model_name = cmsctl_verb_str(&v, "model");
    req.contract_id = contract;
    req.config_json = config;
    req.privacy_budget = budget;
    status = job_call(&v, "submit", CMSCTL_CMD_WRITE, &req.base);
out:
    free(config);
    return cmsctl_verb_end(&v, status);
}

static int cancel_main(int argc, char **argv)
{
    cmsctl_verb v;
    char id[CMS_UUID_STRLEN + 1];
    int status = cmsctl_verb_begin(
        &v, SERVICE, "cmsctl job cancel", cancel_options, CMSCTL_NOPTS(cancel_options), argc, argv,
        "cancel a training job",
        "ID [--reason TEXT]\n\n"
        "Stops the job: a pending one at once, a running one when its worker next\n"
        "hears of it (within one step). Prints the job; cmsctl job watch ID follows\n"
        "it to its end. The epsilon of the steps it ran stays spent.\n\n" CMSCTL_CMD_KEY_HELP,
        "the job's ID");
    if (status != CMSCTL_EXIT_OK || (status = job_id(&v, id)) != CMSCTL_EXIT_OK ||
        (status = cmsctl_verb_open(&v)) != CMSCTL_EXIT_OK)
        goto out;
    Cms__V1__CancelJob req = CMS__V1__CANCEL_JOB__INIT;
    req.id = id;
    req.reason = cmsctl_verb_str(&v, "reason");
    status = job_call(&v, "cancel", CMSCTL_CMD_WRITE, &req.base);
out:
    return cmsctl_verb_end(&v, status);
}

static int get_main(int argc, char **argv)
{
    cmsctl_verb v;
    char id[CMS_UUID_STRLEN + 1];
    int status = cmsctl_verb_begin(&v, SERVICE, "cmsctl job get", ref_options,
                                   CMSCTL_NOPTS(ref_options), argc, argv, "show one training job",
                                   "ID\n\n"
                                   "Prints the job with that id: its plan, its state and the "
                                   "latest metrics\nits worker reported.\n\n" CMSCTL_CMD_KEY_HELP,
                                   "the job's ID");
    if (status != CMSCTL_EXIT_OK || (status = job_id(&v, id)) != CMSCTL_EXIT_OK ||
        (status = cmsctl_verb_open(&v)) != CMSCTL_EXIT_OK)
        goto out;
    Cms__V1__JobRef req = CMS__V1__JOB_REF__INIT;
    req.id = id;
    status = job_call(&v, "get", CMSCTL_CMD_READ, &req.base);
out:
    return cmsctl_verb_end(&v, status);
}

static int metrics_main(int argc, char **argv)
{
    cmsctl_verb v;
    char id[CMS_UUID_STRLEN + 1];
    int status = cmsctl_verb_begin(
        &v, SERVICE, "cmsctl job metrics", ref_options, CMSCTL_NOPTS(ref_options), argc, argv,
        "show how a training job goes",
        "ID\n\n"
        "Prints the job's progress: steps done of planned and max, progress and the\n"
        "time left at the recent rate (eta, \"-\" when not known), the latest loss and\n"
        "accuracy its worker reported (\"-\" before any), the epsilon spent of its\n"
        "budget, then the spent epsilon over time as a table (AT, STEPS, EPSILON).\n"
        "With -o json the points are \"spent\": [{\"at\", \"at_us\", \"steps\",\n"
        "\"epsilon\"}].\n\n" CMSCTL_CMD_KEY_HELP,
        "the job's ID");
    if (status != CMSCTL_EXIT_OK || (status = job_id(&v, id)) != CMSCTL_EXIT_OK ||
        (status = cmsctl_verb_open(&v)) != CMSCTL_EXIT_OK)
        goto out;
    Cms__V1__JobRef req = CMS__V1__JOB_REF__INIT;
    req.id = id;
    if ((status = cmsctl_verb_call(&v, "metrics", CMSCTL_CMD_READ, &req.base,
                                   &cms__v1__job_metrics__descriptor)) == CMSCTL_EXIT_OK)
        status = print_metrics(v.prog, v.fmt, (const Cms__V1__JobMetrics *)v.got);
out:
    return cmsctl_verb_end(&v, status);
}

/* ------------------------------------------------------------------------ */
/* list */

static const Cms__V1__JobPage *page_at(ProtobufCMessage *const *pages, size_t i)
{
    return (const Cms__V1__JobPage *)pages[i];
}

static int print_jobs(const cmsctl_verb *v, ProtobufCMessage *const *pages, size_t n)
{
    size_t rows = 0;
    for (size_t i = 0; i < n; i++)
        rows += page_at(pages, i)->n_jobs;
    if (v->fmt != CMSCTL_OUT_TABLE) {
        json_t *arr = json_array();
        for (size_t i = 0; arr != NULL && i < n; i++) {
            const Cms__V1__JobPage *pg = page_at(pages, i);
            for (size_t j = 0; j < pg->n_jobs; j++) {
                if (json_array_append_new(arr, job_json(pg->jobs[j])) != 0) {
                    json_decref(arr);
                    arr = NULL;
                    break;
                }
            }
        }
        if (rows == 0)
            cmsctl_out_none(v->fmt, "no jobs match");
        return cmsctl_out_emit(v->prog, v->fmt, arr, NULL);
    }
    if (rows == 0) {
        cmsctl_out_none(v->fmt, "no jobs match");
        return CMSCTL_EXIT_OK;
    }
    printf("%-36s  %-9s  %-15s  %-17s  %-20s  %s\n", "ID", "STATUS", "STEPS", "EPSILON",
           "CREATED_AT", "MODEL");
    for (size_t i = 0; i < n; i++) {
        const Cms__V1__JobPage *pg = page_at(pages, i);
        for (size_t j = 0; j < pg->n_jobs; j++) {
            const Cms__V1__TrainingJob *k = pg->jobs[j];
            char bid[64], bstatus[64], bmodel[MODEL_COLUMN_MAX + 1], steps[48], eps[48],
                t[CMSCTL_CMD_TIME_MAX];
            snprintf(steps, sizeof steps, "%" PRId64 "/%" PRId64, k->steps_done, k->planned_steps);
            snprintf(eps, sizeof eps, "%.3g/%.3g", k->privacy_budget_spent, k->privacy_budget);
            printf("%-36s  %-9s  %-15s  %-17s  %-20s  %s\n",
                   cmsctl_out_clean(k->id, bid, sizeof bid),
                   cmsctl_out_clean(k->status, bstatus, sizeof bstatus), steps, eps,
                   cmsctl_verb_time(k->created_at_us, t),
                   cmsctl_out_clean(k->model_name, bmodel, sizeof bmodel));
        }
    }
    return CMSCTL_EXIT_OK;
}

/* The filters of one cmsctl job list, but for --status. */
typedef struct job_filter {
    char contract[CMS_UUID_STRLEN + 1]; /* "" for any */
    int32_t limit;
} job_filter;

/* ctx: the job_filter. */
static int ask_jobs(cmsctl_verb *v, const void *ctx, const char *after, ProtobufCMessage **page)
{
    const job_filter *f = ctx;
    Cms__V1__ListJobs req = CMS__V1__LIST_JOBS__INIT;
    req.contract_id = (char *)f->contract;
    req.status = cmsctl_verb_str(v, "status");
    req.limit = f->limit;
    req.after = (char *)after;
    return cmsctl_cmd_call(v->c, "list", CMSCTL_CMD_READ, &req.base, &cms__v1__job_page__descriptor,
                           page);
}

static const char *jobs_next(const ProtobufCMessage *page, size_t *items)
{
    const Cms__V1__JobPage *p = (const Cms__V1__JobPage *)page;
    *items = p->n_jobs;
    return p->next;
}

static int list_main(int argc, char **argv)
{
    static const cmsctl_verb_pager pager = {ask_jobs, jobs_next, print_jobs};
    cmsctl_verb v;
    job_filter f = {.contract = ""};
    int status = cmsctl_verb_begin(
        &v, SERVICE, "cmsctl job list", list_options, CMSCTL_NOPTS(list_options), argc, argv,
        "list training jobs",
        "[--contract ID] [--status S] [--limit N] [--after CURSOR] [--all]\n\n"
        "Lists the jobs the caller may see (those of its contracts; every job for an\n"
        "admin or an auditor), --limit at a time: id, status, steps done of planned,\n"
        "epsilon spent of budget, when created, model. When more may follow it ends\n"
        "with \"next: --after CURSOR\" (on stderr with -o json or ndjson): run the\n"
        "same command with that flag added for the next page, or use --all to follow\n"
        "every page. No jobs: nothing on stdout (\"[]\" with -o json) and\n"
        "\"(no jobs match)\" on stderr.\n\n" CMSCTL_CMD_KEY_HELP,
        NULL);
    if (status != CMSCTL_EXIT_OK || (status = cmsctl_verb_limit(&v, &f.limit)) != CMSCTL_EXIT_OK)
        goto out;
    const char *contract = cms_config_str(v.cfg, "contract");
    if (contract != NULL &&
        (status = uuid_arg(v.prog, "--contract", contract, "cmsctl contract list", f.contract)) !=
            CMSCTL_EXIT_OK)
        goto out;
    if ((status = cmsctl_verb_open(&v)) == CMSCTL_EXIT_OK)
        status = cmsctl_verb_list(&v, &pager, &f);
out:
    return cmsctl_verb_end(&v, status);
}

/* ------------------------------------------------------------------------ */
/* watch */

/* The width of the terminal on stdout; 0 when it does not say. */
static size_t terminal_cols(void)
{
    struct winsize ws;
    if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0)
        return ws.ws_col;
    return 0;
}

/* Waits ms; false when SIGINT or SIGTERM came (cmsctl_catch_signals: the
 * sleep ends early then). */
static bool pause_ms(int64_t ms)
{
    struct timespec ts = {.tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (!cmsctl_interrupted() && nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
    return !cmsctl_interrupted();
}

/* Says why the job ended without completing: its failure, else its stop
 * reason, asked of get (metrics carry no failure); the metrics' stop reason
 * when get fails. Returns the exit status, 1. */
static int ended_badly(cmsctl_verb *v, const char *id, const Cms__V1__JobMetrics *m)
{
    char b[TEXT_MAX];
    Cms__V1__TrainingJob *j = NULL;
    Cms__V1__JobRef req = CMS__V1__JOB_REF__INIT;
    req.id = (char *)id;
    const char *why = m->stop_reason;
    if (cmsctl_cmd_call(v->c, "get", CMSCTL_CMD_READ, &req.base, &cms__v1__training_job__descriptor,
                        (ProtobufCMessage **)&j) == CMSCTL_EXIT_OK)
        why = j->failure[0] != '\0' ? j->failure : j->stop_reason;
    int status =
        cmsctl_fail(v->prog, "the job %s: %s", m->status,
                    why[0] != '\0' ? cmsctl_out_clean(why, b, sizeof b) : "no reason given");
    if (j != NULL)
        cms__v1__training_job__free_unpacked(j, NULL);
    return status;
}

/* How watch shows each poll. */
typedef enum {
    WATCH_BAR,    /* a table on a terminal: the bar, redrawn in place */
    WATCH_LINES,  /* a table elsewhere: a line per change */
    WATCH_NDJSON, /* the metrics as an object per change */
    WATCH_JSON,   /* the last metrics, once the job has ended */
} watch_mode;

static int watch_main(int argc, char **argv)
{
    cmsctl_verb v;
    char id[CMS_UUID_STRLEN + 1];
    char line[CMSCTL_JOBVIEW_LINE_MAX], last[CMSCTL_JOBVIEW_LINE_MAX] = "";
    int64_t interval = 0;
    int status = cmsctl_verb_begin(
        &v, SERVICE, "cmsctl job watch", watch_options, CMSCTL_NOPTS(watch_options), argc, argv,
        "follow a training job to its end",
        "ID [--interval DURATION]\n\n"
        "Asks for the job's metrics every --interval until it has completed, failed\n"
        "or stopped. On a terminal it draws one line, redrawn in place: a bar, the\n"
        "status, progress, steps done of the steps it will run, the latest loss and\n"
        "accuracy, epsilon spent of the budget and, while running, the time left.\n"
        "Otherwise it prints that line, after the time of the metrics, each time it\n"
        "changes; with -o ndjson the metrics object (as cmsctl job metrics -o json)\n"
        "each time, with -o json only the last one. It exits 0 when the job\n"
        "completed, 1 when it failed or stopped (the reason on stderr); also 1 when\n"
        "asking fails or on ^C (the job goes on: cmsctl job cancel ID stops "
        "it).\n\n" CMSCTL_CMD_KEY_HELP,
        "the job's ID");
    if (status != CMSCTL_EXIT_OK || (status = job_id(&v, id)) != CMSCTL_EXIT_OK)
        goto out;
    if (!cmsctl_duration_arg(v.prog, v.cfg, "interval", INTERVAL_MIN_MS, INTERVAL_MAX_MS,
                             &interval)) {
        status = CMSCTL_EXIT_USAGE;
        goto out;
    }
    if ((status = cmsctl_verb_open(&v)) != CMSCTL_EXIT_OK)
        goto out;
    watch_mode mode = v.fmt == CMSCTL_OUT_JSON     ? WATCH_JSON
                      : v.fmt == CMSCTL_OUT_NDJSON ? WATCH_NDJSON
                      : isatty(STDOUT_FILENO)      ? WATCH_BAR
                                                   : WATCH_LINES;
    cmsctl_catch_signals();
    Cms__V1__JobRef req = CMS__V1__JOB_REF__INIT;
    req.id = id;
    cmsctl_jobview jv;
    for (;;) {
        /* v.got holds the latest metrics: cmsctl_verb_end frees the last */
        if (v.got != NULL) {
            protobuf_c_message_free_unpacked(v.got, NULL);
            v.got = NULL;
        }
        if ((status = cmsctl_verb_call(&v, "metrics", CMSCTL_CMD_READ, &req.base,
                                       &cms__v1__job_metrics__descriptor)) != CMSCTL_EXIT_OK)
            goto out;
        const Cms__V1__JobMetrics *m = (const Cms__V1__JobMetrics *)v.got;
        cmsctl_jobview_from_metrics(m, &jv);
        cmsctl_jobview_line(&jv, line, sizeof line);
        bool changed = strcmp(line, last) != 0;
        snprintf(last, sizeof last, "%s", line);
        if (mode == WATCH_BAR) {
            char bar[CMSCTL_JOBVIEW_LINE_MAX + 64];
            cmsctl_jobview_bar(&jv, terminal_cols(), bar, sizeof bar);
            /* erase to the end of the line: the new one may be shorter */
            printf("\r%s\033[K", bar);
            fflush(stdout);
            cmsctl_progress_drawn(stdout);
        } else if (mode == WATCH_LINES && changed) {
            char t[CMSCTL_CMD_TIME_MAX];
            printf("%s %s\n", cmsctl_verb_time(m->updated_at_us, t), line);
            fflush(stdout);
        } else if (mode == WATCH_NDJSON && changed) {
            if ((status = cmsctl_out_emit(v.prog, v.fmt, metrics_json(m), NULL)) != CMSCTL_EXIT_OK)
                goto out;
        }
        if (cmsctl_jobview_state_final(jv.state))
            break;
        if (!pause_ms(interval)) {
            status = cmsctl_fail(v.prog,
                                 "interrupted: the job goes on (cmsctl job cancel %s "
                                 "stops it)",
                                 id);
            goto out;
        }
    }
    cmsctl_progress_end();
    const Cms__V1__JobMetrics *m = (const Cms__V1__JobMetrics *)v.got;
    if (mode == WATCH_JSON &&
        (status = cmsctl_out_emit(v.prog, v.fmt, metrics_json(m), NULL)) != CMSCTL_EXIT_OK)
        goto out;
    fflush(stdout);
    if ((status = cmsctl_jobview_exit_status(jv.state)) != CMSCTL_EXIT_OK)
        status = ended_badly(&v, id, m);
out:
    cmsctl_progress_end();
    return cmsctl_verb_end(&v, status);
}

/* ------------------------------------------------------------------------ */
/* cmsctl contract budget */

static json_t *budget_json(const Cms__V1__ContractBudget *b)
{
    bool limited = b->max_epsilon > 0;
    json_t *o = json_object();
    if (o == NULL)
        return NULL;
    json_object_set_new(o, "contract_id", cmsctl_out_str(b->contract_id));
    json_object_set_new(o, "contract_status", cmsctl_out_str(b->contract_status));
    json_object_set_new(o, "max_epsilon", limited ? jreal(b->max_epsilon) : json_null());
    json_object_set_new(o, "delta", jreal(b->delta));
    json_object_set_new(o, "reserved_epsilon", jreal(b->reserved_epsilon));
    json_object_set_new(o, "reserved_sum", jreal(b->reserved_sum));
    json_object_set_new(o, "spent_epsilon", jreal(b->spent_epsilon));
    json_object_set_new(o, "spent_sum", jreal(b->spent_sum));
    json_object_set_new(o, "remaining_epsilon",
                        limited ? jreal(b->remaining_epsilon) : json_null());
    json_object_set_new(o, "jobs", json_integer(b->jobs));
    json_object_set_new(o, "open_jobs", json_integer(b->open_jobs));
    return o;
}

/* Each composed epsilon is followed by the plain sum it improves on. */
static void budget_table(const Cms__V1__ContractBudget *b)
{
    bool limited = b->max_epsilon > 0;
    print_text("contract_id", b->contract_id);
    printf("contract_status: %s\n", b->contract_status[0] != '\0' ? b->contract_status : "-");
    if (limited)
        print_real("max_epsilon", b->max_epsilon);
    else
        printf("max_epsilon: none\n");
    print_real("delta", b->delta);
    print_real("reserved_epsilon", b->reserved_epsilon);
    print_real("reserved_sum", b->reserved_sum);
    print_real("spent_epsilon", b->spent_epsilon);
    print_real("spent_sum", b->spent_sum);
    if (limited)
        print_real("remaining_epsilon", b->remaining_epsilon);
    else
        printf("remaining_epsilon: unlimited\n");
    printf("jobs: %" PRId32 "\n", b->jobs);
    printf("open_jobs: %" PRId32 "\n", b->open_jobs);
}

int cmsctl_contract_budget_main(int argc, char **argv)
{
    cmsctl_verb v;
    char id[CMS_UUID_STRLEN + 1];
    int status = cmsctl_verb_begin(
        &v, SERVICE, "cmsctl contract budget", ref_options, CMSCTL_NOPTS(ref_options), argc, argv,
        "show a contract's privacy ledger",
        "ID\n\n"
        "Asks cms-training for the contract's privacy ledger (a party, an admin or\n"
        "an auditor) and prints: the contract's max_epsilon (terms.privacy.max_epsilon,\n"
        "\"none\" without a limit) and the delta the ledger converts at; the epsilon\n"
        "its jobs reserved and the epsilon they spent, each composed over the jobs by\n"
        "the Rényi-DP accountant and followed by the plain sum it improves on\n"
        "(reserved_sum, spent_sum); what remains of max_epsilon after the\n"
        "reservations (\"unlimited\" without a limit); the jobs that reserved, and\n"
        "those still pending or running (open_jobs). With -o json max_epsilon and\n"
        "remaining_epsilon are null without a limit.\n\n" CMSCTL_CMD_KEY_HELP,
        "the contract's ID");
    if (status != CMSCTL_EXIT_OK ||
        (status = uuid_arg(v.prog, "ID", v.arg, "cmsctl contract list", id)) != CMSCTL_EXIT_OK ||
        (status = cmsctl_verb_open(&v)) != CMSCTL_EXIT_OK)
        goto out;
    Cms__V1__ContractBudgetRef req = CMS__V1__CONTRACT_BUDGET_REF__INIT;
    req.contract_id = id;
    if ((status = cmsctl_verb_call(&v, "budget", CMSCTL_CMD_READ, &req.base,
                                   &cms__v1__contract_budget__descriptor)) != CMSCTL_EXIT_OK)
        goto out;
    const Cms__V1__ContractBudget *b = (const Cms__V1__ContractBudget *)v.got;
    if (v.fmt != CMSCTL_OUT_TABLE)
        status = cmsctl_out_emit(v.prog, v.fmt, budget_json(b), NULL);
    else
        budget_table(b);
out:
    return cmsctl_verb_end(&v, status);
}

/* ------------------------------------------------------------------------ */
/* cmsctl job ... */

int cmsctl_job_main(int argc, char **argv)
{
    static const char prog[] = "cmsctl job";
    static const char want[] = "submit, cancel, get, list, metrics or watch";
    if (argc < 2) {
        fputs(job_help, stderr);
        return cmsctl_usage(prog, "a sub-verb is needed: %s", want);
    }
    const char *sub = argv[1];
    int n = argc - 1;
    char **a = argv + 1;
    if (strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0 || strcmp(sub, "help") == 0) {
        fputs(job_help, stdout);
        return CMSCTL_EXIT_OK;
    }
    if (strcmp(sub, "submit") == 0)
        return submit_main(n, a);
    if (strcmp(sub, "cancel") == 0)
        return cancel_main(n, a);
    if (strcmp(sub, "get") == 0)
        return get_main(n, a);
    if (strcmp(sub, "list") == 0)
        return list_main(n, a);
    if (strcmp(sub, "metrics") == 0)
        return metrics_main(n, a);
    if (strcmp(sub, "watch") == 0)
        return watch_main(n, a);
    return cmsctl_usage(prog, "unknown sub-verb \"%s\": want %s", sub, want);
}
