/* What cms-audit's query accepts and who may ask it what: the request's
 * filters checked and put in the form the statement takes, the opaque
 * page cursor, and the one rule of who reads which rows. No I/O: cmsctl
 * checks its flags with the same functions before it sends anything.
 *
 * The cursor is base64url (no padding) of "<created_at in Unix
 * microseconds>:<id>", the key of the last row of a page in the (created_at,
 * id) order rows are read in. Callers treat it as opaque. */
#ifndef AUDIT_QUERY_ARGS_H
#define AUDIT_QUERY_ARGS_H

#include "auth.h"
#include "cms/v1/audit.pb-c.h"
#include "uuid.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AUDIT_QA_LIMIT_MAX 1000
#define AUDIT_QA_LIMIT_DEFAULT 50
#define AUDIT_QA_TYPE_MAX 50 /* audit_logs.event_type and resource_type are VARCHAR(50) */
#define AUDIT_QA_CURSOR_MAX 128
/* "2024-03-20 15:00:00.000000+00" and room for years past 9999 */
#define AUDIT_QA_TIME_TEXT_MAX 48

/* The role that reads every row, as an admin does. */
#define AUDIT_QA_AUDITOR_ROLE "auditor"

/* A refused request: the request field at fault and what is wrong with it,
 * without the field's name ("\"x\" is not a UUID: ..."), so that a service
 * can say "actor ..." and cmsctl "--actor ...". */
typedef struct audit_qa_err {
    const char *field;
    char what[200];
} audit_qa_err;

/* A checked request: UUIDs in canonical form, "" for a filter not given. */
typedef struct audit_qa {
    char resource_type[AUDIT_QA_TYPE_MAX + 1];
    char resource_id[CMS_UUID_STRLEN + 1];
    char actor[CMS_UUID_STRLEN + 1];
    char event_type[AUDIT_QA_TYPE_MAX + 1];
    bool has_since;
    int64_t since_us;
    bool has_after;
    int64_t after_us;
    char after_id[CMS_UUID_STRLEN + 1];
    int limit; /* 1..AUDIT_QA_LIMIT_MAX */
} audit_qa;

/* Checks every field of m: resource_type a subject token (1..50 of
 * [A-Za-z0-9_-]); event_type 1..50 of those or '.'; resource_id and actor
 * UUIDs; since a time audit_qa_time_parse reads; limit 0 (the default) or
 * 1..1000; after a cursor. False with e filled at the first field at
 * fault. */
bool audit_qa_validate(const Cms__V1__QueryAuditLog *m, audit_qa *out, audit_qa_err *e)
    __attribute__((warn_unused_result));

/* Who reads what: an admin or an auditor reads as asked; anyone else reads
 * only rows they are the actor of, so an empty actor becomes theirs and
 * another actor is refused (false, with why for PERMISSION_DENIED: never
 * silently narrowed, so that nobody mistakes an empty page for "nothing
 * happened"). p NULL: refused. */
bool audit_qa_authorise(audit_qa *q, const cms_principal *p, char *why, size_t whylen)
    __attribute__((warn_unused_result));

bool audit_qa_cursor_encode(int64_t us, const char *id, char out[AUDIT_QA_CURSOR_MAX])
    __attribute__((warn_unused_result));
/* False unless cur is exactly what audit_qa_cursor_encode makes of some
 * (us, id); id gets the canonical UUID. */
bool audit_qa_cursor_decode(const char *cur, int64_t *us, char id[CMS_UUID_STRLEN + 1])
    __attribute__((warn_unused_result));

/* "2024-03-20", "2024-03-20T15:00", "2024-03-20 15:00:00.5", each with an
 * optional zone ("Z", "+02:00", "-0530"); no zone means UTC; 'T' and 'Z'
 * in either case. Years 1970 to 9999. To Unix microseconds. */
bool audit_qa_time_parse(const char *text, int64_t *us) __attribute__((warn_unused_result));
/* Unix microseconds as a timestamptz literal PostgreSQL reads exactly
 * ("2024-03-20 15:00:00.000001+00"). */
bool audit_qa_time_text(int64_t us, char out[AUDIT_QA_TIME_TEXT_MAX])
    __attribute__((warn_unused_result));

#endif
