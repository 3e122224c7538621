/* The set of migrations cms-migrate knows: numbered pairs of SQL files,
 * NNNN_name.up.sql and NNNN_name.down.sql, either embedded in the binary at
 * build time (so a deployed binary needs no files) or read from a folder.
 *
 * A set is checked whole when it is loaded: every .sql file must be named
 * like a migration, every version must have exactly one up and one down file
 * with the same name. A typo in a file name therefore fails loudly instead of
 * silently skipping a migration. */
#ifndef CMS_MIGSET_H
#define CMS_MIGSET_H

#include <stdbool.h>
#include <stddef.h>

/* One file compiled into the binary (see embed.cmake); the generated table
 * ends with an entry whose name is NULL. data is NUL-terminated. */
typedef struct cms_migset_blob {
    const char *name;
    const unsigned char *data;
    size_t len;
} cms_migset_blob;

extern const cms_migset_blob cms_migset_embedded[];

#define CMS_MIGSET_NAME_MAX 63          /* longest NAME in NNNN_NAME */
#define CMS_MIGSET_FILE_MAX (16u << 20) /* largest migration file read */

typedef struct cms_migration {
    int version;
    const char *name;    /* "init" for 0001_init */
    const char *label;   /* "0001_init" */
    const char *up_file; /* "0001_init.up.sql" */
    const char *down_file;
    const char *up; /* SQL text, NUL-terminated */
    size_t up_len;
    const char *down;
    size_t down_len;
    const char *checksum; /* hex SHA-256 of the up file */
} cms_migration;

typedef struct cms_migset cms_migset;

typedef enum cms_migset_err {
    CMS_MIGSET_OK,
    CMS_MIGSET_NOMEM,
    CMS_MIGSET_IO,        /* a folder or file could not be read or written */
    CMS_MIGSET_BAD_FILE,  /* a .sql file not named NNNN_name.up|down.sql, or too large */
    CMS_MIGSET_DUPLICATE, /* two files for one version and direction */
    CMS_MIGSET_UNPAIRED,  /* an up without its down (or the reverse), or names that differ */
    CMS_MIGSET_BAD_NAME,  /* a NAME for `new` outside [a-z0-9_]{1,63} */
    CMS_MIGSET_EXISTS,    /* `new` would overwrite a file */
} cms_migset_err;

const char *cms_migset_strerror(cms_migset_err e);

/* Loads the embedded migrations, or every migration in dir. On error *out is
 * untouched and err (if not NULL) holds one line naming the file at fault. */
cms_migset_err cms_migset_load_embedded(cms_migset **out, char *err, size_t errlen)
    __attribute__((warn_unused_result));
cms_migset_err cms_migset_load_dir(const char *dir, cms_migset **out, char *err, size_t errlen)
    __attribute__((warn_unused_result));
void cms_migset_destroy(cms_migset *s);

/* "embedded" or the folder's path. */
const char *cms_migset_source(const cms_migset *s);
size_t cms_migset_count(const cms_migset *s);
/* The i-th migration in ascending version order; NULL past the end. */
const cms_migration *cms_migset_at(const cms_migset *s, size_t i);
const cms_migration *cms_migset_find(const cms_migset *s, int version);

/* True if name is [a-z0-9_]{1,CMS_MIGSET_NAME_MAX}. */
bool cms_migset_valid_name(const char *name);

/* Creates the next-numbered NNNN_name.up.sql / .down.sql pair in dir (one
 * past the highest version there) and writes their paths into up_path and
 * down_path. Neither file is created unless both can be. */
cms_migset_err cms_migset_new(const char *dir, const char *name, char *up_path, size_t up_len,
                              char *down_path, size_t down_len, char *err, size_t errlen)
    __attribute__((warn_unused_result));

#endif
