//! The statements for pending keys (PROTOCOL.md §18.3): the reaper's scan
//! and the deletion of a key that never became active.

use mpc_core::KeyId;
use sqlx::AnyConnection;

use super::queries::{
    delete_presignatures, delete_shares, err, key_from_row, key_id_text, Epochs, KEY_COLUMNS,
};
use crate::vault::{KeyRecord, VaultError};

/// Pending keys created before `cutoff` (unix ms), oldest first, at most
/// `limit`.
pub(crate) async fn pending_keys_before(
    conn: &mut AnyConnection,
    cutoff: i64,
    limit: u32,
) -> Result<Vec<KeyRecord>, VaultError> {
    let rows = sqlx::query(&format!(
        "SELECT {KEY_COLUMNS} FROM keys WHERE status = 'pending' AND created_at < $1 \
         ORDER BY created_at, key_id LIMIT $2"
    ))
    .bind(cutoff)
    .bind(i64::from(limit))
    .fetch_all(conn)
    .await
    .map_err(err("listing pending keys"))?;
    rows.iter().map(key_from_row).collect()
}

/// Deletes a pending key's row and everything that references it (shares,
/// presignatures, backups); `false` if no pending key has this id. The
/// audit log and outbox keep their rows: they reference no table. Shares
/// and presignatures leave tombstones like every other deletion
/// (PROTOCOL.md §18.4). Call it with the key's row locked
/// ([`super::queries::lock_key`]), so that the status read here holds until
/// the transaction ends.
pub(crate) async fn delete_pending_key(
    conn: &mut AnyConnection,
    key_id: &KeyId,
) -> Result<bool, VaultError> {
    // Checked here, not only by the caller: a caller that skipped its own
    // check cannot wipe an active key's shares.
    let pending = sqlx::query_scalar::<_, String>("SELECT status FROM keys WHERE key_id = $1")
        .bind(key_id_text(key_id))
        .fetch_optional(&mut *conn)
        .await
        .map_err(err("reading a key's status"))?
        .is_some_and(|status| status == "pending");
    if !pending {
        return Ok(false);
    }
    delete_presignatures(conn, key_id, Epochs::All).await?;
    delete_shares(conn, key_id, Epochs::All).await?;
    sqlx::query("DELETE FROM backups WHERE key_id = $1")
        .bind(key_id_text(key_id))
        .execute(&mut *conn)
        .await
        .map_err(err("deleting backups"))?;
    let done = sqlx::query("DELETE FROM keys WHERE key_id = $1 AND status = 'pending'")
        .bind(key_id_text(key_id))
        .execute(&mut *conn)
        .await
        .map_err(err("deleting a key"))?;
    Ok(done.rows_affected() == 1)
}
