/* A nats-server of the test's own; see natsauthfx.h. */
#include "natsauthfx.h"

#include "testenv.h"
#include "testproc.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define READY_LINE "Server is ready"
#define START_TIMEOUT_MS 15000
#define STOP_TIMEOUT_MS 10000
#define OPENSSL_TIMEOUT_MS 30000

void natsauthfx_init(natsauthfx *fx)
{
    memset(fx, 0, sizeof *fx);
    fx->log_fd = -1;
    const char *tmp = getenv("TMPDIR");
    snprintf(fx->dir, sizeof fx->dir, "%s/cms-natsauth-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    cr_assert_not_null(mkdtemp(fx->dir), "mkdtemp %s: %s", fx->dir, strerror(errno));
    fx->port = cms_test_free_port();
    cr_assert_gt(fx->port, 0, "no free port");
    snprintf(fx->url, sizeof fx->url, "nats://127.0.0.1:%d", fx->port);
    snprintf(fx->host, sizeof fx->host, "nats://localhost:%d", fx->port);
    cr_assert_eq(uv_mutex_init(&fx->mu), 0);
    cr_assert_eq(uv_cond_init(&fx->cond), 0);
}

const char *natsauthfx_path(const natsauthfx *fx, const char *name, char *out, size_t len)
{
    snprintf(out, len, "%s/%s", fx->dir, name);
    return out;
}

void natsauthfx_write(natsauthfx *fx, const char *name, mode_t mode, const char *fmt, ...)
{
    char path[512], text[16384];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    cr_assert(n >= 0 && (size_t)n < sizeof text, "%s: too long", name);
    natsauthfx_path(fx, name, path, sizeof path);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    cr_assert_geq(fd, 0, "create %s: %s", path, strerror(errno));
    cr_assert_eq(write(fd, text, (size_t)n), n, "write %s", path);
    cr_assert_eq(fchmod(fd, mode), 0, "chmod %s", path);
    close(fd);
}

/* openssl with argv (NULL-terminated), in the folder, which must succeed. */
static void openssl(natsauthfx *fx, const char *const *args)
{
    const char *argv[40];
    size_t n = 0;
    argv[n++] = "openssl";
    for (size_t i = 0; args[i] != NULL && n < 38; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    char cwd[512];
    cr_assert_not_null(getcwd(cwd, sizeof cwd));
    cr_assert_eq(chdir(fx->dir), 0);
    cms_test_proc *p = cms_test_run(argv, OPENSSL_TIMEOUT_MS);
    cr_assert_eq(chdir(cwd), 0);
    cr_assert(p->exited && p->status == 0, "openssl %s failed (%d): %s", args[0], (int)p->status,
              p->err);
    cms_test_proc_free(p);
}

static void make_ca(natsauthfx *fx, const char *name)
{
    char key[64], pem[64], subj[96];
    snprintf(key, sizeof key, "%s.key", name);
    snprintf(pem, sizeof pem, "%s.pem", name);
    snprintf(subj, sizeof subj, "/CN=cms test %s", name);
    const char *args[] = {
        "req",    "-x509",   "-newkey", "ec",   "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-keyout", key,       "-out", pem,        "-days",
        "2",      "-subj",   subj,      NULL};
    openssl(fx, args);
}

/* name.key, name.pem signed by ca.pem, with extensions ext (an openssl
 * extension file's lines). */
static void make_leaf(natsauthfx *fx, const char *name, int serial, const char *ext)
{
    char key[64], csr[64], pem[64], extfile[64], subj[96], ser[16];
    snprintf(key, sizeof key, "%s.key", name);
    snprintf(csr, sizeof csr, "%s.csr", name);
    snprintf(pem, sizeof pem, "%s.pem", name);
    snprintf(extfile, sizeof extfile, "%s.ext", name);
    snprintf(subj, sizeof subj, "/CN=cms test %s", name);
    snprintf(ser, sizeof ser, "%d", serial);
    const char *req[] = {"req",    "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                         "-nodes", "-keyout", key,  "-out",     csr,
                         "-subj",  subj,      NULL};
    openssl(fx, req);
    natsauthfx_write(fx, extfile, 0600, "%s\n", ext);
    const char *sign[] = {"x509",   "-req",   "-in",         csr,     "-CA",  "ca.pem",
                          "-CAkey", "ca.key", "-set_serial", ser,     "-out", pem,
                          "-days",  "2",      "-extfile",    extfile, NULL};
    openssl(fx, sign);
    char path[512];
    cr_assert_eq(chmod(natsauthfx_path(fx, key, path, sizeof path), 0600), 0);
}

void natsauthfx_tls(natsauthfx *fx, const char *san)
{
    char ext[512];
    make_ca(fx, "ca");
    make_ca(fx, "other-ca");
    snprintf(ext, sizeof ext, "subjectAltName=%s\nextendedKeyUsage=serverAuth", san);
    make_leaf(fx, "server", 1, ext);
    make_leaf(fx, "client", 2, "extendedKeyUsage=clientAuth");
}

const char *natsauthfx_tls_block(const natsauthfx *fx, bool verify_clients, char *out, size_t len)
{
    if (verify_clients)
        snprintf(out, len,
                 "tls { cert_file: \"%s/server.pem\", key_file: \"%s/server.key\", "
                 "ca_file: \"%s/ca.pem\", verify: true }",
                 fx->dir, fx->dir, fx->dir);
    else
        snprintf(out, len, "tls { cert_file: \"%s/server.pem\", key_file: \"%s/server.key\" }",
                 fx->dir, fx->dir);
    return out;
}

/* The reader thread: the server's stderr into fx->log until it closes. */
static void reader_main(void *arg)
{
    natsauthfx *fx = arg;
    char buf[4096];
    for (;;) {
        ssize_t n = read(fx->log_fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        uv_mutex_lock(&fx->mu);
        if (n > 0) {
            char *nb = realloc(fx->log, fx->loglen + (size_t)n + 1);
            if (nb != NULL) {
                memcpy(nb + fx->loglen, buf, (size_t)n);
                fx->loglen += (size_t)n;
                nb[fx->loglen] = '\0';
                fx->log = nb;
            }
        } else {
            fx->eof = true;
        }
        uv_cond_broadcast(&fx->cond);
        uv_mutex_unlock(&fx->mu);
        if (n <= 0)
            return;
    }
}

void natsauthfx_start(natsauthfx *fx, const char *body)
{
    char conf[512];
    cr_assert_eq(fx->pid, 0, "already started");
    natsauthfx_write(fx, "nats.conf", 0600,
                     "listen: 127.0.0.1:%d\njetstream { store_dir: \"%s/js\" }\n%s\n", fx->port,
                     fx->dir, body ? body : "");
    natsauthfx_path(fx, "nats.conf", conf, sizeof conf);
    int fds[2];
    cr_assert_eq(pipe2(fds, O_CLOEXEC), 0);
    /* built before fork: the child of a threaded process may only make
     * async-signal-safe calls until exec */
    char prog[] = "nats-server", dash_c[] = "-c";
    char *argv[] = {prog, dash_c, conf, NULL};
    pid_t parent = getpid();
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_geq(pid, 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the test */
        if (getppid() != parent)
            _exit(127);
        if (dup2(fds[1], 1) < 0 || dup2(fds[1], 2) < 0)
            _exit(127);
        execvp(argv[0], argv);
        execv("/usr/sbin/nats-server", argv); /* Debian's, often not on a user's PATH */
        _exit(127);
    }
    close(fds[1]);
    fx->pid = pid;
    fx->log_fd = fds[0];
    fx->eof = false;
    cr_assert_eq(uv_thread_create(&fx->reader, reader_main, fx), 0);
    bool ready = natsauthfx_wait_log(fx, READY_LINE, 1, START_TIMEOUT_MS);
    uv_mutex_lock(&fx->mu);
    char *log = strdup(fx->log ? fx->log : "");
    uv_mutex_unlock(&fx->mu);
    cr_assert(ready, "nats-server -c %s did not start:\n%s", conf, log);
    free(log);
}

/* mu held */
static int count_locked(const natsauthfx *fx, const char *needle)
{
    int n = 0;
    for (const char *p = fx->log; p != NULL && (p = strstr(p, needle)) != NULL; p += strlen(needle))
        n++;
    return n;
}

bool natsauthfx_wait_log(natsauthfx *fx, const char *needle, int times, int timeout_ms)
{
    uint64_t deadline = uv_hrtime() + (uint64_t)timeout_ms * 1000000u;
    uv_mutex_lock(&fx->mu);
    bool found;
    for (;;) {
        found = count_locked(fx, needle) >= times;
        uint64_t now = uv_hrtime();
        if (found || fx->eof || now >= deadline)
            break;
        (void)uv_cond_timedwait(&fx->cond, &fx->mu, deadline - now);
    }
    uv_mutex_unlock(&fx->mu);
    return found;
}

int natsauthfx_log_count(natsauthfx *fx, const char *needle)
{
    uv_mutex_lock(&fx->mu);
    int n = count_locked(fx, needle);
    uv_mutex_unlock(&fx->mu);
    return n;
}

static int remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

void natsauthfx_stop(natsauthfx *fx)
{
    if (fx->pid > 0) {
        int status = 0;
        kill(fx->pid, SIGTERM);
        if (cms_test_wait_exit(fx->pid, STOP_TIMEOUT_MS, &status) != fx->pid) {
            kill(fx->pid, SIGKILL);
            (void)waitpid(fx->pid, &status, 0);
        }
        fx->pid = 0;
        uv_thread_join(&fx->reader); /* the pipe closed with the server */
        close(fx->log_fd);
        fx->log_fd = -1;
    }
    if (fx->dir[0] != '\0') {
        (void)nftw(fx->dir, remove_one, 16, FTW_DEPTH | FTW_PHYS);
        fx->dir[0] = '\0';
        free(fx->log);
        fx->log = NULL;
        fx->loglen = 0;
        uv_cond_destroy(&fx->cond);
        uv_mutex_destroy(&fx->mu);
    }
}
