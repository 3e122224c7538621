/* The text PostgreSQL prints for a jsonb value, made from its JSON input,
 * so that cms-audit hashes exactly what a reader of audit_logs.details gets
 * back (the chain's row bytes, audit/chain.h), without asking the server.
 *
 * jsonb keeps a value in a normal form and prints it so:
 *   - an object's keys sorted by their length in bytes, then bytewise; of a
 *     key given twice, the last value only;
 *   - ", " between members and elements, ": " after a key, no other space;
 *   - strings unescaped to UTF-8, then written with '"', '\\', \b \f \n \r
 *     \t escaped and the other control characters as \u00xx (lowercase);
 *   - numbers as numeric prints them: no exponent, no leading zeros, the
 *     fraction's digits as many as the input had after its point less its
 *     exponent (so "1.50" stays "1.50", "1.5e1" is "15", "25e-1" is "2.5"),
 *     and no sign on zero.
 * The input must be valid JSON as common/json produces or checks it (valid
 * UTF-8, no "\u0000", no lone surrogate); anything else, a number beyond
 * numeric's limits (an exponent of 1073741823, a scale of 16383, 131072
 * integer digits), which PostgreSQL refuses too, or nesting beyond
 * CMS_JSON_MAX_DEPTH is refused. Not thread-safe per
 * converter. */
#ifndef AUDIT_JSONB_H
#define AUDIT_JSONB_H

#include <stdbool.h>
#include <stddef.h>

typedef struct audit_jsonb audit_jsonb;

audit_jsonb *audit_jsonb_new(void);
void audit_jsonb_free(audit_jsonb *j);

/* The jsonb text of in[0..len): *out (NUL-terminated, *out_len bytes)
 * lives until the next call. false for input refused (see above) or no
 * memory. */
bool audit_jsonb_text(audit_jsonb *j, const char *in, size_t len, const char **out, size_t *out_len)
    __attribute__((warn_unused_result));

#endif
