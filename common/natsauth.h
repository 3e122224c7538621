/* Who a process is to nats-server, and how it trusts the server: the
 * credentials file, the inbox prefix that follows from it, and TLS. Shared
 * by common/nats (the services) and cmsctl (which drives nats.c directly),
 * so that both read a credentials file and set up TLS the same way.
 *
 * A credentials file (--nats-creds) is one of:
 *   - a NATS .creds file (a user JWT and its NKey seed, as nsc writes it),
 *     recognised by its "-----BEGIN NATS USER JWT-----" line; nats.c reads
 *     it itself at every connect and signs the server's nonce with the seed;
 *   - a file whose first line is USER:PASSWORD (the password runs to the end
 *     of the line and may hold ':'); later lines are ignored.
 * Either way only its owner may read or write it (chmod 600): a file group
 * or others may read is refused, by the mode of the descriptor opened. A
 * credential never comes from the command line, only from the file a flag
 * names. The password is wiped once nats.c has its copy (which it must
 * keep, to send again on every reconnect) and is never logged.
 *
 * Inboxes: with a USER:PASSWORD file the inbox prefix is "_INBOX.<USER>",
 * so that the server may allow each user only "_INBOX.<USER>.>"; with a
 * .creds file or none it stays "_INBOX"; --nats-inbox-prefix overrides both.
 * nats.c's own inboxes (its request mux, JetStream's publish acks and API
 * calls) follow the prefix; ours are made by cms_nats_inbox (nats.h).
 *
 * TLS is required when a URL says tls://, or a CA file, a client
 * certificate or the tls flag is given: a server that does not offer TLS
 * is then refused. nats.c checks the server's certificate against the
 * system's store and the CA file, and (built with
 * NATS_FORCE_HOST_VERIFICATION, as upstream's default and Debian's
 * libnats3.4 are) its name against the host of the URL it connects to, so
 * no expected host name is set here: with several servers, each is checked
 * against its own URL. */
#ifndef CMS_NATSAUTH_H
#define CMS_NATSAUTH_H

#include "config.h"
#include "nats.h"
#include "xenum.h"

#include <nats/nats.h>
#include <stdbool.h>
#include <stddef.h>

#define CMS_NATSAUTH_FILE_MAX 65536 /* a bigger credentials file is refused */
#define CMS_NATSAUTH_USER_MAX 128
#define CMS_NATSAUTH_PASSWORD_MAX 1024
#define CMS_NATSAUTH_PREFIX_MAX 128 /* an inbox prefix, without the '.' that follows it */

#define CMS_NATSAUTH_ERRORS(X)                                                                     \
    X(CMS_NATSAUTH_OK, "ok")                                                                       \
    X(CMS_NATSAUTH_EMISSING, "the file does not exist")                                            \
    X(CMS_NATSAUTH_EUNSAFE, "the file may be read by other users")                                 \
    X(CMS_NATSAUTH_EREAD, "the file cannot be read")                                               \
    X(CMS_NATSAUTH_EFORMAT, "not a credentials file")                                              \
    X(CMS_NATSAUTH_EINVAL, "invalid NATS security options")                                        \
    X(CMS_NATSAUTH_ETLS, "TLS cannot be set up")                                                   \
    X(CMS_NATSAUTH_ENOMEM, "out of memory")

typedef enum { CMS_NATSAUTH_ERRORS(CMS_ENUM_ITEM) CMS_NATSAUTH_NERRORS } cms_natsauth_err;
const char *cms_natsauth_strerror(cms_natsauth_err e);

typedef enum {
    CMS_NATSAUTH_NONE,     /* no credentials file */
    CMS_NATSAUTH_JWT,      /* a .creds file: nats.c reads it */
    CMS_NATSAUTH_PASSWORD, /* USER:PASSWORD */
} cms_natsauth_kind;

/* A credentials file as read. Wipe it (cms_natsauth_creds_wipe) once used. */
typedef struct cms_natsauth_creds {
    cms_natsauth_kind kind;
    char user[CMS_NATSAUTH_USER_MAX + 1];         /* PASSWORD only */
    char password[CMS_NATSAUTH_PASSWORD_MAX + 1]; /* PASSWORD only */
} cms_natsauth_creds;

/* Reads path (blocking: start-up and command-line tools). On failure *out
 * is wiped and why says what is wrong with the file and what to do (never
 * its content): "... mode 644 ...: chmod 600 PATH". */
cms_natsauth_err cms_natsauth_creds_read(const char *path, cms_natsauth_creds *out, char *why,
                                         size_t whylen) __attribute__((warn_unused_result));
void cms_natsauth_creds_wipe(cms_natsauth_creds *c); /* NULL-safe */

/* What cms_natsauth_apply settled on: nothing secret, for logs and errors. */
typedef struct cms_natsauth_info {
    cms_natsauth_kind kind;
    char user[CMS_NATSAUTH_USER_MAX + 1]; /* PASSWORD: the user; else "" */
    char creds_file[512];                 /* as given; "" for none */
    char inbox_prefix[CMS_NATSAUTH_PREFIX_MAX + 1];
    bool tls;
} cms_natsauth_info;

/* Sets up no (nats.c's options) for url and s: the server(s) of url (one
 * URL, or several of one cluster separated by commas, blanks around each
 * ignored, at most CMS_NATSAUTH_URLS_MAX; nats.c's natsOptions_SetURL would
 * take a list as one URL), reads the credentials file, hands them to
 * nats.c, sets the inbox prefix and TLS. s may be NULL (none
 * of it). info (may be NULL) gets what was decided. On failure why says
 * what to fix. Blocking (reads files): start-up only. */
#define CMS_NATSAUTH_URLS_MAX 16
cms_natsauth_err cms_natsauth_apply(natsOptions *no, const char *url, const cms_nats_security *s,
                                    cms_natsauth_info *info, char *why, size_t whylen)
    __attribute__((warn_unused_result));

/* The sentence for an authorization violation: which user, which file, and
 * what to do about it. */
void cms_natsauth_refused_text(const cms_natsauth_info *info, char *out, size_t len);

/* A permissions violation as nats.c reports it ("Permissions Violation for
 * Publish to "a.b"", "... for Subscription to "a.>" using queue "q""): the
 * operation ("publish" or "subscribe") and the subject. False when text is
 * none. */
bool cms_natsauth_violation_parse(const char *text, const char **op, char *subject, size_t len);

/* The security options of a table built with CMS_OPTIONS_NATS_SECURITY
 * (config.h); the strings stay the config's. */
void cms_natsauth_from_config(const cms_config *c, cms_nats_security *out);

#endif
