/* http: the probe server driven by uv TCP clients on the same loop.
 *
 * Clients run in batches: every client of a batch starts at once, and the
 * next batch starts when all of them are done (replies read or connection
 * closed). After the last batch the server is closed; every test ends with
 * the server's closed callback having run and uv_loop_close() == 0. */
#include <criterion/criterion.h>
#include <http_parser.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"
#include "log.h"
#include "metrics.h"

#define MAXR 8
#define MAX_CLIENTS 200

typedef enum { AFTER_NOTHING, AFTER_CLOSE, AFTER_RESET } after_send;

typedef struct ht ht;

typedef struct client {
    ht *t;
    /* what to do */
    int batch;
    const char *req;
    size_t reqlen;
    int expect;               /* replies to read, then done; 0: read until the server closes */
    unsigned head_mask;       /* bit i: reply i answers a HEAD (no body) */
    bool hold;                /* stay connected when done, until the batch is over */
    after_send after;         /* right after the request is written */
    size_t reset_after_bytes; /* > 0: reset once this much of the reply arrived */
    bool close_server_on_connect;
    /* what happened */
    uv_tcp_t tcp;
    uv_connect_t creq;
    uv_write_t wreq;
    bool done, closed;
    http_parser p;
    int nresp, n200;
    int status[MAXR];
    char body[MAXR][512];
    size_t bodylen[MAXR];
    char raw[16384];
    size_t rawlen, total;
    bool eof;
    int err;
    bool parse_error;
    uint64_t done_ns;
    char rbuf[65536];
} client;

struct ht {
    uv_loop_t loop;
    cms_http *h;
    cms_metrics *m;
    uv_timer_t watchdog;
    client *cl;
    size_t ncl;
    int batch;
    bool finishing, server_close_called, server_closed, timed_out;
    int ready_mode; /* 0 ready, 1 not ready, 2 alternate starting with ready */
    int ready_calls;
    uint64_t start_ns;
};

static void client_finish(client *c);
static void ht_close_server(ht *t);

/* ---- client ---- */

static int on_resp_headers(http_parser *p)
{
    client *c = p->data;
    if (c->nresp < MAXR)
        c->status[c->nresp] = p->status_code;
    return c->nresp < 32 && (c->head_mask >> c->nresp & 1) ? 1 : 0;
}

static int on_resp_body(http_parser *p, const char *at, size_t len)
{
    client *c = p->data;
    if (c->nresp < MAXR) {
        size_t room = sizeof c->body[0] - 1 - c->bodylen[c->nresp];
        size_t n = len < room ? len : room;
        memcpy(c->body[c->nresp] + c->bodylen[c->nresp], at, n);
        c->bodylen[c->nresp] += n;
    }
    return 0;
}

static int on_resp_complete(http_parser *p)
{
    client *c = p->data;
    if (p->status_code == 200)
        c->n200++;
    c->nresp++;
    if (c->expect > 0 && c->nresp == c->expect)
        http_parser_pause(p, 1); /* stop here; the read callback finishes */
    return 0;
}

static const http_parser_settings resp_settings = {
    .on_headers_complete = on_resp_headers,
    .on_body = on_resp_body,
    .on_message_complete = on_resp_complete,
};

static void client_alloc(uv_handle_t *h, size_t sz, uv_buf_t *buf)
{
    (void)sz;
    client *c = h->data;
    *buf = uv_buf_init(c->rbuf, sizeof c->rbuf);
}

static void client_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    client *c = s->data;
    if (c->closed)
        return;
    if (n < 0) {
        if (n == UV_EOF)
            c->eof = true;
        else
            c->err = (int)n;
        http_parser_execute(&c->p, &resp_settings, NULL, 0); /* end of a read-to-EOF body */
        client_finish(c);
        return;
    }
    size_t keep = sizeof c->raw - 1 - c->rawlen;
    keep = (size_t)n < keep ? (size_t)n : keep;
    memcpy(c->raw + c->rawlen, buf->base, keep);
    c->rawlen += keep;
    c->total += (size_t)n;
    if (c->done)
        return;
    if (c->reset_after_bytes && c->total >= c->reset_after_bytes) {
        c->closed = true;
        uv_tcp_close_reset(&c->tcp, NULL);
        client_finish(c);
        return;
    }
    http_parser_execute(&c->p, &resp_settings, buf->base, (size_t)n);
    enum http_errno e = HTTP_PARSER_ERRNO(&c->p);
    if (e == HPE_PAUSED) {
        client_finish(c);
    } else if (e != HPE_OK) {
        c->parse_error = true;
        client_finish(c);
    }
}

static void client_written(uv_write_t *w, int status)
{
    client *c = w->data;
    if (status < 0 && !c->err)
        c->err = status;
    if (c->closed)
        return;
    if (c->after == AFTER_CLOSE) {
        client_finish(c);
    } else if (c->after == AFTER_RESET) {
        c->closed = true;
        uv_tcp_close_reset(&c->tcp, NULL);
        client_finish(c);
    }
}

static void client_connected(uv_connect_t *r, int status)
{
    client *c = r->data;
    if (status < 0) {
        c->err = status;
        client_finish(c);
        return;
    }
    if (c->close_server_on_connect)
        ht_close_server(c->t);
    uv_read_start((uv_stream_t *)&c->tcp, client_alloc, client_read);
    if (c->reqlen > 0) {
        uv_buf_t b = uv_buf_init((char *)c->req, (unsigned)c->reqlen);
        c->wreq.data = c;
        if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, client_written) < 0)
            client_finish(c);
    } else if (c->after == AFTER_CLOSE) {
        client_finish(c);
    }
}

static void client_close(client *c)
{
    if (!c->closed) {
        c->closed = true;
        uv_close((uv_handle_t *)&c->tcp, NULL);
    }
}

static void client_start(client *c)
{
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", cms_http_port(c->t->h), &a);
    uv_tcp_init(&c->t->loop, &c->tcp);
    c->tcp.data = c->creq.data = c;
    http_parser_init(&c->p, HTTP_RESPONSE);
    c->p.data = c;
    int rc = uv_tcp_connect(&c->creq, &c->tcp, (const struct sockaddr *)&a, client_connected);
    cr_assert_eq(rc, 0, "connect: %s", uv_strerror(rc));
}

/* ---- harness ---- */

static void on_server_closed(void *arg)
{
    ht *t = arg;
    cr_assert_not(t->server_closed, "closed callback twice");
    t->server_closed = true;
}

static void ht_close_server(ht *t)
{
    if (t->server_close_called)
        return;
    t->server_close_called = true;
    cms_http_close(t->h, on_server_closed, t);
    cms_http_close(t->h, on_server_closed, t); /* idempotent */
}

static void ht_finish(ht *t)
{
    if (t->finishing)
        return;
    t->finishing = true;
    for (size_t i = 0; i < t->ncl; i++) {
        if (t->cl[i].tcp.data != NULL)
            client_close(&t->cl[i]);
    }
    ht_close_server(t);
    uv_close((uv_handle_t *)&t->watchdog, NULL);
}

static bool start_batch(ht *t)
{
    bool any = false;
    for (size_t i = 0; i < t->ncl; i++) {
        if (t->cl[i].batch == t->batch) {
            client_start(&t->cl[i]);
            any = true;
        }
    }
    return any;
}

static void batch_check(ht *t)
{
    for (size_t i = 0; i < t->ncl; i++) {
        if (t->cl[i].batch == t->batch && !t->cl[i].done)
            return;
    }
    for (size_t i = 0; i < t->ncl; i++) {
        if (t->cl[i].batch == t->batch)
            client_close(&t->cl[i]); /* releases held clients */
    }
    t->batch++;
    if (!t->finishing && !start_batch(t))
        ht_finish(t);
}

static void client_finish(client *c)
{
    if (c->done)
        return;
    c->done = true;
    c->done_ns = uv_hrtime();
    if (!c->hold)
        client_close(c);
    batch_check(c->t);
}

static void on_watchdog(uv_timer_t *w)
{
    ht *t = w->data;
    t->timed_out = true;
    for (size_t i = 0; i < t->ncl; i++) {
        const client *c = &t->cl[i];
        if (!c->done)
            fprintf(stderr,
                    "client %zu (batch %d) not done: %d replies, %zu bytes, eof %d, err %s\n", i,
                    c->batch, c->nresp, c->total, c->eof, c->err ? uv_strerror(c->err) : "-");
    }
    ht_finish(t);
}

static bool ready(void *arg, char *why, size_t whylen)
{
    ht *t = arg;
    int call = t->ready_calls++;
    bool ok = t->ready_mode == 0 || (t->ready_mode == 2 && call % 2 == 0);
    if (!ok)
        snprintf(why, whylen, "db: not connected");
    return ok;
}

static void big(void *arg, cms_http_reply *r)
{
    (void)arg;
    size_t n = 4u << 20;
    char *body = malloc(n);
    memset(body, 'x', n);
    cms_http_reply_set(r, 200, "application/octet-stream", body, n);
    free(body);
}

static void nothing(void *arg, cms_http_reply *r)
{
    (void)arg;
    (void)r;
}

static void quit(void *arg, cms_http_reply *r)
{
    ht *t = arg;
    ht_close_server(t); /* closes this very connection under the handler */
    cms_http_reply_set(r, 200, NULL, "bye", 3);
}

static void ht_init(ht *t)
{
    memset(t, 0, sizeof *t);
    cms_log_init("http_test", CMS_LOG_WARN, NULL);
    cr_assert_eq(uv_loop_init(&t->loop), 0);
    cr_assert_eq(cms_metrics_create(&t->m), 0);
    cms_counter_add(cms_metrics_counter(t->m, "test_total", "A test counter.", NULL), 7);
    cr_assert_eq(cms_http_create(&t->loop, "127.0.0.1:0", &t->h), 0);
    cr_assert_gt(cms_http_port(t->h), 0);
    cr_assert_eq(cms_http_serve_probes(t->h, t->m, ready, t), 0);
    cr_assert_eq(cms_http_route(t->h, "/big", big, t), 0);
    cr_assert_eq(cms_http_route(t->h, "/nothing", nothing, t), 0);
    cr_assert_eq(cms_http_route(t->h, "/quit", quit, t), 0);
    t->cl = calloc(MAX_CLIENTS, sizeof *t->cl);
}

static client *ht_add(ht *t, int batch, const char *req, size_t len, int expect)
{
    cr_assert_lt(t->ncl, MAX_CLIENTS);
    client *c = &t->cl[t->ncl++];
    c->t = t;
    c->batch = batch;
    c->req = req;
    c->reqlen = len;
    c->expect = expect;
    return c;
}

#define ADD(t, batch, lit, expect) ht_add((t), (batch), (lit), sizeof(lit) - 1, (expect))

static void ht_run(ht *t)
{
    uv_timer_init(&t->loop, &t->watchdog);
    t->watchdog.data = t;
    uv_timer_start(&t->watchdog, on_watchdog, 10000, 0);
    t->start_ns = uv_hrtime();
    if (!start_batch(t))
        ht_finish(t);
    uv_run(&t->loop, UV_RUN_DEFAULT);
    cr_assert_not(t->timed_out, "watchdog fired");
    cr_assert(t->server_closed, "closed callback not called");
}

static void ht_done(ht *t)
{
    cms_http_destroy(t->h);
    cms_metrics_destroy(t->m);
    cr_assert_eq(uv_loop_close(&t->loop), 0, "every handle must be closed");
    free(t->cl);
}

static bool has(const client *c, const char *s)
{
    return strstr(c->raw, s) != NULL;
}

static void assert_body(const client *c, int i, const char *want)
{
    cr_assert_eq(c->bodylen[i], strlen(want), "reply %d body \"%.*s\"", i, (int)c->bodylen[i],
                 c->body[i]);
    cr_assert_eq(memcmp(c->body[i], want, strlen(want)), 0);
}

/* ---- tests ---- */

Test(http, probes)
{
    ht t;
    ht_init(&t);
    t.ready_mode = 2;
    client *c = ADD(&t, 0,
                    "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                    "HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                    "GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n"
                    "GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n"
                    "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
                    "GET /healthz?verbose=1 HTTP/1.1\r\nHost: x\r\n\r\n",
                    6);
    c->head_mask = 1u << 1;
    ht_run(&t);
    cr_assert_eq(c->nresp, 6, "raw: %s", c->raw);
    int want[] = {200, 200, 200, 503, 200, 200};
    for (int i = 0; i < 6; i++)
        cr_assert_eq(c->status[i], want[i], "reply %d: %d", i, c->status[i]);
    assert_body(c, 0, "ok");
    assert_body(c, 1, "");
    assert_body(c, 2, "ready");
    assert_body(c, 3, "db: not connected");
    assert_body(c, 5, "ok");
    cr_assert(strstr(c->body[4], "# TYPE test_total counter\ntest_total 7\n") != NULL, "%s",
              c->body[4]);
    cr_assert(has(c, "Content-Type: text/plain; version=0.0.4"));
    cr_assert(has(c, "HTTP/1.1 503 Service Unavailable\r\n"));
    cr_assert_not(c->eof, "keep-alive: the server must not close");
    ht_done(&t);

    /* every reply counted by code in the default registry */
    char *text = NULL;
    size_t len;
    cr_assert_eq(cms_metrics_render(cms_metrics_default(), &text, &len), 0);
    cr_assert(strstr(text, "cms_http_requests_total{code=\"200\"} 5\n") != NULL, "%s", text);
    cr_assert(strstr(text, "cms_http_requests_total{code=\"503\"} 1\n") != NULL, "%s", text);
    free(text);
}

Test(http, not_found_method_not_allowed_and_no_reply)
{
    ht t;
    ht_init(&t);
    client *c = ADD(&t, 0,
                    "GET /nope HTTP/1.1\r\n\r\n"
                    "POST /healthz HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"
                    "DELETE /nope HTTP/1.1\r\n\r\n"
                    "GET /nothing HTTP/1.1\r\n\r\n"
                    "HEAD /nope HTTP/1.1\r\n\r\n"
                    "GET /healthz HTTP/1.1\r\n\r\n",
                    6);
    c->head_mask = 1u << 4;
    ht_run(&t);
    cr_assert_eq(c->nresp, 6, "raw: %s", c->raw);
    int want[] = {404, 405, 404, 500, 404, 200};
    for (int i = 0; i < 6; i++)
        cr_assert_eq(c->status[i], want[i], "reply %d: %d", i, c->status[i]);
    cr_assert(has(c, "\r\nAllow: GET, HEAD\r\n"));
    assert_body(c, 4, "");
    ht_done(&t);
}

Test(http, junk_gets_400_and_the_server_keeps_answering)
{
    static char random_bytes[4096];
    unsigned s = 12345;
    for (size_t i = 0; i < sizeof random_bytes; i++) {
        s = s * 1103515245u + 12345u;
        random_bytes[i] = (char)(s >> 16);
    }
    ht t;
    ht_init(&t);
    client *tls = ADD(&t, 0, "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 0);
    client *rnd = ht_add(&t, 0, random_bytes, sizeof random_bytes, 0);
    client *nul = ht_add(&t, 0, "GET /\0 HTTP/1.1\r\n\r\n", 20, 0);
    client *neg = ADD(&t, 0, "GET /healthz HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 0);
    client *ver = ADD(&t, 0, "GET /healthz HTTP/1.1 extra\r\n\r\n", 0);
    client *te = ADD(&t, 0, "GET /healthz HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 0);
    client *half = ADD(&t, 0, "GET /hea", 0);
    half->after = AFTER_CLOSE;
    client *silent = ht_add(&t, 0, NULL, 0, 0);
    silent->after = AFTER_CLOSE;
    client *good = ADD(&t, 1, "GET /healthz HTTP/1.1\r\n\r\n", 1);
    ht_run(&t);
    client *bad[] = {tls, rnd, nul, neg, ver, te};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cr_assert_eq(bad[i]->nresp, 1, "junk %zu: raw %s", i, bad[i]->raw);
        cr_assert_eq(bad[i]->status[0], 400, "junk %zu", i);
        cr_assert(bad[i]->eof, "junk %zu: the server closes after a 400", i);
        cr_assert(has(bad[i], "Connection: close\r\n"));
    }
    cr_assert_eq(good->status[0], 200);
    assert_body(good, 0, "ok");
    ht_done(&t);
}

Test(http, error_reply_survives_unread_input)
{
    /* 400 at the first bytes, then 60 KB more: the server must read and drop
     * the rest rather than close on unread data (a reset would destroy the
     * reply before the client reads it) */
    enum { N = 60000 };
    char *req = malloc(N);
    memcpy(req, "XXXX / HTTP/1.1\r\n", 17);
    memset(req + 17, 'z', N - 17);
    ht t;
    ht_init(&t);
    client *c = ht_add(&t, 0, req, N, 0);
    client *up = ADD(&t, 0,
                     "GET /healthz HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
                     "\x81\x85"
                     "binary-frame",
                     0);
    ht_run(&t);
    cr_assert_eq(c->nresp, 1, "err %s", c->err ? uv_strerror(c->err) : "-");
    cr_assert_eq(c->status[0], 400);
    cr_assert(c->eof);
    cr_assert_eq(up->nresp, 1);
    cr_assert_eq(up->status[0], 200, "answered as plain HTTP");
    cr_assert(up->eof, "and closed: the rest is not HTTP");
    ht_done(&t);
    free(req);
}

Test(http, oversized_head_gets_431)
{
    static char big[10000], many[12000], fits[7800];
    int n = snprintf(big, sizeof big, "GET /healthz HTTP/1.1\r\nX-Big: ");
    memset(big + n, 'a', 9000);
    memcpy(big + n + 9000, "\r\n\r\n", 5);
    size_t m = 0;
    m += (size_t)snprintf(many, sizeof many, "GET /healthz HTTP/1.1\r\n");
    for (int i = 0; i < 900; i++) /* 11 bytes each: 9.9 KiB of small headers */
        m += (size_t)snprintf(many + m, sizeof many - m, "X-H%03d: v\r\n", i);
    m += (size_t)snprintf(many + m, sizeof many - m, "\r\n");
    n = snprintf(fits, sizeof fits, "GET /healthz HTTP/1.1\r\nX-Big: ");
    memset(fits + n, 'b', 7700);
    memcpy(fits + n + 7700, "\r\n\r\n", 5);

    ht t;
    ht_init(&t);
    client *c1 = ht_add(&t, 0, big, strlen(big), 0);
    client *c2 = ht_add(&t, 0, many, m, 0);
    client *c3 = ht_add(&t, 0, fits, strlen(fits), 1);
    static char longurl[2200 + 32];
    n = snprintf(longurl, sizeof longurl, "GET /");
    memset(longurl + n, 'u', 2200);
    memcpy(longurl + n + 2200, " HTTP/1.1\r\n\r\n", 14);
    client *c4 = ht_add(&t, 0, longurl, strlen(longurl), 0);
    client *good = ADD(&t, 1, "GET /healthz HTTP/1.1\r\n\r\n", 1);
    ht_run(&t);
    cr_assert_eq(c1->status[0], 431, "raw %s", c1->raw);
    cr_assert(c1->eof);
    cr_assert_eq(c2->status[0], 431, "raw %s", c2->raw);
    cr_assert_eq(c3->status[0], 200, "a 7.7 KiB head is within the limit");
    cr_assert_eq(c4->status[0], 414);
    cr_assert_eq(good->status[0], 200);
    ht_done(&t);
}

Test(http, bodies)
{
    static char chunked[4096];
    size_t n = (size_t)snprintf(chunked, sizeof chunked,
                                "GET /healthz HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
    for (int i = 0; i < 5; i++)
        n += (size_t)snprintf(chunked + n, sizeof chunked - n, "190\r\n%0400d\r\n", 0);
    n += (size_t)snprintf(chunked + n, sizeof chunked - n, "0\r\n\r\n");
    ht t;
    ht_init(&t);
    client *small = ADD(&t, 0,
                        "GET /healthz HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"
                        "GET /readyz HTTP/1.1\r\n\r\n",
                        2);
    client *large = ADD(&t, 0, "GET /healthz HTTP/1.1\r\nContent-Length: 2000\r\n\r\nxxxx", 0);
    client *chunk = ht_add(&t, 0, chunked, n, 0);
    ht_run(&t);
    cr_assert_eq(small->status[0], 200);
    cr_assert_eq(small->status[1], 200, "the body was skipped, not parsed as a request");
    cr_assert_eq(large->status[0], 413);
    cr_assert(large->eof);
    cr_assert_eq(chunk->status[0], 413);
    ht_done(&t);
}

Test(http, keep_alive_pipelining_and_connection_close)
{
    ht t;
    ht_init(&t);
    client *two =
        ADD(&t, 0,
            "GET /healthz HTTP/1.1\r\nHost: a\r\n\r\nGET /readyz HTTP/1.1\r\nHost: a\r\n\r\n", 2);
    client *old = ADD(&t, 0, "GET /healthz HTTP/1.0\r\n\r\n", 0);
    client *old_ka = ADD(&t, 0, "GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", 1);
    client *close = ADD(
        &t, 0, "GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\nGET /readyz HTTP/1.1\r\n\r\n", 0);
    ht_run(&t);
    cr_assert_eq(two->nresp, 2);
    assert_body(two, 0, "ok");
    assert_body(two, 1, "ready");
    cr_assert(has(two, "Connection: keep-alive\r\n"));
    cr_assert_not(two->eof);
    cr_assert_eq(old->nresp, 1);
    cr_assert(old->eof, "HTTP/1.0 without keep-alive is closed");
    cr_assert(has(old, "Connection: close\r\n"));
    cr_assert_eq(old_ka->nresp, 1);
    cr_assert_not(old_ka->eof);
    cr_assert_eq(close->nresp, 1, "nothing is answered after Connection: close");
    cr_assert(close->eof);
    ht_done(&t);
}

Test(http, deep_pipelining_is_answered_in_full)
{
    enum { N = 1000 };
    static const char one[] = "GET /healthz HTTP/1.1\r\n\r\n";
    char *req = malloc(N * (sizeof one - 1));
    for (int i = 0; i < N; i++)
        memcpy(req + (size_t)i * (sizeof one - 1), one, sizeof one - 1);
    ht t;
    ht_init(&t);
    client *c = ht_add(&t, 0, req, N * (sizeof one - 1), N);
    ht_run(&t);
    cr_assert_eq(c->nresp, N);
    cr_assert_eq(c->n200, N);
    cr_assert_not(c->parse_error);
    ht_done(&t);
    free(req);
}

Test(http, clients_that_leave_early)
{
    ht t;
    ht_init(&t);
    /* reset while a 4 MiB reply is being written */
    client *mid = ADD(&t, 0, "GET /big HTTP/1.1\r\n\r\n", 0);
    mid->reset_after_bytes = 100000;
    client *rst = ADD(&t, 0, "GET /big HTTP/1.1\r\n\r\n", 0);
    rst->after = AFTER_RESET;
    client *gone = ADD(&t, 0, "GET /metrics HTTP/1.1\r\n\r\n", 0);
    gone->after = AFTER_CLOSE;
    client *good = ADD(&t, 1, "GET /healthz HTTP/1.1\r\n\r\nGET /big HTTP/1.1\r\n\r\n", 2);
    ht_run(&t);
    cr_assert_geq(mid->total, 100000);
    cr_assert_eq(good->status[0], 200);
    cr_assert_eq(good->status[1], 200);
    cr_assert_gt(good->total, 4u << 20, "the whole big reply arrives");
    ht_done(&t);
}

static uint64_t rejected_total(void)
{
    return cms_counter_get(cms_metrics_counter(cms_metrics_default(),
                                               "cms_http_connections_rejected_total", "", NULL));
}

static uint64_t evicted_total(void)
{
    return cms_counter_get(
        cms_metrics_counter(cms_metrics_default(), "cms_http_connections_evicted_total", "", NULL));
}

/* 140 at once for 128 places: each newcomer beyond takes the place of one
 * that is not answering; every client is answered or closed, none hangs. */
Test(http, connection_limit)
{
    enum { N = 140 };
    ht t;
    ht_init(&t);
    uint64_t rejected_before = rejected_total(), evicted_before = evicted_total();
    for (int i = 0; i < N; i++)
        ADD(&t, 0, "GET /healthz HTTP/1.1\r\n\r\n", 1)->hold = true;
    ht_run(&t);
    int ok = 0, closed = 0;
    for (int i = 0; i < N; i++) {
        const client *c = &t.cl[i];
        if (c->nresp == 1 && c->status[0] == 200)
            ok++;
        else if (c->nresp == 0 && (c->eof || c->err))
            closed++;
    }
    cr_assert_eq(ok + closed, N, "every client answered or closed");
    cr_assert_geq(ok, 128);
    cr_assert_eq(rejected_total() - rejected_before + evicted_total() - evicted_before, N - 128,
                 "one closed for each beyond the limit");
    ht_done(&t);
}

/* Slowloris: more slow clients (a request head that never ends) than
 * there are places, then a probe: the slow ones give way, the probe is
 * answered at once, long before any slow client could time out. */
Test(http, slow_clients_beyond_the_limit_give_way_to_a_probe)
{
    enum { N = 150 };
    ht t;
    ht_init(&t);
    cms_http_set_idle_timeout(t.h, 3000);
    uint64_t rejected_before = rejected_total(), evicted_before = evicted_total();
    for (int i = 0; i < N; i++)
        ADD(&t, 0, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow:", 0);
    client *probe = ADD(&t, 0, "GET /healthz HTTP/1.1\r\n\r\n", 1);
    ht_run(&t);
    cr_assert_eq(probe->nresp, 1, "the probe is answered");
    cr_assert_eq(probe->status[0], 200);
    double ms = (double)(probe->done_ns - t.start_ns) / 1e6;
    cr_assert_lt(ms, 2000, "answered after %.0f ms, before any idle timeout", ms);
    for (int i = 0; i < N; i++)
        cr_assert(t.cl[i].nresp == 0 && t.cl[i].eof, "slow client %d: closed unanswered", i);
    cr_assert_eq(rejected_total() - rejected_before, 0, "nobody refused");
    cr_assert_eq(evicted_total() - evicted_before, N + 1 - 128, "the oldest gave way");
    ht_done(&t);
}

Test(http, idle_and_slow_clients_time_out)
{
    ht t;
    ht_init(&t);
    cms_http_set_idle_timeout(t.h, 200);
    client *slow = ADD(&t, 0, "GET /healthz HTTP/1.1\r\nHost:", 0);
    client *idle = ADD(&t, 0, "GET /healthz HTTP/1.1\r\n\r\n", 0);
    ht_run(&t);
    cr_assert_eq(slow->nresp, 0);
    cr_assert(slow->eof);
    cr_assert_eq(idle->nresp, 1, "answered, then closed when idle");
    cr_assert(idle->eof);
    double ms = (double)(slow->done_ns - t.start_ns) / 1e6;
    cr_assert(ms >= 150 && ms < 5000, "closed after %.0f ms", ms);
    ht_done(&t);
}

Test(http, close_with_connected_clients)
{
    ht t;
    ht_init(&t);
    client *waiting = ht_add(&t, 0, NULL, 0, 0);
    waiting->close_server_on_connect = true;
    ht_run(&t);
    cr_assert(waiting->eof || waiting->err, "the server closed the connection");
    ht_done(&t);
}

Test(http, close_from_inside_a_handler)
{
    ht t;
    ht_init(&t);
    client *c = ADD(&t, 0, "GET /quit HTTP/1.1\r\n\r\nGET /healthz HTTP/1.1\r\n\r\n", 0);
    ht_run(&t);
    cr_assert_eq(c->nresp, 0, "the connection was closed under the handler");
    ht_done(&t);
}

Test(http, bad_addresses)
{
    uv_loop_t loop;
    cr_assert_eq(uv_loop_init(&loop), 0);
    const char *bad[] = {"",
                         "nonsense",
                         "127.0.0.1",
                         "127.0.0.1:",
                         "127.0.0.1:99999",
                         "127.0.0.1:8o",
                         "localhost:80",
                         "[::1]80",
                         "::1:80",
                         "[::1:80",
                         "127.0.0.1:-1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cms_http *h = NULL;
        cr_assert_eq(cms_http_create(&loop, bad[i], &h), UV_EINVAL, "%s", bad[i]);
        cr_assert_null(h);
    }
    cms_http *h = NULL;
    cr_assert_eq(cms_http_create(&loop, NULL, &h), UV_EINVAL);

    /* a port in use: the failed server frees itself on the next loop turn */
    cms_http *first = NULL;
    cr_assert_eq(cms_http_create(&loop, "127.0.0.1:0", &first), 0);
    char addr[32];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", cms_http_port(first));
    FILE *log = tmpfile();
    cms_log_init("http_test", CMS_LOG_WARN, log);
    cr_assert_eq(cms_http_create(&loop, addr, &h), UV_EADDRINUSE);
    cms_log_init("http_test", CMS_LOG_WARN, NULL);
    fclose(log);
    cr_assert_null(h);
    cms_http_close(first, NULL, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    cms_http_destroy(first);
    cms_http_destroy(NULL);
    cr_assert_eq(uv_loop_close(&loop), 0);
}

/* ---- cms_http_feed: the seam tests/fuzz/http_fuzz.c drives ---- */

typedef struct fed {
    char text[4096];
    size_t len;
    int replies;
} fed;

static void fed_collect(void *arg, const char *data, size_t len)
{
    fed *f = arg;
    cr_assert_lt(f->len + len, sizeof f->text);
    memcpy(f->text + f->len, data, len);
    f->len += len;
    f->text[f->len] = '\0';
    f->replies++;
}

static void fed_closed(void *arg)
{
    *(bool *)arg = true;
}

/* Pipelined requests, split into 3-byte reads: answered in order as a
 * socket's connection answers them, up to the one that closes it. */
Test(http, feed_answers_without_a_socket)
{
    uv_loop_t loop;
    cms_http *h = NULL;
    cr_assert_eq(uv_loop_init(&loop), 0);
    cr_assert_eq(cms_http_create(&loop, "127.0.0.1:0", &h), 0);
    cr_assert_eq(cms_http_serve_probes(h, NULL, NULL, NULL), 0);
    static const char in[] = "GET /healthz HTTP/1.1\r\n\r\n"
                             "HEAD /nope HTTP/1.1\r\n\r\n"
                             "GET /healthz HTTP/1.1\r\nHost\r\n\r\n"
                             "GET /healthz HTTP/1.1\r\n\r\n";
    fed f = {.len = 0};
    cr_assert_eq(cms_http_feed(h, in, sizeof in - 1, 3, fed_collect, &f), 0);
    cr_assert_eq(f.replies, 3, "%s", f.text);
    const char *ok = strstr(f.text, "HTTP/1.1 200 OK\r\n");
    const char *nf = strstr(f.text, "HTTP/1.1 404 Not Found\r\n");
    const char *bad = strstr(f.text, "HTTP/1.1 400 Bad Request\r\n");
    cr_assert(ok && nf && bad && ok < nf && nf < bad, "%s", f.text);
    cr_assert(strstr(bad, "Connection: close\r\n") != NULL);
    cr_assert(strstr(nf, "\r\n\r\nHTTP/1.1 400") != NULL, "HEAD: no body: %s", f.text);
    /* a half request at the end is dropped, as at a socket's EOF */
    fed g = {.len = 0};
    cr_assert_eq(cms_http_feed(h, "GET /healthz HTTP/1.1\r\nHo", 25, 0, fed_collect, &g), 0);
    cr_assert_eq(g.replies, 0);
    bool closed = false;
    cms_http_close(h, fed_closed, &closed);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert(closed);
    cms_http_destroy(h);
    cr_assert_eq(uv_loop_close(&loop), 0);
}

/* A URL past the limit with a bad byte further on was 400 when it came in
 * one read and 414 in small ones (tests/fuzz/corpus/http): the answer
 * must not depend on how the bytes arrive. */
Test(http, long_url_answer_does_not_depend_on_the_reads)
{
    uv_loop_t loop;
    cms_http *h = NULL;
    cr_assert_eq(uv_loop_init(&loop), 0);
    cr_assert_eq(cms_http_create(&loop, "127.0.0.1:0", &h), 0);
    cr_assert_eq(cms_http_serve_probes(h, NULL, NULL, NULL), 0);
    static char bad[3000], good[3000];
    int n = snprintf(good, sizeof good, "GET /");
    memset(good + n, 'a', 2500);
    snprintf(good + n + 2500, sizeof good - (size_t)n - 2500, " HTTP/1.1\r\n\r\n");
    memcpy(bad, good, sizeof bad);
    bad[n + 2400] = '\x01';
    static const size_t chunks[] = {0, 1, 5, 100, 2047};
    for (size_t i = 0; i < sizeof chunks / sizeof chunks[0]; i++) {
        fed f = {.len = 0}, g = {.len = 0};
        cr_assert_eq(cms_http_feed(h, bad, strlen(bad), chunks[i], fed_collect, &f), 0);
        cr_assert_eq(f.replies, 1);
        cr_assert(strncmp(f.text, "HTTP/1.1 400 ", 13) == 0, "reads of %zu: %s", chunks[i], f.text);
        cr_assert_eq(cms_http_feed(h, good, strlen(good), chunks[i], fed_collect, &g), 0);
        cr_assert_eq(g.replies, 1);
        cr_assert(strncmp(g.text, "HTTP/1.1 414 ", 13) == 0, "reads of %zu: %s", chunks[i], g.text);
    }
    bool closed = false;
    cms_http_close(h, fed_closed, &closed);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert(closed);
    cms_http_destroy(h);
    cr_assert_eq(uv_loop_close(&loop), 0);
}
