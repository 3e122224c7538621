/* The lifecycle of one service process on one uv_loop_t:
 *
 *     running --(SIGTERM, SIGINT or cms_proc_stop)--> draining --> closed
 *
 * Draining starts every drain hook at once; each stops taking new work,
 * finishes what is in flight and reports with cms_proc_hook_done(). When all
 * are done — or the drain timeout expires, or a second signal arrives — the
 * close hooks run (reverse registration order: what was set up last is torn
 * down first) and close their handles; cms_proc then closes its own, so
 * uv_run returns and uv_loop_close() succeeds.
 *
 * Everything here runs on the loop thread. */
#ifndef CMS_LOOP_H
#define CMS_LOOP_H

#include "fsm.h"

#include <stdint.h>
#include <uv.h>

#define CMS_PROC_STATES(X)                                                                         \
    X(CMS_PROC_RUNNING, "running")                                                                 \
    X(CMS_PROC_DRAINING, "draining")                                                               \
    X(CMS_PROC_CLOSED, "closed")

typedef enum { CMS_PROC_STATES(CMS_ENUM_ITEM) CMS_PROC_NSTATES } cms_proc_state;

typedef struct cms_proc cms_proc;

/* Installs SIGTERM and SIGINT handlers (uv_signal_t) on loop; ignores SIGPIPE.
 * drain_timeout_ms: 0 means forced close as soon as draining starts.
 * Returns 0 or a negative libuv error. */
int cms_proc_create(uv_loop_t *loop, uint64_t drain_timeout_ms, cms_proc **out)
    __attribute__((warn_unused_result));

/* A drain hook runs once when draining starts (signal or cms_proc_stop). It
 * must stop taking new work, finish in-flight work and then call
 * cms_proc_hook_done(p, hook_id) — possibly from inside the hook itself.
 * Hooks are started in registration order, all at once; they may complete in
 * any order. */
typedef void (*cms_proc_hook_cb)(cms_proc *p, int hook_id, void *arg);
/* name: shown in the log when the hook is still pending at the timeout. */
int cms_proc_on_drain_named(cms_proc *p, const char *name, cms_proc_hook_cb cb, void *arg);
int cms_proc_on_drain(cms_proc *p, cms_proc_hook_cb cb, void *arg); /* hook id >= 0, or < 0 */
/* Idempotent; ignored for an unknown id and outside draining. */
void cms_proc_hook_done(cms_proc *p, int hook_id);

/* Close hooks run once, after every drain hook is done or the drain timeout
 * expired: close your uv handles there. Run in reverse registration order.
 * Returns 0 or < 0 (registering after draining started is refused). */
typedef void (*cms_proc_close_cb)(cms_proc *p, void *arg);
int cms_proc_on_close(cms_proc *p, cms_proc_close_cb cb, void *arg);

void cms_proc_stop(cms_proc *p); /* same as SIGTERM; idempotent */
cms_proc_state cms_proc_state_get(const cms_proc *p);
const char *cms_proc_state_name(cms_proc_state s);
uv_loop_t *cms_proc_loop(const cms_proc *p);

/* Runs the loop until closed and every handle is closed. Returns the process
 * exit code: 0 after a clean drain, 1 if the drain timeout or a second signal
 * forced it (logged with the hooks still pending). */
int cms_proc_run(cms_proc *p);
void cms_proc_destroy(cms_proc *p); /* after cms_proc_run returned; NULL-safe */

/* Loop lag: a repeating 10 ms timer measures how late it fires. Every
 * measurement goes into the histogram cms_loop_lag_seconds of
 * cms_metrics_default() (100 µs to 5 s buckets); this is the latest one. */
double cms_proc_lag_last_ms(const cms_proc *p);

#endif
