//! The webhook outbox: due events, delivery results and claims.

use super::{OutboxEvent, Vault, VaultError};
use crate::store::queries as q;

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

    /// Marks an outbox event delivered.
    ///
    /// # Errors
    ///
    /// [`VaultError::NotFound`] if there is no such event;
    /// [`VaultError::Database`].
    pub async fn mark_delivered(&self, id: i64, now: i64) -> Result<(), VaultError> {
        let mut conn = self.store().acquire().await?;
        if q::mark_delivered(&mut conn, id, now).await? {
            Ok(())
        } else {
            Err(VaultError::NotFound)
        }
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
    /// undelivered and due at `now`, its next attempt time becomes
    /// `lease_until`, in one conditional update, and the result is `true`.
    /// Of concurrent callers (from any number of server processes on one
    /// database) at most one gets `true` until the lease runs out, so
    /// deliverers rarely send the same event twice. `false` if the event is
    /// delivered, not due (e.g. claimed by another deliverer) or absent.
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
