//! Tombstones of retired sealed records: the rollback guard's queries
//! (PROTOCOL.md §18.4, migration `0005_rollback_guard`).
//!
//! A sealed record leaves the store in three ways: a presignature is
//! claimed, a share or presignature row is deleted (refresh, revocation),
//! or a share is re-sealed (OT material burned). Each of these writes a
//! tombstone in the same transaction, into tables that are only ever
//! inserted into. Every load checks them, so a row that comes back (restored
//! by SQL, from a partial backup, by a replica that lost some tables'
//! recent writes) is recognised as retired instead of being used again.
//!
//! What identifies a retired record:
//! - a presignature: its session id, which its sealed record's associated
//!   data binds, so every ciphertext of it is covered;
//! - a share record: the SHA-256 of its sealed bytes (a restored row holds
//!   the very bytes the server once wrote; the master key is needed to
//!   make new ones), plus two per-key facts: the epoch floor (no epoch
//!   below it loads again) and the epochs whose OT material was burned.

use mpc_core::KeyId;
use sha2::{Digest, Sha256};
use sqlx::AnyConnection;

use super::queries::{col, epoch_to_db, err, key_id_text, Epochs};
use crate::vault::{ShareState, VaultError};

/// The floor a revocation sets: every epoch of the key is retired.
const FLOOR_ALL: i64 = i64::MAX;

/// Rows per multi-row `INSERT` when tombstoning many presignatures.
const INSERT_CHUNK: usize = 100;

fn digest(sealed: &[u8]) -> Vec<u8> {
    Sha256::digest(sealed).to_vec()
}

// ---- presignatures ----

/// Tombstones the presignature of `session_id` (hex) as spent. `false` if
/// it already was: its row, found unused, was restored. Called after the
/// claim's conditional update, which holds the row lock, so a concurrent
/// claim cannot be the cause.
pub(crate) async fn spend_presignature(
    conn: &mut AnyConnection,
    session_id: &str,
    key_id: &KeyId,
) -> Result<bool, VaultError> {
    let done = sqlx::query(
        "INSERT INTO spent_presignatures (session_id, key_id) VALUES ($1, $2) \
         ON CONFLICT (session_id) DO NOTHING",
    )
    .bind(session_id)
    .bind(key_id_text(key_id))
    .execute(conn)
    .await
    .map_err(err("recording a spent presignature"))?;
    Ok(done.rows_affected() == 1)
}

/// Whether the presignature of `session_id` (hex) was spent.
pub(crate) async fn presignature_spent(
    conn: &mut AnyConnection,
    session_id: &str,
) -> Result<bool, VaultError> {
    let count: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM spent_presignatures WHERE session_id = $1")
            .bind(session_id)
            .fetch_one(conn)
            .await
            .map_err(err("reading spent presignatures"))?;
    Ok(count > 0)
}

/// Tombstones presignatures whose rows were just deleted, by session id
/// (hex), in multi-row inserts.
pub(crate) async fn spend_presignatures(
    conn: &mut AnyConnection,
    key_id: &KeyId,
    session_ids: &[String],
) -> Result<(), VaultError> {
    let key = key_id_text(key_id);
    for chunk in session_ids.chunks(INSERT_CHUNK) {
        let values: Vec<String> = (0..chunk.len())
            .map(|i| format!("(${}, $1)", i + 2))
            .collect();
        let sql = format!(
            "INSERT INTO spent_presignatures (session_id, key_id) VALUES {} \
             ON CONFLICT (session_id) DO NOTHING",
            values.join(", ")
        );
        let mut query = sqlx::query(&sql).bind(key.as_str());
        for session in chunk {
            query = query.bind(session.as_str());
        }
        query
            .execute(&mut *conn)
            .await
            .map_err(err("recording spent presignatures"))?;
    }
    Ok(())
}

// ---- shares ----

/// Tombstones one sealed share record that is being deleted or replaced.
pub(crate) async fn retire_share_record(
    conn: &mut AnyConnection,
    key_id: &KeyId,
    epoch: i64,
    sealed: &[u8],
) -> Result<(), VaultError> {
    sqlx::query(
        "INSERT INTO retired_shares (digest, key_id, epoch) VALUES ($1, $2, $3) \
         ON CONFLICT (digest) DO NOTHING",
    )
    .bind(digest(sealed))
    .bind(key_id_text(key_id))
    .bind(epoch)
    .execute(conn)
    .await
    .map_err(err("recording a retired share"))?;
    Ok(())
}

/// Whether this exact sealed share record was retired.
pub(crate) async fn share_record_retired(
    conn: &mut AnyConnection,
    sealed: &[u8],
) -> Result<bool, VaultError> {
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM retired_shares WHERE digest = $1")
        .bind(digest(sealed))
        .fetch_one(conn)
        .await
        .map_err(err("reading retired shares"))?;
    Ok(count > 0)
}

/// Raises the key's epoch floor for a deletion of `epochs`: `Below(n)`
/// (a finalized refresh) retires the epochs below `n`, `All` (revocation)
/// every epoch; `From(n)` (leftovers of a cut refresh) leaves the floor.
pub(crate) async fn raise_floor(
    conn: &mut AnyConnection,
    key_id: &KeyId,
    epochs: Epochs,
) -> Result<(), VaultError> {
    let floor = match epochs {
        Epochs::Below(n) => epoch_to_db(n)?,
        Epochs::All => FLOOR_ALL,
        Epochs::From(_) => return Ok(()),
    };
    insert_key_tombstone(conn, key_id, "floor", floor).await
}

/// Records that the share of `epoch` had its OT material burned: a
/// pre-burn copy of it never loads again.
pub(crate) async fn mark_burned(
    conn: &mut AnyConnection,
    key_id: &KeyId,
    epoch: u64,
) -> Result<(), VaultError> {
    insert_key_tombstone(conn, key_id, "burned", epoch_to_db(epoch)?).await
}

async fn insert_key_tombstone(
    conn: &mut AnyConnection,
    key_id: &KeyId,
    kind: &'static str,
    epoch: i64,
) -> Result<(), VaultError> {
    sqlx::query(
        "INSERT INTO key_tombstones (key_id, kind, epoch) VALUES ($1, $2, $3) \
         ON CONFLICT (key_id, kind, epoch) DO NOTHING",
    )
    .bind(key_id_text(key_id))
    .bind(kind)
    .bind(epoch)
    .execute(conn)
    .await
    .map_err(err("recording a key tombstone"))?;
    Ok(())
}

/// The key's epoch floor: no share or presignature of a lower epoch may
/// load. 0 if none was recorded.
pub(crate) async fn epoch_floor(
    conn: &mut AnyConnection,
    key_id: &KeyId,
) -> Result<u64, VaultError> {
    let floor: i64 = sqlx::query_scalar(
        "SELECT COALESCE(MAX(epoch), 0) FROM key_tombstones WHERE key_id = $1 AND kind = 'floor'",
    )
    .bind(key_id_text(key_id))
    .fetch_one(conn)
    .await
    .map_err(err("reading the epoch floor"))?;
    Ok(u64::try_from(floor).unwrap_or(0))
}

/// A stored share row with the key's tombstones, read in one statement
/// (one snapshot, so that a refresh finalizing meanwhile is not mistaken
/// for a restore).
pub(crate) struct GuardedShare {
    pub(crate) state: ShareState,
    pub(crate) sealed: Vec<u8>,
    /// The key's epoch floor.
    pub(crate) floor: u64,
    /// Whether this epoch's OT material was burned.
    pub(crate) burned: bool,
}

/// The share of `epoch` with the key's floor and burn tombstone.
pub(crate) async fn guarded_share(
    conn: &mut AnyConnection,
    key_id: &KeyId,
    epoch: u64,
) -> Result<Option<GuardedShare>, VaultError> {
    let row = sqlx::query(
        "SELECT s.state, s.sealed, \
         (SELECT COALESCE(MAX(f.epoch), 0) FROM key_tombstones f \
          WHERE f.key_id = $1 AND f.kind = 'floor') AS floor, \
         (SELECT COUNT(*) FROM key_tombstones b \
          WHERE b.key_id = $1 AND b.kind = 'burned' AND b.epoch = $2) AS burned \
         FROM shares s WHERE s.key_id = $1 AND s.epoch = $2",
    )
    .bind(key_id_text(key_id))
    .bind(epoch_to_db(epoch)?)
    .fetch_optional(conn)
    .await
    .map_err(err("reading a share"))?;
    let Some(row) = row else { return Ok(None) };
    let state: String = col(&row, "state")?;
    let floor: i64 = col(&row, "floor")?;
    let burned: i64 = col(&row, "burned")?;
    Ok(Some(GuardedShare {
        state: ShareState::parse(&state).ok_or(VaultError::CorruptRecord("share state"))?,
        sealed: col(&row, "sealed")?,
        floor: u64::try_from(floor).unwrap_or(0),
        burned: burned > 0,
    }))
}
