/* The identities known to exist, so that a batch never fails on the
 * audit_logs.actor_id foreign key. A bounded open-addressing set of UUIDs:
 * when it fills past half, it is emptied and refills from look-ups, so its
 * memory never grows (capacity * 16 bytes). */
#ifndef AUDIT_ACTORS_H
#define AUDIT_ACTORS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct audit_actors audit_actors;

/* capacity: slots, rounded up to a power of two (at least 64). */
int audit_actors_create(size_t capacity, audit_actors **out) __attribute__((warn_unused_result));
void audit_actors_destroy(audit_actors *a);
bool audit_actors_has(const audit_actors *a, const uint8_t id[16]);
void audit_actors_add(audit_actors *a, const uint8_t id[16]);
size_t audit_actors_count(const audit_actors *a);
/* How many times the set was emptied for being full. */
uint64_t audit_actors_resets(const audit_actors *a);

#endif
