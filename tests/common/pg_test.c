/* The PostgreSQL pool against the real server tests/run started. */
#include "pg.h"
#include "testenv.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

static char db[512];
static uv_loop_t loop;
static uv_timer_t watchdog;

static void watchdog_fired(uv_timer_t *t)
{
    (void)t;
    cr_assert_fail("watchdog: the test did not finish in time");
}

static void setup(void)
{
    cr_assert_eq(cms_test_db_create("pg_test", 0, db, sizeof db), 0);
    free(cms_test_sql(db, "CREATE TABLE t (id int PRIMARY KEY, v text)"));
    cr_assert_eq(uv_loop_init(&loop), 0);
    uv_timer_init(&loop, &watchdog);
    uv_timer_start(&watchdog, watchdog_fired, 30000, 0);
    uv_unref((uv_handle_t *)&watchdog);
}

static void teardown(void)
{
    uv_close((uv_handle_t *)&watchdog, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(&loop), 0, "a handle was left open");
    cms_test_db_drop(db);
}

TestSuite(pg, .init = setup, .fini = teardown);

typedef struct {
    int done;
    int ok;
    int esql;
    int other;
    cms_pg_err last;
    char value[64];
    char sqlstate[8];
    int failed;
    cms_pg *pg;
    int close_after;
} tally;

static void closed(void *arg)
{
    *(int *)arg = 1;
}

static void count(void *arg, cms_pg_err err, const cms_pg_result *res)
{
    tally *t = arg;
    t->done++;
    t->last = err;
    if (err == CMS_PG_OK) {
        t->ok++;
        const PGresult *r = cms_pg_result_get(res, cms_pg_result_count(res) - 1);
        if (r && PQntuples(r) > 0 && PQnfields(r) > 0)
            snprintf(t->value, sizeof t->value, "%s", PQgetvalue(r, 0, 0));
    } else if (err == CMS_PG_ESQL) {
        t->esql++;
        t->failed = cms_pg_result_failed(res);
        snprintf(t->sqlstate, sizeof t->sqlstate, "%s", cms_pg_result_sqlstate(res));
    } else {
        t->other++;
    }
}

static cms_pg *open_pool(const char *conninfo, int size)
{
    cms_pg_options o = {.conninfo = conninfo, .pool_size = size, .application_name = "pg_test"};
    cms_pg *pg = NULL;
    cr_assert_eq(cms_pg_create(&loop, &o, &pg), CMS_PG_OK);
    return pg;
}

static void close_pool(cms_pg *pg)
{
    int done = 0;
    cms_pg_close(pg, closed, &done);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert(done, "pool did not close");
    cms_pg_destroy(pg);
}

static void submit_sql(cms_pg *pg, const char *sql, int n, const char *const *v, tally *t)
{
    cms_pg_job *j = cms_pg_job_new();
    cr_assert_eq(cms_pg_job_sql(j, sql, n, v, NULL, NULL), CMS_PG_OK);
    cr_assert_eq(cms_pg_submit(pg, &j, count, t), CMS_PG_OK);
    cr_assert_null(j, "submit takes the job");
}

static void run_until(tally *t, int n)
{
    while (t->done < n && uv_run(&loop, UV_RUN_ONCE))
        ;
    cr_assert_eq(t->done, n, "%d of %d jobs completed", t->done, n);
}

Test(pg, query_with_text_and_binary_parameters)
{
    cms_pg *pg = open_pool(db, 1);
    tally t = {0};
    const char *v[] = {"41"};
    submit_sql(pg, "SELECT $1::int + 1", 1, v, &t);
    run_until(&t, 1);
    cr_assert_eq(t.last, CMS_PG_OK);
    cr_assert_str_eq(t.value, "42");

    /* a binary int4 parameter, and NULL */
    uint32_t be = htonl(7);
    const char *bv[] = {(const char *)&be, NULL};
    int len[] = {4, 0}, fmt[] = {1, 0};
    cms_pg_job *j = cms_pg_job_new();
    cr_assert_eq(
        cms_pg_job_sql(j, "SELECT $1::int4 * 6 || coalesce($2::text, '!')", 2, bv, len, fmt),
        CMS_PG_OK);
    be = 0; /* the job holds its own copy */
    cr_assert_eq(cms_pg_submit(pg, &j, count, &t), CMS_PG_OK);
    run_until(&t, 2);
    cr_assert_str_eq(t.value, "42!");
    close_pool(pg);
}

Test(pg, a_job_is_one_transaction)
{
    cms_pg *pg = open_pool(db, 1);
    tally t = {0};
    cms_pg_job *j = cms_pg_job_new();
    const char *a[] = {"1", "first"}, *b[] = {"1", "duplicate"};
    cr_assert_eq(cms_pg_job_sql(j, "INSERT INTO t VALUES ($1, $2)", 2, a, NULL, NULL), 0);
    cr_assert_eq(cms_pg_job_sql(j, "INSERT INTO t VALUES ($1, $2)", 2, b, NULL, NULL), 0);
    cr_assert_eq(cms_pg_job_sql(j, "SELECT 1", 0, NULL, NULL, NULL), 0);
    cr_assert_eq(cms_pg_submit(pg, &j, count, &t), CMS_PG_OK);
    run_until(&t, 1);
    cr_assert_eq(t.last, CMS_PG_ESQL);
    cr_assert_eq(t.failed, 1, "the second statement failed, got %d", t.failed);
    cr_assert_str_eq(t.sqlstate, "23505");
    submit_sql(pg, "SELECT count(*) FROM t", 0, NULL, &t);
    run_until(&t, 2);
    cr_assert_str_eq(t.value, "0", "the first insert was rolled back");

    /* and the connection is fine afterwards */
    submit_sql(pg, "INSERT INTO t VALUES (2, 'x') RETURNING id", 0, NULL, &t);
    run_until(&t, 3);
    cr_assert_eq(t.last, CMS_PG_OK);
    cr_assert_str_eq(t.value, "2");
    close_pool(pg);
}

Test(pg, prepared_statements_pipelined_over_the_pool)
{
    cms_pg *pg = open_pool(db, 2);
    const cms_pg_stmt *ins = cms_pg_prepare(pg, "ins", "INSERT INTO t VALUES ($1, $2)", 2, NULL);
    cr_assert_not_null(ins);
    cr_assert_null(cms_pg_prepare(pg, "ins", "SELECT 1", 0, NULL), "duplicate name refused");
    tally t = {0};
    enum { N = 2000 };
    for (int i = 0; i < N; i++) {
        char id[16];
        snprintf(id, sizeof id, "%d", i + 100);
        const char *v[] = {id, "v"};
        cms_pg_job *j = cms_pg_job_new();
        cr_assert_eq(cms_pg_job_exec(j, ins, v, NULL, NULL), CMS_PG_OK);
        cr_assert_eq(cms_pg_submit(pg, &j, count, &t), CMS_PG_OK);
    }
    run_until(&t, N);
    cr_assert_eq(t.ok, N, "%d ok, %d sql errors, %d other", t.ok, t.esql, t.other);
    submit_sql(pg, "SELECT count(*) FROM t", 0, NULL, &t);
    run_until(&t, N + 1);
    cr_assert_str_eq(t.value, "2000");
    cr_assert_eq(cms_pg_pending(pg), 0);
    close_pool(pg);
}

Test(pg, statement_timeout_applies)
{
    cms_pg_options o = {.conninfo = db, .pool_size = 1, .statement_timeout_ms = 100};
    cms_pg *pg = NULL;
    cr_assert_eq(cms_pg_create(&loop, &o, &pg), CMS_PG_OK);
    tally t = {0};
    submit_sql(pg, "SELECT pg_sleep(5)", 0, NULL, &t);
    run_until(&t, 1);
    cr_assert_eq(t.last, CMS_PG_ESQL);
    cr_assert_str_eq(t.sqlstate, "57014", "query_canceled, got %s", t.sqlstate);
    close_pool(pg);
}

Test(pg, full_queue_is_refused_at_once)
{
    cms_pg_options o = {.conninfo = db, .pool_size = 1, .queue_cap = 2};
    cms_pg *pg = NULL;
    cr_assert_eq(cms_pg_create(&loop, &o, &pg), CMS_PG_OK);
    tally t = {0};
    submit_sql(pg, "SELECT 1", 0, NULL, &t);
    submit_sql(pg, "SELECT 2", 0, NULL, &t);
    cms_pg_job *j = cms_pg_job_new();
    cr_assert_eq(cms_pg_job_sql(j, "SELECT 3", 0, NULL, NULL, NULL), 0);
    cr_assert_eq(cms_pg_submit(pg, &j, count, &t), CMS_PG_EBUSY);
    cr_assert_null(j);
    run_until(&t, 2);
    cr_assert_eq(t.ok, 2);
    close_pool(pg);
}

Test(pg, unreachable_server_fails_jobs_in_bounded_time)
{
    /* port 1 on loopback: nothing listens there */
    cms_pg_options o = {.conninfo = "host=127.0.0.1 port=1 dbname=x connect_timeout=2",
                        .pool_size = 2,
                        .queue_timeout_ms = 300,
                        .backoff_min_ms = 20,
                        .backoff_max_ms = 50};
    cms_pg *pg = NULL;
    cr_assert_eq(cms_pg_create(&loop, &o, &pg), CMS_PG_OK);
    tally t = {0};
    double t0 = cms_test_now_ms();
    submit_sql(pg, "SELECT 1", 0, NULL, &t);
    run_until(&t, 1);
    double took = cms_test_now_ms() - t0;
    cr_assert_eq(t.last, CMS_PG_EUNAVAILABLE, "got %s", cms_pg_strerror(t.last));
    cr_assert(took >= 250 && took < 3000, "expired after %.0f ms", took);
    cr_assert_eq(cms_pg_ready(pg), 0);
    close_pool(pg);
}

Test(pg, close_finishes_in_flight_jobs_then_refuses)
{
    cms_pg *pg = open_pool(db, 2);
    tally t = {0};
    for (int i = 0; i < 50; i++)
        submit_sql(pg, "SELECT pg_sleep(0.001)", 0, NULL, &t);
    int done = 0;
    cms_pg_close(pg, closed, &done);
    cms_pg_job *j = cms_pg_job_new();
    cr_assert_eq(cms_pg_job_sql(j, "SELECT 1", 0, NULL, NULL, NULL), 0);
    cr_assert_eq(cms_pg_submit(pg, &j, count, &t), CMS_PG_ECLOSED);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert(done);
    cr_assert_eq(t.ok, 50, "every job accepted before close completed: %d", t.ok);
    cms_pg_destroy(pg);
}

Test(pg, bad_arguments_are_refused)
{
    cms_pg *pg = NULL;
    cms_pg_options o = {0};
    cr_assert_eq(cms_pg_create(&loop, &o, &pg), CMS_PG_EINVAL);
    cms_pg_job *j = cms_pg_job_new();
    int len[] = {-1}, fmt[] = {1};
    const char *v[] = {"x"};
    cr_assert_eq(cms_pg_job_sql(j, "SELECT $1", 1, v, len, fmt), CMS_PG_EINVAL,
                 "a binary parameter needs a length");
    cr_assert_eq(cms_pg_job_sql(j, NULL, 0, NULL, NULL, NULL), CMS_PG_EINVAL);
    pg = open_pool(db, 1);
    cr_assert_eq(cms_pg_submit(pg, &j, count, NULL), CMS_PG_EINVAL, "an empty job");
    close_pool(pg);
}
