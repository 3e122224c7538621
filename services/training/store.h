/* The SQL of cms-training's tables that its files share. Each statement
 * that changes a job writes its events in the same statement (outbox.h):
 * the events' parameters first, the statement's own after. */
#ifndef TRAINING_STORE_H
#define TRAINING_STORE_H

#include "outbox.h"
#include "pg.h"

/* SQL reads best as written */
// clang-format off

/* What a statement returns of a job (TRCOL_* are the columns), the job's
 * table aliased j; contract: the SQL of its contract id as text. */
#define TRSQL_COLS(contract)                                                                       \
    "j.id::text, j.model_name, j.status::text, j.config::text, "                                   \
    "coalesce(j.metrics, '{}'::jsonb)::text, j.privacy_budget, "                                   \
    "coalesce(j.privacy_budget_spent, 0), " CMS_PG_SQL_US("j.created_at") ", "                     \
    CMS_PG_SQL_US("j.updated_at") ", coalesce(" CMS_PG_SQL_US("j.completed_at") ", 0), "           \
    contract ", j.consumer_id::text, j.noise_multiplier, j.sample_rate, j.delta, "                 \
    "j.max_grad_norm, j.planned_steps, j.max_steps, j.steps_done, j.projected_epsilon, "           \
    "j.attempt, j.max_attempts, coalesce(j.worker_id::text, ''), coalesce(j.stop_reason, ''), "    \
    "coalesce(j.failure, ''), coalesce(" CMS_PG_SQL_US("j.started_at") ", 0), j.steps_before, "    \
    "j.rdp_step::text, j.stop_told_at IS NOT NULL"
enum {
    TRCOL_ID, TRCOL_MODEL, TRCOL_STATUS, TRCOL_CONFIG, TRCOL_METRICS, TRCOL_BUDGET, TRCOL_SPENT,
    TRCOL_CREATED, TRCOL_UPDATED, TRCOL_COMPLETED, TRCOL_CONTRACT, TRCOL_CONSUMER, TRCOL_SIGMA,
    TRCOL_Q, TRCOL_DELTA, TRCOL_NORM, TRCOL_PLANNED, TRCOL_MAX_STEPS, TRCOL_STEPS, TRCOL_PROJECTED,
    TRCOL_ATTEMPT, TRCOL_MAX_ATTEMPTS, TRCOL_WORKER, TRCOL_STOP_REASON, TRCOL_FAILURE,
    TRCOL_STARTED, TRCOL_STEPS_BEFORE, TRCOL_RDP_STEP, TRCOL_STOP_TOLD, TRCOL_N
};
/* A job with its contract. */
#define TRSQL_FROM_JOBS                                                                            \
    " FROM training_jobs j JOIN training_job_contracts l ON l.job_id = j.id"
/* The contract of job row j, from the link (a statement that did not
 * insert the link in the same statement). */
#define TRSQL_LINKED_CONTRACT                                                                      \
    "(SELECT contract_id::text FROM training_job_contracts WHERE job_id = j.id)"

/* The first statement of every job that touches jobs: who acts ($1 the
 * identity or '', $2 'on' for an admin, an auditor or the service itself,
 * $3 the reporting worker or ''), for the rest of the transaction; the
 * row-level security of the training tables reads them. */
#define TRSQL_ACTOR                                                                                \
    "SELECT set_config('cms.actor', $1, true), set_config('cms.actor_all', $2, true), "            \
    "set_config('cms.worker', $3, true)"

/* A job's end, whoever ends it ($5 id, $6 the attempt read, $7 the status
 * read, $8 its worker or NULL for any, $9 the status it ends in, $10 the
 * steps it ran (kept if fewer than stored), $11 their epsilon, $12 metrics
 * or NULL, $13 failure or NULL, $14 stop_reason or NULL (a stored one is
 * kept), $15 true when only a due job may end (the tracker)); its event is
 * $1..$4. The contract's ledger is settled in the same statement: the
 * job's reservation of planned_steps becomes the steps it ran, order by
 * order, and its projected epsilon in the plain sum its spent one; its
 * last point of the spent budget is kept. */
#define TRSQL_END                                                                                  \
    "WITH u AS (UPDATE training_jobs j SET status = $9::job_status, "                              \
    "steps_done = greatest(j.steps_done, $10::int8), "                                             \
    "privacy_budget_spent = greatest(coalesce(j.privacy_budget_spent, 0), $11::float8), "          \
    "metrics = coalesce($12::jsonb, j.metrics), failure = coalesce($13, j.failure), "              \
    "stop_reason = coalesce(j.stop_reason, $14), completed_at = now(), updated_at = now(), "       \
    "due_at = NULL WHERE j.id = $5::uuid AND j.attempt = $6::int AND j.status = $7::job_status "   \
    "AND ($8::uuid IS NULL OR j.worker_id = $8::uuid) "                                            \
    "AND ($15::bool IS NOT TRUE OR j.due_at <= now()) RETURNING j.*), "                            \
    "c AS (SELECT job_id, contract_id FROM training_job_contracts WHERE job_id = $5::uuid), "      \
    "lg AS (UPDATE training_ledgers g SET reserved = (SELECT array_agg(greatest(t.a + "            \
    "(u.steps_done - u.planned_steps)::float8 * t.b, 0) ORDER BY t.i) "                            \
    "FROM unnest(g.reserved, u.rdp_step) WITH ORDINALITY AS t(a, b, i)), "                         \
    "reserved_sum = greatest(g.reserved_sum + coalesce(u.privacy_budget_spent, 0) "                \
    "- u.projected_epsilon, 0), version = g.version + 1, updated_at = now() "                      \
    "FROM u JOIN c ON c.job_id = u.id WHERE g.contract_id = c.contract_id), "                      \
    "b AS (INSERT INTO training_job_budget (job_id, steps, epsilon) SELECT id, steps_done, "       \
    "coalesce(privacy_budget_spent, 0) FROM u WHERE steps_done > 0 ON CONFLICT DO NOTHING), "      \
    "o AS (" CMS_OUTBOX_SQL_FROM("u") ") "                                                         \
    "SELECT " TRSQL_COLS("(SELECT contract_id::text FROM c)") " FROM u j"
#define TRSQL_END_NPARAMS 15 /* with the event's */

// clang-format on

#endif
