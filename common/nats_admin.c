/* Stream provisioning: blocking JetStream API calls on a helper thread per
 * call, the result back on the loop; see nats_int.h. */
#include "nats_int.h"

#include "backoff.h"
#include "log.h"

#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

static void warn_diff_i(const char *stream, const char *setting, int64_t want, int64_t have)
{
    if (want != have)
        cms_log_warn("nats: stream differs from the expected settings; using it as it is",
                     "{s:s, s:s, s:I, s:I}", "stream", stream, "setting", setting, "expected",
                     (json_int_t)want, "actual", (json_int_t)have);
}

static void compare_stream(const cms_nats_stream_spec *sp, const jsStreamConfig *cfg)
{
    bool has_subject = false;
    for (int i = 0; i < cfg->SubjectsLen; i++) {
        if (strcmp(cfg->Subjects[i], sp->subject) == 0)
            has_subject = true;
    }
    if (!has_subject || cfg->SubjectsLen != 1)
        cms_log_warn("nats: stream differs from the expected settings; using it as it is",
                     "{s:s, s:s, s:s, s:i}", "stream", sp->name, "setting", "subjects", "expected",
                     sp->subject, "actual_count", cfg->SubjectsLen);
    warn_diff_i(sp->name, "storage_memory", sp->memory ? 1 : 0,
                cfg->Storage == js_MemoryStorage ? 1 : 0);
    warn_diff_i(sp->name, "max_age_ms", sp->max_age_ms, cfg->MaxAge / NS_PER_MS);
    if (sp->duplicates_ms > 0)
        warn_diff_i(sp->name, "duplicates_ms", sp->duplicates_ms, cfg->Duplicates / NS_PER_MS);
}

/* One stream: created if missing, else compared. NATS_OK or the failure. */
static natsStatus provision_one(jsCtx *js, const cms_nats_stream_spec *sp)
{
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus st = js_GetStreamInfo(&si, js, sp->name, NULL, &jerr);
    if (st == NATS_OK) {
        compare_stream(sp, si->Config);
        goto out;
    }
    if (st != NATS_NOT_FOUND && jerr != JSStreamNotFoundErr)
        goto out;
    jsStreamConfig cfg;
    jsStreamConfig_Init(&cfg);
    const char *subjects[1] = {sp->subject};
    cfg.Name = sp->name;
    cfg.Subjects = subjects;
    cfg.SubjectsLen = 1;
    cfg.Storage = sp->memory ? js_MemoryStorage : js_FileStorage;
    cfg.MaxAge = sp->max_age_ms * NS_PER_MS;
    cfg.Duplicates = sp->duplicates_ms * NS_PER_MS;
    jerr = 0;
    st = js_AddStream(&si, js, &cfg, NULL, &jerr);
    if (st == NATS_OK) {
        cms_log_info("nats: stream created", "{s:s, s:s}", "stream", sp->name, "subject",
                     sp->subject);
    } else if (jerr == JSStreamNameExistErr) {
        /* another process created it meanwhile */
        jerr = 0;
        st = js_GetStreamInfo(&si, js, sp->name, NULL, &jerr);
        if (st == NATS_OK)
            compare_stream(sp, si->Config);
    }
out:
    if (st != NATS_OK)
        cms_log_warn("nats: stream provisioning failed; retrying", "{s:s, s:s, s:i, s:s}", "stream",
                     sp->name, "error", natsStatus_GetText(st), "js_error", (int)jerr, "detail",
                     nats_GetLastError(NULL) ? nats_GetLastError(NULL) : "");
    jsStreamInfo_Destroy(si);
    return st;
}

void nats_prov_free(prov *p)
{
    if (p == NULL)
        return;
    for (size_t i = 0; p->specs != NULL && i < p->count; i++) {
        free((void *)p->specs[i].name);
        free((void *)p->specs[i].subject);
    }
    free(p->specs);
    free(p);
}

static void prov_main(void *arg)
{
    prov *p = arg;
    cms_nats *n = p->n;
    cms_nats_err result = CMS_NATS_ECLOSED;
    jsCtx *js = nats_wait_ready(n, NULL);
    cms_backoff b;
    cms_backoff_init(&b, BACKOFF_MIN_MS, BACKOFF_MAX_MS);
    while (js != NULL && !nats_closing(n)) {
        bool ok = true;
        for (size_t i = 0; i < p->count && ok; i++)
            ok = provision_one(js, &p->specs[i]) == NATS_OK;
        if (ok) {
            result = CMS_NATS_OK;
            break;
        }
        uint64_t delay = cms_backoff_next(&b);
        uv_mutex_lock(&n->mu);
        uint64_t deadline = uv_hrtime() + delay * NS_PER_MS;
        while (n->qstate == Q_OPEN && nats_wait_until(&n->cond, &n->mu, deadline)) {
        }
        uv_mutex_unlock(&n->mu);
    }
    p->result = result;
    p->ev.kind = EV_PROVISIONED;
    uv_mutex_lock(&n->mu);
    bool queued = nats_push_locked(n, &p->ev);
    n->prov_running--;
    uv_cond_broadcast(&n->cond);
    uv_mutex_unlock(&n->mu);
    if (!queued)
        nats_prov_free(p);
}

int cms_nats_provision(cms_nats *n, const cms_nats_stream_spec *specs, size_t count,
                       void (*done)(void *arg, cms_nats_err err), void *arg)
{
    int rc = CMS_NATS_OK;
    prov *p = NULL;
    if (n == NULL || specs == NULL || count == 0 || done == NULL) {
        rc = CMS_NATS_EINVAL;
        goto out;
    }
    for (size_t i = 0; i < count; i++) {
        if (specs[i].name == NULL || specs[i].subject == NULL || specs[i].max_age_ms < 0 ||
            specs[i].duplicates_ms < 0) {
            rc = CMS_NATS_EINVAL;
            goto out;
        }
    }
    if (n->state >= N_CLOSING) {
        rc = CMS_NATS_ECLOSED;
        goto out;
    }
    p = calloc(1, sizeof *p);
    if (p == NULL || (p->specs = calloc(count, sizeof *p->specs)) == NULL) {
        rc = CMS_NATS_ENOMEM;
        goto out;
    }
    p->count = count;
    for (size_t i = 0; i < count; i++) {
        p->specs[i] = specs[i];
        p->specs[i].name = nats_dupstr(specs[i].name);
        p->specs[i].subject = nats_dupstr(specs[i].subject);
        if (p->specs[i].name == NULL || p->specs[i].subject == NULL) {
            rc = CMS_NATS_ENOMEM;
            goto out;
        }
    }
    p->n = n;
    p->done = done;
    p->arg = arg;
    uv_mutex_lock(&n->mu);
    n->prov_running++;
    uv_mutex_unlock(&n->mu);
    uv_thread_t t;
    if (uv_thread_create(&t, prov_main, p) != 0) {
        uv_mutex_lock(&n->mu);
        n->prov_running--;
        uv_mutex_unlock(&n->mu);
        rc = CMS_NATS_ENOMEM;
        goto out;
    }
    /* counted, not joined: close waits for prov_running to reach 0 */
    pthread_detach(t);
    p = NULL;
out:
    nats_prov_free(p);
    return rc;
}
