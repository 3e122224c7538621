/* Stream provisioning and probing: blocking JetStream API calls on a helper thread per
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
    warn_diff_i(sp->name, "work_queue", sp->work_queue ? 1 : 0,
                cfg->Retention == js_WorkQueuePolicy ? 1 : 0);
    warn_diff_i(sp->name, "replicas", sp->replicas > 1 ? sp->replicas : 1,
                cfg->Replicas > 1 ? cfg->Replicas : 1);
    warn_diff_i(sp->name, "append_only", sp->append_only ? 1 : 0,
                cfg->DenyDelete && cfg->DenyPurge ? 1 : 0);
    if (sp->duplicates_ms > 0)
        warn_diff_i(sp->name, "duplicates_ms", sp->duplicates_ms, cfg->Duplicates / NS_PER_MS);
}

/* ---- durables ---- */

static void warn_durable_diff(const cms_nats_durable_spec *d, const char *setting, int64_t want,
                              int64_t have)
{
    if (want != have)
        cms_log_warn("nats: consumer differs from the expected settings; using it as it is",
                     "{s:s, s:s, s:s, s:I, s:I}", "stream", d->stream, "durable", d->durable,
                     "setting", setting, "expected", (json_int_t)want, "actual", (json_int_t)have);
}

/* Logs how an existing durable differs from d; it is used as it is
 * (operators may manage consumers themselves). */
static void compare_durable(const cms_nats_durable_spec *d, const jsConsumerConfig *h)
{
    const char *f = d->filter_subject;
    warn_durable_diff(d, "max_ack_pending", d->max_ack_pending, h->MaxAckPending);
    warn_durable_diff(d, "ack_wait_ms", d->ack_wait_ms, h->AckWait / NS_PER_MS);
    warn_durable_diff(d, "max_deliver", d->max_deliver != 0 ? d->max_deliver : -1, h->MaxDeliver);
    warn_durable_diff(d, "ack_explicit", 1, h->AckPolicy == js_AckExplicit);
    if ((h->FilterSubject == NULL || *h->FilterSubject == '\0') != (f == NULL) ||
        (f != NULL && h->FilterSubject != NULL && strcmp(h->FilterSubject, f) != 0))
        cms_log_warn("nats: consumer differs from the expected settings; using it as it is",
                     "{s:s, s:s, s:s, s:s, s:s}", "stream", d->stream, "durable", d->durable,
                     "setting", "filter_subject", "expected", f ? f : "", "actual",
                     h->FilterSubject ? h->FilterSubject : "");
}

natsStatus nats_durable_ensure(jsCtx *js, const cms_nats_durable_spec *d, bool create)
{
    jsConsumerInfo *ci = NULL;
    jsErrCode jerr = 0;
    natsStatus st = js_GetConsumerInfo(&ci, js, d->stream, d->durable, NULL, &jerr);
    if (st == NATS_OK) {
        compare_durable(d, ci->Config);
        jsConsumerInfo_Destroy(ci);
        return NATS_OK;
    }
    if (st != NATS_NOT_FOUND && jerr != JSConsumerNotFoundErr)
        goto out; /* the server did not answer (or this user may not ask): retried */
    if (!create) {
        st = NATS_NOT_FOUND;
        goto out;
    }
    jsConsumerConfig cfg;
    jsConsumerConfig_Init(&cfg);
    cfg.Durable = d->durable;
    cfg.AckPolicy = js_AckExplicit;
    cfg.DeliverPolicy = js_DeliverAll;
    cfg.AckWait = d->ack_wait_ms * NS_PER_MS;
    cfg.MaxDeliver = d->max_deliver != 0 ? d->max_deliver : -1;
    cfg.MaxAckPending = d->max_ack_pending;
    cfg.FilterSubject = d->filter_subject;
    jerr = 0;
    st = js_AddConsumer(&ci, js, d->stream, &cfg, NULL, &jerr);
    jsConsumerInfo_Destroy(ci);
    ci = NULL;
    if (st == NATS_OK) {
        cms_log_info("nats: consumer created", "{s:s, s:s}", "stream", d->stream, "durable",
                     d->durable);
    } else if (jerr != 0) {
        /* another process created it in between: bind that one */
        jsErrCode jerr2 = 0;
        if (js_GetConsumerInfo(&ci, js, d->stream, d->durable, NULL, &jerr2) == NATS_OK) {
            compare_durable(d, ci->Config);
            st = NATS_OK;
        }
        jsConsumerInfo_Destroy(ci);
    }
out:
    if (st == NATS_NOT_FOUND)
        cms_log_warn("nats: durable consumer missing: run cms-migrate provision; retrying",
                     "{s:s, s:s}", "stream", d->stream, "durable", d->durable);
    else if (st != NATS_OK)
        cms_log_warn("nats: cannot bind or create the durable consumer (creating one is the "
                     "migrator's right: run cms-migrate provision); retrying",
                     "{s:s, s:s, s:s, s:i, s:s}", "stream", d->stream, "durable", d->durable,
                     "error", natsStatus_GetText(st), "js_error", (int)jerr, "detail",
                     nats_GetLastError(NULL) ? nats_GetLastError(NULL) : "");
    return st;
}

/* ---- streams ---- */

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
    if (sp->work_queue)
        cfg.Retention = js_WorkQueuePolicy;
    cfg.DenyDelete = sp->append_only;
    cfg.DenyPurge = sp->append_only;
    cfg.Replicas = sp->replicas > 1 ? sp->replicas : 1;
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
        cms_log_warn("nats: stream missing and not created (creating streams is the migrator's "
                     "right: run cms-migrate provision); retrying",
                     "{s:s, s:s, s:i, s:s}", "stream", sp->name, "error", natsStatus_GetText(st),
                     "js_error", (int)jerr, "detail",
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
    for (size_t i = 0; p->durables != NULL && i < p->ndurables; i++) {
        free((void *)p->durables[i].stream);
        free((void *)p->durables[i].durable);
        free((void *)p->durables[i].filter_subject);
    }
    free(p->specs);
    free(p->durables);
    free(p);
}

/* A helper thread's result, handed to the loop: false if the queue is
 * closed (the caller frees what it holds). */
static bool helper_finish(cms_nats *n, ev *e)
{
    uv_mutex_lock(&n->mu);
    bool queued = nats_push_locked(n, e);
    n->prov_running--;
    uv_cond_broadcast(&n->cond);
    uv_mutex_unlock(&n->mu);
    return queued;
}

/* Starts a helper thread, counted, not joined: close waits for
 * prov_running to reach 0. CMS_NATS_ENOMEM if it cannot start. */
static int helper_start(cms_nats *n, void (*main)(void *), void *arg)
{
    uv_mutex_lock(&n->mu);
    n->prov_running++;
    uv_mutex_unlock(&n->mu);
    uv_thread_t t;
    if (uv_thread_create(&t, main, arg) != 0) {
        uv_mutex_lock(&n->mu);
        n->prov_running--;
        uv_mutex_unlock(&n->mu);
        return CMS_NATS_ENOMEM;
    }
    pthread_detach(t);
    return CMS_NATS_OK;
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
        for (size_t i = 0; i < p->ndurables && ok; i++)
            ok = nats_durable_ensure(js, &p->durables[i], true) == NATS_OK;
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
    if (!helper_finish(n, &p->ev))
        nats_prov_free(p);
}

int cms_nats_provision(cms_nats *n, const cms_nats_stream_spec *specs, size_t count,
                       void (*done)(void *arg, cms_nats_err err), void *arg)
{
    return cms_nats_provision_all(n, specs, count, NULL, 0, done, arg);
}

int cms_nats_provision_all(cms_nats *n, const cms_nats_stream_spec *specs, size_t count,
                           const cms_nats_durable_spec *durables, size_t ndurables,
                           void (*done)(void *arg, cms_nats_err err), void *arg)
{
    int rc = CMS_NATS_OK;
    prov *p = NULL;
    if (n == NULL || (specs == NULL && count > 0) || (durables == NULL && ndurables > 0) ||
        count + ndurables == 0 || done == NULL) {
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
    for (size_t i = 0; i < ndurables; i++) {
        if (durables[i].stream == NULL || durables[i].durable == NULL ||
            durables[i].max_ack_pending < 0 || durables[i].ack_wait_ms < 0) {
            rc = CMS_NATS_EINVAL;
            goto out;
        }
    }
    if (n->state >= N_CLOSING) {
        rc = CMS_NATS_ECLOSED;
        goto out;
    }
    p = calloc(1, sizeof *p);
    if (p == NULL || (count > 0 && (p->specs = calloc(count, sizeof *p->specs)) == NULL) ||
        (ndurables > 0 && (p->durables = calloc(ndurables, sizeof *p->durables)) == NULL)) {
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
    p->ndurables = ndurables;
    for (size_t i = 0; i < ndurables; i++) {
        const cms_nats_durable_spec *d = &durables[i];
        p->durables[i] = *d;
        p->durables[i].stream = nats_dupstr(d->stream);
        p->durables[i].durable = nats_dupstr(d->durable);
        p->durables[i].filter_subject = d->filter_subject ? nats_dupstr(d->filter_subject) : NULL;
        if (p->durables[i].stream == NULL || p->durables[i].durable == NULL ||
            (d->filter_subject != NULL && p->durables[i].filter_subject == NULL)) {
            rc = CMS_NATS_ENOMEM;
            goto out;
        }
    }
    p->n = n;
    p->done = done;
    p->arg = arg;
    if ((rc = helper_start(n, prov_main, p)) != CMS_NATS_OK)
        goto out;
    p = NULL;
out:
    nats_prov_free(p);
    return rc;
}

/* ---- probing what a stream holds ---- */

void nats_probe_free(probe_job *p)
{
    if (p == NULL)
        return;
    for (size_t i = 0; p->probes != NULL && i < p->count; i++) {
        free((void *)p->probes[i].stream);
        free((void *)p->probes[i].msg_id);
    }
    free(p->probes);
    free(p->present);
    free(p);
}

/* One stream's last sequence: false on a failure worth retrying (*gone set
 * when the stream does not exist: nothing of it is present). */
static bool stream_last_seq(jsCtx *js, const char *stream, uint64_t *last, bool *gone)
{
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus st = js_GetStreamInfo(&si, js, stream, NULL, &jerr);
    *gone = st == NATS_NOT_FOUND || jerr == JSStreamNotFoundErr;
    *last = 0;
    if (st == NATS_OK && si != NULL)
        *last = si->State.LastSeq;
    jsStreamInfo_Destroy(si);
    return st == NATS_OK || *gone;
}

/* present[i] for one probe: false on a failure worth retrying. */
static bool probe_one(jsCtx *js, const cms_nats_probe *pr, uint64_t last, bool *present)
{
    natsMsg *m = NULL;
    jsErrCode jerr = 0;
    natsStatus st = js_GetMsg(&m, js, pr->stream, pr->seq, NULL, &jerr);
    if (st == NATS_OK) {
        const char *id = NULL;
        *present = natsMsgHeader_Get(m, "Nats-Msg-Id", &id) == NATS_OK && id != NULL &&
                   strcmp(id, pr->msg_id) == 0;
        natsMsg_Destroy(m);
        return true;
    }
    if (st == NATS_NOT_FOUND || jerr == JSNoMessageFoundErr) {
        *present = pr->seq <= last; /* removed since, not lost */
        return true;
    }
    cms_log_warn("nats: reading a stream message failed", "{s:s, s:I, s:s, s:i}", "stream",
                 pr->stream, "seq", (json_int_t)pr->seq, "error", natsStatus_GetText(st),
                 "js_error", (int)jerr);
    return false;
}

static void probe_main(void *arg)
{
    probe_job *p = arg;
    cms_nats *n = p->n;
    jsCtx *js = nats_wait_ready(n, NULL);
    cms_nats_err result = js != NULL ? CMS_NATS_OK : CMS_NATS_ECLOSED;
    const char *stream = NULL;
    uint64_t last = 0;
    bool gone = false;
    for (size_t i = 0; i < p->count && result == CMS_NATS_OK; i++) {
        const cms_nats_probe *pr = &p->probes[i];
        if (nats_closing(n)) {
            result = CMS_NATS_ECLOSED;
        } else if ((stream == NULL || strcmp(stream, pr->stream) != 0) &&
                   !stream_last_seq(js, pr->stream, &last, &gone)) {
            result = CMS_NATS_EIO;
        } else {
            stream = pr->stream;
            if (gone)
                p->present[i] = false;
            else if (!probe_one(js, pr, last, &p->present[i]))
                result = CMS_NATS_EIO;
        }
    }
    p->result = result;
    p->ev.kind = EV_PROBED;
    if (!helper_finish(n, &p->ev))
        nats_probe_free(p);
}

int cms_nats_probe_stream(cms_nats *n, const cms_nats_probe *probes, size_t count,
                          void (*done)(void *arg, cms_nats_err err, const bool *present), void *arg)
{
    if (n == NULL || probes == NULL || count == 0 || done == NULL)
        return CMS_NATS_EINVAL;
    for (size_t i = 0; i < count; i++) {
        if (probes[i].stream == NULL || probes[i].msg_id == NULL || probes[i].seq == 0)
            return CMS_NATS_EINVAL;
    }
    if (n->state >= N_CLOSING)
        return CMS_NATS_ECLOSED;
    probe_job *p = calloc(1, sizeof *p);
    if (p == NULL || (p->probes = calloc(count, sizeof *p->probes)) == NULL ||
        (p->present = calloc(count, sizeof *p->present)) == NULL) {
        nats_probe_free(p);
        return CMS_NATS_ENOMEM;
    }
    p->count = count;
    for (size_t i = 0; i < count; i++) {
        p->probes[i].seq = probes[i].seq;
        p->probes[i].stream = nats_dupstr(probes[i].stream);
        p->probes[i].msg_id = nats_dupstr(probes[i].msg_id);
        if (p->probes[i].stream == NULL || p->probes[i].msg_id == NULL) {
            nats_probe_free(p);
            return CMS_NATS_ENOMEM;
        }
    }
    p->n = n;
    p->done = done;
    p->arg = arg;
    int rc = helper_start(n, probe_main, p);
    if (rc != CMS_NATS_OK)
        nats_probe_free(p);
    return rc;
}
