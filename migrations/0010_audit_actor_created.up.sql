-- cms-audit's query reads audit_logs in (created_at, id) order, and for
-- anyone who is not an admin or an auditor always with actor_id fixed to
-- the caller: this index serves that page, its keyset condition and its
-- order from one range, where idx_audit_logs_actor alone leaves every row
-- of the actor to be sorted and idx_audit_logs_created scans past other
-- actors' rows (hundreds of thousands for a rare actor).
CREATE INDEX idx_audit_logs_actor_created ON audit_logs(actor_id, created_at, id);
