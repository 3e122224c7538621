/* Options from the environment and the command line; see config.h. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log.h"

#ifndef CMS_VERSION
#define CMS_VERSION "unknown"
#endif

/* Where an option's value came from; later sources override earlier ones. */
typedef enum { SRC_NONE, SRC_DEFAULT, SRC_ENV, SRC_FLAG } value_source;

typedef struct opt_value {
    char *text; /* owned copy, NULL when the option has no value */
    value_source src;
    int64_t i;
    bool b;
} opt_value;

struct cms_config {
    const cms_option *opts;
    size_t nopts;
    opt_value *vals; /* nopts entries, parallel to opts */
    char **pos;
    size_t npos;
};

static const char *type_name(cms_opt_type t)
{
    switch (t) {
    case CMS_OPT_STRING:
        return "STRING";
    case CMS_OPT_INT:
        return "INT";
    case CMS_OPT_BOOL:
        return "BOOL";
    }
    return "?";
}

static const char *source_name(value_source s)
{
    switch (s) {
    case SRC_NONE:
        return "nothing";
    case SRC_DEFAULT:
        return "default";
    case SRC_ENV:
        return "environment";
    case SRC_FLAG:
        return "flag";
    }
    return "?";
}

/* A whole base-10 int64: no blanks, no trailing junk, no overflow. */
static bool parse_int(const char *s, int64_t *out)
{
    if (s == NULL || *s == '\0' || isspace((unsigned char)*s))
        return false;
    errno = 0;
    char *end = NULL;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0')
        return false;
    *out = (int64_t)v;
    return true;
}

static bool parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"true", "1", "yes", "on"};
    static const char *const no[] = {"false", "0", "no", "off"};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return true;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return true;
        }
    }
    return false;
}

/* One line on stderr: what was wrong, then where to look. */
static void usage_error(const char *prog, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void usage_error(const char *prog, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s: %s; try --help\n", prog, msg);
}

static void print_help(const cms_option *opts, size_t nopts, const char *prog, const char *summary,
                       const char *usage_tail)
{
    FILE *o = stdout;
    fprintf(o, "%s%s%s\n\n", prog, summary ? " - " : "", summary ? summary : "");
    fprintf(o, "usage: %s [options]%s%s\n\n", prog, usage_tail ? " " : "",
            usage_tail ? usage_tail : "");
    fprintf(o,
            "Every option may also be set by its environment variable; a flag overrides it.\n\n");
    fprintf(o, "options:\n");
    for (size_t i = 0; i < nopts; i++) {
        const cms_option *op = &opts[i];
        if (op->type == CMS_OPT_BOOL)
            fprintf(o, "  --%s[=BOOL]\n", op->name);
        else
            fprintf(o, "  --%s=%s\n", op->name, type_name(op->type));
        fprintf(o, "      %s\n", op->help ? op->help : "");
        fprintf(o, "      env: %s", op->env ? op->env : "(none)");
        if (op->required)
            fprintf(o, "; required");
        if (op->secret)
            fprintf(o, "; default: (secret)");
        else if (op->def)
            fprintf(o, "; default: %s", op->def);
        fprintf(o, "\n");
    }
    fprintf(o, "  -h, --help\n      print this help and exit\n");
    fprintf(o, "  --version\n      print the version (%s) and exit\n", CMS_VERSION);
    fflush(o);
}

static ssize_t find_opt(const cms_option *opts, size_t nopts, const char *name, size_t namelen)
{
    for (size_t i = 0; i < nopts; i++) {
        if (strlen(opts[i].name) == namelen && memcmp(opts[i].name, name, namelen) == 0)
            return (ssize_t)i;
    }
    return -1;
}

static bool set_text(opt_value *v, const char *text, value_source src)
{
    char *copy = strdup(text);
    if (copy == NULL)
        return false;
    free(v->text);
    v->text = copy;
    v->src = src;
    return true;
}

/* Converts and checks one option's final text. The value is not echoed for a
 * secret option: a mistyped password must not land in a terminal log. */
static bool check_value(const char *prog, const cms_option *op, opt_value *v)
{
    if (v->text == NULL || op->type == CMS_OPT_STRING)
        return true;
    bool ok = op->type == CMS_OPT_INT ? parse_int(v->text, &v->i) : parse_bool(v->text, &v->b);
    if (ok)
        return true;
    char where[160];
    if (v->src == SRC_ENV)
        snprintf(where, sizeof where, "%s (from %s)", op->name, op->env);
    else
        snprintf(where, sizeof where, "%s (from %s)", op->name, source_name(v->src));
    const char *want =
        op->type == CMS_OPT_INT ? "a base-10 64-bit integer" : "true/false/1/0/yes/no/on/off";
    if (op->secret)
        usage_error(prog, "bad value for --%s: want %s", where, want);
    else
        usage_error(prog, "bad value \"%s\" for --%s: want %s", v->text, where, want);
    return false;
}

void cms_config_destroy(cms_config *c)
{
    if (c == NULL)
        return;
    for (size_t i = 0; i < c->nopts; i++)
        free(c->vals[i].text);
    free(c->vals);
    for (size_t i = 0; i < c->npos; i++)
        free(c->pos[i]);
    free(c->pos);
    free(c);
}

cms_config_result cms_config_parse(const cms_option *opts, size_t nopts, int argc, char **argv,
                                   const char *prog, const char *summary, const char *usage_tail,
                                   cms_config **out)
{
    cms_config_result res = CMS_CONFIG_EXIT_USAGE;
    cms_config *c = NULL;
    if (prog == NULL)
        prog = (argc > 0 && argv[0]) ? argv[0] : "cms";

    c = calloc(1, sizeof *c);
    if (c == NULL)
        goto oom;
    c->opts = opts;
    c->nopts = nopts;
    c->vals = calloc(nopts ? nopts : 1, sizeof *c->vals);
    c->pos = calloc(argc > 0 ? (size_t)argc : 1, sizeof *c->pos);
    if (c->vals == NULL || c->pos == NULL)
        goto oom;

    /* defaults, then the environment (an empty variable counts as unset, as
     * an orchestrator writes "VAR=" for "not given") */
    for (size_t i = 0; i < nopts; i++) {
        if (opts[i].def && !set_text(&c->vals[i], opts[i].def, SRC_DEFAULT))
            goto oom;
        const char *e = opts[i].env ? getenv(opts[i].env) : NULL;
        if (e && *e && !set_text(&c->vals[i], e, SRC_ENV))
            goto oom;
    }

    bool flags_done = false;
    for (int a = 1; a < argc; a++) {
        const char *arg = argv[a];
        if (flags_done || arg[0] != '-' || arg[1] == '\0') { /* "-" alone is a positional */
            c->pos[c->npos] = strdup(arg);
            if (c->pos[c->npos] == NULL)
                goto oom;
            c->npos++;
            continue;
        }
        if (strcmp(arg, "--") == 0) {
            flags_done = true;
            continue;
        }
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            print_help(opts, nopts, prog, summary, usage_tail);
            res = CMS_CONFIG_EXIT_OK;
            goto out;
        }
        if (strcmp(arg, "--version") == 0) {
            fprintf(stdout, "%s %s\n", prog, CMS_VERSION);
            fflush(stdout);
            res = CMS_CONFIG_EXIT_OK;
            goto out;
        }
        if (arg[1] != '-') {
            usage_error(prog, "unknown flag %s", arg);
            goto out;
        }
        const char *name = arg + 2;
        const char *eq = strchr(name, '=');
        size_t namelen = eq ? (size_t)(eq - name) : strlen(name);
        ssize_t k = find_opt(opts, nopts, name, namelen);
        if (k < 0) {
            usage_error(prog, "unknown flag --%.*s", (int)namelen, name);
            goto out;
        }
        const char *val = NULL;
        if (eq) {
            val = eq + 1;
        } else if (opts[k].type == CMS_OPT_BOOL) {
            val = "true"; /* a bare bool flag never eats the next argument */
        } else if (a + 1 < argc) {
            val = argv[++a];
        } else {
            usage_error(prog, "flag --%s needs a value", opts[k].name);
            goto out;
        }
        if (!set_text(&c->vals[k], val, SRC_FLAG))
            goto oom;
    }

    for (size_t i = 0; i < nopts; i++) {
        if (opts[i].required && c->vals[i].text == NULL) {
            usage_error(prog, "missing required --%s%s%s%s", opts[i].name,
                        opts[i].env ? " (or " : "", opts[i].env ? opts[i].env : "",
                        opts[i].env ? ")" : "");
            goto out;
        }
        if (!check_value(prog, &opts[i], &c->vals[i]))
            goto out;
    }

    *out = c;
    c = NULL;
    res = CMS_CONFIG_OK;
    goto out;
oom:
    fprintf(stderr, "%s: out of memory\n", prog);
    res = CMS_CONFIG_EXIT_USAGE;
out:
    cms_config_destroy(c);
    return res;
}

static const opt_value *lookup(const cms_config *c, const char *name, cms_opt_type type)
{
    if (c == NULL || name == NULL)
        return NULL;
    ssize_t k = find_opt(c->opts, c->nopts, name, strlen(name));
    if (k < 0 || c->opts[k].type != type) {
        cms_log_error("config lookup of an undeclared option or with the wrong type", "{s:s, s:s}",
                      "option", name, "type", type_name(type));
        return NULL;
    }
    return &c->vals[k];
}

const char *cms_config_str(const cms_config *c, const char *name)
{
    const opt_value *v = lookup(c, name, CMS_OPT_STRING);
    return v ? v->text : NULL;
}

int64_t cms_config_int(const cms_config *c, const char *name)
{
    const opt_value *v = lookup(c, name, CMS_OPT_INT);
    return (v && v->text) ? v->i : 0;
}

bool cms_config_bool(const cms_config *c, const char *name)
{
    const opt_value *v = lookup(c, name, CMS_OPT_BOOL);
    return (v && v->text) ? v->b : false;
}

bool cms_config_is_set(const cms_config *c, const char *name)
{
    if (c == NULL || name == NULL)
        return false;
    ssize_t k = find_opt(c->opts, c->nopts, name, strlen(name));
    return k >= 0 && (c->vals[k].src == SRC_ENV || c->vals[k].src == SRC_FLAG);
}

size_t cms_config_npositional(const cms_config *c)
{
    return c ? c->npos : 0;
}

const char *cms_config_positional(const cms_config *c, size_t i)
{
    return (c && i < c->npos) ? c->pos[i] : NULL;
}

void cms_config_log(const cms_config *c)
{
    /* cms_log consumes the object only when the level is enabled */
    if (c == NULL || !cms_log_enabled(CMS_LOG_INFO))
        return;
    json_t *o = json_object();
    if (o == NULL)
        return;
    for (size_t i = 0; i < c->nopts; i++) {
        const cms_option *op = &c->opts[i];
        const opt_value *v = &c->vals[i];
        json_t *j;
        if (v->text == NULL)
            j = json_null();
        else if (op->secret)
            j = json_string("[redacted]");
        else if (op->type == CMS_OPT_INT)
            j = json_integer((json_int_t)v->i);
        else if (op->type == CMS_OPT_BOOL)
            j = json_boolean(v->b);
        else
            j = json_string(v->text);
        json_object_set_new(o, op->name, j);
    }
    cms_log_info("config", "{s:o}", "config", o);
}
