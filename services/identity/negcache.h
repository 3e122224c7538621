/* The credential ids that were looked up and do not exist, for a short
 * while: a flood of well-formed keys of one unknown id, whatever their
 * secrets, costs one database look-up per ttl. Keyed by credential id,
 * never by a secret; a credential that does exist is never kept here, so
 * a wrong secret presented with a real id cannot lock its owner out.
 *
 * Bounded: at most max entries, the oldest go first. A credential issued
 * with an id kept here must be forgotten at once (idneg_forget), so that
 * it authenticates from the start. Times are the caller's (loop time, in
 * ms). Not thread-safe: cms-identity's loop only. */
#ifndef IDENTITY_NEGCACHE_H
#define IDENTITY_NEGCACHE_H

#include "uuid.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct idneg idneg;

/* ttl_ms 0: nothing is ever kept (idneg_unknown is always false). */
int idneg_create(size_t max, int64_t ttl_ms, idneg **out) __attribute__((warn_unused_result));
void idneg_destroy(idneg *n); /* NULL-safe */

/* Whether id was found unknown less than ttl ago (an expired entry is
 * dropped). */
bool idneg_unknown(idneg *n, const cms_uuid *id, uint64_t now_ms);
/* id does not exist, as of now. */
void idneg_note(idneg *n, const cms_uuid *id, uint64_t now_ms);
void idneg_forget(idneg *n, const cms_uuid *id);
void idneg_clear(idneg *n);
size_t idneg_count(const idneg *n);

#endif
