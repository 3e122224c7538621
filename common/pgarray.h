/* One-dimensional PostgreSQL arrays in the binary wire format, built
 * element by element, for sending whole columns as single parameters
 * (INSERT ... SELECT FROM unnest($1::uuid[], ...)). Nothing is escaped:
 * every element travels as length + bytes.
 *
 * Layout (all integers big-endian): ndim=1, has_nulls, element type oid,
 * dimension length, lower bound 1, then per element int32 length (-1 for
 * NULL) and its bytes in the element type's binary format. */
#ifndef CMS_PGARRAY_H
#define CMS_PGARRAY_H

#include <stddef.h>
#include <stdint.h>

/* element type oids (pg_type.oid), and the array types' */
#define CMS_PG_OID_TEXT 25u
#define CMS_PG_OID_UUID 2950u
#define CMS_PG_OID_JSONB 3802u
#define CMS_PG_OID_TIMESTAMPTZ 1184u
#define CMS_PG_OID_INT8 20u
#define CMS_PG_OID_TEXT_ARRAY 1009u
#define CMS_PG_OID_UUID_ARRAY 2951u
#define CMS_PG_OID_JSONB_ARRAY 3807u
#define CMS_PG_OID_TIMESTAMPTZ_ARRAY 1185u
#define CMS_PG_OID_INT8_ARRAY 1016u

/* Microseconds between the Unix epoch and PostgreSQL's (2000-01-01 UTC). */
#define CMS_PG_EPOCH_OFFSET_US INT64_C(946684800000000)

typedef struct cms_pgarr {
    uint8_t *data;
    size_t len, cap;
    uint32_t n;
    uint32_t elem_oid;
    int has_nulls;
} cms_pgarr;

void cms_pgarr_init(cms_pgarr *a, uint32_t elem_oid);
/* Empties the array, keeping its memory. */
void cms_pgarr_reset(cms_pgarr *a);
void cms_pgarr_free(cms_pgarr *a);

/* Each returns 0, or -1 when out of memory or an element is over 1 GiB. */
int cms_pgarr_add(cms_pgarr *a, const void *bytes, size_t len) __attribute__((warn_unused_result));
int cms_pgarr_add_null(cms_pgarr *a) __attribute__((warn_unused_result));
/* jsonb elements are a version byte (1) and the JSON text. */
int cms_pgarr_add_jsonb(cms_pgarr *a, const char *json, size_t len)
    __attribute__((warn_unused_result));
int cms_pgarr_add_int8(cms_pgarr *a, int64_t v) __attribute__((warn_unused_result));
/* A Unix time in microseconds, as timestamptz. */
int cms_pgarr_add_timestamptz_unix_us(cms_pgarr *a, int64_t unix_us)
    __attribute__((warn_unused_result));

/* The finished array's bytes (valid until the next change) and length. */
const uint8_t *cms_pgarr_bytes(cms_pgarr *a, size_t *len);

#endif
