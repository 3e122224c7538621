/* benchlib: what the load generators of tests/bench share, so that each of
 * them (identity_load.c, contracts_load.c) holds only its own workload.
 *
 *   - clocks: monotonic and wall time, sleeping to a deadline, own CPU;
 *   - bench_hist: a latency histogram in microseconds, the same for every
 *     generator so that their figures compare;
 *   - bench_nats: a NATS client of its own, a few hundred lines of the text
 *     protocol: one thread owns a connection, writes every request due in
 *     one write and reads every reply available in a few reads, and so costs
 *     a few microseconds per request. nats.c hands each message from its
 *     reader thread to a delivery thread and, unless told to send at once,
 *     holds a publish up to 1 ms: on two CPUs a generator on nats.c would
 *     measure itself. Requests go out with a reply subject <inbox>.<seq>,
 *     one wildcard inbox per connection;
 *   - the helpers of set-up and baseline on nats.c: the admin's key file,
 *     packed protobuf bodies and replies, one blocking command, the parties
 *     (an identity with an API key and maybe an Ed25519 key) and their
 *     files, a signature of a contract's content hash, contract terms.
 *
 *   - bench_main: a tool's main, one verb a run (its options, --help, the
 *     exit codes 0 done, 1 failed, 2 usage error).
 *
 * A bench library, not a service's: it blocks (connecting, bench_call) and
 * writes its failures to stderr, each line prefixed by the program's name. */
#ifndef CMS_BENCHLIB_H
#define CMS_BENCHLIB_H

#include "apikey.h"
#include "config.h"
#include "uuid.h"

#include <nats/nats.h>
#include <protobuf-c/protobuf-c.h>
#include <sodium.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* --- main ---------------------------------------------------------------------- */

enum { BENCH_EXIT_DONE = 0, BENCH_EXIT_FAILED = 1, BENCH_EXIT_USAGE = 2 };

typedef struct bench_verb {
    const char *name;
    int (*run)(const cms_config *cfg); /* a BENCH_EXIT_* */
} bench_verb;

/* Starts logging (warnings up, to stderr) and libsodium, parses the options
 * (summary and usage_tail go to --help) and runs the one verb named, or
 * says what is wanted; returns the exit status. */
int bench_main(int argc, char **argv, const char *prog, const char *summary,
               const cms_option *options, size_t noptions, const char *usage_tail,
               const bench_verb *verbs, size_t nverbs);

/* --- clocks ------------------------------------------------------------------ */

int64_t bench_mono_ns(void);
/* Sleeps until CLOCK_MONOTONIC reads t_ns (at once if it is past). */
void bench_sleep_until_ns(int64_t t_ns);
int64_t bench_unix_us(void);
/* User and system CPU of the whole process so far. */
double bench_cpu_seconds(void);
uint64_t bench_pow2_at_least(uint64_t n);

/* --- latency histogram ------------------------------------------------------- */

/* Microseconds, exact below 1024 µs, then 512 buckets per power of two (under
 * 0.2 % error) up to 2^27 µs (134 s); larger values land in the last bucket. */
#define BENCH_HIST_SUB_BITS 9
#define BENCH_HIST_SUB (1u << BENCH_HIST_SUB_BITS)
#define BENCH_HIST_EXACT (2u * BENCH_HIST_SUB)
#define BENCH_HIST_MAX_MSB 26
#define BENCH_HIST_BUCKETS                                                                         \
    (BENCH_HIST_EXACT + (BENCH_HIST_MAX_MSB - BENCH_HIST_SUB_BITS) * BENCH_HIST_SUB)

/* Zeroed memory is an empty histogram (about 70 KiB: calloc it). n, max_us
 * and sum_us may be read; the buckets are the module's. */
typedef struct bench_hist {
    uint64_t n;
    uint64_t max_us;
    double sum_us;
    uint64_t b[BENCH_HIST_BUCKETS];
} bench_hist;

/* Counts a latency of ns (below 0: 0). */
void bench_hist_add(bench_hist *h, int64_t ns);
void bench_hist_merge(bench_hist *into, const bench_hist *h);
/* The q-quantile (0 < q <= 1) in µs: the top of its bucket, never more than
 * the maximum, so that a percentile never understates; 0 if empty. */
uint64_t bench_hist_quantile(const bench_hist *h, double q);
double bench_hist_mean_us(const bench_hist *h);

/* --- NATS client of the load ------------------------------------------------- */

typedef struct bench_nats bench_nats;

/* A message on the connection's inbox, read at t_now. seq is the number in
 * the last token of its subject <inbox>.<seq>, 0 if it has none; hdr (the
 * NATS header block, hdr_len 0 without one) and data belong to the
 * connection and last only for the call. The callback may publish on the
 * connection. Returning false stops the reading: the connection is then
 * broken (its first error should say why). */
typedef bool bench_nats_msg_fn(void *arg, uint64_t seq, const char *hdr, size_t hdr_len,
                               const char *data, size_t len, int64_t t_now);

/* An unconnected client; false only when out of memory. */
bool bench_nats_create(bench_nats **out) __attribute__((warn_unused_result));
/* NULL-safe; closes the socket. */
void bench_nats_destroy(bench_nats *n);

/* Connects to url (nats://[user:password@]host[:port], the credentials sent
 * in the CONNECT), named "<name>-<index>", subscribes to its inbox
 * (_INBOX.bench<pid>x<index>x<random>.*) and waits for the server's PONG,
 * blocking at most 5 s; then makes the socket non-blocking. on_msg gets
 * every message from then on. False with the first error set on failure. */
bool bench_nats_connect(bench_nats *n, const char *name, int index, const char *url,
                        bench_nats_msg_fn *on_msg, void *arg) __attribute__((warn_unused_result));

/* Queues a request to subject with reply subject <inbox>.<seq>: HPUB with
 * the header block hdr (hdr_len bytes, "NATS/1.0\r\n...\r\n\r\n"), or PUB
 * if hdr is NULL. False if the write buffer would pass its maximum. */
bool bench_nats_publish(bench_nats *n, const char *subject, uint64_t seq, const char *hdr,
                        size_t hdr_len, const void *data, size_t len)
    __attribute__((warn_unused_result));

/* Writes what it can of the queued bytes without blocking; false (and the
 * first error) if the connection broke. */
bool bench_nats_flush(bench_nats *n) __attribute__((warn_unused_result));

/* Waits at most wait_ns for the socket (to be readable, or writable while
 * bytes are queued), then reads what is there without blocking and hands
 * every whole message to on_msg, stamped with the time it was read. False
 * (and the first error) if the connection broke or on_msg said stop. */
bool bench_nats_poll(bench_nats *n, int64_t wait_ns) __attribute__((warn_unused_result));

/* Records the first error of the connection, its own or its user's: later
 * ones are dropped. */
void bench_nats_error(bench_nats *n, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The first error, "" while there was none. */
const char *bench_nats_first_error(const bench_nats *n);

/* --- set-up and baseline helpers (on nats.c) -------------------------------- */

/* The first API key in the file at path (a bare key, or a line like
 * "api_key = cms_..." among comments, as cms-migrate --admin-key-out
 * writes); false with a line on stderr if there is none. */
bool bench_read_key_file(const char *prog, const char *path, char out[CMS_APIKEY_LEN + 1])
    __attribute__((warn_unused_result));

/* A packed protobuf message; the caller frees data. */
typedef struct bench_body {
    uint8_t *data;
    size_t len;
} bench_body;

bool bench_pack_body(const ProtobufCMessage *m, bench_body *out)
    __attribute__((warn_unused_result));
/* A cms.v1.Reply with result, packed. */
bool bench_pack_reply(const ProtobufCMessage *result, bench_body *out)
    __attribute__((warn_unused_result));

/* One blocking command on <prefix>.<service>.<verb>, with "Authorization:
 * <auth>" unless auth is NULL; 0 and *out (a result of rdesc, the caller's
 * to free) on success, else the error code (or -1: no reply) with a line on
 * stderr unless quiet. */
int bench_command(const char *prog, natsConnection *nc, const char *prefix, const char *service,
                  const char *verb, const char *auth, const ProtobufCMessage *req,
                  const ProtobufCMessageDescriptor *rdesc, int64_t timeout_ms, bool quiet,
                  ProtobufCMessage **out);
/* One attempt of a command already packed (body) on subject, with
 * "Authorization: <auth>" and "Cms-Request-Id: <request_id>" unless NULL:
 * 0 and *out (a result of rdesc, the caller's to free), the error code of an
 * error reply (its field into field, if not NULL), BENCH_NO_REPLY when no
 * reply came (no responders, a timeout, the connection down: the command may
 * or may not have run) or BENCH_BAD_REPLY; a line on stderr unless quiet. */
#define BENCH_NO_REPLY (-1)
#define BENCH_BAD_REPLY (-2)
int bench_command_packed(const char *prog, natsConnection *nc, const char *subject,
                         const char *auth, const char *request_id, const bench_body *body,
                         const ProtobufCMessageDescriptor *rdesc, int64_t timeout_ms, bool quiet,
                         ProtobufCMessage **out, char *field, size_t field_cap);
/* bench_command to cms-identity, not quiet. */
int bench_call(const char *prog, natsConnection *nc, const char *prefix, const char *verb,
               const char *auth, const ProtobufCMessage *req,
               const ProtobufCMessageDescriptor *rdesc, int64_t timeout_ms, ProtobufCMessage **out);

/* --- parties ---------------------------------------------------------------- */

/* An identity of the benchmark with an API key and, if key_id is not "", an
 * Ed25519 key pair whose public half is its public_key credential key_id.
 * hdr is the NATS header block its requests carry:
 * "NATS/1.0\r\nAuthorization: Bearer <key>\r\n\r\n". Secrets: wipe with
 * bench_parties_free. */
typedef struct bench_party {
    char id[CMS_UUID_STRLEN + 1];
    char key_id[CMS_UUID_STRLEN + 1];
    uint8_t sk[crypto_sign_SECRETKEYBYTES];
    char api_key[CMS_APIKEY_LEN + 1];
    char hdr[CMS_APIKEY_LEN + 64];
    size_t hdr_len;
} bench_party;

/* Creates the identity name of type through cms-identity with admin_auth
 * ("Bearer <admin key>"), issues it an API key valid a week and, if
 * public_key, a public_key credential of a key pair made here. 0 with *out
 * filled, else the error code (or -1) with a line on stderr. */
int bench_party_create(const char *prog, natsConnection *nc, const char *prefix,
                       const char *admin_auth, const char *name, const char *type, bool public_key,
                       int64_t timeout_ms, bench_party *out) __attribute__((warn_unused_result));
/* p as one line of a parties file: "<identity id> <key id> <secret key hex>
 * <api key>", "-" for the key id and the secret key of a party without a
 * key pair. The file should be mode 0600. */
bool bench_party_write(FILE *f, const bench_party *p) __attribute__((warn_unused_result));
/* The parties of the file at path, in its order (at least one); false with
 * a line on stderr. Free with bench_parties_free. */
bool bench_parties_load(const char *prog, const char *path, bench_party **out, size_t *n)
    __attribute__((warn_unused_result));
void bench_parties_free(bench_party *v, size_t n); /* NULL-safe; wipes them */

/* p's signature of a contract: Ed25519 over the 32 bytes whose hex is
 * hash_hex, base64url without padding, into out; false if hash_hex is not
 * 64 hex digits or p has no key pair. */
#define BENCH_SIG_MAX                                                                              \
    sodium_base64_ENCODED_LEN(crypto_sign_BYTES, sodium_base64_VARIANT_URLSAFE_NO_PADDING)
bool bench_sign_hash(const bench_party *p, const char *hash_hex, char out[BENCH_SIG_MAX])
    __attribute__((warn_unused_result));

/* Contract terms JSON from yesterday to a year from now with a payment (a
 * contract that may be activated as soon as it is signed), and extra (NULL:
 * none) as more members of the object, e.g. "\"privacy\":{...}". */
void bench_contract_terms(char *out, size_t cap, const char *extra);

/* The baseline's serving: a nats.c connection to url named "<prog>-respond"
 * that writes each publish at once (unless buffered) and a subscription to
 * subject handing every message to on_msg; prints "ready: <subject>" and
 * waits for SIGTERM or SIGINT. True when it stopped on one. */
bool bench_serve(const char *prog, const char *url, const char *subject, bool buffered,
                 natsMsgHandler on_msg, void *closure) __attribute__((warn_unused_result));

#endif
