/* libFuzzer target for common/http's request parsing: any bytes are one
 * client's stream to the probes server (/healthz, /readyz, /metrics of a
 * registry of its own, and /none, whose handler sets nothing), fed
 * through cms_http_feed (the seam without a socket) twice: in reads of the
 * read buffer's size and in reads of the size byte 0 picks (1..127 bytes;
 * its top bit says whether /readyz is ready). Nothing may crash or leak;
 * both feeds give the same replies byte for byte (http_parser keeps its
 * state across reads); every reply is one whole HTTP/1.1 response with a
 * status the server makes, a Content-Length its body has (or no body: a
 * HEAD), and a reply that says "Connection: close" is the last one. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "http.h"
#include "metrics.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uv_loop_t loop;
static cms_http *srv;
static cms_metrics *probe_metrics;
static bool ready_now;

/* the replies of one feed, concatenated, and where each starts */
#define MAX_REPLIES 8192
typedef struct replies {
    char *data;
    size_t len, cap;
    size_t n;
    size_t at[MAX_REPLIES + 1];
} replies;

static void collect(void *arg, const char *d, size_t len)
{
    replies *r = arg;
    if (r->n == MAX_REPLIES)
        abort(); /* more replies than a 64 KiB input can ask for */
    if (r->len + len > r->cap) {
        r->cap = (r->len + len) * 2;
        if ((r->data = realloc(r->data, r->cap)) == NULL)
            abort();
    }
    memcpy(r->data + r->len, d, len);
    r->at[r->n++] = r->len;
    r->len += len;
    r->at[r->n] = r->len;
}

static bool ready(void *arg, char *why, size_t whylen)
{
    (void)arg;
    if (!ready_now)
        snprintf(why, whylen, "warming up");
    return ready_now;
}

static void no_reply(void *arg, cms_http_reply *reply)
{
    (void)arg;
    (void)reply;
}

static void setup(void)
{
    if (uv_loop_init(&loop) != 0 || cms_http_create(&loop, "127.0.0.1:0", &srv) != 0 ||
        cms_metrics_create(&probe_metrics) != 0 ||
        cms_http_serve_probes(srv, probe_metrics, ready, NULL) != 0 ||
        cms_http_route(srv, "/none", no_reply, NULL) != 0)
        abort();
}

/* one reply: "HTTP/1.1 NNN reason\r\n" headers "\r\n" body */
static bool check_reply(const char *d, size_t len)
{
    static const int statuses[] = {200, 400, 404, 405, 413, 414, 431, 500, 503};
    if (len < 13 || memcmp(d, "HTTP/1.1 ", 9) != 0)
        abort();
    int status = (int)strtol(d + 9, NULL, 10);
    bool known = false;
    for (size_t i = 0; i < sizeof statuses / sizeof statuses[0]; i++)
        known = known || status == statuses[i];
    const char *end = memmem(d, len, "\r\n\r\n", 4);
    if (!known || end == NULL)
        abort();
    size_t head = (size_t)(end - d) + 4, body = len - head;
    static const char content_length[] = "\r\nContent-Length: ";
    const char *cl = memmem(d, head, content_length, sizeof content_length - 1);
    if (cl == NULL)
        abort();
    size_t n = strtoul(cl + sizeof content_length - 1, NULL, 10);
    if (body != n && body != 0)
        abort();
    static const char conn_close[] = "\r\nConnection: close\r\n";
    bool close = memmem(d, head, conn_close, sizeof conn_close - 1) != NULL;
    /* a refused request always ends the connection */
    if (!close && (status == 400 || status == 413 || status == 414 || status == 431))
        abort();
    return close;
}

static void feed(const uint8_t *data, size_t size, size_t chunk, replies *r)
{
    memset(r, 0, sizeof *r);
    if (cms_http_feed(srv, data, size, chunk, collect, r) != 0)
        abort();
    for (size_t i = 0; i < r->n; i++)
        if (check_reply(r->data + r->at[i], r->at[i + 1] - r->at[i]) && i + 1 != r->n)
            abort(); /* a reply after "Connection: close" */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    if (srv == NULL)
        setup();
    ready_now = data[0] & 0x80;
    size_t chunk = data[0] & 0x7f;
    static replies whole, split;
    feed(data + 1, size - 1, 0, &whole);
    if (chunk != 0) {
        feed(data + 1, size - 1, chunk, &split);
        if (split.n != whole.n || split.len != whole.len ||
            (whole.len && memcmp(split.data, whole.data, whole.len) != 0))
            abort();
        free(split.data);
    }
    free(whole.data);
    return 0;
}
