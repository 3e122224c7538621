/* The query's arguments, its cursor and who reads what; see query_args.h. */
#include "audit/query_args.h"

#include "bus.h"

#include <errno.h>
#include <inttypes.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SHOWN_MAX 64 /* bytes of a refused value quoted back */
#define CURSOR_RAW_MAX 80
#define YEAR_MIN 1970
#define YEAR_MAX 9999

static bool fail(audit_qa_err *e, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static bool fail(audit_qa_err *e, const char *field, const char *fmt, ...)
{
    va_list ap;
    e->field = field;
    va_start(ap, fmt);
    vsnprintf(e->what, sizeof e->what, fmt, ap);
    va_end(ap);
    return false;
}

/* A refused value as it is quoted back: cut short, control bytes as '?'. */
static const char *shown(const char *s, char out[SHOWN_MAX + 4])
{
    size_t i = 0;
    for (; s[i] != '\0' && i < SHOWN_MAX; i++) {
        unsigned char c = (unsigned char)s[i];
        out[i] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
    }
    snprintf(out + i, 4, "%s", s[i] != '\0' ? "..." : "");
    return out;
}

static bool uuid_field(const char *s, const char *field, char out[CMS_UUID_STRLEN + 1],
                       audit_qa_err *e)
{
    char b[SHOWN_MAX + 4];
    cms_uuid u;
    out[0] = '\0';
    if (s == NULL || s[0] == '\0')
        return true;
    if (!cms_uuid_parse(s, strlen(s), &u))
        return fail(e, field,
                    "\"%s\" is not a UUID: want 8-4-4-4-12 hex digits, like "
                    "00000000-0000-7000-8000-000000000001",
                    shown(s, b));
    cms_uuid_format(&u, out);
    return true;
}

/* event types are "<resource_type>.<verb>": tokens and dots */
static bool type_field(const char *s, const char *field, bool dots, char out[AUDIT_QA_TYPE_MAX + 1],
                       audit_qa_err *e)
{
    char b[SHOWN_MAX + 4];
    size_t n = s ? strlen(s) : 0;
    out[0] = '\0';
    if (n == 0)
        return true;
    bool ok = n <= AUDIT_QA_TYPE_MAX;
    for (size_t i = 0; ok && i < n; i++)
        ok = cms_bus_valid_token(s + i, 1) || (dots && s[i] == '.');
    if (!ok)
        return fail(e, field, "\"%s\" is not a type: want 1 to %d letters, digits, '_', '-'%s",
                    shown(s, b), AUDIT_QA_TYPE_MAX, dots ? " or '.' (e.g. contract.signed)" : "");
    memcpy(out, s, n + 1);
    return true;
}

bool audit_qa_validate(const Cms__V1__QueryAuditLog *m, audit_qa *out, audit_qa_err *e)
{
    char b[SHOWN_MAX + 4];
    memset(out, 0, sizeof *out);
    if (!type_field(m->resource_type, "resource_type", false, out->resource_type, e) ||
        !uuid_field(m->resource_id, "resource_id", out->resource_id, e) ||
        !uuid_field(m->actor, "actor", out->actor, e) ||
        !type_field(m->event_type, "event_type", true, out->event_type, e))
        return false;
    if (m->since != NULL && m->since[0] != '\0') {
        if (!audit_qa_time_parse(m->since, &out->since_us))
            return fail(e, "since",
                        "\"%s\" is not a timestamp: want e.g. 2024-03-20T15:00:00Z or 2024-03-20 "
                        "(years %d to %d)",
                        shown(m->since, b), YEAR_MIN, YEAR_MAX);
        out->has_since = true;
    }
    if (m->limit < 0 || m->limit > AUDIT_QA_LIMIT_MAX)
        return fail(e, "limit", "is %" PRId32 ": want 1 to %d (0: %d)", m->limit,
                    AUDIT_QA_LIMIT_MAX, AUDIT_QA_LIMIT_DEFAULT);
    out->limit = m->limit ? m->limit : AUDIT_QA_LIMIT_DEFAULT;
    if (m->after != NULL && m->after[0] != '\0') {
        if (!audit_qa_cursor_decode(m->after, &out->after_us, out->after_id))
            return fail(e, "after",
                        "\"%s\" is not a cursor: copy it from the \"next: --after ...\" line "
                        "of the previous page",
                        shown(m->after, b));
        out->has_after = true;
    }
    return true;
}

bool audit_qa_authorise(audit_qa *q, const cms_principal *p, char *why, size_t whylen)
{
    if (p == NULL) {
        snprintf(why, whylen, "the audit log is read only by a known caller");
        return false;
    }
    if (cms_principal_has_role(p, "admin") || cms_principal_has_role(p, AUDIT_QA_AUDITOR_ROLE))
        return true;
    cms_uuid self;
    char own[CMS_UUID_STRLEN + 1];
    if (!cms_uuid_parse(p->identity_id, strlen(p->identity_id), &self)) {
        snprintf(why, whylen, "the caller has no identity id");
        return false;
    }
    cms_uuid_format(&self, own);
    if (q->actor[0] != '\0' && strcmp(q->actor, own) != 0) {
        snprintf(why, whylen,
                 "only an admin or an %s reads what others did: leave actor empty, or give "
                 "your own id",
                 AUDIT_QA_AUDITOR_ROLE);
        return false;
    }
    memcpy(q->actor, own, sizeof q->actor);
    return true;
}

/* ---- the cursor ---- */

bool audit_qa_cursor_encode(int64_t us, const char *id, char out[AUDIT_QA_CURSOR_MAX])
{
    char raw[CURSOR_RAW_MAX];
    int n = snprintf(raw, sizeof raw, "%" PRId64 ":%s", us, id);
    if (n < 0 || (size_t)n >= sizeof raw ||
        sodium_base64_ENCODED_LEN((size_t)n, sodium_base64_VARIANT_URLSAFE_NO_PADDING) >
            AUDIT_QA_CURSOR_MAX)
        return false;
    sodium_bin2base64(out, AUDIT_QA_CURSOR_MAX, (const unsigned char *)raw, (size_t)n,
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    return true;
}

bool audit_qa_cursor_decode(const char *cur, int64_t *us, char id[CMS_UUID_STRLEN + 1])
{
    unsigned char raw[CURSOR_RAW_MAX];
    size_t n = 0;
    if (cur == NULL || strlen(cur) >= AUDIT_QA_CURSOR_MAX ||
        sodium_base642bin(raw, sizeof raw - 1, cur, strlen(cur), NULL, &n, NULL,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0)
        return false;
    raw[n] = '\0';
    char *colon = strchr((char *)raw, ':');
    if (colon == NULL || colon == (char *)raw)
        return false;
    *colon = '\0';
    errno = 0;
    char *end = NULL;
    long long v = strtoll((char *)raw, &end, 10);
    cms_uuid u;
    if (errno != 0 || *end != '\0' || !cms_uuid_parse(colon + 1, strlen(colon + 1), &u))
        return false;
    cms_uuid_format(&u, id);
    /* only the canonical form: one row key has one cursor */
    char again[AUDIT_QA_CURSOR_MAX];
    if (!audit_qa_cursor_encode((int64_t)v, id, again) || strcmp(again, cur) != 0)
        return false;
    *us = (int64_t)v;
    return true;
}

/* ---- times ---- */

/* Whether s starts with shape: '9' stands for a digit, anything else for itself. */
static bool shaped(const char *s, const char *shape)
{
    for (; *shape != '\0'; s++, shape++)
        if (*shape == '9' ? (*s < '0' || *s > '9') : *s != *shape)
            return false;
    return true;
}

/* The n digits at s (checked by shaped). */
static int value(const char *s, int n)
{
    int v = 0;
    while (n-- > 0)
        v = v * 10 + (*s++ - '0');
    return v;
}

static bool is_leap(int y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

bool audit_qa_time_parse(const char *text, int64_t *us)
{
    static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    const char *p = text;
    struct tm tm;
    int64_t frac = 0, offset_s = 0;
    memset(&tm, 0, sizeof tm);
    if (p == NULL || !shaped(p, "9999-99-99"))
        return false;
    int y = value(p, 4), mo = value(p + 5, 2), d = value(p + 8, 2);
    p += 10;
    if (y < YEAR_MIN || y > YEAR_MAX || mo < 1 || mo > 12 || d < 1 ||
        d > mdays[mo - 1] + (mo == 2 && is_leap(y)))
        return false;
    if (*p == 'T' || *p == 't' || *p == ' ') {
        if (!shaped(++p, "99:99"))
            return false;
        tm.tm_hour = value(p, 2);
        tm.tm_min = value(p + 3, 2);
        p += 5;
        if (shaped(p, ":99")) {
            tm.tm_sec = value(p + 1, 2);
            p += 3;
            if (*p == '.') {
                int nd = 0;
                for (p++; *p >= '0' && *p <= '9'; p++, nd++)
                    if (nd < 6)
                        frac = frac * 10 + (*p - '0');
                if (nd == 0)
                    return false;
                for (; nd < 6; nd++)
                    frac *= 10;
            }
        }
        if (tm.tm_hour > 23 || tm.tm_min > 59 || tm.tm_sec > 59)
            return false;
        if (*p == 'Z' || *p == 'z') {
            p++;
        } else if ((*p == '+' || *p == '-') && shaped(p + 1, "99")) {
            /* +HH, +HHMM or +HH:MM */
            int sign = *p == '-' ? -1 : 1, oh = value(p + 1, 2), om = 0;
            p += 3;
            if (shaped(p, ":99") || shaped(p, "99")) {
                p += *p == ':';
                om = value(p, 2);
                p += 2;
            }
            if (oh > 23 || om > 59)
                return false;
            offset_s = sign * (oh * 3600 + om * 60);
        }
    }
    if (*p != '\0')
        return false;
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    *us = ((int64_t)timegm(&tm) - offset_s) * 1000000 + frac;
    return true;
}

bool audit_qa_time_text(int64_t us, char out[AUDIT_QA_TIME_TEXT_MAX])
{
    int64_t secs = us / 1000000, frac = us % 1000000;
    if (frac < 0) {
        secs -= 1;
        frac += 1000000;
    }
    time_t t = (time_t)secs;
    struct tm tm;
    char date[32];
    if (gmtime_r(&t, &tm) == NULL || strftime(date, sizeof date, "%Y-%m-%d %H:%M:%S", &tm) == 0)
        return false;
    int n = snprintf(out, AUDIT_QA_TIME_TEXT_MAX, "%s.%06" PRId64 "+00", date, frac);
    return n > 0 && n < AUDIT_QA_TIME_TEXT_MAX;
}
