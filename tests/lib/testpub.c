/* Numbered JetStream publishes; see testpub.h. */
#include "testpub.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct cms_test_pub_arg {
    cms_test_pub *p;
    int i;
};

int cms_test_pub_init(cms_test_pub *p, cms_nats *n, const char *subject, int count)
{
    memset(p, 0, sizeof *p);
    p->n = n;
    snprintf(p->subject, sizeof p->subject, "%s", subject);
    p->count = count;
    p->loop_thread = uv_thread_self();
    p->retry = calloc((size_t)count, sizeof *p->retry);
    p->stored = calloc((size_t)count, sizeof *p->stored);
    p->args = calloc((size_t)count, sizeof *p->args);
    if (p->retry == NULL || p->stored == NULL || p->args == NULL) {
        cms_test_pub_free(p);
        return -1;
    }
    for (int i = 0; i < count; i++)
        p->args[i] = (struct cms_test_pub_arg){.p = p, .i = i};
    return 0;
}

void cms_test_pub_free(cms_test_pub *p)
{
    free(p->retry);
    free(p->stored);
    free(p->args);
    p->retry = NULL;
    p->stored = NULL;
    p->args = NULL;
}

static void on_published(void *arg, cms_nats_err err, const cms_nats_pub_ack *ack)
{
    (void)ack;
    struct cms_test_pub_arg *a = arg;
    cms_test_pub *p = a->p;
    uv_thread_t self = uv_thread_self();
    if (!uv_thread_equal(&self, &p->loop_thread))
        p->wrong_thread++;
    if (err != CMS_NATS_OK) {
        p->errors++;
        p->retry[p->nretry++] = a->i;
    } else if (!p->stored[a->i]) {
        p->stored[a->i] = true;
        p->nstored++;
    }
}

static cms_nats_err publish(cms_test_pub *p, int i)
{
    char id[96], data[16];
    snprintf(id, sizeof id, "%s-%d", p->subject, i);
    int len = snprintf(data, sizeof data, "%d", i);
    return cms_nats_js_publish(p->n, p->subject, id, NULL, data, (size_t)len, on_published,
                               &p->args[i]);
}

cms_nats_err cms_test_pub_pump(cms_test_pub *p, int budget)
{
    for (; budget > 0 && p->nretry > 0; budget--) {
        int i = p->retry[--p->nretry];
        cms_nats_err err = publish(p, i);
        if (err != CMS_NATS_OK) {
            p->retry[p->nretry++] = i; /* not taken: still to publish again */
            return err;
        }
    }
    for (; budget > 0 && p->next < p->count; budget--) {
        cms_nats_err err = publish(p, p->next);
        if (err != CMS_NATS_OK)
            return err;
        p->next++;
    }
    return CMS_NATS_OK;
}
