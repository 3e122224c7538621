/* cms-contracts under test: cms-identity (process 0) and cms-contracts
 * (process 1) on a scratch database, cms-contracts consuming identity and
 * credential events through durables of the test's own (deleted at
 * teardown), and parties made through cms-identity's commands, each with an
 * API key and an Ed25519 key registered as its public_key credential, known
 * to cms-contracts before they are returned. Blocking and asserting
 * (Criterion): test code only. */
#ifndef CMS_CTFX_H
#define CMS_CTFX_H

#include "apikey.h"
#include "cms/v1/contracts.pb-c.h"
#include "svcfx.h"

#include <stdint.h>

#define CTFX_CONTRACTS 1 /* cms-contracts' process index */

typedef struct ctparty {
    char id[37];
    char name[64];
    char key[CMS_APIKEY_LEN + 1]; /* API key */
    char key_id[37];              /* its public_key credential */
    uint8_t sk[64];               /* and that key's secret half */
} ctparty;

typedef struct ctfx {
    svcfx f;
    char suffix[48];           /* the durables' suffix: contracts-identity-<suffix> */
    char field[256], msg[256]; /* the last error's */
} ctfx;

void ctfx_setup(ctfx *c, const char *dbprefix);
void ctfx_teardown(ctfx *c);
/* cms-contracts as process i, with the test's durables; set as svcfx_start_at. */
pid_t ctfx_start_contracts(ctfx *c, int i, const char *const *set);

/* An identity with an API key and a registered public key, known to
 * cms-contracts (its status and its key) when this returns. */
void ctfx_party(ctfx *c, const char *name, ctparty *p);
/* Waits until cms-contracts holds this status of the identity. */
void ctfx_wait_party(ctfx *c, const char *identity_id, const char *status);

/* A contract command by who (NULL: the admin); the reply code, the result
 * into *out (Contract unless rdesc says otherwise; NULL: dropped). */
int ctfx_call(ctfx *c, const ctparty *who, const char *verb, const ProtobufCMessage *req,
              const ProtobufCMessageDescriptor *rdesc, ProtobufCMessage **out);
/* Terms from now + start_s to now + end_s (RFC 3339 UTC, whole seconds),
 * with extra JSON members appended (NULL: none); static buffer. */
const char *ctfx_terms(int64_t start_s, int64_t end_s, const char *extra);

/* Asserting helpers: a draft by `by`; submit; a signature of p over the
 * contract's content hash with p's key (code returned); create + submit +
 * both signatures. Free results with cms__v1__contract__free_unpacked. */
Cms__V1__Contract *ctfx_create(ctfx *c, const ctparty *by, const ctparty *prov, const ctparty *cons,
                               const char *terms);
int ctfx_simple(ctfx *c, const ctparty *who, const char *verb, const char *id,
                Cms__V1__Contract **out);
int ctfx_sign(ctfx *c, const ctparty *p, const char *id, const char *content_hash,
              Cms__V1__Contract **out);
Cms__V1__Contract *ctfx_signed(ctfx *c, const ctparty *prov, const ctparty *cons,
                               const char *terms);

/* How many events of this type ("contract.signed") about this contract
 * were ever written to the outbox (the fixture keeps a copy of each). */
int ctfx_events(ctfx *c, const char *type, const char *contract_id);
/* Waits until there are want of them (asserting). */
void ctfx_wait_events(ctfx *c, const char *type, const char *contract_id, int want,
                      double timeout_ms);

#endif
