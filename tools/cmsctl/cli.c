/* Shared command-line conventions of cmsctl; see cli.h. */
#include "cli.h"

#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static volatile sig_atomic_t g_signals;
static FILE *g_progress; /* where a progress line is drawn, not yet ended */

void cmsctl_progress_drawn(FILE *f)
{
    g_progress = f;
}

void cmsctl_progress_end(void)
{
    if (g_progress == NULL)
        return;
    fputc('\n', g_progress);
    fflush(g_progress);
    g_progress = NULL;
}

int cmsctl_usage(const char *prog, const char *fmt, ...)
{
    va_list ap;
    cmsctl_progress_end();
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", prog);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "; try %s --help\n", prog);
    va_end(ap);
    return CMSCTL_EXIT_USAGE;
}

int cmsctl_fail(const char *prog, const char *fmt, ...)
{
    va_list ap;
    cmsctl_progress_end();
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", prog);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return CMSCTL_EXIT_FAILED;
}

/* "--name" (without "=") of an option that is not a bool: the next argument
 * is its value. */
static bool takes_next(const cms_option *opts, size_t nopts, const char *arg)
{
    if (strncmp(arg, "--", 2) != 0 || strchr(arg, '=') != NULL)
        return false;
    for (size_t i = 0; i < nopts; i++) {
        if (strcmp(opts[i].name, arg + 2) == 0)
            return opts[i].type != CMS_OPT_BOOL;
    }
    return false;
}

int cmsctl_parse(const cms_option *opts, size_t nopts, int argc, char **argv, const char *prog,
                 const char *summary, const char *usage_tail, cms_config **out)
{
    int status = CMSCTL_EXIT_USAGE;
    char **args = calloc((size_t)argc + 1, sizeof *args);
    char **owned = calloc((size_t)argc + 1, sizeof *owned); /* the "--output=" strings made here */
    int n = 0, nowned = 0;
    if (args == NULL || owned == NULL) {
        status = cmsctl_fail(prog, "out of memory");
        goto out;
    }
    bool flags_done = false;
    for (int a = 0; a < argc; a++) {
        const char *arg = argv[a];
        flags_done = flags_done || strcmp(arg, "--") == 0;
        if (a == 0 || flags_done || strncmp(arg, "-o", 2) != 0) {
            args[n++] = argv[a];
            /* "--flag VALUE": the value is passed on as it is, even "-o..." */
            if (a > 0 && !flags_done && takes_next(opts, nopts, arg) && a + 1 < argc)
                args[n++] = argv[++a];
            continue;
        }
        const char *val = arg[2] != '\0' ? arg + 2 + (arg[2] == '=') : NULL;
        if (val == NULL && a + 1 < argc)
            val = argv[++a];
        if (val == NULL) {
            status = cmsctl_usage(prog, "-o needs a value: table, json or ndjson");
            goto out;
        }
        size_t len = strlen(val) + sizeof "--output=";
        char *o = malloc(len);
        if (o == NULL) {
            status = cmsctl_fail(prog, "out of memory");
            goto out;
        }
        snprintf(o, len, "--output=%s", val);
        owned[nowned++] = o;
        args[n++] = o;
    }
    switch (cms_config_parse(opts, nopts, n, args, prog, summary, usage_tail, out)) {
    case CMS_CONFIG_OK:
        status = CMSCTL_EXIT_OK;
        break;
    case CMS_CONFIG_EXIT_OK:
        status = CMSCTL_PARSE_DONE;
        break;
    case CMS_CONFIG_EXIT_USAGE:
        status = CMSCTL_EXIT_USAGE;
        break;
    }
out:
    for (int i = 0; owned != NULL && i < nowned; i++)
        free(owned[i]);
    free(owned);
    free(args);
    return status;
}

bool cmsctl_int_arg(const char *prog, const cms_config *cfg, const char *name, int64_t min,
                    int64_t max, int64_t *out)
{
    int64_t v = cms_config_int(cfg, name);
    if (v < min || v > max) {
        cmsctl_usage(prog, "--%s %lld is out of range: want %lld to %lld", name, (long long)v,
                     (long long)min, (long long)max);
        return false;
    }
    *out = v;
    return true;
}

bool cmsctl_duration_arg(const char *prog, const cms_config *cfg, const char *name, int64_t min_ms,
                         int64_t max_ms, int64_t *out)
{
    int64_t v = cms_config_duration_ms(cfg, name);
    if (v < min_ms || v > max_ms) {
        char b1[32], b2[32], b3[32];
        cmsctl_usage(prog, "--%s %s is out of range: want %s to %s", name,
                     cms_config_duration_format(v, b1, sizeof b1),
                     cms_config_duration_format(min_ms, b2, sizeof b2),
                     cms_config_duration_format(max_ms, b3, sizeof b3));
        return false;
    }
    *out = v;
    return true;
}

static void on_signal(int sig)
{
    g_signals++;
    if (g_signals > 1)
        signal(sig, SIG_DFL);
}

void cmsctl_catch_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    /* no SA_RESTART: a blocking read or wait returns EINTR and sees the flag */
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

bool cmsctl_interrupted(void)
{
    return g_signals > 0;
}

uint64_t cmsctl_mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

int64_t cmsctl_wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}
