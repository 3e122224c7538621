/* A bounded arena for protobuf-c decoding.
 *
 * protobuf-c allocates every string, repeated field and unknown field of a
 * message it unpacks, so the heap a message costs is not its wire size: a
 * 1 MiB body of tiny unknown fields costs tens of MiB. Unpacking through an
 * arena bounds that: allocations come from a bump arena that refuses past
 * its cap (the unpack then fails, as for bad input), and everything is
 * released at once by a reset or destroy, with no free_unpacked.
 *
 * The first block is allocated with the arena, further blocks on demand,
 * each at least twice the last, all within cap. One thread at a time. */
#ifndef CMS_PBARENA_H
#define CMS_PBARENA_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>

typedef struct cms_pbarena cms_pbarena;

/* first: bytes of the first block (rounded up); cap: the most all blocks
 * together may hold (at least first). 0 or -1 (no memory). */
int cms_pbarena_create(size_t first, size_t cap, cms_pbarena **out)
    __attribute__((warn_unused_result));
/* The allocator to pass to *_unpack: valid as long as the arena. */
ProtobufCAllocator *cms_pbarena_allocator(cms_pbarena *a);
/* Releases everything allocated from it (keeps the first block). */
void cms_pbarena_reset(cms_pbarena *a);
/* Bytes handed out since the last reset. */
size_t cms_pbarena_used(const cms_pbarena *a);
void cms_pbarena_destroy(cms_pbarena *a); /* NULL-safe */

#endif
