/* What integration and fault tests share: the servers tests/run started,
 * scratch databases, and the tests/lib/ctl script that stops, freezes and
 * restarts those servers.
 *
 * Environment (exported by tests/run):
 *   CMS_TEST_PG_URL        libpq conninfo of a superuser on the throwaway cluster (db "postgres")
 *   CMS_TEST_PG_URL_<ROLE> conninfo (db "postgres", with its password) of the login role of
 *                          the group role cms_<role> of migrations/0009_roles: IDENTITY, AUDIT,
 *                          CONTRACTS, TRAINING, AUDITOR, and TESTSVC (cms-testsvc's, which
 *                          the tests grant what a service on the runtime has)
 *   CMS_TEST_TEMPLATE_DB   a database migrated to the latest version, used as a template
 *   CMS_TEST_NATS_URL      nats://test:<password>@127.0.0.1:<port> of the throwaway
 *                          nats-server (JetStream on; tls:// in the TLS pass), as its user
 *                          "test", who may do anything (deploy/nats/gen-conf --test-users)
 *   CMS_TEST_NATS_SERVICE_URL  the same without a user: what spawned services connect to
 *   CMS_TEST_NATS_CREDS_DIR    <user>.creds of every NATS user; a spawned cms-<user>
 *                          connects as <user> (CMS_NATS_CREDS)
 *   CMS_TEST_NATS_CA       the TLS pass only: the CA spawned services verify NATS with
 *   CMS_TEST_CTL           path of tests/lib/ctl, bound to those servers
 *   CMS_TEST_BIN_DIR       the build's binaries (cms-migrate, services, cmsctl)
 * A missing variable fails the test that needs it: nothing is skipped. */
#ifndef CMS_TESTENV_H
#define CMS_TESTENV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/* The variable's value; aborts the test process with a clear message if unset. */
const char *cms_test_env(const char *name);

/* Creates a fresh database (from CMS_TEST_TEMPLATE_DB when migrated is
 * nonzero, else empty) named after prefix and the pid, and writes a conninfo
 * for it into out. Returns 0 or -1. Blocking: call it outside any loop. */
int cms_test_db_create(const char *prefix, int migrated, char *out, size_t outlen);
/* Drops a database made by cms_test_db_create (by the conninfo it gave). */
void cms_test_db_drop(const char *conninfo);

/* The conninfo of db (one of cms_test_db_create's) for the login role of
 * cms_<role> ("identity", "audit", "auditor", "testsvc", ...): its
 * CMS_TEST_PG_URL_<ROLE> with db's dbname. A service under test connects
 * so, never as the superuser. */
void cms_test_db_as(const char *db, const char *role, char *out, size_t outlen);
/* Grants cms_testsvc in the migrated database db what 0009_roles grants a
 * service on the runtime (its own rows of outbox, command_replies, leases
 * and processed_events, by the name "testsvc"), plus SELECT, INSERT and
 * sequence use on the tables named in tables (NULL-terminated, may be NULL:
 * the test's own, e.g. testsvc_records). Returns 0 or -1. */
int cms_test_db_grant_testsvc(const char *db, const char *const *tables);

/* Runs `tests/lib/ctl VERB` and waits; returns its exit status. Blocking:
 * for setup code, never inside a loop callback whose timing is measured. */
int cms_test_ctl(const char *verb);

/* Runs `tests/lib/ctl VERB` from a loop without blocking it; done(status, arg)
 * is called on the loop when it exits. Returns 0 or a libuv error. */
typedef void (*cms_test_ctl_cb)(int status, void *arg);
int cms_test_ctl_spawn(uv_loop_t *loop, const char *verb, cms_test_ctl_cb done, void *arg);

/* Runs one blocking SQL statement (test setup and checks only). Returns the
 * first column of the first row, malloc'd (caller frees), "" for no rows, or
 * NULL on error (printed to stderr). */
char *cms_test_sql(const char *conninfo, const char *sql);

/* A free TCP port on 127.0.0.1 (free when asked: bind it soon). */
int cms_test_free_port(void);

/* A blocking HTTP/1.0 GET to 127.0.0.1:port (5 s receive timeout): the
 * status, or -1. The body (NULL: not wanted) is copied into body. */
int cms_test_http_get(int port, const char *path, char *body, size_t len);

/* The service a binary is, "cms-<service>": its NATS user and its
 * database role's group. */
const char *cms_test_service_name(const char *binary);
/* Spawns $CMS_TEST_BIN_DIR/<name> (a service) with args (NULL-terminated,
 * may be NULL) and the test's environment, in which every "KEY=VALUE" of
 * set (NULL-terminated, may be NULL) replaces KEY; CMS_NATS_URL is the test
 * server's and CMS_LOG_LEVEL is warn unless the environment or set says
 * otherwise. log_path: stdout and stderr go there (appended), NULL:
 * inherited. The child is killed if the test process dies. Returns its pid
 * (the caller reaps it); -1 on failure. */
int cms_test_spawn_service(const char *name, const char *const *args, const char *const *set,
                           const char *log_path);

/* cms_test_spawn_service serving HTTP on a free port of 127.0.0.1: its
 * CMS_HTTP_ADDR comes before set, and the port goes into *port. */
int cms_test_spawn_http_service(const char *name, const char *const *args, const char *const *set,
                                const char *log_path, int *port);

/* Waits at most timeout_ms for the child pid to exit, and reaps it: returns
 * pid (its wait status in *status), 0 if it is still running, -1 on error.
 * A child's end is no event a test can wait on with a timeout but by
 * polling: this is the one poll of it. */
int cms_test_wait_exit(int pid, double timeout_ms, int *status);
/* SIGKILL and reap the child pid. */
void cms_test_kill9(int pid);

/* GET /metrics on 127.0.0.1:port: returns the status (-1: no answer), and
 * writes into *value the value of one series, e.g. "cms_audit_events_total"
 * or "cms_consumer_active{consumer=\"x\"}"; -1 if it is not there. */
int cms_test_metric(int port, const char *series, double *value);

/* Polls GET path on 127.0.0.1:port until it answers the status want with a
 * body containing body_has (NULL: any body). Readiness has no event to wait
 * on: a probe says it only when asked, so this is the one bounded poll of
 * it, asking every 20 ms. Gives up after timeout_ms, or at once when the
 * process pid (> 0) has exited (it is not reaped). The last answer's body
 * goes into body (NULL: not wanted). Returns whether it answered so. */
bool cms_test_wait_http(int port, const char *path, int want, const char *body_has, int pid,
                        double timeout_ms, char *body, size_t len);

/* Monotonic milliseconds. */
double cms_test_now_ms(void);
/* Unix time in microseconds (the clock of expiries and events). */
int64_t cms_test_wall_us(void);
/* A short pause inside a bounded polling loop (never as synchronisation). */
void cms_test_pause_ms(int ms);

#endif
