/* The events of cms-contracts (services/contracts/events.h): each builder's
 * envelope decodes and passes the checks every event is held to, with its
 * type, resource (the contract), actor, correlation, source "contracts" and
 * its typed body naming the contract, both parties and the status after
 * it; contract.expired is the system's doing; a builder refuses what
 * cms_bus refuses; cms-audit's renderer turns each body into its fields. */
#include "contracts/events.h"
#include "json.h"

#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#define ID "0190f0a1-b2c3-7d4e-8f9a-0b1c2d3e4f50"
#define PROV "0190f0a1-b2c3-7d4e-8f9a-0b1c2d3e4f51"
#define CONS "0190f0a1-b2c3-7d4e-8f9a-0b1c2d3e4f52"
#define NEW "0190f0a1-b2c3-7d4e-8f9a-0b1c2d3e4f53"
#define KEY "0190f0a1-b2c3-7d4e-8f9a-0b1c2d3e4f54"
#define HASH "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

static cms_pbarena *arena;
static cms_bus_event ev;

static void setup(void)
{
    cr_assert_eq(cms_pbarena_create(4096, 1 << 20, &arena), 0);
    memset(&ev, 0, sizeof ev);
}

static void teardown(void)
{
    cms_bus_event_release(&ev);
    cms_pbarena_destroy(arena);
}

TestSuite(events, .init = setup, .fini = teardown);

static ctev_contract contract(const char *status)
{
    return (ctev_contract){ID, PROV, CONS, status};
}

static Cms__V1__Envelope *decoded(const char *type, const char *actor, const char *corr,
                                  Cms__V1__Envelope__BodyCase body)
{
    Cms__V1__Envelope *e = NULL;
    cms_bus_reason r = cms_bus_envelope_decode(ev.buf, ev.len, arena, &e);
    cr_assert_eq(r, CMS_BUS_VALID, "%s: %s", type, cms_bus_reason_name(r));
    cr_assert_str_eq(e->event_type, type);
    cr_assert_str_eq(e->resource_type, "contract");
    cr_assert_str_eq(e->resource_id, ID);
    cr_assert_str_eq(e->actor_id, actor);
    cr_assert_str_eq(e->correlation_id, corr ? corr : "");
    cr_assert_str_eq(e->source, "contracts");
    cr_assert_eq(e->body_case, body, "%s has its typed body", type);
    char subject[CMS_BUS_SUBJECT_MAX];
    snprintf(subject, sizeof subject, "cms.events.%s", type);
    cr_assert_str_eq(ev.subject, subject);
    return e;
}

#define PARTIES(b, st)                                                                             \
    do {                                                                                           \
        cr_assert_str_eq((b)->contract_id, ID);                                                    \
        cr_assert_str_eq((b)->provider_id, PROV);                                                  \
        cr_assert_str_eq((b)->consumer_id, CONS);                                                  \
        cr_assert_str_eq((b)->status, st);                                                         \
    } while (0)

Test(events, created_updated_submitted)
{
    ctev_contract c = contract("draft");
    cr_assert_eq(ctev_created(&c, "Data sharing", HASH, PROV, "r1", &ev), CMS_BUS_OK);
    Cms__V1__Envelope *e =
        decoded("contract.created", PROV, "r1", CMS__V1__ENVELOPE__BODY_CONTRACT_CREATED);
    PARTIES(e->contract_created, "draft");
    cr_assert_str_eq(e->contract_created->title, "Data sharing");
    cr_assert_str_eq(e->contract_created->content_hash, HASH);
    cms_bus_event_release(&ev);

    const char *fields[] = {"title", "terms"};
    cr_assert_eq(ctev_updated(&c, fields, 2, HASH, CONS, NULL, &ev), CMS_BUS_OK);
    e = decoded("contract.updated", CONS, NULL, CMS__V1__ENVELOPE__BODY_CONTRACT_UPDATED);
    cr_assert_eq(e->contract_updated->n_fields, 2);
    cr_assert_str_eq(e->contract_updated->fields[1], "terms");
    cms_bus_event_release(&ev);

    c.status = "review";
    cr_assert_eq(ctev_submitted(&c, HASH, PROV, NULL, &ev), CMS_BUS_OK);
    e = decoded("contract.submitted", PROV, NULL, CMS__V1__ENVELOPE__BODY_CONTRACT_SUBMITTED);
    PARTIES(e->contract_submitted, "review");
}

Test(events, signed_and_fully_signed)
{
    ctev_contract c = contract("review");
    cr_assert_eq(ctev_signed(&c, "consumer", KEY, HASH, CONS, "r2", &ev), CMS_BUS_OK);
    Cms__V1__Envelope *e =
        decoded("contract.signed", CONS, "r2", CMS__V1__ENVELOPE__BODY_CONTRACT_SIGNED);
    cr_assert_str_eq(e->contract_signed->side, "consumer");
    cr_assert_str_eq(e->contract_signed->signer_id, CONS);
    cr_assert_str_eq(e->contract_signed->key_id, KEY);
    cms_bus_event_release(&ev);
    c.status = "signed";
    cr_assert_eq(ctev_fully_signed(&c, HASH, 100, 200, CONS, "r2", &ev), CMS_BUS_OK);
    e = decoded("contract.fully_signed", CONS, "r2", CMS__V1__ENVELOPE__BODY_CONTRACT_FULLY_SIGNED);
    PARTIES(e->contract_fully_signed, "signed");
    cr_assert_eq(e->contract_fully_signed->starts_at_us, 100);
    cr_assert_eq(e->contract_fully_signed->ends_at_us, 200);
}

Test(events, activated_completed_terminated_expired_amended)
{
    ctev_contract c = contract("active");
    cr_assert_eq(
        ctev_activated(&c, 100, 200, 3.5, 1e-6, true, NEW, CMS_BUS_SYSTEM_ACTOR, NULL, &ev),
        CMS_BUS_OK);
    Cms__V1__Envelope *e = decoded("contract.activated", CMS_BUS_SYSTEM_ACTOR, NULL,
                                   CMS__V1__ENVELOPE__BODY_CONTRACT_ACTIVATED);
    cr_assert(e->contract_activated->automatic);
    cr_assert_float_eq(e->contract_activated->max_epsilon, 3.5, 1e-12);
    cr_assert_float_eq(e->contract_activated->delta, 1e-6, 1e-18);
    cr_assert_str_eq(e->contract_activated->supersedes, NEW);
    cms_bus_event_release(&ev);

    c.status = "completed";
    cr_assert_eq(ctev_completed(&c, "superseded", NEW, PROV, NULL, &ev), CMS_BUS_OK);
    e = decoded("contract.completed", PROV, NULL, CMS__V1__ENVELOPE__BODY_CONTRACT_COMPLETED);
    cr_assert_str_eq(e->contract_completed->reason, "superseded");
    cr_assert_str_eq(e->contract_completed->superseded_by, NEW);
    cms_bus_event_release(&ev);

    c.status = "terminated";
    cr_assert_eq(ctev_terminated(&c, "signed", "consumer", "no longer needed", CONS, "r3", &ev),
                 CMS_BUS_OK);
    e = decoded("contract.terminated", CONS, "r3", CMS__V1__ENVELOPE__BODY_CONTRACT_TERMINATED);
    cr_assert_str_eq(e->contract_terminated->terminated_by, CONS);
    cr_assert_str_eq(e->contract_terminated->old_status, "signed");
    cr_assert_str_eq(e->contract_terminated->reason, "no longer needed");
    cms_bus_event_release(&ev);

    c.status = "expired";
    cr_assert_eq(ctev_expired(&c, "active", 200, &ev), CMS_BUS_OK);
    e = decoded("contract.expired", CMS_BUS_SYSTEM_ACTOR, NULL,
                CMS__V1__ENVELOPE__BODY_CONTRACT_EXPIRED);
    cr_assert_eq(e->contract_expired->ends_at_us, 200);
    cms_bus_event_release(&ev);

    c.status = "active";
    cr_assert_eq(ctev_amended(&c, NEW, HASH, PROV, NULL, &ev), CMS_BUS_OK);
    e = decoded("contract.amended", PROV, NULL, CMS__V1__ENVELOPE__BODY_CONTRACT_AMENDED);
    cr_assert_str_eq(e->contract_amended->amendment_id, NEW);
}

Test(events, refuses_what_the_bus_refuses)
{
    ctev_contract c = {"not-a-uuid", PROV, CONS, "draft"};
    cr_assert_eq(ctev_created(&c, "t", HASH, PROV, NULL, &ev), CMS_BUS_EINVAL);
    cr_assert_null(ev.buf, "nothing built");
    c.id = ID;
    cr_assert_eq(ctev_created(&c, "t", HASH, "nobody", NULL, &ev), CMS_BUS_EINVAL);
}

Test(events, the_audit_log_renders_a_body_field_by_field)
{
    ctev_contract c = contract("review");
    cr_assert_eq(ctev_signed(&c, "provider", KEY, HASH, PROV, NULL, &ev), CMS_BUS_OK);
    Cms__V1__Envelope *e =
        decoded("contract.signed", PROV, NULL, CMS__V1__ENVELOPE__BODY_CONTRACT_SIGNED);
    cms_json_buf b;
    cms_json_buf_init(&b, 4096);
    cr_assert_eq(cms_json_render_body(&b, &e->base, 16), CMS_JSON_OK);
    char *text = strndup(b.data, b.len);
    cr_assert(strstr(text, "\"side\":\"provider\"") && strstr(text, "\"key_id\":\"" KEY "\"") &&
                  strstr(text, "\"contract_id\":\"" ID "\""),
              "%s", text);
    free(text);
    cms_json_buf_free(&b);
}
