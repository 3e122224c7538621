/* Command server; see cmd.h.
 *
 * A request's life: RECEIVED -> (LOOKUP, if it has a request_id and a
 * database) -> HANDLING -> (STORING, if its reply is kept) -> freed.
 * EXPIRED is HANDLING after the deadline answered for the handler: the
 * request stays allocated until the handler replies, since it holds it. */
#include "cmd.h"

#include "log.h"
#include "metrics.h"

#include <ctype.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define DEFAULT_DEADLINE_MS 10000
#define DEFAULT_MAX_INFLIGHT 1024
#define DEFAULT_MAX_REQUEST (1024 * 1024)
#define MAX_VERBS 64
#define MAX_WAITERS 8
#define DEFAULT_RETENTION_MS (24 * 3600 * 1000LL)
#define DEFAULT_PRUNE_MS (10 * 60 * 1000LL)

static const char SQL_LOOKUP[] =
    "SELECT reply FROM command_replies WHERE service = $1 AND request_id = $2";
static const char SQL_PRUNE[] = "DELETE FROM command_replies WHERE service = $1 AND "
                                "created_at < now() - $2::bigint * interval '1 millisecond'";
static const char SQL_STORE[] = "INSERT INTO command_replies (service, request_id, reply) "
                                "VALUES ($1, $2, $3) ON CONFLICT DO NOTHING";

typedef struct verb {
    char name[40];
    const ProtobufCMessageDescriptor *desc;
    cms_cmd_handler fn;
    void *arg;
    bool open; /* no caller needed */
} verb;

typedef enum {
    REQ_RECEIVED,
    REQ_AUTH,
    REQ_LOOKUP,
    REQ_HANDLING,
    REQ_EXPIRED,
    REQ_STORING
} req_state;

struct cms_cmd_req {
    cms_cmd *c;
    req_state state;
    cms_nats_msg *msg;
    const verb *v;
    ProtobufCMessage *body;
    char request_id[CMS_CMD_REQUEST_ID_MAX + 1];
    /* the stored key: "<caller's identity id>/<request_id>", or the
     * request_id alone without a caller */
    char reply_key[CMS_UUID_STRLEN + 2 + CMS_CMD_REQUEST_ID_MAX];
    bool has_request_id;
    cms_principal principal;
    bool has_principal;
    char *waiters[MAX_WAITERS]; /* reply subjects: the request's and its repeats' */
    size_t nwaiters;
    size_t nanswered; /* waiters the deadline already answered */
    bool handler_ran; /* so its reply is the command's outcome, even past the deadline */
    uv_timer_t deadline;
    uint64_t received_ns;
    void *data;      /* the handler's */
    uint8_t *packed; /* the reply, kept while it is being stored */
    size_t packed_len;
    struct cms_cmd_req *prev, *next;
};

typedef enum { CMD_NEW, CMD_RUNNING, CMD_CLOSING, CMD_CLOSED } cmd_state;

struct cms_cmd {
    uv_loop_t *loop;
    cms_nats *nats;
    cms_cmd_options o;
    char service[64];
    char root[96];    /* "cms.cmd" */
    char prefix[192]; /* "<root>.<service>." */
    cmd_state state;
    verb verbs[MAX_VERBS];
    size_t nverbs;
    cms_nats_sub *sub;
    cms_cmd_req *reqs; /* every live request */
    size_t live;
    void (*closed)(void *arg);
    void *closed_arg;
    cms_counter *m_requests, *m_errors;
    cms_histogram *m_latency;
    uint8_t seal_key[crypto_secretbox_KEYBYTES];
    bool seal;
    uv_timer_t prune;
    bool prune_open;    /* the prune timer exists and is not closed yet */
    int prunes_running; /* prune jobs not yet answered */
};

const char *cms_cmd_code_name(cms_cmd_code code)
{
    switch (code) {
    case CMS__V1__ERROR_CODE__OK:
        return "OK";
    case CMS__V1__ERROR_CODE__INVALID_ARGUMENT:
        return "INVALID_ARGUMENT";
    case CMS__V1__ERROR_CODE__NOT_FOUND:
        return "NOT_FOUND";
    case CMS__V1__ERROR_CODE__ALREADY_EXISTS:
        return "ALREADY_EXISTS";
    case CMS__V1__ERROR_CODE__FAILED_PRECONDITION:
        return "FAILED_PRECONDITION";
    case CMS__V1__ERROR_CODE__PERMISSION_DENIED:
        return "PERMISSION_DENIED";
    case CMS__V1__ERROR_CODE__UNAVAILABLE:
        return "UNAVAILABLE";
    case CMS__V1__ERROR_CODE__INTERNAL:
        return "INTERNAL";
    case _CMS__V1__ERROR_CODE_IS_INT_SIZE:
        break;
    }
    return "INTERNAL";
}

cms_cmd_code cms_cmd_code_for_pg(cms_pg_err err, const char *sqlstate)
{
    switch (err) {
    case CMS_PG_OK:
        return CMS__V1__ERROR_CODE__OK;
    case CMS_PG_EBUSY:
    case CMS_PG_EUNAVAILABLE:
    case CMS_PG_ECONN:
    case CMS_PG_ECLOSED:
        return CMS__V1__ERROR_CODE__UNAVAILABLE;
    case CMS_PG_EINVAL:
    case CMS_PG_ENOMEM:
        return CMS__V1__ERROR_CODE__INTERNAL;
    case CMS_PG_ESQL:
        break;
    }
    if (sqlstate == NULL || strlen(sqlstate) != 5)
        return CMS__V1__ERROR_CODE__INTERNAL;
    if (strcmp(sqlstate, "23505") == 0)
        return CMS__V1__ERROR_CODE__ALREADY_EXISTS;
    if (strcmp(sqlstate, "23503") == 0)
        return CMS__V1__ERROR_CODE__NOT_FOUND;
    if (strncmp(sqlstate, "22", 2) == 0 || strcmp(sqlstate, "23514") == 0 ||
        strcmp(sqlstate, "23502") == 0)
        return CMS__V1__ERROR_CODE__INVALID_ARGUMENT;
    /* serialization failure, deadlock, cancel/timeout, shutdown, connection */
    if (strcmp(sqlstate, "40001") == 0 || strcmp(sqlstate, "40P01") == 0 ||
        strcmp(sqlstate, "57014") == 0 || strncmp(sqlstate, "57P", 3) == 0 ||
        strncmp(sqlstate, "08", 2) == 0 || strncmp(sqlstate, "53", 2) == 0)
        return CMS__V1__ERROR_CODE__UNAVAILABLE;
    return CMS__V1__ERROR_CODE__INTERNAL;
}

/* ---- requests ---- */

static void maybe_closed(cms_cmd *c)
{
    if (c->state == CMD_CLOSING && c->live == 0 && !c->prune_open && c->prunes_running == 0) {
        c->state = CMD_CLOSED;
        cms_log_info("command server closed", "{s:s}", "service", c->service);
        if (c->closed)
            c->closed(c->closed_arg);
    }
}

static void req_closed(uv_handle_t *h)
{
    cms_cmd_req *r = h->data;
    cms_cmd *c = r->c;
    if (r->body)
        protobuf_c_message_free_unpacked(r->body, NULL);
    cms_nats_msg_destroy(r->msg);
    if (r->packed && c->seal)
        sodium_memzero(r->packed, r->packed_len);
    free(r->packed);
    for (size_t i = 0; i < r->nwaiters; i++)
        free(r->waiters[i]);
    free(r);
    c->live--;
    maybe_closed(c);
}

static void req_free(cms_cmd_req *r)
{
    cms_cmd *c = r->c;
    if (r->prev)
        r->prev->next = r->next;
    else
        c->reqs = r->next;
    if (r->next)
        r->next->prev = r->prev;
    r->prev = r->next = NULL;
    uv_close((uv_handle_t *)&r->deadline, req_closed);
}

static void send_to_waiters(cms_cmd_req *r, const uint8_t *buf, size_t len)
{
    for (size_t i = r->nanswered; i < r->nwaiters; i++) {
        cms_nats_err e = cms_nats_publish(r->c->nats, r->waiters[i], NULL, buf, len);
        if (e != CMS_NATS_OK)
            cms_log_warn("command reply not sent", "{s:s, s:s}", "verb", r->v ? r->v->name : "",
                         "error", cms_nats_strerror(e));
    }
}

static uint8_t *pack_reply(const Cms__V1__Reply *rep, size_t *len)
{
    *len = protobuf_c_message_get_packed_size(&rep->base);
    uint8_t *buf = malloc(*len ? *len : 1);
    if (buf)
        protobuf_c_message_pack(&rep->base, buf);
    return buf;
}

static void stored(void *arg, cms_pg_err err, const cms_pg_result *res)
{
    cms_cmd_req *r = arg;
    if (err != CMS_PG_OK)
        cms_log_warn("command reply not stored", "{s:s, s:s, s:s}", "verb", r->v->name, "error",
                     cms_pg_strerror(err), "detail", res ? cms_pg_result_message(res) : "");
    send_to_waiters(r, r->packed, r->packed_len);
    req_free(r);
}

static bool should_store(const cms_cmd_req *r, cms_cmd_code code)
{
    return r->has_request_id && r->c->o.pg && code != CMS__V1__ERROR_CODE__UNAVAILABLE &&
           code != CMS__V1__ERROR_CODE__INTERNAL;
}

/* Sends (and, for a request_id, first stores) a packed Reply; frees r. */
static void finish(cms_cmd_req *r, uint8_t *buf, size_t len, cms_cmd_code code)
{
    cms_cmd *c = r->c;
    uv_timer_stop(&r->deadline);
    cms_counter_add(c->m_requests, 1);
    cms_histogram_observe(c->m_latency, (double)(uv_hrtime() - r->received_ns) / 1e9);
    if (code != CMS__V1__ERROR_CODE__OK)
        cms_counter_add(c->m_errors, 1);
    uint8_t *sealed = NULL;
    size_t slen = len;
    if (buf && should_store(r, code) && c->seal) {
        /* nonce, then the box */
        slen = crypto_secretbox_NONCEBYTES + crypto_secretbox_MACBYTES + len;
        sealed = malloc(slen);
        if (sealed) {
            randombytes_buf(sealed, crypto_secretbox_NONCEBYTES);
            crypto_secretbox_easy(sealed + crypto_secretbox_NONCEBYTES, buf, len, sealed,
                                  c->seal_key);
        }
    }
    if (buf && should_store(r, code) && (!c->seal || sealed)) {
        cms_pg_job *job = cms_pg_job_new();
        const char *v[] = {c->service, r->reply_key, (const char *)(sealed ? sealed : buf)};
        int lengths[] = {0, 0, (int)slen}, formats[] = {0, 0, 1};
        /* answered only once stored, so a retry after the answer finds it */
        if (job && cms_pg_job_sql(job, SQL_STORE, 3, v, lengths, formats) == CMS_PG_OK) {
            r->packed = buf;
            r->packed_len = len;
            r->state = REQ_STORING;
            if (cms_pg_submit(c->o.pg, &job, stored, r) == CMS_PG_OK) {
                free(sealed);
                return;
            }
            r->packed = NULL;
        }
        cms_pg_job_free(job);
        cms_log_warn("command reply not stored", "{s:s}", "verb", r->v->name);
    }
    free(sealed);
    if (buf)
        send_to_waiters(r, buf, len);
    if (buf && c->seal)
        sodium_memzero(buf, len); /* it may hold a secret shown once */
    free(buf);
    req_free(r);
}

/* A packed Reply carrying an error (malloc'd; NULL when out of memory). */
static uint8_t *pack_error(cms_cmd_code code, const char *field, const char *msg, size_t *len)
{
    Cms__V1__Error e = CMS__V1__ERROR__INIT;
    e.code = code;
    e.message = (char *)msg;
    e.field = (char *)(field ? field : "");
    Cms__V1__Reply rep = CMS__V1__REPLY__INIT;
    rep.outcome_case = CMS__V1__REPLY__OUTCOME_ERROR;
    rep.error = &e;
    return pack_reply(&rep, len);
}

static void reply_error(cms_cmd_req *r, cms_cmd_code code, const char *field, const char *msg)
{
    size_t len;
    uint8_t *buf = pack_error(code, field, msg, &len);
    cms_log(code == CMS__V1__ERROR_CODE__INTERNAL ? CMS_LOG_ERROR : CMS_LOG_INFO, "command failed",
            "{s:s, s:s, s:s, s:s, s:s}", "service", r->c->service, "verb", r->v ? r->v->name : "",
            "code", cms_cmd_code_name(code), "field", field ? field : "", "message", msg);
    finish(r, buf, len, code);
}

void cms_cmd_fail(cms_cmd_req *r, cms_cmd_code code, const char *field, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (code == CMS__V1__ERROR_CODE__OK)
        code = CMS__V1__ERROR_CODE__INTERNAL;
    if (r->state == REQ_EXPIRED && !r->has_request_id) {
        req_free(r); /* the deadline already answered, and nobody can ask again */
        return;
    }
    reply_error(r, code, field, msg);
}

void cms_cmd_reply(cms_cmd_req *r, const ProtobufCMessage *result)
{
    if (r->state == REQ_EXPIRED && !r->has_request_id) {
        req_free(r); /* the deadline already answered, and nobody can ask again */
        return;
    }
    size_t rlen = result ? protobuf_c_message_get_packed_size(result) : 0;
    uint8_t *rbuf = malloc(rlen ? rlen : 1);
    if (rbuf == NULL) {
        reply_error(r, CMS__V1__ERROR_CODE__INTERNAL, NULL, "out of memory");
        return;
    }
    if (result)
        protobuf_c_message_pack(result, rbuf);
    Cms__V1__Reply rep = CMS__V1__REPLY__INIT;
    rep.outcome_case = CMS__V1__REPLY__OUTCOME_RESULT;
    rep.result.data = rbuf;
    rep.result.len = rlen;
    size_t len;
    uint8_t *buf = pack_reply(&rep, &len);
    if (r->c->seal)
        sodium_memzero(rbuf, rlen);
    free(rbuf);
    finish(r, buf, len, CMS__V1__ERROR_CODE__OK);
}

static void deadline_passed(uv_timer_t *t)
{
    cms_cmd_req *r = t->data;
    if (r->state != REQ_HANDLING && r->state != REQ_LOOKUP && r->state != REQ_AUTH)
        return;
    size_t len;
    uint8_t *buf = pack_error(CMS__V1__ERROR_CODE__UNAVAILABLE, NULL,
                              "the service did not answer in time; retry (with the same "
                              "request_id)",
                              &len);
    if (buf)
        send_to_waiters(r, buf, len);
    free(buf);
    r->nanswered = r->nwaiters;
    cms_counter_add(r->c->m_errors, 1);
    cms_log_warn("command deadline passed", "{s:s, s:s}", "service", r->c->service, "verb",
                 r->v ? r->v->name : "");
    /* the handler (or the lookup or authentication) still holds r. A
     * handler's late answer is still the command's outcome: it is stored
     * for the request_id and sent to retries that joined meanwhile, so a
     * retry never runs the command twice. */
    r->state = REQ_EXPIRED;
}

static void run_handler(cms_cmd_req *r)
{
    r->state = REQ_HANDLING;
    r->handler_ran = true;
    r->v->fn(r->v->arg, r);
}

static void looked_up(void *arg, cms_pg_err err, const cms_pg_result *res)
{
    cms_cmd_req *r = arg;
    if (r->state == REQ_EXPIRED) {
        req_free(r);
        return;
    }
    if (err != CMS_PG_OK) {
        reply_error(r, cms_cmd_code_for_pg(err, res ? cms_pg_result_sqlstate(res) : NULL), NULL,
                    "could not check request_id; retry");
        return;
    }
    const PGresult *pr = cms_pg_result_get(res, 0);
    if (pr && PQntuples(pr) == 1) {
        /* answered before: the stored reply, and no second run */
        const uint8_t *stored_reply = (const uint8_t *)PQgetvalue(pr, 0, 0);
        size_t len = (size_t)PQgetlength(pr, 0, 0);
        uint8_t *buf = malloc(len + 1);
        if (buf && r->c->seal) {
            size_t over = crypto_secretbox_NONCEBYTES + crypto_secretbox_MACBYTES;
            if (len < over ||
                crypto_secretbox_open_easy(buf, stored_reply + crypto_secretbox_NONCEBYTES,
                                           len - crypto_secretbox_NONCEBYTES, stored_reply,
                                           r->c->seal_key) != 0) {
                free(buf);
                reply_error(r, CMS__V1__ERROR_CODE__INTERNAL, NULL,
                            "the stored reply of this request_id cannot be opened");
                return;
            }
            len -= over;
        } else if (buf) {
            memcpy(buf, stored_reply, len);
        }
        if (buf == NULL) {
            reply_error(r, CMS__V1__ERROR_CODE__INTERNAL, NULL, "out of memory");
            return;
        }
        r->has_request_id = false; /* already stored */
        finish(r, buf, len, CMS__V1__ERROR_CODE__OK);
        return;
    }
    run_handler(r);
}

static cms_cmd_req *find_running(cms_cmd *c, const char *reply_key)
{
    for (cms_cmd_req *r = c->reqs; r; r = r->next)
        if (r->has_request_id && (r->state != REQ_EXPIRED || r->handler_ran) &&
            strcmp(r->reply_key, reply_key) == 0)
            return r;
    return NULL;
}

static const verb *find_verb(const cms_cmd *c, const char *name)
{
    for (size_t i = 0; i < c->nverbs; i++)
        if (strcmp(c->verbs[i].name, name) == 0)
            return &c->verbs[i];
    return NULL;
}

static bool valid_request_id(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > CMS_CMD_REQUEST_ID_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isgraph((unsigned char)s[i]))
            return false;
    return true;
}

/* The request's caller is known (or none is needed): its request_id, then
 * its handler. */
static void after_auth(cms_cmd_req *r)
{
    cms_cmd *c = r->c;
    const char *rid = cms_nats_msg_header(r->msg, CMS_CMD_REQUEST_ID_HEADER);
    /* With authentication, replies are kept per caller: a request without
     * one (an open verb) neither stores nor finds a reply, or anyone could
     * read another caller's by naming its request_id. */
    if (rid == NULL || (c->o.auth && !r->has_principal)) {
        run_handler(r);
        return;
    }
    if (!valid_request_id(rid)) {
        reply_error(r, CMS__V1__ERROR_CODE__INVALID_ARGUMENT, CMS_CMD_REQUEST_ID_HEADER,
                    "request_id must be 1 to 128 printable characters");
        return;
    }
    snprintf(r->request_id, sizeof r->request_id, "%s", rid);
    snprintf(r->reply_key, sizeof r->reply_key, "%s%s%s",
             r->has_principal ? r->principal.identity_id : "", r->has_principal ? "/" : "", rid);
    cms_cmd_req *first = find_running(c, r->reply_key);
    if (first && first->nwaiters < MAX_WAITERS) {
        /* a retry while the first is running: answer both with one reply */
        first->waiters[first->nwaiters++] = r->waiters[0];
        r->waiters[0] = NULL;
        r->nwaiters = 0;
        req_free(r);
        return;
    }
    r->has_request_id = true;
    if (c->o.pg == NULL) {
        run_handler(r);
        return;
    }
    cms_pg_job *job = cms_pg_job_new();
    const char *v[] = {c->service, r->reply_key};
    if (job == NULL || cms_pg_job_sql(job, SQL_LOOKUP, 2, v, NULL, NULL) != CMS_PG_OK) {
        cms_pg_job_free(job);
        reply_error(r, CMS__V1__ERROR_CODE__INTERNAL, NULL, "out of memory");
        return;
    }
    cms_pg_job_binary_results(job);
    r->state = REQ_LOOKUP;
    cms_pg_err err = cms_pg_submit(c->o.pg, &job, looked_up, r);
    if (err != CMS_PG_OK)
        reply_error(r, cms_cmd_code_for_pg(err, NULL), NULL, "database busy; retry");
}

static void authenticated(void *arg, Cms__V1__ErrorCode code, const cms_principal *p)
{
    cms_cmd_req *r = arg;
    if (r->state == REQ_EXPIRED) {
        req_free(r);
        return;
    }
    if (code != CMS__V1__ERROR_CODE__OK || p == NULL) {
        if (code == CMS__V1__ERROR_CODE__UNAVAILABLE)
            reply_error(r, code, NULL, "the caller could not be authenticated now; retry");
        else
            reply_error(r, CMS__V1__ERROR_CODE__PERMISSION_DENIED, "Authorization",
                        "the API key is not accepted");
        return;
    }
    r->principal = *p;
    r->has_principal = true;
    after_auth(r);
}

/* Every request comes here, on the loop. */
static void on_request(void *arg, cms_nats_msg *m)
{
    cms_cmd *c = arg;
    const char *reply = cms_nats_msg_reply(m);
    if (reply == NULL || *reply == '\0') {
        /* nobody to answer: a request must be a request */
        cms_nats_msg_destroy(m);
        return;
    }
    cms_cmd_req *r = calloc(1, sizeof *r);
    if (r == NULL || (r->waiters[0] = strdup(reply)) == NULL) {
        free(r);
        cms_nats_msg_destroy(m);
        return;
    }
    r->nwaiters = 1;
    r->received_ns = uv_hrtime();
    r->c = c;
    r->msg = m;
    r->state = REQ_RECEIVED;
    uv_timer_init(c->loop, &r->deadline);
    r->deadline.data = r;
    r->next = c->reqs;
    if (c->reqs)
        c->reqs->prev = r;
    c->reqs = r;
    c->live++;

    const char *subject = cms_nats_msg_subject(m);
    size_t plen = strlen(c->prefix);
    const char *vname = strncmp(subject, c->prefix, plen) == 0 ? subject + plen : "";
    r->v = find_verb(c, vname);
    if (c->state != CMD_RUNNING) {
        reply_error(r, CMS__V1__ERROR_CODE__UNAVAILABLE, NULL, "the service is shutting down");
        return;
    }
    if (c->live > c->o.max_inflight) {
        reply_error(r, CMS__V1__ERROR_CODE__UNAVAILABLE, NULL,
                    "too many requests in flight; retry later");
        return;
    }
    if (r->v == NULL) {
        char msg[160];
        snprintf(msg, sizeof msg, "unknown command '%.60s' for service %s", vname, c->service);
        reply_error(r, CMS__V1__ERROR_CODE__INVALID_ARGUMENT, "verb", msg);
        return;
    }
    if (cms_nats_msg_len(m) > c->o.max_request_bytes) {
        reply_error(r, CMS__V1__ERROR_CODE__INVALID_ARGUMENT, "body", "request is too large");
        return;
    }
    r->body =
        protobuf_c_message_unpack(r->v->desc, NULL, cms_nats_msg_len(m), cms_nats_msg_data(m));
    if (r->body == NULL) {
        char msg[160];
        snprintf(msg, sizeof msg, "the request body is not a valid %s", r->v->desc->name);
        reply_error(r, CMS__V1__ERROR_CODE__INVALID_ARGUMENT, "body", msg);
        return;
    }
    uv_timer_start(&r->deadline, deadline_passed, (uint64_t)c->o.deadline_ms, 0);
    if (c->o.auth == NULL || r->v->open) {
        after_auth(r);
        return;
    }
    const char *key = cms_cmd_req_bearer(r);
    if (key == NULL) {
        reply_error(r, CMS__V1__ERROR_CODE__PERMISSION_DENIED, "Authorization",
                    "no API key: send the header \"Authorization: Bearer <key>\"");
        return;
    }
    r->state = REQ_AUTH;
    cms_auth_resolve(c->o.auth, key, authenticated, r);
}

/* ---- accessors ---- */

const ProtobufCMessage *cms_cmd_req_body(const cms_cmd_req *r)
{
    return r->body;
}

const char *cms_cmd_req_verb(const cms_cmd_req *r)
{
    return r->v ? r->v->name : "";
}

const char *cms_cmd_req_header(const cms_cmd_req *r, const char *key)
{
    return cms_nats_msg_header(r->msg, key);
}

const char *cms_cmd_req_bearer(const cms_cmd_req *r)
{
    const char *h = cms_nats_msg_header(r->msg, "Authorization");
    if (h == NULL || strncasecmp(h, "Bearer ", 7) != 0)
        return NULL;
    h += 7;
    while (*h == ' ')
        h++;
    if (*h == '\0')
        return NULL;
    for (const char *p = h; *p; p++)
        if (!isgraph((unsigned char)*p))
            return NULL;
    return h;
}

const char *cms_cmd_req_request_id(const cms_cmd_req *r)
{
    return r->request_id[0] ? r->request_id : NULL;
}

const cms_principal *cms_cmd_req_principal(const cms_cmd_req *r)
{
    return r->has_principal ? &r->principal : NULL;
}

void cms_cmd_req_set_data(cms_cmd_req *r, void *data)
{
    r->data = data;
}

void *cms_cmd_req_data(const cms_cmd_req *r)
{
    return r->data;
}

size_t cms_cmd_inflight(const cms_cmd *c)
{
    return c->live;
}

/* ---- server ---- */

int cms_cmd_create(uv_loop_t *loop, cms_nats *nats, const cms_cmd_options *o, cms_cmd **out)
{
    if (loop == NULL || nats == NULL || o == NULL || o->service == NULL || out == NULL ||
        strlen(o->service) == 0 || strlen(o->service) >= 64 || strpbrk(o->service, ".*> ") ||
        (o->prefix && (strlen(o->prefix) >= 96 || strpbrk(o->prefix, "*> "))))
        return CMS_NATS_EINVAL;
    cms_cmd *c = calloc(1, sizeof *c);
    if (c == NULL)
        return CMS_NATS_ENOMEM;
    c->loop = loop;
    c->nats = nats;
    c->o = *o;
    snprintf(c->service, sizeof c->service, "%s", o->service);
    c->o.service = c->service;
    if (o->reply_seal_key) {
        memcpy(c->seal_key, o->reply_seal_key, sizeof c->seal_key);
        c->seal = true;
        c->o.reply_seal_key = c->seal_key;
    }
    snprintf(c->root, sizeof c->root, "%s", o->prefix && *o->prefix ? o->prefix : "cms.cmd");
    c->o.prefix = c->root;
    snprintf(c->prefix, sizeof c->prefix, "%s.%s.", c->root, c->service);
    if (c->o.deadline_ms <= 0)
        c->o.deadline_ms = DEFAULT_DEADLINE_MS;
    if (c->o.max_inflight == 0)
        c->o.max_inflight = DEFAULT_MAX_INFLIGHT;
    if (c->o.max_request_bytes == 0)
        c->o.max_request_bytes = DEFAULT_MAX_REQUEST;
    if (c->o.reply_retention_ms <= 0)
        c->o.reply_retention_ms = DEFAULT_RETENTION_MS;
    if (c->o.prune_interval_ms <= 0)
        c->o.prune_interval_ms = DEFAULT_PRUNE_MS;
    char labels[96];
    snprintf(labels, sizeof labels, "service=\"%s\"", c->service);
    cms_metrics *m = cms_metrics_default();
    c->m_requests = cms_metrics_counter(m, "cms_commands_total", "commands answered", labels);
    c->m_errors = cms_metrics_counter(m, "cms_command_errors_total",
                                      "commands answered with an error", labels);
    c->m_latency = cms_metrics_histogram(
        m, "cms_command_seconds", "time from a request's arrival to its answer", labels, NULL, 0);
    *out = c;
    return CMS_NATS_OK;
}

static int add_verb(cms_cmd *c, const char *verb_name, const ProtobufCMessageDescriptor *request,
                    cms_cmd_handler fn, void *arg, bool open)
{
    if (c == NULL || verb_name == NULL || request == NULL || fn == NULL || c->nverbs == MAX_VERBS ||
        strlen(verb_name) == 0 || strlen(verb_name) >= 40 || find_verb(c, verb_name))
        return CMS_NATS_EINVAL;
    for (const char *p = verb_name; *p; p++)
        if (!(islower((unsigned char)*p) || *p == '_'))
            return CMS_NATS_EINVAL;
    verb *v = &c->verbs[c->nverbs++];
    snprintf(v->name, sizeof v->name, "%s", verb_name);
    v->desc = request;
    v->fn = fn;
    v->arg = arg;
    v->open = open;
    return CMS_NATS_OK;
}

int cms_cmd_register(cms_cmd *c, const char *verb_name, const ProtobufCMessageDescriptor *request,
                     cms_cmd_handler fn, void *arg)
{
    return add_verb(c, verb_name, request, fn, arg, false);
}

int cms_cmd_register_open(cms_cmd *c, const char *verb_name,
                          const ProtobufCMessageDescriptor *request, cms_cmd_handler fn, void *arg)
{
    return add_verb(c, verb_name, request, fn, arg, true);
}

/* ---- pruning stored replies ---- */

typedef struct prune_job {
    cms_cmd *c;
    void (*done)(void *arg, long removed);
    void *arg;
} prune_job;

static void pruned(void *arg, cms_pg_err err, const cms_pg_result *res)
{
    prune_job *p = arg;
    cms_cmd *c = p->c;
    long removed = -1;
    if (err == CMS_PG_OK) {
        removed = strtol(PQcmdTuples((PGresult *)cms_pg_result_get(res, 0)), NULL, 10);
        if (removed > 0)
            cms_log_info("command replies pruned", "{s:s, s:i}", "service", c->service, "rows",
                         (int)removed);
    } else {
        cms_log_warn("command replies not pruned", "{s:s, s:s}", "service", c->service, "error",
                     cms_pg_strerror(err));
    }
    if (p->done)
        p->done(p->arg, removed);
    free(p);
    c->prunes_running--;
    maybe_closed(c);
}

void cms_cmd_prune(cms_cmd *c, void (*done)(void *arg, long removed), void *arg)
{
    prune_job *p = calloc(1, sizeof *p);
    cms_pg_job *job = cms_pg_job_new();
    char ms[24];
    snprintf(ms, sizeof ms, "%lld", (long long)c->o.reply_retention_ms);
    const char *v[] = {c->service, ms};
    if (c->o.pg == NULL || p == NULL || job == NULL ||
        cms_pg_job_sql(job, SQL_PRUNE, 2, v, NULL, NULL) != CMS_PG_OK)
        goto fail;
    *p = (prune_job){.c = c, .done = done, .arg = arg};
    if (cms_pg_submit(c->o.pg, &job, pruned, p) != CMS_PG_OK)
        goto fail;
    c->prunes_running++;
    return;
fail:
    cms_pg_job_free(job);
    free(p);
    if (done)
        done(arg, -1);
}

static void prune_fired(uv_timer_t *t)
{
    cms_cmd_prune(t->data, NULL, NULL);
}

static void prune_closed(uv_handle_t *h)
{
    cms_cmd *c = h->data;
    c->prune_open = false;
    maybe_closed(c);
}

int cms_cmd_start(cms_cmd *c)
{
    if (c == NULL || c->state != CMD_NEW)
        return CMS_NATS_EINVAL;
    char subject[200];
    snprintf(subject, sizeof subject, "%s*", c->prefix);
    int rc = cms_nats_subscribe(c->nats, subject, c->service, on_request, c, &c->sub);
    if (rc == 0 && c->o.pg) {
        uv_timer_init(c->loop, &c->prune);
        c->prune.data = c;
        c->prune_open = true;
        uv_timer_start(&c->prune, prune_fired, (uint64_t)c->o.prune_interval_ms,
                       (uint64_t)c->o.prune_interval_ms);
    }
    if (rc == 0) {
        c->state = CMD_RUNNING;
        cms_log_info("command server listening", "{s:s, s:i}", "subject", subject, "verbs",
                     (int)c->nverbs);
    }
    return rc;
}

void cms_cmd_close(cms_cmd *c, void (*closed)(void *arg), void *arg)
{
    if (c == NULL || c->state == CMD_CLOSING || c->state == CMD_CLOSED)
        return;
    c->closed = closed;
    c->closed_arg = arg;
    c->state = CMD_CLOSING;
    cms_nats_unsubscribe(c->sub);
    c->sub = NULL;
    if (c->prune_open)
        uv_close((uv_handle_t *)&c->prune, prune_closed);
    maybe_closed(c);
}

void cms_cmd_seal_replies(cms_cmd *c, const uint8_t key[32])
{
    memcpy(c->seal_key, key, sizeof c->seal_key);
    c->seal = true;
    c->o.reply_seal_key = c->seal_key;
}

void cms_cmd_destroy(cms_cmd *c)
{
    if (c)
        sodium_memzero(c->seal_key, sizeof c->seal_key);
    free(c);
}
