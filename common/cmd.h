/* The request–reply command server of one service.
 *
 * Subscribes to cms.cmd.<service>.* in queue group <service>, decodes each
 * request into the protobuf message its verb registered, and runs the verb's
 * handler on the loop. The reply is a cms.v1.Reply: the serialized result,
 * or a cms.v1.Error with a stable code, a human message and the field at
 * fault.
 *
 * Authentication: with an authenticator (options.auth), every request to a
 * verb not registered as open must carry "Authorization: Bearer <API key>";
 * the key is resolved to the acting identity (cms_cmd_req_principal) before
 * anything else happens. No key, or a key that is not accepted, is answered
 * PERMISSION_DENIED and nothing is done. Handlers decide what the
 * principal may do.
 *
 * request_id: a request carrying the header Cms-Request-Id is answered at
 * most once per (service, caller, request_id): one caller cannot read or
 * replay another's reply by guessing its request_id. A repeat while the first is running
 * waits for its reply; a repeat afterwards gets the stored reply (table
 * command_replies) without running the handler again. Replies with
 * UNAVAILABLE or INTERNAL are not stored, so a retry runs again.
 *
 * Every request has a deadline: a handler that has not replied by then is
 * answered UNAVAILABLE for it (its own late reply is then dropped). Requests
 * beyond max_inflight are answered UNAVAILABLE at once. */
#ifndef CMS_CMD_H
#define CMS_CMD_H

#include "auth.h"
#include "cms/v1/command.pb-c.h"
#include "nats.h"
#include "pg.h"

#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct cms_cmd cms_cmd;
typedef struct cms_cmd_req cms_cmd_req;
typedef Cms__V1__ErrorCode cms_cmd_code;

#define CMS_CMD_REQUEST_ID_HEADER "Cms-Request-Id"
#define CMS_CMD_REQUEST_ID_MAX 128

typedef struct cms_cmd_options {
    const char *service; /* "identity" -> cms.cmd.identity.<verb> (required) */
    const char *prefix;  /* subject root; NULL: "cms.cmd" */
    cms_pg *pg;          /* stores request_id replies; NULL: not stored */
    cms_auth *auth;      /* resolves callers; NULL: no authentication (tests only) */
    /* When set (32 bytes, copied), stored replies are sealed with it
     * (XSalsa20-Poly1305): for services whose replies may carry a secret
     * shown once, so that command_replies never holds it in clear. */
    const uint8_t *reply_seal_key;
    int64_t deadline_ms;      /* default 10000 */
    size_t max_inflight;      /* default 1024 */
    size_t max_request_bytes; /* default 1 MiB */
    /* Stored replies of request_ids older than this are deleted (checked
     * every prune_interval_ms): a retry must come within the retention. */
    int64_t reply_retention_ms; /* default 24 h */
    int64_t prune_interval_ms;  /* default 10 min */
} cms_cmd_options;

/* The handler owns req until it answers with cms_cmd_reply or cms_cmd_fail,
 * exactly once, now or from a later callback. */
typedef void (*cms_cmd_handler)(void *arg, cms_cmd_req *req);

int cms_cmd_create(uv_loop_t *loop, cms_nats *nats, const cms_cmd_options *o, cms_cmd **out)
    __attribute__((warn_unused_result));
/* verb: [a-z_]+. request: the message type the body must decode as. */
int cms_cmd_register(cms_cmd *c, const char *verb, const ProtobufCMessageDescriptor *request,
                     cms_cmd_handler fn, void *arg) __attribute__((warn_unused_result));
/* The same as options.reply_seal_key, for a server already created (before
 * cms_cmd_start). */
void cms_cmd_seal_replies(cms_cmd *c, const uint8_t key[32]);

/* A verb that needs no caller (authenticate itself): no key is asked for,
 * and cms_cmd_req_principal is NULL. */
int cms_cmd_register_open(cms_cmd *c, const char *verb, const ProtobufCMessageDescriptor *request,
                          cms_cmd_handler fn, void *arg) __attribute__((warn_unused_result));
int cms_cmd_start(cms_cmd *c) __attribute__((warn_unused_result));
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

void cms_cmd_reply(cms_cmd_req *req, const ProtobufCMessage *result);
void cms_cmd_fail(cms_cmd_req *req, cms_cmd_code code, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* The one mapping from database outcomes to wire codes: unique violation ->
 * ALREADY_EXISTS, foreign key -> NOT_FOUND, check/data errors ->
 * INVALID_ARGUMENT, serialization and connection trouble -> UNAVAILABLE,
 * anything else -> INTERNAL. sqlstate may be NULL. */
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
