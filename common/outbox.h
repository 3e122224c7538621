/* The transactional outbox: events are written to the `outbox` table in the
 * same job (so the same transaction) as the change they describe, and a
 * relay on the loop publishes committed rows to JetStream, in commit order,
 * with Nats-Msg-Id set to the event id, deleting each row once the stream
 * has acknowledged it.
 *
 * Delivery is at least once into the stream and exactly once as the stream
 * stores it: a crash after a publish and before its delete re-publishes the
 * row, and the stream's duplicate window drops the copy. Rows are read
 * oldest first and never skipped, so a transaction that commits late is
 * still published. With several replicas of a service, one relay per
 * source holds a lease (table outbox_leases, taken and renewed in the same
 * transaction as each read, released on a graceful close, expiring after
 * ten polls otherwise); the others stand by, so rows reach the stream in
 * commit order. After a failed publish the relay backs off and starts
 * again from the oldest undeleted row; events that were already in flight
 * behind the failed one may then precede it in the stream. */
#ifndef CMS_OUTBOX_H
#define CMS_OUTBOX_H

#include "nats.h"
#include "pg.h"

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct cms_outbox cms_outbox;

typedef struct cms_outbox_options {
    const char *source;     /* the service whose rows this relay publishes (required) */
    int batch;              /* rows per read; default 256 */
    int64_t poll_ms;        /* look for rows at least this often; default 1000 */
    int64_t backoff_max_ms; /* after failures; default 5000 */
} cms_outbox_options;

/* Adds "INSERT INTO outbox ..." for one event to job. subject is the full
 * subject (cms.events.<type>.<verb>); payload is the serialized Envelope.
 * Returns a cms_pg_err. */
int cms_outbox_add(cms_pg_job *job, const char *source, const char *event_id, const char *subject,
                   const void *payload, size_t len) __attribute__((warn_unused_result));

/* Starts the relay; it reads at once, then on every kick and poll. */
int cms_outbox_create(uv_loop_t *loop, cms_pg *pg, cms_nats *nats, const cms_outbox_options *o,
                      cms_outbox **out) __attribute__((warn_unused_result));

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
