/* uthash, as every table here uses it: with FNV-1a for its hash function.
 * uthash's default (Jenkins) falls through between switch labels in every
 * expansion, which clang's -Wimplicit-fallthrough refuses; FNV-1a has no
 * switch, and the keys here (digests, ids) are short. Include this instead
 * of <uthash.h>. */
#ifndef CMS_HASHTAB_H
#define CMS_HASHTAB_H

#define HASH_FUNCTION(keyptr, keylen, hashv) HASH_FNV(keyptr, keylen, hashv)
#include <uthash.h>

#endif
