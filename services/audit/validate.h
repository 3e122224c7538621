/* Decoding and validating one event before it may enter a batch.
 *
 * Every way an event can be refused has a reason, whose name travels in the
 * dead letter's Cms-Dlq-Reason header and labels the dead-letter metric. */
#ifndef AUDIT_VALIDATE_H
#define AUDIT_VALIDATE_H

#include "bus.h"
#include "json.h"
#include "xenum.h"

#include <stddef.h>
#include <stdint.h>

/* The envelope's own reasons come first, with bus.h's values and names
 * (undecodable, invalid_event_id, ... invalid_occurred_at); then the audit
 * service's. */
#define AUDIT_REASONS(X)                                                                           \
    X(AUDIT_BAD_DETAILS, "invalid_details")                                                        \
    X(AUDIT_UNKNOWN_ACTOR, "unknown_actor")                                                        \
    X(AUDIT_INSERT_FAILED, "insert_failed")

typedef enum audit_reason {
    AUDIT_OK = CMS_BUS_VALID,
    AUDIT_UNDECODABLE = CMS_BUS_UNDECODABLE,
    AUDIT_BAD_EVENT_ID = CMS_BUS_BAD_EVENT_ID,
    AUDIT_BAD_RESOURCE_ID = CMS_BUS_BAD_RESOURCE_ID,
    AUDIT_BAD_ACTOR_ID = CMS_BUS_BAD_ACTOR_ID,
    AUDIT_BAD_EVENT_TYPE = CMS_BUS_BAD_EVENT_TYPE,
    AUDIT_BAD_RESOURCE_TYPE = CMS_BUS_BAD_RESOURCE_TYPE,
    AUDIT_BAD_OCCURRED_AT = CMS_BUS_BAD_OCCURRED_AT,
    AUDIT_NENVELOPE = CMS_BUS_NREASONS,
    AUDIT_NENVELOPE_ = AUDIT_NENVELOPE - 1, /* the next starts at AUDIT_NENVELOPE */
    AUDIT_REASONS(CMS_ENUM_ITEM) AUDIT_NREASONS
} audit_reason;

const char *audit_reason_name(audit_reason r);

/* audit_logs.event_type and resource_type are VARCHAR(50) */
#define AUDIT_TYPE_MAX CMS_BUS_TYPE_MAX
/* details larger than this are refused rather than stored */
#define AUDIT_DETAILS_MAX (64 * 1024)

typedef struct audit_event {
    uint8_t id[16];
    uint8_t resource_id[16];
    uint8_t actor_id[16];
    int64_t occurred_us;
    char event_type[AUDIT_TYPE_MAX + 1];
    char resource_type[AUDIT_TYPE_MAX + 1];
    uint8_t event_type_len;
    uint8_t resource_type_len;
} audit_event;

/* Decodes data as a cms.v1.Envelope and checks it: event_id, resource_id
 * and actor_id are UUIDs; event_type is "<resource_type>.<verb>" within 50
 * characters, of letters, digits, '_' and '-'; occurred_at_us lies between
 * 2000 and 2100; details are the typed body (fields 16+) rendered as JSON,
 * else details_json if it is a JSON object, else {}. On AUDIT_OK, ev is
 * filled and the details are appended to details (which is reset first). */
audit_reason audit_validate(const uint8_t *data, size_t len, audit_event *ev,
                            cms_json_buf *details);

#endif
