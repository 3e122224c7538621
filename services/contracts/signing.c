/* sign: a party's Ed25519 signature over the SHA-256 of the contract's
 * canonical form, verified against that party's public_key credential as
 * cms-contracts heard of it (active and unexpired now), stored in
 * signatures under the party's side. The second side's signature makes the
 * contract signed. A transition: the write's conditions are the state read
 * (in review, that side unsigned, the other side as read, the same content,
 * the key still valid, the signer still active), so of two racing
 * signatures or a signature racing a termination exactly one wins. */
#include "contracts_int.h"

#include "transition.h"

#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* SQL reads best as written */
// clang-format off
static const char SQL_KEY[] =
    "SELECT identity_id::text, public_key, revoked_at IS NOT NULL, expires_at <= now() "
    "FROM contract_party_keys WHERE credential_id = $1::uuid";
/* Events: $1..$4 contract.signed, $5..$8 contract.fully_signed (when $14).
 * $9 id, $10 hash read, $11 side, $12 other side, $13 the entry, $14 the
 * other side signed already (so this one completes it), $15 key, $16 signer */
static const char SQL_SIGN[] =
    "WITH u AS (UPDATE contracts SET signatures = coalesce(signatures, '{}'::jsonb) || "
    "jsonb_build_object($11::text, $13::jsonb), status = CASE WHEN $14::bool THEN 'signed' "
    "ELSE status END::contract_status, updated_at = now() WHERE id = $9::uuid "
    "AND status = 'review' AND content_hash = $10 "
    "AND NOT coalesce(signatures, '{}'::jsonb) ? $11::text "
    "AND (coalesce(signatures, '{}'::jsonb) ? $12::text) = $14::bool "
    "AND EXISTS (SELECT 1 FROM contract_party_keys WHERE credential_id = $15::uuid "
    "AND identity_id = $16::uuid AND revoked_at IS NULL AND expires_at > now()) "
    "AND " CTSQL_PARTY_STATUS("$16::uuid") " = 'active' RETURNING " CTSQL_COLS "), "
    "o1 AS (" CMS_OUTBOX_SQL_FROM_AT("u", "1", "2", "3", "4") " RETURNING seq), "
    "o2 AS (" CMS_OUTBOX_SQL_FROM_AT("u, o1 WHERE $14::bool", "5", "6", "7", "8") ") "
    "SELECT * FROM u";
// clang-format on

typedef struct sign_op {
    ctsvc_op o; /* first: ctsvc_written's */
    char id[CT_ID_LEN + 1], key_id[CT_ID_LEN + 1];
    char sig[CC_SIG_B64URL_MAX + 1];
    char side[16]; /* asked for; "" for the caller's own */
} sign_op;

static int sign_read(void *arg, cms_pg_job *job)
{
    sign_op *op = arg;
    const char *v[] = {op->key_id};
    int rc = ctsvc_read_contract(op->o.s, job, op->o.req, op->id);
    return rc ? rc : cms_pg_job_exec(job, op->o.s->st_key, v, NULL, NULL);
}

/* Which sides have signed, from the stored signatures (one parse). */
static void signed_sides(const char *signatures, const char *side, const char *other, bool *mine,
                         bool *theirs)
{
    json_t *j = json_loads(signatures, 0, NULL);
    *mine = j && json_object_get(j, side) != NULL;
    *theirs = j && json_object_get(j, other) != NULL;
    json_decref(j);
}

/* The key the caller names: theirs, valid now; false after answering. */
static bool key_usable(cms_cmd_req *req, const PGresult *k, const char *key_id, const char *me)
{
    if (k == NULL || PQntuples(k) == 0) {
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__FAILED_PRECONDITION, "key_id",
                     "%s is an unknown or not yet known public key; if it was just issued, retry "
                     "in a moment",
                     key_id);
        return false;
    }
    if (strcmp(PQgetvalue(k, 0, 0), me) != 0) {
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__PERMISSION_DENIED, "key_id",
                     "the key %s is not yours: sign with a public_key credential of your own",
                     key_id);
        return false;
    }
    if (strcmp(PQgetvalue(k, 0, 2), "t") == 0) {
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__FAILED_PRECONDITION, "key_id",
                     "the key %s is revoked", key_id);
        return false;
    }
    if (strcmp(PQgetvalue(k, 0, 3), "t") == 0) {
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__FAILED_PRECONDITION, "key_id",
                     "the key %s has expired", key_id);
        return false;
    }
    return true;
}

static cms_transition_step sign_decide(void *arg, cms_cmd_req *req, const cms_pg_result *res,
                                       cms_pg_job *write)
{
    sign_op *op = arg;
    const PGresult *r = ctsvc_read_row(req, res), *k = cms_pg_result_get(res, 1);
    if (r == NULL)
        return CMS_TRANSITION_ANSWERED;
    const char *me = cms_cmd_req_actor(req), *side = ctsvc_side(req, r, 0);
    if (side == NULL) {
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__PERMISSION_DENIED, NULL,
                     "only the provider and the consumer sign a contract");
        return CMS_TRANSITION_ANSWERED;
    }
    if (op->side[0] && strcmp(op->side, side) != 0) {
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__PERMISSION_DENIED, "side",
                     "you are the contract's %s: you sign the %s's side only", side, side);
        return CMS_TRANSITION_ANSWERED;
    }
    const char *status = PQgetvalue(r, 0, CTCOL_STATUS);
    if (strcmp(status, "review") != 0) {
        ctsvc_fail_status(req, status, "only a contract in review is signed (submit it first)");
        return CMS_TRANSITION_ANSWERED;
    }
    const char *other = strcmp(side, "provider") == 0 ? "consumer" : "provider";
    const char *sigs = PQgetvalue(r, 0, CTCOL_SIGNATURES);
    bool mine, completes;
    signed_sides(sigs, side, other, &mine, &completes);
    if (mine) {
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__FAILED_PRECONDITION, "side",
                     "the %s has signed already", side);
        return CMS_TRANSITION_ANSWERED;
    }
    if (!ctsvc_party_active(
            req, side, PQgetvalue(r, 0, strcmp(side, "provider") == 0 ? CTCOL_N : CTCOL_N + 1)) ||
        !key_usable(req, k, op->key_id, me))
        return CMS_TRANSITION_ANSWERED;

    /* what is signed: the content as it is now, hashed again here */
    char hash[CC_HASH_HEX + 1];
    if (!ctsvc_content_hash(req, op->id, PQgetvalue(r, 0, CTCOL_TITLE),
                            PQgetvalue(r, 0, CTCOL_DESCRIPTION), PQgetvalue(r, 0, CTCOL_PROVIDER),
                            PQgetvalue(r, 0, CTCOL_CONSUMER), PQgetvalue(r, 0, CTCOL_TERMS), hash))
        return CMS_TRANSITION_ANSWERED;
    if (strcmp(hash, PQgetvalue(r, 0, CTCOL_HASH)) != 0) {
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__INTERNAL, NULL,
                     "the stored contract does not match its content hash");
        return CMS_TRANSITION_ANSWERED;
    }
    uint8_t digest[32];
    size_t dlen = 0;
    if (sodium_hex2bin(digest, sizeof digest, hash, CC_HASH_HEX, NULL, &dlen, NULL) != 0 ||
        dlen != sizeof digest) {
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__INTERNAL, NULL, "the content hash is not hex");
        return CMS_TRANSITION_ANSWERED;
    }
    const char *pk = PQgetvalue(k, 0, 1);
    if (!cc_verify(pk, op->sig, digest)) {
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__INVALID_ARGUMENT, "signature",
                     "the signature does not verify: sign the SHA-256 of the contract's "
                     "canonical form (content hash %s) with the secret key of %s",
                     hash, op->key_id);
        return CMS_TRANSITION_ANSWERED;
    }
    json_t *entry = cc_entry_json(me, op->key_id, pk, op->sig, hash, cms_bus_now_us());
    char *entry_text = entry ? json_dumps(entry, JSON_COMPACT) : NULL;
    json_decref(entry);
    ctev_contract c;
    ctsvc_row_event(r, 0, completes ? "signed" : "review", &c);
    cms_bus_event ev[2];
    memset(ev, 0, sizeof ev);
    const cms_bus_event *evs[] = {&ev[0], &ev[1]};
    const char *actor = me, *corr = ctsvc_correlation(req);
    const char *v[] = {op->id,     hash, side, other, entry_text, completes ? "t" : "f",
                       op->key_id, me};
    bool ok = entry_text != NULL && ctsvc_job_actor(op->o.s, write, req) == CMS_PG_OK &&
              ctev_signed(&c, side, op->key_id, hash, actor, corr, &ev[0]) == CMS_BUS_OK &&
              ctev_fully_signed(&c, hash, ctsvc_i64(r, 0, CTCOL_STARTS),
                                ctsvc_i64(r, 0, CTCOL_ENDS), actor, corr, &ev[1]) == CMS_BUS_OK &&
              cms_outbox_add_exec_events(write, op->o.s->st_sign, CTEV_SOURCE, evs, 2, 8, v) ==
                  CMS_OUTBOX_OK;
    free(entry_text);
    cms_bus_event_release(&ev[0]);
    cms_bus_event_release(&ev[1]);
    if (!ok) {
        ctsvc_fail_oom(req);
        return CMS_TRANSITION_ANSWERED;
    }
    return CMS_TRANSITION_WRITE;
}

static const cms_transition_ops sign_ops = {.what = "sign",
                                            .object = "contract",
                                            .read = sign_read,
                                            .decide = sign_decide,
                                            .written = ctsvc_written};

static void h_sign(void *arg, cms_cmd_req *req)
{
    ctsvc *s = arg;
    const Cms__V1__SignContract *m = (const void *)cms_cmd_req_body(req);
    cv_err e;
    if (!cv_uuid(m->id, "id", &e) || !cv_uuid(m->key_id, "key_id", &e)) {
        ctsvc_fail_invalid(req, &e);
        return;
    }
    size_t n = strlen(m->signature);
    if (n == 0 || n > CC_SIG_B64URL_MAX) {
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__INVALID_ARGUMENT, "signature",
                     "a signature is base64url (no padding) of 64 bytes");
        return;
    }
    if (m->side[0] && strcmp(m->side, "provider") != 0 && strcmp(m->side, "consumer") != 0) {
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__INVALID_ARGUMENT, "side",
                     "side is provider or consumer (or empty: your own)");
        return;
    }
    sign_op *op = calloc(1, sizeof *op);
    if (op == NULL) {
        ctsvc_fail_oom(req);
        return;
    }
    *op = (sign_op){.o = {s, req}};
    snprintf(op->id, sizeof op->id, "%s", m->id);
    snprintf(op->key_id, sizeof op->key_id, "%s", m->key_id);
    snprintf(op->sig, sizeof op->sig, "%s", m->signature);
    snprintf(op->side, sizeof op->side, "%s", m->side);
    cms_transition_run(s->pg, req, &sign_ops, op);
}

ctsvc_err ctsvc_register_signing(ctsvc *s, cms_cmd *c)
{
    if (!ctsvc_prepare(s, &s->st_key, "key", SQL_KEY, 1) ||
        !ctsvc_prepare(s, &s->st_sign, "sign", SQL_SIGN, 16))
        return CTSVC_ESETUP;
    return cms_cmd_register(c, "sign", &cms__v1__sign_contract__descriptor, h_sign, s) == 0
               ? CTSVC_OK
               : CTSVC_ESETUP;
}
