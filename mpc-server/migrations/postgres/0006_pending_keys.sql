-- A key is 'pending' from its keygen until the client confirms it (its
-- successful outcome, or its first signature): see PROTOCOL.md §18.1.
-- Keep in step with ../sqlite/0006_pending_keys.sql.

ALTER TABLE keys DROP CONSTRAINT keys_status_check;
ALTER TABLE keys ADD CONSTRAINT keys_status_check
    CHECK (status IN ('pending', 'active', 'rotation_required', 'banned', 'revoked'));

-- The reaper's scan: pending keys by age.
CREATE INDEX keys_pending ON keys (created_at) WHERE status = 'pending';
