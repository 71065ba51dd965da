//! Key creation and the pending state (PROTOCOL.md §18.3).
//!
//! A keygen stores its key `pending` before the server's outcome leaves:
//! the client may still fail its last check or vanish, and then holds no
//! usable share. The key becomes `active` (audit `key.created`, webhook
//! `key.created`, one transaction) when the client's successful outcome
//! arrives, or when the client's first signature with it succeeds (its
//! outcome was lost but it holds the share). A reaper deletes pending keys
//! older than a configured age, shares and all.

use std::time::Duration;

use k256::elliptic_curve::sec1::ToEncodedPoint;
use mpc_core::{KeyId, KeyShare};
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{KeyRecord, KeyStatus, Quota, ShareState, Vault, VaultError};
use crate::store::queries as q;
use crate::store::{commit, pending, Tx};

/// Most pending keys the reaper deletes per scan (the rest wait for the
/// next scan).
const REAP_BATCH: u32 = 64;

/// What confirmed a pending key, for its `key.created` audit entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Confirmation {
    /// The client's successful outcome at the end of the keygen.
    Outcome,
    /// The client's first successful signature with the key.
    Signature,
}

impl Confirmation {
    fn as_str(self) -> &'static str {
        match self {
            Self::Outcome => "outcome",
            Self::Signature => "signature",
        }
    }
}

/// The audit entry and webhook event `key.created`, inside `tx`.
async fn created_events(
    tx: &mut Tx,
    key: &KeyRecord,
    confirmed_by: Option<Confirmation>,
    now: i64,
) -> Result<(), VaultError> {
    let public_hex = hex::encode(key.public_key);
    let mut detail = json!({ "epoch": key.epoch, "public_key": public_hex });
    if let Some(confirmation) = confirmed_by {
        detail["confirmed_by"] = json!(confirmation.as_str());
    }
    q::insert_audit(tx, &key.key_id, &key.owner, now, "key.created", &detail).await?;
    let payload = json!({
        "key_id": key.key_id.to_string(),
        "owner": key.owner,
        "public_key": public_hex,
        "epoch": key.epoch,
    });
    q::insert_outbox(tx, "key.created", &key.key_id, payload, now).await
}

impl Vault {
    /// Stores a new key as [`KeyStatus::Pending`] with its share (state
    /// final) and the audit entry `key.pending`, in one transaction. No
    /// webhook event: `key.created` is sent by
    /// [`activate_key`](Self::activate_key).
    ///
    /// # Errors
    ///
    /// As [`create_key`](Self::create_key).
    pub async fn create_pending_key(
        &self,
        owner: &str,
        share: &KeyShare,
        now: i64,
    ) -> Result<KeyRecord, VaultError> {
        self.store_new_key(owner, share, KeyStatus::Pending, None, now)
            .await
    }

    /// [`create_pending_key`](Self::create_pending_key) within the key
    /// quota: refused, storing nothing, if `owner` already has `max_keys`
    /// keys that are not revoked. The count and the insert are one step
    /// for every server process on the database (PROTOCOL.md §18.5).
    ///
    /// # Errors
    ///
    /// [`VaultError::QuotaReached`] with [`Quota::Keys`]; as
    /// [`create_key`](Self::create_key).
    pub async fn create_pending_key_within(
        &self,
        owner: &str,
        share: &KeyShare,
        max_keys: u64,
        now: i64,
    ) -> Result<KeyRecord, VaultError> {
        self.store_new_key(owner, share, KeyStatus::Pending, Some(max_keys), now)
            .await
    }

    /// Stores a new key with `status` (active or pending) and its share,
    /// within the key quota if `max_keys` is set.
    pub(super) async fn store_new_key(
        &self,
        owner: &str,
        share: &KeyShare,
        status: KeyStatus,
        max_keys: Option<u64>,
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
            status,
            created_at: now,
            last_used_at: None,
            exported_at: None,
            backed_up_at: None,
        };
        let sealed = self.seal_share(owner, share).await?;
        let mut tx = self.store().begin().await?;
        self.within_quota(&mut tx, owner, Quota::Keys, max_keys)
            .await?;
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
        if status == KeyStatus::Pending {
            let detail = json!({ "epoch": key.epoch, "public_key": hex::encode(public_key) });
            q::insert_audit(&mut tx, &key.key_id, owner, now, "key.pending", &detail).await?;
        } else {
            created_events(&mut tx, &key, None, now).await?;
        }
        commit(tx).await?;
        Ok(key)
    }

    /// Activates `owner`'s pending key: status active, the audit entry
    /// `key.created` (naming what confirmed it) and the webhook event
    /// `key.created`, in one transaction. Returns `false`, changing
    /// nothing, if the key is not pending (already activated, by this or
    /// another process, or banned, revoked...): `key.created` is sent once.
    ///
    /// # Errors
    ///
    /// [`VaultError::NotFound`] if the key does not exist (e.g. it was
    /// reaped) or is not `owner`'s; [`VaultError::Database`].
    pub async fn activate_key(
        &self,
        key_id: &KeyId,
        owner: &str,
        confirmed_by: Confirmation,
        now: i64,
    ) -> Result<bool, VaultError> {
        let mut tx = self.store().begin().await?;
        let key = q::lock_key(&mut tx, key_id)
            .await?
            .filter(|key| key.owner == owner)
            .ok_or(VaultError::NotFound)?;
        if key.status != KeyStatus::Pending {
            return Ok(false);
        }
        q::set_status(&mut tx, key_id, KeyStatus::Active).await?;
        created_events(&mut tx, &key, Some(confirmed_by), now).await?;
        commit(tx).await?;
        Ok(true)
    }

    /// Deletes pending keys created before `created_before` (unix ms) with
    /// their shares, presignatures and backups, each in its own transaction
    /// with the audit entry `key.reaped`. A key activated meanwhile (by any
    /// process) is left alone. Returns the deleted keys' ids.
    ///
    /// # Errors
    ///
    /// [`VaultError::Database`]; [`VaultError::CorruptRecord`] for a
    /// damaged key row.
    pub async fn reap_pending_keys(
        &self,
        created_before: i64,
        now: i64,
    ) -> Result<Vec<KeyId>, VaultError> {
        let candidates = {
            let mut conn = self.store().acquire().await?;
            pending::pending_keys_before(&mut conn, created_before, REAP_BATCH).await?
        };
        let mut reaped = Vec::new();
        for candidate in candidates {
            let mut tx = self.store().begin().await?;
            // Re-read under the lock: an activation may have won the race.
            let Some(key) = q::lock_key(&mut tx, &candidate.key_id).await? else {
                continue;
            };
            if key.status != KeyStatus::Pending || key.created_at >= created_before {
                continue;
            }
            if !pending::delete_pending_key(&mut tx, &key.key_id).await? {
                continue;
            }
            let detail = json!({ "epoch": key.epoch, "created_at": key.created_at });
            q::insert_audit(&mut tx, &key.key_id, &key.owner, now, "key.reaped", &detail).await?;
            commit(tx).await?;
            reaped.push(key.key_id);
        }
        Ok(reaped)
    }
}

/// Runs [`Vault::reap_pending_keys`] for keys older than `max_age`, every
/// quarter of `max_age` (between 100 ms and one minute), until `shutdown`
/// becomes `true` (or its sender is dropped). Failures are logged and
/// retried at the next scan.
pub(crate) fn spawn_reaper(
    vault: Vault,
    max_age: Duration,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let period = (max_age / 4).clamp(Duration::from_millis(100), Duration::from_secs(60));
    let max_age_ms = i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX);
    tokio::spawn(async move {
        loop {
            let now = crate::server::now_ms();
            match vault
                .reap_pending_keys(now.saturating_sub(max_age_ms), now)
                .await
            {
                Ok(reaped) => {
                    for key_id in reaped {
                        tracing::warn!(%key_id, "pending key reaped: its keygen was never confirmed");
                    }
                }
                Err(error) => tracing::warn!(%error, "reaping pending keys failed"),
            }
            tokio::select! {
                changed = shutdown.wait_for(|stop| *stop) => {
                    let _ = changed;
                    break;
                }
                () = tokio::time::sleep(period) => {}
            }
        }
    })
}
