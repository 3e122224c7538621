/* NATS connection and stream provisioning for cmsctl; see ctlnats.h. */
#include "ctlnats.h"

#include "bus.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "cli.h"
#include "config.h"
#include "nats.h"
#include "natsauth.h"

#define RECONNECTS 10
#define RECONNECT_WAIT_MS 250
#define STREAM_NAME "CMS_EVENTS"

/* nats.c's last error without the places in its own source it names:
 * "(conn.c:2088): No server available for connection" -> "No server
 * available for connection". NULL if nothing is left. */
static const char *human_part(const char *last)
{
    if (last == NULL)
        return NULL;
    for (;;) {
        while (*last == ' ' || *last == '-' || *last == ':')
            last++;
        if (*last != '(')
            break;
        const char *close = strchr(last, ')');
        const char *colon = strchr(last, ':');
        /* "(file.c:123)": a source location, not a message */
        if (close == NULL || colon == NULL || colon > close ||
            strspn(colon + 1, "0123456789") != (size_t)(close - colon - 1) || close == colon + 1)
            break;
        last = close + 1;
    }
    return *last != '\0' ? last : NULL;
}

int cmsctl_nats_fail(const char *prog, const char *what, natsStatus st)
{
    const char *text = natsStatus_GetText(st);
    const char *detail = human_part(nats_GetLastError(NULL));
    /* the detail often repeats the status; then once is enough */
    if (detail == NULL || strcmp(detail, text) == 0)
        return cmsctl_fail(prog, "%s: %s", what, text);
    return cmsctl_fail(prog, "%s: %s: %s", what, text, detail);
}

/* The variable's value, NULL when unset or empty (as config.c reads them). */
static const char *env_or_null(const char *name)
{
    const char *v = getenv(name);
    return v != NULL && *v != '\0' ? v : NULL;
}

/* ~/.config/cms/<name> if it exists (what deploy/local/up installs), else NULL. */
static const char *user_file(const char *name, char *buf, size_t len)
{
    const char *home = env_or_null("HOME");
    if (home == NULL || (size_t)snprintf(buf, len, "%s/.config/cms/%s", home, name) >= len)
        return NULL;
    return access(buf, F_OK) == 0 ? buf : NULL;
}

void cmsctl_nats_security(const cms_config *cfg, cms_nats_security *out)
{
    static char creds[4096], ca[4096];
    cms_natsauth_from_config(cfg, out);
    if (!cms_config_is_set(cfg, "nats-creds")) {
        if (env_or_null("NATS_CREDS") != NULL)
            out->creds_file = env_or_null("NATS_CREDS");
        else if (out->creds_file == NULL)
            out->creds_file = user_file("nats.creds", creds, sizeof creds);
    }
    if (!cms_config_is_set(cfg, "nats-ca")) {
        if (env_or_null("NATS_CA") != NULL)
            out->ca_file = env_or_null("NATS_CA");
        else if (out->ca_file == NULL)
            out->ca_file = user_file("nats-ca.crt", ca, sizeof ca);
    }
}

int cmsctl_nats_connect(const char *prog, const cms_config *cfg, int64_t timeout_ms,
                        natsConnection **out)
{
    int status = CMSCTL_EXIT_FAILED;
    natsOptions *o = NULL;
    natsConnection *nc = NULL;
    const char *url = cms_config_str(cfg, "nats-url");
    cms_nats_security sec;
    cms_natsauth_info info;
    char why[1024];
    cmsctl_nats_security(cfg, &sec);
    natsStatus st = natsOptions_Create(&o);
    if (st == NATS_OK)
        st = natsOptions_SetName(o, "cmsctl");
    if (st == NATS_OK)
        st = natsOptions_SetTimeout(o, timeout_ms);
    if (st == NATS_OK)
        st = natsOptions_SetMaxReconnect(o, RECONNECTS);
    if (st == NATS_OK)
        st = natsOptions_SetReconnectWait(o, RECONNECT_WAIT_MS);
    if (st != NATS_OK) {
        status = cmsctl_nats_fail(prog, "bad NATS options (check --nats-url or CMS_NATS_URL)", st);
        goto out;
    }
    cms_natsauth_err aerr = cms_natsauth_apply(o, url, &sec, &info, why, sizeof why);
    if (aerr != CMS_NATSAUTH_OK) {
        status = cmsctl_fail(prog, "%s", why);
        goto out;
    }
    st = natsConnection_Connect(&nc, o);
    if (st == NATS_CONNECTION_AUTH_FAILED) {
        cms_natsauth_refused_text(&info, why, sizeof why);
        status = cmsctl_fail(prog, "%s", why);
        goto out;
    }
    if (st != NATS_OK) {
        char what[600], shown[400];
        (void)cms_config_redact(url, shown, sizeof shown); /* a URL may carry a password */
        snprintf(what, sizeof what,
                 "cannot connect to NATS at %s (is nats-server running? set --nats-url or "
                 "CMS_NATS_URL)",
                 shown);
        status = cmsctl_nats_fail(prog, what, st);
        goto out;
    }
    *out = nc;
    nc = NULL;
    status = CMSCTL_EXIT_OK;
out:
    natsConnection_Destroy(nc);
    natsOptions_Destroy(o);
    return status;
}

static int provision(const char *prog, const cms_config *cfg, int64_t timeout_ms)
{
    cms_nats_options o = {.url = cms_config_str(cfg, "nats-url"), .name = "cmsctl-provision"};
    cmsctl_nats_security(cfg, &o.security);
    cms_nats_err err = cms_bus_provision_wait(&o, false, 0, timeout_ms);
    if (err != CMS_NATS_OK) {
        char wait[32];
        return cmsctl_fail(prog, "stream %s is missing and could not be created within %s: %s",
                           STREAM_NAME, cms_config_duration_format(timeout_ms, wait, sizeof wait),
                           err == CMS_NATS_ETIMEOUT ? "timed out" : cms_nats_strerror(err));
    }
    fprintf(stderr, "%s: created stream %s (cms.events.>)\n", prog, STREAM_NAME);
    return CMSCTL_EXIT_OK;
}

int cmsctl_nats_ensure_events(const char *prog, const cms_config *cfg, jsCtx *js,
                              int64_t timeout_ms)
{
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus st = js_GetStreamInfo(&si, js, STREAM_NAME, NULL, &jerr);
    jsStreamInfo_Destroy(si);
    if (st == NATS_OK)
        return CMSCTL_EXIT_OK;
    if (st == NATS_NOT_FOUND || jerr == JSStreamNotFoundErr)
        return provision(prog, cfg, timeout_ms);
    if (st == NATS_NO_RESPONDERS)
        return cmsctl_fail(prog, "JetStream is not enabled on the NATS server (start nats-server "
                                 "with -js)");
    return cmsctl_nats_fail(prog, "cannot look up stream " STREAM_NAME, st);
}
