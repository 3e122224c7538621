/* cms-bench-identity: the load generator of tests/bench/identity.
 *
 *   cms-bench-identity run --op create|authenticate (--rate N | --concurrency N) ...
 *   cms-bench-identity respond --prefix P
 *   cms-bench-identity setup --admin-key-file F --identities N --keys-out F
 *
 * run: request-reply load on <prefix>.identity.<op> over --connections NATS
 * connections, either open loop (--rate: request g is due at g / rate and
 * goes out at the first --tick-us tick at or after that; its latency counts
 * from that scheduled tick, so a slow reply delays the figures of everything
 * queued behind it instead of hiding it: no coordinated omission) or closed
 * loop (--concurrency requests outstanding, each reply sends the next).
 * create requests carry the admin key in "Authorization: Bearer" and a new
 * name each; authenticate requests take the keys of --keys-file in turn.
 * Replies come on one wildcard inbox per connection, the request's number in
 * the last token. Prints "key: value" lines: counts, throughput, latency
 * percentiles, the generator's own CPU. Any reply that is not a result, and
 * any request unanswered within --timeout, is an error; the exit status
 * is 1 if there was any.
 *
 * respond: the baseline, a trivial nats.c responder on <prefix>.identity.*
 * that answers every request with a fixed cms.v1.Reply (a packed Identity;
 * for authenticate a Principal) without reading it.
 *
 * setup: creates identities through the service and issues each an API key
 * (issue_credential), written one a line to --keys-out for run's
 * authenticate pool; checks the first with authenticate.
 *
 * A bench tool, not a service: it blocks, sleeps and uses threads freely. */
#include "apikey.h"
#include "cmd.h"
#include "config.h"
#include "log.h"
#include "uuid.h"

#include "cms/v1/command.pb-c.h"
#include "cms/v1/identity.pb-c.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <nats/nats.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PROG "cms-bench-identity"

enum { EXIT_DONE = 0, EXIT_FAILED = 1, EXIT_USAGE = 2 };

static const cms_option options[] = {
    {"nats-url", NULL, CMS_OPT_STRING, "nats://127.0.0.1:4222", "NATS server URL", false, false},
    {"prefix", NULL, CMS_OPT_STRING, "cms.cmd",
     "command subject root: requests go to <prefix>.identity.<op>", false, false},
    {"op", NULL, CMS_OPT_STRING, "authenticate", "run: create or authenticate", false, false},
    {"rate", NULL, CMS_OPT_INT, "0",
     "run: open loop at this many requests per second (0: closed loop)", false, false},
    {"concurrency", NULL, CMS_OPT_INT, "64", "run, closed loop: requests outstanding", false,
     false},
    {"connections", NULL, CMS_OPT_INT, "4", "run: NATS connections the load is spread over", false,
     false},
    {"tick-us", NULL, CMS_OPT_INT, "200",
     "run, open loop: a request goes out at the first tick (a multiple of this) at or after its "
     "due time, and its latency counts from that tick",
     false, false},
    {"seconds", NULL, CMS_OPT_INT, "10", "run: length of the measured window", false, false},
    {"warmup", NULL, CMS_OPT_DURATION, "1s",
     "run: load before the measured window, not counted in the figures", false, false},
    {"timeout", NULL, CMS_OPT_DURATION, "5s",
     "run, setup: a request unanswered this long is an error", false, false},
    {"admin-key-file", NULL, CMS_OPT_STRING, NULL,
     "run --op create, setup: file holding the admin API key", false, false},
    {"keys-file", NULL, CMS_OPT_STRING, NULL,
     "run --op authenticate: API keys, one a line, used in turn", false, false},
    {"name-prefix", NULL, CMS_OPT_STRING, NULL,
     "run --op create, setup: names are <name-prefix>-<n> (default bench-<pid>-<time>)", false,
     false},
    {"buffered", NULL, CMS_OPT_BOOL, "false",
     "respond: leave replies in nats.c's buffer for its flusher thread (up to 1 ms later) "
     "instead of writing each at once",
     false, false},
    {"identities", NULL, CMS_OPT_INT, "100", "setup: identities to create, one API key each", false,
     false},
    {"keys-out", NULL, CMS_OPT_STRING, NULL, "setup: where to write the API keys", false, false},
};

static const char usage_tail[] =
    "VERB\n"
    "\n"
    "verbs:\n"
    "  run        load <prefix>.identity.<op>: open loop with --rate, else closed loop with\n"
    "             --concurrency; prints counts, throughput and latency percentiles\n"
    "  respond    a trivial responder on <prefix>.identity.* (the baseline); prints \"ready\"\n"
    "             once subscribed, runs until SIGTERM or SIGINT\n"
    "  setup      create --identities identities and issue each an API key into --keys-out\n"
    "\n"
    "Exit status: 0 done (run: no errors), 1 failed or errors, 2 usage error.";

/* --- time ------------------------------------------------------------------ */

static int64_t mono_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static void sleep_until_ns(int64_t t_ns)
{
    struct timespec t = {(time_t)(t_ns / 1000000000), (long)(t_ns % 1000000000)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &t, NULL) == EINTR)
        ;
}

static int64_t unix_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (int64_t)t.tv_sec * 1000000 + t.tv_nsec / 1000;
}

/* --- latency histogram ------------------------------------------------------ */

/* Microseconds, exact below 1024 µs, then 512 buckets per power of two (under
 * 0.2 % error) up to 2^27 µs (134 s); larger values land in the last bucket. */
#define HIST_SUB_BITS 9
#define HIST_SUB (1u << HIST_SUB_BITS)
#define HIST_EXACT (2u * HIST_SUB)
#define HIST_MAX_MSB 26
#define HIST_BUCKETS (HIST_EXACT + (HIST_MAX_MSB - HIST_SUB_BITS) * HIST_SUB)

typedef struct hist {
    uint64_t n;
    uint64_t max_us;
    double sum_us;
    uint64_t b[HIST_BUCKETS];
} hist;

static size_t hist_index(uint64_t us)
{
    if (us < HIST_EXACT)
        return (size_t)us;
    int msb = 63 - __builtin_clzll(us);
    if (msb > HIST_MAX_MSB)
        return HIST_BUCKETS - 1;
    int shift = msb - HIST_SUB_BITS;
    return HIST_EXACT + (size_t)(shift - 1) * HIST_SUB + (size_t)((us >> shift) - HIST_SUB);
}

/* The largest value that falls in bucket i: a percentile never understates. */
static uint64_t hist_upper(size_t i)
{
    if (i < HIST_EXACT)
        return i;
    size_t shift = (i - HIST_EXACT) / HIST_SUB + 1;
    uint64_t top = (i - HIST_EXACT) % HIST_SUB + HIST_SUB;
    return ((top + 1) << shift) - 1;
}

static void hist_add(hist *h, int64_t ns)
{
    uint64_t us = ns > 0 ? (uint64_t)(ns / 1000) : 0;
    h->b[hist_index(us)]++;
    h->n++;
    h->sum_us += (double)us;
    if (us > h->max_us)
        h->max_us = us;
}

static void hist_merge(hist *into, const hist *h)
{
    for (size_t i = 0; i < HIST_BUCKETS; i++)
        into->b[i] += h->b[i];
    into->n += h->n;
    into->sum_us += h->sum_us;
    if (h->max_us > into->max_us)
        into->max_us = h->max_us;
}

static uint64_t hist_quantile(const hist *h, double q)
{
    if (h->n == 0)
        return 0;
    uint64_t want = (uint64_t)(q * (double)h->n);
    if ((double)want < q * (double)h->n)
        want++;
    if (want == 0)
        want = 1;
    uint64_t seen = 0;
    for (size_t i = 0; i < HIST_BUCKETS; i++) {
        seen += h->b[i];
        if (seen >= want)
            return hist_upper(i) < h->max_us ? hist_upper(i) : h->max_us;
    }
    return h->max_us;
}

/* --- files ----------------------------------------------------------------- */

/* The first API key in the file at path (a bare key, or a line like
 * "api_key = cms_..." among comments, as cms-migrate --admin-key-out writes). */
static bool read_key_file(const char *path, char out[CMS_APIKEY_LEN + 1])
{
    bool ok = false;
    char text[65536];
    size_t n = 0;
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        fprintf(stderr, PROG ": %s: %s\n", path, strerror(errno));
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
        fprintf(stderr, PROG ": %s holds no API key\n", path);
out:
    if (f)
        fclose(f);
    cms_apikey_wipe(text, sizeof text);
    return ok;
}

/* --- request bodies ---------------------------------------------------------- */

typedef struct body {
    uint8_t *data;
    size_t len;
} body;

static bool pack_body(const ProtobufCMessage *m, body *out)
{
    out->len = protobuf_c_message_get_packed_size(m);
    out->data = malloc(out->len + 1);
    if (out->data == NULL)
        return false;
    protobuf_c_message_pack(m, out->data);
    return true;
}

/* One packed Authenticate per API key of path. */
static bool load_auth_bodies(const char *path, body **out, size_t *n)
{
    bool ok = false;
    body *v = NULL;
    size_t len = 0, cap = 0;
    char line[512];
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        fprintf(stderr, PROG ": %s: %s\n", path, strerror(errno));
        goto out;
    }
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = '\0';
        if (line[0] == '\0')
            continue;
        if (len == cap) {
            cap = cap ? 2 * cap : 128;
            body *nv = realloc(v, cap * sizeof *v);
            if (nv == NULL)
                goto out;
            v = nv;
        }
        Cms__V1__Authenticate a = CMS__V1__AUTHENTICATE__INIT;
        a.api_key = line;
        if (!pack_body(&a.base, &v[len]))
            goto out;
        len++;
    }
    if (len == 0) {
        fprintf(stderr, PROG ": %s has no API keys\n", path);
        goto out;
    }
    ok = true;
out:
    if (f)
        fclose(f);
    if (!ok) {
        for (size_t i = 0; i < len; i++)
            free(v[i].data);
        free(v);
        v = NULL;
        len = 0;
    }
    *out = v;
    *n = len;
    return ok;
}

/* --- run --------------------------------------------------------------------- */

/* The load runs on a NATS client of its own, a few hundred lines of the text
 * protocol: one thread per connection owns its socket, writes every request
 * due in one write and reads every reply available in a few reads, and so
 * costs a few microseconds per request. nats.c hands each message from its
 * reader thread to a delivery thread and, unless told to send at once, holds
 * a publish up to 1 ms: on two CPUs the generator would measure itself. */

/* Outcomes of a request. Codes 1..7 are the cms.v1.ErrorCode values of
 * error replies. */
enum {
    OUT_NO_RESPONDERS = 8, /* the server's 503: nobody subscribed */
    OUT_BAD_REPLY,         /* not a cms.v1.Reply with an outcome */
    OUT_KINDS
};

static const char *outcome_name(int k)
{
    switch (k) {
    case OUT_NO_RESPONDERS:
        return "NO_RESPONDERS";
    case OUT_BAD_REPLY:
        return "BAD_REPLY";
    default:
        return cms_cmd_code_name((cms_cmd_code)k);
    }
}

#define RBUF_MAX (16u << 20) /* the largest frame we accept, and then some */
#define WBUF_MAX (256u << 20)
#define SWEEP_NS 10000000 /* timeouts are looked for every 10 ms */

/* Bytes in [off, len) are pending. */
typedef struct buf {
    char *p;
    size_t off, len, cap;
} buf;

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

/* A request in flight: seq its number (0: slot free), t_ns its scheduled (open
 * loop) or send (closed loop) time. Request seq lives in ring[seq & mask]. */
typedef struct slot {
    uint64_t seq;
    int64_t t_ns;
} slot;

typedef struct bench bench;

/* Everything of one connection belongs to its thread until it is joined. */
typedef struct conn {
    bench *b;
    int index;
    int fd;
    pthread_t thread;
    bool started;
    char inbox[64];
    size_t inbox_len;
    buf w, r;
    slot *ring;
    uint64_t mask;
    uint64_t next_seq;  /* the last request number handed out */
    uint64_t sweep_seq; /* every request up to it is settled */
    int64_t inflight;
    uint64_t due;  /* open loop: requests of this connection sent so far */
    int64_t quota; /* closed loop: requests kept outstanding */
    uint64_t sent, replies, ok_measured, timeouts;
    uint64_t out[OUT_KINDS];
    hist *lat;       /* replies of measured requests */
    hist *send_lag;  /* open loop: how late the generator sent */
    char error[512]; /* the first error */
    bool failed;     /* the connection broke: the run is void */
} conn;

struct bench {
    bool create; /* else authenticate */
    const char *subject;
    char *hdr; /* "NATS/1.0\r\nAuthorization: Bearer <key>\r\n\r\n", or NULL */
    size_t hdr_len;
    body *auth_bodies;
    size_t n_auth_bodies;
    const char *name_prefix;
    bool closed;
    int64_t rate;    /* open loop: requests per second */
    int64_t tick_ns; /* open loop: a burst every tick */
    int64_t timeout_ns;
    int64_t t0, t_measure, t_end;
    conn *conns;
    int nconns;
};

static void conn_error(conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void conn_error(conn *c, const char *fmt, ...)
{
    if (c->error[0] != '\0')
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->error, sizeof c->error, fmt, ap);
    va_end(ap);
}

static bool measured(const bench *b, int64_t t_ns)
{
    return t_ns >= b->t_measure && t_ns < b->t_end;
}

/* Settles request seq if it is still in flight; its time into *t_ns. */
static bool settle(conn *c, uint64_t seq, int64_t *t_ns)
{
    slot *s = &c->ring[seq & c->mask];
    if (seq == 0 || s->seq != seq)
        return false;
    s->seq = 0;
    c->inflight--;
    if (t_ns)
        *t_ns = s->t_ns;
    return true;
}

/* Appends the next request, stamped t_ns, to the write buffer. */
static bool queue_request(conn *c, int64_t t_ns)
{
    bench *b = c->b;
    uint64_t seq = ++c->next_seq;
    slot *s = &c->ring[seq & c->mask];
    /* a request a whole ring older still unanswered: long past its timeout */
    if (s->seq != 0 && settle(c, s->seq, NULL))
        c->timeouts++;
    s->seq = seq;
    s->t_ns = t_ns;
    c->inflight++;
    c->sent++;

    uint8_t pb[512];
    char name[160], line[512];
    const uint8_t *data;
    size_t len;
    if (b->create) {
        Cms__V1__CreateIdentity r = CMS__V1__CREATE_IDENTITY__INIT;
        snprintf(name, sizeof name, "%s-%d-%" PRIu64, b->name_prefix, c->index, seq);
        r.name = name;
        r.type = (char *)"machine";
        r.metadata_json = (char *)"{}";
        len = cms__v1__create_identity__get_packed_size(&r);
        if (len > sizeof pb)
            return false;
        cms__v1__create_identity__pack(&r, pb);
        data = pb;
    } else {
        const body *bd = &b->auth_bodies[seq % b->n_auth_bodies];
        data = bd->data;
        len = bd->len;
    }
    int n;
    if (b->hdr)
        n = snprintf(line, sizeof line, "HPUB %s %s.%" PRIu64 " %zu %zu\r\n", b->subject, c->inbox,
                     seq, b->hdr_len, b->hdr_len + len);
    else
        n = snprintf(line, sizeof line, "PUB %s %s.%" PRIu64 " %zu\r\n", b->subject, c->inbox, seq,
                     len);
    if (n < 0 || (size_t)n >= sizeof line)
        return false;
    return buf_add(&c->w, line, (size_t)n) && (!b->hdr || buf_add(&c->w, b->hdr, b->hdr_len)) &&
           buf_add(&c->w, data, len) && buf_add(&c->w, "\r\n", 2);
}

/* Writes what it can without blocking. */
static bool flush_some(conn *c)
{
    while (c->w.off < c->w.len) {
        ssize_t n = write(c->fd, c->w.p + c->w.off, c->w.len - c->w.off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return true;
        if (n <= 0) {
            conn_error(c, "writing to nats-server: %s", strerror(errno));
            return false;
        }
        c->w.off += (size_t)n;
    }
    return true;
}

/* A reply on <inbox>.<seq>, read at t_now. */
static bool on_reply(conn *c, const char *subj, size_t subj_len, const char *hdr, size_t hdr_len,
                     const char *data, size_t len, int64_t t_now)
{
    bench *b = c->b;
    int64_t t_sent = 0;
    uint64_t seq = 0;
    if (subj_len > c->inbox_len + 1 && memcmp(subj, c->inbox, c->inbox_len) == 0) {
        for (size_t i = c->inbox_len + 1; i < subj_len && subj[i] >= '0' && subj[i] <= '9'; i++)
            seq = seq * 10 + (uint64_t)(subj[i] - '0');
    }
    if (!settle(c, seq, &t_sent))
        return true; /* already counted as a timeout */
    c->replies++;
    int kind = 0;
    Cms__V1__Reply *r = NULL;
    if (hdr_len >= 12 && memcmp(hdr, "NATS/1.0 503", 12) == 0) {
        kind = OUT_NO_RESPONDERS;
        conn_error(c, "no responders on %s", b->subject);
    } else if ((r = cms__v1__reply__unpack(NULL, len, (const uint8_t *)data)) == NULL ||
               r->outcome_case == CMS__V1__REPLY__OUTCOME__NOT_SET ||
               (r->outcome_case == CMS__V1__REPLY__OUTCOME_ERROR && r->error == NULL)) {
        kind = OUT_BAD_REPLY;
        conn_error(c, "a reply that is not a cms.v1.Reply with an outcome (%zu bytes)", len);
    } else if (r->outcome_case == CMS__V1__REPLY__OUTCOME_ERROR) {
        int code = (int)r->error->code;
        kind = code >= 1 && code <= 7 ? code : OUT_BAD_REPLY;
        conn_error(c, "%s: %s%s%s%s", cms_cmd_code_name(r->error->code), r->error->message,
                   r->error->field[0] ? " (field " : "", r->error->field,
                   r->error->field[0] ? ")" : "");
    }
    if (r)
        cms__v1__reply__free_unpacked(r, NULL);
    if (kind != 0) {
        c->out[kind]++;
    } else if (measured(b, t_sent)) {
        hist_add(c->lat, t_now - t_sent);
        c->ok_measured++;
    }
    if (b->closed && t_now < b->t_end)
        return queue_request(c, t_now);
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

/* Handles every whole frame in the read buffer. */
static bool parse_frames(conn *c, int64_t t_now)
{
    for (;;) {
        const char *s = c->r.p + c->r.off;
        size_t avail = c->r.len - c->r.off;
        const char *eol = memmem(s, avail, "\r\n", 2);
        if (eol == NULL) {
            if (avail > 65536) {
                conn_error(c, "nats-server sent a line longer than 64 KiB");
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
                conn_error(c, "nats-server sent a malformed frame: %.*s", (int)line_len, s);
                return false;
            }
            if (avail < used + tlen + 2) {
                if (used + tlen + 2 > RBUF_MAX) {
                    conn_error(c, "nats-server sent a frame of %zu bytes", tlen);
                    return false;
                }
                return true; /* the rest is still on its way */
            }
            const char *payload = s + used;
            if (!on_reply(c, tok[0], tl[0], payload, hlen, payload + hlen, tlen - hlen, t_now))
                return false;
            used += tlen + 2;
        } else if (line_len == 4 && memcmp(s, "PING", 4) == 0) {
            if (!buf_add(&c->w, "PONG\r\n", 6))
                return false;
        } else if (line_len >= 4 && memcmp(s, "-ERR", 4) == 0) {
            conn_error(c, "nats-server: %.*s", (int)line_len, s);
            return false;
        } /* PONG, +OK, INFO: nothing to do */
        c->r.off += used;
    }
}

/* Reads what is there without blocking, stamping it with the time it came. */
static bool read_some(conn *c)
{
    for (;;) {
        if (!buf_room(&c->r, 65536, RBUF_MAX + 65536)) {
            conn_error(c, "read buffer full");
            return false;
        }
        ssize_t n = read(c->fd, c->r.p + c->r.len, c->r.cap - c->r.len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return true;
        if (n <= 0) {
            conn_error(c, "nats-server closed the connection%s%s", n < 0 ? ": " : "",
                       n < 0 ? strerror(errno) : "");
            return false;
        }
        c->r.len += (size_t)n;
        if (!parse_frames(c, mono_ns()))
            return false;
    }
}

/* Times out what has waited longer than the timeout (everything, if force),
 * oldest first; in the closed loop each is replaced while the run lasts. */
static bool sweep(conn *c, int64_t now, bool force)
{
    bench *b = c->b;
    while (c->sweep_seq < c->next_seq) {
        uint64_t s = c->sweep_seq + 1;
        slot *sl = &c->ring[s & c->mask];
        if (sl->seq == s) {
            if (!force && now - sl->t_ns < b->timeout_ns)
                break;
            settle(c, s, NULL);
            c->timeouts++;
            conn_error(c, "no reply in %" PRId64 " ms", b->timeout_ns / 1000000);
            if (b->closed && !force && now < b->t_end && !queue_request(c, now))
                return false;
        }
        c->sweep_seq = s;
    }
    return true;
}

/* The open loop's schedule: request g (over all connections) is due at
 * g / rate and goes out at the first tick at or after that, stamped with the
 * tick's time; connection i sends requests i, i + nconns, i + 2 nconns... */
static int64_t next_send_time(const conn *c)
{
    const bench *b = c->b;
    unsigned __int128 g = (unsigned __int128)c->due * (unsigned)b->nconns + (unsigned)c->index;
    unsigned __int128 per = (unsigned __int128)b->rate * (uint64_t)b->tick_ns;
    uint64_t tick = (uint64_t)((g * 1000000000u + per - 1) / per);
    return b->t0 + (int64_t)tick * b->tick_ns;
}

static void *worker(void *arg)
{
    conn *c = arg;
    bench *b = c->b;
    /* wake within microseconds of a due time, not the default 50 µs later */
    (void)prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
    sleep_until_ns(b->t0);
    int64_t now = mono_ns(), next_sweep = now + SWEEP_NS;
    if (b->closed)
        for (int64_t i = 0; i < c->quota; i++)
            if (!queue_request(c, now))
                goto fail;
    for (;;) {
        now = mono_ns();
        bool sending = now < b->t_end;
        if (!b->closed && sending) {
            for (int64_t t = next_send_time(c); t <= now && t < b->t_end; t = next_send_time(c)) {
                if (measured(b, t))
                    hist_add(c->send_lag, now - t);
                if (!queue_request(c, t))
                    goto fail;
                c->due++;
            }
        }
        if (!flush_some(c))
            goto fail;
        if (now >= next_sweep) {
            if (!sweep(c, now, false))
                goto fail;
            next_sweep = now + SWEEP_NS;
        }
        if (!sending && c->inflight == 0)
            break;
        if (!sending && now >= b->t_end + b->timeout_ns) {
            (void)sweep(c, now, true);
            break;
        }
        int64_t wake = next_sweep;
        if (sending && !b->closed && next_send_time(c) < wake)
            wake = next_send_time(c);
        if (sending && b->t_end < wake)
            wake = b->t_end;
        struct pollfd pfd = {c->fd, POLLIN, 0};
        if (c->w.off < c->w.len)
            pfd.events |= POLLOUT;
        int64_t wait = wake > now ? wake - now : 0;
        struct timespec ts = {(time_t)(wait / 1000000000), (long)(wait % 1000000000)};
        int rc = ppoll(&pfd, 1, &ts, NULL);
        if (rc < 0 && errno != EINTR) {
            conn_error(c, "poll: %s", strerror(errno));
            goto fail;
        }
        if (rc > 0 && (pfd.revents & (POLLIN | POLLERR | POLLHUP)) && !read_some(c))
            goto fail;
    }
    return NULL;
fail:
    c->failed = true;
    return NULL;
}

/* nats://host:port or host:port */
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

/* Blocking until the server's line starting with want (or -ERR) is read. */
static bool await_line(conn *c, const char *want, int64_t deadline)
{
    for (;;) {
        const char *s = c->r.p + c->r.off;
        size_t avail = c->r.len - c->r.off;
        const char *eol = avail ? memmem(s, avail, "\r\n", 2) : NULL;
        if (eol) {
            size_t n = (size_t)(eol - s);
            c->r.off += n + 2;
            if (n >= 4 && memcmp(s, "-ERR", 4) == 0) {
                conn_error(c, "nats-server: %.*s", (int)n, s);
                return false;
            }
            if (n >= strlen(want) && memcmp(s, want, strlen(want)) == 0)
                return true;
            continue;
        }
        int64_t left = deadline - mono_ns();
        struct pollfd pfd = {c->fd, POLLIN, 0};
        if (left <= 0 || poll(&pfd, 1, (int)(left / 1000000) + 1) <= 0) {
            conn_error(c, "no %s from nats-server", want);
            return false;
        }
        if (!buf_room(&c->r, 65536, RBUF_MAX)) {
            conn_error(c, "read buffer full");
            return false;
        }
        ssize_t r = read(c->fd, c->r.p + c->r.len, c->r.cap - c->r.len);
        if (r <= 0) {
            conn_error(c, "nats-server closed the connection while connecting");
            return false;
        }
        c->r.len += (size_t)r;
    }
}

static bool conn_open(bench *b, conn *c, int index, const char *url, uint64_t ring)
{
    bool ok = false;
    struct addrinfo hints = {0}, *ai = NULL;
    char host[256], port[32], hello[512];
    cms_uuid u;
    c->b = b;
    c->index = index;
    c->fd = -1;
    c->mask = ring - 1;
    c->ring = calloc(ring, sizeof *c->ring);
    c->lat = calloc(1, sizeof *c->lat);
    c->send_lag = calloc(1, sizeof *c->send_lag);
    if (c->ring == NULL || c->lat == NULL || c->send_lag == NULL) {
        conn_error(c, "out of memory");
        goto out;
    }
    cms_uuid_v7(&u);
    snprintf(c->inbox, sizeof c->inbox, "_INBOX.bench%dx%dx%02x%02x%02x%02x", (int)getpid(), index,
             u.b[12], u.b[13], u.b[14], u.b[15]);
    c->inbox_len = strlen(c->inbox);
    if (!split_url(url, host, sizeof host, port, sizeof port)) {
        conn_error(c, "cannot read host and port in \"%s\"", url);
        goto out;
    }
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(host, port, &hints, &ai);
    if (rc != 0) {
        conn_error(c, "%s: %s", host, gai_strerror(rc));
        goto out;
    }
    c->fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0 || connect(c->fd, ai->ai_addr, ai->ai_addrlen) != 0) {
        conn_error(c, "connecting to %s:%s: %s", host, port, strerror(errno));
        goto out;
    }
    int one = 1;
    (void)setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int64_t deadline = mono_ns() + 5000000000LL;
    if (!await_line(c, "INFO", deadline))
        goto out;
    int n = snprintf(hello, sizeof hello,
                     "CONNECT {\"verbose\":false,\"pedantic\":false,\"headers\":true,"
                     "\"no_responders\":true,\"name\":\"" PROG "-%d\",\"lang\":\"c\","
                     "\"version\":\"" CMS_VERSION "\",\"protocol\":1}\r\n"
                     "SUB %s.* 1\r\nPING\r\n",
                     index, c->inbox);
    if (n < 0 || (size_t)n >= sizeof hello || write(c->fd, hello, (size_t)n) != n) {
        conn_error(c, "writing to nats-server failed");
        goto out;
    }
    if (!await_line(c, "PONG", deadline))
        goto out;
    if (fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK) != 0) {
        conn_error(c, "fcntl: %s", strerror(errno));
        goto out;
    }
    ok = true;
out:
    if (ai)
        freeaddrinfo(ai);
    return ok;
}

static void conn_free(conn *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    free(c->w.p);
    free(c->r.p);
    free(c->ring);
    free(c->lat);
    free(c->send_lag);
}

static uint64_t pow2_at_least(uint64_t n)
{
    uint64_t p = 1;
    while (p < n)
        p <<= 1;
    return p;
}

static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static int cmd_run(const cms_config *cfg)
{
    int status = EXIT_FAILED;
    bench b = {0};
    hist *lat = NULL, *lag = NULL;
    char subject[256], key[256], default_prefix[64];
    const char *op = cms_config_str(cfg, "op");
    const char *url = cms_config_str(cfg, "nats-url");
    int64_t rate = cms_config_int(cfg, "rate");
    int64_t concurrency = cms_config_int(cfg, "concurrency");
    int64_t nconns = cms_config_int(cfg, "connections");
    int64_t seconds = cms_config_int(cfg, "seconds");
    int64_t tick_us = cms_config_int(cfg, "tick-us");
    int64_t warmup_ms = cms_config_duration_ms(cfg, "warmup");
    int64_t timeout_ms = cms_config_duration_ms(cfg, "timeout");
    const char *keys_file = cms_config_str(cfg, "keys-file");
    const char *admin_file = cms_config_str(cfg, "admin-key-file");

    if (strcmp(op, "create") != 0 && strcmp(op, "authenticate") != 0) {
        fprintf(stderr, PROG ": --op wants create or authenticate, not \"%s\"\n", op);
        status = EXIT_USAGE;
        goto out;
    }
    if (rate < 0 || rate > 10000000 || concurrency < 1 || concurrency > 1000000 || nconns < 1 ||
        nconns > 64 || seconds < 1 || seconds > 86400 || warmup_ms < 0 || timeout_ms < 1 ||
        tick_us < 1 || tick_us > 1000000) {
        fprintf(stderr, PROG ": --rate 0..10000000, --concurrency 1..1000000, --connections "
                             "1..64, --seconds 1..86400, --warmup >= 0, --timeout >= 1ms, "
                             "--tick-us 1..1000000\n");
        status = EXIT_USAGE;
        goto out;
    }
    b.create = strcmp(op, "create") == 0;
    if (rate == 0 && concurrency < nconns)
        nconns = concurrency;
    snprintf(subject, sizeof subject, "%s.identity.%s", cms_config_str(cfg, "prefix"), op);
    b.subject = subject;
    b.closed = rate == 0;
    b.rate = rate;
    b.tick_ns = tick_us * 1000;
    b.timeout_ns = timeout_ms * 1000000;
    snprintf(default_prefix, sizeof default_prefix, "bench-%d-%" PRId64, (int)getpid(), unix_us());
    b.name_prefix =
        cms_config_str(cfg, "name-prefix") ? cms_config_str(cfg, "name-prefix") : default_prefix;
    if (b.create) {
        if (admin_file == NULL) {
            fprintf(stderr, PROG ": --op create needs --admin-key-file\n");
            status = EXIT_USAGE;
            goto out;
        }
        if (!read_key_file(admin_file, key))
            goto out;
        size_t cap = strlen(key) + 64;
        b.hdr = malloc(cap);
        if (b.hdr == NULL)
            goto out;
        int n = snprintf(b.hdr, cap, "NATS/1.0\r\nAuthorization: Bearer %s\r\n\r\n", key);
        b.hdr_len = n > 0 ? (size_t)n : 0;
    } else {
        if (keys_file == NULL) {
            fprintf(stderr, PROG ": --op authenticate needs --keys-file\n");
            status = EXIT_USAGE;
            goto out;
        }
        if (!load_auth_bodies(keys_file, &b.auth_bodies, &b.n_auth_bodies))
            goto out;
    }

    /* a ring holds twice what can be in flight before the sweeper times it
     * out: the offered rate's share, or, closed loop, at most 250 000/s */
    uint64_t per_conn = b.closed ? 250000 : (uint64_t)(rate / nconns + 1);
    uint64_t ring = pow2_at_least(2 * per_conn * (uint64_t)(timeout_ms / 1000 + 1) + 4096);
    b.nconns = (int)nconns;
    b.conns = calloc((size_t)nconns, sizeof *b.conns);
    if (b.conns == NULL)
        goto out;
    for (int i = 0; i < b.nconns; i++)
        b.conns[i].fd = -1;
    for (int i = 0; i < b.nconns; i++) {
        conn *c = &b.conns[i];
        if (!conn_open(&b, c, i, url, ring)) {
            fprintf(stderr, PROG ": %s\n", c->error);
            goto out;
        }
        c->quota = concurrency / nconns + (i < concurrency % nconns ? 1 : 0);
    }

    double cpu0 = cpu_seconds();
    b.t0 = mono_ns() + 20000000;
    b.t_measure = b.t0 + warmup_ms * 1000000;
    b.t_end = b.t_measure + seconds * 1000000000;
    for (int i = 0; i < b.nconns; i++) {
        if (pthread_create(&b.conns[i].thread, NULL, worker, &b.conns[i]) != 0) {
            fprintf(stderr, PROG ": cannot start a thread\n");
            goto out;
        }
        b.conns[i].started = true;
    }
    for (int i = 0; i < b.nconns; i++) {
        pthread_join(b.conns[i].thread, NULL);
        b.conns[i].started = false;
    }
    double cpu = cpu_seconds() - cpu0;

    lat = calloc(1, sizeof *lat);
    lag = calloc(1, sizeof *lag);
    if (lat == NULL || lag == NULL)
        goto out;
    uint64_t sent = 0, replies = 0, ok = 0, timeouts = 0, errors = 0, out_counts[OUT_KINDS] = {0};
    bool failed = false;
    const char *first_error = "";
    for (int i = 0; i < b.nconns; i++) {
        conn *c = &b.conns[i];
        hist_merge(lat, c->lat);
        hist_merge(lag, c->send_lag);
        sent += c->sent;
        replies += c->replies;
        ok += c->ok_measured;
        timeouts += c->timeouts;
        for (int k = 1; k < OUT_KINDS; k++)
            out_counts[k] += c->out[k];
        failed = failed || c->failed;
        if (first_error[0] == '\0')
            first_error = c->error;
    }
    errors = timeouts;
    for (int k = 1; k < OUT_KINDS; k++)
        errors += out_counts[k];

    printf("subject: %s\n", subject);
    printf("mode: %s\n", b.closed ? "closed" : "open");
    printf("rate: %" PRId64 "\n", rate);
    printf("concurrency: %" PRId64 "\n", b.closed ? concurrency : 0);
    printf("connections: %" PRId64 "\n", nconns);
    printf("seconds: %" PRId64 "\n", seconds);
    printf("tick_us: %" PRId64 "\n", b.closed ? 0 : tick_us);
    printf("sent: %" PRIu64 "\n", sent);
    printf("replies: %" PRIu64 "\n", replies);
    printf("ok: %" PRIu64 "\n", ok);
    printf("errors: %" PRIu64 "\n", errors);
    printf("timeouts: %" PRIu64 "\n", timeouts);
    printf("throughput: %.0f\n", (double)ok / (double)seconds);
    printf("p50_us: %" PRIu64 "\n", hist_quantile(lat, 0.50));
    printf("p90_us: %" PRIu64 "\n", hist_quantile(lat, 0.90));
    printf("p99_us: %" PRIu64 "\n", hist_quantile(lat, 0.99));
    printf("p999_us: %" PRIu64 "\n", hist_quantile(lat, 0.999));
    printf("max_us: %" PRIu64 "\n", lat->max_us);
    printf("mean_us: %.0f\n", lat->n ? lat->sum_us / (double)lat->n : 0.0);
    if (!b.closed)
        printf("send_lag_p99_us: %" PRIu64 "\n", hist_quantile(lag, 0.99));
    printf("cpu_s: %.2f\n", cpu);
    for (int k = 1; k < OUT_KINDS; k++)
        if (out_counts[k])
            printf("error_%s: %" PRIu64 "\n", outcome_name(k), out_counts[k]);
    if (first_error[0])
        printf("first_error: %s\n", first_error);
    if (failed)
        printf("failed: the connection to nats-server broke\n");
    status = errors == 0 && ok > 0 && !failed ? EXIT_DONE : EXIT_FAILED;
out:
    if (b.conns) {
        for (int i = 0; i < b.nconns; i++)
            if (b.conns[i].started)
                pthread_join(b.conns[i].thread, NULL);
        for (int i = 0; i < b.nconns; i++)
            conn_free(&b.conns[i]);
    }
    free(b.conns);
    free(lat);
    free(lag);
    for (size_t i = 0; i < b.n_auth_bodies; i++)
        free(b.auth_bodies[i].data);
    free(b.auth_bodies);
    if (b.hdr)
        cms_apikey_wipe(b.hdr, b.hdr_len);
    free(b.hdr);
    cms_apikey_wipe(key, sizeof key);
    return status;
}

/* --- respond ----------------------------------------------------------------- */

typedef struct responder {
    body identity;  /* Reply{result: Identity} */
    body principal; /* Reply{result: Principal} */
    _Atomic uint64_t replied;
    _Atomic uint64_t failed;
} responder;

static bool pack_reply(const ProtobufCMessage *result, body *out)
{
    body r = {0};
    bool ok = false;
    if (!pack_body(result, &r))
        goto out;
    Cms__V1__Reply rep = CMS__V1__REPLY__INIT;
    rep.outcome_case = CMS__V1__REPLY__OUTCOME_RESULT;
    rep.result.data = r.data;
    rep.result.len = r.len;
    ok = pack_body(&rep.base, out);
out:
    free(r.data);
    return ok;
}

static void on_request(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
    (void)sub;
    responder *r = closure;
    const char *reply = natsMsg_GetReply(msg);
    const char *subj = natsMsg_GetSubject(msg);
    size_t n = strlen(subj);
    const body *bd =
        n >= 13 && strcmp(subj + n - 13, ".authenticate") == 0 ? &r->principal : &r->identity;
    if (reply && natsConnection_Publish(nc, reply, bd->data, (int)bd->len) == NATS_OK)
        atomic_fetch_add_explicit(&r->replied, 1, memory_order_relaxed);
    else
        atomic_fetch_add_explicit(&r->failed, 1, memory_order_relaxed);
    natsMsg_Destroy(msg);
}

static int cmd_respond(const cms_config *cfg)
{
    int status = EXIT_FAILED;
    responder r = {0};
    natsOptions *o = NULL;
    natsConnection *nc = NULL;
    natsSubscription *sub = NULL;
    natsStatus st = NATS_OK;
    char subject[256], id[CMS_UUID_STRLEN + 1], cid[CMS_UUID_STRLEN + 1];
    cms_uuid u;
    sigset_t sigs;

    /* SIGTERM and SIGINT are taken by sigwait below, in every thread */
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);

    cms_uuid_v7(&u);
    cms_uuid_format(&u, id);
    cms_uuid_v7(&u);
    cms_uuid_format(&u, cid);
    int64_t now = unix_us();
    Cms__V1__Identity ident = CMS__V1__IDENTITY__INIT;
    ident.id = id;
    ident.name = (char *)"bench-000000000000-0-000000";
    ident.type = (char *)"machine";
    ident.status = (char *)"active";
    ident.metadata_json = (char *)"{}";
    ident.created_at_us = now;
    ident.updated_at_us = now;
    char *roles[] = {(char *)"user"};
    Cms__V1__Principal p = CMS__V1__PRINCIPAL__INIT;
    p.identity_id = id;
    p.name = (char *)"bench-key-000";
    p.type = (char *)"machine";
    p.status = (char *)"active";
    p.n_roles = 1;
    p.roles = roles;
    p.credential_id = cid;
    p.expires_at_us = now + 86400LL * 1000000;
    if (!pack_reply(&ident.base, &r.identity) || !pack_reply(&p.base, &r.principal))
        goto out;

    snprintf(subject, sizeof subject, "%s.identity.*", cms_config_str(cfg, "prefix"));
    st = natsOptions_Create(&o);
    if (st == NATS_OK)
        st = natsOptions_SetURL(o, cms_config_str(cfg, "nats-url"));
    if (st == NATS_OK)
        st = natsOptions_SetName(o, PROG "-respond");
    if (st == NATS_OK)
        st = natsOptions_SetSendAsap(o, !cms_config_bool(cfg, "buffered"));
    if (st == NATS_OK)
        st = natsConnection_Connect(&nc, o);
    if (st == NATS_OK)
        st = natsConnection_Subscribe(&sub, nc, subject, on_request, &r);
    if (st == NATS_OK)
        st = natsSubscription_SetPendingLimits(sub, 1 << 20, 1 << 30);
    if (st == NATS_OK)
        st = natsConnection_Flush(nc);
    if (st != NATS_OK) {
        fprintf(stderr, PROG ": responder on %s: %s\n", subject, natsStatus_GetText(st));
        goto out;
    }
    printf("ready: %s\n", subject);
    fflush(stdout);
    int sig = 0;
    sigwait(&sigs, &sig);
    status = EXIT_DONE;
out:
    if (sub) {
        (void)natsSubscription_Unsubscribe(sub);
        natsSubscription_Destroy(sub);
    }
    natsConnection_Destroy(nc);
    natsOptions_Destroy(o);
    (void)nats_CloseAndWait(5000);
    if (status == EXIT_DONE)
        printf("replied: %" PRIu64 "\nfailed: %" PRIu64 "\n", atomic_load(&r.replied),
               atomic_load(&r.failed));
    free(r.identity.data);
    free(r.principal.data);
    return status;
}

/* --- setup ------------------------------------------------------------------- */

/* One blocking command; 0 and *out (a result of rdesc) on success, else the
 * error code (or -1: no reply) with a line on stderr. */
static int call(natsConnection *nc, const char *prefix, const char *verb, const char *auth,
                const ProtobufCMessage *req, const ProtobufCMessageDescriptor *rdesc,
                int64_t timeout_ms, ProtobufCMessage **out)
{
    int code = -1;
    char subject[256];
    body bd = {0};
    natsMsg *m = NULL, *rep = NULL;
    Cms__V1__Reply *r = NULL;
    snprintf(subject, sizeof subject, "%s.identity.%s", prefix, verb);
    if (!pack_body(req, &bd))
        goto out;
    natsStatus st = natsMsg_Create(&m, subject, NULL, (const char *)bd.data, (int)bd.len);
    if (st == NATS_OK && auth)
        st = natsMsgHeader_Set(m, "Authorization", auth);
    if (st == NATS_OK)
        st = natsConnection_RequestMsg(&rep, nc, m, timeout_ms);
    if (st != NATS_OK) {
        fprintf(stderr, PROG ": %s: %s\n", subject, natsStatus_GetText(st));
        goto out;
    }
    r = cms__v1__reply__unpack(NULL, (size_t)natsMsg_GetDataLength(rep),
                               (const uint8_t *)natsMsg_GetData(rep));
    if (r == NULL) {
        fprintf(stderr, PROG ": %s: the reply is not a cms.v1.Reply\n", subject);
        goto out;
    }
    if (r->outcome_case == CMS__V1__REPLY__OUTCOME_ERROR && r->error) {
        code = (int)r->error->code;
        fprintf(stderr, PROG ": %s: %s: %s (field \"%s\")\n", subject,
                cms_cmd_code_name(r->error->code), r->error->message, r->error->field);
        goto out;
    }
    *out = protobuf_c_message_unpack(rdesc, NULL, r->result.len, r->result.data);
    if (*out == NULL) {
        fprintf(stderr, PROG ": %s: the result is not a %s\n", subject, rdesc->name);
        goto out;
    }
    code = 0;
out:
    if (r)
        cms__v1__reply__free_unpacked(r, NULL);
    natsMsg_Destroy(rep);
    natsMsg_Destroy(m);
    free(bd.data);
    return code;
}

static int cmd_setup(const cms_config *cfg)
{
    int status = EXIT_FAILED;
    natsConnection *nc = NULL;
    FILE *keys = NULL;
    ProtobufCMessage *res = NULL;
    char key[256], auth[300], name[200], first_key[CMS_APIKEY_LEN + 1] = "", default_prefix[64];
    const char *prefix = cms_config_str(cfg, "prefix");
    const char *admin_file = cms_config_str(cfg, "admin-key-file");
    const char *keys_out = cms_config_str(cfg, "keys-out");
    int64_t n = cms_config_int(cfg, "identities");
    int64_t timeout_ms = cms_config_duration_ms(cfg, "timeout");
    snprintf(default_prefix, sizeof default_prefix, "bench-%d-%" PRId64, (int)getpid(), unix_us());
    const char *name_prefix =
        cms_config_str(cfg, "name-prefix") ? cms_config_str(cfg, "name-prefix") : default_prefix;
    if (admin_file == NULL || keys_out == NULL || n < 1 || n > 1000000) {
        fprintf(stderr, PROG ": setup needs --admin-key-file, --keys-out and --identities "
                             "1..1000000\n");
        status = EXIT_USAGE;
        goto out;
    }
    if (!read_key_file(admin_file, key))
        goto out;
    snprintf(auth, sizeof auth, "Bearer %s", key);
    natsStatus st = natsConnection_ConnectTo(&nc, cms_config_str(cfg, "nats-url"));
    if (st != NATS_OK) {
        fprintf(stderr, PROG ": connecting to %s: %s\n", cms_config_str(cfg, "nats-url"),
                natsStatus_GetText(st));
        goto out;
    }
    int fd = open(keys_out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    keys = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (keys == NULL) {
        fprintf(stderr, PROG ": %s: %s\n", keys_out, strerror(errno));
        if (fd >= 0)
            close(fd);
        goto out;
    }
    for (int64_t i = 0; i < n; i++) {
        Cms__V1__CreateIdentity c = CMS__V1__CREATE_IDENTITY__INIT;
        snprintf(name, sizeof name, "%s-key-%" PRId64, name_prefix, i);
        c.name = name;
        c.type = (char *)"machine";
        c.metadata_json = (char *)"{}";
        if (call(nc, prefix, "create", auth, &c.base, &cms__v1__identity__descriptor, timeout_ms,
                 &res) != 0)
            goto out;
        Cms__V1__Identity *ident = (Cms__V1__Identity *)res;
        Cms__V1__IssueCredential ic = CMS__V1__ISSUE_CREDENTIAL__INIT;
        ic.identity_id = ident->id;
        ic.type = (char *)"api_key";
        ic.expires_at_us = unix_us() + 7LL * 86400 * 1000000;
        ProtobufCMessage *cres = NULL;
        int code = call(nc, prefix, "issue_credential", auth, &ic.base,
                        &cms__v1__credential__descriptor, timeout_ms, &cres);
        protobuf_c_message_free_unpacked(res, NULL);
        res = cres;
        if (code != 0)
            goto out;
        Cms__V1__Credential *cred = (Cms__V1__Credential *)res;
        if (strlen(cred->api_key) != CMS_APIKEY_LEN) {
            fprintf(stderr, PROG ": issue_credential returned no API key\n");
            goto out;
        }
        fprintf(keys, "%s\n", cred->api_key);
        if (i == 0)
            snprintf(first_key, sizeof first_key, "%s", cred->api_key);
        cms_apikey_wipe(cred->api_key, strlen(cred->api_key));
        protobuf_c_message_free_unpacked(res, NULL);
        res = NULL;
    }
    if (fclose(keys) != 0) {
        keys = NULL;
        fprintf(stderr, PROG ": writing %s failed\n", keys_out);
        goto out;
    }
    keys = NULL;
    Cms__V1__Authenticate a = CMS__V1__AUTHENTICATE__INIT;
    a.api_key = first_key;
    if (call(nc, prefix, "authenticate", NULL, &a.base, &cms__v1__principal__descriptor, timeout_ms,
             &res) != 0)
        goto out;
    printf("identities: %" PRId64 "\nfirst: %s\n", n, ((Cms__V1__Principal *)res)->name);
    status = EXIT_DONE;
out:
    if (res)
        protobuf_c_message_free_unpacked(res, NULL);
    if (keys)
        fclose(keys);
    natsConnection_Destroy(nc);
    (void)nats_CloseAndWait(5000);
    cms_apikey_wipe(key, sizeof key);
    cms_apikey_wipe(auth, sizeof auth);
    cms_apikey_wipe(first_key, sizeof first_key);
    return status;
}

/* --- main -------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    int status = EXIT_USAGE;
    cms_config *cfg = NULL;
    cms_log_init(PROG, CMS_LOG_WARN, stderr);
    switch (cms_config_parse(options, sizeof options / sizeof options[0], argc, argv, PROG,
                             "load generator of the cms-identity benchmark", usage_tail, &cfg)) {
    case CMS_CONFIG_OK:
        break;
    case CMS_CONFIG_EXIT_OK:
        return EXIT_DONE;
    case CMS_CONFIG_EXIT_USAGE:
        return EXIT_USAGE;
    }
    const char *verb = cms_config_positional(cfg, 0);
    if (verb == NULL || cms_config_npositional(cfg) != 1) {
        fprintf(stderr, PROG ": one verb is needed: run, respond or setup; try "
                             "--help\n");
        goto out;
    }
    if (strcmp(verb, "run") == 0) {
        status = cmd_run(cfg);
    } else if (strcmp(verb, "respond") == 0) {
        status = cmd_respond(cfg);
    } else if (strcmp(verb, "setup") == 0) {
        status = cmd_setup(cfg);
    } else {
        fprintf(stderr, PROG ": unknown verb \"%s\": want run, respond or setup\n", verb);
    }
out:
    cms_config_destroy(cfg);
    return status;
}
