/* The wire of cms-worker's reports (services/worker/report.h): a
 * cms.v1.Reply read as an accepted ReportReply, a refusal or neither, and
 * which refusals are worth sending again. */
#include "report.h"

#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

static uint8_t buf[4096];
static size_t len;

static void reply_result(const Cms__V1__ReportReply *rr)
{
    uint8_t inner[1024];
    size_t n = cms__v1__report_reply__pack(rr, inner);
    Cms__V1__Reply r = CMS__V1__REPLY__INIT;
    r.outcome_case = CMS__V1__REPLY__OUTCOME_RESULT;
    r.result.data = inner;
    r.result.len = n;
    len = cms__v1__reply__pack(&r, buf);
}

static void reply_error(Cms__V1__ErrorCode code, const char *message)
{
    Cms__V1__Error err = CMS__V1__ERROR__INIT;
    err.code = code;
    err.message = (char *)message;
    Cms__V1__Reply r = CMS__V1__REPLY__INIT;
    r.outcome_case = CMS__V1__REPLY__OUTCOME_ERROR;
    r.error = &err;
    len = cms__v1__reply__pack(&r, buf);
}

Test(decode, an_accepted_report)
{
    Cms__V1__ReportReply rr = CMS__V1__REPORT_REPLY__INIT;
    rr.max_steps = 321;
    rr.privacy_budget_spent = 0.75;
    reply_result(&rr);
    report_answer a;
    cr_assert_eq(report_decode(buf, len, &a), REPORT_ACCEPTED);
    cr_assert_not(a.stop);
    cr_assert_eq(a.max_steps, 321);
    cr_assert_float_eq(a.privacy_budget_spent, 0.75, 0);
    cr_assert_not(report_transient(&a));
}

Test(decode, a_stop_with_its_reason)
{
    Cms__V1__ReportReply rr = CMS__V1__REPORT_REPLY__INIT;
    rr.stop = true;
    rr.reason = (char *)"budget\nexhausted";
    reply_result(&rr);
    report_answer a;
    cr_assert_eq(report_decode(buf, len, &a), REPORT_ACCEPTED);
    cr_assert(a.stop);
    cr_assert_str_eq(a.text, "budget?exhausted", "control characters are not passed on");
    cr_assert_eq(a.max_steps, 0, "not said");
}

Test(decode, an_empty_result_is_an_empty_report_reply)
{
    Cms__V1__ReportReply rr = CMS__V1__REPORT_REPLY__INIT;
    reply_result(&rr);
    report_answer a;
    cr_assert_eq(report_decode(buf, len, &a), REPORT_ACCEPTED);
    cr_assert_not(a.stop);
}

Test(decode, a_refusal_and_whether_it_passes)
{
    report_answer a;
    reply_error(CMS__V1__ERROR_CODE__FAILED_PRECONDITION, "job is not pending");
    cr_assert_eq(report_decode(buf, len, &a), REPORT_REFUSED);
    cr_assert_eq(a.code, CMS__V1__ERROR_CODE__FAILED_PRECONDITION);
    cr_assert_str_eq(a.text, "job is not pending");
    cr_assert_not(report_transient(&a));
    reply_error(CMS__V1__ERROR_CODE__UNAVAILABLE, "busy");
    cr_assert_eq(report_decode(buf, len, &a), REPORT_REFUSED);
    cr_assert(report_transient(&a));
    reply_error(CMS__V1__ERROR_CODE__INTERNAL, "oops");
    cr_assert_eq(report_decode(buf, len, &a), REPORT_REFUSED);
    cr_assert(report_transient(&a));
    reply_error(CMS__V1__ERROR_CODE__PERMISSION_DENIED, "not a worker");
    cr_assert_eq(report_decode(buf, len, &a), REPORT_REFUSED);
    cr_assert_not(report_transient(&a));
}

Test(decode, neither_a_result_nor_an_error)
{
    report_answer a;
    const uint8_t garbage[] = {0xff, 0xff, 0xff, 0xff};
    cr_assert_eq(report_decode(garbage, sizeof garbage, &a), REPORT_UNDECODABLE);
    cr_assert_eq(report_decode(NULL, 0, &a), REPORT_UNDECODABLE, "an empty Reply has no outcome");
    reply_error(CMS__V1__ERROR_CODE__UNSPECIFIED, "no code");
    cr_assert_eq(report_decode(buf, len, &a), REPORT_UNDECODABLE);
    /* a result that is not a ReportReply */
    Cms__V1__Reply r = CMS__V1__REPLY__INIT;
    uint8_t bad[] = {0x08, 0xff}; /* a truncated varint */
    r.outcome_case = CMS__V1__REPLY__OUTCOME_RESULT;
    r.result.data = bad;
    r.result.len = sizeof bad;
    len = cms__v1__reply__pack(&r, buf);
    cr_assert_eq(report_decode(buf, len, &a), REPORT_UNDECODABLE);
    cr_assert_not(report_transient(&a));
}

Test(names, kinds_and_codes)
{
    cr_assert_str_eq(report_kind_name(CMS__V1__REPORT_KIND__REPORT_KIND_STARTED), "STARTED");
    cr_assert_str_eq(report_kind_name(CMS__V1__REPORT_KIND__REPORT_KIND_STOPPED), "STOPPED");
    cr_assert_str_eq(report_kind_name((Cms__V1__ReportKind)42), "UNSPECIFIED");
    char b[24];
    cr_assert_str_eq(report_code_name(CMS__V1__ERROR_CODE__NOT_FOUND, b), "NOT_FOUND");
    cr_assert_str_eq(report_code_name(77, b), "ERROR_77");
}

Test(pack, a_report_round_trips)
{
    Cms__V1__WorkerReport r = CMS__V1__WORKER_REPORT__INIT;
    r.job_id = (char *)"0190f0a1-b2c3-7d4e-8f9a-0b1c2d3e4f50";
    r.attempt = 2;
    r.kind = CMS__V1__REPORT_KIND__REPORT_KIND_PROGRESS;
    r.steps = 17;
    r.loss = 0.4;
    r.accuracy = 0.8;
    r.examples = 1700;
    size_t n = 0;
    uint8_t *p = report_pack(&r, &n);
    cr_assert_not_null(p);
    Cms__V1__WorkerReport *back = cms__v1__worker_report__unpack(NULL, n, p);
    cr_assert_not_null(back);
    cr_assert_str_eq(back->job_id, r.job_id);
    cr_assert_eq(back->attempt, 2);
    cr_assert_eq(back->kind, CMS__V1__REPORT_KIND__REPORT_KIND_PROGRESS);
    cr_assert_eq(back->steps, 17);
    cr_assert_eq(back->examples, 1700);
    cms__v1__worker_report__free_unpacked(back, NULL);
    free(p);
}
