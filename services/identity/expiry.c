/* The expiry timer of cms-identity; see expiry.h.
 *
 * One job at a time: the state says which (X_STATES below). A note that
 * arrives while a job is out is kept in pending_us and honoured when the
 * state returns to X_IDLE. */
#include "expiry.h"

#include "fsm.h"
#include "identity/events.h"
#include "identity/store.h"
#include "log.h"
#include "metrics.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ROUND_MAX 256
#define LONGEST_WAIT_MS (3600 * 1000)
#define RETRY_MS 1000

/* SQL reads best as written */
// clang-format off
static const char SQL_NEXT[] = "SELECT " IDSQL_US("min(expires_at)") " FROM credentials "
                               "WHERE revoked_at IS NULL AND expired_at IS NULL";
static const char SQL_DUE[] =
    "SELECT id::text, identity_id::text, type::text, " IDSQL_US("expires_at") " FROM credentials "
    "WHERE revoked_at IS NULL AND expired_at IS NULL AND expires_at <= now() "
    "ORDER BY expires_at LIMIT 256";
/* $5 the credential */
static const char SQL_EXPIRE[] =
    "WITH u AS (UPDATE credentials SET expired_at = now() WHERE id = $5::uuid "
    "AND revoked_at IS NULL AND expired_at IS NULL AND expires_at <= now() RETURNING id), "
    "o AS (" CMS_OUTBOX_SQL_FROM("u") ") SELECT count(*) FROM u";
// clang-format on

/*   X_IDLE      the timer is set for next_us, or for the longest wait when
 *               none is known
 *   X_READING   the next expiry is being read
 *   X_DUE       the credentials now due are being read
 *   X_EXPIRING  a round of expiries is being written
 *   X_CLOSING   closed while a job was out: closed when it comes back
 *   X_CLOSED    final */
#define X_STATES(X)                                                                                \
    X(X_IDLE, "idle")                                                                              \
    X(X_READING, "reading")                                                                        \
    X(X_DUE, "due")                                                                                \
    X(X_EXPIRING, "expiring")                                                                      \
    X(X_CLOSING, "closing")                                                                        \
    X(X_CLOSED, "closed")
typedef enum { X_STATES(CMS_ENUM_ITEM) X_NSTATES } x_state;
static const char *const x_names[] = {X_STATES(CMS_ENUM_TEXT)};
static const bool x_moves[X_NSTATES][X_NSTATES] = {
    [X_IDLE] = {[X_READING] = true, [X_DUE] = true, [X_CLOSED] = true},
    [X_READING] = {[X_IDLE] = true, [X_CLOSING] = true},
    [X_DUE] = {[X_IDLE] = true, [X_READING] = true, [X_EXPIRING] = true, [X_CLOSING] = true},
    [X_EXPIRING] = {[X_IDLE] = true, [X_READING] = true, [X_DUE] = true, [X_CLOSING] = true},
    [X_CLOSING] = {[X_CLOSED] = true},
};
static const cms_fsm x_fsm = CMS_FSM_INIT("expiry timer", CMS_LOG_DEBUG, x_names, x_moves);

struct idexp {
    uv_loop_t *loop;
    cms_pg *pg;
    cms_outbox *outbox;
    cms_auth *auth;
    x_state state;
    uv_timer_t timer;
    int64_t next_us;    /* what the timer is set for; 0: nothing known */
    int64_t pending_us; /* a note that came while a job was out; 0: none */
    bool nothing_due;   /* the last round found nothing due yet */
    void (*closed)(void *arg);
    void *closed_arg;
    /* the round being written: whom to tell once it commits */
    int nround;
    char round_ids[ROUND_MAX][2][37];
    cms_counter *m_expired;
};

static void set_state(idexp *x, x_state to)
{
    x->state = (x_state)cms_fsm_step(&x_fsm, x->state, to, NULL);
}

static void read_next(idexp *x);
static void expire_due(idexp *x);

static void fired(uv_timer_t *t)
{
    idexp *x = t->data;
    if (x->state != X_IDLE)
        return;
    if (x->next_us == 0) {
        read_next(x); /* nothing was known: look again (another replica may have issued) */
        return;
    }
    expire_due(x);
}

static void arm(idexp *x, int64_t at_us)
{
    int64_t wait_ms = LONGEST_WAIT_MS;
    if (at_us > 0) {
        int64_t d = at_us - cms_bus_now_us();
        /* round up, so the timer never fires just before the instant */
        wait_ms = d <= 0 ? 0 : (d + 999) / 1000 + 1;
        if (wait_ms > LONGEST_WAIT_MS)
            wait_ms = LONGEST_WAIT_MS;
    }
    x->next_us = at_us;
    uv_timer_start(&x->timer, fired, (uint64_t)wait_ms, 0);
}

static void timer_closed(uv_handle_t *h)
{
    idexp *x = h->data;
    if (x->closed)
        x->closed(x->closed_arg);
}

/* A job came back: true if it was the last thing a close waited for. */
static bool closed_now(idexp *x)
{
    if (x->state != X_CLOSING)
        return false;
    set_state(x, X_CLOSED);
    uv_close((uv_handle_t *)&x->timer, timer_closed);
    return true;
}

/* back to IDLE with the timer at at_us, or earlier for a note kept meanwhile */
static void idle_at(idexp *x, int64_t at_us)
{
    if (closed_now(x))
        return;
    set_state(x, X_IDLE);
    if (x->pending_us && (at_us == 0 || x->pending_us < at_us))
        at_us = x->pending_us;
    x->pending_us = 0;
    arm(x, at_us);
}

static void retry_later(idexp *x)
{
    if (closed_now(x))
        return;
    set_state(x, X_IDLE);
    x->next_us = cms_bus_now_us() + RETRY_MS * 1000;
    uv_timer_start(&x->timer, fired, RETRY_MS, 0);
}

static void next_read(void *arg, cms_pg_err err, const cms_pg_result *res)
{
    idexp *x = arg;
    if (err != CMS_PG_OK) {
        cms_log_warn("next expiry not read; retrying", "{s:s}", "error", cms_pg_strerror(err));
        retry_later(x);
        return;
    }
    const PGresult *r = cms_pg_result_get(res, 0);
    int64_t at = 0;
    if (r && PQntuples(r) == 1 && !PQgetisnull(r, 0, 0))
        at = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    if (at < 0)
        at = 1; /* before 1970: due now */
    /* due by our clock, yet the database said not yet: its clock is behind
     * ours; look again a little later rather than at once */
    if (x->nothing_due && at <= cms_bus_now_us())
        at = cms_bus_now_us() + RETRY_MS * 1000;
    x->nothing_due = false;
    idle_at(x, at);
}

static void read_next(idexp *x)
{
    cms_pg_job *job = cms_pg_job_new();
    if (job == NULL || cms_pg_job_sql(job, SQL_NEXT, 0, NULL, NULL, NULL) != CMS_PG_OK) {
        cms_pg_job_free(job);
        retry_later(x);
        return;
    }
    if (cms_pg_submit(x->pg, &job, next_read, x) != CMS_PG_OK) {
        retry_later(x);
        return;
    }
    set_state(x, X_READING);
}

static void round_written(void *arg, cms_pg_err err, const cms_pg_result *res)
{
    idexp *x = arg;
    if (err != CMS_PG_OK) {
        cms_log_warn("expiries not written; retrying", "{s:s, s:s}", "error", cms_pg_strerror(err),
                     "detail", res ? cms_pg_result_message(res) : "");
        retry_later(x);
        return;
    }
    int expired = 0;
    for (int i = 0; i < x->nround; i++) {
        const PGresult *r = cms_pg_result_get(res, (size_t)i * 2);
        if (r && PQntuples(r) == 1 && strcmp(PQgetvalue(r, 0, 0), "1") == 0) {
            expired++;
            cms_auth_invalidate(x->auth, x->round_ids[i][0]);
        }
        r = cms_pg_result_get(res, (size_t)i * 2 + 1);
        if (r && PQntuples(r) == 1 && strcmp(PQgetvalue(r, 0, 0), "1") == 0)
            cms_auth_invalidate(x->auth, x->round_ids[i][1]);
    }
    if (expired) {
        cms_counter_add(x->m_expired, (uint64_t)expired);
        cms_outbox_kick(x->outbox);
        cms_log_info("credentials expired", "{s:i}", "count", expired);
    }
    bool full = x->nround == ROUND_MAX;
    if (closed_now(x))
        return;
    if (full)
        expire_due(x); /* more may be due */
    else
        read_next(x);
}

/* Two statements per due credential: its expiry with the event, and the
 * lapse of its enclave (a no-op for anything else). */
static int add_round(idexp *x, cms_pg_job *job, const PGresult *due)
{
    x->nround = 0;
    for (int i = 0; i < PQntuples(due) && i < ROUND_MAX; i++) {
        const char *cid = PQgetvalue(due, i, 0), *iid = PQgetvalue(due, i, 1);
        int64_t exp = strtoll(PQgetvalue(due, i, 3), NULL, 10);
        cms_bus_event ev = {0}, lapse = {0};
        const char *v1[] = {cid}, *v2[] = {iid};
        bool ok = idev_credential_expired(cid, iid, exp, &ev) == CMS_BUS_OK &&
                  idev_status_changed(iid, "active", "inactive", "attestation expired",
                                      CMS_BUS_SYSTEM_ACTOR, NULL, &lapse) == CMS_BUS_OK &&
                  cms_outbox_add_sql(job, SQL_EXPIRE, IDEV_SOURCE, &ev, 1, v1) == CMS_OUTBOX_OK;
        if (ok && strcmp(PQgetvalue(due, i, 2), "attestation") == 0)
            ok = cms_outbox_add_sql(job, IDSQL_ENCLAVE_LAPSE, IDEV_SOURCE, &lapse, 1, v2) ==
                 CMS_OUTBOX_OK;
        else if (ok)
            ok = cms_pg_job_sql(job, "SELECT 0", 0, NULL, NULL, NULL) == CMS_PG_OK;
        cms_bus_event_release(&ev);
        cms_bus_event_release(&lapse);
        if (!ok)
            return -1;
        snprintf(x->round_ids[i][0], 37, "%s", cid);
        snprintf(x->round_ids[i][1], 37, "%s", iid);
        x->nround++;
    }
    return 0;
}

static void due_read(void *arg, cms_pg_err err, const cms_pg_result *res)
{
    idexp *x = arg;
    if (err != CMS_PG_OK) {
        cms_log_warn("due credentials not read; retrying", "{s:s}", "error", cms_pg_strerror(err));
        retry_later(x);
        return;
    }
    const PGresult *due = cms_pg_result_get(res, 0);
    if (due == NULL || PQntuples(due) == 0) {
        x->nothing_due = true;
        if (closed_now(x))
            return;
        read_next(x);
        return;
    }
    if (x->state == X_CLOSING) {
        (void)closed_now(x); /* nothing of the round was written: the next start does it */
        return;
    }
    cms_pg_job *job = cms_pg_job_new();
    if (job == NULL || add_round(x, job, due) != 0) {
        cms_pg_job_free(job);
        retry_later(x);
        return;
    }
    if (cms_pg_submit(x->pg, &job, round_written, x) != CMS_PG_OK) {
        retry_later(x);
        return;
    }
    set_state(x, X_EXPIRING);
}

static void expire_due(idexp *x)
{
    cms_pg_job *job = cms_pg_job_new();
    if (job == NULL || cms_pg_job_sql(job, SQL_DUE, 0, NULL, NULL, NULL) != CMS_PG_OK) {
        cms_pg_job_free(job);
        retry_later(x);
        return;
    }
    if (cms_pg_submit(x->pg, &job, due_read, x) != CMS_PG_OK) {
        retry_later(x);
        return;
    }
    set_state(x, X_DUE);
}

int idexp_create(uv_loop_t *loop, cms_pg *pg, cms_outbox *outbox, cms_auth *auth, idexp **out)
{
    idexp *x = calloc(1, sizeof *x);
    if (x == NULL)
        return -1;
    x->loop = loop;
    x->pg = pg;
    x->outbox = outbox;
    x->auth = auth;
    uv_timer_init(loop, &x->timer);
    x->timer.data = x;
    x->m_expired =
        cms_metrics_counter(cms_metrics_default(), "cms_identity_credentials_expired_total",
                            "Credentials announced expired", NULL);
    *out = x;
    return 0;
}

void idexp_start(idexp *x)
{
    if (x->state == X_IDLE)
        read_next(x);
}

void idexp_note(idexp *x, int64_t expires_at_us)
{
    if (x == NULL || x->state >= X_CLOSING)
        return;
    if (x->state != X_IDLE) {
        if (x->pending_us == 0 || expires_at_us < x->pending_us)
            x->pending_us = expires_at_us;
        return;
    }
    if (x->next_us == 0 || expires_at_us < x->next_us)
        arm(x, expires_at_us);
}

void idexp_close(idexp *x, void (*closed)(void *arg), void *arg)
{
    if (x == NULL || x->state >= X_CLOSING)
        return;
    x->closed = closed;
    x->closed_arg = arg;
    uv_timer_stop(&x->timer);
    if (x->state == X_IDLE) {
        set_state(x, X_CLOSED);
        uv_close((uv_handle_t *)&x->timer, timer_closed);
    } else {
        set_state(x, X_CLOSING); /* the job out comes back, then it closes */
    }
}

void idexp_destroy(idexp *x)
{
    free(x);
}
