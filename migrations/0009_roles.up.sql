-- Least privilege: the migrator (the role running cms-migrate) owns the
-- schema; each service connects as a login role that is a member of its
-- service's group role, which has the rights that service's code needs on
-- its own tables and, through forced row-level security, only on its own
-- rows of the runtime tables. No service role owns anything.
--
-- The group roles are NOLOGIN and cluster-wide. They are created here only
-- when missing, so a migrator without CREATEROLE works once the operator
-- has created them (deploy/local/up and tests/lib/ctl do). Login roles are
-- created by whoever deploys: a login role IN ROLE cms_<service>.
--
--   cms_identity   identities, credentials; the runtime tables
--   cms_audit      INSERT and SELECT on audit_logs, SELECT (id) on identities
--   cms_contracts  contracts; the runtime tables (its service is not built yet)
--   cms_training   training_jobs; the runtime tables (not built yet)
--   cms_auditor    read-only: SELECT on audit_logs (cmsctl audit)
DO $$
DECLARE
    r TEXT;
BEGIN
    FOREACH r IN ARRAY ARRAY['cms_identity', 'cms_audit', 'cms_contracts', 'cms_training',
                             'cms_auditor'] LOOP
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('CREATE ROLE %I NOLOGIN', r);
        END IF;
    END LOOP;
END
$$;

-- The service a session acts for: <service> of the one group role
-- cms_<service> (a NOLOGIN role, cms_auditor aside) its role is a member
-- of; NULL when none or several. Membership is what decides, so a new login
-- role IN ROLE cms_identity is identity at once. Policies call it as
-- (SELECT cms_current_service()): an InitPlan, evaluated once per
-- statement, not per row.
CREATE FUNCTION cms_current_service() RETURNS TEXT
LANGUAGE sql STABLE SECURITY INVOKER PARALLEL SAFE
SET search_path = pg_catalog
AS $$
    SELECT CASE WHEN count(*) = 1 THEN substr(min(rolname), length('cms_') + 1) END
    FROM pg_roles
    WHERE rolname LIKE 'cms\_%' AND rolname <> 'cms_auditor' AND NOT rolcanlogin
      AND pg_has_role(oid, 'MEMBER')
$$;

-- Whether the session has the privileges of the owner of tbl: the
-- migrator, who writes for cms-identity when it bootstraps the first admin
-- (outbox rows of source identity) and may repair any row. The owner could
-- disable row-level security anyway: this grants nothing new.
CREATE FUNCTION cms_is_owner(tbl REGCLASS) RETURNS BOOLEAN
LANGUAGE sql STABLE SECURITY INVOKER PARALLEL SAFE
SET search_path = pg_catalog
AS $$
    SELECT pg_has_role(relowner, 'USAGE') FROM pg_class WHERE oid = tbl
$$;

-- The service a consumer's name belongs to: the name is the service's
-- name, or "<service>-<more>" (service names have no '-').
CREATE FUNCTION cms_consumer_service(consumer TEXT) RETURNS TEXT
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT pg_catalog.split_part(consumer, '-', 1) $$;

-- The service a lease belongs to: "outbox:<service>" or
-- "consumer:<consumer>" (see cms_consumer_service); NULL for other names.
CREATE FUNCTION cms_lease_service(lease TEXT) RETURNS TEXT
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE
        WHEN pg_catalog.starts_with(lease, 'outbox:') THEN pg_catalog.substr(lease, 8)
        WHEN pg_catalog.starts_with(lease, 'consumer:')
            THEN public.cms_consumer_service(pg_catalog.substr(lease, 10))
    END
$$;

-- Nothing for PUBLIC: not the schema, not the functions, not the database
-- (a role outside this system cannot even connect), nor functions made
-- later by the migrator.
REVOKE ALL ON SCHEMA public FROM PUBLIC;
REVOKE ALL ON FUNCTION cms_lease_check(TEXT, UUID) FROM PUBLIC;
REVOKE ALL ON FUNCTION cms_current_service() FROM PUBLIC;
REVOKE ALL ON FUNCTION cms_is_owner(REGCLASS) FROM PUBLIC;
REVOKE ALL ON FUNCTION cms_consumer_service(TEXT) FROM PUBLIC;
REVOKE ALL ON FUNCTION cms_lease_service(TEXT) FROM PUBLIC;
ALTER DEFAULT PRIVILEGES REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;
DO $$
BEGIN
    EXECUTE format('REVOKE ALL ON DATABASE %I FROM PUBLIC', current_database());
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO cms_identity, cms_audit, cms_contracts, '
                   'cms_training, cms_auditor', current_database());
END
$$;

-- What every role reads: the schema, and its version (/readyz).
GRANT USAGE ON SCHEMA public TO cms_identity, cms_audit, cms_contracts, cms_training, cms_auditor;
GRANT SELECT ON schema_migrations TO cms_identity, cms_audit, cms_contracts, cms_training;
-- the policies' functions run as the querying role
GRANT EXECUTE ON FUNCTION cms_current_service(), cms_is_owner(REGCLASS),
    cms_consumer_service(TEXT), cms_lease_service(TEXT)
    TO cms_identity, cms_audit, cms_contracts, cms_training;

-- Own tables.
GRANT SELECT, INSERT, UPDATE ON identities, credentials TO cms_identity;
GRANT SELECT, INSERT, UPDATE ON contracts TO cms_contracts;
GRANT SELECT, INSERT, UPDATE ON training_jobs TO cms_training;
GRANT SELECT, INSERT ON audit_logs TO cms_audit;
GRANT SELECT (id) ON identities TO cms_audit;
GRANT SELECT ON audit_logs TO cms_auditor;

-- The runtime tables (common/), for the services that run on them:
-- outbox and outbox_dead (the relay), command_replies (commands), leases
-- (the relay's and consumers' lease), processed_events (consumers).
GRANT SELECT, INSERT, DELETE ON outbox TO cms_identity, cms_contracts, cms_training;
GRANT USAGE ON SEQUENCE outbox_seq_seq TO cms_identity, cms_contracts, cms_training;
GRANT INSERT ON outbox_dead TO cms_identity, cms_contracts, cms_training;
GRANT SELECT, INSERT, UPDATE, DELETE ON command_replies, leases
    TO cms_identity, cms_contracts, cms_training;
GRANT EXECUTE ON FUNCTION cms_lease_check(TEXT, UUID) TO cms_identity, cms_contracts, cms_training;
GRANT SELECT, INSERT, DELETE ON processed_events TO cms_contracts, cms_training;

-- Each service's own rows only: own_rows, a row is the session's service's
-- by its owner column. FORCE puts the table's owner under the policies too,
-- where its own (owner) lets it at every row. The application's own
-- conditions still choose the index (= is leakproof); own_rows adds one
-- comparison per row with a value computed once per statement.
DO $$
DECLARE
    t TEXT;
BEGIN
    FOREACH t IN ARRAY ARRAY['outbox', 'outbox_dead', 'command_replies', 'processed_events',
                             'leases'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY owner ON %I USING ((SELECT cms_is_owner(%L)))', t, t);
    END LOOP;
END
$$;
CREATE POLICY own_rows ON outbox USING (source = (SELECT cms_current_service()));
CREATE POLICY own_rows ON outbox_dead USING (source = (SELECT cms_current_service()));
CREATE POLICY own_rows ON command_replies USING (service = (SELECT cms_current_service()));
CREATE POLICY own_rows ON processed_events
    USING (cms_consumer_service(consumer) = (SELECT cms_current_service()));
CREATE POLICY own_rows ON leases USING (cms_lease_service(name) = (SELECT cms_current_service()));

-- audit_logs is append-only for everyone but its owner, whatever is
-- granted by mistake later: UPDATE, DELETE and TRUNCATE raise. No trigger
-- on INSERT, so cms-audit's batch insert costs the same.
CREATE FUNCTION cms_audit_logs_append_only() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
    IF NOT pg_has_role((SELECT relowner FROM pg_class WHERE oid = TG_RELID), 'USAGE') THEN
        RAISE EXCEPTION 'audit_logs is append-only: % refused', TG_OP
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF TG_OP = 'UPDATE' THEN
        RETURN NEW;
    END IF;
    RETURN OLD;
END
$$;
REVOKE ALL ON FUNCTION cms_audit_logs_append_only() FROM PUBLIC;
CREATE TRIGGER append_only BEFORE UPDATE OR DELETE ON audit_logs
    FOR EACH ROW EXECUTE FUNCTION cms_audit_logs_append_only();
CREATE TRIGGER append_only_truncate BEFORE TRUNCATE ON audit_logs
    FOR EACH STATEMENT EXECUTE FUNCTION cms_audit_logs_append_only();
