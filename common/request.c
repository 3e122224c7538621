/* Request-reply from the loop; see request.h.
 *
 * Each pending request has a token (the last subject token of its reply
 * subject) and a deadline timer. Pending requests are kept in a hash table
 * by token. A request is freed in its timer's close callback, after its
 * callback ran, so nothing up the stack holds it. */
#include "request.h"

#include "fsm.h"
#include "log.h"

#include "hashtab.h"
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RQ_STATES(X) X(RQ_OPEN, "open") X(RQ_CLOSING, "closing") X(RQ_CLOSED, "closed")
typedef enum { RQ_STATES(CMS_ENUM_ITEM) RQ_NSTATES } rq_state;
static const char *const rq_names[] = {RQ_STATES(CMS_ENUM_TEXT)};
static const bool rq_moves[RQ_NSTATES][RQ_NSTATES] = {
    [RQ_OPEN] = {[RQ_CLOSING] = true},
    [RQ_CLOSING] = {[RQ_CLOSED] = true},
};
static const cms_fsm rq_fsm = CMS_FSM_INIT("requester", CMS_LOG_DEBUG, rq_names, rq_moves);
static const char *const err_names[] = {CMS_REQUEST_ERRORS(CMS_ENUM_TEXT)};

typedef struct pending {
    uint64_t token;
    cms_request *r;
    uv_timer_t timer;
    cms_request_cb cb;
    void *arg;
    UT_hash_handle hh;
} pending;

struct cms_request {
    uv_loop_t *loop;
    cms_nats *nats;
    rq_state state;
    char inbox[CMS_NATS_INBOX_MAX]; /* cms_nats_inbox: "<prefix>.<32 hex>" */
    cms_nats_sub *sub;
    pending *table;
    uint64_t next_token;
    size_t npending;
    int open_handles; /* timers of finished requests not yet closed, and the idle handle */
    uv_idle_t fail_all;
    void (*closed)(void *arg);
    void *closed_arg;
};

const char *cms_request_strerror(cms_request_err e)
{
    return cms_enum_text(err_names, CMS_REQUEST_NERRORS, e);
}

static void set_state(cms_request *r, rq_state to)
{
    r->state = (rq_state)cms_fsm_step(&rq_fsm, r->state, to, r->inbox);
}

static void maybe_closed(cms_request *r)
{
    if (r->state == RQ_CLOSING && r->npending == 0 && r->open_handles == 0) {
        set_state(r, RQ_CLOSED);
        if (r->closed)
            r->closed(r->closed_arg);
    }
}

static void pending_closed(uv_handle_t *h)
{
    pending *p = h->data;
    cms_request *r = p->r;
    free(p);
    r->open_handles--;
    maybe_closed(r);
}

/* Removes p, then answers it: the callback may send new requests. */
static void finish(pending *p, cms_request_err err, const void *data, size_t len)
{
    cms_request *r = p->r;
    HASH_DEL(r->table, p);
    r->npending--;
    uv_timer_stop(&p->timer);
    r->open_handles++;
    uv_close((uv_handle_t *)&p->timer, pending_closed);
    p->cb(p->arg, err, data, len);
}

static void timed_out(uv_timer_t *t)
{
    finish(t->data, CMS_REQUEST_ETIMEOUT, NULL, 0);
}

static void on_reply(void *arg, cms_nats_msg *m)
{
    cms_request *r = arg;
    const char *subject = cms_nats_msg_subject(m);
    size_t n = strlen(r->inbox);
    pending *p = NULL;
    if (strncmp(subject, r->inbox, n) == 0 && subject[n] == '.') {
        char *end = NULL;
        uint64_t token = strtoull(subject + n + 1, &end, 16);
        if (end && *end == '\0')
            HASH_FIND(hh, r->table, &token, sizeof token, p);
    }
    if (p) {
        size_t len = cms_nats_msg_len(m);
        /* an empty reply is the server's "no responders" status: a reply
         * of ours always has bytes */
        finish(p, len == 0 ? CMS_REQUEST_ENORESPONDERS : CMS_REQUEST_OK, cms_nats_msg_data(m), len);
    }
    cms_nats_msg_destroy(m);
}

cms_request_err cms_request_create(uv_loop_t *loop, cms_nats *nats, cms_request **out)
{
    if (loop == NULL || nats == NULL || out == NULL)
        return CMS_REQUEST_EINVAL;
    cms_request *r = calloc(1, sizeof *r); /* RQ_OPEN */
    if (r == NULL)
        return CMS_REQUEST_ENOMEM;
    r->loop = loop;
    r->nats = nats;
    char subject[CMS_NATS_INBOX_MAX + 2];
    if (cms_nats_inbox(nats, r->inbox, sizeof r->inbox) != CMS_NATS_OK) {
        free(r);
        return CMS_REQUEST_EINVAL;
    }
    snprintf(subject, sizeof subject, "%s.*", r->inbox);
    if (cms_nats_subscribe(nats, subject, NULL, on_reply, r, &r->sub) != 0) {
        free(r);
        return CMS_REQUEST_ENATS;
    }
    uv_idle_init(loop, &r->fail_all);
    r->fail_all.data = r;
    r->open_handles = 1;
    *out = r;
    return CMS_REQUEST_OK;
}

cms_request_err cms_request_send(cms_request *r, const char *subject, const char *const *headers,
                                 const void *data, size_t len, int64_t timeout_ms,
                                 cms_request_cb cb, void *arg)
{
    if (r == NULL || subject == NULL || cb == NULL || timeout_ms <= 0)
        return CMS_REQUEST_EINVAL;
    if (r->state != RQ_OPEN)
        return CMS_REQUEST_ECLOSED;
    pending *p = calloc(1, sizeof *p);
    if (p == NULL)
        return CMS_REQUEST_ENOMEM;
    p->token = ++r->next_token;
    char reply[CMS_NATS_INBOX_MAX + 24];
    snprintf(reply, sizeof reply, "%s.%" PRIx64, r->inbox, p->token);
    cms_nats_err err = cms_nats_publish_request(r->nats, subject, reply, headers, data, len);
    if (err != CMS_NATS_OK) {
        free(p);
        return err == CMS_NATS_EBUSY     ? CMS_REQUEST_EBUSY
               : err == CMS_NATS_ECLOSED ? CMS_REQUEST_ECLOSED
               : err == CMS_NATS_ENOMEM  ? CMS_REQUEST_ENOMEM
                                         : CMS_REQUEST_EINVAL;
    }
    p->r = r;
    p->cb = cb;
    p->arg = arg;
    uv_timer_init(r->loop, &p->timer);
    p->timer.data = p;
    uv_timer_start(&p->timer, timed_out, (uint64_t)timeout_ms, 0);
    HASH_ADD(hh, r->table, token, sizeof p->token, p);
    r->npending++;
    return CMS_REQUEST_OK;
}

size_t cms_request_pending(const cms_request *r)
{
    return r ? r->npending : 0;
}

static void idle_closed(uv_handle_t *h)
{
    cms_request *r = h->data;
    r->open_handles--;
    maybe_closed(r);
}

static void fail_pending(uv_idle_t *h)
{
    cms_request *r = h->data;
    while (r->table)
        finish(r->table, CMS_REQUEST_ECLOSED, NULL, 0);
    uv_idle_stop(h);
    uv_close((uv_handle_t *)h, idle_closed);
}

void cms_request_close(cms_request *r, void (*closed)(void *arg), void *arg)
{
    if (r == NULL || r->state != RQ_OPEN)
        return;
    set_state(r, RQ_CLOSING);
    r->closed = closed;
    r->closed_arg = arg;
    cms_nats_unsubscribe(r->sub);
    r->sub = NULL;
    /* answered on a later turn: the caller may be inside one of our callbacks */
    uv_idle_start(&r->fail_all, fail_pending);
}

void cms_request_destroy(cms_request *r)
{
    free(r);
}
