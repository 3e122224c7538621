/* Length-delimited protobuf streams; see pbs.h. */
#include "pbs.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define READ_CHUNK (64 * 1024)

struct cms_pbs_reader {
    int fd;
    bool own_fd; /* false for stdin */
    bool eof;    /* read() returned 0: no more bytes will come */
    uint8_t *buf;
    size_t cap;
    size_t pos;      /* first unconsumed byte */
    size_t end;      /* one past the last buffered byte */
    uint64_t base;   /* stream offset of buf[0] */
    uint64_t offset; /* see cms_pbs_offset */
    size_t max_message;
    cms_pbs_err sticky; /* CMS_PBS_OK until the stream ends or fails */
};

const char *cms_pbs_strerror(cms_pbs_err e)
{
    switch (e) {
    case CMS_PBS_OK:
        return "ok";
    case CMS_PBS_EOF:
        return "end of stream";
    case CMS_PBS_ETRUNCATED:
        return "truncated record (the stream ends inside a length or a message)";
    case CMS_PBS_ETOOBIG:
        return "record longer than the largest accepted message";
    case CMS_PBS_EBADVARINT:
        return "malformed length (varint longer than 10 bytes or above 64 bits)";
    case CMS_PBS_EIO:
        return "I/O error";
    case CMS_PBS_ENOMEM:
        return "out of memory";
    }
    return "unknown pbs error";
}

size_t cms_pbs_varint_encode(uint64_t v, uint8_t out[CMS_PBS_VARINT_MAX])
{
    size_t n = 0;
    while (v >= 0x80) {
        out[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    out[n++] = (uint8_t)v;
    return n;
}

int cms_pbs_write(FILE *f, const void *data, size_t len)
{
    uint8_t hdr[CMS_PBS_VARINT_MAX];
    size_t n = cms_pbs_varint_encode(len, hdr);
    if (f == NULL || (data == NULL && len > 0)) {
        errno = EINVAL;
        return CMS_PBS_EIO;
    }
    if (fwrite(hdr, 1, n, f) != n)
        return CMS_PBS_EIO;
    if (len > 0 && fwrite(data, 1, len, f) != len)
        return CMS_PBS_EIO;
    return CMS_PBS_OK;
}

int cms_pbs_reader_open(const char *path, size_t max_message, cms_pbs_reader **out)
{
    int rc = CMS_PBS_OK;
    cms_pbs_reader *r = NULL;
    if (path == NULL || out == NULL || max_message == 0) {
        errno = EINVAL;
        rc = CMS_PBS_EIO;
        goto out;
    }
    r = calloc(1, sizeof *r);
    if (r == NULL) {
        rc = CMS_PBS_ENOMEM;
        goto out;
    }
    r->fd = -1;
    r->max_message = max_message;
    r->cap = READ_CHUNK;
    r->buf = malloc(r->cap);
    if (r->buf == NULL) {
        rc = CMS_PBS_ENOMEM;
        goto out;
    }
    if (strcmp(path, "-") == 0) {
        r->fd = STDIN_FILENO;
    } else {
        r->fd = open(path, O_RDONLY | O_CLOEXEC);
        if (r->fd < 0) {
            rc = CMS_PBS_EIO;
            goto out;
        }
        r->own_fd = true;
    }
    *out = r;
    r = NULL;
out:
    if (r != NULL) {
        int saved = errno;
        cms_pbs_reader_close(r);
        errno = saved;
    }
    return rc;
}

void cms_pbs_reader_close(cms_pbs_reader *r)
{
    if (r == NULL)
        return;
    if (r->own_fd && r->fd >= 0)
        close(r->fd);
    free(r->buf);
    free(r);
}

uint64_t cms_pbs_offset(const cms_pbs_reader *r)
{
    return r == NULL ? 0 : r->offset;
}

/* Makes at least `need` bytes available from pos on, unless the stream ends
 * first (then fewer are: the caller compares). need is at most
 * max_message + CMS_PBS_VARINT_MAX, so the buffer stays bounded by the
 * caller's limit. Moves the buffered bytes to the front, which invalidates
 * pointers handed out before. */
static cms_pbs_err fill(cms_pbs_reader *r, size_t need)
{
    if (r->end - r->pos >= need)
        return CMS_PBS_OK;
    if (r->pos > 0) {
        memmove(r->buf, r->buf + r->pos, r->end - r->pos);
        r->base += r->pos;
        r->end -= r->pos;
        r->pos = 0;
    }
    if (need > r->cap) {
        size_t cap = r->cap;
        while (cap < need)
            cap = cap > SIZE_MAX / 2 ? need : cap * 2;
        uint8_t *nb = realloc(r->buf, cap);
        if (nb == NULL)
            return CMS_PBS_ENOMEM;
        r->buf = nb;
        r->cap = cap;
    }
    while (r->end < need && !r->eof) {
        ssize_t got = read(r->fd, r->buf + r->end, r->cap - r->end);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            return CMS_PBS_EIO;
        }
        if (got == 0)
            r->eof = true;
        r->end += (size_t)got;
    }
    return CMS_PBS_OK;
}

cms_pbs_err cms_pbs_next(cms_pbs_reader *r, const uint8_t **data, size_t *len)
{
    cms_pbs_err e = CMS_PBS_OK;
    if (r == NULL || data == NULL || len == NULL)
        return CMS_PBS_EIO;
    if (r->sticky != CMS_PBS_OK)
        return r->sticky;
    r->offset = r->base + r->pos;

    uint64_t v = 0;
    size_t hdr = 0;
    for (;;) {
        if (r->end - r->pos <= hdr) {
            if ((e = fill(r, hdr + 1)) != CMS_PBS_OK)
                goto out;
            if (r->end - r->pos <= hdr) {
                e = hdr == 0 ? CMS_PBS_EOF : CMS_PBS_ETRUNCATED;
                goto out;
            }
        }
        uint8_t b = r->buf[r->pos + hdr];
        /* the 10th byte may carry only bit 63 and must end the varint */
        if (hdr == CMS_PBS_VARINT_MAX - 1 && (b & 0xFE) != 0) {
            e = CMS_PBS_EBADVARINT;
            goto out;
        }
        v |= (uint64_t)(b & 0x7F) << (7 * hdr);
        hdr++;
        if ((b & 0x80) == 0)
            break;
    }
    if (v > r->max_message) {
        e = CMS_PBS_ETOOBIG;
        goto out;
    }
    size_t n = (size_t)v;
    if ((e = fill(r, hdr + n)) != CMS_PBS_OK)
        goto out;
    if (r->end - r->pos < hdr + n) {
        e = CMS_PBS_ETRUNCATED;
        goto out;
    }
    *data = r->buf + r->pos + hdr;
    *len = n;
    r->pos += hdr + n;
out:
    if (e == CMS_PBS_EOF)
        r->offset = r->base + r->pos;
    if (e != CMS_PBS_OK)
        r->sticky = e;
    return e;
}
