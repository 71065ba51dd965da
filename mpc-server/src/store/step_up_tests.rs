//! Spent step-up tokens over both backends (PROTOCOL.md §19): single use
//! within the operation's transaction, no spend on a failed operation,
//! exactly one winner among concurrent spends from two pools (two server
//! processes), and pruning only after retention.

use mpc_core::KeyId;
use serde_json::json;

use super::step_up as spent;
use super::testkit::{dkg, on_both_backends, vault, TestDb};
use crate::auth::{StepUpOp, StepUpUse};
use crate::vault::{Event, NewBackup, Vault, VaultError};

on_both_backends!(
    spent_once_and_only_by_a_committed_operation,
    concurrent_spends_from_two_pools,
    pruning_keeps_unexpired_records,
);

fn exported() -> Event<'static> {
    Event {
        name: "key.exported",
        detail: json!({ "test": true }),
    }
}

fn use_of(jti: &str, key_id: KeyId, operation: StepUpOp) -> StepUpUse {
    StepUpUse {
        subject: "alice".to_owned(),
        token_id: jti.to_owned(),
        operation,
        key_id,
        retain_until: i64::MAX / 2000,
    }
}

async fn audit_count(vault: &Vault, key_id: &KeyId, name: &str) -> usize {
    let log = vault.audit_log(key_id).await.unwrap();
    log.iter().filter(|e| e.event == name).count()
}

async fn spent_once_and_only_by_a_committed_operation(db: TestDb) {
    let vault = vault(&db, 1).await;
    let (_, b) = dkg();
    let key = vault.create_key("alice", &b, 1).await.unwrap();
    let token = use_of("t-1", key.key_id, StepUpOp::Export);

    // An operation that fails (no such key) rolls its spend back.
    let missing = KeyId([0xee; 32]);
    assert!(matches!(
        vault
            .mark_exported_spending(&missing, exported(), 2, Some(&token))
            .await,
        Err(VaultError::NotFound)
    ));
    vault
        .mark_exported_spending(&key.key_id, exported(), 3, Some(&token))
        .await
        .unwrap();
    // Spent: refused for every operation, with nothing written.
    assert!(matches!(
        vault
            .mark_exported_spending(&key.key_id, exported(), 4, Some(&token))
            .await,
        Err(VaultError::TokenSpent)
    ));
    let backup = NewBackup {
        epoch: 0,
        recovery_key: &[2; 33],
        backup: b"backup",
        counts_as_export: true,
    };
    assert!(matches!(
        vault
            .record_backup_spending(&key, &backup, 5, Some(&token))
            .await,
        Err(VaultError::TokenSpent)
    ));
    assert!(matches!(
        vault
            .revoke_spending(&key.key_id, exported(), 6, Some(&token))
            .await,
        Err(VaultError::TokenSpent)
    ));
    let record = vault.key(&key.key_id).await.unwrap().unwrap();
    assert_eq!(record.exported_at, Some(3));
    assert_eq!(record.backed_up_at, None);
    assert_eq!(audit_count(&vault, &key.key_id, "key.exported").await, 1);
    assert!(vault.share(&record, 0).await.unwrap().is_some());

    // One subject's jti does not collide with another's.
    let mut bob = use_of("t-1", key.key_id, StepUpOp::Backup);
    bob.subject = "bob".to_owned();
    vault
        .record_backup_spending(&key, &backup, 7, Some(&bob))
        .await
        .unwrap();
    // That backup counted as an export, in its transaction.
    let record = vault.key(&key.key_id).await.unwrap().unwrap();
    assert_eq!(
        (record.backed_up_at, record.exported_at),
        (Some(7), Some(7))
    );
    assert_eq!(audit_count(&vault, &key.key_id, "key.exported").await, 2);
}

async fn concurrent_spends_from_two_pools(db: TestDb) {
    let first = vault(&db, 1).await;
    let second = vault(&db, 1).await;
    let (_, b) = dkg();
    let key = first.create_key("alice", &b, 1).await.unwrap();
    let token = use_of("race", key.key_id, StepUpOp::Export);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..8i64 {
        let vault = if i % 2 == 0 {
            first.clone()
        } else {
            second.clone()
        };
        let token = token.clone();
        let key_id = key.key_id;
        tasks.spawn(async move {
            vault
                .mark_exported_spending(&key_id, exported(), 10 + i, Some(&token))
                .await
        });
    }
    let mut ok = 0;
    while let Some(result) = tasks.join_next().await {
        match result.unwrap() {
            Ok(()) => ok += 1,
            Err(VaultError::TokenSpent) => {}
            Err(other) => panic!("{other}"),
        }
    }
    assert_eq!(ok, 1);
    assert_eq!(audit_count(&first, &key.key_id, "key.exported").await, 1);
}

async fn pruning_keeps_unexpired_records(db: TestDb) {
    let vault = vault(&db, 1).await;
    let key_id = KeyId([1; 32]);
    let mut conn = vault.store().acquire().await.unwrap();
    let mut old = use_of("old", key_id, StepUpOp::Revoke);
    old.retain_until = 100; // seconds
    let mut live = use_of("live", key_id, StepUpOp::Revoke);
    live.retain_until = 200;
    assert!(spent::spend(&mut conn, &old, 1).await.unwrap());
    assert!(spent::spend(&mut conn, &live, 1).await.unwrap());
    // At exactly the end of retention nothing is pruned yet.
    assert_eq!(spent::prune(&mut conn, 100_000).await.unwrap(), 0);
    assert_eq!(spent::prune(&mut conn, 100_001).await.unwrap(), 1);
    assert!(spent::spend(&mut conn, &old, 2).await.unwrap());
    assert!(!spent::spend(&mut conn, &live, 2).await.unwrap());
    assert_eq!(spent::prune(&mut conn, i64::MAX).await.unwrap(), 2);
}
