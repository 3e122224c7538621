/* cmsctl audit query: the audit log, filtered, a page at a time, read
 * through cms-audit's query command (cms.cmd.audit.query) with the caller's
 * API key: an admin or an auditor reads every row, anyone else the rows
 * they are the actor of.
 *
 * Pages are keyset-paginated on (created_at, id), the order rows are shown
 * in: the cursor is the last row's key, so a page costs the same however
 * deep it is and rows inserted meanwhile do not shift it. The cursor is
 * opaque to users. The flags are checked here with the service's own
 * checks (audit/query_args.h) before anything is sent, so that a usage
 * error never waits on NATS.
 *
 * Output (ctlout.h): a table, or each row as an object with id, event_type,
 * resource_type, resource_id, actor_id, details (the JSON stored; null when
 * cms-audit left it out for its size) and created_at / created_at_us. */
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit/query_args.h"
#include "cli.h"
#include "cms/v1/audit.pb-c.h"
#include "ctlcmd.h"
#include "ctlout.h"
#include "verbs.h"

#define PROG "cmsctl audit query"
#define SERVICE "audit"
#define DETAILS_SHOWN 60 /* characters of details in the table */

static const cms_option options[] = {
    CMSCTL_CMD_OPTIONS,
    {"resource-type", NULL, CMS_OPT_STRING, NULL, "only this resource type (e.g. contract)", false,
     false},
    {"resource-id", NULL, CMS_OPT_STRING, NULL, "only this resource (UUID)", false, false},
    {"actor", NULL, CMS_OPT_STRING, NULL,
     "only what this identity did (UUID; anyone but an admin or an auditor: only their own)", false,
     false},
    {"event-type", NULL, CMS_OPT_STRING, NULL, "only this event type (e.g. contract.signed)", false,
     false},
    {"since", NULL, CMS_OPT_STRING, NULL,
     "only rows created at or after this time (e.g. 2024-03-20T15:00:00Z; no zone means UTC)",
     false, false},
    {"limit", NULL, CMS_OPT_INT, "50", "rows per page (1 to 1000)", false, false},
    {"after", NULL, CMS_OPT_STRING, NULL,
     "the cursor printed after the previous page (next: --after CURSOR)", false, false},
};

static const char usage_tail[] =
    "\n\n"
    "Lists audit_logs rows oldest first (by created_at, then id), --limit at a time, as\n"
    "cms-audit answers them: an admin or an identity with the role auditor reads every\n"
    "row, anyone else only the rows they are the actor of (another --actor is refused).\n"
    "When more rows may follow it ends with \"next: --after CURSOR\" (on stderr with -o\n"
    "json or ndjson): run the same command with that flag added for the next page. A page\n"
    "may hold fewer rows than --limit when they are large (a reply stays under 512 KiB).\n"
    "No rows: nothing on stdout (\"[]\" with -o json) and \"(no audit records match)\" on\n"
    "stderr.\n\n" CMSCTL_CMD_KEY_HELP;

static const char audit_help[] =
    "cmsctl audit - the audit log, kept by cms-audit\n"
    "\n"
    "usage: cmsctl audit query [options]    read the log, a page at a time\n"
    "       cmsctl audit verify [options]   prove it untouched: rows, batches, checkpoints\n"
    "       cmsctl audit keygen --out FILE  make cms-audit's checkpoint signing key\n"
    "(cmsctl audit SUB-VERB --help for the options)\n";

/* ------------------------------------------------------------------------ */
/* output */

/* A record as the object of -o json and ndjson. */
static json_t *record_json(const Cms__V1__AuditRecord *r)
{
    json_t *details = r->details_json[0] == '\0'
                          ? json_null()
                          : json_loads(r->details_json, JSON_DECODE_ANY, NULL);
    if (details == NULL)
        details = cmsctl_out_str(r->details_json);
    json_t *o = json_object();
    if (o == NULL) {
        json_decref(details);
        return NULL;
    }
    json_object_set_new(o, "id", cmsctl_out_str(r->id));
    json_object_set_new(o, "event_type", cmsctl_out_str(r->event_type));
    json_object_set_new(o, "resource_type", cmsctl_out_str(r->resource_type));
    json_object_set_new(o, "resource_id", cmsctl_out_str(r->resource_id));
    json_object_set_new(o, "actor_id", cmsctl_out_str(r->actor_id));
    json_object_set_new(o, "details", details);
    cmsctl_out_time(o, "created_at", r->created_at_us);
    return o;
}

static void print_table_row(const Cms__V1__AuditRecord *r)
{
    char at[CMSCTL_CMD_TIME_MAX], resource[160], details[DETAILS_SHOWN + 4];
    char et[64], actor[64], rt[64], rid[64];
    snprintf(resource, sizeof resource, "%s/%s", cmsctl_out_clean(r->resource_type, rt, sizeof rt),
             cmsctl_out_clean(r->resource_id, rid, sizeof rid));
    const char *d = r->details_json[0] != '\0' ? r->details_json : "(left out: over 64 KiB)";
    if (strlen(d) > DETAILS_SHOWN)
        snprintf(details, sizeof details, "%.*s...", DETAILS_SHOWN - 3, d);
    else
        snprintf(details, sizeof details, "%s", d);
    cmsctl_out_clean(details, details, sizeof details);
    printf("%-27s  %-26s  %-49s  %-36s  %s\n", cmsctl_cmd_time_format(r->created_at_us, true, at),
           cmsctl_out_clean(r->event_type, et, sizeof et), resource,
           cmsctl_out_clean(r->actor_id, actor, sizeof actor), details);
}

static int print_page(const Cms__V1__AuditPage *page, cmsctl_out_format fmt)
{
    if (fmt == CMSCTL_OUT_TABLE) {
        if (page->n_records > 0)
            printf("%-27s  %-26s  %-49s  %-36s  %s\n", "CREATED_AT", "EVENT_TYPE", "RESOURCE",
                   "ACTOR", "DETAILS");
        for (size_t i = 0; i < page->n_records; i++)
            print_table_row(page->records[i]);
    } else {
        json_t *arr = json_array();
        for (size_t i = 0; arr != NULL && i < page->n_records; i++) {
            if (json_array_append_new(arr, record_json(page->records[i])) != 0) {
                json_decref(arr);
                arr = NULL;
            }
        }
        int status = cmsctl_out_emit(PROG, fmt, arr, NULL);
        if (status != CMSCTL_EXIT_OK)
            return status;
    }
    if (page->n_records == 0)
        cmsctl_out_none(fmt, "no audit records match");
    if (page->next[0] != '\0') {
        char b[AUDIT_QA_CURSOR_MAX];
        fflush(stdout);
        fprintf(fmt == CMSCTL_OUT_TABLE ? stdout : stderr, "next: --after %s\n",
                cmsctl_out_clean(page->next, b, sizeof b));
    }
    return CMSCTL_EXIT_OK;
}

/* ------------------------------------------------------------------------ */

static const char *str_or_empty(const cms_config *cfg, const char *name)
{
    const char *v = cms_config_str(cfg, name);
    return v != NULL ? v : "";
}

/* The flag of a request field ("resource_id" -> "resource-id"). */
static const char *flag_of(const char *field, char out[32])
{
    size_t i = 0;
    for (; field[i] != '\0' && i + 1 < 32; i++)
        out[i] = field[i] == '_' ? '-' : field[i];
    out[i] = '\0';
    return out;
}

static int query_main(int argc, char **argv)
{
    int status = CMSCTL_EXIT_FAILED;
    cms_config *cfg = NULL;
    cmsctl_cmd *c = NULL;
    Cms__V1__AuditPage *page = NULL;
    int64_t limit = 0;
    cmsctl_out_format fmt = CMSCTL_OUT_TABLE;
    int rc = cmsctl_parse(options, sizeof options / sizeof options[0], argc, argv, PROG,
                          "read the audit log", usage_tail, &cfg);
    if (rc != CMSCTL_EXIT_OK)
        return rc == CMSCTL_PARSE_DONE ? CMSCTL_EXIT_OK : rc;
    if (cms_config_npositional(cfg) > 0) {
        status = cmsctl_usage(PROG, "unexpected argument \"%s\"", cms_config_positional(cfg, 0));
        goto out;
    }
    if ((status = cmsctl_out_format_get(PROG, cfg, &fmt)) != CMSCTL_EXIT_OK)
        goto out;
    if (!cmsctl_int_arg(PROG, cfg, "limit", 1, AUDIT_QA_LIMIT_MAX, &limit)) {
        status = CMSCTL_EXIT_USAGE;
        goto out;
    }
    Cms__V1__QueryAuditLog req = CMS__V1__QUERY_AUDIT_LOG__INIT;
    req.resource_type = (char *)str_or_empty(cfg, "resource-type");
    req.resource_id = (char *)str_or_empty(cfg, "resource-id");
    req.actor = (char *)str_or_empty(cfg, "actor");
    req.event_type = (char *)str_or_empty(cfg, "event-type");
    req.since = (char *)str_or_empty(cfg, "since");
    req.limit = (int32_t)limit;
    req.after = (char *)str_or_empty(cfg, "after");
    audit_qa checked;
    audit_qa_err e;
    char flag[32];
    if (!audit_qa_validate(&req, &checked, &e)) {
        status = cmsctl_usage(PROG, "--%s %s", flag_of(e.field, flag), e.what);
        goto out;
    }
    if ((status = cmsctl_cmd_open(PROG, cfg, SERVICE, &c)) != CMSCTL_EXIT_OK)
        goto out;
    if ((status = cmsctl_cmd_call(c, "query", CMSCTL_CMD_READ, &req.base,
                                  &cms__v1__audit_page__descriptor, (ProtobufCMessage **)&page)) !=
        CMSCTL_EXIT_OK)
        goto out;
    status = print_page(page, fmt);
out:
    if (page != NULL)
        cms__v1__audit_page__free_unpacked(page, NULL);
    cmsctl_cmd_destroy(c);
    cms_config_destroy(cfg);
    return status;
}

int cmsctl_audit_main(int argc, char **argv)
{
    if (argc < 2) {
        fputs(audit_help, stderr);
        return cmsctl_usage("cmsctl audit", "%s", "a sub-verb is needed: query, verify or keygen");
    }
    const char *sub = argv[1];
    if (strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0) {
        fputs(audit_help, stdout);
        return CMSCTL_EXIT_OK;
    }
    if (strcmp(sub, "query") == 0)
        return query_main(argc - 1, argv + 1);
    if (strcmp(sub, "verify") == 0)
        return cmsctl_audit_verify_main(argc - 1, argv + 1);
    if (strcmp(sub, "keygen") == 0)
        return cmsctl_keygen_main(argc - 1, argv + 1, "cmsctl audit keygen",
                                  "make the key cms-audit signs its checkpoints with");
    return cmsctl_usage("cmsctl audit", "unknown sub-verb \"%s\": want query, verify or keygen",
                        sub);
}
