/* Metrics in the Prometheus text exposition format (version 0.0.4).
 *
 * A registry holds families (one name, one HELP, one TYPE), each with one
 * series per label set. Series live as long as the registry; the pointers
 * returned stay valid until cms_metrics_destroy. Creating series takes a
 * lock and may be done from any thread; counters and gauges are updated with
 * atomics from any thread; histograms are updated from one thread (the loop)
 * and only read atomically by render. Render hooks refresh series whose
 * values live elsewhere (the kernel's, for the process metrics) just before
 * each render. */
#ifndef CMS_METRICS_H
#define CMS_METRICS_H

#include <stddef.h>
#include <stdint.h>

typedef struct cms_metrics cms_metrics;
typedef struct cms_counter cms_counter;
typedef struct cms_gauge cms_gauge;
typedef struct cms_histogram cms_histogram;
typedef struct cms_float_counter cms_float_counter;

int cms_metrics_create(cms_metrics **out) __attribute__((warn_unused_result)); /* 0 or -1 */
void cms_metrics_destroy(cms_metrics *m);                                      /* NULL-safe */
/* Process-wide registry, created on first use (thread-safely), never freed. */
cms_metrics *cms_metrics_default(void);

/* labels: NULL, "" or a label list in exposition syntax, e.g.
 * "reason=\"undecodable\"" or "a=\"1\",b=\"x\\\"y\"". The same name with
 * other labels is another series of the same family (one HELP/TYPE). Asking
 * again for an existing name+labels returns the same series. Invalid names
 * or labels, or a name already used with another type, give NULL.
 * The update functions accept NULL and do nothing, so a failed lookup cannot
 * crash the caller. */
cms_counter *cms_metrics_counter(cms_metrics *m, const char *name, const char *help,
                                 const char *labels);
void cms_counter_add(cms_counter *c, uint64_t n); /* atomic: any thread */
void cms_counter_inc(cms_counter *c);
uint64_t cms_counter_get(const cms_counter *c);

cms_gauge *cms_metrics_gauge(cms_metrics *m, const char *name, const char *help,
                             const char *labels);
void cms_gauge_set(cms_gauge *g, double v); /* atomic: any thread */
void cms_gauge_add(cms_gauge *g, double d); /* atomic: any thread */
double cms_gauge_get(const cms_gauge *g);

/* bounds: strictly ascending finite upper bounds (+Inf is implied); NULL or 0
 * gives the default latency buckets in seconds, 0.00005 (50 µs) .. 10. A
 * second call for an existing series returns it and ignores bounds. */
cms_histogram *cms_metrics_histogram(cms_metrics *m, const char *name, const char *help,
                                     const char *labels, const double *bounds, size_t nbounds);
/* For one thread at a time (the loop's): updates are not atomic as a whole,
 * so a render from another thread may see a bucket ahead of _count. */
void cms_histogram_observe(cms_histogram *h, double v);
uint64_t cms_histogram_count(const cms_histogram *h);

/* A counter of a total that is kept elsewhere and read whole, with a
 * fraction (the CPU seconds of the process): TYPE counter, set to the latest
 * total. A value below the current one is ignored, so it never goes down
 * even when two renders on different threads read the source out of order.
 * One name, one type: NULL if the name is an integer counter's. */
cms_float_counter *cms_metrics_float_counter(cms_metrics *m, const char *name, const char *help,
                                             const char *labels);
void cms_float_counter_set(cms_float_counter *c, double total); /* atomic: any thread */
double cms_float_counter_get(const cms_float_counter *c);

/* A render hook runs at the start of every cms_metrics_render of m, on the
 * rendering thread, without the registry's lock (it may create and update
 * series), in registration order. Renders run on the loop: a hook must not
 * block beyond reading a small /proc file. Hooks stay for the registry's
 * life. Returns 0, or -1 when m is NULL or already has CMS_METRICS_MAX_HOOKS. */
#define CMS_METRICS_MAX_HOOKS 8
typedef void (*cms_metrics_hook_fn)(cms_metrics *m, void *arg);
int cms_metrics_on_render(cms_metrics *m, cms_metrics_hook_fn fn, void *arg)
    __attribute__((warn_unused_result));

/* The process metrics of the official Prometheus client libraries, with
 * their names, types and HELP texts, refreshed from /proc by a render hook:
 * process_cpu_seconds_total, process_resident_memory_bytes,
 * process_virtual_memory_bytes, process_open_fds, process_max_fds and
 * process_start_time_seconds. A value that cannot be read keeps the one of
 * the previous render (0 before the first). Once per registry: a second call
 * does nothing. Returns 0 or -1 (out of memory, no hook left). */
int cms_metrics_add_process(cms_metrics *m) __attribute__((warn_unused_result));

/* Runs the render hooks, then renders every family, sorted by name, series
 * in creation order.
 * *out is malloc'd and NUL-terminated, caller frees; *len excludes the NUL.
 * Returns 0 or -1 (out of memory). */
int cms_metrics_render(cms_metrics *m, char **out, size_t *len) __attribute__((warn_unused_result));

#endif
