/* One blocking command, as a client sends it: the body packed from a
 * protobuf message, "Authorization: Bearer <key>" and Cms-Request-Id
 * headers when given, the cms.v1.Reply back. Test code: failures to send
 * or decode are Criterion assertions. */
#ifndef CMS_TESTCMD_H
#define CMS_TESTCMD_H

#include "cms/v1/command.pb-c.h"

#include <nats/nats.h>
#include <protobuf-c/protobuf-c.h>

/* key, request_id: NULL for none. Free the reply with
 * cms__v1__reply__free_unpacked. */
Cms__V1__Reply *cms_test_command(natsConnection *nc, const char *subject, const char *key,
                                 const char *request_id, const ProtobufCMessage *body);

/* The reply's error code, 0 for a result. */
int cms_test_reply_code(const Cms__V1__Reply *r);

#endif
