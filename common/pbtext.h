/* The text of protobuf string fields, checked on the wire before decoding.
 *
 * proto3 strings are UTF-8, but protobuf-c checks nothing and hands every
 * string out NUL-terminated: a NUL inside one silently cuts it short (the
 * handler and the database see less than was sent), and invalid UTF-8
 * reaches whatever stores it. cms_pbtext_check walks the encoded message
 * with its descriptor (nested messages too, at most CMS_PBTEXT_MAX_DEPTH
 * deep) and names the first string field whose bytes hold a NUL or are not
 * valid UTF-8 (Unicode Table 3-7: no overlongs, no surrogates, nothing past
 * U+10FFFF). Bytes that are not a valid encoding are not its business: it
 * stops there and leaves them to the decoder, which refuses them. */
#ifndef CMS_PBTEXT_H
#define CMS_PBTEXT_H

#include "xenum.h"

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>

#define CMS_PBTEXT_MAX_DEPTH 16

#define CMS_PBTEXT_FAULTS(X)                                                                       \
    X(CMS_PBTEXT_OK, "ok")                                                                         \
    X(CMS_PBTEXT_NUL, "holds a NUL byte")                                                          \
    X(CMS_PBTEXT_UTF8, "is not valid UTF-8")

typedef enum { CMS_PBTEXT_FAULTS(CMS_ENUM_ITEM) CMS_PBTEXT_NFAULTS } cms_pbtext_fault;
const char *cms_pbtext_fault_text(cms_pbtext_fault f);

/* What to look for: a NUL, invalid UTF-8, or both. */
#define CMS_PBTEXT_CHECK_NUL 1u
#define CMS_PBTEXT_CHECK_UTF8 2u
#define CMS_PBTEXT_CHECK_ALL (CMS_PBTEXT_CHECK_NUL | CMS_PBTEXT_CHECK_UTF8)

/* checks: CMS_PBTEXT_CHECK_*. *field (when not OK) is the offending
 * field's name, from the descriptor (static). data may be NULL when len is
 * 0. */
cms_pbtext_fault cms_pbtext_check(const ProtobufCMessageDescriptor *desc, const uint8_t *data,
                                  size_t len, unsigned checks, const char **field)
    __attribute__((warn_unused_result));

#endif
