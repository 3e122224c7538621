/* Core subscriptions: made and ended by the writer, delivered through the
 * event queue, freed by the loop once neither nats.c nor an op names them;
 * see nats_int.h. */
#include "nats_int.h"

#include "log.h"

#include <stdlib.h>

/* ---- nats.c callbacks ---- */

static void on_core_msg(natsConnection *nc, natsSubscription *ns, natsMsg *nm, void *closure)
{
    (void)nc;
    (void)ns;
    cms_nats_sub *s = closure;
    cms_nats *n = s->n;
    cms_nats_msg *m = nats_msg_wrap(n, nm);
    if (m == NULL) {
        natsMsg_Destroy(nm);
        cms_counter_inc(n->m_dropped);
        return;
    }
    m->sub = s;
    if (!nats_push_core_msg(n, &m->ev)) {
        nats_msg_free_raw(m);
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
    (void)nats_push_locked(n, &s->ev); /* refused only past close: destroy frees s */
    n->nats_subs_live--;
    uv_cond_broadcast(&n->cond);
    uv_mutex_unlock(&n->mu);
}

/* ---- writer ---- */

void nats_writer_subscribe(cms_nats *n, natsConnection *nc, cms_nats_sub *s)
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
        (void)nats_push_ev(n, &s->ev);
        return;
    }
    s->ns = ns;
    s->wnext = n->wsubs;
    n->wsubs = s;
}

/* The op holds a reference to s until unsub_ev is queued. */
void nats_writer_unsubscribe(cms_nats *n, cms_nats_sub *s)
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

void nats_writer_unsub_done(cms_nats *n, cms_nats_sub *s)
{
    s->unsub_ev.kind = EV_UNSUB_DONE;
    (void)nats_push_ev(n, &s->unsub_ev); /* s may be freed from here on */
}

/* ---- loop ---- */

void nats_sub_unref(cms_nats *n, cms_nats_sub *s)
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
    o = nats_op_new(OP_SUB);
    if (s == NULL || o == NULL || (s->subject = nats_dupstr(subject)) == NULL ||
        (queue_group != NULL && (s->queue = nats_dupstr(queue_group)) == NULL)) {
        rc = CMS_NATS_ENOMEM;
        goto out;
    }
    s->n = n;
    s->cb = cb;
    s->arg = arg;
    s->refs = 2; /* the caller's and nats.c's */
    o->sub = s;
    if (!nats_push_op(n, o, NULL)) {
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
    op *o = nats_op_new(OP_UNSUB);
    if (o != NULL) {
        o->sub = s;
        if (nats_push_op(n, o, NULL))
            return; /* the caller's reference now belongs to the op */
        free(o);
    }
    /* without the op (no memory, or closed) the subscription ends with the connection */
    nats_sub_unref(n, s);
}
