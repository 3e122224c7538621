/* Options from the environment and the command line; see config.h. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <libpq-fe.h>
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
    int64_t i; /* INT: the number; DURATION: milliseconds */
    bool b;
} opt_value;

#define REDACTED "[redacted]"
#define SHOWN_MAX 2048 /* longest value shown in --help or the log line */

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
    case CMS_OPT_DURATION:
        return "DURATION";
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

/* ---- durations ---- */

const char *cms_config_duration_strerror(cms_config_duration_err err)
{
    switch (err) {
#define CMS_CONFIG_DURATION_TEXT(name, text)                                                       \
    case name:                                                                                     \
        return text;
        CMS_CONFIG_DURATION_ERRORS(CMS_CONFIG_DURATION_TEXT)
#undef CMS_CONFIG_DURATION_TEXT
    }
    return "is not a duration";
}

typedef struct duration_unit {
    const char *name;
    int64_t ms;
} duration_unit;

/* Largest first: cms_config_duration_format takes the first that divides. */
static const duration_unit units[] = {
    {"d", 86400000}, {"h", 3600000}, {"m", 60000}, {"s", 1000}, {"ms", 1},
};

cms_config_duration_err cms_config_duration_parse(const char *text, int64_t *ms)
{
    const char *p = text;
    int64_t n = 0;
    if (p == NULL || *p < '0' || *p > '9')
        return CMS_CONFIG_DURATION_ESYNTAX;
    bool overflow = false;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (n > (INT64_MAX - (*p - '0')) / 10)
            overflow = true;
        else
            n = n * 10 + (*p - '0');
    }
    if (*p == '\0') {
        if (n != 0 || overflow)
            return CMS_CONFIG_DURATION_ENOUNIT;
        *ms = 0; /* zero is zero in every unit */
        return CMS_CONFIG_DURATION_OK;
    }
    /* the unit: letters to the end; anything else (".5s", "5 s") is no duration */
    for (const char *q = p; *q != '\0'; q++) {
        if (!isalpha((unsigned char)*q))
            return CMS_CONFIG_DURATION_ESYNTAX;
    }
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (strcmp(p, units[i].name) != 0)
            continue;
        if (overflow || n > INT64_MAX / units[i].ms)
            return CMS_CONFIG_DURATION_ERANGE;
        *ms = n * units[i].ms;
        return CMS_CONFIG_DURATION_OK;
    }
    return CMS_CONFIG_DURATION_EUNIT;
}

const char *cms_config_duration_format(int64_t ms, char *out, size_t len)
{
    if (len == 0)
        return out;
    if (ms <= 0) {
        snprintf(out, len, "%s", ms == 0 ? "0" : "-");
        return out;
    }
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (ms % units[i].ms == 0) {
            snprintf(out, len, "%lld%s", (long long)(ms / units[i].ms), units[i].name);
            break;
        }
    }
    return out;
}

/* ---- redaction ---- */

/* A bounded string being built; once full, it stays failed. */
typedef struct sbuf {
    char *p;
    size_t len, cap;
    bool ok;
} sbuf;

static void sb_add(sbuf *b, const char *s, size_t n)
{
    if (!b->ok || n >= b->cap - b->len) {
        b->ok = false;
        return;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_str(sbuf *b, const char *s)
{
    sb_add(b, s, strlen(s));
}

/* One conninfo value, quoted as libpq reads it back when it must be. */
static void sb_conninfo_value(sbuf *b, const char *v)
{
    if (*v != '\0' && strpbrk(v, " \t\n\r\f\v'\\") == NULL) {
        sb_str(b, v);
        return;
    }
    sb_str(b, "'");
    for (; *v != '\0'; v++) {
        if (*v == '\'' || *v == '\\')
            sb_str(b, "\\");
        sb_add(b, v, 1);
    }
    sb_str(b, "'");
}

static bool redact_into(const char *value, sbuf *b, int depth);

static bool looks_like_connection_string(const char *v)
{
    return strchr(v, '=') != NULL || strstr(v, "://") != NULL;
}

/* key=value form. Without a password (anywhere) the text is kept as the user
 * wrote it; with one, it is rebuilt from what libpq read, which keeps every
 * other keyword but not the original order or spacing. */
static bool redact_conninfo(const char *value, sbuf *b, int depth)
{
    char *err = NULL;
    PQconninfoOption *opts = PQconninfoParse(value, &err);
    if (opts == NULL) {
        PQfreemem(err);
        return false;
    }
    bool secret = false;
    for (const PQconninfoOption *o = opts; o->keyword != NULL; o++) {
        if (o->val == NULL)
            continue;
        if (strcmp(o->keyword, "password") == 0)
            secret = true;
        else if (strcmp(o->keyword, "dbname") == 0 && looks_like_connection_string(o->val))
            secret = true; /* a connection string inside dbname: redacted on its own below */
    }
    bool ok = true;
    if (!secret) {
        sb_str(b, value);
    } else {
        bool first = true;
        for (const PQconninfoOption *o = opts; o->keyword != NULL && ok; o++) {
            if (o->val == NULL)
                continue;
            if (!first)
                sb_str(b, " ");
            first = false;
            sb_str(b, o->keyword);
            sb_str(b, "=");
            if (strcmp(o->keyword, "password") == 0) {
                sb_str(b, REDACTED);
            } else if (strcmp(o->keyword, "dbname") == 0 && looks_like_connection_string(o->val)) {
                char inner[SHOWN_MAX];
                sbuf ib = {inner, 0, sizeof inner, true};
                inner[0] = '\0';
                ok = depth < 2 && redact_into(o->val, &ib, depth + 1) && ib.ok;
                sb_conninfo_value(b, inner);
            } else {
                sb_conninfo_value(b, o->val);
            }
        }
    }
    PQconninfoFree(opts);
    return ok && b->ok;
}

/* One URL (no commas): scheme://[userinfo@]host.../path?query#fragment. The
 * userinfo runs to the last '@' before the query, so a password holding '/'
 * or '@' is still covered (a path holding '@' is then over-redacted, which
 * shows less, never more). */
static void redact_one_url(const char *u, size_t n, sbuf *b)
{
    const char *end = u + n;
    const char *sep = NULL;
    for (const char *p = u; p + 2 < end; p++) {
        if (p[0] == ':' && p[1] == '/' && p[2] == '/') {
            sep = p;
            break;
        }
    }
    const char *auth = sep ? sep + 3 : u;
    /* a lone user part is a user name in postgres URIs, a token in the others */
    bool nats = !(sep != NULL && (size_t)(sep - u) >= 8 && strncasecmp(u, "postgres", 8) == 0);
    const char *query = auth;
    while (query < end && *query != '?' && *query != '#')
        query++;
    const char *at = NULL;
    for (const char *p = auth; p < query; p++) {
        if (*p == '@')
            at = p;
    }
    sb_add(b, u, (size_t)(auth - u));
    const char *rest = auth;
    if (at != NULL) {
        const char *colon = memchr(auth, ':', (size_t)(at - auth));
        if (colon != NULL) {
            sb_add(b, auth, (size_t)(colon + 1 - auth));
            sb_str(b, REDACTED);
        } else if (nats) {
            sb_str(b, REDACTED); /* nats://TOKEN@host */
        } else {
            sb_add(b, auth, (size_t)(at - auth)); /* a user name alone */
        }
        rest = at;
    }
    sb_add(b, rest, (size_t)(query - rest));
    /* query parameters: password=... loses its value */
    const char *p = query;
    while (p < end) {
        if (*p != '?' && *p != '&') {
            sb_add(b, p, 1);
            p++;
            continue;
        }
        sb_add(b, p, 1);
        p++;
        const char *pe = p;
        while (pe < end && *pe != '&' && *pe != '#')
            pe++;
        static const char key[] = "password=";
        if ((size_t)(pe - p) >= sizeof key - 1 && strncasecmp(p, key, sizeof key - 1) == 0) {
            sb_str(b, key);
            sb_str(b, REDACTED);
        } else {
            sb_add(b, p, (size_t)(pe - p));
        }
        p = pe;
    }
}

static bool redact_urls(const char *value, sbuf *b)
{
    const char *p = value;
    for (;;) {
        size_t n = strcspn(p, ",");
        redact_one_url(p, n, b);
        if (p[n] == '\0')
            break;
        sb_str(b, ",");
        p += n + 1;
    }
    return b->ok;
}

static bool redact_into(const char *value, sbuf *b, int depth)
{
    if (strstr(value, "://") != NULL)
        return redact_urls(value, b);
    return redact_conninfo(value, b, depth);
}

bool cms_config_redact(const char *value, char *out, size_t len)
{
    if (out == NULL || len == 0)
        return false;
    out[0] = '\0';
    sbuf b = {out, 0, len, true};
    if (value != NULL && redact_into(value, &b, 0) && b.ok)
        return true;
    snprintf(out, len, "%s", REDACTED);
    return false;
}

/* The value of op as it may be shown: into buf, or a constant. */
static const char *shown(const cms_option *op, const char *text, char *buf, size_t len)
{
    switch (op->secret) {
    case CMS_OPT_PUBLIC:
        return text;
    case CMS_OPT_SECRET:
        return REDACTED;
    case CMS_OPT_PASSWORD:
        (void)cms_config_redact(text, buf, len);
        return buf;
    }
    return REDACTED;
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
    bool durations = false;
    fprintf(o, "%s%s%s\n\n", prog, summary ? " - " : "", summary ? summary : "");
    fprintf(o, "usage: %s [options]%s%s\n\n", prog, usage_tail ? " " : "",
            usage_tail ? usage_tail : "");
    fprintf(o, "options (an option with an env: line may also be set by that variable; the flag "
               "wins):\n");
    for (size_t i = 0; i < nopts; i++) {
        const cms_option *op = &opts[i];
        char buf[SHOWN_MAX];
        durations = durations || op->type == CMS_OPT_DURATION;
        if (op->type == CMS_OPT_BOOL)
            fprintf(o, "  --%s[=BOOL]", op->name);
        else
            fprintf(o, "  --%s=%s", op->name, type_name(op->type));
        fprintf(o, "%s\n", op->required ? " (required)" : "");
        fprintf(o, "      %s\n", op->help ? op->help : "");
        if (op->env)
            fprintf(o, "      env: %s\n", op->env);
        if (op->def == NULL)
            continue;
        if (op->secret == CMS_OPT_SECRET)
            fprintf(o, "      default: (secret)\n");
        else if (op->def[0] == '\0')
            fprintf(o, "      default: \"\"\n");
        else
            fprintf(o, "      default: %s\n", shown(op, op->def, buf, sizeof buf));
    }
    fprintf(o, "  -h, --help\n      print this help and exit\n");
    fprintf(o, "  --version\n      print the version (%s) and exit\n", CMS_VERSION);
    if (durations)
        fprintf(o, "\nA DURATION is a whole number and one unit, ms, s, m, h or d: 250ms, 30s, "
                   "10m, 2h, 90d.\n");
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

/* Where a value came from, for messages: "--name (from CMS_NAME)". */
static void where_from(const cms_option *op, const opt_value *v, char *out, size_t len)
{
    if (v->src == SRC_ENV)
        snprintf(out, len, "--%s (from %s)", op->name, op->env);
    else
        snprintf(out, len, "--%s (from %s)", op->name, source_name(v->src));
}

/* Converts and checks one option's final text. The value is not echoed for a
 * secret option: a mistyped password must not land in a terminal log. */
static bool check_value(const char *prog, const cms_option *op, opt_value *v)
{
    char where[200];
    if (v->text == NULL || op->type == CMS_OPT_STRING)
        return true;
    if (op->type == CMS_OPT_DURATION) {
        cms_config_duration_err e = cms_config_duration_parse(v->text, &v->i);
        if (e == CMS_CONFIG_DURATION_OK)
            return true;
        where_from(op, v, where, sizeof where);
        if (op->secret != CMS_OPT_PUBLIC)
            usage_error(prog, "%s: the value %s", where, cms_config_duration_strerror(e));
        else
            usage_error(prog, "%s: '%s' %s", where, v->text, cms_config_duration_strerror(e));
        return false;
    }
    bool ok = op->type == CMS_OPT_INT ? parse_int(v->text, &v->i) : parse_bool(v->text, &v->b);
    if (ok)
        return true;
    where_from(op, v, where, sizeof where);
    const char *want =
        op->type == CMS_OPT_INT ? "a base-10 64-bit integer" : "true/false/1/0/yes/no/on/off";
    if (op->secret != CMS_OPT_PUBLIC)
        usage_error(prog, "bad value for %s: want %s", where, want);
    else
        usage_error(prog, "bad value \"%s\" for %s: want %s", v->text, where, want);
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

int64_t cms_config_duration_ms(const cms_config *c, const char *name)
{
    const opt_value *v = lookup(c, name, CMS_OPT_DURATION);
    return (v && v->text) ? v->i : 0;
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
        char buf[SHOWN_MAX];
        json_t *j;
        if (v->text == NULL)
            j = json_null();
        else if (op->secret != CMS_OPT_PUBLIC)
            j = json_string(shown(op, v->text, buf, sizeof buf));
        else if (op->type == CMS_OPT_INT)
            j = json_integer((json_int_t)v->i);
        else if (op->type == CMS_OPT_BOOL)
            j = json_boolean(v->b);
        else
            j = json_string(v->text);
        /* text that is not UTF-8 is shown as nothing rather than dropped silently */
        json_object_set_new(o, op->name, j != NULL ? j : json_string("[not UTF-8]"));
    }
    cms_log_info("config", "{s:o}", "config", o);
}
