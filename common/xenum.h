/* Enumerations with names, from one list: every module's error codes,
 * states and reasons are an X-macro of (NAME, "text"), from which the enum
 * and its names are made, so the two cannot drift apart.
 *
 *     #define CMS_X_ERRORS(X) X(CMS_X_OK, "ok") X(CMS_X_EINVAL, "invalid argument")
 *     typedef enum { CMS_X_ERRORS(CMS_ENUM_ITEM) CMS_X_NERRORS } cms_x_err;
 *     static const char *const names[] = {CMS_X_ERRORS(CMS_ENUM_TEXT)};
 *     ... return cms_enum_text(names, CMS_X_NERRORS, e);
 */
#ifndef CMS_XENUM_H
#define CMS_XENUM_H

#include <stddef.h>
#include <string.h>

#define CMS_ENUM_ITEM(name, text) name,
#define CMS_ENUM_TEXT(name, text) [name] = text,

/* names[v], or "unknown" for a value outside the list. */
static inline const char *cms_enum_text(const char *const *names, size_t n, int v)
{
    return v >= 0 && (size_t)v < n && names[v] != NULL ? names[v] : "unknown";
}

/* The value whose name is s, or -1 for none (s may be NULL). */
static inline int cms_enum_index(const char *const *names, size_t n, const char *s)
{
    for (size_t i = 0; s != NULL && i < n; i++)
        if (names[i] != NULL && strcmp(names[i], s) == 0)
            return (int)i;
    return -1;
}

#endif
