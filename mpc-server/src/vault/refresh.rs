//! The refresh steps: a refreshed share is stored ready, confirmed, then
//! made final.

use mpc_core::{KeyId, KeyShare};

use super::{epoch_payload, same_owner, Vault, VaultError};
use super::{Event, KeyRecord, KeyStatus, ShareState};
use crate::store::commit;
use crate::store::queries::{self as q, Epochs};

impl Vault {
    /// Refresh step "ready": in one transaction, deletes the key's shares
    /// and presignatures of epochs `>= share.epoch()` (left over from an
    /// earlier, cut refresh) and stores `share` in state ready.
    ///
    /// # Errors
    ///
    /// [`VaultError::NotFound`] if the key does not exist;
    /// [`VaultError::Conflict`] if the share is of another key, not newer
    /// than the key's epoch, or the key is revoked; [`VaultError::Database`];
    /// [`VaultError::Seal`].
    pub async fn store_refreshed(
        &self,
        key: &KeyRecord,
        share: &KeyShare,
        now: i64,
    ) -> Result<(), VaultError> {
        if *share.key_id() != key.key_id {
            return Err(VaultError::Conflict("the share is of another key"));
        }
        let sealed = self.seal_share(&key.owner, share).await?;
        let mut tx = self.store().begin().await?;
        let current = q::lock_live_key(&mut tx, &key.key_id).await?;
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

    /// Refresh step "confirmed": the share of `epoch` goes from ready to
    /// confirmed (a confirmed or final share is left as it is).
    ///
    /// # Errors
    ///
    /// [`VaultError::NotFound`] if there is no share of that epoch;
    /// [`VaultError::Database`].
    pub async fn confirm_refreshed(&self, key_id: &KeyId, epoch: u64) -> Result<(), VaultError> {
        let mut conn = self.store().acquire().await?;
        let ready = Some(ShareState::Ready);
        if q::set_share_state(&mut conn, key_id, epoch, ready, ShareState::Confirmed).await? {
            Ok(())
        } else {
            Err(VaultError::NotFound)
        }
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
    /// session just produced: in the same transaction, checks that the
    /// stored share of its epoch is this very share (same refresh
    /// transcript), so that a concurrent refresh of the key on another
    /// server process, which may have replaced it, is never finalized in
    /// its place.
    ///
    /// # Errors
    ///
    /// As [`finalize_epoch`](Self::finalize_epoch), plus
    /// [`VaultError::Conflict`] if the stored share is another one.
    pub async fn finalize_refreshed(
        &self,
        share: &KeyShare,
        event: Event<'_>,
        now: i64,
    ) -> Result<(), VaultError> {
        self.finalize(share.key_id(), share.epoch(), Some(share), event, now)
            .await
    }

    async fn finalize(
        &self,
        key_id: &KeyId,
        epoch: u64,
        expected: Option<&KeyShare>,
        event: Event<'_>,
        now: i64,
    ) -> Result<(), VaultError> {
        let mut tx = self.store().begin().await?;
        let key = q::lock_key(&mut tx, key_id)
            .await?
            .ok_or(VaultError::NotFound)?;
        if let Some(expected) = expected {
            let (_, sealed) = q::share(&mut tx, key_id, epoch)
                .await?
                .ok_or(VaultError::NotFound)?;
            let stored = self.open_share(key_id, &key.owner, epoch, &sealed).await?;
            if stored.transcript_hash() != expected.transcript_hash() {
                return Err(VaultError::Conflict(
                    "another refresh replaced this epoch's share",
                ));
            }
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
