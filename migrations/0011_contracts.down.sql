-- Reverts 0011_contracts.
REVOKE ALL ON contracts FROM cms_auditor;
DROP POLICY due ON contracts;
DROP POLICY parties ON contracts;
DROP POLICY owner ON contracts;
ALTER TABLE contracts NO FORCE ROW LEVEL SECURITY;
ALTER TABLE contracts DISABLE ROW LEVEL SECURITY;
DROP FUNCTION cms_contracts_next_due();
DROP FUNCTION cms_actor_is_timer();
DROP FUNCTION cms_actor_sees_all();
DROP FUNCTION cms_current_actor();
DROP TABLE contract_party_keys;
DROP TABLE contract_parties;
DROP INDEX idx_contracts_supersedes;
DROP INDEX idx_contracts_due_end;
DROP INDEX idx_contracts_due_start;
ALTER TABLE contracts
    DROP CONSTRAINT contracts_dates,
    DROP CONSTRAINT contracts_parties_differ,
    DROP COLUMN ended_reason,
    DROP COLUMN supersedes,
    DROP COLUMN ends_at,
    DROP COLUMN starts_at,
    DROP COLUMN content_hash;
