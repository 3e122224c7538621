/* The activation and expiry timer of cms-contracts (a common/duetimer);
 * see schedule.h. */
#include "schedule.h"

#include "contracts_int.h"
#include "duetimer.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ROUND_MAX 256

/* SQL reads best as written */
// clang-format off
static const char SQL_NEXT[] = "SELECT " CMS_PG_SQL_US("cms_contracts_next_due()");
/* what is due now: its last column says whether it ends (else it starts) */
static const char SQL_DUE[] =
    "SELECT " CTSQL_COLS ", ends_at <= now() FROM contracts "
    "WHERE (status = 'signed' AND starts_at <= now()) "
    "OR (status IN ('signed', 'active') AND ends_at <= now()) LIMIT 256";
/* $5 id, $6 the status read */
static const char SQL_EXPIRE[] =
    "WITH u AS (UPDATE contracts SET status = 'expired', updated_at = now() WHERE id = $5::uuid "
    "AND status = $6::contract_status AND ends_at <= now() RETURNING id), "
    "o AS (" CMS_OUTBOX_SQL_FROM("u") ") SELECT id::text FROM u";
// clang-format on

struct ctsched {
    cms_duetimer *timer;
    ctsvc *s;
    int nround;
    cms_counter *m_activated, *m_expired;
};

static int read_next(void *arg, cms_pg_job *job)
{
    ctsched *x = arg;
    return cms_pg_job_exec(job, x->s->st_next, NULL, NULL, NULL);
}

static int read_due(void *arg, cms_pg_job *job)
{
    ctsched *x = arg;
    int rc = cms_pg_job_lead_exec(job, x->s->st_timer, NULL, NULL, NULL);
    return rc ? rc : cms_pg_job_exec(job, x->s->st_due, NULL, NULL, NULL);
}

/* Two statements per due contract: acting as its provider (so that an
 * amendment's predecessor is seen), then its expiry or its activation with
 * its events. */
static int add_round(void *arg, const cms_pg_result *res, cms_pg_job *job)
{
    ctsched *x = arg;
    const PGresult *due = cms_pg_result_get(res, 0);
    x->nround = 0;
    for (int i = 0; due && i < PQntuples(due) && i < ROUND_MAX; i++) {
        const char *who[] = {PQgetvalue(due, i, CTCOL_PROVIDER), "off"};
        bool ends = strcmp(PQgetvalue(due, i, CTCOL_N), "t") == 0, ok;
        if (cms_pg_job_exec(job, x->s->st_actor, who, NULL, NULL) != CMS_PG_OK)
            return -1;
        if (ends) {
            const char *from = PQgetvalue(due, i, CTCOL_STATUS);
            ctev_contract c;
            ctsvc_row_event(due, i, "expired", &c);
            cms_bus_event ev = {0};
            const char *v[] = {c.id, from};
            ok = ctev_expired(&c, from, ctsvc_i64(due, i, CTCOL_ENDS), &ev) == CMS_BUS_OK &&
                 cms_outbox_add_exec(job, x->s->st_expire, CTEV_SOURCE, &ev, 2, v) == CMS_OUTBOX_OK;
            cms_bus_event_release(&ev);
        } else {
            ok = ctsvc_add_activation(x->s, job, due, i, true, CMS_BUS_SYSTEM_ACTOR, NULL) == 0;
        }
        if (!ok)
            return -1;
        x->nround++;
    }
    return x->nround;
}

static bool round_written(void *arg, const cms_pg_result *res)
{
    ctsched *x = arg;
    int activated = 0, expired = 0;
    for (int i = 0; i < x->nround; i++) {
        const PGresult *r = cms_pg_result_get(res, (size_t)i * 2 + 1);
        if (r == NULL || PQntuples(r) == 0)
            continue; /* another process did it first */
        if (PQnfields(r) == 1) {
            expired++;
        } else {
            activated++;
            /* it ends some day: the timer must know */
            cms_duetimer_note(x->timer, ctsvc_i64(r, 0, CTCOL_ENDS));
        }
    }
    if (activated || expired) {
        cms_counter_add(x->m_activated, (uint64_t)activated);
        cms_counter_add(x->m_expired, (uint64_t)expired);
        cms_outbox_kick(x->s->outbox);
        cms_log_info("contracts came due", "{s:i, s:i}", "activated", activated, "expired",
                     expired);
    }
    return x->nround == ROUND_MAX;
}

static const cms_duetimer_ops sched_ops = {.what = "contract activation and expiry",
                                           .next = read_next,
                                           .due = read_due,
                                           .round = add_round,
                                           .written = round_written};

int ctsched_create(uv_loop_t *loop, ctsvc *s, ctsched **out)
{
    if (!ctsvc_prepare(s, &s->st_next, "next", SQL_NEXT, 0) ||
        !ctsvc_prepare(s, &s->st_due, "due", SQL_DUE, 0) ||
        !ctsvc_prepare(s, &s->st_expire, "expire", SQL_EXPIRE, 6))
        return -1;
    ctsched *x = calloc(1, sizeof *x);
    if (x == NULL)
        return -1;
    if (cms_duetimer_create(loop, s->pg, &sched_ops, x, &x->timer) != 0) {
        free(x);
        return -1;
    }
    x->s = s;
    cms_metrics *mx = cms_metrics_default();
    x->m_activated = cms_metrics_counter(mx, "cms_contracts_activated_by_date_total",
                                         "Contracts activated at their start date", NULL);
    x->m_expired = cms_metrics_counter(mx, "cms_contracts_expired_total",
                                       "Contracts expired at their end date", NULL);
    *out = x;
    return 0;
}

void ctsched_start(ctsched *x)
{
    cms_duetimer_start(x->timer);
}

void ctsched_note(ctsched *x, int64_t due_us)
{
    if (x)
        cms_duetimer_note(x->timer, due_us);
}

void ctsched_close(ctsched *x, void (*closed)(void *arg), void *arg)
{
    if (x)
        cms_duetimer_close(x->timer, closed, arg);
}

void ctsched_destroy(ctsched *x)
{
    if (x == NULL)
        return;
    cms_duetimer_destroy(x->timer);
    free(x);
}
