-- The two functions every row-level security policy of the runtime tables
-- calls once per statement (0009_roles), made cheap: PL/pgSQL, which plans
-- its query once per session, with every name qualified instead of a SET
-- search_path clause, which sent each call through the function manager's
-- GUC save and restore and planned the SQL body again on every statement.
-- What they return is unchanged.
CREATE OR REPLACE FUNCTION cms_current_service() RETURNS TEXT
LANGUAGE plpgsql STABLE SECURITY INVOKER PARALLEL SAFE
AS $$
BEGIN
    RETURN (SELECT CASE WHEN pg_catalog.count(*) OPERATOR(pg_catalog.=) 1
                        THEN pg_catalog.substr(pg_catalog.min(r.rolname),
                                               pg_catalog.length('cms_') OPERATOR(pg_catalog.+) 1)
                   END
            FROM pg_catalog.pg_roles r
            WHERE r.rolname OPERATOR(pg_catalog.~~) 'cms\_%'
              AND r.rolname OPERATOR(pg_catalog.<>) 'cms_auditor' AND NOT r.rolcanlogin
              AND pg_catalog.pg_has_role(r.oid, 'MEMBER'));
END
$$;

CREATE OR REPLACE FUNCTION cms_is_owner(tbl REGCLASS) RETURNS BOOLEAN
LANGUAGE plpgsql STABLE SECURITY INVOKER PARALLEL SAFE
AS $$
BEGIN
    RETURN (SELECT pg_catalog.pg_has_role(c.relowner, 'USAGE') FROM pg_catalog.pg_class c
            WHERE c.oid OPERATOR(pg_catalog.=) tbl);
END
$$;
