/* JSON text for the audit trail: any protobuf-c message rendered from its
 * descriptors (one renderer for every event type, no per-type code), and a
 * check for JSON objects supplied as text (an envelope's details_json).
 *
 * Whatever these functions produce is accepted by PostgreSQL jsonb: valid
 * UTF-8 (invalid input bytes become U+FFFD), never "\u0000", at most
 * CMS_JSON_MAX_DEPTH levels of nesting, and at most the buffer's max bytes.
 *
 * Rendering (the proto3 JSON mapping, with these choices):
 *   - keys are the fields' proto names ("amount_cents", not "amountCents"),
 *     in field-number order;
 *   - a field appears exactly when protobuf_c_message_pack would put it on
 *     the wire: implicit-presence (proto3) scalars only when not zero/empty,
 *     explicit-presence (proto2/proto3 `optional`) fields when their has_
 *     flag is set or their pointer is neither NULL nor the declared default,
 *     a oneof only through its set member, a NULL message never, required
 *     fields always; an empty repeated field never. Unknown fields are not
 *     rendered;
 *   - int32, uint32, sint32, fixed32, sfixed32 as JSON numbers; int64,
 *     uint64, sint64, fixed64, sfixed64 as decimal strings ("-5");
 *   - bool as true/false; enums by value name, or the number when the value
 *     has no name;
 *   - float/double: the shortest of %.6g..%.9g (float) or %.15g..%.17g
 *     (double) that reads back to the same value; NaN and infinities as the
 *     strings "NaN", "Infinity", "-Infinity". Assumes LC_NUMERIC is "C";
 *   - bytes as standard padded base64 in a string;
 *   - strings escaped per RFC 8259: '"' and '\\' and \b \f \n \r \t with a
 *     backslash, other control characters as \u00XX, everything else as
 *     UTF-8; each maximal invalid UTF-8 subsequence becomes U+FFFD;
 *   - repeated fields as arrays, messages as objects;
 *   - maps (the repeated XxxEntry{key=1, value=2} message that protoc makes
 *     for a map<K,V> field named xxx) as JSON objects, with integer and bool
 *     keys as strings ("42", "true") and every value rendered, zero or not.
 *     Entries keep their wire order; a key repeated on the wire (where the
 *     last one wins) is repeated in the object, where jsonb also keeps the
 *     last one.
 *   - Nesting: each object and array is one level, the outermost object is
 *     level 1; more than CMS_JSON_MAX_DEPTH levels is CMS_JSON_EINVAL.
 *
 * Every function appends to the buffer; b->max caps b->len in total. On any
 * error b->len is back where it was before the call (nothing partial stays).
 * After a successful call data[len] is '\0' (not counted in len), so
 * b->data can be passed on as a C string. Not thread-safe per buffer;
 * separate buffers can be used from separate threads. */
#ifndef CMS_JSON_H
#define CMS_JSON_H

#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>

#define CMS_JSON_MAX_DEPTH 32

#define CMS_JSON_ERRORS(X)                                                                         \
    X(CMS_JSON_OK, "ok")                                                                           \
    X(CMS_JSON_ENOMEM, "out of memory")                                                            \
    X(CMS_JSON_ETOOBIG, "JSON text larger than the buffer's maximum")                              \
    X(CMS_JSON_EINVAL, "invalid: not a JSON object, nested too deeply, or nothing to render")

typedef enum cms_json_err {
#define CMS_JSON_ENUM(name, text) name,
    CMS_JSON_ERRORS(CMS_JSON_ENUM)
#undef CMS_JSON_ENUM
} cms_json_err;

const char *cms_json_strerror(cms_json_err err);

/* A growable output buffer with a hard cap. The fields may be read; change
 * them only through these functions. */
typedef struct cms_json_buf {
    char *data; /* NULL until something is written */
    size_t len; /* bytes of JSON text in data */
    size_t cap; /* bytes allocated (at most max + 1) */
    size_t max; /* hard cap on len */
} cms_json_buf;

/* max: the hard cap on len in bytes (e.g. 64 KiB). Allocates nothing. */
void cms_json_buf_init(cms_json_buf *b, size_t max);
/* len = 0, keeps the memory for the next message. */
void cms_json_buf_reset(cms_json_buf *b);
/* Frees the memory; b can be initialised again. NULL-safe. */
void cms_json_buf_free(cms_json_buf *b);

/* Appends msg as one JSON object (see the top of this file). EINVAL for a
 * NULL msg or one nested too deeply, ETOOBIG when b would exceed its max. */
cms_json_err cms_json_render_message(cms_json_buf *b, const ProtobufCMessage *msg)
    __attribute__((warn_unused_result));

/* For an envelope-like message: appends the typed body, i.e. the first set
 * singular message field numbered >= first_body_field (with a oneof there is
 * at most one). EINVAL when none is set: the caller then falls back to
 * details_json or "{}". */
cms_json_err cms_json_render_body(cms_json_buf *b, const ProtobufCMessage *envelope,
                                  unsigned first_body_field) __attribute__((warn_unused_result));

/* Checks that text (len bytes, need not be NUL-terminated) is one JSON
 * object, optionally surrounded by whitespace, that fits b (len <= max -
 * b->len, else ETOOBIG) and nests at most CMS_JSON_MAX_DEPTH levels; then
 * appends the text unchanged. EINVAL for anything else, including: invalid
 * UTF-8, "\u0000" and lone surrogate escapes (jsonb refuses them), a key
 * repeated within one object (jsonb would silently keep only the last value:
 * an audit record must not lose one), numbers beyond double range. */
cms_json_err cms_json_check_object(cms_json_buf *b, const char *text, size_t len)
    __attribute__((warn_unused_result));
/* The same verdicts through jansson alone: check_object scans without
 * allocating and falls back to this only where it cannot decide. Kept for
 * the tests that compare the two. */
cms_json_err cms_json_check_object_reference(cms_json_buf *b, const char *text, size_t len)
    __attribute__((warn_unused_result));

/* PostgreSQL's numeric keeps at most 16383 digits after the point (its
 * scale: the fraction's digits less the exponent), so jsonb refuses
 * 1e-16384 and 0.5e-20000 ("value overflows numeric format"), which a
 * double reads as 0 and jansson takes. The scale of the first number in
 * text (len bytes of valid JSON, as jansson took it) beyond that: at *at
 * (its offset) with true; false when every number fits. */
#define CMS_JSON_NUMERIC_SCALE_MAX 16383
bool cms_json_numeric_overflow(const char *text, size_t len, size_t *at)
    __attribute__((warn_unused_result));

#endif
