/* Wire-level checks of protobuf string fields; see pbtext.h. */
#include "pbtext.h"

#include "utf8.h"

#include <stdbool.h>
#include <string.h>

static const char *const fault_names[] = {CMS_PBTEXT_FAULTS(CMS_ENUM_TEXT)};

const char *cms_pbtext_fault_text(cms_pbtext_fault f)
{
    return cms_enum_text(fault_names, CMS_PBTEXT_NFAULTS, (int)f);
}

/* A varint at p[*at..n): false when it runs off the end or past 10 bytes. */
static bool varint(const uint8_t *p, size_t n, size_t *at, uint64_t *out)
{
    uint64_t v = 0;
    for (int shift = 0; shift < 70 && *at < n; shift += 7) {
        uint8_t b = p[(*at)++];
        v |= (uint64_t)(b & 0x7f) << shift;
        if ((b & 0x80) == 0) {
            *out = v;
            return true;
        }
    }
    return false;
}

static cms_pbtext_fault walk(const ProtobufCMessageDescriptor *d, const uint8_t *p, size_t n,
                             int depth, unsigned checks, const char **field)
{
    size_t at = 0;
    while (at < n) {
        uint64_t tag, len;
        if (!varint(p, n, &at, &tag))
            return CMS_PBTEXT_OK; /* malformed: the decoder's to refuse */
        unsigned wire = (unsigned)(tag & 7);
        uint64_t number = tag >> 3;
        switch (wire) {
        case 0: /* varint */
            if (!varint(p, n, &at, &len))
                return CMS_PBTEXT_OK;
            continue;
        case 1: /* 64-bit */
            if (n - at < 8)
                return CMS_PBTEXT_OK;
            at += 8;
            continue;
        case 5: /* 32-bit */
            if (n - at < 4)
                return CMS_PBTEXT_OK;
            at += 4;
            continue;
        case 2: /* length-delimited: below */
            break;
        default: /* groups and what is no wire type: the decoder refuses them */
            return CMS_PBTEXT_OK;
        }
        if (!varint(p, n, &at, &len) || len > n - at)
            return CMS_PBTEXT_OK;
        const uint8_t *v = p + at;
        at += (size_t)len;
        const ProtobufCFieldDescriptor *f =
            number > 0 && number <= UINT32_MAX
                ? protobuf_c_message_descriptor_get_field(d, (unsigned)number)
                : NULL;
        if (f == NULL)
            continue; /* an unknown field: kept as bytes, never read as text */
        if (f->type == PROTOBUF_C_TYPE_STRING) {
            cms_pbtext_fault r = CMS_PBTEXT_OK;
            if ((checks & CMS_PBTEXT_CHECK_NUL) && len > 0 && memchr(v, '\0', (size_t)len) != NULL)
                r = CMS_PBTEXT_NUL;
            else if ((checks & CMS_PBTEXT_CHECK_UTF8) && !cms_utf8_valid(v, (size_t)len))
                r = CMS_PBTEXT_UTF8;
            if (r != CMS_PBTEXT_OK) {
                *field = f->name;
                return r;
            }
        } else if (f->type == PROTOBUF_C_TYPE_MESSAGE && depth < CMS_PBTEXT_MAX_DEPTH) {
            cms_pbtext_fault r = walk(f->descriptor, v, (size_t)len, depth + 1, checks, field);
            if (r != CMS_PBTEXT_OK)
                return r;
        }
    }
    return CMS_PBTEXT_OK;
}

cms_pbtext_fault cms_pbtext_check(const ProtobufCMessageDescriptor *desc, const uint8_t *data,
                                  size_t len, unsigned checks, const char **field)
{
    if (desc == NULL || (data == NULL && len > 0))
        return CMS_PBTEXT_OK;
    return walk(desc, data, len, 0, checks, field);
}
