/* common/consumer through cms-testsvc replicas against the real servers:
 * an event published twice (two Nats-Msg-Ids, past the stream's dedupe) is
 * applied once; a process killed between the commit and the ack applies
 * nothing twice after its restart; events that can never be applied are
 * dead-lettered with their reason while their neighbours are applied, in
 * order; 100 events about one resource are applied in stream order by two
 * replicas while the active one is stopped and another takes over; and the
 * records of events older than the retention are pruned, the others kept. */
#include "consumerfx.h"
#include "testenv.h"

#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static consumerfx C;

static void fini(void)
{
    consumerfx_teardown(&C);
}

TestSuite(consumer, .fini = fini, .timeout = 180);

Test(consumer, an_event_published_twice_is_applied_once)
{
    consumerfx_setup(&C, "30s", "10s");
    consumerfx_start(&C, 0);
    char rid[37], id[37], marker[37], again[48];
    consumerfx_uuid(rid);
    consumerfx_publish(&C, "applied", rid, 1, NULL, NULL, id);
    /* the same event again, under another Nats-Msg-Id: the stream keeps both */
    snprintf(again, sizeof again, "%s-again", id);
    consumerfx_publish(&C, "applied", rid, 1, id, again, NULL);
    consumerfx_publish(&C, "applied", rid, 2, NULL, NULL, marker);
    /* one resource: the marker is applied only after both copies settled */
    consumerfx_wait_effects(&C, rid, 2, 20000);
    cr_assert_eq(consumerfx_effects_of(&C, id), 1, "applied once");
    cr_assert_eq(consumerfx_effects_of(&C, marker), 1);
    char *order = consumerfx_order(&C, rid);
    cr_assert_str_eq(order, "1,2");
    free(order);
    cr_assert_eq(consumerfx_outcome(&C, 0, "applied"), 2);
    cr_assert_eq(consumerfx_outcome(&C, 0, "duplicate"), 1);
    char sql[200];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM processed_events WHERE consumer = '%s' AND event_id = '%s'",
             C.name, id);
    char *rec = svcfx_sql(&C.f, sql);
    cr_assert_str_eq(rec, "1", "the event's record");
    free(rec);
}

Test(consumer, a_kill_between_commit_and_ack_applies_nothing_twice)
{
    consumerfx_setup(&C, "2s", "2s");
    consumerfx_start(&C, 0);
    char rid[37], crash[37], after[37];
    consumerfx_uuid(rid);
    consumerfx_publish(&C, "applied", rid, 1, NULL, NULL, NULL);
    /* applied and committed, then the process dies (SIGKILL) before its ack */
    consumerfx_publish(&C, "crash", rid, 2, NULL, NULL, crash);
    consumerfx_publish(&C, "applied", rid, 3, NULL, NULL, after);
    cr_assert_eq(svcfx_wait_exit_at(&C.f, 0, 20000), -SIGKILL, "died between commit and ack");
    cr_assert_eq(consumerfx_effects_of(&C, crash), 1, "committed before the kill");
    cr_assert_eq(consumerfx_effects_of(&C, after), 0, "nothing after it ran");
    /* the restarted replica takes the expired lease, waits one ack_wait for
     * what the dead one held, gets the unacked event again: a duplicate */
    consumerfx_start(&C, 0);
    consumerfx_wait_effects(&C, rid, 3, 30000);
    cr_assert_eq(consumerfx_effects_of(&C, crash), 1, "applied exactly once");
    char *order = consumerfx_order(&C, rid);
    cr_assert_str_eq(order, "1,2,3");
    free(order);
    cr_assert_eq(consumerfx_outcome(&C, 0, "duplicate"), 1);
    cr_assert_eq(consumerfx_outcome(&C, 0, "applied"), 1);
}

Test(consumer, what_can_never_be_applied_is_dead_lettered_and_its_neighbours_applied)
{
    consumerfx_setup(&C, "30s", "10s");
    consumerfx_start(&C, 0);
    char rid[37];
    consumerfx_uuid(rid);
    consumerfx_publish(&C, "applied", rid, 1, NULL, NULL, NULL);
    consumerfx_publish(&C, "poison", rid, 2, NULL, NULL, NULL); /* the handler refuses it */
    consumerfx_publish(&C, "applied", rid, 3, NULL, NULL, NULL);
    consumerfx_publish(&C, "bad", rid, 4, NULL, NULL, NULL); /* the database refuses it */
    /* not an envelope at all, on a subject the consumer takes */
    char subject[128];
    snprintf(subject, sizeof subject, "cms.events.%s.garbage", C.rtype);
    jsPubAck *ack = NULL;
    cr_assert_eq(js_Publish(&ack, C.f.js, subject, "\xff\xff\xff", 3, NULL, NULL), NATS_OK);
    jsPubAck_Destroy(ack);
    consumerfx_publish(&C, "applied", rid, 5, NULL, NULL, NULL);
    consumerfx_wait_effects(&C, rid, 3, 20000);
    char *order = consumerfx_order(&C, rid);
    cr_assert_str_eq(order, "1,3,5", "the neighbours, in order");
    free(order);
    char reasons[3][64];
    for (int i = 0; i < 3; i++)
        cr_assert(consumerfx_next_dead(&C, reasons[i], 10000), "dead letter %d", i);
    int poison = 0, refused = 0, undecodable = 0;
    for (int i = 0; i < 3; i++) {
        poison += strcmp(reasons[i], "poison") == 0;
        refused += strcmp(reasons[i], "rejected_by_database") == 0;
        undecodable += strcmp(reasons[i], "undecodable") == 0;
    }
    cr_assert(poison == 1 && refused == 1 && undecodable == 1, "reasons: %s, %s, %s", reasons[0],
              reasons[1], reasons[2]);
    cr_assert_eq(consumerfx_outcome(&C, 0, "dead_lettered"), 3);
    cr_assert_eq(consumerfx_outcome(&C, 0, "applied"), 3);
    char series[160];
    snprintf(series, sizeof series,
             "cms_consumer_dead_letters_total{consumer=\"%s\",reason=\"poison\"}", C.name);
    cr_assert_eq(svcfx_metric(&C.f, 0, series), 1);
}

enum { ORDERED = 100, OTHERS = 4, PER_OTHER = 25 };

static void publish_range(const char *rid, char others[OTHERS][37], int from, int to)
{
    for (int n = from; n <= to; n++) {
        consumerfx_publish(&C, "applied", rid, n, NULL, NULL, NULL);
        /* other resources between, applied concurrently with rid's */
        if (n % 2 == 0)
            consumerfx_publish(&C, "applied", others[(n / 2) % OTHERS], n / 2, NULL, NULL, NULL);
    }
}

static int active_replica(void)
{
    char series[160];
    snprintf(series, sizeof series, "cms_consumer_active{consumer=\"%s\"}", C.name);
    for (int i = 0; i < 2; i++)
        if (svcfx_metric(&C.f, i, series) == 1)
            return i;
    return -1;
}

Test(consumer, one_resource_is_applied_in_order_by_two_replicas_across_a_handover)
{
    consumerfx_setup(&C, "5s", "3s");
    consumerfx_start(&C, 0);
    consumerfx_start(&C, 1);
    char rid[37], others[OTHERS][37];
    consumerfx_uuid(rid);
    for (int i = 0; i < OTHERS; i++)
        consumerfx_uuid(others[i]);
    publish_range(rid, others, 1, 40);
    consumerfx_wait_effects(&C, rid, 20, 20000);
    int active = active_replica(), other = 1 - active;
    cr_assert_geq(active, 0, "one replica holds the lease");
    /* SIGTERM mid-stream: it finishes and acks what it holds and releases
     * the lease; the other takes over */
    cr_assert_eq(svcfx_stop_at(&C.f, active), 0, "drained");
    publish_range(rid, others, 41, 80);
    consumerfx_wait_effects(&C, rid, 80, 30000); /* only the other can have */
    consumerfx_start(&C, active);                /* back, as the standby */
    publish_range(rid, others, 81, ORDERED);
    consumerfx_wait_effects(&C, rid, ORDERED, 30000);
    char want[512] = "";
    for (int n = 1; n <= ORDERED; n++)
        snprintf(want + strlen(want), sizeof want - strlen(want), n > 1 ? ",%d" : "%d", n);
    char *order = consumerfx_order(&C, rid);
    if (strcmp(order, want) != 0) {
        char *log = svcfx_log(&C.f);
        cr_log_error("the replicas' log:\n%s", log);
        free(log);
    }
    cr_assert_str_eq(order, want, "in stream order: %s", order);
    free(order);
    for (int i = 0; i < OTHERS; i++) {
        consumerfx_wait_effects(&C, others[i], ORDERED / 2 / OTHERS, 10000);
        order = consumerfx_order(&C, others[i]);
        int last = -1;
        for (char *p = order; *p;) {
            int n = atoi(p);
            cr_assert_gt(n, last, "resource %d in order: %s", i, order);
            last = n;
            p += strcspn(p, ",");
            if (*p == ',')
                p++;
        }
        free(order);
    }
    char *dups = svcfx_sql(&C.f, "SELECT count(*) - count(DISTINCT event_id) FROM testsvc_effects");
    cr_assert_str_eq(dups, "0", "nothing applied twice");
    free(dups);
    /* the standby never asked for anything: what it would have given back
     * would have come back behind what the holder took meanwhile */
    char series[200];
    snprintf(series, sizeof series, "cms_nats_pull_requests_total{durable=\"%s\"}", C.name);
    cr_assert_eq(svcfx_metric(&C.f, active, series), 0, "the standby sent no pull request");
    /* the stopped replica acked all it applied: the other saw no duplicate */
    cr_assert_eq(consumerfx_outcome(&C, other, "duplicate"), 0);
    cr_assert_geq(consumerfx_outcome(&C, other, "applied"), 40, "the other took over");
}

Test(consumer, records_older_than_the_retention_are_pruned_and_the_rest_kept)
{
    consumerfx_setup(&C, "30s", "1s");
    /* records of this consumer from 8 days ago (past the default 7d) and
     * from an hour ago, and an old one of another consumer */
    char sql[1024];
    snprintf(sql, sizeof sql,
             "INSERT INTO processed_events (consumer, event_id, processed_at) "
             "SELECT '%s', gen_random_uuid(), now() - interval '8 days' "
             "FROM generate_series(1, 25000);"
             "INSERT INTO processed_events (consumer, event_id, processed_at) "
             "SELECT '%s', gen_random_uuid(), now() - interval '1 hour' "
             "FROM generate_series(1, 10);"
             "INSERT INTO processed_events (consumer, event_id, processed_at) "
             "VALUES ('someone-else', gen_random_uuid(), now() - interval '8 days');"
             "CREATE FUNCTION processed_events_note() RETURNS trigger LANGUAGE plpgsql AS $$"
             "BEGIN PERFORM pg_notify('processed_events', 'pruned'); RETURN NULL; END $$;"
             "CREATE TRIGGER processed_events_note AFTER DELETE ON processed_events "
             "FOR EACH STATEMENT EXECUTE FUNCTION processed_events_note()",
             C.name, C.name);
    char *ok = svcfx_sql(&C.f, sql);
    cr_assert_not_null(ok);
    free(ok);
    consumerfx_start(&C, 0);
    /* the holder prunes a lease period after it starts, in batches of 10,000 */
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM processed_events WHERE consumer = '%s' "
             "AND processed_at < now() - interval '7 days'",
             C.name);
    char *left = svcfx_wait_sql(&C.f, "processed_events", sql, "0", 30000);
    cr_assert_str_eq(left, "0", "every record past the retention deleted");
    free(left);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM processed_events WHERE consumer = '%s'",
             C.name);
    char *kept = svcfx_sql(&C.f, sql);
    cr_assert_str_eq(kept, "10", "the recent ones kept");
    free(kept);
    kept = svcfx_sql(&C.f, "SELECT count(*) FROM processed_events WHERE consumer = 'someone-else'");
    cr_assert_str_eq(kept, "1", "another consumer's records are its own");
    free(kept);
}
