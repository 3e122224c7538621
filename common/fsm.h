/* The one state-machine convention of every stateful object (a pg
 * connection, a command request, the outbox relay, the NATS connection, an
 * audit batch, a timer-driven actor, the process itself).
 *
 * A module lists its states once, as an X-macro of (name, "text"), derives
 * the enum and the names from it, and writes the legal moves as a table;
 * its one set_state() passes every change through cms_fsm_step, which
 * checks the move against the table, logs old -> new with the object's id,
 * and treats an impossible move as the bug it is: logged as an error, then
 * abort(), since going on would act on a state nobody planned for (a second
 * ack, a double free). Nothing else assigns the state field (the style
 * check enforces that), and the first state listed is the initial one, so
 * a zeroed object starts there.
 *
 *     #define RELAY_STATES(X) X(RELAY_IDLE, "idle") X(RELAY_READING, "reading")
 *     typedef enum { RELAY_STATES(CMS_ENUM_ITEM) RELAY_NSTATES } relay_state;
 *     static const char *const relay_names[] = {RELAY_STATES(CMS_ENUM_TEXT)};
 *     static const bool relay_moves[RELAY_NSTATES][RELAY_NSTATES] = {
 *         [RELAY_IDLE] = {[RELAY_READING] = true},
 *         [RELAY_READING] = {[RELAY_IDLE] = true},
 *     };
 *     static const cms_fsm relay_fsm = CMS_FSM_INIT("outbox relay", CMS_LOG_DEBUG,
 *                                                   relay_names, relay_moves);
 *
 *     static void set_state(cms_outbox *ob, relay_state to)
 *     {
 *         ob->state = (relay_state)cms_fsm_step(&relay_fsm, ob->state, to, ob->source);
 *     }
 *
 * A move to the same state is a no-op unless the table allows it (then it
 * is not logged either). Any thread: the table is constant and logging is
 * thread-safe; the state itself belongs to whoever owns the object. */
#ifndef CMS_FSM_H
#define CMS_FSM_H

#include "log.h"
#include "xenum.h"

#include <stdbool.h>
#include <stddef.h>

typedef struct cms_fsm {
    const char *what;         /* the kind of object, for the log: "pg connection" */
    cms_log_level level;      /* of the old -> new line */
    size_t nstates;           /* entries of names; moves is nstates x nstates */
    const char *const *names; /* by state */
    const bool *moves;        /* moves[from * nstates + to]: legal */
} cms_fsm;

#define CMS_FSM_INIT(what, level, names, moves)                                                    \
    {                                                                                              \
        (what), (level), sizeof(names) / sizeof((names)[0]), (names), &(moves)[0][0]               \
    }

/* The state's name ("?" out of range). */
const char *cms_fsm_name(const cms_fsm *f, int state);
/* Whether from -> to is a legal move. */
bool cms_fsm_allowed(const cms_fsm *f, int from, int to);
/* Checks from -> to, logs it with id (may be NULL) and returns to; from ==
 * to without a table entry returns from, silently. An illegal move is
 * logged and aborts the process. */
int cms_fsm_step(const cms_fsm *f, int from, int to, const char *id);

#endif
