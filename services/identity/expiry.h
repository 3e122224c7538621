/* Announces credential expiries: one timer, set to the next expiry in the
 * database (never a periodic scan), and on firing, in one transaction per
 * round, marks every credential now past its expires_at as expired, writes
 * credential.expired for each (and the status change of an enclave whose
 * last attestation lapsed) to the outbox. expired_at is set by the same
 * conditional UPDATE that adds the event, so each expiry is announced once,
 * also with several replicas, and one that came due while no process ran is
 * announced at the next start. */
#ifndef IDENTITY_EXPIRY_H
#define IDENTITY_EXPIRY_H

#include "auth.h"
#include "outbox.h"
#include "pg.h"

#include <stdint.h>
#include <uv.h>

typedef struct idexp idexp;

int idexp_create(uv_loop_t *loop, cms_pg *pg, cms_outbox *outbox, cms_auth *auth, idexp **out)
    __attribute__((warn_unused_result));
/* Reads the next expiry and sets the timer (retrying while the database
 * cannot answer). */
void idexp_start(idexp *x);
/* A credential expiring then was just committed: if it comes before the
 * timer, the timer moves. */
void idexp_note(idexp *x, int64_t expires_at_us);
/* Stops the timer, waits for a round under way, then closed(arg). */
void idexp_close(idexp *x, void (*closed)(void *arg), void *arg);
void idexp_destroy(idexp *x); /* after closed; NULL-safe */

#endif
