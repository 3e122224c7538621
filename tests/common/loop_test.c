/* loop: the running -> draining -> closed lifecycle, hook order, the drain
 * timeout, signals, loop lag. Every test ends with uv_loop_close() == 0. */
#include <criterion/criterion.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "loop.h"
#include "metrics.h"

typedef struct fixture {
    uv_loop_t loop;
    cms_proc *p;
    uv_timer_t watchdog; /* fails the test instead of hanging it */
    uv_timer_t later;    /* finishes a hook from a later loop turn */
    int later_hook;
    bool watchdog_fired;
    char events[256]; /* order of hook calls, e.g. "d0 d1 c1 c0 " */
    int close_hooks_run;
} fixture;

static void note(fixture *f, const char *ev)
{
    size_t n = strlen(f->events);
    snprintf(f->events + n, sizeof f->events - n, "%s ", ev);
}

static void on_watchdog(uv_timer_t *t)
{
    fixture *f = t->data;
    f->watchdog_fired = true;
    cms_proc_stop(f->p);
}

/* The fixture's own handles close in the first close hook registered, so
 * they go last, like a service's outermost resources. */
static void close_fixture_handles(cms_proc *p, void *arg)
{
    (void)p;
    fixture *f = arg;
    note(f, "cF");
    uv_close((uv_handle_t *)&f->watchdog, NULL);
    uv_close((uv_handle_t *)&f->later, NULL);
}

static void fixture_init(fixture *f, uint64_t drain_timeout_ms)
{
    memset(f, 0, sizeof *f);
    cms_log_init("loop_test", CMS_LOG_WARN, NULL);
    cr_assert_eq(uv_loop_init(&f->loop), 0);
    cr_assert_eq(cms_proc_create(&f->loop, drain_timeout_ms, &f->p), 0);
    cr_assert_eq(cms_proc_state_get(f->p), CMS_PROC_RUNNING);
    cr_assert_eq(cms_proc_loop(f->p), &f->loop);
    uv_timer_init(&f->loop, &f->watchdog);
    uv_timer_init(&f->loop, &f->later);
    f->watchdog.data = f->later.data = f;
    uv_timer_start(&f->watchdog, on_watchdog, 5000, 0);
    uv_unref((uv_handle_t *)&f->watchdog);
    cr_assert_eq(cms_proc_on_close(f->p, close_fixture_handles, f), 0);
}

static int fixture_run_and_close(fixture *f)
{
    int code = cms_proc_run(f->p);
    cr_assert_eq(cms_proc_state_get(f->p), CMS_PROC_CLOSED);
    cms_proc_destroy(f->p);
    cr_assert_eq(uv_loop_close(&f->loop), 0, "every handle must be closed");
    cr_assert_not(f->watchdog_fired, "watchdog fired: events %s", f->events);
    return code;
}

/* ---- hooks ---- */

static void hook_done_now(cms_proc *p, int id, void *arg)
{
    fixture *f = arg;
    char ev[16];
    snprintf(ev, sizeof ev, "d%d", id);
    note(f, ev);
    cr_assert_eq(cms_proc_state_get(p), CMS_PROC_DRAINING);
    cms_proc_hook_done(p, id);
    cms_proc_hook_done(p, id); /* idempotent */
}

static void on_later(uv_timer_t *t)
{
    fixture *f = t->data;
    note(f, "done-later");
    cms_proc_hook_done(f->p, f->later_hook);
}

static void hook_done_later(cms_proc *p, int id, void *arg)
{
    (void)p;
    fixture *f = arg;
    char ev[16];
    snprintf(ev, sizeof ev, "d%d", id);
    note(f, ev);
    f->later_hook = id;
    uv_timer_start(&f->later, on_later, 20, 0);
}

static void hook_never_done(cms_proc *p, int id, void *arg)
{
    (void)p;
    fixture *f = arg;
    char ev[16];
    snprintf(ev, sizeof ev, "d%d", id);
    note(f, ev);
}

static void close_a(cms_proc *p, void *arg)
{
    fixture *f = arg;
    cr_assert_eq(cms_proc_state_get(p), CMS_PROC_CLOSED);
    note(f, "cA");
    f->close_hooks_run++;
}

static void close_b(cms_proc *p, void *arg)
{
    (void)p;
    fixture *f = arg;
    note(f, "cB");
    f->close_hooks_run++;
}

static void stop_soon(uv_timer_t *t)
{
    fixture *f = t->data;
    note(f, "stop");
    cms_proc_stop(f->p);
    cms_proc_stop(f->p); /* idempotent */
}

Test(loop, clean_drain_runs_hooks_in_order_and_closes_in_reverse)
{
    fixture f;
    fixture_init(&f, 2000);
    cr_assert_eq(cms_proc_on_drain(f.p, hook_done_now, &f), 0);
    cr_assert_eq(cms_proc_on_drain_named(f.p, "slow", hook_done_later, &f), 1);
    cr_assert_eq(cms_proc_on_drain(f.p, hook_done_now, &f), 2);
    cr_assert_eq(cms_proc_on_close(f.p, close_a, &f), 0);
    cr_assert_eq(cms_proc_on_close(f.p, close_b, &f), 0);
    cms_proc_hook_done(f.p, 1); /* before draining: ignored */
    uv_timer_start(&f.later, stop_soon, 1, 0);
    int code = fixture_run_and_close(&f);
    cr_assert_eq(code, 0);
    cr_assert_str_eq(f.events, "stop d0 d1 d2 done-later cB cA cF ");
}

Test(loop, all_hooks_done_inside_their_calls)
{
    fixture f;
    fixture_init(&f, 2000);
    cms_proc_on_drain(f.p, hook_done_now, &f);
    cms_proc_on_drain(f.p, hook_done_now, &f);
    cms_proc_on_close(f.p, close_a, &f);
    cms_proc_stop(f.p); /* before the loop even runs */
    cr_assert_eq(cms_proc_state_get(f.p), CMS_PROC_DRAINING);
    cr_assert_eq(f.close_hooks_run, 0, "close hooks run from the loop, not inside stop");
    cr_assert_lt(cms_proc_on_drain(f.p, hook_done_now, &f), 0, "no new hooks once draining");
    cr_assert_lt(cms_proc_on_close(f.p, close_a, &f), 0);
    cr_assert_eq(fixture_run_and_close(&f), 0);
    cr_assert_str_eq(f.events, "d0 d1 cA cF ");
}

Test(loop, no_hooks)
{
    fixture f;
    fixture_init(&f, 2000);
    uv_timer_start(&f.later, stop_soon, 1, 0);
    cr_assert_eq(fixture_run_and_close(&f), 0);
    cr_assert_str_eq(f.events, "stop cF ");
}

Test(loop, drain_timeout_forces_close_with_exit_1)
{
    fixture f;
    fixture_init(&f, 50);
    cms_proc_on_drain_named(f.p, "stuck", hook_never_done, &f);
    cms_proc_on_drain(f.p, hook_done_now, &f);
    cms_proc_on_close(f.p, close_a, &f);
    uint64_t t0 = uv_hrtime();
    uv_timer_start(&f.later, stop_soon, 1, 0);
    FILE *log = tmpfile();
    cms_log_init("loop_test", CMS_LOG_WARN, log);
    int code = fixture_run_and_close(&f);
    cms_log_init("loop_test", CMS_LOG_WARN, NULL);
    double ms = (double)(uv_hrtime() - t0) / 1e6;
    cr_assert_eq(code, 1);
    cr_assert_str_eq(f.events, "stop d0 d1 cA cF ");
    cr_assert_geq(ms, 45, "closed after %.1f ms, before the timeout", ms);
    rewind(log);
    char line[1024] = "";
    bool found = false;
    while (fgets(line, sizeof line, log))
        found = found || (strstr(line, "drain forced") && strstr(line, "\"pending\":[\"stuck\"]"));
    fclose(log);
    cr_assert(found, "the log names the pending hook");
}

Test(loop, zero_timeout_with_synchronous_hooks_is_clean)
{
    fixture f;
    fixture_init(&f, 0);
    cms_proc_on_drain(f.p, hook_done_now, &f);
    uv_timer_start(&f.later, stop_soon, 1, 0);
    cr_assert_eq(fixture_run_and_close(&f), 0);
}

/* ---- signals ---- */

static void raise_term(uv_timer_t *t)
{
    fixture *f = t->data;
    note(f, "SIGTERM");
    raise(SIGTERM);
}

Test(loop, sigterm_drains)
{
    fixture f;
    fixture_init(&f, 2000);
    cms_proc_on_drain(f.p, hook_done_now, &f);
    uv_timer_start(&f.later, raise_term, 1, 0);
    cr_assert_eq(fixture_run_and_close(&f), 0);
    cr_assert_str_eq(f.events, "SIGTERM d0 cF ");
}

static void hook_raise_again(cms_proc *p, int id, void *arg)
{
    (void)p;
    (void)id;
    fixture *f = arg;
    note(f, "d-stuck");
    raise(SIGINT); /* a second signal while draining */
}

Test(loop, second_signal_forces_close)
{
    fixture f;
    fixture_init(&f, 5000);
    cms_proc_on_drain(f.p, hook_raise_again, &f);
    cms_proc_on_close(f.p, close_a, &f);
    uv_timer_start(&f.later, raise_term, 1, 0);
    FILE *log = tmpfile();
    cms_log_init("loop_test", CMS_LOG_WARN, log);
    uint64_t t0 = uv_hrtime();
    int code = fixture_run_and_close(&f);
    cms_log_init("loop_test", CMS_LOG_WARN, NULL);
    fclose(log);
    cr_assert_eq(code, 1);
    cr_assert_lt((double)(uv_hrtime() - t0) / 1e6, 2000, "did not wait for the drain timeout");
    cr_assert_str_eq(f.events, "SIGTERM d-stuck cA cF ");
}

Test(loop, sigpipe_is_ignored)
{
    fixture f;
    fixture_init(&f, 2000);
    struct sigaction sa;
    cr_assert_eq(sigaction(SIGPIPE, NULL, &sa), 0);
    cr_assert_eq(sa.sa_handler, SIG_IGN);
    cms_proc_stop(f.p);
    cr_assert_eq(fixture_run_and_close(&f), 0);
}

/* ---- lag ---- */

static void block_loop(uv_timer_t *t)
{
    fixture *f = t->data;
    /* simulate a handler that hogs the loop for 60 ms */
    uint64_t until = uv_hrtime() + 60 * 1000000ull;
    while (uv_hrtime() < until) {
    }
    uv_timer_start(&f->later, stop_soon, 30, 0); /* let the lag probe fire again */
}

/* The value of one series in rendered text, or NAN if absent. */
static double series_value(const char *text, const char *series)
{
    size_t n = strlen(series);
    for (const char *p = text; (p = strstr(p, series)) != NULL; p += n) {
        if ((p == text || p[-1] == '\n') && p[n] == ' ')
            return strtod(p + n + 1, NULL);
    }
    return NAN;
}

Test(loop, lag_is_a_histogram_of_every_probe)
{
    fixture f;
    fixture_init(&f, 2000);
    uv_timer_start(&f.later, block_loop, 20, 0);
    cr_assert_eq(fixture_run_and_close(&f), 0);
    /* destroy freed the proc; the histogram lives in the default registry */
    char *text = NULL;
    size_t len;
    cr_assert_eq(cms_metrics_render(cms_metrics_default(), &text, &len), 0);
    cr_assert(strstr(text, "# TYPE cms_loop_lag_seconds histogram\n") != NULL, "%s", text);
    cr_assert_null(strstr(text, "cms_loop_lag_max_seconds"), "the old high-water mark is gone");
    /* 100 µs .. 5 s, then +Inf, in order */
    const char *bounds[] = {"0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005",
                            "0.01",   "0.025",   "0.05",   "0.1",   "0.25",   "0.5",
                            "1",      "2.5",     "5",      "+Inf"};
    const char *at = text;
    for (size_t i = 0; i < sizeof bounds / sizeof bounds[0]; i++) {
        char want[64];
        snprintf(want, sizeof want, "\ncms_loop_lag_seconds_bucket{le=\"%s\"} ", bounds[i]);
        const char *p = strstr(at, want);
        cr_assert_not_null(p, "bucket %s missing or out of order:\n%s", bounds[i], text);
        at = p + 1;
    }
    size_t nbuckets = 0;
    for (const char *p = text; (p = strstr(p, "cms_loop_lag_seconds_bucket{")) != NULL; p++)
        nbuckets++;
    cr_assert_eq(nbuckets, sizeof bounds / sizeof bounds[0], "no other bucket");
    double count = series_value(text, "cms_loop_lag_seconds_count");
    double sum = series_value(text, "cms_loop_lag_seconds_sum");
    double fast = series_value(text, "cms_loop_lag_seconds_bucket{le=\"0.025\"}");
    cr_assert_geq(count - fast, 1, "the 60 ms stall is above 25 ms:\n%s", text);
    cr_assert_geq(sum, 0.035, "lag sum %.4f s after a 60 ms block", sum);
    cr_assert_lt(sum, 1.0);
    free(text);
}

/* Reads the last lag once per loop turn, after the timers. */
typedef struct lag_watch {
    uv_check_t check;
    cms_proc *p;
    double max_seen_ms;
} lag_watch;

static void watch_lag(uv_check_t *c)
{
    lag_watch *w = c->data;
    double v = cms_proc_lag_last_ms(w->p);
    if (v > w->max_seen_ms)
        w->max_seen_ms = v;
}

static void close_watch(cms_proc *p, void *arg)
{
    (void)p;
    lag_watch *w = arg;
    /* the turn that runs the stall's probe may also be the one that stops
     * the loop, before any check phase: look once more */
    watch_lag(&w->check);
    uv_close((uv_handle_t *)&w->check, NULL);
}

Test(loop, lag_last_is_the_latest_probe)
{
    fixture f;
    fixture_init(&f, 2000);
    lag_watch w = {.p = f.p};
    cr_assert_eq(uv_check_init(&f.loop, &w.check), 0);
    w.check.data = &w;
    cr_assert_eq(uv_check_start(&w.check, watch_lag), 0);
    cr_assert_eq(cms_proc_on_close(f.p, close_watch, &w), 0);
    uv_timer_start(&f.later, block_loop, 20, 0);
    cr_assert_eq(fixture_run_and_close(&f), 0);
    /* some turn saw the stall's probe as the latest */
    cr_assert_geq(w.max_seen_ms, 35.0, "last lag at most %.1f ms around a 60 ms block",
                  w.max_seen_ms);
    cr_assert_lt(w.max_seen_ms, 1000.0);
}

Test(loop, destroy_without_run_closes_handles)
{
    uv_loop_t loop;
    cr_assert_eq(uv_loop_init(&loop), 0);
    cms_proc *p = NULL;
    cr_assert_eq(cms_proc_create(&loop, 100, &p), 0);
    cms_proc_destroy(p);
    cms_proc_destroy(NULL);
    cr_assert_eq(uv_loop_close(&loop), 0);
}
