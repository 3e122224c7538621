/* The inside of common/nats: what its files share. Not for other modules:
 * nats.h is the one way in.
 *
 *   nats.c          create, close, destroy; the event queue and the loop's
 *                   dispatch; the connection's state
 *   nats_writer.c   the writer thread, the only caller of the connection,
 *                   and nats.c's callbacks
 *   nats_publish.c  core and JetStream publishes from the loop, the
 *                   in-flight list of JetStream publishes
 *   nats_msg.c      received messages: wrapping, accessors, settling
 *   nats_sub.c      core subscriptions
 *   nats_pull.c     JetStream pull consumers (a fetch thread each)
 *   nats_admin.c    stream provisioning (a helper thread per call)
 *
 * Threads and what each may touch:
 *
 *   loop      everything marked "loop"; calls nats.c only to read parts of
 *             a received message no other thread reads or writes (subject,
 *             data, headers) and to build outgoing messages.
 *   writer    the only caller of connection functions: connect, subscribe,
 *             publish, JetStream publish, ack/nak/term, close. Fed by the
 *             op queue (wmu/wcond).
 *   nats.c    its callbacks (messages, publish acks, connection events) only
 *             push onto the event queue (mu) and uv_async_send.
 *   fetch     one per consumer: creates or binds the durable, then fetches
 *             while it has credit (consumer mu/cond).
 *   provision one per cms_nats_provision call: blocking JetStream API calls.
 *
 * Lock order: a thread holding n->mu takes no other lock except inside
 * uv_async_send; wmu and a consumer's mu are never held together with mu.
 *
 * Lifetimes: the loop frees a message wrapper, a publish record or a
 * subscription only after the last event that names it has been drained,
 * which the queue's order guarantees (nats.c signals a subscription's end
 * only after its message handler returned). Consumers and the hub live
 * until cms_nats_destroy. */
#ifndef CMS_NATS_INT_H
#define CMS_NATS_INT_H

#include "nats.h"

#include "fsm.h"
#include "metrics.h"
#include "natsauth.h"

#include <nats/nats.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#define NS_PER_MS INT64_C(1000000)
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define JS_API_WAIT_MS 5000 /* blocking JetStream API calls (helper threads only) */
/* Permissions violations: texts waiting for the loop (the rest are only
 * counted), and the subjects logged (past that, counted only). */
#define PERM_PENDING_MAX 16
#define PERM_TEXT_MAX 256
#define PERM_SEEN_MAX 64

/* ---- states, one enum per lock domain ---- */

/* The loop's view of the connection (loop). */
#define N_STATES(X)                                                                                \
    X(N_CONNECTING, "connecting") /* never connected yet */                                        \
    X(N_CONNECTED, "connected")                                                                    \
    X(N_DISCONNECTED, "disconnected") /* lost; nats.c reconnects */                                \
    X(N_CLOSING, "closing")           /* cms_nats_close called; the writer tears down */           \
    X(N_CLOSED, "closed")             /* the writer is gone; the async handle closes */
typedef enum { N_STATES(CMS_ENUM_ITEM) N_NSTATES } n_state;

/* The event queue (mu): open; closing (helpers stop, the writer tears
 * down; events still flow); shut (nothing may touch the async handle). */
#define Q_STATES(X) X(Q_OPEN, "open") X(Q_CLOSING, "closing") X(Q_SHUT, "shut")
typedef enum { Q_STATES(CMS_ENUM_ITEM) Q_NSTATES } q_state;

/* The connection as nats.c's callbacks last reported it (mu). */
#define NC_STATES(X)                                                                               \
    X(NC_NONE, "none") /* no callback yet */                                                       \
    X(NC_UP, "up")                                                                                 \
    X(NC_DOWN, "down")                                                                             \
    X(NC_CLOSED, "closed") /* nats.c's closed callback ran: final */
typedef enum { NC_STATES(CMS_ENUM_ITEM) NC_NSTATES } nc_state;

/* The writer (wmu): running; asked to close; gone (callers of push_op then
 * handle their ops themselves). */
#define W_STATES(X)                                                                                \
    X(W_RUNNING, "running") X(W_CLOSE_REQUESTED, "close_requested") X(W_GONE, "gone")
typedef enum { W_STATES(CMS_ENUM_ITEM) W_NSTATES } w_state;

/* ---- queue items ---- */

typedef enum {
    EV_MSG,
    EV_PUB,
    EV_PROVISIONED,
    EV_PROBED,
    EV_SUB_DONE,
    EV_UNSUB_DONE,
    EV_PULL_IDLE,
    EV_WRITER_DONE
} ev_kind;

/* An item of the event queue (nats.c threads, writer, helpers -> loop). */
typedef struct ev {
    struct ev *next;
    ev_kind kind;
} ev;

typedef enum { OP_SUB, OP_UNSUB, OP_PUB, OP_JSPUB, OP_SETTLE, OP_MSG_FREE } op_kind;
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

struct cms_nats_msg {
    ev ev; /* first: the message is its own event */
    cms_nats *n;
    natsMsg *m;
    cms_nats_sub *sub;           /* core: until dispatched */
    cms_nats_consumer *consumer; /* JetStream: credit goes back here */
    const char **hkeys;          /* loop: the header keys, listed on first use */
    int nhkeys;                  /* -1 until listed */
    char *stream;                /* JetStream: the stream it came from */
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
    char stream[CMS_NATS_STREAM_NAME_MAX];
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
    uv_mutex_t mu;       /* guards the six below */
    uv_cond_t cond;
    int credit;
    bool paused, stop;
    bool bound;       /* the fetch thread has an inbox */
    bool idle_wanted; /* cms_nats_consumer_quiesce: push idle_ev once idle */
    /* loop: the quiesce in progress (idle_ev is queued at most once) */
    ev idle_ev;
    void (*idle_cb)(void *arg);
    void *idle_arg;
    /* fetch thread */
    natsSubscription *ns;           /* plain subscription on inbox */
    char inbox[CMS_NATS_INBOX_MAX]; /* "" while unbound */
    char *next_subj;                /* $JS.API.CONSUMER.MSG.NEXT.<stream>.<durable> */
    int req_left;                   /* messages our open pull request may still bring */
    uint64_t req_deadline;
    cms_counter *m_requests, *m_pulled; /* by durable (atomic: any thread) */
};

typedef struct prov {
    ev ev;
    cms_nats *n;
    cms_nats_stream_spec *specs; /* strings owned */
    size_t count;
    cms_nats_durable_spec *durables; /* strings owned */
    size_t ndurables;
    void (*done)(void *arg, cms_nats_err err);
    void *arg;
    cms_nats_err result;
} prov;

/* cms_nats_probe_stream's work: the probes (strings owned), their answers. */
typedef struct probe_job {
    ev ev;
    cms_nats *n;
    cms_nats_probe *probes;
    size_t count;
    bool *present;
    void (*done)(void *arg, cms_nats_err err, const bool *present);
    void *arg;
    cms_nats_err result;
} probe_job;
void nats_probe_free(probe_job *p);

struct cms_nats {
    /* loop */
    uv_loop_t *loop;
    uv_async_t async;
    n_state state;
    char *url, *name;
    char url_shown[512]; /* url without its password, for logs */
    size_t queue_cap;
    bool send_asap;
    int max_inflight;
    int64_t pub_timeout_ms;
    void (*on_state)(void *arg, bool connected);
    void (*on_auth_refused)(void *arg);
    void *state_arg;
    void (*on_room)(void *arg);
    void *room_arg;
    bool room_wanted; /* a publish met the in-flight cap: call on_room when a slot frees */
    int inflight;
    int live_msgs; /* handed to handlers, not yet destroyed */
    uint64_t reconnects_seen, errors_seen, conn_events_seen;
    cms_nats_sub *subs;
    cms_nats_consumer *consumers;
    ev done_ev; /* EV_WRITER_DONE */
    void (*closed)(void *arg);
    void *closed_arg;
    natsOptions *opts;
    uv_thread_t writer;
    bool refused;                     /* the refusal was seen (logged once) */
    char (*perm_seen)[PERM_TEXT_MAX]; /* "<op> <subject>" logged, PERM_SEEN_MAX */
    size_t nperm_seen;                /* in perm_seen */
    bool perm_seen_full;              /* and that was said once */

    /* any thread: set in create, then read only */
    cms_natsauth_info auth;

    /* mu: the event queue and what nats.c callbacks report */
    uv_mutex_t mu;
    uv_cond_t cond; /* readiness, provisioning end, close waits */
    q_state qstate;
    ev *head, *tail;
    size_t core_queued;
    natsConnection *nc; /* set once by the writer; helpers wait for it */
    jsCtx *js;
    nc_state ncstate;
    uint64_t conn_events, reconnects, async_errors;
    natsStatus last_async_error;
    bool auth_refused; /* the server refused the credentials */
    char perm_texts[PERM_PENDING_MAX][PERM_TEXT_MAX];
    size_t nperm;       /* in perm_texts */
    int nats_subs_live; /* core subscriptions whose end nats.c has not reported */
    int prov_running;
    pub *ihead, *itail; /* in flight */
    int icount;

    /* wmu: the op queue */
    uv_mutex_t wmu;
    uv_cond_t wcond;
    w_state wstate;
    op *whead, *wtail;
    size_t core_pubs_queued;

    /* writer */
    cms_nats_sub *wsubs;
    uint64_t wjs_published; /* JetStream publishes made (nats.c's pending map exists) */

    /* any thread */
    atomic_int_least64_t max_payload; /* the server's, from its INFO; 0 before connecting */

    /* metrics (atomic; any thread) */
    cms_counter *m_reconnects, *m_dropped, *m_published, *m_pub_errors, *m_perm;
    cms_gauge *m_connected, *m_inflight;
};

/* ---- nats.c ---- */

/* mu held. False if the queue no longer takes events. */
bool nats_push_locked(cms_nats *n, ev *e);
bool nats_push_ev(cms_nats *n, ev *e);
/* A core message: dropped (false) when queue_cap of them are waiting. */
bool nats_push_core_msg(cms_nats *n, ev *e);
/* Wakes the loop to look at the connection report (mu held). */
void nats_poke_locked(cms_nats *n);
/* mu held: the callbacks' view of the connection changed. */
void nats_report_locked(cms_nats *n, nc_state to);
void nats_set_qstate_locked(cms_nats *n, q_state to);
/* Timed wait on cond (mu held) until deadline_ns (uv_hrtime clock). False
 * once the deadline has passed. */
bool nats_wait_until(uv_cond_t *cond, uv_mutex_t *mu, uint64_t deadline_ns);
/* Waits until the writer has its JetStream context; NULL when closing (a
 * consumer's stop is always set together with the queue's closing). */
jsCtx *nats_wait_ready(cms_nats *n, natsConnection **nc);
/* The helpers' "stop" (mu taken). */
bool nats_closing(cms_nats *n);
cms_nats_err nats_err_from_status(natsStatus s);
char *nats_dupstr(const char *s);

/* ---- nats_writer.c ---- */

void nats_writer_main(void *arg);
/* Loop. False once the writer has left (the caller handles the op itself)
 * or, for a core publish, when queue_cap of them wait (*busy set). */
bool nats_push_op(cms_nats *n, op *o, bool *busy);
op *nats_op_new(op_kind kind);
/* Loop: asks the writer to close (it then tears everything down). */
void nats_writer_request_close(cms_nats *n);
/* nats.c's options for n, with o's security (natsauth.h); why on failure. */
cms_natsauth_err nats_set_options(cms_nats *n, const cms_nats_security *sec, char *why,
                                  size_t whylen);

/* ---- nats_publish.c ---- */

/* mu held */
void nats_inflight_add_locked(cms_nats *n, pub *p);
void nats_inflight_unlink_locked(cms_nats *n, pub *p);
pub *nats_inflight_find_locked(cms_nats *n, const natsMsg *m);
/* Completes p with a result and queues it for the loop (mu held). */
void nats_pub_complete_locked(cms_nats *n, pub *p, natsStatus s, jsErrCode jerr, const char *text,
                              bool dup, uint64_t seq, const char *stream);
/* Loop: the answer of one JetStream publish. */
void nats_dispatch_pub(cms_nats *n, pub *p);
/* Loop: frees nm once the writer is past every op queued so far. */
void nats_writer_free_msg(cms_nats *n, natsMsg *nm);

/* ---- nats_msg.c ---- */

/* Any thread that owns nm: wraps it. On failure nm is still the caller's. */
cms_nats_msg *nats_msg_wrap(cms_nats *n, natsMsg *nm);
void nats_msg_free_raw(cms_nats_msg *m);
/* Loop: frees a message the loop owns, through the writer if an op names it. */
void nats_msg_dispose(cms_nats_msg *m);
void nats_return_credit(cms_nats_consumer *c);

/* ---- nats_sub.c ---- */

void nats_sub_unref(cms_nats *n, cms_nats_sub *s);
/* Writer */
void nats_writer_subscribe(cms_nats *n, natsConnection *nc, cms_nats_sub *s);
void nats_writer_unsubscribe(cms_nats *n, cms_nats_sub *s);
void nats_writer_unsub_done(cms_nats *n, cms_nats_sub *s);

/* ---- nats_admin.c ---- */

void nats_prov_free(prov *p);
/* Binds durable d if it exists (its settings compared, differences logged);
 * creates it only if it does not and create is set: adding a consumer that
 * exists would update it (nats-server 2.9), overwriting what an operator
 * chose. NATS_NOT_FOUND: missing (and not created). Blocking; any thread. */
natsStatus nats_durable_ensure(jsCtx *js, const cms_nats_durable_spec *d, bool create);

/* ---- nats_pull.c ---- */

void nats_consumer_free(cms_nats_consumer *c);
void nats_dispatch_pull_idle(cms_nats_consumer *c);

#endif
