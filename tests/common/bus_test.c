/* bus: the system's wire conventions. Without a server: the subjects and
 * their limits, what a token, an event type and a valid envelope are (every
 * reason an envelope is refused), decoding into a bounded arena, building
 * events (ids unique and in time order, what is refused), the streams and
 * the system actor. Against the real nats-server (CMS_TEST_NATS_URL): dead
 * letters, kept whole when they fit, and a record of the original when they
 * do not.
 *
 * The server tests run one loop with a watchdog (tests/lib/natsfx.h);
 * streams, durables and dead-letter subjects carry the pid, so other test
 * binaries on the same server are not disturbed. A blocking nats.c
 * connection ("side") prepares and reads server state outside the loop. */
#include "bus.h"
#include "nats.h"
#include "natsfx.h"
#include "pbarena.h"
#include "testenv.h"
#include "uuid.h"

#include <criterion/criterion.h>
#include <nats/nats.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NS_PER_MS INT64_C(1000000)
#define DAY_MS (INT64_C(24) * 3600 * 1000)
#define US_2000 INT64_C(946684800000000)  /* 2000-01-01T00:00:00Z */
#define US_2100 INT64_C(4102444800000000) /* 2100-01-01T00:00:00Z */

#define S(lit) ((char *)(lit)) /* generated structs hold char *, literals are const */

/* ------------------------------------------------------------------------ */
/* subjects */

Test(bus, command_subjects_and_their_limit)
{
    char buf[CMS_BUS_SUBJECT_MAX];
    cr_assert_eq(cms_bus_command_subject(buf, sizeof buf, NULL, "identity", "create"), CMS_BUS_OK);
    cr_assert_str_eq(buf, "cms.cmd.identity.create");
    cr_assert_eq(cms_bus_command_subject(buf, sizeof buf, "", "identity", "create"), CMS_BUS_OK);
    cr_assert_str_eq(buf, "cms.cmd.identity.create", "an empty prefix is the default");
    cr_assert_eq(cms_bus_command_subject(buf, sizeof buf, "t1.cmd", "audit", "query"), CMS_BUS_OK);
    cr_assert_str_eq(buf, "t1.cmd.audit.query");

    /* "p.s.v" takes 6 bytes with its NUL: 6 fits, 5 does not */
    char small[6];
    cr_assert_eq(cms_bus_command_subject(small, 6, "p", "s", "v"), CMS_BUS_OK);
    cr_assert_str_eq(small, "p.s.v");
    cr_assert_eq(cms_bus_command_subject(small, 5, "p", "s", "v"), CMS_BUS_ETOOLONG);
    char verb[CMS_BUS_SUBJECT_MAX];
    memset(verb, 'v', sizeof verb - 1);
    verb[sizeof verb - 1] = '\0';
    cr_assert_eq(cms_bus_command_subject(buf, sizeof buf, NULL, "identity", verb),
                 CMS_BUS_ETOOLONG);

    cr_assert_eq(cms_bus_command_subject(NULL, 8, NULL, "s", "v"), CMS_BUS_EINVAL);
    cr_assert_eq(cms_bus_command_subject(buf, sizeof buf, NULL, NULL, "v"), CMS_BUS_EINVAL);
    cr_assert_eq(cms_bus_command_subject(buf, sizeof buf, NULL, "s", NULL), CMS_BUS_EINVAL);
}

Test(bus, event_and_dead_letter_subjects_and_their_limits)
{
    char buf[CMS_BUS_SUBJECT_MAX];
    cr_assert_eq(cms_bus_event_subject(buf, sizeof buf, "credential.issued"), CMS_BUS_OK);
    cr_assert_str_eq(buf, "cms.events.credential.issued");
    cr_assert_eq(strncmp(buf, CMS_BUS_EVENT_PREFIX, strlen(CMS_BUS_EVENT_PREFIX)), 0);
    char exact[sizeof "cms.events.a.b"];
    cr_assert_eq(cms_bus_event_subject(exact, sizeof exact, "a.b"), CMS_BUS_OK);
    cr_assert_eq(cms_bus_event_subject(exact, sizeof exact - 1, "a.b"), CMS_BUS_ETOOLONG);
    cr_assert_eq(cms_bus_event_subject(NULL, 8, "a.b"), CMS_BUS_EINVAL);
    cr_assert_eq(cms_bus_event_subject(buf, sizeof buf, NULL), CMS_BUS_EINVAL);

    cr_assert_eq(cms_bus_dlq_subject(buf, sizeof buf, "audit"), CMS_BUS_OK);
    cr_assert_str_eq(buf, "cms.dlq.audit");
    char dexact[sizeof "cms.dlq.audit"];
    cr_assert_eq(cms_bus_dlq_subject(dexact, sizeof dexact, "audit"), CMS_BUS_OK);
    cr_assert_eq(cms_bus_dlq_subject(dexact, sizeof dexact - 1, "audit"), CMS_BUS_ETOOLONG);
    cr_assert_eq(cms_bus_dlq_subject(buf, sizeof buf, ""), CMS_BUS_EINVAL, "no service");
    cr_assert_eq(cms_bus_dlq_subject(buf, sizeof buf, NULL), CMS_BUS_EINVAL);
    cr_assert_eq(cms_bus_dlq_subject(NULL, 8, "audit"), CMS_BUS_EINVAL);
}

Test(bus, the_contract_with_cms_identity)
{
    size_t n = 0;
    while (cms_bus_auth_event_types[n])
        n++;
    cr_assert_eq(n, 3);
    const char *want[] = {"identity.status_changed", "credential.revoked", "credential.expired"};
    for (size_t i = 0; i < n; i++) {
        cr_assert_str_eq(cms_bus_auth_event_types[i], want[i]);
        /* each invalidating event is on one of the subjects subscribed to */
        char subject[CMS_BUS_SUBJECT_MAX];
        cr_assert_eq(cms_bus_event_subject(subject, sizeof subject, want[i]), CMS_BUS_OK);
        bool covered = false;
        for (size_t s = 0; cms_bus_auth_event_subjects[s]; s++) {
            const char *f = cms_bus_auth_event_subjects[s];
            size_t fl = strlen(f);
            cr_assert(fl > 2 && strcmp(f + fl - 2, ".>") == 0, "%s is a wildcard filter", f);
            covered |= strncmp(subject, f, fl - 1) == 0;
        }
        cr_assert(covered, "%s is covered by the subjects", subject);
    }
}

/* ------------------------------------------------------------------------ */
/* tokens and event types */

Test(bus, a_token_is_1_to_50_letters_digits_underscores_or_dashes)
{
    cr_assert(cms_bus_valid_token("identity", 8));
    cr_assert(cms_bus_valid_token("A-z_0-9", 7));
    cr_assert(cms_bus_valid_token("x", 1));
    char fifty[51];
    memset(fifty, 'a', 50);
    fifty[50] = '\0';
    cr_assert(cms_bus_valid_token(fifty, 50));
    char fiftyone[52];
    memset(fiftyone, 'a', 51);
    fiftyone[51] = '\0';
    cr_assert_not(cms_bus_valid_token(fiftyone, 51));
    cr_assert_not(cms_bus_valid_token("", 0));
    cr_assert_not(cms_bus_valid_token(NULL, 3));
    /* what a subject token must not hold */
    const char *bad[] = {"a.b", "a b", "a*", ">", "a\tb", "caf\xc3\xa9", "a/b", "a\\b"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_assert_not(cms_bus_valid_token(bad[i], strlen(bad[i])), "\"%s\" refused", bad[i]);
    /* the length is n, not the string's: a token may be part of a longer text */
    cr_assert(cms_bus_valid_token("identity.created", 8));
    cr_assert_not(cms_bus_valid_token("id\0x", 4), "a NUL within n is not a token character");
}

Test(bus, an_event_type_is_its_resource_type_a_dot_and_a_verb)
{
    cr_assert(cms_bus_valid_event_type("identity.created", "identity"));
    cr_assert(cms_bus_valid_event_type("training_job.step-2", "training_job"));
    cr_assert_not(cms_bus_valid_event_type("credential.issued", "identity"), "another type's");
    cr_assert_not(cms_bus_valid_event_type("identityx.created", "identity"), "a longer prefix");
    cr_assert_not(cms_bus_valid_event_type("identity.", "identity"), "no verb");
    cr_assert_not(cms_bus_valid_event_type("identity", "identity"), "no dot");
    cr_assert_not(cms_bus_valid_event_type("identity.a.b", "identity"), "a verb of two tokens");
    cr_assert_not(cms_bus_valid_event_type("identity.bad verb", "identity"));
    cr_assert_not(cms_bus_valid_event_type("bad type.x", "bad type"), "a bad resource type");
    cr_assert_not(cms_bus_valid_event_type(".x", ""), "an empty resource type");
    cr_assert_not(cms_bus_valid_event_type(NULL, "identity"));
    cr_assert_not(cms_bus_valid_event_type("identity.created", NULL));
    /* 50 characters in all, and no more */
    char t[64];
    snprintf(t, sizeof t, "r.%s", "vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv"); /* 2 + 48 */
    cr_assert_eq(strlen(t), 50);
    cr_assert(cms_bus_valid_event_type(t, "r"));
    snprintf(t, sizeof t, "r.%s", "vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv"); /* 2 + 49 */
    cr_assert_eq(strlen(t), 51);
    cr_assert_not(cms_bus_valid_event_type(t, "r"));
}

/* ------------------------------------------------------------------------ */
/* envelopes */

#define RID "0190f0a1-b2c3-7d4e-8f9a-0b1c2d3e4f50"
#define AID "0190f0a1-b2c3-7d4e-8f9a-0b1c2d3e4f51"
#define EID "0190f0a1-b2c3-7d4e-8f9a-0b1c2d3e4f52"

static Cms__V1__Envelope valid_envelope(void)
{
    Cms__V1__Envelope e = CMS__V1__ENVELOPE__INIT;
    e.event_id = S(EID);
    e.event_type = S("contract.signed");
    e.resource_type = S("contract");
    e.resource_id = S(RID);
    e.actor_id = S(AID);
    e.occurred_at_us = INT64_C(1718000000000000);
    e.source = S("contracts");
    return e;
}

Test(bus, every_reason_an_envelope_is_refused)
{
    Cms__V1__Envelope e = valid_envelope();
    cr_assert_eq(cms_bus_envelope_check(&e), CMS_BUS_VALID);
    cr_assert_eq(cms_bus_envelope_check(NULL), CMS_BUS_UNDECODABLE);

    static const char *const bad_uuids[] = {"", "not-a-uuid", "0190f0a1-b2c3-7d4e-8f9a-0b1c2d3e4f5",
                                            "{0190f0a1-b2c3-7d4e-8f9a-0b1c2d3e4f50}",
                                            "0190f0a1b2c37d4e8f9a0b1c2d3e4f50"};
    for (size_t i = 0; i < sizeof bad_uuids / sizeof bad_uuids[0]; i++) {
        e = valid_envelope();
        e.event_id = (char *)bad_uuids[i];
        cr_assert_eq(cms_bus_envelope_check(&e), CMS_BUS_BAD_EVENT_ID, "event_id %s", bad_uuids[i]);
        e = valid_envelope();
        e.resource_id = (char *)bad_uuids[i];
        cr_assert_eq(cms_bus_envelope_check(&e), CMS_BUS_BAD_RESOURCE_ID, "resource_id %s",
                     bad_uuids[i]);
        e = valid_envelope();
        e.actor_id = (char *)bad_uuids[i];
        cr_assert_eq(cms_bus_envelope_check(&e), CMS_BUS_BAD_ACTOR_ID, "actor_id %s", bad_uuids[i]);
    }
    e = valid_envelope();
    e.event_id = S("0190F0A1-B2C3-7D4E-8F9A-0B1C2D3E4F52");
    cr_assert_eq(cms_bus_envelope_check(&e), CMS_BUS_VALID, "upper case is a UUID too");

    e = valid_envelope();
    e.resource_type = S("bad type");
    e.event_type = S("bad type.signed");
    cr_assert_eq(cms_bus_envelope_check(&e), CMS_BUS_BAD_RESOURCE_TYPE);
    e.resource_type = S("");
    e.event_type = S(".signed");
    cr_assert_eq(cms_bus_envelope_check(&e), CMS_BUS_BAD_RESOURCE_TYPE);

    static const char *const bad_types[] = {"other.signed", "contract.", "contract.a.b",
                                            "contractx.signed", "contract signed"};
    for (size_t i = 0; i < sizeof bad_types / sizeof bad_types[0]; i++) {
        e = valid_envelope();
        e.event_type = (char *)bad_types[i];
        cr_assert_eq(cms_bus_envelope_check(&e), CMS_BUS_BAD_EVENT_TYPE, "%s", bad_types[i]);
    }

    /* occurred_at_us within [2000-01-01, 2100-01-01) */
    int64_t at[] = {0, -1, US_2000 - 1, US_2100, INT64_MAX};
    for (size_t i = 0; i < sizeof at / sizeof at[0]; i++) {
        e = valid_envelope();
        e.occurred_at_us = at[i];
        cr_assert_eq(cms_bus_envelope_check(&e), CMS_BUS_BAD_OCCURRED_AT, "at %lld",
                     (long long)at[i]);
    }
    e = valid_envelope();
    e.occurred_at_us = US_2000;
    cr_assert_eq(cms_bus_envelope_check(&e), CMS_BUS_VALID);
    e.occurred_at_us = US_2100 - 1;
    cr_assert_eq(cms_bus_envelope_check(&e), CMS_BUS_VALID);

    /* correlation, source and details are free */
    e = valid_envelope();
    e.source = S("");
    e.correlation_id = S("anything at all");
    e.details_json = S("not even json");
    cr_assert_eq(cms_bus_envelope_check(&e), CMS_BUS_VALID);
}

Test(bus, reason_and_error_names)
{
    const char *want[] = {"ok",
                          "undecodable",
                          "invalid_event_id",
                          "invalid_resource_id",
                          "invalid_actor_id",
                          "invalid_event_type",
                          "invalid_resource_type",
                          "invalid_occurred_at"};
    cr_assert_eq(CMS_BUS_NREASONS, sizeof want / sizeof want[0]);
    for (int r = 0; r < CMS_BUS_NREASONS; r++)
        cr_assert_str_eq(cms_bus_reason_name((cms_bus_reason)r), want[r]);
    for (int e = 0; e < CMS_BUS_NERRORS; e++) {
        const char *s = cms_bus_strerror((cms_bus_err)e);
        cr_assert(s && *s, "error %d has a text", e);
    }
    cr_assert_str_eq(cms_bus_strerror(CMS_BUS_OK), "ok");
}

static uint8_t *pack(const Cms__V1__Envelope *e, size_t *len)
{
    *len = cms__v1__envelope__get_packed_size(e);
    uint8_t *buf = malloc(*len ? *len : 1);
    cr_assert_not_null(buf);
    cms__v1__envelope__pack(e, buf);
    return buf;
}

Test(bus, decoding_into_the_arena)
{
    cms_pbarena *arena = NULL;
    cr_assert_eq(cms_pbarena_create(1024, 4096, &arena), 0);
    Cms__V1__Envelope e = valid_envelope();
    e.correlation_id = S("corr-1");
    size_t len;
    uint8_t *buf = pack(&e, &len);
    Cms__V1__Envelope *out = NULL;
    cr_assert_eq(cms_bus_envelope_decode(buf, len, arena, &out), CMS_BUS_VALID);
    cr_assert_not_null(out);
    cr_assert_str_eq(out->event_id, EID);
    cr_assert_str_eq(out->event_type, "contract.signed");
    cr_assert_str_eq(out->resource_id, RID);
    cr_assert_str_eq(out->actor_id, AID);
    cr_assert_str_eq(out->correlation_id, "corr-1");
    cr_assert_eq(out->occurred_at_us, e.occurred_at_us);
    cr_assert_gt(cms_pbarena_used(arena), 0, "decoded into the arena");
    free(buf);

    /* every decode starts from an empty arena */
    size_t used = cms_pbarena_used(arena);
    buf = pack(&e, &len);
    cr_assert_eq(cms_bus_envelope_decode(buf, len, arena, &out), CMS_BUS_VALID);
    cr_assert_eq(cms_pbarena_used(arena), used, "reset, not grown");
    free(buf);

    /* refused: *out untouched */
    Cms__V1__Envelope *sentinel = (Cms__V1__Envelope *)&e;
    out = sentinel;
    static const uint8_t junk[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    cr_assert_eq(cms_bus_envelope_decode(junk, sizeof junk, arena, &out), CMS_BUS_UNDECODABLE);
    cr_assert_eq(out, sentinel);
    Cms__V1__Envelope bad = valid_envelope();
    bad.actor_id = S("nobody");
    buf = pack(&bad, &len);
    cr_assert_eq(cms_bus_envelope_decode(buf, len, arena, &out), CMS_BUS_BAD_ACTOR_ID);
    cr_assert_eq(out, sentinel);
    free(buf);
    cr_assert_eq(cms_bus_envelope_decode(NULL, 0, arena, &out), CMS_BUS_BAD_EVENT_ID,
                 "no bytes are an envelope with every field empty");
    cr_assert_eq(out, sentinel);

    /* more than the arena holds is undecodable, however valid */
    char *big = malloc(8001);
    cr_assert_not_null(big);
    memset(big, 'x', 8000);
    big[8000] = '\0';
    Cms__V1__Envelope large = valid_envelope();
    large.details_json = big;
    buf = pack(&large, &len);
    cr_assert_eq(cms_bus_envelope_decode(buf, len, arena, &out), CMS_BUS_UNDECODABLE);
    cr_assert_eq(out, sentinel);
    cr_assert_leq(cms_pbarena_used(arena), 4096);
    free(buf);
    free(big);
    cms_pbarena_destroy(arena);
}

/* ------------------------------------------------------------------------ */
/* building events */

static cms_bus_event_header header(void)
{
    return (cms_bus_event_header){.event_type = "contract.signed",
                                  .resource_type = "contract",
                                  .resource_id = RID,
                                  .actor_id = AID,
                                  .correlation_id = "corr-9",
                                  .source = "contracts"};
}

/* A string with a NUL would reach a consumer cut short (details_json "{}"
 * of "{}\0..."): undecodable. Invalid UTF-8 is each field's checks'. */
Test(bus, a_nul_in_any_string_is_undecodable)
{
    cms_pbarena *arena = NULL;
    cr_assert_eq(cms_pbarena_create(1024, 4096, &arena), 0);
    static const char *const texts[] = {"{}\0{\"hidden\":1}", "\0", "{\"k\":\"a\0b\"}"};
    static const size_t lens[] = {15, 1, 11};
    for (size_t i = 0; i < 3; i++)
        for (int where = 0; where < 2; where++) {
            Cms__V1__Envelope e = valid_envelope();
            size_t len;
            uint8_t *buf = pack(&e, &len);
            /* appended: field 9 (details_json) or 7 (correlation_id) */
            uint8_t *b = malloc(len + 4 + lens[i]);
            cr_assert_not_null(b);
            memcpy(b, buf, len);
            b[len] = where ? 0x4a : 0x3a;
            b[len + 1] = (uint8_t)lens[i];
            memcpy(b + len + 2, texts[i], lens[i]);
            Cms__V1__Envelope *out = NULL;
            cr_assert_eq(cms_bus_envelope_decode(b, len + 2 + lens[i], arena, &out),
                         CMS_BUS_UNDECODABLE, "text %zu in field %d", i, where ? 9 : 7);
            cr_assert_null(out);
            /* the same envelope with clean text decodes */
            b[len + 1] = 2;
            memcpy(b + len + 2, "{}", 2);
            cr_assert_eq(cms_bus_envelope_decode(b, len + 4, arena, &out), CMS_BUS_VALID);
            free(b);
            free(buf);
        }
    cms_pbarena_destroy(arena);
}

Test(bus, a_built_event_decodes_to_its_header_and_body)
{
    Cms__V1__Envelope env = CMS__V1__ENVELOPE__INIT;
    Cms__V1__CredentialRevoked body = CMS__V1__CREDENTIAL_REVOKED__INIT;
    body.credential_id = S(RID);
    body.identity_id = S(AID);
    body.reason = S("leaked");
    env.body_case = CMS__V1__ENVELOPE__BODY_CREDENTIAL_REVOKED;
    env.credential_revoked = &body;
    cms_bus_event_header h = header();
    h.event_type = "credential.revoked";
    h.resource_type = "credential";
    cms_bus_event ev = {0};
    int64_t before = cms_bus_now_us();
    cr_assert_eq(cms_bus_event_build(&env, &h, &ev), CMS_BUS_OK);
    int64_t after = cms_bus_now_us();
    cr_assert_str_eq(ev.subject, "cms.events.credential.revoked");
    cr_assert_not_null(ev.buf);
    /* the envelope no longer points at the header's strings */
    cr_assert_str_eq(env.event_id, "");
    cr_assert_str_eq(env.event_type, "");
    cr_assert_str_eq(env.source, "");

    Cms__V1__Envelope *d = cms__v1__envelope__unpack(NULL, ev.len, ev.buf);
    cr_assert_not_null(d);
    cr_assert_eq(cms_bus_envelope_check(d), CMS_BUS_VALID);
    cr_assert_str_eq(d->event_id, ev.id);
    cr_assert_str_eq(d->event_type, "credential.revoked");
    cr_assert_str_eq(d->resource_type, "credential");
    cr_assert_str_eq(d->resource_id, RID);
    cr_assert_str_eq(d->actor_id, AID);
    cr_assert_str_eq(d->correlation_id, "corr-9");
    cr_assert_str_eq(d->source, "contracts");
    cr_assert(d->occurred_at_us >= before && d->occurred_at_us <= after,
              "0 means now: %lld not in %lld..%lld", (long long)d->occurred_at_us,
              (long long)before, (long long)after);
    cr_assert_eq(d->body_case, CMS__V1__ENVELOPE__BODY_CREDENTIAL_REVOKED);
    cr_assert_str_eq(d->credential_revoked->reason, "leaked");
    cms__v1__envelope__free_unpacked(d, NULL);
    cms_bus_event_release(&ev);
    cr_assert_null(ev.buf);
    cr_assert_eq(ev.len, 0);
    cms_bus_event_release(&ev); /* idempotent */
    cms_bus_event_release(NULL);

    /* a given time is kept; no correlation is "" */
    Cms__V1__Envelope env2 = CMS__V1__ENVELOPE__INIT;
    h = header();
    h.correlation_id = NULL;
    h.occurred_at_us = INT64_C(1718000000123456);
    cr_assert_eq(cms_bus_event_build(&env2, &h, &ev), CMS_BUS_OK);
    d = cms__v1__envelope__unpack(NULL, ev.len, ev.buf);
    cr_assert_not_null(d);
    cr_assert_eq(d->occurred_at_us, INT64_C(1718000000123456));
    cr_assert_str_eq(d->correlation_id, "");
    cms__v1__envelope__free_unpacked(d, NULL);
    cms_bus_event_release(&ev);
}

Test(bus, event_ids_are_unique_v7_and_in_time_order)
{
    enum { N = 5000 };
    char(*ids)[CMS_UUID_STRLEN + 1] = calloc(N, sizeof *ids);
    cr_assert_not_null(ids);
    uint64_t before_ms = (uint64_t)(cms_bus_now_us() / 1000);
    for (int i = 0; i < N; i++) {
        Cms__V1__Envelope env = CMS__V1__ENVELOPE__INIT;
        cms_bus_event_header h = header();
        cms_bus_event ev = {0};
        cr_assert_eq(cms_bus_event_build(&env, &h, &ev), CMS_BUS_OK);
        memcpy(ids[i], ev.id, sizeof ids[i]);
        cms_bus_event_release(&ev);
    }
    uint64_t after_ms = (uint64_t)(cms_bus_now_us() / 1000);
    for (int i = 0; i < N; i++) {
        cms_uuid u;
        cr_assert(cms_uuid_parse(ids[i], strlen(ids[i]), &u), "%s is a UUID", ids[i]);
        cr_assert_eq(cms_uuid_version(&u), 7);
        uint64_t ms = cms_uuid_v7_ms(&u);
        cr_assert(ms >= before_ms && ms <= after_ms, "made now: %llu not in %llu..%llu",
                  (unsigned long long)ms, (unsigned long long)before_ms,
                  (unsigned long long)after_ms);
        /* strictly increasing: unique, and later ids sort later */
        if (i > 0)
            cr_assert_lt(strcmp(ids[i - 1], ids[i]), 0, "%s then %s", ids[i - 1], ids[i]);
    }
    free(ids);
}

static const uint8_t mark[] = "x";

/* Whether a refused build left its out as it was (see below). */
static bool untouched(const cms_bus_event *ev)
{
    return strcmp(ev->id, "untouched") == 0 && ev->subject[0] == '\0' && ev->buf == mark &&
           ev->len == 1;
}

Test(bus, a_build_refuses_what_an_event_may_not_be)
{
    cms_bus_event ev = {.id = "untouched", .buf = (uint8_t *)mark, .len = 1};
    Cms__V1__Envelope env = CMS__V1__ENVELOPE__INIT;
    cms_bus_event_header h = header();

    /* a missing field */
    for (int i = 0; i < 5; i++) {
        h = header();
        const char **field[] = {&h.event_type, &h.resource_type, &h.resource_id, &h.actor_id,
                                &h.source};
        *field[i] = NULL;
        cr_assert_eq(cms_bus_event_build(&env, &h, &ev), CMS_BUS_EINVAL, "field %d missing", i);
        cr_assert(untouched(&ev), "out untouched");
    }
    h = header();
    cr_assert_eq(cms_bus_event_build(NULL, &h, &ev), CMS_BUS_EINVAL);
    cr_assert_eq(cms_bus_event_build(&env, NULL, &ev), CMS_BUS_EINVAL);
    cr_assert_eq(cms_bus_event_build(&env, &h, NULL), CMS_BUS_EINVAL);

    /* what cms_bus_envelope_check refuses */
    struct {
        const char *what;
        cms_bus_event_header h;
    } bad[] = {
        {"resource id", header()},   {"actor id", header()},      {"event type", header()},
        {"type mismatch", header()}, {"resource type", header()}, {"before 2000", header()},
        {"after 2100", header()},
    };
    bad[0].h.resource_id = "nope";
    bad[1].h.actor_id = "0190f0a1-b2c3-7d4e-8f9a-0b1c2d3e4f5";
    bad[2].h.event_type = "contract.two words";
    bad[3].h.event_type = "identity.created";
    bad[4].h.resource_type = "con tract";
    bad[4].h.event_type = "con tract.signed";
    bad[5].h.occurred_at_us = US_2000 - 1;
    bad[6].h.occurred_at_us = US_2100;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        Cms__V1__Envelope e = CMS__V1__ENVELOPE__INIT;
        cr_assert_eq(cms_bus_event_build(&e, &bad[i].h, &ev), CMS_BUS_EINVAL, "%s", bad[i].what);
        cr_assert(untouched(&ev), "%s: out untouched", bad[i].what);
        cr_assert_str_eq(e.event_id, "", "%s: nothing borrowed is left in the envelope",
                         bad[i].what);
    }
    /* an event type too long for a subject at all */
    char type[2 * CMS_BUS_SUBJECT_MAX];
    memset(type, 'v', sizeof type - 1);
    type[sizeof type - 1] = '\0';
    memcpy(type, "contract.", 9);
    h = header();
    h.event_type = type;
    cr_assert_eq(cms_bus_event_build(&env, &h, &ev), CMS_BUS_ETOOLONG);
    cr_assert(untouched(&ev));
}

Test(bus, streams_and_the_system_actor)
{
    size_t n = 0;
    const cms_nats_stream_spec *s = cms_bus_streams(&n);
    cr_assert_eq(n, 4);
    cr_assert_str_eq(s[0].name, CMS_BUS_EVENTS_STREAM);
    cr_assert_str_eq(s[0].subject, "cms.events.>");
    cr_assert_not(s[0].memory);
    cr_assert_eq(s[0].max_age_ms, 30 * DAY_MS);
    cr_assert_eq(s[0].duplicates_ms, CMS_BUS_DEDUPE_WINDOW_MS);
    cr_assert_str_eq(s[1].name, CMS_BUS_DLQ_STREAM);
    cr_assert_str_eq(s[1].subject, "cms.dlq.>");
    cr_assert_not(s[1].memory);
    cr_assert_eq(s[1].max_age_ms, 90 * DAY_MS);
    cr_assert_str_eq(s[2].name, CMS_BUS_WORK_STREAM);
    cr_assert_str_eq(s[2].subject, "cms.work.>");
    cr_assert(s[2].work_queue, "training work is a work queue: acked is gone");
    cr_assert_not(s[0].work_queue);
    cr_assert_not(s[1].work_queue);
    cr_assert_str_eq(s[3].name, CMS_BUS_CHECKPOINT_STREAM);
    cr_assert_str_eq(s[3].subject, "cms.audit.checkpoints.>");
    cr_assert(s[3].append_only, "a checkpoint is never deleted nor purged: verify holds to it");
    cr_assert_eq(s[3].max_age_ms, 0, "kept for as long as the audit log");
    for (size_t i = 0; i < 3; i++)
        cr_assert_not(s[i].append_only);

    char text[CMS_UUID_STRLEN + 1];
    cms_uuid u;
    memcpy(u.b, cms_bus_system_actor, 16);
    cms_uuid_format(&u, text);
    cr_assert_str_eq(text, CMS_BUS_SYSTEM_ACTOR, "the bytes and the text are one actor");
}

Test(bus, a_dead_letter_needs_its_arguments)
{
    cr_assert_eq(cms_bus_dead_letter(NULL, "svc", NULL, "undecodable", NULL, NULL), CMS_BUS_EINVAL);
}

/* ------------------------------------------------------------------------ */
/* the server tests' fixture: tests/lib/natsfx.h, and clearing dead letters */

/* Removes this test's dead letters (and its durable on CMS_DLQ, if any). */
static void side_purge_dlq(natsfx_side *s, const char *dlq_subject, const char *durable)
{
    if (durable)
        (void)js_DeleteConsumer(s->js, "CMS_DLQ", durable, NULL, NULL);
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Stream.Purge.Subject = dlq_subject;
    (void)js_PurgeStream(s->js, "CMS_DLQ", &jo, NULL);
}

/* ------------------------------------------------------------------------ */
/* a dead letter that fits: the original whole */

static const char dl_data[] = {'a', '\0', 'b', '\n', (char)0xff, 'z'};

typedef struct dl_ctx {
    natsfx f;
    char service[32], orig_subj[64], dlq_subj[64], durable[64];
    int phase, originals, letters;
    cms_nats_consumer *orig, *dlq;
} dl_ctx;

static void on_dlq_msg(void *arg, cms_nats_msg *m)
{
    dl_ctx *c = arg;
    natsfx_check_thread(&c->f);
    c->letters++;
    cr_assert_str_eq(cms_nats_msg_subject(m), c->dlq_subj);
    cr_assert_eq(cms_nats_msg_len(m), sizeof dl_data);
    cr_assert_eq(memcmp(cms_nats_msg_data(m), dl_data, sizeof dl_data), 0, "bytes changed");
    cr_assert_str_eq(cms_nats_msg_header(m, "X-A"), "1");
    cr_assert_str_eq(cms_nats_msg_header(m, "X-B"), "two words");
    cr_assert_str_eq(cms_nats_msg_header(m, "Cms-Dlq-Reason"), "undecodable");
    cr_assert_str_eq(cms_nats_msg_header(m, "Cms-Dlq-Subject"), c->orig_subj);
    cr_assert_str_eq(cms_nats_msg_header(m, "Cms-Dlq-Stream-Seq"), "1");
    cr_assert_str_eq(cms_nats_msg_header(m, "Cms-Dlq-Msg-Id"), c->orig_subj,
                     "the original's id is kept aside");
    const char *id = cms_nats_msg_header(m, "Nats-Msg-Id");
    cr_assert(id && strncmp(id, "dlq:", 4) == 0 && strstr(id, ":1") != NULL,
              "a dead letter has an id of its own (dlq:<service>:<stream>:<seq>): %s",
              id ? id : "(none)");
    cr_assert_eq(cms_nats_msg_ack(m), CMS_NATS_OK);
    cms_nats_msg_destroy(m);
    natsfx_close(&c->f);
}

static void on_dl_published(void *arg, bool stored)
{
    cms_nats_msg *m = arg;
    cr_assert(stored);
    cr_assert_eq(cms_nats_msg_ack(m), CMS_NATS_OK); /* only now */
    cms_nats_msg_destroy(m);
}

static void on_orig_msg(void *arg, cms_nats_msg *m)
{
    dl_ctx *c = arg;
    natsfx_check_thread(&c->f);
    c->originals++;
    cr_assert_eq(cms_bus_dead_letter(c->f.n, c->service, m, "undecodable", on_dl_published, m),
                 CMS_BUS_OK);
    if (c->originals == 1) {
        cms_nats_consumer_options co = {
            .stream = "CMS_DLQ", .durable = c->durable, .filter_subject = c->dlq_subj};
        cr_assert_eq(cms_nats_consume(c->f.n, &co, on_dlq_msg, c, &c->dlq), 0);
    }
}

static void on_dl_provisioned(void *arg, cms_nats_err err)
{
    dl_ctx *c = arg;
    cr_assert_eq(err, CMS_NATS_OK);
    char name[64];
    snprintf(name, sizeof name, "B%d_DL", (int)getpid());
    char orig_durable[64];
    snprintf(orig_durable, sizeof orig_durable, "o%d", (int)getpid());
    cms_nats_consumer_options co = {.stream = name, .durable = orig_durable};
    cr_assert_eq(cms_nats_consume(c->f.n, &co, on_orig_msg, c, &c->orig), 0);
}

Test(bus, dead_letter_keeps_bytes_and_headers)
{
    dl_ctx *c = calloc(1, sizeof *c);
    natsfx_init(&c->f, "bus-test", "b", 30000, NULL);
    char name[64], filter[64];
    snprintf(name, sizeof name, "B%d_DL", (int)getpid());
    snprintf(filter, sizeof filter, "%s.dl.>", c->f.tag);
    snprintf(c->orig_subj, sizeof c->orig_subj, "%s.dl.x", c->f.tag);
    snprintf(c->service, sizeof c->service, "bt%d", (int)getpid());
    snprintf(c->dlq_subj, sizeof c->dlq_subj, "cms.dlq.%s", c->service);
    snprintf(c->durable, sizeof c->durable, "dlq%d", (int)getpid());
    natsfx_side s;
    natsfx_side_open(&s);
    natsfx_side_stream(&s, name, filter, 0);
    natsMsg *m = NULL;
    cr_assert_eq(natsMsg_Create(&m, c->orig_subj, NULL, dl_data, (int)sizeof dl_data), NATS_OK);
    natsMsgHeader_Set(m, "X-A", "1");
    natsMsgHeader_Set(m, "X-B", "two words");
    natsMsgHeader_Set(m, "Nats-Msg-Id", c->orig_subj);
    cr_assert_eq(js_PublishMsg(NULL, s.js, m, NULL, NULL), NATS_OK);
    natsMsg_Destroy(m);

    cr_assert_eq(cms_bus_provision(c->f.n, on_dl_provisioned, c), 0);
    natsfx_finish(&c->f);
    cr_assert_eq(c->letters, 1);
    cr_assert_eq(c->originals, 1, "the original was acked once its dead letter was stored");

    side_purge_dlq(&s, c->dlq_subj, c->durable);
    natsfx_side_drop_stream(&s, name);
    natsfx_side_close(&s);
    free(c);
    (void)nats_CloseAndWait(5000);
}

/* ------------------------------------------------------------------------ */
/* a dead letter that does not fit: a record of the original */

enum { BIG_HEADERLESS, BIG_WITH_HEADERS, NBIG };

typedef struct big_ctx {
    natsfx f;
    char service[32], orig_subj[64], dlq_subj[64], stream[64], durable[64];
    size_t max_payload; /* the server's, as the side connection read it */
    int originals, stored, refused;
    cms_nats_consumer *orig;
} big_ctx;

/* One original on its way to CMS_DLQ: acked once its record is stored. */
typedef struct big_letter {
    big_ctx *c;
    cms_nats_msg *m;
} big_letter;

static void on_big_stored(void *arg, bool stored)
{
    big_letter *l = arg;
    big_ctx *c = l->c;
    natsfx_check_thread(&c->f);
    if (stored) {
        c->stored++;
        cr_assert_eq(cms_nats_msg_ack(l->m), CMS_NATS_OK);
    } else {
        c->refused++;
    }
    cms_nats_msg_destroy(l->m);
    free(l);
    if (c->stored + c->refused == NBIG)
        natsfx_close(&c->f);
}

static void on_big_msg(void *arg, cms_nats_msg *m)
{
    big_ctx *c = arg;
    natsfx_check_thread(&c->f);
    c->originals++;
    cr_assert_eq(cms_nats_max_payload(c->f.n), c->max_payload,
                 "the module knows the server's max payload");
    big_letter *l = calloc(1, sizeof *l);
    cr_assert_not_null(l);
    *l = (big_letter){.c = c, .m = m};
    cms_bus_err err = cms_bus_dead_letter(c->f.n, c->service, m, "undecodable", on_big_stored, l);
    cr_assert_eq(err, CMS_BUS_OK, "an oversized message can be dead-lettered: %s",
                 cms_bus_strerror(err));
}

static void on_big_provisioned(void *arg, cms_nats_err err)
{
    big_ctx *c = arg;
    cr_assert_eq(err, CMS_NATS_OK);
    cms_nats_consumer_options co = {.stream = c->stream, .durable = c->durable};
    cr_assert_eq(cms_nats_consume(c->f.n, &co, on_big_msg, c, &c->orig), 0);
}

static const char *hdr(natsMsg *m, const char *key)
{
    const char *v = NULL;
    return natsMsgHeader_Get(m, key, &v) == NATS_OK ? v : NULL;
}

static void sha256_hex(const uint8_t *data, size_t len, char out[65])
{
    unsigned char sha[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(sha, data, len);
    sodium_bin2hex(out, 65, sha, sizeof sha);
}

Test(bus, an_oversized_message_is_dead_lettered_as_a_record, .timeout = 60)
{
    cr_assert_geq(sodium_init(), 0);
    big_ctx *c = calloc(1, sizeof *c);
    natsfx_init(&c->f, "bus-test", "b", 45000, NULL);
    char filter[64];
    snprintf(c->stream, sizeof c->stream, "B%d_BIG", (int)getpid());
    snprintf(filter, sizeof filter, "%s.big.>", c->f.tag);
    snprintf(c->orig_subj, sizeof c->orig_subj, "%s.big.x", c->f.tag);
    snprintf(c->service, sizeof c->service, "btbig%d", (int)getpid());
    snprintf(c->dlq_subj, sizeof c->dlq_subj, "cms.dlq.%s", c->service);
    snprintf(c->durable, sizeof c->durable, "big%d", (int)getpid());
    natsfx_side s;
    natsfx_side_open(&s);
    int64_t mp = natsConnection_GetMaxPayload(s.nc);
    cr_assert_gt(mp, 4096, "the server's max payload: %lld", (long long)mp);
    c->max_payload = (size_t)mp;
    natsfx_side_stream(&s, c->stream, filter, 0);

    /* 1: max_payload - 16 bytes and no header, so it fits the stream; its
     * dead letter, with the headers it adds, cannot fit */
    size_t len[NBIG];
    uint8_t *body[NBIG];
    len[BIG_HEADERLESS] = c->max_payload - 16;
    /* 2: near the limit with headers of its own, of which a record keeps only its id */
    const char *x_id = "big-with-headers";
    size_t own = strlen("NATS/1.0\r\n") + strlen("X-Big: yes\r\n") + strlen("Nats-Msg-Id: \r\n") +
                 strlen(x_id) + strlen("\r\n");
    len[BIG_WITH_HEADERS] = c->max_payload - own - 16;
    for (int i = 0; i < NBIG; i++) {
        body[i] = malloc(len[i]);
        cr_assert_not_null(body[i]);
        randombytes_buf(body[i], len[i]);
        natsMsg *m = NULL;
        cr_assert_eq(natsMsg_Create(&m, c->orig_subj, NULL, (const char *)body[i], (int)len[i]),
                     NATS_OK);
        if (i == BIG_WITH_HEADERS) {
            cr_assert_eq(natsMsgHeader_Set(m, "X-Big", "yes"), NATS_OK);
            cr_assert_eq(natsMsgHeader_Set(m, "Nats-Msg-Id", x_id), NATS_OK);
        }
        jsPubAck *pa = NULL;
        jsErrCode jerr = 0;
        natsStatus st = js_PublishMsg(&pa, s.js, m, NULL, &jerr);
        cr_assert_eq(st, NATS_OK, "original %d (%zu bytes) stored: %s (%d)", i, len[i],
                     natsStatus_GetText(st), (int)jerr);
        cr_assert_eq(pa->Sequence, (uint64_t)i + 1);
        jsPubAck_Destroy(pa);
        natsMsg_Destroy(m);
    }

    cr_assert_eq(cms_bus_provision(c->f.n, on_big_provisioned, c), 0);
    natsfx_finish(&c->f);
    cr_assert_eq(c->originals, NBIG, "each original delivered once: acked once stored");
    cr_assert_eq(c->stored, NBIG, "the callback says stored (%d refused)", c->refused);

    /* the records, read back in CMS_DLQ's order */
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Stream = "CMS_DLQ";
    so.Ordered = true;
    natsSubscription *sub = NULL;
    jsErrCode jerr = 0;
    cr_assert_eq(js_SubscribeSync(&sub, s.js, c->dlq_subj, NULL, &so, &jerr), NATS_OK,
                 "read CMS_DLQ (%d)", (int)jerr);
    for (int i = 0; i < NBIG; i++) {
        natsMsg *m = NULL;
        cr_assert_eq(natsSubscription_NextMsg(&m, sub, 10000), NATS_OK, "record %d", i);
        char seq[24], size[24], sha[65], id[128];
        snprintf(seq, sizeof seq, "%d", i + 1);
        snprintf(size, sizeof size, "%zu", len[i]);
        snprintf(id, sizeof id, "dlq:%s:%s:%d", c->service, c->stream, i + 1);
        sha256_hex(body[i], len[i], sha);
        cr_assert_str_eq(natsMsg_GetSubject(m), c->dlq_subj);
        cr_assert_str_eq(hdr(m, "Cms-Dlq-Reason"), "undecodable");
        cr_assert_str_eq(hdr(m, "Cms-Dlq-Subject"), c->orig_subj);
        cr_assert_str_eq(hdr(m, "Cms-Dlq-Stream-Seq"), seq);
        cr_assert_str_eq(hdr(m, "Cms-Dlq-Size"), size, "record %d: the original's length", i);
        cr_assert_str_eq(hdr(m, "Cms-Dlq-Sha256"), sha, "record %d: the hash of its bytes", i);
        cr_assert_str_eq(hdr(m, "Cms-Dlq-Truncated"), "true");
        cr_assert_str_eq(hdr(m, "Nats-Msg-Id"), id, "a record has the dead letter's own id");
        cr_assert_null(hdr(m, "X-Big"), "the original's headers are not in a record");
        if (i == BIG_WITH_HEADERS)
            cr_assert_str_eq(hdr(m, "Cms-Dlq-Msg-Id"), x_id, "but its id is");
        else
            cr_assert_null(hdr(m, "Cms-Dlq-Msg-Id"), "an original without an id");
        cr_assert_eq(natsMsg_GetDataLength(m), CMS_BUS_DLQ_RECORD_BYTES);
        cr_assert_eq(memcmp(natsMsg_GetData(m), body[i], CMS_BUS_DLQ_RECORD_BYTES), 0,
                     "record %d: the first bytes of the original", i);
        natsMsg_Destroy(m);
        free(body[i]);
    }
    natsSubscription_Unsubscribe(sub);
    natsSubscription_Destroy(sub);
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Stream.Info.SubjectsFilter = c->dlq_subj;
    jsStreamInfo *si = NULL;
    cr_assert_eq(js_GetStreamInfo(&si, s.js, "CMS_DLQ", &jo, &jerr), NATS_OK);
    cr_assert(si->State.Subjects && si->State.Subjects->Count == 1 &&
                  si->State.Subjects->List[0].Msgs == NBIG,
              "one record of each original in CMS_DLQ");
    jsStreamInfo_Destroy(si);

    side_purge_dlq(&s, c->dlq_subj, NULL);
    natsfx_side_drop_stream(&s, c->stream);
    natsfx_side_close(&s);
    free(c);
    (void)nats_CloseAndWait(5000);
}
