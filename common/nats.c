/* NATS for one service: the thread hand-off around nats.c; see nats.h.
 *
 * Threads and what each may touch:
 *
 *   loop      everything marked "loop" below; calls nats.c only to read
 *             immutable parts of a received message (subject, reply, data)
 *             and to build outgoing messages.
 *   writer    the only caller of connection functions: connect, subscribe,
 *             publish, JetStream publish, ack/nak/term, close. Fed by the
 *             op queue (wmu/wcond).
 *   nats.c    its callbacks (messages, publish acks, connection events) only
 *             push onto the event queue (mu) and uv_async_send.
 *   fetch     one per consumer: creates/binds the durable, then fetches while
 *             it has credit (consumer mu/cond).
 *   provision one per cms_nats_provision call: blocking JetStream API calls.
 *
 * Lock order: a thread holding n->mu takes no other lock except inside
 * uv_async_send; wmu and a consumer's mu are never held together with mu.
 *
 * Lifetimes: the loop frees a message wrapper, a publish record or a
 * subscription only after the last event that names it has been drained,
 * which the queue's order guarantees (nats.c signals a subscription's end
 * only after its message handler returned). Consumers and the hub live until
 * cms_nats_destroy. */
#include "nats.h"

#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <nats/nats.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "backoff.h"
#include "log.h"
#include "metrics.h"

#define DEFAULT_QUEUE_CAP 8192
#define DEFAULT_INFLIGHT 256
#define DEFAULT_PUB_TIMEOUT_MS 5000
#define DEFAULT_MAX_ACK_PENDING 1024
#define DEFAULT_FETCH_BATCH 256
#define DEFAULT_ACK_WAIT_MS 30000

#define FETCH_TIMEOUT_MS 1000 /* lifetime of one pull request */
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define REBIND_AFTER_ERRORS 3 /* consecutive fetch errors before re-creating the binding */
#define JS_API_WAIT_MS 5000   /* blocking JetStream API calls (helper threads only) */
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

#define NS_PER_MS INT64_C(1000000)

/* ------------------------------------------------------------------------ */
/* types */

typedef enum {
    N_CONNECTING, /* never connected yet */
    N_CONNECTED,
    N_DISCONNECTED, /* lost; nats.c reconnects */
    N_CLOSING,      /* cms_nats_close called; writer tearing down */
    N_CLOSED,       /* writer gone, async handle closing or closed */
} n_state;

typedef enum { EV_MSG, EV_PUB, EV_PROVISIONED, EV_SUB_DONE, EV_UNSUB_DONE, EV_WRITER_DONE } ev_kind;

/* An item of the event queue (nats.c threads, writer, helpers -> loop). */
typedef struct ev {
    struct ev *next;
    ev_kind kind;
} ev;

typedef enum { OP_SUB, OP_UNSUB, OP_PUB, OP_JSPUB, OP_SETTLE, OP_MSG_FREE, OP_CLOSE } op_kind;
typedef enum { SETTLE_ACK, SETTLE_NAK, SETTLE_TERM, SETTLE_WPI } settle_kind;

typedef struct pub pub;

/* An item of the op queue (loop -> writer). */
typedef struct op {
    struct op *next;
    op_kind kind;
    natsMsg *m;        /* OP_PUB (owned), OP_SETTLE (borrowed), OP_MSG_FREE (owned) */
    cms_nats_sub *sub; /* OP_SUB, OP_UNSUB */
    pub *p;            /* OP_JSPUB */
    settle_kind settle;
    int64_t delay_ms;
} op;

typedef struct hdr_pair {
    const char *key, *value;
} hdr_pair;

struct cms_nats_msg {
    ev ev; /* first: the message is its own event */
    cms_nats *n;
    natsMsg *m;
    cms_nats_sub *sub;           /* core: until dispatched */
    cms_nats_consumer *consumer; /* JetStream: credit goes back here */
    hdr_pair *hdrs;              /* copied where received: loop reads never touch nats.c state */
    size_t nhdrs;
    char *hdrbuf;
    char *stream; /* JetStream: the stream it came from */
    uint64_t stream_seq, num_delivered, num_pending;
    bool settled; /* loop: acked/naked/termed (credit returned) */
    bool handed;  /* loop: an op names m, so the writer must free it */
};

struct pub {
    ev ev;
    pub *iprev, *inext; /* in-flight list (mu) */
    natsMsg *m;
    cms_nats_pub_cb done;
    void *arg;
    /* result, written under mu by whoever completes it */
    bool answered;
    natsStatus status;
    jsErrCode jerr;
    bool duplicate;
    uint64_t seq;
    char errtext[160];
};

struct cms_nats_sub {
    ev ev;       /* EV_SUB_DONE: nats.c is done with it */
    ev unsub_ev; /* EV_UNSUB_DONE: the writer is done with the unsubscribe op */
    cms_nats *n;
    cms_nats_sub *next;  /* loop: all subscriptions */
    cms_nats_sub *wnext; /* writer: live nats subscriptions */
    char *subject, *queue;
    cms_nats_msg_cb cb;
    void *arg;
    int refs;             /* loop: the caller's (then the unsubscribe op's), nats.c's */
    bool closing;         /* loop */
    natsSubscription *ns; /* writer */
};

struct cms_nats_consumer {
    cms_nats *n;
    cms_nats_consumer *next; /* loop list; frozen once closing (the writer then walks it) */
    char *stream, *durable, *filter;
    int max_ack_pending, fetch_batch, max_deliver;
    int64_t ack_wait_ms;
    cms_nats_msg_cb cb;
    void *arg;
    uv_thread_t thread;
    bool thread_started; /* loop until closing, then writer */
    uv_mutex_t mu;       /* guards the four below */
    uv_cond_t cond;
    int credit;
    bool paused, stop;
    /* fetch thread */
    natsSubscription *ns; /* plain subscription on inbox */
    natsInbox *inbox;
    char *next_subj; /* $JS.API.CONSUMER.MSG.NEXT.<stream>.<durable> */
    int req_left;    /* messages our open pull request may still bring */
    uint64_t req_deadline;
};

typedef struct prov {
    ev ev;
    cms_nats *n;
    cms_nats_stream_spec *specs; /* strings owned */
    size_t count;
    void (*done)(void *arg, cms_nats_err err);
    void *arg;
    cms_nats_err result;
} prov;

struct cms_nats {
    /* loop */
    uv_loop_t *loop;
    uv_async_t async;
    n_state state;
    char *url, *name;
    size_t queue_cap;
    bool send_asap;
    int max_inflight;
    int64_t pub_timeout_ms;
    void (*on_state)(void *arg, bool connected);
    void *state_arg;
    void (*on_room)(void *arg);
    void *room_arg;
    bool room_wanted;
    int inflight;
    int live_msgs; /* handed to handlers, not yet destroyed */
    uint64_t reconnects_seen;
    uint64_t errors_seen;
    cms_nats_sub *subs;
    cms_nats_consumer *consumers;
    bool writer_done;
    ev done_ev;      /* EV_WRITER_DONE */
    bool sync_ready; /* mu, cond, wmu, wcond initialised */
    void (*closed)(void *arg);
    void *closed_arg;
    natsOptions *opts;
    uv_thread_t writer;

    /* mu: the event queue and what nats.c callbacks report */
    uv_mutex_t mu;
    uv_cond_t cond; /* readiness, provisioning end, close waits */
    ev *head, *tail;
    size_t core_queued;
    bool in_closed;     /* no more events; nothing may touch the async handle */
    bool closing;       /* helpers: stop */
    natsConnection *nc; /* set once by the writer; helpers wait for it */
    jsCtx *js;
    bool conn_changed, conn_up;
    uint64_t conn_events, reconnects, async_errors;
    natsStatus last_async_error;
    bool nats_closed;   /* nats.c's closed callback ran */
    int nats_subs_live; /* core subscriptions whose end nats.c has not reported */
    int prov_running;
    pub *ihead, *itail; /* in flight */
    int icount;

    /* wmu: the op queue */
    uv_mutex_t wmu;
    uv_cond_t wcond;
    op *whead, *wtail;
    size_t core_pubs_queued;
    bool wclose_requested;
    bool wclosed; /* writer has left: callers handle ops themselves */

    /* writer */
    cms_nats_sub *wsubs;
    bool wjs_used; /* a JetStream publish was made (nats.c's pending map exists) */

    /* metrics (atomic; any thread) */
    cms_counter *m_reconnects, *m_dropped, *m_published, *m_pub_errors;
    cms_gauge *m_connected, *m_inflight;
};

/* ------------------------------------------------------------------------ */
/* small helpers */

const char *cms_nats_strerror(cms_nats_err e)
{
    switch (e) {
    case CMS_NATS_OK:
        return "ok";
    case CMS_NATS_EINVAL:
        return "invalid argument";
    case CMS_NATS_EBUSY:
        return "busy";
    case CMS_NATS_ECLOSED:
        return "closed";
    case CMS_NATS_EIO:
        return "i/o error";
    case CMS_NATS_ETIMEOUT:
        return "timed out";
    case CMS_NATS_ENOMEM:
        return "out of memory";
    }
    return "unknown";
}

static const char *state_name(n_state s)
{
    switch (s) {
    case N_CONNECTING:
        return "connecting";
    case N_CONNECTED:
        return "connected";
    case N_DISCONNECTED:
        return "disconnected";
    case N_CLOSING:
        return "closing";
    case N_CLOSED:
        return "closed";
    }
    return "unknown";
}

static cms_nats_err err_from_status(natsStatus s)
{
    switch (s) {
    case NATS_OK:
        return CMS_NATS_OK;
    case NATS_TIMEOUT:
        return CMS_NATS_ETIMEOUT;
    case NATS_NO_MEMORY:
        return CMS_NATS_ENOMEM;
    case NATS_INVALID_ARG:
    case NATS_INVALID_SUBJECT:
        return CMS_NATS_EINVAL;
    case NATS_CONNECTION_CLOSED:
    case NATS_DRAINING:
        return CMS_NATS_ECLOSED;
    default:
        return CMS_NATS_EIO;
    }
}

static char *dupstr(const char *s)
{
    return s == NULL ? NULL : strdup(s);
}

/* Timed wait on cond (mu held) until deadline_ns (uv_hrtime clock). Returns
 * false once the deadline has passed. */
static bool wait_until(uv_cond_t *cond, uv_mutex_t *mu, uint64_t deadline_ns)
{
    uint64_t now = uv_hrtime();
    if (now >= deadline_ns)
        return false;
    (void)uv_cond_timedwait(cond, mu, deadline_ns - now);
    return true;
}

/* Loop: the only place the state changes. */
static void set_state(cms_nats *n, n_state to)
{
    n_state from = n->state;
    bool ok;
    switch (to) {
    case N_CONNECTED:
        ok = from == N_CONNECTING || from == N_DISCONNECTED;
        break;
    case N_DISCONNECTED:
        ok = from == N_CONNECTED;
        break;
    case N_CLOSING:
        ok = from < N_CLOSING;
        break;
    case N_CLOSED:
        ok = from == N_CLOSING;
        break;
    case N_CONNECTING:
        ok = false;
        break;
    default:
        ok = false;
        break;
    }
    if (!ok) {
        cms_log_error("nats: invalid state transition", "{s:s, s:s}", "from", state_name(from),
                      "to", state_name(to));
        return;
    }
    cms_log_info("nats state", "{s:s, s:s, s:s}", "name", n->name, "from", state_name(from), "to",
                 state_name(to));
    n->state = to;
    cms_gauge_set(n->m_connected, to == N_CONNECTED ? 1.0 : 0.0);
}

/* ------------------------------------------------------------------------ */
/* the event queue (any thread -> loop) */

/* mu held. False if the queue no longer takes events. */
static bool push_locked(cms_nats *n, ev *e)
{
    if (n->in_closed)
        return false;
    e->next = NULL;
    if (n->tail != NULL)
        n->tail->next = e;
    else
        n->head = e;
    n->tail = e;
    uv_async_send(&n->async);
    return true;
}

static bool push_ev(cms_nats *n, ev *e)
{
    uv_mutex_lock(&n->mu);
    bool ok = push_locked(n, e);
    uv_mutex_unlock(&n->mu);
    return ok;
}

uint64_t cms_nats_dropped(const cms_nats *n)
{
    return n ? cms_counter_get(n->m_dropped) : 0;
}

/* A core message: dropped (false) when queue_cap of them are waiting. */
static bool push_core_msg(cms_nats *n, ev *e)
{
    bool ok = false;
    uv_mutex_lock(&n->mu);
    if (n->core_queued < n->queue_cap && push_locked(n, e)) {
        n->core_queued++;
        ok = true;
    }
    uv_mutex_unlock(&n->mu);
    return ok;
}

/* Wakes the loop to look at the connection flags (mu held). */
static void poke_locked(cms_nats *n)
{
    if (!n->in_closed)
        uv_async_send(&n->async);
}

/* ------------------------------------------------------------------------ */
/* the op queue (loop -> writer) */

/* Loop. False once the writer has left (the caller handles the op itself)
 * or, for a core publish, when queue_cap of them wait (*busy set). */
static bool push_op(cms_nats *n, op *o, bool *busy)
{
    bool ok = false;
    if (busy)
        *busy = false;
    uv_mutex_lock(&n->wmu);
    if (!n->wclosed) {
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

static op *op_new(op_kind kind)
{
    op *o = calloc(1, sizeof *o);
    if (o != NULL)
        o->kind = kind;
    return o;
}

/* ------------------------------------------------------------------------ */
/* received messages */

static void msg_free_raw(cms_nats_msg *m)
{
    if (m == NULL)
        return;
    natsMsg_Destroy(m->m);
    free(m->hdrs);
    free(m->hdrbuf);
    free(m->stream);
    free(m);
}

/* Any thread that owns nm: wraps it, copying its headers, so the loop never
 * calls into nats.c state that the writer might be changing (an ack sets a
 * flag in the same natsMsg). On failure nm is still the caller's. */
static cms_nats_msg *msg_wrap(cms_nats *n, natsMsg *nm)
{
    cms_nats_msg *m = calloc(1, sizeof *m);
    const char **keys = NULL;
    int nkeys = 0;
    bool ok = false;
    if (m == NULL)
        goto out;
    m->ev.kind = EV_MSG;
    m->n = n;
    natsStatus s = natsMsgHeader_Keys(nm, &keys, &nkeys);
    if (s == NATS_NOT_FOUND) {
        nkeys = 0;
        s = NATS_OK;
    }
    if (s != NATS_OK)
        goto out;
    size_t npairs = 0, bytes = 0;
    for (int pass = 0; pass < 2; pass++) {
        size_t at = 0, off = 0;
        for (int i = 0; i < nkeys; i++) {
            const char **vals = NULL;
            int nvals = 0;
            if (natsMsgHeader_Values(nm, keys[i], &vals, &nvals) != NATS_OK)
                continue;
            size_t kl = strlen(keys[i]);
            for (int j = 0; j < nvals; j++) {
                size_t vl = strlen(vals[j]);
                if (pass == 0) {
                    npairs++;
                    bytes += kl + 1 + vl + 1;
                } else if (at < npairs && off + kl + vl + 2 <= bytes) {
                    char *k = m->hdrbuf + off;
                    memcpy(k, keys[i], kl + 1);
                    char *v = k + kl + 1;
                    memcpy(v, vals[j], vl + 1);
                    m->hdrs[at].key = k;
                    m->hdrs[at].value = v;
                    at++;
                    off += kl + vl + 2;
                }
            }
            free((void *)vals);
        }
        if (pass == 0 && npairs > 0) {
            m->hdrs = calloc(npairs, sizeof *m->hdrs);
            m->hdrbuf = malloc(bytes);
            if (m->hdrs == NULL || m->hdrbuf == NULL)
                goto out;
        }
        if (pass == 1)
            m->nhdrs = at;
    }
    m->m = nm;
    ok = true;
out:
    free((void *)keys);
    if (!ok && m != NULL) {
        free(m->hdrs);
        free(m->hdrbuf);
        free(m);
        m = NULL;
    }
    return m;
}

static void return_credit(cms_nats_consumer *c)
{
    uv_mutex_lock(&c->mu);
    c->credit++;
    uv_cond_signal(&c->cond);
    uv_mutex_unlock(&c->mu);
}

/* ------------------------------------------------------------------------ */
/* nats.c callbacks: only record and wake the loop */

static void on_core_msg(natsConnection *nc, natsSubscription *ns, natsMsg *nm, void *closure)
{
    (void)nc;
    (void)ns;
    cms_nats_sub *s = closure;
    cms_nats *n = s->n;
    cms_nats_msg *m = msg_wrap(n, nm);
    if (m == NULL) {
        natsMsg_Destroy(nm);
        cms_counter_inc(n->m_dropped);
        return;
    }
    m->sub = s;
    if (!push_core_msg(n, &m->ev)) {
        msg_free_raw(m);
        cms_counter_inc(n->m_dropped);
    }
}

/* nats.c calls this after the subscription closed and its handler returned:
 * the last callback naming s. */
static void on_sub_complete(void *closure)
{
    cms_nats_sub *s = closure;
    cms_nats *n = s->n;
    uv_mutex_lock(&n->mu);
    s->ev.kind = EV_SUB_DONE;
    (void)push_locked(n, &s->ev); /* refused only past close: destroy frees s */
    n->nats_subs_live--;
    uv_cond_broadcast(&n->cond);
    uv_mutex_unlock(&n->mu);
}

static void conn_event(cms_nats *n, bool up, bool reconnect)
{
    uv_mutex_lock(&n->mu);
    n->conn_up = up;
    n->conn_changed = true;
    n->conn_events++;
    if (reconnect)
        n->reconnects++;
    poke_locked(n);
    uv_mutex_unlock(&n->mu);
}

static void on_connected(natsConnection *nc, void *closure)
{
    (void)nc;
    conn_event(closure, true, false);
}

static void on_disconnected(natsConnection *nc, void *closure)
{
    (void)nc;
    conn_event(closure, false, false);
}

static void on_reconnected(natsConnection *nc, void *closure)
{
    (void)nc;
    conn_event(closure, true, true);
}

static void on_closed(natsConnection *nc, void *closure)
{
    (void)nc;
    cms_nats *n = closure;
    uv_mutex_lock(&n->mu);
    n->nats_closed = true;
    n->conn_up = false;
    n->conn_changed = true;
    uv_cond_broadcast(&n->cond);
    poke_locked(n);
    uv_mutex_unlock(&n->mu);
}

static void on_async_error(natsConnection *nc, natsSubscription *ns, natsStatus err, void *closure)
{
    (void)nc;
    (void)ns;
    cms_nats *n = closure;
    uv_mutex_lock(&n->mu);
    n->async_errors++;
    n->last_async_error = err;
    poke_locked(n);
    uv_mutex_unlock(&n->mu);
}

/* in-flight list (mu held) */
static void inflight_add_locked(cms_nats *n, pub *p)
{
    p->inext = NULL;
    p->iprev = n->itail;
    if (n->itail != NULL)
        n->itail->inext = p;
    else
        n->ihead = p;
    n->itail = p;
    n->icount++;
}

static void inflight_unlink_locked(cms_nats *n, pub *p)
{
    if (p->iprev != NULL)
        p->iprev->inext = p->inext;
    else
        n->ihead = p->inext;
    if (p->inext != NULL)
        p->inext->iprev = p->iprev;
    else
        n->itail = p->iprev;
    p->iprev = p->inext = NULL;
    n->icount--;
}

/* Acks usually come in publish order, so the match is almost always at the head. */
static pub *inflight_find_locked(cms_nats *n, const natsMsg *m)
{
    for (pub *p = n->ihead; p != NULL; p = p->inext) {
        if (p->m == m)
            return p;
    }
    return NULL;
}

/* Completes p with a result and queues it for the loop (mu held). */
static void pub_complete_locked(cms_nats *n, pub *p, natsStatus s, jsErrCode jerr, const char *text,
                                bool dup, uint64_t seq)
{
    inflight_unlink_locked(n, p);
    p->answered = true;
    p->status = s;
    p->jerr = jerr;
    p->duplicate = dup;
    p->seq = seq;
    if (text != NULL)
        snprintf(p->errtext, sizeof p->errtext, "%s", text);
    p->ev.kind = EV_PUB;
    if (!push_locked(n, &p->ev)) {
        /* past close: nobody will read it */
        natsMsg_Destroy(p->m);
        free(p);
    }
    uv_cond_broadcast(&n->cond);
}

/* nats.c's JetStream publish-ack handler: we own msg from here on. */
static void on_pub_ack(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure)
{
    (void)js;
    cms_nats *n = closure;
    uv_mutex_lock(&n->mu);
    pub *p = inflight_find_locked(n, msg);
    if (p != NULL) {
        if (pa != NULL)
            pub_complete_locked(n, p, NATS_OK, 0, NULL, pa->Duplicate, pa->Sequence);
        else
            pub_complete_locked(n, p, pae != NULL ? pae->Err : NATS_ERR,
                                pae != NULL ? pae->ErrCode : 0, pae != NULL ? pae->ErrText : NULL,
                                false, 0);
    }
    uv_mutex_unlock(&n->mu);
    if (p == NULL)
        natsMsg_Destroy(msg);
}

/* ------------------------------------------------------------------------ */
/* writer thread */

static void writer_subscribe(cms_nats *n, natsConnection *nc, cms_nats_sub *s)
{
    natsSubscription *ns = NULL;
    natsStatus st;
    if (s->queue != NULL)
        st = natsConnection_QueueSubscribe(&ns, nc, s->subject, s->queue, on_core_msg, s);
    else
        st = natsConnection_Subscribe(&ns, nc, s->subject, on_core_msg, s);
    if (st == NATS_OK) {
        /* our callback never blocks; the queue cap is the limit that counts */
        (void)natsSubscription_SetPendingLimits(ns, -1, -1);
        uv_mutex_lock(&n->mu);
        n->nats_subs_live++;
        uv_mutex_unlock(&n->mu);
        st = natsSubscription_SetOnCompleteCB(ns, on_sub_complete, s);
        if (st != NATS_OK) {
            uv_mutex_lock(&n->mu);
            n->nats_subs_live--;
            uv_mutex_unlock(&n->mu);
            natsSubscription_Destroy(ns);
            ns = NULL;
        }
    }
    if (st != NATS_OK) {
        cms_log_error("nats: subscribe failed", "{s:s, s:s}", "subject", s->subject, "error",
                      natsStatus_GetText(st));
        s->ev.kind = EV_SUB_DONE;
        (void)push_ev(n, &s->ev);
        return;
    }
    s->ns = ns;
    s->wnext = n->wsubs;
    n->wsubs = s;
}

/* The op holds a reference to s until unsub_ev is queued. */
static void writer_unsubscribe(cms_nats *n, cms_nats_sub *s)
{
    for (cms_nats_sub **pp = &n->wsubs; *pp != NULL; pp = &(*pp)->wnext) {
        if (*pp == s) {
            *pp = s->wnext;
            break;
        }
    }
    natsSubscription *ns = s->ns;
    s->ns = NULL;
    /* from here on nats.c may report the end (and the loop free s) at any time */
    if (ns != NULL) {
        (void)natsSubscription_Unsubscribe(ns);
        natsSubscription_Destroy(ns);
    }
}

static void writer_unsub_done(cms_nats *n, cms_nats_sub *s)
{
    s->unsub_ev.kind = EV_UNSUB_DONE;
    (void)push_ev(n, &s->unsub_ev); /* s may be freed from here on */
}

static void writer_js_publish(cms_nats *n, jsCtx *js, pub *p)
{
    natsStatus st = NATS_ERR;
    natsMsg *m = p->m;
    if (js != NULL) {
        jsPubOptions po;
        jsPubOptions_Init(&po);
        po.MaxWait =
            n->pub_timeout_ms; /* nats.c then answers every publish, by ack or by timeout */
        n->wjs_used = true;
        st = js_PublishMsgAsync(js, &m, &po);
    }
    if (st == NATS_OK)
        return; /* p may already be completed and freed */
    /* not taken by nats.c: no ack will come */
    uv_mutex_lock(&n->mu);
    pub_complete_locked(n, p, st, 0, nats_GetLastError(NULL), false, 0);
    uv_mutex_unlock(&n->mu);
}

/* The JetStream ack protocol, as natsMsg_Ack & co. send it (those need a
 * JetStream subscription; ours is a plain one, see the consumers below). */
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
            (void)push_ev(n, &o->sub->ev);
        } else {
            writer_subscribe(n, nc, o->sub);
        }
        break;
    case OP_UNSUB:
        if (!closed)
            writer_unsubscribe(n, o->sub);
        writer_unsub_done(n, o->sub);
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
    case OP_CLOSE:
        break;
    }
    free(o);
}

static op *writer_take(cms_nats *n, bool *close_requested)
{
    uv_mutex_lock(&n->wmu);
    while (n->whead == NULL && !n->wclose_requested)
        uv_cond_wait(&n->wcond, &n->wmu);
    op *batch = n->whead;
    n->whead = n->wtail = NULL;
    n->core_pubs_queued = 0;
    *close_requested = n->wclose_requested;
    uv_mutex_unlock(&n->wmu);
    return batch;
}

/* Connects (in the background while the server is down: nats.c retries).
 * Returns NULL only once close was requested. */
static natsConnection *writer_connect(cms_nats *n)
{
    natsConnection *nc = NULL;
    cms_backoff b;
    cms_backoff_init(&b, BACKOFF_MIN_MS * 10, BACKOFF_MAX_MS);
    for (;;) {
        natsStatus st = natsConnection_Connect(&nc, n->opts);
        if (st == NATS_OK || st == NATS_NOT_YET_CONNECTED) {
            if (st == NATS_OK) {
                uv_mutex_lock(&n->mu);
                /* a callback that already ran knows better */
                if (n->conn_events == 0) {
                    n->conn_up = true;
                    n->conn_changed = true;
                    poke_locked(n);
                }
                uv_mutex_unlock(&n->mu);
            }
            return nc;
        }
        uint64_t delay = cms_backoff_next(&b);
        cms_log_error("nats: cannot connect", "{s:s, s:s, s:I}", "url", n->url, "error",
                      natsStatus_GetText(st), "retry_ms", (json_int_t)delay);
        uv_mutex_lock(&n->wmu);
        uint64_t deadline = uv_hrtime() + delay * NS_PER_MS;
        while (!n->wclose_requested && wait_until(&n->wcond, &n->wmu, deadline)) {
        }
        bool stop = n->wclose_requested;
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
        if (!wait_until(&n->cond, &n->mu, deadline))
            return false;
    }
    return true;
}

static bool not_closed(const cms_nats *n)
{
    return !n->nats_closed;
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
    while (n->icount > pending.Count && wait_until(&n->cond, &n->mu, deadline)) {
    }
    for (int i = 0; i < pending.Count; i++) {
        if (inflight_find_locked(n, pending.Msgs[i]) != NULL)
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
    if (js != NULL && n->wjs_used) /* nats.c 3.4.1 crashes on a context that never published */
        writer_reclaim_pending(n, js);
    uv_mutex_lock(&n->mu);
    if (!wait_while_locked(n, subs_live, CLOSE_WAIT_MS))
        cms_log_warn("nats: subscriptions did not end", "{s:i}", "live", n->nats_subs_live);
    uv_mutex_unlock(&n->mu);
    for (size_t i = 0; i < k; i++)
        natsSubscription_Destroy(subs[i]);
    free(subs);
}

static void writer_main(void *arg)
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
    n->wclosed = true;
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
    (void)push_locked(n, &n->done_ev);
    uv_mutex_unlock(&n->mu);
}

/* ------------------------------------------------------------------------ */
/* helpers' readiness */

/* Waits until the writer has its JetStream context; NULL when closing (a
 * consumer's stop is always set together with n->closing). */
static jsCtx *wait_ready(cms_nats *n, natsConnection **nc)
{
    jsCtx *js = NULL;
    uv_mutex_lock(&n->mu);
    while (!n->closing && n->js == NULL)
        uv_cond_wait(&n->cond, &n->mu);
    if (!n->closing) {
        js = n->js;
        if (nc != NULL)
            *nc = n->nc;
    }
    uv_mutex_unlock(&n->mu);
    return js;
}

/* ------------------------------------------------------------------------ */
/* provisioning */

static bool hub_closing(cms_nats *n)
{
    uv_mutex_lock(&n->mu);
    bool c = n->closing;
    uv_mutex_unlock(&n->mu);
    return c;
}

static void warn_diff_i(const char *stream, const char *setting, int64_t want, int64_t have)
{
    if (want != have)
        cms_log_warn("nats: stream differs from the expected settings; using it as it is",
                     "{s:s, s:s, s:I, s:I}", "stream", stream, "setting", setting, "expected",
                     (json_int_t)want, "actual", (json_int_t)have);
}

static void compare_stream(const cms_nats_stream_spec *sp, const jsStreamConfig *cfg)
{
    bool has_subject = false;
    for (int i = 0; i < cfg->SubjectsLen; i++) {
        if (strcmp(cfg->Subjects[i], sp->subject) == 0)
            has_subject = true;
    }
    if (!has_subject || cfg->SubjectsLen != 1)
        cms_log_warn("nats: stream differs from the expected settings; using it as it is",
                     "{s:s, s:s, s:s, s:i}", "stream", sp->name, "setting", "subjects", "expected",
                     sp->subject, "actual_count", cfg->SubjectsLen);
    warn_diff_i(sp->name, "storage_memory", sp->memory ? 1 : 0,
                cfg->Storage == js_MemoryStorage ? 1 : 0);
    warn_diff_i(sp->name, "max_age_ms", sp->max_age_ms, cfg->MaxAge / NS_PER_MS);
    if (sp->duplicates_ms > 0)
        warn_diff_i(sp->name, "duplicates_ms", sp->duplicates_ms, cfg->Duplicates / NS_PER_MS);
}

/* One stream: created if missing, else compared. NATS_OK or the failure. */
static natsStatus provision_one(jsCtx *js, const cms_nats_stream_spec *sp)
{
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus st = js_GetStreamInfo(&si, js, sp->name, NULL, &jerr);
    if (st == NATS_OK) {
        compare_stream(sp, si->Config);
        goto out;
    }
    if (st != NATS_NOT_FOUND && jerr != JSStreamNotFoundErr)
        goto out;
    jsStreamConfig cfg;
    jsStreamConfig_Init(&cfg);
    const char *subjects[1] = {sp->subject};
    cfg.Name = sp->name;
    cfg.Subjects = subjects;
    cfg.SubjectsLen = 1;
    cfg.Storage = sp->memory ? js_MemoryStorage : js_FileStorage;
    cfg.MaxAge = sp->max_age_ms * NS_PER_MS;
    cfg.Duplicates = sp->duplicates_ms * NS_PER_MS;
    jerr = 0;
    st = js_AddStream(&si, js, &cfg, NULL, &jerr);
    if (st == NATS_OK) {
        cms_log_info("nats: stream created", "{s:s, s:s}", "stream", sp->name, "subject",
                     sp->subject);
    } else if (jerr == JSStreamNameExistErr) {
        /* another process created it meanwhile */
        jerr = 0;
        st = js_GetStreamInfo(&si, js, sp->name, NULL, &jerr);
        if (st == NATS_OK)
            compare_stream(sp, si->Config);
    }
out:
    if (st != NATS_OK)
        cms_log_warn("nats: stream provisioning failed; retrying", "{s:s, s:s, s:i, s:s}", "stream",
                     sp->name, "error", natsStatus_GetText(st), "js_error", (int)jerr, "detail",
                     nats_GetLastError(NULL) ? nats_GetLastError(NULL) : "");
    jsStreamInfo_Destroy(si);
    return st;
}

static void prov_free(prov *p)
{
    if (p == NULL)
        return;
    for (size_t i = 0; p->specs != NULL && i < p->count; i++) {
        free((void *)p->specs[i].name);
        free((void *)p->specs[i].subject);
    }
    free(p->specs);
    free(p);
}

static void prov_main(void *arg)
{
    prov *p = arg;
    cms_nats *n = p->n;
    cms_nats_err result = CMS_NATS_ECLOSED;
    jsCtx *js = wait_ready(n, NULL);
    cms_backoff b;
    cms_backoff_init(&b, BACKOFF_MIN_MS, BACKOFF_MAX_MS);
    while (js != NULL && !hub_closing(n)) {
        bool ok = true;
        for (size_t i = 0; i < p->count && ok; i++)
            ok = provision_one(js, &p->specs[i]) == NATS_OK;
        if (ok) {
            result = CMS_NATS_OK;
            break;
        }
        uint64_t delay = cms_backoff_next(&b);
        uv_mutex_lock(&n->mu);
        uint64_t deadline = uv_hrtime() + delay * NS_PER_MS;
        while (!n->closing && wait_until(&n->cond, &n->mu, deadline)) {
        }
        uv_mutex_unlock(&n->mu);
    }
    p->result = result;
    p->ev.kind = EV_PROVISIONED;
    uv_mutex_lock(&n->mu);
    bool queued = push_locked(n, &p->ev);
    n->prov_running--;
    uv_cond_broadcast(&n->cond);
    uv_mutex_unlock(&n->mu);
    if (!queued)
        prov_free(p);
}

int cms_nats_provision(cms_nats *n, const cms_nats_stream_spec *specs, size_t count,
                       void (*done)(void *arg, cms_nats_err err), void *arg)
{
    int rc = CMS_NATS_OK;
    prov *p = NULL;
    if (n == NULL || specs == NULL || count == 0 || done == NULL) {
        rc = CMS_NATS_EINVAL;
        goto out;
    }
    for (size_t i = 0; i < count; i++) {
        if (specs[i].name == NULL || specs[i].subject == NULL || specs[i].max_age_ms < 0 ||
            specs[i].duplicates_ms < 0) {
            rc = CMS_NATS_EINVAL;
            goto out;
        }
    }
    if (n->state >= N_CLOSING) {
        rc = CMS_NATS_ECLOSED;
        goto out;
    }
    p = calloc(1, sizeof *p);
    if (p == NULL || (p->specs = calloc(count, sizeof *p->specs)) == NULL) {
        rc = CMS_NATS_ENOMEM;
        goto out;
    }
    p->count = count;
    for (size_t i = 0; i < count; i++) {
        p->specs[i] = specs[i];
        p->specs[i].name = dupstr(specs[i].name);
        p->specs[i].subject = dupstr(specs[i].subject);
        if (p->specs[i].name == NULL || p->specs[i].subject == NULL) {
            rc = CMS_NATS_ENOMEM;
            goto out;
        }
    }
    p->n = n;
    p->done = done;
    p->arg = arg;
    uv_mutex_lock(&n->mu);
    n->prov_running++;
    uv_mutex_unlock(&n->mu);
    uv_thread_t t;
    if (uv_thread_create(&t, prov_main, p) != 0) {
        uv_mutex_lock(&n->mu);
        n->prov_running--;
        uv_mutex_unlock(&n->mu);
        rc = CMS_NATS_ENOMEM;
        goto out;
    }
    /* counted, not joined: close waits for prov_running to reach 0 */
    pthread_detach(t);
    p = NULL;
out:
    prov_free(p);
    return rc;
}

int cms_nats_provision_streams(cms_nats *n, void (*done)(void *arg, cms_nats_err err), void *arg)
{
    static const cms_nats_stream_spec specs[] = {
        {.name = "CMS_EVENTS",
         .subject = "cms.events.>",
         .max_age_ms = INT64_C(30) * 24 * 3600 * 1000,
         .duplicates_ms = 2 * 60 * 1000},
        {.name = "CMS_DLQ", .subject = "cms.dlq.>", .max_age_ms = INT64_C(90) * 24 * 3600 * 1000},
    };
    return cms_nats_provision(n, specs, sizeof specs / sizeof specs[0], done, arg);
}

/* ------------------------------------------------------------------------ */
/* pull consumers (fetch thread)
 *
 * The pull protocol is spoken here rather than through natsSubscription_Fetch:
 * in nats.c 3.4.1 a Fetch that starts with messages already queued (answers
 * to an earlier request that arrived late, as after a frozen server thaws)
 * can write past its array. So: one plain subscription on an inbox, at most
 * one pull request of ours at a time, and messages taken off the inbox one
 * by one and only while there is credit. Whatever arrives beyond that waits
 * in nats.c's queue, bounded by the consumer's MaxAckPending on the server.
 * Acks are then plain publishes to the message's reply subject (natsMsg_Ack
 * needs a JetStream subscription). */

#define PULL_SLICE_MS 250 /* longest wait before re-checking stop/pause/credit */

/* Sleeps up to ms unless stopped. Returns false once stopped. */
static bool consumer_pause_for(cms_nats_consumer *c, int64_t ms)
{
    uv_mutex_lock(&c->mu);
    uint64_t deadline = uv_hrtime() + (uint64_t)ms * NS_PER_MS;
    while (!c->stop && wait_until(&c->cond, &c->mu, deadline)) {
    }
    bool go_on = !c->stop;
    uv_mutex_unlock(&c->mu);
    return go_on;
}

static void warn_consumer_diff(const cms_nats_consumer *c, const char *setting, int64_t want,
                               int64_t have)
{
    if (want != have)
        cms_log_warn("nats: consumer differs from the expected settings; using it as it is",
                     "{s:s, s:s, s:s, s:I, s:I}", "stream", c->stream, "durable", c->durable,
                     "setting", setting, "expected", (json_int_t)want, "actual", (json_int_t)have);
}

/* Creates the durable if missing, else uses it as it is (never deleted here). */
/* Logs how an existing durable differs from what this process would have
 * made; it is used as it is (operators may manage consumers themselves). */
static void consumer_compare(cms_nats_consumer *c, const jsConsumerConfig *h)
{
    warn_consumer_diff(c, "max_ack_pending", c->max_ack_pending, h->MaxAckPending);
    warn_consumer_diff(c, "ack_wait_ms", c->ack_wait_ms, h->AckWait / NS_PER_MS);
    warn_consumer_diff(c, "max_deliver", c->max_deliver, h->MaxDeliver);
    warn_consumer_diff(c, "ack_explicit", 1, h->AckPolicy == js_AckExplicit);
    if ((h->FilterSubject == NULL || *h->FilterSubject == '\0') != (c->filter == NULL) ||
        (c->filter != NULL && h->FilterSubject != NULL && strcmp(h->FilterSubject, c->filter) != 0))
        cms_log_warn("nats: consumer differs from the expected settings; using it as it is",
                     "{s:s, s:s, s:s, s:s, s:s}", "stream", c->stream, "durable", c->durable,
                     "setting", "filter_subject", "expected", c->filter ? c->filter : "", "actual",
                     h->FilterSubject ? h->FilterSubject : "");
}

/* Binds the durable if it exists, creates it only if it does not: adding a
 * consumer that exists would update it (nats-server 2.9), overwriting
 * settings an operator chose. */
static natsStatus consumer_ensure(cms_nats_consumer *c, jsCtx *js)
{
    jsConsumerInfo *ci = NULL;
    jsErrCode jerr = 0;
    natsStatus st = js_GetConsumerInfo(&ci, js, c->stream, c->durable, NULL, &jerr);
    if (st == NATS_OK) {
        consumer_compare(c, ci->Config);
        jsConsumerInfo_Destroy(ci);
        return NATS_OK;
    }
    if (st != NATS_NOT_FOUND && jerr != JSConsumerNotFoundErr)
        goto out; /* the server did not answer: retried by the caller */
    jsConsumerConfig cfg;
    jsConsumerConfig_Init(&cfg);
    cfg.Durable = c->durable;
    cfg.AckPolicy = js_AckExplicit;
    cfg.DeliverPolicy = js_DeliverAll;
    cfg.AckWait = c->ack_wait_ms * NS_PER_MS;
    cfg.MaxDeliver = c->max_deliver;
    cfg.MaxAckPending = c->max_ack_pending;
    cfg.FilterSubject = c->filter;
    jerr = 0;
    st = js_AddConsumer(&ci, js, c->stream, &cfg, NULL, &jerr);
    jsConsumerInfo_Destroy(ci);
    ci = NULL;
    if (st != NATS_OK && jerr != 0) {
        /* another replica created it in between: bind that one */
        jsErrCode jerr2 = 0;
        if (js_GetConsumerInfo(&ci, js, c->stream, c->durable, NULL, &jerr2) == NATS_OK) {
            consumer_compare(c, ci->Config);
            st = NATS_OK;
        }
        jsConsumerInfo_Destroy(ci);
    }
out:
    if (st != NATS_OK)
        cms_log_warn("nats: cannot create consumer; retrying", "{s:s, s:s, s:s, s:i, s:s}",
                     "stream", c->stream, "durable", c->durable, "error", natsStatus_GetText(st),
                     "js_error", (int)jerr, "detail",
                     nats_GetLastError(NULL) ? nats_GetLastError(NULL) : "");
    return st;
}

static void consumer_unbind(cms_nats_consumer *c)
{
    /* a plain subscription: destroying it never touches the durable */
    natsSubscription_Destroy(c->ns);
    c->ns = NULL;
    natsInbox_Destroy(c->inbox);
    c->inbox = NULL;
}

static natsStatus consumer_bind(cms_nats_consumer *c, natsConnection *nc, jsCtx *js)
{
    natsStatus st = consumer_ensure(c, js);
    if (st == NATS_OK)
        st = natsInbox_Create(&c->inbox);
    if (st == NATS_OK)
        st = natsConnection_SubscribeSync(&c->ns, nc, c->inbox);
    if (st == NATS_OK)
        st = natsSubscription_SetPendingLimits(c->ns, -1, -1);
    if (st != NATS_OK) {
        consumer_unbind(c);
        return st;
    }
    c->req_left = 0;
    cms_log_info("nats: consumer bound", "{s:s, s:s}", "stream", c->stream, "durable", c->durable);
    return NATS_OK;
}

static natsStatus consumer_request(cms_nats_consumer *c, natsConnection *nc, int batch)
{
    char body[96];
    /* the server ends the request a little before we stop waiting for it */
    int len = snprintf(body, sizeof body, "{\"batch\":%d,\"expires\":%" PRId64 "}", batch,
                       (int64_t)(FETCH_TIMEOUT_MS - 50) * NS_PER_MS);
    natsStatus st = natsConnection_PublishRequest(nc, c->next_subj, c->inbox, body, len);
    if (st == NATS_OK) {
        c->req_left = batch;
        c->req_deadline = uv_hrtime() + (uint64_t)FETCH_TIMEOUT_MS * NS_PER_MS;
    }
    return st;
}

/* Hands one message to the loop, taking one credit first (so the loop can
 * never return more than was taken). */
static void consumer_deliver(cms_nats_consumer *c, natsMsg *nm)
{
    cms_nats *n = c->n;
    jsMsgMetaData *meta = NULL;
    cms_nats_msg *m = NULL;
    if (natsMsg_GetMetaData(&meta, nm) != NATS_OK || (m = msg_wrap(n, nm)) == NULL) {
        /* unreadable or no memory: left unacked, the server redelivers it */
        jsMsgMetaData_Destroy(meta);
        natsMsg_Destroy(nm);
        return;
    }
    m->consumer = c;
    m->stream_seq = meta->Sequence.Stream;
    m->num_delivered = meta->NumDelivered;
    m->num_pending = meta->NumPending;
    m->stream = dupstr(meta->Stream);
    jsMsgMetaData_Destroy(meta);
    uv_mutex_lock(&c->mu);
    c->credit--;
    uv_mutex_unlock(&c->mu);
    if (!push_ev(n, &m->ev))
        msg_free_raw(m); /* past close */
}

/* A message with a status header and no body is about the pull request
 * itself. Returns false for a user message. */
static bool consumer_status(cms_nats_consumer *c, natsMsg *nm, bool *rebind)
{
    const char *status = NULL, *desc = NULL;
    const char *reply = natsMsg_GetReply(nm);
    /* stream messages always carry their ack subject as reply; status messages none */
    if ((reply != NULL && *reply != '\0') || natsMsg_GetDataLength(nm) > 0 ||
        natsMsgHeader_Get(nm, "Status", &status) != NATS_OK)
        return false;
    if (strcmp(status, "100") == 0) /* idle heartbeat */
        return true;
    c->req_left = 0; /* 404 no messages, 408 expired, 409 refused: the request is over */
    if (strcmp(status, "404") != 0 && strcmp(status, "408") != 0) {
        (void)natsMsgHeader_Get(nm, "Description", &desc);
        cms_log_warn("nats: pull request refused", "{s:s, s:s, s:s, s:s}", "stream", c->stream,
                     "durable", c->durable, "status", status, "description", desc ? desc : "");
        if (desc != NULL && strstr(desc, "Deleted") != NULL)
            *rebind = true;
    }
    return true;
}

static void consumer_main(void *arg)
{
    cms_nats_consumer *c = arg;
    natsConnection *nc = NULL;
    jsCtx *js = wait_ready(c->n, &nc);
    cms_backoff b;
    cms_backoff_init(&b, BACKOFF_MIN_MS, BACKOFF_MAX_MS);
    int errors = 0;
    while (js != NULL) {
        if (c->ns == NULL) {
            if (consumer_bind(c, nc, js) != NATS_OK) {
                if (!consumer_pause_for(c, (int64_t)cms_backoff_next(&b)))
                    break;
                continue;
            }
            cms_backoff_reset(&b);
            errors = 0;
        }
        uv_mutex_lock(&c->mu);
        while (!c->stop && (c->paused || c->credit <= 0))
            uv_cond_wait(&c->cond, &c->mu);
        bool stop = c->stop;
        int credit = c->credit;
        uv_mutex_unlock(&c->mu);
        if (stop)
            break;

        int queued = 0, bytes = 0;
        (void)natsSubscription_GetPending(c->ns, &queued, &bytes);
        uint64_t now = uv_hrtime();
        natsStatus st = NATS_OK;
        if (c->req_left > 0 && now >= c->req_deadline)
            c->req_left = 0; /* no answer in time (lost with a connection) */
        if (c->req_left <= 0 && queued == 0)
            st = consumer_request(c, nc, credit < c->fetch_batch ? credit : c->fetch_batch);
        natsMsg *nm = NULL;
        if (st == NATS_OK) {
            int64_t wait = PULL_SLICE_MS;
            if (c->req_left > 0 && (int64_t)((c->req_deadline - now) / NS_PER_MS) < wait)
                wait = (int64_t)((c->req_deadline - now) / NS_PER_MS);
            st = natsSubscription_NextMsg(&nm, c->ns, wait > 0 ? wait : 1);
        }
        if (st == NATS_TIMEOUT)
            continue;
        if (st != NATS_OK) {
            cms_log_warn("nats: pull failed", "{s:s, s:s, s:s}", "stream", c->stream, "durable",
                         c->durable, "error", natsStatus_GetText(st));
            c->req_left = 0;
            if (++errors >= REBIND_AFTER_ERRORS)
                consumer_unbind(c);
            if (!consumer_pause_for(c, (int64_t)cms_backoff_next(&b)))
                break;
            continue;
        }
        bool rebind = false;
        if (consumer_status(c, nm, &rebind)) {
            natsMsg_Destroy(nm);
            if (rebind)
                consumer_unbind(c);
            continue;
        }
        errors = 0;
        cms_backoff_reset(&b);
        if (c->req_left > 0)
            c->req_left--;
        consumer_deliver(c, nm);
    }
    consumer_unbind(c);
}

int cms_nats_consume(cms_nats *n, const cms_nats_consumer_options *o, cms_nats_msg_cb cb, void *arg,
                     cms_nats_consumer **out)
{
    int rc = CMS_NATS_OK;
    cms_nats_consumer *c = NULL;
    bool sync_init = false;
    if (n == NULL || o == NULL || cb == NULL || out == NULL || o->stream == NULL ||
        o->durable == NULL || o->max_ack_pending < 0 || o->fetch_batch < 0 || o->ack_wait_ms < 0) {
        rc = CMS_NATS_EINVAL;
        goto out;
    }
    if (n->state >= N_CLOSING) {
        rc = CMS_NATS_ECLOSED;
        goto out;
    }
    c = calloc(1, sizeof *c);
    if (c == NULL) {
        rc = CMS_NATS_ENOMEM;
        goto out;
    }
    c->n = n;
    c->cb = cb;
    c->arg = arg;
    c->stream = dupstr(o->stream);
    c->durable = dupstr(o->durable);
    c->filter = dupstr(o->filter_subject);
    c->max_ack_pending = o->max_ack_pending > 0 ? o->max_ack_pending : DEFAULT_MAX_ACK_PENDING;
    c->fetch_batch = o->fetch_batch > 0 ? o->fetch_batch : DEFAULT_FETCH_BATCH;
    c->ack_wait_ms = o->ack_wait_ms > 0 ? o->ack_wait_ms : DEFAULT_ACK_WAIT_MS;
    c->max_deliver = o->max_deliver != 0 ? o->max_deliver : -1;
    c->credit = c->max_ack_pending;
    size_t nl = strlen("$JS.API.CONSUMER.MSG.NEXT..") + strlen(o->stream) + strlen(o->durable) + 1;
    c->next_subj = malloc(nl);
    if (c->next_subj != NULL)
        snprintf(c->next_subj, nl, "$JS.API.CONSUMER.MSG.NEXT.%s.%s", o->stream, o->durable);
    if (c->stream == NULL || c->durable == NULL || c->next_subj == NULL ||
        (o->filter_subject != NULL && c->filter == NULL)) {
        rc = CMS_NATS_ENOMEM;
        goto out;
    }
    if (uv_mutex_init(&c->mu) != 0) {
        rc = CMS_NATS_ENOMEM;
        goto out;
    }
    if (uv_cond_init(&c->cond) != 0) {
        uv_mutex_destroy(&c->mu);
        rc = CMS_NATS_ENOMEM;
        goto out;
    }
    sync_init = true;
    if (uv_thread_create(&c->thread, consumer_main, c) != 0) {
        rc = CMS_NATS_ENOMEM;
        goto out;
    }
    c->thread_started = true;
    c->next = n->consumers;
    n->consumers = c;
    *out = c;
    c = NULL;
out:
    if (c != NULL) {
        if (sync_init) {
            uv_cond_destroy(&c->cond);
            uv_mutex_destroy(&c->mu);
        }
        free(c->stream);
        free(c->durable);
        free(c->filter);
        free(c->next_subj);
        free(c);
    }
    return rc;
}

void cms_nats_consumer_pause(cms_nats_consumer *c, bool paused)
{
    if (c == NULL)
        return;
    uv_mutex_lock(&c->mu);
    c->paused = paused;
    uv_cond_signal(&c->cond);
    uv_mutex_unlock(&c->mu);
}

/* ------------------------------------------------------------------------ */
/* core subscriptions (loop) */

static void sub_unref(cms_nats *n, cms_nats_sub *s)
{
    if (--s->refs > 0)
        return;
    for (cms_nats_sub **pp = &n->subs; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == s) {
            *pp = s->next;
            break;
        }
    }
    free(s->subject);
    free(s->queue);
    free(s);
}

int cms_nats_subscribe(cms_nats *n, const char *subject, const char *queue_group,
                       cms_nats_msg_cb cb, void *arg, cms_nats_sub **out)
{
    int rc = CMS_NATS_OK;
    cms_nats_sub *s = NULL;
    op *o = NULL;
    if (n == NULL || subject == NULL || *subject == '\0' || cb == NULL || out == NULL) {
        rc = CMS_NATS_EINVAL;
        goto out;
    }
    if (n->state >= N_CLOSING) {
        rc = CMS_NATS_ECLOSED;
        goto out;
    }
    s = calloc(1, sizeof *s);
    o = op_new(OP_SUB);
    if (s == NULL || o == NULL || (s->subject = dupstr(subject)) == NULL ||
        (queue_group != NULL && (s->queue = dupstr(queue_group)) == NULL)) {
        rc = CMS_NATS_ENOMEM;
        goto out;
    }
    s->n = n;
    s->cb = cb;
    s->arg = arg;
    s->refs = 2; /* the caller's and nats.c's */
    o->sub = s;
    if (!push_op(n, o, NULL)) {
        rc = CMS_NATS_ECLOSED;
        goto out;
    }
    o = NULL;
    s->next = n->subs;
    n->subs = s;
    *out = s;
    s = NULL;
out:
    free(o);
    if (s != NULL) {
        free(s->subject);
        free(s->queue);
        free(s);
    }
    return rc;
}

void cms_nats_unsubscribe(cms_nats_sub *s)
{
    if (s == NULL || s->closing)
        return;
    cms_nats *n = s->n;
    s->closing = true;
    op *o = op_new(OP_UNSUB);
    if (o != NULL) {
        o->sub = s;
        if (push_op(n, o, NULL))
            return; /* the caller's reference now belongs to the op */
        free(o);
    }
    /* without the op (no memory, or closed) the subscription ends with the connection */
    sub_unref(n, s);
}

/* ------------------------------------------------------------------------ */
/* loop: draining the event queue */

static void msg_dispose(cms_nats_msg *m);

static void dispatch_msg(cms_nats *n, cms_nats_msg *m)
{
    cms_nats_sub *s = m->sub;
    m->sub = NULL; /* s may be freed after this */
    if (n->state >= N_CLOSING || (s != NULL && s->closing)) {
        msg_dispose(m);
        return;
    }
    n->live_msgs++;
    if (s != NULL)
        s->cb(s->arg, m);
    else
        m->consumer->cb(m->consumer->arg, m);
}

/* Loop: frees nm once the writer is past every op queued so far. */
static void writer_free_msg(cms_nats *n, natsMsg *nm)
{
    op *o = op_new(OP_MSG_FREE);
    if (o == NULL)
        return; /* cannot hand it over safely: leak one message rather than race */
    o->m = nm;
    if (!push_op(n, o, NULL)) {
        free(o);
        natsMsg_Destroy(nm); /* writer gone: nothing else touches it */
    }
}

static void dispatch_pub(cms_nats *n, pub *p)
{
    cms_nats_err err = err_from_status(p->status);
    if (!p->answered)
        err = CMS_NATS_ECLOSED;
    if (err == CMS_NATS_OK) {
        cms_counter_inc(n->m_published);
    } else {
        cms_counter_inc(n->m_pub_errors);
        cms_log_warn("nats: publish failed", "{s:s, s:s, s:i, s:s}", "subject",
                     natsMsg_GetSubject(p->m) ? natsMsg_GetSubject(p->m) : "", "error",
                     cms_nats_strerror(err), "js_error", (int)p->jerr, "detail", p->errtext);
    }
    /* Through the writer: nats.c may answer (by its MaxWait timer) while the
     * writer is still inside js_PublishMsgAsync with this very message,
     * blocked on the connection lock. */
    writer_free_msg(n, p->m);
    n->inflight--;
    cms_gauge_set(n->m_inflight, n->inflight);
    cms_nats_pub_cb done = p->done;
    void *arg = p->arg;
    bool dup = p->duplicate;
    uint64_t seq = p->seq;
    free(p);
    done(arg, err, dup, seq);
}

static bool dispatch(cms_nats *n, ev *e)
{
    switch (e->kind) {
    case EV_MSG:
        dispatch_msg(n, (cms_nats_msg *)e);
        break;
    case EV_PUB:
        dispatch_pub(n, (pub *)e);
        break;
    case EV_PROVISIONED: {
        prov *p = (prov *)e;
        void (*done)(void *, cms_nats_err) = p->done;
        void *arg = p->arg;
        cms_nats_err r = p->result;
        prov_free(p);
        done(arg, r);
        break;
    }
    case EV_SUB_DONE:
        sub_unref(n, (cms_nats_sub *)e);
        break;
    case EV_UNSUB_DONE:
        sub_unref(n, (cms_nats_sub *)(void *)((char *)e - offsetof(cms_nats_sub, unsub_ev)));
        break;
    case EV_WRITER_DONE:
        return true;
    }
    return false;
}

static void on_async_closed(uv_handle_t *h)
{
    cms_nats *n = h->data;
    void (*closed)(void *) = n->closed;
    void *arg = n->closed_arg;
    if (closed != NULL)
        closed(arg);
}

static void check_room(cms_nats *n)
{
    if (n->room_wanted && n->inflight < n->max_inflight && n->state < N_CLOSING) {
        n->room_wanted = false;
        if (n->on_room != NULL)
            n->on_room(n->room_arg);
    }
}

/* Writer gone: fail what never got an answer, close the handle. */
static void finish_close(cms_nats *n)
{
    uv_thread_join(&n->writer);
    uv_mutex_lock(&n->mu);
    n->in_closed = true;
    ev *rest = n->head;
    n->head = n->tail = NULL;
    pub *unanswered = n->ihead;
    n->ihead = n->itail = NULL;
    n->icount = 0;
    uv_mutex_unlock(&n->mu);
    while (rest != NULL) {
        ev *next = rest->next;
        (void)dispatch(n, rest);
        rest = next;
    }
    while (unanswered != NULL) {
        pub *next = unanswered->inext;
        dispatch_pub(n, unanswered);
        unanswered = next;
    }
    set_state(n, N_CLOSED);
    uv_close((uv_handle_t *)&n->async, on_async_closed);
}

static void on_async(uv_async_t *h)
{
    cms_nats *n = h->data;
    uv_mutex_lock(&n->mu);
    ev *batch = n->head;
    n->head = n->tail = NULL;
    n->core_queued = 0;
    bool changed = n->conn_changed, up = n->conn_up;
    n->conn_changed = false;
    uint64_t reconnects = n->reconnects, errors = n->async_errors;
    natsStatus last_err = n->last_async_error;
    uv_mutex_unlock(&n->mu);

    if (reconnects > n->reconnects_seen) {
        cms_counter_add(n->m_reconnects, reconnects - n->reconnects_seen);
        n->reconnects_seen = reconnects;
    }
    if (errors > n->errors_seen) {
        cms_log_warn("nats: asynchronous error", "{s:s, s:I}", "error",
                     natsStatus_GetText(last_err), "count", (json_int_t)(errors - n->errors_seen));
        n->errors_seen = errors;
    }
    if (changed && n->state < N_CLOSING) {
        n_state want =
            up ? N_CONNECTED : (n->state == N_CONNECTING ? N_CONNECTING : N_DISCONNECTED);
        if (want != n->state) {
            set_state(n, want);
            if (n->on_state != NULL)
                n->on_state(n->state_arg, up);
        }
    }
    bool writer_done = false;
    while (batch != NULL) {
        ev *next = batch->next;
        if (dispatch(n, batch))
            writer_done = true;
        batch = next;
    }
    if (writer_done && !n->writer_done) {
        n->writer_done = true;
        finish_close(n);
        return;
    }
    check_room(n);
}

/* ------------------------------------------------------------------------ */
/* create / close / destroy */

/* Frees what create made; n's handle must be closed (or never opened). */
static void hub_free(cms_nats *n)
{
    if (n == NULL)
        return;
    if (n->sync_ready) {
        uv_cond_destroy(&n->wcond);
        uv_mutex_destroy(&n->wmu);
        uv_cond_destroy(&n->cond);
        uv_mutex_destroy(&n->mu);
    }
    natsOptions_Destroy(n->opts);
    free(n->url);
    free(n->name);
    free(n);
}

static void on_create_failed_closed(uv_handle_t *h)
{
    hub_free(h->data);
}

static natsStatus set_options(cms_nats *n)
{
    natsStatus st = natsOptions_Create(&n->opts);
    if (st == NATS_OK)
        st = natsOptions_SetURL(n->opts, n->url);
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
    return st;
}

static void make_metrics(cms_nats *n)
{
    cms_metrics *mx = cms_metrics_default();
    n->m_reconnects =
        cms_metrics_counter(mx, "cms_nats_reconnects_total", "NATS reconnections.", NULL);
    n->m_dropped = cms_metrics_counter(
        mx, "cms_nats_dropped_total",
        "Core NATS messages dropped because the hand-off queue was full.", NULL);
    n->m_published = cms_metrics_counter(mx, "cms_nats_published_total",
                                         "JetStream publishes acknowledged by the stream.", NULL);
    n->m_pub_errors = cms_metrics_counter(mx, "cms_nats_publish_errors_total",
                                          "JetStream publishes that failed or timed out.", NULL);
    n->m_connected =
        cms_metrics_gauge(mx, "cms_nats_connected", "1 while connected to NATS.", NULL);
    n->m_inflight = cms_metrics_gauge(mx, "cms_nats_publish_inflight",
                                      "JetStream publishes awaiting their ack.", NULL);
    cms_gauge_set(n->m_connected, 0.0);
    cms_gauge_set(n->m_inflight, 0.0);
}

int cms_nats_create(uv_loop_t *loop, const cms_nats_options *o, cms_nats **out)
{
    int rc = CMS_NATS_OK;
    cms_nats *n = NULL;
    if (loop == NULL || o == NULL || out == NULL || o->url == NULL || *o->url == '\0' ||
        o->max_publish_inflight < 0 || o->publish_timeout_ms < 0) {
        rc = CMS_NATS_EINVAL;
        goto out;
    }
    n = calloc(1, sizeof *n);
    if (n == NULL) {
        rc = CMS_NATS_ENOMEM;
        goto out;
    }
    n->loop = loop;
    n->url = dupstr(o->url);
    n->name = dupstr(o->name != NULL ? o->name : "cms");
    n->queue_cap = o->queue_cap > 0 ? o->queue_cap : DEFAULT_QUEUE_CAP;
    n->send_asap = o->send_asap;
    n->max_inflight = o->max_publish_inflight > 0 ? o->max_publish_inflight : DEFAULT_INFLIGHT;
    n->pub_timeout_ms = o->publish_timeout_ms > 0 ? o->publish_timeout_ms : DEFAULT_PUB_TIMEOUT_MS;
    n->on_state = o->on_state;
    n->state_arg = o->state_arg;
    n->on_room = o->on_publish_room;
    n->room_arg = o->room_arg;
    n->state = N_CONNECTING;
    if (n->url == NULL || n->name == NULL) {
        rc = CMS_NATS_ENOMEM;
        goto out;
    }
    natsStatus st = set_options(n);
    if (st != NATS_OK) {
        cms_log_error("nats: bad options", "{s:s, s:s}", "url", n->url, "error",
                      natsStatus_GetText(st));
        rc = st == NATS_NO_MEMORY ? CMS_NATS_ENOMEM : CMS_NATS_EINVAL;
        goto out;
    }
    if (uv_mutex_init(&n->mu) != 0) {
        rc = CMS_NATS_ENOMEM;
        goto out;
    }
    if (uv_cond_init(&n->cond) != 0 || uv_mutex_init(&n->wmu) != 0 ||
        uv_cond_init(&n->wcond) != 0) {
        /* libuv aborts on a failed init of the others; only mu can get here alone */
        uv_mutex_destroy(&n->mu);
        rc = CMS_NATS_ENOMEM;
        goto out;
    }
    n->sync_ready = true;
    if (uv_async_init(loop, &n->async, on_async) != 0) {
        rc = CMS_NATS_ENOMEM;
        goto out;
    }
    n->async.data = n;
    make_metrics(n);
    if (uv_thread_create(&n->writer, writer_main, n) != 0) {
        /* the handle is open: n is freed once it is closed */
        uv_close((uv_handle_t *)&n->async, on_create_failed_closed);
        n = NULL;
        rc = CMS_NATS_ENOMEM;
        goto out;
    }
    *out = n;
    n = NULL;
out:
    hub_free(n);
    return rc;
}

bool cms_nats_is_connected(const cms_nats *n)
{
    return n != NULL && n->state == N_CONNECTED;
}

int cms_nats_publish_inflight(const cms_nats *n)
{
    return n == NULL ? 0 : n->inflight;
}

void cms_nats_close(cms_nats *n, void (*closed)(void *arg), void *arg)
{
    if (n == NULL || n->state >= N_CLOSING)
        return;
    n->closed = closed;
    n->closed_arg = arg;
    set_state(n, N_CLOSING);
    uv_mutex_lock(&n->mu);
    n->closing = true;
    uv_cond_broadcast(&n->cond);
    uv_mutex_unlock(&n->mu);
    for (cms_nats_consumer *c = n->consumers; c != NULL; c = c->next) {
        uv_mutex_lock(&c->mu);
        c->stop = true;
        uv_cond_broadcast(&c->cond);
        uv_mutex_unlock(&c->mu);
    }
    uv_mutex_lock(&n->wmu);
    n->wclose_requested = true;
    uv_cond_signal(&n->wcond);
    uv_mutex_unlock(&n->wmu);
}

void cms_nats_destroy(cms_nats *n)
{
    if (n == NULL)
        return;
    if (n->state != N_CLOSED) {
        cms_log_error("nats: destroy before closed; leaking it", NULL);
        return;
    }
    if (n->live_msgs > 0)
        cms_log_error("nats: messages not destroyed before cms_nats_destroy", "{s:i}", "count",
                      n->live_msgs);
    while (n->subs != NULL) {
        cms_nats_sub *s = n->subs;
        n->subs = s->next;
        free(s->subject);
        free(s->queue);
        free(s);
    }
    while (n->consumers != NULL) {
        cms_nats_consumer *c = n->consumers;
        n->consumers = c->next;
        uv_cond_destroy(&c->cond);
        uv_mutex_destroy(&c->mu);
        free(c->stream);
        free(c->durable);
        free(c->filter);
        free(c->next_subj);
        free(c);
    }
    hub_free(n);
}

/* ------------------------------------------------------------------------ */
/* messages: accessors and settling (loop) */

const char *cms_nats_msg_subject(const cms_nats_msg *m)
{
    return m == NULL ? NULL : natsMsg_GetSubject(m->m);
}

const char *cms_nats_msg_reply(const cms_nats_msg *m)
{
    return m == NULL ? NULL : natsMsg_GetReply(m->m);
}

const void *cms_nats_msg_data(const cms_nats_msg *m)
{
    return m == NULL ? NULL : natsMsg_GetData(m->m);
}

size_t cms_nats_msg_len(const cms_nats_msg *m)
{
    int len = m == NULL ? 0 : natsMsg_GetDataLength(m->m);
    return len > 0 ? (size_t)len : 0;
}

const char *cms_nats_msg_header(const cms_nats_msg *m, const char *key)
{
    if (m == NULL || key == NULL)
        return NULL;
    for (size_t i = 0; i < m->nhdrs; i++) {
        if (strcmp(m->hdrs[i].key, key) == 0)
            return m->hdrs[i].value;
    }
    for (size_t i = 0; i < m->nhdrs; i++) {
        if (strcasecmp(m->hdrs[i].key, key) == 0)
            return m->hdrs[i].value;
    }
    return NULL;
}

uint64_t cms_nats_msg_stream_seq(const cms_nats_msg *m)
{
    return m == NULL ? 0 : m->stream_seq;
}

uint64_t cms_nats_msg_num_delivered(const cms_nats_msg *m)
{
    return m == NULL ? 0 : m->num_delivered;
}

uint64_t cms_nats_msg_num_pending(const cms_nats_msg *m)
{
    return m == NULL ? 0 : m->num_pending;
}

static cms_nats_err settle(cms_nats_msg *m, settle_kind k, int64_t delay_ms)
{
    if (m == NULL || m->consumer == NULL || m->settled || delay_ms < 0)
        return CMS_NATS_EINVAL;
    cms_nats *n = m->n;
    if (n->state >= N_CLOSING)
        return CMS_NATS_ECLOSED;
    op *o = op_new(OP_SETTLE);
    if (o == NULL)
        return CMS_NATS_ENOMEM;
    o->m = m->m;
    o->settle = k;
    o->delay_ms = delay_ms;
    if (!push_op(n, o, NULL)) {
        free(o);
        return CMS_NATS_ECLOSED;
    }
    m->handed = true;
    if (k != SETTLE_WPI) {
        m->settled = true;
        return_credit(m->consumer);
    }
    return CMS_NATS_OK;
}

cms_nats_err cms_nats_msg_ack(cms_nats_msg *m)
{
    return settle(m, SETTLE_ACK, 0);
}
cms_nats_err cms_nats_msg_nak(cms_nats_msg *m, int64_t delay_ms)
{
    return settle(m, SETTLE_NAK, delay_ms);
}
cms_nats_err cms_nats_msg_term(cms_nats_msg *m)
{
    return settle(m, SETTLE_TERM, 0);
}
cms_nats_err cms_nats_msg_in_progress(cms_nats_msg *m)
{
    return settle(m, SETTLE_WPI, 0);
}

/* Frees a message the loop owns, through the writer if an op names it. */
static void msg_dispose(cms_nats_msg *m)
{
    if (m->consumer != NULL && !m->settled) {
        m->settled = true;
        return_credit(m->consumer);
    }
    if (m->handed) {
        writer_free_msg(m->n, m->m);
        m->m = NULL;
    }
    msg_free_raw(m);
}

void cms_nats_msg_destroy(cms_nats_msg *m)
{
    if (m == NULL)
        return;
    m->n->live_msgs--;
    msg_dispose(m);
}

/* ------------------------------------------------------------------------ */
/* publishing (loop) */

/* Builds a message; NULL on a bad header list or no memory (*err says). */
static natsMsg *build_msg(const char *subject, const char *reply, const char *const *headers,
                          const void *data, size_t len, cms_nats_err *err)
{
    natsMsg *m = NULL;
    *err = CMS_NATS_EINVAL;
    if (subject == NULL || *subject == '\0' || len > INT_MAX || (data == NULL && len > 0))
        return NULL;
    natsStatus st = natsMsg_Create(&m, subject, reply, (const char *)data, (int)len);
    for (size_t i = 0; st == NATS_OK && headers != NULL && headers[i] != NULL; i += 2) {
        if (headers[i + 1] == NULL) {
            st = NATS_INVALID_ARG;
            break;
        }
        st = natsMsgHeader_Add(m, headers[i], headers[i + 1]);
    }
    if (st != NATS_OK) {
        *err = st == NATS_NO_MEMORY ? CMS_NATS_ENOMEM : CMS_NATS_EINVAL;
        natsMsg_Destroy(m);
        return NULL;
    }
    *err = CMS_NATS_OK;
    return m;
}

static cms_nats_err core_publish(cms_nats *n, natsMsg *m)
{
    cms_nats_err err = CMS_NATS_OK;
    op *o = op_new(OP_PUB);
    bool busy = false;
    if (o == NULL) {
        err = CMS_NATS_ENOMEM;
        goto out;
    }
    o->m = m;
    if (!push_op(n, o, &busy)) {
        err = busy ? CMS_NATS_EBUSY : CMS_NATS_ECLOSED;
        goto out;
    }
    o = NULL;
    m = NULL;
out:
    free(o);
    natsMsg_Destroy(m);
    return err;
}

cms_nats_err cms_nats_publish_request(cms_nats *n, const char *subject, const char *reply,
                                      const char *const *headers, const void *data, size_t len)
{
    cms_nats_err err = CMS_NATS_EINVAL;
    if (n == NULL)
        return err;
    if (n->state >= N_CLOSING)
        return CMS_NATS_ECLOSED;
    natsMsg *m = build_msg(subject, reply, headers, data, len, &err);
    return m == NULL ? err : core_publish(n, m);
}

cms_nats_err cms_nats_publish(cms_nats *n, const char *subject, const char *const *headers,
                              const void *data, size_t len)
{
    return cms_nats_publish_request(n, subject, NULL, headers, data, len);
}

cms_nats_err cms_nats_respond(cms_nats *n, const cms_nats_msg *req, const char *const *headers,
                              const void *data, size_t len)
{
    const char *reply = cms_nats_msg_reply(req);
    if (reply == NULL || *reply == '\0')
        return CMS_NATS_EINVAL;
    return cms_nats_publish_request(n, reply, NULL, headers, data, len);
}

/* Takes m in every case. */
static cms_nats_err js_publish_msg(cms_nats *n, natsMsg *m, cms_nats_pub_cb done, void *arg)
{
    cms_nats_err err = CMS_NATS_OK;
    pub *p = NULL;
    op *o = NULL;
    if (n->state >= N_CLOSING) {
        err = CMS_NATS_ECLOSED;
        goto out;
    }
    if (n->inflight >= n->max_inflight) {
        n->room_wanted = true;
        err = CMS_NATS_EBUSY;
        goto out;
    }
    p = calloc(1, sizeof *p);
    o = op_new(OP_JSPUB);
    if (p == NULL || o == NULL) {
        err = CMS_NATS_ENOMEM;
        goto out;
    }
    p->m = m;
    p->done = done;
    p->arg = arg;
    o->p = p;
    /* in the list before nats.c can possibly answer */
    uv_mutex_lock(&n->mu);
    inflight_add_locked(n, p);
    uv_mutex_unlock(&n->mu);
    if (!push_op(n, o, NULL)) {
        uv_mutex_lock(&n->mu);
        inflight_unlink_locked(n, p);
        uv_mutex_unlock(&n->mu);
        err = CMS_NATS_ECLOSED;
        goto out;
    }
    n->inflight++;
    cms_gauge_set(n->m_inflight, n->inflight);
    p = NULL;
    o = NULL;
    m = NULL;
out:
    free(o);
    free(p);
    natsMsg_Destroy(m);
    return err;
}

cms_nats_err cms_nats_js_publish(cms_nats *n, const char *subject, const char *msg_id,
                                 const char *const *headers, const void *data, size_t len,
                                 cms_nats_pub_cb done, void *arg)
{
    cms_nats_err err = CMS_NATS_EINVAL;
    if (n == NULL || done == NULL)
        return err;
    if (n->state >= N_CLOSING)
        return CMS_NATS_ECLOSED;
    if (n->inflight >= n->max_inflight) {
        n->room_wanted = true;
        return CMS_NATS_EBUSY;
    }
    natsMsg *m = build_msg(subject, NULL, headers, data, len, &err);
    if (m == NULL)
        return err;
    if (msg_id != NULL && natsMsgHeader_Set(m, "Nats-Msg-Id", msg_id) != NATS_OK) {
        natsMsg_Destroy(m);
        return CMS_NATS_ENOMEM;
    }
    return js_publish_msg(n, m, done, arg);
}

cms_nats_err cms_nats_dead_letter(cms_nats *n, const char *service, const cms_nats_msg *orig,
                                  const char *reason, cms_nats_pub_cb done, void *arg)
{
    cms_nats_err err = CMS_NATS_EINVAL;
    natsMsg *m = NULL;
    char subject[256], seq[32];
    if (n == NULL || service == NULL || *service == '\0' || orig == NULL || reason == NULL ||
        done == NULL)
        goto out;
    int w = snprintf(subject, sizeof subject, "cms.dlq.%s", service);
    if (w < 0 || (size_t)w >= sizeof subject)
        goto out;
    if (n->state >= N_CLOSING) {
        err = CMS_NATS_ECLOSED;
        goto out;
    }
    if (n->inflight >= n->max_inflight) {
        n->room_wanted = true;
        err = CMS_NATS_EBUSY;
        goto out;
    }
    m = build_msg(subject, NULL, NULL, cms_nats_msg_data(orig), cms_nats_msg_len(orig), &err);
    if (m == NULL)
        goto out;
    natsStatus st = NATS_OK;
    const char *orig_id = NULL;
    for (size_t i = 0; st == NATS_OK && i < orig->nhdrs; i++) {
        const char *k = orig->hdrs[i].key;
        /* expectations were about the original stream; here they would only fail the publish */
        if (strncasecmp(k, "Nats-Expected-", strlen("Nats-Expected-")) == 0)
            continue;
        /* CMS_DLQ dedupes ids across all its subjects: the original id moves
         * aside so one service's dead letter never hides another's */
        if (strcasecmp(k, "Nats-Msg-Id") == 0) {
            orig_id = orig->hdrs[i].value;
            st = natsMsgHeader_Set(m, "Cms-Dlq-Msg-Id", orig_id);
            continue;
        }
        st = natsMsgHeader_Add(m, k, orig->hdrs[i].value);
    }
    if (st == NATS_OK)
        st = natsMsgHeader_Set(m, "Cms-Dlq-Reason", reason);
    if (st == NATS_OK)
        st = natsMsgHeader_Set(m, "Cms-Dlq-Subject", cms_nats_msg_subject(orig));
    char id[400];
    id[0] = '\0';
    if (orig->stream_seq > 0 && orig->stream != NULL) {
        snprintf(seq, sizeof seq, "%" PRIu64, orig->stream_seq);
        if (st == NATS_OK)
            st = natsMsgHeader_Set(m, "Cms-Dlq-Stream-Seq", seq);
        /* a redelivered original dead-lettered twice stays one dead letter */
        snprintf(id, sizeof id, "dlq:%s:%s:%s", service, orig->stream, seq);
    } else if (orig_id != NULL) {
        snprintf(id, sizeof id, "dlq:%s:%s", service, orig_id);
    }
    if (st == NATS_OK && id[0] != '\0')
        st = natsMsgHeader_Set(m, "Nats-Msg-Id", id);
    if (st != NATS_OK) {
        err = st == NATS_NO_MEMORY ? CMS_NATS_ENOMEM : CMS_NATS_EINVAL;
        goto out;
    }
    err = js_publish_msg(n, m, done, arg);
    m = NULL;
out:
    natsMsg_Destroy(m);
    return err;
}
