/* The consumer tests' fixture; see consumerfx.h. */
#include "consumerfx.h"

#include "cms/v1/envelope.pb-c.h"
#include "testenv.h"
#include "uuid.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* clang-format off */
static const char SQL_EFFECTS[] =
    "CREATE TABLE testsvc_effects ("
    "  id bigserial PRIMARY KEY, resource_id text NOT NULL, event_id text NOT NULL,"
    "  details text NOT NULL);"
    "CREATE FUNCTION testsvc_effects_note() RETURNS trigger LANGUAGE plpgsql AS $$"
    "BEGIN PERFORM pg_notify('testsvc_effects', NEW.resource_id); RETURN NULL; END $$;"
    "CREATE TRIGGER testsvc_effects_note AFTER INSERT ON testsvc_effects"
    "  FOR EACH ROW EXECUTE FUNCTION testsvc_effects_note()";
/* clang-format on */

void consumerfx_uuid(char out[37])
{
    cms_uuid u;
    cms_uuid_v7(&u);
    cms_uuid_format(&u, out);
}

void consumerfx_setup(consumerfx *c, const char *ack_wait, const char *lease)
{
    memset(c, 0, sizeof *c);
    svcfx_setup(&c->f, "consumer");
    char *ok = svcfx_sql(&c->f, SQL_EFFECTS);
    cr_assert_not_null(ok, "testsvc_effects created");
    free(ok);
    cr_assert_eq(cms_test_db_grant_testsvc(c->f.db, (const char *const[]){"testsvc_effects", NULL}),
                 0);
    char id[37];
    consumerfx_uuid(id);
    /* a durable and a resource type no other test run shares; the name is
     * cms-testsvc's ("testsvc-..."), as its role's rows must be */
    snprintf(c->name, sizeof c->name, "testsvc-%d-%.4s", (int)getpid(), id + 32);
    snprintf(c->rtype, sizeof c->rtype, "tc%d_%.4s", (int)getpid(), id + 32);
    snprintf(c->filter, sizeof c->filter, "cms.events.%s.>", c->rtype);
    snprintf(c->env[0], sizeof c->env[0], "CMS_TESTSVC_CONSUMER=%s", c->name);
    snprintf(c->env[1], sizeof c->env[1], "CMS_TESTSVC_CONSUME_SUBJECT=%s", c->filter);
    snprintf(c->env[2], sizeof c->env[2], "CMS_CONSUMER_ACK_WAIT=%s", ack_wait);
    snprintf(c->env[3], sizeof c->env[3], "CMS_CONSUMER_LEASE=%s", lease);
    /* the service's dead letters: this test's are those of its resource type */
    cr_assert_eq(natsConnection_SubscribeSync(&c->dlq, c->f.nc, "cms.dlq.testsvc"), NATS_OK);
    natsSubscription_SetPendingLimits(c->dlq, -1, -1);
}

void consumerfx_teardown(consumerfx *c)
{
    natsSubscription_Destroy(c->dlq);
    c->dlq = NULL;
    svcfx_teardown(&c->f);
}

void consumerfx_start(consumerfx *c, int i)
{
    const char *set[] = {
        c->env[0], c->env[1], c->env[2], c->env[3], "CMS_DRAIN_TIMEOUT=20s", "CMS_LOG_LEVEL=debug",
        NULL};
    svcfx_start_at(&c->f, i, "cms-testsvc", set);
}

void consumerfx_publish(consumerfx *c, const char *verb, const char *rid, int n,
                        const char *event_id, const char *msg_id, char id_out[37])
{
    char id[37], actor[37], type[96], details[48];
    if (event_id == NULL)
        consumerfx_uuid(id);
    else
        snprintf(id, sizeof id, "%s", event_id);
    if (id_out != NULL)
        memcpy(id_out, id, sizeof id);
    consumerfx_uuid(actor);
    snprintf(type, sizeof type, "%s.%s", c->rtype, verb);
    snprintf(details, sizeof details, "{\"n\": %d}", n);
    Cms__V1__Envelope e = CMS__V1__ENVELOPE__INIT;
    e.event_id = id;
    e.event_type = type;
    e.resource_type = c->rtype;
    e.resource_id = (char *)rid;
    e.actor_id = actor;
    e.occurred_at_us = cms_test_wall_us();
    e.source = (char *)"test";
    e.details_json = details;
    svcfx_publish(&c->f, &e, msg_id);
}

void consumerfx_wait_effects(consumerfx *c, const char *rid, int want, double timeout_ms)
{
    char sql[200];
    snprintf(sql, sizeof sql, "SELECT count(*) >= %d FROM testsvc_effects WHERE resource_id = '%s'",
             want, rid);
    char *got = svcfx_wait_sql(&c->f, "testsvc_effects", sql, "t", timeout_ms);
    if (strcmp(got, "t") != 0) {
        char *log = svcfx_log(&c->f);
        cr_log_error("the replicas' log:\n%s", log);
        free(log);
        cr_assert_fail("%d of %s's effects not applied in %.0f ms", want, rid, timeout_ms);
    }
    free(got);
}

char *consumerfx_order(consumerfx *c, const char *rid)
{
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT coalesce(string_agg(details::json->>'n', ',' ORDER BY id), '') "
             "FROM testsvc_effects WHERE resource_id = '%s'",
             rid);
    char *v = svcfx_sql(&c->f, sql);
    cr_assert_not_null(v);
    return v;
}

int consumerfx_effects_of(consumerfx *c, const char *event_id)
{
    char sql[200];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM testsvc_effects WHERE event_id = '%s'",
             event_id);
    char *v = svcfx_sql(&c->f, sql);
    cr_assert_not_null(v);
    int n = atoi(v);
    free(v);
    return n;
}

double consumerfx_outcome(consumerfx *c, int i, const char *outcome)
{
    char series[200];
    snprintf(series, sizeof series, "cms_consumer_events_total{consumer=\"%s\",outcome=\"%s\"}",
             c->name, outcome);
    double v = svcfx_metric(&c->f, i, series);
    return v < 0 ? 0 : v;
}

bool consumerfx_next_dead(consumerfx *c, char *reason, double timeout_ms)
{
    char mine[128];
    int n = snprintf(mine, sizeof mine, "cms.events.%s.", c->rtype);
    double deadline = cms_test_now_ms() + timeout_ms;
    for (;;) {
        double left = deadline - cms_test_now_ms();
        natsMsg *m = NULL;
        if (left <= 0 || natsSubscription_NextMsg(&m, c->dlq, (int64_t)left + 1) != NATS_OK)
            return false;
        const char *subject = NULL, *r = NULL;
        if (natsMsgHeader_Get(m, "Cms-Dlq-Subject", &subject) != NATS_OK ||
            strncmp(subject, mine, (size_t)n) != 0) {
            natsMsg_Destroy(m); /* another test's */
            continue;
        }
        if (natsMsgHeader_Get(m, "Cms-Dlq-Reason", &r) != NATS_OK)
            r = "";
        snprintf(reason, 64, "%s", r);
        natsMsg_Destroy(m);
        return true;
    }
}
