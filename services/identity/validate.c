/* Input checks of cms-identity; see validate.h. */
#include "identity/validate.h"

#include "json.h"
#include "utf8.h"
#include "uuid.h"

#include <jansson.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define MAX_ROLES 8
#define ROLE_MAX 31

static bool fail(idv_err *e, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static bool fail(idv_err *e, const char *field, const char *fmt, ...)
{
    va_list ap;
    e->field = field;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    return false;
}

bool idv_name(const char *s, const char *field, idv_err *e)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0)
        return fail(e, field, "%s is empty", field);
    if (n > IDV_NAME_MAX)
        return fail(e, field, "%s is %zu bytes long; at most %d", field, n, IDV_NAME_MAX);
    if (!cms_utf8_valid(s, n))
        return fail(e, field, "%s is not valid UTF-8", field);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        /* C0, DEL, and C1 (U+0080..U+009F, UTF-8 C2 80..C2 9F) */
        if (c < 0x20 || c == 0x7f ||
            (c == 0xc2 && i + 1 < n && (unsigned char)s[i + 1] >= 0x80 &&
             (unsigned char)s[i + 1] <= 0x9f))
            return fail(e, field, "%s contains a control character", field);
    }
    return true;
}

static const char *const TYPES[] = {"user", "machine", "enclave"};
static const char *const STATUSES[] = {"active", "inactive", "suspended"};
static const char *const CRED_TYPES[] = {"api_key", "public_key", "attestation"};

static int lookup(const char *s, const char *const *names, int n)
{
    for (int i = 0; s && i < n; i++)
        if (strcmp(s, names[i]) == 0)
            return i;
    return -1;
}

bool idv_type_parse(const char *s, idv_type *out, idv_err *e)
{
    int i = lookup(s, TYPES, 3);
    if (i < 0)
        return fail(e, "type", "type must be user, machine or enclave");
    *out = (idv_type)i;
    return true;
}

bool idv_status_parse(const char *s, const char *field, idv_status *out, idv_err *e)
{
    int i = lookup(s, STATUSES, 3);
    if (i < 0)
        return fail(e, field, "%s must be active, inactive or suspended", field);
    *out = (idv_status)i;
    return true;
}

bool idv_cred_type_parse(const char *s, idv_cred_type *out, idv_err *e)
{
    int i = lookup(s, CRED_TYPES, 3);
    if (i < 0)
        return fail(e, "type", "type must be api_key, public_key or attestation");
    *out = (idv_cred_type)i;
    return true;
}

const char *idv_type_name(idv_type t)
{
    return TYPES[t];
}

const char *idv_status_name(idv_status s)
{
    return STATUSES[s];
}

const char *idv_cred_type_name(idv_cred_type t)
{
    return CRED_TYPES[t];
}

bool idv_uuid(const char *s, const char *field, idv_err *e)
{
    cms_uuid u;
    if (s == NULL || *s == '\0')
        return fail(e, field, "%s is required", field);
    if (!cms_uuid_parse(s, strlen(s), &u))
        return fail(e, field, "%s is not a UUID", field);
    return true;
}

static bool valid_role(const char *r, size_t n)
{
    if (n == 0 || n > ROLE_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((r[i] >= 'a' && r[i] <= 'z') || (r[i] >= '0' && r[i] <= '9') || r[i] == '_' ||
              r[i] == '-'))
            return false;
    return true;
}

bool idv_metadata(const char *s, const char *field, const char **out, idv_err *e)
{
    size_t n = s ? strlen(s) : 0;
    bool ok = false;
    json_t *j = NULL;
    if (n == 0) {
        *out = "{}";
        return true;
    }
    if (n > IDV_METADATA_MAX)
        return fail(e, field, "%s is %zu bytes; at most %d", field, n, IDV_METADATA_MAX);
    json_error_t err;
    /* jansson refuses \u0000 (as jsonb does) and invalid UTF-8 */
    j = json_loadb(s, n, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &err);
    if (j == NULL) {
        fail(e, field, "%s is not valid JSON: %.100s (at byte %d)", field, err.text, err.position);
        goto out;
    }
    if (!json_is_object(j)) {
        fail(e, field, "%s must be a JSON object", field);
        goto out;
    }
    size_t at;
    if (cms_json_numeric_overflow(s, n, &at)) {
        fail(e, field, "%s holds a number with more than %d digits after the point (at byte %zu)",
             field, CMS_JSON_NUMERIC_SCALE_MAX, at);
        goto out;
    }
    json_t *roles = json_object_get(j, "roles");
    if (roles) {
        if (!json_is_array(roles) || json_array_size(roles) > MAX_ROLES) {
            fail(e, field, "%s.roles must be an array of at most %d role names", field, MAX_ROLES);
            goto out;
        }
        for (size_t i = 0; i < json_array_size(roles); i++) {
            json_t *r = json_array_get(roles, i);
            if (!json_is_string(r) || !valid_role(json_string_value(r), json_string_length(r))) {
                fail(e, field, "%s.roles[%zu] must be a name of 1 to %d characters [a-z0-9_-]",
                     field, i, ROLE_MAX);
                goto out;
            }
            for (size_t k = 0; k < i; k++)
                if (json_equal(r, json_array_get(roles, k))) {
                    fail(e, field, "%s.roles names %s twice", field, json_string_value(r));
                    goto out;
                }
        }
    }
    *out = s;
    ok = true;
out:
    json_decref(j);
    return ok;
}

bool idv_text(const char *s, const char *field, size_t max, idv_err *e)
{
    size_t n = s ? strlen(s) : 0;
    if (n > max)
        return fail(e, field, "%s is %zu bytes; at most %zu", field, n, max);
    if (n && !cms_utf8_valid(s, n))
        return fail(e, field, "%s is not valid UTF-8", field);
    return true;
}

bool idv_public_key(const char *s, uint8_t out[IDV_PUBLIC_KEY_BYTES], idv_err *e)
{
    uint8_t k[IDV_PUBLIC_KEY_BYTES + 1];
    size_t len = 0;
    const char *end = NULL;
    size_t n = s ? strlen(s) : 0;
    if (n == 0)
        return fail(e, "public_key", "public_key is required for a public_key credential");
    if (sodium_base642bin(k, sizeof k, s, n, NULL, &len, &end, sodium_base64_VARIANT_ORIGINAL) !=
            0 ||
        end != s + n)
        return fail(e, "public_key", "public_key is not standard base64");
    if (len != IDV_PUBLIC_KEY_BYTES)
        return fail(e, "public_key", "public_key is %zu bytes; an Ed25519 key is %d", len,
                    IDV_PUBLIC_KEY_BYTES);
    /* libsodium 1.0.18 also decodes every byte above 0x7f as if it were
     * '/': only the one spelling of the key is its text (the credential
     * stores the text) */
    char again[sodium_base64_ENCODED_LEN(IDV_PUBLIC_KEY_BYTES, sodium_base64_VARIANT_ORIGINAL)];
    sodium_bin2base64(again, sizeof again, k, IDV_PUBLIC_KEY_BYTES, sodium_base64_VARIANT_ORIGINAL);
    if (strcmp(again, s) != 0)
        return fail(e, "public_key", "public_key is not standard base64");
    if (!crypto_core_ed25519_is_valid_point(k))
        return fail(e, "public_key", "public_key is not a valid Ed25519 public key");
    memcpy(out, k, IDV_PUBLIC_KEY_BYTES);
    return true;
}

bool idv_measurement(const char *s, char out[IDV_MEASUREMENT_MAX + 1], idv_err *e)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0)
        return fail(e, "measurement", "measurement is required for an attestation");
    if (n < 32 || n > IDV_MEASUREMENT_MAX || n % 2)
        return fail(e, "measurement", "measurement must be 16 to 64 bytes in hex");
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c >= 'A' && c <= 'F')
            c = (char)(c - 'A' + 'a');
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return fail(e, "measurement", "measurement must be hex");
        out[i] = c;
    }
    out[n] = '\0';
    return true;
}

bool idv_expiry(int64_t expires_at_us, int64_t now_us, int64_t max_s, idv_err *e)
{
    if (expires_at_us == 0)
        return fail(e, "expires_at_us", "expires_at_us is required");
    if (expires_at_us <= now_us)
        return fail(e, "expires_at_us", "expires_at_us is in the past");
    if (expires_at_us - now_us > max_s * 1000000)
        return fail(e, "expires_at_us",
                    "expires_at_us is too far ahead: at most %lld days for this type",
                    (long long)(max_s / 86400));
    return true;
}

bool idv_child_expiry(int64_t expires_at_us, int64_t parent_expires_at_us, idv_err *e)
{
    if (parent_expires_at_us > 0 && expires_at_us <= parent_expires_at_us)
        return true;
    char when[32] = "unknown";
    time_t secs = (time_t)(parent_expires_at_us / 1000000);
    struct tm tm;
    if (parent_expires_at_us > 0 && gmtime_r(&secs, &tm) != NULL)
        strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return fail(e, "expires_at_us",
                "expires_at_us is past the expiry of the key this request is made with (%s): "
                "a credential issued by a non-admin cannot outlive it",
                when);
}

bool idv_transition(idv_status from, idv_status to)
{
    switch (from) {
    case IDV_ACTIVE:
        return to == IDV_INACTIVE || to == IDV_SUSPENDED;
    case IDV_INACTIVE:
        return to == IDV_ACTIVE;
    case IDV_SUSPENDED:
        return to == IDV_ACTIVE;
    }
    return false;
}
