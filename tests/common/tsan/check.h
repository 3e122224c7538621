/* Assertions for the plain test programs of tests/common/tsan/: Criterion cannot run
 * under ThreadSanitizer (its shared arena collides with TSan's address
 * space), so these programs report through their exit status instead. */
#ifndef CMS_TSAN_CHECK_H
#define CMS_TSAN_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, #cond);               \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

#endif
