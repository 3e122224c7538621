-- One holder at a time of a named role among the replicas of a service:
-- the outbox relay of a source ("outbox:<source>"), the event consumer of a
-- durable ("consumer:<durable>"). The holder takes and renews its lease,
-- releases it on a graceful stop, and a lease that expired (its holder
-- died or froze) is taken over. Replaces outbox_leases.
CREATE TABLE leases (
    name       TEXT PRIMARY KEY,
    holder     UUID NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
INSERT INTO leases (name, holder, expires_at)
SELECT 'outbox:' || source, holder, expires_at FROM outbox_leases;
DROP TABLE outbox_leases;

-- Fails the transaction (SQLSTATE CL001) unless lease_holder holds the live
-- lease lease_name, and keeps the lease from changing hands until the
-- transaction ends (a shared row lock): what a holder writes under its
-- lease commits only while it holds it, however late.
CREATE FUNCTION cms_lease_check(lease_name TEXT, lease_holder UUID) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM leases
    WHERE name = lease_name AND holder = lease_holder AND expires_at > now()
    FOR SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'the lease % is not held by %', lease_name, lease_holder
            USING ERRCODE = 'CL001';
    END IF;
END
$$;
