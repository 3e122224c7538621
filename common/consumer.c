/* The idempotent event consumer; see consumer.h.
 *
 * Where an event is, between its delivery and its settling (each holds it
 * once): in its resource's queue, waiting for the events before it or for a
 * job slot (ITEM_QUEUED); running, its job or its dead letter in flight
 * (ITEM_RUNNING); or waiting for the retry timer after a transient failure
 * (ITEM_RETRYING), its queue waiting with it. Events that are not valid
 * envelopes have no resource: they are dead-lettered at once, outside any
 * queue. A resource's queue exists while it holds an event, and is on the
 * ready list while its first event waits for a job slot. */
#include "consumer.h"

#include "backoff.h"
#include "bus.h"
#include "fsm.h"
#include "lease.h"
#include "log.h"
#include "metrics.h"
#include "pbarena.h"

#include "hashtab.h"
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_MAX_INFLIGHT 256
#define DEFAULT_MAX_CONCURRENT 8
#define DEFAULT_ACK_WAIT_MS 30000
#define DEFAULT_LEASE_MS 10000
#define DEFAULT_RETENTION_MS (INT64_C(7) * 24 * 3600 * 1000)
#define DEFAULT_RETRY_MIN_MS 100
#define DEFAULT_RETRY_MAX_MS 10000
#define PRUNE_BATCH 10000
#define PRUNE_EVERY_MS (INT64_C(3600) * 1000)
#define ARENA_FIRST 1024
#define NAME_MAX_LEN 64
#define KEY_MAX (CMS_BUS_TYPE_MAX + 1 + 64)

/* SQL reads best as written */
// clang-format off
static const char SQL_RECORD[] =
    "INSERT INTO processed_events (consumer, event_id) VALUES ($1, $2::uuid)";
static const char SQL_PRUNE[] =
    "DELETE FROM processed_events WHERE ctid IN (SELECT ctid FROM processed_events "
    "WHERE consumer = $1 AND processed_at < now() - $2::int8 * interval '1 millisecond' "
    "LIMIT 10000)";
// clang-format on
/* the event's record is the second lead statement, after the lease's check */
#define RECORD_LEAD 1

/*   CONS_STANDBY   another replica holds the lease (or none has been taken
 *                  yet): not pulling
 *   CONS_WAITING   took over a lease that had expired: waits one ack_wait,
 *                  so that what the old holder held comes back first
 *   CONS_ACTIVE    holds the lease: pulling (unless the database is away)
 *   CONS_DRAINING  not pulling: finishing what it holds, then releasing
 *   CONS_CLOSED    final */
#define CONS_STATES(X)                                                                             \
    X(CONS_STANDBY, "standby")                                                                     \
    X(CONS_WAITING, "waiting")                                                                     \
    X(CONS_ACTIVE, "active")                                                                       \
    X(CONS_DRAINING, "draining")                                                                   \
    X(CONS_CLOSED, "closed")
typedef enum { CONS_STATES(CMS_ENUM_ITEM) CONS_NSTATES } cons_state;
static const char *const cons_names[] = {CONS_STATES(CMS_ENUM_TEXT)};
static const bool cons_moves[CONS_NSTATES][CONS_NSTATES] = {
    [CONS_STANDBY] =
        {[CONS_WAITING] = true, [CONS_ACTIVE] = true, [CONS_DRAINING] = true, [CONS_CLOSED] = true},
    [CONS_WAITING] =
        {[CONS_STANDBY] = true, [CONS_ACTIVE] = true, [CONS_DRAINING] = true, [CONS_CLOSED] = true},
    [CONS_ACTIVE] = {[CONS_STANDBY] = true, [CONS_DRAINING] = true, [CONS_CLOSED] = true},
    [CONS_DRAINING] = {[CONS_CLOSED] = true},
};
static const cms_fsm cons_fsm =
    CMS_FSM_INIT("event consumer", CMS_LOG_INFO, cons_names, cons_moves);

#define ITEM_STATES(X)                                                                             \
    X(ITEM_QUEUED, "queued") X(ITEM_RUNNING, "running") X(ITEM_RETRYING, "retrying")
typedef enum { ITEM_STATES(CMS_ENUM_ITEM) ITEM_NSTATES } item_state;
static const char *const item_names[] = {ITEM_STATES(CMS_ENUM_TEXT)};
static const bool item_moves[ITEM_NSTATES][ITEM_NSTATES] = {
    [ITEM_QUEUED] = {[ITEM_RUNNING] = true},
    [ITEM_RUNNING] = {[ITEM_RETRYING] = true},
    [ITEM_RETRYING] = {[ITEM_QUEUED] = true},
};
static const cms_fsm item_fsm =
    CMS_FSM_INIT("consumed event", CMS_LOG_DEBUG, item_names, item_moves);

static const char *const err_names[] = {CMS_CONSUMER_ERRORS(CMS_ENUM_TEXT)};

#define OUTCOMES(X)                                                                                \
    X(OUT_APPLIED, "applied")                                                                      \
    X(OUT_SKIPPED, "skipped")                                                                      \
    X(OUT_DUPLICATE, "duplicate")                                                                  \
    X(OUT_DEAD, "dead_lettered")
typedef enum { OUTCOMES(CMS_ENUM_ITEM) NOUTCOMES } outcome;
static const char *const outcome_names[] = {OUTCOMES(CMS_ENUM_TEXT)};

typedef struct kq kq;

typedef struct item {
    struct cms_consumer *c;
    struct item *next;      /* in its queue */
    struct item *rnext;     /* in the retry list */
    kq *q;                  /* its resource's queue (an invalid envelope has one of its own) */
    cms_nats_msg *msg;      /* settled and destroyed when it leaves */
    cms_pbarena *arena;     /* the decoded envelope's */
    Cms__V1__Envelope *env; /* NULL: not a valid envelope */
    /* set once it is to be dead-lettered (a static string): what the dead
     * letter says, also on a retry of the dead letter */
    const char *dead_reason;
    item_state state;
    unsigned failures; /* transient ones in a row */
    uint64_t retry_at; /* loop time */
    uint64_t touched;  /* loop time of its delivery or its last in-progress */
    uint64_t sent_ns;  /* its job's submit, for the commit's latency */
} item;

/* The events of one resource held now, in stream order. */
struct kq {
    /* "<resource_type>/<resource_id>"; "invalid/<stream seq>" for an
     * event that is not a valid envelope: a queue of its own */
    char key[KEY_MAX];
    item *head, *tail;
    bool ready; /* on the ready list: its head waits for a slot */
    kq *rnext;
    UT_hash_handle hh;
};

struct cms_consumer {
    uv_loop_t *loop;
    cms_pg *pg;
    cms_nats *nats;
    cms_consumer_options o;
    char name[NAME_MAX_LEN], stream[NAME_MAX_LEN], filter[CMS_BUS_SUBJECT_MAX];
    /* its service's name, the name up to a '-': dead letters go to
     * cms.dlq.<service>, which that service's NATS user alone may publish on */
    char service[NAME_MAX_LEN];
    char retention[24];
    cms_lease lease;
    cons_state state;
    cms_nats_consumer *nc;
    bool db_away;            /* not pulling: the database took no work lately */
    bool lease_asking;       /* a take-or-renew job is in flight */
    uint64_t lease_asked_at; /* loop time the take-or-renew in flight was sent */
    /* loop time until which the lease is surely ours (its last renewal's
     * send plus lease_ms): past it nothing is pulled, even if no answer
     * said it was lost (a process frozen beyond its lease) */
    uint64_t held_until;
    bool pulled;     /* draining from active: what it pulled must all come in ... */
    bool pull_quiet; /* ... before the lease goes: the last fetch has ended */
    bool releasing;  /* draining: the lease's release is sent (nothing is taken after) */
    kq *queues;      /* by key */
    kq *ready_head, *ready_tail;
    item *retry_head; /* by retry_at */
    size_t held;      /* events held, not yet settled */
    int jobs;         /* events' jobs and dead letters in flight */
    int side_jobs;    /* lease and prune jobs in flight */
    uv_timer_t lease_timer, retry_timer, touch_timer, prune_timer, wait_timer;
    int open_timers;
    void (*drained)(void *arg);
    void *drained_arg;
    void (*closed)(void *arg);
    void *closed_arg;
    char labels[96]; /* consumer="<name>" */
    cms_counter *m_out[NOUTCOMES], *m_retries;
    cms_histogram *m_handler, *m_commit;
    cms_gauge *m_lag, *m_held, *m_active;
};

static void pump(cms_consumer *c);
static void stand_by(cms_consumer *c);
static void maybe_drained(cms_consumer *c);

const char *cms_consumer_strerror(cms_consumer_err e)
{
    return cms_enum_text(err_names, CMS_CONSUMER_NERRORS, e);
}

size_t cms_consumer_service_len(const char *name)
{
    return strcspn(name, "-");
}

int64_t cms_consumer_min_retention_ms(int64_t ack_wait_ms)
{
    int64_t min = INT64_C(3600) * 1000;
    if (10 * ack_wait_ms > min)
        min = 10 * ack_wait_ms;
    if (2 * (int64_t)CMS_BUS_DEDUPE_WINDOW_MS > min)
        min = 2 * (int64_t)CMS_BUS_DEDUPE_WINDOW_MS;
    return min;
}

/* ---- states ---- */

/* Applies events: holds the lease, or is draining what it pulled. */
static bool working(const cms_consumer *c)
{
    return c->state == CONS_ACTIVE || (c->state == CONS_DRAINING && c->pulled);
}

static bool lease_sure(const cms_consumer *c)
{
    return uv_now(c->loop) < c->held_until;
}

/* Pulls exactly while it holds the lease (surely), is not draining, and
 * the database takes work. */
static void update_pulling(cms_consumer *c)
{
    if (c->nc != NULL && c->state != CONS_DRAINING) /* draining: quiesced */
        cms_nats_consumer_pause(c->nc, c->state != CONS_ACTIVE || c->db_away || !lease_sure(c));
}

static void set_state(cms_consumer *c, cons_state to)
{
    c->state = (cons_state)cms_fsm_step(&cons_fsm, c->state, to, c->name);
    cms_gauge_set(c->m_active, c->state == CONS_ACTIVE || c->state == CONS_DRAINING ? 1 : 0);
    update_pulling(c);
}

static void set_item(item *it, item_state to)
{
    it->state = (item_state)cms_fsm_step(&item_fsm, it->state, to, it->c->name);
}

static void set_db_away(cms_consumer *c, bool away)
{
    if (c->db_away == away)
        return;
    c->db_away = away;
    cms_log(away ? CMS_LOG_WARN : CMS_LOG_INFO,
            away ? "consumer: database away, not pulling" : "consumer: database back, pulling",
            "{s:s}", "consumer", c->name);
    update_pulling(c);
}

/* ---- queues ---- */

static void make_ready(cms_consumer *c, kq *q)
{
    if (q->ready)
        return;
    q->ready = true;
    q->rnext = NULL;
    if (c->ready_tail)
        c->ready_tail->rnext = q;
    else
        c->ready_head = q;
    c->ready_tail = q;
}

static kq *take_ready(cms_consumer *c)
{
    kq *q = c->ready_head;
    if (q == NULL)
        return NULL;
    c->ready_head = q->rnext;
    if (c->ready_head == NULL)
        c->ready_tail = NULL;
    q->ready = false;
    q->rnext = NULL;
    return q;
}

static void item_free(item *it)
{
    cms_pbarena_destroy(it->arena);
    free(it);
}

static void retry_unlink(cms_consumer *c, item *it)
{
    for (item **pp = &c->retry_head; *pp != NULL; pp = &(*pp)->rnext) {
        if (*pp == it) {
            *pp = it->rnext;
            break;
        }
    }
    it->rnext = NULL;
}

static void ready_unlink(cms_consumer *c, kq *q)
{
    if (!q->ready)
        return;
    kq *prev = NULL;
    for (kq *r = c->ready_head; r != NULL; prev = r, r = r->rnext) {
        if (r == q) {
            if (prev)
                prev->rnext = r->rnext;
            else
                c->ready_head = r->rnext;
            if (c->ready_tail == r)
                c->ready_tail = prev;
            break;
        }
    }
    q->ready = false;
    q->rnext = NULL;
}

/* Out of the books: unlinked from its queue (whose next event then gets
 * its turn, if this one was the head) and freed. */
static void item_forget(item *it)
{
    cms_consumer *c = it->c;
    kq *q = it->q;
    if (it->state == ITEM_RETRYING)
        retry_unlink(c, it);
    item *prev = NULL;
    for (item *x = q->head; x != NULL && x != it; x = x->next)
        prev = x;
    if (prev)
        prev->next = it->next;
    else
        q->head = it->next;
    if (q->tail == it)
        q->tail = prev;
    if (q->head == NULL) {
        ready_unlink(c, q);
        HASH_DEL(c->queues, q);
        free(q);
    } else if (prev == NULL) {
        make_ready(c, q);
    }
    item_free(it);
    c->held--;
    cms_gauge_set(c->m_held, (double)c->held);
}

/* Given back unsettled: redelivered to whoever pulls next. */
static void item_give_back(item *it)
{
    if (cms_nats_msg_nak(it->msg, 0) != CMS_NATS_OK)
        cms_log_debug("consumer: nak not sent; the server redelivers after ack_wait", NULL);
    cms_nats_msg_destroy(it->msg);
    item_forget(it);
}

/* it and what follows it in its queue go back, in their order (what waits
 * behind a running event is given back only after it, so that the stream
 * redelivers them in order). */
static void give_back_from(item *it)
{
    while (it != NULL) {
        item *next = it->next;
        item_give_back(it); /* frees its queue after the last: next was taken first */
        it = next;
    }
}

/* Settled: acked (it is done with) and freed. */
static void item_done(item *it, outcome o)
{
    cms_consumer *c = it->c;
    cms_counter_add(c->m_out[o], 1);
    cms_nats_err e = cms_nats_msg_ack(it->msg);
    if (e != CMS_NATS_OK) /* redelivered later: its record makes it a duplicate then */
        cms_log_warn("consumer: ack not sent", "{s:s, s:s}", "consumer", c->name, "error",
                     cms_nats_strerror(e));
    /* no longer working (the lease went meanwhile): what waited behind it goes back */
    item *rest = working(c) ? NULL : it->next;
    cms_nats_msg_destroy(it->msg);
    item_forget(it);
    give_back_from(rest);
    pump(c);
    maybe_drained(c);
}

/* ---- retries ---- */

static void retry_fired(uv_timer_t *t);

static void arm_retry(cms_consumer *c)
{
    if (c->retry_head == NULL || c->state == CONS_CLOSED) {
        uv_timer_stop(&c->retry_timer);
        return;
    }
    uint64_t now = uv_now(c->loop), at = c->retry_head->retry_at;
    uv_timer_start(&c->retry_timer, retry_fired, at > now ? at - now : 0, 0);
}

/* A transient failure: the event (and its resource's queue) waits. */
static void retry_later(item *it)
{
    cms_consumer *c = it->c;
    set_item(it, ITEM_RETRYING);
    cms_counter_add(c->m_retries, 1);
    uint64_t delay =
        cms_backoff_delay((uint64_t)c->o.retry_min_ms, (uint64_t)c->o.retry_max_ms, it->failures);
    if (it->failures < 64)
        it->failures++;
    it->retry_at = uv_now(c->loop) + delay;
    item **pp = &c->retry_head;
    while (*pp != NULL && (*pp)->retry_at <= it->retry_at)
        pp = &(*pp)->rnext;
    it->rnext = *pp;
    *pp = it;
    arm_retry(c);
    maybe_drained(c);
}

/* Due retries get their turn again, at the head of their queues. */
static void retry_fired(uv_timer_t *t)
{
    cms_consumer *c = t->data;
    if (c->db_away && cms_pg_ready(c->pg) == 0) {
        /* still away: look again later, without piling jobs into the pool */
        uv_timer_start(&c->retry_timer, retry_fired, (uint64_t)c->o.retry_min_ms, 0);
        return;
    }
    set_db_away(c, false);
    uint64_t now = uv_now(c->loop);
    while (c->retry_head != NULL && c->retry_head->retry_at <= now) {
        item *it = c->retry_head;
        c->retry_head = it->rnext;
        it->rnext = NULL;
        set_item(it, ITEM_QUEUED);
        make_ready(c, it->q); /* it is its queue's head */
    }
    arm_retry(c);
    pump(c);
}

/* ---- dead letters ---- */

static void dead_stored(void *arg, bool stored)
{
    item *it = arg;
    cms_consumer *c = it->c;
    c->jobs--;
    if (!stored && !working(c)) {
        give_back_from(it);
        maybe_drained(c);
        return;
    }
    if (!stored) {
        /* CMS_DLQ cannot take it now: again later; it is never dropped */
        retry_later(it);
        return;
    }
    char labels[160];
    snprintf(labels, sizeof labels, "%s,reason=\"%s\"", c->labels, it->dead_reason);
    cms_counter_add(cms_metrics_counter(cms_metrics_default(), "cms_consumer_dead_letters_total",
                                        "Events a consumer dead-lettered, by reason", labels),
                    1);
    cms_log_warn("consumer: event dead-lettered", "{s:s, s:s, s:s}", "consumer", c->name, "reason",
                 it->dead_reason, "subject", cms_nats_msg_subject(it->msg));
    item_done(it, OUT_DEAD);
}

static void run_dead(item *it)
{
    cms_consumer *c = it->c;
    cms_bus_err err =
        cms_bus_dead_letter(c->nats, c->service, it->msg, it->dead_reason, dead_stored, it);
    if (err == CMS_BUS_OK) {
        c->jobs++;
        return;
    }
    cms_log_warn("consumer: dead letter not sent; retrying", "{s:s, s:s}", "consumer", c->name,
                 "error", cms_bus_strerror(err));
    retry_later(it);
}

/* ---- jobs ---- */

static bool is_data_error(const char *sqlstate)
{
    return strncmp(sqlstate, "22", 2) == 0 || strncmp(sqlstate, "23", 2) == 0;
}

static void job_done(void *arg, cms_pg_err err, const cms_pg_result *res)
{
    item *it = arg;
    cms_consumer *c = it->c;
    c->jobs--;
    cms_histogram_observe(c->m_commit, (double)(uv_hrtime() - it->sent_ns) / 1e9);
    if (c->state == CONS_CLOSED) {
        /* committed or not, the stream has it still: settled by the next holder */
        give_back_from(it);
        return;
    }
    if (err == CMS_PG_OK) {
        if (c->o.committed != NULL)
            c->o.committed(c->o.arg, it->env);
        item_done(it, OUT_APPLIED);
        return;
    }
    const char *state = err == CMS_PG_ESQL ? cms_pg_result_sqlstate(res) : "";
    if (err == CMS_PG_ESQL && cms_lease_lost(res)) {
        /* the lease expired (the database was away longer than it) or went
         * to another replica: nothing of this was written, and nothing
         * more may be: every held event goes back, in order */
        cms_log_warn("consumer: lease lost while applying; giving back what it holds", "{s:s}",
                     "consumer", c->name);
        if (c->state == CONS_ACTIVE || c->state == CONS_WAITING)
            stand_by(c);
        give_back_from(it);
        maybe_drained(c);
        return;
    }
    if (!working(c)) { /* the lease went while it ran */
        give_back_from(it);
        maybe_drained(c);
        return;
    }
    if (err == CMS_PG_ESQL && cms_pg_result_lead_failed(res) == RECORD_LEAD &&
        strcmp(state, "23505") == 0) {
        /* applied before (a redelivery, a second publish): nothing to do */
        item_done(it, OUT_DUPLICATE);
        return;
    }
    if (err == CMS_PG_ESQL && cms_pg_result_failed(res) >= 0 && is_data_error(state)) {
        /* the event's own statements are refused for their data: it can never be applied */
        cms_log_warn("consumer: event refused by the database", "{s:s, s:s, s:s}", "consumer",
                     c->name, "sqlstate", state, "error", cms_pg_result_message(res));
        it->dead_reason = "rejected_by_database";
        run_dead(it);
        return;
    }
    /* the database could not do it now (away, a timeout, a deadlock, a lost
     * connection whose commit is unknown: the record makes a second run safe) */
    cms_log_warn("consumer: event not applied now; retrying", "{s:s, s:s, s:s}", "consumer",
                 c->name, "error", cms_pg_strerror(err), "sqlstate", state);
    if (err == CMS_PG_EUNAVAILABLE || err == CMS_PG_ECONN || cms_pg_ready(c->pg) == 0)
        set_db_away(c, true);
    retry_later(it);
}

static bool add_record(cms_consumer *c, const item *it, cms_pg_job *job)
{
    const char *v[] = {c->name, it->env->event_id};
    return cms_lease_add_check(&c->lease, job) == CMS_PG_OK &&
           cms_pg_job_lead_sql(job, SQL_RECORD, 2, v, NULL, NULL) == CMS_PG_OK;
}

static void run_handler(item *it)
{
    cms_consumer *c = it->c;
    if (cms_pg_ready(c->pg) == 0) {
        /* no connection: nothing is handed to the pool to wait there */
        set_db_away(c, true);
        retry_later(it);
        return;
    }
    cms_pg_job *job = cms_pg_job_new();
    if (job == NULL || !add_record(c, it, job)) {
        cms_pg_job_free(job);
        retry_later(it);
        return;
    }
    const char *reason = NULL;
    uint64_t t0 = uv_hrtime();
    cms_consumer_verdict v = c->o.handle(c->o.arg, it->env, job, &reason);
    cms_histogram_observe(c->m_handler, (double)(uv_hrtime() - t0) / 1e9);
    switch (v) {
    case CMS_CONSUMER_APPLY:
        break;
    case CMS_CONSUMER_SKIP:
        cms_pg_job_free(job);
        item_done(it, OUT_SKIPPED);
        return;
    case CMS_CONSUMER_DEAD:
        cms_pg_job_free(job);
        it->dead_reason = reason != NULL && *reason ? reason : "refused";
        run_dead(it);
        return;
    case CMS_CONSUMER_RETRY:
        cms_pg_job_free(job);
        retry_later(it);
        return;
    }
    it->sent_ns = uv_hrtime();
    cms_pg_err err = cms_pg_submit(c->pg, &job, job_done, it);
    if (err != CMS_PG_OK) {
        if (err == CMS_PG_EBUSY || err == CMS_PG_EUNAVAILABLE)
            set_db_away(c, cms_pg_ready(c->pg) == 0);
        retry_later(it);
        return;
    }
    c->jobs++;
}

static void start_item(item *it)
{
    set_item(it, ITEM_RUNNING);
    if (it->dead_reason != NULL)
        run_dead(it);
    else
        run_handler(it);
}

/* Starts the ready queues' heads while job slots are free. */
static void pump(cms_consumer *c)
{
    while (working(c) && c->jobs < c->o.max_concurrent) {
        kq *q = take_ready(c);
        if (q == NULL)
            break;
        if (q->head != NULL && q->head->state == ITEM_QUEUED)
            start_item(q->head);
    }
}

/* ---- arrivals ---- */

static void on_msg(void *arg, cms_nats_msg *m)
{
    cms_consumer *c = arg;
    /* Taken while the lease may still be ours, even unsure of it: each job
     * checks the lease first, so nothing is applied once it is lost, and
     * what is held goes back in order then. A message given back here while
     * later ones of its resource are taken would come back after them.
     * Draining, the fetch under way still delivers: the lease is kept for it. */
    bool ours =
        c->state == CONS_ACTIVE || (c->state == CONS_DRAINING && c->pulled && !c->releasing);
    if (!ours) {
        /* the lease went before this fetch ended: for whoever pulls next, who
         * waits one ack_wait after taking an expired lease */
        if (cms_nats_msg_nak(m, 0) != CMS_NATS_OK)
            cms_log_debug("consumer: nak not sent", NULL);
        cms_nats_msg_destroy(m);
        return;
    }
    cms_gauge_set(c->m_lag, (double)cms_nats_msg_num_pending(m));
    item *it = calloc(1, sizeof *it); /* ITEM_QUEUED */
    kq *q = NULL;
    char key[KEY_MAX];
    if (it == NULL || cms_pbarena_create(ARENA_FIRST, cms_nats_max_payload(c->nats) * 4 + 65536,
                                         &it->arena) != 0) {
        free(it);
        cms_nats_msg_destroy(m); /* unsettled: redelivered after ack_wait */
        return;
    }
    it->c = c;
    it->msg = m;
    it->touched = uv_now(c->loop);
    cms_bus_reason why =
        cms_bus_envelope_decode(cms_nats_msg_data(m), cms_nats_msg_len(m), it->arena, &it->env);
    if (why == CMS_BUS_VALID) {
        snprintf(key, sizeof key, "%s/%s", it->env->resource_type, it->env->resource_id);
    } else {
        it->env = NULL;
        it->dead_reason = cms_bus_reason_name(why);
        snprintf(key, sizeof key, "invalid/%llu", (unsigned long long)cms_nats_msg_stream_seq(m));
    }
    HASH_FIND_STR(c->queues, key, q);
    if (q == NULL) {
        if ((q = calloc(1, sizeof *q)) == NULL) {
            item_free(it);
            cms_nats_msg_destroy(m);
            return;
        }
        snprintf(q->key, sizeof q->key, "%s", key);
        HASH_ADD_STR(c->queues, key, q);
    }
    it->q = q;
    if (q->tail != NULL) {
        q->tail->next = it;
    } else {
        q->head = it;
        make_ready(c, q);
    }
    q->tail = it;
    c->held++;
    cms_gauge_set(c->m_held, (double)c->held);
    pump(c);
}

/* Every held event goes back to the stream but the queues whose head is
 * running: those go back after it, when it ends. */
static void give_back_waiting(cms_consumer *c)
{
    kq *q, *tmp;
    HASH_ITER(hh, c->queues, q, tmp)
    {
        if (q->head->state != ITEM_RUNNING)
            give_back_from(q->head); /* frees q */
    }
}

/* Another replica holds the lease, or this one's expired: not pulling,
 * nothing held. */
static void stand_by(cms_consumer *c)
{
    set_state(c, CONS_STANDBY);
    uv_timer_stop(&c->wait_timer);
    give_back_waiting(c);
}

/* ---- the lease ---- */

static void lease_fired(uv_timer_t *t);

static void lease_done(void *arg, cms_pg_err err, const cms_pg_result *res)
{
    cms_consumer *c = arg;
    c->side_jobs--;
    c->lease_asking = false;
    cms_lease_take_result took = err == CMS_PG_OK
                                     ? cms_lease_took(&c->lease, cms_pg_result_get(res, 0))
                                     : CMS_LEASE_NOT_HELD;
    if (err == CMS_PG_OK && took != CMS_LEASE_NOT_HELD)
        c->held_until = c->lease_asked_at + (uint64_t)c->o.lease_ms;
    if (c->state == CONS_CLOSED || c->state == CONS_DRAINING) {
        maybe_drained(c);
        return;
    }
    if (err != CMS_PG_OK) {
        /* kept as it is: a holder's jobs are fenced if it is lost meanwhile */
        cms_log_debug("consumer: lease not renewed now", "{s:s, s:s}", "consumer", c->name, "error",
                      cms_pg_strerror(err));
        return;
    }
    switch (took) {
    case CMS_LEASE_NOT_HELD:
        if (c->state == CONS_ACTIVE || c->state == CONS_WAITING) {
            cms_log_warn("consumer: lease held by another replica; standing by", "{s:s}",
                         "consumer", c->name);
            stand_by(c);
        }
        break;
    case CMS_LEASE_TAKEN_OVER:
        if (c->state == CONS_STANDBY) {
            /* its last holder may still have held events: they come back after
             * one ack_wait, and must come before anything newer */
            set_state(c, CONS_WAITING);
            uv_timer_start(&c->wait_timer, lease_fired, (uint64_t)c->o.ack_wait_ms, 0);
            cms_log_info("consumer: took over an expired lease; waiting one ack_wait", "{s:s, s:I}",
                         "consumer", c->name, "ack_wait_ms", (json_int_t)c->o.ack_wait_ms);
        }
        break;
    case CMS_LEASE_TAKEN:
    case CMS_LEASE_RENEWED:
        if (c->state == CONS_STANDBY)
            set_state(c, CONS_ACTIVE);
        else
            update_pulling(c);
        break;
    }
}

static void ask_lease(cms_consumer *c)
{
    if (c->lease_asking)
        return;
    cms_pg_job *job = cms_pg_job_new();
    if (job == NULL || cms_lease_add_take(&c->lease, job) != CMS_PG_OK) {
        cms_pg_job_free(job);
        return;
    }
    cms_pg_job_binary_results(job);
    uint64_t now = uv_now(c->loop);
    if (cms_pg_submit(c->pg, &job, lease_done, c) == CMS_PG_OK) {
        c->lease_asked_at = now;
        c->lease_asking = true;
        c->side_jobs++;
    }
}

static void lease_fired(uv_timer_t *t)
{
    cms_consumer *c = t->data;
    if (t == &c->wait_timer) {
        if (c->state == CONS_WAITING)
            set_state(c, CONS_ACTIVE);
        return;
    }
    update_pulling(c); /* stops pulling if renewals stopped answering */
    if (!c->releasing) /* released: not taken again before it closes */
        ask_lease(c);
}

/* ---- keeping held events from redelivery, pruning records ---- */

static void touch_fired(uv_timer_t *t)
{
    cms_consumer *c = t->data;
    /* a holder frozen past its lease must not keep what the next one waits for */
    if (!lease_sure(c))
        return;
    uint64_t now = uv_now(c->loop), half = (uint64_t)c->o.ack_wait_ms / 2;
    kq *q, *tmp;
    HASH_ITER(hh, c->queues, q, tmp)
    {
        for (item *it = q->head; it != NULL; it = it->next) {
            if (now - it->touched < half)
                continue;
            if (cms_nats_msg_in_progress(it->msg) == CMS_NATS_OK)
                it->touched = now;
        }
    }
}

static void prune_fired(uv_timer_t *t);

static void pruned(void *arg, cms_pg_err err, const cms_pg_result *res)
{
    cms_consumer *c = arg;
    c->side_jobs--;
    long n = err == CMS_PG_OK ? strtol(PQcmdTuples((PGresult *)cms_pg_result_get(res, 0)), NULL, 10)
                              : -1;
    if (n > 0)
        cms_log_info("consumer: processed_events pruned", "{s:s, s:i}", "consumer", c->name, "rows",
                     (int)n);
    /* a full batch: more may be due */
    if (n == PRUNE_BATCH && c->state == CONS_ACTIVE)
        uv_timer_start(&c->prune_timer, prune_fired, 100, 0);
    maybe_drained(c);
}

static void prune_fired(uv_timer_t *t)
{
    cms_consumer *c = t->data;
    uv_timer_start(&c->prune_timer, prune_fired, PRUNE_EVERY_MS, 0);
    if (c->state != CONS_ACTIVE) /* the holder prunes */
        return;
    cms_pg_job *job = cms_pg_job_new();
    const char *v[] = {c->name, c->retention};
    if (job == NULL || cms_pg_job_sql(job, SQL_PRUNE, 2, v, NULL, NULL) != CMS_PG_OK ||
        cms_pg_submit(c->pg, &job, pruned, c) != CMS_PG_OK) {
        cms_pg_job_free(job);
        return;
    }
    c->side_jobs++;
}

/* ---- life ---- */

static void release_done(void *arg, cms_pg_err err, const cms_pg_result *res)
{
    (void)res;
    cms_consumer *c = arg;
    c->side_jobs--;
    if (err != CMS_PG_OK)
        cms_log_warn("consumer: lease not released; it expires", "{s:s}", "consumer", c->name);
    void (*done)(void *) = c->drained;
    c->drained = NULL;
    if (done != NULL)
        done(c->drained_arg);
}

static void pull_quieted(void *arg)
{
    cms_consumer *c = arg;
    c->pull_quiet = true;
    maybe_drained(c);
}

static void maybe_drained(cms_consumer *c)
{
    if (c->state != CONS_DRAINING || c->drained == NULL || c->held > 0 || c->jobs > 0 ||
        c->side_jobs > 0 || (c->pulled && !c->pull_quiet))
        return;
    /* nothing is held: the next holder may start at once */
    c->releasing = true;
    cms_pg_job *job = cms_pg_job_new();
    if (job != NULL && cms_lease_add_release(&c->lease, job) == CMS_PG_OK &&
        cms_pg_submit(c->pg, &job, release_done, c) == CMS_PG_OK) {
        c->side_jobs++;
        return;
    }
    cms_pg_job_free(job);
    void (*done)(void *) = c->drained;
    c->drained = NULL;
    done(c->drained_arg);
}

void cms_consumer_drain(cms_consumer *c, void (*done)(void *arg), void *arg)
{
    if (c == NULL || c->state == CONS_CLOSED || c->state == CONS_DRAINING) {
        if (done != NULL)
            done(arg);
        return;
    }
    bool held_lease = c->state == CONS_ACTIVE;
    c->pulled = held_lease;
    c->pull_quiet = !held_lease;
    set_state(c, CONS_DRAINING);
    uv_timer_stop(&c->wait_timer);
    c->drained = done;
    c->drained_arg = arg;
    if (held_lease) /* nothing new; what the fetch under way brings is finished too */
        cms_nats_consumer_quiesce(c->nc, pull_quieted, c);
    else
        cms_nats_consumer_pause(c->nc, true);
    if (!held_lease && c->held == 0 && c->jobs == 0 && c->side_jobs == 0) {
        c->drained = NULL;
        if (done != NULL)
            done(arg);
        return;
    }
    maybe_drained(c);
}

bool cms_consumer_ready(const cms_consumer *c, char *why, size_t len)
{
    if (!cms_nats_consumer_bound(c->nc)) {
        snprintf(why, len,
                 "consumer %s: durable %s on stream %s not bound (missing? run cms-migrate "
                 "provision)\n",
                 c->name, c->name, c->stream);
        return false;
    }
    if (c->db_away) {
        snprintf(why, len, "consumer %s: waiting for the database, not pulling\n", c->name);
        return false;
    }
    return true;
}

bool cms_consumer_active(const cms_consumer *c)
{
    return c->state == CONS_ACTIVE;
}

static void timer_closed(uv_handle_t *h)
{
    cms_consumer *c = h->data;
    if (--c->open_timers == 0 && c->closed != NULL)
        c->closed(c->closed_arg);
}

void cms_consumer_close(cms_consumer *c, void (*closed)(void *arg), void *arg)
{
    if (c == NULL || c->state == CONS_CLOSED)
        return;
    set_state(c, CONS_CLOSED);
    give_back_waiting(c);
    c->closed = closed;
    c->closed_arg = arg;
    uv_timer_t *timers[] = {&c->lease_timer, &c->retry_timer, &c->touch_timer, &c->prune_timer,
                            &c->wait_timer};
    for (size_t i = 0; i < sizeof timers / sizeof timers[0]; i++) {
        c->open_timers++;
        uv_close((uv_handle_t *)timers[i], timer_closed);
    }
}

void cms_consumer_destroy(cms_consumer *c)
{
    if (c == NULL)
        return;
    kq *q, *tmp;
    HASH_ITER(hh, c->queues, q, tmp)
    {
        /* only after the loop ended: what was running then has come back */
        while (q->head != NULL) {
            item *it = q->head;
            q->head = it->next;
            cms_nats_msg_destroy(it->msg);
            item_free(it);
        }
        HASH_DEL(c->queues, q);
        free(q);
    }
    free(c);
}

static bool valid_name(const char *s)
{
    return s != NULL && strlen(s) < NAME_MAX_LEN && cms_bus_valid_token(s, strlen(s));
}

static void make_metrics(cms_consumer *c)
{
    cms_metrics *m = cms_metrics_default();
    char labels[160];
    snprintf(c->labels, sizeof c->labels, "consumer=\"%s\"", c->name);
    for (int o = 0; o < NOUTCOMES; o++) {
        snprintf(labels, sizeof labels, "%s,outcome=\"%s\"", c->labels, outcome_names[o]);
        c->m_out[o] = cms_metrics_counter(m, "cms_consumer_events_total",
                                          "Events a consumer settled, by outcome", labels);
    }
    c->m_retries =
        cms_metrics_counter(m, "cms_consumer_retries_total",
                            "Events a consumer retried after a transient failure", c->labels);
    c->m_handler =
        cms_metrics_histogram(m, "cms_consumer_handler_duration_seconds",
                              "Time a consumer's handler took per event", c->labels, NULL, 0);
    c->m_commit =
        cms_metrics_histogram(m, "cms_consumer_commit_duration_seconds",
                              "Time from an event's job submit to its commit", c->labels, NULL, 0);
    c->m_lag = cms_metrics_gauge(
        m, "cms_consumer_lag_messages",
        "Messages of the stream not yet delivered to the consumer, at the last delivery",
        c->labels);
    c->m_held = cms_metrics_gauge(m, "cms_consumer_held_events",
                                  "Events a consumer holds, not yet settled", c->labels);
    c->m_active = cms_metrics_gauge(m, "cms_consumer_active",
                                    "1 while this replica holds the consumer's lease", c->labels);
}

cms_consumer_err cms_consumer_create(uv_loop_t *loop, cms_pg *pg, cms_nats *nats,
                                     const cms_consumer_options *o, cms_consumer **out)
{
    if (loop == NULL || pg == NULL || nats == NULL || o == NULL || out == NULL ||
        o->handle == NULL || !valid_name(o->name) || o->max_inflight < 0 || o->max_concurrent < 0 ||
        o->ack_wait_ms < 0 || o->lease_ms < 0 || o->retention_ms < 0 ||
        (o->stream != NULL && strlen(o->stream) >= NAME_MAX_LEN) ||
        (o->filter_subject != NULL && strlen(o->filter_subject) >= CMS_BUS_SUBJECT_MAX))
        return CMS_CONSUMER_EINVAL;
    cms_consumer *c = calloc(1, sizeof *c); /* CONS_STANDBY */
    if (c == NULL)
        return CMS_CONSUMER_ENOMEM;
    c->loop = loop;
    c->pg = pg;
    c->nats = nats;
    c->o = *o;
    snprintf(c->name, sizeof c->name, "%s", o->name);
    snprintf(c->service, sizeof c->service, "%.*s", (int)cms_consumer_service_len(o->name),
             o->name);
    snprintf(c->stream, sizeof c->stream, "%s", o->stream ? o->stream : CMS_BUS_EVENTS_STREAM);
    snprintf(c->filter, sizeof c->filter, "%s",
             o->filter_subject ? o->filter_subject : CMS_BUS_EVENT_SUBJECTS);
    c->o.name = c->name;
    c->o.stream = c->stream;
    c->o.filter_subject = c->filter;
#define DEFAULT(f, v)                                                                              \
    if (c->o.f <= 0)                                                                               \
        c->o.f = (v);
    DEFAULT(max_inflight, DEFAULT_MAX_INFLIGHT)
    DEFAULT(max_concurrent, DEFAULT_MAX_CONCURRENT)
    DEFAULT(ack_wait_ms, DEFAULT_ACK_WAIT_MS)
    DEFAULT(lease_ms, DEFAULT_LEASE_MS)
    DEFAULT(retention_ms, DEFAULT_RETENTION_MS)
    DEFAULT(retry_min_ms, DEFAULT_RETRY_MIN_MS)
    DEFAULT(retry_max_ms, DEFAULT_RETRY_MAX_MS)
#undef DEFAULT
    char lease[CMS_LEASE_NAME_MAX];
    snprintf(lease, sizeof lease, "consumer:%s", c->name);
    if (c->o.retention_ms < cms_consumer_min_retention_ms(c->o.ack_wait_ms) ||
        !cms_lease_init(&c->lease, lease, c->o.lease_ms)) {
        free(c);
        return CMS_CONSUMER_EINVAL;
    }
    snprintf(c->retention, sizeof c->retention, "%lld", (long long)c->o.retention_ms);
    cms_nats_consumer_options co = {.stream = c->stream,
                                    .durable = c->name,
                                    .filter_subject = strcmp(c->stream, CMS_BUS_EVENTS_STREAM) == 0
                                                          ? cms_bus_event_filter(c->filter)
                                                          : c->filter,
                                    .max_ack_pending = c->o.max_inflight,
                                    .fetch_batch = c->o.max_inflight,
                                    .ack_wait_ms = c->o.ack_wait_ms,
                                    /* until the lease is ours */
                                    .start_paused = true};
    if (cms_nats_consume(nats, &co, on_msg, c, &c->nc) != 0) {
        free(c);
        return CMS_CONSUMER_ENATS;
    }
    make_metrics(c);
    uv_timer_t *timers[] = {&c->lease_timer, &c->retry_timer, &c->touch_timer, &c->prune_timer,
                            &c->wait_timer};
    for (size_t i = 0; i < sizeof timers / sizeof timers[0]; i++) {
        uv_timer_init(loop, timers[i]);
        timers[i]->data = c;
    }
    uint64_t every = (uint64_t)c->o.lease_ms / 3;
    uv_timer_start(&c->lease_timer, lease_fired, 0, every ? every : 1);
    uint64_t touch = (uint64_t)c->o.ack_wait_ms / 4;
    uv_timer_start(&c->touch_timer, touch_fired, touch ? touch : 1, touch ? touch : 1);
    uv_timer_start(&c->prune_timer, prune_fired, (uint64_t)c->o.lease_ms, 0);
    cms_log_info("consumer started", "{s:s, s:s, s:s, s:i, s:i}", "consumer", c->name, "stream",
                 c->stream, "subject", c->filter, "max_inflight", c->o.max_inflight,
                 "max_concurrent", c->o.max_concurrent);
    *out = c;
    return CMS_CONSUMER_OK;
}
