/* A small HTTP/1.1 server for probes and metrics; see http.h.
 *
 * Each connection owns a fixed read buffer and an http_parser. Replies are
 * built whole, synchronously, when a request completes, and queued with
 * uv_write — libuv writes a stream's requests in order, which keeps
 * pipelined replies in request order. A client that pipelines without
 * reading is throttled: at MAX_QUEUED replies in flight the parser is paused
 * (the unparsed bytes stay in the read buffer) and reading stops until
 * writes drain.
 *
 * Closing after an error reply is graceful: shut down our side, then read
 * and discard what the client still sends for a short while before closing,
 * so that the kernel does not answer unread data with a reset that would
 * destroy the reply in flight. */
#include "http.h"

#include <http_parser.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fsm.h"
#include "log.h"

#define MAX_HEAD 8192 /* request line + headers */
#define MAX_BODY 1024 /* read and ignored; larger is refused */
#define MAX_URL 2048
#define MAX_CONNS 128
#define MAX_QUEUED 16 /* replies written but not yet acknowledged by libuv */
#define IDLE_TIMEOUT_MS 10000
#define LINGER_MS 2000
#define READ_BUF 8192

#define SRV_STATES(X) X(SRV_OPEN, "open") X(SRV_CLOSING, "closing") X(SRV_CLOSED, "closed")
typedef enum { SRV_STATES(CMS_ENUM_ITEM) SRV_NSTATES } srv_state;
static const char *const srv_names[] = {SRV_STATES(CMS_ENUM_TEXT)};
static const bool srv_moves[SRV_NSTATES][SRV_NSTATES] = {
    [SRV_OPEN] = {[SRV_CLOSING] = true, [SRV_CLOSED] = true}, /* closed: a failed create */
    [SRV_CLOSING] = {[SRV_CLOSED] = true},
};
static const cms_fsm srv_fsm = CMS_FSM_INIT("http server", CMS_LOG_DEBUG, srv_names, srv_moves);

/*   CONN_READING    parsing requests
 *   CONN_FLUSHING   no more requests: replies draining, then shutdown
 *   CONN_LINGERING  shut down; discarding input until EOF or LINGER_MS
 *   CONN_CLOSING    uv_close called; freed when both handles are closed */
#define CONN_STATES(X)                                                                             \
    X(CONN_READING, "reading")                                                                     \
    X(CONN_FLUSHING, "flushing")                                                                   \
    X(CONN_LINGERING, "lingering")                                                                 \
    X(CONN_CLOSING, "closing")
typedef enum { CONN_STATES(CMS_ENUM_ITEM) CONN_NSTATES } conn_state;
static const char *const conn_names[] = {CONN_STATES(CMS_ENUM_TEXT)};
static const bool conn_moves[CONN_NSTATES][CONN_NSTATES] = {
    [CONN_READING] = {[CONN_FLUSHING] = true, [CONN_CLOSING] = true},
    [CONN_FLUSHING] = {[CONN_LINGERING] = true, [CONN_CLOSING] = true},
    [CONN_LINGERING] = {[CONN_CLOSING] = true},
};
static const cms_fsm conn_fsm =
    CMS_FSM_INIT("http connection", CMS_LOG_DEBUG, conn_names, conn_moves);

typedef struct route {
    char *path;
    cms_http_handler fn;
    void *arg;
} route;

struct cms_http_reply {
    int status;
    char *content_type;
    char *body;
    size_t len;
    bool set;
    bool oom;
};

typedef struct conn conn;

struct cms_http {
    uv_loop_t *loop;
    srv_state state;
    uv_tcp_t listener;
    bool listener_open;
    int port;
    uint64_t idle_timeout_ms;
    route *routes;
    size_t nroutes;
    conn *conns;  /* doubly linked, every conn until freed */
    size_t nlive; /* conns not CONN_CLOSING */
    void (*closed)(void *arg);
    void *closed_arg;
    http_parser_settings settings;
    /* probes */
    cms_metrics *metrics;
    cms_http_ready_fn ready;
    void *ready_arg;
};

struct conn {
    cms_http *srv;
    conn *prev, *next;
    conn_state state;
    uv_tcp_t tcp;
    uv_timer_t timer;
    int open_handles;
    bool reading, paused, eof;
    uv_shutdown_t shutdown;
    http_parser parser;
    int err_status; /* set by a callback that refuses the request */
    size_t nqueued;
    uint64_t armed_ms; /* loop time of the last progress (conn_arm_idle) */
    char url[MAX_URL];
    size_t url_len;
    bool url_too_long; /* refused (414) once the head is whole: see on_url */
    size_t body_len;
    char rbuf[READ_BUF];
    size_t roff, rlen; /* unparsed bytes rbuf[roff..rlen) while paused */
    /* cms_http_feed's connection: no socket, no timer; replies go to sink */
    cms_http_sink sink;
    void *sink_arg;
};

typedef struct write_req {
    uv_write_t req;
    conn *c;
    char data[];
} write_req;

static void conn_close(conn *c);
static void process_input(conn *c);
static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

/* The one place a connection's state changes. */
static void conn_set_state(conn *c, conn_state to)
{
    c->state = (conn_state)cms_fsm_step(&conn_fsm, c->state, to, NULL);
}

static void srv_set_state(cms_http *h, srv_state to)
{
    h->state = (srv_state)cms_fsm_step(&srv_fsm, h->state, to, NULL);
}

static void count_reply(int status)
{
    char labels[32];
    snprintf(labels, sizeof labels, "code=\"%d\"", status);
    cms_counter_inc(cms_metrics_counter(cms_metrics_default(), "cms_http_requests_total",
                                        "HTTP requests answered, by status code", labels));
}

/* ---- replies ---- */

void cms_http_reply_set(cms_http_reply *r, int status, const char *content_type, const char *body,
                        size_t len)
{
    char *ct = strdup(content_type ? content_type : "text/plain; charset=utf-8");
    char *b = malloc(len ? len : 1);
    if (ct == NULL || b == NULL) {
        free(ct);
        free(b);
        r->oom = true;
        return;
    }
    if (len)
        memcpy(b, body, len);
    free(r->content_type);
    free(r->body);
    r->status = status;
    r->content_type = ct;
    r->body = b;
    r->len = len;
    r->set = true;
}

static void reply_clear(cms_http_reply *r)
{
    free(r->content_type);
    free(r->body);
    memset(r, 0, sizeof *r);
}

static void conn_arm_idle(conn *c);

static void on_write(uv_write_t *req, int status)
{
    write_req *w = (write_req *)req;
    conn *c = w->c;
    free(w);
    c->nqueued--;
    if (status < 0) {
        if (status != UV_ECANCELED)
            cms_log_debug("http write failed", "{s:s}", "error", uv_strerror(status));
        conn_close(c);
        return;
    }
    if (c->state != CONN_READING)
        return;
    conn_arm_idle(c);
    if (c->paused && c->nqueued <= MAX_QUEUED / 2) {
        http_parser_pause(&c->parser, 0);
        c->paused = false;
        process_input(c);
    }
}

/* Queues one whole reply. extra_headers: "" or lines each ending in CRLF. */
static int send_reply(conn *c, int status, const char *ctype, const char *body, size_t len,
                      bool head_only, bool keep_alive, const char *extra_headers)
{
    char head[512];
    const char *reason = http_status_str((enum http_status)status);
    int n =
        snprintf(head, sizeof head,
                 "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                 "Cache-Control: no-store\r\nConnection: %s\r\n%s\r\n",
                 status, reason, ctype, len, keep_alive ? "keep-alive" : "close", extra_headers);
    if (n < 0 || (size_t)n >= sizeof head)
        return UV_EINVAL;
    size_t total = (size_t)n + (head_only ? 0 : len);
    write_req *w = malloc(sizeof *w + total);
    if (w == NULL)
        return UV_ENOMEM;
    memcpy(w->data, head, (size_t)n);
    if (!head_only && len)
        memcpy(w->data + n, body, len);
    w->c = c;
    if (c->sink != NULL) { /* written at once: never queued, never throttled */
        c->sink(c->sink_arg, w->data, total);
        free(w);
        count_reply(status);
        return 0;
    }
    uv_buf_t b = uv_buf_init(w->data, (unsigned)total);
    int rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_write);
    if (rc < 0) {
        free(w);
        return rc;
    }
    c->nqueued++;
    count_reply(status);
    return 0;
}

/* ---- connection lifecycle ---- */

static void srv_maybe_closed(cms_http *h)
{
    if (h->state == SRV_CLOSING && !h->listener_open && h->conns == NULL) {
        srv_set_state(h, SRV_CLOSED);
        if (h->closed)
            h->closed(h->closed_arg);
    }
}

static void on_conn_handle_closed(uv_handle_t *hd)
{
    conn *c = hd->data;
    if (--c->open_handles > 0)
        return;
    cms_http *h = c->srv;
    if (c->prev)
        c->prev->next = c->next;
    else
        h->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    free(c);
    srv_maybe_closed(h);
}

/* Immediate close; pending writes are cancelled (their callbacks run first). */
static void conn_close(conn *c)
{
    if (c->state == CONN_CLOSING)
        return;
    conn_set_state(c, CONN_CLOSING);
    c->srv->nlive--;
    if (c->sink != NULL)
        return; /* no handles: cms_http_feed frees it */
    uv_close((uv_handle_t *)&c->timer, on_conn_handle_closed);
    uv_close((uv_handle_t *)&c->tcp, on_conn_handle_closed);
}

static void on_conn_timer(uv_timer_t *t)
{
    conn *c = t->data;
    if (c->state != CONN_LINGERING)
        cms_log_debug("http connection timed out", "{s:s}", "state",
                      cms_fsm_name(&conn_fsm, c->state));
    conn_close(c);
}

/* A request must complete within IDLE_TIMEOUT_MS of the previous reply's
 * progress: trickling bytes does not extend it. */
static void conn_arm_idle(conn *c)
{
    c->armed_ms = uv_now(c->srv->loop);
    if (c->sink == NULL)
        uv_timer_start(&c->timer, on_conn_timer, c->srv->idle_timeout_ms, 0);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    conn *c = req->data;
    if (c->state != CONN_FLUSHING)
        return; /* closed meanwhile */
    if (status < 0 || c->eof) {
        conn_close(c);
        return;
    }
    conn_set_state(c, CONN_LINGERING);
    uv_timer_start(&c->timer, on_conn_timer, LINGER_MS, 0);
}

static void on_alloc(uv_handle_t *hd, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    conn *c = hd->data;
    /* reading is stopped while unparsed bytes wait in rbuf, so it is free here */
    *buf = uv_buf_init(c->rbuf, sizeof c->rbuf);
}

/* No more requests on this connection: let queued replies go, then shut
 * down our side and linger. */
static void conn_finish(conn *c)
{
    if (c->state != CONN_READING)
        return;
    conn_set_state(c, CONN_FLUSHING);
    c->rlen = c->roff = 0;
    if (c->sink != NULL)
        return; /* nothing to shut down: the feed ends */
    c->shutdown.data = c;
    if (uv_shutdown(&c->shutdown, (uv_stream_t *)&c->tcp, on_shutdown) < 0) {
        conn_close(c);
        return;
    }
    /* keep reading (and discarding) so unread input cannot turn into a reset */
    if (!c->reading && !c->eof && uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0)
        c->reading = true;
}

/* Answers a request that cannot be parsed or is refused, then finishes. */
static void conn_fail(conn *c, int status)
{
    static const char *const bodies[] = {"bad request\n", "request header too large\n",
                                         "body not accepted\n", "URI too long\n"};
    const char *body = status == 431   ? bodies[1]
                       : status == 413 ? bodies[2]
                       : status == 414 ? bodies[3]
                                       : bodies[0];
    if (send_reply(c, status, "text/plain; charset=utf-8", body, strlen(body), false, false, "") <
        0) {
        conn_close(c);
        return;
    }
    conn_finish(c);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    (void)buf;
    conn *c = s->data;
    if (nread == 0)
        return;
    if (nread < 0) {
        c->reading = false; /* libuv stops reading on EOF and errors */
        if (nread != UV_EOF || c->state == CONN_LINGERING) {
            conn_close(c);
            return;
        }
        c->eof = true;
        if (c->state == CONN_READING) {
            /* a half request is dropped; replies already queued still go out */
            if (c->nqueued == 0)
                conn_close(c);
            else
                conn_finish(c);
        }
        return;
    }
    if (c->state != CONN_READING)
        return; /* discarding */
    c->roff = 0;
    c->rlen = (size_t)nread;
    process_input(c);
}

/* Feeds rbuf[roff..rlen) to the parser; stops early when it pauses. */
static void process_input(conn *c)
{
    while (c->state == CONN_READING && c->roff < c->rlen) {
        size_t n = http_parser_execute(&c->parser, &c->srv->settings, c->rbuf + c->roff,
                                       c->rlen - c->roff);
        c->roff += n;
        if (c->state != CONN_READING)
            return; /* a handler closed us (e.g. by closing the server) */
        enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
        if (e == HPE_PAUSED)
            break;
        if (e != HPE_OK) {
            int status = c->err_status ? c->err_status : e == HPE_HEADER_OVERFLOW ? 431 : 400;
            cms_log_debug("http request refused", "{s:i, s:s}", "status", status, "parser",
                          http_errno_name(e));
            conn_fail(c, status);
            return;
        }
        if (c->parser.upgrade) { /* the rest would be another protocol: not ours */
            conn_finish(c);
            return;
        }
    }
    if (c->state != CONN_READING)
        return;
    if (c->paused) {
        /* the callback that paused decides: either throttle or stop for good */
        if (c->reading && uv_read_stop((uv_stream_t *)&c->tcp) == 0)
            c->reading = false;
        return;
    }
    c->roff = c->rlen = 0;
    if (!c->reading && !c->eof && c->sink == NULL) {
        if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) < 0) {
            conn_close(c);
            return;
        }
        c->reading = true;
    }
}

/* ---- parser callbacks ---- */

static int on_message_begin(http_parser *p)
{
    conn *c = p->data;
    c->url_len = 0;
    c->url_too_long = false;
    c->body_len = 0;
    return 0;
}

/* A URL too long for c->url is refused when the head is complete, not at
 * once: http_parser calls this once per read with what the read held of
 * the URL, so refusing here would answer 414 or (for a bad byte further
 * on, which the parser finds before its first call) 400 depending on how
 * the bytes came in (tests/fuzz/corpus/http/regress-long-bad-url). */
static int on_url(http_parser *p, const char *at, size_t len)
{
    conn *c = p->data;
    if (c->url_too_long || len >= sizeof c->url - c->url_len) {
        c->url_too_long = true;
        return 0;
    }
    memcpy(c->url + c->url_len, at, len);
    c->url_len += len;
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    conn *c = p->data;
    if (c->url_too_long) {
        c->err_status = 414;
        return -1;
    }
    if (p->content_length != ULLONG_MAX && p->content_length > MAX_BODY) {
        c->err_status = 413;
        return -1;
    }
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    (void)at;
    conn *c = p->data;
    c->body_len += len;
    if (c->body_len > MAX_BODY) {
        c->err_status = 413;
        return -1;
    }
    return 0;
}

static const route *find_route(const cms_http *h, const char *path, size_t len)
{
    for (size_t i = 0; i < h->nroutes; i++) {
        if (strlen(h->routes[i].path) == len && memcmp(h->routes[i].path, path, len) == 0)
            return &h->routes[i];
    }
    return NULL;
}

static int on_message_complete(http_parser *p)
{
    conn *c = p->data;
    cms_http *h = c->srv;
    bool head_only = p->method == HTTP_HEAD;
    bool keep = http_should_keep_alive(p) && h->state == SRV_OPEN && !p->upgrade;
    c->url[c->url_len] = '\0'; /* on_url keeps url_len < MAX_URL */
    size_t plen = strcspn(c->url, "?#");
    const route *r = find_route(h, c->url, plen);
    const char *text = "text/plain; charset=utf-8";
    int rc;

    if (r == NULL) {
        rc = send_reply(c, 404, text, "not found\n", 10, head_only, keep, "");
    } else if (p->method != HTTP_GET && p->method != HTTP_HEAD) {
        rc = send_reply(c, 405, text, "method not allowed\n", 19, false, keep,
                        "Allow: GET, HEAD\r\n");
    } else {
        cms_http_reply reply = {0};
        r->fn(r->arg, &reply);
        if (c->state != CONN_READING) { /* the handler closed the server */
            reply_clear(&reply);
            http_parser_pause(p, 1);
            return 0;
        }
        if (!reply.set || reply.oom)
            rc = send_reply(c, 500, text, "internal error\n", 15, head_only, keep, "");
        else
            rc = send_reply(c, reply.status, reply.content_type, reply.body, reply.len, head_only,
                            keep, "");
        reply_clear(&reply);
    }
    keep = keep && h->state == SRV_OPEN;
    if (rc < 0 || !keep) {
        /* stop parsing here: the bytes after this request are not ours to answer */
        http_parser_pause(p, 1);
        c->paused = true;
        if (rc < 0)
            conn_close(c);
        else
            conn_finish(c);
        return 0;
    }
    conn_arm_idle(c);
    if (c->nqueued >= MAX_QUEUED) {
        http_parser_pause(p, 1);
        c->paused = true;
    }
    return 0;
}

/* ---- listener ---- */

/* With every connection in use, the one that gives way to a newcomer:
 * lingering, or waiting for a request with no reply in flight, and the
 * longest without progress. Idle and slow clients (slowloris) so cannot
 * keep the probes out: a probe's request completes at once, theirs never
 * does, and they are older. NULL when all of them are busy answering. */
static conn *eviction_victim(cms_http *h, const conn *newcomer)
{
    conn *best = NULL;
    for (conn *c = h->conns; c != NULL; c = c->next) {
        if (c == newcomer || c->state == CONN_CLOSING || c->state == CONN_FLUSHING)
            continue;
        if (c->state == CONN_READING && c->nqueued > 0)
            continue;
        if (best == NULL || c->armed_ms <= best->armed_ms) /* ties: the older */
            best = c;
    }
    return best;
}

static void on_connection(uv_stream_t *server, int status)
{
    cms_http *h = server->data;
    if (status < 0) {
        cms_log_warn("http accept failed", "{s:s}", "error", uv_strerror(status));
        return;
    }
    conn *c = calloc(1, sizeof *c);
    if (c == NULL)
        return; /* the pending connection stays in the backlog */
    c->srv = h; /* calloc: CONN_READING */
    uv_tcp_init(h->loop, &c->tcp);
    uv_timer_init(h->loop, &c->timer);
    c->tcp.data = c->timer.data = c;
    c->open_handles = 2;
    c->next = h->conns;
    if (h->conns)
        h->conns->prev = c;
    h->conns = c;
    h->nlive++;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) < 0 || h->state != SRV_OPEN) {
        conn_close(c);
        return;
    }
    if (h->nlive > MAX_CONNS) {
        conn *victim = eviction_victim(h, c);
        if (victim == NULL) {
            cms_counter_inc(
                cms_metrics_counter(cms_metrics_default(), "cms_http_connections_rejected_total",
                                    "HTTP connections closed at once: too many open", NULL));
            conn_close(c);
            return;
        }
        cms_counter_inc(cms_metrics_counter(
            cms_metrics_default(), "cms_http_connections_evicted_total",
            "HTTP connections closed to make room: the longest without progress", NULL));
        cms_log_debug("http connection evicted", "{s:s}", "state",
                      cms_fsm_name(&conn_fsm, victim->state));
        conn_close(victim);
    }
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    uv_tcp_nodelay(&c->tcp, 1);
    conn_arm_idle(c);
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) < 0) {
        conn_close(c);
        return;
    }
    c->reading = true;
}

/* "HOST:PORT" or "[V6]:PORT" into a sockaddr. */
static int parse_addr(const char *addr, struct sockaddr_storage *ss)
{
    char host[64];
    const char *port_s;
    bool v6 = false;
    if (addr == NULL)
        return UV_EINVAL;
    if (addr[0] == '[') {
        const char *end = strchr(addr, ']');
        if (end == NULL || end[1] != ':' || (size_t)(end - addr - 1) >= sizeof host)
            return UV_EINVAL;
        memcpy(host, addr + 1, (size_t)(end - addr - 1));
        host[end - addr - 1] = '\0';
        port_s = end + 2;
        v6 = true;
    } else {
        const char *colon = strrchr(addr, ':');
        if (colon == NULL || (size_t)(colon - addr) >= sizeof host || strchr(addr, ':') != colon)
            return UV_EINVAL;
        memcpy(host, addr, (size_t)(colon - addr));
        host[colon - addr] = '\0';
        port_s = colon + 1;
    }
    if (*port_s == '\0' || strlen(port_s) > 5)
        return UV_EINVAL;
    long port = 0;
    for (const char *q = port_s; *q; q++) {
        if (*q < '0' || *q > '9')
            return UV_EINVAL;
        port = port * 10 + (*q - '0');
    }
    if (port > 65535)
        return UV_EINVAL;
    if (v6)
        return uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)ss);
    return uv_ip4_addr(host, (int)port, (struct sockaddr_in *)ss);
}

static void on_listener_closed(uv_handle_t *hd)
{
    cms_http *h = hd->data;
    h->listener_open = false;
    srv_maybe_closed(h);
}

static void free_on_close(uv_handle_t *hd)
{
    cms_http_destroy(hd->data);
}

int cms_http_create(uv_loop_t *loop, const char *addr, cms_http **out)
{
    cms_http *h = NULL;
    struct sockaddr_storage ss;
    int rc = parse_addr(addr, &ss);
    if (rc < 0)
        goto out;
    h = calloc(1, sizeof *h);
    if (h == NULL) {
        rc = UV_ENOMEM;
        goto out;
    }
    h->loop = loop; /* calloc: SRV_OPEN */
    h->idle_timeout_ms = IDLE_TIMEOUT_MS;
    h->settings.on_message_begin = on_message_begin;
    h->settings.on_url = on_url;
    h->settings.on_headers_complete = on_headers_complete;
    h->settings.on_body = on_body;
    h->settings.on_message_complete = on_message_complete;
    /* process-wide in http_parser; this module is its only user */
    http_parser_set_max_header_size(MAX_HEAD);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);

    if ((rc = uv_tcp_init(loop, &h->listener)) < 0)
        goto out;
    h->listener.data = h;
    h->listener_open = true;
    struct sockaddr_storage bound;
    int blen = sizeof bound;
    if ((rc = uv_tcp_bind(&h->listener, (const struct sockaddr *)&ss, 0)) < 0 ||
        (rc = uv_listen((uv_stream_t *)&h->listener, 511, on_connection)) < 0 ||
        (rc = uv_tcp_getsockname(&h->listener, (struct sockaddr *)&bound, &blen)) < 0) {
        cms_log_error("http listen failed", "{s:s, s:s}", "addr", addr, "error", uv_strerror(rc));
        goto out;
    }
    h->port = bound.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&bound)->sin6_port)
                                          : ntohs(((struct sockaddr_in *)&bound)->sin_port);
    cms_log_info("http listening", "{s:s, s:i}", "addr", addr, "port", h->port);
    *out = h;
    h = NULL;
out:
    if (h && h->listener_open) {
        /* an initialised handle is freed by its close callback, next loop turn */
        srv_set_state(h, SRV_CLOSED);
        uv_close((uv_handle_t *)&h->listener, free_on_close);
    } else {
        cms_http_destroy(h);
    }
    return rc;
}

int cms_http_feed(cms_http *h, const void *data, size_t len, size_t chunk, cms_http_sink out,
                  void *arg)
{
    conn *c = calloc(1, sizeof *c); /* CONN_READING */
    if (c == NULL)
        return UV_ENOMEM;
    c->srv = h;
    c->sink = out;
    c->sink_arg = arg;
    h->nlive++;
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    if (chunk == 0 || chunk > sizeof c->rbuf)
        chunk = sizeof c->rbuf;
    /* as on_read hands each read to the parser; a pause here is never a
     * throttle (nothing is queued), so it ends the connection's requests */
    for (size_t at = 0; at < len && c->state == CONN_READING && !c->paused;) {
        size_t n = len - at < chunk ? len - at : chunk;
        memcpy(c->rbuf, (const char *)data + at, n);
        at += n;
        c->roff = 0;
        c->rlen = n;
        process_input(c);
    }
    /* then the client's EOF, as on_read takes it: nothing is queued, so a
     * half request is dropped and the connection closes */
    c->eof = true;
    conn_close(c);
    free(c);
    return 0;
}

void cms_http_set_idle_timeout(cms_http *h, uint64_t ms)
{
    h->idle_timeout_ms = ms;
}

int cms_http_port(const cms_http *h)
{
    return h->port;
}

int cms_http_route(cms_http *h, const char *path, cms_http_handler fn, void *arg)
{
    if (h == NULL || path == NULL || path[0] != '/' || fn == NULL)
        return -1;
    for (size_t i = 0; i < h->nroutes; i++) {
        if (strcmp(h->routes[i].path, path) == 0) {
            h->routes[i].fn = fn;
            h->routes[i].arg = arg;
            return 0;
        }
    }
    char *copy = strdup(path);
    route *rs = copy ? realloc(h->routes, (h->nroutes + 1) * sizeof *rs) : NULL;
    if (rs == NULL) {
        free(copy);
        return -1;
    }
    h->routes = rs;
    h->routes[h->nroutes++] = (route){.path = copy, .fn = fn, .arg = arg};
    return 0;
}

/* ---- probes ---- */

static void healthz(void *arg, cms_http_reply *reply)
{
    (void)arg;
    cms_http_reply_set(reply, 200, NULL, "ok", 2);
}

static void readyz(void *arg, cms_http_reply *reply)
{
    cms_http *h = arg;
    char why[256] = "not ready";
    if (h->ready == NULL || h->ready(h->ready_arg, why, sizeof why)) {
        cms_http_reply_set(reply, 200, NULL, "ready", 5);
        return;
    }
    why[sizeof why - 1] = '\0';
    cms_http_reply_set(reply, 503, NULL, why, strlen(why));
}

static void metrics(void *arg, cms_http_reply *reply)
{
    cms_http *h = arg;
    char *text = NULL;
    size_t len = 0;
    if (cms_metrics_render(h->metrics ? h->metrics : cms_metrics_default(), &text, &len) < 0) {
        cms_http_reply_set(reply, 500, NULL, "render failed\n", 14);
        return;
    }
    cms_http_reply_set(reply, 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
    free(text);
}

int cms_http_serve_probes(cms_http *h, cms_metrics *m, cms_http_ready_fn ready, void *arg)
{
    if (h == NULL)
        return -1;
    h->metrics = m;
    h->ready = ready;
    h->ready_arg = arg;
    if (cms_http_route(h, "/healthz", healthz, h) < 0 ||
        cms_http_route(h, "/readyz", readyz, h) < 0 ||
        cms_http_route(h, "/metrics", metrics, h) < 0)
        return -1;
    return 0;
}

/* ---- shutdown ---- */

void cms_http_close(cms_http *h, void (*closed)(void *arg), void *arg)
{
    if (h == NULL || h->state != SRV_OPEN)
        return;
    srv_set_state(h, SRV_CLOSING);
    h->closed = closed;
    h->closed_arg = arg;
    uv_close((uv_handle_t *)&h->listener, on_listener_closed);
    for (conn *c = h->conns; c; c = c->next)
        conn_close(c);
}

void cms_http_destroy(cms_http *h)
{
    if (h == NULL)
        return;
    for (size_t i = 0; i < h->nroutes; i++)
        free(h->routes[i].path);
    free(h->routes);
    free(h);
}
