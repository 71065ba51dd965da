//! Tests of the rollback guard (PROTOCOL.md §18.4) over both backends:
//! rows of retired records written back by raw SQL, the way an attacker
//! with write access to the database (and no master key) or a partial
//! restore from backup would, are refused; the tombstones cannot be
//! deleted; concurrent retirements are not mistaken for a restore.

use mpc_core::wire::SessionId;
use mpc_core::{KeyId, KeyShare};
use serde_json::json;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::testkit::{dkg, kek, lease_at, on_both_backends, presign, refresh, vault, Kind, TestDb};
use crate::seal::{self, share_aad, RecordKind};
use crate::vault::{Event, KeyRecord, KeyStatus, Vault, VaultError};

on_both_backends!(
    restored_claimed_presignature_is_refused,
    restored_deleted_presignatures_are_refused,
    restored_old_epoch_share_is_refused,
    restored_key_row_does_not_reenable_old_epoch,
    restored_leftover_refreshed_share_is_refused,
    restored_pre_burn_share_is_refused,
    restored_revoked_key_is_refused,
    tombstones_are_insert_only,
    concurrent_retirement_is_not_a_rollback,
    migration_seeds_tombstones_from_existing_rows,
);

fn event(name: &str) -> Event<'_> {
    Event {
        name,
        detail: json!({ "test": true }),
    }
}

fn is_rolled_back<T: std::fmt::Debug>(result: &Result<T, VaultError>) -> bool {
    matches!(result, Err(VaultError::RolledBack(_)))
}

/// A raw copy of a presignature row, as a backup holds it.
struct PresignatureRow {
    session_id: String,
    key_id: String,
    epoch: i64,
    sealed: Vec<u8>,
    created_at: i64,
}

async fn copy_presignature_row(vault: &Vault, session: &SessionId) -> PresignatureRow {
    let row: AnyRow = sqlx::query(
        "SELECT session_id, key_id, epoch, sealed, created_at FROM presignatures \
         WHERE session_id = $1",
    )
    .bind(hex::encode(session.0))
    .fetch_one(vault.store().pool())
    .await
    .unwrap();
    PresignatureRow {
        session_id: row.get("session_id"),
        key_id: row.get("key_id"),
        epoch: row.get("epoch"),
        sealed: row.get("sealed"),
        created_at: row.get("created_at"),
    }
}

/// Writes the copied row back, replacing whatever row has its id now.
async fn restore_presignature_row(vault: &Vault, row: &PresignatureRow) {
    let pool = vault.store().pool();
    sqlx::query("DELETE FROM presignatures WHERE session_id = $1")
        .bind(row.session_id.as_str())
        .execute(pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO presignatures (session_id, key_id, epoch, sealed, created_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(row.session_id.as_str())
    .bind(row.key_id.as_str())
    .bind(row.epoch)
    .bind(row.sealed.clone())
    .bind(row.created_at)
    .execute(pool)
    .await
    .unwrap();
}

/// A raw copy of a share row.
struct ShareRow {
    epoch: i64,
    state: String,
    sealed: Vec<u8>,
}

async fn copy_share_row(vault: &Vault, key_id: &KeyId, epoch: i64) -> ShareRow {
    let row: AnyRow =
        sqlx::query("SELECT epoch, state, sealed FROM shares WHERE key_id = $1 AND epoch = $2")
            .bind(key_id.to_string())
            .bind(epoch)
            .fetch_one(vault.store().pool())
            .await
            .unwrap();
    ShareRow {
        epoch: row.get("epoch"),
        state: row.get("state"),
        sealed: row.get("sealed"),
    }
}

async fn restore_share_row(vault: &Vault, key_id: &KeyId, row: &ShareRow) {
    let pool = vault.store().pool();
    sqlx::query("DELETE FROM shares WHERE key_id = $1 AND epoch = $2")
        .bind(key_id.to_string())
        .bind(row.epoch)
        .execute(pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO shares (key_id, epoch, state, sealed, created_at) VALUES ($1, $2, $3, $4, 1)",
    )
    .bind(key_id.to_string())
    .bind(row.epoch)
    .bind(row.state.as_str())
    .bind(row.sealed.clone())
    .execute(pool)
    .await
    .unwrap();
}

/// Writes a key row's epoch and status back to older values.
async fn restore_key_row(vault: &Vault, key: &KeyRecord) {
    sqlx::query("UPDATE keys SET epoch = $2, status = $3 WHERE key_id = $1")
        .bind(key.key_id.to_string())
        .bind(i64::try_from(key.epoch).unwrap())
        .bind(key.status.as_str())
        .execute(vault.store().pool())
        .await
        .unwrap();
}

/// Refreshes the key to the next epoch and finalizes it; the new shares.
async fn refresh_and_finalize(
    vault: &Vault,
    key: &KeyRecord,
    a: &KeyShare,
    b: &KeyShare,
) -> (KeyShare, KeyShare) {
    let (a, b) = refresh(a, b);
    let lease = lease_at(vault, &key.key_id, 10, 3_600_000).await;
    vault.store_refreshed(&lease, key, &b, 10).await.unwrap();
    vault.confirm_refreshed(&lease, &b, 10).await.unwrap();
    vault
        .finalize_refreshed(&lease, &b, event("key.refreshed"), 11)
        .await
        .unwrap();
    lease.release().await.unwrap();
    (a, b)
}

async fn restored_claimed_presignature_is_refused(db: TestDb) {
    let vault = vault(&db, 1).await;
    let (a, b) = dkg();
    let key = vault.create_key("alice", &b, 1).await.unwrap();
    let presig = presign(&a, &b);
    let session = presig.session_id();
    vault.store_presignature(&key, &presig, 2).await.unwrap();
    let backup = copy_presignature_row(&vault, &session).await;
    assert!(vault
        .take_presignature(&key, &session, 3)
        .await
        .unwrap()
        .is_some());

    restore_presignature_row(&vault, &backup).await;
    let second = vault.take_presignature(&key, &session, 4).await;
    assert!(is_rolled_back(&second), "{second:?}");
    // The refusal erased the restored ciphertext: nothing to retry with.
    let sealed: Option<Vec<u8>> =
        sqlx::query_scalar("SELECT sealed FROM presignatures WHERE session_id = $1")
            .bind(hex::encode(session.0))
            .fetch_one(vault.store().pool())
            .await
            .unwrap();
    assert!(sealed.is_none());
    assert!(vault
        .take_presignature(&key, &session, 5)
        .await
        .unwrap()
        .is_none());
    // Restored again, and through a second vault (another process).
    restore_presignature_row(&vault, &backup).await;
    let other = super::testkit::vault(&db, 1).await;
    let third = other.take_presignature(&key, &session, 6).await;
    assert!(is_rolled_back(&third), "{third:?}");
}

async fn restored_deleted_presignatures_are_refused(db: TestDb) {
    let vault = vault(&db, 1).await;
    let (a, b) = dkg();
    let key = vault.create_key("alice", &b, 1).await.unwrap();
    // Unused, deleted by a finalized refresh (the old epoch's).
    let old = presign(&a, &b);
    vault.store_presignature(&key, &old, 2).await.unwrap();
    let old_row = copy_presignature_row(&vault, &old.session_id()).await;
    // Unused, made with a refreshed share that a later refresh replaced
    // before it was finalized (a leftover epoch).
    let (a1, b1) = refresh(&a, &b);
    // That refresh's session ends (cut) and gives its lease back.
    let cut = lease_at(&vault, &key.key_id, 3, 3_600_000).await;
    vault.store_refreshed(&cut, &key, &b1, 3).await.unwrap();
    cut.release().await.unwrap();
    let leftover = presign(&a1, &b1);
    vault.store_presignature(&key, &leftover, 4).await.unwrap();
    let leftover_row = copy_presignature_row(&vault, &leftover.session_id()).await;
    let (_, b1_again) = refresh(&a, &b);
    let lease = lease_at(&vault, &key.key_id, 5, 3_600_000).await;
    vault
        .store_refreshed(&lease, &key, &b1_again, 5)
        .await
        .unwrap();
    vault.confirm_refreshed(&lease, &b1_again, 5).await.unwrap();
    vault
        .finalize_refreshed(&lease, &b1_again, event("key.refreshed"), 6)
        .await
        .unwrap();
    lease.release().await.unwrap();
    let key = vault.key(&key.key_id).await.unwrap().unwrap();
    assert_eq!(key.epoch, 1);
    // A deleted presignature's session id is not stored again either.
    let again = vault.store_presignature(&key, &leftover, 7).await;
    assert!(matches!(again, Err(VaultError::Conflict(_))), "{again:?}");

    for (row, session) in [
        (&old_row, old.session_id()),
        (&leftover_row, leftover.session_id()),
    ] {
        assert!(vault
            .take_presignature(&key, &session, 7)
            .await
            .unwrap()
            .is_none());
        restore_presignature_row(&vault, row).await;
        let taken = vault.take_presignature(&key, &session, 8).await;
        assert!(is_rolled_back(&taken), "{taken:?}");
    }
}

async fn restored_old_epoch_share_is_refused(db: TestDb) {
    let vault = vault(&db, 1).await;
    let (a, b) = dkg();
    let key = vault.create_key("alice", &b, 1).await.unwrap();
    let epoch0 = copy_share_row(&vault, &key.key_id, 0).await;
    refresh_and_finalize(&vault, &key, &a, &b).await;
    let current = vault.key(&key.key_id).await.unwrap().unwrap();
    assert!(vault.share(&current, 0).await.unwrap().is_none());
    assert!(vault.share(&current, 1).await.unwrap().is_some());

    restore_share_row(&vault, &key.key_id, &epoch0).await;
    let loaded = vault.share(&current, 0).await;
    assert!(is_rolled_back(&loaded), "{loaded:?}");
    // The current epoch is untouched by the incident.
    assert!(vault.share(&current, 1).await.unwrap().is_some());

    // Another ciphertext of the old share (not the deleted bytes): the
    // epoch floor refuses it.
    let aad = share_aad(RecordKind::Share, &key.key_id, &key.owner, 0, b"");
    let other = ShareRow {
        epoch: 0,
        state: epoch0.state,
        sealed: seal::seal(&*kek(1), &b.to_bytes(), &aad).await.unwrap(),
    };
    restore_share_row(&vault, &key.key_id, &other).await;
    let loaded = vault.share(&current, 0).await;
    assert!(
        matches!(loaded, Err(VaultError::RolledBack(what)) if what.contains("epoch")),
        "{loaded:?}"
    );
}

async fn restored_key_row_does_not_reenable_old_epoch(db: TestDb) {
    // The key row restored to epoch 0 together with epoch 0's share row:
    // the epoch floor is in a table the restore did not touch.
    let vault = vault(&db, 1).await;
    let (a, b) = dkg();
    let old_key = vault.create_key("alice", &b, 1).await.unwrap();
    let epoch0 = copy_share_row(&vault, &old_key.key_id, 0).await;
    let presig = presign(&a, &b);
    vault
        .store_presignature(&old_key, &presig, 2)
        .await
        .unwrap();
    let presig_row = copy_presignature_row(&vault, &presig.session_id()).await;
    refresh_and_finalize(&vault, &old_key, &a, &b).await;

    restore_key_row(&vault, &old_key).await;
    restore_share_row(&vault, &old_key.key_id, &epoch0).await;
    restore_presignature_row(&vault, &presig_row).await;
    let key = vault.key(&old_key.key_id).await.unwrap().unwrap();
    assert_eq!(key.epoch, 0, "the key row was rolled back");
    let loaded = vault.share(&key, 0).await;
    assert!(is_rolled_back(&loaded), "{loaded:?}");
    let taken = vault.take_presignature(&key, &presig.session_id(), 3).await;
    assert!(is_rolled_back(&taken), "{taken:?}");
}

async fn restored_leftover_refreshed_share_is_refused(db: TestDb) {
    // A refresh cut before finalizing left a ready share of epoch 1; a
    // second refresh replaced it. The first one's row comes back.
    let vault = vault(&db, 1).await;
    let (a, b) = dkg();
    let key = vault.create_key("alice", &b, 1).await.unwrap();
    let (_, first) = refresh(&a, &b);
    let cut = lease_at(&vault, &key.key_id, 2, 3_600_000).await;
    vault.store_refreshed(&cut, &key, &first, 2).await.unwrap();
    cut.release().await.unwrap();
    let first_row = copy_share_row(&vault, &key.key_id, 1).await;
    let (_, second) = refresh(&a, &b);
    let lease = lease_at(&vault, &key.key_id, 3, 3_600_000).await;
    vault
        .store_refreshed(&lease, &key, &second, 3)
        .await
        .unwrap();
    lease.release().await.unwrap();
    let stored = vault.share(&key, 1).await.unwrap().unwrap();
    assert_eq!(stored.share.transcript_hash(), second.transcript_hash());

    restore_share_row(&vault, &key.key_id, &first_row).await;
    let loaded = vault.share(&key, 1).await;
    assert!(is_rolled_back(&loaded), "{loaded:?}");
    // The epoch the key signs with is unaffected.
    assert!(vault.share(&key, 0).await.unwrap().is_some());
}

async fn restored_pre_burn_share_is_refused(db: TestDb) {
    let vault = vault(&db, 1).await;
    let (_, b) = dkg();
    let key = vault.create_key("alice", &b, 1).await.unwrap();
    assert!(!b.is_ot_burned());
    let pre_burn = copy_share_row(&vault, &key.key_id, 0).await;
    let mut burned = vault.share(&key, 0).await.unwrap().unwrap().share;
    burned.burn_ot_material();
    vault
        .replace_share(&key, &burned, KeyStatus::Banned, event("key.banned"), 2)
        .await
        .unwrap();
    // The burned share itself loads (no false alarm).
    let loaded = vault.share(&key, 0).await.unwrap().unwrap();
    assert!(loaded.share.is_ot_burned());

    // The pre-burn record written back, and the key row un-banned.
    restore_share_row(&vault, &key.key_id, &pre_burn).await;
    restore_key_row(&vault, &key).await;
    let key = vault.key(&key.key_id).await.unwrap().unwrap();
    assert_eq!(key.status, KeyStatus::Active);
    let loaded = vault.share(&key, 0).await;
    assert!(is_rolled_back(&loaded), "{loaded:?}");

    // Another ciphertext of the pre-burn share (one the digest does not
    // know, as from a transaction that never committed; made here with the
    // master key): the burned mark refuses it.
    let aad = share_aad(RecordKind::Share, &key.key_id, &key.owner, 0, b"");
    let other = seal::seal(&*kek(1), &b.to_bytes(), &aad).await.unwrap();
    let row = ShareRow {
        epoch: 0,
        state: pre_burn.state,
        sealed: other,
    };
    restore_share_row(&vault, &key.key_id, &row).await;
    let loaded = vault.share(&key, 0).await;
    assert!(
        matches!(loaded, Err(VaultError::RolledBack(what)) if what.contains("burned")),
        "{loaded:?}"
    );
}

async fn restored_revoked_key_is_refused(db: TestDb) {
    let vault = vault(&db, 1).await;
    let (a, b) = dkg();
    let key = vault.create_key("alice", &b, 1).await.unwrap();
    let share_row = copy_share_row(&vault, &key.key_id, 0).await;
    let presig = presign(&a, &b);
    vault.store_presignature(&key, &presig, 2).await.unwrap();
    let presig_row = copy_presignature_row(&vault, &presig.session_id()).await;
    vault
        .revoke(&key.key_id, event("key.revoked"), 3)
        .await
        .unwrap();

    restore_key_row(&vault, &key).await;
    restore_share_row(&vault, &key.key_id, &share_row).await;
    restore_presignature_row(&vault, &presig_row).await;
    let key = vault.key(&key.key_id).await.unwrap().unwrap();
    assert_eq!(key.status, KeyStatus::Active);
    let loaded = vault.share(&key, 0).await;
    assert!(is_rolled_back(&loaded), "{loaded:?}");
    let taken = vault.take_presignature(&key, &presig.session_id(), 4).await;
    assert!(is_rolled_back(&taken), "{taken:?}");
}

async fn tombstones_are_insert_only(db: TestDb) {
    let vault = vault(&db, 1).await;
    let (a, b) = dkg();
    let key = vault.create_key("alice", &b, 1).await.unwrap();
    let presig = presign(&a, &b);
    vault.store_presignature(&key, &presig, 2).await.unwrap();
    vault
        .take_presignature(&key, &presig.session_id(), 3)
        .await
        .unwrap()
        .unwrap();
    refresh_and_finalize(&vault, &key, &a, &b).await;
    let pool = vault.store().pool();
    let mut statements = vec![
        "DELETE FROM spent_presignatures",
        "UPDATE spent_presignatures SET session_id = 'x'",
        "DELETE FROM retired_shares",
        "UPDATE retired_shares SET epoch = 0",
        "DELETE FROM key_tombstones",
        "UPDATE key_tombstones SET epoch = 0",
    ];
    if db.kind == Kind::Postgres {
        statements.extend([
            "TRUNCATE spent_presignatures",
            "TRUNCATE retired_shares",
            "TRUNCATE key_tombstones",
        ]);
    }
    for sql in statements {
        let result = sqlx::query(sql).execute(pool).await;
        assert!(result.is_err(), "{sql} succeeded");
    }
    for table in ["spent_presignatures", "retired_shares", "key_tombstones"] {
        let count: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(pool)
            .await
            .unwrap();
        assert!(count > 0, "{table} is empty");
    }
}

async fn concurrent_retirement_is_not_a_rollback(db: TestDb) {
    // Loads and takes racing with the refresh that retires what they read
    // (from a second vault: another process) see the record or nothing,
    // never a false rollback alarm, and nothing deadlocks.
    let first = vault(&db, 1).await;
    let second = vault(&db, 1).await;
    let (mut a, mut b) = dkg();
    let key = first.create_key("alice", &b, 1).await.unwrap();
    for round in 0..3u64 {
        let record = first.key(&key.key_id).await.unwrap().unwrap();
        let mut sessions = Vec::new();
        for _ in 0..6 {
            let presig = presign(&a, &b);
            sessions.push(presig.session_id());
            first.store_presignature(&record, &presig, 2).await.unwrap();
        }
        let epoch = record.epoch;
        let loads = {
            let (vault, record) = (second.clone(), record.clone());
            tokio::spawn(async move {
                let mut results = Vec::new();
                for _ in 0..20 {
                    results.push(vault.share(&record, epoch).await.map(|s| s.is_some()));
                }
                results
            })
        };
        let takes = {
            let (vault, record) = (second.clone(), record.clone());
            tokio::spawn(async move {
                let mut results = Vec::new();
                for session in sessions {
                    let taken = vault.take_presignature(&record, &session, 3).await;
                    results.push(taken.map(|p| p.is_some()));
                }
                results
            })
        };
        (a, b) = refresh_and_finalize(&first, &record, &a, &b).await;
        for result in loads.await.unwrap() {
            assert!(result.is_ok(), "round {round}: load {result:?}");
        }
        for result in takes.await.unwrap() {
            assert!(result.is_ok(), "round {round}: take {result:?}");
        }
        assert_eq!(b.epoch(), round + 1);
    }
}

async fn migration_seeds_tombstones_from_existing_rows(db: TestDb) {
    // A database from before the guard: only the first migration applied,
    // with a used presignature, a key at epoch 3 and a revoked key.
    let flavour = if db.kind == Kind::Sqlite {
        "sqlite"
    } else {
        "postgres"
    };
    let old_schema = tempfile::tempdir().unwrap();
    std::fs::copy(
        format!(
            "{}/migrations/{flavour}/0001_init.sql",
            env!("CARGO_MANIFEST_DIR")
        ),
        old_schema.path().join("0001_init.sql"),
    )
    .unwrap();
    let (used, unused) = (hex::encode([1u8; 32]), hex::encode([2u8; 32]));
    let (live, revoked) = (KeyId([7; 32]), KeyId([8; 32]));
    {
        let store = super::Store::connect(&db.url).await.unwrap();
        let migrator = sqlx::migrate::Migrator::new(old_schema.path())
            .await
            .unwrap();
        migrator.run(store.pool()).await.unwrap();
        for (key_id, epoch, status) in [(&live, 3i64, "active"), (&revoked, 0, "revoked")] {
            sqlx::query(
                "INSERT INTO keys (key_id, owner, public_key, chain_code, epoch, status, \
                 created_at) VALUES ($1, 'alice', $2, $3, $4, $5, 1)",
            )
            .bind(key_id.to_string())
            .bind(vec![2u8; 33])
            .bind(vec![0u8; 32])
            .bind(epoch)
            .bind(status)
            .execute(store.pool())
            .await
            .unwrap();
        }
        for (session, sealed, used_at) in [
            (&used, None, Some(5i64)),
            (&unused, Some(vec![0u8; 8]), None),
        ] {
            sqlx::query(
                "INSERT INTO presignatures (session_id, key_id, epoch, sealed, created_at, \
                 used_at) VALUES ($1, $2, 3, $3, 1, $4)",
            )
            .bind(session.as_str())
            .bind(live.to_string())
            .bind(sealed)
            .bind(used_at)
            .execute(store.pool())
            .await
            .unwrap();
        }
    }

    let vault = vault(&db, 1).await;
    let pool = vault.store().pool();
    let spent: Vec<String> = sqlx::query_scalar("SELECT session_id FROM spent_presignatures")
        .fetch_all(pool)
        .await
        .unwrap();
    assert_eq!(spent, vec![used.clone()]);
    for (key_id, floor) in [(&live, 3i64), (&revoked, i64::MAX)] {
        let found: i64 = sqlx::query_scalar(
            "SELECT MAX(epoch) FROM key_tombstones WHERE key_id = $1 AND kind = 'floor'",
        )
        .bind(key_id.to_string())
        .fetch_one(pool)
        .await
        .unwrap();
        assert_eq!(found, floor);
    }
    // The presignature used before the upgrade, written back, is refused.
    sqlx::query("UPDATE presignatures SET sealed = $2, used_at = NULL WHERE session_id = $1")
        .bind(used.as_str())
        .bind(vec![0u8; 8])
        .execute(pool)
        .await
        .unwrap();
    let key = vault.key(&live).await.unwrap().unwrap();
    let mut session = [0u8; 32];
    hex::decode_to_slice(&used, &mut session).unwrap();
    let taken = vault.take_presignature(&key, &SessionId(session), 6).await;
    assert!(is_rolled_back(&taken), "{taken:?}");
}
