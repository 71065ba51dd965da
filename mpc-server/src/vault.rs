//! The server's storage facade: typed shares in, typed shares out.
//!
//! A [`Vault`] stores key records, sealed key shares and presignatures, the
//! audit log, the webhook outbox and backups in SQL ([`crate::store`]),
//! sealing every secret with envelope encryption ([`crate::seal`]) under a
//! key-encryption key. Each sealed record's associated data binds its kind,
//! key id, owner and epoch (presignatures also their session id), so a
//! ciphertext copied to another row does not open.
//!
//! Every change that has an audit entry or a webhook event writes them in
//! the same transaction as the change itself. Nothing secret is logged or
//! put in errors; decrypted secrets are held in zeroizing buffers.

use std::fmt;
use std::sync::Arc;

use k256::elliptic_curve::sec1::ToEncodedPoint;
use mpc_core::wire::SessionId;
use mpc_core::{KeyId, KeyShare, Presignature};
use serde_json::json;

use crate::seal::{self, share_aad, Kek, RecordKind, SealError};
use crate::store::queries::{self as q, Epochs, KeyTime};
use crate::store::{commit, Store, Tx};

pub use crate::store::records::{
    AuditEntry, Event, KeyRecord, KeyStatus, OutboxEvent, ShareState, StoredShare,
};

const KEK_CHECK_NAME: &str = "kek_check";
const KEK_CHECK_PLAINTEXT: &[u8] = b"mpc-server master key check v1";

/// Errors of the [`Vault`]. Messages never contain secrets.
#[non_exhaustive]
#[derive(thiserror::Error, Debug)]
pub enum VaultError {
    /// The database failed or is unreachable (the message names what failed,
    /// without values or connection strings).
    #[error("database error: {0}")]
    Database(String),
    /// The master key does not open the database's check value.
    #[error("MPC_MASTER_KEY does not match the key this database was created with")]
    WrongMasterKey,
    /// A stored record fails to open or decode (tampered, moved to another
    /// row, or damaged); names which kind of record.
    #[error("corrupt stored record: {0}")]
    CorruptRecord(&'static str),
    /// The key, share, epoch or event does not exist.
    #[error("not found")]
    NotFound,
    /// The change conflicts with the stored state (e.g. the key exists, the
    /// presignature exists, the key is revoked).
    #[error("conflict: {0}")]
    Conflict(&'static str),
    /// Sealing failed (key-encryption key backend, randomness).
    #[error("sealing failed: {0}")]
    Seal(SealError),
}

/// The server's storage: cheap to clone (shared pool and key).
#[derive(Clone)]
pub struct Vault {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    kek: Arc<dyn Kek>,
}

impl fmt::Debug for Vault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vault")
            .field("backend", &self.backend())
            .field("kek", &self.inner.kek.id())
            .finish_non_exhaustive()
    }
}

/// Maps an error opening a sealed record of kind `what`.
fn open_error(what: &'static str) -> impl FnOnce(SealError) -> VaultError {
    move |e| match e {
        SealError::Decrypt | SealError::Malformed => VaultError::CorruptRecord(what),
        other => VaultError::Seal(other),
    }
}

fn kek_check_aad() -> Vec<u8> {
    share_aad(RecordKind::KekCheck, &KeyId([0; 32]), "", 0, b"")
}

async fn verify_kek(kek: &dyn Kek, stored: &[u8]) -> Result<(), VaultError> {
    match seal::open(kek, stored, &kek_check_aad()).await {
        Ok(plain) if plain.as_slice() == KEK_CHECK_PLAINTEXT => Ok(()),
        Ok(_) | Err(SealError::Malformed) => {
            Err(VaultError::CorruptRecord("master key check value"))
        }
        Err(SealError::Decrypt) => Err(VaultError::WrongMasterKey),
        Err(other) => Err(VaultError::Seal(other)),
    }
}

/// Checks that the caller's record is the stored key's (sealed records are
/// bound to the owner).
fn same_owner(current: &KeyRecord, given: &KeyRecord) -> Result<(), VaultError> {
    if current.owner == given.owner {
        Ok(())
    } else {
        Err(VaultError::Conflict(
            "the key record does not match the stored key",
        ))
    }
}

fn key_payload(key: &KeyRecord) -> serde_json::Value {
    json!({ "key_id": key.key_id.to_string(), "owner": key.owner })
}

fn epoch_payload(key: &KeyRecord, epoch: u64) -> serde_json::Value {
    json!({ "key_id": key.key_id.to_string(), "owner": key.owner, "epoch": epoch })
}

impl Vault {
    /// Opens (creating if needed) the database at `database_url`
    /// (`sqlite://PATH` or `postgres://...`), runs the migrations, and checks
    /// `kek` against the stored check value, writing one on first open. On a
    /// database that already has a check value, a wrong key is detected
    /// before migrating.
    ///
    /// # Errors
    ///
    /// [`VaultError::WrongMasterKey`] if `kek` is not the key the database
    /// was created with; [`VaultError::Database`] if the URL is not
    /// supported, the database is unreachable or a migration fails;
    /// [`VaultError::CorruptRecord`] if the check value is damaged;
    /// [`VaultError::Seal`] if the key backend fails.
    pub async fn open(database_url: &str, kek: Arc<dyn Kek>) -> Result<Self, VaultError> {
        let store = Store::connect(database_url).await?;
        // Before migrating: a database created with another key is refused
        // untouched. (On a new database the table does not exist yet and
        // the read fails: the check happens after migrating.)
        let existing = {
            let mut conn = store.acquire().await?;
            q::meta(&mut conn, KEK_CHECK_NAME).await.ok().flatten()
        };
        if let Some(stored) = existing {
            verify_kek(&*kek, &stored).await?;
        }
        store.migrate().await?;
        let mut conn = store.acquire().await?;
        let stored = match q::meta(&mut conn, KEK_CHECK_NAME).await? {
            Some(stored) => stored,
            None => {
                let sealed = seal::seal(&*kek, KEK_CHECK_PLAINTEXT, &kek_check_aad())
                    .await
                    .map_err(VaultError::Seal)?;
                q::insert_meta_if_absent(&mut conn, KEK_CHECK_NAME, &sealed).await?;
                q::meta(&mut conn, KEK_CHECK_NAME).await?.ok_or_else(|| {
                    VaultError::Database("the master key check value was not stored".into())
                })?
            }
        };
        drop(conn);
        verify_kek(&*kek, &stored).await?;
        tracing::info!(
            backend = store.backend().as_str(),
            kek = kek.id(),
            "storage opened"
        );
        Ok(Self {
            inner: Arc::new(Inner { store, kek }),
        })
    }

    pub(crate) fn store(&self) -> &Store {
        &self.inner.store
    }

    /// `"sqlite"` or `"postgres"`.
    #[must_use]
    pub fn backend(&self) -> &'static str {
        self.store().backend().as_str()
    }

    /// Checks that the database answers.
    ///
    /// # Errors
    ///
    /// [`VaultError::Database`] if it does not.
    pub async fn ping(&self) -> Result<(), VaultError> {
        self.store().ping().await
    }

    async fn seal_share(&self, owner: &str, share: &KeyShare) -> Result<Vec<u8>, VaultError> {
        let aad = share_aad(RecordKind::Share, share.key_id(), owner, share.epoch(), b"");
        seal::seal(&*self.inner.kek, &share.to_bytes(), &aad)
            .await
            .map_err(VaultError::Seal)
    }

    /// Stores a new key and its share (state final), with the audit entry
    /// `key.created` and the webhook event `key.created`, in one
    /// transaction.
    ///
    /// # Errors
    ///
    /// [`VaultError::Conflict`] if the key id exists; [`VaultError::Database`]
    /// or [`VaultError::Seal`] on failure.
    pub async fn create_key(
        &self,
        owner: &str,
        share: &KeyShare,
        now: i64,
    ) -> Result<KeyRecord, VaultError> {
        let public_key: [u8; 33] = share
            .public_key()
            .to_encoded_point(true)
            .as_bytes()
            .try_into()
            .map_err(|_| VaultError::CorruptRecord("public key"))?;
        let key = KeyRecord {
            key_id: *share.key_id(),
            owner: owner.to_owned(),
            public_key,
            chain_code: *share.chain_code(),
            epoch: share.epoch(),
            status: KeyStatus::Active,
            created_at: now,
            last_used_at: None,
            exported_at: None,
            backed_up_at: None,
        };
        let sealed = self.seal_share(owner, share).await?;
        let public_hex = hex::encode(public_key);
        let mut tx = self.store().begin().await?;
        if !q::insert_key(&mut tx, &key).await? {
            return Err(VaultError::Conflict("the key exists"));
        }
        q::insert_share(
            &mut tx,
            &key.key_id,
            key.epoch,
            ShareState::Final,
            &sealed,
            now,
        )
        .await?;
        let detail = json!({ "epoch": key.epoch, "public_key": public_hex });
        q::insert_audit(&mut tx, &key.key_id, owner, now, "key.created", &detail).await?;
        let payload = json!({
            "key_id": key.key_id.to_string(),
            "owner": owner,
            "public_key": public_hex,
            "epoch": key.epoch,
        });
        q::insert_outbox(&mut tx, "key.created", &key.key_id, payload, now).await?;
        commit(tx).await?;
        Ok(key)
    }

    /// The key's record, if it exists.
    ///
    /// # Errors
    ///
    /// [`VaultError::Database`]; [`VaultError::CorruptRecord`] for a damaged
    /// row.
    pub async fn key(&self, key_id: &KeyId) -> Result<Option<KeyRecord>, VaultError> {
        let mut conn = self.store().acquire().await?;
        q::key(&mut conn, key_id).await
    }

    /// The keys of `owner`, oldest first.
    ///
    /// # Errors
    ///
    /// As [`key`](Self::key).
    pub async fn keys_of(&self, owner: &str) -> Result<Vec<KeyRecord>, VaultError> {
        let mut conn = self.store().acquire().await?;
        q::keys_of(&mut conn, owner).await
    }

    /// The share of `epoch`, if held: decrypted, decoded with
    /// [`KeyShare::from_bytes_for`] and checked to be of that epoch.
    ///
    /// # Errors
    ///
    /// [`VaultError::CorruptRecord`] if the record does not open (tampered,
    /// moved from another row, wrong owner in `key`) or does not decode to a
    /// share of this key and epoch; [`VaultError::Database`];
    /// [`VaultError::Seal`] if the key backend fails.
    pub async fn share(
        &self,
        key: &KeyRecord,
        epoch: u64,
    ) -> Result<Option<StoredShare>, VaultError> {
        let row = {
            let mut conn = self.store().acquire().await?;
            q::share(&mut conn, &key.key_id, epoch).await?
        };
        let Some((state, sealed)) = row else {
            return Ok(None);
        };
        let aad = share_aad(RecordKind::Share, &key.key_id, &key.owner, epoch, b"");
        let bytes = seal::open(&*self.inner.kek, &sealed, &aad)
            .await
            .map_err(open_error("share"))?;
        let share = KeyShare::from_bytes_for(&bytes, &key.key_id)
            .map_err(|_| VaultError::CorruptRecord("share"))?;
        if share.epoch() != epoch {
            return Err(VaultError::CorruptRecord("share epoch"));
        }
        Ok(Some(StoredShare { share, state }))
    }

    /// The epochs of the key's stored shares and their states, ascending.
    ///
    /// # Errors
    ///
    /// [`VaultError::Database`]; [`VaultError::CorruptRecord`].
    pub async fn epochs(&self, key_id: &KeyId) -> Result<Vec<(u64, ShareState)>, VaultError> {
        let mut conn = self.store().acquire().await?;
        q::share_epochs(&mut conn, key_id).await
    }

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
            let aad = share_aad(RecordKind::Share, key_id, &key.owner, epoch, b"");
            let bytes = seal::open(&*self.inner.kek, &sealed, &aad)
                .await
                .map_err(open_error("share"))?;
            let stored = KeyShare::from_bytes_for(&bytes, key_id)
                .map_err(|_| VaultError::CorruptRecord("share"))?;
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

    /// Re-seals a changed share of an existing epoch (e.g. after
    /// [`KeyShare::burn_ot_material`]) and sets the key's `status`, with the
    /// audit `event` and, when the key becomes banned, the webhook event
    /// `key.banned`, in one transaction.
    ///
    /// # Errors
    ///
    /// [`VaultError::NotFound`] if the key or the share's epoch is absent;
    /// [`VaultError::Conflict`] if the share is of another key, the key is
    /// revoked, or `status` is [`KeyStatus::Revoked`] (use
    /// [`revoke`](Self::revoke)); [`VaultError::Database`];
    /// [`VaultError::Seal`].
    pub async fn replace_share(
        &self,
        key: &KeyRecord,
        share: &KeyShare,
        status: KeyStatus,
        event: Event<'_>,
        now: i64,
    ) -> Result<(), VaultError> {
        if *share.key_id() != key.key_id {
            return Err(VaultError::Conflict("the share is of another key"));
        }
        if status == KeyStatus::Revoked {
            return Err(VaultError::Conflict("revoke a key with Vault::revoke"));
        }
        let sealed = self.seal_share(&key.owner, share).await?;
        let mut tx = self.store().begin().await?;
        let current = q::lock_live_key(&mut tx, &key.key_id).await?;
        same_owner(&current, key)?;
        if !q::reseal_share(&mut tx, &key.key_id, share.epoch(), &sealed).await? {
            return Err(VaultError::NotFound);
        }
        self.apply_status(&mut tx, &current, status, event, now)
            .await?;
        commit(tx).await
    }

    /// Sets status, audit entry and (on becoming banned) the `key.banned`
    /// event inside `tx`.
    async fn apply_status(
        &self,
        tx: &mut Tx,
        current: &KeyRecord,
        status: KeyStatus,
        event: Event<'_>,
        now: i64,
    ) -> Result<(), VaultError> {
        let key_id = &current.key_id;
        if current.status != status {
            q::set_status(tx, key_id, status).await?;
        }
        q::insert_audit(tx, key_id, &current.owner, now, event.name, &event.detail).await?;
        if status == KeyStatus::Banned && current.status != KeyStatus::Banned {
            q::insert_outbox(tx, "key.banned", key_id, key_payload(current), now).await?;
        }
        Ok(())
    }

    /// Sets the key's status with the audit `event` and, when the key
    /// becomes banned, the webhook event `key.banned`, in one transaction.
    /// [`KeyStatus::Revoked`] does what [`revoke`](Self::revoke) does.
    ///
    /// # Errors
    ///
    /// [`VaultError::NotFound`] if the key does not exist;
    /// [`VaultError::Conflict`] if it is revoked; [`VaultError::Database`].
    pub async fn set_status(
        &self,
        key_id: &KeyId,
        status: KeyStatus,
        event: Event<'_>,
        now: i64,
    ) -> Result<(), VaultError> {
        if status == KeyStatus::Revoked {
            return self.revoke(key_id, event, now).await;
        }
        let mut tx = self.store().begin().await?;
        let current = q::lock_live_key(&mut tx, key_id).await?;
        self.apply_status(&mut tx, &current, status, event, now)
            .await?;
        commit(tx).await
    }

    /// Revokes the key, in one transaction: status revoked, all its shares
    /// and presignatures deleted, the audit `event`, the webhook event
    /// `key.revoked`. Revoking a revoked key does nothing.
    ///
    /// # Errors
    ///
    /// [`VaultError::NotFound`] if the key does not exist;
    /// [`VaultError::Database`].
    pub async fn revoke(
        &self,
        key_id: &KeyId,
        event: Event<'_>,
        now: i64,
    ) -> Result<(), VaultError> {
        let mut tx = self.store().begin().await?;
        let key = q::lock_key(&mut tx, key_id)
            .await?
            .ok_or(VaultError::NotFound)?;
        if key.status == KeyStatus::Revoked {
            return Ok(());
        }
        q::set_status(&mut tx, key_id, KeyStatus::Revoked).await?;
        q::delete_shares(&mut tx, key_id, Epochs::All).await?;
        q::delete_presignatures(&mut tx, key_id, Epochs::All).await?;
        q::insert_audit(&mut tx, key_id, &key.owner, now, event.name, &event.detail).await?;
        q::insert_outbox(&mut tx, "key.revoked", key_id, key_payload(&key), now).await?;
        commit(tx).await
    }

    /// Stores an unused presignature of the key, sealed and bound to its
    /// session id.
    ///
    /// # Errors
    ///
    /// [`VaultError::NotFound`] if the key does not exist;
    /// [`VaultError::Conflict`] if the presignature is of another key or of
    /// an epoch older than the key's, its session id is stored already, or
    /// the key is revoked; [`VaultError::Database`]; [`VaultError::Seal`].
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
        if !q::insert_presignature(&mut tx, &session.0, &key.key_id, epoch, &sealed, now).await? {
            return Err(VaultError::Conflict("the presignature exists"));
        }
        commit(tx).await
    }

    /// Atomically claims an unused presignature of the key: the row is
    /// marked used (`used_at = now`) and its ciphertext deleted in one
    /// transaction, so that of any number of concurrent calls (from any
    /// number of server processes on one database) exactly one gets it.
    /// Returns the decrypted presignature; `None` if it is unknown, used,
    /// or of another key.
    ///
    /// # Errors
    ///
    /// [`VaultError::CorruptRecord`] if the claimed record does not open or
    /// decode to this key's presignature of that session (it is used up
    /// all the same); [`VaultError::Database`]; [`VaultError::Seal`].
    pub async fn take_presignature(
        &self,
        key: &KeyRecord,
        session_id: &SessionId,
        now: i64,
    ) -> Result<Option<Presignature>, VaultError> {
        let mut tx = self.store().begin().await?;
        let Some((epoch, sealed)) =
            q::claim_presignature(&mut tx, &session_id.0, &key.key_id, now).await?
        else {
            return Ok(None);
        };
        commit(tx).await?;
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
        Ok(Some(presignature))
    }

    /// Records a use of the key (`last_used_at = now`).
    ///
    /// # Errors
    ///
    /// [`VaultError::NotFound`] if the key does not exist;
    /// [`VaultError::Database`].
    pub async fn touch(&self, key_id: &KeyId, now: i64) -> Result<(), VaultError> {
        let mut conn = self.store().acquire().await?;
        if q::set_time(&mut conn, key_id, KeyTime::LastUsed, now).await? {
            Ok(())
        } else {
            Err(VaultError::NotFound)
        }
    }

    /// Appends an audit entry on its own (for events with no stored change,
    /// e.g. a signature).
    ///
    /// # Errors
    ///
    /// [`VaultError::Database`].
    pub async fn audit(
        &self,
        key_id: &KeyId,
        owner: &str,
        event: Event<'_>,
        now: i64,
    ) -> Result<(), VaultError> {
        let mut conn = self.store().acquire().await?;
        q::insert_audit(&mut conn, key_id, owner, now, event.name, &event.detail).await
    }

    /// The key's audit log, oldest first.
    ///
    /// # Errors
    ///
    /// [`VaultError::Database`]; [`VaultError::CorruptRecord`].
    pub async fn audit_log(&self, key_id: &KeyId) -> Result<Vec<AuditEntry>, VaultError> {
        let mut conn = self.store().acquire().await?;
        q::audit_log(&mut conn, key_id).await
    }

    /// Marks the key exported (`exported_at = now`) with the audit `event`
    /// and the webhook event `key.exported`, in one transaction.
    ///
    /// # Errors
    ///
    /// [`VaultError::NotFound`] if the key does not exist;
    /// [`VaultError::Conflict`] if it is revoked; [`VaultError::Database`].
    pub async fn mark_exported(
        &self,
        key_id: &KeyId,
        event: Event<'_>,
        now: i64,
    ) -> Result<(), VaultError> {
        let mut tx = self.store().begin().await?;
        let key = q::lock_live_key(&mut tx, key_id).await?;
        q::set_time(&mut tx, key_id, KeyTime::Exported, now).await?;
        q::insert_audit(&mut tx, key_id, &key.owner, now, event.name, &event.detail).await?;
        q::insert_outbox(&mut tx, "key.exported", key_id, key_payload(&key), now).await?;
        commit(tx).await
    }

    /// Records a backup (public data: `backup` is encrypted to
    /// `recovery_key`) with `backed_up_at = now`, the audit entry
    /// `key.backed_up` and the webhook event `key.backed_up`, in one
    /// transaction.
    ///
    /// # Errors
    ///
    /// [`VaultError::NotFound`] if the key does not exist;
    /// [`VaultError::Conflict`] if it is revoked; [`VaultError::Database`].
    pub async fn record_backup(
        &self,
        key: &KeyRecord,
        epoch: u64,
        recovery_key: &[u8; 33],
        backup: &[u8],
        now: i64,
    ) -> Result<(), VaultError> {
        let mut tx = self.store().begin().await?;
        let current = q::lock_live_key(&mut tx, &key.key_id).await?;
        let key_id = &key.key_id;
        q::insert_backup(&mut tx, key_id, epoch, now, recovery_key, backup).await?;
        q::set_time(&mut tx, key_id, KeyTime::BackedUp, now).await?;
        let detail = json!({ "epoch": epoch, "recovery_key": hex::encode(recovery_key) });
        q::insert_audit(
            &mut tx,
            key_id,
            &current.owner,
            now,
            "key.backed_up",
            &detail,
        )
        .await?;
        q::insert_outbox(
            &mut tx,
            "key.backed_up",
            key_id,
            epoch_payload(&current, epoch),
            now,
        )
        .await?;
        commit(tx).await
    }

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
