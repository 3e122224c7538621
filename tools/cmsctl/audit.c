/* cmsctl audit query: reads audit_logs, filtered, a page at a time.
 *
 * Pages are keyset-paginated on (created_at, id), the order rows are shown
 * in: the cursor is the last row's key, so a page costs the same however
 * deep it is and rows inserted meanwhile do not shift it. The cursor is
 * opaque to users: base64url (no padding) of "<created_at in Unix
 * microseconds>:<id>". Every value reaches PostgreSQL as a parameter; the
 * statement text is assembled only from the fixed fragments below.
 *
 * Output (ctlout.h): a table, or each row as an object with id, event_type,
 * resource_type, resource_id, actor_id, details (the JSON stored) and
 * created_at / created_at_us. */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <sodium.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "ctldb.h"
#include "ctlout.h"
#include "uuid.h"
#include "verbs.h"

#define PROG "cmsctl audit query"
#define LIMIT_MAX 1000
#define DETAILS_SHOWN 60 /* characters of details in the table */
#define CURSOR_MAX 128
#define MAX_PARAMS 8

static const cms_option options[] = {
    {"resource-type", NULL, CMS_OPT_STRING, NULL, "only this resource type (e.g. contract)", false,
     false},
    {"resource-id", NULL, CMS_OPT_STRING, NULL, "only this resource (UUID)", false, false},
    {"actor", NULL, CMS_OPT_STRING, NULL, "only what this identity did (UUID)", false, false},
    {"event-type", NULL, CMS_OPT_STRING, NULL, "only this event type (e.g. contract.signed)", false,
     false},
    {"since", NULL, CMS_OPT_STRING, NULL,
     "only rows created at or after this time (e.g. 2024-03-20T15:00:00Z; no zone means UTC)",
     false, false},
    {"limit", NULL, CMS_OPT_INT, "50", "rows per page (1 to 1000)", false, false},
    {"after", NULL, CMS_OPT_STRING, NULL,
     "the cursor printed after the previous page (next: --after CURSOR)", false, false},
    {"database-url", "CMS_DATABASE_URL", CMS_OPT_STRING, "host=127.0.0.1 dbname=cms",
     "libpq connection string or URI", CMS_OPT_PASSWORD, false},
    {"timeout", NULL, CMS_OPT_DURATION, "10s", "longest connect or query (1ms to 24d)",
     CMS_OPT_PUBLIC, false},
    CMSCTL_OUT_OPTIONS,
};

static const char usage_tail[] =
    "\n\n"
    "Lists audit_logs rows oldest first (by created_at, then id), --limit at a time. When\n"
    "more rows may follow it ends with \"next: --after CURSOR\" (on stderr with -o json or\n"
    "ndjson): run the same command with that flag added for the next page. No rows: nothing\n"
    "on stdout (\"[]\" with -o json) and \"(no audit records match)\" on stderr.\n"
    "Exit status: 0 done, 1 failed, 2 usage error.";

static const char audit_help[] =
    "cmsctl audit - the audit log\n"
    "\n"
    "usage: cmsctl audit query [options]   (cmsctl audit query --help for the options)\n";

/* ------------------------------------------------------------------------ */
/* cursor */

static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

static bool cursor_encode(int64_t us, const char *id, char out[CURSOR_MAX])
{
    char raw[80];
    int n = snprintf(raw, sizeof raw, "%" PRId64 ":%s", us, id);
    if (n < 0 || (size_t)n >= sizeof raw)
        return false;
    if (sodium_base64_ENCODED_LEN((size_t)n, sodium_base64_VARIANT_URLSAFE_NO_PADDING) > CURSOR_MAX)
        return false;
    sodium_bin2base64(out, CURSOR_MAX, (const unsigned char *)raw, (size_t)n,
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    return true;
}

static bool cursor_decode(const char *cur, int64_t *us, char id[CMS_UUID_STRLEN + 1])
{
    unsigned char raw[80];
    size_t n = 0;
    if (sodium_base642bin(raw, sizeof raw - 1, cur, strlen(cur), NULL, &n, NULL,
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
    if (errno != 0 || *end != '\0')
        return false;
    cms_uuid u;
    if (!cms_uuid_parse(colon + 1, strlen(colon + 1), &u))
        return false;
    *us = (int64_t)v;
    cms_uuid_format(&u, id);
    return true;
}

/* Unix microseconds as a timestamptz literal PostgreSQL reads exactly. */
static bool us_to_text(int64_t us, char *out, size_t outlen)
{
    int64_t secs = floor_div(us, 1000000);
    int64_t frac = us - secs * 1000000;
    time_t t = (time_t)secs;
    struct tm tm;
    if (gmtime_r(&t, &tm) == NULL)
        return false;
    char date[40];
    if (strftime(date, sizeof date, "%Y-%m-%d %H:%M:%S", &tm) == 0)
        return false;
    int n = snprintf(out, outlen, "%s.%06" PRId64 "+00", date, frac);
    return n > 0 && (size_t)n < outlen;
}

/* ------------------------------------------------------------------------ */
/* the statement */

typedef struct query {
    char sql[1024];
    size_t len;
    const char *params[MAX_PARAMS];
    int nparams;
} query;

/* Appends a fixed fragment; "$?" in it stands for the next parameter number. */
static void q_add(query *q, const char *fragment, const char *value)
{
    const char *mark = strstr(fragment, "$?");
    int n;
    if (mark == NULL) {
        n = snprintf(q->sql + q->len, sizeof q->sql - q->len, "%s", fragment);
    } else {
        q->params[q->nparams++] = value;
        n = snprintf(q->sql + q->len, sizeof q->sql - q->len, "%.*s$%d%s", (int)(mark - fragment),
                     fragment, q->nparams, mark + 2);
    }
    if (n > 0)
        q->len += (size_t)n;
}

/* ------------------------------------------------------------------------ */
/* output */

/* Row i as the object of -o json and ndjson. */
static json_t *row_json(const PGresult *r, int i)
{
    json_t *details = json_loads(PQgetvalue(r, i, 5), JSON_DECODE_ANY, NULL);
    if (details == NULL)
        details = cmsctl_out_str(PQgetvalue(r, i, 5));
    errno = 0;
    char *end = NULL;
    long long us = strtoll(PQgetvalue(r, i, 7), &end, 10);
    if (errno != 0 || *end != '\0')
        us = 0;
    json_t *o = json_object();
    if (o == NULL) {
        json_decref(details);
        return NULL;
    }
    json_object_set_new(o, "id", cmsctl_out_str(PQgetvalue(r, i, 0)));
    json_object_set_new(o, "event_type", cmsctl_out_str(PQgetvalue(r, i, 1)));
    json_object_set_new(o, "resource_type", cmsctl_out_str(PQgetvalue(r, i, 2)));
    json_object_set_new(o, "resource_id", cmsctl_out_str(PQgetvalue(r, i, 3)));
    json_object_set_new(o, "actor_id", cmsctl_out_str(PQgetvalue(r, i, 4)));
    json_object_set_new(o, "details", details);
    cmsctl_out_time(o, "created_at", (int64_t)us);
    return o;
}

static void print_table_row(const PGresult *r, int i)
{
    char resource[128];
    char details[DETAILS_SHOWN + 4];
    snprintf(resource, sizeof resource, "%s/%s", PQgetvalue(r, i, 2), PQgetvalue(r, i, 3));
    const char *d = PQgetvalue(r, i, 5);
    if (strlen(d) > DETAILS_SHOWN)
        snprintf(details, sizeof details, "%.*s...", DETAILS_SHOWN - 3, d);
    else
        snprintf(details, sizeof details, "%s", d);
    printf("%-27s  %-26s  %-49s  %-36s  %s\n", PQgetvalue(r, i, 6), PQgetvalue(r, i, 1), resource,
           PQgetvalue(r, i, 4), details);
}

/* ------------------------------------------------------------------------ */

static bool uuid_arg(const cms_config *cfg, const char *name, char out[CMS_UUID_STRLEN + 1],
                     const char **value)
{
    const char *v = cms_config_str(cfg, name);
    *value = NULL;
    if (v == NULL)
        return true;
    cms_uuid u;
    if (!cms_uuid_parse(v, strlen(v), &u)) {
        cmsctl_usage(PROG,
                     "--%s \"%s\" is not a UUID: want 8-4-4-4-12 hex digits, like "
                     "00000000-0000-7000-8000-000000000001",
                     name, v);
        return false;
    }
    cms_uuid_format(&u, out);
    *value = out;
    return true;
}

static int query_main(int argc, char **argv)
{
    int status = CMSCTL_EXIT_FAILED;
    cms_config *cfg = NULL;
    PGconn *c = NULL;
    PGresult *r = NULL;
    int64_t limit = 0, timeout_ms = 0;
    cmsctl_out_format fmt = CMSCTL_OUT_TABLE;
    char resource_id[CMS_UUID_STRLEN + 1], actor[CMS_UUID_STRLEN + 1];
    char after_id[CMS_UUID_STRLEN + 1], after_ts[64], limit_text[24];
    const char *resource_v = NULL, *actor_v = NULL;
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
    if (!cmsctl_int_arg(PROG, cfg, "limit", 1, LIMIT_MAX, &limit) ||
        !cmsctl_duration_arg(PROG, cfg, "timeout", 1, CMSCTL_TIMEOUT_MAX_MS, &timeout_ms) ||
        !uuid_arg(cfg, "resource-id", resource_id, &resource_v) ||
        !uuid_arg(cfg, "actor", actor, &actor_v)) {
        status = CMSCTL_EXIT_USAGE;
        goto out;
    }
    const char *after = cms_config_str(cfg, "after");
    if (after != NULL) {
        int64_t us = 0;
        if (!cursor_decode(after, &us, after_id) || !us_to_text(us, after_ts, sizeof after_ts)) {
            status = cmsctl_usage(PROG,
                                  "--after \"%s\" is not a cursor: copy it from the \"next: "
                                  "--after ...\" line of the previous page",
                                  after);
            goto out;
        }
    }
    if (sodium_init() < 0) {
        status = cmsctl_fail(PROG, "libsodium failed to initialise");
        goto out;
    }

    query q = {.len = 0};
    q_add(&q,
          "SELECT id::text, event_type, resource_type, resource_id::text, actor_id::text, "
          "details::text, to_char(created_at AT TIME ZONE 'UTC', "
          "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), "
          "(extract(epoch FROM created_at) * 1000000)::bigint FROM audit_logs WHERE true",
          NULL);
    if (cms_config_str(cfg, "resource-type") != NULL)
        q_add(&q, " AND resource_type = $?", cms_config_str(cfg, "resource-type"));
    if (resource_v != NULL)
        q_add(&q, " AND resource_id = $?::uuid", resource_v);
    if (actor_v != NULL)
        q_add(&q, " AND actor_id = $?::uuid", actor_v);
    if (cms_config_str(cfg, "event-type") != NULL)
        q_add(&q, " AND event_type = $?", cms_config_str(cfg, "event-type"));
    if (cms_config_str(cfg, "since") != NULL)
        q_add(&q, " AND created_at >= $?::timestamptz", cms_config_str(cfg, "since"));
    if (after != NULL) {
        q_add(&q, " AND (created_at, id) > ($?::timestamptz", after_ts);
        q_add(&q, ", $?::uuid)", after_id);
    }
    /* one row more than shown tells whether another page follows */
    snprintf(limit_text, sizeof limit_text, "%" PRId64, limit + 1);
    q_add(&q, " ORDER BY created_at, id LIMIT $?", limit_text);

    if ((status = cmsctl_db_connect(PROG, cms_config_str(cfg, "database-url"), timeout_ms, &c)) !=
        CMSCTL_EXIT_OK)
        goto out;
    r = PQexecParams(c, q.sql, q.nparams, NULL, q.params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        /* class 22 (data exception): the one value PostgreSQL checks for us is --since */
        if (state != NULL && strncmp(state, "22", 2) == 0 && cms_config_str(cfg, "since") != NULL)
            status = cmsctl_usage(PROG,
                                  "--since \"%s\" is not a timestamp: want e.g. "
                                  "2024-03-20T15:00:00Z or 2024-03-20",
                                  cms_config_str(cfg, "since"));
        else
            status = cmsctl_db_fail(PROG, r, "reading audit_logs");
        goto out;
    }
    int rows = PQntuples(r);
    bool more = rows > limit;
    int shown = more ? (int)limit : rows;
    if (fmt == CMSCTL_OUT_TABLE) {
        if (shown > 0)
            printf("%-27s  %-26s  %-49s  %-36s  %s\n", "CREATED_AT", "EVENT_TYPE", "RESOURCE",
                   "ACTOR", "DETAILS");
        for (int i = 0; i < shown; i++)
            print_table_row(r, i);
    } else {
        json_t *arr = json_array();
        for (int i = 0; arr != NULL && i < shown; i++) {
            if (json_array_append_new(arr, row_json(r, i)) != 0) {
                json_decref(arr);
                arr = NULL;
            }
        }
        if ((status = cmsctl_out_emit(PROG, fmt, arr, NULL)) != CMSCTL_EXIT_OK)
            goto out;
    }
    if (shown == 0)
        cmsctl_out_none(fmt, "no audit records match");
    if (more) {
        char cursor[CURSOR_MAX];
        errno = 0;
        char *end = NULL;
        long long us = strtoll(PQgetvalue(r, shown - 1, 7), &end, 10);
        if (errno != 0 || *end != '\0' ||
            !cursor_encode((int64_t)us, PQgetvalue(r, shown - 1, 0), cursor)) {
            status = cmsctl_fail(PROG, "cannot make a cursor from the last row");
            goto out;
        }
        fflush(stdout);
        fprintf(fmt == CMSCTL_OUT_TABLE ? stdout : stderr, "next: --after %s\n", cursor);
    }
    status = CMSCTL_EXIT_OK;
out:
    PQclear(r);
    PQfinish(c);
    cms_config_destroy(cfg);
    return status;
}

int cmsctl_audit_main(int argc, char **argv)
{
    if (argc < 2) {
        fputs(audit_help, stderr);
        return cmsctl_usage("cmsctl audit", "%s", "a sub-verb is needed: query");
    }
    const char *sub = argv[1];
    if (strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0) {
        fputs(audit_help, stdout);
        return CMSCTL_EXIT_OK;
    }
    if (strcmp(sub, "query") == 0)
        return query_main(argc - 1, argv + 1);
    return cmsctl_usage("cmsctl audit", "unknown sub-verb \"%s\": want query", sub);
}
