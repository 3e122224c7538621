/* The wire of a worker's reports; see report.h. */
#include "report.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Text from the wire for a log line: control characters as '?', cut. */
static void copy_printable(char *dst, size_t dstlen, const char *src)
{
    size_t i = 0;
    for (; src != NULL && src[i] != '\0' && i + 1 < dstlen; i++) {
        unsigned char ch = (unsigned char)src[i];
        dst[i] = (ch < 0x20 || ch == 0x7f) ? '?' : (char)ch;
    }
    dst[i] = '\0';
}

report_outcome report_decode(const uint8_t *data, size_t len, report_answer *out)
{
    memset(out, 0, sizeof *out);
    out->outcome = REPORT_UNDECODABLE;
    if (len > REPORT_REPLY_MAX)
        return out->outcome;
    Cms__V1__Reply *r = cms__v1__reply__unpack(NULL, len, data);
    if (r == NULL)
        return out->outcome;
    switch (r->outcome_case) {
    case CMS__V1__REPLY__OUTCOME_RESULT: {
        Cms__V1__ReportReply *rr =
            cms__v1__report_reply__unpack(NULL, r->result.len, r->result.data);
        if (rr == NULL)
            break;
        out->outcome = REPORT_ACCEPTED;
        out->stop = rr->stop;
        out->max_steps = rr->max_steps > 0 ? rr->max_steps : 0;
        out->privacy_budget_spent = rr->privacy_budget_spent;
        copy_printable(out->text, sizeof out->text, rr->reason);
        cms__v1__report_reply__free_unpacked(rr, NULL);
        break;
    }
    case CMS__V1__REPLY__OUTCOME_ERROR:
        if (r->error == NULL || r->error->code == CMS__V1__ERROR_CODE__UNSPECIFIED)
            break;
        out->outcome = REPORT_REFUSED;
        out->code = r->error->code;
        copy_printable(out->text, sizeof out->text, r->error->message);
        break;
    case CMS__V1__REPLY__OUTCOME__NOT_SET:
    case _CMS__V1__REPLY__OUTCOME__CASE_IS_INT_SIZE:
        break;
    }
    cms__v1__reply__free_unpacked(r, NULL);
    return out->outcome;
}

bool report_transient(const report_answer *a)
{
    return a->outcome == REPORT_REFUSED && (a->code == CMS__V1__ERROR_CODE__UNAVAILABLE ||
                                            a->code == CMS__V1__ERROR_CODE__INTERNAL);
}

const char *report_kind_name(Cms__V1__ReportKind k)
{
    switch (k) {
    case CMS__V1__REPORT_KIND__REPORT_KIND_STARTED:
        return "STARTED";
    case CMS__V1__REPORT_KIND__REPORT_KIND_PROGRESS:
        return "PROGRESS";
    case CMS__V1__REPORT_KIND__REPORT_KIND_COMPLETED:
        return "COMPLETED";
    case CMS__V1__REPORT_KIND__REPORT_KIND_FAILED:
        return "FAILED";
    case CMS__V1__REPORT_KIND__REPORT_KIND_STOPPED:
        return "STOPPED";
    case CMS__V1__REPORT_KIND__REPORT_KIND_UNSPECIFIED:
    case _CMS__V1__REPORT_KIND_IS_INT_SIZE:
        break;
    }
    return "UNSPECIFIED";
}

const char *report_code_name(int code, char buf[24])
{
    const ProtobufCEnumValue *v =
        protobuf_c_enum_descriptor_get_value(&cms__v1__error_code__descriptor, code);
    if (v != NULL && code != CMS__V1__ERROR_CODE__UNSPECIFIED)
        return v->name;
    snprintf(buf, 24, "ERROR_%d", code);
    return buf;
}

uint8_t *report_pack(const Cms__V1__WorkerReport *r, size_t *len)
{
    size_t n = cms__v1__worker_report__get_packed_size(r);
    uint8_t *buf = malloc(n > 0 ? n : 1);
    if (buf == NULL)
        return NULL;
    cms__v1__worker_report__pack(r, buf);
    *len = n;
    return buf;
}
