DROP FUNCTION cms_lease_check(TEXT, UUID);
CREATE TABLE outbox_leases (
    source     TEXT PRIMARY KEY,
    holder     UUID NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
INSERT INTO outbox_leases (source, holder, expires_at)
SELECT substr(name, length('outbox:') + 1), holder, expires_at FROM leases WHERE name LIKE 'outbox:%';
DROP TABLE leases;
