/* RFC 8785 canonical JSON; see jcs.h.
 *
 * jansson parses (it refuses repeated keys, invalid UTF-8 and lone
 * surrogates, and reads every number as a double); the writer here walks
 * the tree into a growable buffer. Its error is sticky: after the first one
 * every append is a no-op and the walk returns early, so the walk needs no
 * checks between appends.
 *
 * Numbers: the shortest digits that round-trip are found by asking
 * snprintf("%.*e") for 1, 2, ... 17 significant digits (glibc rounds
 * correctly, so each is the closest decimal of that length) until strtod
 * reads the same double back; 17 always does. Those digits are then laid
 * out by ECMAScript's rules. */
#include "jcs.h"

#include "utf8.h"

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* jansson's reading: any value, every number a real, "\u0000" kept */
#define PARSE_FLAGS                                                                                \
    (JSON_REJECT_DUPLICATES | JSON_DECODE_ANY | JSON_DECODE_INT_AS_REAL | JSON_ALLOW_NUL)
#define DIGITS_MAX 17 /* significant digits that always round-trip a double */

const char *cms_jcs_strerror(cms_jcs_err e)
{
    switch (e) {
#define CMS_JCS_TEXT(name, text)                                                                   \
    case name:                                                                                     \
        return text;
        CMS_JCS_ERRORS(CMS_JCS_TEXT)
#undef CMS_JCS_TEXT
    }
    return "unknown error";
}

/* ---- numbers ------------------------------------------------------------ */

/* The shortest significant digits of a (finite, > 0) that read back as a:
 * digits[0..*k) without trailing zeros, a = 0.digits * 10^*n. */
static void shortest_digits(double a, char digits[DIGITS_MAX + 1], int *k, int *n)
{
    char text[40];
    for (int p = 1; p <= DIGITS_MAX; p++) {
        snprintf(text, sizeof text, "%.*e", p - 1, a);
        if (p == DIGITS_MAX || strtod(text, NULL) == a)
            break;
    }
    /* "D[.DDD]e[+-]XX": the digits, whatever the decimal point is, then the exponent */
    int nd = 0;
    const char *c = text;
    for (; *c != '\0' && *c != 'e'; c++) {
        if (*c >= '0' && *c <= '9' && nd < DIGITS_MAX)
            digits[nd++] = *c;
    }
    long exp10 = *c == 'e' ? strtol(c + 1, NULL, 10) : 0;
    while (nd > 1 && digits[nd - 1] == '0')
        nd--;
    digits[nd] = '\0';
    *k = nd;
    *n = (int)exp10 + 1;
}

int cms_jcs_number(double d, char *buf, size_t len)
{
    char digits[DIGITS_MAX + 1], out[CMS_JCS_NUMBER_MAX];
    size_t o = 0;
    int k, n;
    if (len > 0)
        buf[0] = '\0';
    if (!isfinite(d))
        return -1;
    if (d == 0) {
        /* +0 and -0 alike */
        digits[0] = '0';
        digits[1] = '\0';
        k = 1;
        n = 1;
    } else {
        if (d < 0)
            out[o++] = '-';
        shortest_digits(fabs(d), digits, &k, &n);
    }
    /* ECMAScript Number::toString, steps 6 to 10: d = 0.digits * 10^n */
    if (k <= n && n <= 21) {
        memcpy(out + o, digits, (size_t)k);
        o += (size_t)k;
        memset(out + o, '0', (size_t)(n - k));
        o += (size_t)(n - k);
    } else if (0 < n && n <= 21) {
        memcpy(out + o, digits, (size_t)n);
        o += (size_t)n;
        out[o++] = '.';
        memcpy(out + o, digits + n, (size_t)(k - n));
        o += (size_t)(k - n);
    } else if (-6 < n && n <= 0) {
        out[o++] = '0';
        out[o++] = '.';
        memset(out + o, '0', (size_t)-n);
        o += (size_t)-n;
        memcpy(out + o, digits, (size_t)k);
        o += (size_t)k;
    } else {
        out[o++] = digits[0];
        if (k > 1) {
            out[o++] = '.';
            memcpy(out + o, digits + 1, (size_t)(k - 1));
            o += (size_t)(k - 1);
        }
        int e = n - 1;
        int w = snprintf(out + o, sizeof out - o, "e%c%d", e < 0 ? '-' : '+', e < 0 ? -e : e);
        o += (size_t)w;
    }
    if (o >= len)
        return -1;
    memcpy(buf, out, o);
    buf[o] = '\0';
    return (int)o;
}

/* ---- UTF-8 -------------------------------------------------------------- */

/* Decodes the code point at s[*i] (of len bytes) into *cp and advances *i;
 * false for anything that is not the shortest encoding of a Unicode scalar
 * value (overlong forms, surrogates, beyond U+10FFFF, truncated). */
static bool utf8_next(const unsigned char *s, size_t len, size_t *i, uint32_t *cp)
{
    unsigned char c = s[*i];
    uint32_t v, min;
    size_t extra;
    if (c < 0x80) {
        *cp = c;
        (*i)++;
        return true;
    }
    if (c >= 0xc2 && c <= 0xdf) {
        v = c & 0x1fu;
        extra = 1;
        min = 0x80;
    } else if (c >= 0xe0 && c <= 0xef) {
        v = c & 0x0fu;
        extra = 2;
        min = 0x800;
    } else if (c >= 0xf0 && c <= 0xf4) {
        v = c & 0x07u;
        extra = 3;
        min = 0x10000;
    } else {
        return false;
    }
    if (len - *i <= extra)
        return false;
    for (size_t j = 1; j <= extra; j++) {
        unsigned char cc = s[*i + j];
        if ((cc & 0xc0) != 0x80)
            return false;
        v = (v << 6) | (cc & 0x3fu);
    }
    if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
        return false;
    *cp = v;
    *i += extra + 1;
    return true;
}

/* The first UTF-16 code unit of cp: itself in the BMP, else its high
 * surrogate. */
static uint32_t utf16_lead(uint32_t cp)
{
    return cp < 0x10000 ? cp : 0xd800 + ((cp - 0x10000) >> 10);
}

/* Compares two valid UTF-8 strings as arrays of UTF-16 code units. Code
 * points compare as their first units unless those are equal; equal first
 * units are either equal BMP characters or two supplementary characters
 * with the same high surrogate, whose low surrogates order as the code
 * points do. */
static int utf16_cmp(const char *a, size_t alen, const char *b, size_t blen)
{
    size_t i = 0, j = 0;
    while (i < alen && j < blen) {
        uint32_t ca = 0, cb = 0;
        (void)utf8_next((const unsigned char *)a, alen, &i, &ca);
        (void)utf8_next((const unsigned char *)b, blen, &j, &cb);
        if (ca == cb)
            continue;
        uint32_t ua = utf16_lead(ca), ub = utf16_lead(cb);
        if (ua != ub)
            return ua < ub ? -1 : 1;
        return ca < cb ? -1 : 1;
    }
    if (i < alen)
        return 1;
    return j < blen ? -1 : 0;
}

/* ---- the writer --------------------------------------------------------- */

typedef struct writer {
    char *data;
    size_t len, cap; /* cap > len once data exists: room for the NUL */
    cms_jcs_err err; /* sticky: the first error wins */
} writer;

static void fail(writer *w, cms_jcs_err e)
{
    if (w->err == CMS_JCS_OK)
        w->err = e;
}

static bool reserve(writer *w, size_t n)
{
    if (w->err != CMS_JCS_OK)
        return false;
    if (w->cap > w->len && n < w->cap - w->len)
        return true;
    if (n > SIZE_MAX / 4 - w->len) {
        fail(w, CMS_JCS_ENOMEM);
        return false;
    }
    size_t need = w->len + n + 1, cap = w->cap ? w->cap : 256;
    while (cap < need)
        cap *= 2;
    char *p = realloc(w->data, cap);
    if (p == NULL) {
        fail(w, CMS_JCS_ENOMEM);
        return false;
    }
    w->data = p;
    w->cap = cap;
    return true;
}

static void put(writer *w, const void *s, size_t n)
{
    if (n == 0 || !reserve(w, n))
        return;
    memcpy(w->data + w->len, s, n);
    w->len += n;
    w->data[w->len] = '\0';
}

static void put_char(writer *w, char c)
{
    put(w, &c, 1);
}

#define PUT_LITERAL(w, s) put((w), (s), sizeof(s) - 1)

static void write_number(writer *w, double d)
{
    char b[CMS_JCS_NUMBER_MAX];
    int n = cms_jcs_number(d, b, sizeof b);
    if (n < 0)
        fail(w, CMS_JCS_ENUMBER);
    else
        put(w, b, (size_t)n);
}

/* RFC 8785 3.2.2.2: escapes only what JSON requires, the rest as is. */
static void write_string(writer *w, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    if (!cms_utf8_valid(s, len)) {
        fail(w, CMS_JCS_EPARSE);
        return;
    }
    put_char(w, '"');
    size_t run = 0; /* start of the bytes not yet written */
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        put(w, s + run, i - run);
        run = i + 1;
        switch (c) {
        case '"':
            PUT_LITERAL(w, "\\\"");
            break;
        case '\\':
            PUT_LITERAL(w, "\\\\");
            break;
        case '\b':
            PUT_LITERAL(w, "\\b");
            break;
        case '\t':
            PUT_LITERAL(w, "\\t");
            break;
        case '\n':
            PUT_LITERAL(w, "\\n");
            break;
        case '\f':
            PUT_LITERAL(w, "\\f");
            break;
        case '\r':
            PUT_LITERAL(w, "\\r");
            break;
        default: {
            char u[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 0xf]};
            put(w, u, sizeof u);
            break;
        }
        }
    }
    put(w, s + run, len - run);
    put_char(w, '"');
}

/* One member of an object, for sorting. */
typedef struct member {
    const char *key;
    size_t keylen;
    const json_t *value;
} member;

static int member_cmp(const void *a, const void *b)
{
    const member *x = a, *y = b;
    return utf16_cmp(x->key, x->keylen, y->key, y->keylen);
}

static void write_value(writer *w, const json_t *v, int depth);

static void write_object(writer *w, const json_t *v, int depth)
{
    json_t *obj = (json_t *)v; /* jansson's iterators take no const */
    size_t n = json_object_size(obj), i = 0;
    member *m = n > 0 ? calloc(n, sizeof *m) : NULL;
    if (n > 0 && m == NULL) {
        fail(w, CMS_JCS_ENOMEM);
        return;
    }
    for (void *it = json_object_iter(obj); it != NULL && i < n;
         it = json_object_iter_next(obj, it)) {
        m[i].key = json_object_iter_key(it);
        m[i].keylen = json_object_iter_key_len(it);
        m[i].value = json_object_iter_value(it);
        /* the comparison decodes the keys: they must be valid first */
        if (!cms_utf8_valid(m[i].key, m[i].keylen)) {
            fail(w, CMS_JCS_EPARSE);
            goto out;
        }
        i++;
    }
    n = i;
    if (n > 1)
        qsort(m, n, sizeof *m, member_cmp);
    put_char(w, '{');
    for (i = 0; i < n && w->err == CMS_JCS_OK; i++) {
        if (i > 0)
            put_char(w, ',');
        write_string(w, m[i].key, m[i].keylen);
        put_char(w, ':');
        write_value(w, m[i].value, depth);
    }
    put_char(w, '}');
out:
    free(m);
}

/* depth: the objects and arrays around v. */
static void write_value(writer *w, const json_t *v, int depth)
{
    if (w->err != CMS_JCS_OK)
        return;
    switch (json_typeof(v)) {
    case JSON_OBJECT:
    case JSON_ARRAY:
        if (depth + 1 > CMS_JCS_MAX_DEPTH) {
            fail(w, CMS_JCS_EDEPTH);
            return;
        }
        if (json_is_object(v)) {
            write_object(w, v, depth + 1);
            return;
        }
        put_char(w, '[');
        for (size_t i = 0; i < json_array_size(v) && w->err == CMS_JCS_OK; i++) {
            if (i > 0)
                put_char(w, ',');
            write_value(w, json_array_get(v, i), depth + 1);
        }
        put_char(w, ']');
        return;
    case JSON_STRING:
        write_string(w, json_string_value(v), json_string_length(v));
        return;
    case JSON_INTEGER:
        write_number(w, (double)json_integer_value(v));
        return;
    case JSON_REAL:
        write_number(w, json_real_value(v));
        return;
    case JSON_TRUE:
        PUT_LITERAL(w, "true");
        return;
    case JSON_FALSE:
        PUT_LITERAL(w, "false");
        return;
    case JSON_NULL:
        PUT_LITERAL(w, "null");
        return;
    }
    fail(w, CMS_JCS_EPARSE);
}

cms_jcs_err cms_jcs_dump(const json_t *v, char **out, size_t *outlen)
{
    writer w = {.data = NULL, .len = 0, .cap = 0, .err = CMS_JCS_OK};
    *out = NULL;
    *outlen = 0;
    if (v == NULL)
        return CMS_JCS_EPARSE;
    write_value(&w, v, 0);
    if (w.err != CMS_JCS_OK) {
        free(w.data);
        return w.err;
    }
    *out = w.data;
    *outlen = w.len;
    return CMS_JCS_OK;
}

/* ---- parsing ------------------------------------------------------------ */

/* The depth of v's deepest object or array (v itself is 1 if it is one). */
static int depth_of(const json_t *v)
{
    int max = 0;
    if (json_is_array(v)) {
        for (size_t i = 0; i < json_array_size(v); i++) {
            int d = depth_of(json_array_get(v, i));
            if (d > max)
                max = d;
        }
        return max + 1;
    }
    if (json_is_object(v)) {
        json_t *obj = (json_t *)v;
        for (void *it = json_object_iter(obj); it != NULL; it = json_object_iter_next(obj, it)) {
            int d = depth_of(json_object_iter_value(it));
            if (d > max)
                max = d;
        }
        return max + 1;
    }
    return 0;
}

cms_jcs_err cms_jcs_parse(const char *json, size_t len, json_t **out)
{
    json_error_t jerr;
    *out = NULL;
    if (json == NULL)
        return CMS_JCS_EPARSE;
    json_t *v = json_loadb(json, len, PARSE_FLAGS, &jerr);
    if (v == NULL) {
        switch (json_error_code(&jerr)) {
        case json_error_out_of_memory:
            return CMS_JCS_ENOMEM;
        case json_error_numeric_overflow:
            return CMS_JCS_ENUMBER;
        case json_error_stack_overflow:
            return CMS_JCS_EDEPTH;
        default:
            return CMS_JCS_EPARSE;
        }
    }
    /* jansson's own limit is far deeper (JSON_PARSER_MAX_DEPTH), so the
     * recursion here is bounded */
    if (depth_of(v) > CMS_JCS_MAX_DEPTH) {
        json_decref(v);
        return CMS_JCS_EDEPTH;
    }
    *out = v;
    return CMS_JCS_OK;
}

cms_jcs_err cms_jcs_canonicalize(const char *json, size_t len, char **out, size_t *outlen)
{
    json_t *v = NULL;
    *out = NULL;
    *outlen = 0;
    cms_jcs_err e = cms_jcs_parse(json, len, &v);
    if (e == CMS_JCS_OK)
        e = cms_jcs_dump(v, out, outlen);
    json_decref(v);
    return e;
}
