-- The refresh lease (PROTOCOL.md §18.1): at most one refresh session per
-- key holds it, across every server process on this database. Keep in step
-- with ../sqlite/0004_refresh_lease.sql. `holder` is a random per-session
-- token (not a secret); `expires_at` is unix milliseconds, after which
-- another session may take the lease over (the holder crashed). A row, not
-- an advisory lock: it survives the loss of the connection that took it.

CREATE TABLE refresh_leases (
    key_id     TEXT   NOT NULL PRIMARY KEY REFERENCES keys (key_id),
    holder     TEXT   NOT NULL,
    expires_at BIGINT NOT NULL
);
