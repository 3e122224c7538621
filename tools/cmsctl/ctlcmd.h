/* Commands to the services from cmsctl: the caller's API key, blocking
 * request-reply on <prefix>.<service>.<verb>, and the wire's conventions
 * (cms.v1.Reply, Unix-microsecond times) turned into what a person reads.
 *
 * A command-line tool has no loop to protect, so a call simply waits for its
 * reply (bounded by --timeout). A call that changes something carries a
 * fresh Cms-Request-Id and is sent again with the same id when no reply came
 * (timeout, or nobody subscribed yet): the service answers a repeated id with
 * its first reply, so a retry never does the work twice.
 *
 * The API key is read from, in this order: the variable CMS_API_KEY; the
 * file named by CMS_CREDENTIALS_FILE; ~/.config/cms/credentials. Never from a
 * flag (a command line is visible to every user of the machine). The key is
 * never printed or logged, and is wiped from memory when the client is
 * destroyed. */
#ifndef CMSCTL_CTLCMD_H
#define CMSCTL_CTLCMD_H

#include <nats/nats.h>
#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cms/v1/command.pb-c.h"
#include "cms/v1/identity.pb-c.h"
#include "config.h"
#include "ctlnats.h"
#include "ctlout.h"

/* The options every command verb takes (put them in the verb's table). */
// clang-format off
#define CMSCTL_CMD_OPTIONS \
  CMSCTL_NATS_OPTIONS, \
  {"command-prefix", "CMS_COMMAND_PREFIX", CMS_OPT_STRING, "cms.cmd", "subject root of commands: <prefix>.<service>.<verb>", CMS_OPT_PUBLIC, false}, \
  {"timeout", NULL, CMS_OPT_DURATION, "10s", "longest wait to connect, and for each reply (1ms to 24d)", CMS_OPT_PUBLIC, false}, \
  CMSCTL_OUT_OPTIONS
// clang-format on

/* What the --help of a command verb says about the key (append to its usage tail). */
#define CMSCTL_CMD_KEY_HELP                                                                        \
    "The API key is read from CMS_API_KEY, else from the file named by CMS_CREDENTIALS_FILE,\n"    \
    "else from ~/.config/cms/credentials (mode 600; '#' comments; the key alone on a line, or\n"   \
    "\"api_key = <key>\"). Exit status: 0 done, 1 failed, 2 usage error."

/* ------------------------------------------------------------------------ */
/* the API key */

#define CMSCTL_CMD_KEY_MAX 256        /* longest key accepted, in characters */
#define CMSCTL_CMD_KEY_FILE_MAX 65536 /* a bigger credentials file is refused */

#define CMSCTL_CMD_KEY_ERRORS(X)                                                                   \
    X(CMSCTL_CMD_KEY_OK, "ok")                                                                     \
    X(CMSCTL_CMD_KEY_ENONE, "no API key found")                                                    \
    X(CMSCTL_CMD_KEY_EUNSAFE, "credentials file readable or writable by others")                   \
    X(CMSCTL_CMD_KEY_EREAD, "credentials file unreadable")                                         \
    X(CMSCTL_CMD_KEY_EFORMAT, "not an API key")

typedef enum cmsctl_cmd_key_err {
#define CMSCTL_CMD_KEY_ENUM(name, text) name,
    CMSCTL_CMD_KEY_ERRORS(CMSCTL_CMD_KEY_ENUM)
#undef CMSCTL_CMD_KEY_ENUM
} cmsctl_cmd_key_err;

const char *cmsctl_cmd_key_strerror(cmsctl_cmd_key_err err);

/* Where a key may come from; NULL or "" means "not given". */
typedef struct cmsctl_cmd_key_sources {
    const char *env_key; /* the value of CMS_API_KEY */
    const char *file;    /* the value of CMS_CREDENTIALS_FILE */
    const char *home;    /* $HOME, for ~/.config/cms/credentials */
} cmsctl_cmd_key_sources;

/* The sources as the environment gives them (pointers into environ). */
cmsctl_cmd_key_sources cmsctl_cmd_key_sources_from_env(void);

/* Finds the key: env_key if given; else the file (CMS_CREDENTIALS_FILE,
 * which must then exist); else ~/.config/cms/credentials if it exists.
 *
 * File: lines with only blanks or starting with '#' (after blanks) are
 * skipped; the first other line is the key alone or "api_key = <key>"
 * (blanks around "=" optional; blanks and "\r" at either end ignored). The
 * file must be a regular file that neither group nor others may read or
 * write.
 *
 * A key is 1 to CMSCTL_CMD_KEY_MAX printable ASCII characters without
 * blanks (it travels in a header). On success out holds it,
 * NUL-terminated. On failure why gets one sentence for the user: it names
 * the files and variables looked at, never the key. Blocking (reads a file). */
cmsctl_cmd_key_err cmsctl_cmd_key_load(const cmsctl_cmd_key_sources *src,
                                       char out[CMSCTL_CMD_KEY_MAX + 1], char *why, size_t whylen)
    __attribute__((warn_unused_result));

/* ------------------------------------------------------------------------ */
/* replies */

#define CMSCTL_CMD_FIELD_MAX 128
#define CMSCTL_CMD_MESSAGE_MAX 512

/* A service's error reply, as received. */
typedef struct cmsctl_cmd_error {
    int code; /* a cms.v1.ErrorCode; not OK */
    char field[CMSCTL_CMD_FIELD_MAX];
    char message[CMSCTL_CMD_MESSAGE_MAX];
} cmsctl_cmd_error;

#define CMSCTL_CMD_REPLY_ERRORS(X)                                                                 \
    X(CMSCTL_CMD_REPLY_OK, "ok")                                                                   \
    X(CMSCTL_CMD_REPLY_ERROR, "the service answered with an error")                                \
    X(CMSCTL_CMD_REPLY_EDECODE, "the reply is not a cms.v1.Reply with a result or an error")       \
    X(CMSCTL_CMD_REPLY_ERESULT, "the reply's result is not the message expected")

typedef enum cmsctl_cmd_reply_err {
#define CMSCTL_CMD_REPLY_ENUM(name, text) name,
    CMSCTL_CMD_REPLY_ERRORS(CMSCTL_CMD_REPLY_ENUM)
#undef CMSCTL_CMD_REPLY_ENUM
} cmsctl_cmd_reply_err;

const char *cmsctl_cmd_reply_strerror(cmsctl_cmd_reply_err err);

/* Decodes the bytes of a cms.v1.Reply. OK: *out is the result unpacked as
 * rdesc (free with protobuf_c_message_free_unpacked). ERROR: *error is
 * filled (field and message cut to fit, made printable). Intermediate
 * copies of the result are wiped, so a secret in it lives only in *out. */
cmsctl_cmd_reply_err cmsctl_cmd_reply_decode(const uint8_t *data, size_t len,
                                             const ProtobufCMessageDescriptor *rdesc,
                                             ProtobufCMessage **out, cmsctl_cmd_error *error)
    __attribute__((warn_unused_result));

/* "INVALID_ARGUMENT" etc.; "ERROR_<n>" (in buf) for a code this build does not know. */
const char *cmsctl_cmd_code_name(int code, char buf[24]);

/* Prints "PROG: CODE (field): message" ("PROG: CODE: message" without a
 * field) and returns CMSCTL_EXIT_FAILED. */
int cmsctl_cmd_error_print(const char *prog, const cmsctl_cmd_error *error);

/* ------------------------------------------------------------------------ */
/* the client */

typedef struct cmsctl_cmd cmsctl_cmd;

typedef enum {
    CMSCTL_CMD_READ,  /* sent once, without a request id */
    CMSCTL_CMD_WRITE, /* fresh Cms-Request-Id; resent with it on timeout or no responders */
} cmsctl_cmd_kind;

#define CMSCTL_CMD_RETRIES 3 /* resends of a write after the first attempt */

/* Loads the key (a missing or refused key is a usage error: printed, exit
 * 2), reads nats-url, command-prefix and timeout from cfg (a table with
 * CMSCTL_CMD_OPTIONS) and connects. service: e.g. "identity". prog is kept
 * for messages and must outlive the client. Returns CMSCTL_EXIT_OK with
 * *out set, or the exit status after printing why not. */
int cmsctl_cmd_open(const char *prog, const cms_config *cfg, const char *service, cmsctl_cmd **out)
    __attribute__((warn_unused_result));
void cmsctl_cmd_destroy(cmsctl_cmd *c); /* wipes the key; NULL-safe */

/* Sends req to <prefix>.<service>.<verb> with "Authorization: Bearer <key>"
 * and waits up to timeout for the reply. On CMSCTL_EXIT_OK, *out is the
 * result unpacked as rdesc (caller frees with
 * protobuf_c_message_free_unpacked). Otherwise prints why ("PROG: CODE
 * (field): message" for a service's error) and returns CMSCTL_EXIT_FAILED. */
int cmsctl_cmd_call(cmsctl_cmd *c, const char *verb, cmsctl_cmd_kind kind,
                    const ProtobufCMessage *req, const ProtobufCMessageDescriptor *rdesc,
                    ProtobufCMessage **out) __attribute__((warn_unused_result));

/* Asks cms-identity who the client's own key belongs to: "authenticate"
 * with the key as its body. *out is the Principal (caller frees with
 * cms__v1__principal__free_unpacked); a refused key is the service's
 * PERMISSION_DENIED, printed, CMSCTL_EXIT_FAILED. */
int cmsctl_cmd_whoami(cmsctl_cmd *c, Cms__V1__Principal **out) __attribute__((warn_unused_result));

/* ------------------------------------------------------------------------ */
/* times */

#define CMSCTL_CMD_TIME_MAX 40

/* Unix microseconds as RFC 3339 in UTC: "2024-03-20T15:00:00Z", or with
 * micro true "2024-03-20T15:00:00.123456Z". Returns out, or "" when us is 0
 * (the wire's "not set") or out of range. */
const char *cmsctl_cmd_time_format(int64_t us, bool micro, char out[CMSCTL_CMD_TIME_MAX]);

/* RFC 3339 ("2025-01-31T12:00:00Z", "2025-01-31T12:00:00.5+02:00"; 'T'
 * and 'Z' in either case) to Unix microseconds. False if it is not one. */
bool cmsctl_cmd_time_parse(const char *text, int64_t *us) __attribute__((warn_unused_result));

#endif
