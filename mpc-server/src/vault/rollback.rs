//! The rollback guard on loads (PROTOCOL.md §18.4): a share row that holds
//! a retired record is refused, loudly.

use mpc_core::KeyId;

use super::{KeyRecord, StoredShare, Vault, VaultError};
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
        let key_id = &key.key_id;
        let mut attempt = 1;
        let (state, sealed, burned) = loop {
            let mut conn = self.store().acquire().await?;
            let Some(row) = tombstones::guarded_share(&mut conn, key_id, epoch).await? else {
                return Ok(None);
            };
            // Finalizing deletes the lower epochs in the transaction that
            // raises the floor and the key's epoch: a row below either was
            // written back afterwards.
            if epoch < row.floor.max(key.epoch) {
                return Err(rolled_back(key_id, epoch, "a share of a retired epoch"));
            }
            if !tombstones::share_record_retired(&mut conn, &row.sealed).await? {
                break (row.state, row.sealed, row.burned);
            }
            // Retired: by a deletion or re-seal that committed after the
            // read (then the row is gone or different now), or earlier
            // (then the row was written back).
            let now = crate::store::queries::share(&mut conn, key_id, epoch).await?;
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
        };
        let share = self.open_share(key_id, &key.owner, epoch, &sealed).await?;
        // Burning only ever removes OT material; a share of a burned epoch
        // that has it is a copy from before the burn.
        if burned && !share.is_ot_burned() {
            return Err(rolled_back(
                key_id,
                epoch,
                "a share from before its OT material was burned",
            ));
        }
        Ok(Some(StoredShare { share, state }))
    }
}
