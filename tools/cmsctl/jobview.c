/* The progress of a training job as cmsctl shows it; see jobview.h. */
#include "jobview.h"

#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

#define BAR_MIN 10
#define BAR_MAX 30
#define LINE_ROOM 66 /* columns kept for the line beside a bar: a usual line fits */
#define DEFAULT_COLS 80

cmsctl_jobview_state cmsctl_jobview_state_parse(const char *status)
{
#define CMSCTL_JOBVIEW_STATE_PARSE(name, text)                                                     \
    if (strcmp(status, text) == 0)                                                                 \
        return name;
    CMSCTL_JOBVIEW_STATES(CMSCTL_JOBVIEW_STATE_PARSE)
#undef CMSCTL_JOBVIEW_STATE_PARSE
    return CMSCTL_JOBVIEW_UNKNOWN;
}

const char *cmsctl_jobview_state_name(cmsctl_jobview_state s)
{
    switch (s) {
#define CMSCTL_JOBVIEW_STATE_NAME(name, text)                                                      \
    case name:                                                                                     \
        return text;
        CMSCTL_JOBVIEW_STATES(CMSCTL_JOBVIEW_STATE_NAME)
#undef CMSCTL_JOBVIEW_STATE_NAME
    }
    return "unknown";
}

bool cmsctl_jobview_state_final(cmsctl_jobview_state s)
{
    switch (s) {
    case CMSCTL_JOBVIEW_COMPLETED:
    case CMSCTL_JOBVIEW_FAILED:
    case CMSCTL_JOBVIEW_STOPPED:
        return true;
    case CMSCTL_JOBVIEW_PENDING:
    case CMSCTL_JOBVIEW_RUNNING:
    case CMSCTL_JOBVIEW_UNKNOWN:
        return false;
    }
    return false;
}

int cmsctl_jobview_exit_status(cmsctl_jobview_state s)
{
    return s == CMSCTL_JOBVIEW_COMPLETED ? CMSCTL_EXIT_OK : CMSCTL_EXIT_FAILED;
}

/* metrics_json's key as a number, if it is one. */
static bool reported(const json_t *metrics, const char *key)
{
    return json_is_number(json_object_get(metrics, key));
}

void cmsctl_jobview_from_metrics(const Cms__V1__JobMetrics *m, cmsctl_jobview *out)
{
    memset(out, 0, sizeof *out);
    out->state = cmsctl_jobview_state_parse(m->status);
    out->steps_done = m->steps_done;
    out->progress = isfinite(m->progress) ? fmin(fmax(m->progress, 0.0), 1.0) : 0.0;
    if (out->state == CMSCTL_JOBVIEW_COMPLETED && m->steps_done > 0)
        out->steps_total = m->steps_done;
    else if (out->progress > 0 && m->steps_done > 0)
        out->steps_total = llround((double)m->steps_done / out->progress);
    else if (m->max_steps > 0 && m->max_steps < m->planned_steps)
        out->steps_total = m->max_steps;
    else
        out->steps_total = m->planned_steps > 0 ? m->planned_steps : 0;
    json_t *metrics = m->metrics_json != NULL ? json_loads(m->metrics_json, 0, NULL) : NULL;
    out->has_loss = reported(metrics, "loss");
    out->has_accuracy = reported(metrics, "accuracy");
    json_decref(metrics);
    out->loss = m->loss;
    out->accuracy = m->accuracy;
    out->spent = m->privacy_budget_spent;
    out->budget = m->privacy_budget;
    out->eta_us = m->eta_us > 0 ? m->eta_us : 0;
}

const char *cmsctl_jobview_duration(int64_t us, char out[CMSCTL_JOBVIEW_DURATION_MAX])
{
    if (us <= 0) {
        snprintf(out, CMSCTL_JOBVIEW_DURATION_MAX, "-");
        return out;
    }
    /* to the nearest second (without overflowing near INT64_MAX), and never
     * "0s" for time that is left */
    long long s = (long long)(us / 1000000 + (us % 1000000 >= 500000));
    if (s == 0)
        s = 1;
    if (s < 60)
        snprintf(out, CMSCTL_JOBVIEW_DURATION_MAX, "%llds", s);
    else if (s < 3600)
        snprintf(out, CMSCTL_JOBVIEW_DURATION_MAX, "%lldm%02llds", s / 60, s % 60);
    else if (s < 86400)
        snprintf(out, CMSCTL_JOBVIEW_DURATION_MAX, "%lldh%02lldm", s / 3600, s % 3600 / 60);
    else
        snprintf(out, CMSCTL_JOBVIEW_DURATION_MAX, "%lldd%02lldh", s / 86400, s % 86400 / 3600);
    return out;
}

/* Appends to out (len bytes, *pos used), cutting what does not fit. */
__attribute__((format(printf, 4, 5))) static void put(char *out, size_t len, size_t *pos,
                                                      const char *fmt, ...)
{
    if (*pos + 1 >= len)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out + *pos, len - *pos, fmt, ap);
    va_end(ap);
    if (n > 0)
        *pos += (size_t)n < len - *pos ? (size_t)n : len - *pos - 1;
}

/* A number for the line, or "-" when not known. */
static const char *number(bool known, double v, char out[32])
{
    if (known)
        snprintf(out, 32, "%.4g", v);
    else
        snprintf(out, 32, "-");
    return out;
}

size_t cmsctl_jobview_line(const cmsctl_jobview *v, char *out, size_t len)
{
    char loss[32], acc[32], eta[CMSCTL_JOBVIEW_DURATION_MAX];
    size_t pos = 0;
    if (len == 0)
        return 0;
    out[0] = '\0';
    int pct = v->state == CMSCTL_JOBVIEW_COMPLETED ? 100 : (int)floor(v->progress * 100.0);
    put(out, len, &pos, "%s %d%% %lld/", cmsctl_jobview_state_name(v->state), pct,
        (long long)v->steps_done);
    if (v->steps_total > 0)
        put(out, len, &pos, "%lld", (long long)v->steps_total);
    else
        put(out, len, &pos, "-");
    put(out, len, &pos, " loss %s acc %s eps %.3g/%.3g", number(v->has_loss, v->loss, loss),
        number(v->has_accuracy, v->accuracy, acc), v->spent, v->budget);
    if (v->state == CMSCTL_JOBVIEW_RUNNING)
        put(out, len, &pos, " eta %s", cmsctl_jobview_duration(v->eta_us, eta));
    return pos;
}

size_t cmsctl_jobview_bar(const cmsctl_jobview *v, size_t cols, char *out, size_t len)
{
    char line[CMSCTL_JOBVIEW_LINE_MAX];
    cmsctl_jobview_line(v, line, sizeof line);
    size_t avail = (cols > 0 ? cols : DEFAULT_COLS) - 1, pos = 0;
    if (len == 0)
        return 0;
    out[0] = '\0';
    /* "[" bar "] " line; the bar's width depends on the terminal's alone, so
     * that it does not jump as the line grows and shrinks */
    size_t width = avail > LINE_ROOM + 3 ? avail - LINE_ROOM - 3 : 0;
    if (width > BAR_MAX)
        width = BAR_MAX;
    if (width >= BAR_MIN) {
        double p = v->state == CMSCTL_JOBVIEW_COMPLETED ? 1.0 : v->progress;
        size_t filled = (size_t)floor(p * (double)width);
        put(out, len, &pos, "[");
        for (size_t i = 0; i < width; i++)
            put(out, len, &pos, "%c", i < filled ? '#' : '.');
        put(out, len, &pos, "] ");
    }
    put(out, len, &pos, "%.*s", (int)(avail - (pos < avail ? pos : avail)), line);
    return pos;
}
