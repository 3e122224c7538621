/* The events of cms-identity (services/identity/events.h): each builder's
 * envelope decodes and passes the checks every event is held to, with its
 * type, resource, actor, correlation, source "identity" and its typed body
 * field by field; credential.expired is the system's doing; and a builder
 * refuses what cms_bus refuses, leaving its output alone. */
#include "identity/events.h"

#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#define ID "0190f0a1-b2c3-7d4e-8f9a-0b1c2d3e4f50"
#define CRED "0190f0a1-b2c3-7d4e-8f9a-0b1c2d3e4f51"
#define ACTOR "0190f0a1-b2c3-7d4e-8f9a-0b1c2d3e4f52"
#define EXPIRES INT64_C(1718000000123456)

static cms_pbarena *arena;

static void setup(void)
{
    cr_assert_eq(cms_pbarena_create(4096, 1 << 20, &arena), 0);
}

static void teardown(void)
{
    cms_pbarena_destroy(arena);
}

TestSuite(events, .init = setup, .fini = teardown);

/* Decodes ev as any consumer would and checks what every identity event
 * has; the envelope lives in the arena until the next decode. */
static Cms__V1__Envelope *decoded(const cms_bus_event *ev, const char *type, const char *rtype,
                                  const char *rid, const char *actor, const char *corr)
{
    Cms__V1__Envelope *e = NULL;
    cms_bus_reason r = cms_bus_envelope_decode(ev->buf, ev->len, arena, &e);
    cr_assert_eq(r, CMS_BUS_VALID, "%s decodes as a valid event: %s", type, cms_bus_reason_name(r));
    cr_assert_str_eq(e->event_id, ev->id);
    cr_assert_str_eq(e->event_type, type);
    cr_assert_str_eq(e->resource_type, rtype);
    cr_assert_str_eq(e->resource_id, rid);
    cr_assert_str_eq(e->actor_id, actor);
    cr_assert_str_eq(e->correlation_id, corr ? corr : "");
    cr_assert_str_eq(e->source, "identity");
    cr_assert_str_eq(e->details_json, "", "a typed body, not details_json");
    char subject[CMS_BUS_SUBJECT_MAX];
    snprintf(subject, sizeof subject, "cms.events.%s", type);
    cr_assert_str_eq(ev->subject, subject);
    int64_t now = cms_bus_now_us();
    cr_assert(e->occurred_at_us <= now && e->occurred_at_us > now - INT64_C(60000000),
              "%s happened now", type);
    return e;
}

Test(events, identity_created)
{
    cms_bus_event ev = {0};
    cr_assert_eq(idev_identity_created(ID, "alice", "user", "active", ACTOR, "corr-1", &ev),
                 CMS_BUS_OK);
    Cms__V1__Envelope *e = decoded(&ev, "identity.created", "identity", ID, ACTOR, "corr-1");
    cr_assert_eq(e->body_case, CMS__V1__ENVELOPE__BODY_IDENTITY_CREATED);
    cr_assert_str_eq(e->identity_created->identity_id, ID);
    cr_assert_str_eq(e->identity_created->name, "alice");
    cr_assert_str_eq(e->identity_created->type, "user");
    cr_assert_str_eq(e->identity_created->status, "active");
    cms_bus_event_release(&ev);
}

Test(events, status_changed)
{
    cms_bus_event ev = {0};
    cr_assert_eq(
        idev_status_changed(ID, "active", "suspended", "abuse \"quoted\"", ACTOR, NULL, &ev),
        CMS_BUS_OK);
    Cms__V1__Envelope *e = decoded(&ev, "identity.status_changed", "identity", ID, ACTOR, NULL);
    cr_assert_eq(e->body_case, CMS__V1__ENVELOPE__BODY_IDENTITY_STATUS_CHANGED);
    cr_assert_str_eq(e->identity_status_changed->identity_id, ID);
    cr_assert_str_eq(e->identity_status_changed->old_status, "active");
    cr_assert_str_eq(e->identity_status_changed->new_status, "suspended");
    cr_assert_str_eq(e->identity_status_changed->reason, "abuse \"quoted\"");
    cms_bus_event_release(&ev);

    /* no reason is an empty one */
    cr_assert_eq(idev_status_changed(ID, "suspended", "active", NULL, ACTOR, "c", &ev), CMS_BUS_OK);
    e = decoded(&ev, "identity.status_changed", "identity", ID, ACTOR, "c");
    cr_assert_str_eq(e->identity_status_changed->reason, "");
    cr_assert_str_eq(e->identity_status_changed->old_status, "suspended");
    cms_bus_event_release(&ev);
}

Test(events, credential_issued)
{
    cms_bus_event ev = {0};
    cr_assert_eq(idev_credential_issued(CRED, ID, "api_key", NULL, EXPIRES, ACTOR, "corr-2", &ev),
                 CMS_BUS_OK);
    Cms__V1__Envelope *e = decoded(&ev, "credential.issued", "credential", CRED, ACTOR, "corr-2");
    cr_assert_eq(e->body_case, CMS__V1__ENVELOPE__BODY_CREDENTIAL_ISSUED);
    cr_assert_str_eq(e->credential_issued->credential_id, CRED);
    cr_assert_str_eq(e->credential_issued->identity_id, ID);
    cr_assert_str_eq(e->credential_issued->type, "api_key");
    cr_assert_eq(e->credential_issued->expires_at_us, EXPIRES);
    cms_bus_event_release(&ev);
}

Test(events, credential_revoked)
{
    cms_bus_event ev = {0};
    cr_assert_eq(idev_credential_revoked(CRED, ID, "leaked", ACTOR, "corr-3", &ev), CMS_BUS_OK);
    Cms__V1__Envelope *e = decoded(&ev, "credential.revoked", "credential", CRED, ACTOR, "corr-3");
    cr_assert_eq(e->body_case, CMS__V1__ENVELOPE__BODY_CREDENTIAL_REVOKED);
    cr_assert_str_eq(e->credential_revoked->credential_id, CRED);
    cr_assert_str_eq(e->credential_revoked->identity_id, ID);
    cr_assert_str_eq(e->credential_revoked->reason, "leaked");
    cms_bus_event_release(&ev);

    cr_assert_eq(idev_credential_revoked(CRED, ID, NULL, ACTOR, NULL, &ev), CMS_BUS_OK);
    e = decoded(&ev, "credential.revoked", "credential", CRED, ACTOR, NULL);
    cr_assert_str_eq(e->credential_revoked->reason, "");
    cms_bus_event_release(&ev);
}

Test(events, credential_expired_is_the_system_actors_doing)
{
    cms_bus_event ev = {0};
    cr_assert_eq(idev_credential_expired(CRED, ID, EXPIRES, &ev), CMS_BUS_OK);
    Cms__V1__Envelope *e =
        decoded(&ev, "credential.expired", "credential", CRED, CMS_BUS_SYSTEM_ACTOR, NULL);
    cr_assert_str_eq(e->actor_id, "00000000-0000-7000-8000-000000000001");
    cr_assert_eq(e->body_case, CMS__V1__ENVELOPE__BODY_CREDENTIAL_EXPIRED);
    cr_assert_str_eq(e->credential_expired->credential_id, CRED);
    cr_assert_str_eq(e->credential_expired->identity_id, ID);
    cr_assert_eq(e->credential_expired->expires_at_us, EXPIRES);
    cms_bus_event_release(&ev);
}

Test(events, every_builder_gives_a_new_id)
{
    cms_bus_event a = {0}, b = {0};
    cr_assert_eq(idev_credential_expired(CRED, ID, EXPIRES, &a), CMS_BUS_OK);
    cr_assert_eq(idev_credential_expired(CRED, ID, EXPIRES, &b), CMS_BUS_OK);
    cr_assert_lt(strcmp(a.id, b.id), 0, "the same event twice is two events, in order");
    cms_bus_event_release(&a);
    cms_bus_event_release(&b);
}

static const uint8_t mark[] = "x";

static bool untouched(const cms_bus_event *ev)
{
    return strcmp(ev->id, "untouched") == 0 && ev->buf == mark && ev->len == 1;
}

Test(events, a_builder_refuses_what_the_bus_refuses)
{
    cms_bus_event ev = {.id = "untouched", .buf = (uint8_t *)mark, .len = 1};
    static const char *const bad[] = {"not-a-uuid", "", "0190f0a1-b2c3-7d4e-8f9a-0b1c2d3e4f5"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *b = bad[i];
        cr_assert_eq(idev_identity_created(b, "n", "user", "active", ACTOR, NULL, &ev),
                     CMS_BUS_EINVAL, "identity id %s", b);
        cr_assert_eq(idev_identity_created(ID, "n", "user", "active", b, NULL, &ev), CMS_BUS_EINVAL,
                     "actor %s", b);
        cr_assert_eq(idev_status_changed(b, "active", "suspended", "", ACTOR, NULL, &ev),
                     CMS_BUS_EINVAL);
        cr_assert_eq(idev_status_changed(ID, "active", "suspended", "", b, NULL, &ev),
                     CMS_BUS_EINVAL);
        cr_assert_eq(idev_credential_issued(b, ID, "api_key", NULL, EXPIRES, ACTOR, NULL, &ev),
                     CMS_BUS_EINVAL);
        cr_assert_eq(idev_credential_issued(CRED, ID, "api_key", NULL, EXPIRES, b, NULL, &ev),
                     CMS_BUS_EINVAL);
        cr_assert_eq(idev_credential_revoked(b, ID, "r", ACTOR, NULL, &ev), CMS_BUS_EINVAL);
        cr_assert_eq(idev_credential_revoked(CRED, ID, "r", b, NULL, &ev), CMS_BUS_EINVAL);
        cr_assert_eq(idev_credential_expired(b, ID, EXPIRES, &ev), CMS_BUS_EINVAL);
        cr_assert(untouched(&ev), "a refused build leaves its output alone");
    }
    /* missing where the envelope needs it */
    cr_assert_eq(idev_identity_created(NULL, "n", "user", "active", ACTOR, NULL, &ev),
                 CMS_BUS_EINVAL);
    cr_assert_eq(idev_identity_created(ID, "n", "user", "active", NULL, NULL, &ev), CMS_BUS_EINVAL);
    cr_assert_eq(idev_status_changed(ID, "active", "suspended", "", NULL, NULL, &ev),
                 CMS_BUS_EINVAL);
    cr_assert_eq(idev_credential_issued(NULL, ID, "api_key", NULL, EXPIRES, ACTOR, NULL, &ev),
                 CMS_BUS_EINVAL);
    cr_assert_eq(idev_credential_revoked(CRED, ID, "r", NULL, NULL, &ev), CMS_BUS_EINVAL);
    cr_assert_eq(idev_credential_expired(NULL, ID, EXPIRES, &ev), CMS_BUS_EINVAL);
    cr_assert_eq(idev_credential_expired(CRED, ID, EXPIRES, NULL), CMS_BUS_EINVAL);
    cr_assert(untouched(&ev));
}
