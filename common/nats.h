/* NATS for one service: core subjects, JetStream publish, pull consumers.
 * A transport: it knows no subject or stream of this system (those are in
 * bus.h).
 *
 * One connection per process. nats.c runs its socket I/O, its callbacks and
 * its locks on threads of its own, so nothing here lets the loop touch it:
 *
 *   - Every nats.c callback (messages, publish acks, connection events) only
 *     pushes onto a bounded queue and calls uv_async_send; the loop drains
 *     the whole queue per wake-up. Handlers therefore always run on the loop.
 *   - Every call into the connection (connect, subscribe, publish, respond,
 *     JetStream publish, ack/nak/term, drain) is handed by the loop to one
 *     writer thread. nats.c holds its connection lock while it reconnects
 *     (up to the connect timeout per attempt) and while it writes to a full
 *     socket, so even a "non-blocking" publish can wait seconds on it; the
 *     writer waits there, the loop never does.
 *   - A JetStream pull consumer fetches on a helper thread of its own, only
 *     while the loop has credit left (max_ack_pending minus the messages the
 *     loop holds unsettled), so its messages never overflow the queue.
 *   - Blocking JetStream API calls (stream provisioning, consumer creation)
 *     run on helper threads too; their results come back on the loop.
 *
 * When the queue is full, core messages (commands) are dropped and counted
 * (cms_nats_messages_dropped_total): the requester times out and retries.
 * JetStream messages are bounded by credit, publish acks by the in-flight
 * cap.
 *
 * Everything below is called on the loop thread, and every callback runs on
 * it. Metrics (cms_metrics_default()): cms_nats_reconnects_total,
 * cms_nats_messages_dropped_total, cms_nats_published_total,
 * cms_nats_publish_errors_total, cms_nats_connected, cms_nats_publish_inflight,
 * cms_nats_permission_violations_total.
 *
 * Credentials, inbox prefix and TLS: see natsauth.h. A refusal of the
 * credentials by the server is logged once with the user, the file and what
 * to do (on_auth_refused); a first connection is then asked for again with
 * backoff, while one refused on reconnecting is given up by nats.c (after
 * its second refusal) until the process restarts. Other reasons a first
 * connection fails (TLS) are logged once each. A permissions violation (a
 * publish or subscription the server's permissions deny) is logged once
 * per subject and counted.
 *
 * nats.c keeps library-wide threads alive after the last connection; call
 * nats_CloseAndWait() once at process end, after cms_nats_destroy (never earlier:
 * it cannot be undone within the process). */
#ifndef CMS_NATS_H
#define CMS_NATS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct cms_nats cms_nats;
typedef struct cms_nats_msg cms_nats_msg; /* one received message, owned by whoever holds it */
typedef struct cms_nats_sub cms_nats_sub;
typedef struct cms_nats_consumer cms_nats_consumer;

typedef enum {
    CMS_NATS_OK = 0,
    CMS_NATS_EINVAL,   /* bad argument, or the call does not apply to this message */
    CMS_NATS_EBUSY,    /* a cap is reached: retry later (see on_publish_room) */
    CMS_NATS_ECLOSED,  /* cms_nats_close was called */
    CMS_NATS_EIO,      /* nats.c or the server refused or failed it (details in the log) */
    CMS_NATS_ETIMEOUT, /* no answer within the deadline */
    CMS_NATS_ENOMEM,
    CMS_NATS_ETOOBIG,   /* larger than the server or the stream takes: never published */
    CMS_NATS_ENOSTREAM, /* no stream takes the subject (maybe not yet) */
} cms_nats_err;

const char *cms_nats_strerror(cms_nats_err e);
#define CMS_NATS_WUR __attribute__((warn_unused_result))

/* Who we are to the server and how we trust it (natsauth.h says how each is
 * read and applied). Every field may be NULL / false. */
typedef struct cms_nats_security {
    const char *creds_file;   /* a .creds file or USER:PASSWORD on its first line; mode 0600 */
    const char *inbox_prefix; /* NULL: _INBOX.<USER> with a USER:PASSWORD file, else _INBOX */
    const char *ca_file;      /* PEM CA(s) the server's certificate must chain to; implies TLS */
    const char *cert_file;    /* PEM client certificate chain (with key_file); implies TLS */
    const char *key_file;     /* its private key; mode 0600 */
    bool tls;                 /* require TLS (so does a tls:// URL) */
} cms_nats_security;

typedef struct cms_nats_options {
    const char *url;  /* comma-separated servers */
    const char *name; /* connection name, e.g. "cms-audit" */
    cms_nats_security security;
    size_t queue_cap;         /* hand-off queue capacity for core messages (default 8192);
                                 also caps queued core publishes */
    int max_publish_inflight; /* default 256 */
    /* Write every publish to the socket at once instead of through nats.c's
     * flusher, which holds buffered writes for up to about a millisecond:
     * for processes answering requests, whose callers wait on each reply.
     * Costs a write per message; throughput-bound consumers leave it off. */
    bool send_asap;
    int64_t publish_timeout_ms; /* default 5000 */
    void (*on_state)(void *arg, bool connected);
    void *state_arg; /* on the loop */
    /* Optional, on the loop, with state_arg: called when the server refused
     * the credentials (authorization violation, logged), once until a
     * connection is made again. */
    void (*on_auth_refused)(void *arg);
    /* Optional, on the loop: called once after cms_nats_js_publish returned
     * CMS_NATS_EBUSY, as soon as a publish slot is free again. Callers may
     * instead retry from their own completion callbacks. */
    void (*on_publish_room)(void *arg);
    void *room_arg;
} cms_nats_options;

/* Starts connecting in the background (a service starts even before
 * nats-server is up; reconnects forever). Does not block.
 * Every int result in this module is 0 or a cms_nats_err. */
int cms_nats_create(uv_loop_t *loop, const cms_nats_options *o, cms_nats **out)
    __attribute__((warn_unused_result));
bool cms_nats_is_connected(const cms_nats *n);
/* True while the server refuses the credentials (since on_auth_refused,
 * until connected). */
bool cms_nats_auth_refused(const cms_nats *n);

/* A new inbox subject of this connection, "<inbox prefix>.<32 random hex>"
 * (the prefix of natsauth.h: "_INBOX.<user>" with password credentials),
 * into out. Every inbox this process subscribes to is made here, so that
 * a server allowing each user only its own inboxes lets it through. Any
 * thread. CMS_NATS_EINVAL if len is too small. */
#define CMS_NATS_STREAM_NAME_MAX 256 /* bytes, with the NUL (nats-server takes 255) */
#define CMS_NATS_INBOX_MAX 192       /* bytes, with the NUL: enough for any inbox made here */
cms_nats_err cms_nats_inbox(const cms_nats *n, char *out, size_t len) CMS_NATS_WUR;
/* Core messages dropped so far, in this process (cms_nats_messages_dropped_total):
 * a subscriber that must not miss one (cache invalidations) compares it
 * between looks. Any thread. */
uint64_t cms_nats_dropped(const cms_nats *n);

/* The largest message (headers and payload) the server takes, from its
 * INFO; nats-server's default of 1 MiB before the first connection. */
size_t cms_nats_max_payload(const cms_nats *n);

/* Provisions streams: creates what is missing; a stream that exists with
 * other settings is used as it is, each difference logged as a warning.
 * Retries (with backoff) until it succeeds or cms_nats_close; done(arg,
 * err) runs once, on the loop. Durations in milliseconds; 0 means
 * unlimited / server default. The spec's strings are copied. Returns 0 or
 * a cms_nats_err. */
typedef struct cms_nats_stream_spec {
    const char *name;
    const char *subject; /* one subject filter, e.g. "cms.events.>" */
    bool memory;         /* memory instead of file storage */
    bool work_queue;     /* work-queue retention: a message is gone once acked */
    bool append_only;    /* deny delete and deny purge: nothing leaves it but by age */
    int replicas;        /* copies in a cluster; 0 or 1: one (its durables take it too) */
    int64_t max_age_ms;
    int64_t duplicates_ms;
} cms_nats_stream_spec;
int cms_nats_provision(cms_nats *n, const cms_nats_stream_spec *specs, size_t count,
                       void (*done)(void *arg, cms_nats_err err), void *arg);

/* A durable pull consumer (explicit ack, deliver all) as cms-migrate
 * provisions it; 0 means the server's default (max_deliver: unlimited). */
typedef struct cms_nats_durable_spec {
    const char *stream, *durable;
    const char *filter_subject; /* NULL: every message of the stream */
    int max_ack_pending;
    int64_t ack_wait_ms;
    int max_deliver;
} cms_nats_durable_spec;
/* The streams, then the durables: each created if missing, else compared
 * (differences logged, the existing one kept). Retries like
 * cms_nats_provision. */
int cms_nats_provision_all(cms_nats *n, const cms_nats_stream_spec *streams, size_t nstreams,
                           const cms_nats_durable_spec *durables, size_t ndurables,
                           void (*done)(void *arg, cms_nats_err err), void *arg);

/* Handlers run on the loop and own msg: they must eventually call
 * cms_nats_msg_destroy (after ack etc.). Messages are delivered only while
 * not closing. */
typedef void (*cms_nats_msg_cb)(void *arg, cms_nats_msg *msg);

/* Core subscription; queue_group NULL for none. The subscription is made by
 * the writer thread (before any publish that follows this call). */
int cms_nats_subscribe(cms_nats *n, const char *subject, const char *queue_group,
                       cms_nats_msg_cb cb, void *arg, cms_nats_sub **out);
/* No handler call for this subscription after it returns; freed later. NULL-safe. */
void cms_nats_unsubscribe(cms_nats_sub *s);

typedef struct cms_nats_consumer_options {
    const char *stream, *durable, *filter_subject;
    int max_ack_pending; /* server-side cap and our credit (default 1024) */
    int fetch_batch;     /* default 256 */
    int64_t ack_wait_ms; /* default 30000 */
    int max_deliver;     /* default -1 (unlimited) */
    /* starts paused (cms_nats_consumer_pause(c, false) to pull): no request
     * is sent before the owner decides it may take messages */
    bool start_paused;
} cms_nats_consumer_options;

/* Durable pull consumer (explicit ack, deliver all). Created if missing; an
 * existing one with other settings is bound as it is (differences logged).
 * Several processes may share one durable. Never deleted by this module.
 * The consumer lives until cms_nats_destroy. */
int cms_nats_consume(cms_nats *n, const cms_nats_consumer_options *o, cms_nats_msg_cb cb, void *arg,
                     cms_nats_consumer **out);
/* Bound to its durable on the server (false while the durable is missing). */
bool cms_nats_consumer_bound(cms_nats_consumer *c);
/* paused: no new fetches (a fetch already under way still delivers). */
void cms_nats_consumer_pause(cms_nats_consumer *c, bool paused);
/* Pauses, then idle(arg) on the loop once the fetch under way has ended and
 * every message it brought has been handed to the callback: from then on
 * nothing comes until unpaused. One at a time (a second call while one is
 * pending is ignored); never called once the connection closes. */
void cms_nats_consumer_quiesce(cms_nats_consumer *c, void (*idle)(void *arg), void *arg);

/* accessors (valid until cms_nats_msg_destroy) */
const char *cms_nats_msg_subject(const cms_nats_msg *m);
const char *cms_nats_msg_reply(const cms_nats_msg *m);
const void *cms_nats_msg_data(const cms_nats_msg *m);
size_t cms_nats_msg_len(const cms_nats_msg *m);
/* First value of the header; exact key match first, then case-insensitive.
 * NULL if absent. Headers are parsed on first use, on the loop. */
const char *cms_nats_msg_header(const cms_nats_msg *m, const char *key);
/* Every header value: count, then the i-th (key, value) pair. */
size_t cms_nats_msg_header_count(const cms_nats_msg *m);
bool cms_nats_msg_header_at(const cms_nats_msg *m, size_t i, const char **key, const char **value);
const char *cms_nats_msg_stream(const cms_nats_msg *m);  /* NULL for core messages */
uint64_t cms_nats_msg_stream_seq(const cms_nats_msg *m); /* 0 for core messages */
uint64_t cms_nats_msg_num_delivered(const cms_nats_msg *m);
uint64_t cms_nats_msg_num_pending(const cms_nats_msg *m); /* consumer lag as of this message */

/* Settling a JetStream message (each returns credit to its consumer; async,
 * non-blocking). A message is settled once: later calls give EINVAL.
 * in_progress (extend AckWait) may be repeated before settling. After
 * cms_nats_close: ECLOSED (the server redelivers after AckWait). */
cms_nats_err cms_nats_msg_ack(cms_nats_msg *m) CMS_NATS_WUR;
cms_nats_err cms_nats_msg_nak(cms_nats_msg *m, int64_t delay_ms) CMS_NATS_WUR; /* 0: now */
cms_nats_err cms_nats_msg_term(cms_nats_msg *m) CMS_NATS_WUR;
cms_nats_err cms_nats_msg_in_progress(cms_nats_msg *m) CMS_NATS_WUR;
/* NULL-safe; destroying an unsettled JS message returns its credit (the
 * server redelivers after AckWait). Every message must be destroyed before
 * cms_nats_destroy. */
void cms_nats_msg_destroy(cms_nats_msg *m);

/* Core publish and reply (queued to the writer; never blocks). headers: NULL
 * or a key, value, key, value, ..., NULL array. EBUSY when queue_cap core
 * publishes are still queued. */
cms_nats_err cms_nats_publish(cms_nats *n, const char *subject, const char *const *headers,
                              const void *data, size_t len);
cms_nats_err cms_nats_publish_request(cms_nats *n, const char *subject, const char *reply,
                                      const char *const *headers, const void *data, size_t len);
/* To req's reply subject; EINVAL if it has none. */
cms_nats_err cms_nats_respond(cms_nats *n, const cms_nats_msg *req, const char *const *headers,
                              const void *data, size_t len);

/* What the stream answered a JetStream publish: the sequence it stored the
 * message at (for a duplicate, the first copy's) and the stream's name.
 * Zero and "" when the publish failed. */
typedef struct cms_nats_pub_ack {
    bool duplicate;
    uint64_t seq;
    const char *stream; /* valid during the callback only */
} cms_nats_pub_ack;

/* JetStream async publish; done(arg, err, ack) on the loop, exactly once per
 * accepted publish (CMS_NATS_OK returned), within about publish_timeout_ms
 * (ETIMEOUT after that); ack is never NULL. msg_id (may be NULL) becomes the
 * Nats-Msg-Id header, so the stream drops a duplicate in its window and
 * reports duplicate. EBUSY at once when max_publish_inflight are in flight:
 * retry from on_publish_room or from a done callback. */
typedef void (*cms_nats_pub_cb)(void *arg, cms_nats_err err, const cms_nats_pub_ack *ack);
cms_nats_err cms_nats_js_publish(cms_nats *n, const char *subject, const char *msg_id,
                                 const char *const *headers, const void *data, size_t len,
                                 cms_nats_pub_cb done, void *arg) CMS_NATS_WUR;
int cms_nats_publish_inflight(const cms_nats *n);

/* Reconnections so far, as the loop has seen them: a caller that must act
 * after one (the outbox checks that the stream still holds what it acked)
 * compares it between looks. Loop. */
uint64_t cms_nats_reconnects(const cms_nats *n);

/* Whether streams still hold messages they acknowledged: for each probe,
 * present[i] is true when the stream holds, at seq, a message whose
 * Nats-Msg-Id is msg_id, or holds nothing at seq though its last sequence
 * is at or past it (removed since: consumed from a work queue, aged out);
 * false when another message is there, the stream ends before seq, or the
 * stream is gone. Blocking JetStream API calls (STREAM.INFO once per stream,
 * STREAM.MSG.GET per probe) on a helper thread, once connected; done(arg,
 * err, present) on the loop, err CMS_NATS_OK or the failure that stopped
 * it (present then NULL), ECLOSED when closing first. */
typedef struct cms_nats_probe {
    const char *stream;
    uint64_t seq;
    const char *msg_id;
} cms_nats_probe;
int cms_nats_probe_stream(cms_nats *n, const cms_nats_probe *probes, size_t count,
                          void (*done)(void *arg, cms_nats_err err, const bool *present), void *arg)
    __attribute__((warn_unused_result));

/* Graceful close, in the background: refuses new work at once; stops the
 * consumers (joins their threads), waits for in-flight publishes (at most
 * publish_timeout_ms + 1 s), drains and closes the connection, then closes
 * its loop handle and calls closed(arg) on the loop. Publishes still
 * unanswered then complete with ECLOSED. Idempotent (the first closed wins). */
void cms_nats_close(cms_nats *n, void (*closed)(void *arg), void *arg);
void cms_nats_destroy(cms_nats *n); /* after closed; NULL-safe */

#endif
