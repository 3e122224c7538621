/* The writer thread, the only caller of the connection, and nats.c's
 * callbacks, which only record and wake the loop; see nats_int.h. */
#include "nats_int.h"

#include "backoff.h"
#include "log.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>

#define DRAIN_TIMEOUT_MS 2000
#define CLOSE_WAIT_MS 3000    /* for nats.c to report a closed connection / ended subs */
#define PING_INTERVAL_MS 2000 /* with 2 pings out: a frozen server is seen in 4-6 s */
#define MAX_PINGS_OUT 2
#define RECONNECT_WAIT_MS 250
#define RECONNECT_JITTER_MS 250
#define RECONNECT_BUF_BYTES (8 * 1024 * 1024)
#define CONNECT_TIMEOUT_MS 2000
/* nats.c writes with its connection lock held; without a deadline a frozen
 * server with full socket buffers would hold it (and the writer) forever. */
#define WRITE_DEADLINE_MS 2000

static const char *const w_names[] = {W_STATES(CMS_ENUM_TEXT)};
static const bool w_moves[W_NSTATES][W_NSTATES] = {
    [W_RUNNING] = {[W_CLOSE_REQUESTED] = true},
    [W_CLOSE_REQUESTED] = {[W_GONE] = true},
};
static const cms_fsm w_fsm = CMS_FSM_INIT("nats writer", CMS_LOG_DEBUG, w_names, w_moves);

/* wmu held */
static void set_wstate_locked(cms_nats *n, w_state to)
{
    n->wstate = (w_state)cms_fsm_step(&w_fsm, n->wstate, to, n->name);
}

/* ---- the op queue (loop -> writer) ---- */

bool nats_push_op(cms_nats *n, op *o, bool *busy)
{
    bool ok = false;
    if (busy)
        *busy = false;
    uv_mutex_lock(&n->wmu);
    if (n->wstate != W_GONE) {
        if (o->kind == OP_PUB && n->core_pubs_queued >= n->queue_cap) {
            if (busy)
                *busy = true;
        } else {
            if (o->kind == OP_PUB)
                n->core_pubs_queued++;
            o->next = NULL;
            if (n->wtail != NULL)
                n->wtail->next = o;
            else
                n->whead = o;
            n->wtail = o;
            uv_cond_signal(&n->wcond);
            ok = true;
        }
    }
    uv_mutex_unlock(&n->wmu);
    return ok;
}

op *nats_op_new(op_kind kind)
{
    op *o = calloc(1, sizeof *o);
    if (o != NULL)
        o->kind = kind;
    return o;
}

void nats_writer_request_close(cms_nats *n)
{
    uv_mutex_lock(&n->wmu);
    if (n->wstate == W_RUNNING)
        set_wstate_locked(n, W_CLOSE_REQUESTED);
    uv_cond_signal(&n->wcond);
    uv_mutex_unlock(&n->wmu);
}

/* ---- nats.c callbacks: only record and wake the loop ---- */

static void note_max_payload(cms_nats *n, natsConnection *nc)
{
    int64_t mp = natsConnection_GetMaxPayload(nc);
    if (mp > 0)
        atomic_store(&n->max_payload, mp);
}

static void conn_event(cms_nats *n, natsConnection *nc, nc_state to, bool reconnect)
{
    if (to == NC_UP && nc != NULL)
        note_max_payload(n, nc);
    uv_mutex_lock(&n->mu);
    if (to == NC_UP)
        n->auth_refused = false;
    if (n->ncstate != NC_CLOSED)
        nats_report_locked(n, to);
    if (reconnect)
        n->reconnects++;
    nats_poke_locked(n);
    uv_mutex_unlock(&n->mu);
}

static void on_connected(natsConnection *nc, void *closure)
{
    conn_event(closure, nc, NC_UP, false);
}

static void on_disconnected(natsConnection *nc, void *closure)
{
    conn_event(closure, nc, NC_DOWN, false);
}

static void on_reconnected(natsConnection *nc, void *closure)
{
    conn_event(closure, nc, NC_UP, true);
}

static void on_closed(natsConnection *nc, void *closure)
{
    (void)nc;
    cms_nats *n = closure;
    uv_mutex_lock(&n->mu);
    if (n->ncstate != NC_CLOSED)
        nats_report_locked(n, NC_CLOSED);
    uv_cond_broadcast(&n->cond);
    nats_poke_locked(n);
    uv_mutex_unlock(&n->mu);
}

/* nats.c passes the server's text of the error as this thread's last error. */
static void on_async_error(natsConnection *nc, natsSubscription *ns, natsStatus err, void *closure)
{
    (void)nc;
    (void)ns;
    cms_nats *n = closure;
    const char *text = err == NATS_NOT_PERMITTED ? nats_GetLastError(NULL) : NULL;
    if (err == NATS_NOT_PERMITTED)
        cms_counter_inc(n->m_perm);
    uv_mutex_lock(&n->mu);
    if (err == NATS_CONNECTION_AUTH_FAILED) {
        n->auth_refused = true;
    } else if (err == NATS_NOT_PERMITTED) {
        /* only the text: the loop logs each subject once, the rest is counted */
        if (text != NULL && n->nperm < PERM_PENDING_MAX)
            snprintf(n->perm_texts[n->nperm++], PERM_TEXT_MAX, "%s", text);
    } else {
        n->async_errors++;
        n->last_async_error = err;
    }
    nats_poke_locked(n);
    uv_mutex_unlock(&n->mu);
}

/* nats.c's JetStream publish-ack handler: we own msg from here on. */
static void on_pub_ack(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure)
{
    (void)js;
    cms_nats *n = closure;
    uv_mutex_lock(&n->mu);
    pub *p = nats_inflight_find_locked(n, msg);
    if (p != NULL) {
        if (pa != NULL)
            nats_pub_complete_locked(n, p, NATS_OK, 0, NULL, pa->Duplicate, pa->Sequence,
                                     pa->Stream);
        else
            nats_pub_complete_locked(n, p, pae != NULL ? pae->Err : NATS_ERR,
                                     pae != NULL ? pae->ErrCode : 0,
                                     pae != NULL ? pae->ErrText : NULL, false, 0, NULL);
    }
    uv_mutex_unlock(&n->mu);
    if (p == NULL)
        natsMsg_Destroy(msg);
}

cms_natsauth_err nats_set_options(cms_nats *n, const cms_nats_security *sec, char *why,
                                  size_t whylen)
{
    natsStatus st = natsOptions_Create(&n->opts);
    if (st == NATS_OK)
        st = natsOptions_SetName(n->opts, n->name);
    if (st == NATS_OK)
        st = natsOptions_SetMaxReconnect(n->opts, -1);
    if (st == NATS_OK)
        st = natsOptions_SetReconnectWait(n->opts, RECONNECT_WAIT_MS);
    if (st == NATS_OK)
        st = natsOptions_SetReconnectJitter(n->opts, RECONNECT_JITTER_MS, RECONNECT_JITTER_MS * 4);
    if (st == NATS_OK)
        st = natsOptions_SetRetryOnFailedConnect(n->opts, true, on_connected, n);
    if (st == NATS_OK)
        st = natsOptions_SetReconnectBufSize(n->opts, RECONNECT_BUF_BYTES);
    if (st == NATS_OK)
        st = natsOptions_SetPingInterval(n->opts, PING_INTERVAL_MS);
    if (st == NATS_OK)
        st = natsOptions_SetMaxPingsOut(n->opts, MAX_PINGS_OUT);
    if (st == NATS_OK)
        st = natsOptions_SetTimeout(n->opts, CONNECT_TIMEOUT_MS);
    if (st == NATS_OK)
        st = natsOptions_SetWriteDeadline(n->opts, WRITE_DEADLINE_MS);
    if (st == NATS_OK)
        st = natsOptions_SetDisconnectedCB(n->opts, on_disconnected, n);
    if (st == NATS_OK)
        st = natsOptions_SetReconnectedCB(n->opts, on_reconnected, n);
    if (st == NATS_OK)
        st = natsOptions_SetClosedCB(n->opts, on_closed, n);
    if (st == NATS_OK)
        st = natsOptions_SetErrorHandler(n->opts, on_async_error, n);
    if (st == NATS_OK && n->send_asap)
        st = natsOptions_SetSendAsap(n->opts, true);
    if (st != NATS_OK) {
        snprintf(why, whylen, "%s", natsStatus_GetText(st));
        return st == NATS_NO_MEMORY ? CMS_NATSAUTH_ENOMEM : CMS_NATSAUTH_EINVAL;
    }
    return cms_natsauth_apply(n->opts, n->url, sec, &n->auth, why, whylen);
}

/* ---- running ops ---- */

static void writer_js_publish(cms_nats *n, jsCtx *js, pub *p)
{
    natsStatus st = NATS_ERR;
    natsMsg *m = p->m;
    if (js != NULL) {
        jsPubOptions po;
        jsPubOptions_Init(&po);
        /* nats.c then answers every publish, by ack or by timeout */
        po.MaxWait = n->pub_timeout_ms;
        n->wjs_published++;
        st = js_PublishMsgAsync(js, &m, &po);
    }
    if (st == NATS_OK)
        return; /* p may already be completed and freed */
    /* not taken by nats.c: no ack will come */
    uv_mutex_lock(&n->mu);
    nats_pub_complete_locked(n, p, st, 0, nats_GetLastError(NULL), false, 0, NULL);
    uv_mutex_unlock(&n->mu);
}

/* The JetStream ack protocol, as natsMsg_Ack & co. send it (those need a
 * JetStream subscription; ours is a plain one, see nats_pull.c). */
static void writer_settle(natsConnection *nc, natsMsg *m, settle_kind k, int64_t delay_ms)
{
    char body[64];
    switch (k) {
    case SETTLE_ACK:
        snprintf(body, sizeof body, "+ACK");
        break;
    case SETTLE_NAK:
        if (delay_ms > 0)
            snprintf(body, sizeof body, "-NAK {\"delay\":%" PRId64 "}", delay_ms * NS_PER_MS);
        else
            snprintf(body, sizeof body, "-NAK");
        break;
    case SETTLE_TERM:
        snprintf(body, sizeof body, "+TERM");
        break;
    case SETTLE_WPI:
        snprintf(body, sizeof body, "+WPI");
        break;
    }
    const char *reply = natsMsg_GetReply(m);
    natsStatus st =
        reply != NULL ? natsConnection_PublishString(nc, reply, body) : NATS_INVALID_ARG;
    if (st != NATS_OK) /* the server redelivers after AckWait */
        cms_log_warn("nats: ack not sent", "{s:s}", "error", natsStatus_GetText(st));
}

/* Runs one op. closed: the connection is gone; only release what the op owns. */
static void writer_run(cms_nats *n, natsConnection *nc, jsCtx *js, op *o, bool closed)
{
    switch (o->kind) {
    case OP_SUB:
        if (closed || nc == NULL) {
            o->sub->ev.kind = EV_SUB_DONE;
            (void)nats_push_ev(n, &o->sub->ev);
        } else {
            nats_writer_subscribe(n, nc, o->sub);
        }
        break;
    case OP_UNSUB:
        if (!closed)
            nats_writer_unsubscribe(n, o->sub);
        nats_writer_unsub_done(n, o->sub);
        break;
    case OP_PUB:
        if (!closed && nc != NULL) {
            natsStatus st = natsConnection_PublishMsg(nc, o->m);
            if (st != NATS_OK)
                cms_log_warn("nats: publish failed", "{s:s, s:s}", "subject",
                             natsMsg_GetSubject(o->m), "error", natsStatus_GetText(st));
        }
        natsMsg_Destroy(o->m);
        break;
    case OP_JSPUB:
        /* closed: the record stays in flight and the loop fails it */
        if (!closed)
            writer_js_publish(n, js, o->p);
        break;
    case OP_SETTLE:
        if (!closed && nc != NULL)
            writer_settle(nc, o->m, o->settle, o->delay_ms);
        break;
    case OP_MSG_FREE:
        natsMsg_Destroy(o->m);
        break;
    }
    free(o);
}

/* The ops queued so far; *close_requested once the loop asked to close. */
static op *writer_take(cms_nats *n, bool *close_requested)
{
    uv_mutex_lock(&n->wmu);
    while (n->whead == NULL && n->wstate == W_RUNNING)
        uv_cond_wait(&n->wcond, &n->wmu);
    op *batch = n->whead;
    n->whead = n->wtail = NULL;
    n->core_pubs_queued = 0;
    *close_requested = n->wstate != W_RUNNING;
    uv_mutex_unlock(&n->wmu);
    return batch;
}

/* One attempt without nats.c's retrying, to learn why it fails: its
 * retries in the background say nothing, and it gives up for good after a
 * second refusal of the credentials. nc is set on NATS_OK only; why gets
 * nats.c's text of a failure. */
static natsStatus writer_probe(cms_nats *n, natsConnection **nc, char *why, size_t len)
{
    natsStatus st = natsOptions_SetRetryOnFailedConnect(n->opts, false, NULL, NULL);
    if (st == NATS_OK)
        st = natsConnection_Connect(nc, n->opts);
    const char *last = nats_GetLastError(NULL);
    snprintf(why, len, "%s", last != NULL ? last : natsStatus_GetText(st));
    /* the connection made keeps the options it was made with */
    natsStatus back = natsOptions_SetRetryOnFailedConnect(n->opts, true, on_connected, n);
    if (st == NATS_OK && back != NATS_OK) {
        natsConnection_Destroy(*nc);
        *nc = NULL;
        st = back;
    }
    return st;
}

/* Connects (in the background while the server is down: nats.c retries).
 * While the server refuses the credentials it is asked again here, with
 * backoff, so that fixing them on either side needs no restart. Returns
 * NULL only once close was requested. */
static natsConnection *writer_connect(cms_nats *n)
{
    natsConnection *nc = NULL;
    natsStatus said = NATS_OK; /* the last probe failure logged */
    cms_backoff b;
    cms_backoff_init(&b, BACKOFF_MIN_MS * 10, BACKOFF_MAX_MS);
    for (;;) {
        char why[512];
        natsStatus st = writer_probe(n, &nc, why, sizeof why);
        if (st == NATS_CONNECTION_AUTH_FAILED) {
            uv_mutex_lock(&n->mu);
            n->auth_refused = true; /* the loop says it, once */
            nats_poke_locked(n);
            uv_mutex_unlock(&n->mu);
        } else if (st != NATS_OK) {
            /* a server that is down is the normal start; TLS failures are not */
            if (st != NATS_NO_SERVER && st != said)
                cms_log_error("nats: cannot connect; retrying in the background", "{s:s, s:s, s:s}",
                              "url", n->url_shown, "error", natsStatus_GetText(st), "detail", why);
            said = st;
            st = natsConnection_Connect(&nc, n->opts);
        }
        if (st == NATS_OK || st == NATS_NOT_YET_CONNECTED) {
            if (st == NATS_OK) {
                note_max_payload(n, nc);
                uv_mutex_lock(&n->mu);
                /* a callback that already ran knows better */
                if (n->ncstate == NC_NONE)
                    nats_report_locked(n, NC_UP);
                n->auth_refused = false;
                nats_poke_locked(n);
                uv_mutex_unlock(&n->mu);
            }
            return nc;
        }
        uint64_t delay = cms_backoff_next(&b);
        if (st != NATS_CONNECTION_AUTH_FAILED)
            cms_log_error("nats: cannot connect", "{s:s, s:s, s:I}", "url", n->url_shown, "error",
                          natsStatus_GetText(st), "retry_ms", (json_int_t)delay);
        uv_mutex_lock(&n->wmu);
        uint64_t deadline = uv_hrtime() + delay * NS_PER_MS;
        while (n->wstate == W_RUNNING && nats_wait_until(&n->wcond, &n->wmu, deadline)) {
        }
        bool stop = n->wstate != W_RUNNING;
        uv_mutex_unlock(&n->wmu);
        if (stop)
            return NULL;
    }
}

/* Waits (mu held) while pred(n) holds, at most ms. False on timeout. */
static bool wait_while_locked(cms_nats *n, bool (*pred)(const cms_nats *), int64_t ms)
{
    uint64_t deadline = uv_hrtime() + (uint64_t)ms * NS_PER_MS;
    while (pred(n)) {
        if (!nats_wait_until(&n->cond, &n->mu, deadline))
            return false;
    }
    return true;
}

static bool not_closed(const cms_nats *n)
{
    return n->ncstate != NC_CLOSED;
}

static bool subs_live(const cms_nats *n)
{
    return n->nats_subs_live > 0;
}

/* Publishes nats.c still holds are taken back (their records stay in flight
 * for the loop to fail); the others are being answered right now by a
 * handler, which we wait for, so that no handler runs after we return. */
static void writer_reclaim_pending(cms_nats *n, jsCtx *js)
{
    natsMsgList pending = {0};
    if (js_PublishAsyncGetPendingList(&pending, js) != NATS_OK)
        pending.Count = 0;
    uv_mutex_lock(&n->mu);
    uint64_t deadline = uv_hrtime() + (uint64_t)CLOSE_WAIT_MS * NS_PER_MS;
    while (n->icount > pending.Count && nats_wait_until(&n->cond, &n->mu, deadline)) {
    }
    for (int i = 0; i < pending.Count; i++) {
        if (nats_inflight_find_locked(n, pending.Msgs[i]) != NULL)
            pending.Msgs[i] = NULL; /* the record's: the loop destroys it */
    }
    uv_mutex_unlock(&n->mu);
    natsMsgList_Destroy(&pending);
}

static void writer_close(cms_nats *n, natsConnection *nc, jsCtx *js)
{
    /* 1. helpers: blocking JetStream calls end within their own timeouts */
    uv_mutex_lock(&n->mu);
    while (n->prov_running > 0)
        uv_cond_wait(&n->cond, &n->mu);
    uv_mutex_unlock(&n->mu);
    for (cms_nats_consumer *c = n->consumers; c != NULL; c = c->next) {
        if (c->thread_started) {
            uv_thread_join(&c->thread);
            c->thread_started = false;
        }
    }
    if (nc == NULL)
        return;

    /* 2. in-flight publishes: each answers within its MaxWait */
    if (js != NULL) {
        jsPubOptions po;
        jsPubOptions_Init(&po);
        po.MaxWait = n->pub_timeout_ms + 1000;
        (void)js_PublishAsyncComplete(js, &po);
    }

    /* 3. drain (flushes what we wrote) and close; nats.c reports the end of
     * each core subscription, after which the loop may free it */
    size_t nsubs = 0;
    for (cms_nats_sub *s = n->wsubs; s != NULL; s = s->wnext)
        nsubs++;
    natsSubscription **subs = calloc(nsubs + 1, sizeof *subs);
    size_t k = 0;
    for (cms_nats_sub *s = n->wsubs; s != NULL; s = s->wnext) {
        if (subs != NULL)
            subs[k++] = s->ns;
        s->ns = NULL;
    }
    n->wsubs = NULL;
    natsStatus st = natsConnection_DrainTimeout(nc, DRAIN_TIMEOUT_MS);
    uv_mutex_lock(&n->mu);
    bool closed_ok = st == NATS_OK && wait_while_locked(n, not_closed, DRAIN_TIMEOUT_MS + 1000);
    uv_mutex_unlock(&n->mu);
    if (!closed_ok) {
        natsConnection_Close(nc);
        uv_mutex_lock(&n->mu);
        if (!wait_while_locked(n, not_closed, CLOSE_WAIT_MS))
            cms_log_warn("nats: closed callback not seen", NULL);
        uv_mutex_unlock(&n->mu);
    }
    /* nats.c 3.4.1 crashes on a context that never published */
    if (js != NULL && n->wjs_published > 0)
        writer_reclaim_pending(n, js);
    uv_mutex_lock(&n->mu);
    if (!wait_while_locked(n, subs_live, CLOSE_WAIT_MS))
        cms_log_warn("nats: subscriptions did not end", "{s:i}", "live", n->nats_subs_live);
    uv_mutex_unlock(&n->mu);
    for (size_t i = 0; i < k; i++)
        natsSubscription_Destroy(subs[i]);
    free(subs);
}

void nats_writer_main(void *arg)
{
    cms_nats *n = arg;
    jsCtx *js = NULL;
    natsConnection *nc = writer_connect(n);
    if (nc != NULL) {
        jsOptions jo;
        jsOptions_Init(&jo);
        jo.Wait = JS_API_WAIT_MS;
        jo.PublishAsync.AckHandler = on_pub_ack;
        jo.PublishAsync.AckHandlerClosure = n;
        /* far above our own cap, so nats.c never stalls a publish */
        jo.PublishAsync.MaxPending = (int64_t)n->max_inflight * 4 + 1024;
        natsStatus st = natsConnection_JetStream(&js, nc, &jo);
        if (st != NATS_OK) {
            cms_log_error("nats: no JetStream context", "{s:s}", "error", natsStatus_GetText(st));
            js = NULL;
        }
    }
    uv_mutex_lock(&n->mu);
    n->nc = nc;
    n->js = js;
    uv_cond_broadcast(&n->cond);
    uv_mutex_unlock(&n->mu);

    bool close_requested = false;
    while (!close_requested) {
        op *o = writer_take(n, &close_requested);
        while (o != NULL) {
            op *next = o->next;
            writer_run(n, nc, js, o, false);
            o = next;
        }
    }

    writer_close(n, nc, js);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);

    uv_mutex_lock(&n->wmu);
    set_wstate_locked(n, W_GONE);
    op *rest = n->whead;
    n->whead = n->wtail = NULL;
    uv_mutex_unlock(&n->wmu);
    while (rest != NULL) {
        op *next = rest->next;
        writer_run(n, NULL, NULL, rest, true);
        rest = next;
    }

    uv_mutex_lock(&n->mu);
    n->nc = NULL;
    n->js = NULL;
    n->done_ev.kind = EV_WRITER_DONE;
    (void)nats_push_locked(n, &n->done_ev);
    uv_mutex_unlock(&n->mu);
}
