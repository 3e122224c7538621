/* What every cmsctl verb shares: exit statuses, how errors are worded, the
 * SIGINT flag and clocks.
 *
 * Errors go to stderr as one line "cmsctl VERB: what was wrong; what to do".
 * A usage error (bad or missing argument) exits 2, a failure of the work
 * itself (server unreachable, file unreadable, publish failed) exits 1. */
#ifndef CMSCTL_CLI_H
#define CMSCTL_CLI_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "config.h"

enum { CMSCTL_EXIT_OK = 0, CMSCTL_EXIT_FAILED = 1, CMSCTL_EXIT_USAGE = 2 };

/* Prints "PROG: MESSAGE; try PROG --help" and returns CMSCTL_EXIT_USAGE. */
int cmsctl_usage(const char *prog, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prints "PROG: MESSAGE" and returns CMSCTL_EXIT_FAILED. */
int cmsctl_fail(const char *prog, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A progress line drawn in place (redrawn after "\r", without a newline) on
 * the terminal of f: until it is ended, the next message of cmsctl_usage or
 * cmsctl_fail ends it first, so that the message starts on a line of its
 * own. cmsctl_progress_end ends it (a newline on f), if one is drawn. */
void cmsctl_progress_drawn(FILE *f);
void cmsctl_progress_end(void);

/* cms_config_parse for one verb: argv[0] is the verb's name. "-o VALUE" and
 * "-oVALUE" (before any "--") are read as --output=VALUE. Returns
 * CMSCTL_EXIT_OK with *out set, or the exit status to return at once
 * (-1 meaning "exit 0": --help or --version was answered). */
int cmsctl_parse(const cms_option *opts, size_t nopts, int argc, char **argv, const char *prog,
                 const char *summary, const char *usage_tail, cms_config **out)
    __attribute__((warn_unused_result));
#define CMSCTL_PARSE_DONE (-1)

/* The value of an INT option, checked to lie in [min, max]; otherwise
 * prints the usage error and returns false. */
bool cmsctl_int_arg(const char *prog, const cms_config *cfg, const char *name, int64_t min,
                    int64_t max, int64_t *out) __attribute__((warn_unused_result));

/* The value of a DURATION option in milliseconds, checked to lie in [min_ms,
 * max_ms]; otherwise prints the usage error and returns false. */
bool cmsctl_duration_arg(const char *prog, const cms_config *cfg, const char *name, int64_t min_ms,
                         int64_t max_ms, int64_t *out) __attribute__((warn_unused_result));

/* The longest --timeout: nats.c and libpq take an int of milliseconds. */
#define CMSCTL_TIMEOUT_MAX_MS (INT64_C(24) * 86400 * 1000)

/* SIGINT and SIGTERM set a flag instead of killing the process, so a verb
 * can stop cleanly and still print its summary. A second signal restores the
 * default action (a stuck verb can still be killed). */
void cmsctl_catch_signals(void);
bool cmsctl_interrupted(void);

uint64_t cmsctl_mono_us(void); /* monotonic */
int64_t cmsctl_wall_us(void);  /* Unix time */

#endif
