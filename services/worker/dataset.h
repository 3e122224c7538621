/* The data a job trains on: a numeric CSV file named by the dispatch's
 * dataset, <data dir>/<dataset>.csv.
 *
 * The file is read strictly, so that a job never trains on something other
 * than what its owner meant: a header line of column names (no empty
 * name), the last one "label"; then one line per example with as many
 * fields as the header, the features finite decimal numbers and the label
 * 0 or 1. No quoting, no blanks around fields, no empty lines; "\r\n" line
 * ends are accepted, and the last line may lack its "\n". Features are used
 * as they are (no scaling). A refusal says the line and the column (both
 * from 1) and what was wanted there. The sizes are bounded (dataset_limits)
 * before anything is allocated for them. */
#ifndef WORKER_DATASET_H
#define WORKER_DATASET_H

#include "dpsgd.h"
#include "xenum.h"

#include <stdbool.h>
#include <stddef.h>

#define DATASET_NAME_MAX 255
#define DATASET_FIELD_MAX 64 /* characters of one number */

#define DATASET_ERRORS(X)                                                                          \
    X(DATASET_OK, "ok")                                                                            \
    X(DATASET_EMISSING, "the file does not exist")                                                 \
    X(DATASET_EREAD, "the file cannot be read")                                                    \
    X(DATASET_EEMPTY, "the file is empty")                                                         \
    X(DATASET_EHEADER, "bad header")                                                               \
    X(DATASET_ECOLUMNS, "wrong number of fields")                                                  \
    X(DATASET_ENUMBER, "not a finite number")                                                      \
    X(DATASET_ELABEL, "the label is not 0 or 1")                                                   \
    X(DATASET_ETOOBIG, "too large")                                                                \
    X(DATASET_ENOMEM, "out of memory")

typedef enum { DATASET_ERRORS(CMS_ENUM_ITEM) DATASET_NERRORS } dataset_code;
const char *dataset_strerror(dataset_code c);

typedef struct dataset_err {
    dataset_code code;
    size_t line, column; /* from 1; 0 where it does not apply */
    char msg[320];       /* the whole sentence, line and column included */
} dataset_err;

typedef struct dataset_limits {
    size_t max_bytes;    /* of the file */
    size_t max_rows;     /* examples, the header not counted */
    size_t max_features; /* columns less the label */
} dataset_limits;

/* 1 GiB, 10 million rows, 10000 features; and never more than 2^27 numbers
 * (1 GiB of doubles) whatever the limits say. */
extern const dataset_limits dataset_default_limits;

/* Whether name may name a dataset: 1..255 of [A-Za-z0-9_.-], without "..",
 * so that it names a file in the data directory and nothing outside it.
 * why gets the reason. */
bool dataset_name_ok(const char *name, char *why, size_t whylen)
    __attribute__((warn_unused_result));

/* "<dir>/<name>.csv" into out; false if it does not fit. name must be
 * dataset_name_ok. */
bool dataset_path(const char *dir, const char *name, char *out, size_t len)
    __attribute__((warn_unused_result));

/* Parses the CSV text of len bytes (it need not end with a NUL) into *out
 * (limits NULL: the defaults). On success out->x and out->y are malloc'd
 * (dataset_release frees them); on failure *out is left empty and e says
 * why. */
dataset_code dataset_parse(const char *text, size_t len, const dataset_limits *limits,
                           dpsgd_data *out, dataset_err *e) __attribute__((warn_unused_result));

/* Reads the file at path (at most limits->max_bytes) and parses it.
 * Blocking. */
dataset_code dataset_load(const char *path, const dataset_limits *limits, dpsgd_data *out,
                          dataset_err *e) __attribute__((warn_unused_result));

void dataset_release(dpsgd_data *d); /* frees what parse allocated; NULL-safe, idempotent */

#endif
