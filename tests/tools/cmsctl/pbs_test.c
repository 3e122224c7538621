/* pbs: round trips through files and pipes, empty messages, shortest and
 * longest varints, truncation in the length and in the body, lengths over
 * the limit (never allocated), malformed varints, a stream given as known
 * bytes, and offsets. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "pbs.h"

/* Writes bytes to a fresh temporary file whose name goes into path. */
static void write_file(char path[64], const void *bytes, size_t len)
{
    snprintf(path, 64, "/tmp/cms-pbs-test-XXXXXX");
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, bytes, len), (ssize_t)len);
    close(fd);
}

static cms_pbs_reader *open_bytes(char path[64], const void *bytes, size_t len, size_t max)
{
    write_file(path, bytes, len);
    cms_pbs_reader *r = NULL;
    cr_assert_eq(cms_pbs_reader_open(path, max, &r), CMS_PBS_OK);
    cr_assert_not_null(r);
    return r;
}

Test(pbs, round_trip_many_sizes)
{
    char path[64];
    snprintf(path, sizeof path, "/tmp/cms-pbs-rt-XXXXXX");
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    FILE *f = fdopen(fd, "wb");
    cr_assert_not_null(f);
    /* sizes across the 1/2/3-byte varint borders and past the reader's 64 KiB chunk */
    static const size_t sizes[] = {0, 1, 2, 127, 128, 129, 300, 16383, 16384, 70000, 200000, 5};
    enum { NS = sizeof sizes / sizeof sizes[0] };
    uint8_t *payload = malloc(200000);
    cr_assert_not_null(payload);
    for (size_t i = 0; i < 200000; i++)
        payload[i] = (uint8_t)(i * 31 + 7);
    for (size_t i = 0; i < NS; i++) {
        payload[0] = (uint8_t)i; /* tells records of equal size apart */
        cr_assert_eq(cms_pbs_write(f, payload, sizes[i]), CMS_PBS_OK);
    }
    cr_assert_eq(fclose(f), 0);

    cms_pbs_reader *r = NULL;
    cr_assert_eq(cms_pbs_reader_open(path, 200000, &r), CMS_PBS_OK);
    uint64_t expect_off = 0;
    for (size_t i = 0; i < NS; i++) {
        const uint8_t *d = NULL;
        size_t n = 99;
        cr_assert_eq(cms_pbs_next(r, &d, &n), CMS_PBS_OK, "record %zu", i);
        cr_assert_eq(n, sizes[i], "record %zu: %zu bytes, want %zu", i, n, sizes[i]);
        cr_assert_eq(cms_pbs_offset(r), expect_off, "record %zu offset", i);
        if (n > 0) {
            cr_assert_eq(d[0], (uint8_t)i);
            for (size_t k = 1; k < n; k++)
                cr_assert_eq(d[k], (uint8_t)(k * 31 + 7), "record %zu byte %zu", i, k);
        }
        uint8_t tmp[CMS_PBS_VARINT_MAX];
        expect_off += cms_pbs_varint_encode(sizes[i], tmp) + sizes[i];
    }
    const uint8_t *d = NULL;
    size_t n = 0;
    cr_assert_eq(cms_pbs_next(r, &d, &n), CMS_PBS_EOF);
    cr_assert_eq(cms_pbs_offset(r), expect_off, "offset at EOF is the stream length");
    cr_assert_eq(cms_pbs_next(r, &d, &n), CMS_PBS_EOF, "EOF is sticky");
    cms_pbs_reader_close(r);
    free(payload);
    unlink(path);
}

Test(pbs, empty_stream_and_empty_messages)
{
    char path[64];
    cms_pbs_reader *r = open_bytes(path, "", 0, 16);
    const uint8_t *d;
    size_t n;
    cr_assert_eq(cms_pbs_next(r, &d, &n), CMS_PBS_EOF);
    cr_assert_eq(cms_pbs_offset(r), 0);
    cms_pbs_reader_close(r);
    unlink(path);

    static const uint8_t three_empty[] = {0x00, 0x00, 0x00};
    r = open_bytes(path, three_empty, sizeof three_empty, 16);
    for (int i = 0; i < 3; i++) {
        n = 42;
        cr_assert_eq(cms_pbs_next(r, &d, &n), CMS_PBS_OK);
        cr_assert_eq(n, 0);
        cr_assert_eq(cms_pbs_offset(r), (uint64_t)i);
    }
    cr_assert_eq(cms_pbs_next(r, &d, &n), CMS_PBS_EOF);
    cms_pbs_reader_close(r);
    unlink(path);
}

Test(pbs, varint_encoding_lengths)
{
    uint8_t b[CMS_PBS_VARINT_MAX];
    cr_assert_eq(cms_pbs_varint_encode(0, b), 1);
    cr_assert_eq(b[0], 0);
    cr_assert_eq(cms_pbs_varint_encode(127, b), 1);
    cr_assert_eq(b[0], 0x7F);
    cr_assert_eq(cms_pbs_varint_encode(128, b), 2);
    cr_assert(b[0] == 0x80 && b[1] == 0x01);
    cr_assert_eq(cms_pbs_varint_encode(300, b), 2);
    cr_assert(b[0] == 0xAC && b[1] == 0x02, "300 is AC 02 as in the protobuf docs");
    cr_assert_eq(cms_pbs_varint_encode(UINT64_MAX, b), 10);
    for (int i = 0; i < 9; i++)
        cr_assert_eq(b[i], 0xFF);
    cr_assert_eq(b[9], 0x01);
}

Test(pbs, one_byte_varint)
{
    static const uint8_t s[] = {0x03, 'a', 'b', 'c', 0x01, 'z'};
    char path[64];
    cms_pbs_reader *r = open_bytes(path, s, sizeof s, 16);
    const uint8_t *d;
    size_t n;
    cr_assert_eq(cms_pbs_next(r, &d, &n), CMS_PBS_OK);
    cr_assert(n == 3 && memcmp(d, "abc", 3) == 0);
    cr_assert_eq(cms_pbs_next(r, &d, &n), CMS_PBS_OK);
    cr_assert(n == 1 && d[0] == 'z');
    cr_assert_eq(cms_pbs_offset(r), 4);
    cr_assert_eq(cms_pbs_next(r, &d, &n), CMS_PBS_EOF);
    cms_pbs_reader_close(r);
    unlink(path);
}

Test(pbs, ten_byte_varints)
{
    /* a non-minimal 10-byte encoding of 2: protobuf parsers accept it, so do we */
    static const uint8_t padded[] = {0x82, 0x80, 0x80, 0x80, 0x80, 0x80,
                                     0x80, 0x80, 0x80, 0x00, 'h',  'i'};
    char path[64];
    cms_pbs_reader *r = open_bytes(path, padded, sizeof padded, 16);
    const uint8_t *d;
    size_t n;
    cr_assert_eq(cms_pbs_next(r, &d, &n), CMS_PBS_OK);
    cr_assert(n == 2 && memcmp(d, "hi", 2) == 0);
    cr_assert_eq(cms_pbs_next(r, &d, &n), CMS_PBS_EOF);
    cms_pbs_reader_close(r);
    unlink(path);

    /* the largest value, 2^64-1: well-formed, and far over the limit */
    static const uint8_t max[] = {0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01};
    r = open_bytes(path, max, sizeof max, 1024);
    cr_assert_eq(cms_pbs_next(r, &d, &n), CMS_PBS_ETOOBIG);
    cms_pbs_reader_close(r);
    unlink(path);
}

Test(pbs, bad_varints)
{
    const uint8_t *d;
    size_t n;
    char path[64];
    /* 11 bytes: the 10th still has its continuation bit */
    static const uint8_t eleven[] = {0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
                                     0x80, 0x80, 0x80, 0x80, 0x00};
    cms_pbs_reader *r = open_bytes(path, eleven, sizeof eleven, 1024);
    cr_assert_eq(cms_pbs_next(r, &d, &n), CMS_PBS_EBADVARINT);
    cr_assert_eq(cms_pbs_next(r, &d, &n), CMS_PBS_EBADVARINT, "errors are sticky");
    cms_pbs_reader_close(r);
    unlink(path);

    /* 10 bytes, but the last carries bits above 63 */
    static const uint8_t overflow[] = {0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x02};
    r = open_bytes(path, overflow, sizeof overflow, 1024);
    cr_assert_eq(cms_pbs_next(r, &d, &n), CMS_PBS_EBADVARINT);
    cms_pbs_reader_close(r);
    unlink(path);

    /* after a good record: the offset names the bad one */
    static const uint8_t later[] = {0x01, 'x',  0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
                                    0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x00};
    r = open_bytes(path, later, sizeof later, 1024);
    cr_assert_eq(cms_pbs_next(r, &d, &n), CMS_PBS_OK);
    cr_assert_eq(cms_pbs_next(r, &d, &n), CMS_PBS_EBADVARINT);
    cr_assert_eq(cms_pbs_offset(r), 2);
    cms_pbs_reader_close(r);
    unlink(path);
}

Test(pbs, truncated_length)
{
    static const uint8_t s[] = {0x01, 'a', 0x80, 0x80};
    char path[64];
    cms_pbs_reader *r = open_bytes(path, s, sizeof s, 1 << 20);
    const uint8_t *d;
    size_t n;
    cr_assert_eq(cms_pbs_next(r, &d, &n), CMS_PBS_OK);
    cr_assert_eq(cms_pbs_next(r, &d, &n), CMS_PBS_ETRUNCATED);
    cr_assert_eq(cms_pbs_offset(r), 2);
    cr_assert_eq(cms_pbs_next(r, &d, &n), CMS_PBS_ETRUNCATED);
    cms_pbs_reader_close(r);
    unlink(path);
}

Test(pbs, truncated_body)
{
    static const uint8_t s[] = {0x05, 'a', 'b', 'c'};
    char path[64];
    cms_pbs_reader *r = open_bytes(path, s, sizeof s, 1024);
    const uint8_t *d;
    size_t n;
    cr_assert_eq(cms_pbs_next(r, &d, &n), CMS_PBS_ETRUNCATED);
    cr_assert_eq(cms_pbs_offset(r), 0);
    cms_pbs_reader_close(r);
    unlink(path);

    /* a body that claims more than the buffer holds and than the file has */
    static const uint8_t big[] = {0x80, 0x80, 0x10, 'x'}; /* 262144 */
    r = open_bytes(path, big, sizeof big, 1 << 20);
    cr_assert_eq(cms_pbs_next(r, &d, &n), CMS_PBS_ETRUNCATED);
    cms_pbs_reader_close(r);
    unlink(path);
}

Test(pbs, oversize_is_refused_before_reading_it)
{
    /* claims 2^40 bytes: must fail at once, not try to allocate it */
    static const uint8_t s[] = {0x80, 0x80, 0x80, 0x80, 0x80, 0x20, 'x'};
    char path[64];
    cms_pbs_reader *r = open_bytes(path, s, sizeof s, 1 << 20);
    const uint8_t *d;
    size_t n;
    cr_assert_eq(cms_pbs_next(r, &d, &n), CMS_PBS_ETOOBIG);
    cms_pbs_reader_close(r);
    unlink(path);

    /* exactly the limit passes; one more does not */
    uint8_t exact[1 + 100];
    exact[0] = 100;
    memset(exact + 1, 'q', 100);
    r = open_bytes(path, exact, sizeof exact, 100);
    cr_assert_eq(cms_pbs_next(r, &d, &n), CMS_PBS_OK);
    cr_assert_eq(n, 100);
    cms_pbs_reader_close(r);
    unlink(path);
    r = open_bytes(path, exact, sizeof exact, 99);
    cr_assert_eq(cms_pbs_next(r, &d, &n), CMS_PBS_ETOOBIG);
    cms_pbs_reader_close(r);
    unlink(path);
}

Test(pbs, known_bytes_of_an_envelope_stream)
{
    /* Two records as protobuf's writeDelimitedTo writes them: a message with
     * field 2 (string) = "contract.signed", and one with field 6 (int64) = 150. */
    static const uint8_t s[] = {0x11, 0x12, 0x0F, 'c', 'o', 'n', 't', 'r',  'a',  'c',  't',
                                '.',  's',  'i',  'g', 'n', 'e', 'd', 0x03, 0x30, 0x96, 0x01};
    char path[64];
    cms_pbs_reader *r = open_bytes(path, s, sizeof s, 1024);
    const uint8_t *d;
    size_t n;
    cr_assert_eq(cms_pbs_next(r, &d, &n), CMS_PBS_OK);
    cr_assert_eq(n, 17);
    cr_assert(d[0] == 0x12 && d[1] == 0x0F && memcmp(d + 2, "contract.signed", 15) == 0);
    cr_assert_eq(cms_pbs_next(r, &d, &n), CMS_PBS_OK);
    cr_assert_eq(n, 3);
    cr_assert(d[0] == 0x30 && d[1] == 0x96 && d[2] == 0x01);
    cr_assert_eq(cms_pbs_offset(r), 18);
    cr_assert_eq(cms_pbs_next(r, &d, &n), CMS_PBS_EOF);
    cr_assert_eq(cms_pbs_offset(r), sizeof s);
    cms_pbs_reader_close(r);
    unlink(path);

    /* and our writer produces exactly those bytes */
    char *buf = NULL;
    size_t blen = 0;
    FILE *m = open_memstream(&buf, &blen);
    cr_assert_not_null(m);
    cr_assert_eq(cms_pbs_write(m, s + 1, 17), CMS_PBS_OK);
    cr_assert_eq(cms_pbs_write(m, s + 19, 3), CMS_PBS_OK);
    cr_assert_eq(fclose(m), 0);
    cr_assert_eq(blen, sizeof s);
    cr_assert_eq(memcmp(buf, s, sizeof s), 0);
    free(buf);
}

Test(pbs, reads_a_pipe_in_small_pieces)
{
    /* a pipe delivers records split at arbitrary points */
    int p[2];
    cr_assert_eq(pipe(p), 0);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        close(p[0]);
        uint8_t rec[200];
        for (int i = 0; i < 1000; i++) {
            uint8_t hdr[2] = {0xC8, 0x01}; /* 200 */
            memset(rec, (uint8_t)i, 200);
            if (write(p[1], hdr, 1) != 1 || write(p[1], hdr + 1, 1) != 1 ||
                write(p[1], rec, 77) != 77 || write(p[1], rec + 77, 123) != 123)
                _exit(1);
        }
        _exit(0);
    }
    close(p[1]);
    /* the reader takes "-" as stdin: point stdin at the pipe for this test */
    int saved = dup(STDIN_FILENO);
    cr_assert_geq(saved, 0);
    cr_assert_geq(dup2(p[0], STDIN_FILENO), 0);
    close(p[0]);
    cms_pbs_reader *r = NULL;
    cr_assert_eq(cms_pbs_reader_open("-", 4096, &r), CMS_PBS_OK);
    const uint8_t *d;
    size_t n;
    for (int i = 0; i < 1000; i++) {
        cr_assert_eq(cms_pbs_next(r, &d, &n), CMS_PBS_OK, "record %d", i);
        cr_assert_eq(n, 200);
        cr_assert(d[0] == (uint8_t)i && d[199] == (uint8_t)i);
    }
    cr_assert_eq(cms_pbs_next(r, &d, &n), CMS_PBS_EOF);
    cms_pbs_reader_close(r);
    cr_assert_geq(dup2(saved, STDIN_FILENO), 0);
    close(saved);
    int st = 0;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

Test(pbs, open_errors)
{
    cms_pbs_reader *r = NULL;
    errno = 0;
    cr_assert_eq(cms_pbs_reader_open("/nonexistent/dir/x.pbs", 16, &r), CMS_PBS_EIO);
    cr_assert_eq(errno, ENOENT);
    cr_assert_null(r);
    cr_assert_eq(cms_pbs_reader_open("/tmp", 0, &r), CMS_PBS_EIO, "max_message 0 is refused");
    cms_pbs_reader_close(NULL);
    cr_assert_str_eq(cms_pbs_strerror(CMS_PBS_EOF), "end of stream");
}
