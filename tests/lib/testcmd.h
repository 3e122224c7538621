/* Blocking commands, as a client sends them: the body packed from a
 * protobuf message, "Authorization: Bearer <key>" and Cms-Request-Id
 * headers when given, the cms.v1.Reply back; one at a time, or many at
 * once. Test code: failures to send or decode are Criterion assertions. */
#ifndef CMS_TESTCMD_H
#define CMS_TESTCMD_H

#include "cms/v1/command.pb-c.h"

#include <nats/nats.h>
#include <protobuf-c/protobuf-c.h>

/* key, request_id: NULL for none. Free the reply with
 * cms__v1__reply__free_unpacked. */
Cms__V1__Reply *cms_test_command(natsConnection *nc, const char *subject, const char *key,
                                 const char *request_id, const ProtobufCMessage *body);

/* The same with a body of raw bytes (for bodies that are not messages). */
Cms__V1__Reply *cms_test_command_bytes(natsConnection *nc, const char *subject, const char *key,
                                       const char *request_id, const void *data, size_t len);

/* n commands, bodies[i] the i-th, sent at once before any reply is read;
 * out[i] is the reply to the i-th. */
void cms_test_commands_each(natsConnection *nc, const char *subject, const char *key,
                            const char *request_id, const ProtobufCMessage *const *bodies, int n,
                            Cms__V1__Reply **out);
/* n copies of one command, as cms_test_commands_each. */
void cms_test_commands(natsConnection *nc, const char *subject, const char *key,
                       const char *request_id, const ProtobufCMessage *body, int n,
                       Cms__V1__Reply **out);

/* The reply's error code, 0 for a result. */
int cms_test_reply_code(const Cms__V1__Reply *r);

#endif
