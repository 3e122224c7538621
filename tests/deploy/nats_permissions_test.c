/* The permissions of deploy/nats/gen-conf, enforced by a nats-server of the
 * test's own running that configuration as the local stack does (not the
 * widened one of tests/run): for each role a raw client tries what it must
 * not do, and the server refuses it; what it must do still works.
 *
 * A refusal is read after a flush: the server answers a SUB or PUB it
 * refuses with -ERR 'Permissions Violation ...' before the flush's PONG,
 * so by then nats.c holds it as the connection's last error. */
#include "testenv.h"

#include <criterion/criterion.h>
#include <nats/nats.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef CMS_SOURCE_DIR
#error CMS_SOURCE_DIR must name the repository
#endif

static char dir[256];
static char url[64];
static pid_t server = -1;

static void run_or_fail(const char *cmd)
{
    int rc = system(cmd);
    cr_assert(rc == 0, "%s: exit %d", cmd, rc);
}

/* The local stack's configuration, in a directory of the test's own. */
static void start_server(void)
{
    snprintf(dir, sizeof dir, "/tmp/cms-natsperm.XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    int port = cms_test_free_port();
    snprintf(url, sizeof url, "nats://127.0.0.1:%d", port);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, CMS_SOURCE_DIR "/deploy/nats/gen-conf %s --port %d --monitor-port 0",
             dir, port);
    run_or_fail(cmd);
    char conf[300], log[300];
    snprintf(conf, sizeof conf, "%s/nats.conf", dir);
    snprintf(log, sizeof log, "%s/nats-server.log", dir);
    pid_t parent = getpid();
    fflush(NULL);
    server = fork();
    cr_assert_geq(server, 0);
    if (server == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        if (freopen(log, "a", stdout) == NULL || freopen(log, "a", stderr) == NULL)
            _exit(127);
        execlp("nats-server", "nats-server", "-c", conf, (char *)NULL);
        _exit(127);
    }
}

static void stop_server(void)
{
    if (server > 0) {
        kill(server, SIGKILL);
        waitpid(server, NULL, 0);
        server = -1;
    }
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    (void)system(cmd);
}

static void password_of(const char *user, char *pw, size_t len)
{
    char path[300], line[256];
    snprintf(path, sizeof path, "%s/creds/%s.creds", dir, user);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "%s", path);
    cr_assert_not_null(fgets(line, sizeof line, f));
    fclose(f);
    line[strcspn(line, "\n")] = '\0';
    char *colon = strchr(line, ':');
    cr_assert_not_null(colon);
    snprintf(pw, len, "%s", colon + 1);
}

/* A raw client as user, with its own inbox prefix; waits for the server
 * to accept connections (it was just started). */
static natsConnection *as(const char *user)
{
    char pw[128], prefix[64];
    password_of(user, pw, sizeof pw);
    snprintf(prefix, sizeof prefix, "_INBOX.%s", user);
    natsOptions *o = NULL;
    cr_assert_eq(natsOptions_Create(&o), NATS_OK);
    natsOptions_SetURL(o, url);
    natsOptions_SetUserInfo(o, user, pw);
    natsOptions_SetCustomInboxPrefix(o, prefix);
    natsOptions_SetRetryOnFailedConnect(o, true, NULL, NULL);
    natsOptions_SetMaxReconnect(o, 100);
    natsOptions_SetReconnectWait(o, 50);
    natsConnection *nc = NULL;
    natsStatus st = natsConnection_Connect(&nc, o);
    natsOptions_Destroy(o);
    cr_assert_eq(st, NATS_OK, "connect as %s: %s", user, natsStatus_GetText(st));
    cr_assert_eq(natsConnection_FlushTimeout(nc, 5000), NATS_OK, "%s connected", user);
    return nc;
}

/* After a flush: whether the server refused something on nc, and what. */
static bool refused(natsConnection *nc, const char *subject)
{
    (void)natsConnection_FlushTimeout(nc, 5000);
    const char *text = NULL;
    natsStatus st = natsConnection_GetLastError(nc, &text);
    return st == NATS_NOT_PERMITTED && text != NULL && strstr(text, subject) != NULL;
}

static void assert_sub_refused(const char *user, const char *subject)
{
    natsConnection *nc = as(user);
    natsSubscription *sub = NULL;
    (void)natsConnection_SubscribeSync(&sub, nc, subject);
    cr_assert(refused(nc, subject), "%s may not subscribe to %s", user, subject);
    natsSubscription_Destroy(sub);
    natsConnection_Destroy(nc);
}

static void assert_sub_allowed(const char *user, const char *subject)
{
    natsConnection *nc = as(user);
    natsSubscription *sub = NULL;
    cr_assert_eq(natsConnection_SubscribeSync(&sub, nc, subject), NATS_OK);
    cr_assert_not(refused(nc, subject), "%s may subscribe to %s", user, subject);
    natsSubscription_Destroy(sub);
    natsConnection_Destroy(nc);
}

static void assert_pub_refused(const char *user, const char *subject)
{
    natsConnection *nc = as(user);
    (void)natsConnection_PublishString(nc, subject, "{}");
    cr_assert(refused(nc, subject), "%s may not publish to %s", user, subject);
    natsConnection_Destroy(nc);
}

/* Messages in stream (as the migrator sees it). */
static uint64_t stream_msgs(const char *stream)
{
    natsConnection *nc = as("migrator");
    jsCtx *js = NULL;
    cr_assert_eq(natsConnection_JetStream(&js, nc, NULL), NATS_OK);
    jsStreamInfo *si = NULL;
    natsStatus st = js_GetStreamInfo(&si, js, stream, NULL, NULL);
    cr_assert_eq(st, NATS_OK, "stream %s exists: %s", stream, natsStatus_GetText(st));
    uint64_t n = si->State.Msgs;
    jsStreamInfo_Destroy(si);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    return n;
}

/* The streams and durables, made the way the local stack makes them. */
static void provision(void)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "CMS_NATS_URL=%s CMS_NATS_CREDS=%s/creds/migrator.creds %s/cms-migrate provision "
             "--provision-timeout 20s "
             ">>%s/provision.log 2>&1",
             url, dir, cms_test_env("CMS_TEST_BIN_DIR"), dir);
    run_or_fail(cmd);
}

static void teardown(void)
{
    stop_server();
}

TestSuite(nats_permissions, .init = start_server, .fini = teardown);

Test(nats_permissions, a_client_sends_commands_and_hears_only_its_own_replies)
{
    assert_sub_refused("client", "cms.cmd.>");
    assert_sub_refused("client", "_INBOX.>");
    assert_sub_refused("client", "_INBOX.identity.>");
    assert_sub_refused("client", "cms.events.>");
    assert_pub_refused("client", "cms.events.identity.created");
    assert_pub_refused("client", "$JS.API.STREAM.LIST");
    /* a command and its reply: identity answers as a responder */
    natsConnection *id = as("identity"), *cl = as("client");
    natsSubscription *sub = NULL;
    cr_assert_eq(natsConnection_QueueSubscribeSync(&sub, id, "cms.cmd.identity.get", "identity"),
                 NATS_OK);
    cr_assert_eq(natsConnection_FlushTimeout(id, 5000), NATS_OK);
    const char *reply_to = "_INBOX.client.t1";
    natsSubscription *replies = NULL;
    cr_assert_eq(natsConnection_SubscribeSync(&replies, cl, reply_to), NATS_OK);
    cr_assert_eq(natsConnection_PublishRequestString(cl, "cms.cmd.identity.get", reply_to, "q"),
                 NATS_OK);
    natsMsg *req = NULL;
    cr_assert_eq(natsSubscription_NextMsg(&req, sub, 5000), NATS_OK, "identity got the command");
    cr_assert_eq(natsConnection_PublishString(id, natsMsg_GetReply(req), "a"), NATS_OK);
    natsMsg *rep = NULL;
    cr_assert_eq(natsSubscription_NextMsg(&rep, replies, 5000), NATS_OK,
                 "the client got the reply");
    cr_assert_str_eq(natsMsg_GetData(rep), "a");
    cr_assert_not(refused(cl, "cms.cmd"), "the allowed path raised nothing");
    cr_assert_not(refused(id, "_INBOX"), "identity may reply");
    /* only services reply: a client or a foreign publisher writes no inbox */
    assert_pub_refused("client", "_INBOX.identity.forged");
    assert_pub_refused("publisher", "_INBOX.client.forged");
    assert_pub_refused("worker", "_INBOX.client.forged");
    natsMsg_Destroy(req);
    natsMsg_Destroy(rep);
    natsSubscription_Destroy(sub);
    natsSubscription_Destroy(replies);
    natsConnection_Destroy(id);
    natsConnection_Destroy(cl);
}

Test(nats_permissions, only_identity_answers_authenticate)
{
    assert_sub_allowed("identity", "cms.cmd.identity.authenticate");
    const char *others[] = {"contracts", "training", "audit", "worker", "client", "publisher"};
    for (size_t i = 0; i < sizeof others / sizeof others[0]; i++) {
        assert_sub_refused(others[i], "cms.cmd.identity.authenticate");
        assert_sub_refused(others[i], "cms.cmd.identity.>");
    }
    /* each service subscribes only to its own commands */
    assert_sub_allowed("contracts", "cms.cmd.contracts.>");
    assert_sub_refused("contracts", "cms.cmd.training.>");
    assert_sub_refused("audit", "cms.cmd.>");
}

Test(nats_permissions, events_only_of_ones_own_resource_types)
{
    provision();
    assert_pub_refused("audit", "cms.events.identity.created");
    assert_pub_refused("publisher", "cms.events.identity.created");
    assert_pub_refused("publisher", "cms.events.credential.issued");
    assert_pub_refused("publisher", "cms.events.contract.signed");
    assert_pub_refused("publisher", "cms.events.training_job.started");
    assert_pub_refused("contracts", "cms.events.identity.created");
    assert_pub_refused("publisher", "cms.dlq.audit");
    cr_assert_eq(stream_msgs("CMS_EVENTS"), 0, "nothing refused was stored");
    /* allowed: identity's own types, and a foreign type from a publisher */
    natsConnection *id = as("identity"), *pub = as("publisher");
    cr_assert_eq(natsConnection_PublishString(id, "cms.events.identity.created", "e1"), NATS_OK);
    cr_assert_eq(natsConnection_PublishString(pub, "cms.events.shipment.sent", "e2"), NATS_OK);
    cr_assert_not(refused(id, "cms.events"));
    cr_assert_not(refused(pub, "cms.events"));
    natsConnection_Destroy(id);
    natsConnection_Destroy(pub);
    cr_assert_eq(stream_msgs("CMS_EVENTS"), 2, "both allowed events were stored");
}

Test(nats_permissions, only_the_migrator_changes_streams_and_consumers)
{
    provision();
    const char *users[] = {"identity", "contracts", "training", "audit",
                           "worker",   "client",    "publisher"};
    const char *apis[] = {"$JS.API.STREAM.DELETE.CMS_EVENTS",
                          "$JS.API.STREAM.PURGE.CMS_EVENTS",
                          "$JS.API.STREAM.UPDATE.CMS_EVENTS",
                          "$JS.API.STREAM.CREATE.MINE",
                          "$JS.API.CONSUMER.DELETE.CMS_EVENTS.audit",
                          "$JS.API.CONSUMER.DURABLE.CREATE.CMS_EVENTS.mine",
                          "$JS.API.CONSUMER.CREATE.CMS_EVENTS.mine.cms.events.>"};
    for (size_t u = 0; u < sizeof users / sizeof users[0]; u++)
        for (size_t a = 0; a < sizeof apis / sizeof apis[0]; a++)
            assert_pub_refused(users[u], apis[a]);
    /* still there, and the migrator may */
    natsConnection *nc = as("migrator");
    jsCtx *js = NULL;
    cr_assert_eq(natsConnection_JetStream(&js, nc, NULL), NATS_OK);
    jsConsumerInfo *ci = NULL;
    cr_assert_eq(js_GetConsumerInfo(&ci, js, "CMS_EVENTS", "audit", NULL, NULL), NATS_OK,
                 "the audit durable is still there");
    jsConsumerInfo_Destroy(ci);
    cr_assert_eq(js_PurgeStream(js, "CMS_DLQ", NULL, NULL), NATS_OK, "the migrator may purge");
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    cr_assert_eq(stream_msgs("CMS_EVENTS"), 0);
}

Test(nats_permissions, only_audit_pulls_and_acks_its_durable)
{
    provision();
    const char *others[] = {"identity", "contracts", "training", "worker", "client", "publisher"};
    for (size_t i = 0; i < sizeof others / sizeof others[0]; i++) {
        assert_pub_refused(others[i], "$JS.API.CONSUMER.MSG.NEXT.CMS_EVENTS.audit");
        assert_pub_refused(others[i], "$JS.ACK.CMS_EVENTS.audit.1.1.1.1700000000000000000.0");
        assert_pub_refused(others[i], "$JS.API.CONSUMER.INFO.CMS_EVENTS.audit");
    }
    /* audit pulls one event and acks it */
    natsConnection *id = as("identity"), *au = as("audit");
    cr_assert_eq(natsConnection_PublishString(id, "cms.events.identity.created", "e"), NATS_OK);
    cr_assert_eq(natsConnection_FlushTimeout(id, 5000), NATS_OK);
    natsSubscription *sub = NULL;
    cr_assert_eq(natsConnection_SubscribeSync(&sub, au, "_INBOX.audit.pull"), NATS_OK);
    cr_assert_eq(natsConnection_PublishRequestString(
                     au, "$JS.API.CONSUMER.MSG.NEXT.CMS_EVENTS.audit", "_INBOX.audit.pull",
                     "{\"batch\":1,\"expires\":5000000000}"),
                 NATS_OK);
    natsMsg *m = NULL;
    cr_assert_eq(natsSubscription_NextMsg(&m, sub, 5000), NATS_OK, "audit pulled the event");
    cr_assert_str_eq(natsMsg_GetData(m), "e");
    cr_assert_eq(natsConnection_PublishString(au, natsMsg_GetReply(m), "+ACK"), NATS_OK);
    cr_assert_not(refused(au, "$JS"), "audit's pull and ack raised nothing");
    natsMsg_Destroy(m);
    natsSubscription_Destroy(sub);
    natsConnection_Destroy(id);
    natsConnection_Destroy(au);
}

Test(nats_permissions, only_contracts_pulls_its_durables_and_each_holds_its_events_only)
{
    provision();
    const char *durables[] = {"contracts-identity", "contracts-credential"};
    const char *others[] = {"identity", "training", "audit", "worker", "client", "publisher"};
    char subject[160];
    for (size_t d = 0; d < 2; d++)
        for (size_t i = 0; i < sizeof others / sizeof others[0]; i++) {
            snprintf(subject, sizeof subject, "$JS.API.CONSUMER.MSG.NEXT.CMS_EVENTS.%s",
                     durables[d]);
            assert_pub_refused(others[i], subject);
        }
    assert_pub_refused("contracts", "$JS.API.CONSUMER.MSG.NEXT.CMS_EVENTS.audit");
    /* contracts-credential is filtered: an identity event is not its */
    natsConnection *id = as("identity"), *ct = as("contracts");
    cr_assert_eq(natsConnection_PublishString(id, "cms.events.identity.created", "i"), NATS_OK);
    cr_assert_eq(natsConnection_PublishString(id, "cms.events.credential.issued", "c"), NATS_OK);
    cr_assert_eq(natsConnection_FlushTimeout(id, 5000), NATS_OK);
    natsSubscription *sub = NULL;
    cr_assert_eq(natsConnection_SubscribeSync(&sub, ct, "_INBOX.contracts.pull"), NATS_OK);
    cr_assert_eq(natsConnection_PublishRequestString(
                     ct, "$JS.API.CONSUMER.MSG.NEXT.CMS_EVENTS.contracts-credential",
                     "_INBOX.contracts.pull", "{\"batch\":2,\"expires\":2000000000}"),
                 NATS_OK);
    natsMsg *m = NULL;
    cr_assert_eq(natsSubscription_NextMsg(&m, sub, 5000), NATS_OK, "contracts pulled an event");
    cr_assert_str_eq(natsMsg_GetData(m), "c", "the credential event, not the identity one");
    cr_assert_eq(natsConnection_PublishString(ct, natsMsg_GetReply(m), "+ACK"), NATS_OK);
    cr_assert_not(refused(ct, "$JS"), "contracts' pull and ack raised nothing");
    natsMsg_Destroy(m);
    natsSubscription_Destroy(sub);
    natsConnection_Destroy(id);
    natsConnection_Destroy(ct);
}

Test(nats_permissions, a_service_binds_to_what_the_migrator_provisions_and_says_what_is_missing)
{
    char db[512], as_audit[600], dburl[640], natsurl[120], creds[320];
    cr_assert_eq(cms_test_db_create("natsperm", 1, db, sizeof db), 0);
    cms_test_db_as(db, "audit", as_audit, sizeof as_audit);
    snprintf(dburl, sizeof dburl, "CMS_DATABASE_URL=%s", as_audit);
    snprintf(natsurl, sizeof natsurl, "CMS_NATS_URL=%s", url);
    snprintf(creds, sizeof creds, "CMS_NATS_CREDS=%s/creds/audit.creds", dir);
    const char *set[] = {dburl, natsurl, creds, NULL};
    int port = 0;
    int pid = cms_test_spawn_http_service("cms-audit", NULL, set, NULL, &port);
    cr_assert_gt(pid, 0);
    char body[512];
    /* it may not make the streams itself, and says who does */
    cr_assert(cms_test_wait_http(port, "/readyz", 503, "run cms-migrate provision", pid, 20000,
                                 body, sizeof body),
              "not ready while the streams are missing: %s", body);
    provision();
    cr_assert(cms_test_wait_http(port, "/readyz", 200, NULL, pid, 30000, body, sizeof body),
              "ready once the migrator made them: %s", body);
    kill(pid, SIGTERM);
    int status = 0;
    cr_assert_eq(cms_test_wait_exit(pid, 20000, &status), pid);
    cms_test_db_drop(db);
}

/* Training work: only cms-training dispatches to cms.work.training and
 * tells jobs to stop; only a worker pulls and acks the workers durable,
 * reports (a command of cms-training) and hears the stops; a worker
 * publishes no event and dispatches nothing. */
Test(nats_permissions, only_training_dispatches_and_only_workers_pull_the_work)
{
    provision();
    const char *others[] = {"identity", "contracts", "audit", "worker", "client", "publisher"};
    for (size_t i = 0; i < sizeof others / sizeof others[0]; i++) {
        assert_pub_refused(others[i], "cms.work.training");
        assert_pub_refused(others[i], "cms.control.training.01890000-0000-7000-8000-000000000001");
    }
    const char *not_workers[] = {"identity", "contracts", "training",
                                 "audit",    "client",    "publisher"};
    for (size_t i = 0; i < sizeof not_workers / sizeof not_workers[0]; i++) {
        assert_pub_refused(not_workers[i], "$JS.API.CONSUMER.MSG.NEXT.CMS_WORK.workers");
        assert_pub_refused(not_workers[i], "$JS.ACK.CMS_WORK.workers.1.1.1.1700000000000000000.0");
    }
    assert_pub_refused("worker", "cms.events.training_job.completed");
    assert_pub_refused("worker", "cms.events.worker.started");
    assert_pub_refused("worker", "cms.cmd.training.submit");
    assert_pub_refused("worker", "$JS.API.CONSUMER.MSG.NEXT.CMS_EVENTS.audit");
    assert_sub_refused("worker", "cms.events.>");
    assert_sub_allowed("worker", "cms.control.training.01890000-0000-7000-8000-000000000001");
    /* training dispatches; a worker pulls it and acks it */
    natsConnection *tr = as("training"), *wk = as("worker");
    jsCtx *js = NULL;
    cr_assert_eq(natsConnection_JetStream(&js, tr, NULL), NATS_OK);
    jsPubAck *ack = NULL;
    cr_assert_eq(js_Publish(&ack, js, "cms.work.training", "d", 1, NULL, NULL), NATS_OK,
                 "training dispatches onto the work queue");
    jsPubAck_Destroy(ack);
    jsCtx_Destroy(js);
    natsSubscription *sub = NULL;
    cr_assert_eq(natsConnection_SubscribeSync(&sub, wk, "_INBOX.worker.pull"), NATS_OK);
    cr_assert_eq(natsConnection_PublishRequestString(
                     wk, "$JS.API.CONSUMER.MSG.NEXT.CMS_WORK.workers", "_INBOX.worker.pull",
                     "{\"batch\":1,\"expires\":5000000000}"),
                 NATS_OK);
    natsMsg *m = NULL;
    cr_assert_eq(natsSubscription_NextMsg(&m, sub, 5000), NATS_OK, "the worker pulled it");
    cr_assert_eq(natsMsg_GetDataLength(m), 1);
    cr_assert_eq(natsConnection_PublishString(wk, natsMsg_GetReply(m), "+ACK"), NATS_OK);
    cr_assert_not(refused(wk, "$JS"), "the worker's pull and ack raised nothing");
    natsMsg_Destroy(m);
    natsSubscription_Destroy(sub);
    natsConnection_Destroy(tr);
    natsConnection_Destroy(wk);
}

Test(nats_permissions, only_audit_signs_checkpoints_and_a_client_reads_them_through_a_consumer)
{
    provision();
    /* cms-audit publishes its checkpoints to the stream, acked */
    natsConnection *au = as("audit");
    jsCtx *js = NULL;
    cr_assert_eq(natsConnection_JetStream(&js, au, NULL), NATS_OK);
    jsPubAck *pa = NULL;
    jsErrCode jerr = 0;
    cr_assert_eq(js_Publish(&pa, js, "cms.audit.checkpoints.permtest.1", "cp", 2, NULL, &jerr),
                 NATS_OK, "audit publishes a checkpoint (%d)", (int)jerr);
    cr_assert_str_eq(pa->Stream, "CMS_AUDIT_CHECKPOINTS");
    jsPubAck_Destroy(pa);
    jsCtx_Destroy(js);
    natsConnection_Destroy(au);
    const char *others[] = {"identity", "contracts", "training", "worker", "client", "publisher"};
    for (size_t i = 0; i < sizeof others / sizeof others[0]; i++)
        assert_pub_refused(others[i], "cms.audit.checkpoints.permtest.1");

    /* a client (cmsctl audit verify) reads them with an ordered consumer */
    natsConnection *cl = as("client");
    cr_assert_eq(natsConnection_JetStream(&js, cl, NULL), NATS_OK);
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Stream = "CMS_AUDIT_CHECKPOINTS";
    so.Ordered = true;
    so.Config.DeliverPolicy = js_DeliverAll;
    natsSubscription *sub = NULL;
    cr_assert_eq(js_SubscribeSync(&sub, js, "cms.audit.checkpoints.permtest.>", NULL, &so, &jerr),
                 NATS_OK, "the client's ordered consumer (%d)", (int)jerr);
    natsMsg *m = NULL;
    cr_assert_eq(natsSubscription_NextMsg(&m, sub, 5000), NATS_OK, "the checkpoint arrives");
    cr_assert_eq(natsMsg_GetDataLength(m), 2);
    natsMsg_Destroy(m);
    natsSubscription_Destroy(sub);
    jsCtx_Destroy(js);
    natsConnection_Destroy(cl);
    /* but nothing else of the JetStream API */
    assert_pub_refused("client", "$JS.API.CONSUMER.CREATE.CMS_EVENTS");
    assert_pub_refused("client", "$JS.API.STREAM.MSG.GET.CMS_EVENTS");
    assert_pub_refused("client", "$JS.API.STREAM.PURGE.CMS_AUDIT_CHECKPOINTS");

    /* and not even the migrator purges it */
    natsConnection *mg = as("migrator");
    cr_assert_eq(natsConnection_JetStream(&js, mg, NULL), NATS_OK);
    cr_assert_neq(js_PurgeStream(js, "CMS_AUDIT_CHECKPOINTS", NULL, NULL), NATS_OK,
                  "CMS_AUDIT_CHECKPOINTS denies purge");
    jsCtx_Destroy(js);
    natsConnection_Destroy(mg);
    cr_assert_eq(stream_msgs("CMS_AUDIT_CHECKPOINTS"), 1);
}

/* The outbox relays read back, by sequence, what they published
 * (common/outbox's check after a reconnection): identity, contracts and
 * training may STREAM.MSG.GET on CMS_EVENTS and CMS_WORK, and on no other
 * stream; audit (no outbox), the worker and the clients may not. */
Test(nats_permissions, outbox_services_read_back_their_streams_by_sequence_and_no_one_else)
{
    provision();
    const char *relays[] = {"identity", "contracts", "training"};
    for (size_t u = 0; u < sizeof relays / sizeof relays[0]; u++) {
        natsConnection *nc = as(relays[u]);
        jsCtx *js = NULL;
        cr_assert_eq(natsConnection_JetStream(&js, nc, NULL), NATS_OK);
        const char *streams[] = {"CMS_EVENTS", "CMS_WORK"};
        for (size_t s = 0; s < 2; s++) {
            natsMsg *m = NULL;
            jsErrCode jerr = 0;
            natsStatus st = js_GetMsg(&m, js, streams[s], 1, NULL, &jerr);
            /* the stream is empty: "no message found" is the server's answer */
            cr_assert(st == NATS_NOT_FOUND || jerr == JSNoMessageFoundErr,
                      "%s reads %s by sequence: %s (%d)", relays[u], streams[s],
                      natsStatus_GetText(st), (int)jerr);
            natsMsg_Destroy(m);
        }
        jsCtx_Destroy(js);
        natsConnection_Destroy(nc);
        assert_pub_refused(relays[u], "$JS.API.STREAM.MSG.GET.CMS_DLQ");
        assert_pub_refused(relays[u], "$JS.API.STREAM.MSG.GET.CMS_AUDIT_CHECKPOINTS");
    }
    const char *others[] = {"audit", "worker", "client", "publisher"};
    for (size_t u = 0; u < sizeof others / sizeof others[0]; u++)
        assert_pub_refused(others[u], "$JS.API.STREAM.MSG.GET.CMS_EVENTS");
}

/* --stream-replicas: out of JetStream's 1..5 a usage error; more copies
 * than a lone server can hold never made, and the migrator says so. */
Test(nats_permissions, provision_makes_streams_only_with_the_replicas_asked)
{
    const char *bad[] = {"0", "6"};
    char cmd[1024];
    for (size_t i = 0; i < 2; i++) {
        snprintf(cmd, sizeof cmd,
                 "CMS_NATS_URL=%s CMS_NATS_CREDS=%s/creds/migrator.creds %s/cms-migrate provision "
                 "--stream-replicas %s >>%s/provision.log 2>&1",
                 url, dir, cms_test_env("CMS_TEST_BIN_DIR"), bad[i], dir);
        int rc = system(cmd);
        cr_assert(WIFEXITED(rc) && WEXITSTATUS(rc) == 2, "--stream-replicas %s: exit %d", bad[i],
                  rc);
    }
    snprintf(cmd, sizeof cmd,
             "CMS_NATS_URL=%s CMS_NATS_CREDS=%s/creds/migrator.creds %s/cms-migrate provision "
             "--stream-replicas 3 --provision-timeout 2s >>%s/provision.log 2>&1",
             url, dir, cms_test_env("CMS_TEST_BIN_DIR"), dir);
    int rc = system(cmd);
    cr_assert(WIFEXITED(rc) && WEXITSTATUS(rc) == 1, "three copies on one server: exit %d", rc);
    provision();
}
