/* cmsctl gen: a .pbs file of synthetic event envelopes, for load tests and
 * for the audit service's poison handling.
 *
 * Events look like the system's own: the four resource types with their
 * lifecycle verbs, the owning service as source, UUIDv7 event ids, resource
 * ids from a pool per type (so a resource collects several events), actors
 * from a pool of K, occurred_at increasing by up to 2 ms per event, a
 * correlation id on about a third of them and a details object of 100 to
 * 300 bytes.
 *
 * With --bad-fraction F, every 1/F-th entry (evenly spread, floor(N*F) in
 * all) is poison, cycling through every kind in a fixed order, each entry
 * wrong in exactly one way. With --seed S the file is a function of the
 * arguments alone: the PRNG (xoshiro256**, seeded by splitmix64) makes every
 * id, and time starts at a fixed 2024-01-01T00:00:00Z. Without --seed the
 * PRNG is seeded at random, event ids come from cms_uuid_v7 and time starts
 * now. */
#include <errno.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <sodium.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "cms/v1/envelope.pb-c.h"
#include "ctldb.h"
#include "ctlout.h"
#include "pbs.h"
#include "uuid.h"
#include "verbs.h"

#define PROG "cmsctl gen"

#define SEEDED_BASE_US INT64_C(1704067200000000) /* 2024-01-01T00:00:00Z */
#define RESOURCE_POOL 512                        /* ids per resource type */
#define DETAILS_MIN 100
#define DETAILS_MAX 300
#define EVENT_TYPE_MAX 50 /* audit_logs.event_type is VARCHAR(50) */
#define PROGRESS_EVERY 65536
#define MAX_COUNT INT64_C(10000000000)
#define MAX_ACTORS 1000000
#define HINT_MAX_ACTORS 1000 /* above this the SQL hint would be unreadable */
#define ACTOR_NAME_PREFIX "cmsctl-actor-"

/* ------------------------------------------------------------------------ */
/* PRNG: xoshiro256** seeded through splitmix64 (both public domain,
 * Blackman and Vigna); fast, and the same on every platform. */

typedef struct rng {
    uint64_t s[4];
} rng;

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += UINT64_C(0x9E3779B97F4A7C15));
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

static void rng_seed(rng *r, uint64_t seed)
{
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&seed);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t rng_next(rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

/* Uniform in [0, n) (Lemire's multiply-shift; the bias is below 2^-32). */
static uint32_t rng_below(rng *r, uint32_t n)
{
    return (uint32_t)(((rng_next(r) >> 32) * (uint64_t)n) >> 32);
}

/* A UUIDv7 layout: 48-bit ms, version 7, variant 10, the rest random. */
static void rng_uuid_v7(rng *r, uint64_t ms, cms_uuid *out)
{
    uint64_t a = rng_next(r), b = rng_next(r);
    for (int i = 0; i < 6; i++)
        out->b[i] = (uint8_t)(ms >> (40 - 8 * i));
    out->b[6] = (uint8_t)(0x70 | (a & 0x0F));
    out->b[7] = (uint8_t)(a >> 8);
    out->b[8] = (uint8_t)(0x80 | (b & 0x3F));
    for (int i = 9; i < 16; i++)
        out->b[i] = (uint8_t)(b >> (8 * (i - 8)));
}

/* ------------------------------------------------------------------------ */
/* what events look like */

typedef enum { RT_CONTRACT, RT_IDENTITY, RT_CREDENTIAL, RT_TRAINING_JOB, RT_COUNT } rtype;

static const struct {
    const char *name;
    const char *source; /* the service that owns the resource type */
} rtypes[RT_COUNT] = {
    [RT_CONTRACT] = {"contract", "contracts"},
    [RT_IDENTITY] = {"identity", "identity"},
    [RT_CREDENTIAL] = {"credential", "identity"},
    [RT_TRAINING_JOB] = {"training_job", "training"},
};

typedef enum {
    K_CONTRACT_CREATED,
    K_CONTRACT_SIGNED,
    K_CONTRACT_ACTIVATED,
    K_CONTRACT_COMPLETED,
    K_CONTRACT_TERMINATED,
    K_IDENTITY_CREATED,
    K_IDENTITY_STATUS_CHANGED,
    K_CREDENTIAL_ISSUED,
    K_CREDENTIAL_REVOKED,
    K_JOB_CREATED,
    K_JOB_STARTED,
    K_JOB_PROGRESS,
    K_JOB_COMPLETED,
    K_JOB_FAILED,
    K_COUNT
} kind;

/* weights: progress reports dominate, as they do in a running system */
static const struct {
    rtype rt;
    const char *type;
    uint32_t weight;
} kinds[K_COUNT] = {
    [K_CONTRACT_CREATED] = {RT_CONTRACT, "contract.created", 6},
    [K_CONTRACT_SIGNED] = {RT_CONTRACT, "contract.signed", 10},
    [K_CONTRACT_ACTIVATED] = {RT_CONTRACT, "contract.activated", 5},
    [K_CONTRACT_COMPLETED] = {RT_CONTRACT, "contract.completed", 2},
    [K_CONTRACT_TERMINATED] = {RT_CONTRACT, "contract.terminated", 2},
    [K_IDENTITY_CREATED] = {RT_IDENTITY, "identity.created", 4},
    [K_IDENTITY_STATUS_CHANGED] = {RT_IDENTITY, "identity.status_changed", 2},
    [K_CREDENTIAL_ISSUED] = {RT_CREDENTIAL, "credential.issued", 5},
    [K_CREDENTIAL_REVOKED] = {RT_CREDENTIAL, "credential.revoked", 1},
    [K_JOB_CREATED] = {RT_TRAINING_JOB, "training_job.created", 4},
    [K_JOB_STARTED] = {RT_TRAINING_JOB, "training_job.started", 4},
    [K_JOB_PROGRESS] = {RT_TRAINING_JOB, "training_job.progress", 45},
    [K_JOB_COMPLETED] = {RT_TRAINING_JOB, "training_job.completed", 3},
    [K_JOB_FAILED] = {RT_TRAINING_JOB, "training_job.failed", 1},
};

static const char *const models[] = {"resnet50",        "bert-base",         "gpt2-small",
                                     "xgboost-tabular", "unet-segmentation", "lstm-forecast"};
static const char *const parties[] = {"provider", "consumer"};
static const char *const identity_types[] = {"user", "machine", "enclave"};
static const char *const identity_states[] = {"active", "inactive", "suspended"};
static const char *const reasons[] = {
    "requested by the provider", "breach of terms",  "key rotation",
    "suspected compromise",      "budget exhausted", "contract ended"};
static const char *const first_names[] = {"alice", "bob",   "carol", "dave", "erin",
                                          "frank", "grace", "heidi", "ivan", "judy"};
static const char filler[] =
    "quarterly data exchange under the standard terms with weekly delivery of anonymised "
    "records and a review of the privacy budget at the end of every training run as agreed "
    "by both parties in the data processing annex and its later amendments for the pilot "
    "phase of the federated analytics programme";

#define PICK(r, arr) (arr[rng_below((r), sizeof(arr) / sizeof(arr[0]))])

/* ------------------------------------------------------------------------ */
/* poison */

typedef enum {
    P_UNDECODABLE,
    P_BAD_EVENT_ID,
    P_BAD_RESOURCE_ID,
    P_BAD_ACTOR_ID,
    P_TYPE_MISMATCH,
    P_TYPE_TOO_LONG,
    P_DETAILS_NOT_OBJECT,
    P_DETAILS_INVALID_JSON,
    P_UNKNOWN_ACTOR,
    P_COUNT
} poison;

/* The names the summary reports (the audit service's reasons). */
typedef enum {
    R_UNDECODABLE,
    R_INVALID_EVENT_ID,
    R_INVALID_RESOURCE_ID,
    R_INVALID_ACTOR_ID,
    R_INVALID_EVENT_TYPE,
    R_INVALID_DETAILS,
    R_UNKNOWN_ACTOR,
    R_COUNT
} report;

static report report_of(poison p)
{
    switch (p) {
    case P_UNDECODABLE:
        return R_UNDECODABLE;
    case P_BAD_EVENT_ID:
        return R_INVALID_EVENT_ID;
    case P_BAD_RESOURCE_ID:
        return R_INVALID_RESOURCE_ID;
    case P_BAD_ACTOR_ID:
        return R_INVALID_ACTOR_ID;
    case P_TYPE_MISMATCH:
    case P_TYPE_TOO_LONG:
        return R_INVALID_EVENT_TYPE;
    case P_DETAILS_NOT_OBJECT:
    case P_DETAILS_INVALID_JSON:
        return R_INVALID_DETAILS;
    case P_UNKNOWN_ACTOR:
    case P_COUNT:
        break;
    }
    return R_UNKNOWN_ACTOR;
}

static const char *report_name(report r)
{
    switch (r) {
    case R_UNDECODABLE:
        return "undecodable";
    case R_INVALID_EVENT_ID:
        return "invalid_event_id";
    case R_INVALID_RESOURCE_ID:
        return "invalid_resource_id";
    case R_INVALID_ACTOR_ID:
        return "invalid_actor_id";
    case R_INVALID_EVENT_TYPE:
        return "invalid_event_type";
    case R_INVALID_DETAILS:
        return "invalid_details";
    case R_UNKNOWN_ACTOR:
    case R_COUNT:
        break;
    }
    return "unknown_actor";
}

/* ------------------------------------------------------------------------ */
/* the generator */

typedef char uuid_text[CMS_UUID_STRLEN + 1];

typedef struct gen {
    rng r;
    bool seeded;
    int64_t t_us; /* occurred_at of the last event */
    uint32_t weight_total;
    size_t nactors;
    cms_uuid *actors;
    uuid_text *actor_text;
    uuid_text pool[RT_COUNT][RESOURCE_POOL];
    uint64_t npoison; /* poison entries so far: picks the kind and its variant */
    uint64_t counts[R_COUNT];
    uint64_t valid;
} gen;

static void fresh_uuid(gen *g, uuid_text out)
{
    cms_uuid u;
    rng_uuid_v7(&g->r, (uint64_t)(g->t_us / 1000), &u);
    cms_uuid_format(&u, out);
}

static kind pick_kind(gen *g)
{
    uint32_t x = rng_below(&g->r, g->weight_total);
    for (int k = 0; k < K_COUNT; k++) {
        if (x < kinds[k].weight)
            return (kind)k;
        x -= kinds[k].weight;
    }
    return K_JOB_PROGRESS;
}

static void date_of(int64_t us, int64_t plus_days, char out[16])
{
    time_t t = (time_t)(us / 1000000 + plus_days * 86400);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 16, "%Y-%m-%d", &tm);
}

/* The type-specific fields of a details object, without its closing brace.
 * Every value comes from the tables above, hex ids or numbers: nothing
 * needs JSON escaping, which is what lets this use snprintf (jansson would
 * make gen several times slower for no gain). Returns the length. */
static int details_body(gen *g, kind k, char *buf, size_t cap)
{
    rng *r = &g->r;
    uuid_text a, b;
    char d1[16], d2[16];
    switch (k) {
    case K_CONTRACT_CREATED:
        fresh_uuid(g, a);
        fresh_uuid(g, b);
        date_of(g->t_us, 1 + rng_below(r, 30), d1);
        date_of(g->t_us, 180 + rng_below(r, 540), d2);
        return snprintf(buf, cap,
                        "{\"title\":\"Data sharing agreement %u\",\"provider_id\":\"%s\","
                        "\"consumer_id\":\"%s\",\"status\":\"draft\",\"terms\":{\"start_date\":"
                        "\"%s\",\"end_date\":\"%s\"}",
                        1000 + rng_below(r, 9000), a, b, d1, d2);
    case K_CONTRACT_SIGNED: {
        static const char hex[] = "0123456789abcdef";
        char hash[65];
        for (int i = 0; i < 64; i++)
            hash[i] = hex[rng_below(r, 16)];
        hash[64] = '\0';
        fresh_uuid(g, a);
        return snprintf(buf, cap,
                        "{\"signer_id\":\"%s\",\"party\":\"%s\",\"algorithm\":\"ed25519\","
                        "\"content_hash\":\"%s\"",
                        a, PICK(r, parties), hash);
    }
    case K_CONTRACT_ACTIVATED:
        date_of(g->t_us, 0, d1);
        return snprintf(buf, cap, "{\"from\":\"signed\",\"to\":\"active\",\"start_date\":\"%s\"",
                        d1);
    case K_CONTRACT_COMPLETED:
        return snprintf(buf, cap,
                        "{\"from\":\"active\",\"to\":\"completed\",\"training_jobs\":%u,"
                        "\"privacy_budget_spent\":%u.%02u",
                        rng_below(r, 20), rng_below(r, 8), rng_below(r, 100));
    case K_CONTRACT_TERMINATED:
        return snprintf(buf, cap, "{\"from\":\"%s\",\"to\":\"terminated\",\"reason\":\"%s\"",
                        rng_below(r, 2) ? "active" : "review", PICK(r, reasons));
    case K_IDENTITY_CREATED:
        return snprintf(buf, cap, "{\"name\":\"%s-%u\",\"type\":\"%s\",\"status\":\"active\"",
                        PICK(r, first_names), rng_below(r, 100000), PICK(r, identity_types));
    case K_IDENTITY_STATUS_CHANGED:
        return snprintf(buf, cap, "{\"from\":\"active\",\"to\":\"%s\",\"reason\":\"%s\"",
                        identity_states[1 + rng_below(r, 2)], PICK(r, reasons));
    case K_CREDENTIAL_ISSUED:
        fresh_uuid(g, a);
        date_of(g->t_us, 30 + rng_below(r, 335), d1);
        return snprintf(buf, cap,
                        "{\"identity_id\":\"%s\",\"type\":\"%s\",\"expires_at\":\"%sT00:00:00Z\"",
                        a, rng_below(r, 2) ? "api_key" : "public_key", d1);
    case K_CREDENTIAL_REVOKED:
        fresh_uuid(g, a);
        return snprintf(buf, cap, "{\"identity_id\":\"%s\",\"reason\":\"%s\"", a, PICK(r, reasons));
    case K_JOB_CREATED:
        fresh_uuid(g, a);
        return snprintf(buf, cap,
                        "{\"model_name\":\"%s\",\"contract_id\":\"%s\",\"privacy_budget\":%u.%u,"
                        "\"config\":{\"epochs\":%u,\"batch_size\":%u,\"learning_rate\":0.00%u}",
                        PICK(r, models), a, 1 + rng_below(r, 9), rng_below(r, 10),
                        5 + rng_below(r, 45), 16u << rng_below(r, 4), 1 + rng_below(r, 9));
    case K_JOB_STARTED:
        return snprintf(buf, cap,
                        "{\"worker\":\"worker-%u\",\"noise_multiplier\":%u.%03u,"
                        "\"sample_rate\":0.0%u",
                        rng_below(r, 16), 1 + rng_below(r, 2), rng_below(r, 1000),
                        1 + rng_below(r, 9));
    case K_JOB_PROGRESS:
        return snprintf(buf, cap,
                        "{\"epoch\":%u,\"step\":%u,\"loss\":0.%04u,\"accuracy\":0.%03u,"
                        "\"epsilon_spent\":%u.%03u",
                        rng_below(r, 50), rng_below(r, 100000), rng_below(r, 10000),
                        rng_below(r, 1000), rng_below(r, 5), rng_below(r, 1000));
    case K_JOB_COMPLETED:
        return snprintf(buf, cap,
                        "{\"epochs\":%u,\"final_loss\":0.%04u,\"epsilon_spent\":%u.%03u,"
                        "\"duration_s\":%u",
                        5 + rng_below(r, 45), rng_below(r, 10000), rng_below(r, 5),
                        rng_below(r, 1000), 60 + rng_below(r, 86400));
    case K_JOB_FAILED:
    case K_COUNT:
        break;
    }
    return snprintf(buf, cap, "{\"error\":\"worker lost\",\"epoch\":%u,\"retries\":%u",
                    rng_below(r, 50), rng_below(r, 3));
}

/* A details object of DETAILS_MIN..DETAILS_MAX bytes: the body plus a "note"
 * cut from the filler text to the length drawn. Returns the length. */
static size_t details(gen *g, kind k, char *buf, size_t cap)
{
    int n = details_body(g, k, buf, cap);
    if (n < 0 || (size_t)n >= cap - 2)
        n = 0; /* cannot happen with the bodies above; keeps the object well-formed */
    size_t len = (size_t)n;
    size_t target = DETAILS_MIN + rng_below(&g->r, DETAILS_MAX - DETAILS_MIN + 1);
    static const char pre[] = ",\"note\":\"";
    size_t overhead = sizeof pre - 1 + 2; /* the prefix, the closing quote and brace */
    if (len + overhead < target && target <= cap - 1) {
        size_t want = target - len - overhead;
        if (want > sizeof filler - 1)
            want = sizeof filler - 1;
        size_t from = rng_below(&g->r, (uint32_t)(sizeof filler - want));
        memcpy(buf + len, pre, sizeof pre - 1);
        len += sizeof pre - 1;
        memcpy(buf + len, filler + from, want);
        len += want;
        buf[len++] = '"';
    }
    buf[len++] = '}';
    buf[len] = '\0';
    return len;
}

/* A malformed id, varying with the poison ordinal. */
static void bad_id(gen *g, uuid_text valid, char *out, size_t cap)
{
    switch ((g->npoison / P_COUNT) % 5) {
    case 0: /* with random digits: no two entries, in one file or several, share the
             * id (and so the Nats-Msg-Id the stream dedupes on) */
        snprintf(out, cap, "not-a-uuid-%016" PRIx64, rng_next(&g->r));
        break;
    case 1: { /* no dashes */
        size_t o = 0;
        for (size_t i = 0; valid[i] && o + 1 < cap; i++)
            if (valid[i] != '-')
                out[o++] = valid[i];
        out[o] = '\0';
        break;
    }
    case 2: /* right shape, a non-hex digit */
        snprintf(out, cap, "%s", valid);
        out[3] = 'g';
        break;
    case 3:
        out[0] = '\0';
        break;
    default: /* one character too many */
        snprintf(out, cap, "%s0", valid);
        break;
    }
}

typedef struct entry {
    uuid_text event_id, resource_id, actor_id, correlation_id;
    char bad_event_id[48], bad_resource_id[48], bad_actor_id[48];
    char event_type[96];
    char details[DETAILS_MAX + 64];
} entry;

static size_t undecodable(gen *g, uint8_t *buf, size_t cap)
{
    size_t n = 16 + rng_below(&g->r, 48);
    if (n > cap)
        n = cap;
    for (size_t i = 0; i < n; i++)
        buf[i] = (uint8_t)rng_next(&g->r);
    switch ((g->npoison / P_COUNT) % 3) {
    case 0: /* field number 0, wire type 7: neither exists */
        buf[0] = 0x07;
        break;
    case 1: /* field 1, length 127, but fewer bytes follow */
        buf[0] = 0x0A;
        buf[1] = 0x7F;
        break;
    default: /* field 1 with the undefined wire type 7 */
        buf[0] = 0x0F;
        break;
    }
    return n;
}

/* One entry into buf (packed envelope or junk); p is P_COUNT for a valid
 * one. Returns its length. */
static size_t make_entry(gen *g, poison p, uint8_t *buf, size_t cap)
{
    entry e;
    g->t_us += 1 + rng_below(&g->r, 2000);
    if (p == P_UNDECODABLE)
        return undecodable(g, buf, cap);

    kind k = pick_kind(g);
    rtype rt = kinds[k].rt;
    Cms__V1__Envelope env = CMS__V1__ENVELOPE__INIT;
    if (g->seeded) {
        fresh_uuid(g, e.event_id);
    } else {
        cms_uuid u;
        cms_uuid_v7(&u);
        cms_uuid_format(&u, e.event_id);
    }
    memcpy(e.resource_id, g->pool[rt][rng_below(&g->r, RESOURCE_POOL)], sizeof e.resource_id);
    memcpy(e.actor_id, g->actor_text[rng_below(&g->r, (uint32_t)g->nactors)], sizeof e.actor_id);
    env.event_id = e.event_id;
    env.event_type = (char *)kinds[k].type;
    env.resource_type = (char *)rtypes[rt].name;
    env.resource_id = e.resource_id;
    env.actor_id = e.actor_id;
    env.occurred_at_us = g->t_us;
    env.source = (char *)rtypes[rt].source;
    if (rng_below(&g->r, 3) == 0) {
        fresh_uuid(g, e.correlation_id);
        env.correlation_id = e.correlation_id;
    }
    size_t dlen = details(g, k, e.details, sizeof e.details);
    env.details_json = e.details;

    switch (p) {
    case P_BAD_EVENT_ID:
        bad_id(g, e.event_id, e.bad_event_id, sizeof e.bad_event_id);
        env.event_id = e.bad_event_id;
        break;
    case P_BAD_RESOURCE_ID:
        bad_id(g, e.resource_id, e.bad_resource_id, sizeof e.bad_resource_id);
        env.resource_id = e.bad_resource_id;
        break;
    case P_BAD_ACTOR_ID:
        bad_id(g, e.actor_id, e.bad_actor_id, sizeof e.bad_actor_id);
        env.actor_id = e.bad_actor_id;
        break;
    case P_TYPE_MISMATCH: {
        const char *verb = strchr(kinds[k].type, '.') + 1;
        if ((g->npoison / P_COUNT) % 2 == 0) /* another type's prefix */
            snprintf(e.event_type, sizeof e.event_type, "%s.%s",
                     rtypes[(rt + 1 + rng_below(&g->r, RT_COUNT - 1)) % RT_COUNT].name, verb);
        else /* no separator at all */
            snprintf(e.event_type, sizeof e.event_type, "%s_%s", rtypes[rt].name, verb);
        env.event_type = e.event_type;
        break;
    }
    case P_TYPE_TOO_LONG: {
        static const char longverb[] =
            "progress_report_with_extended_metrics_for_every_epoch_and_every_step";
        size_t want = EVENT_TYPE_MAX + 1 + rng_below(&g->r, 20);
        int n = snprintf(e.event_type, sizeof e.event_type, "%s.%s", rtypes[rt].name, longverb);
        if (n > 0 && (size_t)n > want)
            e.event_type[want] = '\0';
        env.event_type = e.event_type;
        break;
    }
    case P_DETAILS_NOT_OBJECT: { /* valid JSON, but an array around the object */
        memmove(e.details + 1, e.details, dlen);
        e.details[0] = '[';
        e.details[dlen + 1] = ']';
        e.details[dlen + 2] = '\0';
        break;
    }
    case P_DETAILS_INVALID_JSON: /* cut short: the closing brace, at least, is gone */
        e.details[dlen - 1 - rng_below(&g->r, 10)] = '\0';
        break;
    case P_UNKNOWN_ACTOR: /* well-formed, but no such identity */
        fresh_uuid(g, e.actor_id);
        break;
    case P_UNDECODABLE:
    case P_COUNT:
        break;
    }
    size_t need = cms__v1__envelope__get_packed_size(&env);
    if (need > cap)
        return 0;
    return cms__v1__envelope__pack(&env, buf);
}

static int gen_init(gen *g, uint64_t seed, bool seeded, size_t nactors)
{
    memset(g, 0, sizeof *g);
    rng_seed(&g->r, seed);
    g->seeded = seeded;
    g->t_us = seeded ? SEEDED_BASE_US : cmsctl_wall_us();
    for (int k = 0; k < K_COUNT; k++)
        g->weight_total += kinds[k].weight;
    g->nactors = nactors;
    g->actors = calloc(nactors, sizeof *g->actors);
    g->actor_text = calloc(nactors, sizeof *g->actor_text);
    if (g->actors == NULL || g->actor_text == NULL)
        return -1;
    /* actors and resources predate the events: ids from a day earlier */
    int64_t t = g->t_us;
    g->t_us -= INT64_C(86400000000);
    for (size_t i = 0; i < nactors; i++) {
        rng_uuid_v7(&g->r, (uint64_t)(g->t_us / 1000) + i, &g->actors[i]);
        cms_uuid_format(&g->actors[i], g->actor_text[i]);
    }
    for (int rt = 0; rt < RT_COUNT; rt++)
        for (size_t i = 0; i < RESOURCE_POOL; i++)
            fresh_uuid(g, g->pool[rt][i]);
    g->t_us = t;
    return 0;
}

static void gen_free(gen *g)
{
    free(g->actors);
    free(g->actor_text);
}

/* ------------------------------------------------------------------------ */
/* seeding the actors */

/* '{id,id,...}' and '{name,name,...}' array literals: ids are hex and
 * dashes, names add a fixed prefix, so no element needs quoting. */
static char *array_literal(const gen *g, const char *prefix)
{
    size_t plen = strlen(prefix);
    size_t cap = 3 + g->nactors * (plen + CMS_UUID_STRLEN + 1);
    char *s = malloc(cap);
    if (s == NULL)
        return NULL;
    size_t o = 0;
    s[o++] = '{';
    for (size_t i = 0; i < g->nactors; i++) {
        if (i > 0)
            s[o++] = ',';
        memcpy(s + o, prefix, plen);
        o += plen;
        memcpy(s + o, g->actor_text[i], CMS_UUID_STRLEN);
        o += CMS_UUID_STRLEN;
    }
    s[o++] = '}';
    s[o] = '\0';
    return s;
}

/* Inserts the actors; *seeded gets how many were new. */
static int seed_actors(const gen *g, const char *conninfo, int64_t timeout_ms, int64_t *seeded)
{
    int status = CMSCTL_EXIT_FAILED;
    PGconn *c = NULL;
    PGresult *r = NULL;
    char *ids = array_literal(g, "");
    char *names = array_literal(g, ACTOR_NAME_PREFIX);
    if (ids == NULL || names == NULL) {
        status = cmsctl_fail(PROG, "out of memory building the actor list");
        goto out;
    }
    if ((status = cmsctl_db_connect(PROG, conninfo, timeout_ms, &c)) != CMSCTL_EXIT_OK)
        goto out;
    const char *params[2] = {ids, names};
    r = PQexecParams(c,
                     "INSERT INTO identities (id, name, type) "
                     "SELECT a.id, a.name, 'machine' FROM unnest($1::uuid[], $2::text[]) "
                     "AS a(id, name) ON CONFLICT DO NOTHING",
                     2, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        status = cmsctl_db_fail(PROG, r, "inserting the actor identities");
        goto out;
    }
    errno = 0;
    char *end = NULL;
    long long n = strtoll(PQcmdTuples(r), &end, 10);
    *seeded = errno == 0 && *end == '\0' ? (int64_t)n : 0;
    status = CMSCTL_EXIT_OK;
out:
    PQclear(r);
    PQfinish(c);
    free(ids);
    free(names);
    return status;
}

static void print_hint(const gen *g, FILE *f)
{
    if (g->nactors > HINT_MAX_ACTORS) {
        fprintf(f,
                "the valid events need their %zu actors in identities: run again with "
                "--seed-actors (and the same --seed)\n",
                g->nactors);
        return;
    }
    fprintf(f,
            "the valid events need their %zu actors in identities: --seed-actors inserts "
            "them, or in SQL:\n",
            g->nactors);
    fprintf(f, "INSERT INTO identities (id, name, type) SELECT id, '" ACTOR_NAME_PREFIX
               "' || id, 'machine' FROM unnest('{");
    for (size_t i = 0; i < g->nactors; i++)
        fprintf(f, "%s%s", i ? "," : "", g->actor_text[i]);
    fprintf(f, "}'::uuid[]) AS id ON CONFLICT DO NOTHING;\n");
}

/* ------------------------------------------------------------------------ */

static const cms_option options[] = {
    {"count", NULL, CMS_OPT_INT, NULL, "number of events to write", false, true},
    {"out", NULL, CMS_OPT_STRING, NULL, "the .pbs file to write (- for stdout)", false, true},
    {"actors", NULL, CMS_OPT_INT, "100", "size of the pool of actor identities", false, false},
    {"bad-fraction", NULL, CMS_OPT_STRING, "0",
     "share of poison entries, 0 to 1, cycling through every kind", false, false},
    {"seed", NULL, CMS_OPT_INT, NULL,
     "PRNG seed: the same seed and arguments give the same bytes (default: random)", false, false},
    {"seed-actors", NULL, CMS_OPT_BOOL, "false",
     "insert the actor identities into the database (ON CONFLICT DO NOTHING)", false, false},
    {"database-url", "CMS_DATABASE_URL", CMS_OPT_STRING, "host=127.0.0.1 dbname=cms",
     "libpq connection string or URI, for --seed-actors", CMS_OPT_PASSWORD, false},
    {"timeout", NULL, CMS_OPT_DURATION, "10s", "longest database connect or statement (1ms to 24d)",
     CMS_OPT_PUBLIC, false},
    CMSCTL_OUT_OPTIONS,
};

static const char usage_tail[] =
    "\n\n"
    "Writes synthetic cms.v1.Envelope events as a .pbs stream (varint-delimited protobuf),\n"
    "then a summary: total, valid, and poison entries per kind (undecodable,\n"
    "invalid_event_id, invalid_resource_id, invalid_actor_id, invalid_event_type,\n"
    "invalid_details, unknown_actor); with -o json or ndjson the summary is one object.\n"
    "The summary goes to stdout, or to stderr when the events do (--out -).\n"
    "Exit status: 0 done, 1 failed, 2 usage error.";

static bool parse_fraction(const char *s, double *out)
{
    char *end = NULL;
    double v = strtod(s, &end);
    if (end == s || *end != '\0' || !(v >= 0.0 && v <= 1.0))
        return false;
    *out = v;
    return true;
}

int cmsctl_gen_main(int argc, char **argv)
{
    int status = CMSCTL_EXIT_FAILED;
    cms_config *cfg = NULL;
    FILE *out = NULL;
    bool to_stdout = false;
    gen *g = NULL;
    int64_t count = 0, nactors = 0, timeout_ms = 0;
    double fraction = 0;
    cmsctl_out_format fmt = CMSCTL_OUT_TABLE;
    int rc = cmsctl_parse(options, sizeof options / sizeof options[0], argc, argv, PROG,
                          "write synthetic events to a .pbs file", usage_tail, &cfg);
    if (rc != CMSCTL_EXIT_OK)
        return rc == CMSCTL_PARSE_DONE ? CMSCTL_EXIT_OK : rc;
    if (cms_config_npositional(cfg) > 0) {
        status = cmsctl_usage(PROG, "unexpected argument \"%s\"", cms_config_positional(cfg, 0));
        goto out;
    }
    if ((status = cmsctl_out_format_get(PROG, cfg, &fmt)) != CMSCTL_EXIT_OK)
        goto out;
    status = CMSCTL_EXIT_FAILED;
    if (!cmsctl_int_arg(PROG, cfg, "count", 0, MAX_COUNT, &count) ||
        !cmsctl_int_arg(PROG, cfg, "actors", 1, MAX_ACTORS, &nactors) ||
        !cmsctl_duration_arg(PROG, cfg, "timeout", 1, CMSCTL_TIMEOUT_MAX_MS, &timeout_ms)) {
        status = CMSCTL_EXIT_USAGE;
        goto out;
    }
    if (!parse_fraction(cms_config_str(cfg, "bad-fraction"), &fraction)) {
        status = cmsctl_usage(PROG, "--bad-fraction \"%s\" is not a number from 0 to 1 (like 0.05)",
                              cms_config_str(cfg, "bad-fraction"));
        goto out;
    }
    bool seeded = cms_config_is_set(cfg, "seed");
    uint64_t seed = (uint64_t)cms_config_int(cfg, "seed");
    if (!seeded) {
        if (sodium_init() < 0) {
            status = cmsctl_fail(PROG, "libsodium failed to initialise");
            goto out;
        }
        randombytes_buf(&seed, sizeof seed);
    }
    g = malloc(sizeof *g);
    if (g == NULL || gen_init(g, seed, seeded, (size_t)nactors) != 0) {
        status = cmsctl_fail(PROG, "out of memory for %lld actors", (long long)nactors);
        goto out;
    }

    const char *path = cms_config_str(cfg, "out");
    to_stdout = strcmp(path, "-") == 0;
    out = to_stdout ? stdout : fopen(path, "wb");
    if (out == NULL) {
        status = cmsctl_fail(PROG, "cannot create %s: %s", path, strerror(errno));
        goto out;
    }
    static char obuf[1 << 20];
    setvbuf(out, obuf, _IOFBF, sizeof obuf);
    FILE *sum = to_stdout ? stderr : stdout; /* the summary never mixes with the data */

    bool progress_tty = isatty(STDERR_FILENO);
    bool progressed = false;
    uint64_t start = cmsctl_mono_us(), last_progress = start;
    uint64_t bytes = 0;
    uint8_t buf[4096];
    for (int64_t i = 0; i < count; i++) {
        /* poison at evenly spread entries: floor(count * fraction) in all */
        bool bad = fraction > 0 &&
                   (uint64_t)((double)(i + 1) * fraction) > (uint64_t)((double)i * fraction);
        poison p = P_COUNT;
        if (bad)
            p = (poison)(g->npoison % P_COUNT);
        size_t n = make_entry(g, p, buf, sizeof buf);
        if (bad) {
            g->counts[report_of(p)]++;
            g->npoison++;
        } else {
            g->valid++;
        }
        uint8_t hdr[CMS_PBS_VARINT_MAX];
        bytes += cms_pbs_varint_encode(n, hdr) + n;
        if (cms_pbs_write(out, buf, n) != CMS_PBS_OK) {
            status = cmsctl_fail(PROG, "writing %s: %s", path, strerror(errno));
            goto out;
        }
        if ((i & (PROGRESS_EVERY - 1)) == PROGRESS_EVERY - 1) {
            uint64_t now = cmsctl_mono_us();
            if (now - last_progress >= 1000000) {
                last_progress = now;
                fprintf(stderr, "%sgen: %lld/%lld events (%.0f%%)%s", progress_tty ? "\r" : "",
                        (long long)(i + 1), (long long)count,
                        100.0 * (double)(i + 1) / (double)count, progress_tty ? "" : "\n");
                progressed = true;
            }
        }
    }
    if (progressed && progress_tty)
        fputc('\n', stderr);
    if (fflush(out) != 0 || (!to_stdout && fclose(out) != 0)) {
        out = NULL;
        status = cmsctl_fail(PROG, "writing %s: %s", path, strerror(errno));
        goto out;
    }
    if (!to_stdout)
        out = NULL;
    double secs = (double)(cmsctl_mono_us() - start) / 1e6;

    int64_t new_actors = -1; /* -1: --seed-actors not given */
    if (cms_config_bool(cfg, "seed-actors"))
        status = seed_actors(g, cms_config_str(cfg, "database-url"), timeout_ms, &new_actors);
    else
        status = CMSCTL_EXIT_OK;
    if (fmt == CMSCTL_OUT_TABLE) {
        fprintf(sum, "wrote %lld events to %s (%llu bytes) in %.3f s (%.0f events/s)\n",
                (long long)count, path, (unsigned long long)bytes, secs,
                secs > 0 ? (double)count / secs : 0.0);
        fprintf(sum, "total: %lld\n", (long long)count);
        fprintf(sum, "valid: %llu\n", (unsigned long long)g->valid);
        for (int r = 0; r < R_COUNT; r++)
            fprintf(sum, "%s: %llu\n", report_name((report)r), (unsigned long long)g->counts[r]);
        fprintf(sum, "actors: %zu\n", g->nactors);
        if (seeded)
            fprintf(sum, "seed: %" PRIu64 "\n", seed);
        if (new_actors >= 0)
            fprintf(sum, "seeded: %lld new of %zu actors (the others existed)\n",
                    (long long)new_actors, g->nactors);
    } else {
        json_t *o = json_object();
        if (o != NULL) {
            json_object_set_new(o, "out", cmsctl_out_str(path));
            json_object_set_new(o, "bytes", json_integer((json_int_t)bytes));
            json_object_set_new(o, "elapsed_seconds", json_real(secs));
            json_object_set_new(o, "total", json_integer(count));
            json_object_set_new(o, "valid", json_integer((json_int_t)g->valid));
            for (int r = 0; r < R_COUNT; r++)
                json_object_set_new(o, report_name((report)r),
                                    json_integer((json_int_t)g->counts[r]));
            json_object_set_new(o, "actors", json_integer((json_int_t)g->nactors));
            json_object_set_new(o, "seed", seeded ? json_integer((json_int_t)seed) : json_null());
            json_object_set_new(o, "seeded_actors",
                                new_actors >= 0 ? json_integer(new_actors) : json_null());
        }
        int erc = cmsctl_out_emit_to(PROG, fmt, sum, o, NULL);
        if (status == CMSCTL_EXIT_OK)
            status = erc;
    }
    /* the SQL that --seed-actors would run: advice, so on stderr beside JSON */
    if (new_actors < 0)
        print_hint(g, fmt == CMSCTL_OUT_TABLE ? sum : stderr);
out:
    if (out != NULL && !to_stdout)
        fclose(out);
    if (g != NULL)
        gen_free(g);
    free(g);
    cms_config_destroy(cfg);
    return status;
}
