//! The server's storage facade: typed shares in, typed shares out.
//!
//! A [`Vault`] stores key records, sealed key shares and presignatures, the
//! audit log, the webhook outbox and backups in SQL ([`crate::store`]),
//! sealing every secret with envelope encryption ([`crate::seal`]) under a
//! key-encryption key. Each sealed record's associated data binds its kind,
//! key id, owner and epoch (presignatures also their session id), so a
//! ciphertext copied to another row does not open. A record that leaves
//! the store (a claimed presignature, a deleted epoch, a share re-sealed
//! after a burn) leaves an insert-only tombstone in the same transaction,
//! checked on every load, so that its row written back later is refused
//! ([`VaultError::RolledBack`], PROTOCOL.md §18.4).
//!
//! Every change that has an audit entry or a webhook event writes them in
//! the same transaction as the change itself. Nothing secret is logged or
//! put in errors; decrypted secrets are held in zeroizing buffers.

mod gadgets;
mod keys;
mod outbox;
mod presignatures;
mod quotas;
mod refresh;
mod rollback;
mod uses;

use std::fmt;
use std::sync::Arc;

use mpc_core::{KeyId, KeyShare};
use serde_json::json;

use crate::auth::StepUpUse;
use crate::seal::{self, share_aad, Kek, RecordKind, SealError};
use crate::store::queries::{self as q, Epochs, KeyTime};
use crate::store::step_up as spent;
use crate::store::{commit, tombstones, Store, Tx};

pub use crate::store::records::{
    AuditEntry, Event, KeyPosition, KeyRecord, KeyStatus, OutboxEvent, ShareState, StoredShare,
};
pub(crate) use keys::spawn_reaper;
pub use keys::Confirmation;
pub use presignatures::{ClaimedPresignature, StoredPresignature};
pub use quotas::Quota;
pub use refresh::RefreshLease;

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
    /// The step-up token was already spent (PROTOCOL.md §19); nothing was
    /// changed.
    #[error("the step-up token was already used")]
    TokenSpent,
    /// A record that was retired (a claimed presignature, a deleted epoch,
    /// a share from before its OT material was burned) is back in the
    /// database: a row was restored or the database rolled back
    /// (PROTOCOL.md §18.4). The record is refused; names which kind. This
    /// is a security incident, logged as such where it is detected.
    #[error("rollback detected: {0} is back in the database")]
    RolledBack(&'static str),
    /// The owner already has as many of the quota's units as allowed
    /// (PROTOCOL.md §18.5); nothing was stored.
    #[error("quota reached: {0}")]
    QuotaReached(Quota),
}

/// The server's storage: cheap to clone (shared pool and key).
#[derive(Clone)]
pub struct Vault {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    kek: Arc<dyn Kek>,
    uses: uses::UseLog,
    gadgets: gadgets::GadgetCache,
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

/// Spends the step-up token, if any, inside `tx`: the operation that
/// commits `tx` is the one the token was used for, and if `tx` rolls back
/// the token stays unspent.
async fn spend(tx: &mut Tx, token: Option<&StepUpUse>, now: i64) -> Result<(), VaultError> {
    match token {
        Some(token) if !spent::spend(tx, token, now).await? => Err(VaultError::TokenSpent),
        _ => Ok(()),
    }
}

/// A backup to record ([`Vault::record_backup_spending`]); all public data.
#[derive(Debug, Clone, Copy)]
pub struct NewBackup<'a> {
    /// The share's epoch.
    pub epoch: u64,
    /// The recovery key it is encrypted to, SEC1 compressed.
    pub recovery_key: &'a [u8; 33],
    /// The backup (`Backup::to_bytes`).
    pub backup: &'a [u8],
    /// The recovery key came from the request, not the configuration: the
    /// share left the operator's control, so this counts as an export
    /// (`exported_at`, `key.exported`).
    pub counts_as_export: bool,
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
            inner: Arc::new(Inner {
                store,
                kek,
                uses: uses::UseLog::default(),
                gadgets: gadgets::GadgetCache::default(),
            }),
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

    /// Stores a new key and its share (state final) as active, with the
    /// audit entry `key.created` and the webhook event `key.created`, in one
    /// transaction. (A keygen stores its key pending instead: see
    /// [`create_pending_key`](Self::create_pending_key).)
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
        self.store_new_key(owner, share, KeyStatus::Active, None, now)
            .await
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

    /// Up to `limit` keys of `owner` after `after` (from the first if
    /// `None`), oldest first (by creation time, then id). Paging with the
    /// last key of each page returns every key that exists throughout
    /// exactly once, whatever is created or deleted between pages.
    ///
    /// # Errors
    ///
    /// As [`key`](Self::key).
    pub async fn keys_page(
        &self,
        owner: &str,
        after: Option<&KeyPosition>,
        limit: u32,
    ) -> Result<Vec<KeyRecord>, VaultError> {
        let mut conn = self.store().acquire().await?;
        q::keys_page(&mut conn, owner, after, i64::from(limit)).await
    }

    /// The share of `epoch`, if held: decrypted, decoded with
    /// [`KeyShare::from_bytes_for`] and checked to be of that epoch.
    ///
    /// # Errors
    ///
    /// [`VaultError::CorruptRecord`] if the record does not open (tampered,
    /// moved from another row, wrong owner in `key`) or does not decode to a
    /// share of this key and epoch; [`VaultError::RolledBack`] if the row
    /// holds a retired record: an epoch below the key's floor, a record
    /// deleted or replaced earlier, a share from before its OT material was
    /// burned (PROTOCOL.md §18.4); [`VaultError::Database`];
    /// [`VaultError::Seal`] if the key backend fails.
    pub async fn share(
        &self,
        key: &KeyRecord,
        epoch: u64,
    ) -> Result<Option<StoredShare>, VaultError> {
        self.guarded_share(key, epoch).await
    }

    /// Opens a sealed share record of `key_id`, `owner` and `epoch`, and
    /// checks it decodes to a share of that key and epoch.
    pub(crate) async fn open_share(
        &self,
        key_id: &KeyId,
        owner: &str,
        epoch: u64,
        sealed: &[u8],
    ) -> Result<KeyShare, VaultError> {
        let aad = share_aad(RecordKind::Share, key_id, owner, epoch, b"");
        let bytes = seal::open(&*self.inner.kek, sealed, &aad)
            .await
            .map_err(open_error("share"))?;
        let share = self
            .inner
            .gadgets
            .decode(&bytes, key_id)
            .map_err(|_| VaultError::CorruptRecord("share"))?;
        if share.epoch() != epoch {
            return Err(VaultError::CorruptRecord("share epoch"));
        }
        Ok(share)
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

    /// Re-seals a changed share of an existing epoch (e.g. after
    /// [`KeyShare::burn_ot_material`]) and sets the key's `status`, with the
    /// audit `event` and, when the key becomes banned, the webhook event
    /// `key.banned`, in one transaction. The replaced record is tombstoned
    /// and, for a burned share, its epoch is marked burned, so that the
    /// record from before the burn never loads again (PROTOCOL.md §18.4).
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
        if share.is_ot_burned() {
            tombstones::mark_burned(&mut tx, &key.key_id, share.epoch()).await?;
        }
        self.apply_status(&mut tx, &current, status, event, now)
            .await?;
        commit(tx).await
    }

    /// The status half of a ban, inside `tx`: status banned, the audit
    /// `event`, the webhook event `key.banned`. It needs no master key, so
    /// it can go on the transaction that holds the key's step lock
    /// (PROTOCOL.md §18.2); the burned share is re-sealed afterwards with
    /// [`replace_share`](Self::replace_share).
    ///
    /// # Errors
    ///
    /// [`VaultError::NotFound`] if the key is absent or a later epoch than
    /// `epoch` was finalized (the banned epoch is gone);
    /// [`VaultError::Conflict`] if it is revoked; [`VaultError::Database`].
    pub(crate) async fn ban_in(
        &self,
        tx: &mut Tx,
        key_id: &KeyId,
        epoch: u64,
        event: Event<'_>,
        now: i64,
    ) -> Result<(), VaultError> {
        let current = q::lock_live_key(tx, key_id).await?;
        if current.epoch > epoch {
            return Err(VaultError::NotFound);
        }
        self.apply_status(tx, &current, KeyStatus::Banned, event, now)
            .await
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
        self.revoke_spending(key_id, event, now, None).await
    }

    /// [`revoke`](Self::revoke), spending the step-up `token` (if any) in
    /// the same transaction. Revoking a revoked key does nothing and leaves
    /// the token unspent.
    ///
    /// # Errors
    ///
    /// As [`revoke`](Self::revoke); [`VaultError::TokenSpent`] if the token
    /// was spent before (nothing changes).
    pub async fn revoke_spending(
        &self,
        key_id: &KeyId,
        event: Event<'_>,
        now: i64,
        token: Option<&StepUpUse>,
    ) -> Result<(), VaultError> {
        let mut tx = self.store().begin().await?;
        spend(&mut tx, token, now).await?;
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
        commit(tx).await?;
        self.prune_spent(token, now).await;
        Ok(())
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

    /// Up to `limit` entries of the key's audit log with ids above `after`
    /// (from the first if `None`), oldest first.
    ///
    /// # Errors
    ///
    /// [`VaultError::Database`]; [`VaultError::CorruptRecord`].
    pub async fn audit_page(
        &self,
        key_id: &KeyId,
        after: Option<i64>,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, VaultError> {
        let mut conn = self.store().acquire().await?;
        q::audit_page(&mut conn, key_id, after, i64::from(limit)).await
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
        self.mark_exported_spending(key_id, event, now, None).await
    }

    /// [`mark_exported`](Self::mark_exported), spending the step-up `token`
    /// (if any) in the same transaction.
    ///
    /// # Errors
    ///
    /// As [`mark_exported`](Self::mark_exported);
    /// [`VaultError::TokenSpent`] if the token was spent before (nothing
    /// changes).
    pub async fn mark_exported_spending(
        &self,
        key_id: &KeyId,
        event: Event<'_>,
        now: i64,
        token: Option<&StepUpUse>,
    ) -> Result<(), VaultError> {
        let mut tx = self.store().begin().await?;
        spend(&mut tx, token, now).await?;
        let key = q::lock_live_key(&mut tx, key_id).await?;
        Self::apply_export(&mut tx, &key, event, now).await?;
        commit(tx).await?;
        self.prune_spent(token, now).await;
        Ok(())
    }

    async fn apply_export(
        tx: &mut Tx,
        key: &KeyRecord,
        event: Event<'_>,
        now: i64,
    ) -> Result<(), VaultError> {
        let key_id = &key.key_id;
        q::set_time(tx, key_id, KeyTime::Exported, now).await?;
        q::insert_audit(tx, key_id, &key.owner, now, event.name, &event.detail).await?;
        q::insert_outbox(tx, "key.exported", key_id, key_payload(key), now).await
    }

    /// Forgets spent step-up tokens whose retention ended (after a spend,
    /// outside its transaction: pruning takes row locks that concurrent
    /// spends on other keys would otherwise queue behind). A failure only
    /// delays pruning, so it is logged, not returned.
    async fn prune_spent(&self, token: Option<&StepUpUse>, now: i64) {
        if token.is_none() {
            return;
        }
        let pruned = match self.store().acquire().await {
            Ok(mut conn) => spent::prune(&mut conn, now).await,
            Err(e) => Err(e),
        };
        if let Err(e) = pruned {
            tracing::warn!(error = %e, "pruning spent step-up tokens failed");
        }
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
        let new = NewBackup {
            epoch,
            recovery_key,
            backup,
            counts_as_export: false,
        };
        self.record_backup_spending(key, &new, now, None).await
    }

    /// [`record_backup`](Self::record_backup), spending the step-up `token`
    /// (if any) in the same transaction; a backup that
    /// [counts as an export](NewBackup::counts_as_export) also sets
    /// `exported_at` with the audit entry and webhook event `key.exported`,
    /// in the same transaction.
    ///
    /// # Errors
    ///
    /// As [`record_backup`](Self::record_backup);
    /// [`VaultError::TokenSpent`] if the token was spent before (nothing
    /// changes).
    pub async fn record_backup_spending(
        &self,
        key: &KeyRecord,
        new: &NewBackup<'_>,
        now: i64,
        token: Option<&StepUpUse>,
    ) -> Result<(), VaultError> {
        let NewBackup {
            epoch,
            recovery_key,
            backup,
            counts_as_export,
        } = *new;
        let mut tx = self.store().begin().await?;
        spend(&mut tx, token, now).await?;
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
        if counts_as_export {
            let event = Event {
                name: "key.exported",
                detail: json!({
                    "epoch": epoch,
                    "via": "backup",
                    "recovery_key": hex::encode(recovery_key),
                }),
            };
            Self::apply_export(&mut tx, &current, event, now).await?;
        }
        commit(tx).await?;
        self.prune_spent(token, now).await;
        Ok(())
    }
}
