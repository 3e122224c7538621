/* cms-contracts: contracts between a data provider and a data consumer,
 * their lifecycle, the parties' Ed25519 signatures over their canonical
 * form, and party-only access, enforced by the service and, through forced
 * row-level security on the acting identity, by PostgreSQL.
 *
 * Verbs (cms.cmd.contracts.<verb>, proto/cms/v1/contracts.proto): create,
 * update, get, list, canonical (contracts.c); submit, activate, complete,
 * terminate, amend (lifecycle.c); sign (signing.c). Identity status and
 * public keys come from identity and credential events (parties.c); the
 * timer activates and expires contracts when they come due (schedule.c). */
#ifndef CONTRACTS_H
#define CONTRACTS_H

#include "service.h"
#include "xenum.h"

typedef struct ctsvc ctsvc;

#define CTSVC_ERRORS(X)                                                                            \
    X(CTSVC_OK, "ok")                                                                              \
    X(CTSVC_ENOMEM, "out of memory")                                                               \
    X(CTSVC_ESETUP, "the commands or the timer could not be set up")

typedef enum { CTSVC_ERRORS(CMS_ENUM_ITEM) CTSVC_NERRORS } ctsvc_err;
const char *ctsvc_strerror(ctsvc_err e);

ctsvc_err ctsvc_create(ctsvc **out) __attribute__((warn_unused_result));
/* Registers the verbs and starts the timer (from the spec's start). */
ctsvc_err ctsvc_start(ctsvc *s, cms_service *svc) __attribute__((warn_unused_result));
/* Stops the timer, then drained(arg). */
void ctsvc_drain(ctsvc *s, void (*drained)(void *arg), void *arg);
void ctsvc_destroy(ctsvc *s); /* NULL-safe */

/* The consumers' handlers (parties.c), called with the spec's arg: the
 * ctsvc. */
cms_consumer_verdict ctsvc_on_identity(void *arg, const Cms__V1__Envelope *env, cms_pg_job *job,
                                       const char **reason);
cms_consumer_verdict ctsvc_on_credential(void *arg, const Cms__V1__Envelope *env, cms_pg_job *job,
                                         const char **reason);

#endif
