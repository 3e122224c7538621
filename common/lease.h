/* Leases (table leases): one holder at a time of a named role among the
 * replicas of a service. The holder takes or renews its lease in a
 * statement of its own jobs, and fences what it writes under it with a
 * lead statement that fails the job unless it still holds it; a graceful
 * stop releases it; a lease whose holder died expires and is taken over.
 * The statements are added to the caller's jobs: this module holds no
 * state but the lease's name and holder id. */
#ifndef CMS_LEASE_H
#define CMS_LEASE_H

#include "pg.h"
#include "uuid.h"

#include <stdbool.h>
#include <stdint.h>

#define CMS_LEASE_NAME_MAX 160

typedef struct cms_lease {
    char name[CMS_LEASE_NAME_MAX];
    char holder[CMS_UUID_STRLEN + 1]; /* this process's id: a UUIDv7 made at init */
    char ttl_ms[24];
} cms_lease;

/* What a take found. */
typedef enum {
    CMS_LEASE_NOT_HELD,  /* another live holder has it */
    CMS_LEASE_TAKEN,     /* it was free (never held, or released): ours now */
    CMS_LEASE_RENEWED,   /* it was ours already */
    CMS_LEASE_TAKEN_OVER /* another holder's had expired: ours now */
} cms_lease_take_result;

/* name: e.g. "outbox:identity"; ttl_ms: how long a take or renewal holds.
 * False if name is too long. */
bool cms_lease_init(cms_lease *l, const char *name, int64_t ttl_ms)
    __attribute__((warn_unused_result));
/* Adds the take-or-renew statement to job (a cms_pg_err). */
int cms_lease_add_take(const cms_lease *l, cms_pg_job *job) __attribute__((warn_unused_result));
/* What that statement's result says (binary or text results alike). */
cms_lease_take_result cms_lease_took(const cms_lease *l, const PGresult *r);
/* Adds, as a lead statement, the check that fails the job (SQLSTATE CL001)
 * unless this holder holds the lease, which then cannot change hands
 * until the job ends. */
int cms_lease_add_check(const cms_lease *l, cms_pg_job *job) __attribute__((warn_unused_result));
/* Whether a failed job failed on that check. */
bool cms_lease_lost(const cms_pg_result *res);
/* Adds the release (a no-op unless this holder has it). */
int cms_lease_add_release(const cms_lease *l, cms_pg_job *job) __attribute__((warn_unused_result));

#endif
