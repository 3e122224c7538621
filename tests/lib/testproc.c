/* Child processes for tests; see testproc.h. */
#include "testproc.h"

#include <criterion/criterion.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

static void append(char **buf, size_t *len, const char *data, size_t n)
{
    char *nb = realloc(*buf, *len + n + 1);
    cr_assert_not_null(nb);
    memcpy(nb + *len, data, n);
    *len += n;
    nb[*len] = '\0';
    *buf = nb;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)h;
    buf->base = malloc(suggested);
    buf->len = buf->base ? suggested : 0;
}

static void handle_closed(uv_handle_t *h)
{
    cms_test_proc *p = h->data;
    cms_test_runner *r = h->loop->data;
    if (--p->open == 0 && --r->open == 0)
        uv_close((uv_handle_t *)&r->watchdog, NULL);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    cms_test_proc *p = s->data;
    bool is_err = s == (uv_stream_t *)&p->err_pipe;
    if (n > 0) {
        if (is_err)
            append(&p->err, &p->errlen, buf->base, (size_t)n);
        else
            append(&p->out, &p->outlen, buf->base, (size_t)n);
    }
    free(buf->base);
    if (n < 0) {
        uv_close((uv_handle_t *)s, handle_closed);
        return;
    }
    if (n > 0 && is_err && p->on_err != NULL)
        p->on_err(p, p->on_err_arg);
}

static void on_exit_cb(uv_process_t *h, int64_t status, int sig)
{
    cms_test_proc *p = h->data;
    cms_test_runner *r = h->loop->data;
    p->status = status;
    p->term_signal = sig;
    p->exited = true;
    r->running--;
    uv_close((uv_handle_t *)h, handle_closed);
}

static void on_watchdog(uv_timer_t *t)
{
    cms_test_runner *r = t->data;
    r->timed_out = true;
    for (size_t i = 0; i < r->nprocs; i++)
        if (!r->procs[i]->exited)
            uv_process_kill(&r->procs[i]->h, SIGKILL);
}

void cms_test_runner_init(cms_test_runner *r, uint64_t watchdog_ms)
{
    memset(r, 0, sizeof *r);
    r->watchdog_ms = watchdog_ms;
    cr_assert_eq(uv_loop_init(&r->loop), 0);
    r->loop.data = r;
    cr_assert_eq(uv_timer_init(&r->loop, &r->watchdog), 0);
    r->watchdog.data = r;
    cr_assert_eq(uv_timer_start(&r->watchdog, on_watchdog, watchdog_ms, 0), 0);
}

cms_test_proc *cms_test_spawn(cms_test_runner *r, const char *const *argv)
{
    cr_assert_lt(r->nprocs, sizeof r->procs / sizeof r->procs[0], "too many children");
    cms_test_proc *p = calloc(1, sizeof *p);
    cr_assert_not_null(p);
    cr_assert_eq(uv_pipe_init(&r->loop, &p->out_pipe, 0), 0);
    cr_assert_eq(uv_pipe_init(&r->loop, &p->err_pipe, 0), 0);
    p->out_pipe.data = p->err_pipe.data = p->h.data = p;
    uv_stdio_container_t stdio[3] = {
        {.flags = UV_IGNORE},
        {.flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE, .data.stream = (uv_stream_t *)&p->out_pipe},
        {.flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE, .data.stream = (uv_stream_t *)&p->err_pipe}};
    uv_process_options_t o = {.exit_cb = on_exit_cb,
                              .file = argv[0],
                              .args = (char **)argv,
                              .stdio_count = 3,
                              .stdio = stdio};
    int rc = uv_spawn(&r->loop, &p->h, &o);
    cr_assert_eq(rc, 0, "spawning %s: %s", argv[0], uv_strerror(rc));
    cr_assert_eq(uv_read_start((uv_stream_t *)&p->out_pipe, on_alloc, on_read), 0);
    cr_assert_eq(uv_read_start((uv_stream_t *)&p->err_pipe, on_alloc, on_read), 0);
    p->open = 3;
    r->open++;
    r->running++;
    r->procs[r->nprocs++] = p;
    return p;
}

void cms_test_runner_finish(cms_test_runner *r)
{
    uv_run(&r->loop, UV_RUN_DEFAULT);
    cr_assert(!r->timed_out, "a child ran longer than %llu ms", (unsigned long long)r->watchdog_ms);
    cr_assert_eq(uv_loop_close(&r->loop), 0);
    for (size_t i = 0; i < r->nprocs; i++) {
        cms_test_proc *p = r->procs[i];
        if (p->out == NULL)
            append(&p->out, &p->outlen, "", 0);
        if (p->err == NULL)
            append(&p->err, &p->errlen, "", 0);
    }
}

cms_test_proc *cms_test_run(const char *const *argv, uint64_t watchdog_ms)
{
    cms_test_runner r;
    cms_test_runner_init(&r, watchdog_ms);
    cms_test_proc *p = cms_test_spawn(&r, argv);
    cms_test_runner_finish(&r);
    return p;
}

cms_test_proc *cms_test_run_bin(const char *bin, const char *const *args, uint64_t watchdog_ms)
{
    size_t n = 0;
    while (args[n] != NULL)
        n++;
    const char **argv = calloc(n + 2, sizeof *argv);
    if (argv == NULL)
        return NULL;
    argv[0] = bin;
    memcpy(argv + 1, args, n * sizeof *argv);
    cms_test_proc *p = cms_test_run(argv, watchdog_ms);
    free(argv);
    return p;
}

void cms_test_proc_free(cms_test_proc *p)
{
    if (p == NULL)
        return;
    free(p->out);
    free(p->err);
    free(p);
}
