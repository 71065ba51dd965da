-- A key is 'pending' from its keygen until the client confirms it (its
-- successful outcome, or its first signature): see PROTOCOL.md §18.1.
--
-- SQLite cannot change a CHECK constraint in place. Instead of rebuilding
-- the table (which would have to repeat every column of keys, and fight
-- the foreign keys of shares, presignatures and backups), the status column
-- alone is replaced: a new column with the wider CHECK, the values copied,
-- the old column dropped (its CHECK goes with it) and the new one renamed.
-- Runs in the migration's transaction: all or nothing. The default only
-- fills existing rows before the copy; every INSERT names the status.

ALTER TABLE keys ADD COLUMN status_new TEXT NOT NULL DEFAULT 'pending'
    CHECK (status_new IN ('pending', 'active', 'rotation_required', 'banned', 'revoked'));
UPDATE keys SET status_new = status;
ALTER TABLE keys DROP COLUMN status;
ALTER TABLE keys RENAME COLUMN status_new TO status;

-- The reaper's scan: pending keys by age.
CREATE INDEX keys_pending ON keys (created_at) WHERE status = 'pending';
