/* cms-audit under faults, each on a backlog published before it starts:
 * killed with SIGKILL mid-way and restarted, PostgreSQL stopped mid-way and
 * started again, and two processes sharing one durable. Every time, each
 * event ends as exactly one row equal to it, and nothing is dead-lettered. */
#include "audit_fixture.h"
#include "testenv.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static audfx fx;
static bool pg_stopped;
static audfx_event *evs; /* the backlog; freed by fini, failed or not */
static size_t nevs;

static void fini(void)
{
    audfx_events_free(evs, nevs);
    evs = NULL;
    nevs = 0;
    if (pg_stopped) /* a failure while PostgreSQL was down: bring it back for the rest */
        (void)cms_test_ctl("pg-start");
    pg_stopped = false;
    audfx_teardown(&fx);
}

TestSuite(audit_fault, .fini = fini);

static void publish_backlog(size_t n)
{
    evs = audfx_events(&fx, nevs = n);
    for (size_t i = 0; i < n; i++)
        audfx_publish_event(&fx, &evs[i], NULL);
    audfx_publish_wait(&fx);
}

static void expect_rows(const audfx_event *want, size_t n)
{
    char report[2048];
    long diffs = audfx_check_rows(&fx, want, n, report, sizeof report);
    cr_assert_eq(diffs, 0, "%ld rows differ from the events: %s", diffs, report);
}

/* Polls the row count until it reaches lo; fails if it is already past hi
 * by then (the backlog went by too fast to act in its middle). */
static long wait_rows_between(pid_t pid, long lo, long hi)
{
    long rows = 0;
    AUDFX_WAIT((rows = audfx_rows(&fx)) >= lo, 60000, pid, "%ld rows, waiting for %ld", rows, lo);
    cr_assert_leq(rows, hi, "%ld rows when first seen past %ld: no middle to act in", rows, lo);
    return rows;
}

/* What a killed process held unacknowledged comes back only after the ack
 * wait, 30 s by default: the test keeps it short while it waits (each start
 * of cms-audit puts its own setting back). */
#define SHORT_ACK_WAIT_MS 4000

Test(audit_fault, sigkill_mid_backlog_then_restart_stores_every_event_once, .timeout = 240)
{
    enum { N = 100000, K = 20 };
    audfx_setup(&fx, "aud_kill", K);
    char durable[48];
    snprintf(durable, sizeof durable, "%s", fx.prefix);
    publish_backlog(N);

    int port;
    pid_t pid = audfx_start(&fx, durable, &port, NULL);
    long rows = wait_rows_between(pid, N / 10, N * 9 / 10);
    audfx_kill9(&fx, pid);
    long after_kill = audfx_rows(&fx);
    cr_assert_lt(after_kill, N, "killed with %ld rows stored (%ld seen)", after_kill, rows);

    pid = audfx_start(&fx, durable, &port, NULL);
    cr_assert(audfx_wait_readyz(port, 200, 30000));
    audfx_wait_stored(&fx, durable, N, pid, 120000, SHORT_ACK_WAIT_MS);
    expect_rows(evs, N);
    cr_expect_eq(audfx_dead_total(port), 0, "nothing dead-lettered");
    cr_assert_eq(audfx_stop(&fx, pid, NULL), 0);
}

Test(audit_fault, postgres_stopped_mid_backlog_the_same_process_recovers, .timeout = 240)
{
    enum { N = 50000, K = 20, DOWN_MS = 6500 };
    audfx_setup(&fx, "aud_pgdown", K);
    char durable[48];
    snprintf(durable, sizeof durable, "%s", fx.prefix);
    publish_backlog(N);

    int port;
    pid_t pid = audfx_start(&fx, durable, &port, NULL);
    cr_assert(audfx_wait_readyz(port, 200, 30000));
    wait_rows_between(pid, N / 10, N * 9 / 10);

    pg_stopped = true;
    cr_assert_eq(cms_test_ctl("pg-stop"), 0);
    double down = audfx_now_ms();
    /* not ready soon after, and never ready again while the database is away */
    double first_not_ready = -1;
    int ready_again = 0, polls = 0;
    while (audfx_now_ms() - down < DOWN_MS) {
        int st = cms_test_http_get(port, "/readyz", NULL, 0);
        cr_assert(audfx_alive(pid), "cms-audit survives the outage");
        cr_assert_neq(st, -1, "cms-audit answers its probes during the outage");
        if (st != 200 && first_not_ready < 0)
            first_not_ready = audfx_now_ms() - down;
        if (st == 200 && first_not_ready >= 0)
            ready_again++;
        polls++;
        audfx_pause_ms(50);
    }
    cr_assert_eq(cms_test_ctl("pg-start"), 0);
    pg_stopped = false;
    cr_assert_geq(first_not_ready, 0, "/readyz was 200 throughout %d polls of the outage", polls);
    cr_expect_lt(first_not_ready, 2000, "not ready %.0f ms into the outage", first_not_ready);
    cr_expect_eq(ready_again, 0, "/readyz said 200 %d times with the database down", ready_again);

    cr_assert(audfx_wait_readyz(port, 200, 30000), "ready again once the database is back");
    audfx_wait_stored(&fx, durable, N, pid, 120000, 0);
    expect_rows(evs, N);
    cr_expect_eq(audfx_dead_total(port), 0, "the outage dead-lettered nothing");
    cr_expect_geq(audfx_metric(port, "cms_audit_events_total"), N);
    cr_assert(audfx_alive(pid), "the same process did it all");
    cr_assert_eq(audfx_stop(&fx, pid, NULL), 0);
}

Test(audit_fault, two_processes_share_one_durable, .timeout = 240)
{
    enum { N = 100000, K = 20 };
    audfx_setup(&fx, "aud_two", K);
    char durable[48];
    snprintf(durable, sizeof durable, "%s", fx.prefix);
    publish_backlog(N);

    int port_a, port_b;
    pid_t a = audfx_start(&fx, durable, &port_a, NULL);
    pid_t b = audfx_start(&fx, durable, &port_b, NULL);
    audfx_wait_stored(&fx, durable, N, a, 120000, 0);
    cr_assert(audfx_alive(b));
    expect_rows(evs, N);
    double ea = audfx_metric(port_a, "cms_audit_events_total");
    double eb = audfx_metric(port_b, "cms_audit_events_total");
    cr_expect_gt(ea, 0, "first process committed some (%.0f)", ea);
    cr_expect_gt(eb, 0, "second process committed some (%.0f)", eb);
    cr_expect_geq(ea + eb, N, "together all of them (%.0f + %.0f)", ea, eb);
    cr_expect_eq(audfx_dead_total(port_a) + audfx_dead_total(port_b), 0);
    cr_assert_eq(audfx_stop(&fx, a, NULL), 0);
    cr_assert_eq(audfx_stop(&fx, b, NULL), 0);
}
