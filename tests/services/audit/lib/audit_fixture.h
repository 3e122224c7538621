/* What the cms-audit integration and fault tests share: a scratch database
 * with known actors, a resource type (and so a subject space and consumer
 * names) unique to the test, generated events, publishing envelopes with
 * nats.c, spawning cms-audit processes, reading their probes and metrics,
 * reading the dead letters, and checking audit_logs row by row against what
 * was published.
 *
 * Isolation: every name a test touches on the shared servers derives from
 * audfx.prefix ("t<pid>x<random>"): its events are "<prefix>.<verb>" on
 * "cms.events.<prefix>.<verb>", its cms-audit processes consume
 * "cms.events.<prefix>.>" through durables named "<prefix>..." and its
 * database is its own, so tests can run beside others on one nats-server.
 *
 * Everything here blocks and asserts (Criterion): test code only. */
#ifndef AUDIT_FIXTURE_H
#define AUDIT_FIXTURE_H

#include <nats/nats.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define AUDFX_MAX_ACTORS 64
#define AUDFX_MAX_PROCS 8
#define AUDFX_MAX_DURABLES 8

typedef struct audfx_event {
    char id[37];
    char resource_id[37];
    char actor_id[37];
    char event_type[64];
    char resource_type[64];
    int64_t occurred_us;
    char *details; /* details_json as published; "" for none */
} audfx_event;

typedef struct audfx {
    char prefix[32];  /* the resource type of this test's events */
    char subject[64]; /* cms.events.<prefix>.> */
    char db[512];     /* conninfo of the scratch database */
    natsConnection *nc;
    jsCtx *js;
    int nactors;
    char actors[AUDFX_MAX_ACTORS][37];
    pid_t pids[AUDFX_MAX_PROCS]; /* spawned cms-audit processes not yet reaped */
    char durables[AUDFX_MAX_DURABLES][48];
    int ndurables;
} audfx;

/* A scratch database from the template with nactors identities inserted,
 * a NATS connection, and the streams CMS_EVENTS and CMS_DLQ (created with
 * the settings the services provision, if missing, so events can be
 * published before any service has run). */
void audfx_setup(audfx *f, const char *dbprefix, int nactors);
/* Kills what is still running, deletes the test's durables, purges its
 * events from CMS_EVENTS, closes NATS and drops the database. Safe after a
 * failed assertion (call it from .fini). */
void audfx_teardown(audfx *f);

/* n valid events of the test's resource type: verbs cycle through a few,
 * actors through the test's actors, details are JSON objects of 100-300
 * bytes (escapes, nesting, non-ASCII), occurred_us distinct to the
 * microsecond. free with audfx_events_free. */
audfx_event *audfx_events(const audfx *f, size_t n);
void audfx_events_free(audfx_event *evs, size_t n);

/* The envelope's wire bytes (malloc'd) and their length. */
uint8_t *audfx_pack(const audfx_event *ev, size_t *len);

/* Asynchronous JetStream publish; headers: NULL or key, value, ..., NULL.
 * msg_id NULL: no Nats-Msg-Id. */
void audfx_publish(audfx *f, const char *subject, const char *msg_id, const char *const *headers,
                   const void *data, size_t len);
/* Publishes ev on cms.events.<event_type> with Nats-Msg-Id msg_id (NULL: its event_id). */
void audfx_publish_event(audfx *f, const audfx_event *ev, const char *msg_id);
/* Waits until every publish so far is acknowledged by the stream; asserts none failed. */
void audfx_publish_wait(audfx *f);

/* Sets the durable's ack wait (what a consumer that died holding messages
 * leaves unacknowledged is redelivered that long after its delivery) if it
 * is not that already. cms-audit resets the durable's settings to its own
 * when it starts, so a test that wants a short one calls this while
 * waiting. Returns whether the durable exists. */
bool audfx_durable_ack_wait(audfx *f, const char *durable, int64_t ack_wait_ms);
/* Remembers a durable to delete at teardown (audfx_start does it). */
void audfx_own_durable(audfx *f, const char *durable);
/* Whether the durable has delivered and had acked everything in its filter. */
bool audfx_durable_idle(audfx *f, const char *durable);
/* Messages of the durable delivered and not yet acknowledged when nothing
 * is left undelivered; -1 while some are undelivered or on error. */
int audfx_durable_pending(audfx *f, const char *durable);

/* Waits until the durable has had everything acknowledged, then asserts
 * that exactly n rows are stored (an ack comes only after its commit, so
 * nothing more can arrive). Fails at once if more than n rows appear or the
 * process pid (0: none) exits, and after timeout_ms. With keep_ack_wait_ms
 * > 0, keeps the durable's ack wait at that on every poll. */
void audfx_wait_stored(audfx *f, const char *durable, long n, pid_t pid, double timeout_ms,
                       int64_t keep_ack_wait_ms);

/* Spawns cms-audit on the test's database and subject with the given
 * durable, serving HTTP on a free port (returned in *port). extra: NULL or
 * more command-line arguments, NULL-terminated. */
pid_t audfx_start(audfx *f, const char *durable, int *port, const char *const *extra);
/* SIGTERM, then waits: the exit code, or -1 if it did not exit by itself. */
int audfx_stop(audfx *f, pid_t pid, double *took_ms);
/* SIGKILL and reap. */
void audfx_kill9(audfx *f, pid_t pid);
/* Still running (not exited, not reaped)? */
bool audfx_alive(pid_t pid);

/* Polls /readyz until it answers want or timeout_ms pass; returns whether it did. */
bool audfx_wait_readyz(int port, int want, double timeout_ms);
/* The value of one series of /metrics, e.g. "cms_audit_events_total" or
 * "cms_audit_dead_letters_total{reason=\"undecodable\"}"; -1 if absent or
 * unreachable. */
double audfx_metric(int port, const char *series);

/* The sum of cms_audit_dead_letters_total over every reason (each must be
 * exported). */
double audfx_dead_total(int port);

/* SELECT count(*) FROM audit_logs; -1 if the database cannot answer. */
long audfx_rows(const audfx *f);
/* Compares audit_logs with evs field by field (id, event_type,
 * resource_type, resource_id, actor_id, details as jsonb, where an empty
 * details_json means {}, created_at to the microsecond) and returns the
 * number of differences: rows missing, rows not expected, and rows that
 * differ. The first few are described in report. */
long audfx_check_rows(const audfx *f, const audfx_event *evs, size_t n, char *report,
                      size_t report_len);

/* One dead letter of this test (Cms-Dlq-Subject within its prefix). */
typedef struct audfx_dead {
    uint8_t *data;
    size_t len;
    char reason[48];
    char subject[128];
    char msg_id[96];
    char custom[96];     /* the X-Audfx-Tag header, "" if absent */
    char stream_seq[24]; /* Cms-Dlq-Stream-Seq: the original's in CMS_EVENTS */
    /* Only on a record of an original too large to be dead-lettered whole
     * ("" otherwise): its length, the hex SHA-256 of its bytes, "true". */
    char size[24];
    char sha256[65];
    char truncated[8];
} audfx_dead;
/* Reads the whole of cms.dlq.audit in CMS_DLQ and keeps this test's dead
 * letters. Returns how many; *out is malloc'd (audfx_dead_free). */
size_t audfx_read_dlq(audfx *f, audfx_dead **out);
void audfx_dead_free(audfx_dead *d, size_t n);

/* Polls cond every 25 ms until it holds; fails the test when timeout_ms
 * pass first, or as soon as the cms-audit process pid (0: none) is gone. */
#define AUDFX_WAIT(cond, timeout_ms, pid, ...)                                                     \
    do {                                                                                           \
        double audfx_deadline_ = audfx_now_ms() + (timeout_ms);                                    \
        while (!(cond)) {                                                                          \
            cr_assert((pid) <= 0 || audfx_alive(pid),                                              \
                      "cms-audit %d exited while waiting "                                         \
                      "for " #cond,                                                                \
                      (int)(pid));                                                                 \
            cr_assert_lt(audfx_now_ms(), audfx_deadline_, "timed out: " __VA_ARGS__);              \
            audfx_pause_ms(25);                                                                    \
        }                                                                                          \
    } while (0)

/* A short pause inside a bounded polling loop. */
void audfx_pause_ms(int ms);
double audfx_now_ms(void);

#endif
