//! Presignatures: stored sealed, taken at most once.

use mpc_core::sign::{ClaimRefused, PresignatureGuard};
use mpc_core::wire::SessionId;
use mpc_core::{KeyId, KeyShare, OnlineSign, Prehash, Presignature};

use super::rollback::rolled_back;
use super::{open_error, same_owner, KeyRecord, Vault, VaultError};
use crate::seal::{self, share_aad, RecordKind};
use crate::store::queries as q;
use crate::store::{commit, tombstones};

impl Vault {
    /// Stores an unused presignature of the key, sealed and bound to its
    /// session id.
    ///
    /// # Errors
    ///
    /// [`VaultError::NotFound`] if the key does not exist;
    /// [`VaultError::Conflict`] if the presignature is of another key or of
    /// an epoch older than the key's, its session id is stored or spent
    /// already, or the key is revoked; [`VaultError::Database`]; [`VaultError::Seal`].
    pub async fn store_presignature(
        &self,
        key: &KeyRecord,
        presignature: &Presignature,
        now: i64,
    ) -> Result<(), VaultError> {
        if *presignature.key_id() != key.key_id {
            return Err(VaultError::Conflict("the presignature is of another key"));
        }
        let session = presignature.session_id();
        let epoch = presignature.epoch();
        let aad = share_aad(
            RecordKind::Presignature,
            &key.key_id,
            &key.owner,
            epoch,
            &session.0,
        );
        let sealed = seal::seal(&*self.inner.kek, &presignature.to_bytes(), &aad)
            .await
            .map_err(VaultError::Seal)?;
        let mut tx = self.store().begin().await?;
        let current = q::lock_live_key(&mut tx, &key.key_id).await?;
        same_owner(&current, key)?;
        if epoch < current.epoch {
            return Err(VaultError::Conflict(
                "the presignature is of a superseded epoch",
            ));
        }
        // A session id spent before (its row since deleted) stays spent.
        if tombstones::presignature_spent(&mut tx, &hex::encode(session.0)).await?
            || !q::insert_presignature(&mut tx, &session.0, &key.key_id, epoch, &sealed, now)
                .await?
        {
            return Err(VaultError::Conflict("the presignature exists"));
        }
        commit(tx).await
    }

    /// [`claim_presignature`](Self::claim_presignature) without the claim
    /// token: for the storage tests, which look at the presignature only.
    #[cfg(test)]
    pub(crate) async fn take_presignature(
        &self,
        key: &KeyRecord,
        session_id: &SessionId,
        now: i64,
    ) -> Result<Option<Presignature>, VaultError> {
        Ok(self
            .claim_presignature(key, session_id, now)
            .await?
            .map(|claimed| claimed.presignature))
    }

    /// Atomically claims an unused presignature of the key: the row is
    /// marked used (`used_at = now`), its ciphertext deleted and its
    /// session id tombstoned as spent in one transaction, so that of any
    /// number of concurrent calls (from any number of server processes on
    /// one database) exactly one gets it, and a copy of the row written
    /// back later is refused (PROTOCOL.md §18.4). Returns the decrypted
    /// presignature with the proof of that claim, the only way the server
    /// can start its online step (§14.3); `None` if it is unknown, used, or
    /// of another key.
    ///
    /// # Errors
    ///
    /// [`VaultError::RolledBack`] if the row found unused is one that was
    /// spent or deleted before, or is of an epoch below the key's floor
    /// (the restored ciphertext is erased all the same);
    /// [`VaultError::CorruptRecord`] if the claimed record does not open or
    /// decode to this key's presignature of that session (it is used up
    /// all the same); [`VaultError::Database`]; [`VaultError::Seal`].
    pub async fn claim_presignature(
        &self,
        key: &KeyRecord,
        session_id: &SessionId,
        now: i64,
    ) -> Result<Option<ClaimedPresignature>, VaultError> {
        let mut tx = self.store().begin().await?;
        let Some((epoch, sealed)) =
            q::claim_presignature(&mut tx, &session_id.0, &key.key_id, now).await?
        else {
            return Ok(None);
        };
        // After the claim's update, which holds the row: a tombstone already
        // there cannot be a concurrent claim's, so the row was written back.
        let fresh =
            tombstones::spend_presignature(&mut tx, &hex::encode(session_id.0), &key.key_id)
                .await?;
        let floor = tombstones::epoch_floor(&mut tx, &key.key_id).await?;
        // Committed either way: a restored ciphertext is erased too.
        commit(tx).await?;
        if !fresh {
            return Err(rolled_back(&key.key_id, epoch, "a spent presignature"));
        }
        if epoch < floor.max(key.epoch) {
            return Err(rolled_back(
                &key.key_id,
                epoch,
                "a presignature of a retired epoch",
            ));
        }
        let aad = share_aad(
            RecordKind::Presignature,
            &key.key_id,
            &key.owner,
            epoch,
            &session_id.0,
        );
        let bytes = seal::open(&*self.inner.kek, &sealed, &aad)
            .await
            .map_err(open_error("presignature"))?;
        let presignature = Presignature::from_bytes(&bytes)
            .map_err(|_| VaultError::CorruptRecord("presignature"))?;
        if *presignature.key_id() != key.key_id
            || presignature.epoch() != epoch
            || presignature.session_id() != *session_id
        {
            return Err(VaultError::CorruptRecord("presignature"));
        }
        Ok(Some(ClaimedPresignature {
            claim: DbClaim {
                key_id: key.key_id,
                epoch,
                session: *session_id,
                confirmed: false,
            },
            presignature,
        }))
    }
}

/// A presignature whose row this process claimed in the database
/// ([`Vault::claim_presignature`]): the only value from which the server
/// starts an online step.
pub struct ClaimedPresignature {
    presignature: Presignature,
    claim: DbClaim,
}

impl ClaimedPresignature {
    /// The epoch of the shares it was made with.
    #[must_use]
    pub fn epoch(&self) -> u64 {
        self.presignature.epoch()
    }

    /// The online step for `prehash` with `share` (PROTOCOL.md §14.3):
    /// `OnlineSign::new` checks the share and asks this claim's guard, which
    /// confirms the database claim once, for this session id only.
    ///
    /// # Errors
    ///
    /// The errors of [`OnlineSign::new`]: a burned share, a share of another
    /// key or epoch.
    pub fn into_online_sign(
        self,
        share: &KeyShare,
        prehash: Prehash,
    ) -> Result<OnlineSign, mpc_core::Error> {
        let Self {
            presignature,
            mut claim,
        } = self;
        OnlineSign::new(share, presignature, prehash, &mut claim)
    }
}

/// The guard of one claimed row. The claim itself is the database
/// transaction of [`Vault::claim_presignature`] (async, so it cannot run
/// inside the core's synchronous `claim`); this value exists only after it
/// committed, and answers `Ok` once, for exactly that presignature.
struct DbClaim {
    key_id: KeyId,
    epoch: u64,
    session: SessionId,
    confirmed: bool,
}

impl PresignatureGuard for DbClaim {
    fn claim(
        &mut self,
        key_id: &KeyId,
        epoch: u64,
        session: &SessionId,
    ) -> Result<(), ClaimRefused> {
        let same = *key_id == self.key_id && epoch == self.epoch && *session == self.session;
        if !same || self.confirmed {
            return Err(ClaimRefused::AlreadyClaimed);
        }
        self.confirmed = true;
        Ok(())
    }
}
