/* Signing, publishing and storing a chain head; see checkpoint.h. */
#include "checkpoint.h"

#include "bus.h"
#include "log.h"
#include "uuid.h"

#include "cms/v1/audit.pb-c.h"

#include <endian.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char SQL_CHECKPOINT[] =
    "INSERT INTO audit_checkpoints (writer, seq, hash, total_rows, at, key_id, signature) "
    "VALUES ($1, $2, $3, $4, " CMS_PG_SQL_FROM_US("$5") ", $6, $7) ON CONFLICT DO NOTHING";
static const Oid CHECKPOINT_TYPES[7] = {23, 20, 17, 20, 20, 25, 17};

struct audit_signer {
    cms_pg *pg;
    cms_nats *nats;
    const cms_pg_stmt *store;
    uint8_t sk[crypto_sign_SECRETKEYBYTES];
    char key_id[64];
    uint64_t published, sending;
    int inflight; /* the publish and the insert of the one being signed */
    void (*settled)(void *arg);
    void *arg;
    cms_counter *m_published;
};

audit_signer *audit_signer_new(cms_pg *pg, cms_nats *nats, const uint8_t sk[64])
{
    audit_signer *s = calloc(1, sizeof *s);
    if (s == NULL)
        return NULL;
    s->pg = pg;
    s->nats = nats;
    memcpy(s->sk, sk, sizeof s->sk);
    uint8_t pk[crypto_sign_PUBLICKEYBYTES];
    crypto_sign_ed25519_sk_to_pk(pk, s->sk);
    sodium_bin2base64(s->key_id, sizeof s->key_id, pk, sizeof pk, sodium_base64_VARIANT_ORIGINAL);
    s->m_published = cms_metrics_counter(cms_metrics_default(), "cms_audit_checkpoints_total",
                                         "Signed chain heads published", NULL);
    return s;
}

int audit_signer_prepare(audit_signer *s)
{
    s->store = cms_pg_prepare(s->pg, "audit_checkpoint", SQL_CHECKPOINT, 7, CHECKPOINT_TYPES);
    return s->store ? 0 : -1;
}

const char *audit_signer_key_id(const audit_signer *s)
{
    return s->key_id;
}

uint64_t audit_signer_published(const audit_signer *s)
{
    return s->published;
}

bool audit_signer_busy(const audit_signer *s)
{
    return s->inflight > 0;
}

static void settle(audit_signer *s)
{
    if (--s->inflight == 0 && s->settled)
        s->settled(s->arg);
}

static void published(void *arg, cms_nats_err err, const cms_nats_pub_ack *ack)
{
    (void)ack;
    audit_signer *s = arg;
    if (err == CMS_NATS_OK) {
        if (s->sending > s->published)
            s->published = s->sending;
        cms_counter_add(s->m_published, 1);
    } else {
        cms_log_warn("audit checkpoint not published, the next one will be", "{s:s, s:s}", "stream",
                     CMS_BUS_CHECKPOINT_STREAM, "error", cms_nats_strerror(err));
    }
    settle(s);
}

static void stored(void *arg, cms_pg_err err, const cms_pg_result *res)
{
    audit_signer *s = arg;
    if (err != CMS_PG_OK)
        cms_log_warn("audit checkpoint not stored in audit_checkpoints (the stream has it)",
                     "{s:s}", "error",
                     err == CMS_PG_ESQL ? cms_pg_result_message(res) : cms_pg_strerror(err));
    settle(s);
}

bool audit_signer_sign(audit_signer *s, const audit_head *h, void (*settled)(void *arg), void *arg)
{
    cms_uuid lid;
    if (s->inflight > 0 || h->seq <= s->published ||
        !cms_uuid_parse(h->log_id, strlen(h->log_id), &lid))
        return false;
    ach_checkpoint c = {
        .writer = (uint64_t)h->writer, .seq = h->seq, .total_rows = h->rows, .key_id = s->key_id};
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    c.at_us = (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
    memcpy(c.log_id, lid.b, 16);
    memcpy(c.hash, h->hash, ACH_HASH_BYTES);
    uint8_t sig[ACH_SIG_BYTES];
    if (!ach_checkpoint_sign(&c, s->sk, sig))
        return false;
    Cms__V1__AuditCheckpoint m = CMS__V1__AUDIT_CHECKPOINT__INIT;
    m.writer = h->writer;
    m.seq = (int64_t)c.seq;
    m.hash = (ProtobufCBinaryData){ACH_HASH_BYTES, c.hash};
    m.total_rows = (int64_t)c.total_rows;
    m.at_us = c.at_us;
    m.key_id = s->key_id;
    m.signature = (ProtobufCBinaryData){ACH_SIG_BYTES, sig};
    uint8_t buf[256];
    size_t len = cms__v1__audit_checkpoint__get_packed_size(&m);
    if (len > sizeof buf)
        return false;
    cms__v1__audit_checkpoint__pack(&m, buf);
    char subject[128], msg_id[128];
    snprintf(subject, sizeof subject, CMS_BUS_CHECKPOINT_PREFIX "%s.%d", h->log_id, (int)h->writer);
    snprintf(msg_id, sizeof msg_id, "%s:%d:%llu", h->log_id, (int)h->writer,
             (unsigned long long)c.seq);
    s->settled = settled;
    s->arg = arg;
    s->sending = c.seq;
    if (cms_nats_js_publish(s->nats, subject, msg_id, NULL, buf, len, published, s) != CMS_NATS_OK)
        return false;
    s->inflight++;
    /* the database's copy */
    /* binary parameters: int4 and int8 in network order */
    uint32_t w = htobe32((uint32_t)h->writer);
    uint64_t q = htobe64(c.seq), t = htobe64(c.total_rows), at = htobe64((uint64_t)c.at_us);
    const char *v[7] = {(const char *)&w,  (const char *)&q, (const char *)c.hash, (const char *)&t,
                        (const char *)&at, s->key_id,        (const char *)sig};
    const int l[7] = {4, 8, ACH_HASH_BYTES, 8, 8, (int)strlen(s->key_id), ACH_SIG_BYTES};
    const int f[7] = {1, 1, 1, 1, 1, 0, 1};
    cms_pg_job *job = cms_pg_job_new();
    if (job == NULL || cms_pg_job_exec(job, s->store, v, l, f) != CMS_PG_OK) {
        cms_pg_job_free(job);
        return true;
    }
    cms_pg_job_idempotent(job);
    if (cms_pg_submit(s->pg, &job, stored, s) == CMS_PG_OK)
        s->inflight++;
    return true;
}

void audit_signer_free(audit_signer *s)
{
    if (s == NULL)
        return;
    sodium_memzero(s->sk, sizeof s->sk);
    free(s);
}
