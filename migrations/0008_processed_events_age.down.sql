DROP INDEX idx_processed_events_age;
