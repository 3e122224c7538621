/* How every cmsctl verb prints what it found: one convention for all.
 *
 *   -o table   (the default) "key: value" lines for one item, a table with
 *              a header for a list, plain lines for a summary
 *   -o json    one pretty-printed document: an object for one item, an
 *              array for a list (also an empty one)
 *   -o ndjson  one compact object per line: for lists and streams, only
 *              when asked
 *
 * --output is the long form of -o; --json is -o json. Field names are the
 * same in every verb: a time is "<name>_at", RFC 3339 in UTC to the
 * microsecond (null when unset), with "<name>_at_us", Unix microseconds.
 *
 * Only the result goes to stdout. Messages about it go to stderr: "no
 * results" notes (stdout then stays empty, or "[]" in json), and in json
 * and ndjson the "next: --after CURSOR" line of a page. */
#ifndef CMSCTL_CTLOUT_H
#define CMSCTL_CTLOUT_H

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>

#include "config.h"

typedef enum { CMSCTL_OUT_TABLE, CMSCTL_OUT_JSON, CMSCTL_OUT_NDJSON } cmsctl_out_format;

/* The output options of every verb (put them in the verb's table). */
// clang-format off
#define CMSCTL_OUT_OPTIONS \
  {"output", NULL, CMS_OPT_STRING, "table", "-o: table, json (one document) or ndjson (one object per line)", CMS_OPT_PUBLIC, false}, \
  {"json", NULL, CMS_OPT_BOOL, "false", "the same as -o json", CMS_OPT_PUBLIC, false}
// clang-format on

/* The format asked for. A bad -o, or --json with another -o, is a usage
 * error: printed, and its exit status returned; else CMSCTL_EXIT_OK. */
int cmsctl_out_format_get(const char *prog, const cms_config *cfg, cmsctl_out_format *out)
    __attribute__((warn_unused_result));

/* Prints v (taken; NULL means out of memory) on stdout in format f (not
 * table): json pretty-printed, ndjson compact, an array one element per
 * line. A string member secret_key (NULL: none) is wiped before v is freed.
 * Returns the exit status. */
int cmsctl_out_emit(const char *prog, cmsctl_out_format f, json_t *v, const char *secret_key);
/* The same on to: a summary goes to stderr when stdout carries data (--out -). */
int cmsctl_out_emit_to(const char *prog, cmsctl_out_format f, FILE *to, json_t *v,
                       const char *secret_key);

/* Sets o["<name>"] (RFC 3339 to the microsecond, null when us is 0) and
 * o["<name>_us"]; name ends in "_at". */
void cmsctl_out_time(json_t *o, const char *name, int64_t us);

/* A JSON string of s; bytes that are not UTF-8 become '?' (jansson takes
 * only valid UTF-8; what comes from the wire or the database may not be). */
json_t *cmsctl_out_str(const char *s);

/* A JSON value a service sent as text, for a JSON document: parsed, or the
 * text as a string should it not parse; "" is {}. */
json_t *cmsctl_out_json_text(const char *text);

/* JSON text made compact, for a table: the text itself when it does not
 * parse; NULL when out of memory. The caller frees it. */
char *cmsctl_out_compact(const char *text);

/* Text from a service, made safe for a terminal in a table: control
 * characters (which could move the cursor or recolour the screen) become
 * '?'; cut to fit buf. Returns buf. */
const char *cmsctl_out_clean(const char *s, char *buf, size_t len);

/* "(what)" on stderr, for a list with nothing in it (not in json, where "[]"
 * says it). */
void cmsctl_out_none(cmsctl_out_format f, const char *what);

#endif
