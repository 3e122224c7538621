/* A whole service process on the runtime (tests/common/testsvc.c): it becomes
 * ready only with a migrated database, NATS and its streams; serves its
 * probes and metrics; answers commands; records events through the outbox;
 * drains and exits 0 on SIGTERM; and refuses a consumer whose name is not
 * its service's. It connects as its own role, cms_testsvc's login. */
#include "cms/v1/command.pb-c.h"
#include "cms/v1/envelope.pb-c.h"
#include "testcmd.h"
#include "testenv.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <math.h>
#include <nats/nats.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

/* cms-testsvc on db as its role, answering HTTP on port; killed if this
 * test dies. */
static pid_t spawn_service(const char *db, int port)
{
    char as_testsvc[600], dburl[640], addr[64];
    cms_test_db_as(db, "testsvc", as_testsvc, sizeof as_testsvc);
    snprintf(dburl, sizeof dburl, "CMS_DATABASE_URL=%s", as_testsvc);
    snprintf(addr, sizeof addr, "CMS_HTTP_ADDR=127.0.0.1:%d", port);
    const char *set[] = {dburl, addr, "CMS_DRAIN_TIMEOUT=5s", "CMS_LOG_LEVEL=info", NULL};
    pid_t pid = cms_test_spawn_service("cms-testsvc", NULL, set, NULL);
    cr_assert_gt(pid, 0, "cms-testsvc started");
    return pid;
}

/* Until /readyz answers want (polled: readiness has no event); fails after
 * 20 s or as soon as the service exits. */
static void wait_readyz(int port, pid_t pid, int want, char *body, size_t len)
{
    cr_assert(cms_test_wait_http(port, "/readyz", want, NULL, pid, 20000, body, len),
              "/readyz never answered %d (last: %s)", want, body);
}

static int stop_service(pid_t pid, double *took_ms)
{
    double t0 = cms_test_now_ms();
    kill(pid, SIGTERM);
    int st = 0;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    *took_ms = cms_test_now_ms() - t0;
    cr_assert(WIFEXITED(st), "the service exited by itself (status %d)", st);
    return WEXITSTATUS(st);
}

/* The value of one series of /metrics, or NAN if absent. */
static double metric_value(const char *body, const char *series)
{
    size_t n = strlen(series);
    for (const char *p = body; (p = strstr(p, series)) != NULL; p += n) {
        if ((p == body || p[-1] == '\n') && p[n] == ' ')
            return strtod(p + n + 1, NULL);
    }
    return NAN;
}

/* The names dashboards rely on: the standard ones present and plausible,
 * the renamed ones gone, and one style of HELP for ours. */
static void check_metric_names(const char *body)
{
    cr_assert_lt(strlen(body), 65535, "the whole of /metrics was read");
    cr_assert_not_null(strstr(body, "# TYPE cms_build_info gauge\n"), "%s", body);
    cr_assert_not_null(strstr(body, "\ncms_build_info{version=\"" CMS_VERSION "\"} 1\n"), "%s",
                       body);
    cr_assert_not_null(strstr(body, "# TYPE cms_loop_lag_seconds histogram\n"), "%s", body);
    cr_assert_not_null(strstr(body, "# TYPE cms_pg_job_duration_seconds histogram\n"), "%s", body);
    cr_assert_not_null(strstr(body, "# TYPE cms_nats_messages_dropped_total counter\n"), "%s",
                       body);
    cr_assert_not_null(strstr(body, "# TYPE process_cpu_seconds_total counter\n"), "%s", body);
    const char *gone[] = {"cms_loop_lag_max_seconds", "cms_pg_job_seconds",
                          "cms_nats_dropped_total", "cms_audit_insert_seconds",
                          "cms_identity_expired_total"};
    for (size_t i = 0; i < sizeof gone / sizeof gone[0]; i++)
        cr_assert_null(strstr(body, gone[i]), "%s is gone:\n%s", gone[i], body);

    double now = (double)time(NULL);
    double start = metric_value(body, "process_start_time_seconds");
    cr_assert_gt(metric_value(body, "process_resident_memory_bytes"), 0, "%s", body);
    cr_assert_gt(metric_value(body, "process_virtual_memory_bytes"), 0, "%s", body);
    cr_assert_geq(metric_value(body, "process_open_fds"), 3, "%s", body);
    cr_assert_geq(metric_value(body, "process_max_fds"), metric_value(body, "process_open_fds"));
    cr_assert_geq(metric_value(body, "process_cpu_seconds_total"), 0, "%s", body);
    /* boot time is whole seconds: allow one */
    cr_assert_leq(start, now + 1, "started in the future: %.2f, now %.0f", start, now);
    cr_assert_gt(start, now - 3600, "started over an hour ago: %.2f, now %.0f", start, now);

    /* HELP: a capital first letter, no final period (process_* keep the
     * client libraries' own texts); counters end in _total */
    for (const char *l = body; *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : l + strlen(l)) {
        const char *eol = strchr(l, '\n');
        size_t len = eol ? (size_t)(eol - l) : strlen(l);
        char line[512];
        snprintf(line, sizeof line, "%.*s", (int)len, l);
        if (strncmp(line, "# HELP cms_", 11) == 0) {
            const char *text = strchr(line + 7, ' ');
            cr_assert_not_null(text, "%s", line);
            cr_assert(text[1] >= 'A' && text[1] <= 'Z', "HELP starts with a capital: %s", line);
            cr_assert_neq(line[strlen(line) - 1], '.', "HELP without a final period: %s", line);
        } else if (strncmp(line, "# TYPE ", 7) == 0 && strstr(line, " counter") != NULL) {
            const char *name_end = strchr(line + 7, ' ');
            cr_assert(name_end - line > 7 + 6 && strncmp(name_end - 6, "_total", 6) == 0,
                      "a counter ends in _total: %s", line);
        }
    }
}

/* A key cms-testsvc accepts: any id, a secret of 32 zero bytes. */
#define TEST_KEY "cms_0190f0a1b2c37d4e8f9a0b1c2d3e4f50_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"

static Cms__V1__Reply *request_as(natsConnection *nc, const char *key, const char *verb,
                                  const char *event_id)
{
    Cms__V1__Envelope e = CMS__V1__ENVELOPE__INIT;
    e.event_id = (char *)event_id;
    e.event_type = (char *)"testsvc.emitted";
    char subject[64];
    snprintf(subject, sizeof subject, "cms.cmd.testsvc.%s", verb);
    return cms_test_command(nc, subject, key, NULL, &e.base);
}

static Cms__V1__Reply *request(natsConnection *nc, const char *verb, const char *event_id)
{
    return request_as(nc, TEST_KEY, verb, event_id);
}

Test(service, ready_serves_probes_and_commands_then_drains_on_sigterm, .timeout = 90)
{
    char db[512], body[65536];
    cr_assert_eq(cms_test_db_create("svc_test", 1, db, sizeof db), 0);
    cr_assert_eq(cms_test_db_grant_testsvc(db, NULL), 0);
    int port = cms_test_free_port();
    pid_t pid = spawn_service(db, port);
    wait_readyz(port, pid, 200, body, sizeof body);
    cr_assert_eq(cms_test_http_get(port, "/healthz", body, sizeof body), 200);
    cr_assert_eq(cms_test_http_get(port, "/metrics", body, sizeof body), 200);
    cr_assert_not_null(strstr(body, "cms_pg_ready_connections"), "pool metrics exported");
    cr_assert_not_null(strstr(body, "cms_nats_connected"), "nats metrics exported");
    check_metric_names(body);
    double cpu_before = metric_value(body, "process_cpu_seconds_total");

    natsConnection *nc = NULL;
    cr_assert_eq(natsConnection_ConnectTo(&nc, cms_test_env("CMS_TEST_NATS_URL")), NATS_OK);
    Cms__V1__Reply *r = request(nc, "echo", "hello");
    cr_assert_eq(r->outcome_case, CMS__V1__REPLY__OUTCOME_RESULT);
    cms__v1__reply__free_unpacked(r, NULL);
    r = request(nc, "emit", "");
    cr_assert_eq(r->outcome_case, CMS__V1__REPLY__OUTCOME_RESULT, "emit: %s",
                 r->outcome_case == CMS__V1__REPLY__OUTCOME_ERROR ? r->error->message : "");
    cms__v1__reply__free_unpacked(r, NULL);
    /* every command needs a caller: no key, a malformed one, or one the
     * resolver refuses are all PERMISSION_DENIED, and nothing runs */
    const char *bad[] = {NULL, "cms_nonsense",
                         "cms_0190f0a1b2c37d4e8f9a0b1c2d3e4f50_"
                         "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAE"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        r = request_as(nc, bad[i], "emit", "");
        cr_assert_eq(r->outcome_case, CMS__V1__REPLY__OUTCOME_ERROR, "key %zu refused", i);
        cr_assert_eq(r->error->code, CMS__V1__ERROR_CODE__PERMISSION_DENIED);
        cr_assert_str_eq(r->error->field, "Authorization");
        cms__v1__reply__free_unpacked(r, NULL);
    }
    natsConnection_Destroy(nc);
    /* the refused emits wrote nothing: one row ever (published or not) */
    char *rows = cms_test_sql(db, "SELECT count(*) FROM outbox WHERE source = 'testsvc'");
    cr_assert(strcmp(rows, "0") == 0 || strcmp(rows, "1") == 0, "%s rows", rows);
    free(rows);
    cr_assert_eq(cms_test_http_get(port, "/metrics", body, sizeof body), 200);
    cr_assert_not_null(strstr(body, "cms_command_duration_seconds_count{verb=\"echo\"} 1"),
                       "every command timed, by verb:\n%s", body);
    cr_assert_not_null(strstr(body, "cms_command_duration_seconds_count{verb=\"emit\"} 4"),
                       "every command timed, by verb:\n%s", body);
    cr_assert_not_null(
        strstr(body, "cms_commands_total{verb=\"emit\",code=\"PERMISSION_DENIED\"} 3"),
        "the three refusals counted by their code:\n%s", body);
    cr_assert_not_null(strstr(body, "cms_commands_total{verb=\"emit\",code=\"OK\"} 1"),
                       "and the answer:\n%s", body);
    cr_assert_null(strstr(body, "cms_outbox_published_total 2"), "one event at most");
    check_metric_names(body);
    cr_assert_geq(metric_value(body, "process_cpu_seconds_total"), cpu_before,
                  "CPU seconds never go down:\n%s", body);

    double took;
    int code = stop_service(pid, &took);
    cr_assert_eq(code, 0, "a clean drain exits 0");
    cr_assert_lt(took, 8000, "drained within its bound: %.0f ms", took);
    /* the event was committed with the command and relayed before exit;
     * its row is kept, marked with the ack (outbox-retain) */
    char *left = cms_test_sql(db, "SELECT count(*) FROM outbox WHERE published_at IS NULL");
    cr_assert_str_eq(left, "0", "the relay published the event before exiting");
    free(left);
    char *kept = cms_test_sql(db, "SELECT count(*) FROM outbox WHERE published_at IS NOT NULL "
                                  "AND stream = 'CMS_EVENTS' AND stream_seq > 0");
    cr_assert_str_eq(kept, "1", "the published row is kept with its ack");
    free(kept);
    cms_test_db_drop(db);
}

Test(service, not_ready_on_an_unmigrated_database, .timeout = 60)
{
    char db[512], body[65536];
    cr_assert_eq(cms_test_db_create("svc_empty", 0, db, sizeof db), 0);
    int port = cms_test_free_port();
    pid_t pid = spawn_service(db, port);
    wait_readyz(port, pid, 503, body, sizeof body);
    /* the first 503 may still be about connecting: wait for the schema verdict */
    (void)cms_test_wait_http(port, "/readyz", 503, "cms-migrate", pid, 10000, body, sizeof body);
    cr_assert_not_null(strstr(body, "cms-migrate up"), "says what to do: %s", body);
    double took;
    cr_assert_eq(stop_service(pid, &took), 0);
    cms_test_db_drop(db);
}

Test(service, a_consumer_named_outside_its_service_stops_the_start, .timeout = 60)
{
    char db[512], as_testsvc[600], dburl[640], log[128];
    cr_assert_eq(cms_test_db_create("svc_cname", 1, db, sizeof db), 0);
    cr_assert_eq(cms_test_db_grant_testsvc(db, NULL), 0);
    cms_test_db_as(db, "testsvc", as_testsvc, sizeof as_testsvc);
    snprintf(dburl, sizeof dburl, "CMS_DATABASE_URL=%s", as_testsvc);
    snprintf(log, sizeof log, "/tmp/cms-svc-cname-%d.log", (int)getpid());
    unlink(log);
    /* its rows would be identity's: the database would refuse its lease */
    const char *set[] = {dburl, "CMS_TESTSVC_CONSUMER=identity-x",
                         "CMS_TESTSVC_CONSUME_SUBJECT=cms.events.nothing.>", NULL};
    int port = 0;
    pid_t pid = cms_test_spawn_http_service("cms-testsvc", NULL, set, log, &port);
    cr_assert_gt(pid, 0);
    int st = 0;
    cr_assert_eq(cms_test_wait_exit(pid, 20000, &st), pid, "cms-testsvc did not stop");
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) != 0, "exit status %d", st);
    FILE *f = fopen(log, "r");
    cr_assert_not_null(f);
    char text[16384];
    size_t n = fread(text, 1, sizeof text - 1, f);
    text[n] = '\0';
    fclose(f);
    unlink(log);
    cr_assert_not_null(strstr(text, "bad consumer name"), "%s", text);
    cms_test_db_drop(db);
}

Test(service, help_lists_every_option_and_bad_usage_exits_2)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "%s/cms-testsvc --help", cms_test_env("CMS_TEST_BIN_DIR"));
    FILE *p = popen(cmd, "r");
    char out[8192] = {0};
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = '\0';
    cr_assert_eq(pclose(p), 0);
    const char *want[] = {"--database-url", "CMS_DATABASE_URL", "--nats-url",     "--http-addr",
                          "--log-level",    "--pg-pool-size",   "--drain-timeout"};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        cr_assert_not_null(strstr(out, want[i]), "--help mentions %s", want[i]);
    snprintf(cmd, sizeof cmd, "%s/cms-testsvc --no-such-flag 2>/dev/null",
             cms_test_env("CMS_TEST_BIN_DIR"));
    int st = system(cmd);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 2);
    snprintf(cmd, sizeof cmd, "%s/cms-testsvc --log-level=loud 2>/dev/null",
             cms_test_env("CMS_TEST_BIN_DIR"));
    st = system(cmd);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 2);
}
