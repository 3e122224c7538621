/* JSON-lines logging: one object per line on stdout (or a chosen stream).
 *
 * Every line has "ts" (RFC 3339, UTC, microseconds), "level", "service" and
 * "msg"; extra fields come from a jansson json_pack() format for an object:
 *
 *     cms_log_info("pg connected", "{s:s, s:i}", "host", host, "port", port);
 *
 * Fields whose name looks like a secret (password, secret, token, api_key,
 * authorization, key) are written as "[redacted]" whatever their value, so a
 * careless call cannot leak one. Safe to call from any thread: a line is
 * rendered first and written with one locked fwrite. */
#ifndef CMS_LOG_H
#define CMS_LOG_H

#include <stdbool.h>
#include <stdio.h>

typedef enum cms_log_level {
    CMS_LOG_DEBUG,
    CMS_LOG_INFO,
    CMS_LOG_WARN,
    CMS_LOG_ERROR,
} cms_log_level;

/* Sets the service name stamped on every line, the minimum level and the
 * stream (NULL means stdout). May be called again, e.g. after parsing config. */
void cms_log_init(const char *service, cms_log_level min_level, FILE *out);

/* Parses "debug", "info", "warn"/"warning", "error" (case-insensitive).
 * Returns false, leaving *out alone, for anything else. */
bool cms_log_level_parse(const char *s, cms_log_level *out) __attribute__((warn_unused_result));
const char *cms_log_level_name(cms_log_level level);
bool cms_log_enabled(cms_log_level level);

/* fields: a json_pack() format that builds an object, or NULL for none. A
 * format error is itself logged (with the message) rather than lost. */
void cms_log(cms_log_level level, const char *msg, const char *fields, ...);

#define cms_log_debug(...) cms_log(CMS_LOG_DEBUG, __VA_ARGS__, NULL)
#define cms_log_info(...) cms_log(CMS_LOG_INFO, __VA_ARGS__, NULL)
#define cms_log_warn(...) cms_log(CMS_LOG_WARN, __VA_ARGS__, NULL)
#define cms_log_error(...) cms_log(CMS_LOG_ERROR, __VA_ARGS__, NULL)

/* True if a field of this name is treated as a secret. */
bool cms_log_is_secret_name(const char *name);

#endif
