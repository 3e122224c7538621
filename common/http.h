/* A tiny HTTP/1.1 server on the loop (http_parser over uv_tcp), for the
 * probes and metrics of a service: GET and HEAD only, no request bodies.
 *
 * Limits, because the port may be reachable by anything: a request head of
 * at most 8 KiB (431 and close), a body of at most 1 KiB, refused anyway
 * (413 and close), at most 128 connections, 10 s without progress closes a
 * connection, parse errors answer 400 and close. At 128, a newcomer takes
 * the place of the connection longest without progress that is not
 * answering (cms_http_connections_evicted_total): hundreds of idle or slow
 * clients cannot keep /healthz and /readyz out; only when all 128 are
 * busy answering is the newcomer closed at once
 * (cms_http_connections_rejected_total).
 * Keep-alive and pipelining are honoured; replies go out in request order.
 * Every reply counts into cms_http_requests_total{code="..."} of
 * cms_metrics_default(). cms_http_create ignores SIGPIPE (a peer that
 * vanishes mid-reply must give EPIPE, not end the process). */
#ifndef CMS_HTTP_H
#define CMS_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "metrics.h"

typedef struct cms_http cms_http;
typedef struct cms_http_reply cms_http_reply;

/* Handlers run on the loop and must not block; they set the reply before
 * returning (a handler that sets nothing answers 500). */
typedef void (*cms_http_handler)(void *arg, cms_http_reply *reply);
/* Copies content_type and body; a later call replaces an earlier one. */
void cms_http_reply_set(cms_http_reply *r, int status, const char *content_type, const char *body,
                        size_t len);

/* addr: "IPV4:PORT" or "[IPV6]:PORT", numeric (e.g. "0.0.0.0:8080",
 * "[::]:8080"); port 0 picks a free one.
 * Returns 0 or a negative libuv error (UV_EINVAL for a malformed addr). When
 * binding or listening fails, the half-made server frees itself from a close
 * callback: run the loop before uv_loop_close. */
int cms_http_create(uv_loop_t *loop, const char *addr, cms_http **out)
    __attribute__((warn_unused_result));
int cms_http_port(const cms_http *h); /* the bound port */
/* Exact path match (the query string is ignored), for GET and HEAD.
 * Registering a path again replaces its handler. Returns 0 or < 0. */
int cms_http_route(cms_http *h, const char *path, cms_http_handler fn, void *arg);

/* The idle/slow-client limit (default 10 s): a connection whose next
 * request does not complete this long after its previous reply is closed. */
void cms_http_set_idle_timeout(cms_http *h, uint64_t ms);

/* Fills why (NUL-terminated, at most whylen bytes) when returning false. */
typedef bool (*cms_http_ready_fn)(void *arg, char *why, size_t whylen);
/* /healthz: 200 "ok" whenever the loop answers. /readyz: ready(arg, ...) true
 * -> 200 "ready", false -> 503 with the reason as body (ready NULL means
 * always ready). /metrics: cms_metrics_render(m) as text/plain; version=0.0.4
 * (m NULL means cms_metrics_default()). */
int cms_http_serve_probes(cms_http *h, cms_metrics *m, cms_http_ready_fn ready, void *arg);

/* Receives one reply's bytes, status line to body, valid during the call. */
typedef void (*cms_http_sink)(void *arg, const char *data, size_t len);

/* The seam for tests and fuzzing, without a socket: what one connection
 * to h does with a client that sends data (handed to the parser in reads
 * of at most chunk bytes; 0: the read buffer's 8 KiB) and then closes.
 * Handlers run as for a socket's connection and every reply goes to
 * out(arg, ...), in order, as it would be written; replies count in the
 * metrics as well. Returns 0, or UV_ENOMEM (out not called). */
int cms_http_feed(cms_http *h, const void *data, size_t len, size_t chunk, cms_http_sink out,
                  void *arg) __attribute__((warn_unused_result));

/* Stops listening and closes every connection; closed(arg) is called once
 * all its handles are closed (closed may be NULL). Idempotent. Then free it
 * with cms_http_destroy (not from inside closed is fine too). */
void cms_http_close(cms_http *h, void (*closed)(void *arg), void *arg);
/* NULL-safe. Only after closed ran (or if the loop never ran after create,
 * after cms_http_close and uv_run). */
void cms_http_destroy(cms_http *h);

#endif
