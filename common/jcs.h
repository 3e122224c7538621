/* RFC 8785 JSON Canonicalization Scheme: the one byte sequence of a JSON
 * value that is hashed and signed, whoever wrote the value and in whatever
 * layout.
 *
 * The canonical form (RFC 8785 section 3.2):
 *   - no whitespace; literals true, false, null;
 *   - every number is an IEEE 754 double (an integer beyond 2^53 rounds as
 *     in JavaScript), written as ECMAScript's Number::toString writes it
 *     (cms_jcs_number); NaN and infinities cannot occur: a number beyond
 *     double range is CMS_JCS_ENUMBER;
 *   - strings are UTF-8; only '"', '\\' and the control characters below
 *     U+0020 are escaped, as \b \t \n \f \r or \u00XX (lowercase hex);
 *     everything else, U+007F and non-ASCII included, is written as is;
 *   - object members are sorted by their keys compared as arrays of UTF-16
 *     code units (so a key with a character above U+FFFF sorts by its
 *     surrogates, not by its UTF-8 bytes), at every level; arrays keep
 *     their order.
 *
 * Input is refused (CMS_JCS_EPARSE) when it is not one JSON value (any
 * value, not only an object), when an object repeats a key, when a string
 * is not valid UTF-8 or escapes a lone surrogate. "\u0000" in a string
 * value is accepted and written back as \u0000; in a key jansson cannot
 * represent it from text, so such a text is refused (a json_t key made with
 * json_object_setn may hold one: cms_jcs_dump writes it). Nesting deeper
 * than CMS_JCS_MAX_DEPTH levels (the outermost object or array is level 1)
 * is CMS_JCS_EDEPTH.
 *
 * Numbers are formatted with snprintf and read back with strtod: assumes
 * LC_NUMERIC is "C" (as common/json does). Thread-safe. */
#ifndef CMS_JCS_H
#define CMS_JCS_H

#include <jansson.h>
#include <stddef.h>

#define CMS_JCS_MAX_DEPTH 64
#define CMS_JCS_NUMBER_MAX 32 /* a buffer for cms_jcs_number, with its NUL */

#define CMS_JCS_ERRORS(X)                                                                          \
    X(CMS_JCS_OK, "ok")                                                                            \
    X(CMS_JCS_EPARSE,                                                                              \
      "not one JSON value: invalid syntax, a repeated key, invalid UTF-8 or a lone surrogate")     \
    X(CMS_JCS_ENUMBER, "a number that is not a finite double")                                     \
    X(CMS_JCS_EDEPTH, "nested deeper than 64 levels")                                              \
    X(CMS_JCS_ENOMEM, "out of memory")

typedef enum cms_jcs_err {
#define CMS_JCS_ENUM(name, text) name,
    CMS_JCS_ERRORS(CMS_JCS_ENUM)
#undef CMS_JCS_ENUM
} cms_jcs_err;

const char *cms_jcs_strerror(cms_jcs_err e);

/* The canonical form of the JSON text json (len bytes, need not be
 * NUL-terminated). On CMS_JCS_OK *out is malloc'd (the caller frees it) and
 * NUL-terminated, *outlen its length without the NUL; otherwise *out is NULL
 * and *outlen 0. */
cms_jcs_err cms_jcs_canonicalize(const char *json, size_t len, char **out, size_t *outlen)
    __attribute__((warn_unused_result));

/* The canonical form of a jansson value, as cms_jcs_canonicalize; integers
 * are taken as doubles. Strings that are not valid UTF-8 (json_stringn_nocheck)
 * are CMS_JCS_EPARSE; a value that contains itself is CMS_JCS_EDEPTH. */
cms_jcs_err cms_jcs_dump(const json_t *v, char **out, size_t *outlen)
    __attribute__((warn_unused_result));

/* Parses a JSON text as cms_jcs_canonicalize does (the same refusals, and
 * every number a real), for a caller that combines values before
 * canonicalising them with cms_jcs_dump. On CMS_JCS_OK *out is a new
 * reference; otherwise NULL. */
cms_jcs_err cms_jcs_parse(const char *json, size_t len, json_t **out)
    __attribute__((warn_unused_result));

/* ECMAScript Number::toString of the finite double d (RFC 8785 3.2.2.3):
 * the fewest significant digits that read back as d (the closest such
 * digits to d when several qualify), "0" for -0, integers below 1e21
 * without an exponent, exponent form from 1e21 up and below 1e-6 (1e+21,
 * 1.5e-7: the exponent's sign is always written). Writes at most len bytes
 * including the NUL into buf (CMS_JCS_NUMBER_MAX always suffices). Returns
 * the length written, or -1 for NaN or an infinity, or when len is too
 * small (buf then holds "" if len > 0). */
int cms_jcs_number(double d, char *buf, size_t len);

#endif
