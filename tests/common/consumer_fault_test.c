/* common/consumer while PostgreSQL is stopped mid-stream, for longer than
 * the consumer's lease: the events in flight fail and wait (retried, never
 * dead-lettered), nothing is pulled meanwhile and the service says why it
 * is not ready, and once the server is back every event is applied exactly
 * once, each resource's in stream order. */
#include "consumerfx.h"
#include "testenv.h"

#include <criterion/criterion.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { RESOURCES = 4, BEFORE = 60, DURING = 60, OUTAGE_MS = 3000 };

static consumerfx C;
static bool pg_stopped;

static void fini(void)
{
    if (pg_stopped) /* a failed assertion in the outage */
        (void)cms_test_ctl("pg-start");
    consumerfx_teardown(&C);
}

static void publish(char rids[RESOURCES][37], int from, int to)
{
    for (int n = from; n <= to; n++)
        consumerfx_publish(&C, "applied", rids[n % RESOURCES], n, NULL, NULL, NULL);
}

Test(consumer_fault, postgres_stopped_mid_stream_loses_and_dead_letters_nothing, .fini = fini,
     .timeout = 240)
{
    consumerfx_setup(&C, "30s", "1s");
    consumerfx_start(&C, 0);
    char rids[RESOURCES][37];
    for (int i = 0; i < RESOURCES; i++)
        consumerfx_uuid(rids[i]);
    publish(rids, 1, BEFORE);
    consumerfx_wait_effects(&C, rids[0], 5, 20000); /* mid-stream */
    cr_assert_eq(cms_test_ctl("pg-stop"), 0);
    pg_stopped = true;
    publish(rids, BEFORE + 1, BEFORE + DURING);
    /* the outage outlasts the lease (1s): the lease expires under the consumer */
    char body[4096];
    bool said = false;
    double until = cms_test_now_ms() + OUTAGE_MS;
    while (cms_test_now_ms() < until) {
        int st = cms_test_http_get(C.f.ports[0], "/readyz", body, sizeof body);
        if (st == 503 && (strstr(body, "database") != NULL))
            said = true;
        cms_test_pause_ms(100);
    }
    cr_assert(said, "not ready while the database is away: %s", body);
    cr_assert_eq(cms_test_ctl("pg-start"), 0);
    pg_stopped = false;
    for (int i = 0; i < RESOURCES; i++)
        consumerfx_wait_effects(&C, rids[i], (BEFORE + DURING) / RESOURCES, 60000);
    for (int i = 0; i < RESOURCES; i++) {
        char want[1024] = "", *got = consumerfx_order(&C, rids[i]);
        for (int n = 1; n <= BEFORE + DURING; n++)
            if (n % RESOURCES == i)
                snprintf(want + strlen(want), sizeof want - strlen(want), *want ? ",%d" : "%d", n);
        cr_assert_str_eq(got, want, "resource %d in stream order", i);
        free(got);
    }
    char *dups = svcfx_sql(&C.f, "SELECT count(*) - count(DISTINCT event_id) FROM testsvc_effects");
    cr_assert_str_eq(dups, "0", "nothing applied twice");
    free(dups);
    char reason[64];
    cr_assert_not(consumerfx_next_dead(&C, reason, 500), "dead-lettered: %s", reason);
    cr_assert_eq(consumerfx_outcome(&C, 0, "dead_lettered"), 0);
    cr_assert_eq(consumerfx_outcome(&C, 0, "applied") + consumerfx_outcome(&C, 0, "duplicate"),
                 BEFORE + DURING, "every event settled once it was applied");
    char series[160];
    snprintf(series, sizeof series, "cms_consumer_retries_total{consumer=\"%s\"}", C.name);
    cr_assert_gt(svcfx_metric(&C.f, 0, series), 0, "the events in flight were retried");
}
