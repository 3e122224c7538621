/* What the command targets (tests/fuzz/<service>_cmd_fuzz.c) share: the
 * input's split into a verb and a body, the body decoded as cms_cmd decodes
 * it (common/cmd.c: protobuf_c_message_unpack through a bounded arena, with
 * cmd.h's default limits), and the checks every refusal must pass.
 *
 * Input: byte 0 picks the verb (modulo the service's verbs; the bits above
 * are the target's flags, e.g. the caller's roles), the rest is the body. */
#ifndef CMS_FUZZ_CMDFUZZ_H
#define CMS_FUZZ_CMDFUZZ_H

#include <jansson.h>
#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pbarena.h"

/* cms_cmd_options' defaults: 64 KiB on the wire, four times that decoded */
#define FZ_REQUEST_MAX (64 * 1024)
#define FZ_DECODED_MAX (4 * FZ_REQUEST_MAX)

typedef struct fz_verb {
    const char *name;
    const ProtobufCMessageDescriptor *desc;
} fz_verb;

/* The body as cms_cmd's after_auth decodes it, NULL where it answers
 * INVALID_ARGUMENT "body". Valid until the next call. */
static inline const ProtobufCMessage *fz_decode(const ProtobufCMessageDescriptor *d,
                                                const uint8_t *body, size_t len)
{
    static cms_pbarena *arena;
    if (arena == NULL && cms_pbarena_create(4096, FZ_DECODED_MAX, &arena) != 0)
        abort();
    cms_pbarena_reset(arena);
    if (len > FZ_REQUEST_MAX)
        return NULL; /* cms_cmd refuses it before decoding */
    return protobuf_c_message_unpack(d, cms_pbarena_allocator(arena), len, body);
}

/* A refusal: a message that says something, and a field (when the check
 * names one) that is a field of the request d, or a JSON path into one:
 * "terms..." into terms_json, "config..." into config_json,
 * "metadata_json.roles" into metadata_json. */
static inline void fz_refusal(const ProtobufCMessageDescriptor *d, const char *field,
                              bool field_required, const char *msg)
{
    if (msg == NULL || msg[0] == '\0' || strlen(msg) > 1024)
        abort();
    if (field == NULL || field[0] == '\0') {
        if (field_required)
            abort();
        return;
    }
    char root[64];
    size_t n = strcspn(field, ".[");
    if (n == 0 || n >= sizeof root)
        abort();
    memcpy(root, field, n);
    root[n] = '\0';
    if (strcmp(root, "terms") == 0 || strcmp(root, "config") == 0)
        memcpy(root + n, "_json", sizeof "_json");
    if (protobuf_c_message_descriptor_get_field_by_name(d, root) == NULL)
        abort();
}

/* s is valid UTF-8 (jansson's validator, as the services use it) */
static inline bool fz_utf8(const char *s)
{
    json_t *j = json_string(s);
    bool ok = j != NULL;
    json_decref(j);
    return ok;
}

/* s is one JSON object jansson reads (as the services read it) */
static inline bool fz_json_object(const char *s)
{
    json_t *j = json_loads(s, JSON_REJECT_DUPLICATES, NULL);
    bool ok = json_is_object(j);
    json_decref(j);
    return ok;
}

/* The entry point of a target whose verbs[] (fz_verb), NVERBS, verdict
 * (ok, field_required, e.field and e.msg as strings) and
 * check(verb, body, &verdict) are the plain kind: decode, check, refuse
 * with a typed field, and give the same verdict again. */
#define FZ_CMD_TARGET                                                                              \
    int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)                                   \
    {                                                                                              \
        if (size < 1)                                                                              \
            return 0;                                                                              \
        int verb = data[0] % NVERBS;                                                               \
        const ProtobufCMessage *body = fz_decode(verbs[verb].desc, data + 1, size - 1);            \
        if (body == NULL)                                                                          \
            return 0;                                                                              \
        verdict v, again;                                                                          \
        if (!check(verb, body, &v))                                                                \
            fz_refusal(verbs[verb].desc, v.e.field, v.field_required, v.e.msg);                    \
        check(verb, body, &again);                                                                 \
        if (again.ok != v.ok || strcmp(again.e.field, v.e.field) != 0 ||                           \
            strcmp(again.e.msg, v.e.msg) != 0)                                                     \
            abort();                                                                               \
        return 0;                                                                                  \
    }

#endif
