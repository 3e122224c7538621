/* Loading and checking a set of migrations; see migset.h. */
#include "migset.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define VERSION_DIGITS_MAX 9 /* keeps a version inside an int (and a PostgreSQL INT) */

/* Every string a migration points at is owned by its set. */
struct cms_migset {
    char *source;
    cms_migration *v;
    size_t n, cap;
};

const char *cms_migset_strerror(cms_migset_err e)
{
    switch (e) {
    case CMS_MIGSET_OK:
        return "ok";
    case CMS_MIGSET_NOMEM:
        return "out of memory";
    case CMS_MIGSET_IO:
        return "cannot read or write a migration file";
    case CMS_MIGSET_BAD_FILE:
        return "a file is not named like a migration";
    case CMS_MIGSET_DUPLICATE:
        return "two files for one migration";
    case CMS_MIGSET_UNPAIRED:
        return "a migration lacks its up or down file";
    case CMS_MIGSET_BAD_NAME:
        return "bad migration name";
    case CMS_MIGSET_EXISTS:
        return "the migration file already exists";
    }
    return "unknown migration set error";
}

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (err == NULL || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

bool cms_migset_valid_name(const char *name)
{
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n > CMS_MIGSET_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'))
            return false;
    }
    return true;
}

static bool ends_with(const char *s, size_t n, const char *suffix, size_t *stem)
{
    size_t k = strlen(suffix);
    if (n < k || memcmp(s + n - k, suffix, k) != 0)
        return false;
    *stem = n - k;
    return true;
}

/* Splits "0001_init.up.sql" into 1, "init", up. */
static bool parse_file_name(const char *fn, int *version, char name[CMS_MIGSET_NAME_MAX + 1],
                            bool *up)
{
    size_t n = strlen(fn), stem = 0, d = 0;
    if (ends_with(fn, n, ".up.sql", &stem))
        *up = true;
    else if (ends_with(fn, n, ".down.sql", &stem))
        *up = false;
    else
        return false;
    long v = 0;
    while (d < stem && fn[d] >= '0' && fn[d] <= '9') {
        v = v * 10 + (fn[d] - '0');
        if (++d > VERSION_DIGITS_MAX)
            return false;
    }
    if (d == 0 || v <= 0 || d >= stem || fn[d] != '_')
        return false;
    size_t nlen = stem - d - 1;
    if (nlen == 0 || nlen > CMS_MIGSET_NAME_MAX)
        return false;
    memcpy(name, fn + d + 1, nlen);
    name[nlen] = '\0';
    if (!cms_migset_valid_name(name))
        return false;
    *version = (int)v;
    return true;
}

static char *dup_bytes(const void *p, size_t n)
{
    char *s = malloc(n + 1);
    if (s) {
        memcpy(s, p, n);
        s[n] = '\0';
    }
    return s;
}

static void migration_free(cms_migration *m)
{
    free((char *)m->name);
    free((char *)m->label);
    free((char *)m->up_file);
    free((char *)m->down_file);
    free((char *)m->up);
    free((char *)m->down);
    free((char *)m->checksum);
}

void cms_migset_destroy(cms_migset *s)
{
    if (s == NULL)
        return;
    for (size_t i = 0; i < s->n; i++)
        migration_free(&s->v[i]);
    free(s->v);
    free(s->source);
    free(s);
}

static cms_migset *set_create(const char *source)
{
    cms_migset *s = calloc(1, sizeof *s);
    if (s == NULL)
        return NULL;
    s->source = strdup(source);
    if (s->source == NULL) {
        free(s);
        return NULL;
    }
    return s;
}

static cms_migration *find_mut(cms_migset *s, int version)
{
    for (size_t i = 0; i < s->n; i++) {
        if (s->v[i].version == version)
            return &s->v[i];
    }
    return NULL;
}

/* Adds one file's text (copied) to the set. */
static cms_migset_err add_file(cms_migset *s, const char *fn, const void *data, size_t len,
                               char *err, size_t errlen)
{
    int version = 0;
    bool up = false;
    char name[CMS_MIGSET_NAME_MAX + 1];
    if (!parse_file_name(fn, &version, name, &up)) {
        set_err(err, errlen,
                "%s is not named NNNN_name.up.sql or NNNN_name.down.sql (NNNN: 1 to %d digits, "
                "name: [a-z0-9_]{1,%d}): rename it or move it out of the folder",
                fn, VERSION_DIGITS_MAX, CMS_MIGSET_NAME_MAX);
        return CMS_MIGSET_BAD_FILE;
    }
    cms_migration *m = find_mut(s, version);
    if (m == NULL) {
        if (s->n == s->cap) {
            size_t ncap = s->cap ? s->cap * 2 : 16;
            cms_migration *nv = realloc(s->v, ncap * sizeof *nv);
            if (nv == NULL)
                return CMS_MIGSET_NOMEM;
            s->v = nv;
            s->cap = ncap;
        }
        m = &s->v[s->n];
        memset(m, 0, sizeof *m);
        m->version = version;
        m->name = strdup(name);
        char label[VERSION_DIGITS_MAX + CMS_MIGSET_NAME_MAX + 8];
        snprintf(label, sizeof label, "%04d_%s", version, name);
        m->label = strdup(label);
        if (m->name == NULL || m->label == NULL) {
            migration_free(m);
            return CMS_MIGSET_NOMEM;
        }
        s->n++;
    } else if (strcmp(m->name, name) != 0) {
        set_err(err, errlen, "%s and %s%s share version %d but not the name: one version, one name",
                fn, m->label, m->up_file ? ".up.sql" : ".down.sql", version);
        return CMS_MIGSET_UNPAIRED;
    }
    const char **file = up ? &m->up_file : &m->down_file;
    const char **text = up ? &m->up : &m->down;
    size_t *text_len = up ? &m->up_len : &m->down_len;
    if (*file != NULL) {
        set_err(err, errlen, "%s and %s both are the %s file of version %d", fn, *file,
                up ? "up" : "down", version);
        return CMS_MIGSET_DUPLICATE;
    }
    *file = strdup(fn);
    *text = dup_bytes(data, len);
    if (*file == NULL || *text == NULL)
        return CMS_MIGSET_NOMEM; /* freed with the set */
    *text_len = len;
    return CMS_MIGSET_OK;
}

static int by_version(const void *a, const void *b)
{
    int x = ((const cms_migration *)a)->version, y = ((const cms_migration *)b)->version;
    return (x > y) - (x < y);
}

/* Pairs checked, order fixed, checksums computed: the set is ready. */
static cms_migset_err finish(cms_migset *s, char *err, size_t errlen)
{
    for (size_t i = 0; i < s->n; i++) {
        cms_migration *m = &s->v[i];
        if (m->up_file == NULL || m->down_file == NULL) {
            set_err(err, errlen, "%s%s has no %s file %s%s: every migration needs both", m->label,
                    m->up_file ? ".up.sql" : ".down.sql", m->up_file ? "down" : "up", m->label,
                    m->up_file ? ".down.sql" : ".up.sql");
            return CMS_MIGSET_UNPAIRED;
        }
        unsigned char h[crypto_hash_sha256_BYTES];
        char hex[crypto_hash_sha256_BYTES * 2 + 1];
        crypto_hash_sha256(h, (const unsigned char *)m->up, m->up_len);
        sodium_bin2hex(hex, sizeof hex, h, sizeof h);
        m->checksum = strdup(hex);
        if (m->checksum == NULL)
            return CMS_MIGSET_NOMEM;
    }
    if (s->n > 1)
        qsort(s->v, s->n, sizeof s->v[0], by_version);
    return CMS_MIGSET_OK;
}

cms_migset_err cms_migset_load_embedded(cms_migset **out, char *err, size_t errlen)
{
    cms_migset_err rc = CMS_MIGSET_NOMEM;
    cms_migset *s = set_create("embedded");
    if (s == NULL)
        goto out;
    for (const cms_migset_blob *b = cms_migset_embedded; b->name != NULL; b++) {
        rc = add_file(s, b->name, b->data, b->len, err, errlen);
        if (rc != CMS_MIGSET_OK)
            goto out;
    }
    rc = finish(s, err, errlen);
    if (rc != CMS_MIGSET_OK)
        goto out;
    *out = s;
    s = NULL;
out:
    if (rc == CMS_MIGSET_NOMEM)
        set_err(err, errlen, "out of memory loading the embedded migrations");
    cms_migset_destroy(s);
    return rc;
}

/* Reads a whole file of at most CMS_MIGSET_FILE_MAX bytes. */
static cms_migset_err read_file(const char *path, char **data, size_t *len, char *err,
                                size_t errlen)
{
    cms_migset_err rc = CMS_MIGSET_IO;
    char *buf = NULL;
    FILE *f = fopen(path, "rb");
    struct stat st;
    if (f == NULL || fstat(fileno(f), &st) != 0) {
        set_err(err, errlen, "cannot open %s: %s", path, strerror(errno));
        goto out;
    }
    if (!S_ISREG(st.st_mode) || (unsigned long long)st.st_size > CMS_MIGSET_FILE_MAX) {
        set_err(err, errlen, "%s is not a regular file of at most %u bytes", path,
                CMS_MIGSET_FILE_MAX);
        rc = CMS_MIGSET_BAD_FILE;
        goto out;
    }
    size_t n = (size_t)st.st_size;
    buf = malloc(n + 1);
    if (buf == NULL) {
        rc = CMS_MIGSET_NOMEM;
        goto out;
    }
    if (fread(buf, 1, n, f) != n || ferror(f)) {
        set_err(err, errlen, "cannot read %s: %s", path, strerror(errno));
        goto out;
    }
    buf[n] = '\0';
    *data = buf;
    *len = n;
    buf = NULL;
    rc = CMS_MIGSET_OK;
out:
    free(buf);
    if (f)
        fclose(f);
    return rc;
}

cms_migset_err cms_migset_load_dir(const char *dir, cms_migset **out, char *err, size_t errlen)
{
    cms_migset_err rc = CMS_MIGSET_NOMEM;
    cms_migset *s = NULL;
    char *data = NULL;
    DIR *d = opendir(dir);
    if (d == NULL) {
        set_err(err, errlen, "cannot open the migrations folder %s: %s", dir, strerror(errno));
        rc = CMS_MIGSET_IO;
        goto out;
    }
    s = set_create(dir);
    if (s == NULL)
        goto out;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t n = strlen(e->d_name), stem = 0;
        if (e->d_name[0] == '.' || !ends_with(e->d_name, n, ".sql", &stem))
            continue;
        char path[4096];
        if (snprintf(path, sizeof path, "%s/%s", dir, e->d_name) >= (int)sizeof path) {
            set_err(err, errlen, "path too long: %s/%s", dir, e->d_name);
            rc = CMS_MIGSET_IO;
            goto out;
        }
        size_t len = 0;
        rc = read_file(path, &data, &len, err, errlen);
        if (rc != CMS_MIGSET_OK)
            goto out;
        rc = add_file(s, e->d_name, data, len, err, errlen);
        free(data);
        data = NULL;
        if (rc != CMS_MIGSET_OK)
            goto out;
    }
    rc = finish(s, err, errlen);
    if (rc != CMS_MIGSET_OK)
        goto out;
    *out = s;
    s = NULL;
out:
    if (rc == CMS_MIGSET_NOMEM)
        set_err(err, errlen, "out of memory loading the migrations in %s", dir);
    free(data);
    if (d)
        closedir(d);
    cms_migset_destroy(s);
    return rc;
}

const char *cms_migset_source(const cms_migset *s)
{
    return s ? s->source : NULL;
}

size_t cms_migset_count(const cms_migset *s)
{
    return s ? s->n : 0;
}

const cms_migration *cms_migset_at(const cms_migset *s, size_t i)
{
    return (s && i < s->n) ? &s->v[i] : NULL;
}

const cms_migration *cms_migset_find(const cms_migset *s, int version)
{
    return s ? find_mut((cms_migset *)s, version) : NULL;
}

/* Creates path exclusively with the given text. */
static cms_migset_err create_file(const char *path, const char *text, char *err, size_t errlen)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) {
        set_err(err, errlen, "cannot create %s: %s", path, strerror(errno));
        return errno == EEXIST ? CMS_MIGSET_EXISTS : CMS_MIGSET_IO;
    }
    size_t n = strlen(text);
    ssize_t w = write(fd, text, n);
    int werr = errno;
    if (close(fd) != 0 || w < 0 || (size_t)w != n) {
        set_err(err, errlen, "cannot write %s: %s", path, strerror(werr));
        unlink(path);
        return CMS_MIGSET_IO;
    }
    return CMS_MIGSET_OK;
}

cms_migset_err cms_migset_new(const char *dir, const char *name, char *up_path, size_t up_len,
                              char *down_path, size_t down_len, char *err, size_t errlen)
{
    cms_migset_err rc = CMS_MIGSET_BAD_NAME;
    cms_migset *s = NULL;
    if (!cms_migset_valid_name(name)) {
        set_err(err, errlen, "migration name \"%s\" must be 1 to %d of a-z, 0-9 and _",
                name ? name : "", CMS_MIGSET_NAME_MAX);
        goto out;
    }
    rc = cms_migset_load_dir(dir, &s, err, errlen);
    if (rc != CMS_MIGSET_OK)
        goto out;
    int next = s->n ? s->v[s->n - 1].version + 1 : 1;
    char label[VERSION_DIGITS_MAX + CMS_MIGSET_NAME_MAX + 8];
    snprintf(label, sizeof label, "%04d_%s", next, name);
    if (snprintf(up_path, up_len, "%s/%s.up.sql", dir, label) >= (int)up_len ||
        snprintf(down_path, down_len, "%s/%s.down.sql", dir, label) >= (int)down_len) {
        set_err(err, errlen, "path too long: %s/%s", dir, label);
        rc = CMS_MIGSET_IO;
        goto out;
    }
    char text[256];
    snprintf(text, sizeof text, "-- %s: runs in one transaction, with its schema_migrations row.\n",
             label);
    rc = create_file(up_path, text, err, errlen);
    if (rc != CMS_MIGSET_OK)
        goto out;
    snprintf(text, sizeof text, "-- %s: undoes %s.up.sql, in one transaction.\n", label, label);
    rc = create_file(down_path, text, err, errlen);
    if (rc != CMS_MIGSET_OK)
        unlink(up_path);
out:
    cms_migset_destroy(s);
    return rc;
}
