/* The wire of a worker's reports to cms-training: a cms.v1.WorkerReport
 * request on <command prefix>.training.report, answered by a cms.v1.Reply
 * whose result is a cms.v1.ReportReply, or an error. Pure: packing and
 * reading, no I/O. */
#ifndef WORKER_REPORT_H
#define WORKER_REPORT_H

#include "cms/v1/command.pb-c.h"
#include "cms/v1/training.pb-c.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define REPORT_SERVICE "training"
#define REPORT_VERB "report"
#define REPORT_TEXT_MAX 512
#define REPORT_REPLY_MAX 65536 /* bytes of a reply read at most */

typedef enum {
    REPORT_ACCEPTED,    /* a ReportReply: see stop and max_steps */
    REPORT_REFUSED,     /* an error: code and message */
    REPORT_UNDECODABLE, /* neither */
} report_outcome;

typedef struct report_answer {
    report_outcome outcome;
    /* REPORT_ACCEPTED */
    bool stop;
    int64_t max_steps; /* 0: not said */
    double privacy_budget_spent;
    /* REPORT_ACCEPTED with stop: why; REPORT_REFUSED: the message */
    char text[REPORT_TEXT_MAX];
    Cms__V1__ErrorCode code; /* REPORT_REFUSED */
} report_answer;

/* Reads a reply's bytes into *out (text made printable and cut to fit). */
report_outcome report_decode(const uint8_t *data, size_t len, report_answer *out);

/* Whether a refusal may go away by itself (UNAVAILABLE, INTERNAL): the
 * report is worth sending again later. */
bool report_transient(const report_answer *a);

/* "STARTED", "PROGRESS", ...; "UNSPECIFIED" outside the enum. */
const char *report_kind_name(Cms__V1__ReportKind k);
/* "INVALID_ARGUMENT", ...; "ERROR_<n>" (into buf) for a code this build does
 * not know. */
const char *report_code_name(int code, char buf[24]);

/* r packed into a malloc'd buffer (*len bytes); NULL when out of memory. */
uint8_t *report_pack(const Cms__V1__WorkerReport *r, size_t *len);

#endif
