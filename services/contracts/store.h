/* The SQL of cms-contracts' tables that its files share. Each statement
 * that changes something writes its event in the same statement
 * (outbox.h): the event's parameters first, the statement's own after. */
#ifndef CONTRACTS_STORE_H
#define CONTRACTS_STORE_H

#include "outbox.h"

/* SQL reads best as written */
// clang-format off

/* What a statement returns of a contract (CTCOL_* are the columns). */
#define CTSQL_COLS                                                                                 \
    "id::text, title, coalesce(description, ''), provider_id::text, consumer_id::text, "           \
    "status::text, terms::text, coalesce(signatures, '{}'::jsonb)::text, "                         \
    "coalesce(metadata, '{}'::jsonb)::text, " CMS_PG_SQL_US("created_at") ", "                     \
    CMS_PG_SQL_US("updated_at") ", coalesce(content_hash, ''), "                                   \
    "coalesce(" CMS_PG_SQL_US("starts_at") ", 0), coalesce(" CMS_PG_SQL_US("ends_at") ", 0), "     \
    "coalesce(supersedes::text, ''), coalesce(ended_reason, ''), "                                 \
    "coalesce((terms #>> '{privacy,max_epsilon}')::float8, 0), "                                   \
    "coalesce((terms #>> '{privacy,delta}')::float8, 0)"
enum {
    CTCOL_ID, CTCOL_TITLE, CTCOL_DESCRIPTION, CTCOL_PROVIDER, CTCOL_CONSUMER, CTCOL_STATUS,
    CTCOL_TERMS, CTCOL_SIGNATURES, CTCOL_METADATA, CTCOL_CREATED, CTCOL_UPDATED, CTCOL_HASH,
    CTCOL_STARTS, CTCOL_ENDS, CTCOL_SUPERSEDES, CTCOL_ENDED_REASON, CTCOL_MAX_EPSILON, CTCOL_DELTA,
    CTCOL_N
};

/* The first statement of every job that touches contracts: who acts
 * ($1 the identity, $2 'on' for an admin or an auditor), for the rest of
 * the transaction; the row-level security of contracts reads them. */
#define CTSQL_ACTOR                                                                                \
    "SELECT set_config('cms.actor', $1, true), set_config('cms.actor_all', $2, true)"
/* The timer's: it sees the contracts that are due, and nothing else. */
#define CTSQL_TIMER "SELECT set_config('cms.timer', 'on', true)"

/* A party's status as cms-contracts heard of it; NULL if it has not. */
#define CTSQL_PARTY_STATUS(idparam)                                                                \
    "(SELECT status::text FROM contract_parties WHERE identity_id = " idparam ")"

/* Activation ($13 the contract): signed -> active between its start and its
 * end; an amendment's predecessor ends with it, completed if it was active,
 * terminated if it was only signed. Events: $1..$4 contract.activated,
 * $5..$8 the predecessor's contract.completed, $9..$12 its
 * contract.terminated (each written only if its change happened). By a
 * party (lifecycle.c) and by the timer (schedule.c). */
#define CTSQL_ACTIVATE                                                                             \
    "WITH u AS (UPDATE contracts SET status = 'active', updated_at = now() "                       \
    "WHERE id = $13::uuid AND status = 'signed' AND starts_at <= now() AND ends_at > now() "       \
    "RETURNING " CTSQL_COLS ", supersedes AS sup), "                                               \
    "c AS (UPDATE contracts SET status = 'completed', ended_reason = 'superseded', "               \
    "updated_at = now() WHERE id = (SELECT sup FROM u) AND status = 'active' RETURNING id), "      \
    "t AS (UPDATE contracts SET status = 'terminated', ended_reason = 'superseded', "              \
    "updated_at = now() WHERE id = (SELECT sup FROM u) AND status = 'signed' RETURNING id), "      \
    "o1 AS (" CMS_OUTBOX_SQL_FROM_AT("u", "1", "2", "3", "4") " RETURNING seq), "                  \
    "o2 AS (" CMS_OUTBOX_SQL_FROM_AT("c, o1", "5", "6", "7", "8") "), "                            \
    "o3 AS (" CMS_OUTBOX_SQL_FROM_AT("t, o1", "9", "10", "11", "12") ") SELECT * FROM u"

// clang-format on

#endif
