/* libFuzzer target for cmsctl's .pbs reader (tools/cmsctl/pbs.c): bytes 0
 * and 1 are max_message (1..65536), the rest is a .pbs file, read through
 * a real file descriptor (a memfd) as cmsctl reads one. Nothing may crash
 * or leak; the reader agrees with a plain decoder written here, record for
 * record: the same bytes at the same offsets, and the same ending (EOF at
 * the stream's length, TRUNCATED, TOOBIG or BADVARINT at the failing
 * record's offset), which it then keeps returning; the records written
 * back with cms_pbs_write read back the same. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "pbs.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The format, decoded from memory: the next record at *pos, or how the
 * stream ends there. */
static cms_pbs_err plain_next(const uint8_t *d, size_t n, size_t *pos, size_t max, size_t *at,
                              size_t *len)
{
    uint64_t v = 0;
    size_t i = 0;
    if (*pos == n)
        return CMS_PBS_EOF;
    for (;; i++) {
        if (*pos + i == n)
            return CMS_PBS_ETRUNCATED;
        uint8_t b = d[*pos + i];
        if (i == CMS_PBS_VARINT_MAX - 1 && b > 1)
            return CMS_PBS_EBADVARINT;
        v |= (uint64_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80))
            break;
    }
    if (v > max)
        return CMS_PBS_ETOOBIG;
    if (n - (*pos + i + 1) < v)
        return CMS_PBS_ETRUNCATED;
    *at = *pos + i + 1;
    *len = (size_t)v;
    *pos = *at + *len;
    return CMS_PBS_OK;
}

static cms_pbs_reader *open_bytes(int fd, const uint8_t *d, size_t n, size_t max)
{
    char path[64];
    cms_pbs_reader *r = NULL;
    if (ftruncate(fd, 0) != 0 || pwrite(fd, d, n, 0) != (ssize_t)n)
        abort();
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    if (cms_pbs_reader_open(path, max, &r) != CMS_PBS_OK)
        abort();
    return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int fd = -1, fd2 = -1;
    if (fd < 0 && ((fd = memfd_create("pbs", MFD_CLOEXEC)) < 0 ||
                   (fd2 = memfd_create("pbs2", MFD_CLOEXEC)) < 0))
        abort();
    if (size < 2)
        return 0;
    size_t max = 1 + (data[0] | (size_t)data[1] << 8);
    const uint8_t *d = data + 2;
    size_t n = size - 2;

    cms_pbs_reader *r = open_bytes(fd, d, n, max);
    char *copy = NULL;
    size_t copylen = 0;
    FILE *out = open_memstream(&copy, &copylen);
    if (out == NULL)
        abort();
    size_t pos = 0, records = 0;
    cms_pbs_err want, got;
    for (;;) {
        size_t at = 0, len = 0, before = pos;
        const uint8_t *rec = NULL;
        size_t rlen = 0;
        want = plain_next(d, n, &pos, max, &at, &len);
        got = cms_pbs_next(r, &rec, &rlen);
        if (got != want)
            abort();
        if (got != CMS_PBS_OK) {
            if (cms_pbs_offset(r) != (got == CMS_PBS_EOF ? n : before))
                abort();
            break;
        }
        if (cms_pbs_offset(r) != before || rlen != len || (len && memcmp(rec, d + at, len) != 0))
            abort();
        if (cms_pbs_write(out, rec, rlen) != CMS_PBS_OK)
            abort();
        records++;
    }
    /* a failure sticks */
    const uint8_t *rec = NULL;
    size_t rlen = 0;
    if (cms_pbs_next(r, &rec, &rlen) != got || cms_pbs_next(r, &rec, &rlen) != got)
        abort();
    cms_pbs_reader_close(r);
    if (fclose(out) != 0)
        abort();

    /* what was read, written again (minimal varints), reads back alike */
    r = open_bytes(fd2, (const uint8_t *)copy, copylen, max);
    pos = 0;
    for (size_t i = 0;; i++) {
        size_t at = 0, len = 0;
        cms_pbs_err e = cms_pbs_next(r, &rec, &rlen);
        want = plain_next((const uint8_t *)copy, copylen, &pos, max, &at, &len);
        if (e != want || (e == CMS_PBS_OK && i >= records) || (e != CMS_PBS_OK && i != records))
            abort();
        if (e != CMS_PBS_OK)
            break;
        if (rlen != len || (len && memcmp(rec, copy + at, len) != 0))
            abort();
    }
    cms_pbs_reader_close(r);
    free(copy);
    return 0;
}
