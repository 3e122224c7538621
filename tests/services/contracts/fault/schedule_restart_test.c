/* cms-contracts' activation and expiry timer across stops and replicas,
 * against the real PostgreSQL and NATS: contracts that come due while no
 * process runs are activated and expired at the next start, once each; and
 * of two replicas whose timers both fire for one contract's end, exactly
 * one expires it. Due instants are moved by SQL as the superuser (the
 * timer reads the columns starts_at and ends_at, not the terms). */
#include "cms/v1/envelope.pb-c.h"
#include "ctfx.h"
#include "testenv.h"

#include <criterion/criterion.h>
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define OK 0
#define DAY 86400
#define REPLICA 2 /* the second replica's process index */

static ctfx C;
static ctparty P, Q; /* provider, consumer */
/* the second replica's own log, when there is one */
static char replica_log[sizeof C.f.log_file];

static void setup(void)
{
    ctfx_setup(&C, "contracts_sched");
    ctfx_party(&C, "provider-co", &P);
    ctfx_party(&C, "consumer-co", &Q);
}

static void teardown(void)
{
    ctfx_teardown(&C);
    if (replica_log[0])
        unlink(replica_log);
    replica_log[0] = '\0';
}

TestSuite(schedule_restart, .init = setup, .fini = teardown, .timeout = 120);

static Cms__V1__Contract *get(const char *id)
{
    Cms__V1__Contract *k = NULL;
    int code = ctfx_simple(&C, &P, "get", id, &k);
    cr_assert_eq(code, OK, "get: %d %s", code, C.msg);
    return k;
}

/* Runs an UPDATE of one contract as the superuser (set: its SET list). */
static void move(const char *id, const char *set)
{
    char sql[256];
    snprintf(sql, sizeof sql, "UPDATE contracts SET %s WHERE id = '%s' RETURNING 1", set, id);
    char *v = svcfx_sql(&C.f, sql);
    cr_assert_str_eq(v, "1", "%s", sql);
    free(v);
}

/* The one event of this type about the contract, as the outbox holds it. */
static Cms__V1__Envelope *the_event(const char *type, const char *id)
{
    char sql[400];
    snprintf(sql, sizeof sql,
             "SELECT encode(payload, 'hex') FROM ctfx_events WHERE subject = 'cms.events.%s' "
             "AND position(convert_to('%s', 'UTF8') in payload) > 0",
             type, id);
    char *hex = svcfx_sql(&C.f, sql);
    size_t len = strlen(hex) / 2, n = 0;
    uint8_t *bin = malloc(len + 1);
    cr_assert_not_null(bin);
    cr_assert_eq(sodium_hex2bin(bin, len, hex, strlen(hex), NULL, &n, NULL), 0);
    Cms__V1__Envelope *e = cms__v1__envelope__unpack(NULL, n, bin);
    cr_assert_not_null(e, "%s is an Envelope", type);
    free(bin);
    free(hex);
    return e;
}

static int64_t column_us(const char *id, const char *col)
{
    char sql[200];
    snprintf(sql, sizeof sql,
             "SELECT (extract(epoch FROM %s) * 1000000)::int8 FROM contracts WHERE id = '%s'", col,
             id);
    char *v = svcfx_sql(&C.f, sql);
    int64_t us = strtoll(v, NULL, 10);
    free(v);
    return us;
}

Test(schedule_restart, what_came_due_while_stopped_happens_at_the_next_start)
{
    /* signed, starting tomorrow; and one active since a minute ago */
    Cms__V1__Contract *s = ctfx_signed(&C, &P, &Q, ctfx_terms(DAY, 30 * DAY, NULL));
    cr_assert_str_eq(s->status, "signed");
    Cms__V1__Contract *a = ctfx_signed(&C, &P, &Q, ctfx_terms(-60, 30 * DAY, NULL));
    ctfx_wait_events(&C, "contract.activated", a->id, 1, 10000);

    cr_assert_eq(svcfx_stop_at(&C.f, CTFX_CONTRACTS), 0, "a clean stop");
    /* while it is stopped, the signed one's start comes and the active one's end */
    move(s->id, "starts_at = now() - interval '1 minute'");
    move(a->id, "ends_at = now() - interval '1 second'");
    int64_t ends = column_us(a->id, "ends_at"), starts = column_us(s->id, "starts_at");
    cr_assert_eq(ctfx_events(&C, "contract.activated", s->id), 0);
    cr_assert_eq(ctfx_events(&C, "contract.expired", a->id), 0);

    ctfx_start_contracts(&C, CTFX_CONTRACTS, NULL);
    ctfx_wait_events(&C, "contract.activated", s->id, 1, 20000);
    ctfx_wait_events(&C, "contract.expired", a->id, 1, 20000);
    Cms__V1__Contract *s2 = get(s->id), *a2 = get(a->id);
    cr_assert_str_eq(s2->status, "active");
    cr_assert_str_eq(a2->status, "expired");

    /* announced as the timer's doing, with the instants it acted on */
    Cms__V1__Envelope *ev = the_event("contract.activated", s->id);
    cr_assert_eq(ev->body_case, CMS__V1__ENVELOPE__BODY_CONTRACT_ACTIVATED);
    cr_assert(ev->contract_activated->automatic, "by its start date");
    cr_assert_eq(ev->contract_activated->starts_at_us, starts);
    cms__v1__envelope__free_unpacked(ev, NULL);
    ev = the_event("contract.expired", a->id);
    cr_assert_eq(ev->body_case, CMS__V1__ENVELOPE__BODY_CONTRACT_EXPIRED);
    cr_assert_str_eq(ev->contract_expired->old_status, "active");
    cr_assert_eq(ev->contract_expired->ends_at_us, ends);
    cms__v1__envelope__free_unpacked(ev, NULL);

    /* once each, also after another restart */
    cr_assert_eq(svcfx_stop_at(&C.f, CTFX_CONTRACTS), 0);
    ctfx_start_contracts(&C, CTFX_CONTRACTS, NULL);
    Cms__V1__Contract *s3 = get(s->id), *a3 = get(a->id);
    cr_assert_str_eq(s3->status, "active");
    cr_assert_str_eq(a3->status, "expired");
    cr_assert_eq(s3->updated_at_us, s2->updated_at_us, "not written again");
    cr_assert_eq(a3->updated_at_us, a2->updated_at_us, "not written again");
    cr_assert_eq(ctfx_events(&C, "contract.activated", s->id), 1);
    cr_assert_eq(ctfx_events(&C, "contract.expired", a->id), 1);
    cr_assert_eq(ctfx_events(&C, "contract.expired", s->id), 0);
    cms__v1__contract__free_unpacked(s, NULL);
    cms__v1__contract__free_unpacked(a, NULL);
    cms__v1__contract__free_unpacked(s2, NULL);
    cms__v1__contract__free_unpacked(a2, NULL);
    cms__v1__contract__free_unpacked(s3, NULL);
    cms__v1__contract__free_unpacked(a3, NULL);
}

/* Unix microseconds as the log's "ts" writes them. */
static void log_ts(int64_t us, char out[40])
{
    time_t t = (time_t)(us / 1000000);
    struct tm tm;
    gmtime_r(&t, &tm);
    size_t n = strftime(out, 40, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, 40 - n, ".%06ldZ", (long)(us % 1000000));
}

/* Whether the log at path shows a round of the due timer that began at
 * or after since (in the log's "ts" form) and has ended: the timer went
 * from idle to reading what is due, and later back to idle. Such a round
 * found the contract due and wrote it, or lost the write to a replica that
 * had (its conditional UPDATE changed nothing), or found nothing due: in
 * each case the contract is handled, and no later round of this process
 * finds it due again. */
static bool round_done_since(const char *path, const char *since)
{
    FILE *fp = fopen(path, "r");
    cr_assert_not_null(fp, "%s", path);
    char line[4096];
    bool began = false, ended = false;
    while (!ended && fgets(line, sizeof line, fp)) {
        json_t *j = json_loads(line, 0, NULL);
        const char *ts = json_string_value(json_object_get(j, "ts"));
        const char *obj = json_string_value(json_object_get(j, "object"));
        const char *to = json_string_value(json_object_get(j, "to"));
        if (ts && obj && to && strcmp(obj, "due timer") == 0) {
            if (strcmp(to, "due") == 0 && strcmp(ts, since) >= 0)
                began = true;
            else if (strcmp(to, "idle") == 0 && began)
                ended = true;
        }
        json_decref(j);
    }
    fclose(fp);
    return ended;
}

/* Waits for round_done_since: a line in a log file has no event to wait
 * on, so this is a bounded poll of it. */
static void wait_round_done(const char *path, const char *since, const char *who)
{
    double deadline = cms_test_now_ms() + 20000;
    while (!round_done_since(path, since)) {
        cr_assert_lt(cms_test_now_ms(), deadline, "%s's timer fired for it and is done", who);
        cms_test_pause_ms(20);
    }
}

Test(schedule_restart, two_replicas_expire_a_contract_once)
{
    /* each replica with its debug log of its own, to tell their timers apart */
    cr_assert_eq(svcfx_stop_at(&C.f, CTFX_CONTRACTS), 0);
    const char *set[] = {"CMS_LOG_LEVEL=debug", NULL};
    char shared_log[sizeof C.f.log_file];
    snprintf(shared_log, sizeof shared_log, "%s", C.f.log_file);
    ctfx_start_contracts(&C, CTFX_CONTRACTS, set);
    int n = snprintf(replica_log, sizeof replica_log, "%s.2", shared_log);
    cr_assert(n > 0 && n < (int)sizeof replica_log, "%s.2 fits", shared_log);
    snprintf(C.f.log_file, sizeof C.f.log_file, "%s", replica_log);
    ctfx_start_contracts(&C, REPLICA, set);
    snprintf(C.f.log_file, sizeof C.f.log_file, "%s", shared_log);

    /* started a minute ago, ending in a few seconds: both replicas hear of
     * it from contract.fully_signed (or contract.activated) and set their
     * timers for its end, however long the signing took */
    Cms__V1__Contract *k = ctfx_signed(&C, &P, &Q, ctfx_terms(-60, 4, NULL));
    int64_t due = column_us(k->id, "ends_at");
    ctfx_wait_events(&C, "contract.expired", k->id, 1, 20000);
    /* both timers fired for it, and both rounds are over */
    char since[40];
    log_ts(due, since);
    wait_round_done(shared_log, since, "replica 1");
    wait_round_done(replica_log, since, "replica 2");
    cr_assert_eq(ctfx_events(&C, "contract.expired", k->id), 1, "expired once");
    Cms__V1__Contract *x = get(k->id);
    cr_assert_str_eq(x->status, "expired");
    cms__v1__contract__free_unpacked(x, NULL);
    /* one of them did it */
    double e1 = svcfx_metric(&C.f, CTFX_CONTRACTS, "cms_contracts_expired_total");
    double e2 = svcfx_metric(&C.f, REPLICA, "cms_contracts_expired_total");
    cr_assert_eq(e1 + e2, 1.0, "expired by one replica: %g + %g", e1, e2);
    cms__v1__contract__free_unpacked(k, NULL);
}
