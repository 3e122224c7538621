/* The consumer tests' fixture (tests/common/consumer*_test.c): cms-testsvc
 * replicas consuming a resource type of the test's own through
 * common/consumer (tests/common/testsvc.c says what each event verb does),
 * the table their handler writes, and events published to JetStream.
 *
 * Test code: everything blocks and asserts. */
#ifndef CMS_CONSUMERFX_H
#define CMS_CONSUMERFX_H

#include "svcfx.h"

#include <nats/nats.h>

typedef struct consumerfx {
    svcfx f;
    char name[40];         /* the consumer (durable, lease, dead letters) */
    char rtype[40];        /* the resource type of the test's events */
    char filter[96];       /* cms.events.<rtype>.> */
    char env[4][160];      /* the replicas' settings */
    natsSubscription *dlq; /* cms.dlq.<name>, from setup on */
} consumerfx;

/* Scratch database with testsvc_effects (and a trigger notifying
 * "testsvc_effects" on every row), names of the test's own, a watcher of
 * the consumer's dead letters. ack_wait and lease: the replicas' settings
 * ("3s", ...). */
void consumerfx_setup(consumerfx *c, const char *ack_wait, const char *lease);
void consumerfx_teardown(consumerfx *c);

/* Replica i of cms-testsvc consuming; returns once /readyz is 200. */
void consumerfx_start(consumerfx *c, int i);

/* A new resource id (text UUID). */
void consumerfx_uuid(char out[37]);

/* Publishes an event of type <rtype>.<verb> about resource rid with
 * details {"n": n}; event_id NULL: a new one (written into id_out if not
 * NULL); msg_id NULL: the event id. */
void consumerfx_publish(consumerfx *c, const char *verb, const char *rid, int n,
                        const char *event_id, const char *msg_id, char id_out[37]);

/* Waits until resource rid has want rows of testsvc_effects (at most
 * timeout_ms); asserts it got there. */
void consumerfx_wait_effects(consumerfx *c, const char *rid, int want, double timeout_ms);
/* "1,2,3": the n of rid's rows in commit order. malloc'd. */
char *consumerfx_order(consumerfx *c, const char *rid);
/* Rows of testsvc_effects for event id. */
int consumerfx_effects_of(consumerfx *c, const char *event_id);

/* Replica i's cms_consumer_events_total for outcome (0 if absent). */
double consumerfx_outcome(consumerfx *c, int i, const char *outcome);
/* The next dead letter's Cms-Dlq-Reason, written into reason (64 bytes);
 * false if none comes in timeout_ms. */
bool consumerfx_next_dead(consumerfx *c, char *reason, double timeout_ms);

#endif
