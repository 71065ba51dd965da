-- Rate-limit buckets (PROTOCOL.md §18.5): one row per limit and subject,
-- holding the GCRA's theoretical arrival time in microseconds since the
-- Unix epoch, shared by every process on this file. On SQLite only the
-- low-rate limits (keygen, refresh, backup/export/revoke) live here: a
-- check is a write, and a write is an fsync. Rows in the past are
-- equivalent to missing rows and are pruned by the server.
CREATE TABLE rate_buckets (
    bucket TEXT PRIMARY KEY,
    tat INTEGER NOT NULL
) WITHOUT ROWID;
