/* Who is acting: an API key resolved to the identity behind it, with a
 * short-lived cache.
 *
 * A key is resolved by a resolver: by default a request on the subject the
 * options name (cms-identity's authenticate verb: bus.h states that
 * contract, and the service runtime passes it in); cms-identity itself
 * passes one that reads its own tables. A resolved key is trusted for at
 * most ttl_ms (and never past its credential's expiry), and dropped at once
 * when an event of one of the types the options name says its identity or
 * credential changed (core subscriptions to the subjects the options
 * name). Events missed while
 * NATS was disconnected, or dropped from a full hand-off queue, cannot be
 * told apart, so a disconnection or a drop empties the cache. A lookup
 * that was under way when an invalidation arrived is answered but not
 * cached, and for a while (settle_ms) after any invalidation nothing is cached: a
 * second cms-identity replica may still answer from its own cache until
 * the same event reaches it.
 *
 * Concurrent lookups of one key share a single resolution (up to 256
 * waiting on one; more get UNAVAILABLE). An answer whose credential has
 * already expired is a refusal. Keys that are not of the API key form are
 * refused without asking anyone. The cache holds keyed BLAKE2b digests of
 * keys, never keys.
 *
 * Everything runs on the loop thread. */
#ifndef CMS_AUTH_H
#define CMS_AUTH_H

#include "cms/v1/identity.pb-c.h"
#include "nats.h"
#include "uuid.h"
#include "xenum.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define CMS_AUTH_MAX_ROLES 8
#define CMS_AUTH_ROLE_MAX 32

typedef struct cms_auth cms_auth;

/* What a resolution answers, and what cms_auth_create can fail with. */
#define CMS_AUTH_ERRORS(X)                                                                         \
    X(CMS_AUTH_OK, "ok")                                                                           \
    X(CMS_AUTH_DENIED, "the key is not accepted")                                                  \
    X(CMS_AUTH_UNAVAILABLE, "nobody could answer in time")                                         \
    X(CMS_AUTH_EINVAL, "invalid argument")                                                         \
    X(CMS_AUTH_ENOMEM, "out of memory")                                                            \
    X(CMS_AUTH_ENATS, "a subscription could not be made")

typedef enum { CMS_AUTH_ERRORS(CMS_ENUM_ITEM) CMS_AUTH_NERRORS } cms_auth_err;
const char *cms_auth_strerror(cms_auth_err e);

typedef struct cms_principal {
    char identity_id[CMS_UUID_STRLEN + 1];
    char credential_id[CMS_UUID_STRLEN + 1];
    char name[256];
    char type[16];   /* user, machine, enclave */
    char status[16]; /* always "active" for a principal that was let in */
    char roles[CMS_AUTH_MAX_ROLES][CMS_AUTH_ROLE_MAX];
    int nroles;
    int64_t expires_at_us; /* the credential's expiry, Unix microseconds */
} cms_principal;

bool cms_principal_has_role(const cms_principal *p, const char *role);

/* The wire form (Principal, the reply of authenticate) and back. from_pb
 * is false when a field does not fit or is not what it must be. to_pb
 * points pb's strings into p and roles into the caller's array
 * (CMS_AUTH_MAX_ROLES entries): p and roles must outlive pb's use. */
bool cms_principal_from_pb(const Cms__V1__Principal *pb, cms_principal *out)
    __attribute__((warn_unused_result));
void cms_principal_to_pb(const cms_principal *p, Cms__V1__Principal *pb,
                         char *roles[CMS_AUTH_MAX_ROLES]);

/* res: CMS_AUTH_OK with p (valid during the call only), CMS_AUTH_DENIED
 * (the key is not accepted: unknown, malformed, revoked, expired, or its
 * identity is not active: callers must not say which), or
 * CMS_AUTH_UNAVAILABLE (nobody could answer in time; the caller may
 * retry). */
typedef void (*cms_auth_cb)(void *arg, cms_auth_err res, const cms_principal *p);

/* Resolves key (NUL-terminated, valid during the call only) and calls
 * done(done_arg, ...) exactly once, maybe before returning. */
typedef void (*cms_auth_resolver)(void *resolver_arg, const char *key, cms_auth_cb done,
                                  void *done_arg);

typedef struct cms_auth_options {
    int64_t ttl_ms;     /* default 5000 (0 or less: the default) */
    size_t max_entries; /* default 65536; the oldest go first */
    int64_t timeout_ms; /* the default resolver's request timeout; default 2000 */
    /* The default resolver asks this subject (required without a resolver). */
    const char *authenticate_subject;
    cms_auth_resolver resolver; /* NULL: the default resolver */
    void *resolver_arg;
    /* Subjects of the events that invalidate (NULL-terminated; NULL: none),
     * and the types among them that invalidate their resource id: any
     * other event on those subjects is passed over, one that cannot be
     * read empties the cache. */
    const char *const *event_subjects;
    const char *const *event_types;
    /* How long after an invalidation nothing is cached: default 1000 ms;
     * negative: no such pause (tests of the cache itself). */
    int64_t settle_ms;
} cms_auth_options;

cms_auth_err cms_auth_create(uv_loop_t *loop, cms_nats *nats, const cms_auth_options *o,
                             cms_auth **out) __attribute__((warn_unused_result));

/* key: the bearer token as received (NUL-terminated). */
void cms_auth_resolve(cms_auth *a, const char *key, cms_auth_cb cb, void *arg);

/* Drops every cached key of this identity or credential (UUID text). */
void cms_auth_invalidate(cms_auth *a, const char *id);
void cms_auth_clear(cms_auth *a);
/* Tell it about the NATS connection: while disconnected nothing new is
 * cached, and on every change the cache is emptied. */
void cms_auth_nats_state(cms_auth *a, bool connected);

size_t cms_auth_cached(const cms_auth *a);

/* Lookups under way are answered as they complete (the default resolver's
 * with UNAVAILABLE); then closed(arg), which may destroy a — never while a
 * callback of a is on the stack. */
void cms_auth_close(cms_auth *a, void (*closed)(void *arg), void *arg);
void cms_auth_destroy(cms_auth *a); /* after closed; NULL-safe */

#endif
