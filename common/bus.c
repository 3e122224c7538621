/* The system's wire conventions; see bus.h. */
#include "bus.h"

#include "pbtext.h"

#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <uv.h>

#define MIN_OCCURRED_US INT64_C(946684800000000)  /* 2000-01-01 */
#define MAX_OCCURRED_US INT64_C(4102444800000000) /* 2100-01-01 */
#define DAY_MS (INT64_C(24) * 3600 * 1000)
/* a dead letter's own id: "dlq:<service>:<stream>:<seq>" or "dlq:<service>:<original id>" */
#define DLQ_ID_MAX 400
/* headers the dead letter adds, and the ones of a record, at the most */
#define DLQ_ADDED 8

static const char *const err_names[] = {CMS_BUS_ERRORS(CMS_ENUM_TEXT)};
static const char *const reason_names[] = {CMS_BUS_REASONS(CMS_ENUM_TEXT)};

const char *cms_bus_strerror(cms_bus_err e)
{
    return cms_enum_text(err_names, CMS_BUS_NERRORS, e);
}

const char *cms_bus_reason_name(cms_bus_reason r)
{
    return cms_enum_text(reason_names, CMS_BUS_NREASONS, r);
}

const char *const cms_bus_auth_event_subjects[] = {"cms.events.identity.>",
                                                   "cms.events.credential.>", NULL};
const char *const cms_bus_auth_event_types[] = {"identity.status_changed", "credential.revoked",
                                                "credential.expired", NULL};

const uint8_t cms_bus_system_actor[16] = {0, 0, 0, 0, 0, 0, 0x70, 0, 0x80, 0, 0, 0, 0, 0, 0, 1};

/* ---- streams ---- */

static const cms_nats_stream_spec streams[] = {
    {.name = CMS_BUS_EVENTS_STREAM,
     .subject = CMS_BUS_EVENT_SUBJECTS,
     .max_age_ms = 30 * DAY_MS,
     .duplicates_ms = CMS_BUS_DEDUPE_WINDOW_MS},
    {.name = CMS_BUS_DLQ_STREAM, .subject = CMS_BUS_DLQ_SUBJECTS, .max_age_ms = 90 * DAY_MS},
    {.name = CMS_BUS_WORK_STREAM,
     .subject = CMS_BUS_WORK_SUBJECTS,
     .work_queue = true,
     .max_age_ms = 7 * DAY_MS,
     .duplicates_ms = CMS_BUS_DEDUPE_WINDOW_MS},
    /* kept for as long as the audit log: what verify holds the database to */
    {.name = CMS_BUS_CHECKPOINT_STREAM,
     .subject = CMS_BUS_CHECKPOINT_SUBJECTS,
     .append_only = true,
     .duplicates_ms = CMS_BUS_DEDUPE_WINDOW_MS},
};

const cms_nats_stream_spec *cms_bus_streams(size_t *count)
{
    *count = sizeof streams / sizeof streams[0];
    return streams;
}

int cms_bus_provision(cms_nats *n, void (*done)(void *arg, cms_nats_err err), void *arg)
{
    return cms_nats_provision(n, streams, sizeof streams / sizeof streams[0], done, arg);
}

/* ---- durables ---- */

/* cms-audit's: 4 x its batch of 1000 held, 30 s to ack, every event.
 * cms-contracts': identity status and public keys, each at common/consumer's
 * defaults (256 held, 30 s to ack); cms-training's: contracts and identity
 * status, the same. The workers': one dispatch at a time per worker (a
 * worker holds one), 30 s to say it started before it goes to another. */
static const cms_nats_durable_spec durables[] = {
    {.stream = CMS_BUS_EVENTS_STREAM,
     .durable = "audit",
     .max_ack_pending = 4000,
     .ack_wait_ms = 30000},
    {.stream = CMS_BUS_EVENTS_STREAM,
     .durable = "contracts-identity",
     .filter_subject = "cms.events.identity.>",
     .max_ack_pending = 256,
     .ack_wait_ms = 30000},
    {.stream = CMS_BUS_EVENTS_STREAM,
     .durable = "contracts-credential",
     .filter_subject = "cms.events.credential.>",
     .max_ack_pending = 256,
     .ack_wait_ms = 30000},
    {.stream = CMS_BUS_EVENTS_STREAM,
     .durable = "training-contract",
     .filter_subject = "cms.events.contract.>",
     .max_ack_pending = 256,
     .ack_wait_ms = 30000},
    {.stream = CMS_BUS_EVENTS_STREAM,
     .durable = "training-identity",
     .filter_subject = "cms.events.identity.>",
     .max_ack_pending = 256,
     .ack_wait_ms = 30000},
    {.stream = CMS_BUS_WORK_STREAM,
     .durable = CMS_BUS_WORKERS_DURABLE,
     .filter_subject = CMS_BUS_WORK_TRAINING,
     .max_ack_pending = 1024,
     .ack_wait_ms = 30000},
};

const cms_nats_durable_spec *cms_bus_durables(size_t *count)
{
    *count = sizeof durables / sizeof durables[0];
    return durables;
}

typedef struct {
    uv_timer_t timer;
    cms_nats *n;
    cms_nats_err result;
    bool closing;
} prov_wait;

static void prov_closed(void *arg)
{
    prov_wait *p = arg;
    uv_close((uv_handle_t *)&p->timer, NULL);
}

static void prov_close(prov_wait *p)
{
    if (p->closing)
        return;
    p->closing = true;
    uv_timer_stop(&p->timer);
    cms_nats_close(p->n, prov_closed, p);
}

static void prov_done(void *arg, cms_nats_err err)
{
    prov_wait *p = arg;
    if (!p->closing)
        p->result = err;
    prov_close(p);
}

static void prov_timeout(uv_timer_t *t)
{
    prov_close(t->data);
}

cms_nats_err cms_bus_provision_wait(const cms_nats_options *o, bool with_durables, int replicas,
                                    int64_t timeout_ms)
{
    if (replicas < 0 || replicas > CMS_BUS_MAX_REPLICAS)
        return CMS_NATS_EINVAL;
    enum { NSTREAMS = sizeof streams / sizeof streams[0] };
    cms_nats_stream_spec specs[NSTREAMS];
    for (size_t i = 0; i < NSTREAMS; i++) {
        specs[i] = streams[i];
        specs[i].replicas = replicas;
    }
    uv_loop_t loop;
    if (uv_loop_init(&loop) != 0)
        return CMS_NATS_ENOMEM;
    prov_wait p = {.result = CMS_NATS_ETIMEOUT};
    int rc = cms_nats_create(&loop, o, &p.n);
    if (rc == 0) {
        uv_timer_init(&loop, &p.timer);
        p.timer.data = &p;
        uv_timer_start(&p.timer, prov_timeout, (uint64_t)timeout_ms, 0);
        rc = with_durables
                 ? cms_nats_provision_all(p.n, specs, NSTREAMS, durables,
                                          sizeof durables / sizeof durables[0], prov_done, &p)
                 : cms_nats_provision(p.n, specs, NSTREAMS, prov_done, &p);
        if (rc != 0) {
            p.result = (cms_nats_err)rc;
            prov_close(&p);
        }
        uv_run(&loop, UV_RUN_DEFAULT);
    } else {
        p.result = (cms_nats_err)rc;
    }
    cms_nats_destroy(p.n);
    (void)uv_loop_close(&loop);
    return p.result;
}

/* ---- subjects ---- */

static cms_bus_err fits(int n, size_t len)
{
    return n < 0 || (size_t)n >= len ? CMS_BUS_ETOOLONG : CMS_BUS_OK;
}

cms_bus_err cms_bus_command_subject(char *buf, size_t len, const char *prefix, const char *service,
                                    const char *verb)
{
    if (buf == NULL || service == NULL || verb == NULL)
        return CMS_BUS_EINVAL;
    return fits(snprintf(buf, len, "%s.%s.%s", prefix && *prefix ? prefix : CMS_BUS_COMMAND_PREFIX,
                         service, verb),
                len);
}

cms_bus_err cms_bus_event_subject(char *buf, size_t len, const char *event_type)
{
    if (buf == NULL || event_type == NULL)
        return CMS_BUS_EINVAL;
    return fits(snprintf(buf, len, CMS_BUS_EVENT_PREFIX "%s", event_type), len);
}

cms_bus_err cms_bus_dlq_subject(char *buf, size_t len, const char *service)
{
    if (buf == NULL || service == NULL || *service == '\0')
        return CMS_BUS_EINVAL;
    return fits(snprintf(buf, len, CMS_BUS_DLQ_PREFIX "%s", service), len);
}

/* ---- checks ---- */

const char *cms_bus_event_filter(const char *subject)
{
    return subject == NULL || strcmp(subject, CMS_BUS_EVENT_SUBJECTS) == 0 ? NULL : subject;
}

bool cms_bus_valid_token(const char *s, size_t n)
{
    if (s == NULL || n == 0 || n > CMS_BUS_TYPE_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return false;
    }
    return true;
}

bool cms_bus_valid_event_type(const char *event_type, const char *resource_type)
{
    if (event_type == NULL || resource_type == NULL)
        return false;
    size_t rt = strlen(resource_type), et = strlen(event_type);
    return cms_bus_valid_token(resource_type, rt) && et <= CMS_BUS_TYPE_MAX && et >= rt + 2 &&
           memcmp(event_type, resource_type, rt) == 0 && event_type[rt] == '.' &&
           cms_bus_valid_token(event_type + rt + 1, et - rt - 1);
}

static bool is_uuid(const char *s)
{
    cms_uuid u;
    return s != NULL && cms_uuid_parse(s, strlen(s), &u);
}

cms_bus_reason cms_bus_envelope_check(const Cms__V1__Envelope *e)
{
    if (e == NULL)
        return CMS_BUS_UNDECODABLE;
    if (!is_uuid(e->event_id))
        return CMS_BUS_BAD_EVENT_ID;
    if (!is_uuid(e->resource_id))
        return CMS_BUS_BAD_RESOURCE_ID;
    if (!is_uuid(e->actor_id))
        return CMS_BUS_BAD_ACTOR_ID;
    if (!cms_bus_valid_token(e->resource_type, strlen(e->resource_type)))
        return CMS_BUS_BAD_RESOURCE_TYPE;
    if (!cms_bus_valid_event_type(e->event_type, e->resource_type))
        return CMS_BUS_BAD_EVENT_TYPE;
    if (e->occurred_at_us < MIN_OCCURRED_US || e->occurred_at_us >= MAX_OCCURRED_US)
        return CMS_BUS_BAD_OCCURRED_AT;
    return CMS_BUS_VALID;
}

cms_bus_reason cms_bus_envelope_decode(const void *data, size_t len, cms_pbarena *arena,
                                       Cms__V1__Envelope **out)
{
    cms_pbarena_reset(arena);
    /* protobuf-c would cut a string at a NUL: details_json stored as less
     * than was sent. (Invalid UTF-8 is left to the checks of each field:
     * details_json's is invalid_details.) */
    const char *field = NULL;
    if (cms_pbtext_check(&cms__v1__envelope__descriptor, data, len, CMS_PBTEXT_CHECK_NUL, &field) !=
        CMS_PBTEXT_OK)
        return CMS_BUS_UNDECODABLE;
    Cms__V1__Envelope *e = cms__v1__envelope__unpack(cms_pbarena_allocator(arena), len, data);
    cms_bus_reason r = cms_bus_envelope_check(e);
    if (r == CMS_BUS_VALID)
        *out = e;
    return r;
}

/* ---- events ---- */

int64_t cms_bus_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

cms_bus_err cms_bus_event_build(Cms__V1__Envelope *env, const cms_bus_event_header *h,
                                cms_bus_event *out)
{
    if (env == NULL || h == NULL || out == NULL || h->event_type == NULL ||
        h->resource_type == NULL || h->resource_id == NULL || h->actor_id == NULL ||
        h->source == NULL)
        return CMS_BUS_EINVAL;
    cms_bus_event ev = {0};
    cms_bus_err err = cms_bus_event_subject(ev.subject, sizeof ev.subject, h->event_type);
    if (err != CMS_BUS_OK)
        return err;
    cms_uuid u;
    cms_uuid_v7(&u);
    cms_uuid_format(&u, ev.id);
    env->event_id = ev.id;
    env->event_type = (char *)h->event_type;
    env->resource_type = (char *)h->resource_type;
    env->resource_id = (char *)h->resource_id;
    env->actor_id = (char *)h->actor_id;
    env->occurred_at_us = h->occurred_at_us ? h->occurred_at_us : cms_bus_now_us();
    env->correlation_id = (char *)(h->correlation_id ? h->correlation_id : "");
    env->source = (char *)h->source;
    /* what this system publishes passes the checks every publisher is held to */
    if (cms_bus_envelope_check(env) != CMS_BUS_VALID) {
        err = CMS_BUS_EINVAL;
    } else {
        ev.len = cms__v1__envelope__get_packed_size(env);
        ev.buf = malloc(ev.len ? ev.len : 1);
        if (ev.buf != NULL)
            cms__v1__envelope__pack(env, ev.buf);
        else
            err = CMS_BUS_ENOMEM;
    }
    /* env borrowed our strings for the pack only */
    env->event_id = env->event_type = env->resource_type = env->resource_id = env->actor_id =
        env->correlation_id = env->source = (char *)protobuf_c_empty_string;
    if (err == CMS_BUS_OK)
        *out = ev;
    return err;
}

void cms_bus_event_release(cms_bus_event *ev)
{
    if (ev == NULL)
        return;
    free(ev->buf);
    ev->buf = NULL;
    ev->len = 0;
}

/* ---- dead letters ---- */

typedef struct dlq_ctx {
    cms_bus_dlq_cb done;
    void *arg;
} dlq_ctx;

static void dlq_published(void *arg, cms_nats_err err, const cms_nats_pub_ack *ack)
{
    (void)ack;
    dlq_ctx *c = arg;
    cms_bus_dlq_cb done = c->done;
    void *done_arg = c->arg;
    free(c);
    done(done_arg, err == CMS_NATS_OK);
}

static cms_bus_err from_nats(cms_nats_err e)
{
    switch (e) {
    case CMS_NATS_OK:
        return CMS_BUS_OK;
    case CMS_NATS_EBUSY:
        return CMS_BUS_EBUSY;
    case CMS_NATS_ECLOSED:
        return CMS_BUS_ECLOSED;
    case CMS_NATS_ENOMEM:
        return CMS_BUS_ENOMEM;
    case CMS_NATS_EINVAL:
    case CMS_NATS_EIO:
    case CMS_NATS_ETIMEOUT:
    case CMS_NATS_ETOOBIG:
    case CMS_NATS_ENOSTREAM:
        break;
    }
    return CMS_BUS_EINVAL;
}

/* The bytes a header block takes on the wire: "NATS/1.0\r\n", "K: V\r\n"
 * each, "\r\n". */
static size_t header_bytes(const char *const *h)
{
    size_t n = 0;
    for (size_t i = 0; h[i] != NULL; i += 2)
        n += strlen(h[i]) + 2 + strlen(h[i + 1]) + 2;
    return n;
}

cms_bus_err cms_bus_dead_letter(cms_nats *n, const char *service, const cms_nats_msg *orig,
                                const char *reason, cms_bus_dlq_cb done, void *arg)
{
    cms_bus_err err = CMS_BUS_OK;
    const char **h = NULL;
    dlq_ctx *ctx = NULL;
    char subject[CMS_BUS_SUBJECT_MAX], id[DLQ_ID_MAX], seq[24], size[24];
    char sha_hex[2 * crypto_hash_sha256_BYTES + 1];
    if (n == NULL || service == NULL || orig == NULL || reason == NULL || done == NULL) {
        err = CMS_BUS_EINVAL;
        goto out;
    }
    if ((err = cms_bus_dlq_subject(subject, sizeof subject, service)) != CMS_BUS_OK)
        goto out;
    size_t norig = cms_nats_msg_header_count(orig);
    h = calloc(2 * (norig + DLQ_ADDED) + 1, sizeof *h);
    ctx = calloc(1, sizeof *ctx);
    if (h == NULL || ctx == NULL) {
        err = CMS_BUS_ENOMEM;
        goto out;
    }
    /* the original's headers, less those that would fail or collide here */
    size_t k = 0;
    const char *orig_id = NULL;
    for (size_t i = 0; i < norig; i++) {
        const char *key, *value;
        if (!cms_nats_msg_header_at(orig, i, &key, &value))
            continue;
        /* expectations were about the original stream; here they would only fail the publish */
        if (strncasecmp(key, "Nats-Expected-", strlen("Nats-Expected-")) == 0)
            continue;
        /* CMS_DLQ dedupes ids across all its subjects: the original id moves
         * aside so one service's dead letter never hides another's */
        if (strcasecmp(key, "Nats-Msg-Id") == 0) {
            orig_id = value;
            key = CMS_BUS_DLQ_MSG_ID;
        }
        h[k++] = key;
        h[k++] = value;
    }
    size_t kept = k;
    h[k++] = CMS_BUS_DLQ_REASON;
    h[k++] = reason;
    h[k++] = CMS_BUS_DLQ_SUBJECT;
    h[k++] = cms_nats_msg_subject(orig);
    const char *stream = cms_nats_msg_stream(orig);
    uint64_t sseq = cms_nats_msg_stream_seq(orig);
    id[0] = '\0';
    if (sseq > 0 && stream != NULL) {
        snprintf(seq, sizeof seq, "%" PRIu64, sseq);
        h[k++] = CMS_BUS_DLQ_STREAM_SEQ;
        h[k++] = seq;
        /* a redelivered original dead-lettered twice stays one dead letter */
        err = fits(snprintf(id, sizeof id, "dlq:%s:%s:%s", service, stream, seq), sizeof id);
    } else if (orig_id != NULL) {
        err = fits(snprintf(id, sizeof id, "dlq:%s:%s", service, orig_id), sizeof id);
    }
    if (err != CMS_BUS_OK)
        goto out;
    h[k] = NULL;

    const void *body = cms_nats_msg_data(orig);
    size_t len = cms_nats_msg_len(orig);
    /* the dead letter's own Nats-Msg-Id header counts too */
    size_t whole = len + strlen("NATS/1.0\r\n\r\n") + header_bytes(h) +
                   (id[0] ? strlen("Nats-Msg-Id: \r\n") + strlen(id) : 0);
    size_t max = cms_nats_max_payload(n);
    if (whole > max) {
        /* a record instead: the added headers, what the original was, its first bytes */
        memmove(h, h + kept, (k - kept + 1) * sizeof *h);
        k -= kept;
        unsigned char sha[crypto_hash_sha256_BYTES];
        crypto_hash_sha256(sha, body, len);
        sodium_bin2hex(sha_hex, sizeof sha_hex, sha, sizeof sha);
        snprintf(size, sizeof size, "%zu", len);
        h[k++] = CMS_BUS_DLQ_SIZE;
        h[k++] = size;
        h[k++] = CMS_BUS_DLQ_SHA256;
        h[k++] = sha_hex;
        h[k++] = CMS_BUS_DLQ_TRUNCATED;
        h[k++] = "true";
        /* the event id, to find the record by (a short header: it fits) */
        if (orig_id != NULL && strlen(orig_id) <= CMS_BUS_DLQ_RECORD_ID_MAX) {
            h[k++] = CMS_BUS_DLQ_MSG_ID;
            h[k++] = orig_id;
        }
        h[k] = NULL;
        len = len < CMS_BUS_DLQ_RECORD_BYTES ? len : CMS_BUS_DLQ_RECORD_BYTES;
    }
    *ctx = (dlq_ctx){.done = done, .arg = arg};
    err = from_nats(
        cms_nats_js_publish(n, subject, id[0] ? id : NULL, h, body, len, dlq_published, ctx));
    if (err == CMS_BUS_OK)
        ctx = NULL;
out:
    free(ctx);
    free(h);
    return err;
}
