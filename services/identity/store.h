/* The SQL of cms-identity's own tables that more than one program runs:
 * cms-identity itself, and cms-migrate, which creates the first admin the
 * way cms-identity creates any identity and issues any key.
 *
 * Each statement that changes something writes its event in the same
 * statement (outbox.h's CMS_OUTBOX_SQL_FROM): its parameters $1..$4 are the
 * event's, its own start at $5. */
#ifndef IDENTITY_STORE_H
#define IDENTITY_STORE_H

#include "outbox.h"

/* SQL reads best as written */
// clang-format off

/* Microseconds since the epoch of a timestamptz column, as int8. */
#define IDSQL_US(col) CMS_PG_SQL_US(col)

/* What a statement returns of an identity and of a credential. */
#define IDSQL_IDENTITY_COLS                                                                        \
    "id::text, name, type::text, status::text, coalesce(metadata, '{}'::jsonb)::text, "            \
    IDSQL_US("created_at") ", " IDSQL_US("updated_at")
#define IDSQL_CREDENTIAL_COLS                                                                      \
    "id::text, identity_id::text, type::text, value, " IDSQL_US("expires_at") ", "                 \
    IDSQL_US("created_at") ", coalesce(" IDSQL_US("revoked_at") ", 0), "                           \
    "coalesce(metadata, '{}'::jsonb)::text"

/* Whether the identity idparam holds a valid (unrevoked, unexpired)
 * attestation. */
#define IDSQL_VALID_ATTESTATION(idparam)                                                           \
    "EXISTS (SELECT 1 FROM credentials c WHERE c.identity_id = " idparam                           \
    " AND c.type = 'attestation' AND c.revoked_at IS NULL AND c.expired_at IS NULL "               \
    "AND c.expires_at > now())"

/* The last way in of the admins. Whatever may take away an admin's last
 * valid API key, or the last admin holding one (a suspension, a
 * deactivation, a revocation), first takes this lock ("cms-admn" in ASCII)
 * in its transaction, then checks in its own statement: a statement of a
 * READ COMMITTED transaction sees what committed before it began, so the
 * change that held the lock before is seen, and two admins suspending each
 * other at once cannot both win. */
#define IDSQL_ADMIN_LOCK "SELECT pg_advisory_xact_lock(7164509220961021294)"

/* Whether an active admin holds a valid API key, with cond on a (the
 * identity) and k (the key). */
#define IDSQL_ADMIN_KEY_WHERE(cond)                                                                \
    "EXISTS (SELECT 1 FROM identities a JOIN credentials k ON k.identity_id = a.id "              \
    "WHERE a.status = 'active' AND a.metadata -> 'roles' ? 'admin' AND k.type = 'api_key' "       \
    "AND k.revoked_at IS NULL AND k.expired_at IS NULL AND k.expires_at > now() AND " cond ")"

/* Whether the identity idparam is the only active admin holding a valid
 * API key. */
#define IDSQL_LAST_ADMIN(idparam)                                                                  \
    "(" IDSQL_ADMIN_KEY_WHERE("a.id = " idparam) " AND NOT "                                      \
    IDSQL_ADMIN_KEY_WHERE("a.id <> " idparam) ")"

/* Whether the credential credparam is the only valid API key of any active
 * admin. */
#define IDSQL_LAST_ADMIN_KEY(credparam)                                                            \
    "(" IDSQL_ADMIN_KEY_WHERE("k.id = " credparam) " AND NOT "                                    \
    IDSQL_ADMIN_KEY_WHERE("k.id <> " credparam) ")"

/* Whether the identity of this row (metadata) has the role admin. */
#define IDSQL_IS_ADMIN(metadata) "coalesce(" metadata " -> 'roles' ? 'admin', false)"

/* A new identity and identity.created: $5 id, $6 name, $7 type, $8 status,
 * $9 metadata. Returns IDSQL_IDENTITY_COLS. */
#define IDSQL_CREATE                                                                               \
    "WITH i AS (INSERT INTO identities (id, name, type, status, metadata) "                         \
    "VALUES ($5::uuid, $6, $7::identity_type, $8::identity_status, $9::jsonb) "                   \
    "RETURNING " IDSQL_IDENTITY_COLS "), o AS (" CMS_OUTBOX_SQL_FROM("i") ") SELECT * FROM i"

/* A new credential and credential.issued, unless the identity is
 * suspended (then no row): $5 id, $6 identity, $7 type, $8 value (a key's
 * hash, a public key, a measurement), $9 expiry (Unix microseconds), $10
 * metadata, $11 signer (attestations; NULL otherwise). Returns
 * IDSQL_CREDENTIAL_COLS. */
#define IDSQL_ISSUE                                                                                \
    "WITH c AS (INSERT INTO credentials (id, identity_id, type, value, expires_at, metadata, "     \
    "signer) SELECT $5::uuid, i.id, $7::credential_type, $8, "                                     \
    "'epoch'::timestamptz + $9::int8 * interval '1 microsecond', $10::jsonb, $11 "                 \
    "FROM identities i WHERE i.id = $6::uuid AND i.status <> 'suspended' "                         \
    "RETURNING " IDSQL_CREDENTIAL_COLS "), o AS (" CMS_OUTBOX_SQL_FROM("c") ") SELECT * FROM c"

/* An enclave whose last valid attestation went (revoked or expired) becomes
 * inactive, with its status_changed event, in the same transaction: $5 the
 * identity. No row, no event. */
#define IDSQL_ENCLAVE_LAPSE                                                                        \
    "WITH u AS (UPDATE identities SET status = 'inactive', updated_at = now() "                    \
    "WHERE id = $5::uuid AND type = 'enclave' AND status = 'active' AND NOT "                      \
    IDSQL_VALID_ATTESTATION("$5::uuid") " RETURNING id), "                                         \
    "o AS (" CMS_OUTBOX_SQL_FROM("u") ") SELECT count(*) FROM u"
// clang-format on

#endif
