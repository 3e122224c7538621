/* UUIDv7 generation and metrics updates from several threads at once, with
 * renders running meanwhile: unique, ordered per thread, counts exact, and
 * (under -fsanitize=thread) free of data races. */
#include "check.h"
#include "metrics.h"
#include "uuid.h"

#include <pthread.h>
#include <string.h>

enum { THREADS = 4, PER_THREAD = 20000 };

static cms_uuid ids[THREADS][PER_THREAD];
static cms_metrics *reg;
static cms_counter *counter;
static cms_gauge *gauge;

static void *work(void *arg)
{
    cms_uuid *mine = arg;
    for (int i = 0; i < PER_THREAD; i++) {
        cms_uuid_v7(&mine[i]);
        cms_counter_add(counter, 1);
        cms_gauge_add(gauge, 1.0);
        if (i % 5000 == 0) /* series created from threads too */
            (void)cms_metrics_counter(reg, "cms_tsan_series_total", "x", "t=\"1\"");
    }
    return NULL;
}

static int cmp(const void *a, const void *b)
{
    return cms_uuid_compare(a, b);
}

int main(void)
{
    CHECK(cms_metrics_create(&reg) == 0, "registry");
    counter = cms_metrics_counter(reg, "cms_tsan_total", "updates", NULL);
    gauge = cms_metrics_gauge(reg, "cms_tsan_gauge", "updates", NULL);
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        CHECK(pthread_create(&t[i], NULL, work, ids[i]) == 0, "thread %d", i);
    for (int r = 0; r < 50; r++) { /* renders race with the updates */
        char *text = NULL;
        size_t len = 0;
        CHECK(cms_metrics_render(reg, &text, &len) == 0, "render");
        free(text);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    CHECK(cms_counter_get(counter) == THREADS * PER_THREAD, "counter %llu",
          (unsigned long long)cms_counter_get(counter));
    CHECK(cms_gauge_get(gauge) == THREADS * PER_THREAD, "gauge %f", cms_gauge_get(gauge));
    for (int i = 0; i < THREADS; i++)
        for (int k = 1; k < PER_THREAD; k++)
            CHECK(cms_uuid_compare(&ids[i][k - 1], &ids[i][k]) < 0,
                  "thread %d id %d not after the previous", i, k);
    static cms_uuid all[THREADS * PER_THREAD];
    memcpy(all, ids, sizeof all);
    qsort(all, THREADS * PER_THREAD, sizeof all[0], cmp);
    for (int k = 1; k < THREADS * PER_THREAD; k++)
        CHECK(cms_uuid_compare(&all[k - 1], &all[k]) != 0, "duplicate id");
    cms_metrics_destroy(reg);
    printf("threads: %d ids unique and ordered, counts exact\n", THREADS * PER_THREAD);
    return 0;
}
