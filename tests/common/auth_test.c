/* common/auth against a real nats-server (CMS_TEST_NATS_URL): the cache,
 * shared lookups, refusals, invalidation by events and by the connection's
 * state, closing; and the default resolver (a request to
 * <prefix>.identity.authenticate) against a responder of the test's own.
 *
 * Each test runs one loop with a watchdog and drives itself in steps: uv
 * timers for time, a uv_prepare handle to wait for a condition (the
 * cache's size, a counter, callbacks) on each loop turn. The test's resolver
 * answers from a table of API keys, at once or (async) from a timer or when
 * the test says so, and counts its calls.
 *
 * The events auth listens to are on fixed subjects (cms.events.identity.>,
 * cms.events.credential.>) shared with whatever else runs on the server.
 * Only the tests about events subscribe (the others set no_events); their
 * events name ids the test made, so foreign events do not drop its entries,
 * and they assert nothing a foreign invalidation could undo, except that the
 * undecodable events they publish clear every auth's cache: two runs of this
 * binary must not share a server at the same time. */
#include <criterion/criterion.h>
#include <nats/nats.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "apikey.h"
#include "auth.h"
#include "bus.h"
#include "cms/v1/command.pb-c.h"
#include "cms/v1/envelope.pb-c.h"
#include "cms/v1/identity.pb-c.h"
#include "log.h"
#include "metrics.h"
#include "nats.h"
#include "testenv.h"
#include "uuid.h"

#define OK CMS_AUTH_OK
#define DENIED CMS_AUTH_DENIED
#define UNAVAILABLE CMS_AUTH_UNAVAILABLE

#define MAX_ROWS 16
#define MAX_PENDING 64
#define MAX_RESULTS 128
#define HOUR_MS INT64_C(3600000)

/* ------------------------------------------------------------------------ */
/* fixture */

typedef enum {
    ANS_OK,
    ANS_DENIED,
    ANS_UNAVAILABLE,
    /* the responder of the default resolver's tests only */
    ANS_SILENT,  /* never replies */
    ANS_GARBAGE, /* replies bytes that are no Reply */
    ANS_BAD_PB,  /* a Principal whose identity_id is no UUID */
    ANS_INTERNAL /* an error other than PERMISSION_DENIED */
} ans_kind;

typedef struct row {
    char key[CMS_APIKEY_LEN + 1];
    ans_kind kind;
    cms_principal p;
    int calls; /* resolver calls (or requests to the responder) for this key */
} row;

typedef struct fx fx;
typedef void (*step_fn)(fx *f);

typedef struct result {
    fx *f;
    int n; /* callback calls */
    cms_auth_err code;
    cms_principal p;
    int seq;           /* order among the test's callbacks */
    uint64_t asked_ms; /* loop time of the cms_auth_resolve call */
    uint64_t at_ms;    /* loop time of the callback */
} result;

typedef struct pending {
    row *r; /* NULL: a key not in the table */
    cms_auth_cb done;
    void *arg;
} pending;

struct fx {
    uv_loop_t loop;
    uv_timer_t watchdog, step, answer;
    uv_prepare_t waiter; /* wait_for: before each poll */
    cms_nats *n;
    cms_auth *a;
    cms_auth_options ao;
    step_fn start;

    row rows[MAX_ROWS];
    int nrows;
    int calls;         /* resolver calls */
    int unknown_calls; /* of keys not in the table */
    bool async;
    int64_t answer_ms; /* async: answer after this long; < 0: when the test says */
    pending pend[MAX_PENDING];
    int npend;

    result res[MAX_RESULTS];
    int nres;
    int seq;

    step_fn next;               /* run by the step timer */
    bool (*until)(fx *f);       /* waited for by the waiter handle */
    step_fn after;              /* then this */
    size_t want_cached;         /* for cached_is */
    const cms_counter *counter; /* for counter_above */
    uint64_t counter_floor;

    cms_nats_sub *probe_identity, *probe_credential, *responder;
    char marker[CMS_UUID_STRLEN + 1];
    bool seen_identity, seen_credential, live;
    step_fn after_live;

    char prefix[64];   /* command prefix of the default resolver's tests */
    char subject[128]; /* <prefix>.identity.authenticate */

    bool ending;
    int auth_closed, nats_closed, auth_closed_seq;
};

static void on_watchdog(uv_timer_t *t)
{
    (void)t;
    cr_assert_fail("watchdog: the test did not finish in time");
}

static void new_id(char out[CMS_UUID_STRLEN + 1])
{
    cms_uuid u;
    cms_uuid_v7(&u);
    cms_uuid_format(&u, out);
}

/* A key of the API key form for a new credential, answered as kind says
 * with an identity whose credential expires expires_in_ms from now. */
static row *add_row(fx *f, ans_kind kind, const char *status, int64_t expires_in_ms)
{
    cr_assert_lt(f->nrows, MAX_ROWS);
    row *r = &f->rows[f->nrows];
    memset(r, 0, sizeof *r);
    cms_uuid cred;
    cms_uuid_v7(&cred);
    uint8_t secret[CMS_APIKEY_SECRET_BYTES];
    cr_assert_eq(cms_apikey_generate(&cred, r->key, secret), 0);
    cms_apikey_wipe(secret, sizeof secret);
    cr_assert_eq(strlen(r->key), CMS_APIKEY_LEN);
    r->kind = kind;
    cms_uuid_format(&cred, r->p.credential_id);
    new_id(r->p.identity_id);
    snprintf(r->p.name, sizeof r->p.name, "principal %d of %d", f->nrows, (int)getpid());
    snprintf(r->p.type, sizeof r->p.type, "machine");
    snprintf(r->p.status, sizeof r->p.status, "%s", status);
    snprintf(r->p.roles[0], CMS_AUTH_ROLE_MAX, "auditor");
    snprintf(r->p.roles[1], CMS_AUTH_ROLE_MAX, "ops-%d", f->nrows);
    r->p.nroles = 2;
    r->p.expires_at_us = cms_test_wall_us() + expires_in_ms * 1000;
    f->nrows++;
    return r;
}

static row *find_row(fx *f, const char *key)
{
    for (int i = 0; i < f->nrows; i++)
        if (strcmp(f->rows[i].key, key) == 0)
            return &f->rows[i];
    return NULL;
}

static void answer(row *r, cms_auth_cb done, void *arg)
{
    if (r == NULL) {
        done(arg, DENIED, NULL);
        return;
    }
    switch (r->kind) {
    case ANS_OK: {
        /* valid during the call only: spoil it afterwards */
        cms_principal p = r->p;
        done(arg, OK, &p);
        memset(&p, 0x5a, sizeof p);
        break;
    }
    case ANS_DENIED:
        done(arg, DENIED, NULL);
        break;
    default:
        done(arg, UNAVAILABLE, NULL);
        break;
    }
}

static void answer_all(fx *f)
{
    /* answers may start new lookups: take the list first */
    pending now[MAX_PENDING];
    int n = f->npend;
    memcpy(now, f->pend, (size_t)n * sizeof now[0]);
    f->npend = 0;
    for (int i = 0; i < n; i++)
        answer(now[i].r, now[i].done, now[i].arg);
}

static void on_answer_timer(uv_timer_t *t)
{
    answer_all(t->data);
}

static void resolver(void *arg, const char *key, cms_auth_cb done, void *done_arg)
{
    fx *f = arg;
    f->calls++;
    cr_assert_not_null(key);
    cr_assert_eq(strlen(key), CMS_APIKEY_LEN, "the resolver gets only keys of the API key form");
    row *r = find_row(f, key);
    if (r)
        r->calls++;
    else
        f->unknown_calls++;
    if (!f->async) {
        answer(r, done, done_arg);
        return;
    }
    cr_assert_lt(f->npend, MAX_PENDING);
    f->pend[f->npend++] = (pending){r, done, done_arg};
    if (f->answer_ms >= 0 && !uv_is_active((uv_handle_t *)&f->answer))
        cr_assert_eq(uv_timer_start(&f->answer, on_answer_timer, (uint64_t)f->answer_ms, 0), 0);
}

static void on_result(void *arg, cms_auth_err code, const cms_principal *p)
{
    result *r = arg;
    r->n++;
    r->code = code;
    r->seq = ++r->f->seq;
    r->at_ms = uv_now(&r->f->loop);
    if (code == OK) {
        cr_assert_not_null(p, "OK without a principal");
        cr_assert_str_eq(p->status, "active", "a principal let in is active");
        r->p = *p;
    } else {
        cr_assert_null(p, "a principal with code %d", (int)code);
    }
}

static result *resolve(fx *f, const char *key)
{
    cr_assert_lt(f->nres, MAX_RESULTS);
    result *r = &f->res[f->nres++];
    memset(r, 0, sizeof *r);
    r->f = f;
    r->asked_ms = uv_now(&f->loop);
    cms_auth_resolve(f->a, key, on_result, r);
    return r;
}

static void expect_principal(const result *r, const row *w)
{
    cr_assert_eq(r->n, 1, "answered %d times", r->n);
    cr_assert_eq(r->code, OK, "code %d", (int)r->code);
    cr_assert_str_eq(r->p.identity_id, w->p.identity_id);
    cr_assert_str_eq(r->p.credential_id, w->p.credential_id);
    cr_assert_str_eq(r->p.name, w->p.name);
    cr_assert_str_eq(r->p.type, w->p.type);
    cr_assert_str_eq(r->p.status, "active");
    cr_assert_eq(r->p.nroles, w->p.nroles);
    for (int i = 0; i < w->p.nroles; i++)
        cr_assert_str_eq(r->p.roles[i], w->p.roles[i]);
    cr_assert_eq(r->p.expires_at_us, w->p.expires_at_us);
    cr_assert(cms_principal_has_role(&r->p, "auditor"));
    cr_assert_not(cms_principal_has_role(&r->p, "admin"));
}

static void expect_code(const result *r, cms_auth_err code)
{
    cr_assert_eq(r->n, 1, "answered %d times", r->n);
    cr_assert_eq(r->code, code, "code %d, want %d", (int)r->code, (int)code);
}

/* ---- steps ---- */

static void on_step(uv_timer_t *t)
{
    fx *f = t->data;
    step_fn next = f->next;
    f->next = NULL;
    next(f);
}

static void after_ms(fx *f, uint64_t ms, step_fn next)
{
    f->next = next;
    cr_assert_eq(uv_timer_start(&f->step, on_step, ms, 0), 0);
}

static void on_waiter(uv_prepare_t *c)
{
    fx *f = c->data;
    if (f->until == NULL || !f->until(f))
        return;
    f->until = NULL;
    uv_prepare_stop(c);
    f->after(f);
}

/* Runs next once until(f) holds, checked on every loop turn (before the
 * loop blocks, so after timers and after I/O callbacks alike). */
static void wait_for(fx *f, bool (*until)(fx *f), step_fn next)
{
    if (until(f)) {
        after_ms(f, 0, next);
        return;
    }
    f->until = until;
    f->after = next;
    cr_assert_eq(uv_prepare_start(&f->waiter, on_waiter), 0);
}

static bool cached_is(fx *f)
{
    return cms_auth_cached(f->a) == f->want_cached;
}

static void wait_cached(fx *f, size_t n, step_fn next)
{
    f->want_cached = n;
    wait_for(f, cached_is, next);
}

static bool all_answered(fx *f)
{
    for (int i = 0; i < f->nres; i++)
        if (f->res[i].n == 0)
            return false;
    return true;
}

static bool counter_above(fx *f)
{
    return cms_counter_get(f->counter) > f->counter_floor;
}

/* ---- events ---- */

static void publish_event(fx *f, const char *type, const char *resource_id, const char *event_id)
{
    char eid[CMS_UUID_STRLEN + 1], actor[CMS_UUID_STRLEN + 1], rtype[32], subject[96];
    if (event_id == NULL) {
        new_id(eid);
        event_id = eid;
    }
    new_id(actor);
    const char *dot = strchr(type, '.');
    cr_assert_not_null(dot);
    snprintf(rtype, sizeof rtype, "%.*s", (int)(dot - type), type);
    Cms__V1__Envelope e = CMS__V1__ENVELOPE__INIT;
    e.event_id = (char *)event_id;
    e.event_type = (char *)type;
    e.resource_type = rtype;
    e.resource_id = (char *)resource_id;
    e.actor_id = actor;
    e.occurred_at_us = cms_test_wall_us();
    e.source = (char *)"auth-test";
    uint8_t buf[512];
    cr_assert_leq(cms__v1__envelope__get_packed_size(&e), sizeof buf);
    size_t len = cms__v1__envelope__pack(&e, buf);
    snprintf(subject, sizeof subject, "cms.events.%s", type);
    cr_assert_eq(cms_nats_publish(f->n, subject, NULL, buf, len), CMS_NATS_OK);
}

static void on_probe(fx *f, cms_nats_msg *m, bool *seen)
{
    Cms__V1__Envelope *env =
        cms__v1__envelope__unpack(NULL, cms_nats_msg_len(m), cms_nats_msg_data(m));
    if (env && strcmp(env->event_id, f->marker) == 0)
        *seen = true;
    if (env)
        cms__v1__envelope__free_unpacked(env, NULL);
    cms_nats_msg_destroy(m);
    if (f->seen_identity && f->seen_credential && !f->live) {
        f->live = true;
        after_ms(f, 0, f->after_live);
    }
}

static void on_probe_identity(void *arg, cms_nats_msg *m)
{
    fx *f = arg;
    on_probe(f, m, &f->seen_identity);
}

static void on_probe_credential(void *arg, cms_nats_msg *m)
{
    fx *f = arg;
    on_probe(f, m, &f->seen_credential);
}

static void publish_markers(fx *f)
{
    char id[CMS_UUID_STRLEN + 1];
    new_id(id);
    publish_event(f, "identity.created", id, f->marker);
    new_id(id);
    publish_event(f, "credential.issued", id, f->marker);
    /* again later if they were not seen by then */
    after_ms(f, 200, publish_markers);
}

/* Runs next once auth's event subscriptions are live: ours, made after
 * them, have seen a marker (the writer thread subscribes in order). The
 * markers' types invalidate nothing. */
static void events_live(fx *f, step_fn next)
{
    f->after_live = next;
    cr_assert_eq(cms_nats_subscribe(f->n, "cms.events.identity.>", NULL, on_probe_identity, f,
                                    &f->probe_identity),
                 0);
    cr_assert_eq(cms_nats_subscribe(f->n, "cms.events.credential.>", NULL, on_probe_credential, f,
                                    &f->probe_credential),
                 0);
    new_id(f->marker);
    publish_markers(f);
}

/* ---- life ---- */

static void on_nats_closed(void *arg)
{
    fx *f = arg;
    f->nats_closed++;
}

static void on_auth_closed(void *arg)
{
    fx *f = arg;
    f->auth_closed++;
    f->auth_closed_seq = ++f->seq;
    cr_assert_eq(f->npend, 0, "closed with %d lookups unanswered", f->npend);
    cms_nats_unsubscribe(f->probe_identity);
    cms_nats_unsubscribe(f->probe_credential);
    cms_nats_unsubscribe(f->responder);
    f->probe_identity = f->probe_credential = f->responder = NULL;
    uv_close((uv_handle_t *)&f->step, NULL);
    uv_close((uv_handle_t *)&f->answer, NULL);
    uv_close((uv_handle_t *)&f->waiter, NULL);
    cms_nats_close(f->n, on_nats_closed, f);
}

static void fx_end(fx *f)
{
    f->ending = true;
    cms_auth_close(f->a, on_auth_closed, f);
}

static void on_nats_state(void *arg, bool connected)
{
    fx *f = arg;
    if (!connected || f->a != NULL || f->ending)
        return;
    cr_assert(cms_nats_is_connected(f->n));
    cr_assert_eq(cms_auth_create(&f->loop, f->n, &f->ao, &f->a), 0);
    cr_assert_eq(cms_auth_cached(f->a), 0);
    f->start(f);
}

/* Connects, creates auth with ao (the test's resolver unless remote) once
 * connected, runs start and the steps after it until fx_end's close is
 * done, then checks that everything was closed and freed. */
static void fx_run(fx *f, const cms_auth_options *ao, bool remote, step_fn start,
                   uint64_t watchdog_ms)
{
    cms_log_init("auth-test", CMS_LOG_ERROR, stderr);
    cr_assert_geq(sodium_init(), 0);
    f->ao = *ao;
    if (!remote) {
        f->ao.resolver = resolver;
        f->ao.resolver_arg = f;
    }
    f->start = start;
    cr_assert_eq(uv_loop_init(&f->loop), 0);
    cr_assert_eq(uv_timer_init(&f->loop, &f->watchdog), 0);
    cr_assert_eq(uv_timer_start(&f->watchdog, on_watchdog, watchdog_ms, 0), 0);
    uv_unref((uv_handle_t *)&f->watchdog);
    cr_assert_eq(uv_timer_init(&f->loop, &f->step), 0);
    cr_assert_eq(uv_timer_init(&f->loop, &f->answer), 0);
    cr_assert_eq(uv_prepare_init(&f->loop, &f->waiter), 0);
    f->step.data = f->answer.data = f->waiter.data = f;
    cms_nats_options o = {.url = cms_test_env("CMS_TEST_NATS_URL"),
                          .name = "auth-test",
                          .on_state = on_nats_state,
                          .state_arg = f};
    cr_assert_eq(cms_nats_create(&f->loop, &o, &f->n), 0);

    uv_run(&f->loop, UV_RUN_DEFAULT);

    cr_assert_eq(f->auth_closed, 1, "auth closed %d times", f->auth_closed);
    cr_assert_eq(f->nats_closed, 1, "nats closed %d times", f->nats_closed);
    cms_auth_destroy(f->a);
    cms_nats_destroy(f->n);
    uv_close((uv_handle_t *)&f->watchdog, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(&f->loop), 0);
    /* and nats.c's threads, waited for: one still running at exit can crash there */
    cr_assert_eq(nats_CloseAndWait(5000), NATS_OK);
}

static fx *fx_new(void)
{
    fx *f = calloc(1, sizeof *f);
    cr_assert_not_null(f);
    return f;
}

/* ------------------------------------------------------------------------ */
/* the cache's lifetime */

static row *g_a, *g_b;
static result *g_r;

static void ttl_expired(fx *f)
{
    result *r = resolve(f, g_a->key);
    expect_principal(r, g_a);
    cr_assert_eq(g_a->calls, 2, "resolved again after ttl_ms");
    cr_assert_eq(cms_auth_cached(f->a), 1, "and cached again");
    resolve(f, g_a->key);
    cr_assert_eq(g_a->calls, 2);
    fx_end(f);
}

static void ttl_next_turn(fx *f)
{
    result *r = resolve(f, g_a->key);
    expect_principal(r, g_a);
    cr_assert_eq(g_a->calls, 1, "a later loop turn within ttl_ms is answered from the cache");
    /* ttl_ms is 200: from this loop time, the entry (made earlier) is gone */
    after_ms(f, 200, ttl_expired);
}

static void ttl_start(fx *f)
{
    g_a = add_row(f, ANS_OK, "active", HOUR_MS);
    result *r1 = resolve(f, g_a->key);
    expect_principal(r1, g_a);
    cr_assert_eq(g_a->calls, 1);
    cr_assert_eq(cms_auth_cached(f->a), 1);
    result *r2 = resolve(f, g_a->key);
    expect_principal(r2, g_a);
    cr_assert_eq(g_a->calls, 1, "a second resolve within ttl_ms is answered from the cache");
    cr_assert_eq(f->calls, 1);
    after_ms(f, 0, ttl_next_turn);
}

/* For settle_ms after an invalidation nothing is cached; then caching resumes. */
static void settle_after(fx *f)
{
    resolve(f, g_a->key);
    cr_assert_eq(g_a->calls, 3, "resolved again: the answer during the pause was not kept");
    resolve(f, g_a->key);
    cr_assert_eq(g_a->calls, 3, "after the pause, answers are cached again");
    fx_end(f);
}

static void settle_start(fx *f)
{
    g_a = add_row(f, ANS_OK, "active", HOUR_MS);
    g_b = add_row(f, ANS_OK, "active", HOUR_MS);
    resolve(f, g_a->key);
    cms_auth_invalidate(f->a, g_b->p.identity_id); /* about someone else */
    cr_assert_eq(cms_auth_cached(f->a), 1, "an unrelated entry stays");
    resolve(f, g_b->key);
    resolve(f, g_b->key);
    cr_assert_eq(g_b->calls, 2, "nothing is cached during the pause");
    resolve(f, g_a->key);
    cr_assert_eq(g_a->calls, 1, "what was cached before is still answered");
    cms_auth_clear(f->a);
    resolve(f, g_a->key);
    cr_assert_eq(g_a->calls, 2);
    after_ms(f, 250, settle_after);
}

Test(auth, nothing_is_cached_for_settle_ms_after_an_invalidation)
{
    fx *f = fx_new();
    cms_auth_options ao = {.settle_ms = 200};
    fx_run(f, &ao, false, settle_start, 10000);
    free(f);
}

Test(auth, cached_for_ttl_ms_then_resolved_again)
{
    fx *f = fx_new();
    cms_auth_options ao = {.settle_ms = -1, .ttl_ms = 200};
    fx_run(f, &ao, false, ttl_start, 10000);
    cr_assert_eq(f->calls, 2);
    free(f);
}

static void expiry_after(fx *f)
{
    /* the long-lived one is still cached: ttl_ms is 10 s */
    expect_principal(resolve(f, g_b->key), g_b);
    cr_assert_eq(g_b->calls, 1, "an entry with a far expiry stays for ttl_ms");
    /* asked again, and the answer (a credential now past its expiry) is a refusal */
    result *r = resolve(f, g_a->key);
    cr_assert_eq(g_a->calls, 2, "an entry never outlives its credential");
    cr_assert_eq(r->n, 1);
    cr_assert_eq(r->code, DENIED, "an expired answer is refused");
    fx_end(f);
}

static void expiry_start(fx *f)
{
    g_a = add_row(f, ANS_OK, "active", 150);
    g_b = add_row(f, ANS_OK, "active", HOUR_MS);
    expect_principal(resolve(f, g_a->key), g_a);
    expect_principal(resolve(f, g_b->key), g_b);
    expect_principal(resolve(f, g_a->key), g_a);
    expect_principal(resolve(f, g_b->key), g_b);
    cr_assert_eq(g_a->calls, 1, "cached until its credential expires");
    cr_assert_eq(g_b->calls, 1);
    cr_assert_eq(cms_auth_cached(f->a), 2);

    /* a credential that expired already is not cached at all */
    row *gone = add_row(f, ANS_OK, "active", -1000);
    result *g1 = resolve(f, gone->key);
    resolve(f, gone->key);
    cr_assert_eq(gone->calls, 2, "an answer past its expiry was cached");
    cr_assert_eq(g1->code, DENIED, "and it is a refusal");
    cr_assert_eq(cms_auth_cached(f->a), 2);
    after_ms(f, 200, expiry_after); /* past the 150 ms, whatever the loop time lags */
}

Test(auth, an_entry_never_outlives_its_credential)
{
    fx *f = fx_new();
    cms_auth_options ao = {.settle_ms = -1, .ttl_ms = 10000};
    fx_run(f, &ao, false, expiry_start, 10000);
    free(f);
}

static void evict_start(fx *f)
{
    row *a = add_row(f, ANS_OK, "active", HOUR_MS);
    row *b = add_row(f, ANS_OK, "active", HOUR_MS);
    row *c = add_row(f, ANS_OK, "active", HOUR_MS);
    resolve(f, a->key);
    resolve(f, b->key);
    cr_assert_eq(cms_auth_cached(f->a), 2);
    resolve(f, c->key);
    cr_assert_eq(cms_auth_cached(f->a), 2, "at most max_entries");
    resolve(f, b->key);
    resolve(f, c->key);
    cr_assert_eq(b->calls, 1, "b was not the oldest");
    cr_assert_eq(c->calls, 1);
    resolve(f, a->key);
    cr_assert_eq(a->calls, 2, "the oldest entry went first");
    resolve(f, c->key);
    cr_assert_eq(c->calls, 1);
    resolve(f, b->key);
    cr_assert_eq(b->calls, 2, "then the next oldest");
    cr_assert(all_answered(f));
    fx_end(f);
}

Test(auth, at_most_max_entries_the_oldest_go_first)
{
    fx *f = fx_new();
    cms_auth_options ao = {.settle_ms = -1, .max_entries = 2};
    fx_run(f, &ao, false, evict_start, 10000);
    free(f);
}

/* ------------------------------------------------------------------------ */
/* concurrent lookups share one resolution */

#define NCONC 16
static row *g_d, *g_u;

static void shared_after(fx *f)
{
    cr_assert_eq(f->calls, 4, "one resolver call per key");
    for (int i = 0; i < NCONC; i++)
        expect_principal(&f->res[i], g_a);
    expect_principal(&f->res[NCONC], g_b);
    for (int i = NCONC + 1; i < NCONC + 5; i++)
        expect_code(&f->res[i], DENIED);
    for (int i = NCONC + 5; i < NCONC + 8; i++)
        expect_code(&f->res[i], UNAVAILABLE);
    cr_assert_eq(cms_auth_cached(f->a), 2);
    /* and the shared answer was cached */
    result *r = resolve(f, g_a->key);
    expect_principal(r, g_a);
    cr_assert_eq(g_a->calls, 1);
    fx_end(f);
}

static void shared_start(fx *f)
{
    g_a = add_row(f, ANS_OK, "active", HOUR_MS);
    g_b = add_row(f, ANS_OK, "active", HOUR_MS);
    g_d = add_row(f, ANS_DENIED, "active", HOUR_MS);
    g_u = add_row(f, ANS_UNAVAILABLE, "active", HOUR_MS);
    for (int i = 0; i < NCONC; i++)
        resolve(f, g_a->key);
    cr_assert_eq(g_a->calls, 1, "%d lookups of one key while it is resolved", NCONC);
    resolve(f, g_b->key);
    cr_assert_eq(g_b->calls, 1, "another key is resolved on its own");
    for (int i = 0; i < 4; i++)
        resolve(f, g_d->key);
    for (int i = 0; i < 3; i++)
        resolve(f, g_u->key);
    cr_assert_eq(f->calls, 4);
    for (int i = 0; i < f->nres; i++)
        cr_assert_eq(f->res[i].n, 0, "lookup %d answered before its resolver", i);
    cr_assert_eq(cms_auth_cached(f->a), 0);
    wait_for(f, all_answered, shared_after);
}

Test(auth, concurrent_lookups_of_a_key_share_one_resolution)
{
    fx *f = fx_new();
    cms_auth_options ao = {.settle_ms = -1};
    f->async = true;
    f->answer_ms = 30;
    fx_run(f, &ao, false, shared_start, 10000);
    free(f);
}

/* ------------------------------------------------------------------------ */
/* refusals */

static void refuse_start(fx *f)
{
    row *a = add_row(f, ANS_OK, "active", HOUR_MS);
    char bad[8][CMS_APIKEY_LEN + 8];
    int nbad = 0;
    snprintf(bad[nbad++], sizeof bad[0], "%.*s", CMS_APIKEY_LEN - 1, a->key); /* one short */
    snprintf(bad[nbad++], sizeof bad[0], "%sA", a->key);                      /* one long */
    snprintf(bad[nbad++], sizeof bad[0], "%s\n", a->key);
    snprintf(bad[nbad++], sizeof bad[0], "Bearer %.*s", CMS_APIKEY_LEN - 7, a->key);
    snprintf(bad[nbad], sizeof bad[0], "%s", a->key); /* uppercase hex in the id */
    for (char *c = bad[nbad] + 4; *c != '_'; c++)
        if (*c >= 'a' && *c <= 'f')
            *c = (char)(*c - 'a' + 'A');
    cr_assert_str_neq(bad[nbad], a->key, "an id without letters");
    nbad++;
    snprintf(bad[nbad], sizeof bad[0], "%s", a->key); /* not base64url */
    bad[nbad][CMS_APIKEY_LEN - 2] = '+';
    nbad++;
    snprintf(bad[nbad], sizeof bad[0], "%s", a->key); /* another prefix */
    bad[nbad][0] = 'x';
    nbad++;
    snprintf(bad[nbad++], sizeof bad[0], "%s", "");
    for (int i = 0; i < nbad; i++) {
        result *r = resolve(f, bad[i]);
        cr_assert_eq(r->n, 1, "malformed key %d: answered at once", i);
        expect_code(r, DENIED);
    }
    result *r = resolve(f, NULL);
    expect_code(r, DENIED);
    cr_assert_eq(f->calls, 0, "a malformed key reached the resolver");

    /* refusals and failures are not cached */
    row *d = add_row(f, ANS_DENIED, "active", HOUR_MS);
    row *u = add_row(f, ANS_UNAVAILABLE, "active", HOUR_MS);
    row *s = add_row(f, ANS_OK, "suspended", HOUR_MS);
    row *in = add_row(f, ANS_OK, "inactive", HOUR_MS);
    for (int k = 0; k < 2; k++) {
        expect_code(resolve(f, d->key), DENIED);
        expect_code(resolve(f, u->key), UNAVAILABLE);
        expect_code(resolve(f, s->key), DENIED);
        expect_code(resolve(f, in->key), DENIED);
    }
    cr_assert_eq(d->calls, 2, "PERMISSION_DENIED was cached");
    cr_assert_eq(u->calls, 2, "UNAVAILABLE was cached");
    cr_assert_eq(s->calls, 2, "a suspended identity was cached");
    cr_assert_eq(in->calls, 2, "an inactive identity was cached");
    cr_assert_eq(cms_auth_cached(f->a), 0);

    /* a well-formed key nobody knows */
    row stranger;
    memset(&stranger, 0, sizeof stranger);
    cms_uuid id;
    uint8_t secret[CMS_APIKEY_SECRET_BYTES];
    cms_uuid_v7(&id);
    cr_assert_eq(cms_apikey_generate(&id, stranger.key, secret), 0);
    expect_code(resolve(f, stranger.key), DENIED);
    cr_assert_eq(f->unknown_calls, 1);

    /* the valid key still works, and is cached */
    expect_principal(resolve(f, a->key), a);
    expect_principal(resolve(f, a->key), a);
    cr_assert_eq(a->calls, 1);
    fx_end(f);
}

Test(auth, refusals_and_failures_are_not_cached)
{
    fx *f = fx_new();
    cms_auth_options ao = {.settle_ms = -1};
    fx_run(f, &ao, false, refuse_start, 10000);
    free(f);
}

/* ------------------------------------------------------------------------ */
/* invalidation by events */

static row *g_c;

static void ev_garbage_credential_done(fx *f)
{
    cr_assert_eq(cms_auth_cached(f->a), 0, "an undecodable event clears everything");
    fx_end(f);
}

static void ev_garbage_identity_done(fx *f)
{
    cr_assert_eq(cms_auth_cached(f->a), 0);
    int before = f->calls;
    expect_principal(resolve(f, g_a->key), g_a);
    expect_principal(resolve(f, g_b->key), g_b);
    expect_principal(resolve(f, g_c->key), g_c);
    cr_assert_eq(f->calls, before + 3, "all resolved again after the cache was cleared");
    cr_assert_eq(cms_auth_cached(f->a), 3);
    /* the same on the credential subjects */
    static const uint8_t junk[] = {0x0a, 0x7f, 'x'}; /* a string field longer than the data */
    cr_assert_eq(cms_nats_publish(f->n, "cms.events.credential.x", NULL, junk, sizeof junk),
                 CMS_NATS_OK);
    wait_cached(f, 0, ev_garbage_credential_done);
}

static void ev_expired_done(fx *f)
{
    expect_principal(resolve(f, g_c->key), g_c);
    cr_assert_eq(g_c->calls, 3, "credential.expired invalidates its credential");
    expect_principal(resolve(f, g_a->key), g_a);
    cr_assert_eq(g_a->calls, 2);
    cr_assert_eq(cms_auth_cached(f->a), 3);
    static const uint8_t junk[] = {0xff, 0xff, 0xff}; /* a truncated varint */
    cr_assert_eq(cms_nats_publish(f->n, "cms.events.identity.x", NULL, junk, sizeof junk),
                 CMS_NATS_OK);
    wait_cached(f, 0, ev_garbage_identity_done);
}

static void ev_revoked_done(fx *f)
{
    expect_principal(resolve(f, g_a->key), g_a);
    cr_assert_eq(g_a->calls, 2, "credential.revoked invalidates its credential");
    expect_principal(resolve(f, g_b->key), g_b);
    cr_assert_eq(g_b->calls, 2, "no other entry was dropped");
    expect_principal(resolve(f, g_c->key), g_c);
    cr_assert_eq(g_c->calls, 2);
    cr_assert_eq(cms_auth_cached(f->a), 3);
    publish_event(f, "credential.expired", g_c->p.credential_id, NULL);
    wait_cached(f, 2, ev_expired_done);
}

static void ev_changed_done(fx *f)
{
    /* the unrelated events came before the ones that dropped b and c */
    expect_principal(resolve(f, g_a->key), g_a);
    cr_assert_eq(g_a->calls, 1, "identity.created or credential.issued invalidated");
    expect_principal(resolve(f, g_b->key), g_b);
    cr_assert_eq(g_b->calls, 2, "identity.status_changed invalidates its identity");
    expect_principal(resolve(f, g_c->key), g_c);
    cr_assert_eq(g_c->calls, 2, "credential.revoked invalidates its credential");
    cr_assert_eq(cms_auth_cached(f->a), 3);
    publish_event(f, "credential.revoked", g_a->p.credential_id, NULL);
    wait_cached(f, 2, ev_revoked_done);
}

static void ev_live(fx *f)
{
    cr_assert_eq(cms_auth_cached(f->a), 3, "the markers invalidated something");
    /* events that name a's identity and credential but change nothing */
    publish_event(f, "identity.created", g_a->p.identity_id, NULL);
    publish_event(f, "credential.issued", g_a->p.credential_id, NULL);
    publish_event(f, "identity.renamed", g_a->p.identity_id, NULL);
    /* then, on each subscription, one that drops an entry */
    publish_event(f, "identity.status_changed", g_b->p.identity_id, NULL);
    publish_event(f, "credential.revoked", g_c->p.credential_id, NULL);
    wait_cached(f, 1, ev_changed_done);
}

static void ev_start(fx *f)
{
    g_a = add_row(f, ANS_OK, "active", HOUR_MS);
    g_b = add_row(f, ANS_OK, "active", HOUR_MS);
    g_c = add_row(f, ANS_OK, "active", HOUR_MS);
    expect_principal(resolve(f, g_a->key), g_a);
    expect_principal(resolve(f, g_b->key), g_b);
    expect_principal(resolve(f, g_c->key), g_c);
    cr_assert_eq(cms_auth_cached(f->a), 3);
    events_live(f, ev_live);
}

Test(auth, events_invalidate_what_they_name)
{
    fx *f = fx_new();
    cms_auth_options ao = {.settle_ms = -1,
                           .ttl_ms = 60000,
                           .event_subjects = cms_bus_auth_event_subjects,
                           .event_types = cms_bus_auth_event_types};
    fx_run(f, &ao, false, ev_start, 20000);
    free(f);
}

/* ------------------------------------------------------------------------ */
/* an invalidation while a lookup is in flight */

static void undisturbed_cached(fx *f)
{
    cr_assert_eq(cms_auth_cached(f->a), 1, "a lookup with no invalidation meanwhile is cached");
    int calls = g_a->calls;
    expect_principal(resolve(f, g_a->key), g_a);
    cr_assert_eq(g_a->calls, calls, "answered from the cache");
    fx_end(f);
}

static void undisturbed_answer(fx *f)
{
    answer_all(f);
    cr_assert(all_answered(f));
    undisturbed_cached(f);
}

static void inflight_event_answer(fx *f)
{
    /* the event was handled while the lookup waited: answer it now */
    answer_all(f);
    cr_assert(all_answered(f));
    expect_principal(g_r, g_a);
    cr_assert_eq(cms_auth_cached(f->a), 0, "an answer older than an invalidation was cached");
    /* that an undisturbed lookup is cached is shown without events (below),
     * where no foreign event can come in between */
    fx_end(f);
}

static void inflight_live(fx *f)
{
    g_r = resolve(f, g_a->key);
    cr_assert_eq(g_a->calls, 2);
    cr_assert_eq(g_r->n, 0);
    /* about somebody else: still, the lookup's answer may predate it */
    char other[CMS_UUID_STRLEN + 1];
    new_id(other);
    f->counter = cms_metrics_counter(cms_metrics_default(), "cms_auth_invalidations_total",
                                     "Cache invalidations by events", NULL);
    cr_assert_not_null(f->counter);
    f->counter_floor = cms_counter_get(f->counter);
    publish_event(f, "identity.status_changed", other, NULL);
    wait_for(f, counter_above, inflight_event_answer);
}

static void inflight_call_answered(fx *f)
{
    answer_all(f);
    cr_assert(all_answered(f));
    for (int i = 0; i < f->nres; i++)
        expect_principal(&f->res[i], g_a);
    cr_assert_eq(cms_auth_cached(f->a), 0, "an answer older than an invalidation was cached");
    cr_assert_eq(g_a->calls, 1);
    events_live(f, inflight_live);
}

static void inflight_start(fx *f)
{
    g_a = add_row(f, ANS_OK, "active", HOUR_MS);
    g_b = add_row(f, ANS_OK, "active", HOUR_MS);
    resolve(f, g_a->key);
    cr_assert_eq(g_a->calls, 1);
    cr_assert_eq(f->res[0].n, 0, "answered before its resolver");
    char other[CMS_UUID_STRLEN + 1];
    new_id(other);
    cms_auth_invalidate(f->a, other);
    /* a lookup that joins after the invalidation shares the old flight */
    resolve(f, g_a->key);
    cr_assert_eq(g_a->calls, 1);
    after_ms(f, 0, inflight_call_answered);
}

Test(auth, an_invalidation_during_a_lookup_keeps_its_answer_out_of_the_cache)
{
    fx *f = fx_new();
    cms_auth_options ao = {.settle_ms = -1,
                           .ttl_ms = 60000,
                           .event_subjects = cms_bus_auth_event_subjects,
                           .event_types = cms_bus_auth_event_types};
    f->async = true;
    f->answer_ms = -1;
    fx_run(f, &ao, false, inflight_start, 20000);
    free(f);
}

static void clear_answered(fx *f)
{
    answer_all(f);
    cr_assert(all_answered(f));
    expect_principal(&f->res[0], g_a);
    expect_principal(&f->res[1], g_b);
    cr_assert_eq(cms_auth_cached(f->a), 0, "answers from before a clear or a disconnection");
    resolve(f, g_a->key);
    after_ms(f, 0, undisturbed_answer);
}

static void clear_start(fx *f)
{
    g_a = add_row(f, ANS_OK, "active", HOUR_MS);
    g_b = add_row(f, ANS_OK, "active", HOUR_MS);
    resolve(f, g_a->key);
    cms_auth_clear(f->a);
    resolve(f, g_b->key);
    /* a disconnection and reconnection in between */
    cms_auth_nats_state(f->a, false);
    cms_auth_nats_state(f->a, true);
    cr_assert_eq(f->calls, 2);
    after_ms(f, 0, clear_answered);
}

Test(auth, a_clear_or_disconnection_during_a_lookup_keeps_its_answer_out)
{
    fx *f = fx_new();
    cms_auth_options ao = {.settle_ms = -1};
    f->async = true;
    f->answer_ms = -1;
    fx_run(f, &ao, false, clear_start, 10000);
    /* a: twice, then from the cache */
    cr_assert_eq(f->rows[0].calls, 2);
    free(f);
}

/* ------------------------------------------------------------------------ */
/* the connection's state */

static void state_start(fx *f)
{
    g_a = add_row(f, ANS_OK, "active", HOUR_MS);
    g_b = add_row(f, ANS_OK, "active", HOUR_MS);
    expect_principal(resolve(f, g_a->key), g_a);
    expect_principal(resolve(f, g_b->key), g_b);
    cr_assert_eq(cms_auth_cached(f->a), 2);

    cms_auth_nats_state(f->a, true);
    cr_assert_eq(cms_auth_cached(f->a), 2, "no change, nothing dropped");

    cms_auth_nats_state(f->a, false);
    cr_assert_eq(cms_auth_cached(f->a), 0, "a disconnection empties the cache");
    for (int i = 0; i < 3; i++) {
        expect_principal(resolve(f, g_a->key), g_a);
        cr_assert_eq(cms_auth_cached(f->a), 0, "cached while disconnected");
    }
    cr_assert_eq(g_a->calls, 4, "each lookup resolved while disconnected");
    cms_auth_nats_state(f->a, false);
    cr_assert_eq(cms_auth_cached(f->a), 0);

    cms_auth_nats_state(f->a, true);
    expect_principal(resolve(f, g_a->key), g_a);
    cr_assert_eq(g_a->calls, 5);
    cr_assert_eq(cms_auth_cached(f->a), 1, "caching resumes once connected");
    expect_principal(resolve(f, g_a->key), g_a);
    cr_assert_eq(g_a->calls, 5);
    /* b's entry from before the disconnection is gone */
    expect_principal(resolve(f, g_b->key), g_b);
    cr_assert_eq(g_b->calls, 2);

    /* a reconnection empties it too: events may have been missed */
    cms_auth_nats_state(f->a, false);
    cms_auth_nats_state(f->a, true);
    cr_assert_eq(cms_auth_cached(f->a), 0);
    fx_end(f);
}

Test(auth, disconnected_nothing_is_cached)
{
    fx *f = fx_new();
    cms_auth_options ao = {.settle_ms = -1};
    fx_run(f, &ao, false, state_start, 10000);
    free(f);
}

/* ------------------------------------------------------------------------ */
/* closing */

static void close_start(fx *f)
{
    g_a = add_row(f, ANS_OK, "active", HOUR_MS);
    g_b = add_row(f, ANS_OK, "active", HOUR_MS);
    f->async = false;
    expect_principal(resolve(f, g_b->key), g_b);
    cr_assert_eq(cms_auth_cached(f->a), 1);
    f->async = true;
    resolve(f, g_a->key);
    resolve(f, g_a->key);
    cr_assert_eq(f->calls, 2);

    fx_end(f);
    cr_assert_eq(f->auth_closed, 0, "closed while a lookup was under way");
    cr_assert_eq(cms_auth_cached(f->a), 0, "closing empties the cache");
    /* while closing: no new lookups (not even of what was cached) */
    expect_code(resolve(f, g_b->key), UNAVAILABLE);
    expect_code(resolve(f, g_a->key), UNAVAILABLE);
    expect_code(resolve(f, "cms_nonsense"), DENIED);
    cr_assert_eq(f->calls, 2);
    cms_auth_close(f->a, on_auth_closed, f); /* a second close changes nothing */
    cr_assert_eq(f->auth_closed, 0);
}

Test(auth, close_completes_the_lookups_under_way_then_calls_closed)
{
    fx *f = fx_new();
    cms_auth_options ao = {.settle_ms = -1};
    f->answer_ms = 50;
    fx_run(f, &ao, false, close_start, 10000);
    /* the two shared the pending lookup, answered as it completed */
    expect_principal(&f->res[1], &f->rows[0]);
    expect_principal(&f->res[2], &f->rows[0]);
    cr_assert_lt(f->res[2].seq, f->auth_closed_seq, "closed before the lookups were answered");
    cr_assert_eq(f->calls, 2);
    free(f);
}

static void close_idle_start(fx *f)
{
    g_a = add_row(f, ANS_OK, "active", HOUR_MS);
    expect_principal(resolve(f, g_a->key), g_a);
    fx_end(f);
    cr_assert_eq(f->auth_closed, 1, "with nothing under way, closed at once");
    expect_code(resolve(f, g_a->key), UNAVAILABLE);
}

Test(auth, close_with_nothing_under_way_is_immediate)
{
    fx *f = fx_new();
    cms_auth_options ao = {.settle_ms = -1,
                           .event_subjects = cms_bus_auth_event_subjects,
                           .event_types = cms_bus_auth_event_types};
    fx_run(f, &ao, false, close_idle_start, 10000);
    free(f);
}

/* Closing from inside a lookup's callback, and freeing in closed (the
 * usual "free in the close callback"): nothing may touch auth afterwards. */
static void on_closed_destroy(void *arg)
{
    fx *f = arg;
    cms_auth_destroy(f->a);
    f->a = NULL;
    on_auth_closed(f);
}

static void on_result_close(void *arg, cms_auth_err code, const cms_principal *p)
{
    result *r = arg;
    fx *f = r->f;
    on_result(arg, code, p);
    if (f->ending)
        return;
    f->ending = true;
    cms_auth_close(f->a, on_closed_destroy, f);
}

static void close_in_cb_start(fx *f)
{
    g_a = add_row(f, ANS_OK, "active", HOUR_MS);
    for (int i = 0; i < 2; i++) {
        result *r = &f->res[f->nres++];
        r->f = f;
        cms_auth_resolve(f->a, g_a->key, on_result_close, r);
    }
    cr_assert_eq(f->calls, 1);
}

Test(auth, a_lookups_callback_may_close_and_destroy_auth)
{
    fx *f = fx_new();
    cms_auth_options ao = {.settle_ms = -1};
    f->async = true;
    f->answer_ms = 10;
    fx_run(f, &ao, false, close_in_cb_start, 10000);
    expect_principal(&f->res[0], &f->rows[0]);
    expect_principal(&f->res[1], &f->rows[0]);
    cr_assert_null(f->a);
    free(f);
}

/* ------------------------------------------------------------------------ */
/* the default resolver: a request to <prefix>.identity.authenticate */

static void on_authenticate(void *arg, cms_nats_msg *m)
{
    fx *f = arg;
    Cms__V1__Authenticate *req =
        cms__v1__authenticate__unpack(NULL, cms_nats_msg_len(m), cms_nats_msg_data(m));
    cr_assert_not_null(req, "an undecodable Authenticate");
    row *r = find_row(f, req->api_key);
    cr_assert_not_null(r, "a key the test did not make: %.8s...", req->api_key);
    r->calls++;
    f->calls++;
    cms__v1__authenticate__free_unpacked(req, NULL);

    Cms__V1__Reply rep = CMS__V1__REPLY__INIT;
    Cms__V1__Error err = CMS__V1__ERROR__INIT;
    Cms__V1__Principal pb;
    char *roles[CMS_AUTH_MAX_ROLES];
    uint8_t inner[1024], buf[2048];
    size_t len = 0;
    cms_principal p = r->p;
    switch (r->kind) {
    case ANS_OK:
    case ANS_BAD_PB:
        if (r->kind == ANS_BAD_PB)
            snprintf(p.identity_id, sizeof p.identity_id, "not-a-uuid");
        cms_principal_to_pb(&p, &pb, roles);
        cr_assert_leq(cms__v1__principal__get_packed_size(&pb), sizeof inner);
        rep.outcome_case = CMS__V1__REPLY__OUTCOME_RESULT;
        rep.result.len = cms__v1__principal__pack(&pb, inner);
        rep.result.data = inner;
        break;
    case ANS_DENIED:
    case ANS_INTERNAL:
    case ANS_UNAVAILABLE:
        err.code = r->kind == ANS_DENIED     ? CMS__V1__ERROR_CODE__PERMISSION_DENIED
                   : r->kind == ANS_INTERNAL ? CMS__V1__ERROR_CODE__INTERNAL
                                             : CMS__V1__ERROR_CODE__UNAVAILABLE;
        err.message = (char *)"no";
        rep.outcome_case = CMS__V1__REPLY__OUTCOME_ERROR;
        rep.error = &err;
        break;
    case ANS_GARBAGE:
        len = 3;
        memcpy(buf, "\xff\xff\xff", 3);
        break;
    case ANS_SILENT:
        break;
    }
    if (rep.outcome_case != CMS__V1__REPLY__OUTCOME__NOT_SET) {
        cr_assert_leq(cms__v1__reply__get_packed_size(&rep), sizeof buf);
        len = cms__v1__reply__pack(&rep, buf);
    }
    if (r->kind != ANS_SILENT)
        cr_assert_eq(cms_nats_respond(f->n, m, NULL, buf, len), CMS_NATS_OK);
    cms_nats_msg_destroy(m);
}

static void respond_as_identity(fx *f)
{
    char subject[128];
    snprintf(subject, sizeof subject, "%s.identity.authenticate", f->prefix);
    cr_assert_eq(cms_nats_subscribe(f->n, subject, NULL, on_authenticate, f, &f->responder), 0);
}

static row *g_silent;

static void remote_timed_out(fx *f)
{
    expect_code(g_r, UNAVAILABLE);
    uint64_t took = g_r->at_ms - g_r->asked_ms;
    cr_assert_geq(took, 300, "answered after %llu ms, before timeout_ms", (unsigned long long)took);
    cr_assert_lt(took, 3000, "answered after %llu ms", (unsigned long long)took);
    cr_assert_eq(g_silent->calls, 1, "the request reached the responder");
    cr_assert_eq(cms_auth_cached(f->a), 1);
    fx_end(f);
}

static void remote_answered(fx *f)
{
    expect_principal(&f->res[0], g_a);
    expect_principal(&f->res[1], g_a);
    cr_assert_eq(g_a->calls, 1, "two lookups, one request");
    expect_code(&f->res[2], DENIED);
    for (int i = 3; i < 7; i++)
        expect_code(&f->res[i], UNAVAILABLE);
    cr_assert_eq(cms_auth_cached(f->a), 1);
    expect_principal(resolve(f, g_a->key), g_a);
    cr_assert_eq(g_a->calls, 1, "answered from the cache");
    for (int i = 1; i < f->nrows; i++)
        cr_assert_eq(f->rows[i].calls, i == f->nrows - 1 ? 0 : 1, "row %d", i);

    /* nobody answers: UNAVAILABLE after timeout_ms (300) */
    g_r = resolve(f, g_silent->key);
    wait_for(f, all_answered, remote_timed_out);
}

static void remote_start(fx *f)
{
    respond_as_identity(f);
    g_a = add_row(f, ANS_OK, "active", HOUR_MS);
    row *d = add_row(f, ANS_DENIED, "active", HOUR_MS);
    row *garbage = add_row(f, ANS_GARBAGE, "active", HOUR_MS);
    row *bad = add_row(f, ANS_BAD_PB, "active", HOUR_MS);
    row *internal = add_row(f, ANS_INTERNAL, "active", HOUR_MS);
    row *unavailable = add_row(f, ANS_UNAVAILABLE, "active", HOUR_MS);
    g_silent = add_row(f, ANS_SILENT, "active", HOUR_MS);
    resolve(f, g_a->key);
    resolve(f, g_a->key);
    resolve(f, d->key);
    resolve(f, garbage->key);
    resolve(f, bad->key);
    resolve(f, internal->key);
    resolve(f, unavailable->key);
    for (int i = 0; i < f->nres; i++)
        cr_assert_eq(f->res[i].n, 0, "a request answered before it was sent");
    wait_for(f, all_answered, remote_answered);
}

Test(auth, default_resolver_asks_identity_authenticate)
{
    fx *f = fx_new();
    snprintf(f->prefix, sizeof f->prefix, "authtest%d.cmd", (int)getpid());
    snprintf(f->subject, sizeof f->subject, "%s.identity.authenticate", f->prefix);
    cms_auth_options ao = {.settle_ms = -1, .authenticate_subject = f->subject, .timeout_ms = 300};
    fx_run(f, &ao, true, remote_start, 10000);
    free(f);
}

static void noresp_answered(fx *f)
{
    expect_code(&f->res[0], UNAVAILABLE);
    uint64_t took = f->res[0].at_ms - f->res[0].asked_ms;
    cr_assert_lt(took, 2500, "no responders took %llu ms: the timeout, not the server's answer",
                 (unsigned long long)took);
    cr_assert_eq(cms_auth_cached(f->a), 0);
    fx_end(f);
}

static void noresp_start(fx *f)
{
    g_a = add_row(f, ANS_OK, "active", HOUR_MS);
    resolve(f, g_a->key);
    wait_for(f, all_answered, noresp_answered);
}

Test(auth, default_resolver_without_identity_is_unavailable_at_once)
{
    fx *f = fx_new();
    snprintf(f->prefix, sizeof f->prefix, "authtest%d.nobody.cmd", (int)getpid());
    snprintf(f->subject, sizeof f->subject, "%s.identity.authenticate", f->prefix);
    cms_auth_options ao = {.settle_ms = -1, .authenticate_subject = f->subject, .timeout_ms = 5000};
    fx_run(f, &ao, true, noresp_start, 10000);
    free(f);
}

static void remote_close_now(fx *f)
{
    cr_assert_eq(f->res[0].n, 0);
    fx_end(f);
    cr_assert_eq(f->auth_closed, 0, "closed with a request pending");
    cr_assert_eq(f->res[0].n, 0, "answered inside cms_auth_close");
}

static bool silent_asked(fx *f)
{
    (void)f;
    return g_silent->calls == 1;
}

static void remote_close_start(fx *f)
{
    respond_as_identity(f);
    g_silent = add_row(f, ANS_SILENT, "active", HOUR_MS);
    resolve(f, g_silent->key);
    /* close once the responder has the request */
    wait_for(f, silent_asked, remote_close_now);
}

Test(auth, default_resolver_close_answers_pending_requests)
{
    fx *f = fx_new();
    snprintf(f->prefix, sizeof f->prefix, "authtest%d.close.cmd", (int)getpid());
    snprintf(f->subject, sizeof f->subject, "%s.identity.authenticate", f->prefix);
    cms_auth_options ao = {.settle_ms = -1, .authenticate_subject = f->subject, .timeout_ms = 5000};
    fx_run(f, &ao, true, remote_close_start, 10000);
    expect_code(&f->res[0], UNAVAILABLE);
    cr_assert_lt(f->res[0].seq, f->auth_closed_seq, "closed before the lookup was answered");
    uint64_t took = f->res[0].at_ms - f->res[0].asked_ms;
    cr_assert_lt(took, 2500, "answered after %llu ms: by the timeout, not by closing",
                 (unsigned long long)took);
    free(f);
}
