/* Bounded decoding arena; see pbarena.h. */
#include "pbarena.h"

#include <stdint.h>
#include <stdlib.h>

#define ALIGN 16

typedef struct block {
    struct block *next;
    size_t size, used;
    _Alignas(ALIGN) unsigned char data[];
} block;

struct cms_pbarena {
    ProtobufCAllocator alloc;
    block *first;     /* kept across resets */
    block *extra;     /* later blocks, newest first; freed at reset */
    size_t cap, held; /* bytes of all blocks */
    size_t used;
};

static block *block_new(size_t size)
{
    block *b = malloc(sizeof *b + size);
    if (b != NULL)
        *b = (block){.size = size};
    return b;
}

static void *take(block *b, size_t size)
{
    if (b == NULL || b->size - b->used < size)
        return NULL;
    void *p = b->data + b->used;
    b->used += size;
    return p;
}

static void *arena_alloc(void *data, size_t size)
{
    cms_pbarena *a = data;
    if (size > SIZE_MAX - ALIGN)
        return NULL;
    size = (size + ALIGN - 1) & ~(size_t)(ALIGN - 1);
    void *p = take(a->extra ? a->extra : a->first, size);
    if (p == NULL) {
        size_t last = a->extra ? a->extra->size : a->first->size;
        size_t want = last * 2 > size ? last * 2 : size;
        if (want > a->cap - a->held)
            want = a->cap - a->held;
        if (want < size)
            return NULL; /* over the cap: the unpack fails */
        block *b = block_new(want);
        if (b == NULL)
            return NULL;
        b->next = a->extra;
        a->extra = b;
        a->held += want;
        p = take(b, size);
    }
    a->used += size;
    return p;
}

static void arena_free(void *data, void *p)
{
    (void)data; /* everything goes at reset */
    (void)p;
}

int cms_pbarena_create(size_t first, size_t cap, cms_pbarena **out)
{
    first = (first + ALIGN - 1) & ~(size_t)(ALIGN - 1);
    if (first == 0)
        first = ALIGN;
    if (cap < first)
        cap = first;
    cms_pbarena *a = calloc(1, sizeof *a);
    if (a == NULL || (a->first = block_new(first)) == NULL) {
        free(a);
        return -1;
    }
    a->alloc = (ProtobufCAllocator){arena_alloc, arena_free, a};
    a->cap = cap;
    a->held = first;
    *out = a;
    return 0;
}

ProtobufCAllocator *cms_pbarena_allocator(cms_pbarena *a)
{
    return &a->alloc;
}

void cms_pbarena_reset(cms_pbarena *a)
{
    while (a->extra != NULL) {
        block *b = a->extra;
        a->extra = b->next;
        a->held -= b->size;
        free(b);
    }
    a->first->used = 0;
    a->used = 0;
}

size_t cms_pbarena_used(const cms_pbarena *a)
{
    return a->used;
}

void cms_pbarena_destroy(cms_pbarena *a)
{
    if (a == NULL)
        return;
    cms_pbarena_reset(a);
    free(a->first);
    free(a);
}
