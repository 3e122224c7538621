/* NATS for one service: creation, closing, the event queue and the loop's
 * dispatch; see nats.h for the contract and nats_int.h for the threads. */
#include "nats_int.h"

#include "config.h"
#include "log.h"

#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_QUEUE_CAP 8192
#define DEFAULT_INFLIGHT 256
#define DEFAULT_PUB_TIMEOUT_MS 5000
#define DEFAULT_MAX_PAYLOAD (1024 * 1024) /* nats-server's default, until its INFO says */

static const char *const n_names[] = {N_STATES(CMS_ENUM_TEXT)};
static const bool n_moves[N_NSTATES][N_NSTATES] = {
    [N_CONNECTING] = {[N_CONNECTED] = true, [N_CLOSING] = true},
    [N_CONNECTED] = {[N_DISCONNECTED] = true, [N_CLOSING] = true},
    [N_DISCONNECTED] = {[N_CONNECTED] = true, [N_CLOSING] = true},
    [N_CLOSING] = {[N_CLOSED] = true},
};
static const cms_fsm n_fsm = CMS_FSM_INIT("nats connection", CMS_LOG_INFO, n_names, n_moves);

static const char *const q_names[] = {Q_STATES(CMS_ENUM_TEXT)};
static const bool q_moves[Q_NSTATES][Q_NSTATES] = {
    [Q_OPEN] = {[Q_CLOSING] = true},
    [Q_CLOSING] = {[Q_SHUT] = true},
};
static const cms_fsm q_fsm = CMS_FSM_INIT("nats event queue", CMS_LOG_DEBUG, q_names, q_moves);

static const char *const nc_names[] = {NC_STATES(CMS_ENUM_TEXT)};
static const bool nc_moves[NC_NSTATES][NC_NSTATES] = {
    [NC_NONE] = {[NC_UP] = true, [NC_DOWN] = true, [NC_CLOSED] = true},
    [NC_UP] = {[NC_DOWN] = true, [NC_CLOSED] = true},
    [NC_DOWN] = {[NC_UP] = true, [NC_CLOSED] = true},
};
static const cms_fsm nc_fsm =
    CMS_FSM_INIT("nats.c connection report", CMS_LOG_DEBUG, nc_names, nc_moves);

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
    case CMS_NATS_ETOOBIG:
        return "message too large for the server or the stream";
    case CMS_NATS_ENOSTREAM:
        return "no stream takes the subject";
    }
    return "unknown";
}

cms_nats_err nats_err_from_status(natsStatus s)
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
    case NATS_MAX_PAYLOAD:
        return CMS_NATS_ETOOBIG;
    case NATS_NO_RESPONDERS:
        return CMS_NATS_ENOSTREAM;
    case NATS_CONNECTION_CLOSED:
    case NATS_DRAINING:
        return CMS_NATS_ECLOSED;
    default:
        return CMS_NATS_EIO;
    }
}

char *nats_dupstr(const char *s)
{
    return s == NULL ? NULL : strdup(s);
}

bool nats_wait_until(uv_cond_t *cond, uv_mutex_t *mu, uint64_t deadline_ns)
{
    uint64_t now = uv_hrtime();
    if (now >= deadline_ns)
        return false;
    (void)uv_cond_timedwait(cond, mu, deadline_ns - now);
    return true;
}

/* Loop: the only place the loop's view of the connection changes. */
static void set_state(cms_nats *n, n_state to)
{
    n->state = (n_state)cms_fsm_step(&n_fsm, n->state, to, n->name);
    cms_gauge_set(n->m_connected, n->state == N_CONNECTED ? 1.0 : 0.0);
}

void nats_set_qstate_locked(cms_nats *n, q_state to)
{
    n->qstate = (q_state)cms_fsm_step(&q_fsm, n->qstate, to, n->name);
}

void nats_report_locked(cms_nats *n, nc_state to)
{
    n->ncstate = (nc_state)cms_fsm_step(&nc_fsm, n->ncstate, to, n->name);
    n->conn_events++;
}

/* ---- the event queue (any thread -> loop) ---- */

bool nats_push_locked(cms_nats *n, ev *e)
{
    if (n->qstate == Q_SHUT)
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

bool nats_push_ev(cms_nats *n, ev *e)
{
    uv_mutex_lock(&n->mu);
    bool ok = nats_push_locked(n, e);
    uv_mutex_unlock(&n->mu);
    return ok;
}

bool nats_push_core_msg(cms_nats *n, ev *e)
{
    bool ok = false;
    uv_mutex_lock(&n->mu);
    if (n->core_queued < n->queue_cap && nats_push_locked(n, e)) {
        n->core_queued++;
        ok = true;
    }
    uv_mutex_unlock(&n->mu);
    return ok;
}

void nats_poke_locked(cms_nats *n)
{
    if (n->qstate != Q_SHUT)
        uv_async_send(&n->async);
}

uint64_t cms_nats_dropped(const cms_nats *n)
{
    return n ? cms_counter_get(n->m_dropped) : 0;
}

bool nats_closing(cms_nats *n)
{
    uv_mutex_lock(&n->mu);
    bool c = n->qstate != Q_OPEN;
    uv_mutex_unlock(&n->mu);
    return c;
}

jsCtx *nats_wait_ready(cms_nats *n, natsConnection **nc)
{
    jsCtx *js = NULL;
    uv_mutex_lock(&n->mu);
    while (n->qstate == Q_OPEN && n->js == NULL)
        uv_cond_wait(&n->cond, &n->mu);
    if (n->qstate == Q_OPEN) {
        js = n->js;
        if (nc != NULL)
            *nc = n->nc;
    }
    uv_mutex_unlock(&n->mu);
    return js;
}

/* ---- loop: draining the event queue ---- */

static void dispatch_msg(cms_nats *n, cms_nats_msg *m)
{
    cms_nats_sub *s = m->sub;
    m->sub = NULL; /* s may be freed after this */
    if (n->state >= N_CLOSING || (s != NULL && s->closing)) {
        nats_msg_dispose(m);
        return;
    }
    n->live_msgs++;
    if (s != NULL)
        s->cb(s->arg, m);
    else
        m->consumer->cb(m->consumer->arg, m);
}

/* True for the writer's last event. */
static bool dispatch(cms_nats *n, ev *e)
{
    switch (e->kind) {
    case EV_MSG:
        dispatch_msg(n, (cms_nats_msg *)e);
        break;
    case EV_PUB:
        nats_dispatch_pub(n, (pub *)e);
        break;
    case EV_PROBED: {
        probe_job *p = (probe_job *)e;
        void (*done)(void *, cms_nats_err, const bool *) = p->done;
        void *arg = p->arg;
        cms_nats_err r = p->result;
        bool *present = p->present;
        p->present = NULL;
        nats_probe_free(p);
        done(arg, r, r == CMS_NATS_OK ? present : NULL);
        free(present);
        break;
    }
    case EV_PROVISIONED: {
        prov *p = (prov *)e;
        void (*done)(void *, cms_nats_err) = p->done;
        void *arg = p->arg;
        cms_nats_err r = p->result;
        nats_prov_free(p);
        done(arg, r);
        break;
    }
    case EV_SUB_DONE:
        nats_sub_unref(n, (cms_nats_sub *)e);
        break;
    case EV_UNSUB_DONE:
        nats_sub_unref(n, (cms_nats_sub *)(void *)((char *)e - offsetof(cms_nats_sub, unsub_ev)));
        break;
    case EV_PULL_IDLE:
        nats_dispatch_pull_idle(
            (cms_nats_consumer *)(void *)((char *)e - offsetof(cms_nats_consumer, idle_ev)));
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
    nats_set_qstate_locked(n, Q_SHUT);
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
        nats_dispatch_pub(n, unanswered);
        unanswered = next;
    }
    set_state(n, N_CLOSED);
    uv_close((uv_handle_t *)&n->async, on_async_closed);
}

/* The connection as the callbacks last reported it, if it changed. */
static void follow_connection(cms_nats *n, nc_state reported)
{
    if (n->state >= N_CLOSING)
        return;
    n_state want = n->state;
    if (reported == NC_UP)
        want = N_CONNECTED;
    else if (n->state == N_CONNECTED)
        want = N_DISCONNECTED; /* down, or closed under us */
    if (want == n->state)
        return;
    if (want == N_CONNECTED)
        n->refused = false; /* a later refusal is said again */
    set_state(n, want);
    if (n->on_state != NULL)
        n->on_state(n->state_arg, want == N_CONNECTED);
}

/* Loop: the server refused the credentials; said once, however often
 * nats.c reports it. */
static void note_refused(cms_nats *n)
{
    if (n->refused)
        return;
    n->refused = true;
    char text[1024];
    cms_natsauth_refused_text(&n->auth, text, sizeof text);
    cms_log_error("nats: the server refused the credentials (authorization violation)",
                  "{s:s, s:s, s:s, s:s}", "url", n->url_shown, "user", n->auth.user, "creds_file",
                  n->auth.creds_file, "hint", text);
    if (n->on_auth_refused != NULL && n->state < N_CLOSING)
        n->on_auth_refused(n->state_arg);
}

/* Loop: one permissions violation, logged the first time its operation
 * and subject are seen (at most PERM_SEEN_MAX of them; it is counted in
 * cms_nats_permission_violations_total either way). */
static void note_violation(cms_nats *n, const char *text)
{
    const char *what = "?";
    char subject[PERM_TEXT_MAX - 16], key[PERM_TEXT_MAX]; /* key: "<what> <subject>" */
    if (!cms_natsauth_violation_parse(text, &what, subject, sizeof subject))
        snprintf(subject, sizeof subject, "%.*s", (int)sizeof subject - 1, text);
    snprintf(key, sizeof key, "%s %s", what, subject);
    for (size_t i = 0; i < n->nperm_seen; i++) {
        if (strcmp(n->perm_seen[i], key) == 0)
            return;
    }
    if (n->perm_seen == NULL || n->nperm_seen == PERM_SEEN_MAX) {
        if (!n->perm_seen_full)
            cms_log_warn("nats: more permissions violations; further subjects are only counted "
                         "(cms_nats_permission_violations_total)",
                         "{s:i}", "subjects_logged", (int)n->nperm_seen);
        n->perm_seen_full = true;
        return;
    }
    snprintf(n->perm_seen[n->nperm_seen++], PERM_TEXT_MAX, "%s", key);
    cms_log_warn("nats: the server's permissions deny this (permissions violation); logged once "
                 "per subject",
                 "{s:s, s:s, s:s, s:s, s:s}", "operation", what, "subject", subject, "user",
                 n->auth.user, "creds_file", n->auth.creds_file, "hint",
                 "allow it in the server's permissions for this user, or stop asking for it");
}

static void on_async(uv_async_t *h)
{
    cms_nats *n = h->data;
    char perm[PERM_PENDING_MAX][PERM_TEXT_MAX];
    uv_mutex_lock(&n->mu);
    bool refused = n->auth_refused;
    size_t nperm = n->nperm;
    memcpy(perm, n->perm_texts, nperm * sizeof perm[0]);
    n->nperm = 0;
    ev *batch = n->head;
    n->head = n->tail = NULL;
    n->core_queued = 0;
    uint64_t events = n->conn_events;
    nc_state reported = n->ncstate;
    uint64_t reconnects = n->reconnects, errors = n->async_errors;
    natsStatus last_err = n->last_async_error;
    uv_mutex_unlock(&n->mu);

    if (reconnects > n->reconnects_seen) {
        cms_counter_add(n->m_reconnects, reconnects - n->reconnects_seen);
        n->reconnects_seen = reconnects;
    }
    if (refused)
        note_refused(n);
    for (size_t i = 0; i < nperm; i++)
        note_violation(n, perm[i]);
    if (errors > n->errors_seen) {
        cms_log_warn("nats: asynchronous error", "{s:s, s:I}", "error",
                     natsStatus_GetText(last_err), "count", (json_int_t)(errors - n->errors_seen));
        n->errors_seen = errors;
    }
    if (events != n->conn_events_seen) {
        n->conn_events_seen = events;
        follow_connection(n, reported);
    }
    bool writer_done = false;
    while (batch != NULL) {
        ev *next = batch->next;
        if (dispatch(n, batch))
            writer_done = true;
        batch = next;
    }
    if (writer_done && n->state == N_CLOSING) {
        finish_close(n);
        return;
    }
    check_room(n);
}

/* ---- create / close / destroy ---- */

/* Frees what create made (the handle closed or never opened, the locks
 * initialised). */
static void hub_free(cms_nats *n)
{
    if (n == NULL)
        return;
    uv_cond_destroy(&n->wcond);
    uv_mutex_destroy(&n->wmu);
    uv_cond_destroy(&n->cond);
    uv_mutex_destroy(&n->mu);
    natsOptions_Destroy(n->opts);
    free(n->perm_seen);
    free(n->url);
    free(n->name);
    free(n);
}

static void on_create_failed_closed(uv_handle_t *h)
{
    hub_free(h->data);
}

static void make_metrics(cms_nats *n)
{
    cms_metrics *mx = cms_metrics_default();
    n->m_reconnects =
        cms_metrics_counter(mx, "cms_nats_reconnects_total", "NATS reconnections", NULL);
    n->m_dropped =
        cms_metrics_counter(mx, "cms_nats_messages_dropped_total",
                            "Core NATS messages dropped because the hand-off queue was full", NULL);
    n->m_published = cms_metrics_counter(mx, "cms_nats_published_total",
                                         "JetStream publishes acknowledged by the stream", NULL);
    n->m_pub_errors = cms_metrics_counter(mx, "cms_nats_publish_errors_total",
                                          "JetStream publishes that failed or timed out", NULL);
    n->m_perm = cms_metrics_counter(
        mx, "cms_nats_permission_violations_total",
        "Publishes and subscriptions the NATS server's permissions denied", NULL);
    n->m_connected =
        cms_metrics_gauge(mx, "cms_nats_connected", "Connected to NATS: 1, else 0", NULL);
    n->m_inflight = cms_metrics_gauge(mx, "cms_nats_publish_inflight",
                                      "JetStream publishes awaiting their ack", NULL);
    cms_gauge_set(n->m_connected, 0.0);
    cms_gauge_set(n->m_inflight, 0.0);
}

/* The locks, or nothing: libuv aborts on a failed init of a condition, so
 * only a mutex can fail here, and only the first. */
static bool init_locks(cms_nats *n)
{
    if (uv_mutex_init(&n->mu) != 0)
        return false;
    if (uv_cond_init(&n->cond) != 0 || uv_mutex_init(&n->wmu) != 0 ||
        uv_cond_init(&n->wcond) != 0) {
        uv_mutex_destroy(&n->mu);
        return false;
    }
    return true;
}

int cms_nats_create(uv_loop_t *loop, const cms_nats_options *o, cms_nats **out)
{
    int rc = CMS_NATS_OK;
    cms_nats *n = NULL;
    bool locks = false;
    if (loop == NULL || o == NULL || out == NULL || o->url == NULL || *o->url == '\0' ||
        o->max_publish_inflight < 0 || o->publish_timeout_ms < 0) {
        rc = CMS_NATS_EINVAL;
        goto out;
    }
    n = calloc(1, sizeof *n); /* N_CONNECTING, Q_OPEN, NC_NONE, W_RUNNING */
    if (n == NULL) {
        rc = CMS_NATS_ENOMEM;
        goto out;
    }
    n->loop = loop;
    n->url = nats_dupstr(o->url);
    (void)cms_config_redact(o->url, n->url_shown, sizeof n->url_shown);
    n->name = nats_dupstr(o->name != NULL ? o->name : "cms");
    n->queue_cap = o->queue_cap > 0 ? o->queue_cap : DEFAULT_QUEUE_CAP;
    n->send_asap = o->send_asap;
    n->max_inflight = o->max_publish_inflight > 0 ? o->max_publish_inflight : DEFAULT_INFLIGHT;
    n->pub_timeout_ms = o->publish_timeout_ms > 0 ? o->publish_timeout_ms : DEFAULT_PUB_TIMEOUT_MS;
    n->on_state = o->on_state;
    n->on_auth_refused = o->on_auth_refused;
    n->state_arg = o->state_arg;
    n->on_room = o->on_publish_room;
    n->room_arg = o->room_arg;
    atomic_init(&n->max_payload, 0);
    if (n->url == NULL || n->name == NULL) {
        rc = CMS_NATS_ENOMEM;
        goto out;
    }
    if (!(locks = init_locks(n))) {
        rc = CMS_NATS_ENOMEM;
        goto out;
    }
    n->perm_seen = calloc(PERM_SEEN_MAX, sizeof *n->perm_seen); /* NULL: none logged */
    char why[1024];
    cms_natsauth_err aerr = nats_set_options(n, &o->security, why, sizeof why);
    if (aerr != CMS_NATSAUTH_OK) {
        cms_log_error("nats: bad options", "{s:s, s:s, s:s}", "url", n->url_shown, "error",
                      cms_natsauth_strerror(aerr), "detail", why);
        rc = aerr == CMS_NATSAUTH_ENOMEM ? CMS_NATS_ENOMEM : CMS_NATS_EINVAL;
        goto out;
    }
    if (sodium_init() < 0) { /* cms_nats_inbox's random bits */
        rc = CMS_NATS_ENOMEM;
        goto out;
    }
    cms_log_info("nats: connecting", "{s:s, s:s, s:s, s:s, s:b}", "url", n->url_shown, "user",
                 n->auth.user, "creds_file", n->auth.creds_file, "inbox_prefix",
                 n->auth.inbox_prefix, "tls", n->auth.tls);
    if (uv_async_init(loop, &n->async, on_async) != 0) {
        rc = CMS_NATS_ENOMEM;
        goto out;
    }
    n->async.data = n;
    make_metrics(n);
    if (uv_thread_create(&n->writer, nats_writer_main, n) != 0) {
        /* the handle is open: n is freed once it is closed */
        uv_close((uv_handle_t *)&n->async, on_create_failed_closed);
        n = NULL;
        rc = CMS_NATS_ENOMEM;
        goto out;
    }
    *out = n;
    n = NULL;
out:
    if (n != NULL && locks) {
        hub_free(n);
    } else if (n != NULL) {
        free(n->url);
        free(n->name);
        free(n);
    }
    return rc;
}

uint64_t cms_nats_reconnects(const cms_nats *n)
{
    return n ? n->reconnects_seen : 0;
}

bool cms_nats_is_connected(const cms_nats *n)
{
    return n != NULL && n->state == N_CONNECTED;
}

bool cms_nats_auth_refused(const cms_nats *n)
{
    return n != NULL && n->refused;
}

cms_nats_err cms_nats_inbox(const cms_nats *n, char *out, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    uint8_t r[16];
    if (n == NULL || out == NULL)
        return CMS_NATS_EINVAL;
    size_t plen = strlen(n->auth.inbox_prefix);
    if (len < plen + 1 + 2 * sizeof r + 1)
        return CMS_NATS_EINVAL;
    randombytes_buf(r, sizeof r);
    memcpy(out, n->auth.inbox_prefix, plen);
    char *p = out + plen;
    *p++ = '.';
    for (size_t i = 0; i < sizeof r; i++) {
        *p++ = hex[r[i] >> 4];
        *p++ = hex[r[i] & 15];
    }
    *p = '\0';
    return CMS_NATS_OK;
}

size_t cms_nats_max_payload(const cms_nats *n)
{
    int64_t v = n ? atomic_load(&((cms_nats *)n)->max_payload) : 0;
    return v > 0 ? (size_t)v : DEFAULT_MAX_PAYLOAD;
}

void cms_nats_close(cms_nats *n, void (*closed)(void *arg), void *arg)
{
    if (n == NULL || n->state >= N_CLOSING)
        return;
    n->closed = closed;
    n->closed_arg = arg;
    set_state(n, N_CLOSING);
    uv_mutex_lock(&n->mu);
    nats_set_qstate_locked(n, Q_CLOSING);
    uv_cond_broadcast(&n->cond);
    uv_mutex_unlock(&n->mu);
    for (cms_nats_consumer *c = n->consumers; c != NULL; c = c->next) {
        uv_mutex_lock(&c->mu);
        c->stop = true;
        uv_cond_broadcast(&c->cond);
        uv_mutex_unlock(&c->mu);
    }
    nats_writer_request_close(n);
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
        nats_consumer_free(c);
    }
    hub_free(n);
}
