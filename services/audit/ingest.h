/* Audit ingestion: JetStream consumer `audit` on cms.events.> -> validated
 * rows -> one INSERT ... SELECT FROM unnest(...) per batch, chained -> ack
 * after commit.
 *
 * The chain (audit/chain.h, migration 0014): the process registers itself
 * as a writer (audit_writers) and numbers the batches it commits; each
 * batch's transaction inserts its rows, tagged with its writer and number,
 * and its batch record, and commits only on top of the batch before it
 * (cms_audit_chain_link). Two batches stay in flight; when one fails, the
 * ones after it fail too, nothing more is sent until none is in flight, the
 * head is read back from the database and the failed ones are numbered and
 * sent again, in order. Rows already stored (a redelivery) are looked up,
 * acked and left out. With a signing key, the head is signed and published
 * to CMS_AUDIT_CHECKPOINTS (and stored in audit_checkpoints) every
 * checkpoint_ms, every checkpoint_batches batches and when draining.
 *
 * Batches close by size or by age. Up to max_inflight batches are in flight
 * on the pool at once, so one fills while others commit. A batch that fails
 * is split in halves until the bad row is alone; that row is dead-lettered
 * and its neighbours are inserted. Events that fail validation are
 * dead-lettered (original bytes and headers, reason in Cms-Dlq-Reason) and
 * acked only once the dead letter is stored. While the database is away the
 * consumer stops pulling and held rows wait; nothing is acked that is not
 * committed or dead-lettered. */
#ifndef AUDIT_INGEST_H
#define AUDIT_INGEST_H

#include "nats.h"
#include "pg.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct audit_ingest audit_ingest;

typedef struct audit_options {
    int batch_size;          /* rows per insert; default 1000 */
    int64_t batch_age_ms;    /* longest a row waits for its batch to fill; default 5 */
    int max_inflight;        /* batches in flight; default 2 */
    int max_ack_pending;     /* messages held (consumer credit); default 4 * batch_size */
    int unknown_actor_tries; /* deliveries before an unknown actor is final; default 3 */
    int64_t ack_wait_ms; /* redelivery after this long unacked, for a new durable; default 30000 */
    const char *durable; /* consumer name; default "audit" */
    const char *subject; /* filter; default "cms.events.>" */
    const char *name;    /* the writer's name in audit_writers; default "cms-audit" */
    /* Ed25519 secret key (crypto_sign's 64 bytes) checkpoints are signed
     * with; NULL: no checkpoints (the chain alone) */
    const uint8_t *signing_key;
    int64_t checkpoint_ms;  /* default 2000 */
    int checkpoint_batches; /* default 1000 */
    bool no_chain;          /* the benchmark's baseline only: plain inserts */
} audit_options;

int audit_ingest_create(uv_loop_t *loop, cms_pg *pg, cms_nats *nats, const audit_options *o,
                        audit_ingest **out) __attribute__((warn_unused_result));
/* Prepares the insert and starts consuming. */
int audit_ingest_start(audit_ingest *in) __attribute__((warn_unused_result));
bool audit_ingest_ready(const audit_ingest *in, char *why, size_t len);
/* Stops pulling, commits and acks what it holds, then done(arg). */
void audit_ingest_drain(audit_ingest *in, void (*done)(void *arg), void *arg);
/* Closes the timers; closed(arg) when they are closed. */
void audit_ingest_close(audit_ingest *in, void (*closed)(void *arg), void *arg);
void audit_ingest_destroy(audit_ingest *in);

#endif
