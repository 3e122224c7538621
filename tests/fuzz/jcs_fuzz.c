/* libFuzzer target for common/jcs (RFC 8785, the bytes contracts are
 * signed over): any bytes are canonicalised; what is accepted canonicalises
 * to itself again, and the same value written another way canonicalises
 * alike: jansson's dumps of it (compact, indented, ASCII-escaped) and a
 * writer of our own that puts every object's members in another order
 * (reversed, and rotated by half) with jansson's separators. Refused input
 * leaves no output. Nothing may crash or leak. */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
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

/* v as JSON text into f, each object's members in another order than
 * jansson keeps them in (the canonical one, for a value parsed from
 * canonical text): reversed (rotate 0) or rotated by half (rotate 1) */
static void write_reordered(FILE *f, json_t *v, int rotate)
{
    if (json_is_object(v)) {
        size_t n = json_object_size(v), i = 0;
        const char **keys = calloc(n ? n : 1, sizeof *keys);
        const char *k;
        json_t *m;
        if (keys == NULL)
            abort();
        json_object_foreach(v, k, m) keys[i++] = k;
        fputc('{', f);
        for (i = 0; i < n; i++) {
            size_t at = rotate ? (i + n / 2) % n : n - 1 - i;
            json_t *key = json_string(keys[at]);
            char *kt = key ? json_dumps(key, JSON_ENCODE_ANY) : NULL;
            if (kt == NULL)
                abort();
            fprintf(f, "%s%s: ", i ? ", " : "", kt);
            free(kt);
            json_decref(key);
            write_reordered(f, json_object_get(v, keys[at]), rotate);
        }
        fputc('}', f);
        free(keys);
    } else if (json_is_array(v)) {
        fputc('[', f);
        for (size_t i = 0; i < json_array_size(v); i++) {
            fputs(i ? ", " : "", f);
            write_reordered(f, json_array_get(v, i), rotate);
        }
        fputc(']', f);
    } else {
        char *t = json_dumps(v, JSON_ENCODE_ANY | JSON_REAL_PRECISION(17));
        if (t == NULL)
            abort();
        fputs(t, f);
        free(t);
    }
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
    for (int rotate = 0; rotate < 2; rotate++) {
        char *other = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&other, &len);
        if (f == NULL)
            abort();
        write_reordered(f, v, rotate);
        if (fclose(f) != 0)
            abort();
        same_canonical(other, out, n);
        free(other);
    }
    json_decref(v);
    free(out);
    return 0;
}
