/* libFuzzer target for common/jcs (RFC 8785, the bytes contracts are
 * signed over): any bytes are canonicalised; what is accepted canonicalises
 * to itself again, and the same value written another way (jansson's dump
 * of it, keys sorted and not, indented or compact) canonicalises alike.
 * Nothing may crash or leak. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "jcs.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void same_canonical(const char *text, const char *want, size_t wantlen)
{
    char *out = NULL;
    size_t n = 0;
    if (cms_jcs_canonicalize(text, strlen(text), &out, &n) != CMS_JCS_OK || n != wantlen ||
        memcmp(out, want, n) != 0)
        abort();
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *out = NULL;
    size_t n = 0;
    if (cms_jcs_canonicalize((const char *)data, size, &out, &n) != CMS_JCS_OK) {
        if (out != NULL || n != 0)
            abort();
        return 0;
    }
    if (out[n] != '\0')
        abort();
    same_canonical(out, out, n); /* a fixed point */
    json_t *v = NULL;
    if (cms_jcs_parse(out, n, &v) != CMS_JCS_OK)
        abort();
    static const size_t flags[] = {JSON_ENCODE_ANY | JSON_COMPACT,
                                   JSON_ENCODE_ANY | JSON_SORT_KEYS | JSON_INDENT(2),
                                   JSON_ENCODE_ANY | JSON_INDENT(1) | JSON_ENSURE_ASCII};
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++) {
        char *other = json_dumps(v, flags[i] | JSON_REAL_PRECISION(17));
        if (other == NULL)
            abort();
        same_canonical(other, out, n);
        free(other);
    }
    json_decref(v);
    free(out);
    return 0;
}
