DELETE FROM command_replies WHERE reply IS NULL;
ALTER TABLE command_replies
    DROP COLUMN owner,
    ALTER COLUMN reply SET NOT NULL;
