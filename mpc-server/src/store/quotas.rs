//! The statements of the per-owner quotas (PROTOCOL.md §18.5): what counts
//! against them, and the owner's lock under which a count and the insert it
//! allows are one step for every server process on the database.

use sha2::{Digest, Sha256};
use sqlx::AnyConnection;

use super::queries::err;
use super::{db_error, Backend};
use crate::vault::VaultError;

/// Class of the owners' advisory locks on PostgreSQL ("MPQ1"). The
/// two-integer form keeps them apart from the single-`bigint` locks (the
/// key step locks of `bans.rs`, sqlx's migration lock).
const OWNER_LOCK_CLASS: i32 = 0x4D50_5131;

/// The owner's lock id: the first 4 bytes of SHA-256 of the owner (a
/// collision only makes two owners' stores wait for each other).
fn owner_lock_id(owner: &str) -> i32 {
    let digest = Sha256::digest(owner.as_bytes());
    i32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

/// Locks `owner`'s quotas until the transaction ends. Must be the
/// transaction's first statement.
///
/// PostgreSQL: a transaction-scoped advisory lock (released at commit or
/// rollback), taken under READ COMMITTED whatever the database's default,
/// so that the count that follows sees what the previous holder committed
/// (under REPEATABLE READ the snapshot would be the lock statement's own,
/// taken before it waited). SQLite: nothing to do, the transaction's
/// `BEGIN IMMEDIATE` already holds the database's single write lock, for
/// every process on the file.
pub(crate) async fn lock_owner(
    conn: &mut AnyConnection,
    backend: Backend,
    owner: &str,
) -> Result<(), VaultError> {
    if backend != Backend::Postgres {
        return Ok(());
    }
    sqlx::query("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
        .execute(&mut *conn)
        .await
        .map_err(|e| db_error("setting a quota check's isolation level", &e))?;
    // The function returns `void`, which the `Any` driver cannot decode:
    // select a constant from it instead.
    sqlx::query("SELECT CAST(1 AS INTEGER) FROM (SELECT pg_advisory_xact_lock($1, $2)) AS l")
        .bind(OWNER_LOCK_CLASS)
        .bind(owner_lock_id(owner))
        .execute(conn)
        .await
        .map_err(err("taking an owner's quota lock"))?;
    Ok(())
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// `owner`'s keys that count against the key quota: every status but
/// revoked (pending keys included).
pub(crate) async fn live_keys(conn: &mut AnyConnection, owner: &str) -> Result<u64, VaultError> {
    let n: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM keys WHERE owner = $1 AND status <> 'revoked'")
            .bind(owner)
            .fetch_one(conn)
            .await
            .map_err(err("counting an owner's keys"))?;
    Ok(count(n))
}

/// `owner`'s unused stored presignatures, of every scheme and key.
pub(crate) async fn unused_presignatures(
    conn: &mut AnyConnection,
    owner: &str,
) -> Result<u64, VaultError> {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM presignatures p JOIN keys k ON k.key_id = p.key_id \
         WHERE k.owner = $1 AND p.used_at IS NULL",
    )
    .bind(owner)
    .fetch_one(conn)
    .await
    .map_err(err("counting an owner's presignatures"))?;
    Ok(count(n))
}
