/* JSON-lines logger; see log.h. */
#include "log.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>

static struct {
    char service[64];
    cms_log_level min;
    FILE *out;
} g_log = {"cms", CMS_LOG_INFO, NULL};

void cms_log_init(const char *service, cms_log_level min_level, FILE *out)
{
    snprintf(g_log.service, sizeof g_log.service, "%s", service ? service : "cms");
    g_log.min = min_level;
    g_log.out = out;
}

const char *cms_log_level_name(cms_log_level level)
{
    switch (level) {
    case CMS_LOG_DEBUG:
        return "debug";
    case CMS_LOG_INFO:
        return "info";
    case CMS_LOG_WARN:
        return "warn";
    case CMS_LOG_ERROR:
        return "error";
    }
    return "unknown";
}

bool cms_log_level_parse(const char *s, cms_log_level *out)
{
    static const struct {
        const char *name;
        cms_log_level level;
    } names[] = {
        {"debug", CMS_LOG_DEBUG},  {"info", CMS_LOG_INFO},   {"warn", CMS_LOG_WARN},
        {"warning", CMS_LOG_WARN}, {"error", CMS_LOG_ERROR},
    };
    if (s == NULL)
        return false;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (strcasecmp(s, names[i].name) == 0) {
            *out = names[i].level;
            return true;
        }
    }
    return false;
}

bool cms_log_enabled(cms_log_level level)
{
    return level >= g_log.min;
}

bool cms_log_is_secret_name(const char *name)
{
    static const char *const secret[] = {"password", "passwd", "secret",        "token",
                                         "api_key",  "apikey", "authorization", "key"};
    for (size_t i = 0; i < sizeof secret / sizeof secret[0]; i++) {
        size_t n = strlen(secret[i]), len = strlen(name);
        /* exact name, or a suffix like "db_password" / "signing_key" */
        if (len >= n && strcasecmp(name + len - n, secret[i]) == 0 &&
            (len == n || name[len - n - 1] == '_' || name[len - n - 1] == '-'))
            return true;
    }
    return false;
}

static void format_ts(char *buf, size_t len)
{
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    size_t n = strftime(buf, len, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, len - n, ".%06ldZ", (long)tv.tv_usec);
}

void cms_log(cms_log_level level, const char *msg, const char *fields, ...)
{
    if (!cms_log_enabled(level))
        return;
    char ts[40];
    format_ts(ts, sizeof ts);
    json_t *line = json_pack("{s:s, s:s, s:s, s:s}", "ts", ts, "level", cms_log_level_name(level),
                             "service", g_log.service, "msg", msg ? msg : "");
    if (line == NULL)
        return;
    if (fields != NULL) {
        va_list ap;
        va_start(ap, fields);
        json_error_t err;
        json_t *extra = json_vpack_ex(&err, 0, fields, ap);
        va_end(ap);
        if (json_is_object(extra)) {
            const char *k;
            json_t *v;
            json_object_foreach(extra, k, v)
            {
                if (cms_log_is_secret_name(k))
                    json_object_set_new(line, k, json_string("[redacted]"));
                else if (json_object_get(line, k) == NULL)
                    json_object_set(line, k, v);
            }
        } else {
            json_object_set_new(line, "log_format_error", json_string(err.text));
        }
        json_decref(extra);
    }
    char *text = json_dumps(line, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(line);
    if (text == NULL)
        return;
    FILE *out = g_log.out ? g_log.out : stdout;
    size_t n = strlen(text);
    text[n] = '\n'; /* json_dumps leaves room: its terminating NUL becomes the newline */
    flockfile(out);
    fwrite(text, 1, n + 1, out);
    fflush(out);
    funlockfile(out);
    free(text);
}
