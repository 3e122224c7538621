/* Splitting a migration file into the statements it contains, the way psql
 * does, so that each one can be run and, when it fails, named by file, line
 * and column.
 *
 * A statement ends at a semicolon outside quotes ('…', E'…', "…",
 * $tag$…$tag$), comments (-- to the end of the line, and nested slash-star
 * blocks), parentheses, and the BEGIN … END body of a CREATE [OR REPLACE]
 * FUNCTION/PROCEDURE (psql's heuristic for SQL-standard function bodies).
 * An unterminated quote or comment runs to the end of the text and is left
 * for the server to report, with its position. */
#ifndef CMS_SQLSPLIT_H
#define CMS_SQLSPLIT_H

#include <stdbool.h>
#include <stddef.h>

typedef struct cms_sqlstmt {
    size_t off; /* byte offset of the statement's first token */
    size_t len; /* bytes up to its terminating ';' (not included), trailing blanks trimmed */
} cms_sqlstmt;

typedef enum cms_sqlsplit_err {
    CMS_SQLSPLIT_OK,
    CMS_SQLSPLIT_NOMEM,
} cms_sqlsplit_err;

const char *cms_sqlsplit_strerror(cms_sqlsplit_err e);

/* Statements of sql[0..len) in order; empty statements (";;", comments only)
 * are left out. On success *out is a malloc'd array the caller frees (NULL
 * when *n is 0). */
cms_sqlsplit_err cms_sqlsplit_split(const char *sql, size_t len, cms_sqlstmt **out, size_t *n)
    __attribute__((warn_unused_result));

/* 1-based line and column of byte offset off; columns count UTF-8
 * characters, as an editor shows them. */
void cms_sqlsplit_linecol(const char *sql, size_t len, size_t off, unsigned *line, unsigned *col);

/* Byte offset within text[0..len) of PostgreSQL's 1-based character
 * position pos (an error's statement position counts characters, not bytes);
 * clamped to len. */
size_t cms_sqlsplit_char_to_byte(const char *text, size_t len, long pos);

/* True if the statement is transaction control (BEGIN, START TRANSACTION,
 * COMMIT, END, ROLLBACK without TO, ABORT), which would break the one
 * transaction a migration runs in. */
bool cms_sqlsplit_is_txn_control(const char *stmt, size_t len);

#endif
