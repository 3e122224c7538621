/* cmsctl replay: publishes the records of a .pbs file to JetStream, as
 * fast as the stream acks them (or at --rate), and measures it.
 *
 * Each record is decoded as a cms.v1.Envelope for its subject and id: it is
 * published, unchanged, to <prefix>.<event_type> with Nats-Msg-Id =
 * event_id, so the stream's dedupe applies as it does to the services'
 * own publishes. A record that does not decode goes to
 * <prefix>.unknown.undecodable with a fresh id (an event_type that is not a
 * usable subject, to <prefix>.unknown.bad_event_type). With --loop K the
 * file is sent K times; pass k>0 appends "-<k>" to every id, so the stream
 * does not drop the later passes as duplicates. Replaying the same file
 * again within the stream's dedupe window (2 minutes) is deduplicated:
 * those acks are counted as duplicates.
 *
 * Flow control is ours: at most --window publishes are unanswered at once
 * (nats.c's own cap is set far above, so it never stalls us). nats.c calls
 * the ack handler on its own thread; the handler only files the answer
 * under a mutex and signals. Everything else - destroying messages,
 * retrying, statistics - happens on the main thread, which is then never
 * inside js_PublishMsgAsync with the message concerned (nats.c's MaxWait
 * timer can answer a publish while the call is still under way). Every
 * publish is answered by an ack or by that timer, so the run ends. */
#include <errno.h>
#include <inttypes.h>
#include <nats/nats.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "backoff.h"
#include "cli.h"
#include "cms/v1/envelope.pb-c.h"
#include "ctlnats.h"
#include "ctlout.h"
#include "pbs.h"
#include "uuid.h"
#include "verbs.h"

#define PROG "cmsctl replay"
#define EVENTS_PREFIX "cms.events"
#define WINDOW_MAX 65536
#define ID_MAX 128 /* longest event_id used as Nats-Msg-Id as it is */
#define SUBJECT_MAX 512
#define IDLE_WAIT_US 100000 /* longest wait before looking at signals and progress */
#define PROGRESS_US 1000000
#define ERRORS_SHOWN 10
#define BACKOFF_MIN_US 100000
#define BACKOFF_MAX_US 2000000
#define DRAIN_GRACE_US 5000000 /* beyond --ack-timeout, before giving up on answers */

/* ------------------------------------------------------------------------ */
/* ack latency: log-linear histogram (32 steps per power of two, ~3%) */

#define H_LINEAR 64
#define H_SUB 32
#define H_BUCKETS (H_LINEAR + 58 * H_SUB)

typedef struct histogram {
    uint64_t n;
    uint64_t b[H_BUCKETS];
} histogram;

static int floor_log2(uint64_t v)
{
    return 63 - __builtin_clzll(v);
}

static size_t h_bucket(uint64_t v)
{
    if (v < H_LINEAR)
        return (size_t)v;
    int e = floor_log2(v); /* >= 6 */
    size_t sub = (size_t)((v >> (e - 5)) & (H_SUB - 1));
    size_t i = H_LINEAR + (size_t)(e - 6) * H_SUB + sub;
    return i < H_BUCKETS ? i : H_BUCKETS - 1;
}

/* The middle of a bucket's range. */
static double h_value(size_t i)
{
    if (i < H_LINEAR)
        return (double)i;
    int e = (int)((i - H_LINEAR) / H_SUB) + 6;
    uint64_t sub = (i - H_LINEAR) % H_SUB;
    uint64_t lo = ((uint64_t)H_SUB + sub) << (e - 5);
    return (double)lo + (double)(UINT64_C(1) << (e - 5)) / 2.0;
}

static void h_add(histogram *h, uint64_t v)
{
    h->b[h_bucket(v)]++;
    h->n++;
}

static double h_quantile(const histogram *h, double q)
{
    if (h->n == 0)
        return 0;
    uint64_t want = (uint64_t)(q * (double)h->n);
    if (want >= h->n)
        want = h->n - 1;
    uint64_t seen = 0;
    for (size_t i = 0; i < H_BUCKETS; i++) {
        seen += h->b[i];
        if (seen > want)
            return h_value(i);
    }
    return h_value(H_BUCKETS - 1);
}

/* ------------------------------------------------------------------------ */
/* in-flight publishes */

typedef enum {
    SLOT_FREE,
    SLOT_SENT,     /* with nats.c, waiting for its answer */
    SLOT_ANSWERED, /* the handler filed the answer; the main thread settles it */
    SLOT_BACKOFF,  /* failed, waiting to be sent again */
} slot_state;

typedef struct slot {
    slot_state state;
    natsMsg *msg; /* ours except while SENT */
    int attempts;
    uint64_t sent_us;  /* start of the current attempt */
    uint64_t retry_at; /* BACKOFF: when to send again */
    /* the answer, written by the handler under the mutex */
    bool ok, duplicate;
    uint64_t answered_us;
    natsStatus err;
    jsErrCode jerr;
    char errtext[160];
    int next; /* link in the free, answered or backoff list */
} slot;

typedef struct replay {
    pthread_mutex_t mu;
    pthread_cond_t cond; /* signalled when an answer is filed */
    bool closing;        /* under mu: answers are ignored from now on */
    slot *slots;
    int nslots;
    int *map; /* msg pointer -> slot index (-1 empty), linear probing; under mu */
    size_t map_mask;
    int answered_head, answered_tail; /* under mu */

    /* main thread only from here on */
    jsCtx *js;
    int64_t ack_timeout_ms;
    int max_attempts;
    int free_head;
    int backoff_head, backoff_tail;
    int busy; /* slots not free: the publishes still unsettled */
    uint64_t sent, acked, duplicates, errors, retries;
    histogram lat;
} replay;

static const char *slot_state_name(slot_state s)
{
    switch (s) {
    case SLOT_FREE:
        return "free";
    case SLOT_SENT:
        return "sent";
    case SLOT_ANSWERED:
        return "answered";
    case SLOT_BACKOFF:
        return "backoff";
    }
    return "?";
}

/* The one place a slot changes state; the transitions are the life of one
 * message: free -> sent -> answered -> (backoff -> sent ...) -> free. */
static void set_state(replay *rp, slot *s, slot_state to)
{
    bool legal = false;
    switch (to) {
    case SLOT_FREE:
        legal = s->state == SLOT_ANSWERED || s->state == SLOT_BACKOFF;
        break;
    case SLOT_SENT:
        legal = s->state == SLOT_FREE || s->state == SLOT_BACKOFF;
        break;
    case SLOT_ANSWERED:
        legal = s->state == SLOT_SENT;
        break;
    case SLOT_BACKOFF:
        legal = s->state == SLOT_ANSWERED;
        break;
    }
    if (!legal) {
        fprintf(stderr, "%s: internal error: publish slot %d went %s -> %s\n", PROG,
                (int)(s - rp->slots), slot_state_name(s->state), slot_state_name(to));
        abort();
    }
    s->state = to;
}

static size_t ptr_hash(const void *p)
{
    uint64_t x = (uint64_t)(uintptr_t)p;
    x ^= x >> 33;
    x *= UINT64_C(0xFF51AFD7ED558CCD);
    x ^= x >> 33;
    return (size_t)x;
}

/* under mu */
static void map_put(replay *rp, const natsMsg *m, int idx)
{
    size_t i = ptr_hash(m) & rp->map_mask;
    while (rp->map[i] >= 0)
        i = (i + 1) & rp->map_mask;
    rp->map[i] = idx;
}

/* under mu: removes m's entry (backward-shift deletion keeps probe chains
 * whole without tombstones); returns its slot or -1 */
static int map_take(replay *rp, const natsMsg *m)
{
    size_t i = ptr_hash(m) & rp->map_mask;
    while (rp->map[i] >= 0 && rp->slots[rp->map[i]].msg != m)
        i = (i + 1) & rp->map_mask;
    int found = rp->map[i];
    if (found < 0)
        return -1;
    for (;;) {
        rp->map[i] = -1;
        size_t j = i;
        for (;;) {
            j = (j + 1) & rp->map_mask;
            if (rp->map[j] < 0)
                return found;
            size_t k = ptr_hash(rp->slots[rp->map[j]].msg) & rp->map_mask;
            bool stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
            if (!stays)
                break;
        }
        rp->map[i] = rp->map[j];
        i = j;
    }
}

/* nats.c's thread: file the answer, nothing more (see the top of the file). */
static void on_ack(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure)
{
    (void)js;
    replay *rp = closure;
    pthread_mutex_lock(&rp->mu);
    int idx = rp->closing ? -1 : map_take(rp, msg);
    if (idx >= 0) {
        slot *s = &rp->slots[idx];
        set_state(rp, s, SLOT_ANSWERED);
        s->answered_us = cmsctl_mono_us();
        s->ok = pa != NULL;
        s->duplicate = pa != NULL && pa->Duplicate;
        s->err = pae != NULL ? pae->Err : NATS_OK;
        s->jerr = pae != NULL ? pae->ErrCode : 0;
        snprintf(s->errtext, sizeof s->errtext, "%s",
                 pae != NULL && pae->ErrText != NULL ? pae->ErrText : "");
        s->next = -1;
        if (rp->answered_tail >= 0)
            rp->slots[rp->answered_tail].next = idx;
        else
            rp->answered_head = idx;
        rp->answered_tail = idx;
        pthread_cond_signal(&rp->cond);
    }
    /* msg is freed by the main thread; one we no longer track (closing) is left to the exit */
    pthread_mutex_unlock(&rp->mu);
}

static int replay_init(replay *rp, int window)
{
    memset(rp, 0, sizeof *rp);
    rp->answered_head = rp->answered_tail = -1;
    rp->backoff_head = rp->backoff_tail = -1;
    rp->nslots = window;
    size_t cap = 1;
    while (cap < (size_t)window * 2)
        cap <<= 1;
    rp->map_mask = cap - 1;
    rp->slots = calloc((size_t)window, sizeof *rp->slots);
    rp->map = malloc(cap * sizeof *rp->map);
    if (rp->slots == NULL || rp->map == NULL)
        return -1;
    for (size_t i = 0; i < cap; i++)
        rp->map[i] = -1;
    for (int i = 0; i < window; i++)
        rp->slots[i].next = i + 1 < window ? i + 1 : -1;
    rp->free_head = 0;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    int rc = pthread_cond_init(&rp->cond, &ca);
    pthread_condattr_destroy(&ca);
    if (rc != 0 || pthread_mutex_init(&rp->mu, NULL) != 0)
        return -1;
    return 0;
}

static void replay_free(replay *rp)
{
    for (int i = 0; i < rp->nslots && rp->slots != NULL; i++) {
        /* a message still with nats.c (SENT, only after giving up) is not ours to free */
        if (rp->slots[i].state != SLOT_SENT)
            natsMsg_Destroy(rp->slots[i].msg);
    }
    free(rp->slots);
    free(rp->map);
    pthread_cond_destroy(&rp->cond);
    pthread_mutex_destroy(&rp->mu);
}

/* Waits until an answer is filed or until the monotonic time `until`. */
static void wait_answers(replay *rp, uint64_t until)
{
    pthread_mutex_lock(&rp->mu);
    if (rp->answered_head < 0) {
        struct timespec ts = {.tv_sec = (time_t)(until / 1000000),
                              .tv_nsec = (long)(until % 1000000) * 1000};
        pthread_cond_timedwait(&rp->cond, &rp->mu, &ts);
    }
    pthread_mutex_unlock(&rp->mu);
}

static void free_slot(replay *rp, int idx)
{
    slot *s = &rp->slots[idx];
    natsMsg_Destroy(s->msg);
    s->msg = NULL;
    set_state(rp, s, SLOT_FREE);
    s->next = rp->free_head;
    rp->free_head = idx;
    rp->busy--;
}

static void report_error(replay *rp, slot *s)
{
    rp->errors++;
    if (rp->errors > ERRORS_SHOWN)
        return;
    const char *id = NULL;
    if (natsMsgHeader_Get(s->msg, "Nats-Msg-Id", &id) != NATS_OK)
        id = NULL;
    const char *what = natsStatus_GetText(s->err);
    bool detail = s->errtext[0] != '\0' && strcmp(s->errtext, what) != 0;
    fprintf(stderr, "%s: publish to %s (id %s) failed after %d attempt%s: %s%s%s", PROG,
            natsMsg_GetSubject(s->msg), id ? id : "-", s->attempts, s->attempts == 1 ? "" : "s",
            what, detail ? ": " : "", detail ? s->errtext : "");
    if (s->jerr != 0)
        fprintf(stderr, " (JetStream error %d)", (int)s->jerr);
    fputc('\n', stderr);
    if (rp->errors == ERRORS_SHOWN)
        fprintf(stderr, "%s: (further errors are only counted)\n", PROG);
}

/* A failed attempt (answered with an error, or refused at once): retry
 * after a backoff, or count it as failed. */
static void attempt_failed(replay *rp, int idx, bool stopping)
{
    slot *s = &rp->slots[idx];
    if (s->attempts < rp->max_attempts && !stopping) {
        s->retry_at = cmsctl_mono_us() + cms_backoff_delay(BACKOFF_MIN_US, BACKOFF_MAX_US,
                                                           (unsigned)(s->attempts - 1));
        set_state(rp, s, SLOT_BACKOFF);
        s->next = -1;
        if (rp->backoff_tail >= 0)
            rp->slots[rp->backoff_tail].next = idx;
        else
            rp->backoff_head = idx;
        rp->backoff_tail = idx;
        rp->retries++;
        return;
    }
    report_error(rp, s);
    free_slot(rp, idx);
}

/* Hands the slot's message to nats.c. On a refusal the message stays ours
 * (nats.c's contract: the pointer is cleared only on success). */
static void send_slot(replay *rp, int idx, bool stopping)
{
    slot *s = &rp->slots[idx];
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = rp->ack_timeout_ms; /* nats.c then answers every publish, by ack or timeout */
    s->attempts++;
    s->sent_us = cmsctl_mono_us();
    pthread_mutex_lock(&rp->mu);
    set_state(rp, s, SLOT_SENT);
    map_put(rp, s->msg, idx);
    pthread_mutex_unlock(&rp->mu);
    natsMsg *m = s->msg;
    natsStatus st = js_PublishMsgAsync(rp->js, &m, &po);
    if (st == NATS_OK)
        return;
    /* refused: no answer will come, so the entry is still in the map */
    pthread_mutex_lock(&rp->mu);
    (void)map_take(rp, s->msg);
    set_state(rp, s, SLOT_ANSWERED);
    pthread_mutex_unlock(&rp->mu);
    s->ok = false;
    s->err = st;
    s->jerr = 0;
    snprintf(s->errtext, sizeof s->errtext, "%s",
             nats_GetLastError(NULL) ? nats_GetLastError(NULL) : "");
    attempt_failed(rp, idx, stopping);
}

/* Settles every filed answer. */
static void settle_answers(replay *rp, bool stopping)
{
    pthread_mutex_lock(&rp->mu);
    int idx = rp->answered_head;
    rp->answered_head = rp->answered_tail = -1;
    pthread_mutex_unlock(&rp->mu);
    while (idx >= 0) {
        slot *s = &rp->slots[idx];
        int next = s->next;
        if (s->ok) {
            h_add(&rp->lat, s->answered_us - s->sent_us);
            rp->acked++;
            if (s->duplicate)
                rp->duplicates++;
            free_slot(rp, idx);
        } else {
            attempt_failed(rp, idx, stopping);
        }
        idx = next;
    }
}

/* Sends the first backed-off message if its time has come. */
static bool send_due_retry(replay *rp, uint64_t now, bool stopping)
{
    int idx = rp->backoff_head;
    if (idx < 0)
        return false;
    slot *s = &rp->slots[idx];
    if (!stopping && s->retry_at > now)
        return false;
    rp->backoff_head = s->next;
    if (rp->backoff_head < 0)
        rp->backoff_tail = -1;
    if (stopping) { /* no more attempts once interrupted */
        report_error(rp, s);
        free_slot(rp, idx);
        return true;
    }
    send_slot(rp, idx, stopping);
    return true;
}

/* ------------------------------------------------------------------------ */
/* records -> messages */

/* A subject tail made of tokens that are non-empty and free of blanks and
 * wildcards: what NATS accepts as a literal subject. */
static bool subject_tail_ok(const char *s)
{
    if (*s == '\0' || strlen(s) > SUBJECT_MAX / 2)
        return false;
    bool token_empty = true;
    for (const char *p = s; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c <= ' ' || c == 0x7F || c == '*' || c == '>')
            return false;
        if (c == '.') {
            if (token_empty)
                return false;
            token_empty = true;
        } else {
            token_empty = false;
        }
    }
    return !token_empty;
}

/* Usable as a header value as it is: printable ASCII, no blanks, bounded. */
static bool msg_id_ok(const char *s)
{
    size_t n = 0;
    for (const char *p = s; *p; p++, n++) {
        if ((unsigned char)*p <= ' ' || (unsigned char)*p >= 0x7F)
            return false;
    }
    return n > 0 && n <= ID_MAX;
}

static void fresh_id(char out[CMS_UUID_STRLEN + 1])
{
    cms_uuid u;
    cms_uuid_v7(&u);
    cms_uuid_format(&u, out);
}

/* The message for one record of pass k. */
static natsStatus build_msg(const char *prefix, const uint8_t *data, size_t len, int64_t k,
                            natsMsg **out)
{
    char subject[SUBJECT_MAX + 64];
    char id[ID_MAX + 32];
    char fresh[CMS_UUID_STRLEN + 1];
    natsMsg *m = NULL;
    Cms__V1__Envelope *env = cms__v1__envelope__unpack(NULL, len, data);
    const char *base_id = NULL;
    if (env == NULL) {
        snprintf(subject, sizeof subject, "%s.unknown.undecodable", prefix);
    } else {
        if (subject_tail_ok(env->event_type))
            snprintf(subject, sizeof subject, "%s.%s", prefix, env->event_type);
        else
            snprintf(subject, sizeof subject, "%s.unknown.bad_event_type", prefix);
        if (msg_id_ok(env->event_id))
            base_id = env->event_id;
    }
    if (base_id == NULL) {
        fresh_id(fresh);
        base_id = fresh;
    }
    if (k > 0)
        snprintf(id, sizeof id, "%s-%" PRId64, base_id, k);
    else
        snprintf(id, sizeof id, "%s", base_id);
    natsStatus st = natsMsg_Create(&m, subject, NULL, (const char *)data, (int)len);
    if (st == NATS_OK)
        st = natsMsgHeader_Set(m, "Nats-Msg-Id", id);
    if (st != NATS_OK) {
        natsMsg_Destroy(m);
        m = NULL;
    }
    cms__v1__envelope__free_unpacked(env, NULL);
    *out = m;
    return st;
}

/* ------------------------------------------------------------------------ */

static const cms_option options[] = {
    {"rate", NULL, CMS_OPT_INT, "0", "messages per second (0: as fast as the stream acks)", false,
     false},
    {"window", NULL, CMS_OPT_INT, "256", "most publishes unacknowledged at once", false, false},
    {"loop", NULL, CMS_OPT_INT, "1",
     "send the file this many times; pass k>0 appends -<k> to each Nats-Msg-Id", false, false},
    {"subject-prefix", NULL, CMS_OPT_STRING, EVENTS_PREFIX,
     "publish to <prefix>.<event_type>; must lie under cms.events", false, false},
    {"retries", NULL, CMS_OPT_INT, "3", "further attempts after a failed publish", false, false},
    {"ack-timeout", NULL, CMS_OPT_DURATION, "5s", "longest wait for one publish's ack (1ms to 1h)",
     CMS_OPT_PUBLIC, false},
    {"max-message", NULL, CMS_OPT_INT, "1048576", "largest record accepted from the file", false,
     false},
    CMSCTL_NATS_OPTIONS,
    {"timeout", NULL, CMS_OPT_DURATION, "5s",
     "longest wait to connect, and to create CMS_EVENTS if it is missing (1ms to 24d)",
     CMS_OPT_PUBLIC, false},
    CMSCTL_OUT_OPTIONS,
};

static const char usage_tail[] =
    "FILE.pbs\n\n"
    "Publishes every record of FILE.pbs (- for stdin) to JetStream on\n"
    "<prefix>.<event_type> with Nats-Msg-Id = event_id; undecodable records go to\n"
    "<prefix>.unknown.undecodable with a fresh id. Creates the stream CMS_EVENTS (as the\n"
    "services do) if it is missing. Within the stream's 2-minute dedupe window a\n"
    "second replay of the same file is dropped by the stream (counted as duplicates);\n"
    "--loop K makes the ids of passes 1..K-1 distinct (\"<event_id>-<k>\").\n"
    "Prints progress every second on stderr, then totals, rate and ack latency (one\n"
    "object with -o json or ndjson).\n"
    "Exit status: 0 all acked, 1 a publish failed after its retries (or interrupted,\n"
    "or the file is damaged), 2 usage error.";

static bool prefix_ok(const char *p)
{
    size_t n = strlen(EVENTS_PREFIX);
    if (strncmp(p, EVENTS_PREFIX, n) != 0 || (p[n] != '\0' && p[n] != '.'))
        return false;
    return subject_tail_ok(p);
}

static void progress(const replay *rp, uint64_t start, bool tty)
{
    double secs = (double)(cmsctl_mono_us() - start) / 1e6;
    fprintf(stderr, "%sreplay: sent %llu, acked %llu, %.0f msgs/s%s", tty ? "\r" : "",
            (unsigned long long)rp->sent, (unsigned long long)rp->acked,
            secs > 0 ? (double)rp->acked / secs : 0.0, tty ? "   " : "\n");
}

int cmsctl_replay_main(int argc, char **argv)
{
    int status = CMSCTL_EXIT_FAILED;
    cms_config *cfg = NULL;
    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    cms_pbs_reader *rd = NULL;
    replay *rp = NULL;
    bool rp_ready = false;
    int64_t rate = 0, window = 0, loops = 0, retries = 0, ack_ms = 0, max_msg = 0, connect_ms = 0;
    cmsctl_out_format fmt = CMSCTL_OUT_TABLE;
    int rc = cmsctl_parse(options, sizeof options / sizeof options[0], argc, argv, PROG,
                          "publish a .pbs file to JetStream", usage_tail, &cfg);
    if (rc != CMSCTL_EXIT_OK)
        return rc == CMSCTL_PARSE_DONE ? CMSCTL_EXIT_OK : rc;
    if (cms_config_npositional(cfg) != 1) {
        status = cmsctl_usage(PROG, "%s",
                              cms_config_npositional(cfg) == 0
                                  ? "which file? give one FILE.pbs (or - for stdin)"
                                  : "give exactly one FILE.pbs");
        goto out;
    }
    if ((status = cmsctl_out_format_get(PROG, cfg, &fmt)) != CMSCTL_EXIT_OK)
        goto out;
    status = CMSCTL_EXIT_FAILED;
    if (!cmsctl_int_arg(PROG, cfg, "rate", 0, 100000000, &rate) ||
        !cmsctl_int_arg(PROG, cfg, "window", 1, WINDOW_MAX, &window) ||
        !cmsctl_int_arg(PROG, cfg, "loop", 1, INT32_MAX, &loops) ||
        !cmsctl_int_arg(PROG, cfg, "retries", 0, 100, &retries) ||
        !cmsctl_duration_arg(PROG, cfg, "ack-timeout", 1, 3600000, &ack_ms) ||
        !cmsctl_int_arg(PROG, cfg, "max-message", 1, 64 * 1024 * 1024, &max_msg) ||
        !cmsctl_duration_arg(PROG, cfg, "timeout", 1, CMSCTL_TIMEOUT_MAX_MS, &connect_ms)) {
        status = CMSCTL_EXIT_USAGE;
        goto out;
    }
    const char *path = cms_config_positional(cfg, 0);
    const char *prefix = cms_config_str(cfg, "subject-prefix");
    if (!prefix_ok(prefix)) {
        status = cmsctl_usage(PROG,
                              "--subject-prefix \"%s\" must be cms.events or cms.events.<token>... "
                              "(the stream CMS_EVENTS holds cms.events.>)",
                              prefix);
        goto out;
    }
    if (strcmp(path, "-") == 0 && loops > 1) {
        status = cmsctl_usage(PROG, "%s", "--loop needs a file: stdin cannot be read twice");
        goto out;
    }
    /* a missing or unreadable file is reported before any network work */
    if (cms_pbs_reader_open(path, (size_t)max_msg, &rd) != CMS_PBS_OK) {
        status = cmsctl_fail(PROG, "cannot open %s: %s", path, strerror(errno));
        goto out;
    }
    if ((status = cmsctl_nats_connect(PROG, cfg, connect_ms, &nc)) != CMSCTL_EXIT_OK)
        goto out;
    status = CMSCTL_EXIT_FAILED;

    rp = malloc(sizeof *rp);
    rp_ready = rp != NULL && replay_init(rp, (int)window) == 0;
    if (!rp_ready) {
        if (rp != NULL) {
            free(rp->slots);
            free(rp->map);
        }
        status = cmsctl_fail(PROG, "out of memory for a window of %lld", (long long)window);
        goto out;
    }
    rp->ack_timeout_ms = ack_ms;
    rp->max_attempts = (int)retries + 1;
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = connect_ms;
    jo.PublishAsync.AckHandler = on_ack;
    jo.PublishAsync.AckHandlerClosure = rp;
    jo.PublishAsync.MaxPending = window * 4 + 1024; /* far above ours: nats.c never stalls */
    natsStatus st = natsConnection_JetStream(&js, nc, &jo);
    if (st != NATS_OK) {
        status = cmsctl_nats_fail(PROG, "no JetStream context", st);
        goto out;
    }
    rp->js = js;
    if ((status = cmsctl_nats_ensure_events(PROG, cfg, js, connect_ms)) != CMSCTL_EXIT_OK)
        goto out;
    status = CMSCTL_EXIT_FAILED;
    cmsctl_catch_signals();

    bool tty = isatty(STDERR_FILENO);
    bool stopping = false, exhausted = false, damaged = false;
    int64_t pass = 0;
    uint64_t start = cmsctl_mono_us(), last_progress = start;
    uint64_t last_answer = start; /* any answer, failed attempts included */
    uint64_t answered_before = 0;
    for (;;) {
        settle_answers(rp, stopping);
        uint64_t now = cmsctl_mono_us();
        if (rp->acked + rp->errors + rp->retries != answered_before) {
            answered_before = rp->acked + rp->errors + rp->retries;
            last_answer = now;
        }
        if (!stopping && cmsctl_interrupted()) {
            stopping = true;
            last_answer = now;
            fprintf(stderr, "%s%s: interrupted: waiting for %d unanswered publishes\n",
                    tty ? "\n" : "", PROG, rp->busy);
        }
        if (now - last_progress >= PROGRESS_US) {
            last_progress = now;
            progress(rp, start, tty);
        }
        if (send_due_retry(rp, now, stopping))
            continue;
        uint64_t wake = now + IDLE_WAIT_US;
        if (!stopping && !exhausted && rp->free_head >= 0) {
            uint64_t due = rate > 0 ? start + rp->sent * 1000000 / (uint64_t)rate : now;
            if (due <= now) {
                const uint8_t *data = NULL;
                size_t len = 0;
                cms_pbs_err e = cms_pbs_next(rd, &data, &len);
                if (e == CMS_PBS_EOF && pass + 1 < loops) {
                    cms_pbs_reader_close(rd);
                    rd = NULL;
                    pass++;
                    if (cms_pbs_reader_open(path, (size_t)max_msg, &rd) != CMS_PBS_OK) {
                        fprintf(stderr, "%s: cannot reopen %s for pass %lld: %s\n", PROG, path,
                                (long long)pass, strerror(errno));
                        damaged = exhausted = true;
                    }
                    continue;
                }
                if (e == CMS_PBS_EOF) {
                    exhausted = true;
                    continue;
                }
                if (e != CMS_PBS_OK) {
                    fprintf(stderr, "%s: %s at byte %llu of %s: %s; stopping there\n", PROG,
                            e == CMS_PBS_EIO ? strerror(errno) : "bad record",
                            (unsigned long long)cms_pbs_offset(rd), path, cms_pbs_strerror(e));
                    damaged = exhausted = true;
                    continue;
                }
                natsMsg *m = NULL;
                st = build_msg(prefix, data, len, pass, &m);
                if (st != NATS_OK) {
                    status = cmsctl_nats_fail(PROG, "cannot build a message", st);
                    damaged = exhausted = true;
                    continue;
                }
                int idx = rp->free_head;
                rp->free_head = rp->slots[idx].next;
                rp->busy++;
                rp->slots[idx].msg = m;
                rp->slots[idx].attempts = 0;
                rp->sent++;
                send_slot(rp, idx, stopping);
                continue;
            }
            if (due < wake)
                wake = due;
        }
        if ((exhausted || stopping) && rp->busy == 0)
            break;
        /* nats.c answers every publish within --ack-timeout; this only
         * bounds the run should that promise ever fail, as it does when
         * the connection closes with publishes pending (nats-server gone
         * for longer than the reconnects last): their acks never come, and
         * a window full of them would otherwise wait for ever */
        if ((exhausted || stopping || rp->free_head < 0) && rp->backoff_head < 0 &&
            now - last_answer > (uint64_t)ack_ms * 1000 + DRAIN_GRACE_US) {
            fprintf(stderr, "%s: giving up on %d unanswered publishes\n", PROG, rp->busy);
            break;
        }
        if (rp->backoff_head >= 0 && rp->slots[rp->backoff_head].retry_at < wake)
            wake = rp->slots[rp->backoff_head].retry_at;
        wait_answers(rp, wake);
    }
    if (tty && cmsctl_mono_us() - start >= PROGRESS_US)
        fputc('\n', stderr);
    double secs = (double)(cmsctl_mono_us() - start) / 1e6;
    uint64_t unanswered = (uint64_t)rp->busy;
    double p50 = h_quantile(&rp->lat, 0.50) / 1000.0, p99 = h_quantile(&rp->lat, 0.99) / 1000.0;
    double msgs_s = secs > 0 ? (double)rp->acked / secs : 0.0;
    if (fmt == CMSCTL_OUT_TABLE) {
        printf("total: %llu\n", (unsigned long long)rp->sent);
        printf("acked: %llu\n", (unsigned long long)rp->acked);
        printf("duplicates: %llu\n", (unsigned long long)rp->duplicates);
        printf("errors: %llu\n", (unsigned long long)(rp->errors + unanswered));
        printf("retries: %llu\n", (unsigned long long)rp->retries);
        printf("elapsed: %.3f s\n", secs);
        printf("rate: %.0f msgs/s\n", msgs_s);
        printf("ack latency: p50 %.3f ms, p99 %.3f ms\n", p50, p99);
        fflush(stdout);
    } else {
        json_t *o = json_object();
        if (o != NULL) {
            json_object_set_new(o, "total", json_integer((json_int_t)rp->sent));
            json_object_set_new(o, "acked", json_integer((json_int_t)rp->acked));
            json_object_set_new(o, "duplicates", json_integer((json_int_t)rp->duplicates));
            json_object_set_new(o, "errors", json_integer((json_int_t)(rp->errors + unanswered)));
            json_object_set_new(o, "retries", json_integer((json_int_t)rp->retries));
            json_object_set_new(o, "elapsed_seconds", json_real(secs));
            json_object_set_new(o, "msgs_per_second", json_real(msgs_s));
            json_object_set_new(o, "ack_latency_p50_ms", json_real(p50));
            json_object_set_new(o, "ack_latency_p99_ms", json_real(p99));
        }
        (void)cmsctl_out_emit(PROG, fmt, o, NULL); /* the exit status is the publishes' */
    }
    if (rp->errors + unanswered > 0)
        status = cmsctl_fail(PROG, "%llu of %llu publishes failed (see above)",
                             (unsigned long long)(rp->errors + unanswered),
                             (unsigned long long)rp->sent);
    else if (stopping)
        status = cmsctl_fail(PROG, "interrupted after %llu messages", (unsigned long long)rp->sent);
    else if (damaged)
        status = CMSCTL_EXIT_FAILED;
    else
        status = CMSCTL_EXIT_OK;
out:
    if (rp_ready) {
        pthread_mutex_lock(&rp->mu);
        rp->closing = true; /* a late answer now finds nothing to file */
        pthread_mutex_unlock(&rp->mu);
    }
    jsCtx_Destroy(js);
    if (nc != NULL) {
        natsConnection_Close(nc);
        natsConnection_Destroy(nc);
    }
    if (rp_ready) {
        /* nats.c's threads may still hold rp in an ack handler: wait for them to end */
        (void)nats_CloseAndWait(5000);
        replay_free(rp);
    }
    free(rp);
    cms_pbs_reader_close(rd);
    cms_config_destroy(cfg);
    return status;
}
