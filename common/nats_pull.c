/* JetStream pull consumers: a fetch thread each; see nats_int.h.
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
#include "nats_int.h"

#include "backoff.h"
#include "log.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_MAX_ACK_PENDING 1024
#define DEFAULT_FETCH_BATCH 256
#define DEFAULT_ACK_WAIT_MS 30000
#define FETCH_TIMEOUT_MS 1000 /* lifetime of one pull request on the server */
/* how long past that its end (a 408, or its last message) may still come: a
 * request counts as open until then, so that a quiesce never declares idle
 * while the server may still deliver to it (it may have received the
 * request late, under load) */
#define FETCH_ANSWER_GRACE_MS 2000
#define REBIND_AFTER_ERRORS 3 /* consecutive fetch errors before re-creating the binding */
#define PULL_SLICE_MS 250     /* longest wait before re-checking stop/pause/credit */

/* Sleeps up to ms unless stopped. Returns false once stopped. */
static bool consumer_pause_for(cms_nats_consumer *c, int64_t ms)
{
    uv_mutex_lock(&c->mu);
    uint64_t deadline = uv_hrtime() + (uint64_t)ms * NS_PER_MS;
    while (!c->stop && nats_wait_until(&c->cond, &c->mu, deadline)) {
    }
    bool go_on = !c->stop;
    uv_mutex_unlock(&c->mu);
    return go_on;
}

/* Binds the durable if it exists, else creates it (where this user may:
 * with the project's NATS permissions only the migrator may). */
static natsStatus consumer_ensure(cms_nats_consumer *c, jsCtx *js)
{
    cms_nats_durable_spec d = {.stream = c->stream,
                               .durable = c->durable,
                               .filter_subject = c->filter,
                               .max_ack_pending = c->max_ack_pending,
                               .ack_wait_ms = c->ack_wait_ms,
                               .max_deliver = c->max_deliver};
    return nats_durable_ensure(js, &d, true);
}

static void set_bound(cms_nats_consumer *c, bool bound)
{
    uv_mutex_lock(&c->mu);
    c->bound = bound;
    uv_mutex_unlock(&c->mu);
}

static void consumer_unbind(cms_nats_consumer *c)
{
    set_bound(c, false);
    /* a plain subscription: destroying it never touches the durable */
    natsSubscription_Destroy(c->ns);
    c->ns = NULL;
    c->inbox[0] = '\0';
    c->req_left = 0; /* an open request's messages went with the inbox */
}

static natsStatus consumer_bind(cms_nats_consumer *c, natsConnection *nc, jsCtx *js)
{
    natsStatus st = consumer_ensure(c, js);
    /* under the connection's inbox prefix (natsInbox_Create ignores it) */
    if (st == NATS_OK && cms_nats_inbox(c->n, c->inbox, sizeof c->inbox) != CMS_NATS_OK)
        st = NATS_INVALID_ARG;
    if (st == NATS_OK)
        st = natsConnection_SubscribeSync(&c->ns, nc, c->inbox);
    if (st == NATS_OK)
        st = natsSubscription_SetPendingLimits(c->ns, -1, -1);
    if (st != NATS_OK) {
        consumer_unbind(c);
        return st;
    }
    c->req_left = 0;
    set_bound(c, true);
    cms_log_info("nats: consumer bound", "{s:s, s:s}", "stream", c->stream, "durable", c->durable);
    return NATS_OK;
}

static natsStatus consumer_request(cms_nats_consumer *c, natsConnection *nc, int batch)
{
    char body[96];
    int len = snprintf(body, sizeof body, "{\"batch\":%d,\"expires\":%" PRId64 "}", batch,
                       (int64_t)FETCH_TIMEOUT_MS * NS_PER_MS);
    natsStatus st = natsConnection_PublishRequest(nc, c->next_subj, c->inbox, body, len);
    if (st == NATS_OK) {
        cms_counter_add(c->m_requests, 1);
        c->req_left = batch;
        c->req_deadline =
            uv_hrtime() + (uint64_t)(FETCH_TIMEOUT_MS + FETCH_ANSWER_GRACE_MS) * NS_PER_MS;
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
    if (natsMsg_GetMetaData(&meta, nm) != NATS_OK || (m = nats_msg_wrap(n, nm)) == NULL) {
        /* unreadable or no memory: left unacked, the server redelivers it */
        jsMsgMetaData_Destroy(meta);
        natsMsg_Destroy(nm);
        return;
    }
    m->consumer = c;
    m->stream_seq = meta->Sequence.Stream;
    m->num_delivered = meta->NumDelivered;
    m->num_pending = meta->NumPending;
    m->stream = nats_dupstr(meta->Stream);
    jsMsgMetaData_Destroy(meta);
    uv_mutex_lock(&c->mu);
    c->credit--;
    uv_mutex_unlock(&c->mu);
    cms_counter_add(c->m_pulled, 1);
    if (!nats_push_ev(n, &m->ev))
        nats_msg_free_raw(m); /* past close */
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
    jsCtx *js = nats_wait_ready(c->n, &nc);
    cms_backoff b;
    cms_backoff_init(&b, BACKOFF_MIN_MS, BACKOFF_MAX_MS);
    int errors = 0;
    while (js != NULL) {
        /* bound even while paused: a standby is ready, and says so */
        if (c->ns == NULL) {
            uv_mutex_lock(&c->mu);
            bool stop_now = c->stop;
            uv_mutex_unlock(&c->mu);
            if (stop_now)
                break;
            if (consumer_bind(c, nc, js) != NATS_OK) {
                if (!consumer_pause_for(c, (int64_t)cms_backoff_next(&b)))
                    break;
                continue;
            }
            cms_backoff_reset(&b);
            errors = 0;
            continue;
        }
        int queued = 0, bytes = 0;
        if (c->ns != NULL)
            (void)natsSubscription_GetPending(c->ns, &queued, &bytes);
        uint64_t now = uv_hrtime();
        if (c->req_left > 0 && now >= c->req_deadline)
            c->req_left = 0; /* no answer in time (lost with a connection) */
        /* paused: no new request, but what the open one still brings and
         * what is queued are handed over; idle once neither is left */
        bool owed = c->ns != NULL && (c->req_left > 0 || queued > 0);
        bool idle = false;
        uv_mutex_lock(&c->mu);
        while (!c->stop && (c->credit <= 0 || (c->paused && !owed))) {
            if (c->paused && !owed && c->idle_wanted) {
                c->idle_wanted = false;
                idle = true;
                break;
            }
            uv_cond_wait(&c->cond, &c->mu);
        }
        bool stop = c->stop, paused = c->paused;
        int credit = c->credit;
        uv_mutex_unlock(&c->mu);
        if (stop)
            break;
        if (idle) {
            /* after every message handed over: the queue keeps their order */
            (void)nats_push_ev(c->n, &c->idle_ev);
            continue;
        }
        if (c->ns == NULL)
            continue; /* unbound meanwhile: bound again at the top */
        natsStatus st = NATS_OK;
        if (!paused && c->req_left <= 0 && queued == 0)
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
    c->stream = nats_dupstr(o->stream);
    c->durable = nats_dupstr(o->durable);
    c->filter = nats_dupstr(o->filter_subject);
    c->max_ack_pending = o->max_ack_pending > 0 ? o->max_ack_pending : DEFAULT_MAX_ACK_PENDING;
    c->fetch_batch = o->fetch_batch > 0 ? o->fetch_batch : DEFAULT_FETCH_BATCH;
    c->ack_wait_ms = o->ack_wait_ms > 0 ? o->ack_wait_ms : DEFAULT_ACK_WAIT_MS;
    c->max_deliver = o->max_deliver != 0 ? o->max_deliver : -1;
    c->credit = c->max_ack_pending;
    c->paused = o->start_paused;
    c->idle_ev.kind = EV_PULL_IDLE;
    char labels[160];
    snprintf(labels, sizeof labels, "durable=\"%s\"", o->durable);
    c->m_requests = cms_metrics_counter(cms_metrics_default(), "cms_nats_pull_requests_total",
                                        "Pull requests sent to JetStream, by durable", labels);
    c->m_pulled =
        cms_metrics_counter(cms_metrics_default(), "cms_nats_pulled_messages_total",
                            "Messages JetStream delivered to pull requests, by durable", labels);
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

bool cms_nats_consumer_bound(cms_nats_consumer *c)
{
    if (c == NULL)
        return false;
    uv_mutex_lock(&c->mu);
    bool bound = c->bound;
    uv_mutex_unlock(&c->mu);
    return bound;
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

void cms_nats_consumer_quiesce(cms_nats_consumer *c, void (*idle)(void *arg), void *arg)
{
    if (c == NULL || c->idle_cb != NULL)
        return; /* one at a time: the first one's callback answers */
    c->idle_cb = idle;
    c->idle_arg = arg;
    uv_mutex_lock(&c->mu);
    c->paused = true;
    bool bound = c->bound;
    if (bound)
        c->idle_wanted = true;
    uv_cond_signal(&c->cond);
    uv_mutex_unlock(&c->mu);
    if (!bound) /* no inbox: nothing more can come */
        (void)nats_push_ev(c->n, &c->idle_ev);
}

void nats_dispatch_pull_idle(cms_nats_consumer *c)
{
    void (*idle)(void *) = c->idle_cb;
    c->idle_cb = NULL;
    if (idle != NULL)
        idle(c->idle_arg);
}

void nats_consumer_free(cms_nats_consumer *c)
{
    uv_cond_destroy(&c->cond);
    uv_mutex_destroy(&c->mu);
    free(c->stream);
    free(c->durable);
    free(c->filter);
    free(c->next_subj);
    free(c);
}
