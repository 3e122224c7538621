/* cms-identity: identities, their credentials, and who is acting. */
#include "identity.h"
#include "identity/validate.h"
#include "log.h"
#include "service.h"

#include <sodium.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const cms_option options[] = {
    {"identity-key-file", "CMS_IDENTITY_KEY_FILE", CMS_OPT_STRING, NULL,
     "file of 64 hex digits (mode 600): the key API keys are hashed with", CMS_OPT_PUBLIC, true},
    {"identity-previous-key-file", "CMS_IDENTITY_PREVIOUS_KEY_FILE", CMS_OPT_STRING, NULL,
     "while rotating the key: the file of the key before it; API keys hashed with it still "
     "authenticate, new ones are hashed with the new key only",
     CMS_OPT_PUBLIC, false},
    {"enclave-measurements", "CMS_ENCLAVE_MEASUREMENTS", CMS_OPT_STRING, "",
     "comma-separated hex measurements an enclave's attestation must match", CMS_OPT_PUBLIC, false},
    {"max-api-key-life", "CMS_MAX_API_KEY_LIFE", CMS_OPT_DURATION, "365d",
     "longest life of an API key (1d to 3650d)", CMS_OPT_PUBLIC, false},
    {"max-public-key-life", "CMS_MAX_PUBLIC_KEY_LIFE", CMS_OPT_DURATION, "730d",
     "longest life of a public key (1d to 3650d)", CMS_OPT_PUBLIC, false},
    {"max-attestation-life", "CMS_MAX_ATTESTATION_LIFE", CMS_OPT_DURATION, "30d",
     "longest life of an attestation (1d to 3650d)", CMS_OPT_PUBLIC, false},
    {"auth-negative-cache", "CMS_AUTH_NEGATIVE_CACHE", CMS_OPT_DURATION, "2s",
     "how long an API key's credential id found not to exist is refused without looking it up "
     "again (0 to 1m; 0: always look)",
     CMS_OPT_PUBLIC, false},
    {"auth-lookups-max", "CMS_AUTH_LOOKUPS_MAX", CMS_OPT_INT, "64",
     "look-ups of API keys' credentials in the database in flight at most; a key beyond them is "
     "answered UNAVAILABLE at once (1 to 4096)",
     CMS_OPT_PUBLIC, false},
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
    int64_t l1 = cms_config_duration_ms(c, "max-api-key-life"),
            l2 = cms_config_duration_ms(c, "max-public-key-life"),
            l3 = cms_config_duration_ms(c, "max-attestation-life");
    const int64_t day_ms = INT64_C(86400) * 1000, max_ms = 3650 * day_ms;
    if (l1 < day_ms || l2 < day_ms || l3 < day_ms || l1 > max_ms || l2 > max_ms || l3 > max_ms) {
        cms_log_error("bad option: max-api-key-life, max-public-key-life and max-attestation-life "
                      "must be 1d to 3650d",
                      NULL);
        return -1;
    }
    int64_t neg = cms_config_duration_ms(c, "auth-negative-cache"),
            lookups = cms_config_int(c, "auth-lookups-max");
    if (neg < 0 || neg > 60000 || lookups < 1 || lookups > 4096) {
        cms_log_error("bad option: auth-negative-cache must be 0 to 1m and auth-lookups-max 1 to "
                      "4096",
                      NULL);
        return -1;
    }
    o.negative_ttl_ms = neg;
    o.max_auth_lookups = (size_t)lookups;
    o.max_api_key_s = l1 / 1000;
    o.max_public_key_s = l2 / 1000;
    o.max_attestation_s = l3 / 1000;
    if (!cms_apikey_server_key_load(cms_config_str(c, "identity-key-file"), o.server_key, why,
                                    sizeof why)) {
        cms_log_error("the identity key cannot be used", "{s:s}", "why", why);
        return -1;
    }
    const char *prev = cms_config_str(c, "identity-previous-key-file");
    if (prev != NULL) {
        if (!cms_apikey_server_key_load(prev, o.previous_key, why, sizeof why)) {
            cms_log_error("the previous identity key cannot be used", "{s:s}", "why", why);
            cms_apikey_wipe(o.server_key, sizeof o.server_key);
            return -1;
        }
        o.has_previous_key = true;
        if (sodium_memcmp(o.previous_key, o.server_key, sizeof o.server_key) == 0)
            cms_log_warn("the previous identity key is the current one: it adds nothing", NULL);
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
    cms_apikey_wipe(o.previous_key, sizeof o.previous_key);
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
