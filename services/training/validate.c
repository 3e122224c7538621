/* Input checks of cms-training; see validate.h. A model name is checked as
 * cms-identity checks a name, with its messages. */
#include "training/validate.h"

#include "identity/validate.h"
#include "json.h"
#include "rdp.h"
#include "xenum.h"

#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- status --------------------------------------------------------------- */

static const char *const STATUSES[] = {
    [TV_PENDING] = "pending", [TV_RUNNING] = "running", [TV_COMPLETED] = "completed",
    [TV_FAILED] = "failed",   [TV_STOPPED] = "stopped",
};
_Static_assert(sizeof STATUSES / sizeof STATUSES[0] == TV_NSTATUS, "a name for every status");

bool tv_status_parse(const char *s, const char *field, tv_status *out, tv_err *e)
{
    int i = cms_enum_index(STATUSES, TV_NSTATUS, s);
    if (i >= 0) {
        *out = (tv_status)i;
        return true;
    }
    return cms_field_fail(e, field, "%s must be pending, running, completed, failed or stopped",
                          field);
}

const char *tv_status_name(tv_status s)
{
    return cms_enum_text(STATUSES, TV_NSTATUS, (int)s);
}

bool tv_transition(tv_status from, tv_status to)
{
    switch (from) {
    case TV_PENDING:
        return to == TV_RUNNING || to == TV_STOPPED || to == TV_FAILED;
    case TV_RUNNING:
        return to == TV_COMPLETED || to == TV_FAILED || to == TV_STOPPED || to == TV_PENDING;
    case TV_COMPLETED:
    case TV_FAILED:
    case TV_STOPPED:
    case TV_NSTATUS:
        return false;
    }
    return false;
}

/* ---- request fields ------------------------------------------------------- */

bool tv_model_name(const char *s, tv_err *e)
{
    idv_err ie = {0};
    if (!idv_name(s, "model_name", &ie))
        return cms_field_fail(e, ie.field ? ie.field : "model_name", "%s", ie.msg);
    return true;
}

bool tv_uuid(const char *s, const char *field, tv_err *e)
{
    idv_err ie = {0};
    if (!idv_uuid(s, field, &ie))
        return cms_field_fail(e, ie.field ? ie.field : field, "%s", ie.msg);
    return true;
}

/* x as text that reads back as x: the shortest of %.15g and %.17g */
static const char *exact(char buf[32], double x)
{
    snprintf(buf, 32, "%.15g", x);
    if (strtod(buf, NULL) != x)
        snprintf(buf, 32, "%.17g", x);
    return buf;
}

bool tv_budget(double privacy_budget, double config_epsilon, tv_err *e)
{
    char b[32], c[32];
    if (!isfinite(privacy_budget) || privacy_budget <= 0)
        return cms_field_fail(e, "privacy_budget",
                              "privacy_budget must be a finite number greater than 0");
    if (!(config_epsilon <= privacy_budget))
        return cms_field_fail(e, "privacy_budget",
                              "privacy_budget %s is less than the config's privacy.epsilon %s",
                              exact(b, privacy_budget), exact(c, config_epsilon));
    return true;
}

/* ---- config --------------------------------------------------------------- */

/* v at path is not what is expected: absent, or something else */
static bool wrong(tv_err *e, const char *path, const json_t *v, const char *expected)
{
    if (v == NULL)
        return cms_field_fail(e, path, "%s is required and must be %s", path, expected);
    return cms_field_fail(e, path, "%s must be %s", path, expected);
}

/* o[key] as the object at path "config.<key>", or NULL with e set */
static const json_t *section(const json_t *o, const char *key, tv_err *e)
{
    char path[sizeof e->field];
    const json_t *v = json_object_get(o, key);
    if (json_is_object(v))
        return v;
    snprintf(path, sizeof path, "config.%s", key);
    wrong(e, path, v, "an object");
    return NULL;
}

/* a finite number; jansson refuses NaN and overflowing literals already */
static bool number(const json_t *v, double *out)
{
    if (!json_is_number(v) || !isfinite(json_number_value(v)))
        return false;
    *out = json_number_value(v);
    return true;
}

/* s[key], a number over min (and at most max, if max > min), into *out */
static bool number_in(const json_t *s, const char *path, const char *key, double min, double max,
                      const char *expected, double *out, tv_err *e)
{
    const json_t *v = json_object_get(s, key);
    double x = 0;
    if (number(v, &x) && x > min && (max <= min || x <= max)) {
        *out = x;
        return true;
    }
    return wrong(e, path, v, expected);
}

/* s[key], an integer in [min, max], into *out */
static bool integer_in(const json_t *s, const char *path, const char *key, int64_t min, int64_t max,
                       const char *expected, int64_t *out, tv_err *e)
{
    const json_t *v = json_object_get(s, key);
    if (json_is_integer(v) && json_integer_value(v) >= min && json_integer_value(v) <= max) {
        *out = json_integer_value(v);
        return true;
    }
    return wrong(e, path, v, expected);
}

static bool architecture(const json_t *v)
{
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    if (s == NULL || n < 1 || n > TV_ARCHITECTURE_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= 'a' && s[i] <= 'z') ||
              (s[i] >= '0' && s[i] <= '9') || s[i] == '_' || s[i] == '.' || s[i] == '-'))
            return false;
    return true;
}

static bool model(const json_t *m, tv_config *c, tv_err *e)
{
    const json_t *v = json_object_get(m, "architecture");
    if (!architecture(v))
        return wrong(e, "config.model.architecture", v,
                     "a name of 1..64 of [A-Za-z0-9_.-] such as resnet50");
    memcpy(c->architecture, json_string_value(v), json_string_length(v) + 1);
    v = json_object_get(m, "parameters");
    if (v && !json_is_object(v))
        return cms_field_fail(e, "config.model.parameters",
                              "config.model.parameters must be an object");
    return true;
}

static bool privacy(const json_t *p, tv_config *c, tv_err *e)
{
    if (!number_in(p, "config.privacy.epsilon", "epsilon", 0, 0, "a number greater than 0",
                   &c->epsilon, e))
        return false;
    const json_t *v = json_object_get(p, "delta");
    if (!number(v, &c->delta) || !(c->delta > 0 && c->delta < 1))
        return wrong(e, "config.privacy.delta", v,
                     "a number greater than 0 and less than 1, such as 1e-5");
    v = json_object_get(p, "noise_mechanism");
    if (!json_is_string(v) || strcmp(json_string_value(v), "gaussian") != 0)
        return wrong(e, "config.privacy.noise_mechanism", v,
                     "\"gaussian\": only the gaussian mechanism is supported");
    c->noise_multiplier = 0;
    v = json_object_get(p, "noise_multiplier");
    if (v == NULL)
        return true;
    if (!number_in(p, "config.privacy.noise_multiplier", "noise_multiplier", 0, 0,
                   "a number greater than 0", &c->noise_multiplier, e))
        return false;
    /* below CMS_RDP_SIGMA_MIN the accountant refuses: no noise worth it */
    if (c->noise_multiplier < CMS_RDP_SIGMA_MIN)
        return wrong(e, "config.privacy.noise_multiplier", v,
                     "a number greater than 0, and at least 0.001");
    return true;
}

static bool training(const json_t *t, tv_config *c, tv_err *e)
{
    if (!integer_in(t, "config.training.batch_size", "batch_size", 1, TV_BATCH_SIZE_MAX,
                    "an integer from 1 to 1000000", &c->batch_size, e) ||
        !integer_in(t, "config.training.epochs", "epochs", 1, TV_EPOCHS_MAX,
                    "an integer from 1 to 100000", &c->epochs, e) ||
        !number_in(t, "config.training.learning_rate", "learning_rate", 0, TV_LEARNING_RATE_MAX,
                   "a number greater than 0 and at most 10", &c->learning_rate, e))
        return false;
    const json_t *v = json_object_get(t, "dataset");
    size_t n = json_string_length(v);
    if (!json_is_string(v) || n < 1 || n > TV_DATASET_MAX)
        return wrong(e, "config.training.dataset", v, "a string of 1..255 bytes");
    memcpy(c->dataset, json_string_value(v), n + 1);
    v = json_object_get(t, "dataset_size");
    if (!json_is_integer(v) || json_integer_value(v) < 1)
        return wrong(e, "config.training.dataset_size", v, "an integer of at least 1");
    c->dataset_size = json_integer_value(v);
    if (c->dataset_size < c->batch_size)
        return cms_field_fail(e, "config.training.dataset_size",
                              "config.training.dataset_size %lld must be at least "
                              "config.training.batch_size %lld",
                              (long long)c->dataset_size, (long long)c->batch_size);
    int64_t batches = c->dataset_size / c->batch_size + (c->dataset_size % c->batch_size != 0);
    if (batches > INT64_MAX / c->epochs)
        return cms_field_fail(
            e, "config.training.dataset_size",
            "config.training.dataset_size is too large: epochs * ceil(dataset_size / "
            "batch_size) steps exceed 2^63 - 1");
    c->steps = c->epochs * batches;
    c->q = (double)c->batch_size / (double)c->dataset_size;
    v = json_object_get(t, "sampler");
    if (v && !(json_is_string(v) && strcmp(json_string_value(v), "poisson") == 0))
        return wrong(e, "config.training.sampler", v,
                     "\"poisson\": the accountant assumes Poisson sampling, so another sampler "
                     "would make the reported epsilon wrong");
    return number_in(t, "config.training.max_grad_norm", "max_grad_norm", 0, 0,
                     "a number greater than 0 (the clipping norm)", &c->max_grad_norm, e);
}

bool tv_config_check(const char *json, tv_config *out, tv_err *e)
{
    size_t n = json ? strlen(json) : 0;
    tv_config c = {0};
    json_error_t err;
    const json_t *s;
    bool ok = false;
    json_t *j = NULL;
    if (n == 0)
        return cms_field_fail(e, "config",
                              "config is required: a JSON object with model, privacy and "
                              "training");
    if (n > TV_CONFIG_MAX)
        return cms_field_fail(e, "config", "config is %zu bytes; at most %d", n, TV_CONFIG_MAX);
    /* jansson refuses invalid UTF-8 and \u0000, as jsonb does */
    j = json_loadb(json, n, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &err);
    if (j == NULL) {
        /* a duplicate key's text names it: duplicate object key near '"k"' */
        cms_field_fail(e, "config", "config is not valid JSON: %.100s (at byte %d)", err.text,
                       err.position);
        goto out;
    }
    if (!json_is_object(j)) {
        cms_field_fail(e, "config", "config must be a JSON object");
        goto out;
    }
    size_t at;
    if (cms_json_numeric_overflow(json, n, &at)) {
        cms_field_fail(e, "config",
                       "config holds a number with more than %d digits after the point (at byte "
                       "%zu)",
                       CMS_JSON_NUMERIC_SCALE_MAX, at);
        goto out;
    }
    if ((s = section(j, "model", e)) == NULL || !model(s, &c, e) ||
        (s = section(j, "privacy", e)) == NULL || !privacy(s, &c, e) ||
        (s = section(j, "training", e)) == NULL || !training(s, &c, e))
        goto out;
    if (out)
        *out = c;
    ok = true;
out:
    json_decref(j);
    return ok;
}
