/* metrics: exact exposition text, families and label series, validation,
 * counters/gauges updated from several threads, render hooks and the
 * process metrics. */
#include <criterion/criterion.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "metrics.h"

static cms_metrics *m;

static void setup(void)
{
    cr_assert_eq(cms_metrics_create(&m), 0);
}

static void teardown(void)
{
    cms_metrics_destroy(m);
    m = NULL;
}

/* Renders and compares with the exact text expected. */
static void assert_render(const char *want)
{
    char *out = NULL;
    size_t len = 0;
    cr_assert_eq(cms_metrics_render(m, &out, &len), 0);
    cr_assert_eq(len, strlen(out));
    cr_assert_str_eq(out, want);
    free(out);
}

TestSuite(metrics, .init = setup, .fini = teardown);

Test(metrics, empty_registry_renders_nothing)
{
    assert_render("");
}

Test(metrics, counter)
{
    cms_counter *c = cms_metrics_counter(m, "jobs_total", "Jobs done.", NULL);
    cr_assert_not_null(c);
    cms_counter_add(c, 2);
    cms_counter_inc(c);
    cr_assert_eq(cms_counter_get(c), 3);
    cr_assert_eq(cms_metrics_counter(m, "jobs_total", "ignored", ""), c,
                 "same name+labels, same series");
    assert_render("# HELP jobs_total Jobs done.\n"
                  "# TYPE jobs_total counter\n"
                  "jobs_total 3\n");
}

Test(metrics, label_series_share_one_family_and_families_sort_by_name)
{
    cms_counter *a = cms_metrics_counter(m, "dlq_total", "Dead letters.", "reason=\"undecodable\"");
    cms_counter *b = cms_metrics_counter(m, "dlq_total", "Dead letters.", "reason=\"invalid\"");
    cms_gauge *g = cms_metrics_gauge(m, "aaa_depth", "Queue depth.", NULL);
    cms_counter *z = cms_metrics_counter(m, "zzz_total", "Last.", "a=\"x\\\"y\\\\z\\n\",b=\"\"");
    cr_assert(a && b && g && z);
    cr_assert_neq(a, b);
    cr_assert_eq(cms_metrics_counter(m, "dlq_total", NULL, "reason=\"invalid\""), b);
    cms_counter_add(a, 5);
    cms_counter_add(b, 1);
    cms_gauge_set(g, 7);
    assert_render("# HELP aaa_depth Queue depth.\n"
                  "# TYPE aaa_depth gauge\n"
                  "aaa_depth 7\n"
                  "# HELP dlq_total Dead letters.\n"
                  "# TYPE dlq_total counter\n"
                  "dlq_total{reason=\"undecodable\"} 5\n"
                  "dlq_total{reason=\"invalid\"} 1\n"
                  "# HELP zzz_total Last.\n"
                  "# TYPE zzz_total counter\n"
                  "zzz_total{a=\"x\\\"y\\\\z\\n\",b=\"\"} 0\n");
}

Test(metrics, gauge_values)
{
    cms_gauge *g = cms_metrics_gauge(m, "g", "", NULL);
    cms_gauge_set(g, 1.5);
    cms_gauge_add(g, -0.25);
    cr_assert_float_eq(cms_gauge_get(g), 1.25, 0);
    assert_render("# HELP g \n# TYPE g gauge\ng 1.25\n");
    cms_gauge_set(g, 0.1);
    assert_render("# HELP g \n# TYPE g gauge\ng 0.1\n");
    cms_gauge_set(g, -3e-7);
    assert_render("# HELP g \n# TYPE g gauge\ng -3e-07\n");
    cms_gauge_set(g, 1.0 / 3.0);
    assert_render("# HELP g \n# TYPE g gauge\ng 0.33333333333333331\n");
    cms_gauge_set(g, INFINITY);
    assert_render("# HELP g \n# TYPE g gauge\ng +Inf\n");
    cms_gauge_set(g, -INFINITY);
    assert_render("# HELP g \n# TYPE g gauge\ng -Inf\n");
    cms_gauge_set(g, NAN);
    assert_render("# HELP g \n# TYPE g gauge\ng NaN\n");
    cms_gauge_set(g, 12345678);
    assert_render("# HELP g \n# TYPE g gauge\ng 12345678\n");
}

Test(metrics, help_is_escaped)
{
    cms_metrics_counter(m, "c_total", "line one\nback\\slash \"quoted\"", NULL);
    assert_render("# HELP c_total line one\\nback\\\\slash \"quoted\"\n"
                  "# TYPE c_total counter\n"
                  "c_total 0\n");
}

Test(metrics, histogram_custom_bounds)
{
    const double bounds[] = {0.5, 1};
    cms_histogram *h = cms_metrics_histogram(m, "op_seconds", "Op latency.", NULL, bounds, 2);
    cms_histogram *hl =
        cms_metrics_histogram(m, "op_seconds", "Op latency.", "op=\"put\"", bounds, 2);
    cr_assert(h && hl);
    cms_histogram_observe(h, 0.25);
    cms_histogram_observe(h, 0.5); /* upper bounds are inclusive */
    cms_histogram_observe(h, 1);
    cms_histogram_observe(h, 4);
    cms_histogram_observe(hl, 2);
    cr_assert_eq(cms_histogram_count(h), 4);
    assert_render("# HELP op_seconds Op latency.\n"
                  "# TYPE op_seconds histogram\n"
                  "op_seconds_bucket{le=\"0.5\"} 2\n"
                  "op_seconds_bucket{le=\"1\"} 3\n"
                  "op_seconds_bucket{le=\"+Inf\"} 4\n"
                  "op_seconds_sum 5.75\n"
                  "op_seconds_count 4\n"
                  "op_seconds_bucket{op=\"put\",le=\"0.5\"} 0\n"
                  "op_seconds_bucket{op=\"put\",le=\"1\"} 0\n"
                  "op_seconds_bucket{op=\"put\",le=\"+Inf\"} 1\n"
                  "op_seconds_sum{op=\"put\"} 2\n"
                  "op_seconds_count{op=\"put\"} 1\n");
}

Test(metrics, histogram_default_buckets)
{
    cms_histogram *h = cms_metrics_histogram(m, "lat_seconds", "Latency.", NULL, NULL, 0);
    cr_assert_not_null(h);
    cms_histogram_observe(h, 0.00003);
    cms_histogram_observe(h, 0.00005); /* inclusive */
    cms_histogram_observe(h, 0.00008);
    cms_histogram_observe(h, 0.0002);
    cms_histogram_observe(h, 0.0004);
    cms_histogram_observe(h, 0.003);
    cms_histogram_observe(h, 11);
    char *out = NULL;
    size_t len;
    cr_assert_eq(cms_metrics_render(m, &out, &len), 0);
    /* sub-millisecond bounds first: 50, 100 and 250 µs */
    const char *want[] = {
        "lat_seconds_bucket{le=\"5e-05\"} 2\n",
        "lat_seconds_bucket{le=\"0.0001\"} 3\n",
        "lat_seconds_bucket{le=\"0.00025\"} 4\n",
        "lat_seconds_bucket{le=\"0.0005\"} 5\n",
        "lat_seconds_bucket{le=\"0.001\"} 5\n",
        "lat_seconds_bucket{le=\"0.0025\"} 5\n",
        "lat_seconds_bucket{le=\"0.005\"} 6\n",
        "lat_seconds_bucket{le=\"2.5\"} 6\n",
        "lat_seconds_bucket{le=\"10\"} 6\n",
        "lat_seconds_bucket{le=\"+Inf\"} 7\n",
        "lat_seconds_count 7\n",
    };
    const char *at = out;
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const char *p = strstr(at, want[i]);
        cr_assert_not_null(p, "missing or out of order: %s in\n%s", want[i], out);
        at = p;
    }
    cr_assert(strncmp(out + strlen("# HELP lat_seconds Latency.\n# TYPE lat_seconds histogram\n"),
                      "lat_seconds_bucket{le=\"5e-05\"}", 30) == 0,
              "50 µs is the first bound:\n%s", out);
    size_t buckets = 0;
    for (const char *p = out; (p = strstr(p, "_bucket{")); p++)
        buckets++;
    cr_assert_eq(buckets, 18, "17 bounds and +Inf");
    free(out);
}

Test(metrics, float_counter_never_goes_down)
{
    cms_float_counter *c = cms_metrics_float_counter(m, "cpu_seconds_total", "CPU time", NULL);
    cr_assert_not_null(c);
    cr_assert_eq(cms_metrics_float_counter(m, "cpu_seconds_total", "", NULL), c);
    cms_float_counter_set(c, 1.25);
    cms_float_counter_set(c, 0.5); /* an out-of-order read: ignored */
    cms_float_counter_set(c, NAN);
    cr_assert_float_eq(cms_float_counter_get(c), 1.25, 0);
    assert_render("# HELP cpu_seconds_total CPU time\n"
                  "# TYPE cpu_seconds_total counter\n"
                  "cpu_seconds_total 1.25\n");
    cms_float_counter_set(c, 2);
    assert_render("# HELP cpu_seconds_total CPU time\n"
                  "# TYPE cpu_seconds_total counter\n"
                  "cpu_seconds_total 2\n");
    cr_assert_null(cms_metrics_counter(m, "cpu_seconds_total", "", NULL), "one name, one type");
    cr_assert_not_null(cms_metrics_counter(m, "int_total", "", NULL));
    cr_assert_null(cms_metrics_float_counter(m, "int_total", "", NULL));
    cms_float_counter_set(NULL, 1);
    cr_assert_float_eq(cms_float_counter_get(NULL), 0, 0);
}

typedef struct hook_ctx {
    int calls;
    cms_gauge *g;
} hook_ctx;

/* Counts its calls into a gauge it creates on the first: series creation
 * inside a hook must not deadlock on the registry lock. */
static void count_renders(cms_metrics *reg, void *arg)
{
    hook_ctx *c = arg;
    if (c->g == NULL)
        c->g = cms_metrics_gauge(reg, "renders", "Renders so far", NULL);
    cms_gauge_set(c->g, ++c->calls);
}

Test(metrics, render_hooks_run_before_every_render)
{
    hook_ctx c = {0};
    cr_assert_eq(cms_metrics_on_render(m, count_renders, &c), 0);
    cr_assert_eq(c.calls, 0, "not at registration");
    assert_render("# HELP renders Renders so far\n# TYPE renders gauge\nrenders 1\n");
    assert_render("# HELP renders Renders so far\n# TYPE renders gauge\nrenders 2\n");
    cr_assert_eq(c.calls, 2);

    hook_ctx more[CMS_METRICS_MAX_HOOKS] = {0};
    for (int i = 1; i < CMS_METRICS_MAX_HOOKS; i++)
        cr_assert_eq(cms_metrics_on_render(m, count_renders, &more[i]), 0);
    cr_assert_eq(cms_metrics_on_render(m, count_renders, &more[0]), -1, "bounded");
    cr_assert_eq(cms_metrics_on_render(NULL, count_renders, &c), -1);
    cr_assert_eq(cms_metrics_on_render(m, NULL, &c), -1);
    char *out = NULL;
    size_t len;
    cr_assert_eq(cms_metrics_render(m, &out, &len), 0);
    free(out);
    cr_assert_eq(c.calls, 3);
    for (int i = 1; i < CMS_METRICS_MAX_HOOKS; i++)
        cr_assert_eq(more[i].calls, 1, "hook %d", i);
    cr_assert_eq(more[0].calls, 0);
}

/* The value of one series of a render, or NAN if absent. */
static double value_of(const char *text, const char *series)
{
    size_t n = strlen(series);
    for (const char *p = text; (p = strstr(p, series)) != NULL; p += n) {
        if ((p == text || p[-1] == '\n') && p[n] == ' ')
            return strtod(p + n + 1, NULL);
    }
    return NAN;
}

static char *render_text(void)
{
    char *out = NULL;
    size_t len;
    cr_assert_eq(cms_metrics_render(m, &out, &len), 0);
    return out;
}

Test(metrics, process_metrics_are_the_standard_ones_and_plausible)
{
    cr_assert_eq(cms_metrics_add_process(m), 0);
    cr_assert_eq(cms_metrics_add_process(m), 0, "a second call does nothing");
    cr_assert_eq(cms_metrics_add_process(NULL), -1);
    char *a = render_text();
    /* names, types and HELP of the official client libraries */
    const char *meta[] = {
        "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n"
        "# TYPE process_cpu_seconds_total counter\n",
        "# HELP process_max_fds Maximum number of open file descriptors.\n"
        "# TYPE process_max_fds gauge\n",
        "# HELP process_open_fds Number of open file descriptors.\n"
        "# TYPE process_open_fds gauge\n",
        "# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
        "# TYPE process_resident_memory_bytes gauge\n",
        "# HELP process_start_time_seconds Start time of the process since unix epoch in "
        "seconds.\n"
        "# TYPE process_start_time_seconds gauge\n",
        "# HELP process_virtual_memory_bytes Virtual memory size in bytes.\n"
        "# TYPE process_virtual_memory_bytes gauge\n",
    };
    for (size_t i = 0; i < sizeof meta / sizeof meta[0]; i++) {
        const char *p = strstr(a, meta[i]);
        cr_assert_not_null(p, "missing:\n%s\nin:\n%s", meta[i], a);
        cr_assert_null(strstr(p + 1, meta[i]), "once: %s", meta[i]);
    }
    double rss = value_of(a, "process_resident_memory_bytes");
    double vsz = value_of(a, "process_virtual_memory_bytes");
    double fds = value_of(a, "process_open_fds");
    double max_fds = value_of(a, "process_max_fds");
    double start = value_of(a, "process_start_time_seconds");
    double cpu = value_of(a, "process_cpu_seconds_total");
    double now = (double)time(NULL);
    cr_assert_gt(rss, 1 << 20, "resident %.0f bytes", rss);
    cr_assert_geq(vsz, rss, "virtual %.0f, resident %.0f", vsz, rss);
    cr_assert_geq(fds, 3, "stdin, stdout, stderr at least: %.0f", fds);
    cr_assert_geq(max_fds, fds);
    /* /proc/stat's boot time is whole seconds: allow one */
    cr_assert_leq(start, now + 1, "start %.2f is in the future (now %.0f)", start, now);
    cr_assert_gt(start, now - 3600, "start %.2f is over an hour ago (now %.0f)", start, now);
    cr_assert_geq(cpu, 0);

    /* a descriptor more, and 200 ms of CPU: the next render sees both */
    int fd = dup(2);
    cr_assert_geq(fd, 0);
    struct timespec t0, t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t0);
    do
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    while ((double)(t.tv_sec - t0.tv_sec) + (double)(t.tv_nsec - t0.tv_nsec) / 1e9 < 0.2);
    char *b = render_text();
    close(fd);
    cr_assert_float_eq(value_of(b, "process_open_fds"), fds + 1, 0, "%s", b);
    cr_assert_geq(value_of(b, "process_cpu_seconds_total"), cpu + 0.1, "%s", b);
    cr_assert_float_eq(value_of(b, "process_start_time_seconds"), start, 0, "fixed");
    char *c = render_text();
    cr_assert_geq(value_of(c, "process_cpu_seconds_total"),
                  value_of(b, "process_cpu_seconds_total"), "never down");
    cr_assert_float_eq(value_of(c, "process_open_fds"), fds, 0, "%s", c);
    free(a);
    free(b);
    free(c);
}

Test(metrics, invalid_names_labels_and_types)
{
    const char *bad_names[] = {"", "1abc", "a-b", "a b", "é", "a{}"};
    for (size_t i = 0; i < sizeof bad_names / sizeof bad_names[0]; i++)
        cr_assert_null(cms_metrics_counter(m, bad_names[i], "", NULL), "%s", bad_names[i]);
    cr_assert_null(cms_metrics_counter(m, NULL, "", NULL));
    cr_assert_not_null(cms_metrics_counter(m, "ns:sub_name_1", "", NULL));

    const char *bad_labels[] = {
        "a=1",       "a=\"x",          "a=\"x\",",
        "=\"x\"",    "a=\"x\"b=\"y\"", "a=\"1\",a=\"2\"",
        "1a=\"x\"",  "a=\"x\\t\"",     "a=\"line\nbreak\"",
        "a = \"x\"", ",a=\"x\"",       "a=\"x\\\"",
    };
    for (size_t i = 0; i < sizeof bad_labels / sizeof bad_labels[0]; i++)
        cr_assert_null(cms_metrics_counter(m, "c_total", "", bad_labels[i]), "%s", bad_labels[i]);
    cr_assert_null(cms_metrics_histogram(m, "h", "", "le=\"1\"", NULL, 0),
                   "le is the bucket label");
    cr_assert_not_null(cms_metrics_counter(m, "le_ok_total", "", "le=\"1\""),
                       "le is fine elsewhere");

    cr_assert_not_null(cms_metrics_counter(m, "x", "", NULL));
    cr_assert_null(cms_metrics_gauge(m, "x", "", NULL), "one name, one type");
    cr_assert_null(cms_metrics_histogram(m, "x", "", NULL, NULL, 0));

    const double down[] = {1, 0.5}, same[] = {1, 1}, inf[] = {1, INFINITY};
    cr_assert_null(cms_metrics_histogram(m, "h1", "", NULL, down, 2));
    cr_assert_null(cms_metrics_histogram(m, "h2", "", NULL, same, 2));
    cr_assert_null(cms_metrics_histogram(m, "h3", "", NULL, inf, 2));

    /* NULL series are accepted by the updates */
    cms_counter_add(NULL, 1);
    cms_gauge_set(NULL, 1);
    cms_gauge_add(NULL, 1);
    cms_histogram_observe(NULL, 1);
    cr_assert_eq(cms_counter_get(NULL), 0);
}

Test(metrics, default_registry_is_one)
{
    cms_metrics *d = cms_metrics_default();
    cr_assert_not_null(d);
    cr_assert_eq(cms_metrics_default(), d);
    cms_counter *c = cms_metrics_counter(d, "default_test_total", "", NULL);
    cr_assert_eq(cms_metrics_counter(cms_metrics_default(), "default_test_total", "", NULL), c);
}

enum { THREADS = 4, ADDS = 100000 };

static void *adder(void *arg)
{
    for (int i = 0; i < ADDS; i++) {
        cms_counter_inc(cms_metrics_counter(m, "shared_total", "", NULL));
        cms_gauge_add(arg, 1.0);
        if (i % 1000 == 0) { /* series creation from threads, too */
            char l[32];
            snprintf(l, sizeof l, "n=\"%d\"", i / 1000);
            cms_counter_inc(cms_metrics_counter(m, "per_total", "", l));
        }
    }
    return NULL;
}

Test(metrics, concurrent_updates_from_threads)
{
    cms_gauge *g = cms_metrics_gauge(m, "shared_gauge", "", NULL);
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++)
        cr_assert_eq(pthread_create(&th[i], NULL, adder, g), 0);
    /* render concurrently with the writers */
    for (int i = 0; i < 20; i++) {
        char *out = NULL;
        size_t len;
        cr_assert_eq(cms_metrics_render(m, &out, &len), 0);
        free(out);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    cr_assert_eq(cms_counter_get(cms_metrics_counter(m, "shared_total", "", NULL)), THREADS * ADDS);
    cr_assert_float_eq(cms_gauge_get(g), (double)THREADS * ADDS, 0);
    for (int i = 0; i < ADDS / 1000; i++) {
        char l[32];
        snprintf(l, sizeof l, "n=\"%d\"", i);
        cr_assert_eq(cms_counter_get(cms_metrics_counter(m, "per_total", "", l)), THREADS);
    }
}
