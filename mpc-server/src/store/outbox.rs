//! Outbox queries of webhook delivery ([`crate::webhook`]): due events,
//! heads of keys, claims, outcomes and the backlog. Events are written by
//! [`super::queries::insert_outbox`] inside the changes they report.
//!
//! A key's *head* is its oldest undelivered event (lowest `id`). Only heads
//! are offered ([`due_heads`]) and claimed ([`claim_event`]), so a key's
//! events go out one at a time, in `id` order, on any number of processes
//! sharing the database. Index `outbox_key_pending` (migration 0009) makes
//! "is there an earlier undelivered event of this key?" one probe.

use sqlx::any::AnyRow;
use sqlx::AnyConnection;

use mpc_core::KeyId;

use super::queries::{col, err, key_id_from_text, key_id_text};
use crate::vault::{OutboxEvent, VaultError};

/// Longest `last_error` kept for an outbox event, in characters.
const MAX_ERROR_CHARS: usize = 1000;

const EVENT_COLUMNS: &str = "id, event_id, event_type, key_id, payload, created_at, attempts";

/// SQL condition: the row `outbox` is its key's head (no earlier
/// undelivered event of the same key).
const IS_HEAD: &str = "NOT EXISTS (SELECT 1 FROM outbox earlier \
     WHERE earlier.key_id = outbox.key_id AND earlier.delivered_at IS NULL \
     AND earlier.id < outbox.id)";

fn event_from_row(row: &AnyRow) -> Result<OutboxEvent, VaultError> {
    let key_id: String = col(row, "key_id")?;
    let payload: String = col(row, "payload")?;
    let attempts: i64 = col(row, "attempts")?;
    Ok(OutboxEvent {
        id: col(row, "id")?,
        event_id: col(row, "event_id")?,
        event_type: col(row, "event_type")?,
        key_id: key_id_from_text(&key_id)?,
        payload: serde_json::from_str(&payload)
            .map_err(|_| VaultError::CorruptRecord("outbox payload"))?,
        created_at: col(row, "created_at")?,
        attempts: u32::try_from(attempts.max(0)).unwrap_or(u32::MAX),
    })
}

/// Undelivered events due at `now`, by next attempt time then id, at most
/// `limit` (heads or not).
pub(crate) async fn due_events(
    conn: &mut AnyConnection,
    now: i64,
    limit: u32,
) -> Result<Vec<OutboxEvent>, VaultError> {
    due(conn, now, limit, "").await
}

/// Heads of keys (see the module documentation) that are due at `now`, by
/// next attempt time then id, at most `limit`. The scan visits every due
/// undelivered event before the last head returned (one index probe each).
pub(crate) async fn due_heads(
    conn: &mut AnyConnection,
    now: i64,
    limit: u32,
) -> Result<Vec<OutboxEvent>, VaultError> {
    due(conn, now, limit, &format!("AND {IS_HEAD}")).await
}

/// Undelivered events due at `now` that also meet `condition` (SQL, empty
/// for none), by next attempt time then id, at most `limit`.
async fn due(
    conn: &mut AnyConnection,
    now: i64,
    limit: u32,
    condition: &str,
) -> Result<Vec<OutboxEvent>, VaultError> {
    let rows = sqlx::query(&format!(
        "SELECT {EVENT_COLUMNS} FROM outbox \
         WHERE delivered_at IS NULL AND next_attempt_at <= $1 {condition} \
         ORDER BY next_attempt_at, id LIMIT $2"
    ))
    .bind(now)
    .bind(i64::from(limit))
    .fetch_all(conn)
    .await
    .map_err(err("reading the outbox"))?;
    rows.iter().map(event_from_row).collect()
}

/// The oldest undelivered event of `key_id` if it is due at `now`.
pub(crate) async fn due_head_of_key(
    conn: &mut AnyConnection,
    key_id: &KeyId,
    now: i64,
) -> Result<Option<OutboxEvent>, VaultError> {
    let row = sqlx::query(&format!(
        "SELECT {EVENT_COLUMNS}, next_attempt_at FROM outbox \
         WHERE key_id = $1 AND delivered_at IS NULL ORDER BY id LIMIT 1"
    ))
    .bind(key_id_text(key_id))
    .fetch_optional(conn)
    .await
    .map_err(err("reading the outbox"))?;
    let Some(row) = row else {
        return Ok(None);
    };
    let next_attempt_at: i64 = col(&row, "next_attempt_at")?;
    if next_attempt_at > now {
        return Ok(None);
    }
    event_from_row(&row).map(Some)
}

/// Marks an event delivered (keeping the first delivery time) and makes
/// its key's next event due no earlier than `now`, so that it queues
/// behind the heads already waiting (round robin between keys); `false` if
/// there is no such event. Run it in a transaction.
pub(crate) async fn mark_delivered(
    conn: &mut AnyConnection,
    id: i64,
    now: i64,
) -> Result<bool, VaultError> {
    let done =
        sqlx::query("UPDATE outbox SET delivered_at = COALESCE(delivered_at, $2) WHERE id = $1")
            .bind(id)
            .bind(now)
            .execute(&mut *conn)
            .await
            .map_err(err("updating the outbox"))?;
    if done.rows_affected() == 0 {
        return Ok(false);
    }
    sqlx::query(
        "UPDATE outbox SET next_attempt_at = $2 \
         WHERE id = (SELECT MIN(id) FROM outbox WHERE delivered_at IS NULL \
                     AND key_id = (SELECT key_id FROM outbox WHERE id = $1)) \
         AND next_attempt_at < $2",
    )
    .bind(id)
    .bind(now)
    .execute(conn)
    .await
    .map_err(err("updating the outbox"))?;
    Ok(true)
}

/// Counts a failed attempt and schedules the next; `false` if there is no
/// such event.
pub(crate) async fn schedule_retry(
    conn: &mut AnyConnection,
    id: i64,
    next_attempt_at: i64,
    error: &str,
) -> Result<bool, VaultError> {
    let error: String = error.chars().take(MAX_ERROR_CHARS).collect();
    let done = sqlx::query(
        "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = $2, last_error = $3 \
         WHERE id = $1",
    )
    .bind(id)
    .bind(next_attempt_at)
    .bind(error)
    .execute(conn)
    .await
    .map_err(err("updating the outbox"))?;
    Ok(done.rows_affected() > 0)
}

/// Claims an outbox event for one delivery attempt: moves its next attempt
/// time to `lease_until` with one conditional update that only matches
/// while the event is undelivered, due at `now` and its key's head. Of
/// concurrent callers (any number of processes on one database) at most
/// one gets `true` until the lease runs out: PostgreSQL re-checks the
/// row's condition after waiting for its lock, SQLite runs writers one at
/// a time. As only a head can be claimed and a claimed head is not due, a
/// key has at most one claimed event at a time. `false` if the event is
/// delivered, not due (e.g. claimed by another deliverer), behind an
/// earlier undelivered event of its key, or absent.
pub(crate) async fn claim_event(
    conn: &mut AnyConnection,
    id: i64,
    now: i64,
    lease_until: i64,
) -> Result<bool, VaultError> {
    let done = sqlx::query(&format!(
        "UPDATE outbox SET next_attempt_at = $3 \
         WHERE id = $1 AND delivered_at IS NULL AND next_attempt_at <= $2 AND {IS_HEAD}"
    ))
    .bind(id)
    .bind(now)
    .bind(lease_until)
    .execute(conn)
    .await
    .map_err(err("claiming an outbox event"))?;
    Ok(done.rows_affected() == 1)
}

/// Gives up a claim taken with [`claim_event`] without counting an
/// attempt: makes the event due at `now` again, only if it is undelivered
/// and its next attempt time is still `lease_until` (nobody else has
/// claimed or rescheduled it since). `false` if that no longer holds.
pub(crate) async fn release_event(
    conn: &mut AnyConnection,
    id: i64,
    lease_until: i64,
    now: i64,
) -> Result<bool, VaultError> {
    let done = sqlx::query(
        "UPDATE outbox SET next_attempt_at = $3 \
         WHERE id = $1 AND delivered_at IS NULL AND next_attempt_at = $2",
    )
    .bind(id)
    .bind(lease_until)
    .bind(now)
    .execute(conn)
    .await
    .map_err(err("releasing an outbox event"))?;
    Ok(done.rows_affected() == 1)
}

/// The number of undelivered events and the oldest one's `created_at`
/// (unix milliseconds; `None` when there is none).
pub(crate) async fn backlog(conn: &mut AnyConnection) -> Result<(u64, Option<i64>), VaultError> {
    let row = sqlx::query(
        "SELECT COUNT(*) AS waiting, MIN(created_at) AS oldest FROM outbox \
         WHERE delivered_at IS NULL",
    )
    .fetch_one(conn)
    .await
    .map_err(err("measuring the outbox backlog"))?;
    let waiting: i64 = col(&row, "waiting")?;
    let oldest: Option<i64> = col(&row, "oldest")?;
    Ok((u64::try_from(waiting).unwrap_or(0), oldest))
}
