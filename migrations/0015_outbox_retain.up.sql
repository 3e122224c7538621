-- Published outbox rows are kept for a while (the relay's outbox-retain
-- option) with the stream and sequence the stream acknowledged them at, so
-- that a relay finding the stream behind what it acknowledged (a JetStream
-- store rolled back by a host crash) publishes the lost rows again. A row
-- waits to be published while published_at is NULL.
ALTER TABLE outbox
    ADD COLUMN published_at TIMESTAMPTZ,
    ADD COLUMN stream       TEXT,
    ADD COLUMN stream_seq   BIGINT,
    ADD CONSTRAINT outbox_ack_whole CHECK ((published_at IS NULL) = (stream_seq IS NULL)
                                           AND (stream IS NULL OR stream_seq IS NOT NULL));

-- the relay's read (rows waiting, in order) and the pruning of kept rows
DROP INDEX idx_outbox_source_seq;
CREATE INDEX idx_outbox_pending ON outbox(source, seq) WHERE published_at IS NULL;
CREATE INDEX idx_outbox_published ON outbox(source, published_at) WHERE published_at IS NOT NULL;

-- the relays mark what they published, and unmark what a stream lost
GRANT UPDATE (published_at, stream, stream_seq) ON outbox TO cms_identity, cms_contracts, cms_training;
