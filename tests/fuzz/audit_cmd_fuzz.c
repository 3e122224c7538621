/* libFuzzer target for cms-audit's one command, query: byte 0 is the
 * caller (modulo 4: an admin, an auditor, an identity of its own, a
 * principal without an identity id), the rest is the QueryAuditLog body,
 * decoded as cms_cmd decodes it (cmdfuzz.h) and put through what h_query
 * does before its statement: audit_qa_validate (services/audit/
 * query_args.c), then audit_qa_authorise.
 *
 * Nothing may crash or leak. A refusal names a field of the request and
 * says why; validating again gives the same verdict and the same
 * arguments; accepted arguments hold UUIDs in canonical form, types within
 * their bounds, a limit in 1..1000, a cursor that is exactly what
 * audit_qa_cursor_encode makes of its key, and a since that prints as a
 * timestamp which reads back to the same microsecond. Authorised, a caller
 * that is neither admin nor auditor reads only its own rows. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit/query_args.h"
#include "auth.h"
#include "cmdfuzz.h"
#include "uuid.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define SELF "00000000-0000-7000-8000-00000000abcd"

static void principal(int who, cms_principal *p)
{
    memset(p, 0, sizeof *p);
    snprintf(p->type, sizeof p->type, "user");
    snprintf(p->status, sizeof p->status, "active");
    if (who != 3)
        snprintf(p->identity_id, sizeof p->identity_id, "%s", SELF);
    if (who < 2) {
        snprintf(p->roles[0], sizeof p->roles[0], "%s", who == 0 ? "admin" : AUDIT_QA_AUDITOR_ROLE);
        p->nroles = 1;
    }
}

static void canonical_uuid(const char *s)
{
    cms_uuid u;
    char again[CMS_UUID_STRLEN + 1];
    if (s[0] == '\0')
        return;
    if (!cms_uuid_parse(s, strlen(s), &u))
        abort();
    cms_uuid_format(&u, again);
    if (strcmp(again, s) != 0)
        abort();
}

static void type_holds(const char *s)
{
    size_t n = strlen(s);
    if (n > AUDIT_QA_TYPE_MAX)
        abort();
    for (size_t i = 0; i < n; i++)
        if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.", s[i]))
            abort();
}

static void args_hold(const Cms__V1__QueryAuditLog *m, const audit_qa *a)
{
    canonical_uuid(a->resource_id);
    canonical_uuid(a->actor);
    canonical_uuid(a->after_id);
    type_holds(a->resource_type);
    type_holds(a->event_type);
    if (strchr(a->resource_type, '.') != NULL || a->limit < 1 || a->limit > AUDIT_QA_LIMIT_MAX ||
        a->has_after != (m->after[0] != '\0') || a->has_since != (m->since[0] != '\0'))
        abort();
    if (a->has_after) {
        char cur[AUDIT_QA_CURSOR_MAX];
        int64_t us;
        char id[CMS_UUID_STRLEN + 1];
        if (!audit_qa_cursor_encode(a->after_us, a->after_id, cur) || strcmp(cur, m->after) != 0 ||
            !audit_qa_cursor_decode(cur, &us, id) || us != a->after_us ||
            strcmp(id, a->after_id) != 0)
            abort();
    }
    if (a->has_since) {
        char text[AUDIT_QA_TIME_TEXT_MAX];
        int64_t us;
        if (!audit_qa_time_text(a->since_us, text) || !audit_qa_time_parse(text, &us) ||
            us != a->since_us)
            abort();
    }
}

static bool same_args(const audit_qa *a, const audit_qa *b)
{
    return strcmp(a->resource_type, b->resource_type) == 0 &&
           strcmp(a->resource_id, b->resource_id) == 0 && strcmp(a->actor, b->actor) == 0 &&
           strcmp(a->event_type, b->event_type) == 0 && a->has_since == b->has_since &&
           a->since_us == b->since_us && a->has_after == b->has_after &&
           a->after_us == b->after_us && strcmp(a->after_id, b->after_id) == 0 &&
           a->limit == b->limit;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const ProtobufCMessageDescriptor *d = &cms__v1__query_audit_log__descriptor;
    const Cms__V1__QueryAuditLog *m = (const void *)fz_decode(d, data + 1, size - 1);
    if (m == NULL)
        return 0;
    audit_qa a, again;
    audit_qa_err e, e2;
    memset(&e, 0, sizeof e);
    memset(&e2, 0, sizeof e2);
    bool ok = audit_qa_validate(m, &a, &e);
    if (audit_qa_validate(m, &again, &e2) != ok)
        abort();
    if (!ok) {
        fz_refusal(d, e.field, true, e.what);
        if (e.field != e2.field || strcmp(e.what, e2.what) != 0)
            abort();
        return 0;
    }
    if (!same_args(&a, &again))
        abort();
    args_hold(m, &a);

    cms_principal p;
    char why[200] = "";
    int who = data[0] % 4;
    principal(who, &p);
    bool let = audit_qa_authorise(&a, &p, why, sizeof why);
    if (!let) {
        fz_refusal(d, a.actor[0] ? "actor" : NULL, false, why);
        if (who < 2)
            abort(); /* admins and auditors read everything */
        return 0;
    }
    if (who >= 2 && strcmp(a.actor, SELF) != 0)
        abort(); /* anyone else reads only their own */
    if (who < 2 && strcmp(a.actor, again.actor) != 0)
        abort(); /* and the others' filter stays as asked */
    return 0;
}
