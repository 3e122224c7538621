/* .pbs files: a stream of protobuf messages, each preceded by its length as
 * a base-128 varint (what protobuf's writeDelimitedTo / parseDelimitedFrom
 * produce), so files written by other protobuf tools can be read and ours
 * can be read by them. The format says nothing about the message type.
 *
 * The reader never trusts a length from the file: a length above
 * max_message is an error before anything is allocated for it. A reader is
 * used by one thread. Reading is blocking (files, pipes): for tools and
 * tests, not for loop code. */
#ifndef CMS_PBS_H
#define CMS_PBS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef struct cms_pbs_reader cms_pbs_reader;

typedef enum {
    CMS_PBS_OK = 0,
    CMS_PBS_EOF,        /* clean end: no bytes after the last whole record */
    CMS_PBS_ETRUNCATED, /* the stream ends inside a length or a message */
    CMS_PBS_ETOOBIG,    /* a length above max_message */
    CMS_PBS_EBADVARINT, /* a length longer than 10 bytes or above 2^64-1 */
    CMS_PBS_EIO,        /* open/read/write failed: errno says why */
    CMS_PBS_ENOMEM,
} cms_pbs_err;

const char *cms_pbs_strerror(cms_pbs_err e);

/* The longest varint: 64 bits in 7-bit groups. */
#define CMS_PBS_VARINT_MAX 10

/* Opens path ("-" reads stdin, which is then not closed). max_message: the
 * largest message accepted (at least 1). Returns CMS_PBS_OK or
 * CMS_PBS_EIO (errno set) or CMS_PBS_ENOMEM; *out is set only on success. */
int cms_pbs_reader_open(const char *path, size_t max_message, cms_pbs_reader **out)
    __attribute__((warn_unused_result));

/* The next message: *data and *len point into the reader's buffer and stay valid
 * until the next call or close. An empty message is CMS_PBS_OK with len 0.
 * After anything but CMS_PBS_OK, every later call returns the same result:
 * a damaged stream is not resynchronised. */
cms_pbs_err cms_pbs_next(cms_pbs_reader *r, const uint8_t **data, size_t *len)
    __attribute__((warn_unused_result));

/* Byte offset at which the record last returned by cms_pbs_next begins (or,
 * after a failure, the record that failed); after CMS_PBS_EOF, the length of
 * the stream. 0 before the first call. */
uint64_t cms_pbs_offset(const cms_pbs_reader *r);

void cms_pbs_reader_close(cms_pbs_reader *r); /* NULL-safe */

/* Appends one record (varint length, then the bytes) to f. Returns
 * CMS_PBS_OK or CMS_PBS_EIO. Errors of a buffered FILE may only show at
 * fflush/fclose: check those too. */
int cms_pbs_write(FILE *f, const void *data, size_t len) __attribute__((warn_unused_result));

/* Writes the varint of v into out (CMS_PBS_VARINT_MAX bytes of room);
 * returns the number of bytes used (1 to 10). */
size_t cms_pbs_varint_encode(uint64_t v, uint8_t out[CMS_PBS_VARINT_MAX]);

#endif
