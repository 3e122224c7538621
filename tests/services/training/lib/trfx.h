/* cms-training under test: cms-identity (process 0), cms-contracts
 * (process 1) and cms-training (process 2) on a scratch database, each
 * consuming events through durables of the test's own (deleted at
 * teardown); cms-training dispatches to a work subject of the test's own
 * (cms.work.training.<suffix>), pulled through a durable of the test's own,
 * by the test itself acting as a worker (trfx_pull, trfx_report) or by
 * cms-worker processes (trfx_start_worker). Parties and contracts are made
 * through cms-identity's and cms-contracts' commands. Blocking and
 * asserting (Criterion): test code only. */
#ifndef CMS_TRFX_H
#define CMS_TRFX_H

#include "cms/v1/training.pb-c.h"
#include "ctfx.h"

#include <stdint.h>
#include <sys/types.h>

#define TRFX_TRAINING 2 /* cms-training's process index */
#define TRFX_WORKERS 4  /* cms-worker processes at most */

typedef struct trfx {
    ctfx c;
    char work_subject[96], work_durable[96];
    natsSubscription *work; /* the test's pull of the work durable, once used */
    pid_t workers[TRFX_WORKERS];
    char worker_key_file[TRFX_WORKERS][128];
    char field[256], msg[256]; /* the last error's */
} trfx;

/* Setup with cms-training's settings (NULL or "KEY=VALUE"s): by default a
 * worker is lost after 3 s of silence and a stop after 2 s, 2 attempts,
 * a progress event for every report. */
void trfx_setup(trfx *t, const char *dbprefix, const char *const *set);
void trfx_teardown(trfx *t);

/* A machine identity with an API key: a worker. */
void trfx_worker_identity(trfx *t, const char *name, ctparty *w);
/* An active contract between prov and cons, with extra terms JSON members
 * (NULL: none), known to cms-training as active when this returns. id out. */
void trfx_contract(trfx *t, const ctparty *prov, const ctparty *cons, const char *extra,
                   char id[37]);
/* Waits until cms-training holds this status of the contract / identity. */
void trfx_wait_contract(trfx *t, const char *contract_id, const char *status);
void trfx_wait_party(trfx *t, const char *identity_id, const char *status);

/* A training command by who (NULL: the admin); the reply code, the result
 * into *out (TrainingJob unless rdesc says otherwise; NULL: dropped). */
int trfx_call(trfx *t, const ctparty *who, const char *verb, const ProtobufCMessage *req,
              const ProtobufCMessageDescriptor *rdesc, ProtobufCMessage **out);
/* A config for the shipped dataset's shape: epochs, batch of dataset_size
 * rows, the target epsilon; sigma (0: the accountant's); static buffer. */
const char *trfx_config(int64_t dataset_size, int64_t batch, int64_t epochs, double epsilon,
                        double sigma);
/* submit; the code, the job into *out (may be NULL). */
int trfx_submit(trfx *t, const ctparty *who, const char *contract_id, const char *config,
                double budget, Cms__V1__TrainingJob **out);
Cms__V1__TrainingJob *trfx_get(trfx *t, const ctparty *who, const char *job_id);
/* Waits until the job has this status (read from the database). */
void trfx_wait_status(trfx *t, const char *job_id, const char *status, double timeout_ms);

/* The next dispatch on the test's work durable, acked; NULL if none comes
 * in timeout_ms. Free with cms__v1__training_dispatch__free_unpacked. */
Cms__V1__TrainingDispatch *trfx_pull(trfx *t, double timeout_ms);
/* A report of worker w; the code, the reply into *out (may be NULL). */
int trfx_report(trfx *t, const ctparty *w, const char *job_id, int attempt,
                Cms__V1__ReportKind kind, int64_t steps, Cms__V1__ReportReply **out);

/* cms-worker as worker i (0 .. TRFX_WORKERS-1) with w's API key, pulling
 * the test's durable, reading datasets from tests/data; its pid. */
pid_t trfx_start_worker(trfx *t, int i, const ctparty *w, const char *const *set);
void trfx_kill9_worker(trfx *t, int i);

/* The sum over the contract's ledger check: the job rows' figures as SQL
 * sees them, for assertions ("privacy_budget_spent <= privacy_budget"). */
char *trfx_sql(trfx *t, const char *sql);

#endif
