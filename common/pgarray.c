/* Binary PostgreSQL arrays; see pgarray.h. */
#include "pgarray.h"

#include <endian.h>
#include <stdlib.h>
#include <string.h>

#define HEADER 20
#define MAX_ELEMENT (1u << 30)

static int reserve(cms_pgarr *a, size_t more)
{
    if (a->len + more <= a->cap)
        return 0;
    size_t cap = a->cap ? a->cap : 256;
    while (cap < a->len + more)
        cap *= 2;
    uint8_t *d = realloc(a->data, cap);
    if (d == NULL)
        return -1;
    a->data = d;
    a->cap = cap;
    return 0;
}

static void put32(uint8_t *p, uint32_t v)
{
    v = htobe32(v);
    memcpy(p, &v, 4);
}

void cms_pgarr_init(cms_pgarr *a, uint32_t elem_oid)
{
    memset(a, 0, sizeof *a);
    a->elem_oid = elem_oid;
}

void cms_pgarr_reset(cms_pgarr *a)
{
    a->len = 0;
    a->n = 0;
    a->has_nulls = 0;
}

void cms_pgarr_free(cms_pgarr *a)
{
    free(a->data);
    memset(a, 0, sizeof *a);
}

/* Makes room for the header on the first element. */
static int begin(cms_pgarr *a, size_t more)
{
    if (a->len == 0) {
        if (reserve(a, HEADER + more) != 0)
            return -1;
        a->len = HEADER;
        return 0;
    }
    return reserve(a, more);
}

int cms_pgarr_add(cms_pgarr *a, const void *bytes, size_t len)
{
    if (len > MAX_ELEMENT || begin(a, 4 + len) != 0)
        return -1;
    put32(a->data + a->len, (uint32_t)len);
    if (len)
        memcpy(a->data + a->len + 4, bytes, len);
    a->len += 4 + len;
    a->n++;
    return 0;
}

int cms_pgarr_add_null(cms_pgarr *a)
{
    if (begin(a, 4) != 0)
        return -1;
    put32(a->data + a->len, UINT32_MAX); /* -1 */
    a->len += 4;
    a->n++;
    a->has_nulls = 1;
    return 0;
}

int cms_pgarr_add_jsonb(cms_pgarr *a, const char *json, size_t len)
{
    if (len + 1 > MAX_ELEMENT || begin(a, 5 + len) != 0)
        return -1;
    put32(a->data + a->len, (uint32_t)(len + 1));
    a->data[a->len + 4] = 1; /* jsonb binary format version */
    if (len)
        memcpy(a->data + a->len + 5, json, len);
    a->len += 5 + len;
    a->n++;
    return 0;
}

int cms_pgarr_add_int8(cms_pgarr *a, int64_t v)
{
    uint64_t be = htobe64((uint64_t)v);
    return cms_pgarr_add(a, &be, 8);
}

int cms_pgarr_add_timestamptz_unix_us(cms_pgarr *a, int64_t unix_us)
{
    return cms_pgarr_add_int8(a, unix_us - CMS_PG_EPOCH_OFFSET_US);
}

const uint8_t *cms_pgarr_bytes(cms_pgarr *a, size_t *len)
{
    if (a->len == 0 && reserve(a, HEADER) != 0) {
        *len = 0;
        return NULL;
    }
    if (a->n == 0) {
        /* an empty array has no dimensions */
        put32(a->data, 0);
        put32(a->data + 4, 0);
        put32(a->data + 8, a->elem_oid);
        *len = 12;
        return a->data;
    }
    put32(a->data, 1);
    put32(a->data + 4, (uint32_t)a->has_nulls);
    put32(a->data + 8, a->elem_oid);
    put32(a->data + 12, a->n);
    put32(a->data + 16, 1);
    *len = a->len;
    return a->data;
}
