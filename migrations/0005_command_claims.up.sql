-- A request_id is claimed in the same transaction as the command's change,
-- so that a second attempt (a retry on another replica) cannot claim it
-- too: the claim is a row of command_replies whose reply comes once the
-- change has committed.
--   owner: the attempt that claimed the row (a UUID of its own), so that it
--     can store its reply into its own claim and nobody else's.
--   reply: NULL while the claim waits for its reply.
ALTER TABLE command_replies
    ALTER COLUMN reply DROP NOT NULL,
    ADD COLUMN owner UUID;
