/* Command server; see cmd.h.
 *
 * A request's life (REQ_STATES below): received; the caller resolved;
 * for a request_id, the stored reply looked up (and, while another
 * attempt's claim has no reply yet, looked up again until it has one);
 * the handler run; its reply stored; done. A request is freed in the close
 * callback of its timer, which is its deadline and, while it waits for
 * another attempt, the pace of its look-ups.
 *
 * Ownership: the handler holds a request from its call until it answers,
 * whatever else happens meanwhile (the deadline, a lost claim), so such a
 * request is only marked and is freed when the handler lets go. */
#include "cmd.h"

#include "bus.h"
#include "fsm.h"
#include "log.h"
#include "metrics.h"
#include "pbarena.h"
#include "pbtext.h"

#include <ctype.h>
#include <endian.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define DEFAULT_DEADLINE_MS 10000
#define DEFAULT_MAX_INFLIGHT 1024
#define DEFAULT_MAX_REQUEST (64 * 1024)
#define MAX_VERBS 64
#define VERB_MAX 40
/* repeats of one request joined in memory; more take the database's path */
#define MAX_WAITERS 64
#define DEFAULT_RETENTION_MS (24 * 3600 * 1000LL)
#define DEFAULT_PRUNE_MS (10 * 60 * 1000LL)
/* looking again for another attempt's reply: from this, doubling to 1 s */
#define WAIT_FIRST_MS 20
#define WAIT_MAX_MS 1000
#define ARENA_FIRST 2048
/* the key of a stored reply: "<caller>/<verb>/<request_id>" */
#define REPLY_KEY_MAX (CMS_UUID_STRLEN + 1 + VERB_MAX + 1 + CMS_CMD_REQUEST_ID_MAX + 1)

/* What was last submitted with the claim: nothing of it committed, it
 * committed, or its commit's outcome is unknown (the connection broke). */
typedef enum { CLAIM_NONE, CLAIM_COMMITTED, CLAIM_UNKNOWN } claim_state;

/* SQL reads best as written */
// clang-format off
static const char SQL_LOOKUP[] =
    "SELECT reply, (extract(epoch from now() - created_at) * 1000)::int8 "
    "FROM command_replies WHERE service = $1 AND request_id = $2";
/* the claim: an earlier attempt of this very request may have committed
 * one without its change (a conditional write that found the state had
 * moved); any other attempt's makes the insert fail with 23505 */
static const char SQL_UNCLAIM[] =
    "DELETE FROM command_replies WHERE service = $1 AND request_id = $2 AND owner = $3::uuid "
    "AND reply IS NULL";
static const char SQL_CLAIM[] =
    "INSERT INTO command_replies (service, request_id, owner) VALUES ($1, $2, $3::uuid)";
/* our claim gets its reply; without one (no change was written) the reply is stored anew;
 * another attempt's row is left alone */
static const char SQL_STORE[] =
    "INSERT INTO command_replies (service, request_id, owner, reply) VALUES ($1, $2, $3::uuid, $4) "
    "ON CONFLICT (service, request_id) DO UPDATE SET reply = EXCLUDED.reply "
    "WHERE command_replies.owner = EXCLUDED.owner";
static const char SQL_PRUNE[] =
    "DELETE FROM command_replies WHERE service = $1 AND "
    "created_at < now() - $2::bigint * interval '1 millisecond'";
// clang-format on

#define CODE_LIST(X)                                                                               \
    X(CMS__V1__ERROR_CODE__UNSPECIFIED, "OK")                                                      \
    X(CMS__V1__ERROR_CODE__INVALID_ARGUMENT, "INVALID_ARGUMENT")                                   \
    X(CMS__V1__ERROR_CODE__NOT_FOUND, "NOT_FOUND")                                                 \
    X(CMS__V1__ERROR_CODE__ALREADY_EXISTS, "ALREADY_EXISTS")                                       \
    X(CMS__V1__ERROR_CODE__PERMISSION_DENIED, "PERMISSION_DENIED")                                 \
    X(CMS__V1__ERROR_CODE__FAILED_PRECONDITION, "FAILED_PRECONDITION")                             \
    X(CMS__V1__ERROR_CODE__INTERNAL, "INTERNAL")                                                   \
    X(CMS__V1__ERROR_CODE__UNAVAILABLE, "UNAVAILABLE")
#define CODE_COUNT_ITEM(code, text) +1
enum { NCODES = 0 CODE_LIST(CODE_COUNT_ITEM) };

typedef struct verb {
    char name[VERB_MAX];
    const ProtobufCMessageDescriptor *desc;
    cms_cmd_handler fn;
    void *arg;
    bool open; /* no caller needed */
    cms_counter *m_answers[NCODES];
    cms_histogram *m_duration;
} verb;

/*   REQ_RECEIVED   just arrived
 *   REQ_AUTH       the caller is being resolved
 *   REQ_LOOKUP     a stored reply of its request_id is being looked up
 *   REQ_WAITING    another attempt claimed the request_id: its reply is
 *                  looked for again when the timer fires
 *   REQ_HANDLING   the handler holds it
 *   REQ_FOLLOWING  the handler holds it, but another attempt claimed the
 *                  request_id: the handler's answer is replaced by that one
 *   REQ_LATE       the handler holds it past the deadline (answered for);
 *                  its reply is kept for retries that joined meanwhile
 *   REQ_ABANDONED  answered; a callback that names it is still to come
 *   REQ_STORING    its reply is being stored, then sent
 *   REQ_DONE       answered; the timer is closing, then it is freed */
#define REQ_STATES(X)                                                                              \
    X(REQ_RECEIVED, "received")                                                                    \
    X(REQ_AUTH, "auth")                                                                            \
    X(REQ_LOOKUP, "lookup")                                                                        \
    X(REQ_WAITING, "waiting")                                                                      \
    X(REQ_HANDLING, "handling")                                                                    \
    X(REQ_FOLLOWING, "following")                                                                  \
    X(REQ_LATE, "late")                                                                            \
    X(REQ_ABANDONED, "abandoned")                                                                  \
    X(REQ_STORING, "storing")                                                                      \
    X(REQ_DONE, "done")
typedef enum { REQ_STATES(CMS_ENUM_ITEM) REQ_NSTATES } req_state;
static const char *const req_names[] = {REQ_STATES(CMS_ENUM_TEXT)};
static const bool req_moves[REQ_NSTATES][REQ_NSTATES] = {
    [REQ_RECEIVED] =
        {[REQ_AUTH] = true, [REQ_LOOKUP] = true, [REQ_HANDLING] = true, [REQ_DONE] = true},
    [REQ_AUTH] =
        {[REQ_LOOKUP] = true, [REQ_HANDLING] = true, [REQ_ABANDONED] = true, [REQ_DONE] = true},
    [REQ_LOOKUP] =
        {[REQ_WAITING] = true, [REQ_HANDLING] = true, [REQ_ABANDONED] = true, [REQ_DONE] = true},
    [REQ_WAITING] = {[REQ_LOOKUP] = true, [REQ_DONE] = true},
    [REQ_HANDLING] =
        {[REQ_FOLLOWING] = true, [REQ_LATE] = true, [REQ_STORING] = true, [REQ_DONE] = true},
    [REQ_FOLLOWING] = {[REQ_WAITING] = true, [REQ_ABANDONED] = true},
    [REQ_LATE] = {[REQ_FOLLOWING] = true, [REQ_STORING] = true, [REQ_DONE] = true},
    [REQ_ABANDONED] = {[REQ_DONE] = true},
    [REQ_STORING] = {[REQ_DONE] = true},
};
static const cms_fsm req_fsm = CMS_FSM_INIT("command request", CMS_LOG_DEBUG, req_names, req_moves);

#define CMD_STATES(X)                                                                              \
    X(CMD_NEW, "new") X(CMD_RUNNING, "running") X(CMD_CLOSING, "closing") X(CMD_CLOSED, "closed")
typedef enum { CMD_STATES(CMS_ENUM_ITEM) CMD_NSTATES } cmd_state;
static const char *const cmd_names[] = {CMD_STATES(CMS_ENUM_TEXT)};
static const bool cmd_moves[CMD_NSTATES][CMD_NSTATES] = {
    [CMD_NEW] = {[CMD_RUNNING] = true, [CMD_CLOSING] = true},
    [CMD_RUNNING] = {[CMD_CLOSING] = true},
    [CMD_CLOSING] = {[CMD_CLOSED] = true},
};
static const cms_fsm cmd_fsm = CMS_FSM_INIT("command server", CMS_LOG_INFO, cmd_names, cmd_moves);

static const char *const err_names[] = {CMS_CMD_ERRORS(CMS_ENUM_TEXT)};

struct cms_cmd_req {
    cms_cmd *c;
    req_state state;
    cms_nats_msg *msg;
    const verb *v;
    cms_pbarena *arena; /* the decoded body's */
    ProtobufCMessage *body;
    char request_id[CMS_CMD_REQUEST_ID_MAX + 1];
    char reply_key[REPLY_KEY_MAX];
    char owner[CMS_UUID_STRLEN + 1]; /* this attempt's claim */
    bool has_request_id;             /* and a database to keep replies in */
    claim_state claim;
    cms_principal principal;
    bool has_principal;
    char **waiters; /* reply subjects: the request's and its repeats' */
    size_t nwaiters, cap_waiters;
    size_t nanswered; /* waiters the deadline already answered */
    uv_timer_t timer;
    uint64_t deadline_at; /* loop time */
    uint64_t wait_ms;     /* the next pause between look-ups */
    uint64_t received_ns;
    void *data;      /* the handler's */
    uint8_t *packed; /* the reply, kept while it is being stored */
    size_t packed_len;
    cms_cmd_code code; /* of the reply being stored */
    int store_tries;   /* stores of the reply that failed */
    struct cms_cmd_req *prev, *next;
};

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
    verb unknown; /* the metrics of requests for no verb */
    cms_nats_sub *sub;
    cms_cmd_req *reqs; /* every live request */
    size_t live;
    void (*closed)(void *arg);
    void *closed_arg;
    uint8_t seal_key[crypto_aead_xchacha20poly1305_ietf_KEYBYTES];
    bool seal;
    uv_timer_t prune;
    bool prune_open;    /* the prune timer exists and is not closed yet */
    int prunes_running; /* prune jobs not yet answered */
};

static void lookup(cms_cmd_req *r);
static void release_claim(cms_cmd_req *r);

const char *cms_cmd_strerror(cms_cmd_err e)
{
    return cms_enum_text(err_names, CMS_CMD_NERRORS, e);
}

const char *cms_cmd_code_name(cms_cmd_code code)
{
#define CODE_CASE(value, text)                                                                     \
    case value:                                                                                    \
        return text;
    switch (code) {
        CODE_LIST(CODE_CASE)
    case _CMS__V1__ERROR_CODE_IS_INT_SIZE:
        break;
    }
#undef CODE_CASE
    return "INTERNAL";
}

/* The code's slot in a verb's counters. */
static int code_slot(cms_cmd_code code)
{
    int i = 0;
#define CODE_SLOT(value, text)                                                                     \
    if (code == (value))                                                                           \
        return i;                                                                                  \
    i++;
    CODE_LIST(CODE_SLOT)
#undef CODE_SLOT
    return code_slot(CMS__V1__ERROR_CODE__INTERNAL);
}

cms_cmd_code cms_cmd_code_for_pg(cms_pg_err err, const char *sqlstate)
{
    switch (err) {
    case CMS_PG_OK:
        return CMS_CMD_NO_ERROR;
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

/* ---- states ---- */

static void set_state(cms_cmd_req *r, req_state to)
{
    r->state = (req_state)cms_fsm_step(&req_fsm, r->state, to, r->request_id);
}

static void set_server_state(cms_cmd *c, cmd_state to)
{
    c->state = (cmd_state)cms_fsm_step(&cmd_fsm, c->state, to, c->service);
}

static bool holds_handler(const cms_cmd_req *r)
{
    return r->state == REQ_HANDLING || r->state == REQ_FOLLOWING || r->state == REQ_LATE;
}

/* ---- freeing ---- */

static void maybe_closed(cms_cmd *c)
{
    if (c->state == CMD_CLOSING && c->live == 0 && !c->prune_open && c->prunes_running == 0) {
        set_server_state(c, CMD_CLOSED);
        if (c->closed)
            c->closed(c->closed_arg);
    }
}

static void req_closed(uv_handle_t *h)
{
    cms_cmd_req *r = h->data;
    cms_cmd *c = r->c;
    cms_pbarena_destroy(r->arena);
    cms_nats_msg_destroy(r->msg);
    if (r->packed && c->seal)
        sodium_memzero(r->packed, r->packed_len);
    free(r->packed);
    for (size_t i = 0; i < r->nwaiters; i++)
        free(r->waiters[i]);
    free(r->waiters);
    free(r);
    c->live--;
    maybe_closed(c);
}

/* The end: unlinked at once (no one finds it), freed once its timer closed. */
static void req_free(cms_cmd_req *r)
{
    cms_cmd *c = r->c;
    set_state(r, REQ_DONE);
    if (r->prev)
        r->prev->next = r->next;
    else
        c->reqs = r->next;
    if (r->next)
        r->next->prev = r->prev;
    r->prev = r->next = NULL;
    uv_timer_stop(&r->timer);
    uv_close((uv_handle_t *)&r->timer, req_closed);
}

/* ---- answering ---- */

static void send_to_waiters(cms_cmd_req *r, const uint8_t *buf, size_t len)
{
    for (size_t i = r->nanswered; i < r->nwaiters; i++) {
        cms_nats_err e = cms_nats_publish(r->c->nats, r->waiters[i], NULL, buf, len);
        if (e != CMS_NATS_OK)
            cms_log_warn("command reply not sent", "{s:s, s:s, s:s}", "verb",
                         r->v ? r->v->name : "", "request_id", r->request_id, "error",
                         cms_nats_strerror(e));
    }
    r->nanswered = r->nwaiters;
}

static uint8_t *pack_reply(const Cms__V1__Reply *rep, size_t *len)
{
    *len = protobuf_c_message_get_packed_size(&rep->base);
    uint8_t *buf = malloc(*len ? *len : 1);
    if (buf)
        protobuf_c_message_pack(&rep->base, buf);
    return buf;
}

static void count_answer(cms_cmd_req *r, cms_cmd_code code)
{
    const verb *v = r->v ? r->v : &r->c->unknown;
    cms_counter_add(v->m_answers[code_slot(code)], 1);
    cms_histogram_observe(v->m_duration, (double)(uv_hrtime() - r->received_ns) / 1e9);
}

/* Only what a handler answered is the outcome of a request_id. */
static bool should_store(const cms_cmd_req *r, cms_cmd_code code)
{
    return r->has_request_id && (r->state == REQ_HANDLING || r->state == REQ_LATE) &&
           code != CMS__V1__ERROR_CODE__UNAVAILABLE && code != CMS__V1__ERROR_CODE__INTERNAL;
}

/* A reply whose request_id was claimed is sent only once it is stored, so
 * that a retry is told the same (the claim committed with the change). A
 * store that fails (the database away) is tried again, with backoff, for
 * about half a minute; if it never succeeds the reply is not sent at all:
 * the caller, having had no answer, retries and is told the outcome is in
 * doubt, which is then true for both. */
#define STORE_TRIES 10
#define STORE_BACKOFF_MIN_MS 250
#define STORE_BACKOFF_MAX_MS 4000

static bool store_submit(cms_cmd_req *r);
static void stored(void *arg, cms_pg_err err, const cms_pg_result *res);

static void store_retry_fired(uv_timer_t *t)
{
    cms_cmd_req *r = t->data;
    if (!store_submit(r))
        stored(r, CMS_PG_EBUSY, NULL);
}

static void stored(void *arg, cms_pg_err err, const cms_pg_result *res)
{
    cms_cmd_req *r = arg;
    if (err == CMS_PG_OK) {
        send_to_waiters(r, r->packed, r->packed_len);
        req_free(r);
        return;
    }
    if (++r->store_tries < STORE_TRIES) {
        uint64_t ms = (uint64_t)STORE_BACKOFF_MIN_MS << (r->store_tries - 1);
        cms_log_warn("command reply not stored yet; storing it again before it is sent",
                     "{s:s, s:s, s:s, s:s, s:i}", "verb", r->v->name, "request_id", r->request_id,
                     "error", cms_pg_strerror(err), "detail", res ? cms_pg_result_message(res) : "",
                     "try", r->store_tries);
        uv_timer_start(&r->timer, store_retry_fired,
                       ms < STORE_BACKOFF_MAX_MS ? ms : STORE_BACKOFF_MAX_MS, 0);
        return;
    }
    cms_log_error("command reply could not be stored: not sent, so that a retry with the same "
                  "request_id is told its outcome is in doubt rather than another answer",
                  "{s:s, s:s, s:s}", "verb", r->v->name, "request_id", r->request_id, "error",
                  cms_pg_strerror(err));
    req_free(r);
}

/* What a sealed reply is bound to: the service and its row's key (caller,
 * verb, request_id), so that a sealed reply copied to another row does
 * not open there. The NUL keeps "ab" + "c" apart from "a" + "bc". */
static size_t seal_ad(const cms_cmd_req *r, uint8_t *ad, size_t cap)
{
    size_t ns = strlen(r->c->service), nk = strlen(r->reply_key);
    if (ns + 1 + nk > cap)
        return 0;
    memcpy(ad, r->c->service, ns);
    ad[ns] = '\0';
    memcpy(ad + ns + 1, r->reply_key, nk);
    return ns + 1 + nk;
}

#define SEAL_AD_MAX (64 + 1 + REPLY_KEY_MAX)
#define SEAL_NONCE crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
#define SEAL_OVER (SEAL_NONCE + crypto_aead_xchacha20poly1305_ietf_ABYTES)

/* Submits the store of r->packed (sealed, when the server seals); false if
 * it could not be submitted. */
static bool store_submit(cms_cmd_req *r)
{
    cms_cmd *c = r->c;
    const uint8_t *buf = r->packed;
    size_t len = r->packed_len;
    uint8_t *sealed = NULL;
    size_t slen = len;
    if (c->seal) {
        /* nonce, then ciphertext and tag (XChaCha20-Poly1305, bound to its row) */
        uint8_t ad[SEAL_AD_MAX];
        size_t adlen = seal_ad(r, ad, sizeof ad);
        slen = SEAL_OVER + len;
        if (adlen == 0 || (sealed = malloc(slen)) == NULL)
            return false;
        randombytes_buf(sealed, SEAL_NONCE);
        crypto_aead_xchacha20poly1305_ietf_encrypt(sealed + SEAL_NONCE, NULL, buf, len, ad, adlen,
                                                   NULL, sealed, c->seal_key);
    }
    cms_pg_job *job = cms_pg_job_new();
    const char *v[] = {c->service, r->reply_key, r->owner, (const char *)(sealed ? sealed : buf)};
    int lengths[] = {0, 0, 0, (int)slen}, formats[] = {0, 0, 0, 1};
    bool ok = job && cms_pg_job_sql(job, SQL_STORE, 4, v, lengths, formats) == CMS_PG_OK;
    free(sealed);
    if (!ok || cms_pg_submit(c->o.pg, &job, stored, r) != CMS_PG_OK) {
        cms_pg_job_free(job);
        return false;
    }
    return true;
}

/* Stores buf, then sends it (see stored); takes buf. */
static bool store_then_send(cms_cmd_req *r, uint8_t *buf, size_t len)
{
    r->packed = buf;
    r->packed_len = len;
    set_state(r, REQ_STORING);
    if (!store_submit(r))
        stored(r, CMS_PG_EBUSY, NULL); /* the database busy: tried again shortly */
    return true;
}

/* Sends (and, for a request_id, first stores) a packed Reply, takes buf,
 * and ends r. */
static void finish(cms_cmd_req *r, uint8_t *buf, size_t len, cms_cmd_code code)
{
    bool store = buf && should_store(r, code);
    if (r->state != REQ_LATE) /* the deadline counted a late one already */
        count_answer(r, code);
    if (store && store_then_send(r, buf, len))
        return;
    if (!store && r->has_request_id && r->claim == CLAIM_COMMITTED)
        release_claim(r); /* committed without a reply kept: let a retry run */
    if (buf)
        send_to_waiters(r, buf, len);
    free(buf);
    req_free(r);
}

static uint8_t *pack_error(cms_cmd_code code, const char *field, const char *message, size_t *len)
{
    Cms__V1__Error e = CMS__V1__ERROR__INIT;
    e.code = code;
    e.message = (char *)message;
    e.field = (char *)(field ? field : "");
    Cms__V1__Reply rep = CMS__V1__REPLY__INIT;
    rep.outcome_case = CMS__V1__REPLY__OUTCOME_ERROR;
    rep.error = &e;
    return pack_reply(&rep, len);
}

static void reply_error(cms_cmd_req *r, cms_cmd_code code, const char *field, const char *message)
{
    size_t len;
    uint8_t *buf = pack_error(code, field, message, &len);
    finish(r, buf, len, code);
}

/* The handler let go of r. True when the answer is no longer its to give:
 * another attempt claimed the request_id (its reply is answered, once
 * stored), or the request was answered by the deadline before the handler
 * began (nothing is left to do). */
static bool handler_let_go(cms_cmd_req *r)
{
    if (r->state == REQ_FOLLOWING) {
        set_state(r, REQ_WAITING);
        r->wait_ms = WAIT_FIRST_MS;
        lookup(r);
        return true;
    }
    if (r->state == REQ_ABANDONED) {
        req_free(r);
        return true;
    }
    return false;
}

void cms_cmd_reply(cms_cmd_req *r, const ProtobufCMessage *result)
{
    if (handler_let_go(r))
        return;
    size_t rlen = protobuf_c_message_get_packed_size(result);
    uint8_t *rbuf = malloc(rlen ? rlen : 1);
    if (rbuf == NULL) {
        reply_error(r, CMS__V1__ERROR_CODE__INTERNAL, NULL, "out of memory");
        return;
    }
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
    if (buf == NULL) {
        reply_error(r, CMS__V1__ERROR_CODE__INTERNAL, NULL, "out of memory");
        return;
    }
    finish(r, buf, len, CMS_CMD_NO_ERROR);
}

void cms_cmd_fail(cms_cmd_req *r, cms_cmd_code code, const char *field, const char *fmt, ...)
{
    if (handler_let_go(r))
        return;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (code == CMS__V1__ERROR_CODE__INTERNAL)
        cms_log_warn("command failed", "{s:s, s:s, s:s}", "verb", r->v ? r->v->name : "",
                     "request_id", r->request_id, "message", msg);
    reply_error(r, code, field, msg);
}

const char *cms_cmd_req_actor(const cms_cmd_req *req)
{
    const cms_principal *p = cms_cmd_req_principal(req);
    return p ? p->identity_id : CMS_BUS_SYSTEM_ACTOR;
}

bool cms_cmd_req_sees_all(const cms_cmd_req *req)
{
    const cms_principal *p = cms_cmd_req_principal(req);
    return cms_principal_has_role(p, "admin") || cms_principal_has_role(p, "auditor");
}

bool cms_cmd_run_read(cms_cmd_req *req, cms_pg *pg, cms_pg_job *job, cms_pg_done_cb done, void *arg)
{
    cms_pg_err err = cms_pg_submit(pg, &job, done, arg);
    if (err == CMS_PG_OK)
        return true;
    cms_cmd_fail_pg(req, err, NULL, cms_cmd_req_verb(req));
    return false;
}

void cms_cmd_reply_page(cms_cmd_req *req, const PGresult *r, int limit,
                        const ProtobufCMessageDescriptor *page_desc, const char *items_field,
                        void (*row)(const PGresult *r, int i, void *item))
{
    const ProtobufCFieldDescriptor *fi =
        protobuf_c_message_descriptor_get_field_by_name(page_desc, items_field);
    const ProtobufCFieldDescriptor *fn =
        protobuf_c_message_descriptor_get_field_by_name(page_desc, "next");
    const ProtobufCMessageDescriptor *item_desc = fi ? fi->descriptor : NULL;
    const ProtobufCFieldDescriptor *fid =
        item_desc ? protobuf_c_message_descriptor_get_field_by_name(item_desc, "id") : NULL;
    if (fi == NULL || fi->label != PROTOBUF_C_LABEL_REPEATED ||
        fi->type != PROTOBUF_C_TYPE_MESSAGE || fn == NULL || fn->type != PROTOBUF_C_TYPE_STRING ||
        fid == NULL || fid->type != PROTOBUF_C_TYPE_STRING) {
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__INTERNAL, NULL, "the page cannot be built");
        return;
    }
    int n = r ? PQntuples(r) : 0, shown = n > limit ? limit : n;
    size_t size = item_desc->sizeof_message;
    uint8_t *page = calloc(1, page_desc->sizeof_message);
    uint8_t *items = calloc((size_t)shown + 1, size);
    void **ptrs = calloc((size_t)shown + 1, sizeof *ptrs);
    if (page == NULL || items == NULL || ptrs == NULL) {
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__INTERNAL, NULL, "out of memory");
    } else {
        protobuf_c_message_init(page_desc, page);
        for (int i = 0; i < shown; i++) {
            ptrs[i] = items + (size_t)i * size;
            row(r, i, ptrs[i]);
        }
        memcpy(page + fi->quantifier_offset, &(size_t){(size_t)shown}, sizeof(size_t));
        memcpy(page + fi->offset, &ptrs, sizeof ptrs);
        /* a row beyond the page: there is a next page, after the last shown */
        if (n > limit)
            memcpy(page + fn->offset, (uint8_t *)ptrs[shown - 1] + fid->offset, sizeof(char *));
        cms_cmd_reply(req, (const ProtobufCMessage *)(void *)page); /* calloc: aligned */
    }
    free(page);
    free(items);
    free(ptrs);
}

typedef struct page_op {
    cms_cmd_req *req;
    int limit;
    const ProtobufCMessageDescriptor *page_desc;
    const char *items_field;
    void (*row)(const PGresult *r, int i, void *item);
} page_op;

static void page_read(void *arg, cms_pg_err err, const cms_pg_result *res)
{
    page_op *op = arg;
    if (err != CMS_PG_OK)
        cms_cmd_fail_pg(op->req, err, res, cms_cmd_req_verb(op->req));
    else
        cms_cmd_reply_page(op->req, cms_pg_result_get(res, 0), op->limit, op->page_desc,
                           op->items_field, op->row);
    free(op);
}

void cms_cmd_run_page(cms_cmd_req *req, cms_pg *pg, cms_pg_job *job, int limit,
                      const ProtobufCMessageDescriptor *page_desc, const char *items_field,
                      void (*row)(const PGresult *r, int i, void *item))
{
    page_op *op = calloc(1, sizeof *op);
    if (op == NULL) {
        cms_pg_job_free(job);
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__INTERNAL, NULL, "out of memory");
        return;
    }
    *op = (page_op){req, limit, page_desc, items_field, row};
    cms_pg_err err = cms_pg_submit(pg, &job, page_read, op);
    if (err != CMS_PG_OK) {
        free(op);
        cms_cmd_fail_pg(req, err, NULL, cms_cmd_req_verb(req));
    }
}

void cms_cmd_fail_pg(cms_cmd_req *r, cms_pg_err err, const cms_pg_result *res, const char *what)
{
    const char *state = res ? cms_pg_result_sqlstate(res) : NULL;
    cms_cmd_code code = cms_cmd_code_for_pg(err, state);
    if (code == CMS_CMD_NO_ERROR)
        code = CMS__V1__ERROR_CODE__INTERNAL; /* not a failure: a caller's mistake */
    if (code == CMS__V1__ERROR_CODE__INTERNAL)
        cms_log_error("command statement failed", "{s:s, s:s, s:s, s:s, s:s}", "verb",
                      r->v ? r->v->name : "", "what", what, "sqlstate", state ? state : "", "error",
                      cms_pg_strerror(err), "detail", res ? cms_pg_result_message(res) : "");
    cms_cmd_fail(r, code, NULL, "%s failed%s", what,
                 code == CMS__V1__ERROR_CODE__UNAVAILABLE ? ": the database is unavailable; retry"
                                                          : "");
}

/* ---- the deadline, and waiting for another attempt ---- */

static void timer_fired(uv_timer_t *t);

static void arm_timer(cms_cmd_req *r, uint64_t ms)
{
    uv_timer_start(&r->timer, timer_fired, ms, 0);
}

/* The deadline passed: the callers get UNAVAILABLE now. */
static void expire(cms_cmd_req *r)
{
    cms_cmd_code code = CMS__V1__ERROR_CODE__UNAVAILABLE;
    if (r->state == REQ_WAITING) { /* nothing else holds it */
        reply_error(r, code, NULL,
                    "the first attempt with this request_id is still running; retry");
        return;
    }
    size_t len;
    uint8_t *buf = pack_error(
        code, NULL, "not answered within the deadline; retry with the same request_id", &len);
    if (buf)
        send_to_waiters(r, buf, len);
    free(buf);
    count_answer(r, code);
    cms_log_warn("command not answered within the deadline", "{s:s, s:s, s:s}", "verb",
                 r->v ? r->v->name : "", "request_id", r->request_id, "state",
                 cms_fsm_name(&req_fsm, r->state));
    /* whoever holds it frees it: a handler's reply is still the outcome */
    set_state(r, r->state == REQ_HANDLING ? REQ_LATE : REQ_ABANDONED);
}

static void timer_fired(uv_timer_t *t)
{
    cms_cmd_req *r = t->data;
    uint64_t now = uv_now(r->c->loop);
    /* storing: answered in a moment; late, abandoned: answered already */
    if (r->state == REQ_STORING || r->state == REQ_LATE || r->state == REQ_ABANDONED)
        return;
    if (now >= r->deadline_at) {
        expire(r);
        return;
    }
    if (r->state == REQ_WAITING) {
        lookup(r);
        return;
    }
    arm_timer(r, r->deadline_at - now);
}

/* ---- request_id: claims, stored replies, other attempts ---- */

static void release_claim(cms_cmd_req *r)
{
    cms_pg_job *job = cms_pg_job_new();
    const char *v[] = {r->c->service, r->reply_key, r->owner};
    if (job == NULL || cms_pg_job_sql(job, SQL_UNCLAIM, 3, v, NULL, NULL) != CMS_PG_OK ||
        cms_pg_submit(r->c->o.pg, &job, NULL, NULL) != CMS_PG_OK) {
        cms_pg_job_free(job);
        cms_log_warn("command claim not released: retries will wait for it", "{s:s, s:s}", "verb",
                     r->v->name, "request_id", r->request_id);
    }
    r->claim = CLAIM_NONE;
}

cms_pg_job *cms_cmd_job_new(cms_cmd_req *r)
{
    cms_pg_job *job = cms_pg_job_new();
    if (job == NULL || !r->has_request_id)
        return job;
    const char *v[] = {r->c->service, r->reply_key, r->owner};
    if (cms_pg_job_lead_sql(job, SQL_UNCLAIM, 3, v, NULL, NULL) != CMS_PG_OK ||
        cms_pg_job_lead_sql(job, SQL_CLAIM, 3, v, NULL, NULL) != CMS_PG_OK) {
        cms_pg_job_free(job);
        return NULL;
    }
    return job;
}

typedef struct claimed_job {
    cms_cmd_req *r;
    cms_pg_done_cb done;
    void *arg;
} claimed_job;

static void submitted(void *arg, cms_pg_err err, const cms_pg_result *res)
{
    claimed_job *cj = arg;
    cms_cmd_req *r = cj->r;
    cms_pg_done_cb done = cj->done;
    void *done_arg = cj->arg;
    free(cj);
    if (r->has_request_id) {
        r->claim = err == CMS_PG_OK      ? CLAIM_COMMITTED
                   : err == CMS_PG_ECONN ? CLAIM_UNKNOWN
                                         : CLAIM_NONE;
        /* the claim is the second lead statement */
        if (err == CMS_PG_ESQL && cms_pg_result_lead_failed(res) == 1 &&
            strcmp(cms_pg_result_sqlstate(res), "23505") == 0) {
            cms_log_info("request_id claimed by another attempt: answering its reply", "{s:s, s:s}",
                         "verb", r->v->name, "request_id", r->request_id);
            if (r->state == REQ_HANDLING || r->state == REQ_LATE)
                set_state(r, REQ_FOLLOWING);
        }
    }
    done(done_arg, err, res);
}

cms_pg_err cms_cmd_submit(cms_cmd_req *r, cms_pg_job **job, cms_pg_done_cb done, void *arg)
{
    claimed_job *cj = calloc(1, sizeof *cj);
    if (cj == NULL) {
        cms_pg_job_free(*job);
        *job = NULL;
        return CMS_PG_ENOMEM;
    }
    *cj = (claimed_job){.r = r, .done = done, .arg = arg};
    cms_pg_err err = cms_pg_submit(r->c->o.pg, job, submitted, cj);
    if (err != CMS_PG_OK)
        free(cj);
    return err;
}

static void run_handler(cms_cmd_req *r)
{
    set_state(r, REQ_HANDLING);
    r->v->fn(r->v->arg, r);
}

/* A stored reply: opened (when sealed) and answered without a second run. */
static void answer_stored(cms_cmd_req *r, const uint8_t *stored_reply, size_t len)
{
    uint8_t *buf = malloc(len + 1);
    if (buf == NULL) {
        reply_error(r, CMS__V1__ERROR_CODE__INTERNAL, NULL, "out of memory");
        return;
    }
    if (r->c->seal) {
        uint8_t ad[SEAL_AD_MAX];
        size_t adlen = seal_ad(r, ad, sizeof ad);
        if (len < SEAL_OVER || adlen == 0 ||
            crypto_aead_xchacha20poly1305_ietf_decrypt(buf, NULL, NULL, stored_reply + SEAL_NONCE,
                                                       len - SEAL_NONCE, ad, adlen, stored_reply,
                                                       r->c->seal_key) != 0) {
            free(buf);
            /* not sealed for this row: written for another caller, verb or
             * request_id (or tampered with); nothing of it is answered */
            cms_log_warn("stored command reply does not open for its row: not answered",
                         "{s:s, s:s}", "verb", r->v->name, "request_id", r->request_id);
            reply_error(r, CMS__V1__ERROR_CODE__FAILED_PRECONDITION, CMS_CMD_REQUEST_ID_HEADER,
                        "the stored reply of this request_id cannot be opened: retry with a new "
                        "request_id");
            return;
        }
        len -= SEAL_OVER;
    } else {
        memcpy(buf, stored_reply, len);
    }
    r->has_request_id = false; /* already stored */
    finish(r, buf, len, CMS_CMD_NO_ERROR);
}

static void looked_up(void *arg, cms_pg_err err, const cms_pg_result *res)
{
    cms_cmd_req *r = arg;
    if (r->state == REQ_ABANDONED) {
        req_free(r);
        return;
    }
    if (err != CMS_PG_OK) {
        reply_error(r, cms_cmd_code_for_pg(err, res ? cms_pg_result_sqlstate(res) : NULL), NULL,
                    "could not check request_id; retry");
        return;
    }
    const PGresult *pr = cms_pg_result_get(res, 0);
    if (pr == NULL || PQntuples(pr) == 0) {
        if (r->state == REQ_WAITING) /* the claim went (released): this attempt runs */
            set_state(r, REQ_LOOKUP);
        run_handler(r);
        return;
    }
    if (!PQgetisnull(pr, 0, 0)) {
        answer_stored(r, (const uint8_t *)PQgetvalue(pr, 0, 0), (size_t)PQgetlength(pr, 0, 0));
        return;
    }
    /* claimed by an attempt that has not stored its reply yet */
    uint64_t be;
    int64_t age_ms = 0;
    if (PQgetlength(pr, 0, 1) == 8) {
        memcpy(&be, PQgetvalue(pr, 0, 1), 8);
        age_ms = (int64_t)be64toh(be);
    }
    if (age_ms > 2 * r->c->o.deadline_ms) {
        reply_error(r, CMS__V1__ERROR_CODE__FAILED_PRECONDITION, CMS_CMD_REQUEST_ID_HEADER,
                    "the first attempt with this request_id stopped before its outcome was "
                    "recorded: check the result, then retry with a new request_id");
        return;
    }
    if (r->state == REQ_LOOKUP)
        set_state(r, REQ_WAITING);
    uint64_t now = uv_now(r->c->loop), left = r->deadline_at > now ? r->deadline_at - now : 0;
    arm_timer(r, r->wait_ms < left ? r->wait_ms : left);
    r->wait_ms = r->wait_ms * 2 > WAIT_MAX_MS ? WAIT_MAX_MS : r->wait_ms * 2;
}

static void lookup(cms_cmd_req *r)
{
    cms_cmd *c = r->c;
    cms_pg_job *job = cms_pg_job_new();
    const char *v[] = {c->service, r->reply_key};
    if (job == NULL || cms_pg_job_sql(job, SQL_LOOKUP, 2, v, NULL, NULL) != CMS_PG_OK) {
        cms_pg_job_free(job);
        reply_error(r, CMS__V1__ERROR_CODE__INTERNAL, NULL, "out of memory");
        return;
    }
    cms_pg_job_binary_results(job);
    if (r->state != REQ_WAITING)
        set_state(r, REQ_LOOKUP);
    cms_pg_err err = cms_pg_submit(c->o.pg, &job, looked_up, r);
    if (err != CMS_PG_OK)
        reply_error(r, cms_cmd_code_for_pg(err, NULL), NULL, "database busy; retry");
}

static cms_cmd_req *find_running(cms_cmd *c, const cms_cmd_req *self)
{
    for (cms_cmd_req *r = c->reqs; r; r = r->next)
        if (r != self && r->has_request_id && strcmp(r->reply_key, self->reply_key) == 0 &&
            (r->state == REQ_LOOKUP || r->state == REQ_WAITING || holds_handler(r) ||
             r->state == REQ_STORING))
            return r;
    return NULL;
}

static bool add_waiter(cms_cmd_req *r, char *reply)
{
    if (r->nwaiters == r->cap_waiters) {
        size_t cap = r->cap_waiters ? r->cap_waiters * 2 : 2;
        char **w = cap <= MAX_WAITERS ? realloc(r->waiters, cap * sizeof *w) : NULL;
        if (w == NULL)
            return false;
        r->waiters = w;
        r->cap_waiters = cap;
    }
    r->waiters[r->nwaiters++] = reply;
    return true;
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

/* ---- arrival ---- */

/* The caller is known (or none is needed): decode, then the request_id,
 * then the handler. */
static void after_auth(cms_cmd_req *r)
{
    cms_cmd *c = r->c;
    if (cms_pbarena_create(ARENA_FIRST, c->o.max_decoded_bytes, &r->arena) != 0) {
        reply_error(r, CMS__V1__ERROR_CODE__UNAVAILABLE, NULL, "out of memory; retry");
        return;
    }
    /* before decoding: protobuf-c would cut a string short at a NUL and
     * pass invalid UTF-8 on; either is refused, naming the field */
    const char *bad = NULL;
    cms_pbtext_fault tf = cms_pbtext_check(r->v->desc, cms_nats_msg_data(r->msg),
                                           cms_nats_msg_len(r->msg), CMS_PBTEXT_CHECK_ALL, &bad);
    if (tf != CMS_PBTEXT_OK) {
        char msg[160];
        snprintf(msg, sizeof msg, "%s %s", bad, cms_pbtext_fault_text(tf));
        reply_error(r, CMS__V1__ERROR_CODE__INVALID_ARGUMENT, bad, msg);
        return;
    }
    r->body = protobuf_c_message_unpack(r->v->desc, cms_pbarena_allocator(r->arena),
                                        cms_nats_msg_len(r->msg), cms_nats_msg_data(r->msg));
    if (r->body == NULL) {
        char msg[200];
        snprintf(msg, sizeof msg, "the request body is not a valid %s within %zu bytes decoded",
                 r->v->desc->name, c->o.max_decoded_bytes);
        reply_error(r, CMS__V1__ERROR_CODE__INVALID_ARGUMENT, "body", msg);
        return;
    }
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
    snprintf(r->reply_key, sizeof r->reply_key, "%s/%s/%s",
             r->has_principal ? r->principal.identity_id : "", r->v->name, rid);
    if (c->o.pg == NULL) {
        run_handler(r);
        return;
    }
    r->has_request_id = true;
    cms_cmd_req *first = find_running(c, r);
    if (first && add_waiter(first, r->waiters[0])) {
        /* a retry while the first runs here: one reply answers both */
        r->waiters[0] = NULL;
        r->nwaiters = 0;
        r->has_request_id = false;
        req_free(r);
        return;
    }
    cms_uuid u;
    cms_uuid_v7(&u);
    cms_uuid_format(&u, r->owner);
    r->wait_ms = WAIT_FIRST_MS;
    lookup(r);
}

static void authenticated(void *arg, cms_auth_err res, const cms_principal *p)
{
    cms_cmd_req *r = arg;
    if (r->state == REQ_ABANDONED) {
        req_free(r);
        return;
    }
    if (res != CMS_AUTH_OK || p == NULL) {
        if (res == CMS_AUTH_UNAVAILABLE)
            reply_error(r, CMS__V1__ERROR_CODE__UNAVAILABLE, NULL,
                        "the caller could not be authenticated now; retry");
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
    cms_cmd_req *r = calloc(1, sizeof *r); /* REQ_RECEIVED */
    char *w = strdup(reply);
    if (r == NULL || w == NULL || !add_waiter(r, w)) {
        free(w);
        if (r)
            free(r->waiters);
        free(r);
        cms_nats_msg_destroy(m);
        return;
    }
    r->received_ns = uv_hrtime();
    r->c = c;
    r->msg = m;
    uv_timer_init(c->loop, &r->timer);
    r->timer.data = r;
    r->deadline_at = uv_now(c->loop) + (uint64_t)c->o.deadline_ms;
    arm_timer(r, (uint64_t)c->o.deadline_ms);
    r->next = c->reqs;
    if (c->reqs)
        c->reqs->prev = r;
    c->reqs = r;
    c->live++;

    const char *subject = cms_nats_msg_subject(m);
    size_t plen = strlen(c->prefix);
    const char *vname = strncmp(subject, c->prefix, plen) == 0 ? subject + plen : "";
    for (size_t i = 0; i < c->nverbs && r->v == NULL; i++)
        if (strcmp(c->verbs[i].name, vname) == 0)
            r->v = &c->verbs[i];
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
        char msg[96];
        snprintf(msg, sizeof msg, "the request is larger than %zu bytes", c->o.max_request_bytes);
        reply_error(r, CMS__V1__ERROR_CODE__INVALID_ARGUMENT, "body", msg);
        return;
    }
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
    set_state(r, REQ_AUTH);
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

static void make_verb_metrics(verb *v)
{
    static const char *const codes[] = {
#define CODE_TEXT(value, text) text,
        CODE_LIST(CODE_TEXT)
#undef CODE_TEXT
    };
    cms_metrics *m = cms_metrics_default();
    char labels[128];
    for (int i = 0; i < NCODES; i++) {
        snprintf(labels, sizeof labels, "verb=\"%s\",code=\"%s\"", v->name, codes[i]);
        v->m_answers[i] = cms_metrics_counter(m, "cms_commands_total",
                                              "Commands answered, by verb and code", labels);
    }
    snprintf(labels, sizeof labels, "verb=\"%s\"", v->name);
    v->m_duration = cms_metrics_histogram(m, "cms_command_duration_seconds",
                                          "Time from a request's arrival to its answer", labels,
                                          NULL, 0); /* the defaults start at 50 µs */
}

cms_cmd_err cms_cmd_create(uv_loop_t *loop, cms_nats *nats, const cms_cmd_options *o, cms_cmd **out)
{
    if (loop == NULL || nats == NULL || o == NULL || o->service == NULL || out == NULL ||
        strlen(o->service) == 0 || strlen(o->service) >= 64 || strpbrk(o->service, ".*> ") ||
        (o->prefix && (strlen(o->prefix) >= 96 || strpbrk(o->prefix, "*> "))))
        return CMS_CMD_EINVAL;
    cms_cmd *c = calloc(1, sizeof *c); /* CMD_NEW */
    if (c == NULL)
        return CMS_CMD_ENOMEM;
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
    snprintf(c->root, sizeof c->root, "%s",
             o->prefix && *o->prefix ? o->prefix : CMS_BUS_COMMAND_PREFIX);
    c->o.prefix = c->root;
    snprintf(c->prefix, sizeof c->prefix, "%s.%s.", c->root, c->service);
    if (c->o.deadline_ms <= 0)
        c->o.deadline_ms = DEFAULT_DEADLINE_MS;
    if (c->o.max_inflight == 0)
        c->o.max_inflight = DEFAULT_MAX_INFLIGHT;
    if (c->o.max_request_bytes == 0)
        c->o.max_request_bytes = DEFAULT_MAX_REQUEST;
    if (c->o.max_decoded_bytes == 0)
        c->o.max_decoded_bytes = 4 * c->o.max_request_bytes;
    if (c->o.reply_retention_ms <= 0)
        c->o.reply_retention_ms = DEFAULT_RETENTION_MS;
    if (c->o.prune_interval_ms <= 0)
        c->o.prune_interval_ms = DEFAULT_PRUNE_MS;
    snprintf(c->unknown.name, sizeof c->unknown.name, "unknown");
    make_verb_metrics(&c->unknown);
    *out = c;
    return CMS_CMD_OK;
}

static cms_cmd_err add_verb(cms_cmd *c, const char *verb_name,
                            const ProtobufCMessageDescriptor *request, cms_cmd_handler fn,
                            void *arg, bool open)
{
    if (c == NULL || verb_name == NULL || request == NULL || fn == NULL || c->nverbs == MAX_VERBS ||
        strlen(verb_name) == 0 || strlen(verb_name) >= VERB_MAX ||
        strcmp(verb_name, "unknown") == 0)
        return CMS_CMD_EINVAL;
    for (size_t i = 0; i < c->nverbs; i++)
        if (strcmp(c->verbs[i].name, verb_name) == 0)
            return CMS_CMD_EINVAL;
    for (const char *p = verb_name; *p; p++)
        if (!(islower((unsigned char)*p) || *p == '_'))
            return CMS_CMD_EINVAL;
    verb *v = &c->verbs[c->nverbs++];
    snprintf(v->name, sizeof v->name, "%s", verb_name);
    v->desc = request;
    v->fn = fn;
    v->arg = arg;
    v->open = open;
    make_verb_metrics(v);
    return CMS_CMD_OK;
}

cms_cmd_err cms_cmd_register(cms_cmd *c, const char *verb_name,
                             const ProtobufCMessageDescriptor *request, cms_cmd_handler fn,
                             void *arg)
{
    return add_verb(c, verb_name, request, fn, arg, false);
}

cms_cmd_err cms_cmd_register_open(cms_cmd *c, const char *verb_name,
                                  const ProtobufCMessageDescriptor *request, cms_cmd_handler fn,
                                  void *arg)
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

cms_cmd_err cms_cmd_start(cms_cmd *c)
{
    if (c == NULL || c->state != CMD_NEW)
        return CMS_CMD_ESTATE;
    char subject[CMS_BUS_SUBJECT_MAX];
    if (cms_bus_command_subject(subject, sizeof subject, c->root, c->service, "*") != CMS_BUS_OK)
        return CMS_CMD_EINVAL;
    if (cms_nats_subscribe(c->nats, subject, c->service, on_request, c, &c->sub) != 0)
        return CMS_CMD_ENATS;
    if (c->o.pg) {
        uv_timer_init(c->loop, &c->prune);
        c->prune.data = c;
        c->prune_open = true;
        uv_timer_start(&c->prune, prune_fired, (uint64_t)c->o.prune_interval_ms,
                       (uint64_t)c->o.prune_interval_ms);
    }
    set_server_state(c, CMD_RUNNING);
    cms_log_info("command server listening", "{s:s, s:i}", "subject", subject, "verbs",
                 (int)c->nverbs);
    return CMS_CMD_OK;
}

void cms_cmd_close(cms_cmd *c, void (*closed)(void *arg), void *arg)
{
    if (c == NULL || c->state == CMD_CLOSING || c->state == CMD_CLOSED)
        return;
    c->closed = closed;
    c->closed_arg = arg;
    set_server_state(c, CMD_CLOSING);
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
