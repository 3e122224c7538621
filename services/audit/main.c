/* cms-audit: records every event on cms.events.> in audit_logs, once, and
 * answers who may read it (cms.cmd.audit.query). */
#include "edkey.h"
#include "ingest.h"
#include "log.h"
#include "query.h"
#include "service.h"

#include <sodium.h>
#include <stdlib.h>

static const cms_option options[] = {
    {"audit-batch-size", "CMS_AUDIT_BATCH_SIZE", CMS_OPT_INT, "1000",
     "rows per insert (1 to 100000)", CMS_OPT_PUBLIC, false},
    {"audit-batch-age", "CMS_AUDIT_BATCH_AGE", CMS_OPT_DURATION, "5ms",
     "longest an event waits for its batch to fill (1ms to 1m)", CMS_OPT_PUBLIC, false},
    {"audit-inflight", "CMS_AUDIT_INFLIGHT", CMS_OPT_INT, "2",
     "batches being written at once (1 to 64)", CMS_OPT_PUBLIC, false},
    {"audit-max-ack-pending", "CMS_AUDIT_MAX_ACK_PENDING", CMS_OPT_INT, "0",
     "events held unacknowledged (0: 4 x audit-batch-size; at most 1000000)", CMS_OPT_PUBLIC,
     false},
    {"audit-durable", "CMS_AUDIT_DURABLE", CMS_OPT_STRING, "audit",
     "JetStream durable consumer name", CMS_OPT_PUBLIC, false},
    {"audit-ack-wait", "CMS_AUDIT_ACK_WAIT", CMS_OPT_DURATION, "30s",
     "redelivery of an unacknowledged event after this long, when the durable is created (at "
     "least 1s)",
     CMS_OPT_PUBLIC, false},
    {"audit-subject", "CMS_AUDIT_SUBJECT", CMS_OPT_STRING, "cms.events.>",
     "events to record (a subject filter within CMS_EVENTS)", CMS_OPT_PUBLIC, false},
    {"audit-signing-key", "CMS_AUDIT_SIGNING_KEY", CMS_OPT_STRING, NULL,
     "file of the Ed25519 key the chain's checkpoints are signed with (cmsctl audit keygen; "
     "its public half a public_key credential of this service's identity); none: no checkpoints",
     CMS_OPT_PUBLIC, false},
    {"audit-checkpoint-every", "CMS_AUDIT_CHECKPOINT_EVERY", CMS_OPT_DURATION, "2s",
     "how often the chain's head is signed and published (also every 1000 batches)", CMS_OPT_PUBLIC,
     false},
    {"audit-bench-no-chain", "CMS_AUDIT_BENCH_NO_CHAIN", CMS_OPT_BOOL, "false",
     "tests/bench/audit's baseline only: no hash chain; never in production", CMS_OPT_PUBLIC,
     false},
};

typedef struct {
    audit_ingest *in;
} app;

static int start(cms_service *s, void *arg)
{
    app *a = arg;
    const cms_config *c = cms_service_config(s);
    int64_t batch = cms_config_int(c, "audit-batch-size"),
            age = cms_config_duration_ms(c, "audit-batch-age"),
            inflight = cms_config_int(c, "audit-inflight"),
            pending = cms_config_int(c, "audit-max-ack-pending"),
            ack_wait = cms_config_duration_ms(c, "audit-ack-wait");
    if (batch < 1 || batch > 100000 || age < 1 || age > 60000 || inflight < 1 || inflight > 64 ||
        pending < 0 || pending > 1000000 || ack_wait < 1000) {
        cms_log_error(
            "bad option: audit-batch-size 1..100000, audit-batch-age 1ms..1m, "
            "audit-inflight 1..64, audit-max-ack-pending 0..1000000, audit-ack-wait >= 1s",
            NULL);
        return -1;
    }
    uint8_t sk[64];
    const char *key_file = cms_config_str(c, "audit-signing-key");
    bool has_key = key_file != NULL && key_file[0] != '\0';
    if (has_key) {
        char why[512];
        if (!cms_edkey_load(key_file, sk, why, sizeof why)) {
            cms_log_error("audit signing key not loaded", "{s:s, s:s}", "error", why, "hint",
                          "make one with cmsctl audit keygen --out FILE (mode 600)");
            return -1;
        }
    } else {
        cms_log_warn("audit: no signing key (audit-signing-key): the chain is kept but no "
                     "checkpoint is signed, so a truncated tail cannot be told",
                     NULL);
    }
    bool no_chain = cms_config_bool(c, "audit-bench-no-chain");
    if (no_chain)
        cms_log_warn("audit: BENCHMARK BASELINE: no hash chain; never run so in production", NULL);
    audit_options o = {.batch_size = (int)batch,
                       .batch_age_ms = age,
                       .max_inflight = (int)inflight,
                       .max_ack_pending = (int)pending,
                       .durable = cms_config_str(c, "audit-durable"),
                       .subject = cms_config_str(c, "audit-subject"),
                       .ack_wait_ms = ack_wait,
                       .signing_key = has_key ? sk : NULL,
                       .checkpoint_ms = cms_config_duration_ms(c, "audit-checkpoint-every"),
                       .no_chain = no_chain};
    if (audit_query_register(cms_service_cmd(s), cms_service_pg(s)) != CMS_CMD_OK) {
        cms_log_error("the query verb cannot be registered", NULL);
        return -1;
    }
    int rc = audit_ingest_create(cms_service_loop(s), cms_service_pg(s), cms_service_nats(s), &o,
                                 &a->in);
    sodium_memzero(sk, sizeof sk);
    if (rc != 0)
        return -1;
    return audit_ingest_start(a->in);
}

static void drained(void *arg)
{
    cms_service_drained(arg);
}

static void drain(cms_service *s, void *arg)
{
    app *a = arg;
    audit_ingest_drain(a->in, drained, s);
}

static bool ready(cms_service *s, void *arg, char *why, size_t len)
{
    (void)s;
    app *a = arg;
    return audit_ingest_ready(a->in, why, len);
}

static void close_ingest(cms_service *s, void *arg)
{
    (void)s;
    app *a = arg;
    audit_ingest_close(a->in, NULL, NULL);
}

int main(int argc, char **argv)
{
    static app a;
    static const cms_service_spec spec = {
        .name = "audit",
        .summary = "records every event on cms.events.> in audit_logs, once, and reads it back",
        .options = options,
        .noptions = sizeof options / sizeof options[0],
        .commands = true,
        .read_only_commands = true,
        .start = start,
        .drain = drain,
        .ready = ready,
        .close = close_ingest,
        .arg = &a,
    };
    int code = cms_service_main(argc, argv, &spec);
    audit_ingest_destroy(a.in);
    return code;
}
