-- What the runtime needs beyond SCHEMA.md; none of 0001's objects change.

-- Events written in the same transaction as the change they describe; each
-- service's relay publishes its own rows (by source) in seq order and
-- deletes them once JetStream has acknowledged them.
CREATE TABLE outbox (
    seq        BIGSERIAL PRIMARY KEY,
    source     TEXT NOT NULL,
    event_id   UUID NOT NULL UNIQUE,
    subject    TEXT NOT NULL,
    payload    BYTEA NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX idx_outbox_source_seq ON outbox(source, seq);

-- Idempotent consumers: one row per (consumer, event) written with the
-- event's effects, so a redelivered event is recognised and only acked.
CREATE TABLE processed_events (
    consumer     TEXT NOT NULL,
    event_id     UUID NOT NULL,
    processed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);

-- request_id idempotency of commands: the first reply, returned again for a
-- repeated request_id; old rows are pruned by created_at.
CREATE TABLE command_replies (
    service    TEXT NOT NULL,
    request_id TEXT NOT NULL,
    reply      BYTEA NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (service, request_id)
);
CREATE INDEX idx_command_replies_created ON command_replies(created_at);

-- The machine identity that system actions (expiry, budget stops) are
-- attributed to: audit_logs.actor_id must reference some identity.
INSERT INTO identities (id, name, type, status, metadata)
VALUES ('00000000-0000-7000-8000-000000000001', 'system', 'machine', 'active', '{"roles": ["system"]}');
