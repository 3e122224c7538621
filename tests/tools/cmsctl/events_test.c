/* cmsctl run as a program against the throwaway PostgreSQL and nats-server:
 * gen is deterministic and its poison is what its summary says (checked by
 * decoding every record independently); --seed-actors creates the actors;
 * replay puts every record in CMS_EVENTS on the right subjects with
 * Nats-Msg-Id dedupe and --loop ids; record captures what a replay
 * publishes. The summaries of gen, record and replay come as one JSON
 * object with -o json. (audit query, a command of cms-audit: audit_test.c.)
 *
 * Subjects carry the pid and seeds the pid and time, so runs of other tests
 * on the same servers (and earlier runs inside the stream's dedupe window)
 * do not meet. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <nats/nats.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "cms/v1/envelope.pb-c.h"
#include "pbs.h"
#include "testenv.h"
#include "testproc.h"
#include "uuid.h"

#define WATCHDOG_MS 60000
#define MAX_ARGS 40

/* ------------------------------------------------------------------------ */
/* running cmsctl: tests/lib/testproc */

typedef cms_test_proc proc;
typedef cms_test_runner runner;

static char g_bin[1024];

static void runner_init(runner *r)
{
    cms_test_runner_init(r, WATCHDOG_MS);
}

/* Starts `cmsctl args...` (args NULL-terminated). */
static proc *runner_spawn(runner *r, const char *const *args)
{
    const char *argv[MAX_ARGS + 2];
    size_t k = 0;
    argv[k++] = g_bin;
    for (size_t i = 0; args[i] != NULL && k < MAX_ARGS; i++)
        argv[k++] = args[i];
    argv[k] = NULL;
    return cms_test_spawn(r, argv);
}

#define runner_finish cms_test_runner_finish
#define proc_free cms_test_proc_free

static proc *run_argv(const char *const *args)
{
    runner r;
    runner_init(&r);
    proc *p = runner_spawn(&r, args);
    runner_finish(&r);
    return p;
}

#define RUN(...) run_argv((const char *const[]){__VA_ARGS__, NULL})

#define assert_exit(p, want)                                                                       \
    cr_assert((p)->term_signal == 0 && (p)->status == (want),                                      \
              "exit %lld (signal %d), want %d\n--- stdout:\n%s--- stderr:\n%s",                    \
              (long long)(p)->status, (p)->term_signal, (want), (p)->out, (p)->err)

/* The number after "name: " at the start of a line of text, or -1. */
static long long field(const char *text, const char *name)
{
    size_t n = strlen(name);
    for (const char *l = text; l != NULL && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
        if (strncmp(l, name, n) == 0 && l[n] == ':' && l[n + 1] == ' ')
            return strtoll(l + n + 2, NULL, 10);
    }
    return -1;
}

static void init(void)
{
    snprintf(g_bin, sizeof g_bin, "%s/cmsctl", cms_test_env("CMS_TEST_BIN_DIR"));
    cr_assert_eq(access(g_bin, X_OK), 0, "%s is not there: build the cmsctl target", g_bin);
}

/* A seed no earlier run used (the stream dedupes ids for 2 minutes). */
static void fresh_seed(char out[32])
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(out, 32, "%lld", (long long)ts.tv_sec * 1000003LL + getpid() * 7919LL + ts.tv_nsec);
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "open %s", path);
    char *buf = NULL;
    size_t n = 0;
    FILE *m = open_memstream(&buf, &n);
    char chunk[65536];
    size_t got;
    while ((got = fread(chunk, 1, sizeof chunk, f)) > 0)
        fwrite(chunk, 1, got, m);
    fclose(m);
    fclose(f);
    *len = n;
    return buf;
}

/* ------------------------------------------------------------------------ */
/* gen */

TestSuite(cmsctl, .init = init);

typedef struct actor_set {
    cms_uuid ids[64];
    size_t n;
} actor_set;

/* The actor ids from gen's SQL hint: '{id,id,...}'. */
static void parse_actors(const char *text, actor_set *a)
{
    const char *p = strstr(text, "unnest('{");
    cr_assert_not_null(p, "no SQL hint in:\n%s", text);
    p += strlen("unnest('{");
    a->n = 0;
    while (*p != '}') {
        cr_assert_lt(a->n, 64);
        cr_assert(cms_uuid_parse(p, CMS_UUID_STRLEN, &a->ids[a->n]), "bad hint id at %.40s", p);
        a->n++;
        p += CMS_UUID_STRLEN;
        if (*p == ',')
            p++;
    }
}

static bool actor_known(const actor_set *a, const char *s)
{
    cms_uuid u;
    if (!cms_uuid_parse(s, strlen(s), &u))
        return false;
    for (size_t i = 0; i < a->n; i++)
        if (cms_uuid_compare(&u, &a->ids[i]) == 0)
            return true;
    return false;
}

static bool uuid_ok(const char *s)
{
    cms_uuid u;
    return cms_uuid_parse(s, strlen(s), &u);
}

enum {
    C_VALID,
    C_UNDECODABLE,
    C_EVENT_ID,
    C_RESOURCE_ID,
    C_ACTOR_ID,
    C_EVENT_TYPE,
    C_DETAILS,
    C_UNKNOWN_ACTOR,
    C_N
};
static const char *const class_names[C_N] = {"valid",
                                             "undecodable",
                                             "invalid_event_id",
                                             "invalid_resource_id",
                                             "invalid_actor_id",
                                             "invalid_event_type",
                                             "invalid_details",
                                             "unknown_actor"};

/* What is wrong with one record, judged here from the envelope alone (and
 * the actor set), the way a consumer must judge it. Valid ones are checked
 * for the shape gen promises. */
static int classify(const uint8_t *d, size_t n, const actor_set *actors, int64_t *last_us)
{
    Cms__V1__Envelope *e = cms__v1__envelope__unpack(NULL, n, d);
    if (e == NULL)
        return C_UNDECODABLE;
    int c = C_VALID;
    size_t rtl = strlen(e->resource_type);
    json_error_t jerr;
    json_t *details = json_loads(e->details_json, JSON_DECODE_ANY, &jerr);
    if (!uuid_ok(e->event_id))
        c = C_EVENT_ID;
    else if (!uuid_ok(e->resource_id))
        c = C_RESOURCE_ID;
    else if (!uuid_ok(e->actor_id))
        c = C_ACTOR_ID;
    else if (strlen(e->event_type) > 50 || strncmp(e->event_type, e->resource_type, rtl) != 0 ||
             e->event_type[rtl] != '.' || e->event_type[rtl + 1] == '\0')
        c = C_EVENT_TYPE;
    else if (details == NULL || !json_is_object(details))
        c = C_DETAILS;
    else if (!actor_known(actors, e->actor_id))
        c = C_UNKNOWN_ACTOR;
    if (c == C_VALID) {
        size_t dl = strlen(e->details_json);
        cr_assert(dl >= 100 && dl <= 300, "details of %zu bytes: %s", dl, e->details_json);
        cms_uuid u;
        cr_assert(cms_uuid_parse(e->event_id, strlen(e->event_id), &u));
        cr_assert_eq(cms_uuid_version(&u), 7, "event ids are v7: %s", e->event_id);
        cr_assert(strcmp(e->resource_type, "contract") == 0 ||
                      strcmp(e->resource_type, "identity") == 0 ||
                      strcmp(e->resource_type, "credential") == 0 ||
                      strcmp(e->resource_type, "training_job") == 0,
                  "resource type %s", e->resource_type);
        cr_assert(e->source[0] != '\0', "a source");
        cr_assert(e->correlation_id[0] == '\0' || uuid_ok(e->correlation_id));
    }
    cr_assert_gt(e->occurred_at_us, *last_us, "occurred_at increases");
    *last_us = e->occurred_at_us;
    json_decref(details);
    cms__v1__envelope__free_unpacked(e, NULL);
    return c;
}

Test(cmsctl, gen_is_deterministic_and_its_poison_is_as_reported)
{
    char a[64], b[64], c[64];
    snprintf(a, sizeof a, "/tmp/cmsctl-gen-a-%d.pbs", (int)getpid());
    snprintf(b, sizeof b, "/tmp/cmsctl-gen-b-%d.pbs", (int)getpid());
    snprintf(c, sizeof c, "/tmp/cmsctl-gen-c-%d.pbs", (int)getpid());
    proc *pa = RUN("gen", "--count", "1800", "--actors", "7", "--bad-fraction", "0.1", "--seed",
                   "12345", "--out", a);
    assert_exit(pa, 0);
    proc *pb = RUN("gen", "--seed=12345", "--out", b, "--count", "1800", "--bad-fraction=0.1",
                   "--actors", "7");
    assert_exit(pb, 0);
    proc *pc = RUN("gen", "--count", "1800", "--actors", "7", "--bad-fraction", "0.1", "--seed",
                   "12346", "--out", c);
    assert_exit(pc, 0);
    size_t la, lb, lc;
    char *da = slurp(a, &la), *db = slurp(b, &lb), *dc = slurp(c, &lc);
    cr_assert(la == lb && memcmp(da, db, la) == 0, "same seed, same bytes");
    cr_assert(la != lc || memcmp(da, dc, la) != 0, "another seed, other bytes");
    /* the same summary, past the first line (which has the time taken) */
    cr_assert_str_eq(strchr(pa->out, '\n'), strchr(pb->out, '\n'), "same summary");

    /* the summary adds up, and every kind appears (1800 * 0.1 / 9 = 20 of each) */
    cr_assert_eq(field(pa->out, "total"), 1800);
    long long sum = 0;
    for (int k = 0; k < C_N; k++) {
        long long v = field(pa->out, class_names[k]);
        cr_assert_geq(v, 20, "%s: %lld\n%s", class_names[k], v, pa->out);
        sum += v;
    }
    cr_assert_eq(sum, 1800, "the counts add up to the total:\n%s", pa->out);
    cr_assert_eq(field(pa->out, "valid"), 1620);
    cr_assert_eq(field(pa->out, "invalid_event_type"), 40, "mismatch and too long");
    cr_assert_eq(field(pa->out, "invalid_details"), 40, "not an object and not JSON");

    /* decode every record and judge it independently */
    actor_set actors;
    parse_actors(pa->out, &actors);
    cr_assert_eq(actors.n, 7);
    long long got[C_N] = {0};
    cms_pbs_reader *r = NULL;
    cr_assert_eq(cms_pbs_reader_open(a, 1 << 20, &r), CMS_PBS_OK);
    const uint8_t *d;
    size_t n;
    int64_t last_us = 0;
    while (cms_pbs_next(r, &d, &n) == CMS_PBS_OK)
        got[classify(d, n, &actors, &last_us)]++;
    cr_assert_eq(cms_pbs_next(r, &d, &n), CMS_PBS_EOF, "the file ends cleanly");
    cms_pbs_reader_close(r);
    for (int k = 0; k < C_N; k++)
        cr_assert_eq(got[k], field(pa->out, class_names[k]), "%s: decoded %lld, reported %lld",
                     class_names[k], got[k], field(pa->out, class_names[k]));

    /* without --seed: still valid events, v7 ids from the clock */
    proc *pr = RUN("gen", "--count", "50", "--actors", "3", "--out", c);
    assert_exit(pr, 0);
    parse_actors(pr->out, &actors);
    cr_assert_eq(cms_pbs_reader_open(c, 1 << 20, &r), CMS_PBS_OK);
    last_us = 0;
    long long valid = 0;
    while (cms_pbs_next(r, &d, &n) == CMS_PBS_OK)
        valid += classify(d, n, &actors, &last_us) == C_VALID;
    cms_pbs_reader_close(r);
    cr_assert_eq(valid, 50);

    free(da);
    free(db);
    free(dc);
    unlink(a);
    unlink(b);
    unlink(c);
    proc_free(pa);
    proc_free(pb);
    proc_free(pc);
    proc_free(pr);
}

Test(cmsctl, gen_seed_actors_inserts_them_once)
{
    char db[512], out[64], seed[32];
    cr_assert_eq(cms_test_db_create("cmsctl_seed", 1, db, sizeof db), 0);
    snprintf(out, sizeof out, "/tmp/cmsctl-seed-%d.pbs", (int)getpid());
    fresh_seed(seed);
    proc *hint = RUN("gen", "--count", "20", "--actors", "12", "--seed", seed, "--out", out);
    assert_exit(hint, 0);
    actor_set actors;
    parse_actors(hint->out, &actors);
    cr_assert_eq(actors.n, 12);

    proc *p = RUN("gen", "--count", "20", "--actors", "12", "--seed", seed, "--out", out,
                  "--seed-actors", "--database-url", db);
    assert_exit(p, 0);
    cr_assert_not_null(strstr(p->out, "seeded: 12 new of 12"), "%s", p->out);
    char *cnt = cms_test_sql(db, "SELECT count(*) FROM identities WHERE name LIKE 'cmsctl-actor-%' "
                                 "AND type = 'machine' AND status = 'active'");
    cr_assert_str_eq(cnt, "12");
    free(cnt);
    for (size_t i = 0; i < actors.n; i++) {
        char id[CMS_UUID_STRLEN + 1], q[160];
        cms_uuid_format(&actors.ids[i], id);
        snprintf(q, sizeof q, "SELECT count(*) FROM identities WHERE id = '%s'", id);
        char *one = cms_test_sql(db, q);
        cr_assert_str_eq(one, "1", "actor %s of the hint is in identities", id);
        free(one);
    }
    /* again: nothing new, no error */
    proc *again = RUN("gen", "--count", "20", "--actors", "12", "--seed", seed, "--out", out,
                      "--seed-actors", "--database-url", db);
    assert_exit(again, 0);
    cr_assert_not_null(strstr(again->out, "seeded: 0 new of 12"), "%s", again->out);

    /* an unreachable database is a failure (1) that says what to check */
    proc *bad = RUN("gen", "--count", "5", "--out", out, "--seed-actors", "--database-url",
                    "host=127.0.0.1 port=1 connect_timeout=2");
    assert_exit(bad, 1);
    cr_assert_not_null(strstr(bad->err, "cannot connect to PostgreSQL"), "%s", bad->err);
    cr_assert_not_null(strstr(bad->err, "CMS_DATABASE_URL"));

    cms_test_db_drop(db);
    unlink(out);
    proc_free(hint);
    proc_free(p);
    proc_free(again);
    proc_free(bad);
}

/* ------------------------------------------------------------------------ */
/* replay and record */

/* Messages in CMS_EVENTS under prefix.> (and, if `subject` is not NULL, on that one subject). */
static uint64_t stream_count(const char *prefix, const char *subject, uint64_t *on_subject)
{
    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    jsStreamInfo *si = NULL;
    cr_assert_eq(natsConnection_ConnectTo(&nc, cms_test_env("CMS_TEST_NATS_URL")), NATS_OK);
    cr_assert_eq(natsConnection_JetStream(&js, nc, NULL), NATS_OK);
    char filter[256];
    snprintf(filter, sizeof filter, "%s.>", prefix);
    jsOptions o;
    jsOptions_Init(&o);
    o.Stream.Info.SubjectsFilter = filter;
    jsErrCode jerr = 0;
    cr_assert_eq(js_GetStreamInfo(&si, js, "CMS_EVENTS", &o, &jerr), NATS_OK, "stream info: %d",
                 (int)jerr);
    uint64_t total = 0;
    if (on_subject != NULL)
        *on_subject = 0;
    for (int i = 0; si->State.Subjects != NULL && i < si->State.Subjects->Count; i++) {
        total += si->State.Subjects->List[i].Msgs;
        if (subject != NULL && strcmp(si->State.Subjects->List[i].Subject, subject) == 0)
            *on_subject = si->State.Subjects->List[i].Msgs;
    }
    jsStreamInfo_Destroy(si);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    return total;
}

Test(cmsctl, replay_publishes_every_record_with_dedupe_ids)
{
    const char *url = cms_test_env("CMS_TEST_NATS_URL");
    char file[64], seed[32], prefix[64], undecodable[96];
    snprintf(file, sizeof file, "/tmp/cmsctl-replay-%d.pbs", (int)getpid());
    snprintf(prefix, sizeof prefix, "cms.events.clitest%d", (int)getpid());
    snprintf(undecodable, sizeof undecodable, "%s.unknown.undecodable", prefix);
    fresh_seed(seed);
    proc *g = RUN("gen", "--count", "450", "--bad-fraction", "0.2", "--seed", seed, "--out", file);
    assert_exit(g, 0);
    long long n_undecodable = field(g->out, "undecodable");
    cr_assert_eq(n_undecodable, 10);
    /* replay gives these a fresh Nats-Msg-Id each time: undecodable ones and empty event ids */
    long long n_fresh = 0;
    cms_pbs_reader *rd = NULL;
    cr_assert_eq(cms_pbs_reader_open(file, 1 << 20, &rd), CMS_PBS_OK);
    const uint8_t *d;
    size_t n;
    while (cms_pbs_next(rd, &d, &n) == CMS_PBS_OK) {
        Cms__V1__Envelope *e = cms__v1__envelope__unpack(NULL, n, d);
        n_fresh += e == NULL || e->event_id[0] == '\0';
        cms__v1__envelope__free_unpacked(e, NULL);
    }
    cms_pbs_reader_close(rd);
    cr_assert_gt(n_fresh, n_undecodable, "the file has empty event ids too");

    proc *p = RUN("replay", file, "--subject-prefix", prefix, "--nats-url", url, "--window", "32");
    assert_exit(p, 0);
    cr_assert_eq(field(p->out, "total"), 450, "%s", p->out);
    cr_assert_eq(field(p->out, "acked"), 450);
    cr_assert_eq(field(p->out, "duplicates"), 0);
    cr_assert_eq(field(p->out, "errors"), 0);
    cr_assert_not_null(strstr(p->out, "\nrate: "), "a rate line:\n%s", p->out);
    cr_assert_not_null(strstr(p->out, "msgs/s"));
    cr_assert_not_null(strstr(p->out, "ack latency: p50 "), "%s", p->out);
    uint64_t on_undecodable = 0;
    cr_assert_eq(stream_count(prefix, undecodable, &on_undecodable), 450);
    cr_assert_eq(on_undecodable, (uint64_t)n_undecodable, "undecodable records have their subject");

    /* the same file again: the stream knows every id but the fresh ones (summary as JSON) */
    proc *again = RUN("replay", file, "--subject-prefix", prefix, "--nats-url", url, "-o", "json");
    assert_exit(again, 0);
    json_t *sum = json_loads(again->out, 0, NULL);
    cr_assert(json_is_object(sum), "one object:\n%s", again->out);
    cr_assert_eq(json_integer_value(json_object_get(sum, "total")), 450);
    cr_assert_eq(json_integer_value(json_object_get(sum, "duplicates")), 450 - n_fresh, "%s",
                 again->out);
    cr_assert_eq(json_integer_value(json_object_get(sum, "errors")), 0);
    cr_assert(json_is_number(json_object_get(sum, "ack_latency_p99_ms")), "%s", again->out);
    json_decref(sum);
    cr_assert_eq(stream_count(prefix, NULL, NULL), 450 + (uint64_t)n_fresh);

    /* --loop 3: pass 0 is a duplicate again, passes 1 and 2 carry -1 and -2 ids */
    proc *loop = RUN("replay", file, "--subject-prefix", prefix, "--nats-url", url, "--loop", "3",
                     "--rate", "20000");
    assert_exit(loop, 0);
    cr_assert_eq(field(loop->out, "total"), 1350);
    cr_assert_eq(field(loop->out, "acked"), 1350);
    cr_assert_eq(field(loop->out, "duplicates"), 450 - n_fresh, "%s", loop->out);
    cr_assert_eq(stream_count(prefix, NULL, NULL), 450 * 3 + 2 * (uint64_t)n_fresh);

    proc_free(g);
    proc_free(p);
    proc_free(again);
    proc_free(loop);
    unlink(file);
}

Test(cmsctl, replay_refuses_bad_arguments_and_reports_failures)
{
    proc *p = RUN("replay");
    assert_exit(p, 2);
    cr_assert_not_null(strstr(p->err, "FILE.pbs"), "%s", p->err);
    proc_free(p);
    p = RUN("replay", "/nonexistent/x.pbs", "--nats-url", cms_test_env("CMS_TEST_NATS_URL"));
    assert_exit(p, 1);
    cr_assert_not_null(strstr(p->err, "cannot open /nonexistent/x.pbs"), "%s", p->err);
    proc_free(p);
    p = RUN("replay", "/tmp/x.pbs", "--subject-prefix", "other.stream");
    assert_exit(p, 2);
    cr_assert_not_null(strstr(p->err, "--subject-prefix"), "%s", p->err);
    proc_free(p);
    p = RUN("replay", "-", "--loop", "2");
    assert_exit(p, 2);
    proc_free(p);
    p = RUN("replay", "/tmp/x.pbs", "--window", "0");
    assert_exit(p, 2);
    proc_free(p);

    /* a damaged file: the good records go out, then exit 1 naming the byte */
    char file[64], prefix[64];
    snprintf(file, sizeof file, "/tmp/cmsctl-damaged-%d.pbs", (int)getpid());
    snprintf(prefix, sizeof prefix, "cms.events.clidmg%d", (int)getpid());
    FILE *f = fopen(file, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(cms_pbs_write(f, "\x07junk", 5), CMS_PBS_OK);
    fputc(0x40, f); /* a 64-byte record that never comes */
    fclose(f);
    p = RUN("replay", file, "--subject-prefix", prefix, "--nats-url",
            cms_test_env("CMS_TEST_NATS_URL"));
    assert_exit(p, 1);
    cr_assert_not_null(strstr(p->err, "at byte 6"), "%s", p->err);
    cr_assert_eq(field(p->out, "acked"), 1);
    proc_free(p);
    unlink(file);

    /* no server */
    char gen[64];
    snprintf(gen, sizeof gen, "/tmp/cmsctl-nosrv-%d.pbs", (int)getpid());
    proc *g = RUN("gen", "--count", "3", "--out", gen);
    assert_exit(g, 0);
    p = RUN("replay", gen, "--nats-url", "nats://user:s3cret@127.0.0.1:1", "--timeout", "500ms");
    assert_exit(p, 1);
    cr_assert_not_null(strstr(p->err, "cannot connect to NATS"), "%s", p->err);
    cr_assert_not_null(strstr(p->err, "CMS_NATS_URL"));
    /* what nats.c says, without the places in its source; the URL without its password */
    cr_assert_null(strstr(p->err, ".c:"), "%s", p->err);
    cr_assert_null(strstr(p->err, "s3cret"), "%s", p->err);
    cr_assert_not_null(strstr(p->err, "nats://user:[redacted]@127.0.0.1:1"), "%s", p->err);
    cr_assert_not_null(strstr(p->err, ": No server available for connection\n"), "%s", p->err);
    proc_free(p);
    proc_free(g);
    unlink(gen);
}

typedef struct record_run {
    runner *r;
    const char *replay_args[16];
    proc *replay;
} record_run;

/* Once the recorder says it is subscribed, start the replay. */
static void on_record_stderr(proc *p, void *arg)
{
    record_run *rr = arg;
    if (rr->replay == NULL && strstr(p->err, "recording ") != NULL)
        rr->replay = runner_spawn(rr->r, rr->replay_args);
}

Test(cmsctl, record_captures_what_replay_publishes)
{
    const char *url = cms_test_env("CMS_TEST_NATS_URL");
    char gen[64], rec[64], seed[32], prefix[64], subject[80];
    snprintf(gen, sizeof gen, "/tmp/cmsctl-recsrc-%d.pbs", (int)getpid());
    snprintf(rec, sizeof rec, "/tmp/cmsctl-rec-%d.pbs", (int)getpid());
    snprintf(prefix, sizeof prefix, "cms.events.clirec%d", (int)getpid());
    snprintf(subject, sizeof subject, "%s.>", prefix);
    fresh_seed(seed);
    proc *g = RUN("gen", "--count", "200", "--bad-fraction", "0.1", "--seed", seed, "--out", gen);
    assert_exit(g, 0);

    runner r;
    runner_init(&r);
    record_run rr = {
        .r = &r,
        .replay_args = {"replay", gen, "--subject-prefix", prefix, "--nats-url", url, NULL}};
    proc *recp = runner_spawn(&r, (const char *const[]){"record", "--out", rec, "--subject",
                                                        subject, "--count", "200", "--duration",
                                                        "30s", "--nats-url", url, NULL});
    recp->on_err = on_record_stderr;
    recp->on_err_arg = &rr;
    runner_finish(&r);
    cr_assert_not_null(rr.replay, "the recorder never said it was recording:\n%s", recp->err);
    assert_exit(rr.replay, 0);
    assert_exit(recp, 0);
    cr_assert_not_null(strstr(recp->out, "recorded 200 messages"), "%s", recp->out);

    /* the same records, in the same order (one publisher, one subscriber) */
    cms_pbs_reader *a = NULL, *b = NULL;
    cr_assert_eq(cms_pbs_reader_open(gen, 1 << 20, &a), CMS_PBS_OK);
    cr_assert_eq(cms_pbs_reader_open(rec, 1 << 20, &b), CMS_PBS_OK);
    const uint8_t *da, *db;
    size_t na, nb;
    int n = 0;
    while (cms_pbs_next(a, &da, &na) == CMS_PBS_OK) {
        cr_assert_eq(cms_pbs_next(b, &db, &nb), CMS_PBS_OK, "recording ends at %d", n);
        cr_assert(na == nb && memcmp(da, db, na) == 0, "record %d differs", n);
        n++;
    }
    cr_assert_eq(n, 200);
    cr_assert_eq(cms_pbs_next(b, &db, &nb), CMS_PBS_EOF);
    cms_pbs_reader_close(a);
    cms_pbs_reader_close(b);

    /* nothing to hear: the timeout ends it, and that is not an error */
    proc *idle = RUN("record", "--out", rec, "--subject", "cms.events.clinothing.>", "--duration",
                     "300ms", "--nats-url", url);
    assert_exit(idle, 0);
    cr_assert_not_null(strstr(idle->out, "recorded 0 messages"), "%s", idle->out);
    /* the summary as one object */
    proc *idle_json = RUN("record", "--out", rec, "--subject", "cms.events.clinothing.>",
                          "--duration", "100ms", "--nats-url", url, "-o", "json");
    assert_exit(idle_json, 0);
    json_t *sum = json_loads(idle_json->out, 0, NULL);
    cr_assert(json_is_object(sum), "%s", idle_json->out);
    cr_assert_eq(json_integer_value(json_object_get(sum, "recorded")), 0);
    cr_assert_str_eq(json_string_value(json_object_get(sum, "stopped_by")), "duration");
    json_decref(sum);
    proc_free(idle_json);

    proc_free(g);
    proc_free(recp);
    proc_free(rr.replay);
    proc_free(idle);
    unlink(gen);
    unlink(rec);
}

Test(cmsctl, verbs_and_help)
{
    proc *p = RUN("--help");
    assert_exit(p, 0);
    cr_assert_not_null(strstr(p->out, "replay"));
    proc_free(p);
    p = run_argv((const char *const[]){NULL});
    assert_exit(p, 2);
    proc_free(p);
    p = RUN("frobnicate");
    assert_exit(p, 2);
    cr_assert_not_null(strstr(p->err, "unknown verb"), "%s", p->err);
    proc_free(p);

    /* version: the verb and the flag say the same */
    p = RUN("--version");
    assert_exit(p, 0);
    proc *v = RUN("version");
    assert_exit(v, 0);
    cr_assert_str_eq(v->out, p->out);
    cr_assert_eq(strncmp(v->out, "cmsctl ", 7), 0, "%s", v->out);
    proc_free(v);
    v = RUN("version", "-o", "json");
    assert_exit(v, 0);
    json_t *o = json_loads(v->out, 0, NULL);
    cr_assert(json_is_object(o), "%s", v->out);
    cr_assert_str_eq(json_string_value(json_object_get(o, "name")), "cmsctl");
    cr_assert_eq(strncmp(p->out + 7, json_string_value(json_object_get(o, "version")),
                         strlen(json_string_value(json_object_get(o, "version")))),
                 0);
    json_decref(o);
    proc_free(v);
    proc_free(p);

    /* an option before the verb that is not shared by the verbs is refused, naming it */
    p = RUN("--count", "3", "gen");
    assert_exit(p, 2);
    cr_assert_not_null(strstr(p->err, "--count is not a shared option"), "%s", p->err);
    proc_free(p);

    /* gen's summary as one object (on stdout, the events in their file) */
    char out[64];
    snprintf(out, sizeof out, "/tmp/cmsctl-genjson-%d.pbs", (int)getpid());
    p = RUN("-o", "json", "gen", "--count", "10", "--bad-fraction", "0.2", "--seed", "7", "--out",
            out);
    assert_exit(p, 0);
    o = json_loads(p->out, 0, NULL);
    cr_assert(json_is_object(o), "one object:\n%s", p->out);
    cr_assert_eq(json_integer_value(json_object_get(o, "total")), 10);
    cr_assert_eq(json_integer_value(json_object_get(o, "valid")), 8);
    cr_assert_eq(json_integer_value(json_object_get(o, "seed")), 7);
    cr_assert(json_is_null(json_object_get(o, "seeded_actors")));
    cr_assert_not_null(strstr(p->err, "INSERT INTO identities"), "the SQL hint on stderr: %s",
                       p->err);
    json_decref(o);
    proc_free(p);
    unlink(out);
    static const char *const verbs[][3] = {{"gen", "--help", NULL},    {"record", "--help", NULL},
                                           {"replay", "--help", NULL}, {"audit", "query", "--help"},
                                           {"whoami", "--help", NULL}, {"version", "--help", NULL}};
    for (size_t i = 0; i < sizeof verbs / sizeof verbs[0]; i++) {
        const char *args[4] = {verbs[i][0], verbs[i][1], verbs[i][2], NULL};
        p = run_argv(args);
        assert_exit(p, 0);
        cr_assert_not_null(strstr(p->out, "usage: cmsctl "), "%s", p->out);
        proc_free(p);
    }
    p = RUN("gen", "--count", "10", "--out", "/tmp/x.pbs", "--bad-fraction", "1.5");
    assert_exit(p, 2);
    cr_assert_not_null(strstr(p->err, "--bad-fraction"), "%s", p->err);
    proc_free(p);
    p = RUN("gen", "--out", "/tmp/x.pbs");
    assert_exit(p, 2);
    cr_assert_not_null(strstr(p->err, "--count"), "%s", p->err);
    proc_free(p);
    p = RUN("gen", "--count", "1", "--out", "/nonexistent/dir/x.pbs");
    assert_exit(p, 1);
    cr_assert_not_null(strstr(p->err, "cannot create"), "%s", p->err);
    proc_free(p);
}
