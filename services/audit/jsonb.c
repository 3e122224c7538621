/* jsonb's printed form of a JSON text; see jsonb.h.
 *
 * One pass parses the text into nodes (strings unescaped into a scratch
 * buffer, numbers kept as their text), a second prints them: objects in
 * jsonb's key order, numbers as numeric_out would. */
#include "audit/jsonb.h"

#include "json.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* numeric's limits (PostgreSQL 15): an exponent below 1073741823 in
 * magnitude, a scale of at most 16383, fewer than 131072 integer digits */
#define MAX_EXPONENT 1073741822L
#define MAX_SCALE 16383L
#define MAX_INT_DIGITS 131072L

typedef enum { N_NULL, N_TRUE, N_FALSE, N_NUM, N_STR, N_ARR, N_OBJ } node_type;

typedef struct node {
    node_type type;
    uint32_t off, len; /* N_STR: in scratch; N_NUM: in the input; N_ARR/N_OBJ: in kids, count */
} node;

typedef struct vec {
    void *p;
    size_t n, cap, size;
} vec;

struct audit_jsonb {
    vec nodes, kids, stack, order; /* node; uint32_t; uint32_t; uint32_t */
    vec scratch, out;              /* bytes */
    const char *in;
    size_t pos, len;
    int depth;
};

/* Also allocates an empty vector for more == 0: memcpy and memset take no
 * null pointer, not even for 0 bytes. */
static bool vec_reserve(vec *v, size_t more)
{
    if (v->n + more <= v->cap && v->p != NULL)
        return true;
    size_t cap = v->cap ? v->cap : 64;
    while (cap < v->n + more)
        cap *= 2;
    void *p = realloc(v->p, cap * v->size);
    if (p == NULL)
        return false;
    v->p = p;
    v->cap = cap;
    return true;
}

static bool vec_push(vec *v, const void *x)
{
    if (!vec_reserve(v, 1))
        return false;
    memcpy((char *)v->p + v->n * v->size, x, v->size);
    v->n++;
    return true;
}

static bool bytes_put(vec *v, const void *s, size_t n)
{
    if (!vec_reserve(v, n))
        return false;
    memcpy((char *)v->p + v->n, s, n);
    v->n += n;
    return true;
}

audit_jsonb *audit_jsonb_new(void)
{
    audit_jsonb *j = calloc(1, sizeof *j);
    if (j == NULL)
        return NULL;
    j->nodes.size = sizeof(node);
    j->kids.size = j->stack.size = j->order.size = sizeof(uint32_t);
    j->scratch.size = j->out.size = 1;
    return j;
}

void audit_jsonb_free(audit_jsonb *j)
{
    if (j == NULL)
        return;
    free(j->nodes.p);
    free(j->kids.p);
    free(j->stack.p);
    free(j->order.p);
    free(j->scratch.p);
    free(j->out.p);
    free(j);
}

/* ---- parsing ---- */

static void ws(audit_jsonb *j)
{
    while (j->pos < j->len && (j->in[j->pos] == ' ' || j->in[j->pos] == '\t' ||
                               j->in[j->pos] == '\n' || j->in[j->pos] == '\r'))
        j->pos++;
}

static int hex4(audit_jsonb *j)
{
    if (j->len - j->pos < 4)
        return -1;
    int v = 0;
    for (int i = 0; i < 4; i++) {
        char c = j->in[j->pos++];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= c - '0';
        else if (c >= 'a' && c <= 'f')
            v |= c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            v |= c - 'A' + 10;
        else
            return -1;
    }
    return v;
}

static bool put_utf8(vec *v, uint32_t cp)
{
    uint8_t b[4];
    size_t n;
    if (cp < 0x80) {
        b[0] = (uint8_t)cp;
        n = 1;
    } else if (cp < 0x800) {
        b[0] = (uint8_t)(0xc0 | cp >> 6);
        b[1] = (uint8_t)(0x80 | (cp & 0x3f));
        n = 2;
    } else if (cp < 0x10000) {
        b[0] = (uint8_t)(0xe0 | cp >> 12);
        b[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
        b[2] = (uint8_t)(0x80 | (cp & 0x3f));
        n = 3;
    } else {
        b[0] = (uint8_t)(0xf0 | cp >> 18);
        b[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3f));
        b[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
        b[3] = (uint8_t)(0x80 | (cp & 0x3f));
        n = 4;
    }
    return bytes_put(v, b, n);
}

/* A string at j->pos (its opening quote), unescaped into scratch. Bytes
 * are copied as they are: the input's UTF-8 was checked before. */
static bool parse_string(audit_jsonb *j, node *out)
{
    j->pos++;
    size_t start = j->scratch.n;
    for (;;) {
        size_t run = j->pos;
        while (run < j->len && j->in[run] != '"' && j->in[run] != '\\' &&
               (unsigned char)j->in[run] >= 0x20)
            run++;
        if (!bytes_put(&j->scratch, j->in + j->pos, run - j->pos))
            return false;
        j->pos = run;
        if (j->pos >= j->len || (unsigned char)j->in[j->pos] < 0x20)
            return false;
        if (j->in[j->pos++] == '"')
            break;
        if (j->pos >= j->len)
            return false;
        char e = j->in[j->pos++], c;
        switch (e) {
        case '"':
        case '\\':
        case '/':
            c = e;
            break;
        case 'b':
            c = '\b';
            break;
        case 'f':
            c = '\f';
            break;
        case 'n':
            c = '\n';
            break;
        case 'r':
            c = '\r';
            break;
        case 't':
            c = '\t';
            break;
        case 'u': {
            int u = hex4(j);
            if (u <= 0) /* a bad escape, or \u0000: jsonb refuses it */
                return false;
            uint32_t cp = (uint32_t)u;
            if (cp >= 0xdc00 && cp <= 0xdfff)
                return false;
            if (cp >= 0xd800 && cp <= 0xdbff) {
                if (j->len - j->pos < 6 || j->in[j->pos] != '\\' || j->in[j->pos + 1] != 'u')
                    return false;
                j->pos += 2;
                int lo = hex4(j);
                if (lo < 0xdc00 || lo > 0xdfff)
                    return false;
                cp = 0x10000 + ((cp - 0xd800) << 10) + ((uint32_t)lo - 0xdc00);
            }
            if (!put_utf8(&j->scratch, cp))
                return false;
            continue;
        }
        default:
            return false;
        }
        if (!bytes_put(&j->scratch, &c, 1))
            return false;
    }
    *out = (node){.type = N_STR, .off = (uint32_t)start, .len = (uint32_t)(j->scratch.n - start)};
    return true;
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool parse_number(audit_jsonb *j, node *out)
{
    size_t s = j->pos, p = j->pos;
    if (p < j->len && j->in[p] == '-')
        p++;
    size_t d = p;
    while (p < j->len && is_digit(j->in[p]))
        p++;
    if (p == d || (j->in[d] == '0' && p - d > 1))
        return false;
    if (p < j->len && j->in[p] == '.') {
        d = ++p;
        while (p < j->len && is_digit(j->in[p]))
            p++;
        if (p == d)
            return false;
    }
    if (p < j->len && (j->in[p] == 'e' || j->in[p] == 'E')) {
        p++;
        if (p < j->len && (j->in[p] == '+' || j->in[p] == '-'))
            p++;
        d = p;
        while (p < j->len && is_digit(j->in[p]))
            p++;
        if (p == d)
            return false;
    }
    j->pos = p;
    *out = (node){.type = N_NUM, .off = (uint32_t)s, .len = (uint32_t)(p - s)};
    return true;
}

static bool literal(audit_jsonb *j, const char *w, node_type t, node *out)
{
    size_t n = strlen(w);
    if (j->len - j->pos < n || memcmp(j->in + j->pos, w, n) != 0)
        return false;
    j->pos += n;
    *out = (node){.type = t};
    return true;
}

static bool parse_value(audit_jsonb *j, uint32_t *idx);

/* An array or an object: its children (for an object, key and value in
 * turn) gather on the stack and move to kids once it closes. */
static bool parse_container(audit_jsonb *j, bool object, node *out)
{
    if (++j->depth > CMS_JSON_MAX_DEPTH)
        return false;
    j->pos++;
    size_t base = j->stack.n;
    ws(j);
    char close = object ? '}' : ']';
    if (j->pos < j->len && j->in[j->pos] == close) {
        j->pos++;
    } else {
        for (;;) {
            uint32_t k;
            ws(j);
            if (object) {
                node key;
                if (j->pos >= j->len || j->in[j->pos] != '"' || !parse_string(j, &key))
                    return false;
                k = (uint32_t)j->nodes.n;
                if (!vec_push(&j->nodes, &key) || !vec_push(&j->stack, &k))
                    return false;
                ws(j);
                if (j->pos >= j->len || j->in[j->pos++] != ':')
                    return false;
            }
            if (!parse_value(j, &k) || !vec_push(&j->stack, &k))
                return false;
            ws(j);
            if (j->pos >= j->len)
                return false;
            char c = j->in[j->pos++];
            if (c == close)
                break;
            if (c != ',')
                return false;
        }
    }
    size_t n = j->stack.n - base;
    size_t kstart = j->kids.n;
    if (!vec_reserve(&j->kids, n))
        return false;
    if (n > 0) /* an empty one may meet a stack never allocated */
        memcpy((uint32_t *)j->kids.p + kstart, (uint32_t *)j->stack.p + base, n * sizeof(uint32_t));
    j->kids.n += n;
    j->stack.n = base;
    j->depth--;
    *out = (node){.type = object ? N_OBJ : N_ARR,
                  .off = (uint32_t)kstart,
                  .len = (uint32_t)(object ? n / 2 : n)};
    return true;
}

static bool parse_value(audit_jsonb *j, uint32_t *idx)
{
    ws(j);
    if (j->pos >= j->len)
        return false;
    node v;
    bool ok;
    switch (j->in[j->pos]) {
    case '{':
        ok = parse_container(j, true, &v);
        break;
    case '[':
        ok = parse_container(j, false, &v);
        break;
    case '"':
        ok = parse_string(j, &v);
        break;
    case 't':
        ok = literal(j, "true", N_TRUE, &v);
        break;
    case 'f':
        ok = literal(j, "false", N_FALSE, &v);
        break;
    case 'n':
        ok = literal(j, "null", N_NULL, &v);
        break;
    default:
        ok = parse_number(j, &v);
    }
    *idx = (uint32_t)j->nodes.n;
    return ok && vec_push(&j->nodes, &v);
}

/* ---- printing ---- */

static bool print_string(audit_jsonb *j, const node *s)
{
    const char *p = (const char *)j->scratch.p + s->off, *end = p + s->len;
    if (!bytes_put(&j->out, "\"", 1))
        return false;
    while (p < end) {
        const char *run = p;
        while (run < end && *run != '"' && *run != '\\' && (unsigned char)*run >= 0x20)
            run++;
        if (!bytes_put(&j->out, p, (size_t)(run - p)))
            return false;
        if (run == end)
            break;
        char esc[8];
        size_t n = 2;
        esc[0] = '\\';
        switch (*run) {
        case '"':
        case '\\':
            esc[1] = *run;
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
            n = (size_t)snprintf(esc, sizeof esc, "\\u%04x", (unsigned)(unsigned char)*run);
        }
        if (!bytes_put(&j->out, esc, n))
            return false;
        p = run + 1;
    }
    return bytes_put(&j->out, "\"", 1);
}

static bool put_zeros(vec *v, long n)
{
    if (!vec_reserve(v, (size_t)n))
        return false;
    memset((char *)v->p + v->n, '0', (size_t)n);
    v->n += (size_t)n;
    return true;
}

/* numeric_in, then numeric_out: the value's digits at the scale the input
 * implies (its fraction digits less its exponent, at least 0). */
static bool print_number(audit_jsonb *j, const node *num)
{
    const char *p = j->in + num->off, *end = p + num->len;
    bool neg = *p == '-';
    if (neg)
        p++;
    const char *ip = p;
    while (p < end && is_digit(*p))
        p++;
    const char *iend = p, *fp = p, *fend = p;
    if (p < end && *p == '.') {
        fp = ++p;
        while (p < end && is_digit(*p))
            p++;
        fend = p;
    }
    if (p == end) {
        /* no exponent (the common case): JSON's integer part has no leading
         * zero, so numeric prints the text as it is, but for zero's sign */
        if (fend - fp > MAX_SCALE || iend - ip > MAX_INT_DIGITS)
            return false;
        bool zero = true;
        for (const char *q = ip; q < fend && zero; q++)
            zero = *q == '0' || *q == '.';
        const char *from = neg && zero ? ip : j->in + num->off;
        return bytes_put(&j->out, from, (size_t)(end - from));
    }
    long exp = 0;
    {
        p++; /* e or E */
        bool eneg = *p == '-';
        if (*p == '-' || *p == '+')
            p++;
        for (; p < end; p++) {
            exp = exp * 10 + (*p - '0');
            if (exp > MAX_EXPONENT)
                return false; /* numeric refuses such exponents */
        }
        if (eneg)
            exp = -exp;
    }
    long nfrac = (long)(fend - fp);
    long scale = nfrac - exp > 0 ? nfrac - exp : 0;
    if (scale > MAX_SCALE)
        return false;
    /* the digits D, without leading zeros: the value is D * 10^(exp - nfrac) */
    char *digits = NULL;
    size_t nd = (size_t)(iend - ip) + (size_t)nfrac;
    digits = malloc(nd + 1);
    if (digits == NULL)
        return false;
    memcpy(digits, ip, (size_t)(iend - ip));
    memcpy(digits + (iend - ip), fp, (size_t)nfrac);
    size_t lead = 0;
    while (lead < nd && digits[lead] == '0')
        lead++;
    const char *d = digits + lead;
    long len = (long)(nd - lead), k = exp - nfrac;
    bool ok = true;
    if (len > 0 && len + k > MAX_INT_DIGITS) {
        free(digits);
        return false;
    }
    if (neg && len > 0)
        ok = bytes_put(&j->out, "-", 1);
    if (k >= 0) {
        if (len == 0)
            ok = ok && bytes_put(&j->out, "0", 1);
        else
            ok = ok && bytes_put(&j->out, d, (size_t)len) && put_zeros(&j->out, k);
        /* scale is 0 here */
    } else {
        long m = -k; /* digits after the point: m == scale */
        if (len > m)
            ok = ok && bytes_put(&j->out, d, (size_t)(len - m));
        else
            ok = ok && bytes_put(&j->out, "0", 1);
        ok = ok && bytes_put(&j->out, ".", 1);
        if (len < m)
            ok = ok && put_zeros(&j->out, m - len) && bytes_put(&j->out, d, (size_t)len);
        else
            ok = ok && bytes_put(&j->out, d + (len - m), (size_t)m);
    }
    free(digits);
    return ok;
}

static const node *at(const audit_jsonb *j, uint32_t i)
{
    return (const node *)j->nodes.p + i;
}

static uint32_t kid(const audit_jsonb *j, size_t i)
{
    return ((const uint32_t *)j->kids.p)[i];
}

/* Members are sorted by position m (key kid(off + 2m), value the kid after
 * it) in jsonb's key order: shorter first, then bytewise, then by position,
 * so that of a repeated key the last comes last. */
typedef struct sort_ctx {
    const audit_jsonb *j;
    uint32_t off;
} sort_ctx;

static const node *member_key(const audit_jsonb *j, uint32_t off, uint32_t m)
{
    return at(j, kid(j, off + 2 * (size_t)m));
}

static int key_cmp(const node *ka, const node *kb, const audit_jsonb *j)
{
    if (ka->len != kb->len)
        return ka->len < kb->len ? -1 : 1;
    return memcmp((const char *)j->scratch.p + ka->off, (const char *)j->scratch.p + kb->off,
                  ka->len);
}

static int member_cmp(const void *a, const void *b, void *arg)
{
    const sort_ctx *c = arg;
    uint32_t ma = *(const uint32_t *)a, mb = *(const uint32_t *)b;
    int r = key_cmp(member_key(c->j, c->off, ma), member_key(c->j, c->off, mb), c->j);
    if (r != 0)
        return r;
    return ma < mb ? -1 : ma > mb;
}

static bool print_value(audit_jsonb *j, uint32_t idx);

static bool print_object(audit_jsonb *j, const node *o)
{
    if (!bytes_put(&j->out, "{", 1))
        return false;
    size_t base = j->order.n;
    if (!vec_reserve(&j->order, o->len))
        return false;
    uint32_t *ord = (uint32_t *)j->order.p + base;
    for (uint32_t m = 0; m < o->len; m++)
        ord[m] = m;
    j->order.n += o->len;
    sort_ctx c = {.j = j, .off = o->off};
    qsort_r(ord, o->len, sizeof *ord, member_cmp, &c);
    bool first = true;
    for (uint32_t i = 0; i < o->len; i++) {
        /* nested objects may grow (move) the order vector */
        const uint32_t *op = (const uint32_t *)j->order.p + base;
        uint32_t m = op[i];
        if (i + 1 < o->len &&
            key_cmp(member_key(j, o->off, m), member_key(j, o->off, op[i + 1]), j) == 0)
            continue; /* the last of a repeated key wins */
        if ((!first && !bytes_put(&j->out, ", ", 2)) ||
            !print_string(j, member_key(j, o->off, m)) || !bytes_put(&j->out, ": ", 2) ||
            !print_value(j, kid(j, o->off + 2 * (size_t)m + 1)))
            return false;
        first = false;
    }
    j->order.n = base;
    return bytes_put(&j->out, "}", 1);
}

static bool print_value(audit_jsonb *j, uint32_t idx)
{
    const node *v = at(j, idx);
    switch (v->type) {
    case N_NULL:
        return bytes_put(&j->out, "null", 4);
    case N_TRUE:
        return bytes_put(&j->out, "true", 4);
    case N_FALSE:
        return bytes_put(&j->out, "false", 5);
    case N_NUM:
        return print_number(j, v);
    case N_STR:
        return print_string(j, v);
    case N_ARR:
        if (!bytes_put(&j->out, "[", 1))
            return false;
        for (uint32_t i = 0; i < v->len; i++)
            if ((i > 0 && !bytes_put(&j->out, ", ", 2)) || !print_value(j, kid(j, v->off + i)))
                return false;
        return bytes_put(&j->out, "]", 1);
    case N_OBJ:
        return print_object(j, v);
    }
    return false;
}

bool audit_jsonb_text(audit_jsonb *j, const char *in, size_t len, const char **out, size_t *out_len)
{
    if (len >= UINT32_MAX)
        return false;
    j->nodes.n = j->kids.n = j->stack.n = j->order.n = j->scratch.n = j->out.n = 0;
    j->in = in;
    j->len = len;
    j->pos = 0;
    j->depth = 0;
    uint32_t root;
    if (!parse_value(j, &root))
        return false;
    ws(j);
    if (j->pos != len || !print_value(j, root) || !bytes_put(&j->out, "", 1))
        return false;
    *out = j->out.p;
    *out_len = j->out.n - 1;
    return true;
}
