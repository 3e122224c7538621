DROP INDEX idx_credentials_live_expiry;
ALTER TABLE credentials
    DROP COLUMN revoked_at,
    DROP COLUMN revoke_reason,
    DROP COLUMN expired_at,
    DROP COLUMN signer;
