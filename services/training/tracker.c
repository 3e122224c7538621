/* The tracker of cms-training (a common/duetimer over training_jobs.due_at):
 * what happens to a job when nobody speaks for it.
 *
 *   - a pending job marked to stop (its contract ended, a party was
 *     suspended) ends stopped, its whole reservation released;
 *   - a running job marked to stop is told to (its control subject), once,
 *     and given stop_timeout to report it stopped;
 *   - a running job told to stop that did not report within that ends
 *     stopped: its worker is presumed lost;
 *   - a running job whose worker has not reported for worker_timeout is
 *     presumed lost: requeued (a new attempt, a new dispatch, the steps run
 *     so far kept, spent and counted against max_steps) while attempts are
 *     left and budget is, else failed (or stopped when no step is left).
 *
 * Every write is conditional on what was read and on the job still being
 * due (a report that came meanwhile moved due_at), so each thing is done
 * once, also with several replicas running the same tracker. The writes
 * act as the service itself (cms.actor_all). */
#include "training_int.h"

#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ROUND_MAX 64

/* SQL reads best as written */
// clang-format off
static const char SQL_NEXT[] = "SELECT " CMS_PG_SQL_US("cms_training_next_due()");
static const char SQL_DUE[] =
    "SELECT " TRSQL_COLS("l.contract_id::text") TRSQL_FROM_JOBS
    " WHERE j.due_at <= now() ORDER BY j.due_at LIMIT 64";
/* events $1..$4 requeued, $5..$8 the new dispatch; $9 id, $10 attempt read */
static const char SQL_REQUEUE[] =
    "WITH u AS (UPDATE training_jobs j SET status = 'pending', attempt = j.attempt + 1, "
    "steps_before = j.steps_done, worker_id = NULL, due_at = NULL, last_report_at = NULL, "
    "progress_event_at = NULL, updated_at = now() WHERE j.id = $9::uuid "
    "AND j.attempt = $10::int AND j.status = 'running' AND j.stop_reason IS NULL "
    "AND j.due_at <= now() RETURNING j.*), "
    "o1 AS (" CMS_OUTBOX_SQL_FROM_AT("u", "1", "2", "3", "4") " RETURNING seq), "
    "o2 AS (" CMS_OUTBOX_SQL_FROM_AT("u, o1", "5", "6", "7", "8") ") "
    "SELECT " TRSQL_COLS(TRSQL_LINKED_CONTRACT) " FROM u j";
/* a job due for no reason the tracker acts on: no longer due */
static const char SQL_UNDUE[] =
    "UPDATE training_jobs SET due_at = NULL WHERE id = $1::uuid AND due_at <= now() "
    "AND NOT (status = 'running' OR (status = 'pending' AND stop_reason IS NOT NULL)) "
    "RETURNING id";
// clang-format on

typedef enum { DUE_END, DUE_TELL, DUE_REQUEUE, DUE_UNDUE } due_kind;

typedef struct due_item {
    due_kind kind;
    bool lost;
    char id[TR_ID_LEN + 1];
    int attempt;
    char reason[96];
} due_item;

/* the round under way: one tracker per process, one round at a time */
static due_item round_items[ROUND_MAX];

static int read_next(void *arg, cms_pg_job *job)
{
    trsvc *s = arg;
    return cms_pg_job_exec(job, s->st_next, NULL, NULL, NULL);
}

static int read_due(void *arg, cms_pg_job *job)
{
    trsvc *s = arg;
    int rc = trsvc_job_actor(s, job, NULL, true, NULL);
    return rc ? rc : cms_pg_job_exec(job, s->st_due, NULL, NULL, NULL);
}

/* the job in row i ends in status, with why as failure or stop reason */
static bool add_end(trsvc *s, cms_pg_job *job, const PGresult *r, int i, const char *status,
                    const char *why)
{
    trev_job j;
    trsvc_row_event(r, i, status, &j);
    cms_bus_event ev = {0};
    bool failed = strcmp(status, "failed") == 0;
    const char *v[] = {PQgetvalue(r, i, TRCOL_ID),
                       PQgetvalue(r, i, TRCOL_ATTEMPT),
                       PQgetvalue(r, i, TRCOL_STATUS),
                       NULL,
                       status,
                       PQgetvalue(r, i, TRCOL_STEPS),
                       PQgetvalue(r, i, TRCOL_SPENT),
                       NULL,
                       failed ? why : NULL,
                       failed ? NULL : why,
                       "true"};
    bool ok = (failed ? trev_failed(&j, why, (int)trsvc_i64(r, i, TRCOL_ATTEMPT),
                                    CMS_BUS_SYSTEM_ACTOR, &ev)
                      : trev_stopped(&j, why, CMS_BUS_SYSTEM_ACTOR, NULL, &ev)) == CMS_BUS_OK &&
              cms_outbox_add_exec(job, s->st_end, TREV_SOURCE, &ev, 11, v) == CMS_OUTBOX_OK;
    cms_bus_event_release(&ev);
    return ok;
}

static bool add_requeue(trsvc *s, cms_pg_job *job, const PGresult *r, int i)
{
    int attempt = (int)trsvc_i64(r, i, TRCOL_ATTEMPT);
    trev_job j;
    trsvc_row_event(r, i, "pending", &j);
    cms_bus_event ev = {0}, dispatch = {0};
    const cms_bus_event *evs[] = {&ev, &dispatch};
    const char *v[] = {PQgetvalue(r, i, TRCOL_ID), PQgetvalue(r, i, TRCOL_ATTEMPT)};
    bool ok =
        trev_requeued(&j, attempt + 1, PQgetvalue(r, i, TRCOL_WORKER), &ev) == CMS_BUS_OK &&
        trsvc_dispatch_event(s, PQgetvalue(r, i, TRCOL_ID), attempt + 1,
                             PQgetvalue(r, i, TRCOL_MODEL), PQgetvalue(r, i, TRCOL_CONFIG),
                             trsvc_f64(r, i, TRCOL_SIGMA), trsvc_i64(r, i, TRCOL_PLANNED),
                             trsvc_i64(r, i, TRCOL_MAX_STEPS), trsvc_i64(r, i, TRCOL_STEPS),
                             &dispatch) &&
        cms_outbox_add_exec_events(job, s->st_requeue, TREV_SOURCE, evs, 2, 2, v) == CMS_OUTBOX_OK;
    cms_bus_event_release(&ev);
    cms_bus_event_release(&dispatch);
    return ok;
}

static int add_round(void *arg, const cms_pg_result *res, cms_pg_job *job)
{
    trsvc *s = arg;
    const PGresult *r = cms_pg_result_get(res, 0);
    s->nround = 0;
    if (r == NULL || PQntuples(r) == 0)
        return 0;
    if (trsvc_job_actor(s, job, NULL, true, NULL) != CMS_PG_OK)
        return -1;
    for (int i = 0; i < PQntuples(r) && i < ROUND_MAX; i++) {
        due_item *it = &round_items[s->nround];
        memset(it, 0, sizeof *it);
        snprintf(it->id, sizeof it->id, "%s", PQgetvalue(r, i, TRCOL_ID));
        it->attempt = (int)trsvc_i64(r, i, TRCOL_ATTEMPT);
        const char *status = PQgetvalue(r, i, TRCOL_STATUS),
                   *stop = PQgetvalue(r, i, TRCOL_STOP_REASON);
        bool told = strcmp(PQgetvalue(r, i, TRCOL_STOP_TOLD), "t") == 0, ok;
        int64_t left = trsvc_i64(r, i, TRCOL_MAX_STEPS) - trsvc_i64(r, i, TRCOL_STEPS);
        if (strcmp(status, "pending") == 0 && stop[0]) {
            it->kind = DUE_END;
            ok = add_end(s, job, r, i, "stopped", stop);
        } else if (strcmp(status, "running") == 0 && stop[0] && !told) {
            it->kind = DUE_TELL;
            snprintf(it->reason, sizeof it->reason, "%s", stop);
            char deadline[24];
            snprintf(deadline, sizeof deadline, "%lld", (long long)s->opt.stop_timeout_ms);
            const char *v[] = {it->id, PQgetvalue(r, i, TRCOL_ATTEMPT), stop, deadline};
            ok = cms_pg_job_exec(job, s->st_tell, v, NULL, NULL) == CMS_PG_OK;
        } else if (strcmp(status, "running") == 0 && stop[0]) {
            it->kind = DUE_END; /* told, and silent since */
            it->lost = true;
            ok = add_end(s, job, r, i, "stopped", stop);
        } else if (strcmp(status, "running") == 0) {
            it->lost = true;
            if (it->attempt < trsvc_i64(r, i, TRCOL_MAX_ATTEMPTS) && left > 0) {
                it->kind = DUE_REQUEUE;
                ok = add_requeue(s, job, r, i);
            } else if (left <= 0) {
                it->kind = DUE_END;
                ok = add_end(s, job, r, i, "stopped", "budget_exhausted");
            } else {
                it->kind = DUE_END;
                char why[96];
                snprintf(why, sizeof why, "worker_lost: no report in attempt %d of %d", it->attempt,
                         (int)trsvc_i64(r, i, TRCOL_MAX_ATTEMPTS));
                ok = add_end(s, job, r, i, "failed", why);
            }
        } else {
            it->kind = DUE_UNDUE;
            const char *v[] = {it->id};
            ok = cms_pg_job_exec(job, s->st_undue, v, NULL, NULL) == CMS_PG_OK;
        }
        if (!ok)
            return -1;
        s->nround++;
    }
    return s->nround;
}

static bool round_written(void *arg, const cms_pg_result *res)
{
    trsvc *s = arg;
    int ended = 0, told = 0, requeued = 0, lost = 0;
    for (int i = 0; i < s->nround; i++) {
        const PGresult *r = cms_pg_result_get(res, (size_t)i + 1);
        const due_item *it = &round_items[i];
        if (r == NULL || PQntuples(r) == 0)
            continue; /* moved since the read, or another replica did it */
        lost += it->lost;
        switch (it->kind) {
        case DUE_END:
            ended++;
            break;
        case DUE_TELL:
            told++;
            trsvc_tell_stop(s, it->id, it->attempt, it->reason);
            cms_duetimer_note(s->tracker, cms_bus_now_us() + s->opt.stop_timeout_ms * 1000);
            break;
        case DUE_REQUEUE:
            requeued++;
            break;
        case DUE_UNDUE:
            break;
        }
    }
    if (ended || told || requeued) {
        cms_counter_add(s->m_stopped, (uint64_t)ended);
        cms_counter_add(s->m_requeued, (uint64_t)requeued);
        cms_counter_add(s->m_lost, (uint64_t)lost);
        cms_outbox_kick(s->outbox);
        cms_log_info("training jobs came due", "{s:i, s:i, s:i, s:i}", "ended", ended,
                     "told_to_stop", told, "requeued", requeued, "workers_lost", lost);
    }
    return s->nround == ROUND_MAX;
}

static const cms_duetimer_ops tracker_ops = {.what = "training job tracker",
                                             .next = read_next,
                                             .due = read_due,
                                             .round = add_round,
                                             .written = round_written};

trsvc_err trsvc_tracker_create(trsvc *s, uv_loop_t *loop)
{
    if (!trsvc_prepare(s, &s->st_next, "next", SQL_NEXT, 0) ||
        !trsvc_prepare(s, &s->st_due, "due", SQL_DUE, 0) ||
        !trsvc_prepare(s, &s->st_requeue, "requeue", SQL_REQUEUE, 10) ||
        !trsvc_prepare(s, &s->st_undue, "undue", SQL_UNDUE, 1))
        return TRSVC_ESETUP;
    return cms_duetimer_create(loop, s->pg, &tracker_ops, s, &s->tracker) == 0 ? TRSVC_OK
                                                                               : TRSVC_ENOMEM;
}
