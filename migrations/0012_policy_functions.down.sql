-- Reverts 0012_policy_functions: the definitions of 0009_roles.
CREATE OR REPLACE FUNCTION cms_current_service() RETURNS TEXT
LANGUAGE sql STABLE SECURITY INVOKER PARALLEL SAFE
SET search_path = pg_catalog
AS $$
    SELECT CASE WHEN count(*) = 1 THEN substr(min(rolname), length('cms_') + 1) END
    FROM pg_roles
    WHERE rolname LIKE 'cms\_%' AND rolname <> 'cms_auditor' AND NOT rolcanlogin
      AND pg_has_role(oid, 'MEMBER')
$$;

CREATE OR REPLACE FUNCTION cms_is_owner(tbl REGCLASS) RETURNS BOOLEAN
LANGUAGE sql STABLE SECURITY INVOKER PARALLEL SAFE
SET search_path = pg_catalog
AS $$
    SELECT pg_has_role(relowner, 'USAGE') FROM pg_class WHERE oid = tbl
$$;
