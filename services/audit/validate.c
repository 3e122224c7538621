/* Event validation; see validate.h. */
#include "validate.h"

#include "bus.h"
#include "cms/v1/envelope.pb-c.h"
#include "pbarena.h"
#include "uuid.h"

#include <stdlib.h>
#include <string.h>

#define FIRST_BODY_FIELD 16
/* decoding never costs more than this, whatever the message */
#define ARENA_FIRST (32 * 1024)
#define ARENA_CAP (4 * 1024 * 1024)

static const char *const own_names[] = {AUDIT_REASONS(CMS_ENUM_TEXT)};

const char *audit_reason_name(audit_reason r)
{
    if ((int)r < AUDIT_NENVELOPE)
        return cms_bus_reason_name((cms_bus_reason)r);
    return cms_enum_text(own_names, AUDIT_NREASONS, r);
}

static bool uuid_bytes(const char *s, uint8_t out[16])
{
    cms_uuid u;
    if (!cms_uuid_parse(s, strlen(s), &u))
        return false;
    memcpy(out, u.b, 16);
    return true;
}

/* protobuf-c allocates every string of a message; an arena that is reset
 * per message makes decoding allocation-free in the common case and
 * bounded always. The loop thread is the only user. */
static cms_pbarena *g_arena;

audit_reason audit_validate(const uint8_t *data, size_t len, audit_event *ev, cms_json_buf *details)
{
    if (g_arena == NULL && cms_pbarena_create(ARENA_FIRST, ARENA_CAP, &g_arena) != 0)
        return AUDIT_UNDECODABLE;
    Cms__V1__Envelope *e = NULL;
    cms_bus_reason why = cms_bus_envelope_decode(data, len, g_arena, &e);
    if (why != CMS_BUS_VALID)
        return (audit_reason)why;
    /* checked by cms_bus_envelope_check: parsed again for their bytes */
    if (!uuid_bytes(e->event_id, ev->id) || !uuid_bytes(e->resource_id, ev->resource_id) ||
        !uuid_bytes(e->actor_id, ev->actor_id))
        return AUDIT_UNDECODABLE;
    size_t rt = strlen(e->resource_type), et = strlen(e->event_type);
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
