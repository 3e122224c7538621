/* Activates and expires contracts when they come due: one timer, set to the
 * next due instant in the database (a signed contract's start, a signed or
 * active one's end; never a periodic scan), and on firing, one transaction
 * per round: every contract due now is activated (signed, its start come)
 * or expired (its end come), each by a conditional UPDATE that writes its
 * event in the same statement, so each transition is announced once, also
 * with several replicas, and one that came due while no process ran
 * happens at the next start. Its reads see only what is due (cms.timer);
 * each write acts as the contract's provider. */
#ifndef CONTRACTS_SCHEDULE_H
#define CONTRACTS_SCHEDULE_H

#include "contracts.h"

#include <stdint.h>
#include <uv.h>

typedef struct ctsched ctsched;

/* On the service's database, outbox and statements (s). */
int ctsched_create(uv_loop_t *loop, ctsvc *s, ctsched **out) __attribute__((warn_unused_result));
/* Reads the next due instant and sets the timer (retrying while the
 * database cannot answer). */
void ctsched_start(ctsched *x);
/* Something falls due then (just committed here, or heard of from another
 * replica): if it comes before the timer, the timer moves. NULL-safe; 0
 * ignored. */
void ctsched_note(ctsched *x, int64_t due_us);
/* Stops the timer, waits for a round under way, then closed(arg). */
void ctsched_close(ctsched *x, void (*closed)(void *arg), void *arg);
void ctsched_destroy(ctsched *x); /* after closed; NULL-safe */

#endif
