/* The audit log's chain of trust end to end: real cms-audit replicas
 * (tests/lib/svcfx) write 100,000 events with poison among them while one
 * of them is killed with kill -9 and the signing key is rotated, and
 * `cmsctl audit verify` finds that log clean; then, on copies of that
 * database, it finds each kind of tampering at the writer, batch and row
 * where it was done (a row changed, removed or forged, a batch record
 * removed, two batches reordered, the tail cut off with the head set back
 * to match); and it refuses a checkpoint with a damaged signature and the
 * checkpoints signed with a key after its revocation.
 *
 * Every name this test touches on the shared servers is its own: the
 * scratch database, the command prefix, the subject space and durable of
 * its cms-audit processes (cms.events.<durable>.>), and the log id
 * (audit_chain_start.log_id, made anew, so that the checkpoints other tests
 * leave in CMS_AUDIT_CHECKPOINTS are not this log's). */
#include "audit_fixture.h"
#include "cms/v1/audit.pb-c.h"
#include "edkey.h"
#include "natsfx.h"
#include "svcfx.h"
#include "testenv.h"
#include "testproc.h"
#include "uuid.h"

#include <criterion/criterion.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define N_EVENTS 100000
#define N_POISON 350
#define N_ACTORS 16
#define N_COPIES 6
#define N_MORE 200 /* written under the revoked key */
#define VERIFY_MS 240000
#define INGEST_MS 240000
#define DAY_MS (INT64_C(24) * 3600 * 1000)

/* the processes' slots in the fixture */
enum { REPLICA_A = 0, REPLICA_B = 1, IDENTITY = 2 };

static svcfx g_f;
static audfx g_a; /* filled by hand: events, publishing, the durable, rows */
static audfx_event *g_evs, *g_more;
static char g_bin[1024];
static char g_key1[128], g_key2[128]; /* key files */
static char g_pub1[64], g_pub2[64];   /* their public halves: the key ids */
static char g_copies[N_COPIES][96];   /* copies made, by name ("" none) */
static atomic_int g_pub_errors;

/* ---- SQL ---- */

/* Runs q as the superuser on conninfo db; asserts it succeeded. The first
 * column of the first row, malloc'd ("" for none). */
static char *sql_on(const char *db, const char *q)
{
    char *v = cms_test_sql(db, q);
    cr_assert_not_null(v, "%s", q);
    return v;
}

static long sql_long(const char *db, const char *q)
{
    char *v = sql_on(db, q);
    char *end = NULL;
    long n = strtol(v, &end, 10);
    cr_assert(*v != '\0' && *end == '\0', "%s: \"%s\" is no number", q, v);
    free(v);
    return n;
}

static void sql_do(const char *db, const char *q)
{
    free(sql_on(db, q));
}

/* The first (and only) row of q's result: its ncols columns into cols. */
static void sql_row(const char *db, const char *q, int ncols, char cols[][64])
{
    PGconn *c = PQconnectdb(db);
    cr_assert_eq(PQstatus(c), CONNECTION_OK, "%s", PQerrorMessage(c));
    PGresult *r = PQexec(c, q);
    cr_assert_eq(PQresultStatus(r), PGRES_TUPLES_OK, "%s: %s", q, PQerrorMessage(c));
    cr_assert_eq(PQntuples(r), 1, "%s: %d rows", q, PQntuples(r));
    cr_assert_eq(PQnfields(r), ncols);
    for (int i = 0; i < ncols; i++)
        snprintf(cols[i], 64, "%s", PQgetvalue(r, 0, i));
    PQclear(r);
    PQfinish(c);
}

/* ---- keys ---- */

/* A new Ed25519 key in a file of its own (as cmsctl audit keygen writes
 * it), its public half into pub. */
static void make_key(char path[128], int n, char pub[64])
{
    snprintf(path, 128, "/tmp/cms-trust-%d-%d.key", (int)getpid(), n);
    unlink(path);
    uint8_t pk[crypto_sign_PUBLICKEYBYTES], sk[crypto_sign_SECRETKEYBYTES];
    cr_assert_eq(crypto_sign_keypair(pk, sk), 0);
    char why[256];
    cr_assert(cms_edkey_save(path, sk, why, sizeof why), "%s", why);
    char b64[CMS_EDKEY_PUBLIC_B64 + 1];
    cms_edkey_public_b64(sk, b64);
    sodium_memzero(sk, sizeof sk);
    snprintf(pub, 64, "%s", b64);
}

/* The key as a public_key credential of the identity cms-audit: its id. */
static char *issue_key(const char *pub)
{
    char q[512];
    snprintf(q, sizeof q,
             "INSERT INTO credentials (identity_id, type, value, expires_at) "
             "SELECT id, 'public_key', '%s', now() + interval '1 day' FROM identities "
             "WHERE name = 'cms-audit' RETURNING id::text",
             pub);
    char *id = sql_on(g_f.db, q);
    cr_assert_neq(id[0], '\0', "credential issued");
    return id;
}

/* ---- processes ---- */

/* A cms-audit replica on the test's durable signing with key_file: its
 * writer id (each start is a writer of its own). */
static long start_replica(int slot, const char *key_file)
{
    char key[192];
    snprintf(key, sizeof key, "CMS_AUDIT_SIGNING_KEY=%s", key_file);
    /* a short ack wait: what a killed replica held comes back soon */
    const char *const set[] = {key, "CMS_AUDIT_CHECKPOINT_EVERY=200ms", "CMS_AUDIT_ACK_WAIT=2s",
                               "CMS_DRAIN_TIMEOUT=30s", NULL};
    pid_t pid = svcfx_start_audit_with(&g_f, slot, set);
    char q[128];
    /* registered before it is ready */
    snprintf(q, sizeof q, "SELECT id FROM audit_writers WHERE pid = %d", (int)pid);
    return sql_long(g_f.db, q);
}

static void stop(int slot)
{
    cr_assert_eq(svcfx_stop_at(&g_f, slot), 0, "process %d drained and exited 0", slot);
}

static long writer_rows(long writer)
{
    char q[128];
    snprintf(q, sizeof q, "SELECT rows FROM audit_writers WHERE id = %ld", writer);
    return sql_long(g_f.db, q);
}

/* ---- publishing ---- */

static void pub_error(jsCtx *js, jsPubAckErr *pae, void *closure)
{
    (void)js;
    (void)closure;
    fprintf(stderr, "trust: async publish failed: %s (%d)\n",
            pae->ErrText ? pae->ErrText : natsStatus_GetText(pae->Err), (int)pae->ErrCode);
    atomic_fetch_add(&g_pub_errors, 1);
}

/* The audfx the event helpers read: prefix (the subject token and
 * resource type of the events, the replicas' durable), actors, and a
 * connection of its own for asynchronous publishing. */
static void audfx_fill(void)
{
    memset(&g_a, 0, sizeof g_a);
    snprintf(g_a.prefix, sizeof g_a.prefix, "%.*s", (int)strcspn(g_f.prefix, "."), g_f.prefix);
    snprintf(g_a.subject, sizeof g_a.subject, "cms.events.%s.>", g_a.prefix);
    snprintf(g_a.db, sizeof g_a.db, "%s", g_f.db); /* for audfx_check_rows */
    g_a.nactors = N_ACTORS;
    char q[4096];
    size_t len = (size_t)snprintf(q, sizeof q, "INSERT INTO identities (id, name, type) VALUES ");
    for (int i = 0; i < N_ACTORS; i++) {
        cms_uuid u;
        cms_uuid_v7(&u);
        cms_uuid_format(&u, g_a.actors[i]);
        len += (size_t)snprintf(q + len, sizeof q - len, "%s('%s', 'trust-%s-%d', 'machine')",
                                i ? ", " : "", g_a.actors[i], g_a.prefix, i);
    }
    cr_assert_lt(len, sizeof q);
    sql_do(g_f.db, q);
    natsOptions *no = NULL;
    cr_assert_eq(natsOptions_Create(&no), NATS_OK);
    cr_assert_eq(natsOptions_SetURL(no, cms_test_env("CMS_TEST_NATS_URL")), NATS_OK);
    natsStatus st = natsConnection_Connect(&g_a.nc, no);
    natsOptions_Destroy(no);
    cr_assert_eq(st, NATS_OK, "connect to NATS: %s", natsStatus_GetText(st));
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = 10000;
    jo.PublishAsync.MaxPending = 4096;
    jo.PublishAsync.StallWait = 10000;
    jo.PublishAsync.ErrHandler = pub_error;
    cr_assert_eq(natsConnection_JetStream(&g_a.js, g_a.nc, &jo), NATS_OK);
    natsfx_stream_ensure(g_a.js, "CMS_EVENTS", "cms.events.>", 30 * DAY_MS, 2 * 60 * 1000);
    natsfx_stream_ensure(g_a.js, "CMS_DLQ", "cms.dlq.>", 90 * DAY_MS, 0);
}

/* Poison number k, made from the valid event base under a new id: bytes
 * that are no envelope, or an envelope that fails validation. */
static void publish_poison(size_t k, const audfx_event *base)
{
    audfx_event e = *base;
    cms_uuid u;
    cms_uuid_v7(&u);
    cms_uuid_format(&u, e.id);
    char subject[96], msg_id[64];
    snprintf(subject, sizeof subject, "cms.events.%s.poison", g_a.prefix);
    snprintf(msg_id, sizeof msg_id, "poison-%s", e.id);
    uint8_t *data;
    size_t len;
    switch (k % 7) {
    case 0: /* an unfinished varint */
        len = 1 + k % 23;
        data = malloc(len);
        cr_assert_not_null(data);
        memset(data, 0xff, len);
        break;
    case 1: /* cut inside its last field */
        data = audfx_pack(&e, &len);
        len -= 3;
        break;
    case 2:
        snprintf(e.id, sizeof e.id, "not-a-uuid-%zu", k);
        data = audfx_pack(&e, &len);
        break;
    case 3:
        e.details = (char *)"[1, 2]";
        data = audfx_pack(&e, &len);
        break;
    case 4:
        snprintf(e.event_type, sizeof e.event_type, "contract.signed");
        data = audfx_pack(&e, &len);
        break;
    case 5:
        e.occurred_us = 0;
        data = audfx_pack(&e, &len);
        break;
    default: /* valid in every field, but no such identity */
        cms_uuid_v7(&u);
        cms_uuid_format(&u, e.actor_id);
        data = audfx_pack(&e, &len);
        break;
    }
    audfx_publish(&g_a, subject, msg_id, NULL, data, len);
    free(data);
}

/* Until every publish so far is acknowledged by the stream. */
static void publish_wait(void)
{
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = 60000;
    natsStatus st = js_PublishAsyncComplete(g_a.js, &po);
    cr_assert_eq(st, NATS_OK, "publishes acknowledged: %s", natsStatus_GetText(st));
    cr_assert_eq(atomic_load(&g_pub_errors), 0, "no publish failed");
}

/* Events [lo, hi), with the poison of their share of the N_POISON spread
 * evenly among them; waits for the stream's acks. */
static void publish_range(size_t lo, size_t hi)
{
    for (size_t i = lo; i < hi; i++) {
        audfx_publish_event(&g_a, &g_evs[i], NULL);
        size_t k = i * N_POISON / N_EVENTS;
        if ((i + 1) * N_POISON / N_EVENTS != k)
            publish_poison(k, &g_evs[i]);
    }
    publish_wait();
}

static long stored_rows(void)
{
    return sql_long(g_f.db, "SELECT count(*) FROM audit_logs");
}

/* Until the durable has had everything acknowledged and exactly n rows are
 * stored (an ack comes only after its commit). */
static void wait_stored(long n)
{
    double deadline = cms_test_now_ms() + INGEST_MS;
    for (;;) {
        bool idle = audfx_durable_idle(&g_a, g_a.prefix);
        long rows = stored_rows();
        cr_assert_leq(rows, n, "%ld rows stored from %ld valid events", rows, n);
        if (idle) {
            cr_assert_eq(rows, n, "all acknowledged, and %ld of %ld rows stored", rows, n);
            return;
        }
        cr_assert_lt(cms_test_now_ms(), deadline, "timed out: %ld of %ld rows stored", rows, n);
        cms_test_pause_ms(50);
    }
}

/* ---- verify ---- */

/* `cmsctl audit verify -o json` on database dbname (the scratch one when
 * NULL) as the auditor role: its report, and its exit status in *status. */
static json_t *verify_range(const char *dbname, const char *flag, const char *at, int *status)
{
    char url[700];
    cms_test_db_as(g_f.db, "auditor", url, sizeof url);
    if (dbname != NULL) {
        size_t n = strlen(url);
        snprintf(url + n, sizeof url - n, " dbname=%s", dbname);
    }
    const char *const args[] = {"audit", "verify", "-o", "json", "--database-url",
                                url,     flag,     at,   NULL};
    cms_test_proc *p = cms_test_run_bin(g_bin, args, VERIFY_MS);
    cr_assert(p->term_signal == 0 && (p->status == 0 || p->status == 1),
              "verify exit %lld (signal %d)\n--- stdout:\n%s--- stderr:\n%s", (long long)p->status,
              p->term_signal, p->out, p->err);
    json_error_t jerr;
    json_t *o = json_loads(p->out, 0, &jerr);
    cr_assert_not_null(o, "verify printed no JSON (%s):\n%s\n--- stderr:\n%s", jerr.text, p->out,
                       p->err);
    *status = (int)p->status;
    cms_test_proc_free(p);
    return o;
}

static json_t *verify(const char *dbname, int *status)
{
    return verify_range(dbname, NULL, NULL, status);
}

static long jint(const json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    cr_assert(json_is_integer(v), "\"%s\" is an integer", key);
    return (long)json_integer_value(v);
}

/* Findings of kind (NULL: any) at writer and seq (-1: any) naming row
 * (NULL: any, "": none). */
static long count_findings(const json_t *o, const char *kind, long writer, long seq,
                           const char *row)
{
    const json_t *fs = json_object_get(o, "findings");
    cr_assert(json_is_array(fs));
    long n = 0;
    for (size_t i = 0; i < json_array_size(fs); i++) {
        const json_t *f = json_array_get(fs, i);
        const char *k = json_string_value(json_object_get(f, "kind"));
        const char *r = json_string_value(json_object_get(f, "row"));
        cr_assert_not_null(k);
        if ((kind == NULL || strcmp(k, kind) == 0) && (writer < 0 || jint(f, "writer") == writer) &&
            (seq < 0 || jint(f, "seq") == seq) &&
            (row == NULL || (row[0] == '\0' ? r == NULL : (r != NULL && strcmp(r, row) == 0))))
            n++;
    }
    return n;
}

/* The report in short, for messages: its counts, then each finding's kind,
 * writer/seq and row (a run of one kind at one batch as one, counted). */
static char *dump(const json_t *o)
{
    size_t cap = 8192, n = 0;
    char *s = malloc(cap);
    cr_assert_not_null(s);
    n +=
        (size_t)snprintf(s, cap, "ok %s, %ld rows, %ld batches, %ld checkpoints, %ld findings:",
                         json_is_true(json_object_get(o, "ok")) ? "true" : "false", jint(o, "rows"),
                         jint(o, "batches"), jint(o, "checkpoints"), jint(o, "total_findings"));
    const json_t *fs = json_object_get(o, "findings");
    size_t len = json_array_size(fs);
    for (size_t i = 0, run; i < len && n < cap - 200; i += run) {
        const json_t *f = json_array_get(fs, i);
        const char *kind = json_string_value(json_object_get(f, "kind"));
        const char *r = json_string_value(json_object_get(f, "row"));
        for (run = 1; i + run < len; run++) {
            const json_t *g = json_array_get(fs, i + run);
            if (strcmp(json_string_value(json_object_get(g, "kind")), kind) != 0 ||
                jint(g, "writer") != jint(f, "writer") || jint(g, "seq") != jint(f, "seq"))
                break;
        }
        if (run > 1)
            n += (size_t)snprintf(s + n, cap - n, " %zu x %s %ld/%ld;", run, kind,
                                  jint(f, "writer"), jint(f, "seq"));
        else
            n += (size_t)snprintf(s + n, cap - n, " %s %ld/%ld%s%s;", kind, jint(f, "writer"),
                                  jint(f, "seq"), r ? " " : "", r ? r : "");
    }
    return s;
}

/* exit 1, ok false, total_findings want (-1: any) */
static void assert_found(const json_t *o, int status, long want)
{
    char *s = dump(o);
    cr_assert_eq(status, 1, "verify exit 1: %s", s);
    cr_assert(json_is_false(json_object_get(o, "ok")), "ok false: %s", s);
    if (want >= 0)
        cr_assert_eq(jint(o, "total_findings"), want, "%ld finding(s): %s", want, s);
    else
        cr_assert_gt(jint(o, "total_findings"), 0, "%s", s);
    free(s);
}

/* ---- copies ---- */

static const char *scratch_name(void)
{
    const char *p = NULL;
    for (const char *q = g_f.db; (q = strstr(q, "dbname=")) != NULL; q++)
        p = q;
    cr_assert_not_null(p);
    return p + strlen("dbname=");
}

static void drop_copies(void)
{
    for (int i = 0; i < N_COPIES; i++)
        if (g_copies[i][0]) {
            char q[160];
            snprintf(q, sizeof q, "DROP DATABASE IF EXISTS %.95s WITH (FORCE)", g_copies[i]);
            free(cms_test_sql(cms_test_env("CMS_TEST_PG_URL"), q));
            g_copies[i][0] = '\0';
        }
}

/* The superuser's conninfo of copy i. */
static void copy_url(int i, char *out, size_t len)
{
    snprintf(out, len, "%s dbname=%s", cms_test_env("CMS_TEST_PG_URL"), g_copies[i]);
}

/* Runs sql on copy i as the superuser with the append-only trigger (and
 * every other) off for the session. */
static void tamper(int i, const char *sql)
{
    char db[400], *q;
    copy_url(i, db, sizeof db);
    cr_assert_gt(asprintf(&q, "SET session_replication_role = replica; %s", sql), 0);
    free(sql_on(db, q));
    free(q);
}

/* ---- the suite ---- */

static void setup(void)
{
    cr_assert_eq(sodium_init() < 0, 0);
    svcfx_setup(&g_f, "aud_trust");
    /* the template's log id is every scratch database's: this log's own */
    sql_do(g_f.db, "UPDATE audit_chain_start SET log_id = gen_random_uuid()");
    sql_do(g_f.db, "INSERT INTO identities (name, type, status) "
                   "VALUES ('cms-audit', 'machine', 'active')");
    snprintf(g_bin, sizeof g_bin, "%s/cmsctl", cms_test_env("CMS_TEST_BIN_DIR"));
    cr_assert_eq(access(g_bin, X_OK), 0, "%s is not there: build the cmsctl target", g_bin);
    cr_assert_eq(setenv("CMS_NATS_URL", cms_test_env("CMS_TEST_NATS_URL"), 1), 0);
    cr_assert_eq(setenv("CMS_COMMAND_PREFIX", g_f.prefix, 1), 0);
    cr_assert_eq(setenv("CMS_API_KEY", g_f.admin_key, 1), 0);
    unsetenv("CMS_NATS_CREDS");
    unsetenv("CMS_CREDENTIALS_FILE");
    unsetenv("CMS_DATABASE_URL");
    audfx_fill();
}

static void teardown(void)
{
    for (int i = 0; i < SVCFX_PROCS; i++)
        if (g_f.pids[i] > 0)
            svcfx_kill9_at(&g_f, i);
    drop_copies();
    /* purges this test's events from CMS_EVENTS and closes its connection */
    g_a.db[0] = '\0';
    audfx_teardown(&g_a);
    svcfx_teardown(&g_f);
    audfx_events_free(g_evs, N_EVENTS);
    g_evs = NULL;
    audfx_events_free(g_more, N_MORE);
    g_more = NULL;
    if (g_key1[0])
        unlink(g_key1);
    if (g_key2[0])
        unlink(g_key2);
}

TestSuite(audit_trust, .init = setup, .fini = teardown, .timeout = 600);

Test(audit_trust, replicas_restarts_and_a_key_rotation_verify_clean_and_tampering_is_located)
{
    g_evs = audfx_events(&g_a, N_EVENTS);
    make_key(g_key1, 1, g_pub1);
    char *cred1 = issue_key(g_pub1);
    svcfx_start_at(&g_f, IDENTITY, "cms-identity", NULL);

    /* two replicas write at once: both commit batches of their own */
    long a1 = start_replica(REPLICA_A, g_key1), b1 = start_replica(REPLICA_B, g_key1);
    const size_t c1 = N_EVENTS / 4, c2 = N_EVENTS / 2;
    publish_range(0, c1);
    AUDFX_WAIT(writer_rows(a1) > 0 && writer_rows(b1) > 0, INGEST_MS, 0,
               "both replicas commit batches");

    /* the key rotated on replica A: stopped (it signs its head on the way
     * out), a second key issued, started again with it as a new writer */
    stop(REPLICA_A);
    make_key(g_key2, 2, g_pub2);
    char *cred2 = issue_key(g_pub2);
    long a2 = start_replica(REPLICA_A, g_key2);
    cr_assert_neq(a2, a1);

    /* replica B killed in the middle of a backlog, started again with the
     * new key: another new writer; its predecessor's last batches are past
     * its last checkpoint, and what it held comes back to the others */
    long b1_rows = writer_rows(b1);
    publish_range(c1, c2);
    AUDFX_WAIT(writer_rows(b1) > b1_rows + 2000, INGEST_MS, g_f.pids[REPLICA_B],
               "replica B ingests the second backlog");
    long before_kill = stored_rows();
    svcfx_kill9_at(&g_f, REPLICA_B);
    cr_assert_lt(before_kill, (long)c2, "killed mid-ingest: %ld of %zu stored", before_kill, c2);
    long b2 = start_replica(REPLICA_B, g_key2);
    cr_assert(b2 != b1 && b2 != a2);

    /* nothing signs with the first key any more: revoked */
    char q[512];
    snprintf(q, sizeof q,
             "UPDATE credentials SET revoked_at = now(), revoke_reason = 'rotated' "
             "WHERE id = '%s' RETURNING id",
             cred1);
    sql_do(g_f.db, q);
    publish_range(c2, N_EVENTS);
    /* verified while the replicas write: its snapshot holds fewer batches
     * than the checkpoints signed since name, and that is no finding */
    int st;
    json_t *o = verify(NULL, &st);
    char *s = dump(o);
    cr_assert_eq(st, 0, "a log being written verifies: %s", s);
    cr_assert_eq(jint(o, "total_findings"), 0, "%s", s);
    free(s);
    json_decref(o);
    wait_stored(N_EVENTS);

    /* every valid event is one row equal to it; no poison is */
    char report[2048];
    long diffs = audfx_check_rows(&g_a, g_evs, N_EVENTS, report, sizeof report);
    cr_assert_eq(diffs, 0, "%ld rows differ from the events: %s", diffs, report);

    o = verify(NULL, &st);
    s = dump(o);
    cr_assert_eq(st, 0, "a clean log verifies: %s", s);
    cr_assert(json_is_true(json_object_get(o, "ok")), "%s", s);
    cr_assert_eq(jint(o, "rows"), N_EVENTS, "%s", s);
    cr_assert_eq(jint(o, "total_findings"), 0, "%s", s);
    cr_assert_eq(jint(o, "unchained"), 0, "%s", s);
    cr_assert_eq(jint(o, "writers"), 4, "%s", s);
    cr_assert_gt(jint(o, "checkpoints"), 0, "%s", s);
    free(s);
    json_decref(o);
    free(cred1);
    free(cred2);
    /* --from and --to: each half of the batches, by the time they were
     * written, and exactly their rows */
    char *half =
        sql_on(g_f.db, "SELECT to_char(written_at AT TIME ZONE 'UTC', "
                       "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') FROM audit_batches "
                       "ORDER BY written_at OFFSET (SELECT count(*) / 2 FROM audit_batches) "
                       "LIMIT 1");
    snprintf(q, sizeof q, "SELECT sum(rows) FROM audit_batches WHERE written_at >= '%s'", half);
    long later = sql_long(g_f.db, q);
    cr_assert(later > 0 && later < N_EVENTS, "%ld rows after %s", later, half);
    const char *flags[2] = {"--from", "--to"};
    const long want[2] = {later, N_EVENTS - later};
    for (int k = 0; k < 2; k++) {
        o = verify_range(NULL, flags[k], half, &st);
        s = dump(o);
        cr_assert_eq(st, 0, "%s %s: %s", flags[k], half, s);
        cr_assert_eq(jint(o, "rows"), want[k], "%s %s: %s", flags[k], half, s);
        cr_assert_eq(jint(o, "total_findings"), 0, "%s %s: %s", flags[k], half, s);
        free(s);
        json_decref(o);
    }
    free(half);
    /* from a time after everything (a date): nothing to check, nothing found,
     * and no checkpoint waited for */
    o = verify_range(NULL, "--from", "2100-01-01", &st);
    s = dump(o);
    cr_assert_eq(st, 0, "--from 2100-01-01: %s", s);
    cr_assert_eq(jint(o, "rows"), 0, "%s", s);
    cr_assert_eq(jint(o, "checkpoints"), 0, "%s", s);
    free(s);
    json_decref(o);
    /* checkpoints of both keys are among those verified */
    snprintf(q, sizeof q,
             "SELECT count(DISTINCT key_id) FROM audit_checkpoints WHERE key_id IN "
             "('%s', '%s')",
             g_pub1, g_pub2);
    cr_assert_eq(sql_long(g_f.db, q), 2, "checkpoints signed with each key");

    /* ---- tampering, each on a copy of this database ---- */

    /* nothing may be connected to a template: the replicas drain (and
     * sign their heads on the way out), cms-identity stops for a while */
    stop(REPLICA_A);
    stop(REPLICA_B);
    stop(IDENTITY);
    /* the drain signed each head */
    const long drained[] = {a2, b2};
    for (int k = 0; k < 2; k++) {
        snprintf(q, sizeof q,
                 "SELECT (SELECT max(seq) FROM audit_checkpoints WHERE writer = %ld) = head_seq "
                 "FROM audit_writers WHERE id = %ld",
                 drained[k], drained[k]);
        char *eq = sql_on(g_f.db, q);
        cr_assert_str_eq(eq, "t", "writer %ld's head is signed", drained[k]);
        free(eq);
    }
    for (int i = 0; i < N_COPIES; i++) {
        snprintf(g_copies[i], sizeof g_copies[i], "%.80s_c%d", scratch_name(), i);
        snprintf(q, sizeof q, "CREATE DATABASE %.95s TEMPLATE %.200s", g_copies[i], scratch_name());
        sql_do(cms_test_env("CMS_TEST_PG_URL"), q);
    }
    svcfx_start_at(&g_f, IDENTITY, "cms-identity", NULL);

    char c[4][64];
    /* (a) a column of one row changed: that row, in its batch */
    snprintf(q, sizeof q,
             "SELECT id::text, chain_writer, chain_seq FROM audit_logs WHERE chain_writer = %ld "
             "AND chain_seq = (SELECT (head_seq + 1) / 2 FROM audit_writers WHERE id = %ld) "
             "ORDER BY id LIMIT 1",
             a1, a1);
    sql_row(g_f.db, q, 3, c);
    snprintf(q, sizeof q,
             "UPDATE audit_logs SET details = details || '{\"tampered\": true}' WHERE id = '%s'",
             c[0]);
    tamper(0, q);
    o = verify(g_copies[0], &st);
    assert_found(o, st, 1);
    cr_assert_eq(count_findings(o, "row_changed", atol(c[1]), atol(c[2]), c[0]), 1,
                 "row_changed: row %s of writer %s, batch %s", c[0], c[1], c[2]);
    json_decref(o);

    /* (b) a row removed: named by its batch's digests */
    snprintf(q, sizeof q,
             "SELECT id::text, chain_writer, chain_seq FROM audit_logs WHERE chain_writer = %ld "
             "AND chain_seq = 1 ORDER BY id DESC LIMIT 1",
             b1);
    sql_row(g_f.db, q, 3, c);
    snprintf(q, sizeof q, "DELETE FROM audit_logs WHERE id = '%s'", c[0]);
    tamper(1, q);
    o = verify(g_copies[1], &st);
    assert_found(o, st, 1);
    cr_assert_eq(count_findings(o, "row_deleted", atol(c[1]), atol(c[2]), c[0]), 1,
                 "row_deleted: row %s of writer %s, batch %s", c[0], c[1], c[2]);
    json_decref(o);

    /* (c) a forged row in an existing batch: a copy of one of its rows
     * under a new id */
    snprintf(q, sizeof q,
             "SELECT id::text, chain_writer, chain_seq FROM audit_logs WHERE chain_writer = %ld "
             "AND chain_seq = 2 ORDER BY id LIMIT 1",
             b2);
    sql_row(g_f.db, q, 3, c);
    cms_uuid u;
    cms_uuid_v7(&u);
    char forged[37];
    cms_uuid_format(&u, forged);
    snprintf(q, sizeof q,
             "INSERT INTO audit_logs (id, event_type, resource_type, resource_id, actor_id, "
             "details, created_at, chain_writer, chain_seq) SELECT '%s', event_type, "
             "resource_type, resource_id, actor_id, details, created_at, chain_writer, chain_seq "
             "FROM audit_logs WHERE id = '%s'",
             forged, c[0]);
    tamper(2, q);
    o = verify(g_copies[2], &st);
    assert_found(o, st, 1);
    cr_assert_eq(count_findings(o, "row_inserted", atol(c[1]), atol(c[2]), forged), 1,
                 "row_inserted: row %s in writer %s, batch %s", forged, c[1], c[2]);
    json_decref(o);

    /* the writer cut short below: the longest chain of the last two */
    snprintf(q, sizeof q,
             "SELECT id, head_seq, (SELECT rows FROM audit_batches b WHERE b.writer = w.id AND "
             "b.seq = w.head_seq / 2) FROM audit_writers w WHERE id IN (%ld, %ld) "
             "ORDER BY head_seq DESC, id LIMIT 1",
             a2, b2);
    sql_row(g_f.db, q, 3, c);
    long w = atol(c[0]), head = atol(c[1]), mid = head / 2, mid_rows = atol(c[2]);
    cr_assert_geq(head, 12, "writer %ld committed %ld batches", w, head);
    snprintf(q, sizeof q,
             "SELECT count(*) FROM audit_logs WHERE chain_writer = %ld AND chain_seq = %ld", w,
             mid);
    cr_assert_eq(sql_long(g_f.db, q), mid_rows, "batch %ld/%ld's rows", w, mid);

    /* (d) one batch record removed, its rows left: a gap at its number,
     * and its rows name a batch that has no record */
    snprintf(q, sizeof q, "DELETE FROM audit_batches WHERE writer = %ld AND seq = %ld", w, mid);
    tamper(3, q);
    o = verify(g_copies[3], &st);
    assert_found(o, st, 1 + mid_rows);
    cr_assert_eq(count_findings(o, "batch_missing", w, mid, ""), 1, "batch_missing at %ld/%ld", w,
                 mid);
    cr_assert_eq(count_findings(o, NULL, w, mid, NULL),
                 (long)json_array_size(json_object_get(o, "findings")),
                 "every finding at writer %ld, batch %ld", w, mid);
    cr_assert_eq(count_findings(o, "row_unchained", w, mid, NULL),
                 (long)json_array_size(json_object_get(o, "findings")) - 1);
    json_decref(o);

    /* (e) two batches reordered: records and rows exchange numbers (through
     * a number no batch has: seq is the key and positive) */
    snprintf(q, sizeof q, "SELECT head_seq FROM audit_writers WHERE id = %ld", a1);
    cr_assert_geq(sql_long(g_f.db, q), 4, "writer %ld committed batches 1 to 4", a1);
    snprintf(q, sizeof q,
             "UPDATE audit_batches SET seq = 1000000000 WHERE writer = %ld AND seq = 2; "
             "UPDATE audit_batches SET seq = 2 WHERE writer = %ld AND seq = 3; "
             "UPDATE audit_batches SET seq = 3 WHERE writer = %ld AND seq = 1000000000; "
             "UPDATE audit_logs SET chain_seq = 5 - chain_seq WHERE chain_writer = %ld AND "
             "chain_seq IN (2, 3)",
             a1, a1, a1, a1);
    tamper(4, q);
    o = verify(g_copies[4], &st);
    assert_found(o, st, -1);
    s = dump(o);
    cr_assert_gt(count_findings(o, "batch_broken", a1, 2, ""), 0, "batch 2 broken: %s", s);
    cr_assert_gt(count_findings(o, "batch_broken", a1, 3, ""), 0, "batch 3 broken: %s", s);
    long near = 0;
    for (long k = 2; k <= 4; k++)
        near += count_findings(o, "batch_broken", a1, k, "") +
                count_findings(o, "checkpoint_mismatch", a1, k, "");
    cr_assert_eq(near, jint(o, "total_findings"), "only batches 2 to 4 of writer %ld: %s", a1, s);
    free(s);
    json_decref(o);

    /* (f) the last 10 batches removed with their rows, and the writer's
     * head set back to match: only its signed checkpoints tell */
    snprintf(q, sizeof q,
             "SELECT count(*) FROM audit_logs WHERE chain_writer = %ld AND "
             "chain_seq > %ld",
             w, head - 10);
    long cut = sql_long(g_f.db, q);
    char *tq;
    cr_assert_gt(asprintf(&tq,
                          "DELETE FROM audit_logs WHERE chain_writer = %ld AND chain_seq > %ld; "
                          "DELETE FROM audit_batches WHERE writer = %ld AND seq > %ld; "
                          "DELETE FROM audit_checkpoints WHERE writer = %ld AND seq > %ld; "
                          "UPDATE audit_writers SET head_seq = %ld, "
                          "head_hash = (SELECT hash FROM audit_batches WHERE writer = %ld AND "
                          "seq = %ld), rows = (SELECT sum(rows) FROM audit_batches WHERE "
                          "writer = %ld) WHERE id = %ld",
                          w, head - 10, w, head - 10, w, head - 10, head - 10, w, head - 10, w, w),
                 0);
    tamper(5, tq);
    free(tq);
    o = verify(g_copies[5], &st);
    assert_found(o, st, -1);
    s = dump(o);
    cr_assert_eq(jint(o, "rows"), N_EVENTS - cut, "%s", s);
    cr_assert_gt(count_findings(o, "truncated", w, head - 9, ""), 0, "truncated: %s", s);
    cr_assert_eq(count_findings(o, "truncated", w, head - 9, ""), jint(o, "total_findings"),
                 "nothing but the truncation: %s", s);
    free(s);
    json_decref(o);
    drop_copies();

    /* ---- a checkpoint with one byte of its signature flipped ---- */
    char *log_id = sql_on(g_f.db, "SELECT log_id::text FROM audit_chain_start");
    char subject[160];
    snprintf(subject, sizeof subject, "cms.audit.checkpoints.%s.%ld", log_id, b2);
    free(log_id);
    if (g_f.js == NULL)
        cr_assert_eq(natsConnection_JetStream(&g_f.js, g_f.nc, NULL), NATS_OK);
    natsMsg *m = NULL;
    jsErrCode jerr = 0;
    natsStatus ns = js_GetLastMsg(&m, g_f.js, "CMS_AUDIT_CHECKPOINTS", subject, NULL, &jerr);
    cr_assert_eq(ns, NATS_OK, "the last checkpoint on %s: %s (%d)", subject, natsStatus_GetText(ns),
                 (int)jerr);
    Cms__V1__AuditCheckpoint *cp = cms__v1__audit_checkpoint__unpack(
        NULL, (size_t)natsMsg_GetDataLength(m), (const uint8_t *)natsMsg_GetData(m));
    natsMsg_Destroy(m);
    cr_assert(cp != NULL && cp->signature.len == 64 && cp->writer == b2, "a checkpoint of %ld", b2);
    cp->signature.data[17] ^= 0x01;
    long forged_seq = (long)cp->seq;
    uint8_t buf[512];
    size_t len = cms__v1__audit_checkpoint__get_packed_size(cp);
    cr_assert_leq(len, sizeof buf);
    cms__v1__audit_checkpoint__pack(cp, buf);
    cms__v1__audit_checkpoint__free_unpacked(cp, NULL);
    cms_uuid_v7(&u);
    char msg_id[40];
    cms_uuid_format(&u, msg_id);
    cr_assert_eq(natsMsg_Create(&m, subject, NULL, (const char *)buf, (int)len), NATS_OK);
    cr_assert_eq(natsMsgHeader_Set(m, "Nats-Msg-Id", msg_id), NATS_OK);
    jsPubAck *ack = NULL;
    ns = js_PublishMsg(&ack, g_f.js, m, NULL, &jerr);
    natsMsg_Destroy(m);
    cr_assert_eq(ns, NATS_OK, "published: %s (%d)", natsStatus_GetText(ns), (int)jerr);
    cr_assert(!ack->Duplicate);
    jsPubAck_Destroy(ack);
    o = verify(NULL, &st);
    assert_found(o, st, 1);
    s = dump(o);
    cr_assert_eq(count_findings(o, "checkpoint_signature", b2, forged_seq, ""), 1,
                 "checkpoint_signature at %ld/%ld: %s", b2, forged_seq, s);
    free(s);
    json_decref(o);

    /* ---- checkpoints signed with the first key after its revocation ---- */
    long a3 = start_replica(REPLICA_A, g_key1);
    g_more = audfx_events(&g_a, N_MORE);
    for (size_t i = 0; i < N_MORE; i++)
        audfx_publish_event(&g_a, &g_more[i], NULL);
    publish_wait();
    wait_stored(N_EVENTS + N_MORE);
    stop(REPLICA_A);
    snprintf(q, sizeof q, "SELECT count(*) FROM audit_checkpoints WHERE writer = %ld", a3);
    long signed_a3 = sql_long(g_f.db, q);
    snprintf(q, sizeof q, "SELECT head_seq FROM audit_writers WHERE id = %ld", a3);
    long head_a3 = sql_long(g_f.db, q);
    cr_assert_gt(signed_a3, 0, "writer %ld signed its head", a3);
    o = verify(NULL, &st);
    assert_found(o, st, signed_a3 + 1);
    s = dump(o);
    cr_assert_eq(jint(o, "rows"), N_EVENTS + N_MORE, "%s", s);
    cr_assert_eq(count_findings(o, "checkpoint_key", a3, -1, ""), signed_a3,
                 "each of writer %ld's %ld checkpoints refused: %s", a3, signed_a3, s);
    cr_assert_eq(count_findings(o, "checkpoint_key", a3, head_a3, ""), 1,
                 "the one of its head (%ld) among them: %s", head_a3, s);
    cr_assert_eq(count_findings(o, "checkpoint_signature", b2, forged_seq, ""), 1, "%s", s);
    free(s);
    json_decref(o);
}
