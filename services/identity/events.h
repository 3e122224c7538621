/* The events of cms-identity (source "identity"), packed for the outbox,
 * and the SQL they share. */
#ifndef IDENTITY_EVENTS_H
#define IDENTITY_EVENTS_H

#include "event.h"

#include <stdint.h>

#define IDEV_SOURCE "identity"
#define IDEV_SYSTEM_ACTOR "00000000-0000-7000-8000-000000000001"

/* SQL reads best as written */
// clang-format off
/* Microseconds since the epoch of a timestamptz column, as int8. */
#define IDSQL_US(col) "(extract(epoch from " col ") * 1000000)::int8"

/* Whether the identity idparam holds a valid (unrevoked, unexpired)
 * attestation. */
#define IDSQL_VALID_ATTESTATION(idparam)                                                           \
    "EXISTS (SELECT 1 FROM credentials c WHERE c.identity_id = " idparam                           \
    " AND c.type = 'attestation' AND c.revoked_at IS NULL AND c.expired_at IS NULL "               \
    "AND c.expires_at > now())"

/* The outbox row of an event (id p1, subject p2, payload p3), one per row
 * of the data-modifying CTE named cte: no change, no event. */
#define IDSQL_OUTBOX_FROM(cte, p1, p2, p3)                                                         \
    "INSERT INTO outbox (source, event_id, subject, payload) SELECT '" IDEV_SOURCE "', " p1        \
    "::uuid, " p2 ", " p3 " FROM " cte

/* An enclave whose last valid attestation went (revoked or expired) becomes
 * inactive, with its status_changed event, in the same transaction: $1 the
 * identity, $2..$4 the event (id, subject, payload). No row, no event. */
#define IDSQL_ENCLAVE_LAPSE                                                                        \
    "WITH u AS (UPDATE identities SET status = 'inactive', updated_at = now() "                    \
    "WHERE id = $1 AND type = 'enclave' AND status = 'active' AND NOT "                            \
    IDSQL_VALID_ATTESTATION("$1") " RETURNING id), "                                               \
    "o AS (" IDSQL_OUTBOX_FROM("u", "$2", "$3", "$4") ") SELECT count(*) FROM u"
// clang-format on

int idev_identity_created(const char *id, const char *name, const char *type, const char *status,
                          const char *actor, const char *corr, cms_event *out)
    __attribute__((warn_unused_result));
int idev_status_changed(const char *id, const char *old_status, const char *new_status,
                        const char *reason, const char *actor, const char *corr, cms_event *out)
    __attribute__((warn_unused_result));
int idev_credential_issued(const char *cred_id, const char *identity_id, const char *type,
                           int64_t expires_at_us, const char *actor, const char *corr,
                           cms_event *out) __attribute__((warn_unused_result));
int idev_credential_revoked(const char *cred_id, const char *identity_id, const char *reason,
                            const char *actor, const char *corr, cms_event *out)
    __attribute__((warn_unused_result));
int idev_credential_expired(const char *cred_id, const char *identity_id, int64_t expires_at_us,
                            cms_event *out) __attribute__((warn_unused_result));

#endif
