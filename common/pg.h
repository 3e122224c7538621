/* A small pool of non-blocking PostgreSQL connections on one uv loop.
 *
 * Work is submitted as jobs. A job is a list of statements sent in pipeline
 * mode and closed by a single Sync, so the server runs the whole job as ONE
 * implicit transaction: every statement commits, or none does. A job never
 * holds a transaction open across loop turns, so a slow caller cannot pin a
 * connection. Several jobs may be in flight on one connection (pipelined),
 * and jobs are spread over the pool's ready connections.
 *
 * Connections are opened with PQconnectStart/PQconnectPoll, switched to
 * non-blocking and pipeline mode, and driven by uv_poll_t on PQsocket. A lost
 * connection is reopened with exponential backoff and full jitter; while none
 * is ready, jobs wait in a bounded queue for at most queue_timeout_ms.
 * Nothing here blocks the loop, provided the conninfo names hosts by address
 * (or resolves them without a network look-up: libpq resolves host names
 * synchronously).
 *
 * Everything runs on the loop thread. Callbacks may submit new jobs or close
 * the pool: submissions are dispatched on a later loop turn (batched), and a
 * close is carried out once every job has completed. */
#ifndef CMS_PG_H
#define CMS_PG_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define CMS_PG_WUR __attribute__((warn_unused_result))

/* SQL: microseconds since the epoch of a timestamptz expression, as int8. */
#define CMS_PG_SQL_US(col) "(extract(epoch from " col ") * 1000000)::int8"
/* ... and back: the timestamptz of an int8 parameter of microseconds. */
#define CMS_PG_SQL_FROM_US(param)                                                                  \
    "('epoch'::timestamptz + " param "::int8 * interval '1 microsecond')"

typedef struct cms_pg cms_pg;
typedef struct cms_pg_job cms_pg_job;
typedef struct cms_pg_stmt cms_pg_stmt;
typedef struct cms_pg_result cms_pg_result;

#define CMS_PG_ERRORS(X)                                                                           \
    X(CMS_PG_OK, "ok")                                                                             \
    X(CMS_PG_EINVAL, "invalid argument")                                                           \
    X(CMS_PG_ENOMEM, "out of memory")                                                              \
    X(CMS_PG_EBUSY, "job queue is full")                                                           \
    X(CMS_PG_EUNAVAILABLE, "no database connection became ready in time")                          \
    X(CMS_PG_ECONN, "connection lost before the job completed; its outcome is unknown")            \
    X(CMS_PG_ESQL, "a statement failed; the job was rolled back")                                  \
    X(CMS_PG_ECLOSED, "the pool is closed")

typedef enum cms_pg_err {
#define CMS_PG_ENUM(name, text) name,
    CMS_PG_ERRORS(CMS_PG_ENUM)
#undef CMS_PG_ENUM
} cms_pg_err;

const char *cms_pg_strerror(cms_pg_err err);

typedef struct cms_pg_options {
    const char *conninfo;         /* libpq connection string (required) */
    const char *application_name; /* fallback_application_name; NULL: "cms" */
    int pool_size;                /* connections; default 2 */
    int max_pipeline;             /* jobs in flight per connection; default 4 */
    size_t queue_cap;             /* jobs waiting for a connection; default 4096 */
    int64_t queue_timeout_ms;     /* longest wait for a connection; default 5000 */
    int64_t statement_timeout_ms; /* set on every connection; default 30000; 0: server's */
    int64_t backoff_min_ms;       /* first reconnect delay; default 100 */
    int64_t backoff_max_ms;       /* reconnect delay cap; default 5000 */
    /* Called on the loop whenever the number of ready connections changes. */
    void (*on_state)(void *arg, int ready_connections);
    void *state_arg;
} cms_pg_options;

/* Starts connecting at once. *out is set only on success. */
int cms_pg_create(uv_loop_t *loop, const cms_pg_options *opts, cms_pg **out) CMS_PG_WUR;

/* Registers a prepared statement. Every connection prepares it (in the same
 * pipeline, just before the first job that uses it), also after reconnects.
 * types may be NULL (the server infers them). The returned handle lives as
 * long as the pool. NULL on a duplicate name or no memory. */
const cms_pg_stmt *cms_pg_prepare(cms_pg *pg, const char *name, const char *sql, int nparams,
                                  const Oid *types);

/* The parameters the statement takes. */
int cms_pg_stmt_nparams(const cms_pg_stmt *stmt);

/* Number of connections ready for work now. */
int cms_pg_ready(const cms_pg *pg);
/* Jobs waiting for a connection plus jobs in flight. */
size_t cms_pg_pending(const cms_pg *pg);

/* Jobs. A new job holds no statements. Parameters are copied into the job,
 * so the caller's buffers may be freed as soon as the add call returns.
 * values[i] == NULL is SQL NULL. formats: NULL means all text (then lengths
 * may be NULL too); 1 marks a binary parameter, whose length is required. */
cms_pg_job *cms_pg_job_new(void);
int cms_pg_job_sql(cms_pg_job *job, const char *sql, int nparams, const char *const *values,
                   const int *lengths, const int *formats) CMS_PG_WUR;
int cms_pg_job_exec(cms_pg_job *job, const cms_pg_stmt *stmt, const char *const *values,
                    const int *lengths, const int *formats) CMS_PG_WUR;
/* A lead statement: runs before the others, in the same transaction, but
 * its result is not one of the job's results (count, get and failed speak
 * of the statements after the lead ones only). For what a module adds to
 * its callers' jobs, e.g. the claim of a request_id or the record of a
 * processed event. Only before any other statement: EINVAL after. */
int cms_pg_job_lead_sql(cms_pg_job *job, const char *sql, int nparams, const char *const *values,
                        const int *lengths, const int *formats) CMS_PG_WUR;
/* The same with a prepared statement. */
int cms_pg_job_lead_exec(cms_pg_job *job, const cms_pg_stmt *stmt, const char *const *values,
                         const int *lengths, const int *formats) CMS_PG_WUR;
/* Results of this job come back in binary format (default: text). */
void cms_pg_job_binary_results(cms_pg_job *job);
/* Safe to run twice (e.g. INSERT ... ON CONFLICT DO NOTHING): if the
 * connection is lost before the result arrives, the job is sent again on
 * another connection instead of failing with CMS_PG_ECONN. */
void cms_pg_job_idempotent(cms_pg_job *job);
void cms_pg_job_free(cms_pg_job *job); /* a job never submitted; NULL-safe */

/* done(arg, err, res) runs on the loop exactly once per accepted job, with
 * res non-NULL for CMS_PG_OK and CMS_PG_ESQL. res and its PGresults are
 * freed when done returns. */
typedef void (*cms_pg_done_cb)(void *arg, cms_pg_err err, const cms_pg_result *res);

/* Takes the job (clears *job) whether or not it is accepted. Returns
 * CMS_PG_OK, or CMS_PG_EBUSY / CMS_PG_ECLOSED / CMS_PG_EINVAL with done
 * not called. */
cms_pg_err cms_pg_submit(cms_pg *pg, cms_pg_job **job, cms_pg_done_cb done, void *arg) CMS_PG_WUR;

/* Results: one per statement, in order. */
size_t cms_pg_result_count(const cms_pg_result *res);
/* The i-th statement's result; NULL for a statement skipped after an error. */
const PGresult *cms_pg_result_get(const cms_pg_result *res, size_t i);
/* For CMS_PG_ESQL: the failing statement's index (-1 when a lead
 * statement failed), the failing lead statement's index (-1 when none
 * did), SQLSTATE and message (for logs; callers map SQLSTATEs to their own
 * errors). */
int cms_pg_result_failed(const cms_pg_result *res);
int cms_pg_result_lead_failed(const cms_pg_result *res);
const char *cms_pg_result_sqlstate(const cms_pg_result *res);
const char *cms_pg_result_message(const cms_pg_result *res);

/* Stops taking jobs, waits for queued and in-flight ones to complete, closes
 * every connection and handle, then calls closed(arg). Idempotent. */
void cms_pg_close(cms_pg *pg, void (*closed)(void *arg), void *arg);
void cms_pg_destroy(cms_pg *pg); /* after closed; NULL-safe */

#endif
