/* cms-testsvc: the smallest service on the runtime, for the service tests.
 * Verbs: echo (replies with the request), emit (records an event through
 * the outbox in one transaction, replies once committed), record (a row of
 * testsvc_records per run, for the tests of request_id). Callers are
 * authenticated like everywhere: by a resolver of its own that accepts any
 * key of the API key form whose secret is 32 zero bytes ("AAAA...A"), as
 * the identity named by the key's id (the wiring is tested, not
 * cms-identity); or, with CMS_TESTSVC_REMOTE_AUTH=1, through cms-identity
 * like every real service.
 *
 * With CMS_TESTSVC_CONSUMER=<name> (and CMS_TESTSVC_CONSUME_SUBJECT=<filter>)
 * it also consumes events through common/consumer, for the consumer's
 * tests. By the verb of the event type: "poison" is dead-lettered (reason
 * "poison"); "bad" writes a row the database refuses (a NULL in a NOT NULL
 * column: dead-lettered as rejected_by_database); "crash" is applied, then
 * the process kills itself (SIGKILL) between the commit and the ack; any
 * other is applied. Applying one is a row of testsvc_effects (a table the
 * test makes: resource_id, event_id, details NOT NULL, id in commit order),
 * committed with the event's record. */
#include "apikey.h"
#include "cms/v1/envelope.pb-c.h"
#include "service.h"
#include "uuid.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static cms_service *g_svc;

static void h_echo(void *arg, cms_cmd_req *req)
{
    (void)arg;
    cms_cmd_reply(req, cms_cmd_req_body(req));
}

static void emitted(void *arg, cms_pg_err err, const cms_pg_result *res)
{
    cms_cmd_req *req = arg;
    if (err != CMS_PG_OK) {
        cms_cmd_fail_pg(req, err, res, "emit");
        return;
    }
    cms_outbox_kick(cms_service_outbox(g_svc));
    cms_cmd_reply(req, cms_cmd_req_body(req));
}

static void h_emit(void *arg, cms_cmd_req *req)
{
    (void)arg;
    Cms__V1__Envelope *e = (Cms__V1__Envelope *)cms_cmd_req_body(req);
    cms_uuid u;
    char id[CMS_UUID_STRLEN + 1];
    cms_uuid_v7(&u);
    cms_uuid_format(&u, id);
    e->event_id = id; /* the body is ours until the reply */
    size_t len = cms__v1__envelope__get_packed_size(e);
    uint8_t *buf = malloc(len + 1);
    cms__v1__envelope__pack(e, buf);
    e->event_id = (char *)protobuf_c_empty_string;
    cms_pg_job *job = cms_cmd_job_new(req);
    cms_outbox_err rc =
        job ? cms_outbox_add_raw(job, "testsvc", id, "cms.events.testsvc.emitted", buf, len)
            : CMS_OUTBOX_ENOMEM;
    free(buf);
    if (rc != CMS_OUTBOX_OK) {
        cms_pg_job_free(job);
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__INTERNAL, NULL, "out of memory");
        return;
    }
    if (cms_cmd_submit(req, &job, emitted, req) != CMS_PG_OK)
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__UNAVAILABLE, NULL, "database busy");
}

/* record: one row of testsvc_records (a table the test makes) per run,
 * keyed by the body's event_id, in a command's job: what a change with a
 * request_id is, for the tests of request_id across processes. The reply
 * carries the row's id, so every answer to one request_id can be compared. */
static void recorded(void *arg, cms_pg_err err, const cms_pg_result *res)
{
    cms_cmd_req *req = arg;
    if (err != CMS_PG_OK) {
        cms_cmd_fail_pg(req, err, res, "record");
        return;
    }
    const PGresult *r = cms_pg_result_get(res, 0);
    Cms__V1__Envelope reply = CMS__V1__ENVELOPE__INIT;
    reply.event_id = PQgetvalue(r, 0, 0);
    cms_cmd_reply(req, &reply.base);
}

static void h_record(void *arg, cms_cmd_req *req)
{
    (void)arg;
    const Cms__V1__Envelope *e = (const void *)cms_cmd_req_body(req);
    cms_pg_job *job = cms_cmd_job_new(req);
    const char *v[] = {e->event_id};
    if (job == NULL ||
        cms_pg_job_sql(job,
                       "INSERT INTO testsvc_records (key) SELECT $1 FROM pg_sleep(0.02) "
                       "RETURNING id::text",
                       1, v, NULL, NULL) != CMS_PG_OK) {
        cms_pg_job_free(job);
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__INTERNAL, NULL, "out of memory");
        return;
    }
    if (cms_cmd_submit(req, &job, recorded, req) != CMS_PG_OK)
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__UNAVAILABLE, NULL, "database busy");
}

static void resolve(void *arg, const char *key, cms_auth_cb done, void *done_arg)
{
    (void)arg;
    cms_uuid id;
    uint8_t secret[CMS_APIKEY_SECRET_BYTES], zero[CMS_APIKEY_SECRET_BYTES] = {0};
    if (!cms_apikey_parse(key, strlen(key), &id, secret) || memcmp(secret, zero, sizeof zero)) {
        done(done_arg, CMS_AUTH_DENIED, NULL);
        return;
    }
    cms_principal p = {.nroles = 0, .expires_at_us = INT64_MAX};
    cms_uuid_format(&id, p.identity_id);
    cms_uuid_format(&id, p.credential_id);
    snprintf(p.name, sizeof p.name, "tester");
    snprintf(p.type, sizeof p.type, "user");
    snprintf(p.status, sizeof p.status, "active");
    done(done_arg, CMS_AUTH_OK, &p);
}

/* ---- consuming ---- */

static const char *event_verb(const Cms__V1__Envelope *env)
{
    const char *dot = strrchr(env->event_type, '.');
    return dot ? dot + 1 : "";
}

static cms_consumer_verdict consume(void *arg, const Cms__V1__Envelope *env, cms_pg_job *job,
                                    const char **reason)
{
    (void)arg;
    const char *verb = event_verb(env);
    if (strcmp(verb, "poison") == 0) {
        *reason = "poison";
        return CMS_CONSUMER_DEAD;
    }
    const char *v[] = {env->resource_id, env->event_id,
                       strcmp(verb, "bad") == 0 ? NULL : env->details_json};
    if (cms_pg_job_sql(job,
                       "INSERT INTO testsvc_effects (resource_id, event_id, details) "
                       "VALUES ($1, $2, $3)",
                       3, v, NULL, NULL) != CMS_PG_OK)
        return CMS_CONSUMER_RETRY;
    return CMS_CONSUMER_APPLY;
}

static void consumed(void *arg, const Cms__V1__Envelope *env)
{
    (void)arg;
    if (strcmp(event_verb(env), "crash") == 0)
        raise(SIGKILL); /* committed, not acked */
}

static int start(cms_service *s, void *arg)
{
    (void)arg;
    g_svc = s;
    cms_cmd *c = cms_service_cmd(s);
    if (cms_cmd_register(c, "echo", &cms__v1__envelope__descriptor, h_echo, NULL) != 0 ||
        cms_cmd_register(c, "emit", &cms__v1__envelope__descriptor, h_emit, NULL) != 0 ||
        cms_cmd_register(c, "record", &cms__v1__envelope__descriptor, h_record, NULL) != 0)
        return -1;
    return 0;
}

int main(int argc, char **argv)
{
    static cms_service_spec spec = {
        .name = "testsvc",
        .summary = "a minimal service for the runtime's tests",
        .outbox = true,
        .commands = true,
        .start = start,
        .auth_resolver = resolve,
    };
    const char *remote = getenv("CMS_TESTSVC_REMOTE_AUTH");
    if (remote && strcmp(remote, "1") == 0)
        spec.auth_resolver = NULL;
    static cms_service_consumer consumer = {.handle = consume, .committed = consumed};
    consumer.name = getenv("CMS_TESTSVC_CONSUMER");
    consumer.filter_subject = getenv("CMS_TESTSVC_CONSUME_SUBJECT");
    if (consumer.name && *consumer.name) {
        spec.consumers = &consumer;
        spec.nconsumers = 1;
    }
    return cms_service_main(argc, argv, &spec);
}
