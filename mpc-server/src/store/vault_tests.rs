//! Tests of the [`Vault`] over both backends (see [`super::testkit`]): keys,
//! shares, refresh, status changes, the outbox and the audit log. Tests of
//! sealed records (presignatures, master key, tampering) are in
//! `vault_tests_sealed`.

use std::collections::HashSet;

use k256::elliptic_curve::sec1::ToEncodedPoint;
use mpc_core::wire::SessionId;
use mpc_core::KeyId;
use serde_json::json;

use super::testkit::{dkg, kek, lease_at, on_both_backends, presign, refresh, vault, Kind, TestDb};
use crate::vault::{Event, KeyStatus, ShareState, Vault, VaultError};

on_both_backends!(
    create_read_list,
    share_round_trip,
    refresh_sequence,
    store_refreshed_replaces_leftover_epoch,
    finalize_refreshed_refuses_a_replaced_share,
    revoke_deletes_secrets,
    replace_share_and_status,
    outbox_is_written_with_its_change,
    timestamps_audit_and_backups,
    concurrent_first_opens,
);

fn event(name: &str) -> Event<'_> {
    Event {
        name,
        detail: json!({ "test": true }),
    }
}

async fn event_types(vault: &Vault) -> Vec<(String, KeyId)> {
    let events = vault.due_events(i64::MAX, 1000).await.unwrap();
    events
        .into_iter()
        .map(|e| (e.event_type, e.key_id))
        .collect()
}

async fn create_read_list(db: TestDb) {
    let vault = vault(&db, 1).await;
    assert_eq!(
        vault.backend(),
        if db.kind == Kind::Sqlite {
            "sqlite"
        } else {
            "postgres"
        }
    );
    vault.ping().await.unwrap();
    let (_, s1) = dkg();
    let (_, s2) = dkg();
    let (_, s3) = dkg();
    let k2 = vault.create_key("alice", &s2, 2_000).await.unwrap();
    let k1 = vault.create_key("alice", &s1, 1_000).await.unwrap();
    let k3 = vault.create_key("bob", &s3, 3_000).await.unwrap();

    assert_eq!(k1.key_id, *s1.key_id());
    assert_eq!(k1.owner, "alice");
    assert_eq!(
        &k1.public_key[..],
        s1.public_key().to_encoded_point(true).as_bytes()
    );
    assert_eq!(&k1.chain_code, s1.chain_code());
    assert_eq!(k1.epoch, s1.epoch());
    assert_eq!(k1.status, KeyStatus::Active);
    assert_eq!(k1.created_at, 1_000);
    assert_eq!(
        (k1.last_used_at, k1.exported_at, k1.backed_up_at),
        (None, None, None)
    );

    assert_eq!(vault.key(&k1.key_id).await.unwrap(), Some(k1.clone()));
    assert_eq!(vault.key(&KeyId([0xee; 32])).await.unwrap(), None);
    assert_eq!(vault.keys_of("alice").await.unwrap(), vec![k1.clone(), k2]);
    assert_eq!(vault.keys_of("bob").await.unwrap(), vec![k3]);
    assert!(vault.keys_of("carol").await.unwrap().is_empty());

    assert!(matches!(
        vault.create_key("mallory", &s1, 4_000).await,
        Err(VaultError::Conflict(_))
    ));
    assert_eq!(vault.key(&k1.key_id).await.unwrap().unwrap().owner, "alice");

    let log = vault.audit_log(&k1.key_id).await.unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].event, "key.created");
    assert_eq!(log[0].owner, "alice");
    assert_eq!(log[0].at, 1_000);
    assert_eq!(log[0].detail["public_key"], hex::encode(k1.public_key));
    let serialized = serde_json::to_value(&log[0]).unwrap();
    assert_eq!(serialized["key_id"], k1.key_id.to_string());
    assert_eq!(
        serde_json::to_value(KeyStatus::RotationRequired).unwrap(),
        "rotation_required"
    );
}

async fn share_round_trip(db: TestDb) {
    let vault = vault(&db, 1).await;
    let (_, share) = dkg();
    let key = vault.create_key("alice", &share, 1).await.unwrap();
    let stored = vault.share(&key, key.epoch).await.unwrap().unwrap();
    assert_eq!(stored.state, ShareState::Final);
    assert_eq!(*stored.share.to_bytes(), *share.to_bytes());
    assert!(vault.share(&key, key.epoch + 1).await.unwrap().is_none());
    assert_eq!(
        vault.epochs(&key.key_id).await.unwrap(),
        vec![(0, ShareState::Final)]
    );

    // A record with another owner does not open the share.
    let mut other = key.clone();
    other.owner = "bob".into();
    assert!(matches!(
        vault.share(&other, key.epoch).await,
        Err(VaultError::CorruptRecord(_))
    ));
}

async fn refresh_sequence(db: TestDb) {
    let vault = vault(&db, 1).await;
    let (a0, b0) = dkg();
    let key = vault.create_key("alice", &b0, 1).await.unwrap();
    let old_presig = presign(&a0, &b0);
    let old_session = old_presig.session_id();
    vault
        .store_presignature(&key, &old_presig, 2)
        .await
        .unwrap();
    vault
        .set_status(
            &key.key_id,
            KeyStatus::RotationRequired,
            event("key.rotation_required"),
            3,
        )
        .await
        .unwrap();

    let (a1, b1) = refresh(&a0, &b0);
    assert_eq!(b1.epoch(), 1);
    let lease = lease_at(&vault, &key.key_id, 0, 3_600_000).await;
    vault.store_refreshed(&lease, &key, &b1, 4).await.unwrap();
    let epochs = vault.epochs(&key.key_id).await.unwrap();
    assert_eq!(epochs, vec![(0, ShareState::Final), (1, ShareState::Ready)]);
    vault.confirm_refreshed(&lease, &b1, 4).await.unwrap();
    vault.confirm_refreshed(&lease, &b1, 4).await.unwrap();
    let epochs = vault.epochs(&key.key_id).await.unwrap();
    assert_eq!(
        epochs,
        vec![(0, ShareState::Final), (1, ShareState::Confirmed)]
    );
    let (_, b2) = refresh(&a1, &b1);
    assert!(matches!(
        vault.confirm_refreshed(&lease, &b2, 4).await,
        Err(VaultError::NotFound)
    ));
    // A presignature of the new epoch survives finalization.
    let new_presig = presign(&a1, &b1);
    let new_session = new_presig.session_id();
    vault
        .store_presignature(&key, &new_presig, 5)
        .await
        .unwrap();

    vault
        .finalize_epoch(&key.key_id, 1, event("key.refreshed"), 6)
        .await
        .unwrap();
    let after = vault.key(&key.key_id).await.unwrap().unwrap();
    assert_eq!((after.epoch, after.status), (1, KeyStatus::Active));
    assert_eq!(
        vault.epochs(&key.key_id).await.unwrap(),
        vec![(1, ShareState::Final)]
    );
    assert!(vault.share(&after, 0).await.unwrap().is_none());
    let current = vault.share(&after, 1).await.unwrap().unwrap();
    assert_eq!(*current.share.to_bytes(), *b1.to_bytes());
    assert!(vault
        .take_presignature(&after, &old_session, 7)
        .await
        .unwrap()
        .is_none());
    assert!(vault
        .take_presignature(&after, &new_session, 7)
        .await
        .unwrap()
        .is_some());

    // Idempotent: no second audit entry or event.
    let log_len = vault.audit_log(&key.key_id).await.unwrap().len();
    vault
        .finalize_epoch(&key.key_id, 1, event("key.refreshed"), 8)
        .await
        .unwrap();
    assert_eq!(vault.audit_log(&key.key_id).await.unwrap().len(), log_len);
    let refreshed = event_types(&vault).await;
    assert_eq!(
        refreshed
            .iter()
            .filter(|(t, _)| t == "key.refreshed")
            .count(),
        1
    );
    assert!(matches!(
        vault
            .finalize_epoch(&key.key_id, 9, event("key.refreshed"), 9)
            .await,
        Err(VaultError::NotFound)
    ));
    // An old-epoch share can no longer be stored as a refresh.
    assert!(matches!(
        vault.store_refreshed(&lease, &after, &b0, 10).await,
        Err(VaultError::Conflict(_))
    ));
}

async fn store_refreshed_replaces_leftover_epoch(db: TestDb) {
    let vault = vault(&db, 1).await;
    let (a0, b0) = dkg();
    let key = vault.create_key("alice", &b0, 1).await.unwrap();
    let (_, cut) = refresh(&a0, &b0);
    let first = lease_at(&vault, &key.key_id, 0, 3_600_000).await;
    vault.store_refreshed(&first, &key, &cut, 2).await.unwrap();
    vault.confirm_refreshed(&first, &cut, 2).await.unwrap();
    first.release().await.unwrap();
    // The refresh was cut; a new one from epoch 0 gives another epoch-1 share.
    let (_, again) = refresh(&a0, &b0);
    assert_ne!(*again.to_bytes(), *cut.to_bytes());
    let lease = lease_at(&vault, &key.key_id, 3, 3_600_000).await;
    vault
        .store_refreshed(&lease, &key, &again, 3)
        .await
        .unwrap();
    let epochs = vault.epochs(&key.key_id).await.unwrap();
    assert_eq!(epochs, vec![(0, ShareState::Final), (1, ShareState::Ready)]);
    let stored = vault.share(&key, 1).await.unwrap().unwrap();
    assert_eq!(*stored.share.to_bytes(), *again.to_bytes());
    let (_, other_key) = dkg();
    assert!(matches!(
        vault.store_refreshed(&lease, &key, &other_key, 4).await,
        Err(VaultError::Conflict(_))
    ));
}

async fn finalize_refreshed_refuses_a_replaced_share(db: TestDb) {
    let vault = vault(&db, 1).await;
    let (a0, b0) = dkg();
    let key = vault.create_key("alice", &b0, 1).await.unwrap();
    // Two refreshes of one key race (as on two server processes): the
    // second replaces the first's ready share.
    let (_, first) = refresh(&a0, &b0);
    let (_, second) = refresh(&a0, &b0);
    // The first session's lease expires (it hangs) and a second session
    // takes it over and replaces its ready share.
    let stale = lease_at(&vault, &key.key_id, 0, 1).await;
    vault
        .store_refreshed(&stale, &key, &first, 0)
        .await
        .unwrap();
    let lease = lease_at(&vault, &key.key_id, 2, 3_600_000).await;
    vault
        .store_refreshed(&lease, &key, &second, 3)
        .await
        .unwrap();
    assert!(matches!(
        vault
            .finalize_refreshed(&stale, &first, event("key.refreshed"), 4)
            .await,
        Err(VaultError::Conflict(_))
    ));
    // Even under a held lease, only the stored share is finalized.
    assert!(matches!(
        vault
            .finalize_refreshed(&lease, &first, event("key.refreshed"), 4)
            .await,
        Err(VaultError::Conflict(_))
    ));
    assert_eq!(
        vault.epochs(&key.key_id).await.unwrap(),
        vec![(0, ShareState::Final), (1, ShareState::Ready)]
    );
    vault
        .finalize_refreshed(&lease, &second, event("key.refreshed"), 5)
        .await
        .unwrap();
    assert_eq!(
        vault.epochs(&key.key_id).await.unwrap(),
        vec![(1, ShareState::Final)]
    );
}

async fn revoke_deletes_secrets(db: TestDb) {
    let vault = vault(&db, 1).await;
    let (a, b) = dkg();
    let key = vault.create_key("alice", &b, 1).await.unwrap();
    let presig = presign(&a, &b);
    let session = presig.session_id();
    vault.store_presignature(&key, &presig, 2).await.unwrap();
    let (_, next) = refresh(&a, &b);
    let lease = lease_at(&vault, &key.key_id, 0, 3_600_000).await;
    vault.store_refreshed(&lease, &key, &next, 3).await.unwrap();

    vault
        .revoke(&key.key_id, event("key.revoked"), 4)
        .await
        .unwrap();
    let revoked = vault.key(&key.key_id).await.unwrap().unwrap();
    assert_eq!(revoked.status, KeyStatus::Revoked);
    assert!(vault.epochs(&key.key_id).await.unwrap().is_empty());
    assert!(vault.share(&revoked, 0).await.unwrap().is_none());
    assert!(vault
        .take_presignature(&revoked, &session, 5)
        .await
        .unwrap()
        .is_none());
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM presignatures WHERE key_id = $1")
        .bind(key.key_id.to_string())
        .fetch_one(vault.store().pool())
        .await
        .unwrap();
    assert_eq!(count, 0);

    // Terminal: nothing brings it back; revoking again changes nothing.
    let set = vault
        .set_status(&key.key_id, KeyStatus::Active, event("x"), 6)
        .await;
    assert!(matches!(set, Err(VaultError::Conflict(_))));
    assert!(matches!(
        vault
            .store_presignature(&revoked, &presign(&a, &b), 6)
            .await,
        Err(VaultError::Conflict(_))
    ));
    vault
        .revoke(&key.key_id, event("key.revoked"), 7)
        .await
        .unwrap();
    let revocations = event_types(&vault).await;
    assert_eq!(
        revocations
            .iter()
            .filter(|(t, _)| t == "key.revoked")
            .count(),
        1
    );
    assert!(matches!(
        vault.revoke(&KeyId([3; 32]), event("key.revoked"), 8).await,
        Err(VaultError::NotFound)
    ));
}

async fn replace_share_and_status(db: TestDb) {
    let vault = vault(&db, 1).await;
    let (a, mut b) = dkg();
    let key = vault.create_key("alice", &b, 1).await.unwrap();
    b.burn_ot_material();
    vault
        .replace_share(&key, &b, KeyStatus::Banned, event("key.banned"), 2)
        .await
        .unwrap();
    let banned = vault.key(&key.key_id).await.unwrap().unwrap();
    assert_eq!(banned.status, KeyStatus::Banned);
    let stored = vault.share(&banned, 0).await.unwrap().unwrap();
    assert!(stored.share.is_ot_burned());
    assert_eq!(stored.state, ShareState::Final);
    // Banning again adds an audit entry but no second webhook event.
    vault
        .set_status(&key.key_id, KeyStatus::Banned, event("key.banned"), 3)
        .await
        .unwrap();
    let events = event_types(&vault).await;
    assert_eq!(events.iter().filter(|(t, _)| t == "key.banned").count(), 1);
    let log = vault.audit_log(&key.key_id).await.unwrap();
    let names: Vec<&str> = log.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(names, ["key.created", "key.banned", "key.banned"]);

    // A refresh clears the ban.
    let (_, next) = refresh(&a, &b);
    let lease = lease_at(&vault, &key.key_id, 0, 3_600_000).await;
    vault
        .store_refreshed(&lease, &banned, &next, 4)
        .await
        .unwrap();
    vault
        .finalize_epoch(&key.key_id, 1, event("key.refreshed"), 5)
        .await
        .unwrap();
    let active = vault.key(&key.key_id).await.unwrap().unwrap();
    assert_eq!((active.status, active.epoch), (KeyStatus::Active, 1));

    assert!(matches!(
        vault
            .replace_share(&active, &b, KeyStatus::Active, event("x"), 6)
            .await,
        Err(VaultError::NotFound)
    ));
    assert!(matches!(
        vault
            .replace_share(&active, &next, KeyStatus::Revoked, event("x"), 6)
            .await,
        Err(VaultError::Conflict(_))
    ));
    // set_status(Revoked) revokes.
    vault
        .set_status(&key.key_id, KeyStatus::Revoked, event("key.revoked"), 7)
        .await
        .unwrap();
    assert!(vault.epochs(&key.key_id).await.unwrap().is_empty());
}

async fn outbox_is_written_with_its_change(db: TestDb) {
    let vault = vault(&db, 1).await;
    assert!(vault.due_events(i64::MAX, 10).await.unwrap().is_empty());
    let (_, b) = dkg();
    let key = vault.create_key("alice", &b, 1_000).await.unwrap();
    // A failed change leaves no event behind.
    assert!(vault.create_key("alice", &b, 1_001).await.is_err());
    let due = vault.due_events(1_000, 10).await.unwrap();
    assert_eq!(due.len(), 1);
    let created = &due[0];
    assert_eq!(created.event_type, "key.created");
    assert_eq!(created.key_id, key.key_id);
    assert_eq!(created.attempts, 0);
    assert_eq!(created.created_at, 1_000);
    assert_eq!(created.event_id.len(), 32);
    assert_eq!(created.payload["key_id"], key.key_id.to_string());
    assert_eq!(created.payload["owner"], "alice");
    assert_eq!(created.payload["public_key"], hex::encode(key.public_key));
    assert_eq!(created.payload["epoch"], 0);
    assert!(vault.due_events(999, 10).await.unwrap().is_empty());

    vault
        .schedule_retry(created.id, 5_000, "connection refused")
        .await
        .unwrap();
    assert!(vault.due_events(4_999, 10).await.unwrap().is_empty());
    let retried = vault.due_events(5_000, 10).await.unwrap();
    assert_eq!((retried.len(), retried[0].attempts), (1, 1));
    vault.mark_delivered(created.id, 5_001).await.unwrap();
    assert!(vault.due_events(i64::MAX, 10).await.unwrap().is_empty());
    assert!(matches!(
        vault.mark_delivered(9_999, 1).await,
        Err(VaultError::NotFound)
    ));
    assert!(matches!(
        vault.schedule_retry(9_999, 1, "x").await,
        Err(VaultError::NotFound)
    ));

    vault
        .mark_exported(&key.key_id, event("key.exported"), 6_000)
        .await
        .unwrap();
    vault
        .record_backup(&key, 0, &[2; 33], b"backup", 6_001)
        .await
        .unwrap();
    let types: Vec<String> = event_types(&vault)
        .await
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    assert_eq!(types, ["key.exported", "key.backed_up"]);
    let limited = vault.due_events(i64::MAX, 1).await.unwrap();
    assert_eq!(limited.len(), 1);
    let ids: HashSet<String> = vault
        .due_events(i64::MAX, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event_id)
        .collect();
    assert_eq!(ids.len(), 2);
}

async fn timestamps_audit_and_backups(db: TestDb) {
    let vault = vault(&db, 1).await;
    let (_, b) = dkg();
    let key = vault.create_key("alice", &b, 1).await.unwrap();
    vault.touch(&key.key_id, 10).await.unwrap();
    vault
        .mark_exported(&key.key_id, event("key.exported"), 20)
        .await
        .unwrap();
    vault
        .record_backup(&key, 0, &[3; 33], &[9; 100], 30)
        .await
        .unwrap();
    let sign = Event {
        name: "key.signed",
        detail: json!({ "prehash": "00ff" }),
    };
    vault.audit(&key.key_id, "alice", sign, 40).await.unwrap();
    let record = vault.key(&key.key_id).await.unwrap().unwrap();
    assert_eq!(
        (record.last_used_at, record.exported_at, record.backed_up_at),
        (Some(10), Some(20), Some(30))
    );
    let log = vault.audit_log(&key.key_id).await.unwrap();
    let names: Vec<&str> = log.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(
        names,
        ["key.created", "key.exported", "key.backed_up", "key.signed"]
    );
    assert!(log.windows(2).all(|w| w[0].id < w[1].id));
    assert_eq!(log[2].detail["recovery_key"], hex::encode([3u8; 33]));
    assert_eq!(log[3].detail["prehash"], "00ff");
    let (epoch, recovery, backup): (i64, Vec<u8>, Vec<u8>) = {
        use sqlx::Row;
        let row = sqlx::query("SELECT epoch, recovery_key, backup FROM backups WHERE key_id = $1")
            .bind(key.key_id.to_string())
            .fetch_one(vault.store().pool())
            .await
            .unwrap();
        (row.get("epoch"), row.get("recovery_key"), row.get("backup"))
    };
    assert_eq!((epoch, recovery, backup), (0, vec![3; 33], vec![9; 100]));
    assert!(matches!(
        vault.touch(&KeyId([1; 32]), 1).await,
        Err(VaultError::NotFound)
    ));
    assert!(matches!(
        vault
            .mark_exported(&KeyId([1; 32]), event("key.exported"), 1)
            .await,
        Err(VaultError::NotFound)
    ));
}

/// Server processes starting together on a new database: migrations and the
/// first master key check value do not trip over each other.
async fn concurrent_first_opens(db: TestDb) {
    let url = std::sync::Arc::new(db.url.clone());
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { Vault::open(&url, kek(1)).await })
        })
        .collect();
    for task in tasks {
        let opened = task.await.unwrap();
        assert!(opened.is_ok(), "{opened:?}");
    }
    let wrong = Vault::open(&db.url, kek(2)).await;
    assert!(matches!(wrong, Err(VaultError::WrongMasterKey)));
}

/// The server spawns vault calls on a multi-threaded runtime: every future
/// must be `Send` (this only has to compile).
#[allow(dead_code)]
fn futures_are_send(
    vault: &Vault,
    key: &crate::vault::KeyRecord,
    share: &mpc_core::KeyShare,
    presignature: &mpc_core::Presignature,
    lease: &crate::vault::RefreshLease,
) {
    fn send<T: Send>(_: T) {}
    let id = &key.key_id;
    send(Vault::open("sqlite://x.db", kek(1)));
    send(vault.ping());
    send(vault.create_key("owner", share, 0));
    send(vault.key(id));
    send(vault.keys_of("owner"));
    send(vault.share(key, 0));
    send(vault.epochs(id));
    send(vault.take_refresh_lease(id, std::time::Duration::ZERO, 0));
    send(vault.store_refreshed(lease, key, share, 0));
    send(vault.confirm_refreshed(lease, share, 0));
    send(vault.finalize_refreshed(lease, share, event("e"), 0));
    send(vault.finalize_epoch(id, 0, event("e"), 0));
    send(vault.replace_share(key, share, KeyStatus::Active, event("e"), 0));
    send(vault.set_status(id, KeyStatus::Banned, event("e"), 0));
    send(vault.revoke(id, event("e"), 0));
    send(vault.store_presignature(key, presignature, 0));
    send(vault.take_presignature(key, &SessionId([0; 32]), 0));
    send(vault.touch(id, 0));
    send(vault.audit(id, "owner", event("e"), 0));
    send(vault.audit_log(id));
    send(vault.mark_exported(id, event("e"), 0));
    send(vault.record_backup(key, 0, &[2; 33], b"", 0));
    send(vault.due_events(0, 1));
    send(vault.mark_delivered(0, 0));
    send(vault.schedule_retry(0, 0, ""));
}
