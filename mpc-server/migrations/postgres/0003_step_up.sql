-- Spent step-up tokens (PROTOCOL.md §19), PostgreSQL flavour. Keep in step
-- with ../sqlite/0003_step_up.sql. A row is written in the same transaction
-- as the backup, export or revocation the token was spent on; the primary
-- key makes a second spend of one token fail, on every replica sharing the
-- database (a concurrent insert of the same key waits for the first
-- transaction and then conflicts). Rows are kept until `retain_until` (unix
-- milliseconds), when the token is expired on every replica, then pruned.
-- Nothing here is secret (a `jti` is an identifier, not a credential).

CREATE TABLE spent_tokens (
    subject      TEXT   NOT NULL,
    jti          TEXT   NOT NULL,
    operation    TEXT   NOT NULL CHECK (operation IN ('backup', 'export', 'revoke')),
    key_id       TEXT   NOT NULL,  -- 64 lowercase hex characters
    spent_at     BIGINT NOT NULL,
    retain_until BIGINT NOT NULL,
    PRIMARY KEY (subject, jti)
);

CREATE INDEX spent_tokens_retain ON spent_tokens (retain_until);
