/* libFuzzer target for cms-training's commands: byte 0 picks the verb
 * (submit, cancel, get, list, metrics, budget, report), the rest is the
 * body, decoded as cms_cmd decodes it (cmdfuzz.h) and checked as the
 * verb's handler checks it before any database work: the
 * training/validate.h checks in the handler's order, the handler's own
 * limits, and for submit the privacy plan (training/plan.h, the
 * accountant) the handler makes before it reads anything.
 *
 * Nothing may crash, leak or take long (the accountant runs on the
 * service's loop). A refusal names a field of the request (or a path into
 * its config) and says why; checking the same body again gives the same
 * verdict; an accepted config holds what tv_config_check promises (q in
 * (0, 1], steps >= 1, a noise multiplier the accountant takes), and a plan
 * keeps its projected epsilon within the budget, grants at least the
 * planned steps, and its step curve survives the text the job stores it
 * as, exactly. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmdfuzz.h"
#include "cms/v1/training.pb-c.h"
#include "rdp.h"
#include "training/plan.h"
#include "training/validate.h"
#include "uuid.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define LIST_MAX 1000    /* jobs.c */
#define MESSAGE_MAX 1024 /* reports.c */

enum { V_SUBMIT, V_CANCEL, V_GET, V_LIST, V_METRICS, V_BUDGET, V_REPORT, NVERBS };
static const fz_verb verbs[NVERBS] = {
    [V_SUBMIT] = {"submit", &cms__v1__submit_job__descriptor},
    [V_CANCEL] = {"cancel", &cms__v1__cancel_job__descriptor},
    [V_GET] = {"get", &cms__v1__job_ref__descriptor},
    [V_LIST] = {"list", &cms__v1__list_jobs__descriptor},
    [V_METRICS] = {"metrics", &cms__v1__job_ref__descriptor},
    [V_BUDGET] = {"budget", &cms__v1__contract_budget_ref__descriptor},
    [V_REPORT] = {"report", &cms__v1__worker_report__descriptor},
};

typedef struct verdict {
    bool ok;
    bool field_required;
    tv_err e;
} verdict;

static bool refuse(verdict *v, const char *field, const char *msg)
{
    v->field_required = false;
    snprintf(v->e.field, sizeof v->e.field, "%s", field ? field : "");
    snprintf(v->e.msg, sizeof v->e.msg, "%s", msg);
    return false;
}

static void config_holds(const char *json, const tv_config *c)
{
    tv_config again;
    tv_err e;
    if (!(c->q > 0 && c->q <= 1) || c->steps < 1 || c->batch_size < 1 ||
        c->dataset_size < c->batch_size || !(c->epsilon > 0) || !isfinite(c->epsilon) ||
        !(c->delta > 0 && c->delta < 1) ||
        (c->noise_multiplier != 0 && !(c->noise_multiplier >= CMS_RDP_SIGMA_MIN)) ||
        c->architecture[0] == '\0' || c->dataset[0] == '\0')
        abort();
    if (!tv_config_check(json, &again, &e) || strcmp(again.architecture, c->architecture) != 0 ||
        strcmp(again.dataset, c->dataset) != 0 || again.epsilon != c->epsilon ||
        again.delta != c->delta || again.learning_rate != c->learning_rate ||
        again.max_grad_norm != c->max_grad_norm || again.noise_multiplier != c->noise_multiplier ||
        again.batch_size != c->batch_size || again.epochs != c->epochs ||
        again.dataset_size != c->dataset_size || again.q != c->q || again.steps != c->steps)
        abort();
}

static void plan_holds(const tp_plan *p, const tv_config *c, double budget)
{
    char text[TP_CURVE_TEXT_MAX];
    double back[CMS_RDP_NORDERS];
    if (p->planned_steps != c->steps || !(p->projected_eps <= budget) ||
        p->max_steps < p->planned_steps || p->max_steps > TP_STEPS_MAX ||
        !(p->sigma >= CMS_RDP_SIGMA_MIN) ||
        (c->noise_multiplier > 0 && p->sigma != c->noise_multiplier) ||
        tp_epsilon(p->rdp_step, p->planned_steps, p->delta) != p->projected_eps)
        abort();
    for (size_t i = 0; i < CMS_RDP_NORDERS; i++)
        if (isnan(p->rdp_step[i]) || p->rdp_step[i] < 0)
            abort();
    /* jobs.c stores the step curve as text; one it cannot store is refused there */
    if (!tp_curve_format(p->rdp_step, text, sizeof text))
        return;
    if (!tp_curve_parse(text, back) || memcmp(back, p->rdp_step, sizeof back) != 0)
        abort();
}

static bool check_submit(const Cms__V1__SubmitJob *m, verdict *v)
{
    tv_config c;
    tp_plan plan;
    v->field_required = true;
    if (!tv_uuid(m->contract_id, "contract_id", &v->e) ||
        !tv_config_check(m->config_json, &c, &v->e) ||
        !tv_budget(m->privacy_budget, c.epsilon, &v->e))
        return false;
    config_holds(m->config_json, &c);
    if (!(m->privacy_budget > 0) || !isfinite(m->privacy_budget) || m->privacy_budget < c.epsilon)
        abort();
    const char *model = m->model_name[0] ? m->model_name : c.architecture;
    if (!tv_model_name(model, &v->e) || !tp_plan_job(&c, m->privacy_budget, &plan, &v->e))
        return false;
    plan_holds(&plan, &c, m->privacy_budget);
    return true;
}

static bool check_cancel(const Cms__V1__CancelJob *m, verdict *v)
{
    v->field_required = true;
    if (!tv_uuid(m->id, "id", &v->e))
        return false;
    if (strlen(m->reason) > 64)
        return refuse(v, "reason", "reason is longer than 64 bytes");
    return true;
}

static bool check_ref(const char *id, const char *field, verdict *v)
{
    cms_uuid u;
    v->field_required = true;
    if (!tv_uuid(id, field, &v->e))
        return false;
    if (!cms_uuid_parse(id, strlen(id), &u))
        abort();
    return true;
}

static bool check_list(const Cms__V1__ListJobs *m, verdict *v)
{
    tv_status st;
    v->field_required = true;
    if ((m->contract_id[0] && !tv_uuid(m->contract_id, "contract_id", &v->e)) ||
        (m->status[0] && !tv_status_parse(m->status, "status", &st, &v->e)) ||
        (m->after[0] && !tv_uuid(m->after, "after", &v->e)))
        return false;
    if (m->limit < 0 || m->limit > LIST_MAX)
        return refuse(v, "limit", "limit must be 1 to 1000 (0: 100)");
    if (m->status[0] && strcmp(tv_status_name(st), m->status) != 0)
        abort();
    return true;
}

/* reports.c's h_report, for a machine caller */
static bool check_report(const Cms__V1__WorkerReport *m, verdict *v)
{
    if (!check_ref(m->job_id, "job_id", v))
        return false;
    if (m->attempt < 1)
        return refuse(v, NULL, "attempt must be 1 or more: the dispatch's");
    if (m->kind < CMS__V1__REPORT_KIND__REPORT_KIND_STARTED ||
        m->kind > CMS__V1__REPORT_KIND__REPORT_KIND_STOPPED)
        return refuse(v, NULL, "kind must be started, progress, completed, failed or stopped");
    if (m->steps < 0 || m->examples < 0)
        return refuse(v, NULL, "steps and examples must not be negative");
    if (!isfinite(m->loss) || !isfinite(m->accuracy) || m->accuracy < 0 || m->accuracy > 1)
        return refuse(v, NULL, "loss must be finite and accuracy in [0, 1]");
    if (strlen(m->message) > MESSAGE_MAX)
        return refuse(v, NULL, "message is longer than 1024 bytes");
    return true;
}

static bool check(int verb, const ProtobufCMessage *body, verdict *v)
{
    memset(v, 0, sizeof *v);
    switch (verb) {
    case V_SUBMIT:
        return v->ok = check_submit((const void *)body, v);
    case V_CANCEL:
        return v->ok = check_cancel((const void *)body, v);
    case V_GET:
    case V_METRICS:
        return v->ok = check_ref(((const Cms__V1__JobRef *)(const void *)body)->id, "id", v);
    case V_LIST:
        return v->ok = check_list((const void *)body, v);
    case V_BUDGET:
        return v->ok =
                   check_ref(((const Cms__V1__ContractBudgetRef *)(const void *)body)->contract_id,
                             "contract_id", v);
    case V_REPORT:
        return v->ok = check_report((const void *)body, v);
    }
    abort();
}

FZ_CMD_TARGET
