/* How cmsctl job shows a training job while it runs: its state, the
 * progress line of cmsctl job watch (a bar redrawn in place on a terminal,
 * one plain line per change otherwise) and a time left as a person reads
 * it. Nothing here does I/O, so the tests hold the wording to account.
 *
 * The line is ASCII ("eps", not a Greek letter), so its length in bytes is
 * its width on a terminal: the bar is cut to the terminal's width exactly,
 * and a line that wrapped could not be redrawn with "\r". */
#ifndef CMSCTL_JOBVIEW_H
#define CMSCTL_JOBVIEW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cms/v1/training.pb-c.h"

/* The job statuses of cms-training (TrainingJob.status), and what this
 * build does not know. */
#define CMSCTL_JOBVIEW_STATES(X)                                                                   \
    X(CMSCTL_JOBVIEW_PENDING, "pending")                                                           \
    X(CMSCTL_JOBVIEW_RUNNING, "running")                                                           \
    X(CMSCTL_JOBVIEW_COMPLETED, "completed")                                                       \
    X(CMSCTL_JOBVIEW_FAILED, "failed")                                                             \
    X(CMSCTL_JOBVIEW_STOPPED, "stopped")                                                           \
    X(CMSCTL_JOBVIEW_UNKNOWN, "unknown")

typedef enum cmsctl_jobview_state {
#define CMSCTL_JOBVIEW_STATE_ENUM(name, text) name,
    CMSCTL_JOBVIEW_STATES(CMSCTL_JOBVIEW_STATE_ENUM)
#undef CMSCTL_JOBVIEW_STATE_ENUM
} cmsctl_jobview_state;

/* The state a status names; CMSCTL_JOBVIEW_UNKNOWN for any other text. */
cmsctl_jobview_state cmsctl_jobview_state_parse(const char *status);
const char *cmsctl_jobview_state_name(cmsctl_jobview_state s);
/* Completed, failed or stopped: nothing leaves these. */
bool cmsctl_jobview_state_final(cmsctl_jobview_state s);
/* The exit status of cmsctl job watch when the job ended in s: 0 for
 * completed, 1 for anything else (cli.h). */
int cmsctl_jobview_exit_status(cmsctl_jobview_state s);

/* What the progress line shows of one JobMetrics. */
typedef struct cmsctl_jobview {
    cmsctl_jobview_state state;
    int64_t steps_done;
    int64_t steps_total;         /* the steps it will have run; 0: not known yet */
    double progress;             /* steps_done / steps_total, 0..1 */
    bool has_loss, has_accuracy; /* whether a worker reported them yet */
    double loss, accuracy;
    double spent, budget; /* epsilon spent, and the job's privacy budget */
    int64_t eta_us;       /* time left at the recent rate; 0: not known */
} cmsctl_jobview;

/* The view of m. The total is what m's progress was computed against
 * (steps_done / progress), which counts the steps of earlier attempts; with
 * no progress yet, the planned steps within max_steps; once completed, the
 * steps it ran. Loss and accuracy
 * count as reported when metrics_json has them as numbers. */
void cmsctl_jobview_from_metrics(const Cms__V1__JobMetrics *m, cmsctl_jobview *out);

#define CMSCTL_JOBVIEW_DURATION_MAX 32

/* A time left, to the second, in its two largest units: "45s", "3m05s",
 * "2h07m", "3d04h"; "-" for 0 or less (not known). Returns out. */
const char *cmsctl_jobview_duration(int64_t us, char out[CMSCTL_JOBVIEW_DURATION_MAX]);

#define CMSCTL_JOBVIEW_LINE_MAX 256

/* The progress line of v: status, progress, steps done of the total, the
 * latest loss and accuracy, epsilon spent of the budget and, while running,
 * the time left, e.g.
 *   running 61% 1220/2000 loss 0.3412 acc 0.912 eps 1.23/3 eta 2m10s
 * ("-" for what is not known yet): short enough for a bar beside it on 80
 * columns. Returns its length (cut to fit out). */
size_t cmsctl_jobview_line(const cmsctl_jobview *v, char *out, size_t len);

/* The line after a bar of progress, "[#######.......] running 61% ...", the
 * whole at most cols - 1 characters (the last column stays free so that the
 * cursor never wraps) and the line cut to what is left. The bar's width
 * follows the terminal's alone, so that it holds still while the line
 * changes: 30 from 100 columns, down to 10 at 80, none below. cols 0 means
 * 80. Returns its length (cut to fit out). */
size_t cmsctl_jobview_bar(const cmsctl_jobview *v, size_t cols, char *out, size_t len);

#endif
