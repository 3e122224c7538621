/* libFuzzer target for the two JSON documents the services check field by
 * field: a contract's terms (cv_terms_check, services/contracts/
 * validate.c) when byte 0 is even, a training job's config
 * (tv_config_check, services/training/validate.c) when it is odd; the
 * rest is the text.
 *
 * Nothing may crash or leak. A refusal names a path into the document
 * ("terms...", "config...") and says why; checking again gives the same
 * verdict and values. What is accepted is one JSON object of at most
 * 64 KiB without repeated keys (jansson agrees); terms start before they
 * end, at the times their start_date and end_date say (cv_iso8601), have a
 * positive max_epsilon if any, and have the canonical form (RFC 8785)
 * their contract's content hash is taken of; a config has the values
 * tv_config_check documents: q = batch_size / dataset_size in (0, 1],
 * steps = epochs * ceil(dataset_size / batch_size), an architecture of
 * [A-Za-z0-9_.-]{1,64}, a noise multiplier of 0 (none) or one the
 * accountant takes (CMS_RDP_SIGMA_MIN). */
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "contracts/validate.h"
#include "jcs.h"
#include "rdp.h"
#include "training/validate.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void refusal_holds(const cms_field_err *e, const char *root)
{
    size_t n = strlen(root);
    if (e->msg[0] == '\0' || strncmp(e->field, root, n) != 0 ||
        (e->field[n] != '\0' && e->field[n] != '.' && e->field[n] != '['))
        abort();
}

static void object_holds(const char *text, size_t max)
{
    json_t *j = json_loads(text, JSON_REJECT_DUPLICATES, NULL);
    if (strlen(text) > max || !json_is_object(j))
        abort();
    json_decref(j);
}

static void date_holds(const char *text, const char *key, int64_t us)
{
    json_t *j = json_loads(text, 0, NULL);
    int64_t want;
    if (!cv_iso8601(json_string_value(json_object_get(j, key)), &want) || want != us)
        abort();
    json_decref(j);
}

static void terms(const char *text)
{
    cv_terms t, again;
    cv_err e, e2;
    memset(&e, 0, sizeof e);
    memset(&e2, 0, sizeof e2);
    bool ok = cv_terms_check(text, &t, &e);
    if (cv_terms_check(text, &again, &e2) != ok)
        abort();
    if (!ok) {
        refusal_holds(&e, "terms");
        if (strcmp(e.field, e2.field) != 0 || strcmp(e.msg, e2.msg) != 0)
            abort();
        return;
    }
    if (again.starts_at_us != t.starts_at_us || again.ends_at_us != t.ends_at_us ||
        again.has_max_epsilon != t.has_max_epsilon ||
        (t.has_max_epsilon && again.max_epsilon != t.max_epsilon))
        abort();
    object_holds(text, CV_TERMS_MAX);
    if (t.starts_at_us >= t.ends_at_us ||
        (t.has_max_epsilon && !(t.max_epsilon > 0 && isfinite(t.max_epsilon))))
        abort();
    date_holds(text, "start_date", t.starts_at_us);
    date_holds(text, "end_date", t.ends_at_us);
    char *canon = NULL;
    size_t n = 0;
    if (cms_jcs_canonicalize(text, strlen(text), &canon, &n) != CMS_JCS_OK)
        abort(); /* accepted terms must have a content hash */
    free(canon);
}

static bool architecture_holds(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > TV_ARCHITECTURE_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-", s[i]))
            return false;
    return true;
}

static void config(const char *text)
{
    tv_config c, again;
    tv_err e, e2;
    memset(&e, 0, sizeof e);
    memset(&e2, 0, sizeof e2);
    bool ok = tv_config_check(text, &c, &e);
    if (tv_config_check(text, &again, &e2) != ok)
        abort();
    if (!ok) {
        refusal_holds(&e, "config");
        if (strcmp(e.field, e2.field) != 0 || strcmp(e.msg, e2.msg) != 0)
            abort();
        return;
    }
    if (strcmp(again.architecture, c.architecture) != 0 || strcmp(again.dataset, c.dataset) != 0 ||
        again.epsilon != c.epsilon || again.delta != c.delta || again.q != c.q ||
        again.steps != c.steps || again.noise_multiplier != c.noise_multiplier)
        abort();
    object_holds(text, TV_CONFIG_MAX);
    int64_t batches = c.dataset_size / c.batch_size + (c.dataset_size % c.batch_size != 0);
    __int128 steps = (__int128)c.epochs * batches;
    if (c.batch_size < 1 || c.batch_size > TV_BATCH_SIZE_MAX || c.epochs < 1 ||
        c.epochs > TV_EPOCHS_MAX || c.dataset_size < c.batch_size || steps != c.steps ||
        c.q != (double)c.batch_size / (double)c.dataset_size || !(c.q > 0 && c.q <= 1) ||
        !(c.epsilon > 0 && isfinite(c.epsilon)) || !(c.delta > 0 && c.delta < 1) ||
        !(c.learning_rate > 0 && c.learning_rate <= TV_LEARNING_RATE_MAX) ||
        !(c.max_grad_norm > 0) || !architecture_holds(c.architecture) || strlen(c.dataset) == 0 ||
        strlen(c.dataset) > TV_DATASET_MAX ||
        (c.noise_multiplier != 0 && !(c.noise_multiplier >= CMS_RDP_SIGMA_MIN)))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    /* the services get NUL-terminated strings from protobuf-c */
    char *text = malloc(size);
    if (text == NULL)
        abort();
    memcpy(text, data + 1, size - 1);
    text[size - 1] = '\0';
    if (data[0] & 1)
        config(text);
    else
        terms(text);
    free(text);
    return 0;
}
