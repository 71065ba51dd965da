//! The rollback guard on loads (PROTOCOL.md §18.4): a share row that holds
//! a retired record is refused, loudly.

use mpc_core::KeyId;

use sqlx::AnyConnection;

use super::{KeyRecord, ShareState, StoredShare, Vault, VaultError};
use crate::store::tombstones;

/// Logs a detected rollback (an incident: someone restored rows or the
/// database rolled back) and gives the error. Names the key, the kind of
/// record and its epoch; nothing secret.
pub(crate) fn rolled_back(key_id: &KeyId, epoch: u64, what: &'static str) -> VaultError {
    tracing::error!(
        %key_id,
        epoch,
        record = what,
        "ROLLBACK DETECTED: {what} is back in the database (rows restored or the \
         database rolled back); refused. Investigate the database before trusting it."
    );
    VaultError::RolledBack(what)
}

/// A guarded load attempts this many times: a load that races with the
/// retirement of the record it read sees the tombstone but not the row, and
/// simply reads again.
const LOAD_ATTEMPTS: u32 = 3;

/// A share row that passed the rollback guard's database checks, not yet
/// opened: [`Vault::open_checked`] finishes the load.
pub(crate) struct CheckedRow {
    state: ShareState,
    sealed: Vec<u8>,
    burned: bool,
}

impl Vault {
    /// [`Vault::share`]: the share row and the key's tombstones in one
    /// snapshot; refused if the epoch is below the key's floor (or below
    /// the `key` record's epoch), or the sealed record was retired, or it
    /// still has OT material that was burned.
    pub(super) async fn guarded_share(
        &self,
        key: &KeyRecord,
        epoch: u64,
    ) -> Result<Option<StoredShare>, VaultError> {
        let row = {
            let mut conn = self.store().acquire().await?;
            checked_row(&mut conn, key, epoch).await?
        };
        match row {
            Some(row) => self.open_checked(key, epoch, row).await.map(Some),
            None => Ok(None),
        }
    }

    /// The record of `key_id` and, read on the same connection (one pool
    /// checkout for a session's two loads), its share row of `epoch` with
    /// the database half of the rollback guard: `None` if the key does not
    /// exist. The row's own result is kept apart, so that the caller can
    /// refuse on the key's status first.
    ///
    /// # Errors
    ///
    /// [`VaultError::Database`] if the key cannot be read; the row's
    /// result as [`Vault::share`].
    pub(crate) async fn key_and_share_row(
        &self,
        key_id: &KeyId,
        epoch: u64,
    ) -> Result<Option<(KeyRecord, Result<Option<CheckedRow>, VaultError>)>, VaultError> {
        let mut conn = self.store().acquire().await?;
        let Some(record) = crate::store::queries::key(&mut conn, key_id).await? else {
            return Ok(None);
        };
        let row = checked_row(&mut conn, &record, epoch).await;
        Ok(Some((record, row)))
    }

    /// Opens a checked row of `key` and `epoch`: decrypted, decoded, and
    /// refused if its epoch's OT material was burned but it still has it.
    ///
    /// # Errors
    ///
    /// As [`Vault::share`].
    pub(crate) async fn open_checked(
        &self,
        key: &KeyRecord,
        epoch: u64,
        row: CheckedRow,
    ) -> Result<StoredShare, VaultError> {
        let share = self
            .open_share(&key.key_id, &key.owner, epoch, &row.sealed)
            .await?;
        // Burning only ever removes OT material; a share of a burned epoch
        // that has it is a copy from before the burn.
        if row.burned && !share.is_ot_burned() {
            return Err(rolled_back(
                &key.key_id,
                epoch,
                "a share from before its OT material was burned",
            ));
        }
        Ok(StoredShare {
            share,
            state: row.state,
        })
    }
}

/// The share row of `key` at `epoch` if it passes the database checks of
/// the rollback guard (floor, retired records), on `conn`.
async fn checked_row(
    conn: &mut AnyConnection,
    key: &KeyRecord,
    epoch: u64,
) -> Result<Option<CheckedRow>, VaultError> {
    let key_id = &key.key_id;
    let mut attempt = 1;
    loop {
        let Some(row) = tombstones::guarded_share(conn, key_id, epoch).await? else {
            return Ok(None);
        };
        // Finalizing deletes the lower epochs in the transaction that
        // raises the floor and the key's epoch: a row below either was
        // written back afterwards.
        if epoch < row.floor.max(key.epoch) {
            return Err(rolled_back(key_id, epoch, "a share of a retired epoch"));
        }
        if !tombstones::share_record_retired(conn, &row.sealed).await? {
            return Ok(Some(CheckedRow {
                state: row.state,
                sealed: row.sealed,
                burned: row.burned,
            }));
        }
        // Retired: by a deletion or re-seal that committed after the
        // read (then the row is gone or different now), or earlier
        // (then the row was written back).
        let now = crate::store::queries::share(conn, key_id, epoch).await?;
        if now.is_some_and(|(_, current)| current == row.sealed) {
            return Err(rolled_back(
                key_id,
                epoch,
                "a deleted or replaced share record",
            ));
        }
        if attempt >= LOAD_ATTEMPTS {
            return Err(VaultError::Database(
                "the share kept changing while it was read".into(),
            ));
        }
        attempt += 1;
    }
}
