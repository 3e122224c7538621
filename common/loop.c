/* Process lifecycle on one loop; see loop.h.
 *
 * Completion of the drain is never acted on inside the caller of
 * cms_proc_hook_done: the close hooks run from a 0 ms timer of their own, so
 * a module that reports "done" from deep inside one of its callbacks is not
 * torn down while that callback is still on the stack. */
#include "loop.h"

#include <jansson.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fsm.h"
#include "log.h"
#include "metrics.h"

#define LAG_INTERVAL_MS 10

/* Lateness of the probe, in seconds: from the usual jitter of a timer
 * (well under a millisecond) to a stall that a liveness probe would notice. */
static const double lag_bounds[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                    0.05,   0.1,     0.25,   0.5,   1,      2.5,   5};

typedef struct drain_hook {
    char *name;
    cms_proc_hook_cb cb;
    void *arg;
    bool done;
} drain_hook;

typedef struct close_hook {
    cms_proc_close_cb cb;
    void *arg;
} close_hook;

struct cms_proc {
    uv_loop_t *loop;
    cms_proc_state state;
    uint64_t drain_timeout_ms;

    uv_signal_t sigterm, sigint;
    uv_timer_t drain_timer; /* the drain deadline */
    uv_timer_t close_timer; /* 0 ms: runs the close hooks outside hook_done's caller */
    uv_timer_t lag_timer;
    int open_handles; /* ours, still not closed */

    drain_hook *hooks;
    size_t nhooks, pending;
    bool starting; /* inside the loop that starts the drain hooks */
    close_hook *closers;
    size_t nclosers;

    int exit_code;
    uint64_t lag_prev_ns; /* 0 until the probe first fires */
    double lag_last_ms;
    cms_histogram *lag_hist; /* shared by every cms_proc of the process */
};

static const char *const proc_names[] = {CMS_PROC_STATES(CMS_ENUM_TEXT)};
static const bool proc_moves[CMS_PROC_NSTATES][CMS_PROC_NSTATES] = {
    [CMS_PROC_RUNNING] = {[CMS_PROC_DRAINING] = true},
    [CMS_PROC_DRAINING] = {[CMS_PROC_CLOSED] = true},
};
static const cms_fsm proc_fsm = CMS_FSM_INIT("process", CMS_LOG_INFO, proc_names, proc_moves);

const char *cms_proc_state_name(cms_proc_state s)
{
    return cms_fsm_name(&proc_fsm, s);
}

/* The only place the state changes: running -> draining -> closed. */
static void set_state(cms_proc *p, cms_proc_state to)
{
    p->state = (cms_proc_state)cms_fsm_step(&proc_fsm, p->state, to, NULL);
}

static void on_handle_closed(uv_handle_t *h)
{
    cms_proc *p = h->data;
    p->open_handles--;
}

static void close_own_handles(cms_proc *p)
{
    uv_handle_t *hs[] = {(uv_handle_t *)&p->sigterm, (uv_handle_t *)&p->sigint,
                         (uv_handle_t *)&p->drain_timer, (uv_handle_t *)&p->close_timer,
                         (uv_handle_t *)&p->lag_timer};
    for (size_t i = 0; i < sizeof hs / sizeof hs[0]; i++) {
        if (hs[i]->data != NULL && !uv_is_closing(hs[i]))
            uv_close(hs[i], on_handle_closed);
    }
}

static void log_pending(cms_proc *p, const char *why)
{
    json_t *names = json_array();
    for (size_t i = 0; i < p->nhooks; i++) {
        if (!p->hooks[i].done)
            json_array_append_new(names, json_string(p->hooks[i].name));
    }
    if (cms_log_enabled(CMS_LOG_WARN))
        cms_log_warn("drain forced", "{s:s, s:o, s:I}", "reason", why, "pending", names,
                     "drain_timeout_ms", (json_int_t)p->drain_timeout_ms);
    else
        json_decref(names);
}

/* Leaves draining for closed: close hooks newest first, then our handles. */
static void finish(cms_proc *p, const char *forced_why)
{
    if (p->state != CMS_PROC_DRAINING)
        return;
    set_state(p, CMS_PROC_CLOSED);
    if (forced_why) {
        p->exit_code = 1;
        log_pending(p, forced_why);
    }
    uv_timer_stop(&p->drain_timer);
    uv_timer_stop(&p->close_timer);
    for (size_t i = p->nclosers; i-- > 0;)
        p->closers[i].cb(p, p->closers[i].arg);
    close_own_handles(p);
}

static void on_close_timer(uv_timer_t *t)
{
    finish(t->data, NULL);
}

static void on_drain_timer(uv_timer_t *t)
{
    cms_proc *p = t->data;
    finish(p, p->pending > 0 ? "drain timeout" : NULL);
}

static void maybe_finish(cms_proc *p)
{
    if (p->state == CMS_PROC_DRAINING && !p->starting && p->pending == 0)
        uv_timer_start(&p->close_timer, on_close_timer, 0, 0);
}

static void start_drain(cms_proc *p, const char *why)
{
    if (p->state != CMS_PROC_RUNNING)
        return;
    set_state(p, CMS_PROC_DRAINING);
    cms_log_info("draining", "{s:s, s:i, s:I}", "cause", why, "hooks", (int)p->nhooks,
                 "drain_timeout_ms", (json_int_t)p->drain_timeout_ms);
    uv_timer_start(&p->drain_timer, on_drain_timer, p->drain_timeout_ms, 0);
    p->pending = p->nhooks;
    /* All hooks are started before any completion is acted on, so a hook
     * that finishes inside its call cannot close the process under the rest. */
    p->starting = true;
    for (size_t i = 0; i < p->nhooks && p->state == CMS_PROC_DRAINING; i++)
        p->hooks[i].cb(p, (int)i, p->hooks[i].arg);
    p->starting = false;
    maybe_finish(p);
}

static void on_signal(uv_signal_t *s, int signum)
{
    cms_proc *p = s->data;
    const char *name = signum == SIGTERM ? "SIGTERM" : "SIGINT";
    if (p->state == CMS_PROC_RUNNING)
        start_drain(p, name);
    else if (p->state == CMS_PROC_DRAINING)
        finish(p, "second signal");
}

static void on_lag_timer(uv_timer_t *t)
{
    cms_proc *p = t->data;
    uint64_t now = uv_hrtime();
    if (p->lag_prev_ns == 0) {
        /* the first turn also carries whatever setup ran before cms_proc_run */
        p->lag_prev_ns = now;
        return;
    }
    double late = ((double)(now - p->lag_prev_ns) / 1e6) - LAG_INTERVAL_MS;
    if (late < 0)
        late = 0;
    p->lag_prev_ns = now;
    p->lag_last_ms = late;
    cms_histogram_observe(p->lag_hist, late / 1000.0);
}

int cms_proc_create(uv_loop_t *loop, uint64_t drain_timeout_ms, cms_proc **out)
{
    int rc = 0;
    cms_proc *p = calloc(1, sizeof *p);
    if (p == NULL)
        return UV_ENOMEM;
    p->loop = loop; /* calloc: CMS_PROC_RUNNING */
    p->drain_timeout_ms = drain_timeout_ms;

    /* A peer that goes away mid-write must give EPIPE, not kill the process. */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);

    /* handle->data doubles as "initialised" for close_own_handles */
    if ((rc = uv_signal_init(loop, &p->sigterm)) < 0)
        goto out;
    p->sigterm.data = p;
    p->open_handles++;
    if ((rc = uv_signal_init(loop, &p->sigint)) < 0)
        goto out;
    p->sigint.data = p;
    p->open_handles++;
    if ((rc = uv_timer_init(loop, &p->drain_timer)) < 0)
        goto out;
    p->drain_timer.data = p;
    p->open_handles++;
    if ((rc = uv_timer_init(loop, &p->close_timer)) < 0)
        goto out;
    p->close_timer.data = p;
    p->open_handles++;
    if ((rc = uv_timer_init(loop, &p->lag_timer)) < 0)
        goto out;
    p->lag_timer.data = p;
    p->open_handles++;
    if ((rc = uv_signal_start(&p->sigterm, on_signal, SIGTERM)) < 0 ||
        (rc = uv_signal_start(&p->sigint, on_signal, SIGINT)) < 0)
        goto out;
    /* the lag probe alone must not keep the loop alive */
    uv_timer_start(&p->lag_timer, on_lag_timer, LAG_INTERVAL_MS, LAG_INTERVAL_MS);
    uv_unref((uv_handle_t *)&p->lag_timer);
    p->lag_hist = cms_metrics_histogram(cms_metrics_default(), "cms_loop_lag_seconds",
                                        "Lateness of the event loop's 10 ms probe timer", NULL,
                                        lag_bounds, sizeof lag_bounds / sizeof lag_bounds[0]);
    *out = p;
    p = NULL;
out:
    if (p) {
        cms_log_error("process setup failed", "{s:s}", "error", uv_strerror(rc));
        cms_proc_destroy(p);
    }
    return rc;
}

int cms_proc_on_drain_named(cms_proc *p, const char *name, cms_proc_hook_cb cb, void *arg)
{
    if (p == NULL || cb == NULL || p->state != CMS_PROC_RUNNING)
        return -1;
    drain_hook *hs = realloc(p->hooks, (p->nhooks + 1) * sizeof *hs);
    if (hs == NULL)
        return -1;
    p->hooks = hs;
    char fallback[32];
    if (name == NULL) {
        snprintf(fallback, sizeof fallback, "hook-%zu", p->nhooks);
        name = fallback;
    }
    char *copy = strdup(name);
    if (copy == NULL)
        return -1;
    p->hooks[p->nhooks] = (drain_hook){.name = copy, .cb = cb, .arg = arg, .done = false};
    return (int)p->nhooks++;
}

int cms_proc_on_drain(cms_proc *p, cms_proc_hook_cb cb, void *arg)
{
    return cms_proc_on_drain_named(p, NULL, cb, arg);
}

void cms_proc_hook_done(cms_proc *p, int hook_id)
{
    /* "done" before draining started means nothing: the hook has not run */
    if (p == NULL || p->state != CMS_PROC_DRAINING || hook_id < 0 || (size_t)hook_id >= p->nhooks ||
        p->hooks[hook_id].done)
        return;
    p->hooks[hook_id].done = true;
    p->pending--;
    cms_log_debug("drain hook done", "{s:s, s:i}", "hook", p->hooks[hook_id].name, "pending",
                  (int)p->pending);
    maybe_finish(p);
}

int cms_proc_on_close(cms_proc *p, cms_proc_close_cb cb, void *arg)
{
    if (p == NULL || cb == NULL || p->state != CMS_PROC_RUNNING)
        return -1;
    close_hook *cs = realloc(p->closers, (p->nclosers + 1) * sizeof *cs);
    if (cs == NULL)
        return -1;
    p->closers = cs;
    p->closers[p->nclosers++] = (close_hook){.cb = cb, .arg = arg};
    return 0;
}

void cms_proc_stop(cms_proc *p)
{
    if (p && p->state == CMS_PROC_RUNNING)
        start_drain(p, "stop");
}

cms_proc_state cms_proc_state_get(const cms_proc *p)
{
    return p->state;
}

uv_loop_t *cms_proc_loop(const cms_proc *p)
{
    return p->loop;
}

static const char *handle_type_name(uv_handle_type t)
{
    const char *n = uv_handle_type_name(t);
    return n ? n : "unknown";
}

static void report_open_handle(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        cms_log_warn("handle left open after close", "{s:s, s:b}", "type",
                     handle_type_name(h->type), "active", uv_is_active(h));
}

int cms_proc_run(cms_proc *p)
{
    /* uv_run also returns early after uv_stop(); keep going until nothing
     * is left, so every close callback has run when we return. */
    while (uv_run(p->loop, UV_RUN_DEFAULT) != 0 || uv_loop_alive(p->loop)) {
    }
    if (p->state != CMS_PROC_CLOSED) {
        cms_log_error("loop ran out of work before the process closed", "{s:s}", "state",
                      cms_proc_state_name(p->state));
        return 1;
    }
    uv_walk(p->loop, report_open_handle, NULL);
    return p->exit_code;
}

void cms_proc_destroy(cms_proc *p)
{
    if (p == NULL)
        return;
    if (p->open_handles > 0) {
        /* never run (e.g. a failed startup): close ours and let libuv finish */
        close_own_handles(p);
        while (p->open_handles > 0)
            uv_run(p->loop, UV_RUN_NOWAIT); /* close callbacks run every turn */
    }
    for (size_t i = 0; i < p->nhooks; i++)
        free(p->hooks[i].name);
    free(p->hooks);
    free(p->closers);
    free(p);
}

double cms_proc_lag_last_ms(const cms_proc *p)
{
    return p->lag_last_ms;
}
