/* cms-identity: identities, their credentials, and who is acting. */
#include "identity.h"
#include "identity/validate.h"
#include "log.h"
#include "service.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const cms_option options[] = {
    {"key-file", "CMS_IDENTITY_KEY_FILE", CMS_OPT_STRING, NULL,
     "file of 64 hex digits (mode 600): the key API keys are hashed with", true, false},
    {"enclave-measurements", "CMS_ENCLAVE_MEASUREMENTS", CMS_OPT_STRING, "",
     "comma-separated hex measurements an enclave's attestation must match", false, false},
    {"max-api-key-days", "CMS_MAX_API_KEY_DAYS", CMS_OPT_INT, "365", "longest life of an API key",
     false, false},
    {"max-public-key-days", "CMS_MAX_PUBLIC_KEY_DAYS", CMS_OPT_INT, "730",
     "longest life of a public key", false, false},
    {"max-attestation-days", "CMS_MAX_ATTESTATION_DAYS", CMS_OPT_INT, "30",
     "longest life of an attestation", false, false},
};

/* The service, made at start (spec.arg points here). */
typedef struct app {
    idsvc *svc;
} app;

/* "a1b2..,C3D4.." -> lowercase entries, each checked as an attestation's
 * measurement is; false with a reason for the operator. */
static bool parse_measurements(const char *list, idsvc_options *o)
{
    char one[IDV_MEASUREMENT_MAX + 2];
    const char *p = list;
    while (*p) {
        size_t n = strcspn(p, ",");
        const char *next = p[n] ? p + n + 1 : p + n;
        while (n && *p == ' ')
            p++, n--;
        while (n && p[n - 1] == ' ')
            n--;
        if (n) {
            idv_err e;
            if (o->nmeasurements == IDSVC_MAX_MEASUREMENTS || n >= sizeof one) {
                cms_log_error("bad option: enclave-measurements holds at most 64 values of "
                              "16..64 bytes in hex",
                              NULL);
                return false;
            }
            memcpy(one, p, n);
            one[n] = '\0';
            if (!idv_measurement(one, o->measurements[o->nmeasurements], &e)) {
                cms_log_error("bad option: enclave-measurements", "{s:s}", "why", e.msg);
                return false;
            }
            o->nmeasurements++;
        }
        p = next;
    }
    return true;
}

static int start(cms_service *s, void *arg)
{
    app *a = arg;
    const cms_config *c = cms_service_config(s);
    idsvc_options o;
    memset(&o, 0, sizeof o);
    char why[256];
    int64_t d1 = cms_config_int(c, "max-api-key-days"),
            d2 = cms_config_int(c, "max-public-key-days"),
            d3 = cms_config_int(c, "max-attestation-days");
    if (d1 < 1 || d2 < 1 || d3 < 1 || d1 > 3650 || d2 > 3650 || d3 > 3650) {
        cms_log_error("bad option: max-*-days must be 1..3650", NULL);
        return -1;
    }
    o.max_api_key_s = d1 * 86400;
    o.max_public_key_s = d2 * 86400;
    o.max_attestation_s = d3 * 86400;
    if (!cms_apikey_server_key_load(cms_config_str(c, "key-file"), o.server_key, why, sizeof why)) {
        cms_log_error("the identity key cannot be used", "{s:s}", "why", why);
        return -1;
    }
    int rc = -1;
    if (parse_measurements(cms_config_str(c, "enclave-measurements"), &o) &&
        idsvc_create(&o, &a->svc) == IDSVC_OK) {
        idsvc_err err = idsvc_start(a->svc, s);
        if (err != IDSVC_OK)
            cms_log_error("cms-identity cannot start", "{s:s}", "error", idsvc_strerror(err));
        rc = err == IDSVC_OK ? 0 : -1;
    }
    cms_apikey_wipe(o.server_key, sizeof o.server_key);
    return rc;
}

static void resolve(void *arg, const char *key, cms_auth_cb done, void *done_arg)
{
    app *a = arg;
    /* NULL until started: idsvc_resolve answers UNAVAILABLE */
    idsvc_resolve(a->svc, key, done, done_arg);
}

static void drained(void *arg)
{
    cms_service_drained(arg);
}

static void drain(cms_service *s, void *arg)
{
    app *a = arg;
    if (a->svc)
        idsvc_drain(a->svc, drained, s);
    else
        cms_service_drained(s);
}

int main(int argc, char **argv)
{
    static app a;
    static const cms_service_spec spec = {
        .name = "identity",
        .summary = "identities, their credentials, and who is acting",
        .options = options,
        .noptions = sizeof options / sizeof options[0],
        .outbox = true,
        .commands = true,
        .start = start,
        .drain = drain,
        .auth_resolver = resolve,
        .arg = &a,
    };
    int code = cms_service_main(argc, argv, &spec);
    idsvc_destroy(a.svc);
    return code;
}
