//! Rate-limit buckets shared through the database (PROTOCOL.md §18.5): the
//! `rate_buckets` table of migration 0008.
//!
//! Each bucket is a GCRA (generic cell rate algorithm) state: its
//! theoretical arrival time `tat`. A request at `now` is allowed when
//! `tat - now <= tolerance`, and then moves `tat` to `max(tat, now) +
//! interval` (`interval` = period / limit, `tolerance` = period - interval,
//! so a full bucket allows `limit` requests at once). The check and the
//! update are one statement, atomic on PostgreSQL (the conflicting row is
//! locked and the `WHERE` is evaluated on its latest version) and on SQLite
//! (one writer at a time).

use sqlx::AnyConnection;

use super::db_error;
use crate::vault::VaultError;

/// Takes one request from `bucket` at `now` (microseconds). `None` if
/// allowed; else how long (microseconds) until the next request would be.
pub(crate) async fn take(
    conn: &mut AnyConnection,
    bucket: &str,
    now: i64,
    interval: i64,
    tolerance: i64,
) -> Result<Option<i64>, VaultError> {
    let allowed: Option<i64> = sqlx::query_scalar(
        "INSERT INTO rate_buckets (bucket, tat) VALUES ($1, $2 + $3) \
         ON CONFLICT (bucket) DO UPDATE SET tat = \
           (CASE WHEN rate_buckets.tat > $2 THEN rate_buckets.tat ELSE $2 END) + $3 \
         WHERE rate_buckets.tat - $2 <= $4 \
         RETURNING tat",
    )
    .bind(bucket)
    .bind(now)
    .bind(interval)
    .bind(tolerance)
    .fetch_optional(&mut *conn)
    .await
    .map_err(|e| db_error("checking a rate limit", &e))?;
    if allowed.is_some() {
        return Ok(None);
    }
    // Refused (the rare path): a second read for the wait.
    let tat: Option<i64> = sqlx::query_scalar("SELECT tat FROM rate_buckets WHERE bucket = $1")
        .bind(bucket)
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| db_error("reading a rate limit", &e))?;
    let wait = tat.map_or(0, |tat| tat.saturating_sub(tolerance).saturating_sub(now));
    Ok(Some(wait.max(1)))
}

/// Deletes the buckets whose `tat` is before `now` (they allow a full burst,
/// like a missing row); the number deleted.
pub(crate) async fn prune(conn: &mut AnyConnection, now: i64) -> Result<u64, VaultError> {
    let done = sqlx::query("DELETE FROM rate_buckets WHERE tat < $1")
        .bind(now)
        .execute(conn)
        .await
        .map_err(|e| db_error("pruning rate-limit buckets", &e))?;
    Ok(done.rows_affected())
}
