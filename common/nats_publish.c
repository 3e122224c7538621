/* Publishing from the loop: core publishes and replies, and JetStream
 * publishes with their in-flight list; see nats_int.h. */
#include "nats_int.h"

#include "log.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the in-flight list (mu held) ---- */

void nats_inflight_add_locked(cms_nats *n, pub *p)
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

void nats_inflight_unlink_locked(cms_nats *n, pub *p)
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
pub *nats_inflight_find_locked(cms_nats *n, const natsMsg *m)
{
    for (pub *p = n->ihead; p != NULL; p = p->inext) {
        if (p->m == m)
            return p;
    }
    return NULL;
}

void nats_pub_complete_locked(cms_nats *n, pub *p, natsStatus s, jsErrCode jerr, const char *text,
                              bool dup, uint64_t seq, const char *stream)
{
    nats_inflight_unlink_locked(n, p);
    p->answered = true;
    p->status = s;
    p->jerr = jerr;
    p->duplicate = dup;
    p->seq = seq;
    snprintf(p->stream, sizeof p->stream, "%s", stream != NULL ? stream : "");
    if (text != NULL)
        snprintf(p->errtext, sizeof p->errtext, "%s", text);
    p->ev.kind = EV_PUB;
    if (!nats_push_locked(n, &p->ev)) {
        /* past close: nobody will read it */
        natsMsg_Destroy(p->m);
        free(p);
    }
    uv_cond_broadcast(&n->cond);
}

/* ---- answers (loop) ---- */

void nats_writer_free_msg(cms_nats *n, natsMsg *nm)
{
    op *o = nats_op_new(OP_MSG_FREE);
    if (o == NULL)
        return; /* cannot hand it over safely: leak one message rather than race */
    o->m = nm;
    if (!nats_push_op(n, o, NULL)) {
        free(o);
        natsMsg_Destroy(nm); /* writer gone: nothing else touches it */
    }
}

void nats_dispatch_pub(cms_nats *n, pub *p)
{
    cms_nats_err err = nats_err_from_status(p->status);
    if (p->jerr == JSStreamMessageExceedsMaximumErr)
        err = CMS_NATS_ETOOBIG;
    else if (p->jerr == JSStreamNotFoundErr)
        err = CMS_NATS_ENOSTREAM;
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
    nats_writer_free_msg(n, p->m);
    n->inflight--;
    cms_gauge_set(n->m_inflight, n->inflight);
    cms_nats_pub_cb done = p->done;
    void *arg = p->arg;
    char stream[sizeof p->stream];
    memcpy(stream, p->stream, sizeof stream);
    cms_nats_pub_ack ack = {.duplicate = p->duplicate, .seq = p->seq, .stream = stream};
    if (err != CMS_NATS_OK)
        ack = (cms_nats_pub_ack){.stream = ""};
    free(p);
    done(arg, err, &ack);
}

/* ---- building and sending (loop) ---- */

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
    op *o = nats_op_new(OP_PUB);
    bool busy = false;
    if (o == NULL) {
        err = CMS_NATS_ENOMEM;
        goto out;
    }
    o->m = m;
    if (!nats_push_op(n, o, &busy)) {
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
    pub *p = calloc(1, sizeof *p);
    op *o = nats_op_new(OP_JSPUB);
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
    nats_inflight_add_locked(n, p);
    uv_mutex_unlock(&n->mu);
    if (!nats_push_op(n, o, NULL)) {
        uv_mutex_lock(&n->mu);
        nats_inflight_unlink_locked(n, p);
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

int cms_nats_publish_inflight(const cms_nats *n)
{
    return n == NULL ? 0 : n->inflight;
}
