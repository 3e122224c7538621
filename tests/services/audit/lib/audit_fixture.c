/* Shared by the cms-audit integration and fault tests; see audit_fixture.h. */
#include "audit_fixture.h"

#include "cms/v1/envelope.pb-c.h"
#include "natsfx.h"
#include "pgarray.h"
#include "testenv.h"
#include "uuid.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define DAY_MS (INT64_C(24) * 3600 * 1000)
#define NS_PER_MS INT64_C(1000000)

static atomic_int g_pub_errors;
/* One connection kept for the frequent count, reopened after a failure
 * (the fault tests stop the server under it). */
static PGconn *g_count_conn;

void audfx_pause_ms(int ms)
{
    cms_test_pause_ms(ms);
}

double audfx_now_ms(void)
{
    return cms_test_now_ms();
}

/* xorshift64*, seeded once from a v7 UUID's random bits: plenty for test data */
static uint32_t rand32(void)
{
    static uint64_t x;
    if (x == 0) {
        cms_uuid u;
        cms_uuid_v7(&u);
        memcpy(&x, u.b + 8, 8);
        x |= 1;
    }
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    return (uint32_t)((x * 0x2545f4914f6cdd1dull) >> 32);
}

static void new_id(char out[37])
{
    cms_uuid u;
    cms_uuid_v7(&u);
    cms_uuid_format(&u, out);
}

static void pub_error(jsCtx *js, jsPubAckErr *pae, void *closure)
{
    (void)js;
    (void)closure;
    fprintf(stderr, "audfx: async publish failed: %s (%d)\n",
            pae->ErrText ? pae->ErrText : natsStatus_GetText(pae->Err), (int)pae->ErrCode);
    atomic_fetch_add(&g_pub_errors, 1);
}

void audfx_setup(audfx *f, const char *dbprefix, int nactors)
{
    memset(f, 0, sizeof *f);
    cr_assert(nactors > 0 && nactors <= AUDFX_MAX_ACTORS);
    snprintf(f->prefix, sizeof f->prefix, "t%dx%04x", (int)getpid(), rand32() & 0xffff);
    snprintf(f->subject, sizeof f->subject, "cms.events.%s.>", f->prefix);
    cr_assert_eq(cms_test_db_create(dbprefix, 1, f->db, sizeof f->db), 0, "scratch database");

    f->nactors = nactors;
    size_t cap = 256 + (size_t)nactors * 128, len = 0;
    char *sql = malloc(cap);
    cr_assert_not_null(sql);
    len += (size_t)snprintf(sql, cap, "INSERT INTO identities (id, name, type) VALUES ");
    for (int i = 0; i < nactors; i++) {
        new_id(f->actors[i]);
        len += (size_t)snprintf(sql + len, cap - len, "%s('%s', 'audfx-%s-%d', 'machine')",
                                i ? ", " : "", f->actors[i], f->prefix, i);
    }
    cr_assert_lt(len, cap);
    char *r = cms_test_sql(f->db, sql);
    free(sql);
    cr_assert_not_null(r, "actors inserted");
    free(r);

    natsOptions *no = NULL;
    cr_assert_eq(natsOptions_Create(&no), NATS_OK);
    cr_assert_eq(natsOptions_SetURL(no, cms_test_env("CMS_TEST_NATS_URL")), NATS_OK);
    cr_assert_eq(natsOptions_SetMaxReconnect(no, -1), NATS_OK);
    natsStatus st = natsConnection_Connect(&f->nc, no);
    natsOptions_Destroy(no);
    cr_assert_eq(st, NATS_OK, "connect to NATS: %s", natsStatus_GetText(st));
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = 10000;
    jo.PublishAsync.MaxPending = 4096;
    jo.PublishAsync.StallWait = 10000;
    jo.PublishAsync.ErrHandler = pub_error;
    cr_assert_eq(natsConnection_JetStream(&f->js, f->nc, &jo), NATS_OK);
    /* as the services provision them */
    natsfx_stream_ensure(f->js, "CMS_EVENTS", "cms.events.>", 30 * DAY_MS, 2 * 60 * 1000);
    natsfx_stream_ensure(f->js, "CMS_DLQ", "cms.dlq.>", 90 * DAY_MS, 0);
    atomic_store(&g_pub_errors, 0);
}

void audfx_teardown(audfx *f)
{
    for (int i = 0; i < AUDFX_MAX_PROCS; i++)
        if (f->pids[i] > 0)
            audfx_kill9(f, f->pids[i]);
    if (f->js) {
        for (int i = 0; i < f->ndurables; i++)
            (void)js_DeleteConsumer(f->js, "CMS_EVENTS", f->durables[i], NULL, NULL);
        jsOptions jo;
        jsOptions_Init(&jo);
        jo.Stream.Purge.Subject = f->subject;
        (void)js_PurgeStream(f->js, "CMS_EVENTS", &jo, NULL);
        jsCtx_Destroy(f->js);
        f->js = NULL;
    }
    natsConnection_Destroy(f->nc);
    f->nc = NULL;
    PQfinish(g_count_conn);
    g_count_conn = NULL;
    if (f->db[0])
        cms_test_db_drop(f->db);
    f->db[0] = '\0';
}

/* ---- events ---- */

static const char *const VERBS[] = {"created", "updated", "signed", "archived", "deleted"};

/* A JSON object of 100-300 bytes with a random note of note_len characters. */
static char *make_details(size_t seq, size_t note_len)
{
    static const char alpha[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ";
    char note[256];
    for (size_t i = 0; i < note_len; i++)
        note[i] = alpha[rand32() % (sizeof alpha - 1)];
    note[note_len] = '\0';
    size_t cap = 512;
    char *d = malloc(cap);
    cr_assert_not_null(d);
    /* escapes, non-ASCII (raw and \u-escaped), nesting, numbers, null */
    int n = snprintf(d, cap,
                     "{\"seq\": %zu, \"note\": \"%s\", \"nested\": {\"ok\": true, \"list\": "
                     "[1, 2.5, -300], \"esc\": \"q\\\"b\\\\s \\u00e9 \xc3\xa9 \xe2\x9c\x93\"}, "
                     "\"none\": null}",
                     seq, note);
    cr_assert(n > 0 && (size_t)n < cap);
    return d;
}

audfx_event *audfx_events(const audfx *f, size_t n)
{
    audfx_event *evs = calloc(n ? n : 1, sizeof *evs);
    cr_assert_not_null(evs);
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    int64_t base = (int64_t)now.tv_sec * 1000000 - INT64_C(3600) * 1000000;
    for (size_t i = 0; i < n; i++) {
        audfx_event *e = &evs[i];
        new_id(e->id);
        new_id(e->resource_id);
        snprintf(e->actor_id, sizeof e->actor_id, "%s", f->actors[i % (size_t)f->nactors]);
        snprintf(e->resource_type, sizeof e->resource_type, "%s", f->prefix);
        snprintf(e->event_type, sizeof e->event_type, "%s.%s", f->prefix,
                 VERBS[i % (sizeof VERBS / sizeof VERBS[0])]);
        /* distinct, with microsecond digits that a millisecond clock would lose */
        e->occurred_us = base + (int64_t)i * 1000 + (int64_t)(rand32() % 1000);
        /* fixed parts are 128 bytes: notes of 0..170 make 128..298 bytes */
        e->details = make_details(i, rand32() % 171);
    }
    return evs;
}

void audfx_events_free(audfx_event *evs, size_t n)
{
    if (evs == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        free(evs[i].details);
    free(evs);
}

uint8_t *audfx_pack(const audfx_event *ev, size_t *len)
{
    Cms__V1__Envelope e = CMS__V1__ENVELOPE__INIT;
    e.event_id = (char *)ev->id;
    e.event_type = (char *)ev->event_type;
    e.resource_type = (char *)ev->resource_type;
    e.resource_id = (char *)ev->resource_id;
    e.actor_id = (char *)ev->actor_id;
    e.occurred_at_us = ev->occurred_us;
    e.correlation_id = (char *)ev->id;
    e.source = (char *)"audtest";
    e.details_json = ev->details ? ev->details : (char *)"";
    size_t n = cms__v1__envelope__get_packed_size(&e);
    uint8_t *buf = malloc(n ? n : 1);
    cr_assert_not_null(buf);
    *len = cms__v1__envelope__pack(&e, buf);
    return buf;
}

/* ---- publishing ---- */

void audfx_publish(audfx *f, const char *subject, const char *msg_id, const char *const *headers,
                   const void *data, size_t len)
{
    natsMsg *m = NULL;
    natsStatus st = natsMsg_Create(&m, subject, NULL, data, (int)len);
    if (st == NATS_OK && msg_id)
        st = natsMsgHeader_Set(m, "Nats-Msg-Id", msg_id);
    for (size_t i = 0; st == NATS_OK && headers && headers[i]; i += 2)
        st = natsMsgHeader_Add(m, headers[i], headers[i + 1]);
    if (st == NATS_OK)
        st = js_PublishMsgAsync(f->js, &m, NULL);
    natsMsg_Destroy(m);
    cr_assert_eq(st, NATS_OK, "publish on %s: %s", subject, natsStatus_GetText(st));
}

void audfx_publish_event(audfx *f, const audfx_event *ev, const char *msg_id)
{
    size_t len;
    uint8_t *buf = audfx_pack(ev, &len);
    char subject[128];
    snprintf(subject, sizeof subject, "cms.events.%s", ev->event_type);
    audfx_publish(f, subject, msg_id ? msg_id : ev->id, NULL, buf, len);
    free(buf);
}

void audfx_publish_wait(audfx *f)
{
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = 60000;
    natsStatus st = js_PublishAsyncComplete(f->js, &po);
    cr_assert_eq(st, NATS_OK, "publishes acknowledged: %s", natsStatus_GetText(st));
    cr_assert_eq(atomic_load(&g_pub_errors), 0, "no publish failed");
}

/* ---- consumers ---- */

void audfx_own_durable(audfx *f, const char *durable)
{
    for (int i = 0; i < f->ndurables; i++)
        if (strcmp(f->durables[i], durable) == 0)
            return;
    cr_assert_lt(f->ndurables, AUDFX_MAX_DURABLES);
    snprintf(f->durables[f->ndurables++], sizeof f->durables[0], "%s", durable);
}

bool audfx_durable_ack_wait(audfx *f, const char *durable, int64_t ack_wait_ms)
{
    jsConsumerInfo *ci = NULL, *up = NULL;
    jsErrCode jerr = 0;
    if (js_GetConsumerInfo(&ci, f->js, "CMS_EVENTS", durable, NULL, &jerr) != NATS_OK)
        return false;
    if (ci->Config->AckWait != ack_wait_ms * NS_PER_MS) {
        ci->Config->AckWait = ack_wait_ms * NS_PER_MS;
        natsStatus st = js_UpdateConsumer(&up, f->js, "CMS_EVENTS", ci->Config, NULL, &jerr);
        cr_assert_eq(st, NATS_OK, "ack wait of %s: %s (%d)", durable, natsStatus_GetText(st),
                     (int)jerr);
        jsConsumerInfo_Destroy(up);
    }
    jsConsumerInfo_Destroy(ci);
    return true;
}

bool audfx_durable_idle(audfx *f, const char *durable)
{
    jsConsumerInfo *ci = NULL;
    jsErrCode jerr = 0;
    if (js_GetConsumerInfo(&ci, f->js, "CMS_EVENTS", durable, NULL, &jerr) != NATS_OK)
        return false;
    bool idle = ci->NumPending == 0 && ci->NumAckPending == 0;
    jsConsumerInfo_Destroy(ci);
    return idle;
}

int audfx_durable_pending(audfx *f, const char *durable)
{
    jsConsumerInfo *ci = NULL;
    jsErrCode jerr = 0;
    if (js_GetConsumerInfo(&ci, f->js, "CMS_EVENTS", durable, NULL, &jerr) != NATS_OK)
        return -1;
    int n = ci->NumPending == 0 ? (int)ci->NumAckPending : -1;
    jsConsumerInfo_Destroy(ci);
    return n;
}

void audfx_wait_stored(audfx *f, const char *durable, long n, pid_t pid, double timeout_ms,
                       int64_t keep_ack_wait_ms)
{
    double deadline = audfx_now_ms() + timeout_ms;
    for (;;) {
        cr_assert(pid <= 0 || audfx_alive(pid), "cms-audit %d exited", (int)pid);
        if (keep_ack_wait_ms > 0)
            (void)audfx_durable_ack_wait(f, durable, keep_ack_wait_ms);
        /* idle first: every row acknowledged by then is committed by then */
        bool idle = audfx_durable_idle(f, durable);
        long rows = audfx_rows(f);
        cr_assert_leq(rows, n, "%ld rows stored from %ld events", rows, n);
        if (idle) {
            cr_assert_eq(rows, n, "all acknowledged, and %ld of %ld rows stored", rows, n);
            return;
        }
        cr_assert_lt(audfx_now_ms(), deadline, "timed out: %ld of %ld rows stored", rows, n);
        audfx_pause_ms(25);
    }
}

/* ---- processes ---- */

pid_t audfx_start(audfx *f, const char *durable, int *port, const char *const *extra)
{
    int slot = -1;
    for (int i = 0; i < AUDFX_MAX_PROCS && slot < 0; i++)
        if (f->pids[i] == 0)
            slot = i;
    cr_assert_geq(slot, 0, "too many cms-audit processes");
    audfx_own_durable(f, durable);
    char as_audit[600], db[640], subject[96], dur[96];
    cms_test_db_as(f->db, "audit", as_audit, sizeof as_audit);
    snprintf(db, sizeof db, "CMS_DATABASE_URL=%s", as_audit);
    snprintf(subject, sizeof subject, "--audit-subject=%s", f->subject);
    snprintf(dur, sizeof dur, "--audit-durable=%s", durable);
    const char *args[32] = {subject, dur};
    int argc = 2;
    for (size_t i = 0; extra && extra[i]; i++) {
        cr_assert_lt(argc, 31);
        args[argc++] = extra[i];
    }
    const char *set[] = {db, "CMS_DRAIN_TIMEOUT=10s", NULL};
    pid_t pid = cms_test_spawn_http_service("cms-audit", args, set, NULL, port);
    cr_assert_gt(pid, 0, "cms-audit started");
    f->pids[slot] = pid;
    return pid;
}

static void forget(audfx *f, pid_t pid)
{
    for (int i = 0; i < AUDFX_MAX_PROCS; i++)
        if (f->pids[i] == pid)
            f->pids[i] = 0;
}

int audfx_stop(audfx *f, pid_t pid, double *took_ms)
{
    double t0 = audfx_now_ms();
    kill(pid, SIGTERM);
    int st = 0;
    /* the drain is bounded (CMS_DRAIN_TIMEOUT): give it that and more */
    pid_t r = cms_test_wait_exit(pid, 30000, &st);
    if (took_ms)
        *took_ms = audfx_now_ms() - t0;
    if (r == 0) {
        audfx_kill9(f, pid);
        return -1;
    }
    forget(f, pid);
    if (r != pid || !WIFEXITED(st))
        return -1;
    return WEXITSTATUS(st);
}

void audfx_kill9(audfx *f, pid_t pid)
{
    cms_test_kill9(pid);
    forget(f, pid);
}

bool audfx_alive(pid_t pid)
{
    int st;
    return waitpid(pid, &st, WNOHANG) == 0;
}

/* ---- HTTP ---- */

bool audfx_wait_readyz(int port, int want, double timeout_ms)
{
    return cms_test_wait_http(port, "/readyz", want, NULL, 0, timeout_ms, NULL, 0);
}

double audfx_metric(int port, const char *series)
{
    double v;
    return cms_test_metric(port, series, &v) == 200 ? v : -1;
}

/* ---- the database ---- */

static void quiet(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

long audfx_rows(const audfx *f)
{
    if (g_count_conn == NULL || PQstatus(g_count_conn) != CONNECTION_OK) {
        PQfinish(g_count_conn);
        g_count_conn = PQconnectdb(f->db);
        if (PQstatus(g_count_conn) != CONNECTION_OK) {
            PQfinish(g_count_conn);
            g_count_conn = NULL;
            return -1;
        }
        /* the server going away under it is expected here, not news */
        PQsetNoticeProcessor(g_count_conn, quiet, NULL);
    }
    long n = -1;
    PGresult *r = PQexec(g_count_conn, "SELECT count(*) FROM audit_logs");
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) {
        char *end = NULL;
        n = strtol(PQgetvalue(r, 0, 0), &end, 10);
    } else {
        PQfinish(g_count_conn);
        g_count_conn = NULL;
    }
    PQclear(r);
    return n;
}

/* Every expected column travels as one text[] parameter, and the database
 * does the comparing: jsonb equality ignores key order and spacing, as the
 * stored details do. */
static const char SQL_CHECK[] =
    "WITH e AS ("
    "  SELECT u.id::uuid AS id, u.et AS event_type, u.rt AS resource_type,"
    "         u.rid::uuid AS resource_id, u.aid::uuid AS actor_id, u.det::jsonb AS details,"
    "         u.us::int8 AS us"
    "  FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],"
    "              $7::text[]) AS u(id, et, rt, rid, aid, det, us)),"
    " d AS ("
    "  SELECT coalesce(e.id, a.id) AS id, CASE"
    "    WHEN a.id IS NULL THEN 'missing'"
    "    WHEN e.id IS NULL THEN 'not expected'"
    "    WHEN a.event_type IS DISTINCT FROM e.event_type THEN 'event_type: ' || a.event_type"
    "    WHEN a.resource_type IS DISTINCT FROM e.resource_type"
    "      THEN 'resource_type: ' || a.resource_type"
    "    WHEN a.resource_id IS DISTINCT FROM e.resource_id"
    "      THEN 'resource_id: ' || a.resource_id"
    "    WHEN a.actor_id IS DISTINCT FROM e.actor_id THEN 'actor_id: ' || a.actor_id"
    "    WHEN a.details IS DISTINCT FROM e.details"
    "      THEN 'details: ' || a.details::text || ' want ' || e.details::text"
    "    WHEN extract(epoch FROM a.created_at) * 1000000 IS DISTINCT FROM e.us"
    "      THEN 'created_at: ' || (extract(epoch FROM a.created_at) * 1000000)::text"
    "           || ' want ' || e.us"
    "  END AS why"
    "  FROM e FULL JOIN audit_logs a ON a.id = e.id)"
    " SELECT id::text, why, count(*) OVER () FROM d WHERE why IS NOT NULL ORDER BY id LIMIT 5";

long audfx_check_rows(const audfx *f, const audfx_event *evs, size_t n, char *report,
                      size_t report_len)
{
    cms_pgarr cols[7];
    for (int c = 0; c < 7; c++)
        cms_pgarr_init(&cols[c], CMS_PG_OID_TEXT);
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        const audfx_event *e = &evs[i];
        const char *det = (e->details && *e->details) ? e->details : "{}";
        char us[32];
        snprintf(us, sizeof us, "%" PRId64, e->occurred_us);
        bad |= cms_pgarr_add(&cols[0], e->id, strlen(e->id));
        bad |= cms_pgarr_add(&cols[1], e->event_type, strlen(e->event_type));
        bad |= cms_pgarr_add(&cols[2], e->resource_type, strlen(e->resource_type));
        bad |= cms_pgarr_add(&cols[3], e->resource_id, strlen(e->resource_id));
        bad |= cms_pgarr_add(&cols[4], e->actor_id, strlen(e->actor_id));
        bad |= cms_pgarr_add(&cols[5], det, strlen(det));
        bad |= cms_pgarr_add(&cols[6], us, strlen(us));
    }
    cr_assert_eq(bad, 0);
    const char *values[7];
    int lengths[7], formats[7];
    Oid types[7];
    for (int c = 0; c < 7; c++) {
        size_t len;
        values[c] = (const char *)cms_pgarr_bytes(&cols[c], &len);
        lengths[c] = (int)len;
        formats[c] = 1;
        types[c] = CMS_PG_OID_TEXT_ARRAY;
    }
    PGconn *c = PQconnectdb(f->db);
    cr_assert_eq(PQstatus(c), CONNECTION_OK, "connect: %s", PQerrorMessage(c));
    PGresult *r = PQexecParams(c, SQL_CHECK, 7, types, values, lengths, formats, 0);
    cr_assert_eq(PQresultStatus(r), PGRES_TUPLES_OK, "check query: %s", PQresultErrorMessage(r));
    long diffs = PQntuples(r) ? strtol(PQgetvalue(r, 0, 2), NULL, 10) : 0;
    size_t used = 0;
    if (report_len)
        report[0] = '\0';
    for (int i = 0; i < PQntuples(r) && used < report_len; i++) {
        int w = snprintf(report + used, report_len - used, "%s%s %s", i ? "; " : "",
                         PQgetvalue(r, i, 0), PQgetvalue(r, i, 1));
        if (w < 0)
            break;
        used += (size_t)w;
    }
    PQclear(r);
    PQfinish(c);
    for (int k = 0; k < 7; k++)
        cms_pgarr_free(&cols[k]);
    return diffs;
}

/* ---- dead letters ---- */

static void header(natsMsg *m, const char *key, char *out, size_t len)
{
    const char *v = NULL;
    out[0] = '\0';
    if (natsMsgHeader_Get(m, key, &v) == NATS_OK && v)
        snprintf(out, len, "%s", v);
}

size_t audfx_read_dlq(audfx *f, audfx_dead **out)
{
    /* how many are there now: read exactly those, in stream order */
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Stream.Info.SubjectsFilter = "cms.dlq.audit";
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus st = js_GetStreamInfo(&si, f->js, "CMS_DLQ", &jo, &jerr);
    cr_assert_eq(st, NATS_OK, "CMS_DLQ info: %s", natsStatus_GetText(st));
    uint64_t total = 0;
    for (int i = 0; si->State.Subjects && i < si->State.Subjects->Count; i++)
        if (strcmp(si->State.Subjects->List[i].Subject, "cms.dlq.audit") == 0)
            total = si->State.Subjects->List[i].Msgs;
    jsStreamInfo_Destroy(si);

    char want[96];
    snprintf(want, sizeof want, "cms.events.%s.", f->prefix);
    size_t n = 0, cap = 64;
    audfx_dead *d = calloc(cap, sizeof *d);
    cr_assert_not_null(d);
    if (total > 0) {
        jsSubOptions so;
        jsSubOptions_Init(&so);
        so.Stream = "CMS_DLQ";
        so.Ordered = true;
        so.Config.DeliverPolicy = js_DeliverAll;
        natsSubscription *sub = NULL;
        st = js_SubscribeSync(&sub, f->js, "cms.dlq.audit", NULL, &so, &jerr);
        cr_assert_eq(st, NATS_OK, "read CMS_DLQ: %s (%d)", natsStatus_GetText(st), (int)jerr);
        for (uint64_t i = 0; i < total; i++) {
            natsMsg *m = NULL;
            st = natsSubscription_NextMsg(&m, sub, 10000);
            cr_assert_eq(st, NATS_OK, "dead letter %" PRIu64 " of %" PRIu64 ": %s", i, total,
                         natsStatus_GetText(st));
            char subject[128];
            header(m, "Cms-Dlq-Subject", subject, sizeof subject);
            if (strncmp(subject, want, strlen(want)) == 0) {
                if (n == cap) {
                    cap *= 2;
                    d = realloc(d, cap * sizeof *d);
                    cr_assert_not_null(d);
                }
                audfx_dead *x = &d[n++];
                memset(x, 0, sizeof *x);
                x->len = (size_t)natsMsg_GetDataLength(m);
                x->data = malloc(x->len ? x->len : 1);
                cr_assert_not_null(x->data);
                if (x->len)
                    memcpy(x->data, natsMsg_GetData(m), x->len);
                snprintf(x->subject, sizeof x->subject, "%s", subject);
                header(m, "Cms-Dlq-Reason", x->reason, sizeof x->reason);
                header(m, "Cms-Dlq-Msg-Id", x->msg_id, sizeof x->msg_id);
                header(m, "X-Audfx-Tag", x->custom, sizeof x->custom);
                header(m, "Cms-Dlq-Stream-Seq", x->stream_seq, sizeof x->stream_seq);
                header(m, "Cms-Dlq-Size", x->size, sizeof x->size);
                header(m, "Cms-Dlq-Sha256", x->sha256, sizeof x->sha256);
                header(m, "Cms-Dlq-Truncated", x->truncated, sizeof x->truncated);
            }
            natsMsg_Destroy(m);
        }
        natsSubscription_Unsubscribe(sub);
        natsSubscription_Destroy(sub);
    }
    *out = d;
    return n;
}

void audfx_dead_free(audfx_dead *d, size_t n)
{
    if (d == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        free(d[i].data);
    free(d);
}

double audfx_dead_total(int port)
{
    static const char *const reasons[] = {
        "undecodable",        "invalid_event_id",      "invalid_resource_id", "invalid_actor_id",
        "invalid_event_type", "invalid_resource_type", "invalid_details",     "invalid_occurred_at",
        "unknown_actor",      "insert_failed"};
    double sum = 0;
    for (size_t i = 0; i < sizeof reasons / sizeof reasons[0]; i++) {
        char series[96];
        snprintf(series, sizeof series, "cms_audit_dead_letters_total{reason=\"%s\"}", reasons[i]);
        double v = audfx_metric(port, series);
        cr_assert_geq(v, 0, "%s exported", series);
        sum += v;
    }
    return sum;
}
