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
#include "benchlib.h"
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
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#define PROG "cms-bench-identity"

enum {
    EXIT_DONE = BENCH_EXIT_DONE,
    EXIT_FAILED = BENCH_EXIT_FAILED,
    EXIT_USAGE = BENCH_EXIT_USAGE
};

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

/* --- request bodies ---------------------------------------------------------- */

/* One packed Authenticate per API key of path. */
static bool load_auth_bodies(const char *path, bench_body **out, size_t *n)
{
    bool ok = false;
    bench_body *v = NULL;
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
            bench_body *nv = realloc(v, cap * sizeof *v);
            if (nv == NULL)
                goto out;
            v = nv;
        }
        Cms__V1__Authenticate a = CMS__V1__AUTHENTICATE__INIT;
        a.api_key = line;
        if (!bench_pack_body(&a.base, &v[len]))
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

/* The load runs on benchlib's NATS client, one thread per connection
 * (benchlib.h says why not on nats.c). */

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

#define SWEEP_NS 10000000 /* timeouts are looked for every 10 ms */

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
    bench_nats *nats; /* its first error is the connection's */
    pthread_t thread;
    bool started;
    slot *ring;
    uint64_t mask;
    uint64_t next_seq;  /* the last request number handed out */
    uint64_t sweep_seq; /* every request up to it is settled */
    int64_t inflight;
    uint64_t due;  /* open loop: requests of this connection sent so far */
    int64_t quota; /* closed loop: requests kept outstanding */
    uint64_t sent, replies, ok_measured, timeouts;
    uint64_t out[OUT_KINDS];
    bench_hist *lat;      /* replies of measured requests */
    bench_hist *send_lag; /* open loop: how late the generator sent */
    bool failed;          /* the connection broke: the run is void */
} conn;

struct bench {
    bool create; /* else authenticate */
    const char *subject;
    char *hdr; /* "NATS/1.0\r\nAuthorization: Bearer <key>\r\n\r\n", or NULL */
    size_t hdr_len;
    bench_body *auth_bodies;
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
    char name[160];
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
        const bench_body *bd = &b->auth_bodies[seq % b->n_auth_bodies];
        data = bd->data;
        len = bd->len;
    }
    return bench_nats_publish(c->nats, b->subject, seq, b->hdr, b->hdr_len, data, len);
}

/* The reply to request seq of connection arg, read at t_now (a
 * bench_nats_msg_fn). */
static bool on_reply(void *arg, uint64_t seq, const char *hdr, size_t hdr_len, const char *data,
                     size_t len, int64_t t_now)
{
    conn *c = arg;
    bench *b = c->b;
    int64_t t_sent = 0;
    if (!settle(c, seq, &t_sent))
        return true; /* already counted as a timeout */
    c->replies++;
    int kind = 0;
    Cms__V1__Reply *r = NULL;
    if (hdr_len >= 12 && memcmp(hdr, "NATS/1.0 503", 12) == 0) {
        kind = OUT_NO_RESPONDERS;
        bench_nats_error(c->nats, "no responders on %s", b->subject);
    } else if ((r = cms__v1__reply__unpack(NULL, len, (const uint8_t *)data)) == NULL ||
               r->outcome_case == CMS__V1__REPLY__OUTCOME__NOT_SET ||
               (r->outcome_case == CMS__V1__REPLY__OUTCOME_ERROR && r->error == NULL)) {
        kind = OUT_BAD_REPLY;
        bench_nats_error(c->nats, "a reply that is not a cms.v1.Reply with an outcome (%zu bytes)",
                         len);
    } else if (r->outcome_case == CMS__V1__REPLY__OUTCOME_ERROR) {
        int code = (int)r->error->code;
        kind = code >= 1 && code <= 7 ? code : OUT_BAD_REPLY;
        bench_nats_error(c->nats, "%s: %s%s%s%s", cms_cmd_code_name(r->error->code),
                         r->error->message, r->error->field[0] ? " (field " : "", r->error->field,
                         r->error->field[0] ? ")" : "");
    }
    if (r)
        cms__v1__reply__free_unpacked(r, NULL);
    if (kind != 0) {
        c->out[kind]++;
    } else if (measured(b, t_sent)) {
        bench_hist_add(c->lat, t_now - t_sent);
        c->ok_measured++;
    }
    if (b->closed && t_now < b->t_end)
        return queue_request(c, t_now);
    return true;
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
            bench_nats_error(c->nats, "no reply in %" PRId64 " ms", b->timeout_ns / 1000000);
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
    bench_sleep_until_ns(b->t0);
    int64_t now = bench_mono_ns(), next_sweep = now + SWEEP_NS;
    if (b->closed)
        for (int64_t i = 0; i < c->quota; i++)
            if (!queue_request(c, now))
                goto fail;
    for (;;) {
        now = bench_mono_ns();
        bool sending = now < b->t_end;
        if (!b->closed && sending) {
            for (int64_t t = next_send_time(c); t <= now && t < b->t_end; t = next_send_time(c)) {
                if (measured(b, t))
                    bench_hist_add(c->send_lag, now - t);
                if (!queue_request(c, t))
                    goto fail;
                c->due++;
            }
        }
        if (!bench_nats_flush(c->nats))
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
        if (!bench_nats_poll(c->nats, wake - now))
            goto fail;
    }
    return NULL;
fail:
    c->failed = true;
    return NULL;
}

/* False with the first error in c->nats, or without c->nats: out of memory. */
static bool conn_open(bench *b, conn *c, int index, const char *url, uint64_t ring)
{
    c->b = b;
    c->index = index;
    c->mask = ring - 1;
    if (!bench_nats_create(&c->nats))
        return false;
    c->ring = calloc(ring, sizeof *c->ring);
    c->lat = calloc(1, sizeof *c->lat);
    c->send_lag = calloc(1, sizeof *c->send_lag);
    if (c->ring == NULL || c->lat == NULL || c->send_lag == NULL) {
        bench_nats_error(c->nats, "out of memory");
        return false;
    }
    return bench_nats_connect(c->nats, PROG, index, url, on_reply, c);
}

static void conn_free(conn *c)
{
    bench_nats_destroy(c->nats);
    c->nats = NULL;
    free(c->ring);
    free(c->lat);
    free(c->send_lag);
}

static int cmd_run(const cms_config *cfg)
{
    int status = EXIT_FAILED;
    bench b = {0};
    bench_hist *lat = NULL, *lag = NULL;
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
    snprintf(default_prefix, sizeof default_prefix, "bench-%d-%" PRId64, (int)getpid(),
             bench_unix_us());
    b.name_prefix =
        cms_config_str(cfg, "name-prefix") ? cms_config_str(cfg, "name-prefix") : default_prefix;
    if (b.create) {
        if (admin_file == NULL) {
            fprintf(stderr, PROG ": --op create needs --admin-key-file\n");
            status = EXIT_USAGE;
            goto out;
        }
        if (!bench_read_key_file(PROG, admin_file, key))
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
    uint64_t ring = bench_pow2_at_least(2 * per_conn * (uint64_t)(timeout_ms / 1000 + 1) + 4096);
    b.nconns = (int)nconns;
    b.conns = calloc((size_t)nconns, sizeof *b.conns);
    if (b.conns == NULL)
        goto out;
    for (int i = 0; i < b.nconns; i++) {
        conn *c = &b.conns[i];
        if (!conn_open(&b, c, i, url, ring)) {
            fprintf(stderr, PROG ": %s\n",
                    c->nats ? bench_nats_first_error(c->nats) : "out of memory");
            goto out;
        }
        c->quota = concurrency / nconns + (i < concurrency % nconns ? 1 : 0);
    }

    double cpu0 = bench_cpu_seconds();
    b.t0 = bench_mono_ns() + 20000000;
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
    double cpu = bench_cpu_seconds() - cpu0;

    lat = calloc(1, sizeof *lat);
    lag = calloc(1, sizeof *lag);
    if (lat == NULL || lag == NULL)
        goto out;
    uint64_t sent = 0, replies = 0, ok = 0, timeouts = 0, errors = 0, out_counts[OUT_KINDS] = {0};
    bool failed = false;
    const char *first_error = "";
    for (int i = 0; i < b.nconns; i++) {
        conn *c = &b.conns[i];
        bench_hist_merge(lat, c->lat);
        bench_hist_merge(lag, c->send_lag);
        sent += c->sent;
        replies += c->replies;
        ok += c->ok_measured;
        timeouts += c->timeouts;
        for (int k = 1; k < OUT_KINDS; k++)
            out_counts[k] += c->out[k];
        failed = failed || c->failed;
        if (first_error[0] == '\0')
            first_error = bench_nats_first_error(c->nats);
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
    printf("p50_us: %" PRIu64 "\n", bench_hist_quantile(lat, 0.50));
    printf("p90_us: %" PRIu64 "\n", bench_hist_quantile(lat, 0.90));
    printf("p99_us: %" PRIu64 "\n", bench_hist_quantile(lat, 0.99));
    printf("p999_us: %" PRIu64 "\n", bench_hist_quantile(lat, 0.999));
    printf("max_us: %" PRIu64 "\n", lat->max_us);
    printf("mean_us: %.0f\n", bench_hist_mean_us(lat));
    if (!b.closed)
        printf("send_lag_p99_us: %" PRIu64 "\n", bench_hist_quantile(lag, 0.99));
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
    bench_body identity;  /* Reply{result: Identity} */
    bench_body principal; /* Reply{result: Principal} */
    _Atomic uint64_t replied;
    _Atomic uint64_t failed;
} responder;

static void on_request(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
    (void)sub;
    responder *r = closure;
    const char *reply = natsMsg_GetReply(msg);
    const char *subj = natsMsg_GetSubject(msg);
    size_t n = strlen(subj);
    const bench_body *bd =
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
    char subject[256], id[CMS_UUID_STRLEN + 1], cid[CMS_UUID_STRLEN + 1];
    cms_uuid u;

    cms_uuid_v7(&u);
    cms_uuid_format(&u, id);
    cms_uuid_v7(&u);
    cms_uuid_format(&u, cid);
    int64_t now = bench_unix_us();
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
    if (!bench_pack_reply(&ident.base, &r.identity) || !bench_pack_reply(&p.base, &r.principal))
        goto out;

    snprintf(subject, sizeof subject, "%s.identity.*", cms_config_str(cfg, "prefix"));
    if (bench_serve(PROG, cms_config_str(cfg, "nats-url"), subject,
                    cms_config_bool(cfg, "buffered"), on_request, &r))
        status = EXIT_DONE;
out:
    if (status == EXIT_DONE)
        printf("replied: %" PRIu64 "\nfailed: %" PRIu64 "\n", atomic_load(&r.replied),
               atomic_load(&r.failed));
    free(r.identity.data);
    free(r.principal.data);
    return status;
}

/* --- setup ------------------------------------------------------------------- */

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
    snprintf(default_prefix, sizeof default_prefix, "bench-%d-%" PRId64, (int)getpid(),
             bench_unix_us());
    const char *name_prefix =
        cms_config_str(cfg, "name-prefix") ? cms_config_str(cfg, "name-prefix") : default_prefix;
    if (admin_file == NULL || keys_out == NULL || n < 1 || n > 1000000) {
        fprintf(stderr, PROG ": setup needs --admin-key-file, --keys-out and --identities "
                             "1..1000000\n");
        status = EXIT_USAGE;
        goto out;
    }
    if (!bench_read_key_file(PROG, admin_file, key))
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
        if (bench_call(PROG, nc, prefix, "create", auth, &c.base, &cms__v1__identity__descriptor,
                       timeout_ms, &res) != 0)
            goto out;
        Cms__V1__Identity *ident = (Cms__V1__Identity *)res;
        Cms__V1__IssueCredential ic = CMS__V1__ISSUE_CREDENTIAL__INIT;
        ic.identity_id = ident->id;
        ic.type = (char *)"api_key";
        ic.expires_at_us = bench_unix_us() + 7LL * 86400 * 1000000;
        ProtobufCMessage *cres = NULL;
        int code = bench_call(PROG, nc, prefix, "issue_credential", auth, &ic.base,
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
    if (bench_call(PROG, nc, prefix, "authenticate", NULL, &a.base, &cms__v1__principal__descriptor,
                   timeout_ms, &res) != 0)
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
    static const bench_verb verbs[] = {
        {"run", cmd_run}, {"respond", cmd_respond}, {"setup", cmd_setup}};
    return bench_main(argc, argv, PROG, "load generator of the cms-identity benchmark", options,
                      sizeof options / sizeof options[0], usage_tail, verbs,
                      sizeof verbs / sizeof verbs[0]);
}
