/* The input checks of cms-training (services/training/validate.h): for each
 * check the inputs just inside and just outside its bounds, and the field,
 * or the JSON path into the config, that a refusal names. */
#include "training/validate.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

/* SCHEMA.md's example of a job's config, with the training fields that
 * cms-training needs besides */
#define MODEL "\"model\":{\"architecture\":\"resnet50\",\"parameters\":{\"layers\":50}}"
#define PRIVACY "\"privacy\":{\"epsilon\":1.0,\"delta\":1e-5,\"noise_mechanism\":\"gaussian\"}"
#define TRAINING                                                                                   \
    "\"training\":{\"batch_size\":32,\"epochs\":10,\"learning_rate\":0.001,"                       \
    "\"dataset\":\"mnist\",\"dataset_size\":60000,\"max_grad_norm\":1.0}"
#define CONFIG "{" MODEL "," PRIVACY "," TRAINING "}"

static tv_err e;
static tv_config out;

static void reset(void)
{
    memset(&e, 0, sizeof e);
}

/* A refusal must say which field and why (a non-empty message). */
static void refused(bool ok, const char *field, const char *what)
{
    cr_assert_not(ok, "%s was accepted", what);
    cr_assert_str_eq(e.field, field, "%s: %s", what, e.msg);
    cr_assert_gt(strlen(e.msg), 0, "%s: empty message", what);
}

static void accepted(bool ok, const char *what)
{
    cr_assert(ok, "%s was refused: %s: %s", what, e.field, e.msg);
    reset();
}

/* The refusal's message holds says_what. */
static void says(const char *says_what, const char *what)
{
    cr_assert_not_null(strstr(e.msg, says_what), "%s: '%s' does not say '%s'", what, e.msg,
                       says_what);
    reset();
}

static void config_refused(const char *json, const char *field, const char *says_what,
                           const char *what)
{
    memset(&out, 0xa5, sizeof out);
    tv_config before = out;
    refused(tv_config_check(json, &out, &e), field, what);
    cr_assert_eq(memcmp(&out, &before, sizeof before), 0, "%s: output written on refusal", what);
    says(says_what, what);
}

static void config_accepted(const char *json, const char *what)
{
    memset(&out, 0, sizeof out);
    accepted(tv_config_check(json, &out, &e), what);
}

/* CONFIG with section's key set to value (a JSON text), or removed if value
 * is NULL; the key is added if absent. */
static const char *with(char *buf, size_t cap, const char *section, const char *key,
                        const char *value)
{
    const char *m = MODEL, *p = PRIVACY, *t = TRAINING;
    const char *orig = strcmp(section, "model") == 0 ? m : strcmp(section, "privacy") == 0 ? p : t;
    char sec[1024], pat[64];
    snprintf(sec, sizeof sec, "%s", orig);
    snprintf(pat, sizeof pat, "\"%s\":", key);
    char *at = strstr(sec, pat);
    if (at) {
        /* the old value runs to the next ',' or '}' outside braces */
        char *end = at + strlen(pat);
        int depth = 0;
        for (; *end && !(depth == 0 && (*end == ',' || *end == '}')); end++)
            depth += *end == '{' ? 1 : *end == '}' ? -1 : 0;
        char rest[1024];
        snprintf(rest, sizeof rest, "%s", end);
        if (value)
            snprintf(at, sizeof sec - (size_t)(at - sec), "%s%s%s", pat, value, rest);
        else if (*rest == ',')
            snprintf(at, sizeof sec - (size_t)(at - sec), "%s", rest + 1);
        else if (at[-1] == ',')
            snprintf(at - 1, sizeof sec - (size_t)(at - 1 - sec), "%s", rest);
        else
            snprintf(at, sizeof sec - (size_t)(at - sec), "%s", rest);
    } else if (value) {
        size_t l = strlen(sec);
        snprintf(sec + l - 1, sizeof sec - l + 1, ",%s%s}", pat, value);
    }
    snprintf(buf, cap, "{%s,%s,%s}", strcmp(section, "model") == 0 ? sec : m,
             strcmp(section, "privacy") == 0 ? sec : p, strcmp(section, "training") == 0 ? sec : t);
    return buf;
}

TestSuite(config, .init = reset);

Test(config, schema_example_is_valid)
{
    config_accepted(CONFIG, "SCHEMA.md's example");
    cr_assert_str_eq(out.architecture, "resnet50");
    cr_assert_eq(out.epsilon, 1.0);
    cr_assert_eq(out.delta, 1e-5);
    cr_assert_eq(out.noise_multiplier, 0);
    cr_assert_eq(out.batch_size, 32);
    cr_assert_eq(out.epochs, 10);
    cr_assert_eq(out.learning_rate, 0.001);
    cr_assert_str_eq(out.dataset, "mnist");
    cr_assert_eq(out.dataset_size, 60000);
    cr_assert_eq(out.max_grad_norm, 1.0);
    cr_assert_eq(out.q, 32.0 / 60000.0);
    cr_assert_eq(out.steps, 10 * 1875, "%lld", (long long)out.steps);
    accepted(tv_config_check(CONFIG, NULL, &e), "without an output");
}

Test(config, q_and_steps)
{
    char buf[2048];
    config_accepted(with(buf, sizeof buf, "training", "dataset_size", "60001"), "60001");
    cr_assert_eq(out.steps, 10 * 1876, "a last, short batch counts");
    cr_assert_eq(out.q, 32.0 / 60001.0);
    config_accepted(with(buf, sizeof buf, "training", "dataset_size", "32"), "one batch");
    cr_assert_eq(out.steps, 10);
    cr_assert_eq(out.q, 1.0);
    config_accepted(with(buf, sizeof buf, "training", "dataset_size", "33"), "33");
    cr_assert_eq(out.steps, 20);
}

/* {MODEL,PRIVACY,"training":{batch 1, 100000 epochs, dataset_size n}} */
static const char *many_steps(char *buf, size_t cap, const char *n)
{
    snprintf(buf, cap,
             "{" MODEL "," PRIVACY ",\"training\":{\"batch_size\":1,\"epochs\":100000,"
             "\"learning_rate\":0.1,\"dataset\":\"d\",\"dataset_size\":%s,"
             "\"max_grad_norm\":1}}",
             n);
    return buf;
}

Test(config, steps_must_fit)
{
    char buf[2048];
    /* 100000 * n <= INT64_MAX for n up to 92233720368547 */
    config_accepted(many_steps(buf, sizeof buf, "92233720368547"), "the most steps");
    cr_assert_eq(out.steps, INT64_C(9223372036854700000), "%lld", (long long)out.steps);
    config_refused(many_steps(buf, sizeof buf, "92233720368548"), "config.training.dataset_size",
                   "2^63", "one step too many");
    config_refused(many_steps(buf, sizeof buf, "9223372036854775807"),
                   "config.training.dataset_size", "2^63", "the largest dataset_size");
    /* and with batch 32 and 10 epochs, no int64_t dataset_size overflows */
    config_accepted(with(buf, sizeof buf, "training", "dataset_size", "9223372036854775807"),
                    "INT64_MAX examples");
    cr_assert_eq(out.steps, INT64_C(2882303761517117440), "%lld", (long long)out.steps);
}

Test(config, noise_multiplier_is_kept)
{
    char buf[2048];
    config_accepted(with(buf, sizeof buf, "privacy", "noise_multiplier", "1.1"), "1.1");
    cr_assert_eq(out.noise_multiplier, 1.1);
    config_accepted(with(buf, sizeof buf, "privacy", "noise_multiplier", "2"), "an integer");
    cr_assert_eq(out.noise_multiplier, 2.0);
    static const char *const bad[] = {"0", "-0", "-1", "\"1.1\"", "null", "true", "[1]"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        config_refused(with(buf, sizeof buf, "privacy", "noise_multiplier", bad[i]),
                       "config.privacy.noise_multiplier", "greater than 0", bad[i]);
}

/* Below CMS_RDP_SIGMA_MIN the accountant refuses (and took seconds before
 * it did, tests/fuzz/corpus/rdp): refused here, with the field. */
Test(config, noise_multiplier_below_the_accountants_minimum)
{
    char buf[2048];
    static const char *const tiny[] = {"0.000999", "1e-212", "5e-324"};
    for (size_t i = 0; i < sizeof tiny / sizeof tiny[0]; i++)
        config_refused(with(buf, sizeof buf, "privacy", "noise_multiplier", tiny[i]),
                       "config.privacy.noise_multiplier", "at least 0.001", tiny[i]);
    config_accepted(with(buf, sizeof buf, "privacy", "noise_multiplier", "0.001"), "the minimum");
    cr_assert_eq(out.noise_multiplier, 0.001);
}

Test(config, required_and_json)
{
    config_refused(NULL, "config", "required", "NULL");
    config_refused("", "config", "required", "empty");
    static const char *const not_json[] = {"{",
                                           CONFIG "x",
                                           CONFIG " {}",
                                           "{'model':1}",
                                           "{\"a\":\"\xc3\x28\"}",
                                           "{\"a\":\"\\u0000\"}",
                                           "{\"a\":NaN}",
                                           "{\"a\":1e400}"};
    for (size_t i = 0; i < sizeof not_json / sizeof not_json[0]; i++)
        config_refused(not_json[i], "config", "not valid JSON", not_json[i]);
    static const char *const not_objects[] = {"[]", "1", "\"x\"", "null", "true"};
    for (size_t i = 0; i < sizeof not_objects / sizeof not_objects[0]; i++)
        config_refused(not_objects[i], "config", "must be a JSON object", not_objects[i]);
}

Test(config, duplicate_keys_are_refused_by_name)
{
    config_refused("{" MODEL "," PRIVACY "," TRAINING "," MODEL "}", "config", "\"model\"",
                   "a duplicate top-level key");
    char buf[2048];
    config_refused(with(buf, sizeof buf, "training", "epochs", "10,\"epochs\":11"), "config",
                   "\"epochs\"", "a duplicate key in training");
    config_refused(with(buf, sizeof buf, "model", "parameters", "{\"a\":1,\"a\":1}"), "config",
                   "\"a\"", "a duplicate key in the parameters");
}

Test(config, at_most_65536_bytes)
{
    static char buf[TV_CONFIG_MAX + 64];
    /* {...,"pad":"xxx..."} of exactly n bytes */
    const char *head = "{" MODEL "," PRIVACY "," TRAINING ",\"pad\":\"";
    size_t hl = strlen(head);
    memcpy(buf, head, hl);
    memset(buf + hl, 'x', TV_CONFIG_MAX - hl - 2);
    memcpy(buf + TV_CONFIG_MAX - 2, "\"}", 3);
    cr_assert_eq(strlen(buf), TV_CONFIG_MAX);
    config_accepted(buf, "65536 bytes");
    buf[TV_CONFIG_MAX - 2] = 'x';
    memcpy(buf + TV_CONFIG_MAX - 1, "\"}", 3);
    config_refused(buf, "config", "65537", "65537 bytes");
    cr_assert_not(tv_config_check(buf, &out, &e));
    says("65536", "65537 bytes");
}

Test(config, sections_are_required_objects)
{
    config_refused("{" PRIVACY "," TRAINING "}", "config.model", "required", "no model");
    config_refused("{" MODEL "," TRAINING "}", "config.privacy", "required", "no privacy");
    config_refused("{" MODEL "," PRIVACY "}", "config.training", "required", "no training");
    config_refused("{\"model\":[]," PRIVACY "," TRAINING "}", "config.model", "an object",
                   "an array");
    config_refused("{" MODEL ",\"privacy\":1," TRAINING "}", "config.privacy", "an object", "1");
    config_refused("{" MODEL "," PRIVACY ",\"training\":null}", "config.training", "an object",
                   "null");
}

Test(config, unknown_keys_are_kept)
{
    char buf[2048];
    config_accepted("{" MODEL "," PRIVACY "," TRAINING ",\"x\":[1,null],\"notes\":{}}",
                    "top level");
    config_accepted(with(buf, sizeof buf, "training", "optimizer", "\"sgd\""), "in training");
    config_accepted(with(buf, sizeof buf, "privacy", "accountant", "\"rdp\""), "in privacy");
    config_accepted(with(buf, sizeof buf, "model", "parameters", "{\"any\":[{\"thing\":1}]}"),
                    "any parameters");
    config_accepted(with(buf, sizeof buf, "model", "parameters", NULL), "no parameters");
    static const char *const bad[] = {"[]", "1", "\"x\"", "null"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        config_refused(with(buf, sizeof buf, "model", "parameters", bad[i]),
                       "config.model.parameters", "an object", bad[i]);
}

Test(config, architecture)
{
    char buf[2048], v[128];
    static const char *const good[] = {"\"a\"", "\"ResNet-50_v1.5\"", "\"gpt2.small\"", "\"0\""};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        config_accepted(with(buf, sizeof buf, "model", "architecture", good[i]), good[i]);
    memset(v, 'a', sizeof v);
    v[0] = '"';
    memcpy(v + 65, "\"", 2);
    config_accepted(with(buf, sizeof buf, "model", "architecture", v), "64 bytes");
    cr_assert_eq(strlen(out.architecture), 64);
    memcpy(v + 65, "a\"", 3);
    config_refused(with(buf, sizeof buf, "model", "architecture", v), "config.model.architecture",
                   "1..64", "65 bytes");
    static const char *const bad[] = {"\"\"",      "\"res net\"", "\"res/net\"", "\"r\\u00e9s\"",
                                      "\"a\\tb\"", "50",          "null",        "[\"resnet50\"]"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        config_refused(with(buf, sizeof buf, "model", "architecture", bad[i]),
                       "config.model.architecture", "[A-Za-z0-9_.-]", bad[i]);
    config_refused(with(buf, sizeof buf, "model", "architecture", NULL),
                   "config.model.architecture", "required", "absent");
}

Test(config, epsilon)
{
    char buf[2048];
    static const char *const good[] = {"1", "1e-300", "0.1", "1e300"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        config_accepted(with(buf, sizeof buf, "privacy", "epsilon", good[i]), good[i]);
    static const char *const bad[] = {"0", "-0", "0.0", "-1", "\"1.0\"", "null", "true"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        config_refused(with(buf, sizeof buf, "privacy", "epsilon", bad[i]),
                       "config.privacy.epsilon", "greater than 0", bad[i]);
    config_refused(with(buf, sizeof buf, "privacy", "epsilon", NULL), "config.privacy.epsilon",
                   "required", "absent");
}

Test(config, delta_is_strictly_between_0_and_1)
{
    char buf[2048];
    static const char *const good[] = {"1e-300", "0.5", "0.9999999999", "0.1"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        config_accepted(with(buf, sizeof buf, "privacy", "delta", good[i]), good[i]);
    /* 1/dataset_size or more is weak, but not refused */
    config_accepted(with(buf, sizeof buf, "privacy", "delta", "0.001"), "delta > 1/60000");
    cr_assert_eq(out.delta, 0.001);
    static const char *const bad[] = {"0", "-0", "1", "1.0", "-1e-5", "2", "\"1e-5\"", "null"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        config_refused(with(buf, sizeof buf, "privacy", "delta", bad[i]), "config.privacy.delta",
                       "less than 1", bad[i]);
    config_refused(with(buf, sizeof buf, "privacy", "delta", NULL), "config.privacy.delta",
                   "required", "absent");
}

Test(config, only_the_gaussian_mechanism)
{
    char buf[2048];
    static const char *const bad[] = {"\"laplace\"", "\"Gaussian\"",  "\"gaussian \"",
                                      "\"\"",        "\"gauss\"",     "1",
                                      "null",        "[\"gaussian\"]"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        config_refused(with(buf, sizeof buf, "privacy", "noise_mechanism", bad[i]),
                       "config.privacy.noise_mechanism", "only the gaussian mechanism", bad[i]);
    config_refused(with(buf, sizeof buf, "privacy", "noise_mechanism", NULL),
                   "config.privacy.noise_mechanism", "required", "absent");
}

/* training[key]: each of good accepted, each of bad refused saying says_what */
static void training_bounds(const char *key, const char *const *good, size_t ng,
                            const char *const *bad, size_t nb, const char *says_what)
{
    char buf[2048], path[64];
    snprintf(path, sizeof path, "config.training.%s", key);
    for (size_t i = 0; i < ng; i++)
        config_accepted(with(buf, sizeof buf, "training", key, good[i]), good[i]);
    for (size_t i = 0; i < nb; i++)
        config_refused(with(buf, sizeof buf, "training", key, bad[i]), path, says_what, bad[i]);
    config_refused(with(buf, sizeof buf, "training", key, NULL), path, "required", "absent");
}

#define N(a) (sizeof(a) / sizeof(a)[0])

Test(config, batch_size)
{
    char buf[2048];
    static const char *const good[] = {"1", "32", "60000"};
    static const char *const bad[] = {"0", "-1", "1000001", "32.0", "3.5", "\"32\"", "null"};
    training_bounds("batch_size", good, N(good), bad, N(bad), "1 to 1000000");
    /* 1000000 needs as big a dataset */
    config_accepted("{" MODEL "," PRIVACY ",\"training\":{\"batch_size\":1000000,\"epochs\":1,"
                    "\"learning_rate\":1,\"dataset\":\"d\",\"dataset_size\":1000000,"
                    "\"max_grad_norm\":1}}",
                    "1000000");
    cr_assert_eq(out.steps, 1);
    cr_assert_eq(out.q, 1.0);
    config_refused(with(buf, sizeof buf, "training", "batch_size", "60001"),
                   "config.training.dataset_size", "at least config.training.batch_size",
                   "a batch bigger than the dataset");
}

Test(config, epochs)
{
    static const char *const good[] = {"1", "100000"};
    static const char *const bad[] = {"0", "-1", "100001", "10.0", "\"10\"", "null", "[10]"};
    training_bounds("epochs", good, N(good), bad, N(bad), "1 to 100000");
    char buf[2048];
    config_accepted(with(buf, sizeof buf, "training", "epochs", "100000"), "100000");
    cr_assert_eq(out.steps, INT64_C(187500000));
}

Test(config, learning_rate)
{
    static const char *const good[] = {"10", "10.0", "1e-300", "0.001", "1"};
    static const char *const bad[] = {"0", "-0", "-0.001", "10.000001", "11", "\"0.1\"", "null"};
    training_bounds("learning_rate", good, N(good), bad, N(bad), "greater than 0 and at most 10");
}

Test(config, dataset)
{
    char v[300];
    memset(v, 'd', sizeof v);
    v[0] = '"';
    memcpy(v + 256, "\"", 2);
    static const char *good[] = {"\"x\"", "\"s3://bucket/mnist train\"", "\"donn\\u00e9es\"", NULL};
    good[3] = v;
    static const char *const bad[] = {"\"\"", "1", "null", "[\"mnist\"]", "{}"};
    training_bounds("dataset", good, N(good), bad, N(bad), "1..255 bytes");
    char buf[2048];
    config_accepted(with(buf, sizeof buf, "training", "dataset", v), "255 bytes");
    cr_assert_eq(strlen(out.dataset), 255);
    memcpy(v + 256, "d\"", 3);
    config_refused(with(buf, sizeof buf, "training", "dataset", v), "config.training.dataset",
                   "1..255 bytes", "256 bytes");
}

Test(config, dataset_size)
{
    static const char *const good[] = {"32", "33", "9007199254740993"};
    static const char *const bad[] = {"0", "-1", "60000.0", "\"60000\"", "null"};
    training_bounds("dataset_size", good, N(good), bad, N(bad), "an integer of at least 1");
    char buf[2048];
    config_refused(with(buf, sizeof buf, "training", "dataset_size", "31"),
                   "config.training.dataset_size", "at least config.training.batch_size",
                   "smaller than a batch");
}

Test(config, max_grad_norm)
{
    static const char *const good[] = {"1", "0.01", "1e300", "100"};
    static const char *const bad[] = {"0", "-0", "-1", "\"1\"", "null", "false"};
    training_bounds("max_grad_norm", good, N(good), bad, N(bad), "greater than 0");
}

/* ------------------------------------------------------------------------ */

Test(model_name, length_and_text, .init = reset)
{
    char s[300];
    memset(s, 'm', 255);
    s[255] = '\0';
    accepted(tv_model_name("mnist-dp", &e), "a name");
    accepted(tv_model_name("mod\xc3\xa8le \xe2\x82\xac", &e), "UTF-8");
    accepted(tv_model_name(s, &e), "255 bytes");
    s[255] = 'm';
    s[256] = '\0';
    refused(tv_model_name(s, &e), "model_name", "256 bytes");
    reset();
    refused(tv_model_name("", &e), "model_name", "empty");
    reset();
    refused(tv_model_name(NULL, &e), "model_name", "NULL");
    reset();
    static const char *const bad[] = {"a\tb", "a\nb", "\x01", "x\x7f", "\xc3", "\xc0\xaf"};
    for (size_t i = 0; i < N(bad); i++) {
        refused(tv_model_name(bad[i], &e), "model_name", bad[i]);
        reset();
    }
}

Test(budget, positive_and_covering_the_epsilon, .init = reset)
{
    accepted(tv_budget(1.0, 1.0, &e), "equal");
    accepted(tv_budget(10.0, 1.0, &e), "more");
    accepted(tv_budget(1e-300, 1e-300, &e), "tiny");
    static const double bad[] = {0.0, -0.0, -1.0, INFINITY, -INFINITY, NAN};
    for (size_t i = 0; i < N(bad); i++) {
        refused(tv_budget(bad[i], 1.0, &e), "privacy_budget", "not a positive budget");
        says("greater than 0", "not a positive budget");
    }
    refused(tv_budget(0.5, 1.0, &e), "privacy_budget", "less than the epsilon");
    says("privacy_budget 0.5 is less than the config's privacy.epsilon 1", "both numbers");
    refused(tv_budget(1.0, nextafter(1.0, 2.0), &e), "privacy_budget", "just over");
    says("1.0000000000000002", "the epsilon exactly");
    refused(tv_budget(1.0, NAN, &e), "privacy_budget", "a NaN epsilon");
    reset();
}

/* ------------------------------------------------------------------------ */

static const tv_status ALL[TV_NSTATUS] = {TV_PENDING, TV_RUNNING, TV_COMPLETED, TV_FAILED,
                                          TV_STOPPED};

Test(lifecycle, the_whole_table)
{
    /* want[from][to] */
    static const bool want[TV_NSTATUS][TV_NSTATUS] = {
        /* to:          pending running compl  failed stopped */
        /* pending   */ {false, true, false, true, true},
        /* running   */ {true, false, true, true, true},
        /* completed */ {false, false, false, false, false},
        /* failed    */ {false, false, false, false, false},
        /* stopped   */ {false, false, false, false, false},
    };
    for (int f = 0; f < TV_NSTATUS; f++)
        for (int t = 0; t < TV_NSTATUS; t++)
            cr_assert_eq(tv_transition(ALL[f], ALL[t]), want[f][t], "%s -> %s",
                         tv_status_name(ALL[f]), tv_status_name(ALL[t]));
    cr_assert_not(tv_transition(TV_NSTATUS, TV_PENDING));
    cr_assert_not(tv_transition(TV_PENDING, TV_NSTATUS));
    cr_assert_not(tv_transition((tv_status)-1, TV_RUNNING));
}

Test(status, parse_and_name_round_trip, .init = reset)
{
    /* the database enum job_status (migrations/0001_init.up.sql), in its order */
    static const char *const names[TV_NSTATUS] = {"pending", "running", "completed", "failed",
                                                  "stopped"};
    for (int i = 0; i < TV_NSTATUS; i++) {
        tv_status s = (tv_status)-1;
        accepted(tv_status_parse(names[i], "status", &s, &e), names[i]);
        cr_assert_eq(s, ALL[i], "%s", names[i]);
        cr_assert_eq((int)s, i, "%s is in the database's order", names[i]);
        cr_assert_str_eq(tv_status_name(s), names[i]);
    }
    cr_assert_str_eq(tv_status_name(TV_NSTATUS), "unknown");
    cr_assert_str_eq(tv_status_name((tv_status)-1), "unknown");
}

Test(status, bad_names_name_the_callers_field, .init = reset)
{
    static const char *const bad[] = {"",          "Pending", "RUNNING", " running", "running ",
                                      "cancelled", "queued",  "done",    "unknown"};
    for (size_t i = 0; i < N(bad); i++) {
        tv_status s = TV_STOPPED;
        refused(tv_status_parse(bad[i], "filter.status", &s, &e), "filter.status", bad[i]);
        cr_assert_eq(s, TV_STOPPED, "output written on refusal of '%s'", bad[i]);
        reset();
    }
    tv_status s = TV_STOPPED;
    cr_assert_not(tv_status_parse(NULL, "status", &s, &e));
    cr_assert_str_eq(e.field, "status");
    says("stopped", "the message lists the statuses");
}

/* The accountant assumes Poisson sampling: a config asking for another
 * sampler is refused, saying why. */
Test(config, sampler_other_than_poisson_is_refused)
{
    reset();
    const char *shuffle = "{" MODEL "," PRIVACY ",\"training\":{\"batch_size\":32,\"epochs\":10,"
                          "\"learning_rate\":0.001,\"dataset\":\"mnist\",\"dataset_size\":60000,"
                          "\"max_grad_norm\":1.0,\"sampler\":\"shuffle\"}}";
    refused(tv_config_check(shuffle, &out, &e), "config.training.sampler", "a shuffling sampler");
    says("Poisson", "a shuffling sampler");
    const char *poisson = "{" MODEL "," PRIVACY ",\"training\":{\"batch_size\":32,\"epochs\":10,"
                          "\"learning_rate\":0.001,\"dataset\":\"mnist\",\"dataset_size\":60000,"
                          "\"max_grad_norm\":1.0,\"sampler\":\"poisson\"}}";
    accepted(tv_config_check(poisson, &out, &e), "the Poisson sampler named");
}
