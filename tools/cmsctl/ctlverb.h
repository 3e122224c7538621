/* The sub-verbs of cmsctl that send commands to a service (cmsctl identity,
 * credential, whoami, contract and job): one plumbing and one set of
 * conventions for all of them.
 *
 * A sub-verb is a cmsctl_verb: cmsctl_verb_begin parses its options and its
 * one positional argument; the caller checks its own arguments and only then
 * opens the connection (cmsctl_verb_open), so that a usage error never waits
 * on NATS; cmsctl_verb_call sends the command and keeps the reply;
 * cmsctl_verb_end releases it all and gives the exit status.
 *
 * Conventions kept here:
 *   - an argument that parses as a UUID is an id, anything else a name; an
 *     identity given as ID|NAME is looked up with cms-identity's get, on a
 *     second connection opened when first needed if the verb's own service
 *     is another;
 *   - a time in a table is RFC 3339 in UTC to the second, "-" when unset;
 *   - a list is paged: --limit at a time from --after CURSOR, every page
 *     with --all, and when more may follow it ends with "next: --after
 *     CURSOR" (on stdout in a table, on stderr with -o json or ndjson). */
#ifndef CMSCTL_CTLVERB_H
#define CMSCTL_CTLVERB_H

#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "ctlcmd.h"
#include "ctlout.h"
#include "uuid.h"

#define CMSCTL_NOPTS(t) (sizeof(t) / sizeof((t)[0]))

/* A sub-verb's options, its one argument, its connections and the reply.
 * The fields are the caller's to read; cmsctl_verb_end releases them. */
typedef struct cmsctl_verb {
    const char *prog;      /* "cmsctl identity get": for messages */
    const char *service;   /* "identity", "contracts": where c goes */
    cms_config *cfg;       /* the options */
    cmsctl_out_format fmt; /* -o */
    cmsctl_cmd *c;         /* to service, once cmsctl_verb_open succeeded */
    cmsctl_cmd *idc;       /* to cms-identity when service is another one */
    const char *arg;       /* the one positional argument, if it takes one */
    ProtobufCMessage *got; /* the reply of cmsctl_verb_call */
} cmsctl_verb;

/* Options, then the one positional argument, called what in messages (NULL:
 * none may be given). Returns CMSCTL_EXIT_OK or the status to end with
 * (after printing why); either way cmsctl_verb_end must follow. */
int cmsctl_verb_begin(cmsctl_verb *v, const char *service, const char *prog, const cms_option *opts,
                      size_t nopts, int argc, char **argv, const char *summary, const char *usage,
                      const char *what) __attribute__((warn_unused_result));

/* Connects to v->service. */
int cmsctl_verb_open(cmsctl_verb *v) __attribute__((warn_unused_result));

/* The command name on v->service; its result lands in v->got. */
int cmsctl_verb_call(cmsctl_verb *v, const char *name, cmsctl_cmd_kind kind,
                     const ProtobufCMessage *req, const ProtobufCMessageDescriptor *rdesc)
    __attribute__((warn_unused_result));

/* Releases what v holds; returns status, with "--help was answered" made
 * CMSCTL_EXIT_OK. */
int cmsctl_verb_end(cmsctl_verb *v, int status);

/* A string option as a request field: "" when it is not given. */
char *cmsctl_verb_str(const cmsctl_verb *v, const char *name);

/* ------------------------------------------------------------------------ */
/* files */

/* The text of the JSON object in the file --flag names ("-": stdin, when
 * stdin_ok), at most max bytes; *out (the caller frees it) is NULL when path
 * is NULL. The text is sent as it is: the service keeps it. A file that
 * holds no JSON object, or "-" where stdin is not allowed, is a usage error;
 * one that cannot be read or is bigger than max, a failure. */
int cmsctl_verb_json_file(const char *prog, const char *flag, const char *path, bool stdin_ok,
                          size_t max, char **out) __attribute__((warn_unused_result));

/* ------------------------------------------------------------------------ */
/* ids and names */

/* True, with its canonical form in out, if s is a UUID. */
bool cmsctl_verb_uuid(const char *s, char out[CMS_UUID_STRLEN + 1]);

/* The connection to cms-identity: v->c when that is v's service, else
 * v->idc; either is opened on first use. *out stays v's. */
int cmsctl_verb_identity(cmsctl_verb *v, cmsctl_cmd **out) __attribute__((warn_unused_result));

/* The identity given as ID or NAME, by cms-identity's get. *out is the
 * Cms__V1__Identity; the caller frees it (or leaves it in v->got). */
int cmsctl_verb_get_identity(cmsctl_verb *v, const char *arg, ProtobufCMessage **out)
    __attribute__((warn_unused_result));

/* The id of the identity given as ID (taken as it is) or NAME (looked up). */
int cmsctl_verb_identity_id(cmsctl_verb *v, const char *arg, char id[CMS_UUID_STRLEN + 1])
    __attribute__((warn_unused_result));

/* ------------------------------------------------------------------------ */
/* output */

/* us for a table: RFC 3339 to the second, "-" when unset. Returns out. */
const char *cmsctl_verb_time(int64_t us, char out[CMSCTL_CMD_TIME_MAX]);

/* ------------------------------------------------------------------------ */
/* lists */

#define CMSCTL_VERB_LIMIT_MAX 1000 /* the most --limit may ask for */

/* The paging options of a list sub-verb (put them in its table); what names
 * the items, e.g. "identities". */
// clang-format off
#define CMSCTL_VERB_PAGE_OPTIONS(what) \
  {"limit", NULL, CMS_OPT_INT, "100", what " per page (1 to 1000)", CMS_OPT_PUBLIC, false}, \
  {"after", NULL, CMS_OPT_STRING, NULL, "the cursor printed after the previous page (next: --after CURSOR)", CMS_OPT_PUBLIC, false}, \
  {"all", NULL, CMS_OPT_BOOL, "false", "follow every page to the end", CMS_OPT_PUBLIC, false}
// clang-format on

/* --limit, checked to lie in 1 to CMSCTL_VERB_LIMIT_MAX (before connecting). */
int cmsctl_verb_limit(const cmsctl_verb *v, int32_t *limit) __attribute__((warn_unused_result));

/* What cmsctl_verb_list needs to know of one list command. */
typedef struct cmsctl_verb_pager {
    /* Sends the list command for the page after the cursor after ("": the
     * first page), with the filters in ctx. Returns CMSCTL_EXIT_OK with
     * *page set (the pager's from then on), or the status, printed. */
    int (*ask)(cmsctl_verb *v, const void *ctx, const char *after, ProtobufCMessage **page);
    /* The page's cursor for the page after it ("": the last) and, in
     * *items, how many items it holds. */
    const char *(*next)(const ProtobufCMessage *page, size_t *items);
    /* Prints the items of pages[0..n) in v->fmt; returns the exit status. */
    int (*print)(const cmsctl_verb *v, ProtobufCMessage *const *pages, size_t n);
} cmsctl_verb_pager;

/* The list (v open): the page after --after, or with --all every page to
 * the end (a page that does not advance, or SIGINT, stops it: a failure);
 * then printed, with the "next: --after CURSOR" line when more may follow. */
int cmsctl_verb_list(cmsctl_verb *v, const cmsctl_verb_pager *pager, const void *ctx)
    __attribute__((warn_unused_result));

#endif
