-- The hash chain of the audit log (services/audit/chain.h has the bytes).
--
-- Each start of a cms-audit process is a writer (audit_writers), so two
-- replicas, or a process and its restart, never share a chain. A writer
-- commits each batch of rows together with its record in audit_batches:
-- its sequence number, its row count, the root hash over its rows, the
-- hash of the writer's batch before it and its own hash over all of that.
-- Each row names its batch (chain_writer, chain_seq); the seed's columns
-- stay as they are. A batch commits only after its predecessor has, and
-- only on top of it: cms_audit_chain_link moves the writer's head from the
-- previous batch to this one or fails the whole transaction.
--
-- audit_checkpoints keeps the signed heads the writers also publish to the
-- JetStream stream CMS_AUDIT_CHECKPOINTS: verify trusts the stream's copy,
-- this one only shows what was signed when.
--
-- Rows stored before this migration belong to no batch: audit_chain_start
-- says how many there were, and verify counts them, nothing more.
CREATE TABLE audit_chain_start (
    -- names this log in the checkpoints' subjects and signatures
    log_id      UUID NOT NULL DEFAULT gen_random_uuid(),
    started_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    rows_before BIGINT NOT NULL
);
INSERT INTO audit_chain_start (rows_before) SELECT count(*) FROM audit_logs;

CREATE TABLE audit_writers (
    id         SERIAL PRIMARY KEY,
    name       TEXT NOT NULL,                -- the service's instance name
    host       TEXT NOT NULL,
    pid        INTEGER NOT NULL,
    key_id     TEXT,                         -- the key its checkpoints name; NULL: none
    started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    head_seq   BIGINT NOT NULL DEFAULT 0,    -- its last committed batch (0: none yet)
    head_hash  BYTEA NOT NULL DEFAULT '\x0000000000000000000000000000000000000000000000000000000000000000',
    rows       BIGINT NOT NULL DEFAULT 0     -- rows in its batches
);

CREATE TABLE audit_batches (
    writer     INTEGER NOT NULL REFERENCES audit_writers(id),
    seq        BIGINT NOT NULL CHECK (seq > 0),
    rows       INTEGER NOT NULL CHECK (rows > 0),
    root       BYTEA NOT NULL,
    prev       BYTEA NOT NULL,
    hash       BYTEA NOT NULL,
    written_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- per row, in root order: its 16-byte id and the first 8 bytes of its
    -- hash. Not part of any hash: it only tells verify which row of a
    -- batch whose root does not match was changed, removed or added.
    digests    BYTEA NOT NULL,
    PRIMARY KEY (writer, seq)
);
ALTER TABLE audit_batches ALTER COLUMN digests SET STORAGE EXTERNAL;

CREATE TABLE audit_checkpoints (
    writer     INTEGER NOT NULL REFERENCES audit_writers(id),
    seq        BIGINT NOT NULL,
    hash       BYTEA NOT NULL,
    total_rows BIGINT NOT NULL,
    at         TIMESTAMPTZ NOT NULL,
    key_id     TEXT NOT NULL,
    signature  BYTEA NOT NULL,
    PRIMARY KEY (writer, seq)
);

ALTER TABLE audit_logs ADD COLUMN chain_writer INTEGER, ADD COLUMN chain_seq BIGINT;

-- The first statement of a batch's transaction: holds (writer, seq) until
-- it commits or rolls back, so that the next batch can wait for it.
CREATE FUNCTION cms_audit_chain_begin(w INTEGER, s BIGINT) RETURNS void
LANGUAGE sql AS $$ SELECT pg_advisory_xact_lock(w, (s % 2147483647)::int) $$;

-- The last: waits for the batch before (its transaction's lock), then moves
-- the head from it to this one; SQLSTATE CA001 when the head is not that
-- batch (it failed, or never ran), which rolls this batch back too.
CREATE FUNCTION cms_audit_chain_link(w INTEGER, s BIGINT, n INTEGER, r BYTEA, p BYTEA, h BYTEA,
                                     d BYTEA) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF s > 1 THEN
        PERFORM pg_advisory_xact_lock(w, ((s - 1) % 2147483647)::int);
    END IF;
    UPDATE audit_writers SET head_seq = s, head_hash = h, rows = rows + n
        WHERE id = w AND head_seq = s - 1 AND head_hash = p;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'audit chain: writer % has no batch % to follow', w, s - 1
            USING ERRCODE = 'CA001';
    END IF;
    -- the time of the link, after the wait for the batch before: a writer's
    -- batches are written in the order of their numbers
    INSERT INTO audit_batches (writer, seq, rows, root, prev, hash, digests, written_at)
        VALUES (w, s, n, r, p, h, d, clock_timestamp());
END $$;

REVOKE ALL ON FUNCTION cms_audit_chain_begin(INTEGER, BIGINT) FROM PUBLIC;
REVOKE ALL ON FUNCTION cms_audit_chain_link(INTEGER, BIGINT, INTEGER, BYTEA, BYTEA, BYTEA, BYTEA)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION cms_audit_chain_begin(INTEGER, BIGINT) TO cms_audit;
GRANT EXECUTE ON FUNCTION cms_audit_chain_link(INTEGER, BIGINT, INTEGER, BYTEA, BYTEA, BYTEA, BYTEA)
    TO cms_audit;
GRANT SELECT, INSERT ON audit_writers, audit_batches, audit_checkpoints TO cms_audit;
GRANT SELECT ON audit_chain_start TO cms_audit;
GRANT UPDATE (head_seq, head_hash, rows) ON audit_writers TO cms_audit;
GRANT USAGE ON SEQUENCE audit_writers_id_seq TO cms_audit;
GRANT SELECT ON audit_chain_start, audit_writers, audit_batches, audit_checkpoints TO cms_auditor;
