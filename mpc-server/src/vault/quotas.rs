//! Per-owner quotas on stored keys and presignatures (PROTOCOL.md §18.5).
//!
//! The server checks a quota twice: cheaply at a session's opening, before
//! any protocol work ([`Vault::live_keys_of`],
//! [`Vault::unused_presignatures_of`]), and atomically where the new key or
//! presignature is stored: the count and the insert run in one transaction
//! under the owner's lock ([`crate::store::quotas::lock_owner`]), so that
//! of two sessions racing for the last unit, on one or on two server
//! processes, one stores and the other is refused with
//! [`VaultError::QuotaReached`] and leaves no row.

use std::fmt;

use super::{Vault, VaultError};
use crate::store::quotas as q;
use crate::store::Tx;

/// A per-owner quota the vault enforces where it stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Quota {
    /// Keys that are not revoked (pending keys included).
    Keys,
    /// Unused stored presignatures, of every scheme and key.
    Presignatures,
}

impl fmt::Display for Quota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Keys => "keys",
            Self::Presignatures => "presignatures",
        })
    }
}

impl Vault {
    /// `owner`'s keys that count against the key quota: all but revoked
    /// ones (pending keys included).
    ///
    /// # Errors
    ///
    /// [`VaultError::Database`].
    pub async fn live_keys_of(&self, owner: &str) -> Result<u64, VaultError> {
        let mut conn = self.store().acquire().await?;
        q::live_keys(&mut conn, owner).await
    }

    /// `owner`'s unused stored presignatures, of every scheme and key.
    ///
    /// # Errors
    ///
    /// [`VaultError::Database`].
    pub async fn unused_presignatures_of(&self, owner: &str) -> Result<u64, VaultError> {
        let mut conn = self.store().acquire().await?;
        q::unused_presignatures(&mut conn, owner).await
    }

    /// Inside `tx`, as its first statement: locks `owner`'s quotas and
    /// refuses with [`VaultError::QuotaReached`] if `owner` already has
    /// `limit` of `quota`'s units. `None` checks nothing.
    pub(super) async fn within_quota(
        &self,
        tx: &mut Tx,
        owner: &str,
        quota: Quota,
        limit: Option<u64>,
    ) -> Result<(), VaultError> {
        let Some(limit) = limit else {
            return Ok(());
        };
        q::lock_owner(tx, self.store().backend(), owner).await?;
        let held = match quota {
            Quota::Keys => q::live_keys(tx, owner).await?,
            Quota::Presignatures => q::unused_presignatures(tx, owner).await?,
        };
        if held >= limit {
            return Err(VaultError::QuotaReached(quota));
        }
        Ok(())
    }
}
