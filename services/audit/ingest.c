/* Audit ingestion pipeline; see ingest.h.
 *
 * Where a message can be, between delivery and ack (each holds it once):
 *   cur batch      accepted, waiting for its batch to close
 *   a span         in a closed batch, queued or in flight to PostgreSQL
 *   held           its actor is unknown: waiting for a look-up
 *   dead           refused: its dead letter is queued or in flight
 * A span is a range of one batch sent as one statement; a failed span is
 * replaced by its two halves. A batch is freed when its last span is done. */
#include "ingest.h"

#include "actors.h"
#include "backoff.h"
#include "bus.h"
#include "json.h"
#include "log.h"
#include "metrics.h"
#include "pgarray.h"
#include "validate.h"

#include <stdlib.h>
#include <string.h>

#define DEFAULT_BATCH 1000
#define DEFAULT_AGE_MS 5
#define DEFAULT_INFLIGHT 2
#define DEFAULT_TRIES 3
#define ACTOR_SLOTS (1u << 16)
#define RETRY_MIN_MS 50
#define RETRY_MAX_MS 2000
#define NCOLS 7

/* A plain insert: a unique index checked by ON CONFLICT costs PostgreSQL a
 * speculative insertion per row (about a fifth of the insert). A batch that
 * meets rows already stored (a redelivery, a commit whose answer was lost)
 * fails whole on the primary key and is sent again as SQL_INSERT_SKIP. */
#define SQL_INSERT_ROWS                                                                            \
    "INSERT INTO audit_logs (id, event_type, resource_type, resource_id, actor_id, details, "      \
    "created_at) SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::uuid[], "            \
    "$5::uuid[], $6::jsonb[], $7::timestamptz[])"
static const char SQL_INSERT[] = SQL_INSERT_ROWS;
static const char SQL_INSERT_SKIP[] = SQL_INSERT_ROWS " ON CONFLICT (id) DO NOTHING";
static const Oid INSERT_TYPES[NCOLS] = {CMS_PG_OID_UUID_ARRAY,       CMS_PG_OID_TEXT_ARRAY,
                                        CMS_PG_OID_TEXT_ARRAY,       CMS_PG_OID_UUID_ARRAY,
                                        CMS_PG_OID_UUID_ARRAY,       CMS_PG_OID_JSONB_ARRAY,
                                        CMS_PG_OID_TIMESTAMPTZ_ARRAY};
static const char SQL_LOOKUP[] = "SELECT id FROM identities WHERE id = ANY($1::uuid[])";
static const Oid LOOKUP_TYPES[1] = {CMS_PG_OID_UUID_ARRAY};

typedef struct row {
    cms_nats_msg *msg; /* NULL once acked or handed on */
    audit_event ev;
    size_t off, len; /* details in the batch's arena */
} row;

typedef struct batch {
    row *rows;
    size_t n, cap;
    char *arena;
    size_t alen, acap;
    int spans; /* spans of this batch not yet done */
} batch;

typedef struct span {
    struct audit_ingest *in;
    batch *b;
    size_t lo, hi;
    uint64_t sent_ns;
    bool skip; /* sent as SQL_INSERT_SKIP: some of its rows are stored already */
    struct span *next;
} span;

typedef struct held {
    cms_nats_msg *msg;
    audit_event ev;
    char *details;
    size_t len;
    struct held *next;
} held;

typedef struct dead {
    struct audit_ingest *in;
    cms_nats_msg *msg;
    audit_reason reason;
    struct dead *next;
} dead;

/* CLOSED: the timers are closing and nothing new is sent; completions that
 * still arrive (the pool and NATS finish what they hold) settle at once. */
typedef enum {
    INGEST_NEW,
    INGEST_RUNNING,
    INGEST_DRAINING,
    INGEST_DRAINED,
    INGEST_CLOSED
} ingest_state;

struct audit_ingest {
    uv_loop_t *loop;
    cms_pg *pg;
    cms_nats *nats;
    audit_options o;
    char durable[64];
    char subject[128];
    ingest_state state;
    const cms_pg_stmt *insert, *insert_skip, *lookup;
    cms_nats_consumer *consumer;
    bool paused; /* the database is away: not pulling */
    audit_actors *actors;
    cms_json_buf details;
    cms_pgarr cols[NCOLS];
    batch *cur;
    uv_timer_t age;
    bool aged;                /* cur is past its age, waiting for a free write slot */
    span *queue, *queue_tail; /* closed spans waiting to be sent */
    int inflight;
    uv_timer_t retry;
    int failures;
    held *held;      /* waiting for the next look-up */
    held *looking;   /* in the look-up under way */
    size_t nheld;    /* events in held and looking */
    dead *dead_wait; /* dead letters to (re)publish */
    int dead_inflight;
    void (*drained)(void *arg);
    void *drained_arg;
    int closing_handles;
    void (*closed)(void *arg);
    void *closed_arg;
    cms_counter *m_events, *m_batches, *m_splits, *m_skips, *m_dead[AUDIT_NREASONS];
    cms_histogram *m_batch_size, *m_insert_seconds;
    cms_gauge *m_pending, *m_held;
};

static void pump(audit_ingest *in);
static void dead_letter(audit_ingest *in, cms_nats_msg *msg, audit_reason reason);
static void lookup(audit_ingest *in);
static void maybe_drained(audit_ingest *in);
static void retry_fired(uv_timer_t *t);

static const char *state_name(ingest_state s)
{
    switch (s) {
    case INGEST_NEW:
        return "new";
    case INGEST_RUNNING:
        return "running";
    case INGEST_DRAINING:
        return "draining";
    case INGEST_DRAINED:
        return "drained";
    case INGEST_CLOSED:
        return "closed";
    }
    return "?";
}

static void set_state(audit_ingest *in, ingest_state to)
{
    if (to <= in->state)
        return; /* states only move forward */
    cms_log_info("audit ingest state", "{s:s, s:s}", "from", state_name(in->state), "to",
                 state_name(to));
    in->state = to;
}

/* An ack or nak that cannot be sent (closing, no memory) leaves the message
 * to the server's redelivery after AckWait: nothing is lost, so it is only
 * counted. */
static void settle(cms_nats_msg *m, bool ack)
{
    cms_nats_err e = ack ? cms_nats_msg_ack(m) : cms_nats_msg_nak(m, 0);
    if (e != CMS_NATS_OK)
        cms_log_debug("audit: settle not sent; the server redelivers", "{s:s, s:s}", "what",
                      ack ? "ack" : "nak", "error", cms_nats_strerror(e));
    cms_nats_msg_destroy(m);
}

/* ---- batches ---- */

static batch *batch_new(void)
{
    return calloc(1, sizeof(batch));
}

static void batch_free(batch *b)
{
    if (b == NULL)
        return;
    for (size_t i = 0; i < b->n; i++)
        if (b->rows[i].msg)
            settle(b->rows[i].msg, false);
    free(b->rows);
    free(b->arena);
    free(b);
}

static bool batch_add(batch *b, cms_nats_msg *msg, const audit_event *ev, const char *details,
                      size_t len)
{
    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 256;
        row *r = realloc(b->rows, cap * sizeof *r);
        if (r == NULL)
            return false;
        b->rows = r;
        b->cap = cap;
    }
    if (b->alen + len > b->acap) {
        size_t cap = b->acap ? b->acap : 64 * 1024;
        while (cap < b->alen + len)
            cap *= 2;
        char *a = realloc(b->arena, cap);
        if (a == NULL)
            return false;
        b->arena = a;
        b->acap = cap;
    }
    memcpy(b->arena + b->alen, details, len);
    b->rows[b->n++] = (row){.msg = msg, .ev = *ev, .off = b->alen, .len = len};
    b->alen += len;
    return true;
}

static void enqueue(audit_ingest *in, span *s, bool front)
{
    s->next = NULL;
    if (front) {
        s->next = in->queue;
        in->queue = s;
        if (in->queue_tail == NULL)
            in->queue_tail = s;
    } else {
        if (in->queue_tail)
            in->queue_tail->next = s;
        else
            in->queue = s;
        in->queue_tail = s;
    }
}

static span *span_new(audit_ingest *in, batch *b, size_t lo, size_t hi)
{
    span *s = calloc(1, sizeof *s);
    if (s == NULL)
        return NULL;
    *s = (span){.in = in, .b = b, .lo = lo, .hi = hi};
    b->spans++;
    return s;
}

/* Closes the filling batch and queues it whole. */
static void seal(audit_ingest *in)
{
    uv_timer_stop(&in->age);
    in->aged = false;
    batch *b = in->cur;
    if (b == NULL || b->n == 0)
        return;
    in->cur = NULL;
    span *s = span_new(in, b, 0, b->n);
    if (s == NULL) {
        batch_free(b); /* nak'd: redelivered */
        return;
    }
    enqueue(in, s, false);
    pump(in);
}

/* A batch closes by age only while a write slot is free: at low load that
 * bounds an event's wait, and under load (every slot busy) the batch goes on
 * filling, since closing it early would only queue a smaller statement. */
static void age_fired(uv_timer_t *t)
{
    audit_ingest *in = t->data;
    if (in->inflight < in->o.max_inflight)
        seal(in);
    else
        in->aged = true;
}

/* An accepted event joins the filling batch. */
static void accept_row(audit_ingest *in, cms_nats_msg *msg, const audit_event *ev,
                       const char *details, size_t len)
{
    if (in->cur == NULL && (in->cur = batch_new()) == NULL) {
        settle(msg, false);
        return;
    }
    if (!batch_add(in->cur, msg, ev, details, len)) {
        settle(msg, false);
        return;
    }
    if (in->cur->n == 1)
        uv_timer_start(&in->age, age_fired, (uint64_t)in->o.batch_age_ms, 0);
    if (in->cur->n >= (size_t)in->o.batch_size)
        seal(in);
}

/* ---- sending spans ---- */

static void span_finish(audit_ingest *in, span *s)
{
    batch *b = s->b;
    free(s);
    if (--b->spans == 0 && b != in->cur)
        batch_free(b);
}

static void schedule_retry(audit_ingest *in)
{
    if (uv_is_active((uv_handle_t *)&in->retry))
        return;
    uint64_t d = cms_backoff_delay(RETRY_MIN_MS, RETRY_MAX_MS, (unsigned)in->failures);
    uv_timer_start(&in->retry, retry_fired, d, 0);
}

static void pause_pulling(audit_ingest *in, bool paused)
{
    if (in->paused == paused || in->consumer == NULL)
        return;
    in->paused = paused;
    cms_nats_consumer_pause(in->consumer, paused);
    cms_log(paused ? CMS_LOG_WARN : CMS_LOG_INFO,
            paused ? "audit: database away, not pulling" : "audit: database back, pulling", NULL);
}

/* Only a row's own data can make the server refuse it for good: data
 * exceptions (22) and integrity violations (23). Anything else says nothing
 * about the rows. */
static bool is_data_error(const char *sqlstate)
{
    return strncmp(sqlstate, "22", 2) == 0 || strncmp(sqlstate, "23", 2) == 0;
}

static void span_done(void *arg, cms_pg_err err, const cms_pg_result *res)
{
    span *s = arg;
    audit_ingest *in = s->in;
    batch *b = s->b;
    in->inflight--;
    size_t n = s->hi - s->lo;
    if (in->state == INGEST_CLOSED) {
        for (size_t i = s->lo; i < s->hi; i++) {
            if (b->rows[i].msg)
                settle(b->rows[i].msg, err == CMS_PG_OK);
            b->rows[i].msg = NULL;
        }
        span_finish(in, s);
        return;
    }
    if (err == CMS_PG_OK) {
        in->failures = 0;
        for (size_t i = s->lo; i < s->hi; i++) {
            settle(b->rows[i].msg, true);
            b->rows[i].msg = NULL;
        }
        cms_counter_add(in->m_events, n);
        cms_counter_add(in->m_batches, 1);
        cms_histogram_observe(in->m_batch_size, (double)n);
        cms_histogram_observe(in->m_insert_seconds, (double)(uv_hrtime() - s->sent_ns) / 1e9);
        span_finish(in, s);
    } else if (err == CMS_PG_ESQL && !s->skip &&
               strcmp(cms_pg_result_sqlstate(res), "23505") == 0) {
        /* rows stored before (redelivered events): again, skipping those */
        cms_counter_add(in->m_skips, 1);
        s->skip = true;
        enqueue(in, s, true);
    } else if (err == CMS_PG_ESQL && is_data_error(cms_pg_result_sqlstate(res))) {
        const char *state = cms_pg_result_sqlstate(res);
        cms_log_warn("audit batch refused", "{s:i, s:s, s:s}", "rows", (int)n, "sqlstate", state,
                     "error", cms_pg_result_message(res));
        if (n == 1) {
            /* the bad row, isolated: a vanished actor, or data the server refuses */
            audit_reason why =
                strcmp(state, "23503") == 0 ? AUDIT_UNKNOWN_ACTOR : AUDIT_INSERT_FAILED;
            dead_letter(in, b->rows[s->lo].msg, why);
            b->rows[s->lo].msg = NULL;
            span_finish(in, s);
        } else {
            size_t mid = s->lo + n / 2;
            span *l = span_new(in, b, s->lo, mid), *r = span_new(in, b, mid, s->hi);
            cms_counter_add(in->m_splits, 1);
            if (l)
                l->skip = s->skip;
            if (r)
                r->skip = s->skip;
            if (r)
                enqueue(in, r, true);
            if (l)
                enqueue(in, l, true);
            if (l == NULL || r == NULL)
                cms_log_error("audit: out of memory splitting a batch", NULL);
            span_finish(in, s);
        }
    } else if (err == CMS_PG_ESQL) {
        /* the server could not do it now (lock or statement timeout, deadlock,
         * shutdown, a missing table): the rows are fine, so try them again */
        cms_log_warn("audit batch failed, will retry", "{s:i, s:s, s:s}", "rows", (int)n,
                     "sqlstate", cms_pg_result_sqlstate(res), "error", cms_pg_result_message(res));
        if (in->failures < 30)
            in->failures++;
        enqueue(in, s, true);
        schedule_retry(in);
        return; /* nothing is sent before the retry */
    } else {
        /* never ran (no connection in time, queue full, closing): send again later */
        cms_log_warn("audit batch not written, will retry", "{s:i, s:s}", "rows", (int)n, "error",
                     cms_pg_strerror(err));
        if (in->failures < 30)
            in->failures++;
        enqueue(in, s, true);
        pause_pulling(in, true);
        schedule_retry(in);
    }
    pump(in);
    maybe_drained(in);
}

static bool encode(audit_ingest *in, const batch *b, size_t lo, size_t hi)
{
    for (int c = 0; c < NCOLS; c++)
        cms_pgarr_reset(&in->cols[c]);
    int bad = 0;
    for (size_t i = lo; i < hi; i++) {
        const row *r = &b->rows[i];
        bad |= cms_pgarr_add(&in->cols[0], r->ev.id, 16);
        bad |= cms_pgarr_add(&in->cols[1], r->ev.event_type, r->ev.event_type_len);
        bad |= cms_pgarr_add(&in->cols[2], r->ev.resource_type, r->ev.resource_type_len);
        bad |= cms_pgarr_add(&in->cols[3], r->ev.resource_id, 16);
        bad |= cms_pgarr_add(&in->cols[4], r->ev.actor_id, 16);
        bad |= cms_pgarr_add_jsonb(&in->cols[5], b->arena + r->off, r->len);
        bad |= cms_pgarr_add_timestamptz_unix_us(&in->cols[6], r->ev.occurred_us);
    }
    return bad == 0;
}

static bool send_span(audit_ingest *in, span *s)
{
    if (!encode(in, s->b, s->lo, s->hi))
        return false;
    const char *values[NCOLS];
    int lengths[NCOLS], formats[NCOLS];
    for (int c = 0; c < NCOLS; c++) {
        size_t len;
        values[c] = (const char *)cms_pgarr_bytes(&in->cols[c], &len);
        lengths[c] = (int)len;
        formats[c] = 1;
    }
    cms_pg_job *job = cms_pg_job_new();
    if (job == NULL || cms_pg_job_exec(job, s->skip ? in->insert_skip : in->insert, values, lengths,
                                       formats) != CMS_PG_OK) {
        cms_pg_job_free(job);
        return false;
    }
    /* safe to send twice: a second run of a committed one fails on the
     * primary key, and is sent again skipping what is stored */
    cms_pg_job_idempotent(job);
    s->sent_ns = uv_hrtime();
    if (cms_pg_submit(in->pg, &job, span_done, s) != CMS_PG_OK)
        return false;
    in->inflight++;
    return true;
}

static void pump(audit_ingest *in)
{
    if (in->aged && in->queue == NULL && in->inflight < in->o.max_inflight) {
        seal(in); /* calls pump again with the aged batch queued */
        return;
    }
    while (in->queue && in->inflight < in->o.max_inflight) {
        span *s = in->queue;
        in->queue = s->next;
        if (in->queue == NULL)
            in->queue_tail = NULL;
        if (!send_span(in, s)) {
            enqueue(in, s, true);
            schedule_retry(in);
            return;
        }
    }
}

/* ---- dead letters ---- */

static void dead_done(void *arg, bool stored)
{
    dead *d = arg;
    audit_ingest *in = d->in;
    in->dead_inflight--;
    if (in->state == INGEST_CLOSED) {
        settle(d->msg, stored);
        free(d);
        return;
    }
    if (stored) {
        cms_counter_add(in->m_dead[d->reason], 1);
        settle(d->msg, true); /* kept in CMS_DLQ: now it may go */
        free(d);
    } else {
        cms_log_warn("audit dead letter not stored, will retry", "{s:s}", "reason",
                     audit_reason_name(d->reason));
        d->next = in->dead_wait;
        in->dead_wait = d;
        schedule_retry(in);
    }
    maybe_drained(in);
}

static void dead_send(audit_ingest *in, dead *d)
{
    cms_bus_err err =
        cms_bus_dead_letter(in->nats, "audit", d->msg, audit_reason_name(d->reason), dead_done, d);
    if (err == CMS_BUS_OK) {
        in->dead_inflight++;
        return;
    }
    d->next = in->dead_wait;
    in->dead_wait = d;
    schedule_retry(in);
}

static void dead_letter(audit_ingest *in, cms_nats_msg *msg, audit_reason reason)
{
    dead *d = calloc(1, sizeof *d);
    if (d == NULL) {
        settle(msg, false);
        return;
    }
    *d = (dead){.in = in, .msg = msg, .reason = reason};
    cms_log_debug("audit dead letter", "{s:s, s:s}", "reason", audit_reason_name(reason), "subject",
                  cms_nats_msg_subject(msg));
    dead_send(in, d);
}

/* ---- unknown actors ---- */

static void held_free(held *h)
{
    free(h->details);
    free(h);
}

static void looked_up(void *arg, cms_pg_err err, const cms_pg_result *res)
{
    audit_ingest *in = arg;
    held *list = in->looking;
    in->looking = NULL;
    if (in->state == INGEST_CLOSED) {
        while (list) {
            held *h = list;
            list = h->next;
            settle(h->msg, false);
            held_free(h);
        }
        return;
    }
    if (err != CMS_PG_OK) {
        /* try these again with the next look-up */
        held *last = list;
        while (last && last->next)
            last = last->next;
        if (last) {
            last->next = in->held;
            in->held = list;
        }
        schedule_retry(in);
        maybe_drained(in);
        return;
    }
    const PGresult *r = cms_pg_result_get(res, 0);
    for (int i = 0; r && i < PQntuples(r); i++)
        if (PQgetlength(r, i, 0) == 16)
            audit_actors_add(in->actors, (const uint8_t *)PQgetvalue(r, i, 0));
    while (list) {
        held *h = list;
        list = h->next;
        cms_gauge_set(in->m_held, (double)--in->nheld);
        if (audit_actors_has(in->actors, h->ev.actor_id)) {
            accept_row(in, h->msg, &h->ev, h->details, h->len);
        } else if (cms_nats_msg_num_delivered(h->msg) < (uint64_t)in->o.unknown_actor_tries) {
            /* the identity may be committed but not yet visible to us: later */
            if (cms_nats_msg_nak(h->msg, 1000 * (int64_t)cms_nats_msg_num_delivered(h->msg)) !=
                CMS_NATS_OK)
                cms_log_debug("audit: nak not sent; the server redelivers", NULL);
            cms_nats_msg_destroy(h->msg);
        } else {
            dead_letter(in, h->msg, AUDIT_UNKNOWN_ACTOR);
        }
        held_free(h);
    }
    lookup(in); /* those that arrived meanwhile */
    maybe_drained(in);
}

static void lookup(audit_ingest *in)
{
    if (in->looking || in->held == NULL)
        return;
    cms_pgarr ids;
    cms_pgarr_init(&ids, CMS_PG_OID_UUID);
    int bad = 0;
    for (held *h = in->held; h; h = h->next)
        bad |= cms_pgarr_add(&ids, h->ev.actor_id, 16);
    size_t len;
    const char *v[] = {(const char *)cms_pgarr_bytes(&ids, &len)};
    int lengths[] = {(int)len}, formats[] = {1};
    cms_pg_job *job = cms_pg_job_new();
    if (bad || job == NULL || cms_pg_job_exec(job, in->lookup, v, lengths, formats) != CMS_PG_OK) {
        cms_pg_job_free(job);
        cms_pgarr_free(&ids);
        schedule_retry(in);
        return;
    }
    cms_pgarr_free(&ids);
    cms_pg_job_binary_results(job);
    if (cms_pg_submit(in->pg, &job, looked_up, in) != CMS_PG_OK) {
        schedule_retry(in);
        return;
    }
    in->looking = in->held;
    in->held = NULL;
}

static void hold(audit_ingest *in, cms_nats_msg *msg, const audit_event *ev, const char *details,
                 size_t len)
{
    held *h = calloc(1, sizeof *h);
    if (h == NULL || (h->details = malloc(len ? len : 1)) == NULL) {
        free(h);
        settle(msg, false);
        return;
    }
    memcpy(h->details, details, len);
    h->msg = msg;
    h->ev = *ev;
    h->len = len;
    h->next = in->held;
    in->held = h;
    cms_gauge_set(in->m_held, (double)++in->nheld);
    lookup(in);
}

/* ---- the consumer ---- */

static void on_event(void *arg, cms_nats_msg *msg)
{
    audit_ingest *in = arg;
    if (in->state != INGEST_RUNNING) {
        settle(msg, false); /* draining: let another replica have it */
        return;
    }
    cms_gauge_set(in->m_pending, (double)cms_nats_msg_num_pending(msg));
    audit_event ev;
    audit_reason why =
        audit_validate(cms_nats_msg_data(msg), cms_nats_msg_len(msg), &ev, &in->details);
    if (why != AUDIT_OK) {
        dead_letter(in, msg, why);
        return;
    }
    /* an identity's creation makes it a known actor for what follows */
    if (strcmp(ev.event_type, "identity.created") == 0)
        audit_actors_add(in->actors, ev.resource_id);
    if (audit_actors_has(in->actors, ev.actor_id))
        accept_row(in, msg, &ev, in->details.data, in->details.len);
    else
        hold(in, msg, &ev, in->details.data, in->details.len);
}

static void retry_fired(uv_timer_t *t)
{
    audit_ingest *in = t->data;
    if (in->paused && cms_pg_ready(in->pg) > 0 && in->state == INGEST_RUNNING)
        pause_pulling(in, false);
    if (in->paused && in->queue && cms_pg_ready(in->pg) == 0) {
        /* still away: look again later, without piling jobs into the pool */
        schedule_retry(in);
        return;
    }
    pump(in);
    dead *list = in->dead_wait;
    in->dead_wait = NULL;
    while (list) {
        dead *d = list;
        list = d->next;
        dead_send(in, d);
    }
    lookup(in);
}

/* ---- lifecycle ---- */

static void maybe_drained(audit_ingest *in)
{
    if (in->state != INGEST_DRAINING)
        return;
    if ((in->cur && in->cur->n) || in->queue || in->inflight || in->held || in->looking ||
        in->dead_wait || in->dead_inflight)
        return;
    set_state(in, INGEST_DRAINED);
    if (in->drained)
        in->drained(in->drained_arg);
}

void audit_ingest_drain(audit_ingest *in, void (*done)(void *arg), void *arg)
{
    in->drained = done;
    in->drained_arg = arg;
    set_state(in, INGEST_DRAINING);
    if (in->consumer)
        cms_nats_consumer_pause(in->consumer, true);
    seal(in);
    maybe_drained(in);
}

bool audit_ingest_ready(const audit_ingest *in, char *why, size_t len)
{
    if (in->consumer != NULL && !cms_nats_consumer_bound(in->consumer)) {
        snprintf(why, len,
                 "audit: durable %s on stream " CMS_BUS_EVENTS_STREAM
                 " not bound (missing? run cms-migrate provision)\n",
                 in->durable);
        return false;
    }
    if (in->paused) {
        snprintf(why, len, "audit: waiting for the database, not pulling\n");
        return false;
    }
    return true;
}

int audit_ingest_create(uv_loop_t *loop, cms_pg *pg, cms_nats *nats, const audit_options *o,
                        audit_ingest **out)
{
    audit_ingest *in = calloc(1, sizeof *in);
    if (in == NULL)
        return -1;
    in->loop = loop;
    in->pg = pg;
    in->nats = nats;
    in->o = *o;
    if (in->o.batch_size <= 0)
        in->o.batch_size = DEFAULT_BATCH;
    if (in->o.batch_age_ms <= 0)
        in->o.batch_age_ms = DEFAULT_AGE_MS;
    if (in->o.max_inflight <= 0)
        in->o.max_inflight = DEFAULT_INFLIGHT;
    if (in->o.max_ack_pending <= 0)
        in->o.max_ack_pending = 4 * in->o.batch_size;
    if (in->o.unknown_actor_tries <= 0)
        in->o.unknown_actor_tries = DEFAULT_TRIES;
    snprintf(in->durable, sizeof in->durable, "%s", o->durable ? o->durable : "audit");
    snprintf(in->subject, sizeof in->subject, "%s", o->subject ? o->subject : "cms.events.>");
    in->o.durable = in->durable;
    in->o.subject = in->subject;
    if (audit_actors_create(ACTOR_SLOTS, &in->actors) != 0) {
        free(in);
        return -1;
    }
    audit_actors_add(in->actors, cms_bus_system_actor);
    cms_json_buf_init(&in->details, AUDIT_DETAILS_MAX);
    static const uint32_t elem[NCOLS] = {CMS_PG_OID_UUID,       CMS_PG_OID_TEXT, CMS_PG_OID_TEXT,
                                         CMS_PG_OID_UUID,       CMS_PG_OID_UUID, CMS_PG_OID_JSONB,
                                         CMS_PG_OID_TIMESTAMPTZ};
    for (int c = 0; c < NCOLS; c++)
        cms_pgarr_init(&in->cols[c], elem[c]);
    uv_timer_init(loop, &in->age);
    in->age.data = in;
    uv_timer_init(loop, &in->retry);
    in->retry.data = in;

    cms_metrics *m = cms_metrics_default();
    in->m_events = cms_metrics_counter(m, "cms_audit_events_total", "Events committed", NULL);
    in->m_batches = cms_metrics_counter(m, "cms_audit_batches_total", "Batches committed", NULL);
    in->m_splits = cms_metrics_counter(m, "cms_audit_batch_splits_total",
                                       "Failed batches split to isolate bad rows", NULL);
    in->m_skips = cms_metrics_counter(
        m, "cms_audit_batch_replays_total",
        "Batches that met rows already stored and were written again skipping them", NULL);
    for (int r = 1; r < AUDIT_NREASONS; r++) {
        char labels[64];
        snprintf(labels, sizeof labels, "reason=\"%s\"", audit_reason_name((audit_reason)r));
        in->m_dead[r] = cms_metrics_counter(m, "cms_audit_dead_letters_total",
                                            "Events sent to cms.dlq.audit", labels);
    }
    static const double sizes[] = {1, 10, 50, 100, 250, 500, 1000, 2000, 5000};
    in->m_batch_size = cms_metrics_histogram(m, "cms_audit_batch_rows", "Rows per insert", NULL,
                                             sizes, sizeof sizes / sizeof sizes[0]);
    in->m_insert_seconds = cms_metrics_histogram(m, "cms_audit_insert_duration_seconds",
                                                 "Time to commit one insert", NULL, NULL, 0);
    in->m_pending = cms_metrics_gauge(m, "cms_audit_consumer_pending",
                                      "Messages not yet delivered to the audit consumer", NULL);
    in->m_held = cms_metrics_gauge(m, "cms_audit_held_events",
                                   "Events waiting for their actor to be looked up", NULL);
    *out = in;
    return 0;
}

int audit_ingest_start(audit_ingest *in)
{
    in->insert = cms_pg_prepare(in->pg, "audit_insert", SQL_INSERT, NCOLS, INSERT_TYPES);
    in->insert_skip =
        cms_pg_prepare(in->pg, "audit_insert_skip", SQL_INSERT_SKIP, NCOLS, INSERT_TYPES);
    in->lookup = cms_pg_prepare(in->pg, "audit_lookup_actors", SQL_LOOKUP, 1, LOOKUP_TYPES);
    if (in->insert == NULL || in->insert_skip == NULL || in->lookup == NULL)
        return -1;
    cms_nats_consumer_options co = {
        .stream = CMS_BUS_EVENTS_STREAM,
        .durable = in->durable,
        .filter_subject = cms_bus_event_filter(in->subject),
        .max_ack_pending = in->o.max_ack_pending,
        .fetch_batch = in->o.batch_size,
        .ack_wait_ms = in->o.ack_wait_ms,
    };
    if (cms_nats_consume(in->nats, &co, on_event, in, &in->consumer) != 0)
        return -1;
    set_state(in, INGEST_RUNNING);
    cms_log_info("audit consuming", "{s:s, s:s, s:i, s:i, s:i}", "durable", in->durable, "subject",
                 in->subject, "batch", in->o.batch_size, "inflight", in->o.max_inflight,
                 "max_ack_pending", in->o.max_ack_pending);
    return 0;
}

static void handle_closed(uv_handle_t *h)
{
    audit_ingest *in = h->data;
    if (--in->closing_handles == 0 && in->closed)
        in->closed(in->closed_arg);
}

/* Nak (for redelivery) everything not committed or dead-lettered. */
static void release_all(audit_ingest *in)
{
    batch_free(in->cur);
    in->cur = NULL;
    while (in->queue) {
        span *s = in->queue;
        in->queue = s->next;
        for (size_t i = s->lo; i < s->hi; i++) {
            if (s->b->rows[i].msg)
                settle(s->b->rows[i].msg, false);
            s->b->rows[i].msg = NULL;
        }
        span_finish(in, s);
    }
    in->queue_tail = NULL;
    for (held *h = in->held, *n; h; h = n) {
        n = h->next;
        settle(h->msg, false);
        held_free(h);
    }
    in->held = NULL;
    for (dead *d = in->dead_wait, *n; d; d = n) {
        n = d->next;
        settle(d->msg, false);
        free(d);
    }
    in->dead_wait = NULL;
}

void audit_ingest_close(audit_ingest *in, void (*closed)(void *arg), void *arg)
{
    in->state = INGEST_CLOSED;
    release_all(in);
    in->closed = closed;
    in->closed_arg = arg;
    in->closing_handles = 2;
    uv_close((uv_handle_t *)&in->age, handle_closed);
    uv_close((uv_handle_t *)&in->retry, handle_closed);
}

/* After the loop has ended: every message was settled by then. */
void audit_ingest_destroy(audit_ingest *in)
{
    if (in == NULL)
        return;
    for (int c = 0; c < NCOLS; c++)
        cms_pgarr_free(&in->cols[c]);
    cms_json_buf_free(&in->details);
    audit_actors_destroy(in->actors);
    free(in);
}
