/* UUIDs: version 7 generation (RFC 9562), canonical text form, ordering.
 *
 * A v7 UUID starts with the 48-bit Unix time in milliseconds, so ids made
 * later sort later and B-tree indexes grow at their right edge. */
#ifndef CMS_UUID_H
#define CMS_UUID_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct cms_uuid {
    uint8_t b[16];
} cms_uuid;

#define CMS_UUID_STRLEN 36

/* Thread-safe. Strictly increasing within the process (by memcmp and by text):
 * 48-bit Unix ms, then a 12-bit counter in rand_a seeded randomly at each new
 * millisecond (RFC 9562 §6.2 methods 1 and 3); on counter overflow the
 * timestamp is advanced; a clock that goes backwards is not followed. The 62
 * bits of rand_b come from libsodium's randombytes_buf. */
void cms_uuid_v7(cms_uuid *out);

/* Canonical 8-4-4-4-12 hex form, either case, exactly 36 characters; nothing
 * else (no braces, no "urn:uuid:", no missing dashes). s need not be
 * NUL-terminated. *out is written only on success. */
bool cms_uuid_parse(const char *s, size_t len, cms_uuid *out) __attribute__((warn_unused_result));
void cms_uuid_format(const cms_uuid *u, char out[CMS_UUID_STRLEN + 1]); /* lowercase */
int cms_uuid_compare(const cms_uuid *a, const cms_uuid *b);             /* <0, 0, >0 like memcmp */
bool cms_uuid_is_nil(const cms_uuid *u);
uint64_t cms_uuid_v7_ms(const cms_uuid *u); /* the timestamp of a v7 UUID */
int cms_uuid_version(const cms_uuid *u);

#endif
