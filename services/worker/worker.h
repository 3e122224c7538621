/* The cms-worker process: its NATS connection, the pull of dispatches from
 * the workers durable of CMS_WORK, and the run of each job (main.c says
 * the protocol). One thread does it all, synchronously: it trains between
 * blocking requests, so nothing here runs on an event loop. The only other
 * threads are nats.c's, whose callbacks of ours only log, or (a job's
 * stop) set an atomic flag the training loop reads before every step. */
#ifndef WORKER_WORKER_H
#define WORKER_WORKER_H

#include "dpsgd.h"
#include "nats.h"
#include "xenum.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define WORKER_ERRORS(X)                                                                           \
    X(WORKER_OK, "ok")                                                                             \
    X(WORKER_EINVAL, "invalid options")                                                            \
    X(WORKER_ENOMEM, "out of memory")                                                              \
    X(WORKER_ENATS, "NATS cannot be set up")

typedef enum { WORKER_ERRORS(CMS_ENUM_ITEM) WORKER_NERRORS } worker_err;
const char *worker_strerror(worker_err e);

typedef struct worker_options {
    const char *nats_url;
    cms_nats_security security;
    const char *command_prefix; /* of cms.cmd.training.report */
    const char *work_durable;   /* the durable of CMS_WORK pulled: workers */
    const char *api_key;        /* the worker identity's; copied, wiped on destroy */
    const char *data_dir;       /* <data_dir>/<dataset>.csv */
    int64_t report_interval_ms; /* progress at least this often */
    int64_t report_timeout_ms;  /* the longest wait for one report's reply */
    int64_t final_report_ms;    /* how long a final report is retried */
    int64_t fetch_timeout_ms;   /* the life of one pull request */
    bool once;                  /* take one dispatch, then return */
    const uint8_t *test_seed;   /* DPSGD_SEED_BYTES: deterministic training (tests only) */
} worker_options;

typedef struct worker worker;

/* Checks o and copies it; connects nothing yet. */
worker_err worker_create(const worker_options *o, worker **out) __attribute__((warn_unused_result));
/* Connects (retrying with backoff), binds the durable and takes dispatches
 * one at a time until worker_stop, or after one with once. Returns 0 on a
 * clean stop, 1 when NATS could not be set up. */
int worker_run(worker *w);
void worker_destroy(worker *w); /* NULL-safe; wipes the key */

/* Asks the worker to stop: the job in hand stops after its current step.
 * Async-signal-safe (for a signal handler); any thread. */
void worker_stop(void);
/* Whether worker_stop was called. */
bool worker_stopping(void);
/* Whether the worker is bound to its durable and connected, taking or
 * training dispatches; if not, why (NUL-terminated). Any thread. */
bool worker_ready(char *why, size_t whylen);

#endif
