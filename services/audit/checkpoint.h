/* The signer of a writer's chain head (audit/chain.h's checkpoint): signs
 * it with the service's Ed25519 key, publishes it to CMS_AUDIT_CHECKPOINTS
 * on cms.audit.checkpoints.<log id>.<writer> (Nats-Msg-Id
 * <log>:<writer>:<seq>) and stores a copy in audit_checkpoints, one at a
 * time. On the loop thread. */
#ifndef AUDIT_CHECKPOINT_H
#define AUDIT_CHECKPOINT_H

#include "audit/chain.h"
#include "metrics.h"
#include "nats.h"
#include "pg.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct audit_signer audit_signer;

typedef struct audit_head {
    int32_t writer;
    const char *log_id; /* audit_chain_start.log_id, as text */
    uint64_t seq, rows;
    const uint8_t *hash;
} audit_head;

/* The key is copied (and wiped on free). NULL for no memory. */
audit_signer *audit_signer_new(cms_pg *pg, cms_nats *nats, const uint8_t sk[64]);
/* Prepares the insert into audit_checkpoints; -1 on failure. */
int audit_signer_prepare(audit_signer *s) __attribute__((warn_unused_result));
/* The key id checkpoints name: the public key, standard base64. */
const char *audit_signer_key_id(const audit_signer *s);
/* The sequence number of the last head published (0: none). */
uint64_t audit_signer_published(const audit_signer *s);
/* Whether a checkpoint is being published or stored. */
bool audit_signer_busy(const audit_signer *s);
/* Signs h, publishes and stores it; settled(arg) once both have ended,
 * however they ended (a failed publish is logged: the next head goes).
 * false, nothing started, while one is busy or when h is not past the last
 * published head. */
bool audit_signer_sign(audit_signer *s, const audit_head *h, void (*settled)(void *arg), void *arg);
void audit_signer_free(audit_signer *s); /* NULL-safe */

#endif
