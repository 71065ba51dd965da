//! Spent step-up tokens (PROTOCOL.md §19): the `spent_tokens` table of
//! migration 0003.

use sqlx::AnyConnection;

use super::db_error;
use super::queries::key_id_text;
use crate::auth::StepUpUse;
use crate::vault::VaultError;

/// Records `token` as spent at `now` (unix milliseconds), inside the
/// transaction of the operation it is spent on. `false` if it was spent
/// before: the insert is conditional on the primary key (subject, jti), so
/// of concurrent spends on any number of processes sharing the database
/// exactly one gets `true` (PostgreSQL makes the second insert wait for
/// the first transaction and then skips it; SQLite runs writers one at a
/// time), and a spend whose transaction rolls back leaves no trace.
pub(crate) async fn spend(
    conn: &mut AnyConnection,
    token: &StepUpUse,
    now: i64,
) -> Result<bool, VaultError> {
    let retain_until = token.retain_until.saturating_mul(1000);
    let done = sqlx::query(
        "INSERT INTO spent_tokens (subject, jti, operation, key_id, spent_at, retain_until) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (subject, jti) DO NOTHING",
    )
    .bind(token.subject.as_str())
    .bind(token.token_id.as_str())
    .bind(token.operation.as_str())
    .bind(key_id_text(&token.key_id))
    .bind(now)
    .bind(retain_until)
    .execute(conn)
    .await
    .map_err(|e| db_error("recording a spent step-up token", &e))?;
    Ok(done.rows_affected() == 1)
}

/// Deletes the records whose retention ended before `now` (unix
/// milliseconds); the number deleted. Their tokens are expired on every
/// replica, so forgetting them cannot let one be spent again.
pub(crate) async fn prune(conn: &mut AnyConnection, now: i64) -> Result<u64, VaultError> {
    let done = sqlx::query("DELETE FROM spent_tokens WHERE retain_until < $1")
        .bind(now)
        .execute(conn)
        .await
        .map_err(|e| db_error("pruning spent step-up tokens", &e))?;
    Ok(done.rows_affected())
}
