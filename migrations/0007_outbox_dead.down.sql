DROP TABLE outbox_dead;
