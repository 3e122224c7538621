/* benchlib: clocks, the latency histogram, the NATS client of the load and
 * the set-up helpers the load generators of tests/bench share (benchlib.h
 * says what each is for). */
#include "benchlib.h"

#include "cmd.h"
#include "log.h"
#include "uuid.h"

#include "cms/v1/command.pb-c.h"
#include "cms/v1/identity.pb-c.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* --- clocks ------------------------------------------------------------------ */

int64_t bench_mono_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

void bench_sleep_until_ns(int64_t t_ns)
{
    struct timespec t = {(time_t)(t_ns / 1000000000), (long)(t_ns % 1000000000)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &t, NULL) == EINTR)
        ;
}

int64_t bench_unix_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (int64_t)t.tv_sec * 1000000 + t.tv_nsec / 1000;
}

double bench_cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

uint64_t bench_pow2_at_least(uint64_t n)
{
    uint64_t p = 1;
    while (p < n)
        p <<= 1;
    return p;
}

/* --- latency histogram ------------------------------------------------------- */

static size_t hist_index(uint64_t us)
{
    if (us < BENCH_HIST_EXACT)
        return (size_t)us;
    int msb = 63 - __builtin_clzll(us);
    if (msb > BENCH_HIST_MAX_MSB)
        return BENCH_HIST_BUCKETS - 1;
    int shift = msb - BENCH_HIST_SUB_BITS;
    return BENCH_HIST_EXACT + (size_t)(shift - 1) * BENCH_HIST_SUB +
           (size_t)((us >> shift) - BENCH_HIST_SUB);
}

/* The largest value that falls in bucket i: a percentile never understates. */
static uint64_t hist_upper(size_t i)
{
    if (i < BENCH_HIST_EXACT)
        return i;
    size_t shift = (i - BENCH_HIST_EXACT) / BENCH_HIST_SUB + 1;
    uint64_t top = (i - BENCH_HIST_EXACT) % BENCH_HIST_SUB + BENCH_HIST_SUB;
    return ((top + 1) << shift) - 1;
}

void bench_hist_add(bench_hist *h, int64_t ns)
{
    uint64_t us = ns > 0 ? (uint64_t)(ns / 1000) : 0;
    h->b[hist_index(us)]++;
    h->n++;
    h->sum_us += (double)us;
    if (us > h->max_us)
        h->max_us = us;
}

void bench_hist_merge(bench_hist *into, const bench_hist *h)
{
    for (size_t i = 0; i < BENCH_HIST_BUCKETS; i++)
        into->b[i] += h->b[i];
    into->n += h->n;
    into->sum_us += h->sum_us;
    if (h->max_us > into->max_us)
        into->max_us = h->max_us;
}

uint64_t bench_hist_quantile(const bench_hist *h, double q)
{
    if (h->n == 0)
        return 0;
    uint64_t want = (uint64_t)(q * (double)h->n);
    if ((double)want < q * (double)h->n)
        want++;
    if (want == 0)
        want = 1;
    uint64_t seen = 0;
    for (size_t i = 0; i < BENCH_HIST_BUCKETS; i++) {
        seen += h->b[i];
        if (seen >= want)
            return hist_upper(i) < h->max_us ? hist_upper(i) : h->max_us;
    }
    return h->max_us;
}

double bench_hist_mean_us(const bench_hist *h)
{
    return h->n ? h->sum_us / (double)h->n : 0.0;
}

/* --- NATS client of the load ------------------------------------------------- */

#define RBUF_MAX (16u << 20) /* the largest frame we accept, and then some */
#define WBUF_MAX (256u << 20)
#define LINE_MAX_LEN 65536 /* a protocol line longer than this is an error */

/* Bytes in [off, len) are pending. */
typedef struct buf {
    char *p;
    size_t off, len, cap;
} buf;

/* Everything of a connection belongs to the one thread that uses it. */
struct bench_nats {
    int fd;
    char inbox[64];
    size_t inbox_len;
    buf w, r;
    bench_nats_msg_fn *on_msg;
    void *arg;
    char error[512]; /* the first error */
};

static bool buf_room(buf *b, size_t more, size_t max)
{
    if (b->off > 0 && b->off == b->len)
        b->off = b->len = 0;
    if (b->len + more <= b->cap)
        return true;
    if (b->off > 0) {
        memmove(b->p, b->p + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
        if (b->len + more <= b->cap)
            return true;
    }
    size_t cap = b->cap ? b->cap : 65536;
    while (cap < b->len + more)
        cap *= 2;
    if (cap > max)
        return false;
    char *p = realloc(b->p, cap);
    if (p == NULL)
        return false;
    b->p = p;
    b->cap = cap;
    return true;
}

static bool buf_add(buf *b, const void *d, size_t n)
{
    if (!buf_room(b, n, WBUF_MAX))
        return false;
    memcpy(b->p + b->len, d, n);
    b->len += n;
    return true;
}

bool bench_nats_create(bench_nats **out)
{
    bench_nats *n = calloc(1, sizeof *n);
    if (n)
        n->fd = -1;
    *out = n;
    return n != NULL;
}

void bench_nats_destroy(bench_nats *n)
{
    if (n == NULL)
        return;
    if (n->fd >= 0)
        close(n->fd);
    free(n->w.p);
    free(n->r.p);
    free(n);
}

void bench_nats_error(bench_nats *n, const char *fmt, ...)
{
    if (n->error[0] != '\0')
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(n->error, sizeof n->error, fmt, ap);
    va_end(ap);
}

const char *bench_nats_first_error(const bench_nats *n)
{
    return n->error;
}

bool bench_nats_publish(bench_nats *n, const char *subject, uint64_t seq, const char *hdr,
                        size_t hdr_len, const void *data, size_t len)
{
    char line[512];
    int k;
    if (hdr)
        k = snprintf(line, sizeof line, "HPUB %s %s.%" PRIu64 " %zu %zu\r\n", subject, n->inbox,
                     seq, hdr_len, hdr_len + len);
    else
        k = snprintf(line, sizeof line, "PUB %s %s.%" PRIu64 " %zu\r\n", subject, n->inbox, seq,
                     len);
    if (k < 0 || (size_t)k >= sizeof line)
        return false;
    return buf_add(&n->w, line, (size_t)k) && (!hdr || buf_add(&n->w, hdr, hdr_len)) &&
           buf_add(&n->w, data, len) && buf_add(&n->w, "\r\n", 2);
}

bool bench_nats_flush(bench_nats *n)
{
    while (n->w.off < n->w.len) {
        ssize_t k = write(n->fd, n->w.p + n->w.off, n->w.len - n->w.off);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return true;
        if (k <= 0) {
            bench_nats_error(n, "writing to nats-server: %s", strerror(errno));
            return false;
        }
        n->w.off += (size_t)k;
    }
    return true;
}

/* The next space-separated token of [*p, end). */
static bool token(const char **p, const char *end, const char **tok, size_t *len)
{
    const char *s = *p;
    while (s < end && *s == ' ')
        s++;
    const char *e = s;
    while (e < end && *e != ' ')
        e++;
    *tok = s;
    *len = (size_t)(e - s);
    *p = e;
    return e > s;
}

static bool parse_size(const char *s, size_t len, size_t *out)
{
    size_t v = 0;
    if (len == 0 || len > 9)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (size_t)(s[i] - '0');
    }
    *out = v;
    return true;
}

/* The request number of a reply subject <inbox>.<seq>, 0 if it is none. */
static uint64_t reply_seq(const bench_nats *n, const char *subj, size_t subj_len)
{
    uint64_t seq = 0;
    if (subj_len > n->inbox_len + 1 && memcmp(subj, n->inbox, n->inbox_len) == 0) {
        for (size_t i = n->inbox_len + 1; i < subj_len && subj[i] >= '0' && subj[i] <= '9'; i++)
            seq = seq * 10 + (uint64_t)(subj[i] - '0');
    }
    return seq;
}

/* Handles every whole frame in the read buffer. */
static bool parse_frames(bench_nats *n, int64_t t_now)
{
    for (;;) {
        const char *s = n->r.p + n->r.off;
        size_t avail = n->r.len - n->r.off;
        const char *eol = memmem(s, avail, "\r\n", 2);
        if (eol == NULL) {
            if (avail > LINE_MAX_LEN) {
                bench_nats_error(n, "nats-server sent a line longer than 64 KiB");
                return false;
            }
            return true;
        }
        size_t line_len = (size_t)(eol - s), used = line_len + 2;
        bool hmsg = line_len > 5 && memcmp(s, "HMSG ", 5) == 0;
        if (hmsg || (line_len > 4 && memcmp(s, "MSG ", 4) == 0)) {
            const char *p = s + (hmsg ? 5 : 4), *tok[5];
            size_t tl[5], ntok = 0, hlen = 0, tlen = 0;
            while (ntok < 5 && token(&p, eol, &tok[ntok], &tl[ntok]))
                ntok++;
            /* MSG subject sid [reply] size; HMSG subject sid [reply] hsize size */
            size_t want = hmsg ? 4 : 3;
            if ((ntok != want && ntok != want + 1) ||
                !parse_size(tok[ntok - 1], tl[ntok - 1], &tlen) ||
                (hmsg && (!parse_size(tok[ntok - 2], tl[ntok - 2], &hlen) || hlen > tlen))) {
                bench_nats_error(n, "nats-server sent a malformed frame: %.*s", (int)line_len, s);
                return false;
            }
            if (avail < used + tlen + 2) {
                if (used + tlen + 2 > RBUF_MAX) {
                    bench_nats_error(n, "nats-server sent a frame of %zu bytes", tlen);
                    return false;
                }
                return true; /* the rest is still on its way */
            }
            const char *payload = s + used;
            if (!n->on_msg(n->arg, reply_seq(n, tok[0], tl[0]), payload, hlen, payload + hlen,
                           tlen - hlen, t_now))
                return false;
            used += tlen + 2;
        } else if (line_len == 4 && memcmp(s, "PING", 4) == 0) {
            if (!buf_add(&n->w, "PONG\r\n", 6))
                return false;
        } else if (line_len >= 4 && memcmp(s, "-ERR", 4) == 0) {
            bench_nats_error(n, "nats-server: %.*s", (int)line_len, s);
            return false;
        } /* PONG, +OK, INFO: nothing to do */
        n->r.off += used;
    }
}

/* Reads what is there without blocking, stamping it with the time it came. */
static bool read_some(bench_nats *n)
{
    for (;;) {
        if (!buf_room(&n->r, 65536, RBUF_MAX + 65536)) {
            bench_nats_error(n, "read buffer full");
            return false;
        }
        ssize_t k = read(n->fd, n->r.p + n->r.len, n->r.cap - n->r.len);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return true;
        if (k <= 0) {
            bench_nats_error(n, "nats-server closed the connection%s%s", k < 0 ? ": " : "",
                             k < 0 ? strerror(errno) : "");
            return false;
        }
        n->r.len += (size_t)k;
        if (!parse_frames(n, bench_mono_ns()))
            return false;
    }
}

bool bench_nats_poll(bench_nats *n, int64_t wait_ns)
{
    struct pollfd pfd = {n->fd, POLLIN, 0};
    if (n->w.off < n->w.len)
        pfd.events |= POLLOUT;
    if (wait_ns < 0)
        wait_ns = 0;
    struct timespec ts = {(time_t)(wait_ns / 1000000000), (long)(wait_ns % 1000000000)};
    int rc = ppoll(&pfd, 1, &ts, NULL);
    if (rc < 0 && errno != EINTR) {
        bench_nats_error(n, "poll: %s", strerror(errno));
        return false;
    }
    if (rc > 0 && (pfd.revents & (POLLIN | POLLERR | POLLHUP)))
        return read_some(n);
    return true;
}

/* nats://host:port or host:port, with or without user:password@ */
static bool split_url(const char *url, char *host, size_t hcap, char *port, size_t pcap)
{
    const char *s = strstr(url, "://");
    s = s ? s + 3 : url;
    const char *at = strchr(s, '@');
    if (at)
        s = at + 1;
    const char *colon = strrchr(s, ':');
    size_t hl = colon ? (size_t)(colon - s) : strlen(s);
    if (hl == 0 || hl >= hcap)
        return false;
    memcpy(host, s, hl);
    host[hl] = '\0';
    snprintf(port, pcap, "%s", colon ? colon + 1 : "4222");
    port[strcspn(port, "/,")] = '\0';
    return port[0] != '\0';
}

/* user:password of nats://user:password@host:port into the CONNECT's
 * members (",\"user\":...,\"pass\":..."), or "" without one. */
static bool url_auth(const char *url, char *out, size_t cap)
{
    out[0] = '\0';
    const char *s = strstr(url, "://");
    s = s ? s + 3 : url;
    const char *at = strchr(s, '@'), *colon = at ? memchr(s, ':', (size_t)(at - s)) : NULL;
    if (at == NULL)
        return true;
    if (colon == NULL)
        return false;
    for (const char *p = s; p < at; p++)
        if (*p == '"' || *p == '\\' || (unsigned char)*p < 0x20)
            return false;
    int k = snprintf(out, cap, ",\"user\":\"%.*s\",\"pass\":\"%.*s\"", (int)(colon - s), s,
                     (int)(at - colon - 1), colon + 1);
    return k > 0 && (size_t)k < cap;
}

/* Blocking until the server's line starting with want (or -ERR) is read. */
static bool await_line(bench_nats *n, const char *want, int64_t deadline)
{
    for (;;) {
        const char *s = n->r.p + n->r.off;
        size_t avail = n->r.len - n->r.off;
        const char *eol = avail ? memmem(s, avail, "\r\n", 2) : NULL;
        if (eol) {
            size_t k = (size_t)(eol - s);
            n->r.off += k + 2;
            if (k >= 4 && memcmp(s, "-ERR", 4) == 0) {
                bench_nats_error(n, "nats-server: %.*s", (int)k, s);
                return false;
            }
            if (k >= strlen(want) && memcmp(s, want, strlen(want)) == 0)
                return true;
            continue;
        }
        int64_t left = deadline - bench_mono_ns();
        struct pollfd pfd = {n->fd, POLLIN, 0};
        if (left <= 0 || poll(&pfd, 1, (int)(left / 1000000) + 1) <= 0) {
            bench_nats_error(n, "no %s from nats-server", want);
            return false;
        }
        if (!buf_room(&n->r, 65536, RBUF_MAX)) {
            bench_nats_error(n, "read buffer full");
            return false;
        }
        ssize_t r = read(n->fd, n->r.p + n->r.len, n->r.cap - n->r.len);
        if (r <= 0) {
            bench_nats_error(n, "nats-server closed the connection while connecting");
            return false;
        }
        n->r.len += (size_t)r;
    }
}

bool bench_nats_connect(bench_nats *n, const char *name, int index, const char *url,
                        bench_nats_msg_fn *on_msg, void *arg)
{
    bool ok = false;
    struct addrinfo hints = {0}, *ai = NULL;
    char host[256], port[32], auth[600], hello[1024];
    cms_uuid u;
    n->on_msg = on_msg;
    n->arg = arg;
    cms_uuid_v7(&u);
    snprintf(n->inbox, sizeof n->inbox, "_INBOX.bench%dx%dx%02x%02x%02x%02x", (int)getpid(), index,
             u.b[12], u.b[13], u.b[14], u.b[15]);
    n->inbox_len = strlen(n->inbox);
    /* the URL is not repeated: it may hold a password */
    if (!split_url(url, host, sizeof host, port, sizeof port) ||
        !url_auth(url, auth, sizeof auth)) {
        bench_nats_error(n, "cannot read host, port and credentials in the NATS URL");
        goto out;
    }
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(host, port, &hints, &ai);
    if (rc != 0) {
        bench_nats_error(n, "%s: %s", host, gai_strerror(rc));
        goto out;
    }
    n->fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (n->fd < 0 || connect(n->fd, ai->ai_addr, ai->ai_addrlen) != 0) {
        bench_nats_error(n, "connecting to %s:%s: %s", host, port, strerror(errno));
        goto out;
    }
    int one = 1;
    (void)setsockopt(n->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int64_t deadline = bench_mono_ns() + 5000000000LL;
    if (!await_line(n, "INFO", deadline))
        goto out;
    int k = snprintf(hello, sizeof hello,
                     "CONNECT {\"verbose\":false,\"pedantic\":false,\"headers\":true,"
                     "\"no_responders\":true,\"name\":\"%s-%d\",\"lang\":\"c\","
                     "\"version\":\"" CMS_VERSION "\",\"protocol\":1%s}\r\n"
                     "SUB %s.* 1\r\nPING\r\n",
                     name, index, auth, n->inbox);
    if (k < 0 || (size_t)k >= sizeof hello || write(n->fd, hello, (size_t)k) != k) {
        bench_nats_error(n, "writing to nats-server failed");
        goto out;
    }
    if (!await_line(n, "PONG", deadline))
        goto out;
    if (fcntl(n->fd, F_SETFL, fcntl(n->fd, F_GETFL) | O_NONBLOCK) != 0) {
        bench_nats_error(n, "fcntl: %s", strerror(errno));
        goto out;
    }
    ok = true;
out:
    cms_apikey_wipe(auth, sizeof auth);
    cms_apikey_wipe(hello, sizeof hello);
    if (ai)
        freeaddrinfo(ai);
    return ok;
}

/* --- set-up and baseline helpers (on nats.c) -------------------------------- */

bool bench_read_key_file(const char *prog, const char *path, char out[CMS_APIKEY_LEN + 1])
{
    bool ok = false;
    char text[65536];
    size_t n = 0;
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        fprintf(stderr, "%s: %s: %s\n", prog, path, strerror(errno));
        goto out;
    }
    n = fread(text, 1, sizeof text - 1, f);
    text[n] = '\0';
    for (const char *p = strstr(text, "cms_"); p && !ok; p = strstr(p + 1, "cms_")) {
        cms_uuid id;
        uint8_t secret[CMS_APIKEY_SECRET_BYTES];
        if ((size_t)(text + n - p) >= CMS_APIKEY_LEN &&
            cms_apikey_parse(p, CMS_APIKEY_LEN, &id, secret)) {
            memcpy(out, p, CMS_APIKEY_LEN);
            out[CMS_APIKEY_LEN] = '\0';
            cms_apikey_wipe(secret, sizeof secret);
            ok = true;
        }
    }
    if (!ok)
        fprintf(stderr, "%s: %s holds no API key\n", prog, path);
out:
    if (f)
        fclose(f);
    cms_apikey_wipe(text, sizeof text);
    return ok;
}

bool bench_pack_body(const ProtobufCMessage *m, bench_body *out)
{
    out->len = protobuf_c_message_get_packed_size(m);
    out->data = malloc(out->len + 1);
    if (out->data == NULL)
        return false;
    protobuf_c_message_pack(m, out->data);
    return true;
}

bool bench_pack_reply(const ProtobufCMessage *result, bench_body *out)
{
    bench_body r = {0};
    bool ok = false;
    if (!bench_pack_body(result, &r))
        goto out;
    Cms__V1__Reply rep = CMS__V1__REPLY__INIT;
    rep.outcome_case = CMS__V1__REPLY__OUTCOME_RESULT;
    rep.result.data = r.data;
    rep.result.len = r.len;
    ok = bench_pack_body(&rep.base, out);
out:
    free(r.data);
    return ok;
}

int bench_command_packed(const char *prog, natsConnection *nc, const char *subject,
                         const char *auth, const char *request_id, const bench_body *body,
                         const ProtobufCMessageDescriptor *rdesc, int64_t timeout_ms, bool quiet,
                         ProtobufCMessage **out, char *field, size_t field_cap)
{
    int code = BENCH_NO_REPLY;
    natsMsg *m = NULL, *rep = NULL;
    Cms__V1__Reply *r = NULL;
    if (field && field_cap)
        field[0] = '\0';
    natsStatus st = natsMsg_Create(&m, subject, NULL, (const char *)body->data, (int)body->len);
    if (st == NATS_OK && auth)
        st = natsMsgHeader_Set(m, "Authorization", auth);
    if (st == NATS_OK && request_id)
        st = natsMsgHeader_Set(m, "Cms-Request-Id", request_id);
    if (st == NATS_OK)
        st = natsConnection_RequestMsg(&rep, nc, m, timeout_ms);
    if (st != NATS_OK) {
        if (!quiet)
            fprintf(stderr, "%s: %s: %s\n", prog, subject, natsStatus_GetText(st));
        goto out;
    }
    code = BENCH_BAD_REPLY;
    r = cms__v1__reply__unpack(NULL, (size_t)natsMsg_GetDataLength(rep),
                               (const uint8_t *)natsMsg_GetData(rep));
    if (r == NULL) {
        fprintf(stderr, "%s: %s: the reply is not a cms.v1.Reply\n", prog, subject);
        goto out;
    }
    if (r->outcome_case == CMS__V1__REPLY__OUTCOME_ERROR && r->error) {
        code = (int)r->error->code;
        if (field && field_cap)
            snprintf(field, field_cap, "%s", r->error->field);
        if (!quiet)
            fprintf(stderr, "%s: %s: %s: %s (field \"%s\")\n", prog, subject,
                    cms_cmd_code_name(r->error->code), r->error->message, r->error->field);
        goto out;
    }
    *out = protobuf_c_message_unpack(rdesc, NULL, r->result.len, r->result.data);
    if (*out == NULL) {
        fprintf(stderr, "%s: %s: the result is not a %s\n", prog, subject, rdesc->name);
        goto out;
    }
    code = 0;
out:
    if (r)
        cms__v1__reply__free_unpacked(r, NULL);
    natsMsg_Destroy(rep);
    natsMsg_Destroy(m);
    return code;
}

int bench_command(const char *prog, natsConnection *nc, const char *prefix, const char *service,
                  const char *verb, const char *auth, const ProtobufCMessage *req,
                  const ProtobufCMessageDescriptor *rdesc, int64_t timeout_ms, bool quiet,
                  ProtobufCMessage **out)
{
    char subject[256];
    bench_body bd = {0};
    snprintf(subject, sizeof subject, "%s.%s.%s", prefix, service, verb);
    if (!bench_pack_body(req, &bd))
        return -1;
    int code = bench_command_packed(prog, nc, subject, auth, NULL, &bd, rdesc, timeout_ms, quiet,
                                    out, NULL, 0);
    free(bd.data);
    return code < 0 ? -1 : code;
}

int bench_call(const char *prog, natsConnection *nc, const char *prefix, const char *verb,
               const char *auth, const ProtobufCMessage *req,
               const ProtobufCMessageDescriptor *rdesc, int64_t timeout_ms, ProtobufCMessage **out)
{
    return bench_command(prog, nc, prefix, "identity", verb, auth, req, rdesc, timeout_ms, false,
                         out);
}

/* --- parties ---------------------------------------------------------------- */

/* issue_credential of type for identity_id (public_key: pk64), valid a week */
static int issue(const char *prog, natsConnection *nc, const char *prefix, const char *auth,
                 const char *identity_id, const char *type, const char *pk64, int64_t timeout_ms,
                 Cms__V1__Credential **out)
{
    Cms__V1__IssueCredential ic = CMS__V1__ISSUE_CREDENTIAL__INIT;
    ic.identity_id = (char *)identity_id;
    ic.type = (char *)type;
    ic.expires_at_us = bench_unix_us() + 7LL * 86400 * 1000000;
    ic.public_key = (char *)(pk64 ? pk64 : "");
    return bench_call(prog, nc, prefix, "issue_credential", auth, &ic.base,
                      &cms__v1__credential__descriptor, timeout_ms, (ProtobufCMessage **)out);
}

static void party_header(bench_party *p)
{
    int n =
        snprintf(p->hdr, sizeof p->hdr, "NATS/1.0\r\nAuthorization: Bearer %s\r\n\r\n", p->api_key);
    p->hdr_len = (size_t)n;
}

int bench_party_create(const char *prog, natsConnection *nc, const char *prefix,
                       const char *admin_auth, const char *name, const char *type, bool public_key,
                       int64_t timeout_ms, bench_party *out)
{
    int code = -1;
    Cms__V1__Identity *ident = NULL;
    Cms__V1__Credential *cred = NULL;
    uint8_t pk[crypto_sign_PUBLICKEYBYTES];
    char
        pk64[sodium_base64_ENCODED_LEN(crypto_sign_PUBLICKEYBYTES, sodium_base64_VARIANT_ORIGINAL)];
    memset(out, 0, sizeof *out);
    Cms__V1__CreateIdentity c = CMS__V1__CREATE_IDENTITY__INIT;
    c.name = (char *)name;
    c.type = (char *)type;
    c.metadata_json = (char *)"{}";
    code = bench_call(prog, nc, prefix, "create", admin_auth, &c.base,
                      &cms__v1__identity__descriptor, timeout_ms, (ProtobufCMessage **)&ident);
    if (code != 0)
        goto out;
    if (strlen(ident->id) != CMS_UUID_STRLEN) {
        fprintf(stderr, "%s: create returned no identity id\n", prog);
        code = -1;
        goto out;
    }
    memcpy(out->id, ident->id, sizeof out->id);
    code = issue(prog, nc, prefix, admin_auth, out->id, "api_key", NULL, timeout_ms, &cred);
    if (code != 0)
        goto out;
    if (strlen(cred->api_key) != CMS_APIKEY_LEN) {
        fprintf(stderr, "%s: issue_credential returned no API key\n", prog);
        code = -1;
        goto out;
    }
    memcpy(out->api_key, cred->api_key, sizeof out->api_key);
    cms_apikey_wipe(cred->api_key, strlen(cred->api_key));
    cms__v1__credential__free_unpacked(cred, NULL);
    cred = NULL;
    party_header(out);
    if (public_key) {
        crypto_sign_keypair(pk, out->sk);
        sodium_bin2base64(pk64, sizeof pk64, pk, sizeof pk, sodium_base64_VARIANT_ORIGINAL);
        code = issue(prog, nc, prefix, admin_auth, out->id, "public_key", pk64, timeout_ms, &cred);
        if (code != 0)
            goto out;
        if (strlen(cred->id) != CMS_UUID_STRLEN) {
            fprintf(stderr, "%s: issue_credential returned no credential id\n", prog);
            code = -1;
            goto out;
        }
        memcpy(out->key_id, cred->id, sizeof out->key_id);
    }
out:
    if (cred)
        cms__v1__credential__free_unpacked(cred, NULL);
    if (ident)
        cms__v1__identity__free_unpacked(ident, NULL);
    if (code != 0)
        sodium_memzero(out, sizeof *out);
    return code;
}

bool bench_party_write(FILE *f, const bench_party *p)
{
    char sk_hex[2 * crypto_sign_SECRETKEYBYTES + 1] = "-";
    if (p->key_id[0])
        sodium_bin2hex(sk_hex, sizeof sk_hex, p->sk, sizeof p->sk);
    int n = fprintf(f, "%s %s %s %s\n", p->id, p->key_id[0] ? p->key_id : "-", sk_hex, p->api_key);
    sodium_memzero(sk_hex, sizeof sk_hex);
    return n > 0;
}

void bench_parties_free(bench_party *v, size_t n)
{
    if (v)
        sodium_memzero(v, n * sizeof *v);
    free(v);
}

/* One line "<id> <key id|-> <secret key hex|-> <api key>" into p. */
static bool party_parse(char *line, bench_party *p)
{
    char *save = NULL, *id = strtok_r(line, " ", &save), *kid = strtok_r(NULL, " ", &save),
         *skhex = strtok_r(NULL, " ", &save), *key = strtok_r(NULL, " ", &save);
    size_t sklen = 0;
    memset(p, 0, sizeof *p);
    if (id == NULL || kid == NULL || skhex == NULL || key == NULL ||
        strlen(id) != CMS_UUID_STRLEN || strlen(key) != CMS_APIKEY_LEN)
        return false;
    bool keyless = strcmp(kid, "-") == 0;
    if (keyless != (strcmp(skhex, "-") == 0))
        return false;
    if (!keyless &&
        (strlen(kid) != CMS_UUID_STRLEN ||
         sodium_hex2bin(p->sk, sizeof p->sk, skhex, strlen(skhex), NULL, &sklen, NULL) != 0 ||
         sklen != sizeof p->sk))
        return false;
    memcpy(p->id, id, sizeof p->id);
    if (!keyless)
        memcpy(p->key_id, kid, sizeof p->key_id);
    memcpy(p->api_key, key, sizeof p->api_key);
    party_header(p);
    return true;
}

bool bench_parties_load(const char *prog, const char *path, bench_party **out, size_t *n)
{
    bool ok = false;
    bench_party *v = NULL;
    size_t len = 0, cap = 0;
    char line[1024];
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        fprintf(stderr, "%s: %s: %s\n", prog, path, strerror(errno));
        goto out;
    }
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = '\0';
        if (line[0] == '\0')
            continue;
        if (len == cap) {
            cap = cap ? 2 * cap : 64;
            bench_party *nv = realloc(v, cap * sizeof *v);
            if (nv == NULL)
                goto out;
            v = nv;
        }
        if (!party_parse(line, &v[len])) {
            fprintf(stderr, "%s: %s, party %zu: not \"<id> <key id> <secret key hex> <api key>\"\n",
                    prog, path, len + 1);
            goto out;
        }
        len++;
    }
    if (len == 0) {
        fprintf(stderr, "%s: %s holds no party\n", prog, path);
        goto out;
    }
    ok = true;
out:
    if (f)
        fclose(f);
    sodium_memzero(line, sizeof line);
    if (!ok) {
        bench_parties_free(v, len);
        v = NULL;
        len = 0;
    }
    *out = v;
    *n = len;
    return ok;
}

bool bench_sign_hash(const bench_party *p, const char *hash_hex, char out[BENCH_SIG_MAX])
{
    uint8_t digest[32], sig[crypto_sign_BYTES];
    size_t dlen = 0;
    if (p->key_id[0] == '\0' ||
        sodium_hex2bin(digest, sizeof digest, hash_hex, strlen(hash_hex), NULL, &dlen, NULL) != 0 ||
        dlen != sizeof digest)
        return false;
    crypto_sign_detached(sig, NULL, digest, sizeof digest, p->sk);
    sodium_bin2base64(out, BENCH_SIG_MAX, sig, sizeof sig,
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    return true;
}

void bench_contract_terms(char *out, size_t cap, const char *extra)
{
    char from[16], to[16];
    time_t now = time(NULL), y = now - 86400, e = now + 366 * 86400;
    struct tm a, b;
    gmtime_r(&y, &a);
    gmtime_r(&e, &b);
    strftime(from, sizeof from, "%Y-%m-%d", &a);
    strftime(to, sizeof to, "%Y-%m-%d", &b);
    snprintf(out, cap,
             "{\"start_date\":\"%s\",\"end_date\":\"%s\",\"conditions\":[{\"type\":\"payment\","
             "\"amount\":1000,\"currency\":\"EUR\",\"schedule\":\"monthly\"}],"
             "\"sla\":{\"availability\":99.9,\"response_time\":200}%s%s}",
             from, to, extra ? "," : "", extra ? extra : "");
}

bool bench_serve(const char *prog, const char *url, const char *subject, bool buffered,
                 natsMsgHandler on_msg, void *closure)
{
    bool ok = false;
    natsOptions *o = NULL;
    natsConnection *nc = NULL;
    natsSubscription *sub = NULL;
    char name[128];
    sigset_t sigs;

    /* SIGTERM and SIGINT are taken by sigwait below, in every thread: nats.c's
     * inherit the mask */
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);

    snprintf(name, sizeof name, "%s-respond", prog);
    natsStatus st = natsOptions_Create(&o);
    if (st == NATS_OK)
        st = natsOptions_SetURL(o, url);
    if (st == NATS_OK)
        st = natsOptions_SetName(o, name);
    if (st == NATS_OK)
        st = natsOptions_SetSendAsap(o, !buffered);
    if (st == NATS_OK)
        st = natsConnection_Connect(&nc, o);
    if (st == NATS_OK)
        st = natsConnection_Subscribe(&sub, nc, subject, on_msg, closure);
    if (st == NATS_OK)
        st = natsSubscription_SetPendingLimits(sub, 1 << 20, 1 << 30);
    if (st == NATS_OK)
        st = natsConnection_Flush(nc);
    if (st != NATS_OK) {
        fprintf(stderr, "%s: responder on %s: %s\n", prog, subject, natsStatus_GetText(st));
        goto out;
    }
    printf("ready: %s\n", subject);
    fflush(stdout);
    int sig = 0;
    sigwait(&sigs, &sig);
    ok = true;
out:
    if (sub) {
        (void)natsSubscription_Unsubscribe(sub);
        natsSubscription_Destroy(sub);
    }
    natsConnection_Destroy(nc);
    natsOptions_Destroy(o);
    (void)nats_CloseAndWait(5000);
    return ok;
}

/* --- main ---------------------------------------------------------------------- */

int bench_main(int argc, char **argv, const char *prog, const char *summary,
               const cms_option *options, size_t noptions, const char *usage_tail,
               const bench_verb *verbs, size_t nverbs)
{
    cms_config *cfg = NULL;
    cms_log_init(prog, CMS_LOG_WARN, stderr);
    if (sodium_init() < 0) {
        fprintf(stderr, "%s: libsodium cannot start\n", prog);
        return BENCH_EXIT_FAILED;
    }
    switch (cms_config_parse(options, noptions, argc, argv, prog, summary, usage_tail, &cfg)) {
    case CMS_CONFIG_OK:
        break;
    case CMS_CONFIG_EXIT_OK:
        return BENCH_EXIT_DONE;
    case CMS_CONFIG_EXIT_USAGE:
        return BENCH_EXIT_USAGE;
    }
    char want[256] = "";
    size_t len = 0;
    for (size_t i = 0; i < nverbs && len < sizeof want; i++)
        len += (size_t)snprintf(want + len, sizeof want - len, "%s%s",
                                i == 0            ? ""
                                : i + 1 == nverbs ? " or "
                                                  : ", ",
                                verbs[i].name);
    int status = BENCH_EXIT_USAGE;
    const char *verb = cms_config_positional(cfg, 0);
    if (verb == NULL || cms_config_npositional(cfg) != 1) {
        fprintf(stderr, "%s: one verb is needed: %s; try --help\n", prog, want);
    } else {
        size_t i = 0;
        while (i < nverbs && strcmp(verbs[i].name, verb) != 0)
            i++;
        if (i < nverbs)
            status = verbs[i].run(cfg);
        else
            fprintf(stderr, "%s: unknown verb \"%s\": want %s\n", prog, verb, want);
    }
    cms_config_destroy(cfg);
    return status;
}
