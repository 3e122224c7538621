/* log: one JSON object per line with ts (RFC 3339, UTC, microseconds), level,
 * service and msg first; the fields a format builds after them; a field
 * named like a secret redacted whatever its value; lines below the minimum
 * level dropped; level names parsed; a bad format logged, not lost; and
 * lines from several threads never interleaved. Every line is read back
 * from a memory stream the logger writes to. */
#include "log.h"

#include <criterion/criterion.h>
#include <jansson.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static char *g_text;
static size_t g_len;
static FILE *g_out;

static void setup(void)
{
    g_out = open_memstream(&g_text, &g_len);
    cr_assert_not_null(g_out);
    cms_log_init("logtest", CMS_LOG_DEBUG, g_out);
}

static void teardown(void)
{
    cms_log_init(NULL, CMS_LOG_INFO, NULL);
    fclose(g_out);
    free(g_text);
    g_text = NULL;
    g_len = 0;
}

TestSuite(log, .init = setup, .fini = teardown);

/* The lines written so far (every one must end in a newline). */
static size_t lines(char ***out)
{
    fflush(g_out);
    size_t n = 0;
    for (size_t i = 0; i < g_len; i++)
        n += g_text[i] == '\n';
    cr_assert(g_len == 0 || g_text[g_len - 1] == '\n', "the last line is terminated");
    char **v = calloc(n + 1, sizeof *v);
    cr_assert_not_null(v);
    const char *p = g_text;
    for (size_t i = 0; i < n; i++) {
        const char *nl = strchr(p, '\n');
        v[i] = strndup(p, (size_t)(nl - p));
        p = nl + 1;
    }
    *out = v;
    return n;
}

static void lines_free(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

/* The only line written so far, parsed as a JSON object. */
static json_t *only_line(void)
{
    char **v;
    size_t n = lines(&v);
    cr_assert_eq(n, 1, "one line, got %zu: %.*s", n, (int)g_len, g_text);
    json_error_t e;
    json_t *j = json_loads(v[0], 0, &e);
    cr_assert_not_null(j, "a line is JSON: %s (%s)", v[0], e.text);
    cr_assert(json_is_object(j), "a line is an object: %s", v[0]);
    lines_free(v, n);
    return j;
}

static const char *str(const json_t *o, const char *key)
{
    const json_t *v = json_object_get(o, key);
    cr_assert(json_is_string(v), "\"%s\" is a string", key);
    return json_string_value(v);
}

/* Seconds since the epoch of "YYYY-MM-DDTHH:MM:SS.uuuuuuZ", read as UTC;
 * -1 unless it has exactly that shape. */
static double parse_ts(const char *ts)
{
    static const char shape[] = "dddd-dd-ddTdd:dd:dd.ddddddZ";
    if (strlen(ts) != strlen(shape))
        return -1;
    for (size_t i = 0; shape[i]; i++)
        if (shape[i] == 'd' ? (ts[i] < '0' || ts[i] > '9') : ts[i] != shape[i])
            return -1;
    struct tm tm = {0};
    char *end = strptime(ts, "%Y-%m-%dT%H:%M:%S", &tm);
    if (end == NULL || *end != '.')
        return -1;
    return (double)timegm(&tm) + strtod(end, NULL);
}

Test(log, a_line_is_one_object_with_ts_level_service_msg_first)
{
    /* a zone far from UTC: a local time would be hours off */
    setenv("TZ", "Asia/Kolkata", 1);
    tzset();
    struct timespec before, after;
    clock_gettime(CLOCK_REALTIME, &before);
    cms_log_info("hello \"world\"\n");
    clock_gettime(CLOCK_REALTIME, &after);
    json_t *j = only_line();
    const char *keys[] = {"ts", "level", "service", "msg"};
    size_t i = 0;
    const char *k;
    json_t *v;
    json_object_foreach(j, k, v)
    {
        cr_assert_lt(i, 4, "no field beyond the four: %s", k);
        cr_assert_str_eq(k, keys[i], "field %zu in order", i);
        i++;
    }
    cr_assert_eq(i, 4);
    cr_assert_str_eq(str(j, "level"), "info");
    cr_assert_str_eq(str(j, "service"), "logtest");
    cr_assert_str_eq(str(j, "msg"), "hello \"world\"\n", "the message survives escaping");
    double ts = parse_ts(str(j, "ts"));
    cr_assert_geq(ts, 0, "RFC 3339 UTC with microseconds: %s", str(j, "ts"));
    double lo = (double)before.tv_sec + before.tv_nsec / 1e9 - 1e-6;
    double hi = (double)after.tv_sec + after.tv_nsec / 1e9 + 1e-6;
    cr_assert(ts >= lo && ts <= hi, "ts %s is the time of the call (UTC), not %f..%f", str(j, "ts"),
              lo, hi);
    json_decref(j);
}

Test(log, every_call_is_its_own_line)
{
    cms_log_info("one");
    cms_log_warn("two", "{s:i}", "n", 2);
    cms_log_error("three");
    char **v;
    size_t n = lines(&v);
    cr_assert_eq(n, 3);
    const char *want[][2] = {{"one", "info"}, {"two", "warn"}, {"three", "error"}};
    for (size_t i = 0; i < n; i++) {
        json_t *j = json_loads(v[i], 0, NULL);
        cr_assert_not_null(j, "line %zu is JSON: %s", i, v[i]);
        cr_assert_str_eq(str(j, "msg"), want[i][0]);
        cr_assert_str_eq(str(j, "level"), want[i][1]);
        json_decref(j);
    }
    lines_free(v, n);
}

Test(log, fields_come_from_the_format)
{
    json_t *list = json_pack("[i, s]", 1, "x");
    cms_log_info("with fields", "{s:s, s:i, s:I, s:b, s:f, s:n, s:o}", "host", "db.local", "port",
                 5432, "big", (json_int_t)1 << 40, "ok", 1, "ratio", 0.5, "nothing", "list", list);
    json_t *j = only_line();
    cr_assert_str_eq(str(j, "host"), "db.local");
    cr_assert_eq(json_integer_value(json_object_get(j, "port")), 5432);
    cr_assert_eq(json_integer_value(json_object_get(j, "big")), (json_int_t)1 << 40);
    cr_assert(json_is_true(json_object_get(j, "ok")));
    cr_assert_float_eq(json_real_value(json_object_get(j, "ratio")), 0.5, 1e-12);
    cr_assert(json_is_null(json_object_get(j, "nothing")));
    json_t *want = json_pack("[i, s]", 1, "x");
    cr_assert(json_equal(json_object_get(j, "list"), want), "a nested value kept whole");
    json_decref(want);
    /* the four fixed fields cannot be overwritten by a careless field */
    json_decref(j);
    fclose(g_out);
    free(g_text);
    g_out = open_memstream(&g_text, &g_len);
    cms_log_init("logtest", CMS_LOG_DEBUG, g_out);
    cms_log_warn("real", "{s:s, s:s, s:s, s:s}", "msg", "fake", "level", "debug", "service",
                 "other", "ts", "yesterday");
    j = only_line();
    cr_assert_str_eq(str(j, "msg"), "real");
    cr_assert_str_eq(str(j, "level"), "warn");
    cr_assert_str_eq(str(j, "service"), "logtest");
    cr_assert_geq(parse_ts(str(j, "ts")), 0);
    json_decref(j);
}

Test(log, secret_named_fields_are_redacted_whatever_their_value)
{
    cms_log_info(
        "connect", "{s:s, s:s, s:s, s:s, s:s, s:s, s:i, s:o, s:n, s:s, s:s, s:s, s:s, s:s}",
        "password", "hunter2", "db_password", "pw-s3cr3t", "Authorization", "Bearer cms_abc",
        "api_key", "cms_0123", "signing-key", "k3y", "X-Token", "t0k", "secret", 987654321, "token",
        json_pack("{s:s}", "inner", "nested-s3cr3t"), "apikey", "passwd", "pwd2", "keyboard",
        "qwerty", "monkey", "banana", "keys_total", "3", "user", "alice");
    json_t *j = only_line();
    const char *redacted[] = {"password", "db_password", "Authorization", "api_key", "signing-key",
                              "X-Token",  "secret",      "token",         "apikey",  "passwd"};
    for (size_t i = 0; i < sizeof redacted / sizeof redacted[0]; i++)
        cr_assert_str_eq(str(j, redacted[i]), "[redacted]", "%s is redacted", redacted[i]);
    /* names that merely contain a secret word are not secrets */
    cr_assert_str_eq(str(j, "keyboard"), "qwerty");
    cr_assert_str_eq(str(j, "monkey"), "banana");
    cr_assert_str_eq(str(j, "keys_total"), "3");
    cr_assert_str_eq(str(j, "user"), "alice");
    json_decref(j);
    const char *values[] = {"hunter2", "pw-s3cr3t", "cms_abc", "cms_0123", "k3y",
                            "t0k",     "987654321", "nested",  "pwd2"};
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++)
        cr_assert_null(strstr(g_text, values[i]), "\"%s\" is nowhere in the line", values[i]);

    cr_assert(cms_log_is_secret_name("PASSWORD"));
    cr_assert(cms_log_is_secret_name("key"));
    cr_assert(cms_log_is_secret_name("server_key"));
    cr_assert(cms_log_is_secret_name("x-api_key"));
    cr_assert_not(cms_log_is_secret_name("keyring"));
    cr_assert_not(cms_log_is_secret_name("hotkey"));
    cr_assert_not(cms_log_is_secret_name("tokens"));
    cr_assert_not(cms_log_is_secret_name(""));
}

Test(log, lines_below_the_minimum_level_are_dropped)
{
    cms_log_init("logtest", CMS_LOG_WARN, g_out);
    cr_assert_not(cms_log_enabled(CMS_LOG_DEBUG));
    cr_assert_not(cms_log_enabled(CMS_LOG_INFO));
    cr_assert(cms_log_enabled(CMS_LOG_WARN));
    cr_assert(cms_log_enabled(CMS_LOG_ERROR));
    cms_log_debug("d", "{s:s}", "x", "y");
    cms_log_info("i");
    cms_log_warn("w");
    cms_log_error("e");
    char **v;
    size_t n = lines(&v);
    cr_assert_eq(n, 2, "only warn and error: %.*s", (int)g_len, g_text);
    cr_assert_not_null(strstr(v[0], "\"msg\":\"w\""));
    cr_assert_not_null(strstr(v[1], "\"msg\":\"e\""));
    lines_free(v, n);

    /* init again: a new minimum and a new service name */
    cms_log_init("again", CMS_LOG_DEBUG, g_out);
    cms_log_debug("now shown");
    n = lines(&v);
    cr_assert_eq(n, 3);
    json_t *j = json_loads(v[2], 0, NULL);
    cr_assert_str_eq(str(j, "level"), "debug");
    cr_assert_str_eq(str(j, "service"), "again");
    json_decref(j);
    lines_free(v, n);
}

Test(log, a_missing_service_name_is_cms)
{
    cms_log_init(NULL, CMS_LOG_INFO, g_out);
    cms_log_info("x");
    json_t *j = only_line();
    cr_assert_str_eq(str(j, "service"), "cms");
    json_decref(j);
}

Test(log, level_names_parse_case_insensitively)
{
    struct {
        const char *s;
        cms_log_level want;
    } ok[] = {{"debug", CMS_LOG_DEBUG},  {"INFO", CMS_LOG_INFO},    {"Warn", CMS_LOG_WARN},
              {"warning", CMS_LOG_WARN}, {"WARNING", CMS_LOG_WARN}, {"error", CMS_LOG_ERROR}};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        cms_log_level l = CMS_LOG_ERROR + 1;
        cr_assert(cms_log_level_parse(ok[i].s, &l), "%s parses", ok[i].s);
        cr_assert_eq(l, ok[i].want, "%s", ok[i].s);
    }
    const char *bad[] = {"", "loud", "err", "warn ", " info", "debug2", "fatal", NULL};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cms_log_level l = CMS_LOG_INFO;
        cr_assert_not(cms_log_level_parse(bad[i], &l), "\"%s\" is refused",
                      bad[i] ? bad[i] : "(null)");
        cr_assert_eq(l, CMS_LOG_INFO, "a refusal leaves the level alone");
    }
    cr_assert_str_eq(cms_log_level_name(CMS_LOG_DEBUG), "debug");
    cr_assert_str_eq(cms_log_level_name(CMS_LOG_INFO), "info");
    cr_assert_str_eq(cms_log_level_name(CMS_LOG_WARN), "warn");
    cr_assert_str_eq(cms_log_level_name(CMS_LOG_ERROR), "error");
}

Test(log, a_bad_format_is_itself_logged)
{
    cms_log_warn("the message", "{s:i", "n", 1);
    json_t *j = only_line();
    cr_assert_str_eq(str(j, "msg"), "the message", "the line is still written");
    cr_assert_str_eq(str(j, "level"), "warn");
    cr_assert_gt(strlen(str(j, "log_format_error")), 0, "with what was wrong");
    json_decref(j);

    /* a NULL string where the format wants one */
    fclose(g_out);
    free(g_text);
    g_out = open_memstream(&g_text, &g_len);
    cms_log_init("logtest", CMS_LOG_DEBUG, g_out);
    cms_log_error("null value", "{s:s}", "name", (const char *)NULL);
    j = only_line();
    cr_assert_str_eq(str(j, "msg"), "null value");
    cr_assert_gt(strlen(str(j, "log_format_error")), 0);
    cr_assert_null(json_object_get(j, "name"));
    json_decref(j);

    /* a format that builds something other than an object */
    fclose(g_out);
    free(g_text);
    g_out = open_memstream(&g_text, &g_len);
    cms_log_init("logtest", CMS_LOG_DEBUG, g_out);
    cms_log_info("array", "[i]", 1);
    j = only_line();
    cr_assert_str_eq(str(j, "msg"), "array");
    cr_assert_not_null(json_object_get(j, "log_format_error"));
    json_decref(j);
}

#define THREADS 4
#define PER_THREAD 500

static void *writer(void *arg)
{
    int t = (int)(intptr_t)arg;
    for (int i = 0; i < PER_THREAD; i++)
        cms_log_info("from a thread", "{s:i, s:i, s:s}", "thread", t, "i", i, "pad",
                     "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
    return NULL;
}

Test(log, lines_of_several_threads_never_interleave)
{
    pthread_t th[THREADS];
    for (int t = 0; t < THREADS; t++)
        cr_assert_eq(pthread_create(&th[t], NULL, writer, (void *)(intptr_t)t), 0);
    for (int t = 0; t < THREADS; t++)
        pthread_join(th[t], NULL);
    char **v;
    size_t n = lines(&v);
    cr_assert_eq(n, THREADS * PER_THREAD);
    int next[THREADS] = {0};
    for (size_t i = 0; i < n; i++) {
        json_t *j = json_loads(v[i], 0, NULL);
        cr_assert_not_null(j, "line %zu is whole: %s", i, v[i]);
        int t = (int)json_integer_value(json_object_get(j, "thread"));
        cr_assert(t >= 0 && t < THREADS);
        cr_assert_eq(json_integer_value(json_object_get(j, "i")), next[t]++,
                     "a thread's lines in its order");
        json_decref(j);
    }
    lines_free(v, n);
}
