/* A service under test; see svcfx.h. */
#include "svcfx.h"

#include "cms/v1/command.pb-c.h"
#include "cms/v1/envelope.pb-c.h"
#include "cms/v1/identity.pb-c.h"
#include "testcmd.h"
#include "testenv.h"
#include "uuid.h"

#include <criterion/criterion.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void exec_params(const svcfx *f, const char *sql, int n, const char *const *v)
{
    PGconn *c = PQconnectdb(f->db);
    cr_assert_eq(PQstatus(c), CONNECTION_OK, "%s", PQerrorMessage(c));
    PGresult *r = PQexecParams(c, sql, n, NULL, v, NULL, NULL, 0);
    cr_assert(PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK,
              "%s: %s", sql, PQerrorMessage(c));
    PQclear(r);
    PQfinish(c);
}

void svcfx_insert(svcfx *f, const char *name, const char *type, const char *status,
                  const char *metadata_json, int64_t key_ttl_s, char id[37],
                  char key[CMS_APIKEY_LEN + 1])
{
    cms_uuid iid, cid;
    char cids[37], hash[CMS_APIKEY_HASH_LEN + 1], ttl[32];
    uint8_t secret[CMS_APIKEY_SECRET_BYTES];
    cms_uuid_v7(&iid);
    cms_uuid_v7(&cid);
    cms_uuid_format(&iid, id);
    cms_uuid_format(&cid, cids);
    cr_assert_eq(cms_apikey_generate(&cid, key, secret), 0);
    cms_apikey_hash(f->server_key, secret, hash);
    snprintf(ttl, sizeof ttl, "%lld", (long long)key_ttl_s);
    const char *v[] = {id, name, type, status, metadata_json, cids, hash, ttl};
    exec_params(f,
                "WITH i AS (INSERT INTO identities (id, name, type, status, metadata) "
                "VALUES ($1, $2, $3::identity_type, $4::identity_status, $5::jsonb) RETURNING id) "
                "INSERT INTO credentials (id, identity_id, type, value, expires_at) "
                "SELECT $6, i.id, 'api_key', $7, now() + $8::bigint * interval '1 second' FROM i",
                8, v);
}

void svcfx_setup(svcfx *f, const char *dbprefix)
{
    memset(f, 0, sizeof *f);
    cr_assert_eq(cms_test_db_create(dbprefix, 1, f->db, sizeof f->db), 0);
    cr_assert_eq(cms_test_db_grant_testsvc(f->db, NULL), 0, "cms_testsvc's grants");
    cms_uuid u;
    cms_uuid_v7(&u);
    snprintf(f->prefix, sizeof f->prefix, "t%dx%02x%02x.cmd", (int)getpid(), u.b[14], u.b[15]);
    snprintf(f->prefix_env, sizeof f->prefix_env, "CMS_COMMAND_PREFIX=%s", f->prefix);
    snprintf(f->key_file, sizeof f->key_file, "/tmp/cms-svcfx-%d-%02x%02x.key", (int)getpid(),
             u.b[14], u.b[15]);
    snprintf(f->log_file, sizeof f->log_file, "/tmp/cms-svcfx-%d-%02x%02x.log", (int)getpid(),
             u.b[14], u.b[15]);
    snprintf(f->key_env, sizeof f->key_env, "CMS_IDENTITY_KEY_FILE=%s", f->key_file);
    char hex[2 * CMS_APIKEY_SERVER_KEY_BYTES + 2];
    for (size_t i = 0; i < CMS_APIKEY_SERVER_KEY_BYTES; i++) {
        cms_uuid r;
        cms_uuid_v7(&r);
        f->server_key[i] = r.b[15];
        snprintf(hex + 2 * i, 3, "%02x", f->server_key[i]);
    }
    hex[2 * CMS_APIKEY_SERVER_KEY_BYTES] = '\n';
    int fd = open(f->key_file, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, hex, 2 * CMS_APIKEY_SERVER_KEY_BYTES + 1),
                 2 * CMS_APIKEY_SERVER_KEY_BYTES + 1);
    close(fd);
    svcfx_insert(f, "admin", "user", "active", "{\"roles\": [\"admin\"]}", 86400, f->admin_id,
                 f->admin_key);
    natsOptions *o = NULL;
    cr_assert_eq(natsOptions_Create(&o), NATS_OK);
    natsOptions_SetURL(o, cms_test_env("CMS_TEST_NATS_URL"));
    natsOptions_SetMaxReconnect(o, -1);
    natsOptions_SetReconnectWait(o, 100);
    cr_assert_eq(natsConnection_Connect(&f->nc, o), NATS_OK, "NATS at %s",
                 cms_test_env("CMS_TEST_NATS_URL"));
    natsOptions_Destroy(o);
    cr_assert_eq(natsConnection_SubscribeSync(&f->events, f->nc, "cms.events.*.*"), NATS_OK);
    natsSubscription_SetPendingLimits(f->events, -1, -1);
}

int svcfx_identity_get(svcfx *f, const char *key, const char *name, Cms__V1__Identity **out,
                       char *field, char *msg)
{
    Cms__V1__GetIdentity m = CMS__V1__GET_IDENTITY__INIT;
    m.name = (char *)name;
    Cms__V1__Identity *id = NULL;
    int code = svcfx_call(f, "identity", key, NULL, "get", &m.base, &cms__v1__identity__descriptor,
                          (ProtobufCMessage **)&id, field, msg);
    if (out != NULL)
        *out = id;
    else if (id != NULL)
        cms__v1__identity__free_unpacked(id, NULL);
    return code;
}

Cms__V1__Envelope *svcfx_wait_event(svcfx *f, const char *type, const char *resource_id,
                                    double timeout_ms)
{
    double deadline = cms_test_now_ms() + timeout_ms;
    while (cms_test_now_ms() < deadline) {
        natsMsg *m = NULL;
        if (natsSubscription_NextMsg(&m, f->events, 200) != NATS_OK)
            continue;
        Cms__V1__Envelope *e = cms__v1__envelope__unpack(NULL, (size_t)natsMsg_GetDataLength(m),
                                                         (const uint8_t *)natsMsg_GetData(m));
        natsMsg_Destroy(m);
        if (e && strcmp(e->event_type, type) == 0 && strcmp(e->resource_id, resource_id) == 0)
            return e;
        if (e)
            cms__v1__envelope__free_unpacked(e, NULL);
    }
    return NULL;
}

void svcfx_teardown(svcfx *f)
{
    for (int i = 0; i < SVCFX_PROCS; i++)
        if (f->pids[i] > 0)
            svcfx_kill9_at(f, i);
    if (f->listen)
        PQfinish(f->listen);
    f->listen = NULL;
    if (f->audit_durable[0] && f->nc &&
        (f->js != NULL || natsConnection_JetStream(&f->js, f->nc, NULL) == NATS_OK))
        (void)js_DeleteConsumer(f->js, "CMS_EVENTS", f->audit_durable, NULL, NULL);
    f->audit_durable[0] = '\0';
    natsSubscription_Destroy(f->events);
    f->events = NULL;
    jsCtx_Destroy(f->js);
    f->js = NULL;
    if (f->nc)
        natsConnection_Destroy(f->nc);
    f->nc = NULL;
    if (f->db[0])
        cms_test_db_drop(f->db);
    f->db[0] = '\0';
    if (f->key_file[0])
        unlink(f->key_file);
    if (f->log_file[0])
        unlink(f->log_file);
}

pid_t svcfx_start_at(svcfx *f, int i, const char *binary, const char *const *set)
{
    cr_assert(i >= 0 && i < SVCFX_PROCS, "process %d of %d", i, SVCFX_PROCS);
    cr_assert_eq(f->pids[i], 0, "%s %d is already running", binary, i);
    const char *role = cms_test_service_name(binary);
    char db[600], dburl[640];
    cms_test_db_as(f->db, role, db, sizeof db);
    snprintf(dburl, sizeof dburl, "CMS_DATABASE_URL=%s", db);
    const char *all[32] = {dburl, f->prefix_env, f->key_env};
    int n = 3;
    for (size_t k = 0; set && set[k]; k++) {
        cr_assert_lt(n, 31);
        all[n++] = set[k];
    }
    all[n] = NULL;
    f->pids[i] = cms_test_spawn_http_service(binary, NULL, all, f->log_file, &f->ports[i]);
    cr_assert_gt(f->pids[i], 0, "%s started", binary);
    char body[512];
    if (!cms_test_wait_http(f->ports[i], "/readyz", 200, NULL, f->pids[i], 20000, body,
                            sizeof body)) {
        char *log = svcfx_log(f);
        cr_log_error("%s's log:\n%s", binary, log);
        free(log);
        cr_assert_fail("%s not ready in 20 s (or exited): %s", binary, body);
    }
    return f->pids[i];
}

pid_t svcfx_start_audit_with(svcfx *f, int i, const char *const *extra)
{
    /* the prefix "t<pid>x<hex>.cmd" without its dot: a durable name and a subject token */
    snprintf(f->audit_durable, sizeof f->audit_durable, "%.*s", (int)strcspn(f->prefix, "."),
             f->prefix);
    char durable[96], subject[128];
    snprintf(durable, sizeof durable, "CMS_AUDIT_DURABLE=%s", f->audit_durable);
    snprintf(subject, sizeof subject, "CMS_AUDIT_SUBJECT=cms.events.%s.>", f->audit_durable);
    const char *set[32] = {durable, subject};
    int n = 2;
    for (size_t k = 0; extra && extra[k]; k++) {
        cr_assert_lt(n, 31);
        set[n++] = extra[k];
    }
    set[n] = NULL;
    return svcfx_start_at(f, i, "cms-audit", set);
}

pid_t svcfx_start_audit_at(svcfx *f, int i)
{
    return svcfx_start_audit_with(f, i, NULL);
}

pid_t svcfx_start(svcfx *f, const char *binary, const char *const *set)
{
    return svcfx_start_at(f, 0, binary, set);
}

int svcfx_stop_at(svcfx *f, int i)
{
    cr_assert_gt(f->pids[i], 0);
    kill(f->pids[i], SIGTERM);
    int st = 0;
    cr_assert_eq(waitpid(f->pids[i], &st, 0), f->pids[i]);
    f->pids[i] = 0;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

int svcfx_stop(svcfx *f)
{
    return svcfx_stop_at(f, 0);
}

void svcfx_kill9_at(svcfx *f, int i)
{
    cms_test_kill9(f->pids[i]);
    f->pids[i] = 0;
}

void svcfx_kill9(svcfx *f)
{
    svcfx_kill9_at(f, 0);
}

int svcfx_wait_exit_at(svcfx *f, int i, double timeout_ms)
{
    cr_assert_gt(f->pids[i], 0);
    int st = 0;
    int got = cms_test_wait_exit(f->pids[i], timeout_ms, &st);
    cr_assert_neq(got, 0, "process %d still running after %.0f ms", i, timeout_ms);
    cr_assert_eq(got, f->pids[i]);
    f->pids[i] = 0;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st);
}

double svcfx_metric(const svcfx *f, int i, const char *series)
{
    double v;
    cr_assert_eq(cms_test_metric(f->ports[i], series, &v), 200);
    return v;
}

void svcfx_publish(svcfx *f, const Cms__V1__Envelope *e, const char *msg_id)
{
    if (f->js == NULL)
        cr_assert_eq(natsConnection_JetStream(&f->js, f->nc, NULL), NATS_OK);
    size_t len = cms__v1__envelope__get_packed_size(e);
    uint8_t *buf = malloc(len ? len : 1);
    cr_assert_not_null(buf);
    cms__v1__envelope__pack(e, buf);
    char subject[256];
    snprintf(subject, sizeof subject, "cms.events.%s", e->event_type);
    natsMsg *m = NULL;
    cr_assert_eq(natsMsg_Create(&m, subject, NULL, (const char *)buf, (int)len), NATS_OK);
    cr_assert_eq(natsMsgHeader_Set(m, "Nats-Msg-Id", msg_id ? msg_id : e->event_id), NATS_OK);
    jsPubAck *ack = NULL;
    jsErrCode jerr = 0;
    natsStatus st = js_PublishMsg(&ack, f->js, m, NULL, &jerr);
    cr_assert_eq(st, NATS_OK, "publish to %s: %s (%d)", subject, natsStatus_GetText(st), (int)jerr);
    cr_assert(!ack->Duplicate, "Nats-Msg-Id %s was published before: the stream dropped it",
              msg_id ? msg_id : e->event_id);
    jsPubAck_Destroy(ack);
    natsMsg_Destroy(m);
    free(buf);
}

/* LISTEN channel on f->listen, connecting again if the server restarted
 * since its last use. */
static void listen_on(svcfx *f, const char *channel)
{
    for (int attempt = 0;; attempt++) {
        if (f->listen == NULL) {
            f->listen = PQconnectdb(f->db);
            cr_assert_eq(PQstatus(f->listen), CONNECTION_OK, "%s", PQerrorMessage(f->listen));
        }
        char *ident = PQescapeIdentifier(f->listen, channel, strlen(channel)), sql[300];
        cr_assert_not_null(ident);
        snprintf(sql, sizeof sql, "LISTEN %s", ident);
        PQfreemem(ident);
        PGresult *r = PQexec(f->listen, sql);
        bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        PQclear(r);
        if (ok)
            return;
        cr_assert_eq(attempt, 0, "LISTEN %s: %s", channel, PQerrorMessage(f->listen));
        PQfinish(f->listen); /* a connection from before a restart */
        f->listen = NULL;
    }
}

char *svcfx_wait_sql(svcfx *f, const char *channel, const char *sql, const char *want,
                     double timeout_ms)
{
    listen_on(f, channel);
    double deadline = cms_test_now_ms() + timeout_ms;
    for (;;) {
        /* after LISTEN: a change committed from now on also notifies */
        char *v = svcfx_sql(f, sql);
        cr_assert_not_null(v, "%s", sql);
        if (strcmp(v, want) == 0 || cms_test_now_ms() >= deadline)
            return v;
        free(v);
        PGnotify *note;
        int fd = PQsocket(f->listen);
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int left = (int)(deadline - cms_test_now_ms());
        if (poll(&p, 1, left > 0 ? left : 0) > 0)
            cr_assert_eq(PQconsumeInput(f->listen), 1, "%s", PQerrorMessage(f->listen));
        while ((note = PQnotifies(f->listen)) != NULL)
            PQfreemem(note);
    }
}

int svcfx_call(svcfx *f, const char *service, const char *key, const char *request_id,
               const char *verb, const ProtobufCMessage *req,
               const ProtobufCMessageDescriptor *rdesc, ProtobufCMessage **out, char *field,
               char *msg)
{
    char subject[128];
    snprintf(subject, sizeof subject, "%s.%s.%s", f->prefix, service, verb);
    Cms__V1__Reply *r = cms_test_command(f->nc, subject, key, request_id, req);
    int code = cms_test_reply_code(r);
    if (code != 0) {
        if (field)
            snprintf(field, 256, "%s", r->error->field);
        if (msg)
            snprintf(msg, 256, "%s", r->error->message);
    } else if (out) {
        *out = protobuf_c_message_unpack(rdesc, NULL, r->result.len, r->result.data);
        cr_assert_not_null(*out, "the result is a %s", rdesc->name);
    }
    cms__v1__reply__free_unpacked(r, NULL);
    return code;
}

char *svcfx_log(const svcfx *f)
{
    FILE *fp = fopen(f->log_file, "r");
    if (fp == NULL)
        return strdup("");
    char *buf = NULL;
    size_t cap = 0, len = 0, n;
    char chunk[4096];
    while ((n = fread(chunk, 1, sizeof chunk, fp)) > 0) {
        if (len + n + 1 > cap) {
            cap = (len + n + 1) * 2;
            buf = realloc(buf, cap);
            cr_assert_not_null(buf);
        }
        memcpy(buf + len, chunk, n);
        len += n;
    }
    fclose(fp);
    if (buf == NULL)
        return strdup("");
    buf[len] = '\0';
    return buf;
}

char *svcfx_sql(const svcfx *f, const char *sql)
{
    return cms_test_sql(f->db, sql);
}
