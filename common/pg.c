/* Non-blocking PostgreSQL pool; see pg.h for the contract.
 *
 * Invariants:
 * - A connection's in-flight jobs are answered in the order they were sent;
 *   the head of c->inflight is the job whose results arrive next.
 * - Every job ends in exactly one call of finish_job() (completed, failed,
 *   expired or refused at close), which calls the user's callback once.
 * - Connections are never freed before the pool; a poll handle is freed in
 *   its own close callback, so it may outlive the PGconn it watched. */
#include "pg.h"

#include "backoff.h"
#include "fsm.h"
#include "log.h"
#include "metrics.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_POOL_SIZE 2
#define DEFAULT_MAX_PIPELINE 4
#define DEFAULT_QUEUE_CAP 4096
#define DEFAULT_QUEUE_TIMEOUT_MS 5000
#define DEFAULT_STATEMENT_TIMEOUT_MS 30000
#define DEFAULT_BACKOFF_MIN_MS 100
#define DEFAULT_BACKOFF_MAX_MS 5000

const char *cms_pg_strerror(cms_pg_err err)
{
    switch (err) {
#define CMS_PG_TEXT(name, text)                                                                    \
    case name:                                                                                     \
        return text;
        CMS_PG_ERRORS(CMS_PG_TEXT)
#undef CMS_PG_TEXT
    }
    return "unknown error";
}

struct cms_pg_stmt {
    char *name;
    char *sql;
    int nparams;
    Oid *types;
    size_t index;
};

/* One statement of a job with its own copy of the parameters. */
typedef struct call {
    const cms_pg_stmt *stmt; /* NULL: sql holds the text */
    char *sql;
    int nparams;
    const char **values;
    int *lengths;
    int *formats;
    void *mem; /* one allocation behind values/lengths/formats and the bytes */
} call;

struct cms_pg_job {
    call *calls;
    size_t ncalls, cap;
    size_t nlead; /* the first nlead calls are the job's lead statements */
    bool binary;
    bool idempotent;
    bool internal; /* the connection's own setup: no callback, not counted */
    cms_pg_done_cb done;
    void *arg;
    uint64_t deadline_ms;
    uint64_t started_ns;
    /* per-send state, reset when a job is sent again */
    size_t *prep; /* statement indices prepared in front of this job */
    size_t nprep;
    PGresult **results; /* nprep + ncalls */
    size_t nres, cur;
    bool open; /* a result of results[cur] arrived, its NULL has not */
    struct cms_pg_job *next;
};

struct cms_pg_result {
    cms_pg_job *job;
    int failed;      /* index of the failing statement (after the lead ones), -1 if none */
    int lead_failed; /* index of the failing lead statement, -1 if none */
};

typedef struct {
    cms_pg_job *head, *tail;
    size_t len;
} job_fifo;

/*   CONN_BACKOFF     no connection; the timer starts the next attempt
 *   CONN_CONNECTING  PQconnectPoll steps
 *   CONN_SETUP       connected; the session setup (statement_timeout) is in flight
 *   CONN_READY       takes jobs
 *   CONN_CLOSED      the pool closed it; final */
#define CONN_STATES(X)                                                                             \
    X(CONN_BACKOFF, "backoff")                                                                     \
    X(CONN_CONNECTING, "connecting")                                                               \
    X(CONN_SETUP, "setup")                                                                         \
    X(CONN_READY, "ready")                                                                         \
    X(CONN_CLOSED, "closed")
typedef enum { CONN_STATES(CMS_ENUM_ITEM) CONN_NSTATES } conn_state;
static const char *const conn_names[] = {CONN_STATES(CMS_ENUM_TEXT)};
static const bool conn_moves[CONN_NSTATES][CONN_NSTATES] = {
    [CONN_BACKOFF] = {[CONN_CONNECTING] = true, [CONN_CLOSED] = true},
    [CONN_CONNECTING] = {[CONN_SETUP] = true, [CONN_BACKOFF] = true, [CONN_CLOSED] = true},
    [CONN_SETUP] = {[CONN_READY] = true, [CONN_BACKOFF] = true, [CONN_CLOSED] = true},
    [CONN_READY] = {[CONN_BACKOFF] = true, [CONN_CLOSED] = true},
};
static const cms_fsm conn_fsm =
    CMS_FSM_INIT("pg connection", CMS_LOG_DEBUG, conn_names, conn_moves);

typedef enum { PREP_NONE, PREP_SENT, PREP_DONE } prep_state;

typedef struct conn conn;

typedef struct conn_poll {
    uv_poll_t h;
    conn *c; /* NULL once detached */
} conn_poll;

struct conn {
    cms_pg *pg;
    int id;
    conn_state state;
    PGconn *pq;
    conn_poll *poll;
    int sock;
    bool flushing; /* PQflush returned 1: wait for writability */
    uv_timer_t timer;
    cms_backoff backoff; /* reconnects */
    unsigned char *prep; /* prep_state per registered statement */
    size_t prep_cap;
    job_fifo inflight;
};

#define POOL_STATES(X)                                                                             \
    X(POOL_RUNNING, "running") X(POOL_CLOSING, "closing") X(POOL_CLOSED, "closed")
typedef enum { POOL_STATES(CMS_ENUM_ITEM) POOL_NSTATES } pool_state;
static const char *const pool_names[] = {POOL_STATES(CMS_ENUM_TEXT)};
static const bool pool_moves[POOL_NSTATES][POOL_NSTATES] = {
    [POOL_RUNNING] = {[POOL_CLOSING] = true},
    [POOL_CLOSING] = {[POOL_CLOSED] = true},
};
static const cms_fsm pool_fsm = CMS_FSM_INIT("pg pool", CMS_LOG_INFO, pool_names, pool_moves);

struct cms_pg {
    uv_loop_t *loop;
    char *conninfo;
    char *appname;
    cms_pg_options o;
    pool_state state;
    conn *conns;
    int nconns;
    int nready;
    cms_pg_stmt **stmts;
    size_t nstmts;
    job_fifo queue;
    uv_idle_t kick;
    uv_timer_t qtimer;
    int open_handles;
    void (*closed)(void *arg);
    void *closed_arg;
    cms_counter *m_reconnects;
    cms_counter *m_jobs_failed;
    cms_gauge *m_ready;
    cms_gauge *m_queue;
    cms_histogram *m_latency;
};

static void conn_start(conn *c);
static void conn_fail(conn *c, const char *why);
static void poll_cb(uv_poll_t *h, int status, int events);
static void maybe_finish_close(cms_pg *pg);
static void dispatch(uv_idle_t *h);
static void queue_expire(uv_timer_t *t);

/* ---- small helpers ---- */

static void fifo_push(job_fifo *f, cms_pg_job *j)
{
    j->next = NULL;
    if (f->tail)
        f->tail->next = j;
    else
        f->head = j;
    f->tail = j;
    f->len++;
}

static cms_pg_job *fifo_pop(job_fifo *f)
{
    cms_pg_job *j = f->head;
    if (j == NULL)
        return NULL;
    f->head = j->next;
    if (f->head == NULL)
        f->tail = NULL;
    f->len--;
    j->next = NULL;
    return j;
}

/* Puts the whole of src in front of dst, keeping src's order. */
static void fifo_prepend(job_fifo *dst, job_fifo *src)
{
    if (src->head == NULL)
        return;
    src->tail->next = dst->head;
    if (dst->tail == NULL)
        dst->tail = src->tail;
    dst->head = src->head;
    dst->len += src->len;
    *src = (job_fifo){0};
}

static void update_gauges(cms_pg *pg)
{
    if (pg->m_queue)
        cms_gauge_set(pg->m_queue, (double)pg->queue.len);
    if (pg->m_ready)
        cms_gauge_set(pg->m_ready, pg->nready);
}

/* The one place a connection changes state. */
static void conn_set_state(conn *c, conn_state to)
{
    conn_state from = c->state;
    char id[16];
    snprintf(id, sizeof id, "%d", c->id);
    c->state = (conn_state)cms_fsm_step(&conn_fsm, from, to, id);
    int delta = (c->state == CONN_READY) - (from == CONN_READY);
    if (delta != 0) {
        c->pg->nready += delta;
        update_gauges(c->pg);
        if (c->pg->o.on_state)
            c->pg->o.on_state(c->pg->o.state_arg, c->pg->nready);
    }
}

static void pool_set_state(cms_pg *pg, pool_state to)
{
    pg->state = (pool_state)cms_fsm_step(&pool_fsm, pg->state, to, pg->appname);
}

static void kick(cms_pg *pg)
{
    if (pg->state != POOL_CLOSED && !uv_is_active((uv_handle_t *)&pg->kick))
        uv_idle_start(&pg->kick, dispatch);
}

/* ---- jobs ---- */

cms_pg_job *cms_pg_job_new(void)
{
    return calloc(1, sizeof(cms_pg_job));
}

static void call_clear(call *k)
{
    free(k->sql);
    free(k->mem);
}

static void job_reset_send(cms_pg_job *j)
{
    for (size_t i = 0; i < j->nres; i++)
        PQclear(j->results[i]);
    free(j->results);
    free(j->prep);
    j->results = NULL;
    j->prep = NULL;
    j->nres = j->nprep = j->cur = 0;
    j->open = false;
}

void cms_pg_job_free(cms_pg_job *j)
{
    if (j == NULL)
        return;
    job_reset_send(j);
    for (size_t i = 0; i < j->ncalls; i++)
        call_clear(&j->calls[i]);
    free(j->calls);
    free(j);
}

void cms_pg_job_binary_results(cms_pg_job *job)
{
    job->binary = true;
}

void cms_pg_job_idempotent(cms_pg_job *job)
{
    job->idempotent = true;
}

/* Copies the parameters of one statement into a single allocation. */
static int job_add(cms_pg_job *j, const cms_pg_stmt *stmt, const char *sql, int nparams,
                   const char *const *values, const int *lengths, const int *formats)
{
    if (j == NULL || nparams < 0 || (nparams > 0 && values == NULL) || nparams > 65535)
        return CMS_PG_EINVAL;
    size_t bytes = 0;
    for (int i = 0; i < nparams; i++) {
        bool bin = formats && formats[i];
        if (bin && (lengths == NULL || lengths[i] < 0))
            return CMS_PG_EINVAL;
        if (values[i])
            bytes += (bin ? (size_t)lengths[i] : strlen(values[i])) + 1;
    }
    if (j->ncalls == j->cap) {
        size_t cap = j->cap ? j->cap * 2 : 4;
        call *n = realloc(j->calls, cap * sizeof *n);
        if (n == NULL)
            return CMS_PG_ENOMEM;
        j->calls = n;
        j->cap = cap;
    }
    call k = {.stmt = stmt, .nparams = nparams};
    size_t hdr = (size_t)nparams * (sizeof(char *) + 2 * sizeof(int));
    k.mem = malloc(hdr + bytes + 1);
    if (sql)
        k.sql = strdup(sql);
    if (k.mem == NULL || (sql && k.sql == NULL)) {
        call_clear(&k);
        return CMS_PG_ENOMEM;
    }
    k.values = (const char **)k.mem;
    k.lengths = (int *)(k.values + nparams);
    k.formats = k.lengths + nparams;
    char *p = (char *)(k.formats + nparams);
    for (int i = 0; i < nparams; i++) {
        bool bin = formats && formats[i];
        k.formats[i] = bin;
        if (values[i] == NULL) {
            k.values[i] = NULL;
            k.lengths[i] = 0;
            continue;
        }
        size_t n = bin ? (size_t)lengths[i] : strlen(values[i]);
        memcpy(p, values[i], n);
        p[n] = '\0';
        k.values[i] = p;
        k.lengths[i] = (int)n;
        p += n + 1;
    }
    j->calls[j->ncalls++] = k;
    return CMS_PG_OK;
}

int cms_pg_job_sql(cms_pg_job *job, const char *sql, int nparams, const char *const *values,
                   const int *lengths, const int *formats)
{
    if (sql == NULL)
        return CMS_PG_EINVAL;
    return job_add(job, NULL, sql, nparams, values, lengths, formats);
}

int cms_pg_job_lead_sql(cms_pg_job *job, const char *sql, int nparams, const char *const *values,
                        const int *lengths, const int *formats)
{
    if (sql == NULL || job == NULL || job->ncalls != job->nlead)
        return CMS_PG_EINVAL;
    int rc = job_add(job, NULL, sql, nparams, values, lengths, formats);
    if (rc == CMS_PG_OK)
        job->nlead++;
    return rc;
}

int cms_pg_stmt_nparams(const cms_pg_stmt *stmt)
{
    return stmt ? stmt->nparams : 0;
}

int cms_pg_job_lead_exec(cms_pg_job *job, const cms_pg_stmt *stmt, const char *const *values,
                         const int *lengths, const int *formats)
{
    if (stmt == NULL || job == NULL || job->ncalls != job->nlead)
        return CMS_PG_EINVAL;
    int rc = job_add(job, stmt, NULL, stmt->nparams, values, lengths, formats);
    if (rc == CMS_PG_OK)
        job->nlead++;
    return rc;
}

int cms_pg_job_exec(cms_pg_job *job, const cms_pg_stmt *stmt, const char *const *values,
                    const int *lengths, const int *formats)
{
    if (stmt == NULL)
        return CMS_PG_EINVAL;
    return job_add(job, stmt, NULL, stmt->nparams, values, lengths, formats);
}

/* ---- results ---- */

size_t cms_pg_result_count(const cms_pg_result *res)
{
    return res->job->ncalls - res->job->nlead;
}

const PGresult *cms_pg_result_get(const cms_pg_result *res, size_t i)
{
    const cms_pg_job *j = res->job;
    if (i >= j->ncalls - j->nlead)
        return NULL;
    PGresult *r = j->results[j->nprep + j->nlead + i];
    return (r && PQresultStatus(r) == PGRES_PIPELINE_ABORTED) ? NULL : r;
}

int cms_pg_result_failed(const cms_pg_result *res)
{
    return res->failed;
}

int cms_pg_result_lead_failed(const cms_pg_result *res)
{
    return res->lead_failed;
}

/* The first error result: a failed prepare counts against the job too. */
static const PGresult *first_error(const cms_pg_job *j)
{
    for (size_t i = 0; i < j->nres; i++)
        if (j->results[i] && PQresultStatus(j->results[i]) == PGRES_FATAL_ERROR)
            return j->results[i];
    return NULL;
}

const char *cms_pg_result_sqlstate(const cms_pg_result *res)
{
    const PGresult *r = first_error(res->job);
    const char *s = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    return s ? s : "";
}

const char *cms_pg_result_message(const cms_pg_result *res)
{
    const PGresult *r = first_error(res->job);
    const char *s = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    return s ? s : "";
}

/* Ends a job: the callback runs once, then the job is freed. */
static void finish_job(cms_pg *pg, cms_pg_job *j, cms_pg_err err)
{
    cms_pg_result res = {.job = j, .failed = -1, .lead_failed = -1};
    if (err == CMS_PG_OK && first_error(j) != NULL) {
        err = CMS_PG_ESQL;
        for (size_t i = 0; i < j->ncalls; i++) {
            PGresult *r = j->results ? j->results[j->nprep + i] : NULL;
            if (r && PQresultStatus(r) == PGRES_FATAL_ERROR) {
                if (i < j->nlead)
                    res.lead_failed = (int)i;
                else
                    res.failed = (int)(i - j->nlead);
                break;
            }
        }
    }
    if (err != CMS_PG_OK && pg->m_jobs_failed)
        cms_counter_add(pg->m_jobs_failed, 1);
    if (!j->internal && pg->m_latency && j->started_ns)
        cms_histogram_observe(pg->m_latency, (double)(uv_hrtime() - j->started_ns) / 1e9);
    if (j->done)
        j->done(j->arg, err, (err == CMS_PG_OK || err == CMS_PG_ESQL) ? &res : NULL);
    cms_pg_job_free(j);
}

/* ---- connection I/O ---- */

static void poll_closed(uv_handle_t *h)
{
    free(h->data);
}

static void poll_detach(conn *c)
{
    if (c->poll == NULL)
        return;
    c->poll->c = NULL;
    uv_close((uv_handle_t *)&c->poll->h, poll_closed);
    c->poll = NULL;
    c->sock = -1;
}

/* Watches PQsocket for events, re-reading the socket: libpq may replace it
 * at any step of a connection attempt. */
static int conn_watch(conn *c, int events)
{
    int fd = PQsocket(c->pq);
    if (fd < 0)
        return -1;
    if (c->poll && c->sock != fd)
        poll_detach(c);
    if (c->poll == NULL) {
        conn_poll *p = calloc(1, sizeof *p);
        if (p == NULL)
            return -1;
        if (uv_poll_init_socket(c->pg->loop, &p->h, fd) != 0) {
            free(p);
            return -1;
        }
        p->c = c;
        p->h.data = p;
        c->poll = p;
        c->sock = fd;
    }
    return uv_poll_start(&c->poll->h, events, poll_cb) == 0 ? 0 : -1;
}

static int conn_rearm(conn *c)
{
    return conn_watch(c, UV_READABLE | (c->flushing ? UV_WRITABLE : 0));
}

/* Returns false if the connection failed (and was torn down). */
static bool conn_flush(conn *c)
{
    int r = PQflush(c->pq);
    if (r < 0) {
        conn_fail(c, "flush");
        return false;
    }
    c->flushing = r == 1;
    if (conn_rearm(c) != 0) {
        conn_fail(c, "poll");
        return false;
    }
    return true;
}

static void conn_ensure_prep_cap(conn *c)
{
    size_t n = c->pg->nstmts;
    if (c->prep_cap >= n)
        return;
    unsigned char *p = realloc(c->prep, n);
    if (p == NULL)
        return; /* checked by the caller through prep_cap */
    memset(p + c->prep_cap, PREP_NONE, n - c->prep_cap);
    c->prep = p;
    c->prep_cap = n;
}

/* Sends one job as a pipeline segment ending in a Sync. The job is already
 * on c->inflight, so a failure here is handled like any lost connection. */
static bool conn_send(conn *c, cms_pg_job *j)
{
    PGconn *pq = c->pq;
    conn_ensure_prep_cap(c);
    if (c->prep_cap < c->pg->nstmts) {
        conn_fail(c, "out of memory");
        return false;
    }
    size_t need = 0;
    for (size_t i = 0; i < j->ncalls; i++)
        need += j->calls[i].stmt != NULL;
    j->prep = need ? calloc(need, sizeof *j->prep) : NULL;
    for (size_t i = 0; i < j->ncalls; i++) {
        const cms_pg_stmt *s = j->calls[i].stmt;
        if (s == NULL || c->prep[s->index] != PREP_NONE)
            continue;
        if (!PQsendPrepare(pq, s->name, s->sql, s->nparams, s->types)) {
            conn_fail(c, "send prepare");
            return false;
        }
        c->prep[s->index] = PREP_SENT;
        j->prep[j->nprep++] = s->index;
    }
    j->nres = j->nprep + j->ncalls;
    j->results = calloc(j->nres ? j->nres : 1, sizeof *j->results);
    if (j->results == NULL || (need && j->prep == NULL)) {
        conn_fail(c, "out of memory");
        return false;
    }
    int fmt = j->binary ? 1 : 0;
    for (size_t i = 0; i < j->ncalls; i++) {
        const call *k = &j->calls[i];
        int ok = k->stmt ? PQsendQueryPrepared(pq, k->stmt->name, k->nparams, k->values, k->lengths,
                                               k->formats, fmt)
                         : PQsendQueryParams(pq, k->sql, k->nparams, NULL, k->values, k->lengths,
                                             k->formats, fmt);
        if (!ok) {
            conn_fail(c, "send query");
            return false;
        }
    }
    if (!PQpipelineSync(pq)) {
        conn_fail(c, "pipeline sync");
        return false;
    }
    return conn_flush(c);
}

/* Called once the job's Sync came back. */
static void conn_job_done(conn *c, cms_pg_job *j)
{
    for (size_t i = 0; i < j->nprep; i++) {
        PGresult *r = j->results[i];
        bool ok = r && PQresultStatus(r) == PGRES_COMMAND_OK;
        c->prep[j->prep[i]] = ok ? PREP_DONE : PREP_NONE;
    }
    if (j->internal) {
        const PGresult *e = first_error(j);
        if (e) {
            cms_log_error("pg connection setup failed", "{s:i, s:s}", "conn", c->id, "error",
                          PQresultErrorMessage(e));
            cms_pg_job_free(j);
            conn_fail(c, "setup");
            return;
        }
        cms_backoff_reset(&c->backoff);
        cms_pg_job_free(j);
        conn_set_state(c, CONN_READY);
        cms_log_info("pg connected", "{s:i, s:s, s:s}", "conn", c->id, "host",
                     PQhost(c->pq) ? PQhost(c->pq) : "", "port",
                     PQport(c->pq) ? PQport(c->pq) : "");
    } else {
        finish_job(c->pg, j, CMS_PG_OK);
    }
    kick(c->pg);
}

/* Drains every result that is available without blocking. Returns false if
 * the connection failed. */
static bool conn_read(conn *c)
{
    while ((c->state == CONN_SETUP || c->state == CONN_READY) && !PQisBusy(c->pq)) {
        PGresult *r = PQgetResult(c->pq);
        cms_pg_job *j = c->inflight.head;
        if (r == NULL) {
            if (j && j->open) {
                j->open = false;
                j->cur++;
                continue;
            }
            break;
        }
        ExecStatusType st = PQresultStatus(r);
        if (j == NULL) {
            /* e.g. the server's notice of a shutdown with nothing in flight */
            if (st == PGRES_FATAL_ERROR)
                cms_log_warn("pg server error", "{s:i, s:s}", "conn", c->id, "error",
                             PQresultErrorMessage(r));
            PQclear(r);
            if (PQstatus(c->pq) == CONNECTION_BAD)
                break;
            continue;
        }
        if (st == PGRES_PIPELINE_SYNC) {
            PQclear(r);
            fifo_pop(&c->inflight);
            conn_job_done(c, j);
            continue;
        }
        if (j->cur < j->nres) {
            PQclear(j->results[j->cur]);
            j->results[j->cur] = r;
            j->open = true;
        } else {
            PQclear(r);
        }
    }
    if (c->state != CONN_SETUP && c->state != CONN_READY)
        return false;
    if (PQstatus(c->pq) == CONNECTION_BAD) {
        conn_fail(c, "connection lost");
        return false;
    }
    return true;
}

static void conn_established(conn *c)
{
    if (PQsetnonblocking(c->pq, 1) != 0 || PQenterPipelineMode(c->pq) != 1) {
        conn_fail(c, "pipeline mode");
        return;
    }
    conn_set_state(c, CONN_SETUP);
    cms_pg_job *setup = cms_pg_job_new();
    /* statement_timeout stands in for PQcancel, which blocks in libpq 15 */
    char sql[96] = "SELECT 1";
    if (c->pg->o.statement_timeout_ms > 0)
        snprintf(sql, sizeof sql, "SET statement_timeout = %lld",
                 (long long)c->pg->o.statement_timeout_ms);
    if (setup == NULL || cms_pg_job_sql(setup, sql, 0, NULL, NULL, NULL) != CMS_PG_OK) {
        cms_pg_job_free(setup);
        conn_fail(c, "out of memory");
        return;
    }
    setup->internal = true;
    fifo_push(&c->inflight, setup);
    conn_send(c, setup);
}

static void conn_connect_step(conn *c)
{
    if (c->poll)
        uv_poll_stop(&c->poll->h);
    switch (PQconnectPoll(c->pq)) {
    case PGRES_POLLING_READING:
        if (conn_watch(c, UV_READABLE) != 0)
            conn_fail(c, "poll");
        return;
    case PGRES_POLLING_WRITING:
        if (conn_watch(c, UV_WRITABLE) != 0)
            conn_fail(c, "poll");
        return;
    case PGRES_POLLING_OK:
        conn_established(c);
        return;
    case PGRES_POLLING_FAILED:
    case PGRES_POLLING_ACTIVE:
        break;
    }
    conn_fail(c, "connect");
}

static void poll_cb(uv_poll_t *h, int status, int events)
{
    conn_poll *p = h->data;
    conn *c = p->c;
    if (c == NULL)
        return;
    /* libuv reports POLLERR as UV_EBADF: let libpq find out what happened,
     * so the log carries its message (e.g. connection refused) */
    if (status < 0)
        events = UV_READABLE | UV_WRITABLE;
    if (c->state == CONN_CONNECTING) {
        conn_connect_step(c);
        return;
    }
    if (c->state != CONN_SETUP && c->state != CONN_READY)
        return;
    if (events & UV_READABLE) {
        if (!PQconsumeInput(c->pq)) {
            conn_fail(c, "read");
            return;
        }
        if (!conn_read(c))
            return;
    }
    /* PQflush may need reads to make progress, so retry it on either event */
    if (c->flushing || (events & UV_WRITABLE))
        (void)conn_flush(c);
}

static void backoff_fired(uv_timer_t *t)
{
    conn_start(t->data);
}

static void conn_start(conn *c)
{
    cms_pg *pg = c->pg;
    const char *kw[] = {"dbname", "fallback_application_name", NULL};
    const char *val[] = {pg->conninfo, pg->appname, NULL};
    c->pq = PQconnectStartParams(kw, val, 1);
    conn_set_state(c, CONN_CONNECTING);
    if (c->pq == NULL) {
        conn_fail(c, "out of memory");
        return;
    }
    if (PQstatus(c->pq) == CONNECTION_BAD) {
        conn_fail(c, "connect");
        return;
    }
    /* as if PQconnectPoll had returned PGRES_POLLING_WRITING */
    if (conn_watch(c, UV_WRITABLE) != 0)
        conn_fail(c, "poll");
}

/* Tears a connection down and decides what becomes of its jobs: idempotent
 * ones go back to the front of the queue, in order; the others fail with
 * CMS_PG_ECONN because their transaction may or may not have committed. */
static void conn_fail(conn *c, const char *why)
{
    cms_pg *pg = c->pg;
    if (c->state == CONN_CLOSED || c->state == CONN_BACKOFF)
        return;
    bool was_up = c->state == CONN_READY || c->state == CONN_SETUP;
    const char *detail = c->pq ? PQerrorMessage(c->pq) : "";
    /* a server that stays down would flood the log: warn on attempts 0, 1, 2, 4, 8, ... */
    unsigned attempt = c->backoff.failures;
    bool loud = (attempt & (attempt - 1)) == 0;
    cms_log(loud ? CMS_LOG_WARN : CMS_LOG_DEBUG, "pg connection failed", "{s:i, s:s, s:s, s:i}",
            "conn", c->id, "reason", why, "error", detail ? detail : "", "attempt", (int)attempt);
    poll_detach(c);
    PQfinish(c->pq);
    c->pq = NULL;
    c->flushing = false;
    if (c->prep)
        memset(c->prep, PREP_NONE, c->prep_cap);
    conn_set_state(c, CONN_BACKOFF);

    job_fifo retry = {0}, fail = {0};
    cms_pg_job *j;
    while ((j = fifo_pop(&c->inflight)) != NULL) {
        job_reset_send(j);
        if (j->internal)
            cms_pg_job_free(j);
        else if (j->idempotent)
            fifo_push(&retry, j);
        else
            fifo_push(&fail, j);
    }
    if (retry.len)
        cms_log_info("pg resending idempotent jobs", "{s:i, s:i}", "conn", c->id, "jobs",
                     (int)retry.len);
    for (cms_pg_job *k = retry.head; k; k = k->next)
        k->deadline_ms = uv_now(pg->loop) + (uint64_t)pg->o.queue_timeout_ms;
    fifo_prepend(&pg->queue, &retry);
    update_gauges(pg);

    if (was_up && pg->m_reconnects)
        cms_counter_add(pg->m_reconnects, 1);
    uint64_t delay = cms_backoff_next(&c->backoff);
    uv_timer_start(&c->timer, backoff_fired, was_up ? 0 : delay, 0);

    while ((j = fifo_pop(&fail)) != NULL)
        finish_job(pg, j, CMS_PG_ECONN);
    kick(pg);
}

/* ---- dispatch, deadlines, close ---- */

static conn *pick_conn(cms_pg *pg)
{
    conn *best = NULL;
    for (int i = 0; i < pg->nconns; i++) {
        conn *c = &pg->conns[i];
        if (c->state != CONN_READY || (int)c->inflight.len >= pg->o.max_pipeline)
            continue;
        if (best == NULL || c->inflight.len < best->inflight.len)
            best = c;
    }
    return best;
}

static void arm_queue_timer(cms_pg *pg)
{
    if (pg->state == POOL_CLOSED)
        return;
    if (pg->queue.head == NULL) {
        uv_timer_stop(&pg->qtimer);
        return;
    }
    uint64_t first = UINT64_MAX;
    for (cms_pg_job *j = pg->queue.head; j; j = j->next)
        if (j->deadline_ms < first)
            first = j->deadline_ms;
    uint64_t now = uv_now(pg->loop);
    uv_timer_start(&pg->qtimer, queue_expire, first > now ? first - now : 0, 0);
}

static void queue_expire(uv_timer_t *t)
{
    cms_pg *pg = t->data;
    uint64_t now = uv_now(pg->loop);
    job_fifo keep = {0}, expired = {0};
    cms_pg_job *j;
    while ((j = fifo_pop(&pg->queue)) != NULL)
        fifo_push(j->deadline_ms <= now ? &expired : &keep, j);
    pg->queue = keep;
    update_gauges(pg);
    if (expired.len)
        cms_log_warn("pg jobs expired waiting for a connection", "{s:i, s:i}", "jobs",
                     (int)expired.len, "ready", pg->nready);
    while ((j = fifo_pop(&expired)) != NULL)
        finish_job(pg, j, CMS_PG_EUNAVAILABLE);
    arm_queue_timer(pg);
    maybe_finish_close(pg);
}

static void dispatch(uv_idle_t *h)
{
    cms_pg *pg = h->data;
    uv_idle_stop(h);
    conn *c;
    while (pg->queue.head && (c = pick_conn(pg)) != NULL) {
        cms_pg_job *j = fifo_pop(&pg->queue);
        fifo_push(&c->inflight, j);
        conn_send(c, j); /* on failure the job was re-queued or failed */
    }
    update_gauges(pg);
    arm_queue_timer(pg);
    maybe_finish_close(pg);
}

cms_pg_err cms_pg_submit(cms_pg *pg, cms_pg_job **jobp, cms_pg_done_cb done, void *arg)
{
    cms_pg_job *j = jobp ? *jobp : NULL;
    if (jobp)
        *jobp = NULL;
    cms_pg_err err = CMS_PG_OK;
    if (pg == NULL || j == NULL || j->ncalls == 0) {
        err = CMS_PG_EINVAL;
        goto out;
    }
    if (pg->state != POOL_RUNNING) {
        err = CMS_PG_ECLOSED;
        goto out;
    }
    if (pg->queue.len >= pg->o.queue_cap) {
        err = CMS_PG_EBUSY;
        goto out;
    }
    j->done = done;
    j->arg = arg;
    j->started_ns = uv_hrtime();
    j->deadline_ms = uv_now(pg->loop) + (uint64_t)pg->o.queue_timeout_ms;
    fifo_push(&pg->queue, j);
    j = NULL;
    kick(pg);
out:
    cms_pg_job_free(j);
    return err;
}

static void handle_closed(uv_handle_t *h)
{
    cms_pg *pg = h->data;
    if (--pg->open_handles == 0 && pg->closed)
        pg->closed(pg->closed_arg);
}

static void close_handle(cms_pg *pg, uv_handle_t *h)
{
    pg->open_handles++;
    h->data = pg;
    uv_close(h, handle_closed);
}

static void maybe_finish_close(cms_pg *pg)
{
    if (pg->state != POOL_CLOSING || pg->queue.len)
        return;
    for (int i = 0; i < pg->nconns; i++)
        if (pg->conns[i].inflight.len)
            return;
    pool_set_state(pg, POOL_CLOSED);
    for (int i = 0; i < pg->nconns; i++) {
        conn *c = &pg->conns[i];
        poll_detach(c);
        PQfinish(c->pq);
        c->pq = NULL;
        conn_set_state(c, CONN_CLOSED);
        close_handle(pg, (uv_handle_t *)&c->timer);
    }
    close_handle(pg, (uv_handle_t *)&pg->kick);
    close_handle(pg, (uv_handle_t *)&pg->qtimer);
}

void cms_pg_close(cms_pg *pg, void (*closed)(void *arg), void *arg)
{
    if (pg == NULL || pg->state != POOL_RUNNING)
        return;
    pool_set_state(pg, POOL_CLOSING);
    pg->closed = closed;
    pg->closed_arg = arg;
    kick(pg);
}

/* ---- creation ---- */

const cms_pg_stmt *cms_pg_prepare(cms_pg *pg, const char *name, const char *sql, int nparams,
                                  const Oid *types)
{
    if (pg == NULL || name == NULL || sql == NULL || nparams < 0)
        return NULL;
    for (size_t i = 0; i < pg->nstmts; i++)
        if (strcmp(pg->stmts[i]->name, name) == 0)
            return NULL;
    cms_pg_stmt **list = realloc(pg->stmts, (pg->nstmts + 1) * sizeof *list);
    if (list == NULL)
        return NULL;
    pg->stmts = list;
    cms_pg_stmt *s = calloc(1, sizeof *s);
    if (s == NULL)
        return NULL;
    s->name = strdup(name);
    s->sql = strdup(sql);
    s->nparams = nparams;
    if (types && nparams) {
        s->types = malloc((size_t)nparams * sizeof(Oid));
        if (s->types)
            memcpy(s->types, types, (size_t)nparams * sizeof(Oid));
    }
    if (s->name == NULL || s->sql == NULL || (types && nparams && s->types == NULL)) {
        free(s->name);
        free(s->sql);
        free(s->types);
        free(s);
        return NULL;
    }
    s->index = pg->nstmts;
    pg->stmts[pg->nstmts++] = s;
    return s;
}

int cms_pg_ready(const cms_pg *pg)
{
    return pg ? pg->nready : 0;
}

size_t cms_pg_pending(const cms_pg *pg)
{
    size_t n = pg->queue.len;
    for (int i = 0; i < pg->nconns; i++)
        for (cms_pg_job *j = pg->conns[i].inflight.head; j; j = j->next)
            n += !j->internal;
    return n;
}

int cms_pg_create(uv_loop_t *loop, const cms_pg_options *opts, cms_pg **out)
{
    if (loop == NULL || opts == NULL || opts->conninfo == NULL || out == NULL)
        return CMS_PG_EINVAL;
    if (sodium_init() < 0)
        return CMS_PG_ENOMEM;
    cms_pg *pg = calloc(1, sizeof *pg);
    if (pg == NULL)
        return CMS_PG_ENOMEM;
    pg->loop = loop;
    pg->o = *opts;
#define DEFAULT(f, v)                                                                              \
    if (pg->o.f <= 0)                                                                              \
        pg->o.f = (v);
    DEFAULT(pool_size, DEFAULT_POOL_SIZE)
    DEFAULT(max_pipeline, DEFAULT_MAX_PIPELINE)
    DEFAULT(queue_cap, DEFAULT_QUEUE_CAP)
    DEFAULT(queue_timeout_ms, DEFAULT_QUEUE_TIMEOUT_MS)
    DEFAULT(backoff_min_ms, DEFAULT_BACKOFF_MIN_MS)
    DEFAULT(backoff_max_ms, DEFAULT_BACKOFF_MAX_MS)
#undef DEFAULT
    if (opts->statement_timeout_ms == 0)
        pg->o.statement_timeout_ms = DEFAULT_STATEMENT_TIMEOUT_MS;
    if (pg->o.statement_timeout_ms < 0)
        pg->o.statement_timeout_ms = 0; /* the server's own setting */
    pg->conninfo = strdup(opts->conninfo);
    pg->appname = strdup(opts->application_name ? opts->application_name : "cms");
    pg->conns = calloc((size_t)pg->o.pool_size, sizeof *pg->conns);
    if (pg->conninfo == NULL || pg->appname == NULL || pg->conns == NULL) {
        free(pg->conninfo);
        free(pg->appname);
        free(pg->conns);
        free(pg);
        return CMS_PG_ENOMEM;
    }
    pg->nconns = pg->o.pool_size;
    uv_idle_init(loop, &pg->kick);
    pg->kick.data = pg;
    uv_timer_init(loop, &pg->qtimer);
    pg->qtimer.data = pg;
    cms_metrics *m = cms_metrics_default();
    pg->m_reconnects = cms_metrics_counter(m, "cms_pg_reconnects_total",
                                           "PostgreSQL connections lost and reopened", NULL);
    pg->m_jobs_failed =
        cms_metrics_counter(m, "cms_pg_jobs_failed_total", "PostgreSQL jobs that failed", NULL);
    pg->m_ready = cms_metrics_gauge(m, "cms_pg_ready_connections",
                                    "PostgreSQL connections ready for work", NULL);
    pg->m_queue = cms_metrics_gauge(m, "cms_pg_queue_depth", "Jobs waiting for a connection", NULL);
    pg->m_latency = cms_metrics_histogram(m, "cms_pg_job_duration_seconds",
                                          "Time from submit to result of a job", NULL, NULL, 0);
    for (int i = 0; i < pg->nconns; i++) {
        conn *c = &pg->conns[i];
        c->pg = pg;
        c->id = i;
        c->sock = -1; /* calloc: CONN_BACKOFF */
        cms_backoff_init(&c->backoff, (uint64_t)pg->o.backoff_min_ms,
                         (uint64_t)pg->o.backoff_max_ms);
        uv_timer_init(loop, &c->timer);
        c->timer.data = c;
        conn_start(c);
    }
    *out = pg;
    return CMS_PG_OK;
}

void cms_pg_destroy(cms_pg *pg)
{
    if (pg == NULL)
        return;
    for (size_t i = 0; i < pg->nstmts; i++) {
        free(pg->stmts[i]->name);
        free(pg->stmts[i]->sql);
        free(pg->stmts[i]->types);
        free(pg->stmts[i]);
    }
    for (int i = 0; i < pg->nconns; i++)
        free(pg->conns[i].prep);
    free(pg->stmts);
    free(pg->conns);
    free(pg->conninfo);
    free(pg->appname);
    free(pg);
}
