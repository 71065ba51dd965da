-- Rollback guard (PROTOCOL.md §18.4), SQLite flavour. Keep in step with
-- ../postgres/0005_rollback_guard.sql.
--
-- Tombstones of sealed records that have left the store. They are written
-- in the same transaction as the claim, deletion or re-seal that retires
-- the record, never updated or deleted (the triggers below refuse it), and
-- checked on every load: a retired record whose row comes back (a row
-- restored by SQL, a partial restore from backup, a replica that lost some
-- tables' recent writes) is refused.

-- Presignatures claimed or deleted, by session id (bound into the sealed
-- record's associated data: every ciphertext of a presignature carries it).
CREATE TABLE spent_presignatures (
    session_id TEXT NOT NULL PRIMARY KEY,  -- 64 lowercase hex characters
    key_id     TEXT NOT NULL
) STRICT;

-- Share records deleted or re-sealed, by SHA-256 of the sealed bytes (a
-- restored row carries the very bytes the server once wrote).
CREATE TABLE retired_shares (
    digest BLOB    NOT NULL PRIMARY KEY CHECK (length(digest) = 32),
    key_id TEXT    NOT NULL,
    epoch  INTEGER NOT NULL CHECK (epoch >= 0)
) STRICT;

-- Per key: 'floor' = no share or presignature of an epoch below this one
-- loads again (a finalized refresh; a revocation retires every epoch);
-- 'burned' = the share of this epoch had its OT material burned.
CREATE TABLE key_tombstones (
    key_id TEXT    NOT NULL,
    kind   TEXT    NOT NULL CHECK (kind IN ('floor', 'burned')),
    epoch  INTEGER NOT NULL CHECK (epoch >= 0),
    PRIMARY KEY (key_id, kind, epoch)
) STRICT;

CREATE TRIGGER spent_presignatures_insert_only_update BEFORE UPDATE ON spent_presignatures
BEGIN SELECT RAISE(ABORT, 'rollback guard tables are insert-only'); END;
CREATE TRIGGER spent_presignatures_insert_only_delete BEFORE DELETE ON spent_presignatures
BEGIN SELECT RAISE(ABORT, 'rollback guard tables are insert-only'); END;
CREATE TRIGGER retired_shares_insert_only_update BEFORE UPDATE ON retired_shares
BEGIN SELECT RAISE(ABORT, 'rollback guard tables are insert-only'); END;
CREATE TRIGGER retired_shares_insert_only_delete BEFORE DELETE ON retired_shares
BEGIN SELECT RAISE(ABORT, 'rollback guard tables are insert-only'); END;
CREATE TRIGGER key_tombstones_insert_only_update BEFORE UPDATE ON key_tombstones
BEGIN SELECT RAISE(ABORT, 'rollback guard tables are insert-only'); END;
CREATE TRIGGER key_tombstones_insert_only_delete BEFORE DELETE ON key_tombstones
BEGIN SELECT RAISE(ABORT, 'rollback guard tables are insert-only'); END;

-- What the database already knows: presignatures used before this
-- migration, each key's finalized epoch, revoked keys (every epoch).
INSERT INTO spent_presignatures (session_id, key_id)
    SELECT session_id, key_id FROM presignatures WHERE used_at IS NOT NULL;
INSERT INTO key_tombstones (key_id, kind, epoch)
    SELECT key_id, 'floor', epoch FROM keys WHERE status <> 'revoked';
INSERT INTO key_tombstones (key_id, kind, epoch)
    SELECT key_id, 'floor', 9223372036854775807 FROM keys WHERE status = 'revoked';
