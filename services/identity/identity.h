/* The commands of cms-identity and the API key resolver the whole service
 * authenticates with. */
#ifndef IDENTITY_IDENTITY_H
#define IDENTITY_IDENTITY_H

#include "apikey.h"
#include "auth.h"
#include "identity/validate.h"
#include "service.h"
#include "xenum.h"

#include <stdbool.h>
#include <stdint.h>

#define IDSVC_MAX_MEASUREMENTS 64
#define IDSVC_DEFAULT_AUTH_LOOKUPS 64
/* unknown credential ids remembered at most */
#define IDSVC_NEGATIVE_MAX 16384

#define IDSVC_ERRORS(X)                                                                            \
    X(IDSVC_OK, "ok")                                                                              \
    X(IDSVC_ENOMEM, "out of memory")                                                               \
    X(IDSVC_ESETUP, "a statement or verb could not be set up")

typedef enum { IDSVC_ERRORS(CMS_ENUM_ITEM) IDSVC_NERRORS } idsvc_err;
const char *idsvc_strerror(idsvc_err e);

typedef struct idsvc_options {
    uint8_t server_key[CMS_APIKEY_SERVER_KEY_BYTES];
    /* while the key is being rotated, the one before it: keys hashed with it
     * still authenticate (new ones are hashed with server_key only) */
    uint8_t previous_key[CMS_APIKEY_SERVER_KEY_BYTES];
    bool has_previous_key;
    /* the longest life of a credential of each type, in seconds */
    int64_t max_api_key_s, max_public_key_s, max_attestation_s;
    /* the enclave measurements accepted (lowercase hex) */
    char measurements[IDSVC_MAX_MEASUREMENTS][IDV_MEASUREMENT_MAX + 1];
    int nmeasurements;
    /* authentication: look-ups of credentials in flight at most (more are
     * answered UNAVAILABLE; 0: IDSVC_DEFAULT_AUTH_LOOKUPS), and how long
     * an id found not to exist is refused without looking again (0: not) */
    size_t max_auth_lookups;
    int64_t negative_ttl_ms;
} idsvc_options;

typedef struct idsvc idsvc;

/* The options are copied (and the caller's copy of the server key may then
 * be wiped). */
idsvc_err idsvc_create(const idsvc_options *o, idsvc **out) __attribute__((warn_unused_result));
/* From the spec's start: registers the verbs, prepares statements, starts
 * the expiry timer. */
idsvc_err idsvc_start(idsvc *s, cms_service *svc) __attribute__((warn_unused_result));
/* The spec's auth_resolver (arg: the idsvc). */
void idsvc_resolve(void *arg, const char *key, cms_auth_cb done, void *done_arg);
/* Drain: waits for the expiry round under way. */
void idsvc_drain(idsvc *s, void (*drained)(void *arg), void *arg);
void idsvc_destroy(idsvc *s); /* NULL-safe; wipes the key */

#endif
