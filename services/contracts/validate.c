/* Input checks of cms-contracts; see validate.h. Where cms-identity's checks
 * say the same thing (a UUID, bounded UTF-8 text, a name without control
 * characters) they are its own, with their messages. */
#include "contracts/validate.h"

#include "identity/validate.h"
#include "json.h"
#include "xenum.h"

#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_CONDITIONS 100

/* an identity check's refusal as ours */
static bool from_idv(cv_err *e, const idv_err *ie)
{
    return cms_field_fail(e, ie->field ? ie->field : "", "%s", ie->msg);
}

/* ---- status --------------------------------------------------------------- */

static const char *const STATUSES[] = {
    [CV_DRAFT] = "draft",     [CV_REVIEW] = "review",       [CV_SIGNED] = "signed",
    [CV_ACTIVE] = "active",   [CV_COMPLETED] = "completed", [CV_TERMINATED] = "terminated",
    [CV_EXPIRED] = "expired",
};
_Static_assert(sizeof STATUSES / sizeof STATUSES[0] == CV_NSTATUS, "a name for every status");

bool cv_status_parse(const char *s, const char *field, cv_status *out, cv_err *e)
{
    int i = cms_enum_index(STATUSES, CV_NSTATUS, s);
    if (i >= 0) {
        *out = (cv_status)i;
        return true;
    }
    return cms_field_fail(
        e, field, "%s must be draft, review, signed, active, completed, terminated or expired",
        field);
}

const char *cv_status_name(cv_status s)
{
    return cms_enum_text(STATUSES, CV_NSTATUS, (int)s);
}

bool cv_transition(cv_status from, cv_status to)
{
    switch (from) {
    case CV_DRAFT:
        return to == CV_REVIEW || to == CV_TERMINATED;
    case CV_REVIEW:
        return to == CV_SIGNED || to == CV_TERMINATED;
    case CV_SIGNED:
        return to == CV_ACTIVE || to == CV_TERMINATED || to == CV_EXPIRED;
    case CV_ACTIVE:
        return to == CV_COMPLETED || to == CV_TERMINATED || to == CV_EXPIRED;
    case CV_COMPLETED:
    case CV_TERMINATED:
    case CV_EXPIRED:
    case CV_NSTATUS:
        return false;
    }
    return false;
}

bool cv_is_final(cv_status s)
{
    return s == CV_COMPLETED || s == CV_TERMINATED || s == CV_EXPIRED;
}

/* ---- text ----------------------------------------------------------------- */

/* The code point at s (valid UTF-8, as checked before); *len its bytes. */
static uint32_t code_point(const unsigned char *s, size_t *len)
{
    if (s[0] < 0x80) {
        *len = 1;
        return s[0];
    }
    if (s[0] < 0xe0) {
        *len = 2;
        return (uint32_t)(s[0] & 0x1f) << 6 | (s[1] & 0x3f);
    }
    if (s[0] < 0xf0) {
        *len = 3;
        return (uint32_t)(s[0] & 0x0f) << 12 | (uint32_t)(s[1] & 0x3f) << 6 | (s[2] & 0x3f);
    }
    *len = 4;
    return (uint32_t)(s[0] & 0x07) << 18 | (uint32_t)(s[1] & 0x3f) << 12 |
           (uint32_t)(s[2] & 0x3f) << 6 | (s[3] & 0x3f);
}

/* Unicode's White_Space outside the control characters: what looks like
 * nothing on a page */
static bool is_space(uint32_t c)
{
    return c == 0x20 || c == 0xa0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200a) || c == 0x2028 ||
           c == 0x2029 || c == 0x202f || c == 0x205f || c == 0x3000;
}

/* s (valid UTF-8) holds nothing but spaces */
static bool blank(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t len;
    for (; *p; p += len)
        if (!is_space(code_point(p, &len)))
            return false;
    return true;
}

/* Free text (valid UTF-8) may break lines (LF or CRLF) and hold tabs; any
 * other C0 control, DEL or C1 control is refused. */
static bool free_text(const char *s, const char *field, cv_err *e)
{
    size_t n = s ? strlen(s) : 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\t' || c == '\n' || (c == '\r' && s[i + 1] == '\n'))
            continue;
        if (c < 0x20 || c == 0x7f ||
            (c == 0xc2 && (unsigned char)s[i + 1] >= 0x80 && (unsigned char)s[i + 1] <= 0x9f))
            return cms_field_fail(e, field,
                                  "%s contains a control character at byte %zu; only tabs and line "
                                  "breaks are allowed",
                                  field, i);
    }
    return true;
}

bool cv_title(const char *s, cv_err *e)
{
    idv_err ie = {0};
    if (!idv_name(s, "title", &ie))
        return from_idv(e, &ie);
    if (blank(s))
        return cms_field_fail(e, "title", "title is only spaces");
    return true;
}

bool cv_description(const char *s, cv_err *e)
{
    idv_err ie = {0};
    if (!idv_text(s, "description", CV_DESCRIPTION_MAX, &ie))
        return from_idv(e, &ie);
    return free_text(s, "description", e);
}

bool cv_reason(const char *s, bool required, cv_err *e)
{
    idv_err ie = {0};
    if (!idv_text(s, "reason", CV_REASON_MAX, &ie))
        return from_idv(e, &ie);
    if (!free_text(s, "reason", e))
        return false;
    if (required && (s == NULL || blank(s)))
        return cms_field_fail(e, "reason", "reason is required");
    return true;
}

bool cv_uuid(const char *s, const char *field, cv_err *e)
{
    idv_err ie = {0};
    if (!idv_uuid(s, field, &ie))
        return from_idv(e, &ie);
    return true;
}

/* ---- JSON ----------------------------------------------------------------- */

/* s (n bytes, at most max) parsed as a JSON object without duplicate keys,
 * or NULL with e set. jansson refuses invalid UTF-8 and \u0000, as jsonb
 * does. */
static json_t *load_object(const char *s, size_t n, size_t max, const char *field, cv_err *e)
{
    json_error_t err;
    json_t *j = NULL;
    if (n > max) {
        cms_field_fail(e, field, "%s is %zu bytes; at most %zu", field, n, max);
        return NULL;
    }
    j = json_loadb(s, n, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &err);
    if (j == NULL) {
        /* a duplicate key's text names it: duplicate object key near '"k"' */
        cms_field_fail(e, field, "%s is not valid JSON: %.100s (at byte %d)", field, err.text,
                       err.position);
        return NULL;
    }
    if (!json_is_object(j)) {
        cms_field_fail(e, field, "%s must be a JSON object", field);
        json_decref(j);
        return NULL;
    }
    size_t at;
    if (cms_json_numeric_overflow(s, n, &at)) {
        cms_field_fail(e, field,
                       "%s holds a number with more than %d digits after the point (at byte %zu)",
                       field, CMS_JSON_NUMERIC_SCALE_MAX, at);
        json_decref(j);
        return NULL;
    }
    return j;
}

bool cv_metadata(const char *s, const char *field, const char **out, cv_err *e)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0) {
        *out = "{}";
        return true;
    }
    json_t *j = load_object(s, n, CV_METADATA_MAX, field, e);
    if (j == NULL)
        return false;
    bool reserved = json_object_get(j, "supersedes") != NULL;
    json_decref(j);
    if (reserved) {
        char path[sizeof e->field];
        snprintf(path, sizeof path, "%s.supersedes", field);
        return cms_field_fail(e, path, "%s is reserved: the service sets it on an amendment", path);
    }
    *out = s;
    return true;
}

/* ---- terms ---------------------------------------------------------------- */

/* ISO 4217 list one: the alphabetic codes in use, sorted for bsearch. From
 * Debian's iso-codes 4.15, less HRK (replaced by EUR in 2023) and the two
 * codes that name no money (the testing code and the "no currency" code),
 * plus ZWG (2024) and XCG (2025). */
static const char CURRENCIES[][4] = {
    "AED", "AFN", "ALL", "AMD", "ANG", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT",
    "BGN", "BHD", "BIF", "BMD", "BND", "BOB", "BOV", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD",
    "CAD", "CDF", "CHE", "CHF", "CHW", "CLF", "CLP", "CNY", "COP", "COU", "CRC", "CUC", "CUP",
    "CVE", "CZK", "DJF", "DKK", "DOP", "DZD", "EGP", "ERN", "ETB", "EUR", "FJD", "FKP", "GBP",
    "GEL", "GHS", "GIP", "GMD", "GNF", "GTQ", "GYD", "HKD", "HNL", "HTG", "HUF", "IDR", "ILS",
    "INR", "IQD", "IRR", "ISK", "JMD", "JOD", "JPY", "KES", "KGS", "KHR", "KMF", "KPW", "KRW",
    "KWD", "KYD", "KZT", "LAK", "LBP", "LKR", "LRD", "LSL", "LYD", "MAD", "MDL", "MGA", "MKD",
    "MMK", "MNT", "MOP", "MRU", "MUR", "MVR", "MWK", "MXN", "MXV", "MYR", "MZN", "NAD", "NGN",
    "NIO", "NOK", "NPR", "NZD", "OMR", "PAB", "PEN", "PGK", "PHP", "PKR", "PLN", "PYG", "QAR",
    "RON", "RSD", "RUB", "RWF", "SAR", "SBD", "SCR", "SDG", "SEK", "SGD", "SHP", "SLE", "SLL",
    "SOS", "SRD", "SSP", "STN", "SVC", "SYP", "SZL", "THB", "TJS", "TMT", "TND", "TOP", "TRY",
    "TTD", "TWD", "TZS", "UAH", "UGX", "USD", "USN", "UYI", "UYU", "UYW", "UZS", "VED", "VES",
    "VND", "VUV", "WST", "XAF", "XAG", "XAU", "XBA", "XBB", "XBC", "XBD", "XCD", "XCG", "XDR",
    "XOF", "XPD", "XPF", "XPT", "XSU", "XUA", "YER", "ZAR", "ZMW", "ZWG", "ZWL",
};

static int currency_cmp(const void *key, const void *elt)
{
    return memcmp(key, elt, 3);
}

static bool currency(const json_t *v)
{
    const char *s = json_string_value(v);
    if (s == NULL || json_string_length(v) != 3)
        return false;
    for (int i = 0; i < 3; i++)
        if (s[i] < 'A' || s[i] > 'Z')
            return false;
    return bsearch(s, CURRENCIES, sizeof CURRENCIES / sizeof CURRENCIES[0], sizeof CURRENCIES[0],
                   currency_cmp) != NULL;
}

static const char *const SCHEDULES[] = {"once", "monthly", "quarterly", "yearly"};

static bool schedule(const json_t *v)
{
    const char *s = json_string_value(v);
    for (size_t i = 0; s && i < sizeof SCHEDULES / sizeof SCHEDULES[0]; i++)
        if (strcmp(s, SCHEDULES[i]) == 0)
            return true;
    return false;
}

static bool number_over(const json_t *v, double min)
{
    return json_is_number(v) && isfinite(json_number_value(v)) && json_number_value(v) > min;
}

/* v at path is not what is expected: absent, or something else */
static bool wrong(cv_err *e, const char *path, const json_t *v, const char *expected)
{
    if (v == NULL)
        return cms_field_fail(e, path, "%s is required and must be %s", path, expected);
    return cms_field_fail(e, path, "%s must be %s", path, expected);
}

#define DATE_EXPECTED                                                                              \
    "an ISO 8601 date such as 2024-03-20 or date-time such as 2024-03-20T09:30:00Z"

static bool date(const json_t *terms, const char *key, int64_t *us, cv_err *e)
{
    char path[sizeof e->field];
    const json_t *v = json_object_get(terms, key);
    if (json_is_string(v) && cv_iso8601(json_string_value(v), us))
        return true;
    snprintf(path, sizeof path, "terms.%s", key);
    return wrong(e, path, v, DATE_EXPECTED);
}

/* a condition's type: [a-z0-9_]+ */
static bool type_name(const json_t *v)
{
    const char *s = json_string_value(v);
    if (s == NULL || *s == '\0')
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_'))
            return false;
    return true;
}

static bool payment(const json_t *c, size_t i, cv_err *e)
{
    char path[sizeof e->field];
    const json_t *v = json_object_get(c, "amount");
    if (!number_over(v, 0)) {
        snprintf(path, sizeof path, "terms.conditions[%zu].amount", i);
        return wrong(e, path, v, "a number greater than 0");
    }
    v = json_object_get(c, "currency");
    if (!currency(v)) {
        snprintf(path, sizeof path, "terms.conditions[%zu].currency", i);
        return wrong(e, path, v, "an ISO 4217 currency code such as USD");
    }
    v = json_object_get(c, "schedule");
    if (!schedule(v)) {
        snprintf(path, sizeof path, "terms.conditions[%zu].schedule", i);
        return wrong(e, path, v, "once, monthly, quarterly or yearly");
    }
    return true;
}

static bool conditions(const json_t *a, cv_err *e)
{
    char path[sizeof e->field];
    if (a == NULL)
        return true;
    if (!json_is_array(a))
        return cms_field_fail(e, "terms.conditions",
                              "terms.conditions must be an array of conditions");
    if (json_array_size(a) > MAX_CONDITIONS)
        return cms_field_fail(e, "terms.conditions",
                              "terms.conditions has %zu conditions; at most %d", json_array_size(a),
                              MAX_CONDITIONS);
    for (size_t i = 0; i < json_array_size(a); i++) {
        const json_t *c = json_array_get(a, i);
        if (!json_is_object(c)) {
            snprintf(path, sizeof path, "terms.conditions[%zu]", i);
            return cms_field_fail(e, path, "%s must be an object with a type", path);
        }
        const json_t *type = json_object_get(c, "type");
        if (!type_name(type)) {
            snprintf(path, sizeof path, "terms.conditions[%zu].type", i);
            return wrong(e, path, type, "a name of [a-z0-9_] such as payment");
        }
        /* other types are the parties' own: kept as they are */
        if (strcmp(json_string_value(type), "payment") == 0 && !payment(c, i, e))
            return false;
    }
    return true;
}

static bool sla(const json_t *o, cv_err *e)
{
    if (o == NULL)
        return true;
    if (!json_is_object(o))
        return cms_field_fail(e, "terms.sla", "terms.sla must be an object");
    const json_t *v = json_object_get(o, "availability");
    if (v && !(number_over(v, 0) && json_number_value(v) <= 100))
        return cms_field_fail(
            e, "terms.sla.availability",
            "terms.sla.availability must be a number greater than 0 and at most 100");
    v = json_object_get(o, "response_time");
    if (v && !number_over(v, 0))
        return cms_field_fail(
            e, "terms.sla.response_time",
            "terms.sla.response_time must be a number of milliseconds greater than 0");
    return true;
}

static bool privacy(const json_t *o, cv_terms *t, cv_err *e)
{
    if (o == NULL)
        return true;
    if (!json_is_object(o))
        return cms_field_fail(e, "terms.privacy", "terms.privacy must be an object");
    const json_t *d = json_object_get(o, "delta");
    if (d != NULL && (!number_over(d, 0) || !(json_number_value(d) < 1)))
        return cms_field_fail(e, "terms.privacy.delta",
                              "terms.privacy.delta must be a number greater than 0 and below 1");
    const json_t *v = json_object_get(o, "max_epsilon");
    if (v == NULL)
        return true;
    if (!number_over(v, 0))
        return cms_field_fail(e, "terms.privacy.max_epsilon",
                              "terms.privacy.max_epsilon must be a number greater than 0");
    t->has_max_epsilon = true;
    t->max_epsilon = json_number_value(v);
    return true;
}

bool cv_terms_check(const char *json, cv_terms *out, cv_err *e)
{
    size_t n = json ? strlen(json) : 0;
    cv_terms t = {0};
    bool ok = false;
    json_t *j = NULL;
    if (n == 0)
        return cms_field_fail(e, "terms",
                              "terms is required: a JSON object with start_date and end_date");
    j = load_object(json, n, CV_TERMS_MAX, "terms", e);
    if (j == NULL)
        goto out;
    if (!date(j, "start_date", &t.starts_at_us, e) || !date(j, "end_date", &t.ends_at_us, e))
        goto out;
    if (t.ends_at_us <= t.starts_at_us) {
        cms_field_fail(e, "terms.end_date", "terms.end_date must be after terms.start_date");
        goto out;
    }
    if (!conditions(json_object_get(j, "conditions"), e) || !sla(json_object_get(j, "sla"), e) ||
        !privacy(json_object_get(j, "privacy"), &t, e))
        goto out;
    if (out)
        *out = t;
    ok = true;
out:
    json_decref(j);
    return ok;
}

/* ---- dates ---------------------------------------------------------------- */

/* the n digits at s as a number, or -1 */
static int digits(const char *s, int n)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

static bool leap(int y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int month_days(int y, int m)
{
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && leap(y) ? 29 : days[m - 1];
}

/* Days since 1970-01-01 of a date of the proleptic Gregorian calendar, for
 * y >= 0 (H. Hinnant's days_from_civil): years start in March, so that the
 * leap day is a year's last. */
static int64_t days_from_civil(int y, int m, int d)
{
    y -= m <= 2;
    int era = y / 400;
    int yoe = y - era * 400;                                   /* [0, 399] */
    int doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1; /* [0, 365] */
    int doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;           /* [0, 146096] */
    return (int64_t)era * 146097 + doe - 719468;
}

bool cv_iso8601(const char *s, int64_t *us)
{
    size_t n = s ? strlen(s) : 0;
    if (n < 10 || s[4] != '-' || s[7] != '-')
        return false;
    int y = digits(s, 4), mo = digits(s + 5, 2), d = digits(s + 8, 2);
    if (y < 1970 || y > 9999 || mo < 1 || mo > 12 || d < 1 || d > month_days(y, mo))
        return false;
    int64_t secs = days_from_civil(y, mo, d) * 86400;
    if (n == 10) {
        *us = secs * 1000000;
        return true;
    }
    /* THH:MM:SS, then a fraction, then the zone */
    if (n < 20 || s[10] != 'T' || s[13] != ':' || s[16] != ':')
        return false;
    int h = digits(s + 11, 2), mi = digits(s + 14, 2), sec = digits(s + 17, 2);
    if (h < 0 || h > 23 || mi < 0 || mi > 59 || sec < 0 || sec > 59)
        return false;
    secs += h * 3600 + mi * 60 + sec;
    const char *p = s + 19;
    int64_t frac = 0;
    if (*p == '.') {
        int k = 0;
        for (p++; *p >= '0' && *p <= '9'; p++, k++)
            if (k < 6)
                frac = frac * 10 + (*p - '0');
        if (k < 1 || k > 6)
            return false;
        for (; k < 6; k++)
            frac *= 10;
    }
    if (p[0] == 'Z' && p[1] == '\0') {
        *us = secs * 1000000 + frac;
        return true;
    }
    if ((p[0] != '+' && p[0] != '-') || strlen(p) != 6 || p[3] != ':')
        return false;
    int oh = digits(p + 1, 2), om = digits(p + 4, 2);
    if (oh < 0 || oh > 23 || om < 0 || om > 59)
        return false;
    /* local time = UTC + offset */
    int off = oh * 3600 + om * 60;
    secs += p[0] == '+' ? -off : off;
    *us = secs * 1000000 + frac;
    return true;
}
