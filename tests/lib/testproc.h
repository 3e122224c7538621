/* Test programs as child processes on a loop of their own: several at once,
 * their stdout and stderr captured through pipes, a watchdog that kills
 * them if they run too long. Test code: failures are Criterion assertions. */
#ifndef CMS_TESTPROC_H
#define CMS_TESTPROC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct cms_test_proc cms_test_proc;

struct cms_test_proc {
    uv_process_t h;
    uv_pipe_t out_pipe, err_pipe;
    char *out, *err; /* what it wrote, NUL-terminated ("" after finish if nothing) */
    size_t outlen, errlen;
    int64_t status;
    int term_signal;
    bool exited;
    int open; /* handles not yet closed */
    /* Called on the loop each time the child writes to stderr (optional). */
    void (*on_err)(cms_test_proc *p, void *arg);
    void *on_err_arg;
};

typedef struct cms_test_runner {
    uv_loop_t loop;
    uv_timer_t watchdog;
    uint64_t watchdog_ms;
    cms_test_proc *procs[8];
    size_t nprocs;
    int open;    /* children with handles still open */
    int running; /* children not yet exited */
    bool timed_out;
} cms_test_runner;

void cms_test_runner_init(cms_test_runner *r, uint64_t watchdog_ms);
/* Starts argv[0] (looked up in PATH unless it has a slash) with argv. */
cms_test_proc *cms_test_spawn(cms_test_runner *r, const char *const *argv);
/* Runs the loop until every child has exited and its output is read. */
void cms_test_runner_finish(cms_test_runner *r);
/* Spawn, finish, return the one child. */
cms_test_proc *cms_test_run(const char *const *argv, uint64_t watchdog_ms);
/* The same for bin with the arguments args (NULL-terminated, not counting
 * bin). */
cms_test_proc *cms_test_run_bin(const char *bin, const char *const *args, uint64_t watchdog_ms);
/* In a Criterion test: p ended by itself with exit status want; else its
 * output is shown. */
#define CMS_TEST_ASSERT_EXIT(p, want)                                                              \
    cr_assert((p)->term_signal == 0 && (p)->status == (want),                                      \
              "exit %lld (signal %d), want %d\n--- stdout:\n%s--- stderr:\n%s",                    \
              (long long)(p)->status, (p)->term_signal, (want), (p)->out, (p)->err)
void cms_test_proc_free(cms_test_proc *p);

#endif
