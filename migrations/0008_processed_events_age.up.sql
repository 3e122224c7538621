-- The lease holder of each consumer deletes its processed_events rows older
-- than their retention, in batches: an index that finds them by age.
CREATE INDEX idx_processed_events_age ON processed_events(consumer, processed_at);
