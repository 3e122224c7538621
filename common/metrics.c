/* Prometheus registry and text exposition, and the standard process
 * metrics read from /proc; see metrics.h.
 *
 * Families are kept in a list sorted by name, so render needs no sort; the
 * series of a family in creation order. The registry mutex guards the lists
 * (creation and render); values are atomics so that the hot paths take no
 * lock. Render hooks are appended under the mutex and published by their
 * count, so render reads them without it. */
#include "metrics.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

/* FAM_FLOAT_COUNTER renders as TYPE counter; a name has one type. */
typedef enum { FAM_COUNTER, FAM_GAUGE, FAM_HISTOGRAM, FAM_FLOAT_COUNTER } family_type;

/* First member of every series type, so a family can list them together. */
typedef struct series {
    char *labels; /* "" when none */
    struct series *next;
} series;

struct cms_counter {
    series s;
    _Atomic uint64_t v;
};

struct cms_gauge {
    series s;
    _Atomic uint64_t bits; /* a double's bit pattern: C11 has no atomic double add */
};

struct cms_float_counter {
    series s;
    _Atomic uint64_t bits; /* a double's bit pattern */
};

struct cms_histogram {
    series s;
    size_t nbounds;
    double *bounds;
    _Atomic uint64_t *buckets; /* nbounds + 1 non-cumulative counts, the last is +Inf */
    _Atomic uint64_t sum_bits;
};

typedef struct family {
    char *name;
    char *help;
    family_type type;
    series *first, *last;
    struct family *next;
} family;

typedef struct hook {
    cms_metrics_hook_fn fn;
    void *arg;
} hook;

/* The series of cms_metrics_add_process and what reading /proc needs. */
typedef struct process_series {
    cms_float_counter *cpu;
    cms_gauge *rss, *vsize, *open_fds, *max_fds, *start_time;
    double ticks_per_s; /* sysconf(_SC_CLK_TCK); 0 if unknown */
    double page_size;
} process_series;

struct cms_metrics {
    pthread_mutex_t lock;
    family *families; /* sorted by name */
    hook hooks[CMS_METRICS_MAX_HOOKS];
    _Atomic size_t nhooks; /* hooks[0 .. nhooks) are set and never change */
    bool process_added;    /* under lock */
    process_series process;
};

static const double default_bounds[] = {0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025,
                                        0.005,   0.01,   0.025,   0.05,   0.1,   0.25,
                                        0.5,     1,      2.5,     5,      10};

int cms_metrics_create(cms_metrics **out)
{
    cms_metrics *m = calloc(1, sizeof *m);
    if (m == NULL)
        return -1;
    pthread_mutex_init(&m->lock, NULL);
    *out = m;
    return 0;
}

static void series_free(family_type t, series *s)
{
    if (t == FAM_HISTOGRAM) {
        cms_histogram *h = (cms_histogram *)s;
        free(h->bounds);
        free(h->buckets);
    }
    free(s->labels);
    free(s);
}

void cms_metrics_destroy(cms_metrics *m)
{
    if (m == NULL)
        return;
    family *f = m->families;
    while (f) {
        family *fn = f->next;
        series *s = f->first;
        while (s) {
            series *sn = s->next;
            series_free(f->type, s);
            s = sn;
        }
        free(f->name);
        free(f->help);
        free(f);
        f = fn;
    }
    pthread_mutex_destroy(&m->lock);
    free(m);
}

static pthread_once_t g_default_once = PTHREAD_ONCE_INIT;
static cms_metrics *g_default;

static void default_create(void)
{
    if (cms_metrics_create(&g_default) != 0)
        g_default = NULL;
}

cms_metrics *cms_metrics_default(void)
{
    pthread_once(&g_default_once, default_create);
    return g_default;
}

/* ---- validation ---- */

static bool name_ok(const char *n)
{
    if (n == NULL || *n == '\0')
        return false;
    for (const char *p = n; *p; p++) {
        char c = *p;
        bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
        if (!alpha && !(p != n && c >= '0' && c <= '9'))
            return false;
    }
    return true;
}

/* name="value"(,name="value")*, values with only \\, \" and \n escapes, no
 * raw newline, no repeated name, and "le" refused for histograms (it is the
 * bucket label). */
static bool labels_ok(const char *l, bool histogram)
{
    enum { MAX_LABELS = 16 };
    const char *names[MAX_LABELS];
    size_t lens[MAX_LABELS];
    size_t n = 0;
    const char *p = l;
    while (*p) {
        const char *start = p;
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || *p == '_'))
            return false;
        while ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || *p == '_' ||
               (*p >= '0' && *p <= '9'))
            p++;
        size_t len = (size_t)(p - start);
        if (n == MAX_LABELS || (histogram && len == 2 && memcmp(start, "le", 2) == 0))
            return false;
        for (size_t i = 0; i < n; i++) {
            if (lens[i] == len && memcmp(names[i], start, len) == 0)
                return false;
        }
        names[n] = start;
        lens[n++] = len;
        if (p[0] != '=' || p[1] != '"')
            return false;
        p += 2;
        while (*p != '"') {
            if (*p == '\0' || *p == '\n')
                return false;
            if (*p == '\\') {
                if (p[1] != '\\' && p[1] != '"' && p[1] != 'n')
                    return false;
                p++;
            }
            p++;
        }
        p++;
        if (*p == ',') {
            p++;
            if (*p == '\0')
                return false;
        } else if (*p != '\0') {
            return false;
        }
    }
    return true;
}

/* ---- lookup / creation ---- */

/* Finds or creates the family (under m->lock). NULL if the name is taken by
 * another type or on allocation failure. */
static family *family_get(cms_metrics *m, const char *name, const char *help, family_type t)
{
    family **pp = &m->families;
    while (*pp && strcmp((*pp)->name, name) < 0)
        pp = &(*pp)->next;
    if (*pp && strcmp((*pp)->name, name) == 0)
        return (*pp)->type == t ? *pp : NULL;
    family *f = calloc(1, sizeof *f);
    if (f == NULL)
        return NULL;
    f->name = strdup(name);
    f->help = strdup(help ? help : "");
    if (f->name == NULL || f->help == NULL) {
        free(f->name);
        free(f->help);
        free(f);
        return NULL;
    }
    f->type = t;
    f->next = *pp;
    *pp = f;
    return f;
}

static series *series_find(const family *f, const char *labels)
{
    for (series *s = f->first; s; s = s->next) {
        if (strcmp(s->labels, labels) == 0)
            return s;
    }
    return NULL;
}

static void series_append(family *f, series *s)
{
    if (f->last)
        f->last->next = s;
    else
        f->first = s;
    f->last = s;
}

/* The common path of the three constructors: validates, finds the family and
 * an existing series, or allocates a zeroed one of `size` bytes with its
 * labels set. *created tells the caller to finish initialising it. */
static series *series_get(cms_metrics *m, const char *name, const char *help, const char *labels,
                          family_type t, size_t size, family **fam, bool *created)
{
    *created = false;
    if (m == NULL || !name_ok(name))
        return NULL;
    if (labels == NULL)
        labels = "";
    if (!labels_ok(labels, t == FAM_HISTOGRAM))
        return NULL;
    family *f = family_get(m, name, help, t);
    if (f == NULL)
        return NULL;
    *fam = f;
    series *s = series_find(f, labels);
    if (s)
        return s;
    s = calloc(1, size);
    if (s == NULL)
        return NULL;
    s->labels = strdup(labels);
    if (s->labels == NULL) {
        free(s);
        return NULL;
    }
    *created = true;
    return s;
}

/* A series whose zero is all-zero bits (counters, gauges: 0 and 0.0),
 * appended to its family when new. */
static series *plain_series(cms_metrics *m, const char *name, const char *help, const char *labels,
                            family_type t, size_t size)
{
    if (m == NULL)
        return NULL;
    family *f = NULL;
    bool created;
    pthread_mutex_lock(&m->lock);
    series *s = series_get(m, name, help, labels, t, size, &f, &created);
    if (created)
        series_append(f, s);
    pthread_mutex_unlock(&m->lock);
    return s;
}

cms_counter *cms_metrics_counter(cms_metrics *m, const char *name, const char *help,
                                 const char *labels)
{
    return (cms_counter *)plain_series(m, name, help, labels, FAM_COUNTER, sizeof(cms_counter));
}

cms_gauge *cms_metrics_gauge(cms_metrics *m, const char *name, const char *help, const char *labels)
{
    return (cms_gauge *)plain_series(m, name, help, labels, FAM_GAUGE, sizeof(cms_gauge));
}

cms_float_counter *cms_metrics_float_counter(cms_metrics *m, const char *name, const char *help,
                                             const char *labels)
{
    return (cms_float_counter *)plain_series(m, name, help, labels, FAM_FLOAT_COUNTER,
                                             sizeof(cms_float_counter));
}

cms_histogram *cms_metrics_histogram(cms_metrics *m, const char *name, const char *help,
                                     const char *labels, const double *bounds, size_t nbounds)
{
    if (m == NULL)
        return NULL;
    if (bounds == NULL || nbounds == 0) {
        bounds = default_bounds;
        nbounds = sizeof default_bounds / sizeof default_bounds[0];
    }
    for (size_t i = 0; i < nbounds; i++) {
        if (!isfinite(bounds[i]) || (i > 0 && !(bounds[i] > bounds[i - 1])))
            return NULL;
    }
    family *f = NULL;
    bool created;
    cms_histogram *h = NULL;
    pthread_mutex_lock(&m->lock);
    series *s =
        series_get(m, name, help, labels, FAM_HISTOGRAM, sizeof(cms_histogram), &f, &created);
    if (s == NULL)
        goto out;
    h = (cms_histogram *)s;
    if (!created)
        goto out;
    h->bounds = malloc(nbounds * sizeof *h->bounds);
    h->buckets = calloc(nbounds + 1, sizeof *h->buckets);
    if (h->bounds == NULL || h->buckets == NULL) {
        series_free(FAM_HISTOGRAM, s);
        h = NULL;
        goto out;
    }
    memcpy(h->bounds, bounds, nbounds * sizeof *bounds);
    h->nbounds = nbounds;
    series_append(f, s);
out:
    pthread_mutex_unlock(&m->lock);
    return h;
}

/* ---- updates ---- */

static uint64_t dbits(double d)
{
    uint64_t u;
    memcpy(&u, &d, sizeof u);
    return u;
}

static double bitsd(uint64_t u)
{
    double d;
    memcpy(&d, &u, sizeof d);
    return d;
}

void cms_counter_add(cms_counter *c, uint64_t n)
{
    if (c)
        atomic_fetch_add_explicit(&c->v, n, memory_order_relaxed);
}

void cms_counter_inc(cms_counter *c)
{
    cms_counter_add(c, 1);
}

uint64_t cms_counter_get(const cms_counter *c)
{
    return c ? atomic_load_explicit(&((cms_counter *)c)->v, memory_order_relaxed) : 0;
}

void cms_gauge_set(cms_gauge *g, double v)
{
    if (g)
        atomic_store_explicit(&g->bits, dbits(v), memory_order_relaxed);
}

void cms_gauge_add(cms_gauge *g, double d)
{
    if (g == NULL)
        return;
    uint64_t old = atomic_load_explicit(&g->bits, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(&g->bits, &old, dbits(bitsd(old) + d),
                                                  memory_order_relaxed, memory_order_relaxed)) {
    }
}

double cms_gauge_get(const cms_gauge *g)
{
    return g ? bitsd(atomic_load_explicit(&((cms_gauge *)g)->bits, memory_order_relaxed)) : 0.0;
}

void cms_histogram_observe(cms_histogram *h, double v)
{
    if (h == NULL)
        return;
    size_t lo = 0, hi = h->nbounds; /* first bound >= v; NaN falls through to +Inf */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (v <= h->bounds[mid])
            hi = mid;
        else
            lo = mid + 1;
    }
    if (isnan(v))
        lo = h->nbounds;
    atomic_fetch_add_explicit(&h->buckets[lo], 1, memory_order_relaxed);
    /* single writer: a plain read-modify-write of the sum is enough; it is
     * atomic only so that a render on another thread reads a whole value */
    uint64_t sum = atomic_load_explicit(&h->sum_bits, memory_order_relaxed);
    atomic_store_explicit(&h->sum_bits, dbits(bitsd(sum) + v), memory_order_relaxed);
}

void cms_float_counter_set(cms_float_counter *c, double total)
{
    if (c == NULL)
        return;
    /* the largest value wins; NaN compares false and is never stored */
    uint64_t old = atomic_load_explicit(&c->bits, memory_order_relaxed);
    while (total > bitsd(old) &&
           !atomic_compare_exchange_weak_explicit(&c->bits, &old, dbits(total),
                                                  memory_order_relaxed, memory_order_relaxed)) {
    }
}

double cms_float_counter_get(const cms_float_counter *c)
{
    return c ? bitsd(atomic_load_explicit(&((cms_float_counter *)c)->bits, memory_order_relaxed))
             : 0.0;
}

uint64_t cms_histogram_count(const cms_histogram *h)
{
    uint64_t n = 0;
    if (h == NULL)
        return 0;
    for (size_t i = 0; i <= h->nbounds; i++)
        n += atomic_load_explicit(&((cms_histogram *)h)->buckets[i], memory_order_relaxed);
    return n;
}

/* ---- render ---- */

typedef struct buf {
    char *p;
    size_t len, cap;
    bool failed;
} buf;

static void buf_printf(buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void buf_printf(buf *b, const char *fmt, ...)
{
    if (b->failed)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->failed = true;
            return;
        }
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap * 2 + (size_t)n + 1;
        char *p = realloc(b->p, cap);
        if (p == NULL) {
            b->failed = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
}

/* Shortest of %.15g / %.17g that reads back as the same double, so 0.1 is
 * "0.1" and nothing is lost; the special values as Prometheus spells them. */
static void fmt_double(char out[32], double v)
{
    if (isnan(v)) {
        snprintf(out, 32, "NaN");
    } else if (isinf(v)) {
        snprintf(out, 32, "%s", v > 0 ? "+Inf" : "-Inf");
    } else {
        snprintf(out, 32, "%.15g", v);
        if (strtod(out, NULL) != v)
            snprintf(out, 32, "%.17g", v);
    }
}

static void render_help(buf *b, const family *f)
{
    buf_printf(b, "# HELP %s ", f->name);
    for (const char *p = f->help; *p; p++) {
        if (*p == '\\')
            buf_printf(b, "\\\\");
        else if (*p == '\n')
            buf_printf(b, "\\n");
        else
            buf_printf(b, "%c", *p);
    }
    static const char *const types[] = {
        [FAM_COUNTER] = "counter",
        [FAM_GAUGE] = "gauge",
        [FAM_HISTOGRAM] = "histogram",
        [FAM_FLOAT_COUNTER] = "counter",
    };
    buf_printf(b, "\n# TYPE %s %s\n", f->name, types[f->type]);
}

/* "{labels}" or "" */
static void render_labels(buf *b, const char *labels)
{
    if (*labels)
        buf_printf(b, "{%s}", labels);
}

static void render_histogram(buf *b, const char *name, cms_histogram *h)
{
    const char *l = h->s.labels;
    const char *sep = *l ? "," : "";
    uint64_t cum = 0;
    char num[32];
    for (size_t i = 0; i <= h->nbounds; i++) {
        cum += atomic_load_explicit(&h->buckets[i], memory_order_relaxed);
        if (i < h->nbounds)
            fmt_double(num, h->bounds[i]);
        else
            snprintf(num, sizeof num, "+Inf");
        buf_printf(b, "%s_bucket{%s%sle=\"%s\"} %llu\n", name, l, sep, num,
                   (unsigned long long)cum);
    }
    fmt_double(num, bitsd(atomic_load_explicit(&h->sum_bits, memory_order_relaxed)));
    buf_printf(b, "%s_sum", name);
    render_labels(b, l);
    buf_printf(b, " %s\n%s_count", num, name);
    render_labels(b, l);
    /* _count is the +Inf bucket, so the two always agree within one render */
    buf_printf(b, " %llu\n", (unsigned long long)cum);
}

int cms_metrics_render(cms_metrics *m, char **out, size_t *len)
{
    if (m == NULL)
        return -1;
    /* before the lock: a hook may create series */
    size_t nhooks = atomic_load_explicit(&m->nhooks, memory_order_acquire);
    for (size_t i = 0; i < nhooks; i++)
        m->hooks[i].fn(m, m->hooks[i].arg);
    buf b = {.p = malloc(4096), .len = 0, .cap = 4096, .failed = false};
    if (b.p == NULL)
        return -1;
    b.p[0] = '\0';
    pthread_mutex_lock(&m->lock);
    for (const family *f = m->families; f; f = f->next) {
        if (f->first == NULL)
            continue;
        render_help(&b, f);
        for (series *s = f->first; s; s = s->next) {
            char num[32];
            switch (f->type) {
            case FAM_COUNTER:
                buf_printf(&b, "%s", f->name);
                render_labels(&b, s->labels);
                buf_printf(&b, " %llu\n", (unsigned long long)cms_counter_get((cms_counter *)s));
                break;
            case FAM_GAUGE:
            case FAM_FLOAT_COUNTER:
                fmt_double(num, f->type == FAM_GAUGE
                                    ? cms_gauge_get((cms_gauge *)s)
                                    : cms_float_counter_get((cms_float_counter *)s));
                buf_printf(&b, "%s", f->name);
                render_labels(&b, s->labels);
                buf_printf(&b, " %s\n", num);
                break;
            case FAM_HISTOGRAM:
                render_histogram(&b, f->name, (cms_histogram *)s);
                break;
            }
        }
    }
    pthread_mutex_unlock(&m->lock);
    if (b.failed) {
        free(b.p);
        return -1;
    }
    *out = b.p;
    *len = b.len;
    return 0;
}

/* ---- render hooks ---- */

int cms_metrics_on_render(cms_metrics *m, cms_metrics_hook_fn fn, void *arg)
{
    int rc = -1;
    if (m == NULL || fn == NULL)
        return -1;
    pthread_mutex_lock(&m->lock);
    size_t n = atomic_load_explicit(&m->nhooks, memory_order_relaxed);
    if (n < CMS_METRICS_MAX_HOOKS) {
        m->hooks[n] = (hook){.fn = fn, .arg = arg};
        /* release: a render that sees the count sees the hook */
        atomic_store_explicit(&m->nhooks, n + 1, memory_order_release);
        rc = 0;
    }
    pthread_mutex_unlock(&m->lock);
    return rc;
}

/* ---- process metrics (Linux /proc, see proc(5)) ---- */

/* The whole of a small /proc file, NUL-terminated, at most cap - 1 bytes:
 * true if it was read to its end. */
static bool read_small(const char *path, char *out, size_t cap)
{
    bool ok = false;
    size_t len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        goto out;
    for (;;) {
        if (len == cap - 1)
            goto out; /* longer than expected: do not parse a truncated line */
        ssize_t n = read(fd, out + len, cap - 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            goto out;
        if (n == 0)
            break;
        len += (size_t)n;
    }
    ok = true;
out:
    out[len] = '\0';
    if (fd >= 0)
        close(fd);
    return ok;
}

/* The fields of /proc/self/stat that the metrics use. */
typedef struct proc_stat {
    unsigned long long utime, stime; /* clock ticks */
    unsigned long long starttime;    /* clock ticks after boot */
    unsigned long long vsize;        /* bytes */
    unsigned long long rss;          /* pages */
} proc_stat;

static bool stat_parse(const char *text, proc_stat *st)
{
    /* field 2, the command name, may hold spaces and parentheses: the
     * fields that follow start after its last ')' */
    const char *p = strrchr(text, ')');
    if (p == NULL)
        return false;
    p++;
    for (int field = 3; field <= 24; field++) {
        while (*p == ' ')
            p++;
        const char *tok = p;
        while (*p != '\0' && *p != ' ' && *p != '\n')
            p++;
        if (p == tok)
            return false;
        unsigned long long *dst = field == 14   ? &st->utime
                                  : field == 15 ? &st->stime
                                  : field == 22 ? &st->starttime
                                  : field == 23 ? &st->vsize
                                  : field == 24 ? &st->rss
                                                : NULL;
        if (dst == NULL)
            continue;
        if (*tok < '0' || *tok > '9')
            return false;
        char *end;
        errno = 0;
        *dst = strtoull(tok, &end, 10);
        if (errno != 0 || end != p)
            return false;
    }
    return true;
}

/* The "btime" line of /proc/stat: the boot time in Unix seconds. The file
 * grows with the number of CPUs and interrupts, so it is read line by line
 * through a small buffer, pieces of long lines skipped. */
static bool boot_time(unsigned long long *out)
{
    bool found = false;
    FILE *f = fopen("/proc/stat", "re");
    if (f == NULL)
        return false;
    char line[128];
    bool line_start = true;
    while (!found && fgets(line, sizeof line, f) != NULL) {
        if (line_start && strncmp(line, "btime ", 6) == 0) {
            char *end;
            errno = 0;
            *out = strtoull(line + 6, &end, 10);
            found = errno == 0 && end != line + 6 && (*end == '\n' || *end == '\0');
        }
        line_start = strchr(line, '\n') != NULL;
    }
    fclose(f);
    return found;
}

static void process_start_time(process_series *ps, const proc_stat *st)
{
    unsigned long long btime;
    if (ps->ticks_per_s > 0 && boot_time(&btime))
        cms_gauge_set(ps->start_time, (double)btime + (double)st->starttime / ps->ticks_per_s);
}

static void process_collect(cms_metrics *m, void *arg)
{
    (void)m;
    process_series *ps = arg;
    char text[2048]; /* 52 numeric fields and a command name of at most 64 bytes */
    proc_stat st;
    if (read_small("/proc/self/stat", text, sizeof text) && stat_parse(text, &st)) {
        if (ps->ticks_per_s > 0)
            cms_float_counter_set(ps->cpu, (double)(st.utime + st.stime) / ps->ticks_per_s);
        cms_gauge_set(ps->vsize, (double)st.vsize);
        cms_gauge_set(ps->rss, (double)st.rss * ps->page_size);
        /* fixed for the life of the process: read until it is known */
        if (cms_gauge_get(ps->start_time) == 0)
            process_start_time(ps, &st);
    }
    DIR *d = opendir("/proc/self/fd");
    if (d != NULL) {
        /* the directory's own descriptor counts, as in the client libraries */
        size_t n = 0;
        const struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (e->d_name[0] != '.')
                n++;
        }
        closedir(d);
        cms_gauge_set(ps->open_fds, (double)n);
    }
    /* the soft limit, the "Max open files" of /proc/self/limits, without
     * parsing that file */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
        cms_gauge_set(ps->max_fds, (double)rl.rlim_cur);
}

int cms_metrics_add_process(cms_metrics *m)
{
    if (m == NULL)
        return -1;
    pthread_mutex_lock(&m->lock);
    bool added = m->process_added;
    m->process_added = true;
    pthread_mutex_unlock(&m->lock);
    if (added)
        return 0;
    process_series *ps = &m->process;
    long tck = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
    ps->ticks_per_s = tck > 0 ? (double)tck : 0;
    ps->page_size = page > 0 ? (double)page : 4096;
    /* the HELP texts of the official client libraries, word for word */
    ps->cpu = cms_metrics_float_counter(m, "process_cpu_seconds_total",
                                        "Total user and system CPU time spent in seconds.", NULL);
    ps->open_fds =
        cms_metrics_gauge(m, "process_open_fds", "Number of open file descriptors.", NULL);
    ps->max_fds =
        cms_metrics_gauge(m, "process_max_fds", "Maximum number of open file descriptors.", NULL);
    ps->vsize =
        cms_metrics_gauge(m, "process_virtual_memory_bytes", "Virtual memory size in bytes.", NULL);
    ps->rss = cms_metrics_gauge(m, "process_resident_memory_bytes",
                                "Resident memory size in bytes.", NULL);
    ps->start_time =
        cms_metrics_gauge(m, "process_start_time_seconds",
                          "Start time of the process since unix epoch in seconds.", NULL);
    if (ps->cpu == NULL || ps->open_fds == NULL || ps->max_fds == NULL || ps->vsize == NULL ||
        ps->rss == NULL || ps->start_time == NULL ||
        cms_metrics_on_render(m, process_collect, ps) != 0) {
        pthread_mutex_lock(&m->lock);
        m->process_added = false;
        pthread_mutex_unlock(&m->lock);
        return -1;
    }
    return 0;
}
