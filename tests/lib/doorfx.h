/* Bad input at a service's doors, the same for every service: bytes on
 * each command subject that are not its request (too large, cut short, a
 * string field sent with the wrong wire type, a NUL or invalid UTF-8 in a
 * string field), and hundreds of idle and slow HTTP connections while the
 * probes must still answer. Blocking and asserting (Criterion): test code
 * only. */
#ifndef CMS_DOORFX_H
#define CMS_DOORFX_H

#include <nats/nats.h>
#include <protobuf-c/protobuf-c.h>
#include <stddef.h>

typedef struct doorfx_verb {
    const char *verb;
    const ProtobufCMessageDescriptor *desc; /* its request message */
} doorfx_verb;

/* For every verb of "<prefix>.<service>.<verb>" (verbs ends with a NULL
 * verb), as the caller with API key key: a body of max_request + 1 bytes,
 * a body cut short inside its first string field, that field sent as a
 * varint, and that field holding "a\0b" and "\xc3\x28". Asserts each is
 * answered INVALID_ARGUMENT: field "body" for the first three, the string
 * field's own name for the last two. */
void doorfx_wire(natsConnection *nc, const char *prefix, const char *service, const char *key,
                 const doorfx_verb *verbs, size_t max_request);

/* n connections to 127.0.0.1:port that never complete a request (every
 * other one sends nothing, the rest a request head that never ends), then
 * GET /healthz and GET /readyz on new connections: asserts each is answered
 * 200 within within_ms (less than the server's idle timeout: the slow ones
 * must give way, not time out). Closes the n connections. */
void doorfx_slowloris(int port, int n, double within_ms);

#endif
