/* A refusal of an input that names where it is wrong: a request field
 * ("title") or a JSON path into one ("terms.conditions[1].currency"), and
 * what was expected there. The input checks of the services fill one and
 * answer it as INVALID_ARGUMENT with that field. */
#ifndef CMS_FIELDERR_H
#define CMS_FIELDERR_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>

typedef struct cms_field_err {
    char field[160];
    char msg[240];
} cms_field_err;

/* Fills e (field and message cut to fit) and returns false, for
 * "return cms_field_fail(e, ...);" in a check. */
static inline bool cms_field_fail(cms_field_err *e, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static inline bool cms_field_fail(cms_field_err *e, const char *field, const char *fmt, ...)
{
    va_list ap;
    snprintf(e->field, sizeof e->field, "%s", field);
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    return false;
}

#endif
