/* Event envelopes; see event.h. */
#include "event.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int64_t cms_event_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* "<word>.<word>" of [a-z_], as the subject hierarchy needs */
static int valid_type(const char *t)
{
    const char *dot = strchr(t, '.');
    if (dot == NULL || dot == t || dot[1] == '\0' || strchr(dot + 1, '.'))
        return 0;
    for (const char *p = t; *p; p++)
        if (p != dot && !((*p >= 'a' && *p <= 'z') || *p == '_'))
            return 0;
    return 1;
}

int cms_event_build(Cms__V1__Envelope *env, const cms_event_header *h, cms_event *out)
{
    if (env == NULL || h == NULL || out == NULL || h->event_type == NULL ||
        h->resource_type == NULL || h->resource_id == NULL || h->actor_id == NULL ||
        h->source == NULL || !valid_type(h->event_type))
        return -1;
    cms_event ev = {0};
    int n = snprintf(ev.subject, sizeof ev.subject, "cms.events.%s", h->event_type);
    if (n < 0 || (size_t)n >= sizeof ev.subject)
        return -1;
    cms_uuid u;
    cms_uuid_v7(&u);
    cms_uuid_format(&u, ev.id);
    env->event_id = ev.id;
    env->event_type = (char *)h->event_type;
    env->resource_type = (char *)h->resource_type;
    env->resource_id = (char *)h->resource_id;
    env->actor_id = (char *)h->actor_id;
    env->occurred_at_us = h->occurred_at_us ? h->occurred_at_us : cms_event_now_us();
    env->correlation_id = (char *)(h->correlation_id ? h->correlation_id : "");
    env->source = (char *)h->source;
    ev.len = cms__v1__envelope__get_packed_size(env);
    ev.buf = malloc(ev.len ? ev.len : 1);
    if (ev.buf)
        cms__v1__envelope__pack(env, ev.buf);
    /* env borrowed our strings for the pack only */
    env->event_id = env->event_type = env->resource_type = env->resource_id = env->actor_id =
        env->correlation_id = env->source = (char *)protobuf_c_empty_string;
    if (ev.buf == NULL)
        return -1;
    *out = ev;
    return 0;
}

void cms_event_release(cms_event *ev)
{
    if (ev == NULL)
        return;
    free(ev->buf);
    ev->buf = NULL;
    ev->len = 0;
}
