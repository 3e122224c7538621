/* One long-running service process, assembled from the runtime modules.
 *
 * cms_service_main() parses the common options and the service's own
 * (environment, then flags; --help lists them all), sets up JSON logging,
 * the process lifecycle, the PostgreSQL pool, the NATS connection and the
 * JetStream streams, the /healthz /readyz /metrics endpoint, and — when the
 * spec asks — the outbox relay, the command server with authentication of
 * every caller (auth.h) and the event consumers (consumer.h), then runs
 * the loop.
 *
 * /readyz is 200 only while the database has a ready connection, NATS is
 * connected, the streams are provisioned, the schema is at least at the
 * version this build expects, every consumer can work, and the spec's own
 * ready() agrees.
 *
 * SIGTERM/SIGINT: the command server stops taking requests, the consumers
 * finish and ack what they hold and release their leases, the spec's
 * drain() finishes its own in-flight work, the outbox relay settles, then
 * NATS, the pool and the HTTP endpoint close — all within --drain-timeout. */
#ifndef CMS_SERVICE_H
#define CMS_SERVICE_H

#include "auth.h"
#include "cmd.h"
#include "config.h"
#include "consumer.h"
#include "loop.h"
#include "metrics.h"
#include "nats.h"
#include "outbox.h"
#include "pg.h"

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

typedef struct cms_service cms_service;

/* An event consumer of the service: a durable of its own, shared by the
 * service's replicas (consumer.h). Its handler and committed callback are
 * called with the spec's arg; after every commit the service's outbox is
 * kicked (a handler's statements may add events). */
typedef struct cms_service_consumer {
    /* [a-z0-9_-]: its durable, records, lease and dead letters; the
     * service's name or "<service>-<more>", since the database gives a
     * service's role only the rows of its consumers (0009_roles) */
    const char *name;
    const char *filter_subject; /* NULL: every event (cms.events.>) */
    cms_consumer_handler handle;
    cms_consumer_committed_cb committed; /* optional */
} cms_service_consumer;

typedef struct cms_service_spec {
    /* "audit": process cms-audit, queue group and outbox source; [a-z0-9_],
     * its database role's group is cms_<name> */
    const char *name;
    const char *summary;       /* one line for --help */
    const cms_option *options; /* the service's own options, after the common ones */
    size_t noptions;
    bool outbox;   /* run an outbox relay for rows with source = name */
    bool commands; /* serve cms.cmd.<name>.<verb> */
    /* With commands: every verb only reads, so a request_id is neither
     * looked up nor its reply kept (a repeat simply reads again; a page of
     * the audit log has no business in command_replies) and the service
     * needs no rights on command_replies. */
    bool read_only_commands;
    /* Consumers started once start() succeeded (adds the consumer options). */
    const cms_service_consumer *consumers;
    size_t nconsumers;
    /* On the loop, once everything exists (maybe not yet connected): register
     * verbs, prepare statements. Non-zero aborts the start. */
    int (*start)(cms_service *s, void *arg);
    /* Draining began: stop taking work, finish what is in flight, then call
     * cms_service_drained(s). NULL: nothing to finish. */
    void (*drain)(cms_service *s, void *arg);
    /* A reason of the service's own not to be ready; NULL: none. */
    bool (*ready)(cms_service *s, void *arg, char *why, size_t whylen);
    /* How callers' API keys are resolved (see auth.h): NULL asks cms-identity;
     * cms-identity passes its own. Called with arg. */
    cms_auth_resolver auth_resolver;
    /* Last call on the loop before the runtime closes: close your handles. */
    void (*close)(cms_service *s, void *arg);
    void *arg;
} cms_service_spec;

/* Returns the process exit code: 0 after a clean drain, 1 if the drain
 * timed out or the start failed, 2 for bad usage. */
int cms_service_main(int argc, char **argv, const cms_service_spec *spec);

uv_loop_t *cms_service_loop(const cms_service *s);
const cms_config *cms_service_config(const cms_service *s);
cms_pg *cms_service_pg(const cms_service *s);
cms_nats *cms_service_nats(const cms_service *s);
cms_cmd *cms_service_cmd(const cms_service *s);       /* NULL unless spec.commands */
cms_outbox *cms_service_outbox(const cms_service *s); /* NULL unless spec.outbox */
cms_auth *cms_service_auth(const cms_service *s);     /* NULL unless spec.commands */
/* The spec's i-th consumer; NULL before the start succeeded or past the end. */
cms_consumer *cms_service_consumer_at(const cms_service *s, size_t i);
cms_proc *cms_service_proc(const cms_service *s);
void cms_service_drained(cms_service *s);

/* The schema version this build expects (the highest migration number). */
int cms_service_schema_version(void);

#endif
