/* The expiry timer of cms-identity (a common/duetimer); see expiry.h. */
#include "expiry.h"

#include "duetimer.h"
#include "identity/events.h"
#include "identity/store.h"
#include "log.h"
#include "metrics.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ROUND_MAX 256

/* SQL reads best as written */
// clang-format off
static const char SQL_NEXT[] = "SELECT " IDSQL_US("min(expires_at)") " FROM credentials "
                               "WHERE revoked_at IS NULL AND expired_at IS NULL";
static const char SQL_DUE[] =
    "SELECT id::text, identity_id::text, type::text, " IDSQL_US("expires_at") " FROM credentials "
    "WHERE revoked_at IS NULL AND expired_at IS NULL AND expires_at <= now() "
    "ORDER BY expires_at LIMIT 256";
/* $5 the credential */
static const char SQL_EXPIRE[] =
    "WITH u AS (UPDATE credentials SET expired_at = now() WHERE id = $5::uuid "
    "AND revoked_at IS NULL AND expired_at IS NULL AND expires_at <= now() RETURNING id), "
    "o AS (" CMS_OUTBOX_SQL_FROM("u") ") SELECT count(*) FROM u";
// clang-format on

struct idexp {
    cms_duetimer *timer;
    cms_outbox *outbox;
    cms_auth *auth;
    /* the round being written: whom to tell once it commits */
    int nround;
    char round_ids[ROUND_MAX][2][37];
    cms_counter *m_expired;
};

static int read_next(void *arg, cms_pg_job *job)
{
    (void)arg;
    return cms_pg_job_sql(job, SQL_NEXT, 0, NULL, NULL, NULL);
}

static int read_due(void *arg, cms_pg_job *job)
{
    (void)arg;
    return cms_pg_job_sql(job, SQL_DUE, 0, NULL, NULL, NULL);
}

/* Two statements per due credential: its expiry with the event, and the
 * lapse of its enclave (a no-op for anything else). */
static int add_round(void *arg, const cms_pg_result *res, cms_pg_job *job)
{
    idexp *x = arg;
    const PGresult *due = cms_pg_result_get(res, 0);
    x->nround = 0;
    for (int i = 0; due && i < PQntuples(due) && i < ROUND_MAX; i++) {
        const char *cid = PQgetvalue(due, i, 0), *iid = PQgetvalue(due, i, 1);
        int64_t exp = strtoll(PQgetvalue(due, i, 3), NULL, 10);
        cms_bus_event ev = {0}, lapse = {0};
        const char *v1[] = {cid}, *v2[] = {iid};
        bool ok = idev_credential_expired(cid, iid, exp, &ev) == CMS_BUS_OK &&
                  idev_status_changed(iid, "active", "inactive", "attestation expired",
                                      CMS_BUS_SYSTEM_ACTOR, NULL, &lapse) == CMS_BUS_OK &&
                  cms_outbox_add_sql(job, SQL_EXPIRE, IDEV_SOURCE, &ev, 1, v1) == CMS_OUTBOX_OK;
        if (ok && strcmp(PQgetvalue(due, i, 2), "attestation") == 0)
            ok = cms_outbox_add_sql(job, IDSQL_ENCLAVE_LAPSE, IDEV_SOURCE, &lapse, 1, v2) ==
                 CMS_OUTBOX_OK;
        else if (ok)
            ok = cms_pg_job_sql(job, "SELECT 0", 0, NULL, NULL, NULL) == CMS_PG_OK;
        cms_bus_event_release(&ev);
        cms_bus_event_release(&lapse);
        if (!ok)
            return -1;
        snprintf(x->round_ids[i][0], 37, "%s", cid);
        snprintf(x->round_ids[i][1], 37, "%s", iid);
        x->nround++;
    }
    return x->nround;
}

static bool round_written(void *arg, const cms_pg_result *res)
{
    idexp *x = arg;
    int expired = 0;
    for (int i = 0; i < x->nround; i++) {
        const PGresult *r = cms_pg_result_get(res, (size_t)i * 2);
        if (r && PQntuples(r) == 1 && strcmp(PQgetvalue(r, 0, 0), "1") == 0) {
            expired++;
            cms_auth_invalidate(x->auth, x->round_ids[i][0]);
        }
        r = cms_pg_result_get(res, (size_t)i * 2 + 1);
        if (r && PQntuples(r) == 1 && strcmp(PQgetvalue(r, 0, 0), "1") == 0)
            cms_auth_invalidate(x->auth, x->round_ids[i][1]);
    }
    if (expired) {
        cms_counter_add(x->m_expired, (uint64_t)expired);
        cms_outbox_kick(x->outbox);
        cms_log_info("credentials expired", "{s:i}", "count", expired);
    }
    return x->nround == ROUND_MAX; /* more may be due */
}

static const cms_duetimer_ops expiry_ops = {.what = "credential expiry",
                                            .next = read_next,
                                            .due = read_due,
                                            .round = add_round,
                                            .written = round_written};

int idexp_create(uv_loop_t *loop, cms_pg *pg, cms_outbox *outbox, cms_auth *auth, idexp **out)
{
    idexp *x = calloc(1, sizeof *x);
    if (x == NULL)
        return -1;
    if (cms_duetimer_create(loop, pg, &expiry_ops, x, &x->timer) != 0) {
        free(x);
        return -1;
    }
    x->outbox = outbox;
    x->auth = auth;
    x->m_expired =
        cms_metrics_counter(cms_metrics_default(), "cms_identity_credentials_expired_total",
                            "Credentials announced expired", NULL);
    *out = x;
    return 0;
}

void idexp_start(idexp *x)
{
    cms_duetimer_start(x->timer);
}

void idexp_note(idexp *x, int64_t expires_at_us)
{
    if (x)
        cms_duetimer_note(x->timer, expires_at_us);
}

void idexp_close(idexp *x, void (*closed)(void *arg), void *arg)
{
    if (x)
        cms_duetimer_close(x->timer, closed, arg);
}

void idexp_destroy(idexp *x)
{
    if (x == NULL)
        return;
    cms_duetimer_destroy(x->timer);
    free(x);
}
