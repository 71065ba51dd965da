//! The statements for pending keys (PROTOCOL.md §18.3): the reaper's scan
//! and the deletion of a key that never became active.

use mpc_core::KeyId;
use sqlx::AnyConnection;

use super::queries::{err, key_from_row, key_id_text, KEY_COLUMNS};
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
/// audit log and outbox keep their rows: they reference no table.
pub(crate) async fn delete_pending_key(
    conn: &mut AnyConnection,
    key_id: &KeyId,
) -> Result<bool, VaultError> {
    let id = key_id_text(key_id);
    // Each child delete re-checks that the key is pending: a caller that
    // skipped its own check cannot wipe an active key's shares.
    for (table, what) in [
        ("presignatures", "deleting presignatures"),
        ("shares", "deleting shares"),
        ("backups", "deleting backups"),
    ] {
        sqlx::query(&format!(
            "DELETE FROM {table} WHERE key_id = $1 AND EXISTS \
             (SELECT 1 FROM keys WHERE key_id = $1 AND status = 'pending')"
        ))
        .bind(id.as_str())
        .execute(&mut *conn)
        .await
        .map_err(err(what))?;
    }
    let done = sqlx::query("DELETE FROM keys WHERE key_id = $1 AND status = 'pending'")
        .bind(id.as_str())
        .execute(&mut *conn)
        .await
        .map_err(err("deleting a key"))?;
    Ok(done.rows_affected() == 1)
}
