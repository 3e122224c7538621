/* A nats-server of the test's own, from a configuration the test writes:
 * for what the shared test server (CMS_TEST_NATS_URL) does not have, such
 * as users, permissions and TLS. Everything lives in a fresh folder (the
 * configuration, the files the test writes, certificates, the JetStream
 * store), removed by natsauthfx_stop.
 *
 *     natsauthfx fx;
 *     natsauthfx_init(&fx);
 *     natsauthfx_write(&fx, "alice.creds", 0600, "alice:%s\n", "pw");
 *     natsauthfx_start(&fx, "authorization { users = [ {user: alice, password: pw} ] }");
 *     ... connect to fx.url with --nats-creds natsauthfx_path(&fx, "alice.creds") ...
 *     natsauthfx_stop(&fx);
 *
 * The server's log (its stderr) is read by a thread of the fixture, so a
 * test can wait for a line (natsauthfx_wait_log) instead of sleeping.
 * Everything here blocks and asserts (Criterion): test code only. */
#ifndef CMS_NATSAUTHFX_H
#define CMS_NATSAUTHFX_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <uv.h>

typedef struct natsauthfx {
    char dir[128]; /* the folder of this server's files */
    int port;      /* on 127.0.0.1 */
    char url[96];  /* nats://127.0.0.1:<port> */
    char host[96]; /* nats://localhost:<port>, for certificates made for localhost */
    pid_t pid;     /* 0 when not running */
    int log_fd;    /* the read end of the server's stderr */
    uv_thread_t reader;
    uv_mutex_t mu; /* guards log, loglen, eof */
    uv_cond_t cond;
    char *log; /* everything the server logged so far, NUL-terminated */
    size_t loglen;
    bool eof;
} natsauthfx;

/* A fresh folder and a free port; no server yet. */
void natsauthfx_init(natsauthfx *fx);

/* <dir>/<name> into out; returns out. */
const char *natsauthfx_path(const natsauthfx *fx, const char *name, char *out, size_t len);

/* Writes <dir>/<name> with mode (exactly, whatever the umask) from a printf
 * format (natsauthfx_path names it). */
void natsauthfx_write(natsauthfx *fx, const char *name, mode_t mode, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Certificates made with the openssl command, in the folder: ca.pem (a
 * throwaway CA) and server.pem, server.key, a server certificate it signs
 * for san (an openssl subjectAltName value such as
 * "IP:127.0.0.1,DNS:localhost"); client.pem, client.key (mode 0600), a
 * client certificate it signs; other-ca.pem, a CA that signed none of them.
 * The server uses them when the configuration says so, e.g.
 *     tls { cert_file: "<dir>/server.pem", key_file: "<dir>/server.key" }
 * (natsauthfx_tls_block writes that block). */
void natsauthfx_tls(natsauthfx *fx, const char *san);
/* "tls { cert_file: ..., key_file: ... [, ca_file: ..., verify: true] }" for
 * the certificates above into out (verify_clients: the server requires a
 * client certificate signed by ca.pem); returns out. */
const char *natsauthfx_tls_block(const natsauthfx *fx, bool verify_clients, char *out, size_t len);

/* Writes <dir>/nats.conf: listen on 127.0.0.1:<port>, JetStream stored in
 * the folder, then body (users, permissions, tls ... as the test wants),
 * starts `nats-server -c` on it and returns once it logged "Server is
 * ready" (at most 15 s; a server that exits or fails fails the test). */
void natsauthfx_start(natsauthfx *fx, const char *body);

/* Waits at most timeout_ms for the server's log to hold needle at least
 * times times; returns whether it does. */
bool natsauthfx_wait_log(natsauthfx *fx, const char *needle, int times, int timeout_ms);
/* Times needle occurs in the server's log so far. */
int natsauthfx_log_count(natsauthfx *fx, const char *needle);

/* Stops the server (SIGTERM, then SIGKILL after 10 s), reaps it and removes
 * the folder. Safe to call twice. */
void natsauthfx_stop(natsauthfx *fx);

#endif
