/* Outbox relay; see outbox.h.
 *
 * One batch at a time: read the oldest rows of this source waiting to be
 * published (taking or renewing the lease in the same job), publish them
 * one by one in order, and once the batch is through, mark the published
 * rows (their ack's stream and sequence; or delete them, retain_ms 0) and
 * read the next batch in one job. Only one job, publish or probe of the
 * relay is ever in flight, so the relay's activity is one state.
 *
 * The check (retain_ms > 0), before the first publish after start and
 * after each reconnection: per stream, the newest kept row is looked up in
 * the stream (cms_nats_probe_stream). If the stream no longer holds it, the
 * rows it lost are a suffix of the kept ones (a store rolled back loses its
 * newest messages), found by rounds of 16 probes spread over the rows still
 * in doubt; those rows are marked unpublished, so that the relay publishes
 * them again, oldest first, before anything newer. */
#include "outbox.h"

#include "backoff.h"
#include "fsm.h"
#include "lease.h"
#include "log.h"
#include "metrics.h"
#include "pgarray.h"

#include <endian.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_BATCH 256
#define DEFAULT_POLL_MS 1000
#define DEFAULT_BACKOFF_MAX_MS 5000
#define BACKOFF_MIN_MS 100
#define ROOM_RETRY_MS 5 /* the NATS module's publish window is full of others' */
#define BACKLOG_COUNT_MAX "1000000"
#define PRUNE_MAX "10000" /* kept rows deleted per poll at most */
#define CHECK_SPREAD 16   /* probes per round of the search for what a stream lost */
#define MAX_STREAMS 8     /* streams a relay remembers acks of (names interned) */
#define CHECK_TRIES 5     /* failed checks in a row before publishing unchecked */
/* "Nats-Msg-Id: <uuid>\r\n" and the header block around it */
#define MSG_ID_HEADER_BYTES (strlen("NATS/1.0\r\n\r\n") + strlen("Nats-Msg-Id: \r\n") + 36)

/* SQL reads best as written */
// clang-format off
const char cms_outbox_sql_insert[] =
    "INSERT INTO outbox (source, event_id, subject, payload) VALUES ($1, $2::uuid, $3, $4)";
static const char SQL_DELETE[] = "DELETE FROM outbox WHERE seq = ANY($1::bigint[])";
static const char SQL_MARK[] =
    "UPDATE outbox SET published_at = now(), stream = u.stream, stream_seq = u.sseq "
    "FROM unnest($1::bigint[], $2::text[], $3::bigint[]) AS u(seq, stream, sseq) "
    "WHERE outbox.seq = u.seq";
static const char SQL_READ[] =
    "SELECT seq, event_id::text, subject, payload, "
    "(extract(epoch from now() - created_at) * 1000000)::int8 "
    "FROM outbox WHERE source = $1 AND published_at IS NULL ORDER BY seq LIMIT $2";
static const char SQL_BACKLOG[] =
    "SELECT count(*) FROM (SELECT 1 FROM outbox WHERE source = $1 AND published_at IS NULL "
    "LIMIT " BACKLOG_COUNT_MAX ") b";
static const char SQL_PRUNE[] =
    "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox WHERE source = $1 "
    "AND published_at < now() - $2::bigint * interval '1 millisecond' LIMIT " PRUNE_MAX ")";
/* the check: the newest kept row per stream; up to CHECK_SPREAD kept rows
 * spread over (lo, hi], oldest first; the rows past the last one a stream
 * holds marked unpublished */
static const char SQL_NEWEST[] =
    "SELECT DISTINCT ON (stream) stream, seq, stream_seq, event_id::text FROM outbox "
    "WHERE source = $1 AND published_at IS NOT NULL AND stream IS NOT NULL "
    "ORDER BY stream, seq DESC";
static const char SQL_SPREAD[] =
    "SELECT DISTINCT ON (b) stream, seq, stream_seq, event_id::text FROM ("
    "SELECT stream, seq, stream_seq, event_id, ntile($5::int) OVER (ORDER BY seq) AS b "
    "FROM outbox WHERE source = $1 AND stream = $2 AND published_at IS NOT NULL "
    "AND seq > $3::bigint AND seq <= $4::bigint) t ORDER BY b, seq DESC";
static const char SQL_UNMARK[] =
    "WITH r AS (UPDATE outbox SET published_at = NULL, stream = NULL, stream_seq = NULL "
    "WHERE source = $1 AND stream = $2 AND published_at IS NOT NULL AND seq > $3::bigint "
    "RETURNING 1) SELECT count(*) FROM r";
static const char SQL_BURY[] =
    "WITH d AS (DELETE FROM outbox WHERE seq = $1::bigint RETURNING *) "
    "INSERT INTO outbox_dead (seq, source, event_id, subject, payload, created_at, reason) "
    "SELECT seq, source, event_id, subject, payload, created_at, $2 FROM d";
// clang-format on

/* Why a row is moved to outbox_dead (the metric's reason label). */
#define DEAD_REASONS(X)                                                                            \
    X(DEAD_NONE, "")                                                                               \
    X(DEAD_TOO_LARGE, "too_large")                                                                 \
    X(DEAD_REFUSED, "refused")
typedef enum { DEAD_REASONS(CMS_ENUM_ITEM) NDEAD } dead_reason;
static const char *const dead_names[] = {DEAD_REASONS(CMS_ENUM_TEXT)};

/* The relay's life: running; draining (relay until a read finds nothing,
 * then close); closed (nothing more is sent; late completions are ignored). */
#define LIFE_STATES(X)                                                                             \
    X(RELAY_RUNNING, "running") X(RELAY_DRAINING, "draining") X(RELAY_CLOSED, "closed")
typedef enum { LIFE_STATES(CMS_ENUM_ITEM) RELAY_NLIFE } relay_life;
static const char *const life_names[] = {LIFE_STATES(CMS_ENUM_TEXT)};
static const bool life_moves[RELAY_NLIFE][RELAY_NLIFE] = {
    [RELAY_RUNNING] = {[RELAY_DRAINING] = true, [RELAY_CLOSED] = true},
    [RELAY_DRAINING] = {[RELAY_CLOSED] = true},
};
static const cms_fsm life_fsm = CMS_FSM_INIT("outbox relay", CMS_LOG_INFO, life_names, life_moves);

/* What the relay is doing:
 *   ACT_IDLE        nothing in flight; the timer reads next (poll or backoff)
 *   ACT_READING     the delete-and-read job is in flight
 *   ACT_PUBLISHING  the publish of rows[next] is in flight
 *   ACT_HELD        rows[next] waits for the timer (backoff, or a full window)
 *   ACT_BURYING     rows[next] is being moved to outbox_dead
 *   ACT_CHECKING    a query or probe of the check is in flight */
#define ACT_STATES(X)                                                                              \
    X(ACT_IDLE, "idle")                                                                            \
    X(ACT_READING, "reading")                                                                      \
    X(ACT_PUBLISHING, "publishing")                                                                \
    X(ACT_HELD, "held")                                                                            \
    X(ACT_BURYING, "burying")                                                                      \
    X(ACT_CHECKING, "checking")
typedef enum { ACT_STATES(CMS_ENUM_ITEM) ACT_NSTATES } relay_act;
static const char *const act_names[] = {ACT_STATES(CMS_ENUM_TEXT)};
static const bool act_moves[ACT_NSTATES][ACT_NSTATES] = {
    [ACT_IDLE] = {[ACT_READING] = true},
    [ACT_READING] = {[ACT_IDLE] = true,
                     [ACT_PUBLISHING] = true,
                     [ACT_BURYING] = true,
                     [ACT_HELD] = true,
                     [ACT_CHECKING] = true},
    [ACT_PUBLISHING] = {[ACT_PUBLISHING] = true,
                        [ACT_HELD] = true,
                        [ACT_BURYING] = true,
                        [ACT_READING] = true,
                        [ACT_IDLE] = true},
    [ACT_HELD] =
        {[ACT_PUBLISHING] = true, [ACT_BURYING] = true, [ACT_READING] = true, [ACT_IDLE] = true},
    [ACT_BURYING] = {[ACT_PUBLISHING] = true,
                     [ACT_HELD] = true,
                     [ACT_BURYING] = true,
                     [ACT_READING] = true,
                     [ACT_IDLE] = true},
    [ACT_CHECKING] = {[ACT_IDLE] = true},
};
static const cms_fsm act_fsm =
    CMS_FSM_INIT("outbox relay activity", CMS_LOG_DEBUG, act_names, act_moves);

static const char *const err_names[] = {CMS_OUTBOX_ERRORS(CMS_ENUM_TEXT)};

typedef struct row {
    int64_t seq;
    char event_id[40];
    char *subject;
    void *payload;
    size_t len;
    int64_t age_us;
    dead_reason dead;   /* it can never be published: to be moved to outbox_dead */
    const char *stream; /* its ack's (interned in the relay), NULL if not known */
    uint64_t stream_seq;
} row;

/* A kept row as the check probes it. */
typedef struct kept {
    char *stream;
    int64_t seq;
    uint64_t stream_seq;
    char event_id[40];
} kept;

/* The check of what the streams hold (see the top). */
typedef struct check {
    bool needed;         /* before the next publish */
    uint64_t reconnects; /* cms_nats_reconnects when it last started */
    kept *newest;        /* the newest kept row per stream */
    size_t nnewest, cur; /* newest[cur] is being searched */
    bool *lost;          /* per newest: its stream lost it */
    kept *spread;        /* this round's probes */
    size_t nspread;
    int64_t lo, hi;       /* the last row the stream holds is in [lo, hi] (lo: 0, none) */
    uint64_t republished; /* rows marked unpublished by this check */
    int failures;         /* checks failed in a row */
} check;

struct cms_outbox {
    uv_loop_t *loop;
    cms_pg *pg;
    cms_nats *nats;
    char *source;
    cms_outbox_options o;
    cms_lease lease;
    int ix_take, ix_read, ix_count; /* the read job's statements (-1: none) */
    relay_life life;
    relay_act act;
    bool kicked; /* a kick arrived since the last read was sent */
    row *rows;
    size_t nrows, next;  /* rows[0..next) are published (or buried) */
    cms_backoff backoff; /* failures in a row */
    uv_timer_t timer;
    uint64_t last_count_ms; /* when the backlog was last counted (loop time) */
    uint64_t published;
    char *streams[MAX_STREAMS]; /* the acks' stream names, interned */
    check chk;
    void (*closed)(void *arg);
    void *closed_arg;
    cms_counter *m_published, *m_failed, *m_dead[NDEAD], *m_republished;
    cms_gauge *m_backlog, *m_oldest, *m_held;
};

static void read_batch(cms_outbox *ob);
static void publish_next(cms_outbox *ob);
static void check_start(cms_outbox *ob);

const char *cms_outbox_strerror(cms_outbox_err e)
{
    return cms_enum_text(err_names, CMS_OUTBOX_NERRORS, e);
}

static void set_life(cms_outbox *ob, relay_life to)
{
    ob->life = (relay_life)cms_fsm_step(&life_fsm, ob->life, to, ob->source);
}

static void set_act(cms_outbox *ob, relay_act to)
{
    ob->act = (relay_act)cms_fsm_step(&act_fsm, ob->act, to, ob->source);
}

/* ---- writing events ---- */

void cms_outbox_params(const char *source, const cms_bus_event *ev, const char *values[4],
                       int lengths[4], int formats[4])
{
    values[0] = source;
    values[1] = ev->id;
    values[2] = ev->subject;
    values[3] = ev->buf ? (const char *)ev->buf : "";
    for (int i = 0; i < 4; i++)
        lengths[i] = formats[i] = 0;
    lengths[3] = (int)ev->len;
    formats[3] = 1;
}

enum { MAX_OWN = 60, MAX_EVENTS = 4 };

/* Each event's four parameters, then the statement's own: false if they do
 * not fit. */
static bool event_params(const char *source, const cms_bus_event *const *evs, int nev, int nparams,
                         const char *const *values, const char **v, int *lengths, int *formats)
{
    if (source == NULL || evs == NULL || nev < 1 || nev > MAX_EVENTS || nparams < 0 ||
        nparams > MAX_OWN || (nparams > 0 && values == NULL))
        return false;
    for (int k = 0; k < nev; k++) {
        if (evs[k] == NULL || evs[k]->len > INT32_MAX)
            return false;
        cms_outbox_params(source, evs[k], v + 4 * k, lengths + 4 * k, formats + 4 * k);
    }
    for (int i = 0; i < nparams; i++) {
        v[4 * nev + i] = values[i];
        lengths[4 * nev + i] = formats[4 * nev + i] = 0;
    }
    return true;
}

static cms_outbox_err from_pg(int rc)
{
    return rc == CMS_PG_OK       ? CMS_OUTBOX_OK
           : rc == CMS_PG_ENOMEM ? CMS_OUTBOX_ENOMEM
                                 : CMS_OUTBOX_EINVAL;
}

cms_outbox_err cms_outbox_add_sql_events(cms_pg_job *job, const char *sql, const char *source,
                                         const cms_bus_event *const *events, int nevents,
                                         int nparams, const char *const *values)
{
    const char *v[4 * MAX_EVENTS + MAX_OWN];
    int lengths[4 * MAX_EVENTS + MAX_OWN], formats[4 * MAX_EVENTS + MAX_OWN];
    if (job == NULL || sql == NULL ||
        !event_params(source, events, nevents, nparams, values, v, lengths, formats))
        return CMS_OUTBOX_EINVAL;
    return from_pg(cms_pg_job_sql(job, sql, 4 * nevents + nparams, v, lengths, formats));
}

cms_outbox_err cms_outbox_add_sql(cms_pg_job *job, const char *sql, const char *source,
                                  const cms_bus_event *ev, int nparams, const char *const *values)
{
    return cms_outbox_add_sql_events(job, sql, source, &ev, 1, nparams, values);
}

cms_outbox_err cms_outbox_add_exec_events(cms_pg_job *job, const cms_pg_stmt *stmt,
                                          const char *source, const cms_bus_event *const *events,
                                          int nevents, int nparams, const char *const *values)
{
    const char *v[4 * MAX_EVENTS + MAX_OWN];
    int lengths[4 * MAX_EVENTS + MAX_OWN], formats[4 * MAX_EVENTS + MAX_OWN];
    if (job == NULL || stmt == NULL || cms_pg_stmt_nparams(stmt) != 4 * nevents + nparams ||
        !event_params(source, events, nevents, nparams, values, v, lengths, formats))
        return CMS_OUTBOX_EINVAL;
    return from_pg(cms_pg_job_exec(job, stmt, v, lengths, formats));
}

cms_outbox_err cms_outbox_add_exec(cms_pg_job *job, const cms_pg_stmt *stmt, const char *source,
                                   const cms_bus_event *ev, int nparams, const char *const *values)
{
    return cms_outbox_add_exec_events(job, stmt, source, &ev, 1, nparams, values);
}

cms_outbox_err cms_outbox_add_raw(cms_pg_job *job, const char *source, const char *event_id,
                                  const char *subject, const void *payload, size_t len)
{
    if (job == NULL || source == NULL || event_id == NULL || subject == NULL ||
        (payload == NULL && len) || len > INT32_MAX)
        return CMS_OUTBOX_EINVAL;
    const char *v[] = {source, event_id, subject, payload ? payload : ""};
    int lengths[] = {0, 0, 0, (int)len};
    int formats[] = {0, 0, 0, 1};
    return from_pg(cms_pg_job_sql(job, cms_outbox_sql_insert, 4, v, lengths, formats));
}

cms_outbox_err cms_outbox_add(cms_pg_job *job, const char *source, const cms_bus_event *ev)
{
    if (ev == NULL)
        return CMS_OUTBOX_EINVAL;
    return cms_outbox_add_raw(job, source, ev->id, ev->subject, ev->buf, ev->len);
}

/* ---- the batch in memory ---- */

static void rows_clear(cms_outbox *ob)
{
    for (size_t i = 0; i < ob->nrows; i++) {
        free(ob->rows[i].subject);
        free(ob->rows[i].payload);
    }
    free(ob->rows);
    ob->rows = NULL;
    ob->nrows = ob->next = 0;
}

/* Copies the rows of a read out of the result before it is freed. */
static bool take_rows(cms_outbox *ob, const PGresult *r)
{
    int n = PQntuples(r);
    if (n == 0)
        return true;
    if ((ob->rows = calloc((size_t)n, sizeof *ob->rows)) == NULL)
        return false;
    for (int i = 0; i < n; i++) {
        row *w = &ob->rows[i];
        uint64_t be;
        if (PQgetlength(r, i, 0) != 8 || PQgetlength(r, i, 4) != 8)
            return false;
        memcpy(&be, PQgetvalue(r, i, 0), 8);
        w->seq = (int64_t)be64toh(be);
        memcpy(&be, PQgetvalue(r, i, 4), 8);
        w->age_us = (int64_t)be64toh(be);
        snprintf(w->event_id, sizeof w->event_id, "%.*s", PQgetlength(r, i, 1),
                 PQgetvalue(r, i, 1));
        w->subject = strndup(PQgetvalue(r, i, 2), (size_t)PQgetlength(r, i, 2));
        w->len = (size_t)PQgetlength(r, i, 3);
        w->payload = malloc(w->len ? w->len : 1);
        ob->nrows++;
        if (w->subject == NULL || w->payload == NULL)
            return false;
        memcpy(w->payload, PQgetvalue(r, i, 3), w->len);
    }
    return true;
}

/* ---- the timer and closing ---- */

static void closed_timer(uv_handle_t *h)
{
    cms_outbox *ob = h->data;
    if (ob->closed)
        ob->closed(ob->closed_arg);
}

static void finish_close(cms_outbox *ob)
{
    if (ob->life == RELAY_CLOSED)
        return;
    set_life(ob, RELAY_CLOSED);
    uv_timer_stop(&ob->timer);
    uv_close((uv_handle_t *)&ob->timer, closed_timer);
}

static void timer_fired(uv_timer_t *t)
{
    cms_outbox *ob = t->data;
    if (ob->act == ACT_HELD)
        publish_next(ob);
    else if (ob->act == ACT_IDLE)
        read_batch(ob);
}

/* A failure: no progress now. Draining ends (what is left waits in the
 * table); otherwise what failed is tried again after a backoff: the held
 * row (to), or the read (ACT_IDLE). */
static void failed(cms_outbox *ob, relay_act to)
{
    if (ob->life == RELAY_DRAINING) {
        finish_close(ob);
        return;
    }
    set_act(ob, to);
    uv_timer_start(&ob->timer, timer_fired, cms_backoff_next(&ob->backoff), 0);
}

static void go_idle(cms_outbox *ob)
{
    set_act(ob, ACT_IDLE);
    uv_timer_start(&ob->timer, timer_fired, (uint64_t)ob->o.poll_ms, 0);
}

/* ---- reading ---- */

/* Hands the lease over at once instead of letting it expire (best effort:
 * the job completes while the pool closes, or the lease simply expires). */
static void release_lease(cms_outbox *ob)
{
    cms_pg_job *job = cms_pg_job_new();
    if (job == NULL || cms_lease_add_release(&ob->lease, job) != CMS_PG_OK ||
        cms_pg_submit(ob->pg, &job, NULL, NULL) != CMS_PG_OK)
        cms_pg_job_free(job);
}

static void read_done(void *arg, cms_pg_err err, const cms_pg_result *res)
{
    cms_outbox *ob = arg;
    if (ob->life == RELAY_CLOSED)
        return;
    if (err != CMS_PG_OK) {
        /* the rows stay as they were: the published ones are deleted next time */
        cms_log_warn("outbox read failed", "{s:s, s:s, s:s}", "source", ob->source, "error",
                     cms_pg_strerror(err), "detail", res ? cms_pg_result_message(res) : "");
        failed(ob, ACT_IDLE);
        return;
    }
    /* the delete (if any) committed with the read */
    rows_clear(ob);
    const PGresult *lease = cms_pg_result_get(res, (size_t)ob->ix_take);
    const PGresult *rows = cms_pg_result_get(res, (size_t)ob->ix_read);
    if (ob->ix_count >= 0) {
        const PGresult *c = cms_pg_result_get(res, (size_t)ob->ix_count);
        uint64_t be;
        if (PQntuples(c) == 1 && PQgetlength(c, 0, 0) == 8) {
            memcpy(&be, PQgetvalue(c, 0, 0), 8);
            cms_gauge_set(ob->m_backlog, (double)(int64_t)be64toh(be));
        }
    }
    cms_lease_take_result took = cms_lease_took(&ob->lease, lease);
    cms_gauge_set(ob->m_held, took == CMS_LEASE_NOT_HELD ? 0 : 1);
    if (took == CMS_LEASE_TAKEN || took == CMS_LEASE_TAKEN_OVER)
        cms_log_info("outbox: lease taken: this replica relays", "{s:s, s:s, s:b}", "lease",
                     ob->lease.name, "holder", ob->lease.holder, "taken_over",
                     took == CMS_LEASE_TAKEN_OVER);
    if (took == CMS_LEASE_NOT_HELD) {
        /* another replica's relay publishes this source: stand by */
        cms_gauge_set(ob->m_oldest, 0);
        if (ob->life == RELAY_DRAINING)
            finish_close(ob);
        else
            go_idle(ob);
        return;
    }
    if (!take_rows(ob, rows)) {
        cms_log_error("outbox: could not take rows (out of memory or bad row)", NULL);
        rows_clear(ob);
        failed(ob, ACT_IDLE);
        return;
    }
    cms_gauge_set(ob->m_oldest, ob->nrows ? (double)ob->rows[0].age_us / 1e6 : 0.0);
    if (ob->o.retain_ms > 0 &&
        (ob->chk.needed || cms_nats_reconnects(ob->nats) != ob->chk.reconnects)) {
        /* what the streams lost goes before these rows: read them again after */
        rows_clear(ob);
        check_start(ob);
        return;
    }
    if (ob->nrows == 0) {
        cms_gauge_set(ob->m_backlog, 0);
        if (ob->life == RELAY_DRAINING) {
            release_lease(ob);
            finish_close(ob); /* everything committed so far is published */
        } else if (ob->kicked) {
            set_act(ob, ACT_IDLE);
            read_batch(ob);
        } else {
            go_idle(ob);
        }
        return;
    }
    set_act(ob, ACT_PUBLISHING);
    publish_next(ob);
}

/* The published (and buried) rows of the batch, as a bigint[] literal:
 * "{1,2,3}", digits and commas only. NULL for none, or no memory. */
static char *published_ids(const cms_outbox *ob)
{
    if (ob->next == 0)
        return NULL;
    size_t cap = ob->next * 21 + 3, len = 0;
    char *ids = malloc(cap);
    if (ids == NULL)
        return NULL;
    ids[len++] = '{';
    for (size_t i = 0; i < ob->next; i++)
        len += (size_t)snprintf(ids + len, cap - len, "%s%lld", i ? "," : "",
                                (long long)ob->rows[i].seq);
    snprintf(ids + len, cap - len, "}");
    return ids;
}

/* The stream name an ack gave, interned: NULL when MAX_STREAMS others are. */
static const char *intern_stream(cms_outbox *ob, const char *name)
{
    if (name == NULL || name[0] == '\0')
        return NULL;
    for (size_t i = 0; i < MAX_STREAMS; i++) {
        if (ob->streams[i] == NULL)
            return ob->streams[i] = strdup(name);
        if (strcmp(ob->streams[i], name) == 0)
            return ob->streams[i];
    }
    return NULL;
}

/* With retain_ms, marks what the last batch published (buried rows are
 * gone already): 1 when a statement was added, 0 none, -1 on failure. */
static int add_mark(cms_outbox *ob, cms_pg_job *job)
{
    if (ob->o.retain_ms == 0)
        return 0;
    cms_pgarr seqs, streams, sseqs;
    cms_pgarr_init(&seqs, CMS_PG_OID_INT8);
    cms_pgarr_init(&streams, CMS_PG_OID_TEXT);
    cms_pgarr_init(&sseqs, CMS_PG_OID_INT8);
    int rc = 0;
    for (size_t i = 0; i < ob->next && rc == 0; i++) {
        const row *w = &ob->rows[i];
        if (w->dead != DEAD_NONE)
            continue;
        rc = cms_pgarr_add_int8(&seqs, w->seq) |
             (w->stream ? cms_pgarr_add(&streams, w->stream, strlen(w->stream))
                        : cms_pgarr_add_null(&streams)) |
             cms_pgarr_add_int8(&sseqs, (int64_t)w->stream_seq);
    }
    if (rc == 0 && seqs.n > 0) {
        size_t l0, l1, l2;
        const char *v[] = {(const char *)cms_pgarr_bytes(&seqs, &l0),
                           (const char *)cms_pgarr_bytes(&streams, &l1),
                           (const char *)cms_pgarr_bytes(&sseqs, &l2)};
        int lengths[] = {(int)l0, (int)l1, (int)l2}, formats[] = {1, 1, 1};
        rc = cms_pg_job_sql(job, SQL_MARK, 3, v, lengths, formats) == CMS_PG_OK ? 1 : -1;
    } else if (rc != 0) {
        rc = -1;
    }
    cms_pgarr_free(&seqs);
    cms_pgarr_free(&streams);
    cms_pgarr_free(&sseqs);
    return rc;
}

/* One job: take or renew the lease, delete what the last batch published
 * (before the read, which must not see it), read the next batch, and once
 * a poll count what waits. Called when nothing else is in flight. */
static void read_batch(cms_outbox *ob)
{
    if (ob->life == RELAY_CLOSED)
        return;
    uv_timer_stop(&ob->timer);
    char *ids = ob->o.retain_ms > 0 ? NULL : published_ids(ob);
    cms_pg_job *job = cms_pg_job_new();
    char limit[16];
    snprintf(limit, sizeof limit, "%d", ob->o.batch);
    const char *d[] = {ids};
    const char *rv[] = {ob->source, limit};
    bool count = uv_now(ob->loop) - ob->last_count_ms >= (uint64_t)ob->o.poll_ms;
    int k = 0;
    if (job == NULL || (ob->next > 0 && ids == NULL && ob->o.retain_ms == 0))
        goto fail;
    ob->ix_take = k++;
    if (cms_lease_add_take(&ob->lease, job) != CMS_PG_OK)
        goto fail;
    if (ids != NULL) {
        k++;
        if (cms_pg_job_sql(job, SQL_DELETE, 1, d, NULL, NULL) != CMS_PG_OK)
            goto fail;
    }
    switch (add_mark(ob, job)) {
    case -1:
        goto fail;
    case 1:
        k++;
        break;
    }
    ob->ix_read = k++;
    if (cms_pg_job_sql(job, SQL_READ, 2, rv, NULL, NULL) != CMS_PG_OK)
        goto fail;
    ob->ix_count = -1;
    if (count) {
        ob->ix_count = k++;
        if (cms_pg_job_sql(job, SQL_BACKLOG, 1, rv, NULL, NULL) != CMS_PG_OK)
            goto fail;
        /* kept rows past the window: a bounded delete a poll */
        char retain[24];
        snprintf(retain, sizeof retain, "%lld", (long long)ob->o.retain_ms);
        const char *pv[] = {ob->source, retain};
        k++;
        if (cms_pg_job_sql(job, SQL_PRUNE, 2, pv, NULL, NULL) != CMS_PG_OK)
            goto fail;
    }
    free(ids);
    ids = NULL;
    cms_pg_job_binary_results(job);
    cms_pg_err err = cms_pg_submit(ob->pg, &job, read_done, ob);
    if (err != CMS_PG_OK) {
        cms_log_warn("outbox read not submitted", "{s:s}", "error", cms_pg_strerror(err));
        goto fail;
    }
    if (count)
        ob->last_count_ms = uv_now(ob->loop);
    set_act(ob, ACT_READING);
    ob->kicked = false;
    return;
fail:
    cms_pg_job_free(job);
    free(ids);
    failed(ob, ACT_IDLE);
}

/* ---- the check of what the streams hold ---- */

static void kept_free(kept **k, size_t *n)
{
    for (size_t i = 0; *k != NULL && i < *n; i++)
        free((*k)[i].stream);
    free(*k);
    *k = NULL;
    *n = 0;
}

static void check_clear(check *c)
{
    kept_free(&c->newest, &c->nnewest);
    kept_free(&c->spread, &c->nspread);
    free(c->lost);
    c->lost = NULL;
}

/* Kept rows (stream, seq, stream_seq, event_id) out of a binary result. */
static bool take_kept(const PGresult *r, kept **out, size_t *nout)
{
    int n = PQntuples(r);
    *out = NULL;
    *nout = 0;
    if (n == 0)
        return true;
    kept *k = calloc((size_t)n, sizeof *k);
    if (k == NULL)
        return false;
    *out = k;
    for (int i = 0; i < n; i++) {
        uint64_t seq, sseq;
        if (PQgetlength(r, i, 1) != 8 || PQgetlength(r, i, 2) != 8 ||
            (k[i].stream = strndup(PQgetvalue(r, i, 0), (size_t)PQgetlength(r, i, 0))) == NULL)
            return false;
        ++*nout;
        memcpy(&seq, PQgetvalue(r, i, 1), 8);
        memcpy(&sseq, PQgetvalue(r, i, 2), 8);
        k[i].seq = (int64_t)be64toh(seq);
        k[i].stream_seq = be64toh(sseq);
        snprintf(k[i].event_id, sizeof k[i].event_id, "%.*s", PQgetlength(r, i, 3),
                 PQgetvalue(r, i, 3));
    }
    return true;
}

/* The check could not go on: it starts over after a backoff, up to
 * CHECK_TRIES times in a row; then the relay goes on unchecked (until the
 * next reconnection) rather than stop publishing, and says so. */
static void check_failed(cms_outbox *ob, const char *what, const char *detail)
{
    check *c = &ob->chk;
    check_clear(c);
    if (++c->failures < CHECK_TRIES) {
        cms_log_warn("outbox: checking the streams failed; trying again", "{s:s, s:s, s:s}",
                     "source", ob->source, "step", what, "detail", detail ? detail : "");
    } else {
        cms_log_error("outbox: cannot check that the streams hold what they acknowledged; "
                      "publishing unchecked (may the service read its streams by sequence, "
                      "$JS.API.STREAM.MSG.GET.<stream>?)",
                      "{s:s, s:s, s:s, s:i}", "source", ob->source, "step", what, "detail",
                      detail ? detail : "", "tries", c->failures);
        c->needed = false;
        c->failures = 0;
    }
    failed(ob, ACT_IDLE);
}

/* A query of the check, its results binary; false (and the check failed)
 * if it could not be sent. */
static bool check_query(cms_outbox *ob, const char *step, const char *sql, int n,
                        const char *const *v,
                        void (*done)(void *, cms_pg_err, const cms_pg_result *))
{
    cms_pg_job *job = cms_pg_job_new();
    if (job == NULL || cms_pg_job_sql(job, sql, n, v, NULL, NULL) != CMS_PG_OK) {
        cms_pg_job_free(job);
        check_failed(ob, step, "out of memory");
        return false;
    }
    cms_pg_job_binary_results(job);
    if (cms_pg_submit(ob->pg, &job, done, ob) != CMS_PG_OK) {
        check_failed(ob, step, "not submitted");
        return false;
    }
    return true;
}

/* Kept rows a check query read, into *out; false (and the check failed)
 * on an error. */
static bool check_kept(cms_outbox *ob, cms_pg_err err, const cms_pg_result *res, kept **out,
                       size_t *nout)
{
    if (err != CMS_PG_OK) {
        check_failed(ob, "read kept rows", res ? cms_pg_result_message(res) : "");
        return false;
    }
    if (!take_kept(cms_pg_result_get(res, 0), out, nout)) {
        check_failed(ob, "read kept rows", "out of memory");
        return false;
    }
    return true;
}

static void check_finish(cms_outbox *ob)
{
    check *c = &ob->chk;
    c->needed = false;
    c->failures = 0;
    if (c->republished > 0)
        cms_log_warn("outbox: a stream lost events it had acknowledged; publishing them again",
                     "{s:s, s:I}", "source", ob->source, "rows", (json_int_t)c->republished);
    else
        cms_log_info("outbox: the streams hold every event acknowledged and kept", "{s:s, s:i}",
                     "source", ob->source, "streams", (int)c->nnewest);
    check_clear(c);
    cms_backoff_reset(&ob->backoff);
    set_act(ob, ACT_IDLE);
    read_batch(ob);
}

static bool check_probe(cms_outbox *ob, const kept *k, size_t n,
                        void (*done)(void *, cms_nats_err, const bool *))
{
    cms_nats_probe pr[CHECK_SPREAD > MAX_STREAMS ? CHECK_SPREAD : MAX_STREAMS];
    if (n > sizeof pr / sizeof pr[0])
        n = sizeof pr / sizeof pr[0];
    for (size_t i = 0; i < n; i++)
        pr[i] = (cms_nats_probe){k[i].stream, k[i].stream_seq, k[i].event_id};
    return cms_nats_probe_stream(ob->nats, pr, n, done, ob) == CMS_NATS_OK;
}

static void search_stream(cms_outbox *ob);

static void unmarked(void *arg, cms_pg_err err, const cms_pg_result *res)
{
    cms_outbox *ob = arg;
    if (ob->life == RELAY_CLOSED)
        return;
    if (err != CMS_PG_OK) {
        check_failed(ob, "unmark", res ? cms_pg_result_message(res) : cms_pg_strerror(err));
        return;
    }
    const PGresult *r = cms_pg_result_get(res, 0);
    uint64_t be = 0;
    if (PQntuples(r) == 1 && PQgetlength(r, 0, 0) == 8)
        memcpy(&be, PQgetvalue(r, 0, 0), 8);
    uint64_t n = be64toh(be);
    cms_log_warn("outbox: stream lost acknowledged events", "{s:s, s:s, s:I, s:I}", "source",
                 ob->source, "stream", ob->chk.newest[ob->chk.cur].stream, "after_row",
                 (json_int_t)ob->chk.lo, "rows", (json_int_t)n);
    ob->chk.republished += n;
    cms_counter_add(ob->m_republished, n);
    ob->chk.cur++;
    search_stream(ob);
}

/* The stream holds the kept rows up to lo and none after: mark those
 * unpublished. */
static void unmark_after(cms_outbox *ob)
{
    check *c = &ob->chk;
    char lo[24];
    snprintf(lo, sizeof lo, "%lld", (long long)c->lo);
    const char *v[] = {ob->source, c->newest[c->cur].stream, lo};
    (void)check_query(ob, "unmark", SQL_UNMARK, 3, v, unmarked);
}

static void spread_read(cms_outbox *ob);

/* One round's answers: the first probe the stream lost narrows the search
 * to the rows between the probe before it and it. */
static void spread_probed(void *arg, cms_nats_err err, const bool *present)
{
    cms_outbox *ob = arg;
    if (ob->life == RELAY_CLOSED)
        return;
    check *c = &ob->chk;
    if (err != CMS_NATS_OK) {
        check_failed(ob, "probe", cms_nats_strerror(err));
        return;
    }
    size_t i = 0;
    while (i < c->nspread && present[i])
        i++;
    if (i == c->nspread) {
        c->lo = c->spread[i - 1].seq; /* the newest row in doubt is there: none after is */
        c->hi = c->lo;
    } else {
        if (i > 0)
            c->lo = c->spread[i - 1].seq;
        c->hi = c->spread[i].seq - 1;
    }
    kept_free(&c->spread, &c->nspread);
    if (c->hi <= c->lo)
        unmark_after(ob);
    else
        spread_read(ob);
}

static void spread_done(void *arg, cms_pg_err err, const cms_pg_result *res)
{
    cms_outbox *ob = arg;
    if (ob->life == RELAY_CLOSED)
        return;
    check *c = &ob->chk;
    if (!check_kept(ob, err, res, &c->spread, &c->nspread))
        return;
    if (c->nspread == 0) {
        c->hi = c->lo; /* no kept row in (lo, hi]: the stream holds up to lo */
        unmark_after(ob);
    } else if (!check_probe(ob, c->spread, c->nspread, spread_probed)) {
        check_failed(ob, "probe", "not started");
    }
}

/* Up to CHECK_SPREAD kept rows spread over (lo, hi], to probe. */
static void spread_read(cms_outbox *ob)
{
    check *c = &ob->chk;
    char lo[24], hi[24], parts[8];
    snprintf(lo, sizeof lo, "%lld", (long long)c->lo);
    snprintf(hi, sizeof hi, "%lld", (long long)c->hi);
    snprintf(parts, sizeof parts, "%d", CHECK_SPREAD);
    const char *v[] = {ob->source, c->newest[c->cur].stream, lo, hi, parts};
    (void)check_query(ob, "read kept rows", SQL_SPREAD, 5, v, spread_done);
}

/* The next stream that lost its newest kept row, searched for the last
 * one it holds; when none is left, the check is done. */
static void search_stream(cms_outbox *ob)
{
    check *c = &ob->chk;
    while (c->cur < c->nnewest && !c->lost[c->cur])
        c->cur++;
    if (c->cur == c->nnewest) {
        check_finish(ob);
        return;
    }
    c->lo = 0;
    c->hi = c->newest[c->cur].seq - 1;
    if (c->hi <= c->lo)
        unmark_after(ob);
    else
        spread_read(ob);
}

static void newest_probed(void *arg, cms_nats_err err, const bool *present)
{
    cms_outbox *ob = arg;
    if (ob->life == RELAY_CLOSED)
        return;
    check *c = &ob->chk;
    if (err != CMS_NATS_OK) {
        check_failed(ob, "probe", cms_nats_strerror(err));
        return;
    }
    if ((c->lost = calloc(c->nnewest, sizeof *c->lost)) == NULL) {
        check_failed(ob, "probe", "out of memory");
        return;
    }
    for (size_t i = 0; i < c->nnewest; i++)
        c->lost[i] = !present[i];
    c->cur = 0;
    search_stream(ob);
}

static void newest_done(void *arg, cms_pg_err err, const cms_pg_result *res)
{
    cms_outbox *ob = arg;
    if (ob->life == RELAY_CLOSED)
        return;
    check *c = &ob->chk;
    if (!check_kept(ob, err, res, &c->newest, &c->nnewest))
        return;
    if (c->nnewest > MAX_STREAMS)
        c->nnewest = MAX_STREAMS; /* (kept rows name at most MAX_STREAMS streams) */
    if (c->nnewest == 0)
        check_finish(ob);
    else if (!check_probe(ob, c->newest, c->nnewest, newest_probed))
        check_failed(ob, "probe", "not started");
}

/* Starts the check (nothing else in flight): the newest kept row per stream. */
static void check_start(cms_outbox *ob)
{
    check *c = &ob->chk;
    check_clear(c);
    c->needed = true;
    c->reconnects = cms_nats_reconnects(ob->nats);
    c->republished = 0;
    set_act(ob, ACT_CHECKING);
    const char *v[] = {ob->source};
    (void)check_query(ob, "read kept rows", SQL_NEWEST, 1, v, newest_done);
}

/* ---- burying a row that can never be published ---- */

static void buried(void *arg, cms_pg_err err, const cms_pg_result *res)
{
    cms_outbox *ob = arg;
    if (ob->life == RELAY_CLOSED)
        return;
    row *w = &ob->rows[ob->next];
    if (err != CMS_PG_OK) {
        cms_log_warn("outbox row not moved to outbox_dead; retrying", "{s:s, s:s, s:s}", "source",
                     ob->source, "error", cms_pg_strerror(err), "detail",
                     res ? cms_pg_result_message(res) : "");
        failed(ob, ACT_HELD);
        return;
    }
    cms_counter_add(ob->m_dead[w->dead], 1);
    cms_log_error("outbox row can never be published: moved to outbox_dead",
                  "{s:s, s:s, s:s, s:s, s:I}", "source", ob->source, "event_id", w->event_id,
                  "subject", w->subject, "reason", dead_names[w->dead], "bytes",
                  (json_int_t)w->len);
    cms_backoff_reset(&ob->backoff);
    ob->next++;
    publish_next(ob);
}

static void bury(cms_outbox *ob, row *w)
{
    char seq[24];
    snprintf(seq, sizeof seq, "%lld", (long long)w->seq);
    const char *v[] = {seq, dead_names[w->dead]};
    cms_pg_job *job = cms_pg_job_new();
    if (job == NULL || cms_pg_job_sql(job, SQL_BURY, 2, v, NULL, NULL) != CMS_PG_OK) {
        cms_pg_job_free(job);
        failed(ob, ACT_HELD);
        return;
    }
    set_act(ob, ACT_BURYING);
    if (cms_pg_submit(ob->pg, &job, buried, ob) != CMS_PG_OK)
        failed(ob, ACT_HELD);
}

/* ---- publishing ---- */

/* Whether a failed publish can never succeed. */
static dead_reason permanent(cms_nats_err err)
{
    switch (err) {
    case CMS_NATS_ETOOBIG:
        return DEAD_TOO_LARGE;
    case CMS_NATS_EINVAL:
        return DEAD_REFUSED;
    case CMS_NATS_OK:
    case CMS_NATS_EBUSY:
    case CMS_NATS_ECLOSED:
    case CMS_NATS_EIO:
    case CMS_NATS_ETIMEOUT:
    case CMS_NATS_ENOMEM:
    case CMS_NATS_ENOSTREAM:
        break;
    }
    return DEAD_NONE;
}

/* A duplicate is in the stream already, at the first copy's sequence: it
 * counts as published all the same. */
static void published(void *arg, cms_nats_err err, const cms_nats_pub_ack *ack)
{
    cms_outbox *ob = arg;
    if (ob->life == RELAY_CLOSED)
        return;
    row *w = &ob->rows[ob->next];
    if (err == CMS_NATS_OK) {
        w->stream = intern_stream(ob, ack->stream);
        w->stream_seq = ack->seq;
        ob->published++;
        cms_counter_add(ob->m_published, 1);
        cms_backoff_reset(&ob->backoff);
        ob->next++;
        publish_next(ob);
        return;
    }
    cms_counter_add(ob->m_failed, 1);
    w->dead = permanent(err);
    cms_log_warn("outbox publish failed", "{s:s, s:s, s:s, s:s}", "event_id", w->event_id,
                 "subject", w->subject, "error", cms_nats_strerror(err), "then",
                 w->dead ? "moved to outbox_dead" : "retried before anything behind it");
    if (w->dead)
        bury(ob, w);
    else
        failed(ob, ACT_HELD);
}

/* The next row of the batch, alone and in order: published, or buried if
 * it can never be; once the batch is through, the next read. */
static void publish_next(cms_outbox *ob)
{
    if (ob->next == ob->nrows) {
        set_act(ob, ACT_IDLE);
        read_batch(ob); /* deletes what was published */
        return;
    }
    if (ob->o.retain_ms > 0 && cms_nats_reconnects(ob->nats) != ob->chk.reconnects) {
        /* the stream may have lost what was acked before: mark what this
         * batch published, and check before anything more goes out */
        set_act(ob, ACT_IDLE);
        read_batch(ob);
        return;
    }
    row *w = &ob->rows[ob->next];
    if (w->dead == DEAD_NONE &&
        w->len + strlen(w->subject) + MSG_ID_HEADER_BYTES > cms_nats_max_payload(ob->nats))
        w->dead = DEAD_TOO_LARGE;
    if (w->dead) {
        bury(ob, w);
        return;
    }
    cms_nats_err err = cms_nats_js_publish(ob->nats, w->subject, w->event_id, NULL, w->payload,
                                           w->len, published, ob);
    if (err == CMS_NATS_OK) {
        set_act(ob, ACT_PUBLISHING);
        return;
    }
    if (err == CMS_NATS_EBUSY) {
        /* the window is full of other publishers' messages: look again shortly */
        set_act(ob, ACT_HELD);
        uv_timer_start(&ob->timer, timer_fired, ROOM_RETRY_MS, 0);
        return;
    }
    static const cms_nats_pub_ack none = {.stream = ""};
    published(ob, err, &none); /* refused at once: the same as a failed answer */
}

/* ---- life ---- */

void cms_outbox_kick(cms_outbox *ob)
{
    if (ob == NULL)
        return;
    ob->kicked = true;
    if (ob->act == ACT_IDLE)
        read_batch(ob);
}

uint64_t cms_outbox_published(const cms_outbox *ob)
{
    return ob->published;
}

cms_outbox_err cms_outbox_create(uv_loop_t *loop, cms_pg *pg, cms_nats *nats,
                                 const cms_outbox_options *o, cms_outbox **out)
{
    if (loop == NULL || pg == NULL || nats == NULL || o == NULL || o->source == NULL || out == NULL)
        return CMS_OUTBOX_EINVAL;
    cms_outbox *ob = calloc(1, sizeof *ob); /* RELAY_RUNNING, ACT_IDLE */
    if (ob == NULL || (ob->source = strdup(o->source)) == NULL) {
        free(ob);
        return CMS_OUTBOX_ENOMEM;
    }
    ob->loop = loop;
    ob->pg = pg;
    ob->nats = nats;
    ob->o = *o;
    ob->o.source = ob->source;
    if (ob->o.batch <= 0)
        ob->o.batch = DEFAULT_BATCH;
    if (ob->o.poll_ms <= 0)
        ob->o.poll_ms = DEFAULT_POLL_MS;
    if (ob->o.backoff_max_ms <= 0)
        ob->o.backoff_max_ms = DEFAULT_BACKOFF_MAX_MS;
    if (ob->o.retain_ms < 0)
        ob->o.retain_ms = 0;
    ob->chk.needed = ob->o.retain_ms > 0;
    ob->chk.reconnects = cms_nats_reconnects(nats);
    char name[CMS_LEASE_NAME_MAX];
    int64_t lease_ms = 10 * ob->o.poll_ms < 10000 ? 10000 : 10 * ob->o.poll_ms;
    snprintf(name, sizeof name, "outbox:%s", ob->source);
    if (!cms_lease_init(&ob->lease, name, lease_ms)) {
        free(ob->source);
        free(ob);
        return CMS_OUTBOX_EINVAL;
    }
    cms_backoff_init(&ob->backoff, BACKOFF_MIN_MS, (uint64_t)ob->o.backoff_max_ms);
    uv_timer_init(loop, &ob->timer);
    ob->timer.data = ob;
    cms_metrics *m = cms_metrics_default();
    ob->m_published = cms_metrics_counter(m, "cms_outbox_published_total",
                                          "Outbox rows acknowledged by the stream", NULL);
    ob->m_failed = cms_metrics_counter(m, "cms_outbox_publish_failures_total",
                                       "Outbox publishes that failed", NULL);
    ob->m_republished =
        cms_metrics_counter(m, "cms_outbox_republished_total",
                            "Outbox rows published again because their stream had lost them", NULL);
    for (int r = 1; r < NDEAD; r++) {
        char labels[64];
        snprintf(labels, sizeof labels, "reason=\"%s\"", dead_names[r]);
        ob->m_dead[r] = cms_metrics_counter(m, "cms_outbox_dead_rows_total",
                                            "Outbox rows that can never be published, moved "
                                            "to outbox_dead",
                                            labels);
    }
    ob->m_backlog = cms_metrics_gauge(m, "cms_outbox_backlog_rows",
                                      "Outbox rows of this source waiting, at the last read", NULL);
    ob->m_oldest =
        cms_metrics_gauge(m, "cms_outbox_oldest_age_seconds",
                          "Age of the oldest waiting outbox row, at the last read", NULL);
    ob->m_held =
        cms_metrics_gauge(m, "cms_outbox_lease_held",
                          "Whether this replica holds the outbox's lease and relays it (1) "
                          "or another does (0)",
                          NULL);
    read_batch(ob);
    *out = ob;
    return CMS_OUTBOX_OK;
}

void cms_outbox_close(cms_outbox *ob, void (*closed)(void *arg), void *arg)
{
    if (ob == NULL || ob->life != RELAY_RUNNING)
        return;
    ob->closed = closed;
    ob->closed_arg = arg;
    set_life(ob, RELAY_DRAINING);
    /* idle: rows committed just now, or an empty read that closes; held:
     * try the held row now (a failure then ends the drain) */
    if (ob->act == ACT_IDLE)
        read_batch(ob);
    else if (ob->act == ACT_HELD)
        publish_next(ob);
}

void cms_outbox_abort(cms_outbox *ob)
{
    if (ob != NULL)
        finish_close(ob);
}

void cms_outbox_destroy(cms_outbox *ob)
{
    if (ob == NULL)
        return;
    rows_clear(ob);
    check_clear(&ob->chk);
    for (size_t i = 0; i < MAX_STREAMS; i++)
        free(ob->streams[i]);
    free(ob->source);
    free(ob);
}
