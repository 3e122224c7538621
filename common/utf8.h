/* UTF-8 validation, the one the runtime and the services share: Unicode
 * Table 3-7 (no overlong forms, no surrogates, nothing past U+10FFFF,
 * nothing cut short). */
#ifndef CMS_UTF8_H
#define CMS_UTF8_H

#include <stdbool.h>
#include <stddef.h>

/* True when the n bytes at text are valid UTF-8 (NUL is a valid byte). */
bool cms_utf8_valid(const void *text, size_t n);

#endif
