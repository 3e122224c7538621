/* libFuzzer target for common/json: arbitrary bytes are unpacked as a
 * cms.test.Envelope (tests/common/proto/test_types.proto) and rendered, whole and
 * as its body, into a roomy and a tiny buffer; the same bytes are also
 * offered to cms_json_check_object. Every rendering that succeeds must parse
 * as one JSON object, a failed one must leave the buffer as it was, and text
 * that check_object accepts must parse as an object too.
 *
 *   tests/fuzz/run json 600      (builds build/fuzz with clang; see there)
 */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "test_types.pb-c.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void must_parse(const cms_json_buf *b)
{
    /* as check_object reads numbers: integers beyond 64 bits are fine in jsonb */
    json_t *j = json_loadb(b->data, b->len, JSON_DECODE_INT_AS_REAL, NULL);
    if (j == NULL || !json_is_object(j) || b->data[b->len] != '\0')
        abort();
    json_decref(j);
}

static void render_into(size_t max, const ProtobufCMessage *env)
{
    cms_json_buf b;
    cms_json_buf_init(&b, max);
    for (int body = 0; body < 2; body++) {
        cms_json_err err =
            body ? cms_json_render_body(&b, env, 16) : cms_json_render_message(&b, env);
        if (err == CMS_JSON_OK)
            must_parse(&b);
        else if (b.len != 0 || err == CMS_JSON_ENOMEM)
            abort();
        cms_json_buf_reset(&b);
    }
    cms_json_buf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    Cms__Test__Envelope *env = cms__test__envelope__unpack(NULL, size, data);
    if (env) {
        render_into(1 << 20, &env->base);
        render_into(64, &env->base);
        cms__test__envelope__free_unpacked(env, NULL);
    }

    cms_json_buf b;
    cms_json_buf_init(&b, 1 << 20);
    if (cms_json_check_object(&b, (const char *)data, size) == CMS_JSON_OK) {
        if (b.len != size || memcmp(b.data, data, size) != 0)
            abort();
        must_parse(&b);
    } else if (b.len != 0) {
        abort();
    }
    cms_json_buf_free(&b);
    return 0;
}
