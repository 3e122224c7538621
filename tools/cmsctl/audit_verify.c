/* cmsctl audit verify: proves audit_logs is what cms-audit committed, or
 * says where it is not.
 *
 * What is read (nothing is written anywhere):
 *   - the database, as the read-only auditor role: every writer, every
 *     batch record, then every row of audit_logs in one binary COPY (a
 *     sequential scan: rows are gathered by their batch and a batch is
 *     checked as soon as its count is reached, so memory holds only the
 *     batches still open);
 *   - CMS_AUDIT_CHECKPOINTS, one message at a time, for this log's signed
 *     heads;
 *   - through cms-identity, the public_key credentials of the audit
 *     service's identity: a checkpoint's key must be one of them, valid
 *     both at the time the checkpoint says and at the time the stream
 *     stored it.
 *
 * What is found, each with the writer, the batch and the row at fault:
 *   row_changed, row_deleted, row_inserted (a batch whose root does not
 *   match, located through the batch's digests), row_unchained (a row that
 *   names no batch record, or more rows without one than the log had before
 *   the chain), batch_missing (a gap in a writer's numbers), batch_broken
 *   (a record whose hash or link to the one before does not hold: removed,
 *   reordered or replaced), truncated (a checkpoint names a later batch
 *   than the database holds), checkpoint_mismatch (its hash or its row
 *   total is not the chain's), checkpoint_signature, checkpoint_key (its key
 *   is no credential of the identity, or was not valid at its time),
 *   writer_missing (a checkpoint names a writer the database lacks). */
#include <jansson.h>
#include <libpq-fe.h>
#include <nats/nats.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "audit/chain.h"
#include "bus.h"
#include "cli.h"
#include "cms/v1/audit.pb-c.h"
#include "cms/v1/identity.pb-c.h"
#include "ctldb.h"
#include "ctlnats.h"
#include "ctlverb.h"
#include "uuid.h"
#include "verbs.h"

#define PROG "cmsctl audit verify"
#define FINDINGS_KEPT 1000 /* described; the rest only counted */
#define DIGEST_BYTES 24
#define PG_EPOCH_US INT64_C(946684800000000) /* 2000-01-01 in Unix microseconds */

static const cms_option options[] = {
    CMSCTL_CMD_OPTIONS,
    {"database-url", "CMS_DATABASE_URL", CMS_OPT_STRING, "host=127.0.0.1 dbname=cms",
     "the database, as the read-only auditor role (cms_auditor)", CMS_OPT_PASSWORD, false},
    {"identity", NULL, CMS_OPT_STRING, "cms-audit",
     "the audit service's identity (ID or NAME), whose public_key credentials sign checkpoints",
     CMS_OPT_PUBLIC, false},
    {"from", NULL, CMS_OPT_STRING, NULL,
     "only batches written at or after this time (RFC 3339, or a date: its midnight UTC)",
     CMS_OPT_PUBLIC, false},
    {"to", NULL, CMS_OPT_STRING, NULL, "only batches written before this time (the same forms)",
     CMS_OPT_PUBLIC, false},
    {"skip-checkpoints", NULL, CMS_OPT_BOOL, "false",
     "check the rows and batches only: no NATS, no API key (a truncated tail goes unseen)",
     CMS_OPT_PUBLIC, false},
};

static const char usage_tail[] =
    "\n\n"
    "Checks every row of audit_logs against the batch it was committed in, every batch\n"
    "against the one before it, and the chain's heads against the checkpoints cms-audit\n"
    "signed into the stream CMS_AUDIT_CHECKPOINTS, with the keys cms-identity holds as\n"
    "public_key credentials of --identity. Each finding names its writer, batch and row;\n"
    "the last line counts what was checked. --from/--to limit the batches (and so the\n"
    "rows) checked, and leave out the checks of a chain's start and end.\n"
    "Listing --identity's credentials takes an admin's API key (or that identity's).\n"
    "Exit status: 0 nothing found, 1 a finding (or a failure), 2 usage "
    "error.\n\n" CMSCTL_CMD_KEY_HELP;

/* ---- findings ---- */

typedef struct finding {
    const char *kind;
    int64_t writer, seq;
    char row[CMS_UUID_STRLEN + 1];
    char what[200];
} finding;

typedef struct batch_rec {
    int32_t writer;
    int64_t seq;
    int32_t rows;
    uint8_t root[ACH_HASH_BYTES], prev[ACH_HASH_BYTES], hash[ACH_HASH_BYTES];
    int64_t cum_rows; /* rows of the writer's batches up to this one; -1 past a gap */
    uint32_t got;     /* rows seen */
    bool done, bad;
    ach_leaf *leaves;
} batch_rec;

typedef struct writer_rec {
    int32_t id;
    int64_t head_seq;
    int64_t first, last; /* index range in batches */
    bool checkpointed;
} writer_rec;

typedef struct verify {
    PGconn *db;
    bool ranged;
    batch_rec *batches;
    size_t nbatches;
    size_t *slots; /* open addressing over batches: index + 1, 0 empty */
    size_t nslots;
    writer_rec *writers;
    size_t nwriters;
    finding *findings;
    size_t nfindings, total_findings;
    uint64_t rows, unchained, rows_before, checkpoints;
    /* the stream's last message before the database's snapshot: a later
     * one may name a writer or a batch committed after it */
    uint64_t cp_horizon;
    int64_t from_us; /* --from, 0 when not given: checkpoints from then on */
    uint8_t log_id[16];
    char log_text[CMS_UUID_STRLEN + 1];
    bool tty;
    uint64_t t0;
} verify;

static void add_finding(verify *v, const char *kind, int64_t writer, int64_t seq,
                        const uint8_t *row, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

static void add_finding(verify *v, const char *kind, int64_t writer, int64_t seq,
                        const uint8_t *row, const char *fmt, ...)
{
    v->total_findings++;
    if (v->nfindings >= FINDINGS_KEPT)
        return;
    finding *f = &v->findings[v->nfindings++];
    *f = (finding){.kind = kind, .writer = writer, .seq = seq};
    if (row) {
        cms_uuid u;
        memcpy(u.b, row, 16);
        cms_uuid_format(&u, f->row);
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(f->what, sizeof f->what, fmt, ap);
    va_end(ap);
}

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static uint64_t be(const char *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = v << 8 | (uint8_t)p[i];
    return v;
}

/* ---- batches ---- */

/* The batches --from $1 and --to $2 (NULL: open) select: per writer, from
 * the first to the last written in the range, so that a range is a run of
 * each writer's chain. */
#define SQL_SPAN                                                                                   \
    "(SELECT writer, min(seq) AS lo, max(seq) AS hi FROM audit_batches "                           \
    "WHERE ($1::timestamptz IS NULL OR written_at >= $1) "                                         \
    "AND ($2::timestamptz IS NULL OR written_at < $2) GROUP BY writer)"

static size_t slot_of(const verify *v, int32_t w, int64_t seq)
{
    uint64_t h =
        ((uint64_t)(uint32_t)w * 0x9e3779b97f4a7c15u) ^ ((uint64_t)seq * 0xc2b2ae3d27d4eb4fu);
    return (size_t)(h ^ (h >> 29)) & (v->nslots - 1);
}

static batch_rec *find_batch(const verify *v, int32_t w, int64_t seq)
{
    if (v->nslots == 0)
        return NULL;
    for (size_t i = slot_of(v, w, seq);; i = (i + 1) & (v->nslots - 1)) {
        size_t k = v->slots[i];
        if (k == 0)
            return NULL;
        batch_rec *b = &v->batches[k - 1];
        if (b->writer == w && b->seq == seq)
            return b;
    }
}

static int read_meta(verify *v, const char *from, const char *to)
{
    PGresult *r =
        PQexecParams(v->db, "SELECT log_id::text, rows_before FROM audit_chain_start LIMIT 1", 0,
                     NULL, NULL, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        int rc = cmsctl_db_fail(PROG, r, "reading audit_chain_start (is the database migrated?)");
        PQclear(r);
        return rc;
    }
    if (PQntuples(r) != 1) {
        PQclear(r);
        return cmsctl_fail(PROG, "audit_chain_start has no row: the log's start was removed");
    }
    cms_uuid u;
    snprintf(v->log_text, sizeof v->log_text, "%s", PQgetvalue(r, 0, 0));
    if (cms_uuid_parse(v->log_text, strlen(v->log_text), &u))
        memcpy(v->log_id, u.b, 16);
    v->rows_before = strtoull(PQgetvalue(r, 0, 1), NULL, 10);
    PQclear(r);

    r = PQexecParams(v->db, "SELECT id, head_seq FROM audit_writers ORDER BY id", 0, NULL, NULL,
                     NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        int rc = cmsctl_db_fail(PROG, r, "reading audit_writers");
        PQclear(r);
        return rc;
    }
    v->nwriters = (size_t)PQntuples(r);
    v->writers = calloc(v->nwriters + 1, sizeof *v->writers);
    if (v->writers == NULL) {
        PQclear(r);
        return cmsctl_fail(PROG, "out of memory");
    }
    for (size_t i = 0; i < v->nwriters; i++) {
        v->writers[i].id = (int32_t)strtol(PQgetvalue(r, (int)i, 0), NULL, 10);
        v->writers[i].head_seq = strtoll(PQgetvalue(r, (int)i, 1), NULL, 10);
        v->writers[i].first = v->writers[i].last = -1;
    }
    PQclear(r);

    const char *params[2] = {from, to};
    r = PQexecParams(v->db,
                     "SELECT b.writer, b.seq, b.rows, b.root, b.prev, b.hash FROM audit_batches b "
                     "JOIN " SQL_SPAN " s ON b.writer = s.writer AND b.seq BETWEEN s.lo AND s.hi "
                     "ORDER BY b.writer, b.seq",
                     2, NULL, params, NULL, NULL, 1);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        int rc = cmsctl_db_fail(PROG, r, "reading audit_batches");
        PQclear(r);
        return rc;
    }
    v->nbatches = (size_t)PQntuples(r);
    v->batches = calloc(v->nbatches + 1, sizeof *v->batches);
    v->nslots = 16;
    while (v->nslots < 2 * v->nbatches)
        v->nslots *= 2;
    v->slots = calloc(v->nslots, sizeof *v->slots);
    if (v->batches == NULL || v->slots == NULL) {
        PQclear(r);
        return cmsctl_fail(PROG, "out of memory");
    }
    for (size_t i = 0; i < v->nbatches; i++) {
        batch_rec *b = &v->batches[i];
        int t = (int)i;
        b->writer = (int32_t)be(PQgetvalue(r, t, 0), 4);
        b->seq = (int64_t)be(PQgetvalue(r, t, 1), 8);
        b->rows = (int32_t)be(PQgetvalue(r, t, 2), 4);
        if (PQgetlength(r, t, 3) == ACH_HASH_BYTES)
            memcpy(b->root, PQgetvalue(r, t, 3), ACH_HASH_BYTES);
        if (PQgetlength(r, t, 4) == ACH_HASH_BYTES)
            memcpy(b->prev, PQgetvalue(r, t, 4), ACH_HASH_BYTES);
        if (PQgetlength(r, t, 5) == ACH_HASH_BYTES)
            memcpy(b->hash, PQgetvalue(r, t, 5), ACH_HASH_BYTES);
        size_t s = slot_of(v, b->writer, b->seq);
        while (v->slots[s] != 0)
            s = (s + 1) & (v->nslots - 1);
        v->slots[s] = i + 1;
    }
    PQclear(r);
    return CMSCTL_EXIT_OK;
}

static writer_rec *find_writer(verify *v, int64_t id)
{
    for (size_t i = 0; i < v->nwriters; i++)
        if (v->writers[i].id == id)
            return &v->writers[i];
    return NULL;
}

/* Each writer's batches: numbered 1, 2, ... without a gap, each linked to
 * the one before and hashed as recorded. */
static void check_chains(verify *v)
{
    for (size_t i = 0; i < v->nbatches; i++) {
        batch_rec *b = &v->batches[i];
        writer_rec *w = find_writer(v, b->writer);
        if (w != NULL && i + 1 < v->nbatches && v->batches[i + 1].writer == b->writer)
            ; /* not the writer's last */
        else if (w != NULL && !v->ranged && w->head_seq > b->seq)
            add_finding(v, "truncated", b->writer, b->seq + 1, NULL,
                        "audit_writers has the writer's head at batch %lld, the database ends at "
                        "%lld",
                        (long long)w->head_seq, (long long)b->seq);
        if (w == NULL) {
            add_finding(v, "batch_broken", b->writer, b->seq, NULL,
                        "a batch of a writer audit_writers does not hold");
            continue;
        }
        const batch_rec *p =
            i > 0 && v->batches[i - 1].writer == b->writer ? &v->batches[i - 1] : NULL;
        if (w->first < 0)
            w->first = (int64_t)i;
        w->last = (int64_t)i;
        /* past a gap the count is unknown: the gap is the finding, not
         * every later checkpoint's total */
        bool gap = p ? (b->seq != p->seq + 1 || p->cum_rows < 0) : b->seq != 1;
        b->cum_rows = gap ? -1 : (p ? p->cum_rows : 0) + b->rows;
        ach_batch ab = {
            .writer = (uint64_t)b->writer, .seq = (uint64_t)b->seq, .rows = (uint64_t)b->rows};
        memcpy(ab.root, b->root, ACH_HASH_BYTES);
        memcpy(ab.prev, b->prev, ACH_HASH_BYTES);
        uint8_t h[ACH_HASH_BYTES];
        ach_batch_hash(&ab, h);
        if (memcmp(h, b->hash, ACH_HASH_BYTES) != 0)
            add_finding(v, "batch_broken", b->writer, b->seq, NULL,
                        "its hash is not the hash of its fields: the record was changed");
        if (p == NULL) {
            static const uint8_t zero[ACH_HASH_BYTES];
            if (!v->ranged && b->seq != 1)
                add_finding(v, "batch_missing", b->writer, 1, NULL,
                            "the writer's batches start at %lld: batches 1 to %lld are missing",
                            (long long)b->seq, (long long)b->seq - 1);
            else if (!v->ranged && memcmp(b->prev, zero, ACH_HASH_BYTES) != 0)
                add_finding(v, "batch_broken", b->writer, b->seq, NULL,
                            "the writer's first batch follows another");
            continue;
        }
        if (b->seq != p->seq + 1)
            add_finding(v, "batch_missing", b->writer, p->seq + 1, NULL,
                        "batches %lld to %lld are missing (or renumbered)", (long long)p->seq + 1,
                        (long long)b->seq - 1);
        else if (memcmp(b->prev, p->hash, ACH_HASH_BYTES) != 0)
            add_finding(v, "batch_broken", b->writer, b->seq, NULL,
                        "it does not follow batch %lld: removed, reordered or replaced",
                        (long long)p->seq);
    }
    for (size_t i = 0; i < v->nwriters && !v->ranged; i++)
        if (v->writers[i].last < 0 && v->writers[i].head_seq > 0)
            add_finding(v, "truncated", v->writers[i].id, 1, NULL,
                        "audit_writers has the writer's head at batch %lld, the database holds "
                        "none of its batches",
                        (long long)v->writers[i].head_seq);
}

/* ---- rows ---- */

/* The digests of a batch whose root does not match: which rows differ. */
static void locate(verify *v, batch_rec *b)
{
    char w[4], q[8];
    for (int i = 0; i < 4; i++)
        w[i] = (char)((uint32_t)b->writer >> (24 - 8 * i));
    for (int i = 0; i < 8; i++)
        q[i] = (char)((uint64_t)b->seq >> (56 - 8 * i));
    const char *params[2] = {w, q};
    const int lens[2] = {4, 8}, fmts[2] = {1, 1};
    const Oid types[2] = {23, 20};
    PGresult *r =
        PQexecParams(v->db, "SELECT digests FROM audit_batches WHERE writer = $1 AND seq = $2", 2,
                     types, params, lens, fmts, 1);
    size_t nd = 0;
    const uint8_t *d = NULL;
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 &&
        PQgetlength(r, 0, 0) % DIGEST_BYTES == 0) {
        d = (const uint8_t *)PQgetvalue(r, 0, 0);
        nd = (size_t)PQgetlength(r, 0, 0) / DIGEST_BYTES;
    }
    ach_leaves_sort(b->leaves, b->got);
    size_t i = 0, k = 0, before = v->total_findings;
    while (i < b->got || k < nd) {
        int c = i >= b->got ? 1 : k >= nd ? -1 : memcmp(b->leaves[i].id, d + k * DIGEST_BYTES, 16);
        if (c < 0) {
            add_finding(v, "row_inserted", b->writer, b->seq, b->leaves[i].id,
                        "a row its batch was not committed with");
            i++;
        } else if (c > 0) {
            add_finding(v, "row_deleted", b->writer, b->seq, d + k * DIGEST_BYTES,
                        "a row its batch was committed with is gone");
            k++;
        } else {
            if (memcmp(b->leaves[i].hash, d + k * DIGEST_BYTES + 16, DIGEST_BYTES - 16) != 0)
                add_finding(v, "row_changed", b->writer, b->seq, b->leaves[i].id,
                            "a column is not what it was committed with");
            i++;
            k++;
        }
    }
    if (v->total_findings == before)
        add_finding(v, "batch_broken", b->writer, b->seq, NULL,
                    "its rows do not make its root (and its digests were changed too)");
    PQclear(r);
}

static void close_batch(batch_rec *b)
{
    uint8_t root[ACH_HASH_BYTES];
    if (b->got == (uint32_t)b->rows && !b->bad) {
        ach_root(b->leaves, b->got, root);
        if (memcmp(root, b->root, ACH_HASH_BYTES) == 0) {
            b->done = true;
            free(b->leaves);
            b->leaves = NULL;
            return;
        }
    }
    b->bad = true; /* located at the end, when all its rows are in */
}

typedef struct copy_row {
    const char *f[9];
    int len[9];
} copy_row;

/* One tuple of the binary COPY at p (n bytes): its fields; the bytes it
 * took, 0 for the trailer, -1 when incomplete or malformed. */
static long parse_tuple(const char *p, size_t n, copy_row *row)
{
    if (n < 2)
        return -1;
    int16_t nf = (int16_t)be(p, 2);
    if (nf == -1)
        return 0;
    if (nf != 9)
        return -1;
    size_t off = 2;
    for (int i = 0; i < 9; i++) {
        if (n - off < 4)
            return -1;
        int32_t l = (int32_t)be(p + off, 4);
        off += 4;
        if (l < 0) {
            row->f[i] = NULL;
            row->len[i] = 0;
            continue;
        }
        if (n - off < (size_t)l)
            return -1;
        row->f[i] = p + off;
        row->len[i] = l;
        off += (size_t)l;
    }
    return (long)off;
}

static void progress(verify *v, bool end)
{
    if (!v->tty)
        return;
    double s = (double)(now_us() - v->t0) / 1e6;
    fprintf(stderr, "\r%s: %llu rows, %.1f s, %.0f rows/s%s", PROG, (unsigned long long)v->rows, s,
            s > 0 ? (double)v->rows / s : 0.0, end ? "" : "   ");
    cmsctl_progress_drawn(stderr);
    if (end)
        cmsctl_progress_end();
}

static void add_row(verify *v, const copy_row *r)
{
    v->rows++;
    if (r->f[7] == NULL || r->f[8] == NULL || r->len[7] != 4 || r->len[8] != 8) {
        v->unchained++;
        if (!v->ranged && v->unchained == v->rows_before + 1)
            add_finding(v, "row_unchained", 0, 0, r->len[0] == 16 ? (const uint8_t *)r->f[0] : NULL,
                        "in no batch, and the log held only %llu rows before its chain began",
                        (unsigned long long)v->rows_before);
        return;
    }
    int32_t w = (int32_t)be(r->f[7], 4);
    int64_t seq = (int64_t)be(r->f[8], 8);
    batch_rec *b = find_batch(v, w, seq);
    if (b == NULL) {
        if (!v->ranged)
            add_finding(v, "row_unchained", w, seq,
                        r->len[0] == 16 ? (const uint8_t *)r->f[0] : NULL,
                        "it names a batch that has no record");
        return;
    }
    if (b->leaves == NULL && !b->done) {
        b->leaves = malloc(((size_t)b->rows + 1) * sizeof *b->leaves);
        if (b->leaves == NULL) {
            b->bad = true;
            return;
        }
    }
    if (b->done || b->got > (uint32_t)b->rows) {
        /* more rows than committed: kept for locating */
        if (b->done) {
            /* its own rows made its root (their leaves are freed): this
             * row is the stranger, and the batch needs no locating */
            add_finding(v, "row_inserted", w, seq,
                        r->len[0] == 16 ? (const uint8_t *)r->f[0] : NULL,
                        "a row more than its batch was committed with");
            return;
        }
        ach_leaf *l = realloc(b->leaves, ((size_t)b->got + 2) * sizeof *l);
        if (l == NULL)
            return;
        b->leaves = l;
    } else if (b->got == (uint32_t)b->rows) {
        ach_leaf *l = realloc(b->leaves, ((size_t)b->got + 2) * sizeof *l);
        if (l == NULL)
            return;
        b->leaves = l;
    }
    ach_leaf *leaf = &b->leaves[b->got++];
    ach_row ar = {.id = (const uint8_t *)r->f[0],
                  .event_type = r->f[1],
                  .event_type_len = (size_t)r->len[1],
                  .resource_type = r->f[2],
                  .resource_type_len = (size_t)r->len[2],
                  .resource_id = (const uint8_t *)r->f[3],
                  .actor_id = (const uint8_t *)r->f[4],
                  /* jsonb's binary form: a version byte, then its text */
                  .details = r->f[5] && r->len[5] > 0 ? r->f[5] + 1 : NULL,
                  .details_len = r->len[5] > 0 ? (size_t)r->len[5] - 1 : 0};
    bool ok = r->len[0] == 16 && r->len[3] == 16 && r->len[4] == 16 && r->len[6] == 8 && r->f[5] &&
              r->len[5] > 0 && r->f[5][0] == 1;
    if (ok) {
        ar.created_at_us = (int64_t)be(r->f[6], 8) + PG_EPOCH_US;
        ok = ach_row_hash(&ar, leaf);
    }
    if (!ok) { /* a column made NULL or of another form: no hash can match */
        memset(leaf, 0, sizeof *leaf);
        if (r->len[0] == 16)
            memcpy(leaf->id, r->f[0], 16);
    }
    if (b->got == (uint32_t)b->rows)
        close_batch(b);
}

static int read_rows(verify *v, const char *from, const char *to)
{
    char sql[1024];
    snprintf(sql, sizeof sql,
             "COPY (SELECT l.id, l.event_type, l.resource_type, l.resource_id, l.actor_id, "
             "l.details, l.created_at, l.chain_writer, l.chain_seq FROM audit_logs l%s) TO STDOUT "
             "(FORMAT binary)",
             v->ranged ? " JOIN " SQL_SPAN " s ON l.chain_writer = s.writer AND l.chain_seq "
                         "BETWEEN s.lo AND s.hi"
                       : "");
    /* COPY takes no parameters: a ranged one is a prepared-free literal */
    char ranged[2048];
    if (v->ranged) {
        char *ef = from ? PQescapeLiteral(v->db, from, strlen(from)) : NULL;
        char *et = to ? PQescapeLiteral(v->db, to, strlen(to)) : NULL;
        const char *pf = ef ? ef : "NULL", *pt = et ? et : "NULL";
        /* replace $1 and $2 */
        char *o = ranged;
        size_t left = sizeof ranged;
        for (const char *p = sql; *p && left > 1; p++) {
            if (p[0] == '$' && (p[1] == '1' || p[1] == '2')) {
                int n = snprintf(o, left, "%s", p[1] == '1' ? pf : pt);
                if (n < 0 || (size_t)n >= left)
                    break;
                o += n;
                left -= (size_t)n;
                p++;
            } else {
                *o++ = *p;
                left--;
            }
        }
        *o = '\0';
        PQfreemem(ef);
        PQfreemem(et);
    }
    PGresult *r = PQexec(v->db, v->ranged ? ranged : sql);
    if (PQresultStatus(r) != PGRES_COPY_OUT) {
        int rc = cmsctl_db_fail(PROG, r, "reading audit_logs");
        PQclear(r);
        return rc;
    }
    PQclear(r);
    char *buf = NULL, *chunk;
    size_t blen = 0, bcap = 0;
    bool header = false, ended = false;
    int n;
    uint64_t last = now_us();
    while ((n = PQgetCopyData(v->db, &chunk, 0)) > 0) {
        if (blen + (size_t)n > bcap) {
            size_t cap = bcap ? bcap * 2 : 1 << 16;
            while (cap < blen + (size_t)n)
                cap *= 2;
            char *nb = realloc(buf, cap);
            if (nb == NULL) {
                PQfreemem(chunk);
                free(buf);
                return cmsctl_fail(PROG, "out of memory reading audit_logs");
            }
            buf = nb;
            bcap = cap;
        }
        memcpy(buf + blen, chunk, (size_t)n);
        blen += (size_t)n;
        PQfreemem(chunk);
        size_t off = 0;
        if (!header) {
            if (blen < 19)
                continue;
            uint32_t ext = (uint32_t)be(buf + 15, 4);
            if (memcmp(buf, "PGCOPY\n\377\r\n\0", 11) != 0 || blen < 19 + ext) {
                free(buf);
                return cmsctl_fail(PROG, "reading audit_logs: not a binary COPY stream");
            }
            off = 19 + ext;
            header = true;
        }
        for (;;) {
            copy_row row;
            long used = parse_tuple(buf + off, blen - off, &row);
            if (used < 0)
                break;
            if (used == 0) {
                ended = true;
                off += 2;
                break;
            }
            add_row(v, &row);
            off += (size_t)used;
        }
        memmove(buf, buf + off, blen - off);
        blen -= off;
        if (v->tty && (v->rows & 0x3fff) == 0 && now_us() - last > 200000) {
            last = now_us();
            progress(v, false);
        }
    }
    free(buf);
    r = PQgetResult(v->db);
    int rc = CMSCTL_EXIT_OK;
    if (n == -2 || PQresultStatus(r) != PGRES_COMMAND_OK)
        rc = cmsctl_db_fail(PROG, r, "reading audit_logs");
    else if (!ended)
        rc = cmsctl_fail(PROG, "reading audit_logs: the COPY stream ended early");
    PQclear(r);
    while ((r = PQgetResult(v->db)) != NULL)
        PQclear(r);
    progress(v, true);
    return rc;
}

/* Batches whose rows did not all come, or did not make their root. */
static void finish_rows(verify *v)
{
    if (!v->ranged && v->unchained < v->rows_before)
        add_finding(v, "row_deleted", 0, 0, NULL,
                    "%llu rows of the log from before its chain are gone (%llu of %llu left)",
                    (unsigned long long)(v->rows_before - v->unchained),
                    (unsigned long long)v->unchained, (unsigned long long)v->rows_before);
    for (size_t i = 0; i < v->nbatches; i++) {
        batch_rec *b = &v->batches[i];
        if (b->done)
            continue;
        if (!b->bad)
            close_batch(b);
        if (b->bad)
            locate(v, b);
        free(b->leaves);
        b->leaves = NULL;
    }
}

/* ---- checkpoints ---- */

typedef struct key_rec {
    uint8_t pk[crypto_sign_PUBLICKEYBYTES];
    char b64[64];
    int64_t created, revoked, expires;
} key_rec;

static bool key_valid_at(const key_rec *k, int64_t t)
{
    return t >= k->created && (k->revoked == 0 || t < k->revoked) &&
           (k->expires == 0 || t < k->expires);
}

static int read_keys(cmsctl_verb *vb, const char *identity, key_rec **out, size_t *n)
{
    char id[CMS_UUID_STRLEN + 1];
    int rc = cmsctl_verb_identity_id(vb, identity, id);
    if (rc != CMSCTL_EXIT_OK)
        return rc;
    Cms__V1__ListCredentials req = CMS__V1__LIST_CREDENTIALS__INIT;
    req.identity_id = id;
    if ((rc = cmsctl_verb_call(vb, "list_credentials", CMSCTL_CMD_READ, &req.base,
                               &cms__v1__credential_list__descriptor)) != CMSCTL_EXIT_OK)
        return rc;
    const Cms__V1__CredentialList *cl = (const void *)vb->got;
    key_rec *keys = calloc(cl->n_credentials + 1, sizeof *keys);
    if (keys == NULL)
        return cmsctl_fail(PROG, "out of memory");
    size_t k = 0;
    for (size_t i = 0; i < cl->n_credentials; i++) {
        const Cms__V1__Credential *c = cl->credentials[i];
        size_t len;
        if (strcmp(c->type, "public_key") != 0 || c->public_key == NULL ||
            sodium_base642bin(keys[k].pk, sizeof keys[k].pk, c->public_key, strlen(c->public_key),
                              NULL, &len, NULL, sodium_base64_VARIANT_ORIGINAL) != 0 ||
            len != sizeof keys[k].pk)
            continue;
        snprintf(keys[k].b64, sizeof keys[k].b64, "%s", c->public_key);
        keys[k].created = c->created_at_us;
        keys[k].revoked = c->revoked_at_us;
        keys[k].expires = c->expires_at_us;
        k++;
    }
    *out = keys;
    *n = k;
    return CMSCTL_EXIT_OK;
}

static void check_checkpoint(verify *v, const Cms__V1__AuditCheckpoint *m, int64_t stored_us,
                             bool later, const key_rec *keys, size_t nkeys)
{
    v->checkpoints++;
    ach_checkpoint c = {.writer = (uint64_t)m->writer,
                        .seq = (uint64_t)m->seq,
                        .total_rows = (uint64_t)m->total_rows,
                        .at_us = m->at_us,
                        .key_id = m->key_id};
    memcpy(c.log_id, v->log_id, 16);
    if (m->hash.len != ACH_HASH_BYTES || m->signature.len != ACH_SIG_BYTES) {
        add_finding(v, "checkpoint_signature", m->writer, m->seq, NULL,
                    "a checkpoint of the wrong form");
        return;
    }
    memcpy(c.hash, m->hash.data, ACH_HASH_BYTES);
    const key_rec *key = NULL;
    for (size_t i = 0; i < nkeys; i++)
        if (strcmp(keys[i].b64, m->key_id) == 0)
            key = &keys[i];
    char at[CMSCTL_CMD_TIME_MAX];
    cmsctl_cmd_time_format(m->at_us, false, at);
    if (key == NULL) {
        add_finding(v, "checkpoint_key", m->writer, m->seq, NULL,
                    "signed (%s) with a key that is no public_key credential of the identity", at);
        return;
    }
    if (!ach_checkpoint_verify(&c, key->pk, m->signature.data)) {
        add_finding(v, "checkpoint_signature", m->writer, m->seq, NULL,
                    "the checkpoint of %s does not verify with its key", at);
        return;
    }
    if (!key_valid_at(key, m->at_us) || !key_valid_at(key, stored_us)) {
        add_finding(v, "checkpoint_key", m->writer, m->seq, NULL,
                    "signed (%s) with a key not valid then (revoked, expired or not yet issued)",
                    at);
        return;
    }
    writer_rec *w = find_writer(v, m->writer);
    if (w == NULL && later)
        return; /* registered after the snapshot, maybe */
    if (w == NULL) {
        add_finding(v, "writer_missing", m->writer, m->seq, NULL,
                    "a signed checkpoint names a writer audit_writers does not hold");
        return;
    }
    w->checkpointed = true;
    batch_rec *b = find_batch(v, (int32_t)m->writer, m->seq);
    if (b == NULL) {
        if (v->ranged || later)
            return; /* later: committed after the snapshot, maybe */
        int64_t last = w->last >= 0 ? v->batches[w->last].seq : 0;
        if (last < m->seq)
            add_finding(v, "truncated", m->writer, last + 1, NULL,
                        "the checkpoint of %s names batch %lld, the database ends at %lld", at,
                        (long long)m->seq, (long long)last);
        /* otherwise the batch is missing: a gap, found by check_chains */
        return;
    }
    if (memcmp(b->hash, c.hash, ACH_HASH_BYTES) != 0)
        add_finding(v, "checkpoint_mismatch", m->writer, m->seq, NULL,
                    "the batch is not the one the checkpoint of %s signed", at);
    else if (!v->ranged && b->cum_rows >= 0 && b->cum_rows != m->total_rows)
        add_finding(v, "checkpoint_mismatch", m->writer, m->seq, NULL,
                    "the writer's batches hold %lld rows, the checkpoint of %s %lld",
                    (long long)b->cum_rows, at, (long long)m->total_rows);
}

/* Before the snapshot: how far the stream goes. A checkpoint is published
 * only after its batch has committed, so each one up to there names a
 * batch the snapshot holds. */
static int read_horizon(verify *v, const cms_config *cfg, int64_t timeout_ms)
{
    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    jsStreamInfo *si = NULL;
    int rc = cmsctl_nats_connect(PROG, cfg, timeout_ms, &nc);
    if (rc != CMSCTL_EXIT_OK)
        return rc;
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = timeout_ms;
    jsErrCode jerr = 0;
    natsStatus st = natsConnection_JetStream(&js, nc, &jo);
    if (st == NATS_OK)
        st = js_GetStreamInfo(&si, js, CMS_BUS_CHECKPOINT_STREAM, NULL, &jerr);
    if (st == NATS_OK)
        v->cp_horizon = si->State.LastSeq;
    else
        rc = cmsctl_nats_fail(PROG,
                              "reading the stream " CMS_BUS_CHECKPOINT_STREAM
                              " (missing? cms-migrate provision makes it)",
                              st);
    jsStreamInfo_Destroy(si);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    return rc;
}

/* This log's checkpoints, oldest first, through an ordered consumer
 * filtered on its subjects (the stream holds every log's): as fast as the
 * server sends them, and nothing of other logs. */
static int read_checkpoints(verify *v, const cms_config *cfg, int64_t timeout_ms,
                            const key_rec *keys, size_t nkeys)
{
    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    jsStreamInfo *si = NULL;
    natsSubscription *sub = NULL;
    int rc = cmsctl_nats_connect(PROG, cfg, timeout_ms, &nc);
    if (rc != CMSCTL_EXIT_OK)
        return rc;
    char filter[128];
    snprintf(filter, sizeof filter, CMS_BUS_CHECKPOINT_PREFIX "%s.>", v->log_text);
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = timeout_ms;
    jo.Stream.Info.SubjectsFilter = filter;
    jsErrCode jerr = 0;
    natsStatus st = natsConnection_JetStream(&js, nc, &jo);
    if (st == NATS_OK)
        st = js_GetStreamInfo(&si, js, CMS_BUS_CHECKPOINT_STREAM, &jo, &jerr);
    if (st != NATS_OK) {
        rc = cmsctl_nats_fail(PROG,
                              "reading the stream " CMS_BUS_CHECKPOINT_STREAM
                              " (missing? cms-migrate provision makes it)",
                              st);
        goto out;
    }
    uint64_t count = 0; /* this log's checkpoints */
    for (int i = 0; si->State.Subjects && i < si->State.Subjects->Count; i++)
        count += si->State.Subjects->List[i].Msgs;
    rc = CMSCTL_EXIT_OK;
    if (count == 0)
        goto out; /* none: an ordered consumer would only wait */
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Stream = CMS_BUS_CHECKPOINT_STREAM;
    so.Ordered = true;
    so.Config.DeliverPolicy = js_DeliverAll;
    if (v->from_us > 0) { /* those of earlier batches say nothing of the range */
        so.Config.DeliverPolicy = js_DeliverByStartTime;
        so.Config.OptStartTime = v->from_us * 1000;
    }
    if ((st = js_SubscribeSync(&sub, js, filter, &jo, &so, &jerr)) != NATS_OK) {
        rc = cmsctl_nats_fail(PROG, "reading the checkpoints of " CMS_BUS_CHECKPOINT_STREAM, st);
        goto out;
    }
    /* from a start time, maybe none: the consumer's own count says */
    jsConsumerInfo *ci = NULL;
    if ((st = natsSubscription_GetConsumerInfo(&ci, sub, &jo, &jerr)) != NATS_OK) {
        rc = cmsctl_nats_fail(PROG, "reading the checkpoints of " CMS_BUS_CHECKPOINT_STREAM, st);
        goto out;
    }
    bool none = ci->Delivered.Consumer + ci->NumPending == 0;
    jsConsumerInfo_Destroy(ci);
    if (none)
        goto out;
    for (;;) {
        natsMsg *m = NULL;
        jsMsgMetaData *md = NULL;
        if ((st = natsSubscription_NextMsg(&m, sub, timeout_ms)) != NATS_OK ||
            (st = natsMsg_GetMetaData(&md, m)) != NATS_OK) {
            natsMsg_Destroy(m);
            rc = cmsctl_nats_fail(PROG, "reading a checkpoint", st);
            goto out;
        }
        uint64_t seq = md->Sequence.Stream;
        Cms__V1__AuditCheckpoint *cp = cms__v1__audit_checkpoint__unpack(
            NULL, (size_t)natsMsg_GetDataLength(m), (const uint8_t *)natsMsg_GetData(m));
        if (cp == NULL)
            add_finding(v, "checkpoint_signature", 0, 0, NULL,
                        "message %llu of the stream is no checkpoint", (unsigned long long)seq);
        else
            check_checkpoint(v, cp, md->Timestamp / 1000, seq > v->cp_horizon, keys, nkeys);
        cms__v1__audit_checkpoint__free_unpacked(cp, NULL);
        bool last = md->NumPending == 0; /* the newest of this log's, for now */
        jsMsgMetaData_Destroy(md);
        natsMsg_Destroy(m);
        if (last)
            break;
    }
out:
    natsSubscription_Destroy(sub);
    jsStreamInfo_Destroy(si);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    return rc;
}

/* RFC 3339, or a date (YYYY-MM-DD) meaning its midnight UTC. */
static bool parse_time(const char *text, int64_t *us)
{
    char day[32];
    if (strlen(text) == 10 && text[4] == '-' && text[7] == '-') {
        snprintf(day, sizeof day, "%sT00:00:00Z", text);
        text = day;
    }
    return cmsctl_cmd_time_parse(text, us);
}

/* ---- output ---- */

static int report(const verify *v, cmsctl_out_format fmt, double secs)
{
    double rate = secs > 0 ? (double)v->rows / secs : 0;
    if (fmt == CMSCTL_OUT_TABLE) {
        for (size_t i = 0; i < v->nfindings; i++) {
            const finding *f = &v->findings[i];
            printf("%s: writer %lld, batch %lld%s%s: %s\n", f->kind, (long long)f->writer,
                   (long long)f->seq, f->row[0] ? ", row " : "", f->row, f->what);
        }
        if (v->total_findings > v->nfindings)
            printf("... and %zu findings more\n", v->total_findings - v->nfindings);
        printf("%s: %llu rows in %zu batches of %zu writers, %llu checkpoints, in %.2f s "
               "(%.0f rows/s): %zu finding%s\n",
               v->total_findings ? "FOUND" : "verified", (unsigned long long)v->rows, v->nbatches,
               v->nwriters, (unsigned long long)v->checkpoints, secs, rate, v->total_findings,
               v->total_findings == 1 ? "" : "s");
    } else {
        json_t *o = json_pack("{s:b, s:I, s:I, s:I, s:I, s:I, s:f, s:f, s:I, s:[]}", "ok",
                              v->total_findings == 0, "rows", (json_int_t)v->rows, "batches",
                              (json_int_t)v->nbatches, "writers", (json_int_t)v->nwriters,
                              "checkpoints", (json_int_t)v->checkpoints, "unchained",
                              (json_int_t)v->unchained, "seconds", secs, "rows_per_second", rate,
                              "total_findings", (json_int_t)v->total_findings, "findings");
        json_t *arr = o ? json_object_get(o, "findings") : NULL;
        for (size_t i = 0; arr && i < v->nfindings; i++) {
            const finding *f = &v->findings[i];
            json_array_append_new(arr,
                                  json_pack("{s:s, s:I, s:I, s:s?, s:s}", "kind", f->kind, "writer",
                                            (json_int_t)f->writer, "seq", (json_int_t)f->seq, "row",
                                            f->row[0] ? f->row : NULL, "what", f->what));
        }
        if (o == NULL || json_dumpf(o, stdout, fmt == CMSCTL_OUT_JSON ? JSON_INDENT(2) : 0) != 0) {
            json_decref(o);
            return cmsctl_fail(PROG, "writing the report failed");
        }
        putchar('\n');
        json_decref(o);
    }
    return v->total_findings ? CMSCTL_EXIT_FAILED : CMSCTL_EXIT_OK;
}

int cmsctl_audit_verify_main(int argc, char **argv)
{
    cmsctl_verb vb;
    int status = cmsctl_verb_begin(&vb, "identity", PROG, options, CMSCTL_NOPTS(options), argc,
                                   argv, "prove the audit log untouched", usage_tail, NULL);
    verify v = {0};
    key_rec *keys = NULL;
    size_t nkeys = 0;
    if (status != CMSCTL_EXIT_OK)
        return cmsctl_verb_end(&vb, status);
    const char *from = cms_config_str(vb.cfg, "from"), *to = cms_config_str(vb.cfg, "to");
    char from_ts[CMSCTL_CMD_TIME_MAX + 8] = "", to_ts[CMSCTL_CMD_TIME_MAX + 8] = "";
    int64_t us;
    if (from && !parse_time(from, &us)) {
        status = cmsctl_usage(PROG, "--from: not a time: \"%s\" (e.g. 2024-03-20T15:00:00Z)", from);
        goto out;
    }
    if (from) {
        cmsctl_cmd_time_format(us, true, from_ts);
        v.from_us = us;
    }
    if (to && !parse_time(to, &us)) {
        status = cmsctl_usage(PROG, "--to: not a time: \"%s\" (e.g. 2024-03-21)", to);
        goto out;
    }
    if (to)
        cmsctl_cmd_time_format(us, true, to_ts);
    if (sodium_init() < 0) {
        status = cmsctl_fail(PROG, "libsodium did not initialise");
        goto out;
    }
    int64_t timeout_ms = cms_config_duration_ms(vb.cfg, "timeout");
    v.ranged = from != NULL || to != NULL;
    v.tty = isatty(STDERR_FILENO) == 1;
    v.findings = calloc(FINDINGS_KEPT, sizeof *v.findings);
    if (v.findings == NULL) {
        status = cmsctl_fail(PROG, "out of memory");
        goto out;
    }
    v.t0 = now_us();
    bool skip_cp = cms_config_bool(vb.cfg, "skip-checkpoints");
    /* the keys first: a refused API key is a quick answer */
    if (!skip_cp && ((status = cmsctl_verb_open(&vb)) != CMSCTL_EXIT_OK ||
                     (status = read_keys(&vb, cms_config_str(vb.cfg, "identity"), &keys, &nkeys)) !=
                         CMSCTL_EXIT_OK))
        goto out;
    if ((status = cmsctl_db_connect(PROG, cms_config_str(vb.cfg, "database-url"), timeout_ms,
                                    &v.db)) != CMSCTL_EXIT_OK)
        goto out;
    if (!skip_cp && (status = read_horizon(&v, vb.cfg, timeout_ms)) != CMSCTL_EXIT_OK)
        goto out;
    /* one snapshot for all of it: rows committed meanwhile are not half seen */
    PGresult *r = PQexec(v.db, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; "
                               "SET LOCAL statement_timeout = 0");
    PQclear(r);
    if ((status = read_meta(&v, from ? from_ts : NULL, to ? to_ts : NULL)) != CMSCTL_EXIT_OK)
        goto out;
    check_chains(&v);
    if ((status = read_rows(&v, from ? from_ts : NULL, to ? to_ts : NULL)) != CMSCTL_EXIT_OK)
        goto out;
    finish_rows(&v);
    if (skip_cp)
        fprintf(stderr,
                "%s: --skip-checkpoints: no checkpoint read, a truncated tail goes unseen\n", PROG);
    else if ((status = read_checkpoints(&v, vb.cfg, timeout_ms, keys, nkeys)) != CMSCTL_EXIT_OK)
        goto out;
    status = report(&v, vb.fmt, (double)(now_us() - v.t0) / 1e6);
out:
    if (v.db)
        PQfinish(v.db);
    for (size_t i = 0; i < v.nbatches; i++)
        free(v.batches[i].leaves);
    free(v.batches);
    free(v.slots);
    free(v.writers);
    free(v.findings);
    free(keys);
    return cmsctl_verb_end(&vb, status);
}
