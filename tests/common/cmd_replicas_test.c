/* The command server in real service processes (cms-testsvc): a caller is
 * authenticated before its body is decoded, and the decoded body is
 * bounded; a request_id runs its command once however many times it is
 * sent at once to two replicas, every repeat getting the same reply, and
 * its stored reply belongs to its verb and its caller. */
#include "cms/v1/envelope.pb-c.h"
#include "svcfx.h"
#include "testcmd.h"
#include "testenv.h"
#include "uuid.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Keys cms-testsvc accepts: any id, a secret of 32 zero bytes. */
#define KEY_A "cms_0190f0a1b2c37d4e8f9a0b1c2d3e4f50_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
#define KEY_B "cms_0190f0a1b2c37d4e8f9a0b1c2d3e4f51_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"

enum { REPEATS = 50, MAX_REQUEST = 64 * 1024 };

static svcfx F;

static void fini(void)
{
    svcfx_teardown(&F);
}

TestSuite(cmd_replicas, .fini = fini, .timeout = 120);

static void subject(char *out, size_t len, const char *verb)
{
    snprintf(out, len, "%s.testsvc.%s", F.prefix, verb);
}

static void assert_error(Cms__V1__Reply *r, Cms__V1__ErrorCode code, const char *field,
                         const char *what)
{
    cr_assert_eq(r->outcome_case, CMS__V1__REPLY__OUTCOME_ERROR, "%s: an error", what);
    cr_assert_eq(r->error->code, code, "%s: code %d, want %d (%s)", what, r->error->code, code,
                 r->error->message);
    cr_assert_str_eq(r->error->field, field, "%s", what);
    cms__v1__reply__free_unpacked(r, NULL);
}

Test(cmd_replicas, the_caller_is_checked_before_the_body_and_the_decoded_body_is_bounded)
{
    svcfx_setup(&F, "cmdrep");
    svcfx_start(&F, "cms-testsvc", NULL);
    char echo[128];
    subject(echo, sizeof echo, "echo");
    static const uint8_t junk[] = {0xff, 0xff, 0xff, 0xff, 0x0f, 0x12};
    /* no key: refused for that, whatever the body (it is never read) */
    assert_error(cms_test_command_bytes(F.nc, echo, NULL, NULL, junk, sizeof junk),
                 CMS__V1__ERROR_CODE__PERMISSION_DENIED, "Authorization", "no key, junk body");
    assert_error(cms_test_command_bytes(F.nc, echo, "cms_nonsense", NULL, junk, sizeof junk),
                 CMS__V1__ERROR_CODE__PERMISSION_DENIED, "Authorization", "bad key, junk body");
    /* a known caller's junk is an invalid body */
    assert_error(cms_test_command_bytes(F.nc, echo, KEY_A, NULL, junk, sizeof junk),
                 CMS__V1__ERROR_CODE__INVALID_ARGUMENT, "body", "junk body");
    /* within the size limit, but many times larger once decoded: ~21,000
     * unknown varint fields of 3 bytes each, each kept with its own record */
    size_t n = MAX_REQUEST - 16;
    uint8_t *big = malloc(n);
    cr_assert_not_null(big);
    size_t at = 0;
    for (; at + 3 <= n; at += 3) {
        big[at] = 0xc0; /* field 1000, varint */
        big[at + 1] = 0x3e;
        big[at + 2] = 0x00;
    }
    Cms__V1__Reply *r = cms_test_command_bytes(F.nc, echo, KEY_A, NULL, big, at);
    cr_assert_eq(r->outcome_case, CMS__V1__REPLY__OUTCOME_ERROR);
    cr_assert_not_null(strstr(r->error->message, "decoded"), "bounded decode: %s",
                       r->error->message);
    assert_error(r, CMS__V1__ERROR_CODE__INVALID_ARGUMENT, "body", "a body that decodes large");
    free(big);
    /* larger than a request may be: refused before anything else */
    big = calloc(1, MAX_REQUEST + 1);
    cr_assert_not_null(big);
    assert_error(cms_test_command_bytes(F.nc, echo, NULL, NULL, big, MAX_REQUEST + 1),
                 CMS__V1__ERROR_CODE__INVALID_ARGUMENT, "body", "too large");
    free(big);
    /* and the service goes on */
    Cms__V1__Envelope e = CMS__V1__ENVELOPE__INIT;
    e.event_id = (char *)"still-here";
    r = cms_test_command(F.nc, echo, KEY_A, NULL, &e.base);
    cr_assert_eq(cms_test_reply_code(r), 0);
    cms__v1__reply__free_unpacked(r, NULL);
}

static int rows(const char *key)
{
    char sql[160];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM testsvc_records WHERE key = '%s'", key);
    char *v = svcfx_sql(&F, sql);
    cr_assert_not_null(v);
    int k = atoi(v);
    free(v);
    return k;
}

/* All n replies are results with one and the same body; returns the first. */
static Cms__V1__Reply *all_the_same(Cms__V1__Reply **out, int n)
{
    for (int i = 0; i < n; i++) {
        cr_assert_eq(cms_test_reply_code(out[i]), 0, "reply %d: %s", i,
                     out[i]->outcome_case == CMS__V1__REPLY__OUTCOME_ERROR ? out[i]->error->message
                                                                           : "");
        cr_assert_eq(out[i]->result.len, out[0]->result.len);
        cr_assert_eq(memcmp(out[i]->result.data, out[0]->result.data, out[0]->result.len), 0,
                     "reply %d is the first one's", i);
    }
    for (int i = 1; i < n; i++)
        cms__v1__reply__free_unpacked(out[i], NULL);
    return out[0];
}

Test(cmd_replicas, a_request_id_runs_once_across_two_replicas_and_fifty_concurrent_retries)
{
    svcfx_setup(&F, "cmdrep");
    char *ok = svcfx_sql(&F, "CREATE TABLE testsvc_records (id bigserial PRIMARY KEY, key text)");
    cr_assert_not_null(ok);
    free(ok);
    cr_assert_eq(cms_test_db_grant_testsvc(F.db, (const char *const[]){"testsvc_records", NULL}),
                 0);
    svcfx_start_at(&F, 0, "cms-testsvc", NULL);
    svcfx_start_at(&F, 1, "cms-testsvc", NULL);
    char record[128], echo[128], rid[64];
    subject(record, sizeof record, "record");
    subject(echo, sizeof echo, "echo");
    cms_uuid u;
    cms_uuid_v7(&u);
    char id[CMS_UUID_STRLEN + 1];
    cms_uuid_format(&u, id);
    snprintf(rid, sizeof rid, "retry-%s", id);
    Cms__V1__Envelope e = CMS__V1__ENVELOPE__INIT;
    e.event_id = id; /* the row's key */

    /* fifty at once, shared by the two replicas' queue group: one runs */
    Cms__V1__Reply *out[REPEATS];
    cms_test_commands(F.nc, record, KEY_A, rid, &e.base, REPEATS, out);
    Cms__V1__Reply *first = all_the_same(out, REPEATS);
    cr_assert_eq(rows(id), 1, "the command ran once");
    /* once settled: the stored reply, from either replica */
    cms_test_commands(F.nc, record, KEY_A, rid, &e.base, REPEATS, out);
    Cms__V1__Reply *again = all_the_same(out, REPEATS);
    cr_assert_eq(again->result.len, first->result.len);
    cr_assert_eq(memcmp(again->result.data, first->result.data, first->result.len), 0);
    cms__v1__reply__free_unpacked(again, NULL);
    cr_assert_eq(rows(id), 1);
    for (int i = 0; i < 2; i++) /* the queue group gave both replicas a share */
        cr_assert_gt(svcfx_metric(&F, i, "cms_command_duration_seconds_count{verb=\"record\"}"), 0,
                     "replica %d answered", i);
    /* the request_id is the caller's and the verb's: another caller's or
     * another verb's runs on its own */
    Cms__V1__Reply *r = cms_test_command(F.nc, record, KEY_B, rid, &e.base);
    cr_assert_eq(cms_test_reply_code(r), 0);
    cr_assert(r->result.len != first->result.len ||
                  memcmp(r->result.data, first->result.data, first->result.len) != 0,
              "another caller's run has a reply of its own");
    cms__v1__reply__free_unpacked(r, NULL);
    cr_assert_eq(rows(id), 2);
    r = cms_test_command(F.nc, echo, KEY_A, rid, &e.base);
    cr_assert_eq(cms_test_reply_code(r), 0);
    Cms__V1__Envelope *echoed = cms__v1__envelope__unpack(NULL, r->result.len, r->result.data);
    cr_assert_not_null(echoed);
    cr_assert_str_eq(echoed->event_id, id, "echo ran: not record's stored reply");
    cms__v1__envelope__free_unpacked(echoed, NULL);
    cms__v1__reply__free_unpacked(r, NULL);
    cms__v1__reply__free_unpacked(first, NULL);
}
