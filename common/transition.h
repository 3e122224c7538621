/* A change of state of one stored object, made the way every command that
 * depends on the current state makes it: read the state, check it here (so
 * that a refusal can say exactly why), then write the change with the state
 * that was read as the statement's condition (UPDATE ... WHERE status =
 * $read), with its events in the same transaction; if someone changed the
 * state in between, the write changes nothing, and it all starts again
 * from the read, a few times at most. Two racing commands therefore never
 * both win, and the loser gets the precise error of the state it lost to.
 *
 * The write is a job of the command (cms_cmd_job_new), so it also claims
 * the command's request_id. Errors of the database are answered as
 * cms_cmd_fail_pg answers them. Everything runs on the loop. */
#ifndef CMS_TRANSITION_H
#define CMS_TRANSITION_H

#include "cmd.h"
#include "pg.h"

#include <stdbool.h>

typedef enum {
    CMS_TRANSITION_ANSWERED, /* decide answered the request: nothing is written */
    CMS_TRANSITION_WRITE,    /* decide filled the write job */
} cms_transition_step;

typedef struct cms_transition_ops {
    const char *what;   /* names the command in errors: "set_status" */
    const char *object; /* what changes: "identity" ("the identity keeps changing") */
    /* Adds the statements that read the current state to job. 0 or a
     * cms_pg_err (answered INTERNAL). */
    int (*read)(void *op, cms_pg_job *job);
    /* The state as read (res of the read job): answer req here and return
     * ANSWERED (a refusal, or nothing to do), or add the conditional write
     * (and its events) to write and return WRITE. An error adding it is
     * answered here too (then ANSWERED). */
    cms_transition_step (*decide)(void *op, cms_cmd_req *req, const cms_pg_result *res,
                                  cms_pg_job *write);
    /* The write committed: true if it changed the object (answer req here),
     * false if the state had moved since the read (read again). */
    bool (*written)(void *op, cms_cmd_req *req, const cms_pg_result *res);
    /* Frees op at the end, whatever happened. NULL: free(). */
    void (*release)(void *op);
} cms_transition_ops;

/* Runs the transition for req; op is taken (released at the end). After
 * the third write that changed nothing, req is answered UNAVAILABLE ("the
 * <object> keeps changing; retry"). */
void cms_transition_run(cms_pg *pg, cms_cmd_req *req, const cms_transition_ops *ops, void *op);

#endif
