/* cms-contracts: contracts between a data provider and a data consumer,
 * their lifecycle and their signatures. */
#include "contracts.h"
#include "log.h"
#include "service.h"

/* The service, made at start (spec.arg points here). */
typedef struct app {
    ctsvc *svc;
} app;

static int start(cms_service *s, void *arg)
{
    app *a = arg;
    ctsvc_err err = ctsvc_create(&a->svc);
    if (err == CTSVC_OK)
        err = ctsvc_start(a->svc, s);
    if (err != CTSVC_OK)
        cms_log_error("cms-contracts cannot start", "{s:s}", "error", ctsvc_strerror(err));
    return err == CTSVC_OK ? 0 : -1;
}

static void drained(void *arg)
{
    cms_service_drained(arg);
}

static void drain(cms_service *s, void *arg)
{
    app *a = arg;
    if (a->svc)
        ctsvc_drain(a->svc, drained, s);
    else
        cms_service_drained(s);
}

static app the_app;

static cms_consumer_verdict on_identity(void *arg, const Cms__V1__Envelope *env, cms_pg_job *job,
                                        const char **reason)
{
    return ctsvc_on_identity(((app *)arg)->svc, env, job, reason);
}

static cms_consumer_verdict on_credential(void *arg, const Cms__V1__Envelope *env, cms_pg_job *job,
                                          const char **reason)
{
    return ctsvc_on_credential(((app *)arg)->svc, env, job, reason);
}

int main(int argc, char **argv)
{
    /* identity status and public keys, each from its own durable */
    static const cms_service_consumer consumers[] = {
        {.name = "contracts-identity",
         .filter_subject = "cms.events.identity.>",
         .handle = on_identity},
        {.name = "contracts-credential",
         .filter_subject = "cms.events.credential.>",
         .handle = on_credential},
    };
    static const cms_service_spec spec = {
        .name = "contracts",
        .summary = "contracts between data providers and consumers: lifecycle, signatures, "
                   "party-only access",
        .outbox = true,
        .commands = true,
        .consumers = consumers,
        .nconsumers = sizeof consumers / sizeof consumers[0],
        .start = start,
        .drain = drain,
        .arg = &the_app,
    };
    int code = cms_service_main(argc, argv, &spec);
    ctsvc_destroy(the_app.svc);
    return code;
}
