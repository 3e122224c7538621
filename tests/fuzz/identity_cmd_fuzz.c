/* libFuzzer target for cms-identity's commands: byte 0 picks the verb
 * (create, get, list, set_status, issue_credential, revoke_credential,
 * list_credentials, authenticate; its bits above the verb are the caller:
 * admin or not, the identity itself or not), the rest is the body, decoded
 * as cms_cmd decodes it (cmdfuzz.h) and checked as the verb's handler
 * checks it before any database work: the identity/validate.h checks in
 * the handler's order, the handler's own limits beside them, and
 * cms_apikey_parse for authenticate.
 *
 * Nothing may crash or leak. A refusal names a field of the request and
 * says why; checking the same body again gives the same verdict; an
 * accepted body holds what the checks promise: a name of 1..255 bytes of
 * UTF-8 without control characters, a type or status that is one of the
 * names, metadata that is a JSON object, a measurement in lowercase hex of
 * the input's digits, a public key and an API key that encode back to
 * exactly their text, an expiry within the type's maximum. */
#include <sodium.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "apikey.h"
#include "cmdfuzz.h"
#include "cms/v1/identity.pb-c.h"
#include "identity/validate.h"
#include "uuid.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define NOW_US INT64_C(1767225600000000) /* 2026-01-01 */
#define MAX_S (INT64_C(365) * 86400)     /* the services' longest default */
#define LIST_MAX 1000                    /* identity.c */

enum { V_CREATE, V_GET, V_LIST, V_SET_STATUS, V_ISSUE, V_REVOKE, V_LIST_CREDS, V_AUTH, NVERBS };
static const fz_verb verbs[NVERBS] = {
    [V_CREATE] = {"create", &cms__v1__create_identity__descriptor},
    [V_GET] = {"get", &cms__v1__get_identity__descriptor},
    [V_LIST] = {"list", &cms__v1__list_identities__descriptor},
    [V_SET_STATUS] = {"set_status", &cms__v1__set_identity_status__descriptor},
    [V_ISSUE] = {"issue_credential", &cms__v1__issue_credential__descriptor},
    [V_REVOKE] = {"revoke_credential", &cms__v1__revoke_credential__descriptor},
    [V_LIST_CREDS] = {"list_credentials", &cms__v1__list_credentials__descriptor},
    [V_AUTH] = {"authenticate", &cms__v1__authenticate__descriptor},
};

/* the caller, from the bits of byte 0 above the verb */
typedef struct caller {
    bool admin, self;
} caller;

/* The verdict of one verb's checks: ok, or the refusal's field and text. */
typedef struct verdict {
    bool ok;
    bool field_required; /* the refusal came from a check that names a field */
    idv_err e;
} verdict;

static bool refuse(verdict *v, const char *field, const char *msg)
{
    v->e.field = field;
    snprintf(v->e.msg, sizeof v->e.msg, "%s", msg);
    return false;
}

static void name_holds(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > IDV_NAME_MAX || !fz_utf8(s))
        abort();
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            abort();
}

static void uuid_holds(const char *s)
{
    cms_uuid u;
    if (!cms_uuid_parse(s, strlen(s), &u))
        abort();
}

static void metadata_holds(const char *in, const char *out)
{
    if ((in[0] ? out != in : strcmp(out, "{}") != 0) || strlen(out) > IDV_METADATA_MAX ||
        !fz_json_object(out))
        abort();
}

/* create: identity.c's h_create (the caller must be an admin) */
static bool check_create(const Cms__V1__CreateIdentity *m, caller c, verdict *v)
{
    idv_type t;
    const char *md;
    if (!c.admin)
        return refuse(v, NULL, "only an admin creates identities");
    v->field_required = true;
    if (!idv_name(m->name, "name", &v->e) || !idv_type_parse(m->type, &t, &v->e) ||
        !idv_metadata(m->metadata_json, "metadata_json", &md, &v->e))
        return false;
    name_holds(m->name);
    if (strcmp(idv_type_name(t), m->type) != 0)
        abort();
    metadata_holds(m->metadata_json, md);
    return true;
}

static bool check_get(const Cms__V1__GetIdentity *m, verdict *v)
{
    bool by_id = m->id[0] != '\0';
    if (!by_id && m->name[0] == '\0')
        return refuse(v, "id", "give an id or a name");
    v->field_required = true;
    if (by_id ? !idv_uuid(m->id, "id", &v->e) : !idv_name(m->name, "name", &v->e))
        return false;
    if (by_id)
        uuid_holds(m->id);
    else
        name_holds(m->name);
    return true;
}

static bool check_list(const Cms__V1__ListIdentities *m, verdict *v)
{
    idv_type t;
    idv_status st;
    v->field_required = true;
    if ((m->type[0] && !idv_type_parse(m->type, &t, &v->e)) ||
        (m->status[0] && !idv_status_parse(m->status, "status", &st, &v->e)) ||
        (m->after[0] && !idv_uuid(m->after, "after", &v->e)))
        return false;
    if (m->limit < 0 || m->limit > LIST_MAX)
        return refuse(v, "limit", "limit must be 1 to 1000 (0: 100)");
    if ((m->type[0] && strcmp(idv_type_name(t), m->type) != 0) ||
        (m->status[0] && strcmp(idv_status_name(st), m->status) != 0))
        abort();
    return true;
}

static bool check_set_status(const Cms__V1__SetIdentityStatus *m, caller c, verdict *v)
{
    idv_status to;
    if (!c.admin)
        return refuse(v, NULL, "only an admin changes an identity's status");
    v->field_required = true;
    if (!idv_uuid(m->id, "id", &v->e) || !idv_status_parse(m->status, "status", &to, &v->e) ||
        !idv_text(m->reason, "reason", IDV_REASON_MAX, &v->e))
        return false;
    if (strcmp(idv_status_name(to), m->status) != 0 || strlen(m->reason) > IDV_REASON_MAX ||
        !fz_utf8(m->reason))
        abort();
    return true;
}

/* credentials.c's issue_check, without the allowlist of measurements */
static bool check_issue(const Cms__V1__IssueCredential *m, caller c, verdict *v)
{
    idv_cred_type type;
    const char *md;
    uint8_t pk[IDV_PUBLIC_KEY_BYTES];
    char meas[IDV_MEASUREMENT_MAX + 1];
    v->field_required = true;
    if (!idv_uuid(m->identity_id, "identity_id", &v->e) ||
        !idv_cred_type_parse(m->type, &type, &v->e))
        return false;
    v->field_required = false;
    if (!c.admin && !(c.self && type != IDV_ATTESTATION))
        return refuse(v, NULL, "only an admin issues credentials to another identity");
    v->field_required = true;
    int64_t parent = NOW_US + 86400 * INT64_C(1000000);
    if (!idv_expiry(m->expires_at_us, NOW_US, MAX_S, &v->e) ||
        (!c.admin && !idv_child_expiry(m->expires_at_us, parent, &v->e)) ||
        !idv_metadata(m->metadata_json, "metadata_json", &md, &v->e) ||
        (type == IDV_PUBLIC_KEY && !idv_public_key(m->public_key, pk, &v->e)) ||
        (type == IDV_ATTESTATION && (!idv_measurement(m->measurement, meas, &v->e) ||
                                     !idv_text(m->signer, "signer", IDV_SIGNER_MAX, &v->e))))
        return false;
    if (type == IDV_ATTESTATION && m->signer[0] == '\0')
        return refuse(v, "signer", "signer is required for an attestation");

    if (strcmp(idv_cred_type_name(type), m->type) != 0 || m->expires_at_us <= NOW_US ||
        m->expires_at_us - NOW_US > MAX_S * 1000000 || (!c.admin && m->expires_at_us > parent))
        abort();
    metadata_holds(m->metadata_json, md);
    if (type == IDV_PUBLIC_KEY) {
        char b64[sodium_base64_ENCODED_LEN(IDV_PUBLIC_KEY_BYTES, sodium_base64_VARIANT_ORIGINAL)];
        sodium_bin2base64(b64, sizeof b64, pk, sizeof pk, sodium_base64_VARIANT_ORIGINAL);
        if (strcmp(b64, m->public_key) != 0 || !crypto_core_ed25519_is_valid_point(pk))
            abort();
    }
    if (type == IDV_ATTESTATION) {
        size_t n = strlen(m->measurement);
        if (strlen(meas) != n || n < 32 || n > IDV_MEASUREMENT_MAX || n % 2 != 0)
            abort();
        for (size_t i = 0; i < n; i++)
            if (meas[i] != (char)(m->measurement[i] | 0x20) || !strchr("0123456789abcdef", meas[i]))
                abort();
        if (strlen(m->signer) > IDV_SIGNER_MAX || !fz_utf8(m->signer))
            abort();
    }
    return true;
}

static bool check_revoke(const Cms__V1__RevokeCredential *m, verdict *v)
{
    v->field_required = true;
    if (!idv_uuid(m->id, "id", &v->e) || !idv_text(m->reason, "reason", IDV_REASON_MAX, &v->e))
        return false;
    uuid_holds(m->id);
    return true;
}

static bool check_list_creds(const Cms__V1__ListCredentials *m, verdict *v)
{
    v->field_required = true;
    if (!idv_uuid(m->identity_id, "identity_id", &v->e))
        return false;
    uuid_holds(m->identity_id);
    return true;
}

/* authenticate: auth.c's resolve parses the key before any look-up; a key
 * it takes is exactly the text cms_apikey_generate makes of its parts */
static bool check_auth(const Cms__V1__Authenticate *m, verdict *v)
{
    cms_uuid id;
    uint8_t secret[CMS_APIKEY_SECRET_BYTES];
    size_t len = strlen(m->api_key);
    if (len != CMS_APIKEY_LEN || !cms_apikey_parse(m->api_key, len, &id, secret))
        return refuse(v, "api_key", "the API key is not accepted");
    char again[CMS_APIKEY_LEN + 1], hex[33], b64[64];
    sodium_bin2hex(hex, sizeof hex, (const unsigned char *)&id, sizeof id);
    sodium_bin2base64(b64, sizeof b64, secret, sizeof secret,
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    snprintf(again, sizeof again, "cms_%s_%s", hex, b64);
    if (strcmp(again, m->api_key) != 0)
        abort();
    return true;
}

static bool check(int verb, const ProtobufCMessage *body, caller c, verdict *v)
{
    memset(v, 0, sizeof *v);
    switch (verb) {
    case V_CREATE:
        return v->ok = check_create((const void *)body, c, v);
    case V_GET:
        return v->ok = check_get((const void *)body, v);
    case V_LIST:
        return v->ok = check_list((const void *)body, v);
    case V_SET_STATUS:
        return v->ok = check_set_status((const void *)body, c, v);
    case V_ISSUE:
        return v->ok = check_issue((const void *)body, c, v);
    case V_REVOKE:
        return v->ok = check_revoke((const void *)body, v);
    case V_LIST_CREDS:
        return v->ok = check_list_creds((const void *)body, v);
    case V_AUTH:
        return v->ok = check_auth((const void *)body, v);
    }
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    if (sodium_init() < 0)
        abort();
    int verb = data[0] % NVERBS;
    caller c = {.admin = (data[0] / NVERBS) & 1, .self = (data[0] / NVERBS) & 2};
    const ProtobufCMessage *body = fz_decode(verbs[verb].desc, data + 1, size - 1);
    if (body == NULL)
        return 0;
    verdict v, again;
    if (!check(verb, body, c, &v))
        fz_refusal(verbs[verb].desc, v.e.field, v.field_required, v.e.msg);
    check(verb, body, c, &again);
    if (again.ok != v.ok || again.e.field != v.e.field || strcmp(again.e.msg, v.e.msg) != 0)
        abort();
    return 0;
}
