//! Pending keys in the [`Vault`] over both backends (PROTOCOL.md §18.3):
//! activation writes `key.created` once however many confirm at once, the
//! reaper deletes only old pending keys, and never one activated meanwhile.

use super::testkit::{dkg, on_both_backends, presign, vault, Kind, TestDb};
use super::{queries as q, Store};
use crate::vault::{Confirmation, KeyStatus, Vault, VaultError};

on_both_backends!(
    migration_keeps_existing_keys,
    pending_until_activated_once,
    concurrent_activations_write_one_event,
    reaper_deletes_old_pending_keys_only,
    reaper_and_activation_race,
);

async fn created_events(vault: &Vault) -> usize {
    let events = vault.due_events(i64::MAX, 1000).await.unwrap();
    events
        .iter()
        .filter(|e| e.event_type == "key.created")
        .count()
}

async fn audit_names(vault: &Vault, key_id: &mpc_core::KeyId) -> Vec<String> {
    let log = vault.audit_log(key_id).await.unwrap();
    log.into_iter().map(|entry| entry.event).collect()
}

async fn pending_until_activated_once(db: TestDb) {
    let vault = vault(&db, 1).await;
    let (_, share) = dkg();
    let key = vault.create_pending_key("pat", &share, 10).await.unwrap();
    assert_eq!(key.status, KeyStatus::Pending);
    let stored = vault.key(&key.key_id).await.unwrap().unwrap();
    assert_eq!(stored.status, KeyStatus::Pending);
    assert_eq!(created_events(&vault).await, 0);
    assert_eq!(audit_names(&vault, &key.key_id).await, ["key.pending"]);
    // Another owner cannot activate it, and learns nothing more than for a
    // missing key.
    assert!(matches!(
        vault
            .activate_key(&key.key_id, "mallory", Confirmation::Outcome, 11)
            .await,
        Err(VaultError::NotFound)
    ));
    assert!(vault
        .activate_key(&key.key_id, "pat", Confirmation::Outcome, 12)
        .await
        .unwrap());
    assert!(!vault
        .activate_key(&key.key_id, "pat", Confirmation::Signature, 13)
        .await
        .unwrap());
    let stored = vault.key(&key.key_id).await.unwrap().unwrap();
    assert_eq!(stored.status, KeyStatus::Active);
    assert_eq!(created_events(&vault).await, 1);
    assert_eq!(
        audit_names(&vault, &key.key_id).await,
        ["key.pending", "key.created"]
    );
    let log = vault.audit_log(&key.key_id).await.unwrap();
    assert_eq!(log[1].detail["confirmed_by"], "outcome");
    // A banned (or any non-pending) key is never turned active by it.
    let (_, other) = dkg();
    let banned = vault.create_pending_key("pat", &other, 20).await.unwrap();
    let event = crate::vault::Event {
        name: "key.banned",
        detail: serde_json::json!({}),
    };
    vault
        .set_status(&banned.key_id, KeyStatus::Banned, event, 21)
        .await
        .unwrap();
    assert!(!vault
        .activate_key(&banned.key_id, "pat", Confirmation::Signature, 22)
        .await
        .unwrap());
    let stored = vault.key(&banned.key_id).await.unwrap().unwrap();
    assert_eq!(stored.status, KeyStatus::Banned);
}

async fn concurrent_activations_write_one_event(db: TestDb) {
    let first = vault(&db, 1).await;
    // A second pool on the same database: another server process.
    let second = vault(&db, 1).await;
    let (_, share) = dkg();
    let key = first.create_pending_key("pat", &share, 10).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let vault = if i % 2 == 0 {
            first.clone()
        } else {
            second.clone()
        };
        let key_id = key.key_id;
        tasks.push(tokio::spawn(async move {
            vault
                .activate_key(&key_id, "pat", Confirmation::Signature, 20 + i)
                .await
                .unwrap()
        }));
    }
    let mut won = 0;
    for task in tasks {
        won += usize::from(task.await.unwrap());
    }
    assert_eq!(won, 1);
    assert_eq!(created_events(&first).await, 1);
}

async fn reaper_deletes_old_pending_keys_only(db: TestDb) {
    let vault = vault(&db, 1).await;
    let (a, b) = dkg();
    let (_, young) = dkg();
    let (_, active) = dkg();
    let old = vault.create_pending_key("pat", &b, 1_000).await.unwrap();
    let presignature = presign(&a, &b);
    vault
        .store_presignature(&old, &presignature, 1_001)
        .await
        .unwrap();
    let young = vault
        .create_pending_key("pat", &young, 5_000)
        .await
        .unwrap();
    let active = vault.create_key("pat", &active, 500).await.unwrap();
    let reaped = vault.reap_pending_keys(2_000, 9_000).await.unwrap();
    assert_eq!(reaped, [old.key_id]);
    assert!(vault.key(&old.key_id).await.unwrap().is_none());
    assert!(vault.epochs(&old.key_id).await.unwrap().is_empty());
    assert_eq!(
        audit_names(&vault, &old.key_id).await,
        ["key.pending", "key.reaped"]
    );
    for kept in [&young, &active] {
        assert!(vault.key(&kept.key_id).await.unwrap().is_some());
        assert!(vault.share(kept, kept.epoch).await.unwrap().is_some());
    }
    // Nothing left to reap.
    assert!(vault
        .reap_pending_keys(2_000, 9_001)
        .await
        .unwrap()
        .is_empty());
}

async fn reaper_and_activation_race(db: TestDb) {
    let first = vault(&db, 1).await;
    let second = vault(&db, 1).await;
    for round in 0..6 {
        let (_, share) = dkg();
        let key = first.create_pending_key("pat", &share, 100).await.unwrap();
        let (activated, reaped) = tokio::join!(
            first.activate_key(&key.key_id, "pat", Confirmation::Signature, 200),
            second.reap_pending_keys(150, 200),
        );
        let reaped = reaped.unwrap().contains(&key.key_id);
        let stored = first.key(&key.key_id).await.unwrap();
        match activated {
            Ok(true) => {
                assert!(!reaped, "round {round}");
                assert_eq!(stored.unwrap().status, KeyStatus::Active);
            }
            Err(VaultError::NotFound) => {
                assert!(reaped, "round {round}");
                assert!(stored.is_none());
            }
            other => panic!("round {round}: {other:?}"),
        }
    }
}

/// A database made by the first migration, with keys of every old status
/// and their shares, migrated to the current schema: statuses and shares
/// survive (on SQLite the status column is replaced), and the new CHECK
/// takes `pending` and still refuses anything else.
async fn migration_keeps_existing_keys(db: TestDb) {
    let backend = if db.kind == Kind::Sqlite {
        "sqlite"
    } else {
        "postgres"
    };
    let first = tempfile::tempdir().unwrap();
    let name = "0001_init.sql";
    let source = format!("{}/migrations/{backend}/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::copy(source, first.path().join(name)).unwrap();
    let store = Store::connect(&db.url).await.unwrap();
    let old = sqlx::migrate::Migrator::new(first.path()).await.unwrap();
    old.run(store.pool()).await.unwrap();
    let statuses = ["active", "rotation_required", "banned", "revoked"];
    for (i, status) in statuses.iter().enumerate() {
        let key_id = hex::encode([u8::try_from(i).unwrap() + 1; 32]);
        sqlx::query(
            "INSERT INTO keys (key_id, owner, public_key, chain_code, epoch, status, created_at) \
             VALUES ($1, 'old', $2, $3, 0, $4, 1)",
        )
        .bind(key_id.as_str())
        .bind(vec![2u8; 33])
        .bind(vec![0u8; 32])
        .bind(*status)
        .execute(store.pool())
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO shares (key_id, epoch, state, sealed, created_at) \
             VALUES ($1, 0, 'final', $2, 1)",
        )
        .bind(key_id.as_str())
        .bind(vec![7u8; 40])
        .execute(store.pool())
        .await
        .unwrap();
    }
    drop(store);

    let store = Store::open(&db.url).await.unwrap();
    let mut conn = store.acquire().await.unwrap();
    for (i, status) in statuses.iter().enumerate() {
        let key_id = mpc_core::KeyId([u8::try_from(i).unwrap() + 1; 32]);
        let key = q::key(&mut conn, &key_id).await.unwrap().unwrap();
        assert_eq!(key.status.as_str(), *status);
        assert!(q::share(&mut conn, &key_id, 0).await.unwrap().is_some());
    }
    let first_key = hex::encode([1u8; 32]);
    for (status, allowed) in [("pending", true), ("bogus", false)] {
        let done = sqlx::query("UPDATE keys SET status = $2 WHERE key_id = $1")
            .bind(first_key.as_str())
            .bind(status)
            .execute(&mut *conn)
            .await;
        assert_eq!(done.is_ok(), allowed, "{status}");
    }
    // The shares' foreign key still points at keys.
    let orphan = sqlx::query(
        "INSERT INTO shares (key_id, epoch, state, sealed, created_at) \
         VALUES ($1, 0, 'final', $2, 1)",
    )
    .bind(hex::encode([9u8; 32]))
    .bind(vec![7u8; 40])
    .execute(&mut *conn)
    .await;
    assert!(orphan.is_err());
}
