/* libFuzzer target for audit/jsonb (the text PostgreSQL prints for a jsonb
 * value): any bytes are converted, and also any JSON object the audit
 * service would accept (cms_json_check_object). Nothing may crash;
 * converting an output again gives it back byte for byte (the printed form
 * is a fixed point, as it is for PostgreSQL); an object check_object
 * accepts prints as an object jansson reads, and converts whenever its
 * numbers are within numeric's limits. */
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "audit/jsonb.h"
#include "json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static audit_jsonb *conv, *again;

/* valid: the input is valid JSON (check_object said so); raw bytes are
 * not, and the converter does not check UTF-8 (its callers do): then only
 * the fixed point holds */
static void convert_checked(const char *in, size_t len, bool valid, bool must)
{
    const char *out, *out2;
    size_t n, n2;
    if (!audit_jsonb_text(conv, in, len, &out, &n)) {
        if (must)
            abort();
        return;
    }
    if (out[n] != '\0' || strlen(out) != n)
        abort();
    if (valid) {
        json_t *j = json_loadb(out, n, JSON_DECODE_INT_AS_REAL, NULL);
        if (j == NULL || !json_is_object(j))
            abort();
        json_decref(j);
    }
    if (!audit_jsonb_text(again, out, n, &out2, &n2) || n2 != n || memcmp(out, out2, n) != 0)
        abort();
}

/* an e or E after a digit, anywhere (in a string too: then only the must
 * is lost) */
static bool has_exponent(const uint8_t *d, size_t n)
{
    for (size_t i = 1; i < n; i++)
        if ((d[i] == 'e' || d[i] == 'E') && d[i - 1] >= '0' && d[i - 1] <= '9')
            return true;
    return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (conv == NULL && ((conv = audit_jsonb_new()) == NULL || (again = audit_jsonb_new()) == NULL))
        abort();
    convert_checked((const char *)data, size, false, false);
    cms_json_buf b;
    cms_json_buf_init(&b, 1 << 20);
    /* check_object takes any number a double can hold, numeric not every
     * one (1e-99999 has too many digits after its point): a must only for a
     * text too short for more digits than numeric holds, without an
     * exponent */
    if (cms_json_check_object(&b, (const char *)data, size) == CMS_JSON_OK)
        convert_checked(b.data, b.len, true, size < 16000 && !has_exponent(data, size));
    cms_json_buf_free(&b);
    return 0;
}
