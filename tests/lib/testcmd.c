/* Blocking commands for tests; see testcmd.h. */
#include "testcmd.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>

Cms__V1__Reply *cms_test_command(natsConnection *nc, const char *subject, const char *key,
                                 const char *request_id, const ProtobufCMessage *body)
{
    size_t len = protobuf_c_message_get_packed_size(body);
    uint8_t *buf = malloc(len + 1);
    cr_assert_not_null(buf);
    protobuf_c_message_pack(body, buf);
    natsMsg *m = NULL, *rep = NULL;
    cr_assert_eq(natsMsg_Create(&m, subject, NULL, (const char *)buf, (int)len), NATS_OK);
    free(buf);
    if (key) {
        char auth[160];
        snprintf(auth, sizeof auth, "Bearer %s", key);
        cr_assert_eq(natsMsgHeader_Set(m, "Authorization", auth), NATS_OK);
    }
    if (request_id)
        cr_assert_eq(natsMsgHeader_Set(m, "Cms-Request-Id", request_id), NATS_OK);
    natsStatus s = natsConnection_RequestMsg(&rep, nc, m, 10000);
    natsMsg_Destroy(m);
    cr_assert_eq(s, NATS_OK, "%s: %s", subject, natsStatus_GetText(s));
    Cms__V1__Reply *r = cms__v1__reply__unpack(NULL, (size_t)natsMsg_GetDataLength(rep),
                                               (const uint8_t *)natsMsg_GetData(rep));
    natsMsg_Destroy(rep);
    cr_assert_not_null(r, "a reply is always a cms.v1.Reply");
    return r;
}

int cms_test_reply_code(const Cms__V1__Reply *r)
{
    if (r->outcome_case != CMS__V1__REPLY__OUTCOME_ERROR)
        return 0;
    cr_assert_neq(r->error->code, 0, "an error reply has a code");
    return (int)r->error->code;
}
