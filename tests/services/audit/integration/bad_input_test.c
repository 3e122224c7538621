/* cms-audit's doors against bad input. Its command subject (query)
 * refuses bytes that are not its request and filters that are not what
 * they name (SQL metacharacters among them) with INVALID_ARGUMENT naming
 * the field, and the probes answer through hundreds of idle and slow HTTP
 * connections. Its consumer dead-letters, unchanged, an event whose
 * details_json holds a NUL (protobuf-c would have stored it cut short),
 * nests deeper than JSON may or holds a number PostgreSQL's jsonb refuses,
 * stores its neighbours, and stores SQL metacharacters in details as they
 * were sent. */
#include "audit_fixture.h"
#include "cms/v1/audit.pb-c.h"
#include "cms/v1/command.pb-c.h"
#include "doorfx.h"
#include "svcfx.h"

#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static svcfx F;

static void query_setup(void)
{
    svcfx_setup(&F, "audit_bad");
    svcfx_start(&F, "cms-identity", NULL);
    svcfx_start_audit_at(&F, 1);
}

static void query_teardown(void)
{
    svcfx_teardown(&F);
}

TestSuite(bad_query, .init = query_setup, .fini = query_teardown, .timeout = 120);

static const doorfx_verb VERBS[] = {
    {"query", &cms__v1__query_audit_log__descriptor},
    {NULL, NULL},
};

Test(bad_query, the_query_refuses_bytes_that_are_not_its_request)
{
    doorfx_wire(F.nc, F.prefix, "audit", F.admin_key, VERBS, 64 * 1024);
    Cms__V1__QueryAuditLog m = CMS__V1__QUERY_AUDIT_LOG__INIT;
    char field[256], msg[256];
    cr_assert_eq(svcfx_call(&F, "audit", F.admin_key, NULL, "query", &m.base,
                            &cms__v1__audit_page__descriptor, NULL, field, msg),
                 0, "and it still answers: %s", msg);
}

Test(bad_query, sql_metacharacters_in_every_filter_are_refused_naming_it)
{
    static const char *const nasty[] = {
        "x'; DROP TABLE audit_logs; --",
        "' OR '1'='1",
        "back\\slash\\'",
        "$1",
    };
    static const char *const fields[] = {"resource_type", "resource_id", "actor",
                                         "event_type",    "since",       "after"};
    for (size_t i = 0; i < sizeof nasty / sizeof nasty[0]; i++)
        for (size_t k = 0; k < sizeof fields / sizeof fields[0]; k++) {
            Cms__V1__QueryAuditLog m = CMS__V1__QUERY_AUDIT_LOG__INIT;
            char *v = (char *)nasty[i];
            switch (k) {
            case 0:
                m.resource_type = v;
                break;
            case 1:
                m.resource_id = v;
                break;
            case 2:
                m.actor = v;
                break;
            case 3:
                m.event_type = v;
                break;
            case 4:
                m.since = v;
                break;
            default:
                m.after = v;
                break;
            }
            char field[256], msg[256];
            cr_assert_eq(svcfx_call(&F, "audit", F.admin_key, NULL, "query", &m.base,
                                    &cms__v1__audit_page__descriptor, NULL, field, msg),
                         CMS__V1__ERROR_CODE__INVALID_ARGUMENT, "%s = %s", fields[k], nasty[i]);
            cr_assert_str_eq(field, fields[k], "%s = %s: %s", fields[k], nasty[i], msg);
        }
    char *n = svcfx_sql(&F, "SELECT count(*) FROM audit_logs");
    cr_assert_not_null(n, "audit_logs is still there");
    free(n);
}

Test(bad_query, probes_answer_through_hundreds_of_idle_and_slow_connections)
{
    doorfx_slowloris(F.ports[1], 300, 3000);
    cr_assert_geq(svcfx_metric(&F, 1, "cms_http_connections_evicted_total"), 300 - 128);
}

/* ---- the consumer ---- */

static audfx fx;
static audfx_event *evs;
static size_t nevs;

static void ingest_fini(void)
{
    audfx_teardown(&fx);
    audfx_events_free(evs, nevs);
    evs = NULL;
    nevs = 0;
}

TestSuite(bad_events, .fini = ingest_fini, .timeout = 120);

static void set_details(audfx_event *e, const char *details)
{
    free(e->details);
    e->details = strdup(details);
    cr_assert_not_null(e->details);
}

static void publish_raw(const audfx_event *e, const uint8_t *data, size_t len)
{
    char subject[160];
    snprintf(subject, sizeof subject, "cms.events.%s", e->event_type);
    audfx_publish(&fx, subject, e->id, NULL, data, len);
}

Test(bad_events, poison_details_are_dead_lettered_unchanged_and_nasty_text_stored_as_sent)
{
    audfx_setup(&fx, "aud_bad", 4);
    /* evs[0], evs[1]: stored; evs[2..5]: refused */
    evs = audfx_events(&fx, nevs = 6);
    json_t *nasty = json_pack("{s:s,s:s,s:{s:s}}", "q", "x'; DROP TABLE audit_logs; --", "b",
                              "back\\slash \\' $1 $$ %s", "'; --", "' OR '1'='1", "\"); --");
    cr_assert_not_null(nasty);
    char *nj = json_dumps(nasty, JSON_COMPACT);
    set_details(&evs[1], nj);
    free(nj);
    json_decref(nasty);
    /* a NUL inside details_json: cut short there, it would have been a
     * valid object, "{"a":"b"}" */
    set_details(&evs[2], "{\"a\":\"b\"}X{\"hidden\":1}");
    size_t nul_len;
    uint8_t *nul = audfx_pack(&evs[2], &nul_len);
    uint8_t *x = memmem(nul, nul_len, "}X{", 3);
    cr_assert_not_null(x);
    x[1] = '\0';
    /* nested deeper than JSON may be, numbers jsonb refuses */
    enum { DEPTH = 200 };
    char deep[2 * DEPTH + 16];
    memcpy(deep, "{\"d\":", 5);
    memset(deep + 5, '[', DEPTH);
    memset(deep + 5 + DEPTH, ']', DEPTH);
    memcpy(deep + 5 + 2 * DEPTH, "}", 2);
    set_details(&evs[3], deep);
    set_details(&evs[4], "{\"n\":1e400}");
    set_details(&evs[5], "{\"n\":1e-16384}");

    char durable[48];
    snprintf(durable, sizeof durable, "%s", fx.prefix);
    int port;
    pid_t pid = audfx_start(&fx, durable, &port, NULL);
    cr_assert(audfx_wait_readyz(port, 200, 30000));
    audfx_publish_event(&fx, &evs[0], NULL);
    publish_raw(&evs[2], nul, nul_len);
    for (size_t i = 3; i < 6; i++)
        audfx_publish_event(&fx, &evs[i], NULL);
    audfx_publish_event(&fx, &evs[1], NULL);
    audfx_publish_wait(&fx);
    audfx_wait_stored(&fx, durable, 2, pid, 30000, 0);
    char report[1024];
    cr_assert_eq(audfx_check_rows(&fx, evs, 2, report, sizeof report), 0,
                 "the neighbours, nasty text and all, stored as sent: %s", report);

    audfx_dead *d = NULL;
    size_t nd = audfx_read_dlq(&fx, &d);
    cr_assert_eq(nd, 4, "one dead letter for each refused event");
    int undecodable = 0, invalid = 0;
    for (size_t i = 0; i < nd; i++) {
        if (strcmp(d[i].reason, "undecodable") == 0) {
            undecodable++;
            cr_assert_eq(d[i].len, nul_len);
            cr_assert_eq(memcmp(d[i].data, nul, nul_len), 0, "the original bytes, NUL and all");
        } else {
            cr_assert_str_eq(d[i].reason, "invalid_details", "dead letter %zu", i);
            invalid++;
        }
    }
    cr_assert(undecodable == 1 && invalid == 3, "undecodable %d, invalid_details %d", undecodable,
              invalid);
    audfx_dead_free(d, nd);
    free(nul);
}
