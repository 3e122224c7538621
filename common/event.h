/* Events as the services publish them: a cms.v1.Envelope with a new UUIDv7
 * event id and the time of the change, packed, with the subject it goes to
 * ("cms.events." + event_type). What goes in the typed body is the
 * caller's: set env->body_case and the body member before building. */
#ifndef CMS_EVENT_H
#define CMS_EVENT_H

#include "cms/v1/envelope.pb-c.h"
#include "uuid.h"

#include <stddef.h>
#include <stdint.h>

#define CMS_EVENT_SUBJECT_MAX 128

typedef struct cms_event {
    char id[CMS_UUID_STRLEN + 1];
    char subject[CMS_EVENT_SUBJECT_MAX];
    uint8_t *buf; /* the packed Envelope (malloc'd; cms_event_release frees it) */
    size_t len;
} cms_event;

typedef struct cms_event_header {
    const char *event_type;     /* "<resource_type>.<verb>", e.g. "credential.issued" */
    const char *resource_type;  /* "identity", "credential", ... */
    const char *resource_id;    /* UUID text */
    const char *actor_id;       /* UUID text of the identity that acted */
    const char *correlation_id; /* NULL: none */
    const char *source;         /* the publishing service, e.g. "identity" */
    int64_t occurred_at_us;     /* 0: now */
} cms_event_header;

/* Fills env's header fields from h (strings are borrowed for the call
 * only), gives it a new event id and packs it into out. env's body is left
 * as the caller set it. Returns 0, or -1 for a missing field, an
 * event_type that is not "<word>.<word>" or no memory (out untouched). */
int cms_event_build(Cms__V1__Envelope *env, const cms_event_header *h, cms_event *out)
    __attribute__((warn_unused_result));

void cms_event_release(cms_event *ev); /* frees ev->buf; NULL-safe, idempotent */

/* Unix time now, in microseconds (the clock events are stamped with). */
int64_t cms_event_now_us(void);

#endif
