-- One outbox relay per source at a time: with several replicas of a
-- service, only the lease holder reads and publishes its outbox rows, so
-- they reach the stream in commit order. A lease held by a process that
-- died expires and is taken over.
CREATE TABLE outbox_leases (
    source     TEXT PRIMARY KEY,
    holder     UUID NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
