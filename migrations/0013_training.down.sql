-- Reverts 0013_training.
REVOKE ALL ON training_jobs, training_job_contracts, training_ledgers, training_job_budget
    FROM cms_auditor;
DROP FUNCTION cms_training_next_due();
DROP POLICY parties ON training_ledgers;
DROP POLICY owner ON training_ledgers;
DROP POLICY consumer ON training_job_contracts;
DROP POLICY owner ON training_job_contracts;
DROP POLICY worker ON training_jobs;
DROP POLICY consumer ON training_jobs;
DROP POLICY owner ON training_jobs;
ALTER TABLE training_jobs NO FORCE ROW LEVEL SECURITY;
ALTER TABLE training_jobs DISABLE ROW LEVEL SECURITY;
DROP FUNCTION cms_current_worker();
DROP TABLE training_job_budget;
DROP TABLE training_ledgers;
DROP TABLE training_parties;
DROP TABLE training_contracts;
DROP TABLE training_job_contracts;
DROP INDEX idx_training_jobs_consumer;
DROP INDEX idx_training_jobs_due;
ALTER TABLE training_jobs
    DROP CONSTRAINT training_jobs_attempts,
    DROP CONSTRAINT training_jobs_steps_within,
    DROP CONSTRAINT training_jobs_spent_within,
    DROP CONSTRAINT training_jobs_budget,
    DROP COLUMN failure,
    DROP COLUMN stop_told_at,
    DROP COLUMN stop_reason,
    DROP COLUMN due_at,
    DROP COLUMN progress_event_at,
    DROP COLUMN last_report_at,
    DROP COLUMN started_at,
    DROP COLUMN worker_id,
    DROP COLUMN steps_before,
    DROP COLUMN max_attempts,
    DROP COLUMN attempt,
    DROP COLUMN rdp_step,
    DROP COLUMN projected_epsilon,
    DROP COLUMN steps_done,
    DROP COLUMN max_steps,
    DROP COLUMN planned_steps,
    DROP COLUMN max_grad_norm,
    DROP COLUMN delta,
    DROP COLUMN noise_multiplier,
    DROP COLUMN sample_rate,
    DROP COLUMN consumer_id;
