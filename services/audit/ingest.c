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
#include "audit/chain.h"
#include "audit/jsonb.h"
#include "backoff.h"
#include "bus.h"
#include "checkpoint.h"
#include "json.h"
#include "log.h"
#include "metrics.h"
#include "pgarray.h"
#include "validate.h"

#include <endian.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DEFAULT_BATCH 1000
#define DEFAULT_AGE_MS 5
#define DEFAULT_INFLIGHT 2
#define DEFAULT_TRIES 3
#define ACTOR_SLOTS (1u << 16)
#define RETRY_MIN_MS 50
#define RETRY_MAX_MS 2000
#define NCOLS 7
#define DEFAULT_CHECKPOINT_MS 2000
#define DEFAULT_CHECKPOINT_BATCHES 1000
#define DIGEST_BYTES 24 /* per row in audit_batches.digests: id, 8 bytes of hash */

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
/* The chained insert: each row names its batch. The batch's transaction
 * is cms_audit_chain_begin, this, then cms_audit_chain_link. */
static const char SQL_INSERT_CHAIN[] =
    "INSERT INTO audit_logs (id, event_type, resource_type, resource_id, actor_id, details, "
    "created_at, chain_writer, chain_seq) SELECT u.*, $8::int4, $9::int8 FROM unnest($1::uuid[], "
    "$2::text[], $3::text[], $4::uuid[], $5::uuid[], $6::jsonb[], $7::timestamptz[]) AS u";
static const Oid INSERT_CHAIN_TYPES[NCOLS + 2] = {
    CMS_PG_OID_UUID_ARRAY,        CMS_PG_OID_TEXT_ARRAY, CMS_PG_OID_TEXT_ARRAY,
    CMS_PG_OID_UUID_ARRAY,        CMS_PG_OID_UUID_ARRAY, CMS_PG_OID_JSONB_ARRAY,
    CMS_PG_OID_TIMESTAMPTZ_ARRAY, 23 /* int4 */,         20 /* int8 */};
static const char SQL_BEGIN[] = "SELECT cms_audit_chain_begin($1, $2)";
static const Oid BEGIN_TYPES[2] = {23, 20};
static const char SQL_LINK[] = "SELECT cms_audit_chain_link($1, $2, $3, $4, $5, $6, $7)";
static const Oid LINK_TYPES[7] = {23, 20, 23, 17, 17, 17, 17}; /* int4, int8, int4, bytea... */
static const char SQL_HEAD[] = "SELECT head_seq, head_hash, rows FROM audit_writers WHERE id = $1";
static const Oid HEAD_TYPES[1] = {23};
static const char SQL_STORED[] = "SELECT id FROM audit_logs WHERE id = ANY($1::uuid[])";
static const char SQL_REGISTER[] =
    "INSERT INTO audit_writers (name, host, pid, key_id) VALUES ($1, $2, $3::int4, $4) "
    "RETURNING id, (SELECT log_id::text FROM audit_chain_start LIMIT 1)";
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
    /* chained: its number and hash while sent (0: not numbered), its rows
     * (those of lo..hi whose msg is set: stored ones are left out) */
    uint64_t seq;
    uint8_t hash[ACH_HASH_BYTES];
    size_t rows;
    uint64_t total; /* chained, while sent: the writer's rows up to it, its own included */
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
    /* the chain (audit/chain.h); off only for the benchmark's baseline */
    bool chain;
    audit_jsonb *jsonb;
    const cms_pg_stmt *insert_chain, *begin, *link, *head, *stored, *reg;
    int32_t writer; /* audit_writers.id; 0 until registered */
    char log_id[37];
    bool registering;
    uint64_t tip_seq, tip_rows; /* the last batch sent, the rows up to it, and its hash */
    uint8_t tip_hash[ACH_HASH_BYTES];
    uint64_t head_seq, head_rows; /* the last batch committed */
    uint8_t head_hash[ACH_HASH_BYTES];
    bool rewind;       /* a chained batch failed: resend once nothing is in flight */
    bool reading_head; /* the head's read-back, in flight */
    span *redo;        /* failed spans, in their order, to be sent again */
    ach_leaf *leaves;
    size_t leaves_cap;
    uint8_t *digests;
    /* checkpoints */
    audit_signer *signer; /* NULL: no key, no checkpoints */
    uv_timer_t cp_timer;
    bool drain_cp;
    cms_counter *m_rewinds;
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

static void chain_span_done(audit_ingest *in, span *s, cms_pg_err err, const cms_pg_result *res);

static void span_done(void *arg, cms_pg_err err, const cms_pg_result *res)
{
    span *s = arg;
    audit_ingest *in = s->in;
    batch *b = s->b;
    in->inflight--;
    size_t n = s->hi - s->lo;
    if (in->chain && in->state != INGEST_CLOSED) {
        chain_span_done(in, s, err, res);
        return;
    }
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

/* The rows of lo..hi still to be stored (msg set), as the insert's arrays;
 * chained, also their leaves in in->leaves. */
static bool encode(audit_ingest *in, const batch *b, size_t lo, size_t hi, size_t *rows)
{
    for (int c = 0; c < NCOLS; c++)
        cms_pgarr_reset(&in->cols[c]);
    if (in->chain && in->leaves_cap < hi - lo) {
        ach_leaf *l = realloc(in->leaves, (hi - lo) * sizeof *l);
        uint8_t *d = realloc(in->digests, (hi - lo) * DIGEST_BYTES);
        if (l)
            in->leaves = l;
        if (d)
            in->digests = d;
        if (l == NULL || d == NULL)
            return false;
        in->leaves_cap = hi - lo;
    }
    int bad = 0;
    size_t n = 0;
    for (size_t i = lo; i < hi; i++) {
        const row *r = &b->rows[i];
        if (r->msg == NULL)
            continue; /* stored already, acked */
        if (in->chain) {
            ach_row ar = {.id = r->ev.id,
                          .resource_id = r->ev.resource_id,
                          .actor_id = r->ev.actor_id,
                          .event_type = r->ev.event_type,
                          .event_type_len = r->ev.event_type_len,
                          .resource_type = r->ev.resource_type,
                          .resource_type_len = r->ev.resource_type_len,
                          .details = b->arena + r->off,
                          .details_len = r->len,
                          .created_at_us = r->ev.occurred_us};
            bad |= !ach_row_hash(&ar, &in->leaves[n]);
        }
        n++;
        bad |= cms_pgarr_add(&in->cols[0], r->ev.id, 16);
        bad |= cms_pgarr_add(&in->cols[1], r->ev.event_type, r->ev.event_type_len);
        bad |= cms_pgarr_add(&in->cols[2], r->ev.resource_type, r->ev.resource_type_len);
        bad |= cms_pgarr_add(&in->cols[3], r->ev.resource_id, 16);
        bad |= cms_pgarr_add(&in->cols[4], r->ev.actor_id, 16);
        bad |= cms_pgarr_add_jsonb(&in->cols[5], b->arena + r->off, r->len);
        bad |= cms_pgarr_add_timestamptz_unix_us(&in->cols[6], r->ev.occurred_us);
    }
    *rows = n;
    return bad == 0;
}

/* The batch's transaction: begin, the rows, the link to the batch before. */
static cms_pg_job *chain_job(audit_ingest *in, span *s, const char *const *values,
                             const int *lengths, const int *formats)
{
    uint64_t seq = in->tip_seq + 1;
    /* binary parameters: int4 and int8 in network order */
    uint32_t w = htobe32((uint32_t)in->writer), n = htobe32((uint32_t)s->rows);
    uint64_t q = htobe64(seq);
    ach_batch ab = {.writer = (uint64_t)in->writer, .seq = seq, .rows = s->rows};
    ach_root(in->leaves, s->rows, ab.root);
    memcpy(ab.prev, in->tip_hash, ACH_HASH_BYTES);
    ach_batch_hash(&ab, s->hash);
    for (size_t i = 0; i < s->rows; i++) {
        memcpy(in->digests + i * DIGEST_BYTES, in->leaves[i].id, 16);
        memcpy(in->digests + i * DIGEST_BYTES + 16, in->leaves[i].hash, DIGEST_BYTES - 16);
    }
    const char *bv[2] = {(const char *)&w, (const char *)&q};
    const int bl[2] = {4, 8}, bf[2] = {1, 1};
    const char *iv[NCOLS + 2];
    int il[NCOLS + 2], ifm[NCOLS + 2];
    for (int c = 0; c < NCOLS; c++) {
        iv[c] = values[c];
        il[c] = lengths[c];
        ifm[c] = formats[c];
    }
    iv[NCOLS] = (const char *)&w;
    il[NCOLS] = 4;
    iv[NCOLS + 1] = (const char *)&q;
    il[NCOLS + 1] = 8;
    ifm[NCOLS] = ifm[NCOLS + 1] = 1;
    const char *lv[7] = {(const char *)&w,         (const char *)&q,      (const char *)&n,
                         (const char *)ab.root,    (const char *)ab.prev, (const char *)s->hash,
                         (const char *)in->digests};
    const int ll[7] = {
        4, 8, 4, ACH_HASH_BYTES, ACH_HASH_BYTES, ACH_HASH_BYTES, (int)(s->rows * DIGEST_BYTES)};
    const int lf[7] = {1, 1, 1, 1, 1, 1, 1};
    cms_pg_job *job = cms_pg_job_new();
    if (job == NULL || cms_pg_job_lead_exec(job, in->begin, bv, bl, bf) != CMS_PG_OK ||
        cms_pg_job_exec(job, in->insert_chain, iv, il, ifm) != CMS_PG_OK ||
        cms_pg_job_exec(job, in->link, lv, ll, lf) != CMS_PG_OK) {
        cms_pg_job_free(job);
        return NULL;
    }
    s->seq = seq;
    s->total = in->tip_rows + s->rows;
    return job;
}

static bool send_span(audit_ingest *in, span *s)
{
    if (!encode(in, s->b, s->lo, s->hi, &s->rows))
        return false;
    if (s->rows == 0) { /* every row was stored already */
        span_finish(in, s);
        return true;
    }
    const char *values[NCOLS];
    int lengths[NCOLS], formats[NCOLS];
    for (int c = 0; c < NCOLS; c++) {
        size_t len;
        values[c] = (const char *)cms_pgarr_bytes(&in->cols[c], &len);
        lengths[c] = (int)len;
        formats[c] = 1;
    }
    cms_pg_job *job;
    if (in->chain) {
        /* not idempotent: a lost answer is settled by reading the head back */
        if ((job = chain_job(in, s, values, lengths, formats)) == NULL)
            return false;
    } else {
        job = cms_pg_job_new();
        if (job == NULL || cms_pg_job_exec(job, s->skip ? in->insert_skip : in->insert, values,
                                           lengths, formats) != CMS_PG_OK) {
            cms_pg_job_free(job);
            return false;
        }
        /* safe to send twice: a second run of a committed one fails on the
         * primary key, and is sent again skipping what is stored */
        cms_pg_job_idempotent(job);
    }
    s->sent_ns = uv_hrtime();
    if (cms_pg_submit(in->pg, &job, span_done, s) != CMS_PG_OK) {
        s->seq = 0;
        return false;
    }
    if (in->chain) {
        in->tip_seq = s->seq;
        in->tip_rows = s->total;
        memcpy(in->tip_hash, s->hash, ACH_HASH_BYTES);
    }
    in->inflight++;
    return true;
}

static void pump(audit_ingest *in)
{
    if (in->aged && in->queue == NULL && in->inflight < in->o.max_inflight) {
        seal(in); /* calls pump again with the aged batch queued */
        return;
    }
    if (in->chain && (in->writer == 0 || in->rewind))
        return; /* not registered yet, or resending once nothing is in flight */
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
    /* spans left with no row to store finish at once: the aged batch may
     * go now */
    if (in->aged && in->queue == NULL && in->inflight < in->o.max_inflight)
        seal(in);
}

/* ---- the chain ---- */

static void checkpoint(audit_ingest *in);

static size_t live_rows(const span *s, size_t *first)
{
    size_t n = 0;
    for (size_t i = s->lo; i < s->hi; i++)
        if (s->b->rows[i].msg) {
            if (n++ == 0)
                *first = i;
        }
    return n;
}

static void ack_rows(audit_ingest *in, span *s)
{
    size_t n = 0;
    for (size_t i = s->lo; i < s->hi; i++)
        if (s->b->rows[i].msg) {
            settle(s->b->rows[i].msg, true);
            s->b->rows[i].msg = NULL;
            n++;
        }
    cms_counter_add(in->m_events, n);
}

/* Into the redo list, in the order the spans were sent (seq), halves of
 * one span by position. */
static void redo_add(audit_ingest *in, span *s)
{
    span **p = &in->redo;
    while (*p && ((*p)->seq < s->seq || ((*p)->seq == s->seq && (*p)->lo < s->lo)))
        p = &(*p)->next;
    s->next = *p;
    *p = s;
}

static void chain_resume(audit_ingest *in);

static void head_read(void *arg, cms_pg_err err, const cms_pg_result *res)
{
    audit_ingest *in = arg;
    in->reading_head = false;
    if (in->state == INGEST_CLOSED)
        return;
    const PGresult *r = err == CMS_PG_OK ? cms_pg_result_get(res, 0) : NULL;
    if (r == NULL || PQntuples(r) != 1 || PQgetlength(r, 0, 0) != 8 ||
        PQgetlength(r, 0, 1) != ACH_HASH_BYTES || PQgetlength(r, 0, 2) != 8) {
        cms_log_warn("audit: chain head not read back, will retry", "{s:s}", "error",
                     err == CMS_PG_OK ? "no such writer" : cms_pg_strerror(err));
        schedule_retry(in);
        return;
    }
    uint64_t seq = 0, rows = 0;
    for (int i = 0; i < 8; i++) {
        seq = seq << 8 | (uint8_t)PQgetvalue(r, 0, 0)[i];
        rows = rows << 8 | (uint8_t)PQgetvalue(r, 0, 2)[i];
    }
    in->head_seq = seq;
    in->head_rows = rows;
    memcpy(in->head_hash, PQgetvalue(r, 0, 1), ACH_HASH_BYTES);
    /* a batch whose answer was lost may have committed: its rows are stored */
    span **p = &in->redo;
    while (*p) {
        span *s = *p;
        if (s->seq != 0 && s->seq <= seq) {
            *p = s->next;
            ack_rows(in, s);
            cms_counter_add(in->m_batches, 1);
            span_finish(in, s);
        } else {
            s->seq = 0;
            p = &s->next;
        }
    }
    in->tip_seq = in->head_seq;
    in->tip_rows = in->head_rows;
    memcpy(in->tip_hash, in->head_hash, ACH_HASH_BYTES);
    /* the failed spans go first, in their order */
    if (in->redo) {
        span *last = in->redo;
        while (last->next)
            last = last->next;
        last->next = in->queue;
        if (in->queue == NULL)
            in->queue_tail = last;
        in->queue = in->redo;
        in->redo = NULL;
    }
    in->rewind = false;
    cms_log_info("audit chain resumed", "{s:i, s:I}", "writer", (int)in->writer, "head_seq",
                 (json_int_t)in->head_seq);
    if (!uv_is_active((uv_handle_t *)&in->retry))
        pump(in);
    maybe_drained(in);
}

/* Once nothing is in flight: read the head back, then resend. */
static void chain_resume(audit_ingest *in)
{
    if (!in->rewind || in->inflight > 0 || in->reading_head || in->state == INGEST_CLOSED)
        return;
    uint32_t w = htobe32((uint32_t)in->writer);
    const char *v[1] = {(const char *)&w};
    const int l[1] = {4}, f[1] = {1};
    cms_pg_job *job = cms_pg_job_new();
    if (job == NULL || cms_pg_job_exec(job, in->head, v, l, f) != CMS_PG_OK) {
        cms_pg_job_free(job);
        schedule_retry(in);
        return;
    }
    cms_pg_job_binary_results(job);
    cms_pg_job_idempotent(job);
    if (cms_pg_submit(in->pg, &job, head_read, in) != CMS_PG_OK) {
        schedule_retry(in);
        return;
    }
    in->reading_head = true;
}

typedef struct stored_look {
    audit_ingest *in;
    span *s;
} stored_look;

/* The rows of a span that met the primary key: those stored are acked and
 * left out; if none is, a row repeats within the span, and it is split. */
static void split_span(audit_ingest *in, span *s);

static void stored_found(void *arg, cms_pg_err err, const cms_pg_result *res)
{
    stored_look *sl = arg;
    audit_ingest *in = sl->in;
    span *s = sl->s;
    free(sl);
    in->inflight--;
    if (in->state == INGEST_CLOSED) {
        for (size_t i = s->lo; i < s->hi; i++)
            if (s->b->rows[i].msg) {
                settle(s->b->rows[i].msg, false);
                s->b->rows[i].msg = NULL;
            }
        span_finish(in, s);
        return;
    }
    const PGresult *r = err == CMS_PG_OK ? cms_pg_result_get(res, 0) : NULL;
    size_t found = 0;
    for (int k = 0; r && k < PQntuples(r); k++) {
        if (PQgetlength(r, k, 0) != 16)
            continue;
        const char *id = PQgetvalue(r, k, 0);
        for (size_t i = s->lo; i < s->hi; i++)
            if (s->b->rows[i].msg && memcmp(s->b->rows[i].ev.id, id, 16) == 0) {
                settle(s->b->rows[i].msg, true);
                s->b->rows[i].msg = NULL;
                found++;
                break;
            }
    }
    cms_counter_add(in->m_skips, 1);
    cms_counter_add(in->m_events, found); /* as if written: they are stored */
    if (r != NULL && found == 0)
        split_span(in, s);
    else
        redo_add(in, s); /* without the stored rows, or as it was if the look-up failed */
    chain_resume(in);
    maybe_drained(in);
}

static void look_stored(audit_ingest *in, span *s)
{
    cms_pgarr ids;
    cms_pgarr_init(&ids, CMS_PG_OID_UUID);
    int bad = 0;
    for (size_t i = s->lo; i < s->hi; i++)
        if (s->b->rows[i].msg)
            bad |= cms_pgarr_add(&ids, s->b->rows[i].ev.id, 16);
    size_t len;
    const char *v[] = {(const char *)cms_pgarr_bytes(&ids, &len)};
    int lengths[] = {(int)len}, formats[] = {1};
    stored_look *sl = malloc(sizeof *sl);
    cms_pg_job *job = cms_pg_job_new();
    if (bad || sl == NULL || job == NULL ||
        cms_pg_job_exec(job, in->stored, v, lengths, formats) != CMS_PG_OK) {
        cms_pg_job_free(job);
        cms_pgarr_free(&ids);
        free(sl);
        split_span(in, s);
        return;
    }
    cms_pgarr_free(&ids);
    cms_pg_job_binary_results(job);
    cms_pg_job_idempotent(job);
    *sl = (stored_look){.in = in, .s = s};
    if (cms_pg_submit(in->pg, &job, stored_found, sl) != CMS_PG_OK) {
        free(sl);
        split_span(in, s);
        return;
    }
    in->inflight++; /* the chain resumes after it */
}

/* A failed span's halves go to the redo list; one row alone is refused. */
static void split_span(audit_ingest *in, span *s)
{
    size_t first = s->lo, n = live_rows(s, &first);
    if (n == 0) {
        span_finish(in, s);
        return;
    }
    if (n == 1) {
        /* isolated: data the server refuses for good */
        dead_letter(in, s->b->rows[first].msg, AUDIT_INSERT_FAILED);
        s->b->rows[first].msg = NULL;
        span_finish(in, s);
        return;
    }
    /* halves by live rows, so that each has some */
    size_t half = n / 2, k = 0, mid = s->lo;
    for (size_t i = s->lo; i < s->hi; i++)
        if (s->b->rows[i].msg && k++ == half) {
            mid = i;
            break;
        }
    span *l = span_new(in, s->b, s->lo, mid), *r = span_new(in, s->b, mid, s->hi);
    cms_counter_add(in->m_splits, 1);
    if (l) {
        l->seq = s->seq;
        redo_add(in, l);
    }
    if (r) {
        r->seq = s->seq;
        redo_add(in, r);
    }
    if (l == NULL || r == NULL)
        cms_log_error("audit: out of memory splitting a batch", NULL);
    span_finish(in, s);
}

static void chain_span_done(audit_ingest *in, span *s, cms_pg_err err, const cms_pg_result *res)
{
    if (err == CMS_PG_OK) {
        in->failures = 0;
        /* answers come over several connections, in any order: the head
         * only moves forward, with the rows up to it (a batch commits only
         * on top of the one before it, so those are all committed too) */
        if (s->seq > in->head_seq) {
            in->head_seq = s->seq;
            in->head_rows = s->total;
            memcpy(in->head_hash, s->hash, ACH_HASH_BYTES);
        }
        ack_rows(in, s);
        cms_counter_add(in->m_batches, 1);
        cms_histogram_observe(in->m_batch_size, (double)s->rows);
        cms_histogram_observe(in->m_insert_seconds, (double)(uv_hrtime() - s->sent_ns) / 1e9);
        span_finish(in, s);
        if (in->signer &&
            in->head_seq - audit_signer_published(in->signer) >= (uint64_t)in->o.checkpoint_batches)
            checkpoint(in);
        /* answers come over several connections: the batch after this one
         * may have failed first */
        chain_resume(in);
        pump(in);
        maybe_drained(in);
        return;
    }
    /* the batches sent after this one fail too (each waits for the one
     * before): all are sent again, renumbered, once none is in flight */
    if (!in->rewind)
        cms_counter_add(in->m_rewinds, 1);
    in->rewind = true;
    const char *state = err == CMS_PG_ESQL ? cms_pg_result_sqlstate(res) : "";
    size_t first = s->lo, n = live_rows(s, &first);
    if (err == CMS_PG_ESQL && strcmp(state, "CA001") == 0) {
        redo_add(in, s); /* only because the one before failed */
    } else if (err == CMS_PG_ESQL && strcmp(state, "23505") == 0) {
        if (n == 1) { /* stored before: a redelivery */
            ack_rows(in, s);
            span_finish(in, s);
        } else {
            look_stored(in, s);
        }
    } else if (err == CMS_PG_ESQL && is_data_error(state)) {
        cms_log_warn("audit batch refused", "{s:i, s:s, s:s}", "rows", (int)n, "sqlstate", state,
                     "error", cms_pg_result_message(res));
        if (n == 1 && strcmp(state, "23503") == 0) {
            dead_letter(in, s->b->rows[first].msg, AUDIT_UNKNOWN_ACTOR);
            s->b->rows[first].msg = NULL;
            span_finish(in, s);
        } else {
            split_span(in, s);
        }
    } else {
        /* the server could not do it now, or the answer was lost (the head
         * read back tells whether it committed) */
        cms_log_warn("audit batch not written, will retry", "{s:i, s:s, s:s}", "rows", (int)n,
                     "sqlstate", state, "error",
                     err == CMS_PG_ESQL ? cms_pg_result_message(res) : cms_pg_strerror(err));
        if (in->failures < 30)
            in->failures++;
        redo_add(in, s);
        if (err != CMS_PG_ESQL)
            pause_pulling(in, true);
        schedule_retry(in);
    }
    chain_resume(in);
    maybe_drained(in);
}

static void registered(void *arg, cms_pg_err err, const cms_pg_result *res)
{
    audit_ingest *in = arg;
    in->registering = false;
    if (in->state == INGEST_CLOSED)
        return;
    const PGresult *r = err == CMS_PG_OK ? cms_pg_result_get(res, 0) : NULL;
    if (r == NULL || PQntuples(r) != 1 || PQgetisnull(r, 0, 1)) {
        cms_log_warn("audit: writer not registered, will retry", "{s:s, s:s}", "error",
                     err == CMS_PG_ESQL ? cms_pg_result_message(res) : cms_pg_strerror(err), "hint",
                     "is the database migrated (cms-migrate up)?");
        schedule_retry(in);
        return;
    }
    in->writer = (int32_t)strtol(PQgetvalue(r, 0, 0), NULL, 10);
    snprintf(in->log_id, sizeof in->log_id, "%s", PQgetvalue(r, 0, 1));
    cms_log_info("audit chain writer", "{s:i, s:s, s:s}", "writer", (int)in->writer, "log",
                 in->log_id, "key_id",
                 in->signer ? audit_signer_key_id(in->signer) : "(none: no checkpoints)");
    pump(in);
}

static void chain_register(audit_ingest *in)
{
    if (!in->chain || in->writer != 0 || in->registering)
        return;
    char host[256] = "", pid[16];
    (void)gethostname(host, sizeof host - 1);
    snprintf(pid, sizeof pid, "%d", (int)getpid());
    const char *v[4] = {in->o.name, host, pid, in->signer ? audit_signer_key_id(in->signer) : NULL};
    cms_pg_job *job = cms_pg_job_new();
    if (job == NULL || cms_pg_job_exec(job, in->reg, v, NULL, NULL) != CMS_PG_OK) {
        cms_pg_job_free(job);
        schedule_retry(in);
        return;
    }
    if (cms_pg_submit(in->pg, &job, registered, in) != CMS_PG_OK) {
        schedule_retry(in);
        return;
    }
    in->registering = true;
}

/* ---- checkpoints (checkpoint.h) ---- */

static void cp_settled(void *arg)
{
    maybe_drained(arg);
}

/* The committed head, signed once it moved past the last one published. */
static void checkpoint(audit_ingest *in)
{
    if (in->signer == NULL || in->writer == 0 || in->state == INGEST_CLOSED)
        return;
    audit_head h = {.writer = in->writer,
                    .log_id = in->log_id,
                    .seq = in->head_seq,
                    .rows = in->head_rows,
                    .hash = in->head_hash};
    (void)audit_signer_sign(in->signer, &h, cp_settled, in);
}

static void cp_timer_fired(uv_timer_t *t)
{
    checkpoint(t->data);
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
    const char *details = in->details.data;
    size_t len = in->details.len;
    /* chained, details are stored (and hashed) as jsonb prints them */
    if (in->chain && !audit_jsonb_text(in->jsonb, details, len, &details, &len)) {
        dead_letter(in, msg, AUDIT_BAD_DETAILS);
        return;
    }
    /* an identity's creation makes it a known actor for what follows */
    if (strcmp(ev.event_type, "identity.created") == 0)
        audit_actors_add(in->actors, ev.resource_id);
    if (audit_actors_has(in->actors, ev.actor_id))
        accept_row(in, msg, &ev, details, len);
    else
        hold(in, msg, &ev, details, len);
}

static void retry_fired(uv_timer_t *t)
{
    audit_ingest *in = t->data;
    chain_register(in);
    chain_resume(in);
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
        in->dead_wait || in->dead_inflight || in->rewind || in->redo || in->reading_head)
        return;
    /* the last head, signed on the way out: a truncation after it shows
     * (once the one in flight, maybe of an older head, has settled) */
    bool busy = in->signer && audit_signer_busy(in->signer);
    if (!in->drain_cp && !busy) {
        in->drain_cp = true;
        checkpoint(in);
    }
    if (in->signer && audit_signer_busy(in->signer))
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
    if (in->chain && in->writer == 0) {
        snprintf(why, len, "audit: registering its chain writer in the database\n");
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
    if (in->o.checkpoint_ms <= 0)
        in->o.checkpoint_ms = DEFAULT_CHECKPOINT_MS;
    if (in->o.checkpoint_batches <= 0)
        in->o.checkpoint_batches = DEFAULT_CHECKPOINT_BATCHES;
    if (in->o.name == NULL)
        in->o.name = "cms-audit";
    in->chain = !o->no_chain;
    in->o.signing_key = NULL; /* copied below, not kept */
    if ((in->chain && (in->jsonb = audit_jsonb_new()) == NULL) ||
        (in->chain && o->signing_key &&
         (in->signer = audit_signer_new(pg, nats, o->signing_key)) == NULL)) {
        audit_jsonb_free(in->jsonb);
        free(in);
        return -1;
    }
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
    uv_timer_init(loop, &in->cp_timer);
    in->cp_timer.data = in;

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
    in->m_rewinds = cms_metrics_counter(
        m, "cms_audit_chain_rewinds_total",
        "Times a failed batch made the chain resend the batches after it", NULL);
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
    if (in->chain) {
        in->insert_chain = cms_pg_prepare(in->pg, "audit_insert_chain", SQL_INSERT_CHAIN, NCOLS + 2,
                                          INSERT_CHAIN_TYPES);
        in->begin = cms_pg_prepare(in->pg, "audit_chain_begin", SQL_BEGIN, 2, BEGIN_TYPES);
        in->link = cms_pg_prepare(in->pg, "audit_chain_link", SQL_LINK, 7, LINK_TYPES);
        in->head = cms_pg_prepare(in->pg, "audit_chain_head", SQL_HEAD, 1, HEAD_TYPES);
        in->stored = cms_pg_prepare(in->pg, "audit_stored", SQL_STORED, 1, LOOKUP_TYPES);
        in->reg = cms_pg_prepare(in->pg, "audit_register", SQL_REGISTER, 4, NULL);
        if (!in->insert_chain || !in->begin || !in->link || !in->head || !in->stored || !in->reg ||
            (in->signer && audit_signer_prepare(in->signer) != 0))
            return -1;
        chain_register(in);
        if (in->signer)
            uv_timer_start(&in->cp_timer, cp_timer_fired, (uint64_t)in->o.checkpoint_ms,
                           (uint64_t)in->o.checkpoint_ms);
    }
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
    while (in->redo) {
        span *s = in->redo;
        in->redo = s->next;
        for (size_t i = s->lo; i < s->hi; i++) {
            if (s->b->rows[i].msg)
                settle(s->b->rows[i].msg, false);
            s->b->rows[i].msg = NULL;
        }
        span_finish(in, s);
    }
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
    in->closing_handles = 3;
    uv_close((uv_handle_t *)&in->age, handle_closed);
    uv_close((uv_handle_t *)&in->retry, handle_closed);
    uv_close((uv_handle_t *)&in->cp_timer, handle_closed);
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
    audit_jsonb_free(in->jsonb);
    free(in->leaves);
    free(in->digests);
    audit_signer_free(in->signer);
    free(in);
}
