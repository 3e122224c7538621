/* Bounded UUID set; see actors.h. */
#include "actors.h"

#include <stdlib.h>
#include <string.h>

struct audit_actors {
    uint8_t (*slots)[16];
    uint8_t *used;
    size_t cap, mask, count;
    uint64_t resets;
};

int audit_actors_create(size_t capacity, audit_actors **out)
{
    size_t cap = 64;
    while (cap < capacity)
        cap *= 2;
    audit_actors *a = calloc(1, sizeof *a);
    if (a == NULL)
        return -1;
    a->slots = malloc(cap * 16);
    a->used = calloc(cap, 1);
    if (a->slots == NULL || a->used == NULL) {
        audit_actors_destroy(a);
        return -1;
    }
    a->cap = cap;
    a->mask = cap - 1;
    *out = a;
    return 0;
}

void audit_actors_destroy(audit_actors *a)
{
    if (a == NULL)
        return;
    free(a->slots);
    free(a->used);
    free(a);
}

/* The last 8 bytes are random in v4 and v7 UUIDs alike (the first are a
 * timestamp in v7): hash those, mixed, for well-spread slots. */
static size_t slot_of(const audit_actors *a, const uint8_t id[16])
{
    uint64_t h, l;
    memcpy(&h, id, 8);
    memcpy(&l, id + 8, 8);
    uint64_t x = l ^ (h * 0x9e3779b97f4a7c15ull);
    x ^= x >> 31;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 29;
    return (size_t)x & a->mask;
}

bool audit_actors_has(const audit_actors *a, const uint8_t id[16])
{
    for (size_t i = slot_of(a, id);; i = (i + 1) & a->mask) {
        if (!a->used[i])
            return false;
        if (memcmp(a->slots[i], id, 16) == 0)
            return true;
    }
}

void audit_actors_add(audit_actors *a, const uint8_t id[16])
{
    if (audit_actors_has(a, id))
        return;
    if ((a->count + 1) * 2 > a->cap) {
        memset(a->used, 0, a->cap);
        a->count = 0;
        a->resets++;
    }
    size_t i = slot_of(a, id);
    while (a->used[i])
        i = (i + 1) & a->mask;
    memcpy(a->slots[i], id, 16);
    a->used[i] = 1;
    a->count++;
}

size_t audit_actors_count(const audit_actors *a)
{
    return a->count;
}

uint64_t audit_actors_resets(const audit_actors *a)
{
    return a->resets;
}
