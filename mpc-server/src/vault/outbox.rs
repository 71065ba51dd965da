//! The webhook outbox: due events, heads of keys, delivery results,
//! claims and the backlog.

use mpc_core::KeyId;

use super::{OutboxEvent, Vault, VaultError};
use crate::store::outbox as q;

impl Vault {
    /// Undelivered webhook events due at `now` (next attempt time reached),
    /// in order, at most `limit`.
    ///
    /// # Errors
    ///
    /// [`VaultError::Database`]; [`VaultError::CorruptRecord`].
    pub async fn due_events(&self, now: i64, limit: u32) -> Result<Vec<OutboxEvent>, VaultError> {
        let mut conn = self.store().acquire().await?;
        q::due_events(&mut conn, now, limit).await
    }

    /// Undelivered events due at `now` that are their key's oldest
    /// undelivered event (the only ones [`claim_event`](Self::claim_event)
    /// accepts), by next attempt time then id, at most `limit`.
    ///
    /// # Errors
    ///
    /// [`VaultError::Database`]; [`VaultError::CorruptRecord`].
    pub async fn due_heads(&self, now: i64, limit: u32) -> Result<Vec<OutboxEvent>, VaultError> {
        let mut conn = self.store().acquire().await?;
        q::due_heads(&mut conn, now, limit).await
    }

    /// The oldest undelivered event of `key_id`, if it is due at `now`.
    ///
    /// # Errors
    ///
    /// [`VaultError::Database`]; [`VaultError::CorruptRecord`].
    pub async fn due_head_of_key(
        &self,
        key_id: &KeyId,
        now: i64,
    ) -> Result<Option<OutboxEvent>, VaultError> {
        let mut conn = self.store().acquire().await?;
        q::due_head_of_key(&mut conn, key_id, now).await
    }

    /// Marks an outbox event delivered, and makes the next undelivered
    /// event of its key due no earlier than `now` (so that it waits behind
    /// the other keys' due events: round robin), in one transaction.
    ///
    /// # Errors
    ///
    /// [`VaultError::NotFound`] if there is no such event;
    /// [`VaultError::Database`].
    pub async fn mark_delivered(&self, id: i64, now: i64) -> Result<(), VaultError> {
        let mut tx = self.store().begin().await?;
        if q::mark_delivered(&mut tx, id, now).await? {
            crate::store::commit(tx).await
        } else {
            Err(VaultError::NotFound)
        }
    }

    /// The number of undelivered events and the `created_at` (unix
    /// milliseconds) of the oldest, `None` if there is none.
    ///
    /// # Errors
    ///
    /// [`VaultError::Database`].
    pub async fn outbox_backlog(&self) -> Result<(u64, Option<i64>), VaultError> {
        let mut conn = self.store().acquire().await?;
        q::backlog(&mut conn).await
    }

    /// Counts a failed delivery of an outbox event and schedules the next
    /// attempt; `error` (kept to 1000 characters) is stored for operators.
    ///
    /// # Errors
    ///
    /// [`VaultError::NotFound`] if there is no such event;
    /// [`VaultError::Database`].
    pub async fn schedule_retry(
        &self,
        id: i64,
        next_attempt_at: i64,
        error: &str,
    ) -> Result<(), VaultError> {
        let mut conn = self.store().acquire().await?;
        if q::schedule_retry(&mut conn, id, next_attempt_at, error).await? {
            Ok(())
        } else {
            Err(VaultError::NotFound)
        }
    }
}

/// Outbox claims, for webhook delivery by several processes on one
/// database ([`crate::webhook`]).
impl Vault {
    /// Claims an outbox event for one delivery attempt: if it is
    /// undelivered, due at `now` and its key's oldest undelivered event,
    /// its next attempt time becomes `lease_until`, in one conditional
    /// update, and the result is `true`. Of concurrent callers (from any
    /// number of server processes on one database) at most one gets `true`
    /// until the lease runs out, so deliverers rarely send the same event
    /// twice, and a key never has two events claimed at once. `false` if
    /// the event is delivered, not due (e.g. claimed by another deliverer),
    /// behind an undelivered event of its key, or absent.
    ///
    /// After the attempt, the claimer calls
    /// [`mark_delivered`](Self::mark_delivered) or
    /// [`schedule_retry`](Self::schedule_retry) (or
    /// [`release_event`](Self::release_event) to give up without an
    /// attempt); if it dies instead, the event is due again at
    /// `lease_until`.
    ///
    /// # Errors
    ///
    /// [`VaultError::Database`].
    pub async fn claim_event(
        &self,
        id: i64,
        now: i64,
        lease_until: i64,
    ) -> Result<bool, VaultError> {
        let mut conn = self.store().acquire().await?;
        q::claim_event(&mut conn, id, now, lease_until).await
    }

    /// Gives up a claim taken with [`claim_event`](Self::claim_event)
    /// without counting a failed attempt (e.g. on shutdown): the event is
    /// due at `now` again, if it is undelivered and its next attempt time
    /// is still `lease_until` (nobody has claimed or rescheduled it since).
    /// Returns whether it was released.
    ///
    /// # Errors
    ///
    /// [`VaultError::Database`].
    pub async fn release_event(
        &self,
        id: i64,
        lease_until: i64,
        now: i64,
    ) -> Result<bool, VaultError> {
        let mut conn = self.store().acquire().await?;
        q::release_event(&mut conn, id, lease_until, now).await
    }
}
