/* The numeric CSV reader; see dataset.h. Two passes over the text: the
 * header and a count of the lines size the arrays (within the limits)
 * before the second pass fills them, so nothing grows while it reads. */
#include "dataset.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CELLS_MAX (((size_t)1) << 27)
#define SHOWN_MAX 40 /* characters of a field or a column name quoted in a message */

static const char *const code_names[] = {DATASET_ERRORS(CMS_ENUM_TEXT)};

const char *dataset_strerror(dataset_code c)
{
    return cms_enum_text(code_names, DATASET_NERRORS, (int)c);
}

const dataset_limits dataset_default_limits = {
    .max_bytes = ((size_t)1) << 30,
    .max_rows = 10000000,
    .max_features = 10000,
};

static dataset_code fail(dataset_err *e, dataset_code code, size_t line, size_t column,
                         const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static dataset_code fail(dataset_err *e, dataset_code code, size_t line, size_t column,
                         const char *fmt, ...)
{
    e->code = code;
    e->line = line;
    e->column = column;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    return code;
}

bool dataset_name_ok(const char *name, char *why, size_t whylen)
{
    size_t n = strlen(name);
    const char *bad = NULL;
    if (n == 0)
        bad = "is empty";
    else if (n > DATASET_NAME_MAX)
        bad = "is longer than 255 characters";
    else if (strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-") != n)
        bad = "holds a character other than A-Z, a-z, 0-9, '_', '.' and '-'";
    else if (strstr(name, "..") != NULL)
        bad = "holds \"..\"";
    if (bad == NULL)
        return true;
    if (why != NULL && whylen > 0)
        snprintf(why, whylen,
                 "the dataset name %s: it must be 1 to 255 of A-Z, a-z, 0-9, '_', '.' and '-', "
                 "without \"..\" (it names a file of the data directory)",
                 bad);
    return false;
}

bool dataset_path(const char *dir, const char *name, char *out, size_t len)
{
    int n = snprintf(out, len, "%s/%s.csv", dir, name);
    return n >= 0 && (size_t)n < len;
}

/* text[0..n) for a message: quoted by the caller, cut, control characters as '?' */
static const char *shown(const char *text, size_t n, char out[SHOWN_MAX + 4])
{
    size_t k = n < SHOWN_MAX ? n : SHOWN_MAX;
    for (size_t i = 0; i < k; i++) {
        unsigned char ch = (unsigned char)text[i];
        out[i] = ch < 0x20 || ch == 0x7f ? '?' : (char)ch;
    }
    if (k < n) {
        memcpy(out + k, "...", 3);
        k += 3;
    }
    out[k] = '\0';
    return out;
}

/* One line of the text: [start, end) without its "\r\n" or "\n". */
typedef struct span {
    const char *start, *end;
} span;

/* The line at *p (< limit); moves *p past its line end. */
static span next_line(const char **p, const char *limit)
{
    span s = {*p, *p};
    const char *nl = memchr(*p, '\n', (size_t)(limit - *p));
    s.end = nl != NULL ? nl : limit;
    *p = nl != NULL ? nl + 1 : limit;
    if (s.end > s.start && s.end[-1] == '\r')
        s.end--;
    return s;
}

static size_t count_fields(span s)
{
    size_t n = 1;
    for (const char *c = s.start; c < s.end; c++)
        n += *c == ',';
    return n;
}

/* A decimal number, finite: digits, sign, point and exponent only (no
 * blanks, "inf", "nan" or hex, which strtod would take). */
static bool number(const char *f, size_t n, double *v)
{
    char buf[DATASET_FIELD_MAX + 1];
    if (n == 0 || n > DATASET_FIELD_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (strchr("0123456789+-.eE", f[i]) == NULL || f[i] == '\0')
            return false;
    memcpy(buf, f, n);
    buf[n] = '\0';
    char *end = NULL;
    errno = 0;
    double d = strtod(buf, &end);
    if (end != buf + n || !isfinite(d))
        return false;
    *v = d;
    return true;
}

typedef struct header {
    size_t columns;
    span *names; /* columns */
} header;

static dataset_code read_header(span s, const dataset_limits *lim, header *h, dataset_err *e)
{
    size_t n = count_fields(s);
    if (n < 2)
        return fail(e, DATASET_EHEADER, 1, 0,
                    "line 1 (the header) names %zu column: want the features' names and then "
                    "\"label\"",
                    n);
    if (n - 1 > lim->max_features)
        return fail(e, DATASET_ETOOBIG, 1, 0,
                    "line 1 (the header) names %zu features: at most %zu are taken", n - 1,
                    lim->max_features);
    h->names = calloc(n, sizeof *h->names);
    if (h->names == NULL)
        return fail(e, DATASET_ENOMEM, 0, 0, "out of memory reading the header");
    h->columns = n;
    const char *f = s.start;
    for (size_t c = 0; c < n; c++) {
        const char *comma = memchr(f, ',', (size_t)(s.end - f));
        const char *end = comma != NULL ? comma : s.end;
        h->names[c] = (span){f, end};
        if (end == f)
            return fail(e, DATASET_EHEADER, 1, c + 1,
                        "line 1 (the header), column %zu: the column has no name", c + 1);
        f = end + 1;
    }
    span last = h->names[n - 1];
    if ((size_t)(last.end - last.start) != 5 || memcmp(last.start, "label", 5) != 0) {
        char v[SHOWN_MAX + 4];
        return fail(e, DATASET_EHEADER, 1, n,
                    "line 1 (the header), column %zu: the last column is \"%s\": it must be "
                    "\"label\"",
                    n, shown(last.start, (size_t)(last.end - last.start), v));
    }
    return DATASET_OK;
}

/* The examples' lines after the header, as the second pass will see them;
 * more than max (the limit) stops the count. */
static size_t count_rows(const char *p, const char *limit, size_t max)
{
    size_t rows = 0;
    while (p < limit && rows <= max) {
        const char *nl = memchr(p, '\n', (size_t)(limit - p));
        rows++;
        p = nl != NULL ? nl + 1 : limit;
    }
    return rows;
}

static dataset_code read_row(span s, size_t line, const header *h, double *x, uint8_t *y,
                             dataset_err *e)
{
    char v[SHOWN_MAX + 4], name[SHOWN_MAX + 4];
    if (s.start == s.end)
        return fail(e, DATASET_ECOLUMNS, line, 0,
                    "line %zu is empty: want %zu fields (empty lines are not allowed)", line,
                    h->columns);
    size_t n = count_fields(s);
    if (n != h->columns)
        return fail(e, DATASET_ECOLUMNS, line, 0, "line %zu has %zu fields: the header has %zu",
                    line, n, h->columns);
    const char *f = s.start;
    for (size_t c = 0; c < n; c++) {
        const char *comma = memchr(f, ',', (size_t)(s.end - f));
        const char *end = comma != NULL ? comma : s.end;
        size_t len = (size_t)(end - f);
        span col = h->names[c];
        double d = 0;
        bool ok = number(f, len, &d);
        if (c + 1 < n && !ok)
            return fail(e, DATASET_ENUMBER, line, c + 1,
                        "line %zu, column %zu (\"%s\"): \"%s\" is not a finite decimal number",
                        line, c + 1, shown(col.start, (size_t)(col.end - col.start), name),
                        shown(f, len, v));
        if (c + 1 < n) {
            x[c] = d;
        } else if (ok && (d == 0.0 || d == 1.0)) {
            *y = d == 1.0;
        } else {
            return fail(e, DATASET_ELABEL, line, c + 1,
                        "line %zu, column %zu (\"label\"): the label \"%s\" is not 0 or 1", line,
                        c + 1, shown(f, len, v));
        }
        f = end + 1;
    }
    return DATASET_OK;
}

dataset_code dataset_parse(const char *text, size_t len, const dataset_limits *limits,
                           dpsgd_data *out, dataset_err *e)
{
    const dataset_limits *lim = limits != NULL ? limits : &dataset_default_limits;
    dataset_code code = DATASET_OK;
    header h = {0, NULL};
    dpsgd_data d = {0, 0, NULL, NULL};
    memset(out, 0, sizeof *out);
    memset(e, 0, sizeof *e);
    if (len == 0) {
        code = fail(e, DATASET_EEMPTY, 0, 0, "the file is empty: want a header line and rows");
        goto out;
    }
    if (len > lim->max_bytes) {
        code = fail(e, DATASET_ETOOBIG, 0, 0, "the file has %zu bytes: at most %zu are taken", len,
                    lim->max_bytes);
        goto out;
    }
    if (memchr(text, '\0', len) != NULL) {
        code = fail(e, DATASET_EREAD, 0, 0, "the file holds a NUL byte: it is not a CSV text");
        goto out;
    }
    const char *p = text, *limit = text + len;
    code = read_header(next_line(&p, limit), lim, &h, e);
    if (code != DATASET_OK)
        goto out;
    d.features = h.columns - 1;
    size_t max_rows = lim->max_rows;
    if (max_rows > CELLS_MAX / d.features)
        max_rows = CELLS_MAX / d.features;
    size_t rows = count_rows(p, limit, max_rows);
    if (rows == 0) {
        code = fail(e, DATASET_EEMPTY, 2, 0, "the file has a header and no rows");
        goto out;
    }
    if (rows > max_rows) {
        code = fail(e, DATASET_ETOOBIG, 0, 0,
                    "the file has more than %zu rows of %zu features: at most that many are taken",
                    max_rows, d.features);
        goto out;
    }
    d.x = malloc(rows * d.features * sizeof *d.x);
    d.y = malloc(rows * sizeof *d.y);
    if (d.x == NULL || d.y == NULL) {
        code = fail(e, DATASET_ENOMEM, 0, 0, "out of memory for %zu rows of %zu features", rows,
                    d.features);
        goto out;
    }
    for (size_t r = 0; r < rows; r++) {
        code = read_row(next_line(&p, limit), r + 2, &h, d.x + r * d.features, d.y + r, e);
        if (code != DATASET_OK)
            goto out;
    }
    d.rows = rows;
    *out = d;
    d = (dpsgd_data){0, 0, NULL, NULL};
out:
    free(h.names);
    dataset_release(&d);
    return code;
}

dataset_code dataset_load(const char *path, const dataset_limits *limits, dpsgd_data *out,
                          dataset_err *e)
{
    const dataset_limits *lim = limits != NULL ? limits : &dataset_default_limits;
    dataset_code code = DATASET_EREAD;
    char *buf = NULL;
    size_t got = 0;
    memset(out, 0, sizeof *out);
    memset(e, 0, sizeof *e);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            code = fail(e, DATASET_EMISSING, 0, 0, "the file does not exist");
        else
            code = fail(e, DATASET_EREAD, 0, 0, "the file cannot be opened: %s", strerror(errno));
        goto out;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        code = fail(e, DATASET_EREAD, 0, 0, "not a regular file");
        goto out;
    }
    if ((uintmax_t)st.st_size > lim->max_bytes) {
        code = fail(e, DATASET_ETOOBIG, 0, 0, "the file has %jd bytes: at most %zu are taken",
                    (intmax_t)st.st_size, lim->max_bytes);
        goto out;
    }
    size_t size = (size_t)st.st_size;
    buf = malloc(size > 0 ? size : 1);
    if (buf == NULL) {
        code = fail(e, DATASET_ENOMEM, 0, 0, "out of memory for a file of %zu bytes", size);
        goto out;
    }
    /* what the file held when it was opened: a file still being written is
     * read up to that size, and then fails as a short last line would */
    while (got < size) {
        ssize_t n = read(fd, buf + got, size - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            code = fail(e, DATASET_EREAD, 0, 0, "the file cannot be read: %s", strerror(errno));
            goto out;
        }
        if (n == 0)
            break;
        got += (size_t)n;
    }
    code = dataset_parse(buf, got, lim, out, e);
out:
    if (fd >= 0)
        close(fd);
    free(buf);
    return code;
}

void dataset_release(dpsgd_data *d)
{
    if (d == NULL)
        return;
    free(d->x);
    free(d->y);
    d->x = NULL;
    d->y = NULL;
    d->rows = 0;
    d->features = 0;
}
