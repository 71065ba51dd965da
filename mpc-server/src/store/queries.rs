//! Every SQL statement of the server, written once for SQLite and
//! PostgreSQL (`$n` placeholders, standard SQL plus `ON CONFLICT ... DO
//! NOTHING` and `RETURNING`, which both support), and the mapping of rows to
//! the vault's types.
//!
//! Each function runs on a connection or an open transaction (`&mut *tx`);
//! composing them into transactions is the vault's job.

use mpc_core::KeyId;
use rand_core::{OsRng, RngCore};
use sqlx::any::AnyRow;
use sqlx::{Any, AnyConnection, Row};

use super::{db_error, tombstones};
use crate::seal::SealError;
use crate::vault::{AuditEntry, KeyPosition, KeyRecord, KeyStatus, ShareState, VaultError};

pub(super) const KEY_COLUMNS: &str =
    "key_id, owner, public_key, chain_code, epoch, status, created_at, \
                           last_used_at, exported_at, backed_up_at";

pub(super) fn err(context: &'static str) -> impl FnOnce(sqlx::Error) -> VaultError {
    move |e| db_error(context, &e)
}

/// An epoch as stored (`BIGINT`).
pub(crate) fn epoch_to_db(epoch: u64) -> Result<i64, VaultError> {
    i64::try_from(epoch).map_err(|_| VaultError::Conflict("epoch out of range"))
}

fn epoch_from_db(epoch: i64) -> Result<u64, VaultError> {
    u64::try_from(epoch).map_err(|_| VaultError::CorruptRecord("negative epoch"))
}

/// A key id as stored: 64 lowercase hex characters.
pub(crate) fn key_id_text(key_id: &KeyId) -> String {
    hex::encode(key_id.0)
}

pub(super) fn key_id_from_text(text: &str) -> Result<KeyId, VaultError> {
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(text, &mut bytes).map_err(|_| VaultError::CorruptRecord("key id"))?;
    Ok(KeyId(bytes))
}

/// Reads column `name` of `row`.
pub(super) fn col<'r, T>(row: &'r AnyRow, name: &str) -> Result<T, VaultError>
where
    T: sqlx::Decode<'r, Any> + sqlx::Type<Any>,
{
    row.try_get(name)
        .map_err(|e| db_error("reading a database row", &e))
}

pub(super) fn key_from_row(row: &AnyRow) -> Result<KeyRecord, VaultError> {
    let key_id: String = col(row, "key_id")?;
    let public_key: Vec<u8> = col(row, "public_key")?;
    let chain_code: Vec<u8> = col(row, "chain_code")?;
    let status: String = col(row, "status")?;
    Ok(KeyRecord {
        key_id: key_id_from_text(&key_id)?,
        owner: col(row, "owner")?,
        public_key: public_key
            .try_into()
            .map_err(|_| VaultError::CorruptRecord("public key"))?,
        chain_code: chain_code
            .try_into()
            .map_err(|_| VaultError::CorruptRecord("chain code"))?,
        epoch: epoch_from_db(col(row, "epoch")?)?,
        status: KeyStatus::parse(&status).ok_or(VaultError::CorruptRecord("key status"))?,
        created_at: col(row, "created_at")?,
        last_used_at: col(row, "last_used_at")?,
        exported_at: col(row, "exported_at")?,
        backed_up_at: col(row, "backed_up_at")?,
    })
}

// ---- keys ----

/// Inserts a key; `false` if its id exists.
pub(crate) async fn insert_key(
    conn: &mut AnyConnection,
    key: &KeyRecord,
) -> Result<bool, VaultError> {
    let done = sqlx::query(
        "INSERT INTO keys (key_id, owner, public_key, chain_code, epoch, status, created_at, \
         last_used_at, exported_at, backed_up_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (key_id) DO NOTHING",
    )
    .bind(key_id_text(&key.key_id))
    .bind(key.owner.as_str())
    .bind(key.public_key.to_vec())
    .bind(key.chain_code.to_vec())
    .bind(epoch_to_db(key.epoch)?)
    .bind(key.status.as_str())
    .bind(key.created_at)
    .bind(key.last_used_at)
    .bind(key.exported_at)
    .bind(key.backed_up_at)
    .execute(conn)
    .await
    .map_err(err("inserting a key"))?;
    Ok(done.rows_affected() == 1)
}

pub(crate) async fn key(
    conn: &mut AnyConnection,
    key_id: &KeyId,
) -> Result<Option<KeyRecord>, VaultError> {
    let row = sqlx::query(&format!("SELECT {KEY_COLUMNS} FROM keys WHERE key_id = $1"))
        .bind(key_id_text(key_id))
        .fetch_optional(conn)
        .await
        .map_err(err("reading a key"))?;
    row.as_ref().map(key_from_row).transpose()
}

/// All keys of `owner`, oldest first.
pub(crate) async fn keys_of(
    conn: &mut AnyConnection,
    owner: &str,
) -> Result<Vec<KeyRecord>, VaultError> {
    keys_page(conn, owner, None, i64::MAX).await
}

/// Up to `limit` keys of `owner` after `after`, in the order
/// `(created_at, key_id)`: a total order on the owner's keys (key ids are
/// unique), so that paging by the last row seen returns each key that
/// exists throughout exactly once, whatever is inserted or deleted between
/// pages.
pub(crate) async fn keys_page(
    conn: &mut AnyConnection,
    owner: &str,
    after: Option<&KeyPosition>,
    limit: i64,
) -> Result<Vec<KeyRecord>, VaultError> {
    // Before every key: the smallest time and the empty id.
    let (created_at, key_id) = after.map_or((i64::MIN, String::new()), |p| {
        (p.created_at, key_id_text(&p.key_id))
    });
    let rows = sqlx::query(&format!(
        "SELECT {KEY_COLUMNS} FROM keys WHERE owner = $1 \
         AND (created_at > $2 OR (created_at = $2 AND key_id > $3)) \
         ORDER BY created_at, key_id LIMIT $4"
    ))
    .bind(owner)
    .bind(created_at)
    .bind(key_id)
    .bind(limit.max(0))
    .fetch_all(conn)
    .await
    .map_err(err("listing keys"))?;
    rows.iter().map(key_from_row).collect()
}

/// Locks the key's row for the rest of the transaction (a no-op update:
/// a row lock on PostgreSQL; SQLite's `BEGIN IMMEDIATE` already holds the
/// write lock) and returns its current state; `None` if it does not exist.
pub(crate) async fn lock_key(
    conn: &mut AnyConnection,
    key_id: &KeyId,
) -> Result<Option<KeyRecord>, VaultError> {
    let row = sqlx::query(&format!(
        "UPDATE keys SET epoch = epoch WHERE key_id = $1 RETURNING {KEY_COLUMNS}"
    ))
    .bind(key_id_text(key_id))
    .fetch_optional(conn)
    .await
    .map_err(err("locking a key"))?;
    row.as_ref().map(key_from_row).transpose()
}

/// [`lock_key`] for a change to a live key: `NotFound` if it does not
/// exist, `Conflict` if it is revoked.
pub(crate) async fn lock_live_key(
    conn: &mut AnyConnection,
    key_id: &KeyId,
) -> Result<KeyRecord, VaultError> {
    let key = lock_key(conn, key_id).await?.ok_or(VaultError::NotFound)?;
    if key.status == KeyStatus::Revoked {
        return Err(VaultError::Conflict("the key is revoked"));
    }
    Ok(key)
}

pub(crate) async fn set_epoch_and_status(
    conn: &mut AnyConnection,
    key_id: &KeyId,
    epoch: u64,
    status: KeyStatus,
) -> Result<(), VaultError> {
    sqlx::query("UPDATE keys SET epoch = $2, status = $3 WHERE key_id = $1")
        .bind(key_id_text(key_id))
        .bind(epoch_to_db(epoch)?)
        .bind(status.as_str())
        .execute(conn)
        .await
        .map_err(err("updating a key"))?;
    Ok(())
}

pub(crate) async fn set_status(
    conn: &mut AnyConnection,
    key_id: &KeyId,
    status: KeyStatus,
) -> Result<(), VaultError> {
    sqlx::query("UPDATE keys SET status = $2 WHERE key_id = $1")
        .bind(key_id_text(key_id))
        .bind(status.as_str())
        .execute(conn)
        .await
        .map_err(err("updating a key's status"))?;
    Ok(())
}

/// Which timestamp column of `keys` to set.
#[derive(Clone, Copy, Debug)]
pub(crate) enum KeyTime {
    LastUsed,
    Exported,
    BackedUp,
}

/// Sets one timestamp of a key; `false` if the key does not exist.
pub(crate) async fn set_time(
    conn: &mut AnyConnection,
    key_id: &KeyId,
    column: KeyTime,
    at: i64,
) -> Result<bool, VaultError> {
    let sql = match column {
        KeyTime::LastUsed => "UPDATE keys SET last_used_at = $2 WHERE key_id = $1",
        KeyTime::Exported => "UPDATE keys SET exported_at = $2 WHERE key_id = $1",
        KeyTime::BackedUp => "UPDATE keys SET backed_up_at = $2 WHERE key_id = $1",
    };
    let done = sqlx::query(sql)
        .bind(key_id_text(key_id))
        .bind(at)
        .execute(conn)
        .await
        .map_err(err("updating a key's timestamp"))?;
    Ok(done.rows_affected() > 0)
}

// ---- shares ----

pub(crate) async fn insert_share(
    conn: &mut AnyConnection,
    key_id: &KeyId,
    epoch: u64,
    state: ShareState,
    sealed: &[u8],
    now: i64,
) -> Result<(), VaultError> {
    sqlx::query(
        "INSERT INTO shares (key_id, epoch, state, sealed, created_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(key_id_text(key_id))
    .bind(epoch_to_db(epoch)?)
    .bind(state.as_str())
    .bind(sealed.to_vec())
    .bind(now)
    .execute(conn)
    .await
    .map_err(err("inserting a share"))?;
    Ok(())
}

/// The state and sealed record of a share.
pub(crate) async fn share(
    conn: &mut AnyConnection,
    key_id: &KeyId,
    epoch: u64,
) -> Result<Option<(ShareState, Vec<u8>)>, VaultError> {
    let row = sqlx::query("SELECT state, sealed FROM shares WHERE key_id = $1 AND epoch = $2")
        .bind(key_id_text(key_id))
        .bind(epoch_to_db(epoch)?)
        .fetch_optional(conn)
        .await
        .map_err(err("reading a share"))?;
    let Some(row) = row else { return Ok(None) };
    let state: String = col(&row, "state")?;
    let sealed: Vec<u8> = col(&row, "sealed")?;
    let state = ShareState::parse(&state).ok_or(VaultError::CorruptRecord("share state"))?;
    Ok(Some((state, sealed)))
}

pub(crate) async fn share_epochs(
    conn: &mut AnyConnection,
    key_id: &KeyId,
) -> Result<Vec<(u64, ShareState)>, VaultError> {
    let rows = sqlx::query("SELECT epoch, state FROM shares WHERE key_id = $1 ORDER BY epoch")
        .bind(key_id_text(key_id))
        .fetch_all(conn)
        .await
        .map_err(err("listing shares"))?;
    rows.iter()
        .map(|row| {
            let epoch: i64 = col(row, "epoch")?;
            let state: String = col(row, "state")?;
            Ok((
                epoch_from_db(epoch)?,
                ShareState::parse(&state).ok_or(VaultError::CorruptRecord("share state"))?,
            ))
        })
        .collect()
}

/// Which shares or presignatures of a key to delete, by epoch.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Epochs {
    /// `epoch < n`
    Below(u64),
    /// `epoch >= n`
    From(u64),
    All,
}

impl Epochs {
    fn bound(self) -> Result<i64, VaultError> {
        match self {
            Self::Below(n) | Self::From(n) => epoch_to_db(n),
            Self::All => Ok(0),
        }
    }
}

/// Deletes the key's shares in `epochs`, tombstoning each deleted sealed
/// record and raising the key's epoch floor (see [`tombstones`]), so that
/// none of them loads again if its row comes back.
pub(crate) async fn delete_shares(
    conn: &mut AnyConnection,
    key_id: &KeyId,
    epochs: Epochs,
) -> Result<(), VaultError> {
    let sql = match epochs {
        Epochs::Below(_) => {
            "DELETE FROM shares WHERE key_id = $1 AND epoch < $2 RETURNING epoch, sealed"
        }
        Epochs::From(_) | Epochs::All => {
            "DELETE FROM shares WHERE key_id = $1 AND epoch >= $2 RETURNING epoch, sealed"
        }
    };
    let rows = sqlx::query(sql)
        .bind(key_id_text(key_id))
        .bind(epochs.bound()?)
        .fetch_all(&mut *conn)
        .await
        .map_err(err("deleting shares"))?;
    for row in &rows {
        let epoch: i64 = col(row, "epoch")?;
        let sealed: Vec<u8> = col(row, "sealed")?;
        tombstones::retire_share_record(conn, key_id, epoch, &sealed).await?;
    }
    tombstones::raise_floor(conn, key_id, epochs).await
}

/// Sets a share's state; `false` if it does not exist. `only_from` limits
/// the change to shares in that state (others are left as they are, and
/// still count as existing).
pub(crate) async fn set_share_state(
    conn: &mut AnyConnection,
    key_id: &KeyId,
    epoch: u64,
    only_from: Option<ShareState>,
    to: ShareState,
) -> Result<bool, VaultError> {
    let query = match only_from {
        Some(from) => sqlx::query(
            "UPDATE shares SET state = CASE WHEN state = $3 THEN $4 ELSE state END \
             WHERE key_id = $1 AND epoch = $2",
        )
        .bind(key_id_text(key_id))
        .bind(epoch_to_db(epoch)?)
        .bind(from.as_str())
        .bind(to.as_str()),
        None => sqlx::query("UPDATE shares SET state = $3 WHERE key_id = $1 AND epoch = $2")
            .bind(key_id_text(key_id))
            .bind(epoch_to_db(epoch)?)
            .bind(to.as_str()),
    };
    let done = query
        .execute(conn)
        .await
        .map_err(err("updating a share's state"))?;
    Ok(done.rows_affected() > 0)
}

/// Replaces a share's sealed record, tombstoning the one it replaces (see
/// [`tombstones`]); `false` if it does not exist. Must run inside a
/// transaction that holds the key's lock.
pub(crate) async fn reseal_share(
    conn: &mut AnyConnection,
    key_id: &KeyId,
    epoch: u64,
    sealed: &[u8],
) -> Result<bool, VaultError> {
    let Some((_, old)) = share(conn, key_id, epoch).await? else {
        return Ok(false);
    };
    tombstones::retire_share_record(conn, key_id, epoch_to_db(epoch)?, &old).await?;
    let done = sqlx::query("UPDATE shares SET sealed = $3 WHERE key_id = $1 AND epoch = $2")
        .bind(key_id_text(key_id))
        .bind(epoch_to_db(epoch)?)
        .bind(sealed.to_vec())
        .execute(conn)
        .await
        .map_err(err("updating a share"))?;
    Ok(done.rows_affected() > 0)
}

// ---- presignatures ----

/// Inserts an unused presignature of `scheme` (`ecdsa` or `bip340`, the
/// column of migration 0007); `false` if its session id exists.
pub(crate) async fn insert_presignature(
    conn: &mut AnyConnection,
    (session_id, scheme): (&[u8; 32], &str),
    key_id: &KeyId,
    epoch: u64,
    sealed: &[u8],
    now: i64,
) -> Result<bool, VaultError> {
    let done = sqlx::query(
        "INSERT INTO presignatures (session_id, key_id, epoch, sealed, created_at, scheme) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (session_id) DO NOTHING",
    )
    .bind(hex::encode(session_id))
    .bind(key_id_text(key_id))
    .bind(epoch_to_db(epoch)?)
    .bind(sealed.to_vec())
    .bind(now)
    .bind(scheme)
    .execute(conn)
    .await
    .map_err(err("inserting a presignature"))?;
    Ok(done.rows_affected() == 1)
}

/// Claims an unused presignature of `key_id`: reads its epoch and sealed
/// record, then marks it used and drops the record with an update that only
/// matches while it is unused. Under concurrency exactly one caller's update
/// matches (PostgreSQL re-checks `used_at IS NULL` after waiting for the
/// row lock; SQLite runs writers one at a time); the others get `None`.
/// A row of another `scheme` is not found (and stays unused).
/// Must run inside a transaction.
pub(crate) async fn claim_presignature(
    conn: &mut AnyConnection,
    (session_id, scheme): (&[u8; 32], &str),
    key_id: &KeyId,
    now: i64,
) -> Result<Option<(u64, Vec<u8>)>, VaultError> {
    let session = hex::encode(session_id);
    let key = key_id_text(key_id);
    let row = sqlx::query(
        "SELECT epoch, sealed FROM presignatures \
         WHERE session_id = $1 AND key_id = $2 AND scheme = $3 AND used_at IS NULL",
    )
    .bind(session.as_str())
    .bind(key.as_str())
    .bind(scheme)
    .fetch_optional(&mut *conn)
    .await
    .map_err(err("reading a presignature"))?;
    let Some(row) = row else { return Ok(None) };
    let epoch: i64 = col(&row, "epoch")?;
    let sealed: Option<Vec<u8>> = col(&row, "sealed")?;
    let done = sqlx::query(
        "UPDATE presignatures SET used_at = $3, sealed = NULL \
         WHERE session_id = $1 AND key_id = $2 AND scheme = $4 AND used_at IS NULL",
    )
    .bind(session.as_str())
    .bind(key.as_str())
    .bind(now)
    .bind(scheme)
    .execute(&mut *conn)
    .await
    .map_err(err("claiming a presignature"))?;
    if done.rows_affected() != 1 {
        return Ok(None);
    }
    let sealed = sealed.ok_or(VaultError::CorruptRecord("presignature"))?;
    Ok(Some((epoch_from_db(epoch)?, sealed)))
}

/// Deletes the key's presignatures in `epochs`, tombstoning each as spent
/// (see [`tombstones`]). The rows are deleted first, which takes their
/// locks: a concurrent claim of one of them finishes (and tombstones it)
/// before, or finds it gone.
pub(crate) async fn delete_presignatures(
    conn: &mut AnyConnection,
    key_id: &KeyId,
    epochs: Epochs,
) -> Result<(), VaultError> {
    let sql = match epochs {
        Epochs::Below(_) => {
            "DELETE FROM presignatures WHERE key_id = $1 AND epoch < $2 RETURNING session_id"
        }
        Epochs::From(_) | Epochs::All => {
            "DELETE FROM presignatures WHERE key_id = $1 AND epoch >= $2 RETURNING session_id"
        }
    };
    let sessions: Vec<String> = sqlx::query_scalar(sql)
        .bind(key_id_text(key_id))
        .bind(epochs.bound()?)
        .fetch_all(&mut *conn)
        .await
        .map_err(err("deleting presignatures"))?;
    tombstones::spend_presignatures(conn, key_id, &sessions).await
}

// ---- audit log ----

pub(crate) async fn insert_audit(
    conn: &mut AnyConnection,
    key_id: &KeyId,
    owner: &str,
    at: i64,
    event: &str,
    detail: &serde_json::Value,
) -> Result<(), VaultError> {
    sqlx::query(
        "INSERT INTO audit_log (key_id, owner, at, event, detail) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(key_id_text(key_id))
    .bind(owner)
    .bind(at)
    .bind(event)
    .bind(detail.to_string())
    .execute(conn)
    .await
    .map_err(err("writing the audit log"))?;
    Ok(())
}

/// The key's whole audit log, oldest first.
pub(crate) async fn audit_log(
    conn: &mut AnyConnection,
    key_id: &KeyId,
) -> Result<Vec<AuditEntry>, VaultError> {
    audit_page(conn, key_id, None, i64::MAX).await
}

/// Up to `limit` audit entries of the key with ids above `after`, by id.
pub(crate) async fn audit_page(
    conn: &mut AnyConnection,
    key_id: &KeyId,
    after: Option<i64>,
    limit: i64,
) -> Result<Vec<AuditEntry>, VaultError> {
    let rows = sqlx::query(
        "SELECT id, key_id, owner, at, event, detail FROM audit_log \
         WHERE key_id = $1 AND id > $2 ORDER BY id LIMIT $3",
    )
    .bind(key_id_text(key_id))
    .bind(after.unwrap_or(i64::MIN))
    .bind(limit.max(0))
    .fetch_all(conn)
    .await
    .map_err(err("reading the audit log"))?;
    rows.iter()
        .map(|row| {
            let key_id: String = col(row, "key_id")?;
            let detail: String = col(row, "detail")?;
            Ok(AuditEntry {
                id: col(row, "id")?,
                key_id: key_id_from_text(&key_id)?,
                owner: col(row, "owner")?,
                at: col(row, "at")?,
                event: col(row, "event")?,
                detail: serde_json::from_str(&detail)
                    .map_err(|_| VaultError::CorruptRecord("audit detail"))?,
            })
        })
        .collect()
}

// ---- outbox ----

/// Queues a webhook event with a fresh random event id (16 bytes, hex).
pub(crate) async fn insert_outbox(
    conn: &mut AnyConnection,
    event_type: &str,
    key_id: &KeyId,
    payload: serde_json::Value,
    now: i64,
) -> Result<(), VaultError> {
    let mut event_id = [0u8; 16];
    OsRng
        .try_fill_bytes(&mut event_id)
        .map_err(|_| VaultError::Seal(SealError::Random))?;
    sqlx::query(
        "INSERT INTO outbox (event_id, event_type, key_id, payload, created_at, next_attempt_at) \
         VALUES ($1, $2, $3, $4, $5, $5)",
    )
    .bind(hex::encode(event_id))
    .bind(event_type)
    .bind(key_id_text(key_id))
    .bind(payload.to_string())
    .bind(now)
    .execute(conn)
    .await
    .map_err(err("writing the outbox"))?;
    Ok(())
}

// ---- backups ----

pub(crate) async fn insert_backup(
    conn: &mut AnyConnection,
    key_id: &KeyId,
    epoch: u64,
    now: i64,
    recovery_key: &[u8; 33],
    backup: &[u8],
) -> Result<(), VaultError> {
    sqlx::query(
        "INSERT INTO backups (key_id, epoch, created_at, recovery_key, backup) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(key_id_text(key_id))
    .bind(epoch_to_db(epoch)?)
    .bind(now)
    .bind(recovery_key.to_vec())
    .bind(backup.to_vec())
    .execute(conn)
    .await
    .map_err(err("recording a backup"))?;
    Ok(())
}

// ---- meta ----

pub(crate) async fn meta(
    conn: &mut AnyConnection,
    name: &str,
) -> Result<Option<Vec<u8>>, VaultError> {
    sqlx::query_scalar("SELECT value FROM meta WHERE name = $1")
        .bind(name)
        .fetch_optional(conn)
        .await
        .map_err(err("reading metadata"))
}

/// Inserts a metadata value unless the name exists (a concurrent first
/// open may have written it).
pub(crate) async fn insert_meta_if_absent(
    conn: &mut AnyConnection,
    name: &str,
    value: &[u8],
) -> Result<(), VaultError> {
    sqlx::query("INSERT INTO meta (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
        .bind(name)
        .bind(value.to_vec())
        .execute(conn)
        .await
        .map_err(err("writing metadata"))?;
    Ok(())
}
