/* cms-bench-contracts: the load generator of tests/bench/contracts.
 *
 *   cms-bench-contracts setup --admin-key-file F --pairs N --parties-out F
 *   cms-bench-contracts run --parties-file F (--clients N | --rate N) ...
 *   cms-bench-contracts respond --prefix P
 *
 * setup: creates 2N identities through cms-identity (the admin's key), and
 * issues each an API key and a public_key credential (an Ed25519 key pair
 * made here, its public half in standard base64). Writes one party a line
 * to --parties-out (mode 0600): "<identity id> <key id> <secret key hex>
 * <api key>"; lines 2i and 2i + 1 are pair i's provider and consumer.
 *
 * run: contract lifecycles on <prefix>.contracts.<verb>, each five commands
 * in turn, each sent when the one before it is answered:
 *     create (by the provider) -> submit -> sign (the provider) ->
 *     sign (the consumer) -> activate (the provider),
 * every request with its party's "Authorization: Bearer <api key>". A
 * signature is Ed25519 (crypto_sign_detached) over the 32 bytes whose hex
 * is the content_hash create returned, base64url without padding, with the
 * party's public_key credential as key_id. The terms run from yesterday to
 * next year, so activate is allowed at once; cms-contracts' timer may
 * activate a signed contract before the client asks, and an activate
 * answered FAILED_PRECONDITION after both signatures were accepted is then a
 * completed lifecycle, counted apart ("auto_activated").
 *
 * Closed loop (--rate 0): --clients lifecycles under way at once, each
 * client starting its next when its last ends. Open loop (--rate N):
 * lifecycle g is due at g / N and starts at the first --tick-us tick at or
 * after that; its create's latency counts from that tick, so a stall shows
 * (no coordinated omission). The load is spread over --connections NATS
 * connections, one thread each, speaking the text protocol itself as
 * cms-bench-identity does (identity_load.c says why). Replies come on one
 * wildcard inbox per connection, the request's number in the last token.
 *
 * The measured window is --seconds after --warmup, or, with --lifecycles N,
 * until N lifecycles have started in it. A command counts in its verb's
 * latency if it was sent in the window, a lifecycle in the throughput if it
 * started in it and completed. Prints "key: value" lines. Any error reply,
 * unexpected status or request unanswered within --timeout is an error and
 * ends its lifecycle (a closed-loop client starts another); the exit status
 * is 1 if there was any.
 *
 * respond: the baseline, a trivial nats.c responder on <prefix>.contracts.*
 * that answers each request, without reading it, with a fixed cms.v1.Reply
 * holding a Contract of the size and status the real verb returns.
 *
 * A bench tool, not a service: it blocks, sleeps and uses threads freely. */
#include "apikey.h"
#include "benchlib.h"
#include "cmd.h"
#include "config.h"
#include "log.h"
#include "uuid.h"

#include "cms/v1/command.pb-c.h"
#include "cms/v1/contracts.pb-c.h"
#include "cms/v1/identity.pb-c.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <nats/nats.h>
#include <pthread.h>
#include <sodium.h>
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

#define PROG "cms-bench-contracts"

enum {
    EXIT_DONE = BENCH_EXIT_DONE,
    EXIT_FAILED = BENCH_EXIT_FAILED,
    EXIT_USAGE = BENCH_EXIT_USAGE
};

static const cms_option options[] = {
    {"nats-url", NULL, CMS_OPT_STRING, "nats://127.0.0.1:4222", "NATS server URL", false, false},
    {"prefix", NULL, CMS_OPT_STRING, "cms.cmd",
     "command subject root: requests go to <prefix>.contracts.<verb> (setup: "
     "<prefix>.identity.<verb>)",
     false, false},
    {"clients", NULL, CMS_OPT_INT, "64", "run, closed loop: lifecycles under way at once", false,
     false},
    {"rate", NULL, CMS_OPT_INT, "0",
     "run: open loop at this many lifecycles per second (0: closed loop)", false, false},
    {"connections", NULL, CMS_OPT_INT, "4", "run: NATS connections the load is spread over", false,
     false},
    {"tick-us", NULL, CMS_OPT_INT, "200",
     "run, open loop: a lifecycle starts at the first tick (a multiple of this) at or after its "
     "due time, and its create's latency counts from that tick",
     false, false},
    {"seconds", NULL, CMS_OPT_INT, "10", "run: length of the measured window", false, false},
    {"lifecycles", NULL, CMS_OPT_INT, "0",
     "run: end the measured window once this many lifecycles started in it (0: --seconds)", false,
     false},
    {"warmup", NULL, CMS_OPT_DURATION, "1s",
     "run: load before the measured window, not counted in the figures", false, false},
    {"timeout", NULL, CMS_OPT_DURATION, "5s",
     "run, setup: a request unanswered this long is an error", false, false},
    {"progress", NULL, CMS_OPT_BOOL, "false",
     "run: a line on stderr every second with the lifecycles completed and errors so far", false,
     false},
    {"parties-file", NULL, CMS_OPT_STRING, NULL, "run: the parties setup wrote", false, false},
    {"admin-key-file", NULL, CMS_OPT_STRING, NULL, "setup: file holding the admin API key", false,
     false},
    {"pairs", NULL, CMS_OPT_INT, "32", "setup: provider-consumer pairs to create", false, false},
    {"parties-out", NULL, CMS_OPT_STRING, NULL, "setup: where to write the parties", false, false},
    {"name-prefix", NULL, CMS_OPT_STRING, NULL,
     "setup: identity names, run: contract titles start with this (default bench-<pid>-<time>)",
     false, false},
    {"buffered", NULL, CMS_OPT_BOOL, "false",
     "respond: leave replies in nats.c's buffer for its flusher thread (up to 1 ms later) "
     "instead of writing each at once",
     false, false},
};

static const char usage_tail[] =
    "VERB\n"
    "\n"
    "verbs:\n"
    "  setup      create --pairs provider-consumer pairs through cms-identity, each party with\n"
    "             an API key and a public_key credential, into --parties-out\n"
    "  run        contract lifecycles (create, submit, sign, sign, activate) on\n"
    "             <prefix>.contracts.*: closed loop with --clients, open loop with --rate;\n"
    "             prints lifecycles/s and the latency percentiles of each verb\n"
    "  respond    a trivial responder on <prefix>.contracts.* (the baseline); prints \"ready\"\n"
    "             once subscribed, runs until SIGTERM or SIGINT\n"
    "\n"
    "Exit status: 0 done (run: no errors), 1 failed or errors, 2 usage error.";

/* --- files ----------------------------------------------------------------- */

/* The parties of path, pairs of them (provider, consumer), each with a key
 * pair. */
static bool load_parties(const char *path, bench_party **out, size_t *n)
{
    if (!bench_parties_load(PROG, path, out, n))
        return false;
    bool ok = *n >= 2 && *n % 2 == 0;
    for (size_t i = 0; ok && i < *n; i++)
        ok = (*out)[i].key_id[0] != '\0';
    if (!ok) {
        fprintf(stderr, PROG ": %s holds %zu parties: want pairs, at least one, each with a key\n",
                path, *n);
        bench_parties_free(*out, *n);
        *out = NULL;
        *n = 0;
    }
    return ok;
}

/* --- run --------------------------------------------------------------------- */

/* The commands, each with its own latency figures; the two signatures are
 * one command. */
typedef enum { CMD_CREATE, CMD_SUBMIT, CMD_SIGN, CMD_ACTIVATE, CMD_N } cmd_kind;
static const char *const cmd_names[CMD_N] = {"create", "submit", "sign", "activate"};

/* Where a lifecycle is: idle (its slot free), or waiting for the reply to
 * the command of its state. lc_set_state() is the one place it changes. */
typedef enum {
    LC_IDLE,
    LC_CREATING,
    LC_SUBMITTING,
    LC_SIGNING_PROVIDER,
    LC_SIGNING_CONSUMER,
    LC_ACTIVATING,
    LC_NSTATES
} lc_state;
static const char *const lc_state_names[LC_NSTATES] = {
    "idle", "creating", "submitting", "signing (provider)", "signing (consumer)", "activating"};
static const cmd_kind lc_cmd[LC_NSTATES] = {CMD_CREATE, CMD_CREATE, CMD_SUBMIT,
                                            CMD_SIGN,   CMD_SIGN,   CMD_ACTIVATE};
static const char *const lc_verb[LC_NSTATES] = {"", "create", "submit", "sign", "sign", "activate"};

/* Outcomes of a request. Codes 1..31 are the cms.v1.ErrorCode values of
 * error replies. */
enum {
    OUT_NO_RESPONDERS = 32, /* the server's 503: nobody subscribed */
    OUT_BAD_REPLY,          /* not a cms.v1.Reply with an outcome, or not a Contract */
    OUT_BAD_STATUS,         /* a Contract in another status than the command makes */
    OUT_TIMEOUT,            /* no reply within --timeout */
    OUT_OVERLOAD,           /* open loop: no free lifecycle slot when one was due */
    OUT_KINDS
};

static const char *outcome_name(int k)
{
    switch (k) {
    case OUT_NO_RESPONDERS:
        return "NO_RESPONDERS";
    case OUT_BAD_REPLY:
        return "BAD_REPLY";
    case OUT_BAD_STATUS:
        return "BAD_STATUS";
    case OUT_TIMEOUT:
        return "TIMEOUT";
    case OUT_OVERLOAD:
        return "OVERLOAD";
    default:
        return cms_cmd_code_name((cms_cmd_code)k);
    }
}

#define SWEEP_NS 10000000 /* timeouts are looked for every 10 ms */
#define BODY_MAX 4096     /* a request body; ours are a few hundred bytes */

/* One contract's way from create to active. While not idle exactly one of
 * its requests is in flight: seq, sent at t_sent (open loop, create: the
 * scheduled tick). */
typedef struct lifecycle {
    lc_state state;
    int client;    /* closed loop: the client that starts the next; -1 open loop */
    uint32_t pair; /* provider 2 pair, consumer 2 pair + 1 */
    uint32_t next_free;
    uint64_t seq;
    int64_t t_start, t_sent;
    bool measured;     /* started in the measured window */
    bool fully_signed; /* the consumer's signature was accepted */
    char id[CMS_UUID_STRLEN + 1];
    char hash[65];
} lifecycle;

#define LC_NONE UINT32_MAX

/* A request in flight: seq its number (0: slot free), lc its lifecycle.
 * Request seq lives in ring[seq & mask]. */
typedef struct slot {
    uint64_t seq;
    uint32_t lc;
    int64_t t_ns;
} slot;

typedef struct bench bench;

/* Everything of one connection belongs to its thread until it is joined,
 * but for the counters progress reads (atomics). */
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
    lifecycle *lcs;
    uint32_t nlcs, free_lc; /* free_lc: head of the free list */
    int64_t active;         /* lifecycles not idle */
    int nclients, client0;  /* closed loop: clients client0.. of this connection */
    uint64_t due;           /* open loop: lifecycles of this connection due so far */
    uint64_t sent, replies;
    uint64_t cmd_ok[CMD_N], cmd_err[CMD_N]; /* measured */
    uint64_t out[OUT_KINDS];
    uint64_t life_ok, life_auto, life_failed; /* measured */
    _Atomic uint64_t done_all, errors_all;    /* for progress, warm-up included */
    bench_hist *lat[CMD_N];                   /* measured commands' */
    bench_hist *life;                         /* measured lifecycles', start to active */
    bench_hist *send_lag;                     /* open loop: how late the generator started */
    bool failed;                              /* the connection broke: the run is void */
} conn;

struct bench {
    char subject[256];                  /* "<prefix>.contracts." */
    char verb_subject[LC_NSTATES][272]; /* and the verb of the state's request */
    const bench_party *parties;
    uint32_t npairs;
    const char *terms;
    const char *title_prefix;
    bool closed;
    int64_t rate;    /* open loop: lifecycles per second */
    int64_t tick_ns; /* open loop: lifecycles start on ticks */
    int64_t timeout_ns;
    int64_t t0, t_measure;
    _Atomic int64_t t_end;     /* the measured window's end; --lifecycles moves it earlier */
    uint64_t target;           /* --lifecycles, 0: none */
    _Atomic uint64_t starting; /* lifecycles started in the window so far */
    _Atomic int running;       /* workers not yet finished */
    conn *conns;
    int nconns;
};

static int64_t t_end(const bench *b)
{
    return atomic_load_explicit(&b->t_end, memory_order_relaxed);
}

static bool measured(const bench *b, int64_t t_ns)
{
    return t_ns >= b->t_measure && t_ns < t_end(b);
}

/* The one place a lifecycle changes state: forward one command at a time,
 * or back to idle from anywhere (done or failed). */
static void lc_set_state(conn *c, lifecycle *lc, lc_state to)
{
    lc_state from = lc->state;
    bool ok = to == LC_IDLE ? from != LC_IDLE : (int)to == (int)from + 1;
    if (!ok) {
        /* a bug of this file: say so loudly, the figures are void */
        fprintf(stderr, PROG ": lifecycle %s -> %s\n", lc_state_names[from], lc_state_names[to]);
        abort();
    }
    lc->state = to;
    if (from == LC_IDLE)
        c->active++;
    if (to == LC_IDLE) {
        c->active--;
        lc->next_free = c->free_lc;
        c->free_lc = (uint32_t)(lc - c->lcs);
    }
}

static uint8_t *pack_request(const lifecycle *lc, const bench *b, const conn *c, uint8_t *pb,
                             size_t *len)
{
    const bench_party *prov = &b->parties[2 * lc->pair], *cons = &b->parties[2 * lc->pair + 1];
    switch (lc->state) {
    case LC_CREATING: {
        char title[200];
        snprintf(title, sizeof title, "%s %d-%" PRIu64, b->title_prefix, c->index, c->next_seq);
        Cms__V1__CreateContract m = CMS__V1__CREATE_CONTRACT__INIT;
        m.title = title;
        m.description = (char *)"A contract of the benchmark: data for model training.";
        m.provider_id = (char *)prov->id;
        m.consumer_id = (char *)cons->id;
        m.terms_json = (char *)b->terms;
        m.metadata_json = (char *)"";
        *len = cms__v1__create_contract__get_packed_size(&m);
        if (*len > BODY_MAX)
            return NULL;
        cms__v1__create_contract__pack(&m, pb);
        return pb;
    }
    case LC_SUBMITTING:
    case LC_ACTIVATING: {
        Cms__V1__ContractRef m = CMS__V1__CONTRACT_REF__INIT;
        m.id = (char *)lc->id;
        *len = cms__v1__contract_ref__get_packed_size(&m);
        cms__v1__contract_ref__pack(&m, pb);
        return pb;
    }
    case LC_SIGNING_PROVIDER:
    case LC_SIGNING_CONSUMER: {
        const bench_party *p = lc->state == LC_SIGNING_PROVIDER ? prov : cons;
        char sig64[BENCH_SIG_MAX];
        if (!bench_sign_hash(p, lc->hash, sig64))
            return NULL;
        Cms__V1__SignContract m = CMS__V1__SIGN_CONTRACT__INIT;
        m.id = (char *)lc->id;
        m.signature = sig64;
        m.key_id = (char *)p->key_id;
        *len = cms__v1__sign_contract__get_packed_size(&m);
        cms__v1__sign_contract__pack(&m, pb);
        return pb;
    }
    case LC_IDLE:
    case LC_NSTATES:
        break;
    }
    return NULL;
}

/* Settles request seq if it is still in flight; its lifecycle into *lc. */
static bool settle(conn *c, uint64_t seq, uint32_t *lc)
{
    slot *s = &c->ring[seq & c->mask];
    if (seq == 0 || s->seq != seq)
        return false;
    s->seq = 0;
    if (lc)
        *lc = s->lc;
    return true;
}

static int lc_fail(conn *c, lifecycle *lc, int kind);

/* Appends the request of lc's state, stamped t_ns, to the write buffer. */
static bool queue_request(conn *c, lifecycle *lc, int64_t t_ns)
{
    bench *b = c->b;
    uint64_t seq = ++c->next_seq;
    slot *s = &c->ring[seq & c->mask];
    /* a request a whole ring older still unanswered: long past its timeout */
    uint32_t old;
    if (s->seq != 0 && settle(c, s->seq, &old))
        (void)lc_fail(c, &c->lcs[old], OUT_TIMEOUT); /* and its client stops */
    s->seq = seq;
    s->lc = (uint32_t)(lc - c->lcs);
    s->t_ns = t_ns;
    lc->seq = seq;
    lc->t_sent = t_ns;
    c->sent++;

    const bench_party *who = &b->parties[2 * lc->pair + (lc->state == LC_SIGNING_CONSUMER ? 1 : 0)];
    uint8_t pb[BODY_MAX];
    size_t len = 0;
    if (pack_request(lc, b, c, pb, &len) == NULL) {
        bench_nats_error(c->nats, "cannot make the %s request", lc_verb[lc->state]);
        return false;
    }
    return bench_nats_publish(c->nats, b->verb_subject[lc->state], seq, who->hdr, who->hdr_len, pb,
                              len);
}

/* Whether a lifecycle may start at t; one that starts in the measured
 * window is counted against --lifecycles, and the last one allowed ends
 * the window. */
static bool may_start(bench *b, int64_t t, bool *in_window)
{
    int64_t end = t_end(b);
    *in_window = t >= b->t_measure && t < end;
    if (t >= end)
        return false;
    if (!*in_window || b->target == 0)
        return true;
    uint64_t n = atomic_fetch_add(&b->starting, 1) + 1;
    if (n > b->target)
        return false;
    if (n == b->target) {
        int64_t want = t + 1, cur = t_end(b);
        while (want < cur && !atomic_compare_exchange_weak(&b->t_end, &cur, want))
            ;
    }
    return true;
}

/* Starts a lifecycle at t for client (closed loop) or due lifecycle g (open
 * loop, client -1). False only when the connection must stop. */
static bool lc_start(conn *c, int client, uint64_t g, int64_t t)
{
    bench *b = c->b;
    bool in_window;
    if (!may_start(b, t, &in_window))
        return true;
    if (c->free_lc == LC_NONE) {
        c->out[OUT_OVERLOAD]++;
        atomic_fetch_add_explicit(&c->errors_all, 1, memory_order_relaxed);
        if (in_window)
            c->life_failed++;
        bench_nats_error(c->nats, "more than %u lifecycles under way on a connection", c->nlcs);
        return true;
    }
    lifecycle *lc = &c->lcs[c->free_lc];
    c->free_lc = lc->next_free;
    lc->client = client;
    lc->pair = (uint32_t)((client >= 0 ? (uint64_t)client : g) % b->npairs);
    lc->t_start = t;
    lc->measured = in_window;
    lc->fully_signed = false;
    lc->id[0] = lc->hash[0] = '\0';
    lc_set_state(c, lc, LC_CREATING);
    return queue_request(c, lc, t);
}

/* In the closed loop, client starts its next lifecycle at t (-1: none). */
static bool lc_next(conn *c, int client, int64_t t)
{
    return client < 0 || lc_start(c, client, 0, t);
}

/* lc failed with outcome kind: counted and freed; returns its client. */
static int lc_fail(conn *c, lifecycle *lc, int kind)
{
    bench *b = c->b;
    int client = lc->client;
    c->out[kind]++;
    atomic_fetch_add_explicit(&c->errors_all, 1, memory_order_relaxed);
    if (measured(b, lc->t_sent))
        c->cmd_err[lc_cmd[lc->state]]++;
    if (lc->measured)
        c->life_failed++;
    lc_set_state(c, lc, LC_IDLE);
    return client;
}

/* The status a command leaves the contract in; the first signature leaves
 * it in review (the baseline answers signed to both). */
static bool status_ok(lc_state st, const char *status)
{
    switch (st) {
    case LC_CREATING:
        return strcmp(status, "draft") == 0;
    case LC_SUBMITTING:
        return strcmp(status, "review") == 0;
    case LC_SIGNING_PROVIDER:
        return strcmp(status, "review") == 0 || strcmp(status, "signed") == 0;
    case LC_SIGNING_CONSUMER:
        return strcmp(status, "signed") == 0;
    case LC_ACTIVATING:
        return strcmp(status, "active") == 0;
    case LC_IDLE:
    case LC_NSTATES:
        break;
    }
    return false;
}

static bool is_hex64(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++)
        if (!((s[n] >= '0' && s[n] <= '9') || (s[n] >= 'a' && s[n] <= 'f')))
            return false;
    return n == 64;
}

/* The reply to request seq of connection arg, read at t_now (a
 * bench_nats_msg_fn). */
static bool on_reply(void *arg, uint64_t seq, const char *hdr, size_t hdr_len, const char *data,
                     size_t len, int64_t t_now)
{
    conn *c = arg;
    bench *b = c->b;
    uint32_t li = 0;
    if (!settle(c, seq, &li))
        return true; /* already counted as a timeout */
    c->replies++;
    lifecycle *lc = &c->lcs[li];
    lc_state st = lc->state;
    cmd_kind cmd = lc_cmd[st];
    int kind = 0;
    bool auto_activated = false;
    Cms__V1__Reply *r = NULL;
    Cms__V1__Contract *k = NULL;
    if (hdr_len >= 12 && memcmp(hdr, "NATS/1.0 503", 12) == 0) {
        kind = OUT_NO_RESPONDERS;
        bench_nats_error(c->nats, "no responders on %s", b->verb_subject[st]);
    } else if ((r = cms__v1__reply__unpack(NULL, len, (const uint8_t *)data)) == NULL ||
               r->outcome_case == CMS__V1__REPLY__OUTCOME__NOT_SET ||
               (r->outcome_case == CMS__V1__REPLY__OUTCOME_ERROR && r->error == NULL)) {
        kind = OUT_BAD_REPLY;
        bench_nats_error(c->nats,
                         "%s: a reply that is not a cms.v1.Reply with an outcome (%zu bytes)",
                         lc_verb[st], len);
    } else if (r->outcome_case == CMS__V1__REPLY__OUTCOME_ERROR) {
        int code = (int)r->error->code;
        if (st == LC_ACTIVATING && lc->fully_signed &&
            r->error->code == CMS__V1__ERROR_CODE__FAILED_PRECONDITION) {
            auto_activated = true; /* the timer was first */
        } else {
            kind = code >= 1 && code < OUT_NO_RESPONDERS ? code : OUT_BAD_REPLY;
            bench_nats_error(c->nats, "%s: %s: %s%s%s%s", lc_verb[st],
                             cms_cmd_code_name(r->error->code), r->error->message,
                             r->error->field[0] ? " (field " : "", r->error->field,
                             r->error->field[0] ? ")" : "");
        }
    } else if ((k = cms__v1__contract__unpack(NULL, r->result.len, r->result.data)) == NULL) {
        kind = OUT_BAD_REPLY;
        bench_nats_error(c->nats, "%s: the result is not a cms.v1.Contract", lc_verb[st]);
    } else if (!status_ok(st, k->status)) {
        kind = OUT_BAD_STATUS;
        bench_nats_error(c->nats, "%s: the contract is %s after it", lc_verb[st], k->status);
    } else if (st == LC_CREATING &&
               (strlen(k->id) != CMS_UUID_STRLEN || !is_hex64(k->content_hash))) {
        kind = OUT_BAD_REPLY;
        bench_nats_error(c->nats, "create: the contract has no id or no content_hash");
    } else if (st == LC_CREATING) {
        memcpy(lc->id, k->id, sizeof lc->id);
        memcpy(lc->hash, k->content_hash, sizeof lc->hash);
    }
    if (k)
        cms__v1__contract__free_unpacked(k, NULL);
    if (r)
        cms__v1__reply__free_unpacked(r, NULL);
    if (kind != 0)
        return lc_next(c, lc_fail(c, lc, kind), t_now);
    if (measured(b, lc->t_sent)) {
        bench_hist_add(c->lat[cmd], t_now - lc->t_sent);
        c->cmd_ok[cmd]++;
    }
    if (st != LC_ACTIVATING) {
        if (st == LC_SIGNING_CONSUMER)
            lc->fully_signed = true;
        lc_set_state(c, lc, (lc_state)(st + 1));
        return queue_request(c, lc, t_now);
    }
    if (lc->measured) {
        bench_hist_add(c->life, t_now - lc->t_start);
        if (auto_activated)
            c->life_auto++;
        else
            c->life_ok++;
    }
    atomic_fetch_add_explicit(&c->done_all, 1, memory_order_relaxed);
    int client = lc->client;
    lc_set_state(c, lc, LC_IDLE);
    return lc_next(c, client, t_now);
}

/* Times out what has waited longer than the timeout (everything, if force),
 * oldest first; in the closed loop its client starts another lifecycle. */
static bool sweep(conn *c, int64_t now, bool force)
{
    bench *b = c->b;
    while (c->sweep_seq < c->next_seq) {
        uint64_t s = c->sweep_seq + 1;
        slot *sl = &c->ring[s & c->mask];
        if (sl->seq == s) {
            if (!force && now - sl->t_ns < b->timeout_ns)
                break;
            uint32_t li = 0;
            settle(c, s, &li);
            lifecycle *lc = &c->lcs[li];
            bench_nats_error(c->nats, "%s: no reply in %" PRId64 " ms", lc_verb[lc->state],
                             b->timeout_ns / 1000000);
            int client = lc_fail(c, lc, OUT_TIMEOUT);
            if (!force && !lc_next(c, client, now))
                return false;
        }
        c->sweep_seq = s;
    }
    return true;
}

/* The open loop's schedule: lifecycle g (over all connections) is due at
 * g / rate and starts at the first tick at or after that; connection i
 * starts lifecycles i, i + nconns, i + 2 nconns... */
static int64_t next_start_time(const conn *c)
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
        for (int i = 0; i < c->nclients; i++)
            if (!lc_start(c, c->client0 + i, 0, now))
                goto fail;
    for (;;) {
        now = bench_mono_ns();
        int64_t end = t_end(b);
        bool sending = now < end;
        if (!b->closed && sending) {
            for (int64_t t = next_start_time(c); t <= now && t < end; t = next_start_time(c)) {
                if (measured(b, t))
                    bench_hist_add(c->send_lag, now - t);
                uint64_t g = c->due * (uint64_t)b->nconns + (uint64_t)c->index;
                c->due++;
                if (!lc_start(c, -1, g, t))
                    goto fail;
            }
        }
        if (!bench_nats_flush(c->nats))
            goto fail;
        if (now >= next_sweep) {
            if (!sweep(c, now, false))
                goto fail;
            next_sweep = now + SWEEP_NS;
        }
        if (!sending && c->active == 0)
            break;
        /* a lifecycle is at most five timeouts long */
        if (!sending && now >= end + 5 * b->timeout_ns) {
            (void)sweep(c, now, true);
            break;
        }
        int64_t wake = next_sweep;
        if (sending && !b->closed && next_start_time(c) < wake)
            wake = next_start_time(c);
        if (sending && end < wake)
            wake = end;
        if (!bench_nats_poll(c->nats, wake - now))
            goto fail;
    }
    atomic_fetch_sub(&b->running, 1);
    return NULL;
fail:
    c->failed = true;
    atomic_fetch_sub(&b->running, 1);
    return NULL;
}

/* False with the first error in c->nats, or without c->nats: out of memory. */
static bool conn_open(bench *b, conn *c, int index, const char *url, uint64_t ring, uint32_t nlcs)
{
    c->b = b;
    c->index = index;
    c->mask = ring - 1;
    if (!bench_nats_create(&c->nats))
        return false;
    c->ring = calloc(ring, sizeof *c->ring);
    c->nlcs = nlcs;
    c->lcs = calloc(nlcs, sizeof *c->lcs);
    c->life = calloc(1, sizeof *c->life);
    c->send_lag = calloc(1, sizeof *c->send_lag);
    bool mem = c->ring && c->lcs && c->life && c->send_lag;
    for (int k = 0; k < CMD_N; k++)
        mem = mem && (c->lat[k] = calloc(1, sizeof *c->lat[k])) != NULL;
    if (!mem) {
        bench_nats_error(c->nats, "out of memory");
        return false;
    }
    c->free_lc = LC_NONE;
    for (uint32_t i = nlcs; i-- > 0;) {
        c->lcs[i].next_free = c->free_lc;
        c->free_lc = i;
    }
    return bench_nats_connect(c->nats, PROG, index, url, on_reply, c);
}

static void conn_free(conn *c)
{
    bench_nats_destroy(c->nats);
    c->nats = NULL;
    free(c->ring);
    free(c->lcs);
    free(c->life);
    free(c->send_lag);
    for (int k = 0; k < CMD_N; k++)
        free(c->lat[k]);
}

/* Once a second until the workers are done: lifecycles completed in that
 * second and errors so far, on one line of stderr. */
static void progress(bench *b)
{
    uint64_t last = 0;
    int64_t t = b->t0;
    while (atomic_load(&b->running) > 0) {
        int64_t next = t + 1000000000;
        while (atomic_load(&b->running) > 0 && bench_mono_ns() < next)
            bench_sleep_until_ns(bench_mono_ns() + 50000000 < next ? bench_mono_ns() + 50000000
                                                                   : next);
        uint64_t done = 0, errors = 0;
        for (int i = 0; i < b->nconns; i++) {
            done += atomic_load_explicit(&b->conns[i].done_all, memory_order_relaxed);
            errors += atomic_load_explicit(&b->conns[i].errors_all, memory_order_relaxed);
        }
        int64_t now = bench_mono_ns();
        const char *phase = now < b->t_measure ? "warm-up"
                            : now < t_end(b)   ? "measuring"
                                               : "draining";
        fprintf(stderr,
                "\r  %5.1f s  %-9s  %6" PRIu64 " lifecycles/s  %8" PRIu64 " done  %6" PRIu64
                " errors ",
                (double)(now - b->t0) / 1e9, phase, done - last, done, errors);
        fflush(stderr);
        last = done;
        t = next;
    }
    fprintf(stderr, "\r%*s\r", 78, "");
    fflush(stderr);
}

static void print_hist(const char *name, const bench_hist *h)
{
    printf("%s_n: %" PRIu64 "\n", name, h->n);
    printf("%s_p50_us: %" PRIu64 "\n", name, bench_hist_quantile(h, 0.50));
    printf("%s_p90_us: %" PRIu64 "\n", name, bench_hist_quantile(h, 0.90));
    printf("%s_p99_us: %" PRIu64 "\n", name, bench_hist_quantile(h, 0.99));
    printf("%s_p999_us: %" PRIu64 "\n", name, bench_hist_quantile(h, 0.999));
    printf("%s_max_us: %" PRIu64 "\n", name, h->max_us);
    printf("%s_mean_us: %.0f\n", name, bench_hist_mean_us(h));
}

static int cmd_run(const cms_config *cfg)
{
    int status = EXIT_FAILED;
    bench b = {0};
    bench_hist *lat[CMD_N] = {0}, *all = NULL, *life = NULL, *lag = NULL;
    bench_party *parties = NULL;
    size_t nparties = 0;
    char terms[512], default_prefix[64];
    const char *url = cms_config_str(cfg, "nats-url");
    int64_t clients = cms_config_int(cfg, "clients");
    int64_t rate = cms_config_int(cfg, "rate");
    int64_t nconns = cms_config_int(cfg, "connections");
    int64_t seconds = cms_config_int(cfg, "seconds");
    int64_t target = cms_config_int(cfg, "lifecycles");
    int64_t tick_us = cms_config_int(cfg, "tick-us");
    int64_t warmup_ms = cms_config_duration_ms(cfg, "warmup");
    int64_t timeout_ms = cms_config_duration_ms(cfg, "timeout");
    const char *parties_file = cms_config_str(cfg, "parties-file");

    if (rate < 0 || rate > 1000000 || clients < 1 || clients > 100000 || nconns < 1 ||
        nconns > 64 || seconds < 1 || seconds > 86400 || target < 0 || target > 100000000 ||
        warmup_ms < 0 || timeout_ms < 1 || tick_us < 1 || tick_us > 1000000) {
        fprintf(stderr, PROG ": --rate 0..1000000, --clients 1..100000, --connections 1..64, "
                             "--seconds 1..86400, --lifecycles 0..100000000, --warmup >= 0, "
                             "--timeout >= 1ms, --tick-us 1..1000000\n");
        status = EXIT_USAGE;
        goto out;
    }
    if (parties_file == NULL) {
        fprintf(stderr, PROG ": run needs --parties-file\n");
        status = EXIT_USAGE;
        goto out;
    }
    if (!load_parties(parties_file, &parties, &nparties))
        goto out;
    b.closed = rate == 0;
    if (b.closed && clients < nconns)
        nconns = clients;
    int n = snprintf(b.subject, sizeof b.subject, "%s.contracts.", cms_config_str(cfg, "prefix"));
    if (n < 0 || (size_t)n >= sizeof b.subject - 16) {
        fprintf(stderr, PROG ": --prefix is too long\n");
        status = EXIT_USAGE;
        goto out;
    }
    for (int i = 0; i < LC_NSTATES; i++)
        snprintf(b.verb_subject[i], sizeof b.verb_subject[i], "%s%s", b.subject, lc_verb[i]);
    b.parties = parties;
    b.npairs = (uint32_t)(nparties / 2);
    bench_contract_terms(terms, sizeof terms, NULL);
    b.terms = terms;
    snprintf(default_prefix, sizeof default_prefix, "bench-%d-%" PRId64, (int)getpid(),
             bench_unix_us());
    b.title_prefix =
        cms_config_str(cfg, "name-prefix") ? cms_config_str(cfg, "name-prefix") : default_prefix;
    b.rate = rate;
    b.tick_ns = tick_us * 1000;
    b.timeout_ns = timeout_ms * 1000000;
    b.target = b.closed ? (uint64_t)target : 0;

    /* the ring holds twice the requests that can be sent before the
     * sweeper times one out; lifecycles: the clients, or in the open loop
     * the share of the rate over five timeouts (the longest a lifecycle
     * lasts) */
    uint64_t per_conn_rate = b.closed ? 250000 : (uint64_t)(5 * rate / nconns + 1);
    uint64_t ring =
        bench_pow2_at_least(2 * per_conn_rate * (uint64_t)(timeout_ms / 1000 + 1) + 4096);
    uint64_t nlcs =
        b.closed ? (uint64_t)(clients / nconns + 1)
                 : (uint64_t)(rate / nconns + 1) * (uint64_t)(5 * (timeout_ms / 1000 + 1)) + 64;
    if (nlcs > (1u << 22))
        nlcs = 1u << 22;
    b.nconns = (int)nconns;
    b.conns = calloc((size_t)nconns, sizeof *b.conns);
    if (b.conns == NULL)
        goto out;
    int client0 = 0;
    for (int i = 0; i < b.nconns; i++) {
        conn *c = &b.conns[i];
        if (!conn_open(&b, c, i, url, ring, (uint32_t)nlcs)) {
            fprintf(stderr, PROG ": %s\n",
                    c->nats ? bench_nats_first_error(c->nats) : "out of memory");
            goto out;
        }
        c->nclients = (int)(clients / nconns + (i < clients % nconns ? 1 : 0));
        c->client0 = client0;
        client0 += c->nclients;
    }

    double cpu0 = bench_cpu_seconds();
    b.t0 = bench_mono_ns() + 20000000;
    b.t_measure = b.t0 + warmup_ms * 1000000;
    int64_t window = target > 0 && !b.closed ? target * 1000000000 / rate
                     : target > 0            ? 86400 * INT64_C(1000000000)
                                             : seconds * 1000000000;
    atomic_store(&b.t_end, b.t_measure + window);
    atomic_store(&b.running, b.nconns);
    for (int i = 0; i < b.nconns; i++) {
        if (pthread_create(&b.conns[i].thread, NULL, worker, &b.conns[i]) != 0) {
            fprintf(stderr, PROG ": cannot start a thread\n");
            atomic_fetch_sub(&b.running, b.nconns - i);
            goto out;
        }
        b.conns[i].started = true;
    }
    if (cms_config_bool(cfg, "progress"))
        progress(&b);
    for (int i = 0; i < b.nconns; i++) {
        pthread_join(b.conns[i].thread, NULL);
        b.conns[i].started = false;
    }
    double cpu = bench_cpu_seconds() - cpu0;
    double secs = (double)(t_end(&b) - b.t_measure) / 1e9;

    all = calloc(1, sizeof *all);
    life = calloc(1, sizeof *life);
    lag = calloc(1, sizeof *lag);
    bool mem = all && life && lag;
    for (int k = 0; k < CMD_N; k++)
        mem = mem && (lat[k] = calloc(1, sizeof *lat[k])) != NULL;
    if (!mem)
        goto out;
    uint64_t sent = 0, replies = 0, errors = 0, out_counts[OUT_KINDS] = {0};
    uint64_t cmd_ok[CMD_N] = {0}, cmd_err[CMD_N] = {0}, life_ok = 0, life_auto = 0, life_failed = 0;
    bool failed = false;
    const char *first_error = "";
    for (int i = 0; i < b.nconns; i++) {
        conn *c = &b.conns[i];
        for (int k = 0; k < CMD_N; k++) {
            bench_hist_merge(lat[k], c->lat[k]);
            bench_hist_merge(all, c->lat[k]);
            cmd_ok[k] += c->cmd_ok[k];
            cmd_err[k] += c->cmd_err[k];
        }
        bench_hist_merge(life, c->life);
        bench_hist_merge(lag, c->send_lag);
        sent += c->sent;
        replies += c->replies;
        life_ok += c->life_ok;
        life_auto += c->life_auto;
        life_failed += c->life_failed;
        for (int k = 1; k < OUT_KINDS; k++)
            out_counts[k] += c->out[k];
        failed = failed || c->failed;
        if (first_error[0] == '\0')
            first_error = bench_nats_first_error(c->nats);
    }
    for (int k = 1; k < OUT_KINDS; k++)
        errors += out_counts[k];
    uint64_t commands = 0;
    for (int k = 0; k < CMD_N; k++)
        commands += cmd_ok[k];

    printf("subject: %s*\n", b.subject);
    printf("mode: %s\n", b.closed ? "closed" : "open");
    printf("rate: %" PRId64 "\n", rate);
    printf("clients: %" PRId64 "\n", b.closed ? clients : 0);
    printf("connections: %" PRId64 "\n", nconns);
    printf("pairs: %" PRIu32 "\n", b.npairs);
    printf("seconds: %.3f\n", secs);
    printf("sent: %" PRIu64 "\n", sent);
    printf("replies: %" PRIu64 "\n", replies);
    printf("lifecycles: %" PRIu64 "\n", life_ok + life_auto);
    printf("activated: %" PRIu64 "\n", life_ok);
    printf("auto_activated: %" PRIu64 "\n", life_auto);
    printf("lifecycles_failed: %" PRIu64 "\n", life_failed);
    printf("throughput: %.0f\n", secs > 0 ? (double)(life_ok + life_auto) / secs : 0.0);
    printf("commands: %" PRIu64 "\n", commands);
    printf("command_rate: %.0f\n", secs > 0 ? (double)commands / secs : 0.0);
    printf("errors: %" PRIu64 "\n", errors);
    printf("timeouts: %" PRIu64 "\n", out_counts[OUT_TIMEOUT]);
    for (int k = 0; k < CMD_N; k++) {
        print_hist(cmd_names[k], lat[k]);
        printf("%s_errors: %" PRIu64 "\n", cmd_names[k], cmd_err[k]);
    }
    print_hist("all", all);
    print_hist("lifecycle", life);
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
    status = errors == 0 && life_ok + life_auto > 0 && !failed ? EXIT_DONE : EXIT_FAILED;
out:
    if (b.conns) {
        for (int i = 0; i < b.nconns; i++)
            if (b.conns[i].started)
                pthread_join(b.conns[i].thread, NULL);
        for (int i = 0; i < b.nconns; i++)
            conn_free(&b.conns[i]);
    }
    free(b.conns);
    for (int k = 0; k < CMD_N; k++)
        free(lat[k]);
    free(all);
    free(life);
    free(lag);
    bench_parties_free(parties, nparties);
    return status;
}

/* --- respond ----------------------------------------------------------------- */

/* The replies of the baseline, one per verb: a Contract as cms-contracts
 * returns it after that verb. */
typedef struct responder {
    bench_body create, submit, sign, activate;
    _Atomic uint64_t replied;
    _Atomic uint64_t failed;
} responder;

static void on_request(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
    (void)sub;
    responder *r = closure;
    const char *reply = natsMsg_GetReply(msg);
    const char *subj = natsMsg_GetSubject(msg);
    const char *verb = strrchr(subj, '.');
    verb = verb ? verb + 1 : subj;
    const bench_body *bd = strcmp(verb, "create") == 0   ? &r->create
                           : strcmp(verb, "submit") == 0 ? &r->submit
                           : strcmp(verb, "sign") == 0   ? &r->sign
                                                         : &r->activate;
    if (reply && natsConnection_Publish(nc, reply, bd->data, (int)bd->len) == NATS_OK)
        atomic_fetch_add_explicit(&r->replied, 1, memory_order_relaxed);
    else
        atomic_fetch_add_explicit(&r->failed, 1, memory_order_relaxed);
    natsMsg_Destroy(msg);
}

/* A signature entry as cms-contracts stores it, about its size. */
static void fake_entry(char *out, size_t cap, const char *who, const char *key, const char *hash)
{
    snprintf(out, cap,
             "{\"alg\": \"ed25519\", \"key_id\": \"%s\", \"signature\": "
             "\"bGZ0eV9zaXhfYnl0ZXNfb2ZfYV9zaWduYXR1cmVfdGhhdF9pc19ub3RfcmVhbGx5X29uZV9hdF9hbGwh"
             "IQ\", \"signed_at\": \"2026-01-01T00:00:00.000000Z\", \"public_key\": "
             "\"c2l4dHlfZm91cl9iYXNlNjRfY2hhcnNfb2ZfYV9rZXk=\", \"identity_id\": \"%s\", "
             "\"content_hash\": \"%s\"}",
             key, who, hash);
}

static int cmd_respond(const cms_config *cfg)
{
    int status = EXIT_FAILED;
    responder r = {0};
    char subject[256], id[CMS_UUID_STRLEN + 1], prov[CMS_UUID_STRLEN + 1],
        cons[CMS_UUID_STRLEN + 1], key[CMS_UUID_STRLEN + 1], terms[512], e1[600], e2[600],
        both[1300];
    const char hash[] = "9f2b5c1d0e3a4b6c7d8e9f00112233445566778899aabbccddeeff0011223344";
    cms_uuid u;

    cms_uuid_v7(&u);
    cms_uuid_format(&u, id);
    cms_uuid_v7(&u);
    cms_uuid_format(&u, prov);
    cms_uuid_v7(&u);
    cms_uuid_format(&u, cons);
    cms_uuid_v7(&u);
    cms_uuid_format(&u, key);
    bench_contract_terms(terms, sizeof terms, NULL);
    fake_entry(e1, sizeof e1, prov, key, hash);
    fake_entry(e2, sizeof e2, cons, key, hash);
    snprintf(both, sizeof both, "{\"consumer\": %s, \"provider\": %s}", e2, e1);
    int64_t now = bench_unix_us();
    Cms__V1__Contract k = CMS__V1__CONTRACT__INIT;
    k.id = id;
    k.title = (char *)"bench-000000-0000000000000000 0-000000";
    k.description = (char *)"A contract of the benchmark: data for model training.";
    k.provider_id = prov;
    k.consumer_id = cons;
    k.terms_json = terms;
    k.metadata_json = (char *)"{}";
    k.created_at_us = now;
    k.updated_at_us = now;
    k.content_hash = (char *)hash;
    k.status = (char *)"draft";
    k.signatures_json = (char *)"{}";
    bool ok = bench_pack_reply(&k.base, &r.create);
    k.status = (char *)"review";
    ok = ok && bench_pack_reply(&k.base, &r.submit);
    k.status = (char *)"signed";
    k.signatures_json = both;
    ok = ok && bench_pack_reply(&k.base, &r.sign);
    k.status = (char *)"active";
    ok = ok && bench_pack_reply(&k.base, &r.activate);
    if (!ok)
        goto out;

    snprintf(subject, sizeof subject, "%s.contracts.*", cms_config_str(cfg, "prefix"));
    if (bench_serve(PROG, cms_config_str(cfg, "nats-url"), subject,
                    cms_config_bool(cfg, "buffered"), on_request, &r))
        status = EXIT_DONE;
out:
    if (status == EXIT_DONE)
        printf("replied: %" PRIu64 "\nfailed: %" PRIu64 "\n", atomic_load(&r.replied),
               atomic_load(&r.failed));
    free(r.create.data);
    free(r.submit.data);
    free(r.sign.data);
    free(r.activate.data);
    return status;
}

/* --- setup ------------------------------------------------------------------- */

static int cmd_setup(const cms_config *cfg)
{
    int status = EXIT_FAILED;
    natsConnection *nc = NULL;
    FILE *out = NULL;
    bench_party p;
    char key[256], auth[300], name[200], default_prefix[64];
    const char *prefix = cms_config_str(cfg, "prefix");
    const char *admin_file = cms_config_str(cfg, "admin-key-file");
    const char *parties_out = cms_config_str(cfg, "parties-out");
    int64_t pairs = cms_config_int(cfg, "pairs");
    int64_t timeout_ms = cms_config_duration_ms(cfg, "timeout");
    snprintf(default_prefix, sizeof default_prefix, "bench-%d-%" PRId64, (int)getpid(),
             bench_unix_us());
    const char *name_prefix =
        cms_config_str(cfg, "name-prefix") ? cms_config_str(cfg, "name-prefix") : default_prefix;
    if (admin_file == NULL || parties_out == NULL || pairs < 1 || pairs > 100000) {
        fprintf(stderr, PROG ": setup needs --admin-key-file, --parties-out and --pairs "
                             "1..100000\n");
        status = EXIT_USAGE;
        goto out;
    }
    if (!bench_read_key_file(PROG, admin_file, key))
        goto out;
    snprintf(auth, sizeof auth, "Bearer %s", key);
    natsStatus st = natsConnection_ConnectTo(&nc, cms_config_str(cfg, "nats-url"));
    if (st != NATS_OK) {
        fprintf(stderr, PROG ": connecting to NATS: %s\n", natsStatus_GetText(st));
        goto out;
    }
    int fd = open(parties_out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    out = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (out == NULL) {
        fprintf(stderr, PROG ": %s: %s\n", parties_out, strerror(errno));
        if (fd >= 0)
            close(fd);
        goto out;
    }
    for (int64_t i = 0; i < 2 * pairs; i++) {
        snprintf(name, sizeof name, "%s-%s-%" PRId64, name_prefix, i % 2 ? "consumer" : "provider",
                 i / 2);
        if (bench_party_create(PROG, nc, prefix, auth, name, "machine", true, timeout_ms, &p) != 0)
            goto out;
        bool written = bench_party_write(out, &p);
        sodium_memzero(&p, sizeof p);
        if (!written) {
            fprintf(stderr, PROG ": writing %s failed\n", parties_out);
            goto out;
        }
    }
    if (fclose(out) != 0) {
        out = NULL;
        fprintf(stderr, PROG ": writing %s failed\n", parties_out);
        goto out;
    }
    out = NULL;
    printf("pairs: %" PRId64 "\nparties: %" PRId64 "\n", pairs, 2 * pairs);
    status = EXIT_DONE;
out:
    if (out)
        fclose(out);
    natsConnection_Destroy(nc);
    (void)nats_CloseAndWait(5000);
    sodium_memzero(key, sizeof key);
    sodium_memzero(auth, sizeof auth);
    return status;
}

/* --- main -------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    static const bench_verb verbs[] = {
        {"setup", cmd_setup}, {"run", cmd_run}, {"respond", cmd_respond}};
    return bench_main(argc, argv, PROG, "load generator of the cms-contracts benchmark", options,
                      sizeof options / sizeof options[0], usage_tail, verbs,
                      sizeof verbs / sizeof verbs[0]);
}
