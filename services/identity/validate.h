/* What cms-identity accepts, checked before anything touches the database.
 * Each check names the request field at fault and says what is wanted. */
#ifndef IDENTITY_VALIDATE_H
#define IDENTITY_VALIDATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define IDV_NAME_MAX 255
#define IDV_METADATA_MAX 16384
#define IDV_REASON_MAX 1024
#define IDV_SIGNER_MAX 255
#define IDV_MEASUREMENT_MAX 128 /* hex digits: up to 64 bytes */
#define IDV_PUBLIC_KEY_BYTES 32

typedef struct idv_err {
    const char *field;
    char msg[200];
} idv_err;

typedef enum { IDV_USER, IDV_MACHINE, IDV_ENCLAVE } idv_type;
typedef enum { IDV_ACTIVE, IDV_INACTIVE, IDV_SUSPENDED } idv_status;
typedef enum { IDV_API_KEY, IDV_PUBLIC_KEY, IDV_ATTESTATION } idv_cred_type;

/* 1..255 bytes of valid UTF-8 without control characters. */
bool idv_name(const char *s, const char *field, idv_err *e);
bool idv_type_parse(const char *s, idv_type *out, idv_err *e);
bool idv_status_parse(const char *s, const char *field, idv_status *out, idv_err *e);
bool idv_cred_type_parse(const char *s, idv_cred_type *out, idv_err *e);
/* A UUID in text form. */
bool idv_uuid(const char *s, const char *field, idv_err *e);
/* Empty, or a JSON object of at most 16 KiB; "roles", if present, is an
 * array of at most 8 distinct role names ([a-z0-9_-], 1..31 bytes). *out
 * is s, or "{}" for empty. */
bool idv_metadata(const char *s, const char *field, const char **out, idv_err *e);
/* Optional free text: at most 1024 bytes of valid UTF-8. */
bool idv_text(const char *s, const char *field, size_t max, idv_err *e);
/* Standard base64 (padded) of exactly 32 bytes that is an Ed25519 point. */
bool idv_public_key(const char *s, uint8_t out[IDV_PUBLIC_KEY_BYTES], idv_err *e);
/* Hex of 16..64 bytes; out gets it in lowercase. */
bool idv_measurement(const char *s, char out[IDV_MEASUREMENT_MAX + 1], idv_err *e);
/* expires_at_us in (now, now + max_s]. */
bool idv_expiry(int64_t expires_at_us, int64_t now_us, int64_t max_s, idv_err *e);
/* A credential an identity issues itself outlives not the credential it
 * presented (parent_expires_at_us): expires_at_us <= parent's (as a child
 * token of Vault's cannot outlive its parent), so that a stolen short key
 * cannot mint a long one. */
bool idv_child_expiry(int64_t expires_at_us, int64_t parent_expires_at_us, idv_err *e);

/* Legal status changes (DESIGN.md): active <-> inactive, active <->
 * suspended. A change to the same status is not a change. */
bool idv_transition(idv_status from, idv_status to);

const char *idv_type_name(idv_type t);
const char *idv_status_name(idv_status s);
const char *idv_cred_type_name(idv_cred_type t);

#endif
