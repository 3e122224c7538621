/* What cms-contracts accepts, checked before anything touches the database.
 * Each check names the field at fault, a request field ("title") or a JSON
 * path into the terms ("terms.conditions[1].currency"), and says what is
 * wanted. On refusal nothing but the error is written. */
#ifndef CONTRACTS_VALIDATE_H
#define CONTRACTS_VALIDATE_H

#include "fielderr.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CV_TITLE_MAX 255
#define CV_DESCRIPTION_MAX 8192
#define CV_REASON_MAX 1024
#define CV_TERMS_MAX 65536 /* bytes of terms JSON */
#define CV_METADATA_MAX 16384

/* field: a JSON path or a request field (fielderr.h) */
typedef cms_field_err cv_err;

/* The database enum contract_status, in its order. */
typedef enum {
    CV_DRAFT,
    CV_REVIEW,
    CV_SIGNED,
    CV_ACTIVE,
    CV_COMPLETED,
    CV_TERMINATED,
    CV_EXPIRED,
    CV_NSTATUS
} cv_status;

bool cv_status_parse(const char *s, const char *field, cv_status *out, cv_err *e);
/* "unknown" for a value outside the enum */
const char *cv_status_name(cv_status s);

/* The lifecycle: draft -> review (submit), review -> signed (the second
 * signature), signed -> active (activate), active -> completed (complete,
 * or superseded by an amendment); draft, review, signed and active ->
 * terminated; signed and active -> expired (the end date). Nothing leaves
 * a final status, and a change to the same status is not a change. */
bool cv_transition(cv_status from, cv_status to);
/* completed, terminated, expired */
bool cv_is_final(cv_status s);

/* 1..255 bytes of valid UTF-8 without control characters, not only spaces. */
bool cv_title(const char *s, cv_err *e);
/* Optional: at most 8192 bytes of valid UTF-8; line breaks (LF, CRLF) and
 * tabs are allowed, other control characters are not. */
bool cv_description(const char *s, cv_err *e);
/* At most 1024 bytes of valid UTF-8, the control characters as for a
 * description; required: not empty nor only spaces. The field is "reason". */
bool cv_reason(const char *s, bool required, cv_err *e);
/* A UUID in text form; required. */
bool cv_uuid(const char *s, const char *field, cv_err *e);
/* Empty, or a JSON object of at most 16 KiB. The key "supersedes" is
 * reserved, set by the service on an amendment: refused with the field
 * "<field>.supersedes". *out is s, or "{}" for empty. */
bool cv_metadata(const char *s, const char *field, const char **out, cv_err *e);

typedef struct cv_terms {
    int64_t starts_at_us, ends_at_us; /* Unix microseconds, UTC */
    bool has_max_epsilon;
    double max_epsilon;
} cv_terms;

/* The terms JSON text: an object of at most 64 KiB without duplicate keys;
 * start_date and end_date (cv_iso8601, start before end) are required;
 * conditions, if present, is an array of at most 100 objects with a "type"
 * of [a-z0-9_]+, and a "payment" has an amount > 0, an ISO 4217 currency
 * and a schedule of once, monthly, quarterly or yearly; sla, if present, an
 * object whose availability is in (0, 100] and response_time (ms) > 0;
 * privacy, if present, an object whose max_epsilon is > 0 and delta (the
 * delta the contract's privacy ledger converts at) in (0, 1). Other keys, and
 * conditions of other types, are kept unchecked. Fields in errors start with
 * "terms". out (may be NULL) is written only on success. */
bool cv_terms_check(const char *json, cv_terms *out, cv_err *e);

/* An ISO 8601 date, "YYYY-MM-DD" (midnight UTC), or date-time,
 * "YYYY-MM-DDTHH:MM:SS[.f{1,6}](Z|+HH:MM|-HH:MM)", to Unix microseconds.
 * The real calendar (leap years, month lengths), years 1970..9999, seconds
 * 0..59 (no leap second), offsets up to 23:59; nothing else, not even
 * surrounding spaces. Pure: no locale, no TZ. *us is written only on
 * success. */
bool cv_iso8601(const char *s, int64_t *us);

#endif
