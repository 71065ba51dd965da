//! The vault's public data types (re-exported by [`crate::vault`], which
//! documents them in context).

use mpc_core::{KeyId, KeyShare};
use serde::{Serialize, Serializer};

/// The lifecycle status of a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyStatus {
    /// Made by a keygen whose client has not confirmed it yet (PROTOCOL.md
    /// §18.3): signs (the first signature activates it), but no refresh,
    /// rotation, backup or export; deleted if unconfirmed for too long.
    Pending,
    /// Usable.
    Active,
    /// Must be refreshed before further use.
    RotationRequired,
    /// Its OT material is burned after a suspected attack; a refresh clears
    /// it.
    Banned,
    /// Revoked for good; its shares are deleted.
    Revoked,
}

impl KeyStatus {
    /// The stored and serialized name: `pending`, `active`,
    /// `rotation_required`, `banned` or `revoked`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Active => "active",
            Self::RotationRequired => "rotation_required",
            Self::Banned => "banned",
            Self::Revoked => "revoked",
        }
    }

    pub(crate) fn parse(text: &str) -> Option<Self> {
        [
            Self::Pending,
            Self::Active,
            Self::RotationRequired,
            Self::Banned,
            Self::Revoked,
        ]
        .into_iter()
        .find(|status| status.as_str() == text)
    }
}

/// Where a stored share is in the refresh sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ShareState {
    /// Written by a refresh, not yet confirmed by the peer.
    Ready,
    /// The peer confirmed it holds the matching share.
    Confirmed,
    /// The key's current share.
    Final,
}

impl ShareState {
    /// The stored name: `ready`, `confirmed` or `final`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "ready",
            Self::Confirmed => "confirmed",
            Self::Final => "final",
        }
    }

    pub(crate) fn parse(text: &str) -> Option<Self> {
        [Self::Ready, Self::Confirmed, Self::Final]
            .into_iter()
            .find(|state| state.as_str() == text)
    }
}

/// A key's public record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRecord {
    /// The key's id.
    pub key_id: KeyId,
    /// The customer's user the key belongs to.
    pub owner: String,
    /// The public key, SEC1 compressed.
    pub public_key: [u8; 33],
    /// The BIP32 chain code.
    pub chain_code: [u8; 32],
    /// The latest finalized epoch.
    pub epoch: u64,
    /// Lifecycle status.
    pub status: KeyStatus,
    /// Creation time, unix milliseconds.
    pub created_at: i64,
    /// Last signing use, unix milliseconds.
    pub last_used_at: Option<i64>,
    /// When the key was exported, unix milliseconds.
    pub exported_at: Option<i64>,
    /// Latest backup, unix milliseconds.
    pub backed_up_at: Option<i64>,
}

/// A place in an owner's key listing (the order of
/// [`Vault::keys_page`](crate::vault::Vault::keys_page)): the last key of a
/// page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyPosition {
    /// The key's creation time.
    pub created_at: i64,
    /// The key's id.
    pub key_id: KeyId,
}

impl KeyPosition {
    /// The position of `record`.
    #[must_use]
    pub fn of(record: &KeyRecord) -> Self {
        Self {
            created_at: record.created_at,
            key_id: record.key_id,
        }
    }
}

/// A decrypted share and its refresh state.
#[derive(Debug)]
pub struct StoredShare {
    /// The share (zeroized on drop).
    pub share: KeyShare,
    /// Its state.
    pub state: ShareState,
}

fn key_id_hex<S: Serializer>(key_id: &KeyId, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&hex::encode(key_id.0))
}

/// One audit log entry.
#[derive(Clone, Debug, Serialize)]
pub struct AuditEntry {
    /// Sequence number (increasing).
    pub id: i64,
    /// The key (serialized as hex).
    #[serde(serialize_with = "key_id_hex")]
    pub key_id: KeyId,
    /// The key's owner.
    pub owner: String,
    /// When, unix milliseconds.
    pub at: i64,
    /// The event name, e.g. `key.created`.
    pub event: String,
    /// Details (never secrets).
    pub detail: serde_json::Value,
}

/// An audit event to record with a change.
#[derive(Clone, Debug)]
pub struct Event<'a> {
    /// The event name, e.g. `key.refreshed`.
    pub name: &'a str,
    /// Details (JSON; must not contain secrets).
    pub detail: serde_json::Value,
}

/// A webhook event waiting in the outbox.
#[derive(Clone, Debug)]
pub struct OutboxEvent {
    /// Row id (for [`Vault::mark_delivered`](crate::vault::Vault::mark_delivered) and [`Vault::schedule_retry`](crate::vault::Vault::schedule_retry)).
    pub id: i64,
    /// Random unique id (32 hex characters), for receivers to deduplicate.
    pub event_id: String,
    /// `key.created`, `key.refreshed`, `key.backed_up`, `key.exported`,
    /// `key.revoked` or `key.banned`.
    pub event_type: String,
    /// The key concerned.
    pub key_id: KeyId,
    /// The event's JSON body.
    pub payload: serde_json::Value,
    /// When it was queued, unix milliseconds.
    pub created_at: i64,
    /// Failed delivery attempts so far.
    pub attempts: u32,
}
