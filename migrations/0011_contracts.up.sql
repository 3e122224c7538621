-- cms-contracts: what the lifecycle, the signatures and party-only access
-- need beyond SCHEMA.md's columns, which stay as they are.
--
--   content_hash   hex SHA-256 of the canonical form (RFC 8785 of id, title,
--                  description, provider_id, consumer_id, terms): what each
--                  party signs; written by the service with every change of
--                  content
--   starts_at      terms.start_date and terms.end_date, as instants: the
--   ends_at        activation and expiry timer reads them through indexes
--   supersedes     an amendment's predecessor, which ends when it starts
--   ended_reason   why it ended: terminate's reason, or "superseded"
ALTER TABLE contracts
    ADD COLUMN content_hash TEXT CHECK (content_hash ~ '^[0-9a-f]{64}$'),
    ADD COLUMN starts_at TIMESTAMPTZ,
    ADD COLUMN ends_at TIMESTAMPTZ,
    ADD COLUMN supersedes UUID REFERENCES contracts(id),
    ADD COLUMN ended_reason TEXT,
    ADD CONSTRAINT contracts_parties_differ CHECK (provider_id <> consumer_id),
    ADD CONSTRAINT contracts_dates CHECK (starts_at < ends_at);

-- what the timer waits for: a signed contract's start, a signed or active
-- one's end
CREATE INDEX idx_contracts_due_start ON contracts(starts_at) WHERE status = 'signed';
CREATE INDEX idx_contracts_due_end ON contracts(ends_at) WHERE status IN ('signed', 'active');
CREATE INDEX idx_contracts_supersedes ON contracts(supersedes) WHERE supersedes IS NOT NULL;

-- cms-contracts' own view of the identities it hears of through its
-- consumers of identity and credential events (it never reads the identity
-- tables): each identity's status, and the public keys parties sign with.
-- event_at is when the event that set the status happened: an event older
-- than it changes nothing. Seeded from the identity tables as they are now,
-- so that identities older than the event stream are known too.
CREATE TABLE contract_parties (
    identity_id UUID PRIMARY KEY,
    status identity_status NOT NULL,
    event_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE contract_party_keys (
    credential_id UUID PRIMARY KEY,
    identity_id UUID NOT NULL,
    public_key TEXT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    revoked_at TIMESTAMPTZ,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX idx_contract_party_keys_identity ON contract_party_keys(identity_id);
INSERT INTO contract_parties (identity_id, status, event_at)
    SELECT id, status, updated_at FROM identities;
INSERT INTO contract_party_keys (credential_id, identity_id, public_key, expires_at, revoked_at)
    SELECT id, identity_id, value, expires_at, revoked_at FROM credentials
    WHERE type = 'public_key';

-- Who acts: cms-contracts sets these as the first statement of every job,
-- transaction-local, from the authenticated principal.
--   cms.actor      the acting identity's id
--   cms.actor_all  'on' for an admin or an auditor: every contract
--   cms.timer      'on' for the activation and expiry timer: due contracts
-- Each is one expression with every name qualified and no SET clause, so
-- that the planner inlines it into the policy (a SET clause would make
-- every call go through the function manager and plan its body again).
CREATE FUNCTION cms_current_actor() RETURNS UUID
LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT NULLIF(pg_catalog.current_setting('cms.actor', true), '')::pg_catalog.uuid $$;

CREATE FUNCTION cms_actor_sees_all() RETURNS BOOLEAN
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT COALESCE(pg_catalog.current_setting('cms.actor_all', true), '')
        OPERATOR(pg_catalog.=) 'on'
$$;

CREATE FUNCTION cms_actor_is_timer() RETURNS BOOLEAN
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT COALESCE(pg_catalog.current_setting('cms.timer', true), '') OPERATOR(pg_catalog.=) 'on'
$$;

-- A contract is seen, changed and written only by its parties (and read by
-- admins and auditors); the timer sees only what is due. A job that sets
-- no actor sees nothing. FORCE puts the owner under it too, where its own
-- policy lets it at every row.
ALTER TABLE contracts ENABLE ROW LEVEL SECURITY;
ALTER TABLE contracts FORCE ROW LEVEL SECURITY;
CREATE POLICY owner ON contracts USING ((SELECT cms_is_owner('contracts')));
CREATE POLICY parties ON contracts
    USING (provider_id = (SELECT cms_current_actor()) OR consumer_id = (SELECT cms_current_actor())
           OR (SELECT cms_actor_sees_all()));
CREATE POLICY due ON contracts FOR SELECT
    USING ((SELECT cms_actor_is_timer())
           AND ((status = 'signed' AND starts_at <= now())
                OR (status IN ('signed', 'active') AND ends_at <= now())));

-- When the timer is next due, and nothing else of any contract: the one
-- read the timer makes outside the policies.
CREATE FUNCTION cms_contracts_next_due() RETURNS TIMESTAMPTZ
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
    SELECT least((SELECT min(starts_at) FROM contracts WHERE status = 'signed'),
                 (SELECT min(ends_at) FROM contracts WHERE status IN ('signed', 'active')))
$$;
REVOKE ALL ON FUNCTION cms_contracts_next_due() FROM PUBLIC;

GRANT SELECT, INSERT, UPDATE ON contract_parties, contract_party_keys TO cms_contracts;
GRANT EXECUTE ON FUNCTION cms_current_actor(), cms_actor_sees_all(), cms_actor_is_timer(),
    cms_contracts_next_due() TO cms_contracts;
-- the auditor reads every contract, through its own flag
GRANT SELECT ON contracts TO cms_auditor;
GRANT EXECUTE ON FUNCTION cms_current_actor(), cms_actor_sees_all(), cms_actor_is_timer(),
    cms_is_owner(REGCLASS) TO cms_auditor;
