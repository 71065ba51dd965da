//! Presignatures, ECDSA (PROTOCOL.md §14.3) and BIP340 (§20.5): stored
//! sealed, taken at most once, each scheme only by its own online step.

use mpc_core::derive::DerivationPath;
use mpc_core::sign::{ClaimRefused, PresignatureGuard};
use mpc_core::wire::SessionId;
use mpc_core::{
    KeyId, KeyShare, OnlineSign, Prehash, Presignature, SchnorrOnline, SchnorrPresignature, Taproot,
};
use zeroize::Zeroizing;

use super::rollback::rolled_back;
use super::{open_error, same_owner, KeyRecord, Quota, Vault, VaultError};
use crate::seal::{self, share_aad, RecordKind};
use crate::store::queries as q;
use crate::store::{commit, tombstones};

/// A presignature the vault stores: its scheme (the table's `scheme`
/// column) and sealing kind keep the two schemes apart twice over, so a
/// presignature of one scheme is never opened as the other.
pub trait StoredPresignature: Sized {
    /// The `scheme` column value.
    const SCHEME: &'static str;
    /// The sealed record's kind (in its associated data).
    const KIND: RecordKind;
    /// The key it signs for.
    fn key_id(&self) -> &KeyId;
    /// The epoch of the shares it was made with.
    fn epoch(&self) -> u64;
    /// Its session id, the row's primary key.
    fn session_id(&self) -> SessionId;
    /// The stored encoding.
    fn to_bytes(&self) -> Zeroizing<Vec<u8>>;
    /// Decodes the stored encoding.
    ///
    /// # Errors
    ///
    /// The decoding errors of the scheme's `from_bytes`.
    fn from_bytes(bytes: &[u8]) -> Result<Self, mpc_core::Error>;
}

macro_rules! stored_presignature {
    ($ty:ty, $scheme:literal, $kind:expr) => {
        impl StoredPresignature for $ty {
            const SCHEME: &'static str = $scheme;
            const KIND: RecordKind = $kind;
            fn key_id(&self) -> &KeyId {
                <$ty>::key_id(self)
            }
            fn epoch(&self) -> u64 {
                <$ty>::epoch(self)
            }
            fn session_id(&self) -> SessionId {
                <$ty>::session_id(self)
            }
            fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
                <$ty>::to_bytes(self)
            }
            fn from_bytes(bytes: &[u8]) -> Result<Self, mpc_core::Error> {
                <$ty>::from_bytes(bytes)
            }
        }
    };
}

stored_presignature!(Presignature, "ecdsa", RecordKind::Presignature);
stored_presignature!(
    SchnorrPresignature,
    "bip340",
    RecordKind::SchnorrPresignature
);

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
    pub async fn store_presignature<P: StoredPresignature>(
        &self,
        key: &KeyRecord,
        presignature: &P,
        now: i64,
    ) -> Result<(), VaultError> {
        self.store_presignature_limited(key, presignature, None, now)
            .await
    }

    /// [`store_presignature`](Self::store_presignature) within the
    /// presignature quota: refused, storing nothing, if the key's owner
    /// already has `max_unused` unused presignatures (of every scheme and
    /// key). The count and the insert are one step for every server process
    /// on the database (PROTOCOL.md §18.5).
    ///
    /// # Errors
    ///
    /// [`VaultError::QuotaReached`] with [`Quota::Presignatures`]; as
    /// [`store_presignature`](Self::store_presignature).
    pub async fn store_presignature_within<P: StoredPresignature>(
        &self,
        key: &KeyRecord,
        presignature: &P,
        max_unused: u64,
        now: i64,
    ) -> Result<(), VaultError> {
        self.store_presignature_limited(key, presignature, Some(max_unused), now)
            .await
    }

    async fn store_presignature_limited<P: StoredPresignature>(
        &self,
        key: &KeyRecord,
        presignature: &P,
        max_unused: Option<u64>,
        now: i64,
    ) -> Result<(), VaultError> {
        if *presignature.key_id() != key.key_id {
            return Err(VaultError::Conflict("the presignature is of another key"));
        }
        let session = presignature.session_id();
        let epoch = presignature.epoch();
        let aad = share_aad(P::KIND, &key.key_id, &key.owner, epoch, &session.0);
        let sealed = seal::seal(&*self.inner.kek, &presignature.to_bytes(), &aad)
            .await
            .map_err(VaultError::Seal)?;
        let mut tx = self.store().begin().await?;
        self.within_quota(&mut tx, &key.owner, Quota::Presignatures, max_unused)
            .await?;
        let current = q::lock_live_key(&mut tx, &key.key_id).await?;
        same_owner(&current, key)?;
        if epoch < current.epoch {
            return Err(VaultError::Conflict(
                "the presignature is of a superseded epoch",
            ));
        }
        // A session id spent before (its row since deleted) stays spent.
        if tombstones::presignature_spent(&mut tx, &hex::encode(session.0)).await?
            || !q::insert_presignature(
                &mut tx,
                (&session.0, P::SCHEME),
                &key.key_id,
                epoch,
                &sealed,
                now,
            )
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
            .claim_presignature::<Presignature>(key, session_id, now)
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
    /// of another key or another scheme than `P`'s (which it leaves unused).
    ///
    /// # Errors
    ///
    /// [`VaultError::RolledBack`] if the row found unused is one that was
    /// spent or deleted before, or is of an epoch below the key's floor
    /// (the restored ciphertext is erased all the same);
    /// [`VaultError::CorruptRecord`] if the claimed record does not open or
    /// decode to this key's presignature of that session (it is used up
    /// all the same); [`VaultError::Database`]; [`VaultError::Seal`].
    pub async fn claim_presignature<P: StoredPresignature>(
        &self,
        key: &KeyRecord,
        session_id: &SessionId,
        now: i64,
    ) -> Result<Option<ClaimedPresignature<P>>, VaultError> {
        let mut tx = self.store().begin().await?;
        let Some((epoch, sealed)) =
            q::claim_presignature(&mut tx, (&session_id.0, P::SCHEME), &key.key_id, now).await?
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
        let aad = share_aad(P::KIND, &key.key_id, &key.owner, epoch, &session_id.0);
        let bytes = seal::open(&*self.inner.kek, &sealed, &aad)
            .await
            .map_err(open_error("presignature"))?;
        let presignature =
            P::from_bytes(&bytes).map_err(|_| VaultError::CorruptRecord("presignature"))?;
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
pub struct ClaimedPresignature<P> {
    presignature: P,
    claim: DbClaim,
}

impl<P: StoredPresignature> ClaimedPresignature<P> {
    /// The epoch of the shares it was made with.
    #[must_use]
    pub fn epoch(&self) -> u64 {
        self.presignature.epoch()
    }
}

impl ClaimedPresignature<Presignature> {
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

impl ClaimedPresignature<SchnorrPresignature> {
    /// The BIP340 online round for `message` with `share` (PROTOCOL.md
    /// §20.5): `SchnorrOnline::new` checks the share, path and Taproot
    /// setting and asks this claim's guard, as for ECDSA.
    ///
    /// # Errors
    ///
    /// The errors of [`SchnorrOnline::new`].
    pub fn into_online_schnorr<'a>(
        self,
        share: &'a KeyShare,
        message: &[u8],
        path: &DerivationPath,
        taproot: Taproot,
    ) -> Result<SchnorrOnline<'a>, mpc_core::Error> {
        let Self {
            presignature,
            mut claim,
        } = self;
        SchnorrOnline::new(share, presignature, message, path, taproot, &mut claim)
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
