/* The request–reply command server of one service.
 *
 * Subscribes to <prefix>.<service>.* in queue group <service>, and for each
 * request, in this order: finds its verb, checks its size, authenticates
 * the caller, decodes the body (into a bounded arena: a request never costs
 * more than max_decoded_bytes however it is encoded), then runs the verb's
 * handler on the loop. The reply is a cms.v1.Reply: the serialized result,
 * or a cms.v1.Error with a stable code, a human message and the field at
 * fault.
 *
 * Authentication: with an authenticator (options.auth), every request to a
 * verb not registered as open must carry "Authorization: Bearer <API key>";
 * the key is resolved to the acting identity (cms_cmd_req_principal) before
 * the body is even decoded. No key, or a key that is not accepted, is
 * answered PERMISSION_DENIED and nothing is done. Handlers decide what the
 * principal may do.
 *
 * request_id: a request carrying the header Cms-Request-Id is carried out
 * at most once per (service, caller, verb, request_id), across retries and
 * replicas: one caller cannot read or replay another's reply by guessing
 * its request_id, and reusing a request_id for another verb is another
 * request.
 *   - A handler's change is written with cms_cmd_job_new/cms_cmd_submit:
 *     the job then starts by claiming the request_id (a row of
 *     command_replies) in the same transaction as the change, so a second
 *     attempt, here or on another replica, cannot claim it too: its
 *     transaction fails on the claim, nothing of it is written, and it
 *     answers what the first answered.
 *   - A repeat while the first runs in this process joins it and gets the
 *     same reply; a repeat that finds the claim of an attempt elsewhere
 *     waits for that attempt's reply; a repeat afterwards gets the stored
 *     reply (table command_replies) without running the handler.
 *   - Replies with UNAVAILABLE or INTERNAL are not stored (and a claim
 *     committed without its reply is released), so a retry runs again.
 *   - A claim whose attempt stopped (the process died) between its commit
 *     and the store of its reply is answered FAILED_PRECONDITION: the
 *     change may have been made, and only the caller can tell whether to
 *     make it again under a new request_id.
 *
 * Every request has a deadline from its arrival: a handler that has not
 * replied by then is answered UNAVAILABLE for it (its late reply is stored
 * and given to retries that joined). Requests beyond max_inflight are
 * answered UNAVAILABLE at once.
 *
 * Metrics: cms_commands_total{verb,code} and
 * cms_command_duration_seconds{verb} (from arrival to answer). */
#ifndef CMS_CMD_H
#define CMS_CMD_H

#include "auth.h"
#include "cms/v1/command.pb-c.h"
#include "nats.h"
#include "pg.h"
#include "xenum.h"

#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct cms_cmd cms_cmd;
typedef struct cms_cmd_req cms_cmd_req;
/* The wire code of a reply's error (command.proto); 0, UNSPECIFIED, is
 * never sent: it stands for "no error" where one is asked for. */
typedef Cms__V1__ErrorCode cms_cmd_code;
#define CMS_CMD_NO_ERROR CMS__V1__ERROR_CODE__UNSPECIFIED

#define CMS_CMD_ERRORS(X)                                                                          \
    X(CMS_CMD_OK, "ok")                                                                            \
    X(CMS_CMD_EINVAL, "invalid argument")                                                          \
    X(CMS_CMD_ENOMEM, "out of memory")                                                             \
    X(CMS_CMD_ESTATE, "not in a state that allows it")                                             \
    X(CMS_CMD_ENATS, "the subscription could not be made")

typedef enum { CMS_CMD_ERRORS(CMS_ENUM_ITEM) CMS_CMD_NERRORS } cms_cmd_err;
const char *cms_cmd_strerror(cms_cmd_err e);

#define CMS_CMD_REQUEST_ID_HEADER "Cms-Request-Id"
#define CMS_CMD_REQUEST_ID_MAX 128

typedef struct cms_cmd_options {
    const char *service; /* "identity" -> <prefix>.identity.<verb> (required) */
    const char *prefix;  /* subject root; NULL: "cms.cmd" */
    cms_pg *pg;          /* stores request_id replies; NULL: not stored */
    cms_auth *auth;      /* resolves callers; NULL: no authentication (tests only) */
    /* When set (32 bytes, copied), stored replies are sealed with it
     * (XChaCha20-Poly1305): for services whose replies may carry a secret
     * shown once, so that command_replies never holds it in clear. The
     * seal is bound to its row (service, caller, verb, request_id): a
     * sealed reply copied to another row does not open, and a retry that
     * finds one is answered FAILED_PRECONDITION (use a new request_id). */
    const uint8_t *reply_seal_key;
    int64_t deadline_ms;      /* default 10000 */
    size_t max_inflight;      /* default 1024 */
    size_t max_request_bytes; /* on the wire; default 64 KiB */
    size_t max_decoded_bytes; /* what decoding one may take; default 4 x max_request_bytes */
    /* Stored replies of request_ids older than this are deleted (checked
     * every prune_interval_ms): a retry must come within the retention. */
    int64_t reply_retention_ms; /* default 24 h */
    int64_t prune_interval_ms;  /* default 10 min */
} cms_cmd_options;

/* The handler owns req until it answers with cms_cmd_reply or cms_cmd_fail,
 * exactly once, now or from a later callback. */
typedef void (*cms_cmd_handler)(void *arg, cms_cmd_req *req);

cms_cmd_err cms_cmd_create(uv_loop_t *loop, cms_nats *nats, const cms_cmd_options *o, cms_cmd **out)
    __attribute__((warn_unused_result));
/* verb: [a-z_]+. request: the message type the body must decode as. */
cms_cmd_err cms_cmd_register(cms_cmd *c, const char *verb,
                             const ProtobufCMessageDescriptor *request, cms_cmd_handler fn,
                             void *arg) __attribute__((warn_unused_result));
/* A verb that needs no caller (authenticate itself): no key is asked for,
 * and cms_cmd_req_principal is NULL. */
cms_cmd_err cms_cmd_register_open(cms_cmd *c, const char *verb,
                                  const ProtobufCMessageDescriptor *request, cms_cmd_handler fn,
                                  void *arg) __attribute__((warn_unused_result));
/* The same as options.reply_seal_key, for a server already created (before
 * cms_cmd_start). */
void cms_cmd_seal_replies(cms_cmd *c, const uint8_t key[32]);
cms_cmd_err cms_cmd_start(cms_cmd *c) __attribute__((warn_unused_result));
size_t cms_cmd_inflight(const cms_cmd *c);

/* The decoded body (owned by req). */
const ProtobufCMessage *cms_cmd_req_body(const cms_cmd_req *req);
const char *cms_cmd_req_verb(const cms_cmd_req *req);
const char *cms_cmd_req_header(const cms_cmd_req *req, const char *key);
/* The key of "Authorization: Bearer <key>", or NULL if absent or malformed. */
const char *cms_cmd_req_bearer(const cms_cmd_req *req);
const char *cms_cmd_req_request_id(const cms_cmd_req *req); /* NULL if none */
/* The acting identity; NULL for an open verb or without an authenticator. */
const cms_principal *cms_cmd_req_principal(const cms_cmd_req *req);
/* Free per-request slot for the handler's own state. */
void cms_cmd_req_set_data(cms_cmd_req *req, void *data);
void *cms_cmd_req_data(const cms_cmd_req *req);

/* A job for the handler's change: when the request carries a request_id,
 * it starts with the claim of that request_id (lead statements: the
 * handler's own statements keep their result indices). NULL: no memory. */
cms_pg_job *cms_cmd_job_new(cms_cmd_req *req);
/* Submits a job of cms_cmd_job_new, taking it (clears *job) in every case;
 * done(arg, err, res) as for cms_pg_submit. When another attempt with this
 * request_id claimed it first, the job fails (done sees CMS_PG_ESQL, and
 * nothing of it was written) and whatever the handler then answers is
 * replaced by that attempt's reply. Returns what cms_pg_submit returns
 * (done not called unless CMS_PG_OK). */
cms_pg_err cms_cmd_submit(cms_cmd_req *req, cms_pg_job **job, cms_pg_done_cb done, void *arg)
    __attribute__((warn_unused_result));

void cms_cmd_reply(cms_cmd_req *req, const ProtobufCMessage *result);
void cms_cmd_fail(cms_cmd_req *req, cms_cmd_code code, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Answers a database failure of the handler's job: the code of
 * cms_cmd_code_for_pg and "<what> failed" (with ": the database is
 * unavailable; retry" for UNAVAILABLE). An INTERNAL one is logged with its
 * SQLSTATE and message, which never go to the caller. */
void cms_cmd_fail_pg(cms_cmd_req *req, cms_pg_err err, const cms_pg_result *res, const char *what);

/* Who acts: the principal's identity, or the system actor (bus.h) for an
 * open verb or a server without an authenticator. */
const char *cms_cmd_req_actor(const cms_cmd_req *req);
/* The principal has the role "admin" or "auditor": it reads everything. */
bool cms_cmd_req_sees_all(const cms_cmd_req *req);
/* Submits a read job of the handler (taken in every case); false after
 * answering req with the database's failure. */
bool cms_cmd_run_read(cms_cmd_req *req, cms_pg *pg, cms_pg_job *job, cms_pg_done_cb done,
                      void *arg);
/* Answers a list verb with one page of keyset pagination: the rows of r
 * (a query that asked for limit + 1) as items of the page message
 * page_desc's repeated message field items_field, each filled by
 * row(r, i, item) (which initialises it; strings may point into r), at most
 * limit of them; when r holds a row beyond them, the page's string field
 * "next" is the last item's "id" (the caller's `after` for the next page).
 * The page and items live for the call only. */
void cms_cmd_reply_page(cms_cmd_req *req, const PGresult *r, int limit,
                        const ProtobufCMessageDescriptor *page_desc, const char *items_field,
                        void (*row)(const PGresult *r, int i, void *item));
/* Submits the read job of a list verb (taken in every case) to pg and
 * answers req with its first result as cms_cmd_reply_page does, or with
 * the database's failure. */
void cms_cmd_run_page(cms_cmd_req *req, cms_pg *pg, cms_pg_job *job, int limit,
                      const ProtobufCMessageDescriptor *page_desc, const char *items_field,
                      void (*row)(const PGresult *r, int i, void *item));
/* The one mapping from database outcomes to wire codes: unique violation ->
 * ALREADY_EXISTS, foreign key -> NOT_FOUND, check/data errors ->
 * INVALID_ARGUMENT, serialization and connection trouble -> UNAVAILABLE,
 * anything else -> INTERNAL; CMS_PG_OK -> CMS_CMD_NO_ERROR. sqlstate may be
 * NULL. */
cms_cmd_code cms_cmd_code_for_pg(cms_pg_err err, const char *sqlstate);
const char *cms_cmd_code_name(cms_cmd_code code);

/* Deletes this service's stored replies older than the retention now (the
 * timer does it every prune_interval_ms); done(arg, rows removed or -1) on
 * the loop, if given. */
void cms_cmd_prune(cms_cmd *c, void (*done)(void *arg, long removed), void *arg);

/* Unsubscribes, answers nothing new, waits for running handlers (until their
 * deadlines), then calls closed(arg). */
void cms_cmd_close(cms_cmd *c, void (*closed)(void *arg), void *arg);
void cms_cmd_destroy(cms_cmd *c); /* after closed; NULL-safe */

#endif
