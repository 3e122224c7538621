DROP TABLE outbox_leases;
