/* libFuzzer target for cms-audit's decoding and checking of an event
 * (audit_validate: a cms.v1.Envelope off the wire, its ids, types, time and
 * details): any bytes either are refused with a reason, or give an event
 * whose types are within their bounds and whose details are one JSON
 * object, that the jsonb text converter takes. Nothing may crash or leak. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "audit/jsonb.h"
#include "json.h"
#include "validate.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static audit_jsonb *conv;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (conv == NULL && (conv = audit_jsonb_new()) == NULL)
        abort();
    cms_json_buf details;
    cms_json_buf_init(&details, AUDIT_DETAILS_MAX);
    audit_event ev;
    audit_reason why = audit_validate(data, size, &ev, &details);
    if (why == AUDIT_OK) {
        if (ev.event_type_len == 0 || ev.event_type_len > AUDIT_TYPE_MAX ||
            ev.resource_type_len == 0 || ev.resource_type_len > AUDIT_TYPE_MAX ||
            strlen(ev.event_type) != ev.event_type_len ||
            strlen(ev.resource_type) != ev.resource_type_len || details.len > AUDIT_DETAILS_MAX)
            abort();
        json_t *j = json_loadb(details.data, details.len, JSON_DECODE_INT_AS_REAL, NULL);
        if (j == NULL || !json_is_object(j))
            abort();
        json_decref(j);
        const char *out;
        size_t n;
        (void)audit_jsonb_text(conv, details.data, details.len, &out, &n);
    } else if (why >= AUDIT_NREASONS || audit_reason_name(why) == NULL) {
        abort();
    }
    cms_json_buf_free(&details);
    return 0;
}
