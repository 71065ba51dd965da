-- Rate-limit buckets shared by every replica on this database (PROTOCOL.md
-- §18.5): one row per limit and subject, holding the GCRA's theoretical
-- arrival time in microseconds since the Unix epoch. A check is one
-- INSERT ... ON CONFLICT DO UPDATE ... WHERE statement, atomic across
-- replicas.
--
-- UNLOGGED: a check writes no WAL, so it costs no fsync. After a crash of
-- PostgreSQL the table is empty: every bucket is full again, which lets each
-- subject one more burst; nothing else depends on these rows. Rows in the
-- past are equivalent to missing rows and are pruned by the servers.
CREATE UNLOGGED TABLE rate_buckets (
    bucket TEXT PRIMARY KEY,
    tat BIGINT NOT NULL
);
