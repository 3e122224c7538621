/* Bounded blocking PostgreSQL access for cmsctl; see ctldb.h. */
#include "ctldb.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

/* libpq messages end with a newline and may run over several lines: keep the first. */
static void first_line(const char *msg, char *out, size_t outlen)
{
    size_t n = strcspn(msg, "\n");
    if (n >= outlen)
        n = outlen - 1;
    memcpy(out, msg, n);
    out[n] = '\0';
}

int cmsctl_db_connect(const char *prog, const char *conninfo, int64_t timeout_ms, PGconn **out)
{
    int status = CMSCTL_EXIT_FAILED;
    PGconn *c = NULL;
    PGresult *r = NULL;
    char secs[24], ms[24], line[512];
    if (timeout_ms < 1000)
        timeout_ms = 1000;
    snprintf(secs, sizeof secs, "%" PRId64, (timeout_ms + 999) / 1000);
    snprintf(ms, sizeof ms, "%" PRId64, timeout_ms);
    /* keywords are applied in order: a connect_timeout inside the user's
     * string (expanded from dbname) overrides ours */
    const char *const keys[] = {"connect_timeout", "dbname", "application_name", NULL};
    const char *const vals[] = {secs, conninfo, "cmsctl", NULL};
    c = PQconnectdbParams(keys, vals, 1);
    if (c == NULL) {
        status = cmsctl_fail(prog, "out of memory connecting to PostgreSQL");
        goto out;
    }
    if (PQstatus(c) != CONNECTION_OK) {
        first_line(PQerrorMessage(c), line, sizeof line);
        status = cmsctl_fail(prog,
                             "cannot connect to PostgreSQL: %s; check --database-url or "
                             "CMS_DATABASE_URL (a libpq connection string)",
                             line);
        goto out;
    }
    const char *params[1] = {ms};
    /* UTC: timestamps given without a zone mean UTC, and print as such */
    r = PQexecParams(c,
                     "SELECT set_config('statement_timeout', $1, false), "
                     "set_config('TimeZone', 'UTC', false)",
                     1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        status = cmsctl_db_fail(prog, r, "setting up the session");
        goto out;
    }
    *out = c;
    c = NULL;
    status = CMSCTL_EXIT_OK;
out:
    PQclear(r);
    PQfinish(c);
    return status;
}

int cmsctl_db_fail(const char *prog, const PGresult *res, const char *what)
{
    char line[512];
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    first_line(res ? PQresultErrorMessage(res) : "no result (connection lost?)", line, sizeof line);
    if (state != NULL)
        return cmsctl_fail(prog, "%s failed: %s (SQLSTATE %s)", what, line, state);
    return cmsctl_fail(prog, "%s failed: %s", what, line);
}
