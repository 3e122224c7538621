/* The pool while PostgreSQL is stopped, killed and restarted under load:
 * idempotent jobs all land exactly once, the pool reconnects by itself and
 * re-prepares its statements, and the loop never stalls meanwhile. */
#include "pg.h"
#include "testenv.h"

#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

enum { TOTAL = 600, STOP_AT = 150 };

typedef struct {
    uv_loop_t loop;
    uv_timer_t tick, lag, watchdog, pause;
    cms_pg *pg;
    const cms_pg_stmt *ins;
    const char *down_verb;
    int submitted, ok, econn, other, inflight_unsafe_ok;
    int phase; /* 0 running, 1 stopping, 2 down, 3 starting, 4 back */
    uint64_t last_lag_ms;
    double max_lag_ms, max_lag_down_ms;
    int ctl_failed;
    int closed;
} fx;

static char db[512];

static void on_done(void *arg, cms_pg_err err, const cms_pg_result *res)
{
    (void)res;
    fx *f = arg;
    if (err == CMS_PG_OK)
        f->ok++;
    else if (err == CMS_PG_ECONN)
        f->econn++;
    else
        f->other++;
}

static void closed(void *arg)
{
    ((fx *)arg)->closed = 1;
}

static void after_start(int status, void *arg)
{
    fx *f = arg;
    f->ctl_failed |= status != 0;
    f->phase = 4;
}

static void pause_over(uv_timer_t *t)
{
    fx *f = t->data;
    f->phase = 3;
    cr_assert_eq(cms_test_ctl_spawn(&f->loop, "pg-start", after_start, f), 0);
}

static void after_stop(int status, void *arg)
{
    fx *f = arg;
    f->ctl_failed |= status != 0;
    f->phase = 2;
    /* keep the server down long enough for several reconnect attempts */
    uv_timer_start(&f->pause, pause_over, 1500, 0);
}

static void tick(uv_timer_t *t)
{
    fx *f = t->data;
    if (f->submitted >= STOP_AT && f->phase == 0) {
        f->phase = 1;
        cr_assert_eq(cms_test_ctl_spawn(&f->loop, f->down_verb, after_stop, f), 0);
    }
    for (int k = 0; k < 4 && f->submitted < TOTAL; k++) {
        char id[16];
        snprintf(id, sizeof id, "%d", f->submitted);
        const char *v[] = {id};
        cms_pg_job *j = cms_pg_job_new();
        cr_assert_eq(cms_pg_job_exec(j, f->ins, v, NULL, NULL), CMS_PG_OK);
        cms_pg_job_idempotent(j);
        cr_assert_eq(cms_pg_submit(f->pg, &j, on_done, f), CMS_PG_OK);
        f->submitted++;
    }
    if (f->submitted == TOTAL && f->ok + f->econn + f->other == TOTAL && f->phase == 4 &&
        !f->closed) {
        uv_timer_stop(&f->tick);
        uv_timer_stop(&f->lag);
        cms_pg_close(f->pg, closed, f);
    }
}

static void lag(uv_timer_t *t)
{
    fx *f = t->data;
    uint64_t now = uv_now(&f->loop);
    if (f->last_lag_ms) {
        double late = (double)(now - f->last_lag_ms) - 10.0;
        if (late > f->max_lag_ms)
            f->max_lag_ms = late;
        if (f->phase == 2 && late > f->max_lag_down_ms)
            f->max_lag_down_ms = late;
    }
    f->last_lag_ms = now;
}

static void watchdog_fired(uv_timer_t *t)
{
    fx *f = t->data;
    cr_assert_fail("watchdog: phase %d, %d submitted, %d ok, %d econn, %d other", f->phase,
                   f->submitted, f->ok, f->econn, f->other);
}

static void run_scenario(const char *down_verb)
{
    cr_assert_eq(cms_test_db_create("pg_fault", 0, db, sizeof db), 0);
    free(cms_test_sql(db, "CREATE TABLE t (id int PRIMARY KEY)"));
    fx f = {.down_verb = down_verb};
    cr_assert_eq(uv_loop_init(&f.loop), 0);
    cms_pg_options o = {.conninfo = db,
                        .pool_size = 2,
                        .queue_timeout_ms = 60000,
                        .backoff_min_ms = 50,
                        .backoff_max_ms = 400};
    cr_assert_eq(cms_pg_create(&f.loop, &o, &f.pg), CMS_PG_OK);
    f.ins = cms_pg_prepare(
        f.pg, "ins", "INSERT INTO t SELECT $1::int FROM pg_sleep(0.002) ON CONFLICT DO NOTHING", 1,
        NULL);
    uv_timer_t *timers[] = {&f.tick, &f.lag, &f.watchdog, &f.pause};
    for (size_t i = 0; i < 4; i++) {
        uv_timer_init(&f.loop, timers[i]);
        timers[i]->data = &f;
    }
    uv_timer_start(&f.tick, tick, 5, 5);
    uv_timer_start(&f.lag, lag, 10, 10);
    uv_timer_start(&f.watchdog, watchdog_fired, 90000, 0);
    while (!f.closed && uv_run(&f.loop, UV_RUN_ONCE))
        ;
    for (size_t i = 0; i < 4; i++)
        uv_close((uv_handle_t *)timers[i], NULL);
    uv_run(&f.loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(&f.loop), 0);
    cms_pg_destroy(f.pg);

    cr_assert_eq(f.ctl_failed, 0, "tests/lib/ctl failed");
    cr_assert_eq(f.ok, TOTAL, "idempotent jobs are re-sent, never lost: %d ok, %d econn, %d other",
                 f.ok, f.econn, f.other);
    char *rows = cms_test_sql(db, "SELECT count(*) FROM t");
    cr_assert_str_eq(rows, "600");
    free(rows);
    /* a blocking connect or a blocking wait for the server would stall the
     * loop for its whole timeout (seconds); a busy machine's scheduling
     * delays stay far below this bound */
    cr_assert_lt(f.max_lag_down_ms, 500.0, "loop lag while the server was down: %.1f ms",
                 f.max_lag_down_ms);
    cr_assert_lt(f.max_lag_ms, 1000.0, "loop lag overall: %.1f ms", f.max_lag_ms);
    cms_test_db_drop(db);
}

Test(pg_fault, survives_a_fast_shutdown_mid_queries, .timeout = 120)
{
    run_scenario("pg-stop");
}

Test(pg_fault, survives_a_crash_mid_queries, .timeout = 120)
{
    run_scenario("pg-kill");
}
