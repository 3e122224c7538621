/* Blocking commands for tests; see testcmd.h. */
#include "testcmd.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A command message: body, the caller's key and request_id when given. */
static natsMsg *command_msg(const char *subject, const char *reply, const char *key,
                            const char *request_id, const void *data, size_t len)
{
    natsMsg *m = NULL;
    cr_assert_eq(natsMsg_Create(&m, subject, reply, (const char *)data, (int)len), NATS_OK);
    if (key) {
        char auth[160];
        snprintf(auth, sizeof auth, "Bearer %s", key);
        cr_assert_eq(natsMsgHeader_Set(m, "Authorization", auth), NATS_OK);
    }
    if (request_id)
        cr_assert_eq(natsMsgHeader_Set(m, "Cms-Request-Id", request_id), NATS_OK);
    return m;
}

static Cms__V1__Reply *unpack_reply(natsMsg *rep)
{
    Cms__V1__Reply *r = cms__v1__reply__unpack(NULL, (size_t)natsMsg_GetDataLength(rep),
                                               (const uint8_t *)natsMsg_GetData(rep));
    cr_assert_not_null(r, "a reply is always a cms.v1.Reply");
    return r;
}

static uint8_t *pack(const ProtobufCMessage *body, size_t *len)
{
    *len = protobuf_c_message_get_packed_size(body);
    uint8_t *buf = malloc(*len + 1);
    cr_assert_not_null(buf);
    protobuf_c_message_pack(body, buf);
    return buf;
}

Cms__V1__Reply *cms_test_command_bytes(natsConnection *nc, const char *subject, const char *key,
                                       const char *request_id, const void *data, size_t len)
{
    natsMsg *m = command_msg(subject, NULL, key, request_id, data, len), *rep = NULL;
    natsStatus s = natsConnection_RequestMsg(&rep, nc, m, 10000);
    natsMsg_Destroy(m);
    cr_assert_eq(s, NATS_OK, "%s: %s", subject, natsStatus_GetText(s));
    Cms__V1__Reply *r = unpack_reply(rep);
    natsMsg_Destroy(rep);
    return r;
}

Cms__V1__Reply *cms_test_command(natsConnection *nc, const char *subject, const char *key,
                                 const char *request_id, const ProtobufCMessage *body)
{
    size_t len;
    uint8_t *buf = pack(body, &len);
    Cms__V1__Reply *r = cms_test_command_bytes(nc, subject, key, request_id, buf, len);
    free(buf);
    return r;
}

void cms_test_commands_each(natsConnection *nc, const char *subject, const char *key,
                            const char *request_id, const ProtobufCMessage *const *bodies, int n,
                            Cms__V1__Reply **out)
{
    char inbox[96], reply[128];
    natsInbox *ib = NULL;
    natsSubscription *sub = NULL;
    cr_assert_eq(natsInbox_Create(&ib), NATS_OK);
    snprintf(inbox, sizeof inbox, "%s", (const char *)ib);
    natsInbox_Destroy(ib);
    snprintf(reply, sizeof reply, "%s.*", inbox);
    cr_assert_eq(natsConnection_SubscribeSync(&sub, nc, reply), NATS_OK);
    natsSubscription_SetPendingLimits(sub, -1, -1);
    for (int i = 0; i < n; i++) {
        size_t len;
        uint8_t *buf = pack(bodies[i], &len);
        snprintf(reply, sizeof reply, "%s.%d", inbox, i);
        natsMsg *m = command_msg(subject, reply, key, request_id, buf, len);
        cr_assert_eq(natsConnection_PublishMsg(nc, m), NATS_OK);
        natsMsg_Destroy(m);
        free(buf);
        out[i] = NULL;
    }
    cr_assert_eq(natsConnection_Flush(nc), NATS_OK);
    for (int got = 0; got < n; got++) {
        natsMsg *rep = NULL;
        natsStatus s = natsSubscription_NextMsg(&rep, sub, 20000);
        cr_assert_eq(s, NATS_OK, "%d of %d replies to %s", got, n, subject);
        int i = atoi(strrchr(natsMsg_GetSubject(rep), '.') + 1);
        cr_assert(i >= 0 && i < n && out[i] == NULL, "one reply per request");
        out[i] = unpack_reply(rep);
        natsMsg_Destroy(rep);
    }
    natsSubscription_Destroy(sub);
}

void cms_test_commands(natsConnection *nc, const char *subject, const char *key,
                       const char *request_id, const ProtobufCMessage *body, int n,
                       Cms__V1__Reply **out)
{
    const ProtobufCMessage **bodies = calloc((size_t)n, sizeof *bodies);
    cr_assert_not_null(bodies);
    for (int i = 0; i < n; i++)
        bodies[i] = body;
    cms_test_commands_each(nc, subject, key, request_id, bodies, n, out);
    free(bodies);
}

int cms_test_reply_code(const Cms__V1__Reply *r)
{
    if (r->outcome_case != CMS__V1__REPLY__OUTCOME_ERROR)
        return 0;
    cr_assert_neq(r->error->code, 0, "an error reply has a code");
    return (int)r->error->code;
}
