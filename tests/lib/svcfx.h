/* A service process under test: a scratch database with an admin identity
 * and its API key, the server key file API keys are hashed with, a command
 * subject root of the test's own (so several tests can run services beside
 * each other on one nats-server), spawning the service (or several
 * replicas of it) with their output in a log file, blocking request-reply
 * calls, a watcher of every event, JetStream publishing, /metrics values,
 * and waiting for a table to change (LISTEN/NOTIFY, no polling).
 *
 * Everything here blocks and asserts (Criterion): test code only. */
#ifndef CMS_SVCFX_H
#define CMS_SVCFX_H

#include "apikey.h"

#include <nats/nats.h>
#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

struct Cms__V1__Envelope;
typedef struct pg_conn PGconn;

#define SVCFX_PROCS 4

typedef struct svcfx {
    char db[512];    /* conninfo of the scratch database (as the superuser) */
    char prefix[48]; /* command subject root: "<prefix>.<service>.<verb>" */
    char prefix_env[80];
    char key_file[128]; /* the server key (mode 600) */
    char key_env[160];
    char log_file[128]; /* the service's stdout and stderr, appended */
    uint8_t server_key[CMS_APIKEY_SERVER_KEY_BYTES];
    char admin_id[37];
    char admin_key[CMS_APIKEY_LEN + 1];
    /* the running processes (replicas), 0 where none; [0] is svcfx_start's */
    pid_t pids[SVCFX_PROCS];
    int ports[SVCFX_PROCS]; /* their HTTP ports */
    natsConnection *nc;
    natsSubscription *events; /* every cms.events.<type>.<verb>, from setup on */
    jsCtx *js;
    PGconn *listen;         /* svcfx_wait_sql's, once used */
    char audit_durable[48]; /* svcfx_start_audit_at's, deleted at teardown */
} svcfx;

/* Scratch database from the template (cms_testsvc granted what a service
 * on the runtime has, see testenv.h), server key file, an identity "admin"
 * ({"roles":["admin"]}) with an API key valid for a day, inserted directly,
 * and a NATS connection. */
void svcfx_setup(svcfx *f, const char *dbprefix);
/* Stops the service if running, closes NATS, drops the database, removes
 * the files. Safe after a failed assertion (call it from .fini). */
void svcfx_teardown(svcfx *f);

/* Spawns binary (e.g. "cms-identity") as process i (0 .. SVCFX_PROCS-1) on
 * the scratch database as its service's own role ("cms-<service>" connects
 * as the login role of cms_<service>), with the fixture's key file and
 * command prefix and
 * set: NULL or more "KEY=VALUE" settings (NULL-terminated), and waits until
 * its /readyz is 200. */
pid_t svcfx_start_at(svcfx *f, int i, const char *binary, const char *const *set);
/* cms-audit as process i, serving its commands on the fixture's prefix:
 * it records only a subject space of its own (cms.events.<durable>.>)
 * through a durable of its own (deleted at teardown), so that it takes no
 * part in other tests' events. */
pid_t svcfx_start_audit_at(svcfx *f, int i);
/* The same with extra: NULL or more "KEY=VALUE" settings (NULL-terminated),
 * e.g. a signing key. Several processes started so share the durable: they
 * are replicas. */
pid_t svcfx_start_audit_with(svcfx *f, int i, const char *const *extra);
/* SIGTERM and wait; returns the exit code (-1: killed by a signal). */
int svcfx_stop_at(svcfx *f, int i);
void svcfx_kill9_at(svcfx *f, int i);
/* Waits (at most timeout_ms) for process i to end by itself: its exit
 * code, or minus the signal that killed it. */
int svcfx_wait_exit_at(svcfx *f, int i, double timeout_ms);
/* Process 0. */
pid_t svcfx_start(svcfx *f, const char *binary, const char *const *set);
int svcfx_stop(svcfx *f);
void svcfx_kill9(svcfx *f);

/* The value of one series of process i's /metrics, e.g.
 * "cms_consumer_active{consumer=\"x\"}"; -1 if it is not there. */
double svcfx_metric(const svcfx *f, int i, const char *series);

/* Inserts an identity with an API key directly (as the bootstrap does):
 * id and key out; key_ttl_s from now (may be negative: already expired). */
void svcfx_insert(svcfx *f, const char *name, const char *type, const char *status,
                  const char *metadata_json, int64_t key_ttl_s, char id[37],
                  char key[CMS_APIKEY_LEN + 1]);

/* A blocking command: "<prefix>.<service>.<verb>" with header
 * Authorization: Bearer <key> (key NULL: none) and request_id (NULL: none).
 * Returns the error code of the reply (0 = a result, unpacked into *out
 * with rdesc; free with protobuf_c_message_free_unpacked). The error's field
 * and message go into field/msg when not NULL (up to 256 bytes each). */
int svcfx_call(svcfx *f, const char *service, const char *key, const char *request_id,
               const char *verb, const ProtobufCMessage *req,
               const ProtobufCMessageDescriptor *rdesc, ProtobufCMessage **out, char *field,
               char *msg);

/* cms-identity's "get" of the identity name as key: svcfx_call's code; the
 * identity into *out when out is not NULL (free with
 * cms__v1__identity__free_unpacked), else dropped. */
struct Cms__V1__Identity;
int svcfx_identity_get(svcfx *f, const char *key, const char *name, struct Cms__V1__Identity **out,
                       char *field, char *msg);

/* The next event of this type about this resource on f->events (those
 * before it are passed over), decoded; NULL if none comes in timeout_ms.
 * Free with cms__v1__envelope__free_unpacked. */
struct Cms__V1__Envelope *svcfx_wait_event(svcfx *f, const char *type, const char *resource_id,
                                           double timeout_ms);

/* Publishes e (packed) to JetStream on cms.events.<event_type>, with
 * Nats-Msg-Id msg_id (NULL: the event id), and waits for the stream's ack. */
void svcfx_publish(svcfx *f, const struct Cms__V1__Envelope *e, const char *msg_id);

/* Waits until sql's first column is want, running it again each time a
 * notification comes on channel (the test's trigger sends them), at most
 * timeout_ms. Returns the last value (malloc'd). */
char *svcfx_wait_sql(svcfx *f, const char *channel, const char *sql, const char *want,
                     double timeout_ms);

/* The whole log of the service so far (malloc'd). */
char *svcfx_log(const svcfx *f);

/* Runs a SQL query on the scratch database: first column of the first row. */
char *svcfx_sql(const svcfx *f, const char *sql);

#endif
