/* cms-audit and events as large as the server takes: an event of
 * max_payload - 16 bytes (no headers, so it fits the stream) can never be
 * dead-lettered whole, since the dead letter adds headers; it is stored in
 * CMS_DLQ as a record of the original instead, acked, and never holds up
 * the events around it. (When the dead letter was the original plus
 * headers, its publish was refused as too large and retried forever: the
 * event stayed unacknowledged and the consumer never drained.) */
#include "audit_fixture.h"
#include "bus.h"
#include "cms/v1/envelope.pb-c.h"
#include "uuid.h"

#include <criterion/criterion.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static audfx fx;
static audfx_event *evs;
static size_t nevs;

static void fini(void)
{
    audfx_teardown(&fx);
    audfx_events_free(evs, nevs);
    evs = NULL;
    nevs = 0;
}

TestSuite(audit_oversized, .fini = fini);

/* What is kept of an oversized original to recognise its record. */
typedef struct big {
    const char *reason;
    size_t len;
    char sha256[65];
    uint8_t head[1024];
    int found;
} big;

static void remember(big *b, const char *reason, const uint8_t *data, size_t len)
{
    unsigned char sha[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(sha, data, len);
    sodium_bin2hex(b->sha256, sizeof b->sha256, sha, sizeof sha);
    b->reason = reason;
    b->len = len;
    memcpy(b->head, data, sizeof b->head);
}

/* Bytes no decoder takes (a field of wire type 7 first), then random ones. */
static uint8_t *junk(size_t len)
{
    uint8_t *d = malloc(len);
    cr_assert_not_null(d);
    randombytes_buf(d, len);
    d[0] = 0x0f;
    d[1] = 0x00;
    return d;
}

/* A valid event whose details_json (a JSON object) pads it to exactly len
 * bytes: refused for its details, which are far beyond what is stored. */
static uint8_t *padded(const audfx_event *base, size_t len)
{
    audfx_event e = *base;
    cms_uuid u;
    cms_uuid_v7(&u);
    cms_uuid_format(&u, e.id);
    size_t pad = len - 256; /* a first guess: the rest of the envelope is smaller */
    char *details = NULL;
    uint8_t *out = NULL;
    size_t got = 0;
    for (int tries = 0; tries < 4; tries++) {
        free(details);
        details = malloc(pad + 1);
        cr_assert_not_null(details);
        memset(details, 'x', pad);
        memcpy(details, "{\"pad\": \"", 9);
        memcpy(details + pad - 2, "\"}", 2);
        details[pad] = '\0';
        e.details = details;
        free(out);
        out = audfx_pack(&e, &got);
        if (got == len)
            break;
        pad = pad + len - got; /* the length's varint is the same size either way */
    }
    free(details);
    cr_assert_eq(got, len, "an envelope of exactly %zu bytes (got %zu)", len, got);
    return out;
}

Test(audit_oversized, events_too_large_to_dead_letter_whole_never_stall_the_consumer,
     .timeout = 300)
{
    enum { V = 1200, B = 100, K = 8 };
    cr_assert_geq(sodium_init(), 0);
    audfx_setup(&fx, "aud_big", K);
    int64_t max = natsConnection_GetMaxPayload(fx.nc);
    cr_assert_gt(max, 64 * 1024, "the server's max payload: %lld", (long long)max);
    size_t len = (size_t)max - 16;
    evs = audfx_events(&fx, nevs = V);
    big *bigs = calloc(B, sizeof *bigs);
    cr_assert_not_null(bigs);
    char big_subject[128];
    snprintf(big_subject, sizeof big_subject, "cms.events.%s.big", fx.prefix);

    char durable[48];
    snprintf(durable, sizeof durable, "%s", fx.prefix);
    int port;
    pid_t pid = audfx_start(&fx, durable, &port, NULL);
    cr_assert(audfx_wait_readyz(port, 200, 30000), "cms-audit became ready");

    /* one oversized event after every 12 valid ones, half of them junk and
     * half valid envelopes padded to the size; no Nats-Msg-Id on them, which
     * would not fit either */
    size_t nb = 0;
    for (size_t i = 0; i < V; i++) {
        audfx_publish_event(&fx, &evs[i], NULL);
        if (i % (V / B) == V / B - 1 && nb < B) {
            bool is_junk = nb % 2 == 0;
            uint8_t *data = is_junk ? junk(len) : padded(&evs[i], len);
            remember(&bigs[nb++], is_junk ? "undecodable" : "invalid_details", data, len);
            audfx_publish(&fx, big_subject, NULL, NULL, data, len);
            free(data);
            if (nb % 10 == 0)
                audfx_publish_wait(&fx); /* bounded memory on this side */
        }
    }
    audfx_publish_wait(&fx);
    cr_assert_eq(nb, B);

    /* every valid event stored, and nothing left pending or unacknowledged */
    audfx_wait_stored(&fx, durable, V, pid, 180000, 0);
    cr_assert_eq(audfx_durable_pending(&fx, durable), 0, "nothing held unacknowledged");
    char report[2048];
    long diffs = audfx_check_rows(&fx, evs, V, report, sizeof report);
    cr_assert_eq(diffs, 0, "%ld rows differ from the events: %s", diffs, report);
    cr_expect_eq(audfx_metric(port, "cms_audit_dead_letters_total{reason=\"undecodable\"}"), B / 2);
    cr_expect_eq(audfx_metric(port, "cms_audit_dead_letters_total{reason=\"invalid_details\"}"),
                 B / 2);
    cr_expect_eq(audfx_dead_total(port), B, "only the oversized events were dead-lettered");

    /* each oversized event is one record in CMS_DLQ: reason, subject, size,
     * the hash of its bytes and its first bytes */
    audfx_dead *dead = NULL;
    size_t ndead = audfx_read_dlq(&fx, &dead);
    char want_size[24];
    snprintf(want_size, sizeof want_size, "%zu", len);
    for (size_t d = 0; d < ndead; d++) {
        /* whole dead letters are not judged here: another process consuming
         * all of cms.events.> would dead-letter this test's valid events (its
         * database lacks their actors); the metrics above judge this one */
        if (dead[d].sha256[0] == '\0')
            continue;
        big *b = NULL;
        for (size_t i = 0; i < B && b == NULL; i++)
            if (strcmp(bigs[i].sha256, dead[d].sha256) == 0)
                b = &bigs[i];
        cr_assert_not_null(b, "a record of this test that is no oversized event's: %s %s",
                           dead[d].subject, dead[d].reason);
        b->found++;
        cr_expect_str_eq(dead[d].reason, b->reason);
        cr_expect_str_eq(dead[d].subject, big_subject);
        cr_expect_str_eq(dead[d].size, want_size);
        cr_expect_str_eq(dead[d].truncated, "true");
        cr_expect_neq(dead[d].stream_seq[0], '\0', "the original's stream sequence");
        cr_expect(dead[d].len == CMS_BUS_DLQ_RECORD_BYTES &&
                      memcmp(dead[d].data, b->head, CMS_BUS_DLQ_RECORD_BYTES) == 0,
                  "the record's body is the first %d bytes (%zu)", CMS_BUS_DLQ_RECORD_BYTES,
                  dead[d].len);
    }
    for (size_t i = 0; i < B; i++)
        cr_expect_eq(bigs[i].found, 1, "oversized event %zu (%s) recorded once, not %d", i,
                     bigs[i].reason, bigs[i].found);
    audfx_dead_free(dead, ndead);
    free(bigs);

    cr_assert(audfx_alive(pid), "the same process took all of it");
    double took;
    cr_assert_eq(audfx_stop(&fx, pid, &took), 0, "SIGTERM: drained, exit 0");
    cr_expect_lt(took, 15000, "drained in %.0f ms", took);
}
