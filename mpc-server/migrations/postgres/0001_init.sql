-- mpc-server storage, PostgreSQL flavour. Keep in step with
-- ../sqlite/0001_init.sql: the same tables, columns and constraints, with
-- PostgreSQL types (BIGINT, BYTEA). Timestamps are unix milliseconds
-- supplied by the application. Sealed columns hold envelope-encrypted
-- records (see src/seal.rs); nothing else is secret.

CREATE TABLE keys (
    key_id       TEXT   NOT NULL PRIMARY KEY,  -- 64 lowercase hex characters
    owner        TEXT   NOT NULL,
    public_key   BYTEA  NOT NULL CHECK (octet_length(public_key) = 33),
    chain_code   BYTEA  NOT NULL CHECK (octet_length(chain_code) = 32),
    epoch        BIGINT NOT NULL CHECK (epoch >= 0),  -- latest finalized epoch
    status       TEXT   NOT NULL
        CHECK (status IN ('active', 'rotation_required', 'banned', 'revoked')),
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT,
    exported_at  BIGINT,
    backed_up_at BIGINT
);

CREATE INDEX keys_owner ON keys (owner, created_at);

CREATE TABLE shares (
    key_id     TEXT   NOT NULL REFERENCES keys (key_id),
    epoch      BIGINT NOT NULL CHECK (epoch >= 0),
    state      TEXT   NOT NULL CHECK (state IN ('ready', 'confirmed', 'final')),
    sealed     BYTEA  NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (key_id, epoch)
);

CREATE TABLE presignatures (
    session_id TEXT   NOT NULL PRIMARY KEY,  -- 64 lowercase hex characters
    key_id     TEXT   NOT NULL REFERENCES keys (key_id),
    epoch      BIGINT NOT NULL CHECK (epoch >= 0),
    sealed     BYTEA,                        -- NULL once used
    created_at BIGINT NOT NULL,
    used_at    BIGINT,
    CHECK ((sealed IS NULL) = (used_at IS NOT NULL))
);

CREATE INDEX presignatures_key ON presignatures (key_id, epoch);

CREATE TABLE audit_log (
    id     BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key_id TEXT   NOT NULL,
    owner  TEXT   NOT NULL,
    at     BIGINT NOT NULL,
    event  TEXT   NOT NULL,
    detail TEXT   NOT NULL  -- JSON, never secrets
);

CREATE INDEX audit_log_key ON audit_log (key_id, id);

CREATE TABLE outbox (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id        TEXT   NOT NULL UNIQUE,  -- 32 hex characters (16 random bytes)
    event_type      TEXT   NOT NULL CHECK (event_type IN (
        'key.created', 'key.refreshed', 'key.backed_up',
        'key.exported', 'key.revoked', 'key.banned')),
    key_id          TEXT   NOT NULL,
    payload         TEXT   NOT NULL,  -- JSON
    created_at      BIGINT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    delivered_at    BIGINT,
    last_error      TEXT
);

CREATE INDEX outbox_due ON outbox (next_attempt_at, id) WHERE delivered_at IS NULL;

CREATE TABLE backups (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key_id       TEXT   NOT NULL REFERENCES keys (key_id),
    epoch        BIGINT NOT NULL CHECK (epoch >= 0),
    created_at   BIGINT NOT NULL,
    recovery_key BYTEA  NOT NULL CHECK (octet_length(recovery_key) = 33),
    backup       BYTEA  NOT NULL  -- public: encrypted to the recovery key
);

CREATE INDEX backups_key ON backups (key_id, id);

CREATE TABLE meta (
    name  TEXT  NOT NULL PRIMARY KEY,
    value BYTEA NOT NULL
);
