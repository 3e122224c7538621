/* libFuzzer target for common/json, the renderer and the checker, each
 * against jansson:
 *
 *   - arbitrary bytes are unpacked as a cms.test.Envelope
 *     (tests/common/proto/test_types.proto) and rendered, whole and as its
 *     body, into a roomy and a tiny buffer. A rendering that succeeds is
 *     one JSON object jansson reads, nested at most CMS_JSON_MAX_DEPTH
 *     levels, that cms_json_check_object accepts too, unless it repeats a
 *     key (json.h: a map key repeated on the wire is repeated in the
 *     object, which the checker refuses by design: jansson with
 *     JSON_REJECT_DUPLICATES must then refuse it as well). A failed one
 *     leaves the buffer as it was.
 *   - the same bytes, as text, are a differential of cms_json_check_object
 *     (the allocation-free scanner, with jansson behind it where it is
 *     unsure) against a reference made here of jansson alone: accepted iff
 *     the text holds no raw NUL (json.c refuses one before parsing; jansson
 *     would stop there), jansson with JSON_REJECT_DUPLICATES |
 *     JSON_DECODE_INT_AS_REAL reads one object from it (jansson refuses
 *     invalid UTF-8, "\u0000", lone surrogates and reals beyond double
 *     range, as json.h promises), and that object nests at most
 *     CMS_JSON_MAX_DEPTH levels. cms_json_check_object_reference must
 *     agree too. Accepted text is appended unchanged; into a buffer too
 *     small it is ETOOBIG, whatever the text, and leaves the buffer empty.
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

/* levels of nesting of v: 0 for a scalar, 1 for a flat object or array */
static int depth_of(json_t *v)
{
    int most = 0;
    if (json_is_object(v)) {
        const char *k;
        json_t *m;
        json_object_foreach(v, k, m)
        {
            int d = depth_of(m);
            most = d > most ? d : most;
        }
        return most + 1;
    }
    if (json_is_array(v)) {
        size_t i;
        json_t *m;
        json_array_foreach(v, i, m)
        {
            int d = depth_of(m);
            most = d > most ? d : most;
        }
        return most + 1;
    }
    return 0;
}

/* the checker's verdict, from jansson alone (see the top) */
static bool reference_accepts(const char *text, size_t len)
{
    if (len == 0 || memchr(text, '\0', len) != NULL)
        return false;
    json_t *j = json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_DECODE_INT_AS_REAL, NULL);
    bool ok = json_is_object(j) && depth_of(j) <= CMS_JSON_MAX_DEPTH;
    json_decref(j);
    return ok;
}

static void rendered(const cms_json_buf *b)
{
    /* as check_object reads numbers: integers beyond 64 bits are fine in jsonb */
    json_t *j = json_loadb(b->data, b->len, JSON_DECODE_INT_AS_REAL, NULL);
    if (j == NULL || !json_is_object(j) || b->data[b->len] != '\0' ||
        depth_of(j) > CMS_JSON_MAX_DEPTH)
        abort();
    json_decref(j);
    cms_json_buf c;
    cms_json_buf_init(&c, b->len);
    if (cms_json_check_object(&c, b->data, b->len) != CMS_JSON_OK &&
        reference_accepts(b->data, b->len))
        abort(); /* refused for something but a repeated key */
    cms_json_buf_free(&c);
}

static void render_into(size_t max, const ProtobufCMessage *env)
{
    cms_json_buf b;
    cms_json_buf_init(&b, max);
    for (int body = 0; body < 2; body++) {
        cms_json_err err =
            body ? cms_json_render_body(&b, env, 16) : cms_json_render_message(&b, env);
        if (err == CMS_JSON_OK)
            rendered(&b);
        else if (b.len != 0 || err == CMS_JSON_ENOMEM)
            abort();
        cms_json_buf_reset(&b);
    }
    cms_json_buf_free(&b);
}

static void check_into(size_t max, const uint8_t *data, size_t size, bool want)
{
    cms_json_buf b;
    cms_json_buf_init(&b, max);
    cms_json_err err = cms_json_check_object(&b, (const char *)data, size);
    cms_json_err ref = cms_json_check_object_reference(&b, (const char *)data, size);
    if (err != ref)
        abort();
    if (size > max) {
        if (err != CMS_JSON_ETOOBIG || b.len != 0)
            abort();
    } else if (err == CMS_JSON_OK) {
        if (!want || b.len != 2 * size || memcmp(b.data, data, size) != 0 ||
            memcmp(b.data + size, data, size) != 0 || b.data[b.len] != '\0')
            abort();
    } else if (err != CMS_JSON_EINVAL || want || b.len != 0) {
        abort();
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
    bool want = reference_accepts((const char *)data, size);
    check_into(2 * size + 1, data, size, want); /* room for both verdicts' copies */
    if (size > 1)
        check_into(size / 2, data, size, want);
    return 0;
}
