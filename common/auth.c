/* API key resolution with a cache; see auth.h.
 *
 * Cache entries and lookups in flight are hash tables keyed by a keyed
 * BLAKE2b digest of the key (the hashing key is random per process), so
 * neither table holds a key. A flight holds the key itself only while its
 * resolver runs, and wipes it after.
 *
 * gen counts invalidations: a flight remembers gen when it starts and
 * caches its answer only if no invalidation (and no disconnection) came in
 * between, since the answer may predate the change. */
#include "auth.h"

#include "apikey.h"
#include "bus.h"
#include "cms/v1/command.pb-c.h"
#include "cms/v1/envelope.pb-c.h"
#include "fsm.h"
#include "log.h"
#include "metrics.h"
#include "request.h"

#include "hashtab.h"
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DIGEST_BYTES 32
#define DEFAULT_TTL_MS 5000
#define DEFAULT_MAX_ENTRIES 65536
#define DEFAULT_TIMEOUT_MS 2000
#define MAX_WAITERS 256
/* After an invalidation nothing is cached for this long: another
 * replica of cms-identity may answer from its own cache until the same
 * event reaches it, which takes milliseconds. */
#define DEFAULT_SETTLE_MS 1000
#define MAX_EVENT_SUBJECTS 8
#define MAX_EVENT_TYPES 16
#define NAME_MAX_LEN 128

typedef struct entry {
    uint8_t digest[DIGEST_BYTES];
    cms_principal p;
    uint64_t until_ms; /* loop time */
    UT_hash_handle hh;
} entry;

typedef struct waiter {
    cms_auth_cb cb;
    void *arg;
} waiter;

typedef struct flight {
    uint8_t digest[DIGEST_BYTES];
    cms_auth *a;
    char key[CMS_APIKEY_LEN + 1];
    uint64_t gen;
    waiter *waiters;
    size_t nwaiters, cap;
    UT_hash_handle hh;
} flight;

#define AUTH_STATES(X) X(AUTH_OPEN, "open") X(AUTH_CLOSING, "closing") X(AUTH_CLOSED, "closed")
typedef enum { AUTH_STATES(CMS_ENUM_ITEM) AUTH_NSTATES } auth_state;
static const char *const auth_names[] = {AUTH_STATES(CMS_ENUM_TEXT)};
static const bool auth_moves[AUTH_NSTATES][AUTH_NSTATES] = {
    [AUTH_OPEN] = {[AUTH_CLOSING] = true},
    [AUTH_CLOSING] = {[AUTH_CLOSED] = true},
};
static const cms_fsm auth_fsm =
    CMS_FSM_INIT("authenticator", CMS_LOG_DEBUG, auth_names, auth_moves);

static const char *const err_names[] = {CMS_AUTH_ERRORS(CMS_ENUM_TEXT)};

struct cms_auth {
    uv_loop_t *loop;
    cms_nats *nats;
    cms_auth_options o;
    char subject[CMS_BUS_SUBJECT_MAX]; /* the default resolver's */
    char types[MAX_EVENT_TYPES][NAME_MAX_LEN];
    size_t ntypes;
    auth_state state;
    uint8_t hash_key[crypto_generichash_KEYBYTES];
    entry *cache;
    size_t ncache;
    flight *flights;
    size_t nflights;
    int dispatching; /* depth of resolved() calling waiters: closed waits for 0 */
    uint64_t gen;
    uint64_t quiet_until_ms; /* loop time: cache nothing before it */
    uint64_t drops_seen;     /* cms_nats_dropped when last looked */
    bool connected;
    bool ever_connected;
    /* the default resolver's requester; NULL with another resolver, or once closed */
    cms_request *req;
    cms_nats_sub *subs[MAX_EVENT_SUBJECTS];
    size_t nsubs;
    void (*closed)(void *arg);
    void *closed_arg;
    cms_counter *m_hits, *m_misses, *m_denied, *m_invalidations;
};

const char *cms_auth_strerror(cms_auth_err e)
{
    return cms_enum_text(err_names, CMS_AUTH_NERRORS, e);
}

static void set_state(cms_auth *a, auth_state to)
{
    a->state = (auth_state)cms_fsm_step(&auth_fsm, a->state, to, NULL);
}

bool cms_principal_has_role(const cms_principal *p, const char *role)
{
    for (int i = 0; p && i < p->nroles; i++)
        if (strcmp(p->roles[i], role) == 0)
            return true;
    return false;
}

static bool copy_field(char *dst, size_t cap, const char *src)
{
    size_t n = src ? strlen(src) : 0;
    if (n >= cap)
        return false;
    memcpy(dst, src ? src : "", n + 1);
    return true;
}

bool cms_principal_from_pb(const Cms__V1__Principal *pb, cms_principal *out)
{
    cms_principal p;
    memset(&p, 0, sizeof p);
    cms_uuid u;
    if (pb == NULL || !cms_uuid_parse(pb->identity_id, strlen(pb->identity_id), &u) ||
        !cms_uuid_parse(pb->credential_id, strlen(pb->credential_id), &u) ||
        !copy_field(p.identity_id, sizeof p.identity_id, pb->identity_id) ||
        !copy_field(p.credential_id, sizeof p.credential_id, pb->credential_id) ||
        !copy_field(p.name, sizeof p.name, pb->name) ||
        !copy_field(p.type, sizeof p.type, pb->type) ||
        !copy_field(p.status, sizeof p.status, pb->status) || pb->n_roles > CMS_AUTH_MAX_ROLES)
        return false;
    for (size_t i = 0; i < pb->n_roles; i++)
        if (!copy_field(p.roles[i], CMS_AUTH_ROLE_MAX, pb->roles[i]))
            return false;
    p.nroles = (int)pb->n_roles;
    p.expires_at_us = pb->expires_at_us;
    *out = p;
    return true;
}

void cms_principal_to_pb(const cms_principal *p, Cms__V1__Principal *pb,
                         char *roles[CMS_AUTH_MAX_ROLES])
{
    cms__v1__principal__init(pb);
    pb->identity_id = (char *)p->identity_id;
    pb->credential_id = (char *)p->credential_id;
    pb->name = (char *)p->name;
    pb->type = (char *)p->type;
    pb->status = (char *)p->status;
    for (int i = 0; i < p->nroles; i++)
        roles[i] = (char *)p->roles[i];
    pb->roles = roles;
    pb->n_roles = (size_t)p->nroles;
    pb->expires_at_us = p->expires_at_us;
}

/* ---- the cache ---- */

static void digest_of(const cms_auth *a, const char *key, size_t len, uint8_t out[DIGEST_BYTES])
{
    crypto_generichash(out, DIGEST_BYTES, (const unsigned char *)key, len, a->hash_key,
                       sizeof a->hash_key);
}

static void entry_drop(cms_auth *a, entry *e)
{
    HASH_DEL(a->cache, e);
    a->ncache--;
    sodium_memzero(e, sizeof *e);
    free(e);
}

static void cache_put(cms_auth *a, const uint8_t digest[DIGEST_BYTES], const cms_principal *p)
{
    int64_t left_ms = (p->expires_at_us - cms_bus_now_us()) / 1000;
    if (left_ms <= 0)
        return;
    entry *e = NULL;
    HASH_FIND(hh, a->cache, digest, DIGEST_BYTES, e);
    if (e)
        entry_drop(a, e);
    /* the oldest first: uthash iterates in insertion order */
    while (a->ncache >= a->o.max_entries && a->cache)
        entry_drop(a, a->cache);
    e = calloc(1, sizeof *e);
    if (e == NULL)
        return;
    memcpy(e->digest, digest, DIGEST_BYTES);
    e->p = *p;
    e->until_ms = uv_now(a->loop) + (uint64_t)(left_ms < a->o.ttl_ms ? left_ms : a->o.ttl_ms);
    HASH_ADD(hh, a->cache, digest, DIGEST_BYTES, e);
    a->ncache++;
}

static void settle(cms_auth *a)
{
    a->gen++;
    if (a->o.settle_ms > 0)
        a->quiet_until_ms = uv_now(a->loop) + (uint64_t)a->o.settle_ms;
}

void cms_auth_invalidate(cms_auth *a, const char *id)
{
    entry *e, *tmp;
    settle(a);
    cms_counter_add(a->m_invalidations, 1);
    HASH_ITER(hh, a->cache, e, tmp)
    {
        if (strcmp(e->p.identity_id, id) == 0 || strcmp(e->p.credential_id, id) == 0)
            entry_drop(a, e);
    }
}

void cms_auth_clear(cms_auth *a)
{
    settle(a);
    while (a->cache)
        entry_drop(a, a->cache);
}

void cms_auth_nats_state(cms_auth *a, bool connected)
{
    if (a == NULL || a->connected == connected)
        return;
    a->connected = connected;
    /* the first connection missed nothing: nothing was subscribed before */
    if (connected && !a->ever_connected) {
        a->ever_connected = true;
        return;
    }
    cms_auth_clear(a);
}

size_t cms_auth_cached(const cms_auth *a)
{
    return a ? a->ncache : 0;
}

/* ---- lookups ---- */

/* The last thing a caller does with a: closed may free it. */
static void maybe_closed(cms_auth *a)
{
    if (a->state == AUTH_CLOSING && a->nflights == 0 && a->req == NULL && a->dispatching == 0) {
        set_state(a, AUTH_CLOSED);
        if (a->closed)
            a->closed(a->closed_arg);
    }
}

static void resolved(void *arg, cms_auth_err code, const cms_principal *p)
{
    flight *f = arg;
    cms_auth *a = f->a;
    HASH_DEL(a->flights, f);
    a->nflights--;
    sodium_memzero(f->key, sizeof f->key);
    /* an answer that is no longer true is a refusal, whoever gave it */
    if (code == CMS_AUTH_OK &&
        (p == NULL || strcmp(p->status, "active") != 0 || p->expires_at_us <= cms_bus_now_us()))
        code = CMS_AUTH_DENIED;
    if (code != CMS_AUTH_OK && code != CMS_AUTH_DENIED)
        code = CMS_AUTH_UNAVAILABLE; /* a resolver never answers more than these three */
    if (code == CMS_AUTH_OK && f->gen == a->gen && a->connected && a->state == AUTH_OPEN &&
        uv_now(a->loop) >= a->quiet_until_ms)
        cache_put(a, f->digest, p);
    if (code == CMS_AUTH_DENIED)
        cms_counter_add(a->m_denied, (uint64_t)f->nwaiters);
    /* the waiters may resolve again (and start a new flight of this key),
     * or close: then closed waits until no waiter call is on the stack,
     * since its callback may free a */
    a->dispatching++;
    for (size_t i = 0; i < f->nwaiters; i++)
        f->waiters[i].cb(f->waiters[i].arg, code, code == CMS_AUTH_OK ? p : NULL);
    a->dispatching--;
    free(f->waiters);
    free(f);
    maybe_closed(a);
}

void cms_auth_resolve(cms_auth *a, const char *key, cms_auth_cb cb, void *arg)
{
    size_t len = key ? strnlen(key, CMS_APIKEY_LEN + 1) : 0;
    cms_uuid id;
    uint8_t secret[CMS_APIKEY_SECRET_BYTES];
    if (len != CMS_APIKEY_LEN || !cms_apikey_parse(key, len, &id, secret)) {
        cms_counter_add(a->m_denied, 1);
        cb(arg, CMS_AUTH_DENIED, NULL);
        return;
    }
    sodium_memzero(secret, sizeof secret);
    if (a->state != AUTH_OPEN) {
        cb(arg, CMS_AUTH_UNAVAILABLE, NULL);
        return;
    }
    /* a dropped core message may have been an invalidation */
    uint64_t drops = cms_nats_dropped(a->nats);
    if (drops != a->drops_seen) {
        a->drops_seen = drops;
        cms_auth_clear(a);
    }
    uint8_t digest[DIGEST_BYTES];
    digest_of(a, key, len, digest);
    entry *e = NULL;
    HASH_FIND(hh, a->cache, digest, DIGEST_BYTES, e);
    if (e && (e->until_ms <= uv_now(a->loop) || e->p.expires_at_us <= cms_bus_now_us())) {
        entry_drop(a, e);
        e = NULL;
    }
    if (e) {
        cms_counter_add(a->m_hits, 1);
        cb(arg, CMS_AUTH_OK, &e->p);
        return;
    }
    cms_counter_add(a->m_misses, 1);
    flight *f = NULL;
    HASH_FIND(hh, a->flights, digest, DIGEST_BYTES, f);
    bool fresh = f == NULL;
    if (fresh) {
        f = calloc(1, sizeof *f);
        if (f == NULL) {
            cb(arg, CMS_AUTH_UNAVAILABLE, NULL);
            return;
        }
        memcpy(f->digest, digest, DIGEST_BYTES);
        memcpy(f->key, key, len + 1);
        f->a = a;
        f->gen = a->gen;
    }
    if (f->nwaiters == f->cap) {
        size_t cap = f->cap ? f->cap * 2 : 4;
        waiter *w = cap <= MAX_WAITERS ? realloc(f->waiters, cap * sizeof *w) : NULL;
        if (w == NULL) {
            if (fresh) {
                sodium_memzero(f->key, sizeof f->key);
                free(f);
            }
            cb(arg, CMS_AUTH_UNAVAILABLE, NULL);
            return;
        }
        f->waiters = w;
        f->cap = cap;
    }
    f->waiters[f->nwaiters++] = (waiter){cb, arg};
    if (!fresh)
        return;
    HASH_ADD(hh, a->flights, digest, DIGEST_BYTES, f);
    a->nflights++;
    a->o.resolver(a->o.resolver_arg, f->key, resolved, f);
}

/* ---- the default resolver: ask cms-identity ---- */

typedef struct remote {
    cms_auth_cb done;
    void *arg;
} remote;

static void remote_answered(void *arg, cms_request_err err, const void *data, size_t len)
{
    remote *r = arg;
    cms_auth_err code = CMS_AUTH_UNAVAILABLE;
    cms_principal p;
    Cms__V1__Reply *rep = NULL;
    Cms__V1__Principal *pb = NULL;
    if (err == CMS_REQUEST_OK)
        rep = cms__v1__reply__unpack(NULL, len, data);
    if (rep && rep->outcome_case == CMS__V1__REPLY__OUTCOME_ERROR) {
        if (rep->error->code == CMS__V1__ERROR_CODE__PERMISSION_DENIED)
            code = CMS_AUTH_DENIED;
    } else if (rep && rep->outcome_case == CMS__V1__REPLY__OUTCOME_RESULT) {
        pb = cms__v1__principal__unpack(NULL, rep->result.len, rep->result.data);
        if (pb && cms_principal_from_pb(pb, &p))
            code = CMS_AUTH_OK;
    }
    if (code == CMS_AUTH_UNAVAILABLE)
        cms_log_warn("API key not resolved", "{s:s}", "error",
                     err != CMS_REQUEST_OK ? cms_request_strerror(err) : "unexpected reply");
    r->done(r->arg, code, code == CMS_AUTH_OK ? &p : NULL);
    if (pb)
        cms__v1__principal__free_unpacked(pb, NULL);
    if (rep)
        cms__v1__reply__free_unpacked(rep, NULL);
    free(r);
}

static void remote_resolve(void *arg, const char *key, cms_auth_cb done, void *done_arg)
{
    cms_auth *a = arg;
    Cms__V1__Authenticate m = CMS__V1__AUTHENTICATE__INIT;
    uint8_t buf[CMS_APIKEY_LEN + 16];
    m.api_key = (char *)key;
    size_t len = cms__v1__authenticate__pack(&m, buf);
    remote *r = calloc(1, sizeof *r);
    cms_request_err rc = r ? cms_request_send(a->req, a->subject, NULL, buf, len, a->o.timeout_ms,
                                              remote_answered, r)
                           : CMS_REQUEST_ENOMEM;
    sodium_memzero(buf, sizeof buf);
    if (rc != CMS_REQUEST_OK) {
        free(r);
        done(done_arg, CMS_AUTH_UNAVAILABLE, NULL);
        return;
    }
    r->done = done;
    r->arg = done_arg;
}

/* ---- invalidating events ---- */

static void on_event(void *arg, cms_nats_msg *m)
{
    cms_auth *a = arg;
    Cms__V1__Envelope *env =
        cms__v1__envelope__unpack(NULL, cms_nats_msg_len(m), cms_nats_msg_data(m));
    if (env == NULL) {
        /* cannot tell whom it concerns: trust nothing cached */
        cms_auth_clear(a);
    } else {
        for (size_t i = 0; i < a->ntypes; i++) {
            if (strcmp(env->event_type, a->types[i]) == 0) {
                cms_auth_invalidate(a, env->resource_id);
                break;
            }
        }
    }
    if (env)
        cms__v1__envelope__free_unpacked(env, NULL);
    cms_nats_msg_destroy(m);
}

/* ---- life ---- */

static void unsubscribe_all(cms_auth *a)
{
    for (size_t i = 0; i < a->nsubs; i++)
        cms_nats_unsubscribe(a->subs[i]);
    a->nsubs = 0;
}

cms_auth_err cms_auth_create(uv_loop_t *loop, cms_nats *nats, const cms_auth_options *o,
                             cms_auth **out)
{
    cms_auth_err rc = CMS_AUTH_OK;
    cms_auth *a = NULL;
    if (loop == NULL || nats == NULL || out == NULL || sodium_init() < 0 ||
        (o != NULL && o->resolver == NULL &&
         (o->authenticate_subject == NULL || *o->authenticate_subject == '\0'))) {
        rc = CMS_AUTH_EINVAL;
        goto out;
    }
    if ((a = calloc(1, sizeof *a)) == NULL) { /* AUTH_OPEN */
        rc = CMS_AUTH_ENOMEM;
        goto out;
    }
    a->loop = loop;
    a->nats = nats;
    if (o)
        a->o = *o;
    if (a->o.ttl_ms <= 0)
        a->o.ttl_ms = DEFAULT_TTL_MS;
    if (a->o.max_entries == 0)
        a->o.max_entries = DEFAULT_MAX_ENTRIES;
    if (a->o.timeout_ms <= 0)
        a->o.timeout_ms = DEFAULT_TIMEOUT_MS;
    if (a->o.settle_ms == 0)
        a->o.settle_ms = DEFAULT_SETTLE_MS;
    if (a->o.resolver == NULL) {
        int n = snprintf(a->subject, sizeof a->subject, "%s", a->o.authenticate_subject);
        if (n < 0 || (size_t)n >= sizeof a->subject) {
            rc = CMS_AUTH_EINVAL;
            goto out;
        }
    }
    a->o.authenticate_subject = a->subject;
    for (size_t i = 0; a->o.event_types && a->o.event_types[i]; i++) {
        if (i == MAX_EVENT_TYPES ||
            snprintf(a->types[i], NAME_MAX_LEN, "%s", a->o.event_types[i]) >= NAME_MAX_LEN) {
            rc = CMS_AUTH_EINVAL;
            goto out;
        }
        a->ntypes++;
    }
    a->o.event_types = NULL; /* copied */
    randombytes_buf(a->hash_key, sizeof a->hash_key);
    a->connected = cms_nats_is_connected(nats);
    a->ever_connected = a->connected;
    a->drops_seen = cms_nats_dropped(nats);
    cms_metrics *mx = cms_metrics_default();
    a->m_hits = cms_metrics_counter(mx, "cms_auth_cache_hits_total",
                                    "API keys answered from the cache", NULL);
    a->m_misses = cms_metrics_counter(mx, "cms_auth_cache_misses_total",
                                      "API keys that had to be resolved", NULL);
    a->m_denied = cms_metrics_counter(mx, "cms_auth_denied_total", "API keys refused", NULL);
    a->m_invalidations = cms_metrics_counter(mx, "cms_auth_invalidations_total",
                                             "Cache invalidations by events", NULL);
    for (size_t i = 0; a->o.event_subjects && a->o.event_subjects[i]; i++) {
        if (i == MAX_EVENT_SUBJECTS) {
            rc = CMS_AUTH_EINVAL;
            goto out;
        }
        if (cms_nats_subscribe(nats, a->o.event_subjects[i], NULL, on_event, a,
                               &a->subs[a->nsubs]) != 0) {
            rc = CMS_AUTH_ENATS;
            goto out;
        }
        a->nsubs++;
    }
    a->o.event_subjects = NULL; /* subscribed */
    if (a->o.resolver == NULL) {
        if (cms_request_create(loop, nats, &a->req) != CMS_REQUEST_OK) {
            rc = CMS_AUTH_ENATS;
            goto out;
        }
        a->o.resolver = remote_resolve;
        a->o.resolver_arg = a;
    }
    *out = a;
    a = NULL;
out:
    if (a != NULL) {
        unsubscribe_all(a);
        free(a);
    }
    return rc;
}

static void req_closed(void *arg)
{
    cms_auth *a = arg;
    cms_request_destroy(a->req);
    a->req = NULL;
    maybe_closed(a);
}

void cms_auth_close(cms_auth *a, void (*closed)(void *arg), void *arg)
{
    if (a == NULL || a->state != AUTH_OPEN)
        return;
    set_state(a, AUTH_CLOSING);
    a->closed = closed;
    a->closed_arg = arg;
    unsubscribe_all(a);
    cms_auth_clear(a);
    if (a->req != NULL) { /* the default resolver's requester: closed first */
        cms_request_close(a->req, req_closed, a);
        return;
    }
    maybe_closed(a);
}

void cms_auth_destroy(cms_auth *a)
{
    if (a == NULL)
        return;
    cms_auth_clear(a);
    sodium_memzero(a->hash_key, sizeof a->hash_key);
    free(a);
}
