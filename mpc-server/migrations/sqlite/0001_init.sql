-- mpc-server storage, SQLite flavour. Keep in step with
-- ../postgres/0001_init.sql: the same tables, columns and constraints, with
-- SQLite types (INTEGER, BLOB) in STRICT tables. Timestamps are unix
-- milliseconds supplied by the application. Sealed columns hold
-- envelope-encrypted records (see src/seal.rs); nothing else is secret.

CREATE TABLE keys (
    key_id       TEXT    NOT NULL PRIMARY KEY,  -- 64 lowercase hex characters
    owner        TEXT    NOT NULL,
    public_key   BLOB    NOT NULL CHECK (length(public_key) = 33),
    chain_code   BLOB    NOT NULL CHECK (length(chain_code) = 32),
    epoch        INTEGER NOT NULL CHECK (epoch >= 0),  -- latest finalized epoch
    status       TEXT    NOT NULL
        CHECK (status IN ('active', 'rotation_required', 'banned', 'revoked')),
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER,
    exported_at  INTEGER,
    backed_up_at INTEGER
) STRICT;

CREATE INDEX keys_owner ON keys (owner, created_at);

CREATE TABLE shares (
    key_id     TEXT    NOT NULL REFERENCES keys (key_id),
    epoch      INTEGER NOT NULL CHECK (epoch >= 0),
    state      TEXT    NOT NULL CHECK (state IN ('ready', 'confirmed', 'final')),
    sealed     BLOB    NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (key_id, epoch)
) STRICT;

CREATE TABLE presignatures (
    session_id TEXT    NOT NULL PRIMARY KEY,  -- 64 lowercase hex characters
    key_id     TEXT    NOT NULL REFERENCES keys (key_id),
    epoch      INTEGER NOT NULL CHECK (epoch >= 0),
    sealed     BLOB,                          -- NULL once used
    created_at INTEGER NOT NULL,
    used_at    INTEGER,
    CHECK ((sealed IS NULL) = (used_at IS NOT NULL))
) STRICT;

CREATE INDEX presignatures_key ON presignatures (key_id, epoch);

CREATE TABLE audit_log (
    id     INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    key_id TEXT    NOT NULL,
    owner  TEXT    NOT NULL,
    at     INTEGER NOT NULL,
    event  TEXT    NOT NULL,
    detail TEXT    NOT NULL  -- JSON, never secrets
) STRICT;

CREATE INDEX audit_log_key ON audit_log (key_id, id);

CREATE TABLE outbox (
    id              INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    event_id        TEXT    NOT NULL UNIQUE,  -- 32 hex characters (16 random bytes)
    event_type      TEXT    NOT NULL CHECK (event_type IN (
        'key.created', 'key.refreshed', 'key.backed_up',
        'key.exported', 'key.revoked', 'key.banned')),
    key_id          TEXT    NOT NULL,
    payload         TEXT    NOT NULL,  -- JSON
    created_at      INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    delivered_at    INTEGER,
    last_error      TEXT
) STRICT;

CREATE INDEX outbox_due ON outbox (next_attempt_at, id) WHERE delivered_at IS NULL;

CREATE TABLE backups (
    id           INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    key_id       TEXT    NOT NULL REFERENCES keys (key_id),
    epoch        INTEGER NOT NULL CHECK (epoch >= 0),
    created_at   INTEGER NOT NULL,
    recovery_key BLOB    NOT NULL CHECK (length(recovery_key) = 33),
    backup       BLOB    NOT NULL  -- public: encrypted to the recovery key
) STRICT;

CREATE INDEX backups_key ON backups (key_id, id);

CREATE TABLE meta (
    name  TEXT NOT NULL PRIMARY KEY,
    value BLOB NOT NULL
) STRICT;
