/* Event validation; see validate.h. */
#include "validate.h"

#include "cms/v1/envelope.pb-c.h"
#include "uuid.h"

#include <stdlib.h>
#include <string.h>

#define FIRST_BODY_FIELD 16
#define MIN_OCCURRED_US INT64_C(946684800000000)  /* 2000-01-01 */
#define MAX_OCCURRED_US INT64_C(4102444800000000) /* 2100-01-01 */

const char *audit_reason_name(audit_reason r)
{
    switch (r) {
#define AUDIT_TEXT(name, text)                                                                     \
    case name:                                                                                     \
        return text;
        AUDIT_REASONS(AUDIT_TEXT)
#undef AUDIT_TEXT
    case AUDIT_NREASONS:
        break;
    }
    return "unknown";
}

/* protobuf-c allocates every string of a message; a bump arena that is
 * reset per message makes decoding allocation-free in the common case.
 * The loop thread is the only user. */
typedef struct arena {
    uint8_t buf[32 * 1024];
    size_t used;
    void *spill[16]; /* heap blocks for what does not fit, freed at reset */
    size_t nspill;
} arena;

static arena g_arena;

static void arena_reset(arena *a)
{
    for (size_t i = 0; i < a->nspill; i++)
        free(a->spill[i]);
    a->nspill = 0;
    a->used = 0;
}

static void *arena_alloc(void *data, size_t size)
{
    arena *a = data;
    size = (size + 15) & ~(size_t)15;
    if (a->used + size <= sizeof a->buf) {
        void *p = a->buf + a->used;
        a->used += size;
        return p;
    }
    if (a->nspill == sizeof a->spill / sizeof a->spill[0])
        return NULL; /* an absurd message: decoding fails */
    void *p = malloc(size);
    if (p)
        a->spill[a->nspill++] = p;
    return p;
}

static void arena_free(void *data, void *p)
{
    (void)data;
    (void)p;
}

static bool type_chars(const char *s, size_t n)
{
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return false;
    }
    return true;
}

static bool uuid_field(const char *s, uint8_t out[16])
{
    cms_uuid u;
    if (s == NULL || !cms_uuid_parse(s, strlen(s), &u))
        return false;
    memcpy(out, u.b, 16);
    return true;
}

audit_reason audit_validate(const uint8_t *data, size_t len, audit_event *ev, cms_json_buf *details)
{
    arena_reset(&g_arena);
    ProtobufCAllocator alloc = {arena_alloc, arena_free, &g_arena};
    Cms__V1__Envelope *e = cms__v1__envelope__unpack(&alloc, len, data);
    if (e == NULL)
        return AUDIT_UNDECODABLE;
    if (!uuid_field(e->event_id, ev->id))
        return AUDIT_BAD_EVENT_ID;
    if (!uuid_field(e->resource_id, ev->resource_id))
        return AUDIT_BAD_RESOURCE_ID;
    if (!uuid_field(e->actor_id, ev->actor_id))
        return AUDIT_BAD_ACTOR_ID;
    size_t rt = strlen(e->resource_type), et = strlen(e->event_type);
    if (rt > AUDIT_TYPE_MAX || !type_chars(e->resource_type, rt))
        return AUDIT_BAD_RESOURCE_TYPE;
    /* "<resource_type>.<verb>" */
    if (et > AUDIT_TYPE_MAX || et < rt + 2 || memcmp(e->event_type, e->resource_type, rt) != 0 ||
        e->event_type[rt] != '.' || !type_chars(e->event_type + rt + 1, et - rt - 1))
        return AUDIT_BAD_EVENT_TYPE;
    if (e->occurred_at_us < MIN_OCCURRED_US || e->occurred_at_us >= MAX_OCCURRED_US)
        return AUDIT_BAD_OCCURRED_AT;
    memcpy(ev->event_type, e->event_type, et + 1);
    memcpy(ev->resource_type, e->resource_type, rt + 1);
    ev->event_type_len = (uint8_t)et;
    ev->resource_type_len = (uint8_t)rt;
    ev->occurred_us = e->occurred_at_us;

    cms_json_buf_reset(details);
    cms_json_err jr = cms_json_render_body(details, &e->base, FIRST_BODY_FIELD);
    if (jr == CMS_JSON_EINVAL) { /* no typed body */
        cms_json_buf_reset(details);
        size_t dl = e->details_json ? strlen(e->details_json) : 0;
        jr = dl ? cms_json_check_object(details, e->details_json, dl)
                : cms_json_check_object(details, "{}", 2);
    }
    return jr == CMS_JSON_OK ? AUDIT_OK : AUDIT_BAD_DETAILS;
}
