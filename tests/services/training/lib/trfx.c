/* The fixture of cms-training's tests; see trfx.h. */
#include "trfx.h"

#include "bus.h"
#include "cms/v1/identity.pb-c.h"
#include "testenv.h"

#include <criterion/criterion.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef CMS_SOURCE_DIR
#error CMS_SOURCE_DIR must name the repository
#endif

static const char SQL_NOTES[] =
    "CREATE TRIGGER ctfx_note AFTER INSERT OR UPDATE ON training_contracts"
    " FOR EACH STATEMENT EXECUTE FUNCTION ctfx_note();"
    "CREATE TRIGGER ctfx_note AFTER INSERT OR UPDATE ON training_parties"
    " FOR EACH STATEMENT EXECUTE FUNCTION ctfx_note();"
    "CREATE TRIGGER ctfx_note AFTER INSERT OR UPDATE ON training_jobs"
    " FOR EACH STATEMENT EXECUTE FUNCTION ctfx_note();";

static const char *const consumers[][2] = {{"training-contract", "cms.events.contract.>"},
                                           {"training-identity", "cms.events.identity.>"}};

static void add_durable(trfx *t, const char *stream, const char *name, const char *filter,
                        int64_t ack_wait_s)
{
    jsConsumerConfig cc;
    jsConsumerConfig_Init(&cc);
    cc.Durable = name;
    cc.FilterSubject = filter;
    cc.AckPolicy = js_AckExplicit;
    cc.DeliverPolicy = js_DeliverAll;
    cc.MaxAckPending = 256;
    cc.AckWait = ack_wait_s * INT64_C(1000000000);
    jsErrCode jerr = 0;
    jsConsumerInfo *ci = NULL;
    cr_assert_eq(js_AddConsumer(&ci, t->c.f.js, stream, &cc, NULL, &jerr), NATS_OK,
                 "durable %s: %d", name, (int)jerr);
    jsConsumerInfo_Destroy(ci);
}

void trfx_setup(trfx *t, const char *dbprefix, const char *const *set)
{
    memset(t, 0, sizeof *t);
    ctfx_setup(&t->c, dbprefix);
    PGconn *pg = PQconnectdb(t->c.f.db);
    cr_assert_eq(PQstatus(pg), CONNECTION_OK, "%s", PQerrorMessage(pg));
    PGresult *res = PQexec(pg, SQL_NOTES);
    cr_assert_eq(PQresultStatus(res), PGRES_COMMAND_OK, "%s", PQerrorMessage(pg));
    PQclear(res);
    PQfinish(pg);
    const char *sfx = t->c.suffix;
    for (int i = 0; i < 2; i++) {
        char name[96];
        snprintf(name, sizeof name, "%s-%s", consumers[i][0], sfx);
        add_durable(t, CMS_BUS_EVENTS_STREAM, name, consumers[i][1], 30);
    }
    snprintf(t->work_subject, sizeof t->work_subject, "%s.%s", CMS_BUS_WORK_TRAINING, sfx);
    snprintf(t->work_durable, sizeof t->work_durable, "workers-%s", sfx);
    add_durable(t, CMS_BUS_WORK_STREAM, t->work_durable, t->work_subject, 30);
    char suffix[96], work[160];
    snprintf(suffix, sizeof suffix, "CMS_CONSUMER_SUFFIX=%s", sfx);
    snprintf(work, sizeof work, "CMS_WORK_SUBJECT=%s", t->work_subject);
    const char *all[24] = {suffix,
                           work,
                           "CMS_WORKER_TIMEOUT=3s",
                           "CMS_STOP_TIMEOUT=2s",
                           "CMS_MAX_ATTEMPTS=2",
                           "CMS_REPORT_INTERVAL=200ms",
                           "CMS_PROGRESS_EVENT_INTERVAL=0"};
    int n = 7;
    for (size_t k = 0; set && set[k] && n < 23; k++)
        all[n++] = set[k];
    all[n] = NULL;
    svcfx_start_at(&t->c.f, TRFX_TRAINING, "cms-training", all);
}

void trfx_teardown(trfx *t)
{
    for (int i = 0; i < TRFX_WORKERS; i++) {
        if (t->workers[i] > 0)
            trfx_kill9_worker(t, i);
        if (t->worker_key_file[i][0])
            unlink(t->worker_key_file[i]);
    }
    if (t->work)
        natsSubscription_Destroy(t->work);
    if (t->c.suffix[0] && t->c.f.js) {
        for (int i = 0; i < 2; i++) {
            char name[96];
            snprintf(name, sizeof name, "%s-%s", consumers[i][0], t->c.suffix);
            (void)js_DeleteConsumer(t->c.f.js, CMS_BUS_EVENTS_STREAM, name, NULL, NULL);
        }
        (void)js_DeleteConsumer(t->c.f.js, CMS_BUS_WORK_STREAM, t->work_durable, NULL, NULL);
    }
    ctfx_teardown(&t->c);
}

void trfx_wait_contract(trfx *t, const char *contract_id, const char *status)
{
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT coalesce((SELECT status::text FROM training_contracts WHERE contract_id = "
             "'%s'), 'unknown')",
             contract_id);
    char *got = svcfx_wait_sql(&t->c.f, "training_contracts", sql, status, 20000);
    cr_assert_str_eq(got, status, "cms-training hears that %s is %s", contract_id, status);
    free(got);
}

void trfx_wait_party(trfx *t, const char *identity_id, const char *status)
{
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT coalesce((SELECT status::text FROM training_parties WHERE identity_id = "
             "'%s'), 'unknown')",
             identity_id);
    char *got = svcfx_wait_sql(&t->c.f, "training_parties", sql, status, 20000);
    cr_assert_str_eq(got, status, "cms-training hears that %s is %s", identity_id, status);
    free(got);
}

void trfx_worker_identity(trfx *t, const char *name, ctparty *w)
{
    memset(w, 0, sizeof *w);
    snprintf(w->name, sizeof w->name, "%s", name);
    Cms__V1__CreateIdentity m = CMS__V1__CREATE_IDENTITY__INIT;
    m.name = (char *)name;
    m.type = (char *)"machine";
    m.metadata_json = (char *)"";
    Cms__V1__Identity *id = NULL;
    int code =
        svcfx_call(&t->c.f, "identity", t->c.f.admin_key, NULL, "create", &m.base,
                   &cms__v1__identity__descriptor, (ProtobufCMessage **)&id, t->field, t->msg);
    cr_assert_eq(code, 0, "create %s: %d %s: %s", name, code, t->field, t->msg);
    snprintf(w->id, sizeof w->id, "%s", id->id);
    cms__v1__identity__free_unpacked(id, NULL);
    Cms__V1__IssueCredential k = CMS__V1__ISSUE_CREDENTIAL__INIT;
    k.identity_id = w->id;
    k.type = (char *)"api_key";
    k.expires_at_us = cms_bus_now_us() + 86400 * INT64_C(1000000);
    k.public_key = (char *)"";
    Cms__V1__Credential *cred = NULL;
    code =
        svcfx_call(&t->c.f, "identity", t->c.f.admin_key, NULL, "issue_credential", &k.base,
                   &cms__v1__credential__descriptor, (ProtobufCMessage **)&cred, t->field, t->msg);
    cr_assert_eq(code, 0, "issue %s's key: %d %s", name, code, t->msg);
    snprintf(w->key, sizeof w->key, "%s", cred->api_key);
    cms__v1__credential__free_unpacked(cred, NULL);
}

void trfx_contract(trfx *t, const ctparty *prov, const ctparty *cons, const char *extra,
                   char id[37])
{
    trfx_wait_party(t, prov->id, "active");
    trfx_wait_party(t, cons->id, "active");
    Cms__V1__Contract *k = ctfx_signed(&t->c, prov, cons, ctfx_terms(-60, 86400, extra));
    /* signed after its start date: active at once, or by the party */
    if (strcmp(k->status, "active") != 0) {
        int code = ctfx_simple(&t->c, prov, "activate", k->id, NULL);
        cr_assert(code == 0 || strstr(t->c.msg, "the contract is active") != NULL,
                  "activate: %d %s: %s", code, t->c.field, t->c.msg);
    }
    snprintf(id, 37, "%s", k->id);
    cms__v1__contract__free_unpacked(k, NULL);
    trfx_wait_contract(t, id, "active");
}

int trfx_call(trfx *t, const ctparty *who, const char *verb, const ProtobufCMessage *req,
              const ProtobufCMessageDescriptor *rdesc, ProtobufCMessage **out)
{
    t->field[0] = t->msg[0] = '\0';
    ProtobufCMessage *got = NULL;
    int code =
        svcfx_call(&t->c.f, "training", who ? who->key : t->c.f.admin_key, NULL, verb, req,
                   rdesc ? rdesc : &cms__v1__training_job__descriptor, &got, t->field, t->msg);
    if (out)
        *out = got;
    else if (got)
        protobuf_c_message_free_unpacked(got, NULL);
    return code;
}

const char *trfx_config(int64_t dataset_size, int64_t batch, int64_t epochs, double epsilon,
                        double sigma)
{
    static char buf[1024];
    char noise[64] = "";
    if (sigma > 0)
        snprintf(noise, sizeof noise, ",\"noise_multiplier\":%.17g", sigma);
    snprintf(buf, sizeof buf,
             "{\"model\":{\"architecture\":\"logistic_regression\"},"
             "\"privacy\":{\"epsilon\":%.17g,\"delta\":1e-5,\"noise_mechanism\":\"gaussian\"%s},"
             "\"training\":{\"batch_size\":%lld,\"epochs\":%lld,\"learning_rate\":0.5,"
             "\"dataset\":\"synthetic\",\"dataset_size\":%lld,\"max_grad_norm\":1.0}}",
             epsilon, noise, (long long)batch, (long long)epochs, (long long)dataset_size);
    return buf;
}

int trfx_submit(trfx *t, const ctparty *who, const char *contract_id, const char *config,
                double budget, Cms__V1__TrainingJob **out)
{
    Cms__V1__SubmitJob m = CMS__V1__SUBMIT_JOB__INIT;
    m.model_name = (char *)"";
    m.contract_id = (char *)contract_id;
    m.config_json = (char *)config;
    m.privacy_budget = budget;
    return trfx_call(t, who, "submit", &m.base, NULL, (ProtobufCMessage **)out);
}

Cms__V1__TrainingJob *trfx_get(trfx *t, const ctparty *who, const char *job_id)
{
    Cms__V1__JobRef m = CMS__V1__JOB_REF__INIT;
    m.id = (char *)job_id;
    Cms__V1__TrainingJob *j = NULL;
    int code = trfx_call(t, who, "get", &m.base, NULL, (ProtobufCMessage **)&j);
    cr_assert_eq(code, 0, "get %s: %d %s", job_id, code, t->msg);
    return j;
}

void trfx_wait_status(trfx *t, const char *job_id, const char *status, double timeout_ms)
{
    char sql[200];
    snprintf(sql, sizeof sql,
             "SELECT coalesce((SELECT status::text FROM training_jobs WHERE id = '%s'), 'none')",
             job_id);
    char *got = svcfx_wait_sql(&t->c.f, "training_jobs", sql, status, timeout_ms);
    if (strcmp(got, status) != 0) {
        char *log = svcfx_log(&t->c.f);
        cr_log_error("the services' and workers' log:\n%s", log);
        free(log);
    }
    cr_assert_str_eq(got, status, "job %s is %s", job_id, status);
    free(got);
}

Cms__V1__TrainingDispatch *trfx_pull(trfx *t, double timeout_ms)
{
    if (t->work == NULL) {
        jsSubOptions so;
        jsSubOptions_Init(&so);
        so.Stream = CMS_BUS_WORK_STREAM;
        so.Consumer = t->work_durable;
        so.ManualAck = true;
        jsErrCode jerr = 0;
        cr_assert_eq(js_PullSubscribe(&t->work, t->c.f.js, t->work_subject, t->work_durable, NULL,
                                      &so, &jerr),
                     NATS_OK, "pull subscription: %d", (int)jerr);
    }
    natsMsgList list = {0};
    jsErrCode jerr = 0;
    natsStatus st = natsSubscription_Fetch(&list, t->work, 1, (int64_t)timeout_ms, &jerr);
    if (st != NATS_OK || list.Count == 0) {
        natsMsgList_Destroy(&list);
        return NULL;
    }
    natsMsg *m = list.Msgs[0];
    Cms__V1__TrainingDispatch *d = cms__v1__training_dispatch__unpack(
        NULL, (size_t)natsMsg_GetDataLength(m), (const uint8_t *)natsMsg_GetData(m));
    cr_assert_not_null(d, "a dispatch decodes");
    cr_assert_eq(natsMsg_AckSync(m, NULL, NULL), NATS_OK);
    natsMsgList_Destroy(&list);
    return d;
}

int trfx_report(trfx *t, const ctparty *w, const char *job_id, int attempt,
                Cms__V1__ReportKind kind, int64_t steps, Cms__V1__ReportReply **out)
{
    Cms__V1__WorkerReport m = CMS__V1__WORKER_REPORT__INIT;
    m.job_id = (char *)job_id;
    m.attempt = attempt;
    m.kind = kind;
    m.steps = steps;
    m.loss = 0.5;
    m.accuracy = 0.75;
    m.examples = steps * 10;
    m.message = (char *)"";
    return trfx_call(t, w, "report", &m.base, &cms__v1__report_reply__descriptor,
                     (ProtobufCMessage **)out);
}

pid_t trfx_start_worker(trfx *t, int i, const ctparty *w, const char *const *set)
{
    cr_assert(i >= 0 && i < TRFX_WORKERS);
    cr_assert_eq(t->workers[i], 0, "worker %d already runs", i);
    snprintf(t->worker_key_file[i], sizeof t->worker_key_file[i], "/tmp/cms-trfx-%d-%d.key",
             (int)getpid(), i);
    int fd = open(t->worker_key_file[i], O_WRONLY | O_CREAT | O_TRUNC, 0600);
    cr_assert_geq(fd, 0);
    FILE *f = fdopen(fd, "w");
    cr_assert_not_null(f);
    fprintf(f, "%s\n", w->key);
    fclose(f);
    char key[200], durable[160];
    snprintf(key, sizeof key, "CMS_API_KEY_FILE=%s", t->worker_key_file[i]);
    snprintf(durable, sizeof durable, "CMS_WORK_DURABLE=%s", t->work_durable);
    const char *all[24] = {key, durable, t->c.f.prefix_env,
                           "CMS_DATA_DIR=" CMS_SOURCE_DIR "/tests/data"};
    int n = 4;
    for (size_t k = 0; set && set[k] && n < 23; k++)
        all[n++] = set[k];
    all[n] = NULL;
    t->workers[i] = cms_test_spawn_service("cms-worker", NULL, all, t->c.f.log_file);
    cr_assert_gt(t->workers[i], 0, "cms-worker started");
    return t->workers[i];
}

void trfx_kill9_worker(trfx *t, int i)
{
    if (t->workers[i] <= 0)
        return;
    kill(t->workers[i], SIGKILL);
    waitpid(t->workers[i], NULL, 0);
    t->workers[i] = 0;
}

char *trfx_sql(trfx *t, const char *sql)
{
    return svcfx_sql(&t->c.f, sql);
}
