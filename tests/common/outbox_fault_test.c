/* The outbox relay while nats-server is away: events committed during the
 * outage wait in the table while the relay's publishes fail (the oldest is
 * tried again and again, nothing behind it), and once the server is back
 * every event reaches the stream exactly once (the stream's dedupe window
 * drops what was published twice around the outage), in the order it was
 * committed, and the table empties. And a store rolled back to an older
 * copy (what a host crash leaves of an unsynced one): the events it lost
 * are published again from the rows the relay kept. */
#include "bus.h"
#include "metrics.h"
#include "nats.h"
#include "outbox.h"
#include "pg.h"
#include "testenv.h"
#include "uuid.h"

#include <criterion/criterion.h>
#include <nats/nats.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { BEFORE = 200, DURING = 300, N = BEFORE + DURING, PAYLOAD_MAX = 48 * 1024 };

typedef struct {
    uv_loop_t loop;
    uv_timer_t watchdog, tick;
    cms_pg *pg;
    cms_nats *nats;
    cms_outbox *ob;
    cms_nats_consumer *consumer;
    char db[512];
    char subject[128];
    char ids[N][CMS_UUID_STRLEN + 1];
    unsigned char seen[N];
    int committed, failed, received, duplicates, unknown;
    int last_at, out_of_order; /* the index of the last event received */
    int provisioned, ctl_done, ctl_status, closed;
} fx;

static fx F;

static void watchdog_fired(uv_timer_t *t)
{
    (void)t;
    cr_assert_fail("watchdog: %d committed, %d received, %llu published", F.committed, F.received,
                   (unsigned long long)cms_outbox_published(F.ob));
}

static void provisioned(void *arg, cms_nats_err err)
{
    (void)arg;
    cr_assert_eq(err, CMS_NATS_OK);
    F.provisioned = 1;
}

static void committed(void *arg, cms_pg_err err, const cms_pg_result *res)
{
    (void)arg;
    (void)res;
    if (err == CMS_PG_OK) {
        F.committed++;
        cms_outbox_kick(F.ob);
    } else {
        F.failed++;
    }
}

static void write_events(int from, int to)
{
    for (int i = from; i < to; i++) {
        cms_uuid u;
        cms_uuid_v7(&u);
        cms_uuid_format(&u, F.ids[i]);
        /* events of the outage are large: more than nats.c's 8 MiB
         * reconnect buffer, so that publishes really fail rather than wait
         * in it */
        static char payload[PAYLOAD_MAX];
        size_t len = i < BEFORE ? 32 : PAYLOAD_MAX;
        memset(payload, 'a' + i % 26, len);
        cms_pg_job *j = cms_pg_job_new();
        cr_assert_eq(cms_outbox_add_raw(j, "outbox_fault", F.ids[i], F.subject, payload, len), 0);
        cr_assert_eq(cms_pg_submit(F.pg, &j, committed, NULL), CMS_PG_OK);
    }
}

static void ctl_done(int status, void *arg)
{
    (void)arg;
    F.ctl_status = status;
    F.ctl_done = 1;
}

/* Runs a ctl verb with the loop running (the relay goes on meanwhile). */
static void ctl(const char *verb)
{
    F.ctl_done = 0;
    cr_assert_eq(cms_test_ctl_spawn(&F.loop, verb, ctl_done, NULL), 0);
    while (!F.ctl_done && uv_run(&F.loop, UV_RUN_ONCE))
        ;
    cr_assert_eq(F.ctl_status, 0, "tests/lib/ctl %s", verb);
}

static int until_ms;
static int (*until_cond)(void);

static void tick(uv_timer_t *t)
{
    if (until_cond())
        uv_timer_stop(t);
}

/* Runs the loop until cond holds (checked every 20 ms). */
static void run_until(int (*cond)(void))
{
    until_cond = cond;
    uv_timer_start(&F.tick, tick, 20, 20);
    while (uv_is_active((uv_handle_t *)&F.tick) && uv_run(&F.loop, UV_RUN_ONCE))
        ;
}

static int all_committed(void)
{
    return F.committed + F.failed >= until_ms;
}

static int all_published(void)
{
    return cms_outbox_published(F.ob) >= (uint64_t)until_ms;
}

static int outbox_empty(void)
{
    char *left = cms_test_sql(F.db, "SELECT count(*) FROM outbox WHERE source = 'outbox_fault'");
    int empty = left && strcmp(left, "0") == 0;
    free(left);
    return empty;
}

static cms_counter *g_failures;

/* Long enough an outage for the relay to fail and try the same row again
 * a few times. */
static int publishes_failed_for_a_while(void)
{
    return cms_counter_get(g_failures) >= 4;
}

static int all_received(void)
{
    return F.received >= N;
}

static void received(void *arg, cms_nats_msg *m)
{
    (void)arg;
    const char *id = cms_nats_msg_header(m, "Nats-Msg-Id");
    int at = -1;
    for (int i = 0; id && i < N && at < 0; i++)
        if (strcmp(id, F.ids[i]) == 0)
            at = i;
    if (at < 0)
        F.unknown++;
    else if (F.seen[at]++)
        F.duplicates++;
    else if (at < F.last_at)
        F.out_of_order++;
    if (at > F.last_at)
        F.last_at = at;
    F.received++;
    cr_assert_eq(cms_nats_msg_ack(m), CMS_NATS_OK);
    cms_nats_msg_destroy(m);
}

/* The stream, read back through a fresh durable: each event once, in
 * commit order. */
static void assert_stream_holds_each_once(const char *durable_prefix)
{
    char durable[64];
    snprintf(durable, sizeof durable, "%s_%d", durable_prefix, (int)getpid());
    cms_nats_consumer_options co = {
        .stream = "CMS_EVENTS", .durable = durable, .filter_subject = F.subject};
    cr_assert_eq(cms_nats_consume(F.nats, &co, received, NULL, &F.consumer), 0);
    run_until(all_received);
    cr_assert_eq(F.unknown, 0);
    cr_assert_eq(F.duplicates, 0, "%d events stored twice", F.duplicates);
    cr_assert_eq(F.out_of_order, 0, "%d events reached the stream before one committed earlier",
                 F.out_of_order);
    for (int i = 0; i < N; i++)
        cr_assert_eq(F.seen[i], 1, "event %d of %d reached the stream", i, N);
}

static bool g_nats_down;

/* A failed assertion must not leave the shared server stopped. */
static void restart_nats(void)
{
    if (g_nats_down)
        (void)cms_test_ctl("nats-start");
    g_nats_down = false;
}

TestSuite(outbox_fault, .fini = restart_nats);

static void part_closed(void *arg)
{
    (void)arg;
    F.closed++;
}

/* The relay of source outbox_fault on a database of its own, with its own
 * connections, publishing to a subject of this process. */
static void start(int64_t retain_ms)
{
    memset(&F, 0, sizeof F);
    F.last_at = -1;
    cr_assert_eq(cms_test_db_create("outbox_fault", 1, F.db, sizeof F.db), 0);
    snprintf(F.subject, sizeof F.subject, "cms.events.obf%d.created", (int)getpid());
    cr_assert_eq(uv_loop_init(&F.loop), 0);
    uv_timer_init(&F.loop, &F.watchdog);
    uv_timer_start(&F.watchdog, watchdog_fired, 150000, 0);
    uv_unref((uv_handle_t *)&F.watchdog);
    uv_timer_init(&F.loop, &F.tick);
    cms_pg_options po = {.conninfo = F.db, .pool_size = 1};
    cr_assert_eq(cms_pg_create(&F.loop, &po, &F.pg), CMS_PG_OK);
    cms_nats_options no = {.url = cms_test_env("CMS_TEST_NATS_URL"),
                           .name = "outbox_fault",
                           .publish_timeout_ms = 1000};
    cr_assert_eq(cms_nats_create(&F.loop, &no, &F.nats), 0);
    cr_assert_eq(cms_bus_provision(F.nats, provisioned, NULL), 0);
    while (!F.provisioned && uv_run(&F.loop, UV_RUN_ONCE))
        ;
    g_failures = cms_metrics_counter(cms_metrics_default(), "cms_outbox_publish_failures_total",
                                     "Outbox publishes that failed", NULL);
    cr_assert_not_null(g_failures);
    cr_assert_eq(cms_counter_get(g_failures), 0);
    cms_outbox_options oo = {.source = "outbox_fault",
                             .batch = 64,
                             .poll_ms = 100,
                             .backoff_max_ms = 500,
                             .retain_ms = retain_ms};
    cr_assert_eq(cms_outbox_create(&F.loop, F.pg, F.nats, &oo, &F.ob), 0);
}

static void stop(void)
{
    cms_outbox_close(F.ob, part_closed, NULL);
    while (F.closed < 1 && uv_run(&F.loop, UV_RUN_ONCE))
        ;
    cms_nats_close(F.nats, part_closed, NULL);
    cms_pg_close(F.pg, part_closed, NULL);
    uv_close((uv_handle_t *)&F.watchdog, NULL);
    uv_close((uv_handle_t *)&F.tick, NULL);
    uv_run(&F.loop, UV_RUN_DEFAULT);
    cr_assert_eq(F.closed, 3);
    cr_assert_eq(uv_loop_close(&F.loop), 0);
    cms_outbox_destroy(F.ob);
    cms_nats_destroy(F.nats);
    cms_pg_destroy(F.pg);
    (void)nats_CloseAndWait(5000);
    cms_test_db_drop(F.db);
}

Test(outbox_fault, events_committed_while_nats_is_down_arrive_once, .timeout = 180)
{
    start(0);
    write_events(0, BEFORE);
    until_ms = BEFORE;
    run_until(all_committed);
    run_until(all_published);

    g_nats_down = true;
    ctl("nats-stop");
    write_events(BEFORE, N);
    until_ms = N;
    run_until(all_committed);
    cr_assert_eq(F.failed, 0, "the database took every event while NATS was away");
    /* the relay tries, and its publishes fail (time out) while the server is away */
    run_until(publishes_failed_for_a_while);
    cr_assert_eq(cms_outbox_published(F.ob), (uint64_t)BEFORE, "nothing can be published now");
    char *left = cms_test_sql(F.db, "SELECT count(*) FROM outbox WHERE source = 'outbox_fault'");
    cr_assert_neq(strcmp(left, "0"), 0, "the events wait in the table");
    free(left);

    ctl("nats-start");
    g_nats_down = false;
    run_until(outbox_empty);

    assert_stream_holds_each_once("obf");

    stop();
}

static int nothing_pending(void)
{
    char *left = cms_test_sql(F.db, "SELECT count(*) FROM outbox WHERE source = 'outbox_fault' "
                                    "AND published_at IS NULL");
    int none = left && strcmp(left, "0") == 0;
    free(left);
    return none;
}

static cms_counter *g_republished;
static uint64_t g_reconnects;

static int reconnected_and_checked(void)
{
    return cms_nats_reconnects(F.nats) > g_reconnects && nothing_pending();
}

static int lost_ones_published_again(void)
{
    return cms_counter_get(g_republished) >= DURING && nothing_pending() &&
           cms_outbox_published(F.ob) >= (uint64_t)(N + DURING);
}

/* A host crash, as the store sees it: nats-server's JetStream store goes
 * back to a copy taken before the last DURING events were acknowledged
 * (they were in the page cache only). The relay, kept rows in hand, finds
 * on reconnecting that the stream lost them and publishes them again: in
 * the end the stream holds every event once, in commit order. */
Test(outbox_fault, events_a_rolled_back_store_lost_are_published_again, .timeout = 180)
{
    start(600000);
    g_republished =
        cms_metrics_counter(cms_metrics_default(), "cms_outbox_republished_total",
                            "Outbox rows published again because their stream had lost them", NULL);
    uint64_t republished_before = cms_counter_get(g_republished);
    write_events(0, BEFORE);
    until_ms = BEFORE;
    run_until(all_committed);
    run_until(all_published);
    run_until(nothing_pending);

    g_nats_down = true;
    g_reconnects = cms_nats_reconnects(F.nats);
    ctl("nats-stop");
    ctl("nats-store-save");
    ctl("nats-start");
    g_nats_down = false;
    run_until(reconnected_and_checked);
    cr_assert_eq(cms_counter_get(g_republished), republished_before,
                 "a store that kept everything loses nothing");

    write_events(BEFORE, N);
    until_ms = N;
    run_until(all_committed);
    run_until(all_published);
    run_until(nothing_pending);

    g_nats_down = true;
    ctl("nats-stop");
    ctl("nats-store-restore");
    ctl("nats-start");
    g_nats_down = false;
    run_until(lost_ones_published_again);
    cr_assert_eq(cms_counter_get(g_republished) - republished_before, (uint64_t)DURING,
                 "exactly the events the store lost are published again");

    assert_stream_holds_each_once("obr");
    char *bad = cms_test_sql(F.db, "SELECT count(*) FROM outbox WHERE source = 'outbox_fault' "
                                   "AND (published_at IS NULL OR stream <> 'CMS_EVENTS')");
    cr_assert_str_eq(bad, "0", "every row is kept with its new ack");
    free(bad);
    stop();
}
