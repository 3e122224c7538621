/* cms-testsvc: the smallest service on the runtime, for the service tests.
 * Verbs: echo (replies with the request), emit (records an event through
 * the outbox in one transaction, replies once committed). Callers are
 * authenticated like everywhere: by a resolver of its own that accepts any
 * key of the API key form whose secret is 32 zero bytes ("AAAA...A"), as
 * the identity named by the key's id (the wiring is tested, not
 * cms-identity); or, with CMS_TESTSVC_REMOTE_AUTH=1, through cms-identity
 * like every real service. */
#include "apikey.h"
#include "cms/v1/envelope.pb-c.h"
#include "service.h"
#include "uuid.h"

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
        cms_cmd_fail(req, cms_cmd_code_for_pg(err, res ? cms_pg_result_sqlstate(res) : NULL), NULL,
                     "not recorded");
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
    cms_pg_job *job = cms_pg_job_new();
    int rc = cms_outbox_add(job, "testsvc", id, "cms.events.testsvc.emitted", buf, len);
    free(buf);
    if (rc != 0 || cms_pg_submit(cms_service_pg(g_svc), &job, emitted, req) != CMS_PG_OK) {
        cms_pg_job_free(job);
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__UNAVAILABLE, NULL, "database busy");
    }
}

static void resolve(void *arg, const char *key, cms_auth_cb done, void *done_arg)
{
    (void)arg;
    cms_uuid id;
    uint8_t secret[CMS_APIKEY_SECRET_BYTES], zero[CMS_APIKEY_SECRET_BYTES] = {0};
    if (!cms_apikey_parse(key, strlen(key), &id, secret) || memcmp(secret, zero, sizeof zero)) {
        done(done_arg, CMS__V1__ERROR_CODE__PERMISSION_DENIED, NULL);
        return;
    }
    cms_principal p = {.nroles = 0, .expires_at_us = INT64_MAX};
    cms_uuid_format(&id, p.identity_id);
    cms_uuid_format(&id, p.credential_id);
    snprintf(p.name, sizeof p.name, "tester");
    snprintf(p.type, sizeof p.type, "user");
    snprintf(p.status, sizeof p.status, "active");
    done(done_arg, CMS__V1__ERROR_CODE__OK, &p);
}

static int start(cms_service *s, void *arg)
{
    (void)arg;
    g_svc = s;
    cms_cmd *c = cms_service_cmd(s);
    if (cms_cmd_register(c, "echo", &cms__v1__envelope__descriptor, h_echo, NULL) != 0 ||
        cms_cmd_register(c, "emit", &cms__v1__envelope__descriptor, h_emit, NULL) != 0)
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
    return cms_service_main(argc, argv, &spec);
}
