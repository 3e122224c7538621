-- The credential lifecycle that cms-identity keeps beyond SCHEMA.md.
--   revoked_at, revoke_reason: set once by revoke_credential.
--   expired_at: set once, in the transaction that writes credential.expired,
--     so each expiry is announced exactly once, also across restarts.
--   signer: an attestation's signer (value holds its measurement).
ALTER TABLE credentials
    ADD COLUMN revoked_at    TIMESTAMPTZ,
    ADD COLUMN revoke_reason TEXT,
    ADD COLUMN expired_at    TIMESTAMPTZ,
    ADD COLUMN signer        TEXT;

-- The next expiry to announce, without reading spent credentials.
CREATE INDEX idx_credentials_live_expiry ON credentials(expires_at)
    WHERE revoked_at IS NULL AND expired_at IS NULL;
