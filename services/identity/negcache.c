/* Unknown credential ids; see negcache.h. A uthash table in insertion
 * order, so the oldest entry is the head. */
#include "negcache.h"

#include "hashtab.h"
#include <stdlib.h>
#include <string.h>

typedef struct entry {
    cms_uuid id;
    uint64_t until_ms;
    UT_hash_handle hh;
} entry;

struct idneg {
    size_t max;
    int64_t ttl_ms;
    entry *table;
    size_t n;
};

int idneg_create(size_t max, int64_t ttl_ms, idneg **out)
{
    idneg *n = calloc(1, sizeof *n);
    if (n == NULL || max == 0 || ttl_ms < 0) {
        free(n);
        return -1;
    }
    n->max = max;
    n->ttl_ms = ttl_ms;
    *out = n;
    return 0;
}

static void drop(idneg *n, entry *e)
{
    HASH_DEL(n->table, e);
    n->n--;
    free(e);
}

void idneg_clear(idneg *n)
{
    while (n->table)
        drop(n, n->table);
}

void idneg_destroy(idneg *n)
{
    if (n == NULL)
        return;
    idneg_clear(n);
    free(n);
}

static entry *find(const idneg *n, const cms_uuid *id)
{
    entry *e = NULL;
    HASH_FIND(hh, n->table, id->b, sizeof id->b, e);
    return e;
}

bool idneg_unknown(idneg *n, const cms_uuid *id, uint64_t now_ms)
{
    entry *e = find(n, id);
    if (e == NULL)
        return false;
    if (e->until_ms <= now_ms) {
        drop(n, e);
        return false;
    }
    return true;
}

void idneg_note(idneg *n, const cms_uuid *id, uint64_t now_ms)
{
    if (n->ttl_ms == 0)
        return;
    entry *e = find(n, id);
    if (e)
        drop(n, e); /* again at the end: it is the newest now */
    while (n->n >= n->max)
        drop(n, n->table);
    if ((e = calloc(1, sizeof *e)) == NULL)
        return; /* not kept: only a look-up more */
    e->id = *id;
    e->until_ms = now_ms + (uint64_t)n->ttl_ms;
    HASH_ADD(hh, n->table, id.b, sizeof e->id.b, e);
    n->n++;
}

void idneg_forget(idneg *n, const cms_uuid *id)
{
    entry *e = find(n, id);
    if (e)
        drop(n, e);
}

size_t idneg_count(const idneg *n)
{
    return n ? n->n : 0;
}
