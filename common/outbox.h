/* The transactional outbox: events are written to the `outbox` table in the
 * same job (so the same transaction) as the change they describe, and a
 * relay on the loop publishes committed rows to JetStream, in commit order,
 * with Nats-Msg-Id set to the event id, deleting each row once the stream
 * has acknowledged it.
 *
 * Delivery is at least once into the stream and exactly once as the stream
 * stores it: a crash after a publish and before its delete re-publishes the
 * row, and the stream's duplicate window drops the copy.
 *
 * Order: rows are published strictly one after the other, oldest first,
 * each only once the one before it is in the stream, and never skipped
 * for a failure that may pass: a publish that fails for a while (NATS away,
 * the stream missing) is retried, with backoff, before anything behind it,
 * so the stream follows the order in which the rows were written (which
 * consumers rely on, event by event of one resource). A row that can never
 * be published (larger than the server takes, a subject it refuses) is
 * moved to the table outbox_dead with the reason, in one transaction, and
 * counted (cms_outbox_dead_rows_total): its neighbours go on.
 *
 * What the stream lost: a single nats-server does not sync its JetStream
 * store to disk in normal operation, so an ack means "in the page cache",
 * and a host crash can roll the store back past messages acknowledged
 * already. With retain_ms, published rows stay in the table that long
 * (marked published_at, with the ack's stream and sequence). Before its
 * first publish after it starts, and after each reconnection, the relay
 * checks that every stream still holds its newest kept row (same sequence,
 * same Nats-Msg-Id); where one does not, it finds the last kept row the
 * stream does hold and marks every row after it unpublished, so that those
 * are published again, in order, before anything newer (the dedupe window
 * and the consumers' idempotency absorb any overlap), and counts them
 * (cms_outbox_republished_total). Limits: rows older than retain_ms are
 * gone, so the window must cover the time an acknowledged message may
 * spend unsynced; a publish under way while the connection dropped may
 * reach the stream before the lost rows do. A replicated stream (three
 * servers, R3) makes the loss itself unlikely and is what production runs.
 *
 * With several replicas of a service, one relay per source holds the lease
 * "outbox:<source>" (common/lease, taken and renewed in each read job,
 * released on a graceful close, expiring after ten polls otherwise); the
 * others stand by.
 *
 * Metrics: cms_outbox_published_total, cms_outbox_publish_failures_total,
 * cms_outbox_republished_total,
 * cms_outbox_dead_rows_total{reason}, cms_outbox_backlog_rows (rows of this
 * source waiting, as of the last read), cms_outbox_oldest_age_seconds. */
#ifndef CMS_OUTBOX_H
#define CMS_OUTBOX_H

#include "bus.h"
#include "nats.h"
#include "pg.h"
#include "xenum.h"

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct cms_outbox cms_outbox;

#define CMS_OUTBOX_ERRORS(X)                                                                       \
    X(CMS_OUTBOX_OK, "ok")                                                                         \
    X(CMS_OUTBOX_EINVAL, "invalid argument")                                                       \
    X(CMS_OUTBOX_ENOMEM, "out of memory")

typedef enum { CMS_OUTBOX_ERRORS(CMS_ENUM_ITEM) CMS_OUTBOX_NERRORS } cms_outbox_err;
const char *cms_outbox_strerror(cms_outbox_err e);

/* ---- writing a change and its event ---- */

/* The outbox row of an event, as its own statement of a job. */
cms_outbox_err cms_outbox_add(cms_pg_job *job, const char *source, const cms_bus_event *ev)
    __attribute__((warn_unused_result));
/* The same for bytes that are not a built event (tools and tests). */
cms_outbox_err cms_outbox_add_raw(cms_pg_job *job, const char *source, const char *event_id,
                                  const char *subject, const void *payload, size_t len)
    __attribute__((warn_unused_result));

/* A change and its event in one statement: a data-modifying CTE makes the
 * change, and CMS_OUTBOX_SQL_FROM(cte) inserts the event once per row the
 * CTE returns, so a change that did not happen writes no event:
 *
 *     "WITH u AS (UPDATE t SET status = $6 WHERE id = $5 AND status = $7 RETURNING id), "
 *     "o AS (" CMS_OUTBOX_SQL_FROM("u") ") SELECT * FROM u"
 *
 * The event's parameters are the statement's first four ($1..$4: source,
 * event id, subject, payload); its own start at $5 (CMS_OUTBOX_PARAM0). */
#define CMS_OUTBOX_SQL_FROM(cte)                                                                   \
    "INSERT INTO outbox (source, event_id, subject, payload) SELECT $1, $2::uuid, $3, $4 "         \
    "FROM " cte
#define CMS_OUTBOX_PARAM0 5

/* Adds such a statement: the event's four parameters, then the statement's
 * own nparams text values (NULL: SQL NULL). */
cms_outbox_err cms_outbox_add_sql(cms_pg_job *job, const char *sql, const char *source,
                                  const cms_bus_event *ev, int nparams, const char *const *values)
    __attribute__((warn_unused_result));

/* Several events from one statement, each inserted once per row of its own
 * CTE (a change and the change it causes, e.g. an amendment's activation
 * and the end of the contract it supersedes): event k (from 0) has the
 * parameters $(4k+1)..$(4k+4), spelled by CMS_OUTBOX_SQL_FROM_AT; the
 * statement's own start at $(4 nevents + 1). */
#define CMS_OUTBOX_SQL_FROM_AT(cte, p1, p2, p3, p4)                                                \
    "INSERT INTO outbox (source, event_id, subject, payload) SELECT $" p1 ", $" p2 "::uuid, $" p3  \
    ", $" p4 " FROM " cte
cms_outbox_err cms_outbox_add_sql_events(cms_pg_job *job, const char *sql, const char *source,
                                         const cms_bus_event *const *events, int nevents,
                                         int nparams, const char *const *values)
    __attribute__((warn_unused_result));

/* The same with a prepared statement (its parameter count: 4 nevents +
 * nparams). */
cms_outbox_err cms_outbox_add_exec_events(cms_pg_job *job, const cms_pg_stmt *stmt,
                                          const char *source, const cms_bus_event *const *events,
                                          int nevents, int nparams, const char *const *values)
    __attribute__((warn_unused_result));

/* The same with a prepared statement (its parameter count: 4 + nparams). */
cms_outbox_err cms_outbox_add_exec(cms_pg_job *job, const cms_pg_stmt *stmt, const char *source,
                                   const cms_bus_event *ev, int nparams, const char *const *values)
    __attribute__((warn_unused_result));

/* For a client that writes with libpq itself (cms-migrate): the insert of
 * one event, and its four parameters (text, text, text, binary). */
extern const char cms_outbox_sql_insert[];
void cms_outbox_params(const char *source, const cms_bus_event *ev, const char *values[4],
                       int lengths[4], int formats[4]);

/* ---- the relay ---- */

typedef struct cms_outbox_options {
    const char *source;     /* the service whose rows this relay publishes (required) */
    int batch;              /* rows per read; default 256 */
    int64_t poll_ms;        /* look for rows at least this often; default 1000 */
    int64_t backoff_max_ms; /* after failures; default 5000 */
    /* How long a published row is kept, with the stream and sequence of its
     * ack, so that what a stream lost is published again (see "What the
     * stream lost" above). 0: deleted once acknowledged. */
    int64_t retain_ms;
} cms_outbox_options;

/* Starts the relay; it reads at once, then on every kick and poll. */
cms_outbox_err cms_outbox_create(uv_loop_t *loop, cms_pg *pg, cms_nats *nats,
                                 const cms_outbox_options *o, cms_outbox **out)
    __attribute__((warn_unused_result));

/* Call after a job that added events has committed: the relay looks now
 * instead of at the next poll. */
void cms_outbox_kick(cms_outbox *ob);

/* Rows published since start (acknowledged by the stream). */
uint64_t cms_outbox_published(const cms_outbox *ob);

/* Drains: goes on relaying until a read finds no row of this source, so
 * that everything committed before the call is published, then calls
 * closed(arg). A failure while draining ends the drain at once: what is
 * left waits in the table for the next start. */
void cms_outbox_close(cms_outbox *ob, void (*closed)(void *arg), void *arg);
/* Stops at once; unpublished rows stay in the table for the next start,
 * and a publish answered later is simply published again then (the
 * stream drops the duplicate). Calls the close callback, if one was set. */
void cms_outbox_abort(cms_outbox *ob);
void cms_outbox_destroy(cms_outbox *ob); /* after closed; NULL-safe */

#endif
