/* Shared command-line conventions of cmsctl; see cli.h. */
#include "cli.h"

#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static volatile sig_atomic_t g_signals;

int cmsctl_usage(const char *prog, const char *fmt, ...)
{
    va_list ap;
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
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", prog);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return CMSCTL_EXIT_FAILED;
}

int cmsctl_parse(const cms_option *opts, size_t nopts, int argc, char **argv, const char *prog,
                 const char *summary, const char *usage_tail, cms_config **out)
{
    switch (cms_config_parse(opts, nopts, argc, argv, prog, summary, usage_tail, out)) {
    case CMS_CONFIG_OK:
        return CMSCTL_EXIT_OK;
    case CMS_CONFIG_EXIT_OK:
        return CMSCTL_PARSE_DONE;
    case CMS_CONFIG_EXIT_USAGE:
        return CMSCTL_EXIT_USAGE;
    }
    return CMSCTL_EXIT_USAGE;
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
