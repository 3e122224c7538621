-- Reverts 0009_roles: the policies, the trigger, the grants and the
-- functions go, PUBLIC gets back what PostgreSQL gives it by default. The
-- group roles stay: they belong to the cluster, and other databases of it
-- may still grant to them (drop them by hand once none does).
DROP TRIGGER append_only_truncate ON audit_logs;
DROP TRIGGER append_only ON audit_logs;
DROP FUNCTION cms_audit_logs_append_only();

DO $$
DECLARE
    t TEXT;
BEGIN
    FOREACH t IN ARRAY ARRAY['leases', 'processed_events', 'command_replies', 'outbox_dead',
                             'outbox'] LOOP
        EXECUTE format('DROP POLICY own_rows ON %I', t);
        EXECUTE format('DROP POLICY owner ON %I', t);
        EXECUTE format('ALTER TABLE %I NO FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I DISABLE ROW LEVEL SECURITY', t);
    END LOOP;
END
$$;

REVOKE ALL ON identities, credentials, contracts, training_jobs, audit_logs, outbox, outbox_dead,
    command_replies, leases, processed_events, schema_migrations
    FROM cms_identity, cms_audit, cms_contracts, cms_training, cms_auditor;
REVOKE ALL ON SEQUENCE outbox_seq_seq
    FROM cms_identity, cms_audit, cms_contracts, cms_training, cms_auditor;
REVOKE ALL ON SCHEMA public FROM cms_identity, cms_audit, cms_contracts, cms_training, cms_auditor;
DO $$
BEGIN
    EXECUTE format('REVOKE ALL ON DATABASE %I FROM cms_identity, cms_audit, cms_contracts, '
                   'cms_training, cms_auditor', current_database());
    EXECUTE format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO PUBLIC', current_database());
END
$$;
ALTER DEFAULT PRIVILEGES GRANT EXECUTE ON FUNCTIONS TO PUBLIC;
GRANT USAGE ON SCHEMA public TO PUBLIC;
GRANT EXECUTE ON FUNCTION cms_lease_check(TEXT, UUID) TO PUBLIC;
REVOKE ALL ON FUNCTION cms_lease_check(TEXT, UUID)
    FROM cms_identity, cms_audit, cms_contracts, cms_training, cms_auditor;

DROP FUNCTION cms_lease_service(TEXT);
DROP FUNCTION cms_consumer_service(TEXT);
DROP FUNCTION cms_is_owner(REGCLASS);
DROP FUNCTION cms_current_service();
