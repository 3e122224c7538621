/* Test helpers shared by integration and fault tests; see testenv.h. */
#include "testenv.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

const char *cms_test_env(const char *name)
{
    const char *v = getenv(name);
    if (v == NULL || *v == '\0') {
        fprintf(stderr,
                "%s is not set: run the tests through tests/run, which starts the "
                "servers they need\n",
                name);
        abort();
    }
    return v;
}

char *cms_test_sql(const char *conninfo, const char *sql)
{
    PGconn *c = PQconnectdb(conninfo);
    char *out = NULL;
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "connect: %s", PQerrorMessage(c));
        goto out;
    }
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
        fprintf(stderr, "%s: %s", sql, PQresultErrorMessage(r));
    } else if (st == PGRES_TUPLES_OK && PQntuples(r) > 0 && !PQgetisnull(r, 0, 0)) {
        out = strdup(PQgetvalue(r, 0, 0));
    } else {
        out = strdup("");
    }
    PQclear(r);
out:
    PQfinish(c);
    return out;
}

/* The last dbname= of a conninfo (the one cms_test_db_create appended). */
static const char *last_dbname(const char *conninfo)
{
    const char *p = NULL;
    for (const char *q = conninfo; (q = strstr(q, "dbname=")) != NULL; q++)
        p = q;
    return p;
}

int cms_test_db_create(const char *prefix, int migrated, char *out, size_t outlen)
{
    const char *admin = cms_test_env("CMS_TEST_PG_URL");
    char name[64], sql[256];
    snprintf(name, sizeof name, "%s_%d", prefix, (int)getpid());
    snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", name);
    free(cms_test_sql(admin, sql));
    if (migrated)
        snprintf(sql, sizeof sql, "CREATE DATABASE %s TEMPLATE %s", name,
                 cms_test_env("CMS_TEST_TEMPLATE_DB"));
    else
        snprintf(sql, sizeof sql, "CREATE DATABASE %s", name);
    char *r = cms_test_sql(admin, sql);
    if (r == NULL)
        return -1;
    free(r);
    snprintf(out, outlen, "%s dbname=%s", admin, name);
    return 0;
}

void cms_test_db_drop(const char *conninfo)
{
    /* the last dbname= wins in a conninfo, and is the one we appended */
    const char *p = last_dbname(conninfo);
    const char *admin = getenv("CMS_TEST_PG_URL");
    if (p == NULL || admin == NULL)
        return;
    char sql[256];
    snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", p + strlen("dbname="));
    free(cms_test_sql(admin, sql));
}

void cms_test_db_as(const char *db, const char *role, char *out, size_t outlen)
{
    char var[64];
    int n = snprintf(var, sizeof var, "CMS_TEST_PG_URL_");
    for (const char *r = role; *r && (size_t)n + 1 < sizeof var; r++)
        var[n++] = (char)(*r >= 'a' && *r <= 'z' ? *r - 'a' + 'A' : *r);
    var[n] = '\0';
    const char *url = cms_test_env(var);
    const char *name = last_dbname(db);
    if (name == NULL) {
        fprintf(stderr, "%s has no dbname\n", db);
        abort();
    }
    /* the last dbname= wins */
    snprintf(out, outlen, "%s %s", url, name);
}

int cms_test_db_grant_testsvc(const char *db, const char *const *tables)
{
    static const char runtime[] =
        "GRANT USAGE ON SCHEMA public TO cms_testsvc;"
        "GRANT SELECT ON schema_migrations TO cms_testsvc;"
        "GRANT EXECUTE ON FUNCTION cms_current_service(), cms_is_owner(regclass),"
        "  cms_consumer_service(text), cms_lease_service(text), cms_lease_check(text, uuid)"
        "  TO cms_testsvc;"
        "GRANT SELECT, INSERT, DELETE ON outbox TO cms_testsvc;"
        "GRANT UPDATE (published_at, stream, stream_seq) ON outbox TO cms_testsvc;"
        "GRANT USAGE ON SEQUENCE outbox_seq_seq TO cms_testsvc;"
        "GRANT INSERT ON outbox_dead TO cms_testsvc;"
        "GRANT SELECT, INSERT, UPDATE, DELETE ON command_replies, leases TO cms_testsvc;"
        "GRANT SELECT, INSERT, DELETE ON processed_events TO cms_testsvc";
    char *r = cms_test_sql(db, runtime);
    if (r == NULL)
        return -1;
    free(r);
    for (size_t i = 0; tables && tables[i]; i++) {
        char sql[512];
        /* a bigserial's sequence, when it has one */
        snprintf(sql, sizeof sql,
                 "GRANT SELECT, INSERT ON %s TO cms_testsvc;"
                 "DO $$ BEGIN IF pg_get_serial_sequence('%s', 'id') IS NOT NULL THEN "
                 "EXECUTE format('GRANT USAGE ON SEQUENCE %%s TO cms_testsvc', "
                 "pg_get_serial_sequence('%s', 'id')); END IF; END $$",
                 tables[i], tables[i], tables[i]);
        if ((r = cms_test_sql(db, sql)) == NULL)
            return -1;
        free(r);
    }
    return 0;
}

int cms_test_ctl(const char *verb)
{
    const char *ctl = cms_test_env("CMS_TEST_CTL");
    pid_t pid = fork();
    if (pid == 0) {
        execl(ctl, ctl, verb, (char *)NULL);
        _exit(127);
    }
    int st = 0;
    if (pid < 0 || waitpid(pid, &st, 0) < 0)
        return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

typedef struct {
    uv_process_t proc;
    cms_test_ctl_cb done;
    void *arg;
    int status;
} ctl_job;

static void ctl_closed(uv_handle_t *h)
{
    ctl_job *j = h->data;
    j->done(j->status, j->arg);
    free(j);
}

static void ctl_exited(uv_process_t *p, int64_t status, int sig)
{
    ctl_job *j = p->data;
    j->status = sig ? -1 : (int)status;
    uv_close((uv_handle_t *)p, ctl_closed);
}

int cms_test_ctl_spawn(uv_loop_t *loop, const char *verb, cms_test_ctl_cb done, void *arg)
{
    const char *ctl = cms_test_env("CMS_TEST_CTL");
    ctl_job *j = calloc(1, sizeof *j);
    if (j == NULL)
        return UV_ENOMEM;
    j->done = done;
    j->arg = arg;
    j->proc.data = j;
    char *args[] = {(char *)ctl, (char *)verb, NULL};
    uv_stdio_container_t stdio[3] = {{.flags = UV_IGNORE},
                                     {.flags = UV_INHERIT_FD, .data.fd = 2},
                                     {.flags = UV_INHERIT_FD, .data.fd = 2}};
    uv_process_options_t o = {
        .exit_cb = ctl_exited, .file = ctl, .args = args, .stdio_count = 3, .stdio = stdio};
    int rc = uv_spawn(loop, &j->proc, &o);
    if (rc != 0) {
        /* uv_spawn initialised the handle even on failure: it must be closed */
        j->done = NULL;
        uv_close((uv_handle_t *)&j->proc, (uv_close_cb)free);
    }
    return rc;
}

double cms_test_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

int cms_test_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    int port = -1;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

int cms_test_http_get(int port, const char *path, char *body, size_t len)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char req[256];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nHost: x\r\n\r\n", path);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0 || write(fd, req, (size_t)n) != n) {
        close(fd);
        return -1;
    }
    static char buf[1 << 20];
    size_t got = 0;
    ssize_t r;
    while (got < sizeof buf - 1 && (r = read(fd, buf + got, sizeof buf - 1 - got)) > 0)
        got += (size_t)r;
    close(fd);
    buf[got] = '\0';
    int status = -1;
    if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1)
        return -1;
    if (body && len) {
        const char *b = strstr(buf, "\r\n\r\n");
        snprintf(body, len, "%s", b ? b + 4 : "");
    }
    return status;
}

/* Whether pid has exited, without reaping it (its parent still waits for it). */
static bool exited(int pid)
{
    siginfo_t info;
    memset(&info, 0, sizeof info);
    return waitid(P_PID, (id_t)pid, &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info.si_pid == pid;
}

bool cms_test_wait_http(int port, const char *path, int want, const char *body_has, int pid,
                        double timeout_ms, char *body, size_t len)
{
    static char last[1 << 16];
    double deadline = cms_test_now_ms() + timeout_ms;
    bool ok = false;
    for (;;) {
        last[0] = '\0';
        int status = cms_test_http_get(port, path, last, sizeof last);
        ok = status == want && (body_has == NULL || strstr(last, body_has) != NULL);
        if (ok || cms_test_now_ms() >= deadline || (pid > 0 && exited(pid)))
            break;
        cms_test_pause_ms(20);
    }
    if (body && len)
        snprintf(body, len, "%s", last);
    return ok;
}

extern char **environ;

static bool env_key_in(const char *kv, const char *const *set)
{
    const char *eq = strchr(kv, '=');
    size_t n = eq ? (size_t)(eq - kv) + 1 : strlen(kv);
    for (size_t j = 0; set && set[j]; j++)
        if (strncmp(kv, set[j], n) == 0)
            return true;
    return false;
}

const char *cms_test_service_name(const char *binary)
{
    return strncmp(binary, "cms-", 4) == 0 ? binary + 4 : binary;
}

int cms_test_spawn_service(const char *name, const char *const *args, const char *const *set,
                           const char *log_path)
{
    char bin[512], nats[512], creds[600] = "", ca[600] = "";
    snprintf(bin, sizeof bin, "%s/%s", cms_test_env("CMS_TEST_BIN_DIR"), name);
    if (access(bin, X_OK) != 0) {
        fprintf(stderr, "%s is not built\n", bin);
        return -1;
    }
    /* a service connects as its own NATS user: cms-<user> */
    const char *dir = getenv("CMS_TEST_NATS_CREDS_DIR"), *url = getenv("CMS_TEST_NATS_SERVICE_URL");
    snprintf(nats, sizeof nats, "CMS_NATS_URL=%s", url ? url : cms_test_env("CMS_TEST_NATS_URL"));
    if (dir != NULL)
        snprintf(creds, sizeof creds, "CMS_NATS_CREDS=%s/%s.creds", dir,
                 cms_test_service_name(name));
    const char *tls_ca = getenv("CMS_TEST_NATS_CA"); /* the TLS pass: verify the server */
    if (tls_ca != NULL)
        snprintf(ca, sizeof ca, "CMS_NATS_CA=%s", tls_ca);
    /* everything is built before fork: between fork and exec the child of a
     * threaded process (nats.c's) may only make async-signal-safe calls */
    size_t n = 0, nset = 0, nargs = 0;
    while (environ[n])
        n++;
    while (set && set[nset])
        nset++;
    while (args && args[nargs])
        nargs++;
    char **env = calloc(n + nset + 5, sizeof *env);
    char **argv = calloc(nargs + 2, sizeof *argv);
    if (env == NULL || argv == NULL) {
        free(env);
        free(argv);
        return -1;
    }
    size_t k = 0;
    const char *defaults[] = {nats, "CMS_LOG_LEVEL=warn", creds, ca, NULL};
    for (size_t i = 0; i < n; i++)
        if (!env_key_in(environ[i], set) && strncmp(environ[i], "CMS_NATS_URL=", 13) != 0)
            env[k++] = environ[i];
    for (size_t j = 0; j < nset; j++)
        env[k++] = (char *)set[j];
    for (size_t j = 0; defaults[j]; j++)
        if (defaults[j][0] != '\0' && !env_key_in(defaults[j], (const char *const *)env))
            env[k++] = (char *)defaults[j];
    argv[0] = bin;
    for (size_t j = 0; j < nargs; j++)
        argv[j + 1] = (char *)args[j];
    int logfd = -1;
    if (log_path && (logfd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600)) < 0) {
        fprintf(stderr, "cannot open %s\n", log_path);
        free(env);
        free(argv);
        return -1;
    }
    pid_t parent = getpid();
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        /* never outlive the test, whatever ends it */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        if (logfd >= 0 && (dup2(logfd, 1) < 0 || dup2(logfd, 2) < 0))
            _exit(127);
        execve(bin, argv, env);
        _exit(127);
    }
    if (logfd >= 0)
        close(logfd);
    free(env);
    free(argv);
    return pid;
}

int cms_test_spawn_http_service(const char *name, const char *const *args, const char *const *set,
                                const char *log_path, int *port)
{
    char addr[64];
    *port = cms_test_free_port();
    snprintf(addr, sizeof addr, "CMS_HTTP_ADDR=127.0.0.1:%d", *port);
    size_t nset = 0;
    while (set && set[nset])
        nset++;
    const char **all = calloc(nset + 2, sizeof *all);
    if (all == NULL)
        return -1;
    all[0] = addr;
    for (size_t j = 0; j < nset; j++)
        all[j + 1] = set[j];
    int pid = cms_test_spawn_service(name, args, all, log_path);
    free(all);
    return pid;
}

int cms_test_wait_exit(int pid, double timeout_ms, int *status)
{
    double deadline = cms_test_now_ms() + timeout_ms;
    pid_t got;
    while ((got = waitpid(pid, status, WNOHANG)) == 0 && cms_test_now_ms() < deadline)
        cms_test_pause_ms(10);
    return (int)got;
}

void cms_test_kill9(int pid)
{
    int st;
    kill(pid, SIGKILL);
    (void)waitpid(pid, &st, 0);
}

int cms_test_metric(int port, const char *series, double *value)
{
    static char body[1 << 20];
    *value = -1;
    int status = cms_test_http_get(port, "/metrics", body, sizeof body);
    if (status != 200)
        return status;
    size_t n = strlen(series);
    for (const char *line = body; *line;) {
        if (strncmp(line, series, n) == 0 && line[n] == ' ') {
            *value = strtod(line + n + 1, NULL);
            break;
        }
        const char *nl = strchr(line, '\n');
        if (nl == NULL)
            break;
        line = nl + 1;
    }
    return status;
}

int64_t cms_test_wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void cms_test_pause_ms(int ms)
{
    struct timespec t = {ms / 1000, (long)(ms % 1000) * 1000 * 1000};
    nanosleep(&t, NULL);
}
