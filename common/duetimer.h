/* A timer for things that fall due at instants stored in the database
 * (credentials expiring, contracts starting and ending): one uv timer, set
 * to the next due instant the database names (never a periodic scan), and
 * on firing, rounds of one transaction each over what is due now, until
 * nothing is. What a round writes must be conditional on what it read
 * (UPDATE ... WHERE still due), so that each thing is done once, also with
 * several processes running the same timer; whatever came due while no
 * process ran is done at the next start.
 *
 * One job at a time. A note of a nearer instant (something just committed,
 * or heard of from another process) moves the timer, or is kept until the
 * job under way comes back. With nothing known, it looks again after the
 * longest wait (an hour). A database that cannot answer is asked again a
 * second later. A database whose clock is behind ours (due by ours, not
 * yet by its) is asked again a second later rather than at once.
 * Everything on the loop. */
#ifndef CMS_DUETIMER_H
#define CMS_DUETIMER_H

#include "pg.h"

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

typedef struct cms_duetimer cms_duetimer;

typedef struct cms_duetimer_ops {
    const char *what; /* for the log: "expiry timer" */
    /* Adds the read of the next due instant to job: the first result's
     * first value is Unix microseconds, or NULL for nothing. 0 or a
     * cms_pg_err. */
    int (*next)(void *arg, cms_pg_job *job);
    /* Adds the read of what is due now. 0 or a cms_pg_err. */
    int (*due)(void *arg, cms_pg_job *job);
    /* With the due read's results: adds the round's writes to job and
     * returns how many things it writes (0: nothing is due), or -1 (then
     * the round is tried again later). */
    int (*round)(void *arg, const cms_pg_result *due, cms_pg_job *job);
    /* The round committed (res: its results): true if more may be due (the
     * round was full), so that another round follows at once. */
    bool (*written)(void *arg, const cms_pg_result *res);
} cms_duetimer_ops;

int cms_duetimer_create(uv_loop_t *loop, cms_pg *pg, const cms_duetimer_ops *ops, void *arg,
                        cms_duetimer **out) __attribute__((warn_unused_result));
/* Reads the next due instant and sets the timer. */
void cms_duetimer_start(cms_duetimer *t);
/* Something falls due at at_us: if it comes before the timer, the timer
 * moves. NULL-safe; at_us <= 0 is ignored. */
void cms_duetimer_note(cms_duetimer *t, int64_t at_us);
/* Stops the timer, waits for a job under way, then closed(arg). */
void cms_duetimer_close(cms_duetimer *t, void (*closed)(void *arg), void *arg);
void cms_duetimer_destroy(cms_duetimer *t); /* after closed; NULL-safe */

#endif
