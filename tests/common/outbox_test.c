/* The outbox relay against the real PostgreSQL and nats-server: every
 * committed row reaches the stream exactly once, in commit order, also when
 * the writing process is killed between commit and publish, when a row's
 * publish fails for a while, and around a row that can never be published
 * (which is moved to outbox_dead). */
#include "bus.h"
#include "metrics.h"
#include "nats.h"
#include "outbox.h"
#include "pg.h"
#include "testenv.h"
#include "uuid.h"

#include <criterion/criterion.h>
#include <nats/nats.h>
#include <signal.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

typedef struct {
    uv_loop_t loop;
    uv_timer_t watchdog, check;
    cms_pg *pg;
    cms_nats *nats;
    cms_outbox *ob;
    char db[512];
    char subject[128];
    char (*ids)[CMS_UUID_STRLEN + 1];
    int n;
    int committed, failed;
    int provisioned;
    int received, out_of_order, unknown;
    int kill_after; /* child: SIGKILL itself once this many were published */
    int phase;
    cms_nats_consumer *consumer;
    int closed_parts;
} fx;

static void watchdog_fired(uv_timer_t *t)
{
    fx *f = t->data;
    cr_assert_fail("watchdog: %d committed, %d failed, %d received, phase %d", f->committed,
                   f->failed, f->received, f->phase);
}

static void provisioned(void *arg, cms_nats_err err)
{
    fx *f = arg;
    cr_assert_eq(err, CMS_NATS_OK, "provision: %s", cms_nats_strerror(err));
    f->provisioned = 1;
}

static void open_runtime(fx *f, int pool_size)
{
    cr_assert_eq(uv_loop_init(&f->loop), 0);
    uv_timer_init(&f->loop, &f->watchdog);
    f->watchdog.data = f;
    uv_timer_start(&f->watchdog, watchdog_fired, 60000, 0);
    uv_unref((uv_handle_t *)&f->watchdog);
    uv_timer_init(&f->loop, &f->check);
    f->check.data = f;
    cms_pg_options po = {.conninfo = f->db, .pool_size = pool_size};
    cr_assert_eq(cms_pg_create(&f->loop, &po, &f->pg), CMS_PG_OK);
    cms_nats_options no = {.url = cms_test_env("CMS_TEST_NATS_URL"), .name = "outbox_test"};
    cr_assert_eq(cms_nats_create(&f->loop, &no, &f->nats), 0);
    cr_assert_eq(cms_bus_provision(f->nats, provisioned, f), 0);
    while (!f->provisioned && uv_run(&f->loop, UV_RUN_ONCE))
        ;
}

static void part_closed(void *arg)
{
    ((fx *)arg)->closed_parts++;
}

static void close_runtime(fx *f)
{
    int want = 0;
    if (f->ob) {
        cms_outbox_close(f->ob, part_closed, f);
        want++;
        while (f->closed_parts < want && uv_run(&f->loop, UV_RUN_ONCE))
            ;
    }
    cms_nats_close(f->nats, part_closed, f);
    cms_pg_close(f->pg, part_closed, f);
    want += 2;
    uv_close((uv_handle_t *)&f->watchdog, NULL);
    uv_close((uv_handle_t *)&f->check, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    cr_assert_eq(f->closed_parts, want);
    cr_assert_eq(uv_loop_close(&f->loop), 0, "a handle was left open");
    cms_outbox_destroy(f->ob);
    cms_nats_destroy(f->nats);
    cms_pg_destroy(f->pg);
}

static void committed(void *arg, cms_pg_err err, const cms_pg_result *res)
{
    fx *f = arg;
    if (err == CMS_PG_OK) {
        f->committed++;
        cms_outbox_kick(f->ob);
    } else {
        f->failed++;
        cr_log_error("commit failed: %s %s", cms_pg_strerror(err),
                     res ? cms_pg_result_message(res) : "");
    }
}

/* One job: the change itself and its event, in one transaction. */
static void write_event(fx *f, int i)
{
    cms_uuid u;
    cms_uuid_v7(&u);
    cms_uuid_format(&u, f->ids[i]);
    char payload[64];
    int len = snprintf(payload, sizeof payload, "event %d", i);
    cms_pg_job *j = cms_pg_job_new();
    const char *v[] = {f->ids[i]};
    cr_assert_eq(cms_pg_job_sql(j, "INSERT INTO changes VALUES ($1::uuid)", 1, v, NULL, NULL), 0);
    cr_assert_eq(cms_outbox_add_raw(j, "outbox_test", f->ids[i], f->subject, payload, (size_t)len),
                 0);
    cr_assert_eq(cms_pg_submit(f->pg, &j, committed, f), CMS_PG_OK);
}

/* Reads the stream back through a fresh durable: order and count. */
static void received(void *arg, cms_nats_msg *m)
{
    fx *f = arg;
    const char *id = cms_nats_msg_header(m, "Nats-Msg-Id");
    if (f->received < f->n && id && strcmp(id, f->ids[f->received]) == 0) {
        f->received++;
    } else {
        int known = 0;
        for (int i = 0; id && i < f->n; i++)
            known |= strcmp(id, f->ids[i]) == 0;
        if (known)
            f->out_of_order++;
        else
            f->unknown++;
        f->received++;
    }
    cr_assert_eq(cms_nats_msg_ack(m), CMS_NATS_OK);
    cms_nats_msg_destroy(m);
}

static void wait_empty(uv_timer_t *t)
{
    fx *f = t->data;
    char *left = cms_test_sql(f->db, "SELECT count(*) FROM outbox WHERE source = 'outbox_test'");
    if (left && strcmp(left, "0") == 0)
        uv_timer_stop(t);
    free(left);
}

static void verify_stream(fx *f, const char *durable)
{
    cms_nats_consumer_options co = {
        .stream = "CMS_EVENTS", .durable = durable, .filter_subject = f->subject};
    cr_assert_eq(cms_nats_consume(f->nats, &co, received, f, &f->consumer), 0);
    while (f->received < f->n && uv_run(&f->loop, UV_RUN_ONCE))
        ;
    cr_assert_eq(f->out_of_order, 0, "%d events out of commit order", f->out_of_order);
    cr_assert_eq(f->unknown, 0);
    cr_assert_eq(f->received, f->n);
    /* the relay deletes each batch once it is acknowledged */
    uv_timer_start(&f->check, wait_empty, 20, 20);
    while (uv_is_active((uv_handle_t *)&f->check) && uv_run(&f->loop, UV_RUN_ONCE))
        ;
    cr_assert_eq(f->received, f->n, "no duplicate arrived meanwhile");
}

static void fixture(fx *f, const char *name, int n)
{
    memset(f, 0, sizeof *f);
    cr_assert_eq(cms_test_db_create(name, 1, f->db, sizeof f->db), 0);
    free(cms_test_sql(f->db, "CREATE TABLE changes (id uuid PRIMARY KEY)"));
    snprintf(f->subject, sizeof f->subject, "cms.events.%s%d.created", name, (int)getpid());
    f->n = n;
    f->ids = calloc((size_t)n, sizeof *f->ids);
}

static void wait_published(uv_timer_t *t)
{
    fx *f = t->data;
    if (cms_outbox_published(f->ob) >= (uint64_t)f->n)
        uv_timer_stop(t);
}

Test(outbox, relays_committed_rows_once_in_order, .timeout = 90)
{
    fx f;
    fixture(&f, "outbox_a", 3000);
    open_runtime(&f, 1);
    cms_outbox_options oo = {.source = "outbox_test", .batch = 128};
    cr_assert_eq(cms_outbox_create(&f.loop, f.pg, f.nats, &oo, &f.ob), 0);
    for (int i = 0; i < f.n; i++)
        write_event(&f, i);
    uv_timer_start(&f.check, wait_published, 10, 10);
    while (uv_is_active((uv_handle_t *)&f.check) && uv_run(&f.loop, UV_RUN_ONCE))
        ;
    cr_assert_eq(f.committed, f.n);
    cr_assert_eq(cms_outbox_published(f.ob), (uint64_t)f.n);
    char durable[64];
    snprintf(durable, sizeof durable, "outbox_a_%d", (int)getpid());
    verify_stream(&f, durable);
    /* rows of another source are not this relay's business */
    free(cms_test_sql(f.db, "INSERT INTO outbox (source, event_id, subject, payload) "
                            "VALUES ('other', gen_random_uuid(), 'cms.events.x.y', '')"));
    cms_outbox_kick(f.ob);
    close_runtime(&f);
    char *other = cms_test_sql(f.db, "SELECT count(*) FROM outbox WHERE source = 'other'");
    cr_assert_str_eq(other, "1");
    free(other);
    cms_test_db_drop(f.db);
    free(f.ids);
}

/* Two relays of one source, as two replicas would run: */
static cms_outbox *replica[2];
static uint64_t replica_target;

static uint64_t replicas_published(void)
{
    return (replica[0] ? cms_outbox_published(replica[0]) : 0) +
           (replica[1] ? cms_outbox_published(replica[1]) : 0);
}

static void wait_replicas(uv_timer_t *t)
{
    if (replicas_published() >= replica_target)
        uv_timer_stop(t);
}

static void relay_closed(void *arg)
{
    *(int *)arg = 1;
}

Test(outbox, one_relay_per_source_among_replicas, .timeout = 90)
{
    enum { FIRST = 1000, MORE = 200 };
    fx f;
    fixture(&f, "outbox_c", FIRST + MORE);
    open_runtime(&f, 1); /* one writer connection: commit order is submission order */
    /* each replica with its own connection, as separate processes have */
    cms_pg *own[2] = {NULL, NULL};
    cms_pg_options po = {.conninfo = f.db, .pool_size = 1};
    cms_outbox_options oo = {.source = "outbox_test", .batch = 64, .poll_ms = 20};
    for (int r = 0; r < 2; r++) {
        cr_assert_eq(cms_pg_create(&f.loop, &po, &own[r]), CMS_PG_OK);
        cr_assert_eq(cms_outbox_create(&f.loop, own[r], f.nats, &oo, &replica[r]), 0);
    }
    f.ob = replica[0];
    for (int i = 0; i < FIRST; i++)
        write_event(&f, i);
    replica_target = FIRST;
    uv_timer_start(&f.check, wait_replicas, 10, 10);
    while (uv_is_active((uv_handle_t *)&f.check) && uv_run(&f.loop, UV_RUN_ONCE))
        ;
    uint64_t a = cms_outbox_published(replica[0]), b = cms_outbox_published(replica[1]);
    cr_assert((a == 0) != (b == 0), "one relay held the lease: %llu and %llu published",
              (unsigned long long)a, (unsigned long long)b);
    cr_assert_eq(a + b, (uint64_t)FIRST);

    /* the holder closes: it hands the lease over, the other takes over at once */
    int leader = a ? 0 : 1, closed = 0;
    cms_outbox_close(replica[leader], relay_closed, &closed);
    while (!closed && uv_run(&f.loop, UV_RUN_ONCE))
        ;
    cms_outbox_destroy(replica[leader]);
    replica[leader] = NULL;
    f.ob = replica[1 - leader];
    double t0 = cms_test_now_ms();
    for (int i = FIRST; i < FIRST + MORE; i++)
        write_event(&f, i);
    replica_target = MORE; /* the closed relay no longer counts */
    uv_timer_start(&f.check, wait_replicas, 10, 10);
    while (uv_is_active((uv_handle_t *)&f.check) && uv_run(&f.loop, UV_RUN_ONCE))
        ;
    cr_assert_eq(cms_outbox_published(f.ob), (uint64_t)MORE, "the standby published the rest");
    cr_assert_lt(cms_test_now_ms() - t0, 5000, "taken over without waiting for expiry");
    char durable[64];
    snprintf(durable, sizeof durable, "outbox_c_%d", (int)getpid());
    verify_stream(&f, durable); /* every event once, in commit order */
    closed = 0;
    cms_outbox_close(f.ob, relay_closed, &closed);
    while (!closed && uv_run(&f.loop, UV_RUN_ONCE))
        ;
    cms_outbox_destroy(f.ob);
    f.ob = NULL;
    for (int r = 0; r < 2; r++) {
        int done = 0;
        cms_pg_close(own[r], relay_closed, &done);
        while (!done && uv_run(&f.loop, UV_RUN_ONCE))
            ;
        cms_pg_destroy(own[r]);
    }
    close_runtime(&f);
    replica[0] = replica[1] = NULL;
    cms_test_db_drop(f.db);
    free(f.ids);
}

static void child_published_check(uv_timer_t *t)
{
    fx *f = t->data;
    if (f->ob && cms_outbox_published(f->ob) >= (uint64_t)f->kill_after)
        kill(getpid(), SIGKILL); /* between publish and delete, mid-batch */
}

static void child_all_committed(uv_timer_t *t)
{
    fx *f = t->data;
    if (f->committed + f->failed < f->n)
        return;
    if (f->failed)
        _exit(3);
    /* every row is committed and none published: start relaying, die midway */
    cms_outbox_options oo = {.source = "outbox_test", .batch = 100};
    if (cms_outbox_create(&f->loop, f->pg, f->nats, &oo, &f->ob) != 0)
        _exit(4);
    uv_timer_start(t, child_published_check, 1, 1);
}

Test(outbox, a_killed_writer_loses_and_duplicates_nothing, .timeout = 120)
{
    fx f;
    fixture(&f, "outbox_b", 2000);
    /* ids are made here, before the fork, so both processes know them */
    for (int i = 0; i < f.n; i++) {
        cms_uuid u;
        cms_uuid_v7(&u);
        cms_uuid_format(&u, f.ids[i]);
    }
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        open_runtime(&f, 1);
        for (int i = 0; i < f.n; i++) {
            char payload[32];
            int len = snprintf(payload, sizeof payload, "event %d", i);
            cms_pg_job *j = cms_pg_job_new();
            const char *v[] = {f.ids[i]};
            if (cms_pg_job_sql(j, "INSERT INTO changes VALUES ($1::uuid)", 1, v, NULL, NULL) ||
                cms_outbox_add_raw(j, "outbox_test", f.ids[i], f.subject, payload, (size_t)len) ||
                cms_pg_submit(f.pg, &j, committed, &f))
                _exit(2);
        }
        f.kill_after = 750;
        uv_timer_start(&f.check, child_all_committed, 1, 1);
        uv_run(&f.loop, UV_RUN_DEFAULT);
        _exit(5); /* never reached: the child kills itself */
    }
    int status = 0;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
              "the writer died by SIGKILL mid-relay (status %d)", status);
    char *left = cms_test_sql(f.db, "SELECT count(*) FROM outbox");
    cr_assert(atoi(left) > 0 && atoi(left) < f.n, "some rows were left behind: %s", left);
    free(left);
    /* a new process relays the rest */
    open_runtime(&f, 2);
    cms_outbox_options oo = {.source = "outbox_test", .batch = 64};
    cr_assert_eq(cms_outbox_create(&f.loop, f.pg, f.nats, &oo, &f.ob), 0);
    char durable[64];
    snprintf(durable, sizeof durable, "outbox_b_%d", (int)getpid());
    verify_stream(&f, durable);
    close_runtime(&f);
    cms_test_db_drop(f.db);
    free(f.ids);
}

/* ---- a stream of the test's own, through a blocking side connection ---- */

typedef struct side {
    natsConnection *nc;
    jsCtx *js;
    char stream[64];
} side;

static void side_open(side *s, const char *stream)
{
    memset(s, 0, sizeof *s);
    snprintf(s->stream, sizeof s->stream, "%s", stream);
    cr_assert_eq(natsConnection_ConnectTo(&s->nc, cms_test_env("CMS_TEST_NATS_URL")), NATS_OK);
    cr_assert_eq(natsConnection_JetStream(&s->js, s->nc, NULL), NATS_OK);
}

/* Creates (or, once it exists, updates) the stream to take these subjects. */
static void side_stream(side *s, const char *const *subjects, int n, bool update)
{
    jsStreamConfig cfg;
    jsStreamConfig_Init(&cfg);
    cfg.Name = s->stream;
    cfg.Subjects = (const char **)subjects;
    cfg.SubjectsLen = n;
    cfg.Storage = js_FileStorage;
    cfg.Duplicates = CMS_BUS_DEDUPE_WINDOW_MS * INT64_C(1000000);
    jsErrCode jerr = 0;
    natsStatus st;
    if (update) {
        st = js_UpdateStream(NULL, s->js, &cfg, NULL, &jerr);
    } else {
        (void)js_DeleteStream(s->js, s->stream, NULL, NULL);
        st = js_AddStream(NULL, s->js, &cfg, NULL, &jerr);
    }
    cr_assert_eq(st, NATS_OK, "stream %s: %s (%d)", s->stream, natsStatus_GetText(st), (int)jerr);
}

/* Asserts that the stream holds exactly the rows rows[0..n) (indexes into
 * ids, of which there are nids), once each and in this order. */
static void side_expect(side *s, char (*ids)[CMS_UUID_STRLEN + 1], int nids, const int *rows, int n)
{
    jsStreamInfo *si = NULL;
    cr_assert_eq(js_GetStreamInfo(&si, s->js, s->stream, NULL, NULL), NATS_OK);
    uint64_t msgs = si->State.Msgs;
    jsStreamInfo_Destroy(si);
    cr_assert_eq(msgs, (uint64_t)n, "every row once: %llu messages for %d rows",
                 (unsigned long long)msgs, n);
    for (int i = 0; i < n; i++) {
        natsMsg *m = NULL;
        natsStatus st = js_GetMsg(&m, s->js, s->stream, (uint64_t)i + 1, NULL, NULL);
        cr_assert_eq(st, NATS_OK, "message %d: %s", i + 1, natsStatus_GetText(st));
        const char *id = NULL;
        cr_assert_eq(natsMsgHeader_Get(m, "Nats-Msg-Id", &id), NATS_OK);
        int row = -1;
        for (int r = 0; r < nids && row < 0; r++)
            if (strcmp(id, ids[r]) == 0)
                row = r;
        cr_assert_eq(row, rows[i], "stream message %d is row %d, not row %d", i + 1, row + 1,
                     rows[i] + 1);
        natsMsg_Destroy(m);
    }
}

static void side_close(side *s)
{
    (void)js_DeleteStream(s->js, s->stream, NULL, NULL);
    jsCtx_Destroy(s->js);
    natsConnection_Destroy(s->nc);
}

/* The rows of one job, so one transaction: commit order is their order. */
static void write_rows(fx *f, const char *const *subjects, const uint8_t *const *payloads,
                       const size_t *lens)
{
    cms_pg_job *j = cms_pg_job_new();
    for (int i = 0; i < f->n; i++) {
        cms_uuid u;
        cms_uuid_v7(&u);
        cms_uuid_format(&u, f->ids[i]);
        cr_assert_eq(
            cms_outbox_add_raw(j, "outbox_test", f->ids[i], subjects[i], payloads[i], lens[i]), 0);
    }
    cr_assert_eq(cms_pg_submit(f->pg, &j, committed, f), CMS_PG_OK);
}

static uint64_t counter(const char *name, const char *help, const char *labels)
{
    cms_counter *c = cms_metrics_counter(cms_metrics_default(), name, help, labels);
    cr_assert_not_null(c, "%s exists", name);
    return cms_counter_get(c);
}

static uint64_t failures(void)
{
    return counter("cms_outbox_publish_failures_total", "outbox publishes that failed", NULL);
}

/* ---- a failure that passes: held, retried, and nothing overtakes it ---- */

#define NORDER 10
#define ORDER_HELD 4 /* row 5 (index 4): on a subject no stream takes yet */

typedef struct order_ctx {
    fx *f;
    side *s;
    const char *const *subjects;
    uint64_t failures0;
    uint64_t published_while_failing;
    int fixed;
} order_ctx;

static void order_check(uv_timer_t *t)
{
    order_ctx *c = t->data;
    if (!c->fixed) {
        /* no event says the relay failed again: its own metric is the sign */
        if (failures() - c->failures0 < 3)
            return;
        c->published_while_failing = cms_outbox_published(c->f->ob);
        const char *both[] = {c->subjects[0], c->subjects[ORDER_HELD]};
        side_stream(c->s, both, 2, true); /* now a stream takes row 5 */
        c->fixed = 1;
    } else if (cms_outbox_published(c->f->ob) >= NORDER) {
        uv_timer_stop(t);
    }
}

Test(outbox, a_failure_that_passes_holds_the_rows_behind_it, .timeout = 90)
{
    fx f;
    fixture(&f, "outbox_o", NORDER);
    side s;
    char stream[64], a[64], b[64];
    snprintf(stream, sizeof stream, "OB%d_ORD", (int)getpid());
    snprintf(a, sizeof a, "ob%d.a", (int)getpid());
    snprintf(b, sizeof b, "ob%d.b", (int)getpid());
    side_open(&s, stream);
    const char *only_a[] = {a};
    side_stream(&s, only_a, 1, false);

    open_runtime(&f, 1);
    const char *subjects[NORDER];
    const uint8_t *payloads[NORDER];
    size_t lens[NORDER];
    char bodies[NORDER][16];
    for (int i = 0; i < NORDER; i++) {
        subjects[i] = i == ORDER_HELD ? b : a;
        lens[i] = (size_t)snprintf(bodies[i], sizeof bodies[i], "row %d", i + 1);
        payloads[i] = (const uint8_t *)bodies[i];
    }
    cms_outbox_options oo = {.source = "outbox_test", .poll_ms = 50, .backoff_max_ms = 150};
    cr_assert_eq(cms_outbox_create(&f.loop, f.pg, f.nats, &oo, &f.ob), 0);
    order_ctx c = {.f = &f, .s = &s, .subjects = subjects, .failures0 = failures()};
    write_rows(&f, subjects, payloads, lens);
    f.check.data = &c;
    uv_timer_start(&f.check, order_check, 5, 5);
    while (uv_is_active((uv_handle_t *)&f.check) && uv_run(&f.loop, UV_RUN_ONCE))
        ;
    cr_assert_eq(f.committed, 1);
    cr_assert_eq(c.published_while_failing, ORDER_HELD,
                 "while row %d failed only the %d rows before it were published, not %llu",
                 ORDER_HELD + 1, ORDER_HELD, (unsigned long long)c.published_while_failing);
    cr_assert_eq(cms_outbox_published(f.ob), NORDER);
    f.check.data = &f;
    uv_timer_start(&f.check, wait_empty, 20, 20);
    while (uv_is_active((uv_handle_t *)&f.check) && uv_run(&f.loop, UV_RUN_ONCE))
        ;
    int rows[NORDER];
    for (int i = 0; i < NORDER; i++)
        rows[i] = i;
    side_expect(&s, f.ids, NORDER, rows, NORDER); /* every row once, in the order of seq */
    close_runtime(&f);
    side_close(&s);
    cms_test_db_drop(f.db);
    free(f.ids);
}

/* ---- a row that can never be published: moved aside, the rest go on ---- */

#define NDEAD 7
#define DEAD_ROW 3 /* row 4 (index 3): larger than the server takes */

Test(outbox, a_row_too_large_is_moved_to_outbox_dead_and_the_rest_go_on, .timeout = 90)
{
    cr_assert_geq(sodium_init(), 0);
    fx f;
    fixture(&f, "outbox_d", NDEAD);
    side s;
    char stream[64], a[64];
    snprintf(stream, sizeof stream, "OB%d_BIG", (int)getpid());
    snprintf(a, sizeof a, "ob%d.a", (int)getpid());
    side_open(&s, stream);
    const char *only_a[] = {a};
    side_stream(&s, only_a, 1, false);
    int64_t max = natsConnection_GetMaxPayload(s.nc);
    cr_assert_gt(max, 0);

    open_runtime(&f, 1);
    const char *subjects[NDEAD];
    const uint8_t *payloads[NDEAD];
    size_t lens[NDEAD];
    char bodies[NDEAD][16];
    size_t big_len = (size_t)max + 1;
    uint8_t *big = malloc(big_len);
    cr_assert_not_null(big);
    randombytes_buf(big, big_len);
    for (int i = 0; i < NDEAD; i++) {
        subjects[i] = a;
        lens[i] = (size_t)snprintf(bodies[i], sizeof bodies[i], "row %d", i + 1);
        payloads[i] = (const uint8_t *)bodies[i];
    }
    payloads[DEAD_ROW] = big;
    lens[DEAD_ROW] = big_len;
    const char *too_large = "reason=\"too_large\"", *refused = "reason=\"refused\"";
    const char *help = "outbox rows that can never be published, moved to outbox_dead";

    cms_outbox_options oo = {.source = "outbox_test", .poll_ms = 50};
    cr_assert_eq(cms_outbox_create(&f.loop, f.pg, f.nats, &oo, &f.ob), 0);
    uint64_t dead0 = counter("cms_outbox_dead_rows_total", help, too_large);
    uint64_t refused0 = counter("cms_outbox_dead_rows_total", help, refused);
    write_rows(&f, subjects, payloads, lens);
    f.n = NDEAD - 1; /* what wait_published waits for */
    uv_timer_start(&f.check, wait_published, 10, 10);
    while (uv_is_active((uv_handle_t *)&f.check) && uv_run(&f.loop, UV_RUN_ONCE))
        ;
    f.n = NDEAD;
    cr_assert_eq(f.committed, 1);
    uv_timer_start(&f.check, wait_empty, 20, 20);
    while (uv_is_active((uv_handle_t *)&f.check) && uv_run(&f.loop, UV_RUN_ONCE))
        ;
    cr_assert_eq(cms_outbox_published(f.ob), NDEAD - 1);
    cr_assert_eq(counter("cms_outbox_dead_rows_total", help, too_large) - dead0, 1,
                 "counted as too_large");
    cr_assert_eq(counter("cms_outbox_dead_rows_total", help, refused) - refused0, 0);

    /* the row, its reason and its bytes, in outbox_dead */
    unsigned char sha[crypto_hash_sha256_BYTES];
    char hex[2 * sizeof sha + 1], sql[512];
    crypto_hash_sha256(sha, big, big_len);
    sodium_bin2hex(hex, sizeof hex, sha, sizeof sha);
    snprintf(sql, sizeof sql,
             "SELECT count(*) || ' ' || min(reason) || ' ' || min(subject) || ' ' || "
             "min(length(payload)) || ' ' || min(encode(sha256(payload), 'hex')) "
             "FROM outbox_dead WHERE source = 'outbox_test' AND event_id = '%s'",
             f.ids[DEAD_ROW]);
    char *dead = cms_test_sql(f.db, sql);
    char want[256];
    snprintf(want, sizeof want, "1 too_large %s %zu %s", a, big_len, hex);
    cr_assert_str_eq(dead, want, "the row in outbox_dead, whole");
    free(dead);
    char *others = cms_test_sql(f.db, "SELECT count(*) FROM outbox_dead");
    cr_assert_str_eq(others, "1", "only that row");
    free(others);

    int rows[NDEAD - 1];
    for (int i = 0, k = 0; i < NDEAD; i++)
        if (i != DEAD_ROW)
            rows[k++] = i;
    side_expect(&s, f.ids, NDEAD, rows, NDEAD - 1); /* the others once each, in order */
    close_runtime(&f);
    side_close(&s);
    free(big);
    cms_test_db_drop(f.db);
    free(f.ids);
}

/* ---- what the stream lost ---- */

/* Rows kept after their ack, each with the stream and sequence of it, and
 * the stream's message there carrying the row's event id: checked through
 * a connection of the test's own. */
static void assert_kept_rows_match_stream(fx *f, int want)
{
    char *n = cms_test_sql(f->db, "SELECT count(*) FROM outbox WHERE source = 'outbox_test' "
                                  "AND published_at IS NOT NULL AND stream = 'CMS_EVENTS'");
    cr_assert_eq(atoi(n), want, "kept rows: %s", n);
    free(n);
    char *order = cms_test_sql(f->db, "SELECT count(*) FROM (SELECT stream_seq, lag(stream_seq) "
                                      "OVER (ORDER BY seq) AS prev FROM outbox WHERE source = "
                                      "'outbox_test') t WHERE stream_seq <= prev");
    cr_assert_str_eq(order, "0", "stream sequences follow the rows' order");
    free(order);
    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    cr_assert_eq(natsConnection_ConnectTo(&nc, cms_test_env("CMS_TEST_NATS_URL")), NATS_OK);
    cr_assert_eq(natsConnection_JetStream(&js, nc, NULL), NATS_OK);
    for (int k = 0; k < want; k += 37) {
        char sql[256];
        snprintf(sql, sizeof sql,
                 "SELECT stream_seq || ' ' || event_id FROM outbox WHERE source = "
                 "'outbox_test' ORDER BY seq OFFSET %d LIMIT 1",
                 k);
        char *got = cms_test_sql(f->db, sql);
        unsigned long long seq = 0;
        char id[40] = "";
        cr_assert_eq(sscanf(got, "%llu %39s", &seq, id), 2, "row %d: %s", k, got);
        natsMsg *m = NULL;
        cr_assert_eq(js_GetMsg(&m, js, "CMS_EVENTS", seq, NULL, NULL), NATS_OK, "seq %llu", seq);
        const char *mid = NULL;
        cr_assert_eq(natsMsgHeader_Get(m, "Nats-Msg-Id", &mid), NATS_OK);
        cr_assert_str_eq(mid, id, "the stream holds row %d at its recorded sequence", k);
        natsMsg_Destroy(m);
        free(got);
    }
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
}

static void wait_pending_none(uv_timer_t *t)
{
    fx *f = t->data;
    char *left = cms_test_sql(f->db, "SELECT count(*) FROM outbox WHERE source = 'outbox_test' "
                                     "AND published_at IS NULL");
    if (left && strcmp(left, "0") == 0)
        uv_timer_stop(t);
    free(left);
}

static uint64_t republished(void)
{
    return counter("cms_outbox_republished_total",
                   "Outbox rows published again because their stream had lost them", NULL);
}

/* A relay started over a table whose kept rows the stream does not match
 * past a point, as after a store rolled back and written on by others: the
 * rows from rank 150 point at other events' messages, from rank 200 past
 * the stream's end. The check finds the point (rounds of probes), marks
 * the 150 rows after it unpublished, and the relay publishes them again in
 * order; the stream, which still holds them, answers duplicate with their
 * true sequences, which the rows record again. Rows before the point are
 * left as they were. */
Test(outbox, kept_rows_and_what_the_stream_lost_published_again, .timeout = 90)
{
    enum { N = 300, FOREIGN_FROM = 150, PAST_END_FROM = 200 };
    fx f;
    fixture(&f, "outbox_k", N);
    open_runtime(&f, 1);
    cms_outbox_options oo = {.source = "outbox_test", .batch = 64, .retain_ms = 600000};
    cr_assert_eq(cms_outbox_create(&f.loop, f.pg, f.nats, &oo, &f.ob), 0);
    for (int i = 0; i < f.n; i++)
        write_event(&f, i);
    uv_timer_start(&f.check, wait_published, 10, 10);
    while (uv_is_active((uv_handle_t *)&f.check) && uv_run(&f.loop, UV_RUN_ONCE))
        ;
    uv_timer_start(&f.check, wait_pending_none, 10, 10);
    while (uv_is_active((uv_handle_t *)&f.check) && uv_run(&f.loop, UV_RUN_ONCE))
        ;
    assert_kept_rows_match_stream(&f, N);
    int closed = 0;
    cms_outbox_close(f.ob, relay_closed, &closed);
    while (!closed && uv_run(&f.loop, UV_RUN_ONCE))
        ;
    cms_outbox_destroy(f.ob);
    f.ob = NULL;

    char sql[640];
    snprintf(sql, sizeof sql,
             "WITH r AS (SELECT seq, stream_seq, row_number() OVER (ORDER BY seq) - 1 AS k "
             "FROM outbox WHERE source = 'outbox_test') "
             "UPDATE outbox o SET stream_seq = CASE WHEN r.k >= %d THEN r.stream_seq + 1000000000 "
             "ELSE (SELECT r2.stream_seq FROM r r2 WHERE r2.k = r.k - %d) END "
             "FROM r WHERE o.seq = r.seq AND r.k >= %d",
             PAST_END_FROM, FOREIGN_FROM, FOREIGN_FROM);
    free(cms_test_sql(f.db, sql));
    char *seq_before = cms_test_sql(f.db, "SELECT string_agg(stream_seq::text, ',' ORDER BY seq) "
                                          "FROM (SELECT * FROM outbox WHERE source = "
                                          "'outbox_test' ORDER BY seq LIMIT 150) t");

    uint64_t before = republished();
    cr_assert_eq(cms_outbox_create(&f.loop, f.pg, f.nats, &oo, &f.ob), 0);
    f.n = N - FOREIGN_FROM; /* what wait_published waits for now */
    uv_timer_start(&f.check, wait_published, 10, 10);
    while (uv_is_active((uv_handle_t *)&f.check) && uv_run(&f.loop, UV_RUN_ONCE))
        ;
    f.n = N;
    uv_timer_start(&f.check, wait_pending_none, 10, 10);
    while (uv_is_active((uv_handle_t *)&f.check) && uv_run(&f.loop, UV_RUN_ONCE))
        ;
    /* the check found the point and marked what followed it, once */
    cr_assert_eq(republished() - before, (uint64_t)(N - FOREIGN_FROM), "rows published again: %llu",
                 (unsigned long long)(republished() - before));
    cr_assert_eq(cms_outbox_published(f.ob), (uint64_t)(N - FOREIGN_FROM));
    char *seq_after = cms_test_sql(f.db, "SELECT string_agg(stream_seq::text, ',' ORDER BY seq) "
                                         "FROM (SELECT * FROM outbox WHERE source = "
                                         "'outbox_test' ORDER BY seq LIMIT 150) t");
    cr_assert_str_eq(seq_after, seq_before, "the rows the stream holds were left alone");
    assert_kept_rows_match_stream(&f, N);
    /* the stream still had them: nothing twice in it */
    char durable[64];
    snprintf(durable, sizeof durable, "outbox_k_%d", (int)getpid());
    cms_nats_consumer_options co = {
        .stream = "CMS_EVENTS", .durable = durable, .filter_subject = f.subject};
    cr_assert_eq(cms_nats_consume(f.nats, &co, received, &f, &f.consumer), 0);
    while (f.received < f.n && uv_run(&f.loop, UV_RUN_ONCE))
        ;
    cr_assert_eq(f.out_of_order, 0);
    cr_assert_eq(f.unknown, 0);
    free(seq_before);
    free(seq_after);
    close_runtime(&f);
    cms_test_db_drop(f.db);
    free(f.ids);
}
