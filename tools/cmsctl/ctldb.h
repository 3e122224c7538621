/* PostgreSQL for cmsctl: one blocking connection, every wait bounded.
 *
 * A command-line tool may block (nothing else runs in the process); what it
 * must not do is hang, so the connect and every statement carry a timeout.
 * Connection strings may hold a password: they are never printed. */
#ifndef CMSCTL_CTLDB_H
#define CMSCTL_CTLDB_H

#include <libpq-fe.h>
#include <stdint.h>

/* Connects with connect_timeout and statement_timeout both from timeout_ms
 * (at least 1 s), the session in UTC. Returns CMSCTL_EXIT_OK with *out set, or prints what went
 * wrong (as PROG: ...) and returns CMSCTL_EXIT_FAILED. */
int cmsctl_db_connect(const char *prog, const char *conninfo, int64_t timeout_ms, PGconn **out)
    __attribute__((warn_unused_result));

/* Prints a failed result's SQLSTATE and message for `what` ("reading
 * audit_logs") and returns CMSCTL_EXIT_FAILED. */
int cmsctl_db_fail(const char *prog, const PGresult *res, const char *what);

#endif
