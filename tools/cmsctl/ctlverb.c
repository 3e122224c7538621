/* The plumbing of cmsctl's command sub-verbs; see ctlverb.h. */
#include "ctlverb.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cms/v1/identity.pb-c.h"

#define IDENTITY_SERVICE "identity"
#define CURSOR_MAX 4096 /* longest cursor printed in the "next:" line */

/* Exactly one positional, what it is called in messages. */
static int one_arg(const char *prog, const cms_config *cfg, const char *what, const char **out)
{
    size_t n = cms_config_npositional(cfg);
    if (n == 0)
        return cmsctl_usage(prog, "%s is needed", what);
    if (n > 1)
        return cmsctl_usage(prog, "unexpected argument \"%s\" after %s",
                            cms_config_positional(cfg, 1), what);
    *out = cms_config_positional(cfg, 0);
    return CMSCTL_EXIT_OK;
}

int cmsctl_verb_begin(cmsctl_verb *v, const char *service, const char *prog, const cms_option *opts,
                      size_t nopts, int argc, char **argv, const char *summary, const char *usage,
                      const char *what)
{
    memset(v, 0, sizeof *v);
    v->prog = prog;
    v->service = service;
    int status = cmsctl_parse(opts, nopts, argc, argv, prog, summary, usage, &v->cfg);
    if (status != CMSCTL_EXIT_OK)
        return status;
    if ((status = cmsctl_out_format_get(prog, v->cfg, &v->fmt)) != CMSCTL_EXIT_OK)
        return status;
    if (what != NULL)
        return one_arg(prog, v->cfg, what, &v->arg);
    if (cms_config_npositional(v->cfg) > 0)
        return cmsctl_usage(prog, "unexpected argument \"%s\"", cms_config_positional(v->cfg, 0));
    return CMSCTL_EXIT_OK;
}

int cmsctl_verb_open(cmsctl_verb *v)
{
    return cmsctl_cmd_open(v->prog, v->cfg, v->service, &v->c);
}

int cmsctl_verb_call(cmsctl_verb *v, const char *name, cmsctl_cmd_kind kind,
                     const ProtobufCMessage *req, const ProtobufCMessageDescriptor *rdesc)
{
    return cmsctl_cmd_call(v->c, name, kind, req, rdesc, &v->got);
}

int cmsctl_verb_end(cmsctl_verb *v, int status)
{
    if (v->got != NULL)
        protobuf_c_message_free_unpacked(v->got, NULL);
    cmsctl_cmd_destroy(v->idc);
    cmsctl_cmd_destroy(v->c);
    cms_config_destroy(v->cfg);
    return status == CMSCTL_PARSE_DONE ? CMSCTL_EXIT_OK : status;
}

char *cmsctl_verb_str(const cmsctl_verb *v, const char *name)
{
    const char *s = cms_config_str(v->cfg, name);
    return (char *)(s != NULL ? s : "");
}

/* ------------------------------------------------------------------------ */
/* files */

/* The whole of an open stream, NUL-terminated, at most max bytes. */
static int read_stream(const char *prog, const char *name, FILE *f, size_t max, char **out,
                       size_t *outlen)
{
    size_t len = 0, cap = 4096;
    char *buf = malloc(cap);
    if (buf == NULL)
        return cmsctl_fail(prog, "out of memory");
    for (;;) {
        if (len + 1 == cap) {
            char *bigger = cap > max ? NULL : realloc(buf, cap * 2);
            if (bigger == NULL) {
                free(buf);
                return cap > max ? cmsctl_fail(prog, "%s is bigger than %zu bytes", name, max)
                                 : cmsctl_fail(prog, "out of memory");
            }
            buf = bigger;
            cap *= 2;
        }
        size_t n = fread(buf + len, 1, cap - 1 - len, f);
        len += n;
        if (n == 0)
            break;
    }
    if (ferror(f)) {
        free(buf);
        return cmsctl_fail(prog, "cannot read %s", name);
    }
    if (len > max) {
        free(buf);
        return cmsctl_fail(prog, "%s is bigger than %zu bytes", name, max);
    }
    buf[len] = '\0';
    *out = buf;
    if (outlen != NULL)
        *outlen = len;
    return CMSCTL_EXIT_OK;
}

int cmsctl_verb_json_file(const char *prog, const char *flag, const char *path, bool stdin_ok,
                          size_t max, char **out)
{
    int status = CMSCTL_EXIT_OK;
    FILE *f = NULL;
    char *text = NULL;
    json_t *v = NULL;
    json_error_t jerr;
    *out = NULL;
    if (path == NULL)
        goto out;
    if (strcmp(path, "-") == 0) {
        if (!stdin_ok) {
            status = cmsctl_usage(prog, "--%s cannot be - (stdin): give a file", flag);
            goto out;
        }
        f = stdin;
    } else if ((f = fopen(path, "r")) == NULL) {
        status = cmsctl_fail(prog, "--%s %s: %s", flag, path, strerror(errno));
        goto out;
    }
    size_t len = 0;
    if ((status = read_stream(prog, strcmp(path, "-") == 0 ? "stdin" : path, f, max, &text,
                              &len)) != CMSCTL_EXIT_OK)
        goto out;
    /* the text goes on as a C string: a NUL would silently cut it short */
    if (memchr(text, '\0', len) != NULL) {
        status = cmsctl_usage(prog, "--%s %s holds a NUL byte (at byte %zu): not JSON text", flag,
                              path, (size_t)((char *)memchr(text, '\0', len) - text));
        goto out;
    }
    if ((v = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr)) == NULL) {
        status = cmsctl_usage(prog, "--%s %s is not JSON: %s (line %d)", flag, path, jerr.text,
                              jerr.line);
        goto out;
    }
    if (!json_is_object(v)) {
        status = cmsctl_usage(prog, "--%s %s must hold a JSON object, like {\"a\": 1}", flag, path);
        goto out;
    }
    *out = text;
    text = NULL;
out:
    json_decref(v);
    free(text);
    if (f != NULL && f != stdin)
        fclose(f);
    return status;
}

/* ------------------------------------------------------------------------ */
/* ids and names */

bool cmsctl_verb_uuid(const char *s, char out[CMS_UUID_STRLEN + 1])
{
    cms_uuid u;
    if (!cms_uuid_parse(s, strlen(s), &u))
        return false;
    cms_uuid_format(&u, out);
    return true;
}

int cmsctl_verb_identity(cmsctl_verb *v, cmsctl_cmd **out)
{
    int status = CMSCTL_EXIT_OK;
    cmsctl_cmd **c = strcmp(v->service, IDENTITY_SERVICE) == 0 ? &v->c : &v->idc;
    if (*c == NULL)
        status = cmsctl_cmd_open(v->prog, v->cfg, IDENTITY_SERVICE, c);
    *out = *c;
    return status;
}

int cmsctl_verb_get_identity(cmsctl_verb *v, const char *arg, ProtobufCMessage **out)
{
    char id[CMS_UUID_STRLEN + 1];
    cmsctl_cmd *c = NULL;
    Cms__V1__GetIdentity req = CMS__V1__GET_IDENTITY__INIT;
    if (cmsctl_verb_uuid(arg, id))
        req.id = id;
    else
        req.name = (char *)arg;
    int status = cmsctl_verb_identity(v, &c);
    if (status != CMSCTL_EXIT_OK)
        return status;
    return cmsctl_cmd_call(c, "get", CMSCTL_CMD_READ, &req.base, &cms__v1__identity__descriptor,
                           out);
}

int cmsctl_verb_identity_id(cmsctl_verb *v, const char *arg, char id[CMS_UUID_STRLEN + 1])
{
    int status = CMSCTL_EXIT_OK;
    ProtobufCMessage *found = NULL;
    if (cmsctl_verb_uuid(arg, id))
        goto out;
    if ((status = cmsctl_verb_get_identity(v, arg, &found)) != CMSCTL_EXIT_OK)
        goto out;
    snprintf(id, CMS_UUID_STRLEN + 1, "%s", ((const Cms__V1__Identity *)found)->id);
out:
    if (found != NULL)
        protobuf_c_message_free_unpacked(found, NULL);
    return status;
}

/* ------------------------------------------------------------------------ */
/* output */

const char *cmsctl_verb_time(int64_t us, char out[CMSCTL_CMD_TIME_MAX])
{
    cmsctl_cmd_time_format(us, false, out);
    if (out[0] == '\0')
        snprintf(out, CMSCTL_CMD_TIME_MAX, "-");
    return out;
}

/* ------------------------------------------------------------------------ */
/* lists */

int cmsctl_verb_limit(const cmsctl_verb *v, int32_t *limit)
{
    int64_t n = 0;
    if (!cmsctl_int_arg(v->prog, v->cfg, "limit", 1, CMSCTL_VERB_LIMIT_MAX, &n))
        return CMSCTL_EXIT_USAGE;
    *limit = (int32_t)n;
    return CMSCTL_EXIT_OK;
}

/* The pages of one list command, kept until printed. */
typedef struct pages {
    ProtobufCMessage **v;
    size_t n, cap;
} pages;

static bool pages_add(pages *p, ProtobufCMessage *page)
{
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 8;
        ProtobufCMessage **v = realloc(p->v, cap * sizeof *v);
        if (v == NULL)
            return false;
        p->v = v;
        p->cap = cap;
    }
    p->v[p->n++] = page;
    return true;
}

static void pages_free(pages *p)
{
    for (size_t i = 0; i < p->n; i++)
        protobuf_c_message_free_unpacked(p->v[i], NULL);
    free(p->v);
}

int cmsctl_verb_list(cmsctl_verb *v, const cmsctl_verb_pager *pager, const void *ctx)
{
    int status = CMSCTL_EXIT_OK;
    pages p = {.n = 0};
    bool all = cms_config_bool(v->cfg, "all");
    const char *after = cms_config_str(v->cfg, "after");
    const char *next = "";
    for (;;) {
        ProtobufCMessage *page = NULL;
        size_t items = 0;
        if ((status = pager->ask(v, ctx, after != NULL ? after : "", &page)) != CMSCTL_EXIT_OK)
            goto out;
        if (!pages_add(&p, page)) {
            protobuf_c_message_free_unpacked(page, NULL);
            status = cmsctl_fail(v->prog, "out of memory");
            goto out;
        }
        next = pager->next(page, &items);
        if (!all || next[0] == '\0')
            break;
        /* a cursor that does not move would page forever */
        if (items == 0 || (after != NULL && strcmp(after, next) == 0)) {
            status = cmsctl_fail(v->prog,
                                 "the service returned a page that does not advance "
                                 "(cursor %s): stopping",
                                 next);
            goto out;
        }
        if (cmsctl_interrupted()) {
            status = cmsctl_fail(v->prog, "interrupted");
            goto out;
        }
        after = next;
    }
    if ((status = pager->print(v, p.v, p.n)) != CMSCTL_EXIT_OK)
        goto out;
    if (!all && next[0] != '\0') {
        char b[CURSOR_MAX];
        fflush(stdout);
        fprintf(v->fmt == CMSCTL_OUT_TABLE ? stdout : stderr, "next: --after %s\n",
                cmsctl_out_clean(next, b, sizeof b));
    }
out:
    pages_free(&p);
    return status;
}
