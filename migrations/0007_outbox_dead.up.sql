-- Outbox rows that can never be published (larger than the server takes,
-- an invalid subject), moved aside with the reason in the transaction that
-- deletes them from outbox, so that the rows behind them go on. Nothing is
-- dropped: an operator can inspect, fix and re-insert them.
CREATE TABLE outbox_dead (
    seq        BIGINT PRIMARY KEY,
    source     TEXT NOT NULL,
    event_id   UUID NOT NULL,
    subject    TEXT NOT NULL,
    payload    BYTEA NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    reason     TEXT NOT NULL,
    dead_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX idx_outbox_dead_source ON outbox_dead(source, seq);
