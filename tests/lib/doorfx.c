/* The doors' bad input; see doorfx.h. */
#include "doorfx.h"

#include "cms/v1/command.pb-c.h"
#include "testcmd.h"
#include "testenv.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* The first singular string field of d, or NULL. */
static const ProtobufCFieldDescriptor *first_string(const ProtobufCMessageDescriptor *d)
{
    for (unsigned i = 0; i < d->n_fields; i++)
        if (d->fields[i].type == PROTOBUF_C_TYPE_STRING &&
            d->fields[i].label != PROTOBUF_C_LABEL_REPEATED)
            return &d->fields[i];
    return NULL;
}

/* A varint into p; its length. */
static size_t put_varint(uint8_t *p, uint64_t v)
{
    size_t n = 0;
    do {
        p[n++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
    } while (v);
    return n;
}

/* Field f as wire type 2 holding s[0..len), into p (at least 16 + len). */
static size_t put_string(uint8_t *p, const ProtobufCFieldDescriptor *f, const char *s, size_t len)
{
    size_t n = put_varint(p, (uint64_t)f->id << 3 | 2);
    n += put_varint(p + n, len);
    memcpy(p + n, s, len);
    return n + len;
}

static void expect(natsConnection *nc, const char *subject, const char *key, const uint8_t *body,
                   size_t len, const char *field, const char *what)
{
    Cms__V1__Reply *r = cms_test_command_bytes(nc, subject, key, NULL, body, len);
    cr_assert_eq(r->outcome_case, CMS__V1__REPLY__OUTCOME_ERROR, "%s, %s: an error", subject, what);
    cr_assert_eq(r->error->code, CMS__V1__ERROR_CODE__INVALID_ARGUMENT,
                 "%s, %s: code %d (%s), want INVALID_ARGUMENT", subject, what, r->error->code,
                 r->error->message);
    cr_assert_str_eq(r->error->field, field, "%s, %s: the field at fault (%s)", subject, what,
                     r->error->message);
    cms__v1__reply__free_unpacked(r, NULL);
}

void doorfx_wire(natsConnection *nc, const char *prefix, const char *service, const char *key,
                 const doorfx_verb *verbs, size_t max_request)
{
    uint8_t *big = calloc(1, max_request + 1);
    cr_assert_not_null(big);
    for (const doorfx_verb *v = verbs; v->verb != NULL; v++) {
        char subject[192];
        snprintf(subject, sizeof subject, "%s.%s.%s", prefix, service, v->verb);
        expect(nc, subject, key, big, max_request + 1, "body", "one byte over the limit");
        const ProtobufCFieldDescriptor *f = first_string(v->desc);
        cr_assert_not_null(f, "%s has a string field", v->desc->name);
        uint8_t b[64];
        /* cut short: a length of 10 with 2 bytes after it */
        size_t n = put_varint(b, (uint64_t)f->id << 3 | 2);
        b[n++] = 10;
        b[n++] = 'a';
        b[n++] = 'b';
        expect(nc, subject, key, b, n, "body", "cut short");
        /* the string field as a varint */
        n = put_varint(b, (uint64_t)f->id << 3 | 0);
        b[n++] = 1;
        expect(nc, subject, key, b, n, "body", "the wrong wire type");
        n = put_string(b, f, "a\0b", 3);
        expect(nc, subject, key, b, n, f->name, "a NUL in a string");
        n = put_string(b, f, "\xc3\x28", 2);
        expect(nc, subject, key, b, n, f->name, "invalid UTF-8 in a string");
    }
    free(big);
}

void doorfx_slowloris(int port, int n, double within_ms)
{
    int *fds = calloc((size_t)n, sizeof *fds);
    cr_assert_not_null(fds);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    static const char slow[] = "GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: ";
    for (int i = 0; i < n; i++) {
        fds[i] = socket(AF_INET, SOCK_STREAM, 0);
        cr_assert_geq(fds[i], 0);
        cr_assert_eq(connect(fds[i], (struct sockaddr *)&sa, sizeof sa), 0, "connection %d", i);
        if (i % 2 == 1)
            cr_assert_eq(write(fds[i], slow, sizeof slow - 1), (ssize_t)(sizeof slow - 1));
    }
    static const char *const probes[] = {"/healthz", "/readyz"};
    for (int k = 0; k < 2; k++) {
        double t0 = cms_test_now_ms();
        char body[256];
        int status = cms_test_http_get(port, probes[k], body, sizeof body);
        double took = cms_test_now_ms() - t0;
        cr_assert_eq(status, 200, "%s with %d idle and slow connections open: %d (%s)", probes[k],
                     n, status, status > 0 ? body : "no answer");
        cr_assert_lt(took, within_ms, "%s answered after %.0f ms", probes[k], took);
    }
    for (int i = 0; i < n; i++)
        close(fds[i]);
    free(fds);
}
