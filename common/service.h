/* One long-running service process, assembled from the runtime modules.
 *
 * cms_service_main() parses the common options and the service's own
 * (environment, then flags; --help lists them all), sets up JSON logging,
 * the process lifecycle, the PostgreSQL pool, the NATS connection and the
 * JetStream streams, the /healthz /readyz /metrics endpoint, and — when the
 * spec asks — the outbox relay and the command server with authentication
 * of every caller (auth.h), then runs the loop.
 *
 * /readyz is 200 only while the database has a ready connection, NATS is
 * connected, the streams are provisioned, the schema is at least at the
 * version this build expects, and the spec's own ready() agrees.
 *
 * SIGTERM/SIGINT: the command server stops taking requests, the spec's
 * drain() finishes in-flight work, the outbox relay settles, then NATS,
 * the pool and the HTTP endpoint close — all within drain-timeout-ms. */
#ifndef CMS_SERVICE_H
#define CMS_SERVICE_H

#include "auth.h"
#include "cmd.h"
#include "config.h"
#include "loop.h"
#include "metrics.h"
#include "nats.h"
#include "outbox.h"
#include "pg.h"

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

typedef struct cms_service cms_service;

typedef struct cms_service_spec {
    const char *name;          /* "audit": process cms-audit, queue group and outbox source */
    const char *summary;       /* one line for --help */
    const cms_option *options; /* the service's own options, after the common ones */
    size_t noptions;
    bool outbox;   /* run an outbox relay for rows with source = name */
    bool commands; /* serve cms.cmd.<name>.<verb> */
    /* On the loop, once everything exists (maybe not yet connected): register
     * verbs, prepare statements, start consumers. Non-zero aborts the start. */
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
cms_proc *cms_service_proc(const cms_service *s);
void cms_service_drained(cms_service *s);

/* The schema version this build expects (the highest migration number). */
int cms_service_schema_version(void);

#endif
