/* Leases; see lease.h. */
#include "lease.h"

#include <stdio.h>
#include <string.h>

/* SQL reads best as written */
// clang-format off
/* prev: the holder before this statement (NULL: free) */
static const char SQL_TAKE[] =
    "WITH prev AS (SELECT holder FROM leases WHERE name = $1) "
    "INSERT INTO leases (name, holder, expires_at) "
    "VALUES ($1, $2::uuid, now() + $3::int8 * interval '1 millisecond') "
    "ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at "
    "WHERE leases.holder = EXCLUDED.holder OR leases.expires_at < now() "
    "RETURNING (SELECT holder::text FROM prev)";
static const char SQL_CHECK[] = "SELECT cms_lease_check($1, $2::uuid)";
static const char SQL_RELEASE[] = "DELETE FROM leases WHERE name = $1 AND holder = $2::uuid";
// clang-format on

bool cms_lease_init(cms_lease *l, const char *name, int64_t ttl_ms)
{
    int n = snprintf(l->name, sizeof l->name, "%s", name);
    if (n < 0 || (size_t)n >= sizeof l->name)
        return false;
    cms_uuid u;
    cms_uuid_v7(&u);
    cms_uuid_format(&u, l->holder);
    snprintf(l->ttl_ms, sizeof l->ttl_ms, "%lld", (long long)ttl_ms);
    return true;
}

int cms_lease_add_take(const cms_lease *l, cms_pg_job *job)
{
    const char *v[] = {l->name, l->holder, l->ttl_ms};
    return cms_pg_job_sql(job, SQL_TAKE, 3, v, NULL, NULL);
}

cms_lease_take_result cms_lease_took(const cms_lease *l, const PGresult *r)
{
    if (r == NULL || PQntuples(r) != 1)
        return CMS_LEASE_NOT_HELD;
    if (PQgetisnull(r, 0, 0))
        return CMS_LEASE_TAKEN;
    /* text, in binary results too */
    size_t n = (size_t)PQgetlength(r, 0, 0);
    bool mine = n == strlen(l->holder) && memcmp(PQgetvalue(r, 0, 0), l->holder, n) == 0;
    return mine ? CMS_LEASE_RENEWED : CMS_LEASE_TAKEN_OVER;
}

int cms_lease_add_check(const cms_lease *l, cms_pg_job *job)
{
    const char *v[] = {l->name, l->holder};
    return cms_pg_job_lead_sql(job, SQL_CHECK, 2, v, NULL, NULL);
}

bool cms_lease_lost(const cms_pg_result *res)
{
    return res != NULL && strcmp(cms_pg_result_sqlstate(res), "CL001") == 0;
}

int cms_lease_add_release(const cms_lease *l, cms_pg_job *job)
{
    const char *v[] = {l->name, l->holder};
    return cms_pg_job_sql(job, SQL_RELEASE, 2, v, NULL, NULL);
}
