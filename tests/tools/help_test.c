/* Every binary's --help held to the command-line conventions (common/config.h):
 * cms-identity, cms-audit, cms-migrate, cms-worker, and cmsctl with each of its
 * verbs.
 *
 *   - an option with an "env:" line is named after its variable: the variable
 *     without CMS_, lower-cased, "_" -> "-";
 *   - nothing says "(none)", and the heading does not claim that every option
 *     has a variable;
 *   - no option is named for a unit (-ms, -us, -secs, -seconds, -days ...):
 *     durations are DURATION options, and their defaults are durations;
 *   - the options a binary requires are the ones its --help marks
 *     "(required)": each binary is run without them, and every "missing
 *     required --NAME" it answers must be marked; given them all, it asks
 *     for no more. Those runs see no CMS_ variable, no credentials and
 *     servers on a closed port, so nothing they do reaches anything.
 *
 * The binaries are the build's ($CMS_TEST_BIN_DIR). */
#include <criterion/criterion.h>
#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "testenv.h"
#include "testproc.h"

#define WATCHDOG_MS 30000
#define MAX_OPTS 64
#define MAX_ARGS 48

extern char **environ;

typedef struct help_option {
    char name[64];
    char type[16];
    char env[64];
    char def[256];
    bool has_def, required;
} help_option;

typedef struct help {
    help_option o[MAX_OPTS];
    size_t n;
} help;

typedef struct target {
    const char *bin;
    const char *words[3]; /* the verb (and sub-verb) of cmsctl, NULL-terminated */
    const char *stop;     /* an argument that ends the run right after the options are read */
} target;

/* --log-level is checked right after the options are read: a bad one ends
 * the run before a service or a migration starts. */
static const target targets[] = {
    {"cms-identity", {NULL}, "--log-level=not-a-level"},
    {"cms-audit", {NULL}, "--log-level=not-a-level"},
    {"cms-migrate", {NULL}, "--log-level=not-a-level"},
    {"cms-worker", {NULL}, "--log-level=not-a-level"},
    {"cmsctl", {"gen", NULL}, NULL},
    {"cmsctl", {"record", NULL}, NULL},
    {"cmsctl", {"replay", NULL}, NULL},
    {"cmsctl", {"audit", "query", NULL}, NULL},
    {"cmsctl", {"identity", "create", NULL}, NULL},
    {"cmsctl", {"identity", "get", NULL}, NULL},
    {"cmsctl", {"identity", "list", NULL}, NULL},
    {"cmsctl", {"identity", "suspend", NULL}, NULL},
    {"cmsctl", {"identity", "activate", NULL}, NULL},
    {"cmsctl", {"identity", "deactivate", NULL}, NULL},
    {"cmsctl", {"credential", "issue", NULL}, NULL},
    {"cmsctl", {"credential", "revoke", NULL}, NULL},
    {"cmsctl", {"credential", "list", NULL}, NULL},
    {"cmsctl", {"whoami", NULL}, NULL},
    {"cmsctl", {"contract", "keygen", NULL}, NULL},
    {"cmsctl", {"contract", "verify", NULL}, NULL},
    {"cmsctl", {"contract", "budget", NULL}, NULL},
    {"cmsctl", {"job", "submit", NULL}, NULL},
    {"cmsctl", {"job", "cancel", NULL}, NULL},
    {"cmsctl", {"job", "get", NULL}, NULL},
    {"cmsctl", {"job", "list", NULL}, NULL},
    {"cmsctl", {"job", "metrics", NULL}, NULL},
    {"cmsctl", {"job", "watch", NULL}, NULL},
    {"cmsctl", {"privacy", "epsilon", NULL}, NULL},
    {"cmsctl", {"privacy", "sigma", NULL}, NULL},
    {"cmsctl", {"privacy", "steps", NULL}, NULL},
    {"cmsctl", {"version", NULL}, NULL},
};

static char g_home[64];

/* Children see no CMS_ variable but the tests' own, no credentials, and
 * servers where nothing listens. */
static void hermetic_env(void)
{
    char *names[256];
    size_t n = 0;
    for (char **e = environ; *e != NULL && n < 256; e++) {
        if (strncmp(*e, "CMS_", 4) == 0 && strncmp(*e, "CMS_TEST_", 9) != 0)
            names[n++] = strndup(*e, strcspn(*e, "="));
    }
    for (size_t i = 0; i < n; i++) {
        unsetenv(names[i]);
        free(names[i]);
    }
    snprintf(g_home, sizeof g_home, "/tmp/cms-help-home-XXXXXX");
    cr_assert_not_null(mkdtemp(g_home));
    cr_assert_eq(setenv("HOME", g_home, 1), 0);
    cr_assert_eq(setenv("CMS_NATS_URL", "nats://127.0.0.1:1", 1), 0);
    cr_assert_eq(
        setenv("CMS_DATABASE_URL", "host=127.0.0.1 port=1 dbname=none connect_timeout=2", 1), 0);
    cr_assert_eq(setenv("CMS_HTTP_ADDR", "127.0.0.1:1", 1), 0);
}

static void fini(void)
{
    if (g_home[0] != '\0')
        rmdir(g_home);
}

TestSuite(help, .init = hermetic_env, .fini = fini, .timeout = 120);

static void bin_path(const target *t, char out[1024])
{
    snprintf(out, 1024, "%s/%s", cms_test_env("CMS_TEST_BIN_DIR"), t->bin);
    cr_assert_eq(access(out, X_OK), 0, "%s is not there: build it first", out);
}

static void label(const target *t, char out[128])
{
    snprintf(out, 128, "%s%s%s%s%s", t->bin, t->words[0] ? " " : "", t->words[0] ? t->words[0] : "",
             t->words[0] && t->words[1] ? " " : "", t->words[0] && t->words[1] ? t->words[1] : "");
}

/* Runs the target with extra arguments (n of them). */
static cms_test_proc *run(const target *t, const char *const *extra, size_t n)
{
    char bin[1024];
    const char *argv[MAX_ARGS + 1];
    size_t k = 0;
    bin_path(t, bin);
    argv[k++] = bin;
    for (size_t i = 0; t->words[i] != NULL; i++)
        argv[k++] = t->words[i];
    for (size_t i = 0; i < n && k < MAX_ARGS; i++)
        argv[k++] = extra[i];
    argv[k] = NULL;
    return cms_test_run(argv, WATCHDOG_MS);
}

/* n bytes of src (fewer if it ends first) into dst of cap bytes, cut to fit. */
static void set(char *dst, size_t cap, const char *src, size_t n)
{
    size_t len = strnlen(src, n);
    if (len >= cap)
        len = cap - 1;
    memcpy(dst, src, len);
    dst[len] = '\0';
}

/* The options of a --help text: "  --NAME=TYPE[ (required)]" or
 * "  --NAME[=BOOL]...", then indented lines, among them "env: VAR" and
 * "default: VALUE". */
static void parse_help(const char *what, const char *text, help *h)
{
    h->n = 0;
    help_option *cur = NULL;
    for (const char *l = text; *l != '\0';) {
        size_t len = strcspn(l, "\n");
        char line[512];
        set(line, sizeof line, l, len);
        l += len + (l[len] == '\n');
        if (strncmp(line, "  --", 4) == 0 && strcmp(line, "  --version") != 0) {
            cr_assert_lt(h->n, MAX_OPTS, "%s: too many options", what);
            cur = &h->o[h->n++];
            memset(cur, 0, sizeof *cur);
            const char *p = line + 4;
            size_t nl = strcspn(p, "=[ ");
            set(cur->name, sizeof cur->name, p, nl);
            p += nl;
            if (strncmp(p, "[=BOOL]", 7) == 0) {
                set(cur->type, sizeof cur->type, "BOOL", 4);
                p += 7;
            } else if (*p == '=') {
                p++;
                size_t tl = strcspn(p, " ");
                set(cur->type, sizeof cur->type, p, tl);
                p += tl;
            }
            cur->required = strcmp(p, " (required)") == 0;
            cr_assert(*p == '\0' || cur->required, "%s: what follows --%s: \"%s\"", what, cur->name,
                      p);
            continue;
        }
        if (strncmp(line, "      ", 6) != 0) {
            cur = NULL; /* -h, --help and the text after the list */
            continue;
        }
        if (cur == NULL)
            continue;
        if (strncmp(line + 6, "env: ", 5) == 0) {
            set(cur->env, sizeof cur->env, line + 11, sizeof line);
        } else if (strncmp(line + 6, "default: ", 9) == 0) {
            set(cur->def, sizeof cur->def, line + 15, sizeof line);
            cur->has_def = true;
        }
    }
}

static const help_option *find(const help *h, const char *name)
{
    for (size_t i = 0; i < h->n; i++) {
        if (strcmp(h->o[i].name, name) == 0)
            return &h->o[i];
    }
    return NULL;
}

/* The flag a variable names: CMS_IDENTITY_KEY_FILE -> identity-key-file. */
static void derived_flag(const char *env, char out[64])
{
    const char *p = strncmp(env, "CMS_", 4) == 0 ? env + 4 : env;
    size_t i = 0;
    for (; p[i] != '\0' && i + 1 < 64; i++)
        out[i] = p[i] == '_' ? '-' : (char)tolower((unsigned char)p[i]);
    out[i] = '\0';
}

static bool ends_with(const char *s, const char *tail)
{
    size_t n = strlen(s), m = strlen(tail);
    return n >= m && strcmp(s + n - m, tail) == 0;
}

/* A value of the option's type that passes the option parser. */
static const char *dummy(const help_option *o)
{
    if (strcmp(o->type, "INT") == 0)
        return "1";
    if (strcmp(o->type, "DURATION") == 0)
        return "1s";
    if (strcmp(o->type, "BOOL") == 0)
        return "true";
    return "/nonexistent/cms-help-test";
}

static void check_target(const target *t)
{
    char what[128];
    label(t, what);
    const char *help_arg[] = {"--help"};
    cms_test_proc *p = run(t, help_arg, 1);
    cr_assert(p->term_signal == 0 && p->status == 0, "%s --help: exit %lld\n%s", what,
              (long long)p->status, p->err);
    const char *text = p->out;
    cr_assert_not_null(strstr(text, "usage: "), "%s --help has no usage line:\n%s", what, text);
    cr_assert_null(strstr(text, "(none)"), "%s --help says (none):\n%s", what, text);
    cr_assert_null(strstr(text, "Every option may also be set"), "%s:\n%s", what, text);
    help h;
    parse_help(what, text, &h);
    cr_assert_gt(h.n, 0, "%s --help lists no option:\n%s", what, text);

    static const char *const units[] = {"-ms",  "-us",   "-ns",      "-msec",  "-secs", "-seconds",
                                        "-sec", "-mins", "-minutes", "-hours", "-days"};
    for (size_t i = 0; i < h.n; i++) {
        const help_option *o = &h.o[i];
        if (o->env[0] != '\0') {
            char want[64];
            derived_flag(o->env, want);
            cr_assert_str_eq(o->name, want, "%s: %s is set by --%s, not --%s", what, o->env, want,
                             o->name);
        }
        for (size_t u = 0; u < sizeof units / sizeof units[0]; u++)
            cr_assert_not(ends_with(o->name, units[u]),
                          "%s: --%s is named for its unit: make it a DURATION", what, o->name);
        if (strcmp(o->type, "DURATION") == 0 && o->has_def) {
            int64_t ms;
            cr_assert_eq(cms_config_duration_parse(o->def, &ms), CMS_CONFIG_DURATION_OK,
                         "%s: the default of --%s is not a duration: %s", what, o->name, o->def);
        }
        cr_assert_null(strstr(o->def, "(secret)"), "%s: --%s hides its default", what, o->name);
    }

    /* what the binary requires is what its help marks */
    const char *args[MAX_ARGS];
    char given[MAX_OPTS][300];
    bool found[MAX_OPTS] = {false};
    size_t nargs = 0, ngiven = 0;
    if (t->stop != NULL)
        args[nargs++] = t->stop;
    for (int round = 0; round <= MAX_OPTS; round++) {
        cms_test_proc *q = run(t, args, nargs);
        const char *m = strstr(q->err, "missing required --");
        if (m == NULL) {
            cms_test_proc_free(q);
            break;
        }
        m += strlen("missing required --");
        char name[64];
        set(name, sizeof name, m, strcspn(m, " ;\n"));
        cms_test_proc_free(q);
        const help_option *o = find(&h, name);
        cr_assert_not_null(o, "%s requires --%s, which its --help does not list", what, name);
        cr_assert(o->required, "%s requires --%s, which its --help does not mark (required)", what,
                  name);
        size_t idx = (size_t)(o - h.o);
        cr_assert_not(found[idx], "%s asks for --%s again after it was given", what, name);
        found[idx] = true;
        cr_assert_lt(ngiven, MAX_OPTS);
        snprintf(given[ngiven], sizeof given[ngiven], "--%s=%s", name, dummy(o));
        args[nargs++] = given[ngiven++];
    }
    for (size_t i = 0; i < h.n; i++)
        cr_assert(!h.o[i].required || found[i], "%s marks --%s (required) but runs without it",
                  what, h.o[i].name);
    cms_test_proc_free(p);
}

Test(help, every_binary_and_verb_follows_the_conventions)
{
    for (size_t i = 0; i < sizeof targets / sizeof targets[0]; i++)
        check_target(&targets[i]);
}

Test(help, cms_identity_requires_its_key_file)
{
    help h;
    const target *t = &targets[0];
    const char *help_arg[] = {"--help"};
    cms_test_proc *p = run(t, help_arg, 1);
    parse_help("cms-identity", p->out, &h);
    const help_option *o = find(&h, "identity-key-file");
    cr_assert_not_null(o, "%s", p->out);
    cr_assert(o->required);
    cr_assert_str_eq(o->env, "CMS_IDENTITY_KEY_FILE");
    cms_test_proc_free(p);
}

/* cms-identity and cms-audit both serve commands (the options exist only
 * for a service that does: service.c). */
Test(help, services_that_serve_commands_offer_the_command_options)
{
    const char *help_arg[] = {"--help"};
    for (size_t i = 0; i < 2; i++) {
        help h;
        cms_test_proc *p = run(&targets[i], help_arg, 1);
        parse_help(targets[i].bin, p->out, &h);
        cr_assert_not_null(find(&h, "command-prefix"), "%s:\n%s", targets[i].bin, p->out);
        cr_assert_not_null(find(&h, "auth-cache"), "%s:\n%s", targets[i].bin, p->out);
        cms_test_proc_free(p);
    }
}

Test(help, real_defaults_are_shown_with_only_passwords_stripped)
{
    const char *help_arg[] = {"--help"};
    for (size_t i = 0; i < sizeof targets / sizeof targets[0]; i++) {
        help h;
        char what[128];
        label(&targets[i], what);
        cms_test_proc *p = run(&targets[i], help_arg, 1);
        parse_help(what, p->out, &h);
        const help_option *db = find(&h, "database-url");
        if (db != NULL)
            cr_assert_str_eq(db->def, "host=127.0.0.1 dbname=cms", "%s", what);
        const help_option *nats = find(&h, "nats-url");
        if (nats != NULL)
            cr_assert_str_eq(nats->def, "nats://127.0.0.1:4222", "%s", what);
        cms_test_proc_free(p);
    }
}

Test(help, cmsctl_lists_every_verb)
{
    target overall = {"cmsctl", {NULL}, NULL};
    const char *help_arg[] = {"--help"};
    cms_test_proc *p = run(&overall, help_arg, 1);
    cr_assert_eq(p->status, 0);
    for (size_t i = 0; i < sizeof targets / sizeof targets[0]; i++) {
        if (strcmp(targets[i].bin, "cmsctl") != 0)
            continue;
        char line[64];
        snprintf(line, sizeof line, "\n  %s ", targets[i].words[0]);
        cr_assert_not_null(strstr(p->out, line), "cmsctl --help lacks %s:\n%s", targets[i].words[0],
                           p->out);
    }
    cms_test_proc_free(p);
}
