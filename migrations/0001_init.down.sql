-- Reverts 0001_init: tables in reverse dependency order (their indexes and
-- constraints go with them), then the enums they used.

DROP TABLE audit_logs;
DROP TABLE training_jobs;
DROP TABLE credentials;
DROP TABLE contracts;
DROP TABLE identities;

DROP TYPE credential_type;
DROP TYPE job_status;
DROP TYPE identity_status;
DROP TYPE identity_type;
DROP TYPE contract_status;
