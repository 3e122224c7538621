/* cms-testsvc: the smallest service on the runtime, for the service tests.
 * Verbs: echo (replies with the request), emit (records an event through
 * the outbox in one transaction, replies once committed). */
#include "cms/v1/envelope.pb-c.h"
#include "service.h"
#include "uuid.h"

#include <stdlib.h>

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
    static const cms_service_spec spec = {
        .name = "testsvc",
        .summary = "a minimal service for the runtime's tests",
        .outbox = true,
        .commands = true,
        .start = start,
    };
    return cms_service_main(argc, argv, &spec);
}
