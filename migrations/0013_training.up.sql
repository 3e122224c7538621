-- cms-training: what admission, the privacy ledger, dispatch and tracking
-- need beyond SCHEMA.md's columns of training_jobs, which stay as they are.
--
-- On training_jobs, written by cms-training only:
--   consumer_id          who submitted it (the contract's consumer)
--   sample_rate          q = batch_size / dataset_size
--   noise_multiplier     sigma: the config's, or the accountant's for its epsilon
--   delta, max_grad_norm the config's
--   planned_steps        epochs * ceil(dataset_size / batch_size)
--   max_steps            the most steps whose epsilon stays within privacy_budget
--   steps_done           over every attempt; privacy_budget_spent is its epsilon
--   projected_epsilon    the epsilon of planned_steps
--   rdp_step             the Rényi DP of one step over the accountant's orders
--                        (common/rdp.h): the job's curve is steps times it
--   attempt              1 for the first dispatch, one more for each requeue
--   steps_before         steps_done when the current attempt was dispatched
--   worker_id            the identity running the current attempt
--   due_at               when the timer must look at the job: a running job's
--                        report deadline (its worker is presumed lost past
--                        it), a stop's deadline, or now for a stop to make
--   stop_reason          why it was told to stop (set once), or why it stopped
--   stop_told_at         when its worker was told
--   failure              why it failed
ALTER TABLE training_jobs
    ADD COLUMN consumer_id UUID,
    ADD COLUMN sample_rate FLOAT8,
    ADD COLUMN noise_multiplier FLOAT8,
    ADD COLUMN delta FLOAT8,
    ADD COLUMN max_grad_norm FLOAT8,
    ADD COLUMN planned_steps BIGINT,
    ADD COLUMN max_steps BIGINT,
    ADD COLUMN steps_done BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN projected_epsilon FLOAT8,
    ADD COLUMN rdp_step FLOAT8[],
    ADD COLUMN attempt INT NOT NULL DEFAULT 1,
    ADD COLUMN max_attempts INT NOT NULL DEFAULT 3,
    ADD COLUMN steps_before BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN worker_id UUID,
    ADD COLUMN started_at TIMESTAMPTZ,
    ADD COLUMN last_report_at TIMESTAMPTZ,
    ADD COLUMN progress_event_at TIMESTAMPTZ,
    ADD COLUMN due_at TIMESTAMPTZ,
    ADD COLUMN stop_reason TEXT,
    ADD COLUMN stop_told_at TIMESTAMPTZ,
    ADD COLUMN failure TEXT,
    ADD CONSTRAINT training_jobs_budget CHECK (privacy_budget > 0),
    ADD CONSTRAINT training_jobs_spent_within
        CHECK (privacy_budget_spent >= 0 AND privacy_budget_spent <= privacy_budget),
    ADD CONSTRAINT training_jobs_steps_within
        CHECK (steps_done >= 0 AND steps_before <= steps_done
               AND (max_steps IS NULL OR steps_done <= max_steps)),
    ADD CONSTRAINT training_jobs_attempts CHECK (attempt >= 1 AND attempt <= max_attempts);

-- what the timer waits for
CREATE INDEX idx_training_jobs_due ON training_jobs(due_at) WHERE due_at IS NOT NULL;
CREATE INDEX idx_training_jobs_consumer ON training_jobs(consumer_id, id);

-- The contract each job runs under.
CREATE TABLE training_job_contracts (
    job_id UUID PRIMARY KEY REFERENCES training_jobs(id),
    contract_id UUID NOT NULL,
    consumer_id UUID NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX idx_training_job_contracts_contract ON training_job_contracts(contract_id, job_id);

-- cms-training's own view of contracts and identities, from their events
-- (it never reads another service's tables): each contract's parties,
-- status and privacy terms, each identity's status. event_at is when the
-- event that set the row happened: an older event changes nothing. Seeded
-- from the owners' tables as they are now, so that what is older than the
-- event stream is known too.
CREATE TABLE training_contracts (
    contract_id UUID PRIMARY KEY,
    provider_id UUID NOT NULL,
    consumer_id UUID NOT NULL,
    status contract_status NOT NULL,
    max_epsilon FLOAT8 CHECK (max_epsilon > 0),
    delta FLOAT8 CHECK (delta > 0 AND delta < 1),
    event_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX idx_training_contracts_provider ON training_contracts(provider_id);
CREATE INDEX idx_training_contracts_consumer ON training_contracts(consumer_id);
CREATE TABLE training_parties (
    identity_id UUID PRIMARY KEY,
    status identity_status NOT NULL,
    event_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
INSERT INTO training_contracts (contract_id, provider_id, consumer_id, status, max_epsilon, delta,
                                event_at)
    SELECT id, provider_id, consumer_id, status, (terms #>> '{privacy,max_epsilon}')::float8,
           (terms #>> '{privacy,delta}')::float8, updated_at
    FROM contracts;
INSERT INTO training_parties (identity_id, status, event_at)
    SELECT id, status, updated_at FROM identities;

-- The privacy ledger of a contract: the sum, order by order, of the RDP
-- curves its jobs reserved (a job's whole projection while it may run,
-- settled to the steps it ran once it ended), and the plain sum of their
-- epsilons beside it. version changes with every write: a reservation is
-- written only if the ledger is still the one it was checked against.
CREATE TABLE training_ledgers (
    contract_id UUID PRIMARY KEY REFERENCES training_contracts(contract_id),
    reserved FLOAT8[] NOT NULL,
    reserved_sum FLOAT8 NOT NULL DEFAULT 0,
    jobs INT NOT NULL DEFAULT 0,
    version BIGINT NOT NULL DEFAULT 0,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- A job's spent budget over time: one point per progress event.
CREATE TABLE training_job_budget (
    job_id UUID NOT NULL REFERENCES training_jobs(id),
    steps BIGINT NOT NULL,
    epsilon FLOAT8 NOT NULL,
    at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, steps)
);

-- Who acts, set per transaction by cms-training: cms.actor and
-- cms.actor_all as for contracts (0011), and cms.worker, the worker
-- identity that reports. Inlined into the policies as 0011's are.
CREATE FUNCTION cms_current_worker() RETURNS UUID
LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT NULLIF(pg_catalog.current_setting('cms.worker', true), '')::pg_catalog.uuid $$;

-- A job is seen and changed by its consumer, by admins and auditors (and
-- cms-training's own timer and consumers, which act as cms.actor_all), and
-- by the worker running it; a worker also sees the pending jobs it may
-- start. A job that sets no actor sees nothing.
ALTER TABLE training_jobs ENABLE ROW LEVEL SECURITY;
ALTER TABLE training_jobs FORCE ROW LEVEL SECURITY;
CREATE POLICY owner ON training_jobs USING ((SELECT cms_is_owner('training_jobs')));
CREATE POLICY consumer ON training_jobs
    USING (consumer_id = (SELECT cms_current_actor()) OR (SELECT cms_actor_sees_all()));
CREATE POLICY worker ON training_jobs
    USING (worker_id = (SELECT cms_current_worker())
           OR (status = 'pending' AND (SELECT cms_current_worker()) IS NOT NULL));
ALTER TABLE training_job_contracts ENABLE ROW LEVEL SECURITY;
ALTER TABLE training_job_contracts FORCE ROW LEVEL SECURITY;
CREATE POLICY owner ON training_job_contracts
    USING ((SELECT cms_is_owner('training_job_contracts')));
CREATE POLICY consumer ON training_job_contracts
    USING (consumer_id = (SELECT cms_current_actor()) OR (SELECT cms_actor_sees_all())
           OR (SELECT cms_current_worker()) IS NOT NULL);
-- a ledger is the contract's: its parties see it
ALTER TABLE training_ledgers ENABLE ROW LEVEL SECURITY;
ALTER TABLE training_ledgers FORCE ROW LEVEL SECURITY;
CREATE POLICY owner ON training_ledgers USING ((SELECT cms_is_owner('training_ledgers')));
CREATE POLICY parties ON training_ledgers
    USING ((SELECT cms_actor_sees_all())
           OR EXISTS (SELECT 1 FROM training_contracts c
                      WHERE c.contract_id = training_ledgers.contract_id
                        AND (c.provider_id = (SELECT cms_current_actor())
                             OR c.consumer_id = (SELECT cms_current_actor()))));

-- When the timer is next due, and nothing else of any job.
CREATE FUNCTION cms_training_next_due() RETURNS TIMESTAMPTZ
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$ SELECT min(due_at) FROM training_jobs WHERE due_at IS NOT NULL $$;
REVOKE ALL ON FUNCTION cms_training_next_due() FROM PUBLIC;

GRANT SELECT, INSERT, UPDATE ON training_job_contracts, training_contracts, training_parties,
    training_ledgers, training_job_budget TO cms_training;
GRANT EXECUTE ON FUNCTION cms_current_actor(), cms_actor_sees_all(), cms_current_worker(),
    cms_training_next_due() TO cms_training;
-- the auditor reads every job and ledger, through its own flag
GRANT SELECT ON training_jobs, training_job_contracts, training_ledgers, training_job_budget
    TO cms_auditor;
GRANT EXECUTE ON FUNCTION cms_current_worker() TO cms_auditor;
