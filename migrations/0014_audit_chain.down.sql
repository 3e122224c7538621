DROP FUNCTION cms_audit_chain_link(INTEGER, BIGINT, INTEGER, BYTEA, BYTEA, BYTEA, BYTEA);
DROP FUNCTION cms_audit_chain_begin(INTEGER, BIGINT);
ALTER TABLE audit_logs DROP COLUMN chain_writer, DROP COLUMN chain_seq;
DROP TABLE audit_checkpoints;
DROP TABLE audit_batches;
DROP TABLE audit_writers;
DROP TABLE audit_chain_start;
