/* Received messages: wrapping, accessors, settling, freeing; see nats_int.h.
 *
 * A message belongs to the loop once it is handed over, and the only other
 * thread that touches its natsMsg afterwards is the writer, which reads the
 * reply subject (immutable) to settle it and frees it when an op names it.
 * So the loop reads headers straight from nats.c's message, parsing them on
 * first use, instead of copying them where the message is received. */
#include "nats_int.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- wrapping (any thread that owns nm) ---- */

cms_nats_msg *nats_msg_wrap(cms_nats *n, natsMsg *nm)
{
    cms_nats_msg *m = calloc(1, sizeof *m);
    if (m == NULL)
        return NULL;
    m->ev.kind = EV_MSG;
    m->n = n;
    m->m = nm;
    m->nhkeys = -1;
    return m;
}

void nats_msg_free_raw(cms_nats_msg *m)
{
    if (m == NULL)
        return;
    natsMsg_Destroy(m->m);
    free((void *)m->hkeys);
    free(m->stream);
    free(m);
}

void nats_return_credit(cms_nats_consumer *c)
{
    uv_mutex_lock(&c->mu);
    c->credit++;
    uv_cond_signal(&c->cond);
    uv_mutex_unlock(&c->mu);
}

/* ---- accessors (loop; valid until cms_nats_msg_destroy) ---- */

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

/* The header keys, listed once (m is the loop's: the cache is its own). */
static int header_keys(const cms_nats_msg *cm)
{
    cms_nats_msg *m = (cms_nats_msg *)cm;
    if (m->nhkeys >= 0)
        return m->nhkeys;
    const char **keys = NULL;
    int n = 0;
    if (natsMsgHeader_Keys(m->m, &keys, &n) != NATS_OK) {
        keys = NULL;
        n = 0;
    }
    m->hkeys = keys;
    m->nhkeys = n;
    return n;
}

const char *cms_nats_msg_header(const cms_nats_msg *m, const char *key)
{
    if (m == NULL || key == NULL)
        return NULL;
    const char *v = NULL;
    if (natsMsgHeader_Get(m->m, key, &v) == NATS_OK)
        return v;
    /* header names are case-insensitive on the wire */
    int n = header_keys(m);
    for (int i = 0; i < n; i++) {
        if (strcasecmp(m->hkeys[i], key) == 0 &&
            natsMsgHeader_Get(m->m, m->hkeys[i], &v) == NATS_OK)
            return v;
    }
    return NULL;
}

size_t cms_nats_msg_header_count(const cms_nats_msg *m)
{
    if (m == NULL)
        return 0;
    size_t total = 0;
    int n = header_keys(m);
    for (int i = 0; i < n; i++) {
        const char **vals = NULL;
        int nv = 0;
        if (natsMsgHeader_Values(m->m, m->hkeys[i], &vals, &nv) == NATS_OK)
            total += (size_t)nv;
        free((void *)vals);
    }
    return total;
}

bool cms_nats_msg_header_at(const cms_nats_msg *m, size_t i, const char **key, const char **value)
{
    if (m == NULL)
        return false;
    int n = header_keys(m);
    for (int k = 0; k < n; k++) {
        const char **vals = NULL;
        int nv = 0;
        if (natsMsgHeader_Values(m->m, m->hkeys[k], &vals, &nv) != NATS_OK)
            continue;
        if (i < (size_t)nv) {
            *key = m->hkeys[k];
            *value = vals[i];
            free((void *)vals);
            return true;
        }
        i -= (size_t)nv;
        free((void *)vals);
    }
    return false;
}

const char *cms_nats_msg_stream(const cms_nats_msg *m)
{
    return m == NULL ? NULL : m->stream;
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

/* ---- settling (loop) ---- */

static cms_nats_err settle(cms_nats_msg *m, settle_kind k, int64_t delay_ms)
{
    if (m == NULL || m->consumer == NULL || m->settled || delay_ms < 0)
        return CMS_NATS_EINVAL;
    cms_nats *n = m->n;
    if (n->state >= N_CLOSING)
        return CMS_NATS_ECLOSED;
    op *o = nats_op_new(OP_SETTLE);
    if (o == NULL)
        return CMS_NATS_ENOMEM;
    o->m = m->m;
    o->settle = k;
    o->delay_ms = delay_ms;
    if (!nats_push_op(n, o, NULL)) {
        free(o);
        return CMS_NATS_ECLOSED;
    }
    m->handed = true;
    if (k != SETTLE_WPI) {
        m->settled = true;
        nats_return_credit(m->consumer);
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

void nats_msg_dispose(cms_nats_msg *m)
{
    if (m->consumer != NULL && !m->settled) {
        m->settled = true;
        nats_return_credit(m->consumer);
    }
    if (m->handed) {
        nats_writer_free_msg(m->n, m->m);
        m->m = NULL;
    }
    nats_msg_free_raw(m);
}

void cms_nats_msg_destroy(cms_nats_msg *m)
{
    if (m == NULL)
        return;
    m->n->live_msgs--;
    nats_msg_dispose(m);
}
