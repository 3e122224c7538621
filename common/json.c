/* Protobuf-c messages as JSON text, written straight into a capped buffer;
 * JSON objects from text checked with jansson. See json.h for the mapping.
 *
 * The renderer runs on the loop for every event, so it builds no tree and
 * allocates only when the buffer grows (a reused buffer stops growing after
 * the first few messages). Errors are sticky in the writer: after the first
 * one every append is a no-op and loops stop early, so the walk needs no
 * error checks between appends; the public functions then roll len back. */
#include "json.h"

#include <jansson.h>
#include <math.h>
#include <sodium.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

const char *cms_json_strerror(cms_json_err err)
{
    switch (err) {
#define CMS_JSON_TEXT(name, text)                                                                  \
    case name:                                                                                     \
        return text;
        CMS_JSON_ERRORS(CMS_JSON_TEXT)
#undef CMS_JSON_TEXT
    }
    return "unknown error";
}

void cms_json_buf_init(cms_json_buf *b, size_t max)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    /* room for the terminating NUL above max must not overflow */
    b->max = max < SIZE_MAX / 2 ? max : SIZE_MAX / 2;
}

void cms_json_buf_reset(cms_json_buf *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

void cms_json_buf_free(cms_json_buf *b)
{
    if (b == NULL)
        return;
    free(b->data);
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

/* ---- the writer ------------------------------------------------------- */

typedef struct writer {
    cms_json_buf *b;
    cms_json_err err; /* sticky: the first error wins, later appends do nothing */
    int depth;        /* open objects and arrays */
} writer;

/* The slow path of reserve: checks the cap, then grows geometrically
 * (never past max + 1, the room for the NUL). */
static __attribute__((noinline)) bool grow(writer *w, size_t n)
{
    if (w->err != CMS_JSON_OK)
        return false;
    cms_json_buf *b = w->b;
    if (n > b->max - b->len) {
        w->err = CMS_JSON_ETOOBIG;
        return false;
    }
    size_t need = b->len + n + 1;
    if (need <= b->cap)
        return true;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap *= 2;
    if (cap > b->max + 1)
        cap = b->max + 1;
    char *p = realloc(b->data, cap);
    if (p == NULL) {
        w->err = CMS_JSON_ENOMEM;
        return false;
    }
    b->data = p;
    b->cap = cap;
    return true;
}

/* Makes room for n more bytes plus the NUL kept after them. Invariants:
 * len < cap once data exists, and cap <= max + 1, so room within cap is
 * room within max. */
static inline bool reserve(writer *w, size_t n)
{
    if (w->err == CMS_JSON_OK && n < w->b->cap - w->b->len)
        return true;
    return grow(w, n);
}

static inline void put(writer *w, const void *s, size_t n)
{
    if (n == 0 || !reserve(w, n))
        return;
    memcpy(w->b->data + w->b->len, s, n);
    w->b->len += n;
}

static inline void put_char(writer *w, char c)
{
    if (reserve(w, 1))
        w->b->data[w->b->len++] = c;
}

#define PUT_LITERAL(w, s) put((w), (s), sizeof(s) - 1)

/* Opens an object or array, refusing to go deeper than the maximum. */
static bool open_container(writer *w, char c)
{
    if (w->err != CMS_JSON_OK)
        return false;
    if (w->depth >= CMS_JSON_MAX_DEPTH) {
        w->err = CMS_JSON_EINVAL;
        return false;
    }
    w->depth++;
    put_char(w, c);
    return w->err == CMS_JSON_OK;
}

static void close_container(writer *w, char c)
{
    w->depth--;
    put_char(w, c);
}

/* Loads of the values a protobuf-c struct stores at an offset; memcpy keeps
 * them free of alignment and aliasing assumptions and compiles to a load. */
#define CMS_JSON_LOADER(name, T)                                                                   \
    static inline T name(const void *p)                                                            \
    {                                                                                              \
        T v;                                                                                       \
        memcpy(&v, p, sizeof v);                                                                   \
        return v;                                                                                  \
    }
CMS_JSON_LOADER(load_i32, int32_t)
CMS_JSON_LOADER(load_u32, uint32_t)
CMS_JSON_LOADER(load_i64, int64_t)
CMS_JSON_LOADER(load_u64, uint64_t)
CMS_JSON_LOADER(load_float, float)
CMS_JSON_LOADER(load_double, double)
CMS_JSON_LOADER(load_bool, protobuf_c_boolean)
CMS_JSON_LOADER(load_size, size_t)
CMS_JSON_LOADER(load_ptr, const void *)
CMS_JSON_LOADER(load_bin, ProtobufCBinaryData)
#undef CMS_JSON_LOADER

/* ---- scalars ---------------------------------------------------------- */

static void put_u64(writer *w, uint64_t v, bool negative, bool quoted)
{
    char tmp[24];
    char *end = tmp + sizeof tmp, *p = end;
    if (quoted)
        *--p = '"';
    do {
        *--p = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    if (negative)
        *--p = '-';
    if (quoted)
        *--p = '"';
    put(w, p, (size_t)(end - p));
}

static void put_i64(writer *w, int64_t v, bool quoted)
{
    /* the magnitude in unsigned arithmetic, so INT64_MIN needs no special case */
    put_u64(w, v < 0 ? 0 - (uint64_t)v : (uint64_t)v, v < 0, quoted);
}

static void put_real(writer *w, double v, bool is_float)
{
    if (isnan(v)) {
        PUT_LITERAL(w, "\"NaN\"");
        return;
    }
    if (isinf(v)) {
        if (v > 0)
            PUT_LITERAL(w, "\"Infinity\"");
        else
            PUT_LITERAL(w, "\"-Infinity\"");
        return;
    }
    /* Any decimal of 6 (float) or 15 (double) significant digits reads back
     * exactly, so %.Ng at that precision is already the shortest text when
     * one that short exists (%g drops trailing zeros); longer ones need the
     * read-back test, and 9 / 17 digits always round-trip. */
    int lo = is_float ? 6 : 15, hi = is_float ? 9 : 17;
    char tmp[40];
    int n = 0;
    for (int prec = lo; prec <= hi; prec++) {
        n = snprintf(tmp, sizeof tmp, "%.*g", prec, v);
        if (prec == hi)
            break;
        if (is_float ? strtof(tmp, NULL) == (float)v : strtod(tmp, NULL) == v)
            break;
    }
    if (n <= 0 || (size_t)n >= sizeof tmp) {
        w->err = CMS_JSON_EINVAL; /* cannot happen for a finite double */
        return;
    }
    put(w, tmp, (size_t)n);
}

/* Length of the valid UTF-8 sequence at p (Unicode Table 3-7: no overlongs,
 * no surrogates, nothing above U+10FFFF), or 0 with *bad set to the length
 * of the maximal invalid subpart, which becomes one U+FFFD. */
static size_t utf8_seq(const unsigned char *p, size_t n, size_t *bad)
{
    unsigned char c = p[0], lo = 0x80, hi = 0xBF;
    size_t more;
    if (c >= 0xC2 && c <= 0xDF) {
        more = 1;
    } else if (c >= 0xE0 && c <= 0xEF) {
        more = 2;
        if (c == 0xE0)
            lo = 0xA0;
        else if (c == 0xED)
            hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        more = 3;
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F;
    } else {
        *bad = 1;
        return 0;
    }
    size_t i = 1;
    for (; i <= more && i < n; i++) {
        if (p[i] < lo || p[i] > hi)
            break;
        lo = 0x80;
        hi = 0xBF;
    }
    if (i == more + 1)
        return i;
    *bad = i;
    return 0;
}

/* Whether any of the 8 bytes in x needs more than a copy: < 0x20, >= 0x80,
 * '"' or '\\'. The classic "has a byte less than / equal to" bit tricks:
 * exact as a yes/no answer for the whole word. */
static inline bool word_needs_care(uint64_t x)
{
    const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
    uint64_t quote = x ^ (ones * '"'), backslash = x ^ (ones * '\\');
    uint64_t hits = ((x - ones * 0x20) & ~x) | ((quote - ones) & ~quote) |
                    ((backslash - ones) & ~backslash) | x;
    return (hits & highs) != 0;
}

static void put_string(writer *w, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)s;
    size_t run = 0, i = 0;
    put_char(w, '"');
    while (i < n && w->err == CMS_JSON_OK) {
        while (n - i >= 8 && !word_needs_care(load_u64(p + i)))
            i += 8; /* most text is plain: skip it a word at a time */
        if (i == n)
            break;
        unsigned char c = p[i];
        if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
            i++;
            continue;
        }
        size_t bad = 0;
        if (c >= 0x80) {
            size_t k = utf8_seq(p + i, n - i, &bad);
            if (k) {
                i += k;
                continue;
            }
        }
        put(w, p + run, i - run); /* the plain run before this byte */
        if (c >= 0x80) {
            PUT_LITERAL(w, "\xEF\xBF\xBD"); /* U+FFFD */
            i += bad;
        } else {
            char esc[6] = {'\\', 0, 0, 0, 0, 0};
            size_t len = 2;
            switch (c) {
            case '"':
                esc[1] = '"';
                break;
            case '\\':
                esc[1] = '\\';
                break;
            case '\b':
                esc[1] = 'b';
                break;
            case '\f':
                esc[1] = 'f';
                break;
            case '\n':
                esc[1] = 'n';
                break;
            case '\r':
                esc[1] = 'r';
                break;
            case '\t':
                esc[1] = 't';
                break;
            default:
                esc[1] = 'u';
                esc[2] = '0';
                esc[3] = '0';
                esc[4] = hex[c >> 4];
                esc[5] = hex[c & 0xF];
                len = 6;
                break;
            }
            put(w, esc, len);
            i++;
        }
        run = i;
    }
    put(w, p + run, i - run);
    put_char(w, '"');
}

static void put_cstring(writer *w, const char *s)
{
    put_string(w, s ? s : "", s ? strlen(s) : 0);
}

static void put_bytes(writer *w, const ProtobufCBinaryData *bin)
{
    const int variant = sodium_base64_VARIANT_ORIGINAL;
    if (bin->len > w->b->max) { /* base64 is longer than its input */
        if (w->err == CMS_JSON_OK)
            w->err = CMS_JSON_ETOOBIG;
        return;
    }
    size_t enc = sodium_base64_ENCODED_LEN(bin->len, variant); /* counts a NUL */
    /* quote, enc - 1 characters, quote; reserve keeps one more byte after
     * them, which is where sodium's NUL lands before the closing quote */
    if (!reserve(w, enc + 1))
        return;
    cms_json_buf *b = w->b;
    b->data[b->len++] = '"';
    sodium_bin2base64(b->data + b->len, enc, bin->data, bin->len, variant);
    b->len += enc - 1;
    b->data[b->len++] = '"';
}

static void put_key(writer *w, const char *name, bool *first)
{
    /* field names are proto identifiers: nothing to escape */
    size_t n = strlen(name), o = 0;
    if (!reserve(w, n + 4))
        return;
    char *d = w->b->data + w->b->len;
    if (!*first)
        d[o++] = ',';
    *first = false;
    d[o++] = '"';
    memcpy(d + o, name, n);
    o += n;
    d[o++] = '"';
    d[o++] = ':';
    w->b->len += o;
}

/* ---- fields ----------------------------------------------------------- */

static void put_message(writer *w, const ProtobufCMessage *m);

static size_t element_size(ProtobufCType t)
{
    switch (t) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
    case PROTOBUF_C_TYPE_FLOAT:
    case PROTOBUF_C_TYPE_ENUM:
        return 4;
    case PROTOBUF_C_TYPE_BOOL:
        return sizeof(protobuf_c_boolean);
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
    case PROTOBUF_C_TYPE_DOUBLE:
        return 8;
    case PROTOBUF_C_TYPE_STRING:
        return sizeof(char *);
    case PROTOBUF_C_TYPE_BYTES:
        return sizeof(ProtobufCBinaryData);
    case PROTOBUF_C_TYPE_MESSAGE:
        return sizeof(ProtobufCMessage *);
    }
    return 0;
}

/* One value of field f stored at p (a member, an array element, a map
 * entry's key or value). int64 kinds are quoted; quote_all quotes the rest
 * of the numbers and bools too (map keys). */
static void put_value(writer *w, const ProtobufCFieldDescriptor *f, const void *p, bool quote_all)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        put_i64(w, load_i32(p), quote_all);
        break;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        put_u64(w, load_u32(p), false, quote_all);
        break;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        put_i64(w, load_i64(p), true);
        break;
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        put_u64(w, load_u64(p), false, true);
        break;
    case PROTOBUF_C_TYPE_FLOAT:
        put_real(w, load_float(p), true);
        break;
    case PROTOBUF_C_TYPE_DOUBLE:
        put_real(w, load_double(p), false);
        break;
    case PROTOBUF_C_TYPE_BOOL:
        if (load_bool(p)) {
            if (quote_all)
                PUT_LITERAL(w, "\"true\"");
            else
                PUT_LITERAL(w, "true");
        } else {
            if (quote_all)
                PUT_LITERAL(w, "\"false\"");
            else
                PUT_LITERAL(w, "false");
        }
        break;
    case PROTOBUF_C_TYPE_ENUM: {
        int32_t v = load_i32(p);
        const ProtobufCEnumValue *ev =
            f->descriptor ? protobuf_c_enum_descriptor_get_value(f->descriptor, v) : NULL;
        if (ev) {
            put_char(w, '"');
            put(w, ev->name, strlen(ev->name)); /* an identifier: nothing to escape */
            put_char(w, '"');
        } else {
            put_i64(w, v, quote_all);
        }
        break;
    }
    case PROTOBUF_C_TYPE_STRING:
        put_cstring(w, (const char *)load_ptr(p));
        break;
    case PROTOBUF_C_TYPE_BYTES: {
        ProtobufCBinaryData bin = load_bin(p);
        put_bytes(w, &bin);
        break;
    }
    case PROTOBUF_C_TYPE_MESSAGE: {
        const ProtobufCMessage *sub = (const ProtobufCMessage *)load_ptr(p);
        if (sub)
            put_message(w, sub);
        else if (open_container(w, '{')) /* a required or map value left NULL packs as empty */
            close_container(w, '}');
        break;
    }
    }
}

/* Whether a singular field is on the wire, by the rules of
 * protobuf_c_message_pack (so the JSON shows what was sent). */
static bool field_present(const ProtobufCFieldDescriptor *f, const void *member, const void *q)
{
    bool pointer = f->type == PROTOBUF_C_TYPE_MESSAGE || f->type == PROTOBUF_C_TYPE_STRING;
    if (f->label == PROTOBUF_C_LABEL_REQUIRED)
        return true;
    if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
        if (load_u32(q) != f->id)
            return false;
        if (pointer) {
            const void *ptr = load_ptr(member);
            return ptr != NULL && ptr != f->default_value;
        }
        return true;
    }
    if (f->label == PROTOBUF_C_LABEL_OPTIONAL) {
        if (pointer) {
            const void *ptr = load_ptr(member);
            return ptr != NULL && ptr != f->default_value;
        }
        return load_bool(q) != 0;
    }
    /* PROTOBUF_C_LABEL_NONE: implicit presence, absent when zero or empty */
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
    case PROTOBUF_C_TYPE_ENUM:
        return load_u32(member) != 0;
    case PROTOBUF_C_TYPE_BOOL:
        return load_bool(member) != 0;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        return load_u64(member) != 0;
    case PROTOBUF_C_TYPE_FLOAT:
        return load_float(member) != 0; /* -0 counts as zero, as in pack */
    case PROTOBUF_C_TYPE_DOUBLE:
        return load_double(member) != 0;
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = (const char *)load_ptr(member);
        return s != NULL && s[0] != '\0';
    }
    case PROTOBUF_C_TYPE_BYTES:
        return load_bin(member).len != 0;
    case PROTOBUF_C_TYPE_MESSAGE:
        return load_ptr(member) != NULL;
    }
    return false;
}

/* Whether entry_name is what protoc calls the entry type of a map field
 * named field: each '_'-separated part capitalised, joined, plus "Entry". */
static bool is_entry_name(const char *entry_name, const char *field)
{
    const char *e = entry_name;
    bool cap = true;
    for (const char *c = field; *c; c++) {
        if (*c == '_') {
            cap = true;
            continue;
        }
        char want = *c;
        if (cap && want >= 'a' && want <= 'z')
            want = (char)(want - 'a' + 'A');
        cap = false;
        if (*e++ != want)
            return false;
    }
    return strcmp(e, "Entry") == 0;
}

/* protobuf-c keeps no map_entry option, so a map is recognised by the shape
 * protoc gives it: a repeated field of a message nested in this one, named
 * after the field, with exactly key = 1 (an integral, bool or string type)
 * and value = 2. */
static bool is_map_field(const ProtobufCMessageDescriptor *parent,
                         const ProtobufCFieldDescriptor *f)
{
    if (f->type != PROTOBUF_C_TYPE_MESSAGE || f->descriptor == NULL)
        return false;
    const ProtobufCMessageDescriptor *e = f->descriptor;
    if (e->n_fields != 2)
        return false;
    const ProtobufCFieldDescriptor *k = &e->fields[0], *v = &e->fields[1];
    if (k->id != 1 || v->id != 2 || strcmp(k->name, "key") != 0 || strcmp(v->name, "value") != 0 ||
        k->label == PROTOBUF_C_LABEL_REPEATED || v->label == PROTOBUF_C_LABEL_REPEATED)
        return false;
    switch (k->type) {
    case PROTOBUF_C_TYPE_FLOAT:
    case PROTOBUF_C_TYPE_DOUBLE:
    case PROTOBUF_C_TYPE_BYTES:
    case PROTOBUF_C_TYPE_MESSAGE:
    case PROTOBUF_C_TYPE_ENUM:
        return false;
    default:
        break;
    }
    size_t pl = strlen(parent->name);
    if (strncmp(e->name, parent->name, pl) != 0 || e->name[pl] != '.')
        return false;
    return is_entry_name(e->name + pl + 1, f->name);
}

static void put_map(writer *w, const ProtobufCFieldDescriptor *f, const char *arr, size_t n)
{
    const ProtobufCMessageDescriptor *ed = f->descriptor;
    const ProtobufCFieldDescriptor *kf = &ed->fields[0], *vf = &ed->fields[1];
    if (!open_container(w, '{'))
        return;
    bool first = true;
    for (size_t i = 0; i < n && w->err == CMS_JSON_OK; i++) {
        const char *entry = (const char *)load_ptr(arr + i * sizeof(ProtobufCMessage *));
        if (entry == NULL)
            continue;
        if (!first)
            put_char(w, ',');
        first = false;
        put_value(w, kf, entry + kf->offset, true); /* JSON keys are strings */
        put_char(w, ':');
        put_value(w, vf, entry + vf->offset, false);
    }
    close_container(w, '}');
}

static void put_array(writer *w, const ProtobufCFieldDescriptor *f, const char *arr, size_t n)
{
    size_t sz = element_size(f->type);
    if (!open_container(w, '['))
        return;
    for (size_t i = 0; i < n && w->err == CMS_JSON_OK; i++) {
        if (i)
            put_char(w, ',');
        put_value(w, f, arr + i * sz, false);
    }
    close_container(w, ']');
}

static void put_message(writer *w, const ProtobufCMessage *m)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    if (d == NULL || d->magic != PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC) {
        w->err = CMS_JSON_EINVAL;
        return;
    }
    if (!open_container(w, '{'))
        return;
    const char *base = (const char *)m;
    bool first = true;
    for (unsigned i = 0; i < d->n_fields && w->err == CMS_JSON_OK; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        const char *member = base + f->offset;
        const char *q = base + f->quantifier_offset;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = load_size(q);
            const char *arr = (const char *)load_ptr(member);
            if (n == 0 || arr == NULL)
                continue;
            put_key(w, f->name, &first);
            if (is_map_field(d, f))
                put_map(w, f, arr, n);
            else
                put_array(w, f, arr, n);
        } else if (field_present(f, member, q)) {
            put_key(w, f->name, &first);
            put_value(w, f, member, false);
        }
    }
    close_container(w, '}');
}

/* Runs the writer over msg and keeps the output only if all of it fit. */
static cms_json_err render(cms_json_buf *b, const ProtobufCMessage *msg)
{
    writer w = {.b = b, .err = CMS_JSON_OK, .depth = 0};
    size_t start = b->len;
    put_message(&w, msg);
    if (w.err != CMS_JSON_OK)
        b->len = start;
    if (b->data)
        b->data[b->len] = '\0';
    return w.err;
}

cms_json_err cms_json_render_message(cms_json_buf *b, const ProtobufCMessage *msg)
{
    if (b == NULL || msg == NULL)
        return CMS_JSON_EINVAL;
    return render(b, msg);
}

cms_json_err cms_json_render_body(cms_json_buf *b, const ProtobufCMessage *envelope,
                                  unsigned first_body_field)
{
    if (b == NULL || envelope == NULL || envelope->descriptor == NULL)
        return CMS_JSON_EINVAL;
    const ProtobufCMessageDescriptor *d = envelope->descriptor;
    const char *base = (const char *)envelope;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->id < first_body_field || f->type != PROTOBUF_C_TYPE_MESSAGE ||
            f->label == PROTOBUF_C_LABEL_REPEATED)
            continue;
        const ProtobufCMessage *body = (const ProtobufCMessage *)load_ptr(base + f->offset);
        if (body != NULL && field_present(f, base + f->offset, base + f->quantifier_offset))
            return render(b, body);
    }
    return CMS_JSON_EINVAL;
}

/* ---- checking JSON text ----------------------------------------------- */

/* Nesting of text, counted before parsing so that deep input is refused
 * cheaply and never reaches the parser's recursion. Brackets inside
 * strings do not count. */
static bool depth_ok(const char *text, size_t len)
{
    int depth = 0;
    bool in_string = false, escaped = false;
    for (size_t i = 0; i < len; i++) {
        char c = text[i];
        if (in_string) {
            if (escaped)
                escaped = false;
            else if (c == '\\')
                escaped = true;
            else if (c == '"')
                in_string = false;
        } else if (c == '"') {
            in_string = true;
        } else if (c == '{' || c == '[') {
            if (++depth > CMS_JSON_MAX_DEPTH)
                return false;
        } else if (c == '}' || c == ']') {
            depth--;
        }
    }
    return true;
}

/* ---- check_object's fast path ----
 *
 * A validating scanner that allocates nothing: it accepts exactly what the
 * jansson path below accepts for the common shape of a document, and says
 * "unsure" (handing over to jansson) for what it does not decide itself: a
 * key with an escape, an object wider than its key table, a number at the
 * edge of double range. Building and freeing a jansson tree per event was
 * the largest cost of the audit service's loop. */
typedef enum { SCAN_OK, SCAN_BAD, SCAN_UNSURE } scan_result;

#define SCAN_MAX_KEYS 256

typedef struct scanner {
    const unsigned char *p, *end;
    size_t nkeys; /* keys of the objects open now, innermost last */
    struct {
        const unsigned char *s;
        size_t n;
    } keys[SCAN_MAX_KEYS];
} scanner;

static void scan_ws(scanner *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
        s->p++;
}

static int scan_hex4(scanner *s)
{
    if (s->end - s->p < 4)
        return -1;
    int v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned char c = s->p[i];
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (d < 0)
            return -1;
        v = v * 16 + d;
    }
    s->p += 4;
    return v;
}

/* Continuation bytes of one UTF-8 sequence: n of them, the first in [lo, hi]. */
static bool scan_cont(scanner *s, int n, unsigned char lo, unsigned char hi)
{
    if (s->end - s->p < n || s->p[0] < lo || s->p[0] > hi)
        return false;
    for (int i = 1; i < n; i++)
        if ((s->p[i] & 0xC0) != 0x80)
            return false;
    s->p += n;
    return true;
}

/* From just after the opening quote to just after the closing one. */
static scan_result scan_string(scanner *s, bool *escaped)
{
    while (s->p < s->end) {
        unsigned char c = *s->p++;
        if (c == '"')
            return SCAN_OK;
        if (c < 0x20)
            return SCAN_BAD;
        if (c == '\\') {
            *escaped = true;
            if (s->p == s->end)
                return SCAN_BAD;
            c = *s->p++;
            if (strchr("\"\\/bfnrt", c) != NULL && c != '\0')
                continue;
            if (c != 'u')
                return SCAN_BAD;
            int cp = scan_hex4(s);
            if (cp <= 0 || (cp >= 0xDC00 && cp <= 0xDFFF))
                return SCAN_BAD; /* \u0000 (jsonb refuses it), or a lone low surrogate */
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (s->end - s->p < 2 || s->p[0] != '\\' || s->p[1] != 'u')
                    return SCAN_BAD;
                s->p += 2;
                int lo = scan_hex4(s);
                if (lo < 0xDC00 || lo > 0xDFFF)
                    return SCAN_BAD;
            }
            continue;
        }
        if (c < 0x80)
            continue;
        bool ok = c >= 0xC2 && c <= 0xDF   ? scan_cont(s, 1, 0x80, 0xBF)
                  : c == 0xE0              ? scan_cont(s, 2, 0xA0, 0xBF)
                  : c == 0xED              ? scan_cont(s, 2, 0x80, 0x9F) /* no surrogates */
                  : c >= 0xE1 && c <= 0xEF ? scan_cont(s, 2, 0x80, 0xBF)
                  : c == 0xF0              ? scan_cont(s, 3, 0x90, 0xBF)
                  : c >= 0xF1 && c <= 0xF3 ? scan_cont(s, 3, 0x80, 0xBF)
                  : c == 0xF4              ? scan_cont(s, 3, 0x80, 0x8F)
                                           : false;
        if (!ok)
            return SCAN_BAD;
    }
    return SCAN_BAD; /* unterminated */
}

static bool is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

/* The JSON number grammar, and its decimal magnitude against double's
 * range, since the jansson path refuses a real that overflows a double. */
static scan_result scan_number(scanner *s)
{
    long mag = 0; /* decimal exponent of the first significant digit */
    bool nonzero = false;
    if (s->p < s->end && *s->p == '-')
        s->p++;
    if (s->p == s->end || !is_digit(*s->p))
        return SCAN_BAD;
    if (*s->p == '0') {
        s->p++;
    } else {
        nonzero = true;
        mag = -1;
        while (s->p < s->end && is_digit(*s->p)) {
            if (mag < 100000)
                mag++;
            s->p++;
        }
    }
    if (s->p < s->end && *s->p == '.') {
        s->p++;
        if (s->p == s->end || !is_digit(*s->p))
            return SCAN_BAD;
        long lead = 0;
        while (s->p < s->end && is_digit(*s->p)) {
            if (!nonzero) {
                if (*s->p == '0') {
                    if (lead < 100000)
                        lead++;
                } else {
                    nonzero = true;
                    mag = -lead - 1;
                }
            }
            s->p++;
        }
    }
    if (s->p < s->end && (*s->p == 'e' || *s->p == 'E')) {
        s->p++;
        bool neg = false;
        if (s->p < s->end && (*s->p == '+' || *s->p == '-'))
            neg = *s->p++ == '-';
        if (s->p == s->end || !is_digit(*s->p))
            return SCAN_BAD;
        long e = 0;
        while (s->p < s->end && is_digit(*s->p)) {
            if (e < 100000)
                e = e * 10 + (*s->p - '0');
            s->p++;
        }
        mag += neg ? -e : e;
    }
    if (nonzero && mag >= 308)
        return mag > 308 ? SCAN_BAD : SCAN_UNSURE; /* 1e308 fits, 2e308 does not */
    return SCAN_OK;
}

static scan_result scan_value(scanner *s, int depth);

static scan_result scan_literal(scanner *s, const char *word)
{
    size_t n = strlen(word);
    if ((size_t)(s->end - s->p) < n || memcmp(s->p, word, n) != 0)
        return SCAN_BAD;
    s->p += n;
    return SCAN_OK;
}

static scan_result scan_object(scanner *s, int depth)
{
    if (depth > CMS_JSON_MAX_DEPTH)
        return SCAN_BAD;
    s->p++; /* '{' */
    size_t base = s->nkeys;
    scan_ws(s);
    if (s->p < s->end && *s->p == '}') {
        s->p++;
        return SCAN_OK;
    }
    for (;;) {
        scan_ws(s);
        if (s->p == s->end || *s->p != '"')
            return SCAN_BAD;
        const unsigned char *key = ++s->p;
        bool escaped = false;
        scan_result r = scan_string(s, &escaped);
        if (r != SCAN_OK)
            return r;
        size_t klen = (size_t)(s->p - 1 - key);
        if (escaped || s->nkeys == SCAN_MAX_KEYS)
            return SCAN_UNSURE; /* jansson compares decoded keys */
        for (size_t i = base; i < s->nkeys; i++)
            if (s->keys[i].n == klen && memcmp(s->keys[i].s, key, klen) == 0)
                return SCAN_BAD; /* a repeated key */
        s->keys[s->nkeys].s = key;
        s->keys[s->nkeys].n = klen;
        s->nkeys++;
        scan_ws(s);
        if (s->p == s->end || *s->p != ':')
            return SCAN_BAD;
        s->p++;
        r = scan_value(s, depth);
        if (r != SCAN_OK)
            return r;
        scan_ws(s);
        if (s->p == s->end)
            return SCAN_BAD;
        if (*s->p == ',') {
            s->p++;
            continue;
        }
        if (*s->p != '}')
            return SCAN_BAD;
        s->p++;
        s->nkeys = base;
        return SCAN_OK;
    }
}

static scan_result scan_array(scanner *s, int depth)
{
    if (depth > CMS_JSON_MAX_DEPTH)
        return SCAN_BAD;
    s->p++; /* '[' */
    scan_ws(s);
    if (s->p < s->end && *s->p == ']') {
        s->p++;
        return SCAN_OK;
    }
    for (;;) {
        scan_result r = scan_value(s, depth);
        if (r != SCAN_OK)
            return r;
        scan_ws(s);
        if (s->p == s->end)
            return SCAN_BAD;
        if (*s->p == ',') {
            s->p++;
            continue;
        }
        if (*s->p != ']')
            return SCAN_BAD;
        s->p++;
        return SCAN_OK;
    }
}

static scan_result scan_value(scanner *s, int depth)
{
    scan_ws(s);
    if (s->p == s->end)
        return SCAN_BAD;
    bool escaped = false;
    switch (*s->p) {
    case '{':
        return scan_object(s, depth + 1);
    case '[':
        return scan_array(s, depth + 1);
    case '"':
        s->p++;
        return scan_string(s, &escaped);
    case 't':
        return scan_literal(s, "true");
    case 'f':
        return scan_literal(s, "false");
    case 'n':
        return scan_literal(s, "null");
    default:
        return scan_number(s);
    }
}

static scan_result scan_document(const char *text, size_t len)
{
    scanner s;
    s.p = (const unsigned char *)text;
    s.end = s.p + len;
    s.nkeys = 0;
    scan_ws(&s);
    if (s.p == s.end || *s.p != '{')
        return SCAN_BAD;
    scan_result r = scan_object(&s, 1);
    if (r != SCAN_OK)
        return r;
    scan_ws(&s);
    return s.p == s.end ? SCAN_OK : SCAN_BAD;
}

static cms_json_err check_object(cms_json_buf *b, const char *text, size_t len, bool reference)
{
    cms_json_err err = CMS_JSON_OK;
    json_t *doc = NULL;
    json_error_t jerr;
    writer w = {.b = b, .err = CMS_JSON_OK, .depth = 0};
    if (b == NULL || (text == NULL && len > 0)) {
        err = CMS_JSON_EINVAL;
        goto out;
    }
    if (len > b->max - b->len) {
        err = CMS_JSON_ETOOBIG;
        goto out;
    }
    /* no JSON text holds a raw NUL (a string escapes it, and it is no
     * whitespace); jansson's reader lets one through */
    if (len == 0 || memchr(text, '\0', len) != NULL) {
        err = CMS_JSON_EINVAL;
        goto out;
    }
    /* the scanner bounds depth itself; jansson would recurse first */
    if (!reference) {
        switch (scan_document(text, len)) {
        case SCAN_OK:
            goto accept;
        case SCAN_BAD:
            err = CMS_JSON_EINVAL;
            goto out;
        case SCAN_UNSURE:
            break;
        }
    }
    if (!depth_ok(text, len)) {
        err = CMS_JSON_EINVAL;
        goto out;
    }
    /* Without JSON_ALLOW_NUL jansson refuses "\u0000", as jsonb does; it
     * also refuses invalid UTF-8 and lone surrogates. Integers are read as
     * reals so that one beyond 64 bits (fine for jsonb's numeric) is not
     * refused; the value itself is never used. */
    doc = json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_DECODE_INT_AS_REAL, &jerr);
    if (doc == NULL || !json_is_object(doc)) {
        err = CMS_JSON_EINVAL;
        goto out;
    }
accept:
    put(&w, text, len);
    err = w.err;
    if (err == CMS_JSON_OK)
        b->data[b->len] = '\0';
out:
    json_decref(doc);
    return err;
}

cms_json_err cms_json_check_object(cms_json_buf *b, const char *text, size_t len)
{
    return check_object(b, text, len, false);
}

cms_json_err cms_json_check_object_reference(cms_json_buf *b, const char *text, size_t len)
{
    return check_object(b, text, len, true);
}

/* ---- numbers numeric cannot hold ---- */

/* The scale numeric would give the number at p[0..n): digits after the
 * point less the exponent, at least 0; saturates instead of overflowing. */
static int64_t numeric_scale(const char *p, size_t n)
{
    size_t i = 0;
    if (i < n && p[i] == '-')
        i++;
    while (i < n && p[i] >= '0' && p[i] <= '9')
        i++;
    int64_t frac = 0;
    if (i < n && p[i] == '.') {
        for (i++; i < n && p[i] >= '0' && p[i] <= '9'; i++)
            frac++;
    }
    int64_t exp = 0;
    if (i < n && (p[i] == 'e' || p[i] == 'E')) {
        i++;
        bool neg = false;
        if (i < n && (p[i] == '+' || p[i] == '-'))
            neg = p[i++] == '-';
        for (; i < n && p[i] >= '0' && p[i] <= '9'; i++)
            if (exp < INT64_C(1) << 40)
                exp = exp * 10 + (p[i] - '0');
        if (neg)
            exp = -exp;
    }
    int64_t scale = frac - exp;
    return scale > 0 ? scale : 0;
}

bool cms_json_numeric_overflow(const char *text, size_t len, size_t *at)
{
    bool in_string = false;
    for (size_t i = 0; i < len; i++) {
        char c = text[i];
        if (in_string) {
            if (c == '\\')
                i++; /* whatever is escaped, it ends no string */
            else if (c == '"')
                in_string = false;
            continue;
        }
        if (c == '"') {
            in_string = true;
            continue;
        }
        if (c != '-' && (c < '0' || c > '9'))
            continue;
        size_t start = i;
        while (i < len && (text[i] == '-' || text[i] == '+' || text[i] == '.' || text[i] == 'e' ||
                           text[i] == 'E' || (text[i] >= '0' && text[i] <= '9')))
            i++;
        if (numeric_scale(text + start, i - start) > CMS_JSON_NUMERIC_SCALE_MAX) {
            if (at != NULL)
                *at = start;
            return true;
        }
        i--; /* the loop's i++ takes the byte after the number */
    }
    return false;
}
