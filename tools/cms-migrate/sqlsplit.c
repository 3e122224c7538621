/* Statement splitting of migration files; see sqlsplit.h. A single forward
 * pass over the bytes: quotes and comments are skipped whole, so a ';' is
 * only ever seen where it can end a statement. Strings follow
 * standard_conforming_strings = on (PostgreSQL's default): backslashes
 * escape only inside E'…'. */
#include "sqlsplit.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

const char *cms_sqlsplit_strerror(cms_sqlsplit_err e)
{
    switch (e) {
    case CMS_SQLSPLIT_OK:
        return "ok";
    case CMS_SQLSPLIT_NOMEM:
        return "out of memory";
    }
    return "unknown sqlsplit error";
}

static bool is_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

static bool is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

/* PostgreSQL's ident_start and ident_cont (scan.l); bytes >= 0x80 are
 * letters, so UTF-8 names need no decoding. */
static bool ident_start(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c >= 0x80;
}

static bool ident_cont(unsigned char c)
{
    return ident_start(c) || is_digit(c) || c == '$';
}

/* Where the scanner is, and what it knows about the statement being read. */
typedef struct scan {
    const char *s;
    size_t len;
    size_t i;
    int paren_depth;
    int begin_depth; /* open BEGIN/CASE … END inside a routine body */
    unsigned nwords; /* words seen in this statement */
    char lead[4];    /* first letters of leading CREATE/OR/REPLACE/FUNCTION/PROCEDURE */
} scan;

static void statement_reset(scan *sc)
{
    sc->paren_depth = 0;
    sc->begin_depth = 0;
    sc->nwords = 0;
    memset(sc->lead, 0, sizeof sc->lead);
}

/* Skips the comment at sc->i, if one starts there. Block comments nest. */
static bool skip_comment(scan *sc)
{
    const char *s = sc->s;
    size_t i = sc->i;
    if (i + 1 >= sc->len)
        return false;
    if (s[i] == '-' && s[i + 1] == '-') {
        while (i < sc->len && s[i] != '\n')
            i++;
        sc->i = i;
        return true;
    }
    if (s[i] == '/' && s[i + 1] == '*') {
        int depth = 1;
        i += 2;
        while (i < sc->len && depth > 0) {
            if (i + 1 < sc->len && s[i] == '/' && s[i + 1] == '*') {
                depth++;
                i += 2;
            } else if (i + 1 < sc->len && s[i] == '*' && s[i + 1] == '/') {
                depth--;
                i += 2;
            } else {
                i++;
            }
        }
        sc->i = i;
        return true;
    }
    return false;
}

static void skip_blanks(scan *sc)
{
    for (;;) {
        while (sc->i < sc->len && is_space((unsigned char)sc->s[sc->i]))
            sc->i++;
        if (!skip_comment(sc))
            return;
    }
}

/* Skips a literal opened by quote q at sc->i: a doubled quote stays inside,
 * and with backslash escapes (E'…') so does \q. */
static void skip_quoted(scan *sc, char q, bool backslash)
{
    size_t i = sc->i + 1;
    while (i < sc->len) {
        if (backslash && sc->s[i] == '\\') {
            i += 2;
        } else if (sc->s[i] == q) {
            if (i + 1 < sc->len && sc->s[i + 1] == q) {
                i += 2;
            } else {
                sc->i = i + 1;
                return;
            }
        } else {
            i++;
        }
    }
    sc->i = sc->len;
}

/* Length of the dollar-quote tag ("$$" or "$name$") at i, or 0 if there is
 * none there (a lone '$' or a parameter like $1). */
static size_t dollar_tag(const char *s, size_t len, size_t i)
{
    size_t j = i + 1;
    if (j < len && s[j] == '$')
        return 2;
    if (j >= len || !ident_start((unsigned char)s[j]))
        return 0;
    while (j < len && (ident_start((unsigned char)s[j]) || is_digit((unsigned char)s[j])))
        j++;
    return (j < len && s[j] == '$') ? j - i + 1 : 0;
}

static bool word_is(const char *w, size_t n, const char *kw)
{
    return strlen(kw) == n && strncasecmp(w, kw, n) == 0;
}

/* psql's heuristic (psqlscan.l): inside CREATE [OR REPLACE]
 * FUNCTION/PROCEDURE, a BEGIN outside parentheses opens a body whose
 * semicolons do not end the statement, until the matching END; CASE … END
 * pairs inside it are counted so their END does not close the body. */
static void note_word(scan *sc, const char *w, size_t n)
{
    static const char *const lead_words[] = {"create", "function", "procedure", "or", "replace"};
    if (sc->nwords < sizeof sc->lead) {
        for (size_t k = 0; k < sizeof lead_words / sizeof lead_words[0]; k++) {
            if (word_is(w, n, lead_words[k]))
                sc->lead[sc->nwords] = lead_words[k][0];
        }
    }
    sc->nwords++;
    const char *l = sc->lead;
    bool routine = l[0] == 'c' && (l[1] == 'f' || l[1] == 'p' ||
                                   (l[1] == 'o' && l[2] == 'r' && (l[3] == 'f' || l[3] == 'p')));
    if (!routine || sc->paren_depth != 0)
        return;
    if (word_is(w, n, "begin"))
        sc->begin_depth++;
    else if (word_is(w, n, "case") && sc->begin_depth >= 1)
        sc->begin_depth++;
    else if (word_is(w, n, "end") && sc->begin_depth > 0)
        sc->begin_depth--;
}

/* Consumes the one token at sc->i (not blank, not a comment). */
static void scan_token(scan *sc)
{
    const char *s = sc->s;
    size_t i = sc->i;
    unsigned char c = (unsigned char)s[i];

    if (c == '\'' || c == '"') {
        skip_quoted(sc, (char)c, false);
    } else if (c == '$') {
        size_t tag = dollar_tag(s, sc->len, i);
        if (tag == 0) {
            i++;
            while (i < sc->len && is_digit((unsigned char)s[i]))
                i++;
            sc->i = i;
        } else {
            const char *end = memmem(s + i + tag, sc->len - i - tag, s + i, tag);
            sc->i = end ? (size_t)(end - s) + tag : sc->len;
        }
    } else if (ident_start(c)) {
        while (i < sc->len && ident_cont((unsigned char)s[i]))
            i++;
        size_t n = i - sc->i;
        if (n == 1 && (c == 'e' || c == 'E') && i < sc->len && s[i] == '\'') {
            sc->i = i;
            skip_quoted(sc, '\'', true);
        } else {
            note_word(sc, s + sc->i, n);
            sc->i = i;
        }
    } else if (is_digit(c)) {
        /* 12, 1.5e3, 0x1F, 1_000: one token, so no letter in it starts a word */
        while (i < sc->len && (ident_cont((unsigned char)s[i]) || s[i] == '.'))
            i++;
        sc->i = i;
    } else {
        if (c == '(')
            sc->paren_depth++;
        else if (c == ')' && sc->paren_depth > 0)
            sc->paren_depth--;
        sc->i = i + 1;
    }
}

static bool push(cms_sqlstmt **v, size_t *n, size_t *cap, const char *s, size_t start, size_t end)
{
    while (end > start && is_space((unsigned char)s[end - 1]))
        end--;
    if (*n == *cap) {
        size_t ncap = *cap ? *cap * 2 : 16;
        cms_sqlstmt *nv = realloc(*v, ncap * sizeof *nv);
        if (nv == NULL)
            return false;
        *v = nv;
        *cap = ncap;
    }
    (*v)[(*n)++] = (cms_sqlstmt){.off = start, .len = end - start};
    return true;
}

cms_sqlsplit_err cms_sqlsplit_split(const char *sql, size_t len, cms_sqlstmt **out, size_t *n)
{
    cms_sqlsplit_err err = CMS_SQLSPLIT_OK;
    cms_sqlstmt *v = NULL;
    size_t nv = 0, cap = 0;
    size_t start = SIZE_MAX; /* first token of the statement being read, if any */
    scan sc = {.s = sql, .len = len};
    statement_reset(&sc);

    for (;;) {
        skip_blanks(&sc);
        if (sc.i >= len)
            break;
        if (sql[sc.i] == ';' && sc.paren_depth == 0 && sc.begin_depth == 0) {
            if (start != SIZE_MAX && !push(&v, &nv, &cap, sql, start, sc.i)) {
                err = CMS_SQLSPLIT_NOMEM;
                goto out;
            }
            start = SIZE_MAX;
            statement_reset(&sc);
            sc.i++;
            continue;
        }
        if (start == SIZE_MAX)
            start = sc.i;
        scan_token(&sc);
    }
    if (start != SIZE_MAX && !push(&v, &nv, &cap, sql, start, len)) {
        err = CMS_SQLSPLIT_NOMEM;
        goto out;
    }
    *out = v;
    *n = nv;
    v = NULL;
out:
    free(v);
    return err;
}

static bool utf8_continuation(unsigned char c)
{
    return (c & 0xC0) == 0x80;
}

void cms_sqlsplit_linecol(const char *sql, size_t len, size_t off, unsigned *line, unsigned *col)
{
    unsigned l = 1, c = 1;
    for (size_t i = 0; i < off && i < len; i++) {
        if (sql[i] == '\n') {
            l++;
            c = 1;
        } else if (!utf8_continuation((unsigned char)sql[i])) {
            c++;
        }
    }
    *line = l;
    *col = c;
}

size_t cms_sqlsplit_char_to_byte(const char *text, size_t len, long pos)
{
    long chars = 0;
    if (pos <= 1)
        return 0;
    for (size_t i = 0; i < len; i++) {
        if (!utf8_continuation((unsigned char)text[i]) && ++chars == pos)
            return i;
    }
    return len;
}

/* The k-th leading word (0-based) of a statement; length 0 if there is none. */
static size_t leading_word(const char *s, size_t len, unsigned k, const char **w)
{
    scan sc = {.s = s, .len = len};
    size_t n = 0;
    for (unsigned j = 0; j <= k; j++) {
        skip_blanks(&sc);
        size_t st = sc.i;
        if (sc.i < len && ident_start((unsigned char)s[sc.i])) {
            while (sc.i < len && ident_cont((unsigned char)s[sc.i]))
                sc.i++;
        }
        *w = s + st;
        n = sc.i - st;
        if (n == 0)
            break;
    }
    return n;
}

bool cms_sqlsplit_is_txn_control(const char *stmt, size_t len)
{
    const char *w = NULL;
    size_t n = leading_word(stmt, len, 0, &w);
    if (word_is(w, n, "begin") || word_is(w, n, "start") || word_is(w, n, "commit") ||
        word_is(w, n, "end") || word_is(w, n, "abort"))
        return true;
    if (word_is(w, n, "prepare")) {
        n = leading_word(stmt, len, 1, &w);
        return word_is(w, n, "transaction");
    }
    if (word_is(w, n, "rollback")) {
        /* ROLLBACK [WORK | TRANSACTION] TO [SAVEPOINT] name stays inside the transaction */
        n = leading_word(stmt, len, 1, &w);
        if (word_is(w, n, "to"))
            return false;
        if (word_is(w, n, "work") || word_is(w, n, "transaction")) {
            n = leading_word(stmt, len, 2, &w);
            return !word_is(w, n, "to");
        }
        return true;
    }
    return false;
}
