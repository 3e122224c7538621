/* What the command files of cms-contracts share (contracts.c: create,
 * update, get, list, canonical; lifecycle.c: submit, activate, complete,
 * terminate, amend; signing.c: sign; parties.c: what it hears of
 * identities; schedule.c: the timer). */
#ifndef CONTRACTS_INT_H
#define CONTRACTS_INT_H

#include "cms/v1/contracts.pb-c.h"
#include "contracts.h"
#include "contracts/canonical.h"
#include "contracts/events.h"
#include "contracts/store.h"
#include "contracts/validate.h"
#include "metrics.h"
#include "schedule.h"

#include <stdbool.h>

#define CT_ID_LEN 36

struct ctsvc {
    cms_service *svc;
    cms_pg *pg;
    cms_outbox *outbox;
    ctsched *sched;
    /* contract.fully_signed and contract.activated of every replica: due dates */
    cms_nats_sub *signed_sub, *activated_sub;
    /* the prepared statements of every file (ctsvc_prepare) */
    const cms_pg_stmt *st_actor, *st_timer, *st_get, *st_read, *st_parties, *st_create, *st_update,
        *st_list, *st_set_status, *st_amend, *st_activate, *st_key, *st_sign, *st_party,
        *st_key_issued, *st_key_revoked, *st_next, *st_due, *st_expire;
    void (*drained)(void *arg);
    void *drained_arg;
};

const char *ctsvc_correlation(cms_cmd_req *req);
bool ctsvc_is_admin(cms_cmd_req *req);
/* Adds who acts (CTSQL_ACTOR) as the job's lead statement; 0 or a cms_pg_err. */
int ctsvc_job_actor(ctsvc *s, cms_pg_job *job, cms_cmd_req *req);
/* Prepares sql (nparams parameters) as "contracts_<name>" into *out;
 * false if it cannot be registered. */
bool ctsvc_prepare(ctsvc *s, const cms_pg_stmt **out, const char *name, const char *sql,
                   int nparams);
/* The caller's side of the contract in row of r: "provider", "consumer",
 * or NULL for neither. */
const char *ctsvc_side(cms_cmd_req *req, const PGresult *r, int row);
/* The same for the identity actor. */
const char *ctsvc_side_of(const PGresult *r, int row, const char *actor);

/* ---- answers ---- */
void ctsvc_fail_invalid(cms_cmd_req *req, const cv_err *e);
void ctsvc_fail_oom(cms_cmd_req *req);
/* The one answer for a contract that does not exist and for one the caller
 * may not see: same code, same message. */
void ctsvc_fail_not_found(cms_cmd_req *req);
/* FAILED_PRECONDITION "the contract is <status>: <what>". */
void ctsvc_fail_status(cms_cmd_req *req, const char *status, const char *what);
/* Refuses (answering req) a party cms-contracts has not heard of or that
 * is not active; status is its stored status or NULL. who: "provider".
 * True when it may act. */
bool ctsvc_party_active(cms_cmd_req *req, const char *who, const char *status);

/* ---- rows ---- */
int64_t ctsvc_i64(const PGresult *r, int row, int col);
/* A contract row (CTSQL_COLS first) as its message; strings point into r. */
void ctsvc_row_contract(const PGresult *r, int row, Cms__V1__Contract *out);
void ctsvc_reply_row(cms_cmd_req *req, const PGresult *r);
/* The event's view of the contract in row of r, with its status after. */
void ctsvc_row_event(const PGresult *r, int row, const char *status_after, ctev_contract *out);
/* The read of a transition on one contract: who acts, then the contract
 * (CTSQL_COLS) and its parties' statuses (columns CTCOL_N, CTCOL_N + 1). */
int ctsvc_read_contract(ctsvc *s, cms_pg_job *job, cms_cmd_req *req, const char *id);
/* Its result in decide: the row, or NULL after answering NOT_FOUND. */
const PGresult *ctsvc_read_row(cms_cmd_req *req, const cms_pg_result *res);

/* The canonical form's hash of a contract's content; false (answering
 * req) for content that cannot be canonicalised. */
bool ctsvc_content_hash(cms_cmd_req *req, const char *id, const char *title,
                        const char *description, const char *provider, const char *consumer,
                        const char *terms, char hex[CC_HASH_HEX + 1]);

/* Adds the activation of the signed contract in row of r (CTSQL_COLS
 * first) and its events to job (lifecycle.c); 0 or -1 (no memory). */
int ctsvc_add_activation(ctsvc *s, cms_pg_job *job, const PGresult *r, int row, bool automatic,
                         const char *actor, const char *corr);

/* What every transition op of cms-contracts begins with. */
typedef struct ctsvc_op {
    ctsvc *s;
    cms_cmd_req *req;
} ctsvc_op;
/* The transitions' written (cms_transition_ops), for an op that begins
 * with a ctsvc_op and a write whose first result is the contract's row:
 * none means the state moved since the read (read again); else the change
 * is committed (ctsvc_committed) and the row is the reply. */
bool ctsvc_written(void *op, cms_cmd_req *req, const cms_pg_result *res);

/* A committed change: kick the outbox, tell the timer of due dates. */
void ctsvc_committed(ctsvc *s, const PGresult *r);

/* The verbs of each file. */
ctsvc_err ctsvc_register_contracts(ctsvc *s, cms_cmd *c);
ctsvc_err ctsvc_register_lifecycle(ctsvc *s, cms_cmd *c);
ctsvc_err ctsvc_register_signing(ctsvc *s, cms_cmd *c);
/* The consumers' statements (parties.c). */
ctsvc_err ctsvc_register_parties(ctsvc *s);

#endif
