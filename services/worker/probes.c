/* cms-worker's probes; see probes.h. */
#include "probes.h"

#include "http.h"
#include "metrics.h"
#include "worker.h"

#include <stdlib.h>
#include <uv.h>

struct worker_probes {
    uv_thread_t thread;
    uv_sem_t started; /* posted once rc says how the start went */
    uv_loop_t loop;
    uv_async_t stop;
    cms_http *http;
    const char *addr;
    int rc;
    int port;
};

static bool ready(void *arg, char *why, size_t whylen)
{
    (void)arg;
    return worker_ready(why, whylen);
}

static void on_stop(uv_async_t *a)
{
    worker_probes *p = a->data;
    cms_http_close(p->http, NULL, NULL);
    uv_close((uv_handle_t *)&p->stop, NULL);
}

static void run(void *arg)
{
    worker_probes *p = arg;
    p->rc = cms_http_create(&p->loop, p->addr, &p->http);
    if (p->rc == 0)
        p->rc = cms_http_serve_probes(p->http, NULL, ready, NULL);
    if (p->rc == 0)
        p->rc = uv_async_init(&p->loop, &p->stop, on_stop);
    if (p->rc != 0) {
        if (p->http != NULL)
            cms_http_close(p->http, NULL, NULL);
        uv_run(&p->loop, UV_RUN_DEFAULT); /* a half-made server frees itself */
        cms_http_destroy(p->http);
        p->http = NULL;
        uv_sem_post(&p->started);
        return;
    }
    p->stop.data = p;
    p->port = cms_http_port(p->http);
    uv_sem_post(&p->started);
    uv_run(&p->loop, UV_RUN_DEFAULT);
    cms_http_destroy(p->http);
}

int worker_probes_start(const char *addr, worker_probes **out)
{
    *out = NULL;
    worker_probes *p = calloc(1, sizeof *p);
    if (p == NULL)
        return UV_ENOMEM;
    p->addr = addr;
    int rc = cms_metrics_add_process(cms_metrics_default()) == 0 ? 0 : UV_ENOMEM;
    if (rc == 0)
        rc = uv_loop_init(&p->loop);
    if (rc != 0) {
        free(p);
        return rc;
    }
    if (uv_sem_init(&p->started, 0) != 0 || uv_thread_create(&p->thread, run, p) != 0) {
        (void)uv_loop_close(&p->loop);
        free(p);
        return UV_ENOMEM;
    }
    uv_sem_wait(&p->started);
    uv_sem_destroy(&p->started);
    if (p->rc != 0) {
        rc = p->rc;
        uv_thread_join(&p->thread);
        (void)uv_loop_close(&p->loop);
        free(p);
        return rc;
    }
    *out = p;
    return 0;
}

int worker_probes_port(const worker_probes *p)
{
    return p->port;
}

void worker_probes_stop(worker_probes *p)
{
    if (p == NULL)
        return;
    uv_async_send(&p->stop);
    uv_thread_join(&p->thread);
    (void)uv_loop_close(&p->loop);
    free(p);
}
