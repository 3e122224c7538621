-- Reverts 0002_runtime. Deleting the system identity fails while audit rows
-- or credentials still reference it: such a database has history that a
-- down migration must not throw away silently.

DELETE FROM identities WHERE id = '00000000-0000-7000-8000-000000000001';

DROP TABLE command_replies;
DROP TABLE processed_events;
DROP TABLE outbox;
