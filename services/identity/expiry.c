/* The expiry timer of cms-identity; see expiry.h.
 *
 * States: IDLE (timer set for next_us, or for the longest wait when none is
 * known), READING (the next expiry is being read), EXPIRING (a round is
 * being written), CLOSING. A note that arrives while reading or expiring is
 * kept in pending_us and honoured when the state returns to IDLE. */
#include "expiry.h"

#include "events.h"
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
/* $1 credential, $2..$4 the event */
static const char SQL_EXPIRE[] =
    "WITH u AS (UPDATE credentials SET expired_at = now() WHERE id = $1 AND revoked_at IS NULL "
    "AND expired_at IS NULL AND expires_at <= now() RETURNING id), "
    "o AS (" IDSQL_OUTBOX_FROM("u", "$2", "$3", "$4") ") SELECT count(*) FROM u";
// clang-format on

typedef enum { X_IDLE, X_READING, X_EXPIRING, X_CLOSING, X_CLOSED } x_state;

struct idexp {
    uv_loop_t *loop;
    cms_pg *pg;
    cms_outbox *outbox;
    cms_auth *auth;
    x_state state;
    uv_timer_t timer;
    int64_t next_us;    /* what the timer is set for; 0: nothing known */
    int64_t pending_us; /* a note that came while busy; 0: none */
    bool busy;          /* a job is out */
    bool nothing_due;   /* the last round found nothing due yet */
    void (*closed)(void *arg);
    void *closed_arg;
    /* the round being written: whom to tell once it commits */
    int nround;
    char round_ids[ROUND_MAX][2][37];
    cms_counter *m_expired;
};

static void set_state(idexp *x, x_state s)
{
    static const char *const names[] = {"idle", "reading", "expiring", "closing", "closed"};
    if (x->state != s)
        cms_log_debug("expiry timer", "{s:s, s:s}", "from", names[x->state], "to", names[s]);
    x->state = s;
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
        int64_t d = at_us - cms_event_now_us();
        /* round up, so the timer never fires just before the instant */
        wait_ms = d <= 0 ? 0 : (d + 999) / 1000 + 1;
        if (wait_ms > LONGEST_WAIT_MS)
            wait_ms = LONGEST_WAIT_MS;
    }
    x->next_us = at_us;
    uv_timer_start(&x->timer, fired, (uint64_t)wait_ms, 0);
}

static void maybe_closed(idexp *x)
{
    if (x->state == X_CLOSING && !x->busy) {
        set_state(x, X_CLOSED);
        uv_close((uv_handle_t *)&x->timer, NULL);
        if (x->closed)
            x->closed(x->closed_arg);
    }
}

/* back to IDLE with the timer at at_us, or earlier for a note kept meanwhile */
static void idle_at(idexp *x, int64_t at_us)
{
    x->busy = false;
    if (x->state == X_CLOSING) {
        maybe_closed(x);
        return;
    }
    set_state(x, X_IDLE);
    if (x->pending_us && (at_us == 0 || x->pending_us < at_us))
        at_us = x->pending_us;
    x->pending_us = 0;
    arm(x, at_us);
}

static void retry_later(idexp *x)
{
    x->busy = false;
    if (x->state == X_CLOSING) {
        maybe_closed(x);
        return;
    }
    set_state(x, X_IDLE);
    x->next_us = cms_event_now_us() + RETRY_MS * 1000;
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
    if (x->nothing_due && at <= cms_event_now_us())
        at = cms_event_now_us() + RETRY_MS * 1000;
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
    set_state(x, X_READING);
    x->busy = true;
    if (cms_pg_submit(x->pg, &job, next_read, x) != CMS_PG_OK)
        retry_later(x);
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
    x->busy = false;
    if (x->state == X_CLOSING) {
        maybe_closed(x);
        return;
    }
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
        cms_event ev = {0}, lapse = {0};
        int rc = -1;
        if (idev_credential_expired(cid, iid, exp, &ev) != 0 ||
            idev_status_changed(iid, "active", "inactive", "attestation expired", IDEV_SYSTEM_ACTOR,
                                NULL, &lapse) != 0)
            goto next;
        const char *v1[] = {cid, ev.id, ev.subject, (const char *)ev.buf};
        const char *v2[] = {iid, lapse.id, lapse.subject, (const char *)lapse.buf};
        int l1[] = {0, 0, 0, (int)ev.len}, l2[] = {0, 0, 0, (int)lapse.len};
        int f[] = {0, 0, 0, 1};
        if (cms_pg_job_sql(job, SQL_EXPIRE, 4, v1, l1, f) != CMS_PG_OK)
            goto next;
        if (strcmp(PQgetvalue(due, i, 2), "attestation") == 0)
            rc = cms_pg_job_sql(job, IDSQL_ENCLAVE_LAPSE, 4, v2, l2, f);
        else
            rc = cms_pg_job_sql(job, "SELECT 0", 0, NULL, NULL, NULL);
    next:
        cms_event_release(&ev);
        cms_event_release(&lapse);
        if (rc != CMS_PG_OK)
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
        x->busy = false;
        x->nothing_due = true;
        if (x->state == X_CLOSING) {
            maybe_closed(x);
            return;
        }
        read_next(x);
        return;
    }
    cms_pg_job *job = cms_pg_job_new();
    if (job == NULL || add_round(x, job, due) != 0) {
        cms_pg_job_free(job);
        retry_later(x);
        return;
    }
    if (cms_pg_submit(x->pg, &job, round_written, x) != CMS_PG_OK)
        retry_later(x);
}

static void expire_due(idexp *x)
{
    cms_pg_job *job = cms_pg_job_new();
    if (job == NULL || cms_pg_job_sql(job, SQL_DUE, 0, NULL, NULL, NULL) != CMS_PG_OK) {
        cms_pg_job_free(job);
        retry_later(x);
        return;
    }
    set_state(x, X_EXPIRING);
    x->busy = true;
    if (cms_pg_submit(x->pg, &job, due_read, x) != CMS_PG_OK)
        retry_later(x);
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
    x->m_expired = cms_metrics_counter(cms_metrics_default(), "cms_identity_expired_total",
                                       "credentials announced expired", NULL);
    *out = x;
    return 0;
}

void idexp_start(idexp *x)
{
    if (x->state == X_IDLE && !x->busy)
        read_next(x);
}

void idexp_note(idexp *x, int64_t expires_at_us)
{
    if (x == NULL || x->state >= X_CLOSING)
        return;
    if (x->state != X_IDLE || x->busy) {
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
    set_state(x, X_CLOSING);
    maybe_closed(x);
}

void idexp_destroy(idexp *x)
{
    free(x);
}
