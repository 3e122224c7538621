/* The checks of a training dispatch; see dispatch.h. */
#include "dispatch.h"

#include "dataset.h"
#include "uuid.h"

#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SHOWN_MAX 64 /* characters of a value quoted in a reason */

static bool refuse(char *why, size_t whylen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static bool refuse(char *why, size_t whylen, const char *fmt, ...)
{
    if (why != NULL && whylen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, whylen, fmt, ap);
        va_end(ap);
    }
    return false;
}

/* s, cut to SHOWN_MAX with "...", control characters as '?' */
static const char *shown(const char *s, char out[SHOWN_MAX + 4])
{
    size_t n = strlen(s), k = n < SHOWN_MAX ? n : SHOWN_MAX;
    for (size_t i = 0; i < k; i++) {
        unsigned char ch = (unsigned char)s[i];
        out[i] = ch < 0x20 || ch == 0x7f ? '?' : (char)ch;
    }
    if (k < n) {
        memcpy(out + k, "...", 3);
        k += 3;
    }
    out[k] = '\0';
    return out;
}

bool dispatch_reportable(const Cms__V1__TrainingDispatch *d)
{
    cms_uuid id;
    return d->job_id != NULL && cms_uuid_parse(d->job_id, strlen(d->job_id), &id) &&
           d->attempt >= 1;
}

bool dispatch_sampler_ok(const char *config_json, char *why, size_t whylen)
{
    if (config_json == NULL || config_json[0] == '\0')
        return true;
    size_t len = strlen(config_json);
    if (len > DISPATCH_CONFIG_MAX)
        return refuse(why, whylen, "config_json has %zu bytes: at most %d are taken", len,
                      DISPATCH_CONFIG_MAX);
    json_error_t jerr;
    json_t *config = json_loadb(config_json, len, JSON_REJECT_DUPLICATES, &jerr);
    bool ok = false;
    if (!json_is_object(config)) {
        refuse(why, whylen, "config_json is not a JSON object");
        goto out;
    }
    json_t *sampler = json_object_get(json_object_get(config, "training"), "sampler");
    if (sampler != NULL &&
        !(json_is_string(sampler) && strcmp(json_string_value(sampler), "poisson") == 0)) {
        char *text = json_dumps(sampler, JSON_ENCODE_ANY | JSON_COMPACT);
        char v[SHOWN_MAX + 4];
        refuse(why, whylen,
               "training.sampler %s is not supported: the accountant assumes Poisson sampling, so "
               "another sampler would make the reported epsilon wrong",
               shown(text != NULL ? text : "?", v));
        free(text);
        goto out;
    }
    ok = true;
out:
    json_decref(config);
    return ok;
}

/* A subject to subscribe to: dot-separated tokens of printable characters,
 * no wildcard. */
static bool literal_subject(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n >= CMS_BUS_SUBJECT_MAX || s[0] == '.' || s[n - 1] == '.' ||
        strstr(s, "..") != NULL)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch <= 0x20 || ch >= 0x7f || ch == '*' || ch == '>')
            return false;
    }
    return true;
}

bool dispatch_check(const Cms__V1__TrainingDispatch *d, int64_t report_interval_ms,
                    dispatch_plan *out, char *why, size_t whylen)
{
    char v[SHOWN_MAX + 4];
    if (!dispatch_reportable(d))
        return refuse(why, whylen, "the dispatch names no job (job_id a UUID, attempt >= 1)");
    if (!dispatch_sampler_ok(d->config_json, why, whylen))
        return false;
    const char *arch = d->architecture != NULL ? d->architecture : "";
    if (strcmp(arch, DISPATCH_ARCHITECTURE) != 0)
        return refuse(why, whylen,
                      "architecture \"%s\" is not supported: cms-worker trains \"%s\" (binary "
                      "logistic regression) only",
                      shown(arch, v), DISPATCH_ARCHITECTURE);
    char reason[256];
    if (!dataset_name_ok(d->dataset != NULL ? d->dataset : "", reason, sizeof reason))
        return refuse(why, whylen, "dataset \"%s\": %s", shown(d->dataset ? d->dataset : "", v),
                      reason);
    if (d->dataset_size < 1)
        return refuse(why, whylen, "dataset_size is %lld: it must be at least 1",
                      (long long)d->dataset_size);
    if (!(isfinite(d->noise_multiplier) && d->noise_multiplier > 0))
        return refuse(why, whylen,
                      "noise_multiplier is %g: it must be a finite number > 0 (the accountant's "
                      "sigma)",
                      d->noise_multiplier);
    dispatch_plan p;
    memset(&p, 0, sizeof p);
    p.params = (dpsgd_params){.sample_rate = d->sample_rate,
                              .noise_multiplier = d->noise_multiplier,
                              .max_grad_norm = d->max_grad_norm,
                              .learning_rate = d->learning_rate,
                              .mode = DPSGD_PRIVATE};
    if (!dpsgd_params_ok(&p.params, reason, sizeof reason))
        return refuse(why, whylen,
                      "%s (sample_rate %g, noise_multiplier %g, max_grad_norm %g, learning_rate "
                      "%g)",
                      reason, d->sample_rate, d->noise_multiplier, d->max_grad_norm,
                      d->learning_rate);
    if (d->steps < 0 || d->max_steps < 0)
        return refuse(why, whylen, "steps (%lld) and max_steps (%lld) must not be negative",
                      (long long)d->steps, (long long)d->max_steps);
    p.steps = d->steps < d->max_steps ? d->steps : d->max_steps;
    p.report_interval_ms = report_interval_ms;
    if (d->report_interval_ms > 0 && d->report_interval_ms < p.report_interval_ms)
        p.report_interval_ms = d->report_interval_ms;
    if (p.report_interval_ms < DISPATCH_REPORT_INTERVAL_MIN_MS)
        p.report_interval_ms = DISPATCH_REPORT_INTERVAL_MIN_MS;
    const char *control = d->control_subject != NULL ? d->control_subject : "";
    if (control[0] == '\0') {
        int n = snprintf(p.control_subject, sizeof p.control_subject, "%s%s",
                         CMS_BUS_CONTROL_TRAINING_PREFIX, d->job_id);
        if (n < 0 || (size_t)n >= sizeof p.control_subject)
            return refuse(why, whylen, "the job's control subject does not fit");
    } else if (literal_subject(control)) {
        snprintf(p.control_subject, sizeof p.control_subject, "%s", control);
    } else {
        return refuse(why, whylen, "control_subject \"%s\" is not a subject one can subscribe to",
                      shown(control, v));
    }
    *out = p;
    return true;
}
