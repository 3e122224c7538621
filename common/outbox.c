/* Outbox relay; see outbox.h.
 *
 * One batch at a time: read the oldest rows of this source, publish them
 * (up to the NATS module's in-flight cap), and once every publish of the
 * batch has completed, delete the acknowledged rows and read the next batch
 * in the same job. Only one job of the relay is ever in flight. */
#include "outbox.h"

#include "backoff.h"
#include "log.h"
#include "metrics.h"
#include "uuid.h"

#include <endian.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_BATCH 256
#define DEFAULT_POLL_MS 1000
#define DEFAULT_BACKOFF_MAX_MS 5000
#define BACKOFF_MIN_MS 100

static const char SQL_INSERT[] =
    "INSERT INTO outbox (source, event_id, subject, payload) VALUES ($1, $2::uuid, $3, $4)";
static const char SQL_DELETE[] = "DELETE FROM outbox WHERE seq = ANY($1::bigint[])";
/* Takes or renews the lease of this source unless another live relay holds it. */
static const char SQL_LEASE[] =
    "INSERT INTO outbox_leases (source, holder, expires_at) "
    "VALUES ($1, $2::uuid, now() + $3::int * interval '1 millisecond') "
    "ON CONFLICT (source) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at "
    "WHERE outbox_leases.holder = EXCLUDED.holder OR outbox_leases.expires_at < now()";
/* Reads only for the lease holder (the lease statement ran just before, in
 * the same transaction). */
static const char SQL_READ[] =
    "SELECT seq, event_id::text, subject, payload FROM outbox WHERE source = $1 AND EXISTS "
    "(SELECT 1 FROM outbox_leases l WHERE l.source = $1 AND l.holder = $2::uuid) "
    "ORDER BY seq LIMIT $3";
static const char SQL_RELEASE[] =
    "DELETE FROM outbox_leases WHERE source = $1 AND holder = $2::uuid";

typedef enum {
    ROW_PENDING,   /* not sent yet */
    ROW_INFLIGHT,  /* sent, no answer yet */
    ROW_PUBLISHED, /* the stream has it */
    ROW_FAILED,
} row_state;

typedef struct row {
    int64_t seq;
    char event_id[40];
    char *subject;
    void *payload;
    size_t len;
    row_state state;
} row;

typedef enum {
    RELAY_IDLE,       /* waiting for a kick or the poll timer */
    RELAY_READING,    /* the delete+read job is in flight */
    RELAY_PUBLISHING, /* rows of a batch are being published */
    RELAY_BACKOFF,    /* after a failure, waiting for the timer */
    RELAY_CLOSED,     /* nothing more is sent; late completions are ignored */
} relay_state;

typedef struct pub_ctx {
    struct cms_outbox *ob;
    size_t index;
} pub_ctx;

struct cms_outbox {
    uv_loop_t *loop;
    cms_pg *pg;
    cms_nats *nats;
    char *source;
    cms_outbox_options o;
    char holder[40];  /* this relay's lease id: a UUIDv7 made at start */
    int64_t lease_ms; /* outlives several polls, so a live holder keeps it */
    relay_state state;
    bool job_inflight;
    bool kicked;   /* a kick arrived since the last read was sent */
    bool draining; /* closing: relay until a read finds nothing, then close */
    bool failed;   /* a publish of the current batch failed */
    bool hold;     /* it did: publish the rows read next after a backoff */
    row *rows;
    pub_ctx *ctx;
    size_t nrows, next, inflight;
    cms_backoff backoff; /* failures in a row */
    uv_timer_t timer;
    uint64_t published;
    void (*closed)(void *arg);
    void *closed_arg;
    cms_counter *m_published, *m_failed;
    cms_gauge *m_batch;
};

static void read_batch(cms_outbox *ob);
static void publish_more(cms_outbox *ob);
static void backoff(cms_outbox *ob);
static void release_lease(cms_outbox *ob);

static const char *state_name(relay_state s)
{
    switch (s) {
    case RELAY_IDLE:
        return "idle";
    case RELAY_READING:
        return "reading";
    case RELAY_PUBLISHING:
        return "publishing";
    case RELAY_BACKOFF:
        return "backoff";
    case RELAY_CLOSED:
        return "closed";
    }
    return "?";
}

static void set_state(cms_outbox *ob, relay_state to)
{
    if (ob->state == to || ob->state == RELAY_CLOSED)
        return; /* closed is final */
    cms_log_debug("outbox relay state", "{s:s, s:s, s:s}", "source", ob->source, "from",
                  state_name(ob->state), "to", state_name(to));
    ob->state = to;
}

int cms_outbox_add(cms_pg_job *job, const char *source, const char *event_id, const char *subject,
                   const void *payload, size_t len)
{
    if (job == NULL || source == NULL || event_id == NULL || subject == NULL ||
        (payload == NULL && len) || len > INT32_MAX)
        return CMS_PG_EINVAL;
    const char *v[] = {source, event_id, subject, payload ? payload : ""};
    int lengths[] = {0, 0, 0, (int)len};
    int formats[] = {0, 0, 0, 1};
    return cms_pg_job_sql(job, SQL_INSERT, 4, v, lengths, formats);
}

static void rows_clear(cms_outbox *ob)
{
    for (size_t i = 0; i < ob->nrows; i++) {
        free(ob->rows[i].subject);
        free(ob->rows[i].payload);
    }
    free(ob->rows);
    free(ob->ctx);
    ob->rows = NULL;
    ob->ctx = NULL;
    ob->nrows = ob->next = 0;
    ob->failed = false;
}

static void closed_timer(uv_handle_t *h)
{
    cms_outbox *ob = h->data;
    if (ob->closed)
        ob->closed(ob->closed_arg);
}

static void finish_close(cms_outbox *ob)
{
    if (ob->state == RELAY_CLOSED)
        return;
    set_state(ob, RELAY_CLOSED);
    uv_timer_stop(&ob->timer);
    uv_close((uv_handle_t *)&ob->timer, closed_timer);
}

static bool has_pending(const cms_outbox *ob)
{
    for (size_t i = 0; i < ob->nrows; i++)
        if (ob->rows[i].state == ROW_PENDING)
            return true;
    return false;
}

static void timer_fired(uv_timer_t *t)
{
    cms_outbox *ob = t->data;
    if (ob->state == RELAY_BACKOFF && has_pending(ob)) {
        set_state(ob, RELAY_PUBLISHING);
        publish_more(ob);
    } else if (ob->state == RELAY_IDLE || ob->state == RELAY_BACKOFF) {
        read_batch(ob);
    }
}

static void backoff(cms_outbox *ob)
{
    if (ob->draining) {
        /* no progress possible now: what is left waits in the table */
        finish_close(ob);
        return;
    }
    set_state(ob, RELAY_BACKOFF);
    uv_timer_start(&ob->timer, timer_fired, cms_backoff_next(&ob->backoff), 0);
}

/* A failure: the delay doubles with each in a row. */
static void failed_backoff(cms_outbox *ob)
{
    backoff(ob);
}

static void go_idle(cms_outbox *ob)
{
    set_state(ob, RELAY_IDLE);
    uv_timer_start(&ob->timer, timer_fired, (uint64_t)ob->o.poll_ms, 0);
}

/* Copies the rows of a read out of the result before it is freed. */
static bool take_rows(cms_outbox *ob, const PGresult *r)
{
    int n = PQntuples(r);
    if (n == 0)
        return true;
    ob->rows = calloc((size_t)n, sizeof *ob->rows);
    ob->ctx = calloc((size_t)n, sizeof *ob->ctx);
    if (ob->rows == NULL || ob->ctx == NULL)
        return false;
    for (int i = 0; i < n; i++) {
        row *w = &ob->rows[i];
        uint64_t be;
        if (PQgetlength(r, i, 0) != 8)
            return false;
        memcpy(&be, PQgetvalue(r, i, 0), 8);
        w->seq = (int64_t)be64toh(be);
        snprintf(w->event_id, sizeof w->event_id, "%.*s", PQgetlength(r, i, 1),
                 PQgetvalue(r, i, 1));
        w->subject = strndup(PQgetvalue(r, i, 2), (size_t)PQgetlength(r, i, 2));
        w->len = (size_t)PQgetlength(r, i, 3);
        w->payload = malloc(w->len ? w->len : 1);
        if (w->subject == NULL || w->payload == NULL)
            return false;
        memcpy(w->payload, PQgetvalue(r, i, 3), w->len);
        ob->ctx[i] = (pub_ctx){ob, (size_t)i};
        ob->nrows++;
    }
    return true;
}

static void read_done(void *arg, cms_pg_err err, const cms_pg_result *res)
{
    cms_outbox *ob = arg;
    ob->job_inflight = false;
    if (ob->state == RELAY_CLOSED)
        return;
    if (err == CMS_PG_OK) {
        /* the delete (if any) committed with the read */
        rows_clear(ob);
        const PGresult *r = cms_pg_result_get(res, cms_pg_result_count(res) - 1);
        if (!take_rows(ob, r)) {
            cms_log_error("outbox: could not take rows (out of memory or bad row)", NULL);
            rows_clear(ob);
            err = CMS_PG_ENOMEM;
        }
    } else {
        cms_log_warn("outbox read failed", "{s:s, s:s, s:s}", "source", ob->source, "error",
                     cms_pg_strerror(err), "detail", res ? cms_pg_result_message(res) : "");
    }
    if (err != CMS_PG_OK) {
        /* rows of the batch stay as they were: published ones are deleted next time */
        failed_backoff(ob);
        return;
    }
    if (ob->m_batch)
        cms_gauge_set(ob->m_batch, (double)ob->nrows);
    if (ob->nrows == 0) {
        if (ob->draining) {
            release_lease(ob);
            finish_close(ob); /* everything committed so far is published */
        } else if (ob->kicked)
            read_batch(ob);
        else
            go_idle(ob);
        return;
    }
    if (ob->hold) {
        /* the last batch failed to publish: give NATS time before these */
        ob->hold = false;
        backoff(ob);
        return;
    }
    set_state(ob, RELAY_PUBLISHING);
    publish_more(ob);
}

/* Hands the lease over at once instead of letting it expire (best effort:
 * the job completes while the pool closes, or the lease simply expires). */
static void release_lease(cms_outbox *ob)
{
    cms_pg_job *job = cms_pg_job_new();
    const char *v[] = {ob->source, ob->holder};
    if (job == NULL || cms_pg_job_sql(job, SQL_RELEASE, 2, v, NULL, NULL) != CMS_PG_OK ||
        cms_pg_submit(ob->pg, &job, NULL, NULL) != CMS_PG_OK)
        cms_pg_job_free(job);
}

/* One job: delete what the last batch published, then read the next one. */
static void read_batch(cms_outbox *ob)
{
    if (ob->job_inflight || ob->state == RELAY_CLOSED)
        return;
    uv_timer_stop(&ob->timer);
    char *ids = NULL;
    cms_pg_job *job = cms_pg_job_new();
    if (job == NULL)
        goto fail;
    size_t npub = 0;
    for (size_t i = 0; i < ob->nrows; i++)
        npub += ob->rows[i].state == ROW_PUBLISHED;
    if (npub) {
        /* a bigint[] literal: "{1,2,3}" — digits and commas only */
        size_t cap = npub * 21 + 3, len = 0;
        ids = malloc(cap);
        if (ids == NULL)
            goto fail;
        ids[len++] = '{';
        for (size_t i = 0; i < ob->nrows; i++)
            if (ob->rows[i].state == ROW_PUBLISHED)
                len += (size_t)snprintf(ids + len, cap - len, "%s%lld", len > 1 ? "," : "",
                                        (long long)ob->rows[i].seq);
        snprintf(ids + len, cap - len, "}");
        const char *v[] = {ids};
        if (cms_pg_job_sql(job, SQL_DELETE, 1, v, NULL, NULL) != CMS_PG_OK)
            goto fail;
    }
    char limit[16], lease_ms[24];
    snprintf(limit, sizeof limit, "%d", ob->o.batch);
    snprintf(lease_ms, sizeof lease_ms, "%lld", (long long)ob->lease_ms);
    const char *lv[] = {ob->source, ob->holder, lease_ms};
    const char *rv[] = {ob->source, ob->holder, limit};
    if (cms_pg_job_sql(job, SQL_LEASE, 3, lv, NULL, NULL) != CMS_PG_OK ||
        cms_pg_job_sql(job, SQL_READ, 3, rv, NULL, NULL) != CMS_PG_OK)
        goto fail;
    cms_pg_job_binary_results(job);
    set_state(ob, RELAY_READING);
    ob->kicked = false;
    cms_pg_err err = cms_pg_submit(ob->pg, &job, read_done, ob);
    if (err != CMS_PG_OK) {
        cms_log_warn("outbox read not submitted", "{s:s}", "error", cms_pg_strerror(err));
        goto fail;
    }
    ob->job_inflight = true;
    free(ids);
    return;
fail:
    cms_pg_job_free(job);
    free(ids);
    failed_backoff(ob);
}

static void published(void *arg, cms_nats_err err, bool duplicate, uint64_t seq)
{
    (void)duplicate;
    (void)seq;
    pub_ctx *ctx = arg;
    cms_outbox *ob = ctx->ob;
    row *w = &ob->rows[ctx->index];
    ob->inflight--;
    if (ob->state == RELAY_CLOSED)
        return;
    if (err == CMS_NATS_OK) {
        w->state = ROW_PUBLISHED;
        ob->published++;
        cms_counter_add(ob->m_published, 1);
    } else {
        w->state = ROW_FAILED;
        ob->failed = true;
        cms_counter_add(ob->m_failed, 1);
        cms_log_warn("outbox publish failed", "{s:s, s:s, s:s}", "event_id", w->event_id, "subject",
                     w->subject, "error", cms_nats_strerror(err));
    }
    publish_more(ob);
}

static void publish_retry(uv_timer_t *t)
{
    publish_more(t->data);
}

/* Sends rows in order while the NATS module takes them; stops after a
 * failure. Once nothing of the batch is in flight, the batch is settled:
 * the next job deletes what was published and reads on. */
static void publish_more(cms_outbox *ob)
{
    while (!ob->failed && ob->state == RELAY_PUBLISHING && ob->next < ob->nrows) {
        row *w = &ob->rows[ob->next];
        cms_nats_err err = cms_nats_js_publish(ob->nats, w->subject, w->event_id, NULL, w->payload,
                                               w->len, published, &ob->ctx[ob->next]);
        if (err == CMS_NATS_EBUSY)
            break;
        ob->next++;
        if (err != CMS_NATS_OK) {
            w->state = ROW_FAILED;
            ob->failed = true;
            cms_log_warn("outbox publish refused", "{s:s, s:s}", "event_id", w->event_id, "error",
                         cms_nats_strerror(err));
            break;
        }
        w->state = ROW_INFLIGHT;
        ob->inflight++;
    }
    if (ob->inflight > 0)
        return; /* a completion calls again */
    if (!ob->failed && ob->state == RELAY_PUBLISHING && ob->next < ob->nrows) {
        /* full with other publishers' messages: look again shortly */
        uv_timer_start(&ob->timer, publish_retry, 5, 0);
        return;
    }
    if (ob->failed)
        ob->hold = true; /* the rows read next wait out a backoff */
    else
        cms_backoff_reset(&ob->backoff);
    read_batch(ob);
}

void cms_outbox_kick(cms_outbox *ob)
{
    if (ob == NULL)
        return;
    ob->kicked = true;
    if (ob->state == RELAY_IDLE)
        read_batch(ob);
}

uint64_t cms_outbox_published(const cms_outbox *ob)
{
    return ob->published;
}

int cms_outbox_create(uv_loop_t *loop, cms_pg *pg, cms_nats *nats, const cms_outbox_options *o,
                      cms_outbox **out)
{
    if (loop == NULL || pg == NULL || nats == NULL || o == NULL || o->source == NULL || out == NULL)
        return CMS_PG_EINVAL;
    cms_outbox *ob = calloc(1, sizeof *ob);
    if (ob == NULL || (ob->source = strdup(o->source)) == NULL) {
        free(ob);
        return CMS_PG_ENOMEM;
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
    cms_uuid holder;
    cms_uuid_v7(&holder);
    cms_uuid_format(&holder, ob->holder);
    ob->lease_ms = 10 * ob->o.poll_ms < 10000 ? 10000 : 10 * ob->o.poll_ms;
    cms_backoff_init(&ob->backoff, BACKOFF_MIN_MS, (uint64_t)ob->o.backoff_max_ms);
    uv_timer_init(loop, &ob->timer);
    ob->timer.data = ob;
    cms_metrics *m = cms_metrics_default();
    ob->m_published = cms_metrics_counter(m, "cms_outbox_published_total",
                                          "outbox rows acknowledged by the stream", NULL);
    ob->m_failed = cms_metrics_counter(m, "cms_outbox_publish_failures_total",
                                       "outbox publishes that failed and will be retried", NULL);
    ob->m_batch =
        cms_metrics_gauge(m, "cms_outbox_batch_rows", "rows in the last outbox read", NULL);
    ob->state = RELAY_IDLE;
    read_batch(ob);
    *out = ob;
    return CMS_PG_OK;
}

void cms_outbox_close(cms_outbox *ob, void (*closed)(void *arg), void *arg)
{
    if (ob == NULL || ob->draining || ob->state == RELAY_CLOSED)
        return;
    ob->closed = closed;
    ob->closed_arg = arg;
    ob->draining = true;
    if (ob->state == RELAY_IDLE)
        read_batch(ob); /* rows committed just now, or an empty read that closes */
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
    free(ob->source);
    free(ob);
}
