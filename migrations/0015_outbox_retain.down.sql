REVOKE UPDATE (published_at, stream, stream_seq) ON outbox FROM cms_identity, cms_contracts, cms_training;
DELETE FROM outbox WHERE published_at IS NOT NULL;
DROP INDEX idx_outbox_published;
DROP INDEX idx_outbox_pending;
CREATE INDEX idx_outbox_source_seq ON outbox(source, seq);
ALTER TABLE outbox
    DROP CONSTRAINT outbox_ack_whole,
    DROP COLUMN stream_seq,
    DROP COLUMN stream,
    DROP COLUMN published_at;
