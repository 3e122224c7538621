/* common/nats and cmsctl against nats-servers of the test's own
 * (natsauthfx) that require a password, deny what the permissions do not
 * allow, or speak TLS only: the client side of NATS authentication.
 *
 * The server allows alice only her own inboxes (_INBOX.alice.>), so a
 * request-reply or a pull consumer that works proves that every inbox made
 * was under the per-user prefix. */
#include "metrics.h"
#include "natsauth.h"
#include "natsauthfx.h"
#include "natsfx.h"
#include "request.h"
#include "testenv.h"
#include "testproc.h"

#include "log.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TIMEOUT_MS 30000
#define PASSWORD "a-Secret-9"

/* alice: commands on t.svc, events on ta.>, JetStream, her own inboxes */
static const char users_conf[] =
    "authorization {\n"
    "  users = [\n"
    "    {user: alice, password: \"" PASSWORD "\", permissions: {\n"
    "      publish: {allow: [\"t.svc\", \"ta.>\", \"$JS.API.>\", \"$JS.ACK.>\", "
    "\"_INBOX.alice.>\"]}\n"
    "      subscribe: {allow: [\"t.svc\", \"_INBOX.alice.>\"]} }}\n"
    "  ]\n"
    "}\n";

static uint64_t violations(void)
{
    return cms_counter_get(cms_metrics_counter(cms_metrics_default(),
                                               "cms_nats_permission_violations_total", "", NULL));
}

/* The log of this process from here on (after natsfx_init_at, which logs
 * to stderr), into f, read by read_log. */
static void capture_log(FILE *f)
{
    cms_log_init("nats-auth-test", CMS_LOG_INFO, f);
}

static char *read_log(FILE *f)
{
    fflush(f);
    long n = ftell(f);
    cr_assert_geq(n, 0);
    char *s = calloc(1, (size_t)n + 1);
    cr_assert_not_null(s);
    rewind(f);
    if (n > 0)
        cr_assert_eq(fread(s, 1, (size_t)n, f), (size_t)n);
    return s;
}

static int count(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)) != NULL; p += strlen(needle))
        n++;
    return n;
}

/* A server with users_conf and alice's credentials file holding password
 * (mode 0600); its path into creds. */
static void alice_server(natsauthfx *fx, const char *password, char *creds, size_t len)
{
    natsauthfx_init(fx);
    natsauthfx_write(fx, "alice.creds", 0600, "alice:%s\n", password);
    natsauthfx_path(fx, "alice.creds", creds, len);
    natsauthfx_start(fx, users_conf);
}

/* ---- request-reply through the per-user inbox ---- */

typedef struct rr {
    natsfx f;
    cms_nats_sub *svc;
    cms_request *req;
    int replies, requests_closed;
    cms_request_err err;
    char reply[64];
    int64_t timeout_ms;
} rr;

static void on_svc(void *arg, cms_nats_msg *m)
{
    rr *t = arg;
    natsfx_check_thread(&t->f);
    cr_assert_eq(cms_nats_respond(t->f.n, m, NULL, "pong", 4), CMS_NATS_OK);
    cms_nats_msg_destroy(m);
}

static void rr_closed(void *arg)
{
    rr *t = arg;
    t->requests_closed++;
    natsfx_close(&t->f);
}

static void on_reply(void *arg, cms_request_err err, const void *data, size_t len)
{
    rr *t = arg;
    natsfx_check_thread(&t->f);
    t->replies++;
    t->err = err;
    snprintf(t->reply, sizeof t->reply, "%.*s", (int)len, (const char *)data);
    cms_nats_unsubscribe(t->svc);
    t->svc = NULL;
    cms_request_close(t->req, rr_closed, t);
}

static void rr_state(void *arg, bool connected)
{
    rr *t = arg;
    if (!connected || t->svc != NULL || t->replies > 0)
        return;
    cr_assert_eq(cms_nats_subscribe(t->f.n, "t.svc", NULL, on_svc, t, &t->svc), 0);
    cr_assert_eq(cms_request_create(&t->f.loop, t->f.n, &t->req), CMS_REQUEST_OK);
    cr_assert_eq(cms_request_send(t->req, "t.svc", NULL, "ping", 4, t->timeout_ms, on_reply, t),
                 CMS_REQUEST_OK);
}

/* One request to t.svc, answered in the same process, as user alice with
 * security s. */
static void request_once(natsauthfx *fx, rr *t, const cms_nats_security *s, int64_t timeout_ms,
                         FILE *log)
{
    memset(t, 0, sizeof *t);
    t->timeout_ms = timeout_ms;
    cms_nats_options o = {.security = *s, .on_state = rr_state, .state_arg = t};
    natsfx_init_at(&t->f, fx->url, "nats-auth-test", "a", TIMEOUT_MS, &o);
    capture_log(log);
    uv_run(&t->f.loop, UV_RUN_DEFAULT);
    natsfx_finish(&t->f);
    cms_request_destroy(t->req);
    cr_assert_eq(t->requests_closed, 1);
}

Test(nats_auth, password_and_per_user_inbox)
{
    natsauthfx fx;
    char creds[512];
    alice_server(&fx, PASSWORD, creds, sizeof creds);
    FILE *log = tmpfile();
    cr_assert_not_null(log);

    rr t;
    cms_nats_security s = {.creds_file = creds};
    request_once(&fx, &t, &s, 10000, log);
    cr_assert_eq(t.replies, 1);
    cr_assert_eq(t.err, CMS_REQUEST_OK, "%s", cms_request_strerror(t.err));
    cr_assert_str_eq(t.reply, "pong");
    cr_assert_eq(violations(), 0);

    char *text = read_log(log);
    cr_assert(strstr(text, PASSWORD) == NULL, "the password was logged: %s", text);
    free(text);
    fclose(log);
    natsauthfx_stop(&fx);
}

Test(nats_auth, inboxes_carry_the_connection_prefix)
{
    uv_loop_t loop;
    cr_assert_eq(uv_loop_init(&loop), 0);
    natsauthfx fx;
    char creds[512], inbox[CMS_NATS_INBOX_MAX], other[CMS_NATS_INBOX_MAX];
    natsauthfx_init(&fx); /* no server: only the options matter */
    natsauthfx_write(&fx, "alice.creds", 0600, "alice:%s\n", PASSWORD);
    cms_nats_options o = {.url = fx.url,
                          .security.creds_file =
                              natsauthfx_path(&fx, "alice.creds", creds, sizeof creds)};
    cms_nats *n = NULL;
    cr_assert_eq(cms_nats_create(&loop, &o, &n), 0);
    cr_assert_eq(cms_nats_inbox(n, inbox, sizeof inbox), CMS_NATS_OK);
    cr_assert_eq(cms_nats_inbox(n, other, sizeof other), CMS_NATS_OK);
    cr_assert_eq(strncmp(inbox, "_INBOX.alice.", 13), 0, "%s", inbox);
    cr_assert_eq(strlen(inbox), 13 + 32, "%s", inbox);
    cr_assert_str_neq(inbox, other);
    cr_assert_eq(cms_nats_inbox(n, inbox, 20), CMS_NATS_EINVAL);
    cms_nats_close(n, NULL, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    cms_nats_destroy(n);
    cr_assert_eq(uv_loop_close(&loop), 0);
    natsauthfx_stop(&fx);
}

/* ---- a pull consumer through the per-user inbox ---- */

#define EVENTS 3

typedef struct pc {
    natsfx f;
    cms_nats_consumer *c;
    int acked_pubs, received;
} pc;

static void pc_msg(void *arg, cms_nats_msg *m)
{
    pc *t = arg;
    natsfx_check_thread(&t->f);
    cr_assert_eq(cms_nats_msg_ack(m), CMS_NATS_OK);
    cms_nats_msg_destroy(m);
    if (++t->received == EVENTS)
        natsfx_close(&t->f);
}

static void pc_published(void *arg, cms_nats_err err, const cms_nats_pub_ack *ack)
{
    (void)ack;
    pc *t = arg;
    cr_assert_eq(err, CMS_NATS_OK, "publish: %s", cms_nats_strerror(err));
    if (++t->acked_pubs < EVENTS)
        return;
    cms_nats_consumer_options co = {.stream = "TA", .durable = "alice", .fetch_batch = 10};
    cr_assert_eq(cms_nats_consume(t->f.n, &co, pc_msg, t, &t->c), 0);
}

static void pc_provisioned(void *arg, cms_nats_err err)
{
    pc *t = arg;
    cr_assert_eq(err, CMS_NATS_OK, "provision: %s", cms_nats_strerror(err));
    for (int i = 0; i < EVENTS; i++)
        cr_assert_eq(cms_nats_js_publish(t->f.n, "ta.x", NULL, NULL, "e", 1, pc_published, t),
                     CMS_NATS_OK);
}

Test(nats_auth, pull_consumer_through_per_user_inbox)
{
    natsauthfx fx;
    char creds[512];
    alice_server(&fx, PASSWORD, creds, sizeof creds);
    pc t = {0};
    cms_nats_options o = {.security.creds_file = creds};
    natsfx_init_at(&t.f, fx.url, "nats-auth-test", "p", TIMEOUT_MS, &o);
    cms_nats_stream_spec spec = {.name = "TA", .subject = "ta.>", .memory = true};
    cr_assert_eq(cms_nats_provision(t.f.n, &spec, 1, pc_provisioned, &t), 0);
    natsfx_finish(&t.f);
    cr_assert_eq(t.received, EVENTS);
    cr_assert_eq(violations(), 0);
    natsauthfx_stop(&fx);
}

/* ---- refusals ---- */

#define REFUSED_LINE "authentication error - User \"alice\""

typedef struct refused {
    natsfx f;
    natsauthfx *fx;
    int refused;
} refused;

/* Closes once the server refused the password a second time: the loop
 * hears of both refusals before it is closed, and says it once. */
static void on_refused(void *arg)
{
    refused *t = arg;
    natsfx_check_thread(&t->f);
    t->refused++;
    cr_assert(natsauthfx_wait_log(t->fx, REFUSED_LINE, 2, 10000), "asked again");
    natsfx_close(&t->f);
}

Test(nats_auth, wrong_password_refused_once_with_the_fix)
{
    natsauthfx fx;
    char creds[512];
    alice_server(&fx, "not-" PASSWORD, creds, sizeof creds);
    refused t = {.fx = &fx};
    cms_nats_options o = {
        .security.creds_file = creds, .on_auth_refused = on_refused, .state_arg = &t};
    natsfx_init_at(&t.f, fx.url, "nats-auth-test", "w", TIMEOUT_MS, &o);
    FILE *log = tmpfile();
    cr_assert_not_null(log);
    capture_log(log);
    natsfx_finish(&t.f);
    cr_assert_eq(t.refused, 1);
    cr_assert_geq(natsauthfx_log_count(&fx, REFUSED_LINE), 2);

    char *text = read_log(log);
    cr_assert_eq(count(text, "refused the credentials"), 1, "%s", text);
    cr_assert(strstr(text, "\"user\":\"alice\"") != NULL, "%s", text);
    cr_assert(strstr(text, creds) != NULL, "names the file: %s", text);
    cr_assert(strstr(text, PASSWORD) == NULL, "the password was logged: %s", text);
    free(text);
    fclose(log);
    natsauthfx_stop(&fx);
}

Test(nats_auth, permissions_violation_logged_once_and_counted)
{
    natsauthfx fx;
    char creds[512];
    alice_server(&fx, PASSWORD, creds, sizeof creds);
    FILE *log = tmpfile();
    cr_assert_not_null(log);
    /* the shared prefix: the server lets alice subscribe to none of its inboxes */
    cms_nats_security s = {.creds_file = creds, .inbox_prefix = "_INBOX"};
    rr t;
    request_once(&fx, &t, &s, 1500, log);
    cr_assert_eq(t.err, CMS_REQUEST_ETIMEOUT, "%s", cms_request_strerror(t.err));
    cr_assert_geq(violations(), 1);
    cr_assert(natsauthfx_log_count(&fx, "Subscription Violation") >= 1);

    char *text = read_log(log);
    cr_assert_eq(count(text, "\"operation\":\"subscribe\""), 1, "%s", text);
    cr_assert(strstr(text, "\"subject\":\"_INBOX.") != NULL, "%s", text);
    cr_assert_eq(count(text, "asynchronous error"), 0, "%s", text);
    free(text);
    fclose(log);
    natsauthfx_stop(&fx);
}

/* ---- TLS ---- */

/* A blocking connect to url as the services' options say; the status, and
 * nats.c's error text in why. */
static natsStatus connect_with(const char *url, const cms_nats_security *s, char *why, size_t len)
{
    natsOptions *no = NULL;
    natsConnection *nc = NULL;
    cr_assert_eq(natsOptions_Create(&no), NATS_OK);
    cr_assert_eq(natsOptions_SetURL(no, url), NATS_OK);
    cr_assert_eq(natsOptions_SetTimeout(no, 5000), NATS_OK);
    cr_assert_eq(cms_natsauth_apply(no, url, s, NULL, why, len), CMS_NATSAUTH_OK, "%s", why);
    natsStatus st = natsConnection_Connect(&nc, no);
    const char *last = nats_GetLastError(NULL);
    snprintf(why, len, "%s", last ? last : "");
    natsConnection_Destroy(nc);
    natsOptions_Destroy(no);
    return st;
}

typedef struct tc {
    natsfx f;
    int connected;
} tc;

static void tc_state(void *arg, bool connected)
{
    tc *t = arg;
    if (connected && t->connected++ == 0)
        natsfx_close(&t->f);
}

Test(nats_auth, tls_verifies_the_server)
{
    natsauthfx fx;
    char block[1024], ca[512], other[512], why[1024], url[128];
    natsauthfx_init(&fx);
    natsauthfx_tls(&fx, "DNS:localhost");
    natsauthfx_start(&fx, natsauthfx_tls_block(&fx, false, block, sizeof block));
    natsauthfx_path(&fx, "ca.pem", ca, sizeof ca);
    natsauthfx_path(&fx, "other-ca.pem", other, sizeof other);

    /* the services' connection: the CA alone requires TLS, even on nats:// */
    tc t = {0};
    cms_nats_options o = {.security.ca_file = ca, .on_state = tc_state, .state_arg = &t};
    natsfx_init_at(&t.f, fx.host, "nats-auth-test", "s", TIMEOUT_MS, &o);
    natsfx_finish(&t.f);
    cr_assert_eq(t.connected, 1);

    snprintf(url, sizeof url, "tls://localhost:%d", fx.port);
    cms_nats_security s = {.ca_file = ca};
    cr_assert_eq(connect_with(url, &s, why, sizeof why), NATS_OK, "%s", why);
    /* a CA that did not sign the server's certificate */
    s.ca_file = other;
    cr_assert_eq(connect_with(url, &s, why, sizeof why), NATS_SSL_ERROR, "%s", why);
    /* the right CA, but the certificate is for localhost, not 127.0.0.1 */
    s.ca_file = ca;
    snprintf(url, sizeof url, "tls://127.0.0.1:%d", fx.port);
    cr_assert_eq(connect_with(url, &s, why, sizeof why), NATS_SSL_ERROR, "%s", why);
    cr_assert(strstr(why, "mismatch") != NULL, "%s", why);
    natsauthfx_stop(&fx);
}

Test(nats_auth, tls_client_refuses_plain_server)
{
    natsauthfx fx;
    char why[1024], url[128];
    natsauthfx_init(&fx);
    natsauthfx_start(&fx, "");
    cms_nats_security s = {.tls = true};
    cr_assert_eq(connect_with(fx.url, &s, why, sizeof why), NATS_SECURE_CONNECTION_WANTED, "%s",
                 why);
    snprintf(url, sizeof url, "tls://127.0.0.1:%d", fx.port);
    cr_assert_eq(connect_with(url, NULL, why, sizeof why), NATS_SECURE_CONNECTION_WANTED, "%s",
                 why);
    s.tls = false;
    cr_assert_eq(connect_with(fx.url, &s, why, sizeof why), NATS_OK, "%s", why);
    natsauthfx_stop(&fx);
}

Test(nats_auth, tls_client_certificate)
{
    natsauthfx fx;
    char block[1024], ca[512], cert[512], key[512], why[1024], url[128];
    natsauthfx_init(&fx);
    natsauthfx_tls(&fx, "DNS:localhost");
    natsauthfx_start(&fx, natsauthfx_tls_block(&fx, true, block, sizeof block));
    snprintf(url, sizeof url, "tls://localhost:%d", fx.port);
    cms_nats_security s = {.ca_file = natsauthfx_path(&fx, "ca.pem", ca, sizeof ca)};
    cr_assert_neq(connect_with(url, &s, why, sizeof why), NATS_OK, "no client certificate");
    s.cert_file = natsauthfx_path(&fx, "client.pem", cert, sizeof cert);
    s.key_file = natsauthfx_path(&fx, "client.key", key, sizeof key);
    cr_assert_eq(connect_with(url, &s, why, sizeof why), NATS_OK, "%s", why);
    natsauthfx_stop(&fx);
}

/* ---- cmsctl ---- */

/* cmsctl record for a moment at url with extra arguments (NULL-terminated):
 * the finished child, or the env program's when env is given. */
static cms_test_proc *cmsctl_record(const char *env, const char *url, const char *const *extra)
{
    char bin[512], nurl[256];
    snprintf(bin, sizeof bin, "%s/cmsctl", cms_test_env("CMS_TEST_BIN_DIR"));
    snprintf(nurl, sizeof nurl, "--nats-url=%s", url);
    const char *argv[24];
    size_t n = 0;
    if (env != NULL) {
        argv[n++] = "env";
        argv[n++] = env;
    }
    argv[n++] = bin;
    argv[n++] = "record";
    argv[n++] = nurl;
    argv[n++] = "--out=/dev/null";
    argv[n++] = "--duration=1ms";
    argv[n++] = "--timeout=5s";
    for (size_t i = 0; extra != NULL && extra[i] != NULL && n < 23; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;
    return cms_test_run(argv, TIMEOUT_MS);
}

Test(nats_auth, cmsctl_credentials_and_tls)
{
    natsauthfx fx;
    char good[600], bad[600], envv[600], block[1024], ca[600];
    natsauthfx_init(&fx);
    natsauthfx_write(&fx, "alice.creds", 0600, "alice:%s\n", PASSWORD);
    natsauthfx_write(&fx, "wrong.creds", 0600, "alice:x%s\n", PASSWORD);
    natsauthfx_write(&fx, "open.creds", 0644, "alice:%s\n", PASSWORD);
    natsauthfx_tls(&fx, "DNS:localhost");
    char body[2048];
    snprintf(body, sizeof body, "%s\n%s",
             "authorization { users = [ {user: alice, password: \"" PASSWORD "\"} ] }",
             natsauthfx_tls_block(&fx, false, block, sizeof block));
    natsauthfx_start(&fx, body);
    natsauthfx_path(&fx, "ca.pem", ca, sizeof ca);
    char url[128];
    snprintf(url, sizeof url, "tls://localhost:%d", fx.port);

    snprintf(good, sizeof good, "--nats-creds=%s/alice.creds", fx.dir);
    snprintf(bad, sizeof bad, "--nats-creds=%s/wrong.creds", fx.dir);
    char cafl[700];
    snprintf(cafl, sizeof cafl, "--nats-ca=%s", ca);
    const char *ok_args[] = {good, cafl, NULL};
    cms_test_proc *p = cmsctl_record(NULL, url, ok_args);
    cr_assert_eq(p->status, 0, "%s", p->err);
    cms_test_proc_free(p);

    const char *bad_args[] = {bad, cafl, NULL};
    p = cmsctl_record(NULL, url, bad_args);
    cr_assert_eq(p->status, 1, "%s", p->err);
    cr_assert(strstr(p->err, "refused user \"alice\"") != NULL, "%s", p->err);
    cr_assert(strstr(p->err, "wrong.creds") != NULL, "%s", p->err);
    cr_assert(strstr(p->err, PASSWORD) == NULL, "%s", p->err);
    cms_test_proc_free(p);

    char open_flag[700];
    snprintf(open_flag, sizeof open_flag, "--nats-creds=%s/open.creds", fx.dir);
    const char *open_args[] = {open_flag, cafl, NULL};
    p = cmsctl_record(NULL, url, open_args);
    cr_assert_eq(p->status, 1, "%s", p->err);
    cr_assert(strstr(p->err, "chmod 600") != NULL, "%s", p->err);
    cms_test_proc_free(p);

    /* the nats CLI's variable, when ours is unset */
    snprintf(envv, sizeof envv, "NATS_CREDS=%s/alice.creds", fx.dir);
    const char *ca_only[] = {cafl, NULL};
    p = cmsctl_record(envv, url, ca_only);
    cr_assert_eq(p->status, 0, "%s", p->err);
    cms_test_proc_free(p);

    /* a CA that did not sign the server's certificate */
    char otherfl[700];
    snprintf(otherfl, sizeof otherfl, "--nats-ca=%s/other-ca.pem", fx.dir);
    const char *other_args[] = {good, otherfl, NULL};
    p = cmsctl_record(NULL, url, other_args);
    cr_assert_eq(p->status, 1, "%s", p->err);
    cms_test_proc_free(p);
    natsauthfx_stop(&fx);
}
