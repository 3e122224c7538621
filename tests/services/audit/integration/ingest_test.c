/* cms-audit end to end, as a process against the real PostgreSQL and
 * nats-server: every valid event becomes exactly one audit_logs row equal to
 * it field by field, however often it is published or delivered; every
 * invalid one is dead-lettered once, unchanged, with its reason, without the
 * process ever stopping; SIGTERM drains and exits 0. */
#include "audit_fixture.h"
#include "cms/v1/envelope.pb-c.h"
#include "testenv.h"
#include "uuid.h"

#include <criterion/criterion.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static audfx fx;
static audfx_event *evs; /* what a test published; freed by fini, failed or not */
static size_t nevs;

static void free_poisons(void);

static void fini(void)
{
    audfx_teardown(&fx);
    audfx_events_free(evs, nevs);
    evs = NULL;
    nevs = 0;
    free_poisons();
}

TestSuite(audit, .fini = fini);

static void expect_rows(const audfx_event *want, size_t n)
{
    char report[2048];
    long diffs = audfx_check_rows(&fx, want, n, report, sizeof report);
    cr_assert_eq(diffs, 0, "%ld rows differ from the events: %s", diffs, report);
}

Test(audit, every_event_stored_once_field_by_field, .timeout = 120)
{
    enum { N = 5000, K = 20 };
    audfx_setup(&fx, "aud_e2e", K);
    evs = audfx_events(&fx, nevs = N);
    char durable[48];
    snprintf(durable, sizeof durable, "%s", fx.prefix);
    int port;
    pid_t pid = audfx_start(&fx, durable, &port, NULL);
    cr_assert(audfx_wait_readyz(port, 200, 30000), "cms-audit became ready");

    for (size_t i = 0; i < N; i++)
        audfx_publish_event(&fx, &evs[i], NULL);
    audfx_publish_wait(&fx);

    audfx_wait_stored(&fx, durable, N, pid, 60000, 0);
    cr_expect_eq(audfx_metric(port, "cms_audit_events_total"), N);
    expect_rows(evs, N);
    cr_expect_eq(audfx_dead_total(port), 0, "nothing dead-lettered");

    double took;
    cr_assert_eq(audfx_stop(&fx, pid, &took), 0, "SIGTERM: drained, exit 0");
    cr_expect_lt(took, 15000, "drained in %.0f ms", took);
}

Test(audit, republished_and_replayed_events_stay_one_row_each, .timeout = 120)
{
    enum { N = 2000, E = 30, K = 5 };
    audfx_setup(&fx, "aud_again", K);
    evs = audfx_events(&fx, nevs = N + E);
    for (size_t i = N; i < N + E; i++)
        evs[i].details[0] = '\0'; /* no details_json: stored as {} */
    char durable[48], replay[48];
    snprintf(durable, sizeof durable, "%s", fx.prefix);
    snprintf(replay, sizeof replay, "%sr", fx.prefix);
    int port;
    pid_t pid = audfx_start(&fx, durable, &port, NULL);
    cr_assert(audfx_wait_readyz(port, 200, 30000));

    for (size_t i = 0; i < N + E; i++)
        audfx_publish_event(&fx, &evs[i], NULL);
    audfx_publish_wait(&fx);
    audfx_wait_stored(&fx, durable, N + E, pid, 60000, 0);
    cr_expect_eq(audfx_metric(port, "cms_audit_events_total"), N + E);
    expect_rows(evs, N + E);

    /* the same events again under other message ids: the stream keeps both copies */
    for (size_t i = 0; i < N + E; i++) {
        char id[64];
        snprintf(id, sizeof id, "%s-again", evs[i].id);
        audfx_publish_event(&fx, &evs[i], id);
    }
    audfx_publish_wait(&fx);
    audfx_wait_stored(&fx, durable, N + E, pid, 60000, 0);
    cr_expect_eq(audfx_metric(port, "cms_audit_events_total"), 2 * (N + E),
                 "the second copies were written too (and conflicted)");
    expect_rows(evs, N + E);
    cr_assert_eq(audfx_stop(&fx, pid, NULL), 0);

    /* a new durable delivers the whole stream again, both copies of each */
    pid = audfx_start(&fx, replay, &port, NULL);
    cr_assert(audfx_wait_readyz(port, 200, 30000));
    audfx_wait_stored(&fx, replay, N + E, pid, 60000, 0);
    cr_expect_eq(audfx_metric(port, "cms_audit_events_total"), 2 * (N + E),
                 "both copies of every event replayed");
    expect_rows(evs, N + E);
    cr_expect_eq(audfx_dead_total(port), 0);
    cr_assert_eq(audfx_stop(&fx, pid, NULL), 0);
}

/* ---- poison ---- */

typedef struct poison {
    const char *reason;
    uint8_t *data;
    size_t len;
    char subject[160];
    char msg_id[48];
    char tag[48];
    int found;
} poison;

static poison *poisons;
static size_t npoisons, poisons_cap;

static void free_poisons(void)
{
    for (size_t i = 0; i < npoisons; i++)
        free(poisons[i].data);
    free(poisons);
    poisons = NULL;
    npoisons = poisons_cap = 0;
}

static poison *add_poison(const char *reason, const char *subject_tail)
{
    if (npoisons == poisons_cap) {
        poisons_cap = poisons_cap ? 2 * poisons_cap : 64;
        poisons = realloc(poisons, poisons_cap * sizeof *poisons);
        cr_assert_not_null(poisons);
    }
    poison *p = &poisons[npoisons++];
    memset(p, 0, sizeof *p);
    p->reason = reason;
    snprintf(p->subject, sizeof p->subject, "cms.events.%s.%s", fx.prefix, subject_tail);
    cms_uuid u;
    cms_uuid_v7(&u);
    cms_uuid_format(&u, p->msg_id);
    snprintf(p->tag, sizeof p->tag, "poison-%zu-%s", npoisons, reason);
    return p;
}

static void add_raw(const uint8_t *data, size_t len)
{
    poison *p = add_poison("undecodable", "garbage");
    p->data = malloc(len);
    cr_assert_not_null(p->data);
    memcpy(p->data, data, len);
    p->len = len;
}

/* A valid event changed by the caller, then packed. */
static void add_event(const char *reason, const audfx_event *e)
{
    /* on its own subject when its type is usable as one, else a fixed one */
    const char *tail = "poison";
    size_t pl = strlen(fx.prefix);
    if (strncmp(e->event_type, fx.prefix, pl) == 0 && e->event_type[pl] == '.' &&
        strlen(e->event_type) < 100 && strchr(e->event_type + pl + 1, ' ') == NULL &&
        strchr(e->event_type + pl + 1, '.') == NULL && e->event_type[pl + 1] != '\0')
        tail = e->event_type + pl + 1;
    poison *p = add_poison(reason, tail);
    p->data = audfx_pack(e, &p->len);
}

/* base under a new event id, so that a poison row stored by mistake would
 * show as a row not expected rather than hide behind base's own */
static audfx_event fresh(const audfx_event *base)
{
    audfx_event e = *base;
    cms_uuid u;
    cms_uuid_v7(&u);
    cms_uuid_format(&u, e.id);
    return e;
}

static void make_poisons(const audfx_event *base)
{
    npoisons = 0;
    /* undecodable bytes */
    static const uint8_t ff[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    static const uint8_t wire7[] = {0x0f, 0x00, 0x0a, 0x01, 'x'};
    add_raw(ff, sizeof ff);
    add_raw(wire7, sizeof wire7);
    size_t len;
    uint8_t *whole = audfx_pack(base, &len);
    add_raw(whole, len - 3); /* cut inside its last field */
    free(whole);

    static const char *const bad_ids[] = {"", "not-a-uuid", "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5"};
    for (int i = 0; i < 3; i++) {
        audfx_event e = fresh(base);
        snprintf(e.id, sizeof e.id, "%s", bad_ids[i]);
        add_event("invalid_event_id", &e);
        e = fresh(base);
        snprintf(e.resource_id, sizeof e.resource_id, "%s", bad_ids[i]);
        add_event("invalid_resource_id", &e);
        e = fresh(base);
        snprintf(e.actor_id, sizeof e.actor_id, "%s", bad_ids[i]);
        add_event("invalid_actor_id", &e);
    }
    /* malformed event types */
    static const char *const bad_verbs[] = {"bad verb", "", "a.b"};
    for (int i = 0; i < 3; i++) {
        audfx_event e = fresh(base);
        snprintf(e.event_type, sizeof e.event_type, "%s.%s", fx.prefix, bad_verbs[i]);
        add_event("invalid_event_type", &e);
    }
    /* event type of another resource type */
    static const char *const others[] = {"contract.signed", "other.created"};
    for (int i = 0; i < 3; i++) {
        audfx_event e = fresh(base);
        if (i < 2)
            snprintf(e.event_type, sizeof e.event_type, "%s", others[i]);
        else /* the resource type as a prefix of another */
            snprintf(e.event_type, sizeof e.event_type, "%sx.created", fx.prefix);
        add_event("invalid_event_type", &e);
    }
    /* event types over 50 characters */
    for (int i = 0; i < 3; i++) {
        audfx_event e = fresh(base);
        int verb = 50 - (int)strlen(fx.prefix) - 1 + 1 + i; /* 51, 52, 53 characters */
        int w = snprintf(e.event_type, sizeof e.event_type, "%s.%.*s", fx.prefix, verb,
                         "vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv");
        cr_assert(w > 50 && (size_t)w < sizeof e.event_type);
        add_event("invalid_event_type", &e);
    }
    /* bad resource types */
    static const char *const bad_types[] = {"", "bad type",
                                            "rrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrr"};
    for (int i = 0; i < 3; i++) {
        audfx_event e = fresh(base);
        snprintf(e.resource_type, sizeof e.resource_type, "%s", bad_types[i]);
        snprintf(e.event_type, sizeof e.event_type, "%.50s.created", bad_types[i]);
        add_event("invalid_resource_type", &e);
    }
    /* details that are not a storable JSON object */
    static const char *const bad_details[] = {
        "[]",
        "[1, 2]",
        "[{\"a\": 1}]", /* arrays */
        "{",
        "{\"a\": }",
        "not json", /* invalid */
        "{\"a\": \"\\u0000\"}",
        "{\"\\u0000\": 1}",
        "{\"a\": [\"x\\u0000y\"]}", /* NUL */
    };
    for (int i = 0; i < 9; i++) {
        audfx_event e = fresh(base);
        e.details = (char *)bad_details[i];
        add_event("invalid_details", &e);
    }
    for (int i = 0; i < 3; i++) {
        audfx_event e = fresh(base);
        e.occurred_us = 0;
        add_event("invalid_occurred_at", &e);
    }
    /* valid in every field, but no such identity */
    for (int i = 0; i < 3; i++) {
        audfx_event e = fresh(base);
        cms_uuid u;
        cms_uuid_v7(&u);
        cms_uuid_format(&u, e.actor_id);
        add_event("unknown_actor", &e);
    }
}

static size_t expected_for(const char *reason)
{
    size_t n = 0;
    for (size_t i = 0; i < npoisons; i++)
        n += strcmp(poisons[i].reason, reason) == 0;
    return n;
}

Test(audit, poison_in_a_backlog_is_dead_lettered_once_and_the_rest_stored, .timeout = 120)
{
    enum { V = 1000, K = 10 };
    audfx_setup(&fx, "aud_poison", K);
    evs = audfx_events(&fx, nevs = V);
    make_poisons(&evs[0]);
    cr_assert_eq(npoisons, 13 * 3, "3 of each of 13 kinds");

    /* everything is in the stream before cms-audit starts */
    size_t every = V / npoisons;
    size_t next_poison = 0;
    for (size_t i = 0; i < V; i++) {
        audfx_publish_event(&fx, &evs[i], NULL);
        if (i % every == every - 1 && next_poison < npoisons) {
            poison *p = &poisons[next_poison++];
            const char *headers[] = {"X-Audfx-Tag", p->tag, NULL};
            audfx_publish(&fx, p->subject, p->msg_id, headers, p->data, p->len);
        }
    }
    for (; next_poison < npoisons; next_poison++) {
        poison *p = &poisons[next_poison];
        const char *headers[] = {"X-Audfx-Tag", p->tag, NULL};
        audfx_publish(&fx, p->subject, p->msg_id, headers, p->data, p->len);
    }
    audfx_publish_wait(&fx);

    char durable[48];
    snprintf(durable, sizeof durable, "%s", fx.prefix);
    int port;
    double started = audfx_now_ms();
    pid_t pid = audfx_start(&fx, durable, &port, NULL);
    cr_assert(audfx_wait_readyz(port, 200, 30000));
    audfx_wait_stored(&fx, durable, V, pid, 60000, 0);
    /* dead letters are counted before their originals are acked */
    cr_assert_eq(audfx_dead_total(port), (double)npoisons);
    /* an unknown actor is final only on the third delivery, after naks of 1 s and 2 s */
    double took = audfx_now_ms() - started;
    cr_expect_geq(took, 3000, "unknown actors dead-lettered %.0f ms after the start", took);
    expect_rows(evs, V);

    static const char *const reasons[] = {
        "undecodable",      "invalid_event_id",    "invalid_resource_id",
        "invalid_actor_id", "invalid_event_type",  "invalid_resource_type",
        "invalid_details",  "invalid_occurred_at", "unknown_actor"};
    for (size_t i = 0; i < sizeof reasons / sizeof reasons[0]; i++) {
        char series[96];
        snprintf(series, sizeof series, "cms_audit_dead_letters_total{reason=\"%s\"}", reasons[i]);
        size_t want = expected_for(reasons[i]);
        cr_assert_geq(want, 3, "at least 3 of %s", reasons[i]);
        cr_expect_eq(audfx_metric(port, series), (double)want, "%s", series);
    }

    /* Only the poison's own dead letters are judged here: a process of
     * another test consuming all of cms.events.> would dead-letter this
     * test's valid events as unknown actors (its database lacks them). That
     * this process dead-lettered nothing else is the metrics' check above. */
    audfx_dead *dead = NULL;
    size_t ndead = audfx_read_dlq(&fx, &dead);
    for (size_t d = 0; d < ndead; d++) {
        poison *p = NULL;
        for (size_t i = 0; i < npoisons && p == NULL; i++)
            if (strcmp(poisons[i].msg_id, dead[d].msg_id) == 0)
                p = &poisons[i];
        if (p == NULL)
            continue;
        p->found++;
        cr_expect_str_eq(dead[d].reason, p->reason, "reason of %s", p->tag);
        cr_expect_str_eq(dead[d].subject, p->subject, "original subject of %s", p->tag);
        cr_expect_str_eq(dead[d].custom, p->tag, "custom header kept on %s", p->tag);
        cr_expect(dead[d].len == p->len && memcmp(dead[d].data, p->data, p->len) == 0,
                  "payload of %s unchanged (%zu bytes, sent %zu)", p->tag, dead[d].len, p->len);
    }
    for (size_t i = 0; i < npoisons; i++)
        cr_expect_eq(poisons[i].found, 1, "%s dead-lettered exactly once (%d)", poisons[i].tag,
                     poisons[i].found);
    audfx_dead_free(dead, ndead);

    cr_assert(audfx_alive(pid), "the same process took all of it");
    cr_assert_eq(audfx_stop(&fx, pid, NULL), 0, "SIGTERM: exit 0");
}

Test(audit, an_identity_created_after_its_first_event_is_waited_for, .timeout = 120)
{
    enum { V = 200, L = 5, K = 2 };
    audfx_setup(&fx, "aud_late", K);
    evs = audfx_events(&fx, nevs = V + L);
    cms_uuid u;
    cms_uuid_v7(&u);
    char late[37];
    cms_uuid_format(&u, late);
    for (size_t i = V; i < V + L; i++)
        snprintf(evs[i].actor_id, sizeof evs[i].actor_id, "%s", late);
    for (size_t i = 0; i < V + L; i++)
        audfx_publish_event(&fx, &evs[i], NULL);
    audfx_publish_wait(&fx);

    char durable[48];
    snprintf(durable, sizeof durable, "%s", fx.prefix);
    int port;
    pid_t pid = audfx_start(&fx, durable, &port, NULL);
    /* the others stored, all delivered, and only the late actor's held back
     * unacknowledged (nak'd with a delay): then the identity appears */
    AUDFX_WAIT(audfx_durable_pending(&fx, durable) == L && audfx_rows(&fx) == V, 30000, pid,
               "%ld rows, %d pending", audfx_rows(&fx), audfx_durable_pending(&fx, durable));
    char sql[256];
    snprintf(sql, sizeof sql,
             "INSERT INTO identities (id, name, type) VALUES ('%s', 'audfx-%s-late', 'user')", late,
             fx.prefix);
    char *r = cms_test_sql(fx.db, sql);
    cr_assert_not_null(r);
    free(r);

    audfx_wait_stored(&fx, durable, V + L, pid, 30000, 0);
    expect_rows(evs, V + L);
    cr_expect_eq(audfx_dead_total(port), 0, "no event dead-lettered for an actor that came late");
    cr_assert_eq(audfx_stop(&fx, pid, NULL), 0);
}

Test(audit, a_lock_timeout_delays_events_but_never_dead_letters_them, .timeout = 120)
{
    /* 8 events: splitting one batch reaches single rows after 4 failures */
    enum { N = 8, K = 3 };
    audfx_setup(&fx, "aud_lock", K);
    evs = audfx_events(&fx, nevs = N);
    /* inserts give up after 300 ms of waiting for a lock: a transient error */
    char *r = cms_test_sql(fx.db, "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET "
                                  "lock_timeout = %L', current_database(), '300ms'); END $$");
    cr_assert_not_null(r);
    free(r);
    char durable[48];
    snprintf(durable, sizeof durable, "%s", fx.prefix);
    int port;
    pid_t pid = audfx_start(&fx, durable, &port, NULL);
    cr_assert(audfx_wait_readyz(port, 200, 30000), "cms-audit became ready");

    PGconn *locker = PQconnectdb(fx.db);
    cr_assert_eq(PQstatus(locker), CONNECTION_OK);
    PGresult *lr = PQexec(locker, "BEGIN; LOCK TABLE audit_logs IN ACCESS EXCLUSIVE MODE");
    cr_assert_eq(PQresultStatus(lr), PGRES_COMMAND_OK, "%s", PQresultErrorMessage(lr));
    PQclear(lr);
    for (size_t i = 0; i < N; i++)
        audfx_publish_event(&fx, &evs[i], NULL);
    audfx_publish_wait(&fx);
    /* hold the lock through more failed inserts than splitting would need
     * to isolate every row (or until something is dead-lettered) */
    AUDFX_WAIT(audfx_metric(port, "cms_pg_jobs_failed_total") >= 6 || audfx_dead_total(port) > 0,
               60000, pid, "inserts did not fail while the table was locked");
    lr = PQexec(locker, "COMMIT");
    PQclear(lr);
    PQfinish(locker);

    audfx_wait_stored(&fx, durable, N, pid, 60000, 0);
    expect_rows(evs, N);
    cr_expect_eq(audfx_dead_total(port), 0, "a lock timeout is no reason to dead-letter an event");
    cr_assert_eq(audfx_stop(&fx, pid, NULL), 0);
}

Test(audit, a_typed_body_is_stored_rendered_from_its_descriptor, .timeout = 120)
{
    enum { N = 3, K = 1 };
    audfx_setup(&fx, "aud_body", K);
    char durable[48];
    snprintf(durable, sizeof durable, "%s", fx.prefix);
    int port;
    pid_t pid = audfx_start(&fx, durable, &port, NULL);
    cr_assert(audfx_wait_readyz(port, 200, 30000), "cms-audit became ready");
    char ids[N][37], type[80], subject[128];
    snprintf(type, sizeof type, "%s.status_changed", fx.prefix);
    snprintf(subject, sizeof subject, "cms.events.%s", type);
    static const char *const reasons[N] = {"policy", "quote \" and \\ and \xc3\xa9", ""};
    for (int i = 0; i < N; i++) {
        cms_uuid u;
        cms_uuid_v7(&u);
        cms_uuid_format(&u, ids[i]);
        Cms__V1__IdentityStatusChanged body = CMS__V1__IDENTITY_STATUS_CHANGED__INIT;
        body.identity_id = ids[i];
        body.old_status = (char *)"active";
        body.new_status = (char *)"suspended";
        body.reason = (char *)reasons[i];
        Cms__V1__Envelope e = CMS__V1__ENVELOPE__INIT;
        e.event_id = ids[i];
        e.event_type = type;
        e.resource_type = fx.prefix;
        e.resource_id = ids[i];
        e.actor_id = fx.actors[0];
        e.occurred_at_us = INT64_C(1718000000000000) + i;
        e.body_case = CMS__V1__ENVELOPE__BODY_IDENTITY_STATUS_CHANGED;
        e.identity_status_changed = &body;
        uint8_t buf[1024];
        size_t len = cms__v1__envelope__pack(&e, buf);
        audfx_publish(&fx, subject, ids[i], NULL, buf, len);
    }
    audfx_publish_wait(&fx);
    audfx_wait_stored(&fx, durable, N, pid, 30000, 0);
    for (int i = 0; i < N; i++) {
        char sql[512];
        snprintf(sql, sizeof sql,
                 "SELECT details = jsonb_build_object('identity_id', '%s', 'old_status', 'active', "
                 "'new_status', 'suspended'%s%s%s) FROM audit_logs WHERE id = '%s'",
                 ids[i], i == 2 ? "" : ", 'reason', ", i == 0 ? "'policy'" : "",
                 i == 1 ? "E'quote \" and \\\\ and \xc3\xa9'" : "", ids[i]);
        char *same = cms_test_sql(fx.db, sql);
        cr_assert_not_null(same);
        cr_expect_str_eq(same, "t", "event %d: details are its body, field by field", i);
        free(same);
    }
    cr_expect_eq(audfx_dead_total(port), 0);
    cr_assert_eq(audfx_stop(&fx, pid, NULL), 0);
}
