//! The refresh steps: a refreshed share is stored ready, confirmed, then
//! made final, each under the key's refresh lease (PROTOCOL.md §18.1).

use std::fmt;
use std::time::Duration;

use mpc_core::{KeyId, KeyShare};
use rand_core::{OsRng, RngCore};
use tracing::warn;

use super::{epoch_payload, same_owner, Vault, VaultError};
use super::{Event, KeyRecord, KeyStatus, ShareState};
use crate::seal::SealError;
use crate::store::lease;
use crate::store::queries::{self as q, Epochs};
use crate::store::{commit, Tx};

/// The right to run one refresh of one key, across every server process
/// on the database (PROTOCOL.md §18.1). Taken with
/// [`Vault::take_refresh_lease`]; every durable refresh step checks, in its
/// own transaction, that the lease is still this one's and extends it.
///
/// Give it back with [`release`](Self::release). Dropped unreleased (a
/// cancelled or panicking session), it is released in the background if a
/// Tokio runtime is running, else it simply expires.
pub struct RefreshLease {
    vault: Vault,
    key_id: KeyId,
    /// Random per session: the lease row's `holder`.
    holder: String,
    ttl_ms: i64,
    released: bool,
}

impl fmt::Debug for RefreshLease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefreshLease")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl RefreshLease {
    /// The key this lease is for.
    #[must_use]
    pub fn key_id(&self) -> &KeyId {
        &self.key_id
    }

    /// Gives the lease back, so that the next refresh of the key need not
    /// wait for it to expire. Cancelled or failed, it is tried again in the
    /// background when the lease drops (as for a lease never released).
    ///
    /// # Errors
    ///
    /// [`VaultError::Database`]; the lease then expires unless the retry
    /// gives it back.
    pub async fn release(mut self) -> Result<(), VaultError> {
        let result = release_lease(&self.vault, &self.key_id, &self.holder).await;
        // Only once given back: cancelled or failed, the drop tries again
        // in the background.
        self.released = result.is_ok();
        result
    }

    /// In `tx`: fails unless this session still holds the lease, and
    /// extends it by its time to live from `now`.
    async fn renew(&self, tx: &mut Tx, now: i64) -> Result<(), VaultError> {
        let expires_at = now.saturating_add(self.ttl_ms);
        if lease::renew(tx, &self.key_id, &self.holder, expires_at).await? {
            Ok(())
        } else {
            Err(VaultError::Conflict(
                "the refresh lease was lost to another session",
            ))
        }
    }
}

async fn release_lease(vault: &Vault, key_id: &KeyId, holder: &str) -> Result<(), VaultError> {
    let mut conn = vault.store().acquire().await?;
    // `false`: taken over after expiring; the new holder keeps it.
    lease::release(&mut conn, key_id, holder).await?;
    Ok(())
}

impl Drop for RefreshLease {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let vault = self.vault.clone();
        let key_id = self.key_id;
        let holder = std::mem::take(&mut self.holder);
        runtime.spawn(async move {
            if let Err(error) = release_lease(&vault, &key_id, &holder).await {
                warn!(%key_id, %error, "could not release a refresh lease; it will expire");
            }
        });
    }
}

/// The stored share of `share`'s epoch is `share` itself (same refresh
/// transcript), not one that a concurrent or later refresh wrote.
async fn check_is_stored(
    vault: &Vault,
    tx: &mut Tx,
    key: &KeyRecord,
    share: &KeyShare,
) -> Result<ShareState, VaultError> {
    let (state, sealed) = q::share(tx, &key.key_id, share.epoch())
        .await?
        .ok_or(VaultError::NotFound)?;
    let stored = vault
        .open_share(&key.key_id, &key.owner, share.epoch(), &sealed)
        .await?;
    if stored.transcript_hash() == share.transcript_hash() {
        Ok(state)
    } else {
        Err(VaultError::Conflict(
            "another refresh replaced this epoch's share",
        ))
    }
}

impl Vault {
    /// Takes the refresh lease of `key_id` for `ttl` from `now` (unix
    /// milliseconds): `None` while another session holds an unexpired one.
    /// `ttl` must exceed the longest a refresh session may run (the session
    /// timeout), so that a live session never loses its lease; each durable
    /// step extends it by `ttl` again.
    ///
    /// The caller checks the key's ownership first: whether a refresh is
    /// running must not be learnt about another owner's key.
    ///
    /// # Errors
    ///
    /// [`VaultError::Database`] (also if the key does not exist);
    /// [`VaultError::Seal`] if no random holder token can be drawn.
    pub async fn take_refresh_lease(
        &self,
        key_id: &KeyId,
        ttl: Duration,
        now: i64,
    ) -> Result<Option<RefreshLease>, VaultError> {
        let mut token = [0u8; 16];
        OsRng
            .try_fill_bytes(&mut token)
            .map_err(|_| VaultError::Seal(SealError::Random))?;
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        let holder = hex::encode(token);
        let mut conn = self.store().acquire().await?;
        let expires_at = now.saturating_add(ttl_ms);
        if !lease::take(&mut conn, key_id, &holder, now, expires_at).await? {
            return Ok(None);
        }
        Ok(Some(RefreshLease {
            vault: self.clone(),
            key_id: *key_id,
            holder,
            ttl_ms,
            released: false,
        }))
    }

    /// Refresh step "ready": in one transaction, checks that `lease` is
    /// still held (extending it), deletes the key's shares and
    /// presignatures of epochs `>= share.epoch()` (left over from an
    /// earlier refresh that was cut: under the lease no other refresh of
    /// the key is running) and stores `share` in state ready.
    ///
    /// # Errors
    ///
    /// [`VaultError::NotFound`] if the key does not exist;
    /// [`VaultError::Conflict`] if the lease was lost or is another key's,
    /// the share is of another key, not newer than the key's epoch, or the
    /// key is revoked; [`VaultError::Database`]; [`VaultError::Seal`].
    pub async fn store_refreshed(
        &self,
        lease: &RefreshLease,
        key: &KeyRecord,
        share: &KeyShare,
        now: i64,
    ) -> Result<(), VaultError> {
        if *share.key_id() != key.key_id || lease.key_id != key.key_id {
            return Err(VaultError::Conflict("the share is of another key"));
        }
        let sealed = self.seal_share(&key.owner, share).await?;
        let mut tx = self.store().begin().await?;
        let current = q::lock_live_key(&mut tx, &key.key_id).await?;
        lease.renew(&mut tx, now).await?;
        same_owner(&current, key)?;
        if share.epoch() <= current.epoch {
            return Err(VaultError::Conflict(
                "a refreshed share must be newer than the key's epoch",
            ));
        }
        q::delete_shares(&mut tx, &key.key_id, Epochs::From(share.epoch())).await?;
        q::delete_presignatures(&mut tx, &key.key_id, Epochs::From(share.epoch())).await?;
        q::insert_share(
            &mut tx,
            &key.key_id,
            share.epoch(),
            ShareState::Ready,
            &sealed,
            now,
        )
        .await?;
        commit(tx).await
    }

    /// Refresh step "confirmed", in one transaction: checks that `lease` is
    /// still held (extending it) and that the stored share of `share`'s
    /// epoch is `share` itself (same transcript), then moves it from ready
    /// to confirmed (a confirmed or final share is left as it is). Another
    /// session's share is never confirmed in place of this one's.
    ///
    /// # Errors
    ///
    /// [`VaultError::NotFound`] if the key or the share of that epoch is
    /// absent; [`VaultError::Conflict`] if the lease was lost or another
    /// refresh's share is stored; [`VaultError::Database`];
    /// [`VaultError::CorruptRecord`].
    pub async fn confirm_refreshed(
        &self,
        lease: &RefreshLease,
        share: &KeyShare,
        now: i64,
    ) -> Result<(), VaultError> {
        let key_id = share.key_id();
        if lease.key_id != *key_id {
            return Err(VaultError::Conflict("the share is of another key"));
        }
        let mut tx = self.store().begin().await?;
        let key = q::lock_key(&mut tx, key_id)
            .await?
            .ok_or(VaultError::NotFound)?;
        lease.renew(&mut tx, now).await?;
        check_is_stored(self, &mut tx, &key, share).await?;
        let ready = Some(ShareState::Ready);
        q::set_share_state(&mut tx, key_id, share.epoch(), ready, ShareState::Confirmed).await?;
        commit(tx).await
    }

    /// Refresh step "final", in one transaction: the share of `epoch`
    /// becomes final, shares and presignatures of lower epochs are deleted,
    /// the key's epoch becomes `epoch` and its status active (clearing
    /// rotation-required and banned), with the audit `event` and the webhook
    /// event `key.refreshed`. Does nothing if `epoch` is already the key's
    /// final epoch.
    ///
    /// # Errors
    ///
    /// [`VaultError::NotFound`] if the key or the share of `epoch` is absent;
    /// [`VaultError::Conflict`] if `epoch` is older than the key's epoch or
    /// the key is revoked; [`VaultError::Database`].
    pub async fn finalize_epoch(
        &self,
        key_id: &KeyId,
        epoch: u64,
        event: Event<'_>,
        now: i64,
    ) -> Result<(), VaultError> {
        self.finalize(key_id, epoch, None, event, now).await
    }

    /// [`finalize_epoch`](Self::finalize_epoch) for the share a refresh
    /// session just produced: in the same transaction, checks that `lease`
    /// is still held and that the stored share of its epoch is this very
    /// share (same refresh transcript), so that a share another refresh
    /// stored is never finalized in its place.
    ///
    /// # Errors
    ///
    /// As [`finalize_epoch`](Self::finalize_epoch), plus
    /// [`VaultError::Conflict`] if the lease was lost or the stored share is
    /// another one.
    pub async fn finalize_refreshed(
        &self,
        lease: &RefreshLease,
        share: &KeyShare,
        event: Event<'_>,
        now: i64,
    ) -> Result<(), VaultError> {
        if lease.key_id != *share.key_id() {
            return Err(VaultError::Conflict("the share is of another key"));
        }
        self.finalize(
            share.key_id(),
            share.epoch(),
            Some((lease, share)),
            event,
            now,
        )
        .await
    }

    async fn finalize(
        &self,
        key_id: &KeyId,
        epoch: u64,
        expected: Option<(&RefreshLease, &KeyShare)>,
        event: Event<'_>,
        now: i64,
    ) -> Result<(), VaultError> {
        let mut tx = self.store().begin().await?;
        let key = q::lock_key(&mut tx, key_id)
            .await?
            .ok_or(VaultError::NotFound)?;
        if let Some((lease, share)) = expected {
            lease.renew(&mut tx, now).await?;
            check_is_stored(self, &mut tx, &key, share).await?;
        }
        let states = q::share_epochs(&mut tx, key_id).await?;
        let Some(&(_, state)) = states.iter().find(|(e, _)| *e == epoch) else {
            return Err(VaultError::NotFound);
        };
        if state == ShareState::Final && key.epoch == epoch {
            return Ok(());
        }
        if key.status == KeyStatus::Revoked {
            return Err(VaultError::Conflict("the key is revoked"));
        }
        if epoch < key.epoch {
            return Err(VaultError::Conflict(
                "the epoch is older than the key's epoch",
            ));
        }
        q::set_share_state(&mut tx, key_id, epoch, None, ShareState::Final).await?;
        q::delete_shares(&mut tx, key_id, Epochs::Below(epoch)).await?;
        q::delete_presignatures(&mut tx, key_id, Epochs::Below(epoch)).await?;
        q::set_epoch_and_status(&mut tx, key_id, epoch, KeyStatus::Active).await?;
        q::insert_audit(&mut tx, key_id, &key.owner, now, event.name, &event.detail).await?;
        q::insert_outbox(
            &mut tx,
            "key.refreshed",
            key_id,
            epoch_payload(&key, epoch),
            now,
        )
        .await?;
        commit(tx).await
    }
}
