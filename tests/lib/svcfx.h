/* A service process under test: a scratch database with an admin identity
 * and its API key, the server key file API keys are hashed with, a command
 * subject root of the test's own (so several tests can run services beside
 * each other on one nats-server), spawning the service with its output in a
 * log file, blocking request-reply calls, and a watcher of every event.
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

typedef struct svcfx {
    char db[512];    /* conninfo of the scratch database */
    char dburl[600]; /* "CMS_DATABASE_URL=<db>" */
    char prefix[48]; /* command subject root: "<prefix>.<service>.<verb>" */
    char prefix_env[80];
    char key_file[128]; /* the server key (mode 600) */
    char key_env[160];
    char log_file[128]; /* the service's stdout and stderr, appended */
    uint8_t server_key[CMS_APIKEY_SERVER_KEY_BYTES];
    char admin_id[37];
    char admin_key[CMS_APIKEY_LEN + 1];
    pid_t pid; /* the running service, 0 if none */
    int port;  /* its HTTP port */
    natsConnection *nc;
    natsSubscription *events; /* every cms.events.<type>.<verb>, from setup on */
} svcfx;

/* Scratch database from the template, server key file, an identity "admin"
 * ({"roles":["admin"]}) with an API key valid for a day, inserted directly,
 * and a NATS connection. */
void svcfx_setup(svcfx *f, const char *dbprefix);
/* Stops the service if running, closes NATS, drops the database, removes
 * the files. Safe after a failed assertion (call it from .fini). */
void svcfx_teardown(svcfx *f);

/* Spawns binary (e.g. "cms-identity") on the scratch database, with the
 * fixture's key file and command prefix and set: NULL or more "KEY=VALUE"
 * settings (NULL-terminated), and waits until /readyz is 200. */
pid_t svcfx_start(svcfx *f, const char *binary, const char *const *set);
/* SIGTERM and wait; returns the exit code (-1: killed by a signal). */
int svcfx_stop(svcfx *f);
void svcfx_kill9(svcfx *f);

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

/* The next event of this type about this resource on f->events (those
 * before it are passed over), decoded; NULL if none comes in timeout_ms.
 * Free with cms__v1__envelope__free_unpacked. */
struct Cms__V1__Envelope *svcfx_wait_event(svcfx *f, const char *type, const char *resource_id,
                                           double timeout_ms);

/* The whole log of the service so far (malloc'd). */
char *svcfx_log(const svcfx *f);

/* Runs a SQL query on the scratch database: first column of the first row. */
char *svcfx_sql(const svcfx *f, const char *sql);

#endif
