/* The due timer; see duetimer.h. The state says which job is out
 * (D_STATES below); a note that arrives meanwhile is kept in pending_us
 * and honoured when the state returns to D_IDLE. */
#include "duetimer.h"

#include "bus.h"
#include "fsm.h"
#include "log.h"

#include <stdlib.h>

#define LONGEST_WAIT_MS (3600 * 1000)
#define RETRY_MS 1000

/*   D_IDLE      the timer is set for next_us, or for the longest wait when
 *               nothing is known
 *   D_READING   the next due instant is being read
 *   D_DUE       what is due now is being read
 *   D_WRITING   a round is being written
 *   D_CLOSING   closed while a job was out: closed when it comes back
 *   D_CLOSED    final */
#define D_STATES(X)                                                                                \
    X(D_IDLE, "idle")                                                                              \
    X(D_READING, "reading")                                                                        \
    X(D_DUE, "due")                                                                                \
    X(D_WRITING, "writing")                                                                        \
    X(D_CLOSING, "closing")                                                                        \
    X(D_CLOSED, "closed")
typedef enum { D_STATES(CMS_ENUM_ITEM) D_NSTATES } d_state;
static const char *const d_names[] = {D_STATES(CMS_ENUM_TEXT)};
static const bool d_moves[D_NSTATES][D_NSTATES] = {
    [D_IDLE] = {[D_READING] = true, [D_DUE] = true, [D_CLOSED] = true},
    [D_READING] = {[D_IDLE] = true, [D_CLOSING] = true},
    [D_DUE] = {[D_IDLE] = true, [D_READING] = true, [D_WRITING] = true, [D_CLOSING] = true},
    [D_WRITING] = {[D_IDLE] = true, [D_READING] = true, [D_DUE] = true, [D_CLOSING] = true},
    [D_CLOSING] = {[D_CLOSED] = true},
};
static const cms_fsm d_fsm = CMS_FSM_INIT("due timer", CMS_LOG_DEBUG, d_names, d_moves);

struct cms_duetimer {
    uv_loop_t *loop;
    cms_pg *pg;
    const cms_duetimer_ops *ops;
    void *arg;
    d_state state;
    uv_timer_t timer;
    int64_t next_us;    /* what the timer is set for; 0: nothing known */
    int64_t pending_us; /* a note that came while a job was out; 0: none */
    bool nothing_due;   /* the last round found nothing due yet */
    void (*closed)(void *arg);
    void *closed_arg;
};

static void set_state(cms_duetimer *t, d_state to)
{
    t->state = (d_state)cms_fsm_step(&d_fsm, t->state, to, t->ops->what);
}

static void read_next(cms_duetimer *t);
static void read_due(cms_duetimer *t);

static void fired(uv_timer_t *h)
{
    cms_duetimer *t = h->data;
    if (t->state != D_IDLE)
        return;
    if (t->next_us == 0) {
        read_next(t); /* nothing was known: look again (another process may have added) */
        return;
    }
    read_due(t);
}

static void arm(cms_duetimer *t, int64_t at_us)
{
    int64_t wait_ms = LONGEST_WAIT_MS;
    if (at_us > 0) {
        int64_t d = at_us - cms_bus_now_us();
        /* round up, so the timer never fires just before the instant */
        wait_ms = d <= 0 ? 0 : (d + 999) / 1000 + 1;
        if (wait_ms > LONGEST_WAIT_MS)
            wait_ms = LONGEST_WAIT_MS;
    }
    t->next_us = at_us;
    uv_timer_start(&t->timer, fired, (uint64_t)wait_ms, 0);
}

static void timer_closed(uv_handle_t *h)
{
    cms_duetimer *t = h->data;
    if (t->closed)
        t->closed(t->closed_arg);
}

/* A job came back: true if it was the last thing a close waited for. */
static bool closed_now(cms_duetimer *t)
{
    if (t->state != D_CLOSING)
        return false;
    set_state(t, D_CLOSED);
    uv_close((uv_handle_t *)&t->timer, timer_closed);
    return true;
}

/* back to IDLE with the timer at at_us, or earlier for a note kept meanwhile */
static void idle_at(cms_duetimer *t, int64_t at_us)
{
    if (closed_now(t))
        return;
    set_state(t, D_IDLE);
    if (t->pending_us && (at_us == 0 || t->pending_us < at_us))
        at_us = t->pending_us;
    t->pending_us = 0;
    arm(t, at_us);
}

static void retry_later(cms_duetimer *t)
{
    if (closed_now(t))
        return;
    set_state(t, D_IDLE);
    t->next_us = cms_bus_now_us() + RETRY_MS * 1000;
    uv_timer_start(&t->timer, fired, RETRY_MS, 0);
}

static void next_read(void *arg, cms_pg_err err, const cms_pg_result *res)
{
    cms_duetimer *t = arg;
    if (err != CMS_PG_OK) {
        cms_log_warn("next due instant not read; retrying", "{s:s, s:s}", "timer", t->ops->what,
                     "error", cms_pg_strerror(err));
        retry_later(t);
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
    if (t->nothing_due && at <= cms_bus_now_us())
        at = cms_bus_now_us() + RETRY_MS * 1000;
    t->nothing_due = false;
    idle_at(t, at);
}

static bool submit(cms_duetimer *t, int (*add)(void *, cms_pg_job *), cms_pg_done_cb done)
{
    cms_pg_job *job = cms_pg_job_new();
    if (job == NULL || add(t->arg, job) != CMS_PG_OK) {
        cms_pg_job_free(job);
        return false;
    }
    return cms_pg_submit(t->pg, &job, done, t) == CMS_PG_OK;
}

static void read_next(cms_duetimer *t)
{
    if (!submit(t, t->ops->next, next_read)) {
        retry_later(t);
        return;
    }
    set_state(t, D_READING);
}

static void round_written(void *arg, cms_pg_err err, const cms_pg_result *res)
{
    cms_duetimer *t = arg;
    if (err != CMS_PG_OK) {
        cms_log_warn("due round not written; retrying", "{s:s, s:s, s:s}", "timer", t->ops->what,
                     "error", cms_pg_strerror(err), "detail",
                     res ? cms_pg_result_message(res) : "");
        retry_later(t);
        return;
    }
    bool more = t->ops->written(t->arg, res);
    if (closed_now(t))
        return;
    if (more)
        read_due(t);
    else
        read_next(t);
}

static void due_read(void *arg, cms_pg_err err, const cms_pg_result *res)
{
    cms_duetimer *t = arg;
    if (err != CMS_PG_OK) {
        cms_log_warn("due things not read; retrying", "{s:s, s:s}", "timer", t->ops->what, "error",
                     cms_pg_strerror(err));
        retry_later(t);
        return;
    }
    if (t->state == D_CLOSING) {
        (void)closed_now(t); /* nothing of the round was written: the next start does it */
        return;
    }
    cms_pg_job *job = cms_pg_job_new();
    int n = job ? t->ops->round(t->arg, res, job) : -1;
    if (n == 0) {
        cms_pg_job_free(job);
        t->nothing_due = true;
        read_next(t);
        return;
    }
    if (n < 0 || cms_pg_submit(t->pg, &job, round_written, t) != CMS_PG_OK) {
        cms_pg_job_free(job);
        retry_later(t);
        return;
    }
    set_state(t, D_WRITING);
}

static void read_due(cms_duetimer *t)
{
    if (!submit(t, t->ops->due, due_read)) {
        retry_later(t);
        return;
    }
    set_state(t, D_DUE);
}

int cms_duetimer_create(uv_loop_t *loop, cms_pg *pg, const cms_duetimer_ops *ops, void *arg,
                        cms_duetimer **out)
{
    if (ops == NULL || ops->next == NULL || ops->due == NULL || ops->round == NULL ||
        ops->written == NULL)
        return -1;
    cms_duetimer *t = calloc(1, sizeof *t);
    if (t == NULL)
        return -1;
    t->loop = loop;
    t->pg = pg;
    t->ops = ops;
    t->arg = arg;
    uv_timer_init(loop, &t->timer);
    t->timer.data = t;
    *out = t;
    return 0;
}

void cms_duetimer_start(cms_duetimer *t)
{
    if (t->state == D_IDLE)
        read_next(t);
}

void cms_duetimer_note(cms_duetimer *t, int64_t at_us)
{
    if (t == NULL || at_us <= 0 || t->state >= D_CLOSING)
        return;
    if (t->state != D_IDLE) {
        if (t->pending_us == 0 || at_us < t->pending_us)
            t->pending_us = at_us;
        return;
    }
    if (t->next_us == 0 || at_us < t->next_us)
        arm(t, at_us);
}

void cms_duetimer_close(cms_duetimer *t, void (*closed)(void *arg), void *arg)
{
    if (t == NULL || t->state >= D_CLOSING)
        return;
    t->closed = closed;
    t->closed_arg = arg;
    uv_timer_stop(&t->timer);
    if (t->state == D_IDLE) {
        set_state(t, D_CLOSED);
        uv_close((uv_handle_t *)&t->timer, timer_closed);
    } else {
        set_state(t, D_CLOSING); /* the job out comes back, then it closes */
    }
}

void cms_duetimer_destroy(cms_duetimer *t)
{
    free(t);
}
