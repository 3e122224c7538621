/* The system's wire conventions, in one place (DESIGN.md "NATS subjects
 * and streams" and "The event envelope"): the streams and their settings,
 * the subjects of events, commands and dead letters, the dead-letter
 * scheme, the system actor, what makes an event valid, and the building of
 * the events this system's services publish.
 *
 * Other services may publish on cms.events.>, so the checks here are the
 * contract every publisher is held to, not this system's own habits.
 * Everything is callable from any thread except cms_bus_provision and
 * cms_bus_dead_letter, which run on the loop of their cms_nats. */
#ifndef CMS_BUS_H
#define CMS_BUS_H

#include "cms/v1/envelope.pb-c.h"
#include "nats.h"
#include "pbarena.h"
#include "uuid.h"
#include "xenum.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CMS_BUS_WUR __attribute__((warn_unused_result))

#define CMS_BUS_ERRORS(X)                                                                          \
    X(CMS_BUS_OK, "ok")                                                                            \
    X(CMS_BUS_EINVAL, "invalid argument")                                                          \
    X(CMS_BUS_ENOMEM, "out of memory")                                                             \
    X(CMS_BUS_ETOOLONG, "a subject or id does not fit")                                            \
    X(CMS_BUS_EBUSY, "the NATS connection's publish window is full; retry")                        \
    X(CMS_BUS_ECLOSED, "the NATS connection is closing")

typedef enum { CMS_BUS_ERRORS(CMS_ENUM_ITEM) CMS_BUS_NERRORS } cms_bus_err;
const char *cms_bus_strerror(cms_bus_err e);

/* ---- streams ---- */

#define CMS_BUS_EVENTS_STREAM "CMS_EVENTS"
#define CMS_BUS_EVENT_SUBJECTS "cms.events.>"
#define CMS_BUS_EVENT_PREFIX "cms.events."
#define CMS_BUS_DLQ_STREAM "CMS_DLQ"
#define CMS_BUS_DLQ_SUBJECTS "cms.dlq.>"
/* the audit writers' signed chain heads, on cms.audit.checkpoints.<writer> */
#define CMS_BUS_CHECKPOINT_STREAM "CMS_AUDIT_CHECKPOINTS"
#define CMS_BUS_CHECKPOINT_SUBJECTS "cms.audit.checkpoints.>"
#define CMS_BUS_CHECKPOINT_PREFIX "cms.audit.checkpoints."
#define CMS_BUS_DLQ_PREFIX "cms.dlq."
/* Training work (cms-training's dispatches, pulled by cms-worker): a work
 * queue, so a dispatch is gone once a worker acked it. */
#define CMS_BUS_WORK_STREAM "CMS_WORK"
#define CMS_BUS_WORK_SUBJECTS "cms.work.>"
#define CMS_BUS_WORK_TRAINING "cms.work.training"
#define CMS_BUS_WORKERS_DURABLE "workers"
/* Where a running job is told to stop (core NATS): <prefix><job id>. */
#define CMS_BUS_CONTROL_TRAINING_PREFIX "cms.control.training."
/* The stream drops a second publish of an event id within this window. */
#define CMS_BUS_DEDUPE_WINDOW_MS (2 * 60 * 1000)

/* CMS_EVENTS (file, 30 days, the dedupe window), CMS_DLQ (file, 90 days)
 * and CMS_WORK (file, work queue, 7 days, the dedupe window): count
 * entries. */
const cms_nats_stream_spec *cms_bus_streams(size_t *count);
/* The filter a durable on CMS_EVENTS is made with to take the events on
 * subject: NULL when that is every event (nats-server matches a filter
 * against every message it delivers, even one that matches them all). */
const char *cms_bus_event_filter(const char *subject);
/* Makes them where missing (cms_nats_provision): where NATS permissions
 * allow it, only the migrator can; a service then waits for them. */
int cms_bus_provision(cms_nats *n, void (*done)(void *arg, cms_nats_err err), void *arg);

/* The durables the services consume through, as cms-migrate provisions
 * them: count entries. A service binds its own and may use other settings
 * (differences are logged). */
const cms_nats_durable_spec *cms_bus_durables(size_t *count);
/* For command-line tools: connects with o on a loop of its own and
 * provisions the streams (and the durables too if durables), each stream
 * with replicas copies (0 or 1: one; a cluster's: 3), waiting at most
 * timeout_ms. CMS_NATS_OK, CMS_NATS_ETIMEOUT, or what failed. */
#define CMS_BUS_MAX_REPLICAS 5 /* JetStream's limit */
cms_nats_err cms_bus_provision_wait(const cms_nats_options *o, bool durables, int replicas,
                                    int64_t timeout_ms);

/* ---- subjects ---- */

#define CMS_BUS_COMMAND_PREFIX "cms.cmd" /* the default root of command subjects */
#define CMS_BUS_SUBJECT_MAX 256

/* "<prefix>.<service>.<verb>" (prefix NULL: the default); ETOOLONG if it
 * does not fit len. */
cms_bus_err cms_bus_command_subject(char *buf, size_t len, const char *prefix, const char *service,
                                    const char *verb) CMS_BUS_WUR;
/* "cms.events.<event_type>" */
cms_bus_err cms_bus_event_subject(char *buf, size_t len, const char *event_type) CMS_BUS_WUR;
/* "cms.dlq.<service>" */
cms_bus_err cms_bus_dlq_subject(char *buf, size_t len, const char *service) CMS_BUS_WUR;

/* The contract between cms-identity and every service that authenticates
 * its callers (common/auth is given these by the service runtime): the
 * verb that resolves an API key, and the events after which a resolved key
 * may no longer hold. */
#define CMS_BUS_IDENTITY_SERVICE "identity"
#define CMS_BUS_AUTHENTICATE_VERB "authenticate"
extern const char *const cms_bus_auth_event_subjects[]; /* NULL-terminated */
extern const char *const cms_bus_auth_event_types[];    /* NULL-terminated */

/* ---- the system actor ---- */

/* The identity system actions (expiry, stops by budget) are attributed to;
 * created by migration 0002. */
#define CMS_BUS_SYSTEM_ACTOR "00000000-0000-7000-8000-000000000001"
extern const uint8_t cms_bus_system_actor[16];

/* ---- what a valid event is ---- */

/* audit_logs.event_type and resource_type are VARCHAR(50) */
#define CMS_BUS_TYPE_MAX 50

/* Why an envelope is refused; the text is the dead letter's
 * Cms-Dlq-Reason and a metric label. */
#define CMS_BUS_REASONS(X)                                                                         \
    X(CMS_BUS_VALID, "ok")                                                                         \
    X(CMS_BUS_UNDECODABLE, "undecodable")                                                          \
    X(CMS_BUS_BAD_EVENT_ID, "invalid_event_id")                                                    \
    X(CMS_BUS_BAD_RESOURCE_ID, "invalid_resource_id")                                              \
    X(CMS_BUS_BAD_ACTOR_ID, "invalid_actor_id")                                                    \
    X(CMS_BUS_BAD_EVENT_TYPE, "invalid_event_type")                                                \
    X(CMS_BUS_BAD_RESOURCE_TYPE, "invalid_resource_type")                                          \
    X(CMS_BUS_BAD_OCCURRED_AT, "invalid_occurred_at")

typedef enum { CMS_BUS_REASONS(CMS_ENUM_ITEM) CMS_BUS_NREASONS } cms_bus_reason;
const char *cms_bus_reason_name(cms_bus_reason r);

/* A resource type or verb: 1..50 of [A-Za-z0-9_-] (a subject token). */
bool cms_bus_valid_token(const char *s, size_t n);
/* event_type is "<resource_type>.<verb>", both tokens, within 50. */
bool cms_bus_valid_event_type(const char *event_type, const char *resource_type);
/* The envelope's fields as DESIGN.md defines them: event_id, resource_id
 * and actor_id are UUIDs, the types as above, occurred_at_us within
 * 2000..2100. */
cms_bus_reason cms_bus_envelope_check(const Cms__V1__Envelope *e);
/* Unpacks data into arena (reset first) and checks it; *out (valid until
 * the arena is reset) is set for CMS_BUS_VALID only. A string field
 * holding a NUL (which protobuf-c would silently cut short, pbtext.h) is
 * CMS_BUS_UNDECODABLE. */
cms_bus_reason cms_bus_envelope_decode(const void *data, size_t len, cms_pbarena *arena,
                                       Cms__V1__Envelope **out);

/* ---- events this system publishes ---- */

typedef struct cms_bus_event {
    char id[CMS_UUID_STRLEN + 1];
    char subject[CMS_BUS_SUBJECT_MAX];
    uint8_t *buf; /* the packed Envelope (malloc'd; cms_bus_event_release frees it) */
    size_t len;
} cms_bus_event;

typedef struct cms_bus_event_header {
    const char *event_type;     /* "<resource_type>.<verb>", e.g. "credential.issued" */
    const char *resource_type;  /* "identity", "credential", ... */
    const char *resource_id;    /* UUID text */
    const char *actor_id;       /* UUID text of the identity that acted */
    const char *correlation_id; /* NULL: none */
    const char *source;         /* the publishing service, e.g. "identity" */
    int64_t occurred_at_us;     /* 0: now */
} cms_bus_event_header;

/* Fills env's header fields from h (strings borrowed for the call only),
 * gives it a new UUIDv7 event id, checks it as any event is checked, and
 * packs it into out with its subject. env's typed body is the caller's:
 * set env->body_case and the member before. EINVAL for a missing field or
 * an envelope cms_bus_envelope_check refuses (out untouched). */
cms_bus_err cms_bus_event_build(Cms__V1__Envelope *env, const cms_bus_event_header *h,
                                cms_bus_event *out) CMS_BUS_WUR;
void cms_bus_event_release(cms_bus_event *ev); /* frees ev->buf; NULL-safe, idempotent */

/* Unix time now, in microseconds (the clock events are stamped with). */
int64_t cms_bus_now_us(void);

/* ---- dead letters ---- */

/* Headers a dead letter carries beside the original's. */
#define CMS_BUS_DLQ_REASON "Cms-Dlq-Reason"
#define CMS_BUS_DLQ_SUBJECT "Cms-Dlq-Subject"
#define CMS_BUS_DLQ_STREAM_SEQ "Cms-Dlq-Stream-Seq"
#define CMS_BUS_DLQ_MSG_ID "Cms-Dlq-Msg-Id"
/* Only on a record of a message too large to be dead-lettered whole: */
#define CMS_BUS_DLQ_SIZE "Cms-Dlq-Size"
#define CMS_BUS_DLQ_SHA256 "Cms-Dlq-Sha256"
#define CMS_BUS_DLQ_TRUNCATED "Cms-Dlq-Truncated"
/* A record's body: this many first bytes of the original, at the most. */
#define CMS_BUS_DLQ_RECORD_BYTES 1024
/* A record keeps the original's id up to this length. */
#define CMS_BUS_DLQ_RECORD_ID_MAX 128

/* Called once, on the loop: stored says the dead letter is in CMS_DLQ (a
 * duplicate of one already there counts): the original may be acked. */
typedef void (*cms_bus_dlq_cb)(void *arg, bool stored);

/* Dead-letters orig (a received message) for service with reason: to
 * "cms.dlq.<service>", unchanged (bytes and headers, less any
 * Nats-Expected-* header), with Cms-Dlq-Reason, Cms-Dlq-Subject and, for a
 * JetStream message, Cms-Dlq-Stream-Seq added. CMS_DLQ dedupes ids across
 * all its subjects, so the original Nats-Msg-Id travels as Cms-Dlq-Msg-Id
 * and the dead letter's own id is "dlq:<service>:<stream>:<seq>" (or
 * "dlq:<service>:<original id>"): a redelivered message dead-lettered
 * twice by one service is stored once, and two services' dead letters of
 * one event are both kept.
 *
 * A dead letter can always be published: when the original and the added
 * headers would not fit the server's max_payload, what goes to CMS_DLQ is
 * a record of it instead: the reason, the original subject and stream
 * sequence, its Nats-Msg-Id as Cms-Dlq-Msg-Id (when at most
 * CMS_BUS_DLQ_RECORD_ID_MAX bytes), Cms-Dlq-Size (its length),
 * Cms-Dlq-Sha256 (hex of its bytes) and Cms-Dlq-Truncated, with its first
 * CMS_BUS_DLQ_RECORD_BYTES bytes as the body.
 *
 * done is called only after CMS_BUS_OK; EBUSY asks to retry later. */
cms_bus_err cms_bus_dead_letter(cms_nats *n, const char *service, const cms_nats_msg *orig,
                                const char *reason, cms_bus_dlq_cb done, void *arg) CMS_BUS_WUR;

#endif
