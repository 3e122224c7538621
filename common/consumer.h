/* The idempotent event consumer every service but cms-audit consumes
 * events through (cms-audit's batch path is a throughput special case).
 *
 * One durable JetStream pull consumer per consumer name (shared by the
 * service's replicas), explicit ack, at most max_inflight events held. For
 * each event, on the loop:
 *
 *   - The envelope is decoded and checked (bus.h); one that is not valid is
 *     dead-lettered to cms.dlq.<name> with its reason, then acked.
 *   - The handler adds its statements to one job and says what to do:
 *     APPLY (commit the job), SKIP (nothing to do: ack), DEAD (dead-letter
 *     it with a reason, then ack) or RETRY (again later). The job already
 *     starts with the record of the event in processed_events (keyed by
 *     consumer and event id): the event's effects and its record commit
 *     together, so a redelivered or republished event that was applied
 *     once is recognised by the database (the record's insert conflicts),
 *     acked, and does nothing again; nothing depends on the stream's
 *     dedupe window.
 *   - The ack goes only after the commit. A statement the database refuses
 *     for its data (SQLSTATE classes 22 and 23) dead-letters the event;
 *     anything else (no connection, a timeout, a deadlock, a lost
 *     connection whose commit is unknown) is retried with jittered backoff,
 *     never dead-lettered; while the database is away nothing is pulled
 *     and nothing is handed to the pool.
 *
 * Order: events about one resource (resource_type and resource_id) are
 * applied one at a time in stream order: a later one waits until the one
 * before it is acked, a retried one holds those behind it. Events about
 * different resources run concurrently (max_concurrent jobs). Across the
 * replicas of a service, order needs one puller: nats-server 2.9 cannot
 * partition a durable by resource, and the subjects carry no resource id.
 * So the replicas share the durable but one at a time pulls from it,
 * holding the lease "consumer:<name>" (common/lease, renewed every third of
 * lease_ms); the others stand by and take over when it lapses. Every job
 * of the holder is fenced by the lease (a lead statement that fails unless
 * it still holds it, and keeps it from changing hands until the job ends).
 * A holder stops pulling once its last renewal is older than lease_ms; one
 * whose job finds the lease lost gives back everything it holds, each
 * resource's events in their order, and stands by. A replica that takes
 * over a lease that expired (its holder died or froze holding events)
 * waits one ack_wait before pulling, so that the events the old holder
 * held come back to it first, in order; a lease released by a drain is
 * taken at once, since the drained holder released it only after its last
 * fetch had ended and everything it pulled was settled.
 *
 * Held events are kept from redelivery (in-progress acks) while they wait.
 * processed_events rows older than retention_ms are deleted by the lease
 * holder; the retention must outlive any way an applied event can come
 * again (redelivery, an outbox publish repeated after a crash), so it is
 * at least the larger of an hour, ten ack waits and twice the stream's
 * dedupe window. SIGTERM (cms_consumer_drain): nothing new is pulled, the
 * fetch under way ends, what is held (and what that fetch brought) is
 * finished and acked, then the lease is released.
 *
 * Metrics, labelled consumer="<name>": cms_consumer_events_total{outcome}
 * (applied, skipped, duplicate, dead_lettered), cms_consumer_dead_letters_total{reason},
 * cms_consumer_retries_total, cms_consumer_handler_duration_seconds,
 * cms_consumer_commit_duration_seconds, cms_consumer_lag_messages (the
 * stream's messages not yet delivered to the durable), cms_consumer_held_events,
 * cms_consumer_active (1 while this replica holds the lease). */
#ifndef CMS_CONSUMER_H
#define CMS_CONSUMER_H

#include "cms/v1/envelope.pb-c.h"
#include "nats.h"
#include "pg.h"
#include "xenum.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct cms_consumer cms_consumer;

#define CMS_CONSUMER_ERRORS(X)                                                                     \
    X(CMS_CONSUMER_OK, "ok")                                                                       \
    X(CMS_CONSUMER_EINVAL, "invalid argument")                                                     \
    X(CMS_CONSUMER_ENOMEM, "out of memory")                                                        \
    X(CMS_CONSUMER_ENATS, "the JetStream consumer could not be started")

typedef enum { CMS_CONSUMER_ERRORS(CMS_ENUM_ITEM) CMS_CONSUMER_NERRORS } cms_consumer_err;
const char *cms_consumer_strerror(cms_consumer_err e);

typedef enum {
    CMS_CONSUMER_APPLY, /* commit the job (its statements, and the event's record) */
    CMS_CONSUMER_SKIP,  /* nothing to do: ack */
    CMS_CONSUMER_DEAD,  /* never processable: dead-letter with *reason, then ack */
    CMS_CONSUMER_RETRY, /* not now: hand the event to the handler again later */
} cms_consumer_verdict;

/* On the loop, per event in order: env is decoded and checked (valid
 * during the call only); add the event's statements to job, which already
 * holds its record (lead statements: results and errors of the handler's
 * own statements keep their indices). For DEAD, set *reason to a word of
 * [a-z_] (a static string): the dead letter's Cms-Dlq-Reason. */
typedef cms_consumer_verdict (*cms_consumer_handler)(void *arg, const Cms__V1__Envelope *env,
                                                     cms_pg_job *job, const char **reason);
/* Optional, on the loop: the event's job committed (e.g. kick the outbox).
 * Called before the ack. */
typedef void (*cms_consumer_committed_cb)(void *arg, const Cms__V1__Envelope *env);

typedef struct cms_consumer_options {
    /* The consumer: its durable, its rows of processed_events, its lease,
     * its dead letters (cms.dlq.<name>). [a-z0-9_-]. Required. */
    const char *name;
    const char *stream;          /* default CMS_EVENTS */
    const char *filter_subject;  /* default cms.events.> */
    int max_inflight;            /* events held (the durable's max ack pending); default 256 */
    int max_concurrent;          /* jobs at once; default 8 */
    int64_t ack_wait_ms;         /* for a new durable; default 30000 */
    int64_t lease_ms;            /* default 10000 */
    int64_t retention_ms;        /* processed_events kept; default 7 days (see above) */
    int64_t retry_min_ms;        /* transient failures: default 100 ... */
    int64_t retry_max_ms;        /* ... doubling to 10000 */
    cms_consumer_handler handle; /* required */
    cms_consumer_committed_cb committed;
    void *arg;
} cms_consumer_options;

/* The least retention the options allow (see above). */
int64_t cms_consumer_min_retention_ms(int64_t ack_wait_ms);
/* A consumer's service: its name ("<service>" or "<service>-<more>", the
 * rule migrations/0009_roles' cms_consumer_service checks rows by) up to
 * the first '-'; the length of that part. */
size_t cms_consumer_service_len(const char *name);

/* Creates the consumer and starts taking its lease; pulls once it holds
 * it. EINVAL for a bad option (a retention below the least, a name that is
 * not a subject token). */
cms_consumer_err cms_consumer_create(uv_loop_t *loop, cms_pg *pg, cms_nats *nats,
                                     const cms_consumer_options *o, cms_consumer **out)
    __attribute__((warn_unused_result));

/* Stops pulling, finishes and acks what it holds, releases the lease, then
 * done(arg) on the loop. Whatever cannot be finished (the database away)
 * stays unacked: it comes back to the next holder. */
void cms_consumer_drain(cms_consumer *c, void (*done)(void *arg), void *arg);
/* False with a reason while it cannot work (the database away). */
bool cms_consumer_ready(const cms_consumer *c, char *why, size_t len);
/* Whether this replica holds the lease (pulls). */
bool cms_consumer_active(const cms_consumer *c);
/* Closes its timers, releasing what it still holds unacked (redelivered
 * later); closed(arg) once they are closed. */
void cms_consumer_close(cms_consumer *c, void (*closed)(void *arg), void *arg);
void cms_consumer_destroy(cms_consumer *c); /* after closed; NULL-safe */

#endif
